//! Namespace lifecycle: deleting a network namespace (`ip netns del`) after bpfilter rules were
//! applied in it must release its programs, maps, links and pins, and must not keep the
//! namespace alive (the daemon's garbage collector flushes namespaces that nothing but bpfilter
//! refers to any more). `bpfilter flush` (one namespace) and `bpfilter flush --all` must remove
//! every pin and link.
//!
//! Whether a namespace is really freed is seen through a witness: a veth pair with one end in
//! the namespace and the other in a witness namespace; the kernel destroys both ends when (and
//! only when) the namespace is dismantled.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bpfilter::sys::{self, IdKind, Program};
use common::{pinned_ids, Daemon, Ids, Tool};
use test_support::netns::{in_netns, sh, Netns};
use test_support::privileged;

/// How long the garbage collector may take (it should need about 2 s).
const GRACE: Duration = Duration::from_secs(10);

/// What of `ids` is still alive, plus live programs that use one of its maps.
fn alive(ids: &Ids) -> Vec<String> {
    let mut out = ids.alive();
    let progs = sys::object_ids(IdKind::Prog).unwrap_or_default();
    for p in progs.iter().filter(|p| !ids.progs.contains(p)) {
        if let Ok(info) = Program::from_id(*p).and_then(|p| p.info()) {
            if info.map_ids.iter().any(|m| ids.maps.contains(m)) {
                out.push(format!("prog {p} ({}) uses one of its maps", info.name));
            }
        }
    }
    out
}

/// Who still refers to the namespace `ino`: processes in it, fds on it, nsfs mounts of it.
fn holders(ino: u64) -> Vec<String> {
    let target = format!("net:[{ino}]");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|t| t.to_string_lossy() == target)
        {
            out.push(format!("process {pid}"));
        }
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == target) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                out.push(format!(
                    "fd {} of {pid} ({})",
                    fd.file_name().to_string_lossy(),
                    comm.trim()
                ));
            }
        }
    }
    if std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| m.contains(&target)) {
        out.push("an nsfs mount".into());
    }
    let lsns = Command::new("lsns")
        .args(["-t", "net", "-n", "-o", "NS"])
        .output();
    if lsns.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == ino.to_string())
    }) {
        out.push("listed by lsns".into());
    }
    out
}

/// A namespace that the test deletes itself, with a veth end in a witness namespace.
struct Watched {
    name: String,
    ino: u64,
    witness_dev: String,
}

impl Watched {
    fn new(witness: &Netns) -> Watched {
        let name = test_support::netns::unique("rnw");
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        let witness_dev = format!("w{name}");
        sh(&format!(
            "ip link add {witness_dev} netns {} type veth peer name x netns {name}",
            witness.name
        ));
        let ino = std::fs::metadata(format!("/run/netns/{name}"))
            .expect("netns")
            .ino();
        Watched {
            name,
            ino,
            witness_dev,
        }
    }

    /// A handle for the harness; never dropped, since dropping a `Netns` deletes it.
    fn ns(&self) -> std::mem::ManuallyDrop<Netns> {
        std::mem::ManuallyDrop::new(Netns {
            name: self.name.clone(),
        })
    }

    /// Whether the kernel still has the namespace (its veth end still exists).
    fn exists(&self, witness: &Netns) -> bool {
        Command::new("ip")
            .args(["-n", &witness.name, "link", "show", &self.witness_dev])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn delete(&self) {
        sh(&format!("ip netns del {}", self.name));
    }

    /// Applies the rules of [`apply`] in it; its pin folder under the daemon's.
    fn apply(&self, d: &Daemon) -> PathBuf {
        apply(d, &self.ns());
        d.bpffs.join(format!("net{}", self.ino))
    }

    /// Once its last reference went (`after`), asserts that its pins at `dir` go and the
    /// kernel dismantles it within GRACE.
    fn assert_dies(&self, witness: &Netns, dir: &Path, after: &str) {
        let gone = within(|| !dir.exists());
        let dismantled = within(|| !self.exists(witness));
        eprintln!(
            "after {after}: pins gone after {gone:?}, namespace dismantled after {dismantled:?}"
        );
        assert!(gone.is_some(), "pins still there after {after}");
        assert!(
            dismantled.is_some(),
            "namespace not freed after {after}; held by {:?}",
            holders(self.ino)
        );
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn apply(d: &Daemon, ns: &Netns) {
    d.iptables_ok(
        ns,
        Tool::Restore,
        &[],
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -p udp -m udp --dport 9 -j DROP\n-A OUTPUT -p tcp -m tcp --dport 25 -j DROP\nCOMMIT\n",
    );
}

/// Whether a UDP datagram to 127.0.0.1:9 inside `ns` is delivered (the rules drop it).
fn udp9_delivered(ns: &str) -> bool {
    in_netns(ns, || {
        let rx = UdpSocket::bind("127.0.0.1:9").expect("bind 9");
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.send_to(b"x", "127.0.0.1:9").expect("send");
        let mut buf = [0u8; 8];
        rx.recv(&mut buf).is_ok()
    })
}

/// Waits until `done` holds, up to GRACE; returns how long it took, or None.
fn within(mut done: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < GRACE {
        if done() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done().then(|| t0.elapsed())
}

/// Deletes the namespace and asserts that bpfilter lets go of everything of it within GRACE.
fn assert_released(d: &Daemon, w: &Watched, witness: &Netns, dir: &Path, ids: &Ids, what: &str) {
    w.delete();
    let gone = within(|| !dir.exists());
    let freed = within(|| alive(ids).is_empty());
    let dismantled = within(|| !w.exists(witness));
    eprintln!(
        "{what}: pin folder gone after {gone:?}, objects freed after {freed:?}, namespace dismantled after {dismantled:?}"
    );
    assert!(
        gone.is_some(),
        "{what}: pin folder {} still there {GRACE:?} after ip netns del\n{}",
        dir.display(),
        d.log()
    );
    assert!(freed.is_some(), "{what}: still alive: {:?}", alive(ids));
    assert!(
        dismantled.is_some(),
        "{what}: namespace net:[{}] not freed {GRACE:?} after ip netns del; held by {:?}",
        w.ino,
        holders(w.ino)
    );
    // Nothing to ask `holders` once it is dismantled: a holder would have kept it alive, and
    // the kernel gives its inode number to the next namespace made (another test's, running
    // meanwhile), whose mount or processes `holders` would then report.
}

#[test]
fn deleting_a_namespace_releases_its_programs_pins_and_the_namespace() {
    let Some((d, witness)) = common::start_in("rnx") else {
        return;
    };
    let w = Watched::new(&witness);
    let dir = w.apply(&d);
    assert!(!udp9_delivered(&w.name), "the rules are in force");
    let ids = pinned_ids(&dir);
    assert_eq!(
        (ids.links.len(), ids.progs.len()),
        (3, 6),
        "3 links, 3 dispatchers + 3 programs: {ids:?}"
    );
    assert_released(&d, &w, &witness, &dir, &ids, "ip netns del");
    // The daemon still serves other namespaces.
    let other = Netns::new("rno");
    apply(&d, &other);
    assert!(!udp9_delivered(&other.name));
}

#[test]
fn a_namespace_deleted_while_the_daemon_is_down_is_released_after_the_restart() {
    let Some((mut d, witness)) = common::start_in("rnx") else {
        return;
    };
    let w = Watched::new(&witness);
    let dir = w.apply(&d);
    let ids = pinned_ids(&dir);
    d.kill9();
    // Only the pins refer to it now.
    d.restart();
    assert_released(&d, &w, &witness, &dir, &ids, "ip netns del after a restart");
}

#[test]
fn flush_removes_all_pins_and_links() {
    let Some((d, witness)) = common::start_in("rnx") else {
        return;
    };
    let one = Watched::new(&witness);
    let two = Netns::new("rnt");
    let three = Netns::new("rnh");
    let one_ns = one.ns();
    for ns in [&*one_ns, &two, &three] {
        apply(&d, ns);
        assert!(!udp9_delivered(&ns.name));
    }
    let ino = |n: &Netns| {
        std::fs::metadata(format!("/run/netns/{}", n.name))
            .expect("netns")
            .ino()
    };
    let (dir1, dir2, dir3) = (
        d.bpffs.join(format!("net{}", one.ino)),
        d.bpffs.join(format!("net{}", ino(&two))),
        d.bpffs.join(format!("net{}", ino(&three))),
    );
    let (ids1, ids2, ids3) = (pinned_ids(&dir1), pinned_ids(&dir2), pinned_ids(&dir3));

    // `bpfilter flush` in one namespace: that one only.
    let out = d.bpfilter(&one_ns, &["flush"]);
    assert!(
        out.status.success(),
        "flush: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir1.exists(), "pin folder of the flushed namespace");
    let left = within(|| alive(&ids1).is_empty());
    assert!(
        left.is_some(),
        "objects of the flushed namespace still alive: {:?}",
        alive(&ids1)
    );
    assert!(
        udp9_delivered(&one.name),
        "rules of the flushed namespace still filter"
    );
    let save = d.iptables(&one_ns, Tool::Save, &[], "");
    assert!(
        !String::from_utf8_lossy(&save.stdout).contains("-A "),
        "flushed namespace still lists rules"
    );
    assert!(dir2.exists() && dir3.exists(), "other namespaces untouched");
    assert!(
        alive(&ids2).len() == ids2.progs.len() + ids2.maps.len() + ids2.links.len(),
        "other namespaces' objects untouched"
    );
    assert!(!udp9_delivered(&two.name), "other namespaces still filter");

    // A flushed namespace is no longer held by bpfilter: deleting it frees it.
    one.delete();
    let dismantled = within(|| !one.exists(&witness));
    assert!(
        dismantled.is_some(),
        "flushed namespace not freed after ip netns del; held by {:?}",
        holders(one.ino)
    );

    // `bpfilter flush --all`: everything.
    let out = d.bpfilter(&two, &["flush", "--all"]);
    assert!(
        out.status.success(),
        "flush --all: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rest: Vec<_> = std::fs::read_dir(&d.bpffs)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(rest.is_empty(), "pins left after flush --all: {rest:?}");
    for ids in [&ids2, &ids3] {
        let left = within(|| alive(ids).is_empty());
        assert!(
            left.is_some(),
            "objects alive after flush --all: {:?}",
            alive(ids)
        );
    }
    assert!(
        udp9_delivered(&two.name) && udp9_delivered(&three.name),
        "rules still filter after flush --all"
    );
}

/// A watched namespace reachable from the witness over its veth (10.79.N.1 -> 10.79.N.2),
/// with UDP sockets bound inside it on ports 9 (the rules drop it) and 10 (open): the sockets
/// keep it alive once `ip netns del` unlisted it.
struct Held {
    w: Watched,
    addr: Ipv4Addr,
    drop9: UdpSocket,
    open10: UdpSocket,
}

impl Held {
    fn new(witness: &Netns, n: u8) -> Held {
        let w = Watched::new(witness);
        let addr = Ipv4Addr::new(10, 79, n, 2);
        sh(&format!(
            "ip -n {wn} addr add 10.79.{n}.1/24 dev {dev} && ip -n {wn} link set {dev} up && \
             ip -n {ns} addr add {addr}/24 dev x && ip -n {ns} link set x up && \
             ip netns exec {wn} ping -c1 -W2 {addr} >/dev/null",
            wn = witness.name,
            dev = w.witness_dev,
            ns = w.name
        ));
        let (drop9, open10) = in_netns(&w.name, move || {
            let a = UdpSocket::bind((addr, 9)).expect("bind 9");
            let b = UdpSocket::bind((addr, 10)).expect("bind 10");
            a.set_nonblocking(true).expect("nb");
            b.set_nonblocking(true).expect("nb");
            (a, b)
        });
        Held {
            w,
            addr,
            drop9,
            open10,
        }
    }

    /// Whether datagrams sent from the witness to port 9 (`drop9`) or 10 are delivered.
    fn delivered(&self, witness: &Netns, drop9: bool) -> bool {
        let (port, rx) = if drop9 {
            (9, &self.drop9)
        } else {
            (10, &self.open10)
        };
        let mut buf = [0u8; 8];
        while rx.recv(&mut buf).is_ok() {}
        let to = SocketAddrV4::new(self.addr, port);
        in_netns(&witness.name, move || {
            let tx = UdpSocket::bind("0.0.0.0:0").expect("bind");
            for _ in 0..3 {
                tx.send_to(b"x", to).expect("send");
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let mut n = 0;
        while rx.recv(&mut buf).is_ok() {
            n += 1;
        }
        n > 0
    }

    /// After `ip netns del`: asserts that the namespace still lives and receives (`what` names
    /// it); whether its rules were stripped (port 9 delivered).
    fn stripped_while_alive(&self, witness: &Netns, what: &str) -> bool {
        assert!(self.w.exists(witness), "the sockets keep the {what} alive");
        assert!(
            self.delivered(witness, false),
            "the live {what} still receives"
        );
        self.delivered(witness, true)
    }

    /// Closes the sockets, the last references of the deleted namespace, and asserts that its
    /// pins at `dir` go and the kernel dismantles it within GRACE.
    fn assert_dies_with_its_sockets(self, witness: &Netns, dir: &Path) {
        let Held {
            w, drop9, open10, ..
        } = self;
        drop((drop9, open10));
        w.assert_dies(witness, dir, "the sockets closed");
    }
}

/// A namespace that `ip netns del` unlisted but that a socket still keeps alive is still a
/// live namespace: its interfaces pass traffic, and with the kernel's iptables its rules stay
/// in force until the namespace really dies (checked side by side on the kernel). The
/// collector must not strip its firewall.
#[test]
fn a_deleted_namespace_kept_alive_by_a_socket_keeps_its_rules() {
    let Some((d, witness)) = common::start_in("rnx") else {
        return;
    };
    let held = Held::new(&witness, 1);
    let kheld = Held::new(&witness, 2);
    let dir = held.w.apply(&d);
    let out = common::kernel(
        &kheld.w.ns(),
        Tool::Restore,
        &[],
        "*filter\n-A INPUT -p udp -m udp --dport 9 -j DROP\nCOMMIT\n",
    );
    assert!(out.status.success(), "kernel restore");
    assert!(
        !held.delivered(&witness, true),
        "rules in force before the delete"
    );
    assert!(
        !kheld.delivered(&witness, true),
        "kernel rules in force before the delete"
    );
    held.w.delete();
    kheld.w.delete();
    // Two collector periods and more.
    std::thread::sleep(Duration::from_secs(5));
    let stripped = held.stripped_while_alive(&witness, "namespace");
    let kernel_stripped = kheld.stripped_while_alive(&witness, "kernel namespace");
    eprintln!(
        "socket-held namespace: rules stripped while alive: bpfilter {stripped}, kernel {kernel_stripped}"
    );
    assert!(
        !kernel_stripped,
        "reference: the kernel keeps the rules of a live namespace"
    );
    assert!(
        !stripped,
        "the collector flushed the rules of a namespace that is still alive (held by a socket)\n{}",
        d.log()
    );
    // Once the last socket goes, the namespace dies, and everything must be released.
    drop(kheld);
    held.assert_dies_with_its_sockets(&witness, &dir);
}

/// The daemon's own namespace is a live namespace even when no other process is in it (a
/// daemon started in a namespace of its own, e.g. `unshare -n` or a container): the collector
/// must not take the daemon's own threads for "nobody".
#[test]
fn the_daemons_own_namespace_keeps_its_rules() {
    if !privileged() {
        return;
    }
    let name = test_support::netns::unique("rnd");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).expect("dir");
    let socket = dir.join("sock");
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/{name}"));
    let mut child = Command::new("unshare")
        .arg("-n")
        .arg(common::bpfilter_bin())
        .args(["daemon", "--socket"])
        .arg(&socket)
        .arg("--bpffs")
        .arg(&bpffs)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).expect("log"))
        .spawn()
        .expect("unshare daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let client = |args: &[&str]| {
        Command::new("nsenter")
            .args(["-t", &pid, "-n"])
            .arg(common::bpfilter_bin())
            .args(args)
            .env("BPFILTER_SOCKET", &socket)
            .output()
            .expect("nsenter")
    };
    let out = client(&[
        "iptables", "-w", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(5));
    let save = String::from_utf8_lossy(&client(&["iptables-save"]).stdout).into_owned();
    let pins = std::fs::read_dir(&bpffs).map(|r| r.count()).unwrap_or(0);
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let _ = client(&["flush", "--all"]);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&bpffs);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        save.contains("--dport 9 -j DROP") && pins == 1,
        "the rules of the daemon's own namespace were collected ({pins} pin folders):\n{save}\n{log}"
    );
}

/// The same after a daemon restart: the restarted daemon adopted the namespace from its pins
/// (it has no fd of it until a client of that namespace comes), then the namespace is deleted
/// while a socket still holds it. Its rules must stay in force while it lives.
#[test]
fn a_socket_held_namespace_deleted_after_a_restart_keeps_its_rules() {
    let Some((mut d, witness)) = common::start_in("rnx") else {
        return;
    };
    let held = Held::new(&witness, 3);
    let dir = held.w.apply(&d);
    d.kill9();
    d.restart();
    assert!(
        !held.delivered(&witness, true),
        "rules in force after the restart"
    );
    held.w.delete();
    std::thread::sleep(Duration::from_secs(5));
    let stripped = held.stripped_while_alive(&witness, "namespace");
    eprintln!("socket-held namespace after a restart: rules stripped while alive: {stripped}");
    assert!(
        !stripped,
        "the collector flushed the rules of an adopted namespace still held by a socket\n{}",
        d.log()
    );
    held.assert_dies_with_its_sockets(&witness, &dir);
}

/// A namespace that `ip netns del` unlisted but that a process still holds through an fd it
/// opened on the bind mount (`exec 3</run/netns/NAME`, as container runtimes keep theirs) is
/// alive: such an fd reads as a path, not `net:[N]`, and must still count as a reference. Once
/// the holder exits, everything is released.
#[test]
fn a_deleted_namespace_held_by_an_fd_of_its_bind_mount_keeps_its_rules() {
    let Some((d, witness)) = common::start_in("rnf") else {
        return;
    };
    let w = Watched::new(&witness);
    let dir = w.apply(&d);
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3</run/netns/{} && exec sleep 600", w.name))
        .spawn()
        .expect("holder");
    std::thread::sleep(Duration::from_millis(200));
    w.delete();
    // Two collector periods and more.
    std::thread::sleep(Duration::from_secs(5));
    assert!(w.exists(&witness), "the fd keeps the namespace alive");
    assert!(
        dir.exists(),
        "the collector flushed a namespace an fd still holds\n{}",
        d.log()
    );
    let _ = holder.kill();
    let _ = holder.wait();
    w.assert_dies(&witness, &dir, "the holder exited");
}
