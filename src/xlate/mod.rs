//! From a validated iptables table to the emitter's filter IR: one [`ir::Program`] per hook.
//!
//! The kernel's `ipt_do_table` walks entries by position, not by chain: evaluation starts at
//! `hook_entry[hook]` and falls through entry after entry; a jump pushes the jumping entry
//! (unless it is a goto, or the target is the very next entry) and moves to the target; RETURN
//! pops, or with an empty stack moves to `underflow[hook]`. This module reproduces exactly that:
//! every entry where evaluation can start (a hook entry or a jump target) becomes an IR chain
//! made of the entries from there up to the first one that unconditionally leaves (ACCEPT,
//! DROP, RETURN, goto, ERROR). A jump becomes `Call`, a goto `Goto`, a jump to the next entry
//! `Continue` (it pushes nothing, so evaluation simply goes on), and the underflow entry
//! becomes the program's policy. Every rule keeps its entry index as counter slot, so the
//! counters are the kernel's per-entry counters, chain-end RETURN entries and policies
//! included.

pub use emitter::prune::prune_unreachable;

/// The pure compile step of a hook's program, as the daemon loads it (and `dump` shows it, and
/// the datapath tests run it): the generator's output with the instructions no path reaches
/// removed (the verifier refuses unreachable code). Touches no kernel object.
pub fn compile(
    program: &ir::Program,
    layout: &emitter::KernelLayout,
    options: emitter::codegen::Options,
) -> Result<emitter::codegen::Output, emitter::EmitError> {
    let out = emitter::codegen::compile_output(program, layout, options)?;
    Ok(emitter::codegen::Output {
        code: prune_unreachable(out.code)?,
        ..out
    })
}

/// Most programs one hook's chain is split into: the kernel follows at most 33 tail calls
/// for a packet (MAX_TAIL_CALL_CNT), and the dispatcher makes the first.
pub const MAX_SEGMENTS: usize = 32;

/// Size (instructions) past which a hook's program is split. The verifier processes a
/// program of rule sequences in about 1.4 instructions per instruction (10,000 address and
/// port rules: 360,000 instructions, 501,555 verified), so a segment this size stays well
/// under its limit of 1,000,000 processed instructions on every kernel of the matrix.
pub const SEGMENT_INSNS: usize = 300_000;

/// [`compile`] for a hook whose program may be too large for the verifier, or too large for
/// its rules to keep their fast form: the entry chain split into up to [`MAX_SEGMENTS`]
/// programs of consecutive rules and at most `max_insns` instructions ([`SEGMENT_INSNS`] for
/// the kernel), each with every user chain it calls, each but the last tail-calling slot
/// `first_slot + i` of the Segments map (which must hold segment `i + 1`) where its rules run
/// out. A RETURN in any of them applies the policy, as at the end of the last. In chain order;
/// one program when it fits.
///
/// The verifier's pending-branch limit is per program: past it, multi-test rules are compiled
/// branch free, every test run for every packet (`Output::combined`; several times a split
/// rule's cost, and past ten thousand such rules the code no longer stays in the CPU's
/// caches). So a chain is also split while that lowers the number of such rules: each segment
/// has its own budget. A tail call costs a packet a few nanoseconds.
pub fn compile_segments(
    program: &ir::Program,
    layout: &emitter::KernelLayout,
    options: emitter::codegen::Options,
    first_slot: u32,
    max_insns: usize,
) -> Result<Vec<emitter::codegen::Output>, emitter::EmitError> {
    use emitter::codegen::Output;
    let fits = |outs: &[Output]| outs.iter().all(|o| o.code.slot_count() <= max_insns);
    let combined = |outs: &[Output]| outs.iter().map(|o| o.combined).sum::<usize>();
    // a budget of 0 (tests) asks for branch-free rules: no splitting for them
    let splits_help = options.split && options.pending_budget > 0;
    let (size, mut best) = match compile(program, layout, options) {
        Ok(out) => {
            let size = out.code.slot_count();
            let outs = vec![out];
            if fits(&outs) && (combined(&outs) == 0 || !splits_help) {
                return Ok(outs);
            }
            (size, fits(&outs).then_some(outs))
        }
        Err(emitter::EmitError::TooLarge { insns }) => (insns, None),
        Err(e) => return Err(e),
    };
    let rules = program
        .chains
        .get(&program.entry)
        .map_or(0, |c| c.rules.len());
    let mut pieces = size.div_ceil(max_insns).max(2);
    while pieces <= MAX_SEGMENTS.min(rules) {
        match compile_split(program, layout, options, first_slot, pieces) {
            Ok(outs) if fits(&outs) => {
                let before = best.as_deref().map_or(usize::MAX, combined);
                if combined(&outs) == 0 || !splits_help {
                    return Ok(outs);
                }
                if combined(&outs) >= before {
                    // more segments no longer help (a large user chain, say)
                    break;
                }
                best = Some(outs);
            }
            Ok(_) | Err(emitter::EmitError::TooLarge { .. }) => {}
            Err(e) => return Err(e),
        }
        pieces *= 2;
    }
    best.ok_or(emitter::EmitError::TooLarge { insns: size })
}

/// The entry chain of `program` in `pieces` programs of consecutive rules (as even as they
/// divide; fewer when there are fewer rules), as [`compile_segments`] makes them.
pub fn compile_split(
    program: &ir::Program,
    layout: &emitter::KernelLayout,
    options: emitter::codegen::Options,
    first_slot: u32,
    pieces: usize,
) -> Result<Vec<emitter::codegen::Output>, emitter::EmitError> {
    let Some(entry) = program.chains.get(&program.entry) else {
        return compile(program, layout, options).map(|out| vec![out]);
    };
    let rules = &entry.rules;
    let per = rules.len().div_ceil(pieces.max(1)).max(1);
    let parts = rules.len().div_ceil(per).max(1);
    let mut outs = Vec::with_capacity(parts);
    for i in 0..parts {
        let part = &rules[(i * per).min(rules.len())..((i + 1) * per).min(rules.len())];
        let mut chains: BTreeMap<ir::ChainId, ir::Chain> = program
            .chains
            .iter()
            .filter(|(id, _)| **id != program.entry)
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        chains.insert(
            program.entry,
            ir::Chain {
                name: entry.name.clone(),
                rules: part.to_vec(),
            },
        );
        let segment = ir::Program {
            family: program.family,
            hook: program.hook,
            entry: program.entry,
            chains,
            policy: program.policy,
        };
        let tail = (i + 1 < parts).then(|| first_slot + u32::try_from(i).unwrap_or(u32::MAX));
        outs.push(compile(
            &segment,
            layout,
            emitter::codegen::Options { tail, ..options },
        )?);
    }
    Ok(outs)
}

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use emitter::ir;
use ipt_abi::abi::{
    IP6T_FRAG_INV_IDS, IP6T_F_PROTO, IP6T_ICMP6_ECHOREPLY, IP6T_ICMP6_REJECT_ROUTE, IP6T_ICMP_INV,
    IP6T_INV_DSTIP, IP6T_INV_PROTO, IP6T_INV_SRCIP, IP6T_INV_VIA_IN, IP6T_INV_VIA_OUT,
    IP6T_OPTS_INV_LEN, IP6T_OPTS_LEN, IP6T_OPTS_OPTS, IP6T_RT_FST_MASK, IP6T_RT_INV_LEN,
    IP6T_RT_INV_SGS, IP6T_RT_INV_TYP, IP6T_RT_LEN, IP6T_RT_RES, IP6T_RT_TYP, IPRANGE_DST,
    IPRANGE_DST_INV, IPRANGE_SRC, IPRANGE_SRC_INV, IPT_F_FRAG, IPT_ICMP_ADMIN_PROHIBITED,
    IPT_ICMP_INV, IPT_INV_DSTIP, IPT_INV_FRAG, IPT_INV_PROTO, IPT_INV_SRCIP, IPT_INV_VIA_IN,
    IPT_INV_VIA_OUT, XT_ADDRTYPE_INVERT_DEST, XT_ADDRTYPE_INVERT_SOURCE,
    XT_ADDRTYPE_LIMIT_IFACE_IN, XT_ADDRTYPE_LIMIT_IFACE_OUT, XT_CONNTRACK_DIRECTION,
    XT_CONNTRACK_EXPIRES, XT_CONNTRACK_ORIGDST, XT_CONNTRACK_ORIGDST_PORT, XT_CONNTRACK_ORIGSRC,
    XT_CONNTRACK_ORIGSRC_PORT, XT_CONNTRACK_PROTO, XT_CONNTRACK_REPLDST, XT_CONNTRACK_REPLDST_PORT,
    XT_CONNTRACK_REPLSRC, XT_CONNTRACK_REPLSRC_PORT, XT_CONNTRACK_STATE, XT_CONNTRACK_STATUS,
    XT_HASHLIMIT_BYTES, XT_HASHLIMIT_INVERT, XT_HASHLIMIT_RATE_MATCH, XT_MULTIPORT_DESTINATION,
    XT_MULTIPORT_SOURCE, XT_OWNER_SUPPL_GROUPS, XT_TCP_INV_DSTPT, XT_TCP_INV_FLAGS,
    XT_TCP_INV_OPTION, XT_TCP_INV_SRCPT, XT_UDP_INV_DSTPT, XT_UDP_INV_SRCPT,
};
use ipt_abi::{Entry, Family, Ip6Match, IpMatch, IpPart, Match, Table, Target, Verdict};

/// Why a validated table cannot be translated (it should not happen: validation guarantees
/// the shape this module relies on).
#[derive(Debug, thiserror::Error)]
pub enum XlateError {
    /// A valid hook has no entry or underflow.
    #[error("hook {hook} has no entry point or underflow")]
    MissingHook {
        /// Hook number.
        hook: u32,
    },
    /// The underflow entry is not an unconditional ACCEPT or DROP.
    #[error("underflow of hook {hook} (entry {index}) is not an ACCEPT or DROP policy")]
    BadPolicy {
        /// Hook number.
        hook: u32,
        /// Entry index.
        index: u32,
    },
    /// What the kernel runs and bpfilter cannot, exactly (NF_QUEUE needs a queue handler in
    /// user space; some matches are not compiled).
    #[error("entry {index}: {what} is not supported by bpfilter")]
    Unsupported {
        /// Entry index.
        index: u32,
        /// What.
        what: &'static str,
    },
    /// A chain runs off the end of the table.
    #[error("evaluation from entry {start} runs past the end of the table")]
    RunsOffEnd {
        /// Where the chain starts.
        start: u32,
    },
}

impl XlateError {
    /// The errno the client gets.
    pub fn errno(&self) -> i32 {
        match self {
            // What the kernel says for a target it lacks: iptables prints its own message.
            XlateError::Unsupported { .. } => libc::ENOENT,
            _ => libc::EINVAL,
        }
    }
}

/// The hooks of a table, in hook order, with their IR programs, its recent lists shaped as
/// new ones ([`recent_lists`]).
pub fn translate(table: &Table) -> Result<Vec<ir::Program>, XlateError> {
    translate_with(table, &recent_lists(table))
}

/// [`translate`] with the recent lists as the datapath has them (a list the previous ruleset
/// already had keeps its mask and may keep more stamps).
pub fn translate_with(
    table: &Table,
    recent: &[RecentList],
) -> Result<Vec<ir::Program>, XlateError> {
    translate_full(table, recent, &hashlimit_tables(table))
}

/// [`translate_with`] with the hashlimit tables as the datapath has them too (a table the
/// previous ruleset already had keeps the configuration of the rule that created it).
pub fn translate_full(
    table: &Table,
    recent: &[RecentList],
    hashlimit: &[HashlimitTable],
) -> Result<Vec<ir::Program>, XlateError> {
    let slots = limit_slots(table);
    let state = Named { recent, hashlimit };
    (0..5u32)
        .filter(|h| table.valid_hooks & (1 << h) != 0)
        .map(|hook| translate_hook(table, hook, &slots, &state))
        .collect()
}

/// The named state the rules of a table share with the datapath.
struct Named<'a> {
    recent: &'a [RecentList],
    hashlimit: &'a [HashlimitTable],
}

/// One hashlimit table (`--hashlimit-name`) that rules of a table use: `htable_create`'s
/// configuration, from the first rule that named it (kept while rules name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashlimitTable {
    /// `--hashlimit-name`
    pub name: Vec<u8>,
    /// the creating rule's configuration in revision 3's form, `size` and `max` truncated
    /// to HASHLIMIT_MAX_SIZE (not yet defaulted: see [`HashlimitTable::entries`])
    pub cfg: ipt_abi::abi::HashlimitCfg3,
    /// the creating rule's revision (its `/proc` format)
    pub revision: u8,
}

impl HashlimitTable {
    /// `hinfo->cfg.max` as `htable_create` sets it: 8 * size when 0, at least `size`; `size`
    /// when 0 from the RAM (`ram_bytes`): a bucket per 16 KiB per 8-byte list head, 8192
    /// above 1 GiB, at least 16.
    pub fn entries(&self, ram_bytes: u64) -> u32 {
        let size = if self.cfg.size != 0 {
            self.cfg.size
        } else if ram_bytes > 1 << 30 {
            8192
        } else {
            ((ram_bytes / 16384 / 8) as u32).max(16)
        };
        match self.cfg.max {
            0 => size.saturating_mul(8),
            m => m.max(size),
        }
    }
    /// Whether the table counts in rate-match mode (`hinfo->ratematch`).
    pub fn rate_match(&self) -> bool {
        self.cfg.mode & XT_HASHLIMIT_RATE_MATCH != 0
    }
}

/// The hashlimit tables the rules of `table` name, in entry order of first use, each with
/// the configuration of the first rule naming it (as `hashlimit_mt_check_common` creates
/// them for a new table).
pub fn hashlimit_tables(table: &Table) -> Vec<HashlimitTable> {
    let mut out: Vec<HashlimitTable> = Vec::new();
    for h in hashlimit_matches(table) {
        if !out.iter().any(|t| t.name == h.name()) {
            out.push(HashlimitTable {
                name: h.name().to_vec(),
                cfg: h.cfg(),
                revision: h.revision(),
            });
        }
    }
    out
}

/// The hashlimit matches of `table`, in entry order.
pub fn hashlimit_matches(table: &Table) -> impl Iterator<Item = &ipt_abi::Hashlimit> {
    table
        .entries
        .iter()
        .flat_map(|e| &e.matches)
        .filter_map(|m| match m {
            Match::Hashlimit(h) => Some(&**h),
            _ => None,
        })
}

/// `msecs_to_jiffies(m)` at `hz`: rounded up; MAX_JIFFY_OFFSET for a negative `int`.
pub fn msecs_to_jiffies(m: u32, hz: u32) -> u64 {
    if m > i32::MAX as u32 {
        return (i64::MAX as u64 >> 1) - 1;
    }
    (u64::from(m) * u64::from(hz)).div_ceil(1000)
}

/// The IR of a hashlimit match of a rule of revision `rule.revision()` on `table`.
pub fn hashlimit_ir(
    h: &ipt_abi::Hashlimit,
    index: u32,
    table: &HashlimitTable,
) -> ir::HashlimitMatch {
    use ipt_abi::ext;
    let hz = ipt_abi::ext::kernel_hz();
    let t = &table.cfg;
    let rule = h.cfg();
    let revision = h.revision();
    let maskl = |bits: u8| -> u32 {
        let host = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(bits.min(32)))
        };
        u32::from_ne_bytes(host.to_be_bytes())
    };
    let rule_bytes = rule.mode & XT_HASHLIMIT_BYTES != 0;
    let bytes_cap = u64::from(hz).wrapping_mul(ext::hashlimit_cpj_bytes(hz)) & u64::from(u32::MAX);
    let kind = if table.rate_match() {
        let (rate, burst) = if t.mode & XT_HASHLIMIT_BYTES != 0 {
            // user2rate_bytes((u32)avg)
            let avg = t.avg as u32;
            let r = u32::MAX.checked_div(avg).unwrap_or(u32::MAX);
            let rate = u64::from(r - 1) << ipt_abi::abi::XT_HASHLIMIT_BYTE_SHIFT;
            let burst = if t.burst != 0 {
                t.burst.wrapping_mul(rate)
            } else {
                rate
            };
            (rate, burst)
        } else {
            let rate = ipt_abi::abi::XT_HASHLIMIT_SCALE_V2
                .checked_div(t.avg)
                .unwrap_or(0);
            (rate, t.burst.wrapping_add(rate))
        };
        ir::HashlimitKind::RateMatch {
            rule_bytes,
            interval: t.interval,
            interval_jiffies: u64::from(t.interval.wrapping_mul(hz)),
            rate,
            burst,
        }
    } else {
        let shift = |v: u64| v.trailing_zeros().min(63) as u8;
        let table_bytes = t.mode & XT_HASHLIMIT_BYTES != 0;
        let (credit, credit_cap, cost) = if table_bytes {
            (
                bytes_cap,
                t.burst,
                u64::from(ext::hashlimit_user2credits_byte(t.avg as u32, hz)),
            )
        } else {
            let full = ext::hashlimit_user2credits(t.avg.wrapping_mul(t.burst), revision, hz);
            (full, full, ext::hashlimit_user2credits(t.avg, revision, hz))
        };
        ir::HashlimitKind::Bucket {
            table_bytes,
            rule_bytes,
            cpj_shift: shift(ext::hashlimit_cpj(revision, hz)),
            cpj_bytes_shift: shift(ext::hashlimit_cpj_bytes(hz)),
            bytes_cap,
            credit,
            credit_cap,
            cost,
        }
    };
    ir::HashlimitMatch {
        table: index,
        hash: t.mode & 0xf,
        srcmask: maskl(t.srcmask),
        dstmask: maskl(t.dstmask),
        frag_hotdrop: ipt_abi::ext::nonfirst_frag_fix(),
        expire: msecs_to_jiffies(t.expire, hz),
        invert: rule.mode & XT_HASHLIMIT_INVERT != 0,
        kind,
    }
}

/// One recent list (`--name`) that rules of a table use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentList {
    /// `--name`
    pub name: Vec<u8>,
    /// the mask of the first rule naming it (`t->mask`, IPv4)
    pub mask: [u8; 4],
    /// its dimensions
    pub shape: ir::RecentShape,
}

/// The recent lists the rules of `table` name, in entry order of first use, as
/// `recent_mt_check` makes them for a new table: the first rule's mask, `ip_list_tot`
/// addresses, and stamps for the largest need among the rules (its `nstamp_mask`:
/// `ip_pkt_list_tot` rounded up to a power of two when the hit count is below it, else the
/// hit count rounded up, else 32).
pub fn recent_lists(table: &Table) -> Vec<RecentList> {
    let (list_tot, pkt_list_tot) = ipt_abi::ext::recent_params();
    let mut lists: Vec<RecentList> = Vec::new();
    for r in table
        .entries
        .iter()
        .flat_map(|e| &e.matches)
        .filter_map(|m| match m {
            Match::Recent(r) => Some(r),
            _ => None,
        })
    {
        let hits = r.info().hit_count;
        let stamps = if pkt_list_tot != 0 && hits < pkt_list_tot {
            pkt_list_tot.next_power_of_two()
        } else if hits != 0 {
            hits.next_power_of_two()
        } else {
            32
        };
        match lists.iter_mut().find(|l| l.name == r.name()) {
            Some(l) => l.shape.stamps = l.shape.stamps.max(stamps),
            None => lists.push(RecentList {
                name: r.name().to_vec(),
                mask: r.mask(),
                shape: ir::RecentShape {
                    entries: list_tot,
                    stamps,
                    wide: ipt_abi::ext::recent_wide(),
                },
            }),
        }
    }
    lists
}

/// The `limit` buckets of a table, one per limit match in entry order (the slots
/// [`translate`] gives them): `(cost, credit_cap, initial credit)` as `limit_mt_check` sets
/// them for the kernel's HZ ([`ipt_abi::ext::kernel_hz`]).
pub fn limit_buckets(table: &Table) -> Vec<(u32, u32, u32)> {
    let hz = ipt_abi::ext::kernel_hz();
    table
        .entries
        .iter()
        .flat_map(|e| &e.matches)
        .filter_map(|m| match m {
            Match::Limit(l) => Some(l.bucket(hz)),
            _ => None,
        })
        .collect()
}

/// The first limit slot of each entry.
fn limit_slots(table: &Table) -> Vec<u32> {
    let mut next = 0u32;
    table
        .entries
        .iter()
        .map(|e| {
            let first = next;
            next += e
                .matches
                .iter()
                .filter(|m| matches!(m, Match::Limit(_)))
                .count() as u32;
            first
        })
        .collect()
}

fn ir_hook(hook: u32) -> ir::Hook {
    match hook {
        0 => ir::Hook::PreRouting,
        1 => ir::Hook::LocalIn,
        2 => ir::Hook::Forward,
        3 => ir::Hook::LocalOut,
        _ => ir::Hook::PostRouting,
    }
}

/// The name iptables shows for the chain an entry belongs to (for dumps).
fn chain_name(table: &Table, index: u32) -> String {
    let name = table.chain_of(index).unwrap_or_else(|| "?".into());
    format!("{name}@{index}")
}

fn translate_hook(
    table: &Table,
    hook: u32,
    slots: &[u32],
    named: &Named<'_>,
) -> Result<ir::Program, XlateError> {
    let h = hook as usize;
    let (Some(start), Some(underflow)) = (table.hook_entry_index(h), table.underflow_index(h))
    else {
        return Err(XlateError::MissingHook { hook });
    };
    let policy = match table
        .entries
        .get(underflow as usize)
        .and_then(Entry::verdict)
    {
        Some(Verdict::Accept) => ir::Verdict::Accept,
        Some(Verdict::Drop) => ir::Verdict::Drop,
        _ => {
            return Err(XlateError::BadPolicy {
                hook,
                index: underflow,
            })
        }
    };
    let mut chains = BTreeMap::new();
    let mut todo = vec![start];
    let mut seen = BTreeSet::from([start]);
    while let Some(first) = todo.pop() {
        let (chain, targets) = build_chain(table, first, slots, named)?;
        for t in targets {
            if seen.insert(t) {
                todo.push(t);
            }
        }
        chains.insert(ir::ChainId(first), chain);
    }
    Ok(ir::Program {
        family: match table.family {
            Family::Ipv4 => ir::Family::Ipv4,
            Family::Ipv6 => ir::Family::Ipv6,
        },
        hook: ir_hook(hook),
        entry: ir::ChainId(start),
        chains,
        policy: ir::Policy {
            verdict: policy,
            counter: underflow,
        },
    })
}

/// The IR chain that evaluation starting at entry `first` runs through, and the entries it
/// jumps to.
fn build_chain(
    table: &Table,
    first: u32,
    slots: &[u32],
    named: &Named<'_>,
) -> Result<(ir::Chain, Vec<u32>), XlateError> {
    let mut rules = Vec::new();
    let mut targets = Vec::new();
    for entry in table.entries.iter().skip(first as usize) {
        let slot = slots.get(entry.index as usize).copied().unwrap_or(0);
        let (rule, leaves) = rule(entry, slot, named, &mut targets)?;
        rules.extend(rule);
        if leaves {
            return Ok((
                ir::Chain {
                    name: chain_name(table, first),
                    rules,
                },
                targets,
            ));
        }
    }
    Err(XlateError::RunsOffEnd { start: first })
}

/// One entry as an IR rule (None if it can never match), and whether evaluation never goes
/// past it (it matches every packet and leaves).
fn rule(
    entry: &Entry,
    limit_slot: u32,
    named: &Named<'_>,
    targets: &mut Vec<u32>,
) -> Result<(Option<ir::Rule>, bool), XlateError> {
    refuse_unsupported(entry)?;
    let action = match &entry.target {
        Target::Standard(Verdict::Queue) => {
            return Err(XlateError::Unsupported {
                index: entry.index,
                what: "the QUEUE verdict",
            })
        }
        // reject_tg answers nothing for a `with` past IPT_ICMP_ADMIN_PROHIBITED: a plain drop.
        Target::Reject(r) if r.with > IPT_ICMP_ADMIN_PROHIBITED => ir::Action::Drop,
        Target::Reject(r) => ir::Action::Reject(ir::Reject { with: r.with as u8 }),
        // reject_tg6 sends nothing for echo-reply (its checkentry refuses it) nor for a `with`
        // it does not know (past IP6T_ICMP6_REJECT_ROUTE): a plain drop.
        Target::Reject6(r)
            if r.with == IP6T_ICMP6_ECHOREPLY || r.with > IP6T_ICMP6_REJECT_ROUTE =>
        {
            ir::Action::Drop
        }
        Target::Reject6(r) => ir::Action::Reject(ir::Reject { with: r.with as u8 }),
        Target::Log(l) => ir::Action::Log(ir::Log {
            level: l.level,
            flags: l.logflags,
            prefix: l.prefix,
        }),
        Target::Error(_) => ir::Action::Drop,
        Target::Standard(Verdict::Accept) => ir::Action::Accept,
        Target::Standard(Verdict::Drop) => ir::Action::Drop,
        Target::Standard(Verdict::Return) => ir::Action::Return,
        // Validation lets only entries no hook reaches jump to a non-entry offset.
        Target::Standard(Verdict::Jump {
            index: u32::MAX, ..
        }) => {
            return Err(XlateError::Unsupported {
                index: entry.index,
                what: "a jump to a non-entry offset",
            })
        }
        Target::Standard(Verdict::Jump { index, .. }) => {
            if entry.ip.is_goto() {
                targets.push(*index);
                ir::Action::Goto(ir::ChainId(*index))
            } else if *index == entry.index + 1 {
                ir::Action::Continue
            } else {
                targets.push(*index);
                ir::Action::Call(ir::ChainId(*index))
            }
        }
    };
    let Some(matches) = matches(entry, limit_slot, named) else {
        return Ok((None, false));
    };
    // LOG goes on like a jump to the next entry; REJECT leaves like DROP.
    let leaves =
        matches.is_empty() && !matches!(action.flow(), ir::Action::Call(_) | ir::Action::Continue);
    Ok((
        Some(ir::Rule {
            matches,
            action,
            counter: entry.index,
        }),
        leaves,
    ))
}

/// The tests of `ip_packet_match` (`ip6_packet_match` for IPv6) and the entry's match
/// extensions, in the kernel's order; None when the entry can never match. Tests that every
/// packet passes are left out.
fn matches(entry: &Entry, mut limit_slot: u32, named: &Named<'_>) -> Option<Vec<ir::Match>> {
    let mut out = match &entry.ip {
        IpPart::V4(ip) => ipv4_tests(ip)?,
        IpPart::V6(ip) => ipv6_tests(ip)?,
    };
    let family = entry.ip.family();
    for m in &entry.matches {
        out.extend(extension(m, family, limit_slot, named));
        if matches!(m, Match::Limit(_)) {
            limit_slot += 1;
        }
    }
    Some(out)
}

/// Interface tests, the same in both families.
fn iface_tests(
    out: &mut Vec<ir::Match>,
    (iniface, iniface_mask, inv_in): ([u8; 16], [u8; 16], bool),
    (outiface, outiface_mask, inv_out): ([u8; 16], [u8; 16], bool),
) {
    if iniface_mask != [0; 16] || inv_in {
        out.push(ir::Match::InIface(ir::Iface {
            name: iniface,
            mask: iniface_mask,
            invert: inv_in,
        }));
    }
    if outiface_mask != [0; 16] || inv_out {
        out.push(ir::Match::OutIface(ir::Iface {
            name: outiface,
            mask: outiface_mask,
            invert: inv_out,
        }));
    }
}

/// `ip_packet_match`'s tests of an `ipt_ip`.
fn ipv4_tests(ip: &IpMatch) -> Option<Vec<ir::Match>> {
    let inv = |bit| ip.invflags & bit != 0;
    let mut out = Vec::new();
    if !(ip.src.is_unspecified() && ip.smsk.is_unspecified() && !inv(IPT_INV_SRCIP)) {
        out.push(ir::Match::Ipv4Src {
            addr: ip.src,
            mask: ip.smsk,
            invert: inv(IPT_INV_SRCIP),
        });
    }
    if !(ip.dst.is_unspecified() && ip.dmsk.is_unspecified() && !inv(IPT_INV_DSTIP)) {
        out.push(ir::Match::Ipv4Dst {
            addr: ip.dst,
            mask: ip.dmsk,
            invert: inv(IPT_INV_DSTIP),
        });
    }
    iface_tests(
        &mut out,
        (ip.iniface, ip.iniface_mask, inv(IPT_INV_VIA_IN)),
        (ip.outiface, ip.outiface_mask, inv(IPT_INV_VIA_OUT)),
    );
    if ip.proto != 0 {
        match u8::try_from(ip.proto) {
            Ok(proto) => out.push(ir::Match::Protocol {
                proto,
                invert: inv(IPT_INV_PROTO),
            }),
            // No packet carries a protocol above 255: `!=` always holds.
            Err(_) if inv(IPT_INV_PROTO) => {}
            Err(_) => return None,
        }
    }
    // NF_INVF(IPT_INV_FRAG, (flags & IPT_F_FRAG) && !isfrag) fails the entry.
    match (ip.flags & IPT_F_FRAG != 0, inv(IPT_INV_FRAG)) {
        (true, invert) => out.push(ir::Match::Fragment { invert }),
        (false, true) => return None,
        (false, false) => {}
    }
    Some(out)
}

/// `ip6_packet_match`'s tests of an `ip6t_ip6`: addresses under their masks (a zero mask
/// compares nothing: `!` of it never matches), interfaces, and with IP6T_F_PROTO the walk to
/// the upper-layer header. Traffic class (IP6T_F_TOS) and IP6T_INV_FRAG are not tested by the
/// kernel.
fn ipv6_tests(ip: &Ip6Match) -> Option<Vec<ir::Match>> {
    let inv = |bit| ip.invflags & bit != 0;
    let mut out = Vec::new();
    for (addr, mask, invert, dst) in [
        (ip.src, ip.smsk, inv(IP6T_INV_SRCIP), false),
        (ip.dst, ip.dmsk, inv(IP6T_INV_DSTIP), true),
    ] {
        match (mask.is_unspecified(), invert, dst) {
            (true, false, _) => {}
            (true, true, _) => return None,
            (false, _, false) => out.push(ir::Match::Ipv6Src { addr, mask, invert }),
            (false, _, true) => out.push(ir::Match::Ipv6Dst { addr, mask, invert }),
        }
    }
    iface_tests(
        &mut out,
        (ip.iniface, ip.iniface_mask, inv(IP6T_INV_VIA_IN)),
        (ip.outiface, ip.outiface_mask, inv(IP6T_INV_VIA_OUT)),
    );
    if ip.flags & IP6T_F_PROTO != 0 {
        out.push(ir::Match::Ipv6Protocol {
            // above 255 is refused before (`refuse_unsupported`)
            proto: ip.proto as u8,
            invert: inv(IP6T_INV_PROTO),
        });
    }
    Some(out)
}

/// What the kernel accepts but bpfilter cannot run exactly: refused (ENOENT), never
/// approximated.
fn refuse_unsupported(entry: &Entry) -> Result<(), XlateError> {
    let refuse = |what: &'static str| {
        Err(XlateError::Unsupported {
            index: entry.index,
            what,
        })
    };
    // No protocol number above 255 exists (iptables cannot write one): refused, not guessed.
    if entry
        .matches
        .iter()
        .filter_map(Match::conntrack)
        .any(|c| c.match_flags & XT_CONNTRACK_PROTO != 0 && c.l4proto > 0xff)
    {
        return refuse("conntrack --ctproto above 255");
    }
    // owner_mt walks the supplementary groups of the socket's file, any number of them; a
    // program cannot, exactly.
    if entry
        .matches
        .iter()
        .any(|m| matches!(m, Match::Owner(o) if o.r#match & XT_OWNER_SUPPL_GROUPS != 0))
    {
        return refuse("owner --suppl-groups");
    }
    // Matches bpfilter does not compile (yet), in either family or in IPv6.
    let ipv6 = entry.ip.family() == Family::Ipv6;
    for m in &entry.matches {
        let what = match m {
            // hbh_mt6's option list is not compiled (an empty one tests nothing)
            Match::Hbh(o) if o.flags & IP6T_OPTS_OPTS != 0 && o.optsnr != 0 => {
                Some("-m hbh --hbh-opts")
            }
            Match::Dst(o) if o.flags & IP6T_OPTS_OPTS != 0 && o.optsnr != 0 => {
                Some("-m dst --dst-opts")
            }
            // rt_mt6's type-0 address list (`--rt-0-addrs`, strict or not) is not compiled
            Match::Rt(r) if r.flags & IP6T_RT_FST_MASK != 0 => Some("-m rt --rt-0-addrs"),
            // eui64_mt6 tests `par->fragoff`, which ip6t_do_table leaves uninitialized unless
            // an entry with a protocol ran before, and reads eth_hdr() even where the MAC
            // header is not set: its result can depend on uninitialized state (SEMANTICS.md)
            Match::Eui64(_) => Some("-m eui64 (reads uninitialized kernel state)"),
            Match::TcpMss(_) if ipv6 => Some("-m tcpmss in IPv6"),
            Match::Addrtype(_) | Match::AddrtypeV1(_) if ipv6 => Some("-m addrtype in IPv6"),
            Match::Recent(_) if ipv6 => Some("-m recent in IPv6"),
            Match::Hashlimit(_) if ipv6 => Some("-m hashlimit in IPv6"),
            _ => None,
        };
        if let Some(what) = what {
            return refuse(what);
        }
    }
    let IpPart::V6(ip) = &entry.ip else {
        return Ok(());
    };
    let with_proto = ip.flags & IP6T_F_PROTO != 0;
    if with_proto && ip.proto > 0xff {
        return refuse("a protocol above 255");
    }
    // Without IP6T_F_PROTO the kernel does not look for the upper-layer header, and such a
    // rule's tcp, udp or icmp6 match reads whatever offset an earlier rule found: only a
    // hand-made blob does that (ip6tables sets the flag with every -p).
    let transport = entry.matches.iter().any(|m| {
        matches!(
            m,
            Match::Tcp(_) | Match::Udp(_) | Match::Icmp6(_) | Match::Multiport(_)
        )
    });
    if transport && !with_proto {
        return refuse("a transport match without IP6T_F_PROTO");
    }
    Ok(())
}

fn range(r: [u16; 2]) -> ir::PortRange {
    ir::PortRange { lo: r[0], hi: r[1] }
}

fn ipv4(bytes: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

/// `-m conntrack` in the IR: each test present when its XT_CONNTRACK_* flag is set
/// (unknown flags are ignored, as the kernel does).
fn conntrack(c: &ipt_abi::ConntrackInfo) -> ir::CtMatch {
    let on = |f: u16| c.match_flags & f != 0;
    let inv = |f: u16| c.invert_flags & f != 0;
    let addr = |f: u16, a: &ipt_abi::CtAddr| {
        on(f).then_some(ir::CtAddr {
            addr: a.addr,
            mask: a.mask,
            invert: inv(f),
        })
    };
    let port = |f: u16, r: [u16; 2]| {
        on(f).then_some(ir::CtPort {
            range: range(r),
            invert: inv(f),
        })
    };
    ir::CtMatch {
        state: on(XT_CONNTRACK_STATE).then_some((c.state_mask, inv(XT_CONNTRACK_STATE))),
        dir_original: on(XT_CONNTRACK_DIRECTION).then_some(!inv(XT_CONNTRACK_DIRECTION)),
        origsrc: addr(XT_CONNTRACK_ORIGSRC, &c.origsrc),
        origdst: addr(XT_CONNTRACK_ORIGDST, &c.origdst),
        replsrc: addr(XT_CONNTRACK_REPLSRC, &c.replsrc),
        repldst: addr(XT_CONNTRACK_REPLDST, &c.repldst),
        // above 255 is refused before (nf_ct_protonum is a u8)
        proto: on(XT_CONNTRACK_PROTO).then_some((c.l4proto as u8, inv(XT_CONNTRACK_PROTO))),
        origsrc_port: port(XT_CONNTRACK_ORIGSRC_PORT, c.origsrc_port),
        origdst_port: port(XT_CONNTRACK_ORIGDST_PORT, c.origdst_port),
        replsrc_port: port(XT_CONNTRACK_REPLSRC_PORT, c.replsrc_port),
        repldst_port: port(XT_CONNTRACK_REPLDST_PORT, c.repldst_port),
        status: on(XT_CONNTRACK_STATUS)
            .then_some((u32::from(c.status_mask), inv(XT_CONNTRACK_STATUS))),
        expires: on(XT_CONNTRACK_EXPIRES).then_some((
            c.expires[0],
            c.expires[1],
            inv(XT_CONNTRACK_EXPIRES),
        )),
    }
}

fn extension(m: &Match, family: Family, limit_slot: u32, named: &Named<'_>) -> Option<ir::Match> {
    let recent = named.recent;
    Some(match m {
        Match::Tcp(t) => ir::Match::Tcp(ir::TcpMatch {
            sport: range(t.spts),
            dport: range(t.dpts),
            flags_mask: t.flg_mask,
            flags_cmp: t.flg_cmp,
            option: t.option,
            inv_sport: t.invflags & XT_TCP_INV_SRCPT != 0,
            inv_dport: t.invflags & XT_TCP_INV_DSTPT != 0,
            inv_flags: t.invflags & XT_TCP_INV_FLAGS != 0,
            inv_option: t.invflags & XT_TCP_INV_OPTION != 0,
        }),
        Match::Udp(u) => ir::Match::Udp(ir::UdpMatch {
            sport: range(u.spts),
            dport: range(u.dpts),
            inv_sport: u.invflags & XT_UDP_INV_SRCPT != 0,
            inv_dport: u.invflags & XT_UDP_INV_DSTPT != 0,
        }),
        Match::Icmp(i) => ir::Match::Icmp(ir::IcmpMatch {
            icmp_type: i.icmp_type,
            code_min: i.code[0],
            code_max: i.code[1],
            invert: i.invflags & IPT_ICMP_INV != 0,
        }),
        Match::Multiport(p) => ir::Match::Multiport(ir::MultiportMatch {
            mode: match p.flags {
                XT_MULTIPORT_SOURCE => ir::MultiportMode::Source,
                XT_MULTIPORT_DESTINATION => ir::MultiportMode::Destination,
                _ => ir::MultiportMode::Either,
            },
            count: p.count,
            ports: p.ports,
            pflags: p.pflags,
            invert: p.invert != 0,
        }),
        Match::Conntrack(c) => ir::Match::Conntrack(conntrack(&c.info())),
        Match::State(st) => ir::Match::State(st.statemask),
        Match::Mac(m) => ir::Match::Mac {
            src: m.srcaddr,
            invert: m.invert as u32,
        },
        Match::PktType(t) => ir::Match::PktType {
            // a type above 255 never equals skb->pkt_type (3 bits)
            pkttype: u8::try_from(t.pkttype).unwrap_or(0xff),
            invert: t.invert != 0,
        },
        Match::TcpMss(t) => ir::Match::TcpMss(ir::TcpMssMatch {
            min: t.mss_min,
            max: t.mss_max,
            invert: t.invert,
            frag_nomatch: ipt_abi::ext::nonfirst_frag_fix(),
        }),
        Match::Mark(m) => ir::Match::Mark {
            mark: m.mark,
            mask: m.mask,
            invert: m.invert != 0,
        },
        Match::IpRange(r) if family == Family::Ipv6 => ir::Match::IpRange6(ir::IpRange6Match {
            src: (r.flags & IPRANGE_SRC != 0)
                .then(|| (Ipv6Addr::from(r.src_min), Ipv6Addr::from(r.src_max))),
            dst: (r.flags & IPRANGE_DST != 0)
                .then(|| (Ipv6Addr::from(r.dst_min), Ipv6Addr::from(r.dst_max))),
            inv_src: r.flags & IPRANGE_SRC_INV != 0,
            inv_dst: r.flags & IPRANGE_DST_INV != 0,
        }),
        Match::IpRange(r) => ir::Match::IpRange(ir::IpRangeMatch {
            src: (r.flags & IPRANGE_SRC != 0).then(|| (ipv4(&r.src_min), ipv4(&r.src_max))),
            dst: (r.flags & IPRANGE_DST != 0).then(|| (ipv4(&r.dst_min), ipv4(&r.dst_max))),
            inv_src: r.flags & IPRANGE_SRC_INV != 0,
            inv_dst: r.flags & IPRANGE_DST_INV != 0,
        }),
        Match::Icmp6(i) => ir::Match::Icmp6(ir::IcmpMatch {
            icmp_type: i.icmp_type,
            code_min: i.code[0],
            code_max: i.code[1],
            invert: i.invflags & IP6T_ICMP_INV != 0,
        }),
        Match::Hl(h) => ir::Match::HopLimit {
            mode: h.mode,
            value: h.hop_limit,
        },
        Match::Frag(f) => ir::Match::Frag(ir::FragMatch {
            ids: (f.ids[0], f.ids[1]),
            flags: f.flags,
            inv_ids: f.invflags & IP6T_FRAG_INV_IDS != 0,
        }),
        Match::Ipv6Header(h) => ir::Match::Ipv6Header(ir::Ipv6HeaderMatch {
            matchflags: h.matchflags,
            invflags: h.invflags,
            soft: h.modeflag != 0,
        }),
        Match::Hbh(o) | Match::Dst(o) => ir::Match::Opts(ir::OptsMatch {
            dst: matches!(m, Match::Dst(_)),
            hdrlen: (o.flags & IP6T_OPTS_LEN != 0).then_some(o.hdrlen),
            inv_len: o.invflags & IP6T_OPTS_INV_LEN != 0,
            short_hotdrop: ipt_abi::ext::exthdr_short_hotdrop(),
        }),
        Match::Rt(r) => ir::Match::Rt(ir::RtMatch {
            segsleft: (r.segsleft[0], r.segsleft[1]),
            rt_type: (r.flags & IP6T_RT_TYP != 0).then_some(r.rt_type),
            hdrlen: (r.flags & IP6T_RT_LEN != 0).then_some(r.hdrlen),
            res: r.flags & IP6T_RT_RES != 0,
            inv_type: r.invflags & IP6T_RT_INV_TYP != 0,
            inv_segsleft: r.invflags & IP6T_RT_INV_SGS != 0,
            inv_len: r.invflags & IP6T_RT_INV_LEN != 0,
            short_hotdrop: ipt_abi::ext::exthdr_short_hotdrop(),
        }),
        Match::Recent(r) => {
            let i = r.info();
            // every name has its list (recent_lists made them from the same table)
            let list = recent.iter().position(|l| l.name == r.name())?;
            ir::Match::Recent(ir::RecentMatch {
                list: list as u32,
                shape: recent[list].shape,
                check_set: i.check_set,
                invert: i.invert != 0,
                seconds: i.seconds,
                window: i.seconds.wrapping_mul(ipt_abi::ext::kernel_hz()),
                hit_count: i.hit_count,
                dest: i.side == ipt_abi::abi::XT_RECENT_DEST,
            })
        }
        Match::Limit(l) => {
            let hz = ipt_abi::ext::kernel_hz();
            let (cost, credit_cap, _) = l.bucket(hz);
            ir::Match::Limit(ir::LimitMatch {
                slot: limit_slot,
                cost,
                credit_cap,
                credits_per_jiffy: ipt_abi::ext::credits_per_jiffy(hz),
            })
        }
        // addrtype_mt_v0: `match_type(...) ^ invert` narrowed to a bool: only bit 0 inverts
        Match::Addrtype(a) => ir::Match::Addrtype(ir::AddrtypeMatch {
            src: a.source,
            dst: a.dest,
            inv_src: a.invert_source & 1 != 0,
            inv_dst: a.invert_dest & 1 != 0,
            dev: ir::AddrtypeDev::Any,
        }),
        Match::AddrtypeV1(a) => ir::Match::Addrtype(ir::AddrtypeMatch {
            src: a.source,
            dst: a.dest,
            inv_src: a.flags & XT_ADDRTYPE_INVERT_SOURCE != 0,
            inv_dst: a.flags & XT_ADDRTYPE_INVERT_DEST != 0,
            dev: if a.flags & XT_ADDRTYPE_LIMIT_IFACE_IN != 0 {
                ir::AddrtypeDev::In
            } else if a.flags & XT_ADDRTYPE_LIMIT_IFACE_OUT != 0 {
                ir::AddrtypeDev::Out
            } else {
                ir::AddrtypeDev::Any
            },
        }),
        Match::Owner(o) => ir::Match::Owner(ir::OwnerMatch {
            tests: o.r#match,
            invert: o.invert,
            uid: (o.uid_min, o.uid_max),
            gid: (o.gid_min, o.gid_max),
        }),
        Match::Hashlimit(h) => {
            // every name has its table (hashlimit_tables made them from the same table)
            let i = named.hashlimit.iter().position(|t| t.name == h.name())?;
            ir::Match::Hashlimit(hashlimit_ir(h, i as u32, &named.hashlimit[i]))
        }
        Match::Comment(_) => return None,
        // refused by `refuse_unsupported` before it gets here
        Match::Eui64(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipt_abi::build::{Rule, RuleTarget, TableBuilder};

    fn programs(b: &TableBuilder) -> Vec<ir::Program> {
        translate(&b.build().expect("valid table")).expect("translates")
    }

    #[test]
    fn empty_filter_table_is_three_accept_policies() {
        let progs = programs(&TableBuilder::filter());
        let hooks: Vec<_> = progs.iter().map(|p| p.hook).collect();
        assert_eq!(
            hooks,
            [ir::Hook::LocalIn, ir::Hook::Forward, ir::Hook::LocalOut]
        );
        for (i, p) in progs.iter().enumerate() {
            assert_eq!(
                p.policy,
                ir::Policy {
                    verdict: ir::Verdict::Accept,
                    counter: i as u32
                }
            );
            let entry = &p.chains[&p.entry];
            // The policy entry itself is reached by falling through: counted, then leaves.
            assert_eq!(entry.rules.len(), 1);
            assert_eq!(entry.rules[0].action, ir::Action::Accept);
            assert_eq!(entry.rules[0].counter, i as u32);
        }
    }

    #[test]
    fn rules_keep_entry_indices_and_kernel_match_order() {
        let mut b = TableBuilder::filter();
        b.policy("INPUT", Verdict::Drop);
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Accept)
                .src([10, 0, 0, 0], 8)
                .udp_dport(53),
        );
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Drop).comment("nothing to test"),
        );
        let input = &programs(&b)[0];
        let rules = &input.chains[&input.entry].rules;
        // The unconditional DROP leaves: the policy entry after it is reached only by RETURN.
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].counter, 0);
        assert!(matches!(
            rules[0].matches[0],
            ir::Match::Ipv4Src { invert: false, .. }
        ));
        assert!(matches!(
            rules[0].matches[1],
            ir::Match::Protocol {
                proto: 17,
                invert: false
            }
        ));
        assert!(
            matches!(rules[0].matches[2], ir::Match::Udp(u) if u.dport == ir::PortRange::one(53))
        );
        assert!(rules[1].matches.is_empty(), "a comment compiles to nothing");
        assert_eq!(rules[1].action, ir::Action::Drop);
        assert_eq!(
            input.policy,
            ir::Policy {
                verdict: ir::Verdict::Drop,
                counter: 2
            }
        );
    }

    #[test]
    fn jumps_gotos_and_returns_become_calls_with_chain_end_counters() {
        let mut b = TableBuilder::filter();
        b.rule("INPUT", Rule::new(RuleTarget::Jump("a".into())).proto(6));
        b.rule("INPUT", Rule::new(RuleTarget::Goto("b".into())));
        b.rule("a", Rule::new(RuleTarget::Return).proto(17));
        b.rule("a", Rule::new(RuleTarget::Drop));
        b.user_chain("b");
        let table = b.build().expect("valid");
        let input = &translate(&table).expect("translates")[0];
        let entry = &input.chains[&input.entry];
        let ir::Action::Call(a) = entry.rules[0].action else {
            panic!("jump is a call: {:?}", entry.rules[0])
        };
        let ir::Action::Goto(bb) = entry.rules[1].action else {
            panic!("goto: {:?}", entry.rules[1])
        };
        // The unconditional goto leaves: nothing after it belongs to the entry chain.
        assert_eq!(entry.rules.len(), 2);
        let chain_a = &input.chains[&a];
        assert_eq!(
            chain_a.rules.len(),
            2,
            "the RETURN rule, then the DROP that leaves"
        );
        assert_eq!(chain_a.rules[0].action, ir::Action::Return);
        assert_eq!(chain_a.rules[1].action, ir::Action::Drop);
        let chain_b = &input.chains[&bb];
        assert_eq!(chain_b.rules.len(), 1);
        assert_eq!(chain_b.rules[0].action, ir::Action::Return);
        assert_eq!(
            table.entries[chain_b.rules[0].counter as usize].verdict(),
            Some(Verdict::Return)
        );
        // Only INPUT reaches the user chains.
        assert_eq!(translate(&table).expect("translates")[1].chains.len(), 1);
    }

    /// An unconditional LOG goes on to the next rule (it is not a verdict); an unconditional
    /// REJECT ends the chain like DROP.
    #[test]
    fn log_goes_on_and_reject_leaves() {
        let mut b = TableBuilder::filter();
        let log = || RuleTarget::Log {
            level: 4,
            flags: 0,
            prefix: "x: ".into(),
        };
        b.rule("INPUT", Rule::new(log()));
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Reject(ipt_abi::abi::IPT_TCP_RESET)).proto(6),
        );
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Reject(IPT_ICMP_ADMIN_PROHIBITED)),
        );
        b.rule("INPUT", Rule::new(RuleTarget::Accept));
        let table = b.build().expect("valid");
        let input = &translate(&table).expect("translates")[0];
        let rules = &input.chains[&input.entry].rules;
        assert_eq!(
            rules.len(),
            3,
            "LOG, REJECT, REJECT; the ACCEPT is unreachable: {rules:?}"
        );
        assert!(
            matches!(rules[0].action, ir::Action::Log(l) if l.level == 4 && &l.prefix[..3] == b"x: ")
        );
        assert_eq!(rules[1].action, ir::Action::Reject(ir::Reject { with: 7 }));
        assert_eq!(rules[2].action, ir::Action::Reject(ir::Reject { with: 8 }));
    }

    #[test]
    fn never_matching_entries_are_left_out() {
        let mut b = TableBuilder::filter();
        // IPT_INV_FRAG without IPT_F_FRAG: the kernel's NF_INVF makes the entry never match.
        b.rule("OUTPUT", Rule::new(RuleTarget::Drop).invert(IPT_INV_FRAG));
        let out = &programs(&b)[2];
        let rules = &out.chains[&out.entry].rules;
        assert_eq!(rules.len(), 1, "only the policy entry remains: {rules:?}");
        assert_eq!(rules[0].counter, 3);
    }

    #[test]
    fn tcpmss_keeps_its_bounds_and_invert_byte() {
        let mss = |invert| {
            Match::TcpMss(ipt_abi::abi::XtTcpmssMatchInfo {
                mss_min: 536,
                mss_max: 1460,
                invert,
                pad: 0x5a,
            })
        };
        let mut b = TableBuilder::filter();
        b.rule("FORWARD", Rule::new(RuleTarget::Drop).proto(6).with(mss(1)));
        b.rule(
            "FORWARD",
            Rule::new(RuleTarget::Accept).proto(6).with(mss(7)),
        );
        let fwd = &programs(&b)[1];
        let rules = &fwd.chains[&fwd.entry].rules;
        for (rule, invert) in rules.iter().zip([1u8, 7]) {
            assert!(
                rule.matches.contains(&ir::Match::TcpMss(ir::TcpMssMatch {
                    min: 536,
                    max: 1460,
                    invert,
                    frag_nomatch: ipt_abi::ext::nonfirst_frag_fix(),
                })),
                "{rule:?}"
            );
        }
    }

    #[test]
    fn inverted_fragment_and_interfaces_are_kept() {
        let mut b = TableBuilder::filter();
        b.rule(
            "FORWARD",
            Rule::new(RuleTarget::Accept)
                .frag()
                .invert(IPT_INV_FRAG)
                .iniface("eth+")
                .outiface("lo"),
        );
        let fwd = &programs(&b)[1];
        let m = &fwd.chains[&fwd.entry].rules[0].matches;
        assert!(m.contains(&ir::Match::Fragment { invert: true }));
        assert!(m.iter().any(|m| matches!(m, ir::Match::InIface(i) if &i.name[..4] == b"eth\0" || &i.name[..3] == b"eth")));
        assert!(m
            .iter()
            .any(|m| matches!(m, ir::Match::OutIface(i) if &i.name[..3] == b"lo\0")));
    }

    #[test]
    fn rt_translates_and_its_address_list_is_refused() {
        use ipt_abi::abi::{Ip6tRt, IP6T_RT_FST, IP6T_RT_INV_SGS};
        let rt = |flags, invflags| {
            let mut r = Ip6tRt {
                rt_type: 0,
                segsleft: [1, 5],
                hdrlen: 24,
                flags,
                invflags,
                ..Ip6tRt::default()
            };
            r.addrnr = u8::from(flags & IP6T_RT_FST != 0);
            Match::Rt(Box::new(r))
        };
        let mut b = TableBuilder::filter6();
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Drop)
                .with(rt(IP6T_RT_TYP | IP6T_RT_LEN | IP6T_RT_RES, IP6T_RT_INV_SGS)),
        );
        let input = &programs(&b)[0];
        assert_eq!(
            input.chains[&input.entry].rules[0].matches,
            [ir::Match::Rt(ir::RtMatch {
                segsleft: (1, 5),
                rt_type: Some(0),
                hdrlen: Some(24),
                res: true,
                inv_type: false,
                inv_segsleft: true,
                inv_len: false,
                short_hotdrop: ipt_abi::ext::exthdr_short_hotdrop(),
            })]
        );
        let mut b = TableBuilder::filter6();
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Drop).with(rt(IP6T_RT_TYP | IP6T_RT_FST, 0)),
        );
        let err = translate(&b.build().expect("valid table")).expect_err("refused");
        assert!(
            matches!(
                err,
                XlateError::Unsupported {
                    what: "-m rt --rt-0-addrs",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn ipv6header_translates() {
        use ipt_abi::abi::Ip6tIpv6headerInfo;
        let mut b = TableBuilder::filter6();
        b.rule(
            "FORWARD",
            Rule::new(RuleTarget::Drop).with(Match::Ipv6Header(Ip6tIpv6headerInfo {
                matchflags: 128,
                invflags: 0,
                modeflag: 1,
            })),
        );
        let fwd = &programs(&b)[1];
        assert_eq!(
            fwd.chains[&fwd.entry].rules[0].matches,
            [ir::Match::Ipv6Header(ir::Ipv6HeaderMatch {
                matchflags: 128,
                invflags: 0,
                soft: true,
            })]
        );
    }

    #[test]
    fn hbh_and_dst_translate_and_their_option_lists_are_refused() {
        use ipt_abi::abi::Ip6tOpts;
        let opts = |flags, optsnr| Ip6tOpts {
            hdrlen: 16,
            flags,
            invflags: IP6T_OPTS_INV_LEN,
            optsnr,
            ..Ip6tOpts::default()
        };
        let mut b = TableBuilder::filter6();
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Drop)
                .with(Match::Hbh(opts(IP6T_OPTS_LEN, 0)))
                .with(Match::Dst(opts(IP6T_OPTS_OPTS, 0))),
        );
        let input = &programs(&b)[0];
        let short_hotdrop = ipt_abi::ext::exthdr_short_hotdrop();
        assert_eq!(
            input.chains[&input.entry].rules[0].matches,
            [
                ir::Match::Opts(ir::OptsMatch {
                    dst: false,
                    hdrlen: Some(16),
                    inv_len: true,
                    short_hotdrop,
                }),
                ir::Match::Opts(ir::OptsMatch {
                    dst: true,
                    hdrlen: None,
                    inv_len: true,
                    short_hotdrop,
                })
            ]
        );
        for (m, what) in [
            (
                Match::Eui64(Default::default()),
                "-m eui64 (reads uninitialized kernel state)",
            ),
            (Match::Hbh(opts(IP6T_OPTS_OPTS, 1)), "-m hbh --hbh-opts"),
            (Match::Dst(opts(IP6T_OPTS_OPTS, 2)), "-m dst --dst-opts"),
        ] {
            let mut b = TableBuilder::filter6();
            b.rule("INPUT", Rule::new(RuleTarget::Drop).with(m));
            let err = translate(&b.build().expect("valid table")).expect_err("refused");
            assert!(
                matches!(err, XlateError::Unsupported { what: w, .. } if w == what),
                "{err:?}"
            );
        }
    }
}
