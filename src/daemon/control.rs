//! Answers of the daemon's own commands (`bpfilter status`, `counters`, `dump`), as text.

use std::fmt::Write as _;

use super::state::Namespace;

/// `bpfilter status`: the caller's namespace, its tables, and what runs them.
pub fn status(ns: &Namespace) -> String {
    let mut out = format!("namespace {}\n", ns.id);
    if ns.tables.is_empty() {
        out.push_str("  no tables\n");
    }
    for (name, t) in &ns.tables {
        let _ = writeln!(
            out,
            "  table {name}: {} entries, {} bytes",
            t.table.entries.len(),
            t.table.size()
        );
        for line in t.backend.status().lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

/// `bpfilter counters [--json]`: every entry's live counters, with its chain and rule number.
pub fn counters(ns: &Namespace, json: bool) -> String {
    let mut rows = Vec::new();
    for (name, t) in &ns.tables {
        let counters = match t.backend.counters() {
            Ok(c) => c,
            Err(err) => return format!("error: reading counters of {name}: {err}\n"),
        };
        for chain in t.table.chains() {
            for (n, index) in chain.entries.clone().enumerate() {
                let c = counters.get(index as usize).copied().unwrap_or_default();
                rows.push((
                    name.clone(),
                    chain.name.clone(),
                    n + 1,
                    index,
                    c.pcnt,
                    c.bcnt,
                ));
            }
        }
    }
    if json {
        let items: Vec<String> = rows
            .iter()
            .map(|(table, chain, rule, entry, p, b)| {
                format!(
                    "{{\"table\":{},\"chain\":{},\"rule\":{rule},\"entry\":{entry},\"packets\":{p},\"bytes\":{b}}}",
                    json_str(table),
                    json_str(chain)
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
        "{:<8} {:<24} {:>5} {:>6} {:>14} {:>16}\n",
        "table", "chain", "rule", "entry", "packets", "bytes"
    );
    for (table, chain, rule, entry, p, b) in rows {
        let _ = writeln!(
            out,
            "{table:<8} {chain:<24} {rule:>5} {entry:>6} {p:>14} {b:>16}"
        );
    }
    out
}

/// `bpfilter dump [--hook H]`: the disassembly of the running programs.
pub fn dump(ns: &Namespace, hook: Option<&str>) -> String {
    let mut out = String::new();
    for (name, t) in &ns.tables {
        let _ = writeln!(out, "; table {name}");
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
