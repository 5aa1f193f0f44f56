//! The bounded conformance run of `make test`, and the harness's self-checks.
//!
//! Needs root, network namespaces and BPF. Without them (or without the bpfilter binaries in
//! `target/release`, or `$BPFILTER_BIN_DIR`) the tests fail when `CI=true` and skip otherwise.

use conformance::packet::{self, IpSpec, Packet, Path};
use conformance::ruleset::Ruleset;
use conformance::{backend, Candidate, Case, Config};
use std::net::Ipv4Addr;

/// True when the privileged tests can run; the one gate (a failure under CI=true) otherwise.
fn can_run() -> bool {
    test_support::gate::ready(conformance::preflight().err().map(|e| format!("{e:#}")))
}

#[test]
fn bounded_run_kernel_vs_bpfilter() {
    if !can_run() {
        return;
    }
    let bin = backend::bin_dir();
    if !test_support::gate::ready(
        backend::check_binaries(&bin)
            .err()
            .map(|e| format!("{e:#}")),
    ) {
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

/// A stateful case built here: `rules` (filter table body) and packets.
fn case(name: &str, rules: &str, packets: Vec<Packet>) -> Case {
    let text = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{rules}COMMIT\n"
    );
    let mut rs = Ruleset::parse(name, &text).expect("ruleset parses");
    rs.stateful = rs.uses_stateful_features();
    assert!(rs.stateful);
    Case {
        ruleset: rs,
        packets,
        kind: "hand",
    }
}

/// A datagram from a neighbour on eth0 to the firewall, transport checksum right.
fn to_firewall(proto: u8, l4: Vec<u8>) -> Packet {
    let mut b = packet::build_ipv4(
        &IpSpec {
            src: Ipv4Addr::new(10, 9, 8, 7),
            dst: Ipv4Addr::new(198, 18, 0, 1),
            proto,
            ttl: 64,
            frag: 0,
            tos: 0,
            options: Vec::new(),
        },
        &l4,
    );
    packet::fix_l4_checksum(&mut b);
    Packet::new(Path::Input, "eth0", b)
}

/// The quiet mutant (REJECT made DROP, LOG silenced) changes no verdict and no rule counter
/// of the rules it touches: only the comparison of the replies the firewall sends and of the
/// LOG lines can catch it, and must.
#[test]
fn quiet_mutation_is_caught_by_replies_and_log_lines() {
    if !can_run() {
        return;
    }
    let syn = to_firewall(6, packet::tcp_segment(40000, 1, 7, 0, 0x02, 512, &[], &[]));
    let mut udp = packet::udp_header(40000, 53, 4);
    udp.extend_from_slice(b"ping");
    let cases = vec![
        case(
            "quiet-reject",
            "-A INPUT -p tcp -m tcp --dport 1 -j REJECT --reject-with tcp-reset\n",
            vec![syn],
        ),
        case(
            "quiet-log",
            "-A INPUT -p udp -j LOG --log-prefix \"quiet \" --log-level 6\n",
            vec![to_firewall(17, udp)],
        ),
    ];
    let cfg = Config {
        candidate: Candidate::KernelMutantQuiet,
        check_rules: false,
        max_mismatches: 0,
        verbose: false,
        ..Config::bounded()
    };
    let summary = conformance::run_with(&cfg, &cases).expect("quiet mutant run");
    print!("{}", summary.table());
    let detail = |name: &str| -> String {
        let c = summary
            .cases
            .iter()
            .find(|c| c.name == name)
            .expect("case ran");
        assert!(
            !c.identical,
            "the harness missed the quiet mutation in {name}"
        );
        c.detail.clone().unwrap_or_default()
    };
    let d = detail("quiet-reject");
    assert!(d.contains("reply only from kernel"), "{d}");
    let d = detail("quiet-log");
    assert!(d.contains("LOG lines differ"), "{d}");
    assert!(
        !d.contains("iptables-save"),
        "a silenced LOG must not change counters: {d}"
    );
    // The same cases against the kernel itself: identical (replies and lines are compared
    // deterministically).
    let summary = conformance::run_with(
        &Config {
            candidate: Candidate::Kernel,
            ..cfg
        },
        &cases,
    )
    .expect("baseline run");
    assert_eq!(summary.mismatches(), 0, "{}", summary.table());
}
