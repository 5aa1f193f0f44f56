//! Who may talk to the daemon, and what a client cannot make it do.
//!
//! The kernel's IPT_SO_* sockopts need CAP_NET_ADMIN in the user namespace that owns the
//! network namespace (`ns_capable(net->user_ns, CAP_NET_ADMIN)`, else EPERM). bpfilter's
//! socket is mode 0600 and root-owned, and the daemon checks the peer's CAP_NET_ADMIN. These
//! tests run the same requests as the kernel's own ip_tables would get, under the same
//! credentials (uid 65534 without capabilities, root without CAP_NET_ADMIN, root inside a
//! fresh user namespace), preloaded and plain, and compare.
//!
//! Also: the daemon trusts no size or pointer from a client (a garbage `counters` pointer, a
//! huge `num_counters`, a huge declared size) and its memory stays bounded.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
mod hardening;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Daemon, Pair, Tool};
use hardening::*;
use test_support::netns::Netns;
use test_support::privileged;

const EPERM: i32 = libc::EPERM;

const NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

fn nobody(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = NOBODY.to_vec();
    v.extend_from_slice(extra);
    v
}

/// Root without CAP_NET_ADMIN (dropped from the bounding set, hence from every set).
const ROOT_NO_NET_ADMIN: [&str; 3] = [
    "setpriv",
    "--bounding-set=-net_admin",
    "--inh-caps=-net_admin",
];

/// A script of one request of each kind, all of them refused for lack of privilege.
fn every_kind_script() -> (String, usize) {
    let filter = hex(&name_field(b"filter", 32));
    let empty = fixtures().join("captured/empty/replace.bin");
    let add = blob_file("priv-add", &add_counters_blob(b"filter", 4, 4));
    let mut rev = name_field(b"tcp", 29);
    rev.push(0);
    let lines = [
        format!("get 64 84 0 {filter}"),
        format!("get 65 672 0 {}", hex(&name_field(b"filter", 40))),
        format!("get 66 30 0 {}", hex(&rev)),
        format!("set 64 - 0 0 valid {}", empty.display()),
        format!("set 65 - 0 0 keep {}", add.display()),
    ];
    (lines.join("\n") + "\n", lines.len())
}

/// Runs [`every_kind_script`] through the client under `caps` on both sides (bpfilter's
/// through the daemon's socket) and asserts that every request got EPERM on both; bpfilter's
/// client's output.
fn every_kind_eperm(d: &Daemon, p: &Pair, caps: &[&str]) -> std::process::Output {
    let (script, n) = every_kind_script();
    let (bpf, bout) = run_client(&script, Some(&d.socket), Some(&p.bpf.name), caps);
    let (kern, kout) = run_client(&script, None, Some(&p.kernel.name), caps);
    assert_eq!(
        kern.len(),
        n,
        "kernel client: {}",
        String::from_utf8_lossy(&kout.stderr)
    );
    assert_eq!(
        bpf.len(),
        n,
        "bpfilter client: {}",
        String::from_utf8_lossy(&bout.stderr)
    );
    for i in 0..n {
        assert_eq!(kern[&i].errno, EPERM, "kernel, line {i}");
        assert_eq!(bpf[&i].errno, EPERM, "bpfilter, line {i}: {:?}", bpf[&i]);
    }
    bout
}

/// Installs a ruleset through bpfilter (as root) and returns its iptables-save.
fn install(d: &Daemon, ns: &Netns) -> String {
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A INPUT -p udp -m udp --dport 53 -j DROP\nCOMMIT\n";
    d.iptables_ok(ns, Tool::Restore, &[], rules);
    save(d, ns)
}

fn save(d: &Daemon, ns: &Netns) -> String {
    common::seen(&d.iptables_ok(ns, Tool::Save, &["-t", "filter"], "")).1
}

#[test]
fn socket_is_root_only() {
    if !privileged() {
        return;
    }
    let d = Daemon::start();
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o600, "socket mode");
    assert_eq!((m.uid(), m.gid()), (0, 0), "socket owner");
}

#[test]
fn unprivileged_user_gets_eperm() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let before = install(&d, &p.bpf);

    // No capabilities at all: socket(SOCK_RAW) already fails in the kernel, so iptables says
    // exactly what it says without bpfilter.
    let save_as = |preload: bool| {
        let mut argv: Vec<String> = vec!["ip".into(), "netns".into(), "exec".into()];
        argv.push(if preload {
            p.bpf.name.clone()
        } else {
            p.kernel.name.clone()
        });
        argv.extend(nobody(&["--inh-caps=-all"]).iter().map(|s| s.to_string()));
        argv.push("env".into());
        if preload {
            argv.push(format!("LD_PRELOAD={}", preload_lib().display()));
            argv.push(format!("BPFILTER_SOCKET={}", d.socket.display()));
        }
        argv.extend(["iptables-legacy-save", "-t", "filter"].map(String::from));
        let out = test_support::netns::run(std::process::Command::new(&argv[0]).args(&argv[1..]));
        common::seen(&out)
    };
    let (b, k) = (save_as(true), save_as(false));
    assert_eq!(
        b, k,
        "uid 65534 without capabilities: bpfilter (left) and kernel (right) differ"
    );
    assert_ne!(k.0, 0);
    assert!(k.2.contains("Permission denied"), "{k:?}");

    // With CAP_NET_RAW (a raw socket opens) but not CAP_NET_ADMIN: the kernel refuses every
    // table sockopt with EPERM; through bpfilter, connect() to the 0600 socket is refused and
    // the client turns that into EPERM too, with one line that names the socket.
    let caps = nobody(&["--inh-caps=+net_raw", "--ambient-caps=+net_raw"]);
    let bout = every_kind_eperm(&d, &p, &caps);
    let stderr = String::from_utf8_lossy(&bout.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("bpfilter:"))
        .collect();
    assert_eq!(lines.len(), 1, "one message per process, got {lines:?}");
    assert!(
        lines[0].contains(&d.socket.display().to_string())
            && lines[0].contains("Permission denied"),
        "unclear message: {}",
        lines[0]
    );

    // The wire protocol straight to the socket (no raw socket needed): refused at connect.
    let getinfo = {
        let mut name = name_field(b"filter", 32);
        name.truncate(32);
        sockopt_frame(0, 64, 84, &name)
    };
    let (wire, wout) = run_client(
        &format!("wire {}\n", hex(&getinfo)),
        Some(&d.socket),
        Some(&p.bpf.name),
        &nobody(&["--inh-caps=-all"]),
    );
    assert_eq!(
        wire.get(&0).map(|s| s.errno),
        Some(EPERM),
        "{}",
        String::from_utf8_lossy(&wout.stderr)
    );

    assert_eq!(
        save(&d, &p.bpf),
        before,
        "an unprivileged caller changed the ruleset"
    );
    cleanup();
}

/// An IPv4 sockopt request frame (wire format of libbpfilter/src/wire.rs).
fn sockopt_frame(op: u8, optname: u32, optlen: u32, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![2u8, op, 0, 0];
    body.extend_from_slice(&optname.to_le_bytes());
    body.extend_from_slice(&optlen.to_le_bytes());
    body.extend_from_slice(payload);
    frame(1, &body)
}

fn frame(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut f = b"BPFL".to_vec();
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&kind.to_le_bytes());
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    f
}

#[test]
fn root_without_cap_net_admin_gets_eperm() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let before = install(&d, &p.bpf);
    every_kind_eperm(&d, &p, &ROOT_NO_NET_ADMIN);
    // What a user sees: the same as with the kernel.
    for args in [&["-L"][..], &["-A", "INPUT", "-j", "DROP"][..]] {
        let run = |ns: &Netns, preload: bool| {
            let mut cmd = std::process::Command::new("ip");
            cmd.args(["netns", "exec", &ns.name])
                .args(ROOT_NO_NET_ADMIN)
                .args(["sh", "-c"]);
            let env = if preload {
                format!(
                    "LD_PRELOAD={} BPFILTER_SOCKET={} ",
                    preload_lib().display(),
                    d.socket.display()
                )
            } else {
                String::new()
            };
            cmd.arg(format!("{env}iptables-legacy -w {}", args.join(" ")));
            common::seen(&test_support::netns::run(&mut cmd))
        };
        assert_eq!(
            run(&p.bpf, true),
            run(&p.kernel, false),
            "iptables {args:?} without CAP_NET_ADMIN"
        );
    }
    assert_eq!(
        save(&d, &p.bpf),
        before,
        "a caller without CAP_NET_ADMIN changed the ruleset"
    );
    assert!(
        d.log().contains("lacks CAP_NET_ADMIN"),
        "no log line says why"
    );
    cleanup();
}

/// Root that dropped CAP_NET_ADMIN can still create a user namespace (no capability needed),
/// where it holds every capability, but only over that namespace: the kernel keeps refusing it
/// the host's tables (its network namespace belongs to the initial user namespace). The daemon
/// must not take the capabilities listed in /proc/PID/status at face value.
#[test]
fn a_user_namespace_does_not_grant_cap_net_admin() {
    let Some((d, ns)) = common::start_in("hu") else {
        return;
    };
    let before = install(&d, &ns);
    let sh = |line: &str| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .args(ROOT_NO_NET_ADMIN)
            .args(["sh", "-c"]);
        cmd.arg(format!("unshare --user --map-root-user sh -c '{line}'"));
        cmd.env("BPFILTER_SOCKET", &d.socket);
        test_support::netns::run(&mut cmd)
    };
    // The kernel's answer in that situation, for reference.
    let kernel = sh("grep CapEff /proc/self/status; iptables-legacy-save -t filter; echo rc=$?");
    let ktext = String::from_utf8_lossy(&kernel.stdout).to_string()
        + &String::from_utf8_lossy(&kernel.stderr);
    assert!(ktext.contains("Permission denied"), "kernel: {ktext}");

    let bin = common::bpfilter_bin();
    let status = sh(&format!("{} status", bin.display()));
    let flush = sh(&format!("{} flush --all", bin.display()));
    let after = save(&d, &ns);
    assert!(
        !status.status.success() && !flush.status.success() && after == before,
        "root without CAP_NET_ADMIN, inside a new user namespace, was served by the daemon \
         (the kernel refuses it: {}):\nstatus: {} {}\nflush --all: {} {}\nruleset before:\n{before}\nafter:\n{after}",
        ktext.lines().last().unwrap_or(""),
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr),
        String::from_utf8_lossy(&flush.stdout),
        String::from_utf8_lossy(&flush.stderr),
    );
}

/// The kernel writes the old counters to the `counters` pointer after the new table is in
/// place; a bad pointer only logs "counters copy to user failed" and the call returns 0. The
/// client must not crash either, and the daemon must not care.
#[test]
fn a_garbage_counters_pointer_is_ignored_like_the_kernel() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let empty = fixtures().join("captured/empty/replace.bin");
    let script = format!(
        "reset\nset 64 - 0 0 garbage {}\nget 64 84 0 {}\n",
        empty.display(),
        hex(&name_field(b"filter", 32))
    );
    let (kern, _) = run_client(&script, None, Some(&p.kernel.name), &[]);
    assert_eq!(
        kern.get(&1).map(|s| (s.ret, s.errno)),
        Some((0, 0)),
        "kernel: {kern:?}"
    );
    let (bpf, out) = run_client(&script, Some(&d.socket), Some(&p.bpf.name), &[]);
    assert_eq!(
        bpf.get(&1).map(|s| (s.ret, s.errno)),
        Some((0, 0)),
        "SET_REPLACE with a garbage counters pointer through the preload: {:?}, client {:?}\n{}",
        bpf,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bpf.len(), 3, "the client died: {:?}", out.status);
    // The daemon is up and serves the namespace.
    assert!(
        d.iptables(&p.bpf, Tool::Save, &[], "").status.success(),
        "{}",
        d.log()
    );
    cleanup();
}

/// num_counters is an allocation size the kernel bounds before allocating (ENOMEM); a declared
/// size is checked against the bytes actually sent. Neither may make the daemon allocate.
#[test]
fn huge_counts_and_sizes_are_refused_without_allocating() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let pid = daemon_pid(&d.socket);
    let base = std::fs::read(fixtures().join("captured/empty/replace.bin")).unwrap();
    let mut script = String::from("reset\n");
    let mut cases = Vec::new();
    for (what, num, size) in [
        ("num_counters 0x0800_0000", 0x0800_0000u32, None),
        ("num_counters 0x0200_0001", 0x0200_0001, None),
        ("num_counters 0x07ff_ffff", 0x07ff_ffff, None),
        ("num_counters 0xffff_ffff", 0xffff_ffff, None),
        ("size 0x7fff_fff0", 4, Some(0x7fff_fff0u32)),
        ("size 0x1000_0000", 4, Some(0x1000_0000)),
        ("size 0xffff_ff00", 4, Some(0xffff_ff00)),
    ] {
        let mut b = base.clone();
        b[84..88].copy_from_slice(&num.to_ne_bytes());
        if let Some(s) = size {
            b[40..44].copy_from_slice(&s.to_ne_bytes());
        }
        let f = blob_file(&format!("huge-{num:x}-{}", size.unwrap_or(0)), &b);
        cases.push((what, script.lines().count()));
        script += &format!("set 64 - 0 1 valid {}\n", f.display());
    }
    let hwm_before = proc_status(pid, "VmHWM");
    let (kern, _) = run_client(&script, None, Some(&p.kernel.name), &[]);
    let (bpf, out) = run_client(&script, Some(&d.socket), Some(&p.bpf.name), &[]);
    for (what, line) in &cases {
        let (k, b) = (kern[line], bpf.get(line).copied());
        assert_ne!(k.errno, 0, "{what}: the kernel accepted it");
        assert_eq!(
            b.map(|s| s.errno),
            Some(k.errno),
            "{what}: kernel {k:?}, bpfilter {b:?} {:?}",
            out.status
        );
    }
    let grown = proc_status(pid, "VmHWM").saturating_sub(hwm_before);
    assert!(
        grown < 16 * 1024,
        "the daemon's peak RSS grew by {grown} kB on refused requests"
    );

    // A real 64 MiB request (zeros: refused by validation) costs about its own size, once, and
    // the memory is given back.
    let mut big = base.clone();
    big.resize(64 << 20, 0);
    big[40..44].copy_from_slice(&((64u32 << 20) - 96).to_ne_bytes());
    let f = blob_file("big64m", &big);
    let rss_before = proc_status(pid, "VmRSS");
    let hwm_before = proc_status(pid, "VmHWM");
    let line = format!("set 64 - 0 1 valid {}\n", f.display());
    let (kern, _) = run_client(&line, None, Some(&p.kernel.name), &[]);
    let (bpf, _) = run_client(&line, Some(&d.socket), Some(&p.bpf.name), &[]);
    assert_eq!(
        bpf[&0].errno, kern[&0].errno,
        "64 MiB of zeros: kernel {:?}, bpfilter {:?}",
        kern[&0], bpf[&0]
    );
    let peak = proc_status(pid, "VmHWM").saturating_sub(hwm_before);
    let rss_after = proc_status(pid, "VmRSS");
    assert!(
        peak < 4 * 64 * 1024,
        "a 64 MiB request raised the daemon's peak RSS by {peak} kB"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "the daemon kept {} kB after a refused 64 MiB request",
        rss_after.saturating_sub(rss_before)
    );
    let _ = std::fs::remove_file(f);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon died"
    );
    cleanup();
}
