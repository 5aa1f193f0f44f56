//! Decoding and validation of iptables requests, in the kernel's order and with its errno.
//!
//! `parse_replace` follows `do_replace` -> `translate_table` -> `__do_replace`
//! (net/ipv4/netfilter/ip_tables.c, Linux 6.18) check by check. The kernel returns the first
//! failure it meets, so the order below is the kernel's:
//! 1. `do_replace`: optlen >= sizeof(ipt_replace) (EINVAL); num_counters < INT_MAX/16 (ENOMEM);
//!    num_counters != 0 (EINVAL); optlen >= sizeof(ipt_replace) + size (EINVAL);
//!    `xt_alloc_table_info(size)` within XT_MAX_TABLE_SIZE (ENOMEM).
//! 2. `translate_table`: `xt_alloc_entry_offsets(num_entries)` (ENOMEM); every entry through
//!    `check_entry_size_and_hooks` (alignment, bounds, `ip_checkentry`,
//!    `xt_check_entry_offsets`, hook entry/underflow assignment with `check_underflow`): EINVAL;
//!    entry count == num_entries (EINVAL); `xt_check_table_hooks` (EINVAL);
//!    `mark_source_chains` (ELOOP); `find_check_entry` on every entry in order (each match:
//!    lookup ENOENT/EPROTOTYPE/EINVAL, `xt_check_match` size/proto EINVAL, checkentry; then the
//!    target likewise, `xt_check_target` also checking `.table` and `.hooks` against the
//!    entry's comefrom, EINVAL).
//! 3. `__do_replace`: `xt_counters_alloc(num_counters)` (ENOMEM); table lookup (ENOENT);
//!    valid_hooks equal to the table's (EINVAL); `xt_replace_table`: num_counters equal to the
//!    installed table's entry count (EAGAIN).
//!
//! bpfilter refuses on top (ENOENT, at the point where the kernel looks the extension up)
//! every extension it does not implement, and the QUEUE verdict.

use zerocopy::FromBytes;

use crate::abi::*;
use crate::ext::{self, Supported};
use crate::model::*;
use crate::{AbiError, EntryFault, ExtKind, Family};

/// A decoded, fully validated IPT_SO_SET_REPLACE request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replace {
    /// Table name.
    pub name: String,
    /// Entry count of the table being replaced (size of the counter array to return).
    pub num_counters: u32,
    /// Caller's pointer for the old counters (only meaningful in the caller's address space).
    pub counters_ptr: u64,
    /// The new table, as the kernel would hold it.
    pub table: Table,
}

/// A decoded IPT_SO_SET_ADD_COUNTERS request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCounters {
    /// iptables or ip6tables (the request layouts are the same).
    pub family: Family,
    /// Table name.
    pub name: String,
    /// Counters to add, one per entry.
    pub counters: Vec<XtCounters>,
}

impl AddCounters {
    /// The checks `do_add_counters` makes against the installed table: the name must be the
    /// table's (ENOENT) and the counter count its entry count (EINVAL). A table of the other
    /// family is another table (ENOENT).
    pub fn check_against(&self, table: &Table) -> Result<(), AbiError> {
        if self.name != table.name || self.family != table.family {
            return Err(AbiError::UnknownTable(self.name.clone()));
        }
        if self.counters.len() != table.entries.len() {
            return Err(AbiError::CounterCount {
                num_counters: self.counters.len() as u32,
                entries: table.num_entries(),
            });
        }
        Ok(())
    }
}

/// Table names bpfilter serves, with their valid hooks.
pub fn table_valid_hooks(name: &str) -> Option<u32> {
    (name == "filter").then_some(FILTER_VALID_HOOKS)
}

/// The iptables tables the kernel has (iptable_filter, _nat, _mangle, _raw, _security) and
/// their valid hooks. For a table bpfilter does not serve, the kernel's valid_hooks check
/// still decides EINVAL before bpfilter's ENOENT.
pub const KERNEL_TABLES: &[(&str, u32)] = &[
    ("filter", FILTER_VALID_HOOKS),
    ("nat", (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4)),
    ("mangle", 0x1f),
    ("raw", (1 << 0) | (1 << 3)),
    ("security", FILTER_VALID_HOOKS),
];

fn name_string(field: &[u8]) -> String {
    String::from_utf8_lossy(c_str(field)).into_owned()
}

/// Decode and validate an IPT_SO_SET_REPLACE request exactly as `do_replace` would.
/// `current_entries` is the installed table's entry count (None skips the EAGAIN check).
/// `family` picks the entry layout and the extensions (`ip_tables.c` or `ip6_tables.c`, whose
/// `do_replace` and `translate_table` make the same checks on their own entry struct).
pub fn parse_replace(
    family: Family,
    blob: &[u8],
    current_entries: Option<u32>,
) -> Result<Replace, AbiError> {
    // do_replace
    let Ok((hdr, rest)) = IptReplace::read_from_prefix(blob) else {
        return Err(AbiError::Length {
            what: "ipt_replace",
            len: blob.len(),
            need: IPT_REPLACE_SIZE as u64,
        });
    };
    if u64::from(hdr.num_counters) >= i32::MAX as u64 / core::mem::size_of::<XtCounters>() as u64 {
        return Err(AbiError::TooManyCounters(hdr.num_counters));
    }
    if hdr.num_counters == 0 {
        return Err(AbiError::ZeroCounters);
    }
    let need = u64::from(hdr.size) + IPT_REPLACE_SIZE as u64;
    if (blob.len() as u64) < need {
        return Err(AbiError::Length {
            what: "ipt_replace + entries",
            len: blob.len(),
            need,
        });
    }
    // The kernel forces a NUL into the last byte of the name.
    let name = name_string(&hdr.name[..XT_TABLE_MAXNAMELEN - 1]);
    xt_alloc_table_info(hdr.size)?;
    let entries = &rest[..hdr.size as usize];
    let mut table = translate_table(family, &hdr, &name, entries)?;
    table.name = name.clone();
    // __do_replace
    xt_counters_alloc(hdr.num_counters)?;
    let Some(&(_, valid_hooks)) = KERNEL_TABLES.iter().find(|(n, _)| *n == name) else {
        return Err(AbiError::UnknownTable(name));
    };
    if hdr.valid_hooks != valid_hooks {
        return Err(AbiError::ValidHooks {
            table: name,
            got: hdr.valid_hooks,
            want: valid_hooks,
        });
    }
    if table_valid_hooks(&name).is_none() {
        return Err(AbiError::UnknownTable(name));
    }
    // xt_replace_table
    if let Some(current) = current_entries {
        if current != hdr.num_counters {
            return Err(AbiError::StaleCounters {
                num_counters: hdr.num_counters,
                current,
            });
        }
    }
    Ok(Replace {
        name,
        num_counters: hdr.num_counters,
        counters_ptr: hdr.counters,
        table,
    })
}

/// `xt_alloc_table_info`: the kernel refuses sizes whose allocation would reach
/// XT_MAX_TABLE_SIZE (checked before allocating anything).
pub fn xt_alloc_table_info(size: u32) -> Result<(), AbiError> {
    if XT_TABLE_INFO_SIZE + u64::from(size) >= XT_MAX_TABLE_SIZE {
        return Err(AbiError::TableTooBig(size));
    }
    Ok(())
}

/// `xt_alloc_entry_offsets`: at most XT_MAX_TABLE_SIZE / sizeof(unsigned int) entries.
pub fn xt_alloc_entry_offsets(number: u32) -> Result<(), AbiError> {
    if u64::from(number) > XT_MAX_TABLE_SIZE / 4 {
        return Err(AbiError::TooManyEntries(number));
    }
    Ok(())
}

/// `xt_counters_alloc`: at most XT_MAX_TABLE_SIZE bytes of counters.
pub fn xt_counters_alloc(num_counters: u32) -> Result<(), AbiError> {
    if u64::from(num_counters) * core::mem::size_of::<XtCounters>() as u64 > XT_MAX_TABLE_SIZE {
        return Err(AbiError::TooManyCounters(num_counters));
    }
    Ok(())
}

/// What the checks after the size walk need to know about each raw entry.
#[derive(Debug, Clone, Copy)]
struct RawEntry {
    offset: u32,
    hdr: Hdr,
    /// The kernel's `unconditional()`: target_offset == sizeof(ipt_entry) and ip all zero.
    uncond: bool,
    /// Target name is XT_STANDARD_TARGET ("").
    standard: bool,
    /// First int of the target data (the verdict for the standard target).
    verdict: i32,
}

/// The family-independent view of an `ipt_entry` / `ip6t_entry` header.
#[derive(Debug, Clone, Copy)]
struct Hdr {
    ip: IpPart,
    nfcache: u32,
    target_offset: u16,
    next_offset: u16,
    pad: [u8; 4],
}

impl Hdr {
    fn read(family: Family, b: &[u8]) -> Option<Hdr> {
        match family {
            Family::Ipv4 => IptEntry::read_from_prefix(b).ok().map(|(h, _)| Hdr {
                ip: IpPart::V4(IpMatch::from_raw(&h.ip)),
                nfcache: h.nfcache,
                target_offset: h.target_offset,
                next_offset: h.next_offset,
                pad: [0; 4],
            }),
            Family::Ipv6 => Ip6tEntry::read_from_prefix(b).ok().map(|(h, _)| Hdr {
                ip: IpPart::V6(Ip6Match::from_raw(&h.ipv6)),
                nfcache: h.nfcache,
                target_offset: h.target_offset,
                next_offset: h.next_offset,
                pad: h.pad,
            }),
        }
    }
}

fn read_i32(b: &[u8], off: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    i32::from_ne_bytes(a)
}

fn read_u16(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

/// `translate_table`: walk, check and type every entry of the blob. `name` is the request's
/// table name, which `xt_check_target` compares with a target's `.table`.
fn translate_table(
    family: Family,
    repl: &IptReplace,
    name: &str,
    blob: &[u8],
) -> Result<Table, AbiError> {
    let mut hook_entry = [u32::MAX; NF_INET_NUMHOOKS];
    let mut underflow = [u32::MAX; NF_INET_NUMHOOKS];
    xt_alloc_entry_offsets(repl.num_entries)?;
    let size = blob.len();
    // An entry is at least 144 bytes: bound the capacity by the blob, not by the header.
    let mut raw: Vec<RawEntry> = Vec::with_capacity(
        (repl.num_entries as usize).min(size / (entry_size(family) + XT_ENTRY_TARGET_SIZE) + 1),
    );
    let mut pos = 0usize;
    while pos < size {
        let index = raw.len() as u32;
        let r = check_entry_size_and_hooks(
            family,
            blob,
            pos,
            index,
            repl,
            &mut hook_entry,
            &mut underflow,
        )?;
        pos += usize::from(r.hdr.next_offset);
        raw.push(r);
    }
    if raw.len() as u64 != u64::from(repl.num_entries) {
        return Err(AbiError::EntryCount {
            found: raw.len() as u32,
            declared: repl.num_entries,
        });
    }
    xt_check_table_hooks(&hook_entry, &underflow, repl.valid_hooks, &raw)?;
    let offsets: Vec<u32> = raw.iter().map(|r| r.offset).collect();
    let comefrom = mark_source_chains(&raw, &offsets, &hook_entry, repl.valid_hooks)?;
    let mut entries = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        entries.push(find_check_entry(
            family,
            blob,
            r,
            i as u32,
            &offsets,
            comefrom[i],
            name,
        )?);
    }
    Ok(Table {
        family,
        name: String::new(),
        valid_hooks: repl.valid_hooks,
        hook_entry,
        underflow,
        entries,
    })
}

/// `check_entry_size_and_hooks`: bounds, `ip_checkentry`, `xt_check_entry_offsets`, and the
/// hook entry/underflow assignment (with `check_underflow`) for one entry.
fn check_entry_size_and_hooks(
    family: Family,
    blob: &[u8],
    pos: usize,
    index: u32,
    repl: &IptReplace,
    hook_entry: &mut [u32; NF_INET_NUMHOOKS],
    underflow: &mut [u32; NF_INET_NUMHOOKS],
) -> Result<RawEntry, AbiError> {
    let offset = pos as u32;
    let fail = |fault| AbiError::Entry {
        index,
        offset,
        fault,
    };
    let limit = blob.len();
    if pos % 8 != 0 {
        return Err(fail(EntryFault::Misaligned));
    }
    let base = entry_size(family);
    if pos + base >= limit {
        return Err(fail(EntryFault::HeaderPastEnd));
    }
    let Some(hdr) = Hdr::read(family, &blob[pos..]) else {
        return Err(fail(EntryFault::HeaderPastEnd));
    };
    let next = usize::from(hdr.next_offset);
    if pos + next > limit {
        return Err(fail(EntryFault::NextPastEnd));
    }
    if next < base + XT_ENTRY_TARGET_SIZE {
        return Err(fail(EntryFault::NextTooSmall));
    }
    match &hdr.ip {
        IpPart::V4(ip) => ip_checkentry(ip.flags, ip.invflags),
        IpPart::V6(ip) => ip6_checkentry(ip),
    }
    .map_err(fail)?;
    let e = &blob[pos..pos + next];
    let (standard, verdict) =
        xt_check_entry_offsets(e, base, usize::from(hdr.target_offset)).map_err(fail)?;
    let uncond = usize::from(hdr.target_offset) == base && hdr.ip.is_unconditional();
    let r = RawEntry {
        offset,
        hdr,
        uncond,
        standard,
        verdict,
    };
    for h in 0..NF_INET_NUMHOOKS {
        if repl.valid_hooks & (1 << h) == 0 {
            continue;
        }
        if offset == repl.hook_entry[h] {
            hook_entry[h] = offset;
        }
        if offset == repl.underflow[h] {
            if !check_underflow(&r) {
                return Err(AbiError::Underflow {
                    hook: h as u8,
                    index,
                    offset,
                });
            }
            underflow[h] = offset;
        }
    }
    Ok(r)
}

/// `ip_checkentry`: no unknown flag or invflag bits.
fn ip_checkentry(flags: u8, invflags: u8) -> Result<(), EntryFault> {
    if flags & !IPT_F_MASK != 0 {
        return Err(EntryFault::UnknownFlags);
    }
    if invflags & !IPT_INV_MASK != 0 {
        return Err(EntryFault::UnknownInvflags);
    }
    Ok(())
}

/// `ip6_checkentry`: no unknown flag or invflag bits (IP6T_F_MASK, IP6T_INV_MASK). Neither
/// `tos` nor the padding is looked at.
fn ip6_checkentry(ip: &Ip6Match) -> Result<(), EntryFault> {
    if ip.flags & !IP6T_F_MASK != 0 {
        return Err(EntryFault::UnknownFlags);
    }
    if ip.invflags & !IP6T_INV_MASK != 0 {
        return Err(EntryFault::UnknownInvflags);
    }
    Ok(())
}

/// `verdict_ok` (x_tables.c): a positive offset, or ACCEPT, DROP, QUEUE, RETURN.
fn verdict_ok(verdict: i32) -> bool {
    verdict > 0
        || matches!(
            verdict,
            VERDICT_ACCEPT | VERDICT_DROP | VERDICT_QUEUE | XT_RETURN
        )
}

/// `xt_check_entry_offsets` on one entry's bytes (`e.len() == next_offset`). Returns whether
/// the target is the standard target, and its verdict (first int of the target data, 0 when
/// the target is too short to hold one).
/// `base` is the size of the family's entry header (`elems - base` in the kernel).
fn xt_check_entry_offsets(e: &[u8], base: usize, to: usize) -> Result<(bool, i32), EntryFault> {
    let next = e.len();
    if to < base {
        return Err(EntryFault::TargetInHeader);
    }
    if to + XT_ENTRY_TARGET_SIZE > next {
        return Err(EntryFault::TargetHeaderPastNext);
    }
    let tsize = usize::from(read_u16(e, to));
    if tsize < XT_ENTRY_TARGET_SIZE {
        return Err(EntryFault::TargetSizeTooSmall);
    }
    if to + tsize > next {
        return Err(EntryFault::TargetPastNext);
    }
    let name = &e[to + 2..to + 2 + XT_EXTENSION_MAXNAMELEN];
    let standard = name[0] == 0;
    let verdict = if to + XT_ENTRY_TARGET_SIZE + 4 <= next {
        read_i32(e, to + XT_ENTRY_TARGET_SIZE)
    } else {
        0
    };
    if standard {
        if xt_align(to + XT_STANDARD_TARGET_SIZE) != next {
            return Err(EntryFault::StandardTargetSize);
        }
        if !verdict_ok(verdict) {
            return Err(EntryFault::BadVerdict);
        }
    } else if c_str(name) == XT_ERROR_TARGET.as_bytes() {
        // error_tg_ok: exact size and a NUL inside errorname.
        if tsize != XT_ERROR_TARGET_SIZE {
            return Err(EntryFault::BadErrorTarget);
        }
        let errorname =
            &e[to + XT_ENTRY_TARGET_SIZE..to + XT_ENTRY_TARGET_SIZE + XT_FUNCTION_MAXNAMELEN];
        if !errorname.contains(&0) {
            return Err(EntryFault::BadErrorTarget);
        }
    }
    xt_check_entry_match(e, base, to)?;
    Ok((standard, verdict))
}

/// `xt_check_entry_match`: matches are 8-aligned, at least a header each, and end exactly at
/// the target. Entry starts are 8-aligned, so alignment relative to the entry is enough.
fn xt_check_entry_match(e: &[u8], start: usize, target: usize) -> Result<(), EntryFault> {
    let mut length = target as i64 - start as i64;
    if length == 0 {
        return Ok(());
    }
    let mut pos = start;
    loop {
        if pos % 8 != 0 {
            return Err(EntryFault::BadMatchSize);
        }
        if length < XT_ENTRY_MATCH_SIZE as i64 {
            return Err(EntryFault::BadMatchSize);
        }
        let msize = usize::from(read_u16(e, pos));
        if msize < XT_ENTRY_MATCH_SIZE {
            return Err(EntryFault::BadMatchSize);
        }
        if msize as i64 > length {
            return Err(EntryFault::BadMatchSize);
        }
        length -= msize as i64;
        pos += msize;
        if length <= 0 {
            return Ok(());
        }
    }
}

/// `check_underflow`: unconditional, standard target, verdict ACCEPT or DROP.
fn check_underflow(r: &RawEntry) -> bool {
    r.uncond && r.standard && matches!(r.verdict, VERDICT_ACCEPT | VERDICT_DROP)
}

/// `xt_check_table_hooks`: every valid hook has an entry and an underflow, and valid hooks'
/// entries and underflows strictly increase with the hook number.
fn xt_check_table_hooks(
    hook_entry: &[u32; NF_INET_NUMHOOKS],
    underflow: &[u32; NF_INET_NUMHOOKS],
    valid_hooks: u32,
    _raw: &[RawEntry],
) -> Result<(), AbiError> {
    let mut max_entry = 0u32;
    let mut max_uflow = 0u32;
    let mut check = false;
    for i in 0..NF_INET_NUMHOOKS {
        if valid_hooks & (1 << i) == 0 {
            continue;
        }
        let hook = i as u8;
        if hook_entry[i] == u32::MAX {
            return Err(AbiError::Hooks {
                hook,
                reason: "no entry at the hook's entry offset",
            });
        }
        if underflow[i] == u32::MAX {
            return Err(AbiError::Hooks {
                hook,
                reason: "no entry at the hook's underflow offset",
            });
        }
        if check {
            if max_uflow > underflow[i] {
                return Err(AbiError::Hooks {
                    hook,
                    reason: "unsorted underflow",
                });
            }
            if max_uflow == underflow[i] {
                return Err(AbiError::Hooks {
                    hook,
                    reason: "duplicate underflow",
                });
            }
            if max_entry > hook_entry[i] {
                return Err(AbiError::Hooks {
                    hook,
                    reason: "unsorted entry",
                });
            }
            if max_entry == hook_entry[i] {
                return Err(AbiError::Hooks {
                    hook,
                    reason: "duplicate entry",
                });
            }
        }
        max_entry = hook_entry[i];
        max_uflow = underflow[i];
        check = true;
    }
    Ok(())
}

const NUMHOOKS_BIT: u32 = 1 << NF_INET_NUMHOOKS;

/// `mark_source_chains`: walk every valid hook's chain graph the kernel's way (the packet
/// counter slot as back pointer, bit NF_INET_NUMHOOKS of comefrom as "on the current path"),
/// failing on loops, jumps to offsets that are not entry starts, and falling off the end.
/// Returns each entry's comefrom (bitmask of hooks that reach it), as GET_ENTRIES shows it.
fn mark_source_chains(
    raw: &[RawEntry],
    offsets: &[u32],
    hook_entry: &[u32; NF_INET_NUMHOOKS],
    valid_hooks: u32,
) -> Result<Vec<u32>, AbiError> {
    let n = raw.len();
    let mut comefrom = vec![0u32; n];
    // Back pointers as entry indices (the kernel stores byte offsets; the mapping is 1:1, and
    // index 0 is offset 0, which is what the cleared counters hold).
    let mut back = vec![0usize; n];
    let idx_of = |off: u32| offsets.binary_search(&off).ok();
    for (hook, &entry_off) in hook_entry.iter().enumerate() {
        if valid_hooks & (1 << hook) == 0 {
            continue;
        }
        let err = |i: usize, reason| AbiError::Loop {
            hook: hook as u8,
            index: i as u32,
            offset: raw[i].offset,
            reason,
        };
        let Some(start) = idx_of(entry_off) else {
            continue;
        };
        let mut pos = start;
        back[pos] = pos;
        // Each entry is entered fresh, left by its jump and moved past at most once per hook,
        // so a walk takes at most about 3n arrivals; the cap only guards against a bug here.
        let mut budget = 16 * (n as u64 + 1);
        'walk: loop {
            budget -= 1;
            if budget == 0 {
                return Err(err(pos, "walk too long"));
            }
            let e = &raw[pos];
            let visited = comefrom[pos] & (1 << hook) != 0;
            if comefrom[pos] & NUMHOOKS_BIT != 0 {
                return Err(err(pos, "loop"));
            }
            comefrom[pos] |= (1 << hook) | NUMHOOKS_BIT;
            if (e.uncond && e.standard && e.verdict < 0) || visited {
                // Return: backtrack through the last big jump.
                let mut cur = pos;
                loop {
                    comefrom[cur] ^= NUMHOOKS_BIT;
                    let oldpos = cur;
                    let p = back[cur];
                    back[cur] = 0;
                    if p == oldpos {
                        // Back at the hook's first entry: this hook is done.
                        break 'walk;
                    }
                    cur = p;
                    if oldpos != cur + 1 {
                        break;
                    }
                }
                // Move along one, past the jump we came back through.
                if cur + 1 >= n {
                    return Err(err(cur, "fell off the end of the table"));
                }
                back[cur + 1] = cur;
                pos = cur + 1;
            } else {
                let newpos = if e.standard && e.verdict >= 0 {
                    match idx_of(e.verdict as u32) {
                        Some(i) => i,
                        None => {
                            return Err(err(pos, "jump to an offset that is not an entry start"))
                        }
                    }
                } else {
                    if pos + 1 >= n {
                        return Err(err(pos, "fell off the end of the table"));
                    }
                    pos + 1
                };
                back[newpos] = pos;
                pos = newpos;
            }
        }
    }
    Ok(comefrom)
}

fn ext_err(
    index: u32,
    offset: u32,
    kind: ExtKind,
    name: &[u8],
    revision: u8,
    (errno, reason): (i32, &'static str),
) -> AbiError {
    AbiError::Extension {
        index,
        offset,
        kind,
        name: name_string(name),
        revision,
        reason,
        errno,
    }
}

/// `find_check_entry`: look up and check every match (in order), then the target, and build
/// the typed entry. The target's check gets the table name and the entry's hook mask
/// (`comefrom`), as `check_target` passes them.
fn find_check_entry(
    family: Family,
    blob: &[u8],
    r: &RawEntry,
    index: u32,
    offsets: &[u32],
    comefrom: u32,
    table: &str,
) -> Result<Entry, AbiError> {
    let off = r.offset as usize;
    let e = &blob[off..off + usize::from(r.hdr.next_offset)];
    let to = usize::from(r.hdr.target_offset);
    let ip = r.hdr.ip;
    // IPT_INV_PROTO and IP6T_INV_PROTO are the same bit
    let inv_proto = ip.inverted(IPT_INV_PROTO);
    let mut matches = Vec::new();
    let mut pos = entry_size(family);
    while pos < to {
        let Ok((mh, data)) = XtEntryMatch::read_from_prefix(&e[pos..]) else {
            // xt_check_entry_match guarantees a full header before the target.
            break;
        };
        let msize = usize::from(mh.match_size);
        let fail = |x| ext_err(index, r.offset, ExtKind::Match, &mh.name, mh.revision, x);
        let ext =
            ext::xt_request_find(family, ExtKind::Match, &mh.name, mh.revision).map_err(fail)?;
        let size = msize - XT_ENTRY_MATCH_SIZE;
        matches.push(check_match(ext, &data[..size], &ip, table, comefrom).map_err(fail)?);
        pos += msize;
    }
    let Ok((th, tdata)) = XtEntryTarget::read_from_prefix(&e[to..]) else {
        return Err(AbiError::Entry {
            index,
            offset: r.offset,
            fault: EntryFault::TargetHeaderPastNext,
        });
    };
    let tsize = usize::from(th.target_size);
    let fail = |x| ext_err(index, r.offset, ExtKind::Target, &th.name, th.revision, x);
    let ext = ext::xt_request_find(family, ExtKind::Target, &th.name, th.revision).map_err(fail)?;
    let data = &tdata[..tsize - XT_ENTRY_TARGET_SIZE];
    ext::xt_check(ext, data.len(), table, comefrom, ip.proto(), inv_proto).map_err(fail)?;
    let target = if let (true, IpPart::V6(ip6)) = (ext.name == "REJECT", &ip) {
        let p: Ip6tRejectInfo = payload(data).map_err(fail)?;
        ext::reject_tg6_check(&p, ip6).map_err(fail)?;
        Target::Reject6(p)
    } else if ext.name == "REJECT" {
        let p: IptRejectInfo = payload(data).map_err(fail)?;
        ext::reject_tg_check(&p, ip.proto(), ip.invflags()).map_err(fail)?;
        Target::Reject(p)
    } else if ext.name == "LOG" {
        let p: XtLogInfo = payload(data).map_err(fail)?;
        ext::log_tg_check(&p).map_err(fail)?;
        Target::Log(p)
    } else if ext.name == XT_STANDARD_TARGET {
        let verdict = read_i32(data, 0);
        Target::Standard(match verdict {
            VERDICT_ACCEPT => Verdict::Accept,
            VERDICT_DROP => Verdict::Drop,
            XT_RETURN => Verdict::Return,
            VERDICT_QUEUE => Verdict::Queue,
            v if v > 0 => {
                // mark_source_chains vets the jumps of reachable entries only; an entry no hook
                // reaches (comefrom 0) may jump anywhere, and the kernel accepts that.
                let index = offsets
                    .binary_search(&(v as u32))
                    .map_or(u32::MAX, |i| i as u32);
                Verdict::Jump {
                    offset: v as u32,
                    index,
                }
            }
            // xt_check_entry_offsets already refused every other verdict.
            _ => {
                return Err(AbiError::Entry {
                    index,
                    offset: r.offset,
                    fault: EntryFault::BadVerdict,
                })
            }
        })
    } else {
        let mut name = [0u8; XT_FUNCTION_MAXNAMELEN];
        name.copy_from_slice(&data[..XT_FUNCTION_MAXNAMELEN]);
        Target::Error(ErrorName(name))
    };
    // xt_check_entry_offsets lets a non-standard target end before next_offset.
    let trailer = e[(to + tsize).min(e.len())..].to_vec();
    Ok(Entry {
        index,
        offset: r.offset,
        ip,
        nfcache: r.hdr.nfcache,
        hdr_pad: r.hdr.pad,
        comefrom,
        matches,
        target,
        trailer,
    })
}

/// `check_match` -> `xt_check_match` (size, protocol) then the extension's checkentry.
fn check_match(
    ext: &Supported,
    data: &[u8],
    ip: &IpPart,
    table: &str,
    hook_mask: u32,
) -> Result<Match, (i32, &'static str)> {
    ext::xt_check(
        ext,
        data.len(),
        table,
        hook_mask,
        ip.proto(),
        ip.inverted(IPT_INV_PROTO),
    )?;
    // The size check above guarantees data holds the whole struct.
    const SHORT: (i32, &str) = (libc::EINVAL, "invalid match size");
    Ok(match ext.name {
        "tcp" => {
            let (p, _) = XtTcp::read_from_prefix(data).map_err(|_| SHORT)?;
            ext::tcp_mt_check(&p)?;
            Match::Tcp(p)
        }
        "udp" => {
            let (p, _) = XtUdp::read_from_prefix(data).map_err(|_| SHORT)?;
            ext::udp_mt_check(&p)?;
            Match::Udp(p)
        }
        "icmp" => {
            let (p, _) = IptIcmp::read_from_prefix(data).map_err(|_| SHORT)?;
            ext::icmp_checkentry(&p)?;
            Match::Icmp(p)
        }
        "multiport" => {
            let (p, _) = XtMultiportV1::read_from_prefix(data).map_err(|_| SHORT)?;
            ext::multiport_mt_check(&p, ip.proto(), ip.invflags())?;
            Match::Multiport(p)
        }
        "iprange" => {
            let (p, _) = XtIprangeMtinfo::read_from_prefix(data).map_err(|_| SHORT)?;
            Match::IpRange(p)
        }
        // xt_pkttype has no checkentry
        "pkttype" => {
            let (p, _) = XtPkttypeInfo::read_from_prefix(data).map_err(|_| SHORT)?;
            Match::PktType(p)
        }
        // xt_tcpmss has no checkentry (xt_check_match tested `.proto`)
        "tcpmss" => {
            let (p, _) = XtTcpmssMatchInfo::read_from_prefix(data).map_err(|_| SHORT)?;
            Match::TcpMss(p)
        }
        // xt_mark has no checkentry for the match
        "mark" => {
            let (p, _) = XtMarkMtinfo1::read_from_prefix(data).map_err(|_| SHORT)?;
            Match::Mark(p)
        }
        "comment" => {
            let (p, _) = XtCommentInfo::read_from_prefix(data).map_err(|_| SHORT)?;
            Match::Comment(Box::new(p))
        }
        // conntrack_mt_check / state_mt_check: only nf_ct_netns_get (see ext).
        "conntrack" => Match::Conntrack(Box::new(match ext.revision {
            1 => Conntrack::V1(payload(data)?),
            2 => Conntrack::V2(payload(data)?),
            3 => Conntrack::V3(payload(data)?),
            _ => return Err((libc::ENOENT, "unknown or unsupported extension")),
        })),
        "state" => Match::State(payload(data)?),
        "limit" => {
            let p: XtRateinfo = payload(data)?;
            ext::limit_mt_check(&p)?;
            Match::Limit(Limit::from_request(&p))
        }
        "addrtype" => match ext.revision {
            0 => Match::Addrtype(payload(data)?),
            _ => {
                let p: XtAddrtypeInfoV1 = payload(data)?;
                ext::addrtype_mt_checkentry_v1_for(ip.family(), &p, hook_mask)?;
                Match::AddrtypeV1(p)
            }
        },
        "owner" => {
            let p: XtOwnerMatchInfo = payload(data)?;
            ext::owner_check(&p)?;
            Match::Owner(p)
        }
        "recent" => {
            let recent = match ext.revision {
                0 => Recent::V0(payload(data)?),
                _ => Recent::V1(payload(data)?),
            };
            ext::recent_mt_check(recent.info())?;
            Match::Recent(Box::new(recent))
        }
        // hashlimit_mt_check_v1/_v2/hashlimit_mt_check: the name, then the common checks on
        // the configuration in revision 3's form (for revision 3 the rule's own, which the
        // truncation of size and max changes as the kernel's does)
        "hashlimit" => Match::Hashlimit(Box::new(match ext.revision {
            1 => {
                let mut p: XtHashlimitMtinfo1 = payload(data)?;
                ext::xt_check_proc_name(&p.name)?;
                ext::hashlimit_mt_check_common_for(
                    ip.family(),
                    &mut ext::hashlimit_cfg3_of1(&p.cfg),
                    1,
                )?;
                p.hinfo = 0;
                Hashlimit::V1(p)
            }
            2 => {
                let mut p: XtHashlimitMtinfo2 = payload(data)?;
                ext::xt_check_proc_name(&p.name)?;
                ext::hashlimit_mt_check_common_for(
                    ip.family(),
                    &mut ext::hashlimit_cfg3_of2(&p.cfg),
                    2,
                )?;
                p.hinfo = 0;
                Hashlimit::V2(p)
            }
            3 => {
                let mut p: XtHashlimitMtinfo3 = payload(data)?;
                ext::xt_check_proc_name(&p.name)?;
                ext::hashlimit_mt_check_common_for(ip.family(), &mut p.cfg, 3)?;
                p.hinfo = 0;
                Hashlimit::V3(p)
            }
            _ => return Err((libc::ENOENT, "unknown or unsupported extension")),
        })),
        "icmp6" => {
            let p: Ip6tIcmp = payload(data)?;
            ext::icmp6_checkentry(&p)?;
            Match::Icmp6(p)
        }
        // xt_hl.c has no checkentry for hl_mt6: any mode and limit
        "hl" => Match::Hl(payload(data)?),
        "frag" => {
            let p: Ip6tFrag = payload(data)?;
            ext::frag_mt6_check(&p)?;
            Match::Frag(p)
        }
        "ipv6header" => {
            let p: Ip6tIpv6headerInfo = payload(data)?;
            ext::ipv6header_mt6_check(&p)?;
            Match::Ipv6Header(p)
        }
        "hbh" | "dst" => {
            let p: Ip6tOpts = payload(data)?;
            ext::hbh_mt6_check(&p)?;
            if ext.name == "hbh" {
                Match::Hbh(p)
            } else {
                Match::Dst(p)
            }
        }
        "rt" => {
            let p: Ip6tRt = payload(data)?;
            ext::rt_mt6_check(&p)?;
            Match::Rt(Box::new(p))
        }
        // ip6t_eui64.c and xt_mac.c have no checkentry (`.hooks` was tested above)
        "eui64" => Match::Eui64(payload(data)?),
        "mac" => Match::Mac(payload(data)?),
        _ => return Err((libc::ENOENT, "unknown or unsupported extension")),
    })
}

/// The extension struct at the start of `data`, whose size `xt_check_match` or
/// `xt_check_target` already checked (so the error cannot happen).
fn payload<T: FromBytes>(data: &[u8]) -> Result<T, (i32, &'static str)> {
    T::read_from_prefix(data)
        .map(|(p, _)| p)
        .map_err(|_| (libc::EINVAL, "invalid extension size"))
}

/// Decode an IPT_SO_SET_ADD_COUNTERS request with `xt_copy_counters_from_user`'s checks:
/// more than the header (EINVAL) and exactly num_counters counters after it (EINVAL).
/// The table checks (`do_add_counters`) are `AddCounters::check_against`.
/// `family` only labels the result: `ip6_tables.c` reads the same `xt_counters_info`.
pub fn parse_add_counters(family: Family, blob: &[u8]) -> Result<AddCounters, AbiError> {
    if blob.len() <= XT_COUNTERS_INFO_SIZE {
        return Err(AbiError::Length {
            what: "xt_counters_info",
            len: blob.len(),
            need: XT_COUNTERS_INFO_SIZE as u64 + 1,
        });
    }
    let Ok((hdr, rest)) = XtCountersInfo::read_from_prefix(blob) else {
        return Err(AbiError::Length {
            what: "xt_counters_info",
            len: blob.len(),
            need: XT_COUNTERS_INFO_SIZE as u64 + 1,
        });
    };
    let need = u64::from(hdr.num_counters) * core::mem::size_of::<XtCounters>() as u64;
    if need != rest.len() as u64 {
        return Err(AbiError::Length {
            what: "xt_counters_info counters",
            len: rest.len(),
            need,
        });
    }
    let counters = rest
        .chunks_exact(core::mem::size_of::<XtCounters>())
        .filter_map(|c| XtCounters::read_from_bytes(c).ok())
        .collect();
    Ok(AddCounters {
        family,
        name: name_string(&hdr.name[..XT_TABLE_MAXNAMELEN - 1]),
        counters,
    })
}

/// Decode an IPT_SO_GET_REVISION_MATCH/TARGET or IP6T_SO_GET_REVISION_MATCH/TARGET (68/69)
/// request (`xt_get_revision`): optlen must be
/// exactly 30 (EINVAL); the kernel forces a NUL into the last name byte.
pub fn parse_revision_request(blob: &[u8]) -> Result<(String, u8), AbiError> {
    let Ok(rev) = XtGetRevision::read_from_bytes(blob) else {
        return Err(AbiError::Length {
            what: "xt_get_revision",
            len: blob.len(),
            need: XT_GET_REVISION_SIZE as u64,
        });
    };
    Ok((
        name_string(&rev.name[..XT_EXTENSION_MAXNAMELEN - 1]),
        rev.revision,
    ))
}

/// Answer a revision query as `xt_find_revision` would for the extensions bpfilter supports:
/// Ok(highest supported revision of that name) when the revision is supported,
/// EPROTONOSUPPORT for a supported name at another revision (iptables then tries a lower one),
/// ENOENT for any other name. Note: `xt_find_revision` yields that best revision, but
/// `ip_getsockopt` turns any non-negative result into a 0 return, so the caller of
/// getsockopt sees 0 on success.
pub fn query_revision(
    family: Family,
    kind: ExtKind,
    name: &str,
    revision: u8,
) -> Result<u8, AbiError> {
    ext::find_revision(family, kind, name, revision).map_err(|errno| AbiError::Revision {
        kind,
        name: name.to_string(),
        revision,
        errno,
    })
}

/// Decode an IPT_SO_GET_INFO or IP6T_SO_GET_INFO request (`ip6t_getinfo` is `ipt_getinfo`): `optlen` must be 84 (EINVAL); the table name is the
/// first 32 bytes of `optval` with a forced final NUL. The daemon then answers ENOENT for a
/// table it does not serve, else `Table::get_info`.
pub fn parse_get_info_request(optval: &[u8], optlen: u32) -> Result<String, AbiError> {
    if optlen as usize != IPT_GETINFO_SIZE || optval.len() < XT_TABLE_MAXNAMELEN {
        return Err(AbiError::Length {
            what: "ipt_getinfo",
            len: optlen as usize,
            need: IPT_GETINFO_SIZE as u64,
        });
    }
    Ok(name_string(&optval[..XT_TABLE_MAXNAMELEN - 1]))
}

/// Decode an IPT_SO_GET_ENTRIES or IP6T_SO_GET_ENTRIES request (same header): `optlen` >= 40 and == 40 + size (EINVAL). Returns
/// (table name, size); then use `Table::check_get_entries_size` (EAGAIN on a stale size).
pub fn parse_get_entries_request(optval: &[u8], optlen: u32) -> Result<(String, u32), AbiError> {
    let Ok((hdr, _)) = IptGetEntries::read_from_prefix(optval) else {
        return Err(AbiError::Length {
            what: "ipt_get_entries",
            len: optval.len(),
            need: IPT_GET_ENTRIES_SIZE as u64,
        });
    };
    if (optlen as usize) < IPT_GET_ENTRIES_SIZE {
        return Err(AbiError::Length {
            what: "ipt_get_entries",
            len: optlen as usize,
            need: IPT_GET_ENTRIES_SIZE as u64,
        });
    }
    let need = IPT_GET_ENTRIES_SIZE as u64 + u64::from(hdr.size);
    if u64::from(optlen) != need {
        return Err(AbiError::Length {
            what: "ipt_get_entries + entries",
            len: optlen as usize,
            need,
        });
    }
    Ok((name_string(&hdr.name[..XT_TABLE_MAXNAMELEN - 1]), hdr.size))
}

impl Table {
    /// `get_entries`: the requested size must be the table's current size, else EAGAIN.
    pub fn check_get_entries_size(&self, size: u32) -> Result<(), AbiError> {
        if size != self.size() {
            return Err(AbiError::StaleSize {
                requested: size,
                size: self.size(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{Rule, RuleTarget, TableBuilder};
    use libc::{EAGAIN, EINVAL, ELOOP, ENOENT, ENOMEM, EPROTOTYPE};
    use zerocopy::IntoBytes;

    const H: usize = IPT_REPLACE_SIZE;
    // Entry offsets in `base()`.
    const E_TCP: usize = 0; // INPUT: -p tcp --dport 22 -j ACCEPT (200 bytes)
    const E_JUMP: usize = 200; // INPUT: -j web
    const E_IN_POLICY: usize = 352;
    const E_FWD_POLICY: usize = 504;
    const E_WEB_HEAD: usize = 808;
    const E_WEB_UDP: usize = 984; // web: -p udp --dport 53 -j DROP
    const E_WEB_RETURN: usize = 1184;
    const E_END: usize = 1336;

    fn base() -> Vec<u8> {
        let mut b = TableBuilder::filter();
        b.rule("INPUT", Rule::new(RuleTarget::Accept).tcp_dport(22));
        b.user_chain("web");
        b.rule("INPUT", Rule::new(RuleTarget::Jump("web".into())));
        b.rule("web", Rule::new(RuleTarget::Drop).udp_dport(53));
        b.replace_blob(4).expect("base blob")
    }

    fn set16(b: &mut [u8], off: usize, v: u16) {
        b[off..off + 2].copy_from_slice(&v.to_ne_bytes());
    }
    fn set32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn errno_of(b: &[u8]) -> i32 {
        match parse_replace(crate::Family::Ipv4, b, Some(4)) {
            Ok(_) => 0,
            Err(e) => e.errno(),
        }
    }

    fn with(f: impl FnOnce(&mut Vec<u8>)) -> i32 {
        let mut b = base();
        f(&mut b);
        errno_of(&b)
    }

    #[test]
    fn base_parses_with_kernel_comefrom() {
        let r = parse_replace(crate::Family::Ipv4, &base(), Some(4)).expect("valid");
        let t = &r.table;
        assert_eq!(r.name, "filter");
        assert_eq!(t.size() as usize, E_END + 176);
        let offs: Vec<u32> = t.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offs, [0, 200, 352, 504, 656, 808, 984, 1184, 1336]);
        let cf: Vec<u32> = t.entries.iter().map(|e| e.comefrom).collect();
        // INPUT reaches its rules, web's body; FORWARD and OUTPUT their policies; heads and the
        // end are unreachable.
        assert_eq!(cf, [2, 2, 2, 4, 8, 0, 2, 2, 0]);
        assert_eq!(t.hook_entry, [u32::MAX, 0, 504, 656, u32::MAX]);
        assert_eq!(t.underflow, [u32::MAX, 352, 504, 656, u32::MAX]);
        assert_eq!(
            t.entries[1].target,
            Target::Standard(Verdict::Jump {
                offset: 984,
                index: 6
            })
        );
        assert_eq!(t.entry_at_offset(984), Some(6));
        assert_eq!(t.entry_at_offset(985), None);
        assert_eq!(t.hook_entry_index(1), Some(0));
        assert_eq!(t.underflow_index(3), Some(4));
        assert_eq!(t.hook_entry_index(0), None);
        let chains = t.chains();
        let names: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["INPUT", "FORWARD", "OUTPUT", "web"]);
        assert_eq!(chains[0].entries, 0..3);
        assert_eq!(chains[3].head, Some(5));
        assert_eq!(chains[3].entries, 6..8);
        assert_eq!(t.chain_of(7).as_deref(), Some("web"));
        assert_eq!(t.chain_of(8), None);
        // Serializing gives the request back (comefrom aside, which the kernel recomputes).
        assert_eq!(
            parse_replace(crate::Family::Ipv4, &t.replace_blob(4, 0), Some(4))
                .expect("again")
                .table,
            *t
        );
    }

    #[test]
    fn get_entries_zeroes_padding_and_writes_counters() {
        let mut b = base();
        // Garbage in the standard target's padding and the udp payload's XT_ALIGN tail.
        b[H + E_TCP + 200 - 4] = 0xaa;
        b[H + E_WEB_UDP + IPT_ENTRY_SIZE + 32 + 12] = 0xbb;
        let t = parse_replace(crate::Family::Ipv4, &b, None)
            .expect("valid")
            .table;
        let counters: Vec<XtCounters> = (0..9)
            .map(|i| XtCounters {
                pcnt: i,
                bcnt: 100 * i,
            })
            .collect();
        let out = t.get_entries(&counters);
        assert_eq!(out.len(), IPT_GET_ENTRIES_SIZE + t.size() as usize);
        let ent = &out[IPT_GET_ENTRIES_SIZE..];
        assert_eq!(ent[E_TCP + 200 - 4], 0);
        assert_eq!(ent[E_WEB_UDP + IPT_ENTRY_SIZE + 32 + 12], 0);
        assert_eq!(&ent[E_WEB_UDP + 96..E_WEB_UDP + 104], &6u64.to_ne_bytes());
        assert_eq!(
            &ent[E_WEB_UDP + 104..E_WEB_UDP + 112],
            &600u64.to_ne_bytes()
        );
        let info = t.get_info();
        assert_eq!(info.len(), 84);
        assert_eq!(&info[..7], b"filter\0");
        assert_eq!(u32::from_ne_bytes(info[76..80].try_into().expect("4")), 9);
    }

    #[test]
    fn do_replace_header_checks() {
        assert_eq!(errno_of(&base()[..95]), EINVAL);
        assert_eq!(with(|b| set32(b, 84, 0x0800_0000)), ENOMEM);
        assert_eq!(with(|b| set32(b, 84, 0)), EINVAL);
        assert_eq!(with(|b| b.truncate(b.len() - 8)), EINVAL);
        assert_eq!(with(|b| set32(b, 40, u32::MAX)), EINVAL);
        assert_eq!(
            with(|b| b.extend_from_slice(&[0; 8])),
            0,
            "trailing bytes are ignored"
        );
        assert_eq!(
            xt_alloc_table_info(512 * 1024 * 1024 - 64).map_err(|e| e.errno()),
            Err(ENOMEM)
        );
        assert!(xt_alloc_table_info(512 * 1024 * 1024 - 65).is_ok());
        assert_eq!(
            xt_alloc_entry_offsets(u32::MAX).map_err(|e| e.errno()),
            Err(ENOMEM)
        );
        assert_eq!(
            xt_counters_alloc(0x0200_0001).map_err(|e| e.errno()),
            Err(ENOMEM)
        );
    }

    #[test]
    fn check_entry_size_and_hooks_rules() {
        // next_offset misaligned: the following entry starts off the 8-byte grid.
        assert_eq!(with(|b| set16(b, H + E_TCP + 90, 204)), EINVAL);
        assert_eq!(with(|b| set16(b, H + E_TCP + 90, 112)), EINVAL);
        assert_eq!(with(|b| set16(b, H + E_END + 90, 184)), EINVAL);
        assert_eq!(
            with(|b| b[H + E_TCP + 82] = 0x04),
            EINVAL,
            "ip_checkentry flags"
        );
        assert_eq!(
            with(|b| b[H + E_TCP + 83] = 0x80),
            EINVAL,
            "ip_checkentry invflags"
        );
        assert_eq!(
            with(|b| set16(b, H + E_TCP + 88, 104)),
            EINVAL,
            "target in header"
        );
        assert_eq!(
            with(|b| set16(b, H + E_TCP + 88, 192)),
            EINVAL,
            "target header past next"
        );
        assert_eq!(
            with(|b| set16(b, H + E_TCP + 160, 16)),
            EINVAL,
            "target_size < 32"
        );
        assert_eq!(
            with(|b| set16(b, H + E_TCP + 160, 48)),
            EINVAL,
            "target past next"
        );
        assert_eq!(
            with(|b| set32(b, H + E_TCP + 192, (-10i32) as u32)),
            EINVAL,
            "bad verdict"
        );
        assert_eq!(with(|b| set32(b, H + E_TCP + 192, 0)), EINVAL, "verdict 0");
        assert_eq!(
            with(|b| set32(b, H + E_TCP + 192, (-3i32) as u32)),
            EINVAL,
            "NF_STOLEN"
        );
        assert_eq!(
            with(|b| b[H + E_END + 144..H + E_END + 174].fill(b'x')),
            EINVAL,
            "errorname without NUL"
        );
        assert_eq!(
            with(|b| set16(b, H + E_TCP + 112, 24)),
            EINVAL,
            "match_size < 32"
        );
        assert_eq!(
            with(|b| set16(b, H + E_TCP + 112, 56)),
            EINVAL,
            "match past target"
        );
        // Renaming a rule's standard target to ERROR: 40 bytes is not the ERROR size.
        assert_eq!(
            with(|b| b[H + E_TCP + 162..H + E_TCP + 167].copy_from_slice(b"ERROR")),
            EINVAL
        );
    }

    #[test]
    fn check_underflow_rules() {
        assert_eq!(
            with(|b| b[H + E_IN_POLICY] = 1),
            EINVAL,
            "not unconditional"
        );
        assert_eq!(
            with(|b| b[H + E_IN_POLICY + 83] = IPT_INV_SRCIP),
            EINVAL,
            "invflags only"
        );
        assert_eq!(
            with(|b| set32(b, H + E_IN_POLICY + 144, XT_RETURN as u32)),
            EINVAL
        );
        assert_eq!(
            with(|b| set32(b, H + E_IN_POLICY + 144, VERDICT_QUEUE as u32)),
            EINVAL
        );
        assert_eq!(
            with(|b| set32(b, H + E_IN_POLICY + 144, 656)),
            EINVAL,
            "jump"
        );
        assert_eq!(
            with(|b| set32(b, H + E_IN_POLICY + 144, VERDICT_DROP as u32)),
            0
        );
        assert_eq!(
            with(|b| set32(b, H + E_FWD_POLICY + 144, XT_RETURN as u32)),
            EINVAL
        );
        assert_eq!(
            with(|b| set32(b, 64 + 4 * 3, E_END as u32)),
            EINVAL,
            "underflow on ERROR entry"
        );
        let e = parse_replace(
            crate::Family::Ipv4,
            &{
                let mut b = base();
                b[H + E_IN_POLICY] = 1;
                b
            },
            None,
        )
        .expect_err("refused");
        assert!(
            matches!(
                e,
                AbiError::Underflow {
                    hook: 1,
                    index: 2,
                    offset: 352
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn translate_table_count_and_hooks() {
        assert_eq!(with(|b| set32(b, 36, 10)), EINVAL, "num_entries + 1");
        assert_eq!(with(|b| set32(b, 36, 8)), EINVAL, "num_entries - 1");
        assert_eq!(
            with(|b| set32(b, 44 + 4, 8)),
            EINVAL,
            "hook entry mid-entry"
        );
        assert_eq!(
            with(|b| set32(b, 44 + 12, u32::MAX)),
            EINVAL,
            "hook entry missing"
        );
        assert_eq!(
            with(|b| set32(b, 64 + 8, u32::MAX)),
            EINVAL,
            "underflow missing"
        );
        // INPUT and OUTPUT swapped: unsorted.
        assert_eq!(
            with(|b| {
                set32(b, 44 + 4, 656);
                set32(b, 64 + 4, 656);
                set32(b, 44 + 12, 0);
                set32(b, 64 + 12, 352);
            }),
            EINVAL
        );
        assert_eq!(
            with(|b| set32(b, 32, 0x0a)),
            EINVAL,
            "valid_hooks without FORWARD"
        );
        assert_eq!(
            with(|b| set32(b, 32, 0)),
            EINVAL,
            "no valid hooks: valid_hooks differ"
        );
        // Garbage for invalid hooks is ignored and reported back as 0xffffffff.
        let mut b = base();
        set32(&mut b, 44, 0x1234_5678);
        let t = parse_replace(crate::Family::Ipv4, &b, None)
            .expect("valid")
            .table;
        assert_eq!(t.hook_entry[0], u32::MAX);
    }

    #[test]
    fn mark_source_chains_rules() {
        assert_eq!(
            with(|b| set32(b, H + E_JUMP + 144, 992)),
            ELOOP,
            "jump into an entry"
        );
        assert_eq!(
            with(|b| set32(b, H + E_JUMP + 144, 5000)),
            ELOOP,
            "jump past the end"
        );
        assert_eq!(
            with(|b| set32(b, H + E_JUMP + 144, E_JUMP as u32)),
            ELOOP,
            "self loop"
        );
        // web's rule jumps back to INPUT's jump: INPUT -> web -> INPUT loop.
        assert_eq!(
            with(|b| set32(b, H + E_WEB_UDP + 192, E_JUMP as u32)),
            ELOOP
        );
        // web's rule jumps into the middle of INPUT's first rule.
        assert_eq!(with(|b| set32(b, H + E_WEB_UDP + 192, 8)), ELOOP);
        // A jump to the chain's ERROR head falls through into the chain: fine.
        assert_eq!(with(|b| set32(b, H + E_JUMP + 144, E_WEB_HEAD as u32)), 0);
        // web's RETURN turned into a fall-through (jump to the next entry): falls into the
        // final ERROR entry and off the end.
        assert_eq!(
            with(|b| set32(b, H + E_WEB_RETURN + 144, E_END as u32)),
            ELOOP
        );
        let e = parse_replace(
            crate::Family::Ipv4,
            &{
                let mut b = base();
                set32(&mut b, H + E_JUMP + 144, E_JUMP as u32);
                b
            },
            None,
        )
        .expect_err("loop");
        assert!(
            matches!(
                e,
                AbiError::Loop {
                    hook: 1,
                    index: 1,
                    offset: 200,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn find_check_entry_rules() {
        let m = H + E_TCP + IPT_ENTRY_SIZE; // tcp match header
        assert_eq!(
            with(|b| b[m + 2..m + 5].copy_from_slice(b"xyz")),
            ENOENT,
            "unknown match"
        );
        assert_eq!(with(|b| b[m + 31] = 5), ENOENT, "tcp revision 5");
        assert_eq!(
            with(|b| b[m + 2..m + 31].fill(b'a')),
            EINVAL,
            "unterminated match name"
        );
        assert_eq!(
            with(|b| b[H + E_TCP + 162..H + E_TCP + 166].copy_from_slice(b"NOPE")),
            ENOENT
        );
        assert_eq!(
            with(|b| b[H + E_TCP + 191] = 1),
            ENOENT,
            "standard target revision 1"
        );
        assert_eq!(
            with(|b| set16(b, H + E_TCP + 80, 17)),
            EINVAL,
            "tcp with -p udp"
        );
        assert_eq!(
            with(|b| set16(b, H + E_TCP + 80, 0)),
            EINVAL,
            "tcp with -p all"
        );
        assert_eq!(
            with(|b| b[H + E_TCP + 83] = IPT_INV_PROTO),
            EINVAL,
            "tcp with ! -p tcp"
        );
        assert_eq!(with(|b| b[m + 32 + 11] = 0x10), EINVAL, "tcp invflags");
        let u = H + E_WEB_UDP + IPT_ENTRY_SIZE;
        assert_eq!(with(|b| b[u + 32 + 8] = 0x04), EINVAL, "udp invflags");
        assert_eq!(
            with(|b| set16(b, H + E_WEB_UDP + 80, 6)),
            EINVAL,
            "udp with -p tcp"
        );
        // comment is family-independent: another revision is EPROTOTYPE.
        let mut b = TableBuilder::filter();
        b.rule("INPUT", Rule::new(RuleTarget::Accept).comment("hi"));
        let mut blob = b.replace_blob(4).expect("blob");
        blob[H + IPT_ENTRY_SIZE + 31] = 1;
        assert_eq!(errno_of(&blob), EPROTOTYPE);
        // The first failing entry decides, in entry order.
        assert_eq!(
            with(|b| {
                b[u + 2..u + 5].copy_from_slice(b"xyz");
                b[m + 32 + 11] = 0x10;
            }),
            EINVAL
        );
    }

    fn one_match_rule(proto: u16, invflags: u8, m: Match) -> i32 {
        let mut b = TableBuilder::filter();
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Accept)
                .proto(proto)
                .invert(invflags)
                .with(m),
        );
        errno_of(&b.replace_blob(4).expect("blob"))
    }

    #[test]
    fn extension_checkentries() {
        let mp = XtMultiportV1 {
            flags: XT_MULTIPORT_EITHER,
            count: 15,
            ..Default::default()
        };
        assert_eq!(one_match_rule(6, 0, Match::Multiport(mp)), 0);
        assert_eq!(one_match_rule(17, 0, Match::Multiport(mp)), 0);
        assert_eq!(one_match_rule(1, 0, Match::Multiport(mp)), EINVAL);
        assert_eq!(one_match_rule(0, 0, Match::Multiport(mp)), EINVAL);
        assert_eq!(
            one_match_rule(6, IPT_INV_PROTO, Match::Multiport(mp)),
            EINVAL
        );
        assert_eq!(
            one_match_rule(6, 0, Match::Multiport(XtMultiportV1 { count: 16, ..mp })),
            EINVAL
        );
        assert_eq!(
            one_match_rule(6, 0, Match::Multiport(XtMultiportV1 { flags: 3, ..mp })),
            EINVAL
        );
        let icmp = IptIcmp {
            icmp_type: 8,
            code: [0, 255],
            invflags: 1,
        };
        assert_eq!(one_match_rule(1, 0, Match::Icmp(icmp)), 0);
        assert_eq!(one_match_rule(17, 0, Match::Icmp(icmp)), EINVAL);
        assert_eq!(
            one_match_rule(
                1,
                0,
                Match::Icmp(IptIcmp {
                    invflags: 2,
                    ..icmp
                })
            ),
            EINVAL
        );
        let r = XtIprangeMtinfo {
            flags: 0xff,
            ..Default::default()
        };
        assert_eq!(
            one_match_rule(0, IPT_INV_PROTO, Match::IpRange(r)),
            0,
            "iprange has no checkentry"
        );
        let c = XtCommentInfo {
            comment: [b'x'; 256],
        };
        assert_eq!(
            one_match_rule(0, 0, Match::Comment(Box::new(c))),
            0,
            "comment has no checkentry"
        );
    }

    fn one_target_rule(proto: u16, invflags: u8, target: RuleTarget) -> i32 {
        let mut b = TableBuilder::filter();
        b.rule("INPUT", Rule::new(target).proto(proto).invert(invflags));
        errno_of(&b.replace_blob(4).expect("blob"))
    }

    #[test]
    fn reject_and_log_checks() {
        // reject_tg_check (values as the 6.18 kernel answered them, fixtures/negative).
        for with in [0, 1, 2, 3, 5, 6, 8, 9, u32::MAX] {
            assert_eq!(
                one_target_rule(0, IPT_INV_PROTO, RuleTarget::Reject(with)),
                0,
                "{with}"
            );
        }
        assert_eq!(
            one_target_rule(6, 0, RuleTarget::Reject(IPT_ICMP_ECHOREPLY)),
            EINVAL
        );
        assert_eq!(one_target_rule(6, 0, RuleTarget::Reject(IPT_TCP_RESET)), 0);
        assert_eq!(
            one_target_rule(0, 0, RuleTarget::Reject(IPT_TCP_RESET)),
            EINVAL
        );
        assert_eq!(
            one_target_rule(17, 0, RuleTarget::Reject(IPT_TCP_RESET)),
            EINVAL
        );
        assert_eq!(
            one_target_rule(6, IPT_INV_PROTO, RuleTarget::Reject(IPT_TCP_RESET)),
            EINVAL
        );
        let log = |level, flags| RuleTarget::Log {
            level,
            flags,
            prefix: "p: ".into(),
        };
        assert_eq!(one_target_rule(0, 0, log(7, 0xff)), 0);
        assert_eq!(one_target_rule(0, 0, log(8, 0)), EINVAL);
        // xt_check_target's .table: REJECT only in "filter", checked before the table lookup
        // (which would say ENOENT for "security", a kernel table bpfilter does not serve).
        let mut b = TableBuilder::filter();
        b.rule(
            "OUTPUT",
            Rule::new(RuleTarget::Reject(IPT_ICMP_PORT_UNREACHABLE)),
        );
        let mut blob = b.replace_blob(4).expect("blob");
        blob[..32].copy_from_slice(&name_field::<32>("security"));
        assert_eq!(errno_of(&blob), EINVAL);
        let mut b = TableBuilder::filter();
        b.rule("OUTPUT", Rule::new(log(4, 0)));
        let mut blob = b.replace_blob(4).expect("blob");
        blob[..32].copy_from_slice(&name_field::<32>("security"));
        assert_eq!(errno_of(&blob), ENOENT, "LOG has no .table");
        // Target sizes: REJECT is 32 + 8, LOG 32 + 32; the payload is checked before the
        // checkentry, so a wrong size is EINVAL whatever the payload.
        let mut b = TableBuilder::filter();
        b.rule("INPUT", Rule::new(RuleTarget::Reject(IPT_ICMP_ECHOREPLY)));
        let blob = b.replace_blob(4).expect("blob");
        let t = H + IPT_ENTRY_SIZE;
        assert_eq!(read_u16(&blob, t) as usize, 40);
        let mut renamed = blob.clone();
        renamed[t + 2..t + 5].copy_from_slice(b"LOG");
        renamed[t + 5] = 0;
        assert_eq!(errno_of(&renamed), EINVAL, "LOG of REJECT's size");
        renamed[t + 31] = 1;
        assert_eq!(errno_of(&renamed), ENOENT, "LOG revision 1");
    }

    #[test]
    fn target_hooks_are_checked_against_comefrom() {
        // A REJECT in a user chain reached from all three filter hooks passes; comefrom is
        // what the check sees, so an unreachable REJECT passes too.
        let mut b = TableBuilder::filter();
        b.rule("INPUT", Rule::new(RuleTarget::Jump("rej".into())));
        b.rule("FORWARD", Rule::new(RuleTarget::Jump("rej".into())));
        b.rule("OUTPUT", Rule::new(RuleTarget::Jump("rej".into())));
        b.rule(
            "rej",
            Rule::new(RuleTarget::Reject(IPT_ICMP_HOST_PROHIBITED)),
        );
        b.rule(
            "dead",
            Rule::new(RuleTarget::Reject(IPT_ICMP_HOST_PROHIBITED)),
        );
        let t = b.build().expect("valid");
        let comefrom: Vec<u32> = t
            .entries
            .iter()
            .filter(|e| matches!(e.target, Target::Reject(_)))
            .map(|e| e.comefrom)
            .collect();
        assert_eq!(comefrom, [0, FILTER_VALID_HOOKS]);
        let reject = ext::SUPPORTED_IPV4
            .iter()
            .find(|s| s.name == "REJECT")
            .expect("REJECT");
        assert!(ext::xt_check(reject, 8, "filter", 1 << 0, 0, false).is_err());
    }

    #[test]
    fn conntrack_and_state_parse_every_revision() {
        let v3 = XtConntrackMtinfo3 {
            match_flags: 0xffff,
            invert_flags: 0xffff,
            state_mask: 0xffff,
            pad: [0xab, 0xcd],
            ..Default::default()
        };
        let ct = |c: Conntrack| Match::Conntrack(Box::new(c));
        let v2 = XtConntrackMtinfo2 {
            state_mask: 0x1ff,
            pad: [1, 2],
            ..Default::default()
        };
        let v1 = XtConntrackMtinfo1 {
            state_mask: 0xff,
            ..Default::default()
        };
        for m in [
            ct(Conntrack::V3(v3)),
            ct(Conntrack::V2(v2)),
            ct(Conntrack::V1(v1)),
            Match::State(XtStateInfo {
                statemask: u32::MAX,
            }),
        ] {
            // No checkentry and no .proto: any ip part, any payload.
            assert_eq!(one_match_rule(6, IPT_INV_PROTO, m.clone()), 0, "{m:?}");
            let mut b = TableBuilder::filter();
            b.rule("INPUT", Rule::new(RuleTarget::Accept).with(m.clone()));
            let blob = b.replace_blob(4).expect("blob");
            let t = parse_replace(crate::Family::Ipv4, &blob, None)
                .expect("valid")
                .table;
            assert_eq!(t.entries[0].matches, std::slice::from_ref(&m));
            // GET_ENTRIES echoes the payload, C padding included (the 6.18 kernel does,
            // fixtures/negative/conntrack_pad_garbage), and zeroes the XT_ALIGN tail.
            let got = t.get_entries(&[]);
            let p = 40 + IPT_ENTRY_SIZE + XT_ENTRY_MATCH_SIZE;
            let n = m.payload().len();
            assert_eq!(&got[p..p + n], m.payload());
            assert!(got[p + n..p + xt_align(n)].iter().all(|&b| b == 0));
            // A conntrack payload labelled with another revision has the wrong size: EINVAL.
            if let Match::Conntrack(c) = &m {
                let mut bad = blob.clone();
                bad[H + IPT_ENTRY_SIZE + 31] = 1 + c.revision() % 3;
                assert_eq!(errno_of(&bad), EINVAL, "{m:?} relabelled");
            }
        }
        // Missing revisions of these NFPROTO_UNSPEC matches: EPROTOTYPE (6.18, measured).
        for (m, rev) in [
            (ct(Conntrack::V3(v3)), 0),
            (ct(Conntrack::V3(v3)), 4),
            (Match::State(XtStateInfo { statemask: 2 }), 1),
        ] {
            let mut b = TableBuilder::filter();
            b.rule("INPUT", Rule::new(RuleTarget::Accept).with(m));
            let mut blob = b.replace_blob(4).expect("blob");
            blob[H + IPT_ENTRY_SIZE + 31] = rev;
            assert_eq!(errno_of(&blob), EPROTOTYPE);
        }
    }

    #[test]
    fn tcpmss_parses_round_trips_and_keeps_its_padding() {
        let m = Match::TcpMss(XtTcpmssMatchInfo {
            mss_min: 536,
            mss_max: 1460,
            invert: 1,
            pad: 0xa5,
        });
        // `.proto = IPPROTO_TCP`: -p tcp without `!`, else EINVAL (xt_check_match)
        assert_eq!(one_match_rule(6, 0, m.clone()), 0);
        assert_eq!(one_match_rule(17, 0, m.clone()), EINVAL);
        assert_eq!(one_match_rule(0, 0, m.clone()), EINVAL);
        assert_eq!(one_match_rule(6, IPT_INV_PROTO, m.clone()), EINVAL);
        let mut b = TableBuilder::filter();
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Drop).proto(6).with(m.clone()),
        );
        let mut blob = b.replace_blob(4).expect("blob");
        // garbage in the XT_ALIGN tail (bytes 6 and 7 of the 8-byte payload)
        let p = H + IPT_ENTRY_SIZE + XT_ENTRY_MATCH_SIZE;
        assert_eq!(&blob[p..p + 6], m.payload());
        blob[p + 6] = 0xee;
        blob[p + 7] = 0xff;
        let t = parse_replace(crate::Family::Ipv4, &blob, None)
            .expect("valid")
            .table;
        assert_eq!(t.entries[0].matches, std::slice::from_ref(&m));
        assert_eq!(
            t.entries[0].matches[0].match_size(),
            XT_ENTRY_MATCH_SIZE + 8
        );
        // GET_ENTRIES: the payload as sent (its padding byte too), the tail zeroed
        let got = t.get_entries(&[]);
        let g = 40 + IPT_ENTRY_SIZE + XT_ENTRY_MATCH_SIZE;
        assert_eq!(&got[g..g + 6], &[0x18, 0x02, 0xb4, 0x05, 1, 0xa5][..]);
        assert_eq!(&got[g + 6..g + 8], &[0, 0]);
        // and what GET_ENTRIES shows parses back to the same table
        let again = parse_replace(crate::Family::Ipv4, &t.replace_blob(4, 0), None)
            .expect("again")
            .table;
        assert_eq!(again, t);
        // another revision is unknown (registered per family: ENOENT)
        let mut bad = blob.clone();
        bad[H + IPT_ENTRY_SIZE + 31] = 1;
        assert_eq!(errno_of(&bad), ENOENT);
    }

    #[test]
    fn conntrack_info_normalizes_revisions() {
        let addr = |a: [u8; 4]| {
            let mut f = [0u8; 16];
            f[..4].copy_from_slice(&a);
            f
        };
        let port = zerocopy::byteorder::network_endian::U16::new;
        let v1 = XtConntrackMtinfo1 {
            origsrc_addr: addr([10, 0, 0, 0]),
            origsrc_mask: addr([255, 0, 0, 0]),
            expires_min: 10,
            expires_max: 100,
            l4proto: 6,
            origdst_port: port(443),
            match_flags: XT_CONNTRACK_STATE | XT_CONNTRACK_ORIGDST_PORT,
            invert_flags: XT_CONNTRACK_STATE,
            state_mask: 0x0a,
            status_mask: 0x04,
            ..Default::default()
        };
        // __be16: 443 is bytes 0x01 0xbb in the blob.
        assert_eq!(&v1.as_bytes()[140..142], &[0x01, 0xbb]);
        let i = Conntrack::V1(v1).info();
        assert_eq!(i.revision, 1);
        assert_eq!(i.origsrc.addr_v4(), std::net::Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(i.origsrc.mask_v4(), std::net::Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(i.origdst_port, [443, 443]);
        assert_eq!(i.origsrc_port, [0, 0]);
        assert_eq!((i.state_mask, i.status_mask), (0x0a, 0x04));
        assert_eq!(i.expires, [10, 100]);
        assert_eq!(i.l4proto, 6);
        let v2 = XtConntrackMtinfo2 {
            repldst_port: port(53),
            state_mask: XT_CONNTRACK_STATE_UNTRACKED,
            ..Default::default()
        };
        let i = Conntrack::V2(v2).info();
        assert_eq!(
            (i.revision, i.repldst_port, i.state_mask),
            (2, [53, 53], 0x100)
        );
        let v3 = XtConntrackMtinfo3 {
            origsrc_port: 1024,
            origsrc_port_high: 65535,
            repldst_addr: addr([10, 2, 0, 1]),
            repldst_mask: addr([255; 4]),
            ..Default::default()
        };
        let m = Match::Conntrack(Box::new(Conntrack::V3(v3)));
        let i = m.conntrack().expect("conntrack");
        assert_eq!((i.revision, i.origsrc_port), (3, [1024, 65535]));
        assert_eq!(i.repldst.addr_v4(), std::net::Ipv4Addr::new(10, 2, 0, 1));
        assert_eq!(Match::State(XtStateInfo { statemask: 1 }).conntrack(), None);
    }

    #[test]
    fn do_replace_table_and_counter_checks() {
        let named = |n: &str| with(|b| b[..32].copy_from_slice(&name_field::<32>(n)));
        assert_eq!(named("nosuch"), ENOENT);
        assert_eq!(named("FILTER"), ENOENT);
        assert_eq!(
            named("nat"),
            EINVAL,
            "nat exists in the kernel with other hooks"
        );
        assert_eq!(
            named("security"),
            ENOENT,
            "same hooks as filter, but not served"
        );
        assert_eq!(
            with(|b| b[..32].fill(b'f')),
            ENOENT,
            "name is cut at 31 bytes"
        );
        assert_eq!(with(|b| set32(b, 84, 5)), EAGAIN);
        assert_eq!(with(|b| set32(b, 84, 3)), EAGAIN);
        assert!(parse_replace(
            crate::Family::Ipv4,
            &{
                let mut b = base();
                set32(&mut b, 84, 3);
                b
            },
            None
        )
        .is_ok());
        // Order: validation errors come before the table lookup and the counter check.
        assert_eq!(
            with(|b| {
                b[..32].copy_from_slice(&name_field::<32>("nosuch"));
                set32(b, 84, 7);
                b[H + E_TCP + 82] = 0x04;
            }),
            EINVAL
        );
        // ELOOP comes before a bad extension later in the table.
        assert_eq!(
            with(|b| {
                set32(b, H + E_JUMP + 144, E_JUMP as u32);
                b[H + E_TCP + IPT_ENTRY_SIZE + 2] = b'x';
            }),
            ELOOP
        );
    }

    #[test]
    fn unreachable_entry_may_jump_anywhere() {
        // The kernel (6.18, checked) accepts a jump to a non-entry offset from an entry no hook
        // reaches: web's head is unreachable once INPUT's jump is gone.
        let mut b = base();
        set32(&mut b, H + E_JUMP + 144, VERDICT_ACCEPT as u32);
        set32(&mut b, H + E_WEB_UDP + 192, 12);
        let t = parse_replace(crate::Family::Ipv4, &b, None)
            .expect("kernel accepts")
            .table;
        assert_eq!(t.entries[6].comefrom, 0);
        assert_eq!(
            t.entries[6].verdict(),
            Some(Verdict::Jump {
                offset: 12,
                index: u32::MAX
            })
        );
        assert_eq!(
            parse_replace(crate::Family::Ipv4, &t.replace_blob(4, 0), None)
                .expect("again")
                .table,
            t
        );
    }

    #[test]
    fn queue_verdict_parses() {
        let t = parse_replace(
            crate::Family::Ipv4,
            &{
                let mut b = base();
                set32(&mut b, H + E_TCP + 192, VERDICT_QUEUE as u32);
                b
            },
            None,
        )
        .expect("kernel accepts NF_QUEUE");
        assert_eq!(t.table.entries[0].verdict(), Some(Verdict::Queue));
    }

    #[test]
    fn add_counters() {
        let mut b = vec![0u8; 40 + 32];
        b[..6].copy_from_slice(b"filter");
        set32(&mut b, 32, 2);
        b[40] = 7;
        let a = parse_add_counters(crate::Family::Ipv4, &b).expect("valid");
        assert_eq!(a.name, "filter");
        assert_eq!(
            a.counters,
            [XtCounters { pcnt: 7, bcnt: 0 }, XtCounters::default()]
        );
        assert_eq!(
            parse_add_counters(crate::Family::Ipv4, &b[..40]).map_err(|e| e.errno()),
            Err(EINVAL)
        );
        assert_eq!(
            parse_add_counters(crate::Family::Ipv4, &b[..56]).map_err(|e| e.errno()),
            Err(EINVAL)
        );
        let t = Table::initial("filter").expect("filter");
        assert_eq!(a.check_against(&t).map_err(|e| e.errno()), Err(EINVAL));
        let mut n = b.clone();
        n[..6].copy_from_slice(b"xilter");
        assert_eq!(
            parse_add_counters(crate::Family::Ipv4, &n)
                .expect("ok")
                .check_against(&t)
                .map_err(|e| e.errno()),
            Err(ENOENT)
        );
    }

    #[test]
    fn revision_requests() {
        let mut b = [0u8; 30];
        b[..9].copy_from_slice(b"multiport");
        b[29] = 2;
        assert_eq!(
            parse_revision_request(&b).expect("ok"),
            ("multiport".to_string(), 2)
        );
        assert_eq!(
            parse_revision_request(&b[..29]).map_err(|e| e.errno()),
            Err(EINVAL)
        );
        let mut full = [b'a'; 30];
        full[29] = 0;
        assert_eq!(parse_revision_request(&full).expect("ok").0.len(), 28);
        assert_eq!(
            query_revision(Family::Ipv4, ExtKind::Match, "multiport", 2).map_err(|e| e.errno()),
            Err(libc::EPROTONOSUPPORT)
        );
        assert_eq!(
            query_revision(Family::Ipv4, ExtKind::Match, "multiport", 1).ok(),
            Some(1)
        );
        assert_eq!(
            query_revision(Family::Ipv4, ExtKind::Match, "conntrack", 1).ok(),
            Some(3)
        );
        assert_eq!(
            query_revision(Family::Ipv4, ExtKind::Target, "REJECT", 0).ok(),
            Some(0)
        );
        assert_eq!(
            query_revision(Family::Ipv4, ExtKind::Match, "connlimit", 0).map_err(|e| e.errno()),
            Err(ENOENT)
        );
        assert_eq!(
            query_revision(Family::Ipv4, ExtKind::Match, "hashlimit", 2).ok(),
            Some(3)
        );
    }

    #[test]
    fn get_requests() {
        let mut gi = [0u8; 84];
        gi[..6].copy_from_slice(b"filter");
        assert_eq!(parse_get_info_request(&gi, 84).expect("ok"), "filter");
        assert_eq!(
            parse_get_info_request(&gi, 80).map_err(|e| e.errno()),
            Err(EINVAL)
        );
        let t = Table::initial("filter").expect("filter");
        let mut ge = [0u8; 40];
        ge[..6].copy_from_slice(b"filter");
        set32(&mut ge, 32, t.size());
        assert_eq!(
            parse_get_entries_request(&ge, 40 + t.size()).expect("ok"),
            ("filter".to_string(), 632)
        );
        assert_eq!(
            parse_get_entries_request(&ge, 40 + t.size() + 1).map_err(|e| e.errno()),
            Err(EINVAL)
        );
        assert_eq!(
            parse_get_entries_request(&ge[..39], 39).map_err(|e| e.errno()),
            Err(EINVAL)
        );
        assert!(t.check_get_entries_size(632).is_ok());
        assert_eq!(
            t.check_get_entries_size(600).map_err(|e| e.errno()),
            Err(EAGAIN)
        );
    }

    #[test]
    fn initial_table_layout() {
        let t = Table::initial("filter").expect("filter");
        assert_eq!(t.size(), 632);
        assert_eq!(t.hook_entry, [u32::MAX, 0, 152, 304, u32::MAX]);
        let cf: Vec<u32> = t.entries.iter().map(|e| e.comefrom).collect();
        assert_eq!(cf, [2, 4, 8, 0]);
        assert_eq!(Table::initial("nat").map_err(|e| e.errno()), Err(ENOENT));
    }

    /// A revision 3 hashlimit payload: `--hashlimit-upto 5/sec --hashlimit-mode srcip
    /// --hashlimit-name t`, as iptables 1.8.9 fills it.
    fn hl3(f: impl FnOnce(&mut XtHashlimitMtinfo3)) -> Match {
        use zerocopy::FromZeros;
        let mut p = XtHashlimitMtinfo3::new_zeroed();
        p.name[0] = b't';
        p.cfg.avg = 200_000;
        p.cfg.burst = 5;
        p.cfg.mode = XT_HASHLIMIT_HASH_SIP;
        p.cfg.gc_interval = 1000;
        p.cfg.expire = 10_000;
        p.cfg.srcmask = 32;
        p.cfg.dstmask = 32;
        f(&mut p);
        Match::Hashlimit(Box::new(Hashlimit::V3(p)))
    }

    fn hashlimit_errno(m: Match) -> i32 {
        let mut b = TableBuilder::filter();
        b.rule("INPUT", Rule::new(RuleTarget::Accept).with(m));
        match b.replace_blob(4) {
            Ok(blob) => errno_of(&blob),
            Err(e) => e.errno(),
        }
    }

    #[test]
    fn hashlimit_is_shown_as_the_kernel_copies_it_back() {
        // the kernel's pointer is not shown (usersize ends before it); revision 3's size and
        // max are truncated in the rule itself, revision 1's stay as sent
        let sent = hl3(|p| {
            p.cfg.size = 2_000_000;
            p.cfg.max = 3_000_000;
            p.hinfo = 0xdead_beef;
        });
        let mut b = TableBuilder::filter();
        b.rule("INPUT", Rule::new(RuleTarget::Accept).with(sent));
        let mut v1 = XtHashlimitMtinfo1::default();
        v1.name[..2].copy_from_slice(b"v1");
        v1.cfg = HashlimitCfg1 {
            mode: XT_HASHLIMIT_HASH_DIP | XT_HASHLIMIT_INVERT,
            avg: 2000,
            burst: 5,
            size: 2_000_000,
            max: 0,
            gc_interval: 1000,
            expire: 10_000,
            srcmask: 32,
            dstmask: 24,
            pad: [7, 9],
        };
        v1.hinfo = 1;
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Drop).with(Match::Hashlimit(Box::new(Hashlimit::V1(v1)))),
        );
        let blob = b.replace_blob(5).expect("blob");
        let table = parse_replace(crate::Family::Ipv4, &blob, Some(5))
            .expect("valid")
            .table;
        let shown: Vec<&Hashlimit> = table
            .entries
            .iter()
            .flat_map(|e| &e.matches)
            .filter_map(|m| match m {
                Match::Hashlimit(h) => Some(&**h),
                _ => None,
            })
            .collect();
        let Hashlimit::V3(p) = shown[0] else {
            panic!("revision 3 expected")
        };
        assert_eq!((p.cfg.size, p.cfg.max, p.hinfo), (1_048_576, 1_048_576, 0));
        let Hashlimit::V1(p) = shown[1] else {
            panic!("revision 1 expected")
        };
        assert_eq!((p.cfg.size, p.cfg.pad, p.hinfo), (2_000_000, [7, 9], 0));
        assert_eq!(
            shown[1].cfg().size,
            1_048_576,
            "the table is made truncated"
        );
        assert_eq!(shown[1].name(), b"v1");
        // what GET_ENTRIES shows parses back to the same table
        let again = parse_replace(crate::Family::Ipv4, &table.replace_blob(5, 0), Some(5))
            .expect("valid")
            .table;
        assert_eq!(again, table);
        assert_eq!(
            again.get_entries(&[XtCounters::default(); 5]),
            table.get_entries(&[XtCounters::default(); 5])
        );
    }

    #[test]
    fn hashlimit_checks_give_the_kernels_errnos() {
        use libc::{ENAMETOOLONG, ERANGE};
        assert_eq!(hashlimit_errno(hl3(|_| {})), 0);
        type Case = (i32, &'static str, fn(&mut XtHashlimitMtinfo3));
        let cases: &[Case] = &[
            (ENAMETOOLONG, "name without NUL", |p| p.name = [b'a'; 255]),
            (EINVAL, "empty name", |p| p.name[0] = 0),
            (EINVAL, "name ..", |p| p.name[..2].copy_from_slice(b"..")),
            (EINVAL, "name with /", |p| {
                p.name[..3].copy_from_slice(b"a/b")
            }),
            (EINVAL, "gc interval 0", |p| p.cfg.gc_interval = 0),
            (EINVAL, "expire 0", |p| p.cfg.expire = 0),
            (EINVAL, "srcmask 33", |p| p.cfg.srcmask = 33),
            (EINVAL, "dstmask 33", |p| p.cfg.dstmask = 33),
            (EINVAL, "unknown mode bit", |p| p.cfg.mode |= 0x80),
            (ERANGE, "burst 0", |p| p.cfg.burst = 0),
            (ERANGE, "1/day burst 10000 overflows", |p| {
                p.cfg.avg = 86_400_000_000;
                p.cfg.burst = 10_000;
            }),
            (ERANGE, "rate match, rate 0", |p| {
                p.cfg.mode |= XT_HASHLIMIT_RATE_MATCH;
                p.cfg.avg = 0;
                p.cfg.interval = 1;
            }),
            (ERANGE, "rate match, rate above u32", |p| {
                p.cfg.mode |= XT_HASHLIMIT_RATE_MATCH;
                p.cfg.avg = 1 << 32;
                p.cfg.interval = 1;
            }),
            (EINVAL, "rate match, interval 0", |p| {
                p.cfg.mode |= XT_HASHLIMIT_RATE_MATCH
            }),
            (EINVAL, "bytes, no credit per byte", |p| {
                p.cfg.mode |= XT_HASHLIMIT_BYTES;
                p.cfg.avg = 1;
            }),
        ];
        for (want, what, f) in cases {
            assert_eq!(hashlimit_errno(hl3(f)), *want, "{what}");
        }
        // a mask error comes after the truncation, before the mode: the kernel's order
        assert_eq!(
            hashlimit_errno(hl3(|p| {
                p.cfg.srcmask = 40;
                p.cfg.burst = 0;
            })),
            EINVAL
        );
        // valid: a rate-match rule with its interval, bytes with a usable rate, 1/day burst 1
        assert_eq!(
            hashlimit_errno(hl3(|p| {
                p.cfg.mode |= XT_HASHLIMIT_RATE_MATCH;
                p.cfg.interval = 1;
            })),
            0
        );
        assert_eq!(
            hashlimit_errno(hl3(|p| {
                p.cfg.mode |= XT_HASHLIMIT_BYTES;
                p.cfg.avg = 512;
            })),
            0
        );
        // revisions 1 and 2 take no rate match
        let mut v1 = XtHashlimitMtinfo1::default();
        v1.name[0] = b'x';
        v1.cfg.avg = 2000;
        v1.cfg.burst = 5;
        v1.cfg.gc_interval = 1000;
        v1.cfg.expire = 10_000;
        let m1 = |v: XtHashlimitMtinfo1| Match::Hashlimit(Box::new(Hashlimit::V1(v)));
        assert_eq!(hashlimit_errno(m1(v1)), 0);
        let mut bad = v1;
        bad.cfg.mode = XT_HASHLIMIT_RATE_MATCH;
        assert_eq!(hashlimit_errno(m1(bad)), EINVAL);
        // revision 1 multiplies avg * burst in 64 bits: no overflow where the u32 would
        let mut big = v1;
        big.cfg.avg = 864_000_000;
        big.cfg.burst = 10_000;
        assert_eq!(hashlimit_errno(m1(big)), 0);
    }
}
