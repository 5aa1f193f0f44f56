//! Privileged datapath tests of IPv6 programs: IR programs of family IPv6 compiled by the
//! emitter, loaded into the real kernel, run with BPF_PROG_TEST_RUN (`nf_hook_state.pf =
//! NFPROTO_IPV6`) on crafted IPv6 packets (extension-header chains, non-first fragments,
//! truncated headers); verdicts and every counter delta are compared with the reference
//! evaluator (`emitter::reference`), which is itself checked against hand-written
//! expectations. Under CI=true they fail when BPF is unavailable; otherwise they skip.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;

use bpfilter::layout::kernel_layout;
use bpfilter::sys::{num_possible_cpus, Btf, Map, MapType, Program as BpfProgram};
use emitter::codegen::{Options, PacketAccess};
use emitter::ir::*;
use emitter::reference::{evaluate, Outcome, Packet};
use emitter::{KernelLayout, MapRef};
use proptest::prelude::*;
use test_support::ipv6::{self, nh, Ext};

// ---------------------------------------------------------------------------------------------
// harness

struct Env {
    layout: KernelLayout,
    accesses: Vec<PacketAccess>,
}

fn env() -> Option<Env> {
    let unavailable = |why: &str| {
        test_support::unavailable(why);
        None
    };
    let btf = match Btf::vmlinux() {
        Ok(b) => b,
        Err(e) => return unavailable(&format!("no vmlinux BTF: {e}")),
    };
    let layout = match kernel_layout(&btf) {
        Ok(l) => l,
        Err(e) => return unavailable(&format!("BTF layout: {e}")),
    };
    if let Err(e) = Map::create(MapType::Array, 4, 4, 1, "wtb_probe") {
        return unavailable(&format!("BPF unavailable: {e}"));
    }
    let _ = num_possible_cpus().unwrap();
    let accesses = PacketAccess::ALL
        .into_iter()
        .filter(|a| bpfilter::probe::try_strategy(&layout, *a).is_ok())
        .collect();
    Some(Env { layout, accesses })
}

/// Every way a program is compiled: the three rule forms, and each packet access this kernel
/// verifies (IPv6 programs compile the dynptr prologue for both).
fn variants(env: &Env) -> Vec<(String, Options)> {
    let mut v = vec![
        ("split".to_owned(), Options::default()),
        (
            "branches".to_owned(),
            Options {
                split: false,
                ..Options::default()
            },
        ),
        (
            "combined".to_owned(),
            Options {
                pending_budget: 0,
                ..Options::default()
            },
        ),
    ];
    for &access in &env.accesses {
        v.push((
            access.name().to_owned(),
            Options {
                access,
                ..Options::default()
            },
        ));
    }
    v
}

thread_local! {
    /// Instructions the verifier processed for the last program `load` loaded.
    static VERIFIED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

struct Loaded {
    prog: BpfProgram,
    counters: Map,
    slots: u32,
    hook: Hook,
    #[allow(dead_code, reason = "kept open while the program runs")]
    maps: Vec<Map>,
}

fn max_slot(p: &Program) -> u32 {
    p.chains
        .values()
        .flat_map(|c| &c.rules)
        .map(|r| r.counter)
        .fold(p.policy.counter, u32::max)
}

fn load(env: &Env, p: &Program, opts: Options) -> Loaded {
    let out = bpfilter::xlate::compile(p, &env.layout, opts).expect("compile");
    let own: Vec<Map> = out
        .maps
        .iter()
        .map(|spec| Map::from_spec(spec, "wtb_set").unwrap())
        .collect();
    let slots = max_slot(p) + 1;
    let counters = Map::create(MapType::PercpuArray, 4, 16, slots, "wtb_ctr").unwrap();
    let events = Map::create(MapType::RingBuf, 0, 0, 1 << 16, "wtb_ev").unwrap();
    let loss = Map::create(MapType::Array, 4, 8, emitter::event::LOSS_SLOTS, "wtb_evl").unwrap();
    // the LOG gate open, as the daemon keeps it while it writes lines
    loss.update(
        &emitter::event::LOG_GATE.to_ne_bytes(),
        &1u64.to_ne_bytes(),
        0,
    )
    .unwrap();
    let limits = Map::create(MapType::Array, 4, 8, 64, "wtb_lim").unwrap();
    let addrtypes = Map::create(
        MapType::LpmTrie,
        emitter::codegen::ADDRTYPE_KEY_SIZE,
        emitter::codegen::ADDRTYPE_VALUE_SIZE,
        64,
        "wtb_at",
    )
    .unwrap();
    let reply_ct = Map::create(
        MapType::Array,
        4,
        emitter::event::CT_COPY as u32,
        emitter::event::REPLY_CT_SLOTS,
        "wtb_rct",
    )
    .unwrap();
    let bytes = out.code.bytes(&|m| match m {
        MapRef::Counters => counters.fd().as_raw_fd(),
        MapRef::Events => events.fd().as_raw_fd(),
        MapRef::EventLoss => loss.fd().as_raw_fd(),
        MapRef::Limits => limits.fd().as_raw_fd(),
        MapRef::AddrTypes => addrtypes.fd().as_raw_fd(),
        MapRef::ReplyCt => reply_ct.fd().as_raw_fd(),
        MapRef::Other(i) => own[i as usize].fd().as_raw_fd(),
        _ => -1,
    });
    let prog = match BpfProgram::load_netfilter("wtb_test6", &bytes, 0) {
        Ok((prog, stats)) => {
            VERIFIED.with(|v| v.set(stats.verified_insns));
            prog
        }
        Err(e) => {
            let log = match BpfProgram::load_netfilter("wtb_test6", &bytes, 1) {
                Err(bpfilter::sys::SysError::Load { log, .. }) => log,
                other => format!("{other:?}"),
            };
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "load failed: {e}\n{}\n{}",
                tail.join("\n"),
                out.code
                    .dump()
                    .lines()
                    .take(300)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    };
    Loaded {
        prog,
        counters,
        slots,
        hook: p.hook,
        maps: [events, loss, limits, addrtypes, reply_ct]
            .into_iter()
            .chain(own)
            .collect(),
    }
}

impl Loaded {
    fn counters(&self) -> Vec<(u64, u64)> {
        (0..self.slots)
            .map(|k| {
                let per = self.counters.lookup_percpu(&k.to_ne_bytes()).unwrap();
                per.iter().fold((0u64, 0u64), |acc, v| {
                    let p = u64::from_ne_bytes(v[0..8].try_into().unwrap());
                    let b = u64::from_ne_bytes(v[8..16].try_into().unwrap());
                    (acc.0 + p, acc.1 + b)
                })
            })
            .collect()
    }

    /// One test run with pf NFPROTO_IPV6: (retval, per-slot (packets, bytes) deltas).
    fn run(&self, pkt: &[u8]) -> (u32, Vec<(u64, u64)>) {
        let before = self.counters();
        let mut ctx = [0u8; 48];
        ctx[0] = self.hook.number() as u8;
        ctx[1] = 10; // NFPROTO_IPV6
        let r = if self.hook == Hook::LocalOut {
            self.prog.test_run(pkt, Some(&ctx), 1).unwrap()
        } else {
            let mut data = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
            data.extend_from_slice(pkt);
            self.prog.test_run(&data, Some(&ctx), 1).unwrap()
        };
        let after = self.counters();
        let d = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a.0 - b.0, a.1 - b.1))
            .collect();
        (r.retval, d)
    }
}

fn deltas(o: &Outcome, slots: u32, len: usize) -> Vec<(u64, u64)> {
    let mut v = vec![(0u64, 0u64); slots as usize];
    for s in &o.counted {
        v[*s as usize].0 += 1;
        v[*s as usize].1 += len as u64;
    }
    v
}

fn code(v: Verdict) -> u32 {
    match v {
        Verdict::Accept => 1,
        Verdict::Drop => 0,
    }
}

/// The reference's outcome with what a test run gives the program: no devices, connection,
/// mark or socket; `pkt_type` PACKET_HOST at LOCAL_OUT (no Ethernet header), else what
/// `eth_type_trans` makes of the test's destination MAC 02:00:00:00:00:01 on `lo`:
/// PACKET_OTHERHOST.
fn reference(p: &Program, pkt: &[u8]) -> Outcome {
    evaluate(
        p,
        &Packet {
            data: pkt,
            pkt_type: if p.hook == Hook::LocalOut { 0 } else { 3 },
            ..Default::default()
        },
    )
}

/// The program and the reference agree on `pkt` (verdict, every counter delta).
fn agrees(l: &Loaded, p: &Program, pkt: &[u8], what: &str) -> Result<(), TestCaseError> {
    let o = reference(p, pkt);
    let (ret, d) = l.run(pkt);
    prop_assert_eq!(
        ret,
        code(o.verdict),
        "verdict: {}\n{:#?}\n{:02x?}",
        what,
        p,
        pkt
    );
    prop_assert_eq!(
        d,
        deltas(&o, l.slots, pkt.len()),
        "counters: {}\n{:#?}\n{:02x?}",
        what,
        p,
        pkt
    );
    Ok(())
}

fn program(hook: Hook, chains: Vec<Vec<Rule>>, policy: Verdict, policy_slot: u32) -> Program {
    let mut p = Program::single(
        hook,
        Vec::new(),
        Policy {
            verdict: policy,
            counter: policy_slot,
        },
    );
    p.family = Family::Ipv6;
    p.chains = chains
        .into_iter()
        .enumerate()
        .map(|(i, rules)| {
            (
                ChainId(i as u32),
                Chain {
                    name: format!("c{i}"),
                    rules,
                },
            )
        })
        .collect();
    p
}

/// `matches -j action` (slot 0), policy in slot 1.
fn single(hook: Hook, matches: Vec<Match>, action: Action, policy: Verdict) -> Program {
    program(
        hook,
        vec![vec![Rule {
            matches,
            action,
            counter: 0,
        }]],
        policy,
        1,
    )
}

// ---------------------------------------------------------------------------------------------
// packets and matches

const A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const C: [u8; 16] = [
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0xab, 0xcd,
];

fn frag(offset: u16, more: bool) -> Ext {
    Ext::Fragment {
        offset,
        more,
        id: 0x1234,
    }
}

/// Packets every hand-written case runs on.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let tcp = |s, d, f| ipv6::tcp(s, d, f, &[]);
    let hbh = Ext::HopByHop { hdrlen: 0 };
    let dst = Ext::DstOpts { hdrlen: 1 };
    let rt = Ext::Routing {
        hdrlen: 2,
        rtype: 0,
        segleft: 1,
    };
    let ah = Ext::Auth { hdrlen: 4 };
    let p = ipv6::packet;
    let chain = p(
        A,
        B,
        64,
        &[hbh, rt, frag(0, true), dst, ah],
        nh::TCP,
        &tcp(1000, 22, 0x02),
    );
    vec![
        (
            "udp a>b 53",
            p(A, B, 64, &[], nh::UDP, &ipv6::udp(5353, 53)),
        ),
        (
            "tcp a>b syn 22",
            p(A, B, 1, &[], nh::TCP, &tcp(40000, 22, 0x02)),
        ),
        (
            "tcp b>a ack 80",
            p(B, A, 255, &[], nh::TCP, &tcp(80, 51000, 0x10)),
        ),
        (
            "tcp c>a opts",
            p(
                C,
                A,
                64,
                &[],
                nh::TCP,
                &ipv6::tcp(1, 443, 0x02, &[2, 4, 5, 0xb4, 1, 1, 4, 2]),
            ),
        ),
        (
            "icmp6 echo",
            p(A, C, 64, &[], nh::ICMPV6, &ipv6::icmp6(128, 0)),
        ),
        (
            "icmp6 255/3",
            p(A, C, 64, &[], nh::ICMPV6, &ipv6::icmp6(255, 3)),
        ),
        ("hbh udp", p(A, B, 64, &[hbh], nh::UDP, &ipv6::udp(1, 53))),
        ("hbh+rt+frag0+dst+ah tcp", chain.clone()),
        ("ah udp", p(B, C, 64, &[ah], nh::UDP, &ipv6::udp(500, 500))),
        (
            "first fragment udp",
            p(A, B, 64, &[frag(0, true)], nh::UDP, &ipv6::udp(7, 53)),
        ),
        (
            "non-first fragment udp",
            p(A, B, 64, &[frag(185, false)], nh::UDP, &ipv6::udp(7, 53)),
        ),
        (
            "non-first fragment tcp",
            p(A, B, 64, &[hbh, frag(1, true)], nh::TCP, &tcp(1, 22, 2)),
        ),
        (
            "non-first fragment icmp6",
            p(
                A,
                B,
                64,
                &[frag(3, false)],
                nh::ICMPV6,
                &ipv6::icmp6(128, 0),
            ),
        ),
        (
            "non-first fragment -> dstopts",
            p(A, B, 64, &[frag(5, false), dst], nh::UDP, &ipv6::udp(1, 2)),
        ),
        (
            "non-first fragment -> none",
            p(A, B, 64, &[frag(5, false)], nh::NONE, &[0; 8]),
        ),
        ("no next header", p(A, B, 64, &[], nh::NONE, &[])),
        ("hbh -> none", p(A, B, 64, &[hbh], nh::NONE, &[1, 2, 3])),
        ("esp", p(A, B, 64, &[dst], nh::ESP, &[0; 16])),
        (
            "proto 0 after dst: another hbh",
            p(A, B, 64, &[dst, hbh], nh::UDP, &ipv6::udp(9, 9)),
        ),
        (
            "truncated hbh (1 byte)",
            ipv6::truncate(p(A, B, 64, &[hbh], nh::UDP, &ipv6::udp(1, 53)), 41),
        ),
        (
            "truncated rt (3 bytes)",
            ipv6::truncate(p(A, B, 64, &[rt], nh::UDP, &ipv6::udp(1, 53)), 43),
        ),
        (
            "truncated frag (3 bytes)",
            ipv6::truncate(
                p(A, B, 64, &[frag(0, false)], nh::UDP, &ipv6::udp(1, 53)),
                43,
            ),
        ),
        (
            "hbh 2 bytes, length past the end",
            ipv6::truncate(p(A, B, 64, &[hbh], nh::UDP, &ipv6::udp(1, 53)), 42),
        ),
        (
            "frag header cut at 6 bytes",
            ipv6::truncate(
                p(A, B, 64, &[frag(0, false)], nh::UDP, &ipv6::udp(1, 53)),
                46,
            ),
        ),
        (
            "two fragment headers",
            p(
                A,
                B,
                64,
                &[frag(0, true), Ext::DstOpts { hdrlen: 1 }, frag(9, false)],
                nh::UDP,
                &ipv6::udp(1, 53),
            ),
        ),
        (
            "tcp cut at 10 bytes",
            ipv6::truncate(p(A, B, 64, &[], nh::TCP, &tcp(1, 22, 2)), 50),
        ),
        (
            "udp cut at 4 bytes",
            ipv6::truncate(p(A, B, 64, &[], nh::UDP, &ipv6::udp(1, 53)), 44),
        ),
        (
            "icmp6 cut at 2 bytes",
            ipv6::truncate(p(A, C, 64, &[], nh::ICMPV6, &ipv6::icmp6(128, 0)), 42),
        ),
        (
            "chain cut in the ah",
            ipv6::truncate(chain, 40 + 8 + 24 + 8 + 16 + 1),
        ),
        ("bare header", p(A, B, 64, &[], nh::TCP, &[])),
        (
            "rt type 2 segleft 0",
            p(
                A,
                B,
                64,
                &[Ext::Routing {
                    hdrlen: 0,
                    rtype: 2,
                    segleft: 0,
                }],
                nh::UDP,
                &ipv6::udp(1, 53),
            ),
        ),
        ("rt reserved set", {
            let mut v = p(A, B, 64, &[rt], nh::UDP, &ipv6::udp(1, 53));
            v[40 + 6] = 1;
            v
        }),
        (
            "rt 8 of 24 bytes",
            ipv6::truncate(p(A, B, 64, &[rt], nh::UDP, &ipv6::udp(1, 53)), 48),
        ),
        (
            "rt 4 of 24 bytes",
            ipv6::truncate(p(A, B, 64, &[rt], nh::UDP, &ipv6::udp(1, 53)), 44),
        ),
        (
            "rt 23 of 24 bytes",
            ipv6::truncate(p(A, B, 64, &[rt], nh::UDP, &ipv6::udp(1, 53)), 63),
        ),
        (
            "rt exactly to the end",
            ipv6::truncate(p(A, B, 64, &[rt], nh::UDP, &ipv6::udp(1, 53)), 64),
        ),
        (
            "dst 16 of 24 bytes",
            ipv6::truncate(
                p(
                    A,
                    B,
                    64,
                    &[Ext::DstOpts { hdrlen: 2 }],
                    nh::UDP,
                    &ipv6::udp(1, 53),
                ),
                56,
            ),
        ),
        (
            "hbh, dst, hbh, dst (8, 16, 24, 8)",
            p(
                A,
                B,
                64,
                &[
                    hbh,
                    dst,
                    Ext::HopByHop { hdrlen: 2 },
                    Ext::DstOpts { hdrlen: 0 },
                ],
                nh::UDP,
                &ipv6::udp(1, 53),
            ),
        ),
        (
            "non-first fragment -> hbh",
            p(A, B, 64, &[frag(5, false), hbh], nh::UDP, &ipv6::udp(1, 2)),
        ),
        (
            "non-first fragment -> rt",
            p(A, B, 64, &[frag(5, false), rt], nh::UDP, &ipv6::udp(1, 2)),
        ),
        (
            "dst, rt type 0, rt type 2",
            p(
                A,
                B,
                64,
                &[
                    dst,
                    rt,
                    Ext::Routing {
                        hdrlen: 0,
                        rtype: 2,
                        segleft: 0,
                    },
                ],
                nh::TCP,
                &tcp(1, 22, 2),
            ),
        ),
        ("long: 1000 bytes of udp payload", {
            let mut l4 = ipv6::udp(1, 53);
            l4.resize(1008, 0xaa);
            p(A, B, 64, &[hbh, dst], nh::UDP, &l4)
        }),
    ]
}

fn v6(a: [u8; 16]) -> Ipv6Addr {
    Ipv6Addr::from(a)
}

fn proto(p: u8, invert: bool) -> Match {
    Match::Ipv6Protocol { proto: p, invert }
}

fn udp_m(dport: u16, invert: bool) -> Match {
    Match::Udp(UdpMatch {
        sport: PortRange::ANY,
        dport: PortRange::one(dport),
        inv_sport: false,
        inv_dport: invert,
    })
}

fn tcp_m(dport: PortRange, flags: (u8, u8), option: u8, inv: bool) -> Match {
    Match::Tcp(TcpMatch {
        sport: PortRange::ANY,
        dport,
        flags_mask: flags.0,
        flags_cmp: flags.1,
        option,
        inv_sport: false,
        inv_dport: inv,
        inv_flags: inv,
        inv_option: inv,
    })
}

fn icmp6_m(t: u8, lo: u8, hi: u8, invert: bool) -> Match {
    Match::Icmp6(IcmpMatch {
        icmp_type: t,
        code_min: lo,
        code_max: hi,
        invert,
    })
}

fn multiport_m(mode: MultiportMode, ports: &[u16], invert: bool) -> Match {
    let mut m = MultiportMatch {
        mode,
        count: ports.len() as u8,
        ports: [0; 15],
        pflags: [0; 15],
        invert,
    };
    m.ports[..ports.len()].copy_from_slice(ports);
    Match::Multiport(m)
}

fn frag_m(ids: (u32, u32), flags: u8, inv_ids: bool) -> Match {
    Match::Frag(FragMatch {
        ids,
        flags,
        inv_ids,
    })
}

/// `-m rt`: segments left range, type, length, `--rt-0-res`, and the kernel's hotdrop of a
/// header longer than the packet.
#[allow(clippy::too_many_arguments, reason = "one argument per rt_mt6 field")]
fn rt_m(
    segsleft: (u32, u32),
    rt_type: Option<u32>,
    hdrlen: Option<u32>,
    res: bool,
    inv: (bool, bool, bool),
    short_hotdrop: bool,
) -> Match {
    Match::Rt(RtMatch {
        segsleft,
        rt_type,
        hdrlen,
        res,
        inv_type: inv.0,
        inv_segsleft: inv.1,
        inv_len: inv.2,
        short_hotdrop,
    })
}

/// `-m hbh` (`dst` false) / `-m dst` with an optional length test.
fn opts_m(dst: bool, hdrlen: Option<u32>, inv_len: bool, short_hotdrop: bool) -> Match {
    Match::Opts(OptsMatch {
        dst,
        hdrlen,
        inv_len,
        short_hotdrop,
    })
}

/// `-m ipv6header`.
fn v6h(matchflags: u8, invflags: u8, soft: bool) -> Match {
    Match::Ipv6Header(Ipv6HeaderMatch {
        matchflags,
        invflags,
        soft,
    })
}

/// `-m rt` with only a type (ufw's `-m rt --rt-type 0`).
fn rt_type(t: u32, invert: bool) -> Match {
    rt_m(
        (0, u32::MAX),
        Some(t),
        None,
        false,
        (invert, false, false),
        true,
    )
}

fn iprange(
    src: Option<([u8; 16], [u8; 16])>,
    dst: Option<([u8; 16], [u8; 16])>,
    invert: bool,
) -> Match {
    let r = |x: Option<([u8; 16], [u8; 16])>| x.map(|(a, b)| (v6(a), v6(b)));
    Match::IpRange6(IpRange6Match {
        src: r(src),
        dst: r(dst),
        inv_src: invert,
        inv_dst: !invert,
    })
}

/// Every IPv6 match kind, plain and inverted.
fn catalogue() -> Vec<(&'static str, Vec<Match>)> {
    let all = Ipv6Addr::from([0xff; 16]);
    let p64 = Ipv6Addr::from([
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let mut v: Vec<(&'static str, Vec<Match>)> = Vec::new();
    for inv in [false, true] {
        v.push((
            "-s a",
            vec![Match::Ipv6Src {
                addr: v6(A),
                mask: all,
                invert: inv,
            }],
        ));
        v.push((
            "-d 2001:db8::/64 (host bits set)",
            vec![Match::Ipv6Dst {
                addr: v6(A),
                mask: p64,
                invert: inv,
            }],
        ));
        v.push((
            "-s ::/0 with an address",
            vec![Match::Ipv6Src {
                addr: v6(C),
                mask: Ipv6Addr::UNSPECIFIED,
                invert: inv,
            }],
        ));
        v.push(("-p udp", vec![proto(17, inv)]));
        v.push(("-p tcp", vec![proto(6, inv)]));
        v.push(("-p 59", vec![proto(59, inv)]));
        v.push(("-p esp", vec![proto(50, inv)]));
        v.push(("-p all", vec![proto(0, inv)]));
        v.push(("-p udp --dport 53", vec![proto(17, false), udp_m(53, inv)]));
        v.push((
            "-p tcp --dport 22 --syn",
            vec![
                proto(6, false),
                tcp_m(PortRange::one(22), (0x17, 0x02), 0, inv),
            ],
        ));
        v.push((
            "-p tcp --tcp-option 4",
            vec![proto(6, false), tcp_m(PortRange::ANY, (0, 0), 4, inv)],
        ));
        v.push((
            "-p icmpv6 --icmpv6-type 128",
            vec![proto(58, false), icmp6_m(128, 0, 255, inv)],
        ));
        v.push((
            "-p icmpv6 type 255 code 3",
            vec![proto(58, false), icmp6_m(255, 3, 3, inv)],
        ));
        v.push((
            "-p icmpv6 empty code range",
            vec![proto(58, false), icmp6_m(128, 5, 4, inv)],
        ));
        v.push((
            "-p udp -m multiport",
            vec![
                proto(17, inv),
                multiport_m(MultiportMode::Either, &[53, 500], inv),
            ],
        ));
        v.push((
            "! -p tcp -m multiport --sports",
            vec![
                proto(6, true),
                multiport_m(MultiportMode::Source, &[80, 5353], inv),
            ],
        ));
        v.push((
            "-m iprange --src-range a-b",
            vec![iprange(Some((A, B)), None, inv)],
        ));
        v.push((
            "-m iprange --dst-range across a word",
            vec![iprange(
                None,
                Some((
                    [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                    [0x20, 1, 0xd, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
                )),
                inv,
            )],
        ));
        v.push((
            "-m iprange both, c..c",
            vec![iprange(Some((C, C)), Some((B, A)), inv)],
        ));
        v.push((
            "-m pkttype",
            vec![Match::PktType {
                pkttype: 0,
                invert: inv,
            }],
        ));
        v.push((
            "-m mark",
            vec![Match::Mark {
                mark: 0,
                mask: 0xff,
                invert: inv,
            }],
        ));
        // a test run's device is the loopback: never compared, `!` or not
        v.push((
            "-m mac",
            vec![Match::Mac {
                src: [2, 0, 0, 0, 0, 1],
                invert: u32::from(inv),
            }],
        ));
        v.push(("-i lo+", vec![Match::InIface(Iface::iptables("lo+", inv))]));
        v.push((
            "-o eth0",
            vec![Match::OutIface(Iface::iptables("eth0", inv))],
        ));
    }
    for (flags, name) in [
        (0, "-m frag"),
        (frag::RES, "-m frag --fragres"),
        (frag::FST, "-m frag --fragfirst"),
        (frag::MF, "-m frag --fragmore"),
        (frag::NMF, "-m frag --fraglast"),
        (
            frag::FST | frag::MF | frag::IDS | frag::LEN,
            "-m frag --fragfirst --fragmore",
        ),
    ] {
        for inv in [false, true] {
            v.push((name, vec![frag_m((0, u32::MAX), flags, inv)]));
            v.push((name, vec![frag_m((0x1234, 0x1234), flags, inv)]));
        }
    }
    for inv in [false, true] {
        for short in [false, true] {
            let none = (false, false, false);
            v.push((
                "-m rt",
                vec![rt_m((0, u32::MAX), None, None, false, none, short)],
            ));
            v.push(("-m rt --rt-type 0", vec![rt_type(0, inv)]));
            v.push((
                "-m rt --rt-type 2",
                vec![rt_m(
                    (0, u32::MAX),
                    Some(2),
                    None,
                    false,
                    (inv, false, false),
                    short,
                )],
            ));
            v.push((
                "-m rt --rt-type 256",
                vec![rt_m(
                    (0, u32::MAX),
                    Some(256),
                    None,
                    false,
                    (inv, false, false),
                    short,
                )],
            ));
            v.push((
                "-m rt --rt-segsleft 1",
                vec![rt_m((1, 1), None, None, false, (false, inv, false), short)],
            ));
            v.push((
                "-m rt --rt-segsleft 1:",
                vec![rt_m(
                    (1, u32::MAX),
                    None,
                    None,
                    false,
                    (false, inv, false),
                    short,
                )],
            ));
            v.push((
                "-m rt --rt-segsleft :0",
                vec![rt_m((0, 0), None, None, false, (false, inv, false), short)],
            ));
            v.push((
                "-m rt --rt-len 24",
                vec![rt_m(
                    (0, u32::MAX),
                    None,
                    Some(24),
                    false,
                    (false, false, inv),
                    short,
                )],
            ));
            v.push((
                "-m rt --rt-len 8",
                vec![rt_m(
                    (0, u32::MAX),
                    None,
                    Some(8),
                    false,
                    (false, false, inv),
                    short,
                )],
            ));
            v.push((
                "-m rt --rt-type 0 --rt-0-res",
                vec![rt_m((0, u32::MAX), Some(0), None, true, none, short)],
            ));
            v.push((
                "-m rt --rt-type 0 --rt-segsleft 1 --rt-len 24 --rt-0-res",
                vec![rt_m(
                    (1, 1),
                    Some(0),
                    Some(24),
                    true,
                    (inv, inv, inv),
                    short,
                )],
            ));
        }
    }
    for (flags, inv) in [
        (128, 0),
        (128 | 1, 0),
        (128 | 32 | 16 | 64 | 8 | 1, 0),
        (1, 0),
        (2, 0),
        (4, 0),
        (64 | 4, 0),
        (16 | 1, 0),
        (16 | 1, 0xff),
        (128 | 2, 0xff),
        (0, 0),
    ] {
        v.push(("-m ipv6header", vec![v6h(flags, inv, false)]));
        v.push(("-m ipv6header --soft", vec![v6h(flags, inv & flags, true)]));
    }
    v.push(("-m ipv6header --soft ! hop", vec![v6h(128, 128, true)]));
    v.push(("-m ipv6header --soft frag,!proto", vec![v6h(17, 1, true)]));
    for dst in [false, true] {
        for short in [false, true] {
            for inv in [false, true] {
                v.push(("-m hbh/dst", vec![opts_m(dst, None, inv, short)]));
                for len in [8, 16, 24, 0x1_0008] {
                    v.push(("-m hbh/dst --len", vec![opts_m(dst, Some(len), inv, short)]));
                }
            }
        }
    }
    for (mode, name) in [
        (hl::EQ, "hl eq"),
        (hl::NE, "hl ne"),
        (hl::LT, "hl lt"),
        (hl::GT, "hl gt"),
        (7, "hl bad mode"),
    ] {
        for value in [0u8, 1, 64, 255] {
            v.push((name, vec![Match::HopLimit { mode, value }]));
        }
    }
    let mut state = CtMatch {
        state: Some((ctstate::INVALID, false)),
        dir_original: None,
        origsrc: None,
        origdst: None,
        replsrc: None,
        repldst: None,
        proto: None,
        origsrc_port: None,
        origdst_port: None,
        replsrc_port: None,
        repldst_port: None,
        status: None,
        expires: None,
    };
    v.push(("--ctstate INVALID", vec![Match::Conntrack(state)]));
    state.state = Some((ctstate::NEW, true));
    v.push(("! --ctstate NEW", vec![Match::Conntrack(state)]));
    v.push(("-m state INVALID", vec![Match::State(1)]));
    // order matters: the walk's hotdrop only where the addresses matched
    v.push((
        "-s b -p udp",
        vec![
            Match::Ipv6Src {
                addr: v6(B),
                mask: all,
                invert: false,
            },
            proto(17, false),
        ],
    ));
    v.push((
        "-p all then -p tcp",
        vec![
            proto(0, false),
            proto(6, false),
            tcp_m(PortRange::ANY, (0, 0), 0, false),
        ],
    ));
    v
}

// ---------------------------------------------------------------------------------------------
// tests

/// The reference itself against hand-written expectations of `ip6_packet_match` and the
/// matches on the corpus (so that a mistake shared by the reference and the generator fails).
#[test]
fn reference_follows_the_kernel_on_hand_written_cases() {
    let corpus = corpus();
    let pkt = |name: &str| corpus.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let verdict = |matches: Vec<Match>, name: &str| {
        let p = single(Hook::LocalOut, matches, Action::Accept, Verdict::Drop);
        let o = reference(&p, &pkt(name));
        match (o.verdict, o.counted.as_slice()) {
            (Verdict::Accept, [0]) => "match",
            (Verdict::Drop, [1]) => "no match",
            (Verdict::Drop, []) => "hotdrop",
            other => panic!("{other:?}"),
        }
    };
    let cases: Vec<(Vec<Match>, &str, &str)> = vec![
        (vec![proto(6, false)], "hbh+rt+frag0+dst+ah tcp", "match"),
        (vec![proto(17, false)], "non-first fragment udp", "match"),
        (
            vec![proto(17, false), udp_m(53, false)],
            "non-first fragment udp",
            "no match",
        ),
        (
            vec![proto(17, false), udp_m(53, true)],
            "non-first fragment udp",
            "no match",
        ),
        (
            vec![proto(6, false), tcp_m(PortRange::ANY, (0, 0), 0, false)],
            "non-first fragment tcp",
            "no match",
        ),
        (
            vec![proto(0, false)],
            "non-first fragment -> dstopts",
            "hotdrop",
        ),
        (
            vec![proto(59, false)],
            "non-first fragment -> none",
            "match",
        ),
        (vec![proto(59, false)], "no next header", "match"),
        (vec![proto(59, false)], "hbh -> none", "match"),
        (vec![proto(50, false)], "esp", "match"),
        (vec![proto(0, true)], "esp", "match"),
        (vec![proto(17, true)], "udp a>b 53", "no match"),
        (
            vec![proto(17, false)],
            "proto 0 after dst: another hbh",
            "match",
        ),
        (vec![proto(0, false)], "truncated hbh (1 byte)", "hotdrop"),
        (vec![proto(0, false)], "truncated rt (3 bytes)", "hotdrop"),
        (vec![proto(0, false)], "truncated frag (3 bytes)", "hotdrop"),
        (
            vec![proto(17, false)],
            "hbh 2 bytes, length past the end",
            "match",
        ),
        (
            vec![proto(17, false), udp_m(53, false)],
            "hbh 2 bytes, length past the end",
            "hotdrop",
        ),
        (vec![proto(0, false)], "chain cut in the ah", "hotdrop"),
        (
            vec![proto(6, false), tcp_m(PortRange::ANY, (0, 0), 0, false)],
            "tcp cut at 10 bytes",
            "hotdrop",
        ),
        (
            vec![proto(58, false), icmp6_m(128, 0, 255, false)],
            "icmp6 cut at 2 bytes",
            "hotdrop",
        ),
        (
            vec![proto(58, false), icmp6_m(128, 0, 0, false)],
            "non-first fragment icmp6",
            "no match",
        ),
        (
            vec![proto(58, false), icmp6_m(128, 0, 0, true)],
            "non-first fragment icmp6",
            "no match",
        ),
        (
            vec![proto(58, false), icmp6_m(255, 0, 2, false)],
            "icmp6 255/3",
            "no match",
        ),
        (
            vec![proto(58, false), icmp6_m(255, 3, 3, false)],
            "icmp6 255/3",
            "match",
        ),
        (
            vec![proto(58, false), icmp6_m(255, 0, 255, false)],
            "icmp6 echo",
            "no match",
        ),
        (
            vec![Match::Ipv6Src {
                addr: v6(C),
                mask: Ipv6Addr::UNSPECIFIED,
                invert: false,
            }],
            "udp a>b 53",
            "match",
        ),
        (
            vec![Match::PktType {
                pkttype: 0,
                invert: false,
            }],
            "udp a>b 53",
            "match",
        ),
        (
            vec![Match::HopLimit {
                mode: hl::LT,
                value: 2,
            }],
            "tcp a>b syn 22",
            "match",
        ),
        (
            vec![Match::HopLimit {
                mode: hl::GT,
                value: 254,
            }],
            "tcp b>a ack 80",
            "match",
        ),
        (
            vec![Match::HopLimit { mode: 9, value: 64 }],
            "udp a>b 53",
            "no match",
        ),
        (
            vec![frag_m((0x1234, 0x1234), frag::FST | frag::MF, false)],
            "first fragment udp",
            "match",
        ),
        (
            vec![frag_m((0x1234, 0x1234), 0, true)],
            "first fragment udp",
            "no match",
        ),
        (
            vec![frag_m((0, u32::MAX), frag::FST, false)],
            "non-first fragment udp",
            "no match",
        ),
        (
            vec![frag_m((0, u32::MAX), frag::NMF, false)],
            "non-first fragment udp",
            "match",
        ),
        (
            vec![frag_m((0, u32::MAX), 0, false)],
            "udp a>b 53",
            "no match",
        ),
        (
            vec![frag_m((0, u32::MAX), 0, false)],
            "truncated frag (3 bytes)",
            "hotdrop",
        ),
        (
            vec![frag_m((0, u32::MAX), 0, false)],
            "truncated hbh (1 byte)",
            "hotdrop",
        ),
        (
            vec![frag_m((0, u32::MAX), 0, false)],
            "frag header cut at 6 bytes",
            "hotdrop",
        ),
        (
            vec![frag_m((0, u32::MAX), frag::NMF, false)],
            "non-first fragment -> dstopts",
            "match",
        ),
        (
            vec![frag_m((0, u32::MAX), frag::FST, false)],
            "two fragment headers",
            "match",
        ),
        (
            vec![frag_m((0, u32::MAX), 0, false)],
            "non-first fragment -> none",
            "match",
        ),
        (vec![v6h(128 | 1, 0, false)], "hbh udp", "match"),
        (vec![v6h(128, 0, false)], "hbh udp", "no match"),
        (vec![v6h(128, 0xff, false)], "hbh udp", "match"),
        (vec![v6h(128, 0, true)], "hbh udp", "match"),
        (vec![v6h(128, 128, true)], "hbh udp", "no match"),
        (vec![v6h(2, 0, false)], "no next header", "match"),
        (vec![v6h(128 | 2, 0, false)], "hbh -> none", "match"),
        (vec![v6h(64 | 4, 0, false)], "esp", "match"),
        (
            vec![v6h(128 | 32 | 16 | 64 | 8 | 1, 0, false)],
            "hbh+rt+frag0+dst+ah tcp",
            "match",
        ),
        // a non-first fragment does not stop it: the dst options header after it counts
        (
            vec![v6h(16 | 64 | 1, 0, false)],
            "non-first fragment -> dstopts",
            "match",
        ),
        // fewer than 2 bytes where an extension header should be: no match, even inverted
        (
            vec![v6h(128, 0xff, false)],
            "truncated hbh (1 byte)",
            "no match",
        ),
        (vec![v6h(0, 0, true)], "truncated hbh (1 byte)", "no match"),
        // a header past the end stops the walk: its next header decides MASK_PROTO
        (
            vec![v6h(128 | 1, 0, false)],
            "hbh 2 bytes, length past the end",
            "match",
        ),
        (vec![v6h(32 | 1, 0, false)], "rt 8 of 24 bytes", "match"),
        (vec![v6h(32, 0, false)], "rt 8 of 24 bytes", "no match"),
        (
            vec![v6h(32 | 1, 0, false)],
            "truncated rt (3 bytes)",
            "match",
        ),
        (vec![opts_m(false, None, false, true)], "hbh udp", "match"),
        (vec![opts_m(true, None, false, true)], "hbh udp", "no match"),
        (vec![opts_m(true, None, true, true)], "hbh udp", "no match"),
        (
            vec![opts_m(false, Some(8), false, true)],
            "hbh udp",
            "match",
        ),
        (
            vec![opts_m(false, Some(8), true, true)],
            "hbh udp",
            "no match",
        ),
        (
            vec![opts_m(false, Some(16), true, true)],
            "hbh udp",
            "match",
        ),
        (
            vec![opts_m(true, Some(16), false, true)],
            "hbh+rt+frag0+dst+ah tcp",
            "match",
        ),
        // the first header of the kind counts (a later hop-by-hop header too)
        (
            vec![opts_m(false, Some(8), false, true)],
            "hbh, dst, hbh, dst (8, 16, 24, 8)",
            "match",
        ),
        (
            vec![opts_m(true, Some(16), false, true)],
            "hbh, dst, hbh, dst (8, 16, 24, 8)",
            "match",
        ),
        (
            vec![opts_m(false, Some(16), false, true)],
            "proto 0 after dst: another hbh",
            "no match",
        ),
        (
            vec![opts_m(false, Some(8), false, true)],
            "proto 0 after dst: another hbh",
            "match",
        ),
        (
            vec![opts_m(false, None, false, true)],
            "non-first fragment -> hbh",
            "no match",
        ),
        (
            vec![opts_m(true, None, false, true)],
            "non-first fragment -> dstopts",
            "no match",
        ),
        (
            vec![opts_m(false, None, false, true)],
            "truncated hbh (1 byte)",
            "hotdrop",
        ),
        (
            vec![opts_m(false, None, false, true)],
            "hbh 2 bytes, length past the end",
            "hotdrop",
        ),
        (
            vec![opts_m(false, None, false, false)],
            "hbh 2 bytes, length past the end",
            "no match",
        ),
        (
            vec![opts_m(true, None, false, true)],
            "dst 16 of 24 bytes",
            "hotdrop",
        ),
        (
            vec![opts_m(true, None, true, false)],
            "dst 16 of 24 bytes",
            "no match",
        ),
        (
            vec![opts_m(true, None, false, true)],
            "truncated rt (3 bytes)",
            "hotdrop",
        ),
        (vec![rt_type(0, false)], "hbh+rt+frag0+dst+ah tcp", "match"),
        (
            vec![rt_type(0, true)],
            "hbh+rt+frag0+dst+ah tcp",
            "no match",
        ),
        (vec![rt_type(0, false)], "rt type 2 segleft 0", "no match"),
        (vec![rt_type(2, false)], "rt type 2 segleft 0", "match"),
        (vec![rt_type(0, true)], "rt type 2 segleft 0", "match"),
        (vec![rt_type(256, true)], "rt type 2 segleft 0", "match"),
        (vec![rt_type(256, false)], "rt type 2 segleft 0", "no match"),
        // no routing header: no match, inverted or not
        (vec![rt_type(0, true)], "udp a>b 53", "no match"),
        (vec![rt_type(0, false)], "hbh udp", "no match"),
        // the first routing header counts
        (
            vec![rt_type(0, false)],
            "dst, rt type 0, rt type 2",
            "match",
        ),
        (
            vec![rt_type(2, false)],
            "dst, rt type 0, rt type 2",
            "no match",
        ),
        // a non-first fragment ends the search (-ENOENT), even when a header follows
        (
            vec![rt_type(0, false)],
            "non-first fragment -> rt",
            "no match",
        ),
        (
            vec![rt_type(0, true)],
            "non-first fragment -> rt",
            "no match",
        ),
        // cut before the routing header or within its first four bytes: -EBADMSG
        (vec![rt_type(0, false)], "truncated rt (3 bytes)", "hotdrop"),
        (vec![rt_type(0, false)], "truncated hbh (1 byte)", "hotdrop"),
        (vec![rt_type(0, false)], "chain cut in the ah", "match"),
        // longer than the packet: hotdrop with the 2026 fix, else no match
        (vec![rt_type(0, false)], "rt 4 of 24 bytes", "hotdrop"),
        (vec![rt_type(0, true)], "rt 8 of 24 bytes", "hotdrop"),
        (vec![rt_type(0, false)], "rt 23 of 24 bytes", "hotdrop"),
        (vec![rt_type(0, false)], "rt exactly to the end", "match"),
        (
            vec![rt_m(
                (0, u32::MAX),
                Some(0),
                None,
                false,
                (true, false, false),
                false,
            )],
            "rt 8 of 24 bytes",
            "no match",
        ),
        (
            vec![rt_m(
                (1, 1),
                None,
                Some(24),
                false,
                (false, false, false),
                true,
            )],
            "hbh+rt+frag0+dst+ah tcp",
            "match",
        ),
        (
            vec![rt_m((2, 9), None, None, false, (false, false, false), true)],
            "hbh+rt+frag0+dst+ah tcp",
            "no match",
        ),
        (
            vec![rt_m((2, 9), None, None, false, (false, true, false), true)],
            "hbh+rt+frag0+dst+ah tcp",
            "match",
        ),
        (
            vec![rt_m(
                (0, u32::MAX),
                None,
                Some(24),
                false,
                (false, false, true),
                true,
            )],
            "hbh+rt+frag0+dst+ah tcp",
            "no match",
        ),
        (
            vec![rt_m(
                (0, u32::MAX),
                Some(0),
                None,
                true,
                (false, false, false),
                true,
            )],
            "hbh+rt+frag0+dst+ah tcp",
            "match",
        ),
        (
            vec![rt_m(
                (0, u32::MAX),
                Some(0),
                None,
                true,
                (false, false, false),
                true,
            )],
            "rt reserved set",
            "no match",
        ),
    ];
    for (m, name, want) in cases {
        assert_eq!(verdict(m.clone(), name), want, "{m:?} on {name}");
    }
}

/// Every catalogue match (plain and `!`) x every corpus packet, in every compile variant.
#[test]
fn single_matches_against_corpus() {
    let Some(env) = env() else { return };
    let corpus = corpus();
    let mut cases = 0;
    for (i, (name, matches)) in catalogue().into_iter().enumerate() {
        let (hook, policy) = match i % 3 {
            0 => (Hook::LocalOut, Verdict::Drop),
            1 => (Hook::Forward, Verdict::Accept),
            _ => (Hook::LocalIn, Verdict::Drop),
        };
        let action = if policy == Verdict::Drop {
            Action::Accept
        } else {
            Action::Drop
        };
        let p = single(hook, matches, action, policy);
        for (mode, opts) in variants(&env) {
            let l = load(&env, &p, opts);
            for (pname, pkt) in &corpus {
                agrees(
                    &l,
                    &p,
                    pkt,
                    &format!("{name} / {pname} / {hook:?} / {mode}"),
                )
                .unwrap();
                cases += 1;
            }
        }
    }
    eprintln!("{cases} (ruleset, packet) cases");
    assert!(cases >= 1000);
}

/// A built-in chain without rules is its policy alone (a dozen instructions, the packet not
/// parsed): every packet of the corpus counted in the policy's slot and given its verdict.
#[test]
fn an_empty_chain_is_its_policy() {
    let Some(env) = env() else { return };
    let corpus = corpus();
    for (mode, opts) in variants(&env) {
        for hook in [Hook::LocalIn, Hook::Forward, Hook::LocalOut] {
            for policy in [Verdict::Accept, Verdict::Drop] {
                let p = program(hook, vec![vec![]], policy, 3);
                let l = load(&env, &p, opts);
                let verified = VERIFIED.with(std::cell::Cell::get);
                assert!(
                    verified < 32,
                    "{mode} {hook:?}: {verified} instructions verified"
                );
                for (pname, pkt) in &corpus {
                    let (ret, d) = l.run(pkt);
                    assert_eq!(ret, code(policy), "{pname} / {hook:?} / {mode}");
                    let mut want = vec![(0, 0); l.slots as usize];
                    want[3] = (1, pkt.len() as u64);
                    assert_eq!(d, want, "{pname} / {hook:?} / {mode}");
                }
            }
        }
    }
}

/// REJECT and LOG rules load and count in IPv6 programs; chains (call, goto, return).
#[test]
fn chains_and_events() {
    let Some(env) = env() else { return };
    let r = |matches, action, counter| Rule {
        matches,
        action,
        counter,
    };
    let entry = vec![
        r(
            vec![proto(17, false)],
            Action::Log(Log {
                level: 4,
                flags: 0,
                prefix: [b'x'; 30],
            }),
            0,
        ),
        r(vec![proto(6, false)], Action::Call(ChainId(1)), 1),
        r(vec![proto(58, false)], Action::Goto(ChainId(1)), 2),
        r(
            vec![proto(0, false), udp_m(53, false)],
            Action::Reject(Reject { with: 0 }),
            3,
        ),
        r(vec![], Action::Continue, 4),
    ];
    let user = vec![
        r(
            vec![tcp_m(PortRange::one(22), (0, 0), 0, false), proto(6, false)],
            Action::Accept,
            5,
        ),
        r(
            vec![proto(6, false), tcp_m(PortRange::one(22), (0, 0), 0, true)],
            Action::Return,
            6,
        ),
        r(
            vec![proto(58, false), icmp6_m(128, 0, 0, false)],
            Action::Drop,
            7,
        ),
        r(vec![], Action::Return, 8),
    ];
    // the first rule of `user` reads a transport offset no protocol test gave: refused
    let bad = program(
        Hook::LocalIn,
        vec![entry.clone(), user.clone()],
        Verdict::Accept,
        9,
    );
    assert!(emitter::codegen::compile(&bad, &env.layout).is_err());
    let mut user = user;
    user.remove(0);
    let p = program(Hook::LocalIn, vec![entry, user], Verdict::Accept, 9);
    for (mode, opts) in variants(&env) {
        let l = load(&env, &p, opts);
        for (pname, pkt) in corpus() {
            agrees(&l, &p, &pkt, &format!("{pname} / {mode}")).unwrap();
        }
    }
}

/// IPv4-only matches are refused in IPv6 programs, never approximated.
#[test]
fn ipv4_matches_are_refused() {
    let layout = KernelLayout::example();
    for m in [
        Match::Ipv4Src {
            addr: std::net::Ipv4Addr::LOCALHOST,
            mask: std::net::Ipv4Addr::BROADCAST,
            invert: false,
        },
        Match::Protocol {
            proto: 6,
            invert: false,
        },
        Match::Fragment { invert: false },
        Match::Icmp(IcmpMatch {
            icmp_type: 8,
            code_min: 0,
            code_max: 255,
            invert: false,
        }),
    ] {
        let p = single(Hook::LocalOut, vec![m], Action::Accept, Verdict::Drop);
        let e = emitter::codegen::compile(&p, &layout).unwrap_err();
        assert!(e.to_string().contains("IPv6"), "{m:?}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// random programs and packets

fn arb_addr() -> impl Strategy<Value = [u8; 16]> {
    prop_oneof![Just(A), Just(B), Just(C), any::<[u8; 16]>()]
}

fn arb_mask() -> impl Strategy<Value = Ipv6Addr> {
    (0u32..=128).prop_map(|n| Ipv6Addr::from(if n == 0 { 0 } else { u128::MAX << (128 - n) }))
}

fn arb_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        Just(PortRange::ANY),
        (0u16..100).prop_map(PortRange::one),
        prop_oneof![Just(22u16), Just(53), Just(80)].prop_map(PortRange::one),
        (0u16..2000, 0u16..2000).prop_map(|(lo, hi)| PortRange { lo, hi }),
    ]
}

/// One rule's matches: optional address / hop-limit tests, then (maybe) a protocol test and
/// transport matches after it, as a front end orders an ip6t entry.
fn arb_rule_matches() -> impl Strategy<Value = Vec<Match>> {
    let addr = (arb_addr(), arb_mask(), any::<bool>(), any::<bool>()).prop_map(
        |(a, mask, dst, invert)| {
            let addr = v6(a);
            if dst {
                Match::Ipv6Dst { addr, mask, invert }
            } else {
                Match::Ipv6Src { addr, mask, invert }
            }
        },
    );
    let range = (
        proptest::option::of((arb_addr(), arb_addr())),
        proptest::option::of((arb_addr(), arb_addr())),
        any::<bool>(),
    )
        .prop_map(|(s, d, inv)| iprange(s, d, inv));
    let fragm = (any::<u32>(), any::<u32>(), 0u8..0x40, any::<bool>())
        .prop_map(|(a, b, flags, inv)| frag_m((a.min(b) % 0x2000, a.max(b)), flags, inv));
    let rtm = (
        (any::<u8>(), any::<u8>()),
        proptest::option::of(prop_oneof![Just(0u32), Just(2), Just(4), any::<u32>()]),
        proptest::option::of(prop_oneof![Just(8u32), Just(16), Just(24), any::<u32>()]),
        any::<bool>(),
        any::<(bool, bool, bool)>(),
        any::<bool>(),
    )
        .prop_map(|((a, b), t, len, res, inv, short)| {
            let sl = (
                u32::from(a.min(b)),
                if b == 255 {
                    u32::MAX
                } else {
                    u32::from(a.max(b))
                },
            );
            rt_m(sl, t, len, res, inv, short)
        });
    let v6hm = (
        prop_oneof![Just(0u8), Just(1), Just(128 | 1), Just(16 | 1), any::<u8>()],
        prop_oneof![Just(0u8), Just(0xff), any::<u8>()],
        any::<bool>(),
    )
        .prop_map(|(m, i, soft)| v6h(m, i, soft));
    let optsm = (
        any::<bool>(),
        proptest::option::of(prop_oneof![Just(8u32), Just(16), Just(24), any::<u32>()]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(dst, len, inv, short)| opts_m(dst, len, inv, short));
    let hl = (
        0u8..5,
        prop_oneof![Just(0u8), Just(1), Just(64), Just(255), any::<u8>()],
    )
        .prop_map(|(mode, value)| Match::HopLimit { mode, value });
    let proto_m = (
        prop_oneof![
            Just(0u8),
            Just(6),
            Just(17),
            Just(58),
            Just(59),
            Just(50),
            any::<u8>()
        ],
        any::<bool>(),
    );
    let transport = prop_oneof![
        (arb_range(), arb_range(), any::<bool>(), any::<bool>()).prop_map(|(s, d, a, b)| {
            Match::Udp(UdpMatch {
                sport: s,
                dport: d,
                inv_sport: a,
                inv_dport: b,
            })
        }),
        (
            arb_range(),
            any::<u8>(),
            any::<u8>(),
            prop_oneof![Just(0u8), Just(2), Just(4), any::<u8>()],
            any::<[bool; 3]>()
        )
            .prop_map(|(d, m, c, option, inv)| Match::Tcp(TcpMatch {
                sport: PortRange::ANY,
                dport: d,
                flags_mask: m,
                flags_cmp: c & m,
                option,
                inv_sport: false,
                inv_dport: inv[0],
                inv_flags: inv[1],
                inv_option: inv[2],
            })),
        (
            prop_oneof![Just(128u8), Just(255), any::<u8>()],
            any::<u8>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(t, lo, hi, inv)| icmp6_m(t, lo, hi, inv)),
        (
            proptest::collection::vec(prop_oneof![Just(53u16), Just(22), any::<u16>()], 1..4),
            any::<bool>()
        )
            .prop_map(|(ports, inv)| multiport_m(MultiportMode::Either, &ports, inv)),
    ];
    (
        proptest::option::of(prop_oneof![addr, range, fragm, rtm, optsm, v6hm]),
        proptest::option::of(hl),
        proptest::option::of((proto_m, proptest::collection::vec(transport, 0..3))),
        any::<bool>(),
    )
        .prop_map(|(addr, hl, p, hl_first)| {
            let mut v = Vec::new();
            if hl_first {
                v.extend(hl);
                v.extend(addr);
            } else {
                v.extend(addr);
                v.extend(hl);
            }
            if let Some(((proto, invert), t)) = p {
                v.push(Match::Ipv6Protocol { proto, invert });
                v.extend(t);
            }
            v
        })
}

fn arb_ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        (0u8..3).prop_map(|hdrlen| Ext::HopByHop { hdrlen }),
        (0u8..3).prop_map(|hdrlen| Ext::DstOpts { hdrlen }),
        (
            0u8..3,
            prop_oneof![Just(0u8), Just(2), Just(4)],
            any::<u8>()
        )
            .prop_map(|(hdrlen, rtype, segleft)| Ext::Routing {
                hdrlen,
                rtype,
                segleft
            }),
        (prop_oneof![Just(0u16), 1u16..8], any::<bool>()).prop_map(|(o, m)| frag(o, m)),
        (1u8..6).prop_map(|hdrlen| Ext::Auth { hdrlen }),
    ]
}

fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
    let l4 = prop_oneof![
        (
            prop_oneof![Just(53u16), Just(22), any::<u16>()],
            any::<u16>()
        )
            .prop_map(|(d, s)| (nh::UDP, ipv6::udp(s, d))),
        (
            prop_oneof![Just(22u16), Just(80), any::<u16>()],
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..12)
        )
            .prop_map(|(d, f, o)| (nh::TCP, ipv6::tcp(1000, d, f, &o))),
        (
            prop_oneof![Just(128u8), Just(255), any::<u8>()],
            any::<u8>()
        )
            .prop_map(|(t, c)| (nh::ICMPV6, ipv6::icmp6(t, c))),
        Just((nh::NONE, vec![])),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..16)),
    ];
    (
        arb_addr(),
        arb_addr(),
        prop_oneof![Just(0u8), Just(1), Just(64), Just(255), any::<u8>()],
        proptest::collection::vec(arb_ext(), 0..5),
        l4,
        proptest::option::weighted(0.2, any::<u16>()),
        proptest::option::weighted(0.2, (40usize..104, any::<u8>())),
    )
        .prop_map(|(s, d, hl, exts, (proto, l4), cut, poke)| {
            let mut p = ipv6::packet(s, d, hl, &exts, proto, &l4);
            // one byte of the extension headers changed: lengths, reserved words, types
            if let Some((at, byte)) = poke.filter(|&(at, _)| at < p.len()) {
                p[at] = byte;
            }
            match cut {
                Some(c) if p.len() > 40 => {
                    let len = 40 + usize::from(c) % (p.len() - 40);
                    ipv6::truncate(p, len)
                }
                _ => p,
            }
        })
}

fn arb_program() -> impl Strategy<Value = Program> {
    programs(false)
}

/// Random programs of an entry chain and a user chain; with `runs`, some entry rules become
/// runs of rules that differ in one key ([`expand6`]).
fn programs(runs: bool) -> impl Strategy<Value = Program> {
    let run = if runs {
        arb_run6().boxed()
    } else {
        Just((0u8, 0usize, false, Vec::new())).boxed()
    };
    let rules = move |n| proptest::collection::vec((arb_rule_matches(), 0u8..9, run.clone()), n);
    (
        rules(1..8),
        rules(0..5),
        any::<bool>(),
        prop_oneof![
            Just(Hook::LocalOut),
            Just(Hook::LocalIn),
            Just(Hook::Forward)
        ],
    )
        .prop_map(|(entry, user, pol, hook)| {
            let mut slot = 0u32;
            let mut mk = |rules: Vec<(Vec<Match>, u8, RunSpec6)>, may_jump: bool| -> Vec<Rule> {
                let mut out = Vec::new();
                for (matches, a, run) in rules {
                    // a run with classes only forms on rules that end evaluation
                    let a = if run.0 == 4 && !matches!(a, 0..=2 | 4) {
                        a % 3
                    } else {
                        a
                    };
                    let action = match a {
                        0 => Action::Accept,
                        1 => Action::Drop,
                        2 => Action::Return,
                        3 if may_jump => Action::Call(ChainId(1)),
                        4 if may_jump => Action::Goto(ChainId(1)),
                        5 => Action::Log(Log {
                            level: 4,
                            flags: 0,
                            prefix: [b'p'; 30],
                        }),
                        6 => Action::Reject(Reject { with: 1 }),
                        _ => Action::Continue,
                    };
                    for matches in expand6(matches, run) {
                        slot += 1;
                        out.push(Rule {
                            matches,
                            action,
                            counter: slot - 1,
                        });
                    }
                }
                out
            };
            let e = mk(entry, true);
            let u = mk(user, false);
            program(
                hook,
                vec![e, u],
                if pol { Verdict::Accept } else { Verdict::Drop },
                slot,
            )
        })
}

#[test]
fn random_rulesets_match_reference() {
    let Some(env) = env() else { return };
    let variants = variants(&env);
    let mut runner = proptest::test_runner::TestRunner::new(common::seeded_runs(200));
    runner
        .run(
            &(
                arb_program(),
                proptest::collection::vec(arb_packet(), 16),
                0usize..16,
            ),
            |(p, pkts, k)| {
                let (mode, opts) = &variants[k % variants.len()];
                let l = load(&env, &p, *opts);
                for pkt in &pkts {
                    agrees(&l, &p, pkt, mode)?;
                }
                Ok(())
            },
        )
        .unwrap();
}

/// How a generated entry-chain rule becomes a run of rules that differ in one key: 0 = it
/// stays alone; 1 = an exact source (or destination) address inserted at `pos`; 2 = a /64
/// source (or /100 destination) prefix inserted at `pos`; 3 = `-p udp --dport P` appended to
/// a rule without a protocol test; 4 = `RUN6_WITH_CLASSES` rules on a source (or
/// destination) address under /128, /127 and /64 in turn (a run with three classes). The keys
/// include the corpus' addresses and ports, and duplicates, on purpose.
type RunSpec6 = (u8, usize, bool, Vec<([u8; 16], u16)>);

/// Rules of a generated run with classes: enough for three classes of one lookup.
const RUN6_WITH_CLASSES: usize = 3 * emitter::codegen::RULES_PER_CLASS_MAP + 3;

fn arb_run6() -> impl Strategy<Value = RunSpec6> {
    let port = prop_oneof![Just(22u16), Just(53), Just(80), Just(5001)];
    (
        prop_oneof![
            3 => Just(0u8),
            1 => Just(1u8),
            1 => Just(2u8),
            1 => Just(3u8),
            1 => Just(4u8)
        ],
        0usize..4,
        any::<bool>(),
        proptest::collection::vec((arb_addr(), port), 4..7),
    )
}

fn expand6(matches: Vec<Match>, (kind, pos, src, keys): RunSpec6) -> Vec<Vec<Match>> {
    let key = |a: [u8; 16], bits: u32| {
        let mask = u128::MAX << (128 - bits);
        let addr = v6((u128::from_be_bytes(a) & mask).to_be_bytes());
        let mask = Ipv6Addr::from(mask);
        if src {
            Match::Ipv6Src {
                addr,
                mask,
                invert: false,
            }
        } else {
            Match::Ipv6Dst {
                addr,
                mask,
                invert: false,
            }
        }
    };
    let has_proto = matches
        .iter()
        .any(|m| matches!(m, Match::Ipv6Protocol { .. }));
    match kind {
        1 | 2 => keys
            .iter()
            .map(|(a, _)| {
                let bits = match (kind, src) {
                    (1, _) => 128,
                    (_, true) => 64,
                    _ => 100,
                };
                let mut m = matches.clone();
                m.insert(pos.min(m.len()), key(*a, bits));
                m
            })
            .collect(),
        4 => (0..RUN6_WITH_CLASSES)
            .map(|i| {
                // the keys first, then variations of them
                let (mut a, _) = keys[i % keys.len()];
                let round = (i / keys.len()) as u8;
                a[7] ^= round;
                a[15] ^= round << 2;
                let bits = [128, 127, 64][(i + usize::from(round)) % 3];
                let mut m = matches.clone();
                m.insert(pos.min(m.len()), key(a, bits));
                m
            })
            .collect(),
        3 if !has_proto => keys
            .iter()
            .map(|(_, p)| {
                let mut m = matches.clone();
                m.push(proto(17, false));
                m.push(udp_m(*p, false));
                m
            })
            .collect(),
        _ => vec![matches],
    }
}

/// Rule runs in a fixed program, for the kernel matrix (the random ones below run on the host
/// only): an exact-source run with a duplicate key before the protocol's hotdrop barrier, a
/// /64 destination run calling a chain whose /100 source run returns, and a port run; each
/// key hit, missed and duplicated, in every variant, against the reference.
#[test]
fn ipv6_rule_runs_table() {
    let Some(env) = env() else { return };
    let at = |i: u8| {
        let mut a = A;
        a[8] = 0x10;
        a[15] = i;
        a
    };
    let exact = Ipv6Addr::from(u128::MAX);
    let slash = |bits: u32| Ipv6Addr::from(u128::MAX << (128 - bits));
    let mut slot = 0u32;
    let mut rule = |matches: Vec<Match>, action: Action| {
        slot += 1;
        Rule {
            matches,
            action,
            counter: slot - 1,
        }
    };
    let mut e = Vec::new();
    for i in [1u8, 2, 3, 2, 4] {
        e.push(rule(
            vec![
                Match::Ipv6Src {
                    addr: v6(at(i)),
                    mask: exact,
                    invert: false,
                },
                proto(17, false),
                udp_m(53, false),
            ],
            Action::Drop,
        ));
    }
    for i in [1u8, 2, 3, 4] {
        let mut net = B;
        net[7] = i;
        e.push(rule(
            vec![Match::Ipv6Dst {
                addr: v6(net),
                mask: slash(64),
                invert: false,
            }],
            Action::Call(ChainId(1)),
        ));
    }
    for p in [22u16, 80, 443, 8080] {
        e.push(rule(
            vec![proto(6, false), tcp_m(PortRange::one(p), (0, 0), 0, false)],
            Action::Accept,
        ));
    }
    let mut u = Vec::new();
    for i in [1u8, 2, 3, 4] {
        let mut net = C;
        net[12] = i << 4;
        u.push(rule(
            vec![Match::Ipv6Src {
                addr: Ipv6Addr::from(u128::from_be_bytes(net) & (u128::MAX << 28)),
                mask: slash(100),
                invert: false,
            }],
            Action::Return,
        ));
    }
    u.push(rule(vec![], Action::Drop));
    let policy = slot;
    let p = program(Hook::LocalIn, vec![e, u], Verdict::Accept, policy);
    let out = bpfilter::xlate::compile(&p, &env.layout, Options::default()).expect("compile");
    assert!(
        out.maps.len() >= 4,
        "the four runs must be lookups: {} maps",
        out.maps.len()
    );
    let mut pkts = Vec::new();
    for i in 0..6u8 {
        for d in [B, C] {
            pkts.push(ipv6::packet(at(i), d, 64, &[], nh::UDP, &ipv6::udp(1, 53)));
            pkts.push(ipv6::packet(at(i), d, 64, &[], nh::UDP, &ipv6::udp(1, 54)));
        }
    }
    for i in 0..6u8 {
        let mut d = B;
        d[7] = i;
        d[15] = 9;
        let mut s = C;
        s[12] = i << 4 | 3;
        s[14] = 7;
        pkts.push(ipv6::packet(
            s,
            d,
            64,
            &[],
            nh::ICMPV6,
            &ipv6::icmp6(128, 0),
        ));
        pkts.push(ipv6::packet(
            A,
            d,
            64,
            &[],
            nh::ICMPV6,
            &ipv6::icmp6(128, 0),
        ));
    }
    for port in [21u16, 22, 80, 443, 8080, 8081] {
        pkts.push(ipv6::packet(
            A,
            B,
            64,
            &[],
            nh::TCP,
            &ipv6::tcp(1000, port, 0x02, &[]),
        ));
    }
    for (mode, opts) in variants(&env) {
        let l = load(&env, &p, opts);
        for pkt in &pkts {
            agrees(&l, &p, pkt, &mode).unwrap();
        }
    }
}

/// Rule runs (hash lookups keyed by IPv6 addresses under their masks, or ports) in random
/// rulesets agree with the reference, rule by rule and counter by counter, in every compile
/// variant; enough of the programs must hold runs for this to test them.
#[test]
fn random_rule_runs_match_reference() {
    let Some(env) = env() else { return };
    let variants = variants(&env);
    let arb = programs(true);
    let mut runner = proptest::test_runner::TestRunner::new(common::seeded_runs(150));
    let with_runs = std::cell::Cell::new(0u32);
    let with_classes = std::cell::Cell::new(0u32);
    runner
        .run(
            &(arb, proptest::collection::vec(arb_packet(), 16), 0usize..16),
            |(p, pkts, k)| {
                let (mode, opts) = &variants[k % variants.len()];
                let l = load(&env, &p, *opts);
                // a run's maps give the counter slot (4 bytes); the LOG prefix map its text
                let out = bpfilter::xlate::compile(&p, &env.layout, *opts).expect("compile");
                if out.maps.iter().any(|m| m.value_size == 4) {
                    with_runs.set(with_runs.get() + 1);
                }
                // a run with classes: the rule's index beside its slot
                if out.maps.iter().any(|m| m.value_size == 8) {
                    with_classes.set(with_classes.get() + 1);
                }
                for pkt in &pkts {
                    agrees(&l, &p, pkt, mode)?;
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(
        with_runs.get() >= 20,
        "only {} of the programs held rule runs",
        with_runs.get()
    );
    assert!(
        with_classes.get() >= 10,
        "only {} of the programs held rule runs with classes",
        with_classes.get()
    );
}

/// Long IPv6 chains load (the rule forms keep the verifier's pending branches bounded) and
/// still agree with the reference: address rules, protocol + port rules.
#[test]
fn long_chains_load() {
    let Some(env) = env() else { return };
    let all = Ipv6Addr::from([0xff; 16]);
    for n in [500u32, 3000] {
        let mut rules: Vec<Rule> = (0..n)
            .map(|i| {
                let mut a = B;
                a[12..16].copy_from_slice(&(i + 100).to_be_bytes());
                let matches = if i % 2 == 0 {
                    vec![Match::Ipv6Src {
                        addr: v6(a),
                        mask: all,
                        invert: false,
                    }]
                } else {
                    vec![
                        Match::Ipv6Dst {
                            addr: v6(a),
                            mask: all,
                            invert: true,
                        },
                        proto(17, false),
                        udp_m(10_000 + i as u16, false),
                    ]
                };
                Rule {
                    matches,
                    action: Action::Drop,
                    counter: i,
                }
            })
            .collect();
        rules.push(Rule {
            matches: vec![proto(17, false), udp_m(53, false)],
            action: Action::Accept,
            counter: n,
        });
        let p = program(Hook::LocalOut, vec![rules], Verdict::Drop, n + 1);
        let t = std::time::Instant::now();
        let l = load(&env, &p, Options::default());
        let verified = VERIFIED.with(std::cell::Cell::get);
        eprintln!(
            "{n} IPv6 rules: loaded in {:?}, {verified} instructions verified",
            t.elapsed()
        );
        // the verifier walks the rules once (linear in the rule count)
        assert!(verified < 200 * n, "{verified} verified for {n} rules");
        for (pname, pkt) in corpus() {
            agrees(&l, &p, &pkt, pname).unwrap();
        }
    }
}

/// The IPv6 prologue (the extension-header walk, every header kind, `-m frag`'s search and
/// the tcp option scan) costs the verifier a bounded, small number of steps.
#[test]
fn prologue_verification_cost() {
    let Some(env) = env() else { return };
    let all = vec![
        proto(6, false),
        tcp_m(PortRange::ANY, (0, 0), 4, false),
        frag_m((0, u32::MAX), frag::MF, false),
    ];
    // The walk's step is one path for the verifier (see access6's module doc): 2,161 and
    // 4,344 instructions on 6.18, where a step that branched per header kind took 7,395 and
    // 7,605.
    for (name, matches, budget) in [("empty", vec![], 4_000), ("tcp option + frag", all, 6_000)] {
        let p = single(Hook::LocalIn, matches, Action::Accept, Verdict::Drop);
        let _l = load(&env, &p, Options::default());
        let verified = VERIFIED.with(std::cell::Cell::get);
        eprintln!("{name}: {verified} instructions verified");
        assert!(verified < budget, "{name}: {verified} > {budget}");
    }
}

/// LOG and REJECT in an IPv6 program hand the daemon records of family NFPROTO_IPV6 (10) with
/// the packet from its IPv6 header, as IPv4 programs do from theirs.
#[test]
fn events_carry_the_ipv6_packet() {
    use emitter::event::{self, Event};
    let Some(env) = env() else { return };
    let mut prefix = [0u8; 30];
    prefix[..4].copy_from_slice(b"v6: ");
    let log = Action::Log(Log {
        level: 5,
        flags: 0x01,
        prefix,
    });
    for (name, opts) in variants(&env) {
        for hook in [Hook::LocalIn, Hook::LocalOut] {
            let p = program(
                hook,
                vec![vec![
                    Rule {
                        matches: vec![proto(6, false)],
                        action: log,
                        counter: 0,
                    },
                    Rule {
                        matches: vec![],
                        action: Action::Reject(Reject { with: 5 }),
                        counter: 1,
                    },
                ]],
                Verdict::Accept,
                2,
            );
            let l = load(&env, &p, opts);
            let what = format!("{name} {hook:?}");
            let mut payload = ipv6::tcp(1000, 22, 0x02, &[]);
            payload.resize(event::PACKET_CAP + 100, 0x5a);
            let pkt = ipv6::packet(A, B, 64, &[Ext::HopByHop { hdrlen: 0 }], nh::TCP, &payload);
            agrees(&l, &p, &pkt, &what).unwrap();
            let mut rb = bpfilter::sys::RingBuf::new(&l.maps[0]).unwrap();
            let recs = rb.poll(0).unwrap();
            assert_eq!(recs.len(), 2, "{what}: one record per event");
            let e = Event::parse(&recs[0]).unwrap();
            assert_eq!(e.kind(), event::KIND_LOG, "{what}");
            assert_eq!((e.hook(), e.pf()), (hook.number() as u8, 10), "{what}");
            assert_eq!((e.log_level(), e.rule()), (5, 0), "{what}");
            assert_eq!(e.prefix(), b"v6: ", "{what}");
            assert_eq!(e.skb_len() as usize, pkt.len(), "{what}");
            assert_eq!(e.packet(), &pkt[..event::PACKET_CAP], "{what}");
            let r = Event::parse(&recs[1]).unwrap();
            assert_eq!(
                (r.kind(), r.pf(), r.reject_with(), r.rule()),
                (event::KIND_REJECT, 10, 5, 1),
                "{what}"
            );
        }
    }
}

/// The walk's bound: 32 extension headers are followed exactly as the kernel does; a 33rd
/// makes the walk fail (the documented difference: the kernel has no bound).
#[test]
fn extension_header_bound() {
    let Some(env) = env() else { return };
    let bound = emitter::codegen::MAX_EXT_HEADERS as usize;
    let p = single(
        Hook::LocalOut,
        vec![proto(17, false), udp_m(53, false)],
        Action::Accept,
        Verdict::Drop,
    );
    let chain = |n: usize| {
        let exts: Vec<Ext> = (0..n)
            .map(|k| {
                if k % 2 == 0 {
                    Ext::HopByHop { hdrlen: 0 }
                } else {
                    Ext::DstOpts { hdrlen: 0 }
                }
            })
            .collect();
        ipv6::packet(A, B, 64, &exts, nh::UDP, &ipv6::udp(1, 53))
    };
    for (mode, opts) in variants(&env) {
        let l = load(&env, &p, opts);
        let at = chain(bound);
        agrees(&l, &p, &at, &mode).unwrap();
        assert_eq!(reference(&p, &at).verdict, Verdict::Accept);
        let past = chain(bound + 1);
        assert_eq!(
            reference(&p, &past).verdict,
            Verdict::Accept,
            "the kernel's"
        );
        let (ret, d) = l.run(&past);
        assert_eq!(
            (ret, d),
            (0, vec![(0, 0), (0, 0)]),
            "{mode}: dropped, uncounted"
        );
    }
    // ipv6header's own walk has the same bound
    let p = single(
        Hook::LocalOut,
        vec![v6h(128 | 64 | 1, 0, false)],
        Action::Accept,
        Verdict::Drop,
    );
    for (mode, opts) in variants(&env) {
        let l = load(&env, &p, opts);
        let at = chain(bound);
        agrees(&l, &p, &at, &mode).unwrap();
        assert_eq!(reference(&p, &at).verdict, Verdict::Accept);
        let past = chain(bound + 1);
        assert_eq!(
            reference(&p, &past).verdict,
            Verdict::Accept,
            "the kernel's"
        );
        let (ret, d) = l.run(&past);
        assert_eq!(
            (ret, d),
            (0, vec![(0, 0), (0, 0)]),
            "{mode}: dropped, uncounted"
        );
    }
}
