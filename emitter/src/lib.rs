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
pub mod insn;
pub mod ir;
pub mod prune;
pub mod reference;

pub use builder::{Builder, Compiled, Label, MapRef, MapSpec};
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
            net_device_name: 0,
            skb_len: 112,
            skb_data_len: 116,
            skb_data: 200,
            kfunc_dynptr_from_skb: 1,
            kfunc_dynptr_slice: 2,
            kfunc_rdonly_cast: 3,
            btf_iphdr: 4,
            btf_tcphdr: 5,
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
