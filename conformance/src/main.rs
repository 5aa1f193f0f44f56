//! `conformance`: runs the differential corpus and prints the report.
//!
//! ```text
//! conformance [--full | --bounded] [--baseline] [--random N] [--packets N] [--hand-packets N]
//!             [--seed S] [--only NAME] [--every N] [--no-minimize] [--max-minimize N] [--restarts] [--scale K] [--quiet]
//!             [--save-repro DIR] [--candidate bpfilter|kernel|mutant|quiet-mutant]
//! ```
//! `--baseline` (= `--candidate kernel`) compares the kernel with itself (the harness must then
//! report no mismatch); `mutant` and `quiet-mutant` compare it with a deliberately wrong
//! kernel ruleset (first ACCEPT made DROP; first REJECT made DROP and first LOG silenced),
//! which the harness must catch.

use anyhow::{bail, Context, Result};
use conformance::{Candidate, Config};
use std::process::ExitCode;

fn parse_args() -> Result<(Config, Option<String>)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = Config::full();
    let mut repro_dir = None;
    let mut i = 0;
    let num = |i: usize| -> Result<u64> {
        let v = args
            .get(i + 1)
            .with_context(|| format!("{} needs a value", args[i]))?;
        let v = v
            .strip_prefix("0x")
            .map(|h| u64::from_str_radix(h, 16))
            .unwrap_or_else(|| v.parse());
        v.with_context(|| format!("bad number for {}", args[i]))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--full" => {
                cfg = Config {
                    candidate: cfg.candidate,
                    ..Config::full()
                }
            }
            "--bounded" => {
                cfg = Config {
                    candidate: cfg.candidate,
                    ..Config::bounded()
                }
            }
            "--baseline" => cfg.candidate = Candidate::Kernel,
            "--candidate" => {
                cfg.candidate = match args.get(i + 1).map(String::as_str) {
                    Some("bpfilter") => Candidate::Bpfilter,
                    Some("kernel") => Candidate::Kernel,
                    Some("mutant") => Candidate::KernelMutant,
                    Some("quiet-mutant") => Candidate::KernelMutantQuiet,
                    other => bail!(
                        "--candidate wants bpfilter, kernel, mutant or quiet-mutant, not {other:?}"
                    ),
                };
                i += 1;
            }
            "--no-check-rules" => cfg.check_rules = false,
            "--random" => {
                cfg.random_count = num(i)? as usize;
                i += 1;
            }
            "--packets" => {
                cfg.random_packets = num(i)? as usize;
                i += 1;
            }
            "--hand-packets" => {
                cfg.hand_packets = num(i)? as usize;
                i += 1;
            }
            "--seed" => {
                cfg.seed = num(i)?;
                i += 1;
            }
            "--max-minimize" | "--max-mismatches" => {
                cfg.max_mismatches = num(i)? as usize;
                i += 1;
            }
            "--every" => {
                cfg.every = num(i)? as usize;
                i += 1;
            }
            "--only" => {
                cfg.only = Some(args.get(i + 1).context("--only needs a value")?.clone());
                i += 1;
            }
            "--save-repro" => {
                repro_dir = Some(
                    args.get(i + 1)
                        .context("--save-repro needs a directory")?
                        .clone(),
                );
                i += 1;
            }
            "--no-minimize" => cfg.minimize = false,
            "--restarts" => cfg.restarts = true,
            "--scale" => {
                cfg.random_scale = num(i)?;
                i += 1;
            }
            "--quiet" => cfg.verbose = false,
            "-h" | "--help" => {
                println!(
                    "usage: conformance [--full | --bounded] [--baseline] [--random N] [--packets N] \
                     [--hand-packets N] [--seed S] [--only NAME] [--no-minimize] [--max-minimize N] [--restarts] [--scale K] \
                     [--quiet] [--save-repro DIR] [--no-check-rules] \
                     [--candidate bpfilter|kernel|mutant|quiet-mutant]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
        i += 1;
    }
    Ok((cfg, repro_dir))
}

fn main() -> ExitCode {
    let run = || -> Result<bool> {
        let (cfg, repro_dir) = parse_args()?;
        conformance::preflight()?;
        if cfg.candidate == Candidate::Bpfilter {
            conformance::backend::check_binaries(&conformance::backend::bin_dir())?;
        }
        let summary = conformance::run(&cfg)?;
        print!("{}", summary.table());
        if let Some(dir) = repro_dir {
            std::fs::create_dir_all(&dir)?;
            for c in summary.cases.iter().filter(|c| c.repro.is_some()) {
                if let Some((rules, pkts)) = &c.repro {
                    std::fs::write(format!("{dir}/{}.rules", c.name), rules)?;
                    std::fs::write(format!("{dir}/{}.packets", c.name), pkts)?;
                }
            }
        }
        Ok(summary.mismatches() == 0)
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}
