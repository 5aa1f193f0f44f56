//! The dispatcher: the program every hook keeps attached while rulesets come and go.
//!
//! A netfilter link cannot swap its program (`bpf_link_update` answers EOPNOTSUPP), so the
//! link holds this program for good and it tail-calls slot `hook` of a PROG_ARRAY; replacing
//! a ruleset is one map update per hook, each atomic for every packet (a packet meets one
//! filter hook only, so no packet sees two rulesets). An empty slot makes the tail call
//! fall through to ACCEPT: a table with no program yet filters nothing, as an empty table
//! would.

use crate::builder::{Builder, Compiled, MapRef};
use crate::insn::{mov64, Insn, Reg, Src};
use crate::EmitError;

/// Helper number of `bpf_tail_call` (uapi enum bpf_func_id; stable ABI).
const HELPER_TAIL_CALL: u32 = 12;

/// `tail_call(ctx, progs, hook)`, then `return NF_ACCEPT`; `progs` is the PROG_ARRAY.
pub fn dispatcher(hook: u32, progs: MapRef) -> Result<Compiled, EmitError> {
    let mut b = Builder::new();
    b.ld_map(Reg::R2, progs);
    b.emit(mov64(Reg::R3, Src::Imm(hook as i32)));
    b.call_helper(HELPER_TAIL_CALL);
    b.emit(mov64(Reg::R0, Src::Imm(1)));
    b.emit(Insn::Exit);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::Call;

    #[test]
    fn tail_calls_the_hook_slot_then_accepts() {
        let c = dispatcher(3, MapRef::Other(0)).expect("dispatcher");
        assert_eq!(c.map_fixups, vec![(0, MapRef::Other(0))]);
        assert_eq!(
            c.insns[1..],
            [
                mov64(Reg::R3, Src::Imm(3)),
                Insn::Call(Call::Helper(HELPER_TAIL_CALL)),
                mov64(Reg::R0, Src::Imm(1)),
                Insn::Exit,
            ]
        );
    }
}
