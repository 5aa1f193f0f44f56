//! Command-line front ends: the iptables wrappers and the daemon's query commands.

use std::ffi::OsString;
use std::os::fd::IntoRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use libbpfilter::wire::Request;
use libbpfilter::Client;

/// Arguments handed unchanged to an iptables-legacy binary.
#[derive(Debug, clap::Args)]
pub struct PassThrough {
    /// Arguments for the iptables binary, passed through unchanged.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<OsString>,
}

/// `bpfilter daemon` options.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// bpffs folder for pins (bpffs is mounted at /sys/fs/bpf if missing).
    #[arg(long, default_value = crate::daemon::DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// How programs read packet headers: the fastest the kernel verifies (auto), or one
    /// strategy (refused at start if the kernel does not verify it).
    #[arg(long, value_enum, default_value_t = crate::probe::AccessChoice::Auto)]
    pub packet_access: crate::probe::AccessChoice,
    /// Who serves ip6tables: bpfilter (its filter table compiled to BPF, the other tables the
    /// kernel's ip6_tables, as for iptables), or the kernel's ip6_tables alone.
    #[arg(long, value_enum, default_value_t = crate::daemon::Ipv6Engine::Bpf)]
    pub ipv6: crate::daemon::Ipv6Engine,
}

/// `bpfilter status` options.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `bpfilter counters` options.
#[derive(Debug, clap::Args)]
pub struct CountersArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `bpfilter dump` options.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// Only this hook: INPUT, FORWARD or OUTPUT.
    #[arg(long)]
    pub hook: Option<String>,
}

/// `bpfilter flush` options.
#[derive(Debug, clap::Args)]
pub struct FlushArgs {
    /// Every namespace, not only the caller's.
    #[arg(long)]
    pub all: bool,
}

/// Runs the daemon until it is stopped.
pub fn daemon(socket: &Path, args: DaemonArgs) -> Result<ExitCode> {
    let result = crate::daemon::run(crate::daemon::Config {
        socket: socket.to_owned(),
        bpffs: args.bpffs,
        access: args.packet_access,
        ipv6: args.ipv6,
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A kernel bpfilter cannot run on does not change by restarting: a status of its own
        // lets the service manager stop trying (RestartPreventExitStatus=).
        Err(err) if err.downcast_ref::<crate::probe::Missing>().is_some() => {
            eprintln!("bpfilter: {err:#}");
            Ok(ExitCode::from(EXIT_UNSUPPORTED_KERNEL))
        }
        Err(err) => Err(err),
    }
}

/// The daemon's exit status on a kernel it cannot run on (sysexits' EX_UNAVAILABLE).
pub const EXIT_UNSUPPORTED_KERNEL: u8 = 69;

/// Where `libbpfilter.so` is: `BPFILTER_PRELOAD`, else beside this executable, else the
/// install location.
fn preload_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BPFILTER_PRELOAD") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the bpfilter executable")?;
    let candidates = [
        exe.parent().map(|d| d.join("libbpfilter.so")),
        // installed: PREFIX/sbin/bpfilter and PREFIX/lib/bpfilter/libbpfilter.so
        exe.parent()
            .and_then(Path::parent)
            .map(|d| d.join("lib/bpfilter/libbpfilter.so")),
        exe.parent()
            .and_then(Path::parent)
            .map(|d| d.join("lib/libbpfilter.so")),
        Some(PathBuf::from("/usr/local/lib/libbpfilter.so")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .context("libbpfilter.so not found beside the bpfilter executable nor in /usr/local/lib")
}

/// Replaces this process with `binary ARGS`, `libbpfilter.so` preloaded. Returns only on error.
pub fn exec_legacy(binary: &str, socket: &Path, pass: PassThrough) -> Result<ExitCode> {
    // A daemon that is starting or restarting is waited for (a bounded time), as iptables
    // waits for nothing against the kernel.
    let connection = match libbpfilter::connect_waiting(socket) {
        Ok(stream) => Some(stream),
        // A caller the socket refuses (not root) gets iptables' own "Permission denied (you
        // must be root)", exactly as against the kernel; only a missing daemon gets our line.
        Err(err) if err.errno() == libc::EPERM => None,
        Err(err) => {
            // On a kernel bpfilter cannot run on, the daemon refused to start: say why, not
            // only that it is absent.
            match crate::probe::probe().target() {
                Err(missing) => eprintln!("bpfilter: {missing}"),
                Ok(_) => eprintln!("bpfilter: {err}"),
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let preload = preload_path()?;
    let mut ld_preload = OsString::from(&preload);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        ld_preload.push(":");
        ld_preload.push(old);
    }
    let mut command = Command::new(find_in_path(binary));
    command
        .arg0(binary)
        .args(&pass.args)
        .env("LD_PRELOAD", ld_preload)
        .env(libbpfilter::SOCKET_ENV, socket);
    // The connection just opened serves the program's calls too (one accept less for the
    // daemon): it stays open across the exec, and the preloaded library takes it over.
    if let Some(stream) = connection {
        // open until the exec, and then the program's
        let fd = stream.into_raw_fd();
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .context("keeping the daemon connection open across exec")?;
        command.env(libbpfilter::CONNECTION_ENV, fd.to_string());
    }
    let err = command.exec();
    bail!("cannot run {binary}: {err}")
}

/// `binary`'s path in `PATH`, found as execvp would, but by looking rather than by trying to
/// run it in every directory before its own (each failed exec costs more than a stat); `binary`
/// itself if it is not found (the exec then says why).
fn find_in_path(binary: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| PathBuf::from(binary))
}

/// As [`exec_legacy`], for this executable called as `iptables` or `ip6tables` (or their
/// `-save` and `-restore` commands, or their `-bpfilter` names) through the alternatives
/// system. One difference: `-V` says that bpfilter runs the rules, after the legacy binary's
/// own version line (`ip6tables v1.8.9 (legacy), rules run by bpfilter 0.1.0`): the backend
/// shows where tools look for it, and the words they parse (`vX.Y.Z`, `(legacy)`) stay.
pub fn exec_multicall(binary: &str, socket: &Path, pass: PassThrough) -> Result<ExitCode> {
    if let [only] = pass.args.as_slice() {
        if only == "-V" || only == "--version" {
            let out = Command::new(binary)
                .arg(only)
                .output()
                .with_context(|| format!("running {binary}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            if let Some(first) = lines.next() {
                println!(
                    "{first}, rules run by bpfilter {}",
                    env!("CARGO_PKG_VERSION")
                );
            }
            for line in lines {
                println!("{line}");
            }
            std::io::Write::write_all(&mut std::io::stderr(), &out.stderr)?;
            return Ok(ExitCode::from(
                u8::try_from(out.status.code().unwrap_or(1)).unwrap_or(1),
            ));
        }
    }
    exec_legacy(binary, socket, pass)
}

/// Prints the daemon's view of the caller's namespace.
pub fn status(socket: &Path, _args: StatusArgs) -> Result<ExitCode> {
    query(
        socket,
        &Request::Status {
            payload: Vec::new(),
        },
    )
}

/// Prints the live counters of the caller's namespace.
pub fn counters(socket: &Path, args: CountersArgs) -> Result<ExitCode> {
    query(
        socket,
        &Request::Counters {
            payload: vec![u8::from(args.json)],
        },
    )
}

/// Prints the disassembly of the caller's namespace's programs.
pub fn dump(socket: &Path, args: DumpArgs) -> Result<ExitCode> {
    query(
        socket,
        &Request::Dump {
            hook: args.hook,
            payload: Vec::new(),
        },
    )
}

/// Removes what bpfilter attached.
pub fn flush(socket: &Path, args: FlushArgs) -> Result<ExitCode> {
    query(
        socket,
        &Request::Flush {
            all: args.all,
            payload: Vec::new(),
        },
    )
}

fn query(socket: &Path, request: &Request) -> Result<ExitCode> {
    let mut client = Client::connect_to(socket)?;
    let text = client.call(request)?;
    print!("{}", String::from_utf8_lossy(&text));
    Ok(ExitCode::SUCCESS)
}
