//! `netbench`: per-packet cost (against rule count) and control-plane times of no firewall,
//! iptables-legacy, nftables and bpfilter, measured interleaved in one run, then the same for
//! IPv6 (ip6tables-legacy, nftables `ip6`, bpfilter's ip6tables) in a second pass. Writes
//! `RESULTS.md` and `plot.svg`. Needs root (namespaces, iptables, nft, BPF).

use std::net::UdpSocket;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;

use netbench::backend::{self, Backend, Daemon, StartError, Tools};
use netbench::netns::{self, Pairs, Snmp};
use netbench::report::{ConfigResult, Report};
use netbench::ruleset::{self, Family, RuleKind, DPORT};
use netbench::sender::{self, Plan};
use netbench::{bpf, features, progs, stats};

/// Interleaved per-packet cost of firewalls against rule count, plus control-plane times.
#[derive(Debug, Parser)]
#[command(name = "netbench")]
struct Args {
    /// Development run: N in {0, 100, 1000}, 20 samples.
    #[arg(long)]
    quick: bool,
    /// Rule counts (comma separated); default 0,10,100,1000,10000,50000.
    #[arg(long, value_delimiter = ',')]
    counts: Option<Vec<usize>>,
    /// Kept samples (each one covers every configuration); default 90 (quick: 20).
    #[arg(long)]
    samples: Option<usize>,
    /// Samples thrown away first.
    #[arg(long, default_value_t = 4)]
    warmup: usize,
    /// Sample length in ms.
    #[arg(long, default_value_t = 500)]
    sample_ms: u64,
    /// Minimum time per visit in us (the method asks for at least 300; 1000 gives the small
    /// configurations more packets per sample when large ones make rounds long).
    #[arg(long, default_value_t = 1000)]
    visit_us: u64,
    /// Minimum sending time per configuration per round in us: configurations under it are
    /// visited again (in a new shuffled order) before the round ends.
    #[arg(long, default_value_t = 3000)]
    round_min_us: u64,
    /// Packets per sendmmsg batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Backends to compare with no firewall (comma separated): iptables-legacy, nftables,
    /// bpfilter (one configuration per --bpfilter-access strategy), bpfilter-cast,
    /// bpfilter-dynptr, bpfilter-auto (one strategy each).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "iptables-legacy,nftables,bpfilter"
    )]
    backends: Vec<String>,
    /// Packet-access strategies `bpfilter` in --backends stands for (comma separated): cast,
    /// dynptr, auto (the daemon's own choice). Each gets its own private daemon started with
    /// `--packet-access` it, its own socket and bpffs folder; a strategy the kernel refuses
    /// is reported as refused.
    #[arg(long, value_delimiter = ',', default_value = "cast,dynptr")]
    bpfilter_access: Vec<String>,
    /// Rule kinds (comma separated): addr, port (the two the performance targets are set
    /// for), mixed (address, mask and port changing: no two neighbours of the same shape),
    /// arbitrary (masks, negations, ranges, protocols and interfaces: five shapes in turn).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "addr,port,mixed,arbitrary"
    )]
    kinds: Vec<String>,
    /// Fail instead of skipping bpfilter when its binary is missing or no strategy's daemon
    /// starts (a strategy the kernel refuses while another runs is reported, not an error).
    #[arg(long)]
    require_bpfilter: bool,
    /// Folder of the `bpfilter` binary (default: the workspace's target/release).
    #[arg(long, env = "BPFILTER_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Where RESULTS.md and plot.svg go (default: benches/netbench of the workspace).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the results only; write no file.
    #[arg(long)]
    no_write: bool,
    /// Also rewrite the part of this file between `<!-- netbench:begin -->` and
    /// `<!-- netbench:end -->` with the summary (the README's Performance section).
    #[arg(long)]
    readme: Option<PathBuf>,
    /// Time budget of the whole run in seconds: configurations whose setup would start after
    /// the budget minus the measurement time are skipped, and loads running then are stopped.
    #[arg(long, default_value_t = 540)]
    budget_s: u64,
    /// Extra line for the notes of RESULTS.md (repeatable), e.g. which commit was measured.
    #[arg(long)]
    note: Vec<String>,
    /// Leave out the BPF floor configuration (an attached `r0 = 1; exit` program).
    #[arg(long)]
    no_floor: bool,
    /// Leave out the second run: connection state (`-m conntrack`, `-m state`), LOG and
    /// REJECT against iptables-legacy, and REJECT's replies per second.
    #[arg(long)]
    no_features: bool,
    /// Leave out single commands on a small table.
    #[arg(long)]
    no_commands: bool,
    /// Rounds of single commands (runs of each command per backend).
    #[arg(long, default_value_t = 21)]
    command_rounds: usize,
    /// Rule counts after the conntrack head and of the state rules in the second run (comma
    /// separated); default 0,100,1000 (quick: 0,100).
    #[arg(long, value_delimiter = ',')]
    feature_counts: Option<Vec<usize>>,
    /// Filler rules after the conntrack head in the second run: addr, port or mixed.
    #[arg(long, default_value = "addr")]
    feature_kind: String,
    /// Length of each REJECT reply-rate window (tcp-reset) in ms.
    #[arg(long, default_value_t = 1000)]
    reply_ms: u64,
    /// Reply-rate windows per backend.
    #[arg(long, default_value_t = 3)]
    reply_rounds: usize,
    /// IP versions to measure (comma separated): ipv4 (the main run, the connection-state
    /// run and single commands), ipv6 (a second pass after them: ip6tables-legacy, nftables
    /// `ip6` and bpfilter's ip6tables, same backends and kinds, UDP to port 5001 of
    /// fd00:200::2). `--family ipv6` alone runs only the IPv6 pass (RESULTS-ipv6.md).
    #[arg(long, value_delimiter = ',', default_value = "ipv4,ipv6")]
    family: Vec<String>,
    /// Rule counts of the IPv6 pass (comma separated); default 0,10,100,1000 (quick:
    /// 0,100,1000): it has to fit in about two minutes.
    #[arg(long, value_delimiter = ',')]
    ipv6_counts: Option<Vec<usize>>,
    /// Kept samples of the IPv6 pass; default 40 (quick: 20).
    #[arg(long)]
    ipv6_samples: Option<usize>,
    /// Time budget of the IPv6 pass in seconds, on top of --budget-s (setups that would
    /// start after it minus the measurement time are skipped).
    #[arg(long, default_value_t = 150)]
    ipv6_budget_s: u64,
}

/// A configuration ready to be measured.
struct Live {
    /// Index into the results.
    idx: usize,
    /// Firewall namespace name.
    firewall: String,
    /// Connected sending socket (opened in the sender namespace).
    tx: UdpSocket,
    /// Bound, never read, receiving socket (opened in the firewall namespace).
    _rx: UdpSocket,
    /// Firewall namespace counters.
    snmp: Snmp,
    /// InReceives before sending.
    in0: u64,
    /// bpfltr_* programs of this configuration alive after the appends (id, name).
    bpf_live: Vec<(u32, String)>,
    /// Program and link of the BPF floor configuration (closing them detaches it).
    _floor: Option<(OwnedFd, OwnedFd)>,
}

impl Args {
    /// The sender's plan for `samples` kept samples (32-byte payloads).
    fn plan(&self, samples: usize) -> Plan {
        Plan {
            batch: self.batch,
            visit: Duration::from_micros(self.visit_us),
            sample: Duration::from_millis(self.sample_ms),
            warmup: self.warmup,
            samples,
            payload: 32,
            round_min: Duration::from_micros(self.round_min_us),
        }
    }
}

fn workspace_root() -> PathBuf {
    // benches/netbench -> workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let t_run = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        bail!("netbench needs root (network namespaces, iptables, nft, BPF)");
    }
    let counts = args.counts.clone().unwrap_or_else(|| {
        if args.quick {
            vec![0, 100, 1000]
        } else {
            vec![0, 10, 100, 1000, 10_000, 50_000]
        }
    });
    if let Some(n) = counts.iter().find(|n| **n > ruleset::MAX_RULES) {
        bail!("rule count {n} above {}", ruleset::MAX_RULES);
    }
    let samples = args.samples.unwrap_or(if args.quick { 20 } else { 90 });
    let backends = backend::parse_backends(&args.backends, &args.bpfilter_access)?;
    let mut kinds = Vec::new();
    for k in &args.kinds {
        match RuleKind::from_name(k) {
            Some(k) if !kinds.contains(&k) => kinds.push(k),
            Some(_) => {}
            None => bail!("unknown rule kind {k:?}"),
        }
    }
    let feature_counts = args.feature_counts.clone().unwrap_or_else(|| {
        if args.quick {
            vec![0, 100]
        } else {
            vec![0, 100, 1000]
        }
    });
    if let Some(n) = feature_counts.iter().find(|n| **n > ruleset::MAX_RULES) {
        bail!("feature rule count {n} above {}", ruleset::MAX_RULES);
    }
    let Some(feature_kind) = RuleKind::from_name(&args.feature_kind) else {
        bail!("unknown rule kind {:?}", args.feature_kind);
    };
    let mut families = Vec::new();
    for f in &args.family {
        match Family::from_name(f) {
            Some(f) if !families.contains(&f) => families.push(f),
            Some(_) => {}
            None => bail!("unknown family {f:?} (ipv4 or ipv6)"),
        }
    }
    let (do4, do6) = (
        families.contains(&Family::Ipv4),
        families.contains(&Family::Ipv6),
    );
    if !do4 && !do6 {
        bail!("--family lists no IP version");
    }
    let counts6 = args.ipv6_counts.clone().unwrap_or_else(|| {
        if args.quick {
            vec![0, 100, 1000]
        } else {
            vec![0, 10, 100, 1000]
        }
    });
    if let Some(n) = counts6.iter().find(|n| **n > ruleset::MAX_RULES) {
        bail!("IPv6 rule count {n} above {}", ruleset::MAX_RULES);
    }
    let samples6 = args
        .ipv6_samples
        .unwrap_or(if args.quick { 20 } else { 40 });
    let root = workspace_root();
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| root.join("target/release"));
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("benches/netbench"));
    // The second run: its setups (about half a second each), then its measurement, reply
    // windows and teardown (`features_tail`), all after the first run.
    let sample_time =
        |n: usize| Duration::from_millis((args.warmup + n) as u64 * args.sample_ms * 3 / 2);
    let (features_setup, features_tail) = if args.no_features {
        (Duration::ZERO, Duration::ZERO)
    } else {
        let n_backends = backends
            .iter()
            .filter(|b| **b == Backend::Legacy || b.is_bpfilter())
            .count();
        let configs = 2 + n_backends * (5 * feature_counts.len() + 5);
        (
            Duration::from_millis(configs as u64 * 500),
            sample_time(samples)
                + Duration::from_millis(
                    (n_backends * args.reply_rounds) as u64 * (args.reply_ms + 1500),
                )
                + Duration::from_secs(20),
        )
    };
    let pid = std::process::id();
    let work = std::env::temp_dir().join(format!("netbench-{pid}"));
    std::fs::create_dir_all(&work).with_context(|| format!("mkdir {}", work.display()))?;
    let tools = Tools {
        bpfilter: bin_dir.join("bpfilter"),
        run_id: pid,
        xtables_lock: work.join("xtables.lock"),
        family: Family::Ipv4,
        // Leave time for the measurement (samples may run up to 1.5 times their length when
        // rounds are long), the checks and the teardown.
        deadline: Some(
            t_run + Duration::from_secs(args.budget_s)
                - (sample_time(samples) + Duration::from_secs(40) + features_setup + features_tail)
                    .min(Duration::from_secs(args.budget_s)),
        ),
    };
    let mut notes = vec![format!(
        "{} UTC, kernel {}, {} CPUs; {}.",
        utc_now(),
        uname_r(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        tool_versions()
    )];

    notes.extend(args.note.iter().cloned());
    let stale = netns::remove_stale();
    if stale > 0 {
        eprintln!("netbench: removed {stale} stale namespaces");
    }
    remove_stale_bpffs();

    // The benchmark's own bpfilter daemons: one per packet-access strategy, each with a
    // private socket and bpffs folder (its log is kept after the run, for a look at why a
    // load was refused).
    let mut daemons: Vec<Daemon> = Vec::new();
    let mut refused: Vec<(Backend, String)> = Vec::new();
    let mut missing: Option<String> = None;
    let mut measured = backends.clone();
    for &b in &backends {
        let Some(a) = b.access() else { continue };
        if let Some(why) = &missing {
            measured.retain(|m| *m != b);
            eprintln!("netbench: {} skipped: {why}", b.name());
            notes.push(format!("{} not measured: {why}", b.name()));
            continue;
        }
        match Daemon::start(&tools.bpfilter, a, &tools.daemon(a)) {
            Ok(d) => {
                eprintln!(
                    "netbench: {} daemon ready (--packet-access {}: compiles with {}; auto \
                     would pick {})",
                    b.name(),
                    a.name(),
                    d.strategy.as_deref().unwrap_or("?"),
                    d.auto_choice.as_deref().unwrap_or("?")
                );
                daemons.push(d);
            }
            Err(StartError::Refused(why)) => {
                eprintln!("netbench: {}: {why}", b.name());
                measured.retain(|m| *m != b);
                refused.push((b, why));
            }
            Err(StartError::Other(e)) => {
                if args.require_bpfilter {
                    return Err(e.context("bpfilter required"));
                }
                eprintln!("netbench: {} skipped: {e:#}", b.name());
                measured.retain(|m| *m != b);
                notes.push(format!("{} not measured: {e:#}", b.name()));
                missing = Some(format!("{e:#}"));
            }
        }
    }
    if args.require_bpfilter && backends.iter().any(|b| b.is_bpfilter()) && daemons.is_empty() {
        for d in daemons {
            d.stop(&tools.bpfilter);
        }
        bail!("bpfilter required, but no strategy's daemon started");
    }
    if !daemons.is_empty() {
        let each: Vec<String> = daemons
            .iter()
            .map(|d| {
                format!(
                    "{} (`--packet-access {}`, its log says `strategy={}`)",
                    Backend::Bpfilter(d.access).name(),
                    d.access.name(),
                    d.strategy.as_deref().unwrap_or("?")
                )
            })
            .collect();
        let auto = daemons
            .iter()
            .find_map(|d| d.auto_choice.clone())
            .unwrap_or_else(|| "?".into());
        notes.push(format!(
            "bpfilter daemons: {}; on this kernel `--packet-access auto` picks {auto} (the \
             daemon's probe report).",
            each.join(", ")
        ));
    }

    let mut result = if do4 {
        run(
            &args,
            &tools,
            &counts,
            samples,
            &measured,
            &kinds,
            &work,
            notes.clone(),
            t_run,
        )
    } else {
        Err(anyhow::anyhow!("IPv4 left out (--family)"))
    };
    if let (Ok(report), false) = (&mut result, args.no_features) {
        let opts = features::Options {
            counts: feature_counts,
            kind: feature_kind,
            plan: args.plan(samples),
            reply_time: Duration::from_millis(args.reply_ms),
            reply_rounds: args.reply_rounds,
        };
        // Its own setups stop where its measurement, reply windows and teardown still fit
        // the budget.
        let tools2 = Tools {
            deadline: Some(
                t_run + Duration::from_secs(args.budget_s)
                    - features_tail.min(Duration::from_secs(args.budget_s)),
            ),
            ..tools.clone()
        };
        let pids: Vec<(backend::Access, u32)> =
            daemons.iter().map(|d| (d.access, d.pid())).collect();
        match features::run(&opts, &tools2, &measured, &pids, &work) {
            Ok(f) => report.features = Some(f),
            Err(e) => {
                eprintln!("netbench: connection state, LOG, REJECT: {e:#}");
                report.notes.push(format!(
                    "Connection state, LOG and REJECT not measured: {e:#}"
                ));
            }
        }
    }
    if let (Ok(report), false) = (&mut result, args.no_commands) {
        match netbench::commands::run(&tools, &measured, args.command_rounds, &work) {
            Ok(c) => report.commands = Some(c),
            Err(e) => {
                eprintln!("netbench: single commands: {e:#}");
                report
                    .notes
                    .push(format!("Single commands not measured: {e:#}"));
            }
        }
    }
    if do6 {
        // The IPv6 pass: the same daemons (they serve ip6tables too), its own namespaces and
        // time budget, measured interleaved on its own (its reference is an IPv6 no-firewall
        // configuration of the same samples).
        let t6 = Instant::now();
        let tools6 = Tools {
            family: Family::Ipv6,
            deadline: Some(
                t6 + Duration::from_secs(args.ipv6_budget_s)
                    - (sample_time(samples6) + Duration::from_secs(40))
                        .min(Duration::from_secs(args.ipv6_budget_s)),
            ),
            ..tools.clone()
        };
        eprintln!("netbench: IPv6 pass");
        let notes6 = if do4 { Vec::new() } else { notes };
        let r6 = run(
            &args, &tools6, &counts6, samples6, &measured, &kinds, &work, notes6, t6,
        );
        eprintln!(
            "netbench: IPv6 pass took {:.0} s",
            t6.elapsed().as_secs_f64()
        );
        result = match (result, r6) {
            (Ok(mut r), Ok(r6)) => {
                r.ipv6 = Some(Box::new(r6));
                Ok(r)
            }
            (Ok(mut r), Err(e)) => {
                eprintln!("netbench: IPv6 pass: {e:#}");
                r.notes.push(format!("IPv6 not measured: {e:#}"));
                Ok(r)
            }
            (Err(_), r6) if !do4 => r6,
            (Err(e), _) => Err(e),
        };
    }
    for d in daemons {
        d.stop(&tools.bpfilter);
    }
    let _ = std::fs::remove_dir_all(&work);
    let mut report = result?;
    report.elapsed = t_run.elapsed();
    // Every backend asked for is in the tables, the refused ones as refused.
    report.backends = backends
        .iter()
        .copied()
        .filter(|b| measured.contains(b) || refused.iter().any(|(r, _)| r == b))
        .collect();
    report.refused = refused;
    if let Some(r6) = &mut report.ipv6 {
        r6.backends = report.backends.clone();
        r6.refused = report.refused.clone();
    }
    for b in report.bpfilters() {
        let ipv6 = report.ipv6.iter().flat_map(|r| r.configs.iter());
        if !report
            .configs
            .iter()
            .chain(ipv6)
            .any(|c| c.backend == b && c.error.is_some())
        {
            continue;
        }
        let log_path = b.access().map(|a| tools.daemon(a).log).unwrap_or_default();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(8).collect();
        eprintln!(
            "netbench: some {} loads failed; end of {}:",
            b.name(),
            log_path.display()
        );
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    let md = report.markdown();
    println!("{md}");
    if !args.no_write {
        std::fs::create_dir_all(&out_dir)?;
        // An IPv6-only run leaves the full run's files (both passes) alone.
        let (mdp, svgp) = if do4 {
            (out_dir.join("RESULTS.md"), out_dir.join("plot.svg"))
        } else {
            (
                out_dir.join("RESULTS-ipv6.md"),
                out_dir.join("plot-ipv6.svg"),
            )
        };
        std::fs::write(&mdp, &md).with_context(|| format!("write {}", mdp.display()))?;
        std::fs::write(&svgp, report.svg()).with_context(|| format!("write {}", svgp.display()))?;
        if let (Some(readme), false) = (&args.readme, do4) {
            eprintln!(
                "netbench: {} not updated: its section holds both passes, and this run measured \
                 IPv6 only",
                readme.display()
            );
        } else if let Some(readme) = &args.readme {
            // The results are written already; a README without the markers only warns.
            match update_readme(readme, &out_dir, &report) {
                Ok(()) => eprintln!("netbench: updated {}", readme.display()),
                Err(e) => eprintln!("netbench: warning: README not updated: {e:#}"),
            }
        }
        eprintln!(
            "netbench: wrote {} and {} in {:.0} s",
            mdp.display(),
            svgp.display(),
            report.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
fn run(
    args: &Args,
    tools: &Tools,
    counts: &[usize],
    samples: usize,
    backends: &[Backend],
    kinds: &[RuleKind],
    work: &Path,
    notes: Vec<String>,
    t_run: Instant,
) -> Result<Report> {
    let mut results = vec![ConfigResult::new(Backend::None, None, 0)];
    if !args.no_floor {
        results.push(ConfigResult::new(Backend::BpfFloor, None, 0));
    }
    // Small rulesets first: if the time budget runs out, what is left out is the largest
    // (and slowest to load) configurations, not a whole backend.
    let mut sorted_counts = counts.to_vec();
    sorted_counts.sort_unstable();
    for &n in &sorted_counts {
        for &k in kinds {
            for &b in backends {
                results.push(ConfigResult::new(b, Some(k), n));
            }
        }
    }
    let mut nss = Pairs::default();
    let mut live: Vec<Live> = Vec::new();
    eprintln!("netbench: setting up {} configurations", results.len());
    for (idx, r) in results.iter_mut().enumerate() {
        let (b, k, n) = (r.backend, r.kind, r.n);
        // IPv6 configurations are named apart (`v6-...`), so that they can never meet an
        // IPv4 namespace of the same run.
        let tag = format!(
            "{}{}-{}-{n}",
            if tools.family == Family::Ipv6 {
                "v6-"
            } else {
                ""
            },
            b.tag(),
            k.map(|k| k.name()).unwrap_or("ref")
        );
        let t0 = Instant::now();
        if tools.deadline.is_some_and(|d| Instant::now() >= d) && b != Backend::None {
            eprintln!("netbench: {tag}: skipped (time budget)");
            r.error = Some("skipped: the run's time budget (--budget-s) was used up".into());
            continue;
        }
        match setup(tools, &tag, b, k, n, work, &mut nss, r) {
            Ok(l) => live.push(Live { idx, ..l }),
            Err(e) => {
                eprintln!("netbench: {tag}: {e:#}");
                if b == Backend::None {
                    return Err(e.context("the no-firewall reference could not be set up"));
                }
                r.error = Some(format!("{e:#}"));
            }
        }
        eprintln!(
            "netbench: {tag}: ready in {:.2} s (load {} ms, append {} ms)",
            t0.elapsed().as_secs_f64(),
            r.restore
                .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
                .unwrap_or("-".into()),
            r.append
                .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
                .unwrap_or("-".into()),
        );
    }

    let plan = args.plan(samples);
    for l in &mut live {
        l.in0 = l.snmp.in_receives()?;
    }
    eprintln!(
        "netbench: measuring {} configurations, {} samples of {} ms (setup took {:.0} s)",
        live.len(),
        samples,
        args.sample_ms,
        t_run.elapsed().as_secs_f64()
    );
    let socks: Vec<UdpSocket> = live
        .iter()
        .map(|l| l.tx.try_clone())
        .collect::<std::io::Result<_>>()?;
    let m = sender::measure(&socks, &plan, |done, total| {
        if done % 10 == 0 || done == total {
            eprintln!("netbench: sample {done}/{total}");
        }
    })?;
    drop(socks);
    eprintln!(
        "netbench: checking counters ({:.0} s)",
        t_run.elapsed().as_secs_f64()
    );

    // Checks: every packet reached the firewall namespace and crossed every rule.
    for (c, l) in live.iter_mut().enumerate() {
        let r = &mut results[l.idx];
        let got = l.snmp.in_receives()?.saturating_sub(l.in0);
        if got != m.sent[c] {
            r.check_failures
                .push(format!("Ip InReceives {got} != sent {}", m.sent[c]));
        }
        if r.kind.is_some() {
            match tools.final_counter(r.backend, &l.firewall, r.n) {
                Ok(p) if p == m.sent[c] => {}
                Ok(p) => r
                    .check_failures
                    .push(format!("final rule counter {p} != sent {}", m.sent[c])),
                Err(e) => r
                    .check_failures
                    .push(format!("final rule counter unreadable: {e:#}")),
            }
        }
    }
    // Test runs count on the rules' counters too, so they come after the counter checks.
    let pkt = bpf::test_packet_of(tools.family);
    for l in &live {
        for (id, name) in &l.bpf_live {
            match test_run(tools.family, *id, &pkt) {
                Ok(t) => results[l.idx]
                    .test_runs
                    .push((name.clone(), t.ns, t.retval)),
                Err(e) => eprintln!("netbench: test run of program {id} ({name}): {e:#}"),
            }
        }
    }
    let ref_pos = live
        .iter()
        .position(|l| results[l.idx].backend == Backend::None)
        .context("no reference")?;
    for (c, l) in live.iter().enumerate() {
        let r = &mut results[l.idx];
        for s in &m.samples {
            r.cpu.push(s[c].cpu_per_pkt());
            r.wall.push(s[c].wall_per_pkt());
            r.added.push(s[c].cpu_per_pkt() - s[ref_pos].cpu_per_pkt());
        }
    }
    let wall_vs_cpu: Vec<f64> = results
        .iter()
        .filter(|r| !r.cpu.is_empty())
        .map(|r| stats::median(&r.wall) / stats::median(&r.cpu))
        .collect();
    let mut notes = notes;
    notes.push(format!(
        "Traffic: UDP {} -> {}, 32-byte payload, sendmmsg batches of {}, >= {} us per visit; \
         wall time / sender CPU time per packet: median {:.3} over configurations (max {:.3}: \
         time off the CPU while other work ran counts in wall time only).",
        tools.family.src(),
        std::net::SocketAddr::new(tools.family.dst(), DPORT),
        args.batch,
        args.visit_us,
        stats::median(&wall_vs_cpu),
        wall_vs_cpu.iter().copied().fold(0.0, f64::max),
    ));
    drop(live);
    eprintln!(
        "netbench: tearing down ({:.0} s)",
        t_run.elapsed().as_secs_f64()
    );
    drop(nss);
    eprintln!(
        "netbench: torn down ({:.0} s)",
        t_run.elapsed().as_secs_f64()
    );
    let argv: Vec<String> = std::env::args().skip(1).collect();
    Ok(Report {
        configs: results,
        counts: counts.to_vec(),
        backends: backends.to_vec(),
        refused: Vec::new(),
        kinds: kinds.to_vec(),
        samples,
        sample_len: plan.sample,
        rounds: m.rounds,
        command: argv.join(" "),
        notes,
        elapsed: t_run.elapsed(),
        features: None,
        commands: None,
        family: tools.family,
        ipv6: None,
    })
}

/// Create one configuration: namespaces, sockets, ruleset (timed), one appended rule (timed).
#[allow(clippy::too_many_arguments)] // one call site
fn setup(
    tools: &Tools,
    tag: &str,
    b: Backend,
    k: Option<RuleKind>,
    n: usize,
    work: &Path,
    nss: &mut Pairs,
    r: &mut ConfigResult,
) -> Result<Live> {
    let fam = tools.family;
    let (pair, tx, rx) = nss.create_family(tag, fam)?;
    let snmp = Snmp::open_family(&pair.firewall, fam)?;
    let mut bpf_live = Vec::new();
    let mut floor = None;
    if b == Backend::BpfFloor {
        let prog = bpf::load_netfilter_accept("nbench_floor")?;
        let prog2 = prog.try_clone()?;
        // NFPROTO_IPV4 (IPV6), NF_INET_LOCAL_IN, a priority nothing else in the namespace uses.
        let pf = fam.nfproto();
        let link = netns::in_netns(&pair.firewall, move || {
            bpf::link_netfilter(&prog2, pf, 1, 1)
        })?;
        floor = Some((prog, link));
    }
    if let Some(k) = k {
        let rules = ruleset::rules_of(fam, k, n);
        let file = match b {
            Backend::Nft => {
                let p = work.join(format!("{}-{}-{n}.nft", fam.name(), k.name()));
                if !p.exists() {
                    std::fs::write(&p, ruleset::nft_file(tools.family, &rules))?;
                }
                p
            }
            _ => {
                let p = work.join(format!("{}-{}-{n}.save", fam.name(), k.name()));
                if !p.exists() {
                    std::fs::write(&p, ruleset::iptables_save(&rules))?;
                }
                p
            }
        };
        let before = if b.is_bpfilter() {
            progs::list("bpfltr_")?
        } else {
            Vec::new()
        };
        r.restore = Some(tools.restore(b, &pair.firewall, &file)?);
        // This namespace's programs: those pinned in its folder of the daemon's bpffs root;
        // else (another pin layout) the bpfltr_* programs that appeared during the load.
        let ns_pins = b.access().and_then(|a| {
            netns_inode(&pair.firewall).map(|ino| tools.daemon(a).bpffs.join(format!("net{ino}")))
        });
        let ours = |before: &[progs::ProgInfo]| -> Result<Vec<progs::ProgInfo>> {
            match ns_pins.as_deref().filter(|d| d.is_dir()) {
                Some(d) => progs::pinned(d),
                None => {
                    let mut p = progs::new_since(before, &progs::list("bpfltr_")?);
                    progs::add_verified(&mut p);
                    Ok(p)
                }
            }
        };
        if let Some(a) = b.access() {
            r.progs = ours(&before)?;
            match tools.bpfilter_status(a, &pair.firewall) {
                Ok(st) => {
                    r.verifier_ms = backend::parse_status_load_ms(&st)
                        .into_iter()
                        .find(|(h, _)| h == "INPUT")
                        .map(|(_, ms)| ms)
                }
                Err(e) => eprintln!("netbench: {tag}: bpfilter status: {e:#}"),
            }
        }
        // Three appends give a median; one when a load is slow, to keep the run short.
        let appends = if r.restore.is_some_and(|d| d > Duration::from_secs(2)) {
            1
        } else {
            3
        };
        let mut t = Vec::new();
        for _ in 0..appends {
            t.push(
                tools
                    .append(b, &pair.firewall, &ruleset::appended_rule_of(fam))?
                    .as_secs_f64(),
            );
        }
        r.append = Some(Duration::from_secs_f64(stats::median(&t)));
        if b.is_bpfilter() {
            let live = ours(&before)?;
            // The INPUT path (its dispatcher and program) is what the packets take; all
            // programs if the names do not say.
            let input: Vec<_> = live
                .iter()
                .filter(|p| p.name.ends_with("_in"))
                .cloned()
                .collect();
            bpf_live = if input.is_empty() { live } else { input }
                .into_iter()
                .map(|p| (p.id, p.name))
                .collect();
        }
    }
    Ok(Live {
        idx: 0,
        firewall: pair.firewall.clone(),
        tx,
        _rx: rx,
        snmp,
        in0: 0,
        bpf_live,
        _floor: floor,
    })
}

/// Replace the marked section of `readme` with the run's summary.
fn update_readme(readme: &Path, out_dir: &Path, report: &Report) -> Result<()> {
    const BEGIN: &str = "<!-- netbench:begin -->";
    const END: &str = "<!-- netbench:end -->";
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("read {}", readme.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no `{BEGIN}` ... `{END}` section", readme.display());
    };
    if e < b {
        bail!("{}: `{END}` comes before `{BEGIN}`", readme.display());
    }
    // `README.md` has the empty parent: the current folder.
    let base = readme
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = base.canonicalize().unwrap_or(base);
    let out = out_dir
        .canonicalize()
        .unwrap_or_else(|_| out_dir.to_path_buf());
    let rel = out
        .strip_prefix(&base)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| out.display().to_string());
    let new = format!(
        "{}{BEGIN}\n{}{}",
        &text[..b],
        report.readme_section(&rel),
        &text[e..]
    );
    std::fs::write(readme, new).with_context(|| format!("write {}", readme.display()))
}

/// Inode of a named network namespace (what the daemon names its pin folders after).
fn netns_inode(ns: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/run/netns/{ns}"))
        .ok()
        .map(|m| m.ino())
}

/// Unpin what a killed run's daemon left under /sys/fs/bpf/netbench-<pid>.
fn remove_stale_bpffs() {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if netns::owner_pid(&name, "netbench-").is_some_and(|p| !netns::pid_alive(p)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// BPF_PROG_TEST_RUN of program `id` at LOCAL_IN, repeated for about 50 ms.
fn test_run(f: Family, id: u32, pkt: &[u8]) -> Result<bpf::TestRun> {
    let fd = bpf::prog_fd_by_id(id)?;
    let probe = bpf::test_run_local_in_of(f, &fd, pkt, 100)?;
    let repeat = (50_000_000 / u64::from(probe.ns.max(1))).clamp(1_000, 1_000_000) as u32;
    bpf::test_run_local_in_of(f, &fd, pkt, repeat)
}

fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn tool_versions() -> String {
    let v = |prog: &str, arg: &str| {
        std::process::Command::new(prog)
            .arg(arg)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    format!(
        "{}, {}",
        v("iptables-legacy", "--version"),
        v("nft", "--version")
    )
}
