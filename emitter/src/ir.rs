//! The filter IR: what one (family, hook) program must do, independent of iptables.
//!
//! A [`Program`] has an entry chain and the user chains it reaches. A [`Chain`] is an ordered
//! list of [`Rule`]s; falling off its end is RETURN (without counting: a front end that counts
//! the chain-end, as iptables does, adds an unconditional `Return` rule). A rule matches when
//! every [`Match`] matches, evaluated in order (order matters: tcp, udp, icmp and multiport can
//! "hotdrop" the packet when their header cannot be read). A matching rule's counter slot is
//! counted (packets + 1, bytes + skb->len) before its [`Action`] runs. A RETURN out of the entry
//! chain (by a `Return` rule or by falling off its end) applies the [`Policy`], which is counted
//! in its own slot.
//!
//! IPv6 programs ([`Family::Ipv6`]) follow ip6t_do_table: the transport offset and fragment
//! offset of a rule come from its [`Match::Ipv6Protocol`] (IP6T_F_PROTO), which must precede
//! any transport match of the rule; IPv4-only matches are refused by the code generator.
//!
//! Semantics: docs/SEMANTICS.md (kernel ipt_do_table and the x_tables matches);
//! [`crate::reference`] is the executable form.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// NFPROTO_IPV4
    Ipv4,
    /// NFPROTO_IPV6 (ip6t_do_table)
    Ipv6,
}

impl Family {
    /// The NFPROTO_* number (what an event record's family byte holds).
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Ipv4 => 2,
            Family::Ipv6 => 10,
        }
    }
}

/// Netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// NF_INET_PRE_ROUTING
    PreRouting,
    /// NF_INET_LOCAL_IN
    LocalIn,
    /// NF_INET_FORWARD
    Forward,
    /// NF_INET_LOCAL_OUT
    LocalOut,
    /// NF_INET_POST_ROUTING
    PostRouting,
}

impl Hook {
    /// The kernel's hook number.
    pub fn number(self) -> u32 {
        match self {
            Hook::PreRouting => 0,
            Hook::LocalIn => 1,
            Hook::Forward => 2,
            Hook::LocalOut => 3,
            Hook::PostRouting => 4,
        }
    }
}

/// Identifies a chain inside a program (a front end may use the chain's entry index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(pub u32);

/// A final verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// NF_ACCEPT (1)
    Accept,
    /// NF_DROP (0)
    Drop,
}

impl Verdict {
    /// The netfilter return code.
    pub fn code(self) -> i32 {
        match self {
            Verdict::Accept => 1,
            Verdict::Drop => 0,
        }
    }
}

/// The underflow of the entry chain: its verdict and counter slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    /// verdict when the entry chain returns
    pub verdict: Verdict,
    /// counter slot counted when the policy applies
    pub counter: u32,
}

/// One BPF program's worth of rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// address family
    pub family: Family,
    /// hook the program runs at
    pub hook: Hook,
    /// chain evaluated first
    pub entry: ChainId,
    /// the entry chain and every user chain reachable from it
    pub chains: BTreeMap<ChainId, Chain>,
    /// verdict (and counter) when the entry chain returns
    pub policy: Policy,
}

/// An ordered list of rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    /// name for dumps and errors
    pub name: String,
    /// rules in evaluation order
    pub rules: Vec<Rule>,
}

/// Matches (a conjunction, in order), an action and a counter slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// all must match, evaluated in this order
    pub matches: Vec<Match>,
    /// what a matching packet does
    pub action: Action,
    /// counter slot (key in the counter map)
    pub counter: u32,
}

/// What a matching rule does (after counting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// NF_ACCEPT, stop.
    Accept,
    /// NF_DROP, stop.
    Drop,
    /// Back to the calling chain (the policy when in the entry chain).
    Return,
    /// Jump: evaluate the chain, continue after this rule if it returns.
    Call(ChainId),
    /// Goto: evaluate the chain; its RETURN returns from this chain.
    Goto(ChainId),
    /// Count only, continue with the next rule.
    Continue,
    /// REJECT: hand the packet to the daemon, which sends the reply ([`crate::event`]), and
    /// drop it.
    Reject(Reject),
    /// LOG: hand the packet to the daemon, which writes the log line, and continue with the
    /// next rule.
    Log(Log),
}

impl Action {
    /// The verdict-only action this one behaves as once its event is handed on (REJECT drops,
    /// LOG continues).
    pub fn flow(self) -> Action {
        match self {
            Action::Reject(_) => Action::Drop,
            Action::Log(_) => Action::Continue,
            a => a,
        }
    }
}

/// `-j REJECT`: the `ipt_reject_info.with` the daemon answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reject {
    /// enum ipt_reject_with
    pub with: u8,
}

/// `-j LOG`: what the daemon needs to write the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Log {
    /// syslog level 0-7
    pub level: u8,
    /// XT_LOG_* flags
    pub flags: u8,
    /// prefix, NUL-terminated
    pub prefix: [u8; 30],
}

/// A 16-byte interface name compared under a 16-byte mask (`eth+` is a prefix mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Iface {
    /// name bytes
    pub name: [u8; 16],
    /// mask bytes (0xff = compare this byte)
    pub mask: [u8; 16],
    /// `!`
    pub invert: bool,
}

impl Iface {
    /// The mask iptables builds: the name and its NUL, or the name without its `+` as a prefix.
    pub fn iptables(name: &str, invert: bool) -> Iface {
        let b = name.as_bytes();
        let mut n = [0u8; 16];
        let mut m = [0u8; 16];
        let (bytes, plen) = match b.last() {
            Some(b'+') => (&b[..b.len() - 1], b.len() - 1),
            _ => (b, (b.len() + 1).min(16)),
        };
        for (i, c) in bytes.iter().take(16).enumerate() {
            n[i] = *c;
        }
        for x in m.iter_mut().take(plen) {
            *x = 0xff;
        }
        Iface {
            name: n,
            mask: m,
            invert,
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// first port
    pub lo: u16,
    /// last port
    pub hi: u16,
}

impl PortRange {
    /// Every port (0:65535).
    pub const ANY: PortRange = PortRange { lo: 0, hi: 0xffff };
    /// A single port.
    pub fn one(p: u16) -> PortRange {
        PortRange { lo: p, hi: p }
    }
    /// Is this 0:65535?
    pub fn is_any(&self) -> bool {
        *self == PortRange::ANY
    }
}

/// `-m tcp` (xt_tcp): ranges, flags, option; each with its own inversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpMatch {
    /// --sport
    pub sport: PortRange,
    /// --dport
    pub dport: PortRange,
    /// --tcp-flags mask
    pub flags_mask: u8,
    /// --tcp-flags comparison
    pub flags_cmp: u8,
    /// --tcp-option kind (0 = no option test)
    pub option: u8,
    /// XT_TCP_INV_SRCPT
    pub inv_sport: bool,
    /// XT_TCP_INV_DSTPT
    pub inv_dport: bool,
    /// XT_TCP_INV_FLAGS
    pub inv_flags: bool,
    /// XT_TCP_INV_OPTION
    pub inv_option: bool,
}

/// `-m udp` (xt_udp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpMatch {
    /// --sport
    pub sport: PortRange,
    /// --dport
    pub dport: PortRange,
    /// XT_UDP_INV_SRCPT
    pub inv_sport: bool,
    /// XT_UDP_INV_DSTPT
    pub inv_dport: bool,
}

/// `-m icmp` (ipt_icmp): type 0xFF = any type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpMatch {
    /// ICMP type (0xFF any)
    pub icmp_type: u8,
    /// lowest code
    pub code_min: u8,
    /// highest code
    pub code_max: u8,
    /// IPT_ICMP_INV
    pub invert: bool,
}

/// Which ports `-m multiport` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MultiportMode {
    /// XT_MULTIPORT_SOURCE
    Source,
    /// XT_MULTIPORT_DESTINATION
    Destination,
    /// XT_MULTIPORT_EITHER
    Either,
}

/// `-m multiport` revision 1, kept as the kernel's arrays (`pflags[i]` set = `ports[i]` and
/// `ports[i + 1]` form a range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MultiportMatch {
    /// source / destination / either
    pub mode: MultiportMode,
    /// number of used entries of `ports`
    pub count: u8,
    /// ports
    pub ports: [u16; 15],
    /// range flags
    pub pflags: [u8; 15],
    /// `!`
    pub invert: bool,
}

impl MultiportMatch {
    /// The (lo, hi) items the kernel's loop (ports_match_v1) visits, in order. A range flag on
    /// the last used entry pairs it with `ports[count]`, which past the array is the first two
    /// bytes of `pflags` in the kernel's struct; reproduced here.
    pub fn items(&self) -> Vec<(u16, u16)> {
        let port = |i: usize| -> u16 {
            if i < 15 {
                self.ports[i]
            } else {
                u16::from_ne_bytes([self.pflags[0], self.pflags[1]])
            }
        };
        let mut v = Vec::new();
        let mut i = 0usize;
        while i < usize::from(self.count) {
            let s = port(i);
            if i < 15 && self.pflags[i] != 0 {
                i += 1;
                v.push((s, port(i)));
            } else {
                v.push((s, s));
            }
            i += 1;
        }
        v
    }
}

/// `-m iprange` revision 1: host-order inclusive ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRangeMatch {
    /// --src-range (IPRANGE_SRC)
    pub src: Option<(Ipv4Addr, Ipv4Addr)>,
    /// --dst-range (IPRANGE_DST)
    pub dst: Option<(Ipv4Addr, Ipv4Addr)>,
    /// IPRANGE_SRC_INV
    pub inv_src: bool,
    /// IPRANGE_DST_INV
    pub inv_dst: bool,
}

/// `-m iprange` revision 1 for IPv6 (`iprange_mt6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange6Match {
    /// --src-range (IPRANGE_SRC)
    pub src: Option<(Ipv6Addr, Ipv6Addr)>,
    /// --dst-range (IPRANGE_DST)
    pub dst: Option<(Ipv6Addr, Ipv6Addr)>,
    /// IPRANGE_SRC_INV
    pub inv_src: bool,
    /// IPRANGE_DST_INV
    pub inv_dst: bool,
}

/// `-m frag` as `frag_mt6` tests it: no match when the walk to the first fragment header
/// ends without one (-ENOENT: a protocol or "no next header" first, or a non-first fragment
/// of another header), hotdrop when it fails otherwise (-EBADMSG: a header cut short) or the
/// 8-byte fragment header cannot be read; then every test below must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragMatch {
    /// `ids[0] <= ntohl(identification) <= ids[1]`, inverted by `inv_ids` (always tested;
    /// iptables puts 0:0xFFFFFFFF without `--fragid`)
    pub ids: (u32, u32),
    /// [`frag`] flags (`--fragres`, `--fragfirst`, `--fragmore`, `--fraglast`); IDS and LEN
    /// are accepted and not tested, as `frag_mt6` does not test them
    pub flags: u8,
    /// IP6T_FRAG_INV_IDS (`frag_mt6` tests no other inversion)
    pub inv_ids: bool,
}

/// The `flags` of [`FragMatch`] (ip6t_frag.h).
pub mod frag {
    /// IP6T_FRAG_IDS: `--fragid` given (not tested by the match)
    pub const IDS: u8 = 0x01;
    /// IP6T_FRAG_LEN: `--fraglen` given (not tested by the match)
    pub const LEN: u8 = 0x02;
    /// IP6T_FRAG_RES: the reserved byte and the two reserved bits are zero
    pub const RES: u8 = 0x04;
    /// IP6T_FRAG_FST: offset 0
    pub const FST: u8 = 0x08;
    /// IP6T_FRAG_MF: M set
    pub const MF: u8 = 0x10;
    /// IP6T_FRAG_NMF: M clear
    pub const NMF: u8 = 0x20;
}

/// `-m rt` as `rt_mt6` tests it, without the type-0 address list (`--rt-0-addrs`, refused
/// by the front end): no match when the walk to the first routing header ends without one
/// (-ENOENT: a protocol or "no next header" first, or a non-first fragment), hotdrop when it
/// fails otherwise (-EBADMSG: a header on the way, or the routing header's first four bytes,
/// cut short). A routing header longer than the rest of the packet (`skb->len - ptr <
/// hdrlen`) does not match, or hotdrops with `short_hotdrop`; then every test below must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtMatch {
    /// `segsleft[0] <= segments_left <= segsleft[1]`, inverted by `inv_segsleft` (always
    /// tested; iptables puts 0:0xFFFFFFFF without `--rt-segsleft`)
    pub segsleft: (u32, u32),
    /// `--rt-type`: the routing type equals it (a value above 255 never does)
    pub rt_type: Option<u32>,
    /// `--rt-len`: the header's length in bytes, `(hdrlen + 1) * 8`, equals it
    pub hdrlen: Option<u32>,
    /// `--rt-0-res`: the 32-bit word after the first four bytes is zero
    pub res: bool,
    /// IP6T_RT_INV_TYP
    pub inv_type: bool,
    /// IP6T_RT_INV_SGS
    pub inv_segsleft: bool,
    /// IP6T_RT_INV_LEN
    pub inv_len: bool,
    /// the kernel hotdrops a routing header longer than the packet (netfilter's July 2026
    /// fix "ip6tables: mark malformed IPv6 extension headers for hotdrop"); else no match
    pub short_hotdrop: bool,
}

/// `-m hbh` / `-m dst` as `hbh_mt6` tests them, without the option list (`--hbh-opts`,
/// `--dst-opts`, refused by the front end): no match when the walk to the first hop-by-hop
/// (destination options) header ends without one (-ENOENT), hotdrop when it fails otherwise
/// (-EBADMSG). A header longer than the rest of the packet (`skb->len - ptr < hdrlen`) does not
/// match, or hotdrops with `short_hotdrop`; then the length test must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptsMatch {
    /// the destination options header (`-m dst`, NEXTHDR_DEST); else hop-by-hop (`-m hbh`)
    pub dst: bool,
    /// `--hbh-len` / `--dst-len`: the header's length in bytes, `(hdrlen + 1) * 8`, equals it
    pub hdrlen: Option<u32>,
    /// IP6T_OPTS_INV_LEN
    pub inv_len: bool,
    /// as [`RtMatch::short_hotdrop`]
    pub short_hotdrop: bool,
}

/// `-m ipv6header` as `ipv6header_mt6` tests it: its own walk over the extension headers
/// (ESP and "no next header" end it with their bit), the MASK_* bits of the headers seen
/// (HOPOPTS 128, DSTOPTS 64, ROUTING 32, FRAGMENT 16, AH 8, ESP 4, NONE 2, PROTO 1); no match
/// when an extension header has fewer than 2 bytes left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6HeaderMatch {
    /// MASK_* bits to test
    pub matchflags: u8,
    /// inverted bits (`--soft`), or non-zero for "not exactly" (strict)
    pub invflags: u8,
    /// `--soft`: `!((bits ^ matchflags ^ invflags) & matchflags)`; else `bits == matchflags`
    /// (`!=` with `invflags`)
    pub soft: bool,
}

/// The `mode` values of [`Match::HopLimit`] (ip6t_hl.h).
pub mod hl {
    /// IP6T_HL_EQ: equal
    pub const EQ: u8 = 0;
    /// IP6T_HL_NE: not equal
    pub const NE: u8 = 1;
    /// IP6T_HL_LT: less than
    pub const LT: u8 = 2;
    /// IP6T_HL_GT: greater than
    pub const GT: u8 = 3;
}

/// The state bits of `-m conntrack --ctstate` (xt_conntrack.h XT_CONNTRACK_STATE_*): bit
/// `ctinfo % IP_CT_IS_REPLY + 1` for a tracked packet, and these.
pub mod ctstate {
    /// no entry and not untracked
    pub const INVALID: u16 = 1 << 0;
    /// IP_CT_ESTABLISHED(_REPLY)
    pub const ESTABLISHED: u16 = 1 << 1;
    /// IP_CT_RELATED(_REPLY)
    pub const RELATED: u16 = 1 << 2;
    /// IP_CT_NEW
    pub const NEW: u16 = 1 << 3;
    /// IPS_SRC_NAT set
    pub const SNAT: u16 = 1 << 6;
    /// IPS_DST_NAT set
    pub const DNAT: u16 = 1 << 7;
    /// IP_CT_UNTRACKED
    pub const UNTRACKED: u16 = 1 << 8;
}

/// `-m state`'s bits (xt_state.h): as conntrack's for INVALID/ESTABLISHED/RELATED/NEW, and
/// UNTRACKED at bit 6.
pub mod statebits {
    /// XT_STATE_UNTRACKED
    pub const UNTRACKED: u32 = 1 << 6;
}

/// A connection-tuple address test of `-m conntrack` (`--ctorigsrc` and the like):
/// `((tuple address ^ addr) & mask) == 0`, inverted by `invert`, over the first 4 bytes of the
/// `union nf_inet_addr` in an IPv4 program and all 16 in an IPv6 one (`conntrack_addrcmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtAddr {
    /// address (an IPv4 one in the first 4 bytes)
    pub addr: [u8; 16],
    /// mask
    pub mask: [u8; 16],
    /// `!`
    pub invert: bool,
}

impl CtAddr {
    /// An IPv4 address test.
    pub fn v4(addr: Ipv4Addr, mask: Ipv4Addr, invert: bool) -> Self {
        let mut a = [0u8; 16];
        let mut m = [0u8; 16];
        a[..4].copy_from_slice(&addr.octets());
        m[..4].copy_from_slice(&mask.octets());
        CtAddr {
            addr: a,
            mask: m,
            invert,
        }
    }
}

/// A connection-tuple port test (`--ctorigsrcport` and the like): an inclusive range in host
/// order (revisions 1 and 2 compare one port: lo == hi).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtPort {
    /// range
    pub range: PortRange,
    /// `!`
    pub invert: bool,
}

/// `-m conntrack` (xt_conntrack, any revision), tests in the kernel's order
/// (`conntrack_mt`). `None` = the flag is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtMatch {
    /// --ctstate: state mask ([`ctstate`]) and `!`
    pub state: Option<(u16, bool)>,
    /// --ctdir: true = ORIGINAL (XT_CONNTRACK_DIRECTION without `!`), false = REPLY
    pub dir_original: Option<bool>,
    /// --ctorigsrc
    pub origsrc: Option<CtAddr>,
    /// --ctorigdst
    pub origdst: Option<CtAddr>,
    /// --ctreplsrc
    pub replsrc: Option<CtAddr>,
    /// --ctrepldst
    pub repldst: Option<CtAddr>,
    /// --ctproto: protocol and `!`
    pub proto: Option<(u8, bool)>,
    /// --ctorigsrcport
    pub origsrc_port: Option<CtPort>,
    /// --ctorigdstport
    pub origdst_port: Option<CtPort>,
    /// --ctreplsrcport
    pub replsrc_port: Option<CtPort>,
    /// --ctrepldstport
    pub repldst_port: Option<CtPort>,
    /// --ctstatus: IPS_* mask and `!`
    pub status: Option<(u32, bool)>,
    /// --ctexpire: remaining lifetime in seconds, inclusive range, and `!`
    pub expires: Option<(u32, u32, bool)>,
}

/// One test of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Match {
    /// `(saddr & mask) != addr` fails (inverted by `invert`); compared as the kernel does,
    /// without normalizing `addr` under `mask`.
    Ipv4Src {
        /// address
        addr: Ipv4Addr,
        /// mask
        mask: Ipv4Addr,
        /// IPT_INV_SRCIP
        invert: bool,
    },
    /// Destination address, as `Ipv4Src`.
    Ipv4Dst {
        /// address
        addr: Ipv4Addr,
        /// mask
        mask: Ipv4Addr,
        /// IPT_INV_DSTIP
        invert: bool,
    },
    /// Input interface (state->in; a missing device compares as 16 zero bytes).
    InIface(Iface),
    /// Output interface (state->out).
    OutIface(Iface),
    /// IP protocol; 0 matches every packet whatever `invert` says (as the kernel does).
    Protocol {
        /// protocol number
        proto: u8,
        /// IPT_INV_PROTO
        invert: bool,
    },
    /// `-f`: non-first fragments ((frag_off & IP_OFFSET) != 0), inverted by `invert`.
    Fragment {
        /// IPT_INV_FRAG
        invert: bool,
    },
    /// `-m tcp`
    Tcp(TcpMatch),
    /// `-m udp`
    Udp(UdpMatch),
    /// `-m icmp`
    Icmp(IcmpMatch),
    /// `-m multiport` (revision 1)
    Multiport(MultiportMatch),
    /// `-m iprange` (revision 1)
    IpRange(IpRangeMatch),
    /// `-m conntrack`
    Conntrack(CtMatch),
    /// `-m state --state` (xt_state): the state mask ([`statebits`]); matches when the
    /// packet's bit is in it (iptables folds `!` into the mask).
    State(u32),
    /// `-m pkttype` (xt_pkttype): `skb->pkt_type`, with PACKET_LOOPBACK read as MULTICAST for
    /// a multicast destination and BROADCAST otherwise, equal to `pkttype`, inverted.
    PktType {
        /// PACKET_* value
        pkttype: u8,
        /// `!`
        invert: bool,
    },
    /// `-m mac --mac-source` (xt_mac): on an Ethernet input device (`skb->dev->type` ==
    /// ARPHRD_ETHER) whose MAC header ends at or before the network header, the header's
    /// source address equal to `src`, then `ret ^= invert` read as a bool (an `invert` other
    /// than 0 or 1 makes every such packet match); any other packet never matches, whatever
    /// `invert`.
    Mac {
        /// the source address
        src: [u8; 6],
        /// `xt_mac_info.invert` as given
        invert: u32,
    },
    /// `-m mark` (xt_mark revision 1): `(skb->mark & mask) == mark`, inverted by `invert`.
    Mark {
        /// value
        mark: u32,
        /// mask
        mask: u32,
        /// `!`
        invert: bool,
    },
    /// `-m limit` (xt_limit): the token bucket in slot `slot` of the table's limit map.
    Limit(LimitMatch),
    /// `-m addrtype` (xt_addrtype): the route types of the addresses, looked up in the
    /// namespace's address-type map.
    Addrtype(AddrtypeMatch),
    /// `-m owner` (xt_owner): the packet's socket and the credentials of its file.
    Owner(OwnerMatch),
    /// `-m recent` (xt_recent): a named address list of the namespace.
    Recent(RecentMatch),
    /// `-m hashlimit` (xt_hashlimit): a token bucket per key in a named table of the
    /// namespace.
    Hashlimit(HashlimitMatch),
    /// IPv6 source address: `ipv6_masked_addr_cmp(saddr, mask, addr)`, i.e.
    /// `((saddr ^ addr) & mask) != 0`, fails, inverted by `invert` (IP6T_INV_SRCIP). Unlike
    /// IPv4's test, bits of `addr` outside `mask` never count.
    Ipv6Src {
        /// address
        addr: Ipv6Addr,
        /// mask
        mask: Ipv6Addr,
        /// IP6T_INV_SRCIP
        invert: bool,
    },
    /// IPv6 destination address, as `Ipv6Src` (IP6T_INV_DSTIP).
    Ipv6Dst {
        /// address
        addr: Ipv6Addr,
        /// mask
        mask: Ipv6Addr,
        /// IP6T_INV_DSTIP
        invert: bool,
    },
    /// What `ip6_packet_match` does for an entry with IP6T_F_PROTO: `ipv6_find_hdr(skb,
    /// &thoff, -1, &fragoff)` from the IPv6 header; a failed walk (truncated extension
    /// header, a non-first fragment whose next header is an extension header) hotdrops;
    /// otherwise the transport offset and fragment offset of this rule's later matches (tcp,
    /// udp, icmp6, multiport) are the walk's, and the test is `proto == found` (inverted by
    /// `invert`) except that `proto` 0 (`-p all`) matches whatever `invert` says. Only valid
    /// in IPv6 programs; a front end emits it for IP6T_F_PROTO entries only, before their
    /// matches, and the code generator refuses a transport match not preceded by it.
    Ipv6Protocol {
        /// protocol number (0: all)
        proto: u8,
        /// IP6T_INV_PROTO
        invert: bool,
    },
    /// `-m icmp6` (ip6t_icmp `icmp6_match`): no match in a non-first fragment, hotdrop when
    /// the 8-byte ICMPv6 header cannot be read, then `type == icmp_type && code in
    /// [code_min, code_max]` inverted by `invert` (no "any type" value: 0xFF is type 255).
    Icmp6(IcmpMatch),
    /// `-m hl` (ip6t_hl `hl_mt6`): the IPv6 hop limit compared with `value` by `mode`
    /// ([`hl`]: IP6T_HL_EQ/NE/LT/GT); any other mode never matches.
    HopLimit {
        /// IP6T_HL_* comparison
        mode: u8,
        /// hop limit
        value: u8,
    },
    /// `-m frag` (ip6t_frag `frag_mt6`): the first fragment header
    /// (`ipv6_find_hdr(skb, &ptr, NEXTHDR_FRAGMENT, NULL, NULL)`, see [`FragMatch`]). IPv6 only.
    Frag(FragMatch),
    /// `-m rt` (ip6t_rt `rt_mt6`): the first routing header
    /// (`ipv6_find_hdr(skb, &ptr, NEXTHDR_ROUTING, NULL, NULL)`, see [`RtMatch`]). IPv6 only.
    Rt(RtMatch),
    /// `-m hbh` / `-m dst` (ip6t_hbh `hbh_mt6`): the first hop-by-hop or destination options
    /// header (`ipv6_find_hdr(skb, &ptr, NEXTHDR_HOP or NEXTHDR_DEST, NULL, NULL)`, see
    /// [`OptsMatch`]). IPv6 only.
    Opts(OptsMatch),
    /// `-m ipv6header` (ip6t_ipv6header `ipv6header_mt6`, see [`Ipv6HeaderMatch`]). IPv6 only.
    Ipv6Header(Ipv6HeaderMatch),
    /// `-m iprange` revision 1 in an IPv6 program (`iprange_mt6`): inclusive ranges of
    /// addresses compared as 128-bit big-endian numbers (`iprange_ipv6_lt`).
    IpRange6(IpRange6Match),
    /// `-m tcpmss` (xt_tcpmss): the value of the TCP header's MSS option.
    TcpMss(TcpMssMatch),
}

/// A `-m tcpmss` match (`tcpmss_mt`). The TCP header is read at the transport offset whatever
/// the fragment offset (unless `frag_nomatch`): fewer than 20 bytes there, a data offset below
/// 5 words or options past the packet's end hotdrop. The options are scanned as the kernel
/// does (kinds 0 and 1 are one byte, others their length byte, 0 counting as 1); the first
/// place holding kind 2 with length 4 and four bytes left gives the MSS, and the match is
/// `(mss_min <= mss <= mss_max) ^ invert` as an integer (non-zero holds). No such place, or no
/// options: `invert != 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpMssMatch {
    /// lowest MSS
    pub min: u16,
    /// highest MSS
    pub max: u16,
    /// the rule's `invert` byte as sent (iptables: 0 or 1; above 1 the match always holds once
    /// the header is read)
    pub invert: u8,
    /// a non-first fragment fails at once, without hotdrop (kernels with the 2026 fix "fix L4
    /// header parsing for non-first fragments"); else its payload is read as the header
    pub frag_nomatch: bool,
}

impl TcpMssMatch {
    /// The match's result for the scan's outcome: `Some(mss)` when an MSS option was found.
    pub fn result(&self, mss: Option<u16>) -> bool {
        match mss {
            Some(v) => (u8::from(v >= self.min && v <= self.max) ^ self.invert) != 0,
            None => self.invert != 0,
        }
    }
}

/// A `-m hashlimit` match (`hashlimit_mt_common`) on table `table` of the generation's
/// hashlimit tables (one hash map each, key and value laid out in [`hashlimit`]). What the
/// kernel reads from the table's configuration (`hinfo->cfg`: the key, the expiry, how an
/// entry starts and refills) comes from the rule that created the table; what it reads from
/// the rule's own (`cfg->mode`: `--hashlimit-above`, byte or rate-match charging, and the
/// revision's credits per jiffy) from this rule. Every constant is worked out beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashlimitMatch {
    /// index of the table's map (`MapRef::Hashlimit`)
    pub table: u32,
    /// the table's XT_HASHLIMIT_HASH_* bits: what the key holds
    pub hash: u32,
    /// the table's source mask as the packet's bytes are loaded (`maskl(saddr, srcmask)`)
    pub srcmask: u32,
    /// the table's destination mask, likewise
    pub dstmask: u32,
    /// a non-first fragment hotdrops when ports are hashed (kernels with the 2026 fix "fix L4
    /// header parsing for non-first fragments"); else its first payload bytes are the ports
    pub frag_hotdrop: bool,
    /// `msecs_to_jiffies(expire)` of the table
    pub expire: u64,
    /// the rule's XT_HASHLIMIT_INVERT (`--hashlimit-above`)
    pub invert: bool,
    /// how the rule charges and the table's entries start and refill
    pub kind: HashlimitKind,
}

/// The token bucket of a hashlimit entry, or its rate-match window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashlimitKind {
    /// `rateinfo_init`/`rateinfo_recalc` and the credit test.
    Bucket {
        /// the table's XT_HASHLIMIT_BYTES: refill in CREDITS_PER_JIFFY_BYTES, capped at
        /// `bytes_cap`
        table_bytes: bool,
        /// the rule's XT_HASHLIMIT_BYTES: charge `hashlimit_byte_cost` of skb->len
        rule_bytes: bool,
        /// log2 of the rule revision's CREDITS_PER_JIFFY
        cpj_shift: u8,
        /// log2 of CREDITS_PER_JIFFY_BYTES
        cpj_bytes_shift: u8,
        /// CREDITS_PER_JIFFY_BYTES * HZ
        bytes_cap: u64,
        /// a new entry's `credit`
        credit: u64,
        /// a new entry's `credit_cap`
        credit_cap: u64,
        /// a new entry's `cost`
        cost: u64,
    },
    /// `--hashlimit-rate-match` (revision 3): packets (or bytes) per interval.
    RateMatch {
        /// the rule's XT_HASHLIMIT_BYTES: count skb->len rather than 1
        rule_bytes: bool,
        /// the table's `interval` (seconds), a new entry's `rateinfo.interval`
        interval: u32,
        /// `interval * HZ` (u32 arithmetic, as the kernel has it)
        interval_jiffies: u64,
        /// a new entry's `rate`
        rate: u64,
        /// a new entry's `burst`
        burst: u64,
    },
}

/// Key and value of a hashlimit table's hash map (`struct dsthash_dst`'s IPv4 part and the
/// fields of `struct dsthash_ent` that change, under a `bpf_spin_lock` as `ent->lock`).
pub mod hashlimit {
    /// key: u32 source address (masked, network order; 0 unless hashed)
    pub const K_SRC: u32 = 0;
    /// key: u32 destination address
    pub const K_DST: u32 = 4;
    /// key: u16 source port (network order)
    pub const K_SPORT: u32 = 8;
    /// key: u16 destination port
    pub const K_DPORT: u32 = 10;
    /// key bytes
    pub const KEY_SIZE: u32 = 12;
    /// `struct bpf_spin_lock`
    pub const LOCK: u32 = 0;
    /// u64 jiffies the entry expires at
    pub const EXPIRES: u32 = 8;
    /// u64 `rateinfo.prev`
    pub const PREV: u32 = 16;
    /// u64 `rateinfo.credit`
    pub const CREDIT: u32 = 24;
    /// u64 `rateinfo.credit_cap`
    pub const CREDIT_CAP: u32 = 32;
    /// u64 `rateinfo.cost`
    pub const COST: u32 = 40;
    /// rate match: u32 `rateinfo.interval` (over `credit`, as the kernel's union)
    pub const INTERVAL: u32 = 24;
    /// rate match: u32 `rateinfo.prev_window`
    pub const PREV_WINDOW: u32 = 28;
    /// rate match: u64 `rateinfo.current_rate`
    pub const CURRENT_RATE: u32 = 32;
    /// rate match: u64 `rateinfo.rate`
    pub const RATE: u32 = 40;
    /// rate match: u64 `rateinfo.burst`
    pub const BURST: u32 = 48;
    /// value bytes
    pub const VALUE_SIZE: u32 = 56;
    /// XT_HASHLIMIT_HASH_DIP
    pub const HASH_DIP: u32 = 1;
    /// XT_HASHLIMIT_HASH_DPT
    pub const HASH_DPT: u32 = 2;
    /// XT_HASHLIMIT_HASH_SIP
    pub const HASH_SIP: u32 = 4;
    /// XT_HASHLIMIT_HASH_SPT
    pub const HASH_SPT: u32 = 8;
}

/// A `-m recent` match (`recent_mt`) on list `list` of the generation's recent lists (one map
/// each, see [`recent`] for the value layout). Everything about the list itself (its mask,
/// size, stamps per address) is in the map or in `shape`; the rest is the rule's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecentMatch {
    /// index of the list's map (`MapRef::Recent`)
    pub list: u32,
    /// the list's dimensions
    pub shape: RecentShape,
    /// XT_RECENT_* operation and modifiers ([`recent::CHECK`], ...)
    pub check_set: u8,
    /// `!`
    pub invert: bool,
    /// `--seconds` (0: every stamp counts)
    pub seconds: u32,
    /// `--seconds * HZ` as the kernel computes it (u32 arithmetic)
    pub window: u32,
    /// `--hitcount` (0: one stamp is enough)
    pub hit_count: u32,
    /// `--rdest` (else `--rsource`)
    pub dest: bool,
}

/// The dimensions of one recent list's map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecentShape {
    /// addresses kept (xt_recent's `ip_list_tot`)
    pub entries: u32,
    /// stamps kept per address (`nstamps_max_mask + 1`, a power of two)
    pub stamps: u32,
    /// `e->index` is a u16 (Linux 6.11 and later; before, a u8 that wraps at 256)
    pub wide: bool,
}

impl RecentShape {
    /// Bytes of one address's record.
    pub fn stride(&self) -> u32 {
        recent::STAMPS + 8 * self.stamps
    }
    /// Bytes of the whole map value.
    pub fn value_size(&self) -> u32 {
        recent::ENTRIES + self.entries * self.stride()
    }
}

/// One recent list as a single map value (an ARRAY of one element) whose `bpf_spin_lock`
/// guards it all, as `recent_lock` guards the kernel's list: the program searches, adds,
/// refreshes, evicts and removes addresses under it, the daemon reads and writes it with
/// BPF_F_LOCK. Offsets of the header, then of each address's record at
/// `ENTRIES + slot * stride`.
pub mod recent {
    /// `struct bpf_spin_lock`
    pub const LOCK: u32 = 0;
    /// u32 addresses in use (`t->entries`)
    pub const COUNT: u32 = 4;
    /// u64 the last LRU sequence number handed out
    pub const CLOCK: u32 = 8;
    /// u32 the list's mask (`t->mask`, IPv4, network order), set when the list is created
    pub const MASK: u32 = 16;
    /// u32 scratch: the slot the search found
    pub const FOUND: u32 = 20;
    /// u32 scratch: a free slot the search passed
    pub const FREE: u32 = 24;
    /// u32 scratch: the least recently used slot (the LRU list's head)
    pub const OLDEST: u32 = 28;
    /// u32 [`super::RecentShape::entries`], written once by the daemon (programs do not read it)
    pub const SHAPE_ENTRIES: u32 = 32;
    /// u32 [`super::RecentShape::stamps`], likewise
    pub const SHAPE_STAMPS: u32 = 36;
    /// first address record
    pub const ENTRIES: u32 = 48;
    /// record: u64 LRU sequence number of the last add or refresh; 0 = free slot
    pub const E_LRU: u32 = 0;
    /// record: u32 address (masked, network order)
    pub const E_ADDR: u32 = 8;
    /// record: u8 TTL of the last add or refresh
    pub const E_TTL: u32 = 12;
    /// record: u16 stamps in use (`e->nstamps`)
    pub const E_NSTAMPS: u32 = 14;
    /// record: u16 index of the next stamp (`e->index`; a u8 before Linux 6.11)
    pub const E_INDEX: u32 = 16;
    /// record: u64 jiffies stamps, `stamps` of them
    pub const STAMPS: u32 = 24;
    /// XT_RECENT_CHECK (`--rcheck`)
    pub const CHECK: u8 = 1;
    /// XT_RECENT_SET
    pub const SET: u8 = 2;
    /// XT_RECENT_UPDATE
    pub const UPDATE: u8 = 4;
    /// XT_RECENT_REMOVE
    pub const REMOVE: u8 = 8;
    /// XT_RECENT_TTL (`--rttl`)
    pub const TTL: u8 = 16;
    /// XT_RECENT_REAP
    pub const REAP: u8 = 32;
}

/// A `-m limit` bucket: `limit_mt` on a state word shared by every program of the table (one
/// slot per limit match), `credit << 32 | (u32)prev`. Keeping `prev` as its low 32 bits is
/// exact: the kernel multiplies `now - prev` by CREDITS_PER_JIFFY into a u32, which only the
/// low 32 bits of the difference decide, and its fast path (`prev == jiffies`) changes nothing
/// the slow path would not also leave as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitMatch {
    /// slot in the limit map
    pub slot: u32,
    /// credits a packet costs (`r->cost`)
    pub cost: u32,
    /// bucket size in credits (`r->credit_cap`)
    pub credit_cap: u32,
    /// CREDITS_PER_JIFFY of the kernel's HZ
    pub credits_per_jiffy: u32,
}

impl LimitMatch {
    /// `limit_mt` on a state word at jiffies `now`: the new word and whether the packet
    /// matches.
    ///
    /// ```
    /// use emitter::ir::LimitMatch;
    /// // 1/s, burst 2, HZ 250 (32000 credits a second, 128 a jiffy)
    /// let m = LimitMatch { slot: 0, cost: 32000, credit_cap: 64000, credits_per_jiffy: 128 };
    /// let full = 64000u64 << 32 | 1000;
    /// let (w, pass) = m.step(full, 1000);
    /// assert!(pass);
    /// let (w, pass) = m.step(w, 1000);
    /// assert!(pass);
    /// let (w, pass) = m.step(w, 1000);
    /// assert!(!pass, "the bucket is empty");
    /// let (_, pass) = m.step(w, 1250);
    /// assert!(pass, "a second later it has a credit again");
    /// ```
    pub fn step(&self, word: u64, now: u64) -> (u64, bool) {
        let prev = word as u32;
        let credit = (word >> 32) as u32;
        // the fast path: nothing to add, not enough to take
        if credit < self.cost && prev == now as u32 {
            return (word, false);
        }
        let increase = (now as u32)
            .wrapping_sub(prev)
            .wrapping_mul(self.credits_per_jiffy);
        let mut credit = credit.wrapping_add(increase).min(self.credit_cap);
        let pass = credit >= self.cost;
        if pass {
            credit -= self.cost;
        }
        (u64::from(credit) << 32 | u64::from(now as u32), pass)
    }
}

/// Which device `--limit-iface-in`/`--limit-iface-out` ties the address type to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrtypeDev {
    /// any device (`inet_addr_type`)
    Any,
    /// state->in
    In,
    /// state->out
    Out,
}

/// A `-m addrtype` match: a mask of `1 << RTN_*` per address (0 = not tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrtypeMatch {
    /// `--src-type`
    pub src: u16,
    /// `--dst-type`
    pub dst: u16,
    /// `! --src-type`
    pub inv_src: bool,
    /// `! --dst-type`
    pub inv_dst: bool,
    /// `--limit-iface-in/out`
    pub dev: AddrtypeDev,
}

/// A `-m owner` match (xt_owner revision 1; `--suppl-groups` is not compiled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerMatch {
    /// XT_OWNER_* tests (`info->match`)
    pub tests: u8,
    /// XT_OWNER_* inversions (`info->invert`)
    pub invert: u8,
    /// fsuid range, inclusive
    pub uid: (u32, u32),
    /// fsgid range, inclusive
    pub gid: (u32, u32),
}

/// XT_OWNER_UID
pub const OWNER_UID: u8 = 1;
/// XT_OWNER_GID
pub const OWNER_GID: u8 = 2;
/// XT_OWNER_SOCKET
pub const OWNER_SOCKET: u8 = 4;

/// One IPv4 route of the local routing table, as `fib_table_lookup` finds it: what
/// `-m addrtype` answers from (see `reference::addr_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRoute {
    /// destination network (the address as a host-order number)
    pub net: u32,
    /// prefix length
    pub prefix: u8,
    /// RTN_* type
    pub rtype: u8,
    /// the first next hop's device (0: none)
    pub ifindex: u32,
}

/// RTN_UNICAST: the type of an address no route of the local table covers.
pub const RTN_UNICAST: u8 = 1;

impl Match {
    /// Can this match drop the packet outright ("hotdrop")? Such matches fix the order in
    /// which a rule's tests may run.
    pub fn can_hotdrop(&self) -> bool {
        matches!(
            self,
            Match::Tcp(_)
                | Match::Udp(_)
                | Match::Icmp(_)
                | Match::Multiport(_)
                | Match::Ipv6Protocol { .. }
                | Match::Icmp6(_)
                | Match::Frag(_)
                | Match::Rt(_)
                | Match::Opts(_)
                | Match::Ipv6Header(_)
        )
    }
}

impl Match {
    /// Does this match read the packet's connection (skb->_nfct)?
    pub fn needs_conntrack(&self) -> bool {
        matches!(self, Match::Conntrack(_) | Match::State(_))
    }
}

impl Program {
    /// Does any rule need connection tracking in the program's namespace?
    pub fn needs_conntrack(&self) -> bool {
        self.chains
            .values()
            .flat_map(|c| &c.rules)
            .any(|r| r.matches.iter().any(Match::needs_conntrack))
    }

    /// Does any rule hand events to the daemon (REJECT, LOG)?
    pub fn has_events(&self) -> bool {
        self.chains
            .values()
            .flat_map(|c| &c.rules)
            .any(|r| matches!(r.action, Action::Reject(_) | Action::Log(_)))
    }

    /// A program whose entry chain is `rules`, with no user chains.
    pub fn single(hook: Hook, rules: Vec<Rule>, policy: Policy) -> Program {
        let mut chains = BTreeMap::new();
        chains.insert(
            ChainId(0),
            Chain {
                name: "entry".into(),
                rules,
            },
        );
        Program {
            family: Family::Ipv4,
            hook,
            entry: ChainId(0),
            chains,
            policy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_iface_masks() {
        let e = Iface::iptables("eth0", false);
        assert_eq!(&e.name[..5], b"eth0\0");
        assert_eq!(e.mask[..5], [0xff; 5]);
        assert_eq!(e.mask[5..], [0; 11]);
        let p = Iface::iptables("veth+", true);
        assert_eq!(&p.name[..4], b"veth");
        assert_eq!(p.mask[..4], [0xff; 4]);
        assert_eq!(p.mask[4], 0);
        assert!(p.invert);
    }

    #[test]
    fn multiport_items_follow_the_kernel_loop() {
        let mut m = MultiportMatch {
            mode: MultiportMode::Destination,
            count: 4,
            ports: [0; 15],
            pflags: [0; 15],
            invert: false,
        };
        m.ports[..4].copy_from_slice(&[22, 1000, 2000, 80]);
        m.pflags[1] = 1;
        assert_eq!(m.items(), vec![(22, 22), (1000, 2000), (80, 80)]);
        m.pflags[3] = 1; // range on the last entry pairs with ports[4]
        m.ports[4] = 90;
        assert_eq!(m.items(), vec![(22, 22), (1000, 2000), (80, 90)]);
    }
}
