//! REJECT: the reply the kernel would send for an event (`docs/KERNEL-BEHAVIOUR.md`, sections
//! `reject-*` and `icmp-rate-limits`).
//!
//! A BPF_NETFILTER program can only drop or accept, so a `-j REJECT` rule drops the packet and
//! hands the daemon an [`Event`] (hook, `ipt_reject_info.with`, skb state, route flags and the
//! first 1500 bytes of the packet). This module does what `reject_tg` would have done with the
//! skb, in three layers:
//!
//! 1. [`reply`]: a pure function from an event and the namespace's [`Params`] to the exact IP
//!    datagram the kernel would emit, or `None` when the kernel sends nothing: `nf_send_unreach`
//!    and `__icmp_send` for the ICMP codes, `nf_send_reset` for `tcp-reset`
//!    (`docs/KERNEL-BEHAVIOUR.md#reject-icmp-reply`, `#reject-tcp-reset`).
//! 2. [`RateLimiter`]: `icmp_send`'s rate limits on an injected clock; RSTs are never rate
//!    limited (`docs/KERNEL-BEHAVIOUR.md#icmp-rate-limits`).
//! 3. [`Sender`]: one per network namespace; reads the namespace's sysctls, probes the reply's
//!    route, applies the limiter and sends the datagram on a raw `IPPROTO_RAW` socket
//!    (`IP_HDRINCL`) created inside the namespace.
//!
//! Where the reply cannot be the kernel's, and why: `docs/KERNEL-BEHAVIOUR.md#reject-differences`
//! (`tests/reject_kernel.rs` compares with the real kernel's replies).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use emitter::event::{csum, Event, KIND_REJECT, PACKET_CAP};
use ipt_abi::abi::{
    IPT_ICMP_ADMIN_PROHIBITED, IPT_ICMP_ECHOREPLY, IPT_ICMP_HOST_PROHIBITED,
    IPT_ICMP_HOST_UNREACHABLE, IPT_ICMP_NET_PROHIBITED, IPT_ICMP_NET_UNREACHABLE,
    IPT_ICMP_PORT_UNREACHABLE, IPT_ICMP_PROT_UNREACHABLE, IPT_TCP_RESET,
};
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

use crate::sys::{in_netns, Map, SysError};

use super::reply::{
    dccp_gone, fold, nf_reject_verify_csum, not_packet_host, ones_sum, skb_csum_unnecessary,
    ARPHRD_LOOPBACK, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};
pub use super::reply::{hook, RejectError, ReplyKind};

/// `RTCF_BROADCAST` (include/uapi/linux/in_route.h).
pub const RTCF_BROADCAST: u32 = 0x1000_0000;
/// `RTCF_MULTICAST`.
pub const RTCF_MULTICAST: u32 = 0x2000_0000;
/// `RTCF_LOCAL`: the route delivers to this host.
pub const RTCF_LOCAL: u32 = 0x8000_0000;

/// ICMP_DEST_UNREACH
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP codes of type 3 (include/uapi/linux/icmp.h) that REJECT sends.
pub mod code {
    /// ICMP_NET_UNREACH
    pub const NET_UNREACH: u8 = 0;
    /// ICMP_HOST_UNREACH
    pub const HOST_UNREACH: u8 = 1;
    /// ICMP_PROT_UNREACH
    pub const PROT_UNREACH: u8 = 2;
    /// ICMP_PORT_UNREACH
    pub const PORT_UNREACH: u8 = 3;
    /// ICMP_FRAG_NEEDED (never rate limited)
    pub const FRAG_NEEDED: u8 = 4;
    /// ICMP_NET_ANO
    pub const NET_ANO: u8 = 9;
    /// ICMP_HOST_ANO
    pub const HOST_ANO: u8 = 10;
    /// ICMP_PKT_FILTERED
    pub const PKT_FILTERED: u8 = 13;
}

const IPPROTO_ICMP: u8 = 1;

const IP_DF: u16 = 0x4000;
const IP_OFFSET: u16 = 0x1fff;
const IPTOS_TOS_MASK: u8 = 0x1e;
const IPTOS_PREC_INTERNETCONTROL: u8 = 0xc0;
/// `NR_ICMP_TYPES`: the highest type `icmp_pointers` knows.
const NR_ICMP_TYPES: u8 = 18;
/// `INADDR_DUMMY`: `__icmp_send`'s source when routing found none.
const INADDR_DUMMY: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);
/// RFC 1812 via `__icmp_send`: an ICMP error is at most this long.
const ICMP_ERROR_MAX: usize = 576;

const IPOPT_END: u8 = 0;
const IPOPT_NOOP: u8 = 1;
const IPOPT_RR: u8 = 7;
const IPOPT_TIMESTAMP: u8 = 68;
const IPOPT_LSRR: u8 = 131;
const IPOPT_CIPSO: u8 = 134;
const IPOPT_SSRR: u8 = 137;
const IPOPT_TS_TSONLY: u8 = 0;
const IPOPT_TS_TSANDADDR: u8 = 1;
const IPOPT_TS_PRESPEC: u8 = 3;

/// What the namespace contributes to a reply (sysctls, the route toward the original source,
/// the clock of the IP timestamp option).
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    /// `net.ipv4.ip_default_ttl`: the TTL of both replies.
    pub default_ttl: u8,
    /// `net.ipv4.icmp_errors_use_inbound_ifaddr`.
    pub errors_use_inbound_ifaddr: bool,
    /// `net.ipv4.fwmark_reflect`: replies carry the original's mark (`IP4_REPLY_MARK`).
    pub fwmark_reflect: bool,
    /// MTU of the route toward the original's source (`dst_mtu` in `__icmp_send`); only
    /// matters below 576.
    pub route_mtu: u32,
    /// Milliseconds since midnight UTC (`inet_current_timestamp`) for an echoed timestamp
    /// option.
    pub timestamp_ms: u32,
    /// This namespace's addresses: an echoed prespecified timestamp option needs
    /// `inet_addr_type` of the next address.
    pub local_addrs: &'a [Ipv4Addr],
    /// DCCP is among the protocols `nf_reject_verify_csum` leaves unverified (partial
    /// checksums): kernels before 6.16, which still had DCCP.
    pub dccp_unverified: bool,
}

impl<'a> Params<'a> {
    /// The kernel's defaults (TTL 64, no inbound ifaddr, no mark reflection, MTU 1500).
    pub fn kernel_defaults() -> Params<'a> {
        Params::from_sysctls(&Sysctls::default())
    }

    /// The values of `s`, with MTU 1500, no local address and the current time.
    pub fn from_sysctls(s: &Sysctls) -> Params<'a> {
        Params {
            default_ttl: s.ip_default_ttl,
            errors_use_inbound_ifaddr: s.icmp_errors_use_inbound_ifaddr,
            fwmark_reflect: s.fwmark_reflect,
            route_mtu: 1500,
            timestamp_ms: inet_current_timestamp(SystemTime::now()),
            local_addrs: &[],
            dccp_unverified: !dccp_gone(),
        }
    }
}

/// `inet_current_timestamp`: milliseconds since midnight UTC.
pub fn inet_current_timestamp(now: SystemTime) -> u32 {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    ((d.as_secs() % 86_400) * 1000 + u64::from(d.subsec_millis())) as u32
}

/// Where the reply's source address comes from (`__icmp_send`'s `saddr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Already in the datagram: the original's destination (`RTCF_LOCAL`, and every RST).
    Fixed(Ipv4Addr),
    /// Routing picks it (a forwarded or locally sent original): the datagram says 0.0.0.0
    /// until [`Reply::set_source`].
    Route,
    /// `icmp_errors_use_inbound_ifaddr`: an address of the input device (`inet_select_addr`),
    /// else routing.
    InboundIfaddr {
        /// The input device.
        ifindex: u32,
    },
}

/// The reply to one event: a complete IPv4 datagram and how to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    datagram: Vec<u8>,
    kind: ReplyKind,
    dest: Ipv4Addr,
    source: Source,
    mark: u32,
    in_loopback: bool,
    to_local: bool,
    /// Offsets of echoed option slots that take the reply's source (`ip_rt_get_source`).
    src_slots: Vec<usize>,
}

impl Reply {
    /// The IP datagram, header included (ID 0; the raw socket fills ID and checksum as
    /// `raw_send_hdrinc` does).
    pub fn datagram(&self) -> &[u8] {
        &self.datagram
    }
    /// ICMP error or RST.
    pub fn kind(&self) -> ReplyKind {
        self.kind
    }
    /// Where to send it: the original's source, or the first hop of an echoed source route.
    pub fn dest(&self) -> Ipv4Addr {
        self.dest
    }
    /// Whether the source address is final.
    pub fn source(&self) -> Source {
        self.source
    }
    /// `skb->mark` of the reply (0 unless `fwmark_reflect`).
    pub fn mark(&self) -> u32 {
        self.mark
    }
    /// The original came in on a loopback device: `__icmp_send` skips every rate limit.
    pub fn in_loopback(&self) -> bool {
        self.in_loopback
    }
    /// The reply is routed back to this host (the original was sent from here): the
    /// per-destination limit does not apply (`icmpv4_xrlim_allow` on a loopback dst).
    pub fn to_local(&self) -> bool {
        self.to_local
    }

    /// Fixes the source address chosen by routing (or the inbound interface): writes it to the
    /// IP header and to the echoed record-route/timestamp slots that take it, and recomputes
    /// the header checksum. 0.0.0.0 becomes `INADDR_DUMMY`, as in `__icmp_send`.
    pub fn set_source(&mut self, addr: Ipv4Addr) {
        let addr = if addr.is_unspecified() {
            INADDR_DUMMY
        } else {
            addr
        };
        self.datagram[12..16].copy_from_slice(&addr.octets());
        for &at in &self.src_slots {
            self.datagram[at..at + 4].copy_from_slice(&addr.octets());
        }
        ip_send_check(&mut self.datagram);
        self.source = Source::Fixed(addr);
    }
}

/// The IPv4 header of the captured packet (checked: version 4, ihl >= 5, header captured).
#[derive(Clone, Copy)]
struct Ip<'a> {
    /// The captured bytes, from the IP header.
    p: &'a [u8],
    hlen: usize,
}

impl<'a> Ip<'a> {
    fn parse(p: &'a [u8]) -> Result<Ip<'a>, RejectError> {
        if p.len() < 20 {
            return Err(RejectError::Packet {
                what: "shorter than an IPv4 header",
            });
        }
        if p[0] >> 4 != 4 {
            return Err(RejectError::Packet {
                what: "IP version is not 4",
            });
        }
        let hlen = usize::from(p[0] & 0xf) * 4;
        if hlen < 20 || hlen > p.len() {
            return Err(RejectError::Packet {
                what: "IP header length below 20 or past the captured bytes",
            });
        }
        Ok(Ip { p, hlen })
    }
    fn tos(&self) -> u8 {
        self.p[1]
    }
    fn frag_off(&self) -> u16 {
        u16::from_be_bytes([self.p[6], self.p[7]])
    }
    fn is_later_fragment(&self) -> bool {
        self.frag_off() & IP_OFFSET != 0
    }
    fn proto(&self) -> u8 {
        self.p[9]
    }
    fn saddr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.p[12], self.p[13], self.p[14], self.p[15])
    }
    fn daddr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.p[16], self.p[17], self.p[18], self.p[19])
    }
    fn options(&self) -> &'a [u8] {
        &self.p[20..self.hlen]
    }
    /// Transport bytes that were captured.
    fn l4(&self) -> &'a [u8] {
        &self.p[self.hlen..]
    }
}

/// Decides and builds the reply the kernel's REJECT would send for `ev`; `Ok(None)` when the
/// kernel sends nothing.
pub fn reply(ev: &Event<'_>, params: &Params<'_>) -> Result<Option<Reply>, RejectError> {
    if ev.kind() != KIND_REJECT {
        return Err(RejectError::NotReject { kind: ev.kind() });
    }
    if ev.pf() != 2 {
        return Err(RejectError::Family { pf: ev.pf() });
    }
    if !matches!(ev.hook(), hook::LOCAL_IN | hook::FORWARD | hook::LOCAL_OUT) {
        return Err(RejectError::Hook { hook: ev.hook() });
    }
    // reject_tg: the enum ipt_reject_with to ICMP codes.
    let with = u32::from(ev.reject_with());
    let code = match with {
        IPT_ICMP_NET_UNREACHABLE => code::NET_UNREACH,
        IPT_ICMP_HOST_UNREACHABLE => code::HOST_UNREACH,
        IPT_ICMP_PROT_UNREACHABLE => code::PROT_UNREACH,
        IPT_ICMP_PORT_UNREACHABLE => code::PORT_UNREACH,
        IPT_ICMP_NET_PROHIBITED => code::NET_ANO,
        IPT_ICMP_HOST_PROHIBITED => code::HOST_ANO,
        IPT_ICMP_ADMIN_PROHIBITED => code::PKT_FILTERED,
        // reject_tg_check refuses it; reject_tg would do nothing.
        IPT_ICMP_ECHOREPLY => return Ok(None),
        IPT_TCP_RESET => {
            let ip = Ip::parse(ev.packet())?;
            return Ok(send_reset(ev, ip, params));
        }
        _ => {
            return Err(RejectError::With {
                with: ev.reject_with(),
            })
        }
    };
    let ip = Ip::parse(ev.packet())?;
    // The stack's own echo and timestamp replies get nothing at OUTPUT (icmp_xmit_lock):
    // docs/KERNEL-BEHAVIOUR.md#reject-target
    if ev.hook() == hook::LOCAL_OUT
        && ev.kernel_socket()
        && ip.proto() == IPPROTO_ICMP
        && matches!(
            ip.l4().first(),
            Some(&ICMP_ECHOREPLY_TYPE | &ICMP_TIMESTAMPREPLY_TYPE)
        )
    {
        return Ok(None);
    }
    Ok(send_unreach(ev, ip, code, params))
}

/// ICMP_ECHOREPLY and ICMP_TIMESTAMPREPLY: what icmp_reply sends.
const ICMP_ECHOREPLY_TYPE: u8 = 0;
const ICMP_TIMESTAMPREPLY_TYPE: u8 = 14;

/// `nf_ip_checksum(...) == 0`: the transport checksum is good, or this hook does not check it,
/// by `ip_summed` alone (`csum_valid` is the caller's business; with CHECKSUM_NONE the IP
/// header is in the sum): `docs/KERNEL-BEHAVIOUR.md#reject-checksum`. Without the whole packet
/// we cannot verify and assume good.
fn nf_ip_checksum_ok(ev: &Event<'_>, ip: Ip<'_>, proto: u8) -> bool {
    match ev.ip_summed() {
        csum::UNNECESSARY | csum::PARTIAL => return true,
        csum::COMPLETE if !matches!(ev.hook(), hook::PRE_ROUTING | hook::LOCAL_IN) => return true,
        _ => {}
    }
    if !ev.complete() {
        return true;
    }
    let l4 = ip.l4();
    let mut sum = ones_sum(l4, 0);
    if matches!(proto, IPPROTO_TCP | IPPROTO_UDP) {
        sum = pseudo_sum(sum, ip.saddr(), ip.daddr(), proto, l4.len());
    }
    if ev.ip_summed() == csum::NONE {
        sum = ones_sum(&ip.p[..ip.hlen], sum);
    }
    fold(sum) == 0xffff
}

/// `icmp_pointers[type].error`.
fn icmp_is_error(ty: u8) -> bool {
    ty > NR_ICMP_TYPES || !matches!(ty, 0 | 8 | 13..=18)
}

/// `nf_send_unreach` then `__icmp_send(skb, ICMP_DEST_UNREACH, code, 0, IPCB(skb))`
/// (`docs/KERNEL-BEHAVIOUR.md#reject-icmp-reply`).
fn send_unreach(ev: &Event<'_>, ip: Ip<'_>, code: u8, params: &Params<'_>) -> Option<Reply> {
    // nf_send_unreach
    if ip.is_later_fragment() {
        return None;
    }
    let proto = ip.proto();
    if !skb_csum_unnecessary(ev)
        && nf_reject_verify_csum(ip.l4(), proto, params.dccp_unverified)
        && !nf_ip_checksum_ok(ev, ip, proto)
    {
        return None;
    }
    // __icmp_send: no replies to physical or protocol broadcast/multicast.
    if not_packet_host(ev) || ev.rt_flags() & (RTCF_BROADCAST | RTCF_MULTICAST) != 0 {
        return None;
    }
    // ... nor to an ICMP error (an unknown type counts as one); an unreadable type: nothing.
    if proto == IPPROTO_ICMP {
        match ip.l4().first() {
            Some(&ty) if !icmp_is_error(ty) => {}
            _ => return None,
        }
    }
    let in_loopback = ev.dev_type() == ARPHRD_LOOPBACK;
    let input_route = matches!(ev.hook(), hook::LOCAL_IN | hook::FORWARD);
    let source = if ev.rt_flags() & RTCF_LOCAL != 0 {
        Source::Fixed(ip.daddr())
    } else if input_route && params.errors_use_inbound_ifaddr && ev.in_ifindex() != 0 {
        Source::InboundIfaddr {
            ifindex: ev.in_ifindex(),
        }
    } else {
        Source::Route
    };
    let tos = (ip.tos() & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL;
    // __ip_options_echo works from IPCB(skb)->opt: no compiled options, nothing echoed
    let echo = if ev.ipcb_optlen() == 0 {
        Echo::default()
    } else {
        options_echo(ip, params.local_addrs)?
    };
    let dest = echo.faddr.unwrap_or(ip.saddr());
    // The reply's own route must not be broadcast or multicast (`goto ende`).
    if dest.is_multicast() || dest.is_broadcast() {
        return None;
    }
    let room = (params.route_mtu as usize).min(ICMP_ERROR_MAX) as isize
        - 20
        - echo.data.len() as isize
        - 8;
    if room <= 20 {
        return None;
    }
    let quote = (ev.skb_len() as usize)
        .min(room as usize)
        .min(ev.packet().len());

    let hlen = 20 + echo.data.len();
    let mut d = vec![0u8; hlen + 8 + quote];
    d[0] = 0x40 | (hlen / 4) as u8;
    d[1] = tos;
    let total = d.len() as u16;
    d[2..4].copy_from_slice(&total.to_be_bytes());
    // ID 0 (drawn at send), no DF: the ICMP socket is IP_PMTUDISC_DONT.
    d[8] = params.default_ttl;
    d[9] = IPPROTO_ICMP;
    if let Source::Fixed(a) = source {
        d[12..16].copy_from_slice(&a.octets());
    }
    d[16..20].copy_from_slice(&dest.octets());
    d[20..hlen].copy_from_slice(&echo.data);
    // ip_options_build: the final destination ends an echoed source route; the timestamp.
    if let Some(at) = echo.srr_final {
        d[20 + at..24 + at].copy_from_slice(&ip.saddr().octets());
    }
    if let Some(at) = echo.time_slot {
        d[20 + at..24 + at].copy_from_slice(&params.timestamp_ms.to_be_bytes());
    }
    let src_slots: Vec<usize> = echo.src_slots.iter().map(|&at| 20 + at).collect();
    if let Source::Fixed(a) = source {
        for &at in &src_slots {
            d[at..at + 4].copy_from_slice(&a.octets());
        }
    }
    d[hlen] = ICMP_DEST_UNREACH;
    d[hlen + 1] = code;
    d[hlen + 8..].copy_from_slice(&ev.packet()[..quote]);
    let c = checksum(&d[hlen..]);
    d[hlen + 2..hlen + 4].copy_from_slice(&c.to_be_bytes());
    ip_send_check(&mut d);
    Some(Reply {
        datagram: d,
        kind: ReplyKind::Unreachable { code },
        dest,
        source,
        mark: if params.fwmark_reflect { ev.mark() } else { 0 },
        in_loopback,
        to_local: in_loopback || ev.hook() == hook::LOCAL_OUT,
        src_slots,
    })
}

/// `nf_send_reset`: `nf_reject_ip_tcphdr_get`, the route check, `nf_reject_iphdr_put` and
/// `nf_reject_ip_tcphdr_put` (`docs/KERNEL-BEHAVIOUR.md#reject-tcp-reset`).
fn send_reset(ev: &Event<'_>, ip: Ip<'_>, params: &Params<'_>) -> Option<Reply> {
    if ip.is_later_fragment() || ip.proto() != IPPROTO_TCP {
        return None;
    }
    let oth = ip.l4().get(..20)?;
    let flags = oth[13];
    if flags & TCP_RST != 0 || !nf_ip_checksum_ok(ev, ip, IPPROTO_TCP) {
        return None;
    }
    if ev.rt_flags() & (RTCF_BROADCAST | RTCF_MULTICAST) != 0 {
        return None;
    }
    let mut d = vec![0u8; 40];
    d[0] = 0x45;
    d[2..4].copy_from_slice(&40u16.to_be_bytes());
    d[6..8].copy_from_slice(&IP_DF.to_be_bytes());
    d[8] = params.default_ttl;
    d[9] = IPPROTO_TCP;
    d[12..16].copy_from_slice(&ip.daddr().octets());
    d[16..20].copy_from_slice(&ip.saddr().octets());
    let t = &mut d[20..];
    t[0..2].copy_from_slice(&oth[2..4]);
    t[2..4].copy_from_slice(&oth[0..2]);
    if flags & TCP_ACK != 0 {
        t[4..8].copy_from_slice(&oth[8..12]);
        t[13] = TCP_RST;
    } else {
        let seq = u32::from_be_bytes([oth[4], oth[5], oth[6], oth[7]]);
        let doff = u32::from(oth[12] >> 4) * 4;
        // Unsigned arithmetic as in the kernel: a doff past the segment wraps.
        let ack = seq
            .wrapping_add(u32::from(flags & TCP_SYN != 0))
            .wrapping_add(u32::from(flags & TCP_FIN != 0))
            .wrapping_add(ev.skb_len())
            .wrapping_sub(ip.hlen as u32)
            .wrapping_sub(doff);
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[13] = TCP_RST | TCP_ACK;
    }
    t[12] = 5 << 4;
    let sum = pseudo_sum(
        ones_sum(&d[20..], 0),
        ip.daddr(),
        ip.saddr(),
        IPPROTO_TCP,
        20,
    );
    let c = !fold(sum);
    d[36..38].copy_from_slice(&c.to_be_bytes());
    ip_send_check(&mut d);
    Some(Reply {
        datagram: d,
        kind: ReplyKind::Reset,
        dest: ip.saddr(),
        source: Source::Fixed(ip.daddr()),
        mark: if params.fwmark_reflect { ev.mark() } else { 0 },
        in_loopback: ev.dev_type() == ARPHRD_LOOPBACK,
        to_local: ev.hook() == hook::LOCAL_OUT,
        src_slots: Vec::new(),
    })
}

/// The reply's options (`__ip_options_echo` on the captured options, then the slots
/// `ip_options_build` fills). Offsets are relative to the start of the options.
#[derive(Debug, Default)]
struct Echo {
    /// The reply's options, padded with IPOPT_END to a multiple of 4.
    data: Vec<u8>,
    /// First hop of the reversed source route: the reply goes there.
    faddr: Option<Ipv4Addr>,
    /// Slot taking the final destination (the original's source) at the source route's end.
    srr_final: Option<usize>,
    /// Slots taking the reply's source address (record route, timestamp with address).
    src_slots: Vec<usize>,
    /// Slot taking the timestamp.
    time_slot: Option<usize>,
}

/// The parsed `struct ip_options` of the original: offsets into the options, and the
/// `*_needaddr`/`ts_needtime` flags `ip_options_compile` sets.
#[derive(Debug, Default)]
struct SrcOpts {
    rr: Option<usize>,
    rr_needaddr: bool,
    ts: Option<usize>,
    ts_needaddr: bool,
    ts_needtime: bool,
    srr: Option<usize>,
    cipso: Option<usize>,
}

/// `inet_addr_type(net, addr) != RTN_UNICAST` as far as the address list tells.
fn not_unicast(addr: Ipv4Addr, local: &[Ipv4Addr]) -> bool {
    local.contains(&addr) || addr.is_multicast() || addr.is_broadcast() || addr.is_unspecified()
}

/// `ip_options_compile` over the options as the hook saw them; `None` where it would fail.
fn options_compile(o: &[u8], local: &[Ipv4Addr]) -> Option<SrcOpts> {
    let mut s = SrcOpts::default();
    let mut i = 0;
    while i < o.len() {
        match o[i] {
            IPOPT_END => break,
            IPOPT_NOOP => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let l = o.len() - i;
        if l < 2 {
            return None;
        }
        let optlen = usize::from(o[i + 1]);
        if optlen < 2 || optlen > l {
            return None;
        }
        let opt = &o[i..i + optlen];
        match opt[0] {
            IPOPT_SSRR | IPOPT_LSRR => {
                if optlen < 3 || opt[2] < 4 || s.srr.is_some() {
                    return None;
                }
                s.srr = Some(i);
            }
            IPOPT_RR => {
                if s.rr.is_some() || optlen < 3 || opt[2] < 4 {
                    return None;
                }
                let ptr = usize::from(opt[2]);
                if ptr <= optlen {
                    if ptr + 3 > optlen {
                        return None;
                    }
                    s.rr_needaddr = true;
                }
                s.rr = Some(i);
            }
            IPOPT_TIMESTAMP => {
                if s.ts.is_some() || optlen < 4 || opt[2] < 5 {
                    return None;
                }
                let ptr = usize::from(opt[2]);
                if ptr <= optlen {
                    if ptr + 3 > optlen {
                        return None;
                    }
                    match opt[3] & 0xf {
                        IPOPT_TS_TSONLY => s.ts_needtime = true,
                        IPOPT_TS_TSANDADDR => {
                            if ptr + 7 > optlen {
                                return None;
                            }
                            s.ts_needaddr = true;
                            s.ts_needtime = true;
                        }
                        IPOPT_TS_PRESPEC => {
                            if ptr + 7 > optlen {
                                return None;
                            }
                            let a =
                                Ipv4Addr::new(opt[ptr - 1], opt[ptr], opt[ptr + 1], opt[ptr + 2]);
                            if not_unicast(a, local) {
                                s.ts_needtime = true;
                            }
                        }
                        _ => {}
                    }
                } else if opt[3] >> 4 == 15 {
                    return None;
                }
                s.ts = Some(i);
            }
            IPOPT_CIPSO => {
                if s.cipso.is_some() {
                    return None;
                }
                s.cipso = Some(i);
            }
            _ => {}
        }
        i += optlen;
    }
    Some(s)
}

/// `__ip_options_echo` + the slot bookkeeping of `ip_options_build`; `None` for its -EINVAL
/// (`docs/KERNEL-BEHAVIOUR.md#reject-ip-options`).
fn options_echo(ip: Ip<'_>, local: &[Ipv4Addr]) -> Option<Echo> {
    let o = ip.options();
    let mut e = Echo::default();
    if o.is_empty() {
        return Some(e);
    }
    let s = options_compile(o, local)?;
    if let Some(rr) = s.rr {
        let optlen = usize::from(o[rr + 1]);
        let soffset = usize::from(o[rr + 2]);
        let at = e.data.len();
        e.data.extend_from_slice(&o[rr..rr + optlen]);
        if s.rr_needaddr && soffset <= optlen {
            if soffset + 3 > optlen {
                return None;
            }
            e.data[at + 2] = (soffset + 4) as u8;
            e.src_slots.push(at + soffset - 1);
        }
    }
    if let Some(ts) = s.ts {
        let optlen = usize::from(o[ts + 1]);
        let mut soffset = usize::from(o[ts + 2]);
        let at = e.data.len();
        e.data.extend_from_slice(&o[ts..ts + optlen]);
        if soffset <= optlen {
            let mut needaddr = false;
            let mut needtime = false;
            if s.ts_needaddr {
                if soffset + 3 > optlen {
                    return None;
                }
                needaddr = true;
                soffset += 4;
            }
            if s.ts_needtime {
                if soffset + 3 > optlen {
                    return None;
                }
                if e.data[at + 3] & 0xf != IPOPT_TS_PRESPEC {
                    needtime = true;
                    soffset += 4;
                } else if soffset + 7 <= optlen {
                    let b = &e.data[at + soffset - 1..at + soffset + 3];
                    if not_unicast(Ipv4Addr::new(b[0], b[1], b[2], b[3]), local) {
                        needtime = true;
                        soffset += 8;
                    }
                }
            }
            e.data[at + 2] = soffset as u8;
            if needaddr {
                e.src_slots.push(at + soffset - 9);
            }
            if needtime {
                e.time_slot = Some(at + soffset - 5);
            }
        }
    }
    if let Some(srr) = s.srr {
        let start = &o[srr..];
        let optlen = usize::from(start[1]);
        let mut soffset = usize::from(start[2]);
        let mut doffset = 0usize;
        let at = e.data.len();
        let mut route = [0u8; 44];
        let mut faddr = None;
        if soffset > optlen {
            soffset = optlen + 1;
        }
        soffset = soffset.saturating_sub(4);
        if soffset > 3 {
            faddr = Some(Ipv4Addr::new(
                start[soffset - 1],
                start[soffset],
                start[soffset + 1],
                start[soffset + 2],
            ));
            soffset -= 4;
            doffset = 4;
            while soffset > 3 {
                route[doffset - 1..doffset + 3].copy_from_slice(&start[soffset - 1..soffset + 3]);
                soffset -= 4;
                doffset += 4;
            }
            // RFC 1812: a route that starts at the original's source is cut there.
            if start[soffset + 3..soffset + 7] == ip.saddr().octets() {
                doffset -= 4;
            }
        }
        if doffset > 3 {
            route[0] = start[0];
            route[1] = (doffset + 3) as u8;
            route[2] = 4;
            e.data.extend_from_slice(&route[..doffset + 3]);
            e.faddr = faddr;
            e.srr_final = Some(at + doffset - 1);
        }
    }
    if let Some(c) = s.cipso {
        let optlen = usize::from(o[c + 1]);
        e.data.extend_from_slice(&o[c..c + optlen]);
    }
    while e.data.len() % 4 != 0 {
        e.data.push(IPOPT_END);
    }
    // Options can only shrink or stay (40 bytes): guard against a hostile record anyway.
    if e.data.len() > 40 {
        return None;
    }
    Some(e)
}

fn pseudo_sum(sum: u64, s: Ipv4Addr, d: Ipv4Addr, proto: u8, len: usize) -> u64 {
    let sum = ones_sum(&s.octets(), sum);
    let sum = ones_sum(&d.octets(), sum);
    sum + u64::from(proto) + len as u64
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    !fold(ones_sum(data, 0))
}

/// `ip_send_check`: the header checksum of an IPv4 datagram.
fn ip_send_check(d: &mut [u8]) {
    let hlen = usize::from(d[0] & 0xf) * 4;
    d[10..12].fill(0);
    let c = checksum(&d[..hlen]);
    d[10..12].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------------------------
// rate limiting

/// The sysctls of a namespace that REJECT replies depend on (`/proc/sys/net/ipv4/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctls {
    /// `ip_default_ttl`
    pub ip_default_ttl: u8,
    /// `icmp_ratelimit`, in milliseconds (the per-destination token interval; 0: off)
    pub icmp_ratelimit_ms: u32,
    /// `icmp_ratemask`: bit N set = ICMP type N is rate limited
    pub icmp_ratemask: u32,
    /// `icmp_msgs_per_sec`: refill of the namespace-wide bucket
    pub icmp_msgs_per_sec: u32,
    /// `icmp_msgs_burst`: size of the namespace-wide bucket
    pub icmp_msgs_burst: u32,
    /// `icmp_errors_use_inbound_ifaddr`
    pub icmp_errors_use_inbound_ifaddr: bool,
    /// `fwmark_reflect`
    pub fwmark_reflect: bool,
    /// `net.ipv6.icmp.ratelimit`, in milliseconds
    pub icmpv6_ratelimit_ms: u32,
    /// `net.ipv6.icmp.ratemask`: bit N set = ICMPv6 type N is rate limited
    pub icmpv6_ratemask: [u64; 4],
    /// `net.ipv6.fwmark_reflect`
    pub ipv6_fwmark_reflect: bool,
}

/// `net.ipv6.icmp.ratemask`'s default, "0-1,3-127": every error type but Packet Too Big and
/// every informational type below 128 (`icmpv6_sysctl_init`).
pub const ICMPV6_RATEMASK_DEFAULT: [u64; 4] = [!(1u64 << 2), u64::MAX, 0, 0];

/// Parses a bitmap list sysctl (`proc_do_large_bitmap`: "0-1,3-127", empty for none).
pub fn parse_bitmap_list(text: &str) -> Option<[u64; 4]> {
    let mut m = [0u64; 4];
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let v = part.trim().parse::<u32>().ok()?;
                (v, v)
            }
        };
        if lo > hi || hi > 255 {
            return None;
        }
        for b in lo..=hi {
            m[(b / 64) as usize] |= 1 << (b % 64);
        }
    }
    Some(m)
}

impl Default for Sysctls {
    /// A new namespace's values (`docs/KERNEL-BEHAVIOUR.md#icmp-rate-limits`).
    fn default() -> Self {
        Sysctls {
            ip_default_ttl: 64,
            icmp_ratelimit_ms: 1000,
            icmp_ratemask: 0x1818,
            icmp_msgs_per_sec: 1000,
            icmp_msgs_burst: 50,
            icmp_errors_use_inbound_ifaddr: false,
            fwmark_reflect: false,
            icmpv6_ratelimit_ms: 100,
            icmpv6_ratemask: ICMPV6_RATEMASK_DEFAULT,
            ipv6_fwmark_reflect: false,
        }
    }
}

/// `XRLIM_BURST_FACTOR`: a destination may receive this many errors in a burst.
pub const XRLIM_BURST_FACTOR: u64 = 6;
/// Per-destination entries kept at most by default: the kernel's smallest
/// `inet_peer_threshold` (`docs/KERNEL-BEHAVIOUR.md#icmp-rate-limits`).
pub const DEFAULT_PEER_CAPACITY: usize = 4096;
/// `inet_peer_maxttl`: an idle entry lives this long while the cache is nearly empty.
pub const PEER_MAXTTL: Duration = Duration::from_secs(600);
/// `inet_peer_minttl`: ... and this long when it is nearly full.
pub const PEER_MINTTL: Duration = Duration::from_secs(120);
/// `PEER_MAX_GC`: entries examined per insertion.
const PEER_MAX_GC: usize = 32;

/// What the limiter follows: the namespace's sysctls, the tick it counts in, the bound on its
/// per-destination state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Ticks per second (the kernel counts in jiffies, `CONFIG_HZ`; 1000 counts milliseconds).
    pub hz: u32,
    /// `icmp_ratelimit` in milliseconds.
    pub ratelimit_ms: u32,
    /// `icmp_ratemask`.
    pub ratemask: u32,
    /// `icmp_msgs_per_sec`.
    pub msgs_per_sec: u32,
    /// `icmp_msgs_burst`.
    pub msgs_burst: u32,
    /// Most per-destination entries kept (for each family).
    pub peer_capacity: usize,
    /// `net.ipv6.icmp.ratelimit` in milliseconds.
    pub ratelimit6_ms: u32,
    /// `net.ipv6.icmp.ratemask`.
    pub ratemask6: [u64; 4],
}

impl RateConfig {
    /// The limits of `s`, in milliseconds, with [`DEFAULT_PEER_CAPACITY`].
    pub fn from_sysctls(s: &Sysctls) -> RateConfig {
        RateConfig {
            hz: 1000,
            ratelimit_ms: s.icmp_ratelimit_ms,
            ratemask: s.icmp_ratemask,
            msgs_per_sec: s.icmp_msgs_per_sec,
            msgs_burst: s.icmp_msgs_burst,
            peer_capacity: DEFAULT_PEER_CAPACITY,
            ratelimit6_ms: s.icmpv6_ratelimit_ms,
            ratemask6: s.icmpv6_ratemask,
        }
    }

    fn jiffies(&self, now: Duration) -> u64 {
        (now.as_nanos() * u128::from(self.hz.max(1)) / 1_000_000_000) as u64
    }

    /// `msecs_to_jiffies` (rounds up).
    fn ms_to_jiffies(&self, ms: u64) -> u64 {
        (ms * u64::from(self.hz)).div_ceil(1000)
    }

    /// `icmpv4_mask_allow`: true when the type is not rate limited at all.
    fn mask_allow(&self, ty: u8, code: u8) -> bool {
        ty > NR_ICMP_TYPES
            || (ty == ICMP_DEST_UNREACH && code == code::FRAG_NEEDED)
            || self.ratemask & (1 << ty) == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    rate_tokens: u64,
    rate_last: u64,
    dtime: u64,
}

/// The per-destination buckets of one family (`net->ipv4.peers`, `net->ipv6.peers`), bounded
/// like `inet_peer_gc`.
#[derive(Debug)]
struct Peers<A> {
    map: HashMap<A, Peer>,
    /// (dtime, address), oldest first
    lru: BTreeSet<(u64, A)>,
}

impl<A> Default for Peers<A> {
    fn default() -> Self {
        Peers {
            map: HashMap::new(),
            lru: BTreeSet::new(),
        }
    }
}

impl<A: Copy + Ord + std::hash::Hash> Peers<A> {
    /// `inet_getpeer_v4`/`_v6`: the entry, created full (`rate_last = jiffies - 60 * HZ`), after
    /// dropping entries idle longer than the fill-scaled TTL (all examined ones when full).
    fn get(&mut self, addr: A, now: u64, cfg: &RateConfig) -> &mut Peer {
        let hz = u64::from(cfg.hz);
        if !self.map.contains_key(&addr) {
            let cap = cfg.peer_capacity.max(1);
            let total = self.map.len();
            let ttl = if total >= cap {
                0
            } else {
                let max = PEER_MAXTTL.as_secs();
                let min = PEER_MINTTL.as_secs();
                (max - (max - min) * total as u64 / cap as u64) * hz
            };
            for _ in 0..PEER_MAX_GC {
                match self.lru.first().copied() {
                    Some((dtime, old)) if now.wrapping_sub(dtime) >= ttl => {
                        self.lru.remove(&(dtime, old));
                        self.map.remove(&old);
                    }
                    _ => break,
                }
            }
            self.lru.insert((now, addr));
        }
        let p = self.map.entry(addr).or_insert(Peer {
            rate_tokens: 0,
            rate_last: now.wrapping_sub(60 * hz),
            dtime: now,
        });
        // A lookup refreshes the entry's last use.
        if p.dtime != now {
            self.lru.remove(&(p.dtime, addr));
            self.lru.insert((now, addr));
            p.dtime = now;
        }
        p
    }
}

/// `inet_peer_xrlim_allow`: a token bucket of `XRLIM_BURST_FACTOR * timeout` ticks, one
/// message costs `timeout`.
fn inet_peer_xrlim_allow(p: &mut Peer, now: u64, timeout: u64) -> bool {
    let delta = now.wrapping_sub(p.rate_last);
    if delta != 0 {
        p.rate_last = now;
        p.rate_tokens = (p.rate_tokens + delta).min(XRLIM_BURST_FACTOR * timeout);
    }
    if p.rate_tokens >= timeout {
        p.rate_tokens -= timeout;
        true
    } else {
        false
    }
}

/// `icmp_send`'s rate limits for one namespace, on a clock the caller gives (`now` is any
/// monotonic time, e.g. `Instant::elapsed` since a fixed start). Order and state follow
/// `__icmp_send` (6.12+): `docs/KERNEL-BEHAVIOUR.md#icmp-rate-limits`.
///
/// Bound: at most [`RateConfig::peer_capacity`] destinations are remembered (about 80 bytes
/// each with the index), evicted as `inet_peer_gc` does; eviction changes nothing before the
/// cache is full (an entry idle for `6 * icmp_ratelimit` is as good as a fresh one).
pub struct RateLimiter {
    cfg: RateConfig,
    credit: i64,
    stamp: Option<u64>,
    peers: Peers<Ipv4Addr>,
    peers6: Peers<Ipv6Addr>,
    rng: Box<dyn FnMut() -> u32 + Send>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("cfg", &self.cfg)
            .field("credit", &self.credit)
            .field("stamp", &self.stamp)
            .field("peers", &self.peers.map.len())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter with random credit consumption, as the kernel's.
    pub fn new(cfg: RateConfig) -> RateLimiter {
        let mut x = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                | 1
        };
        RateLimiter::with_rng(
            cfg,
            Box::new(move || {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u32
            }),
        )
    }

    /// A limiter whose `icmp_global_consume` draws come from `rng` (reduced modulo 3).
    pub fn with_rng(cfg: RateConfig, rng: Box<dyn FnMut() -> u32 + Send>) -> RateLimiter {
        RateLimiter {
            cfg,
            credit: 0,
            stamp: None,
            peers: Peers::default(),
            peers6: Peers::default(),
            rng,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> RateConfig {
        self.cfg
    }

    /// Follows new sysctl values (state is kept, as the kernel keeps it).
    pub fn set_config(&mut self, cfg: RateConfig) {
        self.cfg = cfg;
    }

    /// Destinations currently remembered (both families).
    pub fn peers(&self) -> usize {
        self.peers.map.len() + self.peers6.map.len()
    }

    /// Whether `reply` may be sent at `now` (RSTs always may).
    pub fn check(&mut self, reply: &Reply, now: Duration) -> bool {
        self.check_routed(reply, now, || true)
    }

    /// [`RateLimiter::check`] with the route lookup between the two stages: `route()` false
    /// (no route) refuses without touching the per-destination bucket, as `__icmp_send` does.
    pub fn check_routed(
        &mut self,
        reply: &Reply,
        now: Duration,
        route: impl FnOnce() -> bool,
    ) -> bool {
        match reply.kind {
            ReplyKind::Reset => route(),
            ReplyKind::Unreachable { code } => self.allow_icmp(
                ICMP_DEST_UNREACH,
                code,
                reply.dest,
                reply.in_loopback,
                reply.to_local,
                now,
                route,
            ),
        }
    }

    /// The decision for any ICMP type and code, `icmp_send`'s sequence.
    #[allow(clippy::too_many_arguments, reason = "the inputs __icmp_send reads")]
    pub fn allow_icmp(
        &mut self,
        ty: u8,
        code: u8,
        dest: Ipv4Addr,
        in_loopback: bool,
        to_local: bool,
        now: Duration,
        route: impl FnOnce() -> bool,
    ) -> bool {
        let now = self.cfg.jiffies(now);
        let mut apply = false;
        // icmpv4_global_allow, unless the input device is a loopback
        if !in_loopback && !self.cfg.mask_allow(ty, code) {
            if !self.icmp_global_allow(now) {
                return false;
            }
            apply = true;
        }
        if !route() {
            return false;
        }
        // icmpv4_xrlim_allow
        if !apply {
            return true;
        }
        let timeout = self.cfg.ms_to_jiffies(u64::from(self.cfg.ratelimit_ms));
        let rc = if timeout == 0 || to_local {
            true
        } else {
            let cfg = self.cfg;
            inet_peer_xrlim_allow(self.peers.get(dest, now, &cfg), now, timeout)
        };
        if rc {
            // icmp_global_consume: this may make the credit negative.
            self.credit -= i64::from((self.rng)() % 3);
        }
        rc
    }

    /// The decision for an ICMPv6 error of `ty` to `dest`, `icmp6_send`'s sequence (6.12+):
    /// `icmpv6_global_allow` (the namespace-wide bucket IPv4 uses too) unless the skb's device
    /// is a loopback, the route lookup, then `icmpv6_xrlim_allow`: a route through a loopback
    /// device (`to_local`) always may; otherwise the destination's bucket of
    /// `net.ipv6.icmp.ratelimit` per message. Kernels before commit 0201eedb69b2 ("ipv6: icmp:
    /// remove tmo adjustment", 2026, in 6.18-stable; it also made the default 100 ms) divided
    /// that by 2^((128 - plen) / 32) for a route of prefix length `plen`; the kernel this was
    /// measured on (6.18.44) does not (`tests/reject6_kernel.rs`).
    pub fn allow_icmp6(
        &mut self,
        ty: u8,
        dest: Ipv6Addr,
        in_loopback: bool,
        to_local: bool,
        now: Duration,
        route: impl FnOnce() -> bool,
    ) -> bool {
        let now = self.cfg.jiffies(now);
        let mut apply = false;
        let masked = self.cfg.ratemask6[usize::from(ty / 64)] & (1 << (ty % 64)) != 0;
        if !in_loopback && masked {
            if !self.icmp_global_allow(now) {
                return false;
            }
            apply = true;
        }
        if !route() {
            return false;
        }
        if !apply {
            return true;
        }
        let timeout = self.cfg.ms_to_jiffies(u64::from(self.cfg.ratelimit6_ms));
        let rc = if to_local {
            true
        } else {
            let cfg = self.cfg;
            inet_peer_xrlim_allow(self.peers6.get(dest, now, &cfg), now, timeout)
        };
        if rc {
            self.credit -= i64::from((self.rng)() % 3);
        }
        rc
    }

    /// `icmp_global_allow`.
    fn icmp_global_allow(&mut self, now: u64) -> bool {
        if self.credit > 0 {
            return true;
        }
        let hz = u64::from(self.cfg.hz);
        // A namespace's stamp starts at 0, jiffies far away: the first refill is a full one.
        let delta = self.stamp.map_or(hz, |s| now.wrapping_sub(s).min(hz));
        if delta < hz / 50 {
            return false;
        }
        let incr = u64::from(self.cfg.msgs_per_sec) * delta / hz.max(1);
        if incr == 0 {
            return false;
        }
        self.stamp = Some(now);
        self.credit = (self.credit + incr as i64).min(i64::from(self.cfg.msgs_burst));
        true
    }
}

// ---------------------------------------------------------------------------------------------
// sending

/// Why a [`Sender`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Entering the namespace failed.
    #[error("entering the network namespace: {0}")]
    Netns(#[from] SysError),
    /// A socket call failed.
    #[error("{call}: {errno}")]
    Socket {
        /// The call.
        call: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// A sysctl could not be read or parsed.
    #[error("/proc/sys/net/ipv4/{name}: {what}")]
    Sysctl {
        /// The sysctl's file name.
        name: &'static str,
        /// What went wrong.
        what: String,
    },
    /// The event record is unusable.
    #[error(transparent)]
    Reject(#[from] RejectError),
    /// Sending a built reply failed.
    #[error("sending {what} from {from} to {to} (scope {scope}): {errno}")]
    Send {
        /// ICMPv6 error or TCP reset.
        what: &'static str,
        /// Its source (`::`: routing's choice).
        from: Ipv6Addr,
        /// Its destination.
        to: Ipv6Addr,
        /// Scope id of the destination (an interface index, 0: none).
        scope: u32,
        /// The errno.
        errno: Errno,
    },
}

impl SendError {
    fn io(call: &'static str, e: &std::io::Error) -> SendError {
        SendError::Socket {
            call,
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }
}

/// What [`Sender::handle`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reply went out.
    Sent(ReplyKind),
    /// The kernel would send nothing for this packet.
    NoReply,
    /// A rate limit refused it.
    RateLimited,
    /// No route back to the original's source.
    NoRoute,
}

const SYSCTLS: [&str; 7] = [
    "ip_default_ttl",
    "icmp_ratelimit",
    "icmp_ratemask",
    "icmp_msgs_per_sec",
    "icmp_msgs_burst",
    "icmp_errors_use_inbound_ifaddr",
    "fwmark_reflect",
];

/// How often [`Sender::handle`] re-reads the sysctls.
const SYSCTL_REFRESH: Duration = Duration::from_secs(1);

/// Sends the REJECT replies of one network namespace.
///
/// Its sockets and sysctl files are opened inside the namespace (a thread that entered it),
/// so they keep acting there from any thread: `/proc/sys/net` resolves to the opener's
/// namespace and stays bound to it.
#[derive(Debug)]
pub struct Sender {
    netns: OwnedFd,
    raw: OwnedFd,
    probe: UdpSocket,
    files: Vec<Option<File>>,
    sysctls: Sysctls,
    read_at: Instant,
    limiter: RateLimiter,
    epoch: Instant,
    mark: u32,
    /// SO_PRIORITY currently set on `raw` (0 or a reset's connection tag)
    priority: u32,
    /// the table's map of replies' connections, and the slot the next reply takes
    reply_ct: Option<(Map, u8)>,
    local: Vec<Ipv4Addr>,
    local_read: Option<Instant>,
    /// IPv6, when the namespace has it (`None` where a socket could not be made)
    v6: V6,
}

/// The IPv6 side of a [`Sender`]: a raw `IPPROTO_RAW` socket (the header is ours) for resets,
/// a raw `IPPROTO_ICMPV6` socket for errors (the kernel writes the header, and with it the
/// flow label `icmp6_send` would have: [`super::reject6`]), a UDP socket for route lookups.
#[derive(Debug)]
struct V6 {
    raw: Option<OwnedFd>,
    icmp: Option<OwnedFd>,
    probe: Option<UdpSocket>,
    files: Vec<Option<File>>,
    local: Vec<Ipv6Addr>,
    local_read: Option<Instant>,
}

const SYSCTLS6: [&str; 3] = ["icmp/ratelimit", "icmp/ratemask", "fwmark_reflect"];

impl V6 {
    /// Opens what it can in the current thread's namespace.
    fn open() -> V6 {
        let sock = |proto: SockProtocol| {
            socket::socket(
                AddressFamily::Inet6,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                proto,
            )
            .ok()
        };
        let icmp = sock(SockProtocol::IcmpV6);
        // Every ICMPv6 packet of the namespace is queued to a raw ICMPv6 socket; nothing is
        // read from it, so its queue is kept as small as the kernel allows.
        if let Some(fd) = &icmp {
            let _ = socket::setsockopt(fd, sockopt::RcvBuf, &0);
        }
        V6 {
            // IPPROTO_RAW on AF_INET6 implies IPV6_HDRINCL
            raw: sock(SockProtocol::Raw),
            icmp,
            probe: UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok(),
            files: SYSCTLS6
                .iter()
                .map(|n| File::open(format!("/proc/sys/net/ipv6/{n}")).ok())
                .collect(),
            local: Vec::new(),
            local_read: None,
        }
    }
}

/// Whether the packet's IP options hold a prespecified timestamp option.
fn has_prespec_timestamp(pkt: &[u8]) -> bool {
    let Ok(ip) = Ip::parse(pkt) else {
        return false;
    };
    let o = ip.options();
    let mut i = 0;
    while i < o.len() {
        match o[i] {
            IPOPT_END => return false,
            IPOPT_NOOP => i += 1,
            t => {
                let len = o.get(i + 1).map_or(0, |l| usize::from(*l));
                if t == IPOPT_TIMESTAMP && o.get(i + 3).is_some_and(|f| f & 0xf == IPOPT_TS_PRESPEC)
                {
                    return true;
                }
                if len < 2 {
                    return false;
                }
                i += len;
            }
        }
    }
    false
}

impl Sender {
    /// A sender for the namespace of `netns` (`/run/netns/NAME`, `/proc/PID/ns/net`).
    pub fn new(netns: BorrowedFd<'_>) -> Result<Sender, SendError> {
        let dup = netns
            .try_clone_to_owned()
            .map_err(|e| SendError::io("dup", &e))?;
        let (raw, probe, files, v6) = in_netns(netns, || -> Result<_, SendError> {
            // IPPROTO_RAW implies IP_HDRINCL; nonblocking so that a full send buffer drops
            // the reply instead of stalling the daemon.
            let raw = socket::socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                SockProtocol::Raw,
            )
            .map_err(|errno| SendError::Socket {
                call: "socket(AF_INET, SOCK_RAW, IPPROTO_RAW)",
                errno,
            })?;
            let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .map_err(|e| SendError::io("bind(udp probe)", &e))?;
            // Sysctls a kernel lacks (per-namespace icmp_msgs_* before 6.13) keep defaults.
            let files = SYSCTLS
                .iter()
                .map(|n| File::open(format!("/proc/sys/net/ipv4/{n}")).ok())
                .collect::<Vec<_>>();
            Ok((raw, probe, files, V6::open()))
        })??;
        let mut s = Sender {
            netns: dup,
            raw,
            probe,
            files,
            sysctls: Sysctls::default(),
            read_at: Instant::now(),
            limiter: RateLimiter::new(RateConfig::from_sysctls(&Sysctls::default())),
            epoch: Instant::now(),
            mark: 0,
            priority: 0,
            reply_ct: None,
            local: Vec::new(),
            local_read: None,
            v6,
        };
        s.refresh_sysctls()?;
        Ok(s)
    }

    /// Hands the replies' connections to the programs through `map`
    /// ([`emitter::MapRef::ReplyCt`]): each reply to a packet with a conntrack entry takes the
    /// next of its slots for the entry's fields, which the record carries.
    pub fn set_reply_ct(&mut self, map: Map) {
        self.reply_ct = Some((map, 0));
    }

    /// The sysctl values last read.
    pub fn sysctls(&self) -> &Sysctls {
        &self.sysctls
    }

    /// The limiter (its state is this namespace's).
    pub fn limiter_mut(&mut self) -> &mut RateLimiter {
        &mut self.limiter
    }

    /// Re-reads the namespace's sysctls now.
    pub fn refresh_sysctls(&mut self) -> Result<(), SendError> {
        let d = Sysctls::default();
        let mut v = [
            u32::from(d.ip_default_ttl),
            d.icmp_ratelimit_ms,
            d.icmp_ratemask,
            d.icmp_msgs_per_sec,
            d.icmp_msgs_burst,
            u32::from(d.icmp_errors_use_inbound_ifaddr),
            u32::from(d.fwmark_reflect),
        ];
        for (i, f) in self.files.iter().enumerate() {
            let Some(f) = f else { continue };
            let mut buf = [0u8; 32];
            let n = f.read_at(&mut buf, 0).map_err(|e| SendError::Sysctl {
                name: SYSCTLS[i],
                what: e.to_string(),
            })?;
            let text = String::from_utf8_lossy(&buf[..n]);
            // Negative values (ratelimit/per_sec < 0 are refused by the kernel) read as 0.
            let parsed: i64 = text.trim().parse().map_err(|_| SendError::Sysctl {
                name: SYSCTLS[i],
                what: format!("not a number: {:?}", text.trim()),
            })?;
            v[i] = parsed.clamp(0, i64::from(u32::MAX)) as u32;
        }
        let mut v6 = [String::new(), String::new(), String::new()];
        for (i, f) in self.v6.files.iter().enumerate() {
            let Some(f) = f else { continue };
            let mut buf = [0u8; 256];
            let n = f.read_at(&mut buf, 0).map_err(|e| SendError::Sysctl {
                name: SYSCTLS6[i],
                what: e.to_string(),
            })?;
            v6[i] = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
        }
        let bad6 = |i: usize| SendError::Sysctl {
            name: SYSCTLS6[i],
            what: format!("not understood: {:?}", v6[i]),
        };
        let num6 = |i: usize, default: u32| -> Result<u32, SendError> {
            if v6[i].is_empty() {
                return Ok(default);
            }
            let n: i64 = v6[i].parse().map_err(|_| bad6(i))?;
            Ok(n.clamp(0, i64::from(u32::MAX)) as u32)
        };
        let icmpv6_ratemask = if self.v6.files.get(1).is_some_and(Option::is_some) {
            parse_bitmap_list(&v6[1]).ok_or_else(|| bad6(1))?
        } else {
            d.icmpv6_ratemask
        };
        self.sysctls = Sysctls {
            ip_default_ttl: v[0].clamp(1, 255) as u8,
            icmp_ratelimit_ms: v[1],
            icmp_ratemask: v[2],
            icmp_msgs_per_sec: v[3],
            icmp_msgs_burst: v[4],
            icmp_errors_use_inbound_ifaddr: v[5] != 0,
            fwmark_reflect: v[6] != 0,
            icmpv6_ratelimit_ms: num6(0, d.icmpv6_ratelimit_ms)?,
            icmpv6_ratemask,
            ipv6_fwmark_reflect: num6(2, 0)? != 0,
        };
        let mut cfg = RateConfig::from_sysctls(&self.sysctls);
        cfg.hz = self.limiter.config().hz;
        cfg.peer_capacity = self.limiter.config().peer_capacity;
        self.limiter.set_config(cfg);
        self.read_at = Instant::now();
        Ok(())
    }

    /// Does what the kernel's REJECT would have done for `ev`: decide, rate limit, send.
    pub fn handle(&mut self, ev: &Event<'_>) -> Result<Outcome, SendError> {
        if self.read_at.elapsed() >= SYSCTL_REFRESH {
            self.refresh_sysctls()?;
        }
        if ev.pf() == super::reject6::NFPROTO_IPV6 {
            return self.handle6(ev);
        }
        // The address list only matters to an echoed prespecified timestamp option.
        if has_prespec_timestamp(ev.packet())
            && self
                .local_read
                .is_none_or(|t| t.elapsed() >= SYSCTL_REFRESH)
        {
            self.local = self.addresses()?.into_iter().map(|a| a.addr).collect();
            self.local_read = Some(Instant::now());
        }
        let local = std::mem::take(&mut self.local);
        let out = self.handle_with(ev, &local);
        self.local = local;
        out
    }

    fn handle_with(&mut self, ev: &Event<'_>, local: &[Ipv4Addr]) -> Result<Outcome, SendError> {
        let mut params = Params::from_sysctls(&self.sysctls);
        params.local_addrs = local;
        let Some(mut r) = reply(ev, &params)? else {
            return Ok(Outcome::NoReply);
        };
        let now = self.epoch.elapsed();
        let mut route = None;
        let mut probed = false;
        let allowed = match r.kind() {
            // nf_send_reset is not rate limited; its routing is the send's.
            ReplyKind::Reset => true,
            ReplyKind::Unreachable { .. } => {
                let probe = &self.probe;
                let dest = r.dest();
                self.limiter.check_routed(&r, now, || {
                    probed = true;
                    route = route_probe(probe, dest);
                    route.is_some()
                })
            }
        };
        if !allowed {
            return Ok(if probed && route.is_none() {
                Outcome::NoRoute
            } else {
                Outcome::RateLimited
            });
        }
        if let Some((src, mtu)) = route {
            if (mtu as usize) < ICMP_ERROR_MAX {
                params.route_mtu = mtu;
                match reply(ev, &params)? {
                    Some(again) => r = again,
                    None => return Ok(Outcome::NoReply),
                }
            }
            match r.source() {
                Source::Fixed(_) => {}
                Source::Route => r.set_source(src),
                Source::InboundIfaddr { ifindex } => {
                    let a = self.inbound_ifaddr(ifindex, r.dest())?;
                    r.set_source(a.unwrap_or(src));
                }
            }
        }
        let priority = self.reply_priority(ev);
        if priority != self.priority {
            socket::setsockopt(&self.raw, sockopt::Priority, &(priority as i32)).map_err(
                |errno| SendError::Socket {
                    call: "setsockopt(SO_PRIORITY)",
                    errno,
                },
            )?;
            self.priority = priority;
        }
        // A reset leaves by the rejected packet's socket's bound device, an ICMP error by
        // address only (docs/KERNEL-BEHAVIOUR.md#reject-tcp-reset).
        let oif = match r.kind() {
            ReplyKind::Reset => ev.bound_ifindex(),
            ReplyKind::Unreachable { .. } => 0,
        };
        match self.send_via(&r, oif) {
            Ok(()) => Ok(Outcome::Sent(r.kind())),
            // ip_route_me_harder / the output route failed: the kernel drops it too.
            Err(SendError::Socket {
                errno: Errno::ENETUNREACH | Errno::EHOSTUNREACH,
                ..
            }) => Ok(Outcome::NoRoute),
            Err(e) => Err(e),
        }
    }

    /// The reply's `skb->priority`: the rejected packet's connection, which the reply carries
    /// (docs/KERNEL-BEHAVIOUR.md#reject-reply-conntrack); the programs learn it from the
    /// priority (emitter::event::REPLY_PRIORITY_TAG).
    fn reply_priority(&mut self, ev: &Event<'_>) -> u32 {
        match (ev.ctinfo(), self.reply_ct.as_mut()) {
            (None, _) => 0,
            (Some(ctinfo), None) => emitter::event::reply_priority(ctinfo),
            (Some(ctinfo), Some((map, next))) => {
                let slot = *next;
                *next = next.wrapping_add(1);
                match map.update(&u32::from(slot).to_ne_bytes(), ev.ct_copy(), 0) {
                    Ok(()) => emitter::event::reply_priority_with_copy(ctinfo, slot),
                    Err(e) => {
                        tracing::warn!(error = %e, "REJECT: cannot hand the reply its connection");
                        emitter::event::reply_priority(ctinfo)
                    }
                }
            }
        }
    }

    /// [`Sender::handle`] for an IPv6 record: [`super::reject6::reply6`], `icmp6_send`'s limits
    /// and route, then the send.
    fn handle6(&mut self, ev: &Event<'_>) -> Result<Outcome, SendError> {
        use super::reject6::{reply6, Params6, Source6};
        if self
            .v6
            .local_read
            .is_none_or(|t| t.elapsed() >= SYSCTL_REFRESH)
        {
            self.v6.local = self.addresses6()?;
            self.v6.local_read = Some(Instant::now());
        }
        let params = Params6 {
            hop_limit: 64,
            fwmark_reflect: self.sysctls.ipv6_fwmark_reflect,
            local_addrs: &self.v6.local,
            dccp_unverified: !dccp_gone(),
        };
        let Some(mut r) = reply6(ev, &params)? else {
            return Ok(Outcome::NoReply);
        };
        let Some(probe) = self.v6.probe.as_ref() else {
            return Err(SendError::Socket {
                call: "socket(AF_INET6, SOCK_DGRAM)",
                errno: Errno::EAFNOSUPPORT,
            });
        };
        let (dest, scope) = (r.dest(), r.scope_ifindex());
        let now = self.epoch.elapsed();
        let mut route = None;
        let mut probed = false;
        let allowed = match r.kind() {
            ReplyKind::Reset => {
                probed = true;
                route = route_probe6(probe, dest, scope);
                route.is_some()
            }
            ReplyKind::Unreachable { .. } => self.limiter.allow_icmp6(
                super::reject6::ICMPV6_DEST_UNREACH,
                dest,
                r.in_loopback(),
                r.to_local(),
                now,
                || {
                    probed = true;
                    route = route_probe6(probe, dest, scope);
                    route.is_some()
                },
            ),
        };
        if !allowed {
            return Ok(if probed && route.is_none() {
                Outcome::NoRoute
            } else {
                Outcome::RateLimited
            });
        }
        if let Some((src, hops)) = route {
            r.set_hop_limit(hops);
            if r.source() == Source6::Route {
                r.set_source(src);
            }
        }
        let priority = self.reply_priority(ev);
        let fd = match r.kind() {
            ReplyKind::Reset => self.v6.raw.as_ref(),
            ReplyKind::Unreachable { .. } => self.v6.icmp.as_ref(),
        };
        let Some(fd) = fd else {
            return Err(SendError::Socket {
                call: "socket(AF_INET6, SOCK_RAW)",
                errno: Errno::EAFNOSUPPORT,
            });
        };
        let set = |call: &'static str, r: nix::Result<()>| {
            r.map_err(|errno| SendError::Socket { call, errno })
        };
        set(
            "setsockopt(SO_MARK)",
            socket::setsockopt(fd, sockopt::Mark, &r.mark()),
        )?;
        set(
            "setsockopt(SO_PRIORITY)",
            socket::setsockopt(fd, sockopt::Priority, &(priority as i32)),
        )?;
        let to = socket::SockaddrIn6::from(SocketAddrV6::new(dest, 0, 0, scope));
        let sent = match r.kind() {
            ReplyKind::Reset => {
                socket::sendto(fd.as_raw_fd(), r.datagram(), &to, MsgFlags::MSG_DONTWAIT).map(drop)
            }
            ReplyKind::Unreachable { .. } => {
                // The source is fixed by now; the kernel builds the header around it.
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: r.datagram()[8..24].try_into().unwrap_or([0; 16]),
                    },
                    ipi6_ifindex: scope,
                };
                let iov = [std::io::IoSlice::new(r.payload())];
                socket::sendmsg(
                    fd.as_raw_fd(),
                    &iov,
                    &[socket::ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::MSG_DONTWAIT,
                    Some(&to),
                )
                .map(drop)
            }
        };
        match sent {
            Ok(()) => Ok(Outcome::Sent(r.kind())),
            Err(Errno::ENETUNREACH | Errno::EHOSTUNREACH) => Ok(Outcome::NoRoute),
            Err(errno) => Err(SendError::Send {
                what: match r.kind() {
                    ReplyKind::Reset => "a TCP reset",
                    ReplyKind::Unreachable { .. } => "an ICMPv6 error",
                },
                from: Ipv6Addr::from(<[u8; 16]>::try_from(&r.datagram()[8..24]).unwrap_or([0; 16])),
                to: dest,
                scope,
                errno,
            }),
        }
    }

    /// The namespace's IPv6 addresses (`ipv6_chk_addr`).
    fn addresses6(&self) -> Result<Vec<Ipv6Addr>, SendError> {
        in_netns(
            self.netns.as_fd(),
            || -> Result<Vec<Ipv6Addr>, SendError> {
                let list = nix::ifaddrs::getifaddrs().map_err(|errno| SendError::Socket {
                    call: "getifaddrs",
                    errno,
                })?;
                Ok(list
                    .filter_map(|ifa| {
                        ifa.address
                            .and_then(|a| a.as_sockaddr_in6().map(|s| s.ip()))
                    })
                    .collect())
            },
        )?
    }

    /// Sends a reply as it is (no rate limit). The kernel fills the IP ID when it is 0 (and
    /// DF is clear), the source when it is 0.0.0.0, and always the header checksum.
    pub fn send(&mut self, r: &Reply) -> Result<(), SendError> {
        self.send_via(r, 0)
    }

    /// [`Sender::send`] out of device `oif` (0: by route), as a socket bound to it would
    /// send (IP_PKTINFO's ifindex is the flow's output interface).
    pub fn send_via(&mut self, r: &Reply, oif: u32) -> Result<(), SendError> {
        if r.mark() != self.mark {
            socket::setsockopt(&self.raw, sockopt::Mark, &r.mark()).map_err(|errno| {
                SendError::Socket {
                    call: "setsockopt(SO_MARK)",
                    errno,
                }
            })?;
            self.mark = r.mark();
        }
        let to = socket::SockaddrIn::from(SocketAddrV4::new(r.dest(), 0));
        if oif != 0 {
            let info = libc::in_pktinfo {
                ipi_ifindex: oif as i32,
                ipi_spec_dst: libc::in_addr { s_addr: 0 },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let iov = [std::io::IoSlice::new(r.datagram())];
            socket::sendmsg(
                self.raw.as_raw_fd(),
                &iov,
                &[socket::ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::MSG_DONTWAIT,
                Some(&to),
            )
            .map_err(|errno| SendError::Socket {
                call: "sendmsg(raw, IP_PKTINFO)",
                errno,
            })?;
            return Ok(());
        }
        socket::sendto(
            self.raw.as_raw_fd(),
            r.datagram(),
            &to,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(|errno| SendError::Socket {
            call: "sendto(raw)",
            errno,
        })?;
        Ok(())
    }

    /// The namespace's IPv4 addresses, per device in the kernel's order.
    fn addresses(&self) -> Result<Vec<IfAddr>, SendError> {
        in_netns(self.netns.as_fd(), || -> Result<Vec<IfAddr>, SendError> {
            let list = nix::ifaddrs::getifaddrs().map_err(|errno| SendError::Socket {
                call: "getifaddrs",
                errno,
            })?;
            let mut out = Vec::new();
            for ifa in list {
                let Some(addr) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
                    continue;
                };
                let mask = ifa
                    .netmask
                    .as_ref()
                    .and_then(|a| a.as_sockaddr_in())
                    .map_or(Ipv4Addr::BROADCAST, |m| m.ip());
                let ifindex =
                    nix::net::if_::if_nametoindex(ifa.interface_name.as_str()).unwrap_or(0);
                out.push(IfAddr {
                    ifindex,
                    addr: addr.ip(),
                    mask,
                });
            }
            Ok(out)
        })?
    }

    /// `inet_select_addr(dev, dst, RT_SCOPE_LINK)` as far as `getifaddrs` tells: the device's
    /// first address in `dst`'s subnet, else its first address; host-scope (127/8) ones skipped.
    fn inbound_ifaddr(&self, ifindex: u32, dst: Ipv4Addr) -> Result<Option<Ipv4Addr>, SendError> {
        let on_dev: Vec<IfAddr> = self
            .addresses()?
            .into_iter()
            .filter(|a| a.ifindex == ifindex && !a.addr.is_loopback())
            .collect();
        let same_net = |a: &&IfAddr| {
            u32::from(a.addr) & u32::from(a.mask) == u32::from(dst) & u32::from(a.mask)
        };
        Ok(on_dev
            .iter()
            .find(same_net)
            .or(on_dev.first())
            .map(|a| a.addr))
    }
}

#[derive(Debug, Clone, Copy)]
struct IfAddr {
    ifindex: u32,
    addr: Ipv4Addr,
    mask: Ipv4Addr,
}

/// The route toward `dest` in the probe's namespace: (preferred source, path MTU), or `None`
/// without a route. A UDP `connect` does the lookup and sends nothing.
fn route_probe(probe: &UdpSocket, dest: Ipv4Addr) -> Option<(Ipv4Addr, u32)> {
    // A connected UDP socket keeps the source address its first connect picked: dissolve the
    // association first, so that each destination gets the source its own route gives.
    crate::sys::disconnect(std::os::fd::AsFd::as_fd(probe)).ok()?;
    probe.connect(SocketAddrV4::new(dest, 9)).ok()?;
    let src = match probe.local_addr().ok()? {
        std::net::SocketAddr::V4(a) => *a.ip(),
        std::net::SocketAddr::V6(_) => return None,
    };
    let mtu = socket::getsockopt(probe, sockopt::IpMtu).ok()?;
    Some((src, u32::try_from(mtu).unwrap_or(0)))
}

/// The route toward `dest` (leaving by `scope` when non-zero): (the source address routing
/// picks, `ip6_dst_hoplimit`), or `None` without a route. A UDP `connect` does the lookup and
/// sends nothing; IPV6_UNICAST_HOPS of a connected socket without its own is the route's.
fn route_probe6(probe: &UdpSocket, dest: Ipv6Addr, scope: u32) -> Option<(Ipv6Addr, u8)> {
    crate::sys::disconnect(std::os::fd::AsFd::as_fd(probe)).ok()?;
    probe.connect(SocketAddrV6::new(dest, 9, 0, scope)).ok()?;
    let src = match probe.local_addr().ok()? {
        std::net::SocketAddr::V6(a) => *a.ip(),
        std::net::SocketAddr::V4(_) => return None,
    };
    let hops = socket::getsockopt(probe, sockopt::Ipv6Ttl).ok()?;
    Some((src, u8::try_from(hops).unwrap_or(64)))
}

// keep PACKET_CAP in view: the quote never exceeds what a record carries.
const _: () = assert!(ICMP_ERROR_MAX - 28 <= PACKET_CAP);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use crate::events::reply::*;
    use emitter::event::EventBuilder;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        assert_eq!(opts.len() % 4, 0);
        let hlen = 20 + opts.len();
        let mut p = vec![0u8; hlen];
        p[0] = 0x40 | (hlen / 4) as u8;
        p[1] = 0x12; // TOS with ECN bits 10
        p[2..4].copy_from_slice(&((hlen + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 63;
        p[9] = proto;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[20..].copy_from_slice(opts);
        p.extend_from_slice(payload);
        ip_send_check(&mut p);
        p
    }

    fn l4_csum(p: &mut [u8], at: usize) {
        let ip = Ip::parse(p).unwrap();
        let (s, d, proto, hlen) = (ip.saddr(), ip.daddr(), ip.proto(), ip.hlen);
        p[hlen + at..hlen + at + 2].fill(0);
        let sum = pseudo_sum(ones_sum(&p[hlen..], 0), s, d, proto, p.len() - hlen);
        let c = !fold(sum);
        p[hlen + at..hlen + at + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn udp(payload_len: usize, opts: &[u8]) -> Vec<u8> {
        let mut u = vec![0u8; 8 + payload_len];
        u[0..2].copy_from_slice(&40000u16.to_be_bytes());
        u[2..4].copy_from_slice(&53u16.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
        for (i, b) in u[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut p = ipv4(A, B, IPPROTO_UDP, opts, &u);
        l4_csum(&mut p, 6);
        p
    }

    fn tcp(flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 24];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 6 << 4; // one option word
        t[13] = flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t[20..24].copy_from_slice(&[2, 4, 5, 0xb4]); // MSS
        t.extend_from_slice(payload);
        let mut p = ipv4(A, B, IPPROTO_TCP, &[], &t);
        l4_csum(&mut p, 16);
        p
    }

    fn icmp(ty: u8, code: u8, rest: &[u8]) -> Vec<u8> {
        let mut m = vec![ty, code, 0, 0, 0, 1, 0, 1];
        m.extend_from_slice(rest);
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        ipv4(A, B, IPPROTO_ICMP, &[], &m)
    }

    /// A REJECT record as LOCAL_IN sees `pkt`: local route, checksum state NONE.
    fn input(pkt: &[u8], with: u32) -> EventBuilder {
        EventBuilder::new(KIND_REJECT, hook::LOCAL_IN, pkt)
            .arg(with as u8)
            .input(b"eth0", 2)
            .rt_flags(RTCF_LOCAL)
            .csum(csum::NONE, false)
    }

    fn run(b: EventBuilder) -> Option<Reply> {
        let raw = b.build();
        reply(&Event::parse(&raw).unwrap(), &Params::kernel_defaults()).unwrap()
    }

    fn run_with(b: EventBuilder, p: &Params<'_>) -> Option<Reply> {
        let raw = b.build();
        reply(&Event::parse(&raw).unwrap(), p).unwrap()
    }

    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn every_reject_with_code() {
        let pkt = udp(10, &[]);
        for (with, code) in [
            (IPT_ICMP_NET_UNREACHABLE, code::NET_UNREACH),
            (IPT_ICMP_HOST_UNREACHABLE, code::HOST_UNREACH),
            (IPT_ICMP_PROT_UNREACHABLE, code::PROT_UNREACH),
            (IPT_ICMP_PORT_UNREACHABLE, code::PORT_UNREACH),
            (IPT_ICMP_NET_PROHIBITED, code::NET_ANO),
            (IPT_ICMP_HOST_PROHIBITED, code::HOST_ANO),
            (IPT_ICMP_ADMIN_PROHIBITED, code::PKT_FILTERED),
        ] {
            let r = run(input(&pkt, with)).unwrap();
            assert_eq!(r.kind(), ReplyKind::Unreachable { code });
            assert_eq!(&r.datagram()[20..22], &[3, code]);
        }
        assert_eq!(run(input(&pkt, IPT_ICMP_ECHOREPLY)), None);
        // tcp-reset on UDP: nf_reject_ip_tcphdr_get refuses.
        assert_eq!(run(input(&pkt, IPT_TCP_RESET)), None);
        let raw = input(&pkt, 0).arg(9).build();
        assert_eq!(
            reply(&Event::parse(&raw).unwrap(), &Params::kernel_defaults()),
            Err(RejectError::With { with: 9 })
        );
    }

    #[test]
    fn bad_records() {
        let pkt = udp(10, &[]);
        let p = Params::kernel_defaults();
        let raw = EventBuilder::new(emitter::event::KIND_LOG, 1, &pkt).build();
        assert_eq!(
            reply(&Event::parse(&raw).unwrap(), &p),
            Err(RejectError::NotReject { kind: 2 })
        );
        let raw = EventBuilder::new(KIND_REJECT, hook::PRE_ROUTING, &pkt).build();
        assert_eq!(
            reply(&Event::parse(&raw).unwrap(), &p),
            Err(RejectError::Hook { hook: 0 })
        );
        let mut v6 = pkt.clone();
        v6[0] = 0x65;
        let raw = input(&v6, 3).build();
        assert!(matches!(
            reply(&Event::parse(&raw).unwrap(), &p),
            Err(RejectError::Packet { .. })
        ));
        let raw = input(&pkt[..12], 3).build();
        assert!(matches!(
            reply(&Event::parse(&raw).unwrap(), &p),
            Err(RejectError::Packet { .. })
        ));
    }

    #[test]
    fn icmp_error_header_and_quote() {
        let pkt = udp(100, &[]);
        let r = run(input(&pkt, IPT_ICMP_PORT_UNREACHABLE)).unwrap();
        let d = r.datagram();
        assert_eq!(d.len(), 20 + 8 + pkt.len());
        assert_eq!(d[0], 0x45);
        // RT_TOS(0x12) | IPTOS_PREC_INTERNETCONTROL: ECN bits dropped
        assert_eq!(d[1], 0xd2);
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), d.len());
        assert_eq!(&d[4..8], &[0, 0, 0, 0], "ID 0, no DF");
        assert_eq!((d[8], d[9]), (64, IPPROTO_ICMP));
        assert_eq!(
            &d[12..16],
            &B.octets(),
            "RTCF_LOCAL: from the original's destination"
        );
        assert_eq!(&d[16..20], &A.octets());
        assert_eq!(checksum(&d[..20]), 0, "IP header checksum");
        assert_eq!(checksum(&d[20..]), 0, "ICMP checksum");
        assert_eq!(&d[24..28], &[0; 4]);
        assert_eq!(&d[28..], &pkt[..]);
        assert_eq!(r.dest(), A);
        assert_eq!(r.source(), Source::Fixed(B));
        assert_eq!(r.mark(), 0);
        assert!(!r.in_loopback() && !r.to_local());
    }

    #[test]
    fn only_compiled_options_are_echoed() {
        // A packet a raw IP_HDRINCL socket wrote with a record route: the stack compiled no
        // options into its control block, and icmp_send echoes none (20 + 8 + the quote).
        let rr = [IPOPT_RR, 11, 8, 10, 0, 0, 2, 0, 0, 0, 0, IPOPT_END];
        let pkt = udp(10, &rr);
        let raw = input(&pkt, 3).ipcb_optlen(0);
        let r = run(raw).unwrap();
        assert_eq!(r.datagram()[0], 0x45, "no options in the reply");
        assert_eq!(r.datagram().len(), 28 + pkt.len());
        // Received, the same packet's options are compiled and echoed.
        let r = run(input(&pkt, 3)).unwrap();
        assert_eq!(r.datagram()[0], 0x48);
        assert_eq!(r.datagram().len(), 40 + pkt.len());
    }

    #[test]
    fn quote_length_big_packets_and_options() {
        // 576 - 20 - 8 = 548 bytes of a 1028-byte datagram.
        let pkt = udp(1000, &[]);
        let r = run(input(&pkt, 3)).unwrap();
        assert_eq!(r.datagram().len(), 576);
        assert_eq!(&r.datagram()[28..], &pkt[..548]);
        // With an echoed 12-byte record route: 576 - 20 - 12 - 8 = 536.
        let rr = [IPOPT_RR, 11, 8, 10, 0, 0, 2, 0, 0, 0, 0, IPOPT_END];
        let pkt = udp(1000, &rr);
        let r = run(input(&pkt, 3)).unwrap();
        assert_eq!(r.datagram().len(), 576);
        assert_eq!(r.datagram()[0], 0x48);
        assert_eq!(&r.datagram()[40..], &pkt[..536]);
        // A small route MTU shrinks the room: 400 - 28 = 372.
        let mut p = Params::kernel_defaults();
        p.route_mtu = 400;
        let pkt = udp(1000, &[]);
        let r = run_with(input(&pkt, 3), &p).unwrap();
        assert_eq!(r.datagram().len(), 400);
        // ... down to no reply when not even an IP header fits.
        p.route_mtu = 48;
        assert_eq!(run_with(input(&pkt, 3), &p), None);
        p.route_mtu = 49;
        assert_eq!(run_with(input(&pkt, 3), &p).unwrap().datagram().len(), 49);
    }

    #[test]
    fn truncated_record_quotes_what_it_has() {
        let pkt = udp(PACKET_CAP + 500, &[]);
        let raw = input(&pkt, 3).csum(csum::PARTIAL, false).build();
        let ev = Event::parse(&raw).unwrap();
        assert!(!ev.complete());
        let r = reply(&ev, &Params::kernel_defaults()).unwrap().unwrap();
        assert_eq!(&r.datagram()[28..], &pkt[..548]);
    }

    #[test]
    fn rst_for_syn() {
        let pkt = tcp(TCP_SYN, 1000, 0, &[]);
        let r = run(input(&pkt, IPT_TCP_RESET)).unwrap();
        let d = r.datagram();
        assert_eq!(r.kind(), ReplyKind::Reset);
        assert_eq!(d.len(), 40);
        assert_eq!(&d[..4], &[0x45, 0, 0, 40]);
        assert_eq!(&d[4..8], &[0, 0, 0x40, 0], "ID 0, DF");
        assert_eq!((d[8], d[9]), (64, IPPROTO_TCP));
        assert_eq!(&d[12..16], &B.octets());
        assert_eq!(&d[16..20], &A.octets());
        assert_eq!(&d[20..24], &[0, 80, 0x9c, 0x40], "ports swapped");
        assert_eq!(be32(&d[24..]), 0, "no ACK in the original: seq 0");
        assert_eq!(be32(&d[28..]), 1001, "SYN counts one");
        assert_eq!((d[32], d[33]), (0x50, TCP_RST | TCP_ACK));
        assert_eq!(&d[34..36], &[0, 0], "window 0");
        assert_eq!(&d[38..40], &[0, 0], "urgent pointer 0");
        assert_eq!(checksum(&d[..20]), 0);
        let sum = pseudo_sum(ones_sum(&d[20..], 0), B, A, IPPROTO_TCP, 20);
        assert_eq!(fold(sum), 0xffff, "TCP checksum");
        assert_eq!(r.dest(), A);
    }

    #[test]
    fn rst_for_ack_segment() {
        let pkt = tcp(TCP_ACK | 0x08, 5000, 0xdead_beef, &[7; 100]);
        let r = run(input(&pkt, IPT_TCP_RESET)).unwrap();
        let d = r.datagram();
        assert_eq!(be32(&d[24..]), 0xdead_beef, "seq = the original's ack_seq");
        assert_eq!(be32(&d[28..]), 0);
        assert_eq!(d[33], TCP_RST, "no ACK flag");
    }

    #[test]
    fn rst_for_fin_with_payload() {
        let pkt = tcp(TCP_FIN | 0x08, u32::MAX - 10, 0, &[1; 50]);
        let r = run(input(&pkt, IPT_TCP_RESET)).unwrap();
        let d = r.datagram();
        assert_eq!(be32(&d[24..]), 0);
        // seq + FIN + 50 bytes of payload (the option word is header), wrapping.
        assert_eq!(be32(&d[28..]), (u32::MAX - 10).wrapping_add(51));
        assert_eq!(d[33], TCP_RST | TCP_ACK);
    }

    #[test]
    fn no_rst_for_rst_or_fragments() {
        assert_eq!(run(input(&tcp(TCP_RST, 1, 0, &[]), 7)), None);
        assert_eq!(run(input(&tcp(TCP_RST | TCP_ACK, 1, 2, &[]), 7)), None);
        let mut frag = tcp(TCP_SYN, 1, 0, &[]);
        frag[6..8].copy_from_slice(&(0x2000u16 | 3).to_be_bytes());
        ip_send_check(&mut frag);
        let ev = |p: &[u8], w| input(p, w).csum(csum::UNNECESSARY, false);
        assert_eq!(run(ev(&frag, 7)), None);
        assert_eq!(run(ev(&frag, 3)), None);
        // The first fragment (MF set, offset 0) still gets a reply.
        let mut first = tcp(TCP_SYN, 1, 0, &[]);
        first[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        ip_send_check(&mut first);
        assert!(run(ev(&first, 7)).is_some());
        assert!(run(ev(&first, 3)).is_some());
        // A segment too short for a TCP header.
        let short = ipv4(A, B, IPPROTO_TCP, &[], &[0; 12]);
        assert_eq!(run(ev(&short, 7)), None);
    }

    #[test]
    fn no_icmp_error_for_icmp_errors() {
        let inner = udp(4, &[]);
        for ty in [3u8, 4, 5, 11, 12, 1, 2, 6, 7, 9, 10, 19, 255] {
            assert_eq!(run(input(&icmp(ty, 0, &inner[..28]), 3)), None, "type {ty}");
        }
        for ty in [0u8, 8, 13, 14, 15, 16, 17, 18] {
            let r = run(input(&icmp(ty, 0, &[]), 3)).unwrap_or_else(|| panic!("type {ty}"));
            assert_eq!(r.datagram()[28 + 20], ty, "quotes the query");
        }
        // ICMP with no type byte: skb_header_pointer fails.
        let empty = ipv4(A, B, IPPROTO_ICMP, &[], &[]);
        assert_eq!(run(input(&empty, 3).csum(csum::UNNECESSARY, false)), None);
    }

    #[test]
    fn broadcast_and_multicast() {
        let pkt = udp(10, &[]);
        for f in [RTCF_BROADCAST, RTCF_MULTICAST] {
            assert_eq!(run(input(&pkt, 3).rt_flags(RTCF_LOCAL | f)), None);
            let syn = tcp(TCP_SYN, 1, 0, &[]);
            assert_eq!(run(input(&syn, 7).rt_flags(RTCF_LOCAL | f)), None);
        }
        // Link-layer multicast destination (PACKET_MULTICAST): no ICMP, but an RST.
        let mut mac = [0u8; 14];
        mac[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
        assert_eq!(run(input(&pkt, 3).mac(ARPHRD_ETHER, 14, &mac)), None);
        let syn = tcp(TCP_SYN, 1, 0, &[]);
        assert!(run(input(&syn, 7).mac(ARPHRD_ETHER, 14, &mac)).is_some());
        mac[0] = 0x02;
        assert!(run(input(&pkt, 3).mac(ARPHRD_ETHER, 14, &mac)).is_some());
        // Replies to a multicast source would take a multicast route.
        let mut m = udp(10, &[]);
        m[12..16].copy_from_slice(&[224, 0, 0, 1]);
        ip_send_check(&mut m);
        assert_eq!(run(input(&m, 3).csum(csum::UNNECESSARY, false)), None);
    }

    #[test]
    fn checksums() {
        let mut bad_udp = udp(10, &[]);
        bad_udp[27] ^= 0xff;
        let mut bad_tcp = tcp(TCP_SYN, 1, 0, &[]);
        bad_tcp[37] ^= 0xff;
        let mut bad_icmp = icmp(8, 0, &[1, 2, 3]);
        bad_icmp[24] ^= 0xff;
        for (p, w) in [(&bad_udp, 3), (&bad_tcp, 7), (&bad_tcp, 3), (&bad_icmp, 3)] {
            // CHECKSUM_NONE, whole packet captured: verified, bad, nothing sent.
            assert_eq!(run(input(p, w)), None);
            // The device or stack vouched for it.
            assert!(run(input(p, w).csum(csum::UNNECESSARY, false)).is_some());
            assert!(run(input(p, w).csum(csum::PARTIAL, false)).is_some());
            // csum_valid counts for ICMP errors (nf_send_unreach asks skb_csum_unnecessary
            // first), not for resets (nf_send_reset's nf_ip_checksum sums again).
            assert_eq!(
                run(input(p, w).csum(csum::NONE, true)).is_some(),
                w != 7,
                "with-{w}"
            );
            // CHECKSUM_COMPLETE is verified at LOCAL_IN only.
            assert_eq!(run(input(p, w).csum(csum::COMPLETE, false)), None);
            let fwd = EventBuilder::new(KIND_REJECT, hook::FORWARD, p)
                .arg(w as u8)
                .csum(csum::COMPLETE, false);
            assert!(run(fwd).is_some());
            let fwd = EventBuilder::new(KIND_REJECT, hook::FORWARD, p)
                .arg(w as u8)
                .csum(csum::NONE, false);
            assert_eq!(run(fwd), None, "CHECKSUM_NONE is verified at FORWARD");
        }
        // A whole 1500-byte datagram is captured, and verified.
        let mut full = udp(PACKET_CAP - 28, &[]);
        assert!(run(input(&full, 3)).is_some());
        full[27] ^= 0xff;
        assert_eq!(run(input(&full, 3)), None, "a bad checksum over 1500 bytes");
        // Good checksums pass.
        assert!(run(input(&udp(10, &[]), 3)).is_some());
        assert!(run(input(&tcp(TCP_SYN, 1, 0, &[]), 7)).is_some());
        assert!(run(input(&icmp(8, 0, &[1, 2, 3]), 3)).is_some());
        // UDP without checksum is not verified.
        let mut no_sum = udp(10, &[]);
        no_sum[26..28].fill(0);
        assert!(run(input(&no_sum, 3)).is_some());
        // Protocols with other integrity checks are not verified.
        for proto in [
            IPPROTO_GRE,
            IPPROTO_ESP,
            IPPROTO_AH,
            IPPROTO_SCTP,
            IPPROTO_UDPLITE,
        ] {
            assert!(run(input(&ipv4(A, B, proto, &[], &[1, 2, 3, 4]), 3)).is_some());
        }
        // DCCP (partial checksums) before 6.16 only, when the kernel still had it.
        let dccp = || input(&ipv4(A, B, IPPROTO_DCCP, &[], &[1, 2, 3, 4]), 3);
        for unverified in [true, false] {
            let p = Params {
                dccp_unverified: unverified,
                ..Params::kernel_defaults()
            };
            assert_eq!(run_with(dccp(), &p).is_some(), unverified);
        }
        // Any other protocol: its payload must sum to zero (nf_ip_checksum with csum 0).
        assert_eq!(run(input(&ipv4(A, B, 253, &[], &[1, 2, 3, 4]), 3)), None);
        assert!(run(input(&ipv4(A, B, 253, &[], &[0xff, 0xff]), 3)).is_some());
        // Not all of it captured: cannot verify, assumed good.
        let mut big = udp(PACKET_CAP + 500, &[]);
        big[27] ^= 0xff;
        assert!(run(input(&big, 3)).is_some());
    }

    #[test]
    fn forwarded_source_and_mark() {
        let pkt = udp(10, &[]);
        let fwd = EventBuilder::new(KIND_REJECT, hook::FORWARD, &pkt)
            .arg(3)
            .input(b"eth1", 5)
            .mark(0x77)
            .csum(csum::NONE, false);
        let mut r = run(fwd.clone()).unwrap();
        assert_eq!(r.source(), Source::Route);
        assert_eq!(&r.datagram()[12..16], &[0; 4]);
        r.set_source(Ipv4Addr::new(10, 9, 9, 9));
        assert_eq!(&r.datagram()[12..16], &[10, 9, 9, 9]);
        assert_eq!(checksum(&r.datagram()[..20]), 0);
        assert_eq!(r.source(), Source::Fixed(Ipv4Addr::new(10, 9, 9, 9)));
        r.set_source(Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.source(), Source::Fixed(INADDR_DUMMY));
        let mut p = Params::kernel_defaults();
        p.errors_use_inbound_ifaddr = true;
        p.fwmark_reflect = true;
        let r = run_with(fwd, &p).unwrap();
        assert_eq!(r.source(), Source::InboundIfaddr { ifindex: 5 });
        assert_eq!(r.mark(), 0x77);
        // Locally sent originals: routing picks, the reply comes back to this host.
        let out = EventBuilder::new(KIND_REJECT, hook::LOCAL_OUT, &pkt)
            .arg(3)
            .output(b"eth1", 5);
        let r = run_with(out, &p).unwrap();
        assert_eq!(
            r.source(),
            Source::Route,
            "inbound ifaddr needs an input route"
        );
        assert!(r.to_local());
        // Coming in on lo: no rate limit at all.
        let lo = input(&pkt, 3).mac(ARPHRD_LOOPBACK, 14, &[0; 14]);
        assert!(run(lo).unwrap().in_loopback());
        // An RST's mark follows fwmark_reflect too.
        let syn = tcp(TCP_SYN, 1, 0, &[]);
        assert_eq!(run_with(input(&syn, 7).mark(5), &p).unwrap().mark(), 5);
        assert_eq!(run(input(&syn, 7).mark(5)).unwrap().mark(), 0);
    }

    #[test]
    fn record_route_echo() {
        // As LOCAL_IN sees it: the receiver recorded B, the pointer moved to 8.
        let rr = [IPOPT_RR, 11, 8, 10, 0, 0, 2, 0, 0, 0, 0, IPOPT_END];
        let pkt = udp(10, &rr);
        let r = run(input(&pkt, 3)).unwrap();
        let d = r.datagram();
        assert_eq!(d[0], 0x48);
        // Copied, pointer past a new slot, the reply's source in it, END padding.
        assert_eq!(&d[20..32], &[7, 11, 12, 10, 0, 0, 2, 10, 0, 0, 2, 0]);
        assert_eq!(&d[40..], &pkt[..]);
        assert_eq!(checksum(&d[..32]), 0);
        assert_eq!(checksum(&d[32..]), 0);
        // Routed source: the slot waits for it.
        let fwd = EventBuilder::new(KIND_REJECT, hook::FORWARD, &pkt).arg(3);
        let mut r = run(fwd).unwrap();
        assert_eq!(&r.datagram()[27..31], &[0; 4]);
        r.set_source(Ipv4Addr::new(10, 1, 1, 1));
        assert_eq!(&r.datagram()[27..31], &[10, 1, 1, 1]);
        // A full record route is copied as is.
        let full = [IPOPT_RR, 7, 8, 10, 0, 0, 2, IPOPT_END];
        let r = run(input(&udp(10, &full), 3)).unwrap();
        assert_eq!(&r.datagram()[20..28], &full);
        // The input path wrote B into the first slot without refreshing the header
        // checksum: with CHECKSUM_NONE, nf_ip_checksum (which sums the header too) fails and
        // the kernel stays silent; a device-verified packet gets its reply.
        let fresh = [IPOPT_RR, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, IPOPT_END];
        let mut stale = udp(10, &fresh);
        stale[22] = 8;
        stale[23..27].copy_from_slice(&B.octets());
        assert_eq!(run(input(&stale, 3)), None);
        assert_eq!(
            run(input(&stale, 3).csum(csum::NONE, true))
                .unwrap()
                .datagram()[22],
            12
        );
        assert!(run(input(&stale, 3).csum(csum::PARTIAL, false)).is_some());
        assert!(run(input(&stale, 3).csum(csum::COMPLETE, false)).is_some());
        let syn_rr = {
            let mut p = tcp(TCP_SYN, 1, 0, &[]);
            let mut q = p[..20].to_vec();
            q[0] = 0x48;
            q.extend_from_slice(&[IPOPT_RR, 7, 8, 10, 0, 0, 2, IPOPT_END]);
            q.extend_from_slice(&p.split_off(20));
            let total = q.len() as u16;
            q[2..4].copy_from_slice(&total.to_be_bytes());
            q
        };
        assert_eq!(run(input(&syn_rr, 7)), None, "stale header, RST path too");
        // conntrack's check at PRE_ROUTING left csum_valid: nf_send_reset does not look at it
        assert_eq!(run(input(&syn_rr, 7).csum(csum::NONE, true)), None);
        assert!(run(input(&syn_rr, 7).csum(csum::UNNECESSARY, false)).is_some());
        // A malformed one (room for less than an address): __ip_options_echo fails.
        let torn = [IPOPT_RR, 9, 8, 10, 0, 0, 2, 0, 0, IPOPT_END, 0, 0];
        assert_eq!(run(input(&udp(10, &torn), 3)), None);
    }

    #[test]
    fn source_route_echo() {
        // LSRR A -> R1 -> R2 -> B, fully used: list [R1, R2], pointer past the end.
        let r1 = [192, 168, 1, 1];
        let r2 = [192, 168, 2, 1];
        let mut o = vec![IPOPT_LSRR, 11, 12];
        o.extend_from_slice(&r1);
        o.extend_from_slice(&r2);
        o.push(IPOPT_END);
        let pkt = udp(10, &o);
        let r = run(input(&pkt, 3).csum(csum::UNNECESSARY, false)).unwrap();
        let d = r.datagram();
        // Reply goes to the last hop; the option lists the way back, then the final
        // destination (the original's source).
        assert_eq!(r.dest(), Ipv4Addr::from(r2));
        assert_eq!(&d[16..20], &r2);
        assert_eq!(
            &d[20..31],
            &[IPOPT_LSRR, 11, 4, 192, 168, 1, 1, 10, 0, 0, 1]
        );
        assert_eq!(d[31], IPOPT_END);
    }

    #[test]
    fn timestamp_echo() {
        // Timestamp-only option with room for two stamps, one used by the receiver.
        let ts = [IPOPT_TIMESTAMP, 12, 9, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        let pkt = udp(10, &ts);
        let mut p = Params::kernel_defaults();
        p.timestamp_ms = 0x0102_0304;
        let r = run_with(input(&pkt, 3), &p).unwrap();
        let d = r.datagram();
        assert_eq!(&d[20..32], &[68, 12, 13, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
        // Address and timestamp.
        let ts = [
            IPOPT_TIMESTAMP,
            20,
            13,
            1,
            10,
            0,
            0,
            2,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let r = run_with(input(&udp(10, &ts), 3), &p).unwrap();
        let d = r.datagram();
        assert_eq!(
            &d[20..40],
            &[68, 20, 21, 1, 10, 0, 0, 2, 0, 0, 0, 1, 10, 0, 0, 2, 1, 2, 3, 4]
        );
        // Prespecified: stamped only if the next address is ours.
        let ts = [
            IPOPT_TIMESTAMP,
            20,
            13,
            3,
            10,
            0,
            0,
            2,
            0,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
            0,
            0,
            0,
            0,
        ];
        let r = run_with(input(&udp(10, &ts), 3), &p).unwrap();
        assert_eq!(
            &r.datagram()[20..40],
            &ts,
            "not ours: copied, pointer unchanged"
        );
        let local = [B];
        p.local_addrs = &local;
        let r = run_with(input(&udp(10, &ts), 3), &p).unwrap();
        assert_eq!(r.datagram()[22], 21);
        assert_eq!(&r.datagram()[36..40], &[1, 2, 3, 4]);
    }

    fn cfg() -> RateConfig {
        RateConfig::from_sysctls(&Sysctls::default())
    }

    fn reply_to(dest: Ipv4Addr) -> Reply {
        let mut pkt = udp(10, &[]);
        pkt[12..16].copy_from_slice(&dest.octets());
        ip_send_check(&mut pkt);
        run(input(&pkt, 3).csum(csum::UNNECESSARY, false)).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn peer_burst_then_one_per_interval() {
        let mut l = RateLimiter::with_rng(cfg(), Box::new(|| 0));
        let r = reply_to(A);
        let sent: Vec<bool> = (0..10).map(|_| l.check(&r, ms(5000))).collect();
        assert_eq!(sent.iter().filter(|s| **s).count(), 6, "XRLIM_BURST_FACTOR");
        assert!(sent[..6].iter().all(|s| *s));
        assert!(!l.check(&r, ms(5999)));
        assert!(l.check(&r, ms(6000)), "one token per icmp_ratelimit");
        assert!(!l.check(&r, ms(6500)));
        assert!(l.check(&r, ms(7000)));
        // A long pause refills at most the burst.
        let n = (0..10).filter(|_| l.check(&r, ms(60_000))).count();
        assert_eq!(n, 6);
        // icmp_ratelimit 0: no per-destination limit.
        let mut c = cfg();
        c.ratelimit_ms = 0;
        let mut l = RateLimiter::with_rng(c, Box::new(|| 0));
        assert_eq!((0..40).filter(|_| l.check(&r, ms(0))).count(), 40);
        // Coarse ticks (HZ=250) give the same result in time.
        let mut c = cfg();
        c.hz = 250;
        let mut l = RateLimiter::with_rng(c, Box::new(|| 0));
        assert_eq!((0..10).filter(|_| l.check(&r, ms(1000))).count(), 6);
        assert!(!l.check(&r, ms(1995)));
        assert!(l.check(&r, ms(2000)));
    }

    #[test]
    fn peers_are_independent() {
        let mut l = RateLimiter::with_rng(cfg(), Box::new(|| 0));
        let (a, b) = (reply_to(A), reply_to(B));
        assert_eq!((0..10).filter(|_| l.check(&a, ms(0))).count(), 6);
        assert_eq!((0..10).filter(|_| l.check(&b, ms(0))).count(), 6);
        assert_eq!(l.peers(), 2);
    }

    #[test]
    fn global_bucket() {
        // Per-destination limit off, one credit per message.
        let mut c = cfg();
        c.ratelimit_ms = 0;
        let mut l = RateLimiter::with_rng(c, Box::new(|| 1));
        let r = reply_to(A);
        assert_eq!(
            (0..100).filter(|_| l.check(&r, ms(1000))).count(),
            50,
            "burst"
        );
        assert!(!l.check(&r, ms(1019)), "no refill within HZ/50");
        // 20 ms refill 1000/s * 20 ms = 20 credits.
        assert_eq!((0..100).filter(|_| l.check(&r, ms(1020))).count(), 20);
        // A long pause refills at most the burst.
        assert_eq!((0..100).filter(|_| l.check(&r, ms(9000))).count(), 50);
        // The draw can take 2 credits: the credit goes negative, and a refill still lets one
        // message through whatever the credit it leaves.
        let mut c2 = c;
        c2.msgs_burst = 51;
        c2.msgs_per_sec = 51;
        let mut l = RateLimiter::with_rng(c2, Box::new(|| 2));
        assert_eq!((0..100).filter(|_| l.check(&r, ms(1000))).count(), 26);
        assert_eq!(l.credit, -1);
        assert_eq!((0..100).filter(|_| l.check(&r, ms(1020))).count(), 1);
        assert_eq!(l.credit, -2);
        // Draws of 0 never exhaust it.
        let mut l = RateLimiter::with_rng(c, Box::new(|| 0));
        assert_eq!((0..500).filter(|_| l.check(&r, ms(0))).count(), 500);
        // A refused per-destination check does not consume credit.
        let mut l = RateLimiter::with_rng(cfg(), Box::new(|| 1));
        assert_eq!((0..100).filter(|_| l.check(&r, ms(1000))).count(), 6);
        assert_eq!(l.credit, 50 - 6);
    }

    #[test]
    fn ratemask_loopback_and_resets() {
        let r = reply_to(A);
        // Type 3 out of the mask: never limited, no state kept.
        let mut c = cfg();
        c.ratemask = 0x1810;
        let mut l = RateLimiter::with_rng(c, Box::new(|| 1));
        assert_eq!((0..200).filter(|_| l.check(&r, ms(0))).count(), 200);
        assert_eq!(l.peers(), 0);
        // how many of 200 errors of (type, code) to A go out at once, with the input device a
        // loopback or not and A local or not
        let allowed = |l: &mut RateLimiter, (ty, code), (in_loopback, to_local)| {
            (0..200)
                .filter(|_| l.allow_icmp(ty, code, A, in_loopback, to_local, ms(0), || true))
                .count()
        };
        // FRAG_NEEDED is never limited; types past 18 neither.
        let mut l = RateLimiter::with_rng(cfg(), Box::new(|| 1));
        assert_eq!(allowed(&mut l, (3, code::FRAG_NEEDED), (false, false)), 200);
        assert_eq!(allowed(&mut l, (40, 0), (false, false)), 200);
        // Time exceeded (11) is in the default mask.
        assert_eq!(allowed(&mut l, (11, 0), (false, false)), 6);
        // In on loopback: no limit at all.
        let mut l = RateLimiter::with_rng(cfg(), Box::new(|| 1));
        assert_eq!(allowed(&mut l, (3, 3), (true, true)), 200);
        // Back to this host: only the global bucket.
        assert_eq!(allowed(&mut l, (3, 3), (false, true)), 50);
        // No route: refused, the destination's tokens untouched.
        let mut l = RateLimiter::with_rng(cfg(), Box::new(|| 0));
        assert!(!l.check_routed(&r, ms(0), || false));
        assert_eq!(l.peers(), 0);
        assert_eq!((0..10).filter(|_| l.check(&r, ms(0))).count(), 6);
        // RSTs are not rate limited.
        let rst = run(input(&tcp(TCP_SYN, 1, 0, &[]), 7)).unwrap();
        assert_eq!((0..1000).filter(|_| l.check(&rst, ms(0))).count(), 1000);
    }

    #[test]
    fn peer_state_is_bounded_and_expires() {
        let mut c = cfg();
        c.peer_capacity = 8;
        let mut l = RateLimiter::with_rng(c, Box::new(|| 0));
        for i in 0..100u32 {
            let r = reply_to(Ipv4Addr::from(0x0a01_0000 + i));
            assert!(l.check(&r, ms(u64::from(i))));
            assert!(l.peers() <= 8);
        }
        // Evicted destinations start again with a full burst.
        let first = reply_to(Ipv4Addr::from(0x0a01_0000));
        assert_eq!((0..10).filter(|_| l.check(&first, ms(200))).count(), 6);
        // Idle entries go after inet_peer_maxttl (scaled down as the cache fills).
        let mut l = RateLimiter::with_rng(cfg(), Box::new(|| 0));
        for i in 0..3u32 {
            l.check(&reply_to(Ipv4Addr::from(0x0a02_0000 + i)), ms(0));
        }
        assert_eq!(l.peers(), 3);
        l.check(&reply_to(B), ms(599_000));
        assert_eq!(l.peers(), 4, "not idle long enough");
        l.check(&reply_to(A), ms(600_000));
        assert_eq!(l.peers(), 2, "the three idle ones went, B and A stay");
    }

    #[test]
    fn prespecified_timestamp_detection() {
        let pre = [IPOPT_NOOP, IPOPT_TIMESTAMP, 12, 5, 3, 0, 0, 0, 0, 0, 0, 0];
        assert!(has_prespec_timestamp(&udp(1, &pre)));
        let only = [IPOPT_TIMESTAMP, 8, 5, 0, 0, 0, 0, 0];
        assert!(!has_prespec_timestamp(&udp(1, &only)));
        let rr = [IPOPT_RR, 7, 4, 0, 0, 0, 0, IPOPT_END];
        assert!(!has_prespec_timestamp(&udp(1, &rr)));
        assert!(!has_prespec_timestamp(&udp(1, &[])));
        assert!(!has_prespec_timestamp(&udp(1, &[0x44, 0, 0, 0])));
    }

    #[test]
    fn ipv6_sysctls() {
        assert_eq!(
            parse_bitmap_list("0-1,3-127"),
            Some(ICMPV6_RATEMASK_DEFAULT)
        );
        assert_eq!(parse_bitmap_list(""), Some([0; 4]));
        assert_eq!(parse_bitmap_list("255"), Some([0, 0, 0, 1 << 63]));
        assert_eq!(parse_bitmap_list("3-1"), None);
        assert_eq!(parse_bitmap_list("x"), None);
    }

    #[test]
    fn icmpv6_limits() {
        let d = "fd00::1".parse::<Ipv6Addr>().unwrap();
        let mut c = cfg();
        c.ratelimit6_ms = 1000;
        let mut l = RateLimiter::with_rng(c, Box::new(|| 0));
        let n = |l: &mut RateLimiter, at, local| {
            (0..20)
                .filter(|_| l.allow_icmp6(1, d, false, local, ms(at), || true))
                .count()
        };
        assert_eq!(n(&mut l, 0, false), 6, "burst");
        assert_eq!(n(&mut l, 999, false), 0);
        assert_eq!(n(&mut l, 1000, false), 1);
        assert_eq!(n(&mut l, 3000, false), 2);
        // a route through lo: only the global bucket
        assert_eq!(n(&mut l, 3000, true), 20);
        // Packet Too Big (2) is out of the default mask; informational types above 127 too
        assert_eq!(
            (0..100)
                .filter(|_| l.allow_icmp6(2, d, false, false, ms(3000), || true))
                .count(),
            100
        );
        // the global bucket is IPv4's: spent by one family, empty for the other
        let mut c = cfg();
        c.ratelimit_ms = 0;
        c.ratelimit6_ms = 0;
        let mut l = RateLimiter::with_rng(c, Box::new(|| 1));
        assert_eq!(
            n(&mut l, 0, false) + n(&mut l, 0, false) + n(&mut l, 0, false),
            50
        );
        let r = reply_to(A);
        assert!(!l.check(&r, ms(0)));
        // no route: refused, no state
        let mut l = RateLimiter::with_rng(cfg(), Box::new(|| 0));
        assert!(!l.allow_icmp6(1, d, false, false, ms(0), || false));
        assert_eq!(l.peers(), 0);
    }

    #[test]
    fn timestamp_clock() {
        let t = UNIX_EPOCH + Duration::from_millis(3 * 86_400_000 + 12_345_678);
        assert_eq!(inet_current_timestamp(t), 12_345_678);
    }
}
