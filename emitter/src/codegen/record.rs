//! The packet record: what the prologue ([`super::access`]) parses out of the packet once, and
//! every rule reads afterwards.
//!
//! It lives in main's stack frame; chain subprograms get its base in `r1` and keep it in `r6`,
//! so every field is `r6 + FIELD` with the negative offsets of [`rec`] (in main `r6` is a copy
//! of `r10`). The hot fields are also kept in registers: the addresses in `r7`/`r8`, and ports,
//! protocol, transport status and guard bits packed in `r9` ([`packed`]), stored at
//! [`rec::PACKED`] for chain subprograms.
//!
//! # Stack layout (frame 0, offsets from r10 / r6)
//! ```text
//!  -63 proto u8      -62 sport u16 (host order)   -60 saddr u32 (network order)
//!  -55 icmp type u8  -54 dport u16 (host order)   -52 daddr u32 (network order)
//!  -47 icmp code u8  -46 tcp flags u8  -45 tcp doff*4 u8   -44 skb->len u32
//!  -39 tcp option state u8 (1 none, 2 present, 3 hotdrop)  -38 thoff u16
//!  -36 th_avail s32: -2 = fragment with offset 1, -1 = other non-first fragment, else
//!      bytes of transport header available (skb->len - ihl*4, negative clamped to 1)
//!  -28 -20 -12 -4: in-interface name, four u32 words (one per 8-byte slot)
//!  -92 -84 -76 -68: out-interface name words
//! -112 dynptr (IP header slow path)   -128 dynptr (transport slow path)
//! -168 IP header copy (20)  -148 transport header copy (20)     (slow path only)
//! -200 tcp option kind bitmap (4 x u64)  -248 tcp options copy (48)  -264 dynptr (options)
//! -128 ctx pointer (events)  -120 skb->_nfct (u64, conntrack)  -168 nf_conn reads (after
//!      the prologue)
//! -272 packed r9 (u64)   -276 counter slot + 1 for the shared tails (u32)
//! -284 tcpmss scan (u32: MSS value, found, hotdrop and scanned bits; see MSS_*)
//! -280 the first rule found so far by a rule run with classes (u32 index in the run)
//! -304 lookup key of a rule run (16 bytes: u32 addresses and u16 ports, packed)
//! IPv6 programs only:
//! -344 copy of the IPv6 header (40 bytes, by `bpf_dynptr_read`: plain bytes to the verifier)
//!      whose source and destination addresses are SADDR6 (-336) and DADDR6 (-320); SADDR
//!      and DADDR hold their first words
//! -348 hop limit, u32 in network order (a range test's operand)
//! -356 `-m frag`: u32 offset of the first fragment header, or FRAG_NOENT / FRAG_BADMSG
//! -368 `-m frag`: copy of that fragment header (8 bytes)
//! -372 `-m rt`: u32 offset of the first routing header, or FRAG_NOENT / FRAG_BADMSG
//! -384 `-m rt`: its first 8 bytes (the last 4 only when the packet holds them)
//! -388 `-m hbh`: u32 offset of the first hop-by-hop header, or FRAG_NOENT / FRAG_BADMSG
//! -390 `-m hbh`: its first 2 bytes
//! -396 `-m dst`: u32 offset of the first destination options header, or as above
//! -398 `-m dst`: its first 2 bytes
//! -424 `-m ipv6header`: one byte per MASK_* bit and outcome, 0 or 1 (10 bytes)
//! -428 `-m ipv6header`: u32 MASK_* bits of the packet, or V6H_FALSE / V6H_BOUND
//! -432 `-m ipv6header`: the walk's offset (a stack word, as the main walk's)
//! -140 walk scratch (4 bytes read per extension header; the transport buffer, not yet used)
//! ```
//! `count` uses 8 bytes of its own frame; chain subprograms use none.
//!
//! The scalar fields sit at offsets that are not 8-byte aligned, so the verifier keeps them
//! as plain unknown bytes (STACK_MISC) and never links them to a compared register: a rule
//! that compares a field it loaded refines nothing the next rule sees.

/// Record field offsets (see the module doc).
pub mod rec {
    /// u8 IP protocol
    pub const PROTO: i16 = -63;
    /// u16 source port, host order
    pub const SPORT: i16 = -62;
    /// u32 source address as loaded (network order bytes)
    pub const SADDR: i16 = -60;
    /// u8 ICMP type (first transport byte)
    pub const TYPE: i16 = -55;
    /// u16 destination port, host order
    pub const DPORT: i16 = -54;
    /// u32 destination address as loaded
    pub const DADDR: i16 = -52;
    /// u8 ICMP code (second transport byte)
    pub const CODE: i16 = -47;
    /// u8 TCP flags (byte 13)
    pub const FLAGS: i16 = -46;
    /// u8 TCP data offset * 4
    pub const DOFF: i16 = -45;
    /// u32 skb->len
    pub const LEN: i16 = -44;
    /// u8 TCP option state: 1 none, 2 present, 3 hotdrop
    pub const OPTST: i16 = -39;
    /// u16 transport header offset (ihl * 4)
    pub const THOFF: i16 = -38;
    /// s32 transport bytes available, -1/-2 for non-first fragments
    pub const TH_AVAIL: i16 = -36;
    /// in-interface name word k at IN_NAME + 8k
    pub const IN_NAME: i16 = -28;
    /// out-interface name word k at OUT_NAME + 8k
    pub const OUT_NAME: i16 = -92;
    /// skb dynptr of the dynptr prologue (16 bytes)
    pub const DYN: i16 = -112;
    /// IP header slice buffer (20 bytes)
    pub const BUF_IP: i16 = -168;
    /// transport header slice buffer (20 bytes)
    pub const BUF_TH: i16 = -148;
    /// tcp option kind bitmap, 4 x u64
    pub const OPTMAP: i16 = -200;
    /// tcp options copy (40 bytes + 8 spare)
    pub const OPTBUF: i16 = -248;
    /// dynptr for the options
    pub const DYN_OPT: i16 = -264;
    /// u64 copy of r9 (packed ports, protocol, transport status) for chain subprograms
    pub const PACKED: i16 = -272;
    /// u32 counter slot + 1 handed to the shared tails (see `Generator::set_key`)
    pub const KEY: i16 = -276;
    /// lookup key of a rule run ([`LKEY_SIZE`] bytes: u32 addresses and u16 ports packed in
    /// test order), written just before each lookup
    pub const LKEY: i16 = -304;
    /// bytes at [`LKEY`]
    pub const LKEY_SIZE: usize = 16;
    /// u32 index in its run of the first rule a run with classes has found so far
    pub const BEST: i16 = -280;
    /// u32 outcome of the tcpmss scan: the MSS in bits 0-15 and [`super::MSS_FOUND`],
    /// [`super::MSS_HOTDROP`], [`super::MSS_SCANNED`]
    pub const MSS: i16 = -284;
    /// IPv6: copy of the 40-byte IPv6 header
    pub const IP6: i16 = -344;
    /// IPv6: source address, 16 bytes (4 u32 words as loaded)
    pub const SADDR6: i16 = IP6 + 8;
    /// IPv6: destination address, 16 bytes
    pub const DADDR6: i16 = IP6 + 24;
    /// IPv6: u32 hop limit in network order (so that `Test::Range` reads it as a number)
    pub const HLIM: i16 = -348;
    /// IPv6 `-m frag`: u32 offset of the first fragment header (>= 40), or
    /// [`super::FRAG_NOENT`] / [`super::FRAG_BADMSG`]
    pub const FRAG_AT: i16 = -356;
    /// IPv6 `-m frag`: the 8 bytes of that fragment header
    pub const FRAGHDR: i16 = -368;
    /// IPv6 `-m rt`: u32 offset of the first routing header (>= 40), or
    /// [`super::FRAG_NOENT`] / [`super::FRAG_BADMSG`]
    pub const RT_AT: i16 = -372;
    /// IPv6 `-m rt`: the first 8 bytes of that routing header
    pub const RTHDR: i16 = -384;
    /// IPv6 `-m hbh`: u32 offset of the first hop-by-hop header, as [`RT_AT`]
    pub const HBH_AT: i16 = -388;
    /// IPv6 `-m hbh`: its first 2 bytes
    pub const HBHHDR: i16 = -390;
    /// IPv6 `-m dst`: u32 offset of the first destination options header, as [`RT_AT`]
    pub const DST_AT: i16 = -396;
    /// IPv6 `-m dst`: its first 2 bytes
    pub const DSTHDR: i16 = -398;
    /// IPv6 `-m ipv6header`: a byte per MASK_* bit and outcome, 0 or 1
    pub const V6H_SEEN: i16 = -424;
    /// IPv6 `-m ipv6header`: u32 MASK_* bits, or [`super::V6H_FALSE`] / [`super::V6H_BOUND`]
    pub const V6H: i16 = -428;
    /// IPv6 `-m ipv6header`: the walk's offset
    pub const V6H_PTR: i16 = -432;
    /// IPv6: 4 bytes of the extension header the walk is at
    pub const WALK: i16 = -140;
    /// the program's context pointer, for events (stored first thing; in the 16 bytes
    /// between the transport buffer and the dynptr, which nothing else uses)
    pub const CTX: i16 = -128;
    /// u64 skb->_nfct, for connection-state tests
    pub const NFCT: i16 = -120;
    /// 8 bytes a connection-state test reads nf_conn fields into (the IP header buffer,
    /// free once the prologue is done)
    pub const CTBUF: i16 = -168;
}

/// Bit positions in r9 (see "Register convention" in the parent module).
pub(super) mod packed {
    /// u16 source port (host order) at bit 16; destination port at bit 0
    pub const SPORT_SHIFT: i32 = 16;
    /// u8 protocol
    pub const PROTO_SHIFT: i32 = 32;
    /// u8 transport status: 0 fragment at offset 1, 1 other non-first fragment, else
    /// min(available bytes, 253) + 2
    pub const TH_SHIFT: i32 = 40;
    /// 2 bits per guard kind (tcp, 8 bytes, 4 bytes): bit 0 no match, bit 1 hotdrop
    pub const GUARD_SHIFT: i32 = 48;
}

/// FRAG_AT: the walk to the first fragment header ended without one (-ENOENT); also its
/// value while the walk has not met one yet.
pub(super) const FRAG_NOENT: i32 = 1;
/// FRAG_AT: a header on the way, or the fragment header, was cut short (-EBADMSG).
pub(super) const FRAG_BADMSG: i32 = 2;

/// `rec::V6H`: `ipv6header_mt6` returns false (an extension header with fewer than 2 bytes left).
pub(super) const V6H_FALSE: i32 = 0x100;
/// `rec::V6H`: more extension headers than the walk follows (hotdrop, see SEMANTICS.md).
pub(super) const V6H_BOUND: i32 = 0x200;

/// TH_AVAIL value of a fragment with offset 1 (tcp hotdrops it).
pub(super) const TH_AVAIL_FRAG1: i32 = -2;
/// Option states (OPTST).
pub(super) const OPT_NONE: i32 = 1;
pub(super) const OPT_PRESENT: i32 = 2;
pub(super) const OPT_HOTDROP: i32 = 3;
/// tcpmss scan bits (`rec::MSS`): an MSS option was found (its value in bits 0-15)
pub(super) const MSS_FOUND: i32 = 1 << 16;
/// the header or its options could not be read, or the data offset is below 5: hotdrop
pub(super) const MSS_HOTDROP: i32 = 1 << 17;
/// always set, so that no path stores a constant 0 (which a verifier may type STACK_ZERO on
/// that path only, walking the rules once more for it)
pub(super) const MSS_SCANNED: i32 = 1 << 18;
