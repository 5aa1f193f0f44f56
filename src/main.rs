//! `bpfilter`: the daemon and the command-line front ends.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bpfilter::cli;

/// iptables-legacy rules compiled to BPF_NETFILTER programs.
///
/// Run `bpfilter daemon` as root, then use `bpfilter iptables ...` exactly as you would use
/// `iptables-legacy ...`: same arguments, same output, same exit codes.
#[derive(Debug, Parser)]
#[command(name = "bpfilter", version, propagate_version = true)]
struct Args {
    /// Unix socket of the daemon.
    #[arg(long, global = true, env = "BPFILTER_SOCKET", default_value = libbpfilter::DEFAULT_SOCKET)]
    socket: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (logs to stderr; ready once the socket accepts).
    Daemon(cli::DaemonArgs),
    /// Run `iptables-legacy ARGS` against bpfilter.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Iptables(cli::PassThrough),
    /// Run `iptables-legacy-save ARGS` against bpfilter.
    #[command(
        name = "iptables-save",
        disable_help_flag = true,
        disable_version_flag = true
    )]
    IptablesSave(cli::PassThrough),
    /// Run `iptables-legacy-restore ARGS` against bpfilter.
    #[command(
        name = "iptables-restore",
        disable_help_flag = true,
        disable_version_flag = true
    )]
    IptablesRestore(cli::PassThrough),
    /// Per namespace: tables, hooks, program ids, rules, instructions, when applied.
    Status(cli::StatusArgs),
    /// Live per-rule counters of the caller's namespace.
    Counters(cli::CountersArgs),
    /// Disassembly of the running programs, each block labelled with the rule it comes from.
    Dump(cli::DumpArgs),
    /// Remove everything bpfilter attached (the caller's namespace, or all with --all).
    Flush(cli::FlushArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Daemon(d) => cli::daemon(&args.socket, d),
        Command::Iptables(p) => cli::exec_legacy("iptables-legacy", &args.socket, p),
        Command::IptablesSave(p) => cli::exec_legacy("iptables-legacy-save", &args.socket, p),
        Command::IptablesRestore(p) => cli::exec_legacy("iptables-legacy-restore", &args.socket, p),
        Command::Status(s) => cli::status(&args.socket, s),
        Command::Counters(c) => cli::counters(&args.socket, c),
        Command::Dump(d) => cli::dump(&args.socket, d),
        Command::Flush(f) => cli::flush(&args.socket, f),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bpfilter: {err:#}");
            ExitCode::FAILURE
        }
    }
}
