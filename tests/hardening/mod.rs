//! Support of the bad-input and privilege tests: a raw-socket sockopt client that the tests run
//! as a child process, either PRELOADED with `libbpfilter.so` (so its requests go to the
//! daemon) or plain (so they go to the kernel's own ip_tables), in a namespace of their choice,
//! under credentials of their choice.
//!
//! The client is tools/xt-capture's `xt-client` ([`client_bin`]), given a script: it prints one
//! `R` line per operation. Script lines (fields separated by spaces):
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
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The client program (tools/xt-capture's `xt-client`), built beside the bpfilter binary.
pub fn client_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_bpfilter")).with_file_name("xt-client");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build --release -p xt-capture`",
        bin.display()
    );
    bin
}

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

/// Runs `script` (lines as above) with `xt-client`. `preload`: the daemon's
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
    if let Some(sock) = preload {
        argv.push(format!("LD_PRELOAD={}", preload_lib().display()));
        argv.push(format!("BPFILTER_SOCKET={}", sock.display()));
    }
    argv.push(client_bin().display().to_string());
    argv.push(path.display().to_string());
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

/// A table name field of `n` bytes.
pub fn name_field(name: &[u8], n: usize) -> Vec<u8> {
    let mut v = name.to_vec();
    v.resize(n, 0);
    v
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
