//! Fills [`emitter::KernelLayout`] from the running kernel's vmlinux BTF, so that the code
//! generator never hard-codes a struct offset or a kfunc id.

use emitter::KernelLayout;

use crate::sys::{Btf, Result};

/// Offsets and kfunc ids of the running kernel (see [`KernelLayout`] for each field).
pub fn kernel_layout(btf: &Btf) -> Result<KernelLayout> {
    Ok(KernelLayout {
        nf_ctx_state: btf.member_offset("bpf_nf_ctx", "state")?,
        nf_ctx_skb: btf.member_offset("bpf_nf_ctx", "skb")?,
        hook_state_in: btf.member_offset("nf_hook_state", "in")?,
        hook_state_out: btf.member_offset("nf_hook_state", "out")?,
        net_device_name: btf.member_offset("net_device", "name")?,
        skb_len: btf.member_offset("sk_buff", "len")?,
        skb_data_len: btf.member_offset("sk_buff", "data_len")?,
        skb_data: btf.member_offset("sk_buff", "data")?,
        kfunc_dynptr_from_skb: btf.func_id("bpf_dynptr_from_skb")?,
        kfunc_dynptr_slice: btf.func_id("bpf_dynptr_slice")?,
        // optional: only the cast packet access uses them
        kfunc_rdonly_cast: btf.func_id("bpf_rdonly_cast").unwrap_or(0),
        btf_iphdr: btf.struct_id("iphdr").unwrap_or(0),
        btf_tcphdr: btf.struct_id("tcphdr").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the real vmlinux BTF (no privileges needed: /sys/kernel/btf/vmlinux is 0444).
    #[test]
    fn layout_from_vmlinux() {
        let btf = match Btf::vmlinux() {
            Ok(b) => b,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipping: no vmlinux BTF: {e}");
                return;
            }
            Err(e) => panic!("vmlinux BTF: {e}"),
        };
        let l = kernel_layout(&btf).expect("layout");
        assert_eq!(l.nf_ctx_state, 0);
        assert_eq!(l.nf_ctx_skb, 8);
        assert!(l.skb_len > 0 && l.skb_data_len == l.skb_len + 4, "{l:?}");
        assert!(l.kfunc_dynptr_from_skb > 0);
    }
}
