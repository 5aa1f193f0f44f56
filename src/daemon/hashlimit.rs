//! The `hashlimit` tables of a BPF table: one hash map of spin-locked entries each
//! ([`emitter::ir::hashlimit`]), kept across rulesets as xt_hashlimit keeps its tables, with
//! the garbage collector the kernel runs on them.
//!
//! Lifetime, as `hashlimit_mt_check_common` and `htable_put` have it: the first rule naming a table
//! creates it with that rule's configuration (`htable_create`: key, rate, burst, expiry, `max`
//! entries); every later rule naming it, in the same ruleset or a later one, shares it as it is,
//! configuration included, while some rule names it (the same map, pinned again in each generation
//! as `hashlimit<i>`, its configuration beside it as `hashlimit<i>_cfg`, so that a restarted daemon
//! adopts both). A rule whose rate-match mode differs from its table's is EINVAL
//! (`hinfo->ratematch`: 6.12, 6.18 and 7.3 measured). A table no rule names goes with the old
//! generation.
//!
//! Expiry: the programs treat an entry as gone once `jiffies >= expires` (it starts over with
//! full credit, as a new entry would); the kernel keeps it, and refills it from its last
//! state, until its garbage collector runs, at most `gc_interval` later. The collector here
//! deletes expired entries every `gc_interval` too, which is what frees room in a full table.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use emitter::ir::hashlimit as hl;
use ipt_abi::abi::HashlimitCfg3;
use ipt_abi::Table;
use zerocopy::{FromBytes, IntoBytes};

use super::state::BackendError;
use super::store::BlobMap;
use crate::sys::{self, Map};
use crate::xlate::HashlimitTable;

/// A table and its map.
#[derive(Debug)]
pub struct Hashlimit {
    /// what the programs were generated for
    pub table: HashlimitTable,
    /// the entries
    pub map: Map,
    /// the collector, shared by every generation naming the table
    _gc: Arc<Gc>,
}

fn sys_err(what: &'static str) -> impl FnOnce(sys::SysError) -> BackendError {
    move |e| BackendError::new(e.errno(), format!("{what}: {e}"))
}

/// The tables `table` names, reusing those of `old` (configuration included); refuses a rule
/// whose rate-match mode is not its table's.
pub fn prepare(table: &Table, old: &[Hashlimit]) -> Result<Vec<Hashlimit>, BackendError> {
    let mut out: Vec<Hashlimit> = Vec::new();
    for t in crate::xlate::hashlimit_tables(table) {
        match old.iter().find(|o| o.table.name == t.name) {
            Some(o) => out.push(Hashlimit {
                table: o.table.clone(),
                map: o
                    .map
                    .try_clone()
                    .map_err(sys_err("reusing a hashlimit table"))?,
                _gc: Arc::clone(&o._gc),
            }),
            None => {
                let map = create(&t)?;
                let gc = Gc::start(&map, t.cfg.gc_interval)?;
                out.push(Hashlimit {
                    table: t,
                    map,
                    _gc: gc,
                });
            }
        }
    }
    for h in crate::xlate::hashlimit_matches(table) {
        let rule = h.cfg().mode & ipt_abi::abi::XT_HASHLIMIT_RATE_MATCH != 0;
        if let Some(t) = out.iter().find(|t| t.table.name == h.name()) {
            if t.table.rate_match() != rule {
                return Err(BackendError::new(
                    libc::EINVAL,
                    format!(
                        "hashlimit: table {} {} in rate-match mode, a rule naming it {}",
                        String::from_utf8_lossy(&t.table.name),
                        if t.table.rate_match() { "is" } else { "is not" },
                        if rule { "is" } else { "is not" },
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The RAM size `htable_create` sizes a table by (MemTotal: `totalram_pages`).
fn ram_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

/// An empty table of `max` entries.
fn create(t: &HashlimitTable) -> Result<Map, BackendError> {
    Map::create_spin_locked_hash(
        hl::KEY_SIZE,
        hl::VALUE_SIZE,
        t.entries(ram_bytes()),
        "bpfltr_hashlim",
    )
    .map_err(sys_err("creating a hashlimit table"))
}

/// Pins the tables in a generation's folder, as `hashlimit<i>` and `hashlimit<i>_cfg`.
pub fn pin(tables: &[Hashlimit], dir: &Path) -> Result<(), BackendError> {
    for (i, h) in tables.iter().enumerate() {
        h.map
            .pin(dir.join(format!("hashlimit{i}")))
            .map_err(sys_err("pinning a hashlimit table"))?;
        let mut cfg = h.table.cfg.as_bytes().to_vec();
        cfg.push(h.table.revision);
        BlobMap::create("bpfltr_hlcfg", &cfg, cfg.len())
            .and_then(|m| m.pin(&dir.join(format!("hashlimit{i}_cfg"))))
            .map_err(sys_err("storing a hashlimit configuration"))?;
    }
    Ok(())
}

/// The tables of a pinned generation whose ruleset is `table`.
pub fn open(table: &Table, dir: &Path) -> Result<Vec<Hashlimit>, BackendError> {
    let mut out = Vec::new();
    for (i, mut t) in crate::xlate::hashlimit_tables(table)
        .into_iter()
        .enumerate()
    {
        let map = Map::from_pin(dir.join(format!("hashlimit{i}")))
            .map_err(sys_err("opening a hashlimit table"))?;
        let stored = BlobMap::open(&dir.join(format!("hashlimit{i}_cfg")))
            .and_then(|b| b.read())
            .map_err(sys_err("reading a hashlimit configuration"))?;
        let size = std::mem::size_of::<HashlimitCfg3>();
        match HashlimitCfg3::read_from_prefix(&stored) {
            Ok((cfg, rest)) if stored.len() == size + 1 && rest.len() == 1 => {
                t.cfg = cfg;
                t.revision = rest[0];
            }
            _ => {
                return Err(BackendError::new(
                    libc::EINVAL,
                    "a pinned hashlimit configuration has the wrong size",
                ))
            }
        }
        let gc = Gc::start(&map, t.cfg.gc_interval)?;
        out.push(Hashlimit {
            table: t,
            map,
            _gc: gc,
        });
    }
    Ok(out)
}

/// The garbage collector of one table (`htable_gc`): every `gc_interval` ms, the entries
/// whose `expires` has come are deleted. Stops when the last generation naming the table
/// lets go of it.
#[derive(Debug)]
struct Gc {
    stop: Arc<AtomicBool>,
}

impl Drop for Gc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Gc {
    fn start(map: &Map, interval_ms: u32) -> Result<Arc<Gc>, BackendError> {
        let map = map
            .try_clone()
            .map_err(sys_err("sharing a hashlimit table"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let interval = Duration::from_millis(u64::from(interval_ms.max(1)));
        std::thread::Builder::new()
            .name("hashlimit-gc".into())
            .spawn(move || loop {
                let mut waited = Duration::ZERO;
                while waited < interval {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let step = (interval - waited).min(Duration::from_millis(100));
                    std::thread::sleep(step);
                    waited += step;
                }
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                collect(&map);
            })
            .map_err(|e| BackendError::new(libc::EAGAIN, format!("hashlimit gc thread: {e}")))?;
        Ok(Arc::new(Gc { stop }))
    }
}

/// `htable_selective_cleanup(ht, select_gc)`: deletes the entries with `jiffies >= expires`
/// (each read again just before, so that an entry a packet refreshed meanwhile stays).
fn collect(map: &Map) {
    let Ok(keys) = all_keys(map) else { return };
    if keys.is_empty() {
        return;
    }
    let Some(now) = crate::layout::jiffies() else {
        return;
    };
    for key in keys {
        let mut value = vec![0u8; hl::VALUE_SIZE as usize];
        if map.lookup(&key, &mut value).is_err() {
            continue;
        }
        if expired(&value, now) {
            let _ = map.delete(&key);
        }
    }
}

fn all_keys(map: &Map) -> sys::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut at: Option<Vec<u8>> = None;
    while let Some(next) = map.next_key(at.as_deref())? {
        keys.push(next.clone());
        at = Some(next);
    }
    Ok(keys)
}

/// `time_after_eq(jiffies, expires)` of an entry's value.
fn expired(value: &[u8], now: u64) -> bool {
    let at = hl::EXPIRES as usize;
    let mut b = [0u8; 8];
    b.copy_from_slice(&value[at..at + 8]);
    now.wrapping_sub(u64::from_ne_bytes(b)) as i64 >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_time_after_eq() {
        let mut v = vec![0u8; hl::VALUE_SIZE as usize];
        v[8..16].copy_from_slice(&1000u64.to_ne_bytes());
        assert!(!expired(&v, 999));
        assert!(expired(&v, 1000));
        assert!(expired(&v, 1001));
    }

    #[test]
    fn table_entries_follow_htable_create() {
        let t = |size, max| HashlimitTable {
            name: b"x".to_vec(),
            cfg: HashlimitCfg3 {
                size,
                max,
                ..Default::default()
            },
            revision: 3,
        };
        // more than 1 GiB: 8192 buckets, 8 entries each
        assert_eq!(t(0, 0).entries(2 << 30), 65536);
        // 256 MiB: 256 MiB / 16 KiB / 8 = 2048 buckets
        assert_eq!(t(0, 0).entries(256 << 20), 16384);
        assert_eq!(t(0, 0).entries(1 << 20), 128, "at least 16 buckets");
        assert_eq!(t(100, 0).entries(2 << 30), 800);
        assert_eq!(t(100, 50).entries(2 << 30), 100, "max at least size");
        assert_eq!(t(100, 5000).entries(2 << 30), 5000);
    }
}
