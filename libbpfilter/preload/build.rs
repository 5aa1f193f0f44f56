//! Links libgcc's unwinder statically (libgcc_eh.a) instead of making every iptables process
//! that preloads this library also load libgcc_s.so.1, which iptables-legacy does not need:
//! its CPU-feature constructor's CPUID instructions trap to the hypervisor on a virtual machine
//! (measured: loading the preload cost 0.4 ms with libgcc_s, 0.03 ms without). The unwinder is
//! private to the library (its version script exports only the interposed symbols).
fn main() {
    println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
}
