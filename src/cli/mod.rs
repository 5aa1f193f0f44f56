//! Command-line front ends: the iptables wrappers and the daemon's query commands.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
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
    let err = exec_preloaded(binary, socket, connection, &pass.args)?;
    bail!("cannot run {binary}: {err}")
}

/// [`exec_legacy`] as the executable starts, before the Rust runtime's set-up: one connection
/// attempt, and no word on failure. It returns whenever anything is not as expected (no
/// daemon listening yet, no library, no binary), and `exec_legacy` then does it again, waits
/// for a starting daemon, and says what is wrong. The runtime's set-up and `Command` cost a
/// quarter of a millisecond that the kernel's iptables does not pay.
pub fn exec_early(binary: &str, socket: &Path, args: &[OsString]) {
    // The runtime's set-up opens /dev/null on a closed standard fd. Before it, the daemon's
    // connection could take fd 0, 1 or 2 (iptables-restore would read its rules from it).
    let closed = |fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err();
    if (0..3).any(closed) {
        return;
    }
    if let Ok(stream) = UnixStream::connect(socket) {
        let _ = exec_preloaded(binary, socket, Some(stream), args);
    }
}

/// Replaces this process with `binary ARGS` (found in `PATH`), `libbpfilter.so` preloaded
/// (before what `LD_PRELOAD` held), the socket named in `BPFILTER_SOCKET`, and `connection`
/// handed over to the library: it stays open across the exec and serves the program's calls
/// (one accept less for the daemon). The program starts with every signal at its default
/// action and none blocked, as from a shell (the Rust runtime ignores SIGPIPE). Returns the
/// exec's error.
fn exec_preloaded(
    binary: &str,
    socket: &Path,
    connection: Option<UnixStream>,
    args: &[OsString],
) -> Result<nix::Error> {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    let cstring = |bytes: Vec<u8>| CString::new(bytes).context("a NUL byte in an argument");
    let preload = preload_path()?;
    let mut ld_preload = preload.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        ld_preload.push(":");
        ld_preload.push(old);
    }
    let connection: Option<OwnedFd> = connection.map(OwnedFd::from);
    if let Some(fd) = &connection {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .context("keeping the daemon connection open across exec")?;
    }
    let mut set: Vec<(OsString, OsString)> = vec![
        ("LD_PRELOAD".into(), ld_preload),
        (libbpfilter::SOCKET_ENV.into(), socket.into()),
    ];
    if let Some(fd) = &connection {
        set.push((
            libbpfilter::CONNECTION_ENV.into(),
            fd.as_raw_fd().to_string().into(),
        ));
    }
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(key, _)| !set.iter().any(|(k, _)| k == key))
        .collect();
    vars.extend(set);
    let mut env = Vec::new();
    for (key, value) in vars {
        let mut entry = key.into_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        env.push(cstring(entry)?);
    }
    let mut argv = vec![cstring(binary.into())?];
    for a in args {
        argv.push(cstring(a.as_bytes().to_vec())?);
    }
    let path = cstring(find_in_path(binary).into_os_string().into_vec())?;
    // SAFETY: SIG_DFL installs no handler.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.context("resetting SIGPIPE")?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .context("unblocking signals")?;
    let err = match nix::unistd::execve(&path, &argv, &env) {
        Err(err) => err,
        Ok(never) => match never {},
    };
    drop(connection);
    Ok(err)
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

/// Are `args` the one `-V` (or `--version`) that [`exec_multicall`] answers itself?
pub fn prints_version(args: &[OsString]) -> bool {
    matches!(args, [only] if only == "-V" || only == "--version")
}

/// As [`exec_legacy`], for this executable called as `iptables` or `ip6tables` (or their
/// `-save` and `-restore` commands, or their `-bpfilter` names) through the alternatives
/// system. One difference: `-V` says that bpfilter runs the rules, after the legacy binary's
/// own version line (`ip6tables v1.8.9 (legacy), rules run by bpfilter 0.1.0`): the backend
/// shows where tools look for it, and the words they parse (`vX.Y.Z`, `(legacy)`) stay.
pub fn exec_multicall(binary: &str, socket: &Path, pass: PassThrough) -> Result<ExitCode> {
    if prints_version(&pass.args) {
        let out = Command::new(binary)
            .args(&pass.args)
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
