//! What the programs hand to the daemon: REJECT replies to send and LOG lines to write.
//!
//! A rule whose target must act outside the program writes an [`emitter::event`] record into
//! its table's ring buffer; a [`Pump`] thread per table reads the records and acts as the
//! kernel's target would: [`reject`] builds and sends the reply in the table's namespace,
//! [`log`] writes the kernel-format line to the kernel log. Nothing here can grow without
//! bound: the ring buffer has a fixed size (the program counts what does not fit), the pump
//! handles records one at a time, and the reply rate limits keep bounded state.

pub mod log;
pub mod reject;
pub mod reject6;
mod reply;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use emitter::event::{self, Event};
use tracing::{debug, warn};

use crate::sys::{Map, RingBuf};

/// How long a pump waits for records: LOG records do not wake it (see the event
/// subprogram), so this is also how late a LOG line may be written, and how often the LOG
/// gate follows `nf_log_all_netns`.
const POLL: Duration = Duration::from_millis(20);

/// A network namespace the daemon acts in, by its nsfs inode, with an fd once one is known
/// (a table adopted after a restart gets one from /proc when first needed).
#[derive(Debug)]
pub struct Netns {
    /// nsfs inode
    pub id: u64,
    fd: Mutex<Option<OwnedFd>>,
}

impl Netns {
    /// A namespace with a known fd, or only its id.
    pub fn new(id: u64, fd: Option<OwnedFd>) -> Netns {
        Netns {
            id,
            fd: Mutex::new(fd),
        }
    }

    /// A duplicate of the namespace's fd, looking one up in /proc when none is known yet.
    pub fn fd(&self) -> Option<OwnedFd> {
        let mut guard = match self.fd.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if guard.is_none() {
            let refs = crate::daemon::gc::referenced_namespaces(std::process::id());
            *guard = refs
                .get(&self.id)
                .and_then(|p| std::fs::File::open(p).ok())
                .map(OwnedFd::from);
        }
        guard.as_ref().and_then(|fd| fd.try_clone().ok())
    }
}

/// What a pump did, for `status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// REJECT records read
    pub rejects: AtomicU64,
    /// replies sent
    pub replies: AtomicU64,
    /// REJECT records the kernel would not have answered (or rate limits dropped)
    pub unanswered: AtomicU64,
    /// LOG records read
    pub logs: AtomicU64,
    /// lines written to the kernel log
    pub lines: AtomicU64,
    /// records that could not be handled (bad record, send or write error)
    pub errors: AtomicU64,
    /// records found when the pump started: produced while no daemon ran, too late to act
    /// on (a reply seconds later is not what the kernel sends)
    pub stale: AtomicU64,
}

/// How often a pump checks that the namespace's connection tracking is still on while the
/// table's rules need it (`nft flush ruleset` there removes bpfilter's table too).
const CONNTRACK_CHECK: Duration = Duration::from_secs(2);

/// The thread that reads one table's ring buffer (and keeps connection tracking on while the
/// table needs it); stops when dropped.
#[derive(Debug)]
pub struct Pump {
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    /// the table's rules need connection tracking in the namespace; held while the pump
    /// restores the nftables table, and while the table's owner changes it
    conntrack: Arc<Mutex<bool>>,
    loss: Map,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pump {
    /// Starts reading `ring` for a table of namespace `ns`; `loss` is the table's loss map,
    /// `reply_ct` its map of REJECT replies' connections (see `emitter::event::REPLY_CT_COPY`).
    pub fn spawn(
        ring: Map,
        loss: Map,
        reply_ct: Option<Map>,
        ns: Arc<Netns>,
    ) -> std::io::Result<Pump> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let conntrack = Arc::new(Mutex::new(false));
        let (s, st, ct) = (
            Arc::clone(&stop),
            Arc::clone(&stats),
            Arc::clone(&conntrack),
        );
        // The consumer (an epoll fd) is made here, not in the thread: the pump's fds exist
        // once the table does.
        let rb = RingBuf::new(&ring).map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        let gate_map = loss
            .try_clone()
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        let thread = std::thread::Builder::new()
            .name("bpfilter-events".into())
            .spawn(move || {
                // the consumer's epoll watches this fd: it must stay open while it polls
                let _ring = ring;
                run(rb, &gate_map, reply_ct, &ns, &s, &st, &ct)
            })?;
        Ok(Pump {
            stop,
            stats,
            conntrack,
            loss,
            thread: Some(thread),
        })
    }

    /// The switch that says whether the table's rules need connection tracking (then the
    /// pump turns it back on if something else removed bpfilter's nftables table). Hold it
    /// while adding or removing that table: the pump checks and restores under it, so it never
    /// takes its owner's own removal for someone else's.
    pub fn conntrack_switch(&self) -> std::sync::MutexGuard<'_, bool> {
        match self.conntrack.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counters of the pump and of the losses the programs counted.
    pub fn status(&self) -> String {
        let lost = |slot: u32| -> u64 {
            let mut v = [0u8; 8];
            match self.loss.lookup(&slot.to_ne_bytes(), &mut v) {
                Ok(()) => u64::from_ne_bytes(v),
                Err(_) => 0,
            }
        };
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "events: REJECT {} read, {} replies sent, {} unanswered, {} lost (ring full); \
             LOG {} read, {} lines written, {} lost (ring full); {} errors, {} stale\n",
            get(&s.rejects),
            get(&s.replies),
            get(&s.unanswered),
            lost(event::LOSS_REJECT),
            get(&s.logs),
            get(&s.lines),
            lost(event::LOSS_LOG),
            get(&s.errors),
            get(&s.stale),
        )
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Turns connection tracking back on in `ns` if bpfilter's table there is gone.
fn keep_conntrack(ns: &Netns) {
    let Some(fd) = ns.fd() else { return };
    let restored = crate::sys::in_netns(fd.as_fd(), || {
        if crate::sys::conntrack_enabled()? {
            return Ok(false);
        }
        crate::sys::enable_conntrack().map(|()| true)
    });
    match restored {
        Ok(Ok(true)) => warn!(
            netns = ns.id,
            "bpfilter's nftables table was removed (nft flush ruleset?): connection tracking \
             turned back on for the rules that need it"
        ),
        Ok(Ok(false)) => {}
        Ok(Err(e)) | Err(e) => {
            warn!(netns = ns.id, error = %e, "checking connection tracking failed")
        }
    }
}

fn run(
    mut rb: RingBuf,
    loss: &Map,
    reply_ct: Option<Map>,
    ns: &Netns,
    stop: &AtomicBool,
    stats: &Stats,
    conntrack: &Mutex<bool>,
) {
    // What is already in the ring was produced while no daemon read it (a restart): the
    // packets are long gone, and a late reply or line would be wrong. Dropped, counted.
    if let Ok(old) = rb.poll(0) {
        if !old.is_empty() {
            stats.stale.fetch_add(old.len() as u64, Ordering::Relaxed);
            warn!(
                netns = ns.id,
                records = old.len(),
                "events left from while no daemon ran: not acted on"
            );
        }
    }
    let mut handler = Handler::new();
    handler.reply_ct = reply_ct;
    let mut gate = None;
    let timeout = i32::try_from(POLL.as_millis()).unwrap_or(20);
    let mut checked = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Open the programs' LOG gate exactly while lines would be written.
        let open = handler.log_allowed(ns);
        if gate != Some(open) {
            let v: u64 = u64::from(open);
            match loss.update(&event::LOG_GATE.to_ne_bytes(), &v.to_ne_bytes(), 0) {
                Ok(()) => gate = Some(open),
                Err(e) => {
                    warn!(netns = ns.id, error = %e, "setting the LOG gate failed");
                    gate = Some(open);
                }
            }
        }
        if checked.elapsed() >= CONNTRACK_CHECK {
            checked = std::time::Instant::now();
            let needed = match conntrack.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if *needed {
                keep_conntrack(ns);
            }
        }
        let samples = match rb.poll(timeout) {
            Ok(s) => s,
            Err(e) => {
                warn!(netns = ns.id, error = %e, "reading events failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        for raw in samples {
            match Event::parse(&raw) {
                Ok(ev) => handler.handle(&ev, ns, stats),
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(netns = ns.id, error = %e, "bad event record");
                }
            }
        }
    }
}

/// How long a read of `nf_log_all_netns` is trusted.
const SYSCTL_TTL: Duration = Duration::from_millis(20);

/// `nf_log_all_netns` as last read, and when: one read per [`SYSCTL_TTL`] for all pumps (each
/// asks every [`POLL`]; with one per namespace, a read each was most of an idle daemon's work).
static ALL_NETNS: Mutex<Option<(std::time::Instant, bool)>> = Mutex::new(None);

fn nf_log_all_netns_cached() -> bool {
    let mut cached = match ALL_NETNS.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    match *cached {
        Some((at, v)) if at.elapsed() < SYSCTL_TTL => v,
        _ => {
            let v = log::nf_log_all_netns().unwrap_or(false);
            *cached = Some((std::time::Instant::now(), v));
            v
        }
    }
}

/// Per-pump state of the targets.
struct Handler {
    /// REJECT's sender in the pump's namespace, made on first use
    reject: Option<reject::Sender>,
    /// the table's map of REJECT replies' connections, handed to the sender when it is made
    reply_ct: Option<Map>,
    kmsg: Option<log::KmsgWriter>,
    /// is the pump's namespace the initial one (the kernel always logs there)
    init_ns: Option<bool>,
    /// lines written through the current `kmsg` file
    kmsg_lines: u32,
    /// `kernel.printk_devkmsg=ratelimit`: writes past the kernel's budget per open file of
    /// /dev/kmsg are dropped silently (docs/KERNEL-BEHAVIOUR.md#devkmsg-ratelimit)
    devkmsg_ratelimit: bool,
}

/// Writes through one open /dev/kmsg before it is reopened under `printk_devkmsg=ratelimit`
/// (the kernel's per-open burst: docs/KERNEL-BEHAVIOUR.md#devkmsg-ratelimit).
const DEVKMSG_BURST: u32 = 10;

impl Handler {
    fn new() -> Handler {
        let devkmsg_ratelimit = matches!(log::devkmsg_mode(), Ok(log::DevkmsgMode::Ratelimit));
        if devkmsg_ratelimit {
            debug!("kernel.printk_devkmsg=ratelimit: /dev/kmsg is reopened every {DEVKMSG_BURST} LOG lines");
        }
        Handler {
            reject: None,
            reply_ct: None,
            kmsg: None,
            init_ns: None,
            kmsg_lines: 0,
            devkmsg_ratelimit,
        }
    }

    /// `nf_log_allowed`: the initial namespace, or any with `nf_log_all_netns` set.
    fn log_allowed(&mut self, ns: &Netns) -> bool {
        let init = *self.init_ns.get_or_insert_with(|| {
            crate::sys::open_netns("/proc/1/ns/net")
                .and_then(|fd| crate::sys::netns_id(fd.as_fd()))
                .is_ok_and(|(_, ino)| ino == ns.id)
        });
        // The initial namespace logs whatever the sysctl says: read for the others only.
        if init {
            return true;
        }
        log::log_allowed_in(false, nf_log_all_netns_cached())
    }

    fn handle(&mut self, ev: &Event<'_>, ns: &Netns, stats: &Stats) {
        match ev.kind() {
            event::KIND_REJECT => {
                stats.rejects.fetch_add(1, Ordering::Relaxed);
                self.reject(ev, ns, stats);
            }
            _ => {
                stats.logs.fetch_add(1, Ordering::Relaxed);
                self.log(ev, ns, stats);
            }
        }
    }

    fn reject(&mut self, ev: &Event<'_>, ns: &Netns, stats: &Stats) {
        if self.reject.is_none() {
            let Some(fd) = ns.fd() else {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                warn!(
                    netns = ns.id,
                    "REJECT: the namespace is gone; no reply sent"
                );
                return;
            };
            match reject::Sender::new(fd.as_fd()) {
                Ok(mut s) => {
                    if let Some(m) = self.reply_ct.take() {
                        s.set_reply_ct(m);
                    }
                    self.reject = Some(s);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(netns = ns.id, error = %e, "REJECT: cannot open a raw socket in the namespace; no reply sent");
                    return;
                }
            }
        }
        let Some(sender) = self.reject.as_mut() else {
            return;
        };
        match sender.handle(ev) {
            Ok(reject::Outcome::Sent(_)) => {
                stats.replies.fetch_add(1, Ordering::Relaxed);
            }
            Ok(
                reject::Outcome::NoReply | reject::Outcome::RateLimited | reject::Outcome::NoRoute,
            ) => {
                stats.unanswered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                warn!(netns = ns.id, error = %e, "REJECT: sending the reply failed");
            }
        }
    }

    fn log(&mut self, ev: &Event<'_>, ns: &Netns, stats: &Stats) {
        if !self.log_allowed(ns) {
            debug!(
                netns = ns.id,
                "LOG from a namespace the kernel would not log (nf_log_all_netns=0)"
            );
            return;
        }
        // A LOG line must not be lost to the rate limit the kernel applies to user writes:
        // each open of /dev/kmsg has its own budget, so a fresh one is taken before it runs out.
        if self.devkmsg_ratelimit && self.kmsg_lines >= DEVKMSG_BURST {
            self.kmsg = None;
        }
        if self.kmsg.is_none() {
            self.kmsg_lines = 0;
            match log::KmsgWriter::open() {
                Ok(w) => self.kmsg = Some(w),
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "cannot open the kernel log; LOG lines are lost");
                    return;
                }
            }
        }
        let Some(w) = self.kmsg.as_mut() else { return };
        match w.log(ev) {
            Ok(()) => {
                self.kmsg_lines += 1;
                stats.lines.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "writing a LOG line failed");
            }
        }
    }
}
