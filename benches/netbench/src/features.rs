//! Connection state, LOG and REJECT: a second interleaved run, after the rule-count run, with
//! the same method (BENCH-BASELINE.md), topology and traffic (UDP 10.200.0.1 ->
//! 10.200.0.2:5001 into INPUT), and iptables-legacy in the same samples, so that every bpfilter
//! figure is a ratio to it.
//!
//! - Stateful rulesets: the ufw-like head ([`HEAD`]: RELATED,ESTABLISHED accepted, INVALID
//!   dropped), then N filler rules of one of the main run's kinds and the final ACCEPT. NEW
//!   traffic is a UDP flow no reply was ever seen for (`resolve_normal_ct` gives every packet
//!   of it IP_CT_NEW), so each packet fails both head rules and crosses the N fillers.
//!   ESTABLISHED traffic: just before the measurement the firewall namespace sends one
//!   datagram to the sender's socket, so conntrack knows the flow's other direction
//!   (IP_CT_ESTABLISHED_REPLY) and rule 1 accepts every packet. The same ruleset without the
//!   head (`plain`) gives the head's cost.
//! - `-m state --state NEW -m udp --dport P -j ACCEPT` fillers against the same fillers
//!   without `-m state` (`port`): the state match's cost per rule.
//! - Connection tracking runs, identically, in the firewall namespace of each of those
//!   configurations and of one without a firewall (`ct`): netbench's own nftables table holds
//!   a conntrack reference there (one `ct state` expression in a chain without a hook: what
//!   bpfilter's table `inet bpfilter_conntrack` does, and what xt_conntrack's checkentry does
//!   for iptables-legacy), so tracking costs the same for every backend and the figures differ
//!   only by the match. Every other configuration runs without conntrack, checked after the
//!   run (`nf_conntrack_count` of each namespace).
//! - LOG: a rule that counts the traffic and logs it (LOG does not end the traversal), then the
//!   final ACCEPT, against the same rule without `-j LOG` (`count`). With
//!   `net.netfilter.nf_log_all_netns` at 0 the kernel's `nf_log_syslog` returns before
//!   formatting anything in a non-initial namespace, while bpfilter's program still writes its
//!   record to the ring buffer (and its daemon then drops it). Other programs on this machine
//!   (the LOG tests) set the sysctl to 1 for a while: a thread polls it every 5 ms, and the
//!   LOG configurations are not sent to while it is 1 and for a second after (bpfilter's daemon
//!   trusts a reading for a second), so that the run never fills the kernel log and their
//!   packets are all measured with the sysctl at 0.
//! - REJECT: the traffic hits `-j REJECT` (port unreachable: the kernel's replies are held to
//!   the ICMP rate limits, so per packet it pays the drop and the way to the limiter; bpfilter
//!   pays the drop and the record) against the same rule with `-j DROP`.
//! - Replies per second: [`crate::replies`], on a `--reject-with tcp-reset` rule, one backend
//!   at a time, after the interleaved run.
//!
//! Checks, as in the main run: `Ip InReceives` == packets sent, and every rule's counter that
//! must see all packets (or none) does.

use std::fmt::Write as _;
use std::net::UdpSocket;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::backend::{self, Access, Backend, EventCounts, Tools};
use crate::netns::{self, in_ns_cmd, run_ok, Pair, Pairs, Snmp};
use crate::replies;
use crate::result::{f2, thousands, ConfigResult};
use crate::ruleset::{self, RuleKind, DPORT};
use crate::sender::{self, Plan};
use crate::stats::{median, quantile, slope};

/// The ufw-like head of the stateful rulesets.
pub const HEAD: [&str; 2] = [
    "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-m conntrack --ctstate INVALID -j DROP",
];

/// `--log-prefix` of the LOG rule.
pub const LOG_PREFIX: &str = "netbench: ";

/// netbench's own nftables table that keeps conntrack on in a namespace (family inet).
pub const CT_TABLE: &str = "netbench_conntrack";

/// One configuration's ruleset and traffic in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// No firewall, no conntrack: every sample's reference.
    Bare,
    /// No firewall, conntrack on: what conntrack itself costs.
    Conntrack,
    /// N fillers of the run's kind then the final ACCEPT, conntrack on, NEW traffic.
    Plain,
    /// [`HEAD`], N fillers, the final ACCEPT; NEW traffic.
    HeadNew,
    /// The same ruleset; ESTABLISHED traffic (rule 1 accepts).
    HeadEst,
    /// N port fillers then the final ACCEPT, conntrack on (the state rules without state).
    Port,
    /// N `-p udp -m state --state NEW -m udp --dport P -j ACCEPT` then the final ACCEPT.
    State,
    /// `-p udp -m udp --dport 5001` (no target: counts, goes on) then the final ACCEPT.
    Count,
    /// The same rule with `-j LOG`, then the final ACCEPT.
    Log,
    /// The counting rule with `-m limit --limit 1/hour --limit-burst 1` (its one credit
    /// goes to the first packet: every other one runs the bucket and fails), then the final
    /// ACCEPT.
    Limit,
    /// The counting rule with `-m addrtype --dst-type LOCAL` (every packet matches), then the
    /// final ACCEPT.
    Addrtype,
    /// `-p udp -m udp --dport 5001 -j DROP`.
    Drop,
    /// The same rule with `-j REJECT` (port unreachable).
    Reject,
    /// `-p tcp -m tcp --dport 5002 -j REJECT --reject-with tcp-reset`: the reply-rate
    /// measurement's target, not in the interleaved run.
    TcpReset,
}

impl Shape {
    /// Every shape, in table order.
    pub const ALL: [Shape; 14] = [
        Shape::Bare,
        Shape::Conntrack,
        Shape::Plain,
        Shape::HeadNew,
        Shape::HeadEst,
        Shape::Port,
        Shape::State,
        Shape::Count,
        Shape::Log,
        Shape::Limit,
        Shape::Addrtype,
        Shape::Drop,
        Shape::Reject,
        Shape::TcpReset,
    ];

    /// Short name (namespace names, file names).
    pub fn name(self) -> &'static str {
        match self {
            Shape::Bare => "bare",
            Shape::Conntrack => "ct",
            Shape::Plain => "plain",
            Shape::HeadNew => "new",
            Shape::HeadEst => "est",
            Shape::Port => "port",
            Shape::State => "state",
            Shape::Count => "count",
            Shape::Log => "log",
            Shape::Limit => "limit",
            Shape::Addrtype => "addrtype",
            Shape::Drop => "drop",
            Shape::Reject => "reject",
            Shape::TcpReset => "rst",
        }
    }

    /// What the configuration is, for the tables.
    pub fn describe(self, kind: RuleKind) -> String {
        match self {
            Shape::Bare => "no firewall, no conntrack (reference)".into(),
            Shape::Conntrack => "no firewall, conntrack on".into(),
            Shape::Plain => format!("N {} rules + ACCEPT, conntrack on", kind.name()),
            Shape::HeadNew => format!("head + N {} rules + ACCEPT, NEW traffic", kind.name()),
            Shape::HeadEst => format!(
                "head + N {} rules + ACCEPT, ESTABLISHED traffic",
                kind.name()
            ),
            Shape::Port => "N port rules + ACCEPT, conntrack on".into(),
            Shape::State => "N `-m state --state NEW` port rules + ACCEPT".into(),
            Shape::Count => "`--dport 5001` (no target) + ACCEPT".into(),
            Shape::Log => "`--dport 5001 -j LOG` + ACCEPT".into(),
            Shape::Limit => "`--dport 5001 -m limit --limit 1/hour` (no credit) + ACCEPT".into(),
            Shape::Addrtype => "`--dport 5001 -m addrtype --dst-type LOCAL` + ACCEPT".into(),
            Shape::Drop => "`--dport 5001 -j DROP`".into(),
            Shape::Reject => "`--dport 5001 -j REJECT`".into(),
            Shape::TcpReset => "`-p tcp --dport 5002 -j REJECT --reject-with tcp-reset`".into(),
        }
    }

    /// Whether conntrack runs in the firewall namespace.
    pub fn conntrack(self) -> bool {
        matches!(
            self,
            Shape::Conntrack
                | Shape::Plain
                | Shape::HeadNew
                | Shape::HeadEst
                | Shape::Port
                | Shape::State
        )
    }

    /// Whether the shape is measured at every rule count (the others at N = 0 only).
    pub fn takes_n(self) -> bool {
        matches!(
            self,
            Shape::Plain | Shape::HeadNew | Shape::HeadEst | Shape::Port | Shape::State
        )
    }

    /// Whether it is measured in the interleaved run (the tcp-reset target is not).
    pub fn interleaved(self) -> bool {
        self != Shape::TcpReset
    }

    /// Whether a firewall is loaded (else the configuration is a reference).
    pub fn has_rules(self) -> bool {
        !matches!(self, Shape::Bare | Shape::Conntrack)
    }

    /// The INPUT rules (what follows `-A INPUT `), fillers of `kind` where the shape has them.
    pub fn rules(self, kind: RuleKind, n: usize) -> Vec<String> {
        let args = |r: &ruleset::Rule| ruleset::ipt_args(r).join(" ");
        let last = args(&ruleset::final_rule());
        let ours = format!("-p udp -m udp --dport {DPORT}");
        let fillers = |k: RuleKind| (0..n).map(move |i| args(&ruleset::filler(k, i)));
        let mut v: Vec<String> = Vec::new();
        match self {
            Shape::Bare | Shape::Conntrack => return v,
            Shape::Plain => v.extend(fillers(kind)),
            Shape::HeadNew | Shape::HeadEst => {
                v.extend(HEAD.iter().map(|s| s.to_string()));
                v.extend(fillers(kind));
            }
            Shape::Port => v.extend(fillers(RuleKind::Port)),
            Shape::State => v.extend((0..n).map(|i| {
                format!(
                    "-p udp -m state --state NEW -m udp --dport {} -j ACCEPT",
                    ruleset::filler(RuleKind::Port, i).dport
                )
            })),
            Shape::Count => v.push(ours),
            Shape::Log => v.push(format!("{ours} -j LOG --log-prefix \"{LOG_PREFIX}\"")),
            Shape::Limit => v.push(format!("{ours} -m limit --limit 1/hour --limit-burst 1")),
            Shape::Addrtype => v.push(format!("{ours} -m addrtype --dst-type LOCAL")),
            Shape::Drop => return vec![format!("{ours} -j DROP")],
            Shape::Reject => {
                return vec![format!(
                    "{ours} -j REJECT --reject-with icmp-port-unreachable"
                )]
            }
            Shape::TcpReset => {
                return vec![format!(
                    "-p tcp -m tcp --dport {} -j REJECT --reject-with tcp-reset",
                    replies::RST_DPORT
                )]
            }
        }
        v.push(last);
        v
    }

    /// Rules whose counter must equal the packets sent (true) or stay at 0 (false): (1-based
    /// rule number, every packet).
    pub fn expected(self, n: usize) -> Vec<(usize, bool)> {
        match self {
            Shape::Bare | Shape::Conntrack => vec![],
            Shape::Plain | Shape::Port | Shape::State => vec![(n + 1, true)],
            Shape::HeadNew => vec![(1, false), (2, false), (n + 3, true)],
            Shape::HeadEst => vec![(1, true), (n + 3, false)],
            Shape::Count | Shape::Log | Shape::Addrtype => vec![(1, true), (2, true)],
            Shape::Limit => vec![(2, true)],
            Shape::Drop | Shape::Reject | Shape::TcpReset => vec![(1, true)],
        }
    }
}

/// The rules as an iptables-save file (filter table only).
pub fn save_file(rules: &[String]) -> String {
    let mut s =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for r in rules {
        let _ = writeln!(s, "-A INPUT {r}");
    }
    s.push_str("COMMIT\n");
    s
}

/// The nft file of netbench's conntrack table: a regular chain (no hook, never evaluated)
/// whose `ct state` expression takes the namespace's conntrack reference when it is created
/// (`nft_ct_get_init` -> `nf_ct_netns_get`), for IPv4 and IPv6 (family inet).
pub fn conntrack_nft_file() -> String {
    format!("table inet {CT_TABLE} {{\n\tchain keep {{\n\t\tct state established\n\t}}\n}}\n")
}

/// The configurations of a run: the two references, then per N and backend the stateful
/// shapes, then per backend the N = 0 ones (LOG left out when `log` is false), then the
/// reply-rate targets.
pub fn plan(backends: &[Backend], counts: &[usize], log: bool) -> Vec<(Backend, Shape, usize)> {
    let mut v = vec![
        (Backend::None, Shape::Bare, 0),
        (Backend::None, Shape::Conntrack, 0),
    ];
    let mut counts = counts.to_vec();
    counts.sort_unstable();
    counts.dedup();
    for &n in &counts {
        for &b in backends {
            for s in Shape::ALL.iter().copied().filter(|s| s.takes_n()) {
                v.push((b, s, n));
            }
        }
    }
    // Every other shape but the references (no firewall, conntrack alone), in table order.
    let fixed = Shape::ALL
        .into_iter()
        .filter(|s| !s.takes_n() && !matches!(s, Shape::Bare | Shape::Conntrack));
    for &b in backends {
        for s in fixed.clone() {
            if s != Shape::Log || log {
                v.push((b, s, 0));
            }
        }
    }
    v
}

/// One configuration of this run.
#[derive(Debug, Clone)]
pub struct FeatureConfig {
    /// Ruleset and traffic.
    pub shape: Shape,
    /// Backend, N, load time, samples (`added` is over [`Shape::Bare`] of the same sample),
    /// error, failed checks.
    pub r: ConfigResult,
    /// `nf_conntrack_count` of the firewall namespace after the run.
    pub ct_entries: Option<u64>,
    /// bpfilter's event pump counters for this namespace after the run.
    pub events: Option<EventCounts>,
    /// Sends refused once by an ICMP error the firewall sent back (REJECT).
    pub icmp_errors: u64,
}

/// One window of the reply-rate measurement.
#[derive(Debug, Clone)]
pub struct ReplyRun {
    /// Backend.
    pub backend: Backend,
    /// Round (each round visits every backend, in a rotating order).
    pub round: usize,
    /// SYNs sent.
    pub sent: u64,
    /// How long the SYNs were sent for.
    pub send_time: Duration,
    /// RSTs that reached the sender namespace.
    pub replies: u64,
    /// From the first SYN to the last RST seen.
    pub last_reply: Duration,
    /// bpfilter's pump counters over the window (read, replies sent, lost).
    pub events: Option<EventCounts>,
    /// CPU time the backend's daemon used over the window.
    pub daemon_cpu: Option<Duration>,
    /// IRQ work interrupts (all CPUs) over the window: a BPF ring buffer wakes its reader
    /// through one when it submits a record the reader has caught up with.
    pub irq_work: Option<u64>,
}

impl ReplyRun {
    /// SYNs per second offered.
    pub fn offered(&self) -> f64 {
        self.sent as f64 / self.send_time.as_secs_f64().max(1e-9)
    }

    /// RSTs per second, over the time from the first SYN to the last RST (at least the
    /// sending time).
    pub fn rate(&self) -> f64 {
        self.replies as f64 / self.send_time.max(self.last_reply).as_secs_f64().max(1e-9)
    }
}

/// CPU a bpfilter daemon used during the interleaved run, and the records its pumps read.
#[derive(Debug, Clone, Copy)]
pub struct DaemonCpu {
    /// The strategy's backend.
    pub backend: Backend,
    /// utime + stime over the measurement.
    pub cpu: Duration,
    /// REJECT and LOG records its pumps read (every configuration of that daemon).
    pub records: u64,
    /// Records lost (ring buffer full).
    pub lost: u64,
    /// IRQ work interrupts (all CPUs) over the measurement.
    pub irq_work: Option<u64>,
}

/// Median and quartiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Lower quartile.
    pub q1: f64,
    /// Upper quartile.
    pub q3: f64,
}

fn spread(v: &[f64]) -> Option<Spread> {
    let m = median(v);
    m.is_finite().then(|| Spread {
        median: m,
        q1: quantile(v, 0.25),
        q3: quantile(v, 0.75),
    })
}

/// Per-sample differences of two configurations measured in the same samples (NaN where
/// either had no packets in a sample; the medians leave those out).
fn paired(a: &FeatureConfig, b: &FeatureConfig) -> Vec<f64> {
    a.r.added
        .iter()
        .zip(&b.r.added)
        .map(|(x, y)| x - y)
        .collect()
}

/// A derived figure, per backend.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What it is.
    pub label: String,
    /// Per backend of [`FeatureReport::backends`], in that order.
    pub values: Vec<Option<Spread>>,
    /// Shown in the README's short table (else in RESULTS.md only).
    pub in_readme: bool,
    /// ns per rule (else ns per packet).
    pub per_rule: bool,
}

/// Everything the second run measured.
#[derive(Debug, Clone)]
pub struct FeatureReport {
    /// Every configuration, the references first.
    pub configs: Vec<FeatureConfig>,
    /// Backends measured, iptables-legacy first when it was.
    pub backends: Vec<Backend>,
    /// Rule counts of the stateful shapes.
    pub counts: Vec<usize>,
    /// Filler kind after the head.
    pub kind: RuleKind,
    /// Kept samples.
    pub samples: usize,
    /// Rounds over all configurations.
    pub rounds: u64,
    /// `net.netfilter.nf_log_all_netns` when the run started (None: unreadable).
    pub nf_log_all_netns: Option<bool>,
    /// Per kept sample: the LOG configurations were not sent to during part of it
    /// (`nf_log_all_netns` was 1, set by another program, or had been in the second before).
    pub log_paused: Vec<bool>,
    /// The reply-rate windows.
    pub replies: Vec<ReplyRun>,
    /// Length of each window.
    pub reply_time: Duration,
    /// bpfilter daemons' CPU during the interleaved run.
    pub daemon_cpu: Vec<DaemonCpu>,
    /// Free text (e.g. why something was not measured).
    pub notes: Vec<String>,
}

/// `+123` / `-45` / `+1,234`, "-" when unknown.
fn signed(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let sign = if v < 0.0 && thousands(v.abs()) != "0" {
        "-"
    } else {
        "+"
    };
    format!("{sign}{}", thousands(v.abs()))
}

/// Rate as `412k/s`.
fn per_s(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 1e6 {
        format!("{:.2}M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}

impl FeatureReport {
    /// The measured configuration (backend, shape, n).
    pub fn get(&self, b: Backend, shape: Shape, n: usize) -> Option<&FeatureConfig> {
        self.configs
            .iter()
            .find(|c| c.r.backend == b && c.shape == shape && c.r.n == n && !c.r.added.is_empty())
    }

    fn reference(&self, shape: Shape) -> Option<&FeatureConfig> {
        self.get(Backend::None, shape, 0)
    }

    /// What conntrack itself adds over no firewall (the same for every backend).
    pub fn conntrack_cost(&self) -> Option<Spread> {
        spread(&self.reference(Shape::Conntrack)?.r.added)
    }

    /// `shape` at N = `n` of backend `b` minus configuration `base` of the same backend at
    /// `base_n` (or the reference when `base` is one), paired per sample.
    pub fn diff(
        &self,
        b: Backend,
        shape: Shape,
        n: usize,
        base: Shape,
        base_n: usize,
    ) -> Option<Spread> {
        let a = self.get(b, shape, n)?;
        let z = if base.has_rules() {
            self.get(b, base, base_n)?
        } else {
            self.reference(base)?
        };
        spread(&paired(a, z))
    }

    /// The head's cost: the stateful ruleset minus the same ruleset without the head, NEW
    /// traffic, paired per sample and pooled over every N.
    pub fn head_cost(&self, b: Backend) -> Option<Spread> {
        let mut v = Vec::new();
        for &n in &self.counts {
            if let (Some(a), Some(z)) =
                (self.get(b, Shape::HeadNew, n), self.get(b, Shape::Plain, n))
            {
                v.extend(paired(a, z));
            }
        }
        spread(&v)
    }

    /// ns per rule of a shape: median and quartiles over samples of the least-squares slope
    /// against N (None with fewer than two N measured).
    pub fn slope(&self, b: Backend, shape: Shape) -> Option<Spread> {
        let cfgs: Vec<&FeatureConfig> = self
            .counts
            .iter()
            .filter_map(|&n| self.get(b, shape, n))
            .collect();
        if cfgs.len() < 2 {
            return None;
        }
        let xs: Vec<f64> = cfgs.iter().map(|c| c.r.n as f64).collect();
        let samples = cfgs.iter().map(|c| c.r.added.len()).min().unwrap_or(0);
        let per: Vec<f64> = (0..samples)
            .map(|s| {
                let ys: Vec<f64> = cfgs.iter().map(|c| c.r.added[s]).collect();
                slope(&xs, &ys)
            })
            .collect();
        spread(&per)
    }

    /// Medians over rounds of (RSTs per second, SYNs offered per second) of backend `b`.
    pub fn reply_rate(&self, b: Backend) -> Option<(f64, f64)> {
        let runs: Vec<&ReplyRun> = self.replies.iter().filter(|r| r.backend == b).collect();
        if runs.is_empty() {
            return None;
        }
        let rate: Vec<f64> = runs.iter().map(|r| r.rate()).collect();
        let off: Vec<f64> = runs.iter().map(|r| r.offered()).collect();
        Some((median(&rate), median(&off)))
    }

    /// The derived figures, in table order.
    pub fn figures(&self) -> Vec<Figure> {
        let mut out = Vec::new();
        let k = self.kind.name();
        let (lo, hi) = (
            self.counts.iter().copied().min().unwrap_or(0),
            self.counts.iter().copied().max().unwrap_or(0),
        );
        let mut fig = |label: String,
                       in_readme: bool,
                       per_rule: bool,
                       f: &dyn Fn(Backend) -> Option<Spread>| {
            out.push(Figure {
                label,
                values: self.backends.iter().map(|&b| f(b)).collect(),
                in_readme,
                per_rule,
            });
        };
        for (shape, traffic) in [(Shape::HeadNew, "NEW"), (Shape::HeadEst, "ESTABLISHED")] {
            for &n in &self.counts {
                fig(
                    format!(
                        "conntrack head + {n} {k} rules + ACCEPT, {traffic} traffic (over conntrack alone)"
                    ),
                    n == lo || n == hi,
                    false,
                    &|b| self.diff(b, shape, n, Shape::Conntrack, 0),
                );
            }
        }
        fig(
            "conntrack test's fixed cost: the two head rules, NEW traffic (ruleset with the head - \
             the same without it, pooled over N)"
                .into(),
            true,
            false,
            &|b| self.head_cost(b),
        );
        for &n in &self.counts {
            fig(
                format!(
                    "ESTABLISHED traffic: head + {n} rules (rule 1 accepts) - the same {n} rules without the head"
                ),
                false,
                false,
                &|b| self.diff(b, Shape::HeadEst, n, Shape::Plain, n),
            );
        }
        fig(
            "`-p udp -m state --state NEW -m udp --dport P -j ACCEPT` rules, NEW traffic: ns/rule"
                .into(),
            true,
            true,
            &|b| self.slope(b, Shape::State),
        );
        fig(
            "the same rules without `-m state`: ns/rule".into(),
            true,
            true,
            &|b| self.slope(b, Shape::Port),
        );
        fig(
            "LOG rule traversed: over the same rule without `-j LOG`".into(),
            true,
            false,
            &|b| self.diff(b, Shape::Log, 0, Shape::Count, 0),
        );
        fig(
            "LOG rule + ACCEPT: over no firewall".into(),
            false,
            false,
            &|b| self.diff(b, Shape::Log, 0, Shape::Bare, 0),
        );
        fig(
            "limit rule traversed, no credit (`-m limit --limit 1/hour`): over the same rule \
             without `-m limit`"
                .into(),
            true,
            false,
            &|b| self.diff(b, Shape::Limit, 0, Shape::Count, 0),
        );
        fig(
            "addrtype rule traversed (`-m addrtype --dst-type LOCAL`, matching): over the same \
             rule without it"
                .into(),
            true,
            false,
            &|b| self.diff(b, Shape::Addrtype, 0, Shape::Count, 0),
        );
        fig(
            "REJECT (port unreachable) hit: over no firewall".into(),
            true,
            false,
            &|b| self.diff(b, Shape::Reject, 0, Shape::Bare, 0),
        );
        fig(
            "REJECT hit: over DROP by the same rule".into(),
            true,
            false,
            &|b| self.diff(b, Shape::Reject, 0, Shape::Drop, 0),
        );
        out
    }

    fn legacy_col(&self) -> Option<usize> {
        self.backends.iter().position(|b| *b == Backend::Legacy)
    }

    /// `+123 (x0.85)`: the median, and its ratio to iptables-legacy's when that means
    /// something (iptables-legacy's own cell has no ratio).
    fn cell(&self, f: &Figure, i: usize) -> String {
        let Some(v) = f.values[i] else {
            return "-".into();
        };
        let text = if f.per_rule {
            f2(v.median)
        } else {
            signed(v.median)
        };
        match self.legacy_col().and_then(|l| f.values[l].map(|x| (l, x))) {
            Some((l, x)) if l != i && x.median.abs() > 1.0 => {
                format!("{text} (x{})", f2(v.median / x.median))
            }
            _ => text,
        }
    }

    fn notes_text(&self, s: &mut String) {
        if let Some(c) = self.conntrack_cost() {
            let _ = writeln!(
                s,
                "Connection tracking itself (no firewall, conntrack on, over no firewall) adds \
                 {} ns/packet (quartiles {} to {}), the same for every backend: it runs in the \
                 kernel for all of them, turned on identically in each configuration that needs \
                 it (netbench's nftables table `inet {CT_TABLE}`, a `ct state` expression in a \
                 chain without a hook), so the stateful figures below are over it and differ by \
                 the match only.\n",
                signed(c.median),
                signed(c.q1),
                signed(c.q3)
            );
        }
        let paused = self.log_paused.iter().filter(|x| **x).count();
        let log_measured = self
            .configs
            .iter()
            .any(|c| c.shape == Shape::Log && c.r.added.iter().any(|v| v.is_finite()));
        if log_measured {
            let _ = writeln!(
                s,
                "LOG: measured with `net.netfilter.nf_log_all_netns` at 0, so in these \
                 (non-initial) namespaces the kernel's LOG formats nothing (`nf_log_syslog` \
                 returns first), while bpfilter's program still writes its record for every \
                 packet (its daemon then drops it): the LOG row is that record's cost. The LOG \
                 configurations are not sent to while the sysctl is 1 and for a second after \
                 (other programs set it; the run must not fill the kernel log){}.\n",
                if paused > 0 {
                    format!(
                        "; that happened during {paused} of the {} samples, whose LOG packets \
                         come from the rest of the sample",
                        self.log_paused.len()
                    )
                } else {
                    String::new()
                }
            );
        } else {
            let _ = writeln!(
                s,
                "LOG not measured in this run: `net.netfilter.nf_log_all_netns` was 1 (set by \
                 another program) during the whole measurement, and the LOG configurations are \
                 not sent to then (the run must not fill the kernel log, and with it at 1 the \
                 kernel formats every line).\n"
            );
        }
        let _ = writeln!(
            s,
            "REJECT: the kernel's port unreachable replies are rate limited (`icmp_ratelimit`, \
             `icmp_msgs_per_sec`), so per packet it pays the drop and the way to the limiter; \
             bpfilter's program pays the drop and the record, and its daemon answers later, on \
             another CPU.\n"
        );
        for d in &self.daemon_cpu {
            if d.records == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "{}'s daemon used {:.0} ms of CPU for the {} REJECT and LOG records its pumps \
                 read during the run ({:.0} ns per record, not in the per-packet figures: it runs \
                 on another CPU){}.\n",
                d.backend.name(),
                d.cpu.as_secs_f64() * 1e3,
                thousands(d.records as f64),
                d.cpu.as_nanos() as f64 / d.records as f64,
                if d.lost > 0 {
                    format!(
                        "; {} records did not fit in the ring buffer",
                        thousands(d.lost as f64)
                    )
                } else {
                    String::new()
                }
            );
        }
        let records: u64 = self.daemon_cpu.iter().map(|d| d.records).sum();
        if let Some(iw) = self.daemon_cpu.first().and_then(|d| d.irq_work) {
            if records > 0 {
                let _ = writeln!(
                    s,
                    "IRQ work interrupts over the run (all CPUs, every source): {} for the {} \
                     records of all daemons, {:.2} per record (a ring buffer record submitted \
                     without `BPF_RB_NO_WAKEUP` wakes a reader that has caught up through one).\n",
                    thousands(iw as f64),
                    thousands(records as f64),
                    iw as f64 / records as f64
                );
            }
        }
    }

    fn header(&self, first: &str) -> String {
        let mut s = format!("| {first} |");
        for b in &self.backends {
            let _ = write!(s, " {} |", b.name());
        }
        let _ = write!(s, "\n|---|{}", "---|".repeat(self.backends.len()));
        s
    }

    /// The README's part: the notes and one short table of ratios to iptables-legacy.
    pub fn readme(&self, s: &mut String, h: &str) {
        let _ = writeln!(s, "{h} Connection state, LOG and REJECT\n");
        let _ = writeln!(
            s,
            "A second interleaved run (same method, iptables-legacy in the same samples; {} \
             samples, {} rounds): the ufw-like head `{}`, `{}` before N {} rules, NEW traffic (no \
             reply seen) and ESTABLISHED traffic (the firewall side sent first); state rules; a \
             LOG rule traversed; a REJECT rule hit. ns per packet, median of per-sample \
             differences, (x ratio to iptables-legacy); quartiles and every configuration in \
             RESULTS.md.\n",
            self.samples,
            self.rounds,
            HEAD[0],
            HEAD[1],
            self.kind.name()
        );
        self.notes_text(s);
        let _ = writeln!(s, "{}", self.header("per packet (or per rule), ns"));
        for f in self.figures().iter().filter(|f| f.in_readme) {
            let mut row = format!("| {} |", f.label);
            for i in 0..self.backends.len() {
                let _ = write!(row, " {} |", self.cell(f, i));
            }
            let _ = writeln!(s, "{row}");
        }
        if !self.replies.is_empty() {
            let mut row = String::from(
                "| `--reject-with tcp-reset`: RSTs received per second (SYNs offered per second) |",
            );
            let legacy = self.reply_rate(Backend::Legacy).map(|r| r.0);
            for &b in &self.backends {
                match self.reply_rate(b) {
                    Some((rate, off)) => {
                        let ratio = match legacy {
                            Some(l) if b != Backend::Legacy && l > 0.0 => {
                                format!(", x{}", f2(rate / l))
                            }
                            _ => String::new(),
                        };
                        let _ = write!(row, " {} ({} offered{ratio}) |", per_s(rate), per_s(off));
                    }
                    None => row.push_str(" - |"),
                }
            }
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
        self.findings(s);
    }

    /// What looks wrong in bpfilter's figures, in words (also in the README).
    fn findings(&self, s: &mut String) {
        let mut f: Vec<String> = Vec::new();
        for &b in self.backends.iter().filter(|b| b.is_bpfilter()) {
            let runs: Vec<&ReplyRun> = self.replies.iter().filter(|r| r.backend == b).collect();
            let sent: u64 = runs.iter().map(|r| r.sent).sum();
            let got: u64 = runs.iter().map(|r| r.replies).sum();
            if sent > 0 && got == 0 {
                let read: u64 = runs
                    .iter()
                    .filter_map(|r| r.events.map(|e| e.reject_read))
                    .sum();
                f.push(format!(
                    "{}: no RST came back for {} SYNs hitting `-j REJECT --reject-with \
                     tcp-reset` (its daemon read {} REJECT records): the daemon sends no \
                     replies.",
                    b.name(),
                    thousands(sent as f64),
                    thousands(read as f64)
                ));
            }
            let lost: u64 = self
                .configs
                .iter()
                .filter(|c| c.r.backend == b)
                .filter_map(|c| c.events.map(|e| e.reject_lost + e.log_lost))
                .sum();
            if lost > 0 {
                f.push(format!(
                    "{}: {} LOG/REJECT records did not fit in the ring buffer during the \
                     interleaved run (the per-packet figures then include failed reservations).",
                    b.name(),
                    thousands(lost as f64)
                ));
            }
            if let (Some(e0), Some(en)) = (
                self.counts
                    .iter()
                    .min()
                    .and_then(|&n| self.diff(b, Shape::HeadEst, n, Shape::Conntrack, 0)),
                self.counts
                    .iter()
                    .max()
                    .and_then(|&n| self.diff(b, Shape::HeadEst, n, Shape::Conntrack, 0)),
            ) {
                if en.median - e0.median > 30.0 {
                    f.push(format!(
                        "{}: ESTABLISHED traffic, accepted by rule 1, costs {} ns more with {} \
                         rules after the head than with {}: rules after the verdict should \
                         cost nothing.",
                        b.name(),
                        signed(en.median - e0.median),
                        self.counts.iter().max().copied().unwrap_or(0),
                        self.counts.iter().min().copied().unwrap_or(0)
                    ));
                }
            }
            let lines: u64 = self
                .configs
                .iter()
                .filter(|c| c.r.backend == b)
                .filter_map(|c| c.events.map(|e| e.lines))
                .sum();
            if lines > 0 && self.nf_log_all_netns == Some(false) && !self.log_paused.contains(&true)
            {
                f.push(format!(
                    "{}: its daemon wrote {} LOG lines to the kernel log though \
                     `nf_log_all_netns` stayed 0 (polled every 5 ms).",
                    b.name(),
                    thousands(lines as f64)
                ));
            }
            let on_without: Vec<&str> = self
                .configs
                .iter()
                .filter(|c| c.r.backend == b && !c.shape.conntrack())
                .filter(|c| c.ct_entries.is_some_and(|e| e > 0))
                .map(|c| c.shape.name())
                .collect();
            if !on_without.is_empty() {
                f.push(format!(
                    "{}: conntrack ran in namespaces whose rules need none ({}).",
                    b.name(),
                    on_without.join(", ")
                ));
            }
        }
        if f.is_empty() {
            return;
        }
        let _ = writeln!(s, "Seen in this run:\n");
        for l in f {
            let _ = writeln!(s, "- {l}");
        }
        let _ = writeln!(s);
    }

    /// RESULTS.md's section: notes, every configuration, the derived figures with quartiles,
    /// the reply-rate windows, bpfilter's event counters, checks.
    pub fn markdown(&self, s: &mut String, h: &str) {
        let _ = writeln!(s, "{h} Connection state, LOG and REJECT\n");
        let _ = writeln!(
            s,
            "Second interleaved run: {} configurations, {} kept samples ({} rounds); fillers \
             after the head: {} rules; head: `{}`, `{}`. Added ns per packet over no firewall \
             (no conntrack) in the same sample.\n",
            self.configs
                .iter()
                .filter(|c| !c.r.added.is_empty())
                .count(),
            self.samples,
            self.rounds,
            self.kind.name(),
            HEAD[0],
            HEAD[1]
        );
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s);
        }
        self.notes_text(s);
        self.findings(s);
        // Every configuration.
        let counts: String = self.counts.iter().map(|n| format!(" N={n} |")).collect();
        let _ = writeln!(s, "| configuration | backend |{counts}");
        let _ = writeln!(s, "|---|---|{}", "---|".repeat(self.counts.len()));
        let mut rows: Vec<(Shape, Backend)> = Vec::new();
        for c in &self.configs {
            if c.shape.interleaved() && !rows.contains(&(c.shape, c.r.backend)) {
                rows.push((c.shape, c.r.backend));
            }
        }
        for (shape, b) in rows {
            let mut row = format!("| {} | {} |", shape.describe(self.kind), b.name());
            for (i, &n) in self.counts.iter().enumerate() {
                let n = if shape.takes_n() { n } else { 0 };
                let c = self
                    .configs
                    .iter()
                    .find(|c| c.shape == shape && c.r.backend == b && c.r.n == n);
                match c {
                    _ if !shape.takes_n() && i > 0 => row.push_str(" |"),
                    Some(c) if !c.r.added.is_empty() => {
                        let _ = write!(row, " {} |", signed(c.r.added_median()));
                    }
                    Some(c) if c.r.error.is_some() => row.push_str(" failed |"),
                    _ => row.push_str(" - |"),
                }
            }
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
        // Derived figures with quartiles.
        let _ = writeln!(
            s,
            "| figure | backend | median | quartiles | x iptables-legacy |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|");
        for f in self.figures() {
            for (i, b) in self.backends.iter().enumerate() {
                let Some(v) = f.values[i] else { continue };
                let fmt = |x: f64| if f.per_rule { f2(x) } else { signed(x) };
                let ratio = match self.legacy_col().and_then(|l| f.values[l]) {
                    Some(x) if *b != Backend::Legacy && x.median.abs() > 1.0 => {
                        f2(v.median / x.median)
                    }
                    _ => "-".into(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} to {} | {ratio} |",
                    f.label,
                    b.name(),
                    fmt(v.median),
                    fmt(v.q1),
                    fmt(v.q3)
                );
            }
        }
        let _ = writeln!(s);
        self.replies_table(s);
        self.events_table(s);
        self.checks(s);
    }

    fn replies_table(&self, s: &mut String) {
        if self.replies.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "Replies per second, `-p tcp --dport {} -j REJECT --reject-with tcp-reset`: SYNs \
             from one thread for {} ms per window, RSTs counted in the sender namespace (`Tcp \
             InSegs`) until none came for 200 ms; rate = RSTs / (first SYN to last RST).\n",
            replies::RST_DPORT,
            self.reply_time.as_millis()
        );
        let _ = writeln!(
            s,
            "| backend | round | SYNs sent | offered | RSTs received | RSTs per second | last RST after (ms) | daemon: REJECT read / replies sent / lost | daemon CPU per record (ns) | IRQ work interrupts |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for r in &self.replies {
            let ev = r
                .events
                .map(|e| {
                    format!(
                        "{} / {} / {}",
                        thousands(e.reject_read as f64),
                        thousands(e.replies as f64),
                        thousands(e.reject_lost as f64)
                    )
                })
                .unwrap_or_else(|| "-".into());
            let cpu = match (r.daemon_cpu, r.events) {
                (Some(c), Some(e)) if e.reject_read > 0 => {
                    format!("{:.0}", c.as_nanos() as f64 / e.reject_read as f64)
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.0} | {ev} | {cpu} | {} |",
                r.backend.name(),
                r.round + 1,
                thousands(r.sent as f64),
                per_s(r.offered()),
                thousands(r.replies as f64),
                per_s(r.rate()),
                r.last_reply.as_secs_f64() * 1e3,
                r.irq_work
                    .map(|n| thousands(n as f64))
                    .unwrap_or_else(|| "-".into())
            );
        }
        let _ = writeln!(s);
    }

    fn events_table(&self, s: &mut String) {
        let rows: Vec<&FeatureConfig> = self
            .configs
            .iter()
            .filter(|c| c.shape.interleaved() && c.events.is_some())
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "bpfilter's event pumps after the interleaved run (`bpfilter status` of each \
             namespace):\n"
        );
        let _ = writeln!(
            s,
            "| configuration | backend | REJECT read | replies sent | unanswered | REJECT lost | LOG read | lines written | LOG lost | errors | stale |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for c in rows {
            let Some(e) = c.events else { continue };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.shape.describe(self.kind),
                c.r.backend.name(),
                e.reject_read,
                e.replies,
                e.unanswered,
                e.reject_lost,
                e.log_read,
                e.lines,
                e.log_lost,
                e.errors,
                e.stale
            );
        }
        let _ = writeln!(s);
    }

    fn checks(&self, s: &mut String) {
        let fails: Vec<String> = self
            .configs
            .iter()
            .flat_map(|c| {
                c.r.check_failures.iter().map(move |f| {
                    format!("{} {} N={}: {f}", c.r.backend.name(), c.shape.name(), c.r.n)
                })
            })
            .collect();
        let errors: Vec<String> = self
            .configs
            .iter()
            .filter_map(|c| {
                c.r.error.as_ref().map(|e| {
                    format!(
                        "{} {} N={}: {}",
                        c.r.backend.name(),
                        c.shape.name(),
                        c.r.n,
                        e.lines()
                            .next()
                            .unwrap_or("")
                            .chars()
                            .take(300)
                            .collect::<String>()
                    )
                })
            })
            .collect();
        let icmp: u64 = self.configs.iter().map(|c| c.icmp_errors).sum();
        if fails.is_empty() {
            let _ = writeln!(
                s,
                "Checks of this run passed: `Ip InReceives` == packets sent in every firewall \
                 namespace; every rule that must count each packet (the accepting rule; the \
                 LOG, DROP and REJECT rules; rule 1 with ESTABLISHED traffic) does, and the \
                 head's rules count none of the NEW traffic; conntrack entries exist exactly \
                 where conntrack is on; every SYN of the reply windows hit the tcp-reset rule.{}\n",
                if icmp > 0 {
                    format!(
                        " {} sends were refused once by an ICMP error a REJECT sent back \
                         (ECONNREFUSED on the connected socket), and retried.",
                        thousands(icmp as f64)
                    )
                } else {
                    String::new()
                }
            );
        } else {
            let _ = writeln!(
                s,
                "FAILED checks in this run (figures of these configurations are not trustworthy):\n"
            );
            for f in fails {
                let _ = writeln!(s, "- {f}");
            }
            let _ = writeln!(s);
        }
        if !errors.is_empty() {
            let _ = writeln!(s, "Configurations of this run that could not be set up:\n");
            for e in errors {
                let _ = writeln!(s, "- {e}");
            }
            let _ = writeln!(s);
        }
    }
}

/// Knobs of the run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rule counts of the stateful shapes.
    pub counts: Vec<usize>,
    /// Filler kind after the head.
    pub kind: RuleKind,
    /// The sender's plan (samples, visits).
    pub plan: Plan,
    /// Length of one reply-rate window.
    pub reply_time: Duration,
    /// Reply-rate windows per backend.
    pub reply_rounds: usize,
}

/// A configuration ready to be measured.
struct Live {
    idx: usize,
    firewall: String,
    tx: UdpSocket,
    rx: UdpSocket,
    snmp: Snmp,
    in0: u64,
}

/// A reply-rate target ready: its SYN socket and the sender namespace's counters.
struct RstLive {
    idx: usize,
    firewall: String,
    raw: OwnedFd,
    sender_snmp: Snmp,
    sent: u64,
}

/// utime + stime of process `pid` (all its threads), from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// How long after `nf_log_all_netns` was last seen at 1 the LOG configurations stay paused:
/// bpfilter's daemon trusts a reading of it for a second.
const LOG_RESUME_AFTER: Duration = Duration::from_millis(1100);

/// Polls `nf_log_all_netns` every 5 ms on its own thread while the run sends, keeps the times
/// it was 1, and says when LOG must not be sent to: other programs on this machine (the LOG
/// tests) set it for a while, and then the kernel formats, and bpfilter's daemon writes, a
/// line per packet.
struct SysctlWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Instant>>>,
}

impl SysctlWatch {
    fn start() -> SysctlWatch {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        // Paused until the first reading says otherwise.
        let paused = Arc::new(AtomicBool::new(nf_log_all_netns() != Some(false)));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&paused));
        let thread = std::thread::Builder::new()
            .name("netbench-sysctl".into())
            .spawn(move || {
                let mut on = Vec::new();
                let mut last_on: Option<Instant> = None;
                while !s.load(Ordering::Relaxed) {
                    if nf_log_all_netns() != Some(false) {
                        let now = Instant::now();
                        on.push(now);
                        last_on = Some(now);
                    }
                    p.store(
                        last_on.is_some_and(|t| t.elapsed() < LOG_RESUME_AFTER),
                        Ordering::Relaxed,
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                on
            })
            .ok();
        SysctlWatch {
            stop,
            paused,
            thread,
        }
    }

    /// True while LOG must not be sent to.
    fn paused(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        std::sync::Arc::clone(&self.paused)
    }

    /// Stop polling; the times it was seen at 1.
    fn finish(mut self) -> Vec<Instant> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// Per kept sample (ending at `ends[i]`, the first one starting at the latest two sample
/// lengths before its end, not before `start`): whether a time of `on` falls in it or in the
/// second before it (bpfilter's daemon trusts a reading of the sysctl for a second).
fn samples_touched(
    ends: &[Instant],
    on: &[Instant],
    start: Instant,
    sample: Duration,
) -> Vec<bool> {
    let slack = Duration::from_millis(10);
    (0..ends.len())
        .map(|i| {
            let from = if i == 0 {
                ends[0].checked_sub(sample * 2).unwrap_or(start).max(start)
            } else {
                ends[i - 1]
            };
            let from = from.checked_sub(Duration::from_secs(1)).unwrap_or(from);
            let to = ends[i] + slack;
            on.iter().any(|t| *t >= from && *t <= to)
        })
        .collect()
}

/// IRQ work interrupts so far, summed over CPUs (the `IWI` line of /proc/interrupts).
pub fn irq_work_interrupts() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/interrupts").ok()?;
    parse_iwi(&s)
}

/// The `IWI:` line of /proc/interrupts, summed over its per-CPU columns.
fn parse_iwi(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.trim_start().starts_with("IWI:"))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .map_while(|w| w.parse::<u64>().ok())
            .sum(),
    )
}

/// `net.netfilter.nf_log_all_netns` (a setting of the initial namespace).
fn nf_log_all_netns() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_log_all_netns")
        .ok()
        .map(|s| s.trim() != "0")
}

/// Run the whole second measurement: set up every configuration of [`plan`], measure them
/// interleaved, check, then measure reply rates. `daemons`: the process id of each
/// strategy's bpfilter daemon.
pub fn run(
    opts: &Options,
    tools: &Tools,
    backends: &[Backend],
    daemons: &[(Access, u32)],
    work: &Path,
) -> Result<FeatureReport> {
    let log_all = nf_log_all_netns();
    let mut notes = Vec::new();
    let mut backends: Vec<Backend> = backends
        .iter()
        .copied()
        .filter(|b| *b == Backend::Legacy || b.is_bpfilter())
        .collect();
    backends.sort_by_key(|b| *b != Backend::Legacy);
    if !backends.contains(&Backend::Legacy) {
        notes.push("iptables-legacy not in this run: no ratios.".to_string());
    }
    let shapes = plan(&backends, &opts.counts, true);
    let mut configs: Vec<FeatureConfig> = shapes
        .iter()
        .map(|&(b, shape, n)| FeatureConfig {
            shape,
            r: ConfigResult::new(b, None, n),
            ct_entries: None,
            events: None,
            icmp_errors: 0,
        })
        .collect();
    let ct_file = work.join("netbench-conntrack.nft");
    std::fs::write(&ct_file, conntrack_nft_file())?;
    let mut pairs = Pairs::default();
    let mut live: Vec<Live> = Vec::new();
    let mut rst: Vec<RstLive> = Vec::new();
    eprintln!(
        "netbench: connection state, LOG, REJECT: setting up {} configurations",
        configs.len()
    );
    for (idx, c) in configs.iter_mut().enumerate() {
        let (b, shape, n) = (c.r.backend, c.shape, c.r.n);
        let tag = format!("x{}-{}-{n}", shape.name(), b.tag());
        if tools.deadline.is_some_and(|d| Instant::now() >= d) && b != Backend::None {
            c.r.error = Some("skipped: the run's time budget (--budget-s) was used up".into());
            continue;
        }
        let t0 = Instant::now();
        match setup(
            tools, &tag, b, shape, n, opts.kind, work, &ct_file, &mut pairs,
        ) {
            Ok((pair, tx, rx, restore)) => {
                c.r.restore = restore;
                if shape.interleaved() {
                    let snmp = Snmp::open(&pair.firewall)?;
                    live.push(Live {
                        idx,
                        firewall: pair.firewall.clone(),
                        tx,
                        rx,
                        snmp,
                        in0: 0,
                    });
                } else {
                    match (replies::raw_socket(&pair.sender), Snmp::open(&pair.sender)) {
                        (Ok(raw), Ok(sender_snmp)) => rst.push(RstLive {
                            idx,
                            firewall: pair.firewall.clone(),
                            raw,
                            sender_snmp,
                            sent: 0,
                        }),
                        (Err(e), _) | (_, Err(e)) => c.r.error = Some(format!("{e:#}")),
                    }
                }
            }
            Err(e) => {
                eprintln!("netbench: {tag}: {e:#}");
                if b == Backend::None {
                    return Err(e.context("a reference configuration could not be set up"));
                }
                c.r.error = Some(format!("{e:#}"));
            }
        }
        eprintln!(
            "netbench: {tag}: ready in {:.2} s",
            t0.elapsed().as_secs_f64()
        );
    }

    // ESTABLISHED: the firewall side speaks first (its OUTPUT creates the entry, the
    // sender's packets are its reply direction). Just before sending, so that the entry's
    // 30 s unreplied timeout cannot run out first.
    for l in &live {
        if configs[l.idx].shape == Shape::HeadEst {
            let to = l.tx.local_addr()?;
            l.rx.send_to(&[0u8], to)
                .with_context(|| format!("{}: first datagram to {to}", l.firewall))?;
        }
    }
    for l in &mut live {
        l.in0 = l.snmp.in_receives()?;
    }
    let cpu0: Vec<Option<Duration>> = daemons.iter().map(|(_, p)| process_cpu(*p)).collect();
    let iwi0 = irq_work_interrupts();
    eprintln!(
        "netbench: measuring {} configurations, {} samples",
        live.len(),
        opts.plan.samples
    );
    let socks: Vec<UdpSocket> = live
        .iter()
        .map(|l| l.tx.try_clone())
        .collect::<std::io::Result<_>>()?;
    let is_log: Vec<bool> = live
        .iter()
        .map(|l| configs[l.idx].shape == Shape::Log)
        .collect();
    let watch = SysctlWatch::start();
    let t_start = Instant::now();
    let mut ends: Vec<Instant> = Vec::new();
    let paused = watch.paused();
    let m = sender::measure_skipping(
        &socks,
        &opts.plan,
        |c| is_log[c] && paused.load(std::sync::atomic::Ordering::Relaxed),
        |done, total| {
            ends.push(Instant::now());
            if done % 10 == 0 || done == total {
                eprintln!("netbench: sample {done}/{total}");
            }
        },
    );
    let on_at = watch.finish();
    let m = m?;
    drop(socks);
    let log_paused = samples_touched(&ends, &on_at, t_start, opts.plan.sample);
    if log_paused.contains(&true) {
        eprintln!(
            "netbench: nf_log_all_netns was 1 during {} samples (set by another program): LOG \
             paused then",
            log_paused.iter().filter(|x| **x).count()
        );
    }
    let cpu1: Vec<Option<Duration>> = daemons.iter().map(|(_, p)| process_cpu(*p)).collect();
    let irq_work = irq_work_interrupts()
        .zip(iwi0)
        .map(|(z, a)| z.saturating_sub(a));

    let ref_pos = live
        .iter()
        .position(|l| configs[l.idx].shape == Shape::Bare)
        .context("no reference")?;
    for (c, l) in live.iter_mut().enumerate() {
        let cfg = &mut configs[l.idx];
        cfg.icmp_errors = m.icmp_errors[c];
        for s in &m.samples {
            cfg.r.cpu.push(s[c].cpu_per_pkt());
            cfg.r.wall.push(s[c].wall_per_pkt());
            cfg.r
                .added
                .push(s[c].cpu_per_pkt() - s[ref_pos].cpu_per_pkt());
        }
        let sent = m.sent[c];
        let got = l.snmp.in_receives()?.saturating_sub(l.in0);
        if got != sent {
            cfg.r
                .check_failures
                .push(format!("Ip InReceives {got} != sent {sent}"));
        }
        check_rules(tools, cfg, &l.firewall, sent);
        check_conntrack(cfg, &l.firewall);
        if let Some(a) = cfg.r.backend.access() {
            if matches!(cfg.shape, Shape::Log | Shape::Reject) {
                cfg.events = tools
                    .bpfilter_status(a, &l.firewall)
                    .ok()
                    .and_then(|st| backend::parse_events(&st));
            }
        }
    }
    let mut daemon_cpu = Vec::new();
    for (i, (a, _)) in daemons.iter().enumerate() {
        let b = Backend::Bpfilter(*a);
        let (Some(c0), Some(c1)) = (cpu0[i], cpu1[i]) else {
            continue;
        };
        let evs: Vec<EventCounts> = configs
            .iter()
            .filter(|c| c.r.backend == b)
            .filter_map(|c| c.events)
            .collect();
        daemon_cpu.push(DaemonCpu {
            backend: b,
            cpu: c1.saturating_sub(c0),
            records: evs.iter().map(|e| e.reject_read + e.log_read).sum(),
            lost: evs.iter().map(|e| e.reject_lost + e.log_lost).sum(),
            irq_work,
        });
    }

    // Replies per second: one backend at a time, rounds in a rotating order.
    let mut runs = Vec::new();
    let pkt = replies::syn_packet();
    if !rst.is_empty() {
        eprintln!(
            "netbench: REJECT replies per second: {} rounds of {} ms per backend",
            opts.reply_rounds,
            opts.reply_time.as_millis()
        );
    }
    for round in 0..opts.reply_rounds {
        let len = rst.len();
        for k in 0..len {
            let t = &mut rst[(k + round) % len];
            let b = configs[t.idx].r.backend;
            let pid = b
                .access()
                .and_then(|a| daemons.iter().find(|(d, _)| *d == a).map(|(_, p)| *p));
            let status = |t: &RstLive| {
                b.access()
                    .and_then(|a| tools.bpfilter_status(a, &t.firewall).ok())
                    .and_then(|st| backend::parse_events(&st))
            };
            let ev0 = status(t);
            let cpu0 = pid.and_then(process_cpu);
            let iwi0 = irq_work_interrupts();
            let base = t.sender_snmp.field("Tcp", "InSegs")?;
            let t0 = Instant::now();
            let (sent, send_time) = replies::blast(&t.raw, &pkt, opts.plan.batch, opts.reply_time)?;
            let (got, last) = replies::wait_replies(
                &mut t.sender_snmp,
                base,
                t0,
                Duration::from_millis(200),
                Duration::from_secs(3),
            )?;
            t.sent += sent;
            let cpu1 = pid.and_then(process_cpu);
            let iwi1 = irq_work_interrupts();
            let ev1 = status(t);
            runs.push(ReplyRun {
                backend: b,
                round,
                sent,
                send_time,
                replies: got,
                last_reply: last,
                events: ev0.zip(ev1).map(|(a, z)| z.since(&a)),
                daemon_cpu: cpu0.zip(cpu1).map(|(a, z)| z.saturating_sub(a)),
                irq_work: iwi0.zip(iwi1).map(|(a, z)| z.saturating_sub(a)),
            });
        }
    }
    for t in &rst {
        let cfg = &mut configs[t.idx];
        check_rules(tools, cfg, &t.firewall, t.sent);
    }
    drop(live);
    drop(rst);
    eprintln!("netbench: connection state, LOG, REJECT: tearing down");
    drop(pairs);
    Ok(FeatureReport {
        configs,
        backends,
        counts: {
            let mut c = opts.counts.clone();
            c.sort_unstable();
            c.dedup();
            c
        },
        kind: opts.kind,
        samples: opts.plan.samples,
        rounds: m.rounds,
        nf_log_all_netns: log_all,
        log_paused,
        replies: runs,
        reply_time: opts.reply_time,
        daemon_cpu,
        notes,
    })
}

/// The rule counters of a configuration against what its shape expects.
fn check_rules(tools: &Tools, cfg: &mut FeatureConfig, ns: &str, sent: u64) {
    if cfg.r.backend == Backend::None {
        return;
    }
    for (k, all) in cfg.shape.expected(cfg.r.n) {
        let want = if all { sent } else { 0 };
        match tools.rule_counter(cfg.r.backend, ns, k) {
            Ok(p) if p == want => {}
            Ok(p) => cfg
                .r
                .check_failures
                .push(format!("rule {k} counted {p}, expected {want}")),
            Err(e) => cfg
                .r
                .check_failures
                .push(format!("rule {k} counter unreadable: {e:#}")),
        }
    }
}

/// Conntrack entries exist where conntrack must be on, and none where it must be off.
fn check_conntrack(cfg: &mut FeatureConfig, ns: &str) {
    match netns::read_in_netns(ns, "/proc/sys/net/netfilter/nf_conntrack_count") {
        Ok(v) => {
            let n: u64 = v.parse().unwrap_or(0);
            cfg.ct_entries = Some(n);
            if cfg.shape.conntrack() && n == 0 {
                cfg.r
                    .check_failures
                    .push("no conntrack entry: conntrack was not on".into());
            }
            if !cfg.shape.conntrack() && n > 0 {
                cfg.r.check_failures.push(format!(
                    "{n} conntrack entries: conntrack ran in a configuration without it"
                ));
            }
        }
        Err(e) => cfg
            .r
            .check_failures
            .push(format!("nf_conntrack_count unreadable: {e:#}")),
    }
}

/// Namespaces, sockets, conntrack and ruleset of one configuration; returns the pair, the
/// sending and receiving sockets, and the ruleset's load time.
#[allow(clippy::too_many_arguments)] // one call site
fn setup(
    tools: &Tools,
    tag: &str,
    b: Backend,
    shape: Shape,
    n: usize,
    kind: RuleKind,
    work: &Path,
    ct_file: &Path,
    pairs: &mut Pairs,
) -> Result<(Pair, UdpSocket, UdpSocket, Option<Duration>)> {
    let (pair, tx, rx) = pairs.create(tag)?;
    if shape.conntrack() {
        let c = in_ns_cmd(
            &pair.firewall,
            Path::new("nft"),
            &["-f".to_string(), ct_file.display().to_string()],
        );
        run_ok(c, Duration::from_secs(30)).context("conntrack on (nft)")?;
    }
    let mut restore = None;
    if shape.has_rules() {
        let p = work.join(format!("feature-{}-{}-{n}.save", shape.name(), kind.name()));
        if !p.exists() {
            std::fs::write(&p, save_file(&shape.rules(kind, n)))?;
        }
        restore = Some(tools.restore(b, &pair.firewall, &p)?);
    }
    Ok((pair, tx, rx, restore))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAST: Backend = Backend::Bpfilter(Access::Cast);

    #[test]
    fn rulesets_and_expected_counters_agree() {
        let k = RuleKind::Addr;
        for shape in Shape::ALL {
            for n in [0, 3] {
                let rules = shape.rules(k, n);
                for (rule, all) in shape.expected(n) {
                    assert!(
                        rule >= 1 && rule <= rules.len(),
                        "{shape:?} {n}: rule {rule}"
                    );
                    // The rule that must see every packet matches the traffic; the final
                    // ACCEPT is last.
                    if all && matches!(shape, Shape::Plain | Shape::Port | Shape::State) {
                        assert_eq!(rule, rules.len());
                    }
                }
            }
        }
        let h = Shape::HeadNew.rules(k, 2);
        assert_eq!(h.len(), 5);
        assert_eq!(h[0], HEAD[0]);
        assert_eq!(h[1], HEAD[1]);
        assert_eq!(h[2], "-s 10.1.0.0/32 -p udp -m udp --dport 5001 -j DROP");
        assert_eq!(Shape::HeadEst.rules(k, 2), h, "same ruleset, other traffic");
        assert_eq!(
            Shape::State.rules(k, 1)[0],
            "-p udp -m state --state NEW -m udp --dport 6000 -j ACCEPT"
        );
        assert_eq!(
            Shape::Port.rules(k, 1)[0],
            "-p udp -m udp --dport 6000 -j DROP"
        );
        assert_eq!(
            Shape::Log.rules(k, 0)[0],
            "-p udp -m udp --dport 5001 -j LOG --log-prefix \"netbench: \""
        );
        assert_eq!(Shape::Count.rules(k, 0)[0], "-p udp -m udp --dport 5001");
        assert_eq!(Shape::Reject.rules(k, 0).len(), 1);
        assert!(Shape::TcpReset.rules(k, 0)[0].ends_with("--reject-with tcp-reset"));
        let f = save_file(&Shape::Drop.rules(k, 0));
        assert_eq!(
            f,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A INPUT -p udp -m udp --dport 5001 -j DROP\nCOMMIT\n"
        );
        assert!(conntrack_nft_file().contains("ct state established"));
    }

    #[test]
    fn the_plan_covers_every_shape() {
        let p = plan(&[Backend::Legacy, CAST], &[100, 0], true);
        for s in Shape::ALL {
            assert!(p.iter().any(|(_, x, _)| *x == s), "{s:?}");
        }
        assert_eq!(p[0], (Backend::None, Shape::Bare, 0));
        // 2 references, 5 shapes x 2 counts x 2 backends, 7 N = 0 shapes x 2 backends.
        assert_eq!(p.len(), 2 + 20 + 14);
        let no_log = plan(&[Backend::Legacy], &[0], false);
        assert!(!no_log.iter().any(|(_, s, _)| *s == Shape::Log));
        assert!(p
            .iter()
            .filter(|(_, s, _)| !s.takes_n())
            .all(|(_, _, n)| *n == 0));
    }

    /// A report where each configuration's added cost is `cost(backend, shape, n)` plus a
    /// per-sample swing common to all of them.
    fn report(cost: impl Fn(Backend, Shape, usize) -> f64) -> FeatureReport {
        let backends = vec![Backend::Legacy, CAST];
        let counts = vec![0, 100, 1000];
        let configs = plan(&backends, &counts, true)
            .into_iter()
            .map(|(b, shape, n)| {
                let mut r = ConfigResult::new(b, None, n);
                if shape.interleaved() {
                    for s in 0..9 {
                        let swing = if shape == Shape::Bare { 0.0 } else { s as f64 };
                        r.added.push(cost(b, shape, n) + swing);
                        r.cpu.push(3000.0);
                        r.wall.push(3000.0);
                    }
                }
                FeatureConfig {
                    shape,
                    r,
                    ct_entries: Some(u64::from(shape.conntrack())),
                    events: None,
                    icmp_errors: 0,
                }
            })
            .collect();
        FeatureReport {
            configs,
            backends,
            counts,
            kind: RuleKind::Addr,
            samples: 9,
            rounds: 20,
            nf_log_all_netns: Some(false),
            log_paused: vec![false; 9],
            replies: vec![],
            reply_time: Duration::from_millis(1000),
            daemon_cpu: vec![],
            notes: vec![],
        }
    }

    /// iptables-legacy: conntrack 60, 4 ns per addr rule, 20 per port rule, 30 per state rule,
    /// each ctstate test 15; bpfilter-cast: half of each, lookups for addr and port rules.
    fn costs(b: Backend, s: Shape, n: usize) -> f64 {
        let n = n as f64;
        let ct = 60.0;
        let legacy = b == Backend::Legacy;
        let base = if legacy { 100.0 } else { 80.0 };
        let (addr, port, state, test) = if legacy {
            (4.0, 20.0, 30.0, 15.0)
        } else {
            (0.0, 0.0, 15.0, 7.5)
        };
        match s {
            Shape::Bare => 0.0,
            Shape::Conntrack => ct,
            Shape::Plain => ct + base + addr * n,
            Shape::HeadNew => ct + base + 2.0 * test + addr * n,
            Shape::HeadEst => ct + base + test,
            Shape::Port => ct + base + port * n,
            Shape::State => ct + base + state * n,
            Shape::Count => base + 10.0,
            Shape::Log => base + if legacy { 25.0 } else { 60.0 },
            Shape::Limit => base + 10.0 + if legacy { 20.0 } else { 12.0 },
            Shape::Addrtype => base + 10.0 + if legacy { 30.0 } else { 8.0 },
            Shape::Drop => base,
            Shape::Reject => base + if legacy { 30.0 } else { 50.0 },
            Shape::TcpReset => 0.0,
        }
    }

    #[test]
    fn figures_are_paired_differences() {
        let r = report(costs);
        let ct = r.conntrack_cost().expect("ct");
        // The swing (0..8, median 4) is in every configuration but the reference.
        assert_eq!(ct.median, 64.0);
        let head = r.head_cost(Backend::Legacy).expect("head");
        assert_eq!((head.median, head.q1, head.q3), (30.0, 30.0, 30.0));
        assert_eq!(r.head_cost(CAST).expect("head").median, 15.0);
        assert_eq!(
            r.diff(Backend::Legacy, Shape::HeadEst, 1000, Shape::Conntrack, 0)
                .expect("est")
                .median,
            115.0
        );
        assert!(
            (r.slope(Backend::Legacy, Shape::State)
                .expect("slope")
                .median
                - 30.0)
                .abs()
                < 1e-9
        );
        assert!(r.slope(CAST, Shape::Port).expect("slope").median.abs() < 1e-9);
        assert_eq!(
            r.diff(CAST, Shape::Log, 0, Shape::Count, 0)
                .expect("log")
                .median,
            50.0
        );
        assert_eq!(
            r.diff(Backend::Legacy, Shape::Reject, 0, Shape::Drop, 0)
                .expect("reject")
                .median,
            30.0
        );
    }

    #[test]
    fn readme_table_has_ratios_to_legacy() {
        let mut r = report(costs);
        r.replies = vec![
            ReplyRun {
                backend: Backend::Legacy,
                round: 0,
                sent: 400_000,
                send_time: Duration::from_secs(1),
                replies: 400_000,
                last_reply: Duration::from_secs(1),
                events: None,
                daemon_cpu: None,
                irq_work: Some(3),
            },
            ReplyRun {
                backend: CAST,
                round: 0,
                sent: 500_000,
                send_time: Duration::from_secs(1),
                replies: 0,
                last_reply: Duration::from_millis(1000),
                events: Some(EventCounts {
                    reject_read: 100_000,
                    reject_lost: 400_000,
                    ..EventCounts::default()
                }),
                daemon_cpu: Some(Duration::from_millis(50)),
                irq_work: Some(99_000),
            },
        ];
        let mut s = String::new();
        r.readme(&mut s, "###");
        assert!(
            s.contains("| per packet (or per rule), ns | iptables-legacy | bpfilter-cast |"),
            "{s}"
        );
        assert!(
            s.contains(
                "| LOG rule traversed: over the same rule without `-j LOG` | +15 | +50 (x3.33) |"
            ),
            "{s}"
        );
        assert!(
            s.contains("the two head rules, NEW traffic (ruleset with the head - the same without it, pooled over N) | +30 | +15 (x0.50) |"),
            "{s}"
        );
        assert!(
            s.contains("NEW traffic: ns/rule | 30.00 | 15.00 (x0.50) |"),
            "{s}"
        );
        assert!(
            s.contains("| 400k/s (400k/s offered) | 0/s (500k/s offered, x0.00) |"),
            "{s}"
        );
        assert!(
            s.contains("bpfilter-cast: no RST came back for 500,000 SYNs"),
            "{s}"
        );
        assert!(
            s.contains("measured with `net.netfilter.nf_log_all_netns` at 0"),
            "{s}"
        );
        // The N between the smallest and the largest is in RESULTS.md only.
        assert!(!s.contains("head + 100 addr rules"), "{s}");
        let mut md = String::new();
        r.markdown(&mut md, "##");
        assert!(md.contains("head + 100 addr rules"), "{md}");
        assert!(md.contains("Checks of this run passed"), "{md}");
        assert!(md.contains("| bpfilter-cast | 1 | 500,000 | 500k/s | 0 | 0/s | 1000 | 100,000 / 0 / 400,000 | 500 | 99,000 |"), "{md}");
        crate::report::assert_even_tables(&s);
        crate::report::assert_even_tables(&md);
    }

    #[test]
    fn a_growing_established_cost_is_reported() {
        let r = report(|b, s, n| {
            let v = costs(b, s, n);
            if b == CAST && s == Shape::HeadEst {
                v + n as f64
            } else {
                v
            }
        });
        let mut s = String::new();
        r.readme(&mut s, "###");
        assert!(
            s.contains(
                "bpfilter-cast: ESTABLISHED traffic, accepted by rule 1, costs +1,000 ns more"
            ),
            "{s}"
        );
        assert!(!s.contains("iptables-legacy: ESTABLISHED"), "{s}");
    }

    #[test]
    fn paused_log_samples_are_left_out() {
        let mut r = report(costs);
        // LOG was paused for the first 3 samples: no packets, NaN there.
        for c in r.configs.iter_mut().filter(|c| c.shape == Shape::Log) {
            for v in c.r.added.iter_mut().take(3) {
                *v = f64::NAN;
            }
        }
        r.log_paused = (0..9).map(|i| i < 3).collect();
        let d = r.diff(CAST, Shape::Log, 0, Shape::Count, 0).expect("log");
        assert_eq!((d.median, d.q1, d.q3), (50.0, 50.0, 50.0));
        let mut all = String::new();
        r.markdown(&mut all, "##");
        assert!(
            all.contains("that happened during 3 of the 9 samples"),
            "{all}"
        );
        // Samples 3..9 only: 80 + 60 + swing 3..8, median 145.5.
        assert!(
            all.contains("| `--dport 5001 -j LOG` + ACCEPT | bpfilter-cast | +146 |"),
            "{all}"
        );
    }

    #[test]
    fn log_never_sent_is_said() {
        let mut r = report(costs);
        for c in r.configs.iter_mut().filter(|c| c.shape == Shape::Log) {
            c.r.added.iter_mut().for_each(|v| *v = f64::NAN);
        }
        r.log_paused = vec![true; 9];
        let mut s = String::new();
        r.readme(&mut s, "###");
        assert!(s.contains("LOG not measured in this run"), "{s}");
        assert!(
            s.contains("| LOG rule traversed: over the same rule without `-j LOG` | - | - |"),
            "{s}"
        );
    }

    #[test]
    fn samples_touched_by_the_sysctl() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let ends = [ms(3000), ms(3500), ms(4000), ms(4500), ms(6000)];
        // Seen at 1 at 3.2 s: in sample 1 (3.0-3.5 s), and within the second before samples
        // 2 and 3; not sample 4 (4.5-6.0 s).
        let on = [ms(3200)];
        assert_eq!(
            samples_touched(&ends, &on, t0, Duration::from_millis(500)),
            vec![false, true, true, true, false]
        );
        // The first sample starts two sample lengths before its end at the latest.
        let on = [ms(1600)];
        assert_eq!(
            samples_touched(&ends, &on, t0, Duration::from_millis(500)),
            vec![true, false, false, false, false]
        );
        assert!(samples_touched(&ends, &[], t0, Duration::from_millis(500))
            .iter()
            .all(|x| !x));
    }

    #[test]
    fn iwi_line() {
        let s = "           CPU0       CPU1\n  0:   12   0   IO-APIC   2-edge      timer\n\
                 IWI:        105         17   IRQ work interrupts\n";
        assert_eq!(parse_iwi(s), Some(122));
        assert_eq!(parse_iwi("NMI: 1 2 Non-maskable\n"), None);
    }

    #[test]
    fn proc_stat_cpu_of_this_process() {
        assert!(process_cpu(std::process::id()).is_some());
        assert!(process_cpu(u32::MAX).is_none());
    }
}
