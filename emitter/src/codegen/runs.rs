//! Rule runs: at least `MIN_RUN` consecutive rules whose lowered tests and action (same
//! Call/Goto target) are identical but for the same one to four "key" tests, each an address
//! under the same mask (not inverted, no bit outside the mask) or a single port (not
//! inverted) of the same field, compiled into hash-map lookups instead of one rule after the
//! other (`MapRef::Other(i)`, `Output::maps[i]`).
//!
//! The keys of a run fall into the stretches between the hotdrop barriers of its tests. Each
//! stretch that holds keys ends in one lookup, keyed by every key up to there (addresses as
//! loaded, under their mask; ports in host order; packed in test order into [`rec::LKEY`]):
//! ```text
//! tests of stretch 0 but the keys                          (fail: after the run)
//! LKEY = keys of stretch 0; if lookup(map0, LKEY) == 0 goto after the run
//! barrier 1 (a hotdrop guard), tests of stretch 1 but the keys
//! LKEY += keys of stretch 1; r0 = lookup(map1, LKEY); if r0 == 0 goto after the run
//! ...                                   (the last map: every key -> counter slot of the FIRST
//! KEY = *r0 + 1                          rule with those keys; earlier maps: the key prefixes
//! tests after the last key (hotdrop as usual)           that some rule of the run holds)
//! action (counting the slot found)
//! ```
//! Why this is exactly the kernel's evaluation of the rules one by one: the tests that are not
//! keys are pure and the same for every rule, and so are the barriers before the last key
//! (only pure hotdrop guards are allowed there: a `limit`, `recent` or `hashlimit` barrier
//! that the kernel would run once per rule ends the run's keys). A rule whose keys of a
//! stretch differ from the packet's fails there, before reaching the next barrier, so a
//! barrier is reached exactly when some rule holds the packet's keys up to it, which the
//! prefix lookup answers. At most the first rule holding all the packet's keys can match;
//! its remaining tests are those of every rule of the run with those keys, so if they fail
//! every later duplicate fails too. After a Call that returns, or a Continue, the kernel
//! would go on with the next rules of the run: those fail on their keys, which is why a run
//! of such rules holds distinct keys.
//!
//! # Classes
//!
//! Rules that end evaluation when they match (ACCEPT, DROP, RETURN, a goto) may form a run
//! whose address keys differ in their masks too: `-s 10.0.0.4/31` beside `-s 10.0.0.7/32`.
//! The rules sharing one combination of masks are a class, with lookups of its own (up to
//! [`MAX_CLASSES`] classes); each map value holds the rule's index in the run beside its
//! counter slot. Every class is looked up in turn; a hit whose rule comes before the best one
//! so far (`rec::BEST`) replaces it. After the last class, BEST is the first rule of the run
//! holding the packet's keys: the one the kernel's walk would reach first. A class may run a
//! barrier again after another class ran it: barriers are pure, so a second run repeats the
//! first's outcome. Nothing after a terminal rule of a run is evaluated, which is why a run
//! with classes never holds rules after which evaluation continues: the kernel would then go
//! on to the next rule holding the packet's keys, in another class. A class costs a packet its
//! lookups, so such a run needs [`RULES_PER_CLASS_MAP`] rules per map.
//!
//! Contract: [`plan`] keeps the longest runs whose maps fit beside the program's other maps
//! (at most [`MAX_RUN_MAPS`]) and builds their maps; the IR is never changed.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;

use crate::builder::{Label, MapRef, MapSpec};
use crate::insn::{alu32, alu64, ldx, mov64, st, stx, AluOp, JmpOp, Reg, Size, Src};
use crate::ir::{self, Action, ChainId, Program};
use crate::EmitError;

use super::chains::Frame;
use super::classify::{self, Classified};
use super::forms::TestState;
use super::lower::{load_operand, Lowered, Test};
use super::record::rec;
use super::{Generator, HELPER_MAP_LOOKUP_ELEM};

/// Shortest run of rules compiled into lookups.
pub const MIN_RUN: usize = 4;
/// Most maps one program may use (the verifier's MAX_USED_MAPS).
pub const MAX_USED_MAPS: usize = 64;
/// Maps a program may use besides its rule-run maps and its `recent` lists and `hashlimit`
/// tables: the counters, the event ring and its loss counts, the limit buckets, the address
/// types, the REJECT replies' connections, the LOG prefixes and the next segments.
pub const FIXED_MAPS: usize = 8;
/// Most rule-run maps in one program that names no `recent` list or `hashlimit` table.
pub const MAX_RUN_MAPS: usize = MAX_USED_MAPS - FIXED_MAPS;
/// Most classes of one run (each costs its lookups per packet).
pub const MAX_CLASSES: usize = 8;
/// Fewest rules per map of a run with classes: a lookup costs a packet about what a few dozen
/// rules compiled one after the other do.
pub const RULES_PER_CLASS_MAP: usize = 16;
/// Rules after a run's first that name its keys (see [`key_candidates`]).
const DIFFER_WINDOW: usize = 3;
/// Most key bytes of a run ([`rec::LKEY`]'s size).
const MAX_KEY_BYTES: usize = rec::LKEY_SIZE;

/// A run of consecutive rules compiled into hash-map lookups (see "Rule runs").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Run {
    /// index of its first rule in the chain
    pub(super) start: usize,
    /// number of rules
    pub(super) len: usize,
    /// positions of the key tests in each rule's lowered tests, ascending
    keys: Vec<usize>,
    /// the lookups, in order (their maps: the first class's)
    lookups: Vec<Lookup>,
    /// the kinds of the keys of each class (see "Classes"), in order of their first rule;
    /// class `c`'s map of lookup `l` is `l.map + c * lookups.len()`
    classes: Vec<Class>,
    /// a classified run instead (see [`super::classify`]): no keys, lookups or classes
    pub(super) classified: Option<Box<Classified>>,
}

/// The key kinds a class of a run's rules share (the masks of their address keys).
type Class = Vec<KeyKind>;

/// One lookup of a run: after the tests before `until`, keyed by the run's first `keys` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lookup {
    until: usize,
    keys: usize,
    /// `MapRef::Other(map)`
    map: u32,
}

/// The rule runs of each chain, ascending by start.
pub(super) type Runs = BTreeMap<ChainId, Vec<Run>>;

/// What a key test compares, its value aside; the rules of a run agree on it at each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Addr { field: i16, mask: u32 },
    Addr6 { field: i16, mask: [u32; 4] },
    Port { field: i16 },
}

impl KeyKind {
    /// What the key compares, its mask aside: the rules of a run with classes agree on it.
    fn field(self) -> (u8, i16) {
        match self {
            KeyKind::Addr { field, .. } => (0, field),
            KeyKind::Addr6 { field, .. } => (1, field),
            KeyKind::Port { field } => (2, field),
        }
    }

    /// Bytes of the key in the lookup key.
    fn width(self) -> usize {
        match self {
            KeyKind::Addr { .. } => 4,
            KeyKind::Addr6 { .. } => 16,
            KeyKind::Port { .. } => 2,
        }
    }
}

/// The kind of `t` if it can be a key (one exact value under its mask, not inverted).
fn key_kind(t: &Test) -> Option<KeyKind> {
    match *t {
        Test::Addr {
            field,
            addr,
            mask,
            invert: false,
        } if mask != 0 && addr & !mask == 0 => Some(KeyKind::Addr { field, mask }),
        Test::Addr6 {
            field,
            addr,
            mask,
            invert: false,
        } if mask != [0; 4] && (0..4).all(|k| addr[k] & !mask[k] == 0) => {
            Some(KeyKind::Addr6 { field, mask })
        }
        Test::Port {
            field,
            range,
            invert: false,
        } if range.lo == range.hi => Some(KeyKind::Port { field }),
        _ => None,
    }
}

/// Appends to `out` the lookup-key bytes of the key tests `keys` of `tests` (addresses as
/// loaded, ports in host order), in order.
fn key_bytes(tests: &[Test], keys: &[usize], out: &mut Vec<u8>) {
    for &k in keys {
        match tests[k] {
            Test::Addr { addr, .. } => out.extend_from_slice(&addr.to_ne_bytes()),
            Test::Addr6 { addr, .. } => {
                for word in addr {
                    out.extend_from_slice(&word.to_ne_bytes());
                }
            }
            Test::Port { range, .. } => out.extend_from_slice(&range.lo.to_ne_bytes()),
            _ => {}
        }
    }
}

/// Key bytes (at most [`MAX_KEY_BYTES`]) as one number, for duplicate detection.
fn key_number(bytes: &[u8]) -> u128 {
    let mut n = [0u8; 16];
    n[..bytes.len()].copy_from_slice(bytes);
    u128::from_ne_bytes(n)
}

/// Can the tests `keys` of `tests` key a run: key tests of at most [`MAX_KEY_BYTES`] bytes,
/// with no stateful test ([`Test::is_stateful`]) before the last one?
fn keyable(tests: &[Test], keys: &[usize]) -> bool {
    let Some(&last) = keys.last() else {
        return false;
    };
    let mut bytes = 0;
    for &k in keys {
        match tests.get(k).and_then(key_kind) {
            Some(kind) => bytes += kind.width(),
            None => return false,
        }
    }
    bytes <= MAX_KEY_BYTES && !tests[..last].iter().any(Test::is_stateful)
}

/// Do `a` and `b` agree everywhere but at `keys`, where both hold key tests of the same kind
/// (`classes`: of the same field, under any mask)?
fn agrees(a: &[Test], b: &[Test], keys: &[usize], classes: bool) -> bool {
    let same = |x: &Test, y: &Test| match (key_kind(x), key_kind(y)) {
        (Some(x), Some(y)) if classes => x.field() == y.field(),
        (Some(x), Some(y)) => x == y,
        _ => false,
    };
    a.len() == b.len()
        && keys.iter().all(|&k| same(&a[k], &b[k]))
        && a.iter()
            .zip(b)
            .enumerate()
            .all(|(i, (x, y))| x == y || keys.contains(&i))
}

/// Rules after which evaluation may continue with the next rule (then a later rule of the run
/// with the same key would be evaluated too, so such runs hold distinct keys).
fn continues_after(a: Action) -> bool {
    matches!(a, Action::Call(_) | Action::Continue | Action::Log(_))
}

/// The key sets a run starting at rule `i` may use: each single key test, and the tests in
/// which rule `i` differs from one of the next [`DIFFER_WINDOW`] rules when there are several
/// (rules in pairs that share a port differ from their neighbour in the address only).
fn key_candidates(tests: &[Vec<Test>], i: usize) -> Vec<Vec<usize>> {
    let t = &tests[i];
    let mut out: Vec<Vec<usize>> = (0..t.len())
        .filter(|&k| key_kind(&t[k]).is_some())
        .map(|k| vec![k])
        .collect();
    let differ: Vec<usize> = (0..t.len())
        .filter(|&k| {
            tests[i + 1..]
                .iter()
                .take(DIFFER_WINDOW)
                .any(|u| u.len() == t.len() && t[k] != u[k])
        })
        .collect();
    if differ.len() > 1 {
        out.push(differ);
    }
    out.retain(|keys| keyable(t, keys));
    out
}

/// A run found in a chain: its first rule, its length, its key tests and its classes.
type Found = (usize, usize, Vec<usize>, Vec<Class>);

/// The kinds of the key tests `keys` of `tests` (its class).
fn class_of(tests: &[Test], keys: &[usize]) -> Class {
    keys.iter().filter_map(|&k| key_kind(&tests[k])).collect()
}

/// Is `class` the class of `tests` ([`class_of`] without building it)?
fn in_class(tests: &[Test], keys: &[usize], class: &Class) -> bool {
    keys.iter()
        .filter_map(|&k| key_kind(&tests[k]))
        .eq(class.iter().copied())
}

/// The rules from `i` on that can join a run keyed by `keys`: same action, same tests but
/// the keys, distinct keys where evaluation continues after a match; with `max_classes` > 1,
/// keys of the same fields under up to that many mask combinations. Their number and
/// classes.
fn extend(
    rules: &[ir::Rule],
    tests: &[Vec<Test>],
    i: usize,
    keys: &[usize],
    max_classes: usize,
) -> (usize, Vec<Class>) {
    // duplicates matter only where evaluation goes on after a match
    let distinct = continues_after(rules[i].action);
    let mut seen = FxHashSet::default();
    let mut bytes = Vec::with_capacity(MAX_KEY_BYTES);
    let mut is_new = |t: &[Test]| {
        bytes.clear();
        key_bytes(t, keys, &mut bytes);
        !distinct || seen.insert(key_number(&bytes))
    };
    is_new(&tests[i]);
    let mut classes = vec![class_of(&tests[i], keys)];
    let mut j = i + 1;
    while j < rules.len()
        && rules[j].action == rules[i].action
        && agrees(&tests[i], &tests[j], keys, max_classes > 1)
        && is_new(&tests[j])
    {
        if !classes.iter().any(|c| in_class(&tests[j], keys, c)) {
            if classes.len() == max_classes {
                break;
            }
            classes.push(class_of(&tests[j], keys));
        }
        j += 1;
    }
    (j - i, classes)
}

/// Runs of at least `MIN_RUN` consecutive rules with the same action and the same tests but
/// their keys (same positions, same kinds; or, for runs with classes, same fields), ascending.
/// The IR is unchanged; only the code generator sees runs.
fn find_runs(rules: &[ir::Rule], tests: &[Vec<Test>]) -> Vec<Found> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rules.len() {
        let mut best: (usize, Vec<usize>, Vec<Class>) = (1, Vec::new(), Vec::new());
        let action = rules[i].action;
        if !matches!(action, Action::Reject(_) | Action::Log(_)) {
            for keys in key_candidates(tests, i) {
                let (len, classes) = extend(rules, tests, i, &keys, 1);
                // with classes a run can go on only where the rule that ended this one
                // differs from the first in its keys' masks
                let stop = i + len;
                let further = stop < rules.len()
                    && rules[stop].action == action
                    && agrees(&tests[i], &tests[stop], &keys, true);
                if len > best.0 {
                    best = (len, keys.clone(), classes);
                }
                if continues_after(action) || !further {
                    continue;
                }
                let (len, classes) = extend(rules, tests, i, &keys, MAX_CLASSES);
                let maps = classes.len() * lookups(&tests[i], &keys, 0).len();
                if classes.len() > 1 && len >= RULES_PER_CLASS_MAP * maps && len > best.0 {
                    best = (len, keys, classes);
                }
            }
        }
        if best.0 >= MIN_RUN {
            out.push((i, best.0, best.1, best.2));
            i += best.0;
        } else {
            i += 1;
        }
    }
    out
}

/// Where the lookups of a run with key tests `keys` go: one after the last key of each
/// stretch between barriers that holds keys, just before the next barrier (map indices from
/// `first_map`).
fn lookups(tests: &[Test], keys: &[usize], first_map: u32) -> Vec<Lookup> {
    let mut out: Vec<Lookup> = Vec::new();
    for (n, &k) in keys.iter().enumerate() {
        let until = (k + 1..tests.len())
            .find(|&i| tests[i].is_barrier())
            .unwrap_or(tests.len());
        match out.last_mut() {
            Some(l) if l.until == until => l.keys = n + 1,
            _ => out.push(Lookup {
                until,
                keys: n + 1,
                map: 0,
            }),
        }
    }
    for (l, map) in out.iter_mut().zip(first_map..) {
        l.map = map;
    }
    out
}

/// The hash maps of a run, one per lookup of each class: the key prefixes some rule of the
/// class holds, and last, every rule's keys -> counter slot of the first rule of the class
/// with those keys (with classes: its index in the run, then the slot).
fn run_maps(rules: &[ir::Rule], tests: &[Vec<Test>], run: &Run) -> Vec<MapSpec> {
    let ordered = run.classes.len() > 1;
    let mut maps = Vec::with_capacity(run.classes.len() * run.lookups.len());
    for class in &run.classes {
        let members: Vec<usize> = (0..rules.len())
            .filter(|&r| in_class(&tests[r], &run.keys, class))
            .collect();
        for l in &run.lookups {
            let keys = &run.keys[..l.keys];
            let key_size: usize = class[..l.keys].iter().map(|k| k.width()).sum();
            let mut seen = FxHashSet::default();
            seen.reserve(members.len());
            let mut map = MapSpec::new(key_size as u32, if ordered { 8 } else { 4 });
            let mut k = Vec::with_capacity(MAX_KEY_BYTES);
            for &r in &members {
                k.clear();
                key_bytes(&tests[r], keys, &mut k);
                if seen.insert(key_number(&k)) {
                    let slot = rules[r].counter.to_ne_bytes();
                    if ordered {
                        let order = (r as u32).to_ne_bytes();
                        map.push(&k, &[order, slot].concat());
                    } else {
                        map.push(&k, &slot);
                    }
                }
            }
            maps.push(map);
        }
    }
    maps
}

/// The `recent` lists and `hashlimit` tables the rules of `p` name (one map each).
fn state_maps(p: &Program) -> usize {
    let mut recent = std::collections::BTreeSet::new();
    let mut hashlimit = std::collections::BTreeSet::new();
    for m in p
        .chains
        .values()
        .flat_map(|c| &c.rules)
        .flat_map(|r| &r.matches)
    {
        match m {
            ir::Match::Recent(r) => {
                recent.insert(r.list);
            }
            ir::Match::Hashlimit(h) => {
                hashlimit.insert(h.table);
            }
            _ => {}
        }
    }
    recent.len() + hashlimit.len()
}

/// The rule runs of chains `ids` (none unless `enabled`) and their maps, `Lookup::map`
/// indexing the maps: every chain's candidates, the longest kept while their maps fit in what
/// the kernel lets one program use.
pub(super) fn plan<'a>(
    p: &Program,
    ids: impl Iterator<Item = &'a ChainId>,
    lowered: &Lowered,
    enabled: bool,
    classify: bool,
) -> Result<(Vec<MapSpec>, Runs), EmitError> {
    let ids: Vec<ChainId> = if enabled {
        ids.copied().collect()
    } else {
        Vec::new()
    };
    let mut found: Vec<(ChainId, Found)> = Vec::new();
    for id in &ids {
        found.extend(
            find_runs(&p.chains[id].rules, &lowered[id])
                .into_iter()
                .map(|f| (*id, f)),
        );
    }
    let mut room = MAX_RUN_MAPS.saturating_sub(state_maps(p));
    // classified runs first (their rules would cost a packet each otherwise); hash runs of
    // their size or more stay hash runs (a lookup or two beats a tree walk)
    let mut classified: Vec<(ChainId, usize, usize, Classified, Vec<MapSpec>)> = Vec::new();
    if classify && p.family == ir::Family::Ipv4 {
        for id in &ids {
            let (rules, tests) = (&p.chains[id].rules, &lowered[id]);
            let hashed = |i: usize| {
                found.iter().any(|(c, f)| {
                    c == id && f.1 >= classify::MIN_RULES && (f.0..f.0 + f.1).contains(&i)
                })
            };
            let ok = |i: usize| !hashed(i) && classify::classifiable(&rules[i], &tests[i]);
            let mut i = 0;
            while i < rules.len() {
                let end = (i..rules.len()).find(|&j| !ok(j)).unwrap_or(rules.len());
                if end - i >= classify::MIN_RULES && room >= classify::MAX_MAPS {
                    if let Some((c, m)) = classify::build(&rules[i..end], &tests[i..end], 0) {
                        room -= m.len();
                        classified.push((*id, i, end - i, c, m));
                    }
                }
                i = end.max(i + 1);
            }
        }
        found.retain(|(id, f)| {
            !classified
                .iter()
                .any(|(c, s, n, ..)| c == id && f.0 < s + n && *s < f.0 + f.1)
        });
    }
    // the longest first, while their maps fit beside the program's others; then in chain order
    found.sort_by_key(|(_, f)| std::cmp::Reverse(f.1));
    let mut kept = Vec::new();
    for (id, f) in found {
        let tests = &lowered[&id][f.0];
        let n = lookups(tests, &f.2, 0).len() * f.3.len();
        if n <= room {
            room -= n;
            kept.push((id, Ok(f)));
        }
    }
    kept.extend(
        classified
            .into_iter()
            .map(|(id, start, len, c, m)| (id, Err((start, len, c, m)))),
    );
    let start_of = |k: &Result<Found, (usize, usize, Classified, Vec<MapSpec>)>| match k {
        Ok(f) => f.0,
        Err(c) => c.0,
    };
    kept.sort_by_key(|(id, k)| (*id, start_of(k)));
    let mut maps: Vec<MapSpec> = Vec::new();
    let mut runs = Runs::new();
    for (id, k) in kept {
        let first_map = u32::try_from(maps.len()).map_err(|_| EmitError::Unsupported {
            what: "more than 2^32 rule runs",
        })?;
        let run = match k {
            Ok((start, len, keys, classes)) => {
                let chain = &p.chains[&id];
                let tests = &lowered[&id][start..start + len];
                let run = Run {
                    start,
                    len,
                    lookups: lookups(&tests[0], &keys, first_map),
                    keys,
                    classes,
                    classified: None,
                };
                maps.extend(run_maps(&chain.rules[start..start + len], tests, &run));
                run
            }
            Err((start, len, mut c, m)) => {
                c.renumber(first_map);
                maps.extend(m);
                Run {
                    start,
                    len,
                    keys: Vec::new(),
                    lookups: Vec::new(),
                    classes: Vec::new(),
                    classified: Some(Box::new(c)),
                }
            }
        };
        runs.entry(id).or_default().push(run);
    }
    Ok((maps, runs))
}

/// Store key test `key` under the mask of `kind` at `rec::LKEY + offset` (an IPv6 address's
/// last word is left in `r1` for the caller's store); returns the store's size and the key's
/// bytes before that store.
fn store_key(
    b: &mut crate::builder::Builder,
    key: &Test,
    kind: KeyKind,
    offset: i16,
) -> Result<(Size, i16), EmitError> {
    Ok(match kind {
        KeyKind::Addr { mask, .. } => {
            load_operand(b, key)?;
            if mask != u32::MAX {
                b.emit(alu32(AluOp::And, R1, Src::Imm(mask as i32)));
            }
            (Size::W, 0)
        }
        KeyKind::Addr6 { field, mask } => {
            // the four words as the record holds them, each under its mask; the first three
            // stored here, the last by the caller's store
            for (k, m) in mask.into_iter().enumerate() {
                let k = k as i16;
                b.emit(ldx(Size::W, R1, R6, field + 4 * k));
                if m != u32::MAX {
                    b.emit(alu32(AluOp::And, R1, Src::Imm(m as i32)));
                }
                if k < 3 {
                    b.emit(stx(Size::W, R6, rec::LKEY + offset + 4 * k, R1));
                }
            }
            (Size::W, 12)
        }
        KeyKind::Port { .. } => {
            load_operand(b, key)?;
            (Size::H, 0)
        }
    })
}

use Reg::{R0, R1, R2, R6};

/// `r0 = lookup(map, r6 + key)` (a key in the record); a miss goes to `miss`.
pub(super) fn lookup_at(b: &mut crate::builder::Builder, map: MapRef, key: i16, miss: Label) {
    b.ld_map(R1, map);
    b.emit(mov64(R2, Src::Reg(R6)));
    b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(key))));
    b.call_helper(HELPER_MAP_LOOKUP_ELEM);
    b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), miss);
}

/// `rec::BEST` before a run with classes has found a rule (above every rule index).
const NO_RULE: i32 = i32::MAX;

impl Generator<'_> {
    /// Emit a rule run (see "Rule runs"): per stretch of tests, the tests but the keys, then
    /// the stretch's keys added to the lookup key and looked up; after the last lookup (value
    /// = counter slot of the first rule with those keys) the remaining tests and the action of
    /// the rule found. A miss, or a failing test, continues at `next` (after the run).
    pub(super) fn rule_run(
        &mut self,
        first: &ir::Rule,
        tests: &[Test],
        run: &Run,
        frame: &mut Frame,
        next: Label,
    ) -> Result<(), EmitError> {
        if run.classes.len() > 1 {
            return self.rule_run_classes(first, tests, run, frame, next);
        }
        let Some((mut st, pos)) = self.run_lookups(tests, run, &run.classes[0], 0, frame, next)?
        else {
            return Ok(());
        };
        // KEY = slot + 1, as `set_key` would store it
        let b = &mut self.b;
        b.emit(ldx(Size::W, R1, R0, 0));
        b.emit(alu32(AluOp::Add, R1, Src::Imm(1)));
        b.emit(stx(Size::W, R6, rec::KEY, R1));
        self.run_tail(first, &tests[pos..], frame, next, &mut st)
    }

    /// A run with classes (see "Classes"): each class's lookups in turn, a miss going on with
    /// the next class; a hit whose rule comes before the best so far (`rec::BEST`) becomes it.
    /// Then the remaining tests and the action, as for one class.
    fn rule_run_classes(
        &mut self,
        first: &ir::Rule,
        tests: &[Test],
        run: &Run,
        frame: &mut Frame,
        next: Label,
    ) -> Result<(), EmitError> {
        let per_class = run.lookups.len() as u32;
        self.b.emit(st(Size::W, R6, rec::BEST, NO_RULE));
        let decide = self.b.label();
        for (c, class) in run.classes.iter().enumerate() {
            let miss = if c + 1 == run.classes.len() {
                decide
            } else {
                self.b.label()
            };
            self.run_class(tests, run, class, c as u32 * per_class, frame, miss)?;
            if miss != decide {
                self.b.bind(miss)?;
            }
        }
        self.b.bind(decide)?;
        let b = &mut self.b;
        b.emit(ldx(Size::W, R1, R6, rec::BEST));
        b.jmp64(JmpOp::Jeq, R1, Src::Imm(NO_RULE), next);
        let pos = run.lookups.last().map_or(0, |l| l.until);
        self.run_tail(first, &tests[pos..], frame, next, &mut TestState::default())
    }

    /// One class of a run with classes: its stretches and lookups (maps `map_offset` past the
    /// first class's), then, on a hit, BEST and KEY from the value `{index, slot}` when the
    /// rule comes first. Falls through, or jumps to `miss`, to what comes after.
    fn run_class(
        &mut self,
        tests: &[Test],
        run: &Run,
        class: &[KeyKind],
        map_offset: u32,
        frame: &mut Frame,
        miss: Label,
    ) -> Result<(), EmitError> {
        // the tests are every class's: if one never passes, no class finds a rule
        if self
            .run_lookups(tests, run, class, map_offset, frame, miss)?
            .is_none()
        {
            return Ok(());
        }
        let b = &mut self.b;
        b.emit(ldx(Size::W, R1, R0, 0));
        b.emit(ldx(Size::W, R2, R6, rec::BEST));
        b.jmp64(JmpOp::Jge, R1, Src::Reg(R2), miss);
        b.emit(stx(Size::W, R6, rec::BEST, R1));
        // KEY = slot + 1, as `set_key` would store it
        b.emit(ldx(Size::W, R1, R0, 4));
        b.emit(alu32(AluOp::Add, R1, Src::Imm(1)));
        b.emit(stx(Size::W, R6, rec::KEY, R1));
        Ok(())
    }

    /// The stretches of a run for the keys of `class` (maps `map_offset` past the first
    /// class's): per stretch, the tests but the keys, then its keys added to the lookup key
    /// and looked up, a miss or a failing test going to `miss`. Leaves the last lookup's value
    /// in `r0`; returns the guards established and where the tests after the lookups start,
    /// or None when a test never passes (then nothing after it may be emitted).
    fn run_lookups(
        &mut self,
        tests: &[Test],
        run: &Run,
        class: &[KeyKind],
        map_offset: u32,
        frame: &mut Frame,
        miss: Label,
    ) -> Result<Option<(TestState, usize)>, EmitError> {
        let mut st = TestState::default();
        let (mut pos, mut stored, mut offset) = (0, 0, 0i16);
        for l in &run.lookups {
            let shared: Vec<Test> = (pos..l.until)
                .filter(|i| !run.keys.contains(i))
                .map(|i| tests[i])
                .collect();
            if !self.tests_inline(&shared, frame, miss, &mut st)? {
                return Ok(None);
            }
            let b = &mut self.b;
            for (&k, &kind) in run.keys[stored..l.keys].iter().zip(&class[stored..l.keys]) {
                let (size, skip) = store_key(b, &tests[k], kind, offset)?;
                offset += skip;
                b.emit(stx(size, R6, rec::LKEY + offset, R1));
                offset += if size == Size::W { 4 } else { 2 };
            }
            stored = l.keys;
            self.lookup(MapRef::Other(l.map + map_offset), miss);
            pos = l.until;
        }
        Ok(Some((st, pos)))
    }

    /// `r0 = lookup(map, LKEY)`; a miss goes to `miss`.
    fn lookup(&mut self, map: MapRef, miss: Label) {
        lookup_at(&mut self.b, map, rec::LKEY, miss);
    }

    /// The tests after a run's last lookup, then the action of the rule found (counting the
    /// slot at `rec::KEY`).
    fn run_tail(
        &mut self,
        first: &ir::Rule,
        tests: &[Test],
        frame: &mut Frame,
        next: Label,
        st: &mut TestState,
    ) -> Result<(), EmitError> {
        if !self.tests_inline(tests, frame, next, st)? {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::lower::lower;
    use crate::codegen::tests::addr_rule;
    use crate::codegen::{compile, compile_output, Options};
    use crate::ir::*;
    use crate::KernelLayout;
    use std::net::Ipv4Addr;

    /// (start, length, the first key test) of each run of `rules`.
    fn runs_of(rules: &[Rule]) -> Vec<(usize, usize, usize)> {
        keyed_runs_of(rules)
            .into_iter()
            .map(|(start, len, keys, _)| (start, len, keys[0]))
            .collect()
    }

    fn keyed_runs_of(rules: &[Rule]) -> Vec<Found> {
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
        // a mask other than /32: a run while every rule has it and no address bit outside
        // it (10.1.0.1/31 never matches, so it is no key)
        let masked = |mask: [u8; 4], step: u32| -> Vec<Rule> {
            (0..4)
                .map(|i| {
                    let mut r = addr_rule(i * step, Action::Drop);
                    if let Match::Ipv4Src { mask: m, .. } = &mut r.matches[0] {
                        *m = Ipv4Addr::from(mask);
                    }
                    r
                })
                .collect()
        };
        assert_eq!(runs_of(&masked([255, 255, 255, 254], 2)), vec![(0, 4, 0)]);
        assert_eq!(runs_of(&masked([255, 255, 255, 254], 1)), vec![]);
        let mut two_masks = masked([255, 255, 255, 254], 2);
        if let Match::Ipv4Src { mask, .. } = &mut two_masks[3].matches[0] {
            *mask = Ipv4Addr::new(255, 255, 255, 252);
        }
        assert_eq!(runs_of(&two_masks), vec![]);
        // differing in two keys: one run keyed by both
        let two: Vec<Rule> = (0..4)
            .map(|i| Rule {
                matches: vec![four[i].matches[0], udp_dport(1000 + i as u16)],
                action: Action::Drop,
                counter: i as u32,
            })
            .collect();
        let r = keyed_runs_of(&two);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0, r[0].1, r[0].2.len()), (0, 4, 2));
        // ... but not when a port range is one of the differences
        let mut ranged_two = two.clone();
        ranged_two[1].matches[1] = Match::Udp(UdpMatch {
            sport: PortRange::ANY,
            dport: PortRange { lo: 1, hi: 9 },
            inv_sport: false,
            inv_dport: false,
        });
        assert_eq!(runs_of(&ranged_two), vec![]);
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

    /// `-s 10.1.x.y/bits -p udp --dport p`, the address masked.
    fn masked_rule(i: u32, bits: u32, action: Action) -> Rule {
        let mut r = addr_rule(i * 4, action);
        if let Match::Ipv4Src { addr, mask, .. } = &mut r.matches[0] {
            *mask = Ipv4Addr::from(u32::MAX << (32 - bits));
            *addr = Ipv4Addr::from(u32::from(*addr) & u32::from(*mask));
        }
        r.matches.push(udp_dport(1000 + i as u16));
        r.counter = i;
        r
    }

    #[test]
    fn runs_with_classes() {
        // /32 and /31 in turn with a port: two classes of two lookups (address, then the
        // address and port after the udp guard), so 64 rules at least
        let alternating = |n: u32, action: Action| -> Vec<Rule> {
            (0..n)
                .map(|i| masked_rule(i, [32, 31][i as usize % 2], action))
                .collect()
        };
        let need = RULES_PER_CLASS_MAP * 4;
        let r = keyed_runs_of(&alternating(need as u32, Action::Drop));
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].0, r[0].1, r[0].2.len(), r[0].3.len()),
            (0, need, 2, 2)
        );
        assert_eq!(
            keyed_runs_of(&alternating(need as u32 - 1, Action::Drop)),
            vec![]
        );
        // evaluation that continues after a match keeps one mask per run
        assert_eq!(keyed_runs_of(&alternating(200, Action::Continue)), vec![]);
        assert_eq!(
            keyed_runs_of(&alternating(200, Action::Call(ChainId(1)))),
            vec![]
        );
        // at most MAX_CLASSES masks: the ninth ends the run
        let n = (RULES_PER_CLASS_MAP * 2 * MAX_CLASSES) as u32;
        let mut many: Vec<Rule> = (0..n)
            .map(|i| masked_rule(i, 32 - (i % 8), Action::Accept))
            .collect();
        many.push(masked_rule(n, 23, Action::Accept));
        let r = keyed_runs_of(&many);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0, r[0].1, r[0].3.len()), (0, n as usize, MAX_CLASSES));
        // the maps: per class, index in the run and slot of each key's first rule
        let rules = alternating(need as u32, Action::Drop);
        let lowered: Vec<Vec<Test>> = rules
            .iter()
            .map(|r| lower(&r.matches).expect("lower"))
            .collect();
        let found = &keyed_runs_of(&rules)[0];
        let run = Run {
            start: 0,
            len: need,
            lookups: lookups(&lowered[0], &found.2, 0),
            keys: found.2.clone(),
            classes: found.3.clone(),
            classified: None,
        };
        let maps = run_maps(&rules, &lowered, &run);
        assert_eq!(maps.len(), 4);
        assert!(maps
            .iter()
            .all(|m| m.value_size == 8 && m.len() == need / 2));
        // rule 3: 10.1.0.12/31, port 1003, the second class's last map
        let mut key = vec![10u8, 1, 0, 12];
        key.extend_from_slice(&1003u16.to_ne_bytes());
        let v = maps[3].entries().find(|e| e.0 == key).expect("key");
        assert_eq!(v.1, [3u32.to_ne_bytes(), 3u32.to_ne_bytes()].concat());
    }

    fn recent_update() -> Match {
        Match::Recent(RecentMatch {
            list: 0,
            shape: RecentShape {
                entries: 100,
                stamps: 32,
                wide: true,
            },
            check_set: crate::ir::recent::UPDATE,
            invert: false,
            seconds: 0,
            window: 0,
            hit_count: 0,
            dest: false,
        })
    }

    #[test]
    fn a_recent_list_takes_one_map_from_the_runs() {
        let mut rules: Vec<Rule> = (0..100u32 * 4)
            .map(|i| addr_rule(i, [Action::Drop, Action::Accept][(i / 4 % 2) as usize]))
            .collect();
        rules.push(Rule {
            matches: vec![recent_update()],
            action: Action::Drop,
            counter: 1000,
        });
        let p = Program::single(
            Hook::LocalIn,
            rules,
            Policy {
                verdict: Verdict::Accept,
                counter: 1001,
            },
        );
        let out = compile_output(
            &p,
            &KernelLayout::example(),
            Options {
                classify: false,
                ..Options::default()
            },
        )
        .expect("compile");
        assert_eq!(out.maps.len(), MAX_RUN_MAPS - 1);
    }

    #[test]
    fn no_key_past_a_barrier_the_kernel_runs_once_per_rule() {
        // `-m recent --update` then one port each: the kernel updates the list once per rule
        // until a port matches, so these rules stay rules; with the ports first, a run.
        let recent = recent_update();
        let rules = |recent_first: bool| -> Vec<Rule> {
            (0..5u16)
                .map(|i| {
                    let port = udp_dport(1000 + i);
                    Rule {
                        matches: if recent_first {
                            vec![recent, port]
                        } else {
                            vec![port, recent]
                        },
                        action: Action::Drop,
                        counter: u32::from(i),
                    }
                })
                .collect()
        };
        assert_eq!(runs_of(&rules(true)), vec![]);
        assert_eq!(runs_of(&rules(false)).len(), 1);
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
        let found = find_runs(&rules, &lowered);
        assert_eq!(found.len(), 1);
        let run = Run {
            start: 0,
            len: 5,
            lookups: lookups(&lowered[0], &found[0].2, 0),
            keys: found[0].2.clone(),
            classes: found[0].3.clone(),
            classified: None,
        };
        let maps = run_maps(&rules, &lowered, &run);
        assert_eq!(maps.len(), 1);
        let m = &maps[0];
        assert_eq!((m.key_size, m.value_size), (4, 4));
        assert_eq!(m.len(), 4);
        let key = [10u8, 1, 0, 2];
        let v = m.entries().find(|e| e.0 == key).expect("key");
        assert_eq!(v.1, 2u32.to_ne_bytes());
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
        let out = compile_output(
            &p,
            &KernelLayout::example(),
            Options {
                classify: false,
                ..Options::default()
            },
        )
        .expect("compile");
        assert_eq!(out.maps.len(), MAX_RUN_MAPS);
        assert!(out.maps.iter().any(|m| m.len() == 10), "longest run kept");
        let mut used: Vec<MapRef> = out.code.map_fixups.iter().map(|f| f.1).collect();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), MAX_RUN_MAPS + 1);
    }
}
