//! Builders of the emitter's IR for tests and benchmarks: matches, rules, and whole chains
//! (feature `ir`).

use std::net::Ipv4Addr;

use emitter::ir::{
    Action, Chain, ChainId, Hook, IcmpMatch, Match, Policy, PortRange, Program, Rule, TcpMatch,
    UdpMatch, Verdict,
};

/// A rule: its matches, its action, its counter slot.
pub fn rule(matches: Vec<Match>, action: Action, counter: u32) -> Rule {
    Rule {
        matches,
        action,
        counter,
    }
}

/// An IPv4 program at `hook` made of `chains`, named and in order (chain `i` is `ChainId(i)`,
/// the first the entry), with `policy`: [`Program::single`] with more chains.
pub fn chained<N: Into<String>>(
    hook: Hook,
    chains: impl IntoIterator<Item = (N, Vec<Rule>)>,
    policy: Policy,
) -> Program {
    let mut p = Program::single(hook, Vec::new(), policy);
    p.chains = chains
        .into_iter()
        .zip(0..)
        .map(|((name, rules), i)| {
            let name = name.into();
            (ChainId(i), Chain { name, rules })
        })
        .collect();
    p
}

/// The benchmarks' chain: rule `i` of `n` is `matches(i) -j DROP` (counter `i`), then an
/// ACCEPT rule (counter `n`); the policy DROP (counter `n + 1`).
pub fn drop_list(hook: Hook, n: usize, matches: impl Fn(usize) -> Vec<Match>) -> Program {
    let mut rules: Vec<Rule> = (0..n)
        .map(|i| rule(matches(i), Action::Drop, i as u32))
        .collect();
    rules.push(rule(vec![], Action::Accept, n as u32));
    Program::single(
        hook,
        rules,
        Policy {
            verdict: Verdict::Drop,
            counter: n as u32 + 1,
        },
    )
}

/// `[!] --icmp-type type/code_min:code_max` (type 0xff: any).
pub fn icmpm(icmp_type: u8, code_min: u8, code_max: u8, invert: bool) -> Match {
    Match::Icmp(IcmpMatch {
        icmp_type,
        code_min,
        code_max,
        invert,
    })
}

/// An address and the mask of a `/bits` prefix.
pub fn net(a: [u8; 4], bits: u32) -> (Ipv4Addr, Ipv4Addr) {
    let m = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (Ipv4Addr::from(a), Ipv4Addr::from(m))
}

/// `[!] -s a/bits`.
pub fn src(a: [u8; 4], bits: u32, invert: bool) -> Match {
    let (addr, mask) = net(a, bits);
    Match::Ipv4Src { addr, mask, invert }
}

/// `[!] -d a/bits`.
pub fn dst(a: [u8; 4], bits: u32, invert: bool) -> Match {
    let (addr, mask) = net(a, bits);
    Match::Ipv4Dst { addr, mask, invert }
}

/// `[!] -p p`.
pub fn proto(p: u8, invert: bool) -> Match {
    Match::Protocol { proto: p, invert }
}

/// The ports `lo:hi`.
pub fn pr(lo: u16, hi: u16) -> PortRange {
    PortRange { lo, hi }
}

/// `-m tcp` with these ports, no flags, no option.
pub fn tcpm(sport: PortRange, dport: PortRange) -> TcpMatch {
    TcpMatch {
        sport,
        dport,
        flags_mask: 0,
        flags_cmp: 0,
        option: 0,
        inv_sport: false,
        inv_dport: false,
        inv_flags: false,
        inv_option: false,
    }
}

/// `-m udp` with these ports.
pub fn udpm(sport: PortRange, dport: PortRange, inv_sport: bool, inv_dport: bool) -> Match {
    Match::Udp(UdpMatch {
        sport,
        dport,
        inv_sport,
        inv_dport,
    })
}

/// [`drop_list`] of netbench's arbitrary kind: five shapes in turn, no two neighbours alike (`-s
/// 10.1.x.0/M`, `! -s 10.200.0.0/M`, `-p tcp --dport P:Q`, `-i arbJ`, `-p udp --dport P:Q`),
/// none matching udp 10.200.0.1 -> 10.200.0.2:5001 from no interface.
pub fn arbitrary_list(hook: Hook, n: usize) -> Program {
    drop_list(hook, n, |i| {
        let j = i / 5;
        let len = 24 + (j % 8) as u32;
        let lo = 6000 + (j % 50_000) as u16;
        let range = PortRange {
            lo,
            hi: lo + (j % 100) as u16 + 1,
        };
        let udp5001 = || {
            vec![
                proto(17, false),
                udpm(PortRange::ANY, PortRange::one(5001), false, false),
            ]
        };
        let mut m = match i % 5 {
            0 => {
                let a = u32::from_be_bytes([10, 1, (i >> 8) as u8, i as u8]);
                let mask = u32::MAX << (32 - len);
                vec![src((a & mask).to_be_bytes(), len, false)]
            }
            1 => vec![src([10, 200, 0, 0], len, true)],
            2 => return vec![proto(6, false), Match::Tcp(tcpm(PortRange::ANY, range))],
            3 => vec![Match::InIface(emitter::ir::Iface::iptables(
                &format!("arb{}", j % 10_000),
                false,
            ))],
            _ => return vec![proto(17, false), udpm(PortRange::ANY, range, false, false)],
        };
        m.extend(udp5001());
        m
    })
}
