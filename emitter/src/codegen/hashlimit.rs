//! `-m hashlimit`: `hashlimit_mt_common` on a hash map of entries, each under its own
//! `bpf_spin_lock` as the kernel's `dsthash_ent` under `ent->lock`.
//!
//! Each distinct match is a subprogram (`r1` = record; `r0` = 0 no match, 1 match, 2 hotdrop):
//! - the key, `hashlimit_init_dst`: the masked addresses the table hashes, and with a port
//!   mode the two 16-bit words at `proto_ports_offset` (0 for TCP, UDP, DCCP, ESP, SCTP,
//!   UDPLITE; 4 for AH; none for other protocols); ports the packet does not have hotdrop,
//!   and so does a non-first fragment on kernels that check it (else its payload's first
//!   bytes are the ports, as `skb_header_pointer` at the transport offset reads them). The
//!   ports come from the record when the prologue read them, else through a dynptr of the
//!   skb (`skb_header_pointer`'s reach, non-linear data included).
//! - an entry found and not expired: `expires` refreshed, `rateinfo_recalc`; expired
//!   (`jiffies >= expires`) it starts over as a new one (the kernel's garbage collector would
//!   have removed it, at the latest `gc_interval` later); not found: a new entry with
//!   `rateinfo_init`'s state and this packet's charge is inserted with BPF_NOEXIST, so no other
//!   packet sees it half made. A full map (the table's `max` entries) fails the insert:
//!   hotdrop, as `dsthash_alloc_init` failing. Losing the race to another CPU's insert finds
//!   the entry and goes on as the kernel's `race` path does.
//! - the charge, with the rule's own mode: the credit test (packet or byte cost, with
//!   `hashlimit_byte_cost`'s refills), or the rate-match window; `--hashlimit-above` inverts.
//!
//! Stack frame: the new entry's value at `VAL` (its first bytes serve as the dynptr and the
//! port buffer before), the key at `KEY`. Registers: r6 the record, then skb->len; r7 the
//! result; r8 jiffies; r9 the entry (map value or `VAL`).

use crate::builder::{Label, MapRef};
use crate::insn::{alu32, alu64, ldx, mov64, st, stx, AluOp, Imm64, Insn, JmpOp, Reg, Size, Src};
use crate::ir::{hashlimit as hl, HashlimitKind, HashlimitMatch};
use crate::EmitError;

use super::access::off16;
use super::record::rec;
use super::{
    Generator, HELPER_DYNPTR_READ, HELPER_JIFFIES64, HELPER_MAP_LOOKUP_ELEM, HELPER_SPIN_LOCK,
    HELPER_SPIN_UNLOCK, KFUNC_DYNPTR_FROM_SKB,
};

const HELPER_MAP_UPDATE_ELEM: u32 = 2;
const BPF_NOEXIST: i32 = 1;
/// EEXIST (the same on every Linux architecture).
const EEXIST: i32 = 17;

/// The new entry's value (56 bytes).
const VAL: i16 = -56;
/// The skb dynptr (16 bytes, inside `VAL` before it is built).
const DYN: i16 = -56;
/// The four port bytes read from the packet.
const PORTS: i16 = -40;
/// The key (12 bytes of 16).
const KEY: i16 = -72;

/// Results of the subprogram.
const NO: i32 = 0;
const YES: i32 = 1;
const HOTDROP: i32 = 2;

fn off(v: u32) -> i16 {
    // key and value offsets are small constants
    v as i16
}

/// `dst = v` for any 64-bit constant.
fn load_const(b: &mut crate::Builder, dst: Reg, v: u64) {
    if v <= i32::MAX as u64 {
        b.emit(mov64(dst, Src::Imm(v as i32)));
    } else {
        b.emit(Insn::LdImm64 {
            dst,
            imm: Imm64::Const(v),
        });
    }
}

/// `[base + at] = v` (u64).
fn store_const(b: &mut crate::Builder, base: Reg, at: u32, v: u64) {
    if v <= i32::MAX as u64 {
        b.emit(st(Size::DW, base, off(at), v as i32));
    } else {
        load_const(b, Reg::R1, v);
        b.emit(stx(Size::DW, base, off(at), Reg::R1));
    }
}

impl Generator<'_> {
    /// `-m hashlimit`: falls through when the match holds, jumps to `fail` when it does not
    /// and to `hotdrop` when the kernel would hotdrop.
    pub(super) fn hashlimit_test(
        &mut self,
        m: &HashlimitMatch,
        fail: Label,
        hotdrop: Label,
    ) -> Result<(), EmitError> {
        let label = match self.hashlimit_fns.iter().find(|(k, _)| k == m) {
            Some((_, l)) => *l,
            None => {
                let l = self.b.label();
                self.hashlimit_fns.push((*m, l));
                l
            }
        };
        let b = &mut self.b;
        b.emit(mov64(Reg::R1, Src::Reg(Reg::R6)));
        b.call_local(label);
        b.jmp64(JmpOp::Jeq, Reg::R0, Src::Imm(NO), fail);
        b.jmp64(JmpOp::Jeq, Reg::R0, Src::Imm(HOTDROP), hotdrop);
        Ok(())
    }

    /// The `hashlimit` subprograms of the rules that call them.
    pub(super) fn hashlimit_subprograms(&mut self) -> Result<(), EmitError> {
        for (m, label) in std::mem::take(&mut self.hashlimit_fns) {
            self.b.bind(label)?;
            self.b.symbol(format!("hashlimit{}", m.table));
            self.hashlimit_subprogram(&m)?;
        }
        Ok(())
    }

    fn hashlimit_subprogram(&mut self, m: &HashlimitMatch) -> Result<(), EmitError> {
        use Reg::*;
        let skb_off = off16(self.layout.nf_ctx_skb)?;
        let b = &mut self.b;
        let drop = b.label();
        let create = b.label();
        let found = b.label();

        // the key (`hashlimit_init_dst`)
        b.emit(mov64(R6, Src::Reg(R1)));
        b.emit(st(Size::DW, R10, KEY, 0));
        b.emit(st(Size::DW, R10, KEY + 8, 0));
        for (bit, field, mask, at) in [
            (hl::HASH_DIP, rec::DADDR, m.dstmask, hl::K_DST),
            (hl::HASH_SIP, rec::SADDR, m.srcmask, hl::K_SRC),
        ] {
            if m.hash & bit != 0 && mask != 0 {
                b.emit(ldx(Size::W, R1, R6, field));
                if mask != u32::MAX {
                    b.emit(alu32(AluOp::And, R1, Src::Imm(mask as i32)));
                }
                b.emit(stx(Size::W, R10, KEY + off(at), R1));
            }
        }
        if m.hash & (hl::HASH_SPT | hl::HASH_DPT) != 0 {
            let ports = b.label();
            let offset0 = b.label();
            let offset4 = b.label();
            let read = b.label();
            // a non-first fragment has no ports: hotdrop (kernels with the fix), or its
            // payload is read as ports (r1 < 0: the dynptr read below)
            b.emit(ldx(Size::W, R1, R6, rec::TH_AVAIL));
            if m.frag_hotdrop {
                b.jmp32(JmpOp::Jslt, R1, Src::Imm(0), drop);
            }
            b.emit(st(Size::W, R10, PORTS, 0));
            b.emit(ldx(Size::B, R2, R6, rec::PROTO));
            for proto in [6, 17, 33, 50, 132, 136] {
                b.jmp32(JmpOp::Jeq, R2, Src::Imm(proto), offset0);
            }
            b.jmp32(JmpOp::Jeq, R2, Src::Imm(51), offset4);
            // no ports in this protocol: zeros
            b.ja(ports);
            b.bind(offset0)?;
            // read by the prologue when there are four bytes
            b.emit(mov64(R7, Src::Imm(0)));
            b.jmp32(JmpOp::Jslt, R1, Src::Imm(4), read);
            for (field, at) in [(rec::SPORT, 0), (rec::DPORT, 2)] {
                b.emit(ldx(Size::H, R2, R6, field));
                b.emit(Insn::End {
                    to_be: true,
                    dst: R2,
                    bits: 16,
                });
                b.emit(stx(Size::H, R10, PORTS + at, R2));
            }
            b.ja(ports);
            b.bind(offset4)?;
            b.emit(mov64(R7, Src::Imm(4)));
            b.bind(read)?;
            // r7 = thoff + offset; bpf_dynptr_read of 4 bytes there, or hotdrop
            b.emit(ldx(Size::H, R1, R6, rec::THOFF));
            b.emit(alu64(AluOp::Add, R7, Src::Reg(R1)));
            b.emit(ldx(Size::DW, R1, R6, rec::CTX));
            b.emit(ldx(Size::DW, R1, R1, skb_off));
            b.emit(mov64(R2, Src::Imm(0)));
            b.emit(mov64(R3, Src::Reg(R10)));
            b.emit(alu64(AluOp::Add, R3, Src::Imm(i32::from(DYN))));
            b.call_kfunc(KFUNC_DYNPTR_FROM_SKB);
            b.emit(mov64(R1, Src::Reg(R10)));
            b.emit(alu64(AluOp::Add, R1, Src::Imm(i32::from(PORTS))));
            b.emit(mov64(R2, Src::Imm(4)));
            b.emit(mov64(R3, Src::Reg(R10)));
            b.emit(alu64(AluOp::Add, R3, Src::Imm(i32::from(DYN))));
            b.emit(mov64(R4, Src::Reg(R7)));
            b.emit(mov64(R5, Src::Imm(0)));
            b.call_helper(HELPER_DYNPTR_READ);
            b.jmp64(JmpOp::Jne, R0, Src::Imm(0), drop);
            b.bind(ports)?;
            if m.hash & hl::HASH_SPT != 0 {
                b.emit(ldx(Size::H, R1, R10, PORTS));
                b.emit(stx(Size::H, R10, KEY + off(hl::K_SPORT), R1));
            }
            if m.hash & hl::HASH_DPT != 0 {
                b.emit(ldx(Size::H, R1, R10, PORTS + 2));
                b.emit(stx(Size::H, R10, KEY + off(hl::K_DPORT), R1));
            }
        }
        // r6 = skb->len, r8 = jiffies
        b.emit(ldx(Size::W, R6, R6, rec::LEN));
        b.call_helper(HELPER_JIFFIES64);
        b.emit(mov64(R8, Src::Reg(R0)));
        lookup(b, m);
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), create);

        // found: refreshed, or started over when expired; then charged, under the lock
        b.bind(found)?;
        let fresh = b.label();
        let charge = b.label();
        b.emit(mov64(R9, Src::Reg(R0)));
        b.emit(mov64(R1, Src::Reg(R9)));
        b.call_helper(HELPER_SPIN_LOCK);
        b.emit(mov64(R1, Src::Reg(R8)));
        b.emit(ldx(Size::DW, R2, R9, off(hl::EXPIRES)));
        b.emit(alu64(AluOp::Sub, R1, Src::Reg(R2)));
        b.jmp64(JmpOp::Jsge, R1, Src::Imm(0), fresh);
        expires(b, m);
        recalc(b, m)?;
        b.ja(charge);
        b.bind(fresh)?;
        init(b, m);
        b.bind(charge)?;
        charge_entry(b, m)?;
        b.emit(mov64(R1, Src::Reg(R9)));
        b.call_helper(HELPER_SPIN_UNLOCK);
        b.emit(mov64(R0, Src::Reg(R7)));
        b.emit(Insn::Exit);

        // not found: a new entry, charged, inserted whole
        b.bind(create)?;
        for k in 0..7 {
            b.emit(st(Size::DW, R10, VAL + 8 * k, 0));
        }
        b.emit(mov64(R9, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R9, Src::Imm(i32::from(VAL))));
        init(b, m);
        charge_entry(b, m)?;
        b.ld_map(R1, MapRef::Hashlimit(m.table));
        b.emit(mov64(R2, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(KEY))));
        b.emit(mov64(R3, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R3, Src::Imm(i32::from(VAL))));
        b.emit(mov64(R4, Src::Imm(BPF_NOEXIST)));
        b.call_helper(HELPER_MAP_UPDATE_ELEM);
        let failed = b.label();
        b.jmp64(JmpOp::Jne, R0, Src::Imm(0), failed);
        b.emit(mov64(R0, Src::Reg(R7)));
        b.emit(Insn::Exit);
        b.bind(failed)?;
        // another CPU made it meanwhile: take that one; anything else (the table holds `max`
        // entries) is `dsthash_alloc_init` failing
        b.jmp64(JmpOp::Jne, R0, Src::Imm(-EEXIST), drop);
        lookup(b, m);
        b.jmp64(JmpOp::Jne, R0, Src::Imm(0), found);
        b.bind(drop)?;
        b.emit(mov64(R0, Src::Imm(HOTDROP)));
        b.emit(Insn::Exit);
        Ok(())
    }
}

/// `r0 = bpf_map_lookup_elem(table, &KEY)`.
fn lookup(b: &mut crate::Builder, m: &HashlimitMatch) {
    use Reg::*;
    b.ld_map(R1, MapRef::Hashlimit(m.table));
    b.emit(mov64(R2, Src::Reg(R10)));
    b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(KEY))));
    b.call_helper(HELPER_MAP_LOOKUP_ELEM);
}

/// `dh->expires = now + msecs_to_jiffies(expire)` on the entry at r9.
fn expires(b: &mut crate::Builder, m: &HashlimitMatch) {
    use Reg::*;
    load_const(b, R1, m.expire);
    b.emit(alu64(AluOp::Add, R1, Src::Reg(R8)));
    b.emit(stx(Size::DW, R9, off(hl::EXPIRES), R1));
}

/// A new entry at r9: its expiry and `rateinfo_init` with the table's configuration.
fn init(b: &mut crate::Builder, m: &HashlimitMatch) {
    use Reg::*;
    expires(b, m);
    b.emit(stx(Size::DW, R9, off(hl::PREV), R8));
    match m.kind {
        HashlimitKind::Bucket {
            credit,
            credit_cap,
            cost,
            ..
        } => {
            store_const(b, R9, hl::CREDIT, credit);
            store_const(b, R9, hl::CREDIT_CAP, credit_cap);
            store_const(b, R9, hl::COST, cost);
        }
        HashlimitKind::RateMatch {
            interval,
            rate,
            burst,
            ..
        } => {
            b.emit(st(Size::W, R9, off(hl::INTERVAL), interval as i32));
            b.emit(st(Size::W, R9, off(hl::PREV_WINDOW), 0));
            b.emit(st(Size::DW, R9, off(hl::CURRENT_RATE), 0));
            store_const(b, R9, hl::RATE, rate);
            store_const(b, R9, hl::BURST, burst);
        }
    }
}

/// `rateinfo_recalc(dh, now, hinfo->cfg.mode, revision)` on the entry at r9 (r8 = now).
fn recalc(b: &mut crate::Builder, m: &HashlimitMatch) -> Result<(), EmitError> {
    use Reg::*;
    let done = b.label();
    b.emit(mov64(R1, Src::Reg(R8)));
    b.emit(ldx(Size::DW, R2, R9, off(hl::PREV)));
    b.emit(alu64(AluOp::Sub, R1, Src::Reg(R2)));
    b.jmp64(JmpOp::Jeq, R1, Src::Imm(0), done);
    match m.kind {
        HashlimitKind::RateMatch {
            interval_jiffies, ..
        } => {
            load_const(b, R2, interval_jiffies);
            b.jmp64(JmpOp::Jlt, R1, Src::Reg(R2), done);
            b.emit(stx(Size::DW, R9, off(hl::PREV), R8));
            // prev_window = current_rate * interval > delta * rate (u64 products)
            b.emit(ldx(Size::DW, R3, R9, off(hl::CURRENT_RATE)));
            b.emit(alu64(AluOp::Mul, R3, Src::Reg(R2)));
            b.emit(ldx(Size::DW, R4, R9, off(hl::RATE)));
            b.emit(alu64(AluOp::Mul, R4, Src::Reg(R1)));
            let above = b.label();
            let set = b.label();
            b.jmp64(JmpOp::Jgt, R3, Src::Reg(R4), above);
            b.emit(st(Size::W, R9, off(hl::PREV_WINDOW), 0));
            b.ja(set);
            b.bind(above)?;
            b.emit(st(Size::W, R9, off(hl::PREV_WINDOW), 1));
            b.bind(set)?;
            b.emit(st(Size::DW, R9, off(hl::CURRENT_RATE), 0));
        }
        HashlimitKind::Bucket {
            table_bytes,
            cpj_shift,
            cpj_bytes_shift,
            bytes_cap,
            ..
        } => {
            b.emit(stx(Size::DW, R9, off(hl::PREV), R8));
            let store = b.label();
            b.emit(ldx(Size::DW, R2, R9, off(hl::CREDIT)));
            if table_bytes {
                // credit += CREDITS_PER_JIFFY_BYTES * delta; an overflow fills the bucket
                let no_overflow = b.label();
                b.emit(mov64(R3, Src::Reg(R1)));
                b.emit(alu64(AluOp::Lsh, R3, Src::Imm(i32::from(cpj_bytes_shift))));
                b.emit(alu64(AluOp::Add, R3, Src::Reg(R2)));
                load_const(b, R4, bytes_cap);
                b.jmp64(JmpOp::Jlt, R2, Src::Reg(R3), no_overflow);
                b.emit(stx(Size::DW, R9, off(hl::CREDIT), R4));
                b.ja(done);
                b.bind(no_overflow)?;
            } else {
                b.emit(mov64(R3, Src::Reg(R1)));
                b.emit(alu64(AluOp::Lsh, R3, Src::Imm(i32::from(cpj_shift))));
                b.emit(alu64(AluOp::Add, R3, Src::Reg(R2)));
                b.emit(ldx(Size::DW, R4, R9, off(hl::CREDIT_CAP)));
            }
            b.jmp64(JmpOp::Jle, R3, Src::Reg(R4), store);
            b.emit(mov64(R3, Src::Reg(R4)));
            b.bind(store)?;
            b.emit(stx(Size::DW, R9, off(hl::CREDIT), R3));
        }
    }
    b.bind(done)?;
    Ok(())
}

/// The charge of the rule's own mode on the entry at r9 (r6 = skb->len): r7 = the result.
fn charge_entry(b: &mut crate::Builder, m: &HashlimitMatch) -> Result<(), EmitError> {
    use Reg::*;
    let (pass, over) = if m.invert { (NO, YES) } else { (YES, NO) };
    let out = b.label();
    b.emit(mov64(R7, Src::Imm(over)));
    match m.kind {
        HashlimitKind::RateMatch { rule_bytes, .. } => {
            // current_rate += cost; within the burst and not over in the last window
            b.emit(ldx(Size::DW, R2, R9, off(hl::CURRENT_RATE)));
            if rule_bytes {
                b.emit(alu64(AluOp::Add, R2, Src::Reg(R6)));
            } else {
                b.emit(alu64(AluOp::Add, R2, Src::Imm(1)));
            }
            b.emit(stx(Size::DW, R9, off(hl::CURRENT_RATE), R2));
            b.emit(ldx(Size::W, R3, R9, off(hl::PREV_WINDOW)));
            b.jmp64(JmpOp::Jne, R3, Src::Imm(0), out);
            b.emit(ldx(Size::DW, R4, R9, off(hl::BURST)));
            b.jmp64(JmpOp::Jgt, R2, Src::Reg(R4), out);
        }
        HashlimitKind::Bucket {
            rule_bytes,
            bytes_cap,
            ..
        } => {
            if rule_bytes {
                // hashlimit_byte_cost: ((len >> 4) + 1) * cost, at most a second's worth;
                // short of it, one of `credit_cap` refills fills the bucket
                let capped = b.label();
                let costed = b.label();
                b.emit(mov64(R1, Src::Reg(R6)));
                b.emit(alu64(AluOp::Rsh, R1, Src::Imm(4)));
                b.emit(alu64(AluOp::Add, R1, Src::Imm(1)));
                b.emit(ldx(Size::DW, R2, R9, off(hl::COST)));
                b.emit(alu64(AluOp::Mul, R1, Src::Reg(R2)));
                load_const(b, R2, bytes_cap);
                b.jmp64(JmpOp::Jle, R1, Src::Reg(R2), capped);
                b.emit(mov64(R1, Src::Reg(R2)));
                b.bind(capped)?;
                b.emit(ldx(Size::DW, R3, R9, off(hl::CREDIT)));
                b.jmp64(JmpOp::Jge, R3, Src::Reg(R1), costed);
                b.emit(ldx(Size::DW, R4, R9, off(hl::CREDIT_CAP)));
                b.jmp64(JmpOp::Jeq, R4, Src::Imm(0), costed);
                b.emit(alu64(AluOp::Sub, R4, Src::Imm(1)));
                b.emit(stx(Size::DW, R9, off(hl::CREDIT_CAP), R4));
                b.emit(stx(Size::DW, R9, off(hl::CREDIT), R2));
                b.bind(costed)?;
            } else {
                b.emit(ldx(Size::DW, R1, R9, off(hl::COST)));
            }
            b.emit(ldx(Size::DW, R3, R9, off(hl::CREDIT)));
            b.jmp64(JmpOp::Jlt, R3, Src::Reg(R1), out);
            b.emit(alu64(AluOp::Sub, R3, Src::Reg(R1)));
            b.emit(stx(Size::DW, R9, off(hl::CREDIT), R3));
        }
    }
    b.emit(mov64(R7, Src::Imm(pass)));
    b.bind(out)?;
    Ok(())
}
