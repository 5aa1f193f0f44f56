//! Real rulesets written by other projects (fixtures/real/: Docker, kube-proxy, libvirt, ufw,
//! firewalld, fail2ban, OpenWrt, NixOS, Tailscale, WireGuard, Podman), each with its source. For
//! every line of fixtures/real/MANIFEST.tsv:
//!
//! - `whole`: the file applies through bpfilter exactly as through the kernel's iptables-legacy
//!   (same exit status and output), every table saves and lists identically (with and without
//!   counters), and a little real traffic through INPUT, FORWARD and OUTPUT leaves the same
//!   counters on both sides.
//! - `refused:EXT[,EXT]`: bpfilter's restore fails, the daemon's refusal names one of the listed
//!   extensions, and the namespace's filter table is the pristine one (nothing partially
//!   applied). Each listed extension alone is refused by bpfilter and accepted by the kernel (so
//!   the list is not stale), and the filter table without the rules using them applies and saves
//!   exactly as with the kernel (so the list is complete).
//!
//! A file's `# setup: CMD` comment lines run in both namespaces before anything else (ipsets the
//! ruleset refers to, say).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::{probe, seen, Daemon, Pair, Tool};
use test_support::netns::{sh, Netns};
use test_support::privileged;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/real")
}

/// What the manifest expects of a ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Whole,
    Refused(Vec<String>),
}

/// MANIFEST.tsv: name, expect, why.
fn manifest() -> Vec<(String, Expect)> {
    let text = std::fs::read_to_string(dir().join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                cols.len(),
                3,
                "MANIFEST.tsv line needs 3 tab-separated columns: {l}"
            );
            let expect = match cols[1] {
                "whole" => Expect::Whole,
                e => {
                    let exts = e.strip_prefix("refused:").unwrap_or_else(|| {
                        panic!("expect must be whole or refused:EXT[,EXT]: {l}")
                    });
                    Expect::Refused(exts.split(',').map(str::to_owned).collect())
                }
            };
            (cols[0].to_owned(), expect)
        })
        .collect()
}

/// One ruleset file, split up.
struct Ruleset {
    text: String,
    /// `# setup:` commands.
    setup: Vec<String>,
    /// Tables in file order.
    tables: Vec<String>,
    /// The filter section's lines between `*filter` and `COMMIT`.
    filter: Vec<String>,
}

fn load(name: &str) -> Ruleset {
    let text = std::fs::read_to_string(dir().join(format!("{name}.rules")))
        .unwrap_or_else(|e| panic!("{name}.rules: {e}"));
    let mut setup = Vec::new();
    let mut tables = Vec::new();
    let mut filter = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("# setup:") {
            setup.push(cmd.trim().to_owned());
        } else if let Some(t) = line.strip_prefix('*') {
            current = t.trim().to_owned();
            tables.push(current.clone());
        } else if line.trim() == "COMMIT" {
            current.clear();
        } else if current == "filter" && !line.starts_with('#') && !line.trim().is_empty() {
            filter.push(line.to_owned());
        }
    }
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.starts_with("# source:")),
        "{name}.rules must begin with a `# source:` line"
    );
    for key in ["# project:", "# notes:"] {
        assert!(
            text.lines().any(|l| l.starts_with(key)),
            "{name}.rules lacks a `{key}` line"
        );
    }
    Ruleset {
        text,
        setup,
        tables,
        filter,
    }
}

/// Whether a rule line uses extension `ext` as a match (`-m`) or a target (`-j`/`-g`).
fn uses(rule: &str, ext: &str) -> bool {
    let toks: Vec<&str> = rule.split_whitespace().collect();
    toks.windows(2).any(|w| {
        matches!(w[0], "-m" | "--match" | "-j" | "--jump" | "-g" | "--goto") && w[1] == ext
    })
}

fn is_rule(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("-A") || l.starts_with("-I") || l.starts_with('[')
}

/// A filter table of the file's chain lines and the given rules.
fn filter_table(rs: &Ruleset, rules: &[&String]) -> String {
    let mut s = String::from("*filter\n");
    for l in rs.filter.iter().filter(|l| l.starts_with(':')) {
        s.push_str(l);
        s.push('\n');
    }
    for r in rules {
        s.push_str(r);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

fn run_setup(p: &Pair, rs: &Ruleset) {
    if rs.setup.iter().any(|c| c.starts_with("ipset")) {
        assert!(
            std::process::Command::new("ipset")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "this ruleset needs the ipset tool (Debian package ipset) to create its sets"
        );
    }
    for ns in [&p.kernel, &p.bpf] {
        for cmd in &rs.setup {
            ns.sh(cmd);
        }
    }
}

/// The daemon's refusals ("refused: entry N ... Match "X" ...") logged after `from`.
fn refusals(d: &Daemon, from: usize) -> Vec<String> {
    let log = d.log();
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("refused: entry"))
        .map(str::to_owned)
        .collect()
}

/// Compares every table of the file (and the whole save) on both sides, with and without counters.
fn compare_tables(p: &Pair, d: &Daemon, rs: &Ruleset) {
    p.same(d, Tool::Save, &[], "");
    p.same(d, Tool::Save, &["-c"], "");
    for t in &rs.tables {
        p.same(d, Tool::Save, &["-t", t], "");
        p.same(d, Tool::Save, &["-c", "-t", t], "");
        p.same(d, Tool::Iptables, &["-t", t, "-L", "-n", "-v", "-x"], "");
        p.same(d, Tool::Iptables, &["-t", t, "-S"], "");
    }
    if rs.tables.iter().any(|t| t == "filter") {
        p.same_listing(d);
    }
}

/// What one side sees of a little traffic: TCP and UDP probes from the sender to the firewall
/// (INPUT) and through it to the target (FORWARD), pings both ways, and the firewall's own
/// pings and datagrams (OUTPUT).
fn traffic(fw: &Netns, sender: &Netns) -> Vec<String> {
    let mut seen = probe(
        sender,
        &[
            "tcp:10.9.1.2:22",
            "tcp:10.9.1.2:80",
            "udp:10.9.1.2:53",
            "tcp:10.9.2.2:443",
            "udp:10.9.2.2:53",
        ],
    );
    for (ns, dst) in [
        (sender, "10.9.1.2"),
        (sender, "10.9.2.2"),
        (fw, "10.9.2.2"),
        (fw, "10.9.1.1"),
    ] {
        let rc = sh(&format!(
            "ip netns exec {} ping -c1 -W0.5 {dst} >/dev/null 2>&1; echo $?",
            ns.name
        ));
        seen.push(format!(
            "ping {dst} from {}: {}",
            if ns.name == fw.name { "fw" } else { "sender" },
            rc.trim()
        ));
    }
    let out = fw.sh("echo x > /dev/udp/10.9.2.2/5353 2>&1; echo $?");
    seen.push(format!("fw udp 10.9.2.2:5353: {}", out.trim()));
    seen
}

fn check_whole(name: &str, rs: &Ruleset) {
    let d = Daemon::start();
    let p = Pair::new();
    run_setup(&p, rs);
    let (code, _, err) = p.same(&d, Tool::Restore, &["-c"], &rs.text);
    assert_eq!(code, 0, "{name}: the whole ruleset must apply: {err}");
    compare_tables(&p, &d, rs);
    // The filter table is bpfilter's, never the kernel's.
    let names = sh(&format!(
        "ip netns exec {} cat /proc/net/ip_tables_names",
        p.bpf.name
    ));
    assert!(
        !names.lines().any(|l| l.trim() == "filter"),
        "{name}: the kernel must not hold a filter table in bpfilter's namespace: {names}"
    );
    let counters = || seen(&common::kernel(&p.kernel, Tool::Save, &["-c"], "")).1;
    let before = counters();
    let (k, b) = p.topologies();
    // Both sides at once: a dropped probe waits out its timeout, the same on each side.
    let (kres, bres) = std::thread::scope(|s| {
        let kernel_side = s.spawn(|| traffic(&p.kernel, &k.sender));
        let bres = traffic(&p.bpf, &b.sender);
        (kernel_side.join().expect("kernel-side traffic"), bres)
    });
    eprintln!("{name}: traffic as the kernel's side saw it: {kres:#?}");
    assert_eq!(
        bres, kres,
        "{name}: the traffic is answered differently (left: bpfilter)"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(
        counters(),
        before,
        "{name}: the traffic must move some counter"
    );
    compare_tables(&p, &d, rs);
}

fn check_refused(name: &str, rs: &Ruleset, exts: &[String]) {
    let d = Daemon::start();
    let p = Pair::new();
    run_setup(&p, rs);
    let pristine = seen(&common::kernel(
        &p.kernel,
        Tool::Save,
        &["-c", "-t", "filter"],
        "",
    ));

    // The whole file: refused, naming one of the extensions, nothing left in the filter table.
    let from = d.log().len();
    let out = d.iptables(&p.bpf, Tool::Restore, &["-c"], &rs.text);
    let (code, _, err) = seen(&out);
    assert_ne!(
        code, 0,
        "{name}: bpfilter must refuse the ruleset (listed: {exts:?})"
    );
    assert!(
        !err.trim().is_empty(),
        "{name}: the refusal must be reported on stderr"
    );
    let refused = refusals(&d, from);
    assert!(
        refused.iter().any(|l| exts.iter().any(|e| l.contains(&format!("\"{e}\"")))),
        "{name}: the daemon's refusal must name one of {exts:?}; stderr: {err}\nrefusals: {refused:#?}"
    );
    p.same(&d, Tool::Save, &["-c", "-t", "filter"], "");
    p.same(&d, Tool::Iptables, &["-L", "-n", "-v", "-x"], "");
    let after = seen(&d.iptables(&p.bpf, Tool::Save, &["-c", "-t", "filter"], ""));
    assert_eq!(
        after, pristine,
        "{name}: the refused restore left something in the filter table"
    );

    // Each listed extension alone: refused by bpfilter, accepted by the kernel.
    for ext in exts {
        let rule = rs
            .filter
            .iter()
            .find(|l| is_rule(l) && uses(l, ext))
            .unwrap_or_else(|| panic!("{name}: MANIFEST lists {ext} but no filter rule uses it"));
        let table = filter_table(rs, &[rule]);
        let from = d.log().len();
        let b = seen(&d.iptables(&p.bpf, Tool::Restore, &["-c"], &table));
        let k = seen(&common::kernel(&p.kernel, Tool::Restore, &["-c"], &table));
        assert_eq!(k.0, 0, "{name}: the kernel must accept `{rule}`: {}", k.2);
        assert_ne!(
            b.0, 0,
            "{name}: bpfilter now accepts `{rule}`: {ext} is supported, update MANIFEST.tsv"
        );
        let refused = refusals(&d, from);
        assert!(
            refused.iter().any(|l| l.contains(&format!("\"{ext}\""))),
            "{name}: the refusal of `{rule}` must name {ext}: {refused:#?}"
        );
    }

    // The rest of the filter table applies and saves as with the kernel: the list is complete.
    // (Fresh namespaces: the refused restore above committed the tables before `*filter` to the
    // kernel in bpfilter's namespace, as iptables-restore does table by table.)
    let p = Pair::new();
    run_setup(&p, rs);
    let rest: Vec<&String> = rs
        .filter
        .iter()
        .filter(|l| is_rule(l) && !exts.iter().any(|e| uses(l, e)))
        .collect();
    let table = filter_table(rs, &rest);
    let (code, _, err) = p.same(&d, Tool::Restore, &["-c"], &table);
    assert_eq!(
        code, 0,
        "{name}: without the rules using {exts:?} the filter table must apply: {err}"
    );
    p.same(&d, Tool::Save, &["-c", "-t", "filter"], "");
    p.same_listing(&d);
}

fn check(name: &str) {
    if !privileged() {
        return;
    }
    let expect = manifest()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is not in fixtures/real/MANIFEST.tsv"))
        .1;
    let rs = load(name);
    match expect {
        Expect::Whole => check_whole(name, &rs),
        Expect::Refused(exts) => check_refused(name, &rs, &exts),
    }
}

/// One test per ruleset, in the module `in_namespace_pairs` that `make test` runs on its own
/// with several threads: each test has its own daemon, namespaces and xtables lock, and most of
/// its time is the probes' timeouts.
macro_rules! real {
    ($($f:ident => $name:literal,)*) => {
        const NAMES: &[&str] = &[$($name),*];
        mod in_namespace_pairs {
            $(
                #[test]
                fn $f() {
                    super::check($name);
                }
            )*
        }
    };
}

real! {
    docker_27_published_port => "docker-27-published-port",
    docker_28_published_port => "docker-28-published-port",
    docker_28_0_routed_ipset => "docker-28.0-routed-ipset",
    docker_28_0_swarm_ingress_ipset => "docker-28.0-swarm-ingress-ipset",
    fail2ban_ipset => "fail2ban-ipset",
    fail2ban_multiport => "fail2ban-multiport",
    firewalld_centos7 => "firewalld-centos7",
    k8s_centos7_docker_libvirt_node => "k8s-centos7-docker-libvirt-node",
    k8s_kube_proxy_flannel_node => "k8s-kube-proxy-flannel-node",
    kube_proxy_2015_userspace_docker_node => "kube-proxy-2015-userspace-docker-node",
    kube_proxy_overall_test => "kube-proxy-overall-test",
    libvirt_nat_network => "libvirt-nat-network",
    libvirt_nwfilter_example1 => "libvirt-nwfilter-example1",
    nixos_firewall => "nixos-firewall",
    openwrt_15_05_fw3_pppoe_router => "openwrt-15.05-fw3-pppoe-router",
    podman_cni_netfilter_persistent => "podman-cni-netfilter-persistent",
    tailscale_proxmox_host => "tailscale-proxmox-host",
    ufw_0_29_ubuntu_host => "ufw-0.29-ubuntu-host",
    ufw_docker28_libvirt_host => "ufw-docker28-libvirt-host",
    wg_quick_default_route => "wg-quick-default-route",
    arch_wiki_simple_stateful_firewall => "arch-wiki-simple-stateful-firewall",
    cilium_kube_router_ipvs_docker_node => "cilium-kube-router-ipvs-docker-node",
    fail2ban_0_8_multiport_log => "fail2ban-0.8-multiport-log",
    fail2ban_xt_recent_echo => "fail2ban-xt-recent-echo",
    ufw_0_36_limit_wireguard_vps => "ufw-0.36-limit-wireguard-vps",
    angristan_openvpn_install_server => "angristan-openvpn-install-server",
    networkmanager_shared_wlan0 => "networkmanager-shared-wlan0",
    nyr_openvpn_install_server => "nyr-openvpn-install-server",
}

/// Every .rules file has exactly one manifest line and one test, and every file carries its
/// source (unprivileged: runs everywhere).
#[test]
fn manifest_covers_every_file() {
    let files: BTreeSet<String> = std::fs::read_dir(dir())
        .expect("fixtures/real")
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".rules").map(str::to_owned)
        })
        .collect();
    let listed: Vec<String> = manifest().into_iter().map(|(n, _)| n).collect();
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "a name appears twice in MANIFEST.tsv"
    );
    assert_eq!(unique, files, "MANIFEST.tsv and the .rules files differ");
    let tested: BTreeSet<String> = NAMES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        tested, files,
        "the real! list in tests/real_rulesets.rs and the .rules files differ"
    );
    for (name, expect) in manifest() {
        let rs = load(&name);
        if let Expect::Refused(exts) = expect {
            for ext in exts {
                assert!(
                    rs.filter.iter().any(|l| is_rule(l) && uses(l, &ext)),
                    "{name}: MANIFEST lists {ext} but no filter rule uses it"
                );
            }
        }
    }
}
