//! Interface matching with real packets: a network namespace joined to the host by a veth
//! pair, programs attached inside it with `sys::Link::netfilter` (through `sys::in_netns`),
//! UDP sent across, counters checked. Test runs cannot do this: their `state->in/out` are
//! NULL or `lo`. Under CI=true the test fails when it cannot run; otherwise it skips.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;

use bpfilter::layout::kernel_layout;
use bpfilter::sys::{in_netns, open_netns, Btf, Link, Map, MapType, Program as BpfProgram};
use emitter::codegen::{compile_with, Options};
use emitter::ir::*;

use test_support::ir::{proto, rule, udpm};
use test_support::unavailable;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A namespace with one end of a veth pair; removed (with the pair) on drop.
struct Topo {
    ns: String,
    host_if: String,
    ns_if: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
}

impl Topo {
    fn new() -> Result<Topo, String> {
        let id = std::process::id() % 10000;
        let t = Topo {
            ns: format!("bpfltr-dpi-{id}"),
            host_if: format!("bpvA{id}"),
            ns_if: format!("bpvB{id}"),
            host_addr: Ipv4Addr::new(10, 213, (id % 250) as u8, 1),
            ns_addr: Ipv4Addr::new(10, 213, (id % 250) as u8, 2),
        };
        let _ = ip(&["netns", "del", &t.ns]);
        ip(&["netns", "add", &t.ns])?;
        ip(&[
            "link", "add", &t.host_if, "type", "veth", "peer", "name", &t.ns_if, "netns", &t.ns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", t.host_addr),
            "dev",
            &t.host_if,
        ])?;
        ip(&["link", "set", &t.host_if, "up"])?;
        ip(&[
            "-n",
            &t.ns,
            "addr",
            "add",
            &format!("{}/24", t.ns_addr),
            "dev",
            &t.ns_if,
        ])?;
        ip(&["-n", &t.ns, "link", "set", &t.ns_if, "up"])?;
        ip(&["-n", &t.ns, "link", "set", "lo", "up"])?;
        Ok(t)
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

fn udp_dport(p: u16) -> Vec<Match> {
    vec![
        proto(17, false),
        udpm(PortRange::ANY, PortRange::one(p), false, false),
    ]
}

fn with(mut m: Vec<Match>, extra: Match) -> Vec<Match> {
    m.push(extra);
    m
}

fn counters(map: &Map, slots: u32) -> Vec<u64> {
    (0..slots)
        .map(|k| {
            map.lookup_percpu(&k.to_ne_bytes())
                .unwrap()
                .iter()
                .map(|v| u64::from_ne_bytes(v[0..8].try_into().unwrap()))
                .sum()
        })
        .collect()
}

fn load(p: &Program, map: &Map) -> BpfProgram {
    load_with(p, map, Options::default())
}

fn load_with(p: &Program, map: &Map, opts: Options) -> BpfProgram {
    let btf = Btf::vmlinux().unwrap();
    let layout = kernel_layout(&btf).unwrap();
    let c = compile_with(p, &layout, opts).unwrap();
    let fd = map.fd().as_raw_fd();
    let bytes = c.bytes(&|_| fd);
    BpfProgram::load_netfilter("bpfltr_iface", &bytes, 0)
        .unwrap()
        .0
}

#[test]
fn interfaces_over_veth() {
    if let Err(e) = Map::create(MapType::Array, 4, 4, 1, "bpfltr_probe") {
        return unavailable(&format!("BPF unavailable: {e}"));
    }
    let topo = match Topo::new() {
        Ok(t) => t,
        Err(e) => return unavailable(&format!("cannot build the veth topology: {e}")),
    };
    let nsfd = open_netns(format!("/run/netns/{}", topo.ns)).unwrap();
    const PORT: u16 = 5001;
    const N: u64 = 7;

    // LOCAL_IN inside the namespace: packets come in through ns_if, no output device.
    let iface = |n: &str, inv: bool| Iface::iptables(n, inv);
    let prefix = format!("{}+", &topo.ns_if[..4]);
    let in_rules = vec![
        rule(
            with(udp_dport(PORT), Match::InIface(iface(&topo.ns_if, false))),
            Action::Continue,
            0,
        ),
        rule(
            with(udp_dport(PORT), Match::InIface(iface(&prefix, false))),
            Action::Continue,
            1,
        ),
        rule(
            with(udp_dport(PORT), Match::InIface(iface(&topo.ns_if, true))),
            Action::Continue,
            2,
        ),
        rule(
            with(udp_dport(PORT), Match::InIface(iface("lo", false))),
            Action::Continue,
            3,
        ),
        rule(
            with(udp_dport(PORT), Match::OutIface(iface(&topo.ns_if, false))),
            Action::Continue,
            4,
        ),
        rule(
            with(udp_dport(PORT), Match::OutIface(iface(&topo.ns_if, true))),
            Action::Continue,
            5,
        ),
        rule(
            with(udp_dport(PORT), Match::InIface(iface(&topo.host_if, false))),
            Action::Continue,
            6,
        ),
        rule(udp_dport(PORT), Action::Accept, 7),
    ];
    let in_prog = Program::single(
        Hook::LocalIn,
        in_rules,
        Policy {
            verdict: Verdict::Accept,
            counter: 8,
        },
    );
    let in_map = Map::create(MapType::PercpuArray, 4, 16, 9, "bpfltr_ifc_in").unwrap();
    let in_bpf = load(&in_prog, &in_map);
    let _in_link = Link::netfilter_in(nsfd.as_fd(), &in_bpf, 2, 1, 17, 0).unwrap();
    // the same rules compiled branch free, attached after it (both accept)
    let in_map2 = Map::create(MapType::PercpuArray, 4, 16, 9, "bpfltr_ifc_in2").unwrap();
    let in_bpf2 = load_with(
        &in_prog,
        &in_map2,
        Options {
            pending_budget: 0,
            ..Options::default()
        },
    );
    let _in_link2 = Link::netfilter_in(nsfd.as_fd(), &in_bpf2, 2, 1, 18, 0).unwrap();

    // LOCAL_OUT inside the namespace: replies leave through ns_if, no input device.
    let out_rules = vec![
        rule(
            with(
                udp_dport(PORT + 1),
                Match::OutIface(iface(&topo.ns_if, false)),
            ),
            Action::Continue,
            0,
        ),
        rule(
            with(
                udp_dport(PORT + 1),
                Match::InIface(iface(&topo.ns_if, false)),
            ),
            Action::Continue,
            1,
        ),
        rule(
            with(udp_dport(PORT + 1), Match::InIface(iface("+", false))),
            Action::Continue,
            2,
        ),
        rule(
            with(udp_dport(PORT + 1), Match::OutIface(iface("lo", true))),
            Action::Continue,
            3,
        ),
        rule(udp_dport(PORT + 1), Action::Drop, 4),
    ];
    let out_prog = Program::single(
        Hook::LocalOut,
        out_rules,
        Policy {
            verdict: Verdict::Accept,
            counter: 5,
        },
    );
    let out_map = Map::create(MapType::PercpuArray, 4, 16, 6, "bpfltr_ifc_out").unwrap();
    let out_bpf = load(&out_prog, &out_map);
    let _out_link = Link::netfilter_in(nsfd.as_fd(), &out_bpf, 2, 3, 17, 0).unwrap();

    // host -> namespace
    let ns_addr = topo.ns_addr;
    let rx = in_netns(nsfd.as_fd(), move || UdpSocket::bind((ns_addr, PORT)))
        .unwrap()
        .unwrap();
    let tx = UdpSocket::bind((topo.host_addr, 0)).unwrap();
    for _ in 0..N {
        tx.send_to(b"bpfilter", (topo.ns_addr, PORT)).unwrap();
    }
    // namespace -> host (dropped by the LOCAL_OUT program: sendto still succeeds or EPERM)
    let host_addr = topo.host_addr;
    in_netns(nsfd.as_fd(), move || {
        let s = UdpSocket::bind((ns_addr, 0)).unwrap();
        for _ in 0..N {
            let _ = s.send_to(b"bpfilter", (host_addr, PORT + 1));
        }
    })
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut buf = [0u8; 16];
    rx.set_nonblocking(true).unwrap();
    let mut received = 0;
    while rx.recv(&mut buf).is_ok() {
        received += 1;
    }

    let c = counters(&in_map, 9);
    eprintln!("LOCAL_IN counters {c:?}, received {received}");
    let expect_in: BTreeMap<usize, u64> = [
        (0, N),
        (1, N),
        (2, 0),
        (3, 0),
        (4, 0),
        (5, N),
        (6, 0),
        (7, N),
    ]
    .into();
    for (k, v) in &expect_in {
        assert_eq!(c[*k], *v, "LOCAL_IN slot {k}: {c:?}");
    }
    assert_eq!(received, N);
    assert_eq!(counters(&in_map2, 9), c, "branch-free form counts the same");

    let c = counters(&out_map, 6);
    eprintln!("LOCAL_OUT counters {c:?}");
    let expect_out: BTreeMap<usize, u64> = [(0, N), (1, 0), (2, N), (3, N), (4, N)].into();
    for (k, v) in &expect_out {
        assert_eq!(c[*k], *v, "LOCAL_OUT slot {k}: {c:?}");
    }
}
