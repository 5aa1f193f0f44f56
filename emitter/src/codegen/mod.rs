//! IR to BPF_PROG_TYPE_NETFILTER instructions.
//!
//! # Program shape
//! ```text
//! main (frame 0):  prologue: parse the packet once into the record (access, record)
//!                  entry chain rules ... policy (count, verdict)
//!                  every ~16k slots and at the end: an "island" of out-of-line rule bodies
//!                  and tails (count + accept / drop / return, hotdrop), skipped by a goto
//! chain_<id>:      one static subprogram per reachable user chain, `r1` = record pointer;
//!                  returns 0 (DROP), 1 (ACCEPT) or 2 (RETURN: continue in the caller).
//!                  Jump = call, then continue on 2 or return the verdict; goto = call and
//!                  return its result (in main, 2 means the policy). Chains nested deeper
//!                  than `MAX_CHAIN_DEPTH` are inlined at each call site instead, their
//!                  RETURN jumping to the caller's continuation.
//! count:           subprogram `count(r1 = counter slot, r2 = skb->len)`: per-CPU counter
//!                  map lookup + two atomic adds
//! ```
//! Where each part is made: `access` the prologue, `record` the record it fills, `lower`
//! rule matches to tests, `forms` one rule, `runs` runs of rules as one lookup,
//! `chains` chains, actions, inlining, islands and tails, `counters` counting.
//!
//! # Register convention
//! - `r6`: record base, in every frame. In main it is a copy of `r10`; a chain subprogram gets
//!   it in `r1` and keeps it in `r6` (callee-saved, so it survives calls). Record fields are
//!   addressed as `r6 + FIELD` (see `record`).
//! - `r7` = saddr, `r8` = daddr (as in the record), loaded at the end of the prologue and at
//!   the entry of every chain subprogram; in the prologue itself `r7`-`r9` hold the skb, the
//!   linear length and the data pointer.
//! - `r9` = dport | sport << 16 | protocol << 32 | transport status << 40 (status: 0 fragment
//!   at offset 1, 1 other non-first fragment, else min(bytes available, 253) + 2) | guard
//!   bits << 48 (two per guard kind: tcp, 8-byte and 4-byte headers; bit 0 "fragment: no
//!   match", bit 1 "hotdrop"), also stored at `PACKED` for chain subprograms.
//! - `r0`-`r5`: scratch inside one rule; nothing is kept in them from one rule to the next.
//! - Verdict codes: 0 = NF_DROP, 1 = NF_ACCEPT, 2 = RETURN (subprograms only). Main returns
//!   exactly 0 or 1.
//!
//! Why hot registers for the addresses: the stack liveness analysis of the 6.18 verifier
//! (`bpf_update_live_stack`) re-runs over the whole function whenever an instruction not seen
//! before touches the stack, so one stack load per rule makes verification time quadratic in
//! the rule count (measured on 6.18: 7 s at 10,000 address rules; 0.4 s at 2,500 and 1.5 s at
//! 5,000 `iprange` rules, which still load from the record). Address rules, the ones that
//! come by the thousand, therefore touch no stack at all. Older verifiers track stack reads
//! with liveness marks instead; there the same design verifies linearly too (measured on
//! 6.12: 2,500 to 20,000 address rules).
//!
//! Rules never compare a long-lived register: every test works on a scratch copy, loaded
//! from the record or copied from a hot register by an ALU operation (`w1 = w7; w1 ^= addr;
//! if w1 != 0`), which the verifier does not link to the original, so no rule narrows
//! `r7`-`r9` for the rules after it; record fields are plain unknown bytes to the verifier
//! (see `record`). The verifier state at every "next rule" label is therefore the same on
//! every path, and it prunes: verification cost grows linearly with the rule count. Every
//! prologue path writes every field with a value the verifier does not know (transport
//! fields are read even when the header is short: cast-pointer loads are fault-safe probe
//! loads, and no rule looks at them before its availability guard), so all prologue paths
//! reach the rules with the same stack state.
//!
//! # IPv6 programs
//! Same shape and registers; the prologue is `access6` (the IPv6 header copied into the
//! record, `ipv6_find_hdr`'s walk done once per packet, as every IP6T_F_PROTO entry would do
//! it from offset 0). `r7`/`r8` hold the first words of the addresses (no test reads them:
//! IPv6 address tests read the record, `Test::Addr6`, so they are not hot); `r9`'s protocol is
//! the walk's result, 0 when it failed (`Test::WalkGuard` hotdrops on it). Matches without an
//! IPv6 meaning are refused (`lower::check_family`), and rule runs are not formed.
//!
//! # Kernel limits relied on
//! Verifier constants (`include/linux/bpf.h`, `include/linux/bpf_verifier.h`,
//! `kernel/bpf/verifier.c`); the instruction and pending-branch limits were seen in load logs
//! on 6.18:
//! - 1,000,000 processed instructions (BPF_COMPLEXITY_LIMIT_INSNS): larger programs are
//!   refused up front ([`crate::EmitError::TooLarge`]);
//! - 8 call frames (MAX_CALL_FRAMES): main, `MAX_CHAIN_DEPTH` chains, `count`;
//! - 64 maps per program (MAX_USED_MAPS): `FIXED_MAPS` the program may use whatever its rules,
//!   one per `recent` list and `hashlimit` table, and rule-run maps in what remains;
//! - 8,192 branches pending in the verifier's walk (BPF_COMPLEXITY_LIMIT_JMP_SEQ, "The
//!   sequence of 8193 jumps is too complex"): what the rule forms budget for.
//!
//! # Rule forms
//! A rule is compiled inline (each test a branch), split (the most selective test inline,
//! the rest out of line: one pending branch per rule, the default) or combined (branch free,
//! past the pending-branch budget); see `forms`. Tests keep the kernel's order across the
//! matches that can hotdrop, and are sorted by selectivity between them; see `lower`.
//!
//! # Rule runs
//! At least `MIN_RUN` consecutive rules with the same action and the same tests but one exact
//! key (`/32` address or single port, same field) are one lookup in a hash map (key -> the
//! first rule's counter slot), evaluated exactly as the rules one by one; see `runs`.
//! `compile`/`compile_with` never form runs (a `Compiled` carries no maps), only
//! `compile_output` does.

use std::collections::{BTreeMap, BTreeSet};

mod access;
mod access6;
mod chains;
mod classify;
mod counters;
mod events;
mod forms;
mod hashlimit;
mod host;
mod lower;
mod recent;
mod record;
mod runs;
mod stack;

pub use access::PacketAccess;
pub use access6::MAX_EXT_HEADERS;
pub use counters::CounterLayout;
pub use host::{ADDRTYPE_KEY_SIZE, ADDRTYPE_VALUE_SIZE, LIMIT_TRIES};
pub use record::rec;
pub use runs::{
    FIXED_MAPS, MAX_CLASSES, MAX_RUN_MAPS, MAX_USED_MAPS, MIN_RUN, RULES_PER_CLASS_MAP,
};

use crate::builder::{Builder, Compiled, Label, MapSpec, StackReads};
use crate::ir::{self, ChainId, Program};
use crate::{EmitError, KernelLayout};

use lower::Lowered;
use runs::Runs;
pub use stack::StackRule;

/// Helper numbers (uapi enum bpf_func_id; stable ABI).
const HELPER_MAP_LOOKUP_ELEM: u32 = 1;
const HELPER_TAIL_CALL: u32 = 12;
const HELPER_SMP_PROCESSOR_ID: u32 = 8;
const HELPER_DYNPTR_READ: u32 = 201;
const HELPER_PROBE_READ_KERNEL: u32 = 113;
const HELPER_JIFFIES64: u32 = 118;
const HELPER_SPIN_LOCK: u32 = 93;
const HELPER_SPIN_UNLOCK: u32 = 94;
/// Kfunc names resolved through `KernelLayout`.
const KFUNC_DYNPTR_FROM_SKB: &str = "bpf_dynptr_from_skb";
const KFUNC_DYNPTR_SLICE: &str = "bpf_dynptr_slice";
const KFUNC_RDONLY_CAST: &str = "bpf_rdonly_cast";

/// `Frame::used` key of the hotdrop exit.
const HOTDROP: u8 = 3;
/// Verdict code meaning "continue in the caller" (subprograms only).
const RET_RETURN: i32 = 2;
/// The verifier's call frames (MAX_CALL_FRAMES): main, the chain subprograms and `count` on
/// top.
const MAX_FRAMES: usize = 8;
/// Deepest user-chain nesting compiled as subprograms (main + chains + count); chains nested
/// deeper are inlined into their callers.
pub const MAX_CHAIN_DEPTH: usize = MAX_FRAMES - 2;
/// Deepest nesting accepted at all (inlining copies code once per call path).
pub const MAX_INLINE_DEPTH: usize = 32;
/// The kernel's BPF_COMPLEXITY_LIMIT_INSNS / BPF_MAXINSNS for privileged loaders.
const MAX_INSNS: usize = 1_000_000;

/// Code generation state of one program.
struct Generator<'a> {
    b: Builder,
    layout: &'a KernelLayout,
    chain_labels: BTreeMap<ChainId, Label>,
    count_fn: Label,
    /// the counter map's layout, which `count` follows
    counters: CounterLayout,
    called: BTreeSet<ChainId>,
    /// estimate of the branches the verifier keeps pending while it walks the chains
    pending: usize,
    budget: usize,
    /// rules compiled branch free because the pending budget ran out
    combined: usize,
    split: bool,
    access: PacketAccess,
    force_slow: bool,
    prog: &'a Program,
    lowered: &'a Lowered,
    /// rule runs of each chain
    runs: &'a Runs,
    /// the next `set_key` is skipped: a run stored the slot it looked up in KEY already
    dyn_key: bool,
    /// the stack reads of main's rules (from the end of its prologue on), which its tails'
    /// liveness anchors repeat (see `liveness_anchor`)
    rule_reads: StackReads,
    inline: BTreeSet<ChainId>,
    /// per chain: does its code, inlined, reach the caller's continuation (see `reaches_ret`)
    returns: BTreeMap<ChainId, bool>,
    /// `next` labels bound after a rule that does not continue: nothing may jump there
    dead_ends: Vec<Label>,
    /// continuations of inlined calls that `reaches_ret` promised some jump would reach
    promised: Vec<Label>,
    /// the `event` subprogram, once a REJECT or LOG rule calls it
    event_fn: Option<Label>,
    /// the `limit` subprogram, once a rule calls it
    limit_fn: Option<Label>,
    /// the `owner` subprogram, once a rule calls it
    owner_fn: Option<Label>,
    /// one `recent` subprogram per distinct match
    recent_fns: Vec<(ir::RecentMatch, Label)>,
    /// one `hashlimit` subprogram per distinct match
    hashlimit_fns: Vec<(ir::HashlimitMatch, Label)>,
    /// index in the output maps of the LOG prefix map
    prefix_map: Option<u32>,
    /// the segment to tail-call where the entry chain runs out ([`Options::tail`])
    tail: Option<u32>,
}

/// Code generation knobs (the defaults are what `compile` uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Pending-branch estimate past which multi-test rules are compiled branch free
    /// (see "Rule forms"); 0 compiles every such rule branch free (used by tests).
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
    /// With `runs`, also classify long stretches of rules of any shape through trees of maps
    /// (see "Classified runs" in `classify`); false leaves them compiled (tests).
    pub classify: bool,
    /// Where the entry chain runs out of rules, tail-call this slot of
    /// [`MapRef::Segments`](crate::MapRef::Segments) (the program holding the chain's next
    /// rules) instead of applying the policy; the policy still applies if the slot is empty.
    /// RETURN from the entry chain applies the policy as always.
    pub tail: Option<u32>,
    /// How the counter map holds each slot's counts (see [`CounterLayout`]).
    pub counters: CounterLayout,
    /// How the kernel adds up a call chain's stack (see [`StackRule`]): how deep user chains
    /// can be subprograms.
    pub stack: StackRule,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            pending_budget: forms::PENDING_BUDGET,
            split: true,
            access: PacketAccess::Dynptr,
            force_slow_path: false,
            runs: true,
            classify: true,
            tail: None,
            counters: CounterLayout::PerCpu,
            stack: StackRule::Jit16,
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
    /// rules compiled branch free past the pending-branch budget (every test runs for every
    /// packet: see "Rule forms"); a program split in more segments has a budget per segment
    pub combined: usize,
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
    let depths = chains::chain_depths(p)?;
    let (lowered, mut feat) = lower::lower_chains(p, depths.keys())?;
    // the tail call passes the context on
    feat.ctx |= opts.tail.is_some();
    let (mut maps, runs) = runs::plan(p, depths.keys(), &lowered, opts.runs, opts.classify)?;
    let prefix_map = events::prefix_map(p).map(|m| {
        maps.push(m);
        (maps.len() - 1) as u32
    });
    let planned = Planned {
        depths: &depths,
        lowered: &lowered,
        runs: &runs,
        feat,
        prefix_map,
    };
    // Chains nested deeper than `subprograms` are inlined. The deepest nesting the call frames
    // allow is tried first; a kernel that adds up the call chain's stack 32 bytes a frame
    // (StackRule::Frame32) may need less, found by compiling again.
    let mut subprograms = MAX_CHAIN_DEPTH;
    loop {
        let (code, combined) = emit(p, layout, opts, &planned, subprograms)?;
        if subprograms == 0 || stack::combined(&code, opts.stack) <= stack::MAX_BPF_STACK {
            return Ok(Output {
                code,
                maps,
                combined,
            });
        }
        subprograms -= 1;
    }
}

/// What [`compile_output`] decided before emitting: chain depths, lowered rules, rule runs,
/// the features the prologue reads and the LOG prefix map.
struct Planned<'a> {
    depths: &'a BTreeMap<ChainId, usize>,
    lowered: &'a Lowered,
    runs: &'a Runs,
    feat: access::Features,
    prefix_map: Option<u32>,
}

/// Emits `p` with chains nested deeper than `subprograms` inlined: the code and its count of
/// rules compiled branch free.
fn emit(
    p: &Program,
    layout: &KernelLayout,
    opts: Options,
    planned: &Planned<'_>,
    subprograms: usize,
) -> Result<(Compiled, usize), EmitError> {
    let Planned {
        depths,
        lowered,
        runs,
        feat,
        prefix_map,
    } = *planned;
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
    let mut g = Generator {
        b,
        layout,
        chain_labels,
        count_fn,
        called: BTreeSet::new(),
        pending: 0,
        budget: opts.pending_budget,
        combined: 0,
        split: opts.split,
        access: opts.access,
        force_slow: opts.force_slow_path,
        prog: p,
        lowered,
        runs,
        dyn_key: false,
        rule_reads: StackReads::from(0),
        inline: depths
            .iter()
            .filter(|(_, d)| **d > subprograms)
            .map(|(c, _)| *c)
            .collect(),
        returns: BTreeMap::new(),
        dead_ends: Vec::new(),
        promised: Vec::new(),
        event_fn: None,
        limit_fn: None,
        owner_fn: None,
        recent_fns: Vec::new(),
        hashlimit_fns: Vec::new(),
        prefix_map,
        tail: opts.tail,
        counters: opts.counters,
    };
    // One verdict for every packet (a built-in chain without rules): without the packet
    // parsed.
    match Generator::unconditional(p) {
        Some((counter, code)) if opts.tail.is_none() => g.unconditional_main(counter, code)?,
        _ => {
            g.analyse_returns(depths)?;
            g.main_function(feat)?;
        }
    }
    g.chain_subprograms()?;
    if g.b.is_referenced(g.count_fn) {
        g.count_subprogram()?;
    }
    g.event_subprogram()?;
    g.limit_subprogram()?;
    g.owner_subprogram()?;
    g.recent_subprograms()?;
    g.hashlimit_subprograms()?;
    g.check_inlined_exits()?;
    let c = g.b.finish()?;
    let n = c.slot_count();
    if n > MAX_INSNS {
        return Err(EmitError::TooLarge { insns: n });
    }
    Ok((c, g.combined))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::{Insn, Reg};
    use crate::ir::*;
    use std::net::Ipv4Addr;

    /// `-s 10.1.x.y/32` (x.y = `i`) with `action`, counted in slot `i`.
    pub(super) fn addr_rule(i: u32, action: Action) -> Rule {
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

    /// `n` address rules dropping, then an unconditional ACCEPT.
    pub(super) fn chain_of(n: u32) -> Program {
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

    /// A program entered at chain 0 of `chains`, whose ACCEPT policy counts in slot `policy`.
    pub(super) fn program(hook: Hook, chains: BTreeMap<ChainId, Chain>, policy: u32) -> Program {
        Program {
            family: Family::Ipv4,
            hook,
            entry: ChainId(0),
            chains,
            policy: Policy {
                verdict: Verdict::Accept,
                counter: policy,
            },
        }
    }

    /// Instructions attributed to counter slot `slot`.
    pub(super) fn rule_slots(c: &Compiled, slot: u32) -> usize {
        c.origins.iter().filter(|o| o.1 == slot).count()
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

    /// An IPv6 program of one rule, ACCEPT, policy DROP.
    fn v6_program(matches: Vec<Match>, action: Action) -> Program {
        let mut p = Program::single(
            Hook::LocalIn,
            vec![Rule {
                matches,
                action,
                counter: 0,
            }],
            Policy {
                verdict: Verdict::Drop,
                counter: 1,
            },
        );
        p.family = Family::Ipv6;
        p
    }

    fn tcp22() -> Match {
        Match::Tcp(TcpMatch {
            sport: PortRange::ANY,
            dport: PortRange::one(22),
            flags_mask: 0,
            flags_cmp: 0,
            option: 0,
            inv_sport: false,
            inv_dport: false,
            inv_flags: false,
            inv_option: false,
        })
    }

    #[test]
    fn ipv6_programs_compile_and_refuse_what_has_no_ipv6_meaning() {
        let l = KernelLayout::example();
        let proto = |p| Match::Ipv6Protocol {
            proto: p,
            invert: false,
        };
        compile(&v6_program(vec![proto(6), tcp22()], Action::Accept), &l).expect("compile");
        let refused = [
            vec![Match::Fragment { invert: false }],
            vec![Match::Protocol {
                proto: 6,
                invert: false,
            }],
            vec![Match::Ipv4Dst {
                addr: Ipv4Addr::LOCALHOST,
                mask: Ipv4Addr::BROADCAST,
                invert: false,
            }],
            vec![Match::Icmp(IcmpMatch {
                icmp_type: 8,
                code_min: 0,
                code_max: 255,
                invert: false,
            })],
            // no transport offset without the rule's protocol walk before it
            vec![tcp22()],
            vec![tcp22(), proto(6)],
        ];
        for m in refused {
            let e = compile(&v6_program(m.clone(), Action::Accept), &l).expect_err("refused");
            assert!(matches!(e, EmitError::Unsupported { .. }), "{m:?}: {e}");
        }
        // and the IPv6 matches in an IPv4 program
        let mut p = v6_program(vec![proto(6)], Action::Accept);
        p.family = Family::Ipv4;
        assert!(compile(&p, &l).is_err());
    }

    #[test]
    fn ipv6_programs_form_runs_and_tag_their_events() {
        let l = KernelLayout::example();
        let mut rules: Vec<Rule> = (0..20u16)
            .map(|i| Rule {
                matches: vec![
                    Match::Protocol {
                        proto: 17,
                        invert: false,
                    },
                    Match::Udp(UdpMatch {
                        sport: PortRange::ANY,
                        dport: PortRange::one(1000 + i),
                        inv_sport: false,
                        inv_dport: false,
                    }),
                ],
                action: Action::Drop,
                counter: u32::from(i),
            })
            .collect();
        rules[19].action = Action::Reject(Reject { with: 1 });
        let mut p = Program::single(
            Hook::LocalIn,
            rules,
            Policy {
                verdict: Verdict::Accept,
                counter: 20,
            },
        );
        let family_byte = |p: &Program| {
            let out = compile_output(p, &l, Options::default()).expect("compile");
            let pf = out.code.insns.iter().find_map(|i| match i {
                Insn::St {
                    dst: Reg::R9,
                    off,
                    imm,
                    ..
                } if *off == crate::event::off::PF as i16 => Some(*imm),
                _ => None,
            });
            (out.maps.len(), pf)
        };
        let (maps4, pf4) = family_byte(&p);
        assert!(maps4 > 0, "the IPv4 twin forms a run");
        assert_eq!(pf4, Some(2));
        for r in p
            .chains
            .get_mut(&ChainId(0))
            .expect("entry")
            .rules
            .iter_mut()
        {
            r.matches[0] = Match::Ipv6Protocol {
                proto: 17,
                invert: false,
            };
        }
        p.family = Family::Ipv6;
        // the same port run, as a lookup too
        assert_eq!(family_byte(&p), (maps4, Some(10)));
    }
}
