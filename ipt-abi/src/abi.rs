//! 1:1 mirrors of the kernel's user-space ABI structs (native endian, as the kernel sees them).
//!
//! Sources: `include/uapi/linux/netfilter/x_tables.h`, `include/uapi/linux/netfilter_ipv4/ip_tables.h`,
//! `include/uapi/linux/netfilter_ipv6/ip6_tables.h`, `xt_tcpudp.h`, `xt_multiport.h`,
//! `xt_iprange.h`, `xt_comment.h`, `xt_conntrack.h`, `xt_state.h`, `xt_LOG.h`,
//! `netfilter_ipv4/ipt_REJECT.h`. Every size and field offset is checked at compile time.
//!
//! The kernel's `xt_entry_match` / `xt_entry_target` are unions whose kernel half holds a
//! pointer, so the kernel aligns them to 8; these mirrors only carry the user half (alignment 2)
//! with the same size (32). Padding that C inserts implicitly is an explicit `pad` field here
//! (zerocopy refuses implicit padding), and it is kept byte for byte where the kernel copies it
//! back to user space.

use zerocopy::byteorder::network_endian;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XT_TABLE_MAXNAMELEN`: table name field size (including the NUL).
pub const XT_TABLE_MAXNAMELEN: usize = 32;
/// `XT_EXTENSION_MAXNAMELEN`: match/target name field size (including the NUL).
pub const XT_EXTENSION_MAXNAMELEN: usize = 29;
/// `XT_FUNCTION_MAXNAMELEN`: size of the ERROR target's `errorname`.
pub const XT_FUNCTION_MAXNAMELEN: usize = 30;
/// `IFNAMSIZ`.
pub const IFNAMSIZ: usize = 16;
/// `NF_INET_NUMHOOKS`.
pub const NF_INET_NUMHOOKS: usize = 5;
/// `XT_MAX_TABLE_SIZE` (x_tables.c): upper bound of every x_tables allocation.
pub const XT_MAX_TABLE_SIZE: u64 = 512 * 1024 * 1024;
/// `sizeof(struct xt_table_info)` on 64-bit kernels (the header `xt_alloc_table_info` adds to `size`).
pub const XT_TABLE_INFO_SIZE: u64 = 64;

/// `IPT_BASE_CTL`: first iptables sockopt.
pub const IPT_BASE_CTL: u32 = 64;
/// `IPT_SO_SET_REPLACE`.
pub const IPT_SO_SET_REPLACE: u32 = 64;
/// `IPT_SO_SET_ADD_COUNTERS`.
pub const IPT_SO_SET_ADD_COUNTERS: u32 = 65;
/// `IPT_SO_GET_INFO`.
pub const IPT_SO_GET_INFO: u32 = 64;
/// `IPT_SO_GET_ENTRIES`.
pub const IPT_SO_GET_ENTRIES: u32 = 65;
/// `IPT_SO_GET_REVISION_MATCH`.
pub const IPT_SO_GET_REVISION_MATCH: u32 = 66;
/// `IPT_SO_GET_REVISION_TARGET`.
pub const IPT_SO_GET_REVISION_TARGET: u32 = 67;
/// `IP6T_SO_SET_REPLACE` (level IPPROTO_IPV6).
pub const IP6T_SO_SET_REPLACE: u32 = 64;
/// `IP6T_SO_SET_ADD_COUNTERS`.
pub const IP6T_SO_SET_ADD_COUNTERS: u32 = 65;
/// `IP6T_SO_GET_INFO`.
pub const IP6T_SO_GET_INFO: u32 = 64;
/// `IP6T_SO_GET_ENTRIES`.
pub const IP6T_SO_GET_ENTRIES: u32 = 65;
/// `IP6T_F_PROTO`: set by ip6tables with `-p`; REJECT's tcp-reset check requires it.
pub const IP6T_F_PROTO: u8 = 0x01;
/// `IP6T_F_TOS`: match the Traffic Class (never set by ip6tables, ignored by the kernel).
pub const IP6T_F_TOS: u8 = 0x02;
/// `IP6T_F_GOTO`: `-g`.
pub const IP6T_F_GOTO: u8 = 0x04;
/// `IP6T_F_MASK`: every known flag (`ip6_checkentry`).
pub const IP6T_F_MASK: u8 = 0x07;
/// `IP6T_INV_VIA_IN`.
pub const IP6T_INV_VIA_IN: u8 = 0x01;
/// `IP6T_INV_VIA_OUT`.
pub const IP6T_INV_VIA_OUT: u8 = 0x02;
/// `IP6T_INV_TOS`.
pub const IP6T_INV_TOS: u8 = 0x04;
/// `IP6T_INV_SRCIP`.
pub const IP6T_INV_SRCIP: u8 = 0x08;
/// `IP6T_INV_DSTIP`.
pub const IP6T_INV_DSTIP: u8 = 0x10;
/// `IP6T_INV_FRAG` (has no meaning for IPv6; ip6_checkentry accepts it).
pub const IP6T_INV_FRAG: u8 = 0x20;
/// `IP6T_INV_PROTO`.
pub const IP6T_INV_PROTO: u8 = 0x40;
/// `IP6T_INV_MASK`: every known invflag (`ip6_checkentry`).
pub const IP6T_INV_MASK: u8 = 0x7f;
/// `IP6T_ICMP_INV`: invert the icmp6 type/code test.
pub const IP6T_ICMP_INV: u8 = 0x01;
/// `IP6T_HL_EQ` (ip6t_hl_info.mode).
pub const IP6T_HL_EQ: u8 = 0;
/// `IP6T_HL_NE`.
pub const IP6T_HL_NE: u8 = 1;
/// `IP6T_HL_LT`.
pub const IP6T_HL_LT: u8 = 2;
/// `IP6T_HL_GT`.
pub const IP6T_HL_GT: u8 = 3;
/// `IP6T_FRAG_IDS`.
pub const IP6T_FRAG_IDS: u8 = 0x01;
/// `IP6T_FRAG_LEN`.
pub const IP6T_FRAG_LEN: u8 = 0x02;
/// `IP6T_FRAG_RES`.
pub const IP6T_FRAG_RES: u8 = 0x04;
/// `IP6T_FRAG_FST`.
pub const IP6T_FRAG_FST: u8 = 0x08;
/// `IP6T_FRAG_MF`.
pub const IP6T_FRAG_MF: u8 = 0x10;
/// `IP6T_FRAG_NMF`.
pub const IP6T_FRAG_NMF: u8 = 0x20;
/// `IP6T_FRAG_INV_IDS`.
pub const IP6T_FRAG_INV_IDS: u8 = 0x01;
/// `IP6T_FRAG_INV_LEN`.
pub const IP6T_FRAG_INV_LEN: u8 = 0x02;
/// `IP6T_FRAG_INV_MASK`.
pub const IP6T_FRAG_INV_MASK: u8 = 0x03;
/// `IP6T_OPTS_LEN`.
pub const IP6T_OPTS_LEN: u8 = 0x01;
/// `IP6T_OPTS_OPTS`.
pub const IP6T_OPTS_OPTS: u8 = 0x02;
/// `IP6T_OPTS_NSTRICT` (refused by `hbh_mt6_check`: not implemented).
pub const IP6T_OPTS_NSTRICT: u8 = 0x04;
/// `IP6T_OPTS_INV_LEN`.
pub const IP6T_OPTS_INV_LEN: u8 = 0x01;
/// `IP6T_OPTS_INV_MASK`.
pub const IP6T_OPTS_INV_MASK: u8 = 0x01;
/// `IP6T_OPTS_OPTSNR`: size of `ip6t_opts.opts`.
pub const IP6T_OPTS_OPTSNR: usize = 16;
/// `IP6T_RT_TYP`.
pub const IP6T_RT_TYP: u8 = 0x01;
/// `IP6T_RT_SGS`.
pub const IP6T_RT_SGS: u8 = 0x02;
/// `IP6T_RT_LEN`.
pub const IP6T_RT_LEN: u8 = 0x04;
/// `IP6T_RT_RES`.
pub const IP6T_RT_RES: u8 = 0x08;
/// `IP6T_RT_FST_MASK`.
pub const IP6T_RT_FST_MASK: u8 = 0x30;
/// `IP6T_RT_FST`.
pub const IP6T_RT_FST: u8 = 0x10;
/// `IP6T_RT_FST_NSTRICT`.
pub const IP6T_RT_FST_NSTRICT: u8 = 0x20;
/// `IP6T_RT_INV_TYP`.
pub const IP6T_RT_INV_TYP: u8 = 0x01;
/// `IP6T_RT_INV_SGS`.
pub const IP6T_RT_INV_SGS: u8 = 0x02;
/// `IP6T_RT_INV_LEN`.
pub const IP6T_RT_INV_LEN: u8 = 0x04;
/// `IP6T_RT_INV_MASK`.
pub const IP6T_RT_INV_MASK: u8 = 0x07;
/// `IP6T_RT_HOPS`: size of `ip6t_rt.addrs`.
pub const IP6T_RT_HOPS: usize = 16;
/// `IP6T_ICMP6_NO_ROUTE` (`enum ip6t_reject_with`).
pub const IP6T_ICMP6_NO_ROUTE: u32 = 0;
/// `IP6T_ICMP6_ADM_PROHIBITED`.
pub const IP6T_ICMP6_ADM_PROHIBITED: u32 = 1;
/// `IP6T_ICMP6_NOT_NEIGHBOUR`.
pub const IP6T_ICMP6_NOT_NEIGHBOUR: u32 = 2;
/// `IP6T_ICMP6_ADDR_UNREACH`.
pub const IP6T_ICMP6_ADDR_UNREACH: u32 = 3;
/// `IP6T_ICMP6_PORT_UNREACH`.
pub const IP6T_ICMP6_PORT_UNREACH: u32 = 4;
/// `IP6T_ICMP6_ECHOREPLY` (refused by `reject_tg6_check`).
pub const IP6T_ICMP6_ECHOREPLY: u32 = 5;
/// `IP6T_TCP_RESET`.
pub const IP6T_TCP_RESET: u32 = 6;
/// `IP6T_ICMP6_POLICY_FAIL`.
pub const IP6T_ICMP6_POLICY_FAIL: u32 = 7;
/// `IP6T_ICMP6_REJECT_ROUTE`.
pub const IP6T_ICMP6_REJECT_ROUTE: u32 = 8;
/// `ETH_ALEN`.
pub const ETH_ALEN: usize = 6;
/// `IP6T_SO_GET_REVISION_MATCH`.
pub const IP6T_SO_GET_REVISION_MATCH: u32 = 68;
/// `IP6T_SO_GET_REVISION_TARGET`.
pub const IP6T_SO_GET_REVISION_TARGET: u32 = 69;

/// `IPT_F_FRAG`: the rule only matches non-first fragments (`-f`).
pub const IPT_F_FRAG: u8 = 0x01;
/// `IPT_F_GOTO`: the standard target jump is a goto (`-g`).
pub const IPT_F_GOTO: u8 = 0x02;
/// `IPT_F_MASK`: all valid `ipt_ip.flags` bits.
pub const IPT_F_MASK: u8 = 0x03;
/// `IPT_INV_VIA_IN`: invert `-i`.
pub const IPT_INV_VIA_IN: u8 = 0x01;
/// `IPT_INV_VIA_OUT`: invert `-o`.
pub const IPT_INV_VIA_OUT: u8 = 0x02;
/// `IPT_INV_TOS`: accepted by the kernel, never used by iptables.
pub const IPT_INV_TOS: u8 = 0x04;
/// `IPT_INV_SRCIP`: invert `-s`.
pub const IPT_INV_SRCIP: u8 = 0x08;
/// `IPT_INV_DSTIP`: invert `-d`.
pub const IPT_INV_DSTIP: u8 = 0x10;
/// `IPT_INV_FRAG`: invert `-f`.
pub const IPT_INV_FRAG: u8 = 0x20;
/// `IPT_INV_PROTO` (= `XT_INV_PROTO`): invert `-p`.
pub const IPT_INV_PROTO: u8 = 0x40;
/// `IPT_INV_MASK`: all valid `ipt_ip.invflags` bits.
pub const IPT_INV_MASK: u8 = 0x7f;

/// `XT_TCP_INV_SRCPT`.
pub const XT_TCP_INV_SRCPT: u8 = 0x01;
/// `XT_TCP_INV_DSTPT`.
pub const XT_TCP_INV_DSTPT: u8 = 0x02;
/// `XT_TCP_INV_FLAGS`.
pub const XT_TCP_INV_FLAGS: u8 = 0x04;
/// `XT_TCP_INV_OPTION`.
pub const XT_TCP_INV_OPTION: u8 = 0x08;
/// `XT_TCP_INV_MASK`.
pub const XT_TCP_INV_MASK: u8 = 0x0f;
/// `XT_UDP_INV_SRCPT`.
pub const XT_UDP_INV_SRCPT: u8 = 0x01;
/// `XT_UDP_INV_DSTPT`.
pub const XT_UDP_INV_DSTPT: u8 = 0x02;
/// `XT_UDP_INV_MASK`.
pub const XT_UDP_INV_MASK: u8 = 0x03;
/// `IPT_ICMP_INV`.
pub const IPT_ICMP_INV: u8 = 0x01;
/// `XT_MULTIPORT_SOURCE`.
pub const XT_MULTIPORT_SOURCE: u8 = 0;
/// `XT_MULTIPORT_DESTINATION`.
pub const XT_MULTIPORT_DESTINATION: u8 = 1;
/// `XT_MULTIPORT_EITHER`.
pub const XT_MULTIPORT_EITHER: u8 = 2;
/// `XT_MULTI_PORTS`: maximum number of ports of multiport.
pub const XT_MULTI_PORTS: usize = 15;
/// `IPRANGE_SRC`.
pub const IPRANGE_SRC: u8 = 1 << 0;
/// `IPRANGE_DST`.
pub const IPRANGE_DST: u8 = 1 << 1;
/// `IPRANGE_SRC_INV`.
pub const IPRANGE_SRC_INV: u8 = 1 << 4;
/// `IPRANGE_DST_INV`.
pub const IPRANGE_DST_INV: u8 = 1 << 5;
/// `XT_MAX_COMMENT_LEN`.
pub const XT_MAX_COMMENT_LEN: usize = 256;

/// `XT_CONNTRACK_STATE`: match `state_mask` (`--ctstate`, and `-m state` through the alias).
pub const XT_CONNTRACK_STATE: u16 = 1 << 0;
/// `XT_CONNTRACK_PROTO`: match `l4proto` (`--ctproto`).
pub const XT_CONNTRACK_PROTO: u16 = 1 << 1;
/// `XT_CONNTRACK_ORIGSRC`: match the original source address (`--ctorigsrc`).
pub const XT_CONNTRACK_ORIGSRC: u16 = 1 << 2;
/// `XT_CONNTRACK_ORIGDST`: `--ctorigdst`.
pub const XT_CONNTRACK_ORIGDST: u16 = 1 << 3;
/// `XT_CONNTRACK_REPLSRC`: `--ctreplsrc`.
pub const XT_CONNTRACK_REPLSRC: u16 = 1 << 4;
/// `XT_CONNTRACK_REPLDST`: `--ctrepldst`.
pub const XT_CONNTRACK_REPLDST: u16 = 1 << 5;
/// `XT_CONNTRACK_STATUS`: match `status_mask` against the IPS_* bits (`--ctstatus`).
pub const XT_CONNTRACK_STATUS: u16 = 1 << 6;
/// `XT_CONNTRACK_EXPIRES`: remaining lifetime in seconds within `expires_min..=expires_max`.
pub const XT_CONNTRACK_EXPIRES: u16 = 1 << 7;
/// `XT_CONNTRACK_ORIGSRC_PORT`: `--ctorigsrcport`.
pub const XT_CONNTRACK_ORIGSRC_PORT: u16 = 1 << 8;
/// `XT_CONNTRACK_ORIGDST_PORT`: `--ctorigdstport`.
pub const XT_CONNTRACK_ORIGDST_PORT: u16 = 1 << 9;
/// `XT_CONNTRACK_REPLSRC_PORT`: `--ctreplsrcport`.
pub const XT_CONNTRACK_REPLSRC_PORT: u16 = 1 << 10;
/// `XT_CONNTRACK_REPLDST_PORT`: `--ctrepldstport`.
pub const XT_CONNTRACK_REPLDST_PORT: u16 = 1 << 11;
/// `XT_CONNTRACK_DIRECTION`: `--ctdir`; packets in the ORIGINAL direction match, or with the
/// invert bit (which iptables sets for `--ctdir REPLY`) those in the REPLY direction.
pub const XT_CONNTRACK_DIRECTION: u16 = 1 << 12;
/// `XT_CONNTRACK_STATE_ALIAS`: set by iptables for `-m state` sent as conntrack; the kernel
/// ignores it (iptables-save prints the rule as `-m state`).
pub const XT_CONNTRACK_STATE_ALIAS: u16 = 1 << 13;
/// `XT_CONNTRACK_STATE_INVALID` (= `XT_STATE_INVALID`): no conntrack entry.
pub const XT_CONNTRACK_STATE_INVALID: u16 = 1 << 0;
/// `XT_CONNTRACK_STATE_BIT(IP_CT_ESTABLISHED)`.
pub const XT_CONNTRACK_STATE_ESTABLISHED: u16 = 1 << 1;
/// `XT_CONNTRACK_STATE_BIT(IP_CT_RELATED)`.
pub const XT_CONNTRACK_STATE_RELATED: u16 = 1 << 2;
/// `XT_CONNTRACK_STATE_BIT(IP_CT_NEW)`.
pub const XT_CONNTRACK_STATE_NEW: u16 = 1 << 3;
/// `XT_CONNTRACK_STATE_SNAT` (`1 << (IP_CT_NUMBER + 1)`): the connection is source-NATed.
pub const XT_CONNTRACK_STATE_SNAT: u16 = 1 << 6;
/// `XT_CONNTRACK_STATE_DNAT`: the connection is destination-NATed.
pub const XT_CONNTRACK_STATE_DNAT: u16 = 1 << 7;
/// `XT_CONNTRACK_STATE_UNTRACKED` (`1 << (IP_CT_NUMBER + 3)`).
pub const XT_CONNTRACK_STATE_UNTRACKED: u16 = 1 << 8;
/// `XT_STATE_UNTRACKED` of the state match (`1 << (IP_CT_NUMBER + 1)`); its INVALID,
/// ESTABLISHED, RELATED and NEW bits are conntrack's.
pub const XT_STATE_UNTRACKED: u32 = 1 << 6;

/// `enum ipt_reject_with`: ICMP network unreachable.
pub const IPT_ICMP_NET_UNREACHABLE: u32 = 0;
/// ICMP host unreachable.
pub const IPT_ICMP_HOST_UNREACHABLE: u32 = 1;
/// ICMP protocol unreachable.
pub const IPT_ICMP_PROT_UNREACHABLE: u32 = 2;
/// ICMP port unreachable (iptables' default).
pub const IPT_ICMP_PORT_UNREACHABLE: u32 = 3;
/// ICMP echo reply: refused by `reject_tg_check` since 2.6.
pub const IPT_ICMP_ECHOREPLY: u32 = 4;
/// ICMP network administratively prohibited.
pub const IPT_ICMP_NET_PROHIBITED: u32 = 5;
/// ICMP host administratively prohibited.
pub const IPT_ICMP_HOST_PROHIBITED: u32 = 6;
/// TCP reset (only on `-p tcp` entries).
pub const IPT_TCP_RESET: u32 = 7;
/// ICMP communication administratively prohibited (packet filtered).
pub const IPT_ICMP_ADMIN_PROHIBITED: u32 = 8;

/// `XT_LOG_TCPSEQ`: log TCP sequence numbers.
pub const XT_LOG_TCPSEQ: u8 = 0x01;
/// `XT_LOG_TCPOPT`: log TCP options.
pub const XT_LOG_TCPOPT: u8 = 0x02;
/// `XT_LOG_IPOPT`: log IP options.
pub const XT_LOG_IPOPT: u8 = 0x04;
/// `XT_LOG_UID`: log the UID owning the local socket.
pub const XT_LOG_UID: u8 = 0x08;
/// `XT_LOG_NFLOG`: unsupported, never set by iptables (the kernel does not check it).
pub const XT_LOG_NFLOG: u8 = 0x10;
/// `XT_LOG_MACDECODE`: decode the MAC header.
pub const XT_LOG_MACDECODE: u8 = 0x20;
/// `XT_LOG_MASK`: the flags iptables sets (the kernel does not check `logflags`).
pub const XT_LOG_MASK: u8 = 0x2f;
/// Size of `xt_log_info.prefix` (29 characters and a NUL).
pub const XT_LOG_PREFIX_LEN: usize = 30;

/// `NF_DROP`.
pub const NF_DROP: i32 = 0;
/// `NF_ACCEPT`.
pub const NF_ACCEPT: i32 = 1;
/// `NF_QUEUE`.
pub const NF_QUEUE: i32 = 3;
/// `NF_REPEAT`.
pub const NF_REPEAT: i32 = 4;
/// `XT_RETURN` (= `-NF_REPEAT - 1`): the standard target's RETURN verdict.
pub const XT_RETURN: i32 = -NF_REPEAT - 1;
/// Standard target verdict for ACCEPT (`-NF_ACCEPT - 1`).
pub const VERDICT_ACCEPT: i32 = -NF_ACCEPT - 1;
/// Standard target verdict for DROP (`-NF_DROP - 1`).
pub const VERDICT_DROP: i32 = -NF_DROP - 1;
/// Standard target verdict for QUEUE (`-NF_QUEUE - 1`), valid for the kernel, refused by bpfilter.
pub const VERDICT_QUEUE: i32 = -NF_QUEUE - 1;
/// `XT_STANDARD_TARGET`: the standard target's name is the empty string.
pub const XT_STANDARD_TARGET: &str = "";
/// `XT_ERROR_TARGET`.
pub const XT_ERROR_TARGET: &str = "ERROR";

/// `XT_ALIGN`: round up to the alignment of `struct _xt_align` (8 on 64-bit).
pub const fn xt_align(n: usize) -> usize {
    (n + 7) & !7
}

/// `struct xt_counters`.
#[doc(alias = "xt_counters")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtCounters {
    /// Packets.
    pub pcnt: u64,
    /// Bytes.
    pub bcnt: u64,
}

/// `struct xt_counters_info` (header of IPT_SO_SET_ADD_COUNTERS; the counters follow).
#[doc(alias = "xt_counters_info")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtCountersInfo {
    /// Table name.
    pub name: [u8; XT_TABLE_MAXNAMELEN],
    /// Number of counters that follow.
    pub num_counters: u32,
    /// Implicit C padding before the 8-aligned `counters[]`.
    pub pad: [u8; 4],
}

/// `struct xt_get_revision` (IPT_SO_GET_REVISION_MATCH/TARGET request).
#[doc(alias = "xt_get_revision")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtGetRevision {
    /// Extension name.
    pub name: [u8; XT_EXTENSION_MAXNAMELEN],
    /// Revision asked for.
    pub revision: u8,
}

/// `struct xt_entry_match` (user half of the union).
#[doc(alias = "xt_entry_match")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtEntryMatch {
    /// Size of header + payload (XT_ALIGN'ed).
    pub match_size: u16,
    /// Match name.
    pub name: [u8; XT_EXTENSION_MAXNAMELEN],
    /// Match revision.
    pub revision: u8,
}

/// `struct xt_entry_target` (user half of the union).
#[doc(alias = "xt_entry_target")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtEntryTarget {
    /// Size of header + payload (XT_ALIGN'ed).
    pub target_size: u16,
    /// Target name ("" = standard target).
    pub name: [u8; XT_EXTENSION_MAXNAMELEN],
    /// Target revision.
    pub revision: u8,
}

/// `struct xt_standard_target`.
#[doc(alias = "xt_standard_target")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtStandardTarget {
    /// Header.
    pub target: XtEntryTarget,
    /// Verdict: negative = `-NF_x - 1` or XT_RETURN, positive = jump offset.
    pub verdict: i32,
    /// Implicit C padding to the struct's 8-byte alignment.
    pub pad: [u8; 4],
}

/// `struct xt_error_target`.
#[doc(alias = "xt_error_target")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtErrorTarget {
    /// Header.
    pub target: XtEntryTarget,
    /// Chain name (user chain head) or "ERROR" (table end).
    pub errorname: [u8; XT_FUNCTION_MAXNAMELEN],
    /// Implicit C padding to the struct's 8-byte alignment.
    pub pad: [u8; 2],
}

/// `struct ipt_ip`.
#[doc(alias = "ipt_ip")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IptIp {
    /// Source address (network order bytes).
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Source mask.
    pub smsk: [u8; 4],
    /// Destination mask.
    pub dmsk: [u8; 4],
    /// Input interface name.
    pub iniface: [u8; IFNAMSIZ],
    /// Output interface name.
    pub outiface: [u8; IFNAMSIZ],
    /// Input interface mask.
    pub iniface_mask: [u8; IFNAMSIZ],
    /// Output interface mask.
    pub outiface_mask: [u8; IFNAMSIZ],
    /// Protocol, 0 = any.
    pub proto: u16,
    /// IPT_F_* flags.
    pub flags: u8,
    /// IPT_INV_* flags.
    pub invflags: u8,
}

/// `struct ipt_entry`.
#[doc(alias = "ipt_entry")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IptEntry {
    /// IP header part of the rule.
    pub ip: IptIp,
    /// Unused by the kernel, copied back as given.
    pub nfcache: u32,
    /// Offset of the target from the entry start.
    pub target_offset: u16,
    /// Size of the entry (offset of the next one).
    pub next_offset: u16,
    /// Hook bitmask the kernel computes in mark_source_chains.
    pub comefrom: u32,
    /// Packet and byte counters.
    pub counters: XtCounters,
}

/// `struct ipt_getinfo` (IPT_SO_GET_INFO).
#[doc(alias = "ipt_getinfo")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IptGetinfo {
    /// Table name.
    pub name: [u8; XT_TABLE_MAXNAMELEN],
    /// Bitmask of the hooks the table hooks into.
    pub valid_hooks: u32,
    /// Byte offset of each hook's first entry.
    pub hook_entry: [u32; NF_INET_NUMHOOKS],
    /// Byte offset of each hook's policy entry.
    pub underflow: [u32; NF_INET_NUMHOOKS],
    /// Number of entries.
    pub num_entries: u32,
    /// Size of the entries blob.
    pub size: u32,
}

/// `struct ipt_get_entries` header (IPT_SO_GET_ENTRIES; the entries follow).
#[doc(alias = "ipt_get_entries")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IptGetEntries {
    /// Table name.
    pub name: [u8; XT_TABLE_MAXNAMELEN],
    /// Size of the entries blob.
    pub size: u32,
    /// Implicit C padding before the 8-aligned `entrytable[]`.
    pub pad: [u8; 4],
}

/// `struct ipt_replace` header (IPT_SO_SET_REPLACE; the entries follow).
#[doc(alias = "ipt_replace")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IptReplace {
    /// Table name.
    pub name: [u8; XT_TABLE_MAXNAMELEN],
    /// Bitmask of valid hooks.
    pub valid_hooks: u32,
    /// Number of entries.
    pub num_entries: u32,
    /// Size of the entries blob.
    pub size: u32,
    /// Byte offset of each hook's first entry.
    pub hook_entry: [u32; NF_INET_NUMHOOKS],
    /// Byte offset of each hook's policy entry.
    pub underflow: [u32; NF_INET_NUMHOOKS],
    /// Number of entries of the table being replaced (size of the old counter array).
    pub num_counters: u32,
    /// User pointer where the kernel writes the old counters.
    pub counters: u64,
}

/// `struct ip6t_ip6`.
#[doc(alias = "ip6t_ip6")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Ip6tIp6 {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source mask.
    pub smsk: [u8; 16],
    /// Destination mask.
    pub dmsk: [u8; 16],
    /// Input interface name.
    pub iniface: [u8; IFNAMSIZ],
    /// Output interface name.
    pub outiface: [u8; IFNAMSIZ],
    /// Input interface mask.
    pub iniface_mask: [u8; IFNAMSIZ],
    /// Output interface mask.
    pub outiface_mask: [u8; IFNAMSIZ],
    /// Protocol (0 = any).
    pub proto: u16,
    /// TOS to match (unused by the kernel).
    pub tos: u8,
    /// IP6T_F_* flags.
    pub flags: u8,
    /// IP6T_INV_* flags.
    pub invflags: u8,
    /// Implicit C padding (the struct is 4-aligned through `in6_addr`).
    pub pad: [u8; 3],
}

/// `struct ip6t_entry`.
#[doc(alias = "ip6t_entry")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Ip6tEntry {
    /// IPv6 header part of the rule.
    pub ipv6: Ip6tIp6,
    /// Unused by the kernel.
    pub nfcache: u32,
    /// Offset of the target.
    pub target_offset: u16,
    /// Size of the entry.
    pub next_offset: u16,
    /// Hook bitmask computed by the kernel.
    pub comefrom: u32,
    /// Implicit C padding before the 8-aligned counters.
    pub pad: [u8; 4],
    /// Counters.
    pub counters: XtCounters,
}

/// `struct ip6t_getinfo`: same layout as `ipt_getinfo`.
#[doc(alias = "ip6t_getinfo")]
pub type Ip6tGetinfo = IptGetinfo;
/// `struct ip6t_get_entries`: same header layout as `ipt_get_entries`.
#[doc(alias = "ip6t_get_entries")]
pub type Ip6tGetEntries = IptGetEntries;
/// `struct ip6t_replace`: same header layout as `ipt_replace`.
#[doc(alias = "ip6t_replace")]
pub type Ip6tReplace = IptReplace;

/// `struct xt_tcp` (match "tcp", revision 0). Ports in host order.
#[doc(alias = "xt_tcp")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtTcp {
    /// Source port range (inclusive).
    pub spts: [u16; 2],
    /// Destination port range (inclusive).
    pub dpts: [u16; 2],
    /// TCP option kind to look for (0 = none).
    pub option: u8,
    /// TCP flags mask.
    pub flg_mask: u8,
    /// TCP flags that must be set (within mask).
    pub flg_cmp: u8,
    /// XT_TCP_INV_* flags.
    pub invflags: u8,
}

/// `struct xt_udp` (match "udp", revision 0). Ports in host order.
#[doc(alias = "xt_udp")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtUdp {
    /// Source port range (inclusive).
    pub spts: [u16; 2],
    /// Destination port range (inclusive).
    pub dpts: [u16; 2],
    /// XT_UDP_INV_* flags.
    pub invflags: u8,
    /// Implicit C padding; inside `matchsize`, so the kernel copies it back as given.
    pub pad: u8,
}

/// `struct ipt_icmp` (match "icmp", revision 0).
#[doc(alias = "ipt_icmp")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct IptIcmp {
    /// ICMP type (0xff = any).
    pub icmp_type: u8,
    /// Code range (inclusive).
    pub code: [u8; 2],
    /// IPT_ICMP_INV.
    pub invflags: u8,
}

/// `struct ip6t_icmp` (match "icmp6", revision 0).
#[doc(alias = "ip6t_icmp")]
pub type Ip6tIcmp = IptIcmp;

/// `struct xt_multiport_v1` (match "multiport", revision 1). Ports in host order.
#[doc(alias = "xt_multiport_v1")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtMultiportV1 {
    /// XT_MULTIPORT_SOURCE / DESTINATION / EITHER.
    pub flags: u8,
    /// Number of ports used.
    pub count: u8,
    /// Ports.
    pub ports: [u16; XT_MULTI_PORTS],
    /// Non-zero: `ports[i]..=ports[i+1]` is a range.
    pub pflags: [u8; XT_MULTI_PORTS],
    /// Invert the result.
    pub invert: u8,
}

/// `struct xt_iprange_mtinfo` (match "iprange", revision 1). Addresses are `union nf_inet_addr`.
#[doc(alias = "xt_iprange_mtinfo")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtIprangeMtinfo {
    /// Lowest source address (IPv4: first 4 bytes, network order).
    pub src_min: [u8; 16],
    /// Highest source address.
    pub src_max: [u8; 16],
    /// Lowest destination address.
    pub dst_min: [u8; 16],
    /// Highest destination address.
    pub dst_max: [u8; 16],
    /// IPRANGE_* flags.
    pub flags: u8,
    /// Implicit C padding; inside `matchsize`, so the kernel copies it back as given.
    pub pad: [u8; 3],
}

/// `struct xt_mark_mtinfo1` (match "mark", revision 1): `(skb->mark & mask) == mark`,
/// inverted by `invert`.
#[doc(alias = "xt_mark_mtinfo1")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtMarkMtinfo1 {
    /// Value compared.
    pub mark: u32,
    /// Mask applied to skb->mark first.
    pub mask: u32,
    /// `!` (any non-zero value inverts).
    pub invert: u8,
    /// Implicit C padding; inside `matchsize`, so the kernel copies it back as given.
    pub pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<XtMarkMtinfo1>() == 12);

/// `struct xt_pkttype_info` (match "pkttype", revision 0): the link-layer packet type
/// (PACKET_HOST 0, BROADCAST 1, MULTICAST 2, OTHERHOST 3, OUTGOING 4), inverted by `invert`.
#[doc(alias = "xt_pkttype_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtPkttypeInfo {
    /// PACKET_* type compared.
    pub pkttype: i32,
    /// `!` (any non-zero value inverts).
    pub invert: i32,
}
const _: () = assert!(core::mem::size_of::<XtPkttypeInfo>() == 8);

/// `struct xt_tcpmss_match_info` (match "tcpmss", revision 0): the MSS option's value within
/// `[mss_min, mss_max]`, inverted by `invert`. Six bytes: the last is C padding, which the
/// kernel copies back as given (only the XT_ALIGN tail after it is zeroed).
#[doc(alias = "xt_tcpmss_match_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtTcpmssMatchInfo {
    /// Lowest MSS matched.
    pub mss_min: u16,
    /// Highest MSS matched.
    pub mss_max: u16,
    /// `!`: iptables sends 1. The kernel XORs the range test (0 or 1) with the byte, so a
    /// value above 1 makes the match hold whatever the MSS.
    pub invert: u8,
    /// C padding of the kernel struct.
    pub pad: u8,
}
const _: () = assert!(core::mem::size_of::<XtTcpmssMatchInfo>() == 6);

/// `struct xt_comment_info` (match "comment", revision 0).
#[doc(alias = "xt_comment_info")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtCommentInfo {
    /// NUL-terminated comment (the kernel copies all 256 bytes back).
    pub comment: [u8; XT_MAX_COMMENT_LEN],
}

/// `struct xt_conntrack_mtinfo1` (match "conntrack", revision 1). Addresses are
/// `union nf_inet_addr` (IPv4: first 4 bytes); ports in network order, single values.
#[doc(alias = "xt_conntrack_mtinfo1")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtConntrackMtinfo1 {
    /// Original direction source address.
    pub origsrc_addr: [u8; 16],
    /// Its mask.
    pub origsrc_mask: [u8; 16],
    /// Original direction destination address.
    pub origdst_addr: [u8; 16],
    /// Its mask.
    pub origdst_mask: [u8; 16],
    /// Reply direction source address.
    pub replsrc_addr: [u8; 16],
    /// Its mask.
    pub replsrc_mask: [u8; 16],
    /// Reply direction destination address.
    pub repldst_addr: [u8; 16],
    /// Its mask.
    pub repldst_mask: [u8; 16],
    /// Lowest remaining lifetime in seconds (`--ctexpire`).
    pub expires_min: u32,
    /// Highest remaining lifetime in seconds.
    pub expires_max: u32,
    /// Layer 4 protocol of the connection (`--ctproto`).
    pub l4proto: u16,
    /// Original source port.
    pub origsrc_port: network_endian::U16,
    /// Original destination port.
    pub origdst_port: network_endian::U16,
    /// Reply source port.
    pub replsrc_port: network_endian::U16,
    /// Reply destination port.
    pub repldst_port: network_endian::U16,
    /// XT_CONNTRACK_* tests to make.
    pub match_flags: u16,
    /// XT_CONNTRACK_* tests to invert.
    pub invert_flags: u16,
    /// XT_CONNTRACK_STATE_* bits (only the low 8 fit: no UNTRACKED).
    pub state_mask: u8,
    /// IPS_* bits (only the low 8).
    pub status_mask: u8,
}

/// `struct xt_conntrack_mtinfo2` (match "conntrack", revision 2): revision 1 with 16-bit
/// state and status masks.
#[doc(alias = "xt_conntrack_mtinfo2")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtConntrackMtinfo2 {
    /// Original direction source address.
    pub origsrc_addr: [u8; 16],
    /// Its mask.
    pub origsrc_mask: [u8; 16],
    /// Original direction destination address.
    pub origdst_addr: [u8; 16],
    /// Its mask.
    pub origdst_mask: [u8; 16],
    /// Reply direction source address.
    pub replsrc_addr: [u8; 16],
    /// Its mask.
    pub replsrc_mask: [u8; 16],
    /// Reply direction destination address.
    pub repldst_addr: [u8; 16],
    /// Its mask.
    pub repldst_mask: [u8; 16],
    /// Lowest remaining lifetime in seconds.
    pub expires_min: u32,
    /// Highest remaining lifetime in seconds.
    pub expires_max: u32,
    /// Layer 4 protocol of the connection.
    pub l4proto: u16,
    /// Original source port.
    pub origsrc_port: network_endian::U16,
    /// Original destination port.
    pub origdst_port: network_endian::U16,
    /// Reply source port.
    pub replsrc_port: network_endian::U16,
    /// Reply destination port.
    pub repldst_port: network_endian::U16,
    /// XT_CONNTRACK_* tests to make.
    pub match_flags: u16,
    /// XT_CONNTRACK_* tests to invert.
    pub invert_flags: u16,
    /// XT_CONNTRACK_STATE_* bits.
    pub state_mask: u16,
    /// IPS_* bits.
    pub status_mask: u16,
    /// Implicit C tail padding (the struct is 4-aligned); inside `matchsize`, so the kernel
    /// copies it back as given.
    pub pad: [u8; 2],
}

/// `struct xt_conntrack_mtinfo3` (match "conntrack", revision 3, what iptables 1.8.9 sends for
/// both `-m conntrack` and `-m state`): revision 2 with port ranges, ports in host order.
#[doc(alias = "xt_conntrack_mtinfo3")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtConntrackMtinfo3 {
    /// Original direction source address.
    pub origsrc_addr: [u8; 16],
    /// Its mask.
    pub origsrc_mask: [u8; 16],
    /// Original direction destination address.
    pub origdst_addr: [u8; 16],
    /// Its mask.
    pub origdst_mask: [u8; 16],
    /// Reply direction source address.
    pub replsrc_addr: [u8; 16],
    /// Its mask.
    pub replsrc_mask: [u8; 16],
    /// Reply direction destination address.
    pub repldst_addr: [u8; 16],
    /// Its mask.
    pub repldst_mask: [u8; 16],
    /// Lowest remaining lifetime in seconds.
    pub expires_min: u32,
    /// Highest remaining lifetime in seconds.
    pub expires_max: u32,
    /// Layer 4 protocol of the connection.
    pub l4proto: u16,
    /// Original source port range start.
    pub origsrc_port: u16,
    /// Original destination port range start.
    pub origdst_port: u16,
    /// Reply source port range start.
    pub replsrc_port: u16,
    /// Reply destination port range start.
    pub repldst_port: u16,
    /// XT_CONNTRACK_* tests to make.
    pub match_flags: u16,
    /// XT_CONNTRACK_* tests to invert.
    pub invert_flags: u16,
    /// XT_CONNTRACK_STATE_* bits.
    pub state_mask: u16,
    /// IPS_* bits.
    pub status_mask: u16,
    /// Original source port range end (inclusive).
    pub origsrc_port_high: u16,
    /// Original destination port range end.
    pub origdst_port_high: u16,
    /// Reply source port range end.
    pub replsrc_port_high: u16,
    /// Reply destination port range end.
    pub repldst_port_high: u16,
    /// Implicit C tail padding; inside `matchsize`, so the kernel copies it back as given.
    pub pad: [u8; 2],
}

/// `struct xt_state_info` (match "state", revision 0).
#[doc(alias = "xt_state_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtStateInfo {
    /// XT_STATE_INVALID, XT_STATE_BIT(ctinfo) (same bits as conntrack's) and
    /// XT_STATE_UNTRACKED.
    pub statemask: u32,
}

/// `struct xt_rateinfo` (match "limit", revision 0): a token bucket of `burst` packets refilled
/// at one packet per `avg / XT_LIMIT_SCALE` seconds. Everything after `burst` belongs to the
/// kernel: xt_limit's `usersize` is `offsetof(prev)`, so GET_ENTRIES shows zeros there whatever
/// was sent, yet `limit_mt_check` takes a non-zero `cost` (with `credit_cap`) as given.
#[doc(alias = "xt_rateinfo")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtRateinfo {
    /// Average seconds between packets, times [`XT_LIMIT_SCALE`].
    pub avg: u32,
    /// Bucket size in packets.
    pub burst: u32,
    /// Kernel-internal (moved to `xt_limit_priv`).
    pub prev: u64,
    /// Kernel-internal (moved to `xt_limit_priv`).
    pub credit: u32,
    /// Bucket size in credits (set by the kernel when `cost` is 0).
    pub credit_cap: u32,
    /// Credits one packet costs (set by the kernel when 0).
    pub cost: u32,
    /// Implicit C padding before `master`.
    pub pad: u32,
    /// Kernel-internal pointer to the shared state.
    pub master: u64,
}

/// `XT_LIMIT_SCALE`: `avg` is in 1/10000 s.
pub const XT_LIMIT_SCALE: u32 = 10000;
/// The bytes of `xt_rateinfo` the kernel copies back (`usersize`).
pub const XT_RATEINFO_USERSIZE: usize = 8;

/// `struct xt_recent_mtinfo` (match "recent", revision 0): revision 1 without the mask (the
/// kernel then masks with all ones).
#[doc(alias = "xt_recent_mtinfo")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtRecentMtinfo {
    /// `--seconds`: only stamps this recent count (0: all).
    pub seconds: u32,
    /// `--hitcount`: stamps needed (0: one).
    pub hit_count: u32,
    /// XT_RECENT_* operation and modifiers.
    pub check_set: u8,
    /// `!`.
    pub invert: u8,
    /// `--name`, NUL-terminated.
    pub name: [u8; XT_RECENT_NAME_LEN],
    /// XT_RECENT_SOURCE or XT_RECENT_DEST.
    pub side: u8,
    /// Implicit C padding to the struct's 4-byte alignment (inside `matchsize`).
    pub pad: u8,
}

/// `struct xt_recent_mtinfo_v1` (match "recent", revision 1): revision 0 and `--mask`, a
/// `union nf_inet_addr` (IPv4: its first 4 bytes).
#[doc(alias = "xt_recent_mtinfo_v1")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtRecentMtinfoV1 {
    /// The revision 0 fields.
    pub v0: XtRecentMtinfo,
    /// `--mask`: applied to the address before the list is searched or written.
    pub mask: [u8; 16],
}

/// Bytes of `--name` with its NUL.
pub const XT_RECENT_NAME_LEN: usize = 200;
/// `--rcheck`.
pub const XT_RECENT_CHECK: u8 = 1 << 0;
/// `--set`.
pub const XT_RECENT_SET: u8 = 1 << 1;
/// `--update`.
pub const XT_RECENT_UPDATE: u8 = 1 << 2;
/// `--remove`.
pub const XT_RECENT_REMOVE: u8 = 1 << 3;
/// `--rttl`.
pub const XT_RECENT_TTL: u8 = 1 << 4;
/// `--reap`.
pub const XT_RECENT_REAP: u8 = 1 << 5;
/// `--rsource` (the default).
pub const XT_RECENT_SOURCE: u8 = 0;
/// `--rdest`.
pub const XT_RECENT_DEST: u8 = 1;

/// `struct hashlimit_cfg1` (inside `xt_hashlimit_mtinfo1`): rates in 1/[`XT_HASHLIMIT_SCALE`]
/// seconds, timings in milliseconds.
#[doc(alias = "hashlimit_cfg1")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct HashlimitCfg1 {
    /// XT_HASHLIMIT_* mode bits.
    pub mode: u32,
    /// Average time between packets (or bytes per credit in byte mode), scaled.
    pub avg: u32,
    /// Bucket size (`--hashlimit-burst`).
    pub burst: u32,
    /// `--hashlimit-htable-size` (0: from the RAM size).
    pub size: u32,
    /// `--hashlimit-htable-max` (0: 8 * size).
    pub max: u32,
    /// `--hashlimit-htable-gcinterval`, ms.
    pub gc_interval: u32,
    /// `--hashlimit-htable-expire`, ms.
    pub expire: u32,
    /// `--hashlimit-srcmask`.
    pub srcmask: u8,
    /// `--hashlimit-dstmask`.
    pub dstmask: u8,
    /// Implicit C tail padding (inside `usersize`: copied back as given).
    pub pad: [u8; 2],
}

/// `struct hashlimit_cfg2` (inside `xt_hashlimit_mtinfo2`): 64-bit rates in
/// 1/[`XT_HASHLIMIT_SCALE_V2`] seconds.
#[doc(alias = "hashlimit_cfg2")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct HashlimitCfg2 {
    /// Average time between packets, scaled.
    pub avg: u64,
    /// Bucket size.
    pub burst: u64,
    /// XT_HASHLIMIT_* mode bits.
    pub mode: u32,
    /// Buckets.
    pub size: u32,
    /// Entries at most.
    pub max: u32,
    /// Garbage collection interval, ms.
    pub gc_interval: u32,
    /// Idle time after which an entry goes, ms.
    pub expire: u32,
    /// `--hashlimit-srcmask`.
    pub srcmask: u8,
    /// `--hashlimit-dstmask`.
    pub dstmask: u8,
    /// Implicit C tail padding.
    pub pad: [u8; 2],
}

/// `struct hashlimit_cfg3` (inside `xt_hashlimit_mtinfo3`, and the kernel's table config):
/// revision 2 with the rate-match interval.
#[doc(alias = "hashlimit_cfg3")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct HashlimitCfg3 {
    /// Average time between packets, scaled.
    pub avg: u64,
    /// Bucket size.
    pub burst: u64,
    /// XT_HASHLIMIT_* mode bits.
    pub mode: u32,
    /// Buckets.
    pub size: u32,
    /// Entries at most.
    pub max: u32,
    /// Garbage collection interval, ms.
    pub gc_interval: u32,
    /// Idle time after which an entry goes, ms.
    pub expire: u32,
    /// `--hashlimit-rate-interval`, seconds (rate-match mode).
    pub interval: u32,
    /// `--hashlimit-srcmask`.
    pub srcmask: u8,
    /// `--hashlimit-dstmask`.
    pub dstmask: u8,
    /// Implicit C tail padding.
    pub pad: [u8; 6],
}

/// `struct xt_hashlimit_mtinfo1` (match "hashlimit", revision 1). The kernel copies back
/// `usersize` bytes (up to `hinfo`), zeroes after.
#[doc(alias = "xt_hashlimit_mtinfo1")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtHashlimitMtinfo1 {
    /// `--hashlimit-name`, NUL-terminated.
    pub name: [u8; 16],
    /// The configuration.
    pub cfg: HashlimitCfg1,
    /// Kernel-internal table pointer (never shown).
    pub hinfo: u64,
}

/// `struct xt_hashlimit_mtinfo2` (match "hashlimit", revision 2).
#[doc(alias = "xt_hashlimit_mtinfo2")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtHashlimitMtinfo2 {
    /// `--hashlimit-name`, NUL-terminated (NAME_MAX bytes).
    pub name: [u8; XT_HASHLIMIT_NAME_MAX],
    /// Implicit C padding before the 8-aligned cfg (inside `usersize`).
    pub pad: u8,
    /// The configuration.
    pub cfg: HashlimitCfg2,
    /// Kernel-internal table pointer (never shown).
    pub hinfo: u64,
}

/// `struct xt_hashlimit_mtinfo3` (match "hashlimit", revision 3, what iptables 1.8.9 sends).
#[doc(alias = "xt_hashlimit_mtinfo3")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XtHashlimitMtinfo3 {
    /// `--hashlimit-name`, NUL-terminated (NAME_MAX bytes).
    pub name: [u8; XT_HASHLIMIT_NAME_MAX],
    /// Implicit C padding before the 8-aligned cfg (inside `usersize`).
    pub pad: u8,
    /// The configuration.
    pub cfg: HashlimitCfg3,
    /// Kernel-internal table pointer (never shown).
    pub hinfo: u64,
}

/// `NAME_MAX`: bytes of a revision 2 or 3 name field.
pub const XT_HASHLIMIT_NAME_MAX: usize = 255;
/// `XT_HASHLIMIT_SCALE`: revision 1 rates are in 1/10000 s.
pub const XT_HASHLIMIT_SCALE: u64 = 10_000;
/// `XT_HASHLIMIT_SCALE_v2`: revision 2 and 3 rates are in 1/1000000 s.
pub const XT_HASHLIMIT_SCALE_V2: u64 = 1_000_000;
/// `XT_HASHLIMIT_BYTE_SHIFT`: byte mode counts in 16-byte chunks.
pub const XT_HASHLIMIT_BYTE_SHIFT: u32 = 4;
/// `--hashlimit-mode dstip`.
pub const XT_HASHLIMIT_HASH_DIP: u32 = 1 << 0;
/// `--hashlimit-mode dstport`.
pub const XT_HASHLIMIT_HASH_DPT: u32 = 1 << 1;
/// `--hashlimit-mode srcip`.
pub const XT_HASHLIMIT_HASH_SIP: u32 = 1 << 2;
/// `--hashlimit-mode srcport`.
pub const XT_HASHLIMIT_HASH_SPT: u32 = 1 << 3;
/// `--hashlimit-above` (match over the limit).
pub const XT_HASHLIMIT_INVERT: u32 = 1 << 4;
/// Byte mode (`--hashlimit-upto 10kb/s`).
pub const XT_HASHLIMIT_BYTES: u32 = 1 << 5;
/// `--hashlimit-rate-match` (revision 3).
pub const XT_HASHLIMIT_RATE_MATCH: u32 = 1 << 6;
/// Every mode bit the kernel knows (`XT_HASHLIMIT_ALL`).
pub const XT_HASHLIMIT_ALL: u32 = 0x7f;

/// `struct xt_addrtype_info` (match "addrtype", revision 0): source and destination
/// address-type masks (bit `1 << RTN_*`), each with its own inversion.
#[doc(alias = "xt_addrtype_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtAddrtypeInfo {
    /// `--src-type` mask.
    pub source: u16,
    /// `--dst-type` mask.
    pub dest: u16,
    /// `! --src-type` (any non-zero value).
    pub invert_source: u32,
    /// `! --dst-type` (any non-zero value).
    pub invert_dest: u32,
}

/// `struct xt_addrtype_info_v1` (match "addrtype", revision 1).
#[doc(alias = "xt_addrtype_info_v1")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtAddrtypeInfoV1 {
    /// `--src-type` mask.
    pub source: u16,
    /// `--dst-type` mask.
    pub dest: u16,
    /// XT_ADDRTYPE_* flags.
    pub flags: u32,
}

/// `! --src-type`.
pub const XT_ADDRTYPE_INVERT_SOURCE: u32 = 0x1;
/// `! --dst-type`.
pub const XT_ADDRTYPE_INVERT_DEST: u32 = 0x2;
/// `--limit-iface-in`.
pub const XT_ADDRTYPE_LIMIT_IFACE_IN: u32 = 0x4;
/// `--limit-iface-out`.
pub const XT_ADDRTYPE_LIMIT_IFACE_OUT: u32 = 0x8;
/// `XT_ADDRTYPE_BROADCAST` (`1 << RTN_BROADCAST`): no such IPv6 address.
pub const XT_ADDRTYPE_BROADCAST: u16 = 1 << 3;
/// `XT_ADDRTYPE_BLACKHOLE` (`1 << RTN_BLACKHOLE`): not matched for IPv6.
pub const XT_ADDRTYPE_BLACKHOLE: u16 = 1 << 6;
/// `XT_ADDRTYPE_PROHIBIT` (`1 << RTN_PROHIBIT`): this type and every higher one (THROW, NAT,
/// XRESOLVE) are not matched for IPv6.
pub const XT_ADDRTYPE_PROHIBIT: u16 = 1 << 8;

/// `struct xt_owner_match_info` (match "owner", revision 1).
#[doc(alias = "xt_owner_match_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtOwnerMatchInfo {
    /// Lowest fsuid.
    pub uid_min: u32,
    /// Highest fsuid.
    pub uid_max: u32,
    /// Lowest fsgid.
    pub gid_min: u32,
    /// Highest fsgid.
    pub gid_max: u32,
    /// XT_OWNER_* tests to make.
    pub r#match: u8,
    /// XT_OWNER_* tests inverted.
    pub invert: u8,
    /// Implicit C padding; inside `matchsize`, so the kernel copies it back as given.
    pub pad: [u8; 2],
}

/// `--uid-owner`.
pub const XT_OWNER_UID: u8 = 1 << 0;
/// `--gid-owner`.
pub const XT_OWNER_GID: u8 = 1 << 1;
/// `--socket-exists`.
pub const XT_OWNER_SOCKET: u8 = 1 << 2;
/// `--suppl-groups`.
pub const XT_OWNER_SUPPL_GROUPS: u8 = 1 << 3;
/// Every XT_OWNER_* bit.
pub const XT_OWNER_MASK: u8 = XT_OWNER_UID | XT_OWNER_GID | XT_OWNER_SOCKET | XT_OWNER_SUPPL_GROUPS;

/// `struct ipt_reject_info` (target "REJECT", revision 0, IPv4).
#[doc(alias = "ipt_reject_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct IptRejectInfo {
    /// `enum ipt_reject_with` (IPT_ICMP_* / IPT_TCP_RESET). Values past
    /// IPT_ICMP_ADMIN_PROHIBITED are accepted by the kernel and reject nothing (plain drop).
    pub with: u32,
}

/// `struct xt_log_info` (target "LOG", revision 0; `ipt_log_info` has the same layout).
#[doc(alias = "xt_log_info", alias = "ipt_log_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtLogInfo {
    /// Syslog level, 0..=7.
    pub level: u8,
    /// XT_LOG_* flags (not checked by the kernel).
    pub logflags: u8,
    /// NUL-terminated prefix; the kernel copies all 30 bytes back, bytes after the NUL too.
    pub prefix: [u8; XT_LOG_PREFIX_LEN],
}

/// `struct ipt_log_info`: the IPv4 name of [`XtLogInfo`].
#[doc(alias = "ipt_log_info")]
pub type IptLogInfo = XtLogInfo;

/// `struct ip6t_hl_info` (match "hl", IPv6 only): hop limit test `mode` (IP6T_HL_*)
/// against `hop_limit`.
#[doc(alias = "ip6t_hl_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Ip6tHlInfo {
    /// IP6T_HL_EQ, _NE, _LT, _GT.
    pub mode: u8,
    /// Hop limit to compare with.
    pub hop_limit: u8,
}

/// `struct ip6t_frag` (match "frag"): the fragment header.
#[doc(alias = "ip6t_frag")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Ip6tFrag {
    /// Identification range.
    pub ids: [u32; 2],
    /// Header length (`--fraglen`).
    pub hdrlen: u32,
    /// IP6T_FRAG_* flags.
    pub flags: u8,
    /// IP6T_FRAG_INV_* flags.
    pub invflags: u8,
    /// Implicit C padding; inside `matchsize`, copied back as given.
    pub pad: [u8; 2],
}

/// `struct ip6t_ipv6header_info` (match "ipv6header").
#[doc(alias = "ip6t_ipv6header_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Ip6tIpv6headerInfo {
    /// MASK_* bits of the headers to look for.
    pub matchflags: u8,
    /// Inverted MASK_* bits (0 or 0xff when `modeflag` is 0).
    pub invflags: u8,
    /// `--soft`: any of the headers rather than exactly these.
    pub modeflag: u8,
}

/// `struct ip6t_opts` (matches "hbh" and "dst"): hop-by-hop or destination options header.
#[doc(alias = "ip6t_opts")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Ip6tOpts {
    /// Header length.
    pub hdrlen: u32,
    /// IP6T_OPTS_* flags.
    pub flags: u8,
    /// IP6T_OPTS_INV_* flags.
    pub invflags: u8,
    /// Options as `type << 8 | length` (0x00ff: any length).
    pub opts: [u16; IP6T_OPTS_OPTSNR],
    /// Number of options used.
    pub optsnr: u8,
    /// Implicit C padding; inside `matchsize`, copied back as given.
    pub pad: u8,
}

/// `struct ip6t_rt` (match "rt"): routing header.
#[doc(alias = "ip6t_rt")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Ip6tRt {
    /// Routing type.
    pub rt_type: u32,
    /// Segments-left range.
    pub segsleft: [u32; 2],
    /// Header length.
    pub hdrlen: u32,
    /// IP6T_RT_* flags.
    pub flags: u8,
    /// IP6T_RT_INV_* flags.
    pub invflags: u8,
    /// Implicit C padding before the 4-aligned addresses.
    pub pad1: [u8; 2],
    /// Type 0 addresses.
    pub addrs: [[u8; 16]; IP6T_RT_HOPS],
    /// Number of addresses used.
    pub addrnr: u8,
    /// Implicit C padding at the end.
    pub pad2: [u8; 3],
}

impl Default for Ip6tRt {
    fn default() -> Self {
        zerocopy::FromZeros::new_zeroed()
    }
}

/// `struct xt_mac_info` (match "mac", NFPROTO_UNSPEC).
#[doc(alias = "xt_mac_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XtMacInfo {
    /// Source MAC address.
    pub srcaddr: [u8; ETH_ALEN],
    /// Implicit C padding before the int.
    pub pad: [u8; 2],
    /// Non-zero: inverted.
    pub invert: i32,
}

/// `struct ip6t_reject_info` (target "REJECT" for IPv6, ip6t_REJECT.c).
#[doc(alias = "ip6t_reject_info")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Ip6tRejectInfo {
    /// `enum ip6t_reject_with` (IP6T_ICMP6_* / IP6T_TCP_RESET).
    pub with: u32,
}

/// The "eui64" match's payload: `matchsize` is `sizeof(int)` and nothing reads it.
#[doc(alias = "eui64")]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Ip6tEui64 {
    /// The unused int, copied back as given.
    pub unused: [u8; 4],
}

macro_rules! assert_layout {
    ($t:ty, $size:expr $(, $field:ident = $off:expr)*) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        $(const _: () = assert!(core::mem::offset_of!($t, $field) == $off);)*
    };
}

assert_layout!(XtCounters, 16, pcnt = 0, bcnt = 8);
assert_layout!(XtCountersInfo, 40, name = 0, num_counters = 32);
assert_layout!(XtGetRevision, 30, name = 0, revision = 29);
assert_layout!(XtEntryMatch, 32, match_size = 0, name = 2, revision = 31);
assert_layout!(XtEntryTarget, 32, target_size = 0, name = 2, revision = 31);
assert_layout!(XtStandardTarget, 40, target = 0, verdict = 32);
assert_layout!(XtErrorTarget, 64, target = 0, errorname = 32);
assert_layout!(
    IptIp,
    84,
    src = 0,
    dst = 4,
    smsk = 8,
    dmsk = 12,
    iniface = 16,
    outiface = 32,
    iniface_mask = 48,
    outiface_mask = 64,
    proto = 80,
    flags = 82,
    invflags = 83
);
assert_layout!(
    IptEntry,
    112,
    ip = 0,
    nfcache = 84,
    target_offset = 88,
    next_offset = 90,
    comefrom = 92,
    counters = 96
);
assert_layout!(
    IptGetinfo,
    84,
    name = 0,
    valid_hooks = 32,
    hook_entry = 36,
    underflow = 56,
    num_entries = 76,
    size = 80
);
assert_layout!(IptGetEntries, 40, name = 0, size = 32);
assert_layout!(
    IptReplace,
    96,
    name = 0,
    valid_hooks = 32,
    num_entries = 36,
    size = 40,
    hook_entry = 44,
    underflow = 64,
    num_counters = 84,
    counters = 88
);
assert_layout!(
    Ip6tIp6,
    136,
    src = 0,
    dst = 16,
    smsk = 32,
    dmsk = 48,
    iniface = 64,
    outiface = 80,
    iniface_mask = 96,
    outiface_mask = 112,
    proto = 128,
    tos = 130,
    flags = 131,
    invflags = 132
);
assert_layout!(
    Ip6tEntry,
    168,
    ipv6 = 0,
    nfcache = 136,
    target_offset = 140,
    next_offset = 142,
    comefrom = 144,
    counters = 152
);
assert_layout!(
    XtTcp,
    12,
    spts = 0,
    dpts = 4,
    option = 8,
    flg_mask = 9,
    flg_cmp = 10,
    invflags = 11
);
assert_layout!(XtUdp, 10, spts = 0, dpts = 4, invflags = 8);
assert_layout!(IptIcmp, 4, icmp_type = 0, code = 1, invflags = 3);
assert_layout!(
    XtMultiportV1,
    48,
    flags = 0,
    count = 1,
    ports = 2,
    pflags = 32,
    invert = 47
);
assert_layout!(
    XtIprangeMtinfo,
    68,
    src_min = 0,
    src_max = 16,
    dst_min = 32,
    dst_max = 48,
    flags = 64
);
assert_layout!(XtCommentInfo, 256, comment = 0);
assert_layout!(
    XtConntrackMtinfo1,
    152,
    origsrc_addr = 0,
    origsrc_mask = 16,
    origdst_addr = 32,
    origdst_mask = 48,
    replsrc_addr = 64,
    replsrc_mask = 80,
    repldst_addr = 96,
    repldst_mask = 112,
    expires_min = 128,
    expires_max = 132,
    l4proto = 136,
    origsrc_port = 138,
    origdst_port = 140,
    replsrc_port = 142,
    repldst_port = 144,
    match_flags = 146,
    invert_flags = 148,
    state_mask = 150,
    status_mask = 151
);
assert_layout!(
    XtConntrackMtinfo2,
    156,
    expires_min = 128,
    l4proto = 136,
    origsrc_port = 138,
    repldst_port = 144,
    match_flags = 146,
    invert_flags = 148,
    state_mask = 150,
    status_mask = 152,
    pad = 154
);
assert_layout!(
    XtConntrackMtinfo3,
    164,
    expires_min = 128,
    l4proto = 136,
    origsrc_port = 138,
    repldst_port = 144,
    match_flags = 146,
    invert_flags = 148,
    state_mask = 150,
    status_mask = 152,
    origsrc_port_high = 154,
    origdst_port_high = 156,
    replsrc_port_high = 158,
    repldst_port_high = 160,
    pad = 162
);
// The C structs are 4-aligned (u32 expires): the mirrors must be too, or `size_of` would not
// include the tail padding the kernel's `sizeof` has.
const _: () = assert!(core::mem::align_of::<XtConntrackMtinfo2>() == 4);
const _: () = assert!(core::mem::align_of::<XtConntrackMtinfo3>() == 4);
assert_layout!(XtStateInfo, 4, statemask = 0);
assert_layout!(
    XtRateinfo,
    40,
    avg = 0,
    burst = 4,
    prev = 8,
    credit = 16,
    credit_cap = 20,
    cost = 24,
    master = 32
);
assert_layout!(
    XtAddrtypeInfo,
    12,
    source = 0,
    dest = 2,
    invert_source = 4,
    invert_dest = 8
);
assert_layout!(XtAddrtypeInfoV1, 8, source = 0, dest = 2, flags = 4);
assert_layout!(
    XtOwnerMatchInfo,
    20,
    uid_min = 0,
    uid_max = 4,
    gid_min = 8,
    gid_max = 12,
    r#match = 16,
    invert = 17
);
assert_layout!(
    HashlimitCfg1,
    32,
    mode = 0,
    avg = 4,
    burst = 8,
    size = 12,
    max = 16,
    gc_interval = 20,
    expire = 24,
    srcmask = 28,
    dstmask = 29
);
assert_layout!(
    HashlimitCfg2,
    40,
    avg = 0,
    burst = 8,
    mode = 16,
    expire = 32,
    srcmask = 36
);
assert_layout!(
    HashlimitCfg3,
    48,
    avg = 0,
    burst = 8,
    mode = 16,
    size = 20,
    max = 24,
    gc_interval = 28,
    expire = 32,
    interval = 36,
    srcmask = 40,
    dstmask = 41
);
// matchsize of the kernel's registrations; `hinfo` (aligned(8)) is where `usersize` ends
assert_layout!(XtHashlimitMtinfo1, 56, name = 0, cfg = 16, hinfo = 48);
assert_layout!(XtHashlimitMtinfo2, 304, name = 0, cfg = 256, hinfo = 296);
assert_layout!(XtHashlimitMtinfo3, 312, name = 0, cfg = 256, hinfo = 304);
assert_layout!(IptRejectInfo, 4, with = 0);
assert_layout!(XtLogInfo, 32, level = 0, logflags = 1, prefix = 2);
assert_layout!(Ip6tHlInfo, 2, mode = 0, hop_limit = 1);
assert_layout!(Ip6tFrag, 16, ids = 0, hdrlen = 8, flags = 12, invflags = 13);
assert_layout!(
    Ip6tIpv6headerInfo,
    3,
    matchflags = 0,
    invflags = 1,
    modeflag = 2
);
assert_layout!(
    Ip6tOpts,
    40,
    hdrlen = 0,
    flags = 4,
    invflags = 5,
    opts = 6,
    optsnr = 38
);
assert_layout!(
    Ip6tRt,
    280,
    rt_type = 0,
    segsleft = 4,
    hdrlen = 12,
    flags = 16,
    invflags = 17,
    addrs = 20,
    addrnr = 276
);
assert_layout!(XtMacInfo, 12, srcaddr = 0, invert = 8);
assert_layout!(Ip6tRejectInfo, 4, with = 0);
assert_layout!(Ip6tEui64, 4);

/// Size of `struct ipt_entry`.
pub const IPT_ENTRY_SIZE: usize = core::mem::size_of::<IptEntry>();
/// Size of `struct ip6t_entry`.
pub const IP6T_ENTRY_SIZE: usize = core::mem::size_of::<Ip6tEntry>();
/// Size of `struct xt_entry_match`.
pub const XT_ENTRY_MATCH_SIZE: usize = core::mem::size_of::<XtEntryMatch>();
/// Size of `struct xt_entry_target`.
pub const XT_ENTRY_TARGET_SIZE: usize = core::mem::size_of::<XtEntryTarget>();
/// Size of `struct xt_standard_target` (already XT_ALIGN'ed).
pub const XT_STANDARD_TARGET_SIZE: usize = core::mem::size_of::<XtStandardTarget>();
/// Size of `struct xt_error_target` (already XT_ALIGN'ed).
pub const XT_ERROR_TARGET_SIZE: usize = core::mem::size_of::<XtErrorTarget>();
/// Size of the IPT_SO_SET_REPLACE header.
pub const IPT_REPLACE_SIZE: usize = core::mem::size_of::<IptReplace>();
/// Size of the IPT_SO_GET_INFO answer.
pub const IPT_GETINFO_SIZE: usize = core::mem::size_of::<IptGetinfo>();
/// Size of the IPT_SO_GET_ENTRIES header.
pub const IPT_GET_ENTRIES_SIZE: usize = core::mem::size_of::<IptGetEntries>();
/// Size of the IPT_SO_SET_ADD_COUNTERS header.
pub const XT_COUNTERS_INFO_SIZE: usize = core::mem::size_of::<XtCountersInfo>();
/// Size of the revision request.
pub const XT_GET_REVISION_SIZE: usize = core::mem::size_of::<XtGetRevision>();

/// Copy `s` into a fixed, zero-padded C name field (truncated so that a NUL always remains).
pub fn name_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N.saturating_sub(1));
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// The C string in a fixed field: bytes up to the first NUL (or the whole field).
pub fn c_str(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_and_names() {
        assert_eq!(xt_align(0), 0);
        assert_eq!(xt_align(4), 8);
        assert_eq!(xt_align(10), 16);
        assert_eq!(xt_align(68), 72);
        assert_eq!(xt_align(256), 256);
        let f: [u8; 4] = name_field("abcdef");
        assert_eq!(&f, b"abc\0");
        assert_eq!(c_str(b"ab\0cd"), b"ab");
        assert_eq!(c_str(b"abcd"), b"abcd");
        assert_eq!(XT_RETURN, -5);
        assert_eq!(VERDICT_ACCEPT, -2);
        assert_eq!(VERDICT_DROP, -1);
    }
}
