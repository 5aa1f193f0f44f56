//! Corpus generators: packets aimed at the values a ruleset mentions (plus random and
//! malformed ones), and random valid rulesets over the supported features.

use std::net::Ipv4Addr;

use crate::netns::{forward_egress, IFACES, LOOPBACK};
use crate::packet::{build_ipv4, icmp_header, tcp_header, udp_header, IpSpec, Packet, Path};
use crate::ruleset::{Rule, Ruleset, Values};
use test_support::Rng;

/// Addresses the harness must not use as a packet's source or destination: the firewall's own
/// links (they would turn a forward into a local delivery), and martians the kernel drops
/// before any filter hook.
pub(crate) fn bad_addr(a: u32, as_dst: bool) -> bool {
    let o = a.to_be_bytes();
    o[0] == 0
        || o[0] == 127
        || o[0] >= 224
        || (o[0] == 198 && o[1] == 18 && o[2] == 0)
        || (as_dst && a == 0)
}

pub(crate) fn random_unicast(rng: &mut Rng) -> u32 {
    loop {
        let a = rng.next_u64() as u32;
        if !bad_addr(a, true) {
            return a;
        }
    }
}

pub(crate) fn pick_addr(rng: &mut Rng, v: &Values, as_dst: bool) -> u32 {
    for _ in 0..4 {
        let a = if !v.addrs.is_empty() && rng.chance(80) {
            let base = *rng.pick(&v.addrs);
            if rng.chance(15) {
                base ^ (1 << rng.below(32))
            } else {
                base
            }
        } else {
            random_unicast(rng)
        };
        if !bad_addr(a, as_dst) {
            return a;
        }
    }
    random_unicast(rng)
}

pub(crate) fn pick_port(rng: &mut Rng, v: &Values) -> u16 {
    if !v.ports.is_empty() && rng.chance(75) {
        *rng.pick(&v.ports)
    } else {
        {
            let r = rng.next_u64() as u16;
            *rng.pick(&[
                0u16, 1, 22, 25, 53, 80, 123, 443, 1023, 1024, 8080, 65535, r,
            ])
        }
    }
}

const WELL_KNOWN_TCP_OPTS: [&[u8]; 6] = [
    &[2, 4, 5, 0xb4],
    &[4, 2],
    &[3, 3, 7],
    &[8, 10, 0, 0, 0, 1, 0, 0, 0, 0],
    &[1],
    &[0],
];

fn tcp_options(rng: &mut Rng, v: &Values) -> Vec<u8> {
    let mut o = Vec::new();
    for _ in 0..rng.range(1, 3) {
        if !v.tcp_opts.is_empty() && rng.chance(50) {
            let k = *rng.pick(&v.tcp_opts);
            match k {
                0 | 1 => o.push(k),
                _ => o.extend([k, *rng.pick(&[2u8, 3, 4, 0, 1, 40])]),
            }
            o.resize(o.len() + rng.below(3) as usize, 1);
        } else {
            let opt = rng.pick::<&[u8]>(&WELL_KNOWN_TCP_OPTS);
            o.extend_from_slice(opt);
        }
    }
    o
}

/// Field values aimed at one rule (None: choose freely).
#[derive(Debug, Default)]
pub(crate) struct Hint {
    pub(crate) path: Option<Path>,
    pub(crate) iface: Option<String>,
    pub(crate) src: Option<u32>,
    pub(crate) dst: Option<u32>,
    pub(crate) proto: Option<u8>,
    pub(crate) sport: Option<u16>,
    pub(crate) dport: Option<u16>,
    pub(crate) flags: Option<u8>,
    pub(crate) tcp_opt: Option<u8>,
    /// The value of an MSS option to put in the TCP header (`-m tcpmss --mss`).
    pub(crate) mss: Option<u16>,
    pub(crate) icmp: Option<(u8, u8)>,
    pub(crate) nonfirst_frag: Option<bool>,
    /// The rule names the loopback interface: send the packet out of `lo` (OUTPUT, then INPUT).
    pub(crate) lo: bool,
    /// Connection tuple in the original direction (`--ctorigsrc`, `--ctrepldst`, ...): source,
    /// destination, source port, destination port.
    pub(crate) ct_src: Option<u32>,
    pub(crate) ct_dst: Option<u32>,
    pub(crate) ct_sport: Option<u16>,
    pub(crate) ct_dport: Option<u16>,
    /// `--ctdir`: Some(true) when the packet must travel in the reply direction.
    pub(crate) ct_reply: Option<bool>,
}

fn in_net(rng: &mut Rng, word: &str, inside: bool) -> Option<u32> {
    let (a, m) = word.split_once('/').unwrap_or((word, "32"));
    let addr = u32::from(a.parse::<Ipv4Addr>().ok()?);
    let mask = match m.parse::<u32>() {
        Ok(0) => 0,
        Ok(p) => u32::MAX << (32 - p.min(32)),
        Err(_) => u32::from(m.parse::<Ipv4Addr>().ok()?),
    };
    for _ in 0..8 {
        let x = rng.next_u64() as u32;
        let cand = if inside {
            (addr & mask) | (x & !mask)
        } else {
            x
        };
        if ((cand & mask) == (addr & mask)) == inside && !bad_addr(cand, true) {
            return Some(cand);
        }
    }
    None
}

fn in_range(rng: &mut Rng, word: &str, inside: bool) -> Option<u32> {
    let (x, y) = word.split_once('-')?;
    let (x, y) = (
        u32::from(x.parse::<Ipv4Addr>().ok()?),
        u32::from(y.parse::<Ipv4Addr>().ok()?),
    );
    let v = if inside {
        x.wrapping_add(rng.below(u64::from(y.wrapping_sub(x)) + 1) as u32)
    } else if rng.chance(50) {
        x.wrapping_sub(1)
    } else {
        y.wrapping_add(1)
    };
    (!bad_addr(v, true)).then_some(v)
}

fn port_in(rng: &mut Rng, word: &str, inside: bool) -> Option<u16> {
    let items: Vec<&str> = word.split(',').collect();
    let it = *rng.pick(&items);
    let (a, b) = it.split_once(':').unwrap_or((it, it));
    let a: u16 = if a.is_empty() { 0 } else { a.parse().ok()? };
    let b: u16 = if b.is_empty() { 65535 } else { b.parse().ok()? };
    Some(if inside {
        a + rng.below(u64::from(b - a) + 1) as u16
    } else if rng.chance(50) {
        a.wrapping_sub(1)
    } else {
        b.wrapping_add(1)
    })
}

fn iface_for(word: &str, inside: bool) -> Vec<&'static str> {
    let m = |n: &str| match word.strip_suffix('+') {
        Some(p) => n.starts_with(p),
        None => n == word,
    };
    IFACES
        .iter()
        .map(|i| i.name)
        .filter(|n| m(n) == inside)
        .collect()
}

/// Reads one rule's options and chooses values that make it match (mostly) or just miss.
fn directed(rule: &Rule, rng: &mut Rng) -> Hint {
    let mut h = Hint {
        path: match rule.chain.as_str() {
            "INPUT" => Some(Path::Input),
            "FORWARD" => Some(Path::Forward),
            "OUTPUT" => Some(Path::Output),
            _ => None,
        },
        ..Hint::default()
    };
    let a = &rule.args;
    let mut i = 0;
    let mut neg = false;
    let mut in_if: Option<Vec<&'static str>> = None;
    let mut out_if: Option<Vec<&'static str>> = None;
    while i < a.len() {
        let w = a[i].as_str();
        if w == "!" {
            neg = true;
            i += 1;
            continue;
        }
        // Satisfy the option most of the time, miss it sometimes.
        let hit = rng.chance(85) != neg;
        let next = a.get(i + 1).map(String::as_str).unwrap_or("");
        match w {
            "-s" => h.src = in_net(rng, next, hit),
            "-d" => h.dst = in_net(rng, next, hit),
            "--src-range" => h.src = in_range(rng, next, hit),
            "--dst-range" => h.dst = in_range(rng, next, hit),
            "-i" | "-o"
                if hit
                    && (next == "lo" || next == "+" || next == "l+" || next == "lo+")
                    && rng.chance(50) =>
            {
                h.lo = true
            }
            "-i" => in_if = Some(iface_for(next, hit)),
            "-o" => out_if = Some(iface_for(next, hit)),
            "-p" => {
                let p = crate::ruleset::proto_number(next).unwrap_or(0);
                h.proto = Some(if hit || p == 0 {
                    p
                } else {
                    *rng.pick(&[6u8, 17, 1, 47])
                });
            }
            "-f" => h.nonfirst_frag = Some(hit),
            "--sport" | "--sports" => h.sport = port_in(rng, next, hit),
            "--dport" | "--dports" => h.dport = port_in(rng, next, hit),
            "--ports" => {
                if rng.chance(50) {
                    h.sport = port_in(rng, next, hit)
                } else {
                    h.dport = port_in(rng, next, hit)
                }
            }
            "--icmp-type" => {
                h.icmp = crate::ruleset::icmp_type(next).map(|(t, c)| {
                    if hit {
                        (t, c)
                    } else {
                        (t, c.wrapping_add(1))
                    }
                })
            }
            "--tcp-flags" => {
                let m = crate::ruleset::tcp_flags(next);
                let c = crate::ruleset::tcp_flags(a.get(i + 2).map(String::as_str).unwrap_or(""));
                let f = c | (rng.next_u64() as u8 & !m);
                h.flags = Some(if hit {
                    f
                } else {
                    f ^ (m & (1 << rng.below(6)))
                });
            }
            "--syn" => {
                h.flags = Some(if hit {
                    0x02
                } else {
                    *rng.pick(&[0x12u8, 0x10, 0x03, 0x06])
                })
            }
            "--tcp-option" => h.tcp_opt = next.parse().ok().filter(|_| hit),
            "--mss" => h.mss = port_in(rng, next, hit),
            // Connection tuples: without NAT the reply tuple is the original one reversed.
            "--ctorigsrc" => h.ct_src = in_net(rng, next, hit),
            "--ctorigdst" => h.ct_dst = in_net(rng, next, hit),
            "--ctrepldst" => h.ct_src = in_net(rng, next, hit),
            "--ctreplsrc" => h.ct_dst = in_net(rng, next, hit),
            "--ctorigsrcport" | "--ctrepldstport" => h.ct_sport = port_in(rng, next, hit),
            "--ctorigdstport" | "--ctreplsrcport" => h.ct_dport = port_in(rng, next, hit),
            "--ctproto" => {
                let p = crate::ruleset::proto_number(next).unwrap_or(0);
                h.proto = Some(if hit || p == 0 {
                    p
                } else {
                    *rng.pick(&[6u8, 17, 1, 47])
                });
            }
            "--ctdir" => h.ct_reply = Some((next == "REPLY") == hit),
            _ => {}
        }
        neg = false;
        i += 1;
    }
    let path = h.path.unwrap_or_else(|| *rng.pick(&Path::ALL));
    h.path = Some(path);
    let choices: Vec<&'static str> = match path {
        Path::Input => in_if.unwrap_or_default(),
        Path::Output => out_if.unwrap_or_default(),
        Path::Forward => {
            let ins = in_if.unwrap_or_else(|| IFACES.iter().map(|i| i.name).collect());
            match &out_if {
                Some(outs) => ins
                    .into_iter()
                    .filter(|i| forward_egress(i).is_some_and(|e| outs.contains(&e)))
                    .collect(),
                None => ins,
            }
        }
    };
    if !choices.is_empty() {
        h.iface = Some(rng.pick(&choices).to_string());
    }
    h
}

/// Like `directed`, but for a rule in a user chain also satisfies a rule that calls the chain
/// (up to `depth` levels), so that packets reach nested chains.
pub(crate) fn directed_through(rs: &Ruleset, rule: &Rule, rng: &mut Rng, depth: u32) -> Hint {
    let mut h = directed(rule, rng);
    let callers: Vec<&Rule> = rs
        .rules
        .iter()
        .filter(|r| r.chain_target() == Some(rule.chain.as_str()))
        .collect();
    if depth == 0 || callers.is_empty() {
        return h;
    }
    let caller = rng.pick::<&Rule>(&callers);
    let mut c = directed_through(rs, caller, rng, depth - 1);
    // The caller must match for the packet to get there: its values win, the callee's fill in.
    macro_rules! merge {
        ($($f:ident),*) => { $( if c.$f.is_none() { c.$f = h.$f.take(); } )* };
    }
    merge!(
        iface,
        src,
        dst,
        proto,
        sport,
        dport,
        flags,
        tcp_opt,
        mss,
        icmp,
        nonfirst_frag,
        ct_src,
        ct_dst,
        ct_sport,
        ct_dport,
        ct_reply
    );
    c.lo |= h.lo;
    c
}

/// Builds `n` packets for `rs`: paths, interfaces and header fields drawn from the values the
/// ruleset mentions and from random ones, with fragments (forward and output only: local
/// delivery reassembles), IP options, truncated transport headers and unusual protocols.
pub fn packets_for(rs: &Ruleset, n: usize, rng: &mut Rng) -> Vec<Packet> {
    let mut v = rs.values();
    v.protos.extend([6, 17, 1]);
    v.flags
        .extend([0x02, 0x12, 0x10, 0x11, 0x04, 0x18, 0x00, 0x3f, 0x29]);
    v.icmp.extend([(8, 0), (0, 0), (3, 3), (11, 0), (3, 4)]);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let h = if !rs.rules.is_empty() && rng.chance(60) {
            directed_through(rs, rng.pick(&rs.rules), rng, 3)
        } else {
            Hint::default()
        };
        let path = h.path.unwrap_or_else(|| match rng.below(100) {
            0..=34 => Path::Input,
            35..=74 => Path::Forward,
            _ => Path::Output,
        });
        let mut iface = h
            .iface
            .clone()
            .unwrap_or_else(|| rng.pick(&IFACES).name.to_string());
        // A lone packet opens its own connection: its tuple is the original one.
        let mut src = h
            .src
            .or(h.ct_src)
            .unwrap_or_else(|| pick_addr(rng, &v, false));
        let mut dst = h
            .dst
            .or(h.ct_dst)
            .unwrap_or_else(|| pick_addr(rng, &v, true));
        // Out of lo and back in: the destination (and so every reply) must be local.
        let lo = (h.lo || (path == Path::Output && rng.chance(8))) && path != Path::Forward;
        let path = if lo { Path::Output } else { path };
        if lo {
            iface = LOOPBACK.to_string();
            dst = u32::from(*rng.pick(&[
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(127, 0, 0, 53),
                Ipv4Addr::new(127, 255, 255, 254),
                Ipv4Addr::new(198, 18, 0, 1),
                Ipv4Addr::new(198, 18, 0, 13),
            ]));
            // A local source too, so that replies (RST, ICMP errors, echo replies) also loop
            // back instead of leaving by a veth.
            src = match rng.below(3) {
                0 => dst,
                1 => u32::from(Ipv4Addr::new(127, 0, 0, 1)),
                _ => u32::from(Ipv4Addr::new(198, 18, 0, 5)),
            };
        }
        let proto = if let Some(p) = h.proto.filter(|p| *p != 0) {
            p
        } else if rng.chance(88) {
            *rng.pick(&v.protos)
        } else {
            {
                let r = rng.next_u64() as u8;
                *rng.pick(&[0u8, 2, 4, 41, 47, 50, 51, 89, 132, 136, 255, r])
            }
        };
        let mut frag = 0u16;
        if lo {
            // Local delivery would hold fragments for reassembly (and time them out later).
        } else if path != Path::Input && h.nonfirst_frag == Some(true) {
            frag = rng.range(1, 0x1fff) as u16 | if rng.chance(30) { 0x2000 } else { 0 };
            if rng.chance(40) {
                frag = 1;
            }
        } else if path != Path::Input && h.nonfirst_frag.is_none() && rng.chance(10) {
            frag = match rng.below(4) {
                0 => 0x2000,
                1 => 1 | if rng.chance(50) { 0x2000 } else { 0 },
                2 => 2,
                _ => rng.range(1, 0x1fff) as u16 | if rng.chance(50) { 0x2000 } else { 0 },
            };
        } else if rng.chance(10) {
            frag = 0x4000;
        }
        let options = if rng.chance(6) {
            match rng.below(5) {
                0 => vec![1, 1, 1, 1],
                1 => vec![7, 7, 4, 0, 0, 0, 0, 0],
                2 => vec![148, 4, 0, 0],
                3 => vec![68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                _ => vec![1, 0, 0, 0],
            }
        } else {
            Vec::new()
        };
        let ttl = if path == Path::Forward && rng.chance(2) {
            1
        } else {
            64
        };
        // Mostly small; some large enough that the transport header may sit in page fragments
        // (packet sockets build non-linear skbs).
        let plen = if rng.chance(4) {
            rng.range(200, 1400)
        } else {
            rng.below(24)
        };
        let payload: Vec<u8> = (0..plen).map(|_| rng.next_u64() as u8).collect();
        let mut l4 = match proto {
            6 => {
                let mut opts = if let Some(k) = h.tcp_opt {
                    let mut o = vec![1u8; rng.below(3) as usize];
                    o.extend(if k <= 1 { vec![k] } else { vec![k, 2] });
                    o
                } else if rng.chance(25) || (!v.tcp_opts.is_empty() && rng.chance(40)) {
                    tcp_options(rng, &v)
                } else {
                    Vec::new()
                };
                // an MSS option (tcpmss), after the others or before them, now and then of
                // the wrong length
                let mss = h
                    .mss
                    .or_else(|| (!v.mss.is_empty() && rng.chance(50)).then(|| *rng.pick(&v.mss)));
                if let Some(m) = mss.filter(|_| opts.len() <= 36) {
                    let len = if rng.chance(8) { 3 } else { 4 };
                    let o = [2u8, len, (m >> 8) as u8, m as u8];
                    if rng.chance(50) {
                        opts.extend_from_slice(&o);
                    } else {
                        opts.splice(0..0, o);
                    }
                }
                let doff = if rng.chance(3) {
                    Some(rng.below(16) as u8)
                } else {
                    None
                };
                let flags = h.flags.unwrap_or_else(|| {
                    if rng.chance(85) {
                        *rng.pick(&v.flags)
                    } else {
                        rng.next_u64() as u8
                    }
                });
                let sp = h.sport.or(h.ct_sport).unwrap_or_else(|| pick_port(rng, &v));
                let dp = h.dport.or(h.ct_dport).unwrap_or_else(|| pick_port(rng, &v));
                let mut t = tcp_header(sp, dp, flags, &opts, doff);
                t.extend_from_slice(&payload);
                t
            }
            17 | 136 | 132 | 33 => {
                // SCTP/DCCP too: ports come first, as multiport reads them.
                let sp = h.sport.or(h.ct_sport).unwrap_or_else(|| pick_port(rng, &v));
                let dp = h.dport.or(h.ct_dport).unwrap_or_else(|| pick_port(rng, &v));
                let mut t = udp_header(sp, dp, payload.len());
                t.extend_from_slice(&payload);
                t
            }
            1 => {
                let (t, c) = h.icmp.unwrap_or_else(|| {
                    if rng.chance(85) {
                        *rng.pick(&v.icmp)
                    } else {
                        (rng.next_u64() as u8, rng.below(16) as u8)
                    }
                });
                let mut t = icmp_header(if t == 255 { 8 } else { t }, c);
                t.extend_from_slice(&payload);
                t
            }
            _ => payload.clone(),
        };
        if rng.chance(6) {
            let keep = rng.below(l4.len().min(24) as u64 + 1) as usize;
            l4.truncate(keep);
        }
        let spec = IpSpec {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            proto,
            ttl,
            frag,
            tos: 0,
            options,
        };
        let mut bytes = build_ipv4(&spec, &l4);
        if path != Path::Output && rng.chance(5) {
            // Link-layer padding after the datagram (as on Ethernet): ip_rcv trims it, so
            // byte counters must use the IP total length, not the frame length.
            bytes.extend((0..rng.range(1, 30)).map(|_| rng.next_u64() as u8));
        }
        out.push(Packet::new(path, iface, bytes));
    }
    out
}

const IFACE_WORDS: [&str; 17] = [
    "eth0",
    "eth1",
    "ppp0",
    "wlan0",
    "tun0",
    "eth+",
    "ppp+",
    "tun+",
    "wlan+",
    "lo",
    "vpn0",
    "e+",
    "+",
    "eth1+",
    "br-0123456789ab",
    "br-+",
    "br-0123456789a+",
];

fn addr_word(rng: &mut Rng, nets: &[(u32, u32)]) -> String {
    let (a, p) = *rng.pick(nets);
    if rng.chance(5) {
        let m = (rng.next_u64() as u32) | 0xff00_0000;
        return format!("{}/{}", Ipv4Addr::from(a & m), Ipv4Addr::from(m));
    }
    let p = if rng.chance(20) {
        rng.range(0, 32) as u32
    } else {
        p
    };
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    format!("{}/{}", Ipv4Addr::from(a & mask), p)
}

/// `[!] --sport P` with a chance of `pct.0` percent, then `[!] --dport P` with `pct.1`.
fn port_words(rng: &mut Rng, a: &mut Vec<String>, ports: &[u16], pct: (u64, u64)) {
    if rng.chance(pct.0) {
        inv(rng, a, 20);
        push(a, &["--sport", &port_word(rng, ports)]);
    }
    if rng.chance(pct.1) {
        inv(rng, a, 20);
        push(a, &["--dport", &port_word(rng, ports)]);
    }
}

fn port_word(rng: &mut Rng, ports: &[u16]) -> String {
    let a = *rng.pick(ports);
    match rng.below(6) {
        0 => {
            let b = a.saturating_add(rng.below(200) as u16);
            format!("{a}:{b}")
        }
        1 => format!("{a}:"),
        2 => format!(":{a}"),
        _ => a.to_string(),
    }
}

fn flags_word(rng: &mut Rng) -> String {
    const N: [&str; 6] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG"];
    let pick = |rng: &mut Rng, bits: u64| -> String {
        let v: Vec<&str> = (0..6)
            .filter(|i| bits & (1 << i) != 0)
            .map(|i| N[i])
            .collect();
        if v.is_empty() {
            "NONE".into()
        } else if v.len() == 6 {
            "ALL".into()
        } else {
            let _ = rng;
            v.join(",")
        }
    };
    let mask = rng.below(64) | 0x02;
    let cmp = mask & rng.below(64);
    let m = pick(rng, mask);
    let c = pick(rng, cmp);
    format!("{m} {c}")
}

fn inv(rng: &mut Rng, args: &mut Vec<String>, pct: u64) {
    if rng.chance(pct) {
        args.push("!".into());
    }
}

fn push(args: &mut Vec<String>, words: &[&str]) {
    args.extend(words.iter().map(|s| s.to_string()));
}

/// A `--ctstate`/`--state` list: NEW, ESTABLISHED, RELATED, INVALID mostly, UNTRACKED, and
/// (conntrack only) SNAT and DNAT.
fn ct_states(rng: &mut Rng, conntrack: bool) -> String {
    let all: &[&str] = if conntrack {
        &[
            "NEW",
            "ESTABLISHED",
            "RELATED",
            "INVALID",
            "UNTRACKED",
            "SNAT",
            "DNAT",
        ]
    } else {
        &["NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED"]
    };
    let mut v: Vec<&str> = Vec::new();
    for _ in 0..rng.range(1, 3) {
        let s = if rng.chance(80) {
            all[rng.below(4) as usize]
        } else {
            *rng.pick(all)
        };
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v.join(",")
}

/// `-m conntrack` with one to three of its options (each invertible but `--ctdir`).
fn conntrack_match(rng: &mut Rng, a: &mut Vec<String>, nets: &[(u32, u32)], ports: &[u16]) {
    push(a, &["-m", "conntrack"]);
    let n = rng.range(1, 3);
    let mut used: Vec<u64> = Vec::new();
    for _ in 0..n {
        let k = match rng.below(100) {
            0..=44 => 0,
            45..=52 => 1,
            53..=66 => 2,
            67..=76 => 3,
            77..=86 => 4,
            _ => 5,
        };
        if used.contains(&k) {
            continue;
        }
        used.push(k);
        match k {
            0 => {
                inv(rng, a, 15);
                push(a, &["--ctstate", &ct_states(rng, true)]);
            }
            1 => {
                inv(rng, a, 20);
                push(
                    a,
                    &[
                        "--ctproto",
                        *rng.pick(&["tcp", "udp", "icmp", "6", "17", "47"]),
                    ],
                );
            }
            2 => {
                inv(rng, a, 20);
                let opt = *rng.pick(&["--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst"]);
                push(a, &[opt, &addr_word(rng, nets)]);
            }
            3 => {
                inv(rng, a, 20);
                let opt = *rng.pick(&[
                    "--ctorigsrcport",
                    "--ctorigdstport",
                    "--ctreplsrcport",
                    "--ctrepldstport",
                ]);
                let p = *rng.pick(ports);
                let w = if rng.chance(30) {
                    format!("{p}:{}", p.saturating_add(rng.below(500) as u16))
                } else {
                    p.to_string()
                };
                push(a, &[opt, &w]);
            }
            4 => {
                inv(rng, a, 20);
                let all = ["NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED"];
                let mut v: Vec<&str> = Vec::new();
                for _ in 0..rng.range(1, 2) {
                    let s = *rng.pick(&all);
                    if !v.contains(&s) {
                        v.push(s);
                    }
                }
                push(a, &["--ctstatus", &v.join(",")]);
            }
            _ => push(a, &["--ctdir", *rng.pick(&["ORIGINAL", "REPLY"])]),
        }
    }
}

/// `-j REJECT` with a random `--reject-with` (`tcp-reset` only where the rule says `-p tcp`,
/// as `reject_tg_check` demands).
fn reject_target(rng: &mut Rng, a: &mut Vec<String>, tcp: bool) {
    push(a, &["-j", "REJECT"]);
    if tcp && rng.chance(50) {
        push(a, &["--reject-with", *rng.pick(&["tcp-reset", "tcp-rst"])]);
    } else if rng.chance(75) {
        let with = *rng.pick(&[
            "icmp-net-unreachable",
            "icmp-host-unreachable",
            "icmp-port-unreachable",
            "icmp-proto-unreachable",
            "icmp-net-prohibited",
            "icmp-host-prohibited",
            "icmp-admin-prohibited",
            "net-unreach",
            "host-prohib",
        ]);
        push(a, &["--reject-with", with]);
    }
}

/// `-j LOG` with random prefix, level and flags.
fn log_target(rng: &mut Rng, a: &mut Vec<String>) {
    push(a, &["-j", "LOG"]);
    if rng.chance(70) {
        const CHARS: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 :-_[]=.";
        let n = rng.range(1, 29) as usize;
        let mut p: String = (0..n).map(|_| char::from(*rng.pick(CHARS))).collect();
        if rng.chance(60) {
            p.truncate(28);
            p.push(' ');
        }
        push(a, &["--log-prefix", &p]);
    }
    if rng.chance(60) {
        let l = *rng.pick(&[
            "0", "1", "2", "3", "4", "5", "6", "7", "emerg", "alert", "crit", "error", "warning",
            "notice", "info", "debug",
        ]);
        push(a, &["--log-level", l]);
    }
    for f in [
        "--log-tcp-sequence",
        "--log-tcp-options",
        "--log-ip-options",
        "--log-macdecode",
    ] {
        if rng.chance(25) {
            a.push(f.to_string());
        }
    }
}

/// A random rule; unconditional ones (which shadow everything after them) are kept rare.
fn random_rule(
    rng: &mut Rng,
    chain: &str,
    later: &[String],
    nets: &[(u32, u32)],
    ports: &[u16],
    stateful: bool,
) -> Rule {
    loop {
        let r = random_rule_once(rng, chain, later, nets, ports, stateful);
        let conditions = r
            .args
            .iter()
            .filter(|a| a.starts_with('-') && !matches!(a.as_str(), "-j" | "-g"))
            .count();
        if conditions > 0 || rng.chance(20) {
            return r;
        }
    }
}

fn random_rule_once(
    rng: &mut Rng,
    chain: &str,
    later: &[String],
    nets: &[(u32, u32)],
    ports: &[u16],
    stateful: bool,
) -> Rule {
    let mut a: Vec<String> = Vec::new();
    if rng.chance(30) {
        inv(rng, &mut a, 25);
        push(&mut a, &["-s", &addr_word(rng, nets)]);
    }
    if rng.chance(30) {
        inv(rng, &mut a, 25);
        push(&mut a, &["-d", &addr_word(rng, nets)]);
    }
    if chain != "OUTPUT" && rng.chance(25) {
        inv(rng, &mut a, 25);
        push(&mut a, &["-i", *rng.pick(&IFACE_WORDS)]);
    }
    if chain != "INPUT" && rng.chance(25) {
        inv(rng, &mut a, 25);
        push(&mut a, &["-o", *rng.pick(&IFACE_WORDS)]);
    }
    let mut proto = None;
    if rng.chance(65) {
        let p = match rng.below(100) {
            0..=36 => "tcp",
            37..=61 => "udp",
            62..=76 => "icmp",
            77..=80 => "all",
            81..=84 => "sctp",
            85..=88 => "47",
            89..=92 => "0",
            _ => *rng.pick(&["2", "50", "51", "255", "136", "89"]),
        };
        let inverted = p != "0" && p != "all" && rng.chance(12);
        if inverted {
            a.push("!".into());
        }
        push(&mut a, &["-p", p]);
        if !inverted {
            proto = Some(p);
        }
    }
    if rng.chance(8) {
        inv(rng, &mut a, 40);
        a.push("-f".into());
    }
    match proto {
        Some("tcp") if rng.chance(70) => {
            push(&mut a, &["-m", "tcp"]);
            port_words(rng, &mut a, ports, (45, 60));
            match rng.below(10) {
                0..=2 => {
                    inv(rng, &mut a, 20);
                    a.push("--tcp-flags".into());
                    a.extend(flags_word(rng).split(' ').map(String::from));
                }
                3 => {
                    inv(rng, &mut a, 30);
                    a.push("--syn".into());
                }
                4 => {
                    inv(rng, &mut a, 25);
                    push(
                        &mut a,
                        &[
                            "--tcp-option",
                            &rng.pick(&[2u8, 3, 4, 8, 1, 5, 30, 255]).to_string(),
                        ],
                    );
                }
                _ => {}
            }
        }
        Some("udp") if rng.chance(70) => {
            push(&mut a, &["-m", "udp"]);
            port_words(rng, &mut a, ports, (50, 70));
        }
        Some("icmp") if rng.chance(70) => {
            push(&mut a, &["-m", "icmp"]);
            inv(rng, &mut a, 20);
            let t = match rng.below(6) {
                0 => "any".to_string(),
                1 => rng
                    .pick(&[
                        "echo-request",
                        "echo-reply",
                        "port-unreachable",
                        "time-exceeded",
                        "fragmentation-needed",
                    ])
                    .to_string(),
                2 => format!("{}/{}", rng.pick(&[3u8, 5, 11, 12]), rng.below(6)),
                _ => rng.pick(&[0u8, 3, 8, 11, 13, 30]).to_string(),
            };
            push(&mut a, &["--icmp-type", &t]);
        }
        _ => {}
    }
    if matches!(proto, Some("tcp") | Some("udp") | Some("sctp")) && rng.chance(30) {
        push(&mut a, &["-m", "multiport"]);
        inv(rng, &mut a, 20);
        let opt = *rng.pick(&["--sports", "--dports", "--ports"]);
        let mut items = Vec::new();
        let mut slots = 0;
        for _ in 0..rng.range(1, 8) {
            let p = *rng.pick(ports);
            if rng.chance(30) && slots + 2 <= 15 {
                // multiport wants lo < hi strictly.
                let p = p.min(65000);
                items.push(format!("{p}:{}", p + 1 + rng.below(300) as u16));
                slots += 2;
            } else if slots < 15 {
                items.push(p.to_string());
                slots += 1;
            }
        }
        push(&mut a, &[opt, &items.join(",")]);
    }
    if rng.chance(15) {
        push(&mut a, &["-m", "iprange"]);
        for opt in ["--src-range", "--dst-range"] {
            if rng.chance(60) {
                inv(rng, &mut a, 25);
                let (n, p) = *rng.pick(nets);
                let span = if p >= 32 { 1 } else { 1u32 << (32 - p).min(12) };
                let lo = n.wrapping_add(rng.below(u64::from(span)) as u32);
                let hi = lo.saturating_add(rng.below(u64::from(span)) as u32);
                push(
                    &mut a,
                    &[
                        opt,
                        &format!("{}-{}", Ipv4Addr::from(lo), Ipv4Addr::from(hi)),
                    ],
                );
            }
        }
        if a.last().map(String::as_str) == Some("iprange") {
            push(&mut a, &["--src-range", "10.0.0.1-10.0.0.200"]);
        }
    }
    if stateful && rng.chance(35) {
        conntrack_match(rng, &mut a, nets, ports);
    }
    if stateful && rng.chance(10) {
        push(&mut a, &["-m", "state"]);
        inv(rng, &mut a, 15);
        push(&mut a, &["--state", &ct_states(rng, false)]);
    }
    if rng.chance(8) {
        // address types of the firewall's own addresses, broadcasts and multicast
        push(&mut a, &["-m", "addrtype"]);
        let types = [
            "LOCAL",
            "UNICAST",
            "BROADCAST",
            "MULTICAST",
            "LOCAL,BROADCAST",
        ];
        let mut any = false;
        for opt in ["--src-type", "--dst-type"] {
            if rng.chance(60) {
                inv(rng, &mut a, 30);
                push(&mut a, &[opt, *rng.pick(&types)]);
                any = true;
            }
        }
        if !any {
            push(&mut a, &["--dst-type", "LOCAL"]);
        }
    }
    if rng.chance(8) {
        // rates no run lasts long enough to refill: the order of the packets decides
        let rate = *rng.pick(&["1/hour", "7/hour", "30/hour"]);
        let burst = 1 + rng.below(6);
        push(
            &mut a,
            &[
                "-m",
                "limit",
                "--limit",
                rate,
                "--limit-burst",
                &burst.to_string(),
            ],
        );
    }
    if proto == Some("tcp") && rng.chance(12) {
        // the MSS option's value (the match needs `-p tcp`, not inverted)
        push(&mut a, &["-m", "tcpmss"]);
        inv(rng, &mut a, 30);
        let x = *rng.pick(&[1u16, 536, 1000, 1220, 1360, 1400, 1460, 8960]);
        let word = if rng.chance(50) {
            x.to_string()
        } else {
            format!("{x}:{}", x.saturating_add(rng.below(1000) as u16))
        };
        push(&mut a, &["--mss", &word]);
    }
    if rng.chance(8) {
        recent_match(rng, &mut a);
    }
    if rng.chance(6) {
        hashlimit_match(rng, &mut a);
    }
    if rng.chance(10) {
        let c = format!("rule {}", rng.below(1000));
        push(&mut a, &["-m", "comment", "--comment", &c]);
    }
    if stateful && rng.chance(25) {
        if rng.chance(55) {
            reject_target(rng, &mut a, proto == Some("tcp"));
        } else {
            log_target(rng, &mut a);
        }
        return Rule {
            chain: chain.to_string(),
            args: a,
        };
    }
    match rng.below(100) {
        0..=29 => push(&mut a, &["-j", "ACCEPT"]),
        30..=54 => push(&mut a, &["-j", "DROP"]),
        55..=63 => push(&mut a, &["-j", "RETURN"]),
        64..=81 if !later.is_empty() => push(&mut a, &["-j", rng.pick(later).as_str()]),
        82..=89 if !later.is_empty() => push(&mut a, &["-g", rng.pick(later).as_str()]),
        _ => {}
    }
    Rule {
        chain: chain.to_string(),
        args: a,
    }
}

/// A random valid ruleset: random policies, up to four user chains called acyclically (jump
/// and goto), rules over every supported match with random inversions.
pub fn random_ruleset(idx: usize, rng: &mut Rng) -> Ruleset {
    random_ruleset_with_edits(idx, 0, rng)
}

/// A random ruleset, and with `packets > 0` sometimes iptables commands to run between its
/// packets (insert, append, delete, replace, flush, zero counters, change a policy), which
/// exercise SET_REPLACE with counters carried over by SET_ADD_COUNTERS.
pub fn random_ruleset_with_edits(idx: usize, packets: usize, rng: &mut Rng) -> Ruleset {
    random_ruleset_scaled(idx, packets, 1, rng)
}

/// `random_ruleset_with_edits` with `scale` times more rules per chain and user chains.
pub fn random_ruleset_scaled(idx: usize, packets: usize, scale: u64, rng: &mut Rng) -> Ruleset {
    let scale = scale.max(1);
    let nets: Vec<(u32, u32)> = (0..rng.range(2, 6))
        .map(|_| {
            let p = *rng.pick(&[8u32, 16, 24, 24, 28, 30, 32, 32]);
            (random_unicast(rng), p)
        })
        .collect();
    let ports: Vec<u16> = (0..rng.range(2, 6))
        .map(|_| {
            if rng.chance(60) {
                *rng.pick(&[22u16, 25, 53, 80, 123, 443, 8080, 0, 65535])
            } else {
                rng.next_u64() as u16
            }
        })
        .collect();
    // A third of the rulesets are stateful: connection tracking, REJECT and LOG in their
    // rules (replayed packet by packet in fresh namespaces, slower).
    let stateful = rng.chance(33);
    let n_user = rng.below(4 * scale + 1) as usize;
    let chains: Vec<String> = (0..n_user).map(|i| format!("chain{i}")).collect();
    let mut rs = Ruleset::empty(
        format!("random-{idx:03}"),
        std::array::from_fn(|_| {
            if rng.chance(50) {
                "ACCEPT".to_string()
            } else {
                "DROP".to_string()
            }
        }),
        chains.clone(),
    );
    if rng.chance(25) {
        rs.initial_counters = true;
        rs.name.push_str("-c");
    }
    for base in ["INPUT", "FORWARD", "OUTPUT"] {
        for _ in 0..rng.below(12 * scale + 1) {
            rs.rules
                .push(random_rule(rng, base, &chains, &nets, &ports, stateful));
        }
    }
    for (i, c) in chains.iter().enumerate() {
        for _ in 0..rng.range(0, 7 * scale + 1) {
            rs.rules.push(random_rule(
                rng,
                c,
                &chains[i + 1..],
                &nets,
                &ports,
                stateful,
            ));
        }
    }
    if packets > 0 && rng.chance(35) {
        let all: Vec<String> = ["INPUT", "FORWARD", "OUTPUT"]
            .iter()
            .map(|s| s.to_string())
            .chain(chains.iter().cloned())
            .collect();
        for _ in 0..rng.range(1, 3) {
            let ci = rng.below(all.len() as u64) as usize;
            let chain = all[ci].clone();
            // Jumps only to later user chains, as in the ruleset itself (no loops).
            let later: &[String] = if ci < 3 { &chains } else { &chains[ci - 2..] };
            let mut e: Vec<String> = Vec::new();
            match rng.below(13) {
                // Check for / delete an existing rule by its specification: iptables compares
                // the entries it reads back byte for byte with the rule it builds.
                10 | 11 if !rs.rules.is_empty() => {
                    let r = rng.pick(&rs.rules).clone();
                    e.extend([
                        if rng.chance(50) { "-C" } else { "-D" }.to_string(),
                        r.chain,
                    ]);
                    e.extend(r.args);
                }
                0 | 1 => {
                    e.extend(["-I".to_string(), chain.clone(), rng.range(1, 2).to_string()]);
                    e.extend(random_rule(rng, &chain, later, &nets, &ports, stateful).args);
                }
                2 => {
                    e.extend(["-A".to_string(), chain.clone()]);
                    e.extend(random_rule(rng, &chain, later, &nets, &ports, stateful).args);
                }
                3 => e.extend(["-D".to_string(), chain.clone(), "1".to_string()]),
                4 => e.push("-Z".to_string()),
                5 => e.extend(["-Z".to_string(), chain.clone()]),
                6 => e.extend(["-Z".to_string(), chain.clone(), "1".to_string()]),
                7 => e.extend([
                    "-P".to_string(),
                    rng.pick(&["INPUT", "FORWARD", "OUTPUT"]).to_string(),
                    rng.pick(&["ACCEPT", "DROP"]).to_string(),
                ]),
                8 => {
                    e.extend(["-R".to_string(), chain.clone(), "1".to_string()]);
                    e.extend(random_rule(rng, &chain, later, &nets, &ports, stateful).args);
                }
                _ => e.extend(["-F".to_string(), chain.clone()]),
            }
            rs.edits.push((rng.below(packets as u64 + 1) as usize, e));
        }
        rs.name.push_str("-e");
    }
    rs
}

/// `-m recent` on one of two lists, so that rules share them: every operation, with windows
/// no run outlasts (a minute or an hour: both sides see the same stamps count), hit counts,
/// `--rttl`, `--reap`, `--rdest`, masks (a list keeps the first rule's) and `!`.
fn recent_match(rng: &mut Rng, a: &mut Vec<String>) {
    push(a, &["-m", "recent"]);
    inv(rng, a, 15);
    let op = match rng.below(100) {
        0..=39 => "--set",
        40..=64 => "--rcheck",
        65..=84 => "--update",
        _ => "--remove",
    };
    push(a, &[op]);
    if matches!(op, "--rcheck" | "--update") {
        let seconds = rng.chance(50);
        if seconds {
            push(a, &["--seconds", *rng.pick(&["60", "3600"])]);
            if rng.chance(20) {
                push(a, &["--reap"]);
            }
        }
        if rng.chance(50) {
            push(a, &["--hitcount", &(1 + rng.below(6)).to_string()]);
        }
        if rng.chance(15) {
            push(a, &["--rttl"]);
        }
    }
    push(a, &["--name", *rng.pick(&["r0", "r1"])]);
    if rng.chance(30) {
        push(a, &["--rdest"]);
    }
    if rng.chance(30) {
        push(
            a,
            &[
                "--mask",
                *rng.pick(&["255.255.255.0", "255.255.0.0", "255.255.255.255"]),
            ],
        );
    }
}

/// `-m hashlimit` on one of two shared tables (the first rule naming one sets its key and
/// rate for every rule after it) or a rate-match table of its own (mixing the two modes in a
/// table is EINVAL): rates no run refills, a rate-match window of an hour, entries that do
/// not expire within a run, key modes and masks, `--hashlimit-above` and `!`. (Byte mode
/// refills within a second: not for a timing-free run.)
fn hashlimit_match(rng: &mut Rng, a: &mut Vec<String>) {
    push(a, &["-m", "hashlimit"]);
    let rate = *rng.pick(&["1/hour", "7/hour", "30/hour"]);
    if rng.chance(30) {
        push(a, &["--hashlimit-above", rate]);
    } else {
        inv(rng, a, 10);
        push(a, &["--hashlimit-upto", rate]);
    }
    push(a, &["--hashlimit-burst", &(1 + rng.below(6)).to_string()]);
    if rng.chance(75) {
        let mode = *rng.pick(&[
            "srcip",
            "dstip",
            "srcip,dstport",
            "dstip,dstport",
            "srcip,srcport,dstip,dstport",
        ]);
        push(a, &["--hashlimit-mode", mode]);
        if mode.contains("srcip") && rng.chance(30) {
            push(a, &["--hashlimit-srcmask", *rng.pick(&["8", "24", "31"])]);
        }
        if mode.contains("dstip") && rng.chance(30) {
            push(a, &["--hashlimit-dstmask", *rng.pick(&["16", "28"])]);
        }
    }
    if rng.chance(15) {
        push(
            a,
            &[
                "--hashlimit-name",
                "hr",
                "--hashlimit-rate-match",
                "--hashlimit-rate-interval",
                "3600",
            ],
        );
    } else {
        push(a, &["--hashlimit-name", *rng.pick(&["h0", "h1"])]);
    }
    push(a, &["--hashlimit-htable-expire", "3600000"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_rulesets_are_acyclic_and_reproducible() {
        let a = random_ruleset(1, &mut Rng::new(5));
        let b = random_ruleset(1, &mut Rng::new(5));
        assert_eq!(a, b);
        for s in 0..50 {
            let rs = random_ruleset(s, &mut Rng::new(s as u64));
            for r in &rs.rules {
                if let (Some(t), Some(from)) = (r.chain_target(), r.chain.strip_prefix("chain")) {
                    let to: usize = t.trim_start_matches("chain").parse().expect("chain number");
                    assert!(
                        to > from.parse::<usize>().expect("from"),
                        "cycle risk in {}",
                        rs.name
                    );
                }
            }
        }
    }

    /// The random rulesets use tcpmss (with `-p tcp`, as the kernel requires), and packets
    /// aimed at those rules carry MSS options.
    #[test]
    fn random_rulesets_draw_tcpmss_with_mss_options() {
        let mut rules = 0;
        let mut with_mss = 0;
        for s in 0..60 {
            let rs = random_ruleset(s, &mut Rng::new(s as u64));
            let mss: Vec<&Rule> = rs
                .rules
                .iter()
                .filter(|r| r.args.iter().any(|a| a == "tcpmss"))
                .collect();
            for r in &mss {
                let p = r.args.iter().position(|a| a == "-p").expect("-p");
                assert_eq!(r.args[p + 1], "tcp", "{:?}", r.args);
                assert!(p == 0 || r.args[p - 1] != "!", "{:?}", r.args);
            }
            rules += mss.len();
            if !mss.is_empty() {
                // an option of kind 2 and length 4 somewhere in a TCP header
                with_mss += packets_for(&rs, 200, &mut Rng::new(7))
                    .iter()
                    .filter(|x| {
                        let b = &x.bytes;
                        let ihl = usize::from(b[0] & 0xf) * 4;
                        b[9] == 6
                            && b.len() >= ihl + 24
                            && b[ihl + 20..].windows(2).any(|w| w == [2, 4])
                    })
                    .count();
            }
        }
        assert!(
            rules >= 5,
            "only {rules} tcpmss rules in 60 random rulesets"
        );
        assert!(with_mss >= 20, "only {with_mss} packets with an MSS option");
    }

    #[test]
    fn packets_have_valid_paths() {
        let rs = random_ruleset(3, &mut Rng::new(3));
        let p = packets_for(&rs, 500, &mut Rng::new(9));
        assert_eq!(p.len(), 500);
        assert!(p
            .iter()
            .all(|x| x.path != Path::Input
                || u16::from_be_bytes([x.bytes[6], x.bytes[7]]) & 0x3fff == 0));
        assert!(p.iter().any(|x| x.path == Path::Output));
        assert!(p
            .iter()
            .any(|x| u16::from_be_bytes([x.bytes[6], x.bytes[7]]) & 0x1fff != 0));
    }
}
