//! Errors, each carrying the kernel's errno and where in the blob the kernel would have failed.

use crate::ExtKind;

/// Which check of `check_entry_size_and_hooks` / `xt_check_entry_offsets` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryFault {
    /// Entry start not 8-aligned (`__alignof__(struct ipt_entry)`).
    Misaligned,
    /// Fewer than `sizeof(ipt_entry)` + 1 bytes left before the end of the blob.
    HeaderPastEnd,
    /// `next_offset` reaches past the end of the blob.
    NextPastEnd,
    /// `next_offset` smaller than `sizeof(ipt_entry) + sizeof(xt_entry_target)`.
    NextTooSmall,
    /// `ip_checkentry`: unknown `flags` bits.
    UnknownFlags,
    /// `ip_checkentry`: unknown `invflags` bits.
    UnknownInvflags,
    /// `target_offset` inside the entry header.
    TargetInHeader,
    /// Target header does not fit before `next_offset`.
    TargetHeaderPastNext,
    /// `target_size` smaller than `sizeof(xt_entry_target)`.
    TargetSizeTooSmall,
    /// Target reaches past `next_offset`.
    TargetPastNext,
    /// Standard target: `XT_ALIGN(target_offset + sizeof(xt_standard_target)) != next_offset`.
    StandardTargetSize,
    /// Standard target: verdict neither a positive offset nor ACCEPT/DROP/QUEUE/RETURN.
    BadVerdict,
    /// ERROR target: wrong size or `errorname` not NUL-terminated.
    BadErrorTarget,
    /// A match is not 8-aligned, too small, or overruns the target.
    BadMatchSize,
}

/// A refused ABI request. `errno()` is what the kernel would have returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    /// The request is shorter than its fixed header or than the size it announces.
    #[error("{what}: {len} bytes, kernel needs {need}")]
    Length {
        /// Which request.
        what: &'static str,
        /// Bytes received.
        len: usize,
        /// Bytes the kernel requires.
        need: u64,
    },
    /// `do_replace`: `num_counters >= INT_MAX / sizeof(struct xt_counters)`, or the counter
    /// array is larger than x_tables allocates (`xt_counters_alloc`).
    #[error("num_counters {0} too large")]
    TooManyCounters(u32),
    /// `do_replace`: `num_counters == 0`.
    #[error("num_counters is 0")]
    ZeroCounters,
    /// `xt_alloc_table_info`: `size` too large for an x_tables allocation.
    #[error("table size {0} too large")]
    TableTooBig(u32),
    /// `xt_alloc_entry_offsets`: `num_entries` too large.
    #[error("num_entries {0} too large")]
    TooManyEntries(u32),
    /// `check_entry_size_and_hooks` refused an entry.
    #[error("entry {index} at offset {offset}: {fault:?}")]
    Entry {
        /// Entry number (0-based).
        index: u32,
        /// Byte offset in the entries blob.
        offset: u32,
        /// Which check failed.
        fault: EntryFault,
    },
    /// `check_underflow`: the underflow entry of `hook` is not an unconditional ACCEPT/DROP.
    #[error("hook {hook}: underflow entry {index} at offset {offset} is not an unconditional ACCEPT/DROP")]
    Underflow {
        /// Hook number.
        hook: u8,
        /// Entry number.
        index: u32,
        /// Byte offset.
        offset: u32,
    },
    /// `translate_table`: the blob does not hold `num_entries` entries.
    #[error("blob holds {found} entries, header says {declared}")]
    EntryCount {
        /// Entries found.
        found: u32,
        /// `num_entries` of the header.
        declared: u32,
    },
    /// `xt_check_table_hooks`: a valid hook without entry/underflow, or hooks out of order.
    #[error("hook {hook}: {reason}")]
    Hooks {
        /// Hook number.
        hook: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// `mark_source_chains` failed: a loop, a jump to a non-entry offset, or falling off the end.
    #[error("hook {hook}: {reason} at entry {index} (offset {offset})")]
    Loop {
        /// Hook being walked.
        hook: u8,
        /// Entry where the walk failed.
        index: u32,
        /// Its byte offset.
        offset: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// `find_check_entry` (xt_request_find_*, xt_check_match/target, checkentry) refused a
    /// match or target.
    #[error("entry {index} (offset {offset}) {kind:?} {name:?} rev {revision}: {reason}")]
    Extension {
        /// Entry number.
        index: u32,
        /// Byte offset of the entry.
        offset: u32,
        /// Match or target.
        kind: ExtKind,
        /// Extension name (lossy UTF-8).
        name: String,
        /// Revision.
        revision: u8,
        /// What is wrong.
        reason: &'static str,
        /// The kernel's errno for it.
        errno: i32,
    },
    /// `xt_request_find_table_lock`: no such table.
    #[error("table {0:?} does not exist")]
    UnknownTable(String),
    /// `__do_replace`: `valid_hooks` differs from the table's.
    #[error("table {table}: valid_hooks {got:#x}, table has {want:#x}")]
    ValidHooks {
        /// Table name.
        table: String,
        /// Hooks in the request.
        got: u32,
        /// Hooks of the table.
        want: u32,
    },
    /// `xt_replace_table`: `num_counters` differs from the installed table's entry count.
    #[error("num_counters {num_counters}, installed table has {current} entries")]
    StaleCounters {
        /// `num_counters` of the request.
        num_counters: u32,
        /// Entries of the installed table.
        current: u32,
    },
    /// `build::TableBuilder`: a jump or goto names a chain the builder does not have.
    #[error("builder: no chain named {0:?}")]
    UnknownChain(String),
    /// `build::TableBuilder`: a rule's ip part is of the other family (an IPv4 address in an
    /// IPv6 table, or the reverse).
    #[error("builder: rule {index} of chain {chain:?} is not of the table's family")]
    WrongFamily {
        /// Chain name.
        chain: String,
        /// Rule number in the chain.
        index: usize,
    },
    /// `do_add_counters`: num_counters differs from the table's entry count.
    #[error("add_counters: {num_counters} counters, table has {entries} entries")]
    CounterCount {
        /// Counters in the request.
        num_counters: u32,
        /// Entries of the table.
        entries: u32,
    },
    /// `get_entries`: the requested size is not the table's size (the table changed).
    #[error("get_entries: size {requested}, table size is {size}")]
    StaleSize {
        /// Size asked for.
        requested: u32,
        /// Current table size.
        size: u32,
    },
    /// Revision query: the extension does not exist (ENOENT) or not at that revision
    /// (EPROTONOSUPPORT).
    #[error("{kind:?} {name:?} revision {revision}: {}", if *.errno == libc::ENOENT { "unknown extension" } else { "unsupported revision" })]
    Revision {
        /// Match or target.
        kind: ExtKind,
        /// Name asked for.
        name: String,
        /// Revision asked for.
        revision: u8,
        /// ENOENT or EPROTONOSUPPORT.
        errno: i32,
    },
}

impl AbiError {
    /// The positive errno the kernel returns for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            AbiError::Length { .. } => libc::EINVAL,
            AbiError::TooManyCounters(_) => libc::ENOMEM,
            AbiError::ZeroCounters => libc::EINVAL,
            AbiError::TableTooBig(_) => libc::ENOMEM,
            AbiError::TooManyEntries(_) => libc::ENOMEM,
            AbiError::Entry { .. } => libc::EINVAL,
            AbiError::Underflow { .. } => libc::EINVAL,
            AbiError::EntryCount { .. } => libc::EINVAL,
            AbiError::Hooks { .. } => libc::EINVAL,
            AbiError::Loop { .. } => libc::ELOOP,
            AbiError::Extension { errno, .. } => *errno,
            AbiError::UnknownTable(_) => libc::ENOENT,
            AbiError::ValidHooks { .. } => libc::EINVAL,
            AbiError::StaleCounters { .. } => libc::EAGAIN,
            AbiError::UnknownChain(_) => libc::ENOENT,
            AbiError::WrongFamily { .. } => libc::EINVAL,
            AbiError::CounterCount { .. } => libc::EINVAL,
            AbiError::StaleSize { .. } => libc::EAGAIN,
            AbiError::Revision { errno, .. } => *errno,
        }
    }
}
