//! What REJECT's two families share: the hook numbers, the record's errors, the reply kinds,
//! and the kernel's checksum and eligibility tests that `nf_reject_ipv4` and `nf_reject_ipv6`
//! both make (`docs/KERNEL-BEHAVIOUR.md#reject-checksum`). [`super::reject`] builds and sends
//! IPv4 replies (and sends IPv6 ones), [`super::reject6`] builds IPv6 replies; both take these
//! from here, so that neither depends on the other's builder.

use emitter::event::{csum, Event};

/// Netfilter hook numbers (`enum nf_inet_hooks`).
pub mod hook {
    /// NF_INET_PRE_ROUTING
    pub const PRE_ROUTING: u8 = 0;
    /// NF_INET_LOCAL_IN
    pub const LOCAL_IN: u8 = 1;
    /// NF_INET_FORWARD
    pub const FORWARD: u8 = 2;
    /// NF_INET_LOCAL_OUT
    pub const LOCAL_OUT: u8 = 3;
}

pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
pub(super) const IPPROTO_GRE: u8 = 47;
pub(super) const IPPROTO_ESP: u8 = 50;
pub(super) const IPPROTO_AH: u8 = 51;
pub(super) const IPPROTO_DCCP: u8 = 33;
pub(super) const IPPROTO_SCTP: u8 = 132;
pub(super) const IPPROTO_UDPLITE: u8 = 136;

pub(super) const ARPHRD_ETHER: u16 = 1;
pub(super) const ARPHRD_LOOPBACK: u16 = 772;

pub(super) const TCP_FIN: u8 = 0x01;
pub(super) const TCP_SYN: u8 = 0x02;
pub(super) const TCP_RST: u8 = 0x04;
pub(super) const TCP_ACK: u8 = 0x10;

/// Why an event cannot be turned into a reply (the record, not the packet, is wrong: the
/// kernel would never have run REJECT on it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectError {
    /// The record is a LOG event or another kind.
    #[error("event kind {kind} is not a REJECT event")]
    NotReject {
        /// [`Event::kind`].
        kind: u8,
    },
    /// Neither NFPROTO_IPV4 nor NFPROTO_IPV6 (or the other one than the caller handles).
    #[error("REJECT event of protocol family {pf}, expected IPv4 (2) or IPv6 (10)")]
    Family {
        /// [`Event::pf`].
        pf: u8,
    },
    /// REJECT is registered on LOCAL_IN, FORWARD and LOCAL_OUT only (`reject_tg_reg.hooks`).
    #[error("REJECT event at hook {hook}, REJECT runs at LOCAL_IN, FORWARD, LOCAL_OUT")]
    Hook {
        /// [`Event::hook`].
        hook: u8,
    },
    /// `ipt_reject_info.with` outside `enum ipt_reject_with`.
    #[error("REJECT event with unknown reject-with {with}")]
    With {
        /// [`Event::reject_with`].
        with: u8,
    },
    /// The captured packet is not an IPv4 header the kernel could have accepted.
    #[error("REJECT event packet: {what}")]
    Packet {
        /// What is wrong with it.
        what: &'static str,
    },
}

/// Whether the running kernel is 6.16 or later, which removed DCCP (and with it DCCP from
/// `nf_reject_verify_csum`'s list).
pub(super) fn dccp_gone() -> bool {
    static GONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GONE.get_or_init(|| crate::probe::kernel_at_least(6, 16))
}

/// What kind of reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// ICMP destination unreachable with this code.
    Unreachable {
        /// ICMP code (see [`code`]).
        code: u8,
    },
    /// TCP RST.
    Reset,
}

/// `skb_csum_unnecessary`.
pub(super) fn skb_csum_unnecessary(ev: &Event<'_>) -> bool {
    matches!(ev.ip_summed(), csum::UNNECESSARY | csum::PARTIAL) || ev.csum_valid()
}

/// `nf_reject_verify_csum`: whether the protocol has a 16-bit one's complement checksum of
/// the whole payload to verify (`docs/KERNEL-BEHAVIOUR.md#reject-checksum`); `l4` is the
/// captured transport header on (both families share it).
pub(super) fn nf_reject_verify_csum(l4: &[u8], proto: u8, dccp_unverified: bool) -> bool {
    match proto {
        // optional checksum: zero means none
        IPPROTO_UDP => l4.get(6..8).is_none_or(|c| c != [0, 0]),
        IPPROTO_GRE | IPPROTO_AH | IPPROTO_ESP | IPPROTO_SCTP | IPPROTO_UDPLITE => false,
        IPPROTO_DCCP => !dccp_unverified,
        _ => true,
    }
}

/// `skb->pkt_type != PACKET_HOST`, from the captured Ethernet destination.
pub(super) fn not_packet_host(ev: &Event<'_>) -> bool {
    let mac = ev.mac();
    ev.hook() != hook::LOCAL_OUT
        && ev.dev_type() == ARPHRD_ETHER
        && mac.len() >= 6
        && mac[0] & 1 != 0
}

pub(super) fn ones_sum(data: &[u8], init: u64) -> u64 {
    let mut sum = init;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

pub(super) fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}
