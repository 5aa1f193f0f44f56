//! Privileged: load a minimal BPF_NETFILTER program (`r0 = 1; exit`) and check that the
//! benchmark's bpf(2) helpers read its info, test-run it at LOCAL_IN and attach it. Needs root; fails
//! without it when CI=true, skips (saying why) otherwise.

use netbench::bpf;
use test_support::netns::Netns;

fn privileged() -> bool {
    test_support::gate::ready(test_support::gate::not_root())
}

#[test]
fn info_and_test_run_of_a_netfilter_program() {
    if !privileged() {
        return;
    }
    let fd = bpf::load_netfilter_accept("bpfltr_nbt").expect("load");
    let st = bpf::prog_stats(&fd).expect("prog info");
    assert_eq!(st.name, "bpfltr_nbt");
    assert_eq!(st.xlated, 16);
    assert!(st.jited > 0);
    assert!(st.verified_insns >= 2, "verified {}", st.verified_insns);
    let t = bpf::test_run_local_in(&fd, &bpf::test_packet(), 10_000).expect("test run");
    assert_eq!(t.retval, 1);
    assert!(t.ns > 0 && t.ns < 10_000, "ns per run {}", t.ns);
}

#[test]
fn link_in_a_namespace_and_detach() {
    if !privileged() {
        return;
    }
    let ns = Netns::named(format!("nbench-{}-linktest", std::process::id()));
    let prog = bpf::load_netfilter_accept("bpfltr_nbt").expect("load");
    let prog2 = bpf::load_netfilter_accept("bpfltr_nbt").expect("load");
    let res = netbench::netns::in_netns(&ns.name, move || {
        let l = bpf::link_netfilter(&prog, 2, 1, 1)?;
        // Same pf, hook and priority again: EBUSY, which shows the first one is attached.
        let busy = bpf::link_netfilter(&prog2, 2, 1, 1).is_err();
        drop(l);
        let again = bpf::link_netfilter(&prog2, 2, 1, 1).is_ok();
        Ok((busy, again))
    });
    drop(ns);
    let (busy, again) = res.expect("link");
    assert!(busy, "second link at the same priority must fail");
    assert!(again, "closing the link must detach it");
}
