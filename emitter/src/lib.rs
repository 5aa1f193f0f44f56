//! BPF instructions, a builder with labels and fixups, a disassembler, the filter IR and its
//! code generator for BPF_PROG_TYPE_NETFILTER.
//!
//! - [`insn`]: typed instructions, kernel encoding, verifier-syntax disassembly;
//! - [`builder`]: labels, jumps, subprogram calls, kfunc and map fixups, rule origins;
//! - [`ir`]: the front-end independent filter IR (one [`ir::Program`] per family and hook);
//! - [`codegen`]: IR to instructions ([`codegen::compile`]);
//! - [`prune`]: removal of unreachable instructions, which the verifier refuses;
//! - [`dispatcher`]: the program each hook keeps attached, tail-calling the current ruleset;
//! - [`reference`](mod@reference): a plain interpreter of the IR over a packet, the executable
//!   specification the generated code is tested against.
#![forbid(unsafe_code)]

pub mod builder;
pub mod codegen;
pub mod dispatcher;
pub mod event;
pub mod insn;
pub mod ir;
pub mod prune;
pub mod reference;

pub use builder::{Builder, Compiled, Label, MapKind, MapRef, MapSpec};
pub use insn::{decode, disassemble, encode, Insn, Reg};

/// Offsets and ids the code generator takes from the running kernel's BTF, never hard-coded.
/// Filled by `bpfilter::layout::kernel_layout` from vmlinux BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLayout {
    /// `offsetof(struct bpf_nf_ctx, state)`.
    pub nf_ctx_state: u32,
    /// `offsetof(struct bpf_nf_ctx, skb)`.
    pub nf_ctx_skb: u32,
    /// `offsetof(struct nf_hook_state, in)`.
    pub hook_state_in: u32,
    /// `offsetof(struct nf_hook_state, out)`.
    pub hook_state_out: u32,
    /// `offsetof(struct nf_hook_state, net)`.
    pub hook_state_net: u32,
    /// `offsetof(struct net_device, name)` (16 bytes).
    pub net_device_name: u32,
    /// `offsetof(struct sk_buff, len)` (u32).
    pub skb_len: u32,
    /// `offsetof(struct sk_buff, data_len)` (u32).
    pub skb_data_len: u32,
    /// `offsetof(struct sk_buff, data)` (pointer).
    pub skb_data: u32,
    /// BTF id of the kfunc `bpf_dynptr_from_skb`.
    pub kfunc_dynptr_from_skb: u32,
    /// BTF id of the kfunc `bpf_dynptr_slice`.
    pub kfunc_dynptr_slice: u32,
    /// BTF id of the kfunc `bpf_rdonly_cast`; 0 where the kernel lacks it (no cast access).
    pub kfunc_rdonly_cast: u32,
    /// BTF id of `struct iphdr`; 0 if absent.
    pub btf_iphdr: u32,
    /// BTF id of `struct tcphdr`; 0 if absent.
    pub btf_tcphdr: u32,
    /// What connection-state matches and events read (see [`SkbLayout`], [`ConnLayout`]).
    pub skb: SkbLayout,
    /// `struct nf_conn` as the running kernel lays it out; `None` when its BTF is not
    /// available (nf_conntrack a module not loaded yet): only `--ctstate`/`--state` without
    /// SNAT/DNAT bits can then be compiled.
    pub conn: Option<ConnLayout>,
}

/// `sk_buff` and `net_device` fields read by connection-state matches and by the events of
/// REJECT and LOG (byte offsets; bitfields as byte offset and shift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SkbLayout {
    /// `sk_buff._nfct` (unsigned long: ctinfo in bits 0-2, the nf_conn pointer above)
    pub nfct: u32,
    /// `sk_buff.mark` (u32)
    pub mark: u32,
    /// `sk_buff.priority` (u32)
    pub priority: u32,
    /// byte of `sk_buff` holding `pkt_type` (3 bits) and its shift
    pub pkt_type: (u32, u32),
    /// `sk_buff.dev` (pointer)
    pub dev: u32,
    /// `sk_buff.head` (pointer)
    pub head: u32,
    /// `sk_buff.mac_header` (u16)
    pub mac_header: u32,
    /// `sk_buff.network_header` (u16)
    pub network_header: u32,
    /// `sk_buff._skb_refdst` (unsigned long, bit 0 = noref)
    pub refdst: u32,
    /// byte of `sk_buff` holding `ip_summed` (2 bits) and its shift
    pub ip_summed: (u32, u32),
    /// byte of `sk_buff` holding `csum_valid` (1 bit) and its shift
    pub csum_valid: (u32, u32),
    /// `net_device.ifindex` (int)
    pub dev_ifindex: u32,
    /// `net_device.type` (u16)
    pub dev_type: u32,
    /// `net_device.hard_header_len` (u16)
    pub dev_hard_header_len: u32,
    /// `rtable.rt_flags` (u32), from the dst_entry the route starts with
    pub rt_flags: u32,
    /// `rt6_info.rt6i_flags` (u32), the same for an IPv6 route; None where the kernel's BTF
    /// has no `rt6_info` (IPv6 built as a module): IPv6 records then carry no route flags
    pub rt6_flags: Option<u32>,
    /// `sk_buff.sk` (pointer)
    pub sk: u32,
    /// byte of `sock` holding `sk_kern_sock` (1 bit) and its shift
    pub sk_kern_sock: (u32, u32),
    /// `sock.__sk_common.skc_bound_dev_if` (int)
    pub sk_bound_dev_if: u32,
    /// `sk_buff.cb` + `inet_skb_parm.opt.optlen` (u8): `IPCB(skb)->opt.optlen`
    pub ipcb_optlen: u32,
    /// `sock.__sk_common.skc_state` (u8)
    pub sk_state: u32,
    /// `sock.sk_socket` (pointer)
    pub sk_socket: u32,
    /// `socket.file` (pointer)
    pub socket_file: u32,
    /// `file.f_cred` (pointer)
    pub file_cred: u32,
    /// `cred.fsuid` (u32); `fsgid` follows at [`SkbLayout::cred_fsgid`]
    pub cred_fsuid: u32,
    /// `cred.fsgid` (u32)
    pub cred_fsgid: u32,
    /// `sock.__sk_common.skc_net` (possible_net_t: a `struct net` pointer)
    pub sk_net: u32,
    /// `request_sock.rsk_listener` (pointer)
    pub rsk_listener: u32,
}

/// `struct nf_conn` and `struct nf_conntrack_tuple` offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnLayout {
    /// `nf_conn.status` (unsigned long; IPS_* in the low 32 bits)
    pub status: u32,
    /// `nf_conn.tuplehash[IP_CT_DIR_ORIGINAL].tuple`
    pub tuple_orig: u32,
    /// `nf_conn.tuplehash[IP_CT_DIR_REPLY].tuple`
    pub tuple_reply: u32,
    /// `nf_conntrack_tuple.src.u3` (the IPv4 address in its first 4 bytes)
    pub src_addr: u32,
    /// `nf_conntrack_tuple.src.u.all` (be16)
    pub src_port: u32,
    /// `nf_conntrack_tuple.dst.u3`
    pub dst_addr: u32,
    /// `nf_conntrack_tuple.dst.u.all` (be16)
    pub dst_port: u32,
    /// `nf_conntrack_tuple.dst.protonum` (u8)
    pub protonum: u32,
    /// `nf_conn.timeout` (u32, jiffies)
    pub timeout: u32,
    /// the kernel's HZ (jiffies per second), measured; 0 when unknown (`--ctexpire` is
    /// then refused)
    pub hz: u32,
}

impl ConnLayout {
    /// The bytes of `struct nf_conn` that conntrack tests read, `(start, len)`: both tuples up
    /// to their protocol number, the timeout and the status. None when they span more than
    /// [`event::CT_COPY`] bytes (REJECT replies then read as having no fields).
    pub fn copy_window(&self) -> Option<(u32, u32)> {
        let start = self
            .tuple_orig
            .min(self.tuple_reply)
            .min(self.timeout)
            .min(self.status);
        let end = (self.tuple_orig.max(self.tuple_reply) + self.protonum + 1)
            .max(self.tuple_orig.max(self.tuple_reply) + self.dst_port + 2)
            .max(self.tuple_orig.max(self.tuple_reply) + self.src_port + 2)
            .max(self.tuple_orig.max(self.tuple_reply) + self.dst_addr + 16)
            .max(self.timeout + 4)
            .max(self.status + 4);
        let len = end - start;
        (len as usize <= event::CT_COPY).then_some((start, len))
    }
}

impl KernelLayout {
    /// The values seen on the development machine (kernel 6.18); for unit tests and benches
    /// only: real loads must use the running kernel's BTF.
    pub fn example() -> KernelLayout {
        KernelLayout {
            nf_ctx_state: 0,
            nf_ctx_skb: 8,
            hook_state_in: 8,
            hook_state_out: 16,
            hook_state_net: 32,
            net_device_name: 0,
            skb_len: 112,
            skb_data_len: 116,
            skb_data: 200,
            kfunc_dynptr_from_skb: 1,
            kfunc_dynptr_slice: 2,
            kfunc_rdonly_cast: 3,
            btf_iphdr: 4,
            btf_tcphdr: 5,
            skb: SkbLayout {
                nfct: 104,
                mark: 168,
                priority: 136,
                pkt_type: (128, 0),
                dev: 16,
                head: 192,
                mac_header: 182,
                network_header: 180,
                refdst: 88,
                ip_summed: (130, 5),
                csum_valid: (131, 2),
                dev_ifindex: 224,
                dev_type: 206,
                dev_hard_header_len: 210,
                rt_flags: 112,
                rt6_flags: Some(208),
                sk: 24,
                sk_kern_sock: (500, 1),
                sk_bound_dev_if: 16,
                ipcb_optlen: 52,
                sk_state: 18,
                sk_socket: 640,
                socket_file: 16,
                file_cred: 96,
                cred_fsuid: 24,
                cred_fsgid: 28,
                sk_net: 48,
                rsk_listener: 136,
            },
            conn: Some(ConnLayout {
                status: 128,
                tuple_orig: 16,
                tuple_reply: 72,
                src_addr: 0,
                src_port: 16,
                dst_addr: 20,
                dst_port: 36,
                protonum: 38,
                timeout: 120,
                hz: 250,
            }),
        }
    }
}

/// Errors of the builder and the code generator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// A jump or call whose offset does not fit its field.
    #[error("instruction {at}: jump offset {offset} out of range")]
    JumpOutOfRange {
        /// slot index of the jump
        at: usize,
        /// offset that did not fit
        offset: i64,
    },
    /// A jump to a label that was never bound.
    #[error("label {label} never bound")]
    UnboundLabel {
        /// label number
        label: u32,
    },
    /// A label bound twice.
    #[error("label {label} bound twice")]
    LabelBoundTwice {
        /// label number
        label: u32,
    },
    /// A kfunc call whose BTF id was never defined.
    #[error("kfunc {name} has no BTF id")]
    UnknownKfunc {
        /// kfunc name
        name: &'static str,
    },
    /// A rule calls or jumps to a chain the program does not contain.
    #[error("chain {from} refers to unknown chain {to}")]
    UnknownChain {
        /// chain holding the rule
        from: u32,
        /// missing chain
        to: u32,
    },
    /// The chains call each other in a loop (iptables rejects this with ELOOP).
    #[error("chain {chain} is part of a jump loop")]
    ChainLoop {
        /// a chain on the loop
        chain: u32,
    },
    /// User chains nest deeper than the code generator accepts (deep chains are inlined,
    /// which copies them once per call path).
    #[error(
        "chain {chain} is nested {depth} deep; at most {max} nested user chains are supported"
    )]
    CallDepth {
        /// deepest chain
        chain: u32,
        /// its nesting depth
        depth: usize,
        /// the limit
        max: usize,
    },
    /// The IR uses something the code generator does not implement (yet).
    #[error("unsupported: {what}")]
    Unsupported {
        /// what
        what: &'static str,
    },
    /// The code generator caught itself emitting inconsistent control flow (a bug).
    #[error("internal code generator error: {what}")]
    Internal {
        /// what went wrong
        what: &'static str,
    },
    /// The program is larger than the kernel accepts (1M instructions).
    #[error("program has {insns} instructions, more than the kernel's limit")]
    TooLarge {
        /// instruction count
        insns: usize,
    },
}
