//! bpffs: mount it when missing, create the pin root, pin/get/unpin objects, remove pin trees.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::error::{check_path, io_path, Result, SysError};

/// `BPF_FS_MAGIC` from include/uapi/linux/magic.h.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where bpffs is mounted by convention.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";

pub(crate) fn path_cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SysError::invalid(format!("path {} contains NUL", path.display())))
}

/// Whether `path` (which must exist) is on a bpffs.
pub fn is_bpffs(path: impl AsRef<Path>) -> Result<bool> {
    let path = path.as_ref();
    #[cfg(test)]
    if let Some(k) = super::fake::current() {
        return Ok(k.exists(path));
    }
    let c = path_cstring(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c is NUL-terminated; st is writable memory for one struct statfs.
    let ret = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    check_path(
        "statfs",
        path,
        if ret == 0 {
            0
        } else {
            -super::error::last_errno()
        },
    )?;
    // SAFETY: statfs succeeded and filled st.
    let st = unsafe { st.assume_init() };
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between libc targets"
    )]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `root` is a directory on bpffs: mounts bpffs at /sys/fs/bpf if nothing (or
/// something else) is mounted there and `root` is below it, then creates `root` (mkdir -p).
pub fn ensure_bpffs(root: impl AsRef<Path>) -> Result<()> {
    let root = root.as_ref();
    #[cfg(test)]
    if let Some(k) = super::fake::current() {
        return k.ensure_dir(root);
    }
    let mount = Path::new(BPFFS_MOUNT);
    if root.starts_with(mount) {
        std::fs::create_dir_all(mount).map_err(|e| io_path("mkdir", mount, &e))?;
        if !is_bpffs(mount)? {
            nix::mount::mount(
                Some("bpf"),
                mount,
                Some("bpf"),
                nix::mount::MsFlags::empty(),
                Some("mode=0700"),
            )
            .map_err(|e| SysError::Path {
                call: "mount(bpf)",
                path: mount.to_path_buf(),
                errno: e as i32,
            })?;
        }
    }
    std::fs::create_dir_all(root).map_err(|e| io_path("mkdir", root, &e))?;
    if !is_bpffs(root)? {
        return Err(SysError::invalid(format!(
            "{} is not on a bpffs",
            root.display()
        )));
    }
    Ok(())
}

/// Removes a pin tree (pins and folders) recursively; a missing `dir` is fine. Pinned links
/// detach and pinned maps/programs are freed once no fd refers to them any more.
pub fn remove_pins(dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    #[cfg(test)]
    if let Some(k) = super::fake::current() {
        return k.remove_tree(dir);
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_path("remove_dir_all", dir, &e)),
    }
}

/// Removes one pin (the object lives on while fds refer to it).
pub fn unpin(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    #[cfg(test)]
    if let Some(k) = super::fake::current() {
        return k.unpin(path);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(SysError::not_found(format!("pin {}", path.display())))
        }
        Err(e) => Err(io_path("unlink", path, &e)),
    }
}

/// `bpf_obj_pin` of any BPF object fd.
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let c = path_cstring(path)?;
    // SAFETY: valid fd and NUL-terminated path.
    let ret = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    check_path("bpf_obj_pin", path, ret).map(drop)
}

/// Kind of BPF object behind an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjKind {
    Map,
    Prog,
    Link,
}

impl ObjKind {
    /// Whether `name` is the anon inode name the kernel gives such fds (bpf_map_new_fd,
    /// bpf_prog_new_fd, bpf_link_new_fd; links were "bpf_link" before "bpf-link").
    fn matches_inode(self, name: &[u8]) -> bool {
        match self {
            ObjKind::Map => name == b"anon_inode:bpf-map",
            ObjKind::Prog => name == b"anon_inode:bpf-prog",
            ObjKind::Link => name == b"anon_inode:bpf-link" || name == b"anon_inode:bpf_link",
        }
    }
}

/// `bpf_obj_get` of a pin that must hold an object of `kind`; ENOENT becomes NotFound, another
/// kind of object EINVAL (bpf_obj_get_info_by_fd would accept any kind and fill the wrong
/// struct).
pub(crate) fn obj_get_kind(path: &Path, kind: ObjKind) -> Result<OwnedFd> {
    let fd = obj_get(path)?;
    let link = Path::new("/proc/self/fd").join(fd.as_raw_fd().to_string());
    let target = std::fs::read_link(&link).map_err(|e| io_path("readlink", &link, &e))?;
    if !kind.matches_inode(target.as_os_str().as_bytes()) {
        return Err(SysError::invalid(format!(
            "pin {} holds {}, not a {kind:?}",
            path.display(),
            target.display()
        )));
    }
    Ok(fd)
}

/// `bpf_obj_get` of a pin; ENOENT becomes NotFound.
pub(crate) fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = path_cstring(path)?;
    // SAFETY: NUL-terminated path; returns a new fd or -errno.
    let ret = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    let fd = match check_path("bpf_obj_get", path, ret) {
        Ok(fd) => fd,
        Err(e) if e.errno() == libc::ENOENT => {
            return Err(SysError::not_found(format!("pin {}", path.display())))
        }
        Err(e) => return Err(e),
    };
    // SAFETY: bpf_obj_get succeeded, so fd is a new fd of the pinned object, owned by nobody
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::map::{Map, MapType};
    use crate::sys::testutil::{require_bpf, TempPinDir};

    #[test]
    fn mounts_bpffs_when_missing() {
        if !crate::sys::testutil::require_netns() {
            return;
        }
        // In a private mount namespace of a helper thread: unmount bpffs there (the host mount
        // stays), then ensure_bpffs must mount a fresh one. The namespace dies with the thread.
        let r = std::thread::spawn(|| -> std::result::Result<(bool, bool, bool), String> {
            // SAFETY: unshare only affects this thread (CLONE_NEWNS implies CLONE_FS, which
            // gives the thread its own fs_struct); no memory is involved.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(format!("unshare: {}", std::io::Error::last_os_error()));
            }
            use nix::mount::{mount, umount2, MntFlags, MsFlags};
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| format!("make-rprivate: {e}"))?;
            for _ in 0..8 {
                if !is_bpffs(BPFFS_MOUNT).map_err(|e| e.to_string())? {
                    break;
                }
                umount2(BPFFS_MOUNT, MntFlags::MNT_DETACH).map_err(|e| format!("umount: {e}"))?;
            }
            let before = is_bpffs(BPFFS_MOUNT).map_err(|e| e.to_string())?;
            let root = Path::new(BPFFS_MOUNT).join("bpfltr-mnt-test/ns");
            ensure_bpffs(&root).map_err(|e| e.to_string())?;
            Ok((
                before,
                is_bpffs(BPFFS_MOUNT).map_err(|e| e.to_string())?,
                root.is_dir(),
            ))
        })
        .join()
        .unwrap();
        assert_eq!(r, Ok((false, true, true)));
        // The host's bpffs was not touched.
        assert!(is_bpffs(BPFFS_MOUNT).unwrap());
        assert!(!Path::new(BPFFS_MOUNT).join("bpfltr-mnt-test").exists());
    }

    #[test]
    fn bpffs_root_and_remove_tree() {
        if !require_bpf() {
            return;
        }
        let dir = TempPinDir::new("fs");
        assert!(is_bpffs(BPFFS_MOUNT).unwrap());
        let sub = dir.path().join("ns/filter/INPUT");
        ensure_bpffs(&sub).unwrap();
        ensure_bpffs(&sub).unwrap(); // idempotent
        let m = Map::create(MapType::Array, 4, 4, 1, "bpfltr_t_fs").unwrap();
        let id = m.id().unwrap();
        m.pin(sub.join("counters")).unwrap();
        drop(m);
        assert_eq!(Map::from_id(id).unwrap().id().unwrap(), id); // kept by the pin
        remove_pins(dir.path().join("ns")).unwrap();
        assert!(!dir.path().join("ns").exists());
        assert!(matches!(Map::from_id(id), Err(SysError::NotFound { .. })));
        remove_pins(dir.path().join("ns")).unwrap(); // missing is fine
        assert!(matches!(
            unpin(dir.path().join("nothing")),
            Err(SysError::NotFound { .. })
        ));
        // Outside /sys/fs/bpf and not bpffs: refused.
        let tmp = std::env::temp_dir().join(format!("bpfltr-notbpffs-{}", std::process::id()));
        assert_eq!(ensure_bpffs(&tmp).unwrap_err().errno(), libc::EINVAL);
        let _ = std::fs::remove_dir(&tmp);
    }
}
