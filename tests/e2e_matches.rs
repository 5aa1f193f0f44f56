//! `limit`, `owner`, `addrtype`, `recent`, `hashlimit`, `tcpmss` and `mac` on real traffic, side by
//! side with the kernel's iptables-legacy: the same commands, the same refusals, the same
//! counters.

mod common;

use std::time::Duration;

use common::{Daemon, Pair, Tool};
use test_support::netns::Netns;

/// Sends UDP datagrams from `ns` to each `dst:port` (broadcast allowed), in order.
fn udp(ns: &Netns, dsts: &[&str]) {
    let list = dsts
        .iter()
        .map(|d| {
            let (a, p) = d.split_once(':').expect("addr:port");
            format!("(\"{a}\", {p})")
        })
        .collect::<Vec<_>>()
        .join(", ");
    ns.sh(&format!(
        "python3 -c 'import socket\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\n\
         for d in [{list}]:\n    s.sendto(b\"x\", d)'"
    ));
}

/// Counters of the filter table on both sides must agree after the traffic settled.
fn settle_and_compare(p: &Pair, d: &Daemon) {
    std::thread::sleep(Duration::from_millis(200));
    p.same_listing(d);
}

/// `-m limit`: a burst, then nothing until the bucket refills at the rate; a replace refills
/// every bucket (the kernel makes new matches); `-D` by specification, the ERANGE refusal.
#[test]
fn limit_counts_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        -A INPUT -p icmp -m icmp --icmp-type 8 -m limit --limit 1/hour --limit-burst 4 -j ACCEPT\n\
        -A INPUT -p icmp -m icmp --icmp-type 8 -j DROP\n\
        -A FORWARD -p udp -m limit --limit 5/sec --limit-burst 2 -j ACCEPT\n\
        -A FORWARD -p udp -j DROP\n\
        COMMIT\n";
    p.restore(&d, rules);
    let (k, b) = p.topologies();
    for t in [&k, &b] {
        t.sender
            .sh("ping -c 8 -i 0.01 -W 0.3 10.9.1.2 >/dev/null; true");
        udp(
            &t.sender,
            &["10.9.2.2:9000", "10.9.2.2:9000", "10.9.2.2:9000"],
        );
    }
    settle_and_compare(&p, &d);
    // 5/s with a burst of 2: full again after 0.4 s
    std::thread::sleep(Duration::from_millis(1200));
    for t in [&k, &b] {
        udp(
            &t.sender,
            &["10.9.2.2:9000", "10.9.2.2:9000", "10.9.2.2:9000"],
        );
    }
    settle_and_compare(&p, &d);
    // any replace starts every bucket full again
    p.ipt(&d, "-A OUTPUT -j ACCEPT");
    for t in [&k, &b] {
        t.sender
            .sh("ping -c 6 -i 0.01 -W 0.3 10.9.1.2 >/dev/null; true");
    }
    settle_and_compare(&p, &d);
    let save = p.kernel_save();
    assert!(
        save.contains("[8:672] -A INPUT -p icmp -m icmp --icmp-type 8 -m limit"),
        "two bursts of four pings must have passed:\n{save}"
    );
    // deletion by specification compares the user part of the match only
    p.ipt(
        &d,
        "-D FORWARD -p udp -m limit --limit 5/sec --limit-burst 2 -j ACCEPT",
    );
    p.ipt(
        &d,
        "-D FORWARD -p udp -m limit --limit 5/sec --limit-burst 3 -j DROP",
    );
    // 1/day with a burst of 4: the credits overflow (ERANGE)
    p.refused(&d, "-A INPUT -m limit --limit 1/day --limit-burst 4");
    p.same_listing(&d);
}

/// `-m owner` on the firewall's own traffic: sockets of users and groups (setpriv), kernel
/// sockets (echo replies), `--socket-exists` both ways; OUTPUT only, as the kernel checks.
#[test]
fn owner_matches_local_sockets_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        -A OUTPUT -p udp -m owner --uid-owner 1000-1999 -j DROP\n\
        -A OUTPUT -p udp -m owner --gid-owner 2000\n\
        -A OUTPUT -p udp -m owner ! --uid-owner 0 ! --gid-owner 2000\n\
        -A OUTPUT -p udp -m owner --uid-owner 0 --gid-owner 0\n\
        -A OUTPUT -p icmp -m owner ! --socket-exists\n\
        -A OUTPUT -p icmp -m owner --socket-exists\n\
        -A OUTPUT -p icmp -m owner --uid-owner 0\n\
        -A OUTPUT -p icmp -m owner ! --uid-owner 0\n\
        COMMIT\n";
    p.restore(&d, rules);
    let (k, b) = p.topologies();
    let send = |fw: &Netns, who: &str| {
        fw.sh(&format!(
            "setpriv {who} /usr/bin/python3 -c 'import socket\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             try:\n    s.sendto(b\"x\", (\"10.9.1.1\", 9000)); print(\"sent\")\n\
             except OSError as e:\n    print(\"errno\", e.errno)'"
        ))
    };
    for who in [
        "--reuid 1500 --regid 1500 --clear-groups",
        "--reuid 2500 --regid 2000 --clear-groups",
        "--reuid 2500 --regid 2500 --clear-groups",
        "--reuid 0 --regid 0 --clear-groups",
    ] {
        assert_eq!(send(&p.kernel, who), send(&p.bpf, who), "{who}");
    }
    for (fw, t) in [(&p.kernel, &k), (&p.bpf, &b)] {
        // echo replies come from the kernel's ICMP socket; the firewall's own pings from a
        // user's socket
        t.sender
            .sh("ping -c 2 -i 0.05 -W 0.3 10.9.1.2 >/dev/null; true");
        fw.sh("ping -c 2 -i 0.05 -W 0.3 10.9.1.1 >/dev/null; true");
    }
    settle_and_compare(&p, &d);
    let save = p.kernel_save();
    assert!(
        save.lines()
            .filter(|l| l.starts_with('[') && !l.starts_with("[0:0]"))
            .count()
            >= 5,
        "the traffic must hit the owner rules:\n{save}"
    );
    // owner is valid from OUTPUT and POSTROUTING only
    p.refused(&d, "-A INPUT -m owner --uid-owner 0");
    p.ipt(&d, "-N from-input");
    p.ipt(&d, "-A from-input -m owner --socket-exists");
    let (code, _, _) = p.ipt(&d, "-A INPUT -j from-input");
    assert_ne!(
        code, 0,
        "a user chain INPUT reaches takes INPUT's restriction"
    );
    p.ipt(&d, "-A OUTPUT -j from-input");
    p.same_listing(&d);
    // --suppl-groups walks any number of groups: refused by name, nothing changed
    let args = [
        "-A",
        "OUTPUT",
        "-m",
        "owner",
        "--gid-owner",
        "100",
        "--suppl-groups",
    ];
    p.bpf_refuses(&d, &args, "owner --suppl-groups must be refused");
    assert!(
        d.log().contains("owner --suppl-groups"),
        "the daemon must say what it refused:\n{}",
        d.log()
    );
    let (code, _, _) = common::seen(&common::kernel(&p.kernel, Tool::Iptables, &args, ""));
    assert_eq!(code, 0, "the kernel takes it");
}

/// `-m addrtype` against the namespace's addresses, which change under the rules: local,
/// broadcast, multicast, another device's local address with `--limit-iface-in`, forwarded
/// unicast, and an address added after the rules were applied.
#[test]
fn addrtype_follows_addresses_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        -A INPUT -p udp -m addrtype --dst-type LOCAL\n\
        -A INPUT -p udp -m addrtype --dst-type BROADCAST\n\
        -A INPUT -p udp -m addrtype --dst-type MULTICAST\n\
        -A INPUT -p udp -m addrtype --src-type LOCAL\n\
        -A INPUT -p udp -m addrtype --dst-type LOCAL --limit-iface-in\n\
        -A INPUT -p udp -m addrtype ! --dst-type LOCAL --limit-iface-in\n\
        -A INPUT -p udp -m addrtype ! --src-type UNICAST\n\
        -A FORWARD -p udp -m addrtype --dst-type UNICAST --src-type UNICAST\n\
        -A FORWARD -p udp -m addrtype --dst-type LOCAL --limit-iface-out\n\
        -A OUTPUT -p udp -m addrtype --src-type LOCAL --limit-iface-out\n\
        -A OUTPUT -p udp -m addrtype --dst-type LOCAL\n\
        COMMIT\n";
    p.restore(&d, rules);
    let (k, b) = p.topologies();
    let traffic = |fw: &Netns, t: &common::Topology| {
        udp(
            &t.sender,
            &[
                "10.9.1.2:9000",
                "10.9.2.1:9000",
                "10.9.1.255:9000",
                "255.255.255.255:9000",
                "224.0.0.1:9000",
                "10.9.2.2:9000",
                "10.9.1.77:9000",
            ],
        );
        udp(fw, &["10.9.1.1:9000", "10.9.2.1:9000", "127.0.0.1:9000"]);
    };
    traffic(&p.kernel, &k);
    traffic(&p.bpf, &b);
    settle_and_compare(&p, &d);
    // an address appears on the firewall: the rules see it as LOCAL from then on
    for fw in [&p.kernel, &p.bpf] {
        let dev = fw.sh("ip -o -4 addr show to 10.9.1.2 | awk '{print $2}'");
        fw.sh(&format!("ip addr add 10.9.1.77/24 dev {}", dev.trim()));
    }
    std::thread::sleep(Duration::from_millis(500));
    traffic(&p.kernel, &k);
    traffic(&p.bpf, &b);
    settle_and_compare(&p, &d);
    // and disappears again
    for fw in [&p.kernel, &p.bpf] {
        fw.sh("ip addr del 10.9.1.77/24 dev $(ip -o -4 addr show to 10.9.1.2 | awk '{print $2}')");
    }
    std::thread::sleep(Duration::from_millis(500));
    traffic(&p.kernel, &k);
    traffic(&p.bpf, &b);
    settle_and_compare(&p, &d);
    // --limit-iface-out where INPUT reaches is refused as by the kernel
    p.refused(
        &d,
        "-A INPUT -m addrtype --dst-type LOCAL --limit-iface-out",
    );
}

/// A shell line in the firewall namespace of one side: the kernel's `/proc` there, or, on
/// bpfilter's side, with the preload (`libbpfilter.so` beside the binary) and the daemon's
/// socket, so that `/proc/net/xt_recent/NAME` is the daemon's list. Exit code and stdout.
fn proc_sh(d: &Daemon, fw: &Netns, bpf: bool, line: &str) -> (i32, String) {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &fw.name, "sh", "-c", line]);
    if bpf {
        let lib = common::bpfilter_bin()
            .parent()
            .expect("binary folder")
            .join("libbpfilter.so");
        cmd.env("LD_PRELOAD", lib).env("BPFILTER_SOCKET", &d.socket);
    }
    let out = cmd.output().expect("sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A list's text with what depends on the clock taken out: per address (sorted), the
/// address, its TTL, `oldest_pkt` and how many stamps it has.
fn recent_shape(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert!(w.len() >= 8, "unexpected line {l:?}");
            // src=A ttl: T last_seen: N oldest_pkt: K S1, S2, ...
            format!(
                "{} ttl {} oldest_pkt {} stamps {}",
                w[0],
                w[2],
                w[6],
                w.len() - 7
            )
        })
        .collect();
    lines.sort();
    lines
}

/// Both sides' list `name` (exit code of `cat`, shape of the text) must agree.
fn same_recent(d: &Daemon, p: &Pair, name: &str) -> Vec<String> {
    let cat = format!("cat /proc/net/xt_recent/{name}");
    let (kc, kt) = proc_sh(d, &p.kernel, false, &cat);
    let (bc, bt) = proc_sh(d, &p.bpf, true, &cat);
    assert_eq!(bc, kc, "cat of list {name}: exit codes (bpfilter, kernel)");
    let (k, b) = (recent_shape(&kt), recent_shape(&bt));
    assert_eq!(
        b, k,
        "list {name} (left: bpfilter, right: kernel)\n{bt}\n{kt}"
    );
    k
}

/// `-m recent`: `--set` fills a list, `--rcheck`/`--update` count stamps within `--seconds`
/// against `--hitcount`, `--rdest --rttl` through FORWARD (the TTL as seen before
/// forwarding), `--remove`, `!`; a list keeps the mask of the first rule naming it; a replace
/// keeps a list and the last rule naming it takes it away; `/proc/net/xt_recent/NAME` read
/// and written (`/`, `+addr`, `-addr`, garbage) through the preload as the kernel's.
#[test]
fn recent_lists_act_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        -A INPUT -p icmp -m icmp --icmp-type 8 -m recent --rcheck --seconds 60 --hitcount 3 --name ping -j DROP\n\
        -A INPUT -p icmp -m icmp --icmp-type 8 -m recent --set --name ping -j ACCEPT\n\
        -A FORWARD -p udp --dport 9002 -m recent --remove --name fwd --rdest\n\
        -A FORWARD -p udp --dport 9000 -m recent --update --rttl --seconds 30 --name fwd --rdest -j DROP\n\
        -A FORWARD -p udp --dport 9001 -m recent --set --name fwd --rdest --mask 255.255.255.0\n\
        -A FORWARD -p udp -m recent ! --rcheck --name fwd --rdest -j ACCEPT\n\
        COMMIT\n";
    p.restore(&d, rules);
    let (k, b) = p.topologies();
    let pings = |n: u32| {
        for t in [&k, &b] {
            t.sender.sh(&format!(
                "ping -c {n} -i 0.01 -W 0.3 10.9.1.2 >/dev/null; true"
            ));
        }
    };
    // three echo requests are let in, then the list says three within a minute: dropped
    pings(5);
    for t in [&k, &b] {
        udp(
            &t.sender,
            &[
                "10.9.2.2:9000",
                "10.9.2.2:9001",
                "10.9.2.2:9000",
                "10.9.2.2:9002",
                "10.9.2.2:9000",
            ],
        );
    }
    settle_and_compare(&p, &d);
    // (the topology's own set-up pings from the target are in the list too)
    let ping = same_recent(&d, &p, "ping");
    assert!(
        ping.contains(&"src=10.9.1.1 ttl 64 oldest_pkt 3 stamps 3".to_owned()),
        "{ping:?}"
    );
    assert!(same_recent(&d, &p, "fwd").is_empty(), "--remove emptied it");
    // writes: flush, then the sender is added by hand (TTL 0) and counts as one stamp
    for bpf in [false, true] {
        let fw = if bpf { &p.bpf } else { &p.kernel };
        let (code, _) = proc_sh(&d, fw, bpf, "echo / > /proc/net/xt_recent/ping");
        assert_eq!(code, 0);
        let (code, _) = proc_sh(&d, fw, bpf, "echo +10.9.1.1 > /proc/net/xt_recent/ping");
        assert_eq!(code, 0);
        let (code, _) = proc_sh(&d, fw, bpf, "echo +10.9.1.7 > /proc/net/xt_recent/ping");
        assert_eq!(code, 0);
        let (code, _) = proc_sh(&d, fw, bpf, "echo -10.9.1.7 > /proc/net/xt_recent/ping");
        assert_eq!(code, 0);
        let (code, _) = proc_sh(&d, fw, bpf, "echo junk > /proc/net/xt_recent/ping");
        assert_ne!(code, 0, "a bad write fails (EINVAL)");
        let (code, _) = proc_sh(&d, fw, bpf, "echo +10.9.1.300 > /proc/net/xt_recent/ping");
        assert_ne!(code, 0, "a bad address fails (EINVAL)");
    }
    assert_eq!(
        same_recent(&d, &p, "ping"),
        vec!["src=10.9.1.1 ttl 0 oldest_pkt 1 stamps 1"],
    );
    // a daemon killed and restarted adopts the lists with the rules; a replace keeps them:
    // two more requests pass, then the third stamp drops
    let mut d = d;
    d.kill9_and_restart();
    same_recent(&d, &p, "ping");
    p.ipt(&d, "-A OUTPUT -j ACCEPT");
    pings(4);
    settle_and_compare(&p, &d);
    same_recent(&d, &p, "ping");
    // a rule needing more stamps than the list has (hitcount 40 > 32) flushes it
    p.ipt(
        &d,
        "-A INPUT -p icmp -m recent --rcheck --hitcount 40 --name ping",
    );
    assert!(
        same_recent(&d, &p, "ping").is_empty(),
        "grown lists start empty"
    );
    pings(2);
    settle_and_compare(&p, &d);
    same_recent(&d, &p, "ping");
    // the last rules naming `ping` go, and the list with them
    for _ in 0..2 {
        p.ipt(&d, "-D INPUT 1");
    }
    p.ipt(&d, "-D INPUT 1");
    let (code, _) = proc_sh(&d, &p.bpf, true, "cat /proc/net/xt_recent/ping");
    assert_ne!(code, 0, "no list once no rule names it");
    same_recent(&d, &p, "ping");
    // the kernel's refusals: two operations, --reap without --seconds, a hit count past
    // XT_RECENT_MAX_NSTAMPS (65536 since Linux 6.11), --seconds with --set
    for bad in [
        "-A INPUT -m recent --set --rcheck --name x",
        "-A INPUT -m recent --rcheck --reap --name x",
        "-A INPUT -m recent --rcheck --hitcount 65536 --name x",
        "-A INPUT -m recent --set --seconds 5 --name x",
    ] {
        p.refused(&d, bad);
    }
    // More stamps per address than bpfilter keeps. Kernels since 6.11 take a hit count of
    // 5000 (XT_RECENT_MAX_NSTAMPS 65536): bpfilter refuses it loudly and nothing changes.
    // Older kernels (256) refuse it themselves, and bpfilter as they do.
    let many = "-A INPUT -m recent --rcheck --hitcount 5000 --name x";
    let args: Vec<&str> = many.split(' ').collect();
    if common::kernel(&p.kernel, Tool::Iptables, &args, "")
        .status
        .success()
    {
        let mut delete = args.clone();
        delete[0] = "-D";
        let out = common::kernel(&p.kernel, Tool::Iptables, &delete, "");
        assert!(out.status.success(), "{out:?}");
        p.bpf_refuses(&d, &args, "a list of 8192 stamps per address is refused");
        assert!(
            d.log().contains("at most 4096 stamps per address"),
            "the refusal says why"
        );
    } else {
        p.refused(&d, many);
    }
    p.same_listing(&d);
}

/// Sends, from `ns`, one UDP datagram of `size` payload bytes per `(src, sport, dst, dport)`
/// (sport 0: any), in order.
fn udp_from(ns: &Netns, sends: &[(&str, u16, &str, u16, usize)]) {
    let list = sends
        .iter()
        .map(|(s, sp, d, dp, n)| format!("(\"{s}\", {sp}, \"{d}\", {dp}, {n})"))
        .collect::<Vec<_>>()
        .join(", ");
    ns.sh(&format!(
        "python3 -c 'import socket\n\
         for s, sp, d, dp, n in [{list}]:\n    \
             k=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); k.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n    \
             k.bind((s, sp)); k.sendto(b\"x\" * n, (d, dp)); k.close()'"
    ));
}

/// Sends, from `ns` (10.9.1.1), raw IP packets to 10.9.2.2: `(protocol, fragment offset in
/// 8-byte units, payload bytes)`.
fn raw_ip(ns: &Netns, sends: &[(u8, u16, usize)]) {
    let list = sends
        .iter()
        .map(|(p, f, n)| format!("({p}, {f}, {n})"))
        .collect::<Vec<_>>()
        .join(", ");
    ns.sh(&format!(
        "python3 -c 'import socket, struct\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n\
         for p, f, n in [{list}]:\n    \
             h=struct.pack(\"!BBHHHBBH4s4s\", 0x45, 0, 20 + n, 7, f, 64, p, 0, socket.inet_aton(\"10.9.1.1\"), socket.inet_aton(\"10.9.2.2\"))\n    \
             s.sendto(h + bytes(range(n)), (\"10.9.2.2\", 0))'"
    ));
}

/// `-m hashlimit` side by side with the kernel's: buckets per source (`--hashlimit-upto`,
/// pings), per destination address and port (`--hashlimit-above`, masks), a second rule
/// sharing a table (the first rule's configuration wins, its own `--hashlimit-upto` and
/// mode count), source masks and ports, byte mode, rate match, the refill, a non-first
/// fragment and packets too short for their ports (hotdrop), ESP and AH "ports", a replace
/// that keeps the tables (even one that names a table with another configuration), a daemon
/// restart that adopts them, the kernel's refusals (gc interval or expiry 0, mask 33, credit
/// overflow, rate-match mode mixed in a table), and a table created again once no rule
/// names it.
#[test]
fn hashlimit_buckets_act_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        -A INPUT -p icmp -m icmp --icmp-type 8 -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 3 --hashlimit-mode srcip --hashlimit-name ping -j ACCEPT\n\
        -A INPUT -p icmp -m icmp --icmp-type 8 -j DROP\n\
        -A FORWARD -d 10.9.2.2 -m hashlimit --hashlimit-upto 10000/sec --hashlimit-burst 1000 --hashlimit-mode srcport,dstport --hashlimit-name ports\n\
        -A FORWARD -p udp --dport 9000:9001 -m hashlimit --hashlimit-above 1/sec --hashlimit-burst 2 --hashlimit-mode dstip,dstport --hashlimit-dstmask 24 --hashlimit-name fwd -j DROP\n\
        -A FORWARD -p udp --dport 9002 -m hashlimit --hashlimit-upto 50/sec --hashlimit-burst 20 --hashlimit-mode srcip --hashlimit-name fwd -j ACCEPT\n\
        -A FORWARD -p udp --dport 9003 -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 1 --hashlimit-mode srcip --hashlimit-srcmask 24 --hashlimit-name net -j ACCEPT\n\
        -A FORWARD -p udp --dport 9004 -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 1 --hashlimit-mode srcip,srcport --hashlimit-name host -j ACCEPT\n\
        -A FORWARD -p udp --dport 9005 -m hashlimit --hashlimit-upto 2kb/s --hashlimit-burst 3kb --hashlimit-htable-expire 1000 --hashlimit-name bytes -j ACCEPT\n\
        -A FORWARD -p udp --dport 9006 -m hashlimit --hashlimit-upto 1/sec --hashlimit-burst 1 --hashlimit-rate-match --hashlimit-rate-interval 1 --hashlimit-name rate -j ACCEPT\n\
        -A FORWARD -j DROP\n\
        COMMIT\n";
    p.restore(&d, rules);
    let (k, b) = p.topologies();
    for t in [&k, &b] {
        let dev = t
            .sender
            .sh("ip -o -4 addr show to 10.9.1.1 | awk '{print $2}'");
        t.sender.sh(&format!(
            "ip addr add 10.9.1.3/24 dev {0} && ip addr add 10.9.1.4/24 dev {0}",
            dev.trim()
        ));
    }
    let round = |d: &Daemon, first: bool| {
        for t in [&k, &b] {
            t.sender
                .sh("ping -c 5 -i 0.01 -W 0.3 10.9.1.2 >/dev/null; ping -c 2 -i 0.01 -W 0.3 10.9.2.2 >/dev/null; true");
            let mut sends = vec![
                ("10.9.1.1", 0, "10.9.2.2", 9000, 1),
                ("10.9.1.1", 0, "10.9.2.2", 9000, 1),
                ("10.9.1.1", 0, "10.9.2.2", 9000, 1),
                ("10.9.1.1", 0, "10.9.2.2", 9001, 1),
                ("10.9.1.1", 0, "10.9.2.2", 9002, 1),
                ("10.9.1.1", 0, "10.9.2.2", 9002, 1),
                ("10.9.1.3", 0, "10.9.2.2", 9002, 1),
                // 1,488-byte datagrams: two fit in the byte bucket with room to spare and a
                // third waits for a fifth of a second of credit, so the two sides, sending at
                // their own pace (slow under emulation), see the same outcome. The entry
                // expires 1 s after a round (the kernel's collector removes it within its
                // 1 s interval), so every round starts from a new one on both sides: with
                // byte mode's default of 15 s, rounds about 15 s apart under emulation found
                // the entry kept on one side and renewed on the other.
                ("10.9.1.1", 0, "10.9.2.2", 9005, 1460),
                ("10.9.1.1", 0, "10.9.2.2", 9005, 1460),
                ("10.9.1.1", 0, "10.9.2.2", 9005, 1460),
                ("10.9.1.1", 0, "10.9.2.2", 9005, 1460),
            ];
            if first {
                sends.extend([
                    ("10.9.1.1", 0, "10.9.2.2", 9003, 1),
                    ("10.9.1.3", 0, "10.9.2.2", 9003, 1),
                    ("10.9.1.1", 5000, "10.9.2.2", 9004, 1),
                    ("10.9.1.1", 5000, "10.9.2.2", 9004, 1),
                    ("10.9.1.1", 5001, "10.9.2.2", 9004, 1),
                    ("10.9.1.3", 5000, "10.9.2.2", 9004, 1),
                ]);
            }
            sends.extend([("10.9.1.1", 0, "10.9.2.2", 9006, 1); 40]);
            udp_from(&t.sender, &sends);
            // a non-first UDP fragment (no ports: hotdrop); ESP with a 2-byte SPI and AH
            // with 6 bytes (short of their "ports": hotdrop); whole ones keyed by their SPI
            raw_ip(
                &t.sender,
                &[(17, 2, 24), (50, 0, 2), (51, 0, 6), (50, 0, 8), (51, 0, 12)],
            );
        }
        settle_and_compare(&p, d);
    };
    round(&d, true);
    let save = p.kernel_save();
    assert!(
        save.contains("[4:336] -A INPUT -p icmp -m icmp --icmp-type 8 -m hashlimit"),
        "a burst of three per source (the sender's, with its set-up ping) and the target's \
         set-up ping pass:\n{save}"
    );
    // The buckets refill at their rates: the 1/sec ones are full again after 2 s, whatever
    // the exact gap; the 1/hour ones get nothing; the rate-match window saw 40 packets for a
    // rate of 1/sec, over for any gap below 40 s. (Chosen so that the two sides, which send
    // one after the other, cannot straddle a credit even under emulation.)
    std::thread::sleep(Duration::from_millis(2500));
    round(&d, false);
    // a replace keeps every table, and a rule naming one with another configuration shares
    // it as it is
    std::thread::sleep(Duration::from_millis(2500));
    p.ipt(&d, "-A OUTPUT -j ACCEPT");
    p.ipt(
        &d,
        "-I INPUT 1 -p icmp -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 100 --hashlimit-name ping",
    );
    round(&d, false);
    // a restarted daemon adopts the tables and their entries
    let mut d = d;
    d.kill9_and_restart();
    std::thread::sleep(Duration::from_millis(2500));
    round(&d, false);
    // the kernel's refusals, with its errnos (the same message on both sides)
    for bad in [
        "-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-name x --hashlimit-htable-gcinterval 0",
        "-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-name x --hashlimit-htable-expire 0",
        "-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-name x --hashlimit-srcmask 33",
        "-A INPUT -m hashlimit --hashlimit-upto 1/day --hashlimit-burst 10000 --hashlimit-name x",
        "-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-name a/b",
        "-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-name ping --hashlimit-rate-match",
        "-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-name rate",
    ] {
        p.refused(&d, bad);
    }
    // GET_ENTRIES shows revision 3's size and max as the kernel truncated them
    p.ipt(
        &d,
        "-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-name big --hashlimit-htable-size 2000000 --hashlimit-htable-max 3000000",
    );
    // the rules naming `ping` go, and the table with them: a new one starts full
    for _ in 0..2 {
        p.ipt(&d, "-D INPUT 1");
    }
    p.ipt(
        &d,
        "-I INPUT 1 -p icmp -m icmp --icmp-type 8 -m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-name ping -j ACCEPT",
    );
    std::thread::sleep(Duration::from_millis(2500));
    round(&d, false);
    let save = p.kernel_save();
    assert!(
        save.contains("[2:168] -A INPUT -p icmp -m icmp --icmp-type 8 -m hashlimit"),
        "the new table's burst of two passes:\n{save}"
    );
    p.same_listing(&d);
}

/// A TCP header from port 40000 to `dport` with `flags` and `opts` (zero-padded to 4 bytes),
/// its data offset from the length; checksum 0.
fn tcp_bytes(dport: u16, flags: u8, opts: &[u8]) -> Vec<u8> {
    let mut o = opts.to_vec();
    o.resize(opts.len().div_ceil(4) * 4, 0);
    let mut v = 40000u16.to_be_bytes().to_vec();
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    v.push((((20 + o.len()) / 4) as u8) << 4);
    v.extend_from_slice(&[flags, 0xff, 0xff, 0, 0, 0, 0]);
    v.extend_from_slice(&o);
    v
}

/// Sends, from `ns` (10.9.1.1), raw TCP packets to 10.9.2.2: `(fragment offset in 8-byte
/// units, the bytes after the IP header)`.
fn raw_tcp(ns: &Netns, sends: &[(u16, Vec<u8>)]) {
    let list = sends
        .iter()
        .map(|(f, b)| {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("({f}, \"{hex}\")")
        })
        .collect::<Vec<_>>()
        .join(", ");
    ns.sh(&format!(
        "python3 -c 'import socket, struct\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n\
         for f, x in [{list}]:\n    \
             b=bytes.fromhex(x)\n    \
             h=struct.pack(\"!BBHHHBBH4s4s\", 0x45, 0, 20 + len(b), 9, f, 64, 6, 0, socket.inet_aton(\"10.9.1.1\"), socket.inet_aton(\"10.9.2.2\"))\n    \
             s.sendto(h + b, (\"10.9.2.2\", 0))'"
    ));
}

/// `-m tcpmss` on real packets, side by side with the kernel's: SYNs with MSS options inside
/// and outside ranges, `!`, the MSS after NOP, SACK-permitted and timestamps, a kind 2 of
/// the wrong length, a zero length byte before the MSS, an MSS too close to the options' end,
/// no options, a data offset below 5, options or a header past the packet's end (hotdrop:
/// counted by no rule after the one before it, and gone), non-first fragments (their payload
/// read as a header before Linux 7.1's fix, failing at once after it), and real connects
/// with the MSS the stack advertises; what reaches the target is compared too. Then the
/// kernel's refusals of a protocol other than `-p tcp` or an inverted one.
#[test]
fn tcpmss_matches_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        -A FORWARD -s 10.9.2.2 -j ACCEPT\n\
        -A FORWARD -p tcp\n\
        -A FORWARD -p tcp -m tcpmss --mss 1460 -j ACCEPT\n\
        -A FORWARD -p tcp -m tcp --dport 9001 -m tcpmss --mss 1:535 -j DROP\n\
        -A FORWARD -p tcp -m tcpmss ! --mss 536:1400\n\
        -A FORWARD -p tcp -m tcpmss --mss 1000 -j DROP\n\
        -A FORWARD -p tcp -m tcpmss ! --mss 0:65535 -j ACCEPT\n\
        -A FORWARD -p tcp -j DROP\n\
        COMMIT\n";
    p.restore(&d, rules);
    let (k, b) = p.topologies();
    let mss = |v: u16| [2u8, 4, (v >> 8) as u8, v as u8];
    let syn = |dport: u16, opts: &[u8]| (0u16, tcp_bytes(dport, 0x02, opts));
    let mut after_others = vec![1u8, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1];
    after_others.extend_from_slice(&mss(536));
    let mut doff4 = tcp_bytes(9000, 0x02, &[]);
    doff4[12] = 4 << 4;
    let mut opts_cut = tcp_bytes(9000, 0x02, &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    opts_cut.truncate(24);
    let sends = vec![
        syn(9000, &mss(1460)),
        syn(9000, &after_others),
        syn(9001, &mss(500)),
        syn(9000, &mss(500)),
        syn(9000, &mss(1000)),
        syn(9000, &mss(9000)),
        syn(9000, &mss(0)),
        // kind 2 of length 3, skipped by its length; then nothing
        syn(9000, &[2, 3, 5, 1]),
        // kind 2 of length 3, then the MSS
        syn(9000, &[2, 3, 5, 2, 4, 0x03, 0xe8, 1]),
        // a zero length byte steps one byte
        syn(9000, &[9, 0, 2, 4, 0x05, 0xb4]),
        // kind 2 of length 4 with three bytes left: no MSS
        syn(9000, &[1, 1, 1, 1, 1, 2, 4, 5]),
        (0, tcp_bytes(9000, 0x10, &[])),
        (0, doff4),
        (0, opts_cut),
        (0, tcp_bytes(9000, 0x02, &[])[..12].to_vec()),
        // non-first fragments: a payload that reads as a header with an MSS, a short one
        (3, tcp_bytes(9000, 0x02, &mss(1460))),
        (3, tcp_bytes(9000, 0x02, &mss(1000))),
        (5, tcp_bytes(9000, 0x02, &[])),
        (7, vec![0x55; 12]),
    ];
    for t in [&k, &b] {
        // what reaches the target, counted by the kernel's own table there
        t.target.sh("iptables-legacy -A INPUT -p tcp -s 10.9.1.1");
        raw_tcp(&t.sender, &sends);
        // real SYNs: the stack's MSS (1460 on a 1500-byte veth), and 1000 asked with
        // TCP_MAXSEG; nobody listens: the first is answered with a RST, the second dropped
        // (the socket closes before it would retransmit)
        t.sender.sh("python3 -c 'import socket\n\
             for m in [0, 1000]:\n    \
                 s=socket.socket(); s.settimeout(0.5)\n    \
                 m and s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, m)\n    \
                 s.connect_ex((\"10.9.2.2\", 9002)); s.close()'");
    }
    settle_and_compare(&p, &d);
    let arrived = |t: &common::Topology| {
        t.target
            .sh("iptables-legacy -L INPUT -v -x -n | tail -n +3 | awk '{print $1, $2}'")
    };
    assert_eq!(
        arrived(&b),
        arrived(&k),
        "packets at the target (bpfilter, kernel)"
    );
    // the traffic reaches every rule (the kernel's counts, which bpfilter's equal)
    let save = p.kernel_save();
    let packets = |rule: &str| -> u64 {
        save.lines()
            .find_map(|l| {
                let (c, r) = l.strip_prefix('[')?.split_once("] ")?;
                (r == rule).then(|| c.split(':').next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no rule `{rule}` in\n{save}"))
    };
    let rules_seen: Vec<u64> = rules
        .lines()
        .filter(|l| l.starts_with("-A FORWARD -p tcp"))
        .map(packets)
        .collect();
    assert!(
        rules_seen.iter().all(|&n| n > 0),
        "every tcp rule must see traffic: {rules_seen:?}\n{save}"
    );
    // the hotdrops (a data offset of 4, options cut, a 12-byte header: at least three) are
    // counted by the first rule and by no rule that ends a packet after it
    let ended: u64 = rules
        .lines()
        .filter(|l| l.starts_with("-A FORWARD -p tcp") && l.contains(" -j "))
        .map(packets)
        .sum();
    assert!(
        packets("-A FORWARD -p tcp") >= ended + 3,
        "three packets or more must vanish at the tcpmss rules:\n{save}"
    );
    // a tcpmss match needs `-p tcp`, not inverted: EINVAL from xt_check_match
    for bad in [
        "-A FORWARD -p udp -m tcpmss --mss 1000",
        "-A FORWARD ! -p tcp -m tcpmss --mss 1000",
        "-A FORWARD -m tcpmss --mss 1000",
    ] {
        let err = p.refused(&d, bad);
        assert!(err.contains("Invalid argument"), "`{bad}`: {err}");
    }
    // deletion by specification, then the listing in every format
    p.ipt(&d, "-D FORWARD -p tcp -m tcpmss --mss 1000 -j DROP");
    p.same_listing(&d);
}

/// `-m mac --mac-source` on real Ethernet (veth) traffic: the sender's address, `!`, an
/// address nobody has, in INPUT, in FORWARD both ways (the sender's and the target's), in a
/// user chain reached from both; never on the loopback device (not Ethernet, though its
/// packets carry a zeroed MAC header), `!` or not. OUTPUT refuses it (EINVAL: PREROUTING,
/// INPUT and FORWARD only), also behind a jump.
#[test]
fn mac_source_matches_as_the_kernels() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let (sm, tm) = (common::SENDER_MAC, common::TARGET_MAC);
    let rules = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:macs - [0:0]\n\
        -A INPUT -p udp --dport 7001 -m mac --mac-source {sm} -j ACCEPT\n\
        -A INPUT -p udp --dport 7002 -m mac ! --mac-source {sm} -j ACCEPT\n\
        -A INPUT -p udp --dport 7003 -m mac --mac-source 02:00:00:00:00:99 -j ACCEPT\n\
        -A INPUT -p udp --dport 7004 -m mac ! --mac-source 02:00:00:00:00:99 -j ACCEPT\n\
        -A INPUT -p udp --dport 7005 -m mac --mac-source {sm} -j DROP\n\
        -A INPUT -i lo -m mac --mac-source 00:00:00:00:00:00 -j ACCEPT\n\
        -A INPUT -i lo -m mac ! --mac-source {sm} -j ACCEPT\n\
        -A INPUT -j macs\n\
        -A FORWARD -p icmp -m mac --mac-source {sm} -j ACCEPT\n\
        -A FORWARD -p icmp -m mac --mac-source {tm} -j ACCEPT\n\
        -A FORWARD -j macs\n\
        -A macs -m mac ! --mac-source {tm} -j RETURN\n\
        -A macs -j ACCEPT\n\
        COMMIT\n"
    );
    p.restore(&d, &rules);
    let (k, b) = p.topologies();
    for (fw, t) in [(&p.kernel, &k), (&p.bpf, &b)] {
        udp(
            &t.sender,
            &[
                "10.9.1.2:7001",
                "10.9.1.2:7002",
                "10.9.1.2:7003",
                "10.9.1.2:7004",
                "10.9.1.2:7005",
                "10.9.1.2:7006",
            ],
        );
        t.sender
            .sh("ping -c 2 -i 0.05 -W 0.5 10.9.2.2 >/dev/null; true");
        udp(&t.target, &["10.9.1.1:7007", "10.9.2.1:7008"]);
        fw.sh("ping -c 1 -W 0.5 127.0.0.1 >/dev/null; true");
        udp(fw, &["127.0.0.1:7001"]);
    }
    settle_and_compare(&p, &d);
    let save = p.kernel_save();
    for rule in [
        format!("[1:29] -A INPUT -p udp -m udp --dport 7001 -m mac --mac-source {sm}"),
        "[0:0] -A INPUT -p udp -m udp --dport 7002 -m mac ! --mac-source".into(),
        "[1:29] -A INPUT -p udp -m udp --dport 7004 -m mac ! --mac-source 02:00:00:00:00:99".into(),
        format!("[2:168] -A FORWARD -p icmp -m mac --mac-source {tm}"),
        format!("[0:0] -A INPUT -i lo -m mac ! --mac-source {sm}"),
    ] {
        assert!(
            save.contains(&rule),
            "the traffic must have hit `{rule}` so (a loopback packet is never compared):\n{save}"
        );
    }
    // OUTPUT has no MAC header to read: the kernel refuses the match there (EINVAL), also
    // in a chain OUTPUT jumps to
    p.refused(&d, &format!("-A OUTPUT -m mac --mac-source {sm}"));
    p.refused(&d, "-A OUTPUT -j macs");
    p.same_listing(&d);
}
