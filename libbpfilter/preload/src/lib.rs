//! `libbpfilter.so`: the `LD_PRELOAD` interposer that makes the unmodified iptables-legacy talk
//! to the bpfilter daemon instead of the kernel's ip_tables.
//!
//! What it catches, and nothing else (everything else goes to libc untouched):
//! - `getsockopt` on a raw socket (of the level's family) at level `IPPROTO_IP` (0) with optname 64..=67
//!   (`IPT_SO_GET_INFO`, `_ENTRIES`, `_REVISION_MATCH`, `_REVISION_TARGET`), or at level
//!   `IPPROTO_IPV6` (41) with optname 64..=69 (ip6tables' revisions are 68/69);
//! - `setsockopt` on a raw socket at those levels with optname 64..=65 (`SET_REPLACE`,
//!   `SET_ADD_COUNTERS`; the kernel registers no other set optnames there);
//! - `fopen`/`fopen64` for reading `/proc/net/ip_tables_names` or `ip6_tables_names` (what
//!   `iptables-legacy-save` 1.8.9 reads, through `fopen64(path, "re")`, to find the tables).
//!
//! Only the `filter` table goes to the daemon: a table request naming any other table (nat,
//! mangle, raw, security) goes to the kernel untouched, which serves it in the caller's
//! namespace as it would without bpfilter; a revision query the daemon answers ENOENT (an
//! extension bpfilter does not implement) gets the kernel's answer, for those tables' rules.
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
//! No panic crosses the FFI boundary (`catch_unwind`; a caught panic is `-1`/EIO), no state is
//! kept between calls except resolved libc symbols and the "already warned" flag, so it is
//! thread safe and fork safe.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use libbpfilter::wire::MAX_OPTVAL;
use libbpfilter::{Client, ClientError, Family};

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

static REAL_GETSOCKOPT: AtomicUsize = AtomicUsize::new(0);
static REAL_SETSOCKOPT: AtomicUsize = AtomicUsize::new(0);
static REAL_FOPEN: AtomicUsize = AtomicUsize::new(0);
static REAL_FOPEN64: AtomicUsize = AtomicUsize::new(0);
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

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid to write.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> c_int {
    // SAFETY: as in set_errno; reading this thread's errno.
    unsafe { *libc::__errno_location() }
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

fn family_of_level(level: c_int) -> Option<Family> {
    match level {
        SOL_IP => Some(Family::Ipv4),
        SOL_IPV6 => Some(Family::Ipv6),
        _ => None,
    }
}

fn is_table_get(level: c_int, optname: c_int) -> bool {
    match level {
        SOL_IP => (SO_BASE..=IPT_SO_GET_MAX).contains(&optname),
        SOL_IPV6 => (SO_BASE..=IP6T_SO_GET_MAX).contains(&optname),
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
    let addr = resolve(&REAL_GETSOCKOPT, c"getsockopt");
    if addr == 0 {
        set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: addr is libc's getsockopt, whose type is GetsockoptFn.
    let real: GetsockoptFn = unsafe { std::mem::transmute::<usize, GetsockoptFn>(addr) };
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
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's contract (optval valid for *optlen bytes) is forwarded.
        let ret = unsafe { forward_get(level, optname, optval, optlen) };
        // A revision query for an extension bpfilter does not implement gets the kernel's
        // answer: the kernel's tables (nat, mangle, ...) use it; a filter rule using it is
        // still refused at SET_REPLACE (ENOENT), before anything changes.
        if ret != 0 && errno() == libc::ENOENT && !matches!(optname, SO_GET_INFO | SO_GET_ENTRIES) {
            // SAFETY: forwarding the caller's arguments unchanged under the same contract.
            return unsafe { real(fd, level, optname, optval, optlen) };
        }
        ret
    }))
    .unwrap_or_else(|_| {
        set_errno(libc::EIO);
        -1
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
    let result =
        Client::connect().and_then(|mut c| c.sockopt_get(family, optname as u32, &input, len));
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
    let addr = resolve(&REAL_SETSOCKOPT, c"setsockopt");
    let gaddr = resolve(&REAL_GETSOCKOPT, c"getsockopt");
    if addr == 0 || gaddr == 0 {
        set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: addr is libc's setsockopt, whose type is SetsockoptFn.
    let real: SetsockoptFn = unsafe { std::mem::transmute::<usize, SetsockoptFn>(addr) };
    // SAFETY: gaddr is libc's getsockopt, whose type is GetsockoptFn.
    let real_get: GetsockoptFn = unsafe { std::mem::transmute::<usize, GetsockoptFn>(gaddr) };
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
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's contract is forwarded.
        unsafe { forward_set(level, optname, optval, optlen) }
    }))
    .unwrap_or_else(|_| {
        set_errno(libc::EIO);
        -1
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
    let result = Client::connect().and_then(|mut c| c.sockopt_set(family, optname as u32, &blob));
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
    // SAFETY: memfd_create with a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"bpfilter-tables-names".as_ptr(), flags) };
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
    // SAFETY: fd is our memfd; the mode is a NUL-terminated string.
    let file = unsafe {
        libc::lseek(fd, 0, libc::SEEK_SET);
        libc::fdopen(fd, c"r".as_ptr())
    };
    if file.is_null() {
        let e = errno();
        // SAFETY: fdopen failed, so the fd is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(file)
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
    let addr = resolve(slot, name);
    let table_family = if path.is_null() || mode.is_null() {
        None
    } else {
        // SAFETY: both are non-null NUL-terminated strings by fopen's contract.
        let (p, m) = unsafe { (CStr::from_ptr(path), CStr::from_ptr(mode)) };
        let m = m.to_bytes();
        // Only plain reads are ours; the kernel's file is read-only anyway.
        if m.first() == Some(&b'r') && !m.contains(&b'+') {
            names_file(p).map(|f| (f, m.contains(&b'e')))
        } else {
            None
        }
    };
    let Some((family, cloexec)) = table_family else {
        if addr == 0 {
            set_errno(libc::ENOSYS);
            return std::ptr::null_mut();
        }
        // SAFETY: addr is libc's fopen/fopen64; the caller's arguments are forwarded.
        let real: FopenFn = unsafe { std::mem::transmute::<usize, FopenFn>(addr) };
        // SAFETY: forwarding under fopen's contract.
        return unsafe { real(path, mode) };
    };
    catch_unwind(AssertUnwindSafe(|| {
        let saved = errno();
        match Client::connect().and_then(|mut c| c.table_names(family)) {
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
            Err(e) => {
                fail(&e);
                std::ptr::null_mut()
            }
        }
    }))
    .unwrap_or_else(|_| {
        set_errno(libc::EIO);
        std::ptr::null_mut()
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
    fn names_files() {
        assert_eq!(names_file(c"/proc/net/ip_tables_names"), Some(Family::Ipv4));
        assert_eq!(
            names_file(c"/proc/net/ip6_tables_names"),
            Some(Family::Ipv6)
        );
        assert_eq!(names_file(c"/proc/net/ip_tables_matches"), None);
    }
}
