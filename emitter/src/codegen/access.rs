//! Packet access: the prologue that parses the packet once into the record.
//!
//! Two strategies produce the same record (see the stack layout in [`super::record`]):
//!
//! - [`PacketAccess::Dynptr`], the baseline every supported kernel verifies by design:
//!   `bpf_dynptr_from_skb` (netfilter programs have it since Linux 6.4), then
//!   `bpf_dynptr_slice` of the IP header and of the first 20 transport bytes. A slice is a
//!   direct pointer when the bytes are linear and a copy into the stack buffer given
//!   otherwise; either way the verifier types it `PTR_TO_MEM` of the slice's constant size,
//!   so every load through it is bounds-checked at load time. A transport header shorter
//!   than 20 bytes makes the slice fail; `bpf_dynptr_read` then copies what there is into a
//!   zeroed stack buffer.
//! - [`PacketAccess::Cast`]: `bpf_rdonly_cast(skb->data, struct iphdr)` and
//!   `bpf_rdonly_cast(skb->data + thoff, struct tcphdr)` (Linux 6.2+; the verifier inlines the
//!   call to a move). Loads through the result are typed untrusted BTF loads: fault-safe probe
//!   loads, not bounds-checked, so the program compares offsets against the linear length
//!   itself and falls back to the whole dynptr prologue when a header is not linear.
//!   `skb->data` itself is a scalar before Linux 6.17 and untrusted memory since ("bpf:
//!   rdonly_untrusted_mem for btf id walk pointer leafs"); the cast accepts either, and no
//!   load goes through `skb->data` directly. Only used where the daemon's start-up probe
//!   loaded it on the running kernel.
//!
//! No instruction is reached with two pointer types: each strategy, and each dynptr case
//! (slice or stack copy), parses with its own instructions (`parse_ip`/`parse_th` are
//! emitted once per base). Verifiers refuse some pairs at one instruction (BTF pointers and
//! anything else always; untrusted memory and the stack since bpf-next 2026-08, "bpf: Treat
//! a fault prone PTR_TO_MEM as a pointer type mismatch"); nothing here depends on which.
//!
//! Cost per packet (test runs on 6.18, over an empty `return ACCEPT` program): the cast
//! prologue about 6 ns; the dynptr one about 40 ns, most of it `bpf_dynptr_from_skb`.
//!
//! Every path stores every record field with a value the verifier does not know, and the
//! registers that differ between paths (`r7`-`r9`, the bases) are dead where the paths join,
//! so the verifier prunes the joined paths and walks the rules once.

use crate::builder::{Builder, Label};
use crate::insn::{alu32, alu64, ldx, mov32, mov64, st, stx, AluOp, Insn, JmpOp, Reg, Size, Src};
use crate::EmitError;

use super::record::{
    packed, rec, MSS_FOUND, MSS_HOTDROP, MSS_SCANNED, OPT_HOTDROP, OPT_NONE, OPT_PRESENT,
    TH_AVAIL_FRAG1,
};
use super::{
    Generator, HELPER_DYNPTR_READ, KFUNC_DYNPTR_FROM_SKB, KFUNC_DYNPTR_SLICE, KFUNC_RDONLY_CAST,
};

/// What the prologue must provide besides the fields every program reads.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Features {
    pub(super) in_iface: bool,
    pub(super) out_iface: bool,
    pub(super) tcp_option: bool,
    /// some rule uses `-m tcpmss`: the option scan also looks for the MSS
    pub(super) tcpmss: bool,
    /// some rule reads the connection (skb->_nfct)
    pub(super) conntrack: bool,
    /// IPv6: some rule uses `-m frag`: the walk also finds the first fragment header
    pub(super) frag6: bool,
    /// IPv6: some rule uses `-m rt`: the walk also finds the first routing header
    pub(super) rt6: bool,
    /// IPv6: some rule uses `-m hbh`: the walk also finds the first hop-by-hop header
    pub(super) hbh6: bool,
    /// IPv6: some rule uses `-m dst`: the walk also finds the first destination options header
    pub(super) dst6: bool,
    /// IPv6: some rule uses `-m ipv6header`: its own walk
    pub(super) ipv6h: bool,
    /// some rule reads the context after the prologue (events, `-m mark`): its pointer is
    /// kept in the record
    pub(super) ctx: bool,
}

/// A BTF offset as the 16-bit offset of a load.
pub(super) fn off16(v: u32) -> Result<i16, EmitError> {
    i16::try_from(v).map_err(|_| EmitError::Unsupported {
        what: "BTF offset above 32767",
    })
}

/// How the generated program reads packet headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PacketAccess {
    /// `bpf_dynptr_from_skb` + `bpf_dynptr_slice`: verifies on every kernel with netfilter
    /// programs (6.4+).
    #[default]
    Dynptr,
    /// `bpf_rdonly_cast` of `skb->data` to the header structs, falling back to the dynptr
    /// prologue for non-linear headers. Use only where a load-time probe verified it.
    Cast,
}

impl PacketAccess {
    /// Both strategies, baseline first.
    pub const ALL: [PacketAccess; 2] = [PacketAccess::Dynptr, PacketAccess::Cast];

    /// Name used in logs, `status` and benchmark tables.
    pub fn name(self) -> &'static str {
        match self {
            PacketAccess::Dynptr => "dynptr",
            PacketAccess::Cast => "cast",
        }
    }
}

impl std::fmt::Display for PacketAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes of the IP header and of the transport header the record is filled from.
const IP_HDR: i32 = 20;
pub(super) const TH_HDR: i32 = 20;

impl Generator<'_> {
    /// Parse the packet into the record (see the module doc for what each field holds).
    pub(super) fn prologue(&mut self, feat: Features) -> Result<(), EmitError> {
        use Reg::*;
        let l = *self.layout;
        let b = &mut self.b;
        b.emit(mov64(R6, Src::Reg(R10)));
        if feat.ctx {
            b.emit(stx(Size::DW, R10, rec::CTX, R1));
        }
        b.emit(ldx(Size::DW, R7, R1, off16(l.nf_ctx_skb)?));
        if feat.conntrack {
            // A reply the daemon sent for REJECT carries, in skb->priority, the connection
            // the kernel's reply would carry (see event::REPLY_PRIORITY_TAG): its ctinfo and
            // a placeholder entry, below 64 KiB (never a kernel address), whose bits 7-15 say
            // where the entry's fields are (REPLY_CT_COPY and the ReplyCt slot; see ct_read).
            let own = b.label();
            b.emit(ldx(Size::DW, R2, R7, off16(l.skb.nfct)?));
            b.emit(ldx(Size::W, R3, R7, off16(l.skb.priority)?));
            b.emit(alu32(AluOp::Mov, R4, Src::Reg(R3)));
            b.emit(alu32(AluOp::Rsh, R4, Src::Imm(16)));
            b.jmp32(
                JmpOp::Jne,
                R4,
                Src::Imm(crate::event::REPLY_PRIORITY_TAG as i32),
                own,
            );
            b.emit(alu64(AluOp::And, R3, Src::Imm(0xff87)));
            b.emit(alu64(AluOp::Or, R3, Src::Imm(8)));
            b.emit(mov64(R2, Src::Reg(R3)));
            b.bind(own)?;
            b.emit(stx(Size::DW, R10, rec::NFCT, R2));
        }
        if feat.in_iface || feat.out_iface {
            b.emit(ldx(Size::DW, R2, R1, off16(l.nf_ctx_state)?));
            for (on, dev_off, base) in [
                (feat.in_iface, l.hook_state_in, rec::IN_NAME),
                (feat.out_iface, l.hook_state_out, rec::OUT_NAME),
            ] {
                if !on {
                    continue;
                }
                // A NULL device reads as zeros: loads through BTF pointers are fault-safe.
                b.emit(ldx(Size::DW, R3, R2, off16(dev_off)?));
                for k in 0..4i16 {
                    let name = off16(l.net_device_name + 4 * k as u32)?;
                    b.emit(ldx(Size::W, R4, R3, name));
                    b.emit(stx(Size::W, R10, base + 8 * k, R4));
                }
            }
        }
        b.emit(ldx(Size::W, R2, R7, off16(l.skb_len)?));
        b.emit(stx(Size::W, R10, rec::LEN, R2));
        if self.prog.family == crate::ir::Family::Ipv6 {
            return self.prologue6(feat);
        }
        let b = &mut self.b;
        let th_done = b.label();
        let dynptr = b.label();
        if self.access == PacketAccess::Cast {
            if l.kfunc_rdonly_cast == 0 || l.btf_iphdr == 0 || l.btf_tcphdr == 0 {
                return Err(EmitError::Unsupported {
                    what: "cast packet access without bpf_rdonly_cast, struct iphdr and tcphdr",
                });
            }
            b.emit(ldx(Size::W, R3, R7, off16(l.skb_data_len)?));
            b.emit(alu32(AluOp::Mov, R8, Src::Reg(R2)));
            b.emit(alu32(AluOp::Sub, R8, Src::Reg(R3))); // r8 = linear length
            b.emit(ldx(Size::DW, R9, R7, off16(l.skb_data)?)); // scalar or untrusted memory
            if self.force_slow {
                // always true at run time (a linear length is below 2^31), unknown to the
                // verifier, which therefore still checks the cast path too
                b.jmp32(JmpOp::Jlt, R8, Src::Imm(i32::MAX), dynptr);
            } else {
                b.jmp32(JmpOp::Jlt, R8, Src::Imm(IP_HDR), dynptr);
            }
            b.emit(mov64(R1, Src::Reg(R9)));
            b.emit(mov64(R2, Src::Imm(btf_id(l.btf_iphdr)?)));
            b.call_kfunc(KFUNC_RDONLY_CAST);
            self.parse_ip(R0)?;
            let b = &mut self.b;
            // transport bytes wanted (r0) all in the linear area?
            b.emit(alu32(AluOp::Mov, R5, Src::Reg(R8)));
            b.emit(alu32(AluOp::Sub, R5, Src::Reg(R2)));
            if self.force_slow {
                b.jmp32(JmpOp::Jslt, R5, Src::Imm(i32::MAX), dynptr);
            } else {
                b.jmp32(JmpOp::Jslt, R5, Src::Reg(R0), dynptr);
            }
            b.emit(mov64(R1, Src::Reg(R9)));
            b.emit(alu64(AluOp::Add, R1, Src::Reg(R2)));
            b.emit(mov64(R2, Src::Imm(btf_id(l.btf_tcphdr)?)));
            b.call_kfunc(KFUNC_RDONLY_CAST);
            self.parse_th(R0);
            self.b.ja(th_done);
        }

        // The dynptr prologue: the baseline, and the cast strategy's fallback.
        let b = &mut self.b;
        b.bind(dynptr)?;
        from_skb(b, R7, rec::DYN);
        // A failed bpf_dynptr_from_skb leaves a null dynptr, whose slices are NULL. The slice
        // buffers are not zeroed: a slice fills all of its buffer or returns NULL, and the
        // verifier lets a privileged loader pass uninitialized stack (the daemon is root).
        slice(b, Src::Imm(0), rec::BUF_IP, IP_HDR);
        let short_ip = b.label();
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), short_ip);
        self.parse_ip(R0)?;
        let b = &mut self.b;
        b.emit(mov64(R8, Src::Reg(R0))); // bytes to copy when the slice fails, 0..=20
        b.emit(mov64(R9, Src::Reg(R2))); // thoff
        slice(b, Src::Reg(R9), rec::BUF_TH, TH_HDR);
        let short_th = b.label();
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), short_th);
        self.parse_th(R0);
        self.b.ja(th_done);
        // Fewer than 20 transport bytes: copy what there is (the rest reads as zero).
        let b = &mut self.b;
        b.bind(short_th)?;
        zero(b, rec::BUF_TH, TH_HDR);
        stack_ptr(b, R1, rec::BUF_TH);
        b.emit(mov64(R2, Src::Reg(R8)));
        stack_ptr(b, R3, rec::DYN);
        b.emit(mov64(R4, Src::Reg(R9)));
        b.emit(mov64(R5, Src::Imm(0)));
        b.call_helper(HELPER_DYNPTR_READ);
        stack_ptr(b, R3, rec::BUF_TH);
        self.parse_th(R3);
        self.b.ja(th_done);
        // Shorter than an IP header: cannot happen at a netfilter hook; drop.
        let b = &mut self.b;
        b.bind(short_ip)?;
        b.emit(mov64(R0, Src::Imm(0)));
        b.emit(Insn::Exit);

        b.bind(th_done)?;
        let parsed = b.label();
        if feat.tcp_option || feat.tcpmss {
            self.tcp_options(feat, parsed)?;
        }
        self.b.bind(parsed)?;
        self.pack();
        Ok(())
    }

    /// IP header fields from `base` (20 readable bytes) into the record. Leaves `r2` = thoff
    /// (ihl * 4) and `r0` = transport bytes to copy, clamp(skb->len - thoff, 0, 20). Uses
    /// `r0`-`r5`; every load from `base` comes first, so `base` may be `r0` or `r1`.
    fn parse_ip(&mut self, base: Reg) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        for (size, off, at) in [
            (Size::W, 12, rec::SADDR),
            (Size::W, 16, rec::DADDR),
            (Size::B, 9, rec::PROTO),
        ] {
            b.emit(ldx(size, R2, base, off));
            b.emit(stx(size, R10, at, R2));
        }
        b.emit(ldx(Size::H, R3, base, 6));
        b.emit(ldx(Size::B, R2, base, 0));
        b.emit(Insn::End {
            to_be: true,
            dst: R3,
            bits: 16,
        });
        b.emit(alu32(AluOp::And, R3, Src::Imm(0x1fff))); // fragment offset
        b.emit(alu32(AluOp::And, R2, Src::Imm(0xf)));
        b.emit(alu32(AluOp::Lsh, R2, Src::Imm(2))); // r2 = thoff = ihl * 4
        b.emit(stx(Size::H, R10, rec::THOFF, R2));
        // r4 = skb->len - thoff
        b.emit(ldx(Size::W, R4, R10, rec::LEN));
        b.emit(alu32(AluOp::Sub, R4, Src::Reg(R2)));
        // r5 = transport bytes available (TH_AVAIL)
        let not_frag = b.label();
        let th_avail_done = b.label();
        b.emit(alu32(AluOp::Mov, R5, Src::Reg(R4)));
        b.jmp32(JmpOp::Jeq, R3, Src::Imm(0), not_frag);
        b.emit(mov32(R5, -1));
        b.jmp32(JmpOp::Jne, R3, Src::Imm(1), th_avail_done);
        b.emit(mov32(R5, TH_AVAIL_FRAG1));
        b.ja(th_avail_done);
        b.bind(not_frag)?;
        // Nothing (or less than nothing) available: 1 is "too short" for every guard just
        // as 0 is. Never store a constant 0: a verifier may type those bytes STACK_ZERO on
        // this path only, and walk the rules once more for it.
        b.jmp32(JmpOp::Jsgt, R5, Src::Imm(0), th_avail_done);
        b.emit(mov32(R5, 1));
        b.bind(th_avail_done)?;
        b.emit(stx(Size::W, R10, rec::TH_AVAIL, R5));
        // r0 = clamp(skb->len - thoff, 0, 20)
        let clamp_lo = b.label();
        let clamp_done = b.label();
        b.emit(alu32(AluOp::Mov, R0, Src::Reg(R4)));
        b.jmp32(JmpOp::Jslt, R0, Src::Imm(0), clamp_lo);
        b.jmp32(JmpOp::Jsle, R0, Src::Imm(TH_HDR), clamp_done);
        b.emit(mov32(R0, TH_HDR));
        b.ja(clamp_done);
        b.bind(clamp_lo)?;
        b.emit(mov32(R0, 0));
        b.bind(clamp_done)?;
        Ok(())
    }

    /// Transport header fields from `base` (20 bytes, or fault-safe memory) into the record,
    /// whatever the length: no rule reads them before its availability guard.
    pub(super) fn parse_th(&mut self, base: Reg) {
        use Reg::*;
        let b = &mut self.b;
        for (off, at) in [(0, rec::SPORT), (2, rec::DPORT)] {
            b.emit(ldx(Size::H, R5, base, off));
            b.emit(Insn::End {
                to_be: true,
                dst: R5,
                bits: 16,
            });
            b.emit(stx(Size::H, R10, at, R5));
        }
        for (off, at) in [(0, rec::TYPE), (1, rec::CODE), (13, rec::FLAGS)] {
            b.emit(ldx(Size::B, R5, base, off));
            b.emit(stx(Size::B, R10, at, R5));
        }
        b.emit(ldx(Size::B, R5, base, 12));
        b.emit(alu32(AluOp::Rsh, R5, Src::Imm(4)));
        b.emit(alu32(AluOp::Lsh, R5, Src::Imm(2)));
        b.emit(stx(Size::B, R10, rec::DOFF, R5));
    }

    /// Load the hot registers from the record and pack `r9` (see "Register convention").
    pub(super) fn pack(&mut self) {
        use Reg::*;
        let b = &mut self.b;
        b.emit(ldx(Size::W, R7, R10, rec::SADDR));
        b.emit(ldx(Size::W, R8, R10, rec::DADDR));
        b.emit(ldx(Size::H, R9, R10, rec::DPORT));
        b.emit(ldx(Size::H, R1, R10, rec::SPORT));
        b.emit(alu64(AluOp::Lsh, R1, Src::Imm(packed::SPORT_SHIFT)));
        b.emit(alu64(AluOp::Or, R9, Src::Reg(R1)));
        b.emit(ldx(Size::B, R1, R10, rec::PROTO));
        b.emit(alu64(AluOp::Lsh, R1, Src::Imm(packed::PROTO_SHIFT)));
        b.emit(alu64(AluOp::Or, R9, Src::Reg(R1)));
        b.emit(ldx(Size::W, R1, R10, rec::TH_AVAIL));
        b.emit(alu32(AluOp::Add, R1, Src::Imm(2)));
        // r1 = min(r1, 255), branch free: a branch would give the verifier two prologue end
        // states (one with a constant) and it would walk every rule twice.
        b.emit(mov64(R2, Src::Imm(255)));
        b.emit(alu64(AluOp::Sub, R2, Src::Reg(R1)));
        b.emit(alu64(AluOp::Rsh, R2, Src::Imm(63))); // 1 iff r1 > 255
        b.emit(mov64(R3, Src::Reg(R1)));
        b.emit(alu64(AluOp::Sub, R3, Src::Imm(255)));
        b.emit(alu64(AluOp::Mul, R3, Src::Reg(R2)));
        b.emit(alu64(AluOp::Sub, R1, Src::Reg(R3)));
        // Guard status bits (branch free, so every prologue path ends in the same verifier
        // state): per guard kind, bit 0 = "non-first fragment: no match", bit 1 = "hotdrop".
        let lt = |b: &mut Builder, dst: Reg, c: i32| {
            b.emit(mov64(dst, Src::Reg(R1)));
            b.emit(alu64(AluOp::Sub, dst, Src::Imm(c)));
            b.emit(alu64(AluOp::Rsh, dst, Src::Imm(63)));
        };
        b.emit(mov64(R2, Src::Reg(R1)));
        b.emit(alu64(AluOp::Xor, R2, Src::Imm(1)));
        b.emit(alu64(AluOp::Sub, R2, Src::Imm(1)));
        b.emit(alu64(AluOp::Rsh, R2, Src::Imm(63))); // r2 = fragment at offset 1
        lt(b, R3, 22);
        b.emit(alu64(AluOp::Xor, R3, Src::Reg(R2))); // tcp hotdrop: frag 1 or under 20 bytes
        b.emit(alu64(AluOp::Lsh, R3, Src::Imm(1)));
        b.emit(alu64(AluOp::Or, R3, Src::Reg(R2)));
        lt(b, R4, 2); // any non-first fragment
        for (k, need) in [(1, 8), (2, 4)] {
            lt(b, R5, need + 2);
            b.emit(alu64(AluOp::Xor, R5, Src::Reg(R4)));
            b.emit(alu64(AluOp::Lsh, R5, Src::Imm(1)));
            b.emit(alu64(AluOp::Or, R5, Src::Reg(R4)));
            b.emit(alu64(AluOp::Lsh, R5, Src::Imm(2 * k)));
            b.emit(alu64(AluOp::Or, R3, Src::Reg(R5)));
        }
        b.emit(alu64(AluOp::Lsh, R3, Src::Imm(packed::GUARD_SHIFT)));
        b.emit(alu64(AluOp::Or, R9, Src::Reg(R3)));
        b.emit(alu64(AluOp::Lsh, R1, Src::Imm(packed::TH_SHIFT)));
        b.emit(alu64(AluOp::Or, R9, Src::Reg(R1)));
        b.emit(stx(Size::DW, R10, rec::PACKED, R9));
    }

    /// TCP option scan (only when a rule uses --tcp-option or -m tcpmss). For --tcp-option:
    /// fills OPTST and OPTMAP, a bitmap of the option kinds at the positions the kernel's
    /// tcp_find_option visits. For tcpmss: fills MSS with what `tcpmss_mt` finds at the same
    /// positions (the first kind 2 of length 4 with four bytes left), or its hotdrop. `r7` is
    /// the skb on every path that reaches it; the options are read through a dynptr of their
    /// own (the cast strategy has none yet).
    ///
    /// tcpmss reads the header at the transport offset even in a non-first fragment, so with
    /// it the bytes available are `skb->len - thoff` whatever the fragment offset, and fewer
    /// than 20 are its hotdrop. A tcp match never reads OPTST then: its own guard (no match
    /// for a fragment, hotdrop under 20 bytes) comes first in the rule.
    pub(super) fn tcp_options(&mut self, feat: Features, parsed: Label) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        if feat.tcp_option {
            for k in 0..4i16 {
                b.emit(st(Size::DW, R10, rec::OPTMAP + 8 * k, 0));
            }
            b.emit(st(Size::B, R10, rec::OPTST, OPT_NONE));
        }
        if feat.tcpmss {
            b.emit(st(Size::W, R10, rec::MSS, MSS_SCANNED));
        }
        let bad = b.label();
        if feat.tcpmss {
            // header readable? (skb->len - thoff >= 20, in 32 bits as skb_header_pointer)
            b.emit(ldx(Size::W, R4, R10, rec::LEN));
            b.emit(ldx(Size::H, R5, R10, rec::THOFF));
            b.emit(alu32(AluOp::Sub, R4, Src::Reg(R5)));
            b.jmp32(JmpOp::Jslt, R4, Src::Imm(20), bad);
        } else {
            // header readable? (thav >= 20, not a fragment)
            b.emit(ldx(Size::W, R4, R10, rec::TH_AVAIL));
            b.jmp32(JmpOp::Jslt, R4, Src::Imm(20), parsed);
        }
        b.emit(ldx(Size::B, R5, R10, rec::DOFF));
        b.jmp32(JmpOp::Jlt, R5, Src::Imm(20), bad);
        b.jmp32(JmpOp::Jsgt, R5, Src::Reg(R4), bad); // options not all there
        b.emit(alu32(AluOp::Sub, R5, Src::Imm(20))); // optlen 0..=40
        b.jmp32(JmpOp::Jeq, R5, Src::Imm(0), parsed);
        b.jmp32(JmpOp::Jgt, R5, Src::Imm(40), bad); // (cannot happen; bounds for the verifier)
        b.emit(mov64(R8, Src::Reg(R5)));
        for k in 0..6i16 {
            b.emit(st(Size::DW, R10, rec::OPTBUF + 8 * k, 0));
        }
        from_skb(b, R7, rec::DYN_OPT);
        stack_ptr(b, R1, rec::OPTBUF);
        b.emit(mov64(R2, Src::Reg(R8)));
        stack_ptr(b, R3, rec::DYN_OPT);
        b.emit(ldx(Size::H, R4, R10, rec::THOFF));
        b.emit(alu32(AluOp::Add, R4, Src::Imm(20)));
        b.emit(mov64(R5, Src::Imm(0)));
        b.call_helper(HELPER_DYNPTR_READ);
        b.jmp32(JmpOp::Jne, R0, Src::Imm(0), bad);
        if feat.tcp_option {
            b.emit(st(Size::B, R10, rec::OPTST, OPT_PRESENT));
        }
        // r9 = i, r8 = optlen, r7 = iteration count: the kernel's loop advances at least one
        // byte per step, so 40 iterations cover every option; the counter lets the verifier
        // see the loop end even though it cannot bound the step from below.
        b.emit(mov64(R9, Src::Imm(0)));
        b.emit(mov64(R7, Src::Imm(0)));
        let top = b.here();
        b.jmp64(JmpOp::Jge, R7, Src::Imm(40), parsed);
        b.emit(alu64(AluOp::Add, R7, Src::Imm(1)));
        b.jmp64(JmpOp::Jge, R9, Src::Reg(R8), parsed);
        b.jmp64(JmpOp::Jgt, R9, Src::Imm(39), parsed); // bounds for the verifier
        stack_ptr(b, R1, rec::OPTBUF);
        b.emit(alu64(AluOp::Add, R1, Src::Reg(R9)));
        b.emit(ldx(Size::B, R2, R1, 0)); // kind
        if feat.tcpmss {
            mss_step(b);
        }
        if feat.tcp_option {
            // OPTMAP[kind / 64] |= 1 << (kind % 64)
            b.emit(mov64(R3, Src::Reg(R2)));
            b.emit(alu64(AluOp::Rsh, R3, Src::Imm(6)));
            b.emit(alu64(AluOp::Lsh, R3, Src::Imm(3)));
            stack_ptr(b, R4, rec::OPTMAP);
            b.emit(alu64(AluOp::Add, R4, Src::Reg(R3)));
            b.emit(ldx(Size::DW, R5, R4, 0));
            b.emit(mov64(R0, Src::Imm(1)));
            b.emit(mov64(R3, Src::Reg(R2)));
            b.emit(alu64(AluOp::And, R3, Src::Imm(63)));
            b.emit(alu64(AluOp::Lsh, R0, Src::Reg(R3)));
            b.emit(alu64(AluOp::Or, R5, Src::Reg(R0)));
            b.emit(stx(Size::DW, R4, 0, R5));
        }
        // step: kinds 0 and 1 are one byte; else the length byte, 0 counting as 1. Branch
        // free, so that the loop has one state per iteration for the verifier.
        b.emit(ldx(Size::B, R3, R1, 1)); // len (the spare bytes are zero)
        b.emit(mov64(R4, Src::Reg(R3)));
        b.emit(alu64(AluOp::Sub, R4, Src::Imm(1)));
        b.emit(alu64(AluOp::Rsh, R4, Src::Imm(63))); // 1 iff len == 0
        b.emit(alu64(AluOp::Add, R3, Src::Reg(R4))); // x = max(len, 1)
        b.emit(mov64(R4, Src::Reg(R2)));
        b.emit(alu64(AluOp::Sub, R4, Src::Imm(2)));
        b.emit(alu64(AluOp::Rsh, R4, Src::Imm(63))); // 1 iff kind < 2
        b.emit(mov64(R5, Src::Reg(R3)));
        b.emit(alu64(AluOp::Sub, R5, Src::Imm(1)));
        b.emit(alu64(AluOp::Mul, R5, Src::Reg(R4)));
        b.emit(alu64(AluOp::Sub, R3, Src::Reg(R5))); // kind < 2 ? 1 : x
        b.emit(alu64(AluOp::Add, R9, Src::Reg(R3)));
        b.ja(top);
        b.bind(bad)?;
        if feat.tcp_option {
            b.emit(st(Size::B, R10, rec::OPTST, OPT_HOTDROP));
        }
        if feat.tcpmss {
            b.emit(st(Size::W, R10, rec::MSS, MSS_SCANNED | MSS_HOTDROP));
        }
        b.ja(parsed);
        Ok(())
    }
}

/// One step of the MSS search, branch free like the rest of the loop (`r1` = the option at
/// `i`, `r2` its kind, `r8` optlen, `r9` i; uses r0, r3-r5): the first place where the kind is
/// 2, the length byte 4 and `optlen - i >= 4` puts its big-endian value and MSS_FOUND in MSS.
fn mss_step(b: &mut Builder) {
    use Reg::*;
    b.emit(ldx(Size::W, R0, R10, rec::MSS));
    b.emit(mov64(R3, Src::Reg(R0)));
    b.emit(alu64(AluOp::Rsh, R3, Src::Imm(16)));
    b.emit(alu64(AluOp::And, R3, Src::Imm(1))); // found before: 1
    b.emit(ldx(Size::B, R4, R1, 1));
    b.emit(alu64(AluOp::Xor, R4, Src::Imm(4)));
    b.emit(alu64(AluOp::Or, R3, Src::Reg(R4))); // length byte not 4: non-zero
    b.emit(mov64(R4, Src::Reg(R2)));
    b.emit(alu64(AluOp::Xor, R4, Src::Imm(2)));
    b.emit(alu64(AluOp::Or, R3, Src::Reg(R4))); // kind not 2: non-zero
    b.emit(mov64(R4, Src::Reg(R8)));
    b.emit(alu64(AluOp::Sub, R4, Src::Reg(R9)));
    b.emit(alu64(AluOp::Sub, R4, Src::Imm(4)));
    b.emit(alu64(AluOp::Rsh, R4, Src::Imm(63)));
    b.emit(alu64(AluOp::Or, R3, Src::Reg(R4))); // fewer than 4 bytes left: 1
    b.emit(alu64(AluOp::Sub, R3, Src::Imm(1)));
    b.emit(alu64(AluOp::Rsh, R3, Src::Imm(63))); // r3 = 1 iff this is the MSS
                                                 // (the options copy has 8 spare zero bytes past the 40: i + 3 stays inside)
    b.emit(ldx(Size::B, R4, R1, 2));
    b.emit(alu64(AluOp::Lsh, R4, Src::Imm(8)));
    b.emit(ldx(Size::B, R5, R1, 3));
    b.emit(alu64(AluOp::Or, R4, Src::Reg(R5)));
    b.emit(alu64(AluOp::Or, R4, Src::Imm(MSS_FOUND)));
    b.emit(alu64(AluOp::Mul, R4, Src::Reg(R3)));
    b.emit(alu64(AluOp::Or, R0, Src::Reg(R4)));
    b.emit(stx(Size::W, R10, rec::MSS, R0));
}

/// Zero `len` (a multiple of 4) stack bytes at `off` (4-byte aligned), 8 bytes at a time
/// where aligned.
pub(super) fn zero(b: &mut Builder, off: i16, len: i32) {
    let end = off + len as i16;
    let mut at = off;
    while at < end {
        if at % 8 == 0 && end - at >= 8 {
            b.emit(st(Size::DW, Reg::R10, at, 0));
            at += 8;
        } else {
            b.emit(st(Size::W, Reg::R10, at, 0));
            at += 4;
        }
    }
}

/// `r0 = bpf_dynptr_slice(&DYN, offset, r10 + buf, len)`.
pub(super) fn slice(b: &mut Builder, offset: Src, buf: i16, len: i32) {
    use Reg::*;
    stack_ptr(b, R1, rec::DYN);
    b.emit(mov64(R2, offset));
    stack_ptr(b, R3, buf);
    b.emit(mov64(R4, Src::Imm(len)));
    b.call_kfunc(KFUNC_DYNPTR_SLICE);
}

/// `bpf_dynptr_from_skb(skb, 0, r10 + dynptr)`.
pub(super) fn from_skb(b: &mut Builder, skb: Reg, dynptr: i16) {
    use Reg::*;
    b.emit(mov64(R1, Src::Reg(skb)));
    b.emit(mov64(R2, Src::Imm(0)));
    stack_ptr(b, R3, dynptr);
    b.call_kfunc(KFUNC_DYNPTR_FROM_SKB);
}

/// `dst = r10 + off`: a pointer to a record field.
pub(super) fn stack_ptr(b: &mut Builder, dst: Reg, off: i16) {
    b.emit(mov64(dst, Src::Reg(Reg::R10)));
    b.emit(alu64(AluOp::Add, dst, Src::Imm(i32::from(off))));
}

/// A BTF type id as an instruction immediate.
fn btf_id(id: u32) -> Result<i32, EmitError> {
    i32::try_from(id).map_err(|_| EmitError::Unsupported {
        what: "BTF type id above 2^31",
    })
}
