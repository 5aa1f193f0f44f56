//! Support of the bad-input and privilege tests: a raw-socket sockopt client that the tests run
//! as a child process, either PRELOADED with `libbpfilter.so` (so its requests go to the
//! daemon) or plain (so they go to the kernel's own ip_tables), in a namespace of their choice,
//! under credentials of their choice.
//!
//! The client is the test binary itself, re-executed with [`SCRIPT_ENV`] naming a script: the
//! test function [`client_main`] (registered in each test file as `client_mode`) runs the
//! script and prints one `R` line per operation. Script lines (fields separated by spaces):
//!
//! | line | what |
//! |---|---|
//! | `set OPTNAME OPTLEN MISALIGN RESET PTR FILE` | setsockopt of FILE's bytes, OPTLEN `-` = its length; the buffer is zero-padded to the kernel's fixed header (96 or 40 bytes) as xt-oracle does, and starts MISALIGN bytes past an 8-aligned address. For SET_REPLACE, PTR sets the `counters` pointer: `valid` (a 1 MiB buffer), `garbage` (an unmapped address), `keep`. RESET 1: after an accepted SET_REPLACE, put the 4-entry initial ruleset back |
//! | `get OPTNAME OPTLEN MISALIGN HEX` | getsockopt with HEX as the input part of optval (buffer of max(OPTLEN, input) bytes) |
//! | `getlie OPTNAME OPTLEN HEX` | getsockopt whose OPTLEN claims more than the buffer (HEX only) holds |
//! | `entries NAME DSIZE DOPTLEN` | GET_ENTRIES of NAME with size = filter's size + DSIZE and optlen = 40 + that + DOPTLEN |
//! | `setguard OPTLEN FILE` | SET_REPLACE of FILE (counters pointer valid) ending right before a PROT_NONE page, with OPTLEN possibly past it |
//! | `install FILE` | SET_REPLACE of FILE with num_counters set to filter's current entry count |
//! | `reset` | `install` of the initial 4-entry ruleset |
//! | `wire HEX` | the wire frame HEX sent straight to the daemon (libbpfilter's Client, no raw socket): RET 0 and ERRNO = the reply's errno, or RET -1 and the client error's errno |
//!
//! Output: `R LINE RET ERRNO OPTLEN_AFTER` (ERRNO 0 when RET >= 0).
#![allow(dead_code, clippy::unwrap_used, reason = "test code")]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Environment variable naming the script the re-executed test binary runs.
pub const SCRIPT_ENV: &str = "BPFILTER_HARDENING_SCRIPT";
/// Name of the client test function in every test file that uses this module.
pub const CLIENT_TEST: &str = "client_mode";

const IPT_SO_SET_REPLACE: i32 = 64;
const IPT_SO_SET_ADD_COUNTERS: i32 = 65;
const IPT_SO_GET_INFO: i32 = 64;
const IPT_SO_GET_ENTRIES: i32 = 65;

/// fixtures/ of the workspace.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `libbpfilter.so`, built beside the bpfilter binary.
pub fn preload_lib() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_bpfilter"));
    let lib = bin.with_file_name("libbpfilter.so");
    assert!(
        lib.exists(),
        "{} missing: build it with `cargo build --release -p bpfilter-preload`",
        lib.display()
    );
    lib
}

/// The entry of the re-executed client; a no-op in a normal test run.
pub fn client_main() {
    let Some(script) = std::env::var_os(SCRIPT_ENV) else {
        return;
    };
    let text = std::fs::read_to_string(&script).unwrap();
    let mut c = Client::new();
    let mut out = std::io::stdout().lock();
    // libtest has printed "test client_mode ... " without a newline.
    writeln!(out).unwrap();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (ret, errno, optlen) = c.op(line);
        writeln!(out, "R {n} {ret} {errno} {optlen}").unwrap();
        out.flush().unwrap();
    }
}

/// One operation's outcome as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The syscall's return value.
    pub ret: i32,
    /// errno (0 unless ret < 0).
    pub errno: i32,
    /// `*optlen` after a get (the optlen passed for a set).
    pub optlen: u32,
}

/// Runs `script` (lines as above) with the test binary as the client. `preload`: the daemon's
/// socket (the client is preloaded with libbpfilter.so) or None (it talks to the kernel).
/// `netns`: run under `ip netns exec`. `wrap`: a command prefix (setpriv, capsh, ...).
pub fn run_client(
    script: &str,
    preload: Option<&Path>,
    netns: Option<&str>,
    wrap: &[&str],
) -> (BTreeMap<usize, Seen>, Output) {
    let dir = work_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("script-{}", unique_seq()));
    std::fs::write(&path, script).unwrap();
    // The child may run as another user: let it read the script.
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(&dir)
        .output();
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    argv.extend(wrap.iter().map(|s| s.to_string()));
    argv.push("env".into());
    argv.push(format!("{SCRIPT_ENV}={}", path.display()));
    if let Some(sock) = preload {
        argv.push(format!("LD_PRELOAD={}", preload_lib().display()));
        argv.push(format!("BPFILTER_SOCKET={}", sock.display()));
    }
    argv.push(std::env::current_exe().unwrap().display().to_string());
    argv.extend(["--exact", CLIENT_TEST, "--nocapture", "--test-threads=1"].map(String::from));
    let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    let mut seen = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 5 && f[0] == "R" {
            seen.insert(
                f[1].parse().unwrap(),
                Seen {
                    ret: f[2].parse().unwrap(),
                    errno: f[3].parse().unwrap(),
                    optlen: f[4].parse().unwrap(),
                },
            );
        }
    }
    (seen, out)
}

/// This test's scratch folder (scripts, blobs): per process and per test thread, so that
/// tests running in parallel do not share it.
fn work_dir() -> PathBuf {
    let thread = std::thread::current();
    let name: String = thread
        .name()
        .unwrap_or("main")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join(format!("bpf-hard-{}-{name}", std::process::id()))
}

/// Removes this test's scratch folder (call at the end of a test; a failed test keeps it).
pub fn cleanup() {
    let _ = std::fs::remove_dir_all(work_dir());
}

fn unique_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Lowercase hex of `b` (script encoding of get inputs).
pub fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// A table name field of `n` bytes.
pub fn name_field(name: &[u8], n: usize) -> Vec<u8> {
    let mut v = name.to_vec();
    v.resize(n, 0);
    v
}

/// An 8-aligned buffer holding `bytes` at offset `misalign`.
struct Buf {
    words: Vec<u64>,
    misalign: usize,
    len: usize,
}

impl Buf {
    fn new(bytes: &[u8], len: usize, misalign: usize) -> Buf {
        let total = misalign + len.max(bytes.len());
        let mut b = Buf {
            words: vec![0u64; total.div_ceil(8) + 1],
            misalign,
            len: len.max(bytes.len()),
        };
        b.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
        b
    }
    fn ptr(&mut self) -> *mut u8 {
        // SAFETY: misalign < the allocation size, so the pointer stays inside `words`.
        unsafe { self.words.as_mut_ptr().cast::<u8>().add(self.misalign) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        let (len, p) = (self.len, self.ptr());
        // SAFETY: `words` holds misalign + len bytes from its start; p is misalign in.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }
}

/// The client's raw socket (opened on first use) and its counters buffer.
struct Client {
    fd: Option<i32>,
    counters: Vec<u64>,
}

impl Client {
    fn new() -> Client {
        Client {
            fd: None,
            counters: vec![0; (1 << 20) / 8],
        }
    }

    /// The raw socket, or the errno socket(2) failed with (EPERM without CAP_NET_RAW).
    fn fd(&mut self) -> Result<i32, i32> {
        if let Some(fd) = self.fd {
            return Ok(fd);
        }
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(Self::errno());
        }
        self.fd = Some(fd);
        Ok(fd)
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    fn set(&mut self, optname: i32, buf: &mut Buf, optlen: u32) -> (i32, i32, u32) {
        let fd = match self.fd() {
            Ok(fd) => fd,
            Err(e) => return (-1, e, optlen),
        };
        let p = buf.ptr();
        // SAFETY: p is valid for buf.len >= optlen bytes (or the test deliberately passes a
        // larger optlen; then the kernel or the preload reads past it into our padding word).
        let ret = unsafe { libc::setsockopt(fd, libc::IPPROTO_IP, optname, p.cast(), optlen) };
        (ret, if ret < 0 { Self::errno() } else { 0 }, optlen)
    }

    fn get(&mut self, optname: i32, buf: &mut Buf, optlen: u32) -> (i32, i32, u32) {
        let fd = match self.fd() {
            Ok(fd) => fd,
            Err(e) => return (-1, e, optlen),
        };
        let mut len = optlen as libc::socklen_t;
        let p = buf.ptr();
        // SAFETY: p is valid for max(optlen, input) bytes.
        let ret = unsafe { libc::getsockopt(fd, libc::IPPROTO_IP, optname, p.cast(), &mut len) };
        (ret, if ret < 0 { Self::errno() } else { 0 }, len)
    }

    /// filter's GET_INFO: (num_entries, size), or None.
    fn info(&mut self) -> Option<(u32, u32)> {
        let mut b = Buf::new(&name_field(b"filter", 84), 84, 0);
        let (ret, _, _) = self.get(IPT_SO_GET_INFO, &mut b, 84);
        if ret < 0 {
            return None;
        }
        let bytes = b.bytes_mut();
        let n = u32::from_ne_bytes(bytes[76..80].try_into().unwrap());
        let size = u32::from_ne_bytes(bytes[80..84].try_into().unwrap());
        Some((n, size))
    }

    fn replace(
        &mut self,
        blob: &[u8],
        optlen: u32,
        misalign: usize,
        ptr: &str,
        num: Option<u32>,
    ) -> (i32, i32, u32) {
        // The buffer really holds optlen bytes (zeros after the blob), up to 512 MiB.
        let len = (optlen as usize).min(512 << 20).max(blob.len()).max(96);
        let mut b = Buf::new(blob, len, misalign);
        let bytes = b.bytes_mut();
        if let Some(n) = num {
            bytes[84..88].copy_from_slice(&n.to_ne_bytes());
        }
        let p: u64 = match ptr {
            "valid" => self.counters.as_mut_ptr() as u64,
            // Far from anything mapped, not NULL (NULL is special-cased by some code).
            "garbage" => 0x0000_7ead_dead_0000,
            _ => u64::from_ne_bytes(bytes[88..96].try_into().unwrap()),
        };
        bytes[88..96].copy_from_slice(&p.to_ne_bytes());
        self.set(IPT_SO_SET_REPLACE, &mut b, optlen)
    }

    /// SET_REPLACE of FILE placed so that it ends right before an inaccessible page, with
    /// OPTLEN (`-` = the file's length) possibly larger than what is readable.
    fn set_guarded(&mut self, optlen: &str, path: &str) -> (i32, i32, u32) {
        let mut blob = std::fs::read(path).unwrap();
        let optlen = if optlen == "-" {
            blob.len() as u32
        } else {
            optlen.parse().unwrap()
        };
        let counters = self.counters.as_mut_ptr() as u64;
        blob[88..96].copy_from_slice(&counters.to_ne_bytes());
        let page = 4096;
        let pages = blob.len().div_ceil(page);
        // SAFETY: an anonymous private mapping of (pages + 1) pages; nothing else uses it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (pages + 1) * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        // SAFETY: the last page of our mapping becomes inaccessible; the blob is copied to the
        // end of the pages before it, inside the mapping.
        let start = unsafe {
            assert_eq!(
                libc::mprotect(base.add(pages * page).cast(), page, libc::PROT_NONE),
                0
            );
            let start = base.add(pages * page - blob.len());
            std::ptr::copy_nonoverlapping(blob.as_ptr(), start, blob.len());
            start
        };
        let fd = match self.fd() {
            Ok(fd) => fd,
            Err(e) => return (-1, e, optlen),
        };
        // SAFETY: the kernel (or the preload) may read past the blob: that is the point; the
        // guard page makes such a read fail instead of reading garbage.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                IPT_SO_SET_REPLACE,
                start.cast(),
                optlen,
            )
        };
        (ret, if ret < 0 { Self::errno() } else { 0 }, optlen)
    }

    fn install(&mut self, path: &str) -> (i32, i32, u32) {
        let blob = std::fs::read(path).unwrap();
        let Some((n, _)) = self.info() else {
            return (-1, Self::errno(), 0);
        };
        self.replace(&blob, blob.len() as u32, 0, "valid", Some(n))
    }

    fn reset(&mut self) -> (i32, i32, u32) {
        let empty = fixtures().join("captured/empty/replace.bin");
        self.install(empty.to_str().unwrap())
    }

    fn op(&mut self, line: &str) -> (i32, i32, u32) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "set" => {
                let optname: i32 = f[1].parse().unwrap();
                let misalign: usize = f[3].parse().unwrap();
                let blob = std::fs::read(f[6]).unwrap();
                let optlen = if f[2] == "-" {
                    blob.len() as u32
                } else {
                    f[2].parse().unwrap()
                };
                let r = if optname == IPT_SO_SET_REPLACE {
                    self.replace(&blob, optlen, misalign, f[5], None)
                } else {
                    let mut b = Buf::new(&blob, blob.len().max(40), misalign);
                    self.set(optname, &mut b, optlen)
                };
                if f[4] == "1" && optname == IPT_SO_SET_REPLACE && r.0 == 0 {
                    let again = self.reset();
                    assert_eq!(again.0, 0, "reset after an accepted blob failed: {again:?}");
                }
                r
            }
            "get" => {
                let optname: i32 = f[1].parse().unwrap();
                let optlen: u32 = f[2].parse().unwrap();
                let misalign: usize = f[3].parse().unwrap();
                let input = unhex(f[4]);
                let mut b = Buf::new(&input, optlen as usize, misalign);
                self.get(optname, &mut b, optlen)
            }
            "getlie" => {
                // optlen claims more than the buffer holds (the input only).
                let optname: i32 = f[1].parse().unwrap();
                let optlen: u32 = f[2].parse().unwrap();
                let input = unhex(f[3]);
                let mut b = Buf::new(&input, input.len(), 0);
                self.get(optname, &mut b, optlen)
            }
            "entries" => {
                let Some((_, size)) = self.info() else {
                    return (-1, Self::errno(), 0);
                };
                let dsize: i64 = f[2].parse().unwrap();
                let doptlen: i64 = f[3].parse().unwrap();
                let size = (i64::from(size) + dsize) as u32;
                let optlen = (40 + i64::from(size) + doptlen) as u32;
                let mut hdr = name_field(f[1].as_bytes(), 32);
                hdr.extend_from_slice(&size.to_ne_bytes());
                hdr.resize(40, 0);
                let mut b = Buf::new(&hdr, optlen as usize, 0);
                self.get(IPT_SO_GET_ENTRIES, &mut b, optlen)
            }
            "install" => self.install(f[1]),
            "setguard" => self.set_guarded(f[1], f[2]),
            "wire" => {
                let req = libbpfilter::wire::Request::decode(&unhex(f[1])).unwrap();
                match libbpfilter::Client::connect().and_then(|mut c| c.request(&req)) {
                    Ok(reply) => (0, reply.errno, reply.payload.len() as u32),
                    Err(e) => {
                        eprintln!("wire: {e}");
                        (-1, e.errno(), 0)
                    }
                }
            }
            "reset" => self.reset(),
            other => panic!("unknown client op {other}"),
        }
    }
}

/// An `xt_counters_info` blob: name, count, padding, `counters` zero counters.
pub fn add_counters_blob(name: &[u8], num: u32, counters: usize) -> Vec<u8> {
    let mut v = name_field(name, 32);
    v.extend_from_slice(&num.to_ne_bytes());
    v.extend_from_slice(&[0; 4]);
    v.resize(40 + 16 * counters, 0);
    v
}

/// One kernel-recorded errno expectation of a script line.
#[derive(Debug, Clone)]
pub struct Case {
    /// Human name (fixture or probe name).
    pub name: String,
    /// The script line.
    pub line: String,
    /// The errno the kernel gave (0 = accepted).
    pub errno: i32,
    /// Why bpfilter deliberately answers differently, and what it answers.
    pub differs: Option<(i32, &'static str)>,
    /// No recorded errno: compare with the live kernel only.
    pub live_only: bool,
}

/// Writes `bytes` to a file in the test's temp dir and returns its path (for `set` lines).
pub fn blob_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = work_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.bin"));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// MANIFEST.tsv lines: (name, errno, kind, current_entries, description).
pub fn manifest() -> Vec<(String, i32, String, u32, String)> {
    let text = std::fs::read_to_string(fixtures().join("negative/MANIFEST.tsv"))
        .expect("fixtures/negative/MANIFEST.tsv");
    let v: Vec<_> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[3].to_string(),
                f[4].parse().unwrap(),
                f[5].to_string(),
            )
        })
        .collect();
    assert!(v.len() >= 100, "manifest has only {} lines", v.len());
    v
}

/// The daemon's pid: SO_PEERCRED of a connection to its socket names the listener.
pub fn daemon_pid(socket: &Path) -> i32 {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let s = std::os::unix::net::UnixStream::connect(socket).expect("daemon socket");
    getsockopt(&s, PeerCredentials).unwrap().pid()
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM) or as a count (Threads).
pub fn proc_status(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon is gone");
    let line = s
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
