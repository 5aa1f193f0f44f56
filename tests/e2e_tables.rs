//! Whole host rulesets: the filter table compiled to BPF next to the kernel's own nat, mangle
//! and raw tables in the same namespace. Through bpfilter, the same iptables-restore files and
//! commands must leave the same tables and counters as with the kernel alone, list the tables
//! in the kernel's order, and NAT'd traffic must be judged by the compiled filter table as the
//! kernel's would judge it.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{probe, Tool};
use test_support::netns::sh;

/// A router with a published service, the shape Docker and libvirt write: DNAT in PREROUTING,
/// MASQUERADE in POSTROUTING, marks in mangle, a NOTRACK in raw, and a stateful filter table.
const ROUTER: &str = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
    -A PREROUTING -p udp -m udp --dport 4444 -j NOTRACK\n\
    COMMIT\n\
    *mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
    -A PREROUTING -p tcp -m tcp --dport 8080 -j MARK --set-xmark 0x10/0xffffffff\n\
    -A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu\n\
    COMMIT\n\
    *nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
    -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
    -A POSTROUTING -s 10.9.2.0/24 ! -o c+ -j MASQUERADE\n\
    -A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.9.2.2:80\n\
    COMMIT\n\
    *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n\
    -A FORWARD -m mark --mark 0x10/0xff\n\
    -A FORWARD -m mark ! --mark 0x10\n\
    -A FORWARD -j DOCKER-USER\n\
    -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
    -A FORWARD -j DOCKER\n\
    -A FORWARD -p udp -m conntrack --ctstate UNTRACKED -j ACCEPT\n\
    -A FORWARD -j REJECT --reject-with icmp-port-unreachable\n\
    -A DOCKER -d 10.9.2.2/32 -p tcp -m conntrack --ctstate DNAT -m tcp --dport 80 -j ACCEPT\n\
    -A DOCKER-USER -j RETURN\n\
    COMMIT\n";

#[test]
fn whole_rulesets_with_every_table_apply_save_and_filter_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    p.restore(&d, ROUTER);
    p.same_listing(&d);
    for t in ["nat", "mangle", "raw"] {
        p.same(&d, Tool::Iptables, &["-t", t, "-L", "-n", "-v", "-x"], "");
        p.same(&d, Tool::Save, &["-t", t], "");
    }
    // The kernel's tables really are the kernel's: the filter table is not.
    let names = sh(&format!(
        "ip netns exec {} cat /proc/net/ip_tables_names",
        p.bpf.name
    ));
    assert!(
        names.contains("nat") && names.contains("mangle") && !names.contains("filter"),
        "the kernel must hold nat, mangle, raw and never filter: {names}"
    );
    let status = String::from_utf8_lossy(&d.bpfilter(&p.bpf, &["status"]).stdout).into_owned();
    assert!(
        status.contains("compiled to BPF: filter;") && status.contains("ip_tables: "),
        "status says which tables are which:\n{status}"
    );
    // Traffic: the published port is DNAT'd to the target and accepted by the compiled
    // filter table on --ctstate DNAT; other ports are rejected by it.
    let (k, b) = p.topologies();
    for t in [&k.target, &b.target] {
        sh(&format!(
            "ip netns exec {} python3 -c 'import socket,time\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\", 80)); s.listen(8)\n\
             time.sleep(240)' >/dev/null 2>&1 &",
            t.name
        ));
    }
    for t in [&k.target, &b.target] {
        t.wait_listening(80);
    }
    let probes = [
        "tcp:10.9.1.2:8080",
        "tcp:10.9.2.2:80",
        "udp:10.9.2.2:53",
        "udp:10.9.2.2:4444",
    ];
    let kres = probe(&k.sender, &probes);
    let bres = probe(&b.sender, &probes);
    assert_eq!(
        bres, kres,
        "the sender sees different answers (left: bpfilter)"
    );
    assert_eq!(
        kres[0], "tcp:10.9.1.2:8080 connected",
        "the published port must reach the target through DNAT: {kres:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    p.same_listing(&d);
    for t in ["nat", "mangle", "raw"] {
        p.same(&d, Tool::Save, &["-c", "-t", t], "");
    }
}

/// A filter rule with an extension bpfilter does not compile (the kernel's tables take it).
const UNCOMPILED_RULE: &[&str] = &[
    "-A", "INPUT", "-m", "length", "--length", "0:100", "-j", "ACCEPT",
];

/// iptables-restore commits table by table, in the file's order: a table that fails leaves
/// the tables committed before it in place, and the same error is printed.
#[test]
fn a_failing_table_in_a_restore_fails_as_with_the_kernel() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let bad_nat = "*filter\n-A INPUT -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n\
        *nat\n-A POSTROUTING -j NOSUCHTARGET\nCOMMIT\n\
        *mangle\n-A PREROUTING -j MARK --set-mark 1\nCOMMIT\n";
    let (code, _, _) = p.same(&d, Tool::Restore, &[], bad_nat);
    assert_ne!(code, 0, "the bad nat table must fail the restore");
    p.same(&d, Tool::Save, &[], "");
    let bad_filter = "*nat\n-A POSTROUTING -o eth9 -j MASQUERADE\nCOMMIT\n\
        *filter\n-A INPUT -m nosuchmatch -j ACCEPT\nCOMMIT\n";
    let (code, _, _) = p.same(&d, Tool::Restore, &[], bad_filter);
    assert_ne!(code, 0, "the bad filter table must fail the restore");
    p.same(&d, Tool::Save, &["-c"], "");
    // a filter rule with an extension bpfilter does not compile is refused, and the kernel's
    // tables are untouched by it
    let out = d.iptables(&p.bpf, Tool::Iptables, UNCOMPILED_RULE, "");
    assert!(
        !out.status.success(),
        "length is not compiled and must be refused"
    );
    // the kernel's mangle table takes it
    d.iptables_ok(
        &p.bpf,
        Tool::Iptables,
        &[&["-t", "mangle"][..], UNCOMPILED_RULE].concat(),
        "",
    );
}

/// `-m pkttype` and `-m mark` on real traffic: unicast, broadcast and multicast datagrams, and
/// marks set by the kernel's mangle table, counted as the kernel counts them.
#[test]
fn packet_types_and_marks_count_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let rules =
        "*mangle\n-A PREROUTING -p udp -m udp --dport 7000 -j MARK --set-mark 0x7\nCOMMIT\n\
        *filter\n\
        -A INPUT -m pkttype --pkt-type unicast\n\
        -A INPUT -m pkttype --pkt-type broadcast\n\
        -A INPUT -m pkttype --pkt-type multicast\n\
        -A INPUT -m pkttype ! --pkt-type unicast -j DROP\n\
        -A INPUT -m mark --mark 0x7\n\
        -A INPUT -m mark --mark 0x6/0x6\n\
        -A INPUT -m mark ! --mark 0x0/0xff\n\
        COMMIT\n";
    p.restore(&d, rules);
    let (k, b) = p.topologies();
    for t in [&k, &b] {
        t.sender.sh(
            "python3 -c 'import socket\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\n\
             for dst in (\"10.9.1.2\", \"10.9.1.255\", \"255.255.255.255\"):\n    s.sendto(b\"x\", (dst, 7000))\n\
             m=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); m.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(\"10.9.1.1\"))\n\
             m.sendto(b\"y\", (\"224.0.0.1\", 7001))'",
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    p.same_listing(&d);
    let save = common::seen(&common::kernel(
        &p.kernel,
        Tool::Save,
        &["-c", "-t", "filter"],
        "",
    ))
    .1;
    assert!(
        save.lines()
            .filter(|l| l.starts_with('[') && !l.starts_with("[0:0]"))
            .count()
            >= 5,
        "the traffic must hit the pkttype and mark rules:\n{save}"
    );
}

/// With `--ipv6 kernel`, IPv6 is the kernel's ip6_tables: `bpfilter ip6tables*` must be
/// exactly ip6tables-legacy against the kernel (rules land there, output and exit codes are
/// its own), and `status` must say so.
#[test]
fn with_ipv6_kernel_ip6tables_through_bpfilter_is_the_kernels_ip6_tables() {
    if !test_support::privileged() {
        return;
    }
    let d = common::Daemon::start_with(&["--ipv6", "kernel"]);
    let ns = test_support::netns::Netns::new("ip6k");
    let restore =
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:LOGDROP - [0:0]\n\
        -A INPUT -i lo -j ACCEPT\n\
        -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT\n\
        -A INPUT -s 2001:db8::/32 -p tcp -m tcp --dport 22 -j ACCEPT\n\
        -A INPUT -j LOGDROP\n\
        -A LOGDROP -j DROP\n\
        COMMIT\n";
    let bpf = |args: &[&str], stdin: &str| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(common::bpfilter_bin())
            .args(args)
            .env("BPFILTER_SOCKET", &d.socket)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = bpf(&["ip6tables-restore"], restore);
    assert!(out.status.success(), "{out:?}");
    // The kernel holds the rules: its own ip6tables-legacy lists them.
    let kernel = ns.sh("ip6tables-legacy -S");
    assert!(
        kernel.contains("-A INPUT -s 2001:db8::/32 -p tcp -m tcp --dport 22 -j ACCEPT"),
        "{kernel}"
    );
    let ours = bpf(&["ip6tables", "-S"], "");
    assert_eq!(String::from_utf8_lossy(&ours.stdout), kernel);
    // Errors are ip6tables' own, with its exit code.
    let nosuchmatch = ["-A", "INPUT", "-m", "nosuchmatch", "-j", "ACCEPT"];
    let bad = bpf(&[&["ip6tables"][..], &nosuchmatch].concat(), "");
    let direct = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "ip6tables-legacy"])
        .args(nosuchmatch)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), direct.status.code());
    assert_eq!(bad.stderr, direct.stderr);
    // A program run with the preload (for its IPv4 rules, or for /proc/net/xt_recent) gets
    // the kernel's ip6_tables too: the daemon leaves IPv6 requests and ip6_tables_names to the
    // kernel, so ip6tables-legacy changes, lists and names the kernel's tables exactly.
    let preloaded = |args: &[&str]| {
        let lib = common::bpfilter_bin()
            .parent()
            .expect("binary folder")
            .join("libbpfilter.so");
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(args)
            .env("LD_PRELOAD", lib)
            .env("BPFILTER_SOCKET", &d.socket)
            .output()
            .unwrap()
    };
    let out = preloaded(&[
        "ip6tables-legacy",
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        "53",
        "-j",
        "ACCEPT",
    ]);
    assert!(out.status.success(), "{out:?}");
    // (without the "# Generated ... on <time>" lines, which may straddle a second)
    let rules = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let kernel = rules(&ns.sh("ip6tables-legacy-save -c"));
    assert!(
        kernel.contains("-A INPUT -p udp -m udp --dport 53 -j ACCEPT"),
        "{kernel}"
    );
    let listed = preloaded(&["ip6tables-legacy-save", "-c"]);
    assert_eq!(rules(&String::from_utf8_lossy(&listed.stdout)), kernel);
    let names = preloaded(&["cat", "/proc/net/ip6_tables_names"]);
    assert_eq!(
        String::from_utf8_lossy(&names.stdout),
        ns.sh("cat /proc/net/ip6_tables_names")
    );
    // The IPv4 filter table is unaffected (no IPv4 table was made), and status says who
    // serves IPv6.
    let status = String::from_utf8_lossy(&bpf(&["status"], "").stdout).into_owned();
    assert!(
        status.contains("IPv6 (bpfilter ip6tables): served by the kernel's ip6_tables: filter"),
        "{status}"
    );
}

/// A 40,000-rule INPUT chain in which no two neighbours share a shape (so no rule run forms),
/// larger than the verifier takes in one program: bpfilter splits it over programs that
/// tail-call each other, and it applies, filters and counts as the kernel's.
#[test]
fn a_chain_too_large_for_one_program_applies_and_counts_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let n = 40_000u32;
    let mut rules =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..n {
        let (proto, verdict) = (
            ["udp", "tcp"][i as usize % 2],
            ["ACCEPT", "DROP"][i as usize % 3 / 2],
        );
        // `! -f`: rules that are not classified (tests/e2e_packets.rs has classified chains),
        // so that the chain is compiled rule by rule and split
        rules.push_str(&format!(
            "-A INPUT -s 10.{}.{}.{}/32 ! -f -p {proto} -m {proto} --dport {} -j {verdict}\n",
            100 + (i >> 16),
            (i >> 8) & 0xff,
            i & 0xff,
            1000 + i % 500
        ));
        // the sender's traffic meets rules in the first, a middle and the last segment
        if i == 10 || i == n / 2 || i == n - 10 {
            let port = 7000 + i % 3;
            rules.push_str(&format!(
                "-A INPUT -s 10.9.1.1/32 -p udp -m udp --dport {port} -j DROP\n"
            ));
            rules.push_str(&format!(
                "-A INPUT -s 10.9.1.1/32 -p udp -m udp --dport {}\n",
                port + 10
            ));
        }
    }
    rules.push_str("-A INPUT -p udp -m udp --dport 7100 -j RETURN\n-A INPUT -p udp\nCOMMIT\n");
    p.restore(&d, &rules);
    let status = String::from_utf8_lossy(&d.bpfilter(&p.bpf, &["status"]).stdout).into_owned();
    assert!(
        status.contains("INPUT+1 "),
        "the chain must be split over several programs:\n{status}"
    );
    let (k, b) = p.topologies();
    for t in [&k, &b] {
        t.sender.sh(
            "python3 -c 'import socket\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for port in (7000, 7001, 7002, 7010, 7011, 7012, 7100, 7200):\n    s.sendto(b\"x\", (\"10.9.1.2\", port))'",
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let (_, save, _) = p.same(&d, Tool::Save, &["-c"], "");
    let counted = save
        .lines()
        .filter(|l| l.contains("10.9.1.1/32") && !l.starts_with("[0:0]"))
        .count();
    assert_eq!(
        counted,
        6,
        "each of the sender's rules counts its datagram:\n{}",
        save.lines()
            .filter(|l| l.contains("10.9.1.1"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
