//! Network namespaces, veth pairs and commands run inside them.
//!
//! Each configuration gets its own sender namespace and firewall namespace joined by one veth
//! pair, with the same addresses everywhere (10.200.0.1 -> 10.200.0.2), IPv6 off and static
//! neighbour entries so that no packet other than the benchmark's own crosses the link.

use std::fs::File;
use std::io::Read as _;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::ruleset::{DPORT, DST, SRC};

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
    /// Create the two namespaces of configuration `tag` and wire them.
    pub fn create(tag: &str) -> Result<Pair> {
        let pid = std::process::id();
        let p = Pair {
            sender: format!("{PREFIX}{pid}-{tag}-s"),
            firewall: format!("{PREFIX}{pid}-{tag}-f"),
        };
        for ns in [&p.sender, &p.firewall] {
            ip(&["netns", "add", ns])?;
            // IPv6 off before the veth exists, so that it never sends a router solicitation.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "sysctl", "-qw"]).args([
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
            run_ok(c, Duration::from_secs(30))?;
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

    /// Delete both namespaces.
    pub fn destroy(&self) {
        delete(&self.sender);
        delete(&self.firewall);
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
        let pair = Pair::create(tag)?;
        self.0.push(pair.clone());
        let tx = in_netns(&pair.sender, || {
            let s = UdpSocket::bind((SRC, 0)).context("bind sender")?;
            s.connect((DST, DPORT)).context("connect sender")?;
            Ok(s)
        })?;
        let rx = in_netns(&pair.firewall, || {
            UdpSocket::bind((DST, DPORT)).context("bind receiver")
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
}

impl Snmp {
    /// Open the snmp counters of namespace `ns`.
    pub fn open(ns: &str) -> Result<Snmp> {
        let file = in_netns(ns, || {
            File::open("/proc/thread-self/net/snmp").context("open /proc/thread-self/net/snmp")
        })?;
        Ok(Snmp { file })
    }

    /// Current `Ip: InReceives` of the namespace.
    pub fn in_receives(&mut self) -> Result<u64> {
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
