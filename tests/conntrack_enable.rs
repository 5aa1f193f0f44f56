//! `sys::enable_conntrack` really makes the kernel track connections in a namespace, and
//! `sys::disable_conntrack` really stops it: a fresh namespace tracks nothing (a BPF netfilter
//! link would see `skb->_nfct == 0`), after enabling every new flow gets an entry, after
//! disabling new flows get none again. Flows are UDP datagrams to 127.0.0.1 sent from a thread
//! inside the namespace; entries are read from that namespace's `/proc/thread-self/net/
//! nf_conntrack` when the kernel has it, else its `nf_conntrack_count` sysctl.

mod common;

use std::net::UdpSocket;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use bpfilter::sys;
use test_support::netns::Netns;
use test_support::privileged;

/// How long the kernel may take to drop its conntrack hooks after the table is deleted (the
/// nf_ct_netns_put runs from nf_tables' destroy work queue).
const GRACE: Duration = Duration::from_secs(5);

/// What the namespace's conntrack table shows.
#[derive(Debug)]
struct Seen {
    /// nf_conntrack_count.
    count: u64,
    /// The listing, if /proc/net/nf_conntrack exists (CONFIG_NF_CONNTRACK_PROCFS).
    listing: Option<String>,
}

impl Seen {
    /// Whether a UDP flow to 127.0.0.1:`port` has an entry; falls back to "count grew past
    /// `before`" when the kernel has no listing.
    fn has_flow(&self, port: u16, before: u64) -> bool {
        match &self.listing {
            Some(l) => l
                .lines()
                .any(|line| line.contains(" udp ") && line.contains(&format!(" dport={port} "))),
            None => self.count > before,
        }
    }
}

fn seen(ns: &OwnedFd) -> Seen {
    sys::in_netns(ns.as_fd(), || {
        // /proc/sys/net and /proc/thread-self/net follow the reading thread's namespace
        // (/proc/self/net would show the main thread's).
        let count = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .expect("nf_conntrack_count (CONFIG_NF_CONNTRACK)")
            .trim()
            .parse()
            .expect("a number");
        let listing = std::fs::read_to_string("/proc/thread-self/net/nf_conntrack").ok();
        Seen { count, listing }
    })
    .expect("enter namespace")
}

/// Sends one datagram 127.0.0.1 -> 127.0.0.1:`port` inside the namespace (nobody listens: the
/// flow still exists for conntrack, UNREPLIED).
fn udp_flow(ns: &OwnedFd, port: u16) {
    sys::in_netns(ns.as_fd(), || {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind in namespace");
        s.send_to(b"bpfilter", ("127.0.0.1", port))
            .expect("send in namespace");
    })
    .expect("enter namespace");
}

/// Polls until `f` holds or `GRACE` is over; returns its last answer.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + GRACE;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn enable_tracks_and_disable_stops() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("ct");
    let fd = sys::open_netns(format!("/run/netns/{}", ns.name)).expect("open namespace");
    let enabled = || sys::in_netns(fd.as_fd(), sys::conntrack_enabled).expect("enter namespace");

    // 1. A fresh namespace tracks nothing.
    assert!(!enabled().expect("conntrack_enabled"));
    udp_flow(&fd, 40001);
    std::thread::sleep(Duration::from_millis(100));
    let s = seen(&fd);
    assert_eq!(
        s.count, 0,
        "conntrack already on in a fresh namespace: {s:?}"
    );
    assert!(!s.has_flow(40001, 0), "{s:?}");

    // 2. Enabled: a new flow gets an entry. Enabling twice is fine and keeps it on.
    sys::in_netns(fd.as_fd(), sys::enable_conntrack)
        .expect("enter namespace")
        .expect("enable_conntrack");
    assert!(enabled().expect("conntrack_enabled"));
    sys::in_netns(fd.as_fd(), sys::enable_conntrack)
        .expect("enter namespace")
        .expect("enable_conntrack again");
    assert!(enabled().expect("conntrack_enabled"));
    udp_flow(&fd, 40002);
    let s = seen(&fd);
    assert!(s.count > 0, "no entry after enable_conntrack: {s:?}");
    assert!(s.has_flow(40002, 0), "flow 40002 not tracked: {s:?}");
    // The flow before enabling was never tracked.
    assert!(s.listing.is_none() || !s.has_flow(40001, 0), "{s:?}");

    // 3. Disabled: new flows get no entry (old entries stay until they time out, 30 s for
    // unreplied UDP, far longer than this test). Disabling twice is fine too.
    sys::in_netns(fd.as_fd(), sys::disable_conntrack)
        .expect("enter namespace")
        .expect("disable_conntrack");
    assert!(!enabled().expect("conntrack_enabled"));
    sys::in_netns(fd.as_fd(), sys::disable_conntrack)
        .expect("enter namespace")
        .expect("disable_conntrack on an absent table");
    // The kernel drops its hooks shortly after the commit: probe with fresh flows until one
    // is not tracked, then check that a further one is not either.
    let mut port = 41000;
    let stopped = eventually(|| {
        port += 1;
        let before = seen(&fd).count;
        udp_flow(&fd, port);
        !seen(&fd).has_flow(port, before)
    });
    assert!(
        stopped,
        "flows still tracked {GRACE:?} after disable_conntrack: {:?}",
        seen(&fd)
    );
    let before = seen(&fd);
    udp_flow(&fd, 42000);
    let after = seen(&fd);
    assert!(!after.has_flow(42000, before.count), "{after:?}");
    assert!(after.count <= before.count, "{before:?} -> {after:?}");

    // 4. Enabled again after a disable: tracking resumes.
    sys::in_netns(fd.as_fd(), sys::enable_conntrack)
        .expect("enter namespace")
        .expect("enable_conntrack after disable");
    let before = seen(&fd).count;
    udp_flow(&fd, 43000);
    assert!(seen(&fd).has_flow(43000, before), "{:?}", seen(&fd));
    sys::in_netns(fd.as_fd(), sys::disable_conntrack)
        .expect("enter namespace")
        .expect("disable_conntrack");
}

/// Enabling in one namespace does not turn tracking on in another.
#[test]
fn enable_is_per_namespace() {
    if !privileged() {
        return;
    }
    let a = Netns::new("cta");
    let b = Netns::new("ctb");
    let fa = sys::open_netns(format!("/run/netns/{}", a.name)).expect("open namespace");
    let fb = sys::open_netns(format!("/run/netns/{}", b.name)).expect("open namespace");
    sys::in_netns(fa.as_fd(), sys::enable_conntrack)
        .expect("enter namespace")
        .expect("enable_conntrack");
    udp_flow(&fa, 44001);
    udp_flow(&fb, 44002);
    assert!(seen(&fa).has_flow(44001, 0), "{:?}", seen(&fa));
    let sb = seen(&fb);
    assert_eq!(sb.count, 0, "{sb:?}");
    assert!(!sys::in_netns(fb.as_fd(), sys::conntrack_enabled)
        .expect("enter namespace")
        .expect("conntrack_enabled"));
}
