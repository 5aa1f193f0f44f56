//! Atomic swap under traffic: while UDP flows at full rate into a namespace, one long-running
//! `iptables-legacy-restore` (through bpfilter) alternates between two rulesets A and B many
//! times. Every generation's counter map is read after the daemon retired it (its pin folder
//! gone), so each generation's final per-rule counts are exact; together they must account for
//! every packet that reached INPUT exactly once, each packet judged wholly by A or wholly by B,
//! and no packet that both A and B drop may ever arrive.
//!
//! Bounded run: 250 swaps. `BPFILTER_RELIABILITY_FULL=1`: 1,000 swaps.

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpfilter::sys::Map;
use common::{privileged, sh, Daemon, Netns, Tool};

const FW: &str = "10.77.1.2";
const SENDER: &str = "10.77.1.1";
const PASS_PORT: u16 = 5001;
const DROP_PORT: u16 = 5003;

/// A: count rule, accept rule (5001); drop rule (5003); policy. Entry indices 0..=3.
const RULESET_A: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
    -A INPUT -p udp -m udp --dport 5001 -m comment --comment a0\n\
    -A INPUT -p udp -m udp --dport 5001 -j ACCEPT\n\
    -A INPUT -p udp -m udp --dport 5003 -j DROP\n\
    COMMIT\n";
/// B: drop rule (5003) first, then count rule and accept rule (5001, through multiport).
const RULESET_B: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
    -A INPUT -p udp -m udp --dport 5003 -j DROP\n\
    -A INPUT -p udp -m udp --dport 5001 -m comment --comment b1\n\
    -A INPUT -p udp -m multiport --dports 5000:5002 -j ACCEPT\n\
    COMMIT\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    A,
    B,
}

/// Per-generation verdict counts read from its retired counter map.
#[derive(Debug, Default, Clone, Copy)]
struct Judged {
    pass: u64,
    dropped: u64,
    other: u64,
    mixed: u64,
}

impl Judged {
    fn of(which: Which, c: &[Vec<u64>]) -> Judged {
        let p = |i: usize| c.get(i).and_then(|v| v.first()).copied().unwrap_or(0);
        let (count, accept, drop) = match which {
            Which::A => (p(0), p(1), p(2)),
            Which::B => (p(1), p(2), p(0)),
        };
        Judged {
            pass: accept,
            dropped: drop,
            other: p(3),
            mixed: count.abs_diff(accept),
        }
    }
    fn add(&mut self, o: Judged) {
        self.pass += o.pass;
        self.dropped += o.dropped;
        self.other += o.other;
        self.mixed += o.mixed;
    }
}

fn full_run() -> bool {
    std::env::var("BPFILTER_RELIABILITY_FULL").is_ok_and(|v| v == "1")
}

/// Runs `f` on a thread that entered the namespace `ns` (setns is per thread for CLONE_NEWNET).
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// `Ip: InReceives` of the namespace the calling thread is in.
fn in_receives_here() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
    let mut lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        panic!("no Ip: lines")
    };
    let i = h
        .split_whitespace()
        .position(|c| c == "InReceives")
        .expect("InReceives");
    v.split_whitespace()
        .nth(i)
        .expect("value")
        .parse()
        .expect("number")
}

fn in_receives(ns: &str) -> u64 {
    in_ns(ns, in_receives_here).join().expect("snmp thread")
}

fn tx_dropped(ns: &Netns, dev: &str) -> u64 {
    ns.sh(&format!("cat /sys/class/net/{dev}/statistics/tx_dropped"))
        .trim()
        .parse()
        .expect("tx_dropped")
}

fn gens(table_dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(table_dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("gen")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

#[test]
fn swaps_under_traffic_judge_every_packet_by_exactly_one_ruleset() {
    if !privileged() {
        return;
    }
    let swaps_wanted = if full_run() { 1000 } else { 250 };
    let time_cap = Duration::from_secs(if full_run() { 600 } else { 75 });
    let d = Daemon::start();
    let fw = Netns::new("rwf");
    let snd = Netns::new("rws");
    let veth = format!("v{}", snd.name);
    for ns in [&fw.name, &snd.name] {
        sh(&format!("ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"));
    }
    sh(&format!(
        "ip link add {veth} netns {s} type veth peer name p{veth} netns {f} && \
         ip -n {s} addr add {SENDER}/24 dev {veth} && ip -n {s} link set {veth} up && \
         ip -n {f} addr add {FW}/24 dev p{veth} && ip -n {f} link set p{veth} up && \
         ip netns exec {s} ping -c1 -W2 {FW} >/dev/null",
        s = snd.name,
        f = fw.name
    ));
    let out = d.iptables(&fw, Tool::Restore, &[], RULESET_A);
    assert!(
        out.status.success(),
        "restore A: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ino = std::fs::metadata(format!("/run/netns/{}", fw.name))
        .expect("netns")
        .ino();
    let table_dir: PathBuf = d.bpffs.join(format!("net{ino}")).join("filter");
    assert_eq!(
        gens(&table_dir).len(),
        1,
        "one generation pinned: {:?}",
        gens(&table_dir)
    );

    // Sockets on both ports, so that accepted packets raise no ICMP errors and a packet that
    // slips through to the drop port is seen.
    let sockets = in_ns(&fw.name, || {
        let pass = UdpSocket::bind((FW, PASS_PORT)).expect("bind pass");
        let drop = UdpSocket::bind((FW, DROP_PORT)).expect("bind drop");
        drop.set_nonblocking(true).expect("nonblocking");
        (pass, drop)
    })
    .join()
    .expect("bind thread");

    let rx_before = in_receives(&fw.name);
    let txdrop_before = tx_dropped(&snd, &veth);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let sender = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        in_ns(&snd.name, move || {
            let s = UdpSocket::bind((SENDER, 0)).expect("bind sender");
            let payload = [0x5au8; 64];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // One packet in 16 goes to the port both rulesets drop.
                let (port, slot) = if n % 16 == 0 {
                    (DROP_PORT, 1)
                } else {
                    (PASS_PORT, 0)
                };
                if s.send_to(&payload, (FW, port)).is_ok() {
                    sent[slot].fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let mut restore = Command::new("ip")
        .args(["netns", "exec", &fw.name])
        .arg(common::bpfilter_bin())
        .arg("iptables-restore")
        .env("BPFILTER_SOCKET", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn restore");
    let mut pipe = restore.stdin.take().expect("stdin");

    let started = Instant::now();
    let mut total = Judged::default();
    let mut per = [Judged::default(), Judged::default()];
    let mut current = Which::A;
    let mut swaps = 0u32;
    let mut slowest = Duration::ZERO;
    while swaps < swaps_wanted && started.elapsed() < time_cap {
        let g = gens(&table_dir);
        assert_eq!(
            g.len(),
            1,
            "exactly one generation between swaps, found {g:?}\n{}",
            d.log()
        );
        let n = g[0];
        let counters =
            Map::from_pin(table_dir.join(format!("gen{n}/counters"))).expect("open counters");
        let next = if current == Which::A {
            Which::B
        } else {
            Which::A
        };
        let t0 = Instant::now();
        pipe.write_all(
            if next == Which::A {
                RULESET_A
            } else {
                RULESET_B
            }
            .as_bytes(),
        )
        .expect("write block");
        pipe.flush().expect("flush");
        let deadline = Instant::now() + Duration::from_secs(20);
        while table_dir.join(format!("gen{n}")).exists()
            || !table_dir.join(format!("gen{}/ruleset", n + 1)).exists()
        {
            if let Ok(Some(st)) = restore.try_wait() {
                panic!(
                    "iptables-restore exited ({st}) after {swaps} swaps\n{}",
                    d.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "swap {swaps} (gen {n}) did not finish\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        slowest = slowest.max(t0.elapsed());
        // gen n is retired: no packet can still be inside it, its counts are final.
        let j = Judged::of(
            current,
            &counters.sum_percpu_u64_all().expect("read counters"),
        );
        total.add(j);
        per[current as usize].add(j);
        current = next;
        swaps += 1;
    }
    let elapsed = started.elapsed();
    drop(pipe);
    let st = restore.wait_with_output().expect("restore");
    assert!(
        st.status.success(),
        "iptables-restore failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender");
    std::thread::sleep(Duration::from_millis(300));
    // The generation still running: its live counts (no traffic any more).
    let g = gens(&table_dir);
    assert_eq!(g.len(), 1, "{g:?}");
    let last =
        Map::from_pin(table_dir.join(format!("gen{}/counters", g[0]))).expect("open counters");
    let j = Judged::of(current, &last.sum_percpu_u64_all().expect("read counters"));
    total.add(j);
    per[current as usize].add(j);
    // What iptables reads through the daemon agrees with the map read directly.
    let save = d.iptables(&fw, Tool::Save, &["-c"], "");
    let save = String::from_utf8_lossy(&save.stdout).into_owned();
    let count_rule = match current {
        Which::A => "-A INPUT -p udp -m udp --dport 5001 -m comment --comment a0",
        Which::B => "-A INPUT -p udp -m udp --dport 5001 -m comment --comment b1",
    };
    let shown = save.lines().find_map(|l| {
        let (c, r) = l.strip_prefix('[')?.split_once("] ")?;
        (r == count_rule).then(|| c.split(':').next()?.parse::<u64>().ok())?
    });
    assert_eq!(
        shown,
        Some(j.pass),
        "iptables-save -c of the last generation\n{save}"
    );

    let sent_pass = sent[0].load(Ordering::Relaxed);
    let sent_drop = sent[1].load(Ordering::Relaxed);
    let lost_on_wire = tx_dropped(&snd, &veth) - txdrop_before;
    let received = in_receives(&fw.name) - rx_before;
    let mut arrived_drop_port = 0u64;
    let mut buf = [0u8; 128];
    while sockets.1.recv(&mut buf).is_ok() {
        arrived_drop_port += 1;
    }
    eprintln!(
        "swap under traffic: {swaps} swaps in {:.1} s (slowest {:.1} ms), sent {sent_pass}+{sent_drop}, \
         lost on the veth {lost_on_wire}, InReceives {received}, judged pass {} (A {} B {}), dropped {} (A {} B {}), \
         other {}, mixed {}, arrived at the drop port {arrived_drop_port}",
        elapsed.as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
        total.pass,
        per[0].pass,
        per[1].pass,
        total.dropped,
        per[0].dropped,
        per[1].dropped,
        total.other,
        total.mixed,
    );
    assert!(
        swaps >= if full_run() { 1000 } else { 200 },
        "only {swaps} swaps in {elapsed:?}"
    );
    assert!(
        per[0].pass > 0 && per[1].pass > 0,
        "traffic must be judged by both rulesets"
    );
    assert_eq!(
        total.mixed, 0,
        "packets counted by one ruleset's count rule but not its accept rule"
    );
    assert_eq!(arrived_drop_port, 0, "a packet both rulesets drop arrived");
    assert_eq!(total.other, 0, "no packet should reach the policy");
    assert_eq!(
        total.pass + total.dropped,
        received,
        "every packet that reached INPUT is judged exactly once"
    );
    if lost_on_wire == 0 {
        assert_eq!(
            total.dropped, sent_drop,
            "every drop-port packet was dropped by a drop rule"
        );
        assert_eq!(
            total.pass, sent_pass,
            "every pass-port packet was accepted by an accept rule"
        );
    } else {
        assert!(
            total.dropped <= sent_drop && total.pass <= sent_pass,
            "more judged than sent"
        );
    }
    assert_eq!(
        received,
        sent_pass + sent_drop - lost_on_wire,
        "packets sent == packets received"
    );
}
