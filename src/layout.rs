//! Fills [`emitter::KernelLayout`] from the running kernel's vmlinux BTF, so that the code
//! generator never hard-codes a struct offset or a kfunc id.

use emitter::{ConnLayout, KernelLayout, SkbLayout};

use crate::sys::{Btf, Result};

/// Offsets and kfunc ids of the running kernel (see [`KernelLayout`] for each field).
pub fn kernel_layout(btf: &Btf) -> Result<KernelLayout> {
    Ok(KernelLayout {
        nf_ctx_state: btf.member_offset("bpf_nf_ctx", "state")?,
        nf_ctx_skb: btf.member_offset("bpf_nf_ctx", "skb")?,
        hook_state_in: btf.member_offset("nf_hook_state", "in")?,
        hook_state_out: btf.member_offset("nf_hook_state", "out")?,
        hook_state_net: btf.member_offset("nf_hook_state", "net")?,
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
        skb: skb_layout(btf)?,
        conn: conn_layout(btf),
    })
}

/// The `sk_buff`, `net_device`, `rtable` and `rt6_info` fields events and connection-state
/// matches read.
fn skb_layout(btf: &Btf) -> Result<SkbLayout> {
    let bit = |m: &str| -> Result<(u32, u32)> {
        let (byte, shift, _) = btf.bitfield("sk_buff", m)?;
        Ok((byte, shift))
    };
    Ok(SkbLayout {
        nfct: btf.member_offset("sk_buff", "_nfct")?,
        mark: btf.member_offset("sk_buff", "mark")?,
        priority: btf.member_offset("sk_buff", "priority")?,
        pkt_type: bit("pkt_type")?,
        dev: btf.member_offset("sk_buff", "dev")?,
        head: btf.member_offset("sk_buff", "head")?,
        mac_header: btf.member_offset("sk_buff", "mac_header")?,
        network_header: btf.member_offset("sk_buff", "network_header")?,
        refdst: btf.member_offset("sk_buff", "_skb_refdst")?,
        ip_summed: bit("ip_summed")?,
        csum_valid: bit("csum_valid")?,
        dev_ifindex: btf.member_offset("net_device", "ifindex")?,
        dev_type: btf.member_offset("net_device", "type")?,
        dev_hard_header_len: btf.member_offset("net_device", "hard_header_len")?,
        rt_flags: btf.member_offset("rtable", "rt_flags")?,
        rt6_flags: btf.member_offset("rt6_info", "rt6i_flags").ok(),
        sk: btf.member_offset("sk_buff", "sk")?,
        sk_bound_dev_if: btf.member_offset("sock", "__sk_common.skc_bound_dev_if")?,
        ipcb_optlen: btf.member_offset("sk_buff", "cb")?
            + btf.member_offset("inet_skb_parm", "opt.optlen")?,
        sk_kern_sock: {
            let (byte, shift, _) = btf.bitfield("sock", "sk_kern_sock")?;
            (byte, shift)
        },
        sk_state: btf.member_offset("sock", "__sk_common.skc_state")?,
        sk_socket: btf.member_offset("sock", "sk_socket")?,
        socket_file: btf.member_offset("socket", "file")?,
        file_cred: btf.member_offset("file", "f_cred")?,
        cred_fsuid: btf.member_offset("cred", "fsuid")?,
        cred_fsgid: btf.member_offset("cred", "fsgid")?,
        sk_net: btf.member_offset("sock", "__sk_common.skc_net")?,
        // `rsk_listener` is a #define of `__req_common.skc_listener` (a union member)
        rsk_listener: btf
            .member_offset("request_sock", "__req_common.skc_listener")
            .or_else(|_| btf.member_offset("request_sock", "rsk_listener"))?,
    })
}

/// The kernel's `jiffies` now ("jiffies: J" in /proc/timer_list).
pub fn jiffies() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/timer_list").ok()?;
    t.lines()
        .find_map(|l| l.strip_prefix("jiffies: "))
        .and_then(|v| v.trim().parse().ok())
}

/// The kernel's HZ, measured: jiffies advanced over a known time in /proc/timer_list
/// ("now at N nsecs", "jiffies: J"), rounded to the nearest value Linux configures (100, 250,
/// 300, 1000). User space has no direct way to read it (sysconf gives USER_HZ).
pub fn kernel_hz() -> Option<u32> {
    fn sample() -> Option<(u64, u64)> {
        let t = std::fs::read_to_string("/proc/timer_list").ok()?;
        let mut now = None;
        let mut jiffies = None;
        for l in t.lines() {
            if now.is_none() {
                now = l
                    .strip_prefix("now at ")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok());
            }
            if jiffies.is_none() {
                jiffies = l
                    .strip_prefix("jiffies: ")
                    .and_then(|v| v.trim().parse::<u64>().ok());
            }
        }
        Some((now?, jiffies?))
    }
    static HZ: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        let (n0, j0) = sample()?;
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (n1, j1) = sample()?;
        let ns = n1.checked_sub(n0)? as f64;
        let per_sec = j1.checked_sub(j0)? as f64 * 1e9 / ns;
        [100u32, 250, 300, 1000].into_iter().min_by(|a, b| {
            (f64::from(*a) - per_sec)
                .abs()
                .total_cmp(&(f64::from(*b) - per_sec).abs())
        })
    })
}

/// `struct nf_conn` from vmlinux BTF, or from the nf_conntrack module's BTF when conntrack is
/// a module (then only once it is loaded); None when neither has it.
pub fn conn_layout(vmlinux: &Btf) -> Option<ConnLayout> {
    let read = |btf: &Btf| -> Result<ConnLayout> {
        let hash = btf.member("nf_conn", "tuplehash")?;
        let tuple = btf.member_offset("nf_conntrack_tuple_hash", "tuple")?;
        let tuple_orig = hash.offset + tuple;
        Ok(ConnLayout {
            status: btf.member_offset("nf_conn", "status")?,
            tuple_orig,
            // tuplehash[IP_CT_DIR_MAX = 2]: the reply direction is the second element
            tuple_reply: tuple_orig + hash.size / 2,
            src_addr: btf.member_offset("nf_conntrack_tuple", "src.u3")?,
            src_port: btf.member_offset("nf_conntrack_tuple", "src.u.all")?,
            dst_addr: btf.member_offset("nf_conntrack_tuple", "dst.u3")?,
            dst_port: btf.member_offset("nf_conntrack_tuple", "dst.u.all")?,
            protonum: btf.member_offset("nf_conntrack_tuple", "dst.protonum")?,
            timeout: btf.member_offset("nf_conn", "timeout")?,
            hz: kernel_hz().unwrap_or(0),
        })
    };
    read(vmlinux)
        .or_else(|_| Btf::module("nf_conntrack").and_then(|m| read(&m)))
        .ok()
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
        // the fields of events and conntrack matches, against what this kernel documents
        assert!(
            l.skb.nfct > 0 && l.skb.mark > 0 && l.skb.ip_summed.1 < 8,
            "{l:?}"
        );
        eprintln!("{l:#?}");
        if let Some(c) = l.conn {
            assert_eq!(c.src_addr, 0, "{c:?}");
            assert!(
                c.tuple_reply > c.tuple_orig && c.protonum > c.dst_addr,
                "{c:?}"
            );
        }
    }
}
