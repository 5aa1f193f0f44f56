//! The tables the kernel's own ip_tables and ip6_tables serve next to bpfilter's, and the
//! order `/proc/net/ip_tables_names` and `ip6_tables_names` list them in.
//!
//! Every table but `filter` stays the kernel's (libbpfilter.so hands their requests to the
//! kernel untouched), so the names file a preloaded iptables-save reads must list both. The
//! kernel lists a namespace's tables newest first (each new table is added at the head of
//! `net->xt.tables[af]`); bpfilter's `filter` takes the place it would have had: after the
//! kernel tables created since it, before those that existed when it was instantiated (a
//! snapshot taken then, kept with the table's pins).

use std::os::fd::BorrowedFd;

use ipt_abi::Family;

use crate::sys;

/// The kernel's table names of `family` (ip_tables' or ip6_tables') in the namespace of
/// `netns` (newest first); empty when the kernel has no such table there (or no names file).
pub fn kernel_tables(netns: BorrowedFd<'_>, family: Family) -> Vec<String> {
    names_in(
        netns,
        match family {
            Family::Ipv4 => "/proc/thread-self/net/ip_tables_names",
            Family::Ipv6 => "/proc/thread-self/net/ip6_tables_names",
        },
    )
}

fn names_in(netns: BorrowedFd<'_>, file: &'static str) -> Vec<String> {
    sys::in_netns(netns, || std::fs::read_to_string(file).unwrap_or_default())
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The names file: the kernel's tables in its order with each of bpfilter's tables placed
/// before the kernel tables that are older than it (`ours`: name and the kernel tables that
/// existed when it was instantiated). A kernel table of the same name as one of ours (the
/// kernel's filter, loaded by something that bypassed bpfilter) is listed once, as ours.
pub fn names(kernel: &[String], ours: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mine = |k: &String| ours.iter().any(|(n, _)| n == k);
    let mut placed = vec![false; ours.len()];
    for k in kernel.iter().filter(|k| !mine(k)) {
        for (i, (name, older)) in ours.iter().enumerate() {
            if !placed[i] && older.contains(k) {
                out.push(name.clone());
                placed[i] = true;
            }
        }
        out.push(k.clone());
    }
    for (i, (name, _)) in ours.iter().enumerate() {
        if !placed[i] {
            out.push(name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn filter_sits_where_the_kernel_would_have_put_it() {
        // filter first, then nat and mangle: the kernel would list mangle, nat, filter
        assert_eq!(
            names(&v(&["mangle", "nat"]), &[("filter".into(), v(&[]))]),
            v(&["mangle", "nat", "filter"])
        );
        // nat existed before filter, mangle came after
        assert_eq!(
            names(&v(&["mangle", "nat"]), &[("filter".into(), v(&["nat"]))]),
            v(&["mangle", "filter", "nat"])
        );
        // filter newest
        assert_eq!(
            names(
                &v(&["raw", "nat"]),
                &[("filter".into(), v(&["raw", "nat"]))]
            ),
            v(&["filter", "raw", "nat"])
        );
        // only ours; only the kernel's
        assert_eq!(
            names(&[], &[("filter".into(), v(&["nat"]))]),
            v(&["filter"])
        );
        assert_eq!(names(&v(&["nat"]), &[]), v(&["nat"]));
        // a kernel filter table is not listed twice
        assert_eq!(
            names(&v(&["nat", "filter"]), &[("filter".into(), v(&[]))]),
            v(&["nat", "filter"])
        );
    }
}
