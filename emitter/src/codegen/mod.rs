//! IR to BPF_PROG_TYPE_NETFILTER instructions.
//!
//! # Program shape
//! ```text
//! main (frame 0):  prologue: parse the packet once into the record (below)
//!                  entry chain rules ... policy (count, verdict)
//!                  every ~16k slots and at the end: an "island" of out-of-line rule bodies
//!                  and tails (count + accept / drop / return, hotdrop), skipped by a goto
//! chain_<id>:      one static subprogram per reachable user chain, `r1` = record pointer;
//!                  returns 0 (DROP), 1 (ACCEPT) or 2 (RETURN: continue in the caller).
//!                  Jump = call, then continue on 2 or return the verdict; goto = call and
//!                  return its result (in main, 2 means the policy). Chains nested deeper
//!                  than `MAX_CHAIN_DEPTH` (BPF allows 8 frames: main, 6 chains, count) are
//!                  inlined at each call site instead, their RETURN jumping to the caller's
//!                  continuation.
//! count:           subprogram `count(r1 = counter slot, r2 = skb->len)`: per-CPU counter
//!                  map lookup + two atomic adds
//! ```
//!
//! # Register convention
//! - `r6`: record base, in every frame. In main it is a copy of `r10`; a chain subprogram gets
//!   it in `r1` and keeps it in `r6` (callee-saved, so it survives calls). Record fields are
//!   addressed as `r6 + FIELD` with the negative offsets below.
//! - `r7` = saddr, `r8` = daddr (as in the record), loaded at the end of the prologue and at
//!   the entry of every chain subprogram; in the prologue itself `r7`-`r9` hold the skb, the
//!   linear length and the data pointer.
//! - `r9` = dport | sport << 16 | protocol << 32 | transport status << 40 (status: 0 fragment
//!   at offset 1, 1 other non-first fragment, else min(bytes available, 253) + 2) | guard
//!   bits << 48 (two per guard kind: tcp, 8-byte and 4-byte headers; bit 0 "fragment: no
//!   match", bit 1 "hotdrop"), also stored at `PACKED` for chain subprograms.
//! - `r0`-`r5`: scratch inside one rule; nothing is kept in them from one rule to the next.
//!
//! Why hot registers for the addresses only: kernel 6.18's stack liveness analysis
//! (`bpf_update_live_stack`) re-runs over the whole function whenever an instruction not seen
//! before touches the stack, so one stack load per rule makes verification time quadratic in
//! the rule count (7 s at 10,000 address rules). Address rules, the ones that come by the
//! thousand, therefore touch no stack at all. A hot register is never compared directly:
//! rules test a copy made by an ALU operation (`w1 = w7; w1 ^= addr; if w1 != 0`), which the
//! verifier does not link to the original, so no rule narrows `r7`/`r8` for the rules after it.
//! - Verdict codes: 0 = NF_DROP, 1 = NF_ACCEPT, 2 = RETURN (subprograms only). Main returns
//!   exactly 0 or 1.
//!
//! Rules never compare a long-lived register: every test works on a scratch copy (loaded
//! from the record, or unlinked from a hot register). The record's scalar fields sit at offsets that are not 8-byte
//! aligned, so the verifier keeps them as plain unknown bytes (STACK_MISC) and never links
//! them to a compared register. The verifier state at every "next rule" label is therefore the
//! same on every path, and it prunes: verification cost grows linearly with the rule count.
//! Every prologue path writes every field with a value the verifier does not know (transport
//! fields are read even when the header is short: cast-pointer loads are fault-safe probe
//! loads, and no rule looks at them before its availability guard), so all prologue paths
//! reach the rules with the same stack state.
//!
//! # Stack layout (frame 0, offsets from r10 / r6)
//! ```text
//!  -63 proto u8      -62 sport u16 (host order)   -60 saddr u32 (network order)
//!  -55 icmp type u8  -54 dport u16 (host order)   -52 daddr u32 (network order)
//!  -47 icmp code u8  -46 tcp flags u8  -45 tcp doff*4 u8   -44 skb->len u32
//!  -39 tcp option state u8 (1 none, 2 present, 3 hotdrop)  -38 thoff u16
//!  -36 thav s32: -2 = fragment with offset 1, -1 = other non-first fragment, else
//!      bytes of transport header available (skb->len - ihl*4, negative clamped to 1)
//!  -28 -20 -12 -4: in-interface name, four u32 words (one per 8-byte slot)
//!  -92 -84 -76 -68: out-interface name words
//! -112 dynptr (IP header slow path)   -128 dynptr (transport slow path)
//! -168 IP header copy (20)  -148 transport header copy (20)     (slow path only)
//! -200 tcp option kind bitmap (4 x u64)  -248 tcp options copy (48)  -264 dynptr (options)
//! -272 packed r9 (u64)   -276 counter slot + 1 for the shared tails (u32)
//! ```
//! `count` uses 8 bytes of its own frame; chain subprograms use none.
//!
//! # Rule forms
//! The verifier walks the program depth first, falling through first; a conditional jump
//! whose target it has not explored yet stays pending until the walk returns, and more than
//! 8192 pending branches fail the load. Three forms keep that in check:
//! - *inline* (one test, or tests the forms below cannot express): `if test fails goto next`
//!   per test, the action inline. A single-test rule leaves nothing pending.
//! - *split* (default while the pending estimate is under `PENDING_BUDGET`): the most
//!   selective test inline as `if passes goto body` (a non-matching packet falls through: no
//!   taken branch per rule, which is what keeps a long chain fast), the rest of the rule
//!   branch free plus its action out of line ("cold" blocks, flushed at islands), jumping back
//!   to `next`. One pending branch per rule.
//! - *combined* (past the budget): every test branch free into r0 ("fails") and r5
//!   ("hotdrop"), then `if r0 != 0 goto next; if r5 != 0 goto hotdrop; action`: nothing
//!   pending for a terminal rule, but every test runs for every packet.
//!
//! # Test order inside a rule
//! Pure tests (addresses, interfaces, protocol, fragment, iprange, and the port / flag / code
//! tests inside a transport match) may be reordered between two "hotdrop" points; a match that
//! can hotdrop (tcp, udp, icmp, multiport: its header-availability guard) is a barrier, so a
//! packet is dropped exactly when the kernel would drop it. Within a run the most selective
//! test goes first (full addresses, then masks, ranges, ports, interfaces, protocol).
//!
//! # Rule runs
//! `find_runs` looks for at least `MIN_RUN` consecutive rules whose lowered tests and action
//! (same Call/Goto target) are identical but for one "key" test at the same position: an
//! exact address (`/32`, not inverted) or a single port (not inverted) of the same field.
//! Such a run is one lookup in a hash map (`MapRef::Other(i)`, `Output::maps[i]`: key = the
//! address as loaded or the port in host order, value = counter slot of the FIRST rule with
//! that key):
//! ```text
//! tests before the key's hotdrop barrier, minus the key   (fail: after the run)
//! LKEY = key; r0 = lookup(map, LKEY); if r0 == 0 goto after the run
//! KEY = *r0 + 1                                          (the slot, for count and the tails)
//! tests after the barrier (hotdrop as usual)              (fail: after the run)
//! action (counting the slot found)
//! ```
//! Why this is exactly the kernel's evaluation of the rules one by one: the tests before the
//! barrier are pure and the same for every rule (a guard among them, such as the udp header
//! check of a port key, runs for the first rule exactly where the kernel would run it, and a
//! rule whose key differs fails at its key before reaching any later guard), so at most the
//! first rule holding the packet's key can match; its remaining tests are those of every rule
//! of the run with that key, so if they fail every later duplicate fails too. After a Call
//! that returns, or a Continue, the kernel would go on with the next rules of the run: those
//! fail on their key, which is why a run of such rules holds distinct keys. The IR is not
//! changed; `compile`/`compile_with` never form runs (a `Compiled` carries no maps), only
//! `compile_output` does.

use std::collections::{BTreeMap, BTreeSet};

mod access;

pub use access::PacketAccess;

use crate::builder::{Builder, Compiled, Label, MapRef, MapSpec};
use crate::insn::{
    alu32, alu64, ldx, mov64, st, stx, AluOp, AtomicOp, Insn, JmpOp, Reg, Size, Src,
};
use crate::ir::{self, Action, ChainId, Match, MultiportMode, PortRange, Program};
use crate::{EmitError, KernelLayout};

/// Record field offsets (see the module doc).
pub mod rec {
    /// u8 IP protocol
    pub const PROTO: i16 = -63;
    /// u16 source port, host order
    pub const SPORT: i16 = -62;
    /// u32 source address as loaded (network order bytes)
    pub const SADDR: i16 = -60;
    /// u8 ICMP type (first transport byte)
    pub const TYPE: i16 = -55;
    /// u16 destination port, host order
    pub const DPORT: i16 = -54;
    /// u32 destination address as loaded
    pub const DADDR: i16 = -52;
    /// u8 ICMP code (second transport byte)
    pub const CODE: i16 = -47;
    /// u8 TCP flags (byte 13)
    pub const FLAGS: i16 = -46;
    /// u8 TCP data offset * 4
    pub const DOFF: i16 = -45;
    /// u32 skb->len
    pub const LEN: i16 = -44;
    /// u8 TCP option state: 1 none, 2 present, 3 hotdrop
    pub const OPTST: i16 = -39;
    /// u16 transport header offset (ihl * 4)
    pub const THOFF: i16 = -38;
    /// s32 transport bytes available, -1/-2 for non-first fragments
    pub const THAV: i16 = -36;
    /// in-interface name word k at IN_NAME + 8k
    pub const IN_NAME: i16 = -28;
    /// out-interface name word k at OUT_NAME + 8k
    pub const OUT_NAME: i16 = -92;
    /// skb dynptr of the dynptr prologue (16 bytes)
    pub const DYN: i16 = -112;
    /// IP header slice buffer (20 bytes)
    pub const BUF_IP: i16 = -168;
    /// transport header slice buffer (20 bytes)
    pub const BUF_TH: i16 = -148;
    /// tcp option kind bitmap, 4 x u64
    pub const OPTMAP: i16 = -200;
    /// tcp options copy (40 bytes + 8 spare)
    pub const OPTBUF: i16 = -248;
    /// dynptr for the options
    pub const DYN_OPT: i16 = -264;
    /// u64 copy of r9 (packed ports, protocol, transport status) for chain subprograms
    pub const PACKED: i16 = -272;
    /// u32 counter slot + 1 handed to the shared tails (see `Gen::set_key`)
    pub const KEY: i16 = -276;
    /// lookup key of a rule run (u32 address or u16 port), written just before the lookup
    pub const LKEY: i16 = -288;
}

/// Bit positions in r9 (see "Register convention").
mod packed {
    /// u16 source port (host order) at bit 16; destination port at bit 0
    pub const SPORT_SHIFT: i32 = 16;
    /// u8 protocol
    pub const PROTO_SHIFT: i32 = 32;
    /// u8 transport status: 0 fragment at offset 1, 1 other non-first fragment, else
    /// min(available bytes, 253) + 2
    pub const TH_SHIFT: i32 = 40;
    /// 2 bits per guard kind (tcp, 8 bytes, 4 bytes): bit 0 no match, bit 1 hotdrop
    pub const GUARD_SHIFT: i32 = 48;
}

/// THAV value of a fragment with offset 1 (tcp hotdrops it).
const THAV_FRAG1: i32 = -2;
/// Option states.
const OPT_NONE: i32 = 1;
const OPT_PRESENT: i32 = 2;
const OPT_HOTDROP: i32 = 3;

/// Helper numbers (uapi enum bpf_func_id; stable ABI).
const HELPER_MAP_LOOKUP_ELEM: u32 = 1;
const HELPER_DYNPTR_READ: u32 = 201;
/// Kfunc names resolved through `KernelLayout`.
const KFUNC_DYNPTR_FROM_SKB: &str = "bpf_dynptr_from_skb";
const KFUNC_DYNPTR_SLICE: &str = "bpf_dynptr_slice";
const KFUNC_RDONLY_CAST: &str = "bpf_rdonly_cast";

/// `Frame::used` key of the hotdrop exit.
const HOTDROP: u8 = 3;
/// Verdict code meaning "continue in the caller" (subprograms only).
const RET_RETURN: i32 = 2;
/// BPF allows 8 call frames: main, the chain subprograms and `count` on top.
const MAX_FRAMES: usize = 8;
/// Deepest user-chain nesting compiled as subprograms (main + chains + count); chains nested
/// deeper are inlined into their callers.
pub const MAX_CHAIN_DEPTH: usize = MAX_FRAMES - 2;
/// Deepest nesting accepted at all (inlining copies code once per call path).
pub const MAX_INLINE_DEPTH: usize = 32;
/// The kernel's BPF_COMPLEXITY_LIMIT_INSNS / BPF_MAXINSNS for privileged loaders.
const MAX_INSNS: usize = 1_000_000;

fn off16(v: u32) -> Result<i16, EmitError> {
    i16::try_from(v).map_err(|_| EmitError::Unsupported {
        what: "BTF offset above 32767",
    })
}

/// What the prologue must provide.
#[derive(Debug, Default, Clone, Copy)]
struct Features {
    in_iface: bool,
    out_iface: bool,
    tcp_option: bool,
}

/// Per-function labels.
#[derive(Debug)]
struct Frame {
    main: bool,
    hotdrop: Label,
    tail_accept: Label,
    tail_drop: Label,
    tail_return: Label,
    policy_rule: Option<ir::Policy>,
    used: BTreeSet<u8>,
    /// position where the current tail labels started being used
    island_start: usize,
    /// where RETURN goes while an inlined chain is being emitted
    ret: Option<Label>,
    /// out-of-line rule bodies waiting for the next island
    cold: Vec<Cold>,
    /// slots those will take (estimate)
    cold_slots: usize,
}

/// The rest of a "split" rule, emitted out of line (see `PENDING_BUDGET`).
#[derive(Debug)]
struct Cold {
    label: Label,
    next: Label,
    ret: Option<Label>,
    rule: ir::Rule,
    tests: Vec<Test>,
}

impl Frame {
    fn new(b: &mut Builder, main: bool) -> Frame {
        Frame {
            main,
            hotdrop: b.label(),
            tail_accept: b.label(),
            tail_drop: b.label(),
            tail_return: b.label(),
            policy_rule: None,
            used: BTreeSet::new(),
            island_start: b.pos(),
            ret: None,
            cold: Vec::new(),
            cold_slots: 0,
        }
    }

    /// Fresh tail labels after an island was emitted.
    fn renew(&mut self, b: &mut Builder) {
        self.hotdrop = b.label();
        self.tail_accept = b.label();
        self.tail_drop = b.label();
        self.tail_return = b.label();
        self.used.clear();
        self.island_start = b.pos();
    }
}

/// The verifier walks a chain depth first and keeps, for each rule with several exits, one
/// branch pending until the end of the walk; more than 8192 pending branches fail the load
/// ("The sequence of 8193 jumps is too complex"). Past this estimate, rules with several
/// tests are compiled branch free ("combined"): one conditional jump to the next rule and one
/// to hotdrop, so a terminal rule leaves nothing pending. Combined rules cost more per packet
/// (every test runs), so they are only used past the budget.
const PENDING_BUDGET: usize = 7500;

/// The test a split rule checks inline: the first test (tests are sorted, most selective
/// first) when it is pure, not constant, and a single compare.
fn lead_of(tests: &[Test]) -> Option<(usize, Test)> {
    let t = *tests.first()?;
    let single = match t {
        Test::Addr { mask, .. } => mask != 0,
        Test::Proto { .. } => true,
        Test::Port { range, .. } => range.lo == range.hi,
        _ => false,
    };
    (single && constant(&t).is_none()).then_some((0, t))
}

/// Can `rule_combined` compile these tests, and is it worth it (more than one exit)?
fn combinable(tests: &[Test]) -> bool {
    let ok = tests.iter().all(|t| {
        matches!(
            t,
            Test::Addr { .. }
                | Test::Proto { .. }
                | Test::Frag { .. }
                | Test::Port { .. }
                | Test::Flags { .. }
                | Test::Icmp { .. }
                | Test::Iface { .. }
                | Test::Range { .. }
                | Test::Guard { .. }
        )
    });
    let live = tests.iter().filter(|t| constant(t).is_none()).count();
    ok && live >= 2
}

/// Rules jump forward to shared tails (count + verdict, hotdrop) at most this many slots
/// away; past it the tails are repeated in an "island" the rules' fall-through path skips
/// with one `goto`, so that no jump exceeds the 16-bit offset of BPF jumps.
const ISLAND: usize = 16_000;

/// One test of a rule after lowering; `Guard`s are the hotdrop barriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    Addr {
        field: i16,
        addr: u32,
        mask: u32,
        invert: bool,
    },
    Iface {
        base: i16,
        name: [u8; 16],
        mask: [u8; 16],
        invert: bool,
    },
    Proto {
        proto: u8,
        invert: bool,
    },
    Frag {
        invert: bool,
    },
    Port {
        field: i16,
        range: PortRange,
        invert: bool,
    },
    Flags {
        mask: u8,
        cmp: u8,
        invert: bool,
    },
    Icmp {
        icmp_type: u8,
        min: u8,
        max: u8,
        invert: bool,
    },
    Multiport(ir::MultiportMatch),
    Range {
        field: i16,
        lo: u32,
        hi: u32,
        invert: bool,
    },
    TcpOption {
        kind: u8,
        invert: bool,
    },
    /// Non-first fragment: no match; fewer than `need` bytes: hotdrop; `frag1_drops`: a
    /// fragment at offset 1 hotdrops (tcp).
    Guard {
        need: i32,
        frag1_drops: bool,
    },
    /// tcp options unreadable or data offset below 5: hotdrop.
    OptGuard,
}

impl Test {
    /// Lower is tested earlier within a run of pure tests.
    fn rank(&self) -> u32 {
        match self {
            Test::Addr { mask, .. } if *mask == u32::MAX => 0,
            Test::Addr { .. } => 1,
            Test::Range { .. } => 2,
            Test::Port { range, .. } if range.lo == range.hi => 3,
            Test::Iface { .. } => 4,
            Test::Multiport(_) => 5,
            Test::Port { .. } => 6,
            Test::Icmp { .. } => 6,
            Test::Flags { .. } => 7,
            Test::Proto { .. } => 8,
            Test::Frag { .. } => 9,
            Test::TcpOption { .. } => 10,
            Test::Guard { .. } | Test::OptGuard => u32::MAX,
        }
    }
}

/// The result of a test that does not depend on the packet, if so.
fn constant(t: &Test) -> Option<bool> {
    match *t {
        Test::Addr {
            addr,
            mask: 0,
            invert,
            ..
        } => Some((addr != 0) == invert),
        Test::Iface { mask, invert, .. } if mask == [0; 16] => Some(!invert),
        Test::Icmp {
            icmp_type: 0xff,
            invert,
            ..
        } => Some(!invert),
        Test::Icmp {
            min, max, invert, ..
        } if min > max => Some(invert),
        Test::Port { range, invert, .. } if range.lo > range.hi => Some(invert),
        Test::Port { range, invert, .. } if range.is_any() => Some(!invert),
        Test::Range { lo, hi, invert, .. } if lo > hi => Some(invert),
        Test::Range {
            lo: 0,
            hi: u32::MAX,
            invert,
            ..
        } => Some(!invert),
        Test::Flags {
            mask: 0,
            cmp,
            invert,
        } => Some((cmp == 0) != invert),
        Test::Multiport(m) => {
            let items = m.items();
            if items.iter().all(|(lo, hi)| lo > hi) {
                Some(m.invert)
            } else if items.iter().any(|(lo, hi)| *lo == 0 && *hi == 0xffff) {
                Some(!m.invert)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn addr_word(a: std::net::Ipv4Addr) -> u32 {
    // The record holds the address bytes as loaded from the packet (native load of network
    // order bytes); compare against the same representation.
    u32::from_ne_bytes(a.octets())
}

/// Lower a rule's matches into tests, in the kernel's order, then sort each run of pure tests
/// The port tests of a tcp or udp match: source, then destination.
fn push_ports(out: &mut Vec<Test>, sport: (PortRange, bool), dport: (PortRange, bool)) {
    for (field, (range, invert)) in [(rec::SPORT, sport), (rec::DPORT, dport)] {
        out.push(Test::Port {
            field,
            range,
            invert,
        });
    }
}

/// between barriers by selectivity.
fn lower(matches: &[Match]) -> Result<Vec<Test>, EmitError> {
    let mut out: Vec<Test> = Vec::new();
    for m in matches {
        match *m {
            Match::Ipv4Src { addr, mask, invert } => out.push(Test::Addr {
                field: rec::SADDR,
                addr: addr_word(addr),
                mask: addr_word(mask),
                invert,
            }),
            Match::Ipv4Dst { addr, mask, invert } => out.push(Test::Addr {
                field: rec::DADDR,
                addr: addr_word(addr),
                mask: addr_word(mask),
                invert,
            }),
            Match::InIface(i) => out.push(Test::Iface {
                base: rec::IN_NAME,
                name: i.name,
                mask: i.mask,
                invert: i.invert,
            }),
            Match::OutIface(i) => out.push(Test::Iface {
                base: rec::OUT_NAME,
                name: i.name,
                mask: i.mask,
                invert: i.invert,
            }),
            Match::Protocol { proto, invert } => {
                if proto != 0 {
                    out.push(Test::Proto { proto, invert })
                }
            }
            Match::Fragment { invert } => out.push(Test::Frag { invert }),
            Match::Tcp(t) => {
                out.push(Test::Guard {
                    need: 20,
                    frag1_drops: true,
                });
                push_ports(&mut out, (t.sport, t.inv_sport), (t.dport, t.inv_dport));
                out.push(Test::Flags {
                    mask: t.flags_mask,
                    cmp: t.flags_cmp,
                    invert: t.inv_flags,
                });
                if t.option != 0 {
                    out.push(Test::OptGuard);
                    out.push(Test::TcpOption {
                        kind: t.option,
                        invert: t.inv_option,
                    });
                }
            }
            Match::Udp(u) => {
                out.push(Test::Guard {
                    need: 8,
                    frag1_drops: false,
                });
                push_ports(&mut out, (u.sport, u.inv_sport), (u.dport, u.inv_dport));
            }
            Match::Icmp(i) => {
                out.push(Test::Guard {
                    need: 8,
                    frag1_drops: false,
                });
                {
                    out.push(Test::Icmp {
                        icmp_type: i.icmp_type,
                        min: i.code_min,
                        max: i.code_max,
                        invert: i.invert,
                    });
                }
            }
            Match::Multiport(mp) => {
                out.push(Test::Guard {
                    need: 4,
                    frag1_drops: false,
                });
                out.push(Test::Multiport(mp));
            }
            Match::IpRange(r) => {
                if let Some((lo, hi)) = r.src {
                    out.push(Test::Range {
                        field: rec::SADDR,
                        lo: u32::from(lo),
                        hi: u32::from(hi),
                        invert: r.inv_src,
                    });
                }
                if let Some((lo, hi)) = r.dst {
                    out.push(Test::Range {
                        field: rec::DADDR,
                        lo: u32::from(lo),
                        hi: u32::from(hi),
                        invert: r.inv_dst,
                    });
                }
            }
            #[allow(unreachable_patterns)]
            _ => return Err(EmitError::Unsupported { what: "match kind" }),
        }
    }
    // Stable sort inside each run between barriers.
    let mut start = 0;
    for i in 0..=out.len() {
        let barrier = i == out.len() || matches!(out[i], Test::Guard { .. } | Test::OptGuard);
        if barrier {
            out[start..i].sort_by_key(Test::rank);
            start = i + 1;
        }
    }
    Ok(out)
}

/// Chain reachability, loop detection and nesting depth (entry = 0).
fn chain_depths(p: &Program) -> Result<BTreeMap<ChainId, usize>, EmitError> {
    fn visit(
        p: &Program,
        id: ChainId,
        depth: usize,
        on_path: &mut BTreeSet<ChainId>,
        depths: &mut BTreeMap<ChainId, usize>,
    ) -> Result<(), EmitError> {
        if on_path.contains(&id) {
            return Err(EmitError::ChainLoop { chain: id.0 });
        }
        if depths.get(&id).is_some_and(|d| *d >= depth) {
            return Ok(());
        }
        depths.insert(id, depth);
        let chain = p.chains.get(&id).ok_or(EmitError::UnknownChain {
            from: id.0,
            to: id.0,
        })?;
        on_path.insert(id);
        for r in &chain.rules {
            if let Action::Call(c) | Action::Goto(c) = r.action {
                if !p.chains.contains_key(&c) {
                    return Err(EmitError::UnknownChain {
                        from: id.0,
                        to: c.0,
                    });
                }
                visit(p, c, depth + 1, on_path, depths)?;
            }
        }
        on_path.remove(&id);
        Ok(())
    }
    let mut depths = BTreeMap::new();
    visit(p, p.entry, 0, &mut BTreeSet::new(), &mut depths)?;
    if let Some((id, d)) = depths.iter().max_by_key(|e| *e.1) {
        if *d > MAX_INLINE_DEPTH {
            return Err(EmitError::CallDepth {
                chain: id.0,
                depth: *d,
                max: MAX_INLINE_DEPTH,
            });
        }
    }
    Ok(depths)
}

/// Guards already established while a rule's tests are emitted.
#[derive(Debug, Default, Clone, Copy)]
struct TestState {
    /// transport bytes known available (not a fragment), once a guard ran
    have: Option<i32>,
    /// the tcp option guard ran
    opt_checked: bool,
    /// some test can fail
    conditional: bool,
}

/// Shortest run of rules compiled into one lookup.
pub const MIN_RUN: usize = 4;
/// Most rule runs (maps) in one program: the verifier's MAX_USED_MAPS (64) less the counters.
pub const MAX_RUN_MAPS: usize = 63;

/// A run of consecutive rules compiled into one hash-map lookup (see "Rule runs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// index of its first rule in the chain
    start: usize,
    /// number of rules
    len: usize,
    /// index of the key test in each rule's lowered tests
    key: usize,
    /// index of the first test after the key's hotdrop barrier (the tests from there on run
    /// after the lookup)
    split: usize,
    /// `MapRef::Other(map)`
    map: u32,
}

/// Can `t` be the key of a run (one exact value, not inverted)?
fn key_test(t: &Test) -> bool {
    match *t {
        Test::Addr { mask, invert, .. } => mask == u32::MAX && !invert,
        Test::Port { range, invert, .. } => range.lo == range.hi && !invert,
        _ => false,
    }
}

/// The key value of a key test (map key bytes: the address as loaded, the port host order).
fn key_bytes(t: &Test) -> Vec<u8> {
    match *t {
        Test::Addr { addr, .. } => addr.to_ne_bytes().to_vec(),
        Test::Port { range, .. } => range.lo.to_ne_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// Do `a` and `b` agree everywhere but at `k`, where both hold a key test of the same field?
fn same_but(a: &[Test], b: &[Test], k: usize) -> bool {
    if a.len() != b.len() || k >= a.len() || !key_test(&a[k]) || !key_test(&b[k]) {
        return false;
    }
    let same_field = match (a[k], b[k]) {
        (Test::Addr { field: f, .. }, Test::Addr { field: g, .. }) => f == g,
        (Test::Port { field: f, .. }, Test::Port { field: g, .. }) => f == g,
        _ => false,
    };
    same_field
        && a.iter()
            .zip(b)
            .enumerate()
            .all(|(i, (x, y))| i == k || x == y)
}

/// Rules after which evaluation may continue with the next rule (then a later rule of the run
/// with the same key would be evaluated too, so such runs hold distinct keys).
fn continues_after(a: Action) -> bool {
    matches!(a, Action::Call(_) | Action::Continue)
}

/// Runs of at least `MIN_RUN` consecutive rules with the same action and the same tests but
/// one key test (same position, same field): (start, length, key test index), ascending.
/// The IR is unchanged; only the code generator sees runs.
fn find_runs(rules: &[ir::Rule], tests: &[Vec<Test>]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rules.len() {
        let mut best = (1usize, 0usize);
        for k in (0..tests[i].len()).filter(|&k| key_test(&tests[i][k])) {
            let mut seen = std::collections::HashSet::new();
            seen.insert(key_bytes(&tests[i][k]));
            let mut j = i + 1;
            while j < rules.len()
                && rules[j].action == rules[i].action
                && same_but(&tests[i], &tests[j], k)
            {
                if !seen.insert(key_bytes(&tests[j][k])) && continues_after(rules[i].action) {
                    break;
                }
                j += 1;
            }
            if j - i > best.0 {
                best = (j - i, k);
            }
        }
        if best.0 >= MIN_RUN {
            out.push((i, best.0, best.1));
            i += best.0;
        } else {
            i += 1;
        }
    }
    out
}

/// The hash map of a run: key -> counter slot of the first rule with that key.
fn run_map(rules: &[ir::Rule], tests: &[Vec<Test>], key: usize) -> MapSpec {
    let mut seen = std::collections::HashSet::new();
    let mut entries = Vec::new();
    for (r, t) in rules.iter().zip(tests) {
        let k = key_bytes(&t[key]);
        if seen.insert(k.clone()) {
            entries.push((k, r.counter.to_ne_bytes().to_vec()));
        }
    }
    MapSpec {
        key_size: if matches!(tests[0][key], Test::Addr { .. }) {
            4
        } else {
            2
        },
        value_size: 4,
        entries,
    }
}

struct Gen<'a> {
    b: Builder,
    layout: &'a KernelLayout,
    chain_labels: BTreeMap<ChainId, Label>,
    count_fn: Label,
    called: BTreeSet<ChainId>,
    /// estimate of the branches the verifier keeps pending while it walks the chains
    pending: usize,
    budget: usize,
    split: bool,
    access: PacketAccess,
    force_slow: bool,
    prog: &'a Program,
    lowered: &'a BTreeMap<ChainId, Vec<Vec<Test>>>,
    /// rule runs of each chain, ascending by start
    runs: &'a BTreeMap<ChainId, Vec<Run>>,
    /// the next `set_key` is skipped: a run stored the slot it looked up in KEY already
    dyn_key: bool,
    inline: BTreeSet<ChainId>,
    /// per chain: does its code, inlined, reach the caller's continuation (see `reaches_ret`)
    returns: BTreeMap<ChainId, bool>,
    /// `next` labels bound after a rule that does not continue: nothing may jump there
    dead_ends: Vec<Label>,
    /// continuations of inlined calls that `reaches_ret` promised some jump would reach
    promised: Vec<Label>,
}

/// Code generation knobs (the defaults are what `compile` uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Pending-branch estimate past which multi-test rules are compiled branch free
    /// (see `PENDING_BUDGET`); 0 compiles every such rule branch free (used by tests).
    pub pending_budget: usize,
    /// Compile multi-test rules as a lead test inline + the rest out of line (default);
    /// false keeps them as plain branches (used by tests).
    pub split: bool,
    /// How headers are read (see [`PacketAccess`]); the daemon takes the kernel probe's choice.
    pub access: PacketAccess,
    /// With [`PacketAccess::Cast`], take the dynptr fallback even for linear headers (tests:
    /// test runs only make linear packets, this exercises the fallback on them).
    pub force_slow_path: bool,
    /// Compile runs of rules that differ only in one exact key into one hash-map lookup (see
    /// "Rule runs"); only [`compile_output`] honours it, as only it returns the maps.
    pub runs: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            pending_budget: PENDING_BUDGET,
            split: true,
            access: PacketAccess::Dynptr,
            force_slow_path: false,
            runs: true,
        }
    }
}

/// A compiled program and the lookup maps it refers to (`MapRef::Other(i)` = `maps[i]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// the program
    pub code: Compiled,
    /// hash maps of the rule runs, to create and fill before loading
    pub maps: Vec<MapSpec>,
}

/// Compile `p` for the running kernel described by `layout`, without rule runs (the program
/// refers to no map but the counters).
pub fn compile(p: &Program, layout: &KernelLayout) -> Result<Compiled, EmitError> {
    compile_with(p, layout, Options::default())
}

/// [`compile`] with explicit [`Options`]; rule runs are never formed here (`opts.runs` is
/// ignored), since a `Compiled` alone cannot carry their maps.
pub fn compile_with(
    p: &Program,
    layout: &KernelLayout,
    opts: Options,
) -> Result<Compiled, EmitError> {
    Ok(compile_output(
        p,
        layout,
        Options {
            runs: false,
            ..opts
        },
    )?
    .code)
}

/// Compile `p` with its rule-run lookup maps (runs formed when `opts.runs`).
pub fn compile_output(
    p: &Program,
    layout: &KernelLayout,
    opts: Options,
) -> Result<Output, EmitError> {
    if p.family != ir::Family::Ipv4 {
        return Err(EmitError::Unsupported {
            what: "IPv6 programs",
        });
    }
    let depths = chain_depths(p)?;
    let mut feat = Features::default();
    let mut lowered: BTreeMap<ChainId, Vec<Vec<Test>>> = BTreeMap::new();
    for id in depths.keys() {
        let chain = &p.chains[id];
        let mut rules = Vec::with_capacity(chain.rules.len());
        for r in &chain.rules {
            let t = lower(&r.matches)?;
            for x in &t {
                match x {
                    Test::Iface { base, .. } if *base == rec::IN_NAME => feat.in_iface = true,
                    Test::Iface { .. } => feat.out_iface = true,
                    Test::TcpOption { .. } => feat.tcp_option = true,
                    _ => {}
                }
            }
            rules.push(t);
        }
        lowered.insert(*id, rules);
    }
    // Rule runs: every chain's candidates, the longest kept when there are more than the
    // kernel lets one program use maps.
    let mut found: Vec<(ChainId, usize, usize, usize)> = Vec::new();
    if opts.runs {
        for id in depths.keys() {
            found.extend(
                find_runs(&p.chains[id].rules, &lowered[id])
                    .into_iter()
                    .map(|(start, len, key)| (*id, start, len, key)),
            );
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.2));
    found.truncate(MAX_RUN_MAPS);
    found.sort();
    let mut maps: Vec<MapSpec> = Vec::new();
    let mut runs: BTreeMap<ChainId, Vec<Run>> = BTreeMap::new();
    for (id, start, len, key) in found {
        let chain = &p.chains[&id];
        let tests = &lowered[&id][start..start + len];
        let map = u32::try_from(maps.len()).map_err(|_| EmitError::Unsupported {
            what: "more than 2^32 rule runs",
        })?;
        maps.push(run_map(&chain.rules[start..start + len], tests, key));
        let split = (key + 1..tests[0].len())
            .find(|&i| matches!(tests[0][i], Test::Guard { .. } | Test::OptGuard))
            .unwrap_or(tests[0].len());
        runs.entry(id).or_default().push(Run {
            start,
            len,
            key,
            split,
            map,
        });
    }

    let mut b = Builder::new();
    b.define_kfunc(KFUNC_DYNPTR_FROM_SKB, layout.kfunc_dynptr_from_skb);
    b.define_kfunc(KFUNC_DYNPTR_SLICE, layout.kfunc_dynptr_slice);
    b.define_kfunc(KFUNC_RDONLY_CAST, layout.kfunc_rdonly_cast);
    let count_fn = b.label();
    let mut chain_labels = BTreeMap::new();
    for id in depths.keys() {
        if *id != p.entry {
            chain_labels.insert(*id, b.label());
        }
    }
    let mut g = Gen {
        b,
        layout,
        chain_labels,
        count_fn,
        called: BTreeSet::new(),
        pending: 0,
        budget: opts.pending_budget,
        split: opts.split,
        access: opts.access,
        force_slow: opts.force_slow_path,
        prog: p,
        lowered: &lowered,
        runs: &runs,
        dyn_key: false,
        inline: depths
            .iter()
            .filter(|(_, d)| **d > MAX_CHAIN_DEPTH)
            .map(|(c, _)| *c)
            .collect(),
        returns: BTreeMap::new(),
        dead_ends: Vec::new(),
        promised: Vec::new(),
    };
    // deepest first: an inlined chain only refers to chains deeper than itself
    let mut by_depth: Vec<(usize, ChainId)> = depths.iter().map(|(c, d)| (*d, *c)).collect();
    by_depth.sort_by(|a, b| b.cmp(a));
    for (_, c) in by_depth {
        let r = g.reaches_ret(c)?;
        g.returns.insert(c, r);
    }

    // main
    g.b.symbol("main");
    let mut frame = Frame::new(&mut g.b, true);
    g.prologue(feat)?;
    frame.policy_rule = Some(p.policy);
    let falls_off = g.chain_body(p.entry, &mut frame)?;
    if falls_off {
        g.b.set_origin(Some(p.policy.counter));
        g.policy_inline(&mut frame)?;
        g.b.set_origin(None);
    }
    g.cold_blocks(&mut frame)?;
    g.tails(&frame)?;

    // user chains, each once, only those a reachable call site refers to
    let mut done = BTreeSet::new();
    while let Some(id) = g.called.iter().find(|c| !done.contains(*c)).copied() {
        done.insert(id);
        let chain = &p.chains[&id];
        let label = g.chain_labels[&id];
        g.b.bind(label)?;
        g.b.symbol(format!("chain_{}_{}", id.0, chain.name));
        g.b.emit(mov64(Reg::R6, Src::Reg(Reg::R1)));
        g.b.emit(ldx(Size::W, Reg::R7, Reg::R6, rec::SADDR));
        g.b.emit(ldx(Size::W, Reg::R8, Reg::R6, rec::DADDR));
        g.b.emit(ldx(Size::DW, Reg::R9, Reg::R6, rec::PACKED));
        let mut frame = Frame::new(&mut g.b, false);
        if g.chain_body(id, &mut frame)? {
            // Falling off the end: RETURN (not counted; front ends add a counted Return rule).
            g.b.emit(mov64(Reg::R0, Src::Imm(RET_RETURN)));
            g.b.emit(Insn::Exit);
        }
        g.cold_blocks(&mut frame)?;
        g.tails(&frame)?;
    }

    g.count_subprogram()?;
    // A label bound after a rule that does not continue sits in front of unrelated code (the
    // cold blocks, the next chain): a jump there would run that code, possibly a loop back
    // into the rule itself. And a promised continuation nothing jumps to would be unreachable
    // code, which the verifier rejects. Either means `reaches_ret` and the emission disagree.
    if g.dead_ends.iter().any(|l| g.b.is_referenced(*l)) {
        return Err(EmitError::Internal {
            what: "a jump to the end of a chain that does not continue",
        });
    }
    if g.promised.iter().any(|l| !g.b.is_referenced(*l)) {
        return Err(EmitError::Internal {
            what: "an inlined chain's continuation that nothing reaches",
        });
    }
    let c = g.b.finish()?;
    let n = c.slot_count();
    if n > MAX_INSNS {
        return Err(EmitError::TooLarge { insns: n });
    }
    Ok(Output { code: c, maps })
}

impl Gen<'_> {
    /// Emit a chain's rules; returns true when control can fall off its end.
    fn chain_body(&mut self, id: ChainId, frame: &mut Frame) -> Result<bool, EmitError> {
        let prog = self.prog;
        let chain = prog.chains.get(&id).ok_or(EmitError::UnknownChain {
            from: id.0,
            to: id.0,
        })?;
        let lowered = self.lowered.get(&id).ok_or(EmitError::UnknownChain {
            from: id.0,
            to: id.0,
        })?;
        let runs = self.runs.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let mut runs = runs.iter().peekable();
        let mut i = 0;
        while i < chain.rules.len() {
            let (rule, tests) = (&chain.rules[i], &lowered[i]);
            if self.b.pos() - frame.island_start + frame.cold_slots > ISLAND {
                let skip = self.b.label();
                self.b.ja(skip);
                self.cold_blocks(frame)?;
                self.tails(frame)?;
                self.b.bind(skip)?;
                frame.renew(&mut self.b);
            }
            let next = self.b.label();
            self.b.set_origin(Some(rule.counter));
            if let Some(run) = runs.next_if(|r| r.start == i) {
                let jumps_before = self.b.cond_jumps();
                self.rule_run(rule, tests, run, frame, next)?;
                self.pending += self.b.cond_jumps() - jumps_before;
                self.b.set_origin(None);
                self.b.bind(next)?;
                i += run.len;
                continue;
            }
            i += 1;
            let terminal = matches!(
                rule.action,
                Action::Accept | Action::Drop | Action::Return | Action::Goto(_)
            );
            let jumps_before = self.b.cond_jumps();
            // A rule with a test that never matches keeps the plain form, which emits no
            // action for it (the split and combined forms would): `reaches_ret` relies on it.
            let never = tests.iter().any(|t| constant(t) == Some(false));
            let splittable =
                !never && lead_of(tests).is_some() && (combinable(tests) || tests.len() == 1);
            let continues = if self.split && splittable && self.pending < self.budget {
                // the out-of-line part waits (one branch) while the rest of the chain is walked
                self.pending += 1;
                self.rule_split(rule, tests, frame, next)?
            } else {
                let c = if !never && combinable(tests) && self.pending >= self.budget {
                    self.rule_combined(rule, tests, frame, next)?
                } else {
                    self.rule(rule, tests, frame, next)?
                };
                let jumps = self.b.cond_jumps() - jumps_before;
                self.pending += if terminal {
                    jumps.saturating_sub(1)
                } else {
                    jumps
                };
                c
            };
            self.b.set_origin(None);
            self.b.bind(next)?;
            if !continues {
                // an unconditional terminal rule: what follows is unreachable
                self.dead_ends.push(next);
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn ja_tail(&mut self, frame: &mut Frame, which: u8) {
        frame.used.insert(which);
        let l = match which {
            0 => frame.tail_drop,
            1 => frame.tail_accept,
            _ => frame.tail_return,
        };
        self.b.ja(l);
    }

    /// The policy (main only): count its slot and return its verdict through a tail.
    fn policy_inline(&mut self, frame: &mut Frame) -> Result<(), EmitError> {
        let policy = frame.policy_rule.ok_or(EmitError::Unsupported {
            what: "RETURN outside a program's main chain",
        })?;
        self.set_key(policy.counter);
        match policy.verdict {
            ir::Verdict::Accept => self.ja_tail(frame, 1),
            ir::Verdict::Drop => self.ja_tail(frame, 0),
        }
        Ok(())
    }

    /// `count(slot)` inline: r1 = slot, r2 = skb->len, call.
    fn count_inline(&mut self, slot: u32) {
        self.set_key(slot);
        self.load_key();
        self.b.emit(ldx(Size::W, Reg::R2, Reg::R6, rec::LEN));
        self.b.call_local(self.count_fn);
    }

    /// Record the counter slot for `count` in the record's KEY field, as slot + 1 (never a
    /// stored constant 0). Passing it through the stack, not as a constant in r1, keeps the
    /// key unknown to the verifier: it does not make it precise for the array lookup, so the
    /// shared tails and `count` are verified once instead of once per rule.
    fn set_key(&mut self, slot: u32) {
        if std::mem::replace(&mut self.dyn_key, false) {
            return;
        }
        self.b
            .emit(st(Size::W, Reg::R6, rec::KEY, slot.wrapping_add(1) as i32));
    }

    /// r1 = the counter slot recorded by `set_key`.
    fn load_key(&mut self) {
        self.b.emit(ldx(Size::W, Reg::R1, Reg::R6, rec::KEY));
        self.b.emit(alu32(AluOp::Sub, Reg::R1, Src::Imm(1)));
    }

    /// Emit one rule; returns true when control can continue after it (at `next`).
    fn rule(
        &mut self,
        rule: &ir::Rule,
        tests: &[Test],
        frame: &mut Frame,
        next: Label,
    ) -> Result<bool, EmitError> {
        let mut st = TestState::default();
        if !self.tests_inline(tests, frame, next, &mut st)? {
            return Ok(true);
        }
        let continues = self.action(rule, frame, next)?;
        Ok(st.conditional || continues)
    }

    /// Emit `tests` as branches to `next` (fail) or hotdrop; `st` carries the guards already
    /// established. Returns false when a test never matches (then it jumped to `next` and
    /// nothing after it may be emitted).
    fn tests_inline(
        &mut self,
        tests: &[Test],
        frame: &mut Frame,
        next: Label,
        st: &mut TestState,
    ) -> Result<bool, EmitError> {
        for t in tests {
            match *t {
                Test::Guard { need, frag1_drops } => {
                    if st.have.is_some_and(|h| h >= need) {
                        continue;
                    }
                    frame.used.insert(HOTDROP);
                    st.conditional = true;
                    extract(&mut self.b, Reg::R1, Field::Th);
                    if st.have.is_none() {
                        if frag1_drops {
                            self.b
                                .jmp(false, JmpOp::Jeq, Reg::R1, Src::Imm(0), frame.hotdrop);
                        }
                        self.b.jmp(false, JmpOp::Jlt, Reg::R1, Src::Imm(2), next);
                    }
                    self.b.jmp(
                        false,
                        JmpOp::Jlt,
                        Reg::R1,
                        Src::Imm(need + 2),
                        frame.hotdrop,
                    );
                    st.have = Some(need.max(st.have.unwrap_or(0)));
                }
                Test::OptGuard => {
                    if !st.opt_checked {
                        frame.used.insert(HOTDROP);
                        st.conditional = true;
                        self.b.emit(ldx(Size::B, Reg::R1, Reg::R6, rec::OPTST));
                        self.b.jmp(
                            false,
                            JmpOp::Jeq,
                            Reg::R1,
                            Src::Imm(OPT_HOTDROP),
                            frame.hotdrop,
                        );
                        st.opt_checked = true;
                    }
                }
                _ => match constant(t) {
                    Some(true) => {}
                    Some(false) => {
                        // Never matches (after the guards before it): no action code, which
                        // would be unreachable and rejected by the verifier.
                        self.b.ja(next);
                        return Ok(false);
                    }
                    None => {
                        st.conditional = true;
                        self.pure_test(t, next)?;
                    }
                },
            }
        }
        Ok(true)
    }

    /// Emit a rule run (see "Rule runs"): the tests before the key's hotdrop barrier once, the
    /// key looked up in the run's hash map (value = counter slot of the first rule with that
    /// key), then the tests after the barrier and the action of the rule found. A miss, or a
    /// failing test, continues at `next` (after the run).
    fn rule_run(
        &mut self,
        first: &ir::Rule,
        tests: &[Test],
        run: &Run,
        frame: &mut Frame,
        next: Label,
    ) -> Result<(), EmitError> {
        use Reg::*;
        let mut st = TestState::default();
        let prefix: Vec<Test> = tests[..run.split]
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != run.key)
            .map(|(_, t)| *t)
            .collect();
        if !self.tests_inline(&prefix, frame, next, &mut st)? {
            return Ok(());
        }
        let b = &mut self.b;
        match tests[run.key] {
            Test::Addr { field, .. } => {
                let hot = if field == rec::SADDR { R7 } else { R8 };
                b.emit(Insn::Alu {
                    wide: false,
                    op: AluOp::Mov,
                    dst: R1,
                    src: Src::Reg(hot),
                });
                b.emit(stx(Size::W, R6, rec::LKEY, R1));
            }
            Test::Port { field, .. } => {
                let f = if field == rec::SPORT {
                    Field::Sport
                } else {
                    Field::Dport
                };
                extract(b, R1, f);
                b.emit(stx(Size::H, R6, rec::LKEY, R1));
            }
            _ => {
                return Err(EmitError::Unsupported {
                    what: "rule run key kind",
                })
            }
        }
        b.ld_map(R1, MapRef::Other(run.map));
        b.emit(mov64(R2, Src::Reg(R6)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(rec::LKEY))));
        b.call_helper(HELPER_MAP_LOOKUP_ELEM);
        b.jmp(true, JmpOp::Jeq, R0, Src::Imm(0), next);
        // KEY = slot + 1, as `set_key` would store it
        b.emit(ldx(Size::W, R1, R0, 0));
        b.emit(alu32(AluOp::Add, R1, Src::Imm(1)));
        b.emit(stx(Size::W, R6, rec::KEY, R1));
        if !self.tests_inline(&tests[run.split..], frame, next, &mut st)? {
            return Ok(());
        }
        self.dyn_key = true;
        self.action(first, frame, next)?;
        if self.dyn_key {
            return Err(EmitError::Unsupported {
                what: "rule run action that does not count",
            });
        }
        Ok(())
    }

    /// Emit a rule branch free (see `PENDING_BUDGET`): r0 accumulates "fails" (non-zero),
    /// r5 "hotdrop"; then one jump to `next`, one to hotdrop, the action.
    fn rule_combined(
        &mut self,
        rule: &ir::Rule,
        tests: &[Test],
        frame: &mut Frame,
        next: Label,
    ) -> Result<bool, EmitError> {
        use Reg::*;
        self.b.emit(mov64(R0, Src::Imm(0)));
        let mut guard = false;
        for t in tests {
            match *t {
                Test::Guard { need, .. } => {
                    let k = match need {
                        20 => 0,
                        8 => 1,
                        _ => 2,
                    };
                    let b = &mut self.b;
                    b.emit(mov64(R2, Src::Reg(R9)));
                    b.emit(alu64(AluOp::Rsh, R2, Src::Imm(packed::GUARD_SHIFT + 2 * k)));
                    b.emit(alu64(AluOp::And, R2, Src::Imm(3)));
                    b.emit(mov64(R3, Src::Reg(R0)));
                    b.emit(alu64(AluOp::Sub, R3, Src::Imm(1)));
                    b.emit(alu64(AluOp::Rsh, R3, Src::Imm(63))); // alive: nothing failed yet
                    b.emit(mov64(R4, Src::Reg(R2)));
                    b.emit(alu64(AluOp::Rsh, R4, Src::Imm(1)));
                    b.emit(alu64(AluOp::And, R4, Src::Reg(R3)));
                    if guard {
                        b.emit(alu64(AluOp::Or, R5, Src::Reg(R4)));
                    } else {
                        b.emit(mov64(R5, Src::Reg(R4)));
                    }
                    b.emit(alu64(AluOp::Or, R0, Src::Reg(R2)));
                    guard = true;
                }
                _ => match constant(t) {
                    Some(true) => {}
                    Some(false) => self.b.emit(alu64(AluOp::Or, R0, Src::Imm(1))),
                    None => {
                        self.residue(t)?;
                        self.b.emit(alu64(AluOp::Or, R0, Src::Reg(R1)));
                    }
                },
            }
        }
        if guard {
            // a hotdrop is not a "no match"
            self.b.emit(mov64(R1, Src::Reg(R5)));
            self.b.emit(alu64(AluOp::Sub, R1, Src::Imm(1)));
            self.b.emit(alu64(AluOp::And, R0, Src::Reg(R1)));
        }
        self.b.jmp(true, JmpOp::Jne, R0, Src::Imm(0), next);
        if guard {
            frame.used.insert(HOTDROP);
            self.b.jmp(true, JmpOp::Jne, R5, Src::Imm(0), frame.hotdrop);
        }
        let continues = self.action(rule, frame, next)?;
        let _ = continues;
        Ok(true)
    }

    /// r1 = non-zero when pure test `t` fails (branch free; r2-r4 scratch).
    fn residue(&mut self, t: &Test) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        // r1 = (r1 == 0), for r1 < 2^63
        let is_zero = |b: &mut Builder| {
            b.emit(alu64(AluOp::Sub, R1, Src::Imm(1)));
            b.emit(alu64(AluOp::Rsh, R1, Src::Imm(63)));
        };
        // r1 = r1 outside [lo, hi] (0/1); r1 < 2^32, lo <= hi
        let outside = |b: &mut Builder, lo: u32, hi: u32| {
            if lo < 0x8000_0000 && hi - lo < 0x8000_0000 {
                b.emit(alu64(AluOp::Sub, R1, Src::Imm(lo as i32)));
                b.emit(mov64(R2, Src::Imm((hi - lo) as i32)));
            } else {
                b.emit(Insn::LdImm64 {
                    dst: R3,
                    imm: crate::insn::Imm64::Const(u64::from(lo)),
                });
                b.emit(alu64(AluOp::Sub, R1, Src::Reg(R3)));
                b.emit(Insn::LdImm64 {
                    dst: R2,
                    imm: crate::insn::Imm64::Const(u64::from(hi - lo)),
                });
            }
            b.emit(alu64(AluOp::Sub, R2, Src::Reg(R1)));
            b.emit(alu64(AluOp::Or, R2, Src::Reg(R1)));
            b.emit(alu64(AluOp::Rsh, R2, Src::Imm(63)));
            b.emit(mov64(R1, Src::Reg(R2)));
        };
        match *t {
            Test::Addr {
                field,
                addr,
                mask,
                invert,
            } => {
                let hot = if field == rec::SADDR { R7 } else { R8 };
                b.emit(Insn::Alu {
                    wide: false,
                    op: AluOp::Mov,
                    dst: R1,
                    src: Src::Reg(hot),
                });
                if mask != u32::MAX {
                    b.emit(alu32(AluOp::And, R1, Src::Imm(mask as i32)));
                }
                b.emit(alu32(AluOp::Xor, R1, Src::Imm(addr as i32)));
                if invert {
                    is_zero(b);
                }
            }
            Test::Proto { proto, invert } => {
                extract(b, R1, Field::Proto);
                b.emit(alu64(AluOp::Xor, R1, Src::Imm(i32::from(proto))));
                if invert {
                    is_zero(b);
                }
            }
            Test::Frag { invert } => {
                extract(b, R1, Field::Th);
                b.emit(alu64(AluOp::Sub, R1, Src::Imm(2)));
                b.emit(alu64(AluOp::Rsh, R1, Src::Imm(63))); // 1 = non-first fragment
                if !invert {
                    b.emit(alu64(AluOp::Xor, R1, Src::Imm(1)));
                }
            }
            Test::Port {
                field,
                range,
                invert,
            } => {
                extract(
                    b,
                    R1,
                    if field == rec::SPORT {
                        Field::Sport
                    } else {
                        Field::Dport
                    },
                );
                outside(b, u32::from(range.lo), u32::from(range.hi));
                if invert {
                    b.emit(alu64(AluOp::Xor, R1, Src::Imm(1)));
                }
            }
            Test::Flags { mask, cmp, invert } => {
                b.emit(ldx(Size::B, R1, R6, rec::FLAGS));
                b.emit(alu32(AluOp::And, R1, Src::Imm(i32::from(mask))));
                b.emit(alu32(AluOp::Xor, R1, Src::Imm(i32::from(cmp))));
                if invert {
                    is_zero(b);
                }
            }
            Test::Icmp {
                icmp_type,
                min,
                max,
                invert,
            } => {
                b.emit(ldx(Size::B, R1, R6, rec::CODE));
                outside(b, u32::from(min), u32::from(max));
                b.emit(mov64(R4, Src::Reg(R1)));
                b.emit(ldx(Size::B, R1, R6, rec::TYPE));
                b.emit(alu32(AluOp::Xor, R1, Src::Imm(i32::from(icmp_type))));
                b.emit(alu64(AluOp::Or, R1, Src::Reg(R4)));
                if invert {
                    is_zero(b);
                }
            }
            Test::Iface {
                base,
                name,
                mask,
                invert,
            } => {
                b.emit(mov64(R1, Src::Imm(0)));
                for k in 0..4usize {
                    let m = u32::from_ne_bytes([
                        mask[4 * k],
                        mask[4 * k + 1],
                        mask[4 * k + 2],
                        mask[4 * k + 3],
                    ]);
                    let n = u32::from_ne_bytes([
                        name[4 * k],
                        name[4 * k + 1],
                        name[4 * k + 2],
                        name[4 * k + 3],
                    ]);
                    if m == 0 {
                        continue;
                    }
                    b.emit(ldx(Size::W, R2, R6, base + 8 * k as i16));
                    if m != u32::MAX {
                        b.emit(alu32(AluOp::And, R2, Src::Imm(m as i32)));
                    }
                    b.emit(alu32(AluOp::Xor, R2, Src::Imm((n & m) as i32)));
                    b.emit(alu64(AluOp::Or, R1, Src::Reg(R2)));
                }
                if invert {
                    is_zero(b);
                }
            }
            Test::Range {
                field,
                lo,
                hi,
                invert,
            } => {
                let hot = if field == rec::SADDR { R7 } else { R8 };
                b.emit(Insn::Alu {
                    wide: false,
                    op: AluOp::Mov,
                    dst: R1,
                    src: Src::Reg(hot),
                });
                b.emit(Insn::End {
                    to_be: true,
                    dst: R1,
                    bits: 32,
                });
                outside(b, lo, hi);
                if invert {
                    b.emit(alu64(AluOp::Xor, R1, Src::Imm(1)));
                }
            }
            Test::Multiport(_) | Test::TcpOption { .. } | Test::Guard { .. } | Test::OptGuard => {
                return Err(EmitError::Unsupported {
                    what: "branch-free form of this test",
                });
            }
        }
        Ok(())
    }

    /// Emit one pure test: falls through when it passes, jumps to `fail` otherwise.
    fn pure_test(&mut self, t: &Test, fail: Label) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        let neq = |inv: bool| if inv { JmpOp::Jeq } else { JmpOp::Jne };
        match *t {
            Test::Addr {
                field,
                addr,
                mask,
                invert,
            } => {
                if mask == 0 {
                    // (x & 0) != addr is a constant.
                    if (addr != 0) != invert {
                        b.ja(fail);
                    }
                    return Ok(());
                }
                // From the hot register, through an ALU op that unlinks the copy from it, so
                // that the compare never refines r7/r8 (see "Register convention").
                let hot = if field == rec::SADDR { R7 } else { R8 };
                b.emit(Insn::Alu {
                    wide: false,
                    op: AluOp::Mov,
                    dst: R1,
                    src: Src::Reg(hot),
                });
                if mask == u32::MAX {
                    b.emit(alu32(AluOp::Xor, R1, Src::Imm(addr as i32)));
                    b.jmp(false, neq(invert), R1, Src::Imm(0), fail);
                } else {
                    b.emit(alu32(AluOp::And, R1, Src::Imm(mask as i32)));
                    b.jmp(false, neq(invert), R1, Src::Imm(addr as i32), fail);
                }
            }
            Test::Iface {
                base,
                name,
                mask,
                invert,
            } => {
                let words: Vec<(i16, u32, u32)> = (0..4)
                    .filter_map(|k| {
                        let m = u32::from_ne_bytes([
                            mask[4 * k],
                            mask[4 * k + 1],
                            mask[4 * k + 2],
                            mask[4 * k + 3],
                        ]);
                        let n = u32::from_ne_bytes([
                            name[4 * k],
                            name[4 * k + 1],
                            name[4 * k + 2],
                            name[4 * k + 3],
                        ]);
                        (m != 0).then_some((base + 8 * k as i16, n & m, m))
                    })
                    .collect();
                if words.is_empty() {
                    // all-zero mask: always equal
                    if invert {
                        b.ja(fail);
                    }
                    return Ok(());
                }
                let differ = if invert { b.label() } else { fail };
                for (off, n, m) in &words {
                    b.emit(ldx(Size::W, R1, R6, *off));
                    if *m != u32::MAX {
                        b.emit(alu32(AluOp::And, R1, Src::Imm(*m as i32)));
                    }
                    b.jmp(false, JmpOp::Jne, R1, Src::Imm(*n as i32), differ);
                }
                if invert {
                    b.ja(fail);
                    b.bind(differ)?;
                }
            }
            Test::Proto { proto, invert } => {
                extract(b, R1, Field::Proto);
                b.jmp(false, neq(invert), R1, Src::Imm(i32::from(proto)), fail);
            }
            Test::Frag { invert } => {
                extract(b, R1, Field::Th);
                let op = if invert { JmpOp::Jlt } else { JmpOp::Jge };
                b.jmp(false, op, R1, Src::Imm(2), fail);
            }
            Test::Port {
                field,
                range,
                invert,
            } => {
                extract(
                    b,
                    R1,
                    if field == rec::SPORT {
                        Field::Sport
                    } else {
                        Field::Dport
                    },
                );
                range_test(
                    b,
                    R1,
                    u32::from(range.lo),
                    u32::from(range.hi),
                    0xffff,
                    invert,
                    fail,
                )?;
            }
            Test::Flags { mask, cmp, invert } => {
                b.emit(ldx(Size::B, R1, R6, rec::FLAGS));
                b.emit(alu32(AluOp::And, R1, Src::Imm(i32::from(mask))));
                b.jmp(false, neq(invert), R1, Src::Imm(i32::from(cmp)), fail);
            }
            Test::Icmp {
                icmp_type,
                min,
                max,
                invert,
            } => {
                if icmp_type == 0xff {
                    if invert {
                        b.ja(fail);
                    }
                    return Ok(());
                }
                let miss = if invert { b.label() } else { fail };
                b.emit(ldx(Size::B, R1, R6, rec::TYPE));
                b.jmp(false, JmpOp::Jne, R1, Src::Imm(i32::from(icmp_type)), miss);
                b.emit(ldx(Size::B, R1, R6, rec::CODE));
                if min > max {
                    b.ja(miss);
                } else {
                    if min > 0 {
                        b.jmp(false, JmpOp::Jlt, R1, Src::Imm(i32::from(min)), miss);
                    }
                    if max < 0xff {
                        b.jmp(false, JmpOp::Jgt, R1, Src::Imm(i32::from(max)), miss);
                    }
                }
                if invert {
                    b.ja(fail);
                    b.bind(miss)?;
                }
            }
            Test::Multiport(m) => {
                let hit = if m.invert { fail } else { b.label() };
                let regs: &[(Reg, i16)] = match m.mode {
                    MultiportMode::Source => &[(R2, rec::SPORT)],
                    MultiportMode::Destination => &[(R3, rec::DPORT)],
                    MultiportMode::Either => &[(R2, rec::SPORT), (R3, rec::DPORT)],
                };
                for (r, off) in regs {
                    extract(
                        b,
                        *r,
                        if *off == rec::SPORT {
                            Field::Sport
                        } else {
                            Field::Dport
                        },
                    );
                }
                for (lo, hi) in m.items() {
                    for (r, _) in regs {
                        if lo == hi {
                            b.jmp(false, JmpOp::Jeq, *r, Src::Imm(i32::from(lo)), hit);
                        } else if lo < hi {
                            let skip = b.label();
                            if lo > 0 {
                                b.jmp(false, JmpOp::Jlt, *r, Src::Imm(i32::from(lo)), skip);
                            }
                            b.jmp(false, JmpOp::Jle, *r, Src::Imm(i32::from(hi)), hit);
                            b.bind(skip)?;
                        }
                    }
                }
                if !m.invert {
                    b.ja(fail);
                    b.bind(hit)?;
                }
            }
            Test::Range {
                field,
                lo,
                hi,
                invert,
            } => {
                b.emit(ldx(Size::W, R1, R6, field));
                b.emit(Insn::End {
                    to_be: true,
                    dst: R1,
                    bits: 32,
                }); // host order
                range_test(b, R1, lo, hi, u32::MAX, invert, fail)?;
            }
            Test::TcpOption { kind, invert } => {
                let word = i16::from(kind / 64) * 8;
                b.emit(ldx(Size::DW, R1, R6, rec::OPTMAP + word));
                b.emit(alu64(AluOp::Rsh, R1, Src::Imm(i32::from(kind % 64))));
                b.emit(alu64(AluOp::And, R1, Src::Imm(1)));
                let op = if invert { JmpOp::Jne } else { JmpOp::Jeq };
                b.jmp(false, op, R1, Src::Imm(0), fail);
            }
            Test::Guard { .. } | Test::OptGuard => {}
        }
        Ok(())
    }

    fn call_chain(&mut self, c: ChainId) -> Result<(), EmitError> {
        let l = *self
            .chain_labels
            .get(&c)
            .ok_or(EmitError::UnknownChain { from: c.0, to: c.0 })?;
        self.called.insert(c);
        self.b.emit(mov64(Reg::R1, Src::Reg(Reg::R6)));
        self.b.call_local(l);
        Ok(())
    }

    /// Emit the action; returns true when it can continue at `next`.
    fn action(
        &mut self,
        rule: &ir::Rule,
        frame: &mut Frame,
        next: Label,
    ) -> Result<bool, EmitError> {
        match rule.action {
            Action::Accept => {
                self.set_key(rule.counter);
                self.ja_tail(frame, 1);
            }
            Action::Drop => {
                self.set_key(rule.counter);
                self.ja_tail(frame, 0);
            }
            Action::Continue => {
                self.count_inline(rule.counter);
                return Ok(true);
            }
            Action::Return => {
                if let Some(r) = frame.ret {
                    self.count_inline(rule.counter);
                    self.b.ja(r);
                } else if frame.main {
                    self.count_inline(rule.counter);
                    self.policy_inline(frame)?;
                } else {
                    self.set_key(rule.counter);
                    self.ja_tail(frame, 2);
                }
            }
            Action::Call(c) if self.inline.contains(&c) => {
                self.count_inline(rule.counter);
                self.inline_chain(c, frame, next)?;
                // Not "is `next` referenced yet": the inlined chain's split rules jump to it
                // from cold blocks emitted later, so it is decided from the IR.
                let returns = self.returns_of(c)?;
                if returns {
                    self.promised.push(next);
                }
                return Ok(returns);
            }
            Action::Goto(c) if self.inline.contains(&c) => {
                self.count_inline(rule.counter);
                if let Some(r) = frame.ret {
                    self.inline_chain(c, frame, r)?;
                } else {
                    let r = self.b.label();
                    self.inline_chain(c, frame, r)?;
                    self.b.bind(r)?;
                    // decided from the IR: cold blocks emitted later may jump to `r`
                    if self.returns_of(c)? {
                        self.promised.push(r);
                        if frame.main {
                            self.policy_inline(frame)?;
                        } else {
                            self.b.emit(mov64(Reg::R0, Src::Imm(RET_RETURN)));
                            self.b.emit(Insn::Exit);
                        }
                    } else {
                        self.dead_ends.push(r);
                    }
                }
            }
            Action::Call(c) => {
                self.count_inline(rule.counter);
                self.call_chain(c)?;
                self.b
                    .jmp(false, JmpOp::Jeq, Reg::R0, Src::Imm(RET_RETURN), next);
                self.b.emit(Insn::Exit);
                return Ok(true);
            }
            Action::Goto(c) => {
                self.count_inline(rule.counter);
                self.call_chain(c)?;
                if frame.main {
                    let ret = self.b.label();
                    self.b
                        .jmp(false, JmpOp::Jeq, Reg::R0, Src::Imm(RET_RETURN), ret);
                    self.b.emit(Insn::Exit);
                    self.b.bind(ret)?;
                    self.policy_inline(frame)?;
                } else {
                    self.b.emit(Insn::Exit);
                }
            }
            #[allow(unreachable_patterns)]
            _ => {
                return Err(EmitError::Unsupported {
                    what: "action kind",
                })
            }
        }
        Ok(false)
    }

    /// `reaches_ret` of chain `c`, computed before any code is emitted.
    fn returns_of(&self, c: ChainId) -> Result<bool, EmitError> {
        self.returns
            .get(&c)
            .copied()
            .ok_or(EmitError::UnknownChain { from: c.0, to: c.0 })
    }

    /// Does chain `c`, inlined, ever continue in its caller (a RETURN, a goto to an inlined
    /// chain that does, or falling off its end)? Mirrors what `chain_body` emits: a rule
    /// with a never-matching test emits no action and continues; a rule with any live test
    /// or guard continues; an unconditional one continues only when its action does. The
    /// answer cannot be read off the builder while the call site is emitted: split rules'
    /// actions, RETURN included, are emitted later in cold blocks. Needs `returns` filled
    /// for the chains `c` calls (they are deeper).
    fn reaches_ret(&self, c: ChainId) -> Result<bool, EmitError> {
        let chain = self
            .prog
            .chains
            .get(&c)
            .ok_or(EmitError::UnknownChain { from: c.0, to: c.0 })?;
        let lowered = self
            .lowered
            .get(&c)
            .ok_or(EmitError::UnknownChain { from: c.0, to: c.0 })?;
        for (rule, tests) in chain.rules.iter().zip(lowered) {
            if tests.iter().any(|t| constant(t) == Some(false)) {
                continue;
            }
            let action_returns = match rule.action {
                Action::Return => return Ok(true),
                Action::Goto(d) if self.inline.contains(&d) => {
                    if self.returns_of(d)? {
                        return Ok(true);
                    }
                    false
                }
                Action::Call(d) if self.inline.contains(&d) => self.returns_of(d)?,
                Action::Call(_) | Action::Continue => true,
                _ => false,
            };
            let conditional = tests.iter().any(|t| constant(t).is_none());
            if !conditional && !action_returns {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Emit chain `c` in place (nested too deep for a subprogram): its RETURN, and falling
    /// off its end, go to `ret`. Returns true when control can fall off the end (then it
    /// jumps to `ret`).
    fn inline_chain(
        &mut self,
        c: ChainId,
        frame: &mut Frame,
        ret: Label,
    ) -> Result<bool, EmitError> {
        let saved = frame.ret;
        frame.ret = Some(ret);
        let falls = self.chain_body(c, frame)?;
        if falls {
            self.b.ja(ret);
        }
        frame.ret = saved;
        Ok(falls)
    }

    /// Out-of-line bodies of split rules: the combined rest of the rule, then back to `next`.
    fn cold_blocks(&mut self, frame: &mut Frame) -> Result<(), EmitError> {
        let saved = frame.ret;
        // a cold block may inline a chain whose split rules add cold blocks: drain until empty
        while !frame.cold.is_empty() {
            let cold = std::mem::take(&mut frame.cold);
            frame.cold_slots = 0;
            for c in cold {
                frame.ret = c.ret;
                self.b.bind(c.label)?;
                self.b.set_origin(Some(c.rule.counter));
                if c.tests.is_empty() {
                    self.action(&c.rule, frame, c.next)?;
                } else {
                    self.rule_combined(&c.rule, &c.tests, frame, c.next)?;
                }
                // only Continue falls through after its action
                if matches!(c.rule.action, Action::Continue) {
                    self.b.ja(c.next);
                }
                self.b.set_origin(None);
            }
        }
        frame.ret = saved;
        Ok(())
    }

    /// Split rule: the lead test inline, jumping out of line when it passes; the rest of the
    /// rule (branch free) and its action out of line. A packet that fails the lead costs
    /// the lead only, and the verifier keeps one branch pending (the out-of-line part).
    fn rule_split(
        &mut self,
        rule: &ir::Rule,
        tests: &[Test],
        frame: &mut Frame,
        _next: Label,
    ) -> Result<bool, EmitError> {
        use Reg::*;
        let (i, lead) = lead_of(tests).ok_or(EmitError::Unsupported {
            what: "split rule without a lead test",
        })?;
        let cold = self.b.label();
        let b = &mut self.b;
        let eq = |inv: bool| if inv { JmpOp::Jne } else { JmpOp::Jeq };
        match lead {
            Test::Addr {
                field,
                addr,
                mask,
                invert,
            } => {
                let hot = if field == rec::SADDR { R7 } else { R8 };
                b.emit(Insn::Alu {
                    wide: false,
                    op: AluOp::Mov,
                    dst: R1,
                    src: Src::Reg(hot),
                });
                if mask == u32::MAX {
                    b.emit(alu32(AluOp::Xor, R1, Src::Imm(addr as i32)));
                    b.jmp(false, eq(invert), R1, Src::Imm(0), cold);
                } else {
                    b.emit(alu32(AluOp::And, R1, Src::Imm(mask as i32)));
                    b.jmp(false, eq(invert), R1, Src::Imm(addr as i32), cold);
                }
            }
            Test::Proto { proto, invert } => {
                extract(b, R1, Field::Proto);
                b.jmp(false, eq(invert), R1, Src::Imm(i32::from(proto)), cold);
            }
            Test::Port {
                field,
                range,
                invert,
            } => {
                extract(
                    b,
                    R1,
                    if field == rec::SPORT {
                        Field::Sport
                    } else {
                        Field::Dport
                    },
                );
                b.jmp(false, eq(invert), R1, Src::Imm(i32::from(range.lo)), cold);
            }
            _ => {
                return Err(EmitError::Unsupported {
                    what: "lead test kind",
                })
            }
        }
        let mut rest = tests.to_vec();
        rest.remove(i);
        frame.cold_slots += 16 + 12 * rest.len();
        frame.cold.push(Cold {
            label: cold,
            next: _next,
            ret: frame.ret,
            rule: rule.clone(),
            tests: rest,
        });
        Ok(true)
    }

    /// Per-frame shared code: count-then-verdict tails (r1 = counter slot) and hotdrop.
    fn tails(&mut self, frame: &Frame) -> Result<(), EmitError> {
        for (which, label, code) in [
            (1u8, frame.tail_accept, 1),
            (0u8, frame.tail_drop, 0),
            (2u8, frame.tail_return, RET_RETURN),
        ] {
            self.b.bind(label)?;
            if frame.used.contains(&which) {
                self.load_key();
                self.b.emit(ldx(Size::W, Reg::R2, Reg::R6, rec::LEN));
                self.b.call_local(self.count_fn);
                self.b.emit(mov64(Reg::R0, Src::Imm(code)));
                self.b.emit(Insn::Exit);
            }
        }
        // The verifier rejects unreachable instructions: emit only what is used.
        self.b.bind(frame.hotdrop)?;
        if frame.used.contains(&HOTDROP) {
            self.b.emit(mov64(Reg::R0, Src::Imm(0)));
            self.b.emit(Insn::Exit);
        }
        Ok(())
    }

    /// `count(r1 = slot, r2 = bytes)`: packets += 1, bytes += r2 in the per-CPU counter map.
    /// Atomic adds: a softirq may run another hook's program on this CPU in the middle of a
    /// process-context OUTPUT program, so a plain load/add/store could lose an update.
    fn count_subprogram(&mut self) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        b.bind(self.count_fn)?;
        b.symbol("count");
        b.emit(stx(Size::W, R10, -8, R1));
        b.emit(mov64(R6, Src::Reg(R2)));
        b.ld_map(R1, MapRef::Counters);
        b.emit(mov64(R2, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(-8)));
        b.call_helper(HELPER_MAP_LOOKUP_ELEM);
        let out = b.label();
        b.jmp(true, JmpOp::Jeq, R0, Src::Imm(0), out);
        b.emit(mov64(R1, Src::Imm(1)));
        b.emit(Insn::Atomic {
            size: Size::DW,
            op: AtomicOp::Add { fetch: false },
            dst: R0,
            src: R1,
            off: 0,
        });
        b.emit(Insn::Atomic {
            size: Size::DW,
            op: AtomicOp::Add { fetch: false },
            dst: R0,
            src: R6,
            off: 8,
        });
        b.bind(out)?;
        b.emit(mov64(R0, Src::Imm(0)));
        b.emit(Insn::Exit);
        Ok(())
    }
}

/// Fields packed in r9.
#[derive(Debug, Clone, Copy)]
enum Field {
    Dport,
    Sport,
    Proto,
    Th,
}

/// `dst` = a field of r9, through ALU operations (so `dst` is not linked to r9).
fn extract(b: &mut Builder, dst: Reg, f: Field) {
    match f {
        Field::Dport => {
            b.emit(Insn::Alu {
                wide: false,
                op: AluOp::Mov,
                dst,
                src: Src::Reg(Reg::R9),
            });
            b.emit(alu32(AluOp::And, dst, Src::Imm(0xffff)));
        }
        Field::Sport => {
            b.emit(Insn::Alu {
                wide: false,
                op: AluOp::Mov,
                dst,
                src: Src::Reg(Reg::R9),
            });
            b.emit(alu32(AluOp::Rsh, dst, Src::Imm(packed::SPORT_SHIFT)));
        }
        Field::Proto => {
            b.emit(mov64(dst, Src::Reg(Reg::R9)));
            b.emit(alu64(AluOp::Rsh, dst, Src::Imm(packed::PROTO_SHIFT)));
            b.emit(alu64(AluOp::And, dst, Src::Imm(0xff)));
        }
        Field::Th => {
            b.emit(mov64(dst, Src::Reg(Reg::R9)));
            b.emit(alu64(AluOp::Rsh, dst, Src::Imm(packed::TH_SHIFT)));
            b.emit(alu64(AluOp::And, dst, Src::Imm(0xff)));
        }
    }
}

/// `lo <= r <= hi` (unsigned 32-bit), inverted by `invert`; `max` is the field's largest value
/// (bounds equal to 0 or `max` need no compare). Falls through on pass.
fn range_test(
    b: &mut Builder,
    r: Reg,
    lo: u32,
    hi: u32,
    max: u32,
    invert: bool,
    fail: Label,
) -> Result<(), EmitError> {
    if lo > hi {
        // empty range: never inside
        if !invert {
            b.ja(fail);
        }
        return Ok(());
    }
    if !invert {
        if lo > 0 {
            b.jmp(false, JmpOp::Jlt, r, Src::Imm(lo as i32), fail);
        }
        if hi < max {
            b.jmp(false, JmpOp::Jgt, r, Src::Imm(hi as i32), fail);
        }
    } else {
        match (lo > 0, hi < max) {
            (false, false) => b.ja(fail),
            (true, false) => b.jmp(false, JmpOp::Jge, r, Src::Imm(lo as i32), fail),
            (false, true) => b.jmp(false, JmpOp::Jle, r, Src::Imm(hi as i32), fail),
            (true, true) => {
                let pass = b.label();
                b.jmp(false, JmpOp::Jlt, r, Src::Imm(lo as i32), pass);
                b.jmp(false, JmpOp::Jle, r, Src::Imm(hi as i32), fail);
                b.bind(pass)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn;
    use crate::ir::*;
    use std::net::Ipv4Addr;

    fn addr_rule(i: u32, action: Action) -> Rule {
        Rule {
            matches: vec![Match::Ipv4Src {
                addr: Ipv4Addr::from(0x0a01_0000 + i),
                mask: Ipv4Addr::BROADCAST,
                invert: false,
            }],
            action,
            counter: i,
        }
    }

    fn chain_of(n: u32) -> Program {
        let mut rules: Vec<Rule> = (0..n).map(|i| addr_rule(i, Action::Drop)).collect();
        rules.push(Rule {
            matches: vec![],
            action: Action::Accept,
            counter: n,
        });
        Program::single(
            Hook::LocalIn,
            rules,
            Policy {
                verdict: Verdict::Drop,
                counter: n + 1,
            },
        )
    }

    fn rule_slots(c: &Compiled, slot: u32) -> usize {
        c.origins.iter().filter(|o| o.1 == slot).count()
    }

    #[test]
    fn address_rules_are_small() {
        let c = compile(&chain_of(1000), &KernelLayout::example()).expect("compile");
        for r in 0..1000 {
            assert_eq!(
                rule_slots(&c, r),
                5,
                "rule {r}: w1 = w7; w1 ^= a; if w1 != 0; w1 = slot; goto tail"
            );
        }
        assert!(c.slot_count() < 1000 * 5 + 200);
        // the program round-trips through the kernel encoding
        let bytes = c.bytes(&|_| 7);
        assert_eq!(insn::decode(&bytes).expect("decode"), {
            let mut v = c.insns.clone();
            for (slot, _) in &c.map_fixups {
                let idx = c
                    .insns
                    .iter()
                    .scan(0usize, |pc, i| {
                        let at = *pc;
                        *pc += i.slots();
                        Some(at)
                    })
                    .position(|at| at == *slot)
                    .expect("slot");
                v[idx] = Insn::LdImm64 {
                    dst: Reg::R1,
                    imm: insn::Imm64::MapFd(7),
                };
            }
            v
        });
    }

    #[test]
    fn rules_never_compare_long_lived_registers() {
        let mut rules = vec![
            Rule {
                matches: vec![
                    Match::Protocol {
                        proto: 6,
                        invert: false,
                    },
                    Match::Tcp(TcpMatch {
                        sport: PortRange::ANY,
                        dport: PortRange::one(22),
                        flags_mask: 0x17,
                        flags_cmp: 2,
                        option: 2,
                        inv_sport: false,
                        inv_dport: true,
                        inv_flags: false,
                        inv_option: false,
                    }),
                ],
                action: Action::Accept,
                counter: 0,
            },
            Rule {
                matches: vec![
                    Match::Ipv4Dst {
                        addr: Ipv4Addr::new(10, 0, 0, 0),
                        mask: Ipv4Addr::new(255, 0, 0, 0),
                        invert: true,
                    },
                    Match::Fragment { invert: false },
                ],
                action: Action::Continue,
                counter: 1,
            },
            Rule {
                matches: vec![Match::InIface(Iface::iptables("eth0", false))],
                action: Action::Drop,
                counter: 2,
            },
        ];
        rules.push(addr_rule(3, Action::Return));
        let p = Program::single(
            Hook::Forward,
            rules,
            Policy {
                verdict: Verdict::Accept,
                counter: 9,
            },
        );
        let c = compile(&p, &KernelLayout::example()).expect("compile");
        let mut pc = 0;
        for i in &c.insns {
            if c.origin_of(pc).is_some() {
                if let Insn::Jmp { dst, .. } = i {
                    assert!(
                        !matches!(dst, Reg::R6 | Reg::R7 | Reg::R8 | Reg::R9),
                        "pc {pc}: {i}"
                    );
                }
            }
            pc += i.slots();
        }
    }

    #[test]
    fn guards_keep_their_place() {
        let tcp = Match::Tcp(TcpMatch {
            sport: PortRange::ANY,
            dport: PortRange::one(22),
            flags_mask: 0,
            flags_cmp: 0,
            option: 0,
            inv_sport: false,
            inv_dport: false,
            inv_flags: false,
            inv_option: false,
        });
        let src = Match::Ipv4Src {
            addr: Ipv4Addr::new(10, 0, 0, 1),
            mask: Ipv4Addr::BROADCAST,
            invert: false,
        };
        let range = Match::IpRange(IpRangeMatch {
            src: Some((Ipv4Addr::new(1, 0, 0, 0), Ipv4Addr::new(2, 0, 0, 0))),
            dst: None,
            inv_src: false,
            inv_dst: false,
        });
        // pure tests before the guard are sorted (address first), the range after it stays after
        let t = lower(&[
            Match::Protocol {
                proto: 6,
                invert: false,
            },
            src,
            tcp,
            range,
        ])
        .expect("lower");
        assert!(matches!(t[0], Test::Addr { .. }));
        assert!(matches!(t[1], Test::Proto { .. }));
        assert!(matches!(
            t[2],
            Test::Guard {
                need: 20,
                frag1_drops: true
            }
        ));
        let g = t
            .iter()
            .position(|x| matches!(x, Test::Guard { .. }))
            .expect("guard");
        let r = t
            .iter()
            .position(|x| matches!(x, Test::Range { .. }))
            .expect("range");
        assert!(r > g, "iprange after tcp must stay after the tcp guard");
    }

    #[test]
    fn unconditional_terminal_rule_ends_the_chain() {
        let rules = vec![
            Rule {
                matches: vec![],
                action: Action::Accept,
                counter: 0,
            },
            addr_rule(1, Action::Drop),
        ];
        let p = Program::single(
            Hook::LocalOut,
            rules,
            Policy {
                verdict: Verdict::Drop,
                counter: 2,
            },
        );
        let c = compile(&p, &KernelLayout::example()).expect("compile");
        assert_eq!(
            rule_slots(&c, 1),
            0,
            "rule after an unconditional ACCEPT is unreachable"
        );
        assert_eq!(rule_slots(&c, 2), 0, "so is the policy");
        // never-matching test: no action code
        let never = Rule {
            matches: vec![Match::Ipv4Src {
                addr: Ipv4Addr::new(1, 2, 3, 4),
                mask: Ipv4Addr::UNSPECIFIED,
                invert: false,
            }],
            action: Action::Drop,
            counter: 0,
        };
        let p = Program::single(
            Hook::LocalOut,
            vec![never],
            Policy {
                verdict: Verdict::Accept,
                counter: 1,
            },
        );
        let c = compile(&p, &KernelLayout::example()).expect("compile");
        assert_eq!(rule_slots(&c, 0), 1, "just the jump over it");
    }

    #[test]
    fn chain_graph_errors() {
        let l = KernelLayout::example();
        let call = |to| Rule {
            matches: vec![],
            action: Action::Call(ChainId(to)),
            counter: 0,
        };
        let mut chains = BTreeMap::new();
        for i in 0..8u32 {
            chains.insert(
                ChainId(i),
                Chain {
                    name: format!("c{i}"),
                    rules: vec![call(i + 1)],
                },
            );
        }
        chains.insert(
            ChainId(8),
            Chain {
                name: "c8".into(),
                rules: vec![],
            },
        );
        let mut p = Program {
            family: Family::Ipv4,
            hook: Hook::LocalIn,
            entry: ChainId(0),
            chains,
            policy: Policy {
                verdict: Verdict::Accept,
                counter: 1,
            },
        };
        // depth 8: chains 7 and 8 are inlined into chain 6's subprogram
        let c = compile(&p, &l).expect("deep chains inline");
        assert_eq!(
            c.symbols
                .iter()
                .filter(|s| s.1.starts_with("chain_"))
                .count(),
            6
        );
        p.entry = ChainId(2); // depth 6: all subprograms
        let c = compile(&p, &l).expect("compile");
        assert_eq!(
            c.symbols
                .iter()
                .filter(|s| s.1.starts_with("chain_"))
                .count(),
            6
        );
        p.chains
            .get_mut(&ChainId(8))
            .expect("c8")
            .rules
            .push(call(3));
        assert!(matches!(compile(&p, &l), Err(EmitError::ChainLoop { .. })));
        p.chains.get_mut(&ChainId(8)).expect("c8").rules = vec![call(42)];
        assert!(matches!(
            compile(&p, &l),
            Err(EmitError::UnknownChain { to: 42, .. })
        ));
    }

    #[test]
    fn big_chains_have_no_far_jumps() {
        // islands keep every jump within 16 bits
        let c = compile(&chain_of(30_000), &KernelLayout::example()).expect("compile");
        assert!(c.slot_count() > 150_000);
    }

    #[test]
    fn subprograms_once_per_chain() {
        let mut chains = BTreeMap::new();
        chains.insert(
            ChainId(0),
            Chain {
                name: "e".into(),
                rules: vec![
                    Rule {
                        matches: vec![],
                        action: Action::Call(ChainId(1)),
                        counter: 0,
                    },
                    Rule {
                        matches: vec![],
                        action: Action::Goto(ChainId(1)),
                        counter: 1,
                    },
                ],
            },
        );
        chains.insert(
            ChainId(1),
            Chain {
                name: "u".into(),
                rules: vec![addr_rule(2, Action::Return)],
            },
        );
        let p = Program {
            family: Family::Ipv4,
            hook: Hook::LocalIn,
            entry: ChainId(0),
            chains,
            policy: Policy {
                verdict: Verdict::Accept,
                counter: 3,
            },
        };
        let c = compile(&p, &KernelLayout::example()).expect("compile");
        assert_eq!(
            c.symbols
                .iter()
                .filter(|s| s.1.starts_with("chain_1"))
                .count(),
            1
        );
        assert_eq!(c.symbols.iter().filter(|s| s.1 == "count").count(), 1);
        let calls = c
            .insns
            .iter()
            .filter(|i| matches!(i, Insn::Call(insn::Call::Local(_))))
            .count();
        assert!(calls >= 4, "two chain calls and counting calls: {calls}");
    }

    fn runs_of(rules: &[Rule]) -> Vec<(usize, usize, usize)> {
        let lowered: Vec<Vec<Test>> = rules
            .iter()
            .map(|r| lower(&r.matches).expect("lower"))
            .collect();
        find_runs(rules, &lowered)
    }

    fn udp_dport(p: u16) -> Match {
        Match::Udp(UdpMatch {
            sport: PortRange::ANY,
            dport: PortRange::one(p),
            inv_sport: false,
            inv_dport: false,
        })
    }

    #[test]
    fn run_detection() {
        // four address rules: a run; three: not
        let four: Vec<Rule> = (0..4).map(|i| addr_rule(i, Action::Drop)).collect();
        assert_eq!(runs_of(&four), vec![(0, 4, 0)]);
        assert_eq!(runs_of(&four[..3]), vec![]);
        // a different action breaks it
        let mut mixed = four.clone();
        mixed[2].action = Action::Accept;
        assert_eq!(runs_of(&mixed), vec![]);
        // same Call target: a run; another target: not
        let calls: Vec<Rule> = (0..5)
            .map(|i| addr_rule(i, Action::Call(ChainId(1))))
            .collect();
        assert_eq!(runs_of(&calls), vec![(0, 5, 0)]);
        let mut other = calls.clone();
        other[4].action = Action::Call(ChainId(2));
        assert_eq!(runs_of(&other), vec![(0, 4, 0)]);
        // inverted keys and /31 masks are not keys
        let mut inv = four.clone();
        for r in &mut inv {
            if let Match::Ipv4Src { invert, .. } = &mut r.matches[0] {
                *invert = true;
            }
        }
        assert_eq!(runs_of(&inv), vec![]);
        let mut masked = four.clone();
        for r in &mut masked {
            if let Match::Ipv4Src { mask, .. } = &mut r.matches[0] {
                *mask = Ipv4Addr::new(255, 255, 255, 254);
            }
        }
        assert_eq!(runs_of(&masked), vec![]);
        // differing in two places: not a run
        let two: Vec<Rule> = (0..4)
            .map(|i| Rule {
                matches: vec![four[i].matches[0], udp_dport(1000 + i as u16)],
                action: Action::Drop,
                counter: i as u32,
            })
            .collect();
        assert_eq!(runs_of(&two), vec![]);
        // ports: single ports a run (key after the udp guard), ranges and inversions not
        let ports: Vec<Rule> = (0..6)
            .map(|i| Rule {
                matches: vec![
                    Match::Protocol {
                        proto: 17,
                        invert: false,
                    },
                    udp_dport(1000 + i as u16),
                ],
                action: Action::Drop,
                counter: i as u32,
            })
            .collect();
        let r = runs_of(&ports);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0, r[0].1), (0, 6));
        let lowered = lower(&ports[0].matches).expect("lower");
        assert!(matches!(
            lowered[r[0].2],
            Test::Port {
                field: rec::DPORT,
                ..
            }
        ));
        let mut ranged = ports.clone();
        if let Match::Udp(u) = &mut ranged[3].matches[1] {
            u.dport = PortRange { lo: 1, hi: 2 };
        }
        assert_eq!(runs_of(&ranged), vec![]); // 3 + 2 rules around it
                                              // a run ends where the rules stop agreeing, and another may start
        let mut seq = four.clone();
        seq.extend(ports.iter().cloned());
        seq.extend((10..14).map(|i| addr_rule(i, Action::Drop)));
        let r = runs_of(&seq);
        assert_eq!(
            r.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
            vec![(0, 4), (4, 6), (10, 4)]
        );
        // duplicate keys: kept in a terminal run, split a continuing one
        let mut dup = four.clone();
        dup.push(addr_rule(1, Action::Drop));
        assert_eq!(runs_of(&dup), vec![(0, 5, 0)]);
        let mut dupc: Vec<Rule> = (0..4).map(|i| addr_rule(i, Action::Continue)).collect();
        dupc.push(addr_rule(1, Action::Continue));
        dupc.extend((5..9).map(|i| addr_rule(i, Action::Continue)));
        assert_eq!(runs_of(&dupc), vec![(0, 4, 0), (4, 5, 0)]);
    }

    #[test]
    fn run_maps_keep_the_first_rule_of_a_key() {
        let mut rules: Vec<Rule> = (0..4).map(|i| addr_rule(i, Action::Drop)).collect();
        let mut d = addr_rule(2, Action::Drop);
        d.counter = 99;
        rules.push(d);
        let lowered: Vec<Vec<Test>> = rules
            .iter()
            .map(|r| lower(&r.matches).expect("lower"))
            .collect();
        let m = run_map(&rules, &lowered, 0);
        assert_eq!((m.key_size, m.value_size), (4, 4));
        assert_eq!(m.entries.len(), 4);
        let key = [10u8, 1, 0, 2];
        let v = m.entries.iter().find(|e| e.0 == key).expect("key");
        assert_eq!(v.1, 2u32.to_ne_bytes().to_vec());
        // one lookup instead of four rules: the program refers to the map once
        let p = Program::single(
            Hook::LocalIn,
            rules,
            Policy {
                verdict: Verdict::Accept,
                counter: 100,
            },
        );
        let out =
            compile_output(&p, &KernelLayout::example(), Options::default()).expect("compile");
        assert_eq!(out.maps.len(), 1);
        let refs = out
            .code
            .map_fixups
            .iter()
            .filter(|f| f.1 == MapRef::Other(0))
            .count();
        assert_eq!(refs, 1);
        // compile() never forms runs
        let plain = compile(&p, &KernelLayout::example()).expect("compile");
        assert!(plain.map_fixups.iter().all(|f| f.1 == MapRef::Counters));
    }

    #[test]
    fn run_maps_capped_at_the_kernel_limit() {
        // 100 runs of 4 (each on its own action, so they do not merge), then one of 10
        let mut rules = Vec::new();
        for r in 0..100u32 {
            let action = if r % 2 == 0 {
                Action::Drop
            } else {
                Action::Accept
            };
            rules.extend((0..4).map(|i| addr_rule(r * 4 + i, action)));
        }
        rules.extend((400..410).map(|i| addr_rule(i, Action::Continue)));
        let p = Program::single(
            Hook::LocalIn,
            rules,
            Policy {
                verdict: Verdict::Accept,
                counter: 500,
            },
        );
        let out =
            compile_output(&p, &KernelLayout::example(), Options::default()).expect("compile");
        assert_eq!(out.maps.len(), MAX_RUN_MAPS);
        assert!(
            out.maps.iter().any(|m| m.entries.len() == 10),
            "longest run kept"
        );
        let mut used: Vec<MapRef> = out.code.map_fixups.iter().map(|f| f.1).collect();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), MAX_RUN_MAPS + 1);
    }

    /// Every function's control flow graph is acyclic (the verifier rejects a loop as
    /// "infinite loop detected"); local calls count as falling through.
    fn assert_acyclic(c: &Compiled) {
        let mut at = Vec::new(); // slot -> insn index
        let mut slot_of = Vec::new();
        for (i, insn) in c.insns.iter().enumerate() {
            slot_of.push(at.len());
            for _ in 0..insn.slots() {
                at.push(i);
            }
        }
        let n = c.insns.len();
        let target = |i: usize, off: i64| -> usize {
            let s = slot_of[i] as i64 + c.insns[i].slots() as i64 + off;
            at[usize::try_from(s).expect("jump before the program")]
        };
        let succ = |i: usize| -> Vec<usize> {
            match c.insns[i] {
                Insn::Exit => vec![],
                Insn::Ja { off } => vec![target(i, i64::from(off))],
                Insn::Jmp { off, .. } => vec![i + 1, target(i, i64::from(off))],
                _ => vec![i + 1],
            }
        };
        // iterative DFS, 0 = new, 1 = on the stack, 2 = done
        let mut state = vec![0u8; n];
        for root in 0..n {
            if state[root] != 0 {
                continue;
            }
            let mut stack = vec![(root, succ(root), 0usize)];
            state[root] = 1;
            while let Some((node, next, k)) = stack.last_mut() {
                if *k < next.len() {
                    let m = next[*k];
                    *k += 1;
                    assert!(m < n, "insn {node} falls off the program");
                    match state[m] {
                        0 => {
                            state[m] = 1;
                            let s = succ(m);
                            stack.push((m, s, 0));
                        }
                        1 => panic!("loop: insn {node} jumps back to insn {m}\n{}", c.dump()),
                        _ => {}
                    }
                } else {
                    state[*node] = 2;
                    stack.pop();
                }
            }
        }
    }

    fn modes() -> [Options; 3] {
        [
            Options::default(),
            Options {
                split: false,
                ..Options::default()
            },
            Options {
                pending_budget: 0,
                ..Options::default()
            },
        ]
    }

    /// Chains 0..=9, chain i starting with `-p 47 -j c{i+1}` (so 9 deep: chains 7-9 are
    /// inlined), followed by `extra[i]` (rule matches, action); chain 9 is `-j RETURN`.
    fn deep_program(extra: &[(usize, Vec<Match>, Action)]) -> Program {
        let mut chains = BTreeMap::new();
        let mut slot = 0u32;
        for i in 0..=9u32 {
            let mut rules = Vec::new();
            if i < 9 {
                rules.push(Rule {
                    matches: vec![Match::Protocol {
                        proto: 47,
                        invert: false,
                    }],
                    action: Action::Call(ChainId(i + 1)),
                    counter: slot,
                });
                slot += 1;
            }
            for (_, matches, action) in extra.iter().filter(|e| e.0 == i as usize) {
                rules.push(Rule {
                    matches: matches.clone(),
                    action: *action,
                    counter: slot,
                });
                slot += 1;
            }
            if i == 9 {
                rules.push(Rule {
                    matches: vec![],
                    action: Action::Return,
                    counter: slot,
                });
                slot += 1;
            }
            chains.insert(
                ChainId(i),
                Chain {
                    name: format!("c{i}"),
                    rules,
                },
            );
        }
        Program {
            family: Family::Ipv4,
            hook: Hook::LocalOut,
            entry: ChainId(0),
            chains,
            policy: Policy {
                verdict: Verdict::Accept,
                counter: slot,
            },
        }
    }

    #[test]
    fn inlined_return_from_a_cold_block_is_no_loop() {
        // An unconditional call to an inlined chain whose RETURN sits in a split rule (so
        // its jump is emitted later, in a cold block): the code after the call must exist
        // and be where the RETURN lands. It used to be judged unreachable (nothing had
        // jumped there yet), so the RETURN landed on the first cold block, the one of the
        // call rule before it: a loop.
        let half = Match::Ipv4Src {
            addr: Ipv4Addr::UNSPECIFIED,
            mask: Ipv4Addr::new(128, 0, 0, 0),
            invert: true,
        };
        let p = deep_program(&[
            (3, vec![], Action::Call(ChainId(8))),
            (8, vec![half], Action::Return),
            (8, vec![], Action::Accept),
        ]);
        for opts in modes() {
            let c = compile_with(&p, &KernelLayout::example(), opts).expect("compile");
            assert_acyclic(&c);
        }
    }

    #[test]
    fn inlined_goto_from_a_cold_block_is_no_loop() {
        // same through an unconditional goto to the inlined chain, from main and a subprogram
        let half = Match::Ipv4Src {
            addr: Ipv4Addr::UNSPECIFIED,
            mask: Ipv4Addr::new(128, 0, 0, 0),
            invert: true,
        };
        for from in [0, 3] {
            let p = deep_program(&[
                (from, vec![], Action::Goto(ChainId(8))),
                (8, vec![half.clone()], Action::Return),
                (8, vec![], Action::Drop),
            ]);
            for opts in modes() {
                let c = compile_with(&p, &KernelLayout::example(), opts).expect("compile");
                assert_acyclic(&c);
            }
        }
    }

    fn arb_deep_match() -> impl proptest::strategy::Strategy<Value = Match> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<bool>()).prop_map(|invert| Match::Protocol { proto: 47, invert }),
            (0u8..3, any::<bool>()).prop_map(|(m, invert)| Match::Ipv4Src {
                addr: Ipv4Addr::UNSPECIFIED,
                mask: [
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::new(128, 0, 0, 0),
                    Ipv4Addr::BROADCAST
                ][usize::from(m)],
                invert,
            }),
            (any::<bool>()).prop_map(|invert| Match::Ipv4Dst {
                addr: Ipv4Addr::new(10, 0, 0, 2),
                mask: Ipv4Addr::BROADCAST,
                invert,
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 3000, ..Default::default() })]
        /// Random 9-deep programs (chains 7-9 inlined, at several call sites): the code is
        /// loop free in every mode, and the checks `compile` runs itself pass.
        #[test]
        fn deep_programs_are_loop_free(
            extra in proptest::collection::vec(
                (0usize..9, proptest::collection::vec(arb_deep_match(), 0..3), 0u8..7, 1u32..10),
                0..12,
            ),
        ) {
            let extra: Vec<(usize, Vec<Match>, Action)> = extra
                .into_iter()
                .map(|(c, m, a, to)| {
                    let to = ChainId((c as u32 + to).clamp(c as u32 + 1, 9));
                    let action = match a {
                        0 => Action::Accept,
                        1 => Action::Drop,
                        2 => Action::Return,
                        3 | 4 => Action::Call(to),
                        5 => Action::Goto(to),
                        _ => Action::Continue,
                    };
                    (c, m, action)
                })
                .collect();
            let p = deep_program(&extra);
            for opts in modes() {
                let c = compile_with(&p, &KernelLayout::example(), opts).expect("compile");
                assert_acyclic(&c);
            }
        }
    }
}
