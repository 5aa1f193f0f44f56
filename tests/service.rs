//! The daemon as a service, on this machine's kernel: started by systemd's socket activation
//! (the real `systemd-socket-activate`, which passes the socket as systemd does), readiness
//! sent to `NOTIFY_SOCKET`, commands issued while the daemon restarts waiting and succeeding,
//! idle connections unable to hold it. systemd as PID 1 (the units, boot-time restore, the
//! package) is tested in a QEMU guest by tools/service/test.sh.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bpfilter_bin, Daemon, Tool};
use test_support::netns::{unique, Netns};
use test_support::privileged;

/// The rules of `ns` as iptables-save prints them, without the header comments.
fn rules(d: &Daemon, ns: &Netns) -> Vec<String> {
    let out = d.iptables(ns, Tool::Save, &[], "");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn socket_activation_and_readiness_as_systemd_gives_them() {
    if !privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(unique("bpfsvc"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("sock");
    let notify = UnixDatagram::bind(dir.join("notify")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let bpffs = format!("/sys/fs/bpf/{}", unique("bpfsvc"));
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    // systemd-socket-activate binds the socket, then on the first connection starts the
    // daemon with LISTEN_PID/LISTEN_FDS naming it, as systemd does for bpfilter.socket.
    let mut activator = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&socket)
        .arg(format!(
            "--setenv=NOTIFY_SOCKET={}",
            dir.join("notify").display()
        ))
        .arg(bpfilter_bin())
        .args(["daemon", "--bpffs", &bpffs, "--socket"])
        // a path nobody binds: the daemon must serve the socket it was given, not this one
        .arg(dir.join("unused.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("systemd-socket-activate (package systemd)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the activator did not bind");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ns = Netns::new("svc");
    let daemon = DaemonAt(socket.clone());
    let out = daemon.iptables(
        &ns,
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
    let log_text = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    assert!(out.status.success(), "{out:?}\n{}", log_text());
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from the daemon");
    let state = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(state.lines().any(|l| l == "READY=1"), "{state}");
    let out = daemon.iptables(&ns, &["-S", "INPUT"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-P INPUT ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
    );
    assert!(
        log_text().contains("listening on the socket systemd passed"),
        "{}",
        log_text()
    );
    assert!(
        !dir.join("unused.sock").exists(),
        "the daemon bound its own socket as well"
    );
    let _ = Command::new(bpfilter_bin())
        .args(["flush", "--all"])
        .env("BPFILTER_SOCKET", &socket)
        .output();
    let _ = activator.kill();
    let _ = activator.wait();
    let _ = std::fs::remove_dir_all(&bpffs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bpfilter iptables` against a socket path, for a daemon this test does not own.
struct DaemonAt(std::path::PathBuf);

impl DaemonAt {
    fn iptables(&self, ns: &Netns, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(bpfilter_bin())
            .arg("iptables")
            .args(args)
            .env("BPFILTER_SOCKET", &self.0)
            .output()
            .unwrap()
    }
}

/// Waits for `c` (spawned with its output piped) and asserts that it succeeded; `what` names
/// it in a failure.
fn succeeds(c: std::process::Child, d: &Daemon, what: &str) {
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

/// A daemon and a namespace (named from `prefix`) whose INPUT has one rule, accepting UDP
/// port 1; None where privileged tests cannot run.
fn with_port_1_accepted(prefix: &str) -> Option<(Daemon, Netns)> {
    let (d, ns) = common::start_in(prefix)?;
    d.iptables_ok(
        &ns,
        Tool::Iptables,
        &["-A", "INPUT", "-p", "udp", "--dport", "1", "-j", "ACCEPT"],
        "",
    );
    Some((d, ns))
}

#[test]
fn commands_issued_while_the_daemon_restarts_wait_and_succeed() {
    let Some((mut d, ns)) = with_port_1_accepted("svcr") else {
        return;
    };
    // Dead, as after kill -9: the socket file stays, nobody listens (ECONNREFUSED).
    d.kill9();
    let started = Instant::now();
    let commands: Vec<_> = (2..6)
        .map(|port| {
            Command::new("ip")
                .args(["netns", "exec", &ns.name])
                .arg(bpfilter_bin())
                .args(["iptables", "-w", "-A", "INPUT", "-p", "udp", "--dport"])
                .arg(port.to_string())
                .args(["-j", "ACCEPT"])
                .env("BPFILTER_SOCKET", &d.socket)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    d.restart();
    for c in commands {
        succeeds(c, &d, "a command issued during the restart");
    }
    assert!(started.elapsed() >= Duration::from_millis(700));
    let mut got = rules(&d, &ns);
    got.sort();
    let want: Vec<String> = (1..6)
        .map(|p| format!("-A INPUT -p udp -m udp --dport {p} -j ACCEPT"))
        .collect();
    assert_eq!(got, want);
    // With no daemon at all, the wait is bounded and ends in one clear line.
    d.kill9();
    let started = Instant::now();
    let out = Command::new(bpfilter_bin())
        .args(["iptables", "-L"])
        .env("BPFILTER_SOCKET", &d.socket)
        .env("BPFILTER_CONNECT_WAIT", "1")
        .output()
        .unwrap();
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with("bpfilter: cannot reach the bpfilter daemon at ")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(4)).contains(&waited),
        "waited {waited:?}"
    );
    d.restart();
}

#[test]
fn silent_connections_cannot_hold_the_daemon() {
    let Some((d, ns)) = common::start_in("svci") else {
        return;
    };
    // More silent peers than the daemon serves at once: some wait in the backlog.
    let silent: Vec<UnixStream> = (0..80)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    let started = Instant::now();
    // bounded, so that a daemon that never lets go fails the test instead of hanging it
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", &ns.name])
        .arg(bpfilter_bin())
        .args(["iptables", "-S"])
        .env("BPFILTER_SOCKET", &d.socket)
        .output()
        .unwrap();
    let waited = started.elapsed();
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    // Served once idle peers were dropped (10 s of silence each), not never.
    assert!(waited < Duration::from_secs(40), "waited {waited:?}");
    // The silent peers were cut: reading gives end of file.
    let mut closed = 0;
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
        let mut b = [0u8; 1];
        if matches!(std::io::Read::read(&mut s, &mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 80, "silent connections still open");
}

#[test]
fn a_stopped_daemon_finishes_the_requests_it_accepted() {
    let Some((mut d, ns)) = with_port_1_accepted("svcs") else {
        return;
    };
    let ino = ns.inode().1;
    let table_dir = d.bpffs.join(format!("net{ino}/filter"));
    // A restore large enough that its SET_REPLACE is still being compiled when the stop
    // signal arrives.
    let mut ruleset =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..4000u32 {
        ruleset.push_str(&format!(
            "-A INPUT -s 10.{}.{}.0/24 -p tcp -m tcp --dport {} -j DROP\n",
            i / 256,
            i % 256,
            1000 + i
        ));
    }
    ruleset.push_str("COMMIT\n");
    let mut restore = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bpfilter_bin())
        .arg("iptables-restore")
        .env("BPFILTER_SOCKET", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(restore.stdin.as_mut().unwrap(), ruleset.as_bytes()).unwrap();
    drop(restore.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !table_dir.join("gen2").exists() {
        assert!(
            Instant::now() < deadline,
            "the replace never started\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let stopped = Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = d.wait_exit(Duration::from_secs(40));
    assert_eq!(
        status,
        Some(0),
        "the daemon did not stop cleanly\n{}",
        d.log()
    );
    assert!(
        d.log()
            .contains("stopping: finishing the requests in progress"),
        "{}",
        d.log()
    );
    // The command's remaining requests (SET_ADD_COUNTERS) wait for the next daemon.
    d.restart();
    succeeds(restore, &d, "the restore in progress at the stop");
    assert_eq!(rules(&d, &ns).len(), 4000);
}
