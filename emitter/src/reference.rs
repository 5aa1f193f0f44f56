//! Reference evaluator: a direct interpreter of the IR over one packet, written from the
//! kernel's ipt_do_table (IPv4 programs) and ip6t_do_table / ip6_packet_match /
//! ipv6_find_hdr (IPv6 programs) and the x_tables matches (SEMANTICS.md), not from the code
//! generator. Tests compare the generated BPF against it.

use crate::ir::{
    Action, AddrtypeDev, AddrtypeMatch, ChainId, Iface, Match, MultiportMode, OwnerMatch, Program,
    Verdict, OWNER_GID, OWNER_SOCKET, OWNER_UID,
};

/// A packet as a netfilter hook sees it.
#[derive(Debug, Clone, Default)]
pub struct Packet<'a> {
    /// bytes from the IP header on; skb->len = `data.len()`
    pub data: &'a [u8],
    /// state->in name (all zeros when there is no device)
    pub in_dev: [u8; 16],
    /// state->out name
    pub out_dev: [u8; 16],
    /// the connection the packet belongs to (`skb->_nfct`)
    pub conn: Conn,
    /// `skb->mark`
    pub mark: u32,
    /// `skb->pkt_type` (PACKET_*)
    pub pkt_type: u8,
    /// what `mac_mt` compares: the MAC header's source address when `skb->dev` is an
    /// Ethernet device and the header lies whole before the network header; None otherwise
    /// (a test run's packet arrives on the loopback device)
    pub mac_src: Option<[u8; 6]>,
    /// state->in->ifindex (0: no device)
    pub in_ifindex: u32,
    /// state->out->ifindex
    pub out_ifindex: u32,
    /// the routes of the namespace's local table (`ip route show table local`), for addrtype
    pub local_routes: &'a [LocalRoute],
    /// the packet's socket, for owner
    pub sock: Sock,
    /// the limit buckets and the time; None: every limit match passes
    pub buckets: Option<&'a core::cell::RefCell<Buckets>>,
}

pub use crate::ir::LocalRoute;

/// What `skb_to_full_sk(skb)` leads owner_mt to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sock {
    /// no socket, no `sk_socket`, or one of another namespace
    #[default]
    None,
    /// a socket without a file (a kernel socket)
    NoFile,
    /// a socket whose file has these credentials
    File {
        /// `f_cred->fsuid`
        uid: u32,
        /// `f_cred->fsgid`
        gid: u32,
    },
}

/// The limit buckets of a table (state words by slot) and the current jiffies.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    /// jiffies
    pub now: u64,
    /// state word per slot (`credit << 32 | prev`)
    pub words: Vec<u64>,
}

/// `__inet_dev_addr_type` (net/ipv4/fib_frontend.c) for the local table.
pub fn addr_type(routes: &[LocalRoute], dev: Option<u32>, addr: u32) -> u8 {
    const RTN_BROADCAST: u8 = 3;
    const RTN_MULTICAST: u8 = 5;
    if addr >> 24 == 0 || addr == u32::MAX {
        return RTN_BROADCAST;
    }
    if addr >> 28 == 0xe {
        return RTN_MULTICAST;
    }
    let mask = |p: u8| {
        if p == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(p))
        }
    };
    // the longest prefix; of equal ones the first (in the table's order)
    let best = routes
        .iter()
        .rev()
        .filter(|r| addr & mask(r.prefix) == r.net & mask(r.prefix))
        .max_by_key(|r| r.prefix);
    match best {
        // fib_table_lookup fails for the error types (fib_props[type].error: blackhole,
        // unreachable, prohibit, throw, nat, xresolve): inet_addr_type says UNICAST
        Some(r) if (6..=11).contains(&r.rtype) => crate::ir::RTN_UNICAST,
        Some(r) if dev.is_none_or(|d| d == r.ifindex) => r.rtype,
        _ => crate::ir::RTN_UNICAST,
    }
}

/// `addrtype_mt_v1` (and revision 0, which is it without a device).
fn addrtype_mt(m: &AddrtypeMatch, saddr: u32, daddr: u32, pkt: &Packet<'_>) -> bool {
    let dev = match m.dev {
        AddrtypeDev::Any => None,
        AddrtypeDev::In => Some(pkt.in_ifindex).filter(|i| *i != 0),
        AddrtypeDev::Out => Some(pkt.out_ifindex).filter(|i| *i != 0),
    };
    let ok = |mask: u16, addr: u32, inv: bool| {
        let t = addr_type(pkt.local_routes, dev, addr);
        let hit = t < 16 && mask & (1 << t) != 0;
        hit != inv
    };
    (m.src == 0 || ok(m.src, saddr, m.inv_src)) && (m.dst == 0 || ok(m.dst, daddr, m.inv_dst))
}

/// `owner_mt` (xt_owner.c), without `--suppl-groups`.
pub fn owner_mt(m: &OwnerMatch, sock: Sock) -> bool {
    let (uid, gid) = match sock {
        Sock::None => return (m.tests ^ m.invert) == 0,
        _ if m.tests & m.invert & OWNER_SOCKET != 0 => return false,
        Sock::NoFile => return (m.tests ^ m.invert) & (OWNER_UID | OWNER_GID) == 0,
        Sock::File { uid, gid } => (uid, gid),
    };
    let inside = |x: u32, (lo, hi): (u32, u32)| x >= lo && x <= hi;
    if m.tests & OWNER_UID != 0 && inside(uid, m.uid) == (m.invert & OWNER_UID != 0) {
        return false;
    }
    if m.tests & OWNER_GID != 0 && inside(gid, m.gid) == (m.invert & OWNER_GID != 0) {
        return false;
    }
    true
}

/// One direction of a connection (`struct nf_conntrack_tuple`): addresses as the bytes of
/// their `union nf_inet_addr` (IPv4 in the first 4), ports as numbers (host order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tuple {
    /// src.u3
    pub src: [u8; 16],
    /// dst.u3
    pub dst: [u8; 16],
    /// src.u.all
    pub sport: u16,
    /// dst.u.all
    pub dport: u16,
}

/// What `nf_ct_get` returns for a packet. The default is "no entry, ctinfo 0": what every
/// packet of a BPF test run sees (INVALID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conn {
    /// `_nfct & NFCT_INFOMASK` (enum ip_conntrack_info; 7 = IP_CT_UNTRACKED)
    pub ctinfo: u8,
    /// the entry, if `_nfct & NFCT_PTRMASK` is not NULL
    pub entry: Option<Entry>,
}

/// The parts of `struct nf_conn` the matches read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// `status` (IPS_*)
    pub status: u32,
    /// `tuplehash[IP_CT_DIR_ORIGINAL].tuple`
    pub orig: Tuple,
    /// `tuplehash[IP_CT_DIR_REPLY].tuple`
    pub reply: Tuple,
    /// `nf_ct_protonum`
    pub proto: u8,
    /// `nf_ct_expires(ct) / HZ`: seconds left
    pub expires: u32,
}

/// IP_CT_IS_REPLY
const IP_CT_IS_REPLY: u8 = 3;
/// IP_CT_UNTRACKED
const IP_CT_UNTRACKED: u8 = 7;
/// IPS_SRC_NAT, IPS_DST_NAT
const IPS_SRC_NAT: u32 = 1 << 4;
const IPS_DST_NAT: u32 = 1 << 5;

/// xt_state's `state_mt`.
fn state_mt(mask: u32, c: &Conn) -> bool {
    let bit = match c.entry {
        Some(_) => 1u32 << (c.ctinfo % IP_CT_IS_REPLY + 1),
        None if c.ctinfo == IP_CT_UNTRACKED => crate::ir::statebits::UNTRACKED,
        None => 1,
    };
    mask & bit != 0
}

/// xt_conntrack's `conntrack_mt`, tests in its order.
fn conntrack_mt(m: &crate::ir::CtMatch, c: &Conn, ipv6: bool) -> bool {
    use crate::ir::ctstate;
    let mut bit: u16 = match c.entry {
        Some(_) => 1 << (c.ctinfo % IP_CT_IS_REPLY + 1),
        None if c.ctinfo == IP_CT_UNTRACKED => ctstate::UNTRACKED,
        None => ctstate::INVALID,
    };
    if let Some((mask, invert)) = m.state {
        if let Some(e) = c.entry {
            if e.status & IPS_SRC_NAT != 0 {
                bit |= ctstate::SNAT;
            }
            if e.status & IPS_DST_NAT != 0 {
                bit |= ctstate::DNAT;
            }
        }
        if (mask & bit != 0) == invert {
            return false;
        }
    }
    let Some(e) = c.entry else {
        return m.state.is_some();
    };
    if let Some(orig) = m.dir_original {
        if (c.ctinfo < IP_CT_IS_REPLY) != orig {
            return false;
        }
    }
    // conntrack_addrcmp: 4 bytes in IPv4, 16 in IPv6
    let len = if ipv6 { 16 } else { 4 };
    let addr_ok = |t: &Option<crate::ir::CtAddr>, v: &[u8; 16]| {
        t.is_none_or(|a| {
            let equal = (0..len).all(|i| (v[i] ^ a.addr[i]) & a.mask[i] == 0);
            equal != a.invert
        })
    };
    if !addr_ok(&m.origsrc, &e.orig.src)
        || !addr_ok(&m.origdst, &e.orig.dst)
        || !addr_ok(&m.replsrc, &e.reply.src)
        || !addr_ok(&m.repldst, &e.reply.dst)
    {
        return false;
    }
    if let Some((proto, invert)) = m.proto {
        if (e.proto == proto) == invert {
            return false;
        }
    }
    let port_ok = |t: &Option<crate::ir::CtPort>, v: u16| {
        t.is_none_or(|p| port_in(v, p.range.lo, p.range.hi, p.invert))
    };
    if !port_ok(&m.origsrc_port, e.orig.sport)
        || !port_ok(&m.origdst_port, e.orig.dport)
        || !port_ok(&m.replsrc_port, e.reply.sport)
        || !port_ok(&m.repldst_port, e.reply.dport)
    {
        return false;
    }
    if let Some((mask, invert)) = m.status {
        if (mask & e.status != 0) == invert {
            return false;
        }
    }
    if let Some((lo, hi, invert)) = m.expires {
        if (e.expires >= lo && e.expires <= hi) == invert {
            return false;
        }
    }
    true
}

/// What the kernel would do with the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// final verdict
    pub verdict: Verdict,
    /// counter slots incremented, in order (each by one packet and skb->len bytes)
    pub counted: Vec<u32>,
}

enum MatchResult {
    Yes,
    No,
    Hotdrop,
}

struct Parsed<'a> {
    data: &'a [u8],
    saddr: u32,
    daddr: u32,
    proto: u8,
    fragoff: u16,
    thoff: usize,
    /// IPv6 programs: the addresses, the hop limit and what `ipv6_find_hdr` returns
    v6: Option<V6>,
}

/// The IPv6 header fields the matches read, and the result of the protocol walk.
#[derive(Debug, Clone, Copy)]
struct V6 {
    saddr: [u8; 16],
    daddr: [u8; 16],
    hop_limit: u8,
    /// `ipv6_find_hdr(skb, &thoff (0), -1, &fragoff, NULL)`: (protocol, thoff, fragoff), or
    /// None when it returns an error
    walk: Option<(u8, usize, u16)>,
}

/// `ipv6_ext_hdr` (net/ipv6/exthdrs_core.c): hop-by-hop, routing, fragment, AH, no next
/// header, destination options.
pub fn ipv6_ext_hdr(nexthdr: u8) -> bool {
    matches!(nexthdr, 0 | 43 | 44 | 51 | 59 | 60)
}

/// `ipv6_find_hdr(skb, &offset, -1, &fragoff, NULL)` with `offset` 0, as `ip6_packet_match`
/// calls it for an IP6T_F_PROTO entry, over `data` (the packet from its IPv6 header):
/// `Some((protocol, transport offset, fragment offset))`, or None for its errors (-EBADMSG
/// when a header it reads is cut short, -ENOENT for a non-first fragment whose next header
/// is an extension header). The offset of a non-first fragment stays 0, as the kernel leaves
/// `*offset` untouched there; the fragment offset is in bytes (`frag_off & ~7`).
pub fn ipv6_find_hdr(data: &[u8]) -> Option<(u8, usize, u16)> {
    let mut nexthdr = *data.get(6)?;
    let mut start = 40usize;
    loop {
        if !ipv6_ext_hdr(nexthdr) || nexthdr == 59 {
            return Some((nexthdr, start, 0));
        }
        // skb_header_pointer of the 2-byte ipv6_opt_hdr
        let hp = data.get(start..start + 2)?;
        if nexthdr == 43 {
            // the 4-byte ipv6_rt_hdr is read too (for IP6_FH_F_SKIP_RH)
            data.get(start..start + 4)?;
        }
        let hdrlen = if nexthdr == 44 {
            let fp = data.get(start + 2..start + 4)?;
            let frag_off = u16::from_be_bytes([fp[0], fp[1]]) & !7;
            if frag_off != 0 {
                if !ipv6_ext_hdr(hp[0]) || hp[0] == 59 {
                    return Some((hp[0], 0, frag_off));
                }
                return None;
            }
            8
        } else if nexthdr == 51 {
            (usize::from(hp[1]) + 2) << 2
        } else {
            (usize::from(hp[1]) + 1) << 3
        };
        nexthdr = hp[0];
        start += hdrlen;
    }
}

/// Why `ipv6_find_hdr` with a target failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindError {
    /// -ENOENT: the walk ended without the target
    NoEnt,
    /// -EBADMSG: a header it reads is cut short
    BadMsg,
}

/// `ipv6_find_hdr(skb, &offset, target, NULL, NULL)` with `offset` 0 and a target (as the
/// ip6t_frag, hbh/dst, rt matches call it): the offset of the first `target` header.
pub fn ipv6_find_hdr_target(data: &[u8], target: u8) -> Result<usize, FindError> {
    let bad = FindError::BadMsg;
    let mut nexthdr = *data.get(6).ok_or(bad)?;
    let mut start = 40usize;
    loop {
        let found = nexthdr == target;
        if !ipv6_ext_hdr(nexthdr) || nexthdr == 59 {
            return if found {
                Ok(start)
            } else {
                Err(FindError::NoEnt)
            };
        }
        let hp = data.get(start..start + 2).ok_or(bad)?;
        if nexthdr == 43 {
            data.get(start..start + 4).ok_or(bad)?;
        }
        let hdrlen = if nexthdr == 44 {
            let fp = data.get(start + 2..start + 4).ok_or(bad)?;
            if u16::from_be_bytes([fp[0], fp[1]]) & !7 != 0 {
                return if found {
                    Ok(start)
                } else {
                    Err(FindError::NoEnt)
                };
            }
            8
        } else if nexthdr == 51 {
            (usize::from(hp[1]) + 2) << 2
        } else {
            (usize::from(hp[1]) + 1) << 3
        };
        if found {
            return Ok(start);
        }
        nexthdr = hp[0];
        start += hdrlen;
    }
}

/// `frag_mt6` (ip6t_frag.c).
fn frag_mt6(m: &crate::ir::FragMatch, data: &[u8]) -> MatchResult {
    use crate::ir::frag;
    let ptr = match ipv6_find_hdr_target(data, 44) {
        Ok(p) => p,
        Err(FindError::NoEnt) => return MatchResult::No,
        Err(FindError::BadMsg) => return MatchResult::Hotdrop,
    };
    let Some(fh) = data.get(ptr..ptr + 8) else {
        return MatchResult::Hotdrop;
    };
    let frag_off = u16::from_be_bytes([fh[2], fh[3]]);
    let id = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
    let ok = ((id >= m.ids.0 && id <= m.ids.1) != m.inv_ids)
        && !(m.flags & frag::RES != 0 && (fh[1] != 0 || frag_off & 6 != 0))
        && !(m.flags & frag::FST != 0 && frag_off & !7 != 0)
        && !(m.flags & frag::MF != 0 && frag_off & 1 == 0)
        && !(m.flags & frag::NMF != 0 && frag_off & 1 != 0);
    if ok {
        MatchResult::Yes
    } else {
        MatchResult::No
    }
}

/// `rt_mt6` (ip6t_rt.c) without the type-0 address list.
fn rt_mt6(m: &crate::ir::RtMatch, data: &[u8]) -> MatchResult {
    let ptr = match ipv6_find_hdr_target(data, 43) {
        Ok(p) => p,
        Err(FindError::NoEnt) => return MatchResult::No,
        Err(FindError::BadMsg) => return MatchResult::Hotdrop,
    };
    // struct ipv6_rt_hdr: nexthdr, hdrlen, type, segments_left
    let Some(rh) = data.get(ptr..ptr + 4) else {
        return MatchResult::Hotdrop;
    };
    let hdrlen = (usize::from(rh[1]) + 1) << 3;
    if data.len() - ptr < hdrlen {
        // "Packet smaller than its length field"
        return if m.short_hotdrop {
            MatchResult::Hotdrop
        } else {
            MatchResult::No
        };
    }
    let sl = u32::from(rh[3]);
    let ok = ((sl >= m.segsleft.0 && sl <= m.segsleft.1) != m.inv_segsleft)
        && m.hdrlen.is_none_or(|l| (l as usize == hdrlen) != m.inv_len)
        && m.rt_type.is_none_or(|t| (t == u32::from(rh[2])) != m.inv_type)
        // rt0_hdr.reserved, within the header (hdrlen >= 8)
        && !(m.res && data[ptr + 4..ptr + 8] != [0; 4]);
    if ok {
        MatchResult::Yes
    } else {
        MatchResult::No
    }
}

/// `ipv6header_mt6` (ip6t_ipv6header.c), unbounded as the kernel's (the program hotdrops past
/// `MAX_EXT_HEADERS` extension headers, see SEMANTICS.md).
fn ipv6header_mt6(m: &crate::ir::Ipv6HeaderMatch, data: &[u8]) -> MatchResult {
    let mut nexthdr = data[6];
    let mut ptr = 40usize;
    let mut temp = 0u8;
    while matches!(nexthdr, 0 | 43 | 44 | 50 | 51 | 59 | 60) {
        if nexthdr == 59 {
            temp |= 2;
            break;
        }
        if data.len() < ptr + 2 {
            return MatchResult::No;
        }
        if nexthdr == 50 {
            temp |= 4;
            break;
        }
        let hp = &data[ptr..ptr + 2];
        let (bit, hdrlen) = match nexthdr {
            0 => (128, (usize::from(hp[1]) + 1) << 3),
            60 => (64, (usize::from(hp[1]) + 1) << 3),
            43 => (32, (usize::from(hp[1]) + 1) << 3),
            44 => (16, 8),
            _ => (8, (usize::from(hp[1]) + 2) << 2),
        };
        temp |= bit;
        nexthdr = hp[0];
        ptr += hdrlen;
        if ptr > data.len() {
            break;
        }
    }
    if nexthdr != 59 && nexthdr != 50 {
        temp |= 1;
    }
    let ok = if m.soft {
        (temp ^ m.matchflags ^ m.invflags) & m.matchflags == 0
    } else if m.invflags != 0 {
        temp != m.matchflags
    } else {
        temp == m.matchflags
    };
    if ok {
        MatchResult::Yes
    } else {
        MatchResult::No
    }
}

/// `hbh_mt6` (ip6t_hbh.c, "hbh" and "dst") without the option list.
fn hbh_mt6(m: &crate::ir::OptsMatch, data: &[u8]) -> MatchResult {
    let ptr = match ipv6_find_hdr_target(data, if m.dst { 60 } else { 0 }) {
        Ok(p) => p,
        Err(FindError::NoEnt) => return MatchResult::No,
        Err(FindError::BadMsg) => return MatchResult::Hotdrop,
    };
    let Some(oh) = data.get(ptr..ptr + 2) else {
        return MatchResult::Hotdrop;
    };
    let hdrlen = (usize::from(oh[1]) + 1) << 3;
    if data.len() - ptr < hdrlen {
        return if m.short_hotdrop {
            MatchResult::Hotdrop
        } else {
            MatchResult::No
        };
    }
    if m.hdrlen.is_none_or(|l| (l as usize == hdrlen) != m.inv_len) {
        MatchResult::Yes
    } else {
        MatchResult::No
    }
}

/// `ipv6_masked_addr_cmp`: `((a ^ addr) & mask) != 0` (unlike IPv4's `(a & mask) !=
/// addr`, the rule's address counts only under its mask).
fn masked_differ(a: &[u8; 16], mask: &std::net::Ipv6Addr, addr: &std::net::Ipv6Addr) -> bool {
    let (m, x) = (mask.octets(), addr.octets());
    (0..16).any(|k| (a[k] ^ x[k]) & m[k] != 0)
}

impl Parsed<'_> {
    /// skb_header_pointer: `len` bytes at `off`, or None past skb->len.
    fn header(&self, off: usize, len: usize) -> Option<&[u8]> {
        self.data.get(off..off.checked_add(len)?)
    }
}

fn iface_ok(dev: &[u8; 16], i: &Iface) -> bool {
    let differs = (0..16).any(|k| (dev[k] ^ i.name[k]) & i.mask[k] != 0);
    differs == i.invert
}

fn port_in(p: u16, lo: u16, hi: u16, invert: bool) -> bool {
    (p >= lo && p <= hi) != invert
}

fn eval_match(m: &Match, p: &Parsed<'_>, pkt: &Packet<'_>) -> MatchResult {
    use MatchResult::*;
    let b = |x: bool| if x { Yes } else { No };
    match m {
        Match::Ipv4Src { addr, mask, invert } => {
            b(((p.saddr & u32::from(*mask)) != u32::from(*addr)) == *invert)
        }
        Match::Ipv4Dst { addr, mask, invert } => {
            b(((p.daddr & u32::from(*mask)) != u32::from(*addr)) == *invert)
        }
        Match::InIface(i) => b(iface_ok(&pkt.in_dev, i)),
        Match::OutIface(i) => b(iface_ok(&pkt.out_dev, i)),
        Match::Protocol { proto, invert } => b(*proto == 0 || ((p.proto != *proto) == *invert)),
        Match::Fragment { invert } => b((p.fragoff != 0) != *invert),
        Match::Conntrack(m) => b(conntrack_mt(m, &pkt.conn, p.v6.is_some())),
        Match::State(mask) => b(state_mt(*mask, &pkt.conn)),
        Match::Mark { mark, mask, invert } => b(((pkt.mark & mask) == *mark) != *invert),
        Match::Limit(l) => b(pkt.buckets.is_none_or(|cell| {
            let mut st = cell.borrow_mut();
            let now = st.now;
            let slot = l.slot as usize;
            if st.words.len() <= slot {
                st.words.resize(slot + 1, 0);
            }
            let (word, pass) = l.step(st.words[slot], now);
            st.words[slot] = word;
            pass
        })),
        Match::Addrtype(m) => b(addrtype_mt(m, p.saddr, p.daddr, pkt)),
        Match::Owner(m) => b(owner_mt(m, pkt.sock)),
        Match::Mac { src, invert } => b(pkt
            .mac_src
            .is_some_and(|mac| (u32::from(mac == *src) ^ invert) != 0)),
        Match::PktType { pkttype, invert } => {
            // PACKET_LOOPBACK (5): multicast destination -> MULTICAST, else BROADCAST; in
            // IPv6 always MULTICAST
            let t = match pkt.pkt_type {
                5 if p.v6.is_some() || p.daddr >> 28 == 0xe => 2,
                5 => 1,
                t => t,
            };
            b((t == *pkttype) != *invert)
        }
        Match::Tcp(t) => {
            if p.fragoff != 0 {
                return if p.fragoff == 1 { Hotdrop } else { No };
            }
            let Some(th) = p.header(p.thoff, 20) else {
                return Hotdrop;
            };
            let sport = u16::from_be_bytes([th[0], th[1]]);
            let dport = u16::from_be_bytes([th[2], th[3]]);
            if !port_in(sport, t.sport.lo, t.sport.hi, t.inv_sport) {
                return No;
            }
            if !port_in(dport, t.dport.lo, t.dport.hi, t.inv_dport) {
                return No;
            }
            if ((th[13] & t.flags_mask) == t.flags_cmp) == t.inv_flags {
                return No;
            }
            if t.option != 0 {
                let doff = usize::from(th[12] >> 4) * 4;
                if doff < 20 {
                    return Hotdrop;
                }
                let optlen = doff - 20;
                if optlen == 0 {
                    return b(t.inv_option);
                }
                let Some(op) = p.header(p.thoff + 20, optlen) else {
                    return Hotdrop;
                };
                let mut i = 0usize;
                while i < optlen {
                    if op[i] == t.option {
                        return b(!t.inv_option);
                    }
                    if op[i] < 2 {
                        i += 1;
                    } else {
                        // the byte after the options is payload (or nothing); i only ever
                        // reaches optlen - 1 here, and any step ends the loop
                        let l = op.get(i + 1).copied().unwrap_or(1);
                        i += if l == 0 { 1 } else { usize::from(l) };
                    }
                }
                return b(t.inv_option);
            }
            Yes
        }
        Match::TcpMss(m) => {
            // tcpmss_mt: no fragment test before the 2026 fix, so a non-first fragment's
            // payload at thoff is read as the TCP header
            if m.frag_nomatch && p.fragoff != 0 {
                return No;
            }
            let Some(th) = p.header(p.thoff, 20) else {
                return Hotdrop;
            };
            let doff = usize::from(th[12] >> 4) * 4;
            if doff < 20 {
                return Hotdrop;
            }
            let optlen = doff - 20;
            if optlen == 0 {
                return b(m.result(None));
            }
            let Some(op) = p.header(p.thoff + 20, optlen) else {
                return Hotdrop;
            };
            let mut i = 0usize;
            while i < optlen {
                if op[i] == 2 && optlen - i >= 4 && op[i + 1] == 4 {
                    return b(m.result(Some(u16::from_be_bytes([op[i + 2], op[i + 3]]))));
                }
                if op[i] < 2 {
                    i += 1;
                } else {
                    // as for --tcp-option: a length byte past the options ends the loop anyway
                    let l = op.get(i + 1).copied().unwrap_or(1);
                    i += if l == 0 { 1 } else { usize::from(l) };
                }
            }
            b(m.result(None))
        }
        Match::Udp(u) => {
            if p.fragoff != 0 {
                return No;
            }
            let Some(uh) = p.header(p.thoff, 8) else {
                return Hotdrop;
            };
            let sport = u16::from_be_bytes([uh[0], uh[1]]);
            let dport = u16::from_be_bytes([uh[2], uh[3]]);
            b(port_in(sport, u.sport.lo, u.sport.hi, u.inv_sport)
                && port_in(dport, u.dport.lo, u.dport.hi, u.inv_dport))
        }
        Match::Ipv6Src { addr, mask, invert } => match &p.v6 {
            Some(v) => b(masked_differ(&v.saddr, mask, addr) == *invert),
            None => No,
        },
        Match::Ipv6Dst { addr, mask, invert } => match &p.v6 {
            Some(v) => b(masked_differ(&v.daddr, mask, addr) == *invert),
            None => No,
        },
        // evaluated by `rule_matches`, which keeps the offsets it sets
        Match::Ipv6Protocol { .. } => No,
        Match::Frag(m) => match &p.v6 {
            Some(_) => frag_mt6(m, p.data),
            None => No,
        },
        Match::Rt(m) => match &p.v6 {
            Some(_) => rt_mt6(m, p.data),
            None => No,
        },
        Match::Ipv6Header(m) => match &p.v6 {
            Some(_) => ipv6header_mt6(m, p.data),
            None => No,
        },
        Match::Opts(m) => match &p.v6 {
            Some(_) => hbh_mt6(m, p.data),
            None => No,
        },
        Match::HopLimit { mode, value } => {
            let Some(v) = &p.v6 else { return No };
            b(match *mode {
                crate::ir::hl::EQ => v.hop_limit == *value,
                crate::ir::hl::NE => v.hop_limit != *value,
                crate::ir::hl::LT => v.hop_limit < *value,
                crate::ir::hl::GT => v.hop_limit > *value,
                _ => false,
            })
        }
        Match::IpRange6(r) => {
            let Some(v) = &p.v6 else { return No };
            let num = |a: &[u8; 16]| u128::from_be_bytes(*a);
            for (range, x, inv) in [(r.src, &v.saddr, r.inv_src), (r.dst, &v.daddr, r.inv_dst)] {
                if let Some((lo, hi)) = range {
                    let out = num(x) < u128::from(lo) || num(x) > u128::from(hi);
                    if out != inv {
                        return No;
                    }
                }
            }
            Yes
        }
        Match::Icmp6(i) => {
            if p.fragoff != 0 {
                return No;
            }
            let Some(ic) = p.header(p.thoff, 8) else {
                return Hotdrop;
            };
            let hit = ic[0] == i.icmp_type && ic[1] >= i.code_min && ic[1] <= i.code_max;
            b(hit != i.invert)
        }
        Match::Icmp(i) => {
            if p.fragoff != 0 {
                return No;
            }
            let Some(ic) = p.header(p.thoff, 8) else {
                return Hotdrop;
            };
            let hit = i.icmp_type == 0xff
                || (ic[0] == i.icmp_type && ic[1] >= i.code_min && ic[1] <= i.code_max);
            b(hit != i.invert)
        }
        Match::Multiport(mp) => {
            if p.fragoff != 0 {
                return No;
            }
            let Some(ph) = p.header(p.thoff, 4) else {
                return Hotdrop;
            };
            let src = u16::from_be_bytes([ph[0], ph[1]]);
            let dst = u16::from_be_bytes([ph[2], ph[3]]);
            // ports_match_v1, with ports[count] past the array read from pflags as in the
            // kernel's struct layout
            let port = |i: usize| {
                if i < 15 {
                    mp.ports[i]
                } else {
                    u16::from_ne_bytes([mp.pflags[0], mp.pflags[1]])
                }
            };
            let mut i = 0usize;
            while i < usize::from(mp.count) {
                let s = port(i);
                let e = if i < 15 && mp.pflags[i] != 0 {
                    i += 1;
                    port(i)
                } else {
                    s
                };
                let hit = match mp.mode {
                    MultiportMode::Source => src >= s && src <= e,
                    MultiportMode::Destination => dst >= s && dst <= e,
                    MultiportMode::Either => (src >= s && src <= e) || (dst >= s && dst <= e),
                };
                if hit {
                    return b(!mp.invert);
                }
                i += 1;
            }
            b(mp.invert)
        }
        Match::IpRange(r) => {
            if let Some((lo, hi)) = r.src {
                let out = p.saddr < u32::from(lo) || p.saddr > u32::from(hi);
                if out != r.inv_src {
                    return No;
                }
            }
            if let Some((lo, hi)) = r.dst {
                let out = p.daddr < u32::from(lo) || p.daddr > u32::from(hi);
                if out != r.inv_dst {
                    return No;
                }
            }
            Yes
        }
        #[allow(unreachable_patterns)]
        _ => No,
    }
}

/// Run `prog` on `pkt` the way ipt_do_table would.
/// `ip6_packet_match`'s protocol part (IP6T_F_PROTO): sets the rule's transport and
/// fragment offsets from the walk.
fn ipv6_protocol(proto: u8, invert: bool, p: &mut Parsed<'_>) -> MatchResult {
    let Some(v) = p.v6 else {
        return MatchResult::No;
    };
    // a negative return leaves the fragment offset 0: always the hotdrop
    let Some((found, thoff, fragoff)) = v.walk else {
        return MatchResult::Hotdrop;
    };
    p.thoff = thoff;
    p.fragoff = fragoff;
    if proto == found {
        return if invert {
            MatchResult::No
        } else {
            MatchResult::Yes
        };
    }
    if proto != 0 && !invert {
        return MatchResult::No;
    }
    MatchResult::Yes
}

/// The matches of one rule, in order.
fn rule_matches(matches: &[Match], p: &mut Parsed<'_>, pkt: &Packet<'_>) -> MatchResult {
    if p.v6.is_some() {
        // ip6t_do_table: `acpar.thoff = 0` before every rule; the fragment offset is only
        // ever read after the rule's own protocol walk set it (front ends guarantee it)
        p.thoff = 0;
        p.fragoff = 0;
    }
    for m in matches {
        let r = match m {
            Match::Ipv6Protocol { proto, invert } => ipv6_protocol(*proto, *invert, p),
            m => eval_match(m, p, pkt),
        };
        match r {
            MatchResult::Yes => {}
            r => return r,
        }
    }
    MatchResult::Yes
}

/// Parse an IPv6 packet (None: shorter than its header, which no hook sees).
fn parse6(d: &[u8]) -> Option<Parsed<'_>> {
    if d.len() < 40 {
        return None;
    }
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr.copy_from_slice(&d[8..24]);
    daddr.copy_from_slice(&d[24..40]);
    Some(Parsed {
        data: d,
        saddr: 0,
        daddr: 0,
        proto: 0,
        fragoff: 0,
        thoff: 0,
        v6: Some(V6 {
            saddr,
            daddr,
            hop_limit: d[7],
            walk: ipv6_find_hdr(d),
        }),
    })
}

pub fn evaluate(prog: &Program, pkt: &Packet<'_>) -> Outcome {
    let d = pkt.data;
    let counted = Vec::new();
    if prog.family == crate::ir::Family::Ipv6 {
        let Some(p) = parse6(d) else {
            return Outcome {
                verdict: Verdict::Drop,
                counted,
            };
        };
        return run(prog, p, pkt);
    }
    if d.len() < 20 {
        // never seen at a netfilter hook; the generated code drops it
        return Outcome {
            verdict: Verdict::Drop,
            counted,
        };
    }
    let p = Parsed {
        data: d,
        saddr: u32::from_be_bytes([d[12], d[13], d[14], d[15]]),
        daddr: u32::from_be_bytes([d[16], d[17], d[18], d[19]]),
        proto: d[9],
        fragoff: u16::from_be_bytes([d[6], d[7]]) & 0x1fff,
        thoff: usize::from(d[0] & 0xf) * 4,
        v6: None,
    };
    run(prog, p, pkt)
}

/// ipt_do_table / ip6t_do_table over a parsed packet.
fn run(prog: &Program, mut p: Parsed<'_>, pkt: &Packet<'_>) -> Outcome {
    let mut counted = Vec::new();
    let mut stack: Vec<(ChainId, usize)> = Vec::new();
    let (mut chain, mut idx) = (prog.entry, 0usize);
    // A chain graph without loops ends; the bound only guards against a malformed program.
    for _ in 0..10_000_000 {
        let rules = &prog.chains[&chain].rules;
        let mut ret = false;
        if idx >= rules.len() {
            ret = true;
        } else {
            let rule = &rules[idx];
            let matched = match rule_matches(&rule.matches, &mut p, pkt) {
                MatchResult::Yes => true,
                MatchResult::No => false,
                MatchResult::Hotdrop => {
                    return Outcome {
                        verdict: Verdict::Drop,
                        counted,
                    }
                }
            };
            if !matched {
                idx += 1;
                continue;
            }
            counted.push(rule.counter);
            match rule.action {
                Action::Accept => {
                    return Outcome {
                        verdict: Verdict::Accept,
                        counted,
                    }
                }
                Action::Drop | Action::Reject(_) => {
                    return Outcome {
                        verdict: Verdict::Drop,
                        counted,
                    }
                }
                Action::Continue | Action::Log(_) => idx += 1,
                Action::Return => ret = true,
                Action::Call(c) => {
                    stack.push((chain, idx + 1));
                    chain = c;
                    idx = 0;
                }
                Action::Goto(c) => {
                    chain = c;
                    idx = 0;
                }
                #[allow(unreachable_patterns)]
                _ => {
                    return Outcome {
                        verdict: Verdict::Drop,
                        counted,
                    }
                }
            }
        }
        if ret {
            match stack.pop() {
                Some((c, i)) => {
                    chain = c;
                    idx = i;
                }
                None => {
                    counted.push(prog.policy.counter);
                    return Outcome {
                        verdict: prog.policy.verdict,
                        counted,
                    };
                }
            }
        }
    }
    Outcome {
        verdict: Verdict::Drop,
        counted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::*;
    use std::net::Ipv4Addr;

    fn udp(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut v = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        v.extend_from_slice(&src);
        v.extend_from_slice(&[10, 0, 0, 2]);
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&[0, 8, 0, 0]);
        v
    }

    #[test]
    fn chain_walk_counts_jump_return_and_policy() {
        let mut chains = std::collections::BTreeMap::new();
        chains.insert(
            ChainId(0),
            Chain {
                name: "INPUT".into(),
                rules: vec![
                    Rule {
                        matches: vec![],
                        action: Action::Call(ChainId(1)),
                        counter: 0,
                    },
                    Rule {
                        matches: vec![],
                        action: Action::Return,
                        counter: 1,
                    },
                ],
            },
        );
        chains.insert(
            ChainId(1),
            Chain {
                name: "u".into(),
                rules: vec![
                    Rule {
                        matches: vec![Match::Udp(UdpMatch {
                            sport: PortRange::ANY,
                            dport: PortRange::one(53),
                            inv_sport: false,
                            inv_dport: false,
                        })],
                        action: Action::Drop,
                        counter: 3,
                    },
                    Rule {
                        matches: vec![],
                        action: Action::Return,
                        counter: 4,
                    },
                ],
            },
        );
        let prog = Program {
            family: Family::Ipv4,
            hook: Hook::LocalIn,
            entry: ChainId(0),
            chains,
            policy: Policy {
                verdict: Verdict::Accept,
                counter: 2,
            },
        };
        // a packet with no devices, connection, mark or socket
        let eval = |data| {
            evaluate(
                &prog,
                &Packet {
                    data,
                    ..Packet::default()
                },
            )
        };
        let a = udp([1, 2, 3, 4], 1000, 53);
        let o = eval(&a);
        assert_eq!(
            o,
            Outcome {
                verdict: Verdict::Drop,
                counted: vec![0, 3]
            }
        );
        let a = udp([1, 2, 3, 4], 1000, 54);
        let o = eval(&a);
        assert_eq!(
            o,
            Outcome {
                verdict: Verdict::Accept,
                counted: vec![0, 4, 1, 2]
            }
        );
        // truncated UDP header: hotdrop, nothing counted after the jump
        let o = eval(&a[..24]);
        assert_eq!(
            o,
            Outcome {
                verdict: Verdict::Drop,
                counted: vec![0]
            }
        );
        let _ = Ipv4Addr::LOCALHOST;
    }

    /// An IPv6 packet: header with `first` as next header, then `body`.
    fn ip6(first: u8, hop_limit: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.push(first);
        v.push(hop_limit);
        v.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v.extend_from_slice(body);
        v
    }

    /// An 8-byte options header (hop-by-hop or destination) followed by `next`.
    fn opts(next: u8) -> Vec<u8> {
        vec![next, 0, 1, 4, 0, 0, 0, 0]
    }

    fn frag(next: u8, offset: u16, more: bool) -> Vec<u8> {
        let w = offset << 3 | u16::from(more);
        let mut v = vec![next, 0];
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 1]);
        v
    }

    #[test]
    fn ipv6_find_hdr_walks_every_extension_header() {
        // hop-by-hop, routing (24 bytes), fragment (first), AH (hdrlen 1: 12 bytes), dst opts
        let mut body = opts(43);
        body.extend_from_slice(&[44, 2, 0, 1]);
        body.extend_from_slice(&[0; 20]);
        body.extend_from_slice(&frag(51, 0, true));
        body.extend_from_slice(&[60, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&opts(17));
        body.extend_from_slice(&[0, 1, 0, 53, 0, 8, 0, 0]);
        let p = ip6(0, 64, &body);
        assert_eq!(ipv6_find_hdr(&p), Some((17, 40 + 8 + 24 + 8 + 12 + 8, 0)));
        // ESP and "no next header" end the walk as protocols
        assert_eq!(ipv6_find_hdr(&ip6(50, 64, &[0; 8])), Some((50, 40, 0)));
        assert_eq!(ipv6_find_hdr(&ip6(0, 64, &opts(59))), Some((59, 48, 0)));
        assert_eq!(ipv6_find_hdr(&ip6(59, 64, &[])), Some((59, 40, 0)));
    }

    #[test]
    fn ipv6_find_hdr_non_first_fragments_and_failures() {
        // a non-first fragment: its next header, offset left at 0, fragment offset in bytes
        assert_eq!(
            ipv6_find_hdr(&ip6(44, 64, &frag(6, 3, false))),
            Some((6, 0, 24))
        );
        assert_eq!(
            ipv6_find_hdr(&ip6(44, 64, &frag(59, 3, false))),
            Some((59, 0, 24))
        );
        // ... unless that is an extension header: -ENOENT
        assert_eq!(ipv6_find_hdr(&ip6(44, 64, &frag(60, 3, false))), None);
        // cut short: two bytes of an options header, four of routing and fragment
        assert_eq!(ipv6_find_hdr(&ip6(0, 64, &[17])), None);
        assert_eq!(ipv6_find_hdr(&ip6(0, 64, &[17, 0])), Some((17, 48, 0)));
        assert_eq!(ipv6_find_hdr(&ip6(43, 64, &[17, 0, 0])), None);
        assert_eq!(ipv6_find_hdr(&ip6(44, 64, &[17, 0, 0])), None);
        // a header whose length runs past the end: the walk goes on and fails there
        assert_eq!(ipv6_find_hdr(&ip6(0, 64, &[0, 9, 0, 0])), None);
    }

    fn run6(matches: Vec<Match>, pkt: &[u8]) -> Outcome {
        let mut p = Program::single(
            Hook::LocalIn,
            vec![Rule {
                matches,
                action: Action::Accept,
                counter: 0,
            }],
            Policy {
                verdict: Verdict::Drop,
                counter: 1,
            },
        );
        p.family = Family::Ipv6;
        evaluate(
            &p,
            &Packet {
                data: pkt,
                ..Default::default()
            },
        )
    }

    #[test]
    fn ip6_packet_match_protocol_semantics() {
        let hit = Outcome {
            verdict: Verdict::Accept,
            counted: vec![0],
        };
        let miss = Outcome {
            verdict: Verdict::Drop,
            counted: vec![1],
        };
        let hotdrop = Outcome {
            verdict: Verdict::Drop,
            counted: vec![],
        };
        let p = |proto, invert| Match::Ipv6Protocol { proto, invert };
        let udp = ip6(0, 64, &[opts(17), vec![0, 1, 0, 53, 0, 8, 0, 0]].concat());
        assert_eq!(run6(vec![p(17, false)], &udp), hit);
        assert_eq!(run6(vec![p(17, true)], &udp), miss);
        assert_eq!(run6(vec![p(6, true)], &udp), hit);
        // -p all matches whatever `!` says
        assert_eq!(run6(vec![p(0, false)], &udp), hit);
        assert_eq!(run6(vec![p(0, true)], &udp), hit);
        // the walk fails: hotdrop, even for `! -p` and `-p all`
        let bad = ip6(44, 64, &frag(0, 3, false));
        assert_eq!(run6(vec![p(0, false)], &bad), hotdrop);
        assert_eq!(run6(vec![p(6, true)], &bad), hotdrop);
        // the udp match uses the walk's offsets: ports after the hop-by-hop header
        let port = |dport| {
            Match::Udp(UdpMatch {
                sport: PortRange::ANY,
                dport: PortRange::one(dport),
                inv_sport: false,
                inv_dport: false,
            })
        };
        assert_eq!(run6(vec![p(17, false), port(53)], &udp), hit);
        assert_eq!(run6(vec![p(17, false), port(54)], &udp), miss);
        // a non-first fragment: no transport match (never a hotdrop, the offset is in bytes)
        let nf = ip6(44, 64, &[frag(6, 1, false), vec![0; 20]].concat());
        let tcp = Match::Tcp(TcpMatch {
            sport: PortRange::ANY,
            dport: PortRange::ANY,
            flags_mask: 0,
            flags_cmp: 0,
            option: 0,
            inv_sport: false,
            inv_dport: false,
            inv_flags: false,
            inv_option: false,
        });
        assert_eq!(run6(vec![p(6, false), tcp], &nf), miss);
        // icmp6: no "any" type; a cut header hotdrops
        let icmp = |t, lo, hi| {
            Match::Icmp6(IcmpMatch {
                icmp_type: t,
                code_min: lo,
                code_max: hi,
                invert: false,
            })
        };
        let echo = ip6(58, 64, &[128, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(run6(vec![p(58, false), icmp(128, 0, 0)], &echo), hit);
        assert_eq!(run6(vec![p(58, false), icmp(255, 0, 255)], &echo), miss);
        assert_eq!(
            run6(vec![p(58, false), icmp(128, 0, 0)], &echo[..45]),
            hotdrop
        );
    }

    #[test]
    fn ipv6_addresses_hop_limit_and_ranges() {
        let pkt = ip6(59, 7, &[]);
        let hit = Verdict::Accept;
        let v = |m| run6(vec![m], &pkt).verdict;
        let a = |s: &str| s.parse::<std::net::Ipv6Addr>().expect("address");
        // the rule's address counts only under its mask (ipv6_masked_addr_cmp)
        let m = Match::Ipv6Src {
            addr: a("2001:db8::ffff"),
            mask: a("ffff:ffff::"),
            invert: false,
        };
        assert_eq!(v(m), hit);
        let m = Match::Ipv6Dst {
            addr: a("2001:db8::2"),
            mask: a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            invert: true,
        };
        assert_eq!(v(m), Verdict::Drop);
        for (mode, value, want) in [
            (hl::EQ, 7, true),
            (hl::NE, 7, false),
            (hl::LT, 8, true),
            (hl::LT, 7, false),
            (hl::GT, 6, true),
            (hl::GT, 7, false),
            (4, 7, false),
        ] {
            let got = v(Match::HopLimit { mode, value }) == hit;
            assert_eq!(got, want, "mode {mode} value {value}");
        }
        let r = |lo: &str, hi: &str, inv| {
            Match::IpRange6(IpRange6Match {
                src: Some((a(lo), a(hi))),
                dst: None,
                inv_src: inv,
                inv_dst: false,
            })
        };
        assert_eq!(v(r("2001:db8::", "2001:db8::1", false)), hit);
        assert_eq!(v(r("2001:db8::2", "2001:db9::", false)), Verdict::Drop);
        assert_eq!(v(r("2001:db8::2", "2001:db9::", true)), hit);
    }

    #[test]
    fn ipv6header_mt6_collects_the_headers() {
        use crate::ir::Ipv6HeaderMatch;
        let r = |matchflags, invflags, soft, p: &[u8]| {
            let m = Ipv6HeaderMatch {
                matchflags,
                invflags,
                soft,
            };
            match ipv6header_mt6(&m, p) {
                MatchResult::Yes => "yes",
                MatchResult::No => "no",
                MatchResult::Hotdrop => "hotdrop",
            }
        };
        // hop-by-hop, non-first fragment, destination options, udp
        let body = [opts(44), frag(60, 3, false), opts(17), vec![0; 8]].concat();
        let p = ip6(0, 64, &body);
        assert_eq!(r(128 | 16 | 64 | 1, 0, false, &p), "yes");
        assert_eq!(r(128 | 16 | 64, 0, false, &p), "no");
        assert_eq!(r(128 | 16 | 64, 0xff, false, &p), "yes");
        assert_eq!(r(16, 0, true, &p), "yes");
        assert_eq!(r(16 | 32, 0, true, &p), "no");
        assert_eq!(r(16 | 32, 32, true, &p), "yes");
        // "no next header", ESP
        assert_eq!(r(2, 0, false, &ip6(59, 64, &[])), "yes");
        assert_eq!(r(4, 0, false, &ip6(50, 64, &[0; 8])), "yes");
        // ESP with fewer than 2 bytes: false, whatever the flags
        assert_eq!(r(4, 0xff, false, &ip6(50, 64, &[0])), "no");
        // a header past the end stops the walk; its next header gives MASK_PROTO
        assert_eq!(r(128 | 1, 0, false, &p[..45]), "yes");
        assert_eq!(r(128, 0, false, &ip6(0, 64, &[59, 4])), "yes");
    }

    #[test]
    fn hbh_mt6_tests_the_first_options_header_of_its_kind() {
        use crate::ir::OptsMatch;
        let m = |dst, hdrlen, inv_len, short_hotdrop| OptsMatch {
            dst,
            hdrlen,
            inv_len,
            short_hotdrop,
        };
        let r = |m: OptsMatch, p: &[u8]| match hbh_mt6(&m, p) {
            MatchResult::Yes => "yes",
            MatchResult::No => "no",
            MatchResult::Hotdrop => "hotdrop",
        };
        // hop-by-hop (8), destination options (16), udp
        let body = [opts(60), vec![17, 1], vec![0; 14], vec![0; 8]].concat();
        let p = ip6(0, 64, &body);
        assert_eq!(r(m(false, None, false, true), &p), "yes");
        assert_eq!(r(m(false, Some(8), false, true), &p), "yes");
        assert_eq!(r(m(false, Some(16), false, true), &p), "no");
        assert_eq!(r(m(true, Some(16), false, true), &p), "yes");
        assert_eq!(r(m(true, Some(16), true, true), &p), "no");
        assert_eq!(r(m(true, Some(8), true, true), &p), "yes");
        // none of that kind; cut before it; longer than the packet
        assert_eq!(r(m(true, None, true, true), &ip6(0, 64, &opts(17))), "no");
        assert_eq!(r(m(true, None, false, true), &p[..49]), "hotdrop");
        assert_eq!(r(m(true, None, false, true), &p[..63]), "hotdrop");
        assert_eq!(r(m(true, None, false, false), &p[..63]), "no");
        assert_eq!(r(m(false, None, false, false), &p[..63]), "yes");
    }

    #[test]
    fn rt_mt6_tests_the_first_routing_header() {
        use crate::ir::RtMatch;
        let any = RtMatch {
            segsleft: (0, u32::MAX),
            rt_type: None,
            hdrlen: None,
            res: false,
            inv_type: false,
            inv_segsleft: false,
            inv_len: false,
            short_hotdrop: true,
        };
        let r = |m: RtMatch, p: &[u8]| match rt_mt6(&m, p) {
            MatchResult::Yes => "yes",
            MatchResult::No => "no",
            MatchResult::Hotdrop => "hotdrop",
        };
        // hop-by-hop, routing type 0 (16 bytes, segments left 1), routing type 2, udp
        let rt0 = [vec![60, 1, 0, 1, 0, 0, 0, 0], vec![0; 8]].concat();
        let body = [opts(43), rt0, vec![17, 0, 2, 0, 0, 0, 0, 0], vec![0; 8]].concat();
        let p = ip6(0, 64, &body);
        assert_eq!(r(any, &p), "yes");
        let t = |t, inv| RtMatch {
            rt_type: Some(t),
            inv_type: inv,
            ..any
        };
        assert_eq!(r(t(0, false), &p), "yes");
        assert_eq!(r(t(2, false), &p), "no");
        assert_eq!(r(t(2, true), &p), "yes");
        assert_eq!(r(t(256, true), &p), "yes");
        let sl = |lo, hi, inv| RtMatch {
            segsleft: (lo, hi),
            inv_segsleft: inv,
            ..any
        };
        assert_eq!(r(sl(1, 1, false), &p), "yes");
        assert_eq!(r(sl(2, 5, false), &p), "no");
        assert_eq!(r(sl(2, 5, true), &p), "yes");
        let len = |l, inv| RtMatch {
            hdrlen: Some(l),
            inv_len: inv,
            ..any
        };
        assert_eq!(r(len(16, false), &p), "yes");
        assert_eq!(r(len(1, false), &p), "no");
        assert_eq!(r(len(16, true), &p), "no");
        let res = RtMatch { res: true, ..any };
        assert_eq!(r(res, &p), "yes");
        let mut q = p.clone();
        q[48 + 7] = 1;
        assert_eq!(r(res, &q), "no");
        // none, cut before it, cut within its first four bytes, shorter than its length
        assert_eq!(r(any, &ip6(17, 64, &[0; 8])), "no");
        assert_eq!(r(any, &p[..47]), "hotdrop");
        assert_eq!(r(any, &p[..51]), "hotdrop");
        assert_eq!(r(any, &p[..63]), "hotdrop");
        let old = RtMatch {
            short_hotdrop: false,
            ..any
        };
        assert_eq!(r(old, &p[..63]), "no");
        assert_eq!(r(old, &p[..64]), "yes");
        // behind a non-first fragment: -ENOENT
        let nf = ip6(
            44,
            64,
            &[frag(43, 2, false), vec![17, 0, 0, 0, 0, 0, 0, 0]].concat(),
        );
        assert_eq!(r(any, &nf), "no");
    }

    #[test]
    fn ipv6_find_hdr_with_a_target_and_frag_mt6() {
        use crate::ir::{frag as f, FragMatch};
        // hop-by-hop, first fragment (id 1), destination options, then udp
        let body = [opts(44), frag(60, 0, true), opts(17), vec![0; 8]].concat();
        let p = ip6(0, 64, &body);
        assert_eq!(ipv6_find_hdr_target(&p, 44), Ok(48));
        assert_eq!(ipv6_find_hdr_target(&p, 60), Ok(56));
        assert_eq!(ipv6_find_hdr_target(&p, 43), Err(FindError::NoEnt));
        // a non-first fragment: found when it is the target, else -ENOENT
        let nf = ip6(44, 64, &frag(60, 2, false));
        assert_eq!(ipv6_find_hdr_target(&nf, 44), Ok(40));
        assert_eq!(ipv6_find_hdr_target(&nf, 60), Err(FindError::NoEnt));
        // cut short on the way: -EBADMSG
        assert_eq!(
            ipv6_find_hdr_target(&ip6(0, 64, &[44]), 44),
            Err(FindError::BadMsg)
        );
        let m = |flags, inv_ids| FragMatch {
            ids: (1, 1),
            flags,
            inv_ids,
        };
        let yes = |r| matches!(r, MatchResult::Yes);
        assert!(yes(frag_mt6(&m(f::FST | f::MF, false), &p)));
        assert!(!yes(frag_mt6(&m(0, true), &p)));
        assert!(!yes(frag_mt6(&m(f::NMF, false), &p)));
        assert!(yes(frag_mt6(&m(f::NMF | f::RES, false), &nf)));
        assert!(!yes(frag_mt6(&m(f::FST, false), &nf)));
        // the 8-byte header cut short: hotdrop
        assert!(matches!(
            frag_mt6(&m(0, false), &nf[..46]),
            MatchResult::Hotdrop
        ));
        assert!(matches!(
            frag_mt6(&m(0, false), &ip6(17, 64, &[0; 8])),
            MatchResult::No
        ));
    }
}
