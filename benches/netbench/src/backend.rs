//! The firewalls under test and how each one is loaded, changed and read back.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::netns::{in_ns_cmd, run_ok};
use crate::ruleset::{self, Family, Rule};

/// Longest a ruleset load may take before the configuration is given up.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(180);

/// How bpfilter's programs read packet headers: `bpfilter daemon --packet-access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// `bpf_rdonly_cast` of `skb->data` (the daemon's choice where the kernel verifies it).
    Cast,
    /// `bpf_dynptr_from_skb` + `bpf_dynptr_slice`: the portable baseline.
    Dynptr,
    /// The daemon's own choice (`--packet-access auto`).
    Auto,
}

impl Access {
    /// The strategies a default run measures, one bpfilter configuration each.
    pub const DEFAULT: [Access; 2] = [Access::Cast, Access::Dynptr];

    /// The `--packet-access` value.
    pub fn name(self) -> &'static str {
        match self {
            Access::Cast => "cast",
            Access::Dynptr => "dynptr",
            Access::Auto => "auto",
        }
    }

    /// Parse a `--packet-access` value.
    pub fn from_name(s: &str) -> Option<Access> {
        match s {
            "cast" => Some(Access::Cast),
            "dynptr" => Some(Access::Dynptr),
            "auto" => Some(Access::Auto),
            _ => None,
        }
    }

    /// How the strategy reads headers, for the notes of the results.
    pub fn describe(self) -> &'static str {
        match self {
            Access::Cast => {
                "`bpf_rdonly_cast` of `skb->data` (dynptr fallback for non-linear headers)"
            }
            Access::Dynptr => "`bpf_dynptr_from_skb` + `bpf_dynptr_slice` (the portable baseline)",
            Access::Auto => "the daemon's choice (the fastest strategy the kernel verifies)",
        }
    }
}

/// A firewall implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// No firewall at all: the reference every sample is compared with.
    None,
    /// The kernel's ip_tables, loaded with iptables-legacy-restore.
    Legacy,
    /// nftables, one linear base chain, loaded with `nft -f`.
    Nft,
    /// bpfilter, loaded with `bpfilter iptables-restore` (iptables-legacy-restore preloaded),
    /// its own daemon started with `--packet-access` this strategy.
    Bpfilter(Access),
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
            Backend::Bpfilter(Access::Auto) => "bpfilter",
            Backend::Bpfilter(Access::Cast) => "bpfilter-cast",
            Backend::Bpfilter(Access::Dynptr) => "bpfilter-dynptr",
            Backend::BpfFloor => "bpf-floor",
        }
    }

    /// Short tag for namespace names.
    pub fn tag(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::Legacy => "ipt",
            Backend::Nft => "nft",
            Backend::Bpfilter(Access::Auto) => "bpf",
            Backend::Bpfilter(Access::Cast) => "bpfc",
            Backend::Bpfilter(Access::Dynptr) => "bpfd",
            Backend::BpfFloor => "floor",
        }
    }

    /// Parse a command-line name (long or short). Plain `bpfilter` is the daemon's own
    /// strategy choice; see [`parse_backends`] for how a run expands it.
    pub fn from_name(s: &str) -> Option<Backend> {
        match s {
            "none" => Some(Backend::None),
            "iptables-legacy" | "legacy" | "ipt" | "iptables" => Some(Backend::Legacy),
            "nftables" | "nft" => Some(Backend::Nft),
            "bpfilter" | "bpf" | "bpfilter-auto" => Some(Backend::Bpfilter(Access::Auto)),
            "bpfilter-cast" | "bpf-cast" | "bpfc" => Some(Backend::Bpfilter(Access::Cast)),
            "bpfilter-dynptr" | "bpf-dynptr" | "bpfd" => Some(Backend::Bpfilter(Access::Dynptr)),
            "bpf-floor" | "floor" => Some(Backend::BpfFloor),
            _ => None,
        }
    }

    /// The packet-access strategy of a bpfilter configuration.
    pub fn access(self) -> Option<Access> {
        match self {
            Backend::Bpfilter(a) => Some(a),
            _ => None,
        }
    }

    /// Whether this is one of the bpfilter configurations.
    pub fn is_bpfilter(self) -> bool {
        self.access().is_some()
    }
}

/// The backends a run compares with no firewall, from `--backends` and `--bpfilter-access`:
/// plain `bpfilter` becomes one bpfilter backend per listed strategy (`auto` keeps the
/// daemon's own choice, named plain `bpfilter`); `bpfilter-cast` and `bpfilter-dynptr` name
/// one strategy directly. Order kept, duplicates and `none`/`bpf-floor` dropped.
pub fn parse_backends(names: &[String], access: &[String]) -> Result<Vec<Backend>> {
    let mut strategies = Vec::new();
    for a in access {
        match Access::from_name(a) {
            Some(a) if !strategies.contains(&a) => strategies.push(a),
            Some(_) => {}
            None => bail!("unknown packet access {a:?} (cast, dynptr or auto)"),
        }
    }
    if strategies.is_empty() {
        bail!("--bpfilter-access lists no strategy");
    }
    let mut out = Vec::new();
    for name in names {
        let expanded = match Backend::from_name(name) {
            _ if name == "bpfilter" || name == "bpf" => {
                strategies.iter().map(|a| Backend::Bpfilter(*a)).collect()
            }
            Some(Backend::None | Backend::BpfFloor) => continue,
            Some(b) => vec![b],
            None => bail!("unknown backend {name:?}"),
        };
        for b in expanded {
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// Socket, bpffs folder and log of the private daemon of one strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPaths {
    /// Its socket.
    pub socket: PathBuf,
    /// Its bpffs root.
    pub bpffs: PathBuf,
    /// Its log (stdout and stderr), where it says why it refused a ruleset or a strategy;
    /// kept after the run.
    pub log: PathBuf,
}

impl DaemonPaths {
    /// The paths of run `pid`'s daemon for strategy `a`.
    pub fn new(pid: u32, a: Access) -> DaemonPaths {
        DaemonPaths {
            socket: PathBuf::from(format!("/run/netbench/bpfilter-{pid}-{}.sock", a.name())),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/netbench-{pid}-{}", a.name())),
            log: std::env::temp_dir()
                .join(format!("netbench-{pid}-bpfilter-daemon-{}.log", a.name())),
        }
    }
}

/// Where the tools are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `bpfilter` binary.
    pub bpfilter: PathBuf,
    /// The run's process id: names the private daemons' sockets and bpffs folders.
    pub run_id: u32,
    /// Loads and appends still running then are stopped (the run's time budget).
    pub deadline: Option<Instant>,
    /// Private xtables lock file (`XTABLES_LOCKFILE`): the machine-wide /run/xtables.lock is
    /// shared by every iptables in every namespace, and another user holding it would add
    /// waiting time to the figures. The run is sequential, so a private lock loses nothing.
    pub xtables_lock: PathBuf,
    /// Which front ends load and read the rulesets: iptables (nft `ip`) or ip6tables (nft
    /// `ip6`, `bpfilter ip6tables-restore`).
    pub family: Family,
}

impl Tools {
    /// Socket, bpffs root and log of the benchmark's bpfilter daemon for strategy `a`.
    pub fn daemon(&self, a: Access) -> DaemonPaths {
        DaemonPaths::new(self.run_id, a)
    }

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
            Backend::Legacy => in_ns_cmd(
                ns,
                Path::new(&format!("{}-legacy", self.family.iptables())),
                args,
            ),
            Backend::Nft => in_ns_cmd(ns, Path::new("nft"), args),
            Backend::Bpfilter(_) => {
                let mut a = vec![self.family.iptables().to_string()];
                a.extend_from_slice(args);
                in_ns_cmd(ns, &self.bpfilter, &a)
            }
        };
        if let Some(a) = b.access() {
            c.env("BPFILTER_SOCKET", self.daemon(a).socket);
        }
        c.env("XTABLES_LOCKFILE", &self.xtables_lock);
        Ok(c)
    }

    /// Load a ruleset file (iptables-save format, or nft format for nftables) into namespace
    /// `ns`; returns the wall time of the whole command.
    pub fn restore(&self, b: Backend, ns: &str, file: &Path) -> Result<Duration> {
        let f = file.display().to_string();
        let ipt = self.family.iptables();
        let mut c = match b {
            Backend::None | Backend::BpfFloor => return Ok(Duration::ZERO),
            Backend::Legacy => in_ns_cmd(ns, Path::new(&format!("{ipt}-legacy-restore")), &[f]),
            Backend::Nft => in_ns_cmd(ns, Path::new("nft"), &["-f".to_string(), f]),
            Backend::Bpfilter(_) => in_ns_cmd(ns, &self.bpfilter, &[format!("{ipt}-restore"), f]),
        };
        if let Some(a) = b.access() {
            c.env("BPFILTER_SOCKET", self.daemon(a).socket);
        }
        c.env("XTABLES_LOCKFILE", &self.xtables_lock);
        match (run_ok(c, self.timeout()), b.access()) {
            (Ok(t), _) => Ok(t.elapsed),
            (Err(e), Some(a)) => match self.last_refusal(a) {
                Some(why) => Err(e.context(format!("daemon: {why}"))),
                None => Err(e),
            },
            (Err(e), None) => Err(e),
        }
    }

    /// The last log line of strategy `a`'s daemon that says it refused something, colours
    /// removed.
    pub fn last_refusal(&self, a: Access) -> Option<String> {
        let log = std::fs::read_to_string(self.daemon(a).log).ok()?;
        let line = log.lines().rev().find(|l| l.contains("refused"))?;
        let plain = strip_ansi(line);
        let from = plain.find("refused").unwrap_or(0);
        Some(plain[from..].chars().take(300).collect())
    }

    /// Append one rule (after the final ACCEPT, so no verdict changes); returns the wall time.
    pub fn append(&self, b: Backend, ns: &str, r: &Rule) -> Result<Duration> {
        let args: Vec<String> = match b {
            Backend::None | Backend::BpfFloor => return Ok(Duration::ZERO),
            Backend::Nft => ["add", "rule", self.family.nft(), "filter", "input"]
                .iter()
                .map(|s| s.to_string())
                .chain(ruleset::nft_expr(r).split(' ').map(String::from))
                .collect(),
            Backend::Legacy | Backend::Bpfilter(_) => {
                let mut a = vec!["-A".to_string(), "INPUT".to_string()];
                a.extend(ruleset::ipt_args(r));
                a
            }
        };
        let c = self.cmd(b, ns, &args)?;
        Ok(run_ok(c, self.timeout())?.elapsed)
    }

    /// `bpfilter status` of namespace `ns`, asked of strategy `a`'s daemon.
    pub fn bpfilter_status(&self, a: Access, ns: &str) -> Result<String> {
        let mut c = in_ns_cmd(ns, &self.bpfilter, &["status".to_string()]);
        c.env("BPFILTER_SOCKET", self.daemon(a).socket);
        let out = run_ok(c, LOAD_TIMEOUT)?.output;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Packets counted by the final ACCEPT rule (rule number `n + 1` of INPUT).
    pub fn final_counter(&self, b: Backend, ns: &str, n: usize) -> Result<u64> {
        match b {
            Backend::None | Backend::BpfFloor => bail!("no ruleset, no counter"),
            Backend::Nft => {
                let args: Vec<String> = [
                    "list",
                    "counter",
                    self.family.nft(),
                    "filter",
                    ruleset::NFT_COUNTER,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let out = run_ok(self.cmd(b, ns, &args)?, LOAD_TIMEOUT)?.output;
                parse_nft_counter(&String::from_utf8_lossy(&out.stdout))
            }
            Backend::Legacy | Backend::Bpfilter(_) => self.rule_counter(b, ns, n + 1),
        }
    }

    /// Packets counted by rule `k` (1-based) of INPUT, as `iptables -S INPUT k -v` (or
    /// `ip6tables`) prints them (iptables-legacy and bpfilter only).
    pub fn rule_counter(&self, b: Backend, ns: &str, k: usize) -> Result<u64> {
        if !matches!(b, Backend::Legacy | Backend::Bpfilter(_)) {
            bail!("{}: no iptables rule counters", b.name());
        }
        let args: Vec<String> = ["-S", "INPUT", &k.to_string(), "-v"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = run_ok(self.cmd(b, ns, &args)?, LOAD_TIMEOUT)?.output;
        parse_ipt_counter(&String::from_utf8_lossy(&out.stdout))
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

/// What a table's event pump did, from the `events:` line of `bpfilter status` (REJECT and
/// LOG records read, replies sent, lines written, records the programs could not fit in the
/// ring buffer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// REJECT records read.
    pub reject_read: u64,
    /// Replies sent.
    pub replies: u64,
    /// REJECT records the kernel would not have answered (or rate limits dropped).
    pub unanswered: u64,
    /// REJECT records lost (ring buffer full).
    pub reject_lost: u64,
    /// LOG records read.
    pub log_read: u64,
    /// Lines written to the kernel log.
    pub lines: u64,
    /// LOG records lost (ring buffer full).
    pub log_lost: u64,
    /// Records that could not be handled.
    pub errors: u64,
    /// Records left from while no daemon ran, discarded.
    pub stale: u64,
}

impl EventCounts {
    /// Counts of `self` minus those of an earlier reading.
    pub fn since(&self, before: &EventCounts) -> EventCounts {
        EventCounts {
            reject_read: self.reject_read.saturating_sub(before.reject_read),
            replies: self.replies.saturating_sub(before.replies),
            unanswered: self.unanswered.saturating_sub(before.unanswered),
            reject_lost: self.reject_lost.saturating_sub(before.reject_lost),
            log_read: self.log_read.saturating_sub(before.log_read),
            lines: self.lines.saturating_sub(before.lines),
            log_lost: self.log_lost.saturating_sub(before.log_lost),
            errors: self.errors.saturating_sub(before.errors),
            stale: self.stale.saturating_sub(before.stale),
        }
    }
}

/// The `events:` line of `bpfilter status` (`events: REJECT 3 read, 2 replies sent, 1
/// unanswered, 0 lost (ring full); LOG 5 read, 0 lines written, 0 lost (ring full); 0 errors,
/// 0 stale`), read by label: each number is named by the word after it, within the part
/// (REJECT, LOG or the rest) its `;`-separated section belongs to, so that counters added
/// later do not shift the others. None without such a line or without the REJECT and LOG
/// counts.
pub fn parse_events(status: &str) -> Option<EventCounts> {
    let line = status
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("events:"))?;
    let mut e = EventCounts::default();
    let (mut seen_reject, mut seen_log) = (false, false);
    for part in line.split(';') {
        let words: Vec<&str> = part.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let section = if words.contains(&"REJECT") {
            "REJECT"
        } else if words.contains(&"LOG") {
            "LOG"
        } else {
            ""
        };
        for w in words.windows(2) {
            let Ok(n) = w[0].parse::<u64>() else { continue };
            match (section, w[1]) {
                ("REJECT", "read") => {
                    e.reject_read = n;
                    seen_reject = true;
                }
                ("REJECT", "replies") => e.replies = n,
                ("REJECT", "unanswered") => e.unanswered = n,
                ("REJECT", "lost") => e.reject_lost = n,
                ("LOG", "read") => {
                    e.log_read = n;
                    seen_log = true;
                }
                ("LOG", "lines") => e.lines = n,
                ("LOG", "lost") => e.log_lost = n,
                (_, "errors") => e.errors = n,
                (_, "stale") => e.stale = n,
                _ => {}
            }
        }
    }
    (seen_reject && seen_log).then_some(e)
}

/// Packets of `nft list counter ...` output.
pub fn parse_nft_counter(s: &str) -> Result<u64> {
    let mut it = s.split_whitespace().skip_while(|w| *w != "packets");
    it.next();
    it.next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("no packets in {s:?}"))
}

/// The benchmark's own bpfilter daemon for one packet-access strategy (private socket and
/// bpffs folder).
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its strategy (`--packet-access`).
    pub access: Access,
    /// Its socket, bpffs root and log.
    pub paths: DaemonPaths,
    /// The strategy it compiles with, from its log line `kernel probe done strategy=...`.
    pub strategy: Option<String>,
    /// The strategy `auto` picks on this kernel, from its probe report's `strategy:` line.
    pub auto_choice: Option<String>,
}

/// Why a daemon did not start.
#[derive(Debug)]
pub enum StartError {
    /// It exited before accepting: the kernel does not verify the strategy asked for, or
    /// something else it could not do; with its last error line.
    Refused(String),
    /// Anything else (no binary, no answer).
    Other(anyhow::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Refused(line) => write!(f, "daemon refused to start: {line}"),
            StartError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> StartError {
        StartError::Other(e)
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> StartError {
        StartError::Other(e.into())
    }
}

/// The line of a daemon's log that says why it stopped: the last `bpfilter: ...` error line
/// (what `main` prints), else the last line that says `refuse`/`error`, else the last line.
pub fn exit_reason(log: &str) -> Option<String> {
    let lines: Vec<String> = log
        .lines()
        .map(|l| strip_ansi(l).trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let found = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("bpfilter: "))
        .or_else(|| {
            lines.iter().rev().find(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("refuse") || l.contains("error")
            })
        })
        .or(lines.last())?;
    Some(found.chars().take(400).collect())
}

/// The value after `key` in a log line such as `INFO ... kernel probe done strategy=cast`
/// (`key` = `strategy=`) or `INFO bpfilter::daemon: strategy: cast` (`key` = `strategy: `).
pub fn log_value(log: &str, key: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        let l = strip_ansi(l);
        let at = l.find(key)?;
        let v = l[at + key.len()..].split_whitespace().next()?;
        Some(v.trim_matches('"').to_string())
    })
}

impl Daemon {
    /// Start `bin daemon --packet-access A` and wait until its socket accepts connections.
    pub fn start(bin: &Path, access: Access, paths: &DaemonPaths) -> Result<Daemon, StartError> {
        let (socket, log) = (&paths.socket, &paths.log);
        if !bin.exists() {
            return Err(anyhow!("{} not found (build it with `make`)", bin.display()).into());
        }
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
            .arg(&paths.bpffs)
            .arg("--packet-access")
            .arg(access.name())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("spawn {} daemon", bin.display()))?;
        let mut d = Daemon {
            child,
            access,
            paths: paths.clone(),
            strategy: None,
            auto_choice: None,
        };
        let t0 = Instant::now();
        loop {
            // The socket accepts before the probe is done; the log says when it is.
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if UnixStream::connect(socket).is_ok() && text.contains("bpfilter daemon ready") {
                d.strategy = log_value(&text, "probe done strategy=");
                d.auto_choice = log_value(&text, "strategy: ");
                return Ok(d);
            }
            if let Some(st) = d.child.try_wait()? {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(StartError::Refused(exit_reason(&text).unwrap_or_else(
                    || format!("exited ({st}) before accepting; log: {}", log.display()),
                )));
            }
            if t0.elapsed() > Duration::from_secs(20) {
                return Err(anyhow!(
                    "bpfilter daemon not ready after 20 s; log: {}",
                    log.display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Remove everything it attached, stop it, and unpin what is left under its bpffs root.
    pub fn stop(mut self, bin: &Path) {
        let mut c = Command::new(bin);
        c.arg("flush")
            .arg("--all")
            .env("BPFILTER_SOCKET", &self.paths.socket);
        let _ = crate::netns::run_timed(c, Duration::from_secs(60));
        self.kill();
        let _ = std::fs::remove_dir_all(&self.paths.bpffs);
        let _ = std::fs::remove_file(&self.paths.socket);
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
    fn events_parse() {
        let st = "generation 2 applied at 1 (unix time), pins /x\n\
                  conntrack: on for this namespace\n\
                  events: REJECT 3 read, 2 replies sent, 1 unanswered, 7 lost (ring full); \
                  LOG 5 read, 4 lines written, 9 lost (ring full); 6 errors, 8 stale\n\
                  INPUT    prog id 42     insns 123\n";
        let e = parse_events(st).expect("events");
        assert_eq!(
            e,
            EventCounts {
                reject_read: 3,
                replies: 2,
                unanswered: 1,
                reject_lost: 7,
                log_read: 5,
                lines: 4,
                log_lost: 9,
                errors: 6,
                stale: 8
            }
        );
        // The earlier form, without `stale`, still reads.
        let old = "events: REJECT 3 read, 2 replies sent, 1 unanswered, 7 lost (ring full); \
                   LOG 5 read, 4 lines written, 9 lost (ring full); 6 errors\n";
        assert_eq!(parse_events(old).expect("old").stale, 0);
        assert_eq!(parse_events(old).expect("old").log_lost, 9);
        let earlier = EventCounts {
            reject_read: 1,
            log_lost: 10,
            ..EventCounts::default()
        };
        assert_eq!(e.since(&earlier).reject_read, 2);
        assert_eq!(e.since(&earlier).log_lost, 0);
        assert_eq!(parse_events("INPUT prog id 1\n"), None);
        assert_eq!(parse_events("events: REJECT 3 read\n"), None);
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
            Backend::Bpfilter(Access::Auto),
            Backend::Bpfilter(Access::Cast),
            Backend::Bpfilter(Access::Dynptr),
            Backend::BpfFloor,
        ] {
            assert_eq!(Backend::from_name(b.name()), Some(b));
            assert_eq!(Backend::from_name(b.tag()), Some(b));
        }
        for a in [Access::Auto, Access::Cast, Access::Dynptr] {
            assert_eq!(Access::from_name(a.name()), Some(a));
        }
        assert_eq!(Backend::Bpfilter(Access::Cast).name(), "bpfilter-cast");
        assert_eq!(Backend::Bpfilter(Access::Dynptr).name(), "bpfilter-dynptr");
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bpfilter_expands_to_one_backend_per_strategy() {
        use Backend::Bpfilter as B;
        let default = strings(&["iptables-legacy", "nftables", "bpfilter"]);
        let both = strings(&["cast", "dynptr"]);
        assert_eq!(
            parse_backends(&default, &both).expect("default"),
            vec![
                Backend::Legacy,
                Backend::Nft,
                B(Access::Cast),
                B(Access::Dynptr)
            ]
        );
        // One strategy by the knob, or by name; auto keeps the daemon's choice.
        assert_eq!(
            parse_backends(&strings(&["bpf"]), &strings(&["dynptr"])).expect("knob"),
            vec![B(Access::Dynptr)]
        );
        assert_eq!(
            parse_backends(&strings(&["bpfilter-cast", "ipt", "none"]), &both).expect("name"),
            vec![B(Access::Cast), Backend::Legacy]
        );
        assert_eq!(
            parse_backends(&strings(&["bpfilter"]), &strings(&["auto"])).expect("auto"),
            vec![B(Access::Auto)]
        );
        assert_eq!(
            parse_backends(&strings(&["bpfilter-auto", "bpfilter"]), &both).expect("mixed"),
            vec![B(Access::Auto), B(Access::Cast), B(Access::Dynptr)]
        );
        // Duplicates go.
        assert_eq!(
            parse_backends(&strings(&["bpfilter", "bpfilter-dynptr"]), &both).expect("dup"),
            vec![B(Access::Cast), B(Access::Dynptr)]
        );
        assert!(parse_backends(&strings(&["bpfilter"]), &strings(&["mmap"])).is_err());
        assert!(parse_backends(&strings(&["bpfilter"]), &[]).is_err());
        assert!(parse_backends(&strings(&["pf"]), &both).is_err());
    }

    #[test]
    fn daemon_paths_are_private_per_strategy() {
        let (c, d) = (
            DaemonPaths::new(42, Access::Cast),
            DaemonPaths::new(42, Access::Dynptr),
        );
        assert_ne!(c.socket, d.socket);
        assert_ne!(c.bpffs, d.bpffs);
        assert_ne!(c.log, d.log);
        assert_eq!(c.bpffs, PathBuf::from("/sys/fs/bpf/netbench-42-cast"));
        // A later run finds the owner of a stale folder.
        assert_eq!(
            crate::netns::owner_pid("netbench-42-dynptr", "netbench-"),
            Some(42)
        );
    }

    #[test]
    fn daemon_log_lines() {
        let ok = "2026-12-05T22:38:50Z  INFO bpfilter::daemon: strategy: cast\n\
                  2026-12-05T22:38:50Z  INFO bpfilter::daemon: kernel probe done strategy=dynptr\n";
        assert_eq!(
            log_value(ok, "probe done strategy=").as_deref(),
            Some("dynptr")
        );
        assert_eq!(log_value(ok, "strategy: ").as_deref(), Some("cast"));
        let refused = "2026-12-05T22:38:50Z  INFO bpfilter::daemon: kernel 6.1.0\n\
                       bpfilter: this kernel (6.1.0) cannot run bpfilter: packet access cast was \
                       asked for, but the verifier refuses it: R1 invalid mem access\n";
        let why = exit_reason(refused).expect("reason");
        assert!(why.starts_with("bpfilter: this kernel (6.1.0)"), "{why}");
        assert!(why.ends_with("R1 invalid mem access"), "{why}");
        assert_eq!(exit_reason("").as_deref(), None);
    }
}
