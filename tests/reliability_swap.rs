//! Atomic swap under traffic: while UDP flows at full rate into a namespace, one long-running
//! `iptables-legacy-restore --noflush` (through bpfilter) swaps INPUT's jump between two chains
//! A and B many times (`-R INPUT 2 ... -j A|B`, one COMMIT each). Every rule but the jump is
//! kept by every swap, so its counters go on across the swaps as iptables carries them
//! (SET_ADD_COUNTERS) and as the daemon keeps their slots in one counter map without waiting
//! for the old programs. At the end the counts iptables reads must account for every packet
//! that reached INPUT exactly once, each packet judged wholly by A or wholly by B, and no
//! packet that both rulesets drop may ever arrive.
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
use common::{sender_link, Daemon, Tool};
use test_support::netns::{spawn_in, Netns};
use test_support::privileged;

const FW: &str = "10.77.1.2";
const SENDER: &str = "10.77.1.1";
const PASS_PORT: u16 = 5001;
const DROP_PORT: u16 = 5003;

/// The drop rule (5003), the jump to A or B (5001); A: count rule, accept rule; B: count rule,
/// accept rule through multiport. The policy is never reached.
const RULESET: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
    :A - [0:0]\n:B - [0:0]\n\
    -A INPUT -p udp -m udp --dport 5003 -j DROP\n\
    -A INPUT -p udp -m udp --dport 5001 -j A\n\
    -A A -p udp -m udp --dport 5001 -m comment --comment a0\n\
    -A A -p udp -m udp --dport 5001 -j ACCEPT\n\
    -A B -p udp -m udp --dport 5001 -m comment --comment b1\n\
    -A B -p udp -m multiport --dports 5000:5002 -j ACCEPT\n\
    COMMIT\n";

/// The rules whose counts the test reads, as `iptables-save` prints them.
const DROP_RULE: &str = "-A INPUT -p udp -m udp --dport 5003 -j DROP";
const A_COUNT: &str = "-A A -p udp -m udp --dport 5001 -m comment --comment a0";
const A_ACCEPT: &str = "-A A -p udp -m udp --dport 5001 -j ACCEPT";
const B_COUNT: &str = "-A B -p udp -m udp --dport 5001 -m comment --comment b1";
const B_ACCEPT: &str = "-A B -p udp -m multiport --dports 5000:5002 -j ACCEPT";

/// `[packets:bytes]` of the rule `rule` in `iptables-save -c` output.
fn packets(save: &str, rule: &str) -> u64 {
    save.lines()
        .find_map(|l| {
            let (c, r) = l.strip_prefix('[')?.split_once("] ")?;
            (r == rule).then(|| c.split(':').next()?.parse::<u64>().ok())?
        })
        .unwrap_or_else(|| panic!("no `{rule}` in\n{save}"))
}

/// The policy packet count of `chain` in `iptables-save -c` output.
fn policy_packets(save: &str, chain: &str) -> u64 {
    save.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(&format!(":{chain} "))?;
            rest.split_once('[')?.1.split(':').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no policy of {chain} in\n{save}"))
}

fn full_run() -> bool {
    std::env::var("BPFILTER_RELIABILITY_FULL").is_ok_and(|v| v == "1")
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
    let veth = sender_link(&snd, SENDER, &fw, FW);
    d.iptables_ok(&fw, Tool::Restore, &[], RULESET);
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
    let sockets = spawn_in(&fw.name, || {
        let pass = UdpSocket::bind((FW, PASS_PORT)).expect("bind pass");
        let drop = UdpSocket::bind((FW, DROP_PORT)).expect("bind drop");
        drop.set_nonblocking(true).expect("nonblocking");
        (pass, drop)
    })
    .join()
    .expect("bind thread");

    let rx_before = fw.in_receives();
    let txdrop_before = tx_dropped(&snd, &veth);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let sender = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        spawn_in(&snd.name, move || {
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
        .args(["iptables-restore", "--noflush"])
        .env("BPFILTER_SOCKET", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn restore");
    let mut pipe = restore.stdin.take().expect("stdin");

    let counter_map = |n: u64| {
        Map::from_pin(table_dir.join(format!("gen{n}/counters")))
            .and_then(|m| m.id())
            .expect("counter map id")
    };
    let first_map = counter_map(gens(&table_dir)[0]);
    let started = Instant::now();
    let mut to_b = true;
    let mut swaps = 0u32;
    let mut slowest = Duration::ZERO;
    let mut maps_seen = 1;
    while swaps < swaps_wanted && started.elapsed() < time_cap {
        let g = gens(&table_dir);
        assert_eq!(
            g.len(),
            1,
            "exactly one generation between swaps, found {g:?}\n{}",
            d.log()
        );
        let n = g[0];
        if counter_map(n) != first_map {
            maps_seen += 1;
        }
        let t0 = Instant::now();
        let chain = if to_b { "B" } else { "A" };
        pipe.write_all(
            format!("*filter\n-R INPUT 2 -p udp -m udp --dport 5001 -j {chain}\nCOMMIT\n")
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
        to_b = !to_b;
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
    let save = d.iptables(&fw, Tool::Save, &["-c"], "");
    assert!(save.status.success(), "{save:?}");
    let save = String::from_utf8_lossy(&save.stdout).into_owned();
    let (a_count, a_accept) = (packets(&save, A_COUNT), packets(&save, A_ACCEPT));
    let (b_count, b_accept) = (packets(&save, B_COUNT), packets(&save, B_ACCEPT));
    let dropped = packets(&save, DROP_RULE);
    let policy = policy_packets(&save, "INPUT");
    let pass = a_accept + b_accept;
    let sent_pass = sent[0].load(Ordering::Relaxed);
    let sent_drop = sent[1].load(Ordering::Relaxed);
    let lost_on_wire = tx_dropped(&snd, &veth) - txdrop_before;
    let received = fw.in_receives() - rx_before;
    let mut arrived_drop_port = 0u64;
    let mut buf = [0u8; 128];
    while sockets.1.recv(&mut buf).is_ok() {
        arrived_drop_port += 1;
    }
    eprintln!(
        "swap under traffic: {swaps} swaps in {:.1} s (slowest {:.1} ms), sent {sent_pass}+{sent_drop}, \
         lost on the veth {lost_on_wire}, InReceives {received}, judged pass {pass} (A {a_accept} B {b_accept}), \
         dropped {dropped}, policy {policy}, arrived at the drop port {arrived_drop_port}",
        elapsed.as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
    );
    assert!(
        swaps >= if full_run() { 1000 } else { 200 },
        "only {swaps} swaps in {elapsed:?}"
    );
    assert_eq!(
        maps_seen, 1,
        "the swaps keep every other rule, so they share one counter map"
    );
    assert!(
        a_accept > 0 && b_accept > 0,
        "traffic must be judged by both chains\n{save}"
    );
    assert_eq!(
        (a_count, b_count),
        (a_accept, b_accept),
        "packets counted by one chain's count rule but not its accept rule\n{save}"
    );
    assert_eq!(arrived_drop_port, 0, "a packet both rulesets drop arrived");
    assert_eq!(policy, 0, "no packet should reach the policy\n{save}");
    assert_eq!(
        pass + dropped,
        received,
        "every packet that reached INPUT is judged and counted exactly once\n{save}"
    );
    if lost_on_wire == 0 {
        assert_eq!(
            dropped, sent_drop,
            "every drop-port packet was dropped by the drop rule"
        );
        assert_eq!(
            pass, sent_pass,
            "every pass-port packet was accepted by an accept rule"
        );
    } else {
        assert!(
            dropped <= sent_drop && pass <= sent_pass,
            "more judged than sent"
        );
    }
    assert_eq!(
        received,
        sent_pass + sent_drop - lost_on_wire,
        "packets sent == packets received"
    );
}
