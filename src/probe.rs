//! What the running kernel offers, found out once at daemon start.
//!
//! Every fact the code generator and the datapath rely on is probed here, never assumed from a
//! release number: BTF, the struct layouts and kfunc ids ([`crate::layout`]), the netfilter
//! program type and link type, the defrag flag, and which packet-access strategy verifies.
//! The strategies are probed by loading the real prologue (an empty filter program compiled
//! with each), so a verifier that changes under us is caught at start, with its log line, and
//! not by the first iptables command.
//!
//! Requirements and the release that brought each (all present since Linux 6.4):
//! `BPF_PROG_TYPE_NETFILTER` and `BPF_LINK_TYPE_NETFILTER` (6.4), `struct bpf_nf_ctx` in BTF
//! (6.4), kfuncs `bpf_dynptr_from_skb` for netfilter programs (6.4) and `bpf_dynptr_slice`
//! (6.3). Optional: `BPF_F_NETFILTER_IP_DEFRAG` (6.6), `bpf_rdonly_cast` for the cast packet access (6.2).

use std::fmt::Write as _;

use emitter::codegen::{compile_output, Options, PacketAccess, StackRule};
use emitter::ir::{Hook, Policy, Program, Verdict};
use emitter::{KernelLayout, MapRef};

use crate::sys::{self, Btf};

/// The oldest Linux release with everything bpfilter requires.
pub const MIN_RELEASE: &str = "6.4";

/// Verifier limits the code generator is built around (stable since Linux 5.3).
pub const LIMITS: &str = "1,000,000 verified instructions, 8 call frames, 64 maps, \
                          8,192 pending branches per program";

/// Something bpfilter needs that the running kernel lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this kernel ({release}) cannot run bpfilter: {what}{hint}")]
pub struct Missing {
    /// `uname -r`
    pub release: String,
    /// what is missing, and why it matters
    pub what: String,
    /// the minimum release, when a newer kernel would have it
    pub hint: String,
}

/// The packet-access strategy asked for (`bpfilter daemon --packet-access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessChoice {
    /// the fastest strategy the running kernel verifies
    Auto,
    /// `bpf_dynptr_from_skb` + `bpf_dynptr_slice` (the portable baseline)
    Dynptr,
    /// `bpf_rdonly_cast` of `skb->data`, dynptr fallback for non-linear headers
    Cast,
}

/// What the generator may use on the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// offsets and kfunc ids from vmlinux BTF
    pub layout: KernelLayout,
    /// the packet-access strategy programs are compiled with
    pub access: PacketAccess,
    /// how the verifier adds up a call chain's stack
    pub stack: StackRule,
}

impl Target {
    /// Code generation options for this kernel and a counter map of `counters`' layout.
    pub fn options(&self, counters: emitter::codegen::CounterLayout) -> Options {
        Options {
            access: self.access,
            counters,
            stack: self.stack,
            ..Options::default()
        }
    }
}

/// The probe's findings.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `uname -r`
    pub release: String,
    /// layouts and kfunc ids, or why they cannot be read
    pub layout: Result<KernelLayout, String>,
    /// a netfilter program loads (`r0 = 1; exit`)
    pub prog_type: Result<(), String>,
    /// `BPF_LINK_TYPE_NETFILTER` is in vmlinux BTF
    pub link: bool,
    /// `BPF_F_NETFILTER_IP_DEFRAG` exists (`struct nf_defrag_hook` in BTF, Linux 6.6)
    pub defrag: bool,
    /// how the verifier adds up a call chain's stack (see [`stack_rule`])
    pub stack: StackRule,
    /// per strategy: the empty filter program loaded (verified instructions) or why not
    pub strategies: Vec<(PacketAccess, Result<u32, String>)>,
}

/// Whether the running kernel's release is `major.minor` or later (the first two numbers of
/// `uname -r`; an unreadable release counts as new).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    release_at_least(&release(), major, minor)
}

fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (nums.next().flatten(), nums.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true,
    }
}

/// Whether the running kernel has a fix that entered mainline in `mainline` (major, minor) and
/// was measured in the stable releases `stable` (major, minor, patch): a release of a listed
/// series has it from that patch level on (an earlier one of the series is taken as without
/// it, though the backport may be older than what was measured).
pub fn kernel_has_fix(mainline: (u32, u32), stable: &[(u32, u32, u32)]) -> bool {
    release_has_fix(&release(), mainline, stable)
}

fn release_has_fix(release: &str, mainline: (u32, u32), stable: &[(u32, u32, u32)]) -> bool {
    let nums: Vec<u32> = release
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map_while(|n| n.parse::<u32>().ok())
        .collect();
    let (Some(&a), Some(&b)) = (nums.first(), nums.get(1)) else {
        return true;
    };
    if (a, b) >= mainline {
        return true;
    }
    let patch = nums.get(2).copied().unwrap_or(0);
    stable
        .iter()
        .any(|&(ma, mi, p)| (ma, mi) == (a, b) && patch >= p)
}

/// The kernel release, as `uname -r` prints it.
pub fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// An empty filter program (policy ACCEPT): the prologue and nothing else.
fn empty_program() -> Program {
    Program::single(
        Hook::LocalIn,
        Vec::new(),
        Policy {
            verdict: Verdict::Accept,
            counter: 0,
        },
    )
}

/// Loads the empty filter program compiled with `access`; verified instructions, or the
/// verifier's reason.
pub fn try_strategy(layout: &KernelLayout, access: PacketAccess) -> Result<u32, String> {
    // the counter map the daemon makes, so that its way of counting is probed too
    let counters =
        crate::daemon::counters::CounterMap::create(1).map_err(|e| format!("counter map: {e}"))?;
    let out = compile_output(
        &empty_program(),
        layout,
        Options {
            access,
            counters: counters.layout(),
            ..Options::default()
        },
    )
    .map_err(|e| format!("compile: {e}"))?;
    use std::os::fd::AsRawFd;
    let fd = counters.map().fd().as_raw_fd();
    let bytes = out.code.bytes(&|m| match m {
        MapRef::Counters => fd,
        MapRef::Other(_)
        | MapRef::Events
        | MapRef::EventLoss
        | MapRef::Limits
        | MapRef::AddrTypes
        | MapRef::Recent(_)
        | MapRef::Hashlimit(_)
        | MapRef::Segments
        | MapRef::ReplyCt => -1,
    });
    match sys::Program::load_netfilter("bpfltr_probe", &bytes, 0) {
        Ok((_, stats)) => Ok(stats.verified_insns),
        Err(sys::SysError::Load { log, .. }) => Err(last_reason(&log)),
        Err(e) => Err(e.to_string()),
    }
}

/// The verifier's own words: the last non-statistics line of its log.
fn last_reason(log: &str) -> String {
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
        })
        .unwrap_or("verifier refused (no log)")
        .to_owned()
}

/// Runs every probe (loads two or three tiny programs; needs CAP_BPF).
pub fn probe() -> Probe {
    let release = release();
    let btf = Btf::vmlinux().map_err(|e| format!("no vmlinux BTF ({e}): CONFIG_DEBUG_INFO_BTF"));
    let layout = btf
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|b| crate::layout::kernel_layout(b).map_err(|e| e.to_string()));
    let has = |f: &dyn Fn(&Btf) -> bool| btf.as_ref().map(f).unwrap_or(false);
    let link = has(&|b| {
        b.enum_value("bpf_link_type", "BPF_LINK_TYPE_NETFILTER")
            .is_ok()
    });
    let defrag = has(&|b| b.type_size("nf_defrag_hook").is_ok());
    let prog_type = load_trivial();
    let stack = stack_rule();
    let strategies = match (&layout, &prog_type) {
        (Ok(l), Ok(())) => PacketAccess::ALL
            .iter()
            .map(|a| (*a, try_strategy(l, *a)))
            .collect(),
        _ => Vec::new(),
    };
    Probe {
        release,
        layout,
        prog_type,
        link,
        defrag,
        stack,
        strategies,
    }
}

/// How the verifier adds up the stack of a call chain (`round_up_stack_depth`), which decides
/// how deep user chains can be subprograms: a main function 496 bytes deep calling one that
/// uses no stack loads where frames are rounded to 16 bytes and an empty one counts nothing
/// (JIT-compiled programs since Linux 6.9), and is refused where each frame counts at least
/// 32 bytes (528 > 512: Linux 6.8 and earlier, or the JIT turned off).
pub fn stack_rule() -> StackRule {
    use emitter::insn::{mov64, st, Insn, Reg, Size, Src};
    let mut b = emitter::builder::Builder::new();
    let callee = b.label();
    b.emit(st(Size::W, Reg::R10, -496, 0));
    b.call_local(callee);
    b.emit(mov64(Reg::R0, Src::Imm(1)));
    b.emit(Insn::Exit);
    let built = b.bind(callee).and_then(|()| {
        b.emit(mov64(Reg::R0, Src::Imm(0)));
        b.emit(Insn::Exit);
        b.finish()
    });
    let Ok(code) = built else {
        return StackRule::Frame32;
    };
    match sys::Program::load_netfilter("bpfltr_probe", &code.bytes(&|_| -1), 0) {
        Ok(_) => StackRule::Jit16,
        Err(_) => StackRule::Frame32,
    }
}

/// `r0 = 1; exit` as a netfilter program.
fn load_trivial() -> Result<(), String> {
    use emitter::insn::{mov64, Insn, Reg, Src};
    let bytes = emitter::encode(&[mov64(Reg::R0, Src::Imm(1)), Insn::Exit]);
    sys::Program::load_netfilter("bpfltr_probe", &bytes, 0)
        .map(|_| ())
        .map_err(|e| match e.errno() {
            libc::EINVAL => {
                "no BPF_PROG_TYPE_NETFILTER (the kernel refuses the program type)".to_owned()
            }
            libc::EPERM => "not allowed to load BPF programs (run as root)".to_owned(),
            _ => format!("loading a netfilter program: {e}"),
        })
}

impl Probe {
    /// The target to compile for, or the first thing missing. Prefers the cast strategy
    /// where it verifies (it is faster: see benches/netbench/RESULTS.md), else the baseline.
    pub fn target(&self) -> Result<Target, Missing> {
        self.target_with(AccessChoice::Auto)
    }

    /// [`Probe::target`] with the strategy `choice` (refused if it does not verify here).
    pub fn target_with(&self, choice: AccessChoice) -> Result<Target, Missing> {
        let missing = |what: String| Missing {
            release: self.release.clone(),
            what,
            hint: format!(" (bpfilter needs Linux {MIN_RELEASE} or later)"),
        };
        self.prog_type.clone().map_err(missing)?;
        if !self.link {
            return Err(missing(
                "no BPF_LINK_TYPE_NETFILTER (netfilter links)".into(),
            ));
        }
        let layout = self.layout.clone().map_err(missing)?;
        let loads = |a: PacketAccess| self.strategies.iter().any(|(s, r)| *s == a && r.is_ok());
        let forced = match choice {
            AccessChoice::Auto => None,
            AccessChoice::Dynptr => Some(PacketAccess::Dynptr),
            AccessChoice::Cast => Some(PacketAccess::Cast),
        };
        if let Some(a) = forced.filter(|a| !loads(*a)) {
            let why = self
                .strategies
                .iter()
                .find(|(s, _)| *s == a)
                .and_then(|(_, r)| r.clone().err())
                .unwrap_or_else(|| "not probed".into());
            return Err(Missing {
                hint: " (use --packet-access auto)".into(),
                ..missing(format!(
                    "packet access {a} was asked for, but the verifier refuses it: {why}"
                ))
            });
        }
        let access = if let Some(a) = forced {
            a
        } else if loads(PacketAccess::Cast) {
            PacketAccess::Cast
        } else if loads(PacketAccess::Dynptr) {
            PacketAccess::Dynptr
        } else {
            let why = self
                .strategies
                .iter()
                .find(|(s, _)| *s == PacketAccess::Dynptr)
                .and_then(|(_, r)| r.clone().err())
                .unwrap_or_else(|| "not probed".into());
            return Err(missing(format!(
                "the verifier refuses dynptr packet access (bpf_dynptr_slice): {why}"
            )));
        };
        Ok(Target {
            layout,
            access,
            stack: self.stack,
        })
    }

    /// One line per finding, for the start log and `bpfilter status` (strategy: auto's).
    pub fn report(&self) -> String {
        self.report_for(AccessChoice::Auto)
    }

    /// [`Probe::report`] for a daemon started with `--packet-access choice`.
    pub fn report_for(&self, choice: AccessChoice) -> String {
        let mut out = String::new();
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(out, "kernel {}", self.release);
        let _ = writeln!(
            out,
            "  netfilter programs: {}",
            match &self.prog_type {
                Ok(()) => "yes".to_owned(),
                Err(e) => e.clone(),
            }
        );
        let _ = writeln!(out, "  netfilter links: {}", yes(self.link));
        let _ = writeln!(
            out,
            "  BTF layouts and kfuncs: {}",
            match &self.layout {
                Ok(l) => format!(
                    "yes (sk_buff.len at {}, bpf_dynptr_from_skb id {}, bpf_dynptr_slice id {})",
                    l.skb_len, l.kfunc_dynptr_from_skb, l.kfunc_dynptr_slice
                ),
                Err(e) => e.clone(),
            }
        );
        let _ = writeln!(out, "  IP defrag flag: {}", yes(self.defrag));
        let _ = writeln!(
            out,
            "  call chain stack: {}",
            match self.stack {
                StackRule::Jit16 => "frames rounded to 16 bytes (chains nested up to 6 deep are subprograms)",
                StackRule::Frame32 => "32 bytes or more a frame (Linux 6.8 and earlier, or no JIT): deep chains inlined where the 512 bytes run out",
            }
        );
        for (a, r) in &self.strategies {
            let _ = writeln!(
                out,
                "  packet access {a}: {}",
                match r {
                    Ok(n) => format!("loads ({n} instructions verified for an empty chain)"),
                    Err(e) => format!("refused: {e}"),
                }
            );
        }
        match self.target_with(choice) {
            Ok(t) => {
                let forced = if choice == AccessChoice::Auto {
                    ""
                } else {
                    " (--packet-access)"
                };
                let _ = writeln!(out, "  strategy: {}{forced}", t.access);
            }
            Err(m) => {
                let _ = writeln!(out, "  unusable: {}", m.what);
            }
        }
        let _ = writeln!(out, "  verifier limits relied on: {LIMITS}");
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    #[test]
    fn releases_compare_by_major_and_minor() {
        use super::release_at_least;
        assert!(release_at_least("6.18.44-fc-v1252", 6, 11));
        assert!(release_at_least("6.11.0", 6, 11));
        assert!(!release_at_least("6.10.14-amd64", 6, 11));
        assert!(!release_at_least("6.6.0", 6, 11));
        assert!(release_at_least("7.0", 6, 11));
        assert!(release_at_least("weird", 6, 11));
    }

    #[test]
    fn release_has_fix_reads_the_stable_series() {
        use super::release_has_fix;
        let st = [(6, 12, 117), (6, 18, 44)];
        assert!(release_has_fix("7.2.0", (7, 2), &st));
        assert!(release_has_fix("7.3.4+deb13-amd64", (7, 2), &st));
        assert!(!release_has_fix("7.1.9", (7, 2), &st));
        assert!(release_has_fix("6.18.44-fc-v1252", (7, 2), &st));
        assert!(!release_has_fix("6.18.43", (7, 2), &st));
        assert!(release_has_fix("6.12.117+deb13-amd64", (7, 2), &st));
        assert!(!release_has_fix("6.12.116+deb13-amd64", (7, 2), &st));
        assert!(!release_has_fix("6.1.0-50-amd64", (7, 2), &st));
        assert!(release_has_fix("weird", (7, 2), &st));
    }

    use super::*;

    #[test]
    fn reasons_skip_statistics() {
        let log =
            "0: (b7) r0 = 1\nR9 invalid mem access 'scalar'\nprocessed 12 insns (limit 1000000)\n";
        assert_eq!(last_reason(log), "R9 invalid mem access 'scalar'");
        assert_eq!(last_reason(""), "verifier refused (no log)");
    }

    #[test]
    fn target_names_what_is_missing() {
        let base = Probe {
            release: "6.1.0".into(),
            layout: Err("no struct bpf_nf_ctx in BTF".into()),
            prog_type: Ok(()),
            link: true,
            defrag: false,
            stack: StackRule::Jit16,
            strategies: Vec::new(),
        };
        let m = base.target().unwrap_err();
        assert!(m.to_string().contains("bpf_nf_ctx"), "{m}");
        assert!(m.to_string().contains("Linux 6.4"), "{m}");
        let nolink = Probe {
            link: false,
            ..base.clone()
        };
        assert!(nolink.target().unwrap_err().what.contains("LINK"));
        let ok = Probe {
            layout: Ok(KernelLayout::example()),
            strategies: vec![
                (PacketAccess::Dynptr, Ok(100)),
                (PacketAccess::Cast, Err("same insn".into())),
            ],
            ..base.clone()
        };
        assert_eq!(ok.target().unwrap().access, PacketAccess::Dynptr);
        let forced = ok.target_with(AccessChoice::Cast).unwrap_err();
        assert!(forced.what.contains("same insn"), "{forced}");
        assert!(
            forced.to_string().ends_with("(use --packet-access auto)"),
            "{forced}"
        );
        let both = Probe {
            strategies: vec![(PacketAccess::Dynptr, Ok(1)), (PacketAccess::Cast, Ok(1))],
            ..ok.clone()
        };
        assert_eq!(both.target().unwrap().access, PacketAccess::Cast);
        let dynptr = both.target_with(AccessChoice::Dynptr).unwrap();
        assert_eq!(dynptr.access, PacketAccess::Dynptr);
        let none = Probe {
            strategies: vec![(PacketAccess::Dynptr, Err("R1 type".into()))],
            ..ok
        };
        assert!(none.target().unwrap_err().what.contains("R1 type"));
    }

    /// The real probe on the running kernel (privileged: loads programs).
    #[test]
    fn probe_running_kernel() {
        if !nix::unistd::Uid::effective().is_root() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI runs as root"
            );
            eprintln!("skipping: not root");
            return;
        }
        let p = probe();
        let report = p.report();
        eprint!("{report}");
        assert!(report.contains(&p.release), "{report}");
        // Every kernel of the test matrix but 6.1 runs bpfilter; 6.1 must say why not.
        match p.target() {
            Ok(t) => assert!(
                report.contains(&format!("strategy: {}", t.access)),
                "{report}"
            ),
            Err(m) => assert!(p.release.starts_with("6.1."), "{m}\n{report}"),
        }
    }
}
