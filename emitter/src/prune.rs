//! Removes instructions no path reaches: the verifier refuses a program with unreachable
//! instructions ("unreachable insn N"), and code generation leaves some behind, for example
//! the fall-off-the-end epilogue of a chain whose last rule always leaves (an iptables user
//! chain ends with its counted, unconditional RETURN entry).
//!
//! Works on the finished program: positions are slots (LD_IMM64 takes two), jumps and local
//! calls are relative. Reachability starts at slot 0 and at every local call's target.

use std::collections::BTreeSet;

use crate::insn::{Call, Insn};
use crate::{Compiled, EmitError};

/// The program without its unreachable instructions; jumps, calls, map fixups, rule origins
/// and symbols moved accordingly.
pub fn prune_unreachable(c: Compiled) -> Result<Compiled, EmitError> {
    let n = c.insns.len();
    // slot of each instruction, and the instruction at each slot
    let mut slot = Vec::with_capacity(n + 1);
    let mut at_slot = std::collections::HashMap::with_capacity(n);
    let mut s = 0usize;
    for (i, insn) in c.insns.iter().enumerate() {
        slot.push(s);
        at_slot.insert(s, i);
        s += insn.slots();
    }
    slot.push(s);
    let target = |i: usize, off: i64| -> Option<usize> {
        let t = slot[i] as i64 + c.insns[i].slots() as i64 + off;
        usize::try_from(t)
            .ok()
            .and_then(|t| at_slot.get(&t).copied())
    };
    let mut live = vec![false; n];
    let mut todo = vec![0usize];
    while let Some(i) = todo.pop() {
        if i >= n || live[i] {
            continue;
        }
        live[i] = true;
        match c.insns[i] {
            Insn::Exit => {}
            Insn::Ja { off } => todo.extend(target(i, off.into())),
            Insn::Jmp { off, .. } => {
                todo.push(i + 1);
                todo.extend(target(i, off.into()));
            }
            Insn::Call(Call::Local(off)) => {
                todo.push(i + 1);
                todo.extend(target(i, off.into()));
            }
            _ => todo.push(i + 1),
        }
    }
    if live.iter().all(|&l| l) {
        return Ok(c);
    }
    // new slot of every old instruction (a removed one maps to the next kept slot)
    let mut new_slot = vec![0usize; n + 1];
    let mut s = 0usize;
    for i in 0..n {
        new_slot[i] = s;
        if live[i] {
            s += c.insns[i].slots();
        }
    }
    new_slot[n] = s;
    let old_to_new = |old: usize| -> usize { at_slot.get(&old).map_or(s, |&i| new_slot[i]) };
    let mut insns = Vec::with_capacity(n);
    for i in (0..n).filter(|&i| live[i]) {
        let here = new_slot[i] + c.insns[i].slots();
        let moved = |off: i64| -> i64 {
            let old_t = slot[i] as i64 + c.insns[i].slots() as i64 + off;
            old_to_new(old_t as usize) as i64 - here as i64
        };
        let fit = |o: i64| {
            i16::try_from(o).map_err(|_| EmitError::JumpOutOfRange {
                at: new_slot[i],
                offset: o,
            })
        };
        insns.push(match c.insns[i] {
            Insn::Ja { off } => Insn::Ja {
                off: fit(moved(off.into()))?,
            },
            Insn::Jmp {
                wide,
                op,
                dst,
                src,
                off,
            } => Insn::Jmp {
                wide,
                op,
                dst,
                src,
                off: fit(moved(off.into()))?,
            },
            Insn::Call(Call::Local(off)) => Insn::Call(Call::Local(moved(off.into()) as i32)),
            other => other,
        });
    }
    let keep = |old: usize| at_slot.get(&old).is_some_and(|&i| live[i]);
    let map_fixups = c
        .map_fixups
        .iter()
        .filter(|(s, _)| keep(*s))
        .map(|&(s, m)| (old_to_new(s), m))
        .collect();
    let mut origins: Vec<(usize, u32)> =
        c.origins.iter().map(|&(s, o)| (old_to_new(s), o)).collect();
    // Of origins that collapsed onto one slot, the last one describes the code there.
    origins.reverse();
    let mut seen = BTreeSet::new();
    origins.retain(|(s, _)| seen.insert(*s));
    origins.reverse();
    let symbols = c
        .symbols
        .iter()
        .filter(|(s, _)| keep(*s))
        .map(|(s, name)| (old_to_new(*s), name.clone()))
        .collect();
    Ok(Compiled {
        insns,
        map_fixups,
        origins,
        symbols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{Builder, MapRef};
    use crate::insn::{mov64, JmpOp, Reg, Src};

    fn mov(r: Reg, v: i32) -> Insn {
        mov64(r, Src::Imm(v))
    }

    #[test]
    fn removes_dead_code_and_keeps_jumps_right() {
        let mut b = Builder::new();
        let skip = b.label();
        let sub = b.label();
        b.ld_map(Reg::R2, MapRef::Counters);
        b.jmp64(JmpOp::Jeq, Reg::R1, Src::Imm(0), skip);
        b.call_local(sub);
        b.emit(Insn::Exit);
        b.emit(mov(Reg::R0, 7)); // dead
        b.emit(Insn::Exit); // dead
        b.bind(skip).expect("bind");
        b.emit(mov(Reg::R0, 1));
        b.emit(Insn::Exit);
        b.bind(sub).expect("bind");
        b.emit(mov(Reg::R0, 2));
        b.emit(Insn::Exit);
        b.emit(mov(Reg::R0, 3)); // dead
        let c = b.finish().expect("finish");
        let p = prune_unreachable(c.clone()).expect("prune");
        assert_eq!(p.insns.len(), c.insns.len() - 3);
        assert_eq!(p.map_fixups, c.map_fixups);
        // jeq still lands on `r0 = 1`, the call on `r0 = 2`
        let Insn::Jmp { off, .. } = p.insns[1] else {
            panic!()
        };
        assert_eq!(p.insns[(2 + 1 + off as i64 - 1) as usize], mov(Reg::R0, 1)); // ld_imm64 takes 2 slots
        let Insn::Call(Call::Local(off)) = p.insns[2] else {
            panic!()
        };
        assert_eq!(p.insns[(3 + 1 + off as i64 - 1) as usize], mov(Reg::R0, 2));
        assert!(!p.insns.contains(&mov(Reg::R0, 7)) && !p.insns.contains(&mov(Reg::R0, 3)));
    }

    #[test]
    fn a_program_without_dead_code_is_unchanged() {
        let mut b = Builder::new();
        b.emit(mov(Reg::R0, 1));
        b.emit(Insn::Exit);
        let c = b.finish().expect("finish");
        assert_eq!(prune_unreachable(c.clone()).expect("prune"), c);
    }
}
