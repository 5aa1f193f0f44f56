//! The IPv6 prologue: the record of an NFPROTO_IPV6 program.
//!
//! What `ip6t_do_table` gives the matches, computed once per packet:
//! - the IPv6 header, copied into the record (`rec::IP6`) by `bpf_dynptr_read`, so that the
//!   addresses are plain bytes to the verifier (a register spilled there would be linked to
//!   every compare of a reload); `rec::SADDR`/`rec::DADDR` hold their first words so that
//!   the hot registers are loaded as in IPv4 programs; the hop limit as a network-order u32
//!   (`rec::HLIM`);
//! - the result of `ipv6_find_hdr(skb, &thoff, -1, &fragoff, NULL)` with `thoff` 0, which is
//!   what `ip6_packet_match` computes for every IP6T_F_PROTO entry (`acpar.thoff` is reset to
//!   0 before each rule and the packet does not change between rules): the protocol in
//!   `rec::PROTO`, the transport offset in `rec::THOFF`, and the fragment offset folded into
//!   `rec::TH_AVAIL` (-1 for a non-first fragment, whose offset in bytes is a multiple of 8:
//!   never tcp's "offset 1"). A failed walk stores protocol 0, which no successful walk
//!   returns (0 is hop-by-hop, an extension header): `Test::WalkGuard` hotdrops on it.
//!
//! The walk (net/ipv6/exthdrs_core.c `ipv6_find_hdr`): while the next header is an extension
//! header (`ipv6_ext_hdr`: 0, 43, 44, 51, 60; 59 "no next header" ends it like a protocol),
//! read its first two bytes at `start` (`-EBADMSG` when they are past `skb->len`); a routing
//! header also needs its first four bytes (the `ipv6_rt_hdr` read), a fragment header its
//! `frag_off` word; a fragment header with a non-zero offset ends the walk: its next header
//! is the protocol when that is not an extension header (or is 59), with the transport offset
//! left at 0, else the walk fails (`-ENOENT`). Lengths: fragment 8, AH `(hdrlen + 2) * 4`,
//! others `(hdrlen + 1) * 8`. Reads go through `bpf_dynptr_read`, which fails exactly where
//! `skb_header_pointer` does (past `skb->len`, linear or not).
//!
//! The same walk also finds, for the rules that need them, the first header of a kind as
//! `ipv6_find_hdr(skb, &ptr, target, NULL, NULL)` would (fragment for `-m frag`, routing for
//! `-m rt`, hop-by-hop and destination options for `-m hbh`/`-m dst`): its offset, or
//! FRAG_NOENT (the walk ended first, also at a non-first fragment) / FRAG_BADMSG (a read
//! failed before), and a copy of its first bytes. `-m ipv6header` has a walk of its own
//! (`ipv6header_mt6` follows ESP, goes on past a non-first fragment and stops past the end),
//! whose MASK_* bits are kept as one byte each so that its paths leave the same stack.
//!
//! The walk is a loop of at most [`MAX_EXT_HEADERS`] steps; the kernel has no bound. A packet
//! with more extension headers than that is treated as a failed walk (a rule with a protocol
//! drops it). The verifier follows a bounded loop step by step, and inside a loop it keeps a
//! state to prune against only every 20 jumps or 100 instructions: a step that branched on the
//! header's kind was verified once per kind and step reached (7,400 instructions for an empty
//! ruleset, 11 ms to load on 6.18). So a step is one path whatever the header: the kind is a
//! bit of a 64-bit set (`(set >> nexthdr) & 1`), the read is two or four bytes by arithmetic,
//! the length and the first-header records are chosen by masks, and every step reaches the top
//! with the same registers (the offset goes through a stack word, the next header is a fresh
//! load). Only the ways out of the loop branch (2,200 instructions).
//!
//! The cast strategy is not used for IPv6: both strategies compile this dynptr prologue.

use crate::insn::{alu32, alu64, ldx, mov32, mov64, stx, AluOp, Insn, JmpOp, Reg, Size, Src};
use crate::EmitError;

use super::access::{from_skb, slice, stack_ptr, zero, Features, TH_HDR};
use super::record::{rec, FRAG_BADMSG, FRAG_NOENT};
use super::{Generator, HELPER_DYNPTR_READ};

/// Extension headers the walk follows at most (see the module doc).
pub const MAX_EXT_HEADERS: i32 = 32;

/// `r0 = bpf_dynptr_read(r10 + dst, len, &DYN, off, 0)`.
fn read(b: &mut crate::builder::Builder, dst: i16, len: Src, off: Src) {
    use Reg::*;
    stack_ptr(b, R1, dst);
    b.emit(mov64(R2, len));
    stack_ptr(b, R3, rec::DYN);
    b.emit(mov64(R4, off));
    b.emit(mov64(R5, Src::Imm(0)));
    b.call_helper(HELPER_DYNPTR_READ);
}

/// `dst` = 0 at run time, a value the verifier does not know (`skb->len >> 31`): a constant 0
/// stored in the record would be typed STACK_ZERO on that path only, and the verifier would
/// walk the rules once more for it.
fn opaque_zero(b: &mut crate::builder::Builder, dst: Reg) {
    b.emit(ldx(Size::W, dst, Reg::R10, rec::LEN));
    b.emit(alu32(AluOp::Rsh, dst, Src::Imm(31)));
}

/// Extension headers of the protocol walk (`ipv6_ext_hdr`, without 59 "no next header").
const NH_HOP: u32 = 0;
const NH_ROUTING: u32 = 43;
const NH_FRAGMENT: u32 = 44;
const NH_AUTH: u32 = 51;
const NH_DEST: u32 = 60;

/// The bit of next header `nh` (< 64) in a set of next headers.
const fn bit(nh: u32) -> u64 {
    1 << nh
}

/// The set of the headers the walk follows.
const EXT: u64 = bit(NH_HOP) | bit(NH_ROUTING) | bit(NH_FRAGMENT) | bit(NH_AUTH) | bit(NH_DEST);

/// `dst = (set >> r8) & 1`: whether next header r8 (known < 64) is in `set`, as 0 or 1.
fn kind(b: &mut crate::builder::Builder, dst: Reg, set: u64) {
    b.emit(Insn::LdImm64 {
        dst,
        imm: crate::insn::Imm64::Const(set),
    });
    b.emit(alu64(AluOp::Rsh, dst, Src::Reg(Reg::R8)));
    b.emit(alu64(AluOp::And, dst, Src::Imm(1)));
}

/// `r2 = value` when next header r8 is `nh`, without a branch (r1, r3 clobbered; `value`
/// is not r1 or r2).
fn select(b: &mut crate::builder::Builder, nh: u32, value: Src) {
    use Reg::*;
    kind(b, R1, bit(nh));
    b.emit(Insn::Neg {
        wide: true,
        dst: R1,
    });
    match value {
        Src::Reg(r) if r != R3 => b.emit(mov64(R3, Src::Reg(r))),
        Src::Reg(_) => {}
        imm => b.emit(mov64(R3, imm)),
    }
    b.emit(alu64(AluOp::Xor, R3, Src::Reg(R2)));
    b.emit(alu64(AluOp::And, R3, Src::Reg(R1)));
    b.emit(alu64(AluOp::Xor, R2, Src::Reg(R3)));
}

/// `rec[at] = r9` when next header r8 is `nh` and `rec[at]` is still FRAG_NOENT, without a
/// branch (r1, r3, r4, r5 clobbered).
fn first_at(b: &mut crate::builder::Builder, nh: u32, at: i16) {
    use Reg::*;
    kind(b, R1, bit(nh));
    b.emit(ldx(Size::W, R3, R10, at));
    // r5 = 1 when r3 is FRAG_NOENT: r4 = r3 ^ NOENT (a u32), nonzero exactly when
    // (r4 | -r4) has its sign bit
    b.emit(mov64(R4, Src::Reg(R3)));
    b.emit(alu32(AluOp::Xor, R4, Src::Imm(FRAG_NOENT)));
    b.emit(mov64(R5, Src::Reg(R4)));
    b.emit(Insn::Neg {
        wide: true,
        dst: R5,
    });
    b.emit(alu64(AluOp::Or, R5, Src::Reg(R4)));
    b.emit(alu64(AluOp::Rsh, R5, Src::Imm(63)));
    b.emit(alu64(AluOp::Xor, R5, Src::Imm(1)));
    b.emit(alu64(AluOp::And, R1, Src::Reg(R5)));
    b.emit(Insn::Neg {
        wide: true,
        dst: R1,
    });
    b.emit(mov64(R4, Src::Reg(R3)));
    b.emit(alu64(AluOp::Xor, R4, Src::Reg(R9)));
    b.emit(alu64(AluOp::And, R4, Src::Reg(R1)));
    b.emit(alu64(AluOp::Xor, R3, Src::Reg(R4)));
    b.emit(stx(Size::W, R10, at, R3));
}

/// `rec::V6H_SEEN` bytes, in order: the `MASK_*` bit each stands for (ip6t_ipv6header.h),
/// then [`super::record::V6H_FALSE`] (the walk ran out of packet before an extension header)
/// and [`super::record::V6H_BOUND`] (more than [`MAX_EXT_HEADERS`] headers).
const V6H_BITS: [i32; 10] = [128, 64, 32, 16, 8, 4, 2, 1, 0x100, 0x200];
/// Indices into [`V6H_BITS`].
const V6H_HOP: i16 = 0;
const V6H_DST: i16 = 1;
const V6H_RT: i16 = 2;
const V6H_FRAG: i16 = 3;
const V6H_AH: i16 = 4;
const V6H_ESP: i16 = 5;
const V6H_NONE: i16 = 6;
const V6H_PROTO: i16 = 7;
const V6H_FALSE: i16 = 8;
const V6H_BOUND: i16 = 9;

/// Marks `rec::V6H_SEEN[k]` with a value the verifier does not know (1 at run time), so that
/// every path through the ipv6header walk leaves the same kind of stack.
fn v6h_mark(b: &mut crate::builder::Builder, k: i16) {
    b.emit(ldx(Size::W, Reg::R2, Reg::R10, rec::LEN));
    b.emit(alu32(AluOp::Rsh, Reg::R2, Src::Imm(31)));
    b.emit(alu32(AluOp::Add, Reg::R2, Src::Imm(1)));
    b.emit(stx(Size::B, Reg::R10, rec::V6H_SEEN + k, Reg::R2));
}

impl Generator<'_> {
    /// `ipv6header_mt6`'s own walk (ip6t_ipv6header.c), rule-independent: the MASK_* bits of
    /// the packet in `rec::V6H`, or V6H_FALSE / V6H_BOUND. Uses r0-r9 (before the transport
    /// header is read).
    fn ipv6header_walk(&mut self) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        opaque_zero(b, R3);
        for k in 0..V6H_BITS.len() as i16 {
            b.emit(stx(Size::B, R10, rec::V6H_SEEN + k, R3));
        }
        b.emit(ldx(Size::B, R8, R10, rec::IP6 + 6));
        b.emit(mov64(R9, Src::Imm(40)));
        b.emit(mov64(R6, Src::Imm(0)));
        let compose = b.label();
        let advance = b.label();
        let top = b.here();
        // 59: MASK_NONE, the end
        let not_none = b.label();
        b.jmp32(JmpOp::Jne, R8, Src::Imm(59), not_none);
        v6h_mark(b, V6H_NONE);
        b.ja(compose);
        b.bind(not_none)?;
        // not `nf_ip6_ext_hdr` (0, 43, 44, 50, 51, 59, 60): MASK_PROTO, the end
        let ext = b.label();
        for nh in [0, 43, 44, 50, 51, 60] {
            b.jmp32(JmpOp::Jeq, R8, Src::Imm(nh), ext);
        }
        v6h_mark(b, V6H_PROTO);
        b.ja(compose);
        b.bind(ext)?;
        // `len < sizeof(struct ipv6_opt_hdr)`: false (the read fails exactly then)
        read(b, rec::WALK, Src::Imm(2), Src::Reg(R9));
        let readable = b.label();
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), readable);
        v6h_mark(b, V6H_FALSE);
        b.ja(compose);
        b.bind(readable)?;
        // ESP: MASK_ESP, the end
        let not_esp = b.label();
        b.jmp32(JmpOp::Jne, R8, Src::Imm(50), not_esp);
        v6h_mark(b, V6H_ESP);
        b.ja(compose);
        b.bind(not_esp)?;
        let within = b.label();
        b.jmp64(JmpOp::Jlt, R6, Src::Imm(MAX_EXT_HEADERS), within);
        v6h_mark(b, V6H_BOUND);
        b.ja(compose);
        b.bind(within)?;
        b.emit(alu64(AluOp::Add, R6, Src::Imm(1)));
        let (frag, auth, rt, hop) = (b.label(), b.label(), b.label(), b.label());
        for (nh, to) in [(44, frag), (51, auth), (43, rt), (0, hop)] {
            b.jmp32(JmpOp::Jeq, R8, Src::Imm(nh), to);
        }
        // destination options, then the other kinds: flag, r2 = length
        let optlen = b.label();
        v6h_mark(b, V6H_DST);
        b.ja(optlen);
        b.bind(hop)?;
        v6h_mark(b, V6H_HOP);
        b.ja(optlen);
        b.bind(rt)?;
        v6h_mark(b, V6H_RT);
        b.bind(optlen)?;
        b.emit(ldx(Size::B, R2, R10, rec::WALK + 1));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(1)));
        b.emit(alu64(AluOp::Lsh, R2, Src::Imm(3)));
        b.ja(advance);
        b.bind(auth)?;
        v6h_mark(b, V6H_AH);
        b.emit(ldx(Size::B, R2, R10, rec::WALK + 1));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(2)));
        b.emit(alu64(AluOp::Lsh, R2, Src::Imm(2)));
        b.ja(advance);
        b.bind(frag)?;
        v6h_mark(b, V6H_FRAG);
        b.emit(mov64(R2, Src::Imm(8)));
        // nexthdr = hp->nexthdr; ptr += hdrlen; `ptr > skb->len`: the end
        b.bind(advance)?;
        b.emit(ldx(Size::B, R8, R10, rec::WALK));
        b.emit(alu64(AluOp::Add, R9, Src::Reg(R2)));
        b.emit(stx(Size::W, R10, rec::V6H_PTR, R9));
        b.emit(ldx(Size::W, R9, R10, rec::V6H_PTR));
        b.emit(ldx(Size::W, R3, R10, rec::LEN));
        b.jmp64(JmpOp::Jle, R9, Src::Reg(R3), top);
        // past the end: MASK_PROTO unless the next header is 59 or ESP
        for nh in [59, 50] {
            b.jmp32(JmpOp::Jeq, R8, Src::Imm(nh), compose);
        }
        v6h_mark(b, V6H_PROTO);
        // the bits, branch free (each byte is 0 or 1 at run time)
        b.bind(compose)?;
        b.emit(mov32(R1, 0));
        for (k, bit) in V6H_BITS.iter().enumerate() {
            b.emit(ldx(Size::B, R2, R10, rec::V6H_SEEN + k as i16));
            b.emit(alu32(AluOp::Mul, R2, Src::Imm(*bit)));
            b.emit(alu32(AluOp::Or, R1, Src::Reg(R2)));
        }
        b.emit(stx(Size::W, R10, rec::V6H, R1));
        Ok(())
    }

    /// The IPv6 record (see the module doc); `r7` = skb, `rec::LEN` stored.
    pub(super) fn prologue6(&mut self, feat: Features) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        from_skb(b, R7, rec::DYN);
        read(b, rec::IP6, Src::Imm(40), Src::Imm(0));
        let short_ip = b.label();
        b.jmp64(JmpOp::Jne, R0, Src::Imm(0), short_ip);
        for (from, to) in [(rec::SADDR6, rec::SADDR), (rec::DADDR6, rec::DADDR)] {
            b.emit(ldx(Size::W, R2, R10, from));
            b.emit(stx(Size::W, R10, to, R2));
        }
        b.emit(ldx(Size::B, R2, R10, rec::IP6 + 7));
        b.emit(Insn::End {
            to_be: true,
            dst: R2,
            bits: 32,
        });
        b.emit(stx(Size::W, R10, rec::HLIM, R2));

        // The walk: r8 = next header, r9 = start, r6 = steps taken (r6 becomes the record base
        // only at the end of the prologue).
        b.emit(ldx(Size::B, R8, R10, rec::IP6 + 6));
        b.emit(mov64(R9, Src::Imm(40)));
        b.emit(mov64(R6, Src::Imm(0)));
        if feat.frag6 || feat.rt6 || feat.hbh6 || feat.dst6 {
            b.emit(mov32(R1, FRAG_NOENT));
        }
        if feat.hbh6 {
            b.emit(stx(Size::W, R10, rec::HBH_AT, R1));
        }
        if feat.dst6 {
            b.emit(stx(Size::W, R10, rec::DST_AT, R1));
        }
        if feat.frag6 {
            b.emit(stx(Size::W, R10, rec::FRAG_AT, R1));
        }
        if feat.rt6 {
            b.emit(stx(Size::W, R10, rec::RT_AT, R1));
        }
        let found = b.label();
        let bad = b.label();
        let bad_nonfirst = b.label();
        let nonfirst = b.label();
        let walked = b.label();
        // The WALK word is read below whatever the header (a fragment header's offset is
        // multiplied by 0 for the others): initialised once, so that it is on every path.
        opaque_zero(b, R3);
        b.emit(stx(Size::W, R10, rec::WALK, R3));
        let top = b.here();
        // One more extension header? A bit of a 64-bit set, not one compare per kind: the
        // step below is one path whatever the header is (see the module doc).
        b.jmp32(JmpOp::Jgt, R8, Src::Imm(63), found);
        kind(b, R1, EXT);
        b.jmp64(JmpOp::Jeq, R1, Src::Imm(0), found);
        b.jmp64(JmpOp::Jge, R6, Src::Imm(MAX_EXT_HEADERS), bad);
        b.emit(alu64(AluOp::Add, R6, Src::Imm(1)));
        // routing and fragment headers must have four bytes readable, the others two
        kind(b, R2, bit(NH_ROUTING) | bit(NH_FRAGMENT));
        b.emit(alu64(AluOp::Lsh, R2, Src::Imm(1)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(2)));
        read(b, rec::WALK, Src::Reg(R2), Src::Reg(R9));
        b.jmp64(JmpOp::Jne, R0, Src::Imm(0), bad);
        // the first header of each kind a rule looks for: where `ipv6_find_hdr(.., target,
        // ..)` stops (a fragment header before its offset is looked at)
        for (on, nh, at) in [
            (feat.hbh6, NH_HOP, rec::HBH_AT),
            (feat.dst6, NH_DEST, rec::DST_AT),
            (feat.rt6, NH_ROUTING, rec::RT_AT),
            (feat.frag6, NH_FRAGMENT, rec::FRAG_AT),
        ] {
            if on {
                first_at(b, nh, at);
            }
        }
        // a fragment header whose offset (ntohs(frag_off) & ~7) is not 0 ends the walk
        kind(b, R1, bit(NH_FRAGMENT));
        b.emit(ldx(Size::H, R2, R10, rec::WALK + 2));
        b.emit(Insn::End {
            to_be: true,
            dst: R2,
            bits: 16,
        });
        b.emit(alu32(AluOp::And, R2, Src::Imm(0xfff8)));
        b.emit(alu64(AluOp::Mul, R2, Src::Reg(R1)));
        b.jmp64(JmpOp::Jne, R2, Src::Imm(0), nonfirst);
        // r2 = this header's length: 8 for a fragment header, (hdrlen + 2) * 4 for AH,
        // (hdrlen + 1) * 8 for the others, chosen by masks
        b.emit(ldx(Size::B, R3, R10, rec::WALK + 1));
        b.emit(mov64(R2, Src::Reg(R3)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(1)));
        b.emit(alu64(AluOp::Lsh, R2, Src::Imm(3)));
        b.emit(alu64(AluOp::Add, R3, Src::Imm(2)));
        b.emit(alu64(AluOp::Lsh, R3, Src::Imm(2)));
        select(b, NH_AUTH, Src::Reg(R3));
        select(b, NH_FRAGMENT, Src::Imm(8));
        b.emit(ldx(Size::B, R8, R10, rec::WALK));
        b.emit(alu64(AluOp::Add, R9, Src::Reg(R2)));
        // through a stack word: every step reaches `top` with the same r9 state
        b.emit(stx(Size::W, R10, rec::TH_AVAIL, R9));
        b.emit(ldx(Size::W, R9, R10, rec::TH_AVAIL));
        b.ja(top);

        // a non-first fragment: its next header is the protocol, unless it is an extension
        // header (not 59); the transport offset stays 0, nothing is available
        b.bind(nonfirst)?;
        b.emit(ldx(Size::B, R2, R10, rec::WALK));
        for nh in [0, 43, 44, 51, 60] {
            b.jmp32(JmpOp::Jeq, R2, Src::Imm(nh), bad_nonfirst);
        }
        b.emit(stx(Size::B, R10, rec::PROTO, R2));
        opaque_zero(b, R3);
        b.emit(stx(Size::H, R10, rec::THOFF, R3));
        b.emit(mov32(R4, -1));
        b.emit(stx(Size::W, R10, rec::TH_AVAIL, R4));
        b.ja(walked);
        // the walk failed: protocol 0 (WalkGuard hotdrops), nothing available
        b.bind(bad)?;
        if feat.frag6 {
            // a read failed before a fragment header was found (or at it): -EBADMSG
            let seen = b.label();
            b.emit(ldx(Size::W, R1, R10, rec::FRAG_AT));
            b.jmp32(JmpOp::Jne, R1, Src::Imm(FRAG_NOENT), seen);
            b.emit(mov32(R1, FRAG_BADMSG));
            b.emit(stx(Size::W, R10, rec::FRAG_AT, R1));
            b.bind(seen)?;
        }
        if feat.rt6 {
            // a read failed before a routing header was found (or at it): -EBADMSG
            let seen = b.label();
            b.emit(ldx(Size::W, R1, R10, rec::RT_AT));
            b.jmp32(JmpOp::Jne, R1, Src::Imm(FRAG_NOENT), seen);
            b.emit(mov32(R1, FRAG_BADMSG));
            b.emit(stx(Size::W, R10, rec::RT_AT, R1));
            b.bind(seen)?;
        }
        for (on, at) in [(feat.hbh6, rec::HBH_AT), (feat.dst6, rec::DST_AT)] {
            if on {
                // a read failed before that header was found (or at it): -EBADMSG
                let seen = b.label();
                b.emit(ldx(Size::W, R1, R10, at));
                b.jmp32(JmpOp::Jne, R1, Src::Imm(FRAG_NOENT), seen);
                b.emit(mov32(R1, FRAG_BADMSG));
                b.emit(stx(Size::W, R10, at, R1));
                b.bind(seen)?;
            }
        }
        // a non-first fragment followed by an extension header fails the protocol walk, but
        // a target walk ends there with -ENOENT (or at a header it found before)
        b.bind(bad_nonfirst)?;
        opaque_zero(b, R3);
        b.emit(stx(Size::B, R10, rec::PROTO, R3));
        b.emit(stx(Size::H, R10, rec::THOFF, R3));
        b.emit(mov32(R4, 1));
        b.emit(stx(Size::W, R10, rec::TH_AVAIL, R4));
        b.ja(walked);
        // the protocol r8 at r9
        b.bind(found)?;
        b.emit(stx(Size::B, R10, rec::PROTO, R8));
        b.emit(stx(Size::H, R10, rec::THOFF, R9));
        b.emit(ldx(Size::W, R4, R10, rec::LEN));
        b.emit(alu32(AluOp::Sub, R4, Src::Reg(R9)));
        let avail_done = b.label();
        b.jmp32(JmpOp::Jsgt, R4, Src::Imm(0), avail_done);
        b.emit(mov32(R4, 1));
        b.bind(avail_done)?;
        b.emit(stx(Size::W, R10, rec::TH_AVAIL, R4));

        // The transport header at THOFF, as in IPv4 programs.
        b.bind(walked)?;
        if feat.frag6 {
            // the fragment header itself (8 bytes), else -EBADMSG. Without one, the first 8
            // bytes of the packet: every path writes the copy through the helper, so that it
            // is the same kind of stack to the verifier on all of them.
            let have = b.label();
            let done = b.label();
            b.emit(ldx(Size::W, R6, R10, rec::FRAG_AT));
            b.jmp32(JmpOp::Jgt, R6, Src::Imm(FRAG_BADMSG), have);
            b.emit(mov64(R6, Src::Imm(0)));
            b.bind(have)?;
            read(b, rec::FRAGHDR, Src::Imm(8), Src::Reg(R6));
            b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), done);
            b.emit(mov32(R1, FRAG_BADMSG));
            b.emit(stx(Size::W, R10, rec::FRAG_AT, R1));
            b.bind(done)?;
        }
        if feat.rt6 {
            // the routing header's first 8 bytes; its first 4 when the packet ends before
            // (the walk read those), or the packet's first 8 without one: always through the
            // helper, as the fragment header
            let have = b.label();
            let done = b.label();
            b.emit(ldx(Size::W, R6, R10, rec::RT_AT));
            b.jmp32(JmpOp::Jgt, R6, Src::Imm(FRAG_BADMSG), have);
            b.emit(mov64(R6, Src::Imm(0)));
            b.bind(have)?;
            read(b, rec::RTHDR, Src::Imm(8), Src::Reg(R6));
            b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), done);
            read(b, rec::RTHDR, Src::Imm(4), Src::Reg(R6));
            b.bind(done)?;
        }
        for (on, at, hdr) in [
            (feat.hbh6, rec::HBH_AT, rec::HBHHDR),
            (feat.dst6, rec::DST_AT, rec::DSTHDR),
        ] {
            if on {
                // the options header's first 2 bytes (the walk read them), or the packet's
                // first 2 without one
                let have = b.label();
                b.emit(ldx(Size::W, R6, R10, at));
                b.jmp32(JmpOp::Jgt, R6, Src::Imm(FRAG_BADMSG), have);
                b.emit(mov64(R6, Src::Imm(0)));
                b.bind(have)?;
                read(b, hdr, Src::Imm(2), Src::Reg(R6));
            }
        }
        if feat.ipv6h {
            self.ipv6header_walk()?;
        }
        let b = &mut self.b;
        b.emit(ldx(Size::H, R9, R10, rec::THOFF));
        b.emit(ldx(Size::W, R4, R10, rec::LEN));
        b.emit(alu32(AluOp::Sub, R4, Src::Reg(R9)));
        // r8 = clamp(skb->len - thoff, 0, 20): bytes to copy when the slice fails
        let clamp_lo = b.label();
        let clamp_done = b.label();
        b.emit(alu32(AluOp::Mov, R8, Src::Reg(R4)));
        b.jmp32(JmpOp::Jslt, R8, Src::Imm(0), clamp_lo);
        b.jmp32(JmpOp::Jsle, R8, Src::Imm(TH_HDR), clamp_done);
        b.emit(mov32(R8, TH_HDR));
        b.ja(clamp_done);
        b.bind(clamp_lo)?;
        b.emit(mov32(R8, 0));
        b.bind(clamp_done)?;
        slice(b, Src::Reg(R9), rec::BUF_TH, TH_HDR);
        let short_th = b.label();
        let th_done = b.label();
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), short_th);
        self.parse_th(R0);
        self.b.ja(th_done);
        let b = &mut self.b;
        b.bind(short_th)?;
        zero(b, rec::BUF_TH, TH_HDR);
        read(b, rec::BUF_TH, Src::Reg(R8), Src::Reg(R9));
        stack_ptr(b, R3, rec::BUF_TH);
        self.parse_th(R3);
        self.b.ja(th_done);
        // Shorter than an IPv6 header: cannot happen at a netfilter hook; drop.
        let b = &mut self.b;
        b.bind(short_ip)?;
        b.emit(mov64(R0, Src::Imm(0)));
        b.emit(Insn::Exit);

        b.bind(th_done)?;
        b.emit(mov64(R6, Src::Reg(R10)));
        let parsed = b.label();
        if feat.tcp_option {
            self.tcp_options(feat, parsed)?;
        }
        self.b.bind(parsed)?;
        self.pack();
        Ok(())
    }
}
