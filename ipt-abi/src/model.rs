//! The typed table model and its exact serialization (GET_INFO, GET_ENTRIES, SET_REPLACE bytes).
//!
//! Serialization mirrors `get_info` and `copy_entries_to_user` (net/ipv4/netfilter/ip_tables.c)
//! with `xt_match_to_user`/`xt_target_to_user`/`xt_data_to_user` (net/netfilter/x_tables.c):
//! the entry header as stored (ip part, nfcache, offsets, the kernel-computed comefrom), the
//! caller's counters, then each match/target header with the kernel's name (NUL-padded here),
//! revision and `matchsize` payload bytes followed by zeros up to XT_ALIGN(matchsize). None of
//! our extensions sets `usersize`, so the whole `matchsize` is copied: C padding inside the
//! payload (udp, iprange, conntrack revisions 2 and 3, tcpmss) and bytes after a NUL (comment, LOG
//! prefix) come back exactly as the user sent them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use zerocopy::IntoBytes;

use crate::abi::*;
use crate::{AbiError, Family};

/// Names of the five netfilter hooks, as iptables prints the built-in chains.
pub const HOOK_NAMES: [&str; NF_INET_NUMHOOKS] =
    ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
/// `valid_hooks` of the filter table: LOCAL_IN, FORWARD, LOCAL_OUT.
pub const FILTER_VALID_HOOKS: u32 = (1 << 1) | (1 << 2) | (1 << 3);

/// The `ipt_ip` part of an entry, every field kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpMatch {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source mask.
    pub smsk: Ipv4Addr,
    /// Destination mask.
    pub dmsk: Ipv4Addr,
    /// Input interface name bytes.
    pub iniface: [u8; IFNAMSIZ],
    /// Output interface name bytes.
    pub outiface: [u8; IFNAMSIZ],
    /// Input interface mask (0xff per compared byte; `eth+` is a prefix mask).
    pub iniface_mask: [u8; IFNAMSIZ],
    /// Output interface mask.
    pub outiface_mask: [u8; IFNAMSIZ],
    /// Protocol (0 = any).
    pub proto: u16,
    /// IPT_F_FRAG | IPT_F_GOTO.
    pub flags: u8,
    /// IPT_INV_* bits.
    pub invflags: u8,
}

impl Default for IpMatch {
    fn default() -> Self {
        Self {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            smsk: Ipv4Addr::UNSPECIFIED,
            dmsk: Ipv4Addr::UNSPECIFIED,
            iniface: [0; IFNAMSIZ],
            outiface: [0; IFNAMSIZ],
            iniface_mask: [0; IFNAMSIZ],
            outiface_mask: [0; IFNAMSIZ],
            proto: 0,
            flags: 0,
            invflags: 0,
        }
    }
}

impl IpMatch {
    /// Decode the kernel struct.
    pub fn from_raw(ip: &IptIp) -> Self {
        Self {
            src: Ipv4Addr::from(ip.src),
            dst: Ipv4Addr::from(ip.dst),
            smsk: Ipv4Addr::from(ip.smsk),
            dmsk: Ipv4Addr::from(ip.dmsk),
            iniface: ip.iniface,
            outiface: ip.outiface,
            iniface_mask: ip.iniface_mask,
            outiface_mask: ip.outiface_mask,
            proto: ip.proto,
            flags: ip.flags,
            invflags: ip.invflags,
        }
    }
    /// Encode to the kernel struct.
    pub fn to_raw(&self) -> IptIp {
        IptIp {
            src: self.src.octets(),
            dst: self.dst.octets(),
            smsk: self.smsk.octets(),
            dmsk: self.dmsk.octets(),
            iniface: self.iniface,
            outiface: self.outiface,
            iniface_mask: self.iniface_mask,
            outiface_mask: self.outiface_mask,
            proto: self.proto,
            flags: self.flags,
            invflags: self.invflags,
        }
    }
    /// All fields zero (the kernel's `unconditional()` ip part).
    pub fn is_unconditional(&self) -> bool {
        *self == IpMatch::default()
    }
    /// `-g`: the standard target's jump does not push a return address.
    pub fn is_goto(&self) -> bool {
        self.flags & IPT_F_GOTO != 0
    }
    /// `-f`: only non-first fragments match (inverted by IPT_INV_FRAG).
    pub fn is_frag(&self) -> bool {
        self.flags & IPT_F_FRAG != 0
    }
    /// Test one IPT_INV_* bit.
    pub fn inverted(&self, bit: u8) -> bool {
        self.invflags & bit != 0
    }
    /// Input interface name as text (up to the first NUL).
    pub fn iniface_name(&self) -> String {
        String::from_utf8_lossy(c_str(&self.iniface)).into_owned()
    }
    /// Output interface name as text (up to the first NUL).
    pub fn outiface_name(&self) -> String {
        String::from_utf8_lossy(c_str(&self.outiface)).into_owned()
    }
}

/// The `ip6t_ip6` part of an entry, every byte kept (the kernel's `unconditional()` compares
/// the whole struct, its padding included, and GET_ENTRIES copies it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ip6Match {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Source mask.
    pub smsk: Ipv6Addr,
    /// Destination mask.
    pub dmsk: Ipv6Addr,
    /// Input interface name bytes.
    pub iniface: [u8; IFNAMSIZ],
    /// Output interface name bytes.
    pub outiface: [u8; IFNAMSIZ],
    /// Input interface mask.
    pub iniface_mask: [u8; IFNAMSIZ],
    /// Output interface mask.
    pub outiface_mask: [u8; IFNAMSIZ],
    /// Protocol (0 = any; the kernel tests it only with IP6T_F_PROTO).
    pub proto: u16,
    /// Traffic class (unused by the kernel).
    pub tos: u8,
    /// IP6T_F_PROTO | IP6T_F_TOS | IP6T_F_GOTO.
    pub flags: u8,
    /// IP6T_INV_* bits.
    pub invflags: u8,
    /// The struct's 3 padding bytes, as sent.
    pub pad: [u8; 3],
}

impl Default for Ip6Match {
    fn default() -> Self {
        Self {
            src: Ipv6Addr::UNSPECIFIED,
            dst: Ipv6Addr::UNSPECIFIED,
            smsk: Ipv6Addr::UNSPECIFIED,
            dmsk: Ipv6Addr::UNSPECIFIED,
            iniface: [0; IFNAMSIZ],
            outiface: [0; IFNAMSIZ],
            iniface_mask: [0; IFNAMSIZ],
            outiface_mask: [0; IFNAMSIZ],
            proto: 0,
            tos: 0,
            flags: 0,
            invflags: 0,
            pad: [0; 3],
        }
    }
}

impl Ip6Match {
    /// Decode the kernel struct.
    pub fn from_raw(ip: &Ip6tIp6) -> Self {
        Self {
            src: Ipv6Addr::from(ip.src),
            dst: Ipv6Addr::from(ip.dst),
            smsk: Ipv6Addr::from(ip.smsk),
            dmsk: Ipv6Addr::from(ip.dmsk),
            iniface: ip.iniface,
            outiface: ip.outiface,
            iniface_mask: ip.iniface_mask,
            outiface_mask: ip.outiface_mask,
            proto: ip.proto,
            tos: ip.tos,
            flags: ip.flags,
            invflags: ip.invflags,
            pad: ip.pad,
        }
    }
    /// Encode to the kernel struct.
    pub fn to_raw(&self) -> Ip6tIp6 {
        Ip6tIp6 {
            src: self.src.octets(),
            dst: self.dst.octets(),
            smsk: self.smsk.octets(),
            dmsk: self.dmsk.octets(),
            iniface: self.iniface,
            outiface: self.outiface,
            iniface_mask: self.iniface_mask,
            outiface_mask: self.outiface_mask,
            proto: self.proto,
            tos: self.tos,
            flags: self.flags,
            invflags: self.invflags,
            pad: self.pad,
        }
    }
    /// All bytes zero, padding included (ip6_tables.c `unconditional()`).
    pub fn is_unconditional(&self) -> bool {
        *self == Ip6Match::default()
    }
    /// `-g`.
    pub fn is_goto(&self) -> bool {
        self.flags & IP6T_F_GOTO != 0
    }
}

/// The family-specific ip part of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpPart {
    /// `ipt_ip` (iptables).
    V4(IpMatch),
    /// `ip6t_ip6` (ip6tables).
    V6(Ip6Match),
}

impl Default for IpPart {
    fn default() -> Self {
        IpPart::V4(IpMatch::default())
    }
}

impl IpPart {
    /// The all-zero ip part of a family.
    pub fn zero(family: Family) -> Self {
        match family {
            Family::Ipv4 => IpPart::V4(IpMatch::default()),
            Family::Ipv6 => IpPart::V6(Ip6Match::default()),
        }
    }
    /// The family.
    pub fn family(&self) -> Family {
        match self {
            IpPart::V4(_) => Family::Ipv4,
            IpPart::V6(_) => Family::Ipv6,
        }
    }
    /// The IPv4 part.
    pub fn as_v4(&self) -> Option<&IpMatch> {
        match self {
            IpPart::V4(ip) => Some(ip),
            IpPart::V6(_) => None,
        }
    }
    /// The IPv6 part.
    pub fn as_v6(&self) -> Option<&Ip6Match> {
        match self {
            IpPart::V6(ip) => Some(ip),
            IpPart::V4(_) => None,
        }
    }
    /// The kernel's `unconditional()` test of the ip part (all bytes zero).
    pub fn is_unconditional(&self) -> bool {
        match self {
            IpPart::V4(ip) => ip.is_unconditional(),
            IpPart::V6(ip) => ip.is_unconditional(),
        }
    }
    /// `-g`: IPT_F_GOTO or IP6T_F_GOTO.
    pub fn is_goto(&self) -> bool {
        match self {
            IpPart::V4(ip) => ip.is_goto(),
            IpPart::V6(ip) => ip.is_goto(),
        }
    }
    /// Protocol (0 = any).
    pub fn proto(&self) -> u16 {
        match self {
            IpPart::V4(ip) => ip.proto,
            IpPart::V6(ip) => ip.proto,
        }
    }
    /// The flags byte (IPT_F_* or IP6T_F_*: the bits differ between families).
    pub fn flags(&self) -> u8 {
        match self {
            IpPart::V4(ip) => ip.flags,
            IpPart::V6(ip) => ip.flags,
        }
    }
    /// The invflags byte (IPT_INV_* and IP6T_INV_* have the same values).
    pub fn invflags(&self) -> u8 {
        match self {
            IpPart::V4(ip) => ip.invflags,
            IpPart::V6(ip) => ip.invflags,
        }
    }
    /// Test one IPT_INV_* / IP6T_INV_* bit.
    pub fn inverted(&self, bit: u8) -> bool {
        self.invflags() & bit != 0
    }
    /// Input interface name, name mask.
    pub fn iniface(&self) -> (&[u8; IFNAMSIZ], &[u8; IFNAMSIZ]) {
        match self {
            IpPart::V4(ip) => (&ip.iniface, &ip.iniface_mask),
            IpPart::V6(ip) => (&ip.iniface, &ip.iniface_mask),
        }
    }
    /// Output interface name, name mask.
    pub fn outiface(&self) -> (&[u8; IFNAMSIZ], &[u8; IFNAMSIZ]) {
        match self {
            IpPart::V4(ip) => (&ip.outiface, &ip.outiface_mask),
            IpPart::V6(ip) => (&ip.outiface, &ip.outiface_mask),
        }
    }
    /// Input interface name as text (up to the first NUL).
    pub fn iniface_name(&self) -> String {
        String::from_utf8_lossy(c_str(self.iniface().0)).into_owned()
    }
    /// Output interface name as text (up to the first NUL).
    pub fn outiface_name(&self) -> String {
        String::from_utf8_lossy(c_str(self.outiface().0)).into_owned()
    }
    /// Size of the family's entry header (`ipt_entry` 112, `ip6t_entry` 168).
    pub fn entry_size(&self) -> usize {
        entry_size(self.family())
    }
}

/// Size of a family's entry header: `sizeof(struct ipt_entry)` or `sizeof(struct ip6t_entry)`.
pub fn entry_size(family: Family) -> usize {
    match family {
        Family::Ipv4 => IPT_ENTRY_SIZE,
        Family::Ipv6 => IP6T_ENTRY_SIZE,
    }
}

/// A match with its typed payload (the kernel struct, padding bytes included).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// "tcp" revision 0.
    Tcp(XtTcp),
    /// "udp" revision 0.
    Udp(XtUdp),
    /// "icmp" revision 0.
    Icmp(IptIcmp),
    /// "multiport" revision 1.
    Multiport(XtMultiportV1),
    /// "iprange" revision 1.
    IpRange(XtIprangeMtinfo),
    /// "mark" revision 1.
    Mark(XtMarkMtinfo1),
    /// "pkttype" revision 0.
    PktType(XtPkttypeInfo),
    /// "tcpmss" revision 0.
    TcpMss(XtTcpmssMatchInfo),
    /// "comment" revision 0.
    Comment(Box<XtCommentInfo>),
    /// "conntrack" revisions 1, 2, 3 (iptables 1.8.9 sends revision 3, also for `-m state`).
    /// [`Conntrack::info`] gives every revision in the revision 3 form.
    Conntrack(Box<Conntrack>),
    /// "state" revision 0 (iptables 1.8.9 sends `-m state` as conntrack revision 3 instead,
    /// falling back to this only on kernels without conntrack revisions 1 to 3).
    State(XtStateInfo),
    /// "limit" revision 0.
    Limit(Limit),
    /// "addrtype" revision 0.
    Addrtype(XtAddrtypeInfo),
    /// "addrtype" revision 1.
    AddrtypeV1(XtAddrtypeInfoV1),
    /// "owner" revision 1.
    Owner(XtOwnerMatchInfo),
    /// "recent" revisions 0 and 1, kept as sent.
    Recent(Box<Recent>),
    /// "hashlimit" revisions 1, 2 and 3, as the kernel shows them.
    Hashlimit(Box<Hashlimit>),
    /// "icmp6" revision 0 (IPv6; `-p ipv6-icmp` not inverted).
    Icmp6(Ip6tIcmp),
    /// "hl" revision 0 (IPv6): hop limit.
    Hl(Ip6tHlInfo),
    /// "frag" revision 0 (IPv6): fragment header.
    Frag(Ip6tFrag),
    /// "ipv6header" revision 0 (IPv6): extension headers present.
    Ipv6Header(Ip6tIpv6headerInfo),
    /// "hbh" revision 0 (IPv6): hop-by-hop options header.
    Hbh(Ip6tOpts),
    /// "dst" revision 0 (IPv6): destination options header.
    Dst(Ip6tOpts),
    /// "rt" revision 0 (IPv6): routing header.
    Rt(Box<Ip6tRt>),
    /// "eui64" revision 0 (IPv6; PREROUTING, INPUT, FORWARD only): the source address's
    /// interface identifier is the source MAC's EUI-64. The int payload is unused.
    Eui64(Ip6tEui64),
    /// "mac" revision 0 (both families; PREROUTING, INPUT, FORWARD only).
    Mac(XtMacInfo),
}

/// A hashlimit match in the revision the user sent, as GET_ENTRIES shows it: `hinfo` zero
/// (xt_hashlimit's `usersize` ends before it), and for revision 3 `size` and `max` as
/// `hashlimit_mt_check_common` truncated them in the rule's own payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Hashlimit {
    /// Revision 1: 32-bit rates in 1/10000 s, a 16-byte name.
    V1(XtHashlimitMtinfo1),
    /// Revision 2: 64-bit rates in 1/1000000 s.
    V2(XtHashlimitMtinfo2),
    /// Revision 3: revision 2 with the rate-match interval.
    V3(XtHashlimitMtinfo3),
}

impl Hashlimit {
    /// The revision.
    pub fn revision(&self) -> u8 {
        match self {
            Hashlimit::V1(_) => 1,
            Hashlimit::V2(_) => 2,
            Hashlimit::V3(_) => 3,
        }
    }
    /// The table's name (up to its NUL, which `xt_check_proc_name` made sure of).
    pub fn name(&self) -> &[u8] {
        match self {
            Hashlimit::V1(p) => c_str(&p.name),
            Hashlimit::V2(p) => c_str(&p.name),
            Hashlimit::V3(p) => c_str(&p.name),
        }
    }
    /// The configuration in revision 3's form (`cfg_copy`), size and max truncated as
    /// `hashlimit_mt_check_common` does before it creates a table.
    pub fn cfg(&self) -> HashlimitCfg3 {
        let mut c = match self {
            Hashlimit::V1(p) => crate::ext::hashlimit_cfg3_of1(&p.cfg),
            Hashlimit::V2(p) => crate::ext::hashlimit_cfg3_of2(&p.cfg),
            Hashlimit::V3(p) => p.cfg,
        };
        c.size = c.size.min(crate::ext::HASHLIMIT_MAX_SIZE);
        c.max = c.max.min(crate::ext::HASHLIMIT_MAX_SIZE);
        c.pad = [0; 6];
        c
    }
    /// The payload as the kernel copies it back.
    pub fn payload(&self) -> &[u8] {
        match self {
            Hashlimit::V1(p) => p.as_bytes(),
            Hashlimit::V2(p) => p.as_bytes(),
            Hashlimit::V3(p) => p.as_bytes(),
        }
    }
}

/// A recent match in the revision the user sent (kept byte for byte).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recent {
    /// Revision 0: no mask (the kernel masks with all ones).
    V0(XtRecentMtinfo),
    /// Revision 1: with `--mask`.
    V1(XtRecentMtinfoV1),
}

impl Recent {
    /// The fields both revisions have.
    pub fn info(&self) -> &XtRecentMtinfo {
        match self {
            Recent::V0(p) => p,
            Recent::V1(p) => &p.v0,
        }
    }
    /// The IPv4 mask (`recent_mt_check_v0` sets all ones).
    pub fn mask(&self) -> [u8; 4] {
        match self {
            Recent::V0(_) => [0xff; 4],
            Recent::V1(p) => [p.mask[0], p.mask[1], p.mask[2], p.mask[3]],
        }
    }
    /// The whole 16-byte mask (`nf_inet_addr`; revision 0 has none and the kernel masks with
    /// all ones): for IPv6 all of it, for IPv4 the first 4 bytes ([`Recent::mask`]).
    pub fn mask16(&self) -> [u8; 16] {
        match self {
            Recent::V0(_) => [0xff; 16],
            Recent::V1(p) => p.mask,
        }
    }
    /// The list's name (up to its NUL, which `recent_mt_check` made sure of).
    pub fn name(&self) -> &[u8] {
        c_str(&self.info().name)
    }
    /// The payload as sent.
    pub fn payload(&self) -> &[u8] {
        match self {
            Recent::V0(p) => p.as_bytes(),
            Recent::V1(p) => p.as_bytes(),
        }
    }
}

/// A limit match: the rate as GET_ENTRIES shows it (`avg`, `burst`, the kernel's part zero,
/// xt_limit's `usersize`), and the bucket the kernel took from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// The payload as the kernel copies it back.
    pub shown: XtRateinfo,
    /// `cost` as sent: 0 lets `limit_mt_check` derive cost and cap from `avg` and `burst`.
    pub cost: u32,
    /// `credit_cap` as sent (used only with a non-zero `cost`).
    pub credit_cap: u32,
}

impl Limit {
    /// From the request's payload.
    pub fn from_request(sent: &XtRateinfo) -> Limit {
        Limit {
            shown: XtRateinfo {
                avg: sent.avg,
                burst: sent.burst,
                ..XtRateinfo::default()
            },
            cost: sent.cost,
            credit_cap: sent.credit_cap,
        }
    }
    /// `(cost, credit_cap, initial credit)` as `limit_mt_check` sets them at `hz`.
    pub fn bucket(&self, hz: u32) -> (u32, u32, u32) {
        let full = crate::ext::user2credits(self.shown.avg.wrapping_mul(self.shown.burst), hz);
        if self.cost == 0 {
            (crate::ext::user2credits(self.shown.avg, hz), full, full)
        } else {
            (self.cost, self.credit_cap, full)
        }
    }
}

/// The payload of a conntrack match, in the revision the user sent (kept byte for byte).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conntrack {
    /// Revision 1: 8-bit state and status masks, single ports in network order.
    V1(XtConntrackMtinfo1),
    /// Revision 2: 16-bit masks, single ports in network order.
    V2(XtConntrackMtinfo2),
    /// Revision 3: 16-bit masks, port ranges in host order.
    V3(XtConntrackMtinfo3),
}

/// One address test of a conntrack match: `(tuple address & mask) == (addr & mask)`, over
/// the first 4 bytes of the `nf_inet_addr`s in IPv4, all 16 in IPv6 (`conntrack_addrcmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtAddr {
    /// Address, the whole `union nf_inet_addr` as given.
    pub addr: [u8; 16],
    /// Mask, likewise.
    pub mask: [u8; 16],
}

impl CtAddr {
    /// The address as IPv4 (its first 4 bytes).
    pub fn addr_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3])
    }

    /// The mask as IPv4 (its first 4 bytes).
    pub fn mask_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.mask[0], self.mask[1], self.mask[2], self.mask[3])
    }
}

/// A conntrack match normalized to revision 3's fields (what the kernel's `conntrack_mt`
/// reads for every revision). Ports are host order, as inclusive ranges: revisions 1 and 2
/// give `lo == hi`. Semantics (xt_conntrack.c `conntrack_mt`, each test only when its
/// XT_CONNTRACK_* bit is in `match_flags`, and inverted by the same bit of `invert_flags`
/// unless said otherwise):
/// - STATE: `state_mask & statebit != 0`, where statebit is XT_CONNTRACK_STATE_UNTRACKED
///   for an untracked packet, XT_CONNTRACK_STATE_INVALID for another packet without a
///   conntrack entry, else `XT_CONNTRACK_STATE_BIT(ctinfo)` plus SNAT/DNAT when the entry is
///   NATed. Without an entry (invalid or untracked) no later test runs: the match result is
///   then "STATE is in match_flags" (after the STATE test itself).
/// - DIRECTION: packets in the ORIGINAL direction match; inverted (iptables' `--ctdir
///   REPLY`), those in the REPLY direction.
/// - ORIGSRC/ORIGDST/REPLSRC/REPLDST: masked address of that tuple equals `addr & mask`.
/// - PROTO: the connection's layer 4 protocol (`nf_ct_protonum`, a u8) equals `l4proto`.
/// - *_PORT: the tuple's port (host order) within the range.
/// - STATUS: `status_mask & ct->status != 0`.
/// - EXPIRES: remaining lifetime in seconds within `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConntrackInfo {
    /// The revision the rule came in.
    pub revision: u8,
    /// XT_CONNTRACK_* tests to make (unknown bits kept; the kernel ignores them).
    pub match_flags: u16,
    /// XT_CONNTRACK_* tests to invert.
    pub invert_flags: u16,
    /// XT_CONNTRACK_STATE_* bits (revision 1: only the low 8 bits exist).
    pub state_mask: u16,
    /// IPS_* bits (revision 1: only the low 8 bits exist).
    pub status_mask: u16,
    /// Original direction source.
    pub origsrc: CtAddr,
    /// Original direction destination.
    pub origdst: CtAddr,
    /// Reply direction source.
    pub replsrc: CtAddr,
    /// Reply direction destination.
    pub repldst: CtAddr,
    /// Layer 4 protocol.
    pub l4proto: u16,
    /// Original source port range (inclusive, host order).
    pub origsrc_port: [u16; 2],
    /// Original destination port range.
    pub origdst_port: [u16; 2],
    /// Reply source port range.
    pub replsrc_port: [u16; 2],
    /// Reply destination port range.
    pub repldst_port: [u16; 2],
    /// Remaining lifetime range in seconds (inclusive): `[expires_min, expires_max]`.
    pub expires: [u32; 2],
}

fn ct_addr(addr: &[u8; 16], mask: &[u8; 16]) -> CtAddr {
    CtAddr {
        addr: *addr,
        mask: *mask,
    }
}

/// Builds a ConntrackInfo from the fields every revision shares; masks and ports differ.
macro_rules! ct_common {
    ($p:expr, $rev:expr, $state:expr, $status:expr, $ports:expr) => {
        ConntrackInfo {
            revision: $rev,
            match_flags: $p.match_flags,
            invert_flags: $p.invert_flags,
            state_mask: $state,
            status_mask: $status,
            origsrc: ct_addr(&$p.origsrc_addr, &$p.origsrc_mask),
            origdst: ct_addr(&$p.origdst_addr, &$p.origdst_mask),
            replsrc: ct_addr(&$p.replsrc_addr, &$p.replsrc_mask),
            repldst: ct_addr(&$p.repldst_addr, &$p.repldst_mask),
            l4proto: $p.l4proto,
            origsrc_port: $ports[0],
            origdst_port: $ports[1],
            replsrc_port: $ports[2],
            repldst_port: $ports[3],
            expires: [$p.expires_min, $p.expires_max],
        }
    };
}

impl Conntrack {
    /// The match revision (1, 2 or 3).
    pub fn revision(&self) -> u8 {
        match self {
            Conntrack::V1(_) => 1,
            Conntrack::V2(_) => 2,
            Conntrack::V3(_) => 3,
        }
    }
    /// The payload bytes as sent (`matchsize` of them).
    pub fn payload(&self) -> &[u8] {
        match self {
            Conntrack::V1(p) => p.as_bytes(),
            Conntrack::V2(p) => p.as_bytes(),
            Conntrack::V3(p) => p.as_bytes(),
        }
    }
    /// The four address tests as IPv6 (the whole `nf_inet_addr`s), in the order origsrc,
    /// origdst, replsrc, repldst, each `(address, mask)`: what an ip6tables rule's
    /// `--ctorigsrc` and the like mean ([`ConntrackInfo`]'s [`CtAddr`]s are their IPv4 reading).
    pub fn addrs6(&self) -> [(Ipv6Addr, Ipv6Addr); 4] {
        macro_rules! six {
            ($p:expr) => {
                [
                    (
                        Ipv6Addr::from($p.origsrc_addr),
                        Ipv6Addr::from($p.origsrc_mask),
                    ),
                    (
                        Ipv6Addr::from($p.origdst_addr),
                        Ipv6Addr::from($p.origdst_mask),
                    ),
                    (
                        Ipv6Addr::from($p.replsrc_addr),
                        Ipv6Addr::from($p.replsrc_mask),
                    ),
                    (
                        Ipv6Addr::from($p.repldst_addr),
                        Ipv6Addr::from($p.repldst_mask),
                    ),
                ]
            };
        }
        match self {
            Conntrack::V1(p) => six!(p),
            Conntrack::V2(p) => six!(p),
            Conntrack::V3(p) => six!(p),
        }
    }
    /// The fields in revision 3's form, whatever the revision (see [`ConntrackInfo`]).
    pub fn info(&self) -> ConntrackInfo {
        let one = |p: zerocopy::byteorder::network_endian::U16| [p.get(), p.get()];
        match self {
            Conntrack::V1(p) => ct_common!(
                p,
                1,
                u16::from(p.state_mask),
                u16::from(p.status_mask),
                [
                    one(p.origsrc_port),
                    one(p.origdst_port),
                    one(p.replsrc_port),
                    one(p.repldst_port)
                ]
            ),
            Conntrack::V2(p) => ct_common!(
                p,
                2,
                p.state_mask,
                p.status_mask,
                [
                    one(p.origsrc_port),
                    one(p.origdst_port),
                    one(p.replsrc_port),
                    one(p.repldst_port)
                ]
            ),
            Conntrack::V3(p) => ct_common!(
                p,
                3,
                p.state_mask,
                p.status_mask,
                [
                    [p.origsrc_port, p.origsrc_port_high],
                    [p.origdst_port, p.origdst_port_high],
                    [p.replsrc_port, p.replsrc_port_high],
                    [p.repldst_port, p.repldst_port_high]
                ]
            ),
        }
    }
}

impl Match {
    /// Extension name.
    pub fn name(&self) -> &'static str {
        match self {
            Match::Tcp(_) => "tcp",
            Match::Udp(_) => "udp",
            Match::Icmp(_) => "icmp",
            Match::Multiport(_) => "multiport",
            Match::IpRange(_) => "iprange",
            Match::Comment(_) => "comment",
            Match::Mark(_) => "mark",
            Match::PktType(_) => "pkttype",
            Match::TcpMss(_) => "tcpmss",
            Match::Conntrack(_) => "conntrack",
            Match::State(_) => "state",
            Match::Limit(_) => "limit",
            Match::Addrtype(_) | Match::AddrtypeV1(_) => "addrtype",
            Match::Owner(_) => "owner",
            Match::Recent(_) => "recent",
            Match::Hashlimit(_) => "hashlimit",
            Match::Icmp6(_) => "icmp6",
            Match::Hl(_) => "hl",
            Match::Frag(_) => "frag",
            Match::Ipv6Header(_) => "ipv6header",
            Match::Hbh(_) => "hbh",
            Match::Dst(_) => "dst",
            Match::Rt(_) => "rt",
            Match::Eui64(_) => "eui64",
            Match::Mac(_) => "mac",
        }
    }
    /// Extension revision.
    pub fn revision(&self) -> u8 {
        match self {
            Match::Multiport(_)
            | Match::IpRange(_)
            | Match::Mark(_)
            | Match::AddrtypeV1(_)
            | Match::Owner(_) => 1,
            Match::Conntrack(c) => c.revision(),
            Match::Recent(r) => u8::from(matches!(**r, Recent::V1(_))),
            Match::Hashlimit(h) => h.revision(),
            Match::Tcp(_)
            | Match::Udp(_)
            | Match::Icmp(_)
            | Match::Comment(_)
            | Match::State(_)
            | Match::PktType(_)
            | Match::TcpMss(_)
            | Match::Limit(_)
            | Match::Addrtype(_)
            | Match::Icmp6(_)
            | Match::Hl(_)
            | Match::Frag(_)
            | Match::Ipv6Header(_)
            | Match::Hbh(_)
            | Match::Dst(_)
            | Match::Rt(_)
            | Match::Eui64(_)
            | Match::Mac(_) => 0,
        }
    }
    /// The payload bytes (`matchsize` of them).
    pub fn payload(&self) -> &[u8] {
        match self {
            Match::Tcp(p) => p.as_bytes(),
            Match::Udp(p) => p.as_bytes(),
            Match::Icmp(p) => p.as_bytes(),
            Match::Multiport(p) => p.as_bytes(),
            Match::IpRange(p) => p.as_bytes(),
            Match::Comment(p) => p.as_bytes(),
            Match::Mark(p) => p.as_bytes(),
            Match::PktType(p) => p.as_bytes(),
            Match::TcpMss(p) => p.as_bytes(),
            Match::Conntrack(c) => c.payload(),
            Match::State(p) => p.as_bytes(),
            Match::Limit(l) => l.shown.as_bytes(),
            Match::Addrtype(p) => p.as_bytes(),
            Match::AddrtypeV1(p) => p.as_bytes(),
            Match::Owner(p) => p.as_bytes(),
            Match::Recent(r) => r.payload(),
            Match::Hashlimit(h) => h.payload(),
            Match::Icmp6(p) => p.as_bytes(),
            Match::Hl(p) => p.as_bytes(),
            Match::Frag(p) => p.as_bytes(),
            Match::Ipv6Header(p) => p.as_bytes(),
            Match::Hbh(p) | Match::Dst(p) => p.as_bytes(),
            Match::Rt(p) => p.as_bytes(),
            Match::Eui64(p) => p.as_bytes(),
            Match::Mac(p) => p.as_bytes(),
        }
    }
    /// `match_size` in the blob: header + XT_ALIGN(matchsize).
    pub fn match_size(&self) -> usize {
        XT_ENTRY_MATCH_SIZE + xt_align(self.payload().len())
    }
    /// The comment text of a comment match (up to the first NUL).
    pub fn comment_text(&self) -> Option<String> {
        match self {
            Match::Comment(c) => Some(String::from_utf8_lossy(c_str(&c.comment)).into_owned()),
            _ => None,
        }
    }
    /// A conntrack match in revision 3's form (None for other matches).
    pub fn conntrack(&self) -> Option<ConntrackInfo> {
        match self {
            Match::Conntrack(c) => Some(c.info()),
            _ => None,
        }
    }
}

/// A standard target verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// NF_ACCEPT (-2).
    Accept,
    /// NF_DROP (-1).
    Drop,
    /// XT_RETURN (-5).
    Return,
    /// NF_QUEUE to queue 0 (-4): valid for the kernel, so it parses; bpfilter cannot queue
    /// (a BPF netfilter program returns only DROP or ACCEPT), so the translator must refuse it.
    Queue,
    /// Jump (or goto, if the entry's ip flags have IPT_F_GOTO) to the entry at `offset`.
    Jump {
        /// Byte offset of the target entry (the raw verdict).
        offset: u32,
        /// Index of the target entry; u32::MAX when `offset` is no entry start, which the
        /// kernel only lets through in entries no hook reaches (`comefrom == 0`).
        index: u32,
    },
}

impl Verdict {
    /// The raw `int verdict` of xt_standard_target.
    pub fn raw(&self) -> i32 {
        match self {
            Verdict::Accept => VERDICT_ACCEPT,
            Verdict::Drop => VERDICT_DROP,
            Verdict::Return => XT_RETURN,
            Verdict::Queue => VERDICT_QUEUE,
            // Offsets are below XT_MAX_TABLE_SIZE (checked at parse), so they fit in i32.
            Verdict::Jump { offset, .. } => *offset as i32,
        }
    }
}

/// The ERROR target's 30-byte `errorname`, kept byte for byte (the kernel copies all of it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorName(pub [u8; XT_FUNCTION_MAXNAMELEN]);

impl ErrorName {
    /// The name up to the first NUL.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(c_str(&self.0)).unwrap_or("")
    }
}
impl std::fmt::Debug for ErrorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(c_str(&self.0)))
    }
}
impl std::fmt::Display for ErrorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(c_str(&self.0)))
    }
}
impl From<&str> for ErrorName {
    fn from(s: &str) -> Self {
        ErrorName(name_field(s))
    }
}
impl PartialEq<str> for ErrorName {
    fn eq(&self, other: &str) -> bool {
        c_str(&self.0) == other.as_bytes()
    }
}
impl PartialEq<&str> for ErrorName {
    fn eq(&self, other: &&str) -> bool {
        c_str(&self.0) == other.as_bytes()
    }
}

/// An entry's target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The standard target ("" revision 0).
    Standard(Verdict),
    /// The ERROR target (revision 0): a user chain head (errorname = chain name) or the table
    /// end ("ERROR"). Reaching it drops the packet.
    Error(ErrorName),
    /// "REJECT" revision 0 (filter table only; INPUT, FORWARD, OUTPUT): drops the packet and
    /// answers with the ICMP error or TCP reset of `with`.
    Reject(IptRejectInfo),
    /// "LOG" revision 0: logs the packet (syslog, `level`, `logflags`, `prefix`) and continues
    /// with the next entry (XT_CONTINUE).
    Log(XtLogInfo),
    /// ip6tables' "REJECT" revision 0 (ip6t_REJECT.c; filter table only; INPUT, FORWARD,
    /// OUTPUT): drops the packet and answers with the ICMPv6 error or TCP reset of `with`.
    Reject6(Ip6tRejectInfo),
}

impl Target {
    /// Extension name ("" for the standard target).
    pub fn name(&self) -> &'static str {
        match self {
            Target::Standard(_) => XT_STANDARD_TARGET,
            Target::Error(_) => XT_ERROR_TARGET,
            Target::Reject(_) | Target::Reject6(_) => "REJECT",
            Target::Log(_) => "LOG",
        }
    }
    /// Extension revision (0 for all of ours).
    pub fn revision(&self) -> u8 {
        0
    }
    /// `target_size` in the blob: header + XT_ALIGN(targetsize).
    pub fn target_size(&self) -> usize {
        match self {
            Target::Standard(_) => XT_STANDARD_TARGET_SIZE,
            Target::Error(_) => XT_ERROR_TARGET_SIZE,
            Target::Reject(p) => XT_ENTRY_TARGET_SIZE + xt_align(p.as_bytes().len()),
            Target::Log(p) => XT_ENTRY_TARGET_SIZE + xt_align(p.as_bytes().len()),
            Target::Reject6(p) => XT_ENTRY_TARGET_SIZE + xt_align(p.as_bytes().len()),
        }
    }
    /// The LOG prefix up to its first NUL (None for other targets).
    pub fn log_prefix(&self) -> Option<String> {
        match self {
            Target::Log(l) => Some(String::from_utf8_lossy(c_str(&l.prefix)).into_owned()),
            _ => None,
        }
    }
}

/// One `ipt_entry` with its matches and target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Entry number, 0-based (also the counter index).
    pub index: u32,
    /// Byte offset of the entry in the entries blob.
    pub offset: u32,
    /// The ip part (its family decides the entry header's layout).
    pub ip: IpPart,
    /// `nfcache`, unused by the kernel but copied back as given.
    pub nfcache: u32,
    /// `ip6t_entry`'s 4 padding bytes between `comefrom` and `counters`, copied back as given
    /// (always zero for IPv4, whose `ipt_entry` has none).
    pub hdr_pad: [u8; 4],
    /// Hook bitmask computed by `mark_source_chains` (what GET_ENTRIES shows).
    pub comefrom: u32,
    /// Matches, in order.
    pub matches: Vec<Match>,
    /// Target.
    pub target: Target,
    /// Bytes between the end of the target and `next_offset`: the kernel lets an entry whose
    /// target is not the standard one be longer than its target needs and copies those bytes
    /// back as they were given (GET_ENTRIES copies the whole entry).
    pub trailer: Vec<u8>,
}

impl Entry {
    /// `target_offset`.
    pub fn target_offset(&self) -> usize {
        self.ip.entry_size() + self.matches.iter().map(Match::match_size).sum::<usize>()
    }
    /// `next_offset` (the entry's size).
    pub fn next_offset(&self) -> usize {
        self.target_offset() + self.target.target_size() + self.trailer.len()
    }
    /// The kernel's `unconditional()`: no matches and an all-zero ip part.
    pub fn is_unconditional(&self) -> bool {
        self.matches.is_empty() && self.ip.is_unconditional()
    }
    /// The standard verdict, if the target is the standard target.
    pub fn verdict(&self) -> Option<Verdict> {
        match self.target {
            Target::Standard(v) => Some(v),
            Target::Error(_) | Target::Reject(_) | Target::Log(_) | Target::Reject6(_) => None,
        }
    }
    /// Append the entry's bytes as `copy_entries_to_user` writes them, with the given counters.
    pub fn write(&self, out: &mut Vec<u8>, counters: XtCounters) {
        let target_offset = self.target_offset();
        let next_offset = self.next_offset();
        // Sizes are bounded by parse/build (u16 fields in the kernel too).
        match &self.ip {
            IpPart::V4(ip) => {
                let hdr = IptEntry {
                    ip: ip.to_raw(),
                    nfcache: self.nfcache,
                    target_offset: target_offset as u16,
                    next_offset: next_offset as u16,
                    comefrom: self.comefrom,
                    counters,
                };
                out.extend_from_slice(hdr.as_bytes());
            }
            IpPart::V6(ip) => {
                let hdr = Ip6tEntry {
                    ipv6: ip.to_raw(),
                    nfcache: self.nfcache,
                    target_offset: target_offset as u16,
                    next_offset: next_offset as u16,
                    comefrom: self.comefrom,
                    pad: self.hdr_pad,
                    counters,
                };
                out.extend_from_slice(hdr.as_bytes());
            }
        }
        for m in &self.matches {
            let payload = m.payload();
            let size = m.match_size();
            let h = XtEntryMatch {
                match_size: size as u16,
                name: name_field(m.name()),
                revision: m.revision(),
            };
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(payload);
            out.resize(out.len() + xt_align(payload.len()) - payload.len(), 0);
        }
        match &self.target {
            Target::Standard(v) => {
                let t = XtStandardTarget {
                    target: XtEntryTarget {
                        target_size: XT_STANDARD_TARGET_SIZE as u16,
                        name: [0; XT_EXTENSION_MAXNAMELEN],
                        revision: 0,
                    },
                    verdict: v.raw(),
                    pad: [0; 4],
                };
                out.extend_from_slice(t.as_bytes());
            }
            Target::Error(name) => {
                let t = XtErrorTarget {
                    target: XtEntryTarget {
                        target_size: XT_ERROR_TARGET_SIZE as u16,
                        name: name_field(XT_ERROR_TARGET),
                        revision: 0,
                    },
                    errorname: name.0,
                    pad: [0; 2],
                };
                out.extend_from_slice(t.as_bytes());
            }
            Target::Reject(p) => write_target(out, self.target.name(), p.as_bytes()),
            Target::Log(p) => write_target(out, self.target.name(), p.as_bytes()),
            Target::Reject6(p) => write_target(out, self.target.name(), p.as_bytes()),
        }
        out.extend_from_slice(&self.trailer);
    }
}

/// A target as `xt_target_to_user` writes it: header, `targetsize` payload bytes as given,
/// zeros up to XT_ALIGN.
fn write_target(out: &mut Vec<u8>, name: &str, payload: &[u8]) {
    let size = XT_ENTRY_TARGET_SIZE + xt_align(payload.len());
    let h = XtEntryTarget {
        target_size: size as u16,
        name: name_field(name),
        revision: 0,
    };
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + xt_align(payload.len()) - payload.len(), 0);
}

/// A chain as iptables lays it out in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// Chain name ("INPUT", ... for built-in chains).
    pub name: String,
    /// Hook number for a built-in chain.
    pub hook: Option<u8>,
    /// Index of the ERROR entry heading a user chain.
    pub head: Option<u32>,
    /// Entry indices of the chain body: its rules and the final policy (built-in) or RETURN
    /// (user chain) entry.
    pub entries: Range<u32>,
}

/// A validated table: what the kernel holds after a successful SET_REPLACE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    /// iptables or ip6tables: the entries' ip parts are of this family.
    pub family: Family,
    /// Table name.
    pub name: String,
    /// Bitmask of valid hooks.
    pub valid_hooks: u32,
    /// Byte offset of each hook's first entry (0xffffffff for invalid hooks, as the kernel).
    pub hook_entry: [u32; NF_INET_NUMHOOKS],
    /// Byte offset of each hook's policy entry (0xffffffff for invalid hooks).
    pub underflow: [u32; NF_INET_NUMHOOKS],
    /// Entries in blob order.
    pub entries: Vec<Entry>,
}

impl Table {
    /// The table the kernel creates on first access: for "filter", INPUT/FORWARD/OUTPUT with an
    /// ACCEPT policy each and the final ERROR entry (`xt_alloc_initial_table`). Other names: ENOENT.
    pub fn initial(name: &str) -> Result<Table, AbiError> {
        Table::initial_for(Family::Ipv4, name)
    }

    /// The initial table of a family: for "filter", what `ipt_alloc_initial_table` or
    /// `ip6t_alloc_initial_table` makes (same shape, entries of the family's size). Other
    /// names: ENOENT.
    pub fn initial_for(family: Family, name: &str) -> Result<Table, AbiError> {
        if name != "filter" {
            return Err(AbiError::UnknownTable(name.to_string()));
        }
        // Three ACCEPT policies (LOCAL_IN, FORWARD, LOCAL_OUT), each reached by its own hook
        // only, then the ERROR entry no hook reaches.
        let entry = |index: u32, offset: u32, comefrom: u32, target: Target| Entry {
            index,
            offset,
            ip: IpPart::zero(family),
            nfcache: 0,
            hdr_pad: [0; 4],
            comefrom,
            matches: Vec::new(),
            target,
            trailer: Vec::new(),
        };
        let mut entries = Vec::new();
        let mut hook_entry = [u32::MAX; NF_INET_NUMHOOKS];
        let mut offset = 0;
        for (index, hook) in (0u32..).zip([1usize, 2, 3]) {
            let e = entry(index, offset, 1 << hook, Target::Standard(Verdict::Accept));
            hook_entry[hook] = offset;
            offset += e.next_offset() as u32;
            entries.push(e);
        }
        entries.push(entry(
            3,
            offset,
            0,
            Target::Error(ErrorName::from(XT_ERROR_TARGET)),
        ));
        Ok(Table {
            family,
            name: name.to_string(),
            valid_hooks: (1 << 1) | (1 << 2) | (1 << 3),
            hook_entry,
            underflow: hook_entry,
            entries,
        })
    }

    /// Bytes of the entries blob.
    pub fn size(&self) -> u32 {
        self.entries
            .last()
            .map_or(0, |e| e.offset + e.next_offset() as u32)
    }

    /// Number of entries.
    pub fn num_entries(&self) -> u32 {
        self.entries.len() as u32
    }

    /// IPT_SO_GET_INFO answer (84 bytes), as `get_info` fills it.
    pub fn get_info(&self) -> Vec<u8> {
        IptGetinfo {
            name: name_field(&self.name),
            valid_hooks: self.valid_hooks,
            hook_entry: self.hook_entry,
            underflow: self.underflow,
            num_entries: self.num_entries(),
            size: self.size(),
        }
        .as_bytes()
        .to_vec()
    }

    /// The entries blob with the given per-entry counters (missing ones are zero).
    pub fn entries_blob(&self, counters: &[XtCounters]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() as usize);
        for (i, e) in self.entries.iter().enumerate() {
            e.write(&mut out, counters.get(i).copied().unwrap_or_default());
        }
        out
    }

    /// IPT_SO_GET_ENTRIES answer: `ipt_get_entries` header (name, size) then the entries as
    /// `copy_entries_to_user` writes them, with `counters[i]` in entry i.
    pub fn get_entries(&self, counters: &[XtCounters]) -> Vec<u8> {
        let hdr = IptGetEntries {
            name: name_field(&self.name),
            size: self.size(),
            pad: [0; 4],
        };
        let mut out = Vec::with_capacity(IPT_GET_ENTRIES_SIZE + self.size() as usize);
        out.extend_from_slice(hdr.as_bytes());
        for (i, e) in self.entries.iter().enumerate() {
            e.write(&mut out, counters.get(i).copied().unwrap_or_default());
        }
        out
    }

    /// An IPT_SO_SET_REPLACE request for this table (header + entries, zero counters), as
    /// libiptc would send it. For invalid hooks the header carries 0xffffffff.
    pub fn replace_blob(&self, num_counters: u32, counters_ptr: u64) -> Vec<u8> {
        let hdr = IptReplace {
            name: name_field(&self.name),
            valid_hooks: self.valid_hooks,
            num_entries: self.num_entries(),
            size: self.size(),
            hook_entry: self.hook_entry,
            underflow: self.underflow,
            num_counters,
            counters: counters_ptr,
        };
        let mut out = Vec::with_capacity(IPT_REPLACE_SIZE + self.size() as usize);
        out.extend_from_slice(hdr.as_bytes());
        for e in &self.entries {
            e.write(&mut out, XtCounters::default());
        }
        out
    }

    /// Index of the entry starting at byte offset `off`.
    pub fn entry_at_offset(&self, off: u32) -> Option<u32> {
        self.entries
            .binary_search_by_key(&off, |e| e.offset)
            .ok()
            .map(|i| i as u32)
    }

    /// Index of the first entry of a valid hook.
    pub fn hook_entry_index(&self, hook: usize) -> Option<u32> {
        self.hook_valid(hook)
            .then(|| self.entry_at_offset(self.hook_entry[hook]))
            .flatten()
    }

    /// Index of the policy (underflow) entry of a valid hook.
    pub fn underflow_index(&self, hook: usize) -> Option<u32> {
        self.hook_valid(hook)
            .then(|| self.entry_at_offset(self.underflow[hook]))
            .flatten()
    }

    fn hook_valid(&self, hook: usize) -> bool {
        hook < NF_INET_NUMHOOKS && self.valid_hooks & (1 << hook) != 0
    }

    /// The chains in table order: built-in chains from their hook entry to their underflow, and
    /// user chains from the entry after their ERROR head up to the next chain start. The final
    /// ERROR "ERROR" entry belongs to no chain.
    pub fn chains(&self) -> Vec<ChainInfo> {
        // Chain starts: hook entries and user chain heads, in entry order.
        let mut starts: Vec<(u32, Option<u8>, Option<u32>, String)> = Vec::new();
        for (hook, name) in HOOK_NAMES.iter().enumerate() {
            if let Some(i) = self.hook_entry_index(hook) {
                starts.push((i, Some(hook as u8), None, name.to_string()));
            }
        }
        let last = self.entries.len().saturating_sub(1);
        for (i, e) in self.entries.iter().enumerate() {
            if let Target::Error(name) = &e.target {
                if i != last {
                    starts.push((i as u32 + 1, None, Some(i as u32), name.to_string()));
                }
            }
        }
        starts.sort_by_key(|s| s.0);
        let mut out = Vec::with_capacity(starts.len());
        for (k, (first, hook, head, name)) in starts.iter().enumerate() {
            let end = match hook {
                Some(h) => self.underflow_index(*h as usize).map_or(*first, |u| u + 1),
                None => starts
                    .get(k + 1)
                    .map_or(last as u32, |next| next.2.unwrap_or(next.0)),
            };
            out.push(ChainInfo {
                name: name.clone(),
                hook: *hook,
                head: *head,
                entries: *first..end.max(*first),
            });
        }
        out
    }

    /// Name of the chain whose body holds entry `index` (None for heads and the table end).
    pub fn chain_of(&self, index: u32) -> Option<String> {
        self.chains()
            .into_iter()
            .find(|c| c.entries.contains(&index))
            .map(|c| c.name)
    }
}
