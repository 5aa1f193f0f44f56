//! The only caller of libbpf-sys: BTF, maps, programs, links, pins, test runs.
//!
//! Every unsafe block of the daemon lives here, each with a `// SAFETY:` note. Objects own
//! their fds (`OwnedFd`): dropping a [`Map`] or [`Program`] closes it (the kernel frees it when
//! nothing else refers to it), dropping a [`Link`] detaches it unless it is pinned.
//! Errors keep the kernel's errno ([`SysError::errno`]) so that the daemon can hand it on.
//!
//! Kernel facts this module relies on are in `docs/KERNELS.md` (netfilter program type 32,
//! attach type 45, EBUSY on a used priority, links belong to the creating thread's network
//! namespace).

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        reason = "tests may unwrap; non-test builds still lint"
    )
)]

mod btf;
mod caps;
mod error;
#[cfg(test)]
pub mod fake;
mod fs;
mod link;
mod map;
mod netns;
mod nft;
mod obj;
mod parallel;
mod prog;
mod prog_array;
mod rcu;
mod ringbuf;
mod route;
mod sock;
pub mod systemd;
#[cfg(test)]
mod testutil;

pub use btf::{Btf, Member, VMLINUX_BTF_FD_IDX};
pub use caps::effective_capabilities;
pub use error::{Result, SysError};
pub use fs::{ensure_bpffs, is_bpffs, remove_pins, unpin, BPFFS_MOUNT, BPF_FS_MAGIC};
pub use link::{Link, LinkInfo, NF_IP_DEFRAG};
pub use map::{
    num_possible_cpus, update_flags, Map, MapInfo, MapType, Mapping, Sums, BPF_F_LOCK,
    BPF_F_MMAPABLE,
};
pub use netns::{current_netns, in_netns, is_netns, netns_id, open_netns};
pub use nft::{conntrack_enabled, disable_conntrack, enable_conntrack, CONNTRACK_TABLE};
pub use parallel::run_parallel;
pub use prog::{LoadStats, ProgInfo, Program, TestRun};
pub use rcu::synchronize_rcu;
pub use ringbuf::RingBuf;
pub use route::{local_routes, LocalRoute, RouteWatch};
pub use sock::disconnect;

pub(crate) use fs::{obj_get_kind, obj_pin, ObjKind};

/// Which kind of BPF object an id enumeration walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// Programs (`BPF_PROG_GET_NEXT_ID`).
    Prog,
    /// Maps (`BPF_MAP_GET_NEXT_ID`).
    Map,
    /// Links (`BPF_LINK_GET_NEXT_ID`).
    Link,
}

/// Ids of every live object of a kind in the system (all namespaces), ascending; e.g. to find
/// bpfilter's programs by name for `status` or `flush`.
pub fn object_ids(kind: IdKind) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: next is a writable u32; the call only reads start_id.
        let ret = unsafe {
            match kind {
                IdKind::Prog => libbpf_sys::bpf_prog_get_next_id(id, &mut next),
                IdKind::Map => libbpf_sys::bpf_map_get_next_id(id, &mut next),
                IdKind::Link => libbpf_sys::bpf_link_get_next_id(id, &mut next),
            }
        };
        match error::check("bpf_obj_get_next_id", ret) {
            Ok(_) => {
                ids.push(next);
                id = next;
            }
            Err(e) if e.errno() == libc::ENOENT => return Ok(ids),
            Err(e) => return Err(e),
        }
    }
}

/// Longest object name the kernel keeps (BPF_OBJ_NAME_LEN - 1).
pub const OBJ_NAME_MAX: usize = 15;

/// Checks an object name the way the kernel's bpf_obj_name_cpy does (<= 15 bytes of
/// `[A-Za-z0-9_.]`) so that the caller gets a clear error instead of a bare EINVAL.
fn obj_name(name: &str) -> Result<std::ffi::CString> {
    if name.len() > OBJ_NAME_MAX {
        return Err(SysError::invalid(format!(
            "object name {name:?} is longer than {OBJ_NAME_MAX} bytes"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(SysError::invalid(format!(
            "object name {name:?} has characters other than [A-Za-z0-9_.]"
        )));
    }
    std::ffi::CString::new(name).map_err(|_| SysError::invalid("object name contains NUL"))
}

/// A NUL-padded C char array (kernel info names) as a String.
fn c_chars_to_string(chars: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerates_ids() {
        if !testutil::require_bpf() || !testutil::require_netns() {
            return;
        }
        let m = Map::create(MapType::Array, 4, 4, 1, "bpfltr_t_ids").unwrap();
        let code = testutil::insns(&[(0xb7, 0, 0, 0, 1), (0x95, 0, 0, 0, 0)]);
        let (p, _) = Program::load_netfilter("bpfltr_t_ids", &code, 0).unwrap();
        let ns = testutil::TempNetns::new("ids");
        let l = Link::netfilter_in(ns.fd(), &p, 2, 1, 3, 0).unwrap();
        assert!(object_ids(IdKind::Map).unwrap().contains(&m.id().unwrap()));
        assert!(object_ids(IdKind::Prog).unwrap().contains(&p.id().unwrap()));
        let links = object_ids(IdKind::Link).unwrap();
        assert!(links.contains(&l.id().unwrap()));
        assert!(links.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn object_names() {
        assert!(obj_name("bpfltr_filter_1").is_ok());
        assert!(obj_name("a.b_c").is_ok());
        assert_eq!(
            obj_name("bpfltr_filter_12").unwrap_err().errno(),
            libc::EINVAL
        );
        assert!(obj_name("bad-name").is_err());
        let raw: [libc::c_char; 4] = [
            b'a' as libc::c_char,
            b'b' as libc::c_char,
            0,
            b'x' as libc::c_char,
        ];
        assert_eq!(c_chars_to_string(&raw), "ab");
    }
}
