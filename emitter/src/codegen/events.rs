//! Events: how a REJECT or LOG rule hands its packet to the daemon ([`crate::event`]).
//!
//! The rule calls the `event` subprogram with the record base in `r1` and, in `r2`, the
//! kind (bits 0-7), REJECT's `with` or LOG's level (8-15), LOG's flags (16-23) and the rule's
//! counter slot (32-63). `event` reserves a record in [`MapRef::Events`], fills it from the
//! context, the skb and the packet, and submits it; when the ring buffer is full it counts the
//! loss in [`MapRef::EventLoss`] instead. Being a subprogram, it has its own r6-r9 (the
//! caller's are preserved across the call), and the ring-buffer reference never crosses a
//! call boundary. Its frame holds the skb dynptr (16 bytes) and a map key, within the 32
//! bytes `count`'s frame also takes, so an event at the deepest chain fits the stack limit.
//!
//! LOG prefixes are not stored by the rule: a hash map built with the program (key: counter
//! slot, value: the 30-byte prefix padded to 32) holds them, and `event` copies the rule's.

use crate::builder::{MapRef, MapSpec};
use crate::event::{self, off};
use crate::insn::{alu64, ldx, mov64, st, stx, AluOp, AtomicOp, Insn, JmpOp, Reg, Size, Src};
use crate::ir::{Action, Family, Program};
use crate::EmitError;

use super::access::off16;
use super::record::rec;
use super::{
    Generator, HELPER_DYNPTR_READ, HELPER_MAP_LOOKUP_ELEM, HELPER_PROBE_READ_KERNEL,
    KFUNC_DYNPTR_FROM_SKB,
};

const HELPER_RINGBUF_RESERVE: u32 = 131;
const HELPER_RINGBUF_SUBMIT: u32 = 132;
/// `bpf_ringbuf_submit` flag: do not wake the consumer.
const BPF_RB_NO_WAKEUP: i32 = 1;

/// `event`'s frame: the skb dynptr and the loss map key.
const EV_DYN: i16 = -16;
const EV_KEY: i16 = -24;

/// Byte size of a LOG prefix value in the prefix map.
const PREFIX_VALUE: u32 = 32;

/// The prefix map of a program: one entry per LOG rule, None without LOG rules.
pub(super) fn prefix_map(p: &Program) -> Option<MapSpec> {
    let mut map = MapSpec::new(4, PREFIX_VALUE);
    for r in p.chains.values().flat_map(|c| &c.rules) {
        if let Action::Log(l) = r.action {
            let mut v = [0u8; PREFIX_VALUE as usize];
            v[..30].copy_from_slice(&l.prefix);
            map.push(&r.counter.to_ne_bytes(), &v);
        }
    }
    (!map.is_empty()).then_some(map)
}

/// `bpf_probe_read_kernel(r9 + at, size, ptr + field)`: r3 holds `ptr` (clobbered, with r1,
/// r2, r4, r5; r0 = the helper's result).
fn kernel_read(b: &mut crate::Builder, ptr: Reg, field: u32, size: i32, at: usize) {
    use Reg::*;
    b.emit(mov64(R3, Src::Reg(ptr)));
    b.emit(alu64(AluOp::Add, R3, Src::Imm(field as i32)));
    b.emit(mov64(R1, Src::Reg(R9)));
    b.emit(alu64(AluOp::Add, R1, Src::Imm(at as i32)));
    b.emit(mov64(R2, Src::Imm(size)));
    b.call_helper(HELPER_PROBE_READ_KERNEL);
}

/// Jumps to `skip` unless the event being filled is of `kind` (r8's low byte; r1 clobbered).
fn skip_unless_kind(b: &mut crate::Builder, kind: u8, skip: crate::builder::Label) {
    use Reg::*;
    b.emit(mov64(R1, Src::Reg(R8)));
    b.emit(alu64(AluOp::And, R1, Src::Imm(0xff)));
    b.jmp64(JmpOp::Jne, R1, Src::Imm(i32::from(kind)), skip);
}

impl Generator<'_> {
    /// Hand the packet to the daemon as `kind` (r1-r5 clobbered; r6-r9 kept).
    pub(super) fn call_event(&mut self, action: Action, slot: u32) -> Result<(), EmitError> {
        let (kind, arg, flags) = match action {
            Action::Reject(r) => (event::KIND_REJECT, r.with, 0),
            Action::Log(l) => (event::KIND_LOG, l.level, l.flags),
            _ => {
                return Err(EmitError::Internal {
                    what: "event of an action without one",
                })
            }
        };
        let label = match self.event_fn {
            Some(l) => l,
            None => {
                let l = self.b.label();
                self.event_fn = Some(l);
                l
            }
        };
        let packed =
            u64::from(kind) | u64::from(arg) << 8 | u64::from(flags) << 16 | u64::from(slot) << 32;
        self.b.emit(mov64(Reg::R1, Src::Reg(Reg::R6)));
        self.b.emit(Insn::LdImm64 {
            dst: Reg::R2,
            imm: crate::insn::Imm64::Const(packed),
        });
        self.b.call_local(label);
        Ok(())
    }

    /// The `event` subprogram, if some rule calls it.
    pub(super) fn event_subprogram(&mut self) -> Result<(), EmitError> {
        use Reg::*;
        let Some(label) = self.event_fn else {
            return Ok(());
        };
        let l = *self.layout;
        let s = l.skb;
        let hook = self.prog.hook.number() as i32;
        let family = self.prog.family.nfproto();
        let b = &mut self.b;
        b.bind(label)?;
        b.symbol("event");
        // r6 = ctx, r8 = packed arguments
        b.emit(ldx(Size::DW, R6, R1, rec::CTX));
        b.emit(mov64(R8, Src::Reg(R2)));
        // LOG: nothing to hand over while the daemon writes no lines for this namespace
        let gate_open = b.label();
        let closed = b.label();
        skip_unless_kind(b, event::KIND_LOG, gate_open);
        b.emit(st(Size::W, R10, EV_KEY, event::LOG_GATE as i32));
        b.ld_map(R1, MapRef::EventLoss);
        b.emit(mov64(R2, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(EV_KEY))));
        b.call_helper(HELPER_MAP_LOOKUP_ELEM);
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), closed);
        b.emit(ldx(Size::DW, R1, R0, 0));
        b.jmp64(JmpOp::Jne, R1, Src::Imm(0), gate_open);
        b.bind(closed)?;
        b.emit(mov64(R0, Src::Imm(0)));
        b.emit(Insn::Exit);
        b.bind(gate_open)?;
        b.ld_map(R1, MapRef::Events);
        b.emit(mov64(R2, Src::Imm(event::RECORD_SIZE as i32)));
        b.emit(mov64(R3, Src::Imm(0)));
        b.call_helper(HELPER_RINGBUF_RESERVE);
        let lost = b.label();
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), lost);
        b.emit(mov64(R9, Src::Reg(R0)));
        // Reserved memory is not zeroed: clear the header, the prefix and the MAC bytes.
        for at in (0..off::PACKET as i16).step_by(8) {
            b.emit(st(Size::DW, R9, at, 0));
        }
        for (shift, at) in [(0, off::KIND), (8, off::ARG), (16, off::LOG_FLAGS)] {
            b.emit(mov64(R1, Src::Reg(R8)));
            if shift > 0 {
                b.emit(alu64(AluOp::Rsh, R1, Src::Imm(shift)));
            }
            b.emit(stx(Size::B, R9, at as i16, R1));
        }
        b.emit(st(Size::B, R9, off::HOOK as i16, hook));
        b.emit(st(Size::B, R9, off::PF as i16, i32::from(family)));
        b.emit(mov64(R1, Src::Reg(R8)));
        b.emit(alu64(AluOp::Rsh, R1, Src::Imm(32)));
        b.emit(stx(Size::W, R9, off::RULE as i16, R1));
        // r7 = skb
        b.emit(ldx(Size::DW, R7, R6, off16(l.nf_ctx_skb)?));
        for (field, at) in [(l.skb_len, off::SKB_LEN), (s.mark, off::MARK)] {
            b.emit(ldx(Size::W, R1, R7, off16(field)?));
            b.emit(stx(Size::W, R9, at as i16, R1));
        }
        // checksum state: ip_summed (2 bits) | csum_valid << 2
        b.emit(ldx(Size::B, R1, R7, off16(s.ip_summed.0)?));
        b.emit(alu64(AluOp::Rsh, R1, Src::Imm(s.ip_summed.1 as i32)));
        b.emit(alu64(AluOp::And, R1, Src::Imm(3)));
        b.emit(ldx(Size::B, R2, R7, off16(s.csum_valid.0)?));
        b.emit(alu64(AluOp::Rsh, R2, Src::Imm(s.csum_valid.1 as i32)));
        b.emit(alu64(AluOp::And, R2, Src::Imm(1)));
        b.emit(alu64(AluOp::Lsh, R2, Src::Imm(2)));
        b.emit(alu64(AluOp::Or, R1, Src::Reg(R2)));
        b.emit(stx(Size::B, R9, off::CSUM as i16, R1));
        // skb->dev: type and hard_header_len (a NULL device reads as zeros)
        b.emit(ldx(Size::DW, R1, R7, off16(s.dev)?));
        for (field, at) in [
            (s.dev_type, off::DEV_TYPE),
            (s.dev_hard_header_len, off::HARD_HEADER_LEN),
        ] {
            b.emit(ldx(Size::H, R2, R1, off16(field)?));
            b.emit(stx(Size::H, R9, at as i16, R2));
        }
        // devices of the hook state: ifindex and name
        b.emit(ldx(Size::DW, R1, R6, off16(l.nf_ctx_state)?));
        for (dev_off, ifindex, name) in [
            (l.hook_state_in, off::IN_IFINDEX, off::IN_NAME),
            (l.hook_state_out, off::OUT_IFINDEX, off::OUT_NAME),
        ] {
            let none = b.label();
            b.emit(ldx(Size::DW, R2, R1, off16(dev_off)?));
            b.jmp64(JmpOp::Jeq, R2, Src::Imm(0), none);
            b.emit(ldx(Size::W, R3, R2, off16(s.dev_ifindex)?));
            b.emit(stx(Size::W, R9, ifindex as i16, R3));
            for k in 0..4u32 {
                b.emit(ldx(Size::W, R3, R2, off16(l.net_device_name + 4 * k)?));
                b.emit(stx(Size::W, R9, (name as u32 + 4 * k) as i16, R3));
            }
            b.bind(none)?;
        }
        // the route's flags: _skb_refdst without its noref bit, read as a struct rtable
        // (IPv4) or rt6_info (IPv6)
        let rt_flags = match self.prog.family {
            Family::Ipv4 => Some(s.rt_flags),
            Family::Ipv6 => s.rt6_flags,
        };
        if let Some(rt_flags) = rt_flags {
            let no_route = b.label();
            b.emit(ldx(Size::DW, R3, R7, off16(s.refdst)?));
            b.emit(alu64(AluOp::And, R3, Src::Imm(-2)));
            b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), no_route);
            b.emit(alu64(AluOp::Add, R3, Src::Imm(rt_flags as i32)));
            b.emit(mov64(R1, Src::Reg(R9)));
            b.emit(alu64(AluOp::Add, R1, Src::Imm(off::RT_FLAGS as i32)));
            b.emit(mov64(R2, Src::Imm(4)));
            b.call_helper(HELPER_PROBE_READ_KERNEL);
            b.bind(no_route)?;
        }
        // MAC header, only with an input device (what LOG prints): its bytes from
        // skb_mac_header to the network header (skb_mac_header_len), at most MAC_CAP, when
        // the MAC header was set and is not empty
        let no_mac = b.label();
        b.emit(ldx(Size::DW, R1, R6, off16(l.nf_ctx_state)?));
        b.emit(ldx(Size::DW, R2, R1, off16(l.hook_state_in)?));
        b.jmp64(JmpOp::Jeq, R2, Src::Imm(0), no_mac);
        b.emit(ldx(Size::H, R3, R7, off16(s.mac_header)?));
        b.jmp32(JmpOp::Jeq, R3, Src::Imm(0xffff), no_mac);
        b.emit(ldx(Size::H, R2, R7, off16(s.network_header)?));
        b.jmp32(JmpOp::Jle, R2, Src::Reg(R3), no_mac);
        b.emit(alu64(AluOp::Sub, R2, Src::Reg(R3)));
        let mac_len_ok = b.label();
        b.jmp32(JmpOp::Jle, R2, Src::Imm(event::MAC_CAP as i32), mac_len_ok);
        b.emit(mov64(R2, Src::Imm(event::MAC_CAP as i32)));
        b.bind(mac_len_ok)?;
        b.emit(stx(Size::B, R9, off::MAC_LEN as i16, R2));
        b.emit(ldx(Size::DW, R1, R7, off16(s.head)?));
        b.emit(alu64(AluOp::Add, R1, Src::Reg(R3)));
        b.emit(mov64(R3, Src::Reg(R1)));
        b.emit(mov64(R1, Src::Reg(R9)));
        b.emit(alu64(AluOp::Add, R1, Src::Imm(off::MAC as i32)));
        b.call_helper(HELPER_PROBE_READ_KERNEL);
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), no_mac);
        b.emit(st(Size::B, R9, off::MAC_LEN as i16, 0));
        b.bind(no_mac)?;
        // LOG --log-uid: the socket file's fsuid/fsgid, when the skb has a full socket with a
        // file (nf_log_dump_sk_uid_gid), read along the pointer chain with kernel reads
        let no_uid = b.label();
        b.emit(mov64(R1, Src::Reg(R8)));
        b.emit(alu64(AluOp::Rsh, R1, Src::Imm(16)));
        b.emit(alu64(AluOp::And, R1, Src::Imm(i32::from(event::LOG_UID))));
        b.jmp64(JmpOp::Jeq, R1, Src::Imm(0), no_uid);
        b.emit(ldx(Size::DW, R3, R7, off16(s.sk)?));
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), no_uid);
        // skc_state: TCP_TIME_WAIT (6) and TCP_NEW_SYN_RECV (12) are not full sockets
        kernel_read(b, R3, s.sk_state, 1, off::UID);
        b.emit(ldx(Size::B, R1, R9, off::UID as i16));
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(6), no_uid);
        b.jmp32(JmpOp::Jeq, R1, Src::Imm(12), no_uid);
        // every reload of skb->sk is a possibly-NULL RCU pointer to the verifier: check it
        b.emit(ldx(Size::DW, R3, R7, off16(s.sk)?));
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), no_uid);
        for field in [s.sk_socket, s.socket_file, s.file_cred] {
            kernel_read(b, R3, field, 8, off::UID);
            b.emit(ldx(Size::DW, R3, R9, off::UID as i16));
            b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), no_uid);
        }
        b.emit(st(Size::DW, R9, off::UID as i16, 0));
        kernel_read(b, R3, s.cred_fsuid, 4, off::UID);
        b.jmp64(JmpOp::Jne, R0, Src::Imm(0), no_uid);
        b.emit(ldx(Size::DW, R3, R7, off16(s.sk)?));
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), no_uid);
        for field in [s.sk_socket, s.socket_file, s.file_cred] {
            kernel_read(b, R3, field, 8, off::GID);
            b.emit(ldx(Size::DW, R3, R9, off::GID as i16));
        }
        kernel_read(b, R3, s.cred_fsgid, 4, off::GID);
        b.emit(st(Size::W, R9, off::GID as i16 + 4, 0));
        b.emit(st(Size::B, R9, off::SOCK as i16, 1));
        b.bind(no_uid)?;
        // an abandoned chain leaves scratch in the uid/gid fields: clear them unless valid
        let uid_done = b.label();
        b.emit(ldx(Size::B, R1, R9, off::SOCK as i16));
        b.jmp32(JmpOp::Jne, R1, Src::Imm(0), uid_done);
        b.emit(st(Size::DW, R9, off::UID as i16, 0));
        b.bind(uid_done)?;
        // REJECT: the IP options the stack compiled into the control block, which icmp_send
        // echoes (none for a raw IP_HDRINCL sender's, whatever its header carries)
        let no_ipcb = b.label();
        skip_unless_kind(b, event::KIND_REJECT, no_ipcb);
        kernel_read(b, R7, s.ipcb_optlen, 1, off::IPCB_OPTLEN);
        b.bind(no_ipcb)?;
        // bit 2: the packet's socket is a kernel socket (sk_kern_sock; read into the first
        // packet byte, which the packet copy overwrites later)
        let no_sock = b.label();
        b.emit(ldx(Size::DW, R3, R7, off16(s.sk)?));
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), no_sock);
        // REJECT: the socket's bound device (routes the kernel's reset), where LOG has its
        // prefix
        let no_bound = b.label();
        skip_unless_kind(b, event::KIND_REJECT, no_bound);
        kernel_read(b, R3, s.sk_bound_dev_if, 4, off::PREFIX);
        b.emit(ldx(Size::DW, R3, R7, off16(s.sk)?));
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), no_sock);
        b.bind(no_bound)?;
        kernel_read(b, R3, s.sk_kern_sock.0, 1, off::PACKET);
        b.jmp64(JmpOp::Jne, R0, Src::Imm(0), no_sock);
        b.emit(ldx(Size::B, R1, R9, off::PACKET as i16));
        b.emit(alu64(AluOp::Rsh, R1, Src::Imm(s.sk_kern_sock.1 as i32)));
        b.emit(alu64(AluOp::And, R1, Src::Imm(1)));
        b.emit(alu64(AluOp::Lsh, R1, Src::Imm(2)));
        b.emit(ldx(Size::B, R2, R9, off::SOCK as i16));
        b.emit(alu64(AluOp::Or, R1, Src::Reg(R2)));
        b.emit(stx(Size::B, R9, off::SOCK as i16, R1));
        b.bind(no_sock)?;
        // the packet's connection: bit 1 = an entry, bits 4-6 = its ctinfo (a REJECT reset
        // carries it, as nf_ct_attach does)
        let no_ct = b.label();
        b.emit(ldx(Size::DW, R2, R7, off16(s.nfct)?));
        b.emit(mov64(R3, Src::Reg(R2)));
        b.emit(alu64(AluOp::And, R3, Src::Imm(-8)));
        b.jmp64(JmpOp::Jeq, R3, Src::Imm(0), no_ct);
        b.emit(alu64(AluOp::And, R2, Src::Imm(7)));
        b.emit(alu64(AluOp::Lsh, R2, Src::Imm(4)));
        b.emit(alu64(AluOp::Or, R2, Src::Imm(2)));
        b.emit(ldx(Size::B, R1, R9, off::SOCK as i16));
        b.emit(alu64(AluOp::Or, R1, Src::Reg(R2)));
        b.emit(stx(Size::B, R9, off::SOCK as i16, R1));
        // REJECT: the entry's tuples, timeout and status, which the daemon hands to the reply
        // (the kernel's reply carries the entry itself: nf_ct_attach)
        if let Some((start, len)) = l.conn.as_ref().and_then(crate::ConnLayout::copy_window) {
            skip_unless_kind(b, event::KIND_REJECT, no_ct);
            b.emit(ldx(Size::DW, R3, R7, off16(s.nfct)?));
            b.emit(alu64(AluOp::And, R3, Src::Imm(-8)));
            kernel_read(b, R3, start, len as i32, off::CT);
        }
        b.bind(no_ct)?;
        // LOG: the rule's prefix
        let no_prefix = b.label();
        skip_unless_kind(b, event::KIND_LOG, no_prefix);
        if let Some(prefixes) = self.prefix_map {
            b.emit(mov64(R1, Src::Reg(R8)));
            b.emit(alu64(AluOp::Rsh, R1, Src::Imm(32)));
            b.emit(stx(Size::W, R10, EV_KEY, R1));
            b.ld_map(R1, MapRef::Other(prefixes));
            b.emit(mov64(R2, Src::Reg(R10)));
            b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(EV_KEY))));
            b.call_helper(HELPER_MAP_LOOKUP_ELEM);
            b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), no_prefix);
            for k in 0..(PREFIX_VALUE as i16 / 8) {
                b.emit(ldx(Size::DW, R1, R0, 8 * k));
                b.emit(stx(Size::DW, R9, off::PREFIX as i16 + 8 * k, R1));
            }
        }
        b.bind(no_prefix)?;
        // the packet: min(skb->len, PACKET_CAP) bytes through an skb dynptr
        b.emit(mov64(R1, Src::Reg(R7)));
        b.emit(mov64(R2, Src::Imm(0)));
        b.emit(mov64(R3, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R3, Src::Imm(i32::from(EV_DYN))));
        b.call_kfunc(KFUNC_DYNPTR_FROM_SKB);
        b.emit(ldx(Size::W, R2, R7, off16(l.skb_len)?));
        let cap_ok = b.label();
        b.jmp32(JmpOp::Jle, R2, Src::Imm(event::PACKET_CAP as i32), cap_ok);
        b.emit(mov64(R2, Src::Imm(event::PACKET_CAP as i32)));
        b.bind(cap_ok)?;
        b.emit(stx(Size::W, R9, off::CAP_LEN as i16, R2));
        b.emit(mov64(R1, Src::Reg(R9)));
        b.emit(alu64(AluOp::Add, R1, Src::Imm(off::PACKET as i32)));
        b.emit(mov64(R3, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R3, Src::Imm(i32::from(EV_DYN))));
        b.emit(mov64(R4, Src::Imm(0)));
        b.emit(mov64(R5, Src::Imm(0)));
        b.call_helper(HELPER_DYNPTR_READ);
        let read_ok = b.label();
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), read_ok);
        b.emit(st(Size::W, R9, off::CAP_LEN as i16, 0));
        b.bind(read_ok)?;
        // REJECT wakes the daemon at once (the sender waits for the reply); LOG records do
        // not wake it (each wakeup costs microseconds of IPIs and context switches): the
        // daemon collects them at its next poll, within its poll period
        b.emit(mov64(R1, Src::Reg(R8)));
        b.emit(alu64(AluOp::And, R1, Src::Imm(0xff)));
        b.emit(mov64(R2, Src::Imm(0)));
        let wake = b.label();
        b.jmp64(JmpOp::Jne, R1, Src::Imm(i32::from(event::KIND_LOG)), wake);
        b.emit(mov64(R2, Src::Imm(BPF_RB_NO_WAKEUP)));
        b.bind(wake)?;
        b.emit(mov64(R1, Src::Reg(R9)));
        b.call_helper(HELPER_RINGBUF_SUBMIT);
        b.emit(mov64(R0, Src::Imm(0)));
        b.emit(Insn::Exit);
        // no room: count the loss (slot = kind - 1)
        b.bind(lost)?;
        b.emit(mov64(R1, Src::Reg(R8)));
        b.emit(alu64(AluOp::And, R1, Src::Imm(0xff)));
        b.emit(alu64(AluOp::Sub, R1, Src::Imm(1)));
        b.emit(stx(Size::W, R10, EV_KEY, R1));
        b.ld_map(R1, MapRef::EventLoss);
        b.emit(mov64(R2, Src::Reg(R10)));
        b.emit(alu64(AluOp::Add, R2, Src::Imm(i32::from(EV_KEY))));
        b.call_helper(HELPER_MAP_LOOKUP_ELEM);
        let out = b.label();
        b.jmp64(JmpOp::Jeq, R0, Src::Imm(0), out);
        b.emit(mov64(R1, Src::Imm(1)));
        b.emit(Insn::Atomic {
            size: Size::DW,
            op: AtomicOp::Add { fetch: false },
            dst: R0,
            src: R1,
            off: 0,
        });
        b.bind(out)?;
        b.emit(mov64(R0, Src::Imm(0)));
        b.emit(Insn::Exit);
        Ok(())
    }
}
