//! Network namespaces, the sockets the harness keeps in them, and the replay topology.
//!
//! Topology (one per backend, identical): a firewall namespace `FW` with five veth interfaces,
//! three towards a sender namespace and two towards a destination namespace. The neighbours
//! have no IP address at all (they only inject and capture frames with packet sockets), IPv6 is
//! off everywhere and every neighbour entry is static, so the firewall's hooks see nothing but
//! the harness's packets. Which hook a packet crosses is chosen by a routing phase:
//! - input: every destination is local (`local 0.0.0.0/0` in a policy table);
//! - forward: the ingress interface selects the egress (`FORWARD_PAIRS`);
//! - output: the main table, one default route per interface, the raw socket bound to the
//!   egress device.
//!
//! In the input and forward phases locally generated traffic (TCP resets, ICMP errors the
//! accepted packets provoke) hits a blackhole route before LOCAL_OUT, so it cannot disturb the
//! OUTPUT counters.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::packet::Path;

type Job = Box<dyn FnOnce() + Send>;

/// A thread that lives inside a named network namespace and runs closures there.
#[derive(Debug)]
pub struct NsThread {
    /// Namespace name (`/run/netns/NAME`).
    pub name: String,
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl NsThread {
    /// Starts a thread and moves it into `/run/netns/NAME`.
    pub fn enter(name: &str) -> Result<Self> {
        let path = format!("/run/netns/{name}");
        let f = File::open(&path).with_context(|| format!("open {path}"))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), i32>>();
        let handle = std::thread::Builder::new()
            .name(format!("ns-{name}"))
            .spawn(move || {
                // SAFETY: setns on a valid fd we own; it only changes this thread's namespace.
                let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                let res = if rc == 0 { Ok(()) } else { Err(errno()) };
                let ok = res.is_ok();
                let _ = ready_tx.send(res);
                if !ok {
                    return;
                }
                for job in rx {
                    job();
                }
            })
            .context("spawn namespace thread")?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("setns({path}): errno {e}"),
            Err(_) => bail!("namespace thread for {name} died"),
        }
        Ok(NsThread {
            name: name.to_string(),
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Runs `f` on the namespace's thread and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (rtx, rrx) = mpsc::channel();
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| anyhow!("namespace thread stopped"))?;
        tx.send(Box::new(move || {
            let _ = rtx.send(f());
        }))
        .map_err(|_| anyhow!("namespace thread {} gone", self.name))?;
        rrx.recv()
            .map_err(|_| anyhow!("namespace thread {} gone", self.name))
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -n NS -batch -` with the given lines (`-force` keeps going past failed deletes).
pub fn ip_batch(ns: &str, lines: &str, force: bool) -> Result<()> {
    let mut args = vec!["-n", ns];
    if force {
        args.push("-force");
    }
    args.extend(["-batch", "-"]);
    let mut child = Command::new("ip")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn ip")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(lines.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() && !force {
        bail!(
            "ip -n {ns} -batch failed: {}\n{lines}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A firewall interface and its neighbour.
#[derive(Debug, Clone, Copy)]
pub struct Iface {
    /// Name inside the firewall namespace.
    pub name: &'static str,
    /// True when the neighbour end lives in the destination namespace, else the sender's.
    pub lan: bool,
    /// Last octet of the firewall's /30 address in 198.18.0.0/24 (peer is +1).
    pub host: u8,
}

/// The firewall's interfaces (the names rulesets can use, besides `lo`).
pub const IFACES: [Iface; 6] = [
    Iface {
        name: "eth0",
        lan: false,
        host: 1,
    },
    Iface {
        name: "ppp0",
        lan: false,
        host: 5,
    },
    Iface {
        name: "wlan0",
        lan: false,
        host: 9,
    },
    Iface {
        name: "eth1",
        lan: true,
        host: 13,
    },
    Iface {
        name: "tun0",
        lan: true,
        host: 17,
    },
    // A full-length (15-character) name, as Docker gives its bridges: interface matching
    // compares all 16 bytes.
    Iface {
        name: "br-0123456789ab",
        lan: true,
        host: 21,
    },
];

/// The loopback interface: an OUTPUT egress whose packets come back through INPUT (`-i lo`).
pub const LOOPBACK: &str = "lo";

/// Forwarding: ingress interface -> egress interface.
pub const FORWARD_PAIRS: [(&str, &str); 6] = [
    ("eth0", "eth1"),
    ("ppp0", "tun0"),
    ("wlan0", "eth0"),
    ("eth1", "eth0"),
    ("tun0", "ppp0"),
    ("br-0123456789ab", "wlan0"),
];

/// The egress interface of a forwarded packet that entered by `ingress`.
pub fn forward_egress(ingress: &str) -> Option<&'static str> {
    FORWARD_PAIRS
        .iter()
        .find(|(i, _)| *i == ingress)
        .map(|(_, e)| *e)
}

fn fw_mac(i: usize) -> String {
    format!("02:cf:00:00:00:{:02x}", i + 1)
}

fn peer_mac(i: usize) -> String {
    format!("02:cf:00:00:01:{:02x}", i + 1)
}

fn mac_bytes(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    m
}

fn peer_name(i: &Iface) -> String {
    let mut n = format!("{}-{}", if i.lan { "d" } else { "s" }, i.name);
    n.truncate(15);
    n
}

/// Snapshot of the firewall's own traffic counters, for exact waits and for noise checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FwStats {
    /// `Ip: InReceives` (every datagram that entered ip_rcv).
    pub in_receives: u64,
    /// Sum of tx_packets over the firewall's veth interfaces.
    pub tx_frames: u64,
}

/// One replay topology: three namespaces, sockets kept inside them.
#[derive(Debug)]
pub struct Topology {
    /// Prefix of the namespace names.
    pub prefix: String,
    /// Firewall namespace name.
    pub fw: String,
    fw_thread: NsThread,
    /// Per firewall interface: packet socket on the neighbour's end, used to inject frames.
    inject: HashMap<&'static str, OwnedFd>,
    /// Per firewall interface: packet socket on the neighbour's end capturing IPv4 frames.
    capture: Vec<(&'static str, OwnedFd)>,
    /// Per firewall interface: raw IP socket in the firewall bound to it (OUTPUT replay).
    raw: HashMap<&'static str, OwnedFd>,
    phase: Option<Path>,
    _peer_threads: Vec<NsThread>,
}

/// What one replayed packet did, as seen from outside the firewall.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fate {
    /// Neighbour-side interfaces the packet was captured on (empty = did not come out).
    pub seen_on: Vec<String>,
    /// errno of the raw socket's sendto (OUTPUT only; EPERM = dropped in LOCAL_OUT).
    pub send_errno: i32,
}

impl Topology {
    /// Creates the namespaces, links, addresses, routes and sockets.
    pub fn create(prefix: &str) -> Result<Self> {
        let fw = format!("{prefix}-fw");
        let snd = format!("{prefix}-snd");
        let dst = format!("{prefix}-dst");
        for ns in [&fw, &snd, &dst] {
            let _ = sh(&["ip", "netns", "del", ns]);
            sh(&["ip", "netns", "add", ns])?;
            let t = NsThread::enter(ns)?;
            let fwd = if *ns == fw { "1" } else { "0" };
            t.run(move || -> Result<()> {
                for (k, v) in [
                    ("net/ipv6/conf/all/disable_ipv6", "1"),
                    ("net/ipv6/conf/default/disable_ipv6", "1"),
                    ("net/ipv4/conf/all/rp_filter", "0"),
                    ("net/ipv4/conf/default/rp_filter", "0"),
                    ("net/ipv4/conf/all/send_redirects", "0"),
                    ("net/ipv4/conf/default/send_redirects", "0"),
                    ("net/ipv4/conf/all/accept_redirects", "0"),
                    ("net/ipv4/conf/default/accept_redirects", "0"),
                    ("net/ipv4/ip_forward", fwd),
                    // ICMP errors answering looped-back packets must never be rate limited
                    // (the limiter depends on time, so it would make counters differ).
                    ("net/ipv4/icmp_ratemask", "0"),
                ] {
                    std::fs::write(format!("/proc/sys/{k}"), v)
                        .with_context(|| format!("sysctl {k}"))?;
                }
                Ok(())
            })??;
        }
        let mut b = String::from("link set lo up\n");
        for (i, ifc) in IFACES.iter().enumerate() {
            let peer_ns = if ifc.lan { &dst } else { &snd };
            b += &format!(
                "link add {} address {} type veth peer name {} address {} netns {}\n",
                ifc.name,
                fw_mac(i),
                peer_name(ifc),
                peer_mac(i),
                peer_ns
            );
            b += &format!("addr add 198.18.0.{}/30 dev {}\n", ifc.host, ifc.name);
            b += &format!("link set {} up\n", ifc.name);
            b += &format!(
                "neigh replace 198.18.0.{} lladdr {} dev {} nud permanent\n",
                ifc.host + 1,
                peer_mac(i),
                ifc.name
            );
        }
        for (i, ifc) in IFACES.iter().enumerate() {
            b += &format!(
                "route add default via 198.18.0.{} dev {} metric {}\n",
                ifc.host + 1,
                ifc.name,
                i + 1
            );
        }
        for (k, (ing, eg)) in FORWARD_PAIRS.iter().enumerate() {
            let e = IFACES
                .iter()
                .find(|x| x.name == *eg)
                .ok_or_else(|| anyhow!("no {eg}"))?;
            let _ = ing;
            b += &format!(
                "route add default via 198.18.0.{} dev {} table {}\n",
                e.host + 1,
                e.name,
                201 + k
            );
        }
        b += "route add local 0.0.0.0/0 dev lo table 100\n";
        b += "route add blackhole default table 250\n";
        ip_batch(&fw, &b, false)?;
        for ns in [&snd, &dst] {
            let mut b = String::new();
            for ifc in IFACES
                .iter()
                .filter(|x| (x.lan && ns == &dst) || (!x.lan && ns == &snd))
            {
                b += &format!("link set {} up\n", peer_name(ifc));
            }
            ip_batch(ns, &b, false)?;
        }

        let fw_thread = NsThread::enter(&fw)?;
        let snd_t = NsThread::enter(&snd)?;
        let dst_t = NsThread::enter(&dst)?;
        let mut inject = HashMap::new();
        let mut capture = Vec::new();
        for ifc in IFACES.iter() {
            let t = if ifc.lan { &dst_t } else { &snd_t };
            let pn = peer_name(ifc);
            let p2 = pn.clone();
            inject.insert(ifc.name, t.run(move || packet_socket(&pn, 0))??);
            capture.push((
                ifc.name,
                t.run(move || packet_socket(&p2, libc::ETH_P_IP as u16))??,
            ));
        }
        let mut raw = HashMap::new();
        for n in IFACES.iter().map(|i| i.name).chain([LOOPBACK]) {
            raw.insert(n, fw_thread.run(move || raw_socket(n))??);
        }
        let mut t = Topology {
            prefix: prefix.to_string(),
            fw: fw.clone(),
            fw_thread,
            inject,
            capture,
            raw,
            phase: None,
            _peer_threads: vec![snd_t, dst_t],
        };
        t.set_phase(Path::Output)?;
        Ok(t)
    }

    /// Runs a closure inside the firewall namespace.
    pub fn in_fw<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        self.fw_thread.run(f)
    }

    /// Switches the firewall's policy routing so that injected packets take `path`.
    pub fn set_phase(&mut self, path: Path) -> Result<()> {
        if self.phase == Some(path) {
            return Ok(());
        }
        let mut b = String::new();
        for pref in [50, 60, 61, 62, 63, 64, 65, 66] {
            b += &format!("rule del pref {pref}\n");
        }
        ip_batch(&self.fw, &b, true)?;
        let mut b = String::new();
        match path {
            Path::Input => {
                b += "rule add pref 50 iif lo lookup 250\n";
                b += "rule add pref 60 lookup 100\n";
            }
            Path::Forward => {
                b += "rule add pref 50 iif lo lookup 250\n";
                for (k, (ing, _)) in FORWARD_PAIRS.iter().enumerate() {
                    b += &format!("rule add pref {} iif {} lookup {}\n", 61 + k, ing, 201 + k);
                }
            }
            Path::Output => {}
        }
        if !b.is_empty() {
            ip_batch(&self.fw, &b, false)?;
        }
        self.phase = Some(path);
        Ok(())
    }

    /// Reads the firewall's InReceives and transmitted frame count.
    pub fn stats(&self) -> Result<FwStats> {
        self.fw_thread.run(read_fw_stats)?
    }

    /// Drains the capture sockets: (firewall interface the frame left by, IP ID).
    fn drain(&self, out: &mut Vec<(&'static str, u16)>) -> Result<usize> {
        let mut n = 0;
        let mut buf = vec![0u8; 2048];
        for (name, fd) in &self.capture {
            loop {
                let mut sll: libc::sockaddr_ll = unsafe_zeroed_sll();
                let mut sl = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: buf and sll are valid writable buffers of the given sizes.
                let r = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                        (&mut sll as *mut libc::sockaddr_ll).cast(),
                        &mut sl,
                    )
                };
                if r < 0 {
                    let e = errno();
                    if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                        break;
                    }
                    if e == libc::EINTR {
                        continue;
                    }
                    bail!("recvfrom on capture {name}: errno {e}");
                }
                if sll.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let r = r as usize;
                if r >= 14 + 20 {
                    let id = u16::from_be_bytes([buf[14 + 4], buf[14 + 5]]);
                    out.push((name, id));
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Replays `pkts` (all of one path) and returns each packet's fate (indexed like `pkts`).
    /// Packet `i` is tagged with IP ID `id_base + i` (never 0).
    pub fn replay(
        &mut self,
        path: Path,
        pkts: &[(u16, &[u8], &str)],
    ) -> Result<HashMap<u16, Fate>> {
        self.set_phase(path)?;
        let mut fates: HashMap<u16, Fate> = pkts
            .iter()
            .map(|(id, _, _)| (*id, Fate::default()))
            .collect();
        let mut seen = Vec::new();
        self.drain(&mut seen)?;
        if !seen.is_empty() {
            bail!(
                "{} stray frames left the firewall before the batch",
                seen.len()
            );
        }
        let before = self.stats()?;
        let mut injected = 0u64;
        // Looped-back datagrams (and the replies they provoke) enter ip_rcv too.
        let mut looped = 0u64;
        let mut captured = 0u64;
        for chunk in pkts.chunks(128) {
            for (id, bytes, iface) in chunk {
                match path {
                    Path::Input | Path::Forward => {
                        let i = IFACES
                            .iter()
                            .position(|x| x.name == *iface)
                            .ok_or_else(|| anyhow!("no iface {iface}"))?;
                        let mut frame = Vec::with_capacity(14 + bytes.len());
                        frame.extend_from_slice(&mac_bytes(&fw_mac(i)));
                        frame.extend_from_slice(&mac_bytes(&peer_mac(i)));
                        frame.extend_from_slice(&[0x08, 0x00]);
                        frame.extend_from_slice(bytes);
                        let fd = self
                            .inject
                            .get(iface)
                            .ok_or_else(|| anyhow!("no inject socket {iface}"))?;
                        // SAFETY: sending a valid buffer on a bound packet socket we own.
                        let r = unsafe {
                            libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0)
                        };
                        if r < 0 {
                            bail!("inject on {iface}: errno {}", errno());
                        }
                        injected += 1;
                    }
                    Path::Output => {
                        let fd = self
                            .raw
                            .get(iface)
                            .ok_or_else(|| anyhow!("no raw socket {iface}"))?;
                        let e = raw_send(fd, bytes);
                        if *iface == LOOPBACK && e == 0 {
                            looped += 1;
                        }
                        if let Some(f) = fates.get_mut(id) {
                            f.send_errno = e;
                        }
                    }
                }
            }
            // Wait until the firewall has taken every injected frame in, so that backlogs
            // never overflow and the capture below is complete.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let s = self.stats()?;
                if s.in_receives - before.in_receives >= injected {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "firewall received {} of {} injected frames",
                        s.in_receives - before.in_receives,
                        injected
                    );
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            captured += self.drain(&mut seen)? as u64;
        }
        // Every frame the firewall transmitted must be captured on the neighbour side.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.stats()?;
            let tx = s.tx_frames - before.tx_frames;
            if captured == tx {
                let got = s.in_receives - before.in_receives;
                if (looped == 0 && got != injected) || got < injected + looped {
                    bail!(
                        "noise: firewall received {} datagrams, {} injected",
                        s.in_receives - before.in_receives,
                        injected
                    );
                }
                // Settled when nothing moves for a while (longer with loopback traffic, whose
                // replies are processed from the backlog).
                // Replies to looped-back packets are queued to the backlog again; under load
                // ksoftirqd may run them milliseconds later, so wait 20 ms of silence.
                let quiet = if looped > 0 { 40 } else { 1 };
                let mut settled = true;
                for _ in 0..quiet {
                    std::thread::sleep(Duration::from_micros(if looped > 0 { 500 } else { 300 }));
                    if self.stats()? != s {
                        settled = false;
                        break;
                    }
                }
                if settled {
                    break;
                }
                continue;
            }
            if captured > tx || Instant::now() > deadline {
                bail!("captured {captured} frames, firewall transmitted {tx}");
            }
            std::thread::sleep(Duration::from_micros(200));
            captured += self.drain(&mut seen)? as u64;
        }
        for (name, id) in seen {
            match fates.get_mut(&id) {
                Some(f) => f.seen_on.push(name.to_string()),
                None => bail!("captured a frame with unknown IP ID {id} on {name}"),
            }
        }
        for f in fates.values_mut() {
            f.seen_on.sort();
        }
        Ok(fates)
    }

    /// Deletes the namespaces (dropping the topology does the same).
    pub fn destroy(self) {
        drop(self);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Also on panics and errors: a leaked namespace would keep veths and sockets alive.
        for s in ["fw", "snd", "dst"] {
            let _ = sh(&["ip", "netns", "del", &format!("{}-{s}", self.prefix)]);
        }
    }
}

fn unsafe_zeroed_sll() -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn if_index(name: &str) -> Result<i32> {
    let c = CString::new(name)?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name} in this namespace");
    }
    Ok(i as i32)
}

/// A packet socket bound to `ifname` for ethertype `proto` (0: send only), in the calling
/// thread's namespace.
fn packet_socket(ifname: &str, proto: u16) -> Result<OwnedFd> {
    let idx = if_index(ifname)?;
    // SAFETY: plain socket(2) call; the result is checked and wrapped at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto.to_be()),
        )
    };
    if fd < 0 {
        bail!("socket(AF_PACKET): errno {}", errno());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut sll = unsafe_zeroed_sll();
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = idx;
    // SAFETY: sll is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        bail!("bind packet socket to {ifname}: errno {}", errno());
    }
    let sz: libc::c_int = 16 << 20;
    // SAFETY: valid option pointer and length.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&sz as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(fd)
}

/// A raw IPPROTO_RAW (header-included) socket bound to device `ifname`.
fn raw_socket(ifname: &str) -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call; checked and wrapped at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        bail!("socket(AF_INET, SOCK_RAW): errno {}", errno());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::OsStr::new(ifname).as_bytes();
    // SAFETY: name points to len valid bytes.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        bail!("SO_BINDTODEVICE {ifname}: errno {}", errno());
    }
    Ok(fd)
}

/// Sends a header-included datagram; returns 0 or the errno.
fn raw_send(fd: &OwnedFd, bytes: &[u8]) -> i32 {
    if bytes.len() < 20 {
        return libc::EINVAL;
    }
    let mut sin: libc::sockaddr_in = {
        // SAFETY: sockaddr_in is plain old data; all-zero is valid.
        unsafe { std::mem::zeroed() }
    };
    sin.sin_family = libc::AF_INET as u16;
    sin.sin_addr.s_addr = u32::from_ne_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    // SAFETY: valid buffer and sockaddr_in of the size passed.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        errno()
    } else {
        0
    }
}

fn read_fw_stats() -> Result<FwStats> {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").context("read snmp")?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (h, v) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let idx = h
        .split_whitespace()
        .position(|x| x == "InReceives")
        .ok_or_else(|| anyhow!("no InReceives"))?;
    let in_receives: u64 = v
        .split_whitespace()
        .nth(idx)
        .ok_or_else(|| anyhow!("short snmp"))?
        .parse()?;
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").context("read net/dev")?;
    let mut tx_frames = 0;
    for l in dev.lines().skip(2) {
        let (name, rest) = l
            .split_once(':')
            .ok_or_else(|| anyhow!("bad net/dev line"))?;
        if IFACES.iter().any(|x| x.name == name.trim()) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            tx_frames += f
                .get(9)
                .ok_or_else(|| anyhow!("short net/dev"))?
                .parse::<u64>()?;
        }
    }
    Ok(FwStats {
        in_receives,
        tx_frames,
    })
}

/// Removes namespaces left behind by earlier runs of the harness whose process is gone.
pub fn remove_stale(tag: &str) {
    let Ok(rd) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        // Names look like `{tag}{pid}{k|b}-{fw|snd|dst}`.
        let Some(rest) = n.strip_prefix(tag) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(pid) = pid.parse::<u32>() {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = sh(&["ip", "netns", "del", &n]);
            }
        }
    }
}
