//! Counting: the `count` subprogram and how rules hand it their counter slot.
//!
//! Contract: a rule that matches is counted once, in its counter slot (the kernel's per-entry
//! counters: packets += 1, bytes += skb->len), before its verdict or its jump takes effect.
//! The slot travels through the record's KEY field, never as a constant in a register (see
//! [`Generator::set_key`]).

use crate::builder::MapRef;
use crate::insn::{
    alu32, alu64, ldx, mov64, st, stx, AluOp, AtomicOp, Insn, JmpOp, Reg, Size, Src,
};
use crate::EmitError;

use super::record::rec;
use super::{Generator, HELPER_MAP_LOOKUP_ELEM, HELPER_SMP_PROCESSOR_ID};

/// How the counter map ([`MapRef::Counters`]) holds each slot's `{packets, bytes}` (two u64);
/// the daemon creates the map and compiles the programs, so the two agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterLayout {
    /// A PERCPU_ARRAY indexed by slot: userspace reads it value by value, each value copied
    /// out for every CPU (a `BPF_MAP_LOOKUP_BATCH` of 10,000 slots takes about 4 ms).
    #[default]
    PerCpu,
    /// A plain ARRAY (`BPF_F_MMAPABLE`) of `stride` slots per possible CPU, CPU after CPU:
    /// slot s of CPU c is index `c * stride + s`. Each CPU counts in its own stretch, as in a
    /// per-CPU map, and userspace reads every count through one mapping of the array.
    Striped {
        /// slots per CPU (the table's counter capacity)
        stride: u32,
    },
}

impl Generator<'_> {
    /// `count(slot)` inline: r1 = slot, r2 = skb->len, call.
    pub(super) fn count_inline(&mut self, slot: u32) {
        self.set_key(slot);
        self.call_count();
    }

    /// `count` the slot recorded by `set_key` (r1-r5 clobbered).
    pub(super) fn call_count(&mut self) {
        self.load_key();
        self.b.emit(ldx(Size::W, Reg::R2, Reg::R6, rec::LEN));
        self.b.call_local(self.count_fn);
    }

    /// Record the counter slot for `count` in the record's KEY field, as slot + 1 (never a
    /// stored constant 0). Passing it through the stack, not as a constant in r1, keeps the
    /// key unknown to the verifier: it does not make it precise for the array lookup, so the
    /// shared tails and `count` are verified once instead of once per rule.
    pub(super) fn set_key(&mut self, slot: u32) {
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

    /// `count(r1 = slot, r2 = bytes)`: packets += 1, bytes += r2 in this CPU's value of the
    /// slot (see [`CounterLayout`]). Atomic adds: a softirq may run another hook's program
    /// on this CPU in the middle of a process-context OUTPUT program, so a plain
    /// load/add/store could lose an update.
    pub(super) fn count_subprogram(&mut self) -> Result<(), EmitError> {
        use Reg::*;
        self.b.bind(self.count_fn)?;
        self.b.symbol("count");
        self.b.emit(stx(Size::W, R10, -8, R1));
        self.b.emit(mov64(R6, Src::Reg(R2)));
        self.count_and_exit(0)
    }

    /// The body of `count` for the slot at r10-8 and the bytes in r6, then `exit` with
    /// `code` (the subprogram's 0, or a verdict where a main function counts inline).
    pub(super) fn count_and_exit(&mut self, code: i32) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        if let CounterLayout::Striped { stride } = self.counters {
            // index = cpu * stride + slot (below max_entries, which fits in 32 bits; the
            // array lookup checks the bound all the same)
            let stride = i32::try_from(stride).map_err(|_| EmitError::Unsupported {
                what: "a counter stride past 2^31",
            })?;
            b.call_helper(HELPER_SMP_PROCESSOR_ID);
            b.emit(alu32(AluOp::Mul, R0, Src::Imm(stride)));
            b.emit(ldx(Size::W, R1, R10, -8));
            b.emit(alu32(AluOp::Add, R0, Src::Reg(R1)));
            b.emit(stx(Size::W, R10, -8, R0));
        }
        b.ld_map(R1, MapRef::Counters);
        b.emit(mov64(R2, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(-8)));
        b.call_helper(HELPER_MAP_LOOKUP_ELEM);
        let out = b.label();
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), out);
        b.emit(mov64(R1, Src::Imm(1)));
        for (src, off) in [(R1, 0), (R6, 8)] {
            b.emit(Insn::Atomic {
                size: Size::DW,
                op: AtomicOp::Add { fetch: false },
                dst: R0,
                src,
                off,
            });
        }
        b.bind(out)?;
        b.emit(mov64(R0, Src::Imm(code)));
        b.emit(Insn::Exit);
        Ok(())
    }
}
