//! The LOG line bpfilter writes for an IPv6 record equals the kernel's own
//! (`nf_log_ip6_packet`), byte for byte.
//!
//! Two namespaces joined by a veth pair (named `wtc...`); the REAL kernel's ip6tables-legacy
//! installs a LOG rule (flags and level from the case) where a packet is logged; a real packet
//! is sent (sockets, ping, or a raw IPv6 socket for crafted headers: extension headers,
//! fragments, AH, ESP, ICMPv6 errors); an AF_PACKET socket on the logging side captures the
//! frame as the hook sees it; the record a program would write (family 10) is built from the
//! capture; `format_line` of it must equal the line the kernel wrote to /dev/kmsg, at the same
//! level. The daemon's own record, written through `KmsgWriter`, is read back too.
//!
//! `net.netfilter.nf_log_all_netns` is set to 1 for the test and restored afterwards.
//!
//! Run as root: `cargo test --release --test log6_kernel -- --nocapture` (SKIPPED when not
//! root, a failure under CI=true).
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::net::{Ipv6Addr, SocketAddrV6, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use test_support::log_all_netns::LogAllNetns;

use bpfilter::events::log::{format_line, kmsg_record, KmsgWriter};
use emitter::event::{Event, EventBuilder, KIND_LOG};
use ipt_abi::abi::{XT_LOG_IPOPT, XT_LOG_MACDECODE, XT_LOG_TCPOPT, XT_LOG_TCPSEQ, XT_LOG_UID};
use nix::sys::socket::{
    recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, LinkAddr, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrIn6,
};
use nix::sys::time::TimeVal;
use test_support::netns::{in_netns, sh, unique, Netns};

const A_IP: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const B_IP: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const PACKET_HOST: u8 = 0;
const PACKET_OUTGOING: u8 = 4;
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const HOOK_LOCAL_IN: u8 = 1;
const HOOK_LOCAL_OUT: u8 = 3;
const NFPROTO_IPV6: u8 = 10;

/// /dev/kmsg from the end of the log on.
struct Kmsg {
    file: File,
    seen: Vec<(u8, Vec<u8>)>,
}

/// `\xNN` escapes of /dev/kmsg undone.
fn unescape(t: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        if t[i] == b'\\' && t.get(i + 1) == Some(&b'x') && i + 3 < t.len() {
            let hex = std::str::from_utf8(&t[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else {
            out.push(t[i]);
            i += 1;
        }
    }
    out
}

impl Kmsg {
    fn open() -> Kmsg {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .unwrap();
        file.seek(SeekFrom::End(0)).unwrap();
        Kmsg {
            file,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) {
        let mut buf = vec![0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(n) => {
                    let rec = &buf[..n];
                    let semi = rec.iter().position(|&c| c == b';').unwrap();
                    let prio: u8 = std::str::from_utf8(&rec[..semi])
                        .unwrap()
                        .split(',')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    let text = &rec[semi + 1..];
                    let end = text.iter().position(|&c| c == b'\n').unwrap_or(text.len());
                    self.seen.push((prio, unescape(&text[..end])));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => panic!("read /dev/kmsg: {e}"),
            }
        }
    }

    /// The first record starting with `prefix` whose facility is `facility`, within `wait`.
    fn take(&mut self, prefix: &[u8], facility: u8, wait: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + wait;
        loop {
            self.drain();
            if let Some(i) = self
                .seen
                .iter()
                .position(|(p, t)| p >> 3 == facility && t.starts_with(prefix))
            {
                return Some(self.seen.remove(i));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    A,
    B,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hook {
    Input,
    Output,
}

/// a (va) ---- veth ---- (vb) b, fd77::1 and fd77::2.
struct Topo {
    a: Netns,
    b: Netns,
    va: String,
    vb: String,
}

fn ifindex(ns: &str, dev: &str) -> u32 {
    let out = sh(&format!("ip -n {ns} -o link show dev {dev}"));
    out.split(':').next().unwrap().trim().parse().unwrap()
}

impl Topo {
    fn new() -> Topo {
        let a = Netns::new("wtcla");
        let b = Netns::new("wtclb");
        let va = unique("wtcva");
        let vb = unique("wtcvb");
        sh(&format!(
            "ip link add {va} netns {a} type veth peer name {vb} netns {b} && \
             ip -n {a} addr add fd77::1/64 dev {va} nodad && ip -n {a} link set {va} up && \
             ip -n {b} addr add fd77::2/64 dev {vb} nodad && ip -n {b} link set {vb} up",
            a = a.name,
            b = b.name
        ));
        let t = Topo { a, b, va, vb };
        // neighbour discovery done before the first case
        sh(&format!(
            "ip netns exec {} ping -6 -c1 -W3 fd77::2 >/dev/null",
            t.a.name
        ));
        t
    }

    fn ns(&self, s: Side) -> &str {
        match s {
            Side::A => &self.a.name,
            Side::B => &self.b.name,
        }
    }

    fn dev(&self, s: Side) -> &str {
        match s {
            Side::A => &self.va,
            Side::B => &self.vb,
        }
    }

    fn ipt(&self, s: Side, args: &str) {
        sh(&format!(
            "ip netns exec {} ip6tables-legacy -w {args}",
            self.ns(s)
        ));
    }

    fn flush(&self) {
        for s in [Side::A, Side::B] {
            for t in ["filter", "mangle"] {
                self.ipt(s, &format!("-t {t} -F"));
            }
        }
    }

    /// A raw IPv6 socket in A (IPV6_HDRINCL) sends `pkt` as it is.
    fn raw_from_a(&self, pkt: Vec<u8>) {
        in_netns(&self.a.name, move || {
            let fd = socket(
                AddressFamily::Inet6,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::Raw,
            )
            .unwrap();
            let to = SockaddrIn6::from(SocketAddrV6::new(B_IP, 0, 0, 0));
            sendto(fd.as_raw_fd(), &pkt, &to, MsgFlags::empty()).unwrap();
        });
    }

    fn udp_from_a(&self, port: u16) {
        in_netns(&self.a.name, move || {
            let s = UdpSocket::bind((A_IP, 0)).unwrap();
            s.send_to(b"hello", (B_IP, port)).unwrap();
        });
    }

    fn tcp_connect_from_a(&self, port: u16) {
        in_netns(&self.a.name, move || {
            let to = (B_IP, port).into();
            let _ = TcpStream::connect_timeout(&to, Duration::from_secs(1));
        });
    }
}

/// An AF_PACKET socket in a namespace, receiving every frame.
struct Capture {
    fd: OwnedFd,
}

impl Capture {
    fn open(ns: &str) -> Capture {
        let fd = in_netns(ns, || {
            socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::EthAll,
            )
            .unwrap()
        });
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000)).unwrap();
        Capture { fd }
    }

    /// The first IPv6 frame on `ifindex` of `pkttype` whose packet satisfies `pick`.
    fn frame(&self, ifindex: u32, pkttype: u8, pick: &dyn Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let Ok((n, Some(from))) = recvfrom::<LinkAddr>(self.fd.as_raw_fd(), &mut buf) else {
                continue;
            };
            let f = &buf[..n];
            if from.ifindex() == ifindex as usize
                && from.pkttype() == pkttype
                && n >= 54
                && f[12..14] == [0x86, 0xdd]
                && pick(&f[14..])
            {
                return f.to_vec();
            }
        }
        panic!("no frame captured on ifindex {ifindex}");
    }
}

struct Case<'a> {
    tag: &'a str,
    at: Side,
    hook: Hook,
    dev: Option<&'a str>,
    matches: &'a str,
    level: u8,
    flags: u8,
    before: &'a [String],
    mark: u32,
    uid: Option<(u32, u32)>,
    send: &'a dyn Fn(&Topo),
    pick: &'a dyn Fn(&[u8]) -> bool,
}

fn log_options(flags: u8) -> String {
    let mut o = String::new();
    for (bit, opt) in [
        (XT_LOG_TCPSEQ, " --log-tcp-sequence"),
        (XT_LOG_TCPOPT, " --log-tcp-options"),
        (XT_LOG_IPOPT, " --log-ip-options"),
        (XT_LOG_UID, " --log-uid"),
        (XT_LOG_MACDECODE, " --log-macdecode"),
    ] {
        if flags & bit != 0 {
            o.push_str(opt);
        }
    }
    o
}

struct Run {
    topo: Topo,
    kmsg: Kmsg,
    tag: String,
    matched: Vec<String>,
}

impl Run {
    fn prefix(&self, tag: &str) -> String {
        format!("{}{tag}: ", self.tag)
    }

    fn record(&self, c: &Case<'_>) -> (Vec<u8>, String) {
        let t = &self.topo;
        let prefix = self.prefix(c.tag);
        assert!(prefix.len() <= 29, "prefix {prefix:?} too long");
        let dev = c.dev.unwrap_or(t.dev(c.at)).to_owned();
        let (chain, dir) = match c.hook {
            Hook::Input => ("-A INPUT", "-i"),
            Hook::Output => ("-A OUTPUT", "-o"),
        };
        for rule in c.before {
            t.ipt(c.at, rule);
        }
        t.ipt(
            c.at,
            &format!(
                "{chain} {dir} {dev} {} -j LOG --log-prefix '{prefix}' --log-level {}{}",
                c.matches,
                c.level,
                log_options(c.flags)
            ),
        );
        let cap = Capture::open(t.ns(c.at));
        let idx = ifindex(t.ns(c.at), &dev);
        (c.send)(t);
        let pkttype = if c.hook == Hook::Output {
            PACKET_OUTGOING
        } else {
            PACKET_HOST
        };
        let frame = cap.frame(idx, pkttype, c.pick);
        t.flush();

        // What the hook sees: the datagram trimmed to 40 + payload_len (ip6_rcv_core).
        let ip = &frame[14..];
        let tot = (40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))).min(ip.len());
        let hook = match c.hook {
            Hook::Input => HOOK_LOCAL_IN,
            Hook::Output => HOOK_LOCAL_OUT,
        };
        let mut b = EventBuilder::new(KIND_LOG, hook, &ip[..tot])
            .pf(NFPROTO_IPV6)
            .arg(c.level)
            .log_flags(c.flags)
            .prefix(prefix.as_bytes())
            .mark(c.mark);
        if c.hook == Hook::Output {
            b = b.output(dev.as_bytes(), idx);
        } else {
            let dev_type = if dev == "lo" {
                ARPHRD_LOOPBACK
            } else {
                ARPHRD_ETHER
            };
            b = b.input(dev.as_bytes(), idx).mac(dev_type, 14, &frame[..14]);
        }
        if let Some((u, g)) = c.uid {
            b = b.uid_gid(u, g);
        }
        (b.build(), prefix)
    }

    fn case(&mut self, c: Case<'_>) {
        let (raw, prefix) = self.record(&c);
        let ev = Event::parse(&raw).unwrap();
        let ours = format_line(&ev);
        let (prio, kernel) = self
            .kmsg
            .take(prefix.as_bytes(), 0, Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{}: the kernel wrote no line", c.tag));
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert_eq!(
            show(&ours),
            show(&kernel),
            "{}: line differs (left: bpfilter, right: kernel)",
            c.tag
        );
        assert_eq!(prio, c.level, "{}: kernel level", c.tag);

        let mut w = KmsgWriter::open().unwrap();
        w.log(&ev).unwrap();
        let rec = kmsg_record(&ev);
        assert_eq!(
            rec,
            [format!("<{}>", c.level).as_bytes(), &kernel[..], &b"\n"[..]].concat()
        );
        let (prio, text) = self
            .kmsg
            .take(prefix.as_bytes(), 1, Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{}: our record did not reach the log", c.tag));
        assert_eq!(show(&text), show(&kernel), "{}: record read back", c.tag);
        assert_eq!(prio, 8 | c.level, "{}: LOG_USER and the level", c.tag);
        println!("MATCH {}", show(&kernel));
        self.matched.push(c.tag.to_owned());
    }
}

// Packet crafting for the raw socket (the header is sent as it is).

/// An IPv6 packet A -> B carrying flow label `label` (how the capture finds it) and traffic
/// class 0x2e: `exts` are (header number, bytes) whose first byte becomes the next header.
fn ipv6(label: u32, exts: &[(u8, Vec<u8>)], proto: u8, l4: &[u8]) -> Vec<u8> {
    let kinds: Vec<u8> = exts.iter().map(|e| e.0).chain([proto]).collect();
    let first = 6u32 << 28 | 0x2e << 20 | (label & 0xf_ffff);
    let mut p = first.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, kinds[0], 63]);
    p.extend_from_slice(&A_IP.octets());
    p.extend_from_slice(&B_IP.octets());
    for (i, (_, b)) in exts.iter().enumerate() {
        p.push(kinds[i + 1]);
        p.extend_from_slice(&b[1..]);
    }
    p.extend_from_slice(l4);
    let plen = (p.len() - 40) as u16;
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p
}

/// An IPv6 header as an ICMPv6 error quotes it (B to a third host).
fn quoted(proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(&[proto, 64]);
    p.extend_from_slice(&B_IP.octets());
    p.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
    p.extend_from_slice(l4);
    p
}

fn tcp(flags: u8, byte12_low: u8, doff: u8, opts: &[u8]) -> Vec<u8> {
    let mut t = vec![0x9c, 0x41, 0x1f, 0x90, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 9];
    t.extend_from_slice(&[doff << 4 | byte12_low, flags, 0x72, 0x10, 0, 0, 0, 3]);
    t.extend_from_slice(opts);
    t
}

fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(8 + data.len() as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

fn opts8() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

fn frag(offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let fo = offset_units << 3 | u16::from(more);
    let mut f = vec![0, 0];
    f.extend_from_slice(&fo.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f
}

fn label_is(label: u32) -> impl Fn(&[u8]) -> bool {
    move |ip: &[u8]| u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]) & 0xf_ffff == label
}

/// The transport header after hop-by-hop/destination options/fragment headers.
fn l4(ip: &[u8]) -> (u8, &[u8]) {
    let mut next = ip[6];
    let mut at = 40;
    while matches!(next, 0 | 60 | 44) && at + 8 <= ip.len() {
        let len = if next == 44 {
            8
        } else {
            (usize::from(ip[at + 1]) + 1) * 8
        };
        next = ip[at];
        at += len;
    }
    (next, ip.get(at..).unwrap_or(&[]))
}

fn dport_is(proto: u8, port: u16) -> impl Fn(&[u8]) -> bool {
    move |ip: &[u8]| {
        let (p, t) = l4(ip);
        p == proto && t.get(2..4) == Some(&port.to_be_bytes()[..])
    }
}

fn icmp6_type_is(ty: u8) -> impl Fn(&[u8]) -> bool {
    move |ip: &[u8]| {
        let (p, t) = l4(ip);
        p == 58 && t.first() == Some(&ty)
    }
}

/// tag, rule matches, LOG flags, the mark mangle PREROUTING gives it (0: none), the packet.
type Crafted = (&'static str, &'static str, u8, u32, Vec<u8>);

#[test]
fn kernel_ipv6_log_lines_match() {
    if !test_support::privileged()
        || !test_support::gate::ready(test_support::gate::missing_tools(&["ip6tables-legacy"]))
    {
        return;
    }
    let _all = LogAllNetns::set(true);
    let topo = Topo::new();
    let kmsg = Kmsg::open();
    let tag = format!("w6{}", std::process::id() % 100_000);
    let mut run = Run {
        topo,
        kmsg,
        tag,
        matched: Vec::new(),
    };
    let none: &[String] = &[];

    // A real SYN: options, sequence numbers; the IP options flag has no extension header.
    run.case(Case {
        tag: "syn",
        at: Side::B,
        hook: Hook::Input,
        dev: None,
        matches: "-p tcp --dport 7001",
        level: 4,
        flags: XT_LOG_TCPSEQ | XT_LOG_TCPOPT | XT_LOG_IPOPT,
        before: none,
        mark: 0,
        uid: None,
        send: &|t| t.tcp_connect_from_a(7001),
        pick: &dport_is(6, 7001),
    });
    // The RST B's kernel answers with, at OUTPUT: no socket file, so no UID.
    run.case(Case {
        tag: "rst",
        at: Side::B,
        hook: Hook::Output,
        dev: None,
        matches: "-p tcp --tcp-flags RST RST",
        level: 7,
        flags: XT_LOG_UID | XT_LOG_TCPSEQ,
        before: none,
        mark: 0,
        uid: None,
        send: &|t| t.tcp_connect_from_a(7011),
        pick: &|ip: &[u8]| {
            let (p, t) = l4(ip);
            p == 6 && t.get(13).is_some_and(|f| f & 0x04 != 0)
        },
    });
    // UDP at level 6 with a mark from mangle PREROUTING.
    run.case(Case {
        tag: "udp",
        at: Side::B,
        hook: Hook::Input,
        dev: None,
        matches: "-p udp --dport 7002",
        level: 6,
        flags: 0,
        before: &["-t mangle -A PREROUTING -p udp --dport 7002 -j MARK --set-mark 0x2a".into()],
        mark: 0x2a,
        uid: None,
        send: &|t| t.udp_from_a(7002),
        pick: &dport_is(17, 7002),
    });
    // ping with MAC decoding.
    run.case(Case {
        tag: "ping",
        at: Side::B,
        hook: Hook::Input,
        dev: None,
        matches: "-p icmpv6 --icmpv6-type echo-request",
        level: 5,
        flags: XT_LOG_MACDECODE | XT_LOG_IPOPT,
        before: none,
        mark: 0,
        uid: None,
        send: &|t| {
            sh(&format!(
                "ip netns exec {} ping -6 -c1 -W1 -q fd77::2",
                t.a.name
            ));
        },
        pick: &icmp6_type_is(128),
    });
    // ping out of A as root with --log-uid at OUTPUT.
    run.case(Case {
        tag: "pingout",
        at: Side::A,
        hook: Hook::Output,
        dev: None,
        matches: "-p icmpv6 --icmpv6-type echo-request",
        level: 4,
        flags: XT_LOG_UID,
        before: none,
        mark: 0,
        uid: Some((0, 0)),
        send: &|t| {
            sh(&format!(
                "ip netns exec {} ping -6 -c1 -W1 -q fd77::2",
                t.a.name
            ));
        },
        pick: &icmp6_type_is(128),
    });
    // A datagram of another user, marked in mangle OUTPUT: UID/GID, then MARK.
    run.case(Case {
        tag: "uid",
        at: Side::A,
        hook: Hook::Output,
        dev: None,
        matches: "-p udp --dport 7016",
        level: 4,
        flags: XT_LOG_UID,
        before: &["-t mangle -A OUTPUT -p udp --dport 7016 -j MARK --set-mark 0x7".into()],
        mark: 7,
        uid: Some((4321, 8765)),
        send: &|t| {
            sh(&format!(
                "ip netns exec {} setpriv --reuid 4321 --regid 8765 --clear-groups \
                 bash -c 'echo hi > /dev/udp/fd77::2/7016'",
                t.a.name
            ));
        },
        pick: &dport_is(17, 7016),
    });
    // B's real ICMPv6 port unreachable about A's datagram, logged in A: the quoted packet.
    run.case(Case {
        tag: "unreach",
        at: Side::A,
        hook: Hook::Input,
        dev: None,
        matches: "-p icmpv6 --icmpv6-type destination-unreachable",
        level: 4,
        flags: XT_LOG_IPOPT | XT_LOG_TCPSEQ,
        before: none,
        mark: 0,
        uid: None,
        send: &|t| t.udp_from_a(7005),
        pick: &icmp6_type_is(1),
    });
    // Loopback: MACDECODE falls back to MAC= on a non-Ethernet device.
    run.case(Case {
        tag: "lo",
        at: Side::B,
        hook: Hook::Input,
        dev: Some("lo"),
        matches: "-p icmpv6 --icmpv6-type echo-request",
        level: 4,
        flags: XT_LOG_MACDECODE,
        before: none,
        mark: 0,
        uid: None,
        send: &|t| {
            sh(&format!(
                "ip netns exec {} ping -6 -c1 -W1 -q ::1",
                t.b.name
            ));
        },
        pick: &icmp6_type_is(128),
    });

    // Crafted packets from A's raw socket, each with its own flow label.
    let ah = |nh_len: u8| vec![0, nh_len, 0, 0, 0xf1, 0x23, 0x45, 0x67, 0, 0, 0, 1];
    let routing = vec![0, 0, 253, 0, 0, 0, 0, 0];
    let mut ptb = vec![2u8, 0, 0, 0, 0, 0, 0x05, 0x00];
    ptb.extend(quoted(6, &tcp(0x12, 0, 6, &[2, 4, 5, 0xa0])));
    let mut pprob = vec![4u8, 1, 0, 0, 0, 0, 0, 0x2a];
    pprob.extend(quoted(60, &[17, 0, 0x99, 4, 0, 0, 0, 0]));
    let mut quoted_err = vec![3u8, 0, 0, 0, 0, 0, 0, 0];
    quoted_err.extend(quoted(58, &[1, 4, 0, 0, 0, 0, 0, 0]));
    let mut cut = vec![1u8, 3, 0, 0, 0, 0, 0, 0];
    cut.extend(&quoted(17, &udp(1, 2, b""))[..30]);
    let crafted: Vec<Crafted> = vec![
        (
            "hbh",
            "-p udp",
            XT_LOG_IPOPT,
            0,
            ipv6(
                0xa0001,
                &[(0, opts8()), (60, opts8())],
                17,
                &udp(1, 7009, b"x"),
            ),
        ),
        (
            "hbhnoopt",
            "-p udp",
            0,
            0x2b,
            ipv6(
                0xa0002,
                &[(0, opts8()), (60, opts8())],
                17,
                &udp(1, 7009, b"x"),
            ),
        ),
        (
            "routing",
            "-p udp",
            XT_LOG_IPOPT,
            0,
            ipv6(0xa0003, &[(43, routing)], 17, &udp(3, 4, b"")),
        ),
        (
            "frag0",
            "-m frag --fragid 1",
            XT_LOG_IPOPT,
            0,
            ipv6(0xa0004, &[(44, frag(0, true, 1))], 17, &udp(5, 6, &[0; 16])),
        ),
        (
            "frag",
            "-m frag --fragid 2",
            0,
            0x2c,
            ipv6(0xa0005, &[(44, frag(185, false, 2))], 58, &[0; 16]),
        ),
        (
            "fragdst",
            "-m frag --fragid 3",
            XT_LOG_IPOPT,
            0x2c,
            ipv6(
                0xa0006,
                &[(44, frag(185, true, 3)), (60, opts8())],
                6,
                &[0; 16],
            ),
        ),
        (
            "ah",
            "-m ah --ahspi 0xf1234567",
            XT_LOG_IPOPT | XT_LOG_TCPSEQ,
            0,
            ipv6(0xa0007, &[(51, ah(1))], 6, &tcp(0xff, 0x0f, 5, &[])),
        ),
        (
            "ahnoopt",
            "-m ah --ahspi 0xf1234567",
            0,
            0x2d,
            ipv6(0xa0008, &[(51, ah(1))], 6, &tcp(0x10, 0, 5, &[])),
        ),
        (
            "esp",
            "-p esp",
            XT_LOG_IPOPT,
            0,
            ipv6(0xa0009, &[], 50, &[0xc0, 0, 0x10, 1, 0, 0, 0, 1]),
        ),
        (
            "espnoopt",
            "-p esp",
            0,
            0x2d,
            ipv6(0xa000a, &[], 50, &[0xc0, 0, 0x10, 1, 0, 0, 0, 1]),
        ),
        (
            "tcpshort",
            "-p tcp",
            XT_LOG_UID,
            0x2b,
            ipv6(0xa000b, &[], 6, &[0; 10]),
        ),
        (
            "tcpopttr",
            "-p tcp",
            XT_LOG_TCPOPT,
            0x2b,
            ipv6(0xa000c, &[], 6, &tcp(0x10, 0, 15, &[1, 1, 1, 1])),
        ),
        (
            "udpshort",
            "-p udp",
            0,
            0x2b,
            ipv6(0xa000d, &[], 17, &[0; 6]),
        ),
        (
            "udplite",
            "-p udplite",
            0,
            0,
            ipv6(0xa000e, &[], 136, &udp(9, 10, b"ab")),
        ),
        (
            "proto253",
            "-p 253",
            0,
            0x2e,
            ipv6(0xa000f, &[], 253, b"zz"),
        ),
        ("nonext", "", 0, 0, ipv6(0xa0010, &[], 59, b"")),
        (
            "echoreply",
            "-p icmpv6",
            0,
            0,
            ipv6(0xa0011, &[], 58, &[129, 0, 0, 0, 0, 7, 0, 9]),
        ),
        (
            "mld",
            "-p icmpv6",
            0,
            0,
            ipv6(0xa0012, &[], 58, &[130, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ),
        (
            "icmpshort",
            "-p icmpv6",
            0,
            0x2e,
            ipv6(0xa0013, &[], 58, &[128, 0, 0]),
        ),
        (
            "ptb",
            "-p icmpv6",
            XT_LOG_TCPSEQ | XT_LOG_TCPOPT | XT_LOG_IPOPT | XT_LOG_MACDECODE,
            0x2f,
            ipv6(0xa0014, &[], 58, &ptb),
        ),
        (
            "pprob",
            "-p icmpv6",
            XT_LOG_IPOPT,
            0,
            ipv6(0xa0015, &[], 58, &pprob),
        ),
        (
            "qerr",
            "-p icmpv6",
            0,
            0,
            ipv6(0xa0016, &[], 58, &quoted_err),
        ),
        ("qcut", "-p icmpv6", 0, 0x2f, ipv6(0xa0017, &[], 58, &cut)),
    ];
    let a_ip = "fd77::1";
    for (tag, matches, flags, mark, pkt) in crafted {
        let label = u32::from_be_bytes([pkt[0], pkt[1], pkt[2], pkt[3]]) & 0xf_ffff;
        let before: Vec<String> = if mark != 0 {
            vec![format!(
                "-t mangle -A PREROUTING -s {a_ip} -j MARK --set-mark {mark:#x}"
            )]
        } else {
            Vec::new()
        };
        let send = move |t: &Topo| t.raw_from_a(pkt.clone());
        run.case(Case {
            tag,
            at: Side::B,
            hook: Hook::Input,
            dev: None,
            matches: &format!("-s {a_ip} {matches}"),
            level: 4,
            flags,
            before: &before,
            mark,
            uid: None,
            send: &send,
            pick: &label_is(label),
        });
    }

    println!(
        "log6_kernel: {} kernel lines matched bpfilter's, byte for byte: {}",
        run.matched.len(),
        run.matched.join(" ")
    );
}
