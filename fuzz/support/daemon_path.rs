//! The daemon's whole request path, in process, for fuzzing: wire frames are decoded exactly as
//! the daemon's connection loop decodes them, and every request goes through
//! `bpfilter::daemon::Daemon::handle` (namespace lookup, table instantiation, the kernel's
//! sockopt semantics, the CLI requests) with an in-memory backend instead of BPF.
//!
//! Shared, through `#[path]`, by the cargo-fuzz target `daemon_request` and by the bounded
//! fuzz run of `make test` (`tests/fuzz_bounded.rs`), so that both check the same invariants:
//! - nothing panics;
//! - every reply carries 0 or an errno the kernel's ip_tables or ip6_tables can give for that
//!   request (or, for a frame that does not decode, the wire layer's errno), never
//!   KERNEL_SERVES (the daemon serves both families);
//! - a refused set changes nothing: the table's GET_INFO and GET_ENTRIES answers (rules and
//!   counters) of its family are the same before and after;
//! - an accepted GET_ENTRIES answer has the length the caller asked for.
//!
//! Input: any number of concatenated wire frames (12-byte header + payload); the last one may
//! be cut short, as a client that dies mid-write leaves it.
#![allow(dead_code, clippy::unwrap_used, reason = "test support")]

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use bpfilter::daemon::state::{BackendError, Backends, Namespace, NsId, TableBackend};
use bpfilter::daemon::Daemon;
use ipt_abi::{Table, XtCounters};
use libbpfilter::wire::{self, Reply, Request, SockoptOp};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One table's counters in memory: `live` plays the per-CPU datapath counters, `base` the
/// carried base (as the BPF backend keeps them).
#[derive(Debug, Default)]
pub struct FakeTable {
    live: Arc<Mutex<Vec<XtCounters>>>,
    base: Vec<XtCounters>,
    fail_next: Arc<Mutex<Option<i32>>>,
}

impl TableBackend for FakeTable {
    fn counters(&self) -> Result<Vec<XtCounters>, BackendError> {
        let live = lock(&self.live);
        Ok(self
            .base
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let l = live.get(i).copied().unwrap_or_default();
                XtCounters {
                    pcnt: b.pcnt.wrapping_add(l.pcnt),
                    bcnt: b.bcnt.wrapping_add(l.bcnt),
                }
            })
            .collect())
    }

    fn replace(&mut self, table: &Table, _blob: &[u8]) -> Result<Vec<XtCounters>, BackendError> {
        if let Some(errno) = lock(&self.fail_next).take() {
            return Err(BackendError::new(errno, "injected backend failure"));
        }
        let old = self.counters()?;
        let n = table.entries.len();
        *lock(&self.live) = vec![XtCounters::default(); n];
        self.base = vec![XtCounters::default(); n];
        Ok(old)
    }

    fn add_counters(&mut self, add: &[XtCounters]) -> Result<(), BackendError> {
        for (b, a) in self.base.iter_mut().zip(add) {
            // The kernel's ADD_COUNTERS adds with plain u64 arithmetic (it wraps).
            b.pcnt = b.pcnt.wrapping_add(a.pcnt);
            b.bcnt = b.bcnt.wrapping_add(a.bcnt);
        }
        Ok(())
    }

    fn status(&self) -> String {
        "fake backend\n".into()
    }
}

/// Makes [`FakeTable`]s; `tick` counts traffic into every live table (entry i gets i+1
/// packets), so counters are non-zero and a lost or reset counter shows.
#[derive(Debug, Default)]
pub struct FakeBackends {
    lives: Mutex<Vec<Arc<Mutex<Vec<XtCounters>>>>>,
    /// The errno the next replace fails with (a verifier or load failure), once.
    pub fail_next: Arc<Mutex<Option<i32>>>,
}

impl FakeBackends {
    /// Counts one round of traffic on every table.
    pub fn tick(&self) {
        for live in lock(&self.lives).iter() {
            for (i, c) in lock(live).iter_mut().enumerate() {
                c.pcnt = c.pcnt.wrapping_add(i as u64 + 1);
                c.bcnt = c.bcnt.wrapping_add(60 * (i as u64 + 1));
            }
        }
    }
}

/// A `Backends` that shares a [`FakeBackends`] with the harness (the daemon owns a Box).
#[derive(Debug, Clone)]
pub struct SharedFake(pub Arc<FakeBackends>);

impl Backends for SharedFake {
    fn create(
        &self,
        _ns: &Namespace,
        table: &Table,
    ) -> Result<Box<dyn TableBackend>, BackendError> {
        let n = table.entries.len();
        let live = Arc::new(Mutex::new(vec![XtCounters::default(); n]));
        lock(&self.0.lives).push(Arc::clone(&live));
        Ok(Box::new(FakeTable {
            live,
            base: vec![XtCounters::default(); n],
            fail_next: Arc::clone(&self.0.fail_next),
        }))
    }
    fn flush(&self, _ns: NsId) {}
    fn flush_orphans(&self, _keep: &[NsId]) {}
}

/// Errnos the kernel's `do_ipt_set_ctl` / `do_ipt_get_ctl` (and the x_tables code under them)
/// can return for these requests; the daemon must never invent another one.
pub const KERNEL_SOCKOPT_ERRNOS: &[i32] = &[
    libc::EINVAL,
    libc::ENOENT,
    libc::EAGAIN,
    libc::ELOOP,
    libc::ENOMEM,
    libc::EFAULT,
    libc::EPROTONOSUPPORT,
    // xt_find_match: a family-independent match (comment) at a revision the kernel lacks.
    libc::EPROTOTYPE,
    libc::ENOPROTOOPT,
    libc::EPERM,
    // limit_mt_check: a burst of 0 or credits that overflow
    libc::ERANGE,
];

/// Errnos the wire layer gives for a frame that does not decode (see `WireError::errno`).
pub const WIRE_ERRNOS: &[i32] = &[libc::EPROTO, libc::EMSGSIZE, libc::EAFNOSUPPORT];

/// The in-process daemon with its fake datapath.
pub struct Harness {
    /// The daemon under test.
    pub daemon: Daemon,
    /// Its backends (to count traffic and inject failures).
    pub fake: Arc<FakeBackends>,
    /// Requests answered so far.
    pub requests: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("requests", &self.requests)
            .finish()
    }
}

/// What went wrong, for the fuzzer's crash report.
pub type Violation = String;

/// GET_INFO + GET_ENTRIES of `filter` as a client sees them (None if the table does not exist).
type Snapshot = Option<(Vec<u8>, Vec<u8>)>;

impl Harness {
    /// A fresh daemon with no namespaces.
    pub fn new() -> Self {
        let fake = Arc::new(FakeBackends::default());
        let daemon = Daemon::new(Box::new(SharedFake(Arc::clone(&fake))));
        Self {
            daemon,
            fake,
            requests: 0,
        }
    }

    fn netns() -> Option<OwnedFd> {
        std::fs::File::open(wire::NETNS_PATH)
            .ok()
            .map(OwnedFd::from)
    }

    fn call(&mut self, req: Request) -> Reply {
        self.requests += 1;
        self.daemon.handle(req, Self::netns())
    }

    /// The client's view of `filter` of `family`, without instantiating it.
    fn snapshot(&mut self, family: wire::Family) -> Snapshot {
        let names = self.call(Request::TableNames { family });
        if !wire::parse_table_names(&names.payload)
            .iter()
            .any(|n| n == "filter")
        {
            return None;
        }
        let mut name = b"filter".to_vec();
        name.resize(32, 0);
        let info = self.call(sockopt_of(family, SockoptOp::Get, 64, 84, name.clone()));
        let size = u32::from_ne_bytes(info.payload.get(80..84)?.try_into().ok()?);
        let mut hdr = name;
        hdr.extend_from_slice(&size.to_ne_bytes());
        hdr.resize(40, 0);
        let entries = self.call(sockopt_of(family, SockoptOp::Get, 65, 40 + size, hdr));
        Some((info.payload, entries.payload))
    }

    /// Runs one decoded-or-not frame through the daemon and checks the reply.
    pub fn frame(&mut self, frame: &[u8]) -> Result<Reply, Violation> {
        let req = match Request::decode(frame) {
            Ok(r) => r,
            Err(e) => {
                // What serve() answers for a request that arrived whole but does not decode.
                let errno = e.errno();
                if !WIRE_ERRNOS.contains(&errno) {
                    return Err(format!(
                        "wire error {e} has errno {errno}, not a wire errno"
                    ));
                }
                return Ok(Reply::error(errno));
            }
        };
        self.request(req)
    }

    /// Runs one request through the daemon and checks the reply.
    pub fn request(&mut self, req: Request) -> Result<Reply, Violation> {
        // Both families are the daemon's: IPv6 is compiled like IPv4 (`--ipv6 bpf`).
        let set = match &req {
            Request::Sockopt(s) if s.op == SockoptOp::Set => Some(s.family),
            _ => None,
        };
        let before = set.and_then(|family| self.snapshot(family));
        let reply = self.call(req.clone());
        if reply.errno == wire::KERNEL_SERVES {
            return Err(format!("KERNEL_SERVES for {req:?}"));
        }
        if !(0..=wire::MAX_ERRNO).contains(&reply.errno) {
            return Err(format!(
                "reply errno {} out of range for {req:?}",
                reply.errno
            ));
        }
        if let Request::Sockopt(s) = &req {
            if reply.errno != 0 && !KERNEL_SOCKOPT_ERRNOS.contains(&reply.errno) {
                return Err(format!(
                    "errno {} is not one the kernel gives (optname {}, {:?})",
                    reply.errno, s.optname, s.op
                ));
            }
            if reply.errno != 0 && !reply.payload.is_empty() {
                return Err(format!("errno {} with a payload", reply.errno));
            }
            if s.op == SockoptOp::Get
                && s.optname == 65
                && reply.errno == 0
                && reply.payload.len() != s.optlen as usize
            {
                return Err(format!(
                    "GET_ENTRIES answered {} bytes for optlen {}",
                    reply.payload.len(),
                    s.optlen
                ));
            }
            if s.op == SockoptOp::Get
                && s.optname == 64
                && reply.errno == 0
                && reply.payload.len() != 84
            {
                return Err(format!("GET_INFO answered {} bytes", reply.payload.len()));
            }
        }
        // Reply framing round-trips whatever the daemon answered.
        match Reply::decode(&reply.encode()) {
            Ok(r) if r == reply => {}
            other => return Err(format!("reply does not round-trip: {other:?}")),
        }
        // A table that did not exist before may be instantiated by a refused set (the kernel
        // instantiates it in __do_replace before its later checks), so only a table that was
        // there before is compared.
        if let (Some(family), true, true) = (set, reply.errno != 0, before.is_some()) {
            let after = self.snapshot(family);
            if after != before {
                return Err(format!(
                    "a refused set (errno {}) changed the table or its counters",
                    reply.errno
                ));
            }
        }
        Ok(reply)
    }

    /// Feeds concatenated frames (see the module doc); counts traffic between requests.
    pub fn run(&mut self, mut data: &[u8]) -> Result<(), Violation> {
        while data.len() >= wire::HEADER_LEN {
            let len = u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize;
            let end = wire::HEADER_LEN.saturating_add(len).min(data.len());
            let (frame, rest) = data.split_at(end);
            // Every fifth request of an accepted set fails in the backend (a verifier refusal):
            // the daemon must keep the old ruleset then too.
            if frame.len() > 13 && frame[13] == 1 && frame.len() % 5 == 0 {
                *lock(&self.fake.fail_next) = Some(libc::EINVAL);
            }
            self.frame(frame)?;
            *lock(&self.fake.fail_next) = None;
            self.fake.tick();
            data = rest;
        }
        Ok(())
    }
}

/// An IPv4 sockopt request.
pub fn sockopt(op: SockoptOp, optname: u32, optlen: u32, payload: Vec<u8>) -> Request {
    sockopt_of(wire::Family::Ipv4, op, optname, optlen, payload)
}

/// A sockopt request of `family`.
pub fn sockopt_of(
    family: wire::Family,
    op: SockoptOp,
    optname: u32,
    optlen: u32,
    payload: Vec<u8>,
) -> Request {
    Request::Sockopt(wire::Sockopt {
        family,
        op,
        optname,
        optlen,
        payload,
    })
}

/// The frame of an IPv4 SET sockopt carrying `blob`.
pub fn set_frame(optname: u32, blob: &[u8]) -> Vec<u8> {
    sockopt(SockoptOp::Set, optname, blob.len() as u32, blob.to_vec()).encode()
}

/// The frame of an IPv4 GET sockopt.
pub fn get_frame(optname: u32, optlen: u32, input: &[u8]) -> Vec<u8> {
    sockopt(SockoptOp::Get, optname, optlen, input.to_vec()).encode()
}
