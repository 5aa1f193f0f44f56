//! Rulesets in iptables-save format (filter table only): parsed into chains and rules so that
//! the minimizer can drop rules and chains, and mined for the values packets should hit.

use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The built-in chains of the filter table.
pub const BUILTIN: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];

/// One `-A CHAIN ...` line, split into shell words (quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Chain the rule is appended to.
    pub chain: String,
    /// Words after `-A CHAIN`.
    pub args: Vec<String>,
}

impl Rule {
    /// The chain this rule jumps (`-j`) or goes (`-g`) to, if it is a user chain name (not a
    /// verdict or a target extension the harness uses).
    pub fn chain_target(&self) -> Option<&str> {
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            if a == "-j" || a == "-g" || a == "--jump" || a == "--goto" {
                let t = it.next()?;
                if !matches!(
                    t.as_str(),
                    "ACCEPT" | "DROP" | "RETURN" | "REJECT" | "LOG" | "QUEUE"
                ) {
                    return Some(t);
                }
            }
        }
        None
    }
}

/// A filter-table ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// Name in reports (file stem or `random-N`).
    pub name: String,
    /// Policies of INPUT, FORWARD, OUTPUT.
    pub policies: [String; 3],
    /// User-defined chains in declaration order.
    pub chains: Vec<String>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// Load with `iptables-restore -c` and non-zero initial counters on every rule and policy
    /// (exercises SET_ADD_COUNTERS and the counters carried into a new table).
    pub initial_counters: bool,
    /// iptables commands run between packets: (number of packets replayed before it, args).
    /// Written as `#edit N ARGS` comment lines, which iptables-restore ignores.
    pub edits: Vec<(usize, Vec<String>)>,
    /// Replay packet by packet in order, in fresh namespaces, comparing the replies the
    /// firewall sends and the LOG lines too (`#stateful`; set for every ruleset that uses
    /// connection tracking, REJECT, LOG or the lines below).
    pub stateful: bool,
    /// Rules of other tables (`raw`, `nat`, `mangle`), loaded on both sides by the kernel's
    /// own iptables-legacy before the filter table: `#raw ARGS`, `#nat ARGS`, `#mangle ARGS`
    /// (e.g. `#raw -A PREROUTING -p udp --dport 53 -j CT --notrack` for untracked packets).
    pub extra: Vec<(String, Vec<String>)>,
    /// Sysctls of the firewall namespace, both sides: `#sysctl net/ipv4/icmp_ratemask=6168`.
    pub sysctls: Vec<(String, String)>,
}

/// Tables `Ruleset::extra` may name.
pub const EXTRA_TABLES: [&str; 3] = ["raw", "nat", "mangle"];

/// The initial counters `Ruleset::to_text` writes for entry `i` when `initial_counters` is set.
fn initial(i: usize) -> (u64, u64) {
    let p = 100 + 13 * i as u64;
    (p, p * 61 + 7)
}

/// Splits a line into words the way iptables-restore does (double quotes group, `\"` escapes).
pub fn split_words(line: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut have = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_q && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => {
                in_q = !in_q;
                have = true;
            }
            c if c.is_whitespace() && !in_q => {
                if have || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => cur.push(c),
        }
    }
    if in_q {
        bail!("unterminated quote in {line:?}");
    }
    if have || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/,+!=@".contains(c))
    {
        w.to_string()
    } else {
        format!("\"{}\"", w.replace('"', "\\\""))
    }
}

impl Ruleset {
    /// A ruleset with these policies (INPUT, FORWARD, OUTPUT) and user chains, and nothing
    /// else yet: no rule, edit, other table or sysctl.
    pub fn empty(name: String, policies: [String; 3], chains: Vec<String>) -> Ruleset {
        Ruleset {
            name,
            policies,
            chains,
            rules: Vec::new(),
            initial_counters: false,
            edits: Vec::new(),
            stateful: false,
            extra: Vec::new(),
            sysctls: Vec::new(),
        }
    }

    /// Parses an iptables-save file holding one `*filter` table.
    pub fn parse(name: &str, text: &str) -> Result<Ruleset> {
        let mut rs = Ruleset::empty(
            name.to_string(),
            ["ACCEPT".into(), "ACCEPT".into(), "ACCEPT".into()],
            Vec::new(),
        );
        let mut in_filter = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line == "#stateful" {
                rs.stateful = true;
                continue;
            }
            if let Some(kv) = line.strip_prefix("#sysctl ") {
                match kv.trim().split_once('=') {
                    Some((k, v)) => rs
                        .sysctls
                        .push((k.trim().to_string(), v.trim().to_string())),
                    None => bail!("{name}:{}: want #sysctl KEY=VALUE", n + 1),
                }
                continue;
            }
            if let Some((t, rest)) = line
                .strip_prefix('#')
                .and_then(|l| l.split_once(' '))
                .filter(|(t, _)| EXTRA_TABLES.contains(t))
            {
                rs.extra.push((t.to_string(), split_words(rest)?));
                continue;
            }
            if let Some(e) = line.strip_prefix("#edit ") {
                let w = split_words(e)?;
                let at = w.first().and_then(|x| x.parse().ok());
                match at {
                    Some(at) => rs.edits.push((at, w[1..].to_vec())),
                    None => bail!("{name}:{}: want #edit N ARGS", n + 1),
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(t) = line.strip_prefix('*') {
                if t != "filter" {
                    bail!("{name}:{}: only the filter table is supported", n + 1);
                }
                in_filter = true;
            } else if line == "COMMIT" {
                in_filter = false;
            } else if !in_filter {
                bail!("{name}:{}: outside *filter", n + 1);
            } else if let Some(decl) = line.strip_prefix(':') {
                let w: Vec<&str> = decl.split_whitespace().collect();
                let chain = w.first().copied().unwrap_or("");
                match BUILTIN.iter().position(|b| *b == chain) {
                    Some(i) => rs.policies[i] = w.get(1).copied().unwrap_or("ACCEPT").to_string(),
                    None => rs.chains.push(chain.to_string()),
                }
            } else {
                let line = match line.strip_prefix('[') {
                    Some(rest) => {
                        rs.initial_counters = true;
                        rest.split_once(']')
                            .map(|(_, r)| r.trim_start())
                            .unwrap_or(rest)
                    }
                    None => line,
                };
                let w = split_words(line)?;
                if w.len() < 2 || (w[0] != "-A" && w[0] != "--append") {
                    bail!("{name}:{}: expected -A CHAIN ...", n + 1);
                }
                rs.rules.push(Rule {
                    chain: w[1].clone(),
                    args: w[2..].to_vec(),
                });
            }
        }
        Ok(rs)
    }

    /// The iptables-restore text.
    pub fn to_text(&self) -> String {
        let mut s = String::from("*filter\n");
        for (i, b) in BUILTIN.iter().enumerate() {
            let (p, c) = if self.initial_counters {
                initial(1000 + i)
            } else {
                (0, 0)
            };
            let _ = writeln!(s, ":{b} {} [{p}:{c}]", self.policies[i]);
        }
        for c in &self.chains {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for (i, r) in self.rules.iter().enumerate() {
            if self.initial_counters {
                let (p, c) = initial(i);
                let _ = write!(s, "[{p}:{c}] ");
            }
            let _ = write!(s, "-A {}", r.chain);
            for a in &r.args {
                let _ = write!(s, " {}", quote(a));
            }
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        if self.stateful {
            s.push_str("#stateful\n");
        }
        for (k, v) in &self.sysctls {
            let _ = writeln!(s, "#sysctl {k}={v}");
        }
        for (t, args) in &self.extra {
            let _ = write!(s, "#{t}");
            for a in args {
                let _ = write!(s, " {}", quote(a));
            }
            s.push('\n');
        }
        for (at, args) in &self.edits {
            let _ = write!(s, "#edit {at}");
            for a in args {
                let _ = write!(s, " {}", quote(a));
            }
            s.push('\n');
        }
        s
    }

    /// True when the ruleset needs the stateful replay: connection tracking (`-m conntrack`,
    /// `-m state`), `-j REJECT`, `-j LOG`, other tables or sysctls.
    pub fn uses_stateful_features(&self) -> bool {
        !self.extra.is_empty()
            || !self.sysctls.is_empty()
            || self.rules.iter().any(|r| {
                r.args.windows(2).any(|w| {
                    (w[0] == "-m" && matches!(w[1].as_str(), "conntrack" | "state"))
                        || (w[0] == "-j" && matches!(w[1].as_str(), "REJECT" | "LOG"))
                })
            })
    }

    /// The `iptables-restore` text of the other tables (`*raw` ... `COMMIT`), empty if none.
    pub fn extra_text(&self) -> String {
        let mut s = String::new();
        for t in EXTRA_TABLES {
            if !self.extra.iter().any(|(x, _)| x == t) {
                continue;
            }
            let _ = writeln!(s, "*{t}");
            for (_, args) in self.extra.iter().filter(|(x, _)| x == t) {
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        s.push(' ');
                    }
                    s.push_str(&quote(a));
                }
                s.push('\n');
            }
            s.push_str("COMMIT\n");
        }
        s
    }

    /// Removes user chain `c`, its rules and every rule that jumps or goes to it.
    pub fn remove_chain(&mut self, c: &str) {
        self.chains.retain(|x| x != c);
        self.rules
            .retain(|r| r.chain != c && r.chain_target() != Some(c));
    }

    /// Values the ruleset mentions, for building packets that hit its rules.
    pub fn values(&self) -> Values {
        let mut v = Values::default();
        for r in &self.rules {
            let a = &r.args;
            let mut i = 0;
            while i < a.len() {
                let next = a.get(i + 1).map(String::as_str).unwrap_or("");
                match a[i].as_str() {
                    "-s" | "--source" | "-d" | "--destination" | "--ctorigsrc" | "--ctorigdst"
                    | "--ctreplsrc" | "--ctrepldst" => {
                        for part in next.split(',') {
                            v.add_net(part);
                        }
                    }
                    "--src-range" | "--dst-range" => {
                        if let Some((x, y)) = next.split_once('-') {
                            if let (Ok(x), Ok(y)) = (x.parse::<Ipv4Addr>(), y.parse::<Ipv4Addr>()) {
                                v.add_range(u32::from(x), u32::from(y));
                            }
                        }
                    }
                    "-p" | "--protocol" | "--ctproto" => {
                        if let Some(p) = proto_number(next) {
                            v.protos.push(p);
                        }
                    }
                    "--sport"
                    | "--dport"
                    | "--source-port"
                    | "--destination-port"
                    | "--sports"
                    | "--dports"
                    | "--ports"
                    | "--source-ports"
                    | "--destination-ports"
                    | "--ctorigsrcport"
                    | "--ctorigdstport"
                    | "--ctreplsrcport"
                    | "--ctrepldstport" => {
                        for part in next.split(',') {
                            let (x, y) = part.split_once(':').unwrap_or((part, part));
                            let x: u16 = x.parse().unwrap_or(0);
                            let y: u16 = if y.is_empty() {
                                65535
                            } else {
                                y.parse().unwrap_or(65535)
                            };
                            for p in [
                                x,
                                y,
                                x.wrapping_sub(1),
                                y.wrapping_add(1),
                                x.wrapping_add(1),
                            ] {
                                v.ports.push(p);
                            }
                        }
                    }
                    "--icmp-type" => {
                        if let Some(tc) = icmp_type(next) {
                            v.icmp.push(tc);
                            v.icmp.push((tc.0, tc.1.wrapping_add(1)));
                        }
                    }
                    "--tcp-flags" => {
                        let m = tcp_flags(next);
                        let c = tcp_flags(a.get(i + 2).map(String::as_str).unwrap_or(""));
                        v.flags.extend([c, m, c ^ 0x10, c | (m & !c & 0x3f), 0]);
                    }
                    "--syn" => v.flags.extend([0x02, 0x12, 0x03, 0x06]),
                    "--tcp-option" => {
                        if let Ok(k) = next.parse::<u8>() {
                            v.tcp_opts.push(k);
                        }
                    }
                    "--mss" => {
                        let (x, y) = next.split_once(':').unwrap_or((next, next));
                        let x: u16 = x.parse().unwrap_or(0);
                        let y: u16 = y.parse().unwrap_or(65535);
                        for m in [x, y, x.wrapping_sub(1), y.wrapping_add(1)] {
                            v.mss.push(m);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        v.addrs.sort();
        v.addrs.dedup();
        v.ports.sort();
        v.ports.dedup();
        v.protos.sort();
        v.protos.dedup();
        v
    }
}

/// Values mined from a ruleset.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Addresses at and around every network and range edge.
    pub addrs: Vec<u32>,
    /// Ports at and around every port and range edge.
    pub ports: Vec<u16>,
    /// Protocol numbers.
    pub protos: Vec<u8>,
    /// ICMP (type, code) pairs.
    pub icmp: Vec<(u8, u8)>,
    /// TCP flag bytes.
    pub flags: Vec<u8>,
    /// TCP option kinds.
    pub tcp_opts: Vec<u8>,
    /// MSS values at and around every `--mss` edge.
    pub mss: Vec<u16>,
}

impl Values {
    fn add_net(&mut self, s: &str) {
        let (a, m) = s.split_once('/').unwrap_or((s, "32"));
        let Ok(addr) = a.parse::<Ipv4Addr>() else {
            return;
        };
        let mask = if let Ok(p) = m.parse::<u32>() {
            if p == 0 {
                0
            } else {
                u32::MAX << (32 - p.min(32))
            }
        } else if let Ok(mm) = m.parse::<Ipv4Addr>() {
            u32::from(mm)
        } else {
            return;
        };
        let net = u32::from(addr) & mask;
        let last = net | !mask;
        self.addrs.extend([
            net,
            last,
            net.wrapping_sub(1),
            last.wrapping_add(1),
            net.wrapping_add(1),
            net ^ 0x0100,
        ]);
    }

    fn add_range(&mut self, x: u32, y: u32) {
        self.addrs.extend([
            x,
            y,
            x.wrapping_sub(1),
            y.wrapping_add(1),
            x.wrapping_add(1),
        ]);
    }
}

/// Protocol name or number to number (`all` is 0).
pub fn proto_number(s: &str) -> Option<u8> {
    Some(match s {
        "all" => 0,
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "ipv6" => 41,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ospf" => 89,
        "sctp" => 132,
        "udplite" => 136,
        n => return n.parse().ok(),
    })
}

/// ICMP type name or `T[/C]` to (type, code); code 0 when the name carries none.
pub fn icmp_type(s: &str) -> Option<(u8, u8)> {
    Some(match s {
        "any" => (255, 0),
        "echo-reply" | "pong" => (0, 0),
        "destination-unreachable" => (3, 0),
        "network-unreachable" => (3, 0),
        "host-unreachable" => (3, 1),
        "protocol-unreachable" => (3, 2),
        "port-unreachable" => (3, 3),
        "fragmentation-needed" => (3, 4),
        "source-route-failed" => (3, 5),
        "communication-prohibited" => (3, 13),
        "source-quench" => (4, 0),
        "redirect" => (5, 0),
        "echo-request" | "ping" => (8, 0),
        "router-advertisement" => (9, 0),
        "router-solicitation" => (10, 0),
        "time-exceeded" | "ttl-exceeded" => (11, 0),
        "ttl-zero-during-transit" => (11, 0),
        "ttl-zero-during-reassembly" => (11, 1),
        "parameter-problem" => (12, 0),
        "timestamp-request" => (13, 0),
        "timestamp-reply" => (14, 0),
        "address-mask-request" => (17, 0),
        "address-mask-reply" => (18, 0),
        n => {
            let (t, c) = n.split_once('/').unwrap_or((n, "0"));
            (t.parse().ok()?, c.parse().ok()?)
        }
    })
}

/// TCP flag list (`SYN,ACK`, `ALL`, `NONE`) to the flag byte.
pub fn tcp_flags(s: &str) -> u8 {
    let mut f = 0u8;
    for n in s.split(',') {
        f |= match n {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ALL" => 0x3f,
            _ => 0,
        };
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:web - [0:0]\n\
        -A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 80 -j web\n\
        -A INPUT -m comment --comment \"two words\" -j ACCEPT\n\
        -A web -m iprange --src-range 1.2.3.4-1.2.3.9 -j RETURN\nCOMMIT\n";

    #[test]
    fn parse_and_print_round_trip() {
        let rs = Ruleset::parse("t", TEXT).expect("parse");
        assert_eq!(rs.policies[0], "DROP");
        assert_eq!(rs.chains, vec!["web"]);
        assert_eq!(rs.rules.len(), 3);
        assert_eq!(rs.rules[1].args[3], "two words");
        let again = Ruleset::parse("t", &rs.to_text()).expect("reparse");
        assert_eq!(again, rs);
        let mut c = rs.clone();
        c.initial_counters = true;
        let text = c.to_text();
        assert!(text.contains("[113:6900] -A INPUT -m comment"), "{text}");
        assert!(text.contains(":INPUT DROP [13100:799107]"), "{text}");
        assert_eq!(Ruleset::parse("t", &text).expect("reparse"), c);
        c.edits.push((
            3,
            vec![
                "-I".into(),
                "INPUT".into(),
                "1".into(),
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                "a b".into(),
            ],
        ));
        let text = c.to_text();
        assert!(
            text.ends_with("COMMIT\n#edit 3 -I INPUT 1 -m comment --comment \"a b\"\n"),
            "{text}"
        );
        assert_eq!(Ruleset::parse("t", &text).expect("reparse"), c);
    }

    #[test]
    fn stateful_lines_round_trip() {
        let text = format!(
            "{TEXT}#stateful\n#sysctl net/ipv4/icmp_ratemask=6168\n\
             #raw -A PREROUTING -p udp --dport 53 -j CT --notrack\n\
             #nat -A POSTROUTING -o eth1 -j SNAT --to-source 198.18.0.13\n"
        );
        let rs = Ruleset::parse("t", &text).expect("parse");
        assert!(rs.stateful && rs.uses_stateful_features());
        assert_eq!(
            rs.sysctls,
            vec![("net/ipv4/icmp_ratemask".into(), "6168".into())]
        );
        assert_eq!(rs.extra.len(), 2);
        assert_eq!(
            rs.extra_text(),
            "*raw\n-A PREROUTING -p udp --dport 53 -j CT --notrack\nCOMMIT\n\
             *nat\n-A POSTROUTING -o eth1 -j SNAT --to-source 198.18.0.13\nCOMMIT\n"
        );
        assert_eq!(Ruleset::parse("t", &rs.to_text()).expect("reparse"), rs);
        let plain = Ruleset::parse("t", TEXT).expect("parse");
        assert!(!plain.uses_stateful_features());
        let log = Ruleset::parse("t", &TEXT.replace("-j RETURN", "-j LOG")).expect("parse");
        assert!(log.uses_stateful_features());
    }

    #[test]
    fn remove_chain_drops_jumps() {
        let mut rs = Ruleset::parse("t", TEXT).expect("parse");
        rs.remove_chain("web");
        assert_eq!(rs.rules.len(), 1);
        assert!(rs.chains.is_empty());
    }

    #[test]
    fn values_cover_edges() {
        let v = Ruleset::parse("t", TEXT).expect("parse").values();
        assert!(v.addrs.contains(&u32::from(Ipv4Addr::new(10, 0, 0, 0))));
        assert!(v.addrs.contains(&u32::from(Ipv4Addr::new(11, 0, 0, 0))));
        assert!(v.addrs.contains(&u32::from(Ipv4Addr::new(1, 2, 3, 10))));
        assert!(v.ports.contains(&80) && v.ports.contains(&81) && v.ports.contains(&79));
        assert_eq!(v.protos, vec![6]);
        assert_eq!(tcp_flags("SYN,ACK"), 0x12);
        assert_eq!(icmp_type("3/4"), Some((3, 4)));
        assert_eq!(
            split_words("a \"b c\" d").expect("words"),
            vec!["a", "b c", "d"]
        );
    }
}
