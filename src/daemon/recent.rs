//! The `recent` lists of a BPF table: one spin-locked map value each ([`emitter::ir::recent`]),
//! kept across rulesets as xt_recent keeps its tables, and `/proc/net/xt_recent/NAME` served
//! from them.
//!
//! Lifetime, as `recent_mt_check` and `recent_mt_destroy` have it: a replace that still names
//! a list keeps it (same map, pinned again in the new generation), with the mask it was
//! created with. When a rule of the new ruleset needs more stamps per address than the list
//! has, the kernel flushes the list and grows it: here, a new empty map with the old mask. A
//! list no rule names any more goes with the old generation.

use std::net::Ipv4Addr;
use std::path::Path;

use emitter::ir::{recent, RecentShape};
use ipt_abi::Table;

use super::state::BackendError;
use crate::sys::{self, Map, BPF_F_LOCK};
use crate::xlate::RecentList;

/// A list and its map.
#[derive(Debug)]
pub struct Recent {
    /// what the programs were generated for
    pub list: RecentList,
    /// the value
    pub map: Map,
}

fn sys_err(what: &'static str) -> impl FnOnce(sys::SysError) -> BackendError {
    move |e| BackendError::new(e.errno(), format!("{what}: {e}"))
}

/// Lists with more addresses than this are refused: each packet that reaches a `recent` rule
/// searches the list, and the verifier walks each loop once per slot.
pub const MAX_ENTRIES: u32 = 1024;
/// Stamps per address kept at most (a `--hitcount` above it is refused; the kernel's limit is
/// 65535 since Linux 6.11): a list is one map value, which the kernel allocates in one piece
/// (at most 4 MiB), and the verifier walks the stamp loop once per stamp.
pub const MAX_STAMPS: u32 = 4096;

/// The lists `table` names, reusing those of `old` that fit; the lists' final shapes are the
/// ones to generate the programs for.
pub fn prepare(table: &Table, old: &[Recent]) -> Result<Vec<Recent>, BackendError> {
    let mut out = Vec::new();
    for mut list in crate::xlate::recent_lists(table) {
        if list.shape.entries == 0 || list.shape.entries > MAX_ENTRIES {
            return Err(BackendError::new(
                libc::EINVAL,
                format!(
                    "recent: xt_recent's ip_list_tot is {}; bpfilter keeps 1 to {MAX_ENTRIES} addresses per list",
                    list.shape.entries
                ),
            ));
        }
        if list.shape.stamps > MAX_STAMPS {
            return Err(BackendError::new(
                libc::EINVAL,
                format!(
                    "recent: list {}: bpfilter keeps at most {MAX_STAMPS} stamps per address (a --hitcount up to {MAX_STAMPS})",
                    String::from_utf8_lossy(&list.name)
                ),
            ));
        }
        match old.iter().find(|o| o.list.name == list.name) {
            Some(o)
                if o.list.shape.entries == list.shape.entries
                    && o.list.shape.stamps >= list.shape.stamps =>
            {
                let map = o
                    .map
                    .try_clone()
                    .map_err(sys_err("reusing a recent list"))?;
                out.push(Recent {
                    list: o.list.clone(),
                    map,
                });
            }
            Some(o) => {
                // grown: flushed, the mask kept
                list.mask = o.list.mask;
                list.shape.stamps = list.shape.stamps.max(o.list.shape.stamps);
                out.push(Recent {
                    map: create(&list)?,
                    list,
                });
            }
            None => out.push(Recent {
                map: create(&list)?,
                list,
            }),
        }
    }
    Ok(out)
}

/// An empty list: the header with the mask and the shape.
fn create(list: &RecentList) -> Result<Map, BackendError> {
    let size = list.shape.value_size();
    let map = Map::create_spin_locked(size, "bpfltr_recent")
        .map_err(sys_err("creating a recent list"))?;
    let mut value = vec![0u8; size as usize];
    put(&mut value, recent::MASK, &list.mask);
    put(
        &mut value,
        recent::SHAPE_ENTRIES,
        &list.shape.entries.to_ne_bytes(),
    );
    put(
        &mut value,
        recent::SHAPE_STAMPS,
        &list.shape.stamps.to_ne_bytes(),
    );
    map.update(&0u32.to_ne_bytes(), &value, 0)
        .map_err(sys_err("writing a recent list"))?;
    Ok(map)
}

/// Pins the lists in a generation's folder, as `recent<i>`.
pub fn pin(lists: &[Recent], dir: &Path) -> Result<(), BackendError> {
    for (i, r) in lists.iter().enumerate() {
        r.map
            .pin(dir.join(format!("recent{i}")))
            .map_err(sys_err("pinning a recent list"))?;
    }
    Ok(())
}

/// The lists of a pinned generation whose ruleset is `table`.
pub fn open(table: &Table, dir: &Path) -> Result<Vec<Recent>, BackendError> {
    let mut out = Vec::new();
    for (i, mut list) in crate::xlate::recent_lists(table).into_iter().enumerate() {
        let map = Map::from_pin(dir.join(format!("recent{i}")))
            .map_err(sys_err("opening a recent list"))?;
        let value = read(&map)?;
        list.mask = [value[16], value[17], value[18], value[19]];
        list.shape = RecentShape {
            entries: u32_at(&value, recent::SHAPE_ENTRIES),
            stamps: u32_at(&value, recent::SHAPE_STAMPS),
            wide: list.shape.wide,
        };
        if list.shape.value_size() != map.value_size() {
            return Err(BackendError::new(
                libc::EINVAL,
                "a pinned recent list does not have the size its header says",
            ));
        }
        out.push(Recent { list, map });
    }
    Ok(out)
}

fn read(map: &Map) -> Result<Vec<u8>, BackendError> {
    let mut value = vec![0u8; map.value_size() as usize];
    map.lookup_locked(&0u32.to_ne_bytes(), &mut value)
        .map_err(sys_err("reading a recent list"))?;
    Ok(value)
}

fn put(value: &mut [u8], at: u32, bytes: &[u8]) {
    value[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
}

fn u32_at(value: &[u8], at: u32) -> u32 {
    let at = at as usize;
    u32::from_ne_bytes([value[at], value[at + 1], value[at + 2], value[at + 3]])
}

fn u64_at(value: &[u8], at: u32) -> u64 {
    let at = at as usize;
    let mut b = [0u8; 8];
    b.copy_from_slice(&value[at..at + 8]);
    u64::from_ne_bytes(b)
}

/// One address of a list, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// LRU sequence number (larger: more recently added or refreshed)
    pub lru: u64,
    /// the (masked) address
    pub addr: Ipv4Addr,
    /// `e->ttl`
    pub ttl: u8,
    /// `e->index`
    pub index: u16,
    /// the first `nstamps` stamps
    pub stamps: Vec<u64>,
}

/// The addresses of a list value, in slot order.
pub fn entries(value: &[u8], shape: RecentShape) -> Vec<Entry> {
    (0..shape.entries)
        .map(|slot| recent::ENTRIES + slot * shape.stride())
        .filter(|&at| u64_at(value, at + recent::E_LRU) != 0)
        .map(|at| {
            let a = at as usize;
            let nstamps = u16::from_ne_bytes([
                value[a + recent::E_NSTAMPS as usize],
                value[a + recent::E_NSTAMPS as usize + 1],
            ]);
            Entry {
                lru: u64_at(value, at + recent::E_LRU),
                addr: Ipv4Addr::new(
                    value[a + recent::E_ADDR as usize],
                    value[a + recent::E_ADDR as usize + 1],
                    value[a + recent::E_ADDR as usize + 2],
                    value[a + recent::E_ADDR as usize + 3],
                ),
                ttl: value[a + recent::E_TTL as usize],
                index: u16::from_ne_bytes([
                    value[a + recent::E_INDEX as usize],
                    value[a + recent::E_INDEX as usize + 1],
                ]),
                stamps: (0..u32::from(nstamps).min(shape.stamps))
                    .map(|k| u64_at(value, at + recent::STAMPS + 8 * k))
                    .collect(),
            }
        })
        .collect()
}

/// `/proc/net/xt_recent/NAME` as `recent_seq_show` prints it, one line per address: the
/// address, its TTL, the newest stamp (`stamps[(index - 1) & mask]`), `index`, then every
/// stamp in slot order. (The kernel lists addresses in the order of its hash buckets, which
/// a random seed decides; here they are in LRU order, oldest first.)
pub fn text(r: &Recent) -> Result<Vec<u8>, BackendError> {
    let value = read(&r.map)?;
    let shape = r.list.shape;
    let mut list = entries(&value, shape);
    list.sort_by_key(|e| e.lru);
    let mut out = String::new();
    for e in list {
        let newest = usize::from(e.index.wrapping_sub(1)) & (shape.stamps as usize - 1);
        let last_seen = e.stamps.get(newest).copied().unwrap_or(0);
        out.push_str(&format!(
            "src={} ttl: {} last_seen: {} oldest_pkt: {}",
            e.addr, e.ttl, last_seen, e.index
        ));
        for (k, s) in e.stamps.iter().enumerate() {
            out.push_str(if k == 0 { " " } else { ", " });
            out.push_str(&s.to_string());
        }
        out.push('\n');
    }
    Ok(out.into_bytes())
}

/// One write(2) to the list's proc file, as `recent_mt_proc_write`: `/` flushes (returns the
/// size), `+ADDR` adds or refreshes, `-ADDR` removes (both return size + 1); anything else is
/// EINVAL. Only the first 40 bytes count (the kernel's buffer); the address ends at a newline
/// or the end of those. An IPv6 address (it has a ':') is accepted and changes nothing: the
/// lists of IPv4 rules never hold one.
pub fn write(r: &Recent, data: &[u8]) -> Result<usize, BackendError> {
    const BUF: usize = "+b335:1d35:1e55:dead:c0de:1715:5afe:c0de".len() + 1;
    if data.is_empty() {
        return Ok(0);
    }
    let size = data.len().min(BUF);
    let data = &data[..size];
    let einval = |why: &str| BackendError::new(libc::EINVAL, format!("xt_recent: {why}"));
    let add = match data[0] {
        b'/' => {
            let mut value = read(&r.map)?;
            let at = recent::ENTRIES as usize;
            value[at..].fill(0);
            put(&mut value, recent::COUNT, &0u32.to_ne_bytes());
            store(r, &value)?;
            return Ok(size);
        }
        b'+' => true,
        b'-' => false,
        _ => return Err(einval("need +ip, -ip or /")),
    };
    let text = &data[1..];
    let text = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let parsed = std::str::from_utf8(text).ok();
    if text.contains(&b':') {
        return match parsed.map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) => Ok(size),
            _ => Err(einval("illegal address written to procfs")),
        };
    }
    let Some(Ok(addr)) = parsed.map(parse_in4) else {
        return Err(einval("illegal address written to procfs"));
    };
    let now = crate::layout::jiffies()
        .ok_or_else(|| BackendError::new(libc::EIO, "cannot read jiffies from /proc/timer_list"))?;
    let mut value = read(&r.map)?;
    edit(&mut value, r.list.shape, addr, add, now);
    store(r, &value)?;
    Ok(size)
}

/// `in4_pton` up to the delimiter: four decimal numbers of at most 255, dot-separated, nothing
/// else (no leading '+', no empty part).
fn parse_in4(s: &str) -> Result<Ipv4Addr, ()> {
    let mut parts = [0u8; 4];
    let mut n = 0;
    for p in s.split('.') {
        if n == 4 || p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        parts[n] = p
            .parse::<u16>()
            .ok()
            .and_then(|v| u8::try_from(v).ok())
            .ok_or(())?;
        n += 1;
    }
    if n != 4 {
        return Err(());
    }
    Ok(Ipv4Addr::from(parts))
}

/// `+addr`/`-addr` on a list value: the lookup without the TTL and without the mask (the
/// kernel's proc write uses the address as written), then `recent_entry_init` (TTL 0),
/// `recent_entry_update` or `recent_entry_remove`.
fn edit(value: &mut [u8], shape: RecentShape, addr: Ipv4Addr, add: bool, now: u64) {
    let stride = shape.stride();
    let slot_at = |slot: u32| recent::ENTRIES + slot * stride;
    let used = |value: &[u8], slot: u32| u64_at(value, slot_at(slot) + recent::E_LRU) != 0;
    let found = (0..shape.entries).find(|&s| {
        let a = (slot_at(s) + recent::E_ADDR) as usize;
        used(value, s) && value[a..a + 4] == addr.octets()
    });
    let count = u32_at(value, recent::COUNT);
    let clock = u64_at(value, recent::CLOCK) + 1;
    match (found, add) {
        (Some(slot), false) => {
            put(value, slot_at(slot) + recent::E_LRU, &0u64.to_ne_bytes());
            put(value, recent::COUNT, &(count - 1).to_ne_bytes());
        }
        (Some(slot), true) => {
            let at = slot_at(slot);
            let u16_at = |value: &[u8], at: u32| {
                u16::from_ne_bytes([value[at as usize], value[at as usize + 1]])
            };
            let index = u32::from(u16_at(value, at + recent::E_INDEX)) & (shape.stamps - 1);
            put(value, at + recent::STAMPS + 8 * index, &now.to_ne_bytes());
            let width = if shape.wide { 0xffff } else { 0xff };
            let index = ((index + 1) & width) as u16;
            put(value, at + recent::E_INDEX, &index.to_ne_bytes());
            if index > u16_at(value, at + recent::E_NSTAMPS) {
                put(value, at + recent::E_NSTAMPS, &index.to_ne_bytes());
            }
            put(value, at + recent::E_LRU, &clock.to_ne_bytes());
            put(value, recent::CLOCK, &clock.to_ne_bytes());
        }
        (None, false) => {}
        (None, true) => {
            let slot = if count >= shape.entries {
                // the least recently used goes
                (0..shape.entries)
                    .filter(|&s| used(value, s))
                    .min_by_key(|&s| u64_at(value, slot_at(s) + recent::E_LRU))
            } else {
                put(value, recent::COUNT, &(count + 1).to_ne_bytes());
                (0..shape.entries).find(|&s| !used(value, s))
            };
            let Some(slot) = slot else { return };
            let at = slot_at(slot);
            value[at as usize..(at + stride) as usize].fill(0);
            put(value, at + recent::E_ADDR, &addr.octets());
            put(value, at + recent::STAMPS, &now.to_ne_bytes());
            put(value, at + recent::E_NSTAMPS, &1u16.to_ne_bytes());
            put(value, at + recent::E_INDEX, &1u16.to_ne_bytes());
            put(value, at + recent::E_LRU, &clock.to_ne_bytes());
            put(value, recent::CLOCK, &clock.to_ne_bytes());
        }
    }
}

fn store(r: &Recent, value: &[u8]) -> Result<(), BackendError> {
    r.map
        .update(&0u32.to_ne_bytes(), value, BPF_F_LOCK)
        .map_err(sys_err("writing a recent list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> RecentShape {
        RecentShape {
            entries: 3,
            stamps: 4,
            wide: true,
        }
    }

    #[test]
    fn in4_pton_accepts_dotted_quads_only() {
        assert_eq!(parse_in4("10.0.0.1"), Ok(Ipv4Addr::new(10, 0, 0, 1)));
        for bad in [
            "10.0.0",
            "10.0.0.1.2",
            "10.0.0.256",
            "10..0.1",
            "a.b.c.d",
            "",
            " 1.2.3.4",
        ] {
            assert!(parse_in4(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proc_edits_add_refresh_evict_and_remove_as_the_kernel() {
        let s = shape();
        let mut v = vec![0u8; s.value_size() as usize];
        let a = |n| Ipv4Addr::new(10, 0, 0, n);
        edit(&mut v, s, a(1), true, 100);
        edit(&mut v, s, a(2), true, 101);
        edit(&mut v, s, a(1), true, 102);
        let e = entries(&v, s);
        assert_eq!(e.len(), 2);
        let one = e.iter().find(|e| e.addr == a(1)).expect("10.0.0.1 is in");
        assert_eq!((one.index, one.stamps.clone()), (2, vec![100, 102]));
        // full at 3: adding a fourth evicts the least recently used (10.0.0.2)
        edit(&mut v, s, a(3), true, 103);
        edit(&mut v, s, a(4), true, 104);
        let mut addrs: Vec<_> = entries(&v, s).iter().map(|e| e.addr).collect();
        addrs.sort();
        assert_eq!(addrs, vec![a(1), a(3), a(4)]);
        assert_eq!(u32_at(&v, recent::COUNT), 3);
        edit(&mut v, s, a(3), false, 105);
        assert_eq!(u32_at(&v, recent::COUNT), 2);
        assert!(entries(&v, s).iter().all(|e| e.addr != a(3)));
        // stamps wrap at the mask: index counts on as a u8
        for t in 0..5 {
            edit(&mut v, s, a(4), true, 200 + t);
        }
        let four = entries(&v, s)
            .into_iter()
            .find(|e| e.addr == a(4))
            .expect("10.0.0.4 is in");
        assert_eq!(four.stamps, vec![203, 204, 201, 202]);
        assert_eq!(four.index, 2);
    }
}
