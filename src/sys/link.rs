//! Netfilter BPF links (BPF_LINK_CREATE with attach type BPF_NETFILTER).
//!
//! A link belongs to the network namespace of the thread that creates it (see
//! [`super::in_netns`]). Same pf + hook + priority as any hook already registered there gives
//! EBUSY. Closing the last fd detaches the link unless it is pinned on bpffs; a pinned link
//! stays attached (and keeps its namespace alive) until the pin is removed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::error::{check, Result, SysError};
use super::obj::{get_info, RawLinkInfo};
use super::prog::Program;

/// `BPF_F_NETFILTER_IP_DEFRAG`: reassemble before the program runs (priority must be > -400).
pub const NF_IP_DEFRAG: u32 = libbpf_sys::BPF_F_NETFILTER_IP_DEFRAG;

/// What the kernel reports about a link (`struct bpf_link_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// Kernel id of the link.
    pub id: u32,
    /// `enum bpf_link_type` (10 = netfilter).
    pub link_type: u32,
    /// Id of the attached program.
    pub prog_id: u32,
    /// NFPROTO_* family (netfilter links only).
    pub pf: u32,
    /// Hook number (netfilter links only).
    pub hooknum: u32,
    /// Priority (netfilter links only).
    pub priority: i32,
    /// Flags (netfilter links only).
    pub flags: u32,
}

/// An owned BPF link. Dropping it detaches the program unless the link is pinned.
#[must_use = "dropping a Link detaches it (unless pinned)"]
#[derive(Debug)]
pub struct Link {
    /// Set for links of the unit-test fake kernel (declared before `fd`: dropped first).
    #[cfg(test)]
    fake: Option<super::fake::Handle>,
    fd: OwnedFd,
}

impl Link {
    /// Attaches `prog` to netfilter hook (`pf`, `hooknum`, `priority`) in the CALLING THREAD's
    /// network namespace. `flags` may be [`NF_IP_DEFRAG`].
    pub fn netfilter(
        prog: &Program,
        pf: u32,
        hooknum: u32,
        priority: i32,
        flags: u32,
    ) -> Result<Link> {
        #[cfg(test)]
        if let Some(h) = prog.fake() {
            let (h, fd) = h.kernel().link_create(h, pf, hooknum, priority, flags)?;
            return Ok(Link { fake: Some(h), fd });
        }
        let mut opts = libbpf_sys::bpf_link_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t,
            ..Default::default()
        };
        opts.__bindgen_anon_1.netfilter =
            libbpf_sys::bpf_link_create_opts__bindgen_ty_1__bindgen_ty_5 {
                pf,
                hooknum,
                priority,
                flags,
            };
        // SAFETY: prog fd is valid; target_fd 0 is ignored for netfilter links; opts has the
        // correct sz and the netfilter union member set.
        let ret = unsafe {
            libbpf_sys::bpf_link_create(prog.fd().as_raw_fd(), 0, libbpf_sys::BPF_NETFILTER, &opts)
        };
        let fd = check("bpf_link_create", ret)?;
        // SAFETY: bpf_link_create succeeded, so fd is a new fd of the link, owned by nobody else.
        Ok(Link::from_owned(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// [`Link::netfilter`] in the network namespace `netns` (entered on a helper thread).
    pub fn netfilter_in(
        netns: BorrowedFd<'_>,
        prog: &Program,
        pf: u32,
        hooknum: u32,
        priority: i32,
        flags: u32,
    ) -> Result<Link> {
        super::in_netns(netns, || {
            Link::netfilter(prog, pf, hooknum, priority, flags)
        })?
    }

    fn from_owned(fd: OwnedFd) -> Link {
        Link {
            #[cfg(test)]
            fake: None,
            fd,
        }
    }

    /// The link fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Pins the link on bpffs: it then outlives this handle and the daemon.
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<()> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.pin(path.as_ref());
        }
        super::obj_pin(self.fd.as_fd(), path.as_ref())
    }

    /// Opens a pinned link; ENOENT becomes NotFound.
    pub fn from_pin(path: impl AsRef<Path>) -> Result<Link> {
        #[cfg(test)]
        if let Some(k) = super::fake::current() {
            let (h, fd) = k.from_pin(path.as_ref(), super::ObjKind::Link)?;
            return Ok(Link { fake: Some(h), fd });
        }
        Ok(Link::from_owned(super::obj_get_kind(
            path.as_ref(),
            super::ObjKind::Link,
        )?))
    }

    /// Opens a link by kernel id.
    pub fn from_id(id: u32) -> Result<Link> {
        #[cfg(test)]
        if let Some(k) = super::fake::current() {
            let (h, fd) = k.from_id(id, super::ObjKind::Link)?;
            return Ok(Link { fake: Some(h), fd });
        }
        // SAFETY: plain integer argument; returns a new fd or -errno.
        let fd = unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) };
        let fd = match check("bpf_link_get_fd_by_id", fd) {
            Ok(fd) => fd,
            Err(e) if e.errno() == libc::ENOENT => {
                return Err(SysError::not_found(format!("link id {id}")))
            }
            Err(e) => return Err(e),
        };
        // SAFETY: bpf_link_get_fd_by_id succeeded, so fd is a new fd of the link, owned by
        // nobody else.
        Ok(Link::from_owned(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Detaches now, even if pinned (`bpf_link_detach`); the pin, if any, stays as a
    /// defunct link until removed.
    pub fn detach(self) -> Result<()> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.link_detach();
        }
        // SAFETY: valid link fd.
        let ret = unsafe { libbpf_sys::bpf_link_detach(self.fd.as_raw_fd()) };
        check("bpf_link_detach", ret).map(drop)
    }

    /// Kernel id of the link.
    pub fn id(&self) -> Result<u32> {
        Ok(self.info()?.id)
    }

    /// What the kernel reports (prog id and, for netfilter links, pf/hooknum/priority/flags).
    pub fn info(&self) -> Result<LinkInfo> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.link_info();
        }
        let i: RawLinkInfo = get_info("bpf_link_get_info_by_fd", self.fd())?;
        let mut out = LinkInfo {
            id: i.id,
            link_type: i.type_,
            prog_id: i.prog_id,
            pf: 0,
            hooknum: 0,
            priority: 0,
            flags: 0,
        };
        if i.type_ == libbpf_sys::BPF_LINK_TYPE_NETFILTER {
            // The kernel fills the `netfilter` member of the union for netfilter links.
            let nf = &i.__bindgen_anon_1.netfilter;
            out.pf = nf.pf;
            out.hooknum = nf.hooknum;
            out.priority = nf.priority;
            out.flags = nf.flags;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netns_id;
    use crate::sys::testutil::{
        insns, require_bpf, require_netns, udp_roundtrip, TempNetns, TempPinDir, VethPair,
    };

    const NFPROTO_IPV4: u32 = 2;
    const LOCAL_IN: u32 = 1;

    fn ret_prog(name: &str, ret: i32) -> Program {
        Program::load_netfilter(name, &insns(&[(0xb7, 0, 0, 0, ret), (0x95, 0, 0, 0, 0)]), 0)
            .unwrap()
            .0
    }

    #[test]
    fn link_in_netns_info_ebusy_pin() {
        if !require_bpf() || !require_netns() {
            return;
        }
        let ns = TempNetns::new("link");
        let dir = TempPinDir::new("link");
        let p = ret_prog("bpfltr_t_link", 1);
        let pid = p.id().unwrap();
        let link = Link::netfilter_in(ns.fd(), &p, NFPROTO_IPV4, LOCAL_IN, 7, 0).unwrap();
        let info = link.info().unwrap();
        assert_eq!(info.link_type, libbpf_sys::BPF_LINK_TYPE_NETFILTER);
        assert_eq!(
            (
                info.prog_id,
                info.pf,
                info.hooknum,
                info.priority,
                info.flags
            ),
            (pid, 2, 1, 7, 0)
        );
        // Same pf + hook + priority in the same namespace: EBUSY.
        let e = Link::netfilter_in(ns.fd(), &p, NFPROTO_IPV4, LOCAL_IN, 7, 0).unwrap_err();
        assert_eq!(e.errno(), libc::EBUSY, "{e}");
        // Another namespace is unaffected by it.
        let ns2 = TempNetns::new("link2");
        let other = Link::netfilter_in(ns2.fd(), &p, NFPROTO_IPV4, LOCAL_IN, 7, 0).unwrap();
        drop(other);
        assert_ne!(netns_id(ns.fd()).unwrap(), netns_id(ns2.fd()).unwrap());
        // Bad arguments come back with the kernel's errno.
        let bad = |pf, hook, prio| {
            Link::netfilter_in(ns.fd(), &p, pf, hook, prio, 0)
                .unwrap_err()
                .errno()
        };
        assert_eq!(bad(7, LOCAL_IN, 1), libc::EAFNOSUPPORT);
        assert_eq!(bad(NFPROTO_IPV4, 5, 1), libc::EPROTO);
        assert_eq!(bad(NFPROTO_IPV4, LOCAL_IN, i32::MIN), libc::ERANGE);
        let defrag =
            Link::netfilter_in(ns.fd(), &p, NFPROTO_IPV4, LOCAL_IN, 8, NF_IP_DEFRAG).unwrap();
        assert_eq!(defrag.info().unwrap().flags, NF_IP_DEFRAG);

        // Pinned: dropping the handle keeps it attached (priority 7 stays busy).
        let path = dir.path().join("l");
        link.pin(&path).unwrap();
        let id = link.id().unwrap();
        drop(link);
        let again = Link::from_pin(&path).unwrap();
        assert_eq!(again.info().unwrap(), info);
        assert_eq!(Program::from_pin(&path).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(Link::from_id(id).unwrap().id().unwrap(), id);
        let e = Link::netfilter_in(ns.fd(), &p, NFPROTO_IPV4, LOCAL_IN, 7, 0).unwrap_err();
        assert_eq!(e.errno(), libc::EBUSY);
        // Unpinned and closed: detached, the priority is free again.
        crate::sys::unpin(&path).unwrap();
        drop(again);
        let l3 = Link::netfilter_in(ns.fd(), &p, NFPROTO_IPV4, LOCAL_IN, 7, 0).unwrap();
        // Explicit detach frees the slot even while another handle is open.
        let twin = Link::from_id(l3.id().unwrap()).unwrap();
        l3.detach().unwrap();
        let l4 = Link::netfilter_in(ns.fd(), &p, NFPROTO_IPV4, LOCAL_IN, 7, 0).unwrap();
        drop((twin, l4));
    }

    #[test]
    fn drop_program_drops_real_packets() {
        if !require_bpf() || !require_netns() {
            return;
        }
        let a = TempNetns::new("pa");
        let b = TempNetns::new("pb");
        let veth = VethPair::new(&a, &b);
        assert!(udp_roundtrip(&a, &b, &veth, 25), "no UDP before attaching");
        let p = ret_prog("bpfltr_t_drop", 0);
        let link = Link::netfilter_in(b.fd(), &p, NFPROTO_IPV4, LOCAL_IN, 1, 0).unwrap();
        assert!(
            !udp_roundtrip(&a, &b, &veth, 5),
            "UDP got through a DROP program at LOCAL_IN"
        );
        drop(link);
        assert!(
            udp_roundtrip(&a, &b, &veth, 25),
            "UDP still dropped after the link was dropped"
        );
    }
}
