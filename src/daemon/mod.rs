//! The bpfilter daemon: a Unix socket server answering the IPT_SO_* requests that
//! `libbpfilter.so` forwards from iptables-legacy, one namespace's requests at a time.
//!
//! Threads: one per connection. A request locks the registry only to find its namespace, then
//! holds that namespace's lock until it is answered.

pub mod addrtypes;
pub mod auth;
pub mod control;
pub mod counters;
pub mod datapath;
pub mod gc;
pub mod hashlimit;
pub mod kernel_tables;
pub mod recent;
pub mod refusal;
pub mod slots;
pub mod sockopt;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use libbpfilter::wire::{self, Reply, Request};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use tracing::{debug, info, warn};

use state::{Backends, Namespace, NsId, TableKey};

/// Default bpffs folder for pins.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/bpfilter";

/// Locks a mutex; a panic of another holder does not make its data unusable here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Connections served at once; more wait in the listening socket's backlog for a free slot.
const MAX_CONNECTIONS: usize = 64;

/// How long a connection may stay silent between requests, or leave a reply unread.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the daemon looks for deleted namespaces.
const GC_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// What the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Unix socket path.
    pub socket: PathBuf,
    /// bpffs folder for pins.
    pub bpffs: PathBuf,
    /// packet-access strategy (auto: the probe's choice)
    pub access: crate::probe::AccessChoice,
    /// who serves ip6tables: bpfilter, or the kernel's ip6_tables
    pub ipv6: Ipv6Engine,
}

/// Who serves ip6tables' requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6Engine {
    /// bpfilter, as it serves iptables: the filter table compiled, the others the kernel's
    Bpf,
    /// the kernel's ip6_tables, as without bpfilter (the preload hands every IPv6 request
    /// back to the kernel)
    Kernel,
}

/// The daemon's shared state.
pub struct Daemon {
    /// the kernel probe's report, for `status`
    kernel: String,
    namespaces: Mutex<HashMap<NsId, Arc<Mutex<Namespace>>>>,
    backends: Box<dyn Backends + Send>,
    ipv6: Ipv6Engine,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").finish_non_exhaustive()
    }
}

/// Runs the daemon until it is stopped (SIGTERM, SIGINT) or killed.
pub fn run(config: Config) -> Result<()> {
    keep_heap_warm();
    init_logging();
    let stop = stop_signal()?;
    // Listening comes first: a client that arrives while the kernel is probed and the pinned state
    // taken over (after a restart, a kill -9) waits in the socket's backlog instead of being refused.
    let (listener, bound_here) = match crate::sys::systemd::inherited_listener()? {
        Some(listener) => {
            info!("listening on the socket systemd passed");
            (listener, false)
        }
        None => (listen(&config.socket)?, true),
    };
    let result = serve(&config, &listener, &stop);
    // A daemon that cannot start (this kernel, bpffs) leaves no socket for clients to wait on.
    if bound_here {
        let _ = std::fs::remove_file(&config.socket);
    }
    result
}

/// Freed memory stays in the daemon for the next change, in one heap.
///
/// A change to a 10,000-rule table allocates about 20 MB on its way (the entries, their IR,
/// lowered tests, slot keys, the new instructions), frees it, and the next change allocates it
/// again. glibc gives such memory back to the kernel as soon as it is free at the top of a heap
/// (its trim threshold starts at 128 KiB), and serves blocks over 128 KiB with a mapping of
/// their own, so each change touched its memory anew: 4,000 to 9,000 page faults, a third of a
/// restore's time. Every connection's thread also had its own arena, cold when the next
/// change of a table came on another thread. One arena, blocks up to 32 MiB (glibc's highest
/// mmap threshold) from it, and up to 128 MiB of free memory kept: restore of 10,000 rules
/// 61 -> 43 ms in the daemon, each following append 26 -> 22 ms. Past 128 MiB free (a table
/// of several times 10,000 rules replaced by a small one) the heap is trimmed as before.
fn keep_heap_warm() {
    const MIB: libc::c_int = 1 << 20;
    for (param, value) in [
        (libc::M_ARENA_MAX, 1),
        (libc::M_MMAP_THRESHOLD, 32 * MIB),
        (libc::M_TRIM_THRESHOLD, 128 * MIB),
    ] {
        // SAFETY: mallopt only sets allocator parameters; called before any other thread
        // of the daemon exists.
        if unsafe { libc::mallopt(param, value) } != 1 {
            // Not fatal: only the speed of changes depends on it.
            eprintln!("bpfilter: mallopt({param}, {value}) refused; the heap is tuned by glibc");
        }
    }
}

/// Probes the kernel, adopts the pinned state and serves `listener` until `stop` is readable
/// (a stop signal), then finishes the requests in progress.
fn serve(config: &Config, listener: &UnixListener, stop: &UnixStream) -> Result<()> {
    let probe = crate::probe::probe();
    let report = probe.report_for(config.access);
    for line in report.lines() {
        info!("{}", line.trim_start());
    }
    let target = probe.target_with(config.access)?;
    info!(strategy = %target.access, "kernel probe done");
    // limit_mt_check's overflow test and the limit buckets depend on the kernel's HZ
    match crate::layout::kernel_hz() {
        Some(hz) => ipt_abi::ext::set_kernel_hz(hz),
        None => warn!(
            assumed = ipt_abi::ext::kernel_hz(),
            "cannot measure the kernel's HZ; limit rules assume it"
        ),
    }
    // xt_recent's list sizes, when the module is loaded with its own parameters
    let param = |name: &str| {
        std::fs::read_to_string(format!("/sys/module/xt_recent/parameters/{name}"))
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    let (list_tot, pkt_list_tot) = ipt_abi::ext::recent_params();
    // xt_recent's index became a u16, and hit counts up to 65535 valid, in Linux 6.11
    ipt_abi::ext::set_recent_wide(crate::probe::kernel_at_least(6, 11));
    // hashlimit and tcpmss leave non-first fragments alone since the 2026 fix of L4 header
    // parsing for fragments (measured: not in 6.12.117 nor 6.18.44, in 7.3.4; 7.1 is the
    // first release it can be in)
    ipt_abi::ext::set_nonfirst_frag_fix(crate::probe::kernel_at_least(7, 1));
    // rt and hbh/dst hotdrop an extension header longer than the packet since netfilter's
    // July 2026 fix "ip6tables: mark malformed IPv6 extension headers for hotdrop" (in `net`
    // for 7.2; measured in 6.12.117, 6.18.44 and 7.3.4, see docs/KERNELS.md)
    ipt_abi::ext::set_exthdr_short_hotdrop(crate::probe::kernel_has_fix(
        (7, 2),
        &[(6, 12, 117), (6, 18, 44)],
    ));
    ipt_abi::ext::set_recent_params(
        param("ip_list_tot").unwrap_or(list_tot),
        param("ip_pkt_list_tot").unwrap_or(pkt_list_tot),
    );
    let backends =
        datapath::BpfBackends::new(&config.bpffs, target).context("preparing the BPF datapath")?;
    let daemon = Arc::new(
        Daemon::new(Box::new(backends))
            .with_kernel_report(report)
            .with_ipv6(config.ipv6),
    );
    daemon.adopt_pinned();
    // Right away, not a period later: take fds of the adopted namespaces while they can be
    // reached, and release those deleted while the daemon was down.
    daemon.collect_dead_namespaces();
    {
        let daemon = Arc::clone(&daemon);
        std::thread::Builder::new()
            .name("netns-gc".into())
            .spawn(move || loop {
                std::thread::sleep(GC_PERIOD);
                daemon.collect_dead_namespaces();
            })
            .context("starting the namespace collector")?;
    }
    info!(socket = %config.socket.display(), bpffs = %config.bpffs.display(), "bpfilter daemon ready");
    if let Err(err) = crate::sys::systemd::notify("READY=1\nSTATUS=serving iptables requests") {
        warn!(error = %err, "cannot tell the service manager that the daemon is ready");
    }
    let slots = Arc::new(ConnectionSlots::new(MAX_CONNECTIONS));
    let workers = Workers::new();
    loop {
        // Woken by a connection or by the stop signal, whichever comes first.
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => warn!(error = %err, "poll failed"),
        }
        if fds[1].any().unwrap_or(false) {
            break;
        }
        if !fds[0].any().unwrap_or(false) {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                // Past the bound, the next connection waits (in the backlog) for a free slot.
                let slot = slots.take();
                workers.dispatch(&daemon, stream, slot);
            }
            Err(err) => warn!(error = %err, "accept failed"),
        }
    }
    // Stopping (SIGTERM from systemd, Ctrl-C): connections not accepted yet stay queued on the
    // socket for the next daemon (systemd keeps it open); the requests already accepted are
    // answered first, so that no iptables command is cut between its SET_REPLACE and its
    // SET_ADD_COUNTERS. The programs stay attached and pinned.
    let _ = crate::sys::systemd::notify("STOPPING=1");
    info!(
        requests = slots.busy(),
        "stopping: finishing the requests in progress; new ones wait for the next daemon"
    );
    if !slots.wait_idle(STOP_GRACE) {
        warn!(
            requests = slots.busy(),
            "stopping with requests still in progress after {STOP_GRACE:?}"
        );
    }
    info!("stopped; the rules keep filtering");
    Ok(())
}

/// How long a stopping daemon waits for the requests in progress (systemd's stop timeout is
/// longer: 90 s by default).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Turns SIGTERM and SIGINT into a readable fd: they are blocked in every thread (the mask is
/// inherited, so this runs before any thread starts) and one thread waits for them.
fn stop_signal() -> Result<UnixStream> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().context("blocking SIGTERM and SIGINT")?;
    let (notice, wake) = UnixStream::pair().context("socketpair for the stop signal")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(signal) = set.wait() {
                info!(signal = %signal, "stop requested");
            }
            let _ = (&notice).write_all(b"x");
            // keep `notice` open: a closed peer would read as a second wake-up
            loop {
                std::thread::park();
            }
        })
        .context("starting the signal thread")?;
    Ok(wake)
}

/// The threads that serve connections, one connection each at a time. A connection goes to
/// an idle worker, or to a new one when none is idle (at most [`MAX_CONNECTIONS`] are busy,
/// bounded by [`ConnectionSlots`]); a worker idle for [`WORKER_IDLE`] ends. Starting a
/// thread per connection cost more than the rest of a small request.
/// Connections handed to idle workers and not yet taken, and the signal that one was handed.
type JobQueue = (
    Mutex<std::collections::VecDeque<(UnixStream, Slot)>>,
    std::sync::Condvar,
);

struct Workers {
    /// connections handed to idle workers, not yet taken
    jobs: Arc<JobQueue>,
    /// workers waiting for a connection and not yet promised one
    idle: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long an idle worker waits for a connection before it ends.
const WORKER_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

impl Workers {
    fn new() -> Self {
        Self {
            jobs: Arc::new((
                Mutex::new(std::collections::VecDeque::new()),
                std::sync::Condvar::new(),
            )),
            idle: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    /// Hands `stream` to an idle worker, or starts one for it.
    fn dispatch(&self, daemon: &Arc<Daemon>, stream: UnixStream, slot: Slot) {
        if take_one(&self.idle) {
            // An idle worker was counted and promised this job: it cannot end before it
            // took one (one job per promise).
            let (queue, ready) = &*self.jobs;
            lock(queue).push_back((stream, slot));
            ready.notify_one();
        } else {
            self.spawn(daemon, (stream, slot));
        }
    }

    fn spawn(&self, daemon: &Arc<Daemon>, first: (UnixStream, Slot)) {
        let daemon = Arc::clone(daemon);
        let jobs = Arc::clone(&self.jobs);
        let idle = Arc::clone(&self.idle);
        let started = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                let mut job = Some(first);
                while let Some((stream, slot)) = job.take() {
                    daemon.serve(stream);
                    drop(slot);
                    idle.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    job = next_job(&jobs, &idle);
                }
            });
        if let Err(err) = started {
            warn!(error = %err, "cannot start a thread for a connection; dropping it");
        }
    }
}

/// An idle worker's wait: the next job, or None once it waited [`WORKER_IDLE`] with no job
/// promised to it (then it is no longer counted idle).
fn next_job(jobs: &JobQueue, idle: &std::sync::atomic::AtomicUsize) -> Option<(UnixStream, Slot)> {
    let (queue, ready) = jobs;
    let deadline = std::time::Instant::now() + WORKER_IDLE;
    let mut q = lock(queue);
    loop {
        if let Some(job) = q.pop_front() {
            return Some(job);
        }
        let now = std::time::Instant::now();
        if now >= deadline && take_one(idle) {
            return None;
        }
        // Past the deadline with every idle worker promised a job: one is on its way.
        let wait = deadline
            .saturating_duration_since(now)
            .max(std::time::Duration::from_millis(1));
        q = match ready.wait_timeout(q, wait) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// Takes one from `n` if it is not zero.
fn take_one(n: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    n.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1)).is_ok()
}

/// A bound on the connections served at once.
#[derive(Debug)]
struct ConnectionSlots {
    max: usize,
    busy: Mutex<usize>,
    freed: std::sync::Condvar,
}

/// One connection's place; dropping it frees the place.
#[derive(Debug)]
struct Slot(Arc<ConnectionSlots>);

impl ConnectionSlots {
    fn new(max: usize) -> Self {
        Self {
            max,
            busy: Mutex::new(0),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Connections being served.
    fn busy(&self) -> usize {
        *lock(&self.busy)
    }

    /// Waits until no connection is served, at most `limit`; false if some still are.
    fn wait_idle(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut busy = lock(&self.busy);
        while *busy > 0 {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            busy = match self.freed.wait_timeout(busy, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Waits for a free place and takes it.
    fn take(self: &Arc<Self>) -> Slot {
        let mut busy = lock(&self.busy);
        while *busy >= self.max {
            busy = match self.freed.wait(busy) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
        *busy += 1;
        Slot(Arc::clone(self))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *lock(&self.0.busy) -= 1;
        // the accept loop waiting for a place, or a stopping daemon waiting for none
        self.0.freed.notify_all();
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BPFILTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (tests) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Binds the socket: its folder created 0755, a stale socket replaced, the socket 0600.
fn listen(path: &std::path::Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match UnixStream::connect(path) {
        Ok(_) => anyhow::bail!("another daemon is already listening on {}", path.display()),
        Err(_) => {
            let _ = std::fs::remove_file(path);
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

impl Daemon {
    /// A daemon with no namespaces yet.
    pub fn new(backends: Box<dyn Backends + Send>) -> Self {
        Self {
            kernel: String::new(),
            namespaces: Mutex::new(HashMap::new()),
            backends,
            ipv6: Ipv6Engine::Bpf,
        }
    }

    /// Leaves ip6tables to `engine`.
    pub fn with_ipv6(mut self, engine: Ipv6Engine) -> Self {
        self.ipv6 = engine;
        self
    }

    /// Shows `report` (the kernel probe's) at the top of `status`.
    pub fn with_kernel_report(mut self, report: String) -> Self {
        self.kernel = report;
        self
    }

    /// Takes over the tables a previous daemon left pinned.
    fn adopt_pinned(&self) {
        for (id, key, table, backend) in self.backends.adopt() {
            let ns = self.namespace(id);
            let mut ns = match ns.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            ns.tables.insert(key, state::TableState { table, backend });
        }
    }

    /// Flushes the namespaces that only bpfilter still references (see [`gc`]).
    pub fn collect_dead_namespaces(&self) {
        let ids: Vec<(NsId, Arc<Mutex<Namespace>>)> = self
            .lock_registry()
            .iter()
            .map(|(id, ns)| (*id, Arc::clone(ns)))
            .collect();
        if ids.is_empty() {
            return;
        }
        let referenced = gc::referenced_namespaces(std::process::id());
        for (id, ns) in ids {
            let mut ns = lock(&ns);
            if let Some(path) = referenced.get(&id.0) {
                // A namespace adopted after a restart has no fd yet: take one while it is still
                // reachable, so that its sockets can be counted once it is unlisted.
                if ns.fd.is_none() {
                    ns.fd = std::fs::File::open(path).ok().map(OwnedFd::from);
                }
                continue;
            }
            // Re-check under the lock: a client of that namespace may have just arrived.
            if gc::referenced_namespaces(std::process::id()).contains_key(&id.0) {
                continue;
            }
            // Sockets keep a namespace alive invisibly; with a fd of it we can count them. (A
            // namespace deleted while the daemon was down has none: it cannot be told.)
            if ns
                .fd
                .as_ref()
                .is_some_and(|fd| gc::held_by_sockets(fd.as_fd()))
            {
                continue;
            }
            let tables = ns.tables.len();
            ns.tables.clear();
            ns.fd = None;
            self.backends.flush(id);
            self.lock_registry().remove(&id);
            info!(netns = %id, tables, "namespace deleted: its programs and pins are released");
        }
    }

    /// Serves one connection until the peer closes it.
    fn serve(&self, stream: UnixStream) {
        let peer = match auth::peer(&stream) {
            Ok(p) => p,
            Err(err) => {
                warn!(error = %err, "SO_PEERCRED failed; closing");
                return;
            }
        };
        // A peer that connects and sends nothing, or stops reading its reply, lets go of its
        // thread after this long (a slow payload is cut by wire::FRAME_DEADLINE).
        if let Err(err) = stream
            .set_read_timeout(Some(IDLE_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IDLE_TIMEOUT)))
        {
            warn!(error = %err, "cannot set the connection's timeouts; closing");
            return;
        }
        let result = wire::serve_connection(&stream, |request| match request {
            Err(err) => {
                warn!(pid = peer.pid, error = %err, "undecodable request");
                Reply::error(err.errno())
            }
            // Per request, as the kernel checks each sockopt call: a client that dropped its
            // capabilities after connecting is refused from then on.
            Ok(_) if !auth::has_net_admin(&peer) => {
                warn!(
                    pid = peer.pid,
                    uid = peer.uid,
                    "refused: caller lacks CAP_NET_ADMIN"
                );
                Reply::error(libc::EPERM)
            }
            Ok((request, nsfd)) => self.handle(request, nsfd),
        });
        match result {
            Ok(()) => {}
            Err(err) if err.is_timeout() => {
                debug!(pid = peer.pid, error = %err, "idle connection closed")
            }
            Err(err) => warn!(pid = peer.pid, error = %err, "connection dropped"),
        }
    }

    /// Answers one request.
    pub fn handle(&self, request: Request, nsfd: Option<OwnedFd>) -> Reply {
        let Some(nsfd) = nsfd else {
            warn!("request without a namespace fd");
            return Reply::error(libc::EINVAL);
        };
        if !crate::sys::is_netns(nsfd.as_fd()) {
            warn!("the namespace fd is not a network namespace");
            return Reply::error(libc::EINVAL);
        }
        let id = match crate::sys::netns_id(nsfd.as_fd()) {
            Ok((_dev, ino)) => NsId(ino),
            Err(err) => {
                warn!(error = %err, "the namespace fd is not a network namespace");
                return Reply::error(libc::EINVAL);
            }
        };
        if matches!(request, Request::Flush { all: true, .. }) {
            return self.flush_all();
        }
        let ns = self.namespace(id);
        let mut ns = lock(&ns);
        if ns.fd.is_none() {
            ns.fd = Some(nsfd);
        }
        self.dispatch(&mut ns, request)
    }

    fn namespace(&self, id: NsId) -> Arc<Mutex<Namespace>> {
        let mut map = self.lock_registry();
        Arc::clone(
            map.entry(id)
                .or_insert_with(|| Arc::new(Mutex::new(Namespace::new(id)))),
        )
    }

    fn dispatch(&self, ns: &mut Namespace, request: Request) -> Reply {
        use wire::{Family, SockoptOp};
        match request {
            // With `--ipv6 kernel`, ip6tables through the preload gets the kernel's ip6_tables,
            // exactly as without bpfilter.
            Request::Sockopt(opt)
                if opt.family == Family::Ipv6 && self.ipv6 == Ipv6Engine::Kernel =>
            {
                Reply::kernel_serves()
            }
            Request::Sockopt(opt) => {
                let family = abi_family(opt.family);
                let outcome = match opt.op {
                    SockoptOp::Set => {
                        sockopt::set(ns, &*self.backends, family, opt.optname, &opt.payload)
                    }
                    SockoptOp::Get => sockopt::get(
                        ns,
                        &*self.backends,
                        family,
                        opt.optname,
                        opt.optlen,
                        &opt.payload,
                    ),
                };
                match outcome {
                    Ok(answer) => Reply::ok(answer.payload),
                    // A revision query bpfilter cannot answer is routine: the preload then asks
                    // the kernel (an extension of a table the kernel serves, or one bpfilter
                    // lacks, which a rule would then name in its own refusal).
                    Err(refusal)
                        if opt.op == SockoptOp::Get
                            && sockopt::is_revision_query(family, opt.optname) =>
                    {
                        debug!(netns = %ns.id, optname = opt.optname, errno = refusal.errno,
                               "revision query not answered: {}", refusal.reason);
                        Reply::error(refusal.errno)
                    }
                    Err(refusal) => {
                        warn!(netns = %ns.id, optname = opt.optname, op = ?opt.op, errno = refusal.errno,
                              "refused: {}", refusal.reason);
                        Reply::error(refusal.errno)
                    }
                }
            }
            Request::TableNames {
                family: Family::Ipv6,
            } if self.ipv6 == Ipv6Engine::Kernel => Reply::kernel_serves(),
            Request::TableNames { family } => {
                let family = abi_family(family);
                let kernel = ns
                    .fd
                    .as_ref()
                    .map(|fd| kernel_tables::kernel_tables(fd.as_fd(), family))
                    .unwrap_or_default();
                let ours: Vec<(String, Vec<String>)> = ns
                    .tables
                    .iter()
                    .filter(|(key, _)| key.family == family)
                    .map(|(key, t)| (key.name.clone(), t.backend.older_tables()))
                    .collect();
                let names = kernel_tables::names(&kernel, &ours);
                let names: Vec<&String> = names.iter().collect();
                Reply::ok(wire::table_names_payload(&names))
            }
            Request::Status { .. } => {
                Reply::ok(format!("{}{}", self.kernel, control::status(ns, self.ipv6)).into_bytes())
            }
            Request::Counters { payload } => {
                Reply::ok(control::counters(ns, payload.first() == Some(&1)).into_bytes())
            }
            Request::Dump { hook, .. } => {
                Reply::ok(control::dump(ns, hook.as_deref()).into_bytes())
            }
            Request::Flush { .. } => self.flush(ns),
            // The lists of `recent` rules: only the filter table is compiled (the kernel keeps
            // those of nat and mangle, and ENOENT sends the preload to them). Looked up, never
            // instantiated: a namespace without bpfilter's filter table has no list of ours.
            Request::RecentRead { name } => {
                let Some(filter) = ns.tables.get(&TableKey::ipv4("filter")) else {
                    return Reply::error(libc::ENOENT);
                };
                match filter.backend.recent_read(&name) {
                    Ok(Some(text)) => Reply::ok(text),
                    Ok(None) => Reply::error(libc::ENOENT),
                    Err(err) => {
                        debug!(netns = %ns.id, list = %name, errno = err.errno(),
                               "recent list not read: {err}");
                        Reply::error(err.errno())
                    }
                }
            }
            Request::RecentWrite { name, data } => {
                let Some(filter) = ns.tables.get(&TableKey::ipv4("filter")) else {
                    return Reply::error(libc::ENOENT);
                };
                match filter.backend.recent_write(&name, &data) {
                    Ok(Some(count)) => Reply::ok(wire::recent_write_payload(count)),
                    Ok(None) => Reply::error(libc::ENOENT),
                    Err(err) => {
                        warn!(netns = %ns.id, list = %name, data = %String::from_utf8_lossy(&data).trim_end(),
                              errno = err.errno(), "recent list write refused: {err}");
                        Reply::error(err.errno())
                    }
                }
            }
        }
    }

    /// `bpfilter flush`: detach and unpin the caller's namespace.
    fn flush(&self, ns: &mut Namespace) -> Reply {
        ns.tables.clear();
        self.backends.flush(ns.id);
        info!(netns = %ns.id, "flushed");
        Reply::ok(b"flushed 1 namespace(s)\n".to_vec())
    }

    /// `bpfilter flush --all`: every namespace, each under its own lock, taken one at a time
    /// (never while holding another), then whatever pins no namespace of ours owns.
    fn flush_all(&self) -> Reply {
        let all: Vec<_> = self
            .lock_registry()
            .iter()
            .map(|(id, n)| (*id, Arc::clone(n)))
            .collect();
        for (id, ns) in &all {
            let mut ns = lock(ns);
            ns.tables.clear();
            self.backends.flush(*id);
        }
        self.backends
            .flush_orphans(&self.lock_registry().keys().copied().collect::<Vec<_>>());
        info!(namespaces = all.len(), "flushed every namespace");
        Reply::ok(format!("flushed {} namespace(s)\n", all.len()).into_bytes())
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, HashMap<NsId, Arc<Mutex<Namespace>>>> {
        match self.namespaces.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The wire's family as ipt-abi's.
fn abi_family(family: libbpfilter::wire::Family) -> ipt_abi::Family {
    match family {
        libbpfilter::wire::Family::Ipv4 => ipt_abi::Family::Ipv4,
        libbpfilter::wire::Family::Ipv6 => ipt_abi::Family::Ipv6,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use state::{BackendError, TableBackend, TableState};

    /// One list, "ssh", holding the text of one entry; writes answer as the kernel would for a
    /// well-formed command and EINVAL for anything else.
    #[derive(Debug)]
    struct RecentFake;

    impl TableBackend for RecentFake {
        fn counters(&self) -> Result<Vec<ipt_abi::XtCounters>, BackendError> {
            Ok(Vec::new())
        }
        fn replace(
            &mut self,
            _table: &ipt_abi::Table,
            _blob: &[u8],
        ) -> Result<Vec<ipt_abi::XtCounters>, BackendError> {
            Ok(Vec::new())
        }
        fn add_counters(&mut self, _add: &[ipt_abi::XtCounters]) -> Result<(), BackendError> {
            Ok(())
        }
        fn recent_read(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
            Ok((name == "ssh").then(|| b"src=10.0.0.1 ttl: 64\n".to_vec()))
        }
        fn recent_write(&self, name: &str, data: &[u8]) -> Result<Option<usize>, BackendError> {
            if name != "ssh" {
                return Ok(None);
            }
            match data.first() {
                Some(b'+' | b'-' | b'/') => Ok(Some(data.len())),
                _ => Err(BackendError::new(libc::EINVAL, "need +ip, -ip or /")),
            }
        }
    }

    struct NoBackends;

    impl Backends for NoBackends {
        fn create(
            &self,
            _ns: &Namespace,
            _table: &ipt_abi::Table,
        ) -> Result<Box<dyn TableBackend>, BackendError> {
            Err(BackendError::new(
                libc::ENOMEM,
                "the test instantiates nothing",
            ))
        }
        fn flush(&self, _ns: NsId) {}
        fn flush_orphans(&self, _keep: &[NsId]) {}
    }

    fn read(name: &str) -> Request {
        Request::RecentRead { name: name.into() }
    }

    fn write(name: &str, data: &[u8]) -> Request {
        Request::RecentWrite {
            name: name.into(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_connection_never_waits_behind_a_silent_one_and_workers_are_reused() {
        let daemon = Arc::new(Daemon::new(Box::new(NoBackends)));
        let slots = Arc::new(ConnectionSlots::new(8));
        let workers = Workers::new();
        let ask = |client: &UnixStream| {
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let names = Request::TableNames {
                family: wire::Family::Ipv4,
            };
            wire::write_request(client, &names, None).unwrap();
            wire::read_reply(client).expect("a reply")
        };
        let idle = || workers.idle.load(std::sync::atomic::Ordering::SeqCst);
        let wait_idle = || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while idle() == 0 {
                assert!(std::time::Instant::now() < deadline, "no worker went idle");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        // One after another, each once the worker before went idle: the same worker takes
        // every one (a new thread would leave two idle).
        for _ in 0..20 {
            let (client, server) = UnixStream::pair().unwrap();
            workers.dispatch(&daemon, server, slots.take());
            ask(&client);
            drop(client);
            wait_idle();
        }
        assert_eq!(idle(), 1, "one worker served them all");
        // Two clients that say nothing hold their workers; a third is still answered.
        let silent: Vec<UnixStream> = (0..2)
            .map(|_| {
                let (client, server) = UnixStream::pair().unwrap();
                workers.dispatch(&daemon, server, slots.take());
                client
            })
            .collect();
        let (client, server) = UnixStream::pair().unwrap();
        workers.dispatch(&daemon, server, slots.take());
        ask(&client);
        assert!(
            slots.busy() >= 2,
            "the silent connections hold their places"
        );
        drop(silent);
    }

    #[test]
    fn recent_lists_come_from_the_filter_table_only() {
        let daemon = Daemon::new(Box::new(NoBackends));
        let mut ns = Namespace::new(NsId(1));
        // No filter table: ENOENT, and none is instantiated (NoBackends would refuse).
        assert_eq!(
            daemon.dispatch(&mut ns, read("ssh")),
            Reply::error(libc::ENOENT)
        );
        assert_eq!(
            daemon.dispatch(&mut ns, write("ssh", b"/")),
            Reply::error(libc::ENOENT)
        );
        assert!(ns.tables.is_empty());

        // a filter table whose backend holds the lists of RecentFake
        let recent_table = || TableState {
            table: ipt_abi::Table::initial("filter").unwrap(),
            backend: Box::new(RecentFake),
        };
        // Another table's lists are not ours either.
        ns.tables.insert(TableKey::ipv4("nat"), recent_table());
        assert_eq!(
            daemon.dispatch(&mut ns, read("ssh")),
            Reply::error(libc::ENOENT)
        );

        ns.tables.insert(TableKey::ipv4("filter"), recent_table());
        assert_eq!(
            daemon.dispatch(&mut ns, read("ssh")),
            Reply::ok(b"src=10.0.0.1 ttl: 64\n".to_vec())
        );
        assert_eq!(
            daemon.dispatch(&mut ns, read("other")),
            Reply::error(libc::ENOENT)
        );
        assert_eq!(
            daemon.dispatch(&mut ns, write("ssh", b"+10.0.0.2\n")),
            Reply::ok(wire::recent_write_payload(10))
        );
        assert_eq!(
            daemon.dispatch(&mut ns, write("ssh", b"x")),
            Reply::error(libc::EINVAL)
        );
        assert_eq!(
            daemon.dispatch(&mut ns, write("other", b"/")),
            Reply::error(libc::ENOENT)
        );
    }
}
