//! End-to-end tests of `libbpfilter.so`: a fake daemon (a thread answering canned replies over
//! the real wire protocol) and real processes run under `LD_PRELOAD`: a small C client
//! (`probe.c`) and the unmodified `iptables-legacy`, `iptables-legacy-save`.
//!
//! The last test is privileged (root, `ip netns`): it captures the real kernel's GET_INFO /
//! GET_ENTRIES answers in a scratch network namespace and checks that iptables run through the
//! preload against the fake daemon prints exactly what it prints against the kernel. Without
//! root it skips, unless CI=true, where it fails.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use libbpfilter::wire::{self, Family, Reply, Request, Sockopt, SockoptOp, WireError};
use test_support::netns::Netns;

struct TestEnv {
    so: PathBuf,
    probe: PathBuf,
    tmp: PathBuf,
}

/// Builds libbpfilter.so (cargo does not build a cdylib for integration tests) and the probe.
fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args([
                "build",
                "--quiet",
                "-p",
                "bpfilter-preload",
                "--manifest-path",
            ])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let st = cargo.status().expect("run cargo build");
        assert!(st.success(), "cargo build -p bpfilter-preload failed");
        let so = profile_dir.join("libbpfilter.so");
        assert!(so.exists(), "{} missing", so.display());

        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("preload");
        fs::create_dir_all(&tmp).expect("mkdir tmp");
        let probe = tmp.join("probe");
        let out = Command::new("cc")
            .args(["-O1", "-Wall", "-Werror", "-pthread", "-o"])
            .arg(&probe)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/probe.c"))
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestEnv { so, probe, tmp }
    })
}

/// One request as the fake daemon saw it, with the (dev, inode) of the netns fd it carried.
#[derive(Debug, Clone)]
struct Seen {
    req: Request,
    netns: Option<(u64, u64)>,
}

type Responder = dyn Fn(&Request) -> Reply + Send + Sync;

struct FakeDaemon {
    path: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A socket path `TAG-PID.sock` in the scratch folder, with nothing at it.
fn socket_path(tag: &str) -> PathBuf {
    let path = env().tmp.join(format!("{tag}-{}.sock", std::process::id()));
    let _ = fs::remove_file(&path);
    path
}

impl FakeDaemon {
    fn start(tag: &str, responder: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let path = socket_path(tag);
        let listener = UnixListener::bind(&path).expect("bind fake daemon");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let responder: Arc<Responder> = Arc::new(responder);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                // Each connection on its own thread, as the daemon serves them: a process
                // keeps its connection open between calls.
                let (responder, seen) = (responder.clone(), seen2.clone());
                std::thread::spawn(move || serve(&conn, &*responder, &seen));
            }
        });
        FakeDaemon {
            path,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn serve(conn: &UnixStream, responder: &Responder, seen: &Mutex<Vec<Seen>>) {
    loop {
        match wire::read_request(conn) {
            Ok((req, fd)) => {
                let netns = fd.map(|fd| {
                    let m = fs::File::from(fd).metadata().expect("fstat netns fd");
                    (m.dev(), m.ino())
                });
                let reply = responder(&req);
                seen.lock().expect("lock").push(Seen { req, netns });
                if wire::write_reply(conn, &reply).is_err() {
                    return;
                }
            }
            Err(WireError::Closed) => return,
            Err(e) => panic!("fake daemon got a bad frame: {e}"),
        }
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = UnixStream::connect(&self.path); // wakes accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Runs the probe under the preload; returns its key=value lines and its stderr.
/// How long the probe waits for an absent daemon (the default, 5 s, would only slow tests).
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

fn probe(socket: &Path, args: &[&str]) -> (Vec<(String, String)>, String) {
    let e = env();
    let out = Command::new(&e.probe)
        .args(args)
        .env("LD_PRELOAD", &e.so)
        .env("BPFILTER_SOCKET", socket)
        .env(
            "BPFILTER_CONNECT_WAIT",
            CONNECT_WAIT.as_secs_f64().to_string(),
        )
        .output()
        .expect("run probe");
    assert!(out.status.success(), "probe {args:?}: {out:?}");
    let kv = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (kv, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> &'a str {
    kv.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| {
            panic!("no {key} in {kv:?}");
        })
}

fn all<'a>(kv: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    kv.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn my_netns() -> (u64, u64) {
    let m = fs::metadata("/proc/self/ns/net").expect("stat netns");
    (m.dev(), m.ino())
}

fn name32(s: &str) -> Vec<u8> {
    let mut v = vec![0u8; 32];
    v[..s.len()].copy_from_slice(s.as_bytes());
    v
}

/// The bytes before the first NUL.
fn cstr(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

fn sockopt(req: &Request) -> Option<&Sockopt> {
    match req {
        Request::Sockopt(s) => Some(s),
        _ => None,
    }
}

#[test]
fn get_info_is_forwarded_and_answered() {
    let info: Vec<u8> = (0..84u8).collect();
    let canned = info.clone();
    let d = FakeDaemon::start("info", move |req| match sockopt(req) {
        Some(s) if s.optname == 64 && s.payload[..6] == *b"filter" => Reply::ok(canned.clone()),
        _ => Reply::error(libc::ENOENT),
    });
    let (kv, stderr) = probe(&d.path, &["info", "filter"]);
    assert_eq!(get(&kv, "rc"), "0");
    assert_eq!(get(&kv, "optlen"), "84");
    assert_eq!(get(&kv, "optval"), hex(&info));
    assert_eq!(stderr, "");
    let seen = d.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].req,
        Request::Sockopt(Sockopt {
            family: Family::Ipv4,
            op: SockoptOp::Get,
            optname: 64,
            optlen: 84,
            payload: name32("filter"),
        })
    );
    assert_eq!(
        seen[0].netns,
        Some(my_netns()),
        "the caller's netns fd travels with the request"
    );
}

#[test]
fn concurrent_threads_each_get_their_answer() {
    let d = FakeDaemon::start("threads", |_| Reply::ok((0..84u8).collect()));
    let (kv, stderr) = probe(&d.path, &["threads"]);
    assert_eq!(get(&kv, "ok"), "200", "{stderr}");
    assert_eq!(d.seen().len(), 200);
}

#[test]
fn daemon_errno_reaches_the_caller() {
    let d = FakeDaemon::start("errno", |_| Reply::error(libc::ENOENT));
    let (kv, stderr) = probe(&d.path, &["info", "nosuch"]);
    assert_eq!(get(&kv, "rc"), "-1");
    assert_eq!(get(&kv, "errno"), libc::ENOENT.to_string());
    // optval untouched on error: still the name and zeros.
    let mut expect = name32("nosuch");
    expect.resize(84, 0);
    assert_eq!(get(&kv, "optval"), hex(&expect));
    assert_eq!(
        stderr, "",
        "a daemon errno is not a transport failure: no message"
    );
}

#[test]
fn get_entries_sends_header_and_copies_back() {
    let answer: Vec<u8> = (0..48u8).map(|i| i ^ 0x5a).collect();
    let canned = answer.clone();
    let d = FakeDaemon::start("entries", move |req| match sockopt(req) {
        Some(s) if s.optname == 65 && s.optlen == 48 => Reply::ok(canned.clone()),
        _ => Reply::error(libc::EINVAL),
    });
    let (kv, _) = probe(&d.path, &["entries", "filter", "8"]);
    assert_eq!(get(&kv, "rc"), "0");
    assert_eq!(get(&kv, "optlen"), "48");
    assert_eq!(get(&kv, "optval"), hex(&answer));
    let seen = d.seen();
    let s = sockopt(&seen[0].req).expect("sockopt");
    // Only the 40-byte ipt_get_entries header is input.
    assert_eq!(s.payload.len(), 40);
    assert_eq!(&s.payload[..6], b"filter");
    assert_eq!(&s.payload[32..36], &8u32.to_ne_bytes());
}

#[test]
fn revision_queries_leave_optval_untouched() {
    let d = FakeDaemon::start("rev", |req| match sockopt(req) {
        Some(s) if s.optname == 66 && s.payload[..3] == *b"tcp" && s.payload[29] == 0 => {
            Reply::ok(vec![])
        }
        Some(s) if s.optname == 66 && s.payload[..3] == *b"tcp" => {
            Reply::error(libc::EPROTONOSUPPORT)
        }
        _ => Reply::error(libc::ENOENT),
    });
    let (kv, _) = probe(&d.path, &["rev", "tcp", "0"]);
    assert_eq!(
        (get(&kv, "rc"), get(&kv, "optlen"), get(&kv, "untouched")),
        ("0", "30", "1")
    );
    let (kv, _) = probe(&d.path, &["rev", "tcp", "3"]);
    assert_eq!(get(&kv, "errno"), libc::EPROTONOSUPPORT.to_string());
    let (kv, _) = probe(&d.path, &["rev", "nosuch", "0"]);
    assert_eq!(get(&kv, "errno"), libc::ENOENT.to_string());
    for s in d.seen() {
        assert_eq!(sockopt(&s.req).expect("sockopt").payload.len(), 30);
    }
}

/// The daemon returns `extra` more counters than asked: only num_counters * 16 bytes may land.
fn counters_pattern(n: usize) -> Vec<u8> {
    (0..n * 16).map(|i| (i % 251) as u8).collect()
}

#[test]
fn set_replace_writes_old_counters_within_bounds() {
    let d = FakeDaemon::start("replace", |req| match sockopt(req) {
        // More than asked for: the interposer must stop at num_counters * 16.
        Some(s) if s.op == SockoptOp::Set && s.optname == 64 => Reply::ok(counters_pattern(5)),
        _ => Reply::error(libc::EINVAL),
    });
    let (kv, stderr) = probe(&d.path, &["replace", "3"]);
    assert_eq!(get(&kv, "rc"), "0", "{stderr}");
    let mut expect = counters_pattern(3);
    expect.extend_from_slice(&[0xaa; 32]);
    assert_eq!(get(&kv, "counters"), hex(&expect));
    let seen = d.seen();
    let s = sockopt(&seen[0].req).expect("sockopt");
    assert_eq!(
        (s.optlen, s.payload.len()),
        (112, 112),
        "the whole blob is sent"
    );
    assert_eq!(&s.payload[84..88], &3u32.to_ne_bytes());
    assert_eq!(&s.payload[96..], &[0x11; 16]);
}

#[test]
fn set_replace_short_reply_and_error() {
    let d = FakeDaemon::start("replace-short", |_| Reply::ok(counters_pattern(1)));
    let (kv, _) = probe(&d.path, &["replace", "3"]);
    assert_eq!(get(&kv, "rc"), "0");
    let mut expect = counters_pattern(1);
    expect.extend_from_slice(&[0xaa; 64]);
    assert_eq!(get(&kv, "counters"), hex(&expect));

    let d = FakeDaemon::start("replace-eagain", |_| Reply::error(libc::EAGAIN));
    let (kv, _) = probe(&d.path, &["replace", "2"]);
    assert_eq!(get(&kv, "rc"), "-1");
    assert_eq!(get(&kv, "errno"), libc::EAGAIN.to_string());
    assert_eq!(
        get(&kv, "counters"),
        hex(&[0xaa; 64]),
        "nothing written on error"
    );
}

#[test]
fn other_sockopts_go_to_libc() {
    let d = FakeDaemon::start("other", |_| Reply::error(libc::EBADMSG));
    let (kv, stderr) = probe(&d.path, &["other"]);
    assert_eq!(get(&kv, "rcvbuf_rc"), "0,0");
    // The kernel doubles SO_RCVBUF: proof that libc and the kernel handled it.
    assert_eq!(get(&kv, "rcvbuf"), "131072");
    assert_eq!((get(&kv, "ttl_rc"), get(&kv, "ttl")), ("0", "64"));
    // IPT_SO_GET_INFO on a UDP socket is the kernel's business (unknown table: ENOENT).
    assert_eq!(get(&kv, "udp_info_rc"), "-1");
    assert_eq!(get(&kv, "udp_info_errno"), libc::ENOENT.to_string());
    assert_eq!(get(&kv, "v6_on_v4_rc"), "-1");
    // The kernel's own answer for a SOL_IPV6 option on an IPv4 raw socket (not the daemon's
    // EBADMSG).
    assert_eq!(get(&kv, "v6_on_v4_errno"), libc::EOPNOTSUPP.to_string());
    assert!(
        d.seen().is_empty(),
        "nothing reached the daemon: {:?}",
        d.seen()
    );
    assert_eq!(stderr, "");
}

#[test]
fn table_names_files_come_from_the_daemon() {
    let d = FakeDaemon::start("names", |req| match req {
        Request::TableNames {
            family: Family::Ipv4,
        } => Reply::ok(wire::table_names_payload(&["filter", "raw"])),
        Request::TableNames {
            family: Family::Ipv6,
        } => Reply::ok(wire::table_names_payload(&["filter"])),
        _ => Reply::error(libc::EINVAL),
    });
    let (kv, _) = probe(&d.path, &["names4"]);
    assert_eq!(all(&kv, "name"), ["filter", "raw"]);
    assert_eq!(all(&kv, "name64"), ["filter", "raw"]);
    let (kv, _) = probe(&d.path, &["names6"]);
    assert_eq!(all(&kv, "name"), ["filter"]);
    assert_eq!(all(&kv, "name64"), ["filter"]);
    let seen = d.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.netns == Some(my_netns())));
}

#[test]
fn daemon_down_gives_one_line_and_an_errno() {
    let missing = socket_path("absent");
    let started = std::time::Instant::now();
    let (kv, stderr) = probe(&missing, &["info", "filter"]);
    // The client waited for a daemon that might be starting, then gave up.
    assert!(started.elapsed() >= CONNECT_WAIT, "{:?}", started.elapsed());
    assert_eq!(get(&kv, "rc"), "-1");
    assert_eq!(get(&kv, "errno"), libc::ECONNREFUSED.to_string());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("bpfilter: cannot reach the bpfilter daemon at "),
        "{stderr}"
    );
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    // Two failing fopens in one process: still one line, and one wait.
    let started = std::time::Instant::now();
    let (kv, stderr) = probe(&missing, &["names4"]);
    assert!(
        started.elapsed() < CONNECT_WAIT * 2,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(get(&kv, "fopen_errno"), libc::ECONNREFUSED.to_string());
    assert_eq!(get(&kv, "fopen64_errno"), libc::ECONNREFUSED.to_string());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn daemon_hanging_up_is_a_one_line_error() {
    // A "daemon" that reads the request and closes without answering.
    let path = socket_path("hangup");
    let listener = UnixListener::bind(&path).expect("bind");
    let t = std::thread::spawn(move || {
        for _ in 0..2 {
            let (c, _) = listener.accept().expect("accept");
            let _ = wire::read_request(&c);
        }
    });
    let (kv, stderr) = probe(&path, &["info", "filter"]);
    assert_eq!(get(&kv, "rc"), "-1");
    assert_eq!(get(&kv, "errno"), libc::ECONNRESET.to_string());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    let (kv, _) = probe(&path, &["replace", "2"]);
    assert_eq!(get(&kv, "errno"), libc::ECONNRESET.to_string());
    assert_eq!(get(&kv, "counters"), hex(&[0xaa; 64]));
    t.join().expect("join");
    let _ = fs::remove_file(&path);
}

// ---- privileged: the real iptables-legacy against canned kernel answers -------------------

/// True if we may run the privileged test (root, iptables-legacy, ip): the one gate, a failure
/// under CI=true.
fn privileged() -> bool {
    use test_support::gate::{missing_tools, not_root, ready};
    ready(not_root().or_else(|| missing_tools(&["iptables-legacy", "ip"])))
}

/// A scratch namespace for one privileged test.
fn scratch_netns(tag: &str) -> Netns {
    Netns::named(format!("bpfl-client-{tag}-{}", std::process::id()))
}

/// The host kernel's answer to a revision query (same kernel, same extensions).
fn kernel_revision(family: Family, optname: u32, payload: &[u8]) -> Reply {
    let (af, level) = match family {
        Family::Ipv4 => (libc::AF_INET, libc::IPPROTO_IP),
        Family::Ipv6 => (libc::AF_INET6, libc::IPPROTO_IPV6),
    };
    let mut buf = [0u8; 30];
    let n = payload.len().min(30);
    buf[..n].copy_from_slice(&payload[..n]);
    let mut len = payload.len() as libc::socklen_t;
    // SAFETY: plain socket/getsockopt/close on our own fd and our own 30-byte buffer; this test
    // binary is not preloaded, so these go to the kernel.
    unsafe {
        let fd = libc::socket(af, libc::SOCK_RAW, libc::IPPROTO_RAW);
        assert!(fd >= 0, "raw socket");
        let rc = libc::getsockopt(fd, level, optname as i32, buf.as_mut_ptr().cast(), &mut len);
        let errno = if rc < 0 { *libc::__errno_location() } else { 0 };
        libc::close(fd);
        Reply {
            errno,
            payload: vec![],
        }
    }
}

fn strip_comments(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// One family's binaries, ruleset and sockopt numbers.
struct FamilyCase {
    family: Family,
    iptables: &'static str,
    save: &'static str,
    capture: &'static str,
    revisions: [u32; 2],
    rules: &'static [&'static str],
    new_rule: &'static str,
}

const IPV4: FamilyCase = FamilyCase {
    family: Family::Ipv4,
    iptables: "iptables-legacy",
    save: "iptables-legacy-save",
    capture: "capture",
    revisions: [66, 67],
    // A user chain, matches with payloads, an interface wildcard, a policy.
    rules: &[
        "-N BLOCK",
        "-A BLOCK -j DROP",
        "-A INPUT -p tcp --dport 22 -j ACCEPT",
        "-A INPUT -s 10.0.0.0/8 -m comment --comment ten -j BLOCK",
        "-A INPUT -p udp -m multiport --dports 53,123 -j ACCEPT",
        "-A OUTPUT -o eth+ -p icmp --icmp-type 8 -j DROP",
        "-P FORWARD DROP",
    ],
    new_rule: "-A INPUT -p icmp -j ACCEPT",
};

const IPV6: FamilyCase = FamilyCase {
    family: Family::Ipv6,
    iptables: "ip6tables-legacy",
    save: "ip6tables-legacy-save",
    capture: "capture6",
    revisions: [68, 69],
    rules: &[
        "-N BLOCK",
        "-A BLOCK -j DROP",
        "-A INPUT -p tcp --dport 22 -j ACCEPT",
        "-A INPUT -s 2001:db8::/32 -m comment --comment doc -j BLOCK",
        "-A INPUT -p udp -m multiport --dports 53,123 -j ACCEPT",
        "-A OUTPUT -o eth+ -p ipv6-icmp --icmpv6-type 128 -j DROP",
        "-P FORWARD DROP",
    ],
    new_rule: "-A INPUT -p ipv6-icmp -j ACCEPT",
};

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// Captures the kernel's answers for `case.rules` in a scratch netns, then checks that the
/// unmodified iptables binaries, preloaded, print exactly the same against a fake daemon that
/// replays those answers, and that a write goes through the kernel's sockopt sequence.
fn real_iptables_through_the_preload(case: &FamilyCase) {
    let e = env();
    let ns = scratch_netns(case.capture);
    for rule in case.rules {
        ns.ok(case.iptables, &words(rule));
    }
    let cap = e
        .tmp
        .join(format!("{}-{}", case.capture, std::process::id()));
    fs::create_dir_all(&cap).expect("mkdir");
    let probe = e.probe.to_str().expect("utf8");
    ns.ok(
        probe,
        &[case.capture, "filter", cap.to_str().expect("utf8")],
    );
    let info = fs::read(cap.join("info.bin")).expect("info.bin");
    let entries = fs::read(cap.join("entries.bin")).expect("entries.bin");
    assert_eq!(info.len(), 84);
    let num_entries = u32::from_ne_bytes(info[76..80].try_into().expect("4 bytes"));
    let list_args = ["-L", "-n", "-v", "-x", "--line-numbers"];
    let kernel_list = ns.ok(case.iptables, &list_args);
    let kernel_rules = ns.ok(case.iptables, &["-S"]);
    let kernel_save = strip_comments(&ns.ok(case.save, &["-c"]));
    assert!(kernel_list.contains("BLOCK"), "{kernel_list}");

    // Old counters the fake daemon hands back on SET_REPLACE: entry i -> (1000 + i, 100000 + i).
    let old_counters = |n: u32| -> Vec<u8> {
        (0..u64::from(n))
            .flat_map(|i| [(1000 + i).to_ne_bytes(), (100_000 + i).to_ne_bytes()].concat())
            .collect()
    };
    let (info2, entries2, family, revisions) =
        (info.clone(), entries.clone(), case.family, case.revisions);
    let d = FakeDaemon::start(case.capture, move |req| match req {
        Request::Sockopt(s) if s.family != family => Reply::error(libc::EAFNOSUPPORT),
        Request::Sockopt(s) => match (s.op, s.optname) {
            // libiptc strcpy()s the name into an uninitialized struct: compare up to the NUL,
            // as the kernel does.
            (SockoptOp::Get, 64) if cstr(&s.payload) == b"filter" => Reply::ok(info2.clone()),
            (SockoptOp::Get, 64) => Reply::error(libc::ENOENT),
            (SockoptOp::Get, 65) if s.optlen as usize == entries2.len() => {
                Reply::ok(entries2.clone())
            }
            (SockoptOp::Get, 65) => Reply::error(libc::EINVAL),
            (SockoptOp::Get, n) if revisions.contains(&n) => {
                kernel_revision(s.family, s.optname, &s.payload)
            }
            (SockoptOp::Set, 64) => {
                let n = u32::from_ne_bytes(s.payload[84..88].try_into().expect("4 bytes"));
                Reply::ok(old_counters(n))
            }
            (SockoptOp::Set, 65) => Reply::ok(vec![]),
            _ => Reply::error(libc::EINVAL),
        },
        Request::TableNames { family: f } if *f == family => {
            Reply::ok(wire::table_names_payload(&["filter"]))
        }
        Request::TableNames { .. } => Reply::ok(vec![]),
        _ => Reply::error(libc::EINVAL),
    });
    let preload: [(&str, &Path); 2] = [("LD_PRELOAD", &e.so), ("BPFILTER_SOCKET", &d.path)];
    let run = |cmd: &str, args: &[&str]| -> String {
        let out = ns.exec(&preload, cmd, args);
        assert!(out.status.success(), "preloaded {cmd} {args:?}: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // The kernel's table lives on only in the fake daemon: flush it, so that a preload that
    // leaked a sockopt to the kernel would print an empty table and fail the comparison.
    for rule in ["-F", "-X", "-P FORWARD ACCEPT"] {
        ns.ok(case.iptables, &words(rule));
    }
    assert_ne!(ns.ok(case.iptables, &list_args), kernel_list);

    assert_eq!(run(case.iptables, &list_args), kernel_list);
    assert_eq!(run(case.iptables, &["-S"]), kernel_rules);
    // Without -t, save finds the tables through /proc/net/ip{,6}_tables_names (fopen64).
    assert_eq!(strip_comments(&run(case.save, &["-c"])), kernel_save);

    let seen = d.seen();
    let ops: HashSet<(SockoptOp, u32)> = seen
        .iter()
        .filter_map(|s| sockopt(&s.req))
        .map(|s| (s.op, s.optname))
        .collect();
    assert!(ops.contains(&(SockoptOp::Get, 64)) && ops.contains(&(SockoptOp::Get, 65)));
    assert!(seen
        .iter()
        .filter_map(|s| sockopt(&s.req))
        .all(|s| s.family == family));
    assert!(seen.iter().any(|s| s.req == Request::TableNames { family }));
    assert!(
        seen.iter().all(|s| s.netns == Some(ns.inode())),
        "every request carries the caller's namespace (the scratch one, not ours)"
    );

    // A write: GET_INFO, GET_ENTRIES, SET_REPLACE (old counters land in iptables' memory),
    // SET_ADD_COUNTERS (libiptc adds back the counters it got from SET_REPLACE).
    let before = d.seen().len();
    run(case.iptables, &words(case.new_rule));
    let seen = d.seen();
    let sequence: Vec<(SockoptOp, u32)> = seen[before..]
        .iter()
        .filter_map(|s| sockopt(&s.req))
        .filter(|s| !(s.op == SockoptOp::Get && revisions.contains(&s.optname)))
        .map(|s| (s.op, s.optname))
        .collect();
    use SockoptOp::{Get, Set};
    assert_eq!(
        sequence,
        [(Get, 64), (Get, 65), (Set, 64), (Set, 65)],
        "the kernel's sequence"
    );
    let writes: Vec<&Sockopt> = seen[before..]
        .iter()
        .filter_map(|s| sockopt(&s.req))
        .filter(|s| s.op == SockoptOp::Set)
        .collect();
    let (replace, add) = (writes[0], writes[1]);
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4"));
    assert_eq!(
        u32_at(&replace.payload, 84),
        num_entries,
        "num_counters = current entries"
    );
    assert_eq!(
        u32_at(&replace.payload, 36),
        num_entries + 1,
        "one entry more"
    );
    assert_eq!(&add.payload[..7], b"filter\0");
    let returned: HashSet<[u8; 16]> = old_counters(num_entries)
        .chunks(16)
        .map(|c| c.try_into().expect("16"))
        .collect();
    let added: Vec<[u8; 16]> = add.payload[40..]
        .chunks(16)
        .map(|c| c.try_into().expect("16"))
        .collect();
    assert_eq!(added.len() as u32, u32_at(&add.payload, 32));
    let nonzero: Vec<&[u8; 16]> = added.iter().filter(|c| **c != [0; 16]).collect();
    assert!(
        !nonzero.is_empty(),
        "libiptc saw the old counters we returned"
    );
    assert!(
        nonzero.iter().all(|c| returned.contains(*c)),
        "every counter iptables adds back is one the daemon returned through SET_REPLACE"
    );
    let _ = fs::remove_dir_all(&cap);
}

#[test]
fn real_iptables_legacy_through_the_preload() {
    if privileged() {
        real_iptables_through_the_preload(&IPV4);
    }
}

#[test]
fn real_ip6tables_legacy_through_the_preload() {
    if privileged() {
        real_iptables_through_the_preload(&IPV6);
    }
}

// ---- /proc/net/xt_recent/NAME --------------------------------------------------------------

/// What the fake daemon's list "ssh" reads as.
const SSH_LIST: &[u8] = b"src=10.0.0.1 ttl: 64 last_seen: 4295000000 oldest_pkt: 1 4295000000\n";

/// A daemon with one list, "ssh": `+`, `-` and `/` writes succeed with their length, anything
/// else is EINVAL; any other list is ENOENT (not bpfilter's).
fn recent_daemon(tag: &str) -> FakeDaemon {
    FakeDaemon::start(tag, |req| match req {
        Request::RecentRead { name } if name == "ssh" => Reply::ok(SSH_LIST.to_vec()),
        Request::RecentWrite { name, data } if name == "ssh" => match data.first() {
            Some(b'+' | b'-' | b'/') => Reply::ok(wire::recent_write_payload(data.len())),
            _ => Reply::error(libc::EINVAL),
        },
        _ => Reply::error(libc::ENOENT),
    })
}

/// The writes the daemon received, as text.
fn recent_writes(d: &FakeDaemon) -> Vec<String> {
    d.seen()
        .into_iter()
        .filter_map(|s| match s.req {
            Request::RecentWrite { name, data } => {
                Some(format!("{name}:{}", String::from_utf8_lossy(&data)))
            }
            _ => None,
        })
        .collect()
}

/// Runs `cmd args` under the preload, talking to `socket`.
fn preloaded(socket: &Path, cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("LD_PRELOAD", &env().so)
        .env("BPFILTER_SOCKET", socket)
        .env(
            "BPFILTER_CONNECT_WAIT",
            CONNECT_WAIT.as_secs_f64().to_string(),
        )
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

/// Syscall-level uses of a recent file, through perl's POSIX module (open64, read, write,
/// lseek, close: libc's own symbols), one `key=value` per line; an error prints `eERRNO`.
const RECENT_SCRIPT: &str = r#"
use POSIX;
use strict;
sub r { my $v = shift; defined $v ? $v + 0 : "e" . ($! + 0) }
my $p = "/proc/net/xt_recent/ssh";
my $fd = POSIX::open($p, O_RDONLY);
my $n = POSIX::read($fd, my $text, 4096);
print "text=$text";
print "ro_write=", r(POSIX::write($fd, "+1.2.3.4\n", 9)), "\n";
POSIX::close($fd);
# What a shell's `>` does: O_TRUNC empties nothing.
$fd = POSIX::open($p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
print "add=", r(POSIX::write($fd, "+10.0.0.2\n", 10)), "\n";
print "again=", r(POSIX::write($fd, "+10.0.0.3\n", 10)), "\n";
POSIX::close($fd);
$fd = POSIX::open("/proc/self/net/xt_recent/ssh", O_WRONLY);
print "flush=", r(POSIX::write($fd, "/", 1)), "\n";
print "flush_again=", r(POSIX::write($fd, "/", 1)), "\n";
print "empty=", r(POSIX::write($fd, "", 0)), "\n";
print "bad=", r(POSIX::write($fd, "x10.0.0.4", 9)), "\n";
print "long=", r(POSIX::write($fd, "-" . ("9" x 99), 100)), "\n";
POSIX::close($fd);
# A dup shares the open file, and its offset.
$fd = POSIX::open("/proc/thread-self/net/xt_recent/ssh", O_WRONLY);
my $dup = POSIX::dup2($fd, 9);
POSIX::close($fd);
print "dup=", r(POSIX::write($dup, "-10.0.0.2", 9)), "\n";
print "dup_again=", r(POSIX::write($dup, "-10.0.0.2", 9)), "\n";
POSIX::close($dup);
# O_RDWR: reading moves the offset, as the kernel's seq_file does.
$fd = POSIX::open($p, O_RDWR);
POSIX::read($fd, my $t, 5);
print "after_read=", r(POSIX::write($fd, "+10.0.0.5", 9)), "\n";
POSIX::lseek($fd, 0, SEEK_SET);
print "after_seek=", r(POSIX::write($fd, "+10.0.0.5", 9)), "\n";
POSIX::close($fd);
print "excl=", r(POSIX::open($p, O_WRONLY | O_CREAT | O_EXCL, 0644)), "\n";
print "dir=", r(POSIX::open($p, O_RDONLY | $ARGV[0])), "\n";
print "nosuch=", r(POSIX::open("/proc/net/xt_recent/nosuch", O_RDONLY)), "\n";
"#;

#[test]
fn recent_files_are_the_daemons() {
    let d = recent_daemon("recent");
    // POSIX.pm has no O_DIRECTORY.
    let o_directory = libc::O_DIRECTORY.to_string();
    let out = preloaded(&d.path, "perl", &["-e", RECENT_SCRIPT, &o_directory]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let kv: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let e = |errno: i32| format!("e{errno}");
    assert_eq!(
        get(&kv, "text"),
        String::from_utf8_lossy(SSH_LIST).trim_end()
    );
    assert_eq!(get(&kv, "ro_write"), e(libc::EBADF));
    assert_eq!(get(&kv, "add"), "10");
    // The kernel moved the offset past "+addr": a second write on the same open file.
    assert_eq!(get(&kv, "again"), e(libc::ESPIPE));
    // "/" leaves the offset alone.
    assert_eq!((get(&kv, "flush"), get(&kv, "flush_again")), ("1", "1"));
    assert_eq!(get(&kv, "empty"), "0");
    assert_eq!(get(&kv, "bad"), e(libc::EINVAL));
    // Only the first 40 bytes count.
    assert_eq!(get(&kv, "long"), "40");
    assert_eq!(
        (get(&kv, "dup"), get(&kv, "dup_again")),
        ("9", &*e(libc::ESPIPE))
    );
    assert_eq!(get(&kv, "after_read"), e(libc::ESPIPE));
    assert_eq!(get(&kv, "after_seek"), "9");
    assert_eq!(get(&kv, "excl"), e(libc::EEXIST));
    assert_eq!(get(&kv, "dir"), e(libc::ENOTDIR));
    // Not bpfilter's list: the kernel's path, which has no such list.
    assert_eq!(get(&kv, "nosuch"), e(libc::ENOENT));

    let long = format!("ssh:-{}", "9".repeat(39));
    assert_eq!(
        recent_writes(&d),
        [
            "ssh:+10.0.0.2\n",
            "ssh:/",
            "ssh:/",
            "ssh:x10.0.0.4",
            long.as_str(),
            "ssh:-10.0.0.2",
            "ssh:+10.0.0.5",
        ]
    );
    let seen = d.seen();
    assert!(seen.iter().all(|s| s.netns == Some(my_netns())));
    assert!(seen.iter().any(|s| s.req
        == Request::RecentRead {
            name: "nosuch".into()
        }));
}

#[test]
fn a_connection_the_program_replaced_is_not_used() {
    let d = recent_daemon("replaced");
    // The open asks the daemon, which leaves the process's connection at fd 256 (the first
    // high one); the program then puts /dev/null there, as dup2 lets any program do.
    let script = r#"
use POSIX;
my $fd = POSIX::open("/proc/net/xt_recent/ssh", O_WRONLY);
my $null = POSIX::open("/dev/null", O_WRONLY);
print "dup2=", (POSIX::dup2($null, 256) // "e" . ($! + 0)), "\n";
print "write=", (POSIX::write($fd, "+9.9.9.8\n", 9) // "e" . ($! + 0)), "\n";
"#;
    let out = preloaded(&d.path, "perl", &["-e", script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "dup2=256\nwrite=9\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(recent_writes(&d), ["ssh:+9.9.9.8\n"]);
}

#[test]
fn shells_write_recent_files() {
    let d = recent_daemon("recent-sh");
    let file = "/proc/net/xt_recent/ssh";
    // dash's echo calls write(); bash's goes through stdio inside libc, sent when the shell
    // puts its stdout back; /bin/echo is exec'd with the file as its stdout and closes it
    // inside libc, sent at its exit.
    for (shell, cmd, sent) in [
        ("dash", format!("echo +1.2.3.4 > {file}"), "+1.2.3.4\n"),
        ("bash", format!("echo -1.2.3.4 > {file}"), "-1.2.3.4\n"),
        ("bash", format!("printf / > {file}; true"), "/"),
        ("dash", format!("/bin/echo +5.6.7.8 > {file}"), "+5.6.7.8\n"),
        (
            "bash",
            format!("exec 3>{file}; echo +9.9.9.9 >&3"),
            "+9.9.9.9\n",
        ),
    ] {
        let before = recent_writes(&d).len();
        let out = preloaded(&d.path, shell, &["-c", &cmd]);
        assert!(out.status.success(), "{shell} -c {cmd:?}: {out:?}");
        assert_eq!(
            recent_writes(&d)[before..],
            [format!("ssh:{sent}")],
            "{shell} -c {cmd:?}"
        );
    }
    // cat opens with open(), sed with fopen(); the text is the daemon's.
    for (cmd, args) in [("cat", &[file][..]), ("sed", &["-n", "p", file][..])] {
        let out = preloaded(&d.path, cmd, args);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, SSH_LIST, "{cmd}");
    }
    // A refused write that stdio made: the program was told success; one line says why.
    let before = recent_writes(&d).len();
    let out = preloaded(&d.path, "bash", &["-c", &format!("echo bad > {file}")]);
    assert_eq!(recent_writes(&d)[before..], ["ssh:bad\n"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "bpfilter: write to /proc/net/xt_recent/ssh: Invalid argument\n"
    );
    // dash's write() gets the errno itself.
    let out = preloaded(&d.path, "dash", &["-c", &format!("echo bad > {file}")]);
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn other_paths_never_reach_the_daemon() {
    let d = recent_daemon("recent-other");
    for path in [
        "/proc/net/xt_recent",
        "/proc/net/xt_recent/",
        "/proc/net/xt_recent/ssh/x",
        "/proc/net/xt_recentssh",
        "/proc/self/status",
        "/etc/hostname",
    ] {
        let _ = preloaded(&d.path, "cat", &[path]);
    }
    assert!(d.seen().is_empty(), "{:?}", d.seen());
}

/// A list of the kernel's own tables (here mangle's) is the kernel's file, read and written
/// through the same path as bpfilter's, in the same command.
#[test]
fn kernel_recent_lists_stay_the_kernels() {
    if !privileged() {
        return;
    }
    let e = env();
    let ns = scratch_netns("recent");
    ns.ok(
        "iptables-legacy",
        &words("-t mangle -A PREROUTING -m recent --name kern --set"),
    );
    let d = recent_daemon("recent-kernel");
    let preload: [(&str, &Path); 2] = [("LD_PRELOAD", &e.so), ("BPFILTER_SOCKET", &d.path)];
    let out = ns.exec(
        &preload,
        "dash",
        &[
            "-c",
            "echo +10.1.2.3 > /proc/net/xt_recent/kern && echo +10.0.0.9 > /proc/net/xt_recent/ssh \
             && cat /proc/net/xt_recent/kern /proc/net/xt_recent/ssh",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("src=10.1.2.3 ttl: 0 "), "{stdout}");
    assert_eq!(lines[1], String::from_utf8_lossy(SSH_LIST).trim_end());
    assert_eq!(recent_writes(&d), ["ssh:+10.0.0.9\n"]);
    assert!(d.seen().iter().any(|s| s.req
        == Request::RecentRead {
            name: "kern".into()
        }
        && s.netns == Some(ns.inode())));
    // Without the preload: the kernel's list holds what was written, and only that.
    let kernel = ns.ok("cat", &["/proc/net/xt_recent/kern"]);
    assert!(
        kernel.starts_with("src=10.1.2.3 ") && kernel.lines().count() == 1,
        "{kernel}"
    );
}
