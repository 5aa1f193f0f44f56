//! A table's counter map: `{packets, bytes}` per counter slot, counted by its programs.
//!
//! Two layouts ([`CounterLayout`]); the programs are compiled for the map's:
//! - striped (what the daemon creates): a `BPF_F_MMAPABLE` ARRAY of `capacity` slots per
//!   possible CPU, CPU after CPU. The daemon maps it once and reads every count with plain
//!   (atomic) loads: 10,000 slots on 2 CPUs in about 0.1 ms, where a batched lookup of a
//!   per-CPU map copies each value out on its own (about 4 ms), and each command on a large
//!   table reads them twice (GET_ENTRIES, then SET_REPLACE's reply);
//! - per-CPU: a PERCPU_ARRAY, read by batched lookups. Kept for maps a kernel refuses to
//!   map and for tables an older daemon left running (taken over as they are).

use std::path::Path;
use std::sync::atomic::Ordering;

use emitter::codegen::CounterLayout;

use crate::sys::{self, Map, MapType, Mapping, Sums, SysError};

/// Bytes of one slot's counts: packets, bytes.
const SLOT_BYTES: u32 = 16;
/// The same in u64 words.
const SLOT_WORDS: usize = SLOT_BYTES as usize / 8;

/// The counter map of a table (shared by its consecutive generations).
#[derive(Debug)]
pub struct CounterMap {
    map: Map,
    capacity: u32,
    layout: CounterLayout,
    /// the striped layout's values (None under the fake kernel: read by lookups there)
    mapping: Option<Mapping>,
}

impl CounterMap {
    /// A map of `capacity` slots, striped per CPU; per-CPU if the kernel will not map an
    /// array (`BPF_F_MMAPABLE` is 5.5's; a refusal is logged).
    pub fn create(capacity: u32) -> sys::Result<CounterMap> {
        match Self::create_striped(capacity) {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::warn!(error = %e, "mapped counter array refused: per-CPU counters");
                let map = Map::create(MapType::PercpuArray, 4, SLOT_BYTES, capacity, "bpfltr_cnt")?;
                Ok(CounterMap {
                    map,
                    capacity,
                    layout: CounterLayout::PerCpu,
                    mapping: None,
                })
            }
        }
    }

    fn create_striped(capacity: u32) -> sys::Result<CounterMap> {
        let cpus = possible_cpus()?;
        let entries = capacity
            .checked_mul(cpus)
            .ok_or_else(|| SysError::invalid(format!("{capacity} slots on {cpus} CPUs")))?;
        let map = Map::create_mmapable(SLOT_BYTES, entries, "bpfltr_cnt")?;
        Self::striped(map, capacity)
    }

    fn striped(map: Map, capacity: u32) -> sys::Result<CounterMap> {
        let mapping = match map.map_values() {
            Ok(m) => Some(m),
            Err(e) if e.errno() == libc::EOPNOTSUPP && cfg!(test) => None,
            Err(e) => return Err(e),
        };
        Ok(CounterMap {
            map,
            capacity,
            layout: CounterLayout::Striped { stride: capacity },
            mapping,
        })
    }

    /// The counter map pinned at `path`, in the layout it was made with.
    pub fn open(path: impl AsRef<Path>) -> sys::Result<CounterMap> {
        let map = Map::from_pin(path)?;
        match map.map_type() {
            MapType::PercpuArray => Ok(CounterMap {
                capacity: map.max_entries(),
                map,
                layout: CounterLayout::PerCpu,
                mapping: None,
            }),
            MapType::Array if map.value_size() == SLOT_BYTES => {
                let cpus = possible_cpus()?;
                if map.max_entries() % cpus != 0 {
                    return Err(SysError::invalid(format!(
                        "a counter array of {} values on {cpus} CPUs",
                        map.max_entries()
                    )));
                }
                let capacity = map.max_entries() / cpus;
                Self::striped(map, capacity)
            }
            t => Err(SysError::invalid(format!("a counter map of type {t:?}"))),
        }
    }

    /// The map (to pin it, or patch its fd into programs).
    pub fn map(&self) -> &Map {
        &self.map
    }

    /// Slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// What the programs must be compiled for.
    pub fn layout(&self) -> CounterLayout {
        self.layout
    }

    /// Every slot's counts summed over the CPUs: 2 words (packets, bytes) per slot.
    pub fn sums(&self) -> sys::Result<Sums> {
        let width = SLOT_WORDS;
        match self.layout {
            CounterLayout::PerCpu => self.map.sum_percpu_u64_all(),
            CounterLayout::Striped { stride } => {
                let per_cpu = stride as usize * width;
                let mut words = vec![0u64; per_cpu];
                match &self.mapping {
                    Some(m) => {
                        for cpu in m.words().chunks_exact(per_cpu) {
                            for (sum, w) in words.iter_mut().zip(cpu) {
                                *sum = sum.wrapping_add(w.load(Ordering::Relaxed));
                            }
                        }
                    }
                    None => self.map.for_each(|k, v| {
                        let idx = u32::from_ne_bytes([k[0], k[1], k[2], k[3]]) as usize;
                        let at = (idx % stride as usize) * width;
                        for (sum, w) in words[at..at + width].iter_mut().zip(v.chunks_exact(8)) {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(w);
                            *sum = sum.wrapping_add(u64::from_ne_bytes(b));
                        }
                    })?,
                }
                Ok(Sums::from_words(width, words))
            }
        }
    }

    /// Zeroes `slots` on every CPU (no program may count in them any more); returns those
    /// zeroed (a slot that could not be stays out of use).
    pub fn zero(&self, slots: Vec<u32>) -> Vec<u32> {
        match (&self.layout, &self.mapping) {
            (CounterLayout::Striped { stride }, Some(m)) => {
                let per_cpu = *stride as usize * SLOT_WORDS;
                let slots: Vec<u32> = slots.into_iter().filter(|&s| s < *stride).collect();
                for cpu in m.words().chunks_exact(per_cpu) {
                    for &s in &slots {
                        let at = s as usize * SLOT_WORDS;
                        for w in &cpu[at..at + SLOT_WORDS] {
                            w.store(0, Ordering::Relaxed);
                        }
                    }
                }
                slots
            }
            (CounterLayout::Striped { stride }, None) => {
                let zero = [0u8; SLOT_BYTES as usize];
                let cpus = self.map.max_entries() / stride.max(&1);
                slots
                    .into_iter()
                    .filter(|&s| (0..cpus).all(|c| self.update(c * stride + s, &zero)))
                    .collect()
            }
            (CounterLayout::PerCpu, _) => {
                let zero = match self.map.value_buf_len() {
                    Ok(n) => vec![0u8; n],
                    Err(e) => {
                        tracing::warn!(error = %e, "counter slots not zeroed");
                        return Vec::new();
                    }
                };
                slots
                    .into_iter()
                    .filter(|&s| self.update(s, &zero))
                    .collect()
            }
        }
    }

    fn update(&self, index: u32, value: &[u8]) -> bool {
        match self.map.update(&index.to_ne_bytes(), value, 0) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(index, error = %e, "a counter slot not zeroed stays unused");
                false
            }
        }
    }
}

/// CPU numbers `bpf_get_smp_processor_id()` may return: the highest possible CPU + 1 (the
/// kernel's `nr_cpu_ids`; libbpf's count of possible CPUs is smaller when the mask has holes).
fn possible_cpus() -> sys::Result<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_err(|e| SysError::invalid(format!("/sys/devices/system/cpu/possible: {e}")))?;
    highest_cpu(&text)
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| SysError::invalid(format!("possible CPUs {:?}", text.trim())))
}

/// The highest CPU number of a CPU list (`0-3,8,10-11`).
fn highest_cpu(list: &str) -> Option<u32> {
    list.trim()
        .split([',', '-'])
        .map(|n| n.parse::<u32>().ok())
        .try_fold(None::<u32>, |max, n| Some(max.max(Some(n?))))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(highest_cpu("0\n"), Some(0));
        assert_eq!(highest_cpu("0-1\n"), Some(1));
        assert_eq!(highest_cpu("0-3,8,10-11"), Some(11));
        assert_eq!(highest_cpu(""), None);
        assert_eq!(highest_cpu("0-x"), None);
    }
}
