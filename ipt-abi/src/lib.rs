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
//! Extensions: matches tcp, udp, icmp, multiport (rev 1), iprange (rev 1), comment, conntrack
//! (revisions 1, 2, 3, each kept in its own layout; [`Conntrack::info`] reads any of them in
//! revision 3's form) and state; targets standard, ERROR, REJECT and LOG (see [`ext`]).
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
//! IPv6 (ip6tables) has struct mirrors and revision answers; parsing ip6t tables is not built
//! yet.
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
