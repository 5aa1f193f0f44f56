//! Code generation cost: IR to finished instructions (labels resolved, encoded) for 100,
//! 1,000 and 10,000-rule chains of address rules and of address + protocol + udp port rules;
//! and a program with its maps' contents (`compile_output`) for chains of netbench's arbitrary
//! kind, which are classified (the trees' construction is most of it).
//! Loading and running are measured by the privileged `scale_figures` test in
//! tests/datapath.rs (they need root).
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use emitter::codegen::{compile, compile_output, Options};
use emitter::ir::*;
use emitter::KernelLayout;
use test_support::ir::{arbitrary_list, drop_list, proto, src, udpm};

fn chain(n: usize, ports: bool) -> Program {
    drop_list(Hook::LocalIn, n, |i| {
        let mut matches = vec![src([10, 1, (i >> 8) as u8, i as u8], 32, false)];
        if ports {
            matches.push(proto(17, false));
            matches.push(udpm(
                PortRange::ANY,
                PortRange::one(10000 + (i % 1000) as u16),
                false,
                false,
            ));
        }
        matches
    })
}

/// netbench's addr kind: `-s 10.1.x.y -p udp -m udp --dport 5001 -j DROP` (one port).
fn block_list(n: usize) -> Program {
    drop_list(Hook::LocalIn, n, |i| {
        vec![
            src([10, 1, (i >> 8) as u8, i as u8], 32, false),
            proto(17, false),
            udpm(PortRange::ANY, PortRange::one(5001), false, false),
        ]
    })
}

fn codegen(c: &mut Criterion) {
    let layout = KernelLayout::example();
    for (name, ports) in [("address", false), ("addr_udp_port", true)] {
        let mut g = c.benchmark_group(format!("compile_{name}"));
        for n in [100usize, 1_000, 10_000] {
            let p = chain(n, ports);
            g.bench_with_input(BenchmarkId::from_parameter(n), &p, |b, p| {
                b.iter(|| {
                    let compiled = compile(black_box(p), &layout).expect("compile");
                    black_box(compiled.bytes(&|_| 3))
                })
            });
        }
        g.finish();
    }
}

/// The daemon's compile of address and port rules: one hash lookup per run, its map's
/// contents built here.
fn runs(c: &mut Criterion) {
    let layout = KernelLayout::example();
    type Shape = (&'static str, fn(usize) -> Program);
    let shapes: [Shape; 3] = [
        ("address", |n| chain(n, false)),
        ("addr_udp_port", |n| chain(n, true)),
        ("block_list", block_list),
    ];
    for (name, make) in shapes {
        let mut g = c.benchmark_group(format!("compile_output_{name}"));
        for n in [1_000usize, 10_000] {
            let p = make(n);
            g.bench_with_input(BenchmarkId::from_parameter(n), &p, |b, p| {
                b.iter(|| {
                    let out =
                        compile_output(black_box(p), &layout, Options::default()).expect("compile");
                    black_box(out.code.bytes(&|_| 3))
                })
            });
        }
        g.finish();
    }
}

fn classified(c: &mut Criterion) {
    let layout = KernelLayout::example();
    let mut g = c.benchmark_group("compile_output_arbitrary");
    g.sample_size(10);
    for n in [1_000usize, 10_000, 50_000] {
        let p = arbitrary_list(Hook::LocalIn, n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &p, |b, p| {
            b.iter(|| {
                let out =
                    compile_output(black_box(p), &layout, Options::default()).expect("compile");
                black_box(out.code.bytes(&|_| 3))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codegen, runs, classified);
criterion_main!(benches);
