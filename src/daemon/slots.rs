//! Counter slots: where each entry of a generation counts.
//!
//! A table's generations share one counter map of `{packets, bytes}` per slot and CPU
//! ([`super::counters`]). Each entry of a
//! generation counts in a slot of it; an entry that the next ruleset keeps (the same rule in the
//! same chain, found by [`EntryKey`]) keeps its slot, and a new entry takes a free one.
//!
//! This is what lets a replace answer without waiting for the old programs to finish. The
//! kernel's `xt_replace_table` swaps the table, waits until no CPU is still inside the old one
//! and returns the old counters, which iptables adds to the rules it kept (SET_ADD_COUNTERS).
//! Waiting that way from user space costs an RCU grace period (8 to 16 ms here), longer than
//! the whole command of the kernel's iptables. With shared slots, a packet the old program is
//! still judging after the switch counts in the slot the kept rule goes on counting in, so the
//! daemon reads the old counters right after the switch and gives each kept entry the base
//! `-(slot value at that read)`: iptables' SET_ADD_COUNTERS then adds the value it was given
//! back, and the kept rule shows the old rule's count plus everything counted since, with no
//! packet lost or counted twice.
//!
//! A slot the new ruleset drops may still be counted in by a packet in flight, so it is not
//! free at once: it waits for a grace period, off the command path, and is zeroed before it
//! is given to a new entry ([`Pool::release`]). When the free slots do not suffice (or the map
//! is four times larger than the ruleset needs), the next generation gets a new map sized for
//! it. The replace still answers at once, with the old map's counts at the switch; what the
//! old programs count there afterwards is found after a grace period, off the command path,
//! and added to the bases of the new entries that continue the old ones ([`pair`]), as their
//! kept slots would have counted it (`datapath`'s late counts).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use ipt_abi::abi::{Ip6tEntry, IptEntry, XtStandardTarget};
use ipt_abi::{IpPart, Table, Target, Verdict, XtCounters};

/// Built-in chain names by hook number.
const HOOK_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// What identifies an entry across two rulesets: its chain, its bytes (its index, offset,
/// reachability and counters aside) and, for a jump, the chain and position it jumps to.
/// Hashed once, when made: a generation's keys are matched against the next ruleset's on
/// every change, and hashing them again each time was most of that.
#[derive(Debug, Clone)]
pub struct EntryKey {
    /// the chain's name, shared by its entries' keys
    chain: Arc<str>,
    /// the entry as GET_ENTRIES writes it, with its reachability (`comefrom`), its counters
    /// and a jump's verdict (an offset in the blob) zero: one allocation, where a copy of the
    /// parsed entry took one per match
    bytes: Box<[u8]>,
    jump: Option<(Arc<str>, u32)>,
    hash: u64,
}

impl EntryKey {
    fn new(chain: Arc<str>, bytes: Box<[u8]>, jump: Option<(Arc<str>, u32)>) -> EntryKey {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        (&chain, &bytes, &jump).hash(&mut h);
        EntryKey {
            chain,
            bytes,
            jump,
            hash: h.finish(),
        }
    }
}

impl PartialEq for EntryKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.chain == other.chain
            && self.jump == other.jump
            && self.bytes == other.bytes
    }
}

impl Eq for EntryKey {}

impl std::hash::Hash for EntryKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The key of every entry of `table`, in entry order.
pub fn keys(table: &Table) -> Vec<EntryKey> {
    // chain name and position in it, per entry
    let mut place: Vec<(usize, u32)> = Vec::with_capacity(table.entries.len());
    let mut names: Vec<Arc<str>> = Vec::new();
    let mut start = 0usize;
    for (i, e) in table.entries.iter().enumerate() {
        let hook = (0..HOOK_CHAINS.len())
            .find(|&h| table.valid_hooks & (1 << h) != 0 && table.hook_entry[h] == e.offset);
        if let Some(h) = hook {
            names.push(HOOK_CHAINS[h].into());
            start = i;
        } else if let Target::Error(name) = &e.target {
            names.push(name.as_str().into());
            start = i;
        } else if names.is_empty() {
            names.push("".into());
        }
        place.push((names.len() - 1, (i - start) as u32));
    }
    table
        .entries
        .iter()
        .zip(&place)
        .map(|(e, &(chain, _))| {
            let mut bytes = Vec::with_capacity(e.next_offset());
            e.write(&mut bytes, XtCounters::default());
            let comefrom = match e.ip {
                IpPart::V4(_) => std::mem::offset_of!(IptEntry, comefrom),
                IpPart::V6(_) => std::mem::offset_of!(Ip6tEntry, comefrom),
            };
            zero(&mut bytes, comefrom);
            let mut jump = None;
            if let Target::Standard(Verdict::Jump { index, .. }) = e.target {
                zero(
                    &mut bytes,
                    e.target_offset() + std::mem::offset_of!(XtStandardTarget, verdict),
                );
                jump = Some(match place.get(index as usize) {
                    Some(&(c, pos)) => (Arc::clone(&names[c]), pos),
                    None => ("".into(), u32::MAX),
                });
            }
            EntryKey::new(Arc::clone(&names[chain]), bytes.into_boxed_slice(), jump)
        })
        .collect()
}

/// Zeroes the u32 at `at` of an entry's bytes.
fn zero(bytes: &mut [u8], at: usize) {
    if let Some(word) = bytes.get_mut(at..at + 4) {
        word.fill(0);
    }
}

/// Makes the counters of `programs` (entry indices, as translated) the entries' `slots`, and
/// names each chain by the slot of its first entry instead of that entry's index (its id, and
/// the `@N` of its name), so that a chain that did not change compiles from the same IR
/// whatever moved around it.
pub fn remap(programs: &mut [emitter::ir::Program], slots: &[u32]) {
    use emitter::ir::{Action, ChainId};
    let slot = |c: u32| slots.get(c as usize).copied().unwrap_or(c);
    let chain = |c: ChainId| ChainId(slot(c.0));
    for p in programs {
        p.policy.counter = slot(p.policy.counter);
        p.entry = chain(p.entry);
        p.chains = std::mem::take(&mut p.chains)
            .into_iter()
            .map(|(id, mut c)| {
                for rule in &mut c.rules {
                    rule.counter = slot(rule.counter);
                    rule.action = match rule.action {
                        Action::Call(to) => Action::Call(chain(to)),
                        Action::Goto(to) => Action::Goto(chain(to)),
                        other => other,
                    };
                }
                let id = chain(id);
                if let Some((name, _)) = c.name.rsplit_once('@') {
                    c.name = format!("{name}@{}", id.0);
                }
                (id, c)
            })
            .collect();
    }
}

/// The slots of a new generation in the current map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// the slot of each new entry
    pub slots: Vec<u32>,
    /// per new entry, whether it keeps the slot of an old entry
    pub kept: Vec<bool>,
    /// slots taken from the free list
    pub taken: Vec<u32>,
    /// old slots the new generation does not use (free after a grace period)
    pub dropped: Vec<u32>,
}

/// The slots of one counter map: how many, and which are free (zero and used by no program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    capacity: u32,
    /// free slots, highest first (taken from the end: lowest first)
    free: Vec<u32>,
}

/// Pairs each entry of `new` with the entry of `old` it continues: the first one with the
/// same key not paired yet, so that identical entries pair in order. The old entry's index,
/// per new entry.
pub fn pair(old: &[EntryKey], new: &[EntryKey]) -> Vec<Option<usize>> {
    // The old entries with each key, in order: the first unpaired one by key, each linked to
    // the next with the same key. FxHash, not the DoS-resistant default: the keys are root's
    // own rulesets, hashed once per entry on every change.
    let mut first: FxHashMap<&EntryKey, usize> = FxHashMap::default();
    first.reserve(old.len());
    let mut next_same = vec![usize::MAX; old.len()];
    for (i, k) in old.iter().enumerate().rev() {
        if let Some(later) = first.insert(k, i) {
            next_same[i] = later;
        }
    }
    new.iter()
        .map(|k| {
            let i = first.get_mut(k).filter(|i| **i != usize::MAX)?;
            let paired = *i;
            *i = next_same[paired];
            Some(paired)
        })
        .collect()
}

impl Pool {
    /// The size of a new map for `entries` entries: room for a half more, so that appends,
    /// inserts and replaced rules find free slots.
    pub fn capacity_for(entries: usize) -> u32 {
        let n = entries.max(1);
        u32::try_from(n + n / 2 + 64).unwrap_or(u32::MAX)
    }

    /// A new map of `capacity` slots whose first `used` are the first generation's.
    pub fn new(capacity: u32, used: u32) -> Pool {
        Pool {
            capacity,
            free: (used.min(capacity)..capacity).rev().collect(),
        }
    }

    /// A map found pinned, whose generation uses `used`: every other slot may hold counts of
    /// a generation that was discarded and must be zeroed after a grace period before use
    /// (returned; [`Pool::release`] them then).
    pub fn adopted(capacity: u32, used: &[u32]) -> (Pool, Vec<u32>) {
        let mut in_use = vec![false; capacity as usize];
        for &s in used {
            if let Some(u) = in_use.get_mut(s as usize) {
                *u = true;
            }
        }
        let unused = (0..capacity).filter(|&s| !in_use[s as usize]).collect();
        (
            Pool {
                capacity,
                free: Vec::new(),
            },
            unused,
        )
    }

    /// Slots in the map.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Free slots.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Slots for the entries `new`, keeping those of the old entries with the same key (in
    /// order, for identical entries), or None when the free slots do not suffice or the map
    /// is far larger than `new` needs (the caller then makes a new map).
    pub fn assign(
        &mut self,
        old: &[EntryKey],
        old_slots: &[u32],
        new: &[EntryKey],
    ) -> Option<Assignment> {
        if self.capacity as usize > 4 * new.len() + 4096 {
            return None;
        }
        let old = &old[..old.len().min(old_slots.len())];
        let pairs = pair(old, new);
        let mut claimed = vec![false; old.len()];
        let mut slots = Vec::with_capacity(new.len());
        let mut kept = Vec::with_capacity(new.len());
        let mut missing = 0usize;
        for p in &pairs {
            match *p {
                Some(i) => {
                    claimed[i] = true;
                    slots.push(old_slots[i]);
                    kept.push(true);
                }
                None => {
                    slots.push(u32::MAX);
                    kept.push(false);
                    missing += 1;
                }
            }
        }
        if missing > self.free.len() {
            return None;
        }
        let taken = self.free.split_off(self.free.len() - missing);
        let mut fresh = taken.iter().rev();
        for s in slots.iter_mut().filter(|s| **s == u32::MAX) {
            *s = *fresh.next()?;
        }
        let mut dropped: Vec<u32> = (0..old.len())
            .filter(|&i| !claimed[i])
            .map(|i| old_slots[i])
            .collect();
        dropped.sort_unstable();
        Some(Assignment {
            slots,
            kept,
            taken,
            dropped,
        })
    }

    /// Gives back slots that are zero and that no program counts in any more.
    pub fn release(&mut self, slots: &[u32]) {
        self.free
            .extend(slots.iter().filter(|&&s| s < self.capacity));
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        self.free.dedup();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use ipt_abi::build::{Rule, RuleTarget, TableBuilder};

    fn drop_from(last: u8) -> Rule {
        Rule::new(RuleTarget::Drop).src([10, 0, 0, last], 32)
    }

    fn table(rules: &[(&str, Rule)]) -> Table {
        let mut b = TableBuilder::filter();
        for (chain, rule) in rules {
            b.rule(chain, rule.clone());
        }
        b.build().unwrap()
    }

    fn identity(t: &Table) -> Vec<u32> {
        (0..t.entries.len() as u32).collect()
    }

    #[test]
    fn an_append_keeps_every_slot_and_takes_one() {
        let old = table(&[("INPUT", drop_from(1)), ("INPUT", drop_from(2))]);
        let new = table(&[
            ("INPUT", drop_from(1)),
            ("INPUT", drop_from(2)),
            ("INPUT", drop_from(3)),
        ]);
        let n = old.entries.len() as u32;
        let mut pool = Pool::new(Pool::capacity_for(old.entries.len()), n);
        let old_slots = identity(&old);
        let a = pool.assign(&keys(&old), &old_slots, &keys(&new)).unwrap();
        // INPUT's two rules, the new one, then the policies and the table end as they were.
        assert_eq!(a.slots[..2], [0, 1]);
        assert_eq!(a.slots[2], n);
        assert_eq!(a.slots[3..], old_slots[2..]);
        assert_eq!(a.kept.iter().filter(|k| !**k).count(), 1);
        assert_eq!(a.taken, [n]);
        assert!(a.dropped.is_empty());
    }

    #[test]
    fn an_insert_at_the_top_and_a_delete_keep_the_other_rules() {
        let old = table(&[
            ("INPUT", drop_from(1)),
            ("INPUT", drop_from(2)),
            ("INPUT", drop_from(3)),
        ]);
        let new = table(&[
            (
                "INPUT",
                Rule::new(RuleTarget::Accept).src([10, 0, 0, 9], 32),
            ),
            ("INPUT", drop_from(1)),
            ("INPUT", drop_from(3)),
        ]);
        let n = old.entries.len() as u32;
        let mut pool = Pool::new(100, n);
        let a = pool
            .assign(&keys(&old), &identity(&old), &keys(&new))
            .unwrap();
        assert_eq!(a.slots[1..3], [0, 2]);
        assert!(!a.kept[0] && a.kept[1] && a.kept[2]);
        assert_eq!(a.dropped, [1]);
        // The dropped slot is not free until released (after a grace period).
        assert_eq!(pool.free(), 100 - n as usize - 1);
        pool.release(&a.dropped);
        assert_eq!(pool.free(), 100 - n as usize);
    }

    #[test]
    fn jumps_are_known_by_the_chain_they_jump_to() {
        let jump = |c: &str| Rule::new(RuleTarget::Jump(c.into()));
        // Chain a sorts before b and moves it; INPUT's jump to b is still the same entry.
        let old = table(&[("INPUT", jump("b")), ("b", drop_from(1))]);
        let new = table(&[
            ("INPUT", jump("b")),
            ("INPUT", jump("a")),
            ("a", drop_from(2)),
            ("b", drop_from(1)),
        ]);
        let ko = keys(&old);
        let kn = keys(&new);
        assert_eq!(ko[0], kn[0], "INPUT -j b");
        assert!(!ko.contains(&kn[1]), "INPUT -j a is new");
        let b_rule = |k: &[EntryKey]| {
            k.iter()
                .find(|k| &*k.chain == "b" && k.jump.is_none())
                .cloned()
        };
        assert_eq!(b_rule(&ko), b_rule(&kn), "b's rule");
        // The same rule in another chain is another entry.
        let moved = keys(&table(&[("OUTPUT", jump("b")), ("b", drop_from(1))]));
        let out_jump = moved.iter().find(|k| k.jump.is_some()).unwrap();
        assert_eq!(&*out_jump.chain, "OUTPUT");
        assert!(!ko.contains(out_jump));
    }

    #[test]
    fn identical_rules_keep_their_slots_in_order() {
        let old = table(&[("INPUT", drop_from(1)), ("INPUT", drop_from(1))]);
        let new = table(&[("INPUT", drop_from(1))]);
        let mut pool = Pool::new(100, 20);
        let old_slots: Vec<u32> = identity(&old).iter().map(|s| s * 2).collect();
        let a = pool.assign(&keys(&old), &old_slots, &keys(&new)).unwrap();
        assert_eq!(a.slots[0], 0);
        assert_eq!(a.dropped, [2]);
    }

    #[test]
    fn no_room_or_far_too_much_room_asks_for_a_new_map() {
        let old = table(&[]);
        let new = table(&[("INPUT", drop_from(1)), ("INPUT", drop_from(2))]);
        let n = old.entries.len() as u32;
        let mut full = Pool::new(n + 1, n);
        assert_eq!(full.assign(&keys(&old), &identity(&old), &keys(&new)), None);
        assert_eq!(full.free(), 1, "a refused assignment takes nothing");
        let mut huge = Pool::new(100_000, n);
        assert_eq!(huge.assign(&keys(&old), &identity(&old), &keys(&new)), None);
    }

    #[test]
    fn an_adopted_map_frees_nothing_until_released() {
        let (mut pool, unused) = Pool::adopted(8, &[0, 3, 5]);
        assert_eq!(unused, [1, 2, 4, 6, 7]);
        assert_eq!(pool.free(), 0);
        pool.release(&unused);
        assert_eq!(pool.free(), 5);
        let new_keys = keys(&table(&[]));
        assert!(pool.assign(&[], &[], &new_keys).is_some());
        assert_eq!(pool.free(), 1);
    }
}
