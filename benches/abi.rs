//! ipt-abi micro-benchmarks: parse + validate a 10,000-rule filter table (the SET_REPLACE
//! path) and serialize it back (the GET_ENTRIES path). Goal: parse+validate under 5 ms.
//!
//! The table is what `iptables-legacy-restore` sends for 10,000 rules
//! `-A INPUT -s 10.0.y.z/32 -p udp -m udp --dport P -j DROP`.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ipt_abi::build::{Rule, RuleTarget, TableBuilder};
use ipt_abi::{parse_replace, XtCounters};

const RULES: u32 = 10_000;

fn blocklist_blob() -> Vec<u8> {
    let mut b = TableBuilder::filter();
    for i in 0..RULES {
        let rule = Rule::new(RuleTarget::Drop)
            .src([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 32)
            .udp_dport(1024 + (i % 60_000) as u16);
        b.rule("INPUT", rule);
    }
    b.replace_blob(4).expect("10k-rule table lays out")
}

fn abi(c: &mut Criterion) {
    let blob = blocklist_blob();
    let table = parse_replace(ipt_abi::Family::Ipv4, &blob, Some(4))
        .expect("valid table")
        .table;
    assert_eq!(table.entries.len() as u32, RULES + 4);
    let counters: Vec<XtCounters> = (0..table.entries.len() as u64)
        .map(|i| XtCounters {
            pcnt: i,
            bcnt: 60 * i,
        })
        .collect();

    let mut g = c.benchmark_group("abi_10k");
    g.sample_size(30);
    g.bench_function("parse_replace", |b| {
        b.iter(|| parse_replace(ipt_abi::Family::Ipv4, black_box(&blob), Some(4)))
    });
    g.bench_function("get_entries", |b| {
        b.iter(|| black_box(&table).get_entries(black_box(&counters)))
    });
    g.bench_function("get_info", |b| b.iter(|| black_box(&table).get_info()));
    g.finish();
}

criterion_group!(benches, abi);
criterion_main!(benches);
