//! Harness of the privileged end-to-end tests: a real daemon, real network namespaces, the
//! real iptables-legacy binaries, and the kernel's own iptables-legacy as the reference.
#![allow(dead_code)]

pub mod kmsg;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bpfilter::sys::{IdKind, Link, Map, Program};
use test_support::netns::{run, sh, unique, Netns};

/// The bpfilter binary under test.
pub fn bpfilter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bpfilter"))
}

/// A running daemon with its own socket and bpffs folder.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// Its socket.
    pub socket: PathBuf,
    /// Its pin folder.
    pub bpffs: PathBuf,
    dir: PathBuf,
    /// Options of `bpfilter daemon` beyond its socket and pin folder, kept for restarts.
    options: Vec<String>,
}

impl Daemon {
    /// Starts a daemon and waits until its socket accepts.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// [`Daemon::start`] with more options of `bpfilter daemon`.
    pub fn start_with(options: &[&str]) -> Daemon {
        let name = unique("bpft");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut d = Daemon {
            child: None,
            socket: dir.join("sock"),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/{name}")),
            dir,
            options: options.iter().map(|o| o.to_string()).collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("log");
        let child = Command::new(bpfilter_bin())
            .args(["daemon", "--socket"])
            .arg(&self.socket)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .args(&self.options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // The socket accepts from the start; a request is answered once the daemon has probed
        // the kernel and adopted the pinned state: wait for an answer.
        while libbpfilter::Client::connect_to(&self.socket)
            .and_then(|mut c| c.status(&[]))
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// kill -9, then start a new daemon on the same socket and pins.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Waits up to `limit` for the daemon to exit by itself; its exit status, or None if it
    /// did not exit in time (or was killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9 without restarting.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts after [`Daemon::kill9`].
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// `bpfilter <args>` against this daemon, run inside `ns`.
    pub fn bpfilter(&self, ns: &Netns, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(bpfilter_bin())
            .args(args)
            .env("BPFILTER_SOCKET", &self.socket))
    }

    /// `iptables-legacy[-save|-restore] <args>` through bpfilter in `ns`, with `stdin`.
    pub fn iptables(&self, ns: &Netns, tool: Tool, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(bpfilter_bin())
            .arg(tool.bpfilter_cmd())
            .args(args);
        cmd.env("BPFILTER_SOCKET", &self.socket)
            .env("XTABLES_LOCKFILE", xtables_lock(ns));
        with_stdin(cmd, stdin)
    }

    /// [`Daemon::iptables`], asserting that it succeeded (else its stderr and the daemon's
    /// log say why); its output.
    pub fn iptables_ok(&self, ns: &Netns, tool: Tool, args: &[&str], stdin: &str) -> Output {
        let out = self.iptables(ns, tool, args, stdin);
        assert!(
            out.status.success(),
            "`{} {}` failed: {}\n{}",
            tool.legacy(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new(bpfilter_bin())
            .args(["flush", "--all"])
            .env("BPFILTER_SOCKET", &self.socket)
            .output();
        let _ = Command::new("rm").arg("-rf").arg(&self.bpffs).output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("daemon log kept in {}", self.dir.display());
        }
    }
}

/// Which iptables binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// iptables-legacy
    Iptables,
    /// iptables-legacy-save
    Save,
    /// iptables-legacy-restore
    Restore,
    /// ip6tables-legacy
    Ip6tables,
    /// ip6tables-legacy-save
    Ip6Save,
    /// ip6tables-legacy-restore
    Ip6Restore,
}

impl Tool {
    fn legacy(self) -> &'static str {
        match self {
            Tool::Iptables => "iptables-legacy",
            Tool::Save => "iptables-legacy-save",
            Tool::Restore => "iptables-legacy-restore",
            Tool::Ip6tables => "ip6tables-legacy",
            Tool::Ip6Save => "ip6tables-legacy-save",
            Tool::Ip6Restore => "ip6tables-legacy-restore",
        }
    }
    fn bpfilter_cmd(self) -> &'static str {
        match self {
            Tool::Iptables => "iptables",
            Tool::Save => "iptables-save",
            Tool::Restore => "iptables-restore",
            Tool::Ip6tables => "ip6tables",
            Tool::Ip6Save => "ip6tables-save",
            Tool::Ip6Restore => "ip6tables-restore",
        }
    }
}

/// The kernel's own iptables-legacy in `ns`.
pub fn kernel(ns: &Netns, tool: Tool, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, tool.legacy()])
        .args(args)
        .env("XTABLES_LOCKFILE", xtables_lock(ns));
    with_stdin(cmd, stdin)
}

/// The xtables lock of the iptables commands run in `ns`: one per namespace, so that tests run
/// in parallel (real_rulesets) never find another test's command holding the machine's lock,
/// while the commands of one namespace stay serialized by it as on a host.
fn xtables_lock(ns: &Netns) -> PathBuf {
    std::env::temp_dir().join(format!("xtables-{}.lock", ns.name))
}

fn with_stdin(mut cmd: Command, stdin: &str) -> Output {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("wait")
}

/// What a user sees of a command: exit code, stdout, stderr; iptables-save's date lines
/// (`# Generated by ... on DATE`, `# Completed on DATE`) have their dates removed.
pub fn seen(out: &Output) -> (i32, String, String) {
    let clean = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .map(|l| {
                if l.starts_with("# Generated by") || l.starts_with("# Completed on") {
                    l.split(" on ").next().unwrap_or(l).to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    (
        out.status.code().unwrap_or(-1),
        clean(&out.stdout),
        clean(&out.stderr),
    )
}

/// A pair of namespaces, one filtered by the kernel, one by bpfilter, driven in lockstep.
#[derive(Debug)]
pub struct Pair {
    /// Kernel iptables-legacy namespace.
    pub kernel: Netns,
    /// bpfilter namespace.
    pub bpf: Netns,
}

impl Pair {
    /// Two fresh namespaces.
    pub fn new() -> Pair {
        Pair {
            kernel: Netns::new("k"),
            bpf: Netns::new("b"),
        }
    }

    /// Runs the same command on both sides and asserts that the user sees the same thing.
    pub fn same(
        &self,
        d: &Daemon,
        tool: Tool,
        args: &[&str],
        stdin: &str,
    ) -> (i32, String, String) {
        let k = seen(&kernel(&self.kernel, tool, args, stdin));
        let b = seen(&d.iptables(&self.bpf, tool, args, stdin));
        assert_eq!(
            b,
            k,
            "`{} {}` differs (left: bpfilter, right: kernel)\ndaemon log:\n{}",
            tool.legacy(),
            args.join(" "),
            d.log()
        );
        k
    }

    /// `same` for an iptables command line given as one string.
    pub fn ipt(&self, d: &Daemon, line: &str) -> (i32, String, String) {
        let args: Vec<&str> = line.split_whitespace().collect();
        self.same(d, Tool::Iptables, &args, "")
    }

    /// `ipt`, asserting that both sides refuse `line`; the stderr both print.
    pub fn refused(&self, d: &Daemon, line: &str) -> String {
        let (code, _, err) = self.ipt(d, line);
        assert_ne!(code, 0, "`{line}` must be refused");
        err
    }

    /// Asserts that both sides list the same ruleset and counters, in every listing format.
    pub fn same_listing(&self, d: &Daemon) {
        self.same(d, Tool::Save, &["-c"], "");
        self.ipt(d, "-S");
        self.ipt(d, "-L -n -v -x --line-numbers");
    }

    /// `same` for `iptables-restore` of `rules`, asserting that it applied on both sides.
    pub fn restore(&self, d: &Daemon, rules: &str) {
        let (code, _, err) = self.same(d, Tool::Restore, &[], rules);
        assert_eq!(code, 0, "the ruleset must apply: {err}");
    }

    /// A sender -- firewall -- target [`topology`] around each side: (kernel, bpfilter).
    pub fn topologies(&self) -> (Topology, Topology) {
        (topology(&self.kernel), topology(&self.bpf))
    }

    /// The kernel side's `iptables-save -c` (dates taken out).
    pub fn kernel_save(&self) -> String {
        seen(&kernel(&self.kernel, Tool::Save, &["-c"], "")).1
    }

    /// `iptables <args>` on bpfilter's side only, which must refuse it (`what` says why) and
    /// change nothing (`iptables-save -c` the same before and after); its stderr.
    pub fn bpf_refuses(&self, d: &Daemon, args: &[&str], what: &str) -> String {
        let save = || seen(&d.iptables(&self.bpf, Tool::Save, &["-c"], ""));
        let before = save();
        let (code, _, err) = seen(&d.iptables(&self.bpf, Tool::Iptables, args, ""));
        assert_ne!(code, 0, "{what}");
        assert_eq!(save(), before, "{what}: a refused rule changed the ruleset");
        err
    }
}

/// The start of a side-by-side test: a daemon and a fresh [`Pair`]; None, after the gate said
/// why, where privileged tests cannot run.
pub fn start_pair() -> Option<(Daemon, Pair)> {
    test_support::privileged().then(|| (Daemon::start(), Pair::new()))
}

/// The start of a test of one namespace: a daemon and a fresh namespace named from `prefix`;
/// None, after the gate said why, where privileged tests cannot run.
pub fn start_in(prefix: &str) -> Option<(Daemon, Netns)> {
    test_support::privileged().then(|| (Daemon::start(), Netns::new(prefix)))
}

/// sender (10.9.1.1) -- firewall (10.9.1.2 | 10.9.2.1) -- target (10.9.2.2)
///
/// The sender's and the target's devices have the fixed MAC addresses [`SENDER_MAC`] and
/// [`TARGET_MAC`], the same in every topology, so that `-m mac` rules read the same on both
/// sides of a comparison.
pub struct Topology {
    /// the sender (10.9.1.1)
    pub sender: Netns,
    /// the target behind the firewall (10.9.2.2)
    pub target: Netns,
}

/// The MAC address of the sender's device in a [`Topology`].
pub const SENDER_MAC: &str = "02:00:0a:09:01:01";
/// The MAC address of the target's device in a [`Topology`].
pub const TARGET_MAC: &str = "02:00:0a:09:02:02";

pub fn topology(fw: &Netns) -> Topology {
    let sender = Netns::new("s");
    let target = Netns::new("t");
    let (s, f, t) = (&sender.name, &fw.name, &target.name);
    for ns in [s, f, t] {
        // ICMP errors unlimited: rate limiting would make the two sides' traffic differ.
        sh(&format!(
            "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv4.conf.all.rp_filter=0 \
             net.ipv4.icmp_ratelimit=0 net.ipv4.icmp_msgs_per_sec=100000 net.ipv4.icmp_msgs_burst=100000 2>/dev/null || \
             ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.icmp_ratelimit=0"
        ));
    }
    sh(&format!(
        "ip link add a{s} netns {s} type veth peer name b{s} netns {f}"
    ));
    sh(&format!(
        "ip link add a{t} netns {t} type veth peer name c{t} netns {f}"
    ));
    sh(&format!(
        "ip -n {s} link set a{s} address {SENDER_MAC} && ip -n {t} link set a{t} address {TARGET_MAC}"
    ));
    sh(&format!(
        "ip -n {s} addr add 10.9.1.1/24 dev a{s} && ip -n {s} link set a{s} up && ip -n {s} route add default via 10.9.1.2 && \
         ip -n {f} addr add 10.9.1.2/24 dev b{s} && ip -n {f} link set b{s} up && \
         ip -n {f} addr add 10.9.2.1/24 dev c{t} && ip -n {f} link set c{t} up && \
         ip -n {t} addr add 10.9.2.2/24 dev a{t} && ip -n {t} link set a{t} up && ip -n {t} route add default via 10.9.2.1 && \
         ip netns exec {f} sysctl -qw net.ipv4.ip_forward=1"
    ));
    // Warm up ARP so that the measured traffic is only what the test sends.
    sh(&format!("ip netns exec {s} ping -c1 -W1 10.9.1.2 >/dev/null; ip netns exec {t} ping -c1 -W1 10.9.2.1 >/dev/null; true"));
    Topology { sender, target }
}

/// What the sender observes for a list of probes: per probe, the errno of a TCP connect, or of
/// a UDP datagram's reply wait, and how long it took to be refused. Every wait ends after 0.5 s,
/// before TCP's first SYN retransmission (1 s): a dropped SYN is sent exactly once on both
/// sides of a comparison, so their counters agree.
const PROBE: &str = r#"
import socket, sys
out = []
for spec in sys.argv[1:]:
    kind, host, port = spec.split(":")
    try:
        if kind == "tcp":
            s = socket.socket(); s.settimeout(0.5); s.connect((host, int(port))); s.close()
            res = "connected"
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)
            s.connect((host, int(port))); s.send(b"probe"); s.recv(100)
            res = "answered"
    except socket.timeout:
        res = "timeout"
    except OSError as e:
        res = "errno %d" % e.errno
    out.append("%s %s" % (spec, res))
print("\n".join(out))
"#;

/// What a sender in `ns` sees for each probe (`tcp:HOST:PORT`, `udp:HOST:PORT`): `connected`,
/// `answered`, `timeout` (0.5 s: an answer later than that differs from the kernel's) or
/// `errno N`.
pub fn probe(ns: &Netns, specs: &[&str]) -> Vec<String> {
    let out = sh(&format!(
        "ip netns exec {} python3 -c '{}' {}",
        ns.name,
        PROBE.replace('\'', "'\\''"),
        specs.join(" ")
    ));
    out.lines().map(str::to_owned).collect()
}

/// sender -- veth -- firewall: IPv6 off on both sides, `sender_ip/24` and `fw_ip/24` on the two
/// ends of a veth, the neighbour entry warmed by one ping; the sender's device.
pub fn sender_link(sender: &Netns, sender_ip: &str, fw: &Netns, fw_ip: &str) -> String {
    test_support::netns::no_ipv6(&sender.name);
    test_support::netns::no_ipv6(&fw.name);
    let (dev, _) = test_support::netns::veth(
        sender,
        &format!("{sender_ip}/24"),
        fw,
        &format!("{fw_ip}/24"),
    );
    sender.sh(&format!("ping -c1 -W2 {fw_ip} >/dev/null"));
    dev
}

/// The BPF objects pinned under a folder (recursively), by id.
#[derive(Debug, Default, Clone)]
pub struct Ids {
    /// Programs (pinned, or attached by a pinned link).
    pub progs: BTreeSet<u32>,
    /// Maps.
    pub maps: BTreeSet<u32>,
    /// Links.
    pub links: BTreeSet<u32>,
}

/// The ids of what is pinned under `root`.
pub fn pinned_ids(root: &Path) -> Ids {
    let mut ids = Ids::default();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if let Ok(map) = Map::from_pin(&path) {
                ids.maps.extend(map.id());
            } else if let Ok(prog) = Program::from_pin(&path) {
                ids.progs.extend(prog.id());
            } else if let Ok(link) = Link::from_pin(&path) {
                if let Ok(i) = link.info() {
                    ids.links.insert(i.id);
                    ids.progs.insert(i.prog_id);
                }
            }
        }
    }
    ids
}

impl Ids {
    /// Which of these objects the kernel still has.
    pub fn alive(&self) -> Vec<String> {
        let live = |k| -> BTreeSet<u32> {
            bpfilter::sys::object_ids(k)
                .unwrap_or_default()
                .into_iter()
                .collect()
        };
        let mut out: Vec<String> = self
            .progs
            .intersection(&live(IdKind::Prog))
            .map(|i| format!("prog {i}"))
            .collect();
        out.extend(
            self.maps
                .intersection(&live(IdKind::Map))
                .map(|i| format!("map {i}")),
        );
        out.extend(
            self.links
                .intersection(&live(IdKind::Link))
                .map(|i| format!("link {i}")),
        );
        out
    }
}

/// A proptest configuration of `cases` runs of the datapath's random programs, from a fixed
/// seed unless `PROPTEST_RNG_SEED` names another. About one random program in several hundred
/// passes the verifier's limits (8,192 pending branches, a million verified instructions) and
/// is refused: a known limit, not something a new seed on each run should fail CI on; and a
/// failure must reproduce.
pub fn seeded_runs(cases: u32) -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config {
        cases,
        ..Default::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(0x6270_666c_7472);
    }
    config
}
