//! Privileged: the REJECT replies built by `bpfilter::events::reject` are the real kernel's.
//!
//! Two (or three) network namespaces joined by veth pairs. The receiving namespace runs the
//! kernel's own `iptables-legacy ... -j REJECT`; the sending namespace sends real packets
//! (UDP and TCP through sockets, crafted segments, ICMP and options through a raw socket) and
//! captures with an AF_PACKET socket both what it sent and what came back. Each sent packet
//! becomes the event record the receiver's program would have written, and `reply()` must
//! give the kernel's reply byte for byte, except, for ICMP errors, the IP ID (drawn by
//! `ip_select_ident`, never twice the same) and so the IP header checksum. The kernel's RST
//! crosses the veth with CHECKSUM_PARTIAL: its TCP checksum field holds the pseudo-header sum,
//! which is checked as such and replaced by the full checksum before comparing.
//!
//! Then [`Sender`] sends our replies for packets a DROP rule swallowed (standing in for the
//! BPF program's drop) and the sending sockets see them: `connect()` fails with ECONNREFUSED,
//! connected UDP sockets get ECONNREFUSED or EHOSTUNREACH. Last, the kernel's ICMP rate limit
//! and our limiter agree on a burst.
//!
//! Run: `cargo test --test reject_kernel -- --nocapture` (root; under CI=true a missing
//! privilege fails instead of skipping).
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use bpfilter::events::reject::{
    hook, reply, Outcome, Params, RateConfig, RateLimiter, Reply, ReplyKind, Sender, Source,
    Sysctls, RTCF_LOCAL,
};
use bpfilter::sys::{in_netns, open_netns};
use emitter::event::{csum, Event, EventBuilder, KIND_REJECT};
use nix::sys::socket::{
    recvfrom, sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrIn,
};
use test_support::netns::{veth, Netns};
use test_support::packet::{fold, ones_sum, pseudo_sum, set_ip_checksum, set_l4_checksum, Ipv4};

const PACKET_OUTGOING: u8 = 4;
const ETH_P_IP: u16 = 0x0800;

// ---------------------------------------------------------------------------------------------
// namespaces

/// Runs `f` on a thread inside `ns`.
fn within<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let fd = open_netns(format!("/run/netns/{}", ns.name)).unwrap();
    in_netns(fd.as_fd(), f).unwrap()
}

fn ifindex(ns: &Netns, dev: &str) -> u32 {
    within(ns, || nix::net::if_::if_nametoindex(dev).unwrap())
}

/// The kernel's iptables-legacy in `ns` (waiting for the xtables lock).
fn kernel_rule(ns: &Netns, rule: &str) {
    ns.sh(&format!("iptables-legacy -w {rule}"));
}

fn sysctl(ns: &Netns, key: &str, value: &str) {
    ns.sh(&format!(
        "echo {value} > /proc/sys/{}",
        key.replace('.', "/")
    ));
}

// ---------------------------------------------------------------------------------------------
// capture

#[derive(Debug, Clone)]
struct Cap {
    out: bool,
    pkt: Vec<u8>,
    at: Instant,
}

impl Cap {
    fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.pkt[12], self.pkt[13], self.pkt[14], self.pkt[15])
    }
    fn proto(&self) -> u8 {
        self.pkt[9]
    }
    fn l4(&self) -> &[u8] {
        &self.pkt[usize::from(self.pkt[0] & 0xf) * 4..]
    }
    /// An ICMP destination unreachable or a TCP RST.
    fn is_reject_reply(&self) -> bool {
        match self.proto() {
            1 => self.l4().first() == Some(&3),
            6 => self.l4().get(13).is_some_and(|f| f & 0x04 != 0),
            _ => false,
        }
    }
}

/// An AF_PACKET socket in a namespace, seeing one device's IPv4 packets both ways.
struct Capture {
    fd: OwnedFd,
    ifindex: usize,
}

impl Capture {
    fn new(ns: &Netns, dev: &str) -> Capture {
        let fd = within(ns, || {
            socket(
                AddressFamily::Packet,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                SockProtocol::EthAll,
            )
            .unwrap()
        });
        Capture {
            fd,
            ifindex: ifindex(ns, dev) as usize,
        }
    }

    fn poll(&self, into: &mut Vec<Cap>) {
        let mut buf = vec![0u8; 65536];
        loop {
            match recvfrom::<LinkAddr>(self.fd.as_raw_fd(), &mut buf) {
                Ok((n, Some(ll))) => {
                    if ll.protocol() == ETH_P_IP.to_be() && ll.ifindex() == self.ifindex {
                        into.push(Cap {
                            out: ll.pkttype() == PACKET_OUTGOING,
                            pkt: buf[..n].to_vec(),
                            at: Instant::now(),
                        });
                    }
                }
                Ok((_, None)) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(e) => panic!("recvfrom(AF_PACKET): {e}"),
            }
        }
    }

    fn drain(&self) {
        self.poll(&mut Vec::new());
    }

    /// Captures for at most `max`, stopping early once `done` holds.
    fn collect(&self, max: Duration, done: impl Fn(&[Cap]) -> bool) -> Vec<Cap> {
        let end = Instant::now() + max;
        let mut caps = Vec::new();
        while Instant::now() < end {
            self.poll(&mut caps);
            if done(&caps) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        caps
    }

    /// What went out matching `proto`/`dport`, and the first reject reply that came back.
    fn exchange(&self, proto: u8, dport: Option<u16>, wait: Duration) -> (Vec<u8>, Option<Cap>) {
        let matches_sent = |c: &Cap| {
            c.out
                && c.proto() == proto
                && dport.is_none_or(|p| c.l4().get(2..4) == Some(&p.to_be_bytes()[..]))
        };
        let caps = self.collect(wait, |caps| {
            caps.iter().any(matches_sent) && caps.iter().any(|c| !c.out && c.is_reject_reply())
        });
        let sent = caps
            .iter()
            .find(|c| matches_sent(c))
            .unwrap_or_else(|| panic!("nothing sent (proto {proto}, port {dport:?}): {caps:?}"))
            .pkt
            .clone();
        let back = caps.iter().find(|c| !c.out && c.is_reject_reply()).cloned();
        (sent, back)
    }
}

// ---------------------------------------------------------------------------------------------
// packets

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, opts: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut p = Ipv4 {
        // DSCP, a precedence-like bit and ECN: the ICMP error keeps only RT_TOS of it.
        tos: 0x2b,
        id: 0x4242,
        frag: 0x4000,
        opts,
        ..Ipv4::new(proto, src.octets(), dst.octets())
    }
    .build(l4);
    set_ip_checksum(&mut p);
    p
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&41000u16.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    let mut p = ipv4(src, dst, 17, opts, &u);
    set_l4_checksum(&mut p, 6);
    p
}

fn tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&42000u16.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&1024u16.to_be_bytes());
    t.extend_from_slice(data);
    let mut p = ipv4(src, dst, 6, &[], &t);
    set_l4_checksum(&mut p, 16);
    p
}

fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0, 0x12, 0x34, 0, 1];
    m.extend_from_slice(rest);
    let c = !fold(ones_sum(&m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 1, &[], &m)
}

/// A raw IPPROTO_RAW socket in `ns` sending crafted datagrams as they are.
struct Raw(OwnedFd);

impl Raw {
    fn new(ns: &Netns) -> Raw {
        Raw(within(ns, || {
            socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::Raw,
            )
            .unwrap()
        }))
    }
    fn send(&self, p: &[u8]) {
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
        sendto(self.0.as_raw_fd(), p, &to, MsgFlags::empty()).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// records and comparison

struct Seen<'a> {
    hook: u8,
    with: u32,
    dev: (&'a str, u32),
    rt_flags: u32,
    ip_summed: u8,
}

fn record(pkt: &[u8], s: &Seen<'_>) -> Vec<u8> {
    EventBuilder::new(KIND_REJECT, s.hook, pkt)
        .arg(s.with as u8)
        .input(s.dev.0.as_bytes(), s.dev.1)
        .rt_flags(s.rt_flags)
        .csum(s.ip_summed, false)
        .build()
}

fn our_reply(pkt: &[u8], s: &Seen<'_>) -> Option<Reply> {
    let raw = record(pkt, s);
    reply(&Event::parse(&raw).unwrap(), &Params::kernel_defaults()).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.chunks(4)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts `kernel` (the reply captured on the wire) is `ours` but for the fields that
/// legitimately differ (module doc).
fn assert_same(what: &str, kernel: &[u8], ours: &Reply) {
    let mut k = kernel.to_vec();
    let mut o = ours.datagram().to_vec();
    let hlen = usize::from(o[0] & 0xf) * 4;
    assert_eq!(
        fold(ones_sum(&o[..hlen], 0)),
        0xffff,
        "{what}: our IP checksum"
    );
    match ours.kind() {
        ReplyKind::Unreachable { .. } => {
            assert_eq!(
                &o[4..6],
                &[0, 0],
                "{what}: we leave the ID to the raw socket"
            );
            assert_eq!(
                fold(ones_sum(&k[..hlen], 0)),
                0xffff,
                "{what}: kernel IP checksum"
            );
            for v in [&mut k, &mut o] {
                v[4..6].fill(0);
                v[10..12].fill(0);
            }
        }
        ReplyKind::Reset => {
            assert!(k.len() >= 40, "{what}: kernel RST {}", hex(&k));
            let partial = fold(pseudo_sum(&k[12..16], &k[16..20], 6, 20));
            let mut full = k.clone();
            set_l4_checksum(&mut full, 16);
            let got = u16::from_be_bytes([k[36], k[37]]);
            let want = u16::from_be_bytes([full[36], full[37]]);
            assert!(
                got == want || got == partial,
                "{what}: kernel RST checksum {got:#06x} is neither {want:#06x} nor the \
                 CHECKSUM_PARTIAL seed {partial:#06x}"
            );
            println!(
                "{what}: kernel RST checksum on the veth: {}",
                if got == want {
                    "full"
                } else {
                    "CHECKSUM_PARTIAL seed"
                }
            );
            k = full;
        }
    }
    assert_eq!(
        hex(&k),
        hex(&o),
        "{what}: kernel (left) and ours (right) differ"
    );
    println!("{what}: same ({} bytes)", o.len());
}

// ---------------------------------------------------------------------------------------------
// tests

const S_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const R_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

struct Pair {
    s: Netns,
    r: Netns,
    s_dev: String,
    r_dev: String,
}

fn pair() -> Pair {
    let s = Netns::new("rjs");
    let r = Netns::new("rjr");
    let (s_dev, r_dev) = veth(&s, "10.77.0.1/24", &r, "10.77.0.2/24");
    Pair { s, r, s_dev, r_dev }
}

#[test]
fn input_replies_match_the_kernel() {
    if !test_support::privileged() {
        return;
    }
    let net = pair();
    // Many errors to one destination in a row: the kernel's per-destination limit would
    // withhold some. Our replies do not depend on it.
    sysctl(&net.r, "net.ipv4.icmp_ratelimit", "0");
    let udp_ports: [(u16, u32, &str); 7] = [
        (5000, 3, "icmp-port-unreachable"),
        (5001, 0, "icmp-net-unreachable"),
        (5002, 1, "icmp-host-unreachable"),
        (5003, 2, "icmp-proto-unreachable"),
        (5004, 5, "icmp-net-prohibited"),
        (5005, 6, "icmp-host-prohibited"),
        (5006, 8, "icmp-admin-prohibited"),
    ];
    for (port, _, name) in udp_ports {
        kernel_rule(
            &net.r,
            &format!("-A INPUT -p udp --dport {port} -j REJECT --reject-with {name}"),
        );
    }
    kernel_rule(
        &net.r,
        "-A INPUT -p tcp --dport 6000 -j REJECT --reject-with tcp-reset",
    );
    kernel_rule(&net.r, "-A INPUT -p icmp -j REJECT");
    let r_if = ifindex(&net.r, &net.r_dev);
    let cap = Capture::new(&net.s, &net.s_dev);
    let raw = Raw::new(&net.s);
    let seen = |with: u32, ip_summed: u8| Seen {
        hook: hook::LOCAL_IN,
        with,
        dev: (net.r_dev.as_str(), r_if),
        rt_flags: RTCF_LOCAL,
        ip_summed,
    };
    let wait = Duration::from_secs(2);

    // UDP through a socket, every ICMP code. Sent with CHECKSUM_PARTIAL, as the receiver has it.
    let sock = within(&net.s, || UdpSocket::bind((S_ADDR, 0)).unwrap());
    for (port, with, name) in udp_ports {
        cap.drain();
        sock.send_to(b"reject me, please", (R_ADDR, port)).unwrap();
        let (sent, back) = cap.exchange(17, Some(port), wait);
        let back = back.unwrap_or_else(|| panic!("{name}: the kernel sent nothing"));
        let ours = our_reply(&sent, &seen(with, csum::PARTIAL)).unwrap();
        assert_eq!(ours.source(), Source::Fixed(R_ADDR));
        assert_same(&format!("udp {name}"), &back.pkt, &ours);
    }

    // A datagram longer than an ICMP error may quote.
    cap.drain();
    sock.send_to(&[0x5a; 1400], (R_ADDR, 5000)).unwrap();
    let (sent, back) = cap.exchange(17, Some(5000), wait);
    let ours = our_reply(&sent, &seen(3, csum::PARTIAL)).unwrap();
    assert_eq!(ours.datagram().len(), 576);
    assert_same("udp 1428 bytes", &back.unwrap().pkt, &ours);

    // TCP SYN through connect(): RST|ACK, ack = seq + 1.
    cap.drain();
    let err = within(&net.s, || {
        TcpStream::connect_timeout(&SocketAddr::from((R_ADDR, 6000)), wait).unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    let (sent, back) = cap.exchange(6, Some(6000), wait);
    let ours = our_reply(&sent, &seen(7, csum::PARTIAL)).unwrap();
    assert_same("tcp SYN", &back.unwrap().pkt, &ours);

    // Crafted segments (CHECKSUM_NONE at the receiver: verified).
    let crafted: [(&str, Vec<u8>); 3] = [
        (
            "tcp ACK|PSH data",
            tcp(S_ADDR, R_ADDR, 6000, 0x18, 1000, 0xabcd_0123, &[1; 300]),
        ),
        (
            "tcp FIN|PSH data, no ACK",
            tcp(S_ADDR, R_ADDR, 6000, 0x09, 0xffff_fff0, 0, &[2; 40]),
        ),
        (
            "tcp SYN crafted",
            tcp(S_ADDR, R_ADDR, 6000, 0x02, 77, 0, &[]),
        ),
    ];
    for (what, p) in crafted {
        cap.drain();
        raw.send(&p);
        let (sent, back) = cap.exchange(6, Some(6000), wait);
        assert_eq!(sent, p);
        let ours = our_reply(&sent, &seen(7, csum::NONE)).unwrap();
        assert_same(
            what,
            &back.unwrap_or_else(|| panic!("{what}: no RST")).pkt,
            &ours,
        );
    }

    // ICMP echo request: not an error, so it gets one.
    cap.drain();
    let echo = icmp(S_ADDR, R_ADDR, 8, 0, b"ping payload");
    raw.send(&echo);
    let (sent, back) = cap.exchange(1, None, wait);
    let ours = our_reply(&sent, &seen(3, csum::NONE)).unwrap();
    assert_same("icmp echo", &back.unwrap().pkt, &ours);

    // Options. A record route the receiver writes itself into at input: the hook sees this
    // host in the next slot and the header checksum not refreshed. (1) Sent raw, so with
    // CHECKSUM_NONE: nf_ip_checksum sums that stale header and fails, the kernel is silent.
    let mut rr = vec![7u8, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let opt_pkt = udp(S_ADDR, R_ADDR, 5000, &rr, b"with a record route");
    cap.drain();
    raw.send(&opt_pkt);
    let (sent, back) = cap.exchange(17, Some(5000), Duration::from_millis(500));
    assert!(
        back.is_none(),
        "record route, CHECKSUM_NONE: the kernel replied {back:?}"
    );
    rr[3..7].copy_from_slice(&R_ADDR.octets());
    rr[2] = 8;
    let mut as_seen = sent.clone();
    as_seen[20..32].copy_from_slice(&rr);
    assert_eq!(our_reply(&as_seen, &seen(3, csum::NONE)), None);
    println!("udp with record route, CHECKSUM_NONE: no reply from either");
    // (2) From a UDP socket with IP_OPTIONS (CHECKSUM_PARTIAL): the sender recorded itself,
    // the receiver adds itself, the reply echoes the option with its own source in slot 3.
    cap.drain();
    net.s.sh(&format!(
        "python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([7, 15, 4] + [0] * 13)); \
         s.sendto(b'with a record route', ('{R_ADDR}', 5000))\""
    ));
    let (sent, back) = cap.exchange(17, Some(5000), wait);
    assert_eq!(
        &sent[20..28],
        &[7, 15, 8, 10, 77, 0, 1, 0],
        "the sender's own slot"
    );
    let mut as_seen = sent.clone();
    as_seen[22] = 12;
    as_seen[27..31].copy_from_slice(&R_ADDR.octets());
    let ours = our_reply(&as_seen, &seen(3, csum::PARTIAL)).unwrap();
    assert_eq!(ours.datagram()[0], 0x49, "options echoed");
    assert_eq!(
        &ours.datagram()[20..36],
        &[7, 15, 16, 10, 77, 0, 1, 10, 77, 0, 2, 10, 77, 0, 2, 0]
    );
    assert_same("udp with record route", &back.expect("no reply").pkt, &ours);

    // UDP without checksum is not verified.
    let mut nosum = udp(S_ADDR, R_ADDR, 5000, &[], b"no checksum");
    nosum[26..28].fill(0);
    cap.drain();
    raw.send(&nosum);
    let (sent, back) = cap.exchange(17, Some(5000), wait);
    let ours = our_reply(&sent, &seen(3, csum::NONE)).unwrap();
    assert_same("udp checksum 0", &back.unwrap().pkt, &ours);

    // Nothing for: an RST, an ICMP error, a bad checksum (later fragments: see FORWARD; the
    // local input path reassembles before LOCAL_IN).
    let inner = udp(R_ADDR, S_ADDR, 9, &[], b"x");
    let mut bad = udp(S_ADDR, R_ADDR, 5000, &[], b"bad checksum");
    bad[27] ^= 0x5a;
    let silent: [(&str, Vec<u8>, u32, u8); 3] = [
        ("tcp RST", tcp(S_ADDR, R_ADDR, 6000, 0x04, 5, 0, &[]), 7, 6),
        ("icmp error", icmp(S_ADDR, R_ADDR, 3, 3, &inner[..28]), 3, 1),
        ("udp bad checksum", bad, 3, 17),
    ];
    for (what, p, with, proto) in silent {
        cap.drain();
        raw.send(&p);
        let (sent, back) = cap.exchange(proto, None, Duration::from_millis(500));
        assert!(back.is_none(), "{what}: the kernel replied {:?}", back);
        assert_eq!(
            our_reply(&sent, &seen(with, csum::NONE)),
            None,
            "{what}: we would reply"
        );
        println!("{what}: no reply from either");
    }
}

#[test]
fn forward_replies_match_the_kernel() {
    if !test_support::privileged() {
        return;
    }
    let s = Netns::new("rjs");
    let m = Netns::new("rjm");
    let r = Netns::new("rjr");
    let (s_dev, m_in) = veth(&s, "10.78.1.1/24", &m, "10.78.1.2/24");
    let (_m_out, _r_dev) = veth(&m, "10.78.2.1/24", &r, "10.78.2.2/24");
    s.sh("ip route add default via 10.78.1.2");
    r.sh("ip route add default via 10.78.2.1");
    sysctl(&m, "net.ipv4.ip_forward", "1");
    kernel_rule(&m, "-A FORWARD -p udp --dport 5000 -j REJECT");
    kernel_rule(
        &m,
        "-A FORWARD -p tcp --dport 6000 -j REJECT --reject-with tcp-reset",
    );
    // Without conntrack nothing reassembles forwarded fragments: REJECT sees a later one.
    kernel_rule(&m, "-A FORWARD -p udp -f -j REJECT");
    let (s_addr, m_addr, r_addr) = (
        Ipv4Addr::new(10, 78, 1, 1),
        Ipv4Addr::new(10, 78, 1, 2),
        Ipv4Addr::new(10, 78, 2, 2),
    );
    let m_if = ifindex(&m, &m_in);
    let cap = Capture::new(&s, &s_dev);
    let wait = Duration::from_secs(2);
    let seen = |with: u32| Seen {
        hook: hook::FORWARD,
        with,
        dev: (m_in.as_str(), m_if),
        rt_flags: 0,
        ip_summed: csum::PARTIAL,
    };
    // ip_forward decrements the TTL before the FORWARD hook.
    let forwarded = |sent: &[u8]| {
        let mut p = sent.to_vec();
        p[8] -= 1;
        set_ip_checksum(&mut p);
        p
    };

    let sock = within(&s, || UdpSocket::bind((s_addr, 0)).unwrap());
    cap.drain();
    sock.send_to(b"through the router", (r_addr, 5000)).unwrap();
    let (sent, back) = cap.exchange(17, Some(5000), wait);
    let mut ours = our_reply(&forwarded(&sent), &seen(3)).unwrap();
    assert_eq!(ours.source(), Source::Route, "not addressed to the router");
    // What the sender's route probe finds in M: the address toward S.
    ours.set_source(m_addr);
    let back = back.expect("the router sent nothing");
    assert_eq!(back.src(), m_addr);
    assert_same("forwarded udp", &back.pkt, &ours);

    cap.drain();
    let err = within(&s, || {
        TcpStream::connect_timeout(&SocketAddr::from((r_addr, 6000)), wait).unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    let (sent, back) = cap.exchange(6, Some(6000), wait);
    let ours = our_reply(&forwarded(&sent), &seen(7)).unwrap();
    let back = back.expect("the router sent no RST");
    assert_eq!(back.src(), r_addr, "the RST speaks for the destination");
    assert_same("forwarded tcp SYN", &back.pkt, &ours);

    // A later fragment: REJECT runs (the -f rule counts it), nothing is sent.
    let raw = Raw::new(&s);
    let mut frag = udp(s_addr, r_addr, 5000, &[], b"a later fragment");
    frag[6..8].copy_from_slice(&100u16.to_be_bytes());
    set_ip_checksum(&mut frag);
    cap.drain();
    raw.send(&frag);
    let (sent, back) = cap.exchange(17, None, Duration::from_millis(500));
    assert!(
        back.is_none(),
        "later fragment: the kernel replied {back:?}"
    );
    assert_eq!(our_reply(&forwarded(&sent), &seen(3)), None);
    let counted = m.sh("iptables-legacy -w -L FORWARD -v -x -n | grep -- ' -f '");
    assert!(
        counted.split_whitespace().next() == Some("1"),
        "the -f REJECT rule did not see the fragment: {counted}"
    );
    println!("forwarded later fragment: REJECT ran, no reply from either");
}

#[test]
fn sender_replies_reach_the_sockets() {
    if !test_support::privileged() {
        return;
    }
    let net = pair();
    // The kernel drops silently, as the BPF program does; our Sender answers.
    kernel_rule(&net.r, "-A INPUT -p tcp --dport 7000 -j DROP");
    kernel_rule(&net.r, "-A INPUT -p udp --dport 7001:7002 -j DROP");
    let r_fd = open_netns(format!("/run/netns/{}", net.r.name)).unwrap();
    let mut sender = Sender::new(r_fd.as_fd()).unwrap();
    assert_eq!(sender.sysctls(), &Sysctls::default());
    let r_if = ifindex(&net.r, &net.r_dev);
    let cap = Capture::new(&net.s, &net.s_dev);
    let seen = |with: u32| Seen {
        hook: hook::LOCAL_IN,
        with,
        dev: (net.r_dev.as_str(), r_if),
        rt_flags: RTCF_LOCAL,
        ip_summed: csum::PARTIAL,
    };
    let wait = Duration::from_secs(2);

    // TCP: connect() blocks on the dropped SYN until our RST refuses it.
    cap.drain();
    let s = &net.s;
    std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            within(s, || {
                TcpStream::connect_timeout(
                    &SocketAddr::from((R_ADDR, 7000)),
                    Duration::from_secs(10),
                )
            })
        });
        let caps = cap.collect(wait, |c| c.iter().any(|c| c.out && c.proto() == 6));
        let syn = caps
            .iter()
            .find(|c| c.out && c.proto() == 6)
            .expect("no SYN");
        let raw = record(&syn.pkt, &seen(7));
        let out = sender.handle(&Event::parse(&raw).unwrap()).unwrap();
        assert_eq!(out, Outcome::Sent(ReplyKind::Reset));
        let err = client.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        // What arrived is our datagram exactly (DF, ID 0: the raw socket keeps it).
        let caps = cap.collect(wait, |c| c.iter().any(|c| !c.out && c.is_reject_reply()));
        let rst = caps.iter().find(|c| !c.out && c.is_reject_reply()).unwrap();
        let ours = our_reply(&syn.pkt, &seen(7)).unwrap();
        assert_eq!(hex(&rst.pkt), hex(ours.datagram()));
        println!("connect(): {err} from our RST, identical on the wire");
    });

    // UDP: a connected socket learns the error.
    for (port, with, errno) in [
        (7001, 3, ErrorKind::ConnectionRefused),
        (7002, 6, ErrorKind::HostUnreachable),
    ] {
        let sock = within(&net.s, || {
            let u = UdpSocket::bind((S_ADDR, 0)).unwrap();
            u.connect((R_ADDR, port)).unwrap();
            u
        });
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        cap.drain();
        sock.send(b"answer me").unwrap();
        let caps = cap.collect(wait, |c| c.iter().any(|c| c.out && c.proto() == 17));
        let dgram = caps.iter().find(|c| c.out && c.proto() == 17).unwrap();
        let raw = record(&dgram.pkt, &seen(with));
        let out = sender.handle(&Event::parse(&raw).unwrap()).unwrap();
        assert!(
            matches!(out, Outcome::Sent(ReplyKind::Unreachable { .. })),
            "{out:?}"
        );
        let err = sock.recv(&mut [0u8; 64]).unwrap_err();
        assert_eq!(err.kind(), errno, "{err}");
        let caps = cap.collect(wait, |c| c.iter().any(|c| !c.out && c.is_reject_reply()));
        let icmp = caps.iter().find(|c| !c.out && c.is_reject_reply()).unwrap();
        assert_same(
            &format!("sent unreachable {with}"),
            &icmp.pkt,
            &our_reply(&dgram.pkt, &seen(with)).unwrap(),
        );
        println!("udp recv(): {err} from our ICMP error");
    }
}

#[test]
fn rate_limit_matches_the_kernel() {
    if !test_support::privileged() {
        return;
    }
    let net = pair();
    kernel_rule(&net.r, "-A INPUT -p udp --dport 8000 -j REJECT");
    let r_if = ifindex(&net.r, &net.r_dev);
    let cap = Capture::new(&net.s, &net.s_dev);
    let sock = within(&net.s, || UdpSocket::bind((S_ADDR, 0)).unwrap());
    let seen = Seen {
        hook: hook::LOCAL_IN,
        with: 3,
        dev: (net.r_dev.as_str(), r_if),
        rt_flags: RTCF_LOCAL,
        ip_summed: csum::PARTIAL,
    };
    // The namespace's defaults: 6 in a burst per destination, then one a second.
    let mut limiter = RateLimiter::new(RateConfig::from_sysctls(&Sysctls::default()));
    let start = Instant::now();
    let mut round = |n: usize| -> (usize, usize) {
        cap.drain();
        for _ in 0..n {
            sock.send_to(b"flood", (R_ADDR, 8000)).unwrap();
        }
        let caps = cap.collect(Duration::from_millis(400), |_| false);
        let kernel = caps
            .iter()
            .filter(|c| !c.out && c.is_reject_reply())
            .count();
        let allowed = caps
            .iter()
            .filter(|c| c.out && c.proto() == 17)
            .filter(|c| {
                let r = our_reply(&c.pkt, &seen).unwrap();
                limiter.check(&r, c.at - start)
            })
            .count();
        (kernel, allowed)
    };
    let (k, o) = round(12);
    println!("burst of 12: kernel sent {k}, we allow {o}");
    assert_eq!((k, o), (6, 6));
    std::thread::sleep(Duration::from_millis(700));
    // About 1.1 s after the burst: one token back.
    let (k, o) = round(3);
    println!("3 more after 1.1 s: kernel sent {k}, we allow {o}");
    assert_eq!((k, o), (1, 1));
}
