//! The extensions bpfilter supports, and the kernel's lookup and per-extension checks for them.
//!
//! Mirrors `xt_request_find_match`/`xt_find_match`, `xt_find_revision`, `xt_check_match`,
//! `xt_check_target` (net/netfilter/x_tables.c) and the `checkentry` functions of
//! net/netfilter/xt_tcpudp.c, xt_multiport.c, net/ipv4/netfilter/ip_tables.c (icmp),
//! net/ipv4/netfilter/ipt_REJECT.c (`reject_tg_check`) and net/netfilter/xt_LOG.c
//! (`log_tg_check`). xt_iprange.c, xt_comment.c and xt_tcpmss.c have no checkentry (tcpmss
//! only has `.proto`, which `xt_check_match` tests); xt_conntrack.c
//! (`conntrack_mt_check`) and xt_state.c (`state_mt_check`) only take a reference on the
//! namespace's conntrack (`nf_ct_netns_get`), which succeeds wherever conntrack is available,
//! so nothing of theirs is mirrored: the kernel accepts any payload of the right size (no flag
//! is checked, and revisions 1 and 2 keep their own layout, read at match time).

use crate::abi::*;
use crate::{ExtKind, Family};

/// One supported (name, revision) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supported {
    /// Extension name.
    pub name: &'static str,
    /// Revision.
    pub revision: u8,
    /// Match or target.
    pub kind: ExtKind,
    /// `matchsize`/`targetsize` of the kernel's xt_match/xt_target (before XT_ALIGN).
    pub size: usize,
    /// `.proto` of the xt_match/xt_target (0 = any).
    pub proto: u16,
    /// `.table` of the xt_match/xt_target: the only table it may be used in (None = any).
    pub table: Option<&'static str>,
    /// `.hooks` of the xt_match/xt_target: bitmask of the hooks that may reach it (0 = any).
    pub hooks: u32,
}

const fn m(name: &'static str, revision: u8, size: usize, proto: u16) -> Supported {
    Supported {
        name,
        revision,
        kind: ExtKind::Match,
        size,
        proto,
        table: None,
        hooks: 0,
    }
}
const fn t(name: &'static str, revision: u8, size: usize) -> Supported {
    Supported {
        name,
        revision,
        kind: ExtKind::Target,
        size,
        proto: 0,
        table: None,
        hooks: 0,
    }
}
/// A target restricted to one table and a set of hooks (`.table`, `.hooks`).
const fn t_in(
    name: &'static str,
    revision: u8,
    size: usize,
    table: &'static str,
    hooks: u32,
) -> Supported {
    Supported {
        table: Some(table),
        hooks,
        ..t(name, revision, size)
    }
}

/// A match restricted to a set of hooks (`.hooks`).
const fn m_hooks(name: &'static str, revision: u8, size: usize, hooks: u32) -> Supported {
    Supported {
        hooks,
        ..m(name, revision, size, 0)
    }
}

/// `NF_INET_LOCAL_OUT`, `NF_INET_POST_ROUTING` as a hook mask: xt_owner's `.hooks`.
pub const OWNER_HOOKS: u32 = (1 << 3) | (1 << 4);

/// `NF_INET_LOCAL_IN`, `NF_INET_FORWARD`, `NF_INET_LOCAL_OUT` as a hook mask: REJECT's `.hooks`.
pub const REJECT_HOOKS: u32 = (1 << 1) | (1 << 2) | (1 << 3);

/// `NF_INET_PRE_ROUTING`, `NF_INET_LOCAL_IN`, `NF_INET_FORWARD` as a hook mask: the `.hooks`
/// of xt_mac and ip6t_eui64 (a source MAC exists only on the way in).
pub const MAC_HOOKS: u32 = (1 << 0) | (1 << 1) | (1 << 2);

/// IPPROTO_TCP.
pub const IPPROTO_TCP: u16 = 6;
/// IPPROTO_UDP.
pub const IPPROTO_UDP: u16 = 17;
/// IPPROTO_ICMP.
pub const IPPROTO_ICMP: u16 = 1;
/// IPPROTO_ICMPV6.
pub const IPPROTO_ICMPV6: u16 = 58;
/// IPPROTO_UDPLITE.
pub const IPPROTO_UDPLITE: u16 = 136;
/// IPPROTO_SCTP.
pub const IPPROTO_SCTP: u16 = 132;
/// IPPROTO_DCCP.
pub const IPPROTO_DCCP: u16 = 33;

/// Extensions bpfilter accepts for IPv4 (iptables).
pub const SUPPORTED_IPV4: &[Supported] = &[
    m("tcp", 0, core::mem::size_of::<XtTcp>(), IPPROTO_TCP),
    m("udp", 0, core::mem::size_of::<XtUdp>(), IPPROTO_UDP),
    m("icmp", 0, core::mem::size_of::<IptIcmp>(), IPPROTO_ICMP),
    m("multiport", 1, core::mem::size_of::<XtMultiportV1>(), 0),
    m("iprange", 1, core::mem::size_of::<XtIprangeMtinfo>(), 0),
    m("comment", 0, core::mem::size_of::<XtCommentInfo>(), 0),
    m("mark", 1, core::mem::size_of::<XtMarkMtinfo1>(), 0),
    m("pkttype", 0, core::mem::size_of::<XtPkttypeInfo>(), 0),
    // xt_tcpmss.c registers revision 0 per family with `.proto = IPPROTO_TCP`: `-p tcp`,
    // not inverted, or xt_check_match says EINVAL
    m(
        "tcpmss",
        0,
        core::mem::size_of::<XtTcpmssMatchInfo>(),
        IPPROTO_TCP,
    ),
    m("conntrack", 1, size_of::<XtConntrackMtinfo1>(), 0),
    m("conntrack", 2, size_of::<XtConntrackMtinfo2>(), 0),
    m("conntrack", 3, size_of::<XtConntrackMtinfo3>(), 0),
    m("state", 0, core::mem::size_of::<XtStateInfo>(), 0),
    m("limit", 0, core::mem::size_of::<XtRateinfo>(), 0),
    m("addrtype", 0, core::mem::size_of::<XtAddrtypeInfo>(), 0),
    m("addrtype", 1, core::mem::size_of::<XtAddrtypeInfoV1>(), 0),
    m("recent", 0, core::mem::size_of::<XtRecentMtinfo>(), 0),
    m("recent", 1, core::mem::size_of::<XtRecentMtinfoV1>(), 0),
    // xt_hashlimit.c registers revisions 1 to 3 per family (revision 0 is gone from the
    // kernel; iptables 1.8.9 asks for the best, 3)
    m(
        "hashlimit",
        1,
        core::mem::size_of::<XtHashlimitMtinfo1>(),
        0,
    ),
    m(
        "hashlimit",
        2,
        core::mem::size_of::<XtHashlimitMtinfo2>(),
        0,
    ),
    m(
        "hashlimit",
        3,
        core::mem::size_of::<XtHashlimitMtinfo3>(),
        0,
    ),
    m_hooks(
        "owner",
        1,
        core::mem::size_of::<XtOwnerMatchInfo>(),
        OWNER_HOOKS,
    ),
    m_hooks("mac", 0, core::mem::size_of::<XtMacInfo>(), MAC_HOOKS),
    t(XT_STANDARD_TARGET, 0, 4),
    t(XT_ERROR_TARGET, 0, XT_FUNCTION_MAXNAMELEN),
    t_in(
        "REJECT",
        0,
        core::mem::size_of::<IptRejectInfo>(),
        "filter",
        REJECT_HOOKS,
    ),
    t("LOG", 0, core::mem::size_of::<XtLogInfo>()),
];

/// Extensions bpfilter accepts for IPv6 (ip6tables): those the kernel registers for
/// NFPROTO_IPV6 or NFPROTO_UNSPEC whose checks are mirrored here (with their IPv6 differences:
/// addrtype's refused types, hashlimit's 128-bit masks; recent's v1 mask is 16 bytes).
pub const SUPPORTED_IPV6: &[Supported] = &[
    m("tcp", 0, core::mem::size_of::<XtTcp>(), IPPROTO_TCP),
    m("udp", 0, core::mem::size_of::<XtUdp>(), IPPROTO_UDP),
    // ip6_tables.c registers "icmp6" with `.proto = IPPROTO_ICMPV6`
    m("icmp6", 0, core::mem::size_of::<Ip6tIcmp>(), IPPROTO_ICMPV6),
    m("multiport", 1, core::mem::size_of::<XtMultiportV1>(), 0),
    m("iprange", 1, core::mem::size_of::<XtIprangeMtinfo>(), 0),
    m("comment", 0, core::mem::size_of::<XtCommentInfo>(), 0),
    m("mark", 1, core::mem::size_of::<XtMarkMtinfo1>(), 0),
    m("pkttype", 0, core::mem::size_of::<XtPkttypeInfo>(), 0),
    m(
        "tcpmss",
        0,
        core::mem::size_of::<XtTcpmssMatchInfo>(),
        IPPROTO_TCP,
    ),
    m("conntrack", 1, size_of::<XtConntrackMtinfo1>(), 0),
    m("conntrack", 2, size_of::<XtConntrackMtinfo2>(), 0),
    m("conntrack", 3, size_of::<XtConntrackMtinfo3>(), 0),
    m("state", 0, core::mem::size_of::<XtStateInfo>(), 0),
    m("limit", 0, core::mem::size_of::<XtRateinfo>(), 0),
    m_hooks("mac", 0, core::mem::size_of::<XtMacInfo>(), MAC_HOOKS),
    // xt_addrtype.c registers revision 1 for IPv6 (revision 0 is IPv4's only), xt_owner.c,
    // xt_recent.c and xt_hashlimit.c register every revision for IPv6 too
    m("addrtype", 1, core::mem::size_of::<XtAddrtypeInfoV1>(), 0),
    m_hooks(
        "owner",
        1,
        core::mem::size_of::<XtOwnerMatchInfo>(),
        OWNER_HOOKS,
    ),
    m("recent", 0, core::mem::size_of::<XtRecentMtinfo>(), 0),
    m("recent", 1, core::mem::size_of::<XtRecentMtinfoV1>(), 0),
    m(
        "hashlimit",
        1,
        core::mem::size_of::<XtHashlimitMtinfo1>(),
        0,
    ),
    m(
        "hashlimit",
        2,
        core::mem::size_of::<XtHashlimitMtinfo2>(),
        0,
    ),
    m(
        "hashlimit",
        3,
        core::mem::size_of::<XtHashlimitMtinfo3>(),
        0,
    ),
    // IPv6 only: xt_hl.c (hl_mt6), ip6t_frag.c, ip6t_ipv6header.c, ip6t_hbh.c (two
    // registrations, "hbh" and "dst", same payload), ip6t_rt.c, ip6t_eui64.c
    m("hl", 0, core::mem::size_of::<Ip6tHlInfo>(), 0),
    m("frag", 0, core::mem::size_of::<Ip6tFrag>(), 0),
    m(
        "ipv6header",
        0,
        core::mem::size_of::<Ip6tIpv6headerInfo>(),
        0,
    ),
    m("hbh", 0, core::mem::size_of::<Ip6tOpts>(), 0),
    m("dst", 0, core::mem::size_of::<Ip6tOpts>(), 0),
    m("rt", 0, core::mem::size_of::<Ip6tRt>(), 0),
    // eui64's matchsize is sizeof(int), a payload nothing reads
    m_hooks("eui64", 0, core::mem::size_of::<Ip6tEui64>(), MAC_HOOKS),
    t(XT_STANDARD_TARGET, 0, 4),
    t(XT_ERROR_TARGET, 0, XT_FUNCTION_MAXNAMELEN),
    // ip6t_REJECT.c: its own ip6t_reject_info, same table and hooks as ipt_REJECT
    t_in(
        "REJECT",
        0,
        core::mem::size_of::<Ip6tRejectInfo>(),
        "filter",
        REJECT_HOOKS,
    ),
    // xt_LOG.c registers the same xt_log_info target for NFPROTO_IPV6
    t("LOG", 0, core::mem::size_of::<XtLogInfo>()),
];

/// Extensions the kernel registers for NFPROTO_UNSPEC among ours: a wrong revision of these
/// makes `xt_find_match` answer EPROTOTYPE instead of ENOENT (the NFPROTO_IPV4 search result is
/// discarded when it retries the family-independent list).
/// (xt_comment.c, xt_conntrack.c, xt_state.c, xt_mark.c, xt_pkttype.c and xt_limit.c register
/// `.family = NFPROTO_UNSPEC`; xt_addrtype.c registers per family, and so does xt_owner.c in
/// the kernels measured (6.18: a wrong owner revision is ENOENT). xt_mac.c registers
/// NFPROTO_UNSPEC too, yet a wrong mac revision is ENOENT on 6.18, ip6tables and iptables alike
/// (negative6/mac_revision_1), so it is not listed.)
const UNSPEC_NAMES: &[&str] = &["comment", "conntrack", "state", "mark", "pkttype", "limit"];

fn table(family: Family) -> &'static [Supported] {
    match family {
        Family::Ipv4 => SUPPORTED_IPV4,
        Family::Ipv6 => SUPPORTED_IPV6,
    }
}

/// Mirror of `xt_request_find_match` / `xt_request_find_target` on a raw 29-byte name field:
/// EINVAL if the name is not NUL-terminated, ENOENT if unknown (or known to the kernel but not
/// supported by bpfilter), EPROTOTYPE for a family-independent extension at another revision.
pub fn xt_request_find(
    family: Family,
    kind: ExtKind,
    name: &[u8; XT_EXTENSION_MAXNAMELEN],
    revision: u8,
) -> Result<&'static Supported, (i32, &'static str)> {
    if !name.contains(&0) {
        return Err((libc::EINVAL, "name not NUL-terminated"));
    }
    let name = c_str(name);
    let mut same_name = false;
    for s in table(family) {
        if s.kind == kind && s.name.as_bytes() == name {
            if s.revision == revision {
                return Ok(s);
            }
            same_name = true;
        }
    }
    if same_name && kind == ExtKind::Match && UNSPEC_NAMES.iter().any(|n| n.as_bytes() == name) {
        return Err((libc::EPROTOTYPE, "no such revision"));
    }
    Err((libc::ENOENT, "unknown or unsupported extension"))
}

/// Answer to a revision query, as `xt_find_revision`: the best (highest) revision of the name
/// if the asked one is supported, EPROTONOSUPPORT for a known name at another revision, ENOENT
/// for an unknown name.
pub fn find_revision(family: Family, kind: ExtKind, name: &str, revision: u8) -> Result<u8, i32> {
    let mut best: Option<u8> = None;
    let mut have = false;
    for s in table(family) {
        if s.kind == kind && s.name == name {
            best = Some(best.map_or(s.revision, |b| b.max(s.revision)));
            have |= s.revision == revision;
        }
    }
    match best {
        None => Err(libc::ENOENT),
        Some(b) if have => Ok(b),
        Some(_) => Err(libc::EPROTONOSUPPORT),
    }
}

/// `xt_check_match`'s or (for a target) `xt_check_target`'s generic part, in the kernel's
/// order: payload size, `.table` (for a target, the request's table name, NUL-terminated by
/// `do_replace`), `.hooks` against the entry's hook mask (`comefrom`, the hooks
/// `mark_source_chains` found reaching it) and `.proto` (none of our targets sets one). All
/// EINVAL; the kernel's two functions differ only in their messages.
pub fn xt_check(
    ext: &Supported,
    size: usize,
    table: &str,
    hook_mask: u32,
    proto: u16,
    inv_proto: bool,
) -> Result<(), (i32, &'static str)> {
    let why = match ext.kind {
        ExtKind::Match => [
            "invalid match size",
            "match only valid in another table",
            "match used from a hook it does not allow",
            "match only valid for its protocol (not inverted)",
        ],
        ExtKind::Target => [
            "invalid target size",
            "target only valid in another table",
            "target used from a hook it does not allow",
            "target only valid for its protocol (not inverted)",
        ],
    };
    if xt_align(ext.size) != size {
        return Err((libc::EINVAL, why[0]));
    }
    if ext.table.is_some_and(|t| t != table) {
        return Err((libc::EINVAL, why[1]));
    }
    if ext.hooks != 0 && hook_mask & !ext.hooks != 0 {
        return Err((libc::EINVAL, why[2]));
    }
    if ext.proto != 0 && (ext.proto != proto || inv_proto) {
        return Err((libc::EINVAL, why[3]));
    }
    Ok(())
}

/// `reject_tg_check` (ipt_REJECT.c): `echo-reply` is refused, `tcp-reset` needs an entry that
/// matches `-p tcp` without `!`. Other values, even unknown ones, are accepted. EINVAL.
pub fn reject_tg_check(
    info: &IptRejectInfo,
    proto: u16,
    ip_invflags: u8,
) -> Result<(), (i32, &'static str)> {
    match info.with {
        IPT_ICMP_ECHOREPLY => Err((libc::EINVAL, "REJECT: echo-reply no longer supported")),
        IPT_TCP_RESET if proto != IPPROTO_TCP || ip_invflags & IPT_INV_PROTO != 0 => {
            Err((libc::EINVAL, "REJECT: tcp-reset needs -p tcp"))
        }
        _ => Ok(()),
    }
}

/// `reject_tg6_check` (ip6t_REJECT.c): `echo-reply` is refused, `tcp-reset` needs an entry
/// with IP6T_F_PROTO set, proto IPPROTO_TCP and no IP6T_INV_PROTO (ip6tables sets
/// IP6T_F_PROTO with `-p`; a hand-made entry with proto 6 but without the flag is refused).
/// Other values, even unknown ones, are accepted. EINVAL.
pub fn reject_tg6_check(
    info: &Ip6tRejectInfo,
    ip: &crate::Ip6Match,
) -> Result<(), (i32, &'static str)> {
    match info.with {
        IP6T_ICMP6_ECHOREPLY => Err((libc::EINVAL, "REJECT: ECHOREPLY is not supported")),
        IP6T_TCP_RESET
            if ip.flags & IP6T_F_PROTO == 0
                || ip.proto != IPPROTO_TCP
                || ip.invflags & IP6T_INV_PROTO != 0 =>
        {
            Err((libc::EINVAL, "REJECT: TCP_RESET illegal for non-tcp"))
        }
        _ => Ok(()),
    }
}

/// `icmp6_checkentry` (ip6_tables.c): no invflags but IP6T_ICMP_INV. EINVAL.
pub fn icmp6_checkentry(info: &Ip6tIcmp) -> Result<(), (i32, &'static str)> {
    if info.invflags & !IP6T_ICMP_INV != 0 {
        return Err((libc::EINVAL, "icmp6: unknown invflags"));
    }
    Ok(())
}

/// `frag_mt6_check` (ip6t_frag.c): no invflags outside IP6T_FRAG_INV_MASK. EINVAL.
pub fn frag_mt6_check(info: &Ip6tFrag) -> Result<(), (i32, &'static str)> {
    if info.invflags & !IP6T_FRAG_INV_MASK != 0 {
        return Err((libc::EINVAL, "frag: unknown invflags"));
    }
    Ok(())
}

/// `ipv6header_mt6_check` (ip6t_ipv6header.c): without `--soft` (`modeflag` 0) `invflags`
/// is all or nothing, 0 or 0xff. EINVAL.
pub fn ipv6header_mt6_check(info: &Ip6tIpv6headerInfo) -> Result<(), (i32, &'static str)> {
    if info.modeflag == 0 && info.invflags != 0 && info.invflags != 0xff {
        return Err((
            libc::EINVAL,
            "ipv6header: invflags must be 0 or 0xff in hard mode",
        ));
    }
    Ok(())
}

/// `hbh_mt6_check` (ip6t_hbh.c, for "hbh" and "dst"): no invflags outside
/// IP6T_OPTS_INV_MASK, at most IP6T_OPTS_OPTSNR options (a check added by the 2025 stable
/// fixes, present in 6.18), and no IP6T_OPTS_NSTRICT ("not implemented"). EINVAL.
pub fn hbh_mt6_check(info: &Ip6tOpts) -> Result<(), (i32, &'static str)> {
    if info.invflags & !IP6T_OPTS_INV_MASK != 0 {
        return Err((libc::EINVAL, "hbh/dst: unknown invflags"));
    }
    if usize::from(info.optsnr) > IP6T_OPTS_OPTSNR {
        return Err((libc::EINVAL, "hbh/dst: too many options"));
    }
    if info.flags & IP6T_OPTS_NSTRICT != 0 {
        return Err((libc::EINVAL, "hbh/dst: not strict - not implemented"));
    }
    Ok(())
}

/// `rt_mt6_check` (ip6t_rt.c): no invflags outside IP6T_RT_INV_MASK; at most IP6T_RT_HOPS
/// addresses (2025 stable fix, present in 6.18); the type 0 options (`--rt-0-res`,
/// `--rt-0-addrs`) need `--rt-type 0` given and not inverted. EINVAL.
pub fn rt_mt6_check(info: &Ip6tRt) -> Result<(), (i32, &'static str)> {
    if info.invflags & !IP6T_RT_INV_MASK != 0 {
        return Err((libc::EINVAL, "rt: unknown invflags"));
    }
    if usize::from(info.addrnr) > IP6T_RT_HOPS {
        return Err((libc::EINVAL, "rt: too many addresses"));
    }
    if info.flags & (IP6T_RT_RES | IP6T_RT_FST_MASK) != 0
        && (info.flags & IP6T_RT_TYP == 0
            || info.rt_type != 0
            || info.invflags & IP6T_RT_INV_TYP != 0)
    {
        return Err((libc::EINVAL, "rt: `--rt-type 0' required before `--rt-0-*'"));
    }
    Ok(())
}

/// `log_tg_check` (xt_LOG.c): level below 8 and a NUL in the last prefix byte (an earlier NUL
/// is not enough; `logflags` is not checked). EINVAL. The kernel then takes a reference on the
/// syslog logger (`nf_logger_find_get`), which succeeds where nf_log_syslog is available.
pub fn log_tg_check(info: &XtLogInfo) -> Result<(), (i32, &'static str)> {
    if info.level >= 8 {
        return Err((libc::EINVAL, "LOG: level >= 8"));
    }
    if info.prefix[XT_LOG_PREFIX_LEN - 1] != 0 {
        return Err((libc::EINVAL, "LOG: prefix not NUL-terminated"));
    }
    Ok(())
}

/// The kernel's `HZ`, which `limit_mt_check`'s overflow test depends on. A compile-time
/// constant of the running kernel: the daemon measures it once and sets it here; 250
/// (Debian's) until then.
static KERNEL_HZ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(250);

/// Record the running kernel's `HZ` (100, 250, 300 or 1000).
pub fn set_kernel_hz(hz: u32) {
    KERNEL_HZ.store(hz, std::sync::atomic::Ordering::Relaxed);
}

/// The kernel's `HZ` as last set.
pub fn kernel_hz() -> u32 {
    KERNEL_HZ.load(std::sync::atomic::Ordering::Relaxed)
}

/// xt_limit's `CREDITS_PER_JIFFY`: the largest power of two at or below
/// `0xFFFFFFFF / (HZ * 60 * 60 * 24)`, so that a day of credits fits a u32.
pub fn credits_per_jiffy(hz: u32) -> u32 {
    let max = u32::MAX / (hz.max(1) * 60 * 60 * 24);
    if max == 0 {
        0
    } else {
        1 << (31 - max.leading_zeros())
    }
}

/// xt_limit's `user2credits`: `avg`-style units (1/10000 s) to credits, in u32 arithmetic as
/// the kernel has it (the divide-first branch may wrap).
pub fn user2credits(user: u32, hz: u32) -> u32 {
    let cpj = credits_per_jiffy(hz);
    let per_sec = hz.wrapping_mul(cpj);
    if per_sec != 0 && user > u32::MAX / per_sec {
        (user / XT_LIMIT_SCALE).wrapping_mul(hz).wrapping_mul(cpj)
    } else {
        user.wrapping_mul(hz).wrapping_mul(cpj) / XT_LIMIT_SCALE
    }
}

/// `limit_mt_check`: a burst of 0, or one whose credits overflow (`avg * burst` in u32), is
/// ERANGE.
pub fn limit_mt_check(info: &XtRateinfo) -> Result<(), (i32, &'static str)> {
    let hz = kernel_hz();
    if info.burst == 0
        || user2credits(info.avg.wrapping_mul(info.burst), hz) < user2credits(info.avg, hz)
    {
        return Err((libc::ERANGE, "limit: overflow, try a lower rate or burst"));
    }
    Ok(())
}

/// xt_recent's module parameters `ip_list_tot` (addresses per list, 100) and
/// `ip_pkt_list_tot` (stamps per address, 0: by hit count), as the daemon read them from
/// /sys/module/xt_recent/parameters (the defaults when the module is not loaded).
static RECENT_PARAMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100 << 32);

/// Record xt_recent's `ip_list_tot` and `ip_pkt_list_tot`.
pub fn set_recent_params(list_tot: u32, pkt_list_tot: u32) {
    RECENT_PARAMS.store(
        u64::from(list_tot) << 32 | u64::from(pkt_list_tot),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// xt_recent's `(ip_list_tot, ip_pkt_list_tot)` as last set.
pub fn recent_params() -> (u32, u32) {
    let v = RECENT_PARAMS.load(std::sync::atomic::Ordering::Relaxed);
    ((v >> 32) as u32, v as u32)
}

/// Whether the kernel's xt_recent keeps `e->index` in a u16 and takes hit counts up to
/// 65535 (`XT_RECENT_MAX_NSTAMPS` 65536, Linux 6.11 and later) rather than a u8 and 255.
static RECENT_WIDE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Record whether the running kernel's xt_recent is the 6.11 one (see [`recent_wide`]).
pub fn set_recent_wide(wide: bool) {
    RECENT_WIDE.store(wide, std::sync::atomic::Ordering::Relaxed);
}

/// Whether xt_recent's index is a u16 and its hit counts go up to 65535 (Linux 6.11+).
pub fn recent_wide() -> bool {
    RECENT_WIDE.load(std::sync::atomic::Ordering::Relaxed)
}

/// xt_recent's `XT_RECENT_MAX_NSTAMPS` on the running kernel: a hit count must stay below it.
pub fn recent_max_nstamps() -> u32 {
    if recent_wide() {
        65536
    } else {
        256
    }
}

/// `recent_mt_check` up to the table lookup: one operation of `--set`, `--remove`,
/// `--rcheck`, `--update`; no `--seconds`, `--hitcount`, `--rttl` or `--reap` with the first
/// two; `--reap` only with `--seconds`; a hit count below XT_RECENT_MAX_NSTAMPS; no unknown
/// flag (all EINVAL); then `xt_check_proc_name` on the name: empty, "." or "..", or with a
/// '/' is EINVAL, without a NUL ENAMETOOLONG.
pub fn recent_mt_check(info: &XtRecentMtinfo) -> Result<(), (i32, &'static str)> {
    const OPS: u8 = XT_RECENT_SET | XT_RECENT_REMOVE | XT_RECENT_CHECK | XT_RECENT_UPDATE;
    const MODIFIERS: u8 = XT_RECENT_TTL | XT_RECENT_REAP;
    const VALID: u8 = OPS | MODIFIERS;
    let einval = |why| Err((libc::EINVAL, why));
    if info.check_set & !VALID != 0 {
        return einval("recent: unsupported user space flags");
    }
    if (info.check_set & OPS).count_ones() != 1 {
        return einval("recent: exactly one of --set, --rcheck, --update, --remove");
    }
    if info.check_set & (XT_RECENT_SET | XT_RECENT_REMOVE) != 0
        && (info.seconds != 0 || info.hit_count != 0 || info.check_set & MODIFIERS != 0)
    {
        return einval(
            "recent: --set and --remove take no --seconds, --hitcount, --rttl or --reap",
        );
    }
    if info.check_set & XT_RECENT_REAP != 0 && info.seconds == 0 {
        return einval("recent: --reap needs --seconds");
    }
    if info.hit_count >= recent_max_nstamps() {
        return einval("recent: hitcount larger than the allowed maximum");
    }
    let Some(len) = info.name.iter().position(|&b| b == 0) else {
        return Err((libc::ENAMETOOLONG, "recent: name not NUL-terminated"));
    };
    let name = &info.name[..len];
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return einval("recent: name empty, \".\", \"..\" or with a '/'");
    }
    Ok(())
}

/// `xt_check_proc_name` on a name field: a NUL within it (ENAMETOOLONG), not empty, not "."
/// or "..", no '/' (EINVAL).
pub fn xt_check_proc_name(name: &[u8]) -> Result<(), (i32, &'static str)> {
    let Some(len) = name.iter().position(|&b| b == 0) else {
        return Err((libc::ENAMETOOLONG, "name not NUL-terminated"));
    };
    let name = &name[..len];
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err((libc::EINVAL, "name empty, \".\", \"..\" or with a '/'"));
    }
    Ok(())
}

/// Whether the running kernel has the 2026 netfilter fix "xtables: fix L4 header parsing for
/// non-first fragments", measured in the matrix: 6.12.117 and 6.18.44 do not, 7.3.4 does.
/// With it, `hashlimit_init_dst` hotdrops a non-first fragment when the table hashes ports,
/// and `tcpmss_mt` fails one at once (whatever `invert` says); without it, both read the
/// fragment's payload at the transport offset as the transport header.
static NONFIRST_FRAG_FIX: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Record whether the kernel has the non-first fragment fix (see [`nonfirst_frag_fix`]).
pub fn set_nonfirst_frag_fix(on: bool) {
    NONFIRST_FRAG_FIX.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether hashlimit and tcpmss leave non-first fragments alone (hotdrop, no match) instead
/// of reading their payload as a transport header.
pub fn nonfirst_frag_fix() -> bool {
    NONFIRST_FRAG_FIX.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the running kernel has netfilter's July 2026 fix "ip6tables: mark malformed IPv6
/// extension headers for hotdrop" (Zhixing Chen, in `net` 2026-07-03, `Fixes:` the first git
/// commit, so also in the stable series). With it, `rt_mt6` and `hbh_mt6` hotdrop a header
/// whose length field runs past the packet (`skb->len - ptr < hdrlen`); without it, they do
/// not match. Measured in the matrix: 6.12.117, 6.18.44 and 7.3.4 all hotdrop.
static EXTHDR_SHORT_HOTDROP: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(true);

/// Record whether the kernel hotdrops an extension header longer than the packet (see
/// [`exthdr_short_hotdrop`]).
pub fn set_exthdr_short_hotdrop(on: bool) {
    EXTHDR_SHORT_HOTDROP.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `-m rt` and `-m hbh`/`-m dst` hotdrop a header whose length field runs past the
/// packet (else they do not match).
pub fn exthdr_short_hotdrop() -> bool {
    EXTHDR_SHORT_HOTDROP.load(std::sync::atomic::Ordering::Relaxed)
}

/// xt_hashlimit's `HASHLIMIT_MAX_SIZE`: `size` and `max` above it are truncated to it.
pub const HASHLIMIT_MAX_SIZE: u32 = 1_048_576;

/// xt_hashlimit's `CREDITS_PER_JIFFY` of a revision: revision 1 the 32-bit one of xt_limit
/// (`POW2_BELOW32(0xFFFFFFFF / (HZ * 86400))`), revisions 2 and 3 the 64-bit one
/// (`POW2_BELOW64(0xFFFFFFFFFFFFFFFF / (HZ * 86400))`).
pub fn hashlimit_cpj(revision: u8, hz: u32) -> u64 {
    if revision == 1 {
        return u64::from(credits_per_jiffy(hz));
    }
    let max = u64::MAX / (u64::from(hz.max(1)) * 86_400);
    if max == 0 {
        0
    } else {
        1 << (63 - max.leading_zeros())
    }
}

/// xt_hashlimit's `CREDITS_PER_JIFFY_BYTES`: `POW2_BELOW32(0xFFFFFFFF / HZ)`.
pub fn hashlimit_cpj_bytes(hz: u32) -> u64 {
    let max = u32::MAX / hz.max(1);
    if max == 0 {
        0
    } else {
        1 << (31 - max.leading_zeros())
    }
}

/// xt_hashlimit's `user2credits(user, revision)` (u64 arithmetic, the constant operands
/// divided first: `HZ * cpj / scale` is an integer, 3 for revision 1 at HZ 250).
pub fn hashlimit_user2credits(user: u64, revision: u8, hz: u32) -> u64 {
    let scale = if revision == 1 {
        XT_HASHLIMIT_SCALE
    } else {
        XT_HASHLIMIT_SCALE_V2
    };
    let per_sec = u64::from(hz).wrapping_mul(hashlimit_cpj(revision, hz));
    if per_sec == 0 {
        return 0;
    }
    if scale >= per_sec {
        user / (scale / per_sec)
    } else {
        user.wrapping_mul(per_sec / scale)
    }
}

/// xt_hashlimit's `user2credits_byte(u32 user)`: `(user * HZ * CREDITS_PER_JIFFY_BYTES) >> 32`.
pub fn hashlimit_user2credits_byte(user: u32, hz: u32) -> u32 {
    let per_sec = (u64::from(hz) * hashlimit_cpj_bytes(hz)) & u64::from(u32::MAX);
    ((u64::from(user) * per_sec) >> 32) as u32
}

/// The configuration of a hashlimit match in revision 3's form (`cfg_copy`).
pub fn hashlimit_cfg3_of1(c: &HashlimitCfg1) -> HashlimitCfg3 {
    HashlimitCfg3 {
        avg: u64::from(c.avg),
        burst: u64::from(c.burst),
        mode: c.mode,
        size: c.size,
        max: c.max,
        gc_interval: c.gc_interval,
        expire: c.expire,
        interval: 0,
        srcmask: c.srcmask,
        dstmask: c.dstmask,
        pad: [0; 6],
    }
}

/// [`hashlimit_cfg3_of1`] for revision 2.
pub fn hashlimit_cfg3_of2(c: &HashlimitCfg2) -> HashlimitCfg3 {
    HashlimitCfg3 {
        avg: c.avg,
        burst: c.burst,
        mode: c.mode,
        size: c.size,
        max: c.max,
        gc_interval: c.gc_interval,
        expire: c.expire,
        interval: 0,
        srcmask: c.srcmask,
        dstmask: c.dstmask,
        pad: [0; 6],
    }
}

/// `hashlimit_mt_check_common` up to the table lookup, for IPv4, in the kernel's order:
/// gc interval and expiry not 0 (EINVAL); `size` and `max` truncated to
/// [`HASHLIMIT_MAX_SIZE`] (in `cfg`, which is the rule's own for revision 3); masks up to 32
/// (EINVAL); no unknown mode bit (EINVAL); rate match only in revision 3 with a rate in
/// 1..=U32_MAX (ERANGE) and an interval (EINVAL); byte mode with a rate whose credits are
/// not 0 (EINVAL); else a burst and credits that do not overflow ("overflow, try lower",
/// ERANGE). The name went through [`xt_check_proc_name`] first.
pub fn hashlimit_mt_check_common(
    cfg: &mut HashlimitCfg3,
    revision: u8,
) -> Result<(), (i32, &'static str)> {
    hashlimit_mt_check_common_for(Family::Ipv4, cfg, revision)
}

/// [`hashlimit_mt_check_common`] for either family: the masks go up to 32 for IPv4 and up to
/// 128 for IPv6 (`par->family`), the rest is the same.
pub fn hashlimit_mt_check_common_for(
    family: Family,
    cfg: &mut HashlimitCfg3,
    revision: u8,
) -> Result<(), (i32, &'static str)> {
    let hz = kernel_hz();
    if cfg.gc_interval == 0 || cfg.expire == 0 {
        return Err((libc::EINVAL, "hashlimit: gc interval or expiry of 0"));
    }
    cfg.size = cfg.size.min(HASHLIMIT_MAX_SIZE);
    cfg.max = cfg.max.min(HASHLIMIT_MAX_SIZE);
    let max_mask = match family {
        Family::Ipv4 => 32,
        Family::Ipv6 => 128,
    };
    if cfg.srcmask > max_mask || cfg.dstmask > max_mask {
        return Err((libc::EINVAL, "hashlimit: mask above the address length"));
    }
    if cfg.mode & !XT_HASHLIMIT_ALL != 0 {
        return Err((libc::EINVAL, "hashlimit: unknown mode mask"));
    }
    if cfg.mode & XT_HASHLIMIT_RATE_MATCH != 0 {
        if revision < 3 {
            return Err((libc::EINVAL, "hashlimit: rate match before revision 3"));
        }
        if cfg.avg == 0 || cfg.avg > u64::from(u32::MAX) {
            return Err((libc::ERANGE, "hashlimit: invalid rate"));
        }
        if cfg.interval == 0 {
            return Err((libc::EINVAL, "hashlimit: invalid interval"));
        }
    } else if cfg.mode & XT_HASHLIMIT_BYTES != 0 {
        if hashlimit_user2credits_byte(cfg.avg as u32, hz) == 0 {
            return Err((libc::EINVAL, "hashlimit: overflow, rate too high"));
        }
    } else if cfg.burst == 0
        || hashlimit_user2credits(cfg.avg.wrapping_mul(cfg.burst), revision, hz)
            < hashlimit_user2credits(cfg.avg, revision, hz)
    {
        return Err((libc::ERANGE, "hashlimit: overflow, try lower"));
    }
    Ok(())
}

/// `addrtype_mt_checkentry_v1`: not both interface limits, no `--limit-iface-out` where
/// PREROUTING or INPUT reach the rule, no `--limit-iface-in` where OUTPUT or POSTROUTING do.
/// EINVAL. (Revision 0 has no checkentry.)
pub fn addrtype_mt_checkentry_v1(
    info: &XtAddrtypeInfoV1,
    hook_mask: u32,
) -> Result<(), (i32, &'static str)> {
    addrtype_mt_checkentry_v1_for(Family::Ipv4, info, hook_mask)
}

/// [`addrtype_mt_checkentry_v1`] for either family: after the interface checks, IPv6 refuses
/// (EINVAL) BLACKHOLE, PROHIBIT and every type above it, then BROADCAST, in either mask.
pub fn addrtype_mt_checkentry_v1_for(
    family: Family,
    info: &XtAddrtypeInfoV1,
    hook_mask: u32,
) -> Result<(), (i32, &'static str)> {
    let (i, o) = (
        info.flags & XT_ADDRTYPE_LIMIT_IFACE_IN != 0,
        info.flags & XT_ADDRTYPE_LIMIT_IFACE_OUT != 0,
    );
    if i && o {
        return Err((
            libc::EINVAL,
            "addrtype: both incoming and outgoing interface limitation cannot be selected",
        ));
    }
    if hook_mask & ((1 << 0) | (1 << 1)) != 0 && o {
        return Err((
            libc::EINVAL,
            "addrtype: output interface limitation not valid in PREROUTING and INPUT",
        ));
    }
    if hook_mask & ((1 << 4) | (1 << 3)) != 0 && i {
        return Err((
            libc::EINVAL,
            "addrtype: input interface limitation not valid in POSTROUTING and OUTPUT",
        ));
    }
    if family == Family::Ipv6 {
        let types = info.source | info.dest;
        if types & XT_ADDRTYPE_BLACKHOLE != 0 {
            return Err((
                libc::EINVAL,
                "addrtype: ipv6 BLACKHOLE matching not supported",
            ));
        }
        if types >= XT_ADDRTYPE_PROHIBIT {
            return Err((
                libc::EINVAL,
                "addrtype: ipv6 PROHIBIT (THROW, NAT ..) matching not supported",
            ));
        }
        if types & XT_ADDRTYPE_BROADCAST != 0 {
            return Err((
                libc::EINVAL,
                "addrtype: ipv6 does not support BROADCAST matching",
            ));
        }
    }
    Ok(())
}

/// `owner_check`: known flags only; ids that map in the namespace's user namespace (bpfilter
/// serves namespaces of the initial one, where every id but `(uid_t)-1` maps) and ranges not
/// reversed. EINVAL.
pub fn owner_check(info: &XtOwnerMatchInfo) -> Result<(), (i32, &'static str)> {
    if info.r#match & !XT_OWNER_MASK != 0 {
        return Err((libc::EINVAL, "owner: unknown flags"));
    }
    let bad = |lo: u32, hi: u32| lo == u32::MAX || hi == u32::MAX || hi < lo;
    if info.r#match & XT_OWNER_UID != 0 && bad(info.uid_min, info.uid_max) {
        return Err((libc::EINVAL, "owner: invalid uid range"));
    }
    if info.r#match & XT_OWNER_GID != 0 && bad(info.gid_min, info.gid_max) {
        return Err((libc::EINVAL, "owner: invalid gid range"));
    }
    Ok(())
}

/// `tcp_mt_check`.
pub fn tcp_mt_check(info: &XtTcp) -> Result<(), (i32, &'static str)> {
    if info.invflags & !XT_TCP_INV_MASK != 0 {
        return Err((libc::EINVAL, "tcp: unknown invflags"));
    }
    Ok(())
}

/// `udp_mt_check`.
pub fn udp_mt_check(info: &XtUdp) -> Result<(), (i32, &'static str)> {
    if info.invflags & !XT_UDP_INV_MASK != 0 {
        return Err((libc::EINVAL, "udp: unknown invflags"));
    }
    Ok(())
}

/// `icmp_checkentry`.
pub fn icmp_checkentry(info: &IptIcmp) -> Result<(), (i32, &'static str)> {
    if info.invflags & !IPT_ICMP_INV != 0 {
        return Err((libc::EINVAL, "icmp: unknown invflags"));
    }
    Ok(())
}

/// `multiport_mt_check` (its `check()` helper): protocol with ports, not inverted, valid flags,
/// count <= 15.
pub fn multiport_mt_check(
    info: &XtMultiportV1,
    proto: u16,
    ip_invflags: u8,
) -> Result<(), (i32, &'static str)> {
    let proto_ok = matches!(
        proto,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP | IPPROTO_DCCP
    );
    let flags_ok = matches!(
        info.flags,
        XT_MULTIPORT_SOURCE | XT_MULTIPORT_DESTINATION | XT_MULTIPORT_EITHER
    );
    if !proto_ok
        || ip_invflags & IPT_INV_PROTO != 0
        || !flags_ok
        || usize::from(info.count) > XT_MULTI_PORTS
    {
        return Err((libc::EINVAL, "multiport: bad protocol, flags or count"));
    }
    if !multiport_valid_ranges(info) {
        return Err((libc::EINVAL, "multiport: bad port range"));
    }
    Ok(())
}

/// `multiport_valid_ranges` (in 6.18, checked against the running kernel): a range flag needs a
/// following port, that port must not itself start a range, and the range must not be
/// reversed. Flags beyond `count` are ignored.
pub fn multiport_valid_ranges(info: &XtMultiportV1) -> bool {
    let count = usize::from(info.count).min(XT_MULTI_PORTS);
    let mut i = 0;
    while i < count {
        if info.pflags[i] != 0 {
            i += 1;
            if i >= count || info.pflags[i] != 0 || info.ports[i - 1] > info.ports[i] {
                return false;
            }
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> [u8; XT_EXTENSION_MAXNAMELEN] {
        name_field(s)
    }

    #[test]
    fn find() {
        let f = Family::Ipv4;
        assert!(xt_request_find(f, ExtKind::Match, &n("tcp"), 0).is_ok());
        assert_eq!(
            xt_request_find(f, ExtKind::Match, &n("tcp"), 1).map(|_| ()),
            Err((libc::ENOENT, "unknown or unsupported extension"))
        );
        assert_eq!(
            xt_request_find(f, ExtKind::Match, &n("comment"), 1).map_err(|e| e.0),
            Err(libc::EPROTOTYPE)
        );
        assert_eq!(
            xt_request_find(f, ExtKind::Match, &n("connlimit"), 1).map_err(|e| e.0),
            Err(libc::ENOENT)
        );
        // hashlimit is registered per family: revision 0, gone from the kernel, is ENOENT
        assert!(xt_request_find(f, ExtKind::Match, &n("hashlimit"), 3).is_ok());
        assert_eq!(
            xt_request_find(f, ExtKind::Match, &n("hashlimit"), 0).map_err(|e| e.0),
            Err(libc::ENOENT)
        );
        assert_eq!(
            xt_request_find(f, ExtKind::Match, &[b'a'; 29], 0).map_err(|e| e.0),
            Err(libc::EINVAL)
        );
        assert!(xt_request_find(f, ExtKind::Target, &n(""), 0).is_ok());
        assert_eq!(
            xt_request_find(f, ExtKind::Target, &n("tcp"), 0).map_err(|e| e.0),
            Err(libc::ENOENT)
        );
        assert_eq!(
            xt_request_find(f, ExtKind::Match, &n("icmp6"), 0).map_err(|e| e.0),
            Err(libc::ENOENT)
        );
        // conntrack and state are NFPROTO_UNSPEC: a missing revision is EPROTOTYPE.
        for rev in 1..=3 {
            let s = xt_request_find(f, ExtKind::Match, &n("conntrack"), rev).expect("conntrack");
            assert_eq!(s.revision, rev);
        }
        for (name, rev) in [("conntrack", 0), ("conntrack", 4), ("state", 1)] {
            assert_eq!(
                xt_request_find(f, ExtKind::Match, &n(name), rev).map_err(|e| e.0),
                Err(libc::EPROTOTYPE),
                "{name} {rev}"
            );
        }
        // REJECT and LOG are registered per family: another revision is ENOENT.
        for name in ["REJECT", "LOG"] {
            assert!(xt_request_find(f, ExtKind::Target, &n(name), 0).is_ok());
            assert_eq!(
                xt_request_find(f, ExtKind::Target, &n(name), 1).map_err(|e| e.0),
                Err(libc::ENOENT)
            );
        }
    }

    #[test]
    fn kernel_sizes() {
        // matchsize / targetsize of the kernel's registrations (before XT_ALIGN).
        let size = |kind, name, rev| {
            SUPPORTED_IPV4
                .iter()
                .find(|s| s.kind == kind && s.name == name && s.revision == rev)
                .map(|s| s.size)
        };
        assert_eq!(size(ExtKind::Match, "conntrack", 1), Some(152));
        assert_eq!(size(ExtKind::Match, "conntrack", 2), Some(156));
        assert_eq!(size(ExtKind::Match, "conntrack", 3), Some(164));
        assert_eq!(size(ExtKind::Match, "state", 0), Some(4));
        assert_eq!(size(ExtKind::Target, "REJECT", 0), Some(4));
        assert_eq!(size(ExtKind::Target, "LOG", 0), Some(32));
    }

    #[test]
    fn target_checks() {
        let reject = SUPPORTED_IPV4
            .iter()
            .find(|s| s.name == "REJECT")
            .expect("REJECT");
        let log = SUPPORTED_IPV4
            .iter()
            .find(|s| s.name == "LOG")
            .expect("LOG");
        let ok = |ext, size, table, hooks| xt_check(ext, size, table, hooks, 0, false);
        assert!(ok(reject, 8, "filter", REJECT_HOOKS).is_ok());
        assert!(ok(reject, 8, "filter", 0).is_ok(), "unreachable entry");
        assert!(ok(reject, 4, "filter", 2).is_err(), "size before XT_ALIGN");
        assert!(ok(reject, 16, "filter", 2).is_err());
        assert!(ok(reject, 8, "security", 2).is_err(), "filter only");
        assert!(ok(reject, 8, "filter", 1 | 2).is_err(), "PREROUTING");
        assert!(ok(reject, 8, "filter", 1 << 4).is_err(), "POSTROUTING");
        assert!(ok(log, 32, "nat", 0x1f).is_ok(), "LOG: any table, any hook");
        assert!(ok(log, 40, "filter", 2).is_err());
        // reject_tg_check.
        let with = |with| IptRejectInfo { with };
        for w in [0, 1, 2, 3, 5, 6, 8, 9, u32::MAX] {
            assert!(reject_tg_check(&with(w), 0, IPT_INV_PROTO).is_ok(), "{w}");
        }
        assert!(reject_tg_check(&with(IPT_ICMP_ECHOREPLY), IPPROTO_TCP, 0).is_err());
        assert!(reject_tg_check(&with(IPT_TCP_RESET), IPPROTO_TCP, 0).is_ok());
        assert!(reject_tg_check(&with(IPT_TCP_RESET), IPPROTO_TCP, IPT_INV_SRCIP).is_ok());
        assert!(reject_tg_check(&with(IPT_TCP_RESET), 0, 0).is_err());
        assert!(reject_tg_check(&with(IPT_TCP_RESET), IPPROTO_UDP, 0).is_err());
        assert!(reject_tg_check(&with(IPT_TCP_RESET), IPPROTO_TCP, IPT_INV_PROTO).is_err());
        // log_tg_check.
        let mut l = XtLogInfo {
            level: 7,
            logflags: 0xff,
            prefix: [0; XT_LOG_PREFIX_LEN],
        };
        assert!(log_tg_check(&l).is_ok(), "flags are not checked");
        l.level = 8;
        assert!(log_tg_check(&l).is_err());
        l.level = 0;
        l.prefix = [b'x'; XT_LOG_PREFIX_LEN];
        assert!(log_tg_check(&l).is_err(), "no NUL");
        l.prefix[3] = 0;
        assert!(log_tg_check(&l).is_err(), "only the last byte counts");
        l.prefix[XT_LOG_PREFIX_LEN - 1] = 0;
        assert!(log_tg_check(&l).is_ok(), "garbage after an earlier NUL");
    }

    #[test]
    fn revisions() {
        let f = Family::Ipv4;
        assert_eq!(find_revision(f, ExtKind::Match, "multiport", 1), Ok(1));
        assert_eq!(
            find_revision(f, ExtKind::Match, "multiport", 2),
            Err(libc::EPROTONOSUPPORT)
        );
        assert_eq!(
            find_revision(f, ExtKind::Match, "multiport", 0),
            Err(libc::EPROTONOSUPPORT)
        );
        assert_eq!(
            find_revision(f, ExtKind::Match, "iprange", 0),
            Err(libc::EPROTONOSUPPORT)
        );
        assert_eq!(find_revision(f, ExtKind::Target, "ERROR", 0), Ok(0));
        // conntrack has revisions 1..=3: any of them answers the best, 3 (6.18, xt-oracle).
        for rev in 1..=3 {
            assert_eq!(find_revision(f, ExtKind::Match, "conntrack", rev), Ok(3));
        }
        for rev in [0, 4] {
            assert_eq!(
                find_revision(f, ExtKind::Match, "conntrack", rev),
                Err(libc::EPROTONOSUPPORT)
            );
        }
        assert_eq!(find_revision(f, ExtKind::Match, "state", 0), Ok(0));
        assert_eq!(find_revision(f, ExtKind::Target, "LOG", 0), Ok(0));
        assert_eq!(find_revision(f, ExtKind::Target, "REJECT", 0), Ok(0));
        for (kind, name) in [
            (ExtKind::Match, "state"),
            (ExtKind::Target, "LOG"),
            (ExtKind::Target, "REJECT"),
        ] {
            assert_eq!(
                find_revision(f, kind, name, 1),
                Err(libc::EPROTONOSUPPORT),
                "{name} 1"
            );
        }
        // A match name is no target name and the other way round.
        assert_eq!(
            find_revision(f, ExtKind::Target, "conntrack", 3),
            Err(libc::ENOENT)
        );
        assert_eq!(
            find_revision(f, ExtKind::Match, "LOG", 0),
            Err(libc::ENOENT)
        );
        // ip6tables' REJECT is another extension (ip6t_REJECT), with its own payload.
        assert_eq!(
            find_revision(Family::Ipv6, ExtKind::Target, "REJECT", 0),
            Ok(0)
        );
        assert_eq!(
            find_revision(Family::Ipv6, ExtKind::Match, "conntrack", 2),
            Ok(3)
        );
        assert_eq!(
            find_revision(Family::Ipv6, ExtKind::Target, "LOG", 0),
            Ok(0)
        );
        assert_eq!(
            find_revision(Family::Ipv6, ExtKind::Match, "icmp", 0),
            Err(libc::ENOENT)
        );
        assert_eq!(
            find_revision(Family::Ipv6, ExtKind::Match, "icmp6", 0),
            Ok(0)
        );
        // Answers of the running 6.18 kernel for these names (xt-oracle revision ...).
        for (name, rev) in [("tcp", 1), ("icmp", 1), ("comment", 1), ("iprange", 0)] {
            assert_eq!(
                find_revision(f, ExtKind::Match, name, rev),
                Err(libc::EPROTONOSUPPORT),
                "{name} {rev}"
            );
        }
        assert_eq!(
            find_revision(f, ExtKind::Target, "ERROR", 1),
            Err(libc::EPROTONOSUPPORT)
        );
        assert_eq!(find_revision(f, ExtKind::Target, "", 0), Ok(0));
    }

    #[test]
    fn checkentries() {
        assert!(tcp_mt_check(&XtTcp {
            invflags: 0x0f,
            ..Default::default()
        })
        .is_ok());
        assert!(tcp_mt_check(&XtTcp {
            invflags: 0x10,
            ..Default::default()
        })
        .is_err());
        assert!(udp_mt_check(&XtUdp {
            invflags: 0x04,
            ..Default::default()
        })
        .is_err());
        assert!(icmp_checkentry(&IptIcmp {
            invflags: 2,
            ..Default::default()
        })
        .is_err());
        let mp = XtMultiportV1 {
            count: 15,
            flags: 2,
            ..Default::default()
        };
        assert!(multiport_mt_check(&mp, IPPROTO_TCP, 0).is_ok());
        assert!(multiport_mt_check(&mp, IPPROTO_ICMP, 0).is_err());
        assert!(multiport_mt_check(&mp, IPPROTO_TCP, IPT_INV_PROTO).is_err());
        assert!(multiport_mt_check(&XtMultiportV1 { count: 16, ..mp }, IPPROTO_TCP, 0).is_err());
        assert!(multiport_mt_check(&XtMultiportV1 { flags: 3, ..mp }, IPPROTO_TCP, 0).is_err());
        // Ranges, as the 6.18 kernel answered them (EINVAL / accepted).
        let mut r = XtMultiportV1 {
            count: 3,
            flags: 1,
            ..Default::default()
        };
        r.ports[..3].copy_from_slice(&[22, 80, 443]);
        assert!(multiport_valid_ranges(&r));
        r.pflags[2] = 1;
        assert!(!multiport_valid_ranges(&r), "range flag on the last port");
        r.pflags = [0; 15];
        r.pflags[0] = 1;
        r.pflags[1] = 1;
        assert!(!multiport_valid_ranges(&r), "consecutive range flags");
        r.pflags[1] = 0;
        assert!(multiport_valid_ranges(&r));
        r.ports[0] = 100;
        assert!(!multiport_valid_ranges(&r), "reversed range");
        r.ports[0] = 80;
        assert!(multiport_valid_ranges(&r), "equal ends");
        r.pflags = [0; 15];
        r.pflags[5] = 1;
        assert!(multiport_valid_ranges(&r), "flags beyond count are ignored");
    }

    #[test]
    fn ipv6_checkentries() {
        // each as the 6.18 kernel answered it (fixtures/negative6)
        let icmp6 = |invflags| {
            icmp6_checkentry(&Ip6tIcmp {
                invflags,
                ..Default::default()
            })
        };
        assert!(icmp6(IP6T_ICMP_INV).is_ok());
        assert!(icmp6(2).is_err());
        let frag = |flags, invflags| {
            frag_mt6_check(&Ip6tFrag {
                flags,
                invflags,
                ..Default::default()
            })
        };
        assert!(
            frag(0xff, IP6T_FRAG_INV_MASK).is_ok(),
            "flags are not checked"
        );
        assert!(frag(0, 4).is_err());
        let v6h = |invflags, modeflag| {
            ipv6header_mt6_check(&Ip6tIpv6headerInfo {
                matchflags: 0x80,
                invflags,
                modeflag,
            })
        };
        assert!(v6h(0, 0).is_ok() && v6h(0xff, 0).is_ok() && v6h(1, 1).is_ok());
        assert!(v6h(1, 0).is_err(), "hard mode: all or nothing");
        let opts = |flags, invflags, optsnr| {
            hbh_mt6_check(&Ip6tOpts {
                flags,
                invflags,
                optsnr,
                ..Default::default()
            })
        };
        assert!(opts(IP6T_OPTS_LEN | IP6T_OPTS_OPTS, 1, 16).is_ok());
        assert!(opts(0, 2, 0).is_err());
        assert!(opts(0, 0, 17).is_err());
        assert!(opts(IP6T_OPTS_NSTRICT, 0, 0).is_err());
        let rt = |flags, invflags, rt_type, addrnr| {
            rt_mt6_check(&Ip6tRt {
                flags,
                invflags,
                rt_type,
                addrnr,
                ..Default::default()
            })
        };
        assert!(rt(IP6T_RT_TYP | IP6T_RT_RES | IP6T_RT_FST, 0, 0, 16).is_ok());
        assert!(rt(IP6T_RT_TYP | IP6T_RT_SGS, IP6T_RT_INV_MASK, 2, 0).is_ok());
        assert!(rt(0, 8, 0, 0).is_err());
        assert!(rt(0, 0, 0, 17).is_err());
        assert!(rt(IP6T_RT_RES, 0, 0, 0).is_err(), "no --rt-type");
        assert!(
            rt(IP6T_RT_TYP | IP6T_RT_FST_NSTRICT, 0, 2, 0).is_err(),
            "type 2"
        );
        assert!(
            rt(IP6T_RT_TYP | IP6T_RT_RES, IP6T_RT_INV_TYP, 0, 0).is_err(),
            "! type 0"
        );
        // reject_tg6_check: tcp-reset needs IP6T_F_PROTO too
        let tcp = crate::Ip6Match {
            proto: IPPROTO_TCP,
            flags: IP6T_F_PROTO,
            ..Default::default()
        };
        let with = |with| Ip6tRejectInfo { with };
        assert!(reject_tg6_check(&with(IP6T_TCP_RESET), &tcp).is_ok());
        for w in [0, 1, 2, 3, 4, 7, 8, 9, u32::MAX] {
            assert!(
                reject_tg6_check(&with(w), &crate::Ip6Match::default()).is_ok(),
                "{w}"
            );
        }
        assert!(reject_tg6_check(&with(IP6T_ICMP6_ECHOREPLY), &tcp).is_err());
        for bad in [
            crate::Ip6Match { flags: 0, ..tcp },
            crate::Ip6Match {
                proto: IPPROTO_UDP,
                ..tcp
            },
            crate::Ip6Match {
                invflags: IP6T_INV_PROTO,
                ..tcp
            },
        ] {
            assert!(reject_tg6_check(&with(IP6T_TCP_RESET), &bad).is_err());
        }
        // registrations: per family (ENOENT at another revision), hooks for mac and eui64
        let f = Family::Ipv6;
        for name in [
            "icmp6",
            "hl",
            "frag",
            "ipv6header",
            "hbh",
            "dst",
            "rt",
            "eui64",
            "mac",
        ] {
            assert!(
                xt_request_find(f, ExtKind::Match, &n(name), 0).is_ok(),
                "{name}"
            );
            assert_eq!(
                xt_request_find(f, ExtKind::Match, &n(name), 1).map_err(|e| e.0),
                Err(libc::ENOENT),
                "{name}"
            );
        }
        for name in ["hl", "frag", "rt", "eui64", "icmp6"] {
            assert!(xt_request_find(Family::Ipv4, ExtKind::Match, &n(name), 0).is_err());
        }
        assert!(xt_request_find(Family::Ipv4, ExtKind::Match, &n("mac"), 0).is_ok());
        let eui = xt_request_find(f, ExtKind::Match, &n("eui64"), 0).expect("eui64");
        assert_eq!((eui.size, eui.hooks), (4, MAC_HOOKS));
        assert!(xt_check(eui, 8, "filter", 1 << 2, 0, false).is_ok());
        assert!(
            xt_check(eui, 8, "filter", 1 << 3, 0, false).is_err(),
            "OUTPUT"
        );
        let icmp6 = xt_request_find(f, ExtKind::Match, &n("icmp6"), 0).expect("icmp6");
        assert!(xt_check(icmp6, 8, "filter", 2, IPPROTO_ICMPV6, false).is_ok());
        assert!(xt_check(icmp6, 8, "filter", 2, IPPROTO_ICMP, false).is_err());
        let reject = xt_request_find(f, ExtKind::Target, &n("REJECT"), 0).expect("REJECT");
        assert_eq!((reject.table, reject.hooks), (Some("filter"), REJECT_HOOKS));
    }

    #[test]
    fn tcpmss_registration() {
        let f = Family::Ipv4;
        let ext = xt_request_find(f, ExtKind::Match, &n("tcpmss"), 0).expect("tcpmss");
        assert_eq!((ext.size, ext.proto, ext.hooks), (6, IPPROTO_TCP, 0));
        // registered per family: another revision is ENOENT, not EPROTOTYPE
        assert_eq!(
            xt_request_find(f, ExtKind::Match, &n("tcpmss"), 1).map_err(|e| e.0),
            Err(libc::ENOENT)
        );
        assert_eq!(find_revision(f, ExtKind::Match, "tcpmss", 0), Ok(0));
        for rev in 1..=3 {
            assert_eq!(
                find_revision(f, ExtKind::Match, "tcpmss", rev),
                Err(libc::EPROTONOSUPPORT)
            );
        }
        // XT_ALIGN(6) = 8 bytes in the blob; `-p tcp` only, not inverted, any hook
        let check = |size, proto, inv| xt_check(ext, size, "filter", 0x1f, proto, inv);
        assert!(check(8, IPPROTO_TCP, false).is_ok());
        assert_eq!(
            check(6, IPPROTO_TCP, false).map_err(|e| e.0),
            Err(libc::EINVAL)
        );
        assert_eq!(
            check(16, IPPROTO_TCP, false).map_err(|e| e.0),
            Err(libc::EINVAL)
        );
        for (proto, inv) in [(IPPROTO_UDP, false), (0, false), (IPPROTO_TCP, true)] {
            assert_eq!(
                check(8, proto, inv).map_err(|e| e.0),
                Err(libc::EINVAL),
                "proto {proto} inverted {inv}"
            );
        }
    }

    #[test]
    fn hashlimit_credits_per_revision() {
        // HZ 250: revision 1 has xt_limit's 128 credits a jiffy, 3 per 1/10000 s of avg;
        // revisions 2 and 3 the 64-bit 2^39, 137438953 per 1/1000000 s
        assert_eq!(hashlimit_cpj(1, 250), 128);
        assert_eq!(hashlimit_cpj(3, 250), 1 << 39);
        assert_eq!(hashlimit_cpj(2, 1000), 1 << 37);
        assert_eq!(hashlimit_cpj_bytes(250), 1 << 24);
        assert_eq!(hashlimit_cpj_bytes(1000), 1 << 22);
        assert_eq!(hashlimit_user2credits(10_000, 1, 250), 30_000);
        assert_eq!(
            hashlimit_user2credits(1_000_000, 3, 250),
            137_438_953_000_000
        );
        assert_eq!(hashlimit_user2credits_byte(1, 250), 0);
        assert_eq!(hashlimit_user2credits_byte(1 << 20, 250), 1_024_000);
        assert_eq!(
            find_revision(Family::Ipv4, ExtKind::Match, "hashlimit", 0),
            Err(libc::EPROTONOSUPPORT)
        );
        for rev in 1..=3 {
            assert_eq!(
                find_revision(Family::Ipv4, ExtKind::Match, "hashlimit", rev),
                Ok(3)
            );
        }
    }
}
