//! Differential conformance harness: the same rulesets and the same packets through two
//! identical namespace topologies, one filtered by the kernel's iptables-legacy, the other by
//! bpfilter (or by the kernel again, to validate the harness itself). For every ruleset it
//! compares `iptables-save -c` of both sides exactly (every rule's and policy's counters), the
//! exit status of iptables-restore, which packets came out of the firewall and on which
//! interface, and the errno of every packet the firewall originated. A mismatch is shrunk to a
//! minimal ruleset and packet list, printed as a regression fixture.
//!
//! The harness is test tooling run as root; it uses anyhow throughout, like a binary.

pub mod backend;
pub mod gen;
pub mod netns;
pub mod packet;
pub mod rng;
pub mod ruleset;

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, Instant};

use backend::{Backend, Daemon, RestoreOutcome};
use netns::{Fate, Topology};
use packet::{Packet, Path};
use rng::Rng;
use ruleset::Ruleset;

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
}

/// The mutation `Candidate::KernelMutant` applies to every ruleset it loads. The comment lets
/// its iptables-save undo the change, so that only counters and packet fates can reveal it.
pub fn mutate(text: &str) -> String {
    text.replacen("-j ACCEPT", "-m comment --comment MUTANT -j DROP", 1)
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
            ..Config::full()
        }
    }
}

/// A ruleset and its packets.
#[derive(Debug, Clone)]
pub struct Case {
    /// The ruleset.
    pub ruleset: Ruleset,
    /// The packets, replayed in order within each path.
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
        let rs = Ruleset::parse(&name, &text)?;
        // A per-ruleset generator, so that adding a ruleset does not change the others' packets.
        let mut prng = Rng::new(
            cfg.seed
                ^ name
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b))),
        );
        let packets = gen::packets_for(&rs, cfg.hand_packets, &mut prng);
        // After the packets, `iptables -C` on up to 30 of the rules: iptables compares the
        // entries it reads back byte for byte with the ones it builds from the rule text.
        let mut rs = rs;
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
        let rs = Ruleset::parse(&name, &std::fs::read_to_string(&f)?)?;
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
        if cfg.restarts && r.chance(30) {
            let at = r.below(cfg.random_packets as u64 + 1) as usize;
            rs.edits.push((at, vec![backend::RESTART.to_string()]));
            rs.name.push_str("-r");
        }
        let packets = gen::packets_for(&rs, cfg.random_packets, &mut r);
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
}

/// Checks what the harness needs (root, namespaces, iptables-legacy) and says what is missing.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the conformance harness needs root (network namespaces, raw sockets, BPF)");
    }
    netns::sh(&["iptables-legacy-restore", "--version"])
        .context("iptables-legacy-restore is not installed")?;
    let probe = format!("cfprobe{}", std::process::id());
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
        })
    }

    /// Name of the candidate backend.
    pub fn candidate_name(&self) -> &'static str {
        self.candidate.backend.name()
    }

    /// Loads the ruleset on both sides, replays the packets path by path, reads the counters.
    pub fn run_case(&mut self, rs: &Ruleset, pkts: &[Packet]) -> Result<(Outcome, Outcome)> {
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
        if let Backend::Bpfilter(d) = &mut self.candidate.backend {
            // Identical results mean nothing if the rules silently went to the kernel's own
            // table: it must hold no rule in bpfilter's namespace.
            let names = self.candidate.topo.in_fw(|| {
                std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default()
            })?;
            if names.lines().any(|l| l == "filter") {
                let k = Backend::Kernel.save(&self.candidate.topo.fw)?;
                if k.lines().any(|l| l.starts_with('[') || l.starts_with("-A")) {
                    bail!(
                        "rules reached the kernel's own filter table in bpfilter's namespace:\n{k}"
                    );
                }
            }
            if !d.alive() {
                bail!(
                    "the bpfilter daemon died; last log lines:\n{}",
                    d.log_tail()
                );
            }
        }
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
            },
            Outcome {
                restore: rb,
                save: sb,
                edits: eb,
                fates: order(&fb),
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
        let Harness {
            reference,
            candidate,
            tag: _,
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
                    "packet {} ({} {} {}): kernel out={:?} errno={}, {cand} out={:?} errno={}",
                    i + 1,
                    pkts[i].path.as_str(),
                    pkts[i].iface,
                    packet::describe(&pkts[i].bytes),
                    x.seen_on,
                    x.send_errno,
                    y.seen_on,
                    y.send_errno
                );
            }
            shown += 1;
        }
    }
    if shown > 8 {
        let _ = writeln!(s, "... {shown} packets differ in all");
    }
    (!s.is_empty()).then_some(s)
}

fn fails(h: &mut Harness, rs: &Ruleset, pkts: &[Packet]) -> Result<bool> {
    Ok(h.check(rs, pkts)?.is_some())
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
        let mut t = rs.clone();
        t.edits.clear();
        if fails(h, &t, &pkts)? {
            rs = t;
        }
    }
    shrink_packets(h, &rs, &mut pkts, start, budget)?;
    // Whole user chains first, then rules by delta debugging (chunks, then single rules).
    for c in rs.chains.clone() {
        let mut t = rs.clone();
        t.remove_chain(&c);
        if start.elapsed() < budget && fails(h, &t, &pkts)? {
            rs = t;
        }
    }
    let mut chunk = rs.rules.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < rs.rules.len() && start.elapsed() < budget {
            let mut t = rs.clone();
            let end = (i + chunk).min(t.rules.len());
            t.rules.drain(i..end);
            if fails(h, &t, &pkts)? {
                rs = t;
            } else {
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
            let mut t = rs.clone();
            t.remove_chain(&c);
            if fails(h, &t, &pkts)? {
                rs = t;
            }
        }
    }
    for k in 0..3 {
        if rs.policies[k] != "ACCEPT" && start.elapsed() < budget {
            let mut t = rs.clone();
            t.policies[k] = "ACCEPT".into();
            if fails(h, &t, &pkts)? {
                rs = t;
            }
        }
    }
    let mut k = rs.edits.len();
    while k > 0 && start.elapsed() < budget {
        k -= 1;
        let mut t = rs.clone();
        t.edits.remove(k);
        if fails(h, &t, &pkts)? {
            rs = t;
        }
    }
    if rs.initial_counters && start.elapsed() < budget {
        let mut t = rs.clone();
        t.initial_counters = false;
        if fails(h, &t, &pkts)? {
            rs = t;
        }
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
    let t0 = Instant::now();
    let cases = corpus(cfg)?;
    let mut h = Harness::new(cfg.candidate)?;
    let mut summary = Summary {
        candidate: h.candidate_name().to_string(),
        ..Summary::default()
    };
    let res = run_cases(cfg, &mut h, &cases, &mut summary);
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
            eprintln!(
                "{}\n{}came out: {out}, send errors: {eperm}",
                rs.to_text(),
                a.save
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
