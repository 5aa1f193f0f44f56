//! `libbpfilter.so`: the `LD_PRELOAD` interposer that makes the unmodified iptables-legacy talk
//! to the bpfilter daemon instead of the kernel's ip_tables.
//!
//! What it catches, and nothing else (everything else goes to libc untouched):
//! - `getsockopt` on a raw socket (of the level's family) at level `IPPROTO_IP` (0) with optname 64..=67
//!   (`IPT_SO_GET_INFO`, `_ENTRIES`, `_REVISION_MATCH`, `_REVISION_TARGET`), or at level
//!   `IPPROTO_IPV6` (41) with optname 64, 65, 68 or 69 (ip6tables' revisions are 68/69; 66
//!   and 67 are IPv6's own IPV6_RECVTCLASS and IPV6_TCLASS);
//! - `setsockopt` on a raw socket at those levels with optname 64..=65 (`SET_REPLACE`,
//!   `SET_ADD_COUNTERS`; the kernel registers no other set optnames there);
//! - `fopen`/`fopen64` for reading `/proc/net/ip_tables_names` or `ip6_tables_names` (what
//!   `iptables-legacy-save` 1.8.9 reads, through `fopen64(path, "re")`, to find the tables);
//! - the files of the `recent` match's lists, `/proc/net/xt_recent/NAME` (also through
//!   `/proc/self/net` and `/proc/thread-self/net`): `open`, `open64`, `openat`, `openat64` and
//!   their `_FORTIFY_SOURCE` forms, `fopen` for reading, then `write`, `close`, and the dups
//!   (`dup`, `dup2`, `dup3`, `fcntl` `F_DUPFD`) of the fds they return; see [`recent`
//!   files](#recent-files).
//!
//! Only the `filter` table goes to the daemon: a table request naming any other table (nat,
//! mangle, raw, security) goes to the kernel untouched, which serves it in the caller's
//! namespace as it would without bpfilter; a revision query the daemon answers ENOENT (an
//! extension bpfilter does not implement) gets the kernel's answer, for those tables' rules.
//! A request the daemon answers `KERNEL_SERVES` (every IPv6 one, and `ip6_tables_names`, while
//! bpfilter does not compile IPv6) is made against the kernel as it was asked.
//!
//! Semantics follow the kernel's `ip_getsockopt`/`nf_getsockopt` for these optnames: a get
//! copies the daemon's payload into optval (never more than `*optlen` bytes) and leaves
//! `*optlen` as the caller set it (the kernel writes the same length back: GET_INFO stays 84,
//! GET_ENTRIES stays 40 + size, revision queries return 0 and leave optval untouched, the reply
//! payload being empty). A successful `SET_REPLACE` writes the old counters the daemon returns
//! into the caller's memory at the `counters` pointer of the 96-byte `ipt_replace` /
//! `ip6t_replace` header (u32 `num_counters` at offset 84, pointer at offset 88), at most
//! `num_counters * 16` bytes, as the kernel's `__do_replace` does. A daemon errno becomes
//! `-1` with that errno. An unreachable daemon gives `-1` with ECONNREFUSED (EPERM if the socket
//! refused our credentials) and one line on stderr, once per process, naming the socket.
//!
//! No panic crosses the FFI boundary (`catch_unwind`; a caught panic is `-1`/EIO). The state
//! kept between calls is the resolved libc symbols, the "already warned" flag, the table of
//! open recent files (one mutex, never held across a call to the daemon or to an interposed
//! function), and the connection to the daemon (one mutex, held across its calls only; a
//! call that finds it held opens its own), so it is thread safe; a fork copies the table with
//! the fds it lists, and the child opens its own connection.
//!
//! One connection serves the process's calls (an iptables command makes three to six), the
//! one the `bpfilter iptables` wrapper opened if it handed it over ([`libbpfilter::CONNECTION_ENV`]).
//!
//! # Recent files
//! The kernel's `xt_recent` shows each list of a namespace as `/proc/net/xt_recent/NAME`; the
//! lists of bpfilter's filter table live in the daemon's BPF maps instead, so opening such a
//! path asks the daemon (`RecentRead`). ENOENT (no rule of bpfilter's names the list: it is the
//! kernel's, of nat or mangle, or none) or no daemon: the real call on the real path. Else the
//! fd is a memfd standing for the proc file (named `bpfilter-xt_recent:NAME`):
//! - read-only: it holds the list's text, read as the file would be (reopened `O_RDONLY`
//!   through `/proc/self/fd`, so that a write gives EBADF as the kernel's does);
//! - `O_RDWR`: the text, and the writes below;
//! - write-only: empty (reopened `O_WRONLY`), and the writes below.
//!
//! `O_TRUNC` empties nothing (the proc file ignores it), `O_CREAT | O_EXCL` is EEXIST,
//! `O_DIRECTORY` ENOTDIR, `O_CLOEXEC` is kept; `O_PATH` opens go to the kernel.
//!
//! A `write(2)` to a writable one is `recent_mt_proc_write`: 0 bytes return 0; the first
//! [`MAX_RECENT_WRITE`] bytes are copied (EFAULT); a file offset other than 0 is ESPIPE; else
//! the daemon answers (`RecentWrite`: its count or errno; ENOENT, the list having gone with its
//! last rule, is the EIO of a removed proc entry), and a `+`/`-` write moves the offset by the
//! count, as the kernel moves `*loff`, so a second one on the same open file is ESPIPE. The
//! offset is the memfd's own: shared by dups, moved by reads and `lseek`, kept across exec.
//!
//! Writes that bypass the `write` symbol (stdio inside libc: bash's `echo` and `printf`
//! builtins, coreutils' `echo`) land in the write-only memfd. They are read back through a
//! private close-on-exec fd of it and sent as that one write, the next time the file is
//! written, closed or dup2'ed over, or at exit; the program has already been told success, so
//! a refusal is one line on stderr. An exec'd program finds the writable memfds it inherited
//! (shell redirections: `sh -c '/bin/echo +1.2.3.4 > /proc/net/xt_recent/NAME'`) from
//! `/proc/self/fd` when the library loads.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr, CString};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use libbpfilter::wire::{MAX_OPTVAL, MAX_RECENT_NAME, MAX_RECENT_WRITE};
use libbpfilter::{Client, ClientError, Family};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;

/// Level of the IPv4 table sockopts.
const SOL_IP: c_int = libc::IPPROTO_IP;
/// Level of the IPv6 table sockopts.
const SOL_IPV6: c_int = libc::IPPROTO_IPV6;
/// `IPT_BASE_CTL`: first optname of ip_tables / ip6_tables.
const SO_BASE: c_int = 64;
/// `IPT_SO_GET_INFO` / `IP6T_SO_GET_INFO`.
const SO_GET_INFO: c_int = 64;
/// `IPT_SO_GET_ENTRIES` / `IP6T_SO_GET_ENTRIES`.
const SO_GET_ENTRIES: c_int = 65;
/// `IPT_SO_GET_MAX` (revision target).
const IPT_SO_GET_MAX: c_int = 67;
/// `IP6T_SO_GET_MAX` (revision target).
const IP6T_SO_GET_MAX: c_int = 69;
/// `IPV6_RECVTCLASS`: a socket option of IPv6 itself inside ip6_tables' range.
const IPV6_RECVTCLASS: c_int = 66;
/// `IPV6_TCLASS`: likewise.
const IPV6_TCLASS: c_int = 67;
/// `IPT_SO_SET_REPLACE` / `IP6T_SO_SET_REPLACE`.
const SO_SET_REPLACE: c_int = 64;
/// `IPT_SO_SET_MAX` (add counters).
const SO_SET_MAX: c_int = 65;
/// The input part of optval per get optname: GET_INFO reads `name[32]`, GET_ENTRIES the
/// 40-byte `ipt_get_entries` header, the revision queries the 30-byte `xt_get_revision`.
const GET_INFO_IN: usize = 32;
const GET_ENTRIES_IN: usize = 40;
const REVISION_IN: usize = 30;
/// `XT_TABLE_MAXNAMELEN`: the table name leading every table request.
const TABLE_NAME: usize = 32;
/// `sizeof(struct ipt_replace)` (= `ip6t_replace`) and its field offsets.
const REPLACE_HEADER: usize = 96;
const REPLACE_NUM_COUNTERS: usize = 84;
const REPLACE_COUNTERS_PTR: usize = 88;
/// `sizeof(struct xt_counters)`.
const XT_COUNTERS_SIZE: usize = 16;

const IPV4_NAMES: [&[u8]; 2] = [
    b"/proc/net/ip_tables_names",
    b"/proc/self/net/ip_tables_names",
];
const IPV6_NAMES: [&[u8]; 2] = [
    b"/proc/net/ip6_tables_names",
    b"/proc/self/net/ip6_tables_names",
];

type GetsockoptFn =
    unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut libc::socklen_t) -> c_int;
type SetsockoptFn =
    unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, libc::socklen_t) -> c_int;
type FopenFn = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
type Openat2Fn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
type WriteFn = unsafe extern "C" fn(c_int, *const c_void, libc::size_t) -> libc::ssize_t;
type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
type DupFn = unsafe extern "C" fn(c_int) -> c_int;
type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type FcntlFn = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;

static REAL_GETSOCKOPT: AtomicUsize = AtomicUsize::new(0);
static REAL_SETSOCKOPT: AtomicUsize = AtomicUsize::new(0);
static REAL_FOPEN: AtomicUsize = AtomicUsize::new(0);
static REAL_FOPEN64: AtomicUsize = AtomicUsize::new(0);
static REAL_OPEN: AtomicUsize = AtomicUsize::new(0);
static REAL_OPEN64: AtomicUsize = AtomicUsize::new(0);
static REAL_OPENAT: AtomicUsize = AtomicUsize::new(0);
static REAL_OPENAT64: AtomicUsize = AtomicUsize::new(0);
static REAL_OPEN_2: AtomicUsize = AtomicUsize::new(0);
static REAL_OPEN64_2: AtomicUsize = AtomicUsize::new(0);
static REAL_OPENAT_2: AtomicUsize = AtomicUsize::new(0);
static REAL_OPENAT64_2: AtomicUsize = AtomicUsize::new(0);
static REAL_WRITE: AtomicUsize = AtomicUsize::new(0);
static REAL_CLOSE: AtomicUsize = AtomicUsize::new(0);
static REAL_DUP: AtomicUsize = AtomicUsize::new(0);
static REAL_DUP2: AtomicUsize = AtomicUsize::new(0);
static REAL_DUP3: AtomicUsize = AtomicUsize::new(0);
static REAL_FCNTL: AtomicUsize = AtomicUsize::new(0);
static REAL_FCNTL64: AtomicUsize = AtomicUsize::new(0);
/// Set once the one-line "cannot reach the daemon" message has been printed.
static WARNED: AtomicBool = AtomicBool::new(false);

/// The next definition of `name` after this library (libc's), cached in `slot`; 0 if none.
fn resolve(slot: &AtomicUsize, name: &CStr) -> usize {
    let cached = slot.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name has no preconditions; it may be
    // called from any thread. Racing callers store the same address.
    let addr = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    slot.store(addr, Ordering::Release);
    addr
}

/// libc's definition of `name` (see [`resolve`]) as a function of type `F`; None, with
/// errno ENOSYS, if there is none.
///
/// # Safety
/// `F` is the function pointer type of `name`.
unsafe fn libc_fn<F: Copy>(slot: &AtomicUsize, name: &CStr) -> Option<F> {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
    let addr = resolve(slot, name);
    if addr == 0 {
        set_errno(libc::ENOSYS);
        return None;
    }
    // SAFETY: addr is the address of `name`, of type F (the caller's contract), as large as
    // a usize (checked above).
    Some(unsafe { std::mem::transmute_copy::<usize, F>(&addr) })
}

/// `f()`, or `failed` with errno EIO where it panics (a panic must not unwind into C).
fn or_eio<T>(failed: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_errno(libc::EIO);
        failed
    })
}

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid to write.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> c_int {
    // SAFETY: as in set_errno; reading this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// The process's connection to the daemon, kept between calls (see [`Client`]).
static CLIENT: Mutex<Option<Kept>> = Mutex::new(None);

/// The kept connection, with what it takes to know it is still ours.
struct Kept {
    /// The process that opened it: a forked child never writes on its parent's connection.
    pid: u32,
    client: Client,
    /// Device and inode of the kept connection's socket when it was last used: a program may
    /// have closed that fd number and opened something else there.
    id: Option<(libc::dev_t, libc::ino_t)>,
}

/// The connection the `bpfilter iptables` wrapper opened (to see that the daemon is up) and
/// handed over across its exec, adopted when the library loads; -1 if none.
static HANDED_OVER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Runs `call` on the process's connection to the daemon, opening one if needed. A call made
/// while the connection is in use (a signal handler's, or another thread's: iptables makes
/// neither) gets a connection of its own.
fn with_client<T>(
    call: impl FnOnce(&mut Client) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let mut kept = match CLIENT.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            return Client::connect().and_then(|mut c| call(&mut c))
        }
    };
    let pid = std::process::id();
    if let Some(mut parent) = kept.take_if(|k| k.pid != pid) {
        // the parent's connection (a fork): its fd is the parent's too, left open
        parent.client.disown();
    }
    let k = match kept.as_mut() {
        Some(k) => {
            if k.client.kept().map(|s| fd_id(s.as_raw_fd())) != Some(k.id) {
                // closed or replaced by the program: that fd is no longer ours
                k.client.disown();
            }
            k
        }
        None => {
            let handed = HANDED_OVER.swap(-1, Ordering::AcqRel);
            let client = if handed >= 0 {
                // SAFETY: checked at load to be a connection to the daemon's socket; nobody
                // else holds it (HANDED_OVER is taken once).
                let stream = unsafe { UnixStream::from_raw_fd(handed) };
                Client::with_stream(libbpfilter::socket_path(), stream)
            } else {
                Client::connect()?
            };
            kept.insert(Kept {
                pid,
                client,
                id: None,
            })
        }
    };
    let result = call(&mut k.client);
    // A new connection gets a high fd number, out of the way of programs (shells) that pick
    // low ones themselves with dup2.
    if let Some(fd) = k.client.kept().map(AsRawFd::as_raw_fd) {
        if fd < HIGH_FD {
            let moved = high(fd);
            if moved != fd {
                // SAFETY: `high` returned a new fd of the same socket and closed `fd`, which
                // the stream must therefore not close again.
                let stream = unsafe { UnixStream::from_raw_fd(moved) };
                k.client.disown();
                k.client.rekeep(stream);
            }
        }
    }
    k.id = k
        .client
        .kept()
        .map(|s| fd_id(s.as_raw_fd()))
        .unwrap_or(None);
    result
}

/// At load: the wrapper's connection, named by [`libbpfilter::CONNECTION_ENV`], if that fd is
/// a Unix socket connected to the daemon's socket path (an exec'd child of iptables inherits
/// the variable, not the fd, which is made close-on-exec here).
fn adopt_handed_over() {
    let Some(fd) = std::env::var(libbpfilter::CONNECTION_ENV)
        .ok()
        .and_then(|v| v.parse::<c_int>().ok())
        .filter(|fd| *fd > 2)
    else {
        return;
    };
    // SAFETY: a zeroed sockaddr_un of the size we pass; getpeername writes at most that much.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: as above; on a non-socket fd getpeername fails (ENOTSOCK) and nothing is taken.
    let rc = unsafe { libc::getpeername(fd, (&raw mut addr).cast(), &mut len) };
    if rc != 0 || c_int::from(addr.sun_family) != libc::AF_UNIX {
        return;
    }
    let path: Vec<u8> = addr
        .sun_path
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    use std::os::unix::ffi::OsStrExt;
    if path.as_slice() != libbpfilter::socket_path().as_os_str().as_bytes() {
        return;
    }
    // SAFETY: F_SETFD on an fd of ours.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0 {
        HANDED_OVER.store(fd, Ordering::Release);
    }
}

/// Prints the error once per process (the one-line message iptables users see first).
fn warn_once(e: &ClientError) {
    if !WARNED.swap(true, Ordering::AcqRel) {
        let line = format!("bpfilter: {e}\n");
        // One write, so the line is not interleaved with iptables' own output.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Turns a client error into the C convention (-1 and errno), printing transport failures.
fn fail(e: &ClientError) -> c_int {
    if !matches!(e, ClientError::Daemon { .. }) {
        warn_once(e);
    }
    set_errno(e.errno());
    -1
}

/// The table a GET_INFO/GET_ENTRIES or SET_REPLACE/SET_ADD_COUNTERS request names: the first
/// 32 bytes of every one of those structs (`ipt_getinfo`, `ipt_get_entries`, `ipt_replace`,
/// `xt_counters_info`), up to the NUL the kernel forces into the last byte. None for a request
/// too short to hold it (the daemon then answers as the kernel would).
///
/// # Safety
/// `optval` valid for `len` bytes, or null.
unsafe fn table_of(optval: *const c_void, len: usize) -> Option<Vec<u8>> {
    if optval.is_null() || len < TABLE_NAME {
        return None;
    }
    // SAFETY: optval is non-null and valid for len >= 32 bytes (caller's contract).
    let raw = unsafe { std::slice::from_raw_parts(optval as *const u8, TABLE_NAME) };
    let raw = &raw[..TABLE_NAME - 1];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some(raw[..end].to_vec())
}

/// Is this a table request the kernel's own ip_tables serves? Every table but `filter`: nat,
/// mangle, raw and security cannot be BPF_NETFILTER programs (no packet, mark or address
/// rewrites), so they stay the kernel's, in the caller's namespace, as if nothing were
/// preloaded. (An unknown name gets the kernel's own answer too.)
///
/// # Safety
/// `optval` valid for `len` bytes, or null.
unsafe fn kernel_serves(optname: c_int, optval: *const c_void, len: usize) -> bool {
    if !matches!(optname, SO_GET_INFO | SO_GET_ENTRIES) {
        return false;
    }
    // SAFETY: forwarded contract.
    unsafe { table_of(optval, len) }.is_some_and(|name| name != b"filter")
}

/// What `forward_get`/`forward_set` return when the daemon leaves the call to the kernel
/// ([`libbpfilter::wire::KERNEL_SERVES`]); never a return value of getsockopt or setsockopt.
const ASK_KERNEL: c_int = -2;

fn family_of_level(level: c_int) -> Option<Family> {
    match level {
        SOL_IP => Some(Family::Ipv4),
        SOL_IPV6 => Some(Family::Ipv6),
        _ => None,
    }
}

/// Whether a getsockopt is one of ip_tables' (64..=67) or ip6_tables' (64, 65, 68, 69): at
/// level IPPROTO_IPV6, 66 and 67 are the socket's own IPV6_RECVTCLASS and IPV6_TCLASS
/// (`do_ipv6_getsockopt` answers them before netfilter is asked).
fn is_table_get(level: c_int, optname: c_int) -> bool {
    match level {
        SOL_IP => (SO_BASE..=IPT_SO_GET_MAX).contains(&optname),
        SOL_IPV6 => {
            (SO_BASE..=IP6T_SO_GET_MAX).contains(&optname)
                && !matches!(optname, IPV6_RECVTCLASS | IPV6_TCLASS)
        }
        _ => false,
    }
}

fn is_table_set(level: c_int, optname: c_int) -> bool {
    matches!(level, SOL_IP | SOL_IPV6) && (SO_BASE..=SO_SET_MAX).contains(&optname)
}

/// How many bytes of optval the kernel reads as input for this get optname.
fn get_input_len(level: c_int, optname: c_int) -> usize {
    let revisions = if level == SOL_IPV6 { 68..=69 } else { 66..=67 };
    match optname {
        SO_GET_INFO => GET_INFO_IN,
        SO_GET_ENTRIES => GET_ENTRIES_IN,
        n if revisions.contains(&n) => REVISION_IN,
        _ => 0,
    }
}

/// True if `fd` is a raw socket of the level's address family (AF_INET for IPPROTO_IP,
/// AF_INET6 for IPPROTO_IPV6), asked through libc, never through our own getsockopt. Anything
/// else stays with the kernel, which answers it as it always would (EOPNOTSUPP for SOL_IPV6 on
/// an IPv4 raw socket, its own ip_tables for a UDP or TCP socket).
fn is_table_socket(real: GetsockoptFn, fd: c_int, level: c_int) -> bool {
    let want_domain = if level == SOL_IPV6 {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let saved = errno();
    let int_opt = |opt: c_int| -> Option<c_int> {
        let mut v: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: `real` is libc's getsockopt; v/len are valid for the sizes given.
        let rc = unsafe {
            real(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(v)
    };
    let ours = int_opt(libc::SO_TYPE) == Some(libc::SOCK_RAW)
        && int_opt(libc::SO_DOMAIN) == Some(want_domain);
    set_errno(saved);
    ours
}

/// Interposed `getsockopt(2)`.
///
/// # Safety
/// Same contract as libc's getsockopt: `optval` must be valid for `*optlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut libc::socklen_t,
) -> c_int {
    // SAFETY: libc's getsockopt has type GetsockoptFn.
    let Some(real) = (unsafe { libc_fn::<GetsockoptFn>(&REAL_GETSOCKOPT, c"getsockopt") }) else {
        return -1;
    };
    if !is_table_get(level, optname) || !is_table_socket(real, fd, level) {
        // SAFETY: forwarding the caller's arguments unchanged under the same contract.
        return unsafe { real(fd, level, optname, optval, optlen) };
    }
    let len = if optlen.is_null() {
        0
    } else {
        // SAFETY: optlen is non-null and points to the caller's socklen_t, as getsockopt's
        // contract requires.
        (unsafe { optlen.read_unaligned() } as c_int).max(0) as usize
    };
    // SAFETY: as above.
    if unsafe { kernel_serves(optname, optval, len) } {
        // SAFETY: forwarding the caller's arguments unchanged under the same contract.
        return unsafe { real(fd, level, optname, optval, optlen) };
    }
    or_eio(-1, || {
        // SAFETY: the caller's contract (optval valid for *optlen bytes) is forwarded.
        let ret = unsafe { forward_get(level, optname, optval, optlen) };
        if ret == ASK_KERNEL {
            // SAFETY: forwarding the caller's arguments unchanged under the same contract.
            return unsafe { real(fd, level, optname, optval, optlen) };
        }
        // A revision query for an extension bpfilter does not implement gets the kernel's
        // answer: the kernel's tables (nat, mangle, ...) use it; a filter rule using it is
        // still refused at SET_REPLACE (ENOENT), before anything changes.
        if ret != 0 && errno() == libc::ENOENT && !matches!(optname, SO_GET_INFO | SO_GET_ENTRIES) {
            // SAFETY: forwarding the caller's arguments unchanged under the same contract.
            return unsafe { real(fd, level, optname, optval, optlen) };
        }
        ret
    })
}

/// # Safety
/// `optval` valid for `*optlen` bytes (or null), `optlen` valid or null.
unsafe fn forward_get(
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut libc::socklen_t,
) -> c_int {
    let Some(family) = family_of_level(level) else {
        set_errno(libc::ENOPROTOOPT);
        return -1;
    };
    if optlen.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // SAFETY: optlen is non-null and, by the caller's contract, points to a socklen_t.
    let len = unsafe { optlen.read_unaligned() };
    // The kernel reads optlen as an int; a "negative" length reads no input.
    let len_in = if (len as c_int) < 0 { 0 } else { len as usize };
    let n_in = get_input_len(level, optname).min(len_in);
    if n_in > 0 && optval.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    let input = if n_in > 0 {
        // SAFETY: optval is non-null and valid for *optlen >= n_in bytes (caller's contract).
        unsafe { std::slice::from_raw_parts(optval as *const u8, n_in) }.to_vec()
    } else {
        Vec::new()
    };
    let saved = errno();
    let result = with_client(|c| c.sockopt_get(family, optname as u32, &input, len));
    match result {
        Ok(payload) => {
            let n = payload.len().min(len_in);
            if n > 0 {
                if optval.is_null() {
                    set_errno(libc::EFAULT);
                    return -1;
                }
                // SAFETY: optval is valid for *optlen >= n bytes; payload is our own buffer, so
                // the ranges cannot overlap.
                unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), optval.cast::<u8>(), n) };
            }
            // *optlen stays as passed: the kernel writes the same length back.
            set_errno(saved);
            0
        }
        Err(ClientError::KernelServes) => {
            set_errno(saved);
            ASK_KERNEL
        }
        Err(e) => fail(&e),
    }
}

/// Interposed `setsockopt(2)`.
///
/// # Safety
/// Same contract as libc's setsockopt: `optval` must be valid for `optlen` bytes; for
/// `SET_REPLACE`, the `counters` pointer inside it must be writable for `num_counters * 16`
/// bytes (as the kernel requires).
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: libc::socklen_t,
) -> c_int {
    // SAFETY: libc's setsockopt has type SetsockoptFn.
    let Some(real) = (unsafe { libc_fn::<SetsockoptFn>(&REAL_SETSOCKOPT, c"setsockopt") }) else {
        return -1;
    };
    // SAFETY: libc's getsockopt has type GetsockoptFn.
    let Some(real_get) = (unsafe { libc_fn::<GetsockoptFn>(&REAL_GETSOCKOPT, c"getsockopt") })
    else {
        return -1;
    };
    if !is_table_set(level, optname) || !is_table_socket(real_get, fd, level) {
        // SAFETY: forwarding the caller's arguments unchanged under the same contract.
        return unsafe { real(fd, level, optname, optval, optlen) };
    }
    // SET_REPLACE and SET_ADD_COUNTERS share the optnames of GET_INFO and GET_ENTRIES.
    // SAFETY: optval is valid for optlen bytes (caller's contract).
    if unsafe { kernel_serves(optname, optval, optlen as usize) } {
        // SAFETY: forwarding the caller's arguments unchanged under the same contract.
        return unsafe { real(fd, level, optname, optval, optlen) };
    }
    or_eio(-1, || {
        // SAFETY: the caller's contract is forwarded.
        match unsafe { forward_set(level, optname, optval, optlen) } {
            // SAFETY: forwarding the caller's arguments unchanged under the same contract.
            ASK_KERNEL => unsafe { real(fd, level, optname, optval, optlen) },
            ret => ret,
        }
    })
}

/// # Safety
/// `optval` valid for `optlen` bytes (or null); see [`setsockopt`] for the counters pointer.
unsafe fn forward_set(
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: libc::socklen_t,
) -> c_int {
    let Some(family) = family_of_level(level) else {
        set_errno(libc::ENOPROTOOPT);
        return -1;
    };
    let mut len = optlen as usize;
    if len > 0 && optval.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // The kernel's do_replace reads the 96-byte header, then exactly `size` bytes of entries:
    // whatever optlen claims beyond 96 + size is never read (and need not be readable).
    if optname == SO_SET_REPLACE && len >= REPLACE_HEADER {
        // SAFETY: optval is non-null and valid for optlen >= 96 bytes (caller's contract).
        let hdr = unsafe { std::slice::from_raw_parts(optval as *const u8, REPLACE_HEADER) };
        let size = u32::from_ne_bytes([hdr[40], hdr[41], hdr[42], hdr[43]]) as usize;
        len = len.min(REPLACE_HEADER.saturating_add(size));
    }
    if len > MAX_OPTVAL {
        // What the kernel's size checks (xt_alloc_table_info) give for an absurd blob.
        set_errno(libc::ENOMEM);
        return -1;
    }
    let blob = if len > 0 {
        // SAFETY: optval is non-null and valid for len <= optlen bytes (caller's contract).
        unsafe { std::slice::from_raw_parts(optval as *const u8, len) }.to_vec()
    } else {
        Vec::new()
    };
    // Where the old counters go: read from the caller's header before anything is sent.
    let counters_dst = if optname == SO_SET_REPLACE && blob.len() >= REPLACE_HEADER {
        let num = u32::from_ne_bytes(
            blob[REPLACE_NUM_COUNTERS..REPLACE_NUM_COUNTERS + 4]
                .try_into()
                .unwrap_or([0; 4]),
        );
        let ptr = u64::from_ne_bytes(
            blob[REPLACE_COUNTERS_PTR..REPLACE_COUNTERS_PTR + 8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        Some((
            ptr as usize as *mut u8,
            (num as usize).saturating_mul(XT_COUNTERS_SIZE),
        ))
    } else {
        None
    };
    let saved = errno();
    let result = with_client(|c| c.sockopt_set(family, optname as u32, &blob));
    match result {
        Ok(payload) => {
            if let Some((dst, max)) = counters_dst {
                let n = payload.len().min(max);
                if n > 0 {
                    // The kernel's copy_to_user: a bad pointer fails quietly (the new table is
                    // already in place, the call still returns 0). process_vm_writev on
                    // ourselves gives the same EFAULT instead of a crash.
                    let local = libc::iovec {
                        iov_base: payload.as_ptr() as *mut c_void,
                        iov_len: n,
                    };
                    let remote = libc::iovec {
                        iov_base: dst.cast(),
                        iov_len: n,
                    };
                    // SAFETY: both iovecs describe n bytes; the kernel checks the remote one.
                    unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
                }
            }
            set_errno(saved);
            0
        }
        Err(ClientError::KernelServes) => {
            set_errno(saved);
            ASK_KERNEL
        }
        Err(e) => fail(&e),
    }
}

/// Which names file `path` is, if it is one we answer.
fn names_file(path: &CStr) -> Option<Family> {
    let p = path.to_bytes();
    if IPV4_NAMES.contains(&p) {
        Some(Family::Ipv4)
    } else if IPV6_NAMES.contains(&p) {
        Some(Family::Ipv6)
    } else {
        None
    }
}

/// A read-only stream over `content`: a memfd, so it behaves like a real file (fileno, seek).
fn memory_file(content: &[u8], cloexec: bool) -> Result<*mut libc::FILE, c_int> {
    let flags = if cloexec { libc::MFD_CLOEXEC } else { 0 };
    let fd = memfd_with(c"bpfilter-tables-names", flags, content)?;
    // SAFETY: fd is our memfd; the mode is a NUL-terminated string.
    let file = unsafe { libc::fdopen(fd, c"r".as_ptr()) };
    if file.is_null() {
        let e = errno();
        // SAFETY: fdopen failed, so the fd is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(file)
}

/// A memfd named `name` (shown by readlink in /proc/PID/fd) holding `content`, at offset 0.
fn memfd_with(name: &CStr, flags: c_uint, content: &[u8]) -> Result<c_int, c_int> {
    // SAFETY: memfd_create with a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(errno());
    }
    let mut off = 0;
    while off < content.len() {
        // SAFETY: fd is our memfd; the slice is valid for the given length.
        let n = unsafe { libc::write(fd, content[off..].as_ptr().cast(), content.len() - off) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            // SAFETY: closing the memfd we own.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        off += n as usize;
    }
    // SAFETY: fd is our memfd.
    unsafe { libc::lseek(fd, 0, libc::SEEK_SET) };
    Ok(fd)
}

/// Common body of fopen/fopen64.
///
/// # Safety
/// `path` and `mode` are NUL-terminated strings or null (as for fopen).
unsafe fn fopen_common(
    slot: &AtomicUsize,
    name: &CStr,
    path: *const c_char,
    mode: *const c_char,
) -> *mut libc::FILE {
    let real_fopen = || {
        // SAFETY: libc's fopen/fopen64 have type FopenFn.
        let Some(real) = (unsafe { libc_fn::<FopenFn>(slot, name) }) else {
            return std::ptr::null_mut();
        };
        // SAFETY: forwarding under fopen's contract.
        unsafe { real(path, mode) }
    };
    let ours = if path.is_null() || mode.is_null() {
        None
    } else {
        // SAFETY: both are non-null NUL-terminated strings by fopen's contract.
        let (p, m) = unsafe { (CStr::from_ptr(path), CStr::from_ptr(mode)) };
        let m = m.to_bytes();
        // Only plain reads are ours: the names files are read-only anyway, and a recent file's
        // writes would go through stdio's own write, past the `write` symbol.
        if m.first() == Some(&b'r') && !m.contains(&b'+') {
            let cloexec = m.contains(&b'e');
            match names_file(p) {
                Some(family) => Some((Ok(family), cloexec)),
                None => recent_name(p.to_bytes()).map(|list| (Err(list), cloexec)),
            }
        } else {
            None
        }
    };
    let (family, cloexec) = match ours {
        None => return real_fopen(),
        Some((Ok(family), cloexec)) => (family, cloexec),
        Some((Err(list), cloexec)) => {
            let opened = or_eio(Some(std::ptr::null_mut()), || {
                let saved = errno();
                let text = match recent_read(list) {
                    Ok(Some(text)) => text,
                    Ok(None) => return None,
                    Err(()) => return Some(std::ptr::null_mut()),
                };
                Some(match memory_file(&text, cloexec) {
                    Ok(f) => {
                        set_errno(saved);
                        f
                    }
                    Err(e) => {
                        set_errno(e);
                        std::ptr::null_mut()
                    }
                })
            });
            return opened.unwrap_or_else(real_fopen);
        }
    };
    or_eio(std::ptr::null_mut(), || {
        let saved = errno();
        match with_client(|c| c.table_names(family)) {
            Ok(names) => {
                match memory_file(&libbpfilter::wire::table_names_payload(&names), cloexec) {
                    Ok(f) => {
                        set_errno(saved);
                        f
                    }
                    Err(e) => {
                        set_errno(e);
                        std::ptr::null_mut()
                    }
                }
            }
            Err(ClientError::KernelServes) => {
                set_errno(saved);
                real_fopen()
            }
            Err(e) => {
                fail(&e);
                std::ptr::null_mut()
            }
        }
    })
}

/// Interposed `fopen(3)`: answers the ip(6)_tables_names files from the daemon.
///
/// # Safety
/// As fopen: NUL-terminated `path` and `mode`.
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: fopen's contract is forwarded.
    unsafe { fopen_common(&REAL_FOPEN, c"fopen", path, mode) }
}

/// Interposed `fopen64(3)` (what iptables-legacy-save 1.8.9 calls).
///
/// # Safety
/// As fopen64: NUL-terminated `path` and `mode`.
#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: fopen64's contract is forwarded.
    unsafe { fopen_common(&REAL_FOPEN64, c"fopen64", path, mode) }
}

// ---- /proc/net/xt_recent/NAME (see the module doc) ----------------------------------------

/// Where the kernel shows the lists of the `recent` match (xt_recent.c, `recent_net_init`), as
/// the caller's namespace sees them.
const RECENT_DIRS: [&[u8]; 3] = [
    b"/proc/net/xt_recent/",
    b"/proc/self/net/xt_recent/",
    b"/proc/thread-self/net/xt_recent/",
];
/// How every one of them starts: all that a path of anything else costs to compare.
const PROC: &[u8] = b"/proc/";
/// The name of a memfd standing for a recent file, before the list's name. Its link in
/// /proc/self/fd reads `/memfd:` + this + NAME + ` (deleted)`.
const RECENT_MEMFD: &str = "bpfilter-xt_recent:";
/// The lowest fd our own fds of recent files (memfds, shadows) take: out of the way of the
/// numbers programs pick themselves (shells redirect to 0-9, save to 10 and up, bash reads its
/// script from 255), and never the lowest free fd that open(2) must return.
const HIGH_FD: c_int = 256;

/// The list a recent file's path names: one path component of 1 to [`MAX_RECENT_NAME`] bytes
/// of UTF-8 (the kernel has no list with a longer name, the wire no other names).
fn recent_name(path: &[u8]) -> Option<&str> {
    let name = RECENT_DIRS.iter().find_map(|dir| path.strip_prefix(*dir))?;
    if name.is_empty()
        || name.len() > MAX_RECENT_NAME
        || name.contains(&b'/')
        || name == b"."
        || name == b".."
    {
        return None;
    }
    std::str::from_utf8(name).ok()
}

/// [`recent_name`] of a C path, measured only once it starts with `/proc/`.
///
/// # Safety
/// `path` is null or a NUL-terminated string that outlives the result.
unsafe fn recent_path<'a>(path: *const c_char) -> Option<&'a str> {
    if path.is_null() {
        return None;
    }
    for (i, &want) in PROC.iter().enumerate() {
        // SAFETY: bytes 0..i matched PROC, which holds no NUL, so the string goes on to i.
        if unsafe { *path.add(i) } as u8 != want {
            return None;
        }
    }
    // SAFETY: a NUL-terminated string (caller's contract).
    recent_name(unsafe { CStr::from_ptr(path) }.to_bytes())
}

/// The list of one of our memfds, from its /proc/self/fd link.
fn memfd_list(link: &[u8]) -> Option<&str> {
    let name = link
        .strip_prefix(b"/memfd:")?
        .strip_prefix(RECENT_MEMFD.as_bytes())?
        .strip_suffix(b" (deleted)")?;
    if name.is_empty() || name.len() > MAX_RECENT_NAME {
        return None;
    }
    std::str::from_utf8(name).ok()
}

/// Whether open(2) reads its variadic mode for these flags (glibc's `__OPEN_NEEDS_MODE`).
fn needs_mode(flags: c_int) -> bool {
    flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE
}

/// The list's text from the daemon. Ok(None): not a list of bpfilter's (ENOENT: the kernel's
/// own, of nat or mangle, or none), or no daemon: the real call on the real path decides.
/// Err: errno is set; a daemon that refuses our credentials is EACCES, what opening the
/// kernel's 0600 file without the right gives.
fn recent_read(name: &str) -> Result<Option<Vec<u8>>, ()> {
    match with_client(|c| c.recent_read(name)) {
        Ok(text) => Ok(Some(text)),
        Err(ClientError::Daemon {
            errno: libc::ENOENT,
        }) => Ok(None),
        Err(e) if e.is_unreachable() => Ok(None),
        Err(ClientError::Daemon { errno: libc::EPERM }) => {
            set_errno(libc::EACCES);
            Err(())
        }
        Err(e) => {
            fail(&e);
            Err(())
        }
    }
}

/// A writable open of a recent file: the memfd standing for it.
#[derive(Debug)]
struct RecentFile {
    /// The list.
    name: String,
    /// st_dev and st_ino of the memfd: an fd number closed behind our back (fclose,
    /// close_range) and reused for something else is told apart.
    id: (libc::dev_t, libc::ino_t),
    /// The program's fds of it.
    fds: Vec<c_int>,
    /// Write-only opens: our own close-on-exec O_RDWR fd of the memfd, to read back what stdio
    /// wrote there, even once the program closed its fds; -1 for O_RDWR opens (their memfd
    /// holds the list's text).
    shadow: c_int,
}

/// The writable recent files of the process.
static RECENT: Mutex<Vec<RecentFile>> = Mutex::new(Vec::new());
/// How many fds [`RECENT`] lists: `write`, `close` and the dups of any other fd cost this one
/// relaxed load.
static RECENT_FDS: AtomicUsize = AtomicUsize::new(0);

fn recent_table() -> MutexGuard<'static, Vec<RecentFile>> {
    match RECENT.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// st_dev and st_ino of `fd`; errno is kept.
fn fd_id(fd: c_int) -> Option<(libc::dev_t, libc::ino_t)> {
    let saved = errno();
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the whole struct on success.
    let ok = unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0;
    set_errno(saved);
    // SAFETY: initialized by the successful fstat.
    ok.then(|| unsafe { st.assume_init() })
        .map(|st| (st.st_dev, st.st_ino))
}

/// Removes `fd` from the table; returns the files left without any fd.
fn drop_fd(table: &mut Vec<RecentFile>, fd: c_int) -> Vec<RecentFile> {
    for f in table.iter_mut() {
        f.fds.retain(|&x| x != fd);
    }
    let (done, kept) = std::mem::take(table)
        .into_iter()
        .partition(|f| f.fds.is_empty());
    *table = kept;
    RECENT_FDS.store(table.iter().map(|f| f.fds.len()).sum(), Ordering::Relaxed);
    done
}

/// Sends what is left in files no fd refers to any more, and closes their shadows (outside the
/// table's lock: this talks to the daemon).
fn finish(done: Vec<RecentFile>) {
    for f in done {
        if f.shadow >= 0 && fd_id(f.shadow) == Some(f.id) {
            replay(&f.name, f.shadow, f.id, None);
            real_close(f.shadow);
        }
    }
}

/// Adds a file (its fds numbers were, if listed, stale).
fn track(file: RecentFile) {
    let mut table = recent_table();
    let mut done = Vec::new();
    for &fd in &file.fds {
        done.extend(drop_fd(&mut table, fd));
    }
    table.push(file);
    RECENT_FDS.store(table.iter().map(|f| f.fds.len()).sum(), Ordering::Relaxed);
    drop(table);
    finish(done);
}

/// After `new` became a dup of `old`: `new` leaves the file it was (stale), and joins `old`'s.
fn track_dup(old: c_int, new: c_int) {
    let id = fd_id(new);
    let mut table = recent_table();
    let done = drop_fd(&mut table, new);
    if let Some(f) = table
        .iter_mut()
        .find(|f| f.fds.contains(&old) && Some(f.id) == id)
    {
        f.fds.push(new);
    }
    RECENT_FDS.store(table.iter().map(|f| f.fds.len()).sum(), Ordering::Relaxed);
    drop(table);
    finish(done);
}

/// What a write or a close needs of a recent file.
#[derive(Debug)]
struct Recent {
    name: String,
    id: (libc::dev_t, libc::ino_t),
    shadow: c_int,
}

impl Recent {
    /// See [`replay`].
    fn replay(&self, fd: Option<c_int>) {
        if self.shadow >= 0 {
            replay(&self.name, self.shadow, self.id, fd);
        }
    }
}

/// The recent file `fd` is, if any. A listed fd that is now something else is forgotten.
fn recent_of(fd: c_int) -> Option<Recent> {
    if RECENT_FDS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut table = recent_table();
    let i = table.iter().position(|f| f.fds.contains(&fd))?;
    if fd_id(fd) == Some(table[i].id) {
        return Some(Recent {
            name: table[i].name.clone(),
            id: table[i].id,
            shadow: table[i].shadow,
        });
    }
    let done = drop_fd(&mut table, fd);
    drop(table);
    finish(done);
    None
}

/// Runs `f`, a step of bookkeeping that must not unwind into C.
fn quietly(f: impl FnOnce()) {
    let saved = errno();
    let _ = catch_unwind(AssertUnwindSafe(f));
    set_errno(saved);
}

/// Sends what reached a write-only recent file past our `write` (stdio's own writes inside
/// libc) as the one write the kernel would have answered, then empties the memfd. `fd`, if
/// still open, has its offset put back to 0 when the kernel would not have moved it. Nothing
/// is done through a shadow that is no longer the memfd `id` (a program closed or replaced
/// that fd number): it could be any file of the program's.
fn replay(name: &str, shadow: c_int, id: (libc::dev_t, libc::ino_t), fd: Option<c_int>) {
    let saved = errno();
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the whole struct on success.
    let size = if unsafe { libc::fstat(shadow, st.as_mut_ptr()) } == 0 {
        // SAFETY: initialized by the successful fstat.
        let st = unsafe { st.assume_init() };
        ((st.st_dev, st.st_ino) == id).then_some(st.st_size)
    } else {
        None
    };
    if size.unwrap_or(0) <= 0 {
        set_errno(saved);
        return;
    }
    let mut buf = [0u8; MAX_RECENT_WRITE];
    // SAFETY: pread into our buffer of that length; ftruncate of our own fd.
    let n = unsafe {
        let n = libc::pread(shadow, buf.as_mut_ptr().cast(), buf.len(), 0);
        libc::ftruncate(shadow, 0);
        n
    };
    // A first byte 0 is a hole: that write came at an offset other than 0, which the kernel
    // refuses (ESPIPE), after one of ours or a replayed one.
    if n > 0 && buf[0] != 0 {
        let data = &buf[..n as usize];
        let rewind = || {
            if let Some(fd) = fd {
                // SAFETY: lseek on the program's fd of this file.
                unsafe { libc::lseek(fd, 0, libc::SEEK_SET) };
            }
        };
        match with_client(|c| c.recent_write(name, data)) {
            // A `+`/`-` moved the kernel's offset: further writes are ESPIPE, as the memfd's
            // offset, past these bytes, already says.
            Ok(_) if data[0] != b'/' => {}
            Ok(_) => rewind(),
            Err(e) => {
                rewind();
                let why = match e {
                    ClientError::Daemon { errno } => os_error_text(recent_write_errno(errno)),
                    other => other.to_string(),
                };
                let line = format!("bpfilter: write to /proc/net/xt_recent/{name}: {why}\n");
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
    set_errno(saved);
}

/// The errno a write gets for the daemon's: ENOENT (the list went with its last rule) is the
/// EIO of a write to a removed proc entry (`proc_reg_write`).
fn recent_write_errno(errno: c_int) -> c_int {
    if errno == libc::ENOENT {
        libc::EIO
    } else {
        errno
    }
}

/// strerror, without io::Error's " (os error N)".
fn os_error_text(errno: c_int) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// The first `n` bytes at `buf`, or EFAULT where the kernel's copy_from_user would fail:
/// process_vm_readv of ourselves checks the range; where seccomp refuses that call, the
/// bytes are read directly.
///
/// # Safety
/// `buf` valid for `n` bytes or null (write's contract).
unsafe fn copy_from_caller(buf: *const c_void, n: usize) -> Result<Vec<u8>, c_int> {
    if buf.is_null() {
        return Err(libc::EFAULT);
    }
    let mut data = vec![0u8; n];
    let local = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: n,
    };
    let remote = libc::iovec {
        iov_base: buf as *mut c_void,
        iov_len: n,
    };
    // SAFETY: both iovecs describe n bytes; the kernel checks the remote one.
    let got = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if got == n as isize {
        return Ok(data);
    }
    if got >= 0 || errno() == libc::EFAULT {
        return Err(libc::EFAULT);
    }
    // SAFETY: buf is valid for n bytes (caller's contract); data is our own buffer.
    unsafe { std::ptr::copy_nonoverlapping(buf.cast::<u8>(), data.as_mut_ptr(), n) };
    Ok(data)
}

/// One write(2) to a recent file, as `recent_mt_proc_write`.
///
/// # Safety
/// `buf` valid for `count` bytes (write's contract).
unsafe fn write_recent(
    fd: c_int,
    file: &Recent,
    buf: *const c_void,
    count: libc::size_t,
) -> libc::ssize_t {
    if count == 0 {
        return 0;
    }
    let saved = errno();
    let n = count.min(MAX_RECENT_WRITE);
    // SAFETY: forwarded contract.
    let data = match unsafe { copy_from_caller(buf, n) } {
        Ok(data) => data,
        Err(e) => {
            set_errno(e);
            return -1;
        }
    };
    file.replay(Some(fd));
    // The kernel's "Strict protocol!": only a write at offset 0 (the memfd's offset is the
    // open file's, moved by our writes, reads, lseek).
    // SAFETY: lseek on the program's fd.
    let pos = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    if pos < 0 {
        return -1;
    }
    if pos != 0 {
        set_errno(libc::ESPIPE);
        return -1;
    }
    match with_client(|c| c.recent_write(&file.name, &data)) {
        Ok(written) => {
            let written = written.min(n);
            if data[0] != b'/' {
                // `*loff += size + 1`: the next write on this open file is ESPIPE.
                // SAFETY: lseek on the program's fd.
                unsafe { libc::lseek(fd, written as libc::off_t, libc::SEEK_CUR) };
            }
            set_errno(saved);
            written as libc::ssize_t
        }
        Err(ClientError::Daemon { errno }) => {
            set_errno(recent_write_errno(errno));
            -1
        }
        Err(e) => fail(&e) as libc::ssize_t,
    }
}

/// libc's `open`, for our own opens.
fn real_open(path: &CStr, flags: c_int) -> c_int {
    // SAFETY: libc's open has type OpenFn.
    let Some(real) = (unsafe { libc_fn::<OpenFn>(&REAL_OPEN, c"open") }) else {
        return -1;
    };
    // SAFETY: a NUL-terminated path; the mode is not read without O_CREAT.
    unsafe { real(path.as_ptr(), flags, 0 as c_uint) }
}

/// libc's `close`.
fn real_close(fd: c_int) -> c_int {
    // SAFETY: libc's close has type CloseFn.
    let Some(real) = (unsafe { libc_fn::<CloseFn>(&REAL_CLOSE, c"close") }) else {
        return -1;
    };
    // SAFETY: closing the fd the caller names.
    unsafe { real(fd) }
}

/// `fd` moved to [`HIGH_FD`] or above, close-on-exec (as is, where that fails).
fn high(fd: c_int) -> c_int {
    // SAFETY: F_DUPFD_CLOEXEC of our own fd.
    let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if moved < 0 {
        return fd;
    }
    real_close(fd);
    moved
}

/// A new open file of the memfd `fd`, through /proc/self/fd: its own offset and access mode.
fn reopen(fd: c_int, flags: c_int) -> Result<c_int, c_int> {
    let path = CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| libc::EINVAL)?;
    let new = real_open(&path, flags);
    if new < 0 {
        Err(errno())
    } else {
        Ok(new)
    }
}

/// The memfd standing for an open of the list `name` (see the module doc); writable ones are
/// tracked.
fn recent_fd(name: &str, flags: c_int, text: &[u8]) -> Result<c_int, c_int> {
    let cloexec = flags & libc::O_CLOEXEC;
    let memfd_name = CString::new(format!("{RECENT_MEMFD}{name}")).map_err(|_| libc::EINVAL)?;
    let tracked = |fd: c_int, shadow: c_int| {
        if let Some(id) = fd_id(fd) {
            quietly(|| {
                track(RecentFile {
                    name: name.to_owned(),
                    id,
                    fds: vec![fd],
                    shadow,
                })
            });
        }
        fd
    };
    match flags & libc::O_ACCMODE {
        libc::O_RDWR => {
            let mfd = if cloexec != 0 { libc::MFD_CLOEXEC } else { 0 };
            Ok(tracked(memfd_with(&memfd_name, mfd, text)?, -1))
        }
        // Our memfd out of the way first, so that the program's fd is the lowest free one.
        libc::O_RDONLY => {
            let memfd = high(memfd_with(&memfd_name, libc::MFD_CLOEXEC, text)?);
            let fd = reopen(memfd, libc::O_RDONLY | cloexec);
            real_close(memfd);
            fd
        }
        _ => {
            let shadow = high(memfd_with(&memfd_name, libc::MFD_CLOEXEC, &[])?);
            match reopen(shadow, libc::O_WRONLY | cloexec) {
                Ok(fd) => Ok(tracked(fd, shadow)),
                Err(e) => {
                    real_close(shadow);
                    Err(e)
                }
            }
        }
    }
}

/// Opens the list `name` as the daemon holds it; None: not bpfilter's (the real call).
fn open_recent(name: &str, flags: c_int) -> Option<c_int> {
    // An O_PATH handle reads and writes nothing, nor does access mode 3: the kernel's.
    if flags & libc::O_PATH != 0 || flags & libc::O_ACCMODE == libc::O_ACCMODE {
        return None;
    }
    let saved = errno();
    let text = match recent_read(name) {
        Ok(Some(text)) => text,
        Ok(None) => return None,
        Err(()) => return Some(-1),
    };
    // The proc file exists, and is not a folder.
    let excl = libc::O_CREAT | libc::O_EXCL;
    if flags & excl == excl {
        set_errno(libc::EEXIST);
        return Some(-1);
    }
    if flags & libc::O_DIRECTORY != 0 {
        set_errno(libc::ENOTDIR);
        return Some(-1);
    }
    match recent_fd(name, flags, &text) {
        Ok(fd) => {
            set_errno(saved);
            Some(fd)
        }
        Err(e) => {
            set_errno(e);
            Some(-1)
        }
    }
}

/// Common body of the open family: `real` makes the call as the caller did.
///
/// # Safety
/// `path` is null or NUL-terminated (open's contract).
unsafe fn open_common(path: *const c_char, flags: c_int, real: impl FnOnce() -> c_int) -> c_int {
    // SAFETY: forwarded; the name is used before this returns.
    let Some(name) = (unsafe { recent_path(path) }) else {
        return real();
    };
    let opened = or_eio(Some(-1), || open_recent(name, flags));
    match opened {
        Some(fd) => fd,
        None => real(),
    }
}

/// open/open64 through `slot`.
///
/// # Safety
/// As open.
unsafe fn open_via(
    slot: &AtomicUsize,
    symbol: &CStr,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    let mode = if needs_mode(flags) { mode } else { 0 };
    // SAFETY: forwarded contract.
    unsafe {
        open_common(path, flags, || {
            // SAFETY: libc's open/open64 has type OpenFn.
            let Some(real) = libc_fn::<OpenFn>(slot, symbol) else {
                return -1;
            };
            // SAFETY: the caller's arguments, the mode as the variadic (promoted) int it is.
            real(path, flags, mode)
        })
    }
}

/// openat/openat64 through `slot`: only an absolute path can be a recent file (whatever
/// `dirfd`, AT_FDCWD or not).
///
/// # Safety
/// As openat.
unsafe fn openat_via(
    slot: &AtomicUsize,
    symbol: &CStr,
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    let mode = if needs_mode(flags) { mode } else { 0 };
    // SAFETY: forwarded contract.
    unsafe {
        open_common(path, flags, || {
            // SAFETY: libc's openat/openat64 has type OpenatFn.
            let Some(real) = libc_fn::<OpenatFn>(slot, symbol) else {
                return -1;
            };
            // SAFETY: the caller's arguments, the mode as the variadic (promoted) int it is.
            real(dirfd, path, flags, mode)
        })
    }
}

// The open family's mode is C's variadic argument, there only when the flags need it. Rust
// cannot define a variadic function; on x86_64 and aarch64 (Linux) a variadic int travels in
// the register or stack slot a named one would, so it is declared as a plain `c_uint` (the
// promoted mode_t) and read only when O_CREAT or O_TMPFILE says the caller passed one (else
// it holds whatever the caller left there). Other targets do not get these interposers.

/// Interposed `open(2)`: a recent file of bpfilter's is answered (see the module doc).
///
/// # Safety
/// As open: `path` NUL-terminated.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { open_via(&REAL_OPEN, c"open", path, flags, mode) }
}

/// Interposed `open64`.
///
/// # Safety
/// As open64.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { open_via(&REAL_OPEN64, c"open64", path, flags, mode) }
}

/// Interposed `openat(2)`.
///
/// # Safety
/// As openat.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { openat_via(&REAL_OPENAT, c"openat", dirfd, path, flags, mode) }
}

/// Interposed `openat64`.
///
/// # Safety
/// As openat64.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { openat_via(&REAL_OPENAT64, c"openat64", dirfd, path, flags, mode) }
}

/// `__open_2` and `__open64_2`: what `_FORTIFY_SOURCE` makes of a two-argument open.
///
/// # Safety
/// As open.
unsafe fn open_2_via(
    slot: &AtomicUsize,
    symbol: &CStr,
    path: *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        open_common(path, flags, || {
            // SAFETY: libc's __open_2/__open64_2 has type Open2Fn.
            let Some(real) = libc_fn::<Open2Fn>(slot, symbol) else {
                return -1;
            };
            // SAFETY: the caller's arguments.
            real(path, flags)
        })
    }
}

/// `__openat_2` and `__openat64_2`.
///
/// # Safety
/// As openat.
unsafe fn openat_2_via(
    slot: &AtomicUsize,
    symbol: &CStr,
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        open_common(path, flags, || {
            // SAFETY: libc's __openat_2/__openat64_2 has type Openat2Fn.
            let Some(real) = libc_fn::<Openat2Fn>(slot, symbol) else {
                return -1;
            };
            // SAFETY: the caller's arguments.
            real(dirfd, path, flags)
        })
    }
}

/// Interposed `__open_2` (fortified open).
///
/// # Safety
/// As open.
#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { open_2_via(&REAL_OPEN_2, c"__open_2", path, flags) }
}

/// Interposed `__open64_2` (fortified open64).
///
/// # Safety
/// As open64.
#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { open_2_via(&REAL_OPEN64_2, c"__open64_2", path, flags) }
}

/// Interposed `__openat_2` (fortified openat).
///
/// # Safety
/// As openat.
#[no_mangle]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { openat_2_via(&REAL_OPENAT_2, c"__openat_2", dirfd, path, flags) }
}

/// Interposed `__openat64_2` (fortified openat64).
///
/// # Safety
/// As openat64.
#[no_mangle]
pub unsafe extern "C" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { openat_2_via(&REAL_OPENAT64_2, c"__openat64_2", dirfd, path, flags) }
}

/// Interposed `write(2)`: a recent file's write goes to the daemon; any other fd costs one
/// relaxed load more than libc's.
///
/// # Safety
/// As write: `buf` valid for `count` bytes.
#[no_mangle]
pub unsafe extern "C" fn write(
    fd: c_int,
    buf: *const c_void,
    count: libc::size_t,
) -> libc::ssize_t {
    let file = if RECENT_FDS.load(Ordering::Relaxed) == 0 {
        None
    } else {
        catch_unwind(|| recent_of(fd)).unwrap_or(None)
    };
    if let Some(file) = file {
        // SAFETY: forwarded contract.
        return or_eio(-1, || unsafe { write_recent(fd, &file, buf, count) });
    }
    // SAFETY: libc's write has type WriteFn.
    let Some(real) = (unsafe { libc_fn::<WriteFn>(&REAL_WRITE, c"write") }) else {
        return -1;
    };
    // SAFETY: forwarding the caller's arguments under the same contract.
    unsafe { real(fd, buf, count) }
}

/// Interposed `close(2)`: a recent file's fd is forgotten (what stdio left in it is sent
/// first).
///
/// # Safety
/// As close.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if RECENT_FDS.load(Ordering::Relaxed) != 0 {
        quietly(|| {
            if let Some(file) = recent_of(fd) {
                file.replay(Some(fd));
            }
            let done = drop_fd(&mut recent_table(), fd);
            finish(done);
        });
    }
    real_close(fd)
}

/// Interposed `dup(2)`: a dup of a recent file's fd is one too.
///
/// # Safety
/// As dup.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: libc's dup has type DupFn.
    let Some(real) = (unsafe { libc_fn::<DupFn>(&REAL_DUP, c"dup") }) else {
        return -1;
    };
    // SAFETY: forwarding the caller's argument.
    let new = unsafe { real(fd) };
    if new >= 0 && RECENT_FDS.load(Ordering::Relaxed) != 0 {
        quietly(|| track_dup(fd, new));
    }
    new
}

/// Common body of dup2/dup3: `new` stops being what it was (a recent file's pending stdio
/// bytes are sent first), then becomes what `old` is. Shells redirect this way.
fn dup2_common(old: c_int, new: c_int, real: impl FnOnce() -> c_int) -> c_int {
    if RECENT_FDS.load(Ordering::Relaxed) == 0 || old == new {
        return real();
    }
    quietly(|| {
        if let Some(file) = recent_of(new) {
            file.replay(Some(new));
        }
        rescue_shadow(new);
    });
    let rc = real();
    if rc >= 0 {
        quietly(|| track_dup(old, rc));
    }
    rc
}

/// A program about to dup2 onto the number of one of our shadows (it may pick any number):
/// the shadow moves to another.
fn rescue_shadow(fd: c_int) {
    let mut table = recent_table();
    if let Some(f) = table.iter_mut().find(|f| f.shadow == fd) {
        if fd_id(fd) == Some(f.id) {
            // SAFETY: F_DUPFD_CLOEXEC of our own fd; dup2 closes the old number.
            let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
            if moved >= 0 {
                f.shadow = moved;
            }
        }
    }
}

/// Interposed `dup2(2)`.
///
/// # Safety
/// As dup2.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    dup2_common(old, new, || {
        // SAFETY: libc's dup2 has type Dup2Fn.
        let Some(real) = (unsafe { libc_fn::<Dup2Fn>(&REAL_DUP2, c"dup2") }) else {
            return -1;
        };
        // SAFETY: forwarding the caller's arguments.
        unsafe { real(old, new) }
    })
}

/// Interposed `dup3(2)`.
///
/// # Safety
/// As dup3.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let call = || {
        // SAFETY: libc's dup3 has type Dup3Fn.
        let Some(real) = (unsafe { libc_fn::<Dup3Fn>(&REAL_DUP3, c"dup3") }) else {
            return -1;
        };
        // SAFETY: forwarding the caller's arguments.
        unsafe { real(old, new, flags) }
    };
    // dup3 refuses old == new (EINVAL) where dup2 does nothing: libc answers that.
    if old == new {
        return call();
    }
    dup2_common(old, new, call)
}

/// fcntl/fcntl64 through `slot`: an F_DUPFD(_CLOEXEC) of a recent file's fd is one too.
///
/// # Safety
/// As fcntl.
unsafe fn fcntl_via(
    slot: &AtomicUsize,
    symbol: &CStr,
    fd: c_int,
    cmd: c_int,
    arg: c_ulong,
) -> c_int {
    // SAFETY: libc's fcntl/fcntl64 has type FcntlFn.
    let Some(real) = (unsafe { libc_fn::<FcntlFn>(slot, symbol) }) else {
        return -1;
    };
    // SAFETY: the caller's arguments; the third goes on as the same register value the caller
    // put there (an int, a pointer, or nothing), read by libc as `cmd` says.
    let rc = unsafe { real(fd, cmd, arg) };
    if rc >= 0
        && matches!(cmd, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC)
        && RECENT_FDS.load(Ordering::Relaxed) != 0
    {
        quietly(|| track_dup(fd, rc));
    }
    rc
}

// fcntl's third argument is variadic too (an int, a pointer, or nothing): declared as the
// 64-bit register or stack slot it occupies on x86_64 and aarch64, and passed on unchanged.

/// Interposed `fcntl(2)`.
///
/// # Safety
/// As fcntl.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { fcntl_via(&REAL_FCNTL, c"fcntl", fd, cmd, arg) }
}

/// Interposed `fcntl64` (what programs built with 64-bit file offsets call).
///
/// # Safety
/// As fcntl.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { fcntl_via(&REAL_FCNTL64, c"fcntl64", fd, cmd, arg) }
}

/// At load: the writable recent files inherited across exec (a shell's redirection before it
/// exec'd this program), found by the names of the memfds in /proc/self/fd.
#[used]
#[link_section = ".init_array"]
static ADOPT_INHERITED: extern "C" fn() = adopt_inherited;

/// At exit: what stdio wrote to recent files (after main returned, coreutils flushes and
/// closes stdout, through libc's internal calls) is sent.
#[used]
#[link_section = ".fini_array"]
static REPLAY_AT_EXIT: extern "C" fn() = replay_at_exit;

extern "C" fn adopt_inherited() {
    quietly(adopt_handed_over);
    quietly(|| {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        // Every link first: the shadows opened below must not be taken for inherited fds.
        let links: Vec<(c_int, std::path::PathBuf)> = dir
            .flatten()
            .filter_map(|e| {
                let fd = e.file_name().to_str()?.parse::<c_int>().ok()?;
                Some((fd, std::fs::read_link(e.path()).ok()?))
            })
            .collect();
        let mut found: Vec<RecentFile> = Vec::new();
        for (fd, link) in links {
            use std::os::unix::ffi::OsStrExt;
            let Some(name) = memfd_list(link.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: F_GETFL takes no argument.
            let access = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
            let Some(id) = fd_id(fd) else {
                continue;
            };
            if access != libc::O_WRONLY && access != libc::O_RDWR {
                continue;
            }
            if let Some(f) = found.iter_mut().find(|f| f.id == id) {
                f.fds.push(fd);
                continue;
            }
            let shadow = if access == libc::O_WRONLY {
                match reopen(fd, libc::O_RDWR | libc::O_CLOEXEC) {
                    Ok(shadow) => high(shadow),
                    Err(_) => continue,
                }
            } else {
                -1
            };
            found.push(RecentFile {
                name: name.to_owned(),
                id,
                fds: vec![fd],
                shadow,
            });
        }
        for f in found {
            track(f);
        }
    });
}

extern "C" fn replay_at_exit() {
    quietly(|| {
        let pending: Vec<Recent> = recent_table()
            .iter()
            .map(|f| Recent {
                name: f.name.clone(),
                id: f.id,
                shadow: f.shadow,
            })
            .collect();
        for file in pending {
            file.replay(None);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optname_ranges() {
        assert!(is_table_get(0, 64) && is_table_get(0, 67) && !is_table_get(0, 68));
        assert!(is_table_get(41, 68) && is_table_get(41, 69) && !is_table_get(41, 70));
        assert!(!is_table_get(0, 63) && !is_table_get(1, 64) && !is_table_get(6, 65));
        assert!(is_table_set(0, 64) && is_table_set(41, 65) && !is_table_set(0, 66));
        assert_eq!(get_input_len(0, 66), REVISION_IN);
        assert_eq!(get_input_len(41, 66), 0);
        assert_eq!(get_input_len(41, 69), REVISION_IN);
    }

    #[test]
    fn recent_paths() {
        for (path, want) in [
            (&b"/proc/net/xt_recent/ssh"[..], Some("ssh")),
            (b"/proc/self/net/xt_recent/DEFAULT", Some("DEFAULT")),
            (b"/proc/thread-self/net/xt_recent/a b", Some("a b")),
            (b"/proc/net/xt_recent/.hidden", Some(".hidden")),
            (b"/proc/net/xt_recent/", None),
            (b"/proc/net/xt_recent/.", None),
            (b"/proc/net/xt_recent/..", None),
            (b"/proc/net/xt_recent/a/b", None),
            (b"/proc/net/xt_recent/ssh/", None),
            (b"/proc/net/xt_recent", None),
            (b"/proc/net/xt_recentx/ssh", None),
            (b"/proc/1/net/xt_recent/ssh", None),
            (b"proc/net/xt_recent/ssh", None),
            (b"/proc/net/xt_recent/\xff", None),
            (b"/proc/net/ip_tables_names", None),
        ] {
            assert_eq!(recent_name(path), want, "{}", String::from_utf8_lossy(path));
        }
        let longest = format!("/proc/net/xt_recent/{}", "n".repeat(MAX_RECENT_NAME));
        assert!(recent_name(longest.as_bytes()).is_some());
        let too_long = format!("/proc/net/xt_recent/{}", "n".repeat(MAX_RECENT_NAME + 1));
        assert_eq!(recent_name(too_long.as_bytes()), None);
    }

    #[test]
    fn recent_c_paths_stop_at_the_nul() {
        // SAFETY: null and NUL-terminated literals.
        unsafe {
            assert_eq!(recent_path(std::ptr::null()), None);
            // Shorter than "/proc/": never read past the NUL.
            assert_eq!(recent_path(c"".as_ptr()), None);
            assert_eq!(recent_path(c"/pro".as_ptr()), None);
            assert_eq!(recent_path(c"/etc/passwd".as_ptr()), None);
            assert_eq!(
                recent_path(c"/proc/net/xt_recent/ssh".as_ptr()),
                Some("ssh")
            );
        }
    }

    #[test]
    fn memfd_links() {
        assert_eq!(
            memfd_list(b"/memfd:bpfilter-xt_recent:ssh (deleted)"),
            Some("ssh")
        );
        assert_eq!(
            memfd_list(b"/memfd:bpfilter-xt_recent:a b (deleted)"),
            Some("a b")
        );
        assert_eq!(memfd_list(b"/memfd:bpfilter-xt_recent: (deleted)"), None);
        assert_eq!(memfd_list(b"/memfd:bpfilter-tables-names (deleted)"), None);
        assert_eq!(memfd_list(b"/memfd:bpfilter-xt_recent:ssh"), None);
        assert_eq!(memfd_list(b"/tmp/bpfilter-xt_recent:ssh (deleted)"), None);
    }

    #[test]
    fn open_mode_is_read_only_when_passed() {
        assert!(!needs_mode(libc::O_RDONLY));
        assert!(!needs_mode(
            libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC
        ));
        assert!(needs_mode(libc::O_WRONLY | libc::O_CREAT));
        assert!(needs_mode(libc::O_RDWR | libc::O_TMPFILE));
        // O_DIRECTORY alone shares a bit with O_TMPFILE but passes no mode.
        assert!(!needs_mode(libc::O_DIRECTORY));
    }

    #[test]
    fn names_files() {
        assert_eq!(names_file(c"/proc/net/ip_tables_names"), Some(Family::Ipv4));
        assert_eq!(
            names_file(c"/proc/net/ip6_tables_names"),
            Some(Family::Ipv6)
        );
        assert_eq!(names_file(c"/proc/net/ip_tables_matches"), None);
    }
}
