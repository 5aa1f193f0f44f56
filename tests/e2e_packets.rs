//! Real packets through INPUT, FORWARD and OUTPUT: bpfilter must drop and deliver exactly what
//! the kernel's iptables-legacy does, and count exactly as it counts.

mod common;

use bpfilter::sys::{Map, MapType};
use common::{Pair, Tool, Topology};
use test_support::netns::{sh, Netns};

/// The same traffic on both sides: UDP, TCP SYNs and pings into the firewall, through it, and
/// out of it.
fn traffic(fw: &Netns, topo: &Topology) {
    let s = &topo.sender;
    s.sh("for p in 53 54 123 9999; do echo x > /dev/udp/10.9.1.2/$p; done; true");
    s.sh("for p in 53 80 443 8080; do echo hello > /dev/udp/10.9.2.2/$p; done; true");
    s.sh("ping -c2 -i0.2 -W1 10.9.1.2 >/dev/null; ping -c2 -i0.2 -W1 10.9.2.2 >/dev/null; true");
    // one SYN each: the probe's 0.5 s wait ends before the first retransmission (a
    // `timeout 2` around bash, late under load, let a second one out on one side only)
    common::probe(s, &["tcp:10.9.2.2:22", "tcp:10.9.1.2:22"]);
    fw.sh("for p in 53 514 4000; do echo y > /dev/udp/10.9.2.2/$p; done; ping -c1 -W1 10.9.1.1 >/dev/null; true");
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// The same [`traffic`] on both sides of `p` (topologies `t`: kernel, bpfilter): the same
/// listings and counters, at least `rules` rules met (or the ruleset proves nothing), and the
/// same packets delivered through FORWARD and OUTPUT, some of them.
fn judged_alike(p: &Pair, d: &common::Daemon, t: (&Topology, &Topology), rules: usize) {
    let (k, b) = t;
    let before = (k.target.in_receives(), b.target.in_receives());
    traffic(&p.kernel, k);
    traffic(&p.bpf, b);
    p.same_listing(d);
    let save = p.kernel_save();
    let counted = save
        .lines()
        .filter(|l| l.starts_with('[') && !l.starts_with("[0:0]"))
        .count();
    assert!(
        counted >= rules,
        "the traffic must meet several rules, or this test proves nothing:\n{save}"
    );
    let delivered = (
        k.target.in_receives() - before.0,
        b.target.in_receives() - before.1,
    );
    assert_eq!(
        delivered.1, delivered.0,
        "packets delivered through FORWARD and OUTPUT differ"
    );
    assert!(delivered.0 > 0, "some traffic must get through");
}

#[test]
fn packets_are_judged_and_counted_as_the_kernel_does() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let ruleset = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:udpin - [0:0]\n:fwd - [0:0]\n\
        -A INPUT -p udp -j udpin\n\
        -A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT\n\
        -A INPUT -p tcp -m tcp --dport 22 --tcp-flags SYN,RST,ACK SYN -j DROP\n\
        -A udpin -p udp -m udp --dport 53 -j ACCEPT\n\
        -A udpin -p udp -m multiport --dports 100:200,9999 -j DROP\n\
        -A udpin -s 10.9.1.0/24 -j RETURN\n\
        -A FORWARD -i b+ -p udp -m udp --dport 53 -j ACCEPT\n\
        -A FORWARD -p udp -m multiport --dports 80,443 -g fwd\n\
        -A FORWARD -p icmp -j ACCEPT\n\
        -A FORWARD ! -i b+ -j ACCEPT\n\
        -A fwd -m iprange --dst-range 10.9.2.1-10.9.2.9 -j ACCEPT\n\
        -A OUTPUT -o c+ -p udp -m udp --dport 514 -j DROP\n\
        -A OUTPUT -d 10.9.2.2/32 -p udp -j ACCEPT\n\
        COMMIT\n";
    p.same(&d, Tool::Restore, &[], ruleset);
    let (k, b) = p.topologies();
    judged_alike(&p, &d, (&k, &b), 5);
    // A rule change keeps the other counters (SET_ADD_COUNTERS), as in the kernel.
    p.ipt(&d, "-I INPUT 2 -p udp -m udp --dport 123 -j DROP");
    traffic(&p.kernel, &k);
    traffic(&p.bpf, &b);
    p.same_listing(&d);
    p.ipt(&d, "-Z INPUT");
    p.same_listing(&d);
}

#[test]
fn namespaces_are_independent_and_the_host_is_untouched() {
    let Some((d, one)) = common::start_pair() else {
        return;
    };
    let two = Pair::new();
    // Rules only: the host's own traffic may move its counters meanwhile.
    let host_before = sh("iptables-legacy -S 2>&1 || true");
    one.ipt(&d, "-A INPUT -p udp --dport 7 -j DROP");
    two.ipt(&d, "-A OUTPUT -p tcp --dport 9 -j DROP");
    one.same_listing(&d);
    two.same_listing(&d);
    let host_after = sh("iptables-legacy -S 2>&1 || true");
    assert_eq!(
        host_after, host_before,
        "the host's kernel tables are untouched"
    );
}

#[test]
fn kill9_keeps_filtering_and_a_restart_serves_the_same_rules_and_counters() {
    let Some((mut d, p)) = common::start_pair() else {
        return;
    };
    p.same(
        &d,
        Tool::Restore,
        &[],
        "*filter\n-A INPUT -p udp -m udp --dport 53 -j DROP\n-A INPUT -p icmp -j ACCEPT\nCOMMIT\n",
    );
    let (k, b) = p.topologies();
    traffic(&p.kernel, &k);
    traffic(&p.bpf, &b);
    d.kill9();
    // While the daemon is dead, the pinned programs keep filtering and counting.
    traffic(&p.kernel, &k);
    traffic(&p.bpf, &b);
    d.restart();
    p.same_listing(&d);
    p.ipt(&d, "-A INPUT -p udp --dport 54 -j DROP");
    p.same_listing(&d);
}

/// Long chains of rules of mixed shapes (interface patterns of several lengths, inverted or
/// not, prefixes, protocols, port ranges) are classified through trees of maps (192 or more
/// in a row): real packets must meet the same rules as in the kernel, interfaces included, which
/// test runs cannot exercise.
#[test]
fn classified_chains_judge_and_count_as_the_kernel_does() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let mut rules =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..200u32 {
        let rule = match i % 8 {
            0 => format!(
                "-A FORWARD -i bz{i} -p udp -m udp --dport {} -j DROP",
                1000 + i
            ),
            1 => format!(
                "-A FORWARD -s 10.9.{}.0/24 -p tcp -m tcp --dport {}:{} -j DROP",
                i % 3,
                2000 + i,
                2010 + i
            ),
            2 => format!(
                "-A FORWARD ! -i b+ -p udp -m udp --dport {} -j DROP",
                3000 + i
            ),
            3 => format!("-A FORWARD -o c{i}+ -d 10.9.2.{}/32 -j ACCEPT", i % 250),
            4 => format!(
                "-A FORWARD -i bs+ -p udp -m udp --sport {} -j ACCEPT",
                4000 + i
            ),
            5 => format!("-A FORWARD ! -s 10.9.1.0/{} -p icmp -j DROP", 24 + i % 8),
            6 => format!("-A FORWARD -i lo -p udp -m udp ! --dport {} -j DROP", i),
            _ => format!("-A FORWARD -o ct{i} -p tcp -j ACCEPT"),
        };
        rules.push_str(&rule);
        rules.push('\n');
    }
    // rules the traffic meets, past and among the fillers
    rules.push_str(
        "-A FORWARD -i bs+ -p udp -m udp --dport 80 -j DROP\n\
         -A FORWARD -i b+ -o ct+ -p udp -m udp --dport 443 -j ACCEPT\n\
         -A FORWARD ! -o c+ -j DROP\n\
         -A FORWARD -i bs+ -p icmp -j ACCEPT\n\
         -A FORWARD -p tcp -m tcp ! --dport 1:21 -j ACCEPT\n",
    );
    for i in 0..200u32 {
        let rule = match i % 4 {
            0 => format!("-A INPUT -i c+ -p udp -m udp --dport {} -j DROP", 50 + i),
            1 => format!(
                "-A INPUT -i bs+ -p udp -m udp --dport {}:{} -j RETURN",
                100 + i,
                100 + 2 * i
            ),
            2 => "-A INPUT ! -i bs+ -p tcp -j DROP".to_string(),
            _ => format!("-A INPUT -s 10.9.4.{i}/32 -p udp -j DROP"),
        };
        rules.push_str(&rule);
        rules.push('\n');
    }
    rules.push_str("-A INPUT -i b+ -p udp -m udp --dport 54 -j DROP\n-A INPUT -i bs+ -p tcp -m tcp --dport 22 -j DROP\n");
    for i in 0..200u32 {
        let rule = match i % 3 {
            0 => format!(
                "-A OUTPUT -o c{}+ -p udp -m udp --dport {} -j DROP",
                i,
                500 + i
            ),
            1 => format!(
                "-A OUTPUT ! -o ct+ -p udp -m udp --dport {} -j DROP",
                600 + i
            ),
            _ => format!("-A OUTPUT -d 10.9.3.{}/32 -j DROP", i),
        };
        rules.push_str(&rule);
        rules.push('\n');
    }
    rules.push_str("-A OUTPUT -o ct+ -p udp -m udp --dport 514 -j DROP\nCOMMIT\n");
    p.restore(&d, &rules);
    let (k, b) = p.topologies();
    judged_alike(&p, &d, (&k, &b), 6);
    // they were classified: each chain's trees have their interface classes' LPM tries
    let tries = pinned_maps(&d.bpffs)
        .into_iter()
        .filter(|m| m.map_type() == MapType::LpmTrie)
        .count();
    assert!(
        tries >= 3,
        "{tries} interface tries pinned: the chains were not classified"
    );
}

/// Every map pinned under `root`.
fn pinned_maps(root: &std::path::Path) -> Vec<Map> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else if let Ok(m) = Map::from_pin(e.path()) {
                out.push(m);
            }
        }
    }
    out
}
