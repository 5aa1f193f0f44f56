//! Differential conformance harness: the same rulesets and the same packets through two
//! identical namespace topologies, one filtered by the kernel's iptables-legacy, the other by
//! bpfilter (or by the kernel again, to validate the harness itself). For every ruleset it
//! compares `iptables-save -c` of both sides exactly (every rule's and policy's counters), the
//! exit status of iptables-restore, which packets came out of the firewall and on which
//! interface, and the errno of every packet the firewall originated. Stateful cases
//! (connection tracking, REJECT, LOG) are replayed packet by packet, flows and their replies
//! in order, in fresh namespaces, and also compare the frames the firewall sends by itself
//! (REJECT's replies, byte for byte but the IP ID) and the LOG lines of `/dev/kmsg`. A
//! mismatch is shrunk to a minimal ruleset and packet list, printed as a regression fixture.
//!
//! The harness is test tooling run as root; it uses anyhow throughout, like a binary.

pub mod backend;
pub mod flow;
pub mod gen;
pub mod kmsg;
pub mod netns;
pub mod packet;
pub mod ruleset;

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, Instant};

use backend::{Backend, Daemon, RestoreOutcome};
use kmsg::{Kmsg, SysctlGuard};
use netns::{Expect, Fate, LogLine, Reply, TopoConfig, Topology};
use packet::{Packet, Path};
use ruleset::Ruleset;
use test_support::Rng;

/// What the candidate topology is filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// The kernel again (harness self-check: must always be identical).
    Kernel,
    /// bpfilter, binaries from `backend::bin_dir()`.
    Bpfilter,
    /// The kernel with a deliberately wrong ruleset (its first `-j ACCEPT` turned into
    /// `-j DROP`): proves that the harness sees differences and that the minimizer shrinks them.
    KernelMutant,
    /// The kernel with its first `-j REJECT` turned into `-j DROP` and its first `-j LOG`
    /// into a rule without target (`mutate_quiet`): counters stay those of the same rules, so
    /// the replies and log lines must give it away.
    KernelMutantQuiet,
}

/// The mutation `Candidate::KernelMutant` applies to every ruleset it loads. The comment lets
/// its iptables-save undo the change, so that only counters and packet fates can reveal it.
pub fn mutate(text: &str) -> String {
    text.replacen("-j ACCEPT", "-m comment --comment MUTANT -j DROP", 1)
}

/// The mutation of `Candidate::KernelMutantQuiet`: the target of the first rule that REJECTs
/// becomes `-m comment --comment MUTANT-REJECT -j DROP`, that of the first rule that LOGs
/// `-m comment --comment MUTANT-LOG` (no target: the rule still counts, and goes on to the next
/// one, as LOG does). Returns the text and the (mutated, original) pairs that undo it in an
/// iptables-save output; that works when the mutated rules are written as iptables-save
/// writes them.
pub fn mutate_quiet(text: &str) -> (String, Vec<(String, String)>) {
    let mut undo = Vec::new();
    let mut out = String::with_capacity(text.len());
    let (mut reject, mut log) = (false, false);
    for line in text.lines() {
        let mut l = line.to_string();
        if line.starts_with("-A ") || line.starts_with('[') {
            for (target, marker, done) in [
                (
                    " -j REJECT",
                    " -m comment --comment MUTANT-REJECT -j DROP",
                    &mut reject,
                ),
                (" -j LOG", " -m comment --comment MUTANT-LOG", &mut log),
            ] {
                if *done {
                    continue;
                }
                if let Some(at) = line.find(target) {
                    let rest = &line[at + target.len()..];
                    if rest.is_empty() || rest.starts_with(' ') {
                        undo.push((marker.to_string(), line[at..].to_string()));
                        l = format!("{}{marker}", &line[..at]);
                        *done = true;
                        break;
                    }
                }
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    (out, undo)
}

/// Hides the mutation in `Candidate::KernelMutant`'s iptables-save output.
pub fn unmutate_save(text: &str) -> String {
    text.replace(" -m comment --comment MUTANT -j DROP", " -j ACCEPT")
}

/// Run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Backend compared with the kernel.
    pub candidate: Candidate,
    /// Packets per hand-written ruleset.
    pub hand_packets: usize,
    /// Number of random rulesets.
    pub random_count: usize,
    /// Keep the random rulesets that use connection state, REJECT or LOG (a third of them).
    /// The bounded run leaves them out: their open differences (REJECT replies for some
    /// random shapes, see known-differences/README.md) are listed by the full run.
    pub random_stateful: bool,
    /// Packets per random ruleset.
    pub random_packets: usize,
    /// Seed of every generator.
    pub seed: u64,
    /// Only run cases whose name contains this.
    pub only: Option<String>,
    /// Run every n-th case only (1 = all): a spread sample for slow machines (the QEMU
    /// kernel matrix runs under software emulation).
    pub every: usize,
    /// Shrink mismatches to minimal reproductions.
    pub minimize: bool,
    /// Minimize at most this many mismatches (every case runs regardless).
    pub max_mismatches: usize,
    /// Also restart the bpfilter daemon between packets in some random cases (persistence).
    pub restarts: bool,
    /// Random rulesets get this many times more rules per chain and user chains (1 = normal).
    pub random_scale: u64,
    /// Run `iptables -C` on hand-written rules after their packets.
    pub check_rules: bool,
    /// Time the minimizer may spend on one mismatch.
    pub minimize_budget: Duration,
    /// Print one line per case as it runs.
    pub verbose: bool,
}

impl Config {
    /// The full run (`make conformance`): >= 40 hand-written and 200 random rulesets,
    /// more than 50,000 packets.
    pub fn full() -> Config {
        Config {
            candidate: Candidate::Bpfilter,
            hand_packets: 1000,
            random_count: 220,
            random_packets: 250,
            seed: 0xb0f1_17e4,
            only: None,
            every: 1,
            minimize: true,
            restarts: false,
            check_rules: true,
            random_scale: 1,
            random_stateful: true,
            max_mismatches: 3,
            minimize_budget: Duration::from_secs(120),
            verbose: true,
        }
    }

    /// The bounded run inside `make test` (well under five minutes).
    pub fn bounded() -> Config {
        Config {
            hand_packets: 300,
            random_count: 60,
            random_packets: 200,
            max_mismatches: 1,
            minimize_budget: Duration::from_secs(60),
            random_stateful: false,
            ..Config::full()
        }
    }
}

/// A ruleset and its packets.
#[derive(Debug, Clone)]
pub struct Case {
    /// The ruleset.
    pub ruleset: Ruleset,
    /// The packets, replayed in order within each path (a stateful case: in order, one at a
    /// time).
    pub packets: Vec<Packet>,
    /// Where it came from: `hand`, `random` or `regression`.
    pub kind: &'static str,
}

/// What one side showed for a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// iptables-restore's exit status and message.
    pub restore: RestoreOutcome,
    /// `iptables-save -c -t filter` without comment lines.
    pub save: String,
    /// Exit codes of the ruleset's edits (iptables commands between packets), in order.
    pub edits: Vec<RestoreOutcome>,
    /// Per packet (same order as the case's packets).
    pub fates: Vec<Fate>,
    /// Kernel log records overwritten before the harness could read them during the case
    /// (another process logging a lot): its LOG comparison may then see lines missing.
    pub log_lost: u64,
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// Ruleset name.
    pub name: String,
    /// `hand`, `random` or `regression`.
    pub kind: &'static str,
    /// Rules in the ruleset.
    pub rules: usize,
    /// Packets replayed.
    pub packets: usize,
    /// Rules the kernel counted at least one packet on (coverage of the corpus).
    pub rules_hit: usize,
    /// True when both sides agreed on everything.
    pub identical: bool,
    /// What differed.
    pub detail: Option<String>,
    /// False when a mismatch did not come back on a second run (flaky).
    pub reproduced: bool,
    /// Minimal reproduction: (iptables-save text, packet list).
    pub repro: Option<(String, String)>,
}

/// Result of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// One row per case.
    pub cases: Vec<CaseReport>,
    /// Wall time.
    pub elapsed: Duration,
    /// Candidate name.
    pub candidate: String,
}

impl Summary {
    /// Cases that differed.
    pub fn mismatches(&self) -> usize {
        self.cases.iter().filter(|c| !c.identical).count()
    }

    /// Number of cases of a kind.
    pub fn count(&self, kind: &str) -> usize {
        self.cases.iter().filter(|c| c.kind == kind).count()
    }

    /// Total packets replayed (per side).
    pub fn packets(&self) -> usize {
        self.cases.iter().map(|c| c.packets).sum()
    }

    /// The report table and the summary line.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<40} {:>6} {:>5} {:>8}  identical?",
            "ruleset", "rules", "hit", "packets"
        );
        for c in &self.cases {
            let _ = writeln!(
                s,
                "{:<40} {:>6} {:>5} {:>8}  {}",
                format!("{} ({})", c.name, c.kind),
                c.rules,
                c.rules_hit,
                c.packets,
                if c.identical {
                    "yes"
                } else if c.reproduced {
                    "NO"
                } else {
                    "NO (flaky)"
                }
            );
        }
        s.push_str(&self.summary_line());
        s.push('\n');
        s
    }

    /// `conformance: ...` one-line summary.
    pub fn summary_line(&self) -> String {
        let rules: usize = self.cases.iter().map(|c| c.rules).sum();
        let hit: usize = self.cases.iter().map(|c| c.rules_hit).sum();
        format!(
            "conformance (kernel vs {}): {} rulesets ({} hand-written, {} random, {} regression), {} rules ({} hit by packets), {} packets, {} identical, {} mismatches ({} flaky), {:.1} s",
            self.candidate,
            self.cases.len(),
            self.count("hand"),
            self.count("random"),
            self.count("regression"),
            rules,
            hit,
            self.packets(),
            self.cases.len() - self.mismatches(),
            self.mismatches(),
            self.cases.iter().filter(|c| !c.identical && !c.reproduced).count(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Directory of the hand-written rulesets.
pub fn rulesets_dir() -> PathBuf {
    FsPath::new(env!("CARGO_MANIFEST_DIR")).join("rulesets")
}

/// Directory of the regression fixtures (`NAME.rules` + `NAME.packets`).
pub fn regressions_dir() -> PathBuf {
    FsPath::new(env!("CARGO_MANIFEST_DIR")).join("regressions")
}

fn sorted_files(dir: &FsPath, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    Ok(v)
}

/// The packets of a case. A stateful ruleset gets two fifths lone packets (three quarters of
/// them with right transport checksums, which conntrack checks at PRE_ROUTING; the rest are
/// INVALID for that) and three fifths flows (`flow::flows_for`), after them.
pub fn case_packets(rs: &Ruleset, n: usize, rng: &mut Rng) -> Vec<Packet> {
    if !rs.stateful {
        return gen::packets_for(rs, n, rng);
    }
    let lone = n * 2 / 5;
    let mut p = gen::packets_for(rs, lone, rng);
    for x in &mut p {
        if rng.chance(75) {
            packet::fix_l4_checksum(&mut x.bytes);
        }
    }
    let base = p.len();
    p.extend(flow::flows_for(rs, n - lone, base, rng));
    p
}

/// Builds the corpus of a run: hand-written rulesets, regressions, random rulesets.
pub fn corpus(cfg: &Config) -> Result<Vec<Case>> {
    let mut rng = Rng::new(cfg.seed);
    let mut cases = Vec::new();
    for f in sorted_files(&rulesets_dir(), "rules")? {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
        let mut rs = Ruleset::parse(&name, &text)?;
        rs.stateful |= rs.uses_stateful_features();
        // A per-ruleset generator, so that adding a ruleset does not change the others' packets.
        let mut prng = Rng::new(
            cfg.seed
                ^ name
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b))),
        );
        let packets = case_packets(&rs, cfg.hand_packets, &mut prng);
        // After the packets, `iptables -C` on up to 30 of the rules: iptables compares the
        // entries it reads back byte for byte with the ones it builds from the rule text.
        if cfg.check_rules && !rs.name.starts_with("reject-") {
            let mut idx: Vec<usize> = (0..rs.rules.len()).collect();
            while idx.len() > 30 {
                let k = prng.below(idx.len() as u64) as usize;
                idx.remove(k);
            }
            for i in idx {
                let r = &rs.rules[i];
                let mut e = vec!["-C".to_string(), r.chain.clone()];
                e.extend(r.args.iter().cloned());
                rs.edits.push((packets.len(), e));
            }
        }
        cases.push(Case {
            ruleset: rs,
            packets,
            kind: "hand",
        });
    }
    for f in sorted_files(&regressions_dir(), "rules")? {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut rs = Ruleset::parse(&name, &std::fs::read_to_string(&f)?)?;
        rs.stateful |= rs.uses_stateful_features();
        let pf = f.with_extension("packets");
        let packets = packet::parse_packets(
            &std::fs::read_to_string(&pf).with_context(|| format!("read {}", pf.display()))?,
        )?;
        cases.push(Case {
            ruleset: rs,
            packets,
            kind: "regression",
        });
    }
    for i in 0..cfg.random_count {
        let mut r = rng.fork();
        let mut rs = gen::random_ruleset_scaled(i, cfg.random_packets, cfg.random_scale, &mut r);
        rs.stateful |= rs.uses_stateful_features();
        if rs.stateful && !cfg.random_stateful {
            continue;
        }
        if cfg.restarts && r.chance(30) {
            let at = r.below(cfg.random_packets as u64 + 1) as usize;
            rs.edits.push((at, vec![backend::RESTART.to_string()]));
            rs.name.push_str("-r");
        }
        if rs.stateful {
            rs.name.push_str("-s");
        }
        let packets = case_packets(&rs, cfg.random_packets, &mut r);
        cases.push(Case {
            ruleset: rs,
            packets,
            kind: "random",
        });
    }
    if let Some(o) = &cfg.only {
        cases.retain(|c| c.ruleset.name.contains(o.as_str()));
    }
    let every = cfg.every.max(1);
    Ok(cases.into_iter().step_by(every).collect())
}

/// One backend and its topology.
#[derive(Debug)]
pub struct Side {
    /// The firewall backend.
    pub backend: Backend,
    /// Its namespaces.
    pub topo: Topology,
}

/// The two sides: reference (kernel) and candidate.
#[derive(Debug)]
pub struct Harness {
    /// Kernel iptables-legacy.
    pub reference: Side,
    /// The backend under test.
    pub candidate: Side,
    tag: String,
    /// Fresh topologies made for stateful cases so far (their names).
    fresh: u32,
    /// The kernel log, opened at the first stateful case.
    kmsg: Option<Kmsg>,
    /// `net.netfilter.nf_log_all_netns` = 1 while the harness runs.
    log_all_netns: Option<SysctlGuard>,
    /// The kernel log is the machine's: one run at a time reads it. Dropped last.
    _log_lock: Option<kmsg::LogLock>,
}

/// Checks what the harness needs (root, namespaces, iptables-legacy) and says what is missing.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the conformance harness needs root (network namespaces, raw sockets, BPF)");
    }
    netns::sh(&["iptables-legacy-restore", "--version"])
        .context("iptables-legacy-restore is not installed")?;
    // One name per call: the tests of one process run their preflights at the same time.
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("cfprobe{}x{n}", std::process::id());
    netns::sh(&["ip", "netns", "add", &probe]).context("cannot create network namespaces")?;
    let _ = netns::sh(&["ip", "netns", "del", &probe]);
    Ok(())
}

impl Harness {
    /// Creates both topologies (and starts the bpfilter daemon when it is the candidate).
    pub fn new(candidate: Candidate) -> Result<Harness> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("cf{}x{n}", std::process::id());
        netns::remove_stale("cf");
        let cand_backend = match candidate {
            Candidate::Kernel => Backend::Kernel,
            Candidate::KernelMutant => Backend::KernelMutant,
            Candidate::KernelMutantQuiet => Backend::KernelMutantQuiet(Default::default()),
            Candidate::Bpfilter => Backend::Bpfilter(Daemon::start(&backend::bin_dir(), &tag)?),
        };
        let reference = Side {
            backend: Backend::Kernel,
            topo: Topology::create(&format!("{tag}k"))?,
        };
        let candidate = Side {
            backend: cand_backend,
            topo: Topology::create(&format!("{tag}b"))?,
        };
        Ok(Harness {
            reference,
            candidate,
            tag,
            fresh: 0,
            kmsg: None,
            log_all_netns: None,
            _log_lock: None,
        })
    }

    /// Name of the candidate backend.
    pub fn candidate_name(&self) -> &'static str {
        self.candidate.backend.name()
    }

    /// Loads the ruleset on both sides, replays the packets path by path (or packet by packet
    /// for a stateful case), reads the counters.
    pub fn run_case(&mut self, rs: &Ruleset, pkts: &[Packet]) -> Result<(Outcome, Outcome)> {
        if rs.stateful || pkts.iter().any(|p| p.bcast || p.socket) {
            return self.run_case_stateful(rs, pkts);
        }
        let text = rs.to_text();
        let ra =
            self.reference
                .backend
                .restore(&self.reference.topo.fw, &text, rs.initial_counters)?;
        let rb =
            self.candidate
                .backend
                .restore(&self.candidate.topo.fw, &text, rs.initial_counters)?;
        let tagged: Vec<(u16, Vec<u8>, &str, Path)> = pkts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut b = p.bytes.clone();
                packet::set_id(&mut b, (i + 1) as u16);
                ((i + 1) as u16, b, p.iface.as_str(), p.path)
            })
            .collect();
        if pkts.len() >= 65535 {
            bail!("at most 65534 packets per case (IP IDs tag them)");
        }
        let mut fa: HashMap<u16, Fate> = HashMap::new();
        let mut fb: HashMap<u16, Fate> = HashMap::new();
        let mut ea = Vec::new();
        let mut eb = Vec::new();
        let mut edits: Vec<&(usize, Vec<String>)> = rs.edits.iter().collect();
        edits.sort_by_key(|e| e.0);
        let mut from = 0;
        let mut bounds: Vec<(usize, Option<&Vec<String>>)> = edits
            .iter()
            .map(|(at, args)| ((*at).min(tagged.len()), Some(args)))
            .collect();
        bounds.push((tagged.len(), None));
        for (to, edit) in bounds {
            let segment = &tagged[from..to.max(from)];
            from = to.max(from);
            for path in Path::ALL {
                let batch: Vec<(u16, &[u8], &str)> = segment
                    .iter()
                    .filter(|t| t.3 == path)
                    .map(|t| (t.0, t.1.as_slice(), t.2))
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                fa.extend(
                    self.reference
                        .topo
                        .replay(path, &batch)
                        .with_context(|| format!("kernel side, {}", path.as_str()))?,
                );
                let cand = self.candidate_name();
                fb.extend(
                    self.candidate
                        .topo
                        .replay(path, &batch)
                        .with_context(|| format!("{cand} side, {}", path.as_str()))?,
                );
            }
            if let Some(args) = edit {
                ea.push(
                    self.reference
                        .backend
                        .iptables(&self.reference.topo.fw, args)?,
                );
                eb.push(
                    self.candidate
                        .backend
                        .iptables(&self.candidate.topo.fw, args)?,
                );
            }
        }
        let sa = self.reference.backend.save(&self.reference.topo.fw)?;
        if sa.starts_with("<iptables-save exit") {
            bail!("the kernel's iptables-legacy-save failed: {sa}");
        }
        let sb = self.candidate.backend.save(&self.candidate.topo.fw)?;
        check_candidate(&mut self.candidate.backend, &self.candidate.topo)?;
        let order = |m: &HashMap<u16, Fate>| -> Vec<Fate> {
            (1..=pkts.len() as u16)
                .map(|i| m.get(&i).cloned().unwrap_or_default())
                .collect()
        };
        Ok((
            Outcome {
                restore: ra,
                save: sa,
                edits: ea,
                fates: order(&fa),
                log_lost: 0,
            },
            Outcome {
                restore: rb,
                save: sb,
                edits: eb,
                fates: order(&fb),
                log_lost: 0,
            },
        ))
    }

    /// The stateful replay: fresh topologies for both sides (no connection, ICMP rate-limit
    /// token or fragment queue survives from an earlier run), the other tables loaded by the
    /// kernel's iptables-legacy on both, then one packet at a time, reference first, the
    /// candidate waiting for the frames and log lines the reference produced (bpfilter
    /// answers from user space).
    fn run_case_stateful(&mut self, rs: &Ruleset, pkts: &[Packet]) -> Result<(Outcome, Outcome)> {
        if pkts.len() >= 65535 {
            bail!("at most 65534 packets per case (IP IDs tag them)");
        }
        if self.kmsg.is_none() {
            self._log_lock = Some(kmsg::LogLock::take()?);
            // Without it, LOG in a namespace other than the initial one prints nothing.
            self.log_all_netns = Some(SysctlGuard::set("net/netfilter/nf_log_all_netns", "1")?);
            self.kmsg = Some(Kmsg::open()?);
        }
        self.fresh += 1;
        let cfg = topo_config(rs, pkts);
        let ta = Topology::create_with(&format!("{}s{}k", self.tag, self.fresh), &cfg)?;
        let tb = Topology::create_with(&format!("{}s{}b", self.tag, self.fresh), &cfg)?;
        if std::env::var_os("CONFORMANCE_DEBUG").is_some() {
            let ino = |t: &Topology| {
                std::fs::metadata(format!("/run/netns/{}", t.fw))
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                    .unwrap_or(0)
            };
            eprintln!(
                "{}: fresh firewall namespaces net:[{}] (kernel) net:[{}] ({})",
                rs.name,
                ino(&ta),
                ino(&tb),
                self.candidate_name()
            );
        }
        self.stateful_in(rs, pkts, ta, tb)
    }

    fn stateful_in(
        &mut self,
        rs: &Ruleset,
        pkts: &[Packet],
        mut ta: Topology,
        mut tb: Topology,
    ) -> Result<(Outcome, Outcome)> {
        let extra = rs.extra_text();
        if !extra.is_empty() {
            for t in [&ta, &tb] {
                let o = Backend::Kernel.restore(&t.fw, &extra, false)?;
                if o.code != 0 {
                    bail!(
                        "iptables-legacy-restore refused the other tables: {}",
                        o.stderr.trim()
                    );
                }
            }
        }
        let text = rs.to_text();
        let ra = self
            .reference
            .backend
            .restore(&ta.fw, &text, rs.initial_counters)?;
        let rb = self
            .candidate
            .backend
            .restore(&tb.fw, &text, rs.initial_counters)?;
        let addrs = case_addresses(pkts);
        let kmsg = self.kmsg.as_mut().context("kmsg not open")?;
        // Whatever was logged before (the restores, other processes) is not the case's.
        kmsg.read()?;
        let lost0 = kmsg.lost;
        let mut fa: Vec<Fate> = Vec::with_capacity(pkts.len());
        let mut fb: Vec<Fate> = Vec::with_capacity(pkts.len());
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        let mut edits: Vec<&(usize, Vec<String>)> = rs.edits.iter().collect();
        edits.sort_by_key(|e| e.0);
        let mut next_edit = 0;
        let cand = self.candidate_name();
        for i in 0..=pkts.len() {
            while next_edit < edits.len() && edits[next_edit].0.min(pkts.len()) == i {
                let args = &edits[next_edit].1;
                ea.push(self.reference.backend.iptables(&ta.fw, args)?);
                eb.push(self.candidate.backend.iptables(&tb.fw, args)?);
                next_edit += 1;
            }
            let Some(p) = pkts.get(i) else {
                break;
            };
            let tag = (i + 1) as u16;
            let mut bytes = p.bytes.clone();
            packet::set_id(&mut bytes, tag);
            let sa = ta
                .replay_step(p, &bytes, tag, None)
                .with_context(|| format!("kernel side, packet {}", i + 1))?;
            // bpfilter's lines have facility 1 (user), the kernel's 0: with bpfilter as the
            // candidate a line is attributed by facility, whenever it shows up; with the kernel
            // on both sides, by the side that ran last.
            let by_facility = matches!(self.candidate.backend, Backend::Bpfilter(_));
            let mut la = Vec::new();
            let kmsg = self.kmsg.as_mut().context("kmsg not open")?;
            for r in kmsg.read()? {
                if let Some(l) = log_line(&r, &addrs, tag, p) {
                    if by_facility && r.facility != 0 {
                        if let Some(prev) = fb.last_mut() {
                            prev.logs.push(l);
                        }
                    } else {
                        la.push(l);
                    }
                }
            }
            attach_late(&mut fa, sa.late);
            let mut fate_a = sa.fate;
            fate_a.logs = la;
            let expect = Expect {
                tx: sa.tx,
                rx: sa.rx,
            };
            let t0 = Instant::now();
            let sb = tb
                .replay_step(p, &bytes, tag, Some(expect))
                .with_context(|| format!("{cand} side, packet {}", i + 1))?;
            let mut lb = Vec::new();
            loop {
                let kmsg = self.kmsg.as_mut().context("kmsg not open")?;
                for r in kmsg.read()? {
                    if let Some(l) = log_line(&r, &addrs, tag, p) {
                        if by_facility && r.facility == 0 {
                            fate_a.logs.push(l);
                        } else {
                            lb.push(l);
                        }
                    }
                }
                if lb.len() >= fate_a.logs.len() || t0.elapsed() >= netns::EXPECT_WAIT {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            attach_late(&mut fb, sb.late);
            let mut fate_b = sb.fate;
            fate_b.logs = lb;
            fa.push(fate_a);
            fb.push(fate_b);
        }
        // Stragglers of the last packet.
        std::thread::sleep(Duration::from_millis(30));
        let late_a = ta.late_frames()?;
        attach_late(&mut fa, late_a);
        let late_b = tb.late_frames()?;
        attach_late(&mut fb, late_b);
        let last_tag = pkts.len() as u16;
        let by_facility = matches!(self.candidate.backend, Backend::Bpfilter(_));
        let kmsg = self.kmsg.as_mut().context("kmsg not open")?;
        for r in kmsg.read()? {
            let Some(last) = pkts.last() else {
                break;
            };
            if let Some(l) = log_line(&r, &addrs, last_tag, last) {
                let side = if by_facility && r.facility == 0 {
                    &mut fa
                } else {
                    &mut fb
                };
                if let Some(prev) = side.last_mut() {
                    prev.logs.push(l);
                }
            }
        }
        let log_lost = kmsg.lost - lost0;
        let snat = snat_sources(rs);
        if !snat.is_empty() {
            for f in fa.iter_mut().chain(fb.iter_mut()) {
                mask_snat_ports(&mut f.replies, &snat);
            }
        }
        let sa = self.reference.backend.save(&ta.fw)?;
        if sa.starts_with("<iptables-save exit") {
            bail!("the kernel's iptables-legacy-save failed: {sa}");
        }
        let sb = self.candidate.backend.save(&tb.fw)?;
        check_candidate(&mut self.candidate.backend, &tb)?;
        ta.destroy();
        tb.destroy();
        Ok((
            Outcome {
                restore: ra,
                save: sa,
                edits: ea,
                fates: fa,
                log_lost,
            },
            Outcome {
                restore: rb,
                save: sb,
                edits: eb,
                fates: fb,
                log_lost,
            },
        ))
    }

    /// Runs a case and describes the first differences, None when identical.
    pub fn check(&mut self, rs: &Ruleset, pkts: &[Packet]) -> Result<Option<String>> {
        let (a, b) = self.run_case(rs, pkts)?;
        Ok(diff(&a, &b, pkts, self.candidate_name()))
    }

    /// Stops the daemon, deletes the namespaces.
    pub fn shutdown(self) {
        // The rest (the kernel log reader, the nf_log_all_netns guard, which puts the old value
        // back) is dropped with it.
        let Harness {
            reference,
            candidate,
            ..
        } = self;
        let Side { backend, topo } = candidate;
        if let Backend::Bpfilter(mut d) = backend {
            d.stop();
        }
        topo.destroy();
        reference.topo.destroy();
        let _ = std::fs::remove_file(backend::lock_file());
    }

    /// The namespace tag (for messages).
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// Fails when bpfilter's rules leaked into the kernel's own filter table of its namespace
/// (identical results would then prove nothing) or when its daemon died.
fn check_candidate(backend: &mut Backend, topo: &Topology) -> Result<()> {
    if let Backend::Bpfilter(d) = backend {
        let names = topo.in_fw(|| {
            std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default()
        })?;
        if names.lines().any(|l| l == "filter") {
            let k = Backend::Kernel.save(&topo.fw)?;
            if k.lines().any(|l| l.starts_with('[') || l.starts_with("-A")) {
                bail!("rules reached the kernel's own filter table in bpfilter's namespace:\n{k}");
            }
        }
        if !d.alive() {
            bail!(
                "the bpfilter daemon died; last log lines:\n{}",
                d.log_tail()
            );
        }
    }
    Ok(())
}

/// The source addresses the ruleset's `#nat` lines translate to (SNAT `--to-source`, the
/// address of a MASQUERADE rule's `-o` interface, every firewall address for one without).
fn snat_sources(rs: &Ruleset) -> Vec<[u8; 4]> {
    let mut out = Vec::new();
    for (_, a) in rs.extra.iter().filter(|(t, _)| t == "nat") {
        let get = |k: &str| a.iter().position(|w| w == k).and_then(|i| a.get(i + 1));
        match get("-j").map(String::as_str) {
            Some("SNAT") => {
                if let Some(ip) = get("--to-source")
                    .and_then(|t| t.split([':', '-']).next())
                    .and_then(|t| t.parse::<std::net::Ipv4Addr>().ok())
                {
                    out.push(ip.octets());
                }
            }
            Some("MASQUERADE") => {
                for i in netns::IFACES
                    .iter()
                    .filter(|i| get("-o").is_none_or(|o| o == i.name))
                {
                    out.push([198, 18, 0, i.host]);
                }
            }
            _ => {}
        }
    }
    out
}

/// Frames leaving with a translated source: when two connections would translate to the same
/// tuple, NAT draws another source port (or ICMP echo ID) at random, so those (and the
/// transport checksum) are zeroed.
fn mask_snat_ports(replies: &mut [Reply], snat: &[[u8; 4]]) {
    for r in replies.iter_mut() {
        let b = &mut r.bytes;
        if b.len() < 20 || !snat.iter().any(|a| b[12..16] == *a) {
            continue;
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let (port, csum) = match b[9] {
            6 => (ihl..ihl + 2, ihl + 16..ihl + 18),
            17 => (ihl..ihl + 2, ihl + 6..ihl + 8),
            1 if matches!(b.get(ihl), Some(0 | 8 | 13 | 14)) => {
                (ihl + 4..ihl + 6, ihl + 2..ihl + 4)
            }
            _ => continue,
        };
        for k in port.chain(csum) {
            if let Some(x) = b.get_mut(k) {
                *x = 0;
            }
        }
    }
}

/// Late frames belong to the last packet replayed before them.
fn attach_late(fates: &mut [Fate], late: Vec<Reply>) {
    if late.is_empty() {
        return;
    }
    if let Some(f) = fates.last_mut() {
        f.replies.extend(late);
        f.replies.sort();
    }
}

/// Every address a case's packets carry (a LOG line is the case's when its outer SRC or DST
/// is one of them: the firewall's own replies go to a packet's source).
fn case_addresses(pkts: &[Packet]) -> std::collections::HashSet<std::net::Ipv4Addr> {
    let mut s = std::collections::HashSet::new();
    for p in pkts.iter().filter(|p| p.bytes.len() >= 20) {
        let b = &p.bytes;
        s.insert(std::net::Ipv4Addr::new(b[12], b[13], b[14], b[15]));
        s.insert(std::net::Ipv4Addr::new(b[16], b[17], b[18], b[19]));
    }
    s
}

/// A kernel log record as a LOG line of the case (None for anything else). The outer IP ID
/// is masked unless it is the packet's tag: other IDs are drawn by the kernel.
fn log_line(
    r: &kmsg::Record,
    addrs: &std::collections::HashSet<std::net::Ipv4Addr>,
    tag: u16,
    step: &Packet,
) -> Option<LogLine> {
    if !kmsg::is_packet_log(&r.text) {
        return None;
    }
    let ours = ["SRC", "DST"].iter().any(|k| {
        kmsg::field(&r.text, k)
            .and_then(|a| a.parse().ok())
            .is_some_and(|a| addrs.contains(&a))
    });
    if !ours {
        return None;
    }
    let mut text = kmsg::mask_opt_timestamps(&r.text);
    if step.socket {
        // A socket draws its IP IDs, and a TCP socket its initial sequence number and its
        // timestamp offset.
        text = kmsg::mask_ip_ids(&text);
        if step.bytes.get(9) == Some(&6) {
            text = kmsg::mask_tcp_draws(&text);
        }
    }
    let text = if kmsg::field(&text, "ID") == Some(tag.to_string().as_str()) {
        text
    } else {
        kmsg::mask_outer_id(&text)
    };
    Some(LogLine {
        level: r.level,
        text,
    })
}

/// How a stateful case's topologies are built: the addresses the firewall owns (destinations
/// of input packets, sources of output packets, never an address a neighbour sends from,
/// which would be a martian source), where the firewall's own packets to each remote address
/// leave (the interface that address was first seen on), the ruleset's sysctls.
pub fn topo_config(rs: &Ruleset, pkts: &[Packet]) -> TopoConfig {
    use std::collections::{BTreeSet, HashMap};
    let special = |a: u32| {
        let o = a.to_be_bytes();
        o[0] == 0 || o[0] == 127 || o[0] >= 224 || (o[0] == 198 && o[1] == 18 && o[2] == 0)
    };
    let addr = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut remote: BTreeSet<u32> = BTreeSet::new();
    for p in pkts
        .iter()
        .filter(|p| p.bytes.len() >= 20 && p.path != Path::Output)
    {
        remote.insert(addr(&p.bytes, 12));
    }
    let mut local: BTreeSet<u32> = BTreeSet::new();
    for p in pkts.iter().filter(|p| p.bytes.len() >= 20) {
        let a = match p.path {
            Path::Input => addr(&p.bytes, 16),
            Path::Output => addr(&p.bytes, 12),
            Path::Forward => continue,
        };
        if !special(a) && !remote.contains(&a) {
            local.insert(a);
        }
    }
    let mut routes: HashMap<u32, &'static str> = HashMap::new();
    let mut order = Vec::new();
    for p in pkts.iter().filter(|p| p.bytes.len() >= 20) {
        let (a, dev) = match p.path {
            Path::Input | Path::Forward => (addr(&p.bytes, 12), p.iface.as_str()),
            Path::Output => (addr(&p.bytes, 16), p.iface.as_str()),
        };
        let Some(dev) = netns::IFACES.iter().find(|i| i.name == dev).map(|i| i.name) else {
            continue;
        };
        if special(a) || local.contains(&a) || routes.contains_key(&a) {
            continue;
        }
        routes.insert(a, dev);
        order.push((a, dev));
    }
    TopoConfig {
        stateful: true,
        local: local.into_iter().collect(),
        reply_routes: order,
        sysctls: rs.sysctls.clone(),
    }
}

/// Line diff (longest common subsequence): lines only in `a` as `-`, only in `b` as `+`.
pub fn line_diff(a: &str, b: &str) -> Vec<String> {
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    let (n, m) = (la.len(), lb.len());
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if la[i] == lb[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && la[i] == lb[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || l[i][j + 1] >= l[i + 1][j]) {
            out.push(format!("+ {}", lb[j]));
            j += 1;
        } else {
            out.push(format!("- {}", la[i]));
            i += 1;
        }
    }
    out
}

/// Describes how two outcomes differ (None when identical). When iptables-restore already
/// disagrees, the rest is not compared: the refusing side still runs its previous ruleset.
pub fn diff(a: &Outcome, b: &Outcome, pkts: &[Packet], cand: &str) -> Option<String> {
    let mut s = String::new();
    if a.restore.code != b.restore.code {
        let _ = writeln!(
            s,
            "iptables-restore exit: kernel {} ({}), {cand} {} ({})",
            a.restore.code,
            a.restore.stderr.trim(),
            b.restore.code,
            b.restore.stderr.trim()
        );
        return Some(s);
    }
    for (k, (x, y)) in a.edits.iter().zip(&b.edits).enumerate() {
        if x.code != y.code {
            let _ = writeln!(
                s,
                "edit {} exit: kernel {} ({}), {cand} {} ({})",
                k + 1,
                x.code,
                x.stderr.trim(),
                y.code,
                y.stderr.trim()
            );
        }
    }
    if a.save != b.save {
        let _ = writeln!(s, "iptables-save -c differs (- kernel, + {cand}):");
        for l in line_diff(&a.save, &b.save) {
            let _ = writeln!(s, "  {l}");
        }
    }
    let mut shown = 0;
    for (i, (x, y)) in a.fates.iter().zip(&b.fates).enumerate() {
        if x != y {
            if shown < 8 {
                let _ = writeln!(
                    s,
                    "packet {} ({} {}{}{} {}): kernel out={:?} errno={}{}, {cand} out={:?} errno={}{}",
                    i + 1,
                    pkts[i].path.as_str(),
                    pkts[i].iface,
                    if pkts[i].bcast { " bcast" } else { "" },
                    if pkts[i].socket { " socket" } else { "" },
                    packet::describe(&pkts[i].bytes),
                    x.seen_on,
                    x.send_errno,
                    sock_errno(x),
                    y.seen_on,
                    y.send_errno,
                    sock_errno(y)
                );
                describe_replies(&mut s, &x.replies, &y.replies, cand);
                if x.logs != y.logs {
                    let fmt = |l: &[LogLine]| -> String {
                        l.iter()
                            .map(|l| format!("<{}>{}\n", l.level, l.text))
                            .collect()
                    };
                    let _ = writeln!(s, "  LOG lines differ (- kernel, + {cand}):");
                    for l in line_diff(&fmt(&x.logs), &fmt(&y.logs)) {
                        let _ = writeln!(s, "    {l}");
                    }
                }
            }
            shown += 1;
        }
    }
    if shown > 8 {
        let _ = writeln!(s, "... {shown} packets differ in all");
    }
    let logs_differ = a.fates.iter().zip(&b.fates).any(|(x, y)| x.logs != y.logs);
    if logs_differ && a.log_lost > 0 {
        let _ = writeln!(
            s,
            "({} kernel log records were overwritten before the harness read them: another \
             process logs heavily, so LOG lines may be missing on either side)",
            a.log_lost
        );
    }
    (!s.is_empty()).then_some(s)
}

/// `, socket error N` for a socket probe's SO_ERROR.
fn sock_errno(f: &Fate) -> String {
    f.sock_errno
        .map(|e| format!(", socket error {e}"))
        .unwrap_or_default()
}

/// The replies (frames the firewall sent by itself) only one side sent; for a reply sent on
/// both sides with different bytes, where they differ.
fn describe_replies(s: &mut String, x: &[Reply], y: &[Reply], cand: &str) {
    let only = |a: &[Reply], b: &[Reply]| -> Vec<Reply> {
        let mut rest = b.to_vec();
        let mut out = Vec::new();
        for r in a {
            match rest.iter().position(|q| q == r) {
                Some(k) => {
                    rest.remove(k);
                }
                None => out.push(r.clone()),
            }
        }
        out
    };
    let (ox, oy) = (only(x, y), only(y, x));
    for k in 0..ox.len().max(oy.len()) {
        match (ox.get(k), oy.get(k)) {
            // The same kind of reply on the same interface: show where the bytes differ.
            (Some(r), Some(q)) if q.iface == r.iface => {
                let at = r
                    .bytes
                    .iter()
                    .zip(&q.bytes)
                    .position(|(u, v)| u != v)
                    .unwrap_or(r.bytes.len().min(q.bytes.len()));
                let _ = writeln!(
                    s,
                    "  reply on {} differs from byte {at} (IP ID and checksum zeroed):\n    kernel {}: {}\n    {cand} {}: {}",
                    r.iface,
                    packet::describe(&r.bytes),
                    packet::to_hex(&r.bytes),
                    packet::describe(&q.bytes),
                    packet::to_hex(&q.bytes)
                );
            }
            (r, q) => {
                for (who, rep) in [("kernel", r), (cand, q)] {
                    if let Some(rep) = rep {
                        let _ = writeln!(
                            s,
                            "  reply only from {who} on {}: {} {}",
                            rep.iface,
                            packet::describe(&rep.bytes),
                            packet::to_hex(&rep.bytes)
                        );
                    }
                }
            }
        }
    }
}

fn fails(h: &mut Harness, rs: &Ruleset, pkts: &[Packet]) -> Result<bool> {
    Ok(h.check(rs, pkts)?.is_some())
}

/// Makes `edit` to a copy of `rs` and keeps it when the copy still mismatches; whether it did.
fn keep_if_fails(
    h: &mut Harness,
    rs: &mut Ruleset,
    pkts: &[Packet],
    edit: impl FnOnce(&mut Ruleset),
) -> Result<bool> {
    let mut t = rs.clone();
    edit(&mut t);
    let kept = fails(h, &t, pkts)?;
    if kept {
        *rs = t;
    }
    Ok(kept)
}

/// Delta debugging over the packet list: drop ever smaller chunks while the mismatch stays.
fn shrink_packets(
    h: &mut Harness,
    rs: &Ruleset,
    pkts: &mut Vec<Packet>,
    start: Instant,
    budget: Duration,
) -> Result<()> {
    let mut chunk = pkts.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < pkts.len() && start.elapsed() < budget {
            let mut trial = pkts.clone();
            let end = (i + chunk).min(trial.len());
            trial.drain(i..end);
            if fails(h, rs, &trial)? {
                *pkts = trial;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 || start.elapsed() >= budget {
            return Ok(());
        }
        chunk = chunk.div_ceil(2);
    }
}

/// Shrinks a mismatching case: packets (delta debugging), then rules and chains, then
/// policies, then packets again. Returns the smallest still-mismatching case.
pub fn minimize(
    h: &mut Harness,
    rs: &Ruleset,
    pkts: &[Packet],
    budget: Duration,
) -> Result<(Ruleset, Vec<Packet>)> {
    let start = Instant::now();
    let mut rs = rs.clone();
    let mut pkts = pkts.to_vec();
    // Edits first: cheap, and often irrelevant (a refused restore hides them).
    if !rs.edits.is_empty() {
        keep_if_fails(h, &mut rs, &pkts, |t| t.edits.clear())?;
    }
    shrink_packets(h, &rs, &mut pkts, start, budget)?;
    // Whole user chains first, then rules by delta debugging (chunks, then single rules).
    for c in rs.chains.clone() {
        if start.elapsed() < budget {
            keep_if_fails(h, &mut rs, &pkts, |t| t.remove_chain(&c))?;
        }
    }
    let mut chunk = rs.rules.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < rs.rules.len() && start.elapsed() < budget {
            let dropped = keep_if_fails(h, &mut rs, &pkts, |t| {
                let end = (i + chunk).min(t.rules.len());
                t.rules.drain(i..end);
            })?;
            if !dropped {
                i += chunk;
            }
        }
        if chunk == 1 || start.elapsed() >= budget {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    for c in rs.chains.clone() {
        if !rs
            .rules
            .iter()
            .any(|r| r.chain == c || r.chain_target() == Some(c.as_str()))
        {
            keep_if_fails(h, &mut rs, &pkts, |t| t.remove_chain(&c))?;
        }
    }
    for k in 0..3 {
        if rs.policies[k] != "ACCEPT" && start.elapsed() < budget {
            keep_if_fails(h, &mut rs, &pkts, |t| t.policies[k] = "ACCEPT".into())?;
        }
    }
    let mut k = rs.edits.len();
    while k > 0 && start.elapsed() < budget {
        k -= 1;
        keep_if_fails(h, &mut rs, &pkts, |t| {
            t.edits.remove(k);
        })?;
    }
    let mut k = rs.extra.len();
    while k > 0 && start.elapsed() < budget {
        k -= 1;
        keep_if_fails(h, &mut rs, &pkts, |t| {
            t.extra.remove(k);
        })?;
    }
    if rs.initial_counters && start.elapsed() < budget {
        keep_if_fails(h, &mut rs, &pkts, |t| t.initial_counters = false)?;
    }
    // Single options of the remaining rules: drop a "! -x value", "-x value" or "-m name".
    let mut r = 0;
    while r < rs.rules.len() && start.elapsed() < budget {
        let mut changed = false;
        let n = rs.rules[r].args.len();
        for j in (0..n).rev() {
            let args = &rs.rules[r].args;
            if j >= args.len()
                || !args[j].starts_with('-')
                || matches!(args[j].as_str(), "-j" | "-g")
            {
                continue;
            }
            let mut end = j + 1;
            while end < args.len() && !args[end].starts_with('-') && args[end] != "!" {
                end += 1;
            }
            let begin = if j > 0 && args[j - 1] == "!" {
                j - 1
            } else {
                j
            };
            let mut t = rs.clone();
            t.rules[r].args.drain(begin..end);
            if h.check(&t, &pkts).map(|d| d.is_some()).unwrap_or(false) {
                rs = t;
                changed = true;
                break;
            }
        }
        if !changed {
            r += 1;
        }
    }
    shrink_packets(h, &rs, &mut pkts, start, budget)?;
    Ok((rs, pkts))
}

/// Runs a whole corpus and returns the report rows.
pub fn run(cfg: &Config) -> Result<Summary> {
    run_with(cfg, &corpus(cfg)?)
}

/// Runs the given cases (instead of the corpus) and returns the report rows.
pub fn run_with(cfg: &Config, cases: &[Case]) -> Result<Summary> {
    let t0 = Instant::now();
    let mut h = Harness::new(cfg.candidate)?;
    let mut summary = Summary {
        candidate: h.candidate_name().to_string(),
        ..Summary::default()
    };
    let res = run_cases(cfg, &mut h, cases, &mut summary);
    h.shutdown();
    res?;
    summary.elapsed = t0.elapsed();
    Ok(summary)
}

fn run_cases(cfg: &Config, h: &mut Harness, cases: &[Case], summary: &mut Summary) -> Result<()> {
    let mut mismatches = 0;
    for case in cases {
        let rs = &case.ruleset;
        let log_from = match &h.candidate.backend {
            Backend::Bpfilter(d) => d.log_len(),
            _ => 0,
        };
        let (a, b) = h
            .run_case(rs, &case.packets)
            .with_context(|| format!("case {}", rs.name))?;
        // `reject-*` rulesets are ones the kernel refuses (loops): both sides must refuse them.
        let expect_reject = rs.name.starts_with("reject-");
        if expect_reject && a.restore.code == 0 {
            bail!(
                "kernel iptables-restore accepted {}, which should be rejected",
                rs.name
            );
        }
        if a.restore.code != 0 && case.kind != "regression" && !expect_reject {
            bail!(
                "kernel iptables-restore rejected {}: {}\n{}",
                rs.name,
                a.restore.stderr.trim(),
                rs.to_text()
            );
        }
        if std::env::var_os("CONFORMANCE_DEBUG").is_some() {
            let out = a.fates.iter().filter(|f| !f.seen_on.is_empty()).count();
            let eperm = a.fates.iter().filter(|f| f.send_errno != 0).count();
            let replies: usize = a.fates.iter().map(|f| f.replies.len()).sum();
            let logs: usize = a.fates.iter().map(|f| f.logs.len()).sum();
            let sock: Vec<i32> = a.fates.iter().filter_map(|f| f.sock_errno).collect();
            eprintln!(
                "{}\n{}came out: {out}, send errors: {eperm}, replies: {replies}, LOG lines: {logs}, \
                 socket probes: {} (errors {:?})",
                rs.to_text(),
                a.save,
                sock.len(),
                sock.iter().filter(|e| **e != 0).collect::<Vec<_>>()
            );
            for (k, e) in a.edits.iter().enumerate() {
                if e.code != 0 {
                    eprintln!(
                        "edit {} {:?}: exit {} {}",
                        k + 1,
                        rs.edits.get(k).map(|x| &x.1),
                        e.code,
                        e.stderr.trim()
                    );
                }
            }
        }
        let mut detail = diff(&a, &b, &case.packets, h.candidate_name());
        if let (Some(d), Backend::Bpfilter(daemon)) = (detail.as_mut(), &h.candidate.backend) {
            let w = daemon.log_warnings_since(log_from);
            if !w.is_empty() {
                d.push_str("bpfilter daemon log:\n");
                for l in &w[w.len().saturating_sub(5)..] {
                    d.push_str(&format!("  {l}\n"));
                }
            }
        }
        let mut row = CaseReport {
            name: rs.name.clone(),
            kind: case.kind,
            rules: rs.rules.len(),
            packets: case.packets.len(),
            rules_hit: if rs.initial_counters {
                0
            } else {
                a.save
                    .lines()
                    .filter(|l| l.starts_with('[') && !l.starts_with("[0:0]"))
                    .count()
            },
            identical: detail.is_none(),
            detail: detail.clone(),
            repro: None,
            reproduced: true,
        };
        // A mismatch is run once more: one that does not come back is reported as flaky (a
        // race in the candidate, or noise), still as a failure, and is not minimized.
        if detail.is_some() {
            row.reproduced = h.check(rs, &case.packets)?.is_some();
        }
        if cfg.verbose {
            eprintln!(
                "{:<40} {:>4} rules {:>5} packets  {}",
                format!("{} ({})", rs.name, case.kind),
                row.rules,
                row.packets,
                if row.identical {
                    "identical"
                } else {
                    "MISMATCH"
                }
            );
        }
        if let Some(d) = &detail {
            mismatches += 1;
            eprintln!(
                "---- mismatch in {}{}:\n{d}",
                rs.name,
                if row.reproduced {
                    ""
                } else {
                    " (FLAKY: identical when run again)"
                }
            );
            // Minimizing takes time: only the first few mismatches; the rest are still run and
            // reported.
            if cfg.minimize && row.reproduced && mismatches <= cfg.max_mismatches {
                match minimize(h, rs, &case.packets, cfg.minimize_budget) {
                    Ok((mrs, mp)) => {
                        let why = h
                            .check(&mrs, &mp)?
                            .unwrap_or_else(|| "(no longer reproduces)".into());
                        let mut m = mrs.clone();
                        m.name = format!("{}-min", rs.name);
                        let rules_text = m.to_text();
                        let pk = packet::format_packets(&mp);
                        eprintln!(
                            "---- minimal reproduction of {} ({} rules, {} packets):\n{why}\n# {}.rules\n{rules_text}# {}.packets\n{pk}",
                            rs.name,
                            m.rules.len(),
                            mp.len(),
                            m.name,
                            m.name
                        );
                        row.repro = Some((rules_text, pk));
                    }
                    Err(e) => eprintln!("minimizer failed: {e:#}"),
                }
            }
        }
        summary.cases.push(row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_marks_changed_lines_only() {
        let d = line_diff("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(d, vec!["+ B", "- b", "+ d"]);
        assert!(line_diff("x\n", "x\n").is_empty());
    }

    #[test]
    fn quiet_mutation_silences_reject_and_log_and_undoes() {
        let t = "-A INPUT -p tcp -j REJECT --reject-with tcp-reset\n\
                 -A INPUT -j LOGDROP\n\
                 -A INPUT -j LOG --log-prefix \"x \"\n\
                 -A INPUT -j REJECT\n";
        let (m, undo) = mutate_quiet(t);
        assert_eq!(
            m,
            "-A INPUT -p tcp -m comment --comment MUTANT-REJECT -j DROP\n\
             -A INPUT -j LOGDROP\n\
             -A INPUT -m comment --comment MUTANT-LOG\n\
             -A INPUT -j REJECT\n"
        );
        let mut back = m.clone();
        for (mutated, original) in &undo {
            back = back.replace(mutated, original);
        }
        assert_eq!(back, t);
    }

    #[test]
    fn mutation_changes_one_verdict() {
        let m = mutate("-A INPUT -p tcp -j ACCEPT\n-A INPUT -j ACCEPT\n");
        assert_eq!(
            m,
            "-A INPUT -p tcp -m comment --comment MUTANT -j DROP\n-A INPUT -j ACCEPT\n"
        );
        assert_eq!(
            unmutate_save(&m),
            "-A INPUT -p tcp -j ACCEPT\n-A INPUT -j ACCEPT\n"
        );
    }
}
