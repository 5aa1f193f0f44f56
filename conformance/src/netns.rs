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
//!
//! A *stateful* topology ([`TopoConfig::stateful`], made fresh for every stateful case so that
//! no connection, ICMP rate-limit token or fragment queue outlives it) has no phases: every
//! path works at once, so that a flow's packets and its replies can alternate.
//! - input: the case's local addresses ([`TopoConfig::local`]) are /32s on the firewall's
//!   `lo` (real local addresses: the kernel's own RSTs and ICMP errors need a source it owns);
//! - forward: any other destination, by ingress interface as above;
//! - output: the raw socket bound to a device is routed by `oif DEV lookup main`;
//! - what the firewall itself sends (REJECT's replies, the stack's RSTs and ICMP errors) goes
//!   by `iif lo lookup 150` (a /32 towards the interface each remote address was seen on,
//!   [`TopoConfig::reply_routes`]), else by the main table's first default route (`eth0`),
//!   and is captured and compared (ID and checksums aside: [`normalize_reply`]).

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
/// Writes `input` to the stdin of `child` (spawned with a piped stdin), closes it, and waits
/// for the child; its output.
pub fn feed(mut child: std::process::Child, input: &str) -> Result<std::process::Output> {
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

pub fn ip_batch(ns: &str, lines: &str, force: bool) -> Result<()> {
    let mut args = vec!["-n", ns];
    if force {
        args.push("-force");
    }
    args.extend(["-batch", "-"]);
    let child = Command::new("ip")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn ip")?;
    let out = feed(child, lines)?;
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

/// How a topology is built.
#[derive(Debug, Clone, Default)]
pub struct TopoConfig {
    /// No routing phases; replies routed out and captured (see the module doc).
    pub stateful: bool,
    /// Stateful: addresses added to the firewall's `lo` (local deliveries).
    pub local: Vec<u32>,
    /// Stateful: where the firewall's own packets to a remote address leave.
    pub reply_routes: Vec<(u32, &'static str)>,
    /// Extra sysctls of the firewall namespace (`net/ipv4/icmp_ratemask`, `6168`).
    pub sysctls: Vec<(String, String)>,
}

/// A frame the firewall sent that is not one of the harness's packets (a REJECT reply, the
/// stack's RST or ICMP error, a NATed packet), normalised by [`normalize_reply`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reply {
    /// Firewall interface it left by.
    pub iface: String,
    /// The IP datagram, ID and checksums normalised.
    pub bytes: Vec<u8>,
}

/// Makes a firewall-originated datagram comparable between the two sides: the IP ID (drawn by
/// `ip_select_ident`, or 0 in the kernel's RST where a raw socket gets a drawn one) and the
/// IP header checksum are zeroed; a TCP/UDP checksum that is either complete or the
/// pseudo-header sum a CHECKSUM_PARTIAL packet carries over a veth is replaced by the
/// complete one, so that only a wrong checksum shows. IP timestamp options (outer, and in the
/// datagram an ICMP error quotes) and the stack's ICMP timestamp replies lose their clock
/// values ([`crate::packet::mask_ip_timestamps`]), and the ICMP checksum is recomputed after.
pub fn normalize_reply(frame: &[u8]) -> Vec<u8> {
    let mut b = frame.to_vec();
    if b.len() < 20 {
        return b;
    }
    b[4] = 0;
    b[5] = 0;
    b[10] = 0;
    b[11] = 0;
    let ihl = (usize::from(b[0] & 0x0f) * 4).clamp(20, b.len());
    let mut touched = false;
    if ihl > 20 {
        crate::packet::mask_ip_timestamps(&mut b[20..ihl]);
        touched = true;
    }
    if b[9] == 1 && matches!(b.get(ihl), Some(3 | 4 | 5 | 11 | 12)) && b.len() >= ihl + 8 + 20 {
        let inner = ihl + 8;
        let iihl = (usize::from(b[inner] & 0x0f) * 4).clamp(20, b.len() - inner);
        if iihl > 20 {
            crate::packet::mask_ip_timestamps(&mut b[inner + 20..inner + iihl]);
            touched = true;
        }
        // A quoted datagram the kernel sent itself and looped back through `lo` (an RST that
        // REJECT in OUTPUT sent to a local address) still carries CHECKSUM_PARTIAL's
        // pseudo-header sum when icmp_send quotes it; one sent from a raw socket carries the
        // full checksum. Same rule as for the outer datagram, when the quote is complete.
        let q = &b[inner..];
        let qtotal = usize::from(u16::from_be_bytes([q[2], q[3]]));
        if qtotal <= q.len() {
            if let Some((at, full, partial)) = crate::packet::l4_checksum(&q[..qtotal]) {
                let cur = u16::from_be_bytes([q[at], q[at + 1]]);
                if cur == partial && partial != full {
                    b[inner + at..inner + at + 2].copy_from_slice(&full.to_be_bytes());
                    touched = true;
                }
            }
        }
    }
    // The stack's timestamp reply carries its clock (receive and transmit timestamps).
    if b[9] == 1 && b.get(ihl) == Some(&14) && b.len() >= ihl + 20 {
        b[ihl + 12..ihl + 20].iter_mut().for_each(|x| *x = 0);
        touched = true;
    }
    if touched && b[9] == 1 {
        // Only when the ICMP checksum was right to begin with.
        let valid = crate::packet::l4_checksum(frame)
            .is_some_and(|(at, full, _)| u16::from_be_bytes([frame[at], frame[at + 1]]) == full);
        if valid {
            crate::packet::fix_l4_checksum(&mut b);
        }
    }
    if let Some((at, full, partial)) = crate::packet::l4_checksum(&b) {
        let cur = u16::from_be_bytes([b[at], b[at + 1]]);
        if cur == full || cur == partial {
            b[at..at + 2].copy_from_slice(&full.to_be_bytes());
        }
    }
    b
}

/// What one stateful step did on one side.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// The packet's fate, with the replies it provoked.
    pub fate: Fate,
    /// Frames the firewall transmitted during the step.
    pub tx: u64,
    /// Datagrams that entered ip_rcv during the step.
    pub rx: u64,
    /// Firewall-originated frames found before the step started: late replies of the
    /// previous step (bpfilter answers from user space).
    pub late: Vec<Reply>,
}

/// What a candidate step waits for, learnt from the reference side's step: bpfilter sends
/// REJECT's replies from user space, a few milliseconds after the packet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// Frames the reference transmitted.
    pub tx: u64,
    /// Datagrams the reference received (looped-back replies included).
    pub rx: u64,
}

/// How long a candidate step waits for the frames the reference sent.
pub const EXPECT_WAIT: Duration = Duration::from_millis(300);

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
    stateful: bool,
    _peer_threads: Vec<NsThread>,
}

/// What one replayed packet did, as seen from outside the firewall.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fate {
    /// Neighbour-side interfaces the packet was captured on (empty = did not come out).
    pub seen_on: Vec<String>,
    /// errno of the raw socket's sendto (OUTPUT only; EPERM = dropped in LOCAL_OUT), or of a
    /// socket probe's `send`/`connect` (EINPROGRESS for a TCP connect under way).
    pub send_errno: i32,
    /// Socket probes: the socket's pending error (SO_ERROR) once the step settled
    /// (ECONNREFUSED, EHOSTUNREACH... when an ICMP error or RST came back).
    pub sock_errno: Option<i32>,
    /// Stateful replay: frames the firewall sent because of this packet, sorted.
    pub replies: Vec<Reply>,
    /// Stateful replay: LOG lines the packet (and its replies) produced, in order.
    pub logs: Vec<LogLine>,
}

/// A LOG line as compared: level and text, the outer IP ID masked where it is drawn by the
/// kernel (`crate::kmsg::mask_outer_id`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogLine {
    /// Syslog level (priority & 7).
    pub level: u8,
    /// Text after the level.
    pub text: String,
}

impl Topology {
    /// Creates the namespaces, links, addresses, routes and sockets (phased routing).
    pub fn create(prefix: &str) -> Result<Self> {
        Self::create_with(prefix, &TopoConfig::default())
    }

    /// Creates a topology as `cfg` says.
    pub fn create_with(prefix: &str, cfg: &TopoConfig) -> Result<Self> {
        let fw = format!("{prefix}-fw");
        let snd = format!("{prefix}-snd");
        let dst = format!("{prefix}-dst");
        for ns in [&fw, &snd, &dst] {
            let _ = sh(&["ip", "netns", "del", ns]);
            sh(&["ip", "netns", "add", ns])?;
            let t = NsThread::enter(ns)?;
            let fwd = if *ns == fw { "1" } else { "0" };
            let extra: Vec<(String, String)> = if *ns == fw {
                cfg.sysctls.clone()
            } else {
                Vec::new()
            };
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
                for (k, v) in &extra {
                    std::fs::write(format!("/proc/sys/{k}"), v)
                        .with_context(|| format!("sysctl {k}={v}"))?;
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
        if cfg.stateful {
            for (k, ifc) in IFACES.iter().enumerate() {
                b += &format!("rule add pref {} oif {} lookup main\n", 40 + k, ifc.name);
            }
            b += "rule add pref 50 iif lo lookup 150\n";
            b += "rule add pref 51 iif lo lookup main\n";
            for (k, (ing, _)) in FORWARD_PAIRS.iter().enumerate() {
                b += &format!("rule add pref {} iif {} lookup {}\n", 61 + k, ing, 201 + k);
            }
            for a in &cfg.local {
                b += &format!("addr add {}/32 dev lo\n", std::net::Ipv4Addr::from(*a));
            }
            for (a, dev) in &cfg.reply_routes {
                let e = IFACES
                    .iter()
                    .find(|x| x.name == *dev)
                    .ok_or_else(|| anyhow!("no {dev}"))?;
                b += &format!(
                    "route add {}/32 via 198.18.0.{} dev {} table 150\n",
                    std::net::Ipv4Addr::from(*a),
                    e.host + 1,
                    e.name
                );
            }
        }
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
            stateful: cfg.stateful,
            _peer_threads: vec![snd_t, dst_t],
        };
        if !cfg.stateful {
            t.set_phase(Path::Output)?;
        }
        Ok(t)
    }

    /// Runs a closure inside the firewall namespace.
    pub fn in_fw<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        self.fw_thread.run(f)
    }

    /// Switches the firewall's policy routing so that injected packets take `path`.
    pub fn set_phase(&mut self, path: Path) -> Result<()> {
        if self.phase == Some(path) || self.stateful {
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

    /// Drains the capture sockets: (firewall interface the frame left by, IP datagram without
    /// link-layer padding).
    fn drain(&self, out: &mut Vec<(&'static str, Vec<u8>)>) -> Result<usize> {
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
                    let ip = &buf[14..r];
                    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                    let len = if total >= 20 {
                        total.min(ip.len())
                    } else {
                        ip.len()
                    };
                    out.push((name, ip[..len].to_vec()));
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Sends `bytes` as an Ethernet frame from the neighbour of firewall interface `iface`, to
    /// the firewall's MAC address or to the broadcast address.
    fn inject_frame(&self, iface: &str, bytes: &[u8], bcast: bool) -> Result<()> {
        let i = IFACES
            .iter()
            .position(|x| x.name == iface)
            .ok_or_else(|| anyhow!("no iface {iface}"))?;
        let mut frame = Vec::with_capacity(14 + bytes.len());
        if bcast {
            frame.extend_from_slice(&[0xff; 6]);
        } else {
            frame.extend_from_slice(&mac_bytes(&fw_mac(i)));
        }
        frame.extend_from_slice(&mac_bytes(&peer_mac(i)));
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(bytes);
        let fd = self
            .inject
            .get(iface)
            .ok_or_else(|| anyhow!("no inject socket {iface}"))?;
        // SAFETY: sending a valid buffer on a bound packet socket we own.
        let r = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if r < 0 {
            bail!("inject on {iface}: errno {}", errno());
        }
        Ok(())
    }

    /// Stateful replay of one packet (tagged with IP ID `tag`): sends it, waits until the
    /// firewall has taken it in and every frame it transmitted is captured, and, for the
    /// candidate, until it transmitted and received at least what the reference did
    /// (`expect`, at most [`EXPECT_WAIT`]); then until nothing moves for a moment. Frames that
    /// are the packet itself give its fate; any other frame is a reply.
    pub fn replay_step(
        &mut self,
        pkt: &crate::packet::Packet,
        bytes: &[u8],
        tag: u16,
        expect: Option<Expect>,
    ) -> Result<Step> {
        let mut step = Step::default();
        let mut frames = Vec::new();
        self.drain(&mut frames)?;
        step.late = frames
            .drain(..)
            .map(|(n, f)| Reply {
                iface: n.to_string(),
                bytes: normalize_reply(&f),
            })
            .collect();
        self.set_phase(pkt.path)?;
        let before = self.stats()?;
        let mut injected = 0u64;
        let mut probe: Option<OwnedFd> = None;
        match pkt.path {
            Path::Input | Path::Forward => {
                self.inject_frame(&pkt.iface, bytes, pkt.bcast)?;
                injected = 1;
            }
            Path::Output if pkt.socket => {
                let b = bytes.to_vec();
                let (fd, e) = self.fw_thread.run(move || socket_probe(&b))??;
                step.fate.send_errno = e;
                probe = Some(fd);
            }
            Path::Output => {
                let fd = self
                    .raw
                    .get(pkt.iface.as_str())
                    .ok_or_else(|| anyhow!("no raw socket {}", pkt.iface))?;
                step.fate.send_errno = raw_send(fd, bytes);
            }
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let mut captured = 0u64;
        loop {
            captured += self.drain(&mut frames)? as u64;
            let s = self.stats()?;
            let rx = s.in_receives - before.in_receives;
            let tx = s.tx_frames - before.tx_frames;
            let waited = start.elapsed() >= EXPECT_WAIT;
            let expected = expect.is_none_or(|e| (tx >= e.tx && rx >= e.rx) || waited);
            if rx >= injected && captured == tx && expected {
                // Quiet for a moment: longer when something looped back through `lo`, whose
                // backlog may run a little later.
                let looped = rx > injected;
                let (rounds, pause) = if looped { (10, 500) } else { (2, 250) };
                let mut settled = true;
                for _ in 0..rounds {
                    std::thread::sleep(Duration::from_micros(pause));
                    if self.stats()? != s {
                        settled = false;
                        break;
                    }
                }
                if settled {
                    captured += self.drain(&mut frames)? as u64;
                    step.rx = rx;
                    step.tx = tx;
                    if captured != tx {
                        continue;
                    }
                    break;
                }
                continue;
            }
            if captured > tx {
                bail!("captured {captured} frames, firewall transmitted {tx}");
            }
            if Instant::now() > deadline {
                bail!(
                    "step did not settle: received {rx} (injected {injected}), transmitted {tx}, captured {captured}"
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if let Some(fd) = probe {
            // Closing a TCP socket still connecting sends nothing (tcp_close from SYN_SENT).
            step.fate.sock_errno = Some(sock_error(&fd));
        }
        let sent = packet_fields(bytes);
        for (name, f) in frames {
            if packet_fields(&f) == sent && u16::from_be_bytes([f[4], f[5]]) == tag {
                step.fate.seen_on.push(name.to_string());
            } else if pkt.socket
                && packet_fields(&f).map(|x| (x.0, x.1)) == sent.map(|x| (x.0, x.1))
            {
                // The probe's own datagram, as its socket sent it.
                step.fate.seen_on.push(name.to_string());
                step.fate.replies.push(Reply {
                    iface: name.to_string(),
                    bytes: normalize_socket_segment(&normalize_reply(&f)),
                });
            } else {
                let mut n = normalize_reply(&f);
                if pkt.socket {
                    n = normalize_socket_answer(&n, bytes);
                }
                step.fate.replies.push(Reply {
                    iface: name.to_string(),
                    bytes: n,
                });
            }
        }
        step.fate.seen_on.sort();
        step.fate.replies.sort();
        Ok(step)
    }

    /// Frames captured since the last step (late replies), normalised.
    pub fn late_frames(&mut self) -> Result<Vec<Reply>> {
        let mut frames = Vec::new();
        self.drain(&mut frames)?;
        Ok(frames
            .into_iter()
            .map(|(n, f)| Reply {
                iface: n.to_string(),
                bytes: normalize_reply(&f),
            })
            .collect())
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
        let mut seen: Vec<(&'static str, Vec<u8>)> = Vec::new();
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
                        self.inject_frame(iface, bytes, false)?;
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
        for (name, frame) in seen {
            let id = u16::from_be_bytes([frame[4], frame[5]]);
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

/// Opens a socket probe in the calling thread's namespace for the datagram `p` (its source
/// and destination address and port, protocol UDP or TCP): bound to the source (IP_FREEBIND:
/// it need not be local), then UDP connects and sends the payload, TCP connects without
/// blocking. Not bound to the packet's interface, as applications are not: routing takes it
/// there (the destination's reply route), and an answer looped back through `lo` (REJECT's, to
/// a local source) would not find a socket bound to another device. Returns the socket (kept open
/// until the step has settled) and the errno of the send or connect (0, EINPROGRESS, EPERM).
fn socket_probe(p: &[u8]) -> Result<(OwnedFd, i32)> {
    if p.len() < 28 {
        bail!("socket probe: datagram too short");
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    let l4 = p.get(ihl..total).unwrap_or(&[]);
    if l4.len() < 8 {
        bail!("socket probe: transport header missing");
    }
    let tcp = match p[9] {
        6 => true,
        17 => false,
        x => bail!("socket probe: protocol {x} (UDP or TCP only)"),
    };
    let addr = |a: &[u8], port: &[u8]| {
        // SAFETY: sockaddr_in is plain old data; all-zero is valid.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_addr.s_addr = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        sin.sin_port = u16::from_ne_bytes([port[0], port[1]]);
        sin
    };
    if l4[0..2] == [0, 0] {
        bail!("socket probe: source port 0 (the kernel would draw one)");
    }
    let (src, dst) = (addr(&p[12..16], &l4[0..2]), addr(&p[16..20], &l4[2..4]));
    let ty = if tcp {
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK
    } else {
        libc::SOCK_DGRAM | libc::SOCK_NONBLOCK
    };
    // SAFETY: plain socket(2) call; checked and wrapped at once.
    let fd = unsafe { libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket probe: socket: errno {}", errno());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for (level, opt) in [
        (libc::SOL_SOCKET, libc::SO_REUSEADDR),
        (libc::SOL_IP, libc::IP_FREEBIND),
    ] {
        // SAFETY: valid option pointer and length.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let sl = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: src is a valid sockaddr_in of size sl.
    unsafe {
        if libc::bind(
            fd.as_raw_fd(),
            (&src as *const libc::sockaddr_in).cast(),
            sl,
        ) < 0
        {
            bail!("socket probe: bind: errno {}", errno());
        }
    }
    // SAFETY: dst is a valid sockaddr_in of size sl.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&dst as *const libc::sockaddr_in).cast(),
            sl,
        )
    };
    if tcp {
        return Ok((fd, if r < 0 { errno() } else { 0 }));
    }
    if r < 0 {
        return Ok((fd, errno()));
    }
    let payload = &l4[8..];
    // SAFETY: payload is a valid buffer of its length.
    let r = unsafe { libc::send(fd.as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0) };
    Ok((fd, if r < 0 { errno() } else { 0 }))
}

/// A socket's pending error (SO_ERROR), 0 when none; reading it clears it.
fn sock_error(fd: &OwnedFd) -> i32 {
    let mut e: libc::c_int = 0;
    let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out pointers of the given length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut e as *mut libc::c_int).cast(),
            &mut l,
        )
    };
    if r < 0 {
        errno()
    } else {
        e
    }
}

/// A TCP segment a socket probe sent, made comparable: the kernel draws the initial sequence
/// number and the timestamp offset, so sequence, acknowledgement, checksum and the timestamp
/// values are zeroed. (Anything else a socket sends is deterministic.)
pub fn normalize_socket_segment(b: &[u8]) -> Vec<u8> {
    let mut b = b.to_vec();
    if b.len() < 20 || b[9] != 6 {
        return b;
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if b.len() < ihl + 20 {
        return b;
    }
    let t = ihl;
    b[t + 4..t + 12].iter_mut().for_each(|x| *x = 0);
    b[t + 16] = 0;
    b[t + 17] = 0;
    let doff = (usize::from(b[t + 12] >> 4) * 4).clamp(20, b.len() - t);
    let mut i = t + 20;
    while i < t + doff {
        match b[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*b.get(i + 1).unwrap_or(&0));
                if len < 2 || i + len > t + doff {
                    break;
                }
                if kind == 8 {
                    b[i + 2..i + len].iter_mut().for_each(|x| *x = 0);
                }
                i += len;
            }
        }
    }
    b
}

/// An answer to a socket probe `probe` made comparable: it reflects what the socket drew (an
/// RST acknowledges a TCP socket's initial sequence number; an ICMP error quotes it, and the
/// IP ID), so an RST back to a TCP probe loses sequence, acknowledgement and checksum like the
/// probe's own segment, and an ICMP error quoting the probe loses the quoted IP ID and header
/// checksum and, for TCP, the quoted sequence, acknowledgement and checksum (its own checksum
/// recomputed when it was right).
pub fn normalize_socket_answer(b: &[u8], probe: &[u8]) -> Vec<u8> {
    if b.len() < 20 || probe.len() < 20 {
        return b.to_vec();
    }
    let reversed = b[12..16] == probe[16..20] && b[16..20] == probe[12..16];
    if b[9] == 6 && reversed {
        return normalize_socket_segment(b);
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    let inner = ihl + 8;
    if b[9] != 1 || b.len() < inner + 20 || !matches!(b[ihl], 3 | 4 | 5 | 11 | 12) {
        return b.to_vec();
    }
    if b[inner + 9] != probe[9] || b[inner + 12..inner + 20] != probe[12..20] {
        return b.to_vec();
    }
    let valid = crate::packet::l4_checksum(b)
        .is_some_and(|(at, full, _)| u16::from_be_bytes([b[at], b[at + 1]]) == full);
    let mut out = b.to_vec();
    let t = inner + usize::from(out[inner] & 0x0f) * 4;
    let tcp = probe[9] == 6;
    let drawn = (inner + 4..inner + 6)
        .chain(inner + 10..inner + 12)
        .chain((t + 4..t + 12).filter(|_| tcp))
        .chain((t + 16..t + 18).filter(|_| tcp));
    for k in drawn {
        if let Some(x) = out.get_mut(k) {
            *x = 0;
        }
    }
    if valid {
        crate::packet::fix_l4_checksum(&mut out);
    }
    out
}

/// What identifies one of the harness's packets in a captured frame whatever forwarding did
/// to it (TTL, checksum, recorded-route and timestamp options): addresses, protocol and
/// everything after the IP header, link-layer padding removed.
fn packet_fields(p: &[u8]) -> Option<([u8; 8], u8, &[u8])> {
    if p.len() < 20 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    let mut a = [0u8; 8];
    a.copy_from_slice(&p[12..20]);
    Some((a, p[9], p.get(ihl..total.max(ihl)).unwrap_or(&[])))
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
    let in_receives =
        test_support::snmp::in_receives(&snmp).ok_or_else(|| anyhow!("no Ip InReceives"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::IpSpec;
    use crate::packet::{build_ipv4, fix_l4_checksum, icmp_message, l4_checksum, tcp_segment};
    use std::net::Ipv4Addr;

    fn rst(partial: bool, id: u16) -> Vec<u8> {
        let mut p = build_ipv4(
            &IpSpec {
                src: Ipv4Addr::new(10, 0, 0, 2),
                dst: Ipv4Addr::new(10, 0, 0, 1),
                proto: 6,
                ttl: 64,
                frag: 0x4000,
                tos: 0,
                options: Vec::new(),
            },
            &tcp_segment(25, 4000, 0, 8, 0x14, 0, &[], &[]),
        );
        crate::packet::set_id(&mut p, id);
        let (at, full, part) = l4_checksum(&p).expect("tcp");
        let v = if partial { part } else { full };
        p[at..at + 2].copy_from_slice(&v.to_be_bytes());
        p
    }

    fn error_quoting(q: &[u8], id: u16) -> Vec<u8> {
        let mut p = build_ipv4(
            &IpSpec {
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                proto: 1,
                ttl: 64,
                frag: 0,
                tos: 0xc0,
                options: Vec::new(),
            },
            &icmp_message(3, 3, [0; 4], q),
        );
        crate::packet::set_id(&mut p, id);
        p
    }

    #[test]
    fn replies_compare_without_id_and_offload_state() {
        // The kernel's RST (ID 0, CHECKSUM_PARTIAL) and a raw socket's (drawn ID, full sum).
        assert_eq!(
            normalize_reply(&rst(true, 0)),
            normalize_reply(&rst(false, 4711))
        );
        // ... also when an ICMP error quotes them.
        assert_eq!(
            normalize_reply(&error_quoting(&rst(true, 0), 9)),
            normalize_reply(&error_quoting(&rst(false, 0), 17))
        );
        // A wrong checksum stays visible.
        let mut bad = rst(false, 1);
        bad[36] ^= 1;
        assert_ne!(normalize_reply(&bad), normalize_reply(&rst(false, 1)));
        // So does any other byte (here the TTL).
        let mut ttl = rst(false, 1);
        ttl[8] = 63;
        assert_ne!(normalize_reply(&ttl), normalize_reply(&rst(false, 1)));
        let n = normalize_reply(&rst(false, 77));
        assert_eq!(&n[4..6], &[0, 0]);
        let mut again = n.clone();
        fix_l4_checksum(&mut again);
        assert_eq!(again, n, "the transport checksum is the full one");
    }
}
