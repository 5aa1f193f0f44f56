//! REJECT for IPv6 records (byte 2 = NFPROTO_IPV6): the reply `ip6t_REJECT`'s `reject_tg6`
//! would send, beside [`super::reject`]'s IPv4 one, sharing its checksums, its rate limiter
//! (the namespace-wide ICMP bucket is one for both families, as `icmp_global_allow` is) and its
//! [`super::reject::Sender`].
//!
//! [`reply6`] is the pure part, from an event and the namespace's [`Params6`] to the datagram
//! the kernel would emit, or `None` when it sends nothing:
//!
//! - `reject_tg6` maps `enum ip6t_reject_with` (include/uapi/linux/netfilter_ipv6/ip6t_REJECT.h)
//!   to ICMPv6 destination-unreachable codes; `echo-reply` does nothing; `tcp-reset` calls
//!   `nf_send_reset6` (net/ipv6/netfilter/nf_reject_ipv6.c).
//! - `nf_send_unreach6`: `reject6_csum_ok` (a packet whose transport checksum is bad, that
//!   `ipv6_skip_exthdr` cannot walk, or a non-first fragment gets nothing unless the checksum
//!   state says the device checked it), then `icmp6_send` (net/ipv6/icmp.c): no error to a
//!   multicast destination or a packet not for this host (PACKET_HOST), from an unspecified or
//!   multicast source, or to an ICMPv6 error (`is_ineligible`); the source is the original's
//!   destination when it is ours (`ipv6_chk_addr`), else routing's; the quote is the packet
//!   cut so that the error fits `IPV6_MIN_MTU` (1280).
//! - `nf_send_reset6`: both addresses unicast (`ipv6_addr_type`), `nf_reject_ip6_tcphdr_get`
//!   (TCP after the extension headers, at least 20 bytes, not an RST, checksum good), then
//!   `nf_reject_ip6hdr_put` (traffic class and flow label 0, hop limit `ip6_dst_hoplimit` of the
//!   route back) and `nf_reject_ip6_tcphdr_put`.
//!
//! What cannot be the kernel's: an ICMPv6 error's flow label is the kernel's automatic one
//! (`ip6_make_flowlabel`, a keyed hash): [`reply6`] leaves it 0 and the sender's ICMPv6 socket
//! lets the kernel compute it over the same flow (`tests/reject6_kernel.rs` compares).

use std::net::Ipv6Addr;

use emitter::event::{csum, Event, KIND_REJECT};

use super::reply::{
    fold, hook, nf_reject_verify_csum, not_packet_host, ones_sum, skb_csum_unnecessary,
    RejectError, ReplyKind, ARPHRD_LOOPBACK, IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

/// NFPROTO_IPV6.
pub const NFPROTO_IPV6: u8 = 10;

/// `enum ip6t_reject_with` (include/uapi/linux/netfilter_ipv6/ip6t_REJECT.h).
pub mod with {
    /// IP6T_ICMP6_NO_ROUTE
    pub const NO_ROUTE: u8 = 0;
    /// IP6T_ICMP6_ADM_PROHIBITED
    pub const ADM_PROHIBITED: u8 = 1;
    /// IP6T_ICMP6_NOT_NEIGHBOUR
    pub const NOT_NEIGHBOUR: u8 = 2;
    /// IP6T_ICMP6_ADDR_UNREACH
    pub const ADDR_UNREACH: u8 = 3;
    /// IP6T_ICMP6_PORT_UNREACH
    pub const PORT_UNREACH: u8 = 4;
    /// IP6T_ICMP6_ECHOREPLY
    pub const ECHOREPLY: u8 = 5;
    /// IP6T_TCP_RESET
    pub const TCP_RESET: u8 = 6;
    /// IP6T_ICMP6_POLICY_FAIL
    pub const POLICY_FAIL: u8 = 7;
    /// IP6T_ICMP6_REJECT_ROUTE
    pub const REJECT_ROUTE: u8 = 8;
}

/// ICMPV6_DEST_UNREACH.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
/// Codes of ICMPv6 type 1 (include/uapi/linux/icmpv6.h).
pub mod code {
    /// ICMPV6_NOROUTE
    pub const NOROUTE: u8 = 0;
    /// ICMPV6_ADM_PROHIBITED
    pub const ADM_PROHIBITED: u8 = 1;
    /// ICMPV6_NOT_NEIGHBOUR
    pub const NOT_NEIGHBOUR: u8 = 2;
    /// ICMPV6_ADDR_UNREACH
    pub const ADDR_UNREACH: u8 = 3;
    /// ICMPV6_PORT_UNREACH
    pub const PORT_UNREACH: u8 = 4;
    /// ICMPV6_POLICY_FAIL
    pub const POLICY_FAIL: u8 = 5;
    /// ICMPV6_REJECT_ROUTE
    pub const REJECT_ROUTE: u8 = 6;
}

/// `RTF_LOCAL` of an IPv6 route (include/uapi/linux/ipv6_route.h): the destination is ours.
pub const RTF_LOCAL: u32 = 0x8000_0000;

const IPPROTO_ICMPV6: u8 = 58;
/// `ICMPV6_INFOMSG_MASK`: types with this bit are informational, the others errors.
const ICMPV6_INFOMSG_MASK: u8 = 0x80;
/// `IPV6_MIN_MTU`: an ICMPv6 error is at most this long.
pub const IPV6_MIN_MTU: usize = 1280;
const IPV6_HLEN: usize = 40;

/// Extension header numbers `ipv6_ext_hdr` knows (include/net/ipv6.h).
pub mod nexthdr {
    /// NEXTHDR_HOP
    pub const HOP: u8 = 0;
    /// NEXTHDR_ROUTING
    pub const ROUTING: u8 = 43;
    /// NEXTHDR_FRAGMENT
    pub const FRAGMENT: u8 = 44;
    /// NEXTHDR_AUTH
    pub const AUTH: u8 = 51;
    /// NEXTHDR_NONE
    pub const NONE: u8 = 59;
    /// NEXTHDR_DEST
    pub const DEST: u8 = 60;
}

/// `ipv6_ext_hdr`.
fn ipv6_ext_hdr(h: u8) -> bool {
    matches!(
        h,
        nexthdr::HOP
            | nexthdr::ROUTING
            | nexthdr::FRAGMENT
            | nexthdr::AUTH
            | nexthdr::NONE
            | nexthdr::DEST
    )
}

/// Where `ipv6_skip_exthdr` stopped: the transport header's offset and protocol, and the
/// fragment header's `frag_off` field (host order; 0 without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Offset of the header `proto` names.
    pub offset: usize,
    /// The protocol there (NEXTHDR_FRAGMENT when a non-first fragment stopped the walk).
    pub proto: u8,
    /// `frag_off` of the last fragment header (offset in its high 13 bits, M in bit 0).
    pub frag_off: u16,
}

/// `ipv6_skip_exthdr(skb, 40, &nexthdr, &frag_off)` over `p` (the packet from its IPv6
/// header, `len` = `skb->len`); `None` where the kernel returns -1 (NEXTHDR_NONE, or a header
/// past the end). Stops at a fragment header of non-zero offset, naming it.
pub fn ipv6_skip_exthdr(p: &[u8], len: usize) -> Option<Skipped> {
    let at = |off: usize, n: usize| -> Option<&[u8]> {
        if off + n > len {
            return None;
        }
        p.get(off..off + n)
    };
    let mut next = *p.get(6)?;
    let mut start = IPV6_HLEN;
    let mut frag_off = 0u16;
    while ipv6_ext_hdr(next) {
        if next == nexthdr::NONE {
            return None;
        }
        let hp = at(start, 2)?;
        let hdrlen = if next == nexthdr::FRAGMENT {
            let fp = at(start + 2, 2)?;
            frag_off = u16::from_be_bytes([fp[0], fp[1]]);
            if frag_off & !0x7 != 0 {
                break;
            }
            8
        } else if next == nexthdr::AUTH {
            (usize::from(hp[1]) + 2) << 2
        } else {
            (usize::from(hp[1]) + 1) << 3
        };
        next = hp[0];
        start += hdrlen;
    }
    Some(Skipped {
        offset: start,
        proto: next,
        frag_off,
    })
}

/// `ipv6_addr_type` bits REJECT looks at.
mod addr_type {
    pub const ANY: u32 = 0x0000;
    pub const UNICAST: u32 = 0x0001;
    pub const MULTICAST: u32 = 0x0002;
    pub const LOOPBACK: u32 = 0x0010;
    pub const LINKLOCAL: u32 = 0x0020;
    pub const SITELOCAL: u32 = 0x0040;
    pub const COMPATV4: u32 = 0x0080;
    pub const MAPPED: u32 = 0x1000;
    /// The multicast scope types (link-local and interface-local) that need a scope id.
    pub const MC_LINK_SCOPE: u32 = 0x0020_0000;
    pub const MC_NODE_SCOPE: u32 = 0x0010_0000;
}

/// `__ipv6_addr_type` (net/ipv6/addrconf_core.c), the type bits without the scope, except a
/// multicast address's link or node scope.
fn ipv6_addr_type(a: Ipv6Addr) -> u32 {
    let o = a.octets();
    let w = |i: usize| u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
    let st = w(0);
    if st & 0xe000_0000 != 0 && st & 0xe000_0000 != 0xe000_0000 {
        return addr_type::UNICAST;
    }
    if st & 0xff00_0000 == 0xff00_0000 {
        return addr_type::MULTICAST
            | match o[1] & 0x0f {
                1 => addr_type::MC_NODE_SCOPE,
                2 => addr_type::MC_LINK_SCOPE,
                _ => 0,
            };
    }
    if st & 0xffc0_0000 == 0xfe80_0000 {
        return addr_type::LINKLOCAL | addr_type::UNICAST;
    }
    if st & 0xffc0_0000 == 0xfec0_0000 {
        return addr_type::SITELOCAL | addr_type::UNICAST;
    }
    if st & 0xfe00_0000 == 0xfc00_0000 {
        return addr_type::UNICAST;
    }
    if w(0) | w(1) == 0 {
        if w(2) == 0 {
            return match w(3) {
                0 => addr_type::ANY,
                1 => addr_type::LOOPBACK | addr_type::UNICAST,
                _ => addr_type::COMPATV4 | addr_type::UNICAST,
            };
        }
        if w(2) == 0x0000_ffff {
            return addr_type::MAPPED;
        }
    }
    addr_type::UNICAST
}

/// `__ipv6_addr_needs_scope_id`: the reply must leave by the device the original came in on.
fn needs_scope_id(t: u32) -> bool {
    t & addr_type::LINKLOCAL != 0
        || (t & addr_type::MULTICAST != 0
            && t & (addr_type::MC_LINK_SCOPE | addr_type::MC_NODE_SCOPE) != 0)
}

/// What the namespace contributes to an IPv6 reply.
#[derive(Debug, Clone, Copy)]
pub struct Params6<'a> {
    /// `ip6_dst_hoplimit` of the route back to the original's source (the hop limit of both
    /// replies): the route's hop limit metric, else the output device's `hop_limit` (64).
    pub hop_limit: u8,
    /// `net.ipv6.fwmark_reflect`: replies carry the original's mark (`IP6_REPLY_MARK`).
    pub fwmark_reflect: bool,
    /// This namespace's IPv6 addresses (`ipv6_chk_addr`: is the original's destination ours).
    pub local_addrs: &'a [Ipv6Addr],
    /// See [`super::reject::Params::dccp_unverified`].
    pub dccp_unverified: bool,
}

impl Params6<'_> {
    /// A new namespace's values: hop limit 64, no mark reflection, no address known.
    pub fn kernel_defaults() -> Params6<'static> {
        Params6 {
            hop_limit: 64,
            fwmark_reflect: false,
            local_addrs: &[],
            dccp_unverified: !super::reply::dccp_gone(),
        }
    }
}

/// Where an ICMPv6 error's source comes from (`icmp6_send`'s `saddr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source6 {
    /// The original's destination (ours), and every RST's.
    Fixed(Ipv6Addr),
    /// Routing picks it: the datagram says `::` until [`Reply6::set_source`].
    Route,
}

/// The reply to one IPv6 event: a complete IPv6 datagram and how to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply6 {
    datagram: Vec<u8>,
    kind: ReplyKind,
    dest: Ipv6Addr,
    source: Source6,
    mark: u32,
    scope_ifindex: u32,
    in_loopback: bool,
    to_local: bool,
}

impl Reply6 {
    /// The IPv6 datagram (flow label 0: see the module doc).
    pub fn datagram(&self) -> &[u8] {
        &self.datagram
    }
    /// ICMPv6 error or RST.
    pub fn kind(&self) -> ReplyKind {
        self.kind
    }
    /// The original's source.
    pub fn dest(&self) -> Ipv6Addr {
        self.dest
    }
    /// Whether the source address is final.
    pub fn source(&self) -> Source6 {
        self.source
    }
    /// `skb->mark` of the reply (0 unless `fwmark_reflect`).
    pub fn mark(&self) -> u32 {
        self.mark
    }
    /// The device a reply to a link-local source must leave by (`icmp6_iif`; 0: routing's).
    pub fn scope_ifindex(&self) -> u32 {
        self.scope_ifindex
    }
    /// `skb->dev` is a loopback device (the original came in on lo, or was sent from here):
    /// `icmp6_send` skips the namespace-wide limit.
    pub fn in_loopback(&self) -> bool {
        self.in_loopback
    }
    /// The reply goes back to this host: the route is a loopback one and
    /// `icmpv6_xrlim_allow` lets it through.
    pub fn to_local(&self) -> bool {
        self.to_local
    }
    /// The ICMPv6 message (or TCP segment) after the IPv6 header.
    pub fn payload(&self) -> &[u8] {
        &self.datagram[IPV6_HLEN..]
    }

    /// Fixes the source address routing chose and recomputes the transport checksum.
    pub fn set_source(&mut self, addr: Ipv6Addr) {
        self.datagram[8..24].copy_from_slice(&addr.octets());
        let at = match self.kind {
            ReplyKind::Reset => 16,
            ReplyKind::Unreachable { .. } => 2,
        };
        transport_checksum(&mut self.datagram, at);
        self.source = Source6::Fixed(addr);
    }

    /// Sets the hop limit (`ip6_dst_hoplimit` of the route the sender found).
    pub fn set_hop_limit(&mut self, h: u8) {
        self.datagram[7] = h;
    }
}

/// The pseudo-header sum of an IPv6 datagram `d` for `len` transport bytes of `proto`.
fn pseudo6(d: &[u8], proto: u8, len: usize) -> u64 {
    ones_sum(&d[8..40], 0) + len as u64 + u64::from(proto)
}

/// Writes the checksum at `at` of the transport part of datagram `d` (after 40 bytes).
fn transport_checksum(d: &mut [u8], at: usize) {
    let proto = d[6];
    let len = d.len() - IPV6_HLEN;
    d[IPV6_HLEN + at..IPV6_HLEN + at + 2].fill(0);
    let c = !fold(ones_sum(&d[IPV6_HLEN..], pseudo6(d, proto, len)));
    d[IPV6_HLEN + at..IPV6_HLEN + at + 2].copy_from_slice(&c.to_be_bytes());
}

fn addr(p: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&p[at..at + 16]);
    Ipv6Addr::from(o)
}

/// Decides and builds the reply the kernel's `reject_tg6` would send for `ev`; `Ok(None)`
/// when the kernel sends nothing.
pub fn reply6(ev: &Event<'_>, params: &Params6<'_>) -> Result<Option<Reply6>, RejectError> {
    if ev.kind() != KIND_REJECT {
        return Err(RejectError::NotReject { kind: ev.kind() });
    }
    if ev.pf() != NFPROTO_IPV6 {
        return Err(RejectError::Family { pf: ev.pf() });
    }
    // reject6_tg_reg.hooks
    if !matches!(ev.hook(), hook::LOCAL_IN | hook::FORWARD | hook::LOCAL_OUT) {
        return Err(RejectError::Hook { hook: ev.hook() });
    }
    let code = match ev.reject_with() {
        with::NO_ROUTE => code::NOROUTE,
        with::ADM_PROHIBITED => code::ADM_PROHIBITED,
        with::NOT_NEIGHBOUR => code::NOT_NEIGHBOUR,
        with::ADDR_UNREACH => code::ADDR_UNREACH,
        with::PORT_UNREACH => code::PORT_UNREACH,
        with::POLICY_FAIL => code::POLICY_FAIL,
        with::REJECT_ROUTE => code::REJECT_ROUTE,
        with::ECHOREPLY => return Ok(None),
        with::TCP_RESET => {
            check_header(ev.packet())?;
            return Ok(send_reset6(ev, params));
        }
        w => return Err(RejectError::With { with: w }),
    };
    check_header(ev.packet())?;
    Ok(send_unreach6(ev, code, params))
}

fn check_header(p: &[u8]) -> Result<(), RejectError> {
    if p.len() < IPV6_HLEN {
        return Err(RejectError::Packet {
            what: "shorter than an IPv6 header",
        });
    }
    if p[0] >> 4 != 6 {
        return Err(RejectError::Packet {
            what: "IP version is not 6",
        });
    }
    Ok(())
}

/// `nf_ip6_checksum(skb, hook, thoff, proto) == 0` by `ip_summed`: with CHECKSUM_NONE (and
/// CHECKSUM_COMPLETE at PRE_ROUTING/LOCAL_IN, whose sum a record does not carry) the transport
/// bytes and the pseudo-header are summed; a packet not wholly captured is assumed good.
fn nf_ip6_checksum_ok(ev: &Event<'_>, thoff: usize, proto: u8) -> bool {
    match ev.ip_summed() {
        csum::UNNECESSARY | csum::PARTIAL => return true,
        csum::COMPLETE if !matches!(ev.hook(), hook::PRE_ROUTING | hook::LOCAL_IN) => return true,
        _ => {}
    }
    if !ev.complete() {
        return true;
    }
    let p = ev.packet();
    let l4 = p.get(thoff..).unwrap_or(&[]);
    fold(ones_sum(l4, pseudo6(p, proto, l4.len()))) == 0xffff
}

/// `reject6_csum_ok`.
fn reject6_csum_ok(ev: &Event<'_>, params: &Params6<'_>) -> bool {
    if skb_csum_unnecessary(ev) {
        return true;
    }
    let len = ev.skb_len() as usize;
    let Some(s) = ipv6_skip_exthdr(ev.packet(), len) else {
        return false;
    };
    if s.offset >= len || s.frag_off & !0x7 != 0 {
        return false;
    }
    let l4 = ev.packet().get(s.offset..).unwrap_or(&[]);
    if !nf_reject_verify_csum(l4, s.proto, params.dccp_unverified) {
        return true;
    }
    nf_ip6_checksum_ok(ev, s.offset, s.proto)
}

/// `is_ineligible`: no error about an ICMPv6 error (or a packet whose ICMPv6 type cannot be
/// read, unless it is a fragment).
fn is_ineligible(p: &[u8], len: usize) -> bool {
    let Some(s) = ipv6_skip_exthdr(p, len) else {
        return false;
    };
    if s.proto != IPPROTO_ICMPV6 {
        return false;
    }
    let ty = if s.offset < len {
        p.get(s.offset).copied()
    } else {
        None
    };
    match ty {
        None => s.frag_off == 0,
        Some(t) => t & ICMPV6_INFOMSG_MASK == 0,
    }
}

/// `nf_send_unreach6` then `icmp6_send(skb, ICMPV6_DEST_UNREACH, code, 0)`.
fn send_unreach6(ev: &Event<'_>, code: u8, params: &Params6<'_>) -> Option<Reply6> {
    if !reject6_csum_ok(ev, params) {
        return None;
    }
    let p = ev.packet();
    let (saddr, daddr) = (addr(p, 8), addr(p, 24));
    // At LOCAL_OUT nf_send_unreach6 gives the skb the loopback device.
    let local_out = ev.hook() == hook::LOCAL_OUT;
    let in_loopback = local_out || ev.dev_type() == ARPHRD_LOOPBACK;
    let ours = params.local_addrs.contains(&daddr) || ev.rt_flags() & RTF_LOCAL != 0;
    if ipv6_addr_type(daddr) & addr_type::MULTICAST != 0 || not_packet_host(ev) {
        return None;
    }
    let st = ipv6_addr_type(saddr);
    let scope_ifindex = if needs_scope_id(st) && !local_out {
        ev.in_ifindex()
    } else {
        0
    };
    if st == addr_type::ANY || st & addr_type::MULTICAST != 0 {
        return None;
    }
    let len = ev.skb_len() as usize;
    if is_ineligible(p, len) {
        return None;
    }
    let source = if ours {
        Source6::Fixed(daddr)
    } else {
        Source6::Route
    };
    let quote = len.min(IPV6_MIN_MTU - IPV6_HLEN - 8).min(p.len());
    let mut d = vec![0u8; IPV6_HLEN + 8 + quote];
    d[0] = 0x60;
    d[4..6].copy_from_slice(&((8 + quote) as u16).to_be_bytes());
    d[6] = IPPROTO_ICMPV6;
    d[7] = params.hop_limit;
    if let Source6::Fixed(a) = source {
        d[8..24].copy_from_slice(&a.octets());
    }
    d[24..40].copy_from_slice(&saddr.octets());
    d[40] = ICMPV6_DEST_UNREACH;
    d[41] = code;
    d[48..].copy_from_slice(&p[..quote]);
    transport_checksum(&mut d, 2);
    Some(Reply6 {
        datagram: d,
        kind: ReplyKind::Unreachable { code },
        dest: saddr,
        source,
        mark: if params.fwmark_reflect { ev.mark() } else { 0 },
        scope_ifindex,
        in_loopback,
        to_local: in_loopback,
    })
}

/// `nf_send_reset6`: `ipv6_addr_type` of both addresses, `nf_reject_ip6_tcphdr_get`,
/// `nf_reject_ip6hdr_put`, `nf_reject_ip6_tcphdr_put`.
fn send_reset6(ev: &Event<'_>, params: &Params6<'_>) -> Option<Reply6> {
    let p = ev.packet();
    let (saddr, daddr) = (addr(p, 8), addr(p, 24));
    if ipv6_addr_type(saddr) & addr_type::UNICAST == 0
        || ipv6_addr_type(daddr) & addr_type::UNICAST == 0
    {
        return None;
    }
    // nf_reject_ip6_tcphdr_get
    let len = ev.skb_len() as usize;
    let s = ipv6_skip_exthdr(p, len)?;
    if s.offset > len {
        return None;
    }
    let otcplen = len - s.offset;
    if s.proto != IPPROTO_TCP || otcplen < 20 {
        return None;
    }
    let oth = p.get(s.offset..s.offset + 20)?;
    let flags = oth[13];
    if flags & TCP_RST != 0 || !nf_ip6_checksum_ok(ev, s.offset, IPPROTO_TCP) {
        return None;
    }
    let mut d = vec![0u8; IPV6_HLEN + 20];
    d[0] = 0x60;
    d[4..6].copy_from_slice(&20u16.to_be_bytes());
    d[6] = IPPROTO_TCP;
    d[7] = params.hop_limit;
    d[8..24].copy_from_slice(&daddr.octets());
    d[24..40].copy_from_slice(&saddr.octets());
    let t = &mut d[IPV6_HLEN..];
    t[0..2].copy_from_slice(&oth[2..4]);
    t[2..4].copy_from_slice(&oth[0..2]);
    if flags & TCP_ACK != 0 {
        t[4..8].copy_from_slice(&oth[8..12]);
        t[13] = TCP_RST;
    } else {
        let seq = u32::from_be_bytes([oth[4], oth[5], oth[6], oth[7]]);
        let doff = u32::from(oth[12] >> 4) * 4;
        // unsigned, as the kernel computes it: a data offset past the segment wraps
        let ack = seq
            .wrapping_add(u32::from(flags & TCP_SYN != 0))
            .wrapping_add(u32::from(flags & TCP_FIN != 0))
            .wrapping_add(otcplen as u32)
            .wrapping_sub(doff);
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[13] = TCP_RST | TCP_ACK;
    }
    t[12] = 5 << 4;
    transport_checksum(&mut d, 16);
    let st = ipv6_addr_type(saddr);
    Some(Reply6 {
        datagram: d,
        kind: ReplyKind::Reset,
        dest: saddr,
        source: Source6::Fixed(daddr),
        mark: if params.fwmark_reflect { ev.mark() } else { 0 },
        scope_ifindex: if needs_scope_id(st) {
            ev.in_ifindex()
        } else {
            0
        },
        in_loopback: ev.hook() == hook::LOCAL_OUT || ev.dev_type() == ARPHRD_LOOPBACK,
        to_local: ev.hook() == hook::LOCAL_OUT,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use emitter::event::EventBuilder;

    const A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

    /// An IPv6 packet from A to B: `exts` are (header number, bytes) in order, then `proto`
    /// and `l4` (whose checksum at `csum_at` is filled in when given).
    fn ipv6(exts: &[(u8, Vec<u8>)], proto: u8, l4: &[u8], csum_at: Option<usize>) -> Vec<u8> {
        let mut p = vec![0x60, 0x0a, 0xbc, 0xde, 0, 0, 0, 61];
        p.extend_from_slice(&A.octets());
        p.extend_from_slice(&B.octets());
        let mut hdrs: Vec<u8> = Vec::new();
        let kinds: Vec<u8> = exts.iter().map(|e| e.0).chain([proto]).collect();
        p[6] = kinds[0];
        for (i, (_, b)) in exts.iter().enumerate() {
            let mut h = b.clone();
            h[0] = kinds[i + 1];
            hdrs.extend_from_slice(&h);
        }
        p.extend_from_slice(&hdrs);
        let t = p.len();
        p.extend_from_slice(l4);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        if let Some(at) = csum_at {
            p[t + at..t + at + 2].fill(0);
            let c = !fold(ones_sum(&p[t..], pseudo6(&p, proto, p.len() - t)));
            p[t + at..t + at + 2].copy_from_slice(&c.to_be_bytes());
        }
        p
    }

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0x9c, 0x40, 0, 53, 0, 0, 0, 0];
        u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(payload);
        u
    }

    fn tcp(flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&1000u16.to_be_bytes());
        t.extend_from_slice(data);
        t
    }

    fn dstopts() -> Vec<u8> {
        vec![0, 0, 1, 4, 0, 0, 0, 0] // PadN
    }

    fn input(pkt: &[u8], w: u8) -> EventBuilder {
        EventBuilder::new(KIND_REJECT, hook::LOCAL_IN, pkt)
            .pf(NFPROTO_IPV6)
            .arg(w)
            .input(b"eth0", 2)
            .csum(csum::NONE, false)
    }

    fn params() -> Params6<'static> {
        const LOCAL: [Ipv6Addr; 1] = [B];
        Params6 {
            local_addrs: &LOCAL,
            ..Params6::kernel_defaults()
        }
    }

    fn run(b: EventBuilder) -> Option<Reply6> {
        let raw = b.build();
        reply6(&Event::parse(&raw).unwrap(), &params()).unwrap()
    }

    #[test]
    fn skip_exthdr_walks_and_stops_like_the_kernel() {
        let frag0 = vec![0, 0, 0, 1, 0, 0, 0, 7]; // offset 0, M
        let frag9 = vec![0, 0, 0, 9 << 3, 0, 0, 0, 7]; // offset 9
        let ah = vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]; // (1 + 2) * 4 = 12
        let p = ipv6(
            &[(0, dstopts()), (44, frag0), (51, ah), (60, dstopts())],
            17,
            &udp(b"x"),
            Some(6),
        );
        let s = ipv6_skip_exthdr(&p, p.len()).unwrap();
        assert_eq!(
            (s.offset, s.proto, s.frag_off),
            (40 + 8 + 8 + 12 + 8, 17, 1)
        );
        let p = ipv6(&[(44, frag9)], 17, &udp(b"x"), None);
        assert_eq!(
            ipv6_skip_exthdr(&p, p.len()),
            Some(Skipped {
                offset: 40,
                proto: 44,
                frag_off: 9 << 3
            })
        );
        // NEXTHDR_NONE, and a header past skb->len: -1
        assert_eq!(ipv6_skip_exthdr(&ipv6(&[], 59, &[], None), 40), None);
        let p = ipv6(&[(0, dstopts())], 17, &[], None);
        assert_eq!(ipv6_skip_exthdr(&p, 41), None);
    }

    #[test]
    fn addr_types() {
        assert_eq!(ipv6_addr_type(A), addr_type::UNICAST);
        assert_eq!(ipv6_addr_type(Ipv6Addr::UNSPECIFIED), addr_type::ANY);
        assert_eq!(
            ipv6_addr_type(Ipv6Addr::LOCALHOST),
            addr_type::LOOPBACK | addr_type::UNICAST
        );
        assert_eq!(
            ipv6_addr_type("::ffff:1.2.3.4".parse().unwrap()),
            addr_type::MAPPED
        );
        let ll = ipv6_addr_type("fe80::1".parse().unwrap());
        assert!(ll & addr_type::UNICAST != 0 && needs_scope_id(ll));
        assert!(needs_scope_id(ipv6_addr_type("ff02::1".parse().unwrap())));
        assert!(!needs_scope_id(ipv6_addr_type("ff05::1".parse().unwrap())));
        assert_eq!(
            ipv6_addr_type("2001:db8::1".parse().unwrap()),
            addr_type::UNICAST
        );
    }

    #[test]
    fn every_reject_with() {
        let pkt = ipv6(&[], 17, &udp(b"hello"), Some(6));
        for (w, c) in [
            (with::NO_ROUTE, code::NOROUTE),
            (with::ADM_PROHIBITED, code::ADM_PROHIBITED),
            (with::NOT_NEIGHBOUR, code::NOT_NEIGHBOUR),
            (with::ADDR_UNREACH, code::ADDR_UNREACH),
            (with::PORT_UNREACH, code::PORT_UNREACH),
            (with::POLICY_FAIL, code::POLICY_FAIL),
            (with::REJECT_ROUTE, code::REJECT_ROUTE),
        ] {
            let r = run(input(&pkt, w)).unwrap();
            assert_eq!(r.kind(), ReplyKind::Unreachable { code: c });
            let d = r.datagram();
            assert_eq!(&d[..8], &[0x60, 0, 0, 0, 0, 8 + pkt.len() as u8, 58, 64]);
            assert_eq!(&d[8..24], &B.octets());
            assert_eq!(&d[24..40], &A.octets());
            assert_eq!(&d[40..42], &[1, c]);
            assert_eq!(&d[44..48], &[0; 4]);
            assert_eq!(&d[48..], &pkt[..]);
            let sum = ones_sum(&d[40..], pseudo6(d, 58, d.len() - 40));
            assert_eq!(fold(sum), 0xffff, "ICMPv6 checksum");
            assert_eq!(r.source(), Source6::Fixed(B));
        }
        assert_eq!(run(input(&pkt, with::ECHOREPLY)), None);
        assert_eq!(run(input(&pkt, with::TCP_RESET)), None, "not TCP");
        let raw = input(&pkt, 9).build();
        assert_eq!(
            reply6(&Event::parse(&raw).unwrap(), &params()),
            Err(RejectError::With { with: 9 })
        );
        let raw = input(&pkt[..30], 4).build();
        assert!(matches!(
            reply6(&Event::parse(&raw).unwrap(), &params()),
            Err(RejectError::Packet { .. })
        ));
        let raw = EventBuilder::new(KIND_REJECT, hook::LOCAL_IN, &pkt).build();
        assert_eq!(
            reply6(&Event::parse(&raw).unwrap(), &params()),
            Err(RejectError::Family { pf: 2 })
        );
    }

    #[test]
    fn quote_is_cut_to_the_minimum_mtu() {
        let pkt = ipv6(&[], 17, &udp(&[0x5a; 1400]), Some(6));
        let d = run(input(&pkt, 4)).unwrap().datagram().to_vec();
        assert_eq!(d.len(), IPV6_MIN_MTU);
        assert_eq!(&d[48..], &pkt[..IPV6_MIN_MTU - 48]);
    }

    #[test]
    fn checksums_fragments_and_errors_get_nothing() {
        let mut bad = ipv6(&[], 17, &udp(b"bad"), Some(6));
        bad[47] ^= 1;
        assert_eq!(run(input(&bad, 4)), None, "bad checksum");
        assert!(run(input(&bad, 4).csum(csum::UNNECESSARY, false)).is_some());
        assert!(
            run(input(&bad, 4).csum(csum::NONE, true)).is_some(),
            "csum_valid"
        );
        // UDP without checksum is not verified
        let mut zero = ipv6(&[], 17, &udp(b"zero"), None);
        zero[46..48].fill(0);
        assert!(run(input(&zero, 4)).is_some());
        // a later fragment: reject6_csum_ok refuses; a first one is verified as it is
        let later = ipv6(&[(44, vec![0, 0, 0, 8, 0, 0, 0, 1])], 17, &udp(b"f"), None);
        assert_eq!(run(input(&later, 4)), None);
        assert!(run(input(&later, 4).csum(csum::UNNECESSARY, false)).is_some());
        let first = ipv6(
            &[(44, vec![0, 0, 0, 1, 0, 0, 0, 1])],
            17,
            &udp(b"f"),
            Some(6),
        );
        assert!(run(input(&first, 4)).is_some());
        // an ICMPv6 error gets nothing, an echo request an error
        let err = ipv6(&[], 58, &[1, 4, 0, 0, 0, 0, 0, 0], Some(2));
        assert_eq!(run(input(&err, 4)), None);
        let echo = ipv6(&[(60, dstopts())], 58, &[128, 0, 0, 0, 0, 1, 0, 1], Some(2));
        assert!(run(input(&echo, 4)).is_some());
        // multicast destination, multicast or unspecified source, not PACKET_HOST
        let mut mc = ipv6(&[], 17, &udp(b"m"), None);
        mc[24] = 0xff;
        mc[46..48].fill(0);
        assert_eq!(run(input(&mc, 4)), None);
        let mut any = ipv6(&[], 17, &udp(b"a"), None);
        any[8..24].fill(0);
        any[46..48].fill(0);
        assert_eq!(run(input(&any, 4)), None);
        let pkt = ipv6(&[], 17, &udp(b"hello"), Some(6));
        let bcast_mac = [0x33, 0x33, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        assert_eq!(run(input(&pkt, 4).mac(1, 14, &bcast_mac)), None);
    }

    #[test]
    fn sources_marks_and_scopes() {
        let pkt = ipv6(&[], 17, &udp(b"fwd"), Some(6));
        let fwd = EventBuilder::new(KIND_REJECT, hook::FORWARD, &pkt)
            .pf(NFPROTO_IPV6)
            .arg(with::PORT_UNREACH)
            .input(b"eth1", 5)
            .mark(9)
            .csum(csum::PARTIAL, false);
        // B is not ours here: routing picks the source
        let raw = fwd.clone().build();
        let none = Params6::kernel_defaults();
        let mut r = reply6(&Event::parse(&raw).unwrap(), &none)
            .unwrap()
            .unwrap();
        assert_eq!(r.source(), Source6::Route);
        assert_eq!(&r.datagram()[8..24], &[0; 16]);
        let m: Ipv6Addr = "fd00:9::9".parse().unwrap();
        r.set_source(m);
        r.set_hop_limit(255);
        let d = r.datagram();
        assert_eq!((&d[8..24], d[7]), (&m.octets()[..], 255));
        assert_eq!(
            fold(ones_sum(&d[40..], pseudo6(d, 58, d.len() - 40))),
            0xffff
        );
        assert_eq!(
            (r.mark(), r.scope_ifindex(), r.in_loopback()),
            (0, 0, false)
        );
        let p = Params6 {
            fwmark_reflect: true,
            ..none
        };
        let raw = fwd.build();
        assert_eq!(
            reply6(&Event::parse(&raw).unwrap(), &p)
                .unwrap()
                .unwrap()
                .mark(),
            9
        );
        // a link-local source: out of the input device
        let mut ll = pkt.clone();
        ll[8..24].copy_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        let r = run(input(&ll, 4).csum(csum::UNNECESSARY, false)).unwrap();
        assert_eq!(r.scope_ifindex(), 2);
        // LOCAL_OUT: the loopback device, no namespace-wide limit
        let out = EventBuilder::new(KIND_REJECT, hook::LOCAL_OUT, &pkt)
            .pf(NFPROTO_IPV6)
            .arg(4)
            .output(b"eth0", 2);
        let r = run(out).unwrap();
        assert!(r.in_loopback() && r.to_local());
    }

    #[test]
    fn hostile_records_never_panic() {
        // Mutated packets of every shape, any claimed skb->len: reply6 and the LOG line
        // must return, whatever they decide.
        let seeds = [
            ipv6(
                &[(0, dstopts()), (44, vec![0, 0, 0, 1, 0, 0, 0, 1])],
                6,
                &tcp(2, 1, 0, &[]),
                Some(16),
            ),
            ipv6(
                &[(51, vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2])],
                58,
                &[1, 4, 0, 0, 0, 0, 0, 0],
                None,
            ),
            ipv6(&[], 17, &udp(b"seed"), Some(6)),
        ];
        let mut rng = test_support::Rng::new(6);
        for i in 0..3000 {
            let mut p = seeds[i % seeds.len()].clone();
            for _ in 0..rng.below(6) {
                let at = rng.index(p.len());
                p[at] = rng.next_u64() as u8;
            }
            p.truncate(rng.index(p.len() + 1).max(1));
            let mut raw = input(&p, rng.below(10) as u8)
                .csum(rng.below(4) as u8, rng.chance(20))
                .build();
            let claimed = if rng.chance(30) {
                rng.next_u64() as u32
            } else {
                p.len() as u32
            };
            raw[emitter::event::off::SKB_LEN..emitter::event::off::SKB_LEN + 4]
                .copy_from_slice(&claimed.to_le_bytes());
            raw[emitter::event::off::HOOK] = rng.below(5) as u8;
            let ev = Event::parse(&raw).unwrap();
            let _ = reply6(&ev, &params());
            raw[emitter::event::off::KIND] = emitter::event::KIND_LOG;
            raw[emitter::event::off::LOG_FLAGS] = rng.next_u64() as u8;
            let _ = super::super::log::format_line(&Event::parse(&raw).unwrap());
        }
    }

    #[test]
    fn resets() {
        let syn = ipv6(&[(60, dstopts())], 6, &tcp(TCP_SYN, 100, 0, &[]), Some(16));
        let r = run(input(&syn, with::TCP_RESET)).unwrap();
        let d = r.datagram();
        assert_eq!(r.kind(), ReplyKind::Reset);
        assert_eq!(&d[..8], &[0x60, 0, 0, 0, 0, 20, 6, 64]);
        assert_eq!((&d[8..24], &d[24..40]), (&B.octets()[..], &A.octets()[..]));
        let t = &d[40..];
        assert_eq!(&t[0..4], &[0, 80, 0x9c, 0x40]);
        assert_eq!(&t[4..8], &[0; 4]);
        assert_eq!(u32::from_be_bytes([t[8], t[9], t[10], t[11]]), 101);
        assert_eq!((t[12], t[13]), (0x50, TCP_RST | TCP_ACK));
        assert_eq!(&t[14..16], &[0, 0]);
        assert_eq!(fold(ones_sum(t, pseudo6(d, 6, 20))), 0xffff);
        // ACK with data: seq from the ack, RST only
        let ack = ipv6(&[], 6, &tcp(TCP_ACK | 0x08, 5, 0xabcd, &[1; 10]), Some(16));
        let r = run(input(&ack, 6)).unwrap();
        assert_eq!(&r.datagram()[44..48], &0xabcdu32.to_be_bytes());
        assert_eq!(r.datagram()[53], TCP_RST);
        // FIN with data, no ACK: seq + 1 + data
        let fin = ipv6(&[], 6, &tcp(TCP_FIN, 7, 0, &[2; 30]), Some(16));
        let r = run(input(&fin, 6)).unwrap();
        assert_eq!(&r.datagram()[48..52], &38u32.to_be_bytes());
        // no RST for an RST, a bad checksum, a short header, a later fragment, multicast
        let rst = ipv6(&[], 6, &tcp(TCP_RST, 1, 0, &[]), Some(16));
        assert_eq!(run(input(&rst, 6)), None);
        let mut bad = syn.clone();
        bad[60] ^= 1;
        assert_eq!(run(input(&bad, 6)), None);
        assert!(run(input(&bad, 6).csum(csum::UNNECESSARY, false)).is_some());
        assert_eq!(
            run(input(&bad, 6).csum(csum::NONE, true)),
            None,
            "csum_valid not read"
        );
        let short = ipv6(&[], 6, &[0; 12], None);
        assert_eq!(run(input(&short, 6)), None);
        let frag = ipv6(
            &[(44, vec![0, 0, 0, 8, 0, 0, 0, 1])],
            6,
            &tcp(2, 1, 0, &[]),
            None,
        );
        assert_eq!(run(input(&frag, 6).csum(csum::UNNECESSARY, false)), None);
        let mut mc = syn.clone();
        mc[24] = 0xff;
        assert_eq!(run(input(&mc, 6).csum(csum::UNNECESSARY, false)), None);
    }
}
