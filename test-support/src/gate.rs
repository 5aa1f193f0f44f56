//! The one gate of every privileged test: under `CI=true` a missing privilege is a failure,
//! otherwise the test is skipped, visibly (`SKIPPED (not CI): why` on stderr).

use std::path::Path;
use std::process::Command;

/// Whether `CI=true` is set: then a test that cannot run fails.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Says why a privileged test cannot run: panics under `CI=true`, otherwise prints the
/// `SKIPPED` line (the caller then returns).
pub fn unavailable(why: &str) {
    if ci() {
        panic!("privileged test cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED (not CI): {why}");
}

/// True when nothing is missing; otherwise [`unavailable`] with the reason, then false.
pub fn ready(missing: Option<String>) -> bool {
    match missing {
        None => true,
        Some(why) => {
            unavailable(&why);
            false
        }
    }
}

/// `Some("not root")` unless the process runs as root.
pub fn not_root() -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| "not root".to_owned())
}

/// The first of `tools` that is not on PATH (`sh -c 'command -v TOOL'`), as a reason.
pub fn missing_tools(tools: &[&str]) -> Option<String> {
    tools.iter().find_map(|t| {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        (!found).then(|| format!("{t} missing"))
    })
}

/// True when an end-to-end test may run (root, the kernel's BTF, iptables-legacy); false,
/// after [`unavailable`] said why, when it must be skipped.
pub fn privileged() -> bool {
    ready(not_root().or_else(|| {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            Some("no vmlinux BTF".to_owned())
        } else if Command::new("iptables-legacy")
            .arg("--version")
            .output()
            .map_or(true, |o| !o.status.success())
        {
            Some("iptables-legacy missing".to_owned())
        } else {
            None
        }
    }))
}
