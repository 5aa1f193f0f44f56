//! The benchmark's rulesets, rendered once as an iptables-save file and once as the equivalent
//! nftables file, so that every backend is loaded from the same rule list.
//!
//! Every ruleset is N rules that do not match the benchmark's traffic (UDP 10.200.0.1 ->
//! 10.200.0.2:5001), then one final rule that accepts it, so each packet crosses all N rules
//! and the final rule's counter must equal the packets sent.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Source address of the benchmark's packets.
pub const SRC: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// Destination address of the benchmark's packets (the firewall namespace's address).
pub const DST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// Destination UDP port of the benchmark's packets.
pub const DPORT: u16 = 5001;
/// Name of the nftables named counter on the final rule.
pub const NFT_COUNTER: &str = "final";

/// Which field makes the N filler rules fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKind {
    /// `-s 10.1.x.y/32 -p udp -m udp --dport 5001 -j DROP`: fails on the source address.
    Addr,
    /// `-p udp -m udp --dport P -j DROP` with P != 5001: fails on the transport header.
    Port,
    /// `-s 10.1.x.y/M -p udp -m udp --dport P -j DROP`, the address, its mask (/32 and /31 in
    /// turn) and the port changing from rule to rule: fails on the address like `Addr`, but
    /// no two neighbours have the same shape, so a compiler cannot turn them into lookups (a
    /// chain of arbitrary rules, as the large-ruleset goals have them).
    Mixed,
}

impl RuleKind {
    /// Short name used in namespace names, tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Addr => "addr",
            RuleKind::Port => "port",
            RuleKind::Mixed => "mixed",
        }
    }

    /// Parse a name produced by [`RuleKind::name`].
    pub fn from_name(s: &str) -> Option<RuleKind> {
        match s {
            "addr" => Some(RuleKind::Addr),
            "port" => Some(RuleKind::Port),
            "mixed" => Some(RuleKind::Mixed),
            _ => None,
        }
    }
}

/// One rule of the benchmark's INPUT chain, in a form both front ends can render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `-s ADDR/src_len`, if any.
    pub src: Option<Ipv4Addr>,
    /// Prefix length of `src`.
    pub src_len: u8,
    /// `-d ADDR/32`, if any.
    pub dst: Option<Ipv4Addr>,
    /// `-p udp -m udp --dport PORT` (every rule here is a UDP rule).
    pub dport: u16,
    /// ACCEPT (true) or DROP (false).
    pub accept: bool,
}

/// Largest filler rule count the address plan supports (10.1.0.0 .. 10.1.255.255).
pub const MAX_RULES: usize = 65_536;

/// The i-th filler rule of a kind; never matches the benchmark's traffic.
pub fn filler(kind: RuleKind, i: usize) -> Rule {
    match kind {
        RuleKind::Addr => Rule {
            // Distinct /32s outside 10.200.0.0/24; the port is the real one so that only the
            // address fails.
            src: Some(Ipv4Addr::new(
                10,
                1,
                ((i >> 8) & 0xff) as u8,
                (i & 0xff) as u8,
            )),
            src_len: 32,
            dst: None,
            dport: DPORT,
            accept: false,
        },
        RuleKind::Mixed => Rule {
            // odd rules: the /31 holding the address (its network address, as iptables-save
            // prints it)
            src: filler(RuleKind::Addr, i)
                .src
                .map(|a| Ipv4Addr::from(u32::from(a) & !(i as u32 & 1))),
            src_len: 32 - (i & 1) as u8,
            dst: None,
            dport: filler(RuleKind::Port, i).dport,
            accept: false,
        },
        RuleKind::Port => {
            // Ports 6000.. wrapping inside 6000..=65535: never 5001.
            let port = 6000 + (i % (65_536 - 6000));
            Rule {
                src: None,
                src_len: 32,
                dst: None,
                dport: port as u16,
                accept: false,
            }
        }
    }
}

/// The rule that accepts the benchmark's traffic, last in the chain.
pub fn final_rule() -> Rule {
    Rule {
        src: Some(SRC),
        src_len: 32,
        dst: Some(DST),
        dport: DPORT,
        accept: true,
    }
}

/// The rule appended to a loaded ruleset to time a one-rule change (it goes after the final
/// rule, so it changes no verdict).
pub fn appended_rule() -> Rule {
    Rule {
        src: Some(Ipv4Addr::new(10, 3, 0, 1)),
        src_len: 32,
        dst: None,
        dport: DPORT,
        accept: false,
    }
}

/// All rules of an N-rule ruleset: N fillers then the final ACCEPT.
pub fn rules(kind: RuleKind, n: usize) -> Vec<Rule> {
    let mut v: Vec<Rule> = (0..n).map(|i| filler(kind, i)).collect();
    v.push(final_rule());
    v
}

/// The iptables arguments of one rule after `-A INPUT` (as iptables-save prints them).
pub fn ipt_args(r: &Rule) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(s) = r.src {
        a.extend(["-s".to_string(), format!("{s}/{}", r.src_len)]);
    }
    if let Some(d) = r.dst {
        a.extend(["-d".to_string(), format!("{d}/32")]);
    }
    a.extend(["-p", "udp", "-m", "udp", "--dport"].map(String::from));
    a.push(r.dport.to_string());
    a.extend([
        "-j".to_string(),
        if r.accept { "ACCEPT" } else { "DROP" }.to_string(),
    ]);
    a
}

/// The ruleset as an iptables-save file (filter table only), for iptables-legacy-restore.
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

/// The nft expression of one rule (the part after `add rule ip filter input`). Only the final
/// rule carries a counter (named, so that it can be read without listing 50,000 rules), as
/// an nftables user would write it: iptables counts every rule, nftables only where asked.
pub fn nft_expr(r: &Rule) -> String {
    let mut e = String::new();
    match (r.src, r.src_len) {
        (Some(s), 32) => {
            let _ = write!(e, "ip saddr {s} ");
        }
        (Some(s), len) => {
            let _ = write!(e, "ip saddr {s}/{len} ");
        }
        (None, _) => {}
    }
    if let Some(d) = r.dst {
        let _ = write!(e, "ip daddr {d} ");
    }
    let _ = write!(e, "udp dport {} ", r.dport);
    if r.accept {
        let _ = write!(e, "counter name \"{NFT_COUNTER}\" accept");
    } else {
        e.push_str("drop");
    }
    e
}

/// The same ruleset for `nft -f`: table ip filter, one base chain at the INPUT hook.
pub fn nft_file(rules: &[Rule]) -> String {
    let mut s = String::with_capacity(128 + rules.len() * 48);
    s.push_str("table ip filter {\n");
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
        for kind in [RuleKind::Addr, RuleKind::Port, RuleKind::Mixed] {
            for i in 0..MAX_RULES {
                let r = filler(kind, i);
                let src_ok = r.src.is_none_or(|s| s == SRC);
                let dst_ok = r.dst.is_none_or(|d| d == DST);
                assert!(
                    !(src_ok && dst_ok && r.dport == DPORT),
                    "{kind:?} {i} matches"
                );
            }
        }
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
        assert!(nft_file(&rules(RuleKind::Mixed, 2))
            .contains("ip saddr 10.1.0.0/31 udp dport 6001 drop"));
        let p = iptables_save(&rules(RuleKind::Port, 1));
        assert!(p.contains("-A INPUT -p udp -m udp --dport 6000 -j DROP\n"));
    }

    #[test]
    fn nft_file_has_one_rule_per_ipt_rule() {
        let r = rules(RuleKind::Port, 3);
        let s = nft_file(&r);
        let n = s.lines().filter(|l| l.contains("udp dport")).count();
        assert_eq!(n, r.len());
        assert!(s.contains(
            "ip saddr 10.200.0.1 ip daddr 10.200.0.2 udp dport 5001 counter name \"final\" accept"
        ));
        assert!(s.contains("\t\tudp dport 6002 drop\n"));
    }

    #[test]
    fn kind_names_round_trip() {
        for k in [RuleKind::Addr, RuleKind::Port, RuleKind::Mixed] {
            assert_eq!(RuleKind::from_name(k.name()), Some(k));
        }
        assert_eq!(RuleKind::from_name("x"), None);
    }
}
