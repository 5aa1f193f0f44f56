//! Privileged: a tiny end-to-end run (N = 0 and 10, two short samples) against no firewall,
//! iptables-legacy and nftables (and bpfilter, once per packet-access strategy, when built). Checks that it finishes, measures every configuration, and
//! that its own packet and counter checks pass. Needs root, iptables-legacy and nft; fails
//! without them when CI=true, skips (saying why) otherwise.

use std::process::Command;

/// The row of backend `b` in the first per-kind data-path table (the summary table before it
/// has ratios, not one number per N).
fn first_table_row<'a>(stdout: &'a str, b: &str) -> Option<&'a str> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("### Rules failing on the source address"))
        .find(|l| l.starts_with(&format!("| {b} | ")))
}

/// Cells 2 and 3 (N = 0 and N = 10) of a table row are signed numbers (two short samples on a
/// busy machine can put a small cost below zero).
fn assert_numbers(stdout: &str, b: &str, stderr: &str) {
    let row =
        first_table_row(stdout, b).unwrap_or_else(|| panic!("no {b} row:\n{stdout}\n{stderr}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    for c in &cells[2..4] {
        assert!(
            c.parse::<i64>().is_ok(),
            "{b}: cell {c:?} in {row}\n{stderr}"
        );
    }
}

fn ready() -> bool {
    use test_support::gate::{missing_tools, not_root, ready};
    ready(not_root().or_else(|| missing_tools(&["iptables-legacy-restore", "nft", "ip"])))
}

/// netbench with the smallest run that still has N = 0 and N > 0 (the tests add the rest).
fn tiny_run() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netbench"));
    cmd.args([
        "--counts",
        "0,10",
        "--samples",
        "2",
        "--warmup",
        "0",
        "--sample-ms",
        "50",
        "--feature-counts",
        "0,10",
        "--reply-ms",
        "100",
        "--reply-rounds",
        "1",
        "--ipv6-counts",
        "0,10",
        "--ipv6-samples",
        "2",
    ]);
    cmd
}

/// The IPv6 pass's row of backend `b` in its first per-kind table has numbers at N = 0 and
/// N = 10, and the pass's own checks passed (`Ip6InReceives`, final counters).
fn assert_ipv6(stdout: &str, b: &str, stderr: &str) {
    let row = stdout
        .lines()
        .skip_while(|l| !l.starts_with("#### IPv6 rules failing on the source address"))
        .find(|l| l.starts_with(&format!("| {b} | ")))
        .unwrap_or_else(|| panic!("no IPv6 {b} row:\n{stdout}\n{stderr}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    for c in &cells[2..4] {
        assert!(c.parse::<i64>().is_ok(), "IPv6 {b}: cell {c:?} in {row}");
    }
    assert!(
        stdout.contains(
            "### Checks of the IPv6 pass\n\nEvery measured configuration: `Ip6InReceives`"
        ),
        "IPv6 checks failed:\n{stdout}"
    );
}

/// The second run's section is there and its own checks passed.
fn assert_features(stdout: &str, stderr: &str) {
    assert!(
        stdout.contains("## Connection state, LOG and REJECT"),
        "no second run:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("Checks of this run passed"),
        "second run's checks failed:\n{stdout}"
    );
}

#[test]
fn tiny_run_passes_its_checks() {
    if !ready() {
        return;
    }
    let out = tiny_run()
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
    // Every backend's first data-path row has a number at N = 0 and N = 10.
    for b in ["iptables-legacy", "nftables"] {
        assert_numbers(&stdout, b, &stderr);
    }
    for b in ["ip6tables-legacy", "nftables"] {
        assert_ipv6(&stdout, b, &stderr);
    }
    assert_features(&stdout, &stderr);
    // iptables-legacy alone in the second run: its reply windows answer every SYN.
    assert!(
        stdout.contains("| iptables-legacy | 1 |"),
        "no reply window:\n{stdout}"
    );
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

#[test]
fn ipv6_only_run_passes_its_checks() {
    if !ready() {
        return;
    }
    let out = tiny_run()
        .args([
            "--family",
            "ipv6",
            "--backends",
            "iptables-legacy,nftables",
            "--no-write",
        ])
        .output()
        .expect("run netbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "netbench failed:\n{stderr}");
    assert!(
        stdout.starts_with("# netbench results (IPv6 pass only)"),
        "{stdout}"
    );
    for b in ["ip6tables-legacy", "nftables"] {
        assert_ipv6(&stdout, b, &stderr);
    }
    // No IPv4 configuration was set up.
    assert!(
        !stdout.contains("### Rules failing on the source address"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
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
        test_support::unavailable("no bpfilter binary beside netbench (run `make` first)");
        return;
    };
    let out = tiny_run()
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
    // `bpfilter` stands for one configuration per packet-access strategy, each measured.
    for b in ["bpfilter-cast", "bpfilter-dynptr"] {
        assert_numbers(&stdout, b, &stderr);
        assert_ipv6(&stdout, b, &stderr);
    }
    assert_features(&stdout, &stderr);
    // The daemons' event counters were read (`bpfilter status`) for the REJECT and LOG rows.
    for b in ["bpfilter-cast", "bpfilter-dynptr"] {
        assert!(
            stdout.contains(&format!("| `--dport 5001 -j REJECT` | {b} | ")),
            "no event counters of {b}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("bpfilter-cast (`--packet-access cast`, its log says `strategy=cast`)"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("bpfilter-dynptr (`--packet-access dynptr`, its log says `strategy=dynptr`)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Every measured configuration"),
        "checks failed:\n{stdout}"
    );
}

/// A strategy whose daemon refuses to start (here a wrapper that refuses `--packet-access
/// dynptr` the way the daemon does on a kernel that does not verify it) is reported as
/// refused, with the daemon's line, and the run goes on with the other strategy.
#[test]
fn a_refused_strategy_is_reported() {
    if !ready() {
        return;
    }
    let Some(dir) = bpfilter_dir() else {
        eprintln!("skipped: no bpfilter binary beside netbench (run `make` first)");
        return;
    };
    let wrap = std::env::temp_dir().join(format!("netbench-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&wrap).expect("mkdir");
    let script = format!(
        "#!/bin/sh\n\
         case \" $* \" in *' --packet-access dynptr '*)\n\
         echo 'bpfilter: this kernel (test) cannot run bpfilter: packet access dynptr was asked \
         for, but the verifier refuses it: refused by the test wrapper' >&2; exit 1;;\n\
         esac\n\
         exec '{}' \"$@\"\n",
        dir.join("bpfilter").display()
    );
    let bin = wrap.join("bpfilter");
    std::fs::write(&bin, script).expect("write wrapper");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = tiny_run()
        .args(["--kinds", "addr"])
        .args([
            "--backends",
            "iptables-legacy,bpfilter",
            "--bpfilter-access",
            "cast,dynptr",
            "--no-write",
            "--no-floor",
        ])
        .arg("--bin-dir")
        .arg(&wrap)
        .output()
        .expect("run netbench");
    let _ = std::fs::remove_dir_all(&wrap);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "netbench failed:\n{stderr}");
    assert_numbers(&stdout, "bpfilter-cast", &stderr);
    assert_numbers(&stdout, "iptables-legacy", &stderr);
    let row = first_table_row(&stdout, "bpfilter-dynptr")
        .unwrap_or_else(|| panic!("no bpfilter-dynptr row:\n{stdout}"));
    assert!(
        row.starts_with("| bpfilter-dynptr | refused | refused |"),
        "{row}"
    );
    assert!(
        stdout.contains("bpfilter-dynptr: not measured, refused: the daemon said `bpfilter: this kernel (test) cannot run bpfilter"),
        "{stdout}"
    );
    assert!(stdout.contains("refused by the test wrapper"), "{stdout}");
    assert!(
        stdout.contains("Every measured configuration"),
        "checks failed:\n{stdout}"
    );
}
