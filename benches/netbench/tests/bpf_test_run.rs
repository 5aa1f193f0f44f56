//! Privileged: load a minimal BPF_NETFILTER program (`r0 = 1; exit`) and check that the
//! benchmark's bpf(2) helpers read its info and test-run it at LOCAL_IN. Needs root; fails
//! without it when CI=true, skips (saying why) otherwise.

use std::os::fd::{FromRawFd as _, OwnedFd};

use netbench::bpf;

fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "needs root under CI"
    );
    eprintln!("skipped: needs root (BPF_PROG_LOAD)");
    false
}

/// BPF_PROG_LOAD of `r0 = 1; exit` as BPF_PROG_TYPE_NETFILTER (32), attach type 45.
fn load_accept() -> OwnedFd {
    // mov64 r0, 1; exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&32u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..59].copy_from_slice(b"bpfltr_nbt\0");
    attr[68..72].copy_from_slice(&45u32.to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr prefix; insns and license outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), attr.len() as u32) };
    assert!(
        fd >= 0,
        "BPF_PROG_LOAD: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

#[test]
fn info_and_test_run_of_a_netfilter_program() {
    if !privileged() {
        return;
    }
    let fd = load_accept();
    let st = bpf::prog_stats(&fd).expect("prog info");
    assert_eq!(st.name, "bpfltr_nbt");
    assert_eq!(st.xlated, 16);
    assert!(st.jited > 0);
    assert!(st.verified_insns >= 2, "verified {}", st.verified_insns);
    let t = bpf::test_run_local_in(&fd, &bpf::test_packet(), 10_000).expect("test run");
    assert_eq!(t.retval, 1);
    assert!(t.ns > 0 && t.ns < 10_000, "ns per run {}", t.ns);
}
