//! Fixture capture: the LD_PRELOAD recorder `libxt_capture.so` (see fixtures/README.md).
//!
//! Preloaded into an unmodified `iptables-legacy*` binary, it wraps `setsockopt` and
//! `getsockopt`, passes every call through to the real libc function (found with
//! `dlsym(RTLD_NEXT, ..)`), and for level `IPPROTO_IP` with optnames 64..=67 (the `IPT_SO_*`
//! sockopts), or level `IPPROTO_IPV6` with optnames 64..=69 (ip6tables' `IP6T_SO_*`, whose
//! revision queries are 68 and 69), writes what went in and what came back into the directory named by the
//! environment variable `XT_CAPTURE_DIR`:
//!
//! - `calls.tsv`: one line per call: `seq pid op optname optlen_in ret errno optlen_out prefix`
//!   (`op` is `get` or `set`, `prefix` names the two files below);
//! - `PREFIX.in`: the optval bytes the caller passed (`optlen_in` bytes);
//! - `PREFIX.out`: the optval bytes after the call (gets: `optlen_out` bytes the kernel wrote);
//! - `last-OP-OPTNAME.in` / `.out`: the same for the most recent call of that kind, overwritten
//!   each time, so a capture script can pick "the last SET_REPLACE" without parsing the log.
//!
//! Recording never changes what the caller sees: errors while writing files are ignored, and
//! `errno` is restored to the real call's value before returning.

use std::ffi::c_void;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use libc::{c_char, c_int, socklen_t};

/// Environment variable naming the directory the recorder writes into.
const DIR_ENV: &str = "XT_CAPTURE_DIR";

type SetsockoptFn = unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
type GetsockoptFn = unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int;

static REAL_SET: OnceLock<usize> = OnceLock::new();
static REAL_GET: OnceLock<usize> = OnceLock::new();
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Looks up the next definition of `name` after this library (libc's), as an address.
fn next_symbol(name: &'static [u8]) -> usize {
    // SAFETY: `name` is a NUL-terminated literal; RTLD_NEXT is a valid pseudo-handle for dlsym.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast::<c_char>()) };
    p as usize
}

fn errno() -> c_int {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: as in errno(); writing our own thread's errno is allowed.
    unsafe { *libc::__errno_location() = e }
}

/// True for the calls worth recording: IPT_SO_* at IPPROTO_IP, IP6T_SO_* at IPPROTO_IPV6.
fn interesting(level: c_int, optname: c_int) -> bool {
    // ip6tables: level IPPROTO_IPV6, the same optnames, revision queries at 68 and 69
    (level == libc::IPPROTO_IP && (64..=67).contains(&optname))
        || (level == libc::IPPROTO_IPV6 && (64..=69).contains(&optname))
}

/// Writes one call's record; every error is swallowed (recording must not disturb the caller).
fn record(op: &str, optname: c_int, input: &[u8], ret: c_int, err: c_int, output: Option<&[u8]>) {
    let Some(dir) = std::env::var_os(DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let seq = SEQ.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let prefix = format!("{pid}-{seq:05}-{op}-{optname}");
    let _ = std::fs::write(dir.join(format!("{prefix}.in")), input);
    let _ = std::fs::write(dir.join(format!("last-{op}-{optname}.in")), input);
    if let Some(out) = output {
        let _ = std::fs::write(dir.join(format!("{prefix}.out")), out);
        let _ = std::fs::write(dir.join(format!("last-{op}-{optname}.out")), out);
    }
    let line = format!(
        "{seq}\t{pid}\t{op}\t{optname}\t{}\t{ret}\t{}\t{}\t{prefix}\n",
        input.len(),
        if ret < 0 { err } else { 0 },
        output.map_or(0, <[u8]>::len),
    );
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("calls.tsv"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Copies `len` bytes at `p` (empty for a null pointer).
///
/// # Safety
/// `p` must be null or valid for reads of `len` bytes.
unsafe fn bytes_at(p: *const c_void, len: usize) -> Vec<u8> {
    if p.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `p` is valid for `len` bytes.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec()
}

/// The next definition of `name` (libc's), looked up once into `cell`; None, with errno set to
/// ENOSYS, when there is none.
fn real_symbol(cell: &OnceLock<usize>, name: &'static [u8]) -> Option<usize> {
    let addr = *cell.get_or_init(|| next_symbol(name));
    if addr == 0 {
        set_errno(libc::ENOSYS);
        return None;
    }
    Some(addr)
}

/// The interposed `setsockopt`: passes through, and records IPT_SO_SET_* requests.
///
/// # Safety
/// Same contract as libc's `setsockopt`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: socklen_t,
) -> c_int {
    let Some(addr) = real_symbol(&REAL_SET, b"setsockopt\0") else {
        return -1;
    };
    // SAFETY: `addr` is libc's setsockopt, whose signature is SetsockoptFn.
    let real: SetsockoptFn = unsafe { std::mem::transmute::<usize, SetsockoptFn>(addr) };
    if !interesting(level, optname) {
        // SAFETY: arguments are forwarded unchanged from our caller.
        return unsafe { real(fd, level, optname, optval, optlen) };
    }
    // Copy before the call: the request is what the caller sent, whatever the kernel does.
    // SAFETY: the caller promises optval is valid for optlen bytes (setsockopt's contract).
    let input = unsafe { bytes_at(optval, optlen as usize) };
    // SAFETY: arguments are forwarded unchanged from our caller.
    let ret = unsafe { real(fd, level, optname, optval, optlen) };
    let err = errno();
    record("set", optname, &input, ret, err, None);
    set_errno(err);
    ret
}

/// The interposed `getsockopt`: passes through, and records IPT_SO_GET_* requests and answers.
///
/// # Safety
/// Same contract as libc's `getsockopt`.
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut socklen_t,
) -> c_int {
    let Some(addr) = real_symbol(&REAL_GET, b"getsockopt\0") else {
        return -1;
    };
    // SAFETY: `addr` is libc's getsockopt, whose signature is GetsockoptFn.
    let real: GetsockoptFn = unsafe { std::mem::transmute::<usize, GetsockoptFn>(addr) };
    if !interesting(level, optname) || optlen.is_null() {
        // SAFETY: arguments are forwarded unchanged from our caller.
        return unsafe { real(fd, level, optname, optval, optlen) };
    }
    // SAFETY: optlen is non-null and, by getsockopt's contract, points to a socklen_t.
    let len_in = unsafe { *optlen } as usize;
    // SAFETY: the caller promises optval is valid for *optlen bytes.
    let input = unsafe { bytes_at(optval, len_in) };
    // SAFETY: arguments are forwarded unchanged from our caller.
    let ret = unsafe { real(fd, level, optname, optval, optlen) };
    let err = errno();
    // SAFETY: as above; the kernel never grows *optlen past what the caller gave.
    let len_out = unsafe { *optlen } as usize;
    let output = if ret == 0 {
        // SAFETY: on success the kernel wrote len_out <= len_in bytes into optval.
        Some(unsafe { bytes_at(optval, len_out.min(len_in)) })
    } else {
        None
    };
    record("get", optname, &input, ret, err, output.as_deref());
    set_errno(err);
    ret
}
