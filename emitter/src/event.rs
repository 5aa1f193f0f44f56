//! The record a program hands to the daemon when a rule's target must act outside the
//! program: REJECT (the program drops, the daemon sends the ICMP error or the TCP reset) and
//! LOG (the program continues, the daemon writes the kernel-format line).
//!
//! A BPF_NETFILTER program can only return DROP or ACCEPT, so such a rule reserves one
//! fixed-size record in the namespace's event ring buffer ([`crate::MapRef::Events`]), fills
//! it from the hook state, the skb and the first [`PACKET_CAP`] bytes of the packet, and
//! submits it. A full ring buffer loses the event and counts the loss in
//! [`crate::MapRef::EventLoss`] (slot [`LOSS_REJECT`] or [`LOSS_LOG`]); nothing else waits or
//! grows.
//!
//! Layout (little-endian on every kernel bpfilter runs on, natural alignment, fixed offsets
//! below so that the generator and the daemon agree without a shared struct):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | [`Event::kind`] |
//! | 1 | 1 | hook number |
//! | 2 | 1 | protocol family (NFPROTO_IPV4 = 2, NFPROTO_IPV6 = 10) |
//! | 3 | 1 | REJECT: `ipt_reject_info.with` (IPv6: `ip6t_reject_info.with`); LOG: level |
//! | 4 | 1 | LOG: `logflags` |
//! | 5 | 1 | skb checksum state: bits 0-1 `ip_summed`, bit 2 `csum_valid` |
//! | 6 | 1 | bytes of MAC header captured: `skb_mac_header_len`, at most 32 (0: none) |
//! | 7 | 1 | bit 0: `uid`/`gid` are valid (a full socket with a file); bit 1: the packet has a conntrack entry, whose ctinfo is in bits 4-6; bit 2: the packet's socket is a kernel socket (`sk_kern_sock`) |
//! | 8 | 4 | counter slot of the rule |
//! | 12 | 4 | `skb->len` (the IP datagram length) |
//! | 16 | 4 | bytes of packet captured (`min(skb->len, PACKET_CAP)`) |
//! | 20 | 4 | `skb->mark` |
//! | 24 | 4 | `state->in->ifindex` (0: no input device) |
//! | 28 | 4 | `state->out->ifindex` (0: no output device) |
//! | 32 | 2 | `skb->dev->type` (ARPHRD_*) |
//! | 34 | 2 | `skb->dev->hard_header_len` |
//! | 36 | 4 | `rt_flags` of the skb's route (RTCF_*; 0 without a route) |
//! | 40 | 4 | socket file's `fsuid` |
//! | 44 | 4 | socket file's `fsgid` |
//! | 48 | 16 | `state->in->name` (zeros without one) |
//! | 64 | 16 | `state->out->name` |
//! | 80 | 32 | LOG: prefix (`ipt_log_info.prefix`, NUL-terminated, 30 bytes used); REJECT: u32 `skb->sk->sk_bound_dev_if` (0: none) at 80, u8 `IPCB(skb)->opt.optlen` at 84 |
//! | 112 | 32 | MAC header bytes (`skb_mac_header`, [`Event::mac`] of them) |
//! | 144 | 128 | REJECT of a packet with a conntrack entry: bytes `[start, start + len)` of its `struct nf_conn`, the window [`crate::ConnLayout::copy_window`] gives (the tuples, timeout and status; zeros otherwise) |
//! | 272 | 1500 | the packet from its network header (`PACKET_CAP`) |

/// Event kind: a REJECT rule matched (the packet was dropped).
pub const KIND_REJECT: u8 = 1;
/// Event kind: a LOG rule matched (the packet goes on).
pub const KIND_LOG: u8 = 2;

/// XT_LOG_UID: the LOG flag that asks for the socket's owner.
pub const LOG_UID: u8 = 0x08;

/// Bytes of the packet copied into a record: a whole datagram of the usual 1500-byte MTU, so
/// that REJECT can verify the transport checksum over all of it as `nf_send_unreach` and
/// `nf_send_reset` do for CHECKSUM_NONE packets (a bad one gets no reply). It covers the 548
/// bytes an ICMP error quotes at most and every header LOG prints.
pub const PACKET_CAP: usize = 1500;
/// Bytes of MAC header copied at most.
pub const MAC_CAP: usize = 32;
/// Bytes of the rejected packet's `struct nf_conn` a REJECT record carries at most.
pub const CT_COPY: usize = 128;

/// Size of one record.
pub const RECORD_SIZE: usize = off::PACKET + PACKET_CAP;

/// Slot of the loss map counting REJECT events the ring buffer had no room for.
pub const LOSS_REJECT: u32 = 0;
/// Slot of the loss map counting LOG events the ring buffer had no room for.
pub const LOSS_LOG: u32 = 1;
/// Slot of the loss map the daemon sets non-zero while it writes LOG lines for the table's
/// namespace (the kernel logs from a non-initial namespace only with `nf_log_all_netns`):
/// while it is zero, a LOG rule hands nothing over, as the kernel's LOG writes nothing.
pub const LOG_GATE: u32 = 2;
/// Slots of the loss map.
pub const LOSS_SLOTS: u32 = 3;

/// Field offsets (see the module table).
pub mod off {
    /// u8 kind
    pub const KIND: usize = 0;
    /// u8 hook
    pub const HOOK: usize = 1;
    /// u8 family
    pub const PF: usize = 2;
    /// u8 reject-with / log level
    pub const ARG: usize = 3;
    /// u8 log flags
    pub const LOG_FLAGS: usize = 4;
    /// u8 checksum state
    pub const CSUM: usize = 5;
    /// u8 MAC bytes captured
    pub const MAC_LEN: usize = 6;
    /// u8 socket flags
    pub const SOCK: usize = 7;
    /// u32 counter slot
    pub const RULE: usize = 8;
    /// u32 skb->len
    pub const SKB_LEN: usize = 12;
    /// u32 packet bytes captured
    pub const CAP_LEN: usize = 16;
    /// u32 skb->mark
    pub const MARK: usize = 20;
    /// u32 input ifindex
    pub const IN_IFINDEX: usize = 24;
    /// u32 output ifindex
    pub const OUT_IFINDEX: usize = 28;
    /// u16 skb->dev->type
    pub const DEV_TYPE: usize = 32;
    /// u16 skb->dev->hard_header_len
    pub const HARD_HEADER_LEN: usize = 34;
    /// u32 rt_flags
    pub const RT_FLAGS: usize = 36;
    /// u32 fsuid
    pub const UID: usize = 40;
    /// u32 fsgid
    pub const GID: usize = 44;
    /// [u8; 16] input device name
    pub const IN_NAME: usize = 48;
    /// [u8; 16] output device name
    pub const OUT_NAME: usize = 64;
    /// [u8; 32] LOG prefix
    pub const PREFIX: usize = 80;
    /// REJECT: u8 IPCB(skb)->opt.optlen
    pub const IPCB_OPTLEN: usize = 84;
    /// [u8; 32] MAC header
    pub const MAC: usize = 112;
    /// REJECT: [u8; CT_COPY] a window of the packet's `struct nf_conn`
    pub const CT: usize = 144;
    /// the packet
    pub const PACKET: usize = CT + super::CT_COPY;
}

/// `skb->ip_summed` values.
pub mod csum {
    /// CHECKSUM_NONE
    pub const NONE: u8 = 0;
    /// CHECKSUM_UNNECESSARY
    pub const UNNECESSARY: u8 = 1;
    /// CHECKSUM_COMPLETE
    pub const COMPLETE: u8 = 2;
    /// CHECKSUM_PARTIAL
    pub const PARTIAL: u8 = 3;
}

/// `skb->priority` of the replies the daemon sends for REJECT when the rejected packet had a
/// conntrack entry: [`REPLY_PRIORITY_TAG`] in the high 16 bits, the ctinfo the kernel's
/// `nf_ct_attach` would give the reply in the low 3, and, when the record carried the entry's
/// fields ([`off::CT`]), [`REPLY_CT_COPY`] with the slot of [`crate::MapRef::ReplyCt`] the
/// daemon wrote them into in bits 8-15: the programs read the reply's connection there, as
/// the kernel's rules read the entry `nf_ct_attach` gave its reply. The kernel's own reset and ICMP error
/// carry the rejected packet's connection (`nf_send_reset`, `icmp_glue_bits`: RELATED in the
/// reply direction); a packet sent from a socket cannot, so the programs read this tag instead
/// of `skb->_nfct` for such packets and see what the kernel's rules would see. (Priority is
/// invisible to iptables; only its low 4 bits pick a pfifo band, 0-7 here.)
pub const REPLY_PRIORITY_TAG: u32 = 0x6266;

/// The `skb->priority` for a reply to a packet with `ctinfo` (see
/// [`REPLY_PRIORITY_TAG`]): `nf_conntrack_attach` gives IP_CT_RELATED_REPLY (4) to the reply
/// of an original-direction packet, IP_CT_RELATED (1) otherwise.
pub fn reply_priority(orig_ctinfo: u8) -> u32 {
    let attached = if orig_ctinfo < 3 { 4 } else { 1 };
    REPLY_PRIORITY_TAG << 16 | attached
}

/// Bit of a reply's `skb->priority`: its connection's fields are in slot `priority >> 8 &
/// 0xff` of [`crate::MapRef::ReplyCt`].
pub const REPLY_CT_COPY: u32 = 0x80;
/// Slots of [`crate::MapRef::ReplyCt`] (the daemon uses them in turn; a reply is judged by
/// OUTPUT within its `sendto`).
pub const REPLY_CT_SLOTS: u32 = 256;

/// [`reply_priority`] for a reply whose connection's fields are in ReplyCt slot `slot`.
pub fn reply_priority_with_copy(orig_ctinfo: u8, slot: u8) -> u32 {
    reply_priority(orig_ctinfo) | REPLY_CT_COPY | u32::from(slot) << 8
}

/// A record read back from the ring buffer.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    raw: &'a [u8],
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Shorter than [`RECORD_SIZE`].
    #[error("event record of {0} bytes, expected {RECORD_SIZE}")]
    Short(usize),
    /// A kind this daemon does not know.
    #[error("event record of unknown kind {0}")]
    Kind(u8),
}

fn c_name(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

impl<'a> Event<'a> {
    /// Read a record (the bytes of one ring buffer sample).
    pub fn parse(raw: &'a [u8]) -> Result<Event<'a>, EventError> {
        if raw.len() < RECORD_SIZE {
            return Err(EventError::Short(raw.len()));
        }
        match raw[off::KIND] {
            KIND_REJECT | KIND_LOG => Ok(Event { raw }),
            k => Err(EventError::Kind(k)),
        }
    }

    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.raw[at], self.raw[at + 1]])
    }
    fn u32(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.raw[at..at + 4]);
        u32::from_le_bytes(b)
    }

    /// [`KIND_REJECT`] or [`KIND_LOG`].
    pub fn kind(&self) -> u8 {
        self.raw[off::KIND]
    }
    /// Hook number (NF_INET_*).
    pub fn hook(&self) -> u8 {
        self.raw[off::HOOK]
    }
    /// Protocol family (NFPROTO_*).
    pub fn pf(&self) -> u8 {
        self.raw[off::PF]
    }
    /// REJECT: `ipt_reject_info.with` (`ip6t_reject_info.with` in an IPv6 record).
    pub fn reject_with(&self) -> u8 {
        self.raw[off::ARG]
    }
    /// LOG: level (0-7).
    pub fn log_level(&self) -> u8 {
        self.raw[off::ARG]
    }
    /// LOG: `logflags` (XT_LOG_*).
    pub fn log_flags(&self) -> u8 {
        self.raw[off::LOG_FLAGS]
    }
    /// `skb->ip_summed` (see [`csum`]).
    pub fn ip_summed(&self) -> u8 {
        self.raw[off::CSUM] & 3
    }
    /// `skb->csum_valid`.
    pub fn csum_valid(&self) -> bool {
        self.raw[off::CSUM] & 4 != 0
    }
    /// Counter slot of the rule that produced the event.
    pub fn rule(&self) -> u32 {
        self.u32(off::RULE)
    }
    /// `skb->len`.
    pub fn skb_len(&self) -> u32 {
        self.u32(off::SKB_LEN)
    }
    /// `skb->mark`.
    pub fn mark(&self) -> u32 {
        self.u32(off::MARK)
    }
    /// Input ifindex (0: none).
    pub fn in_ifindex(&self) -> u32 {
        self.u32(off::IN_IFINDEX)
    }
    /// Output ifindex (0: none).
    pub fn out_ifindex(&self) -> u32 {
        self.u32(off::OUT_IFINDEX)
    }
    /// `skb->dev->type` (ARPHRD_*).
    pub fn dev_type(&self) -> u16 {
        self.u16(off::DEV_TYPE)
    }
    /// `skb->dev->hard_header_len`.
    pub fn hard_header_len(&self) -> u16 {
        self.u16(off::HARD_HEADER_LEN)
    }
    /// `rt_flags` of the skb's route (0 without one).
    pub fn rt_flags(&self) -> u32 {
        self.u32(off::RT_FLAGS)
    }
    /// (fsuid, fsgid) of the socket's file, when the skb has a full socket with a file.
    pub fn uid_gid(&self) -> Option<(u32, u32)> {
        (self.raw[off::SOCK] & 1 != 0).then(|| (self.u32(off::UID), self.u32(off::GID)))
    }
    /// The packet's conntrack ctinfo, when it has an entry (`skb->_nfct` with a connection).
    pub fn ctinfo(&self) -> Option<u8> {
        let b = self.raw[off::SOCK];
        (b & 2 != 0).then_some((b >> 4) & 7)
    }
    /// REJECT: the window of the packet's `struct nf_conn` the record carries (zeros when it
    /// had none, or when the window does not fit [`CT_COPY`]).
    pub fn ct_copy(&self) -> &'a [u8] {
        &self.raw[off::CT..off::CT + CT_COPY]
    }
    /// Was the packet sent from a kernel socket (the ICMP or TCP control sockets, ...)?
    pub fn kernel_socket(&self) -> bool {
        self.raw[off::SOCK] & 4 != 0
    }
    /// Input device name (empty: no input device).
    pub fn in_name(&self) -> &'a [u8] {
        c_name(&self.raw[off::IN_NAME..off::IN_NAME + 16])
    }
    /// Output device name (empty: no output device).
    pub fn out_name(&self) -> &'a [u8] {
        c_name(&self.raw[off::OUT_NAME..off::OUT_NAME + 16])
    }
    /// REJECT: the device the packet's socket is bound to (`sk_bound_dev_if`, 0: none), which
    /// routes the kernel's reset (`ip_route_me_harder`).
    pub fn bound_ifindex(&self) -> u32 {
        if self.kind() == KIND_REJECT {
            self.u32(off::PREFIX)
        } else {
            0
        }
    }
    /// REJECT: the length of the IP options the stack compiled into the skb's control block
    /// (`IPCB(skb)->opt.optlen`), which `icmp_send` echoes: those of a received packet, or of
    /// a socket's IP_OPTIONS; none for a packet a raw IP_HDRINCL socket wrote with options.
    pub fn ipcb_optlen(&self) -> u8 {
        if self.kind() == KIND_REJECT {
            self.raw[off::IPCB_OPTLEN]
        } else {
            0
        }
    }
    /// LOG prefix (up to its NUL).
    pub fn prefix(&self) -> &'a [u8] {
        c_name(&self.raw[off::PREFIX..off::PREFIX + 30])
    }
    /// The MAC header bytes captured (empty when the skb has none).
    pub fn mac(&self) -> &'a [u8] {
        let n = usize::from(self.raw[off::MAC_LEN]).min(MAC_CAP);
        &self.raw[off::MAC..off::MAC + n]
    }
    /// The packet bytes captured, from the network header.
    pub fn packet(&self) -> &'a [u8] {
        let n = (self.u32(off::CAP_LEN) as usize).min(PACKET_CAP);
        &self.raw[off::PACKET..off::PACKET + n]
    }
    /// Is the whole packet in [`Event::packet`]?
    pub fn complete(&self) -> bool {
        self.packet().len() as u64 == u64::from(self.skb_len())
    }
}

/// Build a record (tests and fakes: the daemon's handlers can be exercised without a program).
#[derive(Debug, Clone)]
pub struct EventBuilder {
    raw: Vec<u8>,
}

impl EventBuilder {
    /// A record of `kind` for a packet, at `hook`, family IPv4.
    pub fn new(kind: u8, hook: u8, packet: &[u8]) -> EventBuilder {
        let mut raw = vec![0u8; RECORD_SIZE];
        raw[off::KIND] = kind;
        raw[off::HOOK] = hook;
        raw[off::PF] = 2;
        let cap = packet.len().min(PACKET_CAP);
        raw[off::PACKET..off::PACKET + cap].copy_from_slice(&packet[..cap]);
        // the control block of a received packet: its options compiled (ip_rcv_options)
        if kind == KIND_REJECT && cap > 0 {
            raw[off::IPCB_OPTLEN] = (usize::from(packet[0] & 0x0f) * 4).saturating_sub(20) as u8;
        }
        let mut b = EventBuilder { raw };
        b.put_u32(off::SKB_LEN, packet.len() as u32);
        b.put_u32(off::CAP_LEN, cap as u32);
        b
    }
    fn put_u32(&mut self, at: usize, v: u32) {
        self.raw[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_name(&mut self, at: usize, len: usize, s: &[u8]) {
        let n = s.len().min(len - 1);
        self.raw[at..at + len].fill(0);
        self.raw[at..at + n].copy_from_slice(&s[..n]);
    }
    /// Protocol family (NFPROTO_IPV6 = 10 for an IPv6 packet; the compiled options length
    /// is IPv4's only).
    pub fn pf(mut self, pf: u8) -> Self {
        self.raw[off::PF] = pf;
        if pf != 2 {
            self.raw[off::IPCB_OPTLEN] = 0;
        }
        self
    }
    /// REJECT's `with` or LOG's level.
    pub fn arg(mut self, v: u8) -> Self {
        self.raw[off::ARG] = v;
        self
    }
    /// LOG flags.
    pub fn log_flags(mut self, v: u8) -> Self {
        self.raw[off::LOG_FLAGS] = v;
        self
    }
    /// LOG prefix.
    pub fn prefix(mut self, p: &[u8]) -> Self {
        self.put_name(off::PREFIX, 30, p);
        self
    }
    /// Input device.
    pub fn input(mut self, name: &[u8], ifindex: u32) -> Self {
        self.put_name(off::IN_NAME, 16, name);
        self.put_u32(off::IN_IFINDEX, ifindex);
        self
    }
    /// Output device.
    pub fn output(mut self, name: &[u8], ifindex: u32) -> Self {
        self.put_name(off::OUT_NAME, 16, name);
        self.put_u32(off::OUT_IFINDEX, ifindex);
        self
    }
    /// skb->dev type, hard_header_len and MAC header bytes.
    pub fn mac(mut self, dev_type: u16, hard_header_len: u16, mac: &[u8]) -> Self {
        let n = mac.len().min(MAC_CAP);
        self.raw[off::DEV_TYPE..off::DEV_TYPE + 2].copy_from_slice(&dev_type.to_le_bytes());
        self.raw[off::HARD_HEADER_LEN..off::HARD_HEADER_LEN + 2]
            .copy_from_slice(&hard_header_len.to_le_bytes());
        self.raw[off::MAC_LEN] = n as u8;
        self.raw[off::MAC..off::MAC + n].copy_from_slice(&mac[..n]);
        self
    }
    /// skb->mark.
    pub fn mark(mut self, v: u32) -> Self {
        self.put_u32(off::MARK, v);
        self
    }
    /// Route flags.
    pub fn rt_flags(mut self, v: u32) -> Self {
        self.put_u32(off::RT_FLAGS, v);
        self
    }
    /// Checksum state.
    pub fn csum(mut self, ip_summed: u8, csum_valid: bool) -> Self {
        self.raw[off::CSUM] = (ip_summed & 3) | (u8::from(csum_valid) << 2);
        self
    }
    /// Socket owner.
    pub fn uid_gid(mut self, uid: u32, gid: u32) -> Self {
        self.raw[off::SOCK] |= 1;
        self.put_u32(off::UID, uid);
        self.put_u32(off::GID, gid);
        self
    }
    /// The packet's conntrack entry's ctinfo.
    pub fn ctinfo(mut self, ctinfo: u8) -> Self {
        self.raw[off::SOCK] = (self.raw[off::SOCK] & 0x0f) | 2 | (ctinfo & 7) << 4;
        self
    }
    /// REJECT: the packet's socket's bound device.
    pub fn bound_ifindex(mut self, ifindex: u32) -> Self {
        self.put_u32(off::PREFIX, ifindex);
        self
    }
    /// REJECT: `IPCB(skb)->opt.optlen` (by default the packet's own options length).
    pub fn ipcb_optlen(mut self, optlen: u8) -> Self {
        self.raw[off::IPCB_OPTLEN] = optlen;
        self
    }
    /// The packet's socket is a kernel socket.
    pub fn kernel_socket(mut self) -> Self {
        self.raw[off::SOCK] |= 4;
        self
    }
    /// Counter slot.
    pub fn rule(mut self, slot: u32) -> Self {
        self.put_u32(off::RULE, slot);
        self
    }
    /// The record bytes.
    pub fn build(self) -> Vec<u8> {
        self.raw
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_conntrack_window_of_the_example_layout_fits_a_record() {
        let conn = crate::KernelLayout::example()
            .conn
            .expect("example has nf_conn");
        let (start, len) = conn.copy_window().expect("fits");
        // both tuples (16..110), the timeout (120) and the status (128..132)
        assert_eq!((start, len), (16, 116));
        assert!(len as usize <= CT_COPY);
        let wide = crate::ConnLayout {
            status: 400,
            ..conn
        };
        assert_eq!(
            wide.copy_window(),
            None,
            "a window past CT_COPY is not copied"
        );
    }

    #[test]
    fn reply_priorities_carry_the_ctinfo_and_the_slot() {
        // an original-direction packet's reply is RELATED_REPLY (4), a reply's reply RELATED (1)
        assert_eq!(reply_priority(2), REPLY_PRIORITY_TAG << 16 | 4);
        assert_eq!(reply_priority(3), REPLY_PRIORITY_TAG << 16 | 1);
        let p = reply_priority_with_copy(0, 0xab);
        assert_eq!(p >> 16, REPLY_PRIORITY_TAG);
        assert_eq!(p & 7, 4);
        assert_ne!(p & REPLY_CT_COPY, 0);
        assert_eq!(p >> 8 & 0xff, 0xab);
    }

    use super::*;

    #[test]
    fn record_round_trip() {
        let pkt: Vec<u8> = (0..(PACKET_CAP as u32 + 200)).map(|i| i as u8).collect();
        let raw = EventBuilder::new(KIND_LOG, 1, &pkt)
            .arg(4)
            .log_flags(0x0f)
            .prefix(b"IN-DROP: ")
            .input(b"veth0", 7)
            .mac(1, 14, &[0xaa; 14])
            .mark(0x10)
            .csum(csum::PARTIAL, true)
            .uid_gid(1000, 100)
            .rule(3)
            .build();
        assert_eq!(raw.len(), RECORD_SIZE);
        let e = Event::parse(&raw).expect("record");
        assert_eq!((e.kind(), e.hook(), e.pf()), (KIND_LOG, 1, 2));
        assert_eq!((e.log_level(), e.log_flags(), e.rule()), (4, 0x0f, 3));
        assert_eq!(e.prefix(), b"IN-DROP: ");
        assert_eq!((e.in_name(), e.in_ifindex()), (&b"veth0"[..], 7));
        assert_eq!(e.out_name(), b"");
        assert_eq!(
            (e.dev_type(), e.hard_header_len(), e.mac()),
            (1, 14, &[0xaa; 14][..])
        );
        assert_eq!(e.mark(), 0x10);
        assert_eq!((e.ip_summed(), e.csum_valid()), (csum::PARTIAL, true));
        assert_eq!(e.uid_gid(), Some((1000, 100)));
        assert_eq!(e.skb_len() as usize, PACKET_CAP + 200);
        assert_eq!(e.packet(), &pkt[..PACKET_CAP]);
        assert!(!e.complete());
        assert_eq!(
            Event::parse(&raw[..100]).err(),
            Some(EventError::Short(100))
        );
        let mut bad = raw.clone();
        bad[0] = 9;
        assert_eq!(Event::parse(&bad).err(), Some(EventError::Kind(9)));
        // REJECT: the bound device and the compiled options length share the prefix area
        let rej = EventBuilder::new(KIND_REJECT, 3, &pkt[..60])
            .bound_ifindex(5)
            .ipcb_optlen(12)
            .build();
        let r = Event::parse(&rej).expect("record");
        assert_eq!((r.bound_ifindex(), r.ipcb_optlen()), (5, 12));
        assert_eq!(e.ipcb_optlen(), 0, "LOG records carry none");
        // IPv6: family 10, and no compiled IPv4 options whatever the first byte says
        let rej6 = EventBuilder::new(KIND_REJECT, 1, &[0x4f; 60])
            .pf(10)
            .build();
        let r6 = Event::parse(&rej6).expect("record");
        assert_eq!((r6.pf(), r6.ipcb_optlen()), (10, 0));
    }
}
