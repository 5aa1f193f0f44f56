//! `-m recent`: `recent_mt` on a list kept in one map value under its `bpf_spin_lock`.
//!
//! Each distinct match is a subprogram (`r1` = record; `r0` = 1 on match), which reads the
//! address, the TTL as xt_recent sees it and jiffies, then takes the list's lock and runs the
//! kernel's steps on the value laid out in [`ir::recent`]:
//! - the search: one pass over the slots for the (masked) address, noting a free slot on the
//!   way. `recent_entry_lookup`'s TTL rule (`--rttl`) applies to the address found: an address
//!   is in the list once at most (only `--set` adds, and it searches without the TTL).
//! - not found: `--set` adds the address (evicting the least recently used one when the list
//!   holds `ip_list_tot`); every other operation leaves the list alone and does not match.
//! - found: `--set` refreshes, `--remove` removes, `--rcheck` and `--update` count the stamps
//!   within `--seconds` against `--hitcount`, then `--reap` drops the least recently used
//!   address if its newest stamp is outside the window, and `--update` refreshes on a match.
//!
//! The loops are bounded by the list's dimensions, known when the program is generated. The
//! slot the search found goes through the map value (the verifier then sees an unknown slot
//! under a bound, not one state per slot), and stamps are counted branch free, so that each
//! loop costs the verifier one state per iteration.

use crate::builder::{Label, MapRef};
use crate::insn::{alu32, alu64, ldx, mov64, st, stx, AluOp, Insn, JmpOp, Reg, Size, Src};
use crate::ir::{self, recent, Hook, RecentMatch};
use crate::EmitError;

use super::access::off16;
use super::record::rec;
use super::{
    Generator, HELPER_JIFFIES64, HELPER_MAP_LOOKUP_ELEM, HELPER_PROBE_READ_KERNEL,
    HELPER_SPIN_LOCK, HELPER_SPIN_UNLOCK,
};

/// The subprogram's frame: the map key, jiffies, the TTL, the packet's address.
const KEY: i16 = -8;
const NOW: i16 = -16;
const TTL: i16 = -24;
const ADDR: i16 = -32;

/// IP header offset of the TTL.
const IP_TTL: i32 = 8;

fn off(v: u32) -> i16 {
    // map value offsets of the header and of a record's fields are small constants
    v as i16
}

impl Generator<'_> {
    /// `-m recent`: falls through when the match holds.
    pub(super) fn recent_test(&mut self, m: &RecentMatch, fail: Label) -> Result<(), EmitError> {
        let label = match self.recent_fns.iter().find(|(k, _)| k == m) {
            Some((_, l)) => *l,
            None => {
                let l = self.b.label();
                self.recent_fns.push((*m, l));
                l
            }
        };
        let b = &mut self.b;
        b.emit(mov64(Reg::R1, Src::Reg(Reg::R6)));
        b.call_local(label);
        b.jmp64(JmpOp::Jeq, Reg::R0, Src::Imm(0), fail);
        Ok(())
    }

    /// The `recent` subprograms of the rules that call them.
    pub(super) fn recent_subprograms(&mut self) -> Result<(), EmitError> {
        for (m, label) in std::mem::take(&mut self.recent_fns) {
            self.b.bind(label)?;
            self.b.symbol(format!("recent{}", m.list));
            self.recent_subprogram(&m)?;
        }
        Ok(())
    }

    fn recent_subprogram(&mut self, m: &RecentMatch) -> Result<(), EmitError> {
        use Reg::*;
        let l = *self.layout;
        let forwards_ttl = matches!(
            self.prog.hook,
            Hook::Forward | Hook::LocalOut | Hook::PostRouting
        );
        let b = &mut self.b;
        let shape = m.shape;
        let entries = shape.entries as i32;
        let stride = shape.stride() as i32;
        let invert = i32::from(m.invert);
        let no_list = b.label();
        let unlock = b.label();

        // r6 = record; the packet's address
        b.emit(mov64(R6, Src::Reg(R1)));
        let field = if m.dest { rec::DADDR } else { rec::SADDR };
        b.emit(ldx(Size::W, R1, R6, field));
        b.emit(stx(Size::W, R10, ADDR, R1));
        // What the match reads besides the list: the TTL for `--rttl` and to store it, jiffies
        // for `--seconds` (and `--reap`, which needs it) and to stamp (`--set`, `--update`).
        let op = m.check_set & (recent::SET | recent::REMOVE | recent::CHECK | recent::UPDATE);
        let stamps = op == recent::SET || op == recent::UPDATE;
        let needs_ttl = stamps || m.check_set & recent::TTL != 0;
        let needs_now = stamps || m.seconds != 0;
        if needs_ttl {
            ttl_of_packet(b, &l, forwards_ttl)?;
        }
        if needs_now {
            b.call_helper(HELPER_JIFFIES64);
            b.emit(stx(Size::DW, R10, NOW, R0));
        }
        // r7 = the list
        b.emit(st(Size::W, R10, KEY, 0));
        b.ld_map(R1, MapRef::Recent(m.list));
        b.emit(mov64(R2, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(KEY))));
        b.call_helper(HELPER_MAP_LOOKUP_ELEM);
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), no_list);
        b.emit(mov64(R7, Src::Reg(R0)));
        b.emit(mov64(R1, Src::Reg(R7)));
        b.call_helper(HELPER_SPIN_LOCK);
        // r6 = the result so far: the inversion, as `ret = info->invert`
        b.emit(mov64(R6, Src::Imm(invert)));
        // r8 = address & the list's mask
        b.emit(ldx(Size::W, R8, R10, ADDR));
        b.emit(ldx(Size::W, R1, R7, off(recent::MASK)));
        b.emit(alu32(AluOp::And, R8, Src::Reg(R1)));

        // the search: r9 = slot, r2 = its record
        let searched = b.label();
        b.emit(st(Size::W, R7, off(recent::FOUND), entries));
        b.emit(mov64(R9, Src::Imm(0)));
        b.emit(mov64(R2, Src::Reg(R7)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(recent::ENTRIES as i32)));
        let top = b.here();
        let next = b.label();
        let used = b.label();
        let hit = b.label();
        b.jmp64(JmpOp::Jge, R9, Src::Imm(entries), searched);
        b.emit(ldx(Size::DW, R1, R2, off(recent::E_LRU)));
        b.jmp64(JmpOp::Jne, R1, Src::Imm(0), used);
        b.emit(stx(Size::W, R7, off(recent::FREE), R9));
        b.ja(next);
        b.bind(used)?;
        b.emit(ldx(Size::W, R1, R2, off(recent::E_ADDR)));
        b.jmp32(JmpOp::Jne, R1, Src::Reg(R8), next);
        if m.check_set & recent::TTL != 0 {
            // `ttl == e->ttl || ttl == 0 || e->ttl == 0`, else the address is not found
            b.emit(ldx(Size::B, R1, R2, off(recent::E_TTL)));
            b.jmp64(JmpOp::Jeq, R1, Src::Imm(0), hit);
            b.emit(ldx(Size::B, R3, R10, TTL));
            b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), hit);
            b.jmp64(JmpOp::Jne, R1, Src::Reg(R3), searched);
        }
        b.bind(hit)?;
        b.emit(stx(Size::W, R7, off(recent::FOUND), R9));
        b.ja(searched);
        b.bind(next)?;
        b.emit(alu64(AluOp::Add, R9, Src::Imm(1)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(stride)));
        b.ja(top);
        b.bind(searched)?;

        let not_found = b.label();
        b.emit(ldx(Size::W, R1, R7, off(recent::FOUND)));
        b.jmp64(JmpOp::Jge, R1, Src::Imm(entries), not_found);
        record_at(b, R9, R1, stride);
        if op == recent::SET {
            b.emit(mov64(R6, Src::Imm(invert ^ 1)));
            refresh(b, shape);
        } else if op == recent::REMOVE {
            b.emit(mov64(R6, Src::Imm(invert ^ 1)));
            remove(b, R9);
        } else {
            count_stamps(b, m)?;
            if m.check_set & recent::REAP != 0 {
                reap(b, m)?;
            }
            if op == recent::UPDATE {
                // `--update` refreshes on a match, unless `--reap` just removed the address
                b.jmp64(JmpOp::Jeq, R6, Src::Imm(0), unlock);
                b.emit(ldx(Size::DW, R1, R9, off(recent::E_LRU)));
                b.jmp64(JmpOp::Jeq, R1, Src::Imm(0), unlock);
                refresh(b, shape);
            }
        }
        b.ja(unlock);

        b.bind(not_found)?;
        if op == recent::SET {
            // a slot: a free one, or the least recently used address's when the list is full
            let free = b.label();
            let init = b.label();
            b.emit(ldx(Size::W, R1, R7, off(recent::COUNT)));
            b.jmp64(JmpOp::Jlt, R1, Src::Imm(entries), free);
            oldest(b, shape)?;
            b.emit(ldx(Size::W, R1, R7, off(recent::OLDEST)));
            b.ja(init);
            b.bind(free)?;
            b.emit(alu32(AluOp::Add, R1, Src::Imm(1)));
            b.emit(stx(Size::W, R7, off(recent::COUNT), R1));
            b.emit(ldx(Size::W, R1, R7, off(recent::FREE)));
            b.bind(init)?;
            b.jmp64(JmpOp::Jge, R1, Src::Imm(entries), unlock);
            record_at(b, R9, R1, stride);
            // `recent_entry_init`: one stamp, index 1, the TTL, at the LRU list's tail
            b.emit(stx(Size::W, R9, off(recent::E_ADDR), R8));
            b.emit(ldx(Size::DW, R1, R10, NOW));
            b.emit(stx(Size::DW, R9, off(recent::STAMPS), R1));
            b.emit(st(Size::H, R9, off(recent::E_NSTAMPS), 1));
            b.emit(st(Size::H, R9, off(recent::E_INDEX), 1));
            b.emit(ldx(Size::B, R1, R10, TTL));
            b.emit(stx(Size::B, R9, off(recent::E_TTL), R1));
            stamp_lru(b);
            b.emit(mov64(R6, Src::Imm(invert ^ 1)));
        }

        b.bind(unlock)?;
        b.emit(mov64(R1, Src::Reg(R7)));
        b.call_helper(HELPER_SPIN_UNLOCK);
        b.emit(mov64(R0, Src::Reg(R6)));
        b.emit(Insn::Exit);
        b.bind(no_list)?;
        b.emit(mov64(R0, Src::Imm(invert)));
        b.emit(Insn::Exit);
        Ok(())
    }
}

/// Stores at TTL the packet's TTL as xt_recent sees it: the IP header's, plus one for a
/// packet being forwarded (an out device and no socket: "use TTL as seen before
/// forwarding"), in u8 arithmetic. r6 = the record; r7 = the skb afterwards.
fn ttl_of_packet(
    b: &mut crate::Builder,
    l: &crate::KernelLayout,
    forwards_ttl: bool,
) -> Result<(), EmitError> {
    use Reg::*;
    let s = l.skb;
    b.emit(st(Size::DW, R10, TTL, 0));
    b.emit(ldx(Size::DW, R7, R6, rec::CTX));
    b.emit(ldx(Size::DW, R7, R7, off16(l.nf_ctx_skb)?));
    b.emit(ldx(Size::DW, R3, R7, off16(s.head)?));
    b.emit(ldx(Size::H, R2, R7, off16(s.network_header)?));
    b.emit(alu64(AluOp::Add, R3, Src::Reg(R2)));
    b.emit(alu64(AluOp::Add, R3, Src::Imm(IP_TTL)));
    b.emit(mov64(R1, Src::Reg(R10)));
    b.emit(alu64(AluOp::Add, R1, Src::Imm(i32::from(TTL))));
    b.emit(mov64(R2, Src::Imm(1)));
    b.call_helper(HELPER_PROBE_READ_KERNEL);
    if forwards_ttl {
        let local = b.label();
        b.emit(ldx(Size::DW, R1, R7, off16(s.sk)?));
        b.jmp64(JmpOp::Jne, R1, Src::Imm(0), local);
        b.emit(ldx(Size::B, R1, R10, TTL));
        b.emit(alu32(AluOp::Add, R1, Src::Imm(1)));
        b.emit(stx(Size::B, R10, TTL, R1));
        b.bind(local)?;
    }
    Ok(())
}

/// `dst` = the record of slot `slot` (a scalar below the entry count) in the list at r7.
fn record_at(b: &mut crate::Builder, dst: Reg, slot: Reg, stride: i32) {
    b.emit(alu64(AluOp::Mul, slot, Src::Imm(stride)));
    b.emit(mov64(dst, Src::Reg(Reg::R7)));
    b.emit(alu64(AluOp::Add, dst, Src::Reg(slot)));
    b.emit(alu64(AluOp::Add, dst, Src::Imm(recent::ENTRIES as i32)));
}

/// The record at r9 takes the next LRU sequence number: the LRU list's tail.
fn stamp_lru(b: &mut crate::Builder) {
    use Reg::*;
    b.emit(ldx(Size::DW, R1, R7, off(recent::CLOCK)));
    b.emit(alu64(AluOp::Add, R1, Src::Imm(1)));
    b.emit(stx(Size::DW, R7, off(recent::CLOCK), R1));
    b.emit(stx(Size::DW, R9, off(recent::E_LRU), R1));
}

/// `recent_entry_update` and `e->ttl = ttl` on the record at r9: a stamp at
/// `index & nstamps_max_mask`, `index` one further (a u8 before Linux 6.11), `nstamps` the
/// largest index seen.
fn refresh(b: &mut crate::Builder, shape: ir::RecentShape) {
    use Reg::*;
    b.emit(ldx(Size::H, R1, R9, off(recent::E_INDEX)));
    b.emit(alu64(AluOp::And, R1, Src::Imm(shape.stamps as i32 - 1)));
    b.emit(mov64(R2, Src::Reg(R1)));
    b.emit(alu64(AluOp::Lsh, R2, Src::Imm(3)));
    b.emit(alu64(AluOp::Add, R2, Src::Reg(R9)));
    b.emit(ldx(Size::DW, R3, R10, NOW));
    b.emit(stx(Size::DW, R2, off(recent::STAMPS), R3));
    b.emit(alu64(AluOp::Add, R1, Src::Imm(1)));
    let width = if shape.wide { 0xffff } else { 0xff };
    b.emit(alu64(AluOp::And, R1, Src::Imm(width)));
    b.emit(stx(Size::H, R9, off(recent::E_INDEX), R1));
    b.emit(ldx(Size::H, R2, R9, off(recent::E_NSTAMPS)));
    let kept = b.label();
    b.jmp64(JmpOp::Jle, R1, Src::Reg(R2), kept);
    b.emit(stx(Size::H, R9, off(recent::E_NSTAMPS), R1));
    // binding cannot fail: the label is fresh
    let _ = b.bind(kept);
    b.emit(ldx(Size::B, R1, R10, TTL));
    b.emit(stx(Size::B, R9, off(recent::E_TTL), R1));
    stamp_lru(b);
}

/// `recent_entry_remove` of the record at `at`.
fn remove(b: &mut crate::Builder, at: Reg) {
    use Reg::*;
    b.emit(st(Size::DW, at, off(recent::E_LRU), 0));
    b.emit(ldx(Size::W, R1, R7, off(recent::COUNT)));
    b.emit(alu32(AluOp::Sub, R1, Src::Imm(1)));
    b.emit(stx(Size::W, R7, off(recent::COUNT), R1));
}

/// r5 = `jiffies - info->seconds * HZ` (r0 clobbered).
fn window_start(b: &mut crate::Builder, m: &RecentMatch) {
    use Reg::*;
    b.emit(ldx(Size::DW, R5, R10, NOW));
    b.emit(alu32(AluOp::Mov, R0, Src::Imm(m.window as i32)));
    b.emit(alu64(AluOp::Sub, R5, Src::Reg(R0)));
}

/// `--rcheck`/`--update` on the record at r9: r6 = `invert`, flipped when at least
/// `max(hit_count, 1)` of the first `nstamps` stamps are within the window (all of them
/// without `--seconds`): `time_after(time, stamp)` excludes a stamp.
fn count_stamps(b: &mut crate::Builder, m: &RecentMatch) -> Result<(), EmitError> {
    use Reg::*;
    let counted = b.label();
    // r3 = hits, r4 = nstamps, r2 = the stamp, r0 = its number
    b.emit(mov64(R3, Src::Imm(0)));
    b.emit(ldx(Size::H, R4, R9, off(recent::E_NSTAMPS)));
    if m.seconds == 0 {
        b.emit(mov64(R3, Src::Reg(R4)));
    } else {
        window_start(b, m);
        b.emit(mov64(R2, Src::Reg(R9)));
        b.emit(mov64(R0, Src::Imm(0)));
        let top = b.here();
        b.jmp64(JmpOp::Jge, R0, Src::Imm(m.shape.stamps as i32), counted);
        b.jmp64(JmpOp::Jge, R0, Src::Reg(R4), counted);
        // r1 = 1 unless time_after(time, stamp), i.e. (long)(stamp - time) < 0
        b.emit(ldx(Size::DW, R1, R2, off(recent::STAMPS)));
        b.emit(alu64(AluOp::Sub, R1, Src::Reg(R5)));
        b.emit(alu64(AluOp::Rsh, R1, Src::Imm(63)));
        b.emit(alu64(AluOp::Xor, R1, Src::Imm(1)));
        b.emit(alu64(AluOp::Add, R3, Src::Reg(R1)));
        b.emit(alu64(AluOp::Add, R0, Src::Imm(1)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(8)));
        b.ja(top);
    }
    b.bind(counted)?;
    let short = b.label();
    b.jmp64(JmpOp::Jlt, R3, Src::Imm(m.hit_count.max(1) as i32), short);
    b.emit(alu64(AluOp::Xor, R6, Src::Imm(1)));
    b.bind(short)?;
    Ok(())
}

/// OLDEST = the slot with the smallest LRU sequence number in use (the LRU list's head).
fn oldest(b: &mut crate::Builder, shape: ir::RecentShape) -> Result<(), EmitError> {
    use Reg::*;
    let done = b.label();
    // r3 = the smallest so far, r4 = slot, r2 = its record
    b.emit(mov64(R3, Src::Imm(-1)));
    b.emit(st(Size::W, R7, off(recent::OLDEST), shape.entries as i32));
    b.emit(mov64(R4, Src::Imm(0)));
    b.emit(mov64(R2, Src::Reg(R7)));
    b.emit(alu64(AluOp::Add, R2, Src::Imm(recent::ENTRIES as i32)));
    let top = b.here();
    let next = b.label();
    b.jmp64(JmpOp::Jge, R4, Src::Imm(shape.entries as i32), done);
    b.emit(ldx(Size::DW, R1, R2, off(recent::E_LRU)));
    b.jmp64(JmpOp::Jeq, R1, Src::Imm(0), next);
    b.jmp64(JmpOp::Jge, R1, Src::Reg(R3), next);
    b.emit(mov64(R3, Src::Reg(R1)));
    b.emit(stx(Size::W, R7, off(recent::OLDEST), R4));
    b.bind(next)?;
    b.emit(alu64(AluOp::Add, R4, Src::Imm(1)));
    b.emit(alu64(AluOp::Add, R2, Src::Imm(shape.stride() as i32)));
    b.ja(top);
    b.bind(done)?;
    Ok(())
}

/// `recent_entry_reap`: the least recently used address goes when its newest stamp
/// (`stamps[index - 1]`) is older than the window. (Should that be the record at r9, its LRU
/// number is 0 afterwards; `--update` then refreshes nothing.)
fn reap(b: &mut crate::Builder, m: &RecentMatch) -> Result<(), EmitError> {
    use Reg::*;
    let kept = b.label();
    let stride = m.shape.stride() as i32;
    oldest(b, m.shape)?;
    b.emit(ldx(Size::W, R1, R7, off(recent::OLDEST)));
    b.jmp64(JmpOp::Jge, R1, Src::Imm(m.shape.entries as i32), kept);
    record_at(b, R8, R1, stride);
    // r1 = its newest stamp
    b.emit(ldx(Size::H, R1, R8, off(recent::E_INDEX)));
    b.emit(alu64(AluOp::Add, R1, Src::Imm(-1)));
    b.emit(alu64(AluOp::And, R1, Src::Imm(m.shape.stamps as i32 - 1)));
    b.emit(alu64(AluOp::Lsh, R1, Src::Imm(3)));
    b.emit(alu64(AluOp::Add, R1, Src::Reg(R8)));
    b.emit(ldx(Size::DW, R1, R1, off(recent::STAMPS)));
    window_start(b, m);
    // kept unless time_after(time, stamp)
    b.emit(alu64(AluOp::Sub, R1, Src::Reg(R5)));
    b.jmp64(JmpOp::Jsge, R1, Src::Imm(0), kept);
    remove(b, R8);
    b.bind(kept)?;
    Ok(())
}
