//! The bpfilter client: the wire protocol shared with the daemon ([`wire`]), and a Rust client
//! API ([`Client`]) used by the CLI and by the `LD_PRELOAD` interposer (`libbpfilter.so`).
//!
//! A [`Client`] sends each request with the caller's network namespace attached, on one
//! connection kept while it is in use, and turns the daemon's errno into a [`ClientError`] whose [`ClientError::errno`] is what a
//! sockopt caller must see.
#![deny(unsafe_code)]

pub mod wire;

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub use wire::{Family, Reply, Request, RequestKind, Sockopt, SockoptOp, WireError};

/// Where the daemon listens unless [`SOCKET_ENV`] says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/bpfilter/bpfilter.sock";
/// Environment variable that overrides the socket path (daemon and clients read the same one).
pub const SOCKET_ENV: &str = "BPFILTER_SOCKET";

/// Environment variable naming an fd open on a connection to the daemon, which the
/// `bpfilter iptables` wrapper passes to the program it execs: the preloaded library makes its
/// calls on it instead of opening a connection of its own.
pub const CONNECTION_ENV: &str = "BPFILTER_CONNECTION";

/// The daemon's socket path: `$BPFILTER_SOCKET` if set and non-empty, else [`DEFAULT_SOCKET`].
pub fn socket_path() -> PathBuf {
    match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Errors of a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// connect() to the daemon's socket failed: the daemon is not running, or not reachable.
    #[error("cannot reach the bpfilter daemon at {}: {} (is 'bpfilter daemon' running?)", path.display(), strip_os_error(source))]
    Unreachable {
        /// The socket path tried.
        path: PathBuf,
        /// Why connect failed.
        source: io::Error,
    },
    /// The exchange with the daemon failed after connecting (closed early, garbage, ...).
    #[error("talking to the bpfilter daemon at {}: {source}", path.display())]
    Wire {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        source: WireError,
    },
    /// The daemon says the kernel serves this request ([`wire::KERNEL_SERVES`]): the caller
    /// makes the call against the kernel itself.
    #[error("the bpfilter daemon leaves this request to the kernel")]
    KernelServes,
    /// The daemon answered with an errno (as the kernel would have).
    #[error("the bpfilter daemon refused the request: {}", strip_os_error(&io::Error::from_raw_os_error(*errno)))]
    Daemon {
        /// The positive errno.
        errno: i32,
    },
}

impl ClientError {
    /// The errno a sockopt caller should see: the daemon's own errno; EPERM when the socket
    /// refused our credentials (so iptables prints its "you must be root" hint); else
    /// ECONNREFUSED for an unreachable daemon (ENOENT would read as "table does not exist" or
    /// "unknown extension" to iptables), or the transport's errno.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Daemon { errno } => *errno,
            ClientError::KernelServes => libc::ENOPROTOOPT,
            ClientError::Unreachable { source, .. } => match source.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => libc::EPERM,
                _ => libc::ECONNREFUSED,
            },
            ClientError::Wire { source, .. } => source.errno(),
        }
    }

    /// True if the daemon could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }
}

/// io::Error's Display appends " (os error N)", which is noise in a one-line user message.
fn strip_os_error(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// A connection to the bpfilter daemon. Each call is one request and one reply, carrying the
/// caller's network namespace. Calls share the connection while they follow each other within
/// [`KEEP`]: an iptables command makes several (GET_INFO, GET_ENTRIES, revision queries,
/// SET_REPLACE, SET_ADD_COUNTERS), and each new connection costs the daemon an accept and a
/// hand-off to a worker thread (measured: 0.3 to 0.6 ms a request on a small table, most of
/// it those two wake-ups).
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    /// The connection for the next call: the one `connect` opened, or the last call's.
    stream: Option<UnixStream>,
    /// When `stream` was opened or last carried a reply.
    last: std::time::Instant,
}

/// How long a client keeps an unused connection for its next call. Well under the daemon's
/// idle timeout (10 s), after which it closes the connection; a call that still races that
/// close meets a reset, and goes again on a new connection (see [`Client::request`]).
pub const KEEP: std::time::Duration = std::time::Duration::from_secs(2);

impl Client {
    /// Connects to [`socket_path()`].
    pub fn connect() -> Result<Client, ClientError> {
        Client::connect_to(socket_path())
    }

    /// Connects to the daemon at `path`.
    pub fn connect_to(path: impl Into<PathBuf>) -> Result<Client, ClientError> {
        let path = path.into();
        let stream = open(&path)?;
        Ok(Client::with_stream(path, stream))
    }

    /// A client on `stream`, a connection to the daemon at `path` opened by someone else (the
    /// `bpfilter iptables` wrapper hands its connection to the preloaded library).
    pub fn with_stream(path: impl Into<PathBuf>, stream: UnixStream) -> Client {
        Client {
            path: path.into(),
            stream: Some(stream),
            last: std::time::Instant::now(),
        }
    }

    /// The connection kept for the next call, if any.
    pub fn kept(&self) -> Option<&UnixStream> {
        self.stream.as_ref()
    }

    /// Replaces the kept connection with `stream`, the same connection on another fd (the
    /// preloaded library moves its fd out of the numbers programs pick themselves).
    pub fn rekeep(&mut self, stream: UnixStream) {
        self.stream = Some(stream);
    }

    /// Forgets the kept connection without closing its fd: the program has put something else
    /// at that fd number (a shell's `exec 3>file` is a `dup2` over it), which is not ours to
    /// close. The next call opens a new connection.
    pub fn disown(&mut self) {
        if let Some(stream) = self.stream.take() {
            std::mem::forget(stream);
        }
    }

    /// The daemon's socket path this client talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `req` and returns the daemon's reply as is (a non-zero errno is not an error here).
    ///
    /// A request the daemon never took is sent again on a new connection: a daemon that stops
    /// closes the connections still queued on its socket without accepting them, one that
    /// closed a kept connection as idle has gone from it, and a Unix socket closed with unread
    /// data (or never accepted) resets its peer. A reset (or EPIPE) therefore means the request
    /// was not read whole, so not applied; a daemon that read it and died before replying
    /// closes cleanly instead ([`WireError::Closed`]), which is not retried.
    pub fn request(&mut self, req: &Request) -> Result<Reply, ClientError> {
        let netns = wire::open_netns().map_err(|e| self.wire_error(e))?;
        let mut attempts = 0;
        loop {
            let stream = match self.stream.take() {
                Some(s) if self.last.elapsed() < KEEP => s,
                _ => open(&self.path)?,
            };
            let result = wire::write_request(&stream, req, Some(netns.as_fd()))
                .and_then(|()| wire::read_reply(&stream));
            attempts += 1;
            match result {
                Ok(reply) => {
                    self.stream = Some(stream);
                    self.last = std::time::Instant::now();
                    return Ok(reply);
                }
                Err(err) if not_taken(&err) && attempts < REQUEST_ATTEMPTS => continue,
                Err(err) => return Err(self.wire_error(err)),
            }
        }
    }

    fn wire_error(&self, source: WireError) -> ClientError {
        ClientError::Wire {
            path: self.path.clone(),
            source,
        }
    }

    /// Sends `req`; a reply with a non-zero errno becomes [`ClientError::Daemon`].
    pub fn call(&mut self, req: &Request) -> Result<Vec<u8>, ClientError> {
        let reply = self.request(req)?;
        if reply.errno == wire::KERNEL_SERVES {
            return Err(ClientError::KernelServes);
        }
        if reply.errno != 0 {
            return Err(ClientError::Daemon { errno: reply.errno });
        }
        Ok(reply.payload)
    }

    /// A getsockopt: `optval_in` is the input part of optval (e.g. the GET_ENTRIES header),
    /// `optlen` the caller's `*optlen`. Returns the bytes to copy back into optval.
    pub fn sockopt_get(
        &mut self,
        family: Family,
        optname: u32,
        optval_in: &[u8],
        optlen: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let n = optval_in.len().min(optlen as usize);
        self.call(&Request::Sockopt(Sockopt {
            family,
            op: SockoptOp::Get,
            optname,
            optlen,
            payload: optval_in[..n].to_vec(),
        }))
    }

    /// A setsockopt with the whole optval. Returns the reply payload (for SET_REPLACE, the old
    /// counters).
    pub fn sockopt_set(
        &mut self,
        family: Family,
        optname: u32,
        optval: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let optlen = u32::try_from(optval.len()).map_err(|_| ClientError::Wire {
            path: self.path.clone(),
            source: WireError::TooLarge {
                what: "setsockopt optval",
                len: optval.len() as u64,
                max: u64::from(wire::MAX_PAYLOAD),
            },
        })?;
        self.call(&Request::Sockopt(Sockopt {
            family,
            op: SockoptOp::Set,
            optname,
            optlen,
            payload: optval.to_vec(),
        }))
    }

    /// The tables the daemon holds for the caller's namespace, as the kernel's
    /// `/proc/net/ip_tables_names` (or `ip6_tables_names`) would list them.
    pub fn table_names(&mut self, family: Family) -> Result<Vec<String>, ClientError> {
        Ok(wire::parse_table_names(
            &self.call(&Request::TableNames { family })?,
        ))
    }

    /// The text of `/proc/net/xt_recent/NAME` for the `recent` list `name` of bpfilter's filter
    /// table in the caller's namespace; [`ClientError::Daemon`] with ENOENT when no rule of it
    /// names the list (the kernel's own list, if any, is the one to read).
    pub fn recent_read(&mut self, name: &str) -> Result<Vec<u8>, ClientError> {
        self.call(&Request::RecentRead {
            name: name.to_owned(),
        })
    }

    /// One write(2) of `data` to `/proc/net/xt_recent/NAME`: only its first
    /// [`wire::MAX_RECENT_WRITE`] bytes are sent, all that the kernel looks at. Returns write's
    /// count; the daemon's errno (EINVAL for a bad command, ENOENT for no such list) is a
    /// [`ClientError::Daemon`].
    pub fn recent_write(&mut self, name: &str, data: &[u8]) -> Result<usize, ClientError> {
        let data = &data[..data.len().min(wire::MAX_RECENT_WRITE)];
        let payload = self.call(&Request::RecentWrite {
            name: name.to_owned(),
            data: data.to_vec(),
        })?;
        wire::parse_recent_write(&payload).map_err(|source| ClientError::Wire {
            path: self.path.clone(),
            source,
        })
    }

    /// `bpfilter status`; the payloads are defined by the daemon.
    pub fn status(&mut self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.call(&Request::Status {
            payload: payload.to_vec(),
        })
    }

    /// `bpfilter counters`; the payloads are defined by the daemon.
    pub fn counters(&mut self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.call(&Request::Counters {
            payload: payload.to_vec(),
        })
    }

    /// `bpfilter dump [HOOK]`; the payloads are defined by the daemon.
    pub fn dump(&mut self, hook: Option<&str>, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.call(&Request::Dump {
            hook: hook.map(str::to_owned),
            payload: payload.to_vec(),
        })
    }

    /// `bpfilter flush [--all]`; the payloads are defined by the daemon.
    pub fn flush(&mut self, all: bool, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.call(&Request::Flush {
            all,
            payload: payload.to_vec(),
        })
    }
}

/// How many connections one request may take: the first, and new ones after resets by a
/// daemon that stopped before accepting it (each new connection waits for the next daemon).
const REQUEST_ATTEMPTS: u32 = 4;

/// Whether `err` says the daemon closed the connection before reading the whole request.
fn not_taken(err: &WireError) -> bool {
    matches!(
        err,
        WireError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE))
    )
}

/// Environment variable: how long, in seconds, a client waits for a daemon that is not
/// listening yet (starting, restarting); `0` fails at once. Default [`CONNECT_WAIT`].
pub const CONNECT_WAIT_ENV: &str = "BPFILTER_CONNECT_WAIT";
/// How long a client waits by default for a daemon that is starting or restarting.
pub const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long to wait for the daemon: [`CONNECT_WAIT_ENV`] if it parses, else [`CONNECT_WAIT`].
pub fn connect_wait() -> std::time::Duration {
    std::env::var(CONNECT_WAIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| std::time::Duration::from_secs_f64(s.min(3600.0)))
        .unwrap_or(CONNECT_WAIT)
}

/// Connects to the daemon's socket, waiting up to [`connect_wait()`] while nobody listens on
/// it (ECONNREFUSED: a daemon between two lives; ENOENT: not bound yet). A daemon that is up
/// but busy never refuses: its backlog queues the connection. Permission errors fail at once.
///
/// A process waits once: after one wait ran out, its later connections fail at once (an
/// iptables command makes several calls; a missing daemon must cost it one wait, not one per
/// call).
pub fn connect_waiting(path: &Path) -> Result<UnixStream, ClientError> {
    static GAVE_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let wait = if GAVE_UP.load(std::sync::atomic::Ordering::Relaxed) {
        std::time::Duration::ZERO
    } else {
        connect_wait()
    };
    let result = connect_within(path, wait);
    if result
        .as_ref()
        .is_err_and(|e| e.is_unreachable() && e.errno() == libc::ECONNREFUSED)
    {
        GAVE_UP.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    result
}

fn connect_within(path: &Path, wait: std::time::Duration) -> Result<UnixStream, ClientError> {
    let deadline = std::time::Instant::now() + wait;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(source) => {
                let retry = matches!(
                    source.raw_os_error(),
                    Some(libc::ECONNREFUSED | libc::ENOENT | libc::EAGAIN)
                );
                let now = std::time::Instant::now();
                if !retry || now >= deadline {
                    return Err(ClientError::Unreachable {
                        path: path.to_owned(),
                        source,
                    });
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
        }
    }
}

fn open(path: &Path) -> Result<UnixStream, ClientError> {
    connect_waiting(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::MsgFlags;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use std::thread;

    fn temp_socket(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "libbpfilter-test-{}-{tag}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn unreachable_names_the_socket() {
        let p = temp_socket("absent");
        let e = connect_within(&p, std::time::Duration::ZERO).expect_err("must fail");
        assert!(e.is_unreachable());
        assert_eq!(e.errno(), libc::ECONNREFUSED);
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("No such file or directory"), "{msg}");
        assert!(!msg.contains("os error"), "{msg}");
    }

    #[test]
    fn a_daemon_that_starts_during_the_wait_is_reached() {
        let p = temp_socket("late");
        let late = p.clone();
        let server = thread::spawn(move || {
            thread::sleep(std::time::Duration::from_millis(150));
            let listener = UnixListener::bind(&late).expect("bind");
            listener.accept().expect("accept");
        });
        let started = std::time::Instant::now();
        connect_within(&p, std::time::Duration::from_secs(5)).expect("reached once bound");
        assert!(started.elapsed() >= std::time::Duration::from_millis(150));
        server.join().expect("server thread");
        let _ = std::fs::remove_file(&p);
        // Nobody ever listens: the wait ends, with the connect error.
        let started = std::time::Instant::now();
        let e = connect_within(&p, std::time::Duration::from_millis(100)).expect_err("absent");
        assert!(e.is_unreachable());
        assert!(started.elapsed() >= std::time::Duration::from_millis(100));
    }

    #[test]
    fn errno_mapping() {
        let unreachable = |e| ClientError::Unreachable {
            path: PathBuf::from("/x"),
            source: io::Error::from_raw_os_error(e),
        };
        // A socket that refuses our credentials reads as the kernel's EPERM to iptables.
        assert_eq!(unreachable(libc::EACCES).errno(), libc::EPERM);
        assert_eq!(unreachable(libc::ENOENT).errno(), libc::ECONNREFUSED);
        assert_eq!(unreachable(libc::ECONNREFUSED).errno(), libc::ECONNREFUSED);
        assert_eq!(
            ClientError::Daemon { errno: libc::ELOOP }.errno(),
            libc::ELOOP
        );
        let closed = ClientError::Wire {
            path: PathBuf::from("/x"),
            source: WireError::Closed,
        };
        assert_eq!(closed.errno(), libc::ECONNRESET);
    }

    #[test]
    fn calls_round_trip_through_a_fake_daemon() {
        let p = temp_socket("fake");
        let listener = UnixListener::bind(&p).expect("bind");
        let server = thread::spawn(move || {
            let mut seen = Vec::new();
            // One connection carries every call.
            let (s, _) = listener.accept().expect("accept");
            for _ in 0..8 {
                let (req, fd) = wire::read_request(&s).expect("read");
                assert!(fd.is_some(), "every request carries the netns fd");
                let reply = match &req {
                    Request::TableNames {
                        family: Family::Ipv4,
                    } => Reply::ok(wire::table_names_payload(&["filter", "raw"])),
                    Request::Sockopt(so) if so.optname == 64 => Reply::ok(vec![7; 84]),
                    Request::Sockopt(_) => Reply::error(libc::ENOENT),
                    Request::RecentRead { name } if name == "ssh" => {
                        Reply::ok(b"src=10.0.0.1 ttl: 64 last_seen: 1 oldest_pkt: 1 1\n".to_vec())
                    }
                    Request::RecentRead { .. } => Reply::error(libc::ENOENT),
                    Request::RecentWrite { data, .. } if data.len() == wire::MAX_RECENT_WRITE => {
                        Reply::ok(wire::recent_write_payload(data.len()))
                    }
                    Request::RecentWrite { .. } => Reply::ok(vec![1, 2, 3]),
                    _ => Reply::ok(b"{\"ok\":true}".to_vec()),
                };
                wire::write_reply(&s, &reply).expect("reply");
                seen.push(req);
            }
            listener.set_nonblocking(true).expect("nonblocking");
            let second = listener.accept();
            (seen, second.map(|_| ()).map_err(|e| e.kind()))
        });
        let mut c = Client::connect_to(&p).expect("connect");
        assert_eq!(
            c.table_names(Family::Ipv4).expect("names"),
            vec!["filter", "raw"]
        );
        assert_eq!(
            c.sockopt_get(Family::Ipv4, 64, b"filter", 84).expect("get"),
            vec![7; 84]
        );
        let e = c
            .sockopt_get(Family::Ipv4, 66, &[0; 30], 30)
            .expect_err("must fail");
        assert_eq!(e.errno(), libc::ENOENT);
        assert_eq!(c.dump(Some("INPUT"), b"").expect("dump"), b"{\"ok\":true}");
        assert!(c
            .recent_read("ssh")
            .expect("recent read")
            .starts_with(b"src=10.0.0.1 "));
        assert_eq!(
            c.recent_read("other").expect_err("no such list").errno(),
            libc::ENOENT
        );
        // A long write is cut to the 40 bytes the kernel looks at.
        let long = [b'+'; 100];
        assert_eq!(c.recent_write("ssh", &long).expect("recent write"), 40);
        // A count that is not 8 bytes is a protocol error, not a count.
        let e = c.recent_write("ssh", b"/").expect_err("bad count");
        assert_eq!(e.errno(), libc::EPROTO);
        let (seen, second) = server.join().expect("server");
        assert_eq!(
            second,
            Err(io::ErrorKind::WouldBlock),
            "no second connection"
        );
        assert_eq!(
            seen[3],
            Request::Dump {
                hook: Some("INPUT".into()),
                payload: vec![]
            }
        );
        assert_eq!(
            seen[6],
            Request::RecentWrite {
                name: "ssh".into(),
                data: vec![b'+'; 40]
            }
        );
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn requests_a_stopping_daemon_never_took_go_to_the_next() {
        let p = temp_socket("restart");
        let first = UnixListener::bind(&p).expect("bind");
        // Queued on the first daemon's socket, never accepted.
        let mut c = Client::connect_to(&p).expect("connect");
        let path = p.clone();
        let server = thread::spawn(move || {
            // The first daemon stops; the next binds the same path.
            drop(first);
            let _ = std::fs::remove_file(&path);
            let next = UnixListener::bind(&path).expect("bind again");
            let mut seen = 0;
            // One connection accepted and closed with the request unread: a reset too.
            let (s, _) = next.accept().expect("accept");
            let mut byte = [0u8; 1];
            nix::sys::socket::recv(s.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK).expect("peek");
            drop(s);
            seen += 1;
            let (s, _) = next.accept().expect("accept");
            let (req, _) = wire::read_request(&s).expect("read");
            wire::write_reply(&s, &Reply::ok(b"{}".to_vec())).expect("reply");
            seen += 1;
            // A request read whole and never answered is not sent again (it came on the kept
            // connection).
            wire::read_request(&s).expect("read");
            drop(s);
            seen += 1;
            next.set_nonblocking(true).expect("nonblocking");
            assert!(next.accept().is_err(), "not sent again");
            (req, seen)
        });
        thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(c.status(b"x").expect("served by the next daemon"), b"{}");
        let e = c.status(b"y").expect_err("read, then closed");
        assert!(
            matches!(
                e,
                ClientError::Wire {
                    source: WireError::Closed,
                    ..
                }
            ),
            "{e}"
        );
        let (req, seen) = server.join().expect("server");
        assert_eq!(
            req,
            Request::Status {
                payload: b"x".to_vec()
            }
        );
        assert_eq!(seen, 3);
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_kept_connection_the_daemon_closed_is_replaced() {
        let p = temp_socket("idle");
        let listener = UnixListener::bind(&p).expect("bind");
        let server = thread::spawn(move || {
            // The first connection serves one call, then the daemon closes it as idle.
            let (s, _) = listener.accept().expect("accept");
            wire::read_request(&s).expect("read");
            wire::write_reply(&s, &Reply::ok(b"1".to_vec())).expect("reply");
            drop(s);
            // The next call comes on a new connection.
            let (s, _) = listener.accept().expect("accept");
            let (req, _) = wire::read_request(&s).expect("read");
            wire::write_reply(&s, &Reply::ok(b"2".to_vec())).expect("reply");
            req
        });
        let mut c = Client::connect_to(&p).expect("connect");
        assert_eq!(c.status(b"a").expect("first"), b"1");
        // Let the close land before the next call uses the kept connection.
        thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(c.status(b"b").expect("second, on a new connection"), b"2");
        assert_eq!(
            server.join().expect("server"),
            Request::Status {
                payload: b"b".to_vec()
            }
        );
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn socket_path_default() {
        // Only checks the fallback when the variable is unset in this test process.
        if std::env::var_os(SOCKET_ENV).is_none() {
            assert_eq!(socket_path(), PathBuf::from(DEFAULT_SOCKET));
        }
    }
}
