//! `conformance`: runs the differential corpus and prints the report.
//!
//! ```text
//! conformance [--full | --bounded] [--baseline | --candidate bpfilter|kernel|mutant|quiet-mutant]
//!             [--random N] [--packets N] [--hand-packets N] [--seed S] [--only NAME] [--every N]
//!             [--no-minimize] [--max-minimize N] [--restarts] [--scale K] [--no-check-rules]
//!             [--quiet] [--save-repro DIR]
//! ```
//! `--full` (the default) and `--bounded` pick the corpus and the defaults of the other options;
//! the options given with them override those defaults. Numbers may be written in hex (`0x...`).
//! `--baseline` (= `--candidate kernel`) compares the kernel with itself (the harness must then
//! report no mismatch); `mutant` and `quiet-mutant` compare it with a deliberately wrong
//! kernel ruleset (first ACCEPT made DROP; first REJECT made DROP and first LOG silenced),
//! which the harness must catch. Of `--full`/`--bounded`, and of `--baseline`/`--candidate`, the
//! last given wins. Exit status: 0 all identical, 1 mismatches, 2 harness error (a bad command
//! line included).

use std::num::ParseIntError;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use conformance::{Candidate, Config};

/// Differential conformance: bpfilter against the kernel's iptables-legacy, packet by packet.
/// Exit status: 0 all identical, 1 mismatches, 2 harness error.
#[derive(Debug, Parser)]
#[command(name = "conformance", args_override_self = true)]
struct Args {
    /// The full corpus (the default): 1000 packets per hand-written ruleset, 220 random
    /// rulesets of 250 packets, at most 3 mismatches minimized.
    #[arg(long, overrides_with = "bounded")]
    full: bool,
    /// The bounded corpus of `make test`: 300 packets per hand-written ruleset, 60 random
    /// rulesets (none stateful) of 200 packets, at most 1 mismatch minimized.
    #[arg(long, overrides_with = "full")]
    bounded: bool,
    /// Compare the kernel with itself (= --candidate kernel): must report no mismatch.
    #[arg(long, overrides_with = "candidate")]
    baseline: bool,
    /// What is compared with the kernel (default: bpfilter).
    #[arg(
        long,
        value_enum,
        value_name = "CANDIDATE",
        overrides_with = "baseline"
    )]
    candidate: Option<CandidateArg>,
    /// Skip the `iptables -C` checks of hand-written rulesets (faster minimizing).
    #[arg(long)]
    no_check_rules: bool,
    /// Number of random rulesets.
    #[arg(long, value_name = "N", value_parser = count)]
    random: Option<usize>,
    /// Packets per random ruleset.
    #[arg(long, value_name = "N", value_parser = count)]
    packets: Option<usize>,
    /// Packets per hand-written ruleset.
    #[arg(long, value_name = "N", value_parser = count)]
    hand_packets: Option<usize>,
    /// Seed of every generator (default 0xb0f117e4).
    #[arg(long, value_name = "S", value_parser = number)]
    seed: Option<u64>,
    /// Minimize at most this many mismatches (every case runs regardless).
    #[arg(long, alias = "max-mismatches", value_name = "N", value_parser = count)]
    max_minimize: Option<usize>,
    /// Run every N-th case only (1 = all).
    #[arg(long, value_name = "N", value_parser = count)]
    every: Option<usize>,
    /// Only run cases whose name contains NAME.
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    only: Option<String>,
    /// Write the minimized reproductions (NAME.rules, NAME.packets) into DIR.
    #[arg(long, value_name = "DIR", allow_hyphen_values = true)]
    save_repro: Option<PathBuf>,
    /// Do not shrink mismatches to minimal reproductions.
    #[arg(long)]
    no_minimize: bool,
    /// Also restart the bpfilter daemon between packets in some random cases.
    #[arg(long)]
    restarts: bool,
    /// Random rulesets get K times more rules per chain and user chains (default 1).
    #[arg(long, value_name = "K", value_parser = number)]
    scale: Option<u64>,
    /// No line per case as it runs.
    #[arg(long)]
    quiet: bool,
}

/// `--candidate`'s values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CandidateArg {
    /// bpfilter (binaries from target/release or $BPFILTER_BIN_DIR).
    Bpfilter,
    /// The kernel again (harness self-check).
    Kernel,
    /// The kernel with its first ACCEPT made DROP.
    Mutant,
    /// The kernel with its first REJECT made DROP and its first LOG silenced.
    QuietMutant,
}

impl From<CandidateArg> for Candidate {
    fn from(c: CandidateArg) -> Candidate {
        match c {
            CandidateArg::Bpfilter => Candidate::Bpfilter,
            CandidateArg::Kernel => Candidate::Kernel,
            CandidateArg::Mutant => Candidate::KernelMutant,
            CandidateArg::QuietMutant => Candidate::KernelMutantQuiet,
        }
    }
}

/// A number, decimal or `0x` hex.
fn number(s: &str) -> Result<u64, ParseIntError> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
}

/// A count, decimal or `0x` hex.
fn count(s: &str) -> Result<usize, String> {
    let n = number(s).map_err(|e| e.to_string())?;
    usize::try_from(n).map_err(|e| e.to_string())
}

impl Args {
    /// The run's configuration: the preset, then the options given.
    fn config(&self) -> Config {
        let mut cfg = if self.bounded {
            Config::bounded()
        } else {
            Config::full()
        };
        if self.baseline {
            cfg.candidate = Candidate::Kernel;
        }
        if let Some(c) = self.candidate {
            cfg.candidate = c.into();
        }
        if self.no_check_rules {
            cfg.check_rules = false;
        }
        if let Some(n) = self.random {
            cfg.random_count = n;
        }
        if let Some(n) = self.packets {
            cfg.random_packets = n;
        }
        if let Some(n) = self.hand_packets {
            cfg.hand_packets = n;
        }
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(n) = self.max_minimize {
            cfg.max_mismatches = n;
        }
        if let Some(n) = self.every {
            cfg.every = n;
        }
        if let Some(name) = &self.only {
            cfg.only = Some(name.clone());
        }
        if self.no_minimize {
            cfg.minimize = false;
        }
        if self.restarts {
            cfg.restarts = true;
        }
        if let Some(k) = self.scale {
            cfg.random_scale = k;
        }
        if self.quiet {
            cfg.verbose = false;
        }
        cfg
    }
}

fn main() -> ExitCode {
    // A bad command line exits with clap's usage error status, 2: a harness error.
    let args = Args::parse();
    let run = || -> Result<bool> {
        let cfg = args.config();
        conformance::preflight()?;
        if cfg.candidate == Candidate::Bpfilter {
            conformance::backend::check_binaries(&conformance::backend::bin_dir())?;
        }
        let summary = conformance::run(&cfg)?;
        print!("{}", summary.table());
        if let Some(dir) = &args.save_repro {
            std::fs::create_dir_all(dir)?;
            for c in summary.cases.iter().filter(|c| c.repro.is_some()) {
                if let Some((rules, pkts)) = &c.repro {
                    std::fs::write(dir.join(format!("{}.rules", c.name)), rules)?;
                    std::fs::write(dir.join(format!("{}.packets", c.name)), pkts)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn cfg(args: &[&str]) -> Config {
        Args::try_parse_from(std::iter::once("conformance").chain(args.iter().copied()))
            .expect("parses")
            .config()
    }

    #[test]
    fn command_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn presets_and_options() {
        let full = cfg(&[]);
        assert_eq!(full.random_count, Config::full().random_count);
        assert_eq!(full.candidate, Candidate::Bpfilter);
        assert_eq!(cfg(&["--full"]).hand_packets, Config::full().hand_packets);
        // tools/kernels/suites.sh
        let c = cfg(&[
            "--bounded",
            "--random",
            "6",
            "--packets",
            "40",
            "--hand-packets",
            "12",
            "--every",
            "6",
            "--quiet",
        ]);
        assert_eq!(
            (c.random_count, c.random_packets, c.hand_packets, c.every),
            (6, 40, 12, 6)
        );
        assert!(!c.verbose);
        assert!(!c.random_stateful);
        assert_eq!(c.max_mismatches, Config::bounded().max_mismatches);
        // The last of --full and --bounded wins.
        assert_eq!(cfg(&["--full", "--bounded"]).random_count, 60);
        assert_eq!(cfg(&["--bounded", "--full"]).random_count, 220);
        let c = cfg(&[
            "--seed",
            "0x10",
            "--scale",
            "0x3",
            "--max-mismatches",
            "7",
            "--only",
            "router",
            "--no-minimize",
            "--restarts",
            "--no-check-rules",
        ]);
        assert_eq!((c.seed, c.random_scale, c.max_mismatches), (16, 3, 7));
        assert_eq!(c.only.as_deref(), Some("router"));
        assert!(!c.minimize && c.restarts && !c.check_rules);
        assert_eq!(cfg(&["--max-minimize", "2"]).max_mismatches, 2);
        assert_eq!(cfg(&["--random", "1", "--random", "2"]).random_count, 2);
    }

    #[test]
    fn candidates() {
        assert_eq!(cfg(&["--baseline"]).candidate, Candidate::Kernel);
        assert_eq!(
            cfg(&["--candidate", "quiet-mutant", "--only", "log-before-drop"]).candidate,
            Candidate::KernelMutantQuiet
        );
        assert_eq!(
            cfg(&["--candidate", "mutant"]).candidate,
            Candidate::KernelMutant
        );
        assert_eq!(
            cfg(&["--baseline", "--candidate", "bpfilter"]).candidate,
            Candidate::Bpfilter
        );
        assert_eq!(
            cfg(&["--candidate", "mutant", "--baseline"]).candidate,
            Candidate::Kernel
        );
        assert!(Args::try_parse_from(["conformance", "--candidate", "nft"]).is_err());
        assert!(Args::try_parse_from(["conformance", "--seed", "0xzz"]).is_err());
        assert!(Args::try_parse_from(["conformance", "--bogus"]).is_err());
    }

    #[test]
    fn save_repro() {
        let a = Args::try_parse_from(["conformance", "--save-repro", "conformance/regressions"])
            .expect("parses");
        assert_eq!(
            a.save_repro.as_deref(),
            Some(std::path::Path::new("conformance/regressions"))
        );
    }
}
