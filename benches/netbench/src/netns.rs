//! Network namespaces, veth pairs and commands run inside them.
//!
//! Each configuration gets its own sender namespace and firewall namespace joined by one veth
//! pair, with the same addresses everywhere (10.200.0.1 -> 10.200.0.2), IPv6 off and static
//! neighbour entries so that no packet other than the benchmark's own crosses the link.
//!
//! An IPv6 pair (fd00:200::1 -> fd00:200::2, IPv4 unused) keeps the link as quiet: no
//! duplicate address detection (`nodad`, `accept_dad` 0), no link-local address
//! (`addr_gen_mode` none), no router solicitations or advertisements, and the veth ends
//! without ARP/ND (`arp off`: no solicited-node group is joined, so no MLD report crosses the
//! link; the permanent neighbour entries give the MAC addresses).

use std::fs::File;
use std::io::Read as _;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::ruleset::{Family, DPORT, DST, SRC};

/// Prefix of every namespace this benchmark creates; the creating process id follows, so
/// that a run removes only what dead runs left behind.
pub const PREFIX: &str = "nbench-";

const MAC_SENDER: &str = "02:00:0a:c8:00:01";
const MAC_FIREWALL: &str = "02:00:0a:c8:00:02";

/// A finished command: its wall time (process start to exit) and its output.
#[derive(Debug)]
pub struct Timed {
    /// Wall time around the whole command, process start and exit included.
    pub elapsed: Duration,
    /// Exit status, stdout and stderr.
    pub output: Output,
}

/// Run a command with a timeout, timing it from spawn to exit. The timing thread waits on
/// the child itself, so the measured time carries no polling delay.
pub fn run_timed(mut cmd: Command, timeout: Duration) -> Result<Timed> {
    let desc = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("spawn {desc}"))?;
    let pid = child.id();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((start.elapsed(), out));
    });
    match rx.recv_timeout(timeout) {
        Ok((elapsed, out)) => Ok(Timed {
            elapsed,
            output: out.with_context(|| format!("wait {desc}"))?,
        }),
        Err(_) => {
            // Our own child, by its pid.
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            bail!("timed out after {timeout:?}: {desc}")
        }
    }
}

/// `prog arg arg ...` of a command, for messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command that must succeed; returns its timing and output.
pub fn run_ok(cmd: Command, timeout: Duration) -> Result<Timed> {
    let desc = describe(&cmd);
    let t = run_timed(cmd, timeout)?;
    if !t.output.status.success() {
        bail!(
            "{desc} failed ({}): {}",
            t.output.status,
            String::from_utf8_lossy(&t.output.stderr).trim()
        );
    }
    Ok(t)
}

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) -> Result<()> {
    let mut c = Command::new("ip");
    c.args(args);
    run_ok(c, Duration::from_secs(30)).map(|_| ())
}

/// A command that runs `prog args` inside namespace `ns` (`ip netns exec`).
pub fn in_ns_cmd(ns: &str, prog: &Path, args: &[String]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog).args(args);
    c
}

/// The process id in a name `<prefix><pid>-...`, if any.
pub fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// Whether a process with this id is alive.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Delete the namespaces that runs no longer alive left behind (a killed run).
pub fn remove_stale() -> usize {
    let mut n = 0;
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return 0;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if owner_pid(&name, PREFIX).is_some_and(|p| !pid_alive(p)) {
            delete(&name);
            n += 1;
        }
    }
    n
}

/// Delete one namespace (errors ignored: used on teardown).
pub fn delete(name: &str) {
    let mut c = Command::new("ip");
    c.args(["netns", "del", name]);
    let _ = run_timed(c, Duration::from_secs(60));
}

/// A sender namespace and a firewall namespace joined by veth, addressed and with static
/// neighbours.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Namespace that sends (10.200.0.1).
    pub sender: String,
    /// Namespace that holds the firewall under test and the receiving socket (10.200.0.2).
    pub firewall: String,
}

impl Pair {
    /// Create the two namespaces of configuration `tag` and wire them (IPv4).
    pub fn create(tag: &str) -> Result<Pair> {
        Pair::create_family(tag, Family::Ipv4)
    }

    /// Create the two namespaces of configuration `tag` and wire them for family `f`.
    pub fn create_family(tag: &str, f: Family) -> Result<Pair> {
        let pid = std::process::id();
        let p = Pair {
            sender: format!("{PREFIX}{pid}-{tag}-s"),
            firewall: format!("{PREFIX}{pid}-{tag}-f"),
        };
        for ns in [&p.sender, &p.firewall] {
            ip(&["netns", "add", ns])?;
            // Set before the veth exists, so that it never sends a router solicitation (IPv4:
            // IPv6 off altogether).
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "sysctl", "-qw"])
                .args(quiet_sysctls(f));
            run_ok(c, Duration::from_secs(30))?;
        }
        if f == Family::Ipv6 {
            p.wire_ipv6()?;
            return Ok(p);
        }
        let (s, f) = (p.sender.as_str(), p.firewall.as_str());
        ip(&[
            "-n",
            s,
            "link",
            "add",
            "nb0",
            "address",
            MAC_SENDER,
            "type",
            "veth",
            "peer",
            "name",
            "nb1",
            "address",
            MAC_FIREWALL,
            "netns",
            f,
        ])?;
        let (src, dst) = (format!("{SRC}/24"), format!("{DST}/24"));
        ip(&["-n", s, "addr", "add", &src, "dev", "nb0"])?;
        ip(&["-n", f, "addr", "add", &dst, "dev", "nb1"])?;
        for (ns, dev) in [(s, "nb0"), (f, "nb1")] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        let (src, dst) = (SRC.to_string(), DST.to_string());
        ip(&[
            "-n",
            s,
            "neigh",
            "replace",
            &dst,
            "lladdr",
            MAC_FIREWALL,
            "dev",
            "nb0",
            "nud",
            "permanent",
        ])?;
        ip(&[
            "-n",
            f,
            "neigh",
            "replace",
            &src,
            "lladdr",
            MAC_SENDER,
            "dev",
            "nb1",
            "nud",
            "permanent",
        ])?;
        Ok(p)
    }

    /// The IPv6 veth, addresses and neighbours (see the module doc for what keeps it quiet).
    fn wire_ipv6(&self) -> Result<()> {
        let (s, f) = (self.sender.as_str(), self.firewall.as_str());
        ip(&[
            "-n",
            s,
            "link",
            "add",
            "nb0",
            "address",
            MAC_SENDER,
            "type",
            "veth",
            "peer",
            "name",
            "nb1",
            "address",
            MAC_FIREWALL,
            "netns",
            f,
        ])?;
        let (src, dst) = (Family::Ipv6.src(), Family::Ipv6.dst());
        for (ns, dev, addr, peer, mac) in [
            (s, "nb0", src, dst, MAC_FIREWALL),
            (f, "nb1", dst, src, MAC_SENDER),
        ] {
            ip(&["-n", ns, "link", "set", dev, "arp", "off"])?;
            let a = format!("{addr}/64");
            ip(&["-n", ns, "addr", "add", &a, "dev", dev, "nodad"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            let peer = peer.to_string();
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                &peer,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// Delete both namespaces.
    pub fn destroy(&self) {
        delete(&self.sender);
        delete(&self.firewall);
    }
}

/// The sysctls a new namespace of family `f` gets before its veth exists.
pub fn quiet_sysctls(f: Family) -> &'static [&'static str] {
    match f {
        Family::Ipv4 => &[
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
        Family::Ipv6 => &[
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.router_solicitations=0",
            "net.ipv6.conf.default.router_solicitations=0",
            "net.ipv6.conf.all.accept_ra=0",
            "net.ipv6.conf.default.accept_ra=0",
            // 1 = none: no link-local address, so nothing to announce or defend.
            "net.ipv6.conf.all.addr_gen_mode=1",
            "net.ipv6.conf.default.addr_gen_mode=1",
        ],
    }
}

/// Pairs of namespaces, deleted when dropped, so that an error leaves nothing behind.
#[derive(Debug, Default)]
pub struct Pairs(pub Vec<Pair>);

impl Pairs {
    /// Creates a [`Pair`] (kept for deletion) with the benchmark's two sockets: the sender's,
    /// connected to DST:DPORT, and a receiver bound there in the firewall namespace (never
    /// read). The pair, the sending socket, the receiving socket.
    pub fn create(&mut self, tag: &str) -> Result<(Pair, UdpSocket, UdpSocket)> {
        self.create_family(tag, Family::Ipv4)
    }

    /// [`Pairs::create`] for family `f` (IPv6: `fd00:200::1 -> [fd00:200::2]:5001`).
    pub fn create_family(&mut self, tag: &str, f: Family) -> Result<(Pair, UdpSocket, UdpSocket)> {
        let pair = Pair::create_family(tag, f)?;
        self.0.push(pair.clone());
        let (src, dst) = (f.src(), f.dst());
        let tx = in_netns(&pair.sender, move || {
            let s = UdpSocket::bind((src, 0)).context("bind sender")?;
            s.connect((dst, DPORT)).context("connect sender")?;
            Ok(s)
        })?;
        let rx = in_netns(&pair.firewall, move || {
            UdpSocket::bind((dst, DPORT)).context("bind receiver")
        })?;
        Ok((pair, tx, rx))
    }
}

impl Drop for Pairs {
    fn drop(&mut self) {
        for p in &self.0 {
            p.destroy();
        }
    }
}

/// Run `f` on a new thread that has entered namespace `ns` (setns affects only that thread;
/// sockets and /proc/thread-self/net files opened there stay bound to `ns`).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    test_support::netns::try_in_netns(ns, f).with_context(|| format!("namespace {ns}"))?
}

/// `/proc/net/snmp` of one namespace, held open so that it can be re-read from any thread.
#[derive(Debug)]
pub struct Snmp {
    file: File,
    /// `/proc/net/snmp6` (one `Name value` per line) is open for IPv6.
    six: bool,
}

impl Snmp {
    /// Open the snmp counters of namespace `ns`.
    pub fn open(ns: &str) -> Result<Snmp> {
        Snmp::open_family(ns, Family::Ipv4)
    }

    /// Open the counters of namespace `ns` for family `f` (`/proc/net/snmp`, `snmp6`).
    pub fn open_family(ns: &str, f: Family) -> Result<Snmp> {
        let path = match f {
            Family::Ipv4 => "/proc/thread-self/net/snmp",
            Family::Ipv6 => "/proc/thread-self/net/snmp6",
        };
        let file = in_netns(ns, move || {
            File::open(path).with_context(|| format!("open {path}"))
        })?;
        Ok(Snmp {
            file,
            six: f == Family::Ipv6,
        })
    }

    /// Current `Ip: InReceives` (`Ip6InReceives` for IPv6) of the namespace.
    pub fn in_receives(&mut self) -> Result<u64> {
        if self.six {
            use std::io::Seek as _;
            self.file.rewind().context("rewind snmp6")?;
            let mut s = String::new();
            self.file.read_to_string(&mut s).context("read snmp6")?;
            return snmp6_field(&s, "Ip6InReceives")
                .ok_or_else(|| anyhow!("no Ip6InReceives in snmp6"));
        }
        self.field("Ip", "InReceives")
    }

    /// Current value of one counter, e.g. ("Tcp", "InSegs").
    pub fn field(&mut self, proto: &str, field: &str) -> Result<u64> {
        use std::io::Seek as _;
        self.file.rewind().context("rewind snmp")?;
        let mut s = String::new();
        self.file.read_to_string(&mut s).context("read snmp")?;
        test_support::snmp::field(&s, proto, field)
            .ok_or_else(|| anyhow!("no {proto} {field} in snmp"))
    }
}

/// One counter of `/proc/net/snmp6` text (`Ip6InReceives    42` lines).
pub fn snmp6_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == name).then(|| w.next()?.parse().ok())?
    })
}

/// A file of namespace `ns` read by a thread inside it (`/proc/sys/net/...` answers for the
/// reader's namespace), trimmed.
pub fn read_in_netns(ns: &str, path: &'static str) -> Result<String> {
    in_netns(ns, move || {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .with_context(|| format!("read {path}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names() {
        assert_eq!(owner_pid("nbench-1234-ipt-addr-10-s", PREFIX), Some(1234));
        assert_eq!(owner_pid("nbench-x-s", PREFIX), None);
        assert_eq!(owner_pid("other-1234", PREFIX), None);
        assert!(pid_alive(std::process::id()));
    }

    #[test]
    fn snmp6_counters_parse() {
        let t = "Ip6InReceives                   \t42\nIp6InHdrErrors                  \t0\n\
                 Ip6InReceivesX 7\n";
        assert_eq!(snmp6_field(t, "Ip6InReceives"), Some(42));
        assert_eq!(snmp6_field(t, "Ip6InHdrErrors"), Some(0));
        assert_eq!(snmp6_field(t, "Ip6InDelivers"), None);
    }

    #[test]
    fn ipv6_namespaces_stay_quiet() {
        let v6 = quiet_sysctls(Family::Ipv6);
        for key in ["accept_dad=0", "router_solicitations=0", "accept_ra=0"] {
            assert!(v6.iter().any(|s| s.ends_with(key)), "{key}");
        }
        assert!(!v6.iter().any(|s| s.contains("disable_ipv6")));
        assert!(quiet_sysctls(Family::Ipv4)
            .iter()
            .all(|s| s.ends_with("disable_ipv6=1")));
    }

    #[test]
    fn timed_command_reports_failure_and_timeout() {
        let mut ok = Command::new("true");
        ok.arg("x");
        assert!(run_ok(ok, Duration::from_secs(5)).is_ok());
        assert!(run_ok(Command::new("false"), Duration::from_secs(5)).is_err());
        let mut slow = Command::new("sleep");
        slow.arg("5");
        let t0 = Instant::now();
        assert!(run_timed(slow, Duration::from_millis(100)).is_err());
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
}
