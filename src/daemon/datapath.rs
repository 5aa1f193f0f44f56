//! The BPF datapath of one table in one namespace.
//!
//! Objects and pins (`<root>` is the bpffs folder, `<ns>` the namespace's nsfs inode):
//! ```text
//! <root>/net<ns>/<table>/progs            PROG_ARRAY, slot = hook number
//! <root>/net<ns>/<table>/<HOOK>/dispatcher  tail-calls progs[hook]; an empty slot accepts
//! <root>/net<ns>/<table>/<HOOK>/link        netfilter link of the dispatcher (pf, hook, PRIORITY)
//! <root>/net<ns>/<table>/gen<N>/<HOOK>      the compiled chain program of generation N
//! <root>/net<ns>/<table>/gen<N>/counters    {packets, bytes} per slot and CPU, mapped by the
//!                                          daemon (the same map in consecutive generations,
//!                                          see [`slots`] and [`super::counters`])
//! <root>/net<ns>/<table>/gen<N>/slots       the counter slot of each entry (BlobMap, u32s)
//! <root>/net<ns>/<table>/gen<N>/bases       added to each entry's slot: counters carried by
//!                                          SET_ADD_COUNTERS, less a kept slot's earlier count
//! <root>/net<ns>/<table>/gen<N>/ruleset     the accepted SET_REPLACE bytes (BlobMap)
//! <root>/net<ns>/<table>/gen<N>/<HOOK>_set<i> lookup maps of rule runs, classification trees,
//!                                          LOG prefixes (the previous generation's map where
//!                                          the contents are the same)
//! <root>/net<ns>/<table>/gen<N>/limits    ARRAY: the `limit` buckets of the ruleset
//! <root>/net<ns>/<table>/gen<N>/recent<i>  ARRAY of one spin-locked value: a `recent` list
//!                                          (the same map in every generation naming it)
//! <root>/net<ns>/<table>/gen<N>/hashlimit<i>  HASH of spin-locked entries: a `hashlimit`
//!                                          table (likewise), `hashlimit<i>_cfg` its config
//! <root>/net<ns>/<table>/events           RINGBUF of REJECT/LOG records (every generation,
//!                                          from the first that has REJECT, LOG or conntrack
//!                                          rules: see [`needs_events`])
//! <root>/net<ns>/<table>/event_loss       ARRAY: records lost to a full ring buffer (likewise)
//! <root>/net<ns>/<table>/reply_ct         ARRAY: the connections of REJECT replies (likewise)
//! <root>/net<ns>/<table>/older_tables     the kernel's tables when this one was made (BlobMap)
//! <root>/net<ns>/<table>/addrtypes        LPM_TRIE: the namespace's address types (addrtype)
//! <root>/net<ns>/<table>/committed        ARRAY: the generation iptables was told is in force
//! ```
//! A replace builds and pins generation N+1 completely, then points every hook's slot at its
//! programs, reads N's counters and unpins N. The entries N+1 keeps count on in N's slots, so
//! the read needs no wait for packets still inside N (see [`slots`]). A replace that needs a
//! new counter map reads N's map at once too, and what N's programs count there afterwards
//! comes later ([`Late`]). The guarantee: each hook switches atomically (one
//! PROG_ARRAY update), the hooks one after another within microseconds. A packet crosses one
//! filter hook only (INPUT, FORWARD or OUTPUT), so every packet is judged and counted by one
//! whole generation; only two packets at two different hooks during those microseconds can
//! meet different generations, which no packet can observe (the kernel's own replace lets
//! packets already inside the old table finish there too). A failure before the switch leaves N untouched.
//!
//! The commit point is the `committed` marker, written after the switch as the last step before
//! the reply: a daemon killed anywhere before it (while building, mid-switch, after the switch)
//! left a client that was told the change failed (its connection dropped), and a restarted
//! daemon puts the committed generation back in every slot and discards the newer one (see
//! [`BpfTable::adopt`]). A table whose marker is still 0 was never acknowledged to anyone and
//! is discarded whole. Packets that the discarded generation judged while the daemon was down
//! stay counted in its counters, which go with it. Only a kill between the marker and the
//! reply's write (a few microseconds) leaves a change in force that its client saw fail.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use crate::probe::Target;
use emitter::builder::MapRef;
use ipt_abi::{Family, Table, XtCounters};
use tracing::{info, warn};

use super::counters::CounterMap;
use super::hashlimit::Hashlimit;
use super::recent::Recent;
use super::slots::{self, EntryKey, Pool};
use super::state::{BackendError, Backends, Namespace, NsId, TableBackend, TableKey};
use super::store::BlobMap;
use crate::sys::{self, Link, Map, MapType, Program, SysError};

/// Netfilter priority of bpfilter's hooks: next to the kernel's filter table
/// (NF_IP_PRI_FILTER = 0), which a namespace may also have; the same priority would be EBUSY.
pub const PRIORITY: i32 = 1;
/// The netfilter family of a table's hooks.
fn nfproto(family: Family) -> u32 {
    match family {
        Family::Ipv4 => 2,  // NFPROTO_IPV4
        Family::Ipv6 => 10, // NFPROTO_IPV6
    }
}
const PROG_ARRAY_MAP: MapRef = MapRef::Other(0);
/// Pin name of the commit marker.
const COMMITTED: &str = "committed";
const HOOK_NAMES: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
const PROG_NAMES: [&str; 5] = [
    "bpfltr_pre",
    "bpfltr_in",
    "bpfltr_fwd",
    "bpfltr_out",
    "bpfltr_post",
];
const DISPATCHER_NAMES: [&str; 5] = [
    "bpfltr_dsp_pre",
    "bpfltr_dsp_in",
    "bpfltr_dsp_fwd",
    "bpfltr_dsp_out",
    "bpfltr_dsp_post",
];

fn sys_err(what: &str) -> impl FnOnce(SysError) -> BackendError + '_ {
    move |e| BackendError::new(e.errno(), format!("{what}: {e}"))
}

/// Bytes of a table's event ring buffer: about 1,400 records between two reads of the daemon.
const EVENT_RING_BYTES: u32 = 1 << 20;

/// A table's event ring buffer and loss counters ([`emitter::event`]): created with the table
/// and shared by every generation, so that a replace never loses the reader's position.
#[derive(Debug)]
struct EventMaps {
    ring: Map,
    loss: Map,
    /// the connections of REJECT replies ([`MapRef::ReplyCt`]), written by the pump
    reply_ct: Map,
}

impl EventMaps {
    fn create(dir: &Path) -> Result<EventMaps, BackendError> {
        let ring = Map::create(MapType::RingBuf, 0, 0, EVENT_RING_BYTES, "bpfltr_events")
            .map_err(sys_err("creating the event ring buffer"))?;
        ring.pin(dir.join("events"))
            .map_err(sys_err("pinning the event ring buffer"))?;
        let loss = Map::create(
            MapType::Array,
            4,
            8,
            emitter::event::LOSS_SLOTS,
            "bpfltr_evloss",
        )
        .map_err(sys_err("creating the event loss map"))?;
        loss.pin(dir.join("event_loss"))
            .map_err(sys_err("pinning the event loss map"))?;
        let reply_ct = reply_ct_map(dir)?;
        Ok(EventMaps {
            ring,
            loss,
            reply_ct,
        })
    }

    /// The pinned maps: none if there are none, new ones for a table pinned by a version
    /// whose maps differ.
    fn open(dir: &Path) -> Result<Option<EventMaps>, BackendError> {
        if !dir.join("events").exists() && !dir.join("event_loss").exists() {
            return Ok(None);
        }
        match (
            Map::from_pin(dir.join("events")),
            Map::from_pin(dir.join("event_loss")),
        ) {
            (Ok(ring), Ok(loss))
                if loss
                    .info()
                    .is_ok_and(|i| i.max_entries >= emitter::event::LOSS_SLOTS) =>
            {
                // a table pinned before REJECT replies carried their connection: a new map
                let reply_ct = match Map::from_pin(dir.join("reply_ct")) {
                    Ok(m) => m,
                    Err(_) => reply_ct_map(dir)?,
                };
                Ok(Some(EventMaps {
                    ring,
                    loss,
                    reply_ct,
                }))
            }
            // missing, or from a version with fewer slots (no LOG gate): new ones, which the
            // next generation uses
            _ => {
                let _ = sys::unpin(dir.join("events"));
                let _ = sys::unpin(dir.join("event_loss"));
                EventMaps::create(dir).map(Some)
            }
        }
    }

    /// A reader thread of the ring buffer, acting in `ns`.
    fn pump(&self, dir: &Path, ns: Arc<crate::events::Netns>) -> Option<crate::events::Pump> {
        let maps = (
            Map::from_pin(dir.join("events")),
            Map::from_pin(dir.join("event_loss")),
        );
        let (Ok(ring), Ok(loss)) = maps else {
            warn!(dir = %dir.display(), "cannot reopen the event maps; REJECT and LOG will not act");
            return None;
        };
        let reply_ct = self.reply_ct.try_clone().ok();
        match crate::events::Pump::spawn(ring, loss, reply_ct, ns) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(error = %e, "cannot start the event reader; REJECT and LOG will not act");
                None
            }
        }
    }
}

/// The table's [`MapRef::ReplyCt`], pinned as `reply_ct`.
fn reply_ct_map(dir: &Path) -> Result<Map, BackendError> {
    let map = Map::create(
        MapType::Array,
        4,
        emitter::event::CT_COPY as u32,
        emitter::event::REPLY_CT_SLOTS,
        "bpfltr_replyct",
    )
    .map_err(sys_err("creating the reply connection map"))?;
    map.pin(dir.join("reply_ct"))
        .map_err(sys_err("pinning the reply connection map"))?;
    Ok(map)
}

/// Makes BPF backends whose pins live under one bpffs folder.
#[derive(Debug)]
pub struct BpfBackends {
    root: PathBuf,
    target: Target,
}

impl BpfBackends {
    /// Prepares bpffs (mounting it if needed) and the pin folder; programs are compiled for
    /// `target` (the kernel probe's findings).
    pub fn new(root: &Path, target: Target) -> anyhow::Result<Self> {
        sys::ensure_bpffs(root)?;
        Ok(Self {
            root: root.to_owned(),
            target,
        })
    }

    /// The pin folder of a namespace.
    pub fn ns_dir(&self, ns: NsId) -> PathBuf {
        self.root.join(format!("net{}", ns.0))
    }

    /// Takes over the tables a previous daemon pinned, by namespace.
    fn adopt_all(&self) -> Vec<(NsId, TableKey, Table, Box<dyn TableBackend>)> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for ns_dir in dirs.flatten() {
            let name = ns_dir.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("net")
                .and_then(|n| n.parse().ok())
                .map(NsId)
            else {
                continue;
            };
            let Ok(tables) = std::fs::read_dir(ns_dir.path()) else {
                continue;
            };
            for t in tables.flatten() {
                let key = TableKey::from_dir_name(&t.file_name().to_string_lossy());
                let netns = Arc::new(crate::events::Netns::new(id.0, None));
                match BpfTable::adopt(&t.path(), key.family, netns, self.target) {
                    Ok((table, backend)) => {
                        info!(netns = %id, table = %key, entries = table.entries.len(), "adopted pinned table");
                        out.push((id, key, table, Box::new(backend) as Box<dyn TableBackend>));
                    }
                    // ENOENT: a daemon died while instantiating the table, before any client
                    // was told it exists; nothing of it may stay attached or pinned.
                    Err(e) if e.errno == libc::ENOENT => {
                        warn!(netns = %id, table = %key, error = %e, "discarding an incomplete table");
                        if let Err(e) = sys::remove_pins(t.path()) {
                            warn!(error = %e, "removing its pins failed");
                        }
                    }
                    Err(e) => {
                        warn!(netns = %id, table = %key, error = %e, "cannot adopt pinned table; leaving it")
                    }
                }
            }
            // An empty namespace folder is what is left of a discarded table.
            let _ = std::fs::remove_dir(ns_dir.path());
        }
        out
    }
}

impl Backends for BpfBackends {
    fn create(&self, ns: &Namespace, table: &Table) -> Result<Box<dyn TableBackend>, BackendError> {
        let nsfd = ns
            .fd
            .as_ref()
            .ok_or_else(|| BackendError::new(libc::EINVAL, "no namespace fd"))?;
        let dir = self
            .ns_dir(ns.id)
            .join(TableKey::new(table.family, &table.name).dir_name());
        let netns = Arc::new(crate::events::Netns::new(ns.id.0, nsfd.try_clone().ok()));
        let backend = BpfTable::create(dir, nsfd, netns, table, self.target)?;
        Ok(Box::new(backend))
    }

    fn adopt(&self) -> Vec<(NsId, TableKey, Table, Box<dyn TableBackend>)> {
        self.adopt_all()
    }

    fn flush(&self, ns: NsId) {
        conntrack_users().remove(&ns.0);
        // Connection tracking was on for the rules only (nothing if bpfilter never enabled it).
        if let Some(fd) = crate::events::Netns::new(ns.0, None).fd() {
            match sys::in_netns(fd.as_fd(), sys::disable_conntrack) {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => {
                    warn!(netns = %ns, error = %e, "releasing connection tracking failed")
                }
            }
        }
        let dir = self.ns_dir(ns);
        if let Err(e) = sys::remove_pins(&dir) {
            warn!(dir = %dir.display(), error = %e, "removing pins failed");
        }
    }

    fn flush_orphans(&self, keep: &[NsId]) {
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return;
        };
        for d in dirs.flatten() {
            let name = d.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_prefix("net"))
                .and_then(|n| n.parse().ok())
                .map(NsId);
            if id.is_some_and(|id| keep.contains(&id)) {
                continue;
            }
            if let Err(e) = sys::remove_pins(d.path()) {
                warn!(dir = %d.path().display(), error = %e, "removing pins failed");
            }
        }
    }
}

/// The maps of a table that every generation's programs use.
#[derive(Clone, Copy)]
struct Shared<'a> {
    events: Option<&'a EventMaps>,
    addrtypes: Option<&'a Map>,
}

/// What a generation is built from: the IR of each hook (its counters already slots of
/// `counters`), the recent lists its rules name, and where its entries count.
struct Plan<'a> {
    irs: Vec<emitter::ir::Program>,
    recent: Vec<Recent>,
    hashlimit: Vec<Hashlimit>,
    counters: Arc<CounterMap>,
    slots: Vec<u32>,
    /// the entries' keys ([`slots::keys`] of the table)
    keys: Vec<slots::EntryKey>,
    /// the generation in force, whose programs may be kept where nothing changed
    previous: Option<&'a Generation>,
}

/// Whether the program of `ir` can serve another generation as it is, once the IR and the
/// counter map are the same: it then uses no per-generation state (limit buckets start full
/// in a new ruleset, recent lists are numbered per generation, address types are kept by the
/// table's watcher).
fn reusable(ir: &emitter::ir::Program) -> bool {
    use emitter::ir::Match;
    !ir.chains.values().flat_map(|c| &c.rules).any(|r| {
        r.matches.iter().any(|m| {
            matches!(
                m,
                Match::Limit(_) | Match::Recent(_) | Match::Addrtype(_) | Match::Hashlimit(_)
            )
        })
    })
}

/// A new counter map for a ruleset of `entries` entries, its pool, and the slots of those
/// entries (the first ones).
fn new_counter_map(entries: usize) -> Result<(Arc<CounterMap>, Pool, Vec<u32>), BackendError> {
    let capacity = Pool::capacity_for(entries);
    let map = CounterMap::create(capacity).map_err(sys_err("creating the counter map"))?;
    let used = u32::try_from(entries)
        .map_err(|_| BackendError::new(libc::E2BIG, "more than 2^32 entries"))?;
    Ok((
        Arc::new(map),
        Pool::new(capacity, used),
        (0..used).collect(),
    ))
}

/// The tables of each namespace (by nsfs inode) whose rules need connection tracking. A
/// namespace has one switch for it, the nftables table `inet bpfilter_conntrack`, which serves
/// its IPv4 and its IPv6 filter tables alike: it is removed only when the last of them lets go.
fn conntrack_users() -> std::sync::MutexGuard<'static, HashMap<u64, BTreeSet<PathBuf>>> {
    static USERS: OnceLock<Mutex<HashMap<u64, BTreeSet<PathBuf>>>> = OnceLock::new();
    match USERS.get_or_init(Mutex::default).lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn lock_pool(pool: &Mutex<Pool>) -> std::sync::MutexGuard<'_, Pool> {
    match pool.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Frees `slots` of `map` once no program can count in them any more: after a grace period,
/// off the caller's path, they are zeroed and given back to `pool` (a pool that no longer
/// belongs to the table, its map replaced meanwhile, takes them harmlessly).
fn retire_slots(map: Arc<CounterMap>, pool: Arc<Mutex<Pool>>, slots: Vec<u32>) {
    if slots.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("slot-reclaim".into())
        .spawn(move || {
            synchronize_programs();
            let zeroed = map.zero(slots);
            lock_pool(&pool).release(&zeroed);
        });
    if let Err(e) = spawned {
        warn!(error = %e, "counter slots not reclaimed (no thread)");
    }
}

/// The programs and maps of one ruleset.
#[derive(Debug)]
struct Generation {
    number: u64,
    dir: PathBuf,
    /// the counter map, shared with the generations before and after while it has room
    counters: Arc<CounterMap>,
    /// the counter slot of each entry
    slots: Vec<u32>,
    /// what identifies each entry to the next ruleset
    keys: Vec<EntryKey>,
    /// what its programs were compiled from (empty when adopted: none is kept then)
    irs: Vec<emitter::ir::Program>,
    bases_store: BlobMap,
    /// per entry, added (wrapping) to its slot's count
    bases: Vec<XtCounters>,
    programs: Vec<(u32, Program, sys::LoadStats)>,
    /// the later programs of chains split over several, by hook, in chain order (none when
    /// adopted: they are in `segment_map` then)
    segments: Vec<(u32, Program, sys::LoadStats)>,
    /// the PROG_ARRAY the split chains' programs tail-call their next segment in
    segment_map: Option<Map>,
    /// the `recent` lists its rules name (maps shared with the generations that name them too)
    recent: Vec<Recent>,
    /// the `hashlimit` tables its rules name (likewise)
    hashlimit: Vec<Hashlimit>,
    /// the lookup maps of its programs, by hook (none when adopted)
    sets: Vec<(u32, SharedSet)>,
    applied: SystemTime,
}

/// One table of one namespace, running as BPF.
#[derive(Debug)]
pub struct BpfTable {
    dir: PathBuf,
    progs: Map,
    /// the commit marker: the number of the generation in force, 0 before the first
    committed: Map,
    hooks: Vec<u32>,
    target: Target,
    gen: Generation,
    /// the free slots of `gen.counters`
    pool: Arc<Mutex<Pool>>,
    /// the event maps, from the first ruleset that needs them ([`needs_events`])
    events: Option<EventMaps>,
    /// reads `events` (None without them, or if it could not start: REJECT then only drops)
    pump: Option<crate::events::Pump>,
    netns: Arc<crate::events::Netns>,
    /// the namespace's connection tracking is on because this table's rules need it
    conntrack: bool,
    /// the kernel's tables that existed when this one was instantiated (pinned as
    /// `older_tables`)
    older: Vec<String>,
    /// the namespace's address types, while some rule is an addrtype match
    addrtypes: Option<super::addrtypes::AddrTypes>,
    /// what the previous generation's programs counted in its replaced counter map after
    /// the replace read it, not yet in `gen.bases`
    late: Mutex<Option<Late>>,
}

/// Late counts: after a replace that gave the new generation a new counter map, packets
/// that were already inside the old programs still count in the old map, after the replace
/// read it for its reply. The kernel's replace waits for them (an RCU grace period, 8 to 16
/// ms, longer than its whole command); this one answers at once and a thread waits instead,
/// then reads the old map again: each new entry that continues an old one ([`slots::pair`])
/// gets the difference, as a kept slot would have counted it. Reads of the counters wait for
/// that thread (only one that comes within the grace period waits at all); the next replace
/// adds the differences to the bases.
enum Late {
    /// the thread, which returns the differences
    Waiting(std::thread::JoinHandle<Vec<(usize, XtCounters)>>),
    /// per new entry index, its difference
    Counted(Vec<(usize, XtCounters)>),
}

impl std::fmt::Debug for Late {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Late::Waiting(_) => f.write_str("Late::Waiting"),
            Late::Counted(d) => write!(f, "Late::Counted({} entries)", d.len()),
        }
    }
}

/// What the late counts are taken from: the replaced map, its counts as the replace read
/// them, and (new entry index, the old entry's slot) for each new entry that continues an
/// old one.
struct LateSource {
    old: Arc<CounterMap>,
    read: sys::Sums,
    pairs: Vec<(usize, u32)>,
}

impl LateSource {
    /// After a grace period: each continuing entry's difference between the old map now and
    /// the read (the non-zero ones).
    fn count(&self) -> Vec<(usize, XtCounters)> {
        synchronize_programs();
        #[cfg(test)]
        let _gate = tests::LATE_GATE.lock();
        let now = match self.old.sums() {
            Ok(now) => now,
            Err(e) => {
                warn!(error = %e, "reading the replaced counter map again failed: what it counted after the replace is lost");
                return Vec::new();
            }
        };
        self.pairs
            .iter()
            .filter_map(|&(entry, slot)| {
                let (now, read) = (slot_count(&now, slot), slot_count(&self.read, slot));
                let late = XtCounters {
                    pcnt: now.pcnt.wrapping_sub(read.pcnt),
                    bcnt: now.bcnt.wrapping_sub(read.bcnt),
                };
                (late != XtCounters::default()).then_some((entry, late))
            })
            .collect()
    }

    /// Counts on a thread of its own (here, after the wait, if no thread can start).
    fn start(self) -> Option<Late> {
        if self.pairs.is_empty() {
            return None;
        }
        let source = Arc::new(self);
        let on_thread = Arc::clone(&source);
        match std::thread::Builder::new()
            .name("late-counts".into())
            .spawn(move || on_thread.count())
        {
            Ok(handle) => Some(Late::Waiting(handle)),
            Err(e) => {
                warn!(error = %e, "no thread for the late counts: the replace waits for them");
                Some(Late::Counted(source.count()))
            }
        }
    }
}

/// Does a rule of `table` look at address types?
fn uses_addrtype(table: &Table) -> bool {
    table.entries.iter().flat_map(|e| &e.matches).any(|m| {
        matches!(
            m,
            ipt_abi::Match::Addrtype(_) | ipt_abi::Match::AddrtypeV1(_)
        )
    })
}

fn hooks_of(table: &Table) -> Vec<u32> {
    (0..5)
        .filter(|h| table.valid_hooks & (1 << h) != 0)
        .collect()
}

fn counters_to_bytes(c: &[XtCounters]) -> Vec<u8> {
    super::sockopt::counters_bytes(c)
}

fn counters_from_bytes(b: &[u8]) -> Vec<XtCounters> {
    b.chunks_exact(16)
        .map(|c| {
            let word = |i: usize| {
                u64::from_ne_bytes([
                    c[i],
                    c[i + 1],
                    c[i + 2],
                    c[i + 3],
                    c[i + 4],
                    c[i + 5],
                    c[i + 6],
                    c[i + 7],
                ])
            };
            XtCounters {
                pcnt: word(0),
                bcnt: word(8),
            }
        })
        .collect()
}

/// Unpins a table's event maps (those there are).
fn unpin_events(dir: &Path) {
    for name in ["events", "event_loss", "reply_ct"] {
        let _ = sys::unpin(dir.join(name));
    }
}

/// Do the programs of `irs` use the event maps: the ring buffer (REJECT, LOG), or the
/// connections of REJECT replies (read by conntrack matches)? A table gets its event maps,
/// and the thread that reads them, only from its first ruleset that does: the ring buffer is
/// a megabyte of kernel memory, and the thread wakes 50 times a second, in every namespace.
fn needs_events(irs: &[emitter::ir::Program]) -> bool {
    irs.iter().any(|p| p.has_events() || p.needs_conntrack())
}

impl BpfTable {
    /// Instantiates `table` in the namespace `nsfd`: progs array, first generation, then one
    /// dispatcher and link per hook.
    fn create(
        dir: PathBuf,
        nsfd: &OwnedFd,
        netns: Arc<crate::events::Netns>,
        table: &Table,
        target: Target,
    ) -> Result<Self, BackendError> {
        // A leftover of an earlier life of this namespace id would make pins fail with EEXIST.
        let _ = sys::remove_pins(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| {
            BackendError::new(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("mkdir {}: {e}", dir.display()),
            )
        })?;
        let result = (|| {
            let progs = Map::create(MapType::ProgArray, 4, 4, 5, "bpfltr_progs")
                .map_err(sys_err("creating the prog array"))?;
            progs
                .pin(dir.join("progs"))
                .map_err(sys_err("pinning the prog array"))?;
            let committed = commit_marker(0)?;
            committed
                .pin(dir.join(COMMITTED))
                .map_err(sys_err("pinning the commit marker"))?;
            let hooks = hooks_of(table);
            let older = super::kernel_tables::kernel_tables(nsfd.as_fd(), table.family);
            let snapshot = older.join("\n");
            BlobMap::create("bpfltr_older", snapshot.as_bytes(), snapshot.len().max(1))
                .and_then(|m| m.pin(&dir.join("older_tables")))
                .map_err(sys_err("storing the kernel's table list"))?;
            let blob = table.replace_blob(table.num_entries(), 0);
            let mut programs = crate::xlate::translate(table)
                .map_err(|e| BackendError::new(e.errno(), e.to_string()))?;
            let events = needs_events(&programs)
                .then(|| EventMaps::create(&dir))
                .transpose()?;
            let (counters, pool, slots) = new_counter_map(table.entries.len())?;
            slots::remap(&mut programs, &slots);
            let addrtypes = uses_addrtype(table)
                .then(|| super::addrtypes::AddrTypes::start(&dir, Arc::clone(&netns)))
                .transpose()?;
            let gen = Generation::build(
                &dir,
                1,
                table,
                &blob,
                Plan {
                    irs: programs,
                    recent: Vec::new(),
                    hashlimit: Vec::new(),
                    counters,
                    slots,
                    keys: slots::keys(table),
                    previous: None,
                },
                &target,
                Shared {
                    events: events.as_ref(),
                    addrtypes: addrtypes.as_ref().map(|a| a.map()),
                },
            )?;
            for (hook, prog, _) in &gen.programs {
                progs
                    .set_prog(*hook, prog)
                    .map_err(sys_err("filling the prog array"))?;
            }
            for &hook in &hooks {
                let hook_dir = dir.join(HOOK_NAMES[hook as usize]);
                std::fs::create_dir_all(&hook_dir)
                    .map_err(|e| BackendError::new(libc::EIO, format!("mkdir: {e}")))?;
                let code = emitter::dispatcher::dispatcher(hook, PROG_ARRAY_MAP)
                    .map_err(|e| BackendError::new(libc::EINVAL, format!("dispatcher: {e}")))?;
                let bytes = code.bytes(&|_| progs.fd().as_raw_fd());
                let (dsp, _) = Program::load_netfilter(DISPATCHER_NAMES[hook as usize], &bytes, 0)
                    .map_err(sys_err("loading the dispatcher"))?;
                dsp.pin(hook_dir.join("dispatcher"))
                    .map_err(sys_err("pinning the dispatcher"))?;
                let link = Link::netfilter_in(
                    nsfd.as_fd(),
                    &dsp,
                    nfproto(table.family),
                    hook,
                    PRIORITY,
                    0,
                )
                .map_err(sys_err("attaching the dispatcher"))?;
                link.pin(hook_dir.join("link"))
                    .map_err(sys_err("pinning the link"))?;
            }
            commit(&committed, gen.number)?;
            let pump = events
                .as_ref()
                .and_then(|e| e.pump(&dir, Arc::clone(&netns)));
            Ok(BpfTable {
                dir: dir.clone(),
                progs,
                committed,
                hooks,
                target,
                gen,
                pool: Arc::new(Mutex::new(pool)),
                events,
                pump,
                netns,
                conntrack: false,
                older,
                addrtypes,
                late: Mutex::new(None),
            })
        })();
        if result.is_err() {
            let _ = sys::remove_pins(&dir);
        }
        result
    }

    /// Reopens a table from its pins: the committed generation, put back in every slot a dead
    /// daemon had switched to a newer one.
    fn adopt(
        dir: &Path,
        family: Family,
        netns: Arc<crate::events::Netns>,
        target: Target,
    ) -> Result<(Table, BpfTable), BackendError> {
        let progs = Map::from_pin(dir.join("progs")).map_err(sys_err("opening the prog array"))?;
        let mut gens: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| BackendError::new(libc::EIO, format!("{}: {e}", dir.display())))?
            .flatten()
            .filter_map(|d| d.file_name().to_str()?.strip_prefix("gen")?.parse().ok())
            .collect();
        gens.sort_unstable();
        let marker = Map::from_pin(dir.join(COMMITTED)).ok();
        let committed_number = match &marker {
            Some(m) => Some(read_commit(m)?),
            None => None,
        };
        let (gen, blob) = match committed_number {
            Some(0) => {
                return Err(BackendError::new(
                    libc::ENOENT,
                    "never committed (the daemon died while creating it)",
                ))
            }
            // What iptables was last told is in force, whatever a dead daemon built after it.
            Some(n) => Generation::open(dir, n).map_err(|e| {
                BackendError::new(
                    libc::EIO,
                    format!("committed generation {n} cannot be opened: {e}"),
                )
            })?,
            // Pins of a daemon that predates the marker: the newest complete generation, as
            // that daemon adopted (a generation is pinned whole before the switch).
            None => {
                let mut chosen = None;
                for &n in gens.iter().rev() {
                    match Generation::open(dir, n) {
                        Ok(g) => {
                            chosen = Some(g);
                            break;
                        }
                        Err(e) => warn!(gen = n, error = %e, "incomplete generation; discarding"),
                    }
                }
                chosen.ok_or_else(|| BackendError::new(libc::ENOENT, "no complete generation"))?
            }
        };
        let replace = ipt_abi::parse_replace(family, &blob, None).map_err(|e| {
            // Not ENOENT, whatever the parser says: the table ran, so it must not be discarded.
            BackendError::new(libc::EIO, format!("stored ruleset does not parse: {e}"))
        })?;
        let table = replace.table;
        let mut gen = gen;
        gen.recent = super::recent::open(&table, &gen.dir)?;
        gen.hashlimit = super::hashlimit::open(&table, &gen.dir)?;
        gen.keys = slots::keys(&table);
        // Slots no entry uses may hold counts of a generation a dead daemon discarded, and
        // are zeroed before use (now, so that the first change after a restart finds them
        // free: the programs of that generation were put out of the slots above).
        let (mut pool, unused) = Pool::adopted(gen.counters.capacity(), &gen.slots);
        synchronize_programs();
        pool.release(&gen.counters.zero(unused));
        let pool = Arc::new(Mutex::new(pool));
        for &hook in &hooks_of(&table) {
            let link = dir.join(HOOK_NAMES[hook as usize]).join("link");
            let _attached = Link::from_pin(&link).map_err(|e| {
                BackendError::new(
                    libc::ENOENT,
                    format!("{}: {e} (the table was never attached)", link.display()),
                )
            })?;
        }
        let hooks = hooks_of(&table);
        for (hook, prog, _) in &gen.programs {
            let live = progs.prog_id(*hook).ok().flatten();
            if live != prog.id().ok() {
                warn!(
                    hook = HOOK_NAMES[*hook as usize],
                    gen = gen.number,
                    "a dead daemon switched to an uncommitted generation; putting the committed one back"
                );
                progs
                    .set_prog(*hook, prog)
                    .map_err(sys_err("filling the prog array"))?;
            }
        }
        let committed = match marker {
            Some(m) => m,
            None => {
                let m = commit_marker(gen.number)?;
                m.pin(dir.join(COMMITTED))
                    .map_err(sys_err("pinning the commit marker"))?;
                m
            }
        };
        for n in gens.into_iter().filter(|&n| n != gen.number) {
            let _ = sys::remove_pins(dir.join(format!("gen{n}")));
        }
        let events = EventMaps::open(dir)?;
        let pump = events
            .as_ref()
            .and_then(|e| e.pump(dir, Arc::clone(&netns)));
        // the running programs look addresses up in the pinned map: keep it current again
        let addrtypes = if uses_addrtype(&table) {
            match super::addrtypes::AddrTypes::start(dir, Arc::clone(&netns)) {
                Ok(a) => Some(a),
                Err(e) => {
                    warn!(error = %e, "address types of the adopted table not kept current");
                    None
                }
            }
        } else {
            None
        };
        // The rules that need connection tracking keep it on (a previous daemon enabled it).
        let conntrack = crate::xlate::translate(&table)
            .map(|p| p.iter().any(emitter::ir::Program::needs_conntrack))
            .unwrap_or(false);
        if let Some(p) = &pump {
            *p.conntrack_switch() = conntrack;
        }
        if conntrack {
            conntrack_users()
                .entry(netns.id)
                .or_default()
                .insert(dir.to_owned());
        }
        let older = BlobMap::open(&dir.join("older_tables"))
            .and_then(|m| m.read())
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok((
            table,
            BpfTable {
                dir: dir.to_owned(),
                progs,
                committed,
                hooks,
                target,
                gen,
                pool,
                events,
                pump,
                netns,
                conntrack,
                older,
                addrtypes,
                late: Mutex::new(None),
            },
        ))
    }

    /// Turns the namespace's connection tracking on or off (as xt_conntrack's checkentry and
    /// destroy do with nf_ct_netns_get/put), through bpfilter's nftables table there. On, it
    /// also makes sure the code generator knows `struct nf_conn` (its BTF may belong to the
    /// nf_conntrack module, loaded only now).
    fn set_conntrack(&mut self, on: bool) -> Result<(), BackendError> {
        let fd = self
            .netns
            .fd()
            .ok_or_else(|| BackendError::new(libc::ENOENT, "the table's namespace is gone"))?;
        // The pump's switch is held across the change: the pump restores a table someone else
        // removed while rules need it, and must not take this removal for one.
        let mut switch = self.pump.as_ref().map(|p| p.conntrack_switch());
        let mut users = conntrack_users();
        let others = users
            .get(&self.netns.id)
            .is_some_and(|u| u.iter().any(|d| d != &self.dir));
        // Enabling is idempotent (the other family's table may have done it); releasing waits
        // for the other family's table to release too.
        if on || !others {
            sys::in_netns(fd.as_fd(), || {
                if on {
                    sys::enable_conntrack()
                } else {
                    sys::disable_conntrack()
                }
            })
            .and_then(|r| r)
            .map_err(sys_err(if on {
                "enabling connection tracking"
            } else {
                "releasing connection tracking"
            }))?;
        }
        let mine = users.entry(self.netns.id).or_default();
        if on {
            mine.insert(self.dir.clone());
        } else {
            mine.remove(&self.dir);
        }
        drop(users);
        if let Some(needed) = switch.as_mut() {
            **needed = on;
        }
        drop(switch);
        self.conntrack = on;
        info!(
            netns = self.netns.id,
            on, "connection tracking for this namespace's rules"
        );
        if on && self.target.layout.conn.is_none() {
            if let Ok(btf) = sys::Btf::vmlinux() {
                self.target.layout.conn = crate::layout::conn_layout(&btf);
            }
        }
        Ok(())
    }

    /// Makes the event maps and starts their reader, for the first ruleset that needs them.
    fn start_events(&mut self) -> Result<(), BackendError> {
        let events = EventMaps::create(&self.dir).inspect_err(|_| unpin_events(&self.dir))?;
        self.pump = events.pump(&self.dir, Arc::clone(&self.netns));
        if let Some(p) = &self.pump {
            *p.conntrack_switch() = self.conntrack;
        }
        self.events = Some(events);
        Ok(())
    }

    /// Undoes [`Self::start_events`]: its reader stopped, its maps unpinned.
    fn stop_events(&mut self) {
        self.pump = None;
        self.events = None;
        unpin_events(&self.dir);
    }

    /// [`TableBackend::replace`]'s work (which undoes the event maps it made, if it fails).
    fn replace_table(
        &mut self,
        table: &Table,
        blob: &[u8],
    ) -> Result<Vec<XtCounters>, BackendError> {
        fault_point("before-build");
        self.settle_late()?;
        let recent = super::recent::prepare(table, &self.gen.recent)?;
        let lists: Vec<_> = recent.iter().map(|r| r.list.clone()).collect();
        let hashlimit = super::hashlimit::prepare(table, &self.gen.hashlimit)?;
        let tables: Vec<_> = hashlimit.iter().map(|h| h.table.clone()).collect();
        let irs = crate::xlate::translate_full(table, &lists, &tables)
            .map_err(|e| BackendError::new(e.errno(), e.to_string()))?;
        if self.events.is_none() && needs_events(&irs) {
            self.start_events()?;
        }
        let needs_conntrack = irs.iter().any(emitter::ir::Program::needs_conntrack);
        let enabled_now = needs_conntrack && !self.conntrack;
        if enabled_now {
            self.set_conntrack(true)?;
        }
        let addrtype = uses_addrtype(table);
        if addrtype && self.addrtypes.is_none() {
            self.addrtypes = Some(super::addrtypes::AddrTypes::start(
                &self.dir,
                Arc::clone(&self.netns),
            )?);
        }
        // Where the new entries count: the kept ones in their slots, the others in free ones;
        // or, without room, a new map.
        let keys = slots::keys(table);
        let assignment = lock_pool(&self.pool).assign(&self.gen.keys, &self.gen.slots, &keys);
        let (counters, slot_of, new_pool) = match &assignment {
            Some(a) => (Arc::clone(&self.gen.counters), a.slots.clone(), None),
            None => {
                let (map, pool, slot_of) = match new_counter_map(table.entries.len()) {
                    Ok(m) => m,
                    Err(e) => {
                        if enabled_now {
                            let _ = self.set_conntrack(false);
                        }
                        return Err(e);
                    }
                };
                (map, slot_of, Some(pool))
            }
        };
        let mut irs = irs;
        slots::remap(&mut irs, &slot_of);
        let next = match Generation::build(
            &self.dir,
            self.gen.number + 1,
            table,
            blob,
            Plan {
                irs,
                recent,
                hashlimit,
                counters: Arc::clone(&counters),
                slots: slot_of,
                keys,
                previous: Some(&self.gen),
            },
            &self.target,
            Shared {
                events: self.events.as_ref(),
                addrtypes: self.addrtypes.as_ref().map(|a| a.map()),
            },
        ) {
            Ok(next) => next,
            Err(e) => {
                self.abandon(assignment.as_ref(), false, &counters);
                if enabled_now {
                    let _ = self.set_conntrack(false);
                }
                return Err(e);
            }
        };
        let mut next = next;
        fault_point("after-build");
        for (i, (hook, prog, _)) in next.programs.iter().enumerate() {
            if i == 1 {
                fault_point("mid-switch");
            }
            if let Err(e) = self.progs.set_prog(*hook, prog) {
                // Put back what was switched already; the old generation keeps running.
                for (hook, prog, _) in self.gen.programs.iter().take(i) {
                    let _ = self.progs.set_prog(*hook, prog);
                }
                if i > 0 && next.segment_map.is_some() {
                    // packets inside the new programs must still find their next segments
                    synchronize_programs();
                }
                let _ = sys::remove_pins(&next.dir);
                self.abandon(assignment.as_ref(), i > 0, &counters);
                return Err(sys_err("switching programs")(e));
            }
        }
        fault_point("after-switch");
        let mut late = None;
        let old = match &assignment {
            // One read of the shared map: the old entries' counts for the reply, and the
            // kept entries' bases, so that the counts SET_ADD_COUNTERS carries over add up
            // to their slots' counts (packets still inside the old programs count on in
            // the same slots).
            Some(a) => counters
                .sums()
                .map_err(sys_err("reading counters"))
                .and_then(|sums| {
                    let old = counts(&self.gen, &sums);
                    let bases: Vec<XtCounters> = next
                        .slots
                        .iter()
                        .zip(&a.kept)
                        .map(|(&slot, &kept)| {
                            let live = if kept {
                                slot_count(&sums, slot)
                            } else {
                                XtCounters::default()
                            };
                            XtCounters {
                                pcnt: live.pcnt.wrapping_neg(),
                                bcnt: live.bcnt.wrapping_neg(),
                            }
                        })
                        .collect();
                    next.bases_store
                        .write(&counters_to_bytes(&bases))
                        .map_err(sys_err("storing counter bases"))?;
                    next.bases = bases;
                    Ok(old)
                }),
            // A new map: the old one's counts as they are now; what packets still inside
            // the old programs add to them comes later (`Late`).
            None => self
                .gen
                .counters
                .sums()
                .map_err(sys_err("reading counters"))
                .map(|sums| {
                    let old = counts(&self.gen, &sums);
                    let pairs = slots::pair(&self.gen.keys, &next.keys)
                        .into_iter()
                        .enumerate()
                        .filter_map(|(entry, from)| Some((entry, *self.gen.slots.get(from?)?)))
                        .collect();
                    late = Some(LateSource {
                        old: Arc::clone(&self.gen.counters),
                        read: sums,
                        pairs,
                    });
                    old
                }),
        };
        let old = old.and_then(|old| {
            commit(&self.committed, next.number)?;
            Ok(old)
        });
        let old = match old {
            Ok(old) => old,
            Err(e) => {
                // Not committed: the previous generation is put back, as a restart would.
                for (hook, prog, _) in &self.gen.programs {
                    let _ = self.progs.set_prog(*hook, prog);
                }
                synchronize_programs();
                let _ = sys::remove_pins(&next.dir);
                self.abandon(assignment.as_ref(), true, &counters);
                if enabled_now {
                    let _ = self.set_conntrack(false);
                }
                return Err(e);
            }
        };
        fault_point("after-commit");
        *self.late.get_mut().unwrap_or_else(|p| p.into_inner()) = late.and_then(LateSource::start);
        let previous = std::mem::replace(&mut self.gen, next);
        match (assignment, new_pool) {
            (Some(a), _) => retire_slots(counters, Arc::clone(&self.pool), a.dropped),
            (None, Some(pool)) => self.pool = Arc::new(Mutex::new(pool)),
            (None, None) => {}
        }
        self.hooks = hooks_of(table);
        if !addrtype {
            // the watcher stops; the pinned map stays for the next addrtype rule
            self.addrtypes = None;
        }
        if self.conntrack && !needs_conntrack {
            if let Err(e) = self.set_conntrack(false) {
                warn!(error = %e, "releasing connection tracking failed");
            }
        }
        if let Err(e) = sys::remove_pins(&previous.dir) {
            warn!(dir = %previous.dir.display(), error = %e, "removing the old generation failed");
        }
        if let Some(map) = previous.segment_map {
            retire_segments(map);
        }
        Ok(old)
    }

    /// The running generation's recent list `name`.
    fn recent_list(&self, name: &str) -> Option<&Recent> {
        self.gen
            .recent
            .iter()
            .find(|r| r.list.name == name.as_bytes())
    }

    fn read_counters(gen: &Generation) -> Result<Vec<XtCounters>, BackendError> {
        let sums = gen.counters.sums().map_err(sys_err("reading counters"))?;
        Ok(counts(gen, &sums))
    }

    /// The late counts of the last replace not yet in the bases, waiting for them if they
    /// are still being counted.
    fn late_counts(&self) -> Vec<(usize, XtCounters)> {
        let mut late = match self.late.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let counted = match late.take() {
            Some(Late::Waiting(handle)) => handle.join().unwrap_or_else(|_| {
                warn!("the late counts' thread panicked: what the replaced counter map counted after the replace is lost");
                Vec::new()
            }),
            Some(Late::Counted(counted)) => counted,
            None => Vec::new(),
        };
        if !counted.is_empty() {
            *late = Some(Late::Counted(counted.clone()));
        }
        counted
    }

    /// Adds the late counts of the last replace to the bases (waiting for them), before
    /// anything reads or replaces the bases.
    fn settle_late(&mut self) -> Result<(), BackendError> {
        let late = self.late_counts();
        if late.is_empty() {
            *self.late.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
            return Ok(());
        }
        self.add_to_bases(late)?;
        *self.late.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Adds `(entry, count)` to those entries' bases, in memory and in the pinned store.
    fn add_to_bases(
        &mut self,
        adds: impl IntoIterator<Item = (usize, XtCounters)>,
    ) -> Result<(), BackendError> {
        let mut bases = self.gen.bases.clone();
        for (entry, count) in adds {
            if let Some(b) = bases.get_mut(entry) {
                *b = plus(*b, count);
            }
        }
        self.gen
            .bases_store
            .write(&counters_to_bytes(&bases))
            .map_err(sys_err("storing counter bases"))?;
        self.gen.bases = bases;
        Ok(())
    }

    /// Gives back the free slots of a generation that did not get in force.
    fn abandon(
        &self,
        assignment: Option<&slots::Assignment>,
        ran: bool,
        counters: &Arc<CounterMap>,
    ) {
        let Some(a) = assignment else { return };
        if ran {
            retire_slots(
                Arc::clone(counters),
                Arc::clone(&self.pool),
                a.taken.clone(),
            );
        } else {
            lock_pool(&self.pool).release(&a.taken);
        }
    }
}

/// Pins in `to` the lookup maps `<hook>_set<i>` pinned in `from`.
fn repin_sets(from: &Path, to: &Path, hook: &str) -> Result<(), BackendError> {
    let prefix = format!("{hook}_set");
    let names = std::fs::read_dir(from)
        .map_err(|e| BackendError::new(libc::EIO, format!("{}: {e}", from.display())))?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_str().is_some_and(|n| n.starts_with(&prefix)));
    for name in names {
        Map::from_pin(from.join(&name))
            .and_then(|m| m.pin(to.join(&name)))
            .map_err(sys_err("pinning a rule-run map again"))?;
    }
    Ok(())
}

/// Each entry's count: its slot's count in `sums` plus its base.
fn counts(gen: &Generation, sums: &sys::Sums) -> Vec<XtCounters> {
    gen.bases
        .iter()
        .zip(&gen.slots)
        .map(|(&base, &slot)| plus(base, slot_count(sums, slot)))
        .collect()
}

/// The `{packets, bytes}` of `slot` in `sums` (zero past the map's end).
fn slot_count(sums: &sys::Sums, slot: u32) -> XtCounters {
    let live = sums.get(slot as usize);
    let word = |i: usize| live.and_then(|l| l.get(i)).copied().unwrap_or(0);
    XtCounters {
        pcnt: word(0),
        bcnt: word(1),
    }
}

/// `a + b`, wrapping as the kernel's counters do.
fn plus(a: XtCounters, b: XtCounters) -> XtCounters {
    XtCounters {
        pcnt: a.pcnt.wrapping_add(b.pcnt),
        bcnt: a.bcnt.wrapping_add(b.bcnt),
    }
}

/// The maps a generation's programs refer to besides their own lookup maps.
struct Fds<'a> {
    counters: &'a CounterMap,
    events: Option<&'a EventMaps>,
    limits: &'a Map,
    addrtypes: Option<&'a Map>,
    recent: &'a [Recent],
    hashlimit: &'a [Hashlimit],
    segments: Option<&'a Map>,
}

/// A lookup map of a generation's programs (rule runs, classification trees, LOG prefixes)
/// by kernel id, with what it was filled from: the programs only read these, so a later
/// generation whose program asks for the same contents takes the same map instead of
/// filling a new one. The id, not an fd: the generation's programs keep the map alive, and
/// the daemon holds no descriptor per map.
type SharedSet = Arc<(emitter::MapSpec, u32)>;

/// The lookup maps of `out` (pinned as `<name>_set<i>` in `dir` when `sets_at` is `(dir,
/// name)`): one of `reuse` where its contents are the same, else created and filled; then
/// its program for `hook`, loaded. Returns the program and the maps it refers to.
fn load_output(
    mut out: emitter::codegen::Output,
    hook: u32,
    fds: &Fds<'_>,
    sets_at: Option<(&Path, &str)>,
    reuse: &[SharedSet],
) -> Result<(Program, sys::LoadStats, Vec<SharedSet>), BackendError> {
    let name = HOOK_NAMES[hook as usize];
    let mut sets = Vec::with_capacity(out.maps.len());
    let mut used: Vec<SharedSet> = Vec::with_capacity(out.maps.len());
    for (i, spec) in std::mem::take(&mut out.maps).into_iter().enumerate() {
        let same = reuse
            .iter()
            .find(|s| s.0 == spec)
            .and_then(|s| Some((Arc::clone(s), Map::from_id(s.1).ok()?)));
        let (shared, set) = match same {
            Some(found) => found,
            None => {
                let map = Map::from_spec(&spec, "bpfltr_set")
                    .map_err(sys_err("creating a rule-run map"))?;
                let id = map.id().map_err(sys_err("reading a rule-run map's id"))?;
                (Arc::new((spec, id)), map)
            }
        };
        if let Some((dir, name)) = sets_at {
            set.pin(dir.join(format!("{name}_set{i}")))
                .map_err(sys_err("pinning a rule-run map"))?;
        }
        sets.push(set);
        used.push(shared);
    }
    let fd = |m: &Map| m.fd().as_raw_fd();
    let bytes = out.code.bytes(&|m| match m {
        MapRef::Counters => fd(fds.counters.map()),
        MapRef::Other(i) => sets.get(i as usize).map_or(-1, fd),
        MapRef::Events => fds.events.map_or(-1, |e| fd(&e.ring)),
        MapRef::EventLoss => fds.events.map_or(-1, |e| fd(&e.loss)),
        MapRef::Limits => fd(fds.limits),
        MapRef::AddrTypes => fds.addrtypes.map_or(-1, fd),
        MapRef::ReplyCt => fds.events.map_or(-1, |e| fd(&e.reply_ct)),
        MapRef::Recent(i) => fds.recent.get(i as usize).map_or(-1, |r| fd(&r.map)),
        MapRef::Hashlimit(i) => fds.hashlimit.get(i as usize).map_or(-1, |h| fd(&h.map)),
        MapRef::Segments => fds.segments.map_or(-1, fd),
    });
    let (prog, stats) =
        Program::load_netfilter(PROG_NAMES[hook as usize], &bytes, 0).map_err(|e| {
            warn!(hook = name, error = %e, "the verifier refused a program");
            BackendError::new(libc::EINVAL, format!("loading {name}: {e}"))
        })?;
    Ok((prog, stats, used))
}

/// Keeps a replaced generation's segment array open through a grace period, off the command
/// path: the kernel empties a PROG_ARRAY once no file refers to it, and a packet still in the
/// old programs must find its next segment.
/// Threads that load programs in parallel: the CPUs this process may use, read once (the
/// standard library reads the cgroup's CPU quota files each time it is asked, a few opens on
/// every change otherwise).
fn load_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

fn retire_segments(map: Map) {
    std::thread::spawn(move || {
        synchronize_programs();
        drop(map);
    });
}

impl Generation {
    /// Compiles and loads every hook of `table` with its counters at `plan`'s slots (bases
    /// zero), and pins it all.
    fn build(
        table_dir: &Path,
        number: u64,
        table: &Table,
        blob: &[u8],
        plan: Plan<'_>,
        target: &Target,
        shared: Shared<'_>,
    ) -> Result<Generation, BackendError> {
        let Plan {
            irs,
            recent,
            hashlimit,
            counters,
            slots,
            keys,
            previous,
        } = plan;
        // the programs of `previous` that can stay, by hook
        let same_map = previous.is_some_and(|p| Arc::ptr_eq(&p.counters, &counters));
        let keep = |ir: &emitter::ir::Program| {
            let prev = previous.filter(|_| same_map)?;
            let hook = ir.hook.number();
            // a split chain's head tail-calls into its own generation's segment array
            let whole = prev.segments.iter().all(|(h, _, _)| *h != hook);
            let same = whole && prev.irs.iter().any(|old| old == ir) && reusable(ir);
            same.then(|| prev.programs.iter().find(|(h, _, _)| *h == hook))
                .flatten()
                .map(|(_, prog, stats)| (prev, prog, stats))
        };
        let Shared { events, addrtypes } = shared;
        let dir = table_dir.join(format!("gen{number}"));
        let _ = sys::remove_pins(&dir);
        let result = (|| {
            std::fs::create_dir_all(&dir)
                .map_err(|e| BackendError::new(libc::EIO, format!("mkdir: {e}")))?;
            counters
                .map()
                .pin(dir.join("counters"))
                .map_err(sys_err("pinning counters"))?;
            let slot_bytes: Vec<u8> = slots.iter().flat_map(|s| s.to_ne_bytes()).collect();
            BlobMap::create("bpfltr_slots", &slot_bytes, slot_bytes.len().max(4))
                .and_then(|m| m.pin(&dir.join("slots")))
                .map_err(sys_err("storing the counter slots"))?;
            // the `limit` buckets: a new ruleset starts them full, as the kernel's checkentry
            // does for every rule of a replaced table (pinned: the programs hold them)
            let limits = limit_map(table)?;
            limits
                .pin(dir.join("limits"))
                .map_err(sys_err("pinning the limit buckets"))?;
            super::recent::pin(&recent, &dir)?;
            super::hashlimit::pin(&hashlimit, &dir)?;
            let bases = vec![XtCounters::default(); table.entries.len()];
            let bases_store =
                BlobMap::create("bpfltr_bases", &counters_to_bytes(&bases), bases.len() * 16)
                    .map_err(sys_err("creating the bases map"))?;
            bases_store
                .pin(&dir.join("bases"))
                .map_err(sys_err("pinning bases"))?;
            // Every hook that is not kept, compiled: its chain in one program, or split over
            // several whose later segments sit in one PROG_ARRAY of the generation.
            let mut compiled = Vec::with_capacity(irs.len());
            let mut segment_count = 0u32;
            for ir in &irs {
                if keep(ir).is_some() {
                    compiled.push(None);
                    continue;
                }
                let hook = ir.hook.number();
                let outs = crate::xlate::compile_segments(
                    ir,
                    &target.layout,
                    target.options(counters.layout()),
                    segment_count,
                    crate::xlate::SEGMENT_INSNS,
                )
                .map_err(|e| {
                    BackendError::new(
                        libc::EINVAL,
                        format!("compiling {}: {e}", HOOK_NAMES[hook as usize]),
                    )
                })?;
                let first = segment_count;
                segment_count += u32::try_from(outs.len() - 1).unwrap_or(u32::MAX);
                compiled.push(Some((first, outs)));
            }
            let segment_map = match segment_count {
                0 => None,
                n => {
                    let map = Map::create(MapType::ProgArray, 4, 4, n, "bpfltr_segs")
                        .map_err(sys_err("creating the segment array"))?;
                    // pinned: the kernel empties a PROG_ARRAY no file refers to
                    map.pin(dir.join("segments"))
                        .map_err(sys_err("pinning the segment array"))?;
                    Some(map)
                }
            };
            let fds = Fds {
                counters: &counters,
                events,
                limits: &limits,
                addrtypes,
                recent: &recent,
                hashlimit: &hashlimit,
                segments: segment_map.as_ref(),
            };
            // Every program loads on its own thread (up to one per CPU): verification is most
            // of a large ruleset's cost, and a split chain's segments are independent.
            let reuse: Vec<SharedSet> = previous
                .map(|p| p.sets.iter().map(|(_, s)| Arc::clone(s)).collect())
                .unwrap_or_default();
            let mut sets: Vec<(u32, SharedSet)> = Vec::new();
            let mut jobs = Vec::new();
            let mut placed = Vec::new();
            let mut kept = Vec::new();
            for (ir, compiled) in irs.iter().zip(compiled) {
                let hook = ir.hook.number();
                let name = HOOK_NAMES[hook as usize];
                let Some((first, outs)) = compiled else {
                    if let Some((prev, prog, stats)) = keep(ir) {
                        kept.push((hook, prev, prog, stats));
                    }
                    continue;
                };
                let parts = outs.len();
                for (j, out) in outs.into_iter().enumerate() {
                    // the head's lookup maps are pinned beside it (a kept program takes them
                    // along); a segment's live in its program and the array
                    let sets_at = (j == 0).then_some((dir.as_path(), name));
                    let fds = &fds;
                    let reuse = reuse.as_slice();
                    jobs.push(move || {
                        let started = Instant::now();
                        load_output(out, hook, fds, sets_at, reuse).map(|l| (l, started.elapsed()))
                    });
                    placed.push((hook, j, parts, first));
                }
            }
            let loaded = sys::run_parallel(jobs, load_threads());
            let mut programs = Vec::new();
            for (hook, prev, prog, stats) in kept {
                // The same program: pinned again here, with its lookup maps.
                let name = HOOK_NAMES[hook as usize];
                let prog = prog.try_clone().map_err(sys_err("keeping a program"))?;
                prog.pin(dir.join(name))
                    .map_err(sys_err("pinning a program"))?;
                repin_sets(&prev.dir, &dir, name)?;
                sets.extend(prev.sets.iter().filter(|(h, _)| *h == hook).cloned());
                let stats = sys::LoadStats {
                    load_time: std::time::Duration::ZERO,
                    ..stats.clone()
                };
                programs.push((hook, prog, stats));
            }
            let mut segments = Vec::new();
            for (result, (hook, j, parts, first)) in loaded.into_iter().zip(placed) {
                let name = HOOK_NAMES[hook as usize];
                let ((prog, stats, used), took) = result?;
                sets.extend(used.into_iter().map(|s| (hook, s)));
                info!(
                    hook = name,
                    segment = format!("{}/{parts}", j + 1),
                    rules = table.entries.len(),
                    insns = stats.xlated_insns,
                    verified = stats.verified_insns,
                    jited = stats.jited_bytes,
                    load_ms = format!("{:.2}", stats.load_time.as_secs_f64() * 1e3),
                    total_ms = format!("{:.2}", took.as_secs_f64() * 1e3),
                    "program loaded"
                );
                if j == 0 {
                    prog.pin(dir.join(name))
                        .map_err(sys_err("pinning a program"))?;
                    programs.push((hook, prog, stats));
                } else {
                    let slot = first + u32::try_from(j - 1).unwrap_or(u32::MAX);
                    segment_map
                        .as_ref()
                        .ok_or_else(|| BackendError::new(libc::EIO, "no segment array"))?
                        .set_prog(slot, &prog)
                        .map_err(sys_err("filling the segment array"))?;
                    segments.push((hook, prog, stats));
                }
            }
            programs.sort_by_key(|(hook, _, _)| *hook);
            // The ruleset last: its presence marks the generation complete.
            let store = BlobMap::create("bpfltr_rules", blob, blob.len())
                .map_err(sys_err("storing the ruleset"))?;
            store
                .pin(&dir.join("ruleset"))
                .map_err(sys_err("pinning the ruleset"))?;
            Ok(Generation {
                number,
                dir: dir.clone(),
                counters,
                slots,
                keys,
                irs,
                bases_store,
                bases,
                programs,
                segments,
                segment_map,
                recent,
                hashlimit,
                sets,
                applied: SystemTime::now(),
            })
        })();
        if result.is_err() {
            let _ = sys::remove_pins(&dir);
        }
        result
    }

    /// Reopens a pinned generation and its ruleset bytes.
    fn open(table_dir: &Path, number: u64) -> Result<(Generation, Vec<u8>), BackendError> {
        let dir = table_dir.join(format!("gen{number}"));
        let blob = BlobMap::open(&dir.join("ruleset"))
            .and_then(|s| s.read())
            .map_err(sys_err("reading the ruleset"))?;
        let counters =
            CounterMap::open(dir.join("counters")).map_err(sys_err("opening counters"))?;
        let bases_store = BlobMap::open(&dir.join("bases")).map_err(sys_err("opening bases"))?;
        let bases = counters_from_bytes(&bases_store.read().map_err(sys_err("reading bases"))?);
        // A generation pinned before slots existed counts at its entry indices.
        let slots = match BlobMap::open(&dir.join("slots")) {
            Ok(store) => store
                .read()
                .map_err(sys_err("reading the counter slots"))?
                .chunks_exact(4)
                .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Err(e) if e.errno() == libc::ENOENT => (0..bases.len() as u32).collect(),
            Err(e) => return Err(sys_err("opening the counter slots")(e)),
        };
        let mut programs = Vec::new();
        for (hook, name) in HOOK_NAMES.iter().enumerate() {
            let path = dir.join(name);
            if path.exists() {
                let prog = Program::from_pin(&path).map_err(sys_err("opening a program"))?;
                let stats = prog
                    .info()
                    .map(|i| sys::LoadStats {
                        verified_insns: i.verified_insns,
                        xlated_insns: i.xlated_insns,
                        jited_bytes: i.jited_bytes,
                        ..Default::default()
                    })
                    .unwrap_or_default();
                programs.push((hook as u32, prog, stats));
            }
        }
        let segment_map = match Map::from_pin(dir.join("segments")) {
            Ok(m) => Some(m),
            Err(e) if e.errno() == libc::ENOENT => None,
            Err(e) => return Err(sys_err("opening the segment array")(e)),
        };
        let applied = std::fs::metadata(dir.join("ruleset"))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok((
            Generation {
                number,
                dir,
                counters: Arc::new(counters),
                slots,
                keys: Vec::new(),
                irs: Vec::new(),
                bases_store,
                bases,
                programs,
                segments: Vec::new(),
                segment_map,
                recent: Vec::new(),
                hashlimit: Vec::new(),
                sets: Vec::new(),
                applied,
            },
            blob,
        ))
    }
}

/// The `limit` buckets of `table`, full as `limit_mt_check` leaves them: `credit << 32 |
/// prev`, `prev` the current jiffies (read from /proc/timer_list; the kernel's checkentry
/// reads `jiffies` at the same point of a replace).
fn limit_map(table: &Table) -> Result<Map, BackendError> {
    let buckets = crate::xlate::limit_buckets(table);
    let slots = u32::try_from(buckets.len().max(1))
        .map_err(|_| BackendError::new(libc::E2BIG, "more than 2^32 limit matches"))?;
    let map = Map::create(MapType::Array, 4, 8, slots, "bpfltr_limits")
        .map_err(sys_err("creating the limit buckets"))?;
    if !buckets.is_empty() {
        let now = crate::layout::jiffies().ok_or_else(|| {
            BackendError::new(libc::EIO, "cannot read jiffies from /proc/timer_list")
        })?;
        for (slot, (_, _, credit)) in (0u32..).zip(&buckets) {
            let word = u64::from(*credit) << 32 | (now & u64::from(u32::MAX));
            map.update(&slot.to_ne_bytes(), &word.to_ne_bytes(), 0)
                .map_err(sys_err("filling the limit buckets"))?;
        }
    }
    Ok(map)
}

/// A new commit marker holding `number`.
fn commit_marker(number: u64) -> Result<Map, BackendError> {
    let map = Map::create(MapType::Array, 4, 8, 1, "bpfltr_commit")
        .map_err(sys_err("creating the commit marker"))?;
    commit(&map, number)?;
    Ok(map)
}

/// Marks generation `number` as the one in force: one 8-byte array update, atomic for readers.
fn commit(marker: &Map, number: u64) -> Result<(), BackendError> {
    marker
        .update(&0u32.to_ne_bytes(), &number.to_ne_bytes(), 0)
        .map_err(sys_err("writing the commit marker"))
}

fn read_commit(marker: &Map) -> Result<u64, BackendError> {
    let mut value = [0u8; 8];
    marker
        .lookup(&0u32.to_ne_bytes(), &mut value)
        .map_err(sys_err("reading the commit marker"))?;
    Ok(u64::from_ne_bytes(value))
}

/// Dies on the spot, like kill -9, when `BPFILTER_FAULT` names this point of a SET_REPLACE
/// (before-build, after-build, mid-switch, after-switch, after-commit): the fault tests' way of killing the
/// daemon at a precise step. Unset, it costs one cached lookup.
fn fault_point(name: &str) {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    if FAULT
        .get_or_init(|| std::env::var("BPFILTER_FAULT").ok())
        .as_deref()
        == Some(name)
    {
        warn!(point = name, "BPFILTER_FAULT: dying here");
        std::process::abort();
    }
}

/// Waits until no BPF program that started before now is still running (an RCU grace period:
/// netfilter hooks and tail calls run inside rcu_read_lock).
fn synchronize_programs() {
    if let Err(e) = sys::synchronize_rcu() {
        warn!(error = %e, "membarrier unavailable; waiting 10 ms instead");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

impl TableBackend for BpfTable {
    fn counters(&self) -> Result<Vec<XtCounters>, BackendError> {
        let mut counts = Self::read_counters(&self.gen)?;
        for (entry, late) in self.late_counts() {
            if let Some(c) = counts.get_mut(entry) {
                *c = plus(*c, late);
            }
        }
        Ok(counts)
    }

    fn replace(&mut self, table: &Table, blob: &[u8]) -> Result<Vec<XtCounters>, BackendError> {
        let had_events = self.events.is_some();
        let result = self.replace_table(table, blob);
        if result.is_err() && !had_events && self.events.is_some() {
            // the event maps this replace made for its rules go with it
            self.stop_events();
        }
        result
    }

    fn add_counters(&mut self, add: &[XtCounters]) -> Result<(), BackendError> {
        self.add_to_bases(add.iter().copied().enumerate())
    }

    fn summary(&self) -> String {
        let (insns, verified, load) = self.gen.programs.iter().chain(&self.gen.segments).fold(
            (0u64, 0u64, 0f64),
            |(i, v, l), (_, _, s)| {
                (
                    i + u64::from(s.xlated_insns),
                    v + u64::from(s.verified_insns),
                    l + s.load_time.as_secs_f64(),
                )
            },
        );
        format!(
            "generation {}, {insns} instructions, {verified} verified, verify+load {:.1} ms",
            self.gen.number,
            load * 1e3
        )
    }

    fn older_tables(&self) -> Vec<String> {
        self.older.clone()
    }

    fn recent_read(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.recent_list(name).map(super::recent::text).transpose()
    }

    fn recent_write(&self, name: &str, data: &[u8]) -> Result<Option<usize>, BackendError> {
        self.recent_list(name)
            .map(|r| super::recent::write(r, data))
            .transpose()
    }

    fn status(&self) -> String {
        let applied = self
            .gen
            .applied
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut out = format!(
            "generation {} applied at {} (unix time), pins {}\n",
            self.gen.number,
            applied,
            self.dir.display()
        );
        {
            let pool = lock_pool(&self.pool);
            out.push_str(&format!(
                "counters: {} entries in a map of {} slots ({} free)\n",
                self.gen.slots.len(),
                pool.capacity(),
                pool.free()
            ));
        }
        if self.conntrack {
            out.push_str(
                "conntrack: on for this namespace (nftables table inet bpfilter_conntrack, \
                 as xt_conntrack's checkentry would)\n",
            );
        }
        if let Some(p) = &self.pump {
            out.push_str(&p.status());
        }
        let mut part = [0usize; HOOK_NAMES.len()];
        let split = self.gen.segments.iter().map(|(h, p, s)| (h, p, s, true));
        for (hook, prog, stats, later) in self
            .gen
            .programs
            .iter()
            .map(|(h, p, s)| (h, p, s, false))
            .chain(split)
        {
            let info = prog.info().ok();
            let name = if later {
                part[*hook as usize] += 1;
                format!("{}+{}", HOOK_NAMES[*hook as usize], part[*hook as usize])
            } else {
                HOOK_NAMES[*hook as usize].to_owned()
            };
            out.push_str(&format!(
                "{:<8} prog id {:<6} insns {:<7} jited {:<8} bytes verified {:<8} load {:.2} ms\n",
                name,
                info.as_ref().map_or(0, |i| i.id),
                info.as_ref().map_or(stats.xlated_insns, |i| i.xlated_insns),
                info.as_ref().map_or(stats.jited_bytes, |i| i.jited_bytes),
                stats.verified_insns,
                stats.load_time.as_secs_f64() * 1e3,
            ));
        }
        out
    }

    fn dump(&self, table: &Table, hook: Option<&str>) -> String {
        let lists: Vec<_> = self.gen.recent.iter().map(|r| r.list.clone()).collect();
        let tables: Vec<_> = self.gen.hashlimit.iter().map(|h| h.table.clone()).collect();
        let mut programs = match crate::xlate::translate_full(table, &lists, &tables) {
            Ok(p) => p,
            Err(e) => return format!("; cannot translate: {e}\n"),
        };
        slots::remap(&mut programs, &self.gen.slots);
        let mut out = String::new();
        // the segment slots numbered across the hooks as `Generation::build` numbers them
        let mut first_slot = 0u32;
        for ir in programs {
            let name = HOOK_NAMES[ir.hook.number() as usize];
            let compiled = crate::xlate::compile_segments(
                &ir,
                &self.target.layout,
                self.target.options(self.gen.counters.layout()),
                first_slot,
                crate::xlate::SEGMENT_INSNS,
            );
            if let Ok(parts) = &compiled {
                first_slot += u32::try_from(parts.len() - 1).unwrap_or(u32::MAX);
            }
            if hook.is_some_and(|h| !h.eq_ignore_ascii_case(name)) {
                continue;
            }
            out.push_str(&format!(
                "; hook {name}: program {}\n",
                PROG_NAMES[ir.hook.number() as usize]
            ));
            match compiled {
                Ok(parts) => {
                    let n = parts.len();
                    for (j, o) in parts.into_iter().enumerate() {
                        if n > 1 {
                            out.push_str(&format!("; segment {} of {n}\n", j + 1));
                        }
                        out.push_str(&o.code.dump());
                    }
                }
                Err(e) => out.push_str(&format!("; cannot compile: {e}\n")),
            }
        }
        out
    }
}

/// The generation lifecycle against the fake kernel (no root): build and switch, a failed
/// load that changes nothing, adoption of the committed generation (rolling back a switch a
/// dead daemon did not commit), and a table that was never committed.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use crate::sys::fake::FakeKernel;

    fn ruleset(name: &str) -> (Table, Vec<u8>) {
        let path = format!(
            "{}/fixtures/captured/{name}/replace.bin",
            env!("CARGO_MANIFEST_DIR")
        );
        let blob = std::fs::read(&path).unwrap();
        (
            ipt_abi::parse_replace(Family::Ipv4, &blob, None)
                .unwrap()
                .table,
            blob,
        )
    }

    struct Setup {
        _kernel: FakeKernel,
        root: PathBuf,
        backends: BpfBackends,
        ns: Namespace,
    }

    impl Setup {
        fn new(tag: &str) -> Setup {
            let kernel = FakeKernel::install();
            let root = std::env::temp_dir()
                .join(format!("bpfilter-lifecycle-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            let target = Target {
                layout: emitter::KernelLayout::example(),
                access: emitter::codegen::PacketAccess::Dynptr,
                stack: emitter::codegen::StackRule::Jit16,
            };
            let backends = BpfBackends::new(&root, target).unwrap();
            let mut ns = Namespace::new(NsId(4026531840));
            ns.fd = Some(OwnedFd::from(
                std::fs::File::open("/proc/self/ns/net").unwrap(),
            ));
            Setup {
                _kernel: kernel,
                root,
                backends,
                ns,
            }
        }

        fn table_dir(&self) -> PathBuf {
            self.backends.ns_dir(self.ns.id).join("filter")
        }

        /// The table's first SET_REPLACE, as the daemon instantiates it.
        fn create(&self, table: &Table) -> BpfTable {
            BpfTable::create(
                self.table_dir(),
                self.ns.fd.as_ref().unwrap(),
                Arc::new(crate::events::Netns::new(self.ns.id.0, None)),
                table,
                self.backends.target,
            )
            .unwrap()
        }

        fn generations(&self) -> Vec<String> {
            let mut g: Vec<String> = std::fs::read_dir(self.table_dir())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("gen"))
                .collect();
            g.sort();
            g
        }

        fn committed(&self) -> u64 {
            read_commit(&Map::from_pin(self.table_dir().join(COMMITTED)).unwrap()).unwrap()
        }

        /// The program ids in the INPUT, FORWARD and OUTPUT slots.
        fn slots(&self) -> Vec<Option<u32>> {
            let progs = Map::from_pin(self.table_dir().join("progs")).unwrap();
            (1..4).map(|h| progs.prog_id(h).unwrap()).collect()
        }
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn gen_ids(gen: &Generation) -> Vec<Option<u32>> {
        gen.programs.iter().map(|(_, p, _)| p.id().ok()).collect()
    }

    #[test]
    fn a_replace_switches_and_commits_and_a_failed_load_changes_nothing() {
        let s = Setup::new("replace");
        let (first, first_blob) = ruleset("host_firewall");
        let mut backend = s.create(&first);
        assert_eq!(s.generations(), ["gen1"]);
        assert_eq!(s.committed(), 1);
        assert_eq!(s.slots(), gen_ids(&backend.gen));
        let (second, second_blob) = ruleset("multiport");
        backend.replace(&second, &second_blob).unwrap();
        assert_eq!(s.generations(), ["gen2"], "the old generation is unpinned");
        assert_eq!(s.committed(), 2);
        assert_eq!(s.slots(), gen_ids(&backend.gen));
        // The verifier refuses the next generation: nothing switches, nothing stays pinned.
        let before = s.slots();
        s._kernel
            .fail_next_load(libc::EACCES, "R1 invalid mem access");
        let err = backend.replace(&first, &first_blob).unwrap_err();
        // iptables gets EINVAL; the daemon's log line carries the verifier's words
        assert_eq!(err.errno, libc::EINVAL, "{err:?}");
        assert!(err.what.contains("R1 invalid mem access"), "{err:?}");
        assert_eq!(s.generations(), ["gen2"]);
        assert_eq!(s.committed(), 2);
        assert_eq!(s.slots(), before);
    }

    /// A filter table with INPUT rules dropping 10.0.0.`last` for each of `sources`.
    fn drops(sources: &[u8]) -> (Table, Vec<u8>) {
        use ipt_abi::build::{Rule, RuleTarget, TableBuilder};
        let mut b = TableBuilder::filter();
        for &last in sources {
            b.rule(
                "INPUT",
                Rule::new(RuleTarget::Drop).src([10, 0, 0, last], 32),
            );
        }
        let table = b.build().unwrap();
        let blob = table.replace_blob(table.num_entries(), 0);
        (table, blob)
    }

    /// Counts `packets` (of 100 bytes) in `slot` of `map`, on CPU 0, as a program would
    /// (CPU 0's stretch of the striped layout starts at index 0).
    fn count(counters: &CounterMap, slot: u32, packets: u64) {
        assert!(matches!(
            counters.layout(),
            emitter::codegen::CounterLayout::Striped { .. }
        ));
        let map = counters.map();
        let mut value = map.get(&slot.to_ne_bytes()).unwrap().unwrap();
        let cpu0 = |i: usize| u64::from_ne_bytes(value[i * 8..i * 8 + 8].try_into().unwrap());
        let (p, b) = (cpu0(0) + packets, cpu0(1) + 100 * packets);
        value[..8].copy_from_slice(&p.to_ne_bytes());
        value[8..16].copy_from_slice(&b.to_ne_bytes());
        map.update(&slot.to_ne_bytes(), &value, 0).unwrap();
    }

    /// Held by a test that counts "late" packets in a replaced map: the late counts' thread
    /// reads the map only once it is free (the grace period alone would make that a race).
    pub(super) static LATE_GATE: Mutex<()> = Mutex::new(());

    #[test]
    fn a_replace_onto_a_new_map_answers_at_once_and_counts_the_late_packets() {
        let s = Setup::new("late");
        let (first, _) = drops(&[1, 2]);
        let mut backend = s.create(&first);
        let map = Arc::clone(&backend.gen.counters);
        count(&map, 0, 5);
        count(&map, 1, 3);
        // Rule 10.0.0.1 kept first, 10.0.0.2 dropped, more new rules than free slots.
        let free = lock_pool(&backend.pool).free();
        let sources: Vec<u8> = std::iter::once(1).chain(10..10 + free as u8 + 8).collect();
        let (second, second_blob) = drops(&sources);
        let gate = LATE_GATE.lock().unwrap();
        let old = backend.replace(&second, &second_blob).unwrap();
        assert!(!Arc::ptr_eq(&backend.gen.counters, &map), "a new map");
        assert_eq!(
            packets(&old)[..2],
            [5, 3],
            "the reply has the counts at the switch"
        );
        // Packets still inside the old program: one on the kept rule, one on the dropped.
        count(&map, 0, 2);
        count(&map, 1, 1);
        drop(gate);
        let now = backend.counters().unwrap();
        assert_eq!(now[0].pcnt, 2, "the kept rule's late packets are its own");
        assert_eq!(now[0].bcnt, 200);
        assert_eq!(packets(&now)[1..], vec![0; now.len() - 1]);
        // The next replace (the same ruleset, in the same map now) adds them to the bases.
        let old = backend.replace(&second, &second_blob).unwrap();
        assert_eq!(old[0].pcnt, 2);
        assert_eq!(
            backend.counters().unwrap()[0].pcnt,
            0,
            "kept slot, base -2 until SET_ADD_COUNTERS"
        );
        assert!(backend.late.lock().unwrap().is_none());
    }

    fn packets(c: &[XtCounters]) -> Vec<u64> {
        c.iter().map(|c| c.pcnt).collect()
    }

    #[test]
    fn kept_entries_count_on_in_their_slots_across_a_replace() {
        let s = Setup::new("slots");
        let (first, _) = drops(&[1, 2]);
        let mut backend = s.create(&first);
        let map = Arc::clone(&backend.gen.counters);
        // INPUT's two rules, its policy, FORWARD's, OUTPUT's, the table end.
        for (slot, n) in [(0, 3), (1, 5), (2, 7), (4, 11)] {
            count(&map, slot, n);
        }
        assert_eq!(packets(&backend.counters().unwrap()), [3, 5, 7, 0, 11, 0]);
        // iptables -I INPUT -s 10.0.0.3 -j DROP: every entry kept, one new.
        let (second, second_blob) = drops(&[3, 1, 2]);
        let before = gen_ids(&backend.gen);
        let old = backend.replace(&second, &second_blob).unwrap();
        let after = gen_ids(&backend.gen);
        assert_ne!(after[0], before[0], "INPUT changed");
        assert_eq!(after[1..], before[1..], "FORWARD and OUTPUT did not: kept");
        assert_eq!(s.slots(), after);
        assert_eq!(packets(&old), [3, 5, 7, 0, 11, 0], "the reply");
        assert_eq!(old[1].bcnt, 500);
        assert!(Arc::ptr_eq(&backend.gen.counters, &map), "the same map");
        assert_eq!(backend.gen.slots[1..], [0, 1, 2, 3, 4, 5]);
        assert_eq!(
            backend.gen.slots[0], 6,
            "the new rule takes the lowest free slot"
        );
        // Until SET_ADD_COUNTERS, the new table counts from zero, as the kernel's does.
        assert_eq!(packets(&backend.counters().unwrap()), [0; 7]);
        // A packet the old INPUT program was still judging counts on in the kept slot.
        count(&map, 1, 1);
        // libiptc carries the old counters to the rules it kept.
        let mut carried = vec![XtCounters::default()];
        carried.extend_from_slice(&old);
        backend.add_counters(&carried).unwrap();
        assert_eq!(
            packets(&backend.counters().unwrap()),
            [0, 3, 6, 7, 0, 11, 0]
        );
        // What the adopted generation shows after a restart is the same.
        let committed = backend.gen.number;
        drop(backend);
        let adopted = s.backends.adopt();
        let backend = &adopted[0].3;
        assert_eq!(s.committed(), committed);
        assert_eq!(
            packets(&backend.counters().unwrap()),
            [0, 3, 6, 7, 0, 11, 0]
        );
    }

    #[test]
    fn dropped_slots_come_back_zeroed_and_a_full_map_is_replaced() {
        let s = Setup::new("reclaim");
        let (first, _) = drops(&[1, 2]);
        let mut backend = s.create(&first);
        let map = Arc::clone(&backend.gen.counters);
        count(&map, 0, 9);
        let free = lock_pool(&backend.pool).free();
        // iptables -D INPUT 1: its slot is dropped, free again only after a grace period.
        let (second, second_blob) = drops(&[2]);
        let old = backend.replace(&second, &second_blob).unwrap();
        assert_eq!(old[0].pcnt, 9);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while lock_pool(&backend.pool).free() == free {
            assert!(Instant::now() < deadline, "slot 0 never reclaimed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(lock_pool(&backend.pool).free(), free + 1);
        assert_eq!(map.sums().unwrap().get(0).unwrap(), [0, 0]);
        // More new rules than free slots: a new map, the old counts still in the reply.
        count(&map, 0, 0);
        let many: Vec<u8> = (10..10 + free as u8 + 8).collect();
        let (third, third_blob) = drops(&many);
        let old = backend.replace(&third, &third_blob).unwrap();
        assert_eq!(old.len(), second.entries.len());
        assert!(!Arc::ptr_eq(&backend.gen.counters, &map), "a new map");
        assert_eq!(
            backend.gen.slots,
            (0..third.entries.len() as u32).collect::<Vec<_>>()
        );
        assert_eq!(
            packets(&backend.counters().unwrap()),
            vec![0; third.entries.len()]
        );
    }

    #[test]
    fn adoption_keeps_the_committed_generation_and_undoes_an_uncommitted_switch() {
        let s = Setup::new("adopt");
        let (first, _) = ruleset("host_firewall");
        let backend = s.create(&first);
        let committed_slots = s.slots();
        // A daemon that built generation 2 and switched the slots to it, then died before
        // its commit marker (its client saw the connection drop).
        let (second, second_blob) = ruleset("multiport");
        let mut irs = crate::xlate::translate(&second).unwrap();
        let assignment = lock_pool(&backend.pool)
            .assign(&backend.gen.keys, &backend.gen.slots, &slots::keys(&second))
            .unwrap();
        let keys = slots::keys(&second);
        slots::remap(&mut irs, &assignment.slots);
        let next = Generation::build(
            &s.table_dir(),
            2,
            &second,
            &second_blob,
            Plan {
                irs,
                recent: Vec::new(),
                hashlimit: Vec::new(),
                counters: Arc::clone(&backend.gen.counters),
                slots: assignment.slots,
                keys,
                previous: Some(&backend.gen),
            },
            &s.backends.target,
            Shared {
                events: backend.events.as_ref(),
                addrtypes: None,
            },
        )
        .unwrap();
        for (hook, prog, _) in &next.programs {
            backend.progs.set_prog(*hook, prog).unwrap();
        }
        assert_ne!(s.slots(), committed_slots);
        drop(next);
        drop(backend);
        let adopted = s.backends.adopt();
        assert_eq!(adopted.len(), 1);
        let (id, key, table, _backend) = &adopted[0];
        assert_eq!((id.0, key), (s.ns.id.0, &TableKey::ipv4("filter")));
        assert_eq!(
            table.entries.len(),
            first.entries.len(),
            "the committed rules"
        );
        assert_eq!(
            s.slots(),
            committed_slots,
            "the committed programs are back"
        );
        assert_eq!(
            s.generations(),
            ["gen1"],
            "the uncommitted generation is gone"
        );
        assert_eq!(s.committed(), 1);
    }

    #[test]
    fn a_table_gets_its_event_maps_with_its_first_log_rule_and_keeps_them() {
        use ipt_abi::build::{Rule, RuleTarget, TableBuilder};
        let s = Setup::new("events");
        let pinned = |s: &Setup| {
            ["events", "event_loss", "reply_ct"].map(|n| s.table_dir().join(n).exists())
        };
        let (plain, plain_blob) = drops(&[1]);
        let mut backend = s.create(&plain);
        assert_eq!(
            pinned(&s),
            [false; 3],
            "no event maps without REJECT, LOG, conntrack"
        );
        assert!(backend.events.is_none());
        let mut b = TableBuilder::filter();
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Log {
                level: 4,
                flags: 0,
                prefix: "x ".into(),
            }),
        );
        let logged = b.build().unwrap();
        let logged_blob = logged.replace_blob(logged.num_entries(), 0);
        // A replace that fails takes the maps it made with it.
        s._kernel
            .fail_next_load(libc::EACCES, "R1 invalid mem access");
        backend.replace(&logged, &logged_blob).unwrap_err();
        assert_eq!(
            pinned(&s),
            [false; 3],
            "a failed replace leaves no event maps"
        );
        assert!(backend.events.is_none());
        backend.replace(&logged, &logged_blob).unwrap();
        assert_eq!(pinned(&s), [true; 3]);
        assert!(backend.events.is_some());
        // They stay for the table's life: a reader's position is never lost.
        backend.replace(&plain, &plain_blob).unwrap();
        assert_eq!(pinned(&s), [true; 3]);
        assert!(backend.events.is_some());
    }

    #[test]
    fn a_table_never_committed_is_discarded_at_adoption() {
        let s = Setup::new("uncommitted");
        let (first, _) = ruleset("host_firewall");
        let backend = s.create(&first);
        // As if the daemon died inside create(), before its marker said 1.
        commit(&backend.committed, 0).unwrap();
        drop(backend);
        assert!(s.backends.adopt().is_empty());
        assert!(!s.table_dir().exists(), "its pins are removed");
    }
}
