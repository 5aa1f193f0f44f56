//! Classified runs: long stretches of IPv4 rules of any shape made of addresses under prefix
//! masks, protocols, tcp and udp port ranges and interfaces (each possibly inverted), compiled
//! into a fixed program that classifies through maps, so that its cost per packet and its
//! verification stop growing with the number of rules.
//!
//! # Sets and the first match
//!
//! Each rule is, per dimension (source, destination, protocol, source port, destination port,
//! in and out interface), a set of values: everything, an interval, or the complement of one.
//! A prefix is an interval of the address in host order; an interface name pattern (the name
//! under a mask of whole leading bytes, as iptables writes `eth0` and `eth+`) becomes an
//! interval of "interface classes": the patterns of the run, sorted so that the patterns
//! extending one follow it, numbered, and looked up per packet in an LPM trie on the name
//! (the longest pattern matching the name is its class; a rule's pattern matches every name
//! of the classes of its subtree, no other).
//!
//! The kernel's walk stops at the first rule that matches, or that hotdrops: a tcp or udp
//! match whose header is missing drops the packet once the rule's IP part matched, and no
//! port match passes in a non-first fragment. So each tree has three roots, one per
//! transport state of the packet (the guard bits of its protocol): ports valid (the rules as
//! they are), no port match (the rules with a tcp or udp match left out), hotdrop (their
//! ports taken as any port: every such rule whose IP part holds the packet ends the walk, as
//! a hotdrop). The first rule whose sets hold the packet's values in the tree of its state is
//! then exactly the rule where the kernel's walk ends.
//!
//! # Trees
//!
//! Rules are grouped by the dimensions in which they are narrow (at most half of the values),
//! up to [`MAX_TREES`] groups; each group is a decision tree (HiCuts: a node cuts one
//! dimension of its box into 2^b equal parts, by bits of the value), whose leaves hold at most
//! [`LEAF_MAX`] rules: the group's rules that meet the leaf's box, in order, up to the first
//! that covers the box whole, without those an earlier one holds there. Where no cut separates
//! a node's rules, it is cut where they differ most. A packet walks every tree (a node: one
//! array lookup and a shift), then checks the rules of its leaf exactly, [`CHUNK`] records per
//! lookup, the packet's values in registers (each record's interval per dimension,
//! `(value - lo) <= span` in u32 arithmetic, a complement being the interval that wraps
//! around), keeping the lowest rule index found ([`rec::BEST`]). A leaf's check is exact, so
//! a leaf need only hold every rule that can match in its box, in order. The walk and the
//! checks are unrolled as deep and as wide as the run's trees are.
//!
//! A run whose trees would not fit ([`MAX_DEPTH`], the node budget) is not classified: its
//! rules are compiled one after the other, as before. Stretches shorter than [`MIN_RULES`]
//! are not tried.

use rustc_hash::FxHashMap;

use crate::builder::{Label, MapKind, MapRef, MapSpec};
use crate::insn::{alu32, alu64, ldx, mov64, st, stx, AluOp, Insn, JmpOp, Reg, Size, Src};
use crate::ir::{self, Action};
use crate::EmitError;

use super::chains::Frame;
use super::lower::{copy_addr, extract, Field, Test};
use super::record::{packed, rec};
use super::runs::lookup_at;
use super::{Generator, HOTDROP};

/// Fewest rules in a classified run: below, compiled rules cost less to verify (a classified
/// run's program verifies in about 20 ms on 6.18, 100 compiled rules in 15) and about as much
/// per packet (a flat 150 to 200 ns, about 3 ns per compiled rule).
pub(super) const MIN_RULES: usize = 192;
/// Rules in a node below which it is not cut.
const LEAF_TARGET: usize = 8;
/// Most rules a leaf holds (its checks are unrolled): where no cut separates a node's rules.
pub(super) const LEAF_MAX: usize = 24;
/// Most cuts from a root to a leaf (the walk is unrolled).
pub(super) const MAX_DEPTH: usize = 20;
/// Most trees of a run (each costs a packet its walk).
pub(super) const MAX_TREES: usize = 4;
/// Most bits one cut takes from a dimension.
const CUT_BITS: u32 = 8;
/// A cut's children and the rules they hold may be at most this many times its node's
/// rules (HiCuts' space factor).
const SPACE_FACTOR: usize = 4;
/// Leaf entries and nodes a run may have per rule, beyond [`BUDGET_BASE`] (past it, the run
/// stays compiled): a node is 16 bytes, a leaf entry a record of 16 to 64.
const BUDGET_PER_RULE: usize = 64;
/// Leaf entries and nodes any run may have (a few hundred rules of many shapes take some
/// thousands of nodes: every cut has 2 to 256 children).
const BUDGET_BASE: usize = 1 << 16;

const SRC: usize = 0;
const DST: usize = 1;
const PROTO: usize = 2;
const SPORT: usize = 3;
const DPORT: usize = 4;
const IN: usize = 5;
const OUT: usize = 6;
const DIMS: usize = 7;

/// Bits of the port dimensions.
const PORT_BITS: u32 = 16;
/// A tree's roots: ports valid, no port match, hotdrop.
const STATES: usize = 3;

/// Records in one value of the leaf map: a leaf takes whole values, one lookup each.
const CHUNK: usize = 8;
/// Leaf record modes: check every dimension; a hotdrop once the IP part holds (a rule with a
/// port match in the tree of hotdropping packets); the leaf's end.
const MODE_CHECK: u8 = 0;
const MODE_HOT: u8 = 1;
const MODE_END: u8 = 2;
/// Registers a leaf's checks keep the packet's values in (r7 to r9 are reloaded after the
/// run); a seventh value is read from the stack.
const VALUE_REGS: [Reg; 6] = [Reg::R3, Reg::R4, Reg::R5, Reg::R7, Reg::R8, Reg::R9];

/// Node header bit: a leaf (its low bits: the number of records).
const LEAF: u32 = 1 << 31;
/// Bytes of a node: header (leaf bit, or cut dimension << 8 | shift), mask, base, unused.
const NODE_SIZE: u32 = 16;
/// ACT of a hotdrop.
const ACT_HOT: i32 = 0xff;
/// `rec::BEST` before a rule is found.
const NO_RULE: i32 = i32::MAX;

/// Stack words of a classified run (IPv4 programs only: the IPv6 header's room).
mod slot {
    /// LPM key of an interface lookup: u32 prefix length, 16 name bytes
    pub const LPM: i16 = -424;
    /// the packet's value in each dimension (u32 each)
    pub const DIMS: i16 = -400;
    /// transport guard state: 0 ports valid, bit 0 no port match, bit 1 hotdrop
    pub const STATE: i16 = -372;
    /// node index looked up next
    pub const NODE: i16 = -368;
    /// first record of the leaf
    pub const LBASE: i16 = -364;
    /// action index of the rule found (or ACT_HOT)
    pub const ACT: i16 = -360;
    /// record index looked up
    pub const IDX: i16 = -356;
}

fn dim_slot(d: usize) -> i16 {
    slot::DIMS + 4 * d as i16
}

/// One dimension of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Set {
    Full,
    /// inclusive
    In(u32, u32),
    /// every value of the dimension but these (inclusive)
    Out(u32, u32),
}

/// A rule of a classified run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CRule {
    sets: [Set; DIMS],
    /// has a tcp or udp match (left out where no port match passes, any port where the
    /// packet hotdrops)
    guard: bool,
    /// index in the run
    idx: u32,
    /// counter slot
    slot: u32,
    /// index in the run's actions
    act: u8,
}

/// An interface test in classifiable form: the pattern (the name's bytes under the mask) and
/// whether it is inverted.
type IfacePattern = (Vec<u8>, bool);

/// What a rule's tests say, before interface classes are numbered.
struct Parsed {
    sets: [Set; DIMS],
    ifaces: [Option<IfacePattern>; 2],
    guard: bool,
}

/// The tcp and udp guards, as lowering writes them.
fn guard_of(proto: u8) -> Option<Test> {
    match proto {
        6 => Some(Test::Guard {
            need: 20,
            frag1_drops: true,
        }),
        17 => Some(Test::Guard {
            need: 8,
            frag1_drops: false,
        }),
        _ => None,
    }
}

/// The prefix length of a host-order mask, if it is one.
fn prefix_len(mask: u32) -> Option<u32> {
    let len = mask.leading_ones();
    (mask.checked_shl(len).unwrap_or(0) == 0).then_some(len)
}

/// `tests` as sets, if every test is of a kind a classified run holds and the rule can match.
fn parse(tests: &[Test]) -> Option<Parsed> {
    let mut sets = [Set::Full; DIMS];
    let mut seen = [false; DIMS];
    let mut ifaces: [Option<IfacePattern>; 2] = [None, None];
    let mut guard: Option<Test> = None;
    let mut proto: Option<(u8, bool)> = None;
    let mut put = |d: usize, s: Set, seen: &mut [bool; DIMS]| -> Option<()> {
        if std::mem::replace(&mut seen[d], true) {
            return None;
        }
        sets[d] = s;
        Some(())
    };
    for t in tests {
        match *t {
            Test::Addr {
                field,
                addr,
                mask,
                invert,
            } => {
                let d = if field == rec::SADDR { SRC } else { DST };
                let (addr, mask) = (u32::from_be(addr), u32::from_be(mask));
                prefix_len(mask)?;
                // the kernel compares the masked address with the rule's address as stored:
                // one with bits outside its mask never matches
                let set = match (addr & !mask != 0, mask == 0, invert) {
                    (true, _, false) | (false, true, true) => return None,
                    (true, _, true) | (false, true, false) => Set::Full,
                    (false, false, false) => Set::In(addr, addr | !mask),
                    (false, false, true) => Set::Out(addr, addr | !mask),
                };
                put(d, set, &mut seen)?;
            }
            Test::Proto { proto: p, invert } => {
                proto = Some((p, invert));
                let p = u32::from(p);
                put(
                    PROTO,
                    if invert {
                        Set::Out(p, p)
                    } else {
                        Set::In(p, p)
                    },
                    &mut seen,
                )?;
            }
            Test::Guard { .. } if guard.is_none() => guard = Some(*t),
            Test::Port {
                field,
                range,
                invert,
            } => {
                guard?;
                let d = if field == rec::SPORT { SPORT } else { DPORT };
                let (lo, hi) = (u32::from(range.lo), u32::from(range.hi));
                let set = match (lo > hi, lo == 0 && hi == 0xffff, invert) {
                    (true, _, false) | (false, true, true) => return None,
                    (true, _, true) | (false, true, false) => Set::Full,
                    (false, false, false) => Set::In(lo, hi),
                    (false, false, true) => Set::Out(lo, hi),
                };
                put(d, set, &mut seen)?;
            }
            Test::Flags {
                mask: 0,
                cmp: 0,
                invert: false,
            } => {}
            Test::Iface {
                base,
                name,
                mask,
                invert,
            } => {
                let k = mask.iter().take_while(|&&m| m == 0xff).count();
                if mask[k..].iter().any(|&m| m != 0) {
                    return None;
                }
                let d = if base == rec::IN_NAME { IN } else { OUT };
                if std::mem::replace(&mut seen[d], true) {
                    return None;
                }
                if k == 0 {
                    if invert {
                        return None;
                    }
                    continue;
                }
                ifaces[d - IN] = Some((name[..k].to_vec(), invert));
            }
            _ => return None,
        }
    }
    // a guard only behind its own protocol, and ports only behind a guard, in the kernel's
    // order: the IP part, the guard, the ports
    if let Some(g) = guard {
        let (p, inverted) = proto?;
        if inverted || guard_of(p) != Some(g) {
            return None;
        }
        let at = tests.iter().position(|t| *t == g)?;
        let port = |t: &Test| matches!(t, Test::Port { .. } | Test::Flags { .. });
        if tests[..at].iter().any(port) || !tests[at + 1..].iter().all(port) {
            return None;
        }
    }
    Some(Parsed {
        sets,
        ifaces,
        guard: guard.is_some(),
    })
}

/// Actions a classified run may end in (terminal ones: nothing after the rule found runs).
fn terminal(a: Action) -> bool {
    matches!(
        a,
        Action::Accept | Action::Drop | Action::Return | Action::Goto(_)
    )
}

/// Can rule `r` (lowered to `tests`) be part of a classified run?
pub(super) fn classifiable(r: &ir::Rule, tests: &[Test]) -> bool {
    terminal(r.action) && parse(tests).is_some()
}

/// A classified run as the code generator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Classified {
    /// `MapRef::Other` of the nodes and of the leaf records
    nodes: u32,
    leaves: u32,
    /// `MapRef::Other` of the in and out interface LPM tries, when a rule names one
    lpm: [Option<u32>; 2],
    /// the trees, each walked in turn
    trees: Vec<Tree>,
    /// the dimensions a leaf record checks, in record order (ports last)
    checked: Vec<usize>,
    /// whether some rule has a tcp or udp match
    guard: bool,
    /// bytes of a leaf record
    rec_size: u32,
    /// per action index: the position in the run of a rule with that action
    actions: Vec<usize>,
    /// dimensions whose value the packet needs (checked or cut)
    used: u8,
}

impl Classified {
    /// Its maps numbered from `first` instead of 0.
    pub(super) fn renumber(&mut self, first: u32) {
        self.nodes += first;
        self.leaves += first;
        for m in self.lpm.iter_mut().flatten() {
            *m += first;
        }
    }
}

/// One tree of a classified run (three, one per transport state, walked by the same code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tree {
    /// roots: ports valid, no port match, hotdrop
    roots: [u32; STATES],
    /// the dimensions its nodes cut (a bit each)
    cut: u8,
    /// cuts from a root to its deepest leaf (the walk's unrolled levels)
    depth: usize,
    /// rules of its largest leaf (the leaf's unrolled checks)
    leaf: usize,
}

/// A node's box: per dimension its first value and its size in bits.
type Boxed = [(u32, u32); DIMS];

/// The intervals of `r` in dimension `d` (`max`: the dimension's last value), ascending;
/// `hot`: in the tree of hotdropping packets (a port match holds any port).
fn intervals(r: &CRule, d: usize, max: u32, hot: bool) -> ([(u32, u32); 2], usize) {
    let mut out = [(0, 0); 2];
    let mut n = 0;
    let set = if hot && r.guard && (d == SPORT || d == DPORT) {
        Set::Full
    } else {
        r.sets[d]
    };
    match set {
        Set::Full => {
            out[0] = (0, max);
            n = 1;
        }
        Set::In(lo, hi) => {
            out[0] = (lo, hi);
            n = 1;
        }
        Set::Out(lo, hi) => {
            if lo > 0 {
                out[n] = (0, lo - 1);
                n += 1;
            }
            if hi < max {
                out[n] = (hi + 1, max);
                n += 1;
            }
        }
    }
    (out, n)
}

/// The last value of a box dimension.
fn box_hi(b: (u32, u32)) -> u32 {
    (u64::from(b.0) + (1u64 << b.1) - 1) as u32
}

/// Does `r` hold every value of `bx` (`hot`: as in [`intervals`])?
fn covers(r: &CRule, bx: &Boxed, max: &[u32; DIMS], hot: bool) -> bool {
    (0..DIMS).all(|d| {
        let (lo, hi) = (bx[d].0, box_hi(bx[d]));
        let (iv, n) = intervals(r, d, max[d], hot);
        iv[..n].iter().any(|&(a, b)| a <= lo && hi <= b)
    })
}

/// The covered share of dimension `d` is at most a half: cuts there separate the rule.
fn narrow(r: &CRule, d: usize, bits: u32) -> bool {
    let max = ((1u64 << bits) - 1) as u32;
    let (iv, n) = intervals(r, d, max, false);
    let size: u64 = iv[..n]
        .iter()
        .map(|&(a, b)| u64::from(b) - u64::from(a) + 1)
        .sum();
    size * 2 <= 1u64 << bits
}

/// A tree under construction, or the reason it cannot be built.
struct Forest<'a> {
    rules: &'a [CRule],
    /// building the tree of hotdropping packets (see [`intervals`])
    hot: bool,
    bits: [u32; DIMS],
    max: [u32; DIMS],
    nodes: Vec<[u32; 4]>,
    /// leaf lists (indices into `rules`, and the record's mode), each from a [`CHUNK`]
    /// boundary, ended by a [`MODE_END`] record where it does not fill its last chunk
    leaves: Vec<(u32, u8)>,
    /// leaf lists already placed (and whether in a tree of hotdropping packets): first chunk
    dedup: FxHashMap<(Vec<u32>, bool), u32>,
    budget: usize,
    /// deepest leaf and largest leaf since the last [`Forest::tree`] group began
    deepest: usize,
    widest: usize,
}

impl Forest<'_> {
    /// Builds one tree over `members` (ascending); returns its root and the dimensions cut.
    fn tree(&mut self, members: Vec<u32>) -> Option<(u32, u8)> {
        let root = self.nodes.len() as u32;
        self.nodes.push([0; 4]);
        let whole: Boxed = std::array::from_fn(|d| (0, self.bits[d]));
        let mut work = vec![(root, whole, members, 0usize)];
        let mut cut_dims = 0u8;
        while let Some((at, bx, mut list, depth)) = work.pop() {
            if let Some(first) = list
                .iter()
                .position(|&r| covers(&self.rules[r as usize], &bx, &self.max, self.hot))
            {
                list.truncate(first + 1);
            }
            if list.len() <= 4 * LEAF_MAX {
                self.prune(&mut list, &bx);
            }
            self.deepest = self.deepest.max(depth);
            if list.len() <= LEAF_TARGET {
                let (base, count) = self.leaf(list)?;
                self.nodes[at as usize] = [LEAF | count, 0, base, 0];
                continue;
            }
            let cut = if depth < MAX_DEPTH {
                self.choose(&bx, &list)
            } else {
                None
            };
            let (d, b) = match cut {
                Some((d, b, true)) => (d, b),
                // no cut separates these rules (or no depth is left): a leaf if they fit,
                // else the box halved where it is widest, down to single values if need be,
                // where the first rule covers it
                _ if list.len() <= LEAF_MAX => {
                    let (base, count) = self.leaf(list)?;
                    self.nodes[at as usize] = [LEAF | count, 0, base, 0];
                    continue;
                }
                Some((..)) => {
                    // where the rules differ most within the box (a cut where they do not
                    // would copy the node into every child), as finely as a cut goes
                    let d = (0..DIMS)
                        .filter(|&d| bx[d].1 > 0)
                        .map(|d| (self.distinct(&list, &bx, d), bx[d].1, d))
                        .filter(|&(n, ..)| n > 1)
                        .max()
                        .map(|(.., d)| d);
                    let d = d?;
                    (d, CUT_BITS.min(bx[d].1))
                }
                None => return None,
            };
            cut_dims |= 1 << d;
            let shift = bx[d].1 - b;
            let first = self.nodes.len() as u32;
            let n = 1usize << b;
            if self.nodes.len() + n + self.leaves.len() > self.budget {
                return None;
            }
            self.nodes.extend(std::iter::repeat_n([0; 4], n));
            self.nodes[at as usize] = [(d as u32) << 8 | shift, (n - 1) as u32, first, 0];
            let mut children: Vec<Vec<u32>> = vec![Vec::new(); n];
            for &r in &list {
                let (iv, k) = intervals(&self.rules[r as usize], d, self.max[d], self.hot);
                let mut last = None;
                for &(a, z) in &iv[..k] {
                    let Some((c0, c1)) = child_range(a, z, bx[d], shift) else {
                        continue;
                    };
                    // intervals ascend: a child the previous one reached holds the rule
                    let c0 = last.map_or(c0, |l: usize| c0.max(l + 1));
                    for child in &mut children[c0.min(c1 + 1)..=c1] {
                        child.push(r);
                    }
                    last = Some(last.map_or(c1, |l| l.max(c1)));
                }
            }
            for (c, kids) in children.into_iter().enumerate() {
                let mut cb = bx;
                cb[d] = (bx[d].0 + ((c as u32) << shift), shift);
                work.push((first + c as u32, cb, kids, depth + 1));
            }
        }
        Some((root, cut_dims))
    }

    /// How many different sets the rules of `list` have in dimension `d` within `bx`.
    fn distinct(&self, list: &[u32], bx: &Boxed, d: usize) -> usize {
        let (lo, hi) = (bx[d].0, box_hi(bx[d]));
        let mut seen = rustc_hash::FxHashSet::default();
        for &r in list {
            let (iv, n) = intervals(&self.rules[r as usize], d, self.max[d], self.hot);
            let mut clipped = [(0u32, 0u32); 2];
            for (c, &(a, z)) in clipped.iter_mut().zip(&iv[..n]) {
                *c = if z < lo || a > hi {
                    (1, 0)
                } else {
                    (a.max(lo), z.min(hi))
                };
            }
            seen.insert(clipped);
        }
        seen.len()
    }

    /// Drops from `list` the rules that an earlier rule of it holds wherever they meet `bx`
    /// (they are never the first to hold a packet of the box).
    fn prune(&self, list: &mut Vec<u32>, bx: &Boxed) {
        let mut kept: Vec<u32> = Vec::with_capacity(list.len());
        for &r in list.iter() {
            let rule = &self.rules[r as usize];
            let shadowed = kept.iter().any(|&e| {
                let earlier = &self.rules[e as usize];
                (0..DIMS).all(|d| {
                    let (lo, hi) = (bx[d].0, box_hi(bx[d]));
                    let (mine, n) = intervals(rule, d, self.max[d], self.hot);
                    let (theirs, m) = intervals(earlier, d, self.max[d], self.hot);
                    mine[..n].iter().all(|&(a, z)| {
                        let (a, z) = (a.max(lo), z.min(hi));
                        a > z || theirs[..m].iter().any(|&(x, y)| x <= a && z <= y)
                    })
                })
            });
            if !shadowed {
                kept.push(r);
            }
        }
        *list = kept;
    }

    /// The leaf list `list`, shared with an equal one: (first chunk, count).
    fn leaf(&mut self, list: Vec<u32>) -> Option<(u32, u32)> {
        let count = list.len() as u32;
        self.widest = self.widest.max(list.len());
        let key = (list, self.hot);
        if let Some(&base) = self.dedup.get(&key) {
            return Some((base, count));
        }
        let base = (self.leaves.len() / CHUNK) as u32;
        if self.nodes.len() + self.leaves.len() + key.0.len() + CHUNK > self.budget {
            return None;
        }
        for &r in &key.0 {
            let hot = self.hot && self.rules[r as usize].guard;
            self.leaves
                .push((r, if hot { MODE_HOT } else { MODE_CHECK }));
        }
        // an end record where the leaf does not fill its last chunk (an empty leaf: one)
        if key.0.len() % CHUNK != 0 || key.0.is_empty() {
            let padded = (self.leaves.len() + 1).next_multiple_of(CHUNK);
            self.leaves.resize(padded, (0, MODE_END));
        }
        self.dedup.insert(key, base);
        Some((base, count))
    }

    /// The cut of `bx` for `list`: per dimension the most bits whose children and the rules
    /// they hold stay within SPACE_FACTOR times the rules, then the dimension whose largest
    /// child is smallest; and whether that child holds fewer rules than `list`.
    fn choose(&self, bx: &Boxed, list: &[u32]) -> Option<(usize, u32, bool)> {
        let n = list.len();
        let mut best: Option<(usize, usize, usize, u32)> = None; // (max, sum, d, b)
        let mut diff = Vec::new();
        // per rule meeting only some children: the children its intervals meet under the
        // finest cut, the first of each rule marked
        let mut ranges: Vec<(usize, usize, bool)> = Vec::with_capacity(n);
        for (d, &dim) in bx.iter().enumerate() {
            if dim.1 == 0 {
                continue;
            }
            let top = CUT_BITS.min(dim.1);
            let last_child = (1usize << top) - 1;
            ranges.clear();
            // rules in every child, counted once
            let mut full = 0usize;
            for &r in list {
                let (iv, k) = intervals(&self.rules[r as usize], d, self.max[d], self.hot);
                let mut first = true;
                let at = ranges.len();
                for &(a, z) in &iv[..k] {
                    if let Some((c0, c1)) = child_range(a, z, dim, dim.1 - top) {
                        ranges.push((c0, c1, first));
                        first = false;
                    }
                }
                if ranges.len() == at + 1 && ranges[at].0 == 0 && ranges[at].1 == last_child {
                    ranges.truncate(at);
                    full += 1;
                }
            }
            for b in (1..=top).rev() {
                let shift = top - b;
                let width = 1usize << b;
                diff.clear();
                diff.resize(width + 1, 0i64);
                let mut sum = full * width;
                let mut last: Option<usize> = None;
                for &(c0, c1, first) in &ranges {
                    if first {
                        last = None;
                    }
                    let (c0, c1) = (c0 >> shift, c1 >> shift);
                    // a rule's intervals ascend: a child its previous one met holds it already
                    let c0 = last.map_or(c0, |l| c0.max(l + 1));
                    if c0 > c1 {
                        continue;
                    }
                    diff[c0] += 1;
                    diff[c1 + 1] -= 1;
                    sum += c1 - c0 + 1;
                    last = Some(c1);
                }
                let mut run = 0i64;
                let mut max = 0usize;
                for v in &diff[..width] {
                    run += v;
                    max = max.max(run as usize);
                }
                let max = max + full;
                if sum + width <= SPACE_FACTOR * n || b == 1 {
                    if best.is_none_or(|x| (max, sum) < (x.0, x.1)) {
                        best = Some((max, sum, d, b));
                    }
                    break;
                }
            }
        }
        best.map(|(max, _, d, b)| (d, b, max < n))
    }
}

/// The children (of a box dimension `bx` cut at `shift`) that interval `[a, z]` meets.
fn child_range(a: u32, z: u32, bx: (u32, u32), shift: u32) -> Option<(usize, usize)> {
    let (lo, hi) = (bx.0, box_hi(bx));
    if z < lo || a > hi {
        return None;
    }
    let (a, z) = (a.max(lo) - lo, z.min(hi) - lo);
    Some(((a >> shift) as usize, (z >> shift) as usize))
}

/// Bits of a dimension of `n` values (at least one value).
fn bits_for(n: usize) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

/// The classified form of `rules` (lowered to `tests`; every one [`classifiable`]), its maps
/// numbered from `first_map`; None when its trees would not fit.
pub(super) fn build(
    rules: &[ir::Rule],
    tests: &[Vec<Test>],
    first_map: u32,
) -> Option<(Classified, Vec<MapSpec>)> {
    let parsed: Vec<Parsed> = tests.iter().map(|t| parse(t)).collect::<Option<_>>()?;
    // interface classes: the patterns sorted, a pattern's extensions right after it
    let mut classes: [Vec<Vec<u8>>; 2] = [vec![Vec::new()], vec![Vec::new()]];
    for p in &parsed {
        for (k, i) in p.ifaces.iter().enumerate() {
            if let Some((pat, _)) = i {
                classes[k].push(pat.clone());
            }
        }
    }
    for c in &mut classes {
        c.sort();
        c.dedup();
    }
    let class_of = |k: usize, pat: &[u8]| -> (u32, u32) {
        let c = &classes[k];
        let first = c.binary_search_by(|x| x.as_slice().cmp(pat)).unwrap_or(0);
        let last = first + c[first..].iter().take_while(|x| x.starts_with(pat)).count() - 1;
        (first as u32, last as u32)
    };
    let mut actions: Vec<Action> = Vec::new();
    let mut reps: Vec<usize> = Vec::new();
    let mut crules = Vec::with_capacity(rules.len());
    for (i, (p, r)) in parsed.iter().zip(rules).enumerate() {
        let act = match actions.iter().position(|&a| a == r.action) {
            Some(a) => a,
            None => {
                if actions.len() == 8 {
                    return None;
                }
                actions.push(r.action);
                reps.push(i);
                actions.len() - 1
            }
        };
        let mut sets = p.sets;
        for k in 0..2 {
            if let Some((pat, invert)) = &p.ifaces[k] {
                let (a, z) = class_of(k, pat);
                sets[IN + k] = if *invert {
                    Set::Out(a, z)
                } else {
                    Set::In(a, z)
                };
            }
        }
        crules.push(CRule {
            sets,
            guard: p.guard,
            idx: i as u32,
            slot: r.counter,
            act: act as u8,
        });
    }
    let guard = crules.iter().any(|r| r.guard);
    let mut bits = [32, 32, 8, PORT_BITS, PORT_BITS, 0, 0];
    bits[IN] = bits_for(classes[0].len());
    bits[OUT] = bits_for(classes[1].len());
    let max: [u32; DIMS] = std::array::from_fn(|d| ((1u64 << bits[d]) - 1) as u32);
    // an empty set (a complement of everything) never matches: such a rule is not classified
    for r in &crules {
        for (d, &top) in max.iter().enumerate() {
            if let Set::Out(lo, hi) = r.sets[d] {
                let top = if (d == SPORT || d == DPORT) && r.guard {
                    0xffff
                } else {
                    top
                };
                if lo == 0 && hi >= top {
                    return None;
                }
            }
        }
    }
    // groups by the dimensions a rule is narrow in
    let sig = |r: &CRule| -> u8 {
        (0..DIMS)
            .filter(|&d| bits[d] > 0 && narrow(r, d, bits[d]))
            .fold(0u8, |s, d| s | 1 << d)
    };
    let mut groups: Vec<(u8, Vec<u32>)> = Vec::new();
    // a rule equal to an earlier one is never the first to hold a packet: in no tree
    let mut seen = rustc_hash::FxHashSet::default();
    for (i, r) in crules.iter().enumerate() {
        if !seen.insert((r.sets, r.guard)) {
            continue;
        }
        let s = sig(r);
        match groups.iter_mut().find(|g| g.0 == s) {
            Some(g) => g.1.push(i as u32),
            None => groups.push((s, vec![i as u32])),
        }
    }
    while groups.len() > MAX_TREES {
        groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
        let (s, members) = groups.pop().expect("more than MAX_TREES groups");
        // into the group with the most dimensions among those that are a subset of its own
        let into = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.0 & !s == 0)
            .max_by_key(|(_, g)| g.0.count_ones())
            .map(|(k, _)| k);
        match into {
            Some(k) => {
                groups[k].1.extend(members);
                groups[k].1.sort_unstable();
            }
            None => {
                // none: into the one sharing the most, which keeps only what both share
                let k = (0..groups.len())
                    .max_by_key(|&k| (groups[k].0 & s).count_ones())
                    .expect("other groups");
                groups[k].0 &= s;
                groups[k].1.extend(members);
                groups[k].1.sort_unstable();
            }
        }
    }
    let mut forest = Forest {
        rules: &crules,
        hot: false,
        bits,
        max,
        nodes: Vec::new(),
        leaves: Vec::new(),
        dedup: FxHashMap::default(),
        budget: BUDGET_PER_RULE * crules.len() + BUDGET_BASE,
        deepest: 0,
        widest: 0,
    };
    let mut roots = Vec::with_capacity(groups.len());

    for (_, members) in groups {
        let (valid, mut cut) = forest.tree(members.clone())?;
        let no_ports: Vec<u32> = members
            .iter()
            .copied()
            .filter(|&r| !crules[r as usize].guard)
            .collect();
        let (fail, c) = forest.tree(no_ports)?;
        cut |= c;
        forest.hot = true;
        let (hot, c) = forest.tree(members)?;
        forest.hot = false;
        roots.push(Tree {
            roots: [valid, fail, hot],
            cut: cut | c,
            depth: std::mem::take(&mut forest.deepest),
            leaf: std::mem::take(&mut forest.widest),
        });
    }
    // what a record checks: the dimensions some rule restricts, ports last
    let restricted = |d: usize| crules.iter().any(|r| r.sets[d] != Set::Full);
    let mut checked: Vec<usize> = [SRC, DST, PROTO, IN, OUT]
        .into_iter()
        .filter(|&d| restricted(d))
        .collect();
    if guard {
        checked.extend([SPORT, DPORT].into_iter().filter(|&d| restricted(d)));
    }
    let rec_size = (8 * checked.len() as u32 + 10).next_multiple_of(8);
    let mut nodes = MapSpec::array(NODE_SIZE);
    for n in &forest.nodes {
        let v: Vec<u8> = n.iter().flat_map(|w| w.to_ne_bytes()).collect();
        nodes.push_value(&v);
    }
    let mut leaves = MapSpec::array(rec_size * CHUNK as u32);
    let mut v = Vec::with_capacity(rec_size as usize * CHUNK);
    for chunk in forest.leaves.chunks(CHUNK) {
        v.clear();
        for &(r, mode) in chunk {
            let at = v.len();
            if mode != MODE_END {
                let r = &crules[r as usize];
                for &d in &checked {
                    let (lo, span) = match r.sets[d] {
                        Set::Full => (0, u32::MAX),
                        Set::In(lo, hi) => (lo, hi - lo),
                        Set::Out(lo, hi) => {
                            (hi.wrapping_add(1), lo.wrapping_sub(hi).wrapping_sub(2))
                        }
                    };
                    v.extend_from_slice(&lo.to_ne_bytes());
                    v.extend_from_slice(&span.to_ne_bytes());
                }
                v.extend_from_slice(&r.idx.to_ne_bytes());
                v.extend_from_slice(&r.slot.wrapping_add(1).to_ne_bytes());
                v.push(r.act);
            }
            v.resize(at + rec_size as usize, 0);
            v[at + 8 * checked.len() + 9] = mode;
        }
        v.resize(rec_size as usize * CHUNK, 0);
        leaves.push_value(&v);
    }
    let mut maps = vec![nodes, leaves];
    let mut lpm = [None, None];
    let mut used = roots.iter().fold(0u8, |u, t| u | t.cut);
    for &d in &checked {
        used |= 1 << d;
    }
    for k in 0..2 {
        if used & (1 << (IN + k)) == 0 {
            continue;
        }
        let mut m = MapSpec::of(MapKind::LpmTrie, 20, 4);
        for (id, pat) in classes[k].iter().enumerate() {
            let mut key = Vec::with_capacity(20);
            key.extend_from_slice(&(8 * pat.len() as u32).to_ne_bytes());
            key.extend_from_slice(pat);
            key.resize(20, 0);
            m.push(&key, &(id as u32).to_ne_bytes());
        }
        lpm[k] = Some(first_map + maps.len() as u32);
        maps.push(m);
    }
    Some((
        Classified {
            nodes: first_map,
            leaves: first_map + 1,
            lpm,
            trees: roots,
            checked,
            guard,
            rec_size,
            actions: reps,
            used,
        },
        maps,
    ))
}

/// Maps a classified run of `rules` would take at most (nodes, leaves, two interface tries).
pub(super) const MAX_MAPS: usize = 4;

use Reg::{R0, R1, R2, R3, R4, R5, R6, R9};

impl Generator<'_> {
    /// Emit a classified run (see the module doc): the packet's values, each tree's walk and
    /// leaf, then the action of the first rule found; none found continues at `next`.
    pub(super) fn classified_run(
        &mut self,
        rules: &[ir::Rule],
        c: &Classified,
        frame: &mut Frame,
        next: Label,
    ) -> Result<(), EmitError> {
        self.classify_values(c)?;
        self.b.emit(st(Size::W, R6, rec::BEST, NO_RULE));
        for t in &c.trees {
            self.classify_tree(c, t)?;
        }
        // the leaves' checks used r7 to r9: the hot registers again, as a chain's entry loads them
        let b = &mut self.b;
        b.emit(ldx(Size::W, Reg::R7, R6, rec::SADDR));
        b.emit(ldx(Size::W, Reg::R8, R6, rec::DADDR));
        b.emit(ldx(Size::DW, R9, R6, rec::PACKED));
        b.emit(ldx(Size::W, R1, R6, rec::BEST));
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(NO_RULE), next);
        b.emit(ldx(Size::W, R1, R6, slot::ACT));
        if c.guard {
            frame.used.insert(HOTDROP);
            b.jmp32(JmpOp::Jeq, R1, Src::Imm(ACT_HOT), frame.hotdrop);
        }
        for (k, &rep) in c.actions.iter().enumerate() {
            let skip = self.b.label();
            if k + 1 < c.actions.len() {
                self.b.emit(ldx(Size::W, R1, R6, slot::ACT));
                self.b.jmp32(JmpOp::Jne, R1, Src::Imm(k as i32), skip);
            }
            self.dyn_key = true;
            self.action(&rules[rep], frame, next)?;
            if self.dyn_key {
                return Err(EmitError::Unsupported {
                    what: "classified run action that does not count",
                });
            }
            self.b.bind(skip)?;
        }
        Ok(())
    }

    /// The packet's value in each dimension the run uses, at `slot::DIMS`.
    fn classify_values(&mut self, c: &Classified) -> Result<(), EmitError> {
        let b = &mut self.b;
        for (d, field) in [(SRC, rec::SADDR), (DST, rec::DADDR)] {
            if c.used & (1 << d) != 0 {
                copy_addr(b, R1, field);
                b.emit(Insn::End {
                    to_be: true,
                    dst: R1,
                    bits: 32,
                });
                b.emit(stx(Size::W, R6, dim_slot(d), R1));
            }
        }
        if c.used & (1 << PROTO) != 0 || c.guard {
            extract(b, R1, Field::Proto);
            b.emit(stx(Size::W, R6, dim_slot(PROTO), R1));
        }
        if c.guard {
            // the guard state of the packet's own protocol (only its rules reach a guard)
            let (tcp, udp, done) = (b.label(), b.label(), b.label());
            b.jmp32(JmpOp::Jeq, R1, Src::Imm(6), tcp);
            b.jmp32(JmpOp::Jeq, R1, Src::Imm(17), udp);
            b.emit(st(Size::W, R6, slot::STATE, 0));
            b.ja(done);
            for (l, kind) in [(tcp, 0), (udp, 1)] {
                b.bind(l)?;
                b.emit(mov64(R2, Src::Reg(R9)));
                b.emit(alu64(
                    AluOp::Rsh,
                    R2,
                    Src::Imm(packed::GUARD_SHIFT + 2 * kind),
                ));
                b.emit(alu32(AluOp::And, R2, Src::Imm(3)));
                b.emit(stx(Size::W, R6, slot::STATE, R2));
                b.ja(done);
            }
            b.bind(done)?;
            extract(b, R1, Field::Sport);
            b.emit(stx(Size::W, R6, dim_slot(SPORT), R1));
            extract(b, R1, Field::Dport);
            b.emit(stx(Size::W, R6, dim_slot(DPORT), R1));
        }
        for k in 0..2 {
            let Some(map) = c.lpm[k] else { continue };
            let base = if k == 0 { rec::IN_NAME } else { rec::OUT_NAME };
            b.emit(st(Size::W, R6, slot::LPM, 128));
            for w in 0..4i16 {
                b.emit(ldx(Size::W, R1, R6, base + 8 * w));
                b.emit(stx(Size::W, R6, slot::LPM + 4 + 4 * w, R1));
            }
            let (miss, done) = (b.label(), b.label());
            lookup_at(b, MapRef::Other(map), slot::LPM, miss);
            b.emit(ldx(Size::W, R1, R0, 0));
            b.emit(stx(Size::W, R6, dim_slot(IN + k), R1));
            b.ja(done);
            b.bind(miss)?;
            b.emit(st(Size::W, R6, dim_slot(IN + k), 0));
            b.bind(done)?;
        }
        Ok(())
    }

    /// One tree: the walk from `root` (cutting the dimensions in `cut`), then the leaf's
    /// records, the first that holds the packet (and comes before BEST) becoming BEST.
    fn classify_tree(&mut self, c: &Classified, t: &Tree) -> Result<(), EmitError> {
        let (roots, cut) = (t.roots, t.cut);
        let b = &mut self.b;
        let (leaf, done) = (b.label(), b.label());
        // the root of the packet's transport state: 0 valid, bit 1 hotdrop (which wins over
        // bit 0), else no port match
        b.emit(st(Size::W, R6, slot::NODE, roots[0] as i32));
        if c.guard {
            let walk = b.label();
            b.emit(ldx(Size::W, R1, R6, slot::STATE));
            b.jmp32(JmpOp::Jeq, R1, Src::Imm(0), walk);
            b.emit(st(Size::W, R6, slot::NODE, roots[2] as i32));
            b.jmp32(JmpOp::Jset, R1, Src::Imm(2), walk);
            b.emit(st(Size::W, R6, slot::NODE, roots[1] as i32));
            b.bind(walk)?;
        }
        let cut_dims: Vec<usize> = (0..DIMS).filter(|&d| cut & (1 << d) != 0).collect();
        for level in 0..=t.depth {
            lookup_at(b, MapRef::Other(c.nodes), slot::NODE, done);
            b.emit(ldx(Size::W, R1, R0, 0));
            b.emit(ldx(Size::W, R3, R0, 8));
            b.jmp32(JmpOp::Jset, R1, Src::Imm(LEAF as i32), leaf);
            if level == t.depth || cut_dims.is_empty() {
                b.ja(done);
                break;
            }
            b.emit(ldx(Size::W, R2, R0, 4));
            // r5 = the value of the node's dimension
            let have = b.label();
            b.emit(alu32(AluOp::Mov, R4, Src::Reg(R1)));
            b.emit(alu32(AluOp::Rsh, R4, Src::Imm(8)));
            for (k, &d) in cut_dims.iter().enumerate() {
                b.emit(ldx(Size::W, R5, R6, dim_slot(d)));
                if k + 1 < cut_dims.len() {
                    b.jmp32(JmpOp::Jeq, R4, Src::Imm(d as i32), have);
                }
            }
            b.bind(have)?;
            b.emit(alu32(AluOp::And, R1, Src::Imm(31)));
            b.emit(alu32(AluOp::Rsh, R5, Src::Reg(R1)));
            b.emit(alu32(AluOp::And, R5, Src::Reg(R2)));
            b.emit(alu32(AluOp::Add, R5, Src::Reg(R3)));
            b.emit(stx(Size::W, R6, slot::NODE, R5));
        }
        b.bind(leaf)?;
        // r1: header (the leaf's rule count in its low bits), r3: its first chunk
        if t.leaf > 0 {
            let body = b.label();
            b.jmp32(JmpOp::Jset, R1, Src::Imm(0xff), body);
            b.ja(done);
            b.bind(body)?;
            emit_leaf(b, c, t, done)?;
        } else {
            b.ja(done);
        }
        b.bind(done)?;
        Ok(())
    }
}

/// The checks of a leaf (reached with its header in r1, its first chunk in r3): per chunk
/// (while the leaf's count reaches into it) one lookup, the
/// packet's values into registers, then each record's intervals; the first record that holds
/// the packet goes to the shared hit (or hotdrop) code with r0 at it, which makes it BEST when
/// it comes before. An end record, or the last record, goes to `done`.
fn emit_leaf(
    b: &mut crate::builder::Builder,
    c: &Classified,
    t: &Tree,
    done: Label,
) -> Result<(), EmitError> {
    let (hit, hot) = (b.label(), b.label());
    let nd = c.checked.len();
    let idx_at = 8 * nd as i16;
    let mode_at = idx_at + 9;
    let rec = c.rec_size as i16;
    let first_port = c
        .checked
        .iter()
        .position(|&d| d == SPORT || d == DPORT)
        .unwrap_or(nd);
    b.emit(stx(Size::W, R6, slot::LBASE, R3));
    b.emit(alu32(AluOp::And, R1, Src::Imm(0xff)));
    b.emit(stx(Size::W, R6, slot::NODE, R1));
    let chunks = t.leaf.div_ceil(CHUNK);
    for ch in 0..chunks {
        if ch > 0 {
            // a leaf that fills its chunks has no end record: its count says where it ends
            b.emit(ldx(Size::W, R1, R6, slot::NODE));
            b.jmp32(JmpOp::Jle, R1, Src::Imm((ch * CHUNK) as i32), done);
        }
        b.emit(ldx(Size::W, R1, R6, slot::LBASE));
        if ch > 0 {
            b.emit(alu32(AluOp::Add, R1, Src::Imm(ch as i32)));
        }
        b.emit(stx(Size::W, R6, slot::IDX, R1));
        lookup_at(b, MapRef::Other(c.leaves), slot::IDX, done);
        for (&reg, &d) in VALUE_REGS.iter().zip(&c.checked) {
            b.emit(ldx(Size::W, reg, R6, dim_slot(d)));
        }
        let records = CHUNK.min(t.leaf - ch * CHUNK);
        for i in 0..records {
            let at = rec * i as i16;
            let next = b.label();
            b.emit(ldx(Size::B, R1, R0, at + mode_at));
            b.jmp32(JmpOp::Jeq, R1, Src::Imm(i32::from(MODE_END)), done);
            let check = |b: &mut crate::builder::Builder, j: usize| {
                let o = at + 8 * j as i16;
                match VALUE_REGS.get(j) {
                    Some(&reg) => b.emit(alu32(AluOp::Mov, R2, Src::Reg(reg))),
                    None => b.emit(ldx(Size::W, R2, R6, dim_slot(c.checked[j]))),
                }
                b.emit(ldx(Size::W, R1, R0, o));
                b.emit(alu32(AluOp::Sub, R2, Src::Reg(R1)));
                b.emit(ldx(Size::W, R1, R0, o + 4));
                b.jmp32(JmpOp::Jgt, R2, Src::Reg(R1), next);
            };
            for j in 0..first_port {
                check(b, j);
            }
            let to = |b: &mut crate::builder::Builder, l: Label| {
                if at != 0 {
                    b.emit(alu64(AluOp::Add, R0, Src::Imm(i32::from(at))));
                }
                b.ja(l);
            };
            if c.guard {
                let ports = b.label();
                b.emit(ldx(Size::B, R1, R0, at + mode_at));
                b.jmp32(JmpOp::Jne, R1, Src::Imm(i32::from(MODE_HOT)), ports);
                to(b, hot);
                b.bind(ports)?;
            }
            for j in first_port..nd {
                check(b, j);
            }
            to(b, hit);
            b.bind(next)?;
        }
    }
    b.ja(done);
    // the first record found in the leaf: BEST when it comes before (r0 at it)
    b.bind(hit)?;
    b.emit(ldx(Size::W, R1, R0, idx_at));
    b.emit(ldx(Size::W, R2, R6, rec::BEST));
    b.jmp32(JmpOp::Jge, R1, Src::Reg(R2), done);
    b.emit(stx(Size::W, R6, rec::BEST, R1));
    b.emit(ldx(Size::W, R1, R0, idx_at + 4));
    b.emit(stx(Size::W, R6, rec::KEY, R1));
    b.emit(ldx(Size::B, R1, R0, idx_at + 8));
    b.emit(stx(Size::W, R6, slot::ACT, R1));
    b.ja(done);
    if c.guard {
        b.bind(hot)?;
        b.emit(ldx(Size::W, R1, R0, idx_at));
        b.emit(ldx(Size::W, R2, R6, rec::BEST));
        b.jmp32(JmpOp::Jge, R1, Src::Reg(R2), done);
        b.emit(stx(Size::W, R6, rec::BEST, R1));
        b.emit(st(Size::W, R6, slot::ACT, ACT_HOT));
        b.ja(done);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::lower::lower;
    use crate::ir::{Iface, Match, PortRange, Rule, TcpMatch, UdpMatch};
    use proptest::prelude::*;

    /// A packet as the classifier sees it: addresses in host order, the guard state of its
    /// protocol (bit 0 no port match, bit 1 hotdrop), interface names.
    #[derive(Debug, Clone)]
    struct Pkt {
        src: u32,
        dst: u32,
        proto: u8,
        state: u32,
        sport: u16,
        dport: u16,
        names: [[u8; 16]; 2],
    }

    /// Where the kernel's walk over `tests` ends: (rule index, hotdropped).
    fn linear(tests: &[Vec<Test>], p: &Pkt) -> Option<(u32, bool)> {
        let state = if matches!(p.proto, 6 | 17) {
            p.state
        } else {
            0
        };
        'rules: for (i, t) in tests.iter().enumerate() {
            for t in t {
                let pass = match *t {
                    Test::Addr {
                        field,
                        addr,
                        mask,
                        invert,
                    } => {
                        let v = if field == rec::SADDR { p.src } else { p.dst };
                        let (a, m) = (u32::from_be(addr), u32::from_be(mask));
                        ((v & m) == a) != invert
                    }
                    Test::Proto { proto, invert } => (p.proto == proto) != invert,
                    Test::Guard { .. } => {
                        if state & 2 != 0 {
                            return Some((i as u32, true));
                        }
                        state & 1 == 0
                    }
                    Test::Port {
                        field,
                        range,
                        invert,
                    } => {
                        let v = if field == rec::SPORT {
                            p.sport
                        } else {
                            p.dport
                        };
                        (range.lo <= v && v <= range.hi) != invert
                    }
                    Test::Flags { .. } => true,
                    Test::Iface {
                        base,
                        name,
                        mask,
                        invert,
                    } => {
                        let n = &p.names[usize::from(base != rec::IN_NAME)];
                        (0..16).all(|k| (n[k] ^ name[k]) & mask[k] == 0) != invert
                    }
                    _ => panic!("unclassifiable test {t:?}"),
                };
                if !pass {
                    continue 'rules;
                }
            }
            return Some((i as u32, false));
        }
        None
    }

    fn word(v: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(v[at..at + 4].try_into().expect("4 bytes"))
    }

    /// What the program does with the maps of `c`: (rule index, hotdropped).
    fn walk(c: &Classified, maps: &[MapSpec], p: &Pkt) -> Option<(u32, bool)> {
        let mut dims = [0u32; DIMS];
        dims[SRC] = p.src;
        dims[DST] = p.dst;
        dims[PROTO] = u32::from(p.proto);
        let state = if matches!(p.proto, 6 | 17) {
            p.state
        } else {
            0
        };
        dims[SPORT] = u32::from(p.sport);
        dims[DPORT] = u32::from(p.dport);
        let which = match state {
            0 => 0,
            s if s & 2 != 0 => 2,
            _ => 1,
        };
        for k in 0..2 {
            let Some(m) = c.lpm[k] else { continue };
            let mut best: Option<(u32, u32)> = None;
            for (key, value) in maps[m as usize].entries() {
                let len = word(key, 0) as usize / 8;
                if key[4..4 + len] == p.names[k][..len] && best.is_none_or(|b| b.0 < len as u32) {
                    best = Some((len as u32, word(value, 0)));
                }
            }
            dims[IN + k] = best.map_or(0, |b| b.1);
        }
        let nodes: Vec<&[u8]> = maps[c.nodes as usize].entries().map(|e| e.1).collect();
        // the leaf records, chunks back to back
        let rec = c.rec_size as usize;
        let leaves: Vec<&[u8]> = maps[c.leaves as usize]
            .entries()
            .flat_map(|e| e.1.chunks(rec))
            .collect();
        let mut found: Option<(u32, bool)> = None;
        let idx_at = 8 * c.checked.len();
        for t in &c.trees {
            let mut at = t.roots[which] as usize;
            let (base, count) = loop {
                let n = nodes[at];
                let hdr = word(n, 0);
                if hdr & LEAF != 0 {
                    break (word(n, 8) as usize * CHUNK, (hdr & 0xff) as usize);
                }
                let d = (hdr >> 8) as usize;
                at = (((dims[d] >> (hdr & 31)) & word(n, 4)) + word(n, 8)) as usize;
            };
            // the unrolled checks stop at an end record or after `t.leaf` records
            assert!(
                count <= t.leaf,
                "a leaf larger than its tree's unrolled checks"
            );
            for r in leaves[base..].iter().take(count.max(1)) {
                let mode = r[idx_at + 9];
                if mode == MODE_END {
                    break;
                }
                let idx = word(r, idx_at);
                let ok =
                    |j: usize, d: usize| dims[d].wrapping_sub(word(r, 8 * j)) <= word(r, 8 * j + 4);
                let first_port = c
                    .checked
                    .iter()
                    .position(|&d| d == SPORT || d == DPORT)
                    .unwrap_or(c.checked.len());
                if !(0..first_port).all(|j| ok(j, c.checked[j])) {
                    continue;
                }
                let hit =
                    mode == MODE_HOT || (first_port..c.checked.len()).all(|j| ok(j, c.checked[j]));
                if hit {
                    if found.is_none_or(|f| idx < f.0) {
                        found = Some((idx, mode == MODE_HOT));
                    }
                    break;
                }
            }
        }
        found
    }

    fn arb_rule() -> impl Strategy<Value = Vec<Match>> {
        let addr = (
            prop_oneof![
                Just(0x0a00_0001u32),
                Just(0x0a00_0002),
                Just(0xc0a8_0709),
                any::<u32>()
            ],
            prop_oneof![Just(32u32), Just(24), Just(0), 0u32..=32],
            prop_oneof![3 => Just(false), 1 => Just(true)],
        );
        let port = prop_oneof![Just(22u16), Just(80), Just(5001), any::<u16>()];
        let range = (port.clone(), port, 0u8..3).prop_map(|(a, b, k)| match k {
            0 => PortRange::one(a),
            1 => PortRange::ANY,
            _ => PortRange {
                lo: a.min(b),
                hi: a.max(b),
            },
        });
        (
            proptest::option::of(addr.clone()),
            proptest::option::of(addr),
            0u8..6,
            range.clone(),
            range,
            any::<[bool; 3]>(),
            proptest::option::of((
                prop_oneof![Just("lo"), Just("eth+"), Just("eth0"), Just("e+"), Just("")],
                any::<bool>(),
                any::<bool>(),
            )),
        )
            .prop_map(|(s, d, pr, sp, dp, inv, iface)| {
                // addresses with bits outside the mask too (such a rule never matches)
                let net = |(a, bits, invert): (u32, u32, bool)| {
                    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                    (
                        std::net::Ipv4Addr::from(if a % 7 == 0 { a } else { a & mask }),
                        std::net::Ipv4Addr::from(mask),
                        invert,
                    )
                };
                let mut m = Vec::new();
                if let Some(a) = s {
                    let (addr, mask, invert) = net(a);
                    m.push(Match::Ipv4Src { addr, mask, invert });
                }
                if let Some(a) = d {
                    let (addr, mask, invert) = net(a);
                    m.push(Match::Ipv4Dst { addr, mask, invert });
                }
                if let Some((name, out, i)) = iface {
                    let f = Iface::iptables(name, i && !name.is_empty());
                    m.push(if out {
                        Match::OutIface(f)
                    } else {
                        Match::InIface(f)
                    });
                }
                let protocol = |proto, invert| Match::Protocol { proto, invert };
                match pr {
                    0 | 1 => {
                        m.push(protocol(6, false));
                        m.push(Match::Tcp(TcpMatch {
                            sport: sp,
                            dport: dp,
                            flags_mask: 0,
                            flags_cmp: 0,
                            option: 0,
                            inv_sport: inv[0],
                            inv_dport: inv[1],
                            inv_flags: false,
                            inv_option: false,
                        }));
                    }
                    2 | 3 => {
                        m.push(protocol(17, false));
                        m.push(Match::Udp(UdpMatch {
                            sport: sp,
                            dport: dp,
                            inv_sport: inv[0],
                            inv_dport: inv[1],
                        }));
                    }
                    4 => m.push(protocol([6, 17, 1][usize::from(sp.lo % 3)], inv[2])),
                    _ => {}
                }
                m
            })
    }

    fn arb_pkt() -> impl Strategy<Value = Pkt> {
        let addr = prop_oneof![
            Just(0x0a00_0001u32),
            Just(0x0a00_0002),
            Just(0xc0a8_0709),
            any::<u32>()
        ];
        let port = prop_oneof![Just(22u16), Just(80), Just(5001), any::<u16>()];
        let name = prop_oneof![Just("lo"), Just("eth0"), Just("eth1"), Just("e"), Just("")]
            .prop_map(|n| {
                let mut a = [0u8; 16];
                a[..n.len()].copy_from_slice(n.as_bytes());
                a
            });
        (
            addr.clone(),
            addr,
            prop_oneof![Just(6u8), Just(17), Just(1)],
            prop_oneof![6 => Just(0u32), 1 => Just(1), 1 => Just(2), 1 => Just(3)],
            port.clone(),
            port,
            name.clone(),
            name,
        )
            .prop_map(|(src, dst, proto, state, sport, dport, i, o)| Pkt {
                src,
                dst,
                proto,
                state,
                sport,
                dport,
                names: [i, o],
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The trees and leaf records find the rule where the kernel's walk ends, hotdrops
        /// included, for rules of every classifiable shape.
        #[test]
        fn trees_find_the_first_match(
            rules in proptest::collection::vec(arb_rule(), 1..400),
            pkts in proptest::collection::vec(arb_pkt(), 64),
        ) {
            // the never-matching ones (`! --dport 0:65535`, `! -s 0/0`) are not classifiable
            let rules: Vec<Vec<Match>> = rules
                .into_iter()
                .filter(|m| parse(&lower(m).expect("lower")).is_some())
                .collect();
            let tests: Vec<Vec<Test>> = rules.iter().map(|m| lower(m).expect("lower")).collect();
            let ir: Vec<Rule> = rules
                .into_iter()
                .enumerate()
                .map(|(i, matches)| Rule { matches, action: Action::Drop, counter: i as u32 })
                .collect();
            let Some((c, maps)) = build(&ir, &tests, 0) else {
                // refusing is allowed, but not for small rule sets
                prop_assert!(ir.len() > 64, "{} rules refused", ir.len());
                return Ok(());
            };
            for p in &pkts {
                prop_assert_eq!(walk(&c, &maps, p), linear(&tests, p), "{:?}", p);
            }
        }
    }
}
