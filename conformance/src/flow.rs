//! Flows: packet sequences that build connection-tracking state, their replies travelling
//! back through the firewall on the same kind of path.
//!
//! A flow has a client and a server and one of four shapes:
//! - `LocalIn`: a neighbour talks to the firewall; the client's packets cross INPUT (injected),
//!   the server's replies OUTPUT (the harness's raw socket in the firewall, standing in for a
//!   local service, on the interface the client came from);
//! - `LocalOut`: the firewall talks to a neighbour: OUTPUT out, INPUT back;
//! - `Forward`: both ends are neighbours; the replies enter by the interface the client's
//!   packets left by (the symmetric pairs eth0/eth1 and ppp0/tun0, mostly), so they cross
//!   FORWARD again;
//! - `Loopback`: both ends are the firewall (`lo`: OUTPUT then INPUT, both ways).
//!
//! Scripts: TCP handshakes with data and a FIN or RST close (sequence numbers consistent, so
//! that window tracking keeps them ESTABLISHED and ASSURED), half-open and refused connections,
//! mid-stream pickups, out-of-window data; UDP request/response; ICMP echo and timestamp;
//! GRE; ICMP errors quoting an earlier packet of the flow (RELATED) or one no connection knows
//! (INVALID); TCP segments with flag combinations conntrack refuses, RSTs and SYN-ACKs without
//! a connection, a SYN with a bad checksum. Every transport checksum is right unless a script
//! breaks it on purpose (conntrack checks them at PRE_ROUTING).
//!
//! NAT (`#nat` lines: DNAT in PREROUTING, SNAT and MASQUERADE in POSTROUTING, without
//! inversions) is modelled: replies come from where a DNAT rule sent the client's packets and
//! go to the address SNAT gave it, ICMP errors quote the datagram as translated, and some
//! flows aim at a DNAT rule's address and port.
//!
//! A flow from the firewall is sometimes a real socket's (`Packet::socket`): a TCP connect or
//! a connected UDP send, whose error (ECONNREFUSED, EHOSTUNREACH) is compared.
//!
//! A session towards the firewall (`quiet`) sends its TCP and UDP input packets to the
//! Ethernet broadcast address, so that the firewall's own stack, which has no socket there,
//! neither resets the connection nor answers port-unreachable (`Packet::bcast`). Probes do the
//! opposite: unicast, and no scripted answer, so the kernel's RST or ICMP error (through
//! OUTPUT, RELATED) is the answer. An ICMP echo request to the firewall is always answered by
//! its stack, never by the script.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::gen::{bad_addr, directed_through, pick_addr, pick_port, random_unicast, Hint};
use crate::netns::{forward_egress, IFACES, LOOPBACK};
use crate::packet::{
    build_ipv4, fix_ip_checksum, fix_l4_checksum, icmp_message, tcp_segment, udp_header, IpSpec,
    Packet, Path,
};
use crate::ruleset::{Ruleset, Values};
use test_support::Rng;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

/// MSS 1460, NOP, NOP, SACK permitted: what a SYN carries (no window scaling, so that the
/// plain 16-bit windows below are the real ones).
const SYN_OPTS: [u8; 8] = [2, 4, 5, 0xb4, 1, 1, 4, 2];
const WINDOW: u16 = 64240;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LocalIn,
    LocalOut,
    Forward,
    Loopback,
}

/// One flow being scripted.
#[derive(Debug)]
struct Flow {
    kind: Kind,
    /// LocalIn: ingress of the client's packets; LocalOut: egress; Forward: client's ingress.
    c_if: &'static str,
    /// Forward: the interface the server's packets enter by.
    s_if: &'static str,
    c: u32,
    s: u32,
    cport: u16,
    sport: u16,
    quiet: bool,
    /// DNAT of the ruleset's `#nat` lines: the server is really at this address and port.
    nat_s: Option<(u32, u16)>,
    /// SNAT or MASQUERADE: the server sees the client at this address.
    nat_c: Option<u32>,
    pkts: Vec<Packet>,
    /// Per packet: true when it travels server to client.
    reply: Vec<bool>,
    /// (ICMP error, the packet of this flow it quotes).
    quotes: Vec<(usize, usize)>,
}

impl Flow {
    /// A flow of `kind` from the client `c` (address, port) to the server `s` over the
    /// interfaces `ifs` (the client's, the server's), with no packet yet.
    fn new(kind: Kind, ifs: (&'static str, &'static str), c: (u32, u16), s: (u32, u16)) -> Flow {
        Flow {
            kind,
            c_if: ifs.0,
            s_if: ifs.1,
            c: c.0,
            s: s.0,
            cport: c.1,
            sport: s.1,
            quiet: false,
            nat_s: None,
            nat_c: None,
            pkts: Vec::new(),
            reply: Vec::new(),
            quotes: Vec::new(),
        }
    }

    fn route(&self, reply: bool) -> (Path, &'static str) {
        match (self.kind, reply) {
            (Kind::LocalIn, false) | (Kind::LocalOut, true) => (Path::Input, self.c_if),
            (Kind::LocalIn, true) | (Kind::LocalOut, false) => (Path::Output, self.c_if),
            (Kind::Forward, false) => (Path::Forward, self.c_if),
            (Kind::Forward, true) => (Path::Forward, self.s_if),
            (Kind::Loopback, _) => (Path::Output, LOOPBACK),
        }
    }

    /// Appends a datagram; returns its index in the flow.
    fn push_from(&mut self, reply: bool, src: Option<u32>, proto: u8, l4: Vec<u8>) -> usize {
        // Replies come from where the server really is and go to where it saw the client.
        let (s, d) = if reply {
            (
                self.nat_s.map_or(self.s, |n| n.0),
                self.nat_c.unwrap_or(self.c),
            )
        } else {
            (self.c, self.s)
        };
        let (path, iface) = self.route(reply);
        let spec = IpSpec {
            src: Ipv4Addr::from(src.unwrap_or(s)),
            dst: Ipv4Addr::from(d),
            proto,
            ttl: 64,
            // Linux sets DF on TCP (path MTU discovery); the rest goes without.
            frag: if proto == 6 { 0x4000 } else { 0 },
            tos: 0,
            options: Vec::new(),
        };
        let mut bytes = build_ipv4(&spec, &l4);
        fix_l4_checksum(&mut bytes);
        let bcast = self.quiet && path == Path::Input && (proto == 6 || proto == 17);
        self.pkts.push(Packet {
            path,
            iface: iface.to_string(),
            bytes,
            bcast,
            socket: false,
        });
        self.reply.push(reply);
        self.pkts.len() - 1
    }

    fn push(&mut self, reply: bool, proto: u8, l4: Vec<u8>) -> usize {
        self.push_from(reply, None, proto, l4)
    }

    /// (source port, destination port) of a packet in that direction.
    fn ports(&self, reply: bool) -> (u16, u16) {
        if reply {
            (self.nat_s.map_or(self.sport, |n| n.1), self.cport)
        } else {
            (self.cport, self.sport)
        }
    }

    fn tcp(&mut self, reply: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> usize {
        let opts: &[u8] = if flags & SYN != 0 { &SYN_OPTS } else { &[] };
        let (sp, dp) = self.ports(reply);
        let l4 = tcp_segment(sp, dp, seq, ack, flags, WINDOW, opts, payload);
        self.push(reply, 6, l4)
    }

    fn udp(&mut self, reply: bool, payload: &[u8], zero_csum: bool) -> usize {
        let (sp, dp) = self.ports(reply);
        let mut l4 = udp_header(sp, dp, payload.len());
        l4.extend_from_slice(payload);
        let i = self.push(reply, 17, l4);
        if zero_csum {
            // No checksum at all: valid for UDP over IPv4.
            let p = &mut self.pkts[i].bytes;
            p[26] = 0;
            p[27] = 0;
        }
        i
    }

    /// An ICMP error about packet `quoted`, travelling the other way, from the peer or from a
    /// router on the way (`from`). Quotes the IP header and 8 bytes, or the whole datagram.
    fn icmp_error(&mut self, quoted: usize, ty: u8, code: u8, from: Option<u32>, long: bool) {
        let q = &self.pkts[quoted].bytes;
        let ihl = usize::from(q[0] & 0x0f) * 4;
        let n = if long {
            q.len().min(548)
        } else {
            (ihl + 8).min(q.len())
        };
        let mut inner = q[..n].to_vec();
        // The peer quotes the datagram as it received it, after NAT.
        if !self.reply[quoted] && inner.len() >= ihl + 4 {
            if let Some(a) = self.nat_c {
                inner[12..16].copy_from_slice(&a.to_be_bytes());
            }
            if let Some((a, port)) = self.nat_s {
                inner[16..20].copy_from_slice(&a.to_be_bytes());
                if matches!(inner[9], 6 | 17) {
                    inner[ihl + 2..ihl + 4].copy_from_slice(&port.to_be_bytes());
                }
            }
        }
        // Fragmentation needed carries the next-hop MTU.
        let rest = if ty == 3 && code == 4 {
            [0, 0, 0x05, 0x78]
        } else {
            [0; 4]
        };
        let reply = !self.reply[quoted];
        let i = self.push_from(reply, from, 1, icmp_message(ty, code, rest, &inner));
        self.quotes.push((i, quoted));
    }
}

/// Which addresses are the firewall's and which interface each remote address lives behind,
/// across the flows of a case: a remote address seen on two interfaces, or both local and
/// remote, would change what routing does with the replies.
#[derive(Debug, Default)]
struct Registry {
    remote: HashMap<u32, &'static str>,
    local: Vec<u32>,
}

impl Registry {
    fn remote_ok(&self, a: u32, dev: &str) -> bool {
        !bad_addr(a, true)
            && !self.local.contains(&a)
            && self.remote.get(&a).is_none_or(|d| *d == dev)
    }

    fn take_remote(
        &mut self,
        rng: &mut Rng,
        want: Option<u32>,
        v: &Values,
        dev: &'static str,
    ) -> u32 {
        let mut a = want.unwrap_or_else(|| pick_addr(rng, v, true));
        for k in 0..16 {
            if self.remote_ok(a, dev) {
                break;
            }
            a = if k < 8 {
                a ^ (1 + rng.below(255) as u32)
            } else {
                random_unicast(rng)
            };
        }
        self.remote.insert(a, dev);
        a
    }

    fn take_local(&mut self, rng: &mut Rng, want: Option<u32>, v: &Values) -> u32 {
        let mut a = want.unwrap_or_else(|| pick_addr(rng, v, true));
        for k in 0..16 {
            let own = a.to_be_bytes()[..3] == [198, 18, 0];
            if (own || !bad_addr(a, true)) && !self.remote.contains_key(&a) {
                break;
            }
            a = if k < 8 {
                a ^ (1 + rng.below(255) as u32)
            } else {
                random_unicast(rng)
            };
        }
        self.local.push(a);
        a
    }
}

/// A rule of the ruleset's `#nat` lines, as far as flows model it.
#[derive(Debug, Clone)]
enum Nat {
    /// `PREROUTING [-i IF] [-d ADDR] [-p P] [--dport X] -j DNAT --to-destination A[:Y]`.
    Dnat {
        iface: Option<String>,
        dst: Option<u32>,
        proto: Option<u8>,
        dport: Option<u16>,
        to: u32,
        to_port: Option<u16>,
    },
    /// `POSTROUTING [-o IF] -j SNAT --to-source A` or `-j MASQUERADE` (the interface's address).
    Snat {
        iface: Option<String>,
        to: Option<u32>,
    },
}

/// The `#nat` rules flows model; rules with inversions are left out.
fn nat_rules(rs: &Ruleset) -> Vec<Nat> {
    let mut out = Vec::new();
    for (_, a) in rs.extra.iter().filter(|(t, _)| t == "nat") {
        let get = |k: &str| a.iter().position(|w| w == k).and_then(|i| a.get(i + 1));
        if a.iter().any(|w| w == "!") {
            continue;
        }
        let addr = |w: &String| {
            w.split('/')
                .next()
                .and_then(|x| x.parse::<Ipv4Addr>().ok())
                .map(u32::from)
        };
        let iface = get("-i").or(get("-o")).cloned();
        let chain = a.get(1).map(String::as_str);
        match (chain, get("-j").map(String::as_str)) {
            (Some("PREROUTING"), Some("DNAT")) => {
                let Some((to, to_port)) = get("--to-destination").and_then(|t| {
                    let (h, p) = t.split_once(':').unwrap_or((t, ""));
                    Some((u32::from(h.parse::<Ipv4Addr>().ok()?), p.parse().ok()))
                }) else {
                    continue;
                };
                out.push(Nat::Dnat {
                    iface,
                    dst: get("-d").and_then(addr),
                    proto: get("-p").and_then(|p| crate::ruleset::proto_number(p)),
                    dport: get("--dport").and_then(|p| p.parse().ok()),
                    to,
                    to_port,
                });
            }
            (Some("POSTROUTING"), Some("SNAT" | "MASQUERADE")) => {
                out.push(Nat::Snat {
                    iface,
                    to: get("--to-source").and_then(addr),
                });
            }
            _ => {}
        }
    }
    out
}

/// Applies the NAT rules to a forwarded flow (and SNAT to one from the firewall): where its
/// server really is, where the server sees its client.
fn apply_nat(f: &mut Flow, proto: u8, nats: &[Nat]) {
    let egress = match f.kind {
        Kind::Forward => f.s_if,
        Kind::LocalOut => f.c_if,
        _ => return,
    };
    for n in nats {
        match n {
            Nat::Dnat {
                iface,
                dst,
                proto: p,
                dport,
                to,
                to_port,
            } if f.kind == Kind::Forward && f.nat_s.is_none() => {
                let hit = iface.as_deref().is_none_or(|i| i == f.c_if)
                    && dst.is_none_or(|d| d == f.s)
                    && p.is_none_or(|p| p == proto)
                    && dport.is_none_or(|d| d == f.sport);
                if hit {
                    f.nat_s = Some((*to, to_port.unwrap_or(f.sport)));
                }
            }
            Nat::Snat { iface, to }
                if f.nat_c.is_none() && iface.as_deref().is_none_or(|i| i == egress) =>
            {
                f.nat_c = Some(to.unwrap_or_else(|| iface_addr(egress)));
            }
            _ => {}
        }
    }
}

fn iface_addr(name: &str) -> u32 {
    let host = IFACES.iter().find(|i| i.name == name).map_or(1, |i| i.host);
    u32::from(Ipv4Addr::new(198, 18, 0, host))
}

/// The ingress whose forward egress is `egress`, preferring a symmetric pair.
fn ingress_to(egress: &'static str, rng: &mut Rng) -> &'static str {
    if forward_egress(egress).is_some_and(|b| forward_egress(b) == Some(egress)) {
        return forward_egress(egress).unwrap_or(egress);
    }
    let c: Vec<&'static str> = IFACES
        .iter()
        .map(|i| i.name)
        .filter(|n| forward_egress(n) == Some(egress))
        .collect();
    if c.is_empty() {
        const SYMMETRIC: [&str; 4] = ["eth0", "eth1", "ppp0", "tun0"];
        SYMMETRIC[rng.below(4) as usize]
    } else {
        c[rng.below(c.len() as u64) as usize]
    }
}

fn static_iface(name: &str) -> Option<&'static str> {
    IFACES.iter().map(|i| i.name).find(|n| *n == name)
}

/// Lays out a flow from a hint aimed at one rule: the hinted packet is either the client's
/// (original direction) or the server's (reply direction, always so for `--ctdir REPLY`).
fn new_flow(h: &Hint, v: &Values, reg: &mut Registry, rng: &mut Rng) -> Flow {
    let as_reply = h.ct_reply.unwrap_or_else(|| rng.chance(30));
    let path = h.path.unwrap_or_else(|| *rng.pick(&Path::ALL));
    let kind = if h.lo {
        Kind::Loopback
    } else {
        match (path, as_reply) {
            (Path::Input, false) | (Path::Output, true) => Kind::LocalIn,
            (Path::Input, true) | (Path::Output, false) => Kind::LocalOut,
            (Path::Forward, _) => Kind::Forward,
        }
    };
    let hinted_if = h.iface.as_deref().and_then(static_iface);
    let (c_if, s_if) = match kind {
        Kind::Forward => {
            let c_if = match (hinted_if, as_reply) {
                (Some(i), false) => i,
                (Some(i), true) => ingress_to(i, rng),
                (None, _) => {
                    if rng.chance(90) {
                        *rng.pick(&["eth0", "eth1", "ppp0", "tun0"])
                    } else {
                        *rng.pick(&["wlan0", "br-0123456789ab"])
                    }
                }
            };
            (c_if, forward_egress(c_if).unwrap_or("eth1"))
        }
        Kind::Loopback => (LOOPBACK, LOOPBACK),
        _ => {
            let i = hinted_if.unwrap_or_else(|| rng.pick(&IFACES).name);
            (i, i)
        }
    };
    // The hinted packet's addresses and ports, turned into the client's and the server's.
    let (hc, hs, hcp, hsp) = if as_reply {
        (h.dst, h.src, h.dport, h.sport)
    } else {
        (h.src, h.dst, h.sport, h.dport)
    };
    let want_c = h.ct_src.or(hc);
    let want_s = h.ct_dst.or(hs);
    let (c, s) = match kind {
        Kind::LocalIn => {
            let c = reg.take_remote(rng, want_c, v, c_if);
            (c, reg.take_local(rng, want_s, v))
        }
        Kind::LocalOut => {
            let own = if rng.chance(40) {
                Some(iface_addr(c_if))
            } else {
                want_c
            };
            let c = reg.take_local(rng, own, v);
            (c, reg.take_remote(rng, want_s, v, c_if))
        }
        Kind::Forward => {
            let c = reg.take_remote(rng, want_c, v, c_if);
            let mut s = reg.take_remote(rng, want_s, v, s_if);
            if s == c {
                s = reg.take_remote(rng, None, v, s_if);
            }
            (c, s)
        }
        Kind::Loopback => {
            let l = [
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(127, 0, 0, 53),
                Ipv4Addr::new(198, 18, 0, 1),
                Ipv4Addr::new(198, 18, 0, 13),
            ];
            (u32::from(*rng.pick(&l)), u32::from(*rng.pick(&l)))
        }
    };
    let cport = h
        .ct_sport
        .or(hcp)
        .unwrap_or_else(|| rng.range(1024, 65535) as u16);
    let sport = h.ct_dport.or(hsp).unwrap_or_else(|| pick_port(rng, v));
    Flow::new(kind, (c_if, s_if), (c, cport), (s, sport))
}

fn payload(rng: &mut Rng, max: u64) -> Vec<u8> {
    (0..rng.range(1, max))
        .map(|_| rng.next_u64() as u8)
        .collect()
}

/// A router between the firewall and the server (source of ICMP errors about the flow).
fn router(f: &Flow, reg: &mut Registry, rng: &mut Rng, v: &Values) -> Option<u32> {
    match f.kind {
        Kind::LocalOut => Some(reg.take_remote(rng, None, v, f.c_if)),
        Kind::Forward => Some(reg.take_remote(rng, None, v, f.s_if)),
        _ => None,
    }
}

fn tcp_script(f: &mut Flow, reg: &mut Registry, rng: &mut Rng, v: &Values) {
    let c0 = rng.next_u64() as u32;
    let s0 = rng.next_u64() as u32;
    let towards_fw = matches!(f.kind, Kind::LocalIn | Kind::LocalOut);
    if f.cport == 0 {
        // Port 0 would let a socket probe draw its port.
        f.cport = rng.range(1024, 65535) as u16;
    }
    if f.kind == Kind::LocalOut && rng.chance(30) {
        // A real socket connects: its error (ECONNREFUSED for a reset, EHOSTUNREACH...) is
        // compared too.
        let i = f.tcp(false, c0, 0, SYN, &[]);
        f.pkts[i].socket = true;
        return;
    }
    match rng.below(100) {
        // A connection: handshake, data both ways, then a close, a reset, stray data or
        // nothing.
        0..=49 => {
            f.quiet = towards_fw;
            f.tcp(false, c0, 0, SYN, &[]);
            if rng.chance(15) {
                f.tcp(false, c0, 0, SYN, &[]);
            }
            f.tcp(true, s0, c0.wrapping_add(1), SYN | ACK, &[]);
            if rng.chance(10) {
                return;
            }
            let (mut c, mut s) = (c0.wrapping_add(1), s0.wrapping_add(1));
            f.tcp(false, c, s, ACK, &[]);
            let d = payload(rng, 200);
            f.tcp(false, c, s, PSH | ACK, &d);
            c = c.wrapping_add(d.len() as u32);
            f.tcp(true, s, c, ACK, &[]);
            if rng.chance(60) {
                let d = payload(rng, 300);
                f.tcp(true, s, c, PSH | ACK, &d);
                s = s.wrapping_add(d.len() as u32);
                f.tcp(false, c, s, ACK, &[]);
            }
            match rng.below(6) {
                0 | 1 => {
                    f.tcp(false, c, s, FIN | ACK, &[]);
                    f.tcp(true, s, c.wrapping_add(1), FIN | ACK, &[]);
                    f.tcp(false, c.wrapping_add(1), s.wrapping_add(1), ACK, &[]);
                    if rng.chance(30) {
                        // A new connection on the same tuple after the close (TIME_WAIT).
                        f.tcp(false, c.wrapping_add(100_000), 0, SYN, &[]);
                    }
                }
                2 => {
                    f.tcp(false, c, s, RST | ACK, &[]);
                    if rng.chance(50) {
                        f.tcp(true, s, c, PSH | ACK, &payload(rng, 20));
                    }
                }
                3 => {
                    f.tcp(true, s, c, RST, &[]);
                }
                4 => {
                    // Far outside the window.
                    f.tcp(
                        false,
                        c.wrapping_add(3_000_000),
                        s,
                        PSH | ACK,
                        &payload(rng, 50),
                    );
                    f.tcp(true, s, c, ACK, &[]);
                }
                _ => {}
            }
        }
        // Refused: the server resets the SYN.
        50..=59 => {
            f.quiet = towards_fw;
            f.tcp(false, c0, 0, SYN, &[]);
            f.tcp(true, 0, c0.wrapping_add(1), RST | ACK, &[]);
            if rng.chance(40) {
                f.tcp(false, c0.wrapping_add(7), 0, SYN, &[]);
            }
        }
        // An ICMP error about the SYN (RELATED).
        60..=69 => {
            f.quiet = towards_fw;
            let syn = f.tcp(false, c0, 0, SYN, &[]);
            let (ty, code) = *rng.pick(&[(3u8, 3u8), (3, 1), (3, 13), (3, 10), (11, 0), (3, 4)]);
            let from = if rng.chance(50) {
                router(f, reg, rng, v)
            } else {
                None
            };
            f.icmp_error(syn, ty, code, from, rng.chance(30));
            if rng.chance(30) {
                f.tcp(false, c0, 0, SYN, &[]);
            }
        }
        // Segments conntrack calls INVALID, or picks up mid-stream.
        70..=84 => {
            f.quiet = towards_fw;
            match rng.below(9) {
                0 => {
                    f.tcp(false, c0, s0, SYN | ACK, &[]);
                }
                1 => {
                    f.tcp(false, c0, 0, RST, &[]);
                }
                2 => {
                    f.tcp(false, c0, 0, SYN | FIN, &[]);
                }
                3 => {
                    f.tcp(false, c0, 0, 0, &[]);
                }
                4 => {
                    f.tcp(false, c0, 0, FIN | PSH | URG, &[]);
                }
                5 => {
                    f.tcp(false, c0, 0, SYN | RST, &[]);
                }
                6 => {
                    let i = f.tcp(false, c0, 0, SYN, &[]);
                    // Wrong transport checksum: INVALID at PRE_ROUTING.
                    let b = &mut f.pkts[i].bytes;
                    b[36] ^= 0x5a;
                }
                _ => {
                    // A mid-stream ACK (nf_conntrack_tcp_loose picks it up), then its answer.
                    f.tcp(false, c0, s0, PSH | ACK, &payload(rng, 40));
                    f.tcp(true, s0, c0.wrapping_add(40), ACK, &[]);
                }
            }
        }
        // A probe: nobody scripted answers; towards the firewall its own stack resets it.
        _ => {
            f.tcp(false, c0, 0, SYN, &[]);
            if rng.chance(30) {
                f.tcp(false, c0, 0, SYN, &[]);
            }
        }
    }
}

fn udp_script(f: &mut Flow, reg: &mut Registry, rng: &mut Rng, v: &Values) {
    let towards_fw = matches!(f.kind, Kind::LocalIn | Kind::LocalOut);
    let zero = rng.chance(10);
    if f.cport == 0 {
        f.cport = rng.range(1024, 65535) as u16;
    }
    if f.kind == Kind::LocalOut && rng.chance(30) {
        // A connected UDP socket sends: a port-unreachable coming back sets its error.
        let i = f.udp(false, &payload(rng, 60), false);
        f.pkts[i].socket = true;
        return;
    }
    match rng.below(100) {
        0..=49 => {
            f.quiet = towards_fw;
            f.udp(false, &payload(rng, 60), zero);
            f.udp(true, &payload(rng, 200), zero);
            for _ in 0..rng.below(3) {
                let back = rng.chance(50);
                f.udp(back, &payload(rng, 60), zero);
            }
        }
        50..=69 => {
            f.quiet = towards_fw;
            let q = f.udp(false, &payload(rng, 60), zero);
            let from = if rng.chance(30) {
                router(f, reg, rng, v)
            } else {
                None
            };
            let (ty, code) = *rng.pick(&[(3u8, 3u8), (3, 3), (3, 13), (11, 0), (3, 2)]);
            f.icmp_error(q, ty, code, from, rng.chance(30));
            if rng.chance(30) {
                f.udp(false, &payload(rng, 60), zero);
            }
        }
        70..=84 => {
            f.quiet = towards_fw;
            f.udp(false, &payload(rng, 60), zero);
            if rng.chance(30) {
                f.udp(false, &payload(rng, 60), zero);
            }
        }
        // A probe: towards the firewall its stack answers port-unreachable (RELATED, through
        // OUTPUT).
        _ => {
            f.udp(false, &payload(rng, 60), zero);
        }
    }
}

fn icmp_script(f: &mut Flow, rng: &mut Rng) {
    let id = [rng.next_u64() as u8, rng.next_u64() as u8];
    let echo = |ty: u8, seq: u8, body: &[u8]| icmp_message(ty, 0, [id[0], id[1], 0, seq], body);
    // The firewall's stack answers echo requests sent to it (and to itself).
    let stack_answers = matches!(f.kind, Kind::LocalIn | Kind::Loopback);
    match rng.below(100) {
        0..=54 => {
            let body = payload(rng, 56);
            for seq in 1..=rng.range(1, 3) as u8 {
                f.push(false, 1, echo(8, seq, &body));
                if !stack_answers {
                    f.push(true, 1, echo(0, seq, &body));
                }
            }
        }
        // An echo reply nobody asked for: INVALID.
        55..=64 => {
            f.push(false, 1, echo(0, 1, &payload(rng, 16)));
        }
        // Timestamp request and reply.
        65..=74 => {
            let body = [0u8; 12];
            f.push(false, 1, echo(13, 1, &body));
            if !stack_answers {
                f.push(true, 1, echo(14, 1, &body));
            }
        }
        // An ICMP error quoting a datagram no connection knows: INVALID.
        75..=89 => {
            let mut inner = build_ipv4(
                &IpSpec {
                    src: Ipv4Addr::from(f.s),
                    dst: Ipv4Addr::from(f.c),
                    proto: 17,
                    ttl: 64,
                    frag: 0,
                    tos: 0,
                    options: Vec::new(),
                },
                &udp_header(f.sport, f.cport, 0),
            );
            fix_l4_checksum(&mut inner);
            f.push(false, 1, icmp_message(3, 3, [0; 4], &inner));
        }
        // An error about the echo request itself (RELATED).
        _ => {
            let q = f.push(false, 1, echo(8, 1, &payload(rng, 24)));
            f.icmp_error(q, 3, 13, None, false);
        }
    }
}

fn other_script(f: &mut Flow, rng: &mut Rng) {
    let proto = *rng.pick(&[47u8, 47, 132, 50]);
    for k in 0..rng.range(1, 4) {
        let back = k % 2 == 1;
        f.push(back, proto, payload(rng, 40));
    }
}

/// Flows for `rs`, interleaved, about `n` packets in all. The packets will be replayed after
/// `base` others (their IP IDs are their position + 1), so that an ICMP error can quote the
/// ID its datagram really carries.
pub fn flows_for(rs: &Ruleset, n: usize, base: usize, rng: &mut Rng) -> Vec<Packet> {
    let mut v = rs.values();
    v.protos.extend([6, 6, 17, 1]);
    let mut reg = Registry::default();
    let nats = nat_rules(rs);
    let dnats: Vec<&Nat> = nats
        .iter()
        .filter(|n| matches!(n, Nat::Dnat { .. }))
        .collect();
    let mut flows: Vec<Flow> = Vec::new();
    let mut total = 0;
    while total < n {
        let mut h = if !rs.rules.is_empty() && rng.chance(75) {
            directed_through(rs, rng.pick(&rs.rules), rng, 3)
        } else {
            Hint::default()
        };
        // Now and then a flow aimed at a port forward, through the firewall.
        let mut dnat_to = None;
        if !dnats.is_empty() && rng.chance(30) {
            if let Nat::Dnat {
                iface,
                dst,
                proto,
                dport,
                ..
            } = rng.pick(&dnats)
            {
                h = Hint {
                    path: Some(Path::Forward),
                    iface: iface.clone(),
                    proto: *proto,
                    ct_dport: *dport,
                    ct_reply: Some(false),
                    ..Hint::default()
                };
                dnat_to = *dst;
            }
        }
        let mut f = new_flow(&h, &v, &mut reg, rng);
        if let (Some(d), Kind::Forward) = (dnat_to, f.kind) {
            // The firewall's own address, which the DNAT rule rewrites before routing.
            f.s = d;
        }
        let proto = match h.proto.filter(|p| *p != 0) {
            Some(p) => p,
            None => match rng.below(100) {
                0..=49 => 6,
                50..=74 => 17,
                75..=94 => 1,
                _ => 47,
            },
        };
        apply_nat(&mut f, proto, &nats);
        match proto {
            6 => tcp_script(&mut f, &mut reg, rng, &v),
            17 => udp_script(&mut f, &mut reg, rng, &v),
            1 => icmp_script(&mut f, rng),
            _ => other_script(&mut f, rng),
        }
        total += f.pkts.len();
        flows.push(f);
    }
    // Interleave, each flow in its own order.
    let mut at = vec![0usize; flows.len()];
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(total);
    while order.len() < total {
        let live: Vec<usize> = (0..flows.len())
            .filter(|k| at[*k] < flows[*k].pkts.len())
            .collect();
        let k = *rng.pick(&live);
        order.push((k, at[k]));
        at[k] += 1;
    }
    let pos: HashMap<(usize, usize), usize> =
        order.iter().enumerate().map(|(i, fk)| (*fk, i)).collect();
    let mut out: Vec<Packet> = order
        .iter()
        .map(|(k, i)| flows[*k].pkts[*i].clone())
        .collect();
    for (k, f) in flows.iter().enumerate() {
        for (err, quoted) in &f.quotes {
            let (Some(e), Some(q)) = (pos.get(&(k, *err)), pos.get(&(k, *quoted))) else {
                continue;
            };
            let id = (base + q + 1) as u16;
            let b = &mut out[*e].bytes;
            let ihl = usize::from(b[0] & 0x0f) * 4;
            // Outer header, ICMP header, then the quoted header.
            let inner = ihl + 8;
            if b.len() >= inner + 20 {
                b[inner + 4..inner + 6].copy_from_slice(&id.to_be_bytes());
                let iihl = usize::from(b[inner] & 0x0f) * 4;
                if b.len() >= inner + iihl {
                    fix_ip_checksum(&mut b[inner..inner + iihl]);
                }
                fix_l4_checksum(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::l4_checksum;

    fn rules() -> Ruleset {
        Ruleset::parse(
            "t",
            "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n\
             -A FORWARD -m conntrack --ctstate ESTABLISHED --ctdir REPLY -j ACCEPT\n\
             -A FORWARD -i eth0 -o eth1 -p udp -m udp --dport 53 -j ACCEPT\n\
             -A OUTPUT -p tcp -m tcp --dport 443 -j REJECT --reject-with tcp-reset\nCOMMIT\n",
        )
        .expect("parse")
    }

    #[test]
    fn flows_have_valid_checksums_and_paths() {
        let rs = rules();
        let pkts = flows_for(&rs, 400, 10, &mut Rng::new(4));
        assert!(pkts.len() >= 400);
        let bad = pkts
            .iter()
            .filter(|p| {
                l4_checksum(&p.bytes).is_some_and(|(at, full, _)| {
                    let cur = u16::from_be_bytes([p.bytes[at], p.bytes[at + 1]]);
                    cur != full && !(p.bytes[9] == 17 && cur == 0)
                })
            })
            .count();
        // Only the deliberately broken SYNs.
        assert!(bad * 20 < pkts.len(), "{bad} bad checksums");
        for p in &pkts {
            match p.path {
                Path::Forward => assert!(forward_egress(&p.iface).is_some()),
                Path::Input => assert!(IFACES.iter().any(|i| i.name == p.iface)),
                Path::Output => {}
            }
            assert!(!p.bcast || p.path == Path::Input);
        }
        assert!(pkts.iter().any(|p| p.bcast));
        assert!(pkts.iter().all(|p| !p.socket || p.path == Path::Output));
        assert!(pkts.iter().any(|p| p.path == Path::Output));
        // Replies: some forward packet enters by the egress of another.
        assert!(pkts
            .iter()
            .any(|p| p.path == Path::Forward && p.iface == "eth1"));
    }

    #[test]
    fn nat_replies_come_from_the_translated_addresses() {
        let rs = Ruleset::parse(
            "t",
            "#nat -A PREROUTING -i eth0 -d 198.18.0.1/32 -p tcp -m tcp --dport 8080 \
             -j DNAT --to-destination 10.20.0.80:80\n\
             #nat -A POSTROUTING -o eth0 -j MASQUERADE\n\
             *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
        )
        .expect("parse");
        let nats = nat_rules(&rs);
        assert_eq!(nats.len(), 2);
        let mut f = Flow::new(
            Kind::Forward,
            ("eth0", "eth1"),
            (u32::from(Ipv4Addr::new(10, 0, 0, 1)), 40000),
            (u32::from(Ipv4Addr::new(198, 18, 0, 1)), 8080),
        );
        apply_nat(&mut f, 6, &nats);
        assert_eq!(f.nat_s, Some((u32::from(Ipv4Addr::new(10, 20, 0, 80)), 80)));
        assert_eq!(
            f.nat_c, None,
            "MASQUERADE is on eth0, the flow leaves by eth1"
        );
        f.tcp(false, 1, 0, SYN, &[]);
        f.tcp(true, 5, 2, SYN | ACK, &[]);
        let r = &f.pkts[1].bytes;
        assert_eq!(&r[12..16], &[10, 20, 0, 80]);
        assert_eq!(&r[16..20], &[10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([r[20], r[21]]), 80);
        f.icmp_error(0, 3, 3, None, false);
        let e = &f.pkts[2].bytes;
        assert_eq!(
            &e[28 + 16..28 + 20],
            &[10, 20, 0, 80],
            "quoted as translated"
        );
    }

    #[test]
    fn handshake_sequence_numbers_line_up() {
        let mut f = Flow::new(
            Kind::Forward,
            ("eth0", "eth1"),
            (u32::from(Ipv4Addr::new(10, 0, 0, 1)), 40000),
            (u32::from(Ipv4Addr::new(10, 0, 0, 2)), 80),
        );
        f.tcp(false, 100, 0, SYN, &[]);
        f.tcp(true, 900, 101, SYN | ACK, &[]);
        f.icmp_error(0, 3, 3, None, false);
        assert_eq!(f.pkts[1].iface, "eth1");
        assert_eq!(&f.pkts[1].bytes[12..16], &[10, 0, 0, 2]);
        let t = &f.pkts[1].bytes[20..];
        assert_eq!(u16::from_be_bytes([t[0], t[1]]), 80);
        assert_eq!(u32::from_be_bytes([t[8], t[9], t[10], t[11]]), 101);
        // The error goes back towards the client, quoting the SYN's header and ports.
        let e = &f.pkts[2];
        assert_eq!(e.iface, "eth1");
        assert_eq!(&e.bytes[28 + 12..28 + 20], &f.pkts[0].bytes[12..20]);
        assert_eq!(e.bytes.len(), 20 + 8 + 20 + 8);
    }
}
