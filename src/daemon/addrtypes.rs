//! The namespace's address types for `-m addrtype`: a BPF LPM trie that answers what
//! `__inet_dev_addr_type()` (net/ipv4/fib_frontend.c) answers, kept equal to the namespace's
//! local routing table while the rules need it.
//!
//! What the kernel answers: `docs/KERNEL-BEHAVIOUR.md#addrtype-lookup`. The map holds its
//! three fixed ranges (0.0.0.0/8, 224.0.0.0/4, 255.255.255.255), then every local route not
//! inside them (the first of each prefix in the kernel's dump order, the one its lookup
//! takes), with the route's device, or 0 for "any device" where the kernel does not compare it.
//!
//! A thread per table listens to the namespace's route, address and link notifications and
//! re-reads the table on each (and every [`RESYNC`] regardless, should a notification be lost),
//! so that the rules follow addresses as they come and go.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use emitter::codegen::{ADDRTYPE_KEY_SIZE, ADDRTYPE_VALUE_SIZE};
use tracing::{debug, warn};

use super::state::BackendError;
use crate::sys::{self, LocalRoute, Map, MapType};

/// Entries of the map: more local routes than any host has (two per address).
const MAX_ENTRIES: u32 = 65536;
/// A full re-read at least this often.
const RESYNC: Duration = Duration::from_secs(10);
/// How long the watcher waits for a notification before it looks at its stop flag.
const TICK: Duration = Duration::from_millis(250);

const RTN_UNICAST: u32 = 1;
const RTN_BROADCAST: u32 = 3;
const RTN_MULTICAST: u32 = 5;
/// RTN_BLACKHOLE ..= RTN_XRESOLVE: types whose lookup fails (`fib_props[type].error`).
const ERROR_TYPES: std::ops::RangeInclusive<u8> = 6..=11;

/// A map key: prefix length, then the address in network order.
type Key = [u8; ADDRTYPE_KEY_SIZE as usize];
/// A map value: RTN_* type, then the device (0: any).
type Value = [u8; ADDRTYPE_VALUE_SIZE as usize];

fn key(net: u32, prefix: u8) -> Key {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&u32::from(prefix).to_ne_bytes());
    k[4..].copy_from_slice(&net.to_be_bytes());
    k
}

fn value(rtype: u32, ifindex: u32) -> Value {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&rtype.to_ne_bytes());
    v[4..].copy_from_slice(&ifindex.to_ne_bytes());
    v
}

/// The map contents for `routes` (the local table in dump order).
pub fn entries(routes: &[LocalRoute]) -> BTreeMap<Key, Value> {
    let fixed = [
        (0u32, 8u8, RTN_BROADCAST),
        (u32::MAX, 32, RTN_BROADCAST),
        (0xe000_0000, 4, RTN_MULTICAST),
    ];
    let inside_fixed = |net: u32, prefix: u8| {
        fixed
            .iter()
            .any(|&(f, fp, _)| prefix >= fp && (fp == 0 || (net ^ f) >> (32 - u32::from(fp)) == 0))
    };
    let mut out = BTreeMap::new();
    for (net, prefix, rtype) in fixed {
        out.insert(key(net, prefix), value(rtype, 0));
    }
    for r in routes {
        if r.prefix > 32 || inside_fixed(r.net, r.prefix) {
            continue;
        }
        let mask = if r.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(r.prefix))
        };
        let v = if ERROR_TYPES.contains(&r.rtype) {
            value(RTN_UNICAST, 0)
        } else {
            value(u32::from(r.rtype), r.ifindex)
        };
        out.entry(key(r.net & mask, r.prefix)).or_insert(v);
    }
    out
}

/// Makes `map` hold exactly `want`: new and changed entries first, stale ones last, so that a
/// lookup in between sees the old or the new answer of each address, never none.
fn apply(map: &Map, want: &BTreeMap<Key, Value>) -> Result<(), sys::SysError> {
    let have = map.lookup_all()?;
    let mut current = BTreeMap::new();
    for (k, v) in have {
        if let (Ok(k), Ok(v)) = (Key::try_from(k.as_slice()), Value::try_from(v.as_slice())) {
            current.insert(k, v);
        }
    }
    for (k, v) in want {
        if current.get(k) != Some(v) {
            map.update(k, v, 0)?;
        }
    }
    for k in current.keys().filter(|k| !want.contains_key(*k)) {
        map.delete(k)?;
    }
    Ok(())
}

/// Reads the namespace's local table and brings `map` up to date.
fn sync(map: &Map, netns: &crate::events::Netns) -> Result<usize, BackendError> {
    let fd = netns
        .fd()
        .ok_or_else(|| BackendError::new(libc::ENOENT, "the table's namespace is gone"))?;
    let routes = sys::in_netns(fd.as_fd(), sys::local_routes)
        .and_then(|r| r)
        .map_err(|e| BackendError::new(e.errno(), format!("reading the local routes: {e}")))?;
    let want = entries(&routes);
    apply(map, &want)
        .map_err(|e| BackendError::new(e.errno(), format!("updating the address types: {e}")))?;
    Ok(want.len())
}

/// The address-type map of a table and the thread keeping it current.
#[derive(Debug)]
pub struct AddrTypes {
    map: Arc<Map>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AddrTypes {
    /// Opens the map pinned in `dir` (or creates and pins it), fills it from the namespace's
    /// local table, and starts the watcher.
    pub fn start(dir: &Path, netns: Arc<crate::events::Netns>) -> Result<AddrTypes, BackendError> {
        let pin = dir.join("addrtypes");
        let map = match Map::from_pin(&pin) {
            Ok(m) => m,
            Err(_) => {
                let m = Map::create(
                    MapType::LpmTrie,
                    ADDRTYPE_KEY_SIZE,
                    ADDRTYPE_VALUE_SIZE,
                    MAX_ENTRIES,
                    "bpfltr_addrtype",
                )
                .map_err(|e| {
                    BackendError::new(e.errno(), format!("creating the address types: {e}"))
                })?;
                m.pin(&pin).map_err(|e| {
                    BackendError::new(e.errno(), format!("pinning the address types: {e}"))
                })?;
                m
            }
        };
        sync(&map, &netns)?;
        let map = Arc::new(map);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (map, stop) = (Arc::clone(&map), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("bpfilter-addrtype".into())
                .spawn(move || watch(&map, &netns, &stop))
                .map_err(|e| {
                    BackendError::new(libc::EAGAIN, format!("starting the route watcher: {e}"))
                })?
        };
        Ok(AddrTypes {
            map,
            stop,
            thread: Some(thread),
        })
    }

    /// The map the programs look addresses up in.
    pub fn map(&self) -> &Map {
        &self.map
    }
}

impl Drop for AddrTypes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The watcher: re-reads the local table after every notification, and every [`RESYNC`].
fn watch(map: &Map, netns: &crate::events::Netns, stop: &AtomicBool) {
    let Some(fd) = netns.fd() else {
        return;
    };
    let watch = match sys::in_netns(fd.as_fd(), sys::RouteWatch::new).and_then(|r| r) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(netns = netns.id, error = %e, "cannot watch routes; address types re-read every 10 s only");
            None
        }
    };
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let changed = match &watch {
            Some(w) => w.wait(TICK).unwrap_or(true),
            None => {
                std::thread::sleep(TICK);
                false
            }
        };
        if changed || last.elapsed() >= RESYNC {
            last = Instant::now();
            match sync(map, netns) {
                Ok(n) => debug!(netns = netns.id, entries = n, "address types re-read"),
                // the namespace went away: the table goes with it
                Err(e) if e.errno == libc::ENOENT => return,
                Err(e) => warn!(netns = netns.id, error = %e, "address types not updated"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use emitter::reference;

    fn route(net: [u8; 4], prefix: u8, rtype: u8, ifindex: u32) -> LocalRoute {
        LocalRoute {
            net: u32::from_be_bytes(net),
            prefix,
            rtype,
            ifindex,
        }
    }

    /// LPM lookup in the entries, as the BPF map does it, then the program's device rule.
    fn lookup(e: &BTreeMap<Key, Value>, dev: Option<u32>, addr: u32) -> u8 {
        let best = e
            .iter()
            .filter_map(|(k, v)| {
                let prefix = u32::from_ne_bytes(k[..4].try_into().unwrap());
                let net = u32::from_be_bytes(k[4..].try_into().unwrap());
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                (addr & mask == net).then_some((prefix, v))
            })
            .max_by_key(|(p, _)| *p);
        let Some((_, v)) = best else { return 1 };
        let t = u32::from_ne_bytes(v[..4].try_into().unwrap()) as u8;
        let ifindex = u32::from_ne_bytes(v[4..].try_into().unwrap());
        match dev {
            Some(d) if ifindex != 0 && ifindex != d => 1,
            _ => t,
        }
    }

    /// The map answers every address as `__inet_dev_addr_type` would (the reference's
    /// transcription), with and without a device.
    #[test]
    fn entries_answer_as_the_kernel_lookup() {
        let routes = [
            route([127, 0, 0, 0], 8, 2, 1),
            route([127, 0, 0, 1], 32, 2, 1),
            route([127, 255, 255, 255], 32, 3, 1),
            route([10, 0, 0, 1], 32, 2, 5),
            route([10, 0, 0, 1], 32, 2, 6), // the same address on a second device: not taken
            route([10, 0, 0, 255], 32, 3, 5),
            route([192, 168, 9, 0], 24, 7, 0), // unreachable: the lookup fails
            route([224, 1, 2, 3], 32, 2, 5),   // inside 224/4: MULTICAST first
            route([0, 0, 0, 7], 32, 2, 5),     // inside 0/8: BROADCAST first
            route([0, 0, 0, 0], 0, 4, 9),      // anycast default: everything else
        ];
        let e = entries(&routes);
        // the reference takes the first of equal prefixes, as the dump's order has it
        let refs = routes.to_vec();
        let addrs = [
            [127, 0, 0, 1],
            [127, 3, 4, 5],
            [127, 255, 255, 255],
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            [10, 0, 0, 255],
            [192, 168, 9, 9],
            [224, 1, 2, 3],
            [239, 255, 255, 250],
            [0, 0, 0, 7],
            [255, 255, 255, 255],
            [8, 8, 8, 8],
        ];
        for a in addrs {
            let addr = u32::from_be_bytes(a);
            for dev in [None, Some(1), Some(5), Some(6)] {
                assert_eq!(
                    lookup(&e, dev, addr),
                    reference::addr_type(&refs, dev, addr),
                    "{a:?} dev {dev:?}"
                );
            }
        }
    }
}
