//! Network namespaces, veth pairs, threads inside a namespace, and the shell commands that
//! build them.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short name for namespaces and interfaces of this test process.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs a command, panicking if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a shell line, asserting success; its stdout.
pub fn sh(line: &str) -> String {
    let out = run(Command::new("sh").arg("-c").arg(line));
    assert!(
        out.status.success(),
        "`{line}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// A fresh namespace with a unique name starting with `prefix`, lo up.
    pub fn new(prefix: &str) -> Netns {
        Netns::named(unique(prefix))
    }

    /// A fresh namespace called `name` (one left over by a dead run is replaced), lo up.
    pub fn named(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        Netns { name }
    }

    /// Runs `bash -c line` inside the namespace (bash, for /dev/udp and /dev/tcp).
    pub fn sh(&self, line: &str) -> String {
        sh(&format!(
            "ip netns exec {} bash -c '{}'",
            self.name,
            line.replace('\'', "'\\''")
        ))
    }

    /// Runs `cmd args` inside the namespace, with `env` set for `cmd` only.
    pub fn exec(&self, env: &[(&str, &Path)], cmd: &str, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "env"]);
        for (k, v) in env {
            c.arg(format!("{k}={}", v.display()));
        }
        run(c.arg(cmd).args(args))
    }

    /// [`Netns::exec`] with no environment, asserting success; its stdout.
    pub fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.exec(&[], cmd, args);
        assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The (device, inode) of the namespace's bind mount: what identifies it (`net:[ino]`).
    pub fn inode(&self) -> (u64, u64) {
        let m = std::fs::metadata(format!("/run/netns/{}", self.name)).expect("stat netns");
        (m.dev(), m.ino())
    }

    /// Its `Ip: InReceives` counter.
    pub fn in_receives(&self) -> u64 {
        in_netns(&self.name, crate::snmp::in_receives_here)
    }

    /// Waits until a TCP socket listens on `port` in the namespace ([`wait_listening`]).
    pub fn wait_listening(&self, port: u16) {
        wait_listening(&self.name, port);
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The processes a test left in the namespace (listeners sleeping out their time)
        // would keep it, and the rules bpfilter attached there, alive after the test.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("ip netns pids {} | xargs -r kill", self.name))
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair from namespace `a` to namespace `b`, each end addressed (`10.0.0.1/24`) and
/// up; its two devices (in `a`, in `b`).
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> (String, String) {
    let (da, db) = (unique("va"), unique("vb"));
    sh(&format!(
        "ip link add {da} netns {a} type veth peer name {db} netns {b} && \
         ip -n {a} addr add {a_addr} dev {da} && ip -n {a} link set {da} up && \
         ip -n {b} addr add {b_addr} dev {db} && ip -n {b} link set {db} up",
        a = a.name,
        b = b.name
    ));
    (da, db)
}

/// Turns IPv6 off in namespace `ns` (no router solicitations or DAD on the test's links).
pub fn no_ipv6(ns: &str) {
    sh(&format!(
        "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
    ));
}

/// Runs `f` on a new thread that entered namespace `ns` (setns of CLONE_NEWNET is per thread;
/// sockets and `/proc/thread-self/net` files opened there stay bound to `ns`). Errors when
/// the namespace cannot be opened or entered, or when `f` panicked.
pub fn try_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("open {path}: {e}")))?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        drop(file);
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other(format!("thread in namespace {ns} panicked")))?
}

/// [`try_in_netns`] for tests: panics when the thread cannot enter the namespace or `f`
/// panicked.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    try_in_netns(ns, f).unwrap_or_else(|e| panic!("in namespace {ns}: {e}"))
}

/// A thread that entered namespace `ns` and runs `f` there, left running (a traffic source).
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        drop(file);
        f()
    })
}

/// Waits (up to 60 s: in the matrix's emulated kernels, two guests sharing two CPUs, a
/// python3 listener took over 20 s to start) until a TCP socket listens on `port` in
/// namespace `ns`.
pub fn wait_listening(ns: &str, port: u16) {
    let want = format!(":{port:04X} ");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tcp = sh(&format!(
            "ip netns exec {ns} cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true"
        ));
        // local address column ends with :PORT, state 0A is LISTEN
        if tcp.lines().any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| format!("{a} ").ends_with(&want))
                && l.split_whitespace().nth(3) == Some("0A")
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} in {ns}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
