//! The two pieces of systemd's service protocol the daemon speaks, without libsystemd:
//! socket activation (`sd_listen_fds(3)`: the listening socket arrives as fd 3, announced by
//! `LISTEN_PID`/`LISTEN_FDS`) and readiness (`sd_notify(3)`: one datagram to the Unix socket
//! named by `NOTIFY_SOCKET`, abstract when it starts with `@`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};

use nix::sys::socket::{getsockopt, sockopt};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Why an inherited socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// systemd passed a number of sockets other than one.
    #[error("socket activation passed {0} sockets; bpfilter.socket must declare exactly one")]
    Count(u32),
    /// fd 3 is not a listening Unix stream socket.
    #[error("the socket passed by systemd is not a listening Unix stream socket")]
    NotUnixStream,
}

/// The listening socket systemd passed to this process, if it passed one.
///
/// The `LISTEN_*` variables are removed whatever the outcome, so that the processes this one
/// starts (iptables for the kernel's tables) do not believe the socket is theirs.
pub fn inherited_listener() -> Result<Option<UnixListener>, ActivationError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    // For another process (a parent's variables leaked to us): not ours.
    if pid.and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        return Ok(None);
    }
    let count = fds.and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
    match count {
        0 => return Ok(None),
        1 => {}
        n => return Err(ActivationError::Count(n)),
    }
    // SAFETY: sd_listen_fds' protocol: LISTEN_PID names this process and LISTEN_FDS=1, so fd 3
    // was opened by systemd for us and nothing else in this process owns it. The variables are
    // gone, so this runs once.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    let stream =
        getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == nix::sys::socket::SockType::Stream);
    let unix = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
    )
    .is_ok();
    if !(listening && stream && unix) {
        return Err(ActivationError::NotUnixStream);
    }
    let listener = UnixListener::from(fd);
    // systemd hands the socket over blocking or not as the unit says; we accept blocking.
    let _ = listener.set_nonblocking(false);
    Ok(Some(listener))
}

/// Sends `state` (for example `READY=1\nSTATUS=...`) to the service manager, if one asked for
/// notifications. Errors are returned for the log; without `NOTIFY_SOCKET` this does nothing.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(&path))?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn notify_sends_one_datagram_to_the_named_socket() {
        let dir = std::env::temp_dir().join(format!("bpfilter-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1\nSTATUS=serving").unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        // Without a manager there is nothing to tell, and no error.
        notify("READY=1").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn variables_for_another_process_are_ignored_and_removed() {
        std::env::set_var("LISTEN_PID", "1");
        std::env::set_var("LISTEN_FDS", "1");
        assert!(inherited_listener().unwrap().is_none());
        assert!(std::env::var_os("LISTEN_FDS").is_none());
    }
}
