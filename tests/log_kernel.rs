//! The LOG line bpfilter writes equals the kernel's own, field for field.
//!
//! Two namespaces joined by a veth pair; the REAL kernel's iptables-legacy installs a LOG rule
//! (flags and level taken from the case) where a packet is logged; a real packet is sent
//! (sockets, ping, or a raw IPv4 socket for crafted headers); an AF_PACKET socket on the
//! logging side captures the frame as the hook sees it; the record a program would write is
//! built from the capture with `EventBuilder`; `format_line` of it must equal the line the
//! kernel wrote to /dev/kmsg, at the same level. The daemon's own record, written through
//! `KmsgWriter`, is read back too: same text, same level, facility LOG_USER.
//!
//! Run as root: `cargo test --test log_kernel -- --nocapture` (SKIPPED when not root, a
//! failure under CI=true).
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use test_support::log_all_netns::LogAllNetns;

use bpfilter::events::log::{
    devkmsg_mode, format_line, kmsg_record, log_allowed_in, nf_log_all_netns, DevkmsgMode,
    KmsgWriter,
};
use emitter::event::{Event, EventBuilder, KIND_LOG};
use ipt_abi::abi::{XT_LOG_IPOPT, XT_LOG_MACDECODE, XT_LOG_TCPOPT, XT_LOG_TCPSEQ, XT_LOG_UID};
use nix::sys::socket::{
    recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, LinkAddr, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrIn,
};
use nix::sys::time::TimeVal;
use test_support::netns::{in_netns, sh, Netns};
use test_support::packet::Ipv4;

const A_IP: [u8; 4] = [10, 77, 0, 1];
const B_IP: [u8; 4] = [10, 77, 0, 2];
const PACKET_HOST: u8 = 0;
const PACKET_OUTGOING: u8 = 4;
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const HOOK_PRE_ROUTING: u8 = 0;
const HOOK_LOCAL_IN: u8 = 1;
const HOOK_LOCAL_OUT: u8 = 3;

/// /dev/kmsg from the end of the log on: every record that arrives, parsed.
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

    /// Reads what has arrived: "prio,seq,ts,flags[,..];text\n[ KEY=value\n]".
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

    /// How many records start with `prefix` by now.
    fn count(&mut self, prefix: &[u8]) -> usize {
        self.drain();
        self.seen
            .iter()
            .filter(|(_, t)| t.starts_with(prefix))
            .count()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    A,
    B,
}

/// Where the LOG rule sits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hook {
    /// raw PREROUTING (sees fragments: nothing reassembles in these namespaces)
    PreRouting,
    /// filter INPUT
    Input,
    /// filter OUTPUT
    Output,
}

/// a (va) ---- veth ---- (vb) b
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
        let a = Netns::new("la");
        let b = Netns::new("lb");
        let va = test_support::netns::unique("lva");
        let vb = test_support::netns::unique("lvb");
        sh(&format!(
            "ip link add {va} netns {} type veth peer name {vb} netns {} && \
             ip -n {} addr add 10.77.0.1/24 dev {va} && ip -n {} link set {va} up && \
             ip -n {} addr add 10.77.0.2/24 dev {vb} && ip -n {} link set {vb} up",
            a.name, b.name, a.name, a.name, b.name, b.name
        ));
        Topo { a, b, va, vb }
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

    /// The kernel's own iptables-legacy in a namespace.
    fn ipt(&self, s: Side, args: &str) {
        sh(&format!(
            "ip netns exec {} iptables-legacy {args}",
            self.ns(s)
        ));
    }

    fn flush(&self) {
        for s in [Side::A, Side::B] {
            for t in ["filter", "raw", "mangle"] {
                self.ipt(s, &format!("-t {t} -F"));
            }
        }
    }

    /// A raw IPv4 socket in A sends `pkt` (its own header: IP_HDRINCL) to B.
    fn raw_from_a(&self, pkt: Vec<u8>) {
        in_netns(&self.a.name, move || {
            let fd = socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::Raw,
            )
            .unwrap();
            let to = SockaddrIn::new(B_IP[0], B_IP[1], B_IP[2], B_IP[3], 0);
            sendto(fd.as_raw_fd(), &pkt, &to, MsgFlags::empty()).unwrap();
        });
    }

    fn udp_from_a(&self, port: u16) {
        in_netns(&self.a.name, move || {
            let s = UdpSocket::bind("10.77.0.1:0").unwrap();
            s.send_to(b"hello", SocketAddrV4::new(Ipv4Addr::from(B_IP), port))
                .unwrap();
        });
    }

    fn tcp_connect_from_a(&self, port: u16) {
        in_netns(&self.a.name, move || {
            let to = SocketAddrV4::new(Ipv4Addr::from(B_IP), port).into();
            // Refused (RST) or timed out: only the SYN matters.
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

    /// The first IPv4 frame on `ifindex` of `pkttype` whose IP packet satisfies `pick`.
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
                && n > 34
                && f[12..14] == [0x08, 0x00]
                && pick(&f[14..])
            {
                return f.to_vec();
            }
        }
        panic!("no frame captured on ifindex {ifindex}");
    }
}

/// One comparison.
struct Case<'a> {
    /// Short name, part of the LOG prefix.
    tag: &'a str,
    /// Namespace of the LOG rule.
    at: Side,
    hook: Hook,
    /// Device the rule matches (`-i`/`-o`) and the capture listens on; None: the veth.
    dev: Option<&'a str>,
    /// Matches of the LOG rule.
    matches: &'a str,
    level: u8,
    flags: u8,
    /// Rules installed first (e.g. a mangle MARK), in the same namespace.
    before: &'a [&'a str],
    /// skb->mark at the LOG rule.
    mark: u32,
    /// Socket owner at the LOG rule.
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
    /// The LOG prefix of a case: unique to this process, at most 29 bytes.
    fn prefix(&self, tag: &str) -> String {
        format!("{}{tag}: ", self.tag)
    }

    /// Installs the case's rules, sends, captures, and returns the record and the prefix.
    fn record(&self, c: &Case<'_>) -> (Vec<u8>, String) {
        let t = &self.topo;
        let prefix = self.prefix(c.tag);
        assert!(prefix.len() <= 29, "prefix {prefix:?} too long");
        let dev = c.dev.unwrap_or(t.dev(c.at)).to_owned();
        let (table_chain, dir) = match c.hook {
            Hook::PreRouting => ("-t raw -A PREROUTING", "-i"),
            Hook::Input => ("-A INPUT", "-i"),
            Hook::Output => ("-A OUTPUT", "-o"),
        };
        for rule in c.before {
            t.ipt(c.at, rule);
        }
        t.ipt(
            c.at,
            &format!(
                "{table_chain} {dir} {dev} {} -j LOG --log-prefix '{prefix}' --log-level {}{}",
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

        // What the hook sees: the IP datagram, trimmed to tot_len as ip_rcv does.
        let ip = &frame[14..];
        let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        let hook = match c.hook {
            Hook::PreRouting => HOOK_PRE_ROUTING,
            Hook::Input => HOOK_LOCAL_IN,
            Hook::Output => HOOK_LOCAL_OUT,
        };
        let mut b = EventBuilder::new(KIND_LOG, hook, &ip[..tot])
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

    /// Runs a case: the kernel's line and bpfilter's must be the same text at the same level.
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

        // The daemon's write: a fresh writer per case, since under printk_devkmsg=ratelimit
        // each open file may log 10 lines per 5 seconds.
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
        assert_eq!(
            prio,
            8 | c.level,
            "{}: LOG_USER and the rule's level",
            c.tag
        );
        println!("MATCH {}", show(&kernel));
        self.matched.push(c.tag.to_owned());
    }
}

// Packet crafting for the raw socket (the sender fills tot_len and the IP checksum).

fn ipv4(proto: u8, id: u16, frag_off: u16, tos: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    Ipv4 {
        tos,
        id,
        frag: frag_off,
        opts,
        ..Ipv4::new(proto, A_IP, B_IP)
    }
    .build(payload)
}

/// An IPv4 header as quoted by an ICMP error (B to A), with a checksum of zero.
fn quoted(proto: u8, ihl_field: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x40 | ihl_field, 0];
    p.extend_from_slice(&(20 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0xab, 0xcd, 0x40, 0, 63, proto, 0, 0]);
    p.extend_from_slice(&B_IP);
    p.extend_from_slice(&[192, 0, 2, 9]);
    p.extend_from_slice(payload);
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

fn id_is(id: u16) -> impl Fn(&[u8]) -> bool {
    move |ip: &[u8]| ip[4..6] == id.to_be_bytes()
}

fn l4(ip: &[u8]) -> &[u8] {
    &ip[usize::from(ip[0] & 0x0f) * 4..]
}

fn dport_is(proto: u8, port: u16) -> impl Fn(&[u8]) -> bool {
    move |ip: &[u8]| ip[9] == proto && l4(ip).get(2..4) == Some(&port.to_be_bytes()[..])
}

fn icmp_type_is(ty: u8) -> impl Fn(&[u8]) -> bool {
    move |ip: &[u8]| ip[9] == 1 && l4(ip).first() == Some(&ty)
}

/// A packet sent from A's raw socket: tag, hook, rule matches, LOG flags, the mark mangle
/// PREROUTING gives it (0: none), the packet.
type Crafted = (&'static str, Hook, &'static str, u8, u32, Vec<u8>);

#[test]
fn kernel_log_lines_match() {
    if !test_support::privileged() {
        return;
    }
    let _all = LogAllNetns::set(true);
    assert!(
        nf_log_all_netns().unwrap(),
        "sysctl read back from the initial namespace"
    );
    assert!(log_allowed_in(false, true));

    let topo = Topo::new();
    let kmsg = Kmsg::open();
    let tag = format!("k{}", std::process::id() % 100_000);
    let mut run = Run {
        topo,
        kmsg,
        tag,
        matched: Vec::new(),
    };
    let none: &[&str] = &[];
    let a_ip = "10.77.0.1";

    // TCP SYN from a real connect: options and sequence numbers, IP options flag unused.
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
    // The RST B's kernel answers with: sent from a socket without a file, so no UID.
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
        pick: &|ip: &[u8]| ip[9] == 6 && l4(ip)[13] & 0x04 != 0,
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
        before: &["-t mangle -A PREROUTING -p udp --dport 7002 -j MARK --set-mark 0x2a"],
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
        matches: "-p icmp --icmp-type echo-request",
        level: 5,
        flags: XT_LOG_MACDECODE | XT_LOG_IPOPT,
        before: none,
        mark: 0,
        uid: None,
        send: &|t| {
            sh(&format!(
                "ip netns exec {} ping -c1 -W1 -q 10.77.0.2",
                t.a.name
            ));
        },
        pick: &icmp_type_is(8),
    });
    // ping out of A as root, with --log-uid at OUTPUT: UID=0 GID=0.
    run.case(Case {
        tag: "pingout",
        at: Side::A,
        hook: Hook::Output,
        dev: None,
        matches: "-p icmp --icmp-type echo-request",
        level: 4,
        flags: XT_LOG_UID,
        before: none,
        mark: 0,
        uid: Some((0, 0)),
        send: &|t| {
            sh(&format!(
                "ip netns exec {} ping -c1 -W1 -q 10.77.0.2",
                t.a.name
            ));
        },
        pick: &icmp_type_is(8),
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
        before: &["-t mangle -A OUTPUT -p udp --dport 7016 -j MARK --set-mark 0x7"],
        mark: 7,
        uid: Some((4321, 8765)),
        send: &|t| {
            sh(&format!(
                "ip netns exec {} setpriv --reuid 4321 --regid 8765 --clear-groups \
                 bash -c 'echo hi > /dev/udp/10.77.0.2/7016'",
                t.a.name
            ));
        },
        pick: &dport_is(17, 7016),
    });
    // A real ICMP port unreachable (B about A's datagram), logged in A: the quoted packet.
    run.case(Case {
        tag: "unreach",
        at: Side::A,
        hook: Hook::Input,
        dev: None,
        matches: "-p icmp --icmp-type destination-unreachable",
        level: 4,
        flags: XT_LOG_IPOPT | XT_LOG_TCPSEQ,
        before: none,
        mark: 0,
        uid: None,
        send: &|t| t.udp_from_a(7005),
        pick: &icmp_type_is(3),
    });
    // Loopback: MACDECODE falls back to MAC= on a non-Ethernet device.
    run.case(Case {
        tag: "lo",
        at: Side::B,
        hook: Hook::Input,
        dev: Some("lo"),
        matches: "-p icmp --icmp-type echo-request",
        level: 4,
        flags: XT_LOG_MACDECODE,
        before: none,
        mark: 0,
        uid: None,
        send: &|t| {
            sh(&format!(
                "ip netns exec {} ping -c1 -W1 -q 127.0.0.1",
                t.b.name
            ));
        },
        pick: &icmp_type_is(8),
    });

    // Crafted packets, sent through a raw socket in A. Each carries its own IP ID.
    let crafted: Vec<Crafted> = vec![
        // IP options (router alert, NOPs, EOL).
        (
            "ipopt",
            Hook::Input,
            "-p udp",
            XT_LOG_IPOPT,
            0,
            ipv4(
                17,
                0x1001,
                0,
                0x10,
                &[0x94, 4, 0, 0, 1, 1, 1, 0],
                &udp(1, 7009, b"x"),
            ),
        ),
        // A later fragment, and a first one with CE and MF.
        (
            "frag",
            Hook::PreRouting,
            "-f",
            0,
            0,
            ipv4(17, 0x1002, 0x2000 | 185, 0, &[], &[0; 16]),
        ),
        (
            "frag0",
            Hook::PreRouting,
            "-p udp",
            0,
            0,
            ipv4(17, 0x1003, 0xa000, 0, &[], &udp(5, 6, &[0; 16])),
        ),
        // An AH fragment: not even PROTO= is printed.
        (
            "ahfrag",
            Hook::PreRouting,
            "-f",
            0,
            0,
            ipv4(51, 0x1004, 185, 0, &[], &[0; 16]),
        ),
        // TCP: every flag, AE, reserved bits.
        (
            "flags",
            Hook::Input,
            "-p tcp",
            XT_LOG_TCPSEQ,
            0,
            ipv4(6, 0x1005, 0, 0, &[], &tcp(0xff, 0x0f, 5, &[])),
        ),
        // TCP header cut short: INCOMPLETE and no MARK after it.
        (
            "tcpshort",
            Hook::Input,
            "-p tcp",
            0,
            0x2b,
            ipv4(6, 0x1006, 0, 0, &[], &[0; 10]),
        ),
        // TCP options past the end: OPT (TRUNCATED).
        (
            "tcpopttr",
            Hook::Input,
            "-p tcp",
            XT_LOG_TCPOPT,
            0x2b,
            ipv4(6, 0x1007, 0, 0, &[], &tcp(0x10, 0, 15, &[1, 1, 1, 1])),
        ),
        (
            "udpshort",
            Hook::Input,
            "-p udp",
            0,
            0x2b,
            ipv4(17, 0x1008, 0, 0, &[], &[0; 6]),
        ),
        (
            "udplite",
            Hook::Input,
            "-p udplite",
            0,
            0,
            ipv4(136, 0x1009, 0, 0, &[], &udp(9, 10, b"ab")),
        ),
        (
            "esp",
            Hook::Input,
            "-p esp",
            0,
            0,
            ipv4(50, 0x100a, 0, 0, &[], &[0xc0, 0, 0x10, 1, 0, 0, 0, 1]),
        ),
        (
            "ah",
            Hook::Input,
            "-p ah",
            0,
            0,
            ipv4(
                51,
                0x100b,
                0,
                0,
                &[],
                &[6, 1, 0, 0, 0xf1, 0x23, 0x45, 0x67, 0, 0, 0, 1],
            ),
        ),
        // AH header cut short: INCOMPLETE, then MARK all the same.
        (
            "ahshort",
            Hook::Input,
            "-p ah",
            0,
            0x2b,
            ipv4(51, 0x100c, 0, 0, &[], &[0; 8]),
        ),
        (
            "proto253",
            Hook::Input,
            "-p 253",
            0,
            0,
            ipv4(253, 0x100d, 0, 0x08, &[], b"zz"),
        ),
        // ICMP types with their own fields and lengths.
        (
            "tstamp",
            Hook::Input,
            "-p icmp",
            0,
            0,
            ipv4(
                1,
                0x1010,
                0,
                0,
                &[],
                &[13, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ),
        (
            "tsshort",
            Hook::Input,
            "-p icmp",
            0,
            0x2c,
            ipv4(1, 0x1011, 0, 0, &[], &[13, 0, 0, 0, 0, 1, 0, 2]),
        ),
        (
            "addrmask",
            Hook::Input,
            "-p icmp",
            0,
            0,
            ipv4(
                1,
                0x1012,
                0,
                0,
                &[],
                &[17, 0, 0, 0, 0, 1, 0, 2, 255, 255, 255, 0],
            ),
        ),
        (
            "icmp42",
            Hook::Input,
            "-p icmp",
            0,
            0,
            ipv4(1, 0x1013, 0, 0, &[], &[42, 3, 0, 0, 0, 0, 0, 0]),
        ),
        (
            "icmpshort",
            Hook::Input,
            "-p icmp",
            0,
            0x2c,
            ipv4(1, 0x1014, 0, 0, &[], &[8, 0, 0, 0, 0]),
        ),
        (
            "pprob",
            Hook::Input,
            "-p icmp",
            0,
            0,
            ipv4(
                1,
                0x1015,
                0,
                0,
                &[],
                &[
                    &[12u8, 0, 0, 0, 22, 0, 0, 0][..],
                    &quoted(17, 5, &udp(1, 2, b"")),
                ]
                .concat(),
            ),
        ),
        // ICMP errors quoting packets: redirect, fragmentation needed, source quench.
        (
            "redirect",
            Hook::Input,
            "-p icmp",
            XT_LOG_TCPSEQ,
            0x2c,
            ipv4(
                1,
                0x1016,
                0,
                0,
                &[],
                &[
                    &[5u8, 1, 0, 0, 10, 77, 0, 254][..],
                    &quoted(17, 5, &udp(53, 3333, b"q")),
                ]
                .concat(),
            ),
        ),
        (
            "fragneed",
            Hook::Input,
            "-p icmp",
            XT_LOG_TCPSEQ | XT_LOG_TCPOPT | XT_LOG_IPOPT | XT_LOG_MACDECODE,
            0,
            ipv4(
                1,
                0x1017,
                0,
                0,
                &[1, 1, 1, 0],
                &[
                    &[3u8, 4, 0, 0, 0, 0, 0x05, 0x78][..],
                    &quoted(
                        6,
                        6,
                        &[&[1u8, 1, 1, 0][..], &tcp(0x12, 0, 6, &[2, 4, 5, 0xb4])].concat(),
                    ),
                ]
                .concat(),
            ),
        ),
        (
            "quench",
            Hook::Input,
            "-p icmp",
            0,
            0,
            ipv4(
                1,
                0x1018,
                0,
                0,
                &[],
                &[
                    &[4u8, 0, 0, 0, 0, 0, 0, 0][..],
                    &quoted(1, 5, &[8, 0, 0, 0, 0, 7, 0, 1]),
                ]
                .concat(),
            ),
        ),
        // Truncation inside the quoted packet: its options, its TCP header, its header.
        (
            "qoptstr",
            Hook::Input,
            "-p icmp",
            XT_LOG_IPOPT,
            0x2c,
            ipv4(
                1,
                0x1019,
                0,
                0,
                &[],
                &[&[11u8, 0, 0, 0, 0, 0, 0, 0][..], &quoted(6, 15, &[])].concat(),
            ),
        ),
        (
            "qtcpshort",
            Hook::Input,
            "-p icmp",
            0,
            0x2c,
            ipv4(
                1,
                0x101a,
                0,
                0,
                &[],
                &[&[3u8, 3, 0, 0, 0, 0, 0, 0][..], &quoted(6, 5, &[0; 8])].concat(),
            ),
        ),
        (
            "qwrap",
            Hook::Input,
            "-p icmp",
            0,
            0,
            ipv4(
                1,
                0x101b,
                0,
                0,
                &[],
                &[&[3u8, 3, 0, 0, 0, 0, 0, 0][..], &quoted(6, 15, &[])].concat(),
            ),
        ),
        (
            "qshort",
            Hook::Input,
            "-p icmp",
            0,
            0,
            ipv4(
                1,
                0x101c,
                0,
                0,
                &[],
                &[11, 0, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 20, 0, 0],
            ),
        ),
    ];
    for (tag, hook, matches, flags, mark, pkt) in crafted {
        let id = u16::from_be_bytes([pkt[4], pkt[5]]);
        let before = [format!(
            "-t mangle -A PREROUTING -s {a_ip} -j MARK --set-mark {mark:#x}"
        )];
        let before: Vec<&str> = if mark != 0 {
            before.iter().map(String::as_str).collect()
        } else {
            Vec::new()
        };
        let send = move |t: &Topo| t.raw_from_a(pkt.clone());
        run.case(Case {
            tag,
            at: Side::B,
            hook,
            dev: None,
            matches: &format!("-s {a_ip} {matches}"),
            level: 4,
            flags,
            before: &before,
            mark,
            uid: None,
            send: &send,
            pick: &id_is(id),
        });
    }

    // nf_log_allowed: with nf_log_all_netns=0 the kernel writes nothing for a namespace.
    {
        let _off = LogAllNetns::set(false);
        assert!(!nf_log_all_netns().unwrap());
        assert!(!log_allowed_in(false, nf_log_all_netns().unwrap()));
        let prefix = run.prefix("off");
        run.topo.ipt(
            Side::B,
            &format!("-A INPUT -p udp --dport 7099 -j LOG --log-prefix '{prefix}'"),
        );
        run.topo.udp_from_a(7099);
        assert!(
            run.kmsg
                .take(prefix.as_bytes(), 0, Duration::from_millis(700))
                .is_none(),
            "the kernel logged from a namespace with nf_log_all_netns=0"
        );
        run.topo.flush();
    }

    // printk_devkmsg=ratelimit: one open file logs 10 lines per 5 seconds, the rest are
    // dropped although write(2) succeeds. KmsgWriter::open warns about it.
    if devkmsg_mode().unwrap() == DevkmsgMode::Ratelimit {
        let prefix = run.prefix("rl");
        let pkt = ipv4(253, 1, 0, 0, &[], &[]);
        let raw = EventBuilder::new(KIND_LOG, HOOK_LOCAL_IN, &pkt)
            .arg(6)
            .prefix(prefix.as_bytes())
            .build();
        let ev = Event::parse(&raw).unwrap();
        let mut w = KmsgWriter::open().unwrap();
        for _ in 0..12 {
            w.log(&ev).unwrap();
        }
        drop(w);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(run.kmsg.count(prefix.as_bytes()), 10);
    }

    println!(
        "log_kernel: {} kernel lines matched bpfilter's, byte for byte: {}",
        run.matched.len(),
        run.matched.join(" ")
    );
}
