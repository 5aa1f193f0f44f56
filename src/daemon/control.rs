//! Answers of the daemon's own commands (`bpfilter status`, `counters`, `dump`), as text.

use std::fmt::Write as _;

use ipt_abi::Family;

use super::state::Namespace;
use super::Ipv6Engine;

/// `names` separated by commas, or "none".
fn names_or_none<S: AsRef<str>>(names: &[S]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<&str>>()
            .join(", ")
    }
}

/// `bpfilter status`: the caller's namespace, its tables, and what runs them.
pub fn status(ns: &Namespace, ipv6: Ipv6Engine) -> String {
    let mut out = format!("namespace {}\n", ns.id);
    let kernel = |family: Family| -> Vec<String> {
        let ours = ns.names(family);
        ns.fd
            .as_ref()
            .map(|fd| super::kernel_tables::kernel_tables(std::os::fd::AsFd::as_fd(fd), family))
            .unwrap_or_default()
            .into_iter()
            .filter(|k| !ours.contains(&k.as_str()))
            .collect()
    };
    let _ = writeln!(
        out,
        "  IPv4 (bpfilter iptables): compiled to BPF: {}; served by the kernel's ip_tables: {}",
        names_or_none(&ns.names(Family::Ipv4)),
        names_or_none(&kernel(Family::Ipv4))
    );
    match ipv6 {
        Ipv6Engine::Bpf => {
            let _ = writeln!(
                out,
                "  IPv6 (bpfilter ip6tables): compiled to BPF: {}; served by the kernel's ip6_tables: {}",
                names_or_none(&ns.names(Family::Ipv6)),
                names_or_none(&kernel(Family::Ipv6))
            );
        }
        Ipv6Engine::Kernel => {
            let _ = writeln!(
                out,
                "  IPv6 (bpfilter ip6tables): served by the kernel's ip6_tables: {}",
                names_or_none(&kernel(Family::Ipv6))
            );
        }
    }
    if ns.tables.is_empty() {
        out.push_str("  no tables\n");
    }
    for (key, t) in &ns.tables {
        let _ = writeln!(
            out,
            "  table {key}: {} entries, {} bytes",
            t.table.entries.len(),
            t.table.size()
        );
        for line in t.backend.status().lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

/// One counted entry: where it is, what iptables calls it, its counters.
struct Row {
    table: String,
    chain: String,
    /// "1", "2", ... for rules; "policy" for a built-in chain's policy, "return" for the
    /// implicit RETURN that ends a user chain.
    rule: String,
    entry: u32,
    packets: u64,
    bytes: u64,
}

/// `bpfilter counters [--json]`: every entry's live counters, with its chain and rule number.
pub fn counters(ns: &Namespace, json: bool) -> String {
    let mut rows = Vec::new();
    for (key, t) in &ns.tables {
        let counters = match t.backend.counters() {
            Ok(c) => c,
            Err(err) => return format!("error: reading counters of {key}: {err}\n"),
        };
        for chain in t.table.chains() {
            let last = chain.entries.end.saturating_sub(1);
            for (n, entry) in chain.entries.clone().enumerate() {
                let c = counters.get(entry as usize).copied().unwrap_or_default();
                let rule = match (entry == last, chain.hook.is_some()) {
                    (true, true) => "policy".to_owned(),
                    (true, false) => "return".to_owned(),
                    (false, _) => (n + 1).to_string(),
                };
                rows.push(Row {
                    table: key.to_string(),
                    chain: chain.name.clone(),
                    rule,
                    entry,
                    packets: c.pcnt,
                    bytes: c.bcnt,
                });
            }
        }
    }
    if json {
        let items: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"table\":{},\"chain\":{},\"rule\":{},\"entry\":{},\"packets\":{},\"bytes\":{}}}",
                    json_str(&r.table),
                    json_str(&r.chain),
                    json_str(&r.rule),
                    r.entry,
                    r.packets,
                    r.bytes
                )
            })
            .collect();
        return format!(
            "{{\"namespace\":{},\"counters\":[{}]}}\n",
            ns.id.0,
            items.join(",")
        );
    }
    let mut out = format!(
        "{:<8} {:<24} {:>6} {:>6} {:>14} {:>16}\n",
        "table", "chain", "rule", "entry", "packets", "bytes"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<8} {:<24} {:>6} {:>6} {:>14} {:>16}",
            r.table, r.chain, r.rule, r.entry, r.packets, r.bytes
        );
    }
    out
}

/// `bpfilter dump [--hook H]`: the disassembly of the running programs.
pub fn dump(ns: &Namespace, hook: Option<&str>) -> String {
    let mut out = String::new();
    for (key, t) in &ns.tables {
        let _ = writeln!(out, "; table {key}");
        out.push_str(&t.backend.dump(&t.table, hook.filter(|h| !h.is_empty())));
    }
    out
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::json_str;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
