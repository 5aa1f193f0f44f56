//! Rule forms: how one rule's tests and action become code.
//!
//! The verifier walks the program depth first, falling through first; a conditional jump
//! whose target it has not explored yet stays pending until the walk returns, and more than
//! 8192 pending branches fail the load. Three forms keep that in check:
//! - *inline* ([`Generator::rule_inline`]; one test, or tests the forms below cannot express):
//!   `if test fails goto next` per test, the action inline. A single-test rule leaves nothing
//!   pending.
//! - *split* ([`Generator::rule_split`]; default while the pending estimate is under
//!   [`PENDING_BUDGET`]): the most selective test inline as `if passes goto body` (a
//!   non-matching packet falls through: no taken branch per rule, which is what keeps a long
//!   chain fast), the rest of the rule branch free plus its action out of line ("cold" blocks,
//!   flushed at islands), jumping back to `next`. One pending branch per rule.
//! - *combined* ([`Generator::rule_combined`]; past the budget): every test branch free into r0
//!   ("fails") and r5 ("hotdrop"), then `if r0 != 0 goto next; if r5 != 0 goto hotdrop;
//!   action`: nothing pending for a terminal rule, but every test runs for every packet.
//!
//! Contract: the three forms of a rule behave the same on every packet (match, no match,
//! hotdrop, counted or not); they differ only in the verifier's pending branches and in the
//! cost per packet. Tests read the packet through the pieces `lower` shares between the forms
//! (`load_operand`, `single_jump`, `iface_words`, `range_test`).

use crate::builder::{Builder, Label, MapRef};
use crate::insn::{
    alu32, alu64, ldx, mov32, mov64, st, stx, AluOp, Imm64, Insn, JmpOp, Reg, Size, Src,
};
use crate::ir::{self, Action, MultiportMode};
use crate::EmitError;

use super::chains::{Cold, Frame};
use super::lower::{
    combinable, constant, copy_addr, extract, iface_words, lead_of, load_operand, range_test,
    single_jump, Field, Test,
};
use super::record::{packed, rec, MSS_FOUND, MSS_HOTDROP, OPT_HOTDROP};
use super::{Generator, HELPER_JIFFIES64, HELPER_PROBE_READ_KERNEL, HOTDROP};

/// The verifier walks a chain depth first and keeps, for each rule with several exits, one
/// branch pending until the end of the walk; more than 8192 pending branches fail the load
/// ("The sequence of 8193 jumps is too complex"; BPF_COMPLEXITY_LIMIT_JMP_SEQ, seen on 6.18).
/// Past this estimate, rules with several tests are compiled branch free ("combined"): one
/// conditional jump to the next rule and one to hotdrop, so a terminal rule leaves nothing
/// pending. Combined rules cost more per packet (every test runs), so they are only used past
/// the budget.
pub(super) const PENDING_BUDGET: usize = 7500;

/// Guards already established while a rule's tests are emitted.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TestState {
    /// transport bytes known available (not a fragment), once a guard ran
    have: Option<i32>,
    /// the tcp option guard ran
    opt_checked: bool,
    /// some test can fail
    conditional: bool,
}

impl Generator<'_> {
    /// Emit one rule in the form the pending-branch estimate calls for; returns true when
    /// control can continue after it (at `next`).
    pub(super) fn rule(
        &mut self,
        rule: &ir::Rule,
        tests: &[Test],
        frame: &mut Frame,
        next: Label,
    ) -> Result<bool, EmitError> {
        let terminal = matches!(
            rule.action,
            Action::Accept | Action::Drop | Action::Reject(_) | Action::Return | Action::Goto(_)
        );
        let jumps_before = self.b.cond_jumps();
        // A rule with a test that never matches keeps the plain form, which emits no
        // action for it (the split and combined forms would): `reaches_ret` relies on it.
        let never = tests.iter().any(never_matches);
        let splittable = !never
            && (lead_of(tests).is_some() || port_lead(tests).is_some())
            && (combinable(tests) || tests.len() == 1);
        if self.split && splittable && self.pending < self.budget {
            // the out-of-line part waits (one branch per lead jump) while the rest of the
            // chain is walked
            self.pending += if port_lead(tests).is_some() { 2 } else { 1 };
            return self.rule_split(rule, tests, frame, next);
        }
        let continues = if !never && combinable(tests) && self.pending >= self.budget {
            self.combined += usize::from(tests.len() > 1);
            self.rule_combined(rule, tests, frame, next)?
        } else {
            self.rule_inline(rule, tests, frame, next)?
        };
        let jumps = self.b.cond_jumps() - jumps_before;
        self.pending += if terminal {
            jumps.saturating_sub(1)
        } else {
            jumps
        };
        Ok(continues)
    }

    /// Inline form: the tests as branches, then the action; returns true when control can
    /// continue after it (at `next`).
    fn rule_inline(
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
    pub(super) fn tests_inline(
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
                                .jmp32(JmpOp::Jeq, Reg::R1, Src::Imm(0), frame.hotdrop);
                        }
                        self.b.jmp32(JmpOp::Jlt, Reg::R1, Src::Imm(2), next);
                    }
                    self.b
                        .jmp32(JmpOp::Jlt, Reg::R1, Src::Imm(need + 2), frame.hotdrop);
                    st.have = Some(need.max(st.have.unwrap_or(0)));
                }
                Test::Hashlimit(m) => {
                    frame.used.insert(HOTDROP);
                    st.conditional = true;
                    self.hashlimit_test(&m, next, frame.hotdrop)?;
                }
                Test::TcpMss(m) => {
                    frame.used.insert(HOTDROP);
                    st.conditional = true;
                    if !self.tcpmss_test(&m, next, frame.hotdrop)? {
                        return Ok(false);
                    }
                }
                Test::WalkGuard => {
                    // protocol 0: the prologue's ipv6_find_hdr walk failed
                    frame.used.insert(HOTDROP);
                    st.conditional = true;
                    extract(&mut self.b, Reg::R1, Field::Proto);
                    self.b
                        .jmp32(JmpOp::Jeq, Reg::R1, Src::Imm(0), frame.hotdrop);
                }
                Test::Frag6(m) => {
                    frame.used.insert(HOTDROP);
                    st.conditional = true;
                    self.frag6_test(&m, next, frame.hotdrop)?;
                }
                Test::Rt6(m) => {
                    frame.used.insert(HOTDROP);
                    st.conditional = true;
                    self.rt6_test(&m, next, frame.hotdrop)?;
                }
                Test::Opts6(m) => {
                    frame.used.insert(HOTDROP);
                    st.conditional = true;
                    self.opts6_test(&m, next, frame.hotdrop)?;
                }
                Test::Ipv6Header(m) => {
                    frame.used.insert(HOTDROP);
                    st.conditional = true;
                    self.ipv6header_test(&m, next, frame.hotdrop);
                }
                Test::OptGuard => {
                    if !st.opt_checked {
                        frame.used.insert(HOTDROP);
                        st.conditional = true;
                        self.b.emit(ldx(Size::B, Reg::R1, Reg::R6, rec::OPTST));
                        self.b
                            .jmp32(JmpOp::Jeq, Reg::R1, Src::Imm(OPT_HOTDROP), frame.hotdrop);
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

    /// Combined form (see `PENDING_BUDGET`): r0 accumulates "fails" (non-zero), r5
    /// "hotdrop"; then one jump to `next`, one to hotdrop, the action.
    pub(super) fn rule_combined(
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
                Test::Guard { .. } | Test::TcpMss(_) | Test::WalkGuard => {
                    // r2 = bit 0 "no match", bit 1 "hotdrop"
                    if let Test::WalkGuard = *t {
                        // hotdrop iff the protocol is 0 (the walk failed)
                        let b = &mut self.b;
                        extract(b, R2, Field::Proto);
                        b.emit(alu64(AluOp::Sub, R2, Src::Imm(1)));
                        b.emit(alu64(AluOp::Rsh, R2, Src::Imm(63)));
                        b.emit(alu64(AluOp::Lsh, R2, Src::Imm(1)));
                    } else if let Test::TcpMss(m) = *t {
                        self.tcpmss_bits(&m)?;
                        let b = &mut self.b;
                        b.emit(alu64(AluOp::Lsh, R1, Src::Imm(1)));
                        b.emit(alu64(AluOp::Or, R2, Src::Reg(R1)));
                    } else if let Test::Guard { need, .. } = *t {
                        let k = match need {
                            20 => 0,
                            8 => 1,
                            _ => 2,
                        };
                        let b = &mut self.b;
                        b.emit(mov64(R2, Src::Reg(R9)));
                        b.emit(alu64(AluOp::Rsh, R2, Src::Imm(packed::GUARD_SHIFT + 2 * k)));
                        b.emit(alu64(AluOp::And, R2, Src::Imm(3)));
                    }
                    let b = &mut self.b;
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
                        self.failure_bit(t)?;
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
        self.b.jmp64(JmpOp::Jne, R0, Src::Imm(0), next);
        if guard {
            frame.used.insert(HOTDROP);
            self.b.jmp64(JmpOp::Jne, R5, Src::Imm(0), frame.hotdrop);
        }
        self.action(rule, frame, next)?;
        Ok(true)
    }

    /// r1 = non-zero when pure test `t` fails (branch free; r2-r4 scratch).
    fn failure_bit(&mut self, t: &Test) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        // r1 = r1 outside [lo, hi] (0/1); r1 < 2^32, lo <= hi
        let outside = |b: &mut Builder, lo: u32, hi: u32| {
            if lo < 0x8000_0000 && hi - lo < 0x8000_0000 {
                b.emit(alu64(AluOp::Sub, R1, Src::Imm(lo as i32)));
                b.emit(mov64(R2, Src::Imm((hi - lo) as i32)));
            } else {
                b.emit(Insn::LdImm64 {
                    dst: R3,
                    imm: Imm64::Const(u64::from(lo)),
                });
                b.emit(alu64(AluOp::Sub, R1, Src::Reg(R3)));
                b.emit(Insn::LdImm64 {
                    dst: R2,
                    imm: Imm64::Const(u64::from(hi - lo)),
                });
            }
            b.emit(alu64(AluOp::Sub, R2, Src::Reg(R1)));
            b.emit(alu64(AluOp::Or, R2, Src::Reg(R1)));
            b.emit(alu64(AluOp::Rsh, R2, Src::Imm(63)));
            b.emit(mov64(R1, Src::Reg(R2)));
        };
        // Each arm leaves r1 non-zero when the test, not inverted, fails; `flip` asks for the
        // opposite, and `bit` says r1 is 0 or 1 (flipped by an xor, any other value by
        // `r1 == 0`).
        let (flip, bit) = match *t {
            Test::Addr {
                addr, mask, invert, ..
            } => {
                load_operand(b, t)?;
                if mask != u32::MAX {
                    b.emit(alu32(AluOp::And, R1, Src::Imm(mask as i32)));
                }
                b.emit(alu32(AluOp::Xor, R1, Src::Imm(addr as i32)));
                (invert, false)
            }
            Test::Proto { proto, invert } => {
                load_operand(b, t)?;
                b.emit(alu64(AluOp::Xor, R1, Src::Imm(i32::from(proto))));
                (invert, false)
            }
            Test::Frag { invert } => {
                load_operand(b, t)?;
                b.emit(alu64(AluOp::Sub, R1, Src::Imm(2)));
                b.emit(alu64(AluOp::Rsh, R1, Src::Imm(63))); // 1 = non-first fragment
                (!invert, true)
            }
            Test::Port { range, invert, .. } => {
                load_operand(b, t)?;
                outside(b, u32::from(range.lo), u32::from(range.hi));
                (invert, true)
            }
            Test::Flags { mask, cmp, invert } => {
                b.emit(ldx(Size::B, R1, R6, rec::FLAGS));
                b.emit(alu32(AluOp::And, R1, Src::Imm(i32::from(mask))));
                b.emit(alu32(AluOp::Xor, R1, Src::Imm(i32::from(cmp))));
                (invert, false)
            }
            Test::Icmp {
                icmp_type,
                min,
                max,
                invert,
                ..
            } => {
                b.emit(ldx(Size::B, R1, R6, rec::CODE));
                outside(b, u32::from(min), u32::from(max));
                b.emit(mov64(R4, Src::Reg(R1)));
                b.emit(ldx(Size::B, R1, R6, rec::TYPE));
                b.emit(alu32(AluOp::Xor, R1, Src::Imm(i32::from(icmp_type))));
                b.emit(alu64(AluOp::Or, R1, Src::Reg(R4)));
                (invert, false)
            }
            Test::Iface {
                base,
                name,
                mask,
                invert,
            } => {
                b.emit(mov64(R1, Src::Imm(0)));
                for (off, n, m) in iface_words(base, &name, &mask) {
                    b.emit(ldx(Size::W, R2, R6, off));
                    if m != u32::MAX {
                        b.emit(alu32(AluOp::And, R2, Src::Imm(m as i32)));
                    }
                    b.emit(alu32(AluOp::Xor, R2, Src::Imm(n as i32)));
                    b.emit(alu64(AluOp::Or, R1, Src::Reg(R2)));
                }
                (invert, false)
            }
            Test::Range {
                field,
                lo,
                hi,
                invert,
            } => {
                if field == rec::SADDR || field == rec::DADDR {
                    copy_addr(b, R1, field);
                } else {
                    // a field with no hot register (the IPv6 hop limit)
                    b.emit(ldx(Size::W, R1, R6, field));
                }
                b.emit(Insn::End {
                    to_be: true,
                    dst: R1,
                    bits: 32,
                });
                outside(b, lo, hi);
                (invert, true)
            }
            Test::Addr6 {
                field,
                addr,
                mask,
                invert,
            } => {
                b.emit(mov64(R1, Src::Imm(0)));
                for k in 0..4 {
                    if mask[k] == 0 {
                        continue;
                    }
                    b.emit(ldx(Size::W, R2, R6, field + 4 * k as i16));
                    if mask[k] != u32::MAX {
                        b.emit(alu32(AluOp::And, R2, Src::Imm(mask[k] as i32)));
                    }
                    b.emit(alu32(AluOp::Xor, R2, Src::Imm(addr[k] as i32)));
                    b.emit(alu64(AluOp::Or, R1, Src::Reg(R2)));
                }
                (invert, false)
            }
            Test::Multiport(_)
            | Test::TcpOption { .. }
            | Test::Guard { .. }
            | Test::OptGuard
            | Test::WalkGuard
            | Test::Frag6(_)
            | Test::Rt6(_)
            | Test::Opts6(_)
            | Test::Ipv6Header(_)
            | Test::Range6 { .. }
            | Test::Conntrack(_)
            | Test::State(_)
            | Test::Mark { .. }
            | Test::PktType { .. }
            | Test::Mac { .. }
            | Test::Limit(_)
            | Test::Addrtype(_)
            | Test::Owner(_)
            | Test::Recent(_)
            | Test::Hashlimit(_)
            | Test::TcpMss(_) => {
                return Err(EmitError::Unsupported {
                    what: "branch-free form of this test",
                });
            }
        };
        if flip && bit {
            b.emit(alu64(AluOp::Xor, R1, Src::Imm(1)));
        } else if flip {
            // r1 = (r1 == 0), for r1 < 2^63
            b.emit(alu64(AluOp::Sub, R1, Src::Imm(1)));
            b.emit(alu64(AluOp::Rsh, R1, Src::Imm(63)));
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
                addr,
                mask: 0,
                invert,
                ..
            } => {
                // (x & 0) != addr is a constant.
                if (addr != 0) != invert {
                    b.ja(fail);
                }
            }
            Test::Addr { .. } | Test::Proto { .. } => single_jump(b, t, false, fail)?,
            Test::Iface {
                base,
                name,
                mask,
                invert,
            } => {
                let words = iface_words(base, &name, &mask);
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
                    b.jmp32(JmpOp::Jne, R1, Src::Imm(*n as i32), differ);
                }
                if invert {
                    b.ja(fail);
                    b.bind(differ)?;
                }
            }
            Test::Frag { invert } => {
                load_operand(b, t)?;
                let op = if invert { JmpOp::Jlt } else { JmpOp::Jge };
                b.jmp32(op, R1, Src::Imm(2), fail);
            }
            Test::Port { range, invert, .. } => {
                load_operand(b, t)?;
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
                b.jmp32(neq(invert), R1, Src::Imm(i32::from(cmp)), fail);
            }
            Test::Icmp {
                icmp_type,
                min,
                max,
                invert,
                v6,
            } => {
                if icmp_type == 0xff && !v6 {
                    if invert {
                        b.ja(fail);
                    }
                    return Ok(());
                }
                let miss = if invert { b.label() } else { fail };
                b.emit(ldx(Size::B, R1, R6, rec::TYPE));
                b.jmp32(JmpOp::Jne, R1, Src::Imm(i32::from(icmp_type)), miss);
                b.emit(ldx(Size::B, R1, R6, rec::CODE));
                if min > max {
                    b.ja(miss);
                } else {
                    if min > 0 {
                        b.jmp32(JmpOp::Jlt, R1, Src::Imm(i32::from(min)), miss);
                    }
                    if max < 0xff {
                        b.jmp32(JmpOp::Jgt, R1, Src::Imm(i32::from(max)), miss);
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
                    extract(b, *r, Field::port(*off));
                }
                for (lo, hi) in m.items() {
                    for (r, _) in regs {
                        if lo == hi {
                            b.jmp32(JmpOp::Jeq, *r, Src::Imm(i32::from(lo)), hit);
                        } else if lo < hi {
                            let skip = b.label();
                            if lo > 0 {
                                b.jmp32(JmpOp::Jlt, *r, Src::Imm(i32::from(lo)), skip);
                            }
                            b.jmp32(JmpOp::Jle, *r, Src::Imm(i32::from(hi)), hit);
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
                b.jmp32(op, R1, Src::Imm(0), fail);
            }
            Test::State(mask) => {
                self.ct_statebit(ir::statebits::UNTRACKED as i32, false)?;
                let b = &mut self.b;
                b.emit(alu64(AluOp::And, R4, Src::Imm(mask as i32)));
                b.jmp64(JmpOp::Jeq, R4, Src::Imm(0), fail);
            }
            Test::Conntrack(m) => self.conntrack_test(&m, fail)?,
            Test::Limit(m) => self.limit_test(&m, fail)?,
            Test::Addrtype(m) => self.addrtype_test(&m, fail)?,
            Test::Owner(m) => self.owner_test(&m, fail)?,
            Test::Recent(m) => self.recent_test(&m, fail)?,
            Test::Hashlimit(_) | Test::TcpMss(_) => {
                // emitted by `tests_inline`, which knows where hotdrop goes
                return Err(EmitError::Unsupported {
                    what: "hashlimit or tcpmss outside a rule's tests",
                });
            }
            Test::PktType { pkttype, invert } => {
                let l = *self.layout;
                let b = &mut self.b;
                b.emit(ldx(Size::DW, R1, R6, rec::CTX));
                b.emit(ldx(Size::DW, R1, R1, super::access::off16(l.nf_ctx_skb)?));
                b.emit(ldx(
                    Size::B,
                    R1,
                    R1,
                    super::access::off16(l.skb.pkt_type.0)?,
                ));
                if l.skb.pkt_type.1 > 0 {
                    b.emit(alu32(AluOp::Rsh, R1, Src::Imm(l.skb.pkt_type.1 as i32)));
                }
                b.emit(alu32(AluOp::And, R1, Src::Imm(7)));
                // PACKET_LOOPBACK: MULTICAST for a multicast destination, else BROADCAST;
                // in IPv6 always MULTICAST (pkttype_mt)
                let done = b.label();
                b.jmp32(JmpOp::Jne, R1, Src::Imm(5), done);
                if self.prog.family == ir::Family::Ipv6 {
                    b.emit(mov32(R1, 2));
                } else {
                    b.emit(mov32(R1, 1));
                    copy_addr(b, R2, rec::DADDR);
                    b.emit(alu32(AluOp::And, R2, Src::Imm(0xf0)));
                    b.jmp32(JmpOp::Jne, R2, Src::Imm(0xe0), done);
                    b.emit(mov32(R1, 2));
                }
                b.bind(done)?;
                let op = if invert { JmpOp::Jeq } else { JmpOp::Jne };
                b.jmp32(op, R1, Src::Imm(i32::from(pkttype)), fail);
            }
            Test::Mac { src, invert } => self.mac_test(src, invert, fail)?,
            Test::Mark { mark, mask, invert } => {
                // skb->mark through the context the prologue kept
                let l = *self.layout;
                let b = &mut self.b;
                b.emit(ldx(Size::DW, R1, R6, rec::CTX));
                b.emit(ldx(Size::DW, R1, R1, super::access::off16(l.nf_ctx_skb)?));
                b.emit(ldx(Size::W, R1, R1, super::access::off16(l.skb.mark)?));
                b.emit(alu32(AluOp::And, R1, Src::Imm(mask as i32)));
                let op = if invert { JmpOp::Jeq } else { JmpOp::Jne };
                b.jmp32(op, R1, Src::Imm(mark as i32), fail);
            }
            Test::Addr6 {
                field,
                addr,
                mask,
                invert,
            } => {
                // ipv6_masked_addr_cmp: any word differing under its mask
                let differ = if invert { b.label() } else { fail };
                for k in 0..4 {
                    if mask[k] == 0 {
                        continue;
                    }
                    b.emit(ldx(Size::W, R1, R6, field + 4 * k as i16));
                    if mask[k] != u32::MAX {
                        b.emit(alu32(AluOp::And, R1, Src::Imm(mask[k] as i32)));
                    }
                    b.jmp32(JmpOp::Jne, R1, Src::Imm(addr[k] as i32), differ);
                }
                if invert {
                    b.ja(fail);
                    b.bind(differ)?;
                }
            }
            Test::Range6 {
                field,
                lo,
                hi,
                invert,
            } => {
                // lexicographic over the four words (iprange_ipv6_lt)
                let inside = b.label();
                let outside = b.label();
                let word = |b: &mut Builder, k: usize| {
                    b.emit(ldx(Size::W, R1, R6, field + 4 * k as i16));
                    b.emit(Insn::End {
                        to_be: true,
                        dst: R1,
                        bits: 32,
                    });
                };
                let above_lo = b.label();
                for (k, w) in lo.iter().enumerate() {
                    word(b, k);
                    b.jmp32(JmpOp::Jlt, R1, Src::Imm(*w as i32), outside);
                    if k < 3 {
                        b.jmp32(JmpOp::Jgt, R1, Src::Imm(*w as i32), above_lo);
                    }
                }
                b.bind(above_lo)?;
                for (k, w) in hi.iter().enumerate() {
                    word(b, k);
                    b.jmp32(JmpOp::Jgt, R1, Src::Imm(*w as i32), outside);
                    if k < 3 {
                        b.jmp32(JmpOp::Jlt, R1, Src::Imm(*w as i32), inside);
                    }
                }
                b.bind(inside)?;
                let pass = b.label();
                if invert {
                    b.ja(fail);
                } else {
                    b.ja(pass);
                }
                b.bind(outside)?;
                if !invert {
                    b.ja(fail);
                }
                b.bind(pass)?;
            }
            Test::Guard { .. } | Test::OptGuard | Test::WalkGuard => {}
            Test::Frag6(_) | Test::Rt6(_) | Test::Opts6(_) | Test::Ipv6Header(_) => {
                // emitted by `tests_inline`, which knows where hotdrop goes
                return Err(EmitError::Unsupported {
                    what: "frag or rt outside a rule's tests",
                });
            }
        }
        Ok(())
    }

    /// `rt_mt6` on the prologue's routing header (`rec::RT_AT`, `rec::RTHDR`): falls through
    /// when it holds, jumps to `fail` or `hotdrop`.
    fn rt6_test(&mut self, m: &ir::RtMatch, fail: Label, hotdrop: Label) -> Result<(), EmitError> {
        use super::record::{FRAG_BADMSG, FRAG_NOENT};
        use Reg::*;
        let b = &mut self.b;
        b.emit(ldx(Size::W, R1, R6, rec::RT_AT));
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(FRAG_BADMSG), hotdrop);
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(FRAG_NOENT), fail);
        // hdrlen = ipv6_optlen(rh); skb->len - ptr < hdrlen: shorter than its length field
        b.emit(ldx(Size::B, R2, R6, rec::RTHDR + 1));
        b.emit(alu32(AluOp::Add, R2, Src::Imm(1)));
        b.emit(alu32(AluOp::Lsh, R2, Src::Imm(3)));
        b.emit(ldx(Size::W, R3, R6, rec::LEN));
        b.emit(alu32(AluOp::Sub, R3, Src::Reg(R1)));
        let short = if m.short_hotdrop { hotdrop } else { fail };
        b.jmp32(JmpOp::Jlt, R3, Src::Reg(R2), short);
        b.emit(ldx(Size::B, R1, R6, rec::RTHDR + 3));
        range_test(
            b,
            R1,
            m.segsleft.0,
            m.segsleft.1,
            0xff,
            m.inv_segsleft,
            fail,
        )?;
        if let Some(len) = m.hdrlen {
            let op = if m.inv_len { JmpOp::Jeq } else { JmpOp::Jne };
            b.jmp32(op, R2, Src::Imm(len as i32), fail);
        }
        if let Some(t) = m.rt_type {
            match u8::try_from(t) {
                Ok(t) => {
                    let op = if m.inv_type { JmpOp::Jeq } else { JmpOp::Jne };
                    b.emit(ldx(Size::B, R1, R6, rec::RTHDR + 2));
                    b.jmp32(op, R1, Src::Imm(i32::from(t)), fail);
                }
                // a type above 255 never equals the header's
                Err(_) if !m.inv_type => b.ja(fail),
                Err(_) => {}
            }
        }
        if m.res {
            b.emit(ldx(Size::W, R1, R6, rec::RTHDR + 4));
            b.jmp32(JmpOp::Jne, R1, Src::Imm(0), fail);
        }
        Ok(())
    }

    /// `ipv6header_mt6` on the prologue's mask (`rec::V6H`): falls through when it holds.
    fn ipv6header_test(&mut self, m: &ir::Ipv6HeaderMatch, fail: Label, hotdrop: Label) {
        use super::record::{V6H_BOUND, V6H_FALSE};
        use Reg::*;
        let b = &mut self.b;
        b.emit(ldx(Size::W, R1, R6, rec::V6H));
        b.jmp32(JmpOp::Jset, R1, Src::Imm(V6H_BOUND), hotdrop);
        b.jmp32(JmpOp::Jset, R1, Src::Imm(V6H_FALSE), fail);
        let want = i32::from(m.matchflags);
        if m.soft {
            b.emit(alu32(
                AluOp::Xor,
                R1,
                Src::Imm(i32::from(m.matchflags ^ m.invflags)),
            ));
            b.jmp32(JmpOp::Jset, R1, Src::Imm(want), fail);
        } else if m.invflags != 0 {
            b.jmp32(JmpOp::Jeq, R1, Src::Imm(want), fail);
        } else {
            b.jmp32(JmpOp::Jne, R1, Src::Imm(want), fail);
        }
    }

    /// `hbh_mt6` on the prologue's options header (`rec::HBH_AT`/`rec::HBHHDR`, or the
    /// `DST` pair): falls through when it holds, jumps to `fail` or `hotdrop`.
    fn opts6_test(
        &mut self,
        m: &ir::OptsMatch,
        fail: Label,
        hotdrop: Label,
    ) -> Result<(), EmitError> {
        use super::record::{FRAG_BADMSG, FRAG_NOENT};
        use Reg::*;
        let (at, hdr) = if m.dst {
            (rec::DST_AT, rec::DSTHDR)
        } else {
            (rec::HBH_AT, rec::HBHHDR)
        };
        let b = &mut self.b;
        b.emit(ldx(Size::W, R1, R6, at));
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(FRAG_BADMSG), hotdrop);
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(FRAG_NOENT), fail);
        b.emit(ldx(Size::B, R2, R6, hdr + 1));
        b.emit(alu32(AluOp::Add, R2, Src::Imm(1)));
        b.emit(alu32(AluOp::Lsh, R2, Src::Imm(3)));
        b.emit(ldx(Size::W, R3, R6, rec::LEN));
        b.emit(alu32(AluOp::Sub, R3, Src::Reg(R1)));
        let short = if m.short_hotdrop { hotdrop } else { fail };
        b.jmp32(JmpOp::Jlt, R3, Src::Reg(R2), short);
        if let Some(len) = m.hdrlen {
            let op = if m.inv_len { JmpOp::Jeq } else { JmpOp::Jne };
            b.jmp32(op, R2, Src::Imm(len as i32), fail);
        }
        Ok(())
    }

    /// `frag_mt6` on the prologue's fragment header (`rec::FRAG_AT`, `rec::FRAGHDR`): falls
    /// through when it holds, jumps to `fail` or `hotdrop`.
    fn frag6_test(
        &mut self,
        m: &ir::FragMatch,
        fail: Label,
        hotdrop: Label,
    ) -> Result<(), EmitError> {
        use super::record::{FRAG_BADMSG, FRAG_NOENT};
        use Reg::*;
        let b = &mut self.b;
        b.emit(ldx(Size::W, R1, R6, rec::FRAG_AT));
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(FRAG_BADMSG), hotdrop);
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(FRAG_NOENT), fail);
        b.emit(ldx(Size::W, R1, R6, rec::FRAGHDR + 4));
        b.emit(Insn::End {
            to_be: true,
            dst: R1,
            bits: 32,
        });
        range_test(b, R1, m.ids.0, m.ids.1, u32::MAX, m.inv_ids, fail)?;
        b.emit(ldx(Size::H, R2, R6, rec::FRAGHDR + 2));
        b.emit(Insn::End {
            to_be: true,
            dst: R2,
            bits: 16,
        });
        if m.flags & ir::frag::RES != 0 {
            b.emit(ldx(Size::B, R1, R6, rec::FRAGHDR + 1));
            b.jmp32(JmpOp::Jne, R1, Src::Imm(0), fail);
            b.jmp32(JmpOp::Jset, R2, Src::Imm(6), fail);
        }
        if m.flags & ir::frag::FST != 0 {
            b.jmp32(JmpOp::Jset, R2, Src::Imm(0xfff8), fail);
        }
        if m.flags & ir::frag::MF != 0 {
            b.emit(alu32(AluOp::Mov, R1, Src::Reg(R2)));
            b.emit(alu32(AluOp::And, R1, Src::Imm(1)));
            b.jmp32(JmpOp::Jeq, R1, Src::Imm(0), fail);
        }
        if m.flags & ir::frag::NMF != 0 {
            b.jmp32(JmpOp::Jset, R2, Src::Imm(1), fail);
        }
        Ok(())
    }

    /// `tcpmss_mt` on the prologue's scan (`rec::MSS`): falls through when the match holds,
    /// jumps to `fail` when it does not and to `hotdrop` when the kernel would drop. Returns
    /// false when it never holds (every path jumped away: nothing may follow it). Two jumps at
    /// most, so that long chains of such rules stay within the verifier's pending branches.
    fn tcpmss_test(
        &mut self,
        m: &ir::TcpMssMatch,
        fail: Label,
        hotdrop: Label,
    ) -> Result<bool, EmitError> {
        use Reg::*;
        self.tcpmss_bits(m)?;
        let b = &mut self.b;
        b.jmp64(JmpOp::Jne, R1, Src::Imm(0), hotdrop);
        match tcpmss_fails(m) {
            Some(true) => {
                b.ja(fail);
                return Ok(false);
            }
            Some(false) if !m.frag_nomatch => {}
            _ => b.jmp64(JmpOp::Jne, R2, Src::Imm(0), fail),
        }
        Ok(true)
    }

    /// Branch free, from the prologue's scan (`rec::MSS`): `r1` = 1 when `tcpmss_mt` would
    /// hotdrop, `r2` = 1 when it would return false (0 and 0: the match holds). Uses r1-r4.
    fn tcpmss_bits(&mut self, m: &ir::TcpMssMatch) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        b.emit(ldx(Size::W, R1, R6, rec::MSS));
        match tcpmss_fails(m) {
            Some(f) => b.emit(mov64(R2, Src::Imm(i32::from(f)))),
            None => {
                // r2 = MSS found and inside [min, max] (min <= max here)
                b.emit(mov64(R2, Src::Reg(R1)));
                b.emit(alu64(
                    AluOp::Rsh,
                    R2,
                    Src::Imm(MSS_FOUND.trailing_zeros() as i32),
                ));
                b.emit(alu64(AluOp::And, R2, Src::Imm(1)));
                b.emit(mov64(R3, Src::Reg(R1)));
                b.emit(alu64(AluOp::And, R3, Src::Imm(0xffff)));
                b.emit(alu64(AluOp::Sub, R3, Src::Imm(i32::from(m.min))));
                b.emit(mov64(R4, Src::Imm(i32::from(m.max - m.min))));
                b.emit(alu64(AluOp::Sub, R4, Src::Reg(R3)));
                b.emit(alu64(AluOp::Or, R4, Src::Reg(R3)));
                b.emit(alu64(AluOp::Rsh, R4, Src::Imm(63))); // 1 = outside
                b.emit(alu64(AluOp::Xor, R4, Src::Imm(1)));
                b.emit(alu64(AluOp::And, R2, Src::Reg(R4)));
                // `(found && inside) ^ invert` is false: invert 0 fails unless it is 1,
                // invert 1 fails when it is
                if m.invert == 0 {
                    b.emit(alu64(AluOp::Xor, R2, Src::Imm(1)));
                }
            }
        }
        b.emit(alu64(
            AluOp::Rsh,
            R1,
            Src::Imm(MSS_HOTDROP.trailing_zeros() as i32),
        ));
        b.emit(alu64(AluOp::And, R1, Src::Imm(1)));
        if m.frag_nomatch {
            // par->fragoff != 0: false at once, whatever `invert` says, and never a hotdrop
            extract(b, R3, Field::Th);
            b.emit(alu64(AluOp::Sub, R3, Src::Imm(2)));
            b.emit(alu64(AluOp::Rsh, R3, Src::Imm(63))); // 1 = non-first fragment
            b.emit(alu64(AluOp::Or, R2, Src::Reg(R3)));
            b.emit(alu64(AluOp::Xor, R3, Src::Imm(1)));
            b.emit(alu64(AluOp::And, R1, Src::Reg(R3)));
        }
        Ok(())
    }

    /// `r4` = the packet's state bit as xt_conntrack / xt_state compute it (tracked: bit
    /// `ctinfo % IP_CT_IS_REPLY + 1`; no entry: `untracked` for IP_CT_UNTRACKED, else bit 0,
    /// INVALID), with SNAT/DNAT (bits 6, 7) from the entry's status when `nat`. Uses r1-r5.
    fn ct_statebit(&mut self, untracked: i32, nat: bool) -> Result<(), EmitError> {
        use Reg::*;
        if nat {
            // status first: the read clobbers r1-r5
            self.ct_read(|c| c.status, 4)?;
        }
        let b = &mut self.b;
        let tracked = b.label();
        let done = b.label();
        b.emit(ldx(Size::DW, R2, R6, rec::NFCT));
        b.emit(mov64(R3, Src::Reg(R2)));
        b.emit(alu64(AluOp::And, R3, Src::Imm(7)));
        b.emit(alu64(AluOp::And, R2, Src::Imm(-8)));
        b.jmp64(JmpOp::Jne, R2, Src::Imm(0), tracked);
        b.emit(mov64(R4, Src::Imm(1)));
        b.jmp64(JmpOp::Jne, R3, Src::Imm(7), done);
        b.emit(mov64(R4, Src::Imm(untracked)));
        b.ja(done);
        b.bind(tracked)?;
        b.emit(mov64(R4, Src::Reg(R3)));
        let small = b.label();
        b.jmp64(JmpOp::Jlt, R4, Src::Imm(3), small);
        b.emit(alu64(AluOp::Sub, R4, Src::Imm(3)));
        b.bind(small)?;
        b.emit(alu64(AluOp::Add, R4, Src::Imm(1)));
        b.emit(mov64(R5, Src::Imm(1)));
        b.emit(alu64(AluOp::Lsh, R5, Src::Reg(R4)));
        b.emit(mov64(R4, Src::Reg(R5)));
        if nat {
            b.emit(ldx(Size::W, R1, R6, rec::CTBUF));
            for (ips, bit) in [(1 << 4, ir::ctstate::SNAT), (1 << 5, ir::ctstate::DNAT)] {
                let no = b.label();
                b.emit(mov64(R5, Src::Reg(R1)));
                b.emit(alu64(AluOp::And, R5, Src::Imm(ips)));
                b.jmp64(JmpOp::Jeq, R5, Src::Imm(0), no);
                b.emit(alu64(AluOp::Or, R4, Src::Imm(i32::from(bit))));
                b.bind(no)?;
            }
        }
        b.bind(done)?;
        Ok(())
    }

    /// The ends of a conntrack tuple, in the order the tests run: (original direction, source)
    /// for `--ctorigsrc`, `--ctorigdst`, `--ctreplsrc`, `--ctrepldst` and their ports.
    const CT_ENDS: [(bool, bool); 4] = [(true, true), (true, false), (false, true), (false, false)];

    /// One end of a conntrack tuple into r1 (through [`Self::ct_read`]): 4 bytes of the
    /// source or destination address, from byte `word * 4` of its `nf_inet_addr`, or, with
    /// `port`, the port (2 bytes, network order) of the original or the reply direction.
    fn ct_tuple(&mut self, orig: bool, src: bool, port: bool, word: u32) -> Result<(), EmitError> {
        self.ct_read(
            move |c| {
                let end = match (src, port) {
                    (true, false) => c.src_addr + 4 * word,
                    (false, false) => c.dst_addr + 4 * word,
                    (true, true) => c.src_port,
                    (false, true) => c.dst_port,
                };
                (if orig { c.tuple_orig } else { c.tuple_reply }) + end
            },
            if port { 2 } else { 4 },
        )?;
        let size = if port { Size::H } else { Size::W };
        self.b.emit(ldx(size, Reg::R1, Reg::R6, rec::CTBUF));
        Ok(())
    }

    /// A tuple address test (`conntrack_addrcmp`): the masked difference of each 32-bit word
    /// (one in IPv4, four in IPv6; a word under a zero mask always agrees) is zero, inverted
    /// by `!`. Falls through when the test holds.
    fn ct_addr_test(
        &mut self,
        orig: bool,
        src: bool,
        a: &ir::CtAddr,
        fail: Label,
    ) -> Result<(), EmitError> {
        use Reg::*;
        let words = match self.prog.family {
            ir::Family::Ipv4 => 1,
            ir::Family::Ipv6 => 4,
        };
        let word = |b: &[u8; 16], i: usize| {
            u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        };
        // inverted: one differing word makes the test hold
        let differs = if a.invert { self.b.label() } else { fail };
        for i in 0..words {
            let mask = word(&a.mask, i);
            if mask == 0 {
                continue;
            }
            self.ct_tuple(orig, src, false, i as u32)?;
            let b = &mut self.b;
            b.emit(alu32(AluOp::Xor, R1, Src::Imm(word(&a.addr, i) as i32)));
            b.emit(alu32(AluOp::And, R1, Src::Imm(mask as i32)));
            b.jmp32(JmpOp::Jne, R1, Src::Imm(0), differs);
        }
        if a.invert {
            let b = &mut self.b;
            b.ja(fail);
            b.bind(differs)?;
        }
        Ok(())
    }

    /// Read `size` bytes of the packet's nf_conn at the offset `field` picks into CTBUF with
    /// bpf_probe_read_kernel (zeros when there is no entry). nf_conn's BTF may live in a
    /// module, which `bpf_rdonly_cast` cannot name, so the read is a plain kernel read at
    /// BTF offsets. Uses r1-r5.
    fn ct_read(
        &mut self,
        field: impl Fn(&crate::ConnLayout) -> u32,
        size: i32,
    ) -> Result<(), EmitError> {
        use Reg::*;
        let conn = self.layout.conn.ok_or(EmitError::Unsupported {
            what: "conntrack status or tuple tests without nf_conn in the kernel's BTF",
        })?;
        let window = conn.copy_window();
        let b = &mut self.b;
        b.emit(st(Size::DW, R6, rec::CTBUF, 0));
        b.emit(ldx(Size::DW, R3, R6, rec::NFCT));
        b.emit(alu64(AluOp::And, R3, Src::Imm(-8)));
        let none = b.label();
        let read = b.label();
        let call = b.label();
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), none);
        b.jmp64(JmpOp::Jge, R3, Src::Imm(0x10000), read);
        // a REJECT reply's placeholder: the fields are in its ReplyCt slot, if it has one
        match window {
            Some((start, _)) => {
                b.emit(mov64(R1, Src::Reg(R3)));
                b.emit(alu64(
                    AluOp::And,
                    R1,
                    Src::Imm(crate::event::REPLY_CT_COPY as i32),
                ));
                b.jmp64(JmpOp::Jeq, R1, Src::Imm(0), none);
                b.emit(alu64(AluOp::Rsh, R3, Src::Imm(8)));
                b.emit(stx(Size::W, R6, rec::CTBUF, R3));
                b.ld_map(R1, MapRef::ReplyCt);
                b.emit(mov64(R2, Src::Reg(R6)));
                b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(rec::CTBUF))));
                b.call_helper(super::HELPER_MAP_LOOKUP_ELEM);
                b.emit(st(Size::DW, R6, rec::CTBUF, 0));
                b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), none);
                b.emit(mov64(R3, Src::Reg(R0)));
                b.emit(alu64(
                    AluOp::Add,
                    R3,
                    Src::Imm((field(&conn) - start) as i32),
                ));
                b.ja(call);
            }
            None => b.ja(none),
        }
        b.bind(read)?;
        b.emit(alu64(AluOp::Add, R3, Src::Imm(field(&conn) as i32)));
        b.bind(call)?;
        b.emit(mov64(R1, Src::Reg(R6)));
        b.emit(alu64(AluOp::Add, R1, Src::Imm(i32::from(rec::CTBUF))));
        b.emit(mov64(R2, Src::Imm(size)));
        b.call_helper(HELPER_PROBE_READ_KERNEL);
        b.bind(none)?;
        Ok(())
    }

    /// `-m conntrack`, in `conntrack_mt`'s order; falls through on match.
    fn conntrack_test(&mut self, m: &ir::CtMatch, fail: Label) -> Result<(), EmitError> {
        use Reg::*;
        let pass = self.b.label();
        if let Some((mask, invert)) = m.state {
            let nat = mask & (ir::ctstate::SNAT | ir::ctstate::DNAT) != 0;
            self.ct_statebit(i32::from(ir::ctstate::UNTRACKED), nat)?;
            let b = &mut self.b;
            b.emit(alu64(AluOp::And, R4, Src::Imm(i32::from(mask))));
            let op = if invert { JmpOp::Jne } else { JmpOp::Jeq };
            b.jmp64(op, R4, Src::Imm(0), fail);
        }
        // no entry: the state test decided
        let b = &mut self.b;
        b.emit(ldx(Size::DW, R2, R6, rec::NFCT));
        b.emit(mov64(R3, Src::Reg(R2)));
        b.emit(alu64(AluOp::And, R2, Src::Imm(-8)));
        b.jmp64(
            JmpOp::Jeq,
            R2,
            Src::Imm(0),
            if m.state.is_some() { pass } else { fail },
        );
        if let Some(orig) = m.dir_original {
            b.emit(alu64(AluOp::And, R3, Src::Imm(7)));
            let op = if orig { JmpOp::Jge } else { JmpOp::Jlt };
            b.jmp64(op, R3, Src::Imm(3), fail);
        }
        let addrs = [m.origsrc, m.origdst, m.replsrc, m.repldst];
        for ((orig, src), t) in Self::CT_ENDS.into_iter().zip(addrs) {
            let Some(a) = t else { continue };
            self.ct_addr_test(orig, src, &a, fail)?;
        }
        if let Some((proto, invert)) = m.proto {
            self.ct_read(|c| c.tuple_orig + c.protonum, 1)?;
            let b = &mut self.b;
            b.emit(ldx(Size::B, R1, R6, rec::CTBUF));
            let op = if invert { JmpOp::Jeq } else { JmpOp::Jne };
            b.jmp32(op, R1, Src::Imm(i32::from(proto)), fail);
        }
        let ports = [
            m.origsrc_port,
            m.origdst_port,
            m.replsrc_port,
            m.repldst_port,
        ];
        for ((orig, src), t) in Self::CT_ENDS.into_iter().zip(ports) {
            let Some(p) = t else { continue };
            self.ct_tuple(orig, src, true, 0)?;
            let b = &mut self.b;
            b.emit(Insn::End {
                to_be: true,
                dst: R1,
                bits: 16,
            });
            range_test(
                b,
                R1,
                u32::from(p.range.lo),
                u32::from(p.range.hi),
                0xffff,
                p.invert,
                fail,
            )?;
        }
        if let Some((mask, invert)) = m.status {
            self.ct_read(|c| c.status, 4)?;
            let b = &mut self.b;
            b.emit(ldx(Size::W, R1, R6, rec::CTBUF));
            b.emit(alu32(AluOp::And, R1, Src::Imm(mask as i32)));
            let op = if invert { JmpOp::Jne } else { JmpOp::Jeq };
            b.jmp32(op, R1, Src::Imm(0), fail);
        }
        if let Some((lo, hi, invert)) = m.expires {
            // nf_ct_expires(ct) / HZ: (s32)(ct->timeout - (u32)jiffies), at least 0
            let hz = self.layout.conn.map_or(0, |c| c.hz);
            if hz == 0 {
                return Err(EmitError::Unsupported {
                    what: "conntrack --ctexpire without the kernel's HZ",
                });
            }
            self.ct_read(|c| c.timeout, 4)?;
            let b = &mut self.b;
            b.call_helper(HELPER_JIFFIES64);
            b.emit(ldx(Size::W, R1, R6, rec::CTBUF));
            b.emit(alu32(AluOp::Sub, R1, Src::Reg(R0)));
            let positive = b.label();
            b.jmp32(JmpOp::Jsge, R1, Src::Imm(0), positive);
            b.emit(mov32(R1, 0));
            b.bind(positive)?;
            b.emit(alu32(AluOp::Div, R1, Src::Imm(hz as i32)));
            range_test(b, R1, lo, hi, u32::MAX, invert, fail)?;
        }
        self.b.bind(pass)?;
        Ok(())
    }

    /// Split form: the lead test inline, jumping out of line when it passes; the rest of the
    /// rule (branch free) and its action out of line. A packet that fails the lead costs
    /// the lead only, and the verifier keeps one branch pending (the out-of-line part).
    fn rule_split(
        &mut self,
        rule: &ir::Rule,
        tests: &[Test],
        frame: &mut Frame,
        next: Label,
    ) -> Result<bool, EmitError> {
        let cold = self.b.label();
        let mut rest = tests.to_vec();
        if let Some(PortLead { field, range, kind }) = port_lead(tests) {
            // the port in range, or the guard's hotdrop: the rule may match or hotdrop, the
            // body decides (every test); else it fails whatever its other tests say
            let b = &mut self.b;
            extract(b, Reg::R1, Field::port(field));
            if range.lo != 0 {
                b.emit(alu32(AluOp::Sub, Reg::R1, Src::Imm(i32::from(range.lo))));
            }
            b.jmp32(
                JmpOp::Jle,
                Reg::R1,
                Src::Imm(i32::from(range.hi - range.lo)),
                cold,
            );
            b.emit(mov64(Reg::R1, Src::Reg(Reg::R9)));
            b.emit(alu64(
                AluOp::Rsh,
                Reg::R1,
                Src::Imm(packed::GUARD_SHIFT + 2 * kind + 1),
            ));
            b.emit(alu64(AluOp::And, Reg::R1, Src::Imm(1)));
            b.jmp64(JmpOp::Jne, Reg::R1, Src::Imm(0), cold);
        } else {
            let (i, lead) = lead_of(tests).ok_or(EmitError::Unsupported {
                what: "split rule without a lead test",
            })?;
            single_jump(&mut self.b, &lead, true, cold)?;
            rest.remove(i);
        }
        frame.cold_slots += 16 + 12 * rest.len();
        frame.cold.push(Cold {
            label: cold,
            next,
            ret: frame.ret,
            rule: rule.clone(),
            tests: rest,
        });
        Ok(true)
    }
}

/// The lead of a split rule that begins `-p P` (in IPv6 after the walk's guard), P's
/// transport guard and a port test (one port or a range, not inverted, not every port). The
/// proto test alone would send every packet of P to the rule's body, out of line; the port
/// sends only those the rule may match, or hotdrop.
///
/// The IPv6 walk's hotdrop needs no jump of its own: a failed walk leaves the transport bytes
/// available at 1 (`access6`), which sets every guard's hotdrop bit, so the lead goes to the
/// body, whose walk guard hotdrops first.
#[derive(Debug, Clone, Copy)]
struct PortLead {
    /// the port's record field
    field: i16,
    range: ir::PortRange,
    /// the guard's kind in the packed guard bits
    kind: i32,
}

fn port_lead(tests: &[Test]) -> Option<PortLead> {
    let tests = match tests {
        [Test::WalkGuard, rest @ ..] => rest,
        _ => tests,
    };
    let [Test::Proto { invert: false, .. }, Test::Guard { need, .. }, ref rest @ ..] = *tests
    else {
        return None;
    };
    let kind = match need {
        20 => 0,
        8 => 1,
        _ => 2,
    };
    // the first port test that can fail (`--sport` of every port is pushed first)
    for t in rest {
        match *t {
            _ if constant(t) == Some(true) => {}
            Test::Port {
                field,
                range,
                invert: false,
            } if constant(t).is_none() && range.lo <= range.hi => {
                return Some(PortLead { field, range, kind })
            }
            _ => return None,
        }
    }
    None
}

/// A test after which the rule's action is never emitted (see `Generator::rule`): a test
/// whose result does not depend on the packet and is false, or a tcpmss match with an empty
/// range (which may still hotdrop, so it is not [`constant`]).
pub(super) fn never_matches(t: &Test) -> bool {
    constant(t) == Some(false) || matches!(t, Test::TcpMss(m) if tcpmss_fails(m) == Some(true))
}

/// Whether a tcpmss match fails whatever the packet once it does not hotdrop (and is not a
/// fragment the fix fails): `Some(true)` never holds (no `!`, an empty range), `Some(false)`
/// always holds (an `invert` byte above 1), None depends on the MSS.
fn tcpmss_fails(m: &ir::TcpMssMatch) -> Option<bool> {
    match m.invert {
        0 if m.min > m.max => Some(true),
        1 if m.min > m.max => Some(false),
        0 | 1 => None,
        _ => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use crate::codegen::compile;
    use crate::codegen::tests::{chain_of, rule_slots};
    use crate::insn::{self, Insn, Reg};
    use crate::KernelLayout;

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
        // the prologue, the policy and the tails (their liveness anchors included)
        assert!(c.slot_count() < 1000 * 5 + 300, "{}", c.slot_count());
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
}
