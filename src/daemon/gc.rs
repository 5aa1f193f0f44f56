//! Namespace garbage collection.
//!
//! A pinned netfilter link keeps its network namespace alive (`docs/KERNELS.md`), so when a
//! user deletes a namespace (`ip netns del`), bpfilter's pins are the only thing left holding
//! it. The kernel's own tables die with their namespace; to behave the same, the daemon looks
//! every few seconds for namespaces that nothing but bpfilter references any more (no process
//! or thread in them, no open nsfs fd, no nsfs bind mount) and flushes them, which releases
//! the namespace.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The inode in a `net:[4026532001]` nsfs link text.
fn net_inode(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

fn link_inode(path: &Path) -> Option<u64> {
    fs::read_link(path)
        .ok()
        .and_then(|t| net_inode(t.to_str()?))
}

/// The nsfs inode an open fd refers to (`/proc/PID/fd/N`). Its link text is `net:[N]` only
/// when it was opened through /proc; one opened through a bind mount (`/run/netns/NAME`,
/// `/run/docker/netns/ID`) reads as that path, or as `/` once unmounted: then the fd itself is
/// stat'ed, and counts if it lives on nsfs (`nsfs_dev`). Sockets, pipes and the like
/// (`socket:[N]`, `anon_inode:...`) are not paths and are skipped without a stat.
fn fd_inode(fd: &Path, nsfs_dev: Option<u64>) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let text = fs::read_link(fd).ok()?;
    let text = text.to_str()?;
    if let Some(ino) = net_inode(text) {
        return Some(ino);
    }
    if !text.starts_with('/') {
        return None;
    }
    let meta = fs::metadata(fd).ok()?;
    (Some(meta.dev()) == nsfs_dev).then_some(meta.ino())
}

/// Network namespaces referenced by any process other than `own_pid` (where its threads
/// run, the nsfs fds it holds, the nsfs bind mounts its mount namespace has), each with a path
/// that opens it. Of the daemon itself only the namespace it runs in counts: the namespace fds
/// it keeps and its short-lived threads inside client namespaces are not references.
pub fn referenced_namespaces(own_pid: u32) -> HashMap<u64, PathBuf> {
    let mut refs = HashMap::new();
    let mut add = |path: PathBuf| {
        if let Some(ino) = link_inode(&path) {
            refs.entry(ino).or_insert(path);
        }
    };
    let nsfs_dev = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev())
    };
    let mut fd_refs = Vec::new();
    let mut mount_namespaces = HashSet::new();
    let mut mounts = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return refs;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let dir = p.path();
        if pid == own_pid {
            add(dir.join("ns/net"));
            continue;
        }
        if let Ok(tasks) = fs::read_dir(dir.join("task")) {
            tasks.flatten().for_each(|t| add(t.path().join("ns/net")));
        }
        if let Ok(fds) = fs::read_dir(dir.join("fd")) {
            for fd in fds.flatten() {
                let path = fd.path();
                if let Some(ino) = fd_inode(&path, nsfs_dev) {
                    fd_refs.push((ino, path));
                }
            }
        }
        // One mountinfo per mount namespace is enough.
        let mnt = fs::read_link(dir.join("ns/mnt")).ok();
        if mnt.is_some_and(|m| mount_namespaces.insert(m)) {
            if let Ok(info) = fs::read_to_string(dir.join("mountinfo")) {
                let root = dir.join("root");
                mounts.extend(
                    mountinfo_namespaces(&info)
                        .map(|(ino, at)| (ino, root.join(at.trim_start_matches('/')))),
                );
            }
        }
    }
    for (ino, path) in fd_refs.into_iter().chain(mounts) {
        refs.entry(ino).or_insert(path);
    }
    refs
}

/// Whether sockets still hold the namespace (`nsfd`): a socket keeps its namespace alive
/// without showing it in /proc (its fd reads `socket:[N]`). `sockets: used` of the
/// namespace's /proc/net/sockstat counts exactly the sockets that hold a reference (kernel
/// sockets take none and are not counted). Unknown (read failure) counts as held.
pub fn held_by_sockets(nsfd: std::os::fd::BorrowedFd<'_>) -> bool {
    let read = crate::sys::in_netns(nsfd, || {
        fs::read_to_string("/proc/thread-self/net/sockstat")
    });
    let Ok(Ok(text)) = read else { return true };
    sockets_used(&text).is_none_or(|n| n > 0)
}

fn sockets_used(sockstat: &str) -> Option<u64> {
    sockstat
        .lines()
        .find_map(|l| l.strip_prefix("sockets: used "))
        .and_then(|n| n.trim().parse().ok())
}

/// nsfs mounts of network namespaces in a mountinfo text (the root field is `net:[N]`), with
/// their mount points.
fn mountinfo_namespaces(info: &str) -> impl Iterator<Item = (u64, &str)> + '_ {
    info.lines().filter_map(|l| {
        let mut fields = l.split_whitespace().skip(3);
        let ino = fields.next().and_then(net_inode)?;
        Some((ino, fields.next()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nsfs_links_and_mounts() {
        assert_eq!(net_inode("net:[4026531840]"), Some(4026531840));
        assert_eq!(net_inode("mnt:[4026531840]"), None);
        assert_eq!(net_inode("socket:[123]"), None);
        let info = "512 28 0:4 net:[4026532450] /run/netns/a rw shared:236 - nsfs nsfs rw\n\
                    22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n";
        assert_eq!(
            mountinfo_namespaces(info).collect::<Vec<_>>(),
            [(4026532450, "/run/netns/a")]
        );
    }

    #[test]
    fn parses_sockstat() {
        assert_eq!(
            sockets_used("sockets: used 17\nTCP: inuse 1 orphan 0\n"),
            Some(17)
        );
        assert_eq!(sockets_used("TCP: inuse 1\n"), None);
    }

    #[test]
    fn an_nsfs_fd_opened_through_a_path_is_a_reference() {
        use std::os::unix::fs::MetadataExt;
        // /proc/self/ns/net opened as a file: its fd's link may read as a path, yet it holds
        // the namespace.
        let file = fs::File::open("/proc/self/ns/net").expect("open");
        let fd = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ));
        let nsfs = fs::metadata("/proc/self/ns/net").expect("stat");
        assert_eq!(fd_inode(&fd, Some(nsfs.dev())), Some(nsfs.ino()));
        // A regular file is not a namespace.
        let other = fs::File::open("/proc/self/status").expect("open");
        let fd = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&other)
        ));
        assert_eq!(fd_inode(&fd, Some(nsfs.dev())), None);
    }

    #[test]
    fn our_own_namespace_is_referenced_by_someone_else() {
        // The namespace the daemon runs in always counts, even when nothing else is in it.
        let refs = referenced_namespaces(std::process::id());
        let ours = link_inode(Path::new("/proc/self/ns/net")).expect("our namespace");
        assert!(refs.contains_key(&ours));
    }
}
