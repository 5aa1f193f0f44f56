//! Socket calls nix does not offer.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::error::{last_errno, Result, SysError};

/// Dissolves a datagram socket's association (`connect` to an AF_UNSPEC address): the peer
/// is forgotten and, unless the socket was bound explicitly, so is the source address the
/// previous `connect` picked, so that the next `connect` routes afresh.
pub fn disconnect(fd: BorrowedFd<'_>) -> Result<()> {
    let addr = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: a valid fd borrowed for the call and a fully initialised sockaddr of the size
    // passed; connect does not keep the pointer.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(SysError::Syscall {
            call: "connect(AF_UNSPEC)",
            errno: last_errno(),
        });
    }
    Ok(())
}
