//! One error type for the system layer; every variant says which call failed and keeps the
//! kernel's errno so that the daemon can hand it back to iptables unchanged.

use std::io;
use std::path::PathBuf;

/// Result alias of the system layer.
pub type Result<T, E = SysError> = std::result::Result<T, E>;

/// Failure of a BPF syscall, a BTF lookup or a filesystem step.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A syscall (or the libbpf wrapper of one) failed.
    #[error("{call}: {}", io::Error::from_raw_os_error(*errno))]
    Syscall {
        /// The libbpf function or syscall name.
        call: &'static str,
        /// Positive errno.
        errno: i32,
    },
    /// A call on a path failed (pin, bpf_obj_get, mount, mkdir, open).
    #[error("{call} {}: {}", path.display(), io::Error::from_raw_os_error(*errno))]
    Path {
        /// The libbpf function or syscall name.
        call: &'static str,
        /// The path it was given.
        path: PathBuf,
        /// Positive errno.
        errno: i32,
    },
    /// BPF_PROG_LOAD failed; `log` is the verifier log (retrieved with a retry if needed).
    #[error("BPF_PROG_LOAD: {}\n{log}", io::Error::from_raw_os_error(*errno))]
    Load {
        /// Positive errno of the load.
        errno: i32,
        /// The verifier log (may be empty if the kernel wrote none).
        log: String,
    },
    /// BTF is present but does not have the expected shape (bitfield, not a struct, ...).
    #[error("BTF: {what}")]
    Btf {
        /// What was looked up and why it does not fit.
        what: String,
    },
    /// A BTF name, map key, pin, object or namespace does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A caller-side argument is wrong (buffer size, name length, ...), refused before any syscall.
    #[error("invalid argument: {what}")]
    Invalid {
        /// What is wrong with it.
        what: String,
    },
}

impl SysError {
    /// The positive errno this error stands for (EINVAL for shape errors, ENOENT for NotFound).
    pub fn errno(&self) -> i32 {
        match self {
            SysError::Syscall { errno, .. }
            | SysError::Path { errno, .. }
            | SysError::Load { errno, .. } => *errno,
            SysError::Btf { .. } | SysError::Invalid { .. } => libc::EINVAL,
            SysError::NotFound { .. } => libc::ENOENT,
        }
    }

    /// An `Invalid` error from anything printable.
    pub(crate) fn invalid(what: impl Into<String>) -> SysError {
        SysError::Invalid { what: what.into() }
    }

    /// A `NotFound` error from anything printable.
    pub(crate) fn not_found(what: impl Into<String>) -> SysError {
        SysError::NotFound { what: what.into() }
    }
}

/// The calling thread's errno, as a positive number (EIO if the OS gave none).
pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .filter(|e| *e > 0)
        .unwrap_or(libc::EIO)
}

/// The errno of a failed nix call, as a positive number (EIO if the OS gave none), like
/// [`last_errno`].
pub(crate) fn nix_errno(e: nix::errno::Errno) -> i32 {
    Some(e as i32).filter(|e| *e > 0).unwrap_or(libc::EIO)
}

/// Turns a libbpf return value into a result. libbpf 1.x returns `-errno` on failure (and also
/// sets errno).
pub(crate) fn check(call: &'static str, ret: libc::c_int) -> Result<libc::c_int> {
    if ret >= 0 {
        Ok(ret)
    } else {
        Err(SysError::Syscall {
            call,
            errno: ret.checked_neg().unwrap_or(libc::EIO),
        })
    }
}

/// Like [`check`], for calls on a path.
pub(crate) fn check_path(
    call: &'static str,
    path: &std::path::Path,
    ret: libc::c_int,
) -> Result<libc::c_int> {
    check(call, ret).map_err(|e| SysError::Path {
        call,
        path: path.to_path_buf(),
        errno: e.errno(),
    })
}

/// Wraps a std I/O error on a path.
pub(crate) fn io_path(call: &'static str, path: &std::path::Path, err: &io::Error) -> SysError {
    SysError::Path {
        call,
        path: path.to_path_buf(),
        errno: err.raw_os_error().unwrap_or(libc::EIO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_return_carries_errno() {
        let e = check("bpf_map_create", -libc::EPERM).unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
        assert!(e.to_string().starts_with("bpf_map_create: "), "{e}");
        assert_eq!(check("x", 7).unwrap(), 7);
    }

    #[test]
    fn errno_of_shape_errors() {
        assert_eq!(SysError::not_found("sk_buff.foo").errno(), libc::ENOENT);
        assert_eq!(SysError::invalid("short key").errno(), libc::EINVAL);
        assert_eq!(
            SysError::Btf {
                what: "bitfield".into()
            }
            .errno(),
            libc::EINVAL
        );
        let l = SysError::Load {
            errno: libc::EACCES,
            log: "R0 bad".into(),
        };
        assert_eq!(l.errno(), libc::EACCES);
        assert!(l.to_string().contains("R0 bad"));
    }
}
