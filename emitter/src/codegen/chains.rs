//! Chains: main and the chain subprograms, their rule sequences, rule actions (verdicts,
//! calls, gotos, RETURN), inlining of chains nested too deep for a subprogram, and the
//! per-function shared code (cold blocks, count-then-verdict tails, hotdrop) flushed in
//! islands.
//!
//! Contract: control reaches a rule's `next` label exactly when the kernel would evaluate the
//! following rule, and an inlined chain continues in its caller exactly when the kernel's
//! chain would return. Where this is decided before the code exists (`reaches_ret`: split
//! rules emit their actions later, in cold blocks), [`Generator::check_inlined_exits`] verifies the
//! emission kept the promise.

use std::collections::{BTreeMap, BTreeSet};

use crate::builder::{Builder, Label, StackReads};
use crate::insn::{alu32, ldx, mov64, st, AluOp, Insn, JmpOp, Reg, Size, Src};
use crate::ir::{self, Action, ChainId, Program};
use crate::EmitError;

use super::access::Features;
use super::lower::{constant, Test};
use super::record::rec;
use super::{Generator, HOTDROP, MAX_INLINE_DEPTH, RET_RETURN};

/// Rules jump forward to shared tails (count + verdict, hotdrop) at most this many slots
/// away; past it the tails are repeated in an "island" the rules' fall-through path skips
/// with one `goto`, so that no jump exceeds the 16-bit offset of BPF jumps.
const ISLAND: usize = 16_000;

/// Chain reachability, loop detection and nesting depth (entry = 0).
pub(super) fn chain_depths(p: &Program) -> Result<BTreeMap<ChainId, usize>, EmitError> {
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

/// Per-function labels.
#[derive(Debug)]
pub(super) struct Frame {
    main: bool,
    pub(super) hotdrop: Label,
    tail_accept: Label,
    tail_drop: Label,
    tail_return: Label,
    policy_rule: Option<ir::Policy>,
    pub(super) used: BTreeSet<u8>,
    /// position where the current tail labels started being used
    island_start: usize,
    /// where RETURN goes while an inlined chain is being emitted
    pub(super) ret: Option<Label>,
    /// out-of-line rule bodies waiting for the next island
    pub(super) cold: Vec<Cold>,
    /// slots those will take (estimate)
    pub(super) cold_slots: usize,
}

/// The rest of a "split" rule, emitted out of line (see `forms::PENDING_BUDGET`).
#[derive(Debug)]
pub(super) struct Cold {
    pub(super) label: Label,
    pub(super) next: Label,
    pub(super) ret: Option<Label>,
    pub(super) rule: ir::Rule,
    pub(super) tests: Vec<Test>,
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

impl Generator<'_> {
    /// Fill `returns` (see `reaches_ret`), deepest chains first: an inlined chain only refers
    /// to chains deeper than itself.
    pub(super) fn analyse_returns(
        &mut self,
        depths: &BTreeMap<ChainId, usize>,
    ) -> Result<(), EmitError> {
        let mut by_depth: Vec<(usize, ChainId)> = depths.iter().map(|(c, d)| (*d, *c)).collect();
        by_depth.sort_by(|a, b| b.cmp(a));
        // Only an inlined chain's answer is asked (by its callers' code); the chains it calls
        // are deeper, so inlined too. A hook's chain of 10,000 rules is not walked for nothing.
        for (_, c) in by_depth
            .into_iter()
            .filter(|(_, c)| self.inline.contains(c))
        {
            let r = self.reaches_ret(c)?;
            self.returns.insert(c, r);
        }
        Ok(())
    }

    /// main: the prologue, the entry chain, the tail call to the chain's next segment if it
    /// has one, the policy, then its cold blocks and tails.
    pub(super) fn main_function(&mut self, feat: Features) -> Result<(), EmitError> {
        let p = self.prog;
        self.b.symbol("main");
        let mut frame = Frame::new(&mut self.b, true);
        self.prologue(feat)?;
        self.rule_reads = StackReads::from(self.b.position());
        frame.policy_rule = Some(p.policy);
        if self.chain_body(p.entry, &mut frame)? {
            if let Some(slot) = self.tail {
                // tail_call(ctx, segments, slot); past it only if the slot is empty
                let slot = i32::try_from(slot).map_err(|_| EmitError::Unsupported {
                    what: "segment slot past 2^31",
                })?;
                self.b.emit(ldx(Size::DW, Reg::R1, Reg::R10, rec::CTX));
                self.b.ld_map(Reg::R2, crate::builder::MapRef::Segments);
                self.b.emit(mov64(Reg::R3, Src::Imm(slot)));
                self.b.call_helper(super::HELPER_TAIL_CALL);
            }
            self.b.set_origin(Some(p.policy.counter));
            self.policy_inline(&mut frame)?;
            self.b.set_origin(None);
        }
        self.cold_blocks(&mut frame)?;
        self.tails(&frame)
    }

    /// The verdict a program gives every packet without reading it, if any: (counter slot,
    /// return code) of its main chain's first rule when that rule has no match and ACCEPTs
    /// or DROPs (a built-in chain without rules is its policy entry alone), or of the policy
    /// when the main chain is empty.
    pub(super) fn unconditional(p: &Program) -> Option<(u32, i32)> {
        let code = |accept: bool| i32::from(accept);
        match p.chains.get(&p.entry)?.rules.first() {
            None => Some((
                p.policy.counter,
                code(p.policy.verdict == ir::Verdict::Accept),
            )),
            Some(r) if r.matches.is_empty() => match r.action {
                Action::Accept => Some((r.counter, code(true))),
                Action::Drop => Some((r.counter, code(false))),
                _ => None,
            },
            Some(_) => None,
        }
    }

    /// The main function of a program that gives every packet one verdict ([`Self::unconditional`]):
    /// counted (packets += 1, bytes += skb->len) and returned. Nothing reads the packet, so
    /// nothing parses it: the verifier walks a dozen instructions instead of the prologue's
    /// two paths (0.6 ms of every load on 6.18, for each built-in chain without rules).
    pub(super) fn unconditional_main(&mut self, counter: u32, code: i32) -> Result<(), EmitError> {
        let l = *self.layout;
        self.b.symbol("main");
        self.b.set_origin(Some(counter));
        self.b.emit(ldx(
            Size::DW,
            Reg::R7,
            Reg::R1,
            super::access::off16(l.nf_ctx_skb)?,
        ));
        self.b.emit(ldx(
            Size::W,
            Reg::R6,
            Reg::R7,
            super::access::off16(l.skb_len)?,
        ));
        self.b.emit(st(Size::W, Reg::R10, -8, counter as i32));
        // `count` inline: no subprogram for the JIT to compile apart
        self.count_and_exit(code)?;
        self.b.set_origin(None);
        Ok(())
    }

    /// One subprogram per user chain a reachable call site refers to, each once.
    pub(super) fn chain_subprograms(&mut self) -> Result<(), EmitError> {
        let mut done = BTreeSet::new();
        while let Some(id) = self.called.iter().find(|c| !done.contains(*c)).copied() {
            done.insert(id);
            let chain = &self.prog.chains[&id];
            let label = self.chain_labels[&id];
            self.b.bind(label)?;
            self.b.symbol(format!("chain_{}_{}", id.0, chain.name));
            self.b.emit(mov64(Reg::R6, Src::Reg(Reg::R1)));
            self.b.emit(ldx(Size::W, Reg::R7, Reg::R6, rec::SADDR));
            self.b.emit(ldx(Size::W, Reg::R8, Reg::R6, rec::DADDR));
            self.b.emit(ldx(Size::DW, Reg::R9, Reg::R6, rec::PACKED));
            let mut frame = Frame::new(&mut self.b, false);
            if self.chain_body(id, &mut frame)? {
                // Falling off the end: RETURN (not counted; front ends add a counted Return rule).
                self.b.emit(mov64(Reg::R0, Src::Imm(RET_RETURN)));
                self.b.emit(Insn::Exit);
            }
            self.cold_blocks(&mut frame)?;
            self.tails(&frame)?;
        }
        Ok(())
    }

    /// A label bound after a rule that does not continue sits in front of unrelated code (the
    /// cold blocks, the next chain): a jump there would run that code, possibly a loop back
    /// into the rule itself. And a promised continuation nothing jumps to would be unreachable
    /// code, which the verifier rejects. Either means `reaches_ret` and the emission disagree.
    pub(super) fn check_inlined_exits(&self) -> Result<(), EmitError> {
        if self.dead_ends.iter().any(|l| self.b.is_referenced(*l)) {
            return Err(EmitError::Internal {
                what: "a jump to the end of a chain that does not continue",
            });
        }
        if self.promised.iter().any(|l| !self.b.is_referenced(*l)) {
            return Err(EmitError::Internal {
                what: "an inlined chain's continuation that nothing reaches",
            });
        }
        Ok(())
    }

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
                match &run.classified {
                    Some(c) => {
                        let rules = &chain.rules[i..i + run.len];
                        self.classified_run(rules, c, frame, next)?;
                    }
                    None => self.rule_run(rule, tests, run, frame, next)?,
                }
                self.pending += self.b.cond_jumps() - jumps_before;
                self.b.set_origin(None);
                self.b.bind(next)?;
                i += run.len;
                continue;
            }
            i += 1;
            let continues = self.rule(rule, tests, frame, next)?;
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
    pub(super) fn action(
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
            Action::Reject(_) => {
                self.call_event(rule.action, rule.counter)?;
                self.set_key(rule.counter);
                self.ja_tail(frame, 0);
            }
            Action::Log(_) => {
                self.call_event(rule.action, rule.counter)?;
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
                    .jmp32(JmpOp::Jeq, Reg::R0, Src::Imm(RET_RETURN), next);
                self.b.emit(Insn::Exit);
                return Ok(true);
            }
            Action::Goto(c) => {
                self.count_inline(rule.counter);
                self.call_chain(c)?;
                if frame.main {
                    let ret = self.b.label();
                    self.b.jmp32(JmpOp::Jeq, Reg::R0, Src::Imm(RET_RETURN), ret);
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
            if tests.iter().any(super::forms::never_matches) {
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
                Action::Call(_) | Action::Continue | Action::Log(_) => true,
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
                if matches!(c.rule.action, Action::Continue | Action::Log(_)) {
                    self.b.ja(c.next);
                }
                self.b.set_origin(None);
            }
        }
        frame.ret = saved;
        Ok(())
    }

    /// Reads of every record slot a rule reads, on a path the verifier follows but no
    /// packet takes (`skb->len >> 31` is 0). Every rule reaches a tail, so with these reads
    /// visited early (the first rule that matches goes to a tail) the slots are live at
    /// every rule from then on. Since 6.18 the verifier computes stack liveness for the
    /// whole function again whenever a path it resumes reads a slot not yet known live
    /// there, and a rule's tests were such reads once per rule: verification grew with
    /// the square of the rules (see docs/KERNEL-BEHAVIOUR.md#stack-liveness).
    fn liveness_anchor(&mut self) -> Result<(), EmitError> {
        // Main's tails only, through r6 (the record): per slot, a load a rule makes (a
        // narrower one could split a spilled pointer; a wider one reach deeper). Gathered
        // as the code grows: each instruction is looked at once, whatever the tails.
        self.b.gather_stack_reads(&mut self.rule_reads, &[Reg::R6]);
        let slots = self.rule_reads.loads();
        if slots.is_empty() {
            return Ok(());
        }
        let b = &mut self.b;
        let skip = b.label();
        b.emit(ldx(Size::W, Reg::R1, Reg::R6, rec::LEN));
        b.emit(alu32(AluOp::Rsh, Reg::R1, Src::Imm(31)));
        b.jmp64(JmpOp::Jeq, Reg::R1, Src::Imm(0), skip);
        for (off, size) in slots {
            b.emit(ldx(size, Reg::R1, Reg::R6, off));
        }
        b.bind(skip)
    }

    /// Per-frame shared code: count-then-verdict tails (KEY = counter slot + 1) and hotdrop.
    /// After the count, each tail repeats the rules' stack reads for the verifier
    /// (`liveness_anchor`; three instructions at run time).
    fn tails(&mut self, frame: &Frame) -> Result<(), EmitError> {
        for (which, label, code) in [
            (1u8, frame.tail_accept, 1),
            (0u8, frame.tail_drop, 0),
            (2u8, frame.tail_return, RET_RETURN),
        ] {
            self.b.bind(label)?;
            if frame.used.contains(&which) {
                self.call_count();
                if frame.main {
                    self.liveness_anchor()?;
                }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::tests::{addr_rule, chain_of, program, rule_slots};
    use crate::codegen::{compile, compile_with, Options};
    use crate::insn;
    use crate::ir::*;
    use crate::{Compiled, KernelLayout};
    use std::net::Ipv4Addr;

    /// Every stack slot a rule reads is read again in each tail, on the path no packet takes
    /// (`liveness_anchor`): the verifier of 6.18 and later knows them live from the first
    /// rule that matches.
    #[test]
    fn tails_read_every_slot_the_rules_read() {
        let rules: Vec<Rule> = (0..40u32)
            .map(|i| Rule {
                matches: vec![
                    Match::InIface(Iface::iptables(&format!("eth{i}"), i % 3 == 0)),
                    Match::Ipv4Src {
                        addr: Ipv4Addr::new(10, 0, 0, i as u8),
                        mask: Ipv4Addr::new(255, 255, 255, 0),
                        invert: i % 2 == 0,
                    },
                ],
                action: if i % 2 == 0 {
                    Action::Drop
                } else {
                    Action::Accept
                },
                counter: i,
            })
            .collect();
        let p = Program::single(
            Hook::LocalIn,
            rules,
            Policy {
                verdict: Verdict::Drop,
                counter: 40,
            },
        );
        let c = compile(&p, &KernelLayout::example()).expect("compile");
        let loads = |pred: &dyn Fn(&Insn) -> bool| -> BTreeSet<i16> {
            c.insns
                .iter()
                .filter(|i| pred(i))
                .filter_map(|i| match i {
                    Insn::Ldx { src, off, .. } if *off < 0 => Some(off.div_euclid(8) * 8),
                    _ => None,
                })
                .collect()
        };
        let by_rules = loads(&|i| matches!(i, Insn::Ldx { src: Reg::R6, .. }));
        // the anchors: `r1 = LEN; w1 >>= 31; if r1 == 0 goto skip;` then the loads
        let head = ldx(Size::W, Reg::R1, Reg::R6, rec::LEN);
        let mut anchored = BTreeSet::new();
        for (k, _) in c.insns.iter().enumerate().filter(|(_, i)| **i == head) {
            for i in c.insns.iter().skip(k + 3) {
                match i {
                    Insn::Ldx {
                        dst: Reg::R1,
                        src: Reg::R6,
                        off,
                        ..
                    } => {
                        anchored.insert(off.div_euclid(8) * 8);
                    }
                    _ => break,
                }
            }
        }
        assert!(
            by_rules.len() > 2,
            "the rules read the record: {by_rules:?}"
        );
        let missing: Vec<&i16> = by_rules.difference(&anchored).collect();
        assert!(missing.is_empty(), "slots no tail reads: {missing:?}");
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
        let mut p = program(Hook::LocalIn, chains, 1);
        // depth 8: chains 7 and 8 are inlined into chain 6's subprogram
        let c = compile(&p, &l).expect("deep chains inline");
        assert_eq!(chain_subprograms(&c), 6);
        p.entry = ChainId(2); // depth 6: all subprograms
        let c = compile(&p, &l).expect("compile");
        assert_eq!(chain_subprograms(&c), 6);
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
        let p = program(Hook::LocalIn, chains, 3);
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

    /// How many chain subprograms `c` has.
    fn chain_subprograms(c: &Compiled) -> usize {
        c.symbols
            .iter()
            .filter(|s| s.1.starts_with("chain_"))
            .count()
    }

    /// `p` compiles in every mode of [`modes`] to acyclic code.
    fn assert_acyclic_in_every_mode(p: &Program) {
        for opts in modes() {
            let c = compile_with(p, &KernelLayout::example(), opts).expect("compile");
            assert_acyclic(&c);
        }
    }

    /// `! -s 0.0.0.0/1`: a test that can go either way.
    fn half_of_addresses() -> Match {
        Match::Ipv4Src {
            addr: Ipv4Addr::UNSPECIFIED,
            mask: Ipv4Addr::new(128, 0, 0, 0),
            invert: true,
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
        program(Hook::LocalOut, chains, slot)
    }

    #[test]
    fn inlined_return_from_a_cold_block_is_no_loop() {
        // An unconditional call to an inlined chain whose RETURN sits in a split rule (so
        // its jump is emitted later, in a cold block): the code after the call must exist
        // and be where the RETURN lands. It used to be judged unreachable (nothing had
        // jumped there yet), so the RETURN landed on the first cold block, the one of the
        // call rule before it: a loop.
        let half = half_of_addresses();
        let p = deep_program(&[
            (3, vec![], Action::Call(ChainId(8))),
            (8, vec![half], Action::Return),
            (8, vec![], Action::Accept),
        ]);
        assert_acyclic_in_every_mode(&p);
    }

    #[test]
    fn inlined_goto_from_a_cold_block_is_no_loop() {
        // same through an unconditional goto to the inlined chain, from main and a subprogram
        let half = half_of_addresses();
        for from in [0, 3] {
            let p = deep_program(&[
                (from, vec![], Action::Goto(ChainId(8))),
                (8, vec![half], Action::Return),
                (8, vec![], Action::Drop),
            ]);
            assert_acyclic_in_every_mode(&p);
        }
    }

    #[test]
    fn tcpmss_rules_compile_in_inlined_chains() {
        // tcpmss may hotdrop, and with an empty range and no `!` never holds (the rule then
        // emits no action, a RETURN included); in main, in a subprogram and in an inlined
        // chain, in every mode. (Not in `deep_programs_are_loop_free`: the option scan of the
        // prologue is a bounded loop.)
        for invert in 0..3u8 {
            for empty in [false, true] {
                let mss = Match::TcpMss(crate::ir::TcpMssMatch {
                    min: 536,
                    max: if empty { 535 } else { 1460 },
                    invert,
                    frag_nomatch: empty,
                });
                let p = deep_program(&[
                    (0, vec![mss], Action::Accept),
                    (3, vec![mss], Action::Return),
                    (8, vec![mss], Action::Return),
                    (8, vec![mss], Action::Drop),
                    (7, vec![mss], Action::Goto(ChainId(9))),
                ]);
                for opts in modes() {
                    compile_with(&p, &KernelLayout::example(), opts).expect("compile");
                }
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
            assert_acyclic_in_every_mode(&p);
        }
    }
}
