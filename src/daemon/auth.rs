//! Who may talk to the daemon: callers with CAP_NET_ADMIN, as the kernel requires for the
//! IPT_SO_* socket options (`ns_capable(net->user_ns, CAP_NET_ADMIN)`, else EPERM).

use std::os::unix::net::UnixStream;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

const CAP_NET_ADMIN: u32 = 12;

/// The peer's credentials as the kernel recorded them at connect time.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Process id of the connecting process.
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
}

/// Reads SO_PEERCRED.
pub fn peer(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = getsockopt(stream, PeerCredentials).map_err(std::io::Error::from)?;
    Ok(Peer {
        pid: cred.pid(),
        uid: cred.uid(),
    })
}

/// Whether the peer holds CAP_NET_ADMIN in its effective set (`capget`). A peer whose process
/// is gone does not.
pub fn has_net_admin(peer: &Peer) -> bool {
    // A process's capabilities are those of its own user namespace: a process that made a
    // user namespace holds them all there, but none over our namespaces.
    // The peer's is read on each request (a process may unshare its user namespace between
    // two), the daemon's once.
    use std::os::unix::fs::MetadataExt;
    static OURS: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let theirs = ns(&format!("/proc/{}/ns/user", peer.pid));
    if theirs.is_none() || theirs != *OURS.get_or_init(|| ns("/proc/self/ns/user")) {
        return false;
    }
    crate::sys::effective_capabilities(peer.pid)
        .is_ok_and(|caps| caps & (1u64 << CAP_NET_ADMIN) != 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn this_process_is_judged_by_its_capabilities() {
        let me = Peer {
            pid: std::process::id() as i32,
            uid: nix::unistd::geteuid().as_raw(),
        };
        // (the set itself is checked against /proc by sys::caps' tests)
        let caps = crate::sys::effective_capabilities(me.pid).unwrap();
        assert_eq!(has_net_admin(&me), caps & (1 << CAP_NET_ADMIN) != 0);
        assert!(!has_net_admin(&Peer {
            pid: i32::MAX,
            uid: 0
        }));
    }
}
