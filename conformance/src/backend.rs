//! Firewall backends: the kernel's iptables-legacy, or bpfilter (its daemon started by the
//! harness, the iptables front ends run with its client library preloaded).

use anyhow::{bail, Context, Result};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Outcome of loading a ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Exit code of iptables-restore.
    pub code: i32,
    /// Its stderr (not compared: messages may name different line numbers only when broken).
    pub stderr: String,
}

/// Which firewall filters a topology.
#[derive(Debug)]
pub enum Backend {
    /// `iptables-legacy-restore` / `iptables-legacy-save` on the kernel's own tables.
    Kernel,
    /// `bpfilter iptables-restore` / `bpfilter iptables-save` against a daemon we started.
    Bpfilter(Daemon),
    /// The kernel, loading `crate::mutate(ruleset)` instead of the ruleset (harness self-test).
    KernelMutant,
    /// The kernel, loading `crate::mutate_quiet(ruleset)`: its first REJECT becomes a DROP and
    /// its first LOG logs nothing, so that only the replies and the log lines can tell (the
    /// replacements of the last restore are kept to undo them in iptables-save).
    KernelMutantQuiet(std::sync::Mutex<Vec<(String, String)>>),
}

impl Backend {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Bpfilter(_) => "bpfilter",
            Backend::KernelMutant => "mutant",
            Backend::KernelMutantQuiet(_) => "quiet-mutant",
        }
    }

    fn command(&self, ns: &str, tool: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        // A private xtables lock: the host's /run/xtables.lock is shared with every other
        // iptables user on the machine, and the harness never runs two iptables at once.
        c.env("XTABLES_LOCKFILE", lock_file());
        match self {
            Backend::Kernel | Backend::KernelMutant | Backend::KernelMutantQuiet(_) => {
                c.arg(format!("iptables-legacy-{tool}"));
            }
            Backend::Bpfilter(d) => {
                c.arg(d.bin.join("bpfilter"))
                    .arg(format!("iptables-{tool}"))
                    .env("BPFILTER_SOCKET", &d.socket);
            }
        }
        c
    }

    /// Loads `text` (iptables-save format) into namespace `ns`; zeroes all counters.
    /// With `counters`, runs `iptables-restore -c` so that the file's counters are loaded.
    pub fn restore(&self, ns: &str, text: &str, counters: bool) -> Result<RestoreOutcome> {
        let mut cmd = self.command(ns, "restore");
        if counters {
            cmd.arg("-c");
        }
        let child = cmd
            .arg("-w")
            .arg("10")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn iptables-restore")?;
        let text = match self {
            Backend::KernelMutant => crate::mutate(text),
            Backend::KernelMutantQuiet(undo) => {
                let (m, u) = crate::mutate_quiet(text);
                if let Ok(mut g) = undo.lock() {
                    *g = u;
                }
                m
            }
            _ => text.to_string(),
        };
        let out = crate::netns::feed(child, &text)?;
        Ok(RestoreOutcome {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `iptables ARGS` (with the lock wait) in namespace `ns`; returns its exit code.
    pub fn iptables(&mut self, ns: &str, args: &[String]) -> Result<RestoreOutcome> {
        if args.first().map(String::as_str) == Some(RESTART) {
            // Only bpfilter has a daemon to restart; the kernel side just goes on.
            if let Backend::Bpfilter(d) = self {
                d.restart()?;
            }
            return Ok(RestoreOutcome {
                code: 0,
                stderr: String::new(),
            });
        }
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .env("XTABLES_LOCKFILE", lock_file());
        match self {
            Backend::Kernel | Backend::KernelMutant | Backend::KernelMutantQuiet(_) => {
                c.arg("iptables-legacy");
            }
            Backend::Bpfilter(d) => {
                c.arg(d.bin.join("bpfilter"))
                    .arg("iptables")
                    .env("BPFILTER_SOCKET", &d.socket);
            }
        }
        let out = c
            .args(["-w", "10"])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        Ok(RestoreOutcome {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `iptables-save -c -t filter` of namespace `ns`, without the dated comment lines. A failing
    /// iptables-save is an observation, not a harness error: its exit code and message are
    /// returned in place of the output, so that they show up in the comparison.
    pub fn save(&self, ns: &str) -> Result<String> {
        let out = self
            .command(ns, "save")
            .args(["-c", "-t", "filter"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Ok(format!(
                "<iptables-save exit {}: {}>\n",
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = normalize_save(&String::from_utf8_lossy(&out.stdout));
        Ok(match self {
            Backend::KernelMutant => crate::unmutate_save(&text),
            Backend::KernelMutantQuiet(undo) => {
                let mut t = text;
                if let Ok(g) = undo.lock() {
                    for (mutated, original) in g.iter() {
                        t = t.replace(mutated, original);
                    }
                }
                t
            }
            _ => text,
        })
    }
}

/// Pseudo-command in a ruleset's edits: restart the bpfilter daemon (no-op on the kernel).
pub const RESTART: &str = "@restart-daemon";

/// The harness's private xtables lock file.
pub fn lock_file() -> PathBuf {
    std::env::temp_dir().join(format!("conformance-{}.xtables.lock", std::process::id()))
}

/// Drops the `# Generated ...` / `# Completed ...` lines, which carry a date.
pub fn normalize_save(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Stops a daemon we spawned: SIGTERM, up to 5 s to exit, then SIGKILL; reaps it.
fn terminate(mut c: Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn spawn_daemon(bin: &Path, socket: &Path, bpffs: &Path, log: &Path) -> Result<Child> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Command::new(bin.join("bpfilter"))
        .arg("--socket")
        .arg(socket)
        .arg("daemon")
        .arg("--bpffs")
        .arg(bpffs)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .context("start bpfilter daemon")
}

/// A bpfilter daemon started (and stopped) by the harness.
#[derive(Debug)]
pub struct Daemon {
    /// Directory holding `bpfilter` and `libbpfilter.so`.
    pub bin: PathBuf,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// Its private bpffs pin directory.
    pub bpffs: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

/// Where the bpfilter binaries are: `$BPFILTER_BIN_DIR`, else `<workspace>/target/release`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("BPFILTER_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("release"),
    }
}

/// Checks that the bpfilter binaries exist; the error says what is missing and how to build it.
pub fn check_binaries(bin: &Path) -> Result<()> {
    for f in ["bpfilter", "libbpfilter.so"] {
        if !bin.join(f).exists() {
            bail!(
                "bpfilter binary {} is missing: run `make` (cargo build --release --workspace) first, \
                 or point BPFILTER_BIN_DIR at the directory holding bpfilter and libbpfilter.so",
                bin.join(f).display()
            );
        }
    }
    Ok(())
}

impl Daemon {
    /// Starts `bpfilter daemon` from the host mount namespace with a private socket and pin
    /// directory, and waits until its socket accepts connections.
    pub fn start(bin: &Path, tag: &str) -> Result<Daemon> {
        check_binaries(bin)?;
        let dir = std::env::temp_dir().join(format!("bpfilter-conf-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("sock");
        let _ = std::fs::remove_file(&socket);
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/bpfilter-conf-{tag}"));
        let log = dir.join("daemon.log");
        let child = spawn_daemon(bin, &socket, &bpffs, &log)?;
        let mut d = Daemon {
            bin: bin.to_path_buf(),
            socket,
            bpffs,
            child: Some(child),
            log,
        };
        d.wait_ready()?;
        Ok(d)
    }

    /// Stops the daemon without flushing (its pins keep filtering) and starts it again, as an
    /// administrator restarting the service would: rules and counters must come back.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
        let _ = std::fs::remove_file(&self.socket);
        self.child = Some(spawn_daemon(
            &self.bin,
            &self.socket,
            &self.bpffs,
            &self.log,
        )?);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let d = self;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if UnixStream::connect(&d.socket).is_ok() {
                return Ok(());
            }
            if let Some(c) = d.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!(
                        "bpfilter daemon exited ({st}) before accepting: {}",
                        d.log_tail()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "bpfilter daemon did not accept on {} within 20 s",
                    d.socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Current size of the daemon's log (to read what a case added).
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Warnings and errors the daemon logged after byte `from` (ANSI colours removed).
    pub fn log_warnings_since(&self, from: u64) -> Vec<String> {
        let s = std::fs::read(&self.log).unwrap_or_default();
        let s = String::from_utf8_lossy(s.get(from as usize..).unwrap_or(&[])).into_owned();
        let mut out = Vec::new();
        for l in s.lines() {
            let mut clean = String::with_capacity(l.len());
            let mut it = l.chars();
            while let Some(c) = it.next() {
                if c == '\u{1b}' {
                    for d in it.by_ref() {
                        if d == 'm' {
                            break;
                        }
                    }
                } else {
                    clean.push(c);
                }
            }
            if clean.contains("WARN") || clean.contains("ERROR") {
                out.push(clean);
            }
        }
        out
    }

    /// True while the daemon process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Flushes everything it attached, stops it, removes its pins.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = Command::new(self.bin.join("bpfilter"))
                .arg("--socket")
                .arg(&self.socket)
                .args(["flush", "--all"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            terminate(c);
        }
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_file(&self.socket);
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
