//! Build valid tables the way libiptc lays them out (for tests, benches, fuzz seeds).
//!
//! Layout (libiptc's `iptcc_compile_table`): built-in chains in hook order, each its rules then
//! its policy entry; then user chains sorted by name, each an ERROR head entry (errorname =
//! chain name), its rules, and an unconditional RETURN entry; then the final ERROR "ERROR"
//! entry. A jump or goto targets the entry right after the chain's head.
//!
//! ```
//! use ipt_abi::build::{Rule, RuleTarget, TableBuilder};
//! use ipt_abi::Verdict;
//! let mut b = TableBuilder::filter();
//! b.user_chain("blocklist");
//! b.rule("INPUT", Rule::new(RuleTarget::Jump("blocklist".into())));
//! b.rule("blocklist", Rule::new(RuleTarget::Drop).src([10, 0, 0, 1], 32).udp_dport(53));
//! b.policy("FORWARD", Verdict::Drop);
//! let table = b.build().unwrap();
//! assert_eq!(table.entries.len(), 8);
//! let blob = table.replace_blob(4, 0); // SET_REPLACE bytes replacing a 4-entry table
//! assert_eq!(
//!     ipt_abi::parse_replace(ipt_abi::Family::Ipv4, &blob, Some(4)).unwrap().table,
//!     table
//! );
//! ```
//!
//! IPv6 (ip6tables' layout, `ip6t_entry` headers): start from [`TableBuilder::filter6`]; a
//! rule's family-independent parts (`-p`, `-i`, `-o`, `!`) carry over, addresses come from
//! [`Rule::src6`] / [`Rule::dst6`], and `-p` sets IP6T_F_PROTO as ip6tables does.
//!
//! ```
//! use ipt_abi::build::{Rule, RuleTarget, TableBuilder};
//! let mut b = TableBuilder::filter6();
//! b.rule("INPUT", Rule::new(RuleTarget::Accept).src6("2001:db8::".parse().unwrap(), 32).tcp_dport(22));
//! let table = b.build().unwrap();
//! assert_eq!(table.family, ipt_abi::Family::Ipv6);
//! // a 168-byte ip6t_entry + tcp match (48) + standard target (40), three policies (208
//! // each), the final ERROR entry (232)
//! assert_eq!(table.size(), 256 + 3 * 208 + 232);
//! ```

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr};

use zerocopy::IntoBytes;

use crate::abi::*;
use crate::ext::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use crate::model::*;
use crate::{parse_replace, AbiError, Family};

/// Where a rule sends matching packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleTarget {
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j RETURN`.
    Return,
    /// `-j CHAIN`.
    Jump(String),
    /// `-g CHAIN` (sets IPT_F_GOTO).
    Goto(String),
    /// `-j REJECT --reject-with`: an IPT_ICMP_* / IPT_TCP_RESET value (in an IPv6 table an
    /// IP6T_ICMP6_* / IP6T_TCP_RESET value, laid out as `ip6t_reject_info`).
    Reject(u32),
    /// `-j LOG`: level (iptables' default is 4), XT_LOG_* flags, prefix (cut to 29 bytes).
    Log {
        /// Syslog level.
        level: u8,
        /// XT_LOG_* flags.
        flags: u8,
        /// Prefix text.
        prefix: String,
    },
}

impl RuleTarget {
    /// `target_size` of the entry's target.
    fn target_size(&self) -> usize {
        match self {
            RuleTarget::Reject(_) => XT_ENTRY_TARGET_SIZE + xt_align(size_of::<IptRejectInfo>()),
            RuleTarget::Log { .. } => XT_ENTRY_TARGET_SIZE + xt_align(size_of::<XtLogInfo>()),
            _ => XT_STANDARD_TARGET_SIZE,
        }
    }
}

/// One rule: ip part, matches, target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The ip part (IPT_F_GOTO / IP6T_F_GOTO is set by `RuleTarget::Goto`). IPv4 until an
    /// IPv6-only builder method is used; an IPv4 part without addresses is carried over to
    /// IPv6 by an IPv6 table.
    pub ip: IpPart,
    /// `nfcache` (iptables leaves 0).
    pub nfcache: u32,
    /// Matches in order.
    pub matches: Vec<Match>,
    /// Target.
    pub target: RuleTarget,
}

impl Rule {
    /// A rule matching everything.
    pub fn new(target: RuleTarget) -> Self {
        Rule {
            ip: IpPart::default(),
            nfcache: 0,
            matches: Vec::new(),
            target,
        }
    }
    /// The IPv4 part (made IPv4 if it was IPv6: only IPv6 builder methods make it IPv6).
    fn v4(&mut self) -> &mut IpMatch {
        if let IpPart::V6(ip6) = self.ip {
            self.ip = IpPart::V4(v4_of(&ip6));
        }
        match &mut self.ip {
            IpPart::V4(ip) => ip,
            IpPart::V6(_) => unreachable!("made IPv4 above"),
        }
    }
    /// The IPv6 part (converted from the family-independent fields of an IPv4 one).
    fn v6(&mut self) -> &mut Ip6Match {
        if let IpPart::V4(ip4) = self.ip {
            self.ip = IpPart::V6(v6_of(&ip4));
        }
        match &mut self.ip {
            IpPart::V6(ip) => ip,
            IpPart::V4(_) => unreachable!("made IPv6 above"),
        }
    }
    /// `-s addr/prefix` (the address is masked, as iptables does).
    pub fn src(mut self, addr: [u8; 4], prefix: u8) -> Self {
        let m = prefix_mask(prefix);
        let ip = self.v4();
        ip.smsk = Ipv4Addr::from(m);
        ip.src = Ipv4Addr::from(u32::from(Ipv4Addr::from(addr)) & m);
        self
    }
    /// `-d addr/prefix`.
    pub fn dst(mut self, addr: [u8; 4], prefix: u8) -> Self {
        let m = prefix_mask(prefix);
        let ip = self.v4();
        ip.dmsk = Ipv4Addr::from(m);
        ip.dst = Ipv4Addr::from(u32::from(Ipv4Addr::from(addr)) & m);
        self
    }
    /// IPv6 `-s addr/prefix` (masked, as ip6tables does). Makes the rule IPv6.
    pub fn src6(mut self, addr: Ipv6Addr, prefix: u8) -> Self {
        let m = prefix_mask6(prefix);
        let ip = self.v6();
        ip.smsk = Ipv6Addr::from(m);
        ip.src = Ipv6Addr::from(u128::from(addr) & m);
        self
    }
    /// IPv6 `-d addr/prefix`. Makes the rule IPv6.
    pub fn dst6(mut self, addr: Ipv6Addr, prefix: u8) -> Self {
        let m = prefix_mask6(prefix);
        let ip = self.v6();
        ip.dmsk = Ipv6Addr::from(m);
        ip.dst = Ipv6Addr::from(u128::from(addr) & m);
        self
    }
    /// `-p proto` (for IPv6 also IP6T_F_PROTO, as ip6tables sets it).
    pub fn proto(mut self, proto: u16) -> Self {
        match &mut self.ip {
            IpPart::V4(ip) => ip.proto = proto,
            IpPart::V6(ip) => {
                ip.proto = proto;
                ip.flags |= IP6T_F_PROTO;
            }
        }
        self
    }
    /// Set IPT_INV_* / IP6T_INV_* bits (the same values).
    pub fn invert(mut self, bits: u8) -> Self {
        match &mut self.ip {
            IpPart::V4(ip) => ip.invflags |= bits,
            IpPart::V6(ip) => ip.invflags |= bits,
        }
        self
    }
    /// `-f` (IPv4 only: makes the rule IPv4).
    pub fn frag(mut self) -> Self {
        self.v4().flags |= IPT_F_FRAG;
        self
    }
    /// `-i name` (a trailing `+` makes a prefix match, as iptables).
    pub fn iniface(mut self, name: &str) -> Self {
        let (n, m) = parse_interface(name);
        match &mut self.ip {
            IpPart::V4(ip) => (ip.iniface, ip.iniface_mask) = (n, m),
            IpPart::V6(ip) => (ip.iniface, ip.iniface_mask) = (n, m),
        }
        self
    }
    /// `-o name`.
    pub fn outiface(mut self, name: &str) -> Self {
        let (n, m) = parse_interface(name);
        match &mut self.ip {
            IpPart::V4(ip) => (ip.outiface, ip.outiface_mask) = (n, m),
            IpPart::V6(ip) => (ip.outiface, ip.outiface_mask) = (n, m),
        }
        self
    }
    /// `-p ipv6-icmp -m icmp6 --icmpv6-type type` (0xff = any). Makes the rule IPv6.
    pub fn icmp6_type(mut self, icmp_type: u8) -> Self {
        self.v6();
        self.proto(crate::ext::IPPROTO_ICMPV6)
            .with(Match::Icmp6(Ip6tIcmp {
                icmp_type,
                code: [0, 0xff],
                invflags: 0,
            }))
    }
    /// Append a match.
    pub fn with(mut self, m: Match) -> Self {
        self.matches.push(m);
        self
    }
    /// `-p udp -m udp --dport port`.
    pub fn udp_dport(self, port: u16) -> Self {
        self.proto(IPPROTO_UDP).with(Match::Udp(XtUdp {
            spts: [0, 0xffff],
            dpts: [port, port],
            invflags: 0,
            pad: 0,
        }))
    }
    /// `-p tcp -m tcp --dport port`.
    pub fn tcp_dport(self, port: u16) -> Self {
        self.proto(IPPROTO_TCP).with(Match::Tcp(XtTcp {
            spts: [0, 0xffff],
            dpts: [port, port],
            ..Default::default()
        }))
    }
    /// `-p icmp -m icmp --icmp-type type` (0xff = any).
    pub fn icmp_type(self, icmp_type: u8) -> Self {
        self.proto(IPPROTO_ICMP).with(Match::Icmp(IptIcmp {
            icmp_type,
            code: [0, 0xff],
            invflags: 0,
        }))
    }
    /// `-m conntrack --ctstate MASK` as iptables 1.8.9 sends it: revision 3, XT_CONNTRACK_STATE
    /// (XT_CONNTRACK_STATE_* bits), everything else zero.
    pub fn ctstate(self, mask: u16) -> Self {
        self.conntrack(XtConntrackMtinfo3 {
            match_flags: XT_CONNTRACK_STATE,
            state_mask: mask,
            ..Default::default()
        })
    }
    /// `-m state --state MASK` as iptables 1.8.9 sends it: conntrack revision 3 with
    /// XT_CONNTRACK_STATE | XT_CONNTRACK_STATE_ALIAS.
    pub fn state(self, mask: u16) -> Self {
        self.conntrack(XtConntrackMtinfo3 {
            match_flags: XT_CONNTRACK_STATE | XT_CONNTRACK_STATE_ALIAS,
            state_mask: mask,
            ..Default::default()
        })
    }
    /// A "state" revision 0 match (`xt_state_info`), as older iptables sends `-m state`.
    pub fn state_rev0(self, statemask: u32) -> Self {
        self.with(Match::State(XtStateInfo { statemask }))
    }
    /// `-m conntrack` with a full revision 3 payload.
    pub fn conntrack(self, info: XtConntrackMtinfo3) -> Self {
        self.with(Match::Conntrack(Box::new(Conntrack::V3(info))))
    }
    /// `-m comment --comment text`.
    pub fn comment(self, text: &str) -> Self {
        let mut c = XtCommentInfo {
            comment: [0; XT_MAX_COMMENT_LEN],
        };
        let n = text.len().min(XT_MAX_COMMENT_LEN - 1);
        c.comment[..n].copy_from_slice(&text.as_bytes()[..n]);
        self.with(Match::Comment(Box::new(c)))
    }
}

/// The family-independent fields of an IPv4 part, as IPv6 (IP6T_F_PROTO with a protocol).
fn v6_of(ip: &IpMatch) -> Ip6Match {
    Ip6Match {
        iniface: ip.iniface,
        outiface: ip.outiface,
        iniface_mask: ip.iniface_mask,
        outiface_mask: ip.outiface_mask,
        proto: ip.proto,
        flags: if ip.proto != 0 { IP6T_F_PROTO } else { 0 },
        invflags: ip.invflags,
        ..Ip6Match::default()
    }
}

/// The family-independent fields of an IPv6 part, as IPv4.
fn v4_of(ip: &Ip6Match) -> IpMatch {
    IpMatch {
        iniface: ip.iniface,
        outiface: ip.outiface,
        iniface_mask: ip.iniface_mask,
        outiface_mask: ip.outiface_mask,
        proto: ip.proto,
        invflags: ip.invflags,
        ..IpMatch::default()
    }
}

fn prefix_mask6(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => u128::MAX,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

/// iptables' `xtables_parse_interface`: name bytes and mask (0xff over the name and its NUL,
/// or over the prefix before a trailing `+`). Names longer than 15 bytes are truncated.
pub fn parse_interface(name: &str) -> ([u8; IFNAMSIZ], [u8; IFNAMSIZ]) {
    let via: [u8; IFNAMSIZ] = name_field(name);
    let len = c_str(&via).len();
    let mut mask = [0u8; IFNAMSIZ];
    if len == 0 {
        return (via, mask);
    }
    if via[len - 1] == b'+' {
        mask[..len - 1].fill(0xff);
    } else {
        mask[..(len + 1).min(IFNAMSIZ)].fill(0xff);
    }
    (via, mask)
}

#[derive(Debug, Clone)]
struct BChain {
    name: String,
    hook: Option<usize>,
    policy: Verdict,
    rules: Vec<Rule>,
}

/// Builder of valid tables in libiptc's layout.
#[derive(Debug, Clone)]
pub struct TableBuilder {
    family: Family,
    name: String,
    valid_hooks: u32,
    chains: Vec<BChain>,
}

impl TableBuilder {
    /// The filter table: INPUT, FORWARD, OUTPUT with ACCEPT policies, no rules.
    pub fn filter() -> Self {
        Self::filter_for(Family::Ipv4)
    }

    /// ip6tables' filter table: INPUT, FORWARD, OUTPUT with ACCEPT policies, no rules.
    pub fn filter6() -> Self {
        Self::filter_for(Family::Ipv6)
    }

    /// The filter table of a family.
    pub fn filter_for(family: Family) -> Self {
        let chains = [1usize, 2, 3]
            .iter()
            .map(|&h| BChain {
                name: HOOK_NAMES[h].to_string(),
                hook: Some(h),
                policy: Verdict::Accept,
                rules: Vec::new(),
            })
            .collect();
        TableBuilder {
            family,
            name: "filter".to_string(),
            valid_hooks: FILTER_VALID_HOOKS,
            chains,
        }
    }

    /// Set a built-in chain's policy (Accept or Drop). Unknown chain names are ignored.
    pub fn policy(&mut self, chain: &str, verdict: Verdict) -> &mut Self {
        if let Some(c) = self
            .chains
            .iter_mut()
            .find(|c| c.name == chain && c.hook.is_some())
        {
            c.policy = verdict;
        }
        self
    }

    /// Add an empty user chain (no-op if it exists).
    pub fn user_chain(&mut self, name: &str) -> &mut Self {
        if !self.chains.iter().any(|c| c.name == name) {
            self.chains.push(BChain {
                name: name.to_string(),
                hook: None,
                policy: Verdict::Return,
                rules: Vec::new(),
            });
        }
        self
    }

    /// Append a rule to a chain (a user chain is created if missing).
    pub fn rule(&mut self, chain: &str, rule: Rule) -> &mut Self {
        self.user_chain(chain);
        if let Some(c) = self.chains.iter_mut().find(|c| c.name == chain) {
            c.rules.push(rule);
        }
        self
    }

    /// Chains in blob order: built-ins by hook, then user chains sorted by name.
    fn ordered(&self) -> Vec<&BChain> {
        let mut v: Vec<&BChain> = self.chains.iter().collect();
        v.sort_by(|a, b| match (a.hook, b.hook) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.name.as_bytes().cmp(b.name.as_bytes()),
        });
        v
    }

    /// The SET_REPLACE request bytes for this table (not validated; `build` validates).
    /// Fails for a jump to a missing chain (ENOENT) or a rule larger than 65535 bytes.
    pub fn replace_blob(&self, num_counters: u32) -> Result<Vec<u8>, AbiError> {
        let chains = self.ordered();
        let base = entry_size(self.family);
        let std_entry = base + XT_STANDARD_TARGET_SIZE;
        let err_entry = base + XT_ERROR_TARGET_SIZE;
        // First pass: offsets of each chain's first entry (after the head for user chains).
        let mut starts = Vec::with_capacity(chains.len());
        let mut off = 0usize;
        for c in &chains {
            if c.hook.is_none() {
                off += err_entry;
            }
            starts.push(off);
            for r in &c.rules {
                off += base
                    + r.matches.iter().map(Match::match_size).sum::<usize>()
                    + r.target.target_size();
            }
            off += std_entry;
        }
        let size = off + err_entry;
        let find = |name: &str| {
            chains
                .iter()
                .position(|c| c.name == name)
                .map(|i| starts[i] as u32)
                .ok_or_else(|| AbiError::UnknownChain(name.to_string()))
        };
        let mut hook_entry = [u32::MAX; NF_INET_NUMHOOKS];
        let mut underflow = [u32::MAX; NF_INET_NUMHOOKS];
        let mut entries: Vec<Entry> = Vec::new();
        let push = |entries: &mut Vec<Entry>, ip, nfcache, matches, target| {
            let index = entries.len() as u32;
            let offset = entries
                .last()
                .map_or(0, |e: &Entry| e.offset + e.next_offset() as u32);
            entries.push(Entry {
                index,
                offset,
                ip,
                nfcache,
                hdr_pad: [0; 4],
                comefrom: 0,
                matches,
                target,
                trailer: Vec::new(),
            });
            offset
        };
        for c in &chains {
            if c.hook.is_none() {
                push(
                    &mut entries,
                    IpPart::zero(self.family),
                    0,
                    Vec::new(),
                    Target::Error(ErrorName::from(c.name.as_str())),
                );
            }
            let mut first = None;
            for (k, r) in c.rules.iter().enumerate() {
                let mut ip = match (self.family, r.ip) {
                    (Family::Ipv4, IpPart::V4(ip)) => IpPart::V4(ip),
                    (Family::Ipv6, IpPart::V6(ip)) => IpPart::V6(ip),
                    // an IPv4 part carries over when it holds nothing IPv4-only
                    (Family::Ipv6, IpPart::V4(ip))
                        if ip.src.is_unspecified()
                            && ip.dst.is_unspecified()
                            && ip.smsk.is_unspecified()
                            && ip.dmsk.is_unspecified()
                            && ip.flags == 0 =>
                    {
                        IpPart::V6(v6_of(&ip))
                    }
                    _ => {
                        return Err(AbiError::WrongFamily {
                            chain: c.name.clone(),
                            index: k,
                        })
                    }
                };
                let target = match &r.target {
                    RuleTarget::Accept => Target::Standard(Verdict::Accept),
                    RuleTarget::Drop => Target::Standard(Verdict::Drop),
                    RuleTarget::Return => Target::Standard(Verdict::Return),
                    RuleTarget::Jump(n) => Target::Standard(Verdict::Jump {
                        offset: find(n)?,
                        index: 0,
                    }),
                    RuleTarget::Goto(n) => {
                        match &mut ip {
                            IpPart::V4(ip) => ip.flags |= IPT_F_GOTO,
                            IpPart::V6(ip) => ip.flags |= IP6T_F_GOTO,
                        }
                        Target::Standard(Verdict::Jump {
                            offset: find(n)?,
                            index: 0,
                        })
                    }
                    RuleTarget::Reject(with) => match self.family {
                        Family::Ipv4 => Target::Reject(IptRejectInfo { with: *with }),
                        Family::Ipv6 => Target::Reject6(Ip6tRejectInfo { with: *with }),
                    },
                    RuleTarget::Log {
                        level,
                        flags,
                        prefix,
                    } => Target::Log(XtLogInfo {
                        level: *level,
                        logflags: *flags,
                        prefix: name_field(prefix),
                    }),
                };
                let o = push(&mut entries, ip, r.nfcache, r.matches.clone(), target);
                first.get_or_insert(o);
            }
            let end = push(
                &mut entries,
                IpPart::zero(self.family),
                0,
                Vec::new(),
                Target::Standard(c.policy),
            );
            if let Some(h) = c.hook {
                hook_entry[h] = first.unwrap_or(end);
                underflow[h] = end;
            }
        }
        push(
            &mut entries,
            IpPart::zero(self.family),
            0,
            Vec::new(),
            Target::Error(ErrorName::from(XT_ERROR_TARGET)),
        );
        // Offsets are u16 in ipt_entry: an entry this large cannot be expressed.
        if let Some(e) = entries
            .iter()
            .find(|e| e.next_offset() > usize::from(u16::MAX))
        {
            return Err(AbiError::Entry {
                index: e.index,
                offset: e.offset,
                fault: crate::EntryFault::NextPastEnd,
            });
        }
        let hdr = IptReplace {
            name: name_field(&self.name),
            valid_hooks: self.valid_hooks,
            num_entries: entries.len() as u32,
            size: size as u32,
            hook_entry,
            underflow,
            num_counters,
            counters: 0,
        };
        let mut out = Vec::with_capacity(IPT_REPLACE_SIZE + size);
        out.extend_from_slice(hdr.as_bytes());
        for e in &entries {
            e.write(&mut out, XtCounters::default());
        }
        Ok(out)
    }

    /// Lay the table out and validate it as the kernel would.
    pub fn build(&self) -> Result<Table, AbiError> {
        let blob = self.replace_blob(1)?;
        Ok(parse_replace(self.family, &blob, None)?.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_rules() {
        let mut b = TableBuilder::filter6();
        b.user_chain("web");
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Accept)
                .src6("2001:db8:1:2::7".parse().expect("addr"), 48)
                .iniface("eth+")
                .tcp_dport(22),
        );
        b.rule(
            "INPUT",
            Rule::new(RuleTarget::Goto("web".into())).icmp6_type(128),
        );
        // a family-independent IPv4 rule carries over
        b.rule(
            "web",
            Rule::new(RuleTarget::Reject(IP6T_TCP_RESET)).tcp_dport(80),
        );
        let t = b.build().expect("valid");
        assert_eq!(t.family, Family::Ipv6);
        let ip = t.entries[0].ip.as_v6().expect("v6");
        assert_eq!(ip.src, "2001:db8:1::".parse::<Ipv6Addr>().expect("a"));
        assert_eq!(ip.smsk, "ffff:ffff:ffff::".parse::<Ipv6Addr>().expect("m"));
        assert_eq!((ip.proto, ip.flags), (6, IP6T_F_PROTO));
        assert_eq!(t.entries[0].ip.iniface_name(), "eth+");
        assert!(t.entries[1].ip.is_goto());
        assert_eq!(t.entries[1].ip.flags(), IP6T_F_PROTO | IP6T_F_GOTO);
        assert!(matches!(
            t.entries[6].target,
            Target::Reject6(Ip6tRejectInfo { with: 6 })
        ));
        assert_eq!(t.entries[0].next_offset(), 168 + 48 + 40);
        // an IPv4 address has no place in an IPv6 table, nor the reverse
        let mut bad = TableBuilder::filter6();
        bad.rule("INPUT", Rule::new(RuleTarget::Drop).src([10, 0, 0, 1], 8));
        assert_eq!(bad.build().map_err(|e| e.errno()), Err(libc::EINVAL));
        let mut bad = TableBuilder::filter();
        bad.rule(
            "INPUT",
            Rule::new(RuleTarget::Drop).src6(Ipv6Addr::LOCALHOST, 128),
        );
        assert!(matches!(
            bad.build(),
            Err(AbiError::WrongFamily { index: 0, .. })
        ));
        // the initial tables are what the builders make empty
        for f in [Family::Ipv4, Family::Ipv6] {
            let empty = TableBuilder::filter_for(f).build().expect("valid");
            assert_eq!(empty, Table::initial_for(f, "filter").expect("filter"));
        }
    }
}
