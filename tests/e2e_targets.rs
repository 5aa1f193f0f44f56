//! Connection state, REJECT and LOG end to end: the real daemon, real packets between
//! namespaces, and the kernel's iptables-legacy with the same rules as the reference. The
//! sender must see the same answers (refused connections, ICMP errors, timeouts), the rules
//! must count the same packets, and LOG must write the same lines.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::kmsg::{kmsg_lines_since, kmsg_next_seq, normalize};
use common::{probe, topology, Daemon, Pair, Tool, Topology};
use test_support::log_all_netns::LogAllNetns;
use test_support::netns::{sh, Netns};
use test_support::privileged;

/// A host and router ruleset of the usual stateful shape: replies and related errors accepted
/// by state, new connections by port, invalid packets dropped, the rest rejected with each
/// kind of answer.
const STATEFUL: &str = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
    -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
    -A INPUT -m conntrack --ctstate INVALID -j DROP\n\
    -A INPUT -p icmp -m state --state NEW -j ACCEPT\n\
    -A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT\n\
    -A INPUT -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset\n\
    -A INPUT -p udp -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable\n\
    -A INPUT -p udp -m udp --dport 54 -j REJECT --reject-with icmp-admin-prohibited\n\
    -A INPUT -p udp -j REJECT --reject-with icmp-host-prohibited\n\
    -A INPUT -j REJECT\n\
    -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
    -A FORWARD -p tcp -m conntrack --ctstate NEW --ctdir ORIGINAL --ctorigdstport 80:90 -j ACCEPT\n\
    -A FORWARD -p udp -m conntrack --ctorigsrc 10.9.1.0/24 --ctproto udp --ctstate NEW -m udp --dport 5353 -j ACCEPT\n\
    -A FORWARD -m conntrack --ctstatus SEEN_REPLY -j ACCEPT\n\
    -A FORWARD -p tcp -j REJECT --reject-with tcp-reset\n\
    -A FORWARD -p udp -j REJECT --reject-with icmp-net-unreachable\n\
    -A FORWARD -j REJECT --reject-with icmp-proto-unreachable\n\
    -A OUTPUT -p udp -m udp --dport 7777 -j REJECT\n\
    -A OUTPUT -p tcp -m tcp --dport 7777 -j REJECT --reject-with tcp-reset\n\
    COMMIT\n";

const PROBES_IN: &[&str] = &[
    "tcp:10.9.1.2:22",
    "tcp:10.9.1.2:23",
    "tcp:10.9.1.2:24",
    "udp:10.9.1.2:53",
    "udp:10.9.1.2:54",
    "udp:10.9.1.2:55",
    "tcp:10.9.2.2:80",
    "tcp:10.9.2.2:81",
    "tcp:10.9.2.2:22",
    "udp:10.9.2.2:5353",
    "udp:10.9.2.2:5354",
];

#[test]
fn stateful_rules_and_rejects_answer_as_the_kernel_does() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    p.restore(&d, STATEFUL);
    let (k, b) = p.topologies();
    // the target listens on 80 and 22 so that connections through the router are
    // established and their replies come back through FORWARD
    for t in [&k.target, &b.target] {
        sh(&format!(
            "ip netns exec {} python3 -c 'import socket,time\n\
             for port in (80, 22):\n    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\", port)); s.listen(16)\n    globals()[\"s%d\" % port] = s\n\
             time.sleep(240)' >/dev/null 2>&1 &",
            t.name
        ));
    }
    for t in [&k.target, &b.target] {
        t.wait_listening(80);
        t.wait_listening(22);
    }
    let kres = probe(&k.sender, PROBES_IN);
    let bres = probe(&b.sender, PROBES_IN);
    if bres != kres {
        // which rule each side's packets met, and what the daemon did with its events
        let listing = |out: Output| String::from_utf8_lossy(&out.stdout).into_owned();
        let args = ["-L", "-v", "-x", "-n"];
        panic!(
            "the sender sees different answers\n bpfilter: {bres:?}\n   kernel: {kres:?}\n\
             bpfilter's counters:\n{}\nthe kernel's counters:\n{}\ndaemon log:\n{}",
            listing(d.iptables(&p.bpf, Tool::Iptables, &args, "")),
            listing(common::kernel(&p.kernel, Tool::Iptables, &args, "")),
            d.log()
        );
    }
    assert!(
        kres.iter().any(|r| r.contains("errno 111"))
            && kres.iter().any(|r| r.contains("errno 113")),
        "the probes must meet refusals of both kinds: {kres:?}\n{}",
        common::seen(&common::kernel(
            &p.kernel,
            Tool::Iptables,
            &["-L", "-v", "-n"],
            ""
        ))
        .1
    );
    assert!(
        kres.iter().any(|r| r.ends_with("connected")),
        "some connection must be accepted by state: {kres:?}"
    );
    // locally generated traffic rejected in OUTPUT
    let out: &[&str] = &["udp:10.9.2.2:7777", "tcp:10.9.2.2:7777"];
    let kout = probe(&p.kernel, out);
    let bout = probe(&p.bpf, out);
    assert_eq!(bout, kout, "OUTPUT rejects differ (left: bpfilter)");
    std::thread::sleep(Duration::from_millis(200));
    p.same_listing(&d);
    let status = String::from_utf8_lossy(&d.bpfilter(&p.bpf, &["status"]).stdout).into_owned();
    assert!(
        status.contains("conntrack: on"),
        "status must say connection tracking is on:\n{status}"
    );
    // without stateful rules, bpfilter's connection tracking switch goes away
    p.same(
        &d,
        Tool::Restore,
        &[],
        "*filter\n-A INPUT -p udp -j DROP\nCOMMIT\n",
    );
    let tables = sh(&format!(
        "ip netns exec {} nft list tables 2>/dev/null || true",
        p.bpf.name
    ));
    assert!(
        !tables.contains("bpfilter_conntrack"),
        "connection tracking left on: {tables}"
    );
}

#[test]
fn log_lines_are_the_kernels() {
    if !privileged() {
        return;
    }
    let _log_all = LogAllNetns::on();
    let d = Daemon::start();
    let p = Pair::new();
    let tag = test_support::netns::unique("L");
    let rules = format!(
        "*filter\n\
         -A INPUT -p udp -m udp --dport 9 -j LOG --log-prefix \"{tag}u \" --log-level 6 --log-ip-options\n\
         -A INPUT -p icmp -j LOG --log-prefix \"{tag}i \" --log-macdecode\n\
         -A INPUT -p tcp -m conntrack --ctstate NEW -j LOG --log-prefix \"{tag}t \" --log-level 3\n\
         -A FORWARD -j LOG --log-prefix \"{tag}f \" --log-level 7\n\
         -A OUTPUT -p udp -m udp --dport 9 -j LOG --log-prefix \"{tag}o \" --log-uid\n\
         COMMIT\n"
    );
    p.restore(&d, &rules);
    let (k, b) = p.topologies();
    let traffic = |fw: &Netns, t: &Topology| {
        t.sender.sh(
            "echo a > /dev/udp/10.9.1.2/9; ping -c1 -W1 10.9.1.2 >/dev/null; \
                     timeout 1 bash -c \"echo > /dev/tcp/10.9.1.2/1\" 2>/dev/null; \
                     echo b > /dev/udp/10.9.2.2/9; true",
        );
        fw.sh("echo c > /dev/udp/10.9.2.2/9; true");
    };
    // the warm-up pings of the topologies hit the ICMP rule: let the daemon write theirs
    std::thread::sleep(Duration::from_millis(1000));
    let from = kmsg_next_seq();
    traffic(&p.kernel, &k);
    traffic(&p.bpf, &b);
    // The lines of a side name its interfaces (they carry the namespaces' names).
    let side_names = |t: &Topology| {
        vec![
            (format!("a{}", t.sender.name), "SENDER"),
            (format!("b{}", t.sender.name), "FW_IN"),
            (format!("c{}", t.target.name), "FW_OUT"),
            (format!("a{}", t.target.name), "TARGET"),
        ]
    };
    let collect = |t: &Topology| -> Vec<(u8, String)> {
        let names = side_names(t);
        let names: Vec<(&str, &str)> = names.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        kmsg_lines_since(from, &tag)
            .into_iter()
            .filter(|(_, l)| names.iter().any(|(n, _)| l.contains(&format!("={n} "))))
            .map(|(lvl, l)| (lvl, normalize(&l, &names)))
            .collect()
    };
    // bpfilter's lines are written by the daemon a moment later
    let deadline = Instant::now() + Duration::from_secs(5);
    while collect(&b).len() < collect(&k).len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let sides = [collect(&k), collect(&b)];
    let (kl, bl) = (&sides[0], &sides[1]);
    assert!(
        kl.len() >= 5,
        "the kernel must have logged every rule: {kl:#?}"
    );
    assert_eq!(
        bl,
        kl,
        "LOG lines differ (left: bpfilter)\ndaemon log:\n{}",
        d.log()
    );
    p.same_listing(&d);
}

/// A daemon, a firewall namespace (named from `prefix`) whose INPUT rejects every UDP
/// datagram, and a sender -- firewall -- target topology around it; None where privileged
/// tests cannot run.
fn udp_reject_firewall(prefix: &str) -> Option<(Daemon, Netns, Topology)> {
    let (d, fw) = common::start_in(prefix)?;
    d.iptables_ok(
        &fw,
        Tool::Iptables,
        &["-A", "INPUT", "-p", "udp", "-j", "REJECT"],
        "",
    );
    let t = topology(&fw);
    Some((d, fw, t))
}

/// The firewall's INPUT listing with exact counters, and the `events:` line of `status`.
fn input_and_events(d: &Daemon, fw: &Netns) -> (String, String) {
    let out = d.iptables(fw, Tool::Iptables, &["-L", "INPUT", "-v", "-x", "-n"], "");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = String::from_utf8_lossy(&d.bpfilter(fw, &["status"]).stdout).into_owned();
    let line = status
        .lines()
        .find(|l| l.contains("events:"))
        .unwrap_or("")
        .to_owned();
    (listing, line)
}

/// A flood of packets from many sources into a REJECT rule: every packet is judged and
/// counted, the replies stay within the kernel's rate limits, and the daemon's memory does
/// not grow with the flood.
#[test]
fn a_reject_flood_grows_nothing() {
    let Some((d, fw, t)) = udp_reject_firewall("fl") else {
        return;
    };
    // default rate limits in the firewall (the topology lifts them for the other tests)
    fw.sh("sysctl -qw net.ipv4.icmp_ratelimit=1000 net.ipv4.icmp_msgs_per_sec=1000 net.ipv4.icmp_msgs_burst=50");
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let flood = |n: u32| {
        // raw datagrams from n different sources in 10.9.1.0/24 and 172.16.0.0/12 (routed
        // back through the sender's side)
        t.sender.sh(&format!(
            "python3 -c 'import socket,struct\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n\
             for i in range({n}):\n    src=struct.pack(\"!I\", (172<<24)|(16<<16)|(i%60000))\n    \
             udp=struct.pack(\"!HHHH\",1000+i%1000,53,12,0)+b\"flud\"\n    \
             ip=struct.pack(\"!BBHHHBBH4s4s\",0x45,0,20+len(udp),i&0xffff,0,64,17,0,src,socket.inet_aton(\"10.9.1.2\"))\n    \
             s.sendto(ip+udp,(\"10.9.1.2\",0))'"
        ));
    };
    flood(2000);
    std::thread::sleep(Duration::from_millis(500));
    let base = rss(d.pid());
    flood(20000);
    std::thread::sleep(Duration::from_millis(1000));
    let after = rss(d.pid());
    let (listing, line) = input_and_events(&d, &fw);
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start().starts_with("22000 ")),
        "every packet is counted by the REJECT rule:\n{listing}"
    );
    let num = |after: &str| -> u64 {
        line.split(after)
            .next()
            .and_then(|s| s.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (read, sent, lost) = (
        num(" read,"),
        num(" replies sent"),
        num(" lost (ring full); LOG"),
    );
    assert_eq!(
        read + lost,
        22000,
        "every REJECT is read or counted as lost: {line}"
    );
    assert!(
        sent <= 50 + 1000 * 10,
        "replies within the global ICMP rate limit (burst 50, 1000/s): {line}"
    );
    assert!(
        after < base + 32 * 1024,
        "the daemon grew from {base} kB to {after} kB under the flood"
    );
    drop(t);
}

/// Packets rejected while the daemon is down are dropped by the pinned programs (the verdict
/// never depends on the daemon) and their records are not acted on by the next daemon: a
/// reply that late is nothing the kernel would send.
#[test]
fn rejects_while_the_daemon_is_down_get_no_late_reply() {
    let Some((mut d, fw, t)) = udp_reject_firewall("dn") else {
        return;
    };
    let before = probe(&t.sender, &["udp:10.9.1.2:53"]);
    assert_eq!(
        before,
        ["udp:10.9.1.2:53 errno 111"],
        "answered while the daemon runs"
    );
    d.kill9();
    let down = probe(&t.sender, &["udp:10.9.1.2:53", "udp:10.9.1.2:54"]);
    assert_eq!(
        down,
        ["udp:10.9.1.2:53 timeout", "udp:10.9.1.2:54 timeout"],
        "dropped, unanswered, while no daemon runs"
    );
    d.restart();
    let (listing, line) = input_and_events(&d, &fw);
    assert!(
        listing.lines().any(|l| l.trim_start().starts_with("3 ")),
        "all three packets counted by the REJECT rule:\n{listing}"
    );
    assert!(
        line.contains("0 replies sent") && line.contains("2 stale"),
        "the two records of the dead time are discarded, not answered: {line}"
    );
    let after = probe(&t.sender, &["udp:10.9.1.2:55"]);
    assert_eq!(after, ["udp:10.9.1.2:55 errno 111"], "answered again");
}
