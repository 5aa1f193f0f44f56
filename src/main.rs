//! `bpfilter`: the daemon and the command-line front ends.

use std::ffi::OsString;
#[cfg(not(test))]
use std::ffi::{c_char, c_int, CStr};
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

/// Names under which this executable is an iptables or ip6tables command (the `iptables` and
/// `ip6tables` alternatives and their links point here), with the legacy binary each one runs.
const MULTICALL: [(&str, &str); 12] = [
    ("iptables", "iptables-legacy"),
    ("iptables-save", "iptables-legacy-save"),
    ("iptables-restore", "iptables-legacy-restore"),
    ("iptables-bpfilter", "iptables-legacy"),
    ("iptables-bpfilter-save", "iptables-legacy-save"),
    ("iptables-bpfilter-restore", "iptables-legacy-restore"),
    ("ip6tables", "ip6tables-legacy"),
    ("ip6tables-save", "ip6tables-legacy-save"),
    ("ip6tables-restore", "ip6tables-legacy-restore"),
    ("ip6tables-bpfilter", "ip6tables-legacy"),
    ("ip6tables-bpfilter-save", "ip6tables-legacy-save"),
    ("ip6tables-bpfilter-restore", "ip6tables-legacy-restore"),
];

/// The iptables and ip6tables subcommands, with the legacy binary each one runs.
const SUBCOMMANDS: [(&str, &str); 6] = [
    ("iptables", "iptables-legacy"),
    ("iptables-save", "iptables-legacy-save"),
    ("iptables-restore", "iptables-legacy-restore"),
    ("ip6tables", "ip6tables-legacy"),
    ("ip6tables-save", "ip6tables-legacy-save"),
    ("ip6tables-restore", "ip6tables-legacy-restore"),
];

/// An iptables or ip6tables command line: the legacy binary it runs, its arguments, and
/// whether this executable was called by an iptables name ([`MULTICALL`]) rather than as
/// `bpfilter iptables ARGS` (and the other [`SUBCOMMANDS`]).
///
/// Both are found before the command line is parsed: building the parser of every subcommand
/// costs a fifth of a millisecond, a tenth of what `iptables -L` costs the kernel, on a path
/// that only needs the first word. The parser reads the same words the same way: `--socket`
/// before the subcommand's arguments (the one option `bpfilter iptables` takes) is left to it.
fn iptables_command(
    mut args: impl Iterator<Item = OsString>,
) -> Option<(&'static str, Vec<OsString>, bool)> {
    let argv0 = PathBuf::from(args.next()?);
    let name = argv0.file_name()?.to_str()?;
    if let Some(&(_, legacy)) = MULTICALL.iter().find(|(n, _)| *n == name) {
        return Some((legacy, args.collect(), true));
    }
    let sub = args.next()?;
    let &(_, legacy) = SUBCOMMANDS.iter().find(|(n, _)| sub == *n)?;
    let args: Vec<OsString> = args.collect();
    if args
        .first()
        .is_some_and(|a| a.as_encoded_bytes().starts_with(b"--socket"))
    {
        return None;
    }
    Some((legacy, args, false))
}

/// Runs the iptables or ip6tables command this command line is, if it is one.
fn pass_through() -> Option<ExitCode> {
    let (legacy, args, multicall) = iptables_command(std::env::args_os())?;
    let pass = cli::PassThrough { args };
    let socket = libbpfilter::socket_path();
    Some(finish(if multicall {
        cli::exec_multicall(legacy, &socket, pass)
    } else {
        cli::exec_legacy(legacy, &socket, pass)
    }))
}

/// An iptables command runs the legacy binary at once, as the C library starts this executable
/// (it runs `.init_array` with argc, argv and envp before `main`): the Rust runtime's set-up
/// and the standard library's `Command` are a quarter of a millisecond that the kernel's
/// iptables does not pay, on every command ([`cli::exec_early`]). Anything unusual (no daemon
/// listening yet, `-V` under an iptables name, a closed standard fd) returns here, and
/// [`pass_through`] does it again in `main`, with the waits and the words of the full path.
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static EARLY_IPTABLES: extern "C" fn(c_int, *const *const c_char, *const *const c_char) =
    early_iptables;

#[cfg(not(test))]
extern "C" fn early_iptables(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    use std::os::unix::ffi::OsStringExt;
    let _ = std::panic::catch_unwind(|| {
        let count = usize::try_from(argc).unwrap_or(0);
        if argv.is_null() {
            return;
        }
        let args = (0..count).filter_map(|i| {
            // SAFETY: the C library passes main's argv: argc pointers to NUL-terminated strings.
            let arg = unsafe { *argv.add(i) };
            // SAFETY: likewise.
            (!arg.is_null())
                .then(|| OsString::from_vec(unsafe { CStr::from_ptr(arg) }.to_bytes().to_vec()))
        });
        let Some((legacy, args, multicall)) = iptables_command(args) else {
            return;
        };
        if multicall && cli::prints_version(&args) {
            return;
        }
        cli::exec_early(legacy, &libbpfilter::socket_path(), &args);
    });
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
    if let Some(code) = pass_through() {
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

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use clap::CommandFactory;

    use super::{Args, MULTICALL, SUBCOMMANDS};

    /// The subcommands taken before parsing are exactly the parser's pass-through ones, each
    /// running the binary its multicall name runs.
    #[test]
    fn subcommands_taken_before_parsing_are_the_parsers_pass_through_ones() {
        let command = Args::command();
        let parsed: Vec<&str> = command
            .get_subcommands()
            .filter(|c| c.get_name().contains("tables"))
            .map(|c| c.get_name())
            .collect();
        let early: Vec<&str> = SUBCOMMANDS.iter().map(|(n, _)| *n).collect();
        assert_eq!(parsed, early);
        for (name, legacy) in SUBCOMMANDS {
            assert!(MULTICALL.contains(&(name, legacy)), "{name} runs {legacy}");
        }
    }

    /// Each name runs the legacy binary of its own family and tool: `ip6tables-bpfilter-save`
    /// and `ip6tables-save` run `ip6tables-legacy-save`.
    #[test]
    fn each_name_runs_the_legacy_binary_of_its_family_and_tool() {
        for (name, legacy) in MULTICALL {
            let plain = name.replace("-bpfilter", "");
            let want = match plain.split_once('-') {
                Some((family, tool)) => format!("{family}-legacy-{tool}"),
                None => format!("{plain}-legacy"),
            };
            assert_eq!(legacy, want, "{name}");
        }
    }

    /// Every link `make install` (and so the package) creates, and every name the maintainer
    /// scripts register in an alternative group, is one this executable answers to, and each
    /// family has its three commands under both names.
    #[test]
    fn installed_and_registered_names_are_multicall_names() {
        let makefile = include_str!("../Makefile");
        let start = makefile.find("\nIPT_NAMES").unwrap();
        let mut names = Vec::new();
        for line in makefile[start + 1..].lines() {
            let words = line.split_once(":=").map_or(line, |(_, w)| w);
            names.extend(words.split_whitespace().filter(|w| *w != "\\"));
            if !line.ends_with('\\') {
                break;
            }
        }
        let postinst = include_str!("../dist/debian/postinst");
        let groups = postinst
            .lines()
            .find_map(|l| l.strip_prefix("ALT_GROUPS="))
            .unwrap()
            .trim_matches('"');
        let mut registered = Vec::new();
        for group in groups.split_whitespace() {
            for tool in ["", "-save", "-restore"] {
                registered.push(format!("{group}{tool}"));
                registered.push(format!("{group}-bpfilter{tool}"));
            }
        }
        assert_eq!(registered.len(), 12, "{groups}");
        let known = |n: &str| MULTICALL.iter().any(|(m, _)| *m == n);
        for name in names
            .iter()
            .copied()
            .chain(registered.iter().map(String::as_str))
        {
            assert!(known(name), "{name} is not a MULTICALL name");
        }
        for (name, _) in MULTICALL.iter().filter(|(n, _)| n.contains("-bpfilter")) {
            assert!(names.contains(name), "make install does not link {name}");
        }
    }
}
