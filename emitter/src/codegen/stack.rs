//! The stack of a call chain, as the verifier adds it up.
//!
//! `check_max_stack_depth` walks every path of bpf-to-bpf calls from the main function and
//! refuses a program where the frames of one path need more than MAX_BPF_STACK (512) bytes:
//! "combined stack size of N calls is M. Too large". Each frame counts its function's stack
//! depth, rounded by `round_up_stack_depth`: to 16 bytes for a JIT-compiled program since
//! Linux 6.9 (a function that uses no stack counting 0), to 32 bytes and at least 32 before
//! that and for interpreted programs. bpfilter's chain subprograms use no stack of their own
//! (they reach main's record through r6), so only the second rule limits how deep user
//! chains can be subprograms: main's record and `count` leave room for few 32-byte frames
//! (544 bytes for 8 calls of an IPv4 program on 6.8).

use crate::builder::Compiled;
use crate::insn::{AluOp, AtomicOp, Call, Insn, Reg, Src};

/// The verifier's MAX_BPF_STACK.
pub(super) const MAX_BPF_STACK: u32 = 512;

/// How the kernel rounds each frame of a call chain (`round_up_stack_depth`); the daemon
/// probes which one the running kernel applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StackRule {
    /// JIT-compiled programs on Linux 6.9 and later: up to 16 bytes, 0 for no stack.
    #[default]
    Jit16,
    /// Linux 6.8 and earlier, and interpreted programs: up to 32 bytes, at least 32.
    Frame32,
}

impl StackRule {
    fn round(self, depth: u32) -> u32 {
        match self {
            StackRule::Jit16 => depth.next_multiple_of(16),
            StackRule::Frame32 => depth.max(1).next_multiple_of(32),
        }
    }
}

/// The largest stack any call path of `code` needs under `rule`.
///
/// A function's depth is the deepest offset it reaches below its own frame pointer (r10, or a
/// register copied from it), as a load, a store or a pointer handed on. Loads and stores
/// through r6 count for main: r6 holds main's frame pointer in main and in the chain
/// subprograms. Deliberately an upper bound of what the verifier finds.
pub(super) fn combined(code: &Compiled, rule: StackRule) -> u32 {
    // each instruction at its pc (an LD_IMM64 takes two slots)
    let mut next = 0;
    let insns: Vec<(usize, &Insn)> = code
        .insns
        .iter()
        .map(|i| {
            let pc = next;
            next += i.slots();
            (pc, i)
        })
        .collect();
    // function starts: main and every bpf-to-bpf call's target
    let mut starts = vec![0usize];
    let mut calls = Vec::new();
    for &(pc, insn) in &insns {
        if let Insn::Call(Call::Local(imm)) = *insn {
            let target = (pc as i64 + 1 + i64::from(imm)).max(0) as usize;
            starts.push(target);
            calls.push((pc, target));
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let func_of = |pc: usize| starts.partition_point(|&s| s <= pc).saturating_sub(1);
    let mut depth = vec![0u32; starts.len()];
    // per register: its offset from the function's frame pointer, when it holds one
    let mut frame_regs: [Option<i64>; 11] = [None; 11];
    let r = |reg: Reg| usize::from(reg.num());
    let mut current = usize::MAX;
    for &(pc, insn) in &insns {
        let f = func_of(pc);
        if f != current {
            current = f;
            frame_regs = [None; 11];
            frame_regs[r(Reg::R10)] = Some(0);
        }
        let mut reach = |f: usize, by: i64| {
            if by < 0 {
                depth[f] = depth[f].max(u32::try_from(-by).unwrap_or(MAX_BPF_STACK));
            }
        };
        // a load, a store or an atomic operation through a base register
        let access = match *insn {
            Insn::Ldx { src, off, .. } => Some((src, off)),
            Insn::Stx { dst, off, .. }
            | Insn::St { dst, off, .. }
            | Insn::Atomic { dst, off, .. } => Some((dst, off)),
            _ => None,
        };
        if let Some((base, off)) = access {
            if let Some(at) = frame_regs[r(base)] {
                reach(f, at + i64::from(off));
            }
            if base == Reg::R6 {
                reach(0, i64::from(off));
            }
        }
        // frame pointers copied (rX = r10) and moved (rX += imm); other writes end them
        match *insn {
            Insn::Alu {
                wide: true,
                op: AluOp::Mov,
                dst,
                src: Src::Reg(from),
            } if dst != Reg::R10 => frame_regs[r(dst)] = frame_regs[r(from)],
            Insn::Alu {
                wide: true,
                op: AluOp::Add,
                dst,
                src: Src::Imm(imm),
            } if dst != Reg::R10 && frame_regs[r(dst)].is_some() => {
                let moved = frame_regs[r(dst)].unwrap_or(0) + i64::from(imm);
                reach(f, moved);
                frame_regs[r(dst)] = Some(moved);
            }
            Insn::Alu { dst, .. }
            | Insn::Neg { dst, .. }
            | Insn::End { dst, .. }
            | Insn::Ldx { dst, .. }
            | Insn::LdImm64 { dst, .. }
                if dst != Reg::R10 =>
            {
                frame_regs[r(dst)] = None;
            }
            Insn::Atomic { op, src, .. } => match op {
                AtomicOp::CmpXchg => frame_regs[r(Reg::R0)] = None,
                AtomicOp::Xchg
                | AtomicOp::Add { fetch: true }
                | AtomicOp::Or { fetch: true }
                | AtomicOp::And { fetch: true }
                | AtomicOp::Xor { fetch: true } => frame_regs[r(src)] = None,
                _ => {}
            },
            Insn::Call(_) => frame_regs[..6].fill(None),
            _ => {}
        }
    }
    // the deepest path from main through the calls
    let callees: Vec<Vec<usize>> = (0..starts.len())
        .map(|f| {
            calls
                .iter()
                .filter(|(pc, _)| func_of(*pc) == f)
                .map(|(_, t)| func_of(*t))
                .collect()
        })
        .collect();
    fn path(f: usize, callees: &[Vec<usize>], frame: &[u32], seen: u32) -> u32 {
        // a depth bound keeps a malformed call graph from recursing forever
        if seen > 16 {
            return MAX_BPF_STACK + 1;
        }
        frame[f]
            + callees[f]
                .iter()
                .map(|&c| path(c, callees, frame, seen + 1))
                .max()
                .unwrap_or(0)
    }
    let frame: Vec<u32> = depth.iter().map(|&d| rule.round(d)).collect();
    path(0, &callees, &frame, 0)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use std::collections::BTreeMap;

    use super::*;
    use crate::builder::Builder;
    use crate::codegen::tests::program;
    use crate::codegen::{compile_output, Options};
    use crate::insn::{mov64, st, Insn, Reg, Size, Src};
    use crate::ir::{Action, Chain, ChainId, Family, Hook, Program, Rule};
    use crate::KernelLayout;

    /// main writes 300 bytes down and calls f (no stack of its own), which calls g: g moves a
    /// copy of its frame pointer twice and writes through it, 40 bytes down.
    #[test]
    fn frames_add_up_by_the_rule() {
        let mut b = Builder::new();
        let (f, g) = (b.label(), b.label());
        b.emit(st(Size::W, Reg::R10, -300, 0));
        b.call_local(f);
        b.emit(mov64(Reg::R0, Src::Imm(0)));
        b.emit(Insn::Exit);
        b.bind(f).unwrap();
        b.emit(mov64(Reg::R6, Src::Reg(Reg::R1)));
        b.call_local(g);
        b.emit(Insn::Exit);
        b.bind(g).unwrap();
        b.emit(mov64(Reg::R2, Src::Reg(Reg::R10)));
        b.emit(crate::insn::alu64(
            crate::insn::AluOp::Add,
            Reg::R2,
            Src::Imm(-16),
        ));
        b.emit(crate::insn::alu64(
            crate::insn::AluOp::Add,
            Reg::R2,
            Src::Imm(-24),
        ));
        b.emit(st(Size::W, Reg::R2, 0, 0));
        b.emit(mov64(Reg::R0, Src::Imm(0)));
        b.emit(Insn::Exit);
        let code = b.finish().unwrap();
        // 320 + 32 + 64 (40, rounded) / 304 + 0 + 48
        assert_eq!(combined(&code, StackRule::Frame32), 416);
        assert_eq!(combined(&code, StackRule::Jit16), 352);
    }

    /// main -> c1 -> ... -> c8 -> c9 in an IPv6 program (main's record and header walk take
    /// over 340 bytes): as deep as the call frames allow under the JIT rule, fewer subprograms
    /// (more inlining) where every frame costs 32 bytes, and within 512 bytes under both.
    #[test]
    fn deep_chains_fit_the_stack_of_either_rule() {
        let call = |to| Rule {
            matches: vec![],
            action: Action::Call(ChainId(to)),
            counter: to,
        };
        let mut chains = BTreeMap::new();
        for i in 0..9u32 {
            let rules = if i < 8 { vec![call(i + 1)] } else { vec![] };
            chains.insert(
                ChainId(i),
                Chain {
                    name: format!("c{i}"),
                    rules,
                },
            );
        }
        let p = Program {
            family: Family::Ipv6,
            ..program(Hook::LocalIn, chains, 20)
        };
        let l = KernelLayout::example();
        let subprograms = |rule| {
            let out = compile_output(
                &p,
                &l,
                Options {
                    stack: rule,
                    ..Options::default()
                },
            )
            .unwrap();
            assert!(combined(&out.code, rule) <= MAX_BPF_STACK, "{rule:?}");
            out.code
                .symbols
                .iter()
                .filter(|s| s.1.starts_with("chain_"))
                .count()
        };
        let jit = subprograms(StackRule::Jit16);
        let frame32 = subprograms(StackRule::Frame32);
        assert_eq!(jit, 6);
        assert!(frame32 < jit, "{frame32} subprograms under Frame32");
    }
}
