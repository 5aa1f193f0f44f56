//! Privileged datapath tests: IR programs compiled by the emitter, loaded into the real
//! kernel, run with BPF_PROG_TEST_RUN on crafted IPv4 packets; verdicts and every counter
//! delta are compared with hand-written expectations and with the reference evaluator
//! (`emitter::reference`). Under CI=true they fail when BPF is unavailable; otherwise they
//! skip with a message.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::net::Ipv4Addr;

use bpfilter::layout::kernel_layout;
use bpfilter::sys::{num_possible_cpus, Btf, Map, MapType, Program as BpfProgram};
use emitter::codegen::{compile, compile_with, Options, PacketAccess, StackRule};
use emitter::ir::*;
use emitter::reference::{evaluate, Outcome, Packet};
use emitter::{KernelLayout, MapRef};
use proptest::prelude::*;
use test_support::ir::*;
use test_support::packet::Ipv4;

// ---------------------------------------------------------------------------------------------
// harness

fn unavailable(why: &str) -> Option<Env> {
    test_support::unavailable(why);
    None
}

struct Env {
    layout: KernelLayout,
    /// size of the event ring buffer of loaded programs
    ring_bytes: u32,
    ncpu: usize,
    /// packet-access strategies that load on this kernel (the baseline always; the test
    /// fails if it does not)
    accesses: Vec<PacketAccess>,
    /// how this kernel adds up a call chain's stack (the daemon's probe)
    stack: StackRule,
}

impl Env {
    /// One `Options` per way of reading headers this kernel verifies: the dynptr baseline,
    /// and where it loads the cast strategy, on its fast path and forced onto its fallback.
    fn access_variants(&self) -> Vec<(String, Options)> {
        let mut v = Vec::new();
        for &access in &self.accesses {
            v.push((
                access.name().to_owned(),
                Options {
                    access,
                    ..Options::default()
                },
            ));
            if access == PacketAccess::Cast {
                v.push((
                    "cast, dynptr fallback".to_owned(),
                    Options {
                        access,
                        force_slow_path: true,
                        ..Options::default()
                    },
                ));
            }
        }
        v
    }
}

fn env() -> Option<Env> {
    let btf = match Btf::vmlinux() {
        Ok(b) => b,
        Err(e) => return unavailable(&format!("no vmlinux BTF: {e}")),
    };
    let layout = match kernel_layout(&btf) {
        Ok(l) => l,
        Err(e) => return unavailable(&format!("BTF layout: {e}")),
    };
    if let Err(e) = Map::create(MapType::Array, 4, 4, 1, "bpfltr_probe") {
        return unavailable(&format!("BPF unavailable: {e}"));
    }
    let mut accesses = Vec::new();
    for access in PacketAccess::ALL {
        match bpfilter::probe::try_strategy(&layout, access) {
            Ok(_) => accesses.push(access),
            Err(e) if access == PacketAccess::Dynptr => {
                panic!("the baseline packet access does not load here: {e}")
            }
            Err(e) => eprintln!("packet access {access} does not load here: {e}"),
        }
    }
    Some(Env {
        layout,
        ring_bytes: 1 << 16,
        ncpu: num_possible_cpus().unwrap(),
        accesses,
        stack: bpfilter::probe::stack_rule(),
    })
}

/// A compiled and loaded program with its counter map.
struct Loaded {
    prog: BpfProgram,
    counters: Map,
    slots: u32,
    hook: Hook,
    stats: bpfilter::sys::LoadStats,
    insns: usize,
    /// rule-run lookup maps the program uses
    maps: usize,
    /// the event ring buffer and loss map (REJECT, LOG)
    events: Map,
    loss: Map,
    /// the limit buckets (64 slots, all zero: tests fill the ones they use)
    limits: Map,
    /// the address-type map (empty: tests fill it)
    addrtypes: Map,
    /// the later segments of a split chain and their PROG_ARRAY (kept open: the kernel
    /// empties a PROG_ARRAY no file refers to)
    #[allow(dead_code)]
    segments: (Vec<BpfProgram>, Option<Map>),
}

fn max_slot(p: &Program) -> u32 {
    let mut m = p.policy.counter;
    for c in p.chains.values() {
        for r in &c.rules {
            m = m.max(r.counter);
        }
    }
    m
}

fn load(env: &Env, p: &Program) -> Loaded {
    load_with(env, p, Options::default())
}

fn load_with(env: &Env, p: &Program, opts: Options) -> Loaded {
    // the daemon's own compile step (generator, then the unreachable-code pass)
    let out = bpfilter::xlate::compile(p, &env.layout, opts).expect("compile");
    load_outputs(env, p, vec![out])
}

/// Loads `outs`: a hook's program, then the later segments of its chain when it is split
/// (each tail-calling the next in a PROG_ARRAY), with the test's maps.
fn load_outputs(env: &Env, p: &Program, outs: Vec<emitter::codegen::Output>) -> Loaded {
    let slots = max_slot(p) + 1;
    let counters = Map::create(MapType::PercpuArray, 4, 16, slots, "bpfltr_test_ctr").unwrap();
    use std::os::fd::AsRawFd;
    let fd = counters.fd().as_raw_fd();
    let events = Map::create(MapType::RingBuf, 0, 0, env.ring_bytes, "bpfltr_test_ev").unwrap();
    let loss = Map::create(
        MapType::Array,
        4,
        8,
        emitter::event::LOSS_SLOTS,
        "bpfltr_test_evl",
    )
    .unwrap();
    // the LOG gate open, as the daemon keeps it while it writes lines
    loss.update(
        &emitter::event::LOG_GATE.to_ne_bytes(),
        &1u64.to_ne_bytes(),
        0,
    )
    .unwrap();
    let limits = Map::create(MapType::Array, 4, 8, 64, "bpfltr_test_lim").unwrap();
    let addrtypes = Map::create(
        MapType::LpmTrie,
        emitter::codegen::ADDRTYPE_KEY_SIZE,
        emitter::codegen::ADDRTYPE_VALUE_SIZE,
        64,
        "bpfltr_test_at",
    )
    .unwrap();
    let reply_ct = Map::create(
        MapType::Array,
        4,
        emitter::event::CT_COPY as u32,
        emitter::event::REPLY_CT_SLOTS,
        "bpfltr_test_rct",
    )
    .unwrap();
    let segment_map = (outs.len() > 1).then(|| {
        let n = outs.len() as u32 - 1;
        Map::create(MapType::ProgArray, 4, 4, n, "bpfltr_test_seg").unwrap()
    });
    let mut loaded = Vec::new();
    let mut maps = 0;
    for (j, out) in outs.iter().enumerate() {
        let compiled = &out.code;
        let sets: Vec<Map> = out
            .maps
            .iter()
            .map(|spec| Map::from_spec(spec, "bpfltr_set").unwrap())
            .collect();
        maps += sets.len();
        let bytes = compiled.bytes(&|m| match m {
            MapRef::Counters => fd,
            MapRef::Other(i) => sets[i as usize].fd().as_raw_fd(),
            MapRef::Events => events.fd().as_raw_fd(),
            MapRef::EventLoss => loss.fd().as_raw_fd(),
            MapRef::Limits => limits.fd().as_raw_fd(),
            MapRef::AddrTypes => addrtypes.fd().as_raw_fd(),
            MapRef::ReplyCt => reply_ct.fd().as_raw_fd(),
            MapRef::Segments => segment_map.as_ref().map_or(-1, |m| m.fd().as_raw_fd()),
            MapRef::Recent(_) | MapRef::Hashlimit(_) => -1,
        });
        let level = std::env::var("BPFILTER_TEST_LOG_LEVEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (prog, stats) = match BpfProgram::load_netfilter("bpfltr_test", &bytes, level) {
            Ok(x) => x,
            Err(e) => {
                // the load took the verifier's log of the failure (one verification more;
                // none over the verifier's limits, which the error says)
                let log = match &e {
                    bpfilter::sys::SysError::Load { log, .. } => log.clone(),
                    other => format!("{other:?}"),
                };
                let tail: String = log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "load failed (program {j}): {e}\n{tail}\n{}",
                    compiled
                        .dump()
                        .lines()
                        .take(400)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        };
        if let (Some(seg), Some(slot)) = (&segment_map, j.checked_sub(1)) {
            seg.set_prog(slot as u32, &prog).unwrap();
        }
        loaded.push((prog, stats));
    }
    let insns = outs[0].code.slot_count();
    let mut loaded = loaded.into_iter();
    let (prog, stats) = loaded.next().expect("a program");
    Loaded {
        prog,
        counters,
        slots,
        hook: p.hook,
        stats,
        insns,
        maps,
        events,
        loss,
        limits,
        addrtypes,
        segments: (loaded.map(|(p, _)| p).collect(), segment_map),
    }
}

impl Loaded {
    fn counters(&self, ncpu: usize) -> Vec<(u64, u64)> {
        let _ = ncpu;
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

    /// One test run: (retval, per-slot (packets, bytes) deltas).
    fn run(&self, env: &Env, ip: &[u8]) -> (u32, Vec<(u64, u64)>) {
        let before = self.counters(env.ncpu);
        let r = if self.hook == Hook::LocalOut {
            self.prog.test_run(ip, None, 1).unwrap()
        } else {
            let mut data = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
            data.extend_from_slice(ip);
            let mut ctx = [0u8; 48];
            ctx[0] = self.hook.number() as u8;
            ctx[1] = 2; // NFPROTO_IPV4
            self.prog.test_run(&data, Some(&ctx), 1).unwrap()
        };
        let after = self.counters(env.ncpu);
        let d = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a.0 - b.0, a.1 - b.1))
            .collect();
        (r.retval, d)
    }
}

/// Expected counter deltas of an outcome.
fn deltas(o: &Outcome, slots: u32, len: usize) -> Vec<(u64, u64)> {
    let mut v = vec![(0u64, 0u64); slots as usize];
    for s in &o.counted {
        v[*s as usize].0 += 1;
        v[*s as usize].1 += len as u64;
    }
    v
}

/// The code generator's three modes: split (the default), branches (no split), combined (no
/// pending-branch budget).
fn modes() -> [(&'static str, Options); 3] {
    [
        ("split", Options::default()),
        (
            "branches",
            Options {
                split: false,
                ..Options::default()
            },
        ),
        (
            "combined",
            Options {
                pending_budget: 0,
                ..Options::default()
            },
        ),
    ]
}

fn verdict_code(v: Verdict) -> u32 {
    match v {
        Verdict::Accept => 1,
        Verdict::Drop => 0,
    }
}

/// The reference's outcome for `pkt` on `p`, with no devices, connection, mark or socket.
fn reference(p: &Program, pkt: &[u8]) -> Outcome {
    evaluate(
        p,
        &Packet {
            data: pkt,
            ..Default::default()
        },
    )
}

/// Runs `pkt` through `l` and asserts (for proptest) that its verdict and counter deltas are
/// the reference's on `p`; `case` names the random case in a failure.
fn agrees(env: &Env, l: &Loaded, p: &Program, pkt: &[u8], case: &str) -> Result<(), TestCaseError> {
    let reference = reference(p, pkt);
    let (ret, d) = l.run(env, pkt);
    prop_assert_eq!(
        ret,
        verdict_code(reference.verdict),
        "verdict ({})\n{:#?}\n{:02x?}",
        case,
        p,
        pkt
    );
    prop_assert_eq!(
        d,
        deltas(&reference, l.slots, pkt.len()),
        "counters ({})\n{:#?}\n{:02x?}",
        case,
        p,
        pkt
    );
    Ok(())
}

/// Run `pkt` through the loaded program and the reference evaluator; assert both agree
/// (and, when given, agree with the hand-written expectation). Returns the outcome.
fn check(
    env: &Env,
    l: &Loaded,
    p: &Program,
    pkt: &[u8],
    expect: Option<(Verdict, &[u32])>,
    what: &str,
) -> Outcome {
    let reference = reference(p, pkt);
    if let Some((v, counted)) = expect {
        assert_eq!(
            reference,
            Outcome {
                verdict: v,
                counted: counted.to_vec()
            },
            "reference evaluator disagrees with the table: {what}"
        );
    }
    let (ret, d) = l.run(env, pkt);
    assert_eq!(
        ret,
        verdict_code(reference.verdict),
        "verdict: {what}\nprogram: {p:#?}\npacket: {pkt:02x?}"
    );
    assert_eq!(
        d,
        deltas(&reference, l.slots, pkt.len()),
        "counters: {what}\nprogram: {p:#?}\npacket: {pkt:02x?}"
    );
    reference
}

// ---------------------------------------------------------------------------------------------
// packets

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// IPv4 header (+ `opts` option bytes, a multiple of 4) + `l4`. `frag` = the frag_off field.
fn ip(proto: u8, src: [u8; 4], dst: [u8; 4], frag: u16, opts: &[u8], l4: &[u8]) -> Vec<u8> {
    Ipv4 {
        id: 0x1234,
        frag,
        opts,
        ..Ipv4::new(proto, src, dst)
    }
    .build(l4)
}

fn udp_hdr(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
    v
}

/// TCP header with `flags` and `opts` (padded to 4 bytes), data offset from the length.
fn tcp_hdr(sport: u16, dport: u16, flags: u8, opts: &[u8]) -> Vec<u8> {
    let mut o = opts.to_vec();
    while o.len() % 4 != 0 {
        o.push(0);
    }
    let doff = (20 + o.len()) / 4;
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    v.push((doff as u8) << 4);
    v.push(flags);
    v.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    v.extend_from_slice(&o);
    v
}

fn icmp_hdr(t: u8, code: u8) -> Vec<u8> {
    vec![t, code, 0, 0, 0, 1, 0, 1]
}

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
const C: [u8; 4] = [192, 168, 7, 9];

fn udp_pkt(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    ip(UDP, src, dst, 0, &[], &udp_hdr(sport, dport))
}
fn tcp_pkt(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    ip(TCP, src, dst, 0, &[], &tcp_hdr(sport, dport, flags, &[]))
}

/// A varied packet corpus: every protocol, fragments, truncations, IP and TCP options.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mss = [2u8, 4, 0x05, 0xb4];
    let ts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let sack_ws = [4u8, 2, 1, 3, 3, 7];
    let ipopt = [0x94u8, 4, 0, 0]; // router alert
    let mut tcp_doff4 = tcp_hdr(1000, 22, 0x02, &[]);
    tcp_doff4[12] = 4 << 4;
    // NOP, SACK-permitted, timestamps, then MSS 536
    let mss_after = [
        1u8, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 2, 4, 0x02, 0x18,
    ];
    // kind 2 of length 3 (skipped by its length), then MSS 1400
    let mss_badlen = [2u8, 3, 0x05, 2, 4, 0x05, 0x78, 1];
    // kind 2 length 4 at optlen - 3: not the MSS; its length steps out
    let mss_cut = [1u8, 1, 1, 1, 1, 2, 4, 5];
    // kind 9 with a zero length byte counts as one byte, then MSS 1460
    let zero_len = [9u8, 0, 2, 4, 0x05, 0xb4];
    let mut tcp_optcut = tcp_hdr(1000, 22, 0x02, &ts);
    tcp_optcut.truncate(24); // data offset says 32, only 24 bytes there
    vec![
        ("udp A->B 1000->53", udp_pkt(A, B, 1000, 53)),
        ("udp C->B 53->1000", udp_pkt(C, B, 53, 1000)),
        ("udp B->A 5000->5001", udp_pkt(B, A, 5000, 5001)),
        ("tcp A->B syn 40000->22", tcp_pkt(A, B, 40000, 22, 0x02)),
        ("tcp C->A ack 80->40000", tcp_pkt(C, A, 80, 40000, 0x10)),
        ("tcp A->C syn|ack 443->1024", tcp_pkt(A, C, 443, 1024, 0x12)),
        (
            "tcp syn mss",
            ip(TCP, A, B, 0, &[], &tcp_hdr(1234, 80, 0x02, &mss)),
        ),
        (
            "tcp ack timestamp",
            ip(TCP, B, A, 0, &[], &tcp_hdr(80, 1234, 0x10, &ts)),
        ),
        (
            "tcp sackperm ws",
            ip(TCP, A, B, 0, &[], &tcp_hdr(1234, 80, 0x02, &sack_ws)),
        ),
        ("tcp doff 4", ip(TCP, A, B, 0, &[], &tcp_doff4)),
        ("tcp options cut", ip(TCP, A, B, 0, &[], &tcp_optcut)),
        ("icmp echo", ip(ICMP, A, B, 0, &[], &icmp_hdr(8, 0))),
        ("icmp unreach port", ip(ICMP, C, A, 0, &[], &icmp_hdr(3, 3))),
        ("icmp unreach frag", ip(ICMP, C, A, 0, &[], &icmp_hdr(3, 4))),
        (
            "udp ip options",
            ip(UDP, A, B, 0, &ipopt, &udp_hdr(1000, 53)),
        ),
        (
            "tcp ip options",
            ip(TCP, C, B, 0, &ipopt, &tcp_hdr(2000, 22, 0x02, &[])),
        ),
        (
            "udp first fragment (MF)",
            ip(UDP, A, B, 0x2000, &[], &udp_hdr(1000, 53)),
        ),
        (
            "udp fragment off 1",
            ip(UDP, A, B, 1, &[], &udp_hdr(1000, 53)),
        ),
        (
            "udp fragment off 185",
            ip(UDP, A, B, 185, &[], &udp_hdr(1000, 53)),
        ),
        (
            "tcp fragment off 1",
            ip(TCP, A, B, 0x2001, &[], &tcp_hdr(1000, 22, 2, &[])),
        ),
        (
            "tcp fragment off 2",
            ip(TCP, A, B, 2, &[], &tcp_hdr(1000, 22, 2, &[])),
        ),
        (
            "icmp fragment off 3",
            ip(ICMP, A, B, 3, &[], &icmp_hdr(8, 0)),
        ),
        (
            "tcp truncated 12",
            ip(TCP, A, B, 0, &[], &tcp_hdr(1000, 22, 2, &[])[..12]),
        ),
        (
            "udp truncated 6",
            ip(UDP, A, B, 0, &[], &udp_hdr(1000, 53)[..6]),
        ),
        (
            "udp truncated 3",
            ip(UDP, A, B, 0, &[], &udp_hdr(1000, 53)[..3]),
        ),
        (
            "icmp truncated 4",
            ip(ICMP, A, B, 0, &[], &icmp_hdr(8, 0)[..4]),
        ),
        ("bare ip header proto 6", ip(TCP, C, B, 0, &[], &[])),
        ("gre", ip(47, A, B, 0, &[], &[0, 0, 8, 0])),
        // tcpmss: the MSS after other options, of a wrong length, too close to the end, a
        // zero length byte before it, and a non-first fragment whose payload reads as a
        // header with an MSS option
        (
            "tcp syn nop sackperm ts mss 536",
            ip(TCP, A, B, 0, &[], &tcp_hdr(1234, 80, 0x02, &mss_after)),
        ),
        (
            "tcp mss length 3 then mss 1400",
            ip(TCP, A, B, 0, &[], &tcp_hdr(1234, 80, 0x02, &mss_badlen)),
        ),
        (
            "tcp mss 3 bytes before the end",
            ip(TCP, A, B, 0, &[], &tcp_hdr(1234, 80, 0x02, &mss_cut)),
        ),
        (
            "tcp zero length option before mss",
            ip(TCP, A, B, 0, &[], &tcp_hdr(1234, 80, 0x02, &zero_len)),
        ),
        (
            "tcp fragment off 3 with mss 1460",
            ip(TCP, A, B, 3, &[], &tcp_hdr(1234, 80, 0x02, &mss)),
        ),
        ("tcp fragment off 3 short", ip(TCP, A, B, 3, &[], &[0; 12])),
    ]
}

fn single(hook: Hook, matches: Vec<Match>, action: Action, policy: Verdict) -> Program {
    Program::single(
        hook,
        vec![rule(matches, action, 0)],
        Policy {
            verdict: policy,
            counter: 1,
        },
    )
}

/// `matches -j DROP` (counter 0) at `rule.0` with the policy ACCEPT (counter 1), loaded with
/// `opts`: asserts that `pkt` is dropped and counted by the rule when it `hit`s, else accepted
/// by the policy.
fn check_drop_rule(
    env: &Env,
    rule: (Hook, Vec<Match>),
    opts: Options,
    pkt: &[u8],
    hit: bool,
    what: &str,
) {
    let p = single(rule.0, rule.1, Action::Drop, Verdict::Accept);
    let l = load_with(env, &p, opts);
    let expect: (Verdict, &[u32]) = if hit {
        (Verdict::Drop, &[0])
    } else {
        (Verdict::Accept, &[1])
    };
    check(env, &l, &p, pkt, Some(expect), what);
}

fn multiport(mode: MultiportMode, items: &[(u16, u16)], invert: bool) -> Match {
    let mut ports = [0u16; 15];
    let mut pflags = [0u8; 15];
    let mut n = 0usize;
    for (lo, hi) in items {
        ports[n] = *lo;
        if lo != hi {
            pflags[n] = 1;
            n += 1;
            ports[n] = *hi;
        }
        n += 1;
    }
    Match::Multiport(MultiportMatch {
        mode,
        count: n as u8,
        ports,
        pflags,
        invert,
    })
}

/// `-m tcpmss --mss min:max` with `invert` as the byte the rule holds, on a kernel reading
/// non-first fragments as headers.
fn tcpmss(min: u16, max: u16, invert: u8) -> Match {
    Match::TcpMss(TcpMssMatch {
        min,
        max,
        invert,
        frag_nomatch: false,
    })
}

/// `tcpmss` on a kernel where non-first fragments fail it (Linux 7.1+).
fn tcpmss_frag(min: u16, max: u16, invert: u8) -> Match {
    Match::TcpMss(TcpMssMatch {
        min,
        max,
        invert,
        frag_nomatch: true,
    })
}

/// Every single-match rule the suite runs against the whole corpus.
fn match_catalogue() -> Vec<(&'static str, Vec<Match>)> {
    let t = |f: fn(&mut TcpMatch)| {
        let mut m = tcpm(PortRange::ANY, PortRange::ANY);
        f(&mut m);
        vec![proto(TCP, false), Match::Tcp(m)]
    };
    vec![
        ("-s A", vec![src(A, 32, false)]),
        ("! -s A", vec![src(A, 32, true)]),
        ("-s 10/8", vec![src(A, 8, false)]),
        ("! -s 10/8", vec![src(A, 8, true)]),
        ("-s 0/0", vec![src([0; 4], 0, false)]),
        ("! -s 0/0", vec![src([0; 4], 0, true)]),
        ("-d B", vec![dst(B, 32, false)]),
        ("! -d 10.0.0.0/30", vec![dst([10, 0, 0, 0], 30, true)]),
        (
            "-s with bits outside mask",
            vec![Match::Ipv4Src {
                addr: Ipv4Addr::new(10, 0, 0, 1),
                mask: Ipv4Addr::new(255, 0, 0, 0),
                invert: false,
            }],
        ),
        ("-s A -d B", vec![src(A, 32, false), dst(B, 32, false)]),
        ("-p udp", vec![proto(UDP, false)]),
        ("! -p udp", vec![proto(UDP, true)]),
        ("-p 0", vec![proto(0, false)]),
        ("! -p 0", vec![proto(0, true)]),
        ("-f", vec![Match::Fragment { invert: false }]),
        ("! -f", vec![Match::Fragment { invert: true }]),
        (
            "-p tcp -f",
            vec![proto(TCP, false), Match::Fragment { invert: false }],
        ),
        (
            "-p tcp --dport 22",
            vec![
                proto(TCP, false),
                Match::Tcp(tcpm(PortRange::ANY, PortRange::one(22))),
            ],
        ),
        (
            "-p tcp ! --dport 22",
            t(|m| {
                m.dport = PortRange::one(22);
                m.inv_dport = true
            }),
        ),
        (
            "-p tcp --sport 1024:65535",
            t(|m| m.sport = pr(1024, 65535)),
        ),
        (
            "-p tcp ! --sport 0:1023",
            t(|m| {
                m.sport = pr(0, 1023);
                m.inv_sport = true
            }),
        ),
        ("-p tcp --sport 80:443", t(|m| m.sport = pr(80, 443))),
        (
            "-p tcp ! --sport 80:443",
            t(|m| {
                m.sport = pr(80, 443);
                m.inv_sport = true
            }),
        ),
        (
            "-p tcp --syn",
            t(|m| {
                m.flags_mask = 0x17;
                m.flags_cmp = 0x02
            }),
        ),
        (
            "-p tcp ! --syn",
            t(|m| {
                m.flags_mask = 0x17;
                m.flags_cmp = 0x02;
                m.inv_flags = true
            }),
        ),
        (
            "-p tcp --tcp-flags ACK ACK",
            t(|m| {
                m.flags_mask = 0x10;
                m.flags_cmp = 0x10
            }),
        ),
        ("-p tcp (no port test)", t(|_| {})),
        (
            "-m tcp without -p",
            vec![Match::Tcp(tcpm(PortRange::ANY, PortRange::one(22)))],
        ),
        ("-p tcp --tcp-option 2", t(|m| m.option = 2)),
        (
            "-p tcp ! --tcp-option 2",
            t(|m| {
                m.option = 2;
                m.inv_option = true
            }),
        ),
        ("-p tcp --tcp-option 8", t(|m| m.option = 8)),
        ("-p tcp --tcp-option 3", t(|m| m.option = 3)),
        ("-p tcp --tcp-option 1", t(|m| m.option = 1)),
        (
            "-p udp --dport 53",
            vec![
                proto(UDP, false),
                udpm(PortRange::ANY, PortRange::one(53), false, false),
            ],
        ),
        (
            "-p udp ! --dport 53",
            vec![
                proto(UDP, false),
                udpm(PortRange::ANY, PortRange::one(53), false, true),
            ],
        ),
        (
            "-p udp --sport 53",
            vec![
                proto(UDP, false),
                udpm(PortRange::one(53), PortRange::ANY, false, false),
            ],
        ),
        (
            "-p udp ! --sport 1:5000 --dport 5001",
            vec![
                proto(UDP, false),
                udpm(pr(1, 5000), PortRange::one(5001), true, false),
            ],
        ),
        (
            "-p udp (any ports)",
            vec![
                proto(UDP, false),
                udpm(PortRange::ANY, PortRange::ANY, false, false),
            ],
        ),
        (
            "-p icmp --icmp-type any",
            vec![proto(ICMP, false), icmpm(0xff, 0, 0xff, false)],
        ),
        (
            "-p icmp --icmp-type echo-request",
            vec![proto(ICMP, false), icmpm(8, 0, 0xff, false)],
        ),
        (
            "-p icmp ! --icmp-type echo-request",
            vec![proto(ICMP, false), icmpm(8, 0, 0xff, true)],
        ),
        (
            "-p icmp --icmp-type port-unreachable",
            vec![proto(ICMP, false), icmpm(3, 3, 3, false)],
        ),
        (
            "-p icmp ! --icmp-type any",
            vec![proto(ICMP, false), icmpm(0xff, 0, 0xff, true)],
        ),
        (
            "multiport dports 22,53,80",
            vec![
                proto(UDP, false),
                multiport(
                    MultiportMode::Destination,
                    &[(22, 22), (53, 53), (80, 80)],
                    false,
                ),
            ],
        ),
        (
            "multiport ! dports 22,53",
            vec![
                proto(TCP, false),
                multiport(MultiportMode::Destination, &[(22, 22), (53, 53)], true),
            ],
        ),
        (
            "multiport sports 1:1023",
            vec![
                proto(TCP, false),
                multiport(MultiportMode::Source, &[(1, 1023)], false),
            ],
        ),
        (
            "multiport ports 80,40000:50000",
            vec![
                proto(TCP, false),
                multiport(MultiportMode::Either, &[(80, 80), (40000, 50000)], false),
            ],
        ),
        (
            "multiport ! ports 53,5000:5001",
            vec![multiport(
                MultiportMode::Either,
                &[(53, 53), (5000, 5001)],
                true,
            )],
        ),
        (
            "iprange src 10.0.0.0-10.0.0.1",
            vec![Match::IpRange(IpRangeMatch {
                src: Some((Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 1))),
                dst: None,
                inv_src: false,
                inv_dst: false,
            })],
        ),
        (
            "iprange ! src 10.0.0.0-10.0.0.1",
            vec![Match::IpRange(IpRangeMatch {
                src: Some((Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 1))),
                dst: None,
                inv_src: true,
                inv_dst: false,
            })],
        ),
        (
            "iprange dst 10.0.0.2-192.168.255.255",
            vec![Match::IpRange(IpRangeMatch {
                src: None,
                dst: Some((
                    Ipv4Addr::new(10, 0, 0, 2),
                    Ipv4Addr::new(192, 168, 255, 255),
                )),
                inv_src: false,
                inv_dst: false,
            })],
        ),
        (
            "iprange src 192.0.0.0-200.0.0.0 ! dst 10.0.0.1-10.0.0.1",
            vec![Match::IpRange(IpRangeMatch {
                src: Some((Ipv4Addr::new(192, 0, 0, 0), Ipv4Addr::new(200, 0, 0, 0))),
                dst: Some((Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 1))),
                inv_src: false,
                inv_dst: true,
            })],
        ),
        (
            "-i lo (no device in test runs)",
            vec![Match::InIface(Iface::iptables("lo", false))],
        ),
        (
            "! -i eth+",
            vec![Match::InIface(Iface::iptables("eth+", true))],
        ),
        ("-o +", vec![Match::OutIface(Iface::iptables("+", false))]),
        (
            "tcpmss 1460",
            vec![proto(TCP, false), tcpmss(1460, 1460, 0)],
        ),
        (
            "tcpmss 500:1400 (fragments fail)",
            vec![proto(TCP, false), tcpmss_frag(500, 1400, 0)],
        ),
        (
            "tcpmss ! 500:1400",
            vec![proto(TCP, false), tcpmss(500, 1400, 1)],
        ),
        (
            "tcpmss ! 1:65535 (fragments fail)",
            vec![proto(TCP, false), tcpmss_frag(1, 65535, 1)],
        ),
        (
            "tcpmss 0:65535",
            vec![proto(TCP, false), tcpmss(0, 65535, 0)],
        ),
        (
            "tcpmss ! 0:65535",
            vec![proto(TCP, false), tcpmss(0, 65535, 1)],
        ),
        (
            "tcpmss invert byte 2 (always, after hotdrops)",
            vec![proto(TCP, false), tcpmss(600, 700, 2)],
        ),
        (
            "tcpmss 9:8 (never)",
            vec![proto(TCP, false), tcpmss(9, 8, 0)],
        ),
        ("tcpmss ! 9:8", vec![proto(TCP, false), tcpmss(9, 8, 1)]),
        (
            "tcpmss then --tcp-option 8 (one scan)",
            vec![
                proto(TCP, false),
                tcpmss(0, 1000, 1),
                Match::Tcp(TcpMatch {
                    option: 8,
                    ..tcpm(PortRange::ANY, PortRange::ANY)
                }),
            ],
        ),
        (
            "-s C before tcpmss: no hotdrop for others",
            vec![src(C, 32, true), proto(TCP, false), tcpmss(536, 536, 0)],
        ),
        // hotdrop order: the address test comes first and keeps truncated packets alive
        (
            "-s C -p udp --dport 53",
            vec![
                src(C, 32, false),
                proto(UDP, false),
                udpm(PortRange::ANY, PortRange::one(53), false, false),
            ],
        ),
        // two hotdrop-capable matches in one rule
        (
            "-p tcp --dport 22 multiport sports 1:1023",
            vec![
                proto(TCP, false),
                Match::Tcp(tcpm(PortRange::ANY, PortRange::one(22))),
                multiport(MultiportMode::Source, &[(1, 1023)], false),
            ],
        ),
        (
            "udp then iprange",
            vec![
                udpm(PortRange::ANY, PortRange::ANY, false, false),
                Match::IpRange(IpRangeMatch {
                    src: Some((Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 255, 255, 255))),
                    dst: None,
                    inv_src: false,
                    inv_dst: false,
                }),
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// tests

/// Every catalogue match x every corpus packet, at LOCAL_OUT and FORWARD, both policies.
#[test]
fn single_matches_against_corpus() {
    let Some(env) = env() else { return };
    let corpus = corpus();
    let mut cases = 0;
    for (i, (name, matches)) in match_catalogue().into_iter().enumerate() {
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
        let mut modes: Vec<(String, Options)> = modes().map(|(n, o)| (n.to_owned(), o)).into();
        modes.extend(env.access_variants().into_iter().skip(1));
        for (mode, opts) in modes {
            let l = load_with(&env, &p, opts);
            for (pname, pkt) in &corpus {
                check(
                    &env,
                    &l,
                    &p,
                    pkt,
                    None,
                    &format!("{name} / {pname} / {hook:?} / {mode}"),
                );
                cases += 1;
            }
        }
    }
    eprintln!("{cases} (ruleset, packet) cases");
    assert!(cases >= 300);
}

/// Hand-written expectations for the semantics that are easy to get wrong; the reference
/// evaluator must agree with the table and the BPF program with both.
#[test]
fn table_of_expectations() {
    let Some(env) = env() else { return };
    use Verdict::*;
    let dport22 = || {
        vec![
            proto(TCP, false),
            Match::Tcp(tcpm(PortRange::ANY, PortRange::one(22))),
        ]
    };
    let udp53 = || {
        vec![
            proto(UDP, false),
            udpm(PortRange::ANY, PortRange::one(53), false, false),
        ]
    };
    let c = corpus();
    let pkt = |n: &str| c.iter().find(|x| x.0 == n).unwrap().1.clone();
    #[allow(clippy::type_complexity)]
    let table: Vec<(&str, Vec<Match>, &str, Verdict, Vec<u32>)> = vec![
        (
            "tcp dport match",
            dport22(),
            "tcp A->B syn 40000->22",
            Accept,
            vec![0],
        ),
        (
            "tcp dport miss",
            dport22(),
            "tcp C->A ack 80->40000",
            Drop,
            vec![1],
        ),
        (
            "tcp frag off 1 hotdrops",
            dport22(),
            "tcp fragment off 1",
            Drop,
            vec![],
        ),
        (
            "tcp frag off 2 no match",
            dport22(),
            "tcp fragment off 2",
            Drop,
            vec![1],
        ),
        (
            "tcp truncated hotdrops",
            dport22(),
            "tcp truncated 12",
            Drop,
            vec![],
        ),
        (
            "tcp bare header hotdrops",
            dport22(),
            "bare ip header proto 6",
            Drop,
            vec![],
        ),
        (
            "tcp ip options shift header",
            dport22(),
            "tcp ip options",
            Accept,
            vec![0],
        ),
        (
            "udp truncated hotdrops",
            udp53(),
            "udp truncated 6",
            Drop,
            vec![],
        ),
        (
            "udp first fragment matches",
            udp53(),
            "udp first fragment (MF)",
            Accept,
            vec![0],
        ),
        (
            "udp non-first fragment no match",
            udp53(),
            "udp fragment off 1",
            Drop,
            vec![1],
        ),
        ("udp ip options", udp53(), "udp ip options", Accept, vec![0]),
        (
            "-f non-first",
            vec![Match::Fragment { invert: false }],
            "udp fragment off 185",
            Accept,
            vec![0],
        ),
        (
            "-f first fragment",
            vec![Match::Fragment { invert: false }],
            "udp first fragment (MF)",
            Drop,
            vec![1],
        ),
        (
            "address test first: no hotdrop",
            vec![
                src(C, 32, false),
                proto(TCP, false),
                Match::Tcp(tcpm(PortRange::ANY, PortRange::one(22))),
            ],
            "tcp truncated 12",
            Drop,
            vec![1],
        ),
        (
            "tcp-option mss present",
            vec![
                proto(TCP, false),
                Match::Tcp(TcpMatch {
                    option: 2,
                    ..tcpm(PortRange::ANY, PortRange::ANY)
                }),
            ],
            "tcp syn mss",
            Accept,
            vec![0],
        ),
        (
            "tcp-option mss absent",
            vec![
                proto(TCP, false),
                Match::Tcp(TcpMatch {
                    option: 2,
                    ..tcpm(PortRange::ANY, PortRange::ANY)
                }),
            ],
            "tcp ack timestamp",
            Drop,
            vec![1],
        ),
        (
            "tcp-option doff<5 hotdrops",
            vec![
                proto(TCP, false),
                Match::Tcp(TcpMatch {
                    option: 2,
                    ..tcpm(PortRange::ANY, PortRange::ANY)
                }),
            ],
            "tcp doff 4",
            Drop,
            vec![],
        ),
        (
            "tcp-option unreadable hotdrops",
            vec![
                proto(TCP, false),
                Match::Tcp(TcpMatch {
                    option: 8,
                    ..tcpm(PortRange::ANY, PortRange::ANY)
                }),
            ],
            "tcp options cut",
            Drop,
            vec![],
        ),
        (
            "! tcp-option without options",
            vec![
                proto(TCP, false),
                Match::Tcp(TcpMatch {
                    option: 2,
                    inv_option: true,
                    ..tcpm(PortRange::ANY, PortRange::ANY)
                }),
            ],
            "tcp A->B syn 40000->22",
            Accept,
            vec![0],
        ),
        (
            "icmp type/code",
            vec![proto(ICMP, false), icmpm(3, 3, 3, false)],
            "icmp unreach port",
            Accept,
            vec![0],
        ),
        (
            "icmp code outside",
            vec![proto(ICMP, false), icmpm(3, 3, 3, false)],
            "icmp unreach frag",
            Drop,
            vec![1],
        ),
        (
            "icmp truncated hotdrops",
            vec![proto(ICMP, false), icmpm(0xff, 0, 0xff, false)],
            "icmp truncated 4",
            Drop,
            vec![],
        ),
        (
            "icmp fragment no match",
            vec![proto(ICMP, false), icmpm(0xff, 0, 0xff, false)],
            "icmp fragment off 3",
            Drop,
            vec![1],
        ),
        (
            "multiport hotdrop under 4 bytes",
            vec![multiport(MultiportMode::Destination, &[(53, 53)], false)],
            "udp truncated 3",
            Drop,
            vec![],
        ),
        (
            "multiport 4 bytes are enough",
            vec![multiport(MultiportMode::Destination, &[(53, 53)], false)],
            "udp truncated 6",
            Accept,
            vec![0],
        ),
        (
            "-p 0 matches all",
            vec![proto(0, true)],
            "gre",
            Accept,
            vec![0],
        ),
        (
            "tcpmss finds the mss after other options",
            vec![proto(TCP, false), tcpmss(536, 536, 0)],
            "tcp syn nop sackperm ts mss 536",
            Accept,
            vec![0],
        ),
        (
            "tcpmss outside the range",
            vec![proto(TCP, false), tcpmss(537, 1460, 0)],
            "tcp syn nop sackperm ts mss 536",
            Drop,
            vec![1],
        ),
        (
            "! tcpmss outside the range",
            vec![proto(TCP, false), tcpmss(537, 1460, 1)],
            "tcp syn nop sackperm ts mss 536",
            Accept,
            vec![0],
        ),
        (
            "tcpmss skips a kind 2 of length 3",
            vec![proto(TCP, false), tcpmss(1400, 1400, 0)],
            "tcp mss length 3 then mss 1400",
            Accept,
            vec![0],
        ),
        (
            "tcpmss: a zero length byte steps one byte",
            vec![proto(TCP, false), tcpmss(1460, 1460, 0)],
            "tcp zero length option before mss",
            Accept,
            vec![0],
        ),
        (
            "tcpmss: no mss with 3 bytes left",
            vec![proto(TCP, false), tcpmss(0, 65535, 0)],
            "tcp mss 3 bytes before the end",
            Drop,
            vec![1],
        ),
        (
            "! tcpmss without options holds",
            vec![proto(TCP, false), tcpmss(0, 65535, 1)],
            "tcp A->B syn 40000->22",
            Accept,
            vec![0],
        ),
        (
            "tcpmss without options fails",
            vec![proto(TCP, false), tcpmss(0, 65535, 0)],
            "tcp A->B syn 40000->22",
            Drop,
            vec![1],
        ),
        (
            "tcpmss doff<5 hotdrops",
            vec![proto(TCP, false), tcpmss(0, 65535, 1)],
            "tcp doff 4",
            Drop,
            vec![],
        ),
        (
            "tcpmss options cut hotdrops",
            vec![proto(TCP, false), tcpmss(0, 65535, 1)],
            "tcp options cut",
            Drop,
            vec![],
        ),
        (
            "tcpmss short header hotdrops",
            vec![proto(TCP, false), tcpmss(0, 65535, 1)],
            "tcp truncated 12",
            Drop,
            vec![],
        ),
        (
            "tcpmss reads a non-first fragment's payload",
            vec![proto(TCP, false), tcpmss(1460, 1460, 0)],
            "tcp fragment off 3 with mss 1460",
            Accept,
            vec![0],
        ),
        (
            "tcpmss hotdrops a short non-first fragment",
            vec![proto(TCP, false), tcpmss(1460, 1460, 0)],
            "tcp fragment off 3 short",
            Drop,
            vec![],
        ),
        (
            "tcpmss after the fix: a fragment fails at once",
            vec![proto(TCP, false), tcpmss_frag(1460, 1460, 1)],
            "tcp fragment off 3 short",
            Drop,
            vec![1],
        ),
        (
            "tcpmss invert byte 2 holds without options",
            vec![proto(TCP, false), tcpmss(600, 700, 2)],
            "tcp A->B syn 40000->22",
            Accept,
            vec![0],
        ),
    ];
    for (what, matches, pname, v, counted) in table {
        let p = single(Hook::LocalOut, matches, Action::Accept, Drop);
        let l = load(&env, &p);
        check(&env, &l, &p, &pkt(pname), Some((v, &counted)), what);
    }
}

fn chains_program(policy: Verdict) -> Program {
    // entry: r0 -s A -j X ; r1 -p udp -g Y ; r2 -j Z(count) ; r3 -p tcp -j RETURN ; r4 (count)
    // X: r10 -d B -j X2 ; r11 -p tcp -j ACCEPT ; r12 RETURN (chain end)
    // X2: r20 --dport 53 -j X3 ; r21 -p udp -j DROP ; r22 RETURN
    // X3: r30 --sport 1000 -j RETURN ; r31 -j ACCEPT ; r32 RETURN
    // Y: r40 --dport 5001 -j DROP ; r41 -g Z ; r42 RETURN
    // Z: r50 -p icmp -j DROP ; r51 (count) ; r52 RETURN
    let ret = |c| rule(vec![], Action::Return, c);
    chained(
        Hook::LocalOut,
        [
            (
                "OUTPUT",
                vec![
                    rule(vec![src(A, 32, false)], Action::Call(ChainId(1)), 0),
                    rule(vec![proto(UDP, false)], Action::Goto(ChainId(4)), 1),
                    rule(vec![], Action::Call(ChainId(5)), 2),
                    rule(vec![proto(TCP, false)], Action::Return, 3),
                    rule(vec![], Action::Continue, 4),
                ],
            ),
            (
                "X",
                vec![
                    rule(vec![dst(B, 32, false)], Action::Call(ChainId(2)), 10),
                    rule(vec![proto(TCP, false)], Action::Accept, 11),
                    ret(12),
                ],
            ),
            (
                "X2",
                vec![
                    rule(
                        vec![
                            proto(UDP, false),
                            udpm(PortRange::ANY, PortRange::one(53), false, false),
                        ],
                        Action::Call(ChainId(3)),
                        20,
                    ),
                    rule(vec![proto(UDP, false)], Action::Drop, 21),
                    ret(22),
                ],
            ),
            (
                "X3",
                vec![
                    rule(
                        vec![
                            proto(UDP, false),
                            udpm(PortRange::one(1000), PortRange::ANY, false, false),
                        ],
                        Action::Return,
                        30,
                    ),
                    rule(vec![], Action::Accept, 31),
                    ret(32),
                ],
            ),
            (
                "Y",
                vec![
                    rule(
                        vec![udpm(PortRange::ANY, PortRange::one(5001), false, false)],
                        Action::Drop,
                        40,
                    ),
                    rule(vec![], Action::Goto(ChainId(5)), 41),
                    ret(42),
                ],
            ),
            (
                "Z",
                vec![
                    rule(vec![proto(ICMP, false)], Action::Drop, 50),
                    rule(vec![], Action::Continue, 51),
                    ret(52),
                ],
            ),
        ],
        Policy {
            verdict: policy,
            counter: 60,
        },
    )
}

/// Jump / goto / RETURN nested three deep, chain-end RETURNs, both policies.
#[test]
fn jumps_gotos_returns() {
    let Some(env) = env() else { return };
    use Verdict::*;
    for policy in [Accept, Drop] {
        let p = chains_program(policy);
        let l = load(&env, &p);
        let table: Vec<(Vec<u8>, Verdict, Vec<u32>)> = vec![
            // A->B udp 1000->53: X, X2, X3 RETURN by sport, back in X2: r21 drop
            (udp_pkt(A, B, 1000, 53), Drop, vec![0, 10, 20, 30, 21]),
            // A->B udp 1001->53: X3 r31 accept
            (udp_pkt(A, B, 1001, 53), Accept, vec![0, 10, 20, 31]),
            // A->B tcp: X, X2 (no udp) end RETURN 22, back in X: r11 accept
            (tcp_pkt(A, B, 1, 2, 0x10), Accept, vec![0, 10, 22, 11]),
            // A->C udp 1->5001: X (no -d B), X end 12, r1 goto Y, r40 drop
            (udp_pkt(A, C, 1, 5001), Drop, vec![0, 12, 1, 40]),
            // C->B udp 1->2: r1 goto Y, r41 goto Z, r51, Z end RETURN -> base chain empty stack -> policy
            (udp_pkt(C, B, 1, 2), policy, vec![1, 41, 51, 52, 60]),
            // C->B icmp: r2 -j Z: r50 drop
            (ip(ICMP, C, B, 0, &[], &icmp_hdr(8, 0)), Drop, vec![2, 50]),
            // C->B tcp: r2 Z (51, 52) back, r3 RETURN -> policy
            (tcp_pkt(C, B, 1, 2, 0x10), policy, vec![2, 51, 52, 3, 60]),
            // C->B gre: Z, back, r4 count, fall off -> policy
            (
                ip(47, C, B, 0, &[], &[0; 8]),
                policy,
                vec![2, 51, 52, 4, 60],
            ),
        ];
        for (i, (pkt, v, counted)) in table.into_iter().enumerate() {
            check(
                &env,
                &l,
                &p,
                &pkt,
                Some((v, &counted)),
                &format!("chains case {i} policy {policy:?}"),
            );
        }
        // and the whole corpus against the reference
        for (n, pkt) in corpus() {
            check(&env, &l, &p, &pkt, None, n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rule runs (consecutive rules differing in one exact key, compiled to one hash lookup)

const S: [[u8; 4]; 5] = [
    [10, 9, 0, 1],
    [10, 9, 0, 2],
    [10, 9, 0, 3],
    [10, 9, 0, 4],
    [10, 9, 0, 5],
];

/// Entry: an address run (with a duplicate key) before a hotdrop barrier, a port run calling
/// a chain, an ordinary rule, a dst run with goto; chain 1: a RETURN run then ordinary rules;
/// chain 2: a sport run. Slot numbers are in the comments of `rule_runs_table`.
fn runs_program() -> Program {
    let r = |matches: Vec<Match>, action: Action, counter: u32| rule(matches, action, counter);
    let udp53 = udpm(PortRange::ANY, PortRange::one(53), false, false);
    let mut e: Vec<Rule> = [S[0], S[1], S[2], S[1], S[3], S[4]]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            r(
                vec![src(*a, 32, false), proto(UDP, false), udp53],
                Action::Drop,
                i as u32,
            )
        })
        .collect();
    for (i, p) in [22u16, 80, 1000, 5001, 7].iter().enumerate() {
        e.push(r(
            vec![
                proto(TCP, false),
                Match::Tcp(tcpm(PortRange::ANY, PortRange::one(*p))),
            ],
            Action::Call(ChainId(1)),
            6 + i as u32,
        ));
    }
    e.push(r(vec![proto(TCP, false)], Action::Accept, 11));
    for (i, a) in [A, B, C, [10, 0, 0, 3]].iter().enumerate() {
        e.push(r(
            vec![dst(*a, 32, false)],
            Action::Goto(ChainId(2)),
            12 + i as u32,
        ));
    }
    let mut c1: Vec<Rule> = S[..4]
        .iter()
        .enumerate()
        .map(|(i, a)| r(vec![src(*a, 32, false)], Action::Return, 20 + i as u32))
        .collect();
    c1.push(r(
        vec![Match::Tcp(tcpm(PortRange::ANY, PortRange::one(80)))],
        Action::Drop,
        24,
    ));
    c1.push(r(vec![], Action::Return, 25));
    let mut c2: Vec<Rule> = [1u16, 2, 53, 1000]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            r(
                vec![udpm(PortRange::one(*p), PortRange::ANY, false, false)],
                Action::Accept,
                30 + i as u32,
            )
        })
        .collect();
    c2.push(r(vec![], Action::Return, 34));
    chained(
        Hook::LocalOut,
        [("e", e), ("c1", c1), ("c2", c2)],
        Policy {
            verdict: Verdict::Accept,
            counter: 40,
        },
    )
}

#[test]
fn rule_runs_table() {
    let Some(env) = env() else { return };
    use Verdict::*;
    let p = runs_program();
    let udp = |s: [u8; 4], d: [u8; 4], sp: u16, dp: u16| udp_pkt(s, d, sp, dp);
    let tcp = |s: [u8; 4], d: [u8; 4], dp: u16| tcp_pkt(s, d, 1, dp, 0x10);
    let table: Vec<(&str, Vec<u8>, Verdict, Vec<u32>)> = vec![
        (
            "first rule of the address run",
            udp(S[0], B, 9, 53),
            Drop,
            vec![0],
        ),
        (
            "duplicate key: the first rule counts",
            udp(S[1], B, 9, 53),
            Drop,
            vec![1],
        ),
        ("middle rule", udp(S[2], B, 9, 53), Drop, vec![2]),
        ("last rule", udp(S[4], B, 9, 53), Drop, vec![5]),
        // key hit, port fails: continue after the run; dst B: goto c2, sport 2 accept
        ("hit, rest fails", udp(S[3], B, 2, 54), Accept, vec![13, 31]),
        // miss: dst run, c2 sport 1000
        (
            "miss",
            udp([10, 9, 9, 9], A, 1000, 53),
            Accept,
            vec![12, 33],
        ),
        // truncated udp header: the hit rule's udp match hotdrops
        (
            "hit, truncated udp hotdrops",
            ip(UDP, S[1], B, 0, &[], &[0, 9, 0]),
            Drop,
            vec![],
        ),
        // truncated udp, key miss: no rule of the run reaches its udp match; c2 on dst A:
        // its udp match hotdrops
        (
            "miss, truncated udp",
            ip(UDP, [10, 9, 9, 9], A, 0, &[], &[0, 9, 0]),
            Drop,
            vec![12],
        ),
        // non-first fragment: udp never matches, no hotdrop; dst C -> c2 -> policy
        (
            "fragment",
            ip(UDP, S[0], C, 0x0001, &[], &udp_hdr(9, 53)),
            Accept,
            vec![14, 34, 40],
        ),
        // port run (Call c1): c1's RETURN run on the source, back after the run: r11 accept
        (
            "port run call, return run",
            tcp(S[2], A, 80),
            Accept,
            vec![7, 22, 11],
        ),
        (
            "port run call, drop in c1",
            tcp([10, 9, 9, 9], A, 1000),
            Accept,
            vec![8, 25, 11],
        ),
        (
            "port run call, c1 drop",
            tcp([10, 9, 9, 9], A, 80),
            Drop,
            vec![7, 24],
        ),
        ("port run miss", tcp(S[0], A, 9), Accept, vec![11]),
        // tcp truncated: the tcp match of the run's first rule hotdrops
        (
            "port run, truncated tcp",
            ip(TCP, S[0], A, 0, &[], &[0, 1, 0, 80, 0, 0]),
            Drop,
            vec![],
        ),
        // tcp fragment at offset 1: tcp hotdrops
        (
            "port run, tcp fragment offset 1",
            ip(TCP, S[0], A, 0x0001, &[], &[0; 20]),
            Drop,
            vec![],
        ),
        // other fragment: no match, no hotdrop, r11 accepts
        (
            "port run, tcp fragment offset 2",
            ip(TCP, S[0], A, 0x0002, &[], &[0; 20]),
            Accept,
            vec![11],
        ),
    ];
    check_table_in_every_mode(
        &env,
        &p,
        (
            5,
            "runs: entry src, entry dport, entry dst, c1 src, c2 sport",
        ),
        &table,
    );
}

/// In every packet access mode: loads `p`, asserts that it uses `maps.0` maps (`maps.1` says
/// which), that each case of `table` (name, packet, verdict, counters) gets its hand-written
/// outcome, and that the corpus agrees with the reference.
fn check_table_in_every_mode(
    env: &Env,
    p: &Program,
    maps: (usize, &str),
    table: &[(&str, Vec<u8>, Verdict, Vec<u32>)],
) {
    for (_, opts) in env.access_variants() {
        let l = load_with(env, p, opts);
        assert_eq!(l.maps, maps.0, "{}", maps.1);
        for (what, pkt, v, counted) in table {
            check(env, &l, p, pkt, Some((*v, counted)), what);
        }
        for (n, pkt) in corpus() {
            check(env, &l, p, &pkt, None, n);
        }
    }
}

/// Runs keyed by several tests and by masked addresses: an address and a port changing from
/// rule to rule (two lookups around the udp header's hotdrop guard), then /24 networks.
#[test]
fn multi_key_runs_table() {
    let Some(env) = env() else { return };
    use Verdict::*;
    let rule = |matches: Vec<Match>, action: Action, counter: u32| Rule {
        matches,
        action,
        counter,
    };
    let udp_to = |p: u16| udpm(PortRange::ANY, PortRange::one(p), false, false);
    // 0..6: -s S -p udp --dport P -j DROP, (S[0], 53) twice
    let keys = [
        (S[0], 53),
        (S[1], 54),
        (S[1], 55),
        (S[2], 53),
        (S[0], 53),
        (S[3], 56),
    ];
    let mut rules: Vec<Rule> = keys
        .iter()
        .zip(0..)
        .map(|(&(a, p), i)| {
            rule(
                vec![src(a, 32, false), proto(UDP, false), udp_to(p)],
                Action::Drop,
                i,
            )
        })
        .collect();
    // 6..10: -d NET/24 -j ACCEPT
    for (net, i) in [
        [10, 7, 0, 0],
        [10, 0, 0, 0],
        [10, 7, 1, 0],
        [192, 168, 0, 0],
    ]
    .iter()
    .zip(6..)
    {
        rules.push(rule(vec![dst(*net, 24, false)], Action::Accept, i));
    }
    let p = Program::single(
        Hook::LocalOut,
        rules,
        Policy {
            verdict: Drop,
            counter: 10,
        },
    );
    let udp = |s: [u8; 4], d: [u8; 4], dp: u16| udp_pkt(s, d, 9, dp);
    let short_udp = |s: [u8; 4], d: [u8; 4]| ip(UDP, s, d, 0, &[], &[0, 9, 0]);
    let table: Vec<(&str, Vec<u8>, Verdict, Vec<u32>)> = vec![
        ("both keys of a rule", udp(S[1], B, 55), Drop, vec![2]),
        (
            "duplicate keys: the first rule counts",
            udp(S[0], B, 53),
            Drop,
            vec![0],
        ),
        (
            "the address of a rule, the port of another",
            udp(S[1], B, 53),
            Accept,
            vec![7],
        ),
        ("neither key", udp([10, 9, 9, 9], B, 53), Accept, vec![7]),
        (
            "a network of the masked run",
            udp(S[3], [10, 7, 1, 200], 1),
            Accept,
            vec![8],
        ),
        ("no network", udp(S[3], [10, 7, 2, 1], 1), Drop, vec![10]),
        // a rule with this source reaches its udp match, which hotdrops
        (
            "address in the run, truncated udp",
            short_udp(S[2], B),
            Drop,
            vec![],
        ),
        // no rule of the run reaches a udp match
        (
            "address not in the run, truncated udp",
            short_udp([10, 9, 9, 9], B),
            Accept,
            vec![7],
        ),
        // udp never matches a non-first fragment, and does not hotdrop
        (
            "fragment",
            ip(UDP, S[0], C, 0x0001, &[], &udp_hdr(9, 53)),
            Drop,
            vec![10],
        ),
    ];
    check_table_in_every_mode(
        &env,
        &p,
        (3, "maps: the sources, sources and ports, the networks"),
        &table,
    );
}

/// More runs than a program may use maps: the longest `MAX_RUN_MAPS` become lookups, the rest stay
/// ordinary rules, and the program loads and agrees with the reference.
#[test]
fn many_runs_load() {
    let Some(env) = env() else { return };
    let mut rules = Vec::new();
    for r in 0..100u32 {
        let action = if r % 2 == 0 {
            Action::Drop
        } else {
            Action::Accept
        };
        rules.extend((0..4).map(|i| {
            let n = r * 4 + i;
            rule(
                vec![src([10, 1, (n >> 8) as u8, n as u8], 32, false)],
                action,
                n,
            )
        }));
    }
    // a LOG rule: the program also uses the event ring, its loss counts and the prefix map,
    // which must fit beside the rule-run maps
    rules.push(rule(
        vec![proto(TCP, false)],
        Action::Log(Log {
            level: 4,
            flags: 0,
            prefix: [0; 30],
        }),
        401,
    ));
    let p = Program::single(
        Hook::LocalOut,
        rules,
        Policy {
            verdict: Verdict::Drop,
            counter: 400,
        },
    );
    // hash runs only (classified, these 400 rules would be one run of trees)
    let opts = Options {
        classify: false,
        ..Options::default()
    };
    let l = load_with(&env, &p, opts);
    // the rule-run maps and the prefix map
    assert_eq!(l.maps, emitter::codegen::MAX_RUN_MAPS + 1);
    for n in [0u32, 5, 131, 250, 251, 398, 399, 400, 1000] {
        let pkt = udp_pkt([10, 1, (n >> 8) as u8, n as u8], B, 1, 2);
        check(&env, &l, &p, &pkt, None, &format!("source 10.1.x.y #{n}"));
    }
}

// ---------------------------------------------------------------------------------------------
// random rulesets x random packets against the reference evaluator

fn arb_addr() -> impl Strategy<Value = [u8; 4]> {
    prop_oneof![
        Just(A),
        Just(B),
        Just(C),
        Just([10, 0, 0, 3]),
        any::<[u8; 4]>()
    ]
}

/// A port: the corpus' own (22, 53, 80, 1000, 5001) or any.
fn arb_port() -> impl Strategy<Value = u16> + Clone {
    prop_oneof![
        Just(22u16),
        Just(53),
        Just(80),
        Just(1000),
        Just(5001),
        any::<u16>()
    ]
}

fn arb_match() -> impl Strategy<Value = Match> {
    let port = arb_port();
    let range = (port.clone(), port.clone()).prop_map(|(a, b)| PortRange {
        lo: a.min(b),
        hi: a.max(b),
    });
    prop_oneof![
        (arb_addr(), 0u32..=32, any::<bool>()).prop_map(|(a, b, i)| src(a, b, i)),
        (arb_addr(), 0u32..=32, any::<bool>()).prop_map(|(a, b, i)| dst(a, b, i)),
        (
            prop_oneof![Just(0u8), Just(TCP), Just(UDP), Just(ICMP), Just(47)],
            any::<bool>()
        )
            .prop_map(|(p, i)| proto(p, i)),
        any::<bool>().prop_map(|invert| Match::Fragment { invert }),
        (range.clone(), range.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(s, d, a, b)| udpm(s, d, a, b)),
        (
            range.clone(),
            range.clone(),
            any::<[bool; 4]>(),
            any::<u8>(),
            any::<u8>(),
            prop_oneof![Just(0u8), Just(2), Just(3), Just(8)]
        )
            .prop_map(|(s, d, inv, fm, fc, option)| Match::Tcp(TcpMatch {
                sport: s,
                dport: d,
                flags_mask: fm,
                flags_cmp: fc & fm,
                option,
                inv_sport: inv[0],
                inv_dport: inv[1],
                inv_flags: inv[2],
                inv_option: inv[3],
            })),
        (
            prop_oneof![Just(0xffu8), Just(3), Just(8)],
            any::<u8>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(t, a, b, invert)| icmpm(t, a.min(b) % 8, a.max(b) % 8, invert)),
        (
            prop_oneof![
                Just(MultiportMode::Source),
                Just(MultiportMode::Destination),
                Just(MultiportMode::Either)
            ],
            proptest::collection::vec(range, 1..5),
            any::<bool>()
        )
            .prop_map(|(m, items, inv)| multiport(
                m,
                &items.iter().map(|r| (r.lo, r.hi)).collect::<Vec<_>>(),
                inv
            )),
        (arb_addr(), arb_addr(), any::<bool>()).prop_map(|(a, b, i)| {
            let (x, y) = (
                u32::from_be_bytes(a).min(u32::from_be_bytes(b)),
                u32::from_be_bytes(a).max(u32::from_be_bytes(b)),
            );
            Match::IpRange(IpRangeMatch {
                src: Some((Ipv4Addr::from(x), Ipv4Addr::from(y))),
                dst: None,
                inv_src: i,
                inv_dst: false,
            })
        }),
        (
            prop_oneof![Just(0u16), Just(536), Just(1400), Just(1460), any::<u16>()],
            prop_oneof![Just(0u16), Just(536), Just(1460), Just(65535), any::<u16>()],
            prop_oneof![3 => Just(0u8), 3 => Just(1u8), 1 => any::<u8>()],
            any::<bool>()
        )
            .prop_map(
                |(min, max, invert, frag_nomatch)| Match::TcpMss(TcpMssMatch {
                    min,
                    max,
                    invert,
                    frag_nomatch
                })
            ),
        // a test run has no connection: these decide on INVALID alone
        (0u32..0x200).prop_map(Match::State),
        (0u16..0x200, any::<bool>(), any::<bool>()).prop_map(|(mask, inv, status)| {
            Match::Conntrack(CtMatch {
                state: (!status).then_some((mask, inv)),
                status: status.then_some((u32::from(mask), inv)),
                ..ct()
            })
        }),
    ]
}

fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
    let port = arb_port();
    let opts = prop_oneof![
        Just(vec![]),
        Just(vec![2u8, 4, 5, 0xb4]),
        Just(vec![1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
        Just(vec![3u8, 3, 7]),
        Just(vec![1u8, 4, 2, 2, 4, 0x02, 0x18]),
        Just(vec![2u8, 3, 0x05, 2, 4, 0x05, 0x78, 1]),
        Just(vec![1u8, 1, 1, 1, 1, 2, 4, 5]),
        Just(vec![9u8, 0, 2, 4, 0x05, 0xb4])
    ];
    (
        arb_addr(),
        arb_addr(),
        prop_oneof![Just(TCP), Just(UDP), Just(ICMP), Just(47)],
        prop_oneof![4 => Just(0u16), 1 => Just(0x2000u16), 1 => Just(1u16), 1 => 2u16..100],
        prop_oneof![4 => Just(0usize), 1 => Just(4usize)],
        port.clone(),
        port,
        any::<u8>(),
        opts,
        prop_oneof![6 => Just(None), 1 => (0usize..24).prop_map(Some)],
    )
        .prop_map(|(s, d, pr, frag, ipo, sp, dp, fl, o, cut)| {
            let mut l4 = match pr {
                TCP => tcp_hdr(sp, dp, fl, &o),
                UDP => udp_hdr(sp, dp),
                ICMP => icmp_hdr((sp % 16) as u8, (dp % 8) as u8),
                _ => vec![1, 2, 3, 4, 5, 6, 7, 8],
            };
            if let Some(c) = cut {
                l4.truncate(c);
            }
            ip(pr, s, d, frag, &vec![1u8; ipo], &l4)
        })
}

/// How a generated rule is expanded: 0 = once; 1 = a run on a src or dst /32 key inserted at
/// `pos`; 2 = a run on a udp or tcp dport key appended; 3 = a run on both, an address key
/// inserted and a port key appended; 4 = a run on a src or dst /24 key inserted at `pos`;
/// 5 = `RUN_WITH_CLASSES` rules on a src or dst key under three masks; 6 = as many on an
/// address under two masks and a udp dport; `keys` are the run's keys (duplicates and the
/// corpus' addresses and ports included on purpose).
type RunSpec = (u8, usize, bool, Vec<([u8; 4], u16)>);

/// Rules of a generated run with classes: enough for three classes of one lookup, or two of
/// two (`RULES_PER_CLASS_MAP` rules per map).
const RUN_WITH_CLASSES: usize = 4 * emitter::codegen::RULES_PER_CLASS_MAP + 3;

fn arb_run() -> impl Strategy<Value = RunSpec> {
    let port = prop_oneof![Just(22u16), Just(53), Just(80), Just(1000), Just(5001)];
    (
        prop_oneof![
            4 => Just(0u8),
            1 => Just(1u8),
            1 => Just(2u8),
            1 => Just(3u8),
            1 => Just(4u8),
            1 => Just(5u8),
            1 => Just(6u8)
        ],
        0usize..4,
        any::<bool>(),
        proptest::collection::vec((arb_addr(), port), 4..7),
    )
}

/// A single-port udp (`udp`) or tcp destination-port match.
fn port_key(udp: bool, port: u16) -> Match {
    if udp {
        udpm(PortRange::ANY, PortRange::one(port), false, false)
    } else {
        Match::Tcp(tcpm(PortRange::ANY, PortRange::one(port)))
    }
}

/// The rules of one generated rule after `arb_run`'s expansion.
fn expand(matches: Vec<Match>, run: RunSpec) -> Vec<Vec<Match>> {
    let (kind, pos, which, keys) = run;
    match kind {
        1 => keys
            .iter()
            .map(|(a, _)| {
                let mut m = matches.clone();
                let k = if which {
                    src(*a, 32, false)
                } else {
                    dst(*a, 32, false)
                };
                m.insert(pos.min(m.len()), k);
                m
            })
            .collect(),
        2 => keys
            .iter()
            .map(|(_, p)| {
                let mut m = matches.clone();
                m.push(port_key(which, *p));
                m
            })
            .collect(),
        3 => keys
            .iter()
            .map(|(a, p)| {
                let mut m = matches.clone();
                m.insert(pos.min(m.len()), src(*a, 32, false));
                m.push(port_key(which, *p));
                m
            })
            .collect(),
        5 | 6 => (0..RUN_WITH_CLASSES)
            .map(|i| {
                // the keys first, then variations of them; masks /32, /31 and /24 in turn
                // (kind 5: three classes, one lookup each) or /32 and /31 with a port (kind
                // 6: two classes, two lookups each)
                let (a, p) = keys[i % keys.len()];
                let round = (i / keys.len()) as u8;
                let bits = if kind == 5 {
                    [32, 31, 24][(i + usize::from(round)) % 3]
                } else {
                    [32, 31][(i + usize::from(round)) % 2]
                };
                let host = u32::from_be_bytes([a[0], a[1], a[2], a[3] ^ (round << 2)]);
                let net = (host & (u32::MAX << (32 - bits))).to_be_bytes();
                let mut m = matches.clone();
                let k = if which {
                    src(net, bits, false)
                } else {
                    dst(net, bits, false)
                };
                m.insert(pos.min(m.len()), k);
                if kind == 6 {
                    m.push(port_key(true, p));
                }
                m
            })
            .collect(),
        4 => keys
            .iter()
            .map(|(a, _)| {
                let mut m = matches.clone();
                let net = [a[0], a[1], a[2], 0];
                let k = if which {
                    src(net, 24, false)
                } else {
                    dst(net, 24, false)
                };
                m.insert(pos.min(m.len()), k);
                m
            })
            .collect(),
        _ => vec![matches],
    }
}

fn arb_program() -> impl Strategy<Value = Program> {
    let arb_rule = || {
        (
            proptest::collection::vec(arb_match(), 0..4),
            0u8..10,
            arb_run(),
        )
    };
    (
        proptest::collection::vec(arb_rule(), 1..8),
        proptest::collection::vec(arb_rule(), 0..5),
        any::<bool>(),
        prop_oneof![
            Just(Hook::LocalOut),
            Just(Hook::LocalIn),
            Just(Hook::Forward)
        ],
    )
        .prop_map(|(entry, user, pol, hook)| {
            let mut slot = 0u32;
            let mut mk = |rules: Vec<(Vec<Match>, u8, RunSpec)>, may_jump: bool| -> Vec<Rule> {
                rules
                    .into_iter()
                    .flat_map(|(matches, a, run)| {
                        // a run with classes only forms on rules that end evaluation
                        let a = if matches!(run.0, 5 | 6) && !matches!(a, 0..=2 | 4) {
                            a % 3
                        } else {
                            a
                        };
                        expand(matches, run).into_iter().map(move |m| (m, a))
                    })
                    .map(|(matches, a)| {
                        slot += 1;
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
                            6 => Action::Reject(Reject { with: 3 }),
                            _ => Action::Continue,
                        };
                        rule(matches, action, slot - 1)
                    })
                    .collect()
            };
            let e = mk(entry, true);
            let u = mk(user, false);
            chained(
                hook,
                [("e", e), ("u", u)],
                Policy {
                    verdict: if pol { Verdict::Accept } else { Verdict::Drop },
                    counter: slot,
                },
            )
        })
}

#[test]
fn random_rulesets_match_reference() {
    let Some(env) = env() else { return };
    let with_runs = std::cell::Cell::new(0usize);
    let with_classes = std::cell::Cell::new(0usize);
    let mut runner = proptest::test_runner::TestRunner::new(common::seeded_runs(200));
    runner
        .run(
            &(
                arb_program(),
                proptest::collection::vec(arb_packet(), 12),
                0u8..6,
            ),
            |(p, pkts, combined)| {
                // the three ways a multi-test rule can be compiled, and every packet access
                // this kernel verifies
                let variants = env.access_variants();
                let opts = match combined {
                    0..=2 => modes()[usize::from(combined)].1,
                    k => variants[usize::from(k - 3) % variants.len()].1,
                };
                let l = load_with(&env, &p, opts);
                if l.maps > 0 {
                    with_runs.set(with_runs.get() + 1);
                }
                // a run with classes: its maps' values hold the rule's index beside its slot
                let out = bpfilter::xlate::compile(&p, &env.layout, opts).expect("compile");
                if out.maps.iter().any(|m| m.value_size == 8) {
                    with_classes.set(with_classes.get() + 1);
                }
                for pkt in &pkts {
                    agrees(&env, &l, &p, pkt, &format!("combined {combined}"))?;
                }
                Ok(())
            },
        )
        .unwrap();
    // the generator's runs must really reach the lookup code
    assert!(
        with_runs.get() >= 20,
        "only {} of 200 random programs had rule runs",
        with_runs.get()
    );
    assert!(
        with_classes.get() >= 10,
        "only {} of 200 random programs had rule runs with classes",
        with_classes.get()
    );
}

// ---------------------------------------------------------------------------------------------
// classified runs: long stretches of rules of any shape, through trees of maps

/// One classifiable rule's matches: addresses under prefixes (inverted or not) near the
/// corpus' addresses, a protocol, tcp or udp port ranges near the corpus' ports (inverted or
/// not). No interfaces: a test run's devices are NULL or `lo` (KERNEL-FACTS), so the
/// classifier's interface classes are checked by its own tests and over veth.
fn arb_classifiable() -> impl Strategy<Value = Vec<Match>> {
    let addr = || {
        (
            prop_oneof![
                Just(A),
                Just(B),
                Just(C),
                Just([10, 0, 0, 3]),
                any::<[u8; 4]>()
            ],
            prop_oneof![Just(32u32), Just(31), Just(24), Just(8), Just(0), 0u32..=32],
            prop_oneof![3 => Just(false), 1 => Just(true)],
        )
    };
    let port = arb_port();
    let range = (port.clone(), port, 0u8..4).prop_map(|(a, b, k)| match k {
        0 => PortRange::one(a),
        1 => PortRange::ANY,
        _ => PortRange {
            lo: a.min(b),
            hi: a.max(b),
        },
    });
    (
        proptest::option::weighted(0.5, addr()),
        proptest::option::weighted(0.3, addr()),
        0u8..6,
        any::<bool>(),
        range.clone(),
        range,
        any::<[bool; 2]>(),
    )
        .prop_map(|(s, d, pr, inv_proto, sp, dp, inv)| {
            let mut m = Vec::new();
            // never-matching tests (`! -s 0/0`, `! --dport 0:65535`) end a classified run:
            // rare, so that runs are long
            // the network address mostly: one with bits outside its mask never matches
            let net = |a: [u8; 4], bits: u32| {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                let n = u32::from_be_bytes(a);
                (if n % 1024 == 0 { n } else { n & mask }).to_be_bytes()
            };
            if let Some((a, bits, i)) = s {
                m.push(src(net(a, bits), bits, i && bits > 0));
            }
            if let Some((a, bits, i)) = d {
                m.push(dst(net(a, bits), bits, i && bits > 0));
            }
            let inv = [
                inv[0] && sp != PortRange::ANY,
                inv[1] && dp != PortRange::ANY,
            ];
            match pr {
                0 | 1 => {
                    m.push(proto(TCP, false));
                    m.push(Match::Tcp(tcpm(sp, dp)));
                    if let Some(Match::Tcp(t)) = m.last_mut() {
                        (t.inv_sport, t.inv_dport) = (inv[0], inv[1]);
                    }
                }
                2 | 3 => {
                    m.push(proto(UDP, false));
                    m.push(udpm(sp, dp, inv[0], inv[1]));
                }
                4 => m.push(proto([TCP, UDP, ICMP][usize::from(sp.lo % 3)], inv_proto)),
                _ => {}
            }
            m
        })
}

/// A chain of `classify::MIN_RULES` (192) or more classifiable rules (a few others among them, so
/// that some stretches stay compiled), actions ACCEPT, DROP, RETURN and a goto.
fn arb_classified_program() -> impl Strategy<Value = Program> {
    (
        proptest::collection::vec((arb_classifiable(), 0u16..1000), 200..500),
        proptest::collection::vec((arb_classifiable(), 0u16..3), 0..4),
        any::<bool>(),
    )
        .prop_map(|(entry, user, pol)| {
            let mut slot = 0u32;
            let mut mk = |rules: Vec<(Vec<Match>, u16)>| -> Vec<Rule> {
                rules
                    .into_iter()
                    .map(|(matches, a)| {
                        slot += 1;
                        let action = match a {
                            0..=449 => Action::Drop,
                            450..=899 => Action::Accept,
                            900..=949 => Action::Return,
                            950..=996 => Action::Goto(ChainId(1)),
                            // not classifiable: a stretch ends
                            997 | 998 => Action::Continue,
                            _ => Action::Call(ChainId(1)),
                        };
                        rule(matches, action, slot - 1)
                    })
                    .collect()
            };
            let e = mk(entry);
            let u = mk(user);
            chained(
                Hook::LocalIn,
                [("e", e), ("u", u)],
                Policy {
                    verdict: if pol { Verdict::Accept } else { Verdict::Drop },
                    counter: slot,
                },
            )
        })
}

#[test]
fn classified_runs_match_reference() {
    let Some(env) = env() else { return };
    let classified = std::cell::Cell::new(0usize);
    let mut runner = proptest::test_runner::TestRunner::new(common::seeded_runs(40));
    runner
        .run(
            &(
                arb_classified_program(),
                proptest::collection::vec(arb_packet(), 24),
            ),
            |(p, pkts)| {
                let opts = Options {
                    classify: std::env::var("NOCLASS").is_err(),
                    ..Options::default()
                };
                let l = load_with(&env, &p, opts);
                let out = bpfilter::xlate::compile(&p, &env.layout, opts).expect("compile");
                if out.maps.iter().any(|m| m.kind == emitter::MapKind::Array) {
                    classified.set(classified.get() + 1);
                }
                for pkt in &pkts {
                    // a short account first: the programs are long
                    let want = reference(&p, pkt);
                    let (ret, d) = l.run(&env, pkt);
                    let got: Vec<u32> = (0..l.slots).filter(|&k| d[k as usize].0 != 0).collect();
                    if ret != verdict_code(want.verdict) || d != deltas(&want, l.slots, pkt.len()) {
                        let rules: Vec<String> = p
                            .chains
                            .values()
                            .flat_map(|c| &c.rules)
                            .filter(|r| {
                                want.counted.contains(&r.counter) || got.contains(&r.counter)
                            })
                            .map(|r| format!("{r:?}"))
                            .collect();
                        return Err(TestCaseError::fail(format!(
                            "reference {:?} counted {:?}; program {ret} counted {got:?}\n\
                             packet {pkt:02x?}\nrules {rules:#?}\nsizes {:?}",
                            want.verdict,
                            want.counted,
                            p.chains.values().map(|c| c.rules.len()).collect::<Vec<_>>()
                        )));
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(
        classified.get() >= 20,
        "only {} of 40 random programs had classified runs",
        classified.get()
    );
}

// ---------------------------------------------------------------------------------------------
// scale: verifier and run-time figures

fn address_chain(n: usize) -> Program {
    drop_list(Hook::LocalOut, n, |i| {
        vec![src([10, 1, (i >> 8) as u8, i as u8], 32, false)]
    })
}

fn port_chain(n: usize) -> Program {
    // the bench's second kind: -s 10.1.x.y -p udp --dport P -j DROP
    drop_list(Hook::LocalOut, n, |i| {
        vec![
            src([10, 1, (i >> 8) as u8, i as u8], 32, false),
            proto(UDP, false),
            udpm(
                PortRange::ANY,
                PortRange::one(10000 + (i % 1000) as u16),
                false,
                false,
            ),
        ]
    })
}

/// The bench's rulesets: `-s 10.1.x.y/32 -p udp -m udp --dport 5001 -j DROP` (`by_port` false)
/// or `-p udp -m udp --dport P -j DROP` with P != 5001 (`by_port` true), then ACCEPT.
fn bench_chain(n: usize, by_port: bool) -> Program {
    drop_list(Hook::LocalOut, n, |i| {
        let mut matches = Vec::new();
        if !by_port {
            matches.push(src([10, 1, (i >> 8) as u8, i as u8], 32, false));
        }
        matches.push(proto(UDP, false));
        let port = if by_port { 10000 + i as u16 } else { 5001 };
        matches.push(udpm(PortRange::ANY, PortRange::one(port), false, false));
        matches
    })
}

#[test]
fn scale_figures() {
    let Some(env) = env() else { return };
    // one user chain jumped to from many rules: static subprograms are verified once per
    // call site
    for (sites, body) in [(100usize, 100usize), (1000, 100)] {
        let mut rules: Vec<Rule> = (0..sites)
            .map(|i| {
                rule(
                    vec![src([10, 2, (i >> 8) as u8, i as u8], 32, true)],
                    if i % 2 == 0 {
                        Action::Call(ChainId(1))
                    } else {
                        Action::Continue
                    },
                    i as u32,
                )
            })
            .collect();
        rules.push(rule(vec![], Action::Accept, sites as u32));
        let body_rules = (0..body)
            .map(|i| {
                rule(
                    vec![src([10, 3, (i >> 8) as u8, i as u8], 32, false)],
                    Action::Drop,
                    (sites + 1 + i) as u32,
                )
            })
            .collect();
        let p = chained(
            Hook::LocalOut,
            [("e", rules), ("u", body_rules)],
            Policy {
                verdict: Verdict::Drop,
                counter: (sites + body + 1) as u32,
            },
        );
        let compiled = compile(&p, &env.layout).unwrap();
        let ctr = Map::create(
            MapType::PercpuArray,
            4,
            16,
            (sites + body + 2) as u32,
            "bpfltr_sites",
        )
        .unwrap();
        use std::os::fd::AsRawFd;
        let fd = ctr.fd().as_raw_fd();
        match BpfProgram::load_netfilter("bpfltr_sites", &compiled.bytes(&|_| fd), 0) {
            Ok((_, stats)) => eprintln!(
                "FIGURES chain called from {} sites, {body} rules: verified {} insns, load {:?}",
                sites / 2,
                stats.verified_insns,
                stats.load_time
            ),
            Err(e) => eprintln!(
                "FIGURES chain called from {} sites, {body} rules: load fails: {e}",
                sites / 2
            ),
        }
    }
    let pkt = udp_pkt([10, 200, 0, 1], [10, 200, 0, 2], 4000, 5001);
    // header reads: each strategy (and the cast fallback), on an empty chain and on
    // 100 port rules
    for n in [0usize, 100] {
        for (how, opts) in env.access_variants() {
            let p = port_chain(n);
            let l = load_with(&env, &p, opts);
            let r = l.prog.test_run(&pkt, None, 200_000).unwrap();
            assert_eq!(r.retval, 1);
            eprintln!(
                "FIGURES header path {how} n={n}: {} ns/packet",
                r.duration_ns
            );
        }
    }
    // the bench's rulesets, as rule runs (one lookup) and, where they fit, as plain rules
    for by_port in [false, true] {
        for n in [1000usize, 10_000, 50_000] {
            for runs in [true, false] {
                if !runs && n > 10_000 {
                    continue;
                }
                let p = bench_chain(n, by_port);
                let l = load_with(
                    &env,
                    &p,
                    Options {
                        runs,
                        ..Options::default()
                    },
                );
                assert_eq!(l.maps, usize::from(runs));
                let (ret, d) = l.run(&env, &pkt);
                assert_eq!(ret, 1);
                assert_eq!(d[n], (1, pkt.len() as u64), "final ACCEPT counted");
                // a packet of the block list: dropped, its rule counted
                let hit = if by_port {
                    udp_pkt(
                        [10, 200, 0, 1],
                        [10, 200, 0, 2],
                        4000,
                        10000 + (n as u16 - 1),
                    )
                } else {
                    let i = n - 1;
                    udp_pkt(
                        [10, 1, (i >> 8) as u8, i as u8],
                        [10, 200, 0, 2],
                        4000,
                        5001,
                    )
                };
                let (ret, d) = l.run(&env, &hit);
                assert_eq!(ret, 0);
                assert_eq!(d[n - 1], (1, hit.len() as u64), "last rule counted");
                let r = l.prog.test_run(&pkt, None, 200_000).unwrap();
                eprintln!(
                    "FIGURES bench {} n={n} runs={runs}: {} insns, verified {} insns, load {:?}, run {} ns/packet",
                    if by_port { "udp dport" } else { "src /32 + dport 5001" },
                    l.insns,
                    l.stats.verified_insns,
                    l.stats.load_time,
                    r.duration_ns
                );
            }
        }
    }
    for (kind, mk) in [
        ("address", address_chain as fn(usize) -> Program),
        ("addr+udp port", port_chain as fn(usize) -> Program),
    ] {
        for n in [100usize, 1000, 10000] {
            let p = mk(n);
            let l = load(&env, &p);
            let (ret, d) = l.run(&env, &pkt);
            assert_eq!(ret, 1);
            assert_eq!(d[n], (1, pkt.len() as u64), "final ACCEPT counted");
            let r = l.prog.test_run(&pkt, None, 200_000).unwrap();
            if !l.stats.log.is_empty() {
                eprintln!(
                    "{}",
                    l.stats
                        .log
                        .lines()
                        .rev()
                        .take(4)
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
            eprintln!(
                "FIGURES {kind} n={n}: {} insns ({:.2}/rule), verified {} insns, load {:?}, jited {} B, run {} ns/packet",
                l.insns,
                l.insns as f64 / n as f64,
                l.stats.verified_insns,
                l.stats.load_time,
                l.stats.jited_bytes,
                r.duration_ns
            );
            assert!(l.stats.verified_insns < 1_000_000);
        }
    }
}

/// Chains nested up to 9 deep (the deepest are inlined: BPF has 8 call frames), jumps and
/// gotos between them, random packets: against the reference evaluator, in every form.
#[test]
fn deep_chains_match_reference() {
    let Some(env) = env() else { return };
    let chain_rules = |c: u32| {
        proptest::collection::vec(
            (
                proptest::collection::vec(arb_match(), 0..3),
                0u8..7,
                (c + 1)..10u32,
                arb_run(),
            ),
            1..4,
        )
    };
    let prog = (
        chain_rules(0),
        chain_rules(1),
        chain_rules(2),
        chain_rules(3),
        chain_rules(4),
        chain_rules(5),
        chain_rules(6),
        chain_rules(7),
        chain_rules(8),
        any::<bool>(),
    )
        .prop_map(|(c0, c1, c2, c3, c4, c5, c6, c7, c8, pol)| {
            let mut chains = Vec::new();
            let mut slot = 0u32;
            for (i, rules) in [c0, c1, c2, c3, c4, c5, c6, c7, c8].into_iter().enumerate() {
                let mut v: Vec<Rule> = rules
                    .into_iter()
                    .flat_map(|(matches, a, to, run)| {
                        // runs with classes are long: nine chains of them, inlined, would
                        // verify for minutes (random_rulesets_match_reference has them)
                        let run = if run.0 >= 5 {
                            (0, run.1, run.2, run.3)
                        } else {
                            run
                        };
                        expand(matches, run).into_iter().map(move |m| (m, a, to))
                    })
                    .map(|(matches, a, to)| {
                        slot += 1;
                        // always one path to the next chain, so the graph is 9 deep
                        let action = match a {
                            0 => Action::Accept,
                            1 => Action::Drop,
                            2 => Action::Return,
                            3 | 4 => Action::Call(ChainId(to.min(9))),
                            5 => Action::Goto(ChainId(to.min(9))),
                            _ => Action::Continue,
                        };
                        rule(matches, action, slot - 1)
                    })
                    .collect();
                slot += 1;
                v.insert(
                    0,
                    rule(
                        vec![proto(47, false)],
                        Action::Call(ChainId(i as u32 + 1)),
                        slot - 1,
                    ),
                );
                chains.push((format!("c{i}"), v));
            }
            slot += 1;
            chains.push((
                "c9".to_owned(),
                vec![rule(vec![], Action::Return, slot - 1)],
            ));
            chained(
                Hook::LocalOut,
                chains,
                Policy {
                    verdict: if pol { Verdict::Accept } else { Verdict::Drop },
                    counter: slot,
                },
            )
        });
    // (a few random programs, about 1 in 600, whose chains are called from many sites exceed
    // the verifier's 8,192 pending branches and are refused with EFAULT)
    let mut runner = proptest::test_runner::TestRunner::new(common::seeded_runs(60));
    runner
        .run(
            &(
                prog,
                proptest::collection::vec(arb_packet(), 10),
                0u8..3,
                any::<bool>(),
            ),
            |(p, pkts, mode, frame32)| {
                // this kernel's stack rule, or the one of 6.8 and no JIT (more inlined, and
                // valid on every kernel)
                let opts = Options {
                    stack: if frame32 {
                        StackRule::Frame32
                    } else {
                        env.stack
                    },
                    ..modes()[usize::from(mode).min(2)].1
                };
                let c = compile_with(&p, &env.layout, opts).unwrap();
                let subs = c
                    .symbols
                    .iter()
                    .filter(|s| s.1.starts_with("chain_"))
                    .count();
                prop_assert!(
                    subs <= 6,
                    "at most 6 chain subprograms, the rest inlined: {}",
                    subs
                );
                let l = load_with(&env, &p, opts);
                let mut all = pkts.clone();
                all.push(ip(47, A, B, 0, &[], &[0; 8])); // walks every chain
                for pkt in &all {
                    agrees(&env, &l, &p, pkt, &format!("mode {mode}, {:?}", opts.stack))?;
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Chains 0..=9, chain i starting with `-p 47 -j c{i+1}` (9 deep: chains 7-9 are inlined
/// into their callers' frames), then `extra` rules (chain, matches, action); chain 9 is
/// `-j RETURN`. Slots in rule order, the policy last.
fn deep_program(extra: &[(u32, Vec<Match>, Action)], policy: Verdict) -> Program {
    let mut chains = Vec::new();
    let mut slot = 0u32;
    let mut rule = |matches: Vec<Match>, action: Action| {
        slot += 1;
        rule(matches, action, slot - 1)
    };
    for i in 0..=9u32 {
        let mut rules = Vec::new();
        if i < 9 {
            rules.push(rule(vec![proto(47, false)], Action::Call(ChainId(i + 1))));
        }
        for (_, m, a) in extra.iter().filter(|e| e.0 == i) {
            rules.push(rule(m.clone(), *a));
        }
        if i == 9 {
            rules.push(rule(vec![], Action::Return));
        }
        chains.push((format!("c{i}"), rules));
    }
    let counter = rule(vec![], Action::Accept).counter;
    chained(
        Hook::LocalOut,
        chains,
        Policy {
            verdict: policy,
            counter,
        },
    )
}

/// Regression (shrunk from `deep_chains_match_reference`): an unconditional jump or goto to
/// an inlined chain whose RETURN is a split rule. That RETURN's jump is emitted later, in a
/// cold block, so the code generator judged the code after the call unreachable, left it
/// out, and the RETURN landed on the next cold block: the call rule before it, i.e. a loop
/// ("infinite loop detected"). Every mode loads, and agrees with the reference evaluator on
/// packets that walk every chain (GRE) and RETURN from the inlined chain (source 192/1), or
/// not, and on packets that stay in main.
#[test]
fn deep_inlined_return_from_cold_block() {
    let Some(env) = env() else { return };
    let half = src([0, 0, 0, 0], 1, true); // `! -s 0.0.0.0/1`: sources 128.0.0.0 and up
    let programs = [
        // the shrunk failure: c3 = [-p 47 -j c4, -j c8], c8 = [.., ! -s 0/1 -j RETURN, -j ACCEPT]
        vec![
            (3, vec![], Action::Call(ChainId(8))),
            (8, vec![half], Action::Return),
            (8, vec![], Action::Accept),
        ],
        // the same through a goto, from a subprogram and from main
        vec![
            (3, vec![], Action::Goto(ChainId(8))),
            (8, vec![half], Action::Return),
            (8, vec![], Action::Drop),
        ],
        vec![
            (0, vec![], Action::Goto(ChainId(8))),
            (8, vec![half], Action::Return),
            (8, vec![], Action::Drop),
        ],
        // one inlined chain called at two sites of one frame, each needing its own labels
        vec![
            (5, vec![], Action::Call(ChainId(8))),
            (5, vec![half], Action::Call(ChainId(8))),
            (5, vec![proto(17, false)], Action::Drop),
            (8, vec![half], Action::Return),
            (8, vec![dst(B, 32, false)], Action::Accept),
        ],
        // main's record as deep as tcpmss takes it, so that a kernel adding up 32 bytes a
        // frame (6.8) needs chains inlined earlier; and an inlined chain whose only RETURN is
        // behind an empty MSS range: it never matches and emits nothing, so the chain never
        // returns (the code after its call site was promised a jump that never came)
        vec![
            (5, vec![tcpmss(1000, 1500, 0)], Action::Drop),
            (7, vec![tcpmss(1400, 0, 0)], Action::Return),
            (7, vec![], Action::Drop),
            (8, vec![half], Action::Return),
            (8, vec![], Action::Accept),
        ],
    ];
    let pkts = [
        ip(47, A, B, 0, &[], &[0; 8]),
        ip(47, C, B, 0, &[], &[0; 8]),
        ip(47, C, A, 0, &[], &[0; 8]),
        udp_pkt(C, B, 1, 2),
        tcp_pkt(A, C, 1, 2, 0x10),
    ];
    // with the stack rule of this kernel, as the daemon compiles
    let modes = modes().map(|m| Options {
        stack: env.stack,
        ..m.1
    });
    for (k, extra) in programs.iter().enumerate() {
        for policy in [Verdict::Accept, Verdict::Drop] {
            let p = deep_program(extra, policy);
            for (m, opts) in modes.iter().enumerate() {
                let l = load_with(&env, &p, *opts);
                let mut walked = false;
                for (i, pkt) in pkts.iter().enumerate() {
                    let o = check(
                        &env,
                        &l,
                        &p,
                        pkt,
                        None,
                        &format!("program {k} policy {policy:?} mode {m} packet {i}"),
                    );
                    // the GRE packets reach chain 9 (its RETURN rule is the last but one slot)
                    walked |= o.counted.contains(&(p.policy.counter - 1));
                }
                assert!(walked, "program {k}: no packet walked every chain");
            }
        }
    }
}

/// The kernel matrix's scale check (tools/kernels/matrix.sh runs it in every guest): 10,000
/// address rules (as the daemon compiles them, one lookup, and as plain rules), 10,000
/// rules varying in address and port, 10,000 of arbitrary shape (classified) and 1,000 of
/// them compiled rule by rule (docs/KERNEL-BEHAVIOUR.md#stack-liveness) load with every
/// packet access this kernel verifies,
/// judge a packet of the last rule and the final ACCEPT exactly, and report verified
/// instructions and load time per kernel ("MATRIX" lines).
#[test]
fn kernel_scale() {
    let Some(env) = env() else { return };
    let release = bpfilter::probe::release();
    for (kind, n, mk, runs) in [
        (
            "10k address, lookup",
            10_000,
            address_chain as fn(usize) -> Program,
            true,
        ),
        (
            "10k address, plain",
            10_000,
            address_chain as fn(usize) -> Program,
            false,
        ),
        (
            "10k address+port",
            10_000,
            port_chain as fn(usize) -> Program,
            true,
        ),
        (
            "10k arbitrary, classified",
            10_000,
            arbitrary_chain as fn(usize) -> Program,
            true,
        ),
        (
            "1k arbitrary, compiled",
            1_000,
            arbitrary_chain as fn(usize) -> Program,
            false,
        ),
    ] {
        for (how, opts) in env.access_variants() {
            if opts.force_slow_path {
                continue;
            }
            let p = mk(n);
            let l = load_with(&env, &p, Options { runs, ..opts });
            let last = n - 1;
            let src = [10, 1, (last >> 8) as u8, last as u8];
            let miss = udp_pkt([10, 200, 0, 1], [10, 200, 0, 2], 4000, 5001);
            let (ret, d) = l.run(&env, &miss);
            assert_eq!(ret, 1, "{kind} / {how}: final ACCEPT");
            assert_eq!(
                d[n],
                (1, miss.len() as u64),
                "{kind} / {how}: ACCEPT counted"
            );
            let dport = if kind.contains("port") {
                10000 + (last % 1000) as u16
            } else {
                5001
            };
            // the arbitrary chain's last rule is a udp port range (shape 4)
            let (src, dport) = if kind.contains("arbitrary") {
                ([10, 200, 0, 1], 6000 + (last / 5) as u16)
            } else {
                (src, dport)
            };
            let hit = udp_pkt(src, [10, 200, 0, 2], 4000, dport);
            if kind.contains("arbitrary") {
                // overlapping ranges: an earlier rule holds it too, which the reference finds
                let o = check(&env, &l, &p, &hit, None, kind);
                assert_eq!(
                    o.verdict,
                    Verdict::Drop,
                    "{kind} / {how}: a range rule drops"
                );
                eprintln!(
                    "MATRIX kernel={release} strategy={how} ruleset={kind:?} insns={} verified={} load_ms={:.1}",
                    l.insns,
                    l.stats.verified_insns,
                    l.stats.load_time.as_secs_f64() * 1e3
                );
                continue;
            }
            let (ret, d) = l.run(&env, &hit);
            let want = p.chains[&p.entry].rules[last].action;
            assert_eq!(
                ret,
                u32::from(want == Action::Accept),
                "{kind} / {how}: last rule's verdict"
            );
            assert_eq!(
                d[last],
                (1, hit.len() as u64),
                "{kind} / {how}: last rule counted"
            );
            eprintln!(
                "MATRIX kernel={release} strategy={how} ruleset={kind:?} insns={} verified={} load_ms={:.1}",
                l.insns,
                l.stats.verified_insns,
                l.stats.load_time.as_secs_f64() * 1e3
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// connection state and events

/// A `-m conntrack` with only the given tests.
fn ct() -> CtMatch {
    CtMatch {
        state: None,
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
    }
}

/// A test run has no conntrack entry (`skb->_nfct` is 0): every packet is INVALID for
/// `-m state` and `-m conntrack`, and a conntrack match without a state test never matches.
/// The reference evaluator (`conntrack_mt`, `state_mt`) is the oracle; the rules are also
/// loaded, which proves the state code verifies on this kernel.
#[test]
fn connection_state_without_an_entry() {
    let Some(env) = env() else { return };
    let rules: Vec<(Vec<Match>, bool)> = vec![
        (vec![Match::State(1 << 3)], false), // NEW
        (vec![Match::State(1 << 0)], true),  // INVALID
        (vec![Match::State(!1)], false),     // ! INVALID (folded)
        (
            vec![Match::Conntrack(CtMatch {
                state: Some((ctstate::NEW, false)),
                ..ct()
            })],
            false,
        ),
        (
            vec![Match::Conntrack(CtMatch {
                state: Some((ctstate::NEW, true)),
                ..ct()
            })],
            true,
        ),
        (
            vec![Match::Conntrack(CtMatch {
                state: Some((ctstate::INVALID | ctstate::SNAT, false)),
                ..ct()
            })],
            true,
        ),
        (
            vec![Match::Conntrack(CtMatch {
                status: Some((1 << 3, false)),
                ..ct()
            })],
            false,
        ),
        (
            vec![Match::Conntrack(CtMatch {
                status: Some((1 << 3, true)),
                ..ct()
            })],
            false,
        ),
        (
            vec![Match::Conntrack(CtMatch {
                state: Some((ctstate::INVALID, false)),
                dir_original: Some(true),
                origsrc: Some(CtAddr::v4(
                    Ipv4Addr::new(10, 0, 0, 0),
                    Ipv4Addr::new(255, 0, 0, 0),
                    false,
                )),
                proto: Some((6, false)),
                origdst_port: Some(CtPort {
                    range: pr(80, 90),
                    invert: false,
                }),
                ..ct()
            })],
            true,
        ),
    ];
    let pkt = ip(
        TCP,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        0,
        &[],
        &tcp_hdr(1000, 80, 0x02, &[]),
    );
    for (name, opts) in env.access_variants() {
        for (i, (matches, hit)) in rules.iter().enumerate() {
            check_drop_rule(
                &env,
                (Hook::LocalIn, matches.clone()),
                opts,
                &pkt,
                *hit,
                &format!("{name}: state rule {i}"),
            );
        }
    }
}

/// Reads every record a test run left in the ring buffer.
fn drain(l: &Loaded) -> Vec<Vec<u8>> {
    let mut rb = bpfilter::sys::RingBuf::new(&l.events).unwrap();
    rb.poll(0).unwrap()
}

fn lost(l: &Loaded, slot: u32) -> u64 {
    let mut v = [0u8; 8];
    l.loss.lookup(&slot.to_ne_bytes(), &mut v).unwrap();
    u64::from_ne_bytes(v)
}

/// LOG and REJECT hand the packet to the daemon: one record each, with the rule's slot,
/// parameters, prefix and the packet's bytes; LOG goes on, REJECT drops, both are counted.
#[test]
fn events_reach_the_ring_buffer() {
    use emitter::event::{self, Event};
    let Some(env) = env() else { return };
    let mut prefix = [0u8; 30];
    prefix[..9].copy_from_slice(b"IN-DROP: ");
    let log = Action::Log(Log {
        level: 4,
        flags: 0x03,
        prefix,
    });
    for (name, opts) in env.access_variants() {
        for hook in [Hook::LocalIn, Hook::LocalOut] {
            let p = Program::single(
                hook,
                vec![
                    rule(vec![proto(TCP, false)], log, 0),
                    rule(vec![], Action::Reject(Reject { with: 7 }), 1),
                ],
                Policy {
                    verdict: Verdict::Accept,
                    counter: 2,
                },
            );
            let l = load_with(&env, &p, opts);
            let what = format!("{name} {hook:?}");
            // longer than a record carries: the capture stops at PACKET_CAP
            let mut payload = vec![0u8; event::PACKET_CAP + 500];
            payload[..20].copy_from_slice(&tcp_hdr(1000, 22, 0x02, &[]));
            let pkt = ip(TCP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[], &payload);
            check(&env, &l, &p, &pkt, Some((Verdict::Drop, &[0, 1])), &what);
            let recs = drain(&l);
            assert_eq!(recs.len(), 2, "{what}: one record per event");
            let e = Event::parse(&recs[0]).unwrap();
            assert_eq!(e.kind(), event::KIND_LOG, "{what}");
            assert_eq!((e.hook(), e.pf()), (hook.number() as u8, 2), "{what}");
            assert_eq!(
                (e.log_level(), e.log_flags(), e.rule()),
                (4, 0x03, 0),
                "{what}"
            );
            assert_eq!(e.prefix(), b"IN-DROP: ", "{what}");
            assert_eq!(e.skb_len() as usize, pkt.len(), "{what}");
            assert_eq!(e.packet(), &pkt[..event::PACKET_CAP], "{what}: first bytes");
            let r = Event::parse(&recs[1]).unwrap();
            assert_eq!(
                (r.kind(), r.reject_with(), r.rule()),
                (event::KIND_REJECT, 7, 1),
                "{what}"
            );
            assert_eq!(r.prefix(), b"", "{what}: REJECT has no prefix");
            // a short packet is captured whole
            let short = ip(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[], &udp_hdr(53, 53));
            check(&env, &l, &p, &short, Some((Verdict::Drop, &[1])), &what);
            let recs = drain(&l);
            assert_eq!(recs.len(), 1, "{what}");
            let r = Event::parse(&recs[0]).unwrap();
            assert!(r.complete(), "{what}");
            assert_eq!(r.packet(), &short[..], "{what}");
            assert_eq!(
                (lost(&l, event::LOSS_LOG), lost(&l, event::LOSS_REJECT)),
                (0, 0)
            );
        }
    }
}

/// A full ring buffer loses events, counts each loss, and never changes a verdict or a
/// counter: five records fit in one page, the rest of a burst is counted as lost.
#[test]
fn a_full_ring_buffer_counts_its_losses() {
    use emitter::event;
    let Some(mut env) = env() else { return };
    env.ring_bytes = 4096;
    let p = Program::single(
        Hook::LocalIn,
        vec![rule(vec![], Action::Reject(Reject { with: 3 }), 0)],
        Policy {
            verdict: Verdict::Accept,
            counter: 1,
        },
    );
    let opts = env.access_variants()[0].1;
    let l = load_with(&env, &p, opts);
    let pkt = ip(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[], &udp_hdr(53, 53));
    let fit = 4096 / (event::RECORD_SIZE + 8);
    for i in 0..fit + 7 {
        check(
            &env,
            &l,
            &p,
            &pkt,
            Some((Verdict::Drop, &[0])),
            &format!("packet {i}"),
        );
    }
    assert_eq!(lost(&l, event::LOSS_REJECT), 7);
    assert_eq!(drain(&l).len(), fit);
    check(
        &env,
        &l,
        &p,
        &pkt,
        Some((Verdict::Drop, &[0])),
        "after draining",
    );
    assert_eq!(drain(&l).len(), 1, "room again once read");
}

/// Every LOG flag, on a rule without matches, at every hook: the event code verifies.
#[test]
fn log_with_every_flag_loads() {
    let Some(env) = env() else { return };
    for (name, opts) in env.access_variants() {
        for hook in [Hook::LocalIn, Hook::Forward, Hook::LocalOut] {
            for flags in [0u8, 0x08, 0xff] {
                let p = Program::single(
                    hook,
                    vec![rule(
                        vec![],
                        Action::Log(Log {
                            level: 7,
                            flags,
                            prefix: [b'x'; 30],
                        }),
                        0,
                    )],
                    Policy {
                        verdict: Verdict::Accept,
                        counter: 1,
                    },
                );
                let l = load_with(&env, &p, opts);
                let pkt = ip(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[], &udp_hdr(53, 53));
                check(
                    &env,
                    &l,
                    &p,
                    &pkt,
                    Some((Verdict::Accept, &[0, 1])),
                    &format!("{name} {hook:?} {flags:#x}"),
                );
                assert_eq!(drain(&l).len(), 1);
            }
        }
    }
}

/// `-m mark` reads skb->mark (0 in a test run) under its mask, in every hook and access.
#[test]
fn mark_is_compared_under_its_mask() {
    let Some(env) = env() else { return };
    let cases = [
        (0u32, 0u32, false, true),
        (0, 0xff, false, true),
        (1, 0xff, false, false),
        (1, 0xff, true, true),
        (0, 0, true, false),
        (0x10, 0, false, false),
    ];
    let pkt = ip(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[], &udp_hdr(53, 53));
    for (name, opts) in env.access_variants() {
        for hook in [Hook::LocalIn, Hook::LocalOut] {
            for (mark, mask, invert, hit) in cases {
                check_drop_rule(
                    &env,
                    (hook, vec![Match::Mark { mark, mask, invert }]),
                    opts,
                    &pkt,
                    hit,
                    &format!("{name} {hook:?} {mark:#x}/{mask:#x} !{invert}"),
                );
            }
        }
    }
}

/// A built-in chain without rules is its policy alone: counted and returned without the packet
/// parsed (a program of a dozen instructions), for every packet, a fragment or one too short
/// for its transport header too, at every hook, both verdicts, with every way of reading
/// headers. The same for a chain whose first rule ACCEPTs or DROPs everything (what the
/// translator makes of a built-in chain without rules: its policy entry, counted).
#[test]
fn an_empty_chain_is_its_policy() {
    let Some(env) = env() else { return };
    let packets = [
        ip(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[], &udp_hdr(53, 53)),
        ip(TCP, [10, 0, 0, 1], [10, 0, 0, 2], 0x2001, &[], &[0; 4]),
        ip(ICMP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[1, 1, 1, 0], &[]),
    ];
    for (name, opts) in env.access_variants() {
        for hook in [Hook::LocalIn, Hook::Forward, Hook::LocalOut] {
            for verdict in [Verdict::Accept, Verdict::Drop] {
                let (action, other) = match verdict {
                    Verdict::Accept => (Action::Accept, Verdict::Drop),
                    Verdict::Drop => (Action::Drop, Verdict::Accept),
                };
                let first = vec![
                    rule(vec![], action, 2),
                    rule(
                        vec![Match::Protocol {
                            proto: UDP,
                            invert: false,
                        }],
                        Action::Drop,
                        0,
                    ),
                ];
                for (shape, p) in [
                    (
                        "no rule",
                        Program::single(
                            hook,
                            vec![],
                            Policy {
                                verdict,
                                counter: 2,
                            },
                        ),
                    ),
                    (
                        "first rule unconditional",
                        Program::single(
                            hook,
                            first,
                            Policy {
                                verdict: other,
                                counter: 1,
                            },
                        ),
                    ),
                ] {
                    let what = format!("{name} {hook:?} {shape} {verdict:?}");
                    let l = load_with(&env, &p, opts);
                    assert!(l.insns < 32, "{what}: {} instructions", l.insns);
                    for pkt in &packets {
                        check(&env, &l, &p, pkt, Some((verdict, &[2])), &what);
                    }
                }
            }
        }
    }
}

/// `-m mac` compares only on an Ethernet device: a test run's packet arrives on the loopback
/// device (ARPHRD_LOOPBACK, though `eth_type_trans` set a MAC header), so no rule matches, `!`
/// or not, whatever `invert` holds. The comparison itself is checked on real veth traffic
/// (e2e_matches, e2e_ipv6).
#[test]
fn mac_matches_nothing_off_ethernet() {
    let Some(env) = env() else { return };
    let pkt = ip(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[], &udp_hdr(53, 53));
    for (name, opts) in env.access_variants() {
        for hook in [Hook::LocalIn, Hook::LocalOut] {
            for (src, invert) in [
                ([0u8; 6], 0u32),
                ([0; 6], 1),
                ([2, 0, 0, 0, 0, 1], 1),
                ([0; 6], 7),
            ] {
                check_drop_rule(
                    &env,
                    (hook, vec![Match::Mac { src, invert }]),
                    opts,
                    &pkt,
                    false,
                    &format!("{name} {hook:?} {src:02x?} invert {invert}"),
                );
            }
        }
    }
}

/// The state word of limit slot `slot`.
fn bucket(l: &Loaded, slot: u32) -> u64 {
    let mut v = [0u8; 8];
    l.limits.lookup(&slot.to_ne_bytes(), &mut v).unwrap();
    u64::from_ne_bytes(v)
}

/// `-m limit`: every packet takes its credit exactly as `limit_mt` would from the word the
/// program found (the new word names the jiffies the program read), through the fast path,
/// refills, the cap, a bucket left fuller than its cap, and a `now - prev` whose credits wrap.
#[test]
fn limit_takes_credits_as_limit_mt() {
    let Some(env) = env() else { return };
    let now = bpfilter::layout::jiffies().expect("jiffies") as u32;
    let pkt = ip(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[], &udp_hdr(53, 53));
    // (cost, cap, credits per jiffy, initial word)
    let cases: [(u32, u32, u32, u64); 5] = [
        // 3/hour, burst 3 at HZ 250: no refill within the test
        (
            38_400_000,
            115_200_000,
            128,
            115_200_000u64 << 32 | u64::from(now),
        ),
        // 1000/s, burst 2: a credit every quarter jiffy, refills between runs
        (32, 64, 128, 64u64 << 32 | u64::from(now)),
        // empty bucket, fresh: the fast path (prev == now) or a refill of one jiffy
        (1_000_000, 2_000_000, 128, u64::from(now)),
        // fuller than the cap (a cost given in the request): capped on the first update
        (10, 20, 128, 1_000u64 << 32 | u64::from(now)),
        // 2^25 jiffies since prev: 2^32 credits, which wrap to nothing in the kernel's u32
        (
            100,
            300,
            128,
            50u64 << 32 | u64::from(now.wrapping_sub(1 << 25)),
        ),
    ];
    for (name, opts) in env.access_variants() {
        for (cost, credit_cap, credits_per_jiffy, initial) in cases {
            let m = LimitMatch {
                slot: 3,
                cost,
                credit_cap,
                credits_per_jiffy,
            };
            let p = single(
                Hook::LocalIn,
                vec![Match::Limit(m)],
                Action::Accept,
                Verdict::Drop,
            );
            let l = load_with(&env, &p, opts);
            l.limits
                .update(&3u32.to_ne_bytes(), &initial.to_ne_bytes(), 0)
                .unwrap();
            let mut passed = 0;
            for k in 0..12 {
                let before = bucket(&l, 3);
                let (ret, _) = l.run(&env, &pkt);
                let after = bucket(&l, 3);
                let (want, pass) = m.step(before, after & 0xffff_ffff);
                assert_eq!(
                    (after, ret),
                    (want, u32::from(pass)),
                    "{name} cost {cost} cap {credit_cap} packet {k}: word {before:#x} -> {after:#x}"
                );
                passed += u32::from(pass);
            }
            if cost == 38_400_000 {
                assert_eq!(passed, 3, "{name}: a burst of 3, then nothing");
            }
        }
    }
}

/// `-m limit` takes its credit only when the rule's earlier tests passed, and before its
/// later ones (a later test that fails still costs a credit), as the kernel's order has it.
#[test]
fn limit_is_taken_in_the_kernels_order() {
    let Some(env) = env() else { return };
    let now = bpfilter::layout::jiffies().expect("jiffies") as u32;
    let m = LimitMatch {
        slot: 0,
        cost: 38_400_000,
        credit_cap: 384_000_000,
        credits_per_jiffy: 128,
    };
    let full = 384_000_000u64 << 32 | u64::from(now);
    // -p udp -m limit -m udp --dport 53: tcp packets cost nothing, udp to 54 costs a credit
    let p = single(
        Hook::LocalIn,
        vec![
            proto(UDP, false),
            Match::Limit(m),
            udpm(pr(0, 65535), pr(53, 53), false, false),
        ],
        Action::Accept,
        Verdict::Drop,
    );
    for (name, opts) in env.access_variants() {
        let l = load_with(&env, &p, opts);
        l.limits
            .update(&0u32.to_ne_bytes(), &full.to_ne_bytes(), 0)
            .unwrap();
        let credit = |l: &Loaded| bucket(l, 0) >> 32;
        l.run(&env, &tcp_pkt([10, 0, 0, 1], [10, 0, 0, 2], 1, 53, 2));
        assert_eq!(
            credit(&l),
            384_000_000,
            "{name}: a tcp packet never reaches the limit"
        );
        let (ret, _) = l.run(&env, &udp_pkt([10, 0, 0, 1], [10, 0, 0, 2], 1, 54));
        assert_eq!(ret, 0, "{name}");
        assert!(
            credit(&l) < 384_000_000,
            "{name}: the limit ran before --dport failed"
        );
    }
}

/// `-m addrtype` answers from the address-type map as `__inet_dev_addr_type` answers from
/// the local table (the daemon's own fill of the map, the reference's lookup), for source and
/// destination, inverted, and tied to the test run's device (lo).
#[test]
fn addrtype_reads_the_namespaces_address_types() {
    let Some(env) = env() else { return };
    use bpfilter::daemon::addrtypes::entries;
    use bpfilter::sys::LocalRoute;
    let routes = [
        LocalRoute {
            net: u32::from_be_bytes([127, 0, 0, 0]),
            prefix: 8,
            rtype: 2,
            ifindex: 1,
        },
        LocalRoute {
            net: u32::from_be_bytes([10, 0, 0, 1]),
            prefix: 32,
            rtype: 2,
            ifindex: 5,
        },
        LocalRoute {
            net: u32::from_be_bytes([10, 0, 0, 2]),
            prefix: 32,
            rtype: 2,
            ifindex: 1,
        },
        LocalRoute {
            net: u32::from_be_bytes([10, 0, 0, 255]),
            prefix: 32,
            rtype: 3,
            ifindex: 1,
        },
        LocalRoute {
            net: u32::from_be_bytes([10, 9, 0, 0]),
            prefix: 16,
            rtype: 7,
            ifindex: 0,
        },
    ];
    let refs = routes.to_vec();
    let addrs = [
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        [10, 0, 0, 255],
        [127, 0, 0, 1],
        [10, 9, 1, 1],
        [224, 0, 0, 1],
        [255, 255, 255, 255],
        [0, 1, 2, 3],
        [8, 8, 8, 8],
    ];
    let masks: [u16; 5] = [1 << 2, 1 << 3, (1 << 1) | (1 << 2), 1 << 5, 0xffff];
    for (name, opts) in env.access_variants().into_iter().take(1) {
        for hook in [Hook::LocalIn, Hook::LocalOut] {
            for dev in [AddrtypeDev::Any, AddrtypeDev::In, AddrtypeDev::Out] {
                if (hook == Hook::LocalIn && dev == AddrtypeDev::Out)
                    || (hook == Hook::LocalOut && dev == AddrtypeDev::In)
                {
                    continue;
                }
                for (i, mask) in masks.iter().enumerate() {
                    let m = AddrtypeMatch {
                        src: if i % 2 == 0 { *mask } else { 0 },
                        dst: *mask,
                        inv_src: i == 2,
                        inv_dst: i == 3,
                        dev,
                    };
                    let p = single(
                        hook,
                        vec![Match::Addrtype(m)],
                        Action::Drop,
                        Verdict::Accept,
                    );
                    let l = load_with(&env, &p, opts);
                    for (k, v) in entries(&routes) {
                        l.addrtypes.update(&k, &v, 0).unwrap();
                    }
                    for s in addrs {
                        for d in addrs {
                            let pkt = ip(UDP, s, d, 0, &[], &udp_hdr(53, 53));
                            let rp = emitter::reference::Packet {
                                data: &pkt,
                                in_ifindex: 0, // a test run has no devices
                                out_ifindex: 0,
                                local_routes: &refs,
                                ..Default::default()
                            };
                            let o = emitter::reference::evaluate(&p, &rp);
                            let (ret, _) = l.run(&env, &pkt);
                            assert_eq!(
                                ret,
                                verdict_code(o.verdict),
                                "{name} {hook:?} {m:?} {s:?} -> {d:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `-m owner` without a socket (every test run's packet): matches only when every test it
/// makes is inverted, as `owner_mt` has it.
#[test]
fn owner_without_a_socket() {
    let Some(env) = env() else { return };
    let pkt = ip(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[], &udp_hdr(53, 53));
    for tests in 1u8..8 {
        for invert in 0u8..8 {
            let m = OwnerMatch {
                tests,
                invert: invert & tests,
                uid: (0, 10),
                gid: (5, 5),
            };
            let p = single(
                Hook::LocalOut,
                vec![Match::Owner(m)],
                Action::Drop,
                Verdict::Accept,
            );
            let l = load(&env, &p);
            let (ret, _) = l.run(&env, &pkt);
            let want = emitter::reference::owner_mt(&m, emitter::reference::Sock::None);
            assert_eq!(ret, u32::from(!want), "{m:?}");
        }
    }
}

/// Chains split over several programs (segments tail-calling the next where their rules run
/// out) judge and count every packet as the whole chain does: random programs, split into
/// two to eight segments by a small instruction budget.
#[test]
fn split_chains_match_reference() {
    let Some(env) = env() else { return };
    let split = std::cell::Cell::new(0usize);
    let mut runner = proptest::test_runner::TestRunner::new(common::seeded_runs(120));
    runner
        .run(
            &(
                arb_program(),
                proptest::collection::vec(arb_packet(), 12),
                2usize..8,
            ),
            |(p, pkts, parts)| {
                let opts = Options::default();
                let outs = bpfilter::xlate::compile_split(&p, &env.layout, opts, 0, parts)
                    .expect("compile");
                if outs.len() > 1 {
                    split.set(split.get() + 1);
                }
                let l = load_outputs(&env, &p, outs);
                for pkt in &pkts {
                    agrees(&env, &l, &p, pkt, &format!("{parts} parts"))?;
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(
        split.get() >= 40,
        "only {} of 120 random programs were split",
        split.get()
    );
}

/// A 30,000-rule chain of no rule runs (every rule's protocol differs from the next one's),
/// larger than one segment may be (over the verifier's limit as one program), loads as segments
/// and judges like the chain.
#[test]
fn a_chain_past_the_verifiers_limit_loads_as_segments() {
    let Some(env) = env() else { return };
    let n = 30_000u32;
    let mut rules: Vec<Rule> = (0..n)
        .map(|i| Rule {
            matches: vec![
                src(
                    [10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    32,
                    false,
                ),
                if i % 2 == 0 {
                    udpm(
                        PortRange::ANY,
                        PortRange::one(1000 + (i % 500) as u16),
                        false,
                        false,
                    )
                } else {
                    Match::Tcp(tcpm(
                        PortRange::ANY,
                        PortRange::one(1000 + (i % 500) as u16),
                    ))
                },
            ],
            action: if i % 3 == 0 {
                Action::Accept
            } else {
                Action::Drop
            },
            counter: i,
        })
        .collect();
    rules.push(Rule {
        matches: vec![],
        action: Action::Continue,
        counter: n,
    });
    let p = Program::single(
        Hook::LocalIn,
        rules,
        Policy {
            verdict: Verdict::Drop,
            counter: n + 1,
        },
    );
    let opts = Options::default();
    let whole = bpfilter::xlate::compile(&p, &env.layout, opts);
    assert!(
        matches!(whole, Err(emitter::EmitError::TooLarge { .. }))
            || whole
                .as_ref()
                .is_ok_and(|o| o.code.slot_count() > bpfilter::xlate::SEGMENT_INSNS),
        "the chain fits in one program"
    );
    let outs =
        bpfilter::xlate::compile_segments(&p, &env.layout, opts, 0, bpfilter::xlate::SEGMENT_INSNS)
            .expect("segments");
    assert!(outs.len() > 1 && outs.len() <= bpfilter::xlate::MAX_SEGMENTS);
    let l = load_outputs(&env, &p, outs);
    let rule = |i: u32| -> (Vec<u8>, Verdict, Vec<u32>) {
        let src = [10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let port = 1000 + (i % 500) as u16;
        let pkt = if i % 2 == 0 {
            udp_pkt(src, A, 9, port)
        } else {
            tcp_pkt(src, A, 9, port, 0x10)
        };
        let v = if i % 3 == 0 {
            Verdict::Accept
        } else {
            Verdict::Drop
        };
        (pkt, v, vec![i])
    };
    for i in [0, 1, 2, n / 3, n / 2 + 1, n - 2, n - 1] {
        let (pkt, v, counted) = rule(i);
        check(
            &env,
            &l,
            &p,
            &pkt,
            Some((v, &counted)),
            &format!("rule {i}"),
        );
    }
    // no rule: the last one counts, then the policy
    check(
        &env,
        &l,
        &p,
        &udp_pkt([10, 200, 0, 1], A, 9, 1000),
        Some((Verdict::Drop, &[n, n + 1])),
        "no rule",
    );
}

/// The benchmark's mixed rules, `-s 10.1.x.y/32` and `/31` in turn, each with a udp
/// destination port (`port(i)`), then `ACCEPT`.
fn mixed_chain(n: usize, port: impl Fn(usize) -> u16) -> Program {
    drop_list(Hook::LocalOut, n, |i| {
        let a = (0x0a01_0000u32 + (i as u32 & !1)).to_be_bytes();
        vec![
            src(a, 32 - (i as u32 & 1), false),
            proto(UDP, false),
            udpm(PortRange::ANY, PortRange::one(port(i)), false, false),
        ]
    })
}

/// Rules whose address masks differ (the benchmark's mixed kind) become one run with two
/// classes: four lookups (address, then address and port, per class) whatever the length,
/// the verifier's work the same at every length, and each packet judged and counted as the
/// rules one by one would. Pairs of rules that share their port make a packet of the pair's
/// even address hit both classes: the /32 rule, first, must win. Also in the kernel matrix.
#[test]
fn runs_with_classes_table() {
    let Some(env) = env() else { return };
    let mut verified = std::collections::BTreeMap::<String, Vec<u32>>::new();
    for (n, paired) in [
        (64usize, false),
        (1000, false),
        (1000, true),
        (10_000, true),
    ] {
        let p = if paired {
            mixed_chain(n, |i| 6000 + (i / 2) as u16)
        } else {
            mixed_chain(n, |i| 6000 + i as u16)
        };
        let port = |i: usize| if paired { 6000 + i / 2 } else { 6000 + i } as u16;
        for (how, opts) in env.access_variants() {
            let l = load_with(&env, &p, opts);
            assert_eq!(l.maps, 4, "{how} n={n}: two classes of two lookups");
            verified
                .entry(how.to_string())
                .or_default()
                .push(l.stats.verified_insns);
            let at = |k: u32| (0x0a01_0000u32 + k).to_be_bytes();
            let dst = [10, 200, 0, 2];
            for k in [0usize, 2, n - 2] {
                let even = udp_pkt(at(k as u32), dst, 4000, port(k));
                let odd = udp_pkt(at(k as u32 + 1), dst, 4000, port(k + 1));
                // the /32 rule k, first; the /31 rule k + 1 holds the odd address
                for (pkt, rule) in [(&even, k), (&odd, k + 1)] {
                    let case = format!("{how} n={n} paired={paired} rule {rule}");
                    agrees(&env, &l, &p, pkt, &case).unwrap();
                    let (ret, d) = l.run(&env, pkt);
                    assert_eq!(ret, 0, "{case}");
                    assert_eq!(d[rule], (1, pkt.len() as u64), "{case}");
                }
                // the odd address with the /32 rule's own port: the /31 rule when paired,
                // else no rule (the final ACCEPT)
                let cross = udp_pkt(at(k as u32 + 1), dst, 4000, port(k));
                agrees(&env, &l, &p, &cross, &format!("{how} n={n} cross {k}")).unwrap();
                let (ret, d) = l.run(&env, &cross);
                let hit = if paired { k + 1 } else { n };
                assert_eq!(
                    (ret, d[hit].0),
                    (u32::from(!paired), 1),
                    "{how} n={n} cross {k}"
                );
            }
        }
    }
    // verification costs the same at any length
    for (how, mut v) in verified {
        v.dedup();
        assert_eq!(
            v.len(),
            1,
            "{how}: verified insns vary with the length: {v:?}"
        );
    }
}

/// Rules of five shapes in turn, as the benchmark's arbitrary kind (see
/// [`arbitrary_list`]), each `-j DROP`, then ACCEPT.
fn arbitrary_chain(n: usize) -> Program {
    arbitrary_list(Hook::LocalIn, n)
}

/// A chain too long for every multi-test rule to keep the split form in one program (the
/// verifier's pending-branch limit) is split into segments until none is compiled branch
/// free, and still judges and counts as the rules one by one: a packet through all of them,
/// and packets stopped in the first and the last segment.
#[test]
fn long_chains_are_split_before_their_rules_turn_branch_free() {
    let Some(env) = env() else { return };
    let n = 12_000;
    let p = arbitrary_chain(n);
    // compiled rule by rule, as when classification is not possible
    let opts = Options {
        classify: false,
        ..Options::default()
    };
    let whole = bpfilter::xlate::compile(&p, &env.layout, opts).expect("compile");
    assert!(whole.combined > 0, "one program keeps every rule split");
    let outs =
        bpfilter::xlate::compile_segments(&p, &env.layout, opts, 0, bpfilter::xlate::SEGMENT_INSNS)
            .expect("segments");
    assert!(outs.len() > 1, "not split");
    assert!(
        outs.iter().all(|o| o.combined == 0),
        "branch-free rules left"
    );
    let l = load_outputs(&env, &p, outs);
    let traffic = udp_pkt([10, 200, 0, 1], [10, 200, 0, 2], 4000, 5001);
    let (ret, d) = l.run(&env, &traffic);
    assert_eq!(
        (ret, d[n]),
        (1, (1, traffic.len() as u64)),
        "the final ACCEPT"
    );
    agrees(&env, &l, &p, &traffic, "through every rule").unwrap();
    for i in [0usize, 4, 7, n / 2, n - 10, n - 6, n - 5, n - 1] {
        let j = i / 5;
        let lo = 6000 + (j % 50_000) as u16;
        let pkt = match i % 5 {
            0 => udp_pkt(
                [10, 1, (i >> 8) as u8, i as u8],
                [10, 200, 0, 2],
                4000,
                5001,
            ),
            2 => tcp_pkt([10, 200, 0, 1], [10, 200, 0, 2], 4000, lo, 0x02),
            _ => udp_pkt([10, 200, 0, 1], [10, 200, 0, 2], 4000, lo),
        };
        agrees(&env, &l, &p, &pkt, &format!("rule {i}")).unwrap();
        // every one of them is some rule's (a port range's, for the shapes that do not hold
        // the packet): dropped
        let (ret, _) = l.run(&env, &pkt);
        assert_eq!(ret, 0, "rule {i}");
    }
}
