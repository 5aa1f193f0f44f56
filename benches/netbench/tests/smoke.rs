//! Privileged: a tiny end-to-end run (N = 0 and 10, two short samples) against no firewall,
//! iptables-legacy and nftables. Checks that it finishes, measures every configuration, and
//! that its own packet and counter checks pass. Needs root, iptables-legacy and nft; fails
//! without them when CI=true, skips (saying why) otherwise.

use std::process::Command;

fn ready() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["iptables-legacy-restore", "nft", "ip"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if root && tools {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "needs root, iptables-legacy and nft under CI"
    );
    eprintln!("skipped: needs root, iptables-legacy and nft");
    false
}

#[test]
fn tiny_run_passes_its_checks() {
    if !ready() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_netbench"))
        .args([
            "--counts",
            "0,10",
            "--samples",
            "2",
            "--warmup",
            "0",
            "--sample-ms",
            "50",
        ])
        .args(["--backends", "iptables-legacy,nftables", "--no-write"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run netbench");
    let prefix = format!("nbench-{}-", out.id());
    let out = out.wait_with_output().expect("wait netbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "netbench failed:\n{stderr}");
    // Every backend's first data-path row has a number (signed: two short samples on a busy
    // machine can put a small cost below zero) at N = 0 and N = 10.
    for b in ["iptables-legacy", "nftables"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {b} | ")))
            .unwrap_or_else(|| panic!("no {b} row:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for c in &cells[2..4] {
            assert!(c.parse::<i64>().is_ok(), "{b}: cell {c:?} in {row}");
        }
    }
    assert!(
        stdout.contains("Every measured configuration"),
        "checks failed:\n{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    let left = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "namespaces left behind");
}

/// Where `bpfilter` is: beside this test's `netbench` binary (same target folder), unless
/// BPFILTER_BIN_DIR says otherwise.
fn bpfilter_dir() -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("BPFILTER_BIN_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::Path::new(env!("CARGO_BIN_EXE_netbench"))
            .parent()?
            .to_path_buf(),
    };
    (dir.join("bpfilter").exists() && dir.join("libbpfilter.so").exists()).then_some(dir)
}

#[test]
fn tiny_bpfilter_run_passes_its_checks() {
    if !ready() {
        return;
    }
    let Some(dir) = bpfilter_dir() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "bpfilter and libbpfilter.so must be built (make) under CI"
        );
        eprintln!("skipped: no bpfilter binary beside netbench (run `make` first)");
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_netbench"))
        .args([
            "--counts",
            "0,10",
            "--samples",
            "2",
            "--warmup",
            "0",
            "--sample-ms",
            "50",
        ])
        .args([
            "--backends",
            "bpfilter",
            "--require-bpfilter",
            "--no-write",
            "--no-floor",
        ])
        .arg("--bin-dir")
        .arg(&dir)
        .output()
        .expect("run netbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "netbench failed:\n{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| bpfilter | "))
        .unwrap_or_else(|| panic!("no bpfilter row:\n{stdout}\n{stderr}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    for c in &cells[2..4] {
        assert!(
            c.parse::<i64>().is_ok(),
            "bpfilter: cell {c:?} in {row}\n{stderr}"
        );
    }
    assert!(
        stdout.contains("Every measured configuration"),
        "checks failed:\n{stdout}"
    );
}
