//! The iptables-legacy ABI, exact to the kernel (Linux 6.18): struct mirrors, parse, validate,
//! serialize.
//!
//! Contract:
//! - [`abi`] holds zerocopy mirrors of `ipt_*`/`ip6t_*`/`xt_*` structs with compile-time size
//!   and offset checks (include/uapi/linux/netfilter*/...).
//! - [`parse_replace`] accepts exactly the IPT_SO_SET_REPLACE requests `do_replace` accepts, and
//!   for the others returns an [`AbiError`] whose [`AbiError::errno`] is the kernel's, for the
//!   first failing check in the kernel's order (net/ipv4/netfilter/ip_tables.c `do_replace`,
//!   `translate_table`, `check_entry_size_and_hooks`, `check_underflow`,
//!   `mark_source_chains`, `find_check_entry`, `__do_replace`; net/netfilter/x_tables.c
//!   `xt_check_entry_offsets`, `xt_check_table_hooks`, `xt_check_match`, `xt_check_target`).
//!   Sizes are checked before anything is allocated. On top of the kernel, extensions bpfilter
//!   does not implement are refused with ENOENT, as if the kernel lacked them.
//! - A parsed [`Table`] keeps every byte the kernel would copy back, so [`Table::get_info`] and
//!   [`Table::get_entries`] are byte-identical to the kernel's `get_info` /
//!   `copy_entries_to_user` answers (comefrom as `mark_source_chains` computes it, payload
//!   padding zeroed as `xt_data_to_user`), and `parse_replace(table.family, table.replace_blob(..))` gives
//!   the table back.
//! - No function here panics on any input; nothing allocates more than the input's size
//!   warrants.
//!
//! Both families: [`parse_replace`] takes a [`Family`]. iptables' requests carry `ipt_entry`
//! (112 bytes, [`IpMatch`]), ip6tables' `ip6t_entry` (168 bytes, [`Ip6Match`]: the ip part
//! with its padding, and [`Entry::hdr_pad`] for the 4 bytes between `comefrom` and the
//! counters); [`Entry::ip`] is an [`IpPart`] of the table's [`Table::family`]. The request
//! headers (`ip6t_replace`, `ip6t_getinfo`, `ip6t_get_entries`, `xt_counters_info`) have the
//! IPv4 layouts. IPv6 follows net/ipv6/netfilter/ip6_tables.c (`ip6_checkentry`: IP6T_F_MASK
//! and IP6T_INV_MASK; `unconditional()` compares all of `ip6t_ip6`, padding included).
//!
//! Extensions (see [`ext`], `SUPPORTED_IPV4` / `SUPPORTED_IPV6`): matches tcp, udp, icmp
//! (IPv4) / icmp6 (IPv6), multiport (rev 1), iprange (rev 1), comment, conntrack (revisions 1,
//! 2, 3, each kept in its own layout; [`Conntrack::info`] reads any of them in revision 3's
//! form), state, mark, pkttype, tcpmss, limit and mac for both families; addrtype, owner,
//! recent and hashlimit for IPv4; hl, frag, ipv6header, hbh, dst, rt and eui64 for IPv6.
//! Targets standard, ERROR, LOG, and REJECT ([`Target::Reject`] with `ipt_reject_info` for
//! IPv4, [`Target::Reject6`] with `ip6t_reject_info` for IPv6).
//!
//! For the translator: the kernel accepts two things bpfilter cannot run, so they parse and the
//! translator must refuse them (ENOENT): [`Verdict::Queue`] (NF_QUEUE); and
//! a [`Verdict::Jump`] whose `index` is `u32::MAX` (its offset is no entry start) can only sit
//! in an entry no hook reaches (`comefrom == 0`), which never runs.
//!
//! GET_ENTRIES detail: the kernel writes neither the 40-byte `ipt_get_entries` header nor the
//! bytes after the NUL of match/target names; [`Table::get_entries`] writes the header with
//! the table name and size and zeroes those name tails. Copy back only what the kernel writes
//! if the caller's buffer must stay untouched there.
//!
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod abi;
pub mod build;
mod error;
pub mod ext;
mod model;
mod parse;

pub use abi::XtCounters;
pub use error::{AbiError, EntryFault};
pub use model::*;
pub use parse::*;

/// Address family of a request (iptables or ip6tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (iptables, NFPROTO_IPV4, level IPPROTO_IP).
    Ipv4,
    /// IPv6 (ip6tables, NFPROTO_IPV6, level IPPROTO_IPV6).
    Ipv6,
}

/// Kind of extension in a revision query or error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtKind {
    /// A match (`-m`).
    Match,
    /// A target (`-j`).
    Target,
}
