//! The benchmark's rulesets, rendered once as an iptables-save file and once as the equivalent
//! nftables file, so that every backend is loaded from the same rule list.
//!
//! Every ruleset is N rules that do not match the benchmark's traffic (UDP 10.200.0.1 ->
//! 10.200.0.2:5001, or `fd00:200::1 -> [fd00:200::2]:5001` for IPv6), then one final rule that
//! accepts it, so each packet crosses all N rules and the final rule's counter must equal the
//! packets sent. The IPv6 rulesets are the IPv4 ones with each address mapped (10.1.x.y/32 ->
//! fd00:1::xy/128, /31 -> /127), rendered for ip6tables-legacy-restore and nftables' `ip6`
//! family.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Source address of the benchmark's packets.
pub const SRC: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// Destination address of the benchmark's packets (the firewall namespace's address).
pub const DST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// Source address of the benchmark's IPv6 packets.
pub const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);
/// Destination address of the benchmark's IPv6 packets (the firewall namespace's address).
pub const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2);
/// Destination UDP port of the benchmark's packets.
pub const DPORT: u16 = 5001;
/// Name of the nftables named counter on the final rule.
pub const NFT_COUNTER: &str = "final";

/// Which IP version a run's traffic and rulesets use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// iptables, nftables `ip`, `Ip InReceives`.
    Ipv4,
    /// ip6tables, nftables `ip6`, `Ip6InReceives`.
    Ipv6,
}

impl Family {
    /// Name on the command line (`--family`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// Parse a name produced by [`Family::name`] (or `4`, `6`).
    pub fn from_name(s: &str) -> Option<Family> {
        match s {
            "ipv4" | "4" | "inet" => Some(Family::Ipv4),
            "ipv6" | "6" | "inet6" => Some(Family::Ipv6),
            _ => None,
        }
    }

    /// How the results name it.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }

    /// Source address of the benchmark's packets.
    pub fn src(self) -> IpAddr {
        match self {
            Family::Ipv4 => SRC.into(),
            Family::Ipv6 => SRC6.into(),
        }
    }

    /// Destination address of the benchmark's packets.
    pub fn dst(self) -> IpAddr {
        match self {
            Family::Ipv4 => DST.into(),
            Family::Ipv6 => DST6.into(),
        }
    }

    /// Prefix length of one host address.
    pub fn host_len(self) -> u8 {
        match self {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        }
    }

    /// The iptables front end: `iptables` or `ip6tables` (`-legacy`, `-restore` appended by
    /// the callers).
    pub fn iptables(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }

    /// The nftables family of the benchmark's table.
    pub fn nft(self) -> &'static str {
        match self {
            Family::Ipv4 => "ip",
            Family::Ipv6 => "ip6",
        }
    }

    /// The netfilter protocol family (`NFPROTO_IPV4`, `NFPROTO_IPV6`).
    pub fn nfproto(self) -> u32 {
        match self {
            Family::Ipv4 => 2,
            Family::Ipv6 => 10,
        }
    }

    /// The snmp counter of packets the firewall namespace received (file, name in it).
    pub fn in_receives_name(self) -> &'static str {
        match self {
            Family::Ipv4 => "Ip InReceives",
            Family::Ipv6 => "Ip6InReceives",
        }
    }

    /// Filler address `i` as this family writes it: 10.1.x.y or fd00:1::xy (`i` below
    /// [`MAX_RULES`]).
    fn filler_addr(self, i: usize) -> IpAddr {
        match self {
            Family::Ipv4 => Ipv4Addr::new(10, 1, ((i >> 8) & 0xff) as u8, (i & 0xff) as u8).into(),
            Family::Ipv6 => Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, (i & 0xffff) as u16).into(),
        }
    }
}

/// Which field makes the N filler rules fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKind {
    /// `-s 10.1.x.y/32 -p udp -m udp --dport 5001 -j DROP`: fails on the source address.
    Addr,
    /// `-p udp -m udp --dport P -j DROP` with P != 5001: fails on the transport header.
    Port,
    /// `-s 10.1.x.y/M -p udp -m udp --dport P -j DROP`, the address, its mask (/32 and /31 in
    /// turn) and the port changing from rule to rule: fails on the address like `Addr`, but
    /// no two neighbours have the same shape. A compiler that looks rules up by key must
    /// handle several masks in one run (bpfilter's runs with classes: one class per mask).
    Mixed,
    /// Five shapes in turn, each failing on something else: `-s 10.1.x.0/M` (M 24 to 31),
    /// `! -s 10.200.0.0/M` (holding the sender), `-p tcp --dport P:Q`, `-i arbJ`,
    /// `-p udp --dport P:Q` (P > 5001): masks, negations, ranges, protocols and interfaces,
    /// no two neighbours alike, as the large-ruleset goals have them.
    Arbitrary,
}

impl RuleKind {
    /// Short name used in namespace names, tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Addr => "addr",
            RuleKind::Port => "port",
            RuleKind::Mixed => "mixed",
            RuleKind::Arbitrary => "arbitrary",
        }
    }

    /// Parse a name produced by [`RuleKind::name`].
    pub fn from_name(s: &str) -> Option<RuleKind> {
        match s {
            "addr" => Some(RuleKind::Addr),
            "port" => Some(RuleKind::Port),
            "mixed" => Some(RuleKind::Mixed),
            "arbitrary" => Some(RuleKind::Arbitrary),
            _ => None,
        }
    }
}

/// One rule of the benchmark's INPUT chain, in a form both front ends can render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `-s ADDR/src_len`, if any.
    pub src: Option<IpAddr>,
    /// Prefix length of `src`.
    pub src_len: u8,
    /// `! -s`.
    pub src_invert: bool,
    /// `-d ADDR/32` (`/128`), if any.
    pub dst: Option<IpAddr>,
    /// `-i NAME`, if any.
    pub iface: Option<u16>,
    /// `-p tcp -m tcp` instead of `-p udp -m udp`.
    pub tcp: bool,
    /// `--dport PORT` (`PORT:dport_hi` when `dport_hi` is above it).
    pub dport: u16,
    /// Last port of a range.
    pub dport_hi: u16,
    /// ACCEPT (true) or DROP (false).
    pub accept: bool,
}

impl Rule {
    /// `[-s src/src_len] -p udp -m udp --dport dport -j DROP`.
    fn udp(src: Option<IpAddr>, src_len: u8, dport: u16) -> Rule {
        Rule {
            src,
            src_len,
            src_invert: false,
            dst: None,
            iface: None,
            tcp: false,
            dport,
            dport_hi: dport,
            accept: false,
        }
    }
}

/// `a` under a prefix of `len` bits (the network address iptables-save prints).
fn network(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Ipv4Addr::from(u32::from(v) & m).into()
        }
        IpAddr::V6(v) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            Ipv6Addr::from(u128::from(v) & m).into()
        }
    }
}

/// Name of interface `j` of the arbitrary kind (no interface of the benchmark's).
pub fn iface_name(j: u16) -> String {
    format!("arb{j}")
}

/// Largest filler rule count the address plan supports (10.1.0.0 .. 10.1.255.255).
pub const MAX_RULES: usize = 65_536;

/// The i-th filler rule of a kind; never matches the benchmark's traffic.
pub fn filler(kind: RuleKind, i: usize) -> Rule {
    filler_of(Family::Ipv4, kind, i)
}

/// The i-th filler rule of a kind for family `f`; never matches the benchmark's traffic.
pub fn filler_of(f: Family, kind: RuleKind, i: usize) -> Rule {
    match kind {
        // Distinct host addresses outside the benchmark's network; the port is the real one
        // so that only the address fails.
        RuleKind::Addr => Rule::udp(Some(f.filler_addr(i)), f.host_len(), DPORT),
        // Odd rules: the /31 (/127) holding the address, written as its network address (as
        // iptables-save prints it).
        RuleKind::Mixed => Rule::udp(
            Some(f.filler_addr(i & !1)),
            f.host_len() - (i & 1) as u8,
            filler_of(f, RuleKind::Port, i).dport,
        ),
        RuleKind::Port => {
            // Ports 6000.. wrapping inside 6000..=65535: never 5001.
            let port = 6000 + (i % (65_536 - 6000));
            Rule::udp(None, f.host_len(), port as u16)
        }
        RuleKind::Arbitrary => {
            let j = i / 5;
            // masks 8 bits above the host length down to one bit above it
            let len = f.host_len() - 8 + (j % 8) as u8;
            let lo = 6000 + (j % 50_000) as u16;
            let range = |tcp| Rule {
                tcp,
                dport_hi: lo + (j % 100) as u16 + 1,
                ..Rule::udp(None, f.host_len(), lo)
            };
            match i % 5 {
                0 => Rule::udp(Some(network(f.filler_addr(i), len)), len, DPORT),
                1 => Rule {
                    src_invert: true,
                    ..Rule::udp(Some(network(f.src(), len)), len, DPORT)
                },
                2 => range(true),
                3 => Rule {
                    iface: Some((j % 10_000) as u16),
                    ..Rule::udp(None, f.host_len(), DPORT)
                },
                _ => range(false),
            }
        }
    }
}

/// The rule that accepts the benchmark's traffic, last in the chain.
pub fn final_rule() -> Rule {
    final_rule_of(Family::Ipv4)
}

/// The rule that accepts the benchmark's traffic of family `f`, last in the chain.
pub fn final_rule_of(f: Family) -> Rule {
    Rule {
        dst: Some(f.dst()),
        accept: true,
        ..Rule::udp(Some(f.src()), f.host_len(), DPORT)
    }
}

/// The rule appended to a loaded ruleset to time a one-rule change (it goes after the final
/// rule, so it changes no verdict).
pub fn appended_rule() -> Rule {
    appended_rule_of(Family::Ipv4)
}

/// [`appended_rule`] for family `f` (10.3.0.1, fd00:3::1).
pub fn appended_rule_of(f: Family) -> Rule {
    let src: IpAddr = match f {
        Family::Ipv4 => Ipv4Addr::new(10, 3, 0, 1).into(),
        Family::Ipv6 => Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, 1).into(),
    };
    Rule::udp(Some(src), f.host_len(), DPORT)
}

/// All rules of an N-rule ruleset: N fillers then the final ACCEPT.
pub fn rules(kind: RuleKind, n: usize) -> Vec<Rule> {
    rules_of(Family::Ipv4, kind, n)
}

/// All rules of an N-rule ruleset of family `f`: N fillers then the final ACCEPT.
pub fn rules_of(f: Family, kind: RuleKind, n: usize) -> Vec<Rule> {
    let mut v: Vec<Rule> = (0..n).map(|i| filler_of(f, kind, i)).collect();
    v.push(final_rule_of(f));
    v
}

/// The iptables arguments of one rule after `-A INPUT` (as iptables-save prints them).
pub fn ipt_args(r: &Rule) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(s) = r.src {
        if r.src_invert {
            a.push("!".to_string());
        }
        a.extend(["-s".to_string(), format!("{s}/{}", r.src_len)]);
    }
    if let Some(d) = r.dst {
        a.extend(["-d".to_string(), format!("{d}/{}", host_len(d))]);
    }
    if let Some(i) = r.iface {
        a.extend(["-i".to_string(), iface_name(i)]);
    }
    let proto = if r.tcp { "tcp" } else { "udp" };
    a.extend(["-p", proto, "-m", proto, "--dport"].map(String::from));
    a.push(if r.dport_hi > r.dport {
        format!("{}:{}", r.dport, r.dport_hi)
    } else {
        r.dport.to_string()
    });
    a.extend([
        "-j".to_string(),
        if r.accept { "ACCEPT" } else { "DROP" }.to_string(),
    ]);
    a
}

/// Prefix length of one host address of `a`'s family.
fn host_len(a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The nft match keyword of `a`'s family (`ip`, `ip6`).
fn nft_keyword(a: IpAddr) -> &'static str {
    match a {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    }
}

/// The ruleset as an iptables-save file (filter table only), for iptables-legacy-restore or
/// ip6tables-legacy-restore (the format is the same; the addresses say which).
pub fn iptables_save(rules: &[Rule]) -> String {
    let mut s = String::with_capacity(64 + rules.len() * 64);
    s.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for r in rules {
        s.push_str("-A INPUT ");
        s.push_str(&ipt_args(r).join(" "));
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

/// The nft expression of one rule (the part after `add rule ip filter input`, or `ip6`). Only the final
/// rule carries a counter (named, so that it can be read without listing 50,000 rules), as
/// an nftables user would write it: iptables counts every rule, nftables only where asked.
pub fn nft_expr(r: &Rule) -> String {
    let mut e = String::new();
    let not = if r.src_invert { "!= " } else { "" };
    match r.src {
        Some(s) if r.src_len == host_len(s) => {
            let _ = write!(e, "{} saddr {not}{s} ", nft_keyword(s));
        }
        Some(s) => {
            let _ = write!(e, "{} saddr {not}{s}/{} ", nft_keyword(s), r.src_len);
        }
        None => {}
    }
    if let Some(d) = r.dst {
        let _ = write!(e, "{} daddr {d} ", nft_keyword(d));
    }
    if let Some(i) = r.iface {
        let _ = write!(e, "iifname \"{}\" ", iface_name(i));
    }
    let proto = if r.tcp { "tcp" } else { "udp" };
    if r.dport_hi > r.dport {
        let _ = write!(e, "{proto} dport {}-{} ", r.dport, r.dport_hi);
    } else {
        let _ = write!(e, "{proto} dport {} ", r.dport);
    }
    if r.accept {
        let _ = write!(e, "counter name \"{NFT_COUNTER}\" accept");
    } else {
        e.push_str("drop");
    }
    e
}

/// The same ruleset for `nft -f`: table ip (ip6) filter, one base chain at the INPUT hook.
pub fn nft_file(f: Family, rules: &[Rule]) -> String {
    let mut s = String::with_capacity(128 + rules.len() * 48);
    let _ = writeln!(s, "table {} filter {{", f.nft());
    let _ = writeln!(s, "\tcounter {NFT_COUNTER} {{\n\t}}");
    s.push_str("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
    for r in rules {
        s.push_str("\t\t");
        s.push_str(&nft_expr(r));
        s.push('\n');
    }
    s.push_str("\t}\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_never_match_the_traffic() {
        // what the kernel would test, field by field, against the benchmark's packet
        let matches = |f: Family, r: &Rule| {
            let src_in = r
                .src
                .is_none_or(|s| network(f.src(), r.src_len) == network(s, r.src_len));
            (src_in != r.src_invert)
                && r.dst.is_none_or(|d| d == f.dst())
                && r.iface.is_none()
                && !r.tcp
                && (r.dport..=r.dport.max(r.dport_hi)).contains(&DPORT)
        };
        for f in [Family::Ipv4, Family::Ipv6] {
            assert!(matches(f, &final_rule_of(f)), "the final rule matches");
            for kind in [
                RuleKind::Addr,
                RuleKind::Port,
                RuleKind::Mixed,
                RuleKind::Arbitrary,
            ] {
                for i in 0..MAX_RULES {
                    let r = filler_of(f, kind, i);
                    assert!(!matches(f, &r), "{f:?} {kind:?} {i} matches");
                }
            }
        }
    }

    #[test]
    fn arbitrary_rules_render_for_both_front_ends() {
        let rules = rules(RuleKind::Arbitrary, 10);
        let save = iptables_save(&rules);
        for line in [
            "-A INPUT -s 10.1.0.0/24 -p udp -m udp --dport 5001 -j DROP\n",
            "-A INPUT ! -s 10.200.0.0/24 -p udp -m udp --dport 5001 -j DROP\n",
            "-A INPUT -p tcp -m tcp --dport 6000:6001 -j DROP\n",
            "-A INPUT -i arb0 -p udp -m udp --dport 5001 -j DROP\n",
            "-A INPUT -p udp -m udp --dport 6000:6001 -j DROP\n",
            "-A INPUT -s 10.1.0.0/25 -p udp -m udp --dport 5001 -j DROP\n",
            "-A INPUT ! -s 10.200.0.0/25 -p udp -m udp --dport 5001 -j DROP\n",
            "-A INPUT -p tcp -m tcp --dport 6001:6003 -j DROP\n",
        ] {
            assert!(save.contains(line), "{line} in\n{save}");
        }
        let nft = nft_file(Family::Ipv4, &rules);
        for expr in [
            "ip saddr 10.1.0.0/24 udp dport 5001 drop",
            "ip saddr != 10.200.0.0/24 udp dport 5001 drop",
            "tcp dport 6000-6001 drop",
            "iifname \"arb0\" udp dport 5001 drop",
        ] {
            assert!(nft.contains(expr), "{expr} in\n{nft}");
        }
        let v6 = iptables_save(&rules_of(Family::Ipv6, RuleKind::Arbitrary, 2));
        assert!(v6.contains("-A INPUT ! -s fd00:200::/120 -p udp"), "{v6}");
    }

    #[test]
    fn address_fillers_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..MAX_RULES {
            assert!(seen.insert(filler(RuleKind::Addr, i).src));
        }
    }

    #[test]
    fn save_file_shape() {
        let s = iptables_save(&rules(RuleKind::Addr, 2));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(
            lines[4],
            "-A INPUT -s 10.1.0.0/32 -p udp -m udp --dport 5001 -j DROP"
        );
        assert_eq!(
            lines[5],
            "-A INPUT -s 10.1.0.1/32 -p udp -m udp --dport 5001 -j DROP"
        );
        assert_eq!(
            lines[6],
            "-A INPUT -s 10.200.0.1/32 -d 10.200.0.2/32 -p udp -m udp --dport 5001 -j ACCEPT"
        );
        assert_eq!(lines[7], "COMMIT");
        let m = iptables_save(&rules(RuleKind::Mixed, 3));
        assert!(m.contains("-A INPUT -s 10.1.0.0/32 -p udp -m udp --dport 6000 -j DROP\n"));
        assert!(m.contains("-A INPUT -s 10.1.0.0/31 -p udp -m udp --dport 6001 -j DROP\n"));
        assert!(m.contains("-A INPUT -s 10.1.0.2/32 -p udp -m udp --dport 6002 -j DROP\n"));
        assert!(nft_file(Family::Ipv4, &rules(RuleKind::Mixed, 2))
            .contains("ip saddr 10.1.0.0/31 udp dport 6001 drop"));
        let p = iptables_save(&rules(RuleKind::Port, 1));
        assert!(p.contains("-A INPUT -p udp -m udp --dport 6000 -j DROP\n"));
    }

    #[test]
    fn nft_file_has_one_rule_per_ipt_rule() {
        let r = rules(RuleKind::Port, 3);
        let s = nft_file(Family::Ipv4, &r);
        let n = s.lines().filter(|l| l.contains("udp dport")).count();
        assert_eq!(n, r.len());
        assert!(s.contains(
            "ip saddr 10.200.0.1 ip daddr 10.200.0.2 udp dport 5001 counter name \"final\" accept"
        ));
        assert!(s.contains("\t\tudp dport 6002 drop\n"));
    }

    #[test]
    fn ipv6_fillers_never_match_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for kind in [RuleKind::Addr, RuleKind::Port, RuleKind::Mixed] {
            for i in 0..MAX_RULES {
                let r = filler_of(Family::Ipv6, kind, i);
                assert!(r.src.is_none_or(|s| s.is_ipv6()), "{kind:?} {i}");
                let src_ok = r.src.is_none_or(|s| s == IpAddr::from(SRC6));
                assert!(!(src_ok && r.dport == DPORT), "{kind:?} {i} matches");
                if kind == RuleKind::Addr {
                    assert!(seen.insert(r.src));
                }
            }
        }
    }

    #[test]
    fn ip6tables_save_file_shape() {
        let s = iptables_save(&rules_of(Family::Ipv6, RuleKind::Addr, 2));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "*filter");
        // As ip6tables-legacy-save prints them (inet_ntop's compressed form).
        assert_eq!(
            lines[4],
            "-A INPUT -s fd00:1::/128 -p udp -m udp --dport 5001 -j DROP"
        );
        assert_eq!(
            lines[5],
            "-A INPUT -s fd00:1::1/128 -p udp -m udp --dport 5001 -j DROP"
        );
        assert_eq!(
            lines[6],
            "-A INPUT -s fd00:200::1/128 -d fd00:200::2/128 -p udp -m udp --dport 5001 -j ACCEPT"
        );
        assert_eq!(lines[7], "COMMIT");
        let m = iptables_save(&rules_of(Family::Ipv6, RuleKind::Mixed, 4));
        assert!(m.contains("-A INPUT -s fd00:1::/128 -p udp -m udp --dport 6000 -j DROP\n"));
        assert!(m.contains("-A INPUT -s fd00:1::/127 -p udp -m udp --dport 6001 -j DROP\n"));
        assert!(m.contains("-A INPUT -s fd00:1::2/128 -p udp -m udp --dport 6002 -j DROP\n"));
        assert!(m.contains("-A INPUT -s fd00:1::2/127 -p udp -m udp --dport 6003 -j DROP\n"));
        let p = iptables_save(&rules_of(Family::Ipv6, RuleKind::Port, 1));
        assert!(p.contains("-A INPUT -p udp -m udp --dport 6000 -j DROP\n"));
        // The filler at 0x1234 is written the way ip6tables prints it.
        assert_eq!(
            ipt_args(&filler_of(Family::Ipv6, RuleKind::Addr, 0x1234))[1],
            "fd00:1::1234/128"
        );
        assert_eq!(
            ipt_args(&appended_rule_of(Family::Ipv6))[..2],
            ["-s", "fd00:3::1/128"]
        );
    }

    #[test]
    fn nft_ip6_file_shape() {
        let r = rules_of(Family::Ipv6, RuleKind::Mixed, 2);
        let s = nft_file(Family::Ipv6, &r);
        assert!(s.starts_with("table ip6 filter {\n"), "{s}");
        assert!(s.contains("\t\tip6 saddr fd00:1:: udp dport 6000 drop\n"));
        assert!(s.contains("\t\tip6 saddr fd00:1::/127 udp dport 6001 drop\n"));
        assert!(s.contains(
            "ip6 saddr fd00:200::1 ip6 daddr fd00:200::2 udp dport 5001 counter name \"final\" accept"
        ));
        assert!(!s.contains(" ip saddr"), "{s}");
        assert_eq!(
            s.lines().filter(|l| l.contains("udp dport")).count(),
            r.len()
        );
        assert_eq!(
            nft_expr(&appended_rule_of(Family::Ipv6)),
            "ip6 saddr fd00:3::1 udp dport 5001 drop"
        );
        // The IPv4 table is unchanged.
        assert!(nft_file(Family::Ipv4, &rules(RuleKind::Addr, 0)).starts_with("table ip filter {"));
    }

    #[test]
    fn family_names_round_trip() {
        for f in [Family::Ipv4, Family::Ipv6] {
            assert_eq!(Family::from_name(f.name()), Some(f));
        }
        assert_eq!(Family::from_name("ipv5"), None);
        assert_eq!(Family::Ipv6.iptables(), "ip6tables");
        assert_eq!(Family::Ipv6.nfproto(), 10);
    }

    #[test]
    fn kind_names_round_trip() {
        for k in [RuleKind::Addr, RuleKind::Port, RuleKind::Mixed] {
            assert_eq!(RuleKind::from_name(k.name()), Some(k));
        }
        assert_eq!(RuleKind::from_name("x"), None);
    }
}
