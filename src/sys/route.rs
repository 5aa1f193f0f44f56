//! The IPv4 local routing table (RT_TABLE_LOCAL, 255) of a network namespace over rtnetlink,
//! for `-m addrtype`: the kernel's `__inet_dev_addr_type()` (net/ipv4/fib_frontend.c) answers
//! with a `fib_table_lookup` of the address in that table (the route's `rtm_type`, and the
//! device of its first next hop for `--limit-iface-*`). [`local_routes`] dumps the table,
//! [`RouteWatch`] tells when it may have changed, so that the daemon can mirror it into a BPF
//! LPM map.
//!
//! The dump asks for strict checking (less to copy on a router with a big main table) but
//! filters by table anyway (RTA_TABLE, else `rtm_table`) and drops RTM_F_CLONED exceptions.
//! The kernel behaviour this relies on (the dump's filtering, errors and attributes, what a
//! lookup skips, table 255 aliasing 254 until a policy rule exists, lost notifications):
//! `docs/KERNEL-BEHAVIOUR.md#local-routes`.
//!
//! Sockets belong to the network namespace of the thread that creates them: call these
//! through [`super::in_netns`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::error::{Result, SysError};
use super::nft::{msg_end, put_nlmsghdr};

/// One IPv4 route of the local routing table (the emitter's reference and the daemon's
/// address-type map share the type).
pub use emitter::ir::LocalRoute;

/// Kernel numbers, from include/uapi/linux/netlink.h and rtnetlink.h.
mod abi {
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLA_HDRLEN: usize = 4;
    /// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
    pub const RTMSG_LEN: usize = 12;
    /// `struct rtnexthop`: len (u16), flags, hops, ifindex (i32).
    pub const RTNH_LEN: usize = 8;

    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLMSG_OVERRUN: u16 = 4;

    pub const NLM_F_REQUEST: u16 = 0x1;
    pub const NLM_F_DUMP_INTR: u16 = 0x10;
    /// NLM_F_ROOT | NLM_F_MATCH.
    pub const NLM_F_DUMP: u16 = 0x300;
    /// Attribute type bits (without NLA_F_NESTED and NLA_F_NET_BYTEORDER).
    pub const NLA_TYPE_MASK: u16 = 0x3fff;

    pub const SOL_NETLINK: i32 = 270;
    pub const NETLINK_GET_STRICT_CHK: i32 = 12;

    pub const RTM_NEWROUTE: u16 = 24;
    pub const RTM_GETROUTE: u16 = 26;

    pub const RTA_DST: u16 = 1;
    pub const RTA_OIF: u16 = 4;
    pub const RTA_MULTIPATH: u16 = 9;
    pub const RTA_TABLE: u16 = 15;

    pub const RT_TABLE_LOCAL: u8 = 255;
    pub const AF_INET: u8 = 2;

    pub const RTN_BLACKHOLE: u8 = 6;
    pub const RTN_XRESOLVE: u8 = 11;

    pub const RTM_F_CLONED: u32 = 0x200;
    pub const RTNH_F_DEAD: u8 = 1;

    pub const RTMGRP_LINK: u32 = 0x1;
    pub const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    pub const RTMGRP_IPV4_ROUTE: u32 = 0x40;
}

/// What [`local_routes`] failures are reported against.
const DUMP_LABEL: &str = "RTM_GETROUTE dump of IPv4 table local";
/// Sequence number of our one request per socket.
const DUMP_SEQ: u32 = 1;
/// Dumps tried when the kernel flags one as interrupted (NLM_F_DUMP_INTR).
const DUMP_ATTEMPTS: usize = 3;
/// Longest a dump may stay silent before we give up (the kernel never should).
const DUMP_RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer per `recv`: the kernel fills dump datagrams up to 32 KiB
/// (`netlink_recvmsg` caps `max_recvmsg_len`), so this holds any of them.
const RECV_BUF: usize = 64 * 1024;
/// Socket receive buffer asked for a [`RouteWatch`] (best effort), so that a burst (an
/// interface with many addresses going down) does not overflow it.
const WATCH_RCVBUF: usize = 1 << 20;
/// Datagrams one [`RouteWatch::wait`] reads at most, so that a flood cannot keep it forever.
const WATCH_DRAIN_MAX: usize = 4096;

/// The IPv4 routes of table 255 (local) of the calling thread's network namespace, in the kernel's dump order.
/// Left out: routes with a non-zero rtm_tos (a lookup with tos 0 never selects them), and routes whose every next hop is dead (RTNH_F_DEAD in rtm_flags or in the nexthop's rtnh_flags).
///
/// Also left out: cached exceptions (RTM_F_CLONED), never returned by a table lookup. Error
/// routes (blackhole, unreachable, prohibit, throw) are kept whatever their flags, as the
/// lookup stops at them. A route using a nexthop object (RTA_NH_ID) has `ifindex` 0 when
/// `net.ipv4.nexthop_compat_mode` is off (the kernel then sends no RTA_OIF). Under the unit
/// tests' fake kernel: no routes (the fake's `in_netns` does not enter the namespace, so a
/// real dump would read the host's table).
pub fn local_routes() -> Result<Vec<LocalRoute>> {
    #[cfg(test)]
    if super::fake::current().is_some() {
        return Ok(Vec::new());
    }
    let request = dump_request(DUMP_SEQ);
    let mut buf = vec![0u8; RECV_BUF];
    for _ in 0..DUMP_ATTEMPTS {
        let fd = open_route_socket(SockFlag::empty(), 0)?;
        // Strict checking makes the kernel filter by table; it exists since 4.20, and without
        // it the dump is only bigger (every table), so a refusal is not an error.
        let _ = set_strict_check(&fd);
        socket::setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::milliseconds(DUMP_RECV_TIMEOUT.as_millis() as i64),
        )
        .map_err(|e| errno_err("setsockopt(SO_RCVTIMEO)", e))?;
        send(&fd, &request)?;

        let mut dump = Dump::new(DUMP_SEQ);
        while !dump.done {
            let n = match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    return Err(SysError::Syscall {
                        call: "recv(NETLINK_ROUTE): no end of the route dump within 5 s",
                        errno: libc::ETIMEDOUT,
                    })
                }
                Err(e) => return Err(errno_err("recv(NETLINK_ROUTE)", e)),
            };
            if n > buf.len() {
                return Err(SysError::Syscall {
                    call: "recv(NETLINK_ROUTE): route dump datagram larger than the buffer",
                    errno: libc::EMSGSIZE,
                });
            }
            match dump.feed(&buf[..n]) {
                Ok(()) => {}
                // Strict checking only: the table was never created, so it has no routes.
                Err(e) if e.errno() == libc::ENOENT => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
        if !dump.interrupted {
            return Ok(dump.routes);
        }
    }
    Err(SysError::Syscall {
        call: "RTM_GETROUTE dump of IPv4 table local: interrupted by changes (NLM_F_DUMP_INTR) 3 times",
        errno: libc::EAGAIN,
    })
}

/// A NETLINK_ROUTE socket of the calling thread's namespace subscribed to IPv4 route and address changes (RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_IFADDR, plus RTMGRP_LINK since link down/up changes routes).
///
/// Non-blocking; the messages are only counted, never parsed: any of them means "read
/// [`local_routes`] again". Create it before the first [`local_routes`] so that no change
/// falls in between.
#[derive(Debug)]
pub struct RouteWatch {
    fd: OwnedFd,
}

impl RouteWatch {
    /// Opens and subscribes the socket. Under the unit tests' fake kernel the socket joins no
    /// group (it would hear the host's changes), so [`RouteWatch::wait`] always times out.
    pub fn new() -> Result<RouteWatch> {
        let groups = abi::RTMGRP_IPV4_ROUTE | abi::RTMGRP_IPV4_IFADDR | abi::RTMGRP_LINK;
        #[cfg(test)]
        let groups = if super::fake::current().is_some() {
            0
        } else {
            groups
        };
        let fd = open_route_socket(SockFlag::SOCK_NONBLOCK, groups)?;
        // Best effort: SO_RCVBUFFORCE needs CAP_NET_ADMIN, SO_RCVBUF is capped by
        // net.core.rmem_max; an overflow is reported (ENOBUFS) either way.
        if socket::setsockopt(&fd, sockopt::RcvBufForce, &WATCH_RCVBUF).is_err() {
            let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &WATCH_RCVBUF);
        }
        Ok(RouteWatch { fd })
    }

    /// Waits up to `timeout` for notifications; drains every pending message without blocking;
    /// returns true if at least one arrived or the socket overflowed (ENOBUFS: changes were lost, so the caller must re-read), false on timeout.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Rounded up, so that a short wait still sleeps rather than spins.
            let ms = left.as_micros().div_ceil(1000);
            let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is one valid, writable pollfd for the duration of the call, and its
            // fd is owned by self.
            let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ret < 0 {
                let errno = super::error::last_errno();
                if errno == libc::EINTR {
                    continue;
                }
                return Err(SysError::Syscall {
                    call: "poll(NETLINK_ROUTE)",
                    errno,
                });
            }
            // POLLIN, or POLLERR for a pending ENOBUFS: both are read by drain.
            if ret > 0 && self.drain()? {
                return Ok(true);
            }
            if ms == 0 || Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Reads every queued datagram; true if there was one or the socket overflowed.
    fn drain(&self) -> Result<bool> {
        let mut buf = vec![0u8; RECV_BUF];
        let mut seen = false;
        for _ in 0..WATCH_DRAIN_MAX {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => seen = true,
                // The kernel dropped notifications; the socket stays usable (the error is
                // reported once), and what is still queued is read on.
                Err(Errno::ENOBUFS) => seen = true,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(seen),
                Err(e) => return Err(errno_err("recv(NETLINK_ROUTE)", e)),
            }
        }
        Ok(true)
    }
}

/// Opens a NETLINK_ROUTE socket in the calling thread's namespace, bound to a kernel-chosen
/// port id and to `groups` (RTMGRP_* bits).
fn open_route_socket(flags: SockFlag, groups: u32) -> Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | flags,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| errno_err("socket(AF_NETLINK, NETLINK_ROUTE)", e))?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))
        .map_err(|e| errno_err("bind(NETLINK_ROUTE)", e))?;
    Ok(fd)
}

/// Turns on NETLINK_GET_STRICT_CHK (the kernel then honours the dump's `rtm_table`).
fn set_strict_check(fd: &OwnedFd) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: fd is an open socket; optval points to one c_int that outlives the call, and
    // optlen is its size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            abi::SOL_NETLINK,
            abi::NETLINK_GET_STRICT_CHK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(SysError::Syscall {
            call: "setsockopt(NETLINK_GET_STRICT_CHK)",
            errno: super::error::last_errno(),
        });
    }
    Ok(())
}

/// Sends one request to the kernel (port id 0).
fn send(fd: &OwnedFd, msg: &[u8]) -> Result<()> {
    let kernel = NetlinkAddr::new(0, 0);
    let sent = socket::sendto(fd.as_raw_fd(), msg, &kernel, MsgFlags::empty())
        .map_err(|e| errno_err("sendto(NETLINK_ROUTE)", e))?;
    if sent != msg.len() {
        return Err(SysError::Syscall {
            call: "sendto(NETLINK_ROUTE): short write",
            errno: libc::EMSGSIZE,
        });
    }
    Ok(())
}

/// RTM_GETROUTE with NLM_F_DUMP for family AF_INET, table local (honoured under strict
/// checking; every other `rtmsg` field must then be 0).
fn dump_request(seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(abi::NLMSG_HDRLEN + abi::RTMSG_LEN);
    put_nlmsghdr(
        &mut b,
        abi::RTM_GETROUTE,
        abi::NLM_F_REQUEST | abi::NLM_F_DUMP,
        seq,
    );
    b.extend_from_slice(&[abi::AF_INET, 0, 0, 0, abi::RT_TABLE_LOCAL, 0, 0, 0]);
    b.extend_from_slice(&0u32.to_ne_bytes());
    msg_end(&mut b, 0);
    b
}

/// A malformed reply.
fn bad(what: &'static str) -> SysError {
    SysError::Syscall {
        call: what,
        errno: libc::EPROTO,
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy)]
struct Msg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    /// What follows the `nlmsghdr`, up to `nlmsg_len`.
    body: &'a [u8],
}

/// Splits a datagram into netlink messages, refusing lengths out of bounds.
fn split_messages(buf: &[u8]) -> Result<Vec<Msg<'_>>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        if rest.len() < abi::NLMSG_HDRLEN {
            return Err(bad("recv(NETLINK_ROUTE): reply shorter than nlmsghdr"));
        }
        let len = u32_at(rest, 0) as usize;
        if len < abi::NLMSG_HDRLEN || len > rest.len() {
            return Err(bad("recv(NETLINK_ROUTE): nlmsg_len out of bounds"));
        }
        out.push(Msg {
            ty: u16_at(rest, 4),
            flags: u16_at(rest, 6),
            seq: u32_at(rest, 8),
            body: &rest[abi::NLMSG_HDRLEN..len],
        });
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Splits attributes into (type without flag bits, payload). A tail shorter than an attribute
/// header is ignored, as the kernel's `nla_ok` does; a length out of bounds is refused.
fn split_attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>> {
    let attrs = split_records(
        buf,
        abi::NLA_HDRLEN,
        "RTM_NEWROUTE: attribute length out of bounds",
    )?;
    Ok(attrs
        .into_iter()
        .map(|a| (u16_at(a, 2) & abi::NLA_TYPE_MASK, &a[abi::NLA_HDRLEN..]))
        .collect())
}

/// Splits a list of records that each start with their u16 length (attributes, next hops),
/// at least `hdr` bytes, the next one at that length rounded up to 4. A tail shorter than
/// `hdr` is ignored, as the kernel's `nla_ok` and `rtnh_ok` do; a length out of bounds is
/// refused (`what`).
fn split_records<'a>(buf: &'a [u8], hdr: usize, what: &'static str) -> Result<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= hdr {
        let len = usize::from(u16_at(rest, 0));
        if len < hdr || len > rest.len() {
            return Err(bad(what));
        }
        out.push(&rest[..len]);
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// A u32 attribute payload (native order).
fn attr_u32(payload: &[u8], what: &'static str) -> Result<u32> {
    match payload {
        [a, b, c, d, ..] => Ok(u32::from_ne_bytes([*a, *b, *c, *d])),
        _ => Err(bad(what)),
    }
}

/// One next hop of RTA_MULTIPATH: (rtnh_flags, rtnh_ifindex).
fn split_nexthops(buf: &[u8]) -> Result<Vec<(u8, u32)>> {
    let hops = split_records(
        buf,
        abi::RTNH_LEN,
        "RTM_NEWROUTE: rtnexthop length out of bounds",
    )?;
    Ok(hops.into_iter().map(|h| (h[2], u32_at(h, 4))).collect())
}

/// Types whose lookup ends in an error (`fib_props[type].error < 0`) before any next hop is
/// looked at: RTN_BLACKHOLE, UNREACHABLE, PROHIBIT, THROW, NAT, XRESOLVE.
fn is_error_type(rtype: u8) -> bool {
    (abi::RTN_BLACKHOLE..=abi::RTN_XRESOLVE).contains(&rtype)
}

/// The route of an RTM_NEWROUTE body (`rtmsg` and attributes) if it belongs in
/// [`local_routes`]: IPv4, table local, TOS 0, not a cached exception, not dead.
fn parse_route(body: &[u8]) -> Result<Option<LocalRoute>> {
    if body.len() < abi::RTMSG_LEN {
        return Err(bad("RTM_NEWROUTE: shorter than rtmsg"));
    }
    let (family, dst_len, tos, rtm_table, rtype) = (body[0], body[1], body[3], body[4], body[7]);
    let rtm_flags = u32_at(body, 8);
    if family != abi::AF_INET {
        return Ok(None);
    }
    if dst_len > 32 {
        return Err(bad("RTM_NEWROUTE: IPv4 rtm_dst_len above 32"));
    }

    let mut table = u32::from(rtm_table);
    let mut net = 0u32;
    let mut oif = None;
    let mut nexthops = None;
    for (ty, payload) in split_attrs(&body[abi::RTMSG_LEN..])? {
        match ty {
            abi::RTA_TABLE => table = attr_u32(payload, "RTM_NEWROUTE: short RTA_TABLE")?,
            abi::RTA_OIF => oif = Some(attr_u32(payload, "RTM_NEWROUTE: short RTA_OIF")?),
            abi::RTA_MULTIPATH => nexthops = Some(split_nexthops(payload)?),
            abi::RTA_DST => match payload {
                // Network order on the wire.
                [a, b, c, d, ..] => net = u32::from_be_bytes([*a, *b, *c, *d]),
                _ => return Err(bad("RTM_NEWROUTE: short RTA_DST")),
            },
            _ => {}
        }
    }
    if table != u32::from(abi::RT_TABLE_LOCAL) || tos != 0 || rtm_flags & abi::RTM_F_CLONED != 0 {
        return Ok(None);
    }

    // rtm_flags carries RTNH_F_DEAD for a single next hop, or for a multipath route whose
    // next hops are all dead (fib_info.fib_flags); each rtnh_flags for its own.
    let route_dead = rtm_flags & u32::from(abi::RTNH_F_DEAD) != 0;
    let (ifindex, dead) = match nexthops {
        Some(nhs) if !nhs.is_empty() => (
            nhs[0].1,
            route_dead || nhs.iter().all(|(f, _)| f & abi::RTNH_F_DEAD != 0),
        ),
        _ => (oif.unwrap_or(0), route_dead),
    };
    if dead && !is_error_type(rtype) {
        return Ok(None);
    }
    Ok(Some(LocalRoute {
        net,
        prefix: dst_len,
        rtype,
        ifindex,
    }))
}

/// The state of one dump, fed datagram by datagram.
#[derive(Debug)]
struct Dump {
    /// Sequence number of our request; other messages are ignored.
    seq: u32,
    /// The routes kept so far, in dump order.
    routes: Vec<LocalRoute>,
    /// NLMSG_DONE was seen.
    done: bool,
    /// A message had NLM_F_DUMP_INTR: the table changed during the dump.
    interrupted: bool,
}

impl Dump {
    fn new(seq: u32) -> Dump {
        Dump {
            seq,
            routes: Vec::new(),
            done: false,
            interrupted: false,
        }
    }

    /// Takes in one received datagram; an error reply (NLMSG_ERROR, or NLMSG_DONE carrying a
    /// negative errno) becomes `Err` with its errno.
    fn feed(&mut self, datagram: &[u8]) -> Result<()> {
        for m in split_messages(datagram)? {
            if m.seq != self.seq || self.done {
                continue;
            }
            self.interrupted |= m.flags & abi::NLM_F_DUMP_INTR != 0;
            match m.ty {
                abi::NLMSG_DONE | abi::NLMSG_ERROR => {
                    // NLMSG_DONE: `int` dump status (old kernels may send no payload);
                    // NLMSG_ERROR: `int error` then the request.
                    let code = match m.body.get(..4) {
                        Some(c) => i32::from_ne_bytes([c[0], c[1], c[2], c[3]]),
                        None if m.ty == abi::NLMSG_DONE => 0,
                        None => return Err(bad("recv(NETLINK_ROUTE): NLMSG_ERROR without code")),
                    };
                    if code < 0 {
                        return Err(SysError::Syscall {
                            call: DUMP_LABEL,
                            errno: code.checked_neg().unwrap_or(libc::EIO),
                        });
                    }
                    // An ack (error 0) only ends a dump if it is NLMSG_DONE.
                    self.done |= m.ty == abi::NLMSG_DONE;
                }
                abi::NLMSG_OVERRUN => {
                    return Err(SysError::Syscall {
                        call: DUMP_LABEL,
                        errno: libc::EOVERFLOW,
                    })
                }
                abi::RTM_NEWROUTE => {
                    if let Some(r) = parse_route(m.body)? {
                        self.routes.push(r);
                    }
                }
                // NLMSG_NOOP and anything else: nothing for us.
                _ => {}
            }
        }
        Ok(())
    }
}

fn errno_err(call: &'static str, e: Errno) -> SysError {
    SysError::Syscall {
        call,
        errno: e as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::{require_netns, TempNetns};
    use std::net::Ipv4Addr;
    use std::process::Command;

    #[test]
    fn constants_match_libc() {
        assert_eq!(abi::RTM_NEWROUTE, libc::RTM_NEWROUTE);
        assert_eq!(abi::RTM_GETROUTE, libc::RTM_GETROUTE);
        assert_eq!(abi::RTA_DST, libc::RTA_DST);
        assert_eq!(abi::RTA_OIF, libc::RTA_OIF);
        assert_eq!(abi::RTA_MULTIPATH, libc::RTA_MULTIPATH);
        assert_eq!(abi::RTA_TABLE, libc::RTA_TABLE);
        assert_eq!(abi::RT_TABLE_LOCAL, libc::RT_TABLE_LOCAL);
        assert_eq!(abi::RTN_BLACKHOLE, libc::RTN_BLACKHOLE);
        assert_eq!(abi::RTN_XRESOLVE, libc::RTN_XRESOLVE);
        assert_eq!(abi::RTM_F_CLONED, libc::RTM_F_CLONED);
        assert_eq!(abi::RTMGRP_LINK as i32, libc::RTMGRP_LINK);
        assert_eq!(abi::RTMGRP_IPV4_IFADDR as i32, libc::RTMGRP_IPV4_IFADDR);
        assert_eq!(abi::RTMGRP_IPV4_ROUTE as i32, libc::RTMGRP_IPV4_ROUTE);
        assert_eq!(i32::from(abi::AF_INET), libc::AF_INET);
        assert_eq!(abi::SOL_NETLINK, libc::SOL_NETLINK);
        assert_eq!(abi::NETLINK_GET_STRICT_CHK, libc::NETLINK_GET_STRICT_CHK);
        assert_eq!(i32::from(abi::NLMSG_ERROR), libc::NLMSG_ERROR);
        assert_eq!(i32::from(abi::NLMSG_DONE), libc::NLMSG_DONE);
        assert_eq!(i32::from(abi::NLMSG_OVERRUN), libc::NLMSG_OVERRUN);
        assert_eq!(i32::from(abi::NLM_F_DUMP), libc::NLM_F_DUMP);
        assert_eq!(i32::from(abi::NLM_F_DUMP_INTR), libc::NLM_F_DUMP_INTR);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn dump_request_bytes() {
        #[rustfmt::skip]
        let want: &[u8] = &[
            // len 28, RTM_GETROUTE (26), REQUEST|DUMP (0x301), seq 7, port 0
            28, 0, 0, 0, 26, 0, 0x01, 0x03, 7, 0, 0, 0, 0, 0, 0, 0,
            // rtmsg: AF_INET, dst/src len 0, tos 0, table 255, protocol, scope, type 0; flags 0
            2, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(dump_request(7), want);
    }

    /// One `rtattr`, padded to 4 bytes.
    fn put_attr(b: &mut Vec<u8>, ty: u16, payload: &[u8]) {
        let len = u16::try_from(abi::NLA_HDRLEN + payload.len()).unwrap();
        b.extend_from_slice(&len.to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(payload);
        b.resize(b.len().next_multiple_of(4), 0);
    }

    /// A route as `fib_dump_info` would send it.
    #[derive(Clone)]
    struct Rt {
        family: u8,
        dst: [u8; 4],
        dst_len: u8,
        tos: u8,
        rtm_table: u8,
        rta_table: Option<u32>,
        rtype: u8,
        flags: u32,
        oif: Option<u32>,
        /// (rtnh_flags, rtnh_ifindex) of RTA_MULTIPATH, each with an RTA_GATEWAY inside.
        multipath: Vec<(u8, u32)>,
    }

    fn rt(dst: [u8; 4], dst_len: u8, rtype: u8, oif: u32) -> Rt {
        Rt {
            family: abi::AF_INET,
            dst,
            dst_len,
            tos: 0,
            rtm_table: 255,
            rta_table: Some(255),
            rtype,
            flags: 0,
            oif: Some(oif),
            multipath: Vec::new(),
        }
    }

    fn route_msg(seq: u32, flags: u16, r: &Rt) -> Vec<u8> {
        let mut b = Vec::new();
        put_nlmsghdr(&mut b, abi::RTM_NEWROUTE, flags, seq);
        b.extend_from_slice(&[
            r.family,
            r.dst_len,
            0,
            r.tos,
            r.rtm_table,
            2, // RTPROT_KERNEL
            254,
            r.rtype,
        ]);
        b.extend_from_slice(&r.flags.to_ne_bytes());
        if let Some(t) = r.rta_table {
            put_attr(&mut b, abi::RTA_TABLE, &t.to_ne_bytes());
        }
        if r.dst_len != 0 {
            put_attr(&mut b, abi::RTA_DST, &r.dst);
        }
        put_attr(&mut b, 7, &r.dst); // RTA_PREFSRC, ignored
        if let Some(oif) = r.oif {
            put_attr(&mut b, abi::RTA_OIF, &oif.to_ne_bytes());
        }
        if !r.multipath.is_empty() {
            let mut mp = Vec::new();
            for &(flags, ifindex) in &r.multipath {
                let start = mp.len();
                mp.extend_from_slice(&0u16.to_ne_bytes());
                mp.extend_from_slice(&[flags, 0]);
                mp.extend_from_slice(&ifindex.to_ne_bytes());
                put_attr(&mut mp, 5, &[10, 0, 0, 9]); // RTA_GATEWAY
                let len = u16::try_from(mp.len() - start).unwrap();
                mp[start..start + 2].copy_from_slice(&len.to_ne_bytes());
            }
            put_attr(&mut b, abi::RTA_MULTIPATH, &mp);
        }
        msg_end(&mut b, 0);
        b
    }

    fn done_msg(seq: u32, code: i32) -> Vec<u8> {
        let mut b = Vec::new();
        put_nlmsghdr(&mut b, abi::NLMSG_DONE, 0x2, seq);
        b.extend_from_slice(&code.to_ne_bytes());
        msg_end(&mut b, 0);
        b
    }

    fn lr(a: [u8; 4], prefix: u8, rtype: u8, ifindex: u32) -> LocalRoute {
        LocalRoute {
            net: u32::from(Ipv4Addr::from(a)),
            prefix,
            rtype,
            ifindex,
        }
    }

    const LOCAL: u8 = libc::RTN_LOCAL;
    const BROADCAST: u8 = libc::RTN_BROADCAST;
    const UNICAST: u8 = libc::RTN_UNICAST;
    const DEAD: u8 = abi::RTNH_F_DEAD;

    #[test]
    fn parses_a_dump() {
        let seq = 42;
        let multi = 0x2; // NLM_F_MULTI
        let mut first = Vec::new();
        // Kept: local /32, the RTA_TABLE attribute says 255.
        first.extend(route_msg(seq, multi, &rt([10, 7, 0, 1], 32, LOCAL, 3)));
        // Kept: no RTA_TABLE attribute, rtm_table 255.
        let mut r = rt([10, 7, 0, 255], 32, BROADCAST, 3);
        r.rta_table = None;
        first.extend(route_msg(seq, multi, &r));
        // Main table (the non-strict dump sends every table): left out.
        let mut r = rt([10, 7, 0, 0], 24, UNICAST, 3);
        (r.rtm_table, r.rta_table) = (254, Some(254));
        first.extend(route_msg(seq, multi, &r));
        // RTA_TABLE wins over rtm_table (ids >= 256 come with rtm_table RT_TABLE_COMPAT).
        let mut r = rt([10, 7, 0, 2], 32, LOCAL, 3);
        (r.rtm_table, r.rta_table) = (255, Some(1000));
        first.extend(route_msg(seq, multi, &r));
        let mut r = rt([10, 7, 0, 3], 32, LOCAL, 3);
        (r.rtm_table, r.rta_table) = (252, Some(255));
        first.extend(route_msg(seq, multi, &r));
        // TOS 0x10: a lookup with TOS 0 never selects it.
        let mut r = rt([10, 9, 0, 0], 24, LOCAL, 1);
        r.tos = 0x10;
        first.extend(route_msg(seq, multi, &r));
        // Another request's message: ignored.
        first.extend(route_msg(seq + 1, multi, &rt([10, 6, 0, 1], 32, LOCAL, 1)));

        let mut second = Vec::new();
        // Multipath with a dead first next hop: kept, the first next hop's device.
        let mut r = rt([10, 8, 0, 0], 24, UNICAST, 0);
        (r.oif, r.multipath) = (None, vec![(DEAD, 5), (0, 6)]);
        second.extend(route_msg(seq, multi, &r));
        // Multipath, every next hop dead: left out.
        let mut r = rt([10, 8, 1, 0], 24, UNICAST, 0);
        (r.oif, r.multipath) = (None, vec![(DEAD, 5), (DEAD, 6)]);
        second.extend(route_msg(seq, multi, &r));
        // Multipath, the route itself dead (fib_flags): left out.
        let mut r = rt([10, 8, 2, 0], 24, UNICAST, 0);
        (r.oif, r.multipath) = (None, vec![(0, 5), (0, 6)]);
        r.flags = u32::from(DEAD);
        second.extend(route_msg(seq, multi, &r));
        // Single next hop, dead (and LINKDOWN, 0x10): left out.
        let mut r = rt([10, 7, 5, 255], 32, BROADCAST, 4);
        r.flags = u32::from(DEAD) | 0x10;
        second.extend(route_msg(seq, multi, &r));
        // Cached exception: left out.
        let mut r = rt([10, 7, 0, 9], 32, UNICAST, 3);
        r.flags = abi::RTM_F_CLONED;
        second.extend(route_msg(seq, multi, &r));
        // Error route, no device, whatever its flags: kept.
        let mut r = rt([192, 0, 2, 0], 24, libc::RTN_UNREACHABLE, 0);
        (r.oif, r.flags) = (None, u32::from(DEAD));
        second.extend(route_msg(seq, multi, &r));
        // Default route: no RTA_DST.
        second.extend(route_msg(seq, multi, &rt([0; 4], 0, LOCAL, 1)));
        // IPv6: not ours.
        let mut r = rt([0; 4], 0, LOCAL, 1);
        r.family = 10;
        second.extend(route_msg(seq, multi, &r));
        second.extend(done_msg(seq, 0));
        // Anything after NLMSG_DONE is not part of the dump.
        second.extend(route_msg(seq, multi, &rt([10, 6, 0, 2], 32, LOCAL, 1)));

        let mut dump = Dump::new(seq);
        dump.feed(&first).unwrap();
        assert!(!dump.done);
        dump.feed(&second).unwrap();
        assert!(dump.done);
        assert!(!dump.interrupted);
        assert_eq!(
            dump.routes,
            vec![
                lr([10, 7, 0, 1], 32, LOCAL, 3),
                lr([10, 7, 0, 255], 32, BROADCAST, 3),
                lr([10, 7, 0, 3], 32, LOCAL, 3),
                lr([10, 8, 0, 0], 24, UNICAST, 5),
                lr([192, 0, 2, 0], 24, libc::RTN_UNREACHABLE, 0),
                lr([0; 4], 0, LOCAL, 1),
            ]
        );
    }

    #[test]
    fn dump_errors_and_flags() {
        // A dump failure comes as NLMSG_DONE with -errno (strict checking, missing table).
        let e = Dump::new(1).feed(&done_msg(1, -libc::ENOENT)).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(e.to_string().starts_with(DUMP_LABEL), "{e}");
        // A request failure as NLMSG_ERROR with -errno and the request echoed.
        let mut err = Vec::new();
        put_nlmsghdr(&mut err, abi::NLMSG_ERROR, 0, 1);
        err.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        err.extend(dump_request(1));
        msg_end(&mut err, 0);
        assert_eq!(Dump::new(1).feed(&err).unwrap_err().errno(), libc::EPERM);
        // The same for another request is none of ours.
        assert!(Dump::new(2).feed(&err).is_ok());
        // An NLMSG_DONE without payload (old kernels) ends the dump.
        let mut d = Vec::new();
        put_nlmsghdr(&mut d, abi::NLMSG_DONE, 0, 1);
        msg_end(&mut d, 0);
        let mut dump = Dump::new(1);
        dump.feed(&d).unwrap();
        assert!(dump.done);

        // NLM_F_DUMP_INTR on any message marks the dump for a retry.
        let mut dump = Dump::new(1);
        let mut b = route_msg(
            1,
            0x2 | abi::NLM_F_DUMP_INTR,
            &rt([10, 0, 0, 1], 32, LOCAL, 2),
        );
        b.extend(done_msg(1, 0));
        dump.feed(&b).unwrap();
        assert!(dump.done && dump.interrupted);
        assert_eq!(dump.routes.len(), 1);
    }

    #[test]
    fn refuses_malformed_replies() {
        let good = route_msg(1, 0, &rt([10, 0, 0, 1], 32, LOCAL, 2));
        let eproto = |b: &[u8]| Dump::new(1).feed(b).unwrap_err().errno();
        assert_eq!(eproto(&good[..10]), libc::EPROTO);
        let mut lying = good.clone();
        lying[0] += 4;
        assert_eq!(eproto(&lying), libc::EPROTO);
        // rtmsg cut short.
        let mut short = good[..16 + 8].to_vec();
        msg_end(&mut short, 0);
        assert_eq!(eproto(&short), libc::EPROTO);
        // First attribute (RTA_TABLE, at 28) longer than the message.
        let mut attr = good.clone();
        attr[28] = 200;
        assert_eq!(eproto(&attr), libc::EPROTO);
        // RTA_TABLE with a 2-byte payload.
        let mut tiny = good.clone();
        tiny[28] = 6;
        assert_eq!(eproto(&tiny), libc::EPROTO);
        // rtm_dst_len above 32.
        let mut long = good.clone();
        long[17] = 33;
        assert_eq!(eproto(&long), libc::EPROTO);
        // An rtnexthop longer than RTA_MULTIPATH.
        let mut r = rt([10, 8, 0, 0], 24, UNICAST, 0);
        (r.oif, r.multipath) = (None, vec![(0, 5)]);
        let mut mp = route_msg(1, 0, &r);
        let at = mp.len() - 16; // rtnh_len of the only next hop (8 + 8-byte gateway)
        assert_eq!(u16_at(&mp, at), 16);
        mp[at] = 40;
        assert_eq!(eproto(&mp), libc::EPROTO);
    }

    /// `ip netns add` of a namespace left as created (lo down), deleted on drop.
    struct FreshNetns(String);

    impl Drop for FreshNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }

    fn run(args: &[&str]) -> String {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn ip(ns: &TempNetns, args: &str) -> String {
        let mut argv = vec!["ip", "-n", ns.name()];
        argv.extend(args.split_whitespace());
        run(&argv)
    }

    /// ifindex of a device of the namespace, from its own sysfs (`ip netns exec` mounts it).
    fn ifindex(ns: &TempNetns, dev: &str) -> u32 {
        let path = format!("/sys/class/net/{dev}/ifindex");
        run(&["ip", "netns", "exec", ns.name(), "cat", &path])
            .trim()
            .parse()
            .unwrap()
    }

    /// The `local` and `broadcast` routes of `ip -o route show table local` in its order,
    /// leaving out those with a TOS or dead (as `local_routes` does).
    fn ip_local_routes(ns: &TempNetns) -> Vec<LocalRoute> {
        let mut out = Vec::new();
        for line in ip(ns, "-o route show table local").lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let rtype = match w.first() {
                Some(&"local") => LOCAL,
                Some(&"broadcast") => BROADCAST,
                _ => continue,
            };
            if w.contains(&"tos") || w.contains(&"dead") {
                continue;
            }
            let (addr, len) = w[1].split_once('/').unwrap_or((w[1], "32"));
            let dev = w[w.iter().position(|x| *x == "dev").unwrap() + 1];
            out.push(LocalRoute {
                net: u32::from(addr.parse::<Ipv4Addr>().unwrap()),
                prefix: len.parse().unwrap(),
                rtype,
                ifindex: ifindex(ns, dev),
            });
        }
        out
    }

    #[test]
    fn reads_and_watches_a_namespace() {
        if !require_netns() {
            return;
        }
        let ns = TempNetns::new("route");
        // veth pairs with both ends up (carrier on): this kernel may have no dummy driver.
        ip(&ns, "link add bpr0 type veth peer name bpr0p");
        ip(&ns, "addr add 10.7.0.1/24 dev bpr0");
        ip(&ns, "link set bpr0p up");
        ip(&ns, "link set bpr0 up");
        let bpr0 = ifindex(&ns, "bpr0");
        let lo = ifindex(&ns, "lo");
        assert_eq!(lo, 1);

        let routes = crate::sys::in_netns(ns.fd(), local_routes)
            .unwrap()
            .unwrap();
        eprintln!("table local: {routes:?}");
        assert!(routes.contains(&lr([10, 7, 0, 1], 32, LOCAL, bpr0)));
        assert!(routes.contains(&lr([10, 7, 0, 255], 32, BROADCAST, bpr0)));
        assert!(routes.contains(&lr([127, 0, 0, 0], 8, LOCAL, lo)));
        assert!(routes.contains(&lr([127, 0, 0, 1], 32, LOCAL, lo)));
        // Only table local: the main table's 10.7.0.0/24 is not there.
        assert!(!routes.iter().any(|r| r.rtype == UNICAST));
        assert_eq!(routes, ip_local_routes(&ns));

        // A TOS route, a multipath route, and a route of a device without carrier when the
        // namespace ignores such routes (the dump then flags it dead).
        ip(
            &ns,
            "route add local 10.9.0.0/24 dev lo table local tos 0x10",
        );
        ip(&ns, "link add bpr1 type veth peer name bpr1p");
        ip(&ns, "link set bpr1p up");
        ip(&ns, "link set bpr1 up");
        let bpr1 = ifindex(&ns, "bpr1");
        ip(
            &ns,
            "route add 10.8.0.0/24 table local nexthop dev bpr1 nexthop dev bpr0",
        );
        ip(&ns, "link add bpv0 type veth peer name bpv1");
        ip(&ns, "addr add 10.5.0.1/24 dev bpv0");
        ip(&ns, "link set bpv0 up"); // peer down: no carrier
        let bpv0 = ifindex(&ns, "bpv0");
        let routes = crate::sys::in_netns(ns.fd(), || {
            std::fs::write(
                "/proc/sys/net/ipv4/conf/all/ignore_routes_with_linkdown",
                "1",
            )
            .unwrap();
            local_routes().unwrap()
        })
        .unwrap();
        eprintln!("table local: {routes:?}");
        assert!(!routes.iter().any(|r| r.net >> 16 == 0x0a09), "TOS route");
        assert!(routes.contains(&lr([10, 8, 0, 0], 24, UNICAST, bpr1)));
        // The address stays local (host scope: no carrier check); its broadcast is dead.
        assert!(routes.contains(&lr([10, 5, 0, 1], 32, LOCAL, bpv0)));
        assert!(!routes.iter().any(|r| r.net == 0x0a05_00ff));
        let listed = ip(&ns, "-o route show table local");
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with("broadcast 10.5.0.255") && l.contains("dead")),
            "{listed}"
        );
        assert_eq!(
            routes
                .iter()
                .filter(|r| r.rtype != UNICAST)
                .copied()
                .collect::<Vec<_>>(),
            ip_local_routes(&ns)
        );

        // Watch: quiet once the setup's late messages (linkwatch) are read, then woken by an
        // address, then quiet again.
        let watch = crate::sys::in_netns(ns.fd(), RouteWatch::new)
            .unwrap()
            .unwrap();
        let mut quiet = false;
        for _ in 0..25 {
            if !watch.wait(Duration::from_millis(200)).unwrap() {
                quiet = true;
                break;
            }
        }
        assert!(quiet, "notifications never stopped");
        ip(&ns, "addr add 10.7.1.1/24 dev bpr0");
        let started = Instant::now();
        assert!(watch.wait(Duration::from_secs(2)).unwrap());
        assert!(started.elapsed() < Duration::from_secs(1));
        let started = Instant::now();
        assert!(!watch.wait(Duration::from_millis(200)).unwrap());
        assert!(started.elapsed() >= Duration::from_millis(200));
        let routes = crate::sys::in_netns(ns.fd(), local_routes)
            .unwrap()
            .unwrap();
        assert!(routes.contains(&lr([10, 7, 1, 1], 32, LOCAL, bpr0)));
        // Link events too.
        ip(&ns, "link set bpr1 down");
        assert!(watch.wait(Duration::from_secs(2)).unwrap());
    }

    #[test]
    fn fresh_namespace_has_no_local_table() {
        if !require_netns() {
            return;
        }
        let name = format!("bpfltr-t{}-route-fresh", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = FreshNetns(name);
        let fd = crate::sys::open_netns(format!("/run/netns/{}", ns.0)).unwrap();
        // lo is down, so the kernel never created table 255; strict checking says ENOENT.
        let routes = crate::sys::in_netns(std::os::fd::AsFd::as_fd(&fd), local_routes)
            .unwrap()
            .unwrap();
        assert!(routes.is_empty(), "{routes:?}");
    }
}
