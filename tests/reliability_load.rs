//! Load: 8 concurrent clients run mixed reads and writes against one daemon in one namespace
//! (`iptables -w -A/-D/-C/-L/-S/-Z`, `iptables-save`), serialized by the xtables lock as
//! iptables-legacy serializes them against the kernel. Every command must succeed, the final
//! ruleset must equal a serial replay of the successful commands (each client adds and deletes
//! only its own rules, so the replay is: per client, its surviving rules in its own order), and
//! the daemon must not grow: its RSS and its count of BPF fds are bounded.
//!
//! Bounded run: 8 x 120 commands. `BPFILTER_RELIABILITY_FULL=1`: 8 x 500.

mod common;

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::process::Command;
use std::time::Instant;

use common::{Daemon, Tool};
use test_support::netns::Netns;
use test_support::{privileged, Rng};

const CLIENTS: u32 = 8;

fn full_run() -> bool {
    std::env::var("BPFILTER_RELIABILITY_FULL").is_ok_and(|v| v == "1")
}

/// Pid of the daemon listening on `socket` (found by its command line).
fn daemon_pid(d: &Daemon) -> u32 {
    let want = d.socket.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.contains(&&b"daemon"[..]) && args.contains(&want.as_bytes())
            })
        })
        .expect("daemon pid")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// How many fds of `pid` are BPF objects (programs, maps, links).
fn bpf_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("anon_inode:bpf"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn rule(client: u32, k: u32) -> String {
    format!(
        "-A INPUT -s 10.{}.{}.{}/32 -p udp -m udp --dport {} -j ACCEPT",
        100 + client,
        k / 250,
        k % 250 + 1,
        30000 + client
    )
}

/// One client's commands. Returns (its rules in force at the end, commands run, failures).
fn client(
    socket: std::path::PathBuf,
    ns: String,
    c: u32,
    ops: u32,
    seed: u64,
) -> (Vec<String>, u32, Vec<String>) {
    // One stream per client, derived from the printed seed.
    let mut rng = Rng::new(seed ^ u64::from(c));
    let mut mine: Vec<String> = Vec::new();
    let mut next = 0u32;
    let mut failures = Vec::new();
    // `iptables -w LINE`
    let waiting = |line: &str| -> (&str, Vec<String>) {
        (
            "iptables",
            std::iter::once("-w".to_owned())
                .chain(line.split_whitespace().map(str::to_owned))
                .collect(),
        )
    };
    for _ in 0..ops {
        let r = rng.below(100);
        let (tool, args): (&str, Vec<String>) = if r < 35 || mine.is_empty() {
            let line = rule(c, next);
            next += 1;
            mine.push(line.clone());
            waiting(&line)
        } else if r < 55 {
            let i = rng.index(mine.len());
            let line = mine.remove(i);
            waiting(&line.replacen("-A ", "-D ", 1))
        } else if r < 62 {
            let i = rng.index(mine.len());
            waiting(&mine[i].replacen("-A ", "-C ", 1))
        } else if r < 72 {
            (
                "iptables",
                ["-w", "-L", "-n", "-v", "-x"].map(str::to_owned).to_vec(),
            )
        } else if r < 82 {
            ("iptables", ["-w", "-S"].map(str::to_owned).to_vec())
        } else if r < 87 {
            (
                "iptables",
                ["-w", "-Z", "INPUT"].map(str::to_owned).to_vec(),
            )
        } else {
            ("iptables-save", ["-c"].map(str::to_owned).to_vec())
        };
        let out = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(common::bpfilter_bin())
            .arg(tool)
            .args(&args)
            .env("BPFILTER_SOCKET", &socket)
            .output()
            .expect("spawn");
        if !out.status.success() {
            failures.push(format!(
                "client {c}: `{tool} {}` exited {:?}: {}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    (mine, ops, failures)
}

#[test]
fn concurrent_clients_serialize_like_the_kernel_and_the_daemon_stays_bounded() {
    if !privileged() {
        return;
    }
    let ops = if full_run() { 500 } else { 120 };
    let d = Daemon::start();
    let ns = Netns::new("rld");
    d.iptables_ok(
        &ns,
        Tool::Iptables,
        &[
            "-w", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
        ],
        "",
    );
    let pid = daemon_pid(&d);
    let (rss0, fds0) = (rss_kib(pid), bpf_fds(pid));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |t| t.as_nanos() as u64);
    eprintln!("seed {seed}");
    let started = Instant::now();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (socket, name) = (d.socket.clone(), ns.name.clone());
            std::thread::spawn(move || client(socket, name, c, ops, seed))
        })
        .collect();
    let mut expected: Vec<Vec<String>> = Vec::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for h in handles {
        let (mine, n, f) = h.join().expect("client");
        expected.push(mine);
        total += n;
        failures.extend(f);
    }
    let elapsed = started.elapsed();
    let (rss1, fds1) = (rss_kib(pid), bpf_fds(pid));
    let save = d.iptables(&ns, Tool::Save, &["-t", "filter"], "");
    assert!(save.status.success());
    let save = String::from_utf8_lossy(&save.stdout).into_owned();
    let lines: Vec<&str> = save.lines().filter(|l| l.starts_with("-A ")).collect();
    eprintln!(
        "load: {total} commands by {CLIENTS} clients in {:.1} s ({:.1} ms each on average), {} failed; final rules {}; \
         daemon RSS {rss0} KiB -> {rss1} KiB, BPF fds {fds0} -> {fds1}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / f64::from(total),
        failures.len(),
        lines.len()
    );
    assert!(
        failures.is_empty(),
        "{} commands failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        d.log()
    );
    // Serial replay: the first rule, then per client exactly its surviving rules in its order.
    assert_eq!(
        lines.first().copied(),
        Some("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT")
    );
    for (c, mine) in expected.iter().enumerate() {
        let tag = format!("-s 10.{}.", 100 + c);
        let got: Vec<&str> = lines.iter().copied().filter(|l| l.contains(&tag)).collect();
        let want: Vec<&str> = mine.iter().map(String::as_str).collect();
        assert_eq!(got, want, "client {c}'s rules");
    }
    assert_eq!(
        lines.len(),
        1 + expected.iter().map(Vec::len).sum::<usize>(),
        "no stray rules"
    );
    // One generation pinned, the daemon holds no more BPF objects than before.
    let ino = std::fs::metadata(format!("/run/netns/{}", ns.name))
        .expect("netns")
        .ino();
    let table = d.bpffs.join(format!("net{ino}/filter"));
    let gens = std::fs::read_dir(&table)
        .expect("table")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gen"))
        .count();
    assert_eq!(gens, 1, "generations pinned");
    assert!(
        fds1 <= fds0,
        "the daemon's BPF fds grew from {fds0} to {fds1}"
    );
    assert!(
        rss1 < rss0 + 50 * 1024,
        "daemon RSS grew from {rss0} KiB to {rss1} KiB"
    );
}

/// Several `bpfilter flush --all` at once, from different namespaces: each request holds its
/// own namespace's lock and then takes the others' one by one, so two of them can wait for
/// each other forever. Every flush must finish, and the namespaces must still answer.
#[test]
fn concurrent_flush_all_from_several_namespaces_does_not_deadlock() {
    if !privileged() {
        return;
    }
    let rounds = if full_run() { 60 } else { 25 };
    let d = Daemon::start();
    let namespaces: Vec<Netns> = (0..6).map(|_| Netns::new("rlf")).collect();
    let fifo = std::env::temp_dir().join(test_support::netns::unique("rlgo"));
    let started = Instant::now();
    let mut stuck = None;
    for round in 0..rounds {
        for ns in &namespaces {
            let out = d.iptables(ns, Tool::Iptables, &["-w", "-L", "-n"], "");
            assert!(
                out.status.success(),
                "round {round}: -L: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // Every client blocks on the fifo until it is opened and closed: they start together.
        let mut children: Vec<std::process::Child> = namespaces
            .iter()
            .map(|ns| {
                Command::new("ip")
                    .args(["netns", "exec", &ns.name, "sh", "-c"])
                    .arg(format!(
                        "read x < {}; exec {} flush --all",
                        fifo.display(),
                        common::bpfilter_bin().display()
                    ))
                    .env("BPFILTER_SOCKET", &d.socket)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn flush")
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(400));
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open fifo"),
        );
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut pending = children.len();
        while pending > 0 && Instant::now() < deadline {
            pending = children
                .iter_mut()
                .map(|c| c.try_wait().ok().flatten().is_none())
                .filter(|p| *p)
                .count();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if pending > 0 {
            // A late shell still waiting on the fifo is not the daemon's fault: release it and
            // look again; flushes still running after that are stuck in the daemon.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo);
            std::thread::sleep(std::time::Duration::from_secs(3));
            let hung = children
                .iter_mut()
                .map(|c| c.try_wait().ok().flatten().is_none())
                .filter(|p| *p)
                .count();
            if hung > 0 {
                stuck = Some((round, hung));
            }
        }
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if stuck.is_some() {
            break;
        }
    }
    let _ = std::fs::remove_file(&fifo);
    let pid = daemon_pid(&d);
    let waiting: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|r| {
            r.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("wchan")).ok())
                .filter(|w| w.contains("futex"))
                .collect()
        })
        .unwrap_or_default();
    eprintln!(
        "concurrent flush --all: {} in {:.1} s; daemon threads waiting on a lock: {}",
        match stuck {
            Some((r, n)) => format!("{n} flushes stuck in round {r}"),
            None => format!("{rounds} rounds of 6, none stuck"),
        },
        started.elapsed().as_secs_f64(),
        waiting.len()
    );
    assert!(
        stuck.is_none(),
        "flush --all deadlocked the daemon ({} threads waiting on namespace locks)",
        waiting.len()
    );
}
