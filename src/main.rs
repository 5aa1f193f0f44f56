//! `bpfilter`: the daemon and the command-line front ends.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Run `ip6tables-legacy ARGS` against bpfilter.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Ip6tables(cli::PassThrough),
    /// Run `ip6tables-legacy-save ARGS` against bpfilter.
    #[command(
        name = "ip6tables-save",
        disable_help_flag = true,
        disable_version_flag = true
    )]
    Ip6tablesSave(cli::PassThrough),
    /// Run `ip6tables-legacy-restore ARGS` against bpfilter.
    #[command(
        name = "ip6tables-restore",
        disable_help_flag = true,
        disable_version_flag = true
    )]
    Ip6tablesRestore(cli::PassThrough),
    /// Per namespace: tables, hooks, program ids, rules, instructions, when applied.
    Status(cli::StatusArgs),
    /// Live per-rule counters of the caller's namespace.
    Counters(cli::CountersArgs),
    /// Disassembly of the running programs, each block labelled with the rule it comes from.
    Dump(cli::DumpArgs),
    /// Remove everything bpfilter attached (the caller's namespace, or all with --all).
    Flush(cli::FlushArgs),
    /// Write the man pages or print a shell's completions (for packaging).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

#[derive(Debug, Subcommand)]
enum Generate {
    /// Write bpfilter.8 and one page per command (bpfilter-daemon.8, ...) into DIR.
    Man {
        /// Output folder.
        dir: PathBuf,
    },
    /// Print the completion script of SHELL.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Names under which this executable is an iptables command (the `iptables` alternative and
/// its links point here), with the iptables-legacy binary each one runs.
const MULTICALL: [(&str, &str); 6] = [
    ("iptables", "iptables-legacy"),
    ("iptables-save", "iptables-legacy-save"),
    ("iptables-restore", "iptables-legacy-restore"),
    ("iptables-bpfilter", "iptables-legacy"),
    ("iptables-bpfilter-save", "iptables-legacy-save"),
    ("iptables-bpfilter-restore", "iptables-legacy-restore"),
];

/// Runs as an iptables command if this executable was called by one of the [`MULTICALL`]
/// names.
fn multicall() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = PathBuf::from(args.next()?);
    let name = argv0.file_name()?.to_str()?;
    let &(_, legacy) = MULTICALL.iter().find(|(n, _)| *n == name)?;
    let socket = libbpfilter::socket_path();
    let pass = cli::PassThrough {
        args: args.collect(),
    };
    Some(finish(cli::exec_multicall(legacy, &socket, pass)))
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bpfilter: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if let Some(code) = multicall() {
        return code;
    }
    let args = Args::parse();
    let result = match args.command {
        Command::Daemon(d) => cli::daemon(&args.socket, d),
        Command::Iptables(p) => cli::exec_legacy("iptables-legacy", &args.socket, p),
        Command::IptablesSave(p) => cli::exec_legacy("iptables-legacy-save", &args.socket, p),
        Command::IptablesRestore(p) => cli::exec_legacy("iptables-legacy-restore", &args.socket, p),
        Command::Ip6tables(p) => cli::exec_legacy("ip6tables-legacy", &args.socket, p),
        Command::Ip6tablesSave(p) => cli::exec_legacy("ip6tables-legacy-save", &args.socket, p),
        Command::Ip6tablesRestore(p) => {
            cli::exec_legacy("ip6tables-legacy-restore", &args.socket, p)
        }
        Command::Status(s) => cli::status(&args.socket, s),
        Command::Counters(c) => cli::counters(&args.socket, c),
        Command::Dump(d) => cli::dump(&args.socket, d),
        Command::Flush(f) => cli::flush(&args.socket, f),
        Command::Generate(Generate::Man { dir }) => generate_man(&dir),
        Command::Generate(Generate::Completion { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "bpfilter", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into)
        }
    };
    finish(result)
}

/// bpfilter.8, then bpfilter-COMMAND.8 for each visible command.
fn generate_man(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let top = Args::command();
    let mut pages = vec![("bpfilter".to_owned(), top.clone())];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("bpfilter-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("bpfilter {}", sub.get_name()))
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((name, page));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.8"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .section("8")
            .render(&mut out)
            .with_context(|| format!("rendering {name}.8"))?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
