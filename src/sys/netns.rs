//! Network namespaces: run code on a thread that entered a namespace, and identify namespaces.
//!
//! `setns(CLONE_NEWNET)` changes only the calling thread, and everything a thread creates
//! (sockets, netfilter links) belongs to the namespace the thread is in at that moment. The
//! caller's own thread never changes namespace: [`in_netns`] uses a short-lived thread.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;

use super::error::{io_path, nix_errno, Result, SysError};

/// Runs `f` on a new thread that first entered the network namespace `netns` (an fd of
/// `/proc/PID/ns/net` or `/run/netns/NAME`), and returns its result. A panic in `f` is
/// propagated to the caller.
pub fn in_netns<T: Send>(netns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> Result<T> {
    #[cfg(test)]
    if let Some(k) = super::fake::current() {
        return super::fake::in_netns(k, netns_id(netns)?, f);
    }
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("bpfilter-netns".into())
            .spawn_scoped(s, move || -> Result<T> {
                // setns only changes this new thread's namespace, which ends with the thread.
                nix::sched::setns(netns, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    SysError::Syscall {
                        call: "setns(CLONE_NEWNET)",
                        errno: nix_errno(e),
                    }
                })?;
                Ok(f())
            })
            .map_err(|e| SysError::Syscall {
                call: "pthread_create",
                errno: e.raw_os_error().unwrap_or(libc::EAGAIN),
            })?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Identity of the namespace behind `fd`: (st_dev, st_ino) of its nsfs file, the pair
/// `bpf_map_info.netns_dev/netns_ino` and `ip netns identify` use (the inode is the number in
/// `net:[...]`).
pub fn netns_id(fd: BorrowedFd<'_>) -> Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| SysError::Syscall {
        call: "fstat",
        errno: nix_errno(e),
    })?;
    Ok((st.st_dev, st.st_ino))
}

/// Whether `fd` is a network namespace (nsfs, `NS_GET_NSTYPE` = CLONE_NEWNET).
pub fn is_netns(fd: BorrowedFd<'_>) -> bool {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument; on a file that is not a namespace it fails.
    let ty = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    ty == libc::CLONE_NEWNET
}

/// Opens a namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`).
pub fn open_netns(path: impl AsRef<Path>) -> Result<OwnedFd> {
    let path = path.as_ref();
    match std::fs::File::open(path) {
        Ok(f) => Ok(OwnedFd::from(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SysError::not_found(format!(
            "network namespace {}",
            path.display()
        ))),
        Err(e) => Err(io_path("open", path, &e)),
    }
}

/// An fd of the calling thread's network namespace.
pub fn current_netns() -> Result<OwnedFd> {
    open_netns("/proc/thread-self/ns/net")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::{require_netns, TempNetns};
    use std::os::fd::AsFd;

    #[test]
    fn enter_and_identify() {
        if !require_netns() {
            return;
        }
        let ns = TempNetns::new("id");
        let here = netns_id(current_netns().unwrap().as_fd()).unwrap();
        let there = netns_id(ns.fd()).unwrap();
        assert_ne!(here, there);
        // The new thread sees the target namespace; the caller's thread does not move.
        let seen = in_netns(ns.fd(), || {
            netns_id(current_netns().unwrap().as_fd()).unwrap()
        })
        .unwrap();
        assert_eq!(seen, there);
        assert_eq!(netns_id(current_netns().unwrap().as_fd()).unwrap(), here);
        // Borrowing from the caller works (scoped thread).
        let v = [1, 2, 3];
        assert_eq!(in_netns(ns.fd(), || v.iter().sum::<i32>()).unwrap(), 6);
        // Not a namespace fd: setns fails with EINVAL.
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(
            in_netns(f.as_fd(), || ()).unwrap_err().errno(),
            libc::EINVAL
        );
        assert!(matches!(
            open_netns("/run/netns/bpfltr-none-such"),
            Err(SysError::NotFound { .. })
        ));
    }
}
