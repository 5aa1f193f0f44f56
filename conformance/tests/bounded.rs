//! The bounded conformance run of `make test`, and the harness's self-checks.
//!
//! Needs root, network namespaces and BPF. Without them (or without the bpfilter binaries in
//! `target/release`, or `$BPFILTER_BIN_DIR`) the tests fail when `CI=true` and skip otherwise.

use conformance::{backend, Candidate, Config};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Ok(true) when the privileged tests can run; panics under CI when they cannot.
fn can_run() -> bool {
    match conformance::preflight() {
        Ok(()) => true,
        Err(e) if ci() => panic!("conformance tests cannot run under CI: {e:#}"),
        Err(e) => {
            eprintln!("skipping conformance test: {e:#}");
            false
        }
    }
}

#[test]
fn bounded_run_kernel_vs_bpfilter() {
    if !can_run() {
        return;
    }
    let bin = backend::bin_dir();
    if let Err(e) = backend::check_binaries(&bin) {
        if ci() {
            panic!("{e:#}");
        }
        eprintln!("skipping bpfilter conformance: {e:#}");
        return;
    }
    let cfg = Config {
        verbose: false,
        ..Config::bounded()
    };
    let t0 = std::time::Instant::now();
    let summary = conformance::run(&cfg).expect("conformance run");
    print!("{}", summary.table());
    for c in summary.cases.iter().filter(|c| !c.identical) {
        println!("---- {}:\n{}", c.name, c.detail.as_deref().unwrap_or(""));
        if let Some((rules, pkts)) = &c.repro {
            println!("minimal reproduction:\n{rules}{pkts}");
        }
    }
    assert!(
        summary.count("hand") >= 40,
        "fewer than 40 hand-written rulesets"
    );
    assert_eq!(summary.mismatches(), 0, "{}", summary.summary_line());
    assert!(
        t0.elapsed().as_secs() < 240,
        "bounded run too slow: {:?}",
        t0.elapsed()
    );
}

#[test]
fn kernel_against_itself_is_identical() {
    if !can_run() {
        return;
    }
    let cfg = Config {
        candidate: Candidate::Kernel,
        hand_packets: 120,
        random_count: 30,
        random_packets: 120,
        verbose: false,
        ..Config::bounded()
    };
    let summary = conformance::run(&cfg).expect("baseline run");
    print!("{}", summary.table());
    assert!(summary.packets() > 5000);
    assert_eq!(
        summary.mismatches(),
        0,
        "the harness is not deterministic: {}",
        summary.summary_line()
    );
}

#[test]
fn mutation_is_detected_and_minimized() {
    if !can_run() {
        return;
    }
    let cfg = Config {
        candidate: Candidate::KernelMutant,
        hand_packets: 200,
        random_count: 0,
        only: Some("router-basic".into()),
        // `iptables -C` would reveal the mutated rule at once; this test wants it found by
        // counters and packets only.
        check_rules: false,
        max_mismatches: 1,
        verbose: false,
        ..Config::bounded()
    };
    let summary = conformance::run(&cfg).expect("mutant run");
    assert_eq!(summary.cases.len(), 1);
    let case = &summary.cases[0];
    assert!(
        !case.identical,
        "the harness missed an ACCEPT turned into DROP"
    );
    let (rules, pkts) = case.repro.as_ref().expect("a minimized reproduction");
    let rs = conformance::ruleset::Ruleset::parse("min", rules).expect("repro parses");
    let p = conformance::packet::parse_packets(pkts).expect("packets parse");
    assert!(rs.rules.len() <= 1, "not minimal: {rules}");
    assert_eq!(p.len(), 1, "not minimal: {pkts}");
}
