//! Matches that read state outside the packet: `limit`'s token buckets, the namespace's
//! address types for `addrtype`, and the packet's socket for `owner`.
//!
//! - `limit` calls the `limit` subprogram (`r1` = slot, `r2` = cost, `r3` = credit cap, `r4` =
//!   CREDITS_PER_JIFFY), which runs `limit_mt` on the slot's state word in
//!   [`MapRef::Limits`] with one 64-bit compare-and-exchange: `prev` and `credit` change
//!   together (the kernel swaps `prev`, then loops a cmpxchg on `credit`; the result of a
//!   packet is the same). The verifier accepts no unbounded retry loop, so the exchange is
//!   tried [`LIMIT_TRIES`] times; a packet whose every try lost a race against the other CPUs
//!   does not match (the kernel would have retried until it won).
//! - `addrtype` looks each address up in [`MapRef::AddrTypes`], the namespace's LPM trie of
//!   address types that the daemon keeps equal to `__inet_dev_addr_type`'s answers (the
//!   local routing table, with the broadcast, zero-network and multicast ranges it answers
//!   before the table). Value: RTN_* type, then the route's device (0: any device).
//! - `owner` calls the `owner` subprogram (`r1` = record), which follows `skb_to_full_sk`,
//!   `sk_socket`, `file` and `f_cred` with kernel reads and leaves the credentials in the
//!   record; the rule compares them as `owner_mt` does.
//! - `mac` reads `skb->dev`'s type and the MAC header's place from the skb, then the header's
//!   source address with a kernel read into the record, as `mac_mt` does.

use crate::builder::{Label, MapRef};
use crate::insn::{
    alu32, alu64, ldx, mov32, mov64, st, stx, AluOp, AtomicOp, Insn, JmpOp, Reg, Size, Src,
};
use crate::ir::{self, AddrtypeDev, AddrtypeMatch, LimitMatch, OwnerMatch};
use crate::EmitError;

use super::access::off16;
use super::lower::copy_addr;
use super::record::rec;
use super::{Generator, HELPER_JIFFIES64, HELPER_MAP_LOOKUP_ELEM, HELPER_PROBE_READ_KERNEL};

/// Compare-and-exchange attempts of a `limit` bucket update.
pub const LIMIT_TRIES: usize = 8;

/// `limit`'s frame: the map key.
const LIMIT_KEY: i16 = -8;

/// Where `owner` leaves its findings in the record (the IP header buffer, free after the
/// prologue): a scratch word, then fsuid and fsgid.
const OWNER_SCRATCH: i16 = rec::CTBUF;
const OWNER_UID: i16 = rec::CTBUF + 8;
const OWNER_GID: i16 = rec::CTBUF + 12;
/// `owner`'s results (r0).
const SOCK_NONE: i32 = 0;
const SOCK_NO_FILE: i32 = 1;

/// `net_device.type` of an Ethernet device.
const ARPHRD_ETHER: i32 = 1;
/// Bytes of an Ethernet header and of an address in it.
const ETH_HLEN: i32 = 14;
const ETH_ALEN: i32 = 6;

/// skc_state values that are not full sockets.
const TCP_TIME_WAIT: i32 = 6;
const TCP_NEW_SYN_RECV: i32 = 12;

/// Bytes of an address-type map key: `struct bpf_lpm_trie_key` (u32 prefix length) and the
/// IPv4 address in network order.
pub const ADDRTYPE_KEY_SIZE: u32 = 8;
/// Bytes of an address-type map value: u32 RTN_* type, u32 device ifindex (0: any).
pub const ADDRTYPE_VALUE_SIZE: u32 = 8;

impl Generator<'_> {
    /// `-m limit`: falls through when the bucket had the credit.
    pub(super) fn limit_test(&mut self, m: &LimitMatch, fail: Label) -> Result<(), EmitError> {
        use Reg::*;
        let label = *self.limit_fn.get_or_insert_with(|| self.b.label());
        let b = &mut self.b;
        b.emit(mov64(R1, Src::Imm(m.slot as i32)));
        b.emit(mov32(R2, m.cost as i32));
        b.emit(mov32(R3, m.credit_cap as i32));
        b.emit(mov32(R4, m.credits_per_jiffy as i32));
        b.call_local(label);
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), fail);
        Ok(())
    }

    /// The `limit` subprogram, if some rule calls it.
    pub(super) fn limit_subprogram(&mut self) -> Result<(), EmitError> {
        use Reg::*;
        let Some(label) = self.limit_fn else {
            return Ok(());
        };
        let b = &mut self.b;
        b.bind(label)?;
        b.symbol("limit");
        let no = b.label();
        let matched = b.label();
        // r7 = cost, r8 = cap, r9 = credits per jiffy (callee-saved: they survive the calls)
        b.emit(mov64(R7, Src::Reg(R2)));
        b.emit(mov64(R8, Src::Reg(R3)));
        b.emit(mov64(R9, Src::Reg(R4)));
        b.emit(stx(Size::W, R10, LIMIT_KEY, R1));
        b.ld_map(R1, MapRef::Limits);
        b.emit(mov64(R2, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(LIMIT_KEY))));
        b.call_helper(HELPER_MAP_LOOKUP_ELEM);
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), no);
        b.emit(mov64(R6, Src::Reg(R0)));
        b.call_helper(HELPER_JIFFIES64);
        b.emit(mov64(R5, Src::Reg(R0)));
        for _ in 0..LIMIT_TRIES {
            let slow = b.label();
            let capped = b.label();
            let short = b.label();
            // r1 = the word: credit << 32 | prev
            b.emit(ldx(Size::DW, R1, R6, 0));
            // w2 = now - prev, w3 = credit
            b.emit(alu32(AluOp::Mov, R2, Src::Reg(R5)));
            b.emit(alu32(AluOp::Sub, R2, Src::Reg(R1)));
            b.emit(mov64(R3, Src::Reg(R1)));
            b.emit(alu64(AluOp::Rsh, R3, Src::Imm(32)));
            // fast path: no credit and nothing to add
            b.jmp32(JmpOp::Jne, R2, Src::Imm(0), slow);
            b.jmp32(JmpOp::Jlt, R3, Src::Reg(R7), no);
            b.bind(slow)?;
            b.emit(alu32(AluOp::Mul, R2, Src::Reg(R9)));
            b.emit(alu32(AluOp::Add, R3, Src::Reg(R2)));
            b.jmp32(JmpOp::Jle, R3, Src::Reg(R8), capped);
            b.emit(mov64(R3, Src::Reg(R8)));
            b.bind(capped)?;
            b.emit(mov64(R4, Src::Imm(0)));
            b.jmp32(JmpOp::Jlt, R3, Src::Reg(R7), short);
            b.emit(alu32(AluOp::Sub, R3, Src::Reg(R7)));
            b.emit(mov64(R4, Src::Imm(1)));
            b.bind(short)?;
            // the new word: credit << 32 | (u32)now
            b.emit(alu64(AluOp::Lsh, R3, Src::Imm(32)));
            b.emit(alu32(AluOp::Mov, R2, Src::Reg(R5)));
            b.emit(alu64(AluOp::Or, R3, Src::Reg(R2)));
            b.emit(mov64(R0, Src::Reg(R1)));
            b.emit(Insn::Atomic {
                size: Size::DW,
                op: AtomicOp::CmpXchg,
                dst: R6,
                src: R3,
                off: 0,
            });
            b.jmp64(JmpOp::Jeq, R0, Src::Reg(R1), matched);
        }
        b.bind(no)?;
        b.emit(mov64(R0, Src::Imm(0)));
        b.emit(Insn::Exit);
        b.bind(matched)?;
        b.emit(mov64(R0, Src::Reg(R4)));
        b.emit(Insn::Exit);
        Ok(())
    }

    /// `-m addrtype`, source then destination as `addrtype_mt_v1`; falls through on match.
    pub(super) fn addrtype_test(
        &mut self,
        m: &AddrtypeMatch,
        fail: Label,
    ) -> Result<(), EmitError> {
        for (mask, field, invert) in [
            (m.src, rec::SADDR, m.inv_src),
            (m.dst, rec::DADDR, m.inv_dst),
        ] {
            if mask != 0 {
                self.addr_type(field, m.dev)?;
                let b = &mut self.b;
                // r1 = 1 << type (types above 15 are in no mask)
                b.emit(mov64(Reg::R1, Src::Imm(1)));
                b.emit(alu64(AluOp::Lsh, Reg::R1, Src::Reg(Reg::R0)));
                b.emit(alu64(AluOp::And, Reg::R1, Src::Imm(i32::from(mask))));
                let op = if invert { JmpOp::Jne } else { JmpOp::Jeq };
                b.jmp64(op, Reg::R1, Src::Imm(0), fail);
            }
        }
        Ok(())
    }

    /// r0 = `__inet_dev_addr_type(net, dev, addr)` for the address at `field`, through the
    /// namespace's address-type map. Uses r1-r5.
    fn addr_type(&mut self, field: i16, dev: AddrtypeDev) -> Result<(), EmitError> {
        use Reg::*;
        let l = *self.layout;
        let b = &mut self.b;
        let done = b.label();
        b.emit(st(Size::W, R6, rec::CTBUF, 32));
        copy_addr(b, R1, field);
        b.emit(stx(Size::W, R6, rec::CTBUF + 4, R1));
        b.ld_map(R1, MapRef::AddrTypes);
        b.emit(mov64(R2, Src::Reg(R6)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(rec::CTBUF))));
        b.call_helper(HELPER_MAP_LOOKUP_ELEM);
        let found = b.label();
        b.jmp64(JmpOp::Jne, R0, Src::Imm(0), found);
        b.emit(mov64(R0, Src::Imm(i32::from(ir::RTN_UNICAST))));
        b.ja(done);
        b.bind(found)?;
        b.emit(ldx(Size::W, R2, R0, 4));
        b.emit(ldx(Size::W, R0, R0, 0));
        let hook_dev = match dev {
            AddrtypeDev::Any => None,
            AddrtypeDev::In => Some(l.hook_state_in),
            AddrtypeDev::Out => Some(l.hook_state_out),
        };
        if let Some(at) = hook_dev {
            // a route of another device than the hook's is UNICAST; no device, no check
            b.jmp64(JmpOp::Jeq, R2, Src::Imm(0), done);
            b.emit(ldx(Size::DW, R1, R6, rec::CTX));
            b.emit(ldx(Size::DW, R1, R1, off16(l.nf_ctx_state)?));
            b.emit(ldx(Size::DW, R1, R1, off16(at)?));
            b.jmp64(JmpOp::Jeq, R1, Src::Imm(0), done);
            b.emit(ldx(Size::W, R1, R1, off16(l.skb.dev_ifindex)?));
            b.jmp32(JmpOp::Jeq, R1, Src::Reg(R2), done);
            b.emit(mov64(R0, Src::Imm(i32::from(ir::RTN_UNICAST))));
        }
        b.bind(done)?;
        b.emit(alu64(AluOp::And, R0, Src::Imm(0x3f)));
        Ok(())
    }

    /// `-m owner` as `owner_mt`; falls through on match.
    pub(super) fn owner_test(&mut self, m: &OwnerMatch, fail: Label) -> Result<(), EmitError> {
        use Reg::*;
        let label = *self.owner_fn.get_or_insert_with(|| self.b.label());
        let b = &mut self.b;
        b.emit(mov64(R1, Src::Reg(R6)));
        b.call_local(label);
        let sock = b.label();
        let pass = b.label();
        b.jmp64(JmpOp::Jne, R0, Src::Imm(SOCK_NONE), sock);
        // no (full) socket of this namespace: every test must be inverted
        b.ja(if m.tests ^ m.invert != 0 { fail } else { pass });
        b.bind(sock)?;
        self.owner_socket(m, fail, pass)
    }

    /// `-m mac --mac-source` as `mac_mt`; falls through on match. Only an Ethernet device's
    /// packet whose MAC header lies whole before `skb->data` is compared; any other never
    /// matches, `!` or not. The result is `equal ^ invert` read as a bool, so an `invert`
    /// other than 0 and 1 matches whatever the address.
    pub(super) fn mac_test(
        &mut self,
        src: [u8; 6],
        invert: u32,
        fail: Label,
    ) -> Result<(), EmitError> {
        use Reg::*;
        let l = *self.layout;
        let s = l.skb;
        let b = &mut self.b;
        let differ = b.label();
        let pass = b.label();
        b.emit(ldx(Size::DW, R2, R6, rec::CTX));
        b.emit(ldx(Size::DW, R2, R2, off16(l.nf_ctx_skb)?));
        // skb->dev && skb->dev->type == ARPHRD_ETHER
        b.emit(ldx(Size::DW, R1, R2, off16(s.dev)?));
        b.jmp64(JmpOp::Jeq, R1, Src::Imm(0), fail);
        b.emit(ldx(Size::H, R1, R1, off16(s.dev_type)?));
        b.jmp32(JmpOp::Jne, R1, Src::Imm(ARPHRD_ETHER), fail);
        // skb_mac_header(skb) + ETH_HLEN <= skb->data, as offsets from skb->head (an unset
        // mac_header, 0xffff, lies past the data)
        b.emit(ldx(Size::H, R3, R2, off16(s.mac_header)?));
        b.emit(ldx(Size::DW, R4, R2, off16(s.head)?));
        b.emit(ldx(Size::DW, R1, R2, off16(l.skb_data)?));
        b.emit(alu64(AluOp::Sub, R1, Src::Reg(R4)));
        b.emit(mov64(R5, Src::Reg(R3)));
        b.emit(alu64(AluOp::Add, R5, Src::Imm(ETH_HLEN)));
        b.jmp64(JmpOp::Jgt, R5, Src::Reg(R1), fail);
        // eth_hdr(skb)->h_source, the 6 bytes after the destination
        b.emit(alu64(AluOp::Add, R3, Src::Reg(R4)));
        b.emit(alu64(AluOp::Add, R3, Src::Imm(ETH_ALEN)));
        b.emit(mov64(R1, Src::Reg(R6)));
        b.emit(alu64(AluOp::Add, R1, Src::Imm(i32::from(rec::CTBUF))));
        b.emit(mov64(R2, Src::Imm(ETH_ALEN)));
        b.call_helper(HELPER_PROBE_READ_KERNEL);
        b.jmp64(JmpOp::Jne, R0, Src::Imm(0), fail);
        let lo = u32::from_ne_bytes([src[0], src[1], src[2], src[3]]);
        let hi = u16::from_ne_bytes([src[4], src[5]]);
        b.emit(ldx(Size::W, R1, R6, rec::CTBUF));
        b.jmp32(JmpOp::Jne, R1, Src::Imm(lo as i32), differ);
        b.emit(ldx(Size::H, R1, R6, rec::CTBUF + 4));
        b.jmp32(JmpOp::Jne, R1, Src::Imm(i32::from(hi)), differ);
        // equal: true ^ invert
        b.ja(if invert == 1 { fail } else { pass });
        b.bind(differ)?;
        // differ: false ^ invert
        if invert == 0 {
            b.ja(fail);
        }
        b.bind(pass)?;
        Ok(())
    }

    /// The part of `owner_mt` after a socket was found (r0 = SOCK_NO_FILE or SOCK_FILE).
    fn owner_socket(&mut self, m: &OwnerMatch, fail: Label, pass: Label) -> Result<(), EmitError> {
        use Reg::*;
        let b = &mut self.b;
        if m.tests & m.invert & ir::OWNER_SOCKET != 0 {
            b.ja(fail);
            b.bind(pass)?;
            return Ok(());
        }
        let has_file = b.label();
        b.jmp64(JmpOp::Jne, R0, Src::Imm(SOCK_NO_FILE), has_file);
        if (m.tests ^ m.invert) & (ir::OWNER_UID | ir::OWNER_GID) != 0 {
            b.ja(fail);
        } else {
            b.ja(pass);
        }
        b.bind(has_file)?;
        for (bit, at, (lo, hi)) in [
            (ir::OWNER_UID, OWNER_UID, m.uid),
            (ir::OWNER_GID, OWNER_GID, m.gid),
        ] {
            if m.tests & bit == 0 {
                continue;
            }
            let inverted = m.invert & bit != 0;
            // inside the range: fail when inverted; outside: fail unless inverted
            let outside = if inverted { b.label() } else { fail };
            b.emit(ldx(Size::W, R1, R6, at));
            b.jmp32(JmpOp::Jlt, R1, Src::Imm(lo as i32), outside);
            b.jmp32(JmpOp::Jgt, R1, Src::Imm(hi as i32), outside);
            if inverted {
                b.ja(fail);
                b.bind(outside)?;
            }
        }
        b.bind(pass)?;
        Ok(())
    }

    /// The `owner` subprogram, if some rule calls it: r0 = SOCK_NONE, SOCK_NO_FILE, or
    /// SOCK_FILE with fsuid and fsgid in the record.
    pub(super) fn owner_subprogram(&mut self) -> Result<(), EmitError> {
        use Reg::*;
        let Some(label) = self.owner_fn else {
            return Ok(());
        };
        let l = *self.layout;
        let s = l.skb;
        let b = &mut self.b;
        b.bind(label)?;
        b.symbol("owner");
        let none = b.label();
        let no_file = b.label();
        // r9 = record, r6 = ctx
        b.emit(mov64(R9, Src::Reg(R1)));
        b.emit(ldx(Size::DW, R6, R9, rec::CTX));
        b.emit(ldx(Size::DW, R7, R6, off16(l.nf_ctx_skb)?));
        // skb_to_full_sk: a request socket stands for its listener; a timewait one is none
        b.emit(ldx(Size::DW, R3, R7, off16(s.sk)?));
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), none);
        read(b, R3, s.sk_state, 1);
        b.emit(ldx(Size::B, R1, R9, OWNER_SCRATCH));
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(TCP_TIME_WAIT), none);
        let full = b.label();
        b.emit(ldx(Size::DW, R8, R7, off16(s.sk)?));
        b.jmp64(JmpOp::Jeq, R8, Src::Imm(0), none);
        b.jmp32(JmpOp::Jne, R1, Src::Imm(TCP_NEW_SYN_RECV), full);
        read(b, R8, s.rsk_listener, 8);
        b.emit(ldx(Size::DW, R8, R9, OWNER_SCRATCH));
        b.jmp64(JmpOp::Jeq, R8, Src::Imm(0), none);
        b.bind(full)?;
        // r8 = the full socket: of the hook's namespace
        b.emit(ldx(Size::DW, R3, R6, off16(l.nf_ctx_state)?));
        read(b, R3, l.hook_state_net, 8);
        b.emit(ldx(Size::DW, R7, R9, OWNER_SCRATCH));
        read(b, R8, s.sk_net, 8);
        b.emit(ldx(Size::DW, R1, R9, OWNER_SCRATCH));
        b.jmp64(JmpOp::Jne, R1, Src::Reg(R7), none);
        // sk_socket, then its file (none: a socket without a file), then the file's creds
        read(b, R8, s.sk_socket, 8);
        b.emit(ldx(Size::DW, R3, R9, OWNER_SCRATCH));
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), none);
        read(b, R3, s.socket_file, 8);
        b.emit(ldx(Size::DW, R3, R9, OWNER_SCRATCH));
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), no_file);
        read(b, R3, s.file_cred, 8);
        b.emit(ldx(Size::DW, R8, R9, OWNER_SCRATCH));
        b.jmp64(JmpOp::Jeq, R8, Src::Imm(0), no_file);
        b.emit(mov64(R3, Src::Reg(R8)));
        read_to(b, R3, s.cred_fsuid, 4, OWNER_UID);
        b.emit(mov64(R3, Src::Reg(R8)));
        read_to(b, R3, s.cred_fsgid, 4, OWNER_GID);
        b.emit(mov64(R0, Src::Imm(2)));
        b.emit(Insn::Exit);
        b.bind(no_file)?;
        b.emit(mov64(R0, Src::Imm(SOCK_NO_FILE)));
        b.emit(Insn::Exit);
        b.bind(none)?;
        b.emit(mov64(R0, Src::Imm(SOCK_NONE)));
        b.emit(Insn::Exit);
        Ok(())
    }
}

/// `bpf_probe_read_kernel(record + OWNER_SCRATCH, size, ptr + field)` (r9 = record; r1-r5
/// clobbered). The scratch word is zeroed first, so a failed read reads as 0 (NULL).
fn read(b: &mut crate::Builder, ptr: Reg, field: u32, size: i32) {
    b.emit(st(Size::DW, Reg::R9, OWNER_SCRATCH, 0));
    read_to(b, ptr, field, size, OWNER_SCRATCH);
}

fn read_to(b: &mut crate::Builder, ptr: Reg, field: u32, size: i32, at: i16) {
    use Reg::*;
    if ptr != R3 {
        b.emit(mov64(R3, Src::Reg(ptr)));
    }
    b.emit(alu64(AluOp::Add, R3, Src::Imm(field as i32)));
    b.emit(mov64(R1, Src::Reg(R9)));
    b.emit(alu64(AluOp::Add, R1, Src::Imm(i32::from(at))));
    b.emit(mov64(R2, Src::Imm(size)));
    b.call_helper(HELPER_PROBE_READ_KERNEL);
}
