//! Rule runs: at least `MIN_RUN` consecutive rules whose lowered tests and action (same
//! Call/Goto target) are identical but for one "key" test at the same position, an exact
//! address (`/32`, not inverted) or a single port (not inverted) of the same field, compiled
//! into one lookup in a hash map (`MapRef::Other(i)`, `Output::maps[i]`: key = the address as
//! loaded or the port in host order, value = counter slot of the FIRST rule with that key):
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
//! fail on their key, which is why a run of such rules holds distinct keys.
//!
//! Contract: [`plan`] keeps at most [`MAX_RUN_MAPS`] runs (the longest) and builds their
//! maps; the IR is never changed.

use std::collections::{BTreeMap, HashSet};

use crate::builder::{Label, MapRef, MapSpec};
use crate::insn::{alu32, alu64, ldx, mov64, stx, AluOp, JmpOp, Reg, Size, Src};
use crate::ir::{self, Action, ChainId, Program};
use crate::EmitError;

use super::chains::Frame;
use super::forms::TestState;
use super::lower::{load_operand, Lowered, Test};
use super::record::rec;
use super::{Generator, HELPER_MAP_LOOKUP_ELEM};

/// Shortest run of rules compiled into one lookup.
pub const MIN_RUN: usize = 4;
/// Most rule runs (maps) in one program: the verifier's MAX_USED_MAPS (64) less the counters.
pub const MAX_RUN_MAPS: usize = 63;

/// A run of consecutive rules compiled into one hash-map lookup (see "Rule runs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    /// index of its first rule in the chain
    pub(super) start: usize,
    /// number of rules
    pub(super) len: usize,
    /// index of the key test in each rule's lowered tests
    key: usize,
    /// index of the first test after the key's hotdrop barrier (the tests from there on run
    /// after the lookup)
    split: usize,
    /// `MapRef::Other(map)`
    map: u32,
}

/// The rule runs of each chain, ascending by start.
pub(super) type Runs = BTreeMap<ChainId, Vec<Run>>;

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
    matches!(a, Action::Call(_) | Action::Continue | Action::Log(_))
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
            let mut seen = HashSet::new();
            seen.insert(key_bytes(&tests[i][k]));
            let mut j = i + 1;
            while j < rules.len()
                && rules[j].action == rules[i].action
                && !matches!(rules[i].action, Action::Reject(_) | Action::Log(_))
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
    let mut seen = HashSet::new();
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

/// The rule runs of chains `ids` (none unless `enabled`) and their maps, `Run::map` indexing
/// the maps: every chain's candidates, the longest kept when there are more than the kernel
/// lets one program use.
pub(super) fn plan<'a>(
    p: &Program,
    ids: impl Iterator<Item = &'a ChainId>,
    lowered: &Lowered,
    enabled: bool,
) -> Result<(Vec<MapSpec>, Runs), EmitError> {
    let mut found: Vec<(ChainId, usize, usize, usize)> = Vec::new();
    if enabled {
        for id in ids {
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
    let mut runs = Runs::new();
    for (id, start, len, key) in found {
        let chain = &p.chains[&id];
        let tests = &lowered[&id][start..start + len];
        let map = u32::try_from(maps.len()).map_err(|_| EmitError::Unsupported {
            what: "more than 2^32 rule runs",
        })?;
        maps.push(run_map(&chain.rules[start..start + len], tests, key));
        let split = (key + 1..tests[0].len())
            .find(|&i| tests[0][i].is_barrier())
            .unwrap_or(tests[0].len());
        runs.entry(id).or_default().push(Run {
            start,
            len,
            key,
            split,
            map,
        });
    }
    Ok((maps, runs))
}

impl Generator<'_> {
    /// Emit a rule run (see "Rule runs"): the tests before the key's hotdrop barrier once, the
    /// key looked up in the run's hash map (value = counter slot of the first rule with that
    /// key), then the tests after the barrier and the action of the rule found. A miss, or a
    /// failing test, continues at `next` (after the run).
    pub(super) fn rule_run(
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
        let key = &tests[run.key];
        let size = match key {
            Test::Addr { .. } => Size::W,
            Test::Port { .. } => Size::H,
            _ => {
                return Err(EmitError::Unsupported {
                    what: "rule run key kind",
                })
            }
        };
        let b = &mut self.b;
        load_operand(b, key)?;
        b.emit(stx(size, R6, rec::LKEY, R1));
        b.ld_map(R1, MapRef::Other(run.map));
        b.emit(mov64(R2, Src::Reg(R6)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(rec::LKEY))));
        b.call_helper(HELPER_MAP_LOOKUP_ELEM);
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), next);
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
}
