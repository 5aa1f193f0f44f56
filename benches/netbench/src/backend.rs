//! The firewalls under test and how each one is loaded, changed and read back.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::netns::{in_ns_cmd, run_ok};
use crate::ruleset::{self, Rule};

/// Longest a ruleset load may take before the configuration is given up.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(180);

/// A firewall implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// No firewall at all: the reference every sample is compared with.
    None,
    /// The kernel's ip_tables, loaded with iptables-legacy-restore.
    Legacy,
    /// nftables, one linear base chain, loaded with `nft -f`.
    Nft,
    /// bpfilter, loaded with `bpfilter iptables-restore` (iptables-legacy-restore preloaded).
    Bpfilter,
    /// An attached BPF_NETFILTER program `r0 = 1; exit` at LOCAL_IN: the floor cost of any
    /// BPF hook (N = 0 only, no rules).
    BpfFloor,
}

impl Backend {
    /// Name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "nftables",
            Backend::Bpfilter => "bpfilter",
            Backend::BpfFloor => "bpf-floor",
        }
    }

    /// Short tag for namespace names.
    pub fn tag(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::Legacy => "ipt",
            Backend::Nft => "nft",
            Backend::Bpfilter => "bpf",
            Backend::BpfFloor => "floor",
        }
    }

    /// Parse a command-line name (long or short).
    pub fn from_name(s: &str) -> Option<Backend> {
        match s {
            "none" => Some(Backend::None),
            "iptables-legacy" | "legacy" | "ipt" | "iptables" => Some(Backend::Legacy),
            "nftables" | "nft" => Some(Backend::Nft),
            "bpfilter" | "bpf" => Some(Backend::Bpfilter),
            "bpf-floor" | "floor" => Some(Backend::BpfFloor),
            _ => None,
        }
    }
}

/// Where the tools are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `bpfilter` binary.
    pub bpfilter: PathBuf,
    /// Socket of the benchmark's own bpfilter daemon.
    pub socket: PathBuf,
    /// That daemon's log, where it says why it refused a ruleset.
    pub daemon_log: PathBuf,
    /// Loads and appends still running then are stopped (the run's time budget).
    pub deadline: Option<Instant>,
    /// Private xtables lock file (`XTABLES_LOCKFILE`): the machine-wide /run/xtables.lock is
    /// shared by every iptables in every namespace, and another user holding it would add
    /// waiting time to the figures. The run is sequential, so a private lock loses nothing.
    pub xtables_lock: PathBuf,
    /// bpffs root of the benchmark's bpfilter daemon.
    pub bpffs: PathBuf,
}

impl Tools {
    /// How long the next command may take: [`LOAD_TIMEOUT`], cut at the deadline.
    pub fn timeout(&self) -> Duration {
        match self.deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_secs(5), LOAD_TIMEOUT),
            None => LOAD_TIMEOUT,
        }
    }

    fn cmd(&self, b: Backend, ns: &str, args: &[String]) -> Result<Command> {
        let mut c = match b {
            Backend::None | Backend::BpfFloor => bail!("no ruleset to run"),
            Backend::Legacy => in_ns_cmd(ns, Path::new("iptables-legacy"), args),
            Backend::Nft => in_ns_cmd(ns, Path::new("nft"), args),
            Backend::Bpfilter => {
                let mut a = vec!["iptables".to_string()];
                a.extend_from_slice(args);
                in_ns_cmd(ns, &self.bpfilter, &a)
            }
        };
        c.env("BPFILTER_SOCKET", &self.socket);
        c.env("XTABLES_LOCKFILE", &self.xtables_lock);
        Ok(c)
    }

    /// Load a ruleset file (iptables-save format, or nft format for nftables) into namespace
    /// `ns`; returns the wall time of the whole command.
    pub fn restore(&self, b: Backend, ns: &str, file: &Path) -> Result<Duration> {
        let f = file.display().to_string();
        let mut c = match b {
            Backend::None | Backend::BpfFloor => return Ok(Duration::ZERO),
            Backend::Legacy => in_ns_cmd(ns, Path::new("iptables-legacy-restore"), &[f]),
            Backend::Nft => in_ns_cmd(ns, Path::new("nft"), &["-f".to_string(), f]),
            Backend::Bpfilter => {
                in_ns_cmd(ns, &self.bpfilter, &["iptables-restore".to_string(), f])
            }
        };
        c.env("BPFILTER_SOCKET", &self.socket);
        c.env("XTABLES_LOCKFILE", &self.xtables_lock);
        match run_ok(c, self.timeout()) {
            Ok(t) => Ok(t.elapsed),
            Err(e) if b == Backend::Bpfilter => match self.last_refusal() {
                Some(why) => Err(e.context(format!("daemon: {why}"))),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The daemon's last log line that says it refused something, colours removed.
    pub fn last_refusal(&self) -> Option<String> {
        let log = std::fs::read_to_string(&self.daemon_log).ok()?;
        let line = log.lines().rev().find(|l| l.contains("refused"))?;
        let plain = strip_ansi(line);
        let from = plain.find("refused").unwrap_or(0);
        Some(plain[from..].chars().take(300).collect())
    }

    /// Append one rule (after the final ACCEPT, so no verdict changes); returns the wall time.
    pub fn append(&self, b: Backend, ns: &str, r: &Rule) -> Result<Duration> {
        let args: Vec<String> = match b {
            Backend::None | Backend::BpfFloor => return Ok(Duration::ZERO),
            Backend::Nft => ["add", "rule", "ip", "filter", "input"]
                .iter()
                .map(|s| s.to_string())
                .chain(ruleset::nft_expr(r).split(' ').map(String::from))
                .collect(),
            Backend::Legacy | Backend::Bpfilter => {
                let mut a = vec!["-A".to_string(), "INPUT".to_string()];
                a.extend(ruleset::ipt_args(r));
                a
            }
        };
        let c = self.cmd(b, ns, &args)?;
        Ok(run_ok(c, self.timeout())?.elapsed)
    }

    /// `bpfilter status` of namespace `ns`.
    pub fn bpfilter_status(&self, ns: &str) -> Result<String> {
        let mut c = in_ns_cmd(ns, &self.bpfilter, &["status".to_string()]);
        c.env("BPFILTER_SOCKET", &self.socket);
        let out = run_ok(c, LOAD_TIMEOUT)?.output;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Packets counted by the final ACCEPT rule (rule number `n + 1` of INPUT).
    pub fn final_counter(&self, b: Backend, ns: &str, n: usize) -> Result<u64> {
        match b {
            Backend::None | Backend::BpfFloor => bail!("no ruleset, no counter"),
            Backend::Nft => {
                let args: Vec<String> = ["list", "counter", "ip", "filter", ruleset::NFT_COUNTER]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let out = run_ok(self.cmd(b, ns, &args)?, LOAD_TIMEOUT)?.output;
                parse_nft_counter(&String::from_utf8_lossy(&out.stdout))
            }
            Backend::Legacy | Backend::Bpfilter => {
                let args: Vec<String> = ["-S", "INPUT", &(n + 1).to_string(), "-v"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let out = run_ok(self.cmd(b, ns, &args)?, LOAD_TIMEOUT)?.output;
                parse_ipt_counter(&String::from_utf8_lossy(&out.stdout))
            }
        }
    }
}

/// Per-hook load time (BPF_PROG_LOAD: verifier and JIT) from `bpfilter status` lines such as
/// `INPUT    prog id 42     insns 123     jited 456      bytes verified 789      load 1.23 ms`.
pub fn parse_status_load_ms(s: &str) -> Vec<(String, f64)> {
    s.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let hook = w.first()?.to_string();
            let pos = w.iter().position(|t| *t == "load")?;
            let ms: f64 = w.get(pos + 1)?.parse().ok()?;
            (w.get(pos + 2) == Some(&"ms")).then_some((hook, ms))
        })
        .collect()
}

/// Text without ANSI escape sequences (ESC [ ... letter).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Packets of `iptables -S CHAIN N -v` output (`... -c PKTS BYTES -j ...`).
pub fn parse_ipt_counter(s: &str) -> Result<u64> {
    let line = s
        .lines()
        .find(|l| l.starts_with("-A "))
        .ok_or_else(|| anyhow!("no rule in {s:?}"))?;
    let mut it = line.split_whitespace().skip_while(|w| *w != "-c");
    it.next();
    it.next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("no counter in {line:?}"))
}

/// Packets of `nft list counter ...` output.
pub fn parse_nft_counter(s: &str) -> Result<u64> {
    let mut it = s.split_whitespace().skip_while(|w| *w != "packets");
    it.next();
    it.next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("no packets in {s:?}"))
}

/// The benchmark's own bpfilter daemon (private socket and bpffs folder).
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its bpffs root.
    pub bpffs: PathBuf,
}

impl Daemon {
    /// Start `bin daemon` and wait until its socket accepts connections.
    pub fn start(bin: &Path, socket: &Path, bpffs: &Path, log: &Path) -> Result<Daemon> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(socket);
        let logf =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(bin)
            .arg("daemon")
            .arg("--socket")
            .arg(socket)
            .arg("--bpffs")
            .arg(bpffs)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("spawn {} daemon", bin.display()))?;
        let mut d = Daemon {
            child,
            socket: socket.to_path_buf(),
            bpffs: bpffs.to_path_buf(),
        };
        let t0 = Instant::now();
        loop {
            if UnixStream::connect(socket).is_ok() {
                return Ok(d);
            }
            if let Some(st) = d.child.try_wait()? {
                bail!(
                    "bpfilter daemon exited ({st}) before accepting; log: {}",
                    log.display()
                );
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!(
                    "bpfilter daemon not ready after 20 s; log: {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Remove everything it attached, stop it, and unpin what is left under its bpffs root.
    pub fn stop(mut self, bin: &Path) {
        let mut c = Command::new(bin);
        c.arg("flush")
            .arg("--all")
            .env("BPFILTER_SOCKET", &self.socket);
        let _ = crate::netns::run_timed(c, Duration::from_secs(60));
        self.kill();
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_file(&self.socket);
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse() {
        let ipt = "-A INPUT -s 10.200.0.1/32 -d 10.200.0.2/32 -p udp -m udp --dport 5001 -c 1234 5678 -j ACCEPT\n";
        assert_eq!(parse_ipt_counter(ipt).expect("ipt"), 1234);
        assert!(parse_ipt_counter("-P INPUT ACCEPT\n").is_err());
        let nft = "table ip filter {\n\tcounter final {\n\t\tpackets 42 bytes 2520\n\t}\n}\n";
        assert_eq!(parse_nft_counter(nft).expect("nft"), 42);
        assert!(parse_nft_counter("table ip filter {}").is_err());
    }

    #[test]
    fn status_load_times() {
        let st = "generation 3 applied at 1795714738 (unix time), pins /sys/fs/bpf/x\n\
                  INPUT    prog id 42     insns 123     jited 456      bytes verified 789      load 1.23 ms\n\
                  OUTPUT   prog id 43     insns 3       jited 20       bytes verified 3        load 0.05 ms\n";
        assert_eq!(
            parse_status_load_ms(st),
            vec![("INPUT".to_string(), 1.23), ("OUTPUT".to_string(), 0.05)]
        );
        assert!(parse_status_load_ms("nothing here\n").is_empty());
    }

    #[test]
    fn ansi_is_stripped() {
        let l = "\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m refused: compiling INPUT";
        assert_eq!(strip_ansi(l), "2026  WARN refused: compiling INPUT");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn names_round_trip() {
        for b in [
            Backend::None,
            Backend::Legacy,
            Backend::Nft,
            Backend::Bpfilter,
            Backend::BpfFloor,
        ] {
            assert_eq!(Backend::from_name(b.name()), Some(b));
            assert_eq!(Backend::from_name(b.tag()), Some(b));
        }
    }
}
