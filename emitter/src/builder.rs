//! Program builder: instructions stay typed until `finish()`, which resolves labels (jumps and
//! bpf-to-bpf calls) and kfunc names, and records where map fds must be patched in at load time.
//!
//! Fixup kinds:
//! - jump to a label: `off` = target - (pc + 1); anything outside `i16` is an error
//!   (`EmitError::JumpOutOfRange`), never truncated;
//! - subprogram call (BPF_PSEUDO_CALL) to a label: `imm` = target - (pc + 1);
//! - kfunc call by name: `imm` = BTF id given to `define_kfunc`;
//! - map reference (`MapRef`): LD_IMM64 BPF_PSEUDO_MAP_FD with fd -1 until
//!   `Compiled::bytes` patches in the real fd.
//!
//! All positions ("pc") are 8-byte slot indices, as in verifier logs (LD_IMM64 takes two).

use std::collections::HashMap;

use crate::insn::{self, Call, Imm64, Insn, JmpOp, Reg, Size, Src};
use crate::EmitError;

/// A jump target, bound to a position with `Builder::bind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label(u32);

/// A symbolic map, resolved to an fd when the program is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapRef {
    /// The table's per-CPU counter array (key u32 counter slot, value {u64 packets, u64 bytes}).
    Counters,
    /// Any other map, numbered by the front end (for later match kinds such as set lookups).
    Other(u32),
    /// The namespace's event ring buffer (REJECT and LOG records, see [`crate::event`]).
    Events,
    /// The namespace's count of events lost to a full ring buffer (ARRAY, u32 key, u64
    /// value, [`crate::event::LOSS_SLOTS`] slots).
    EventLoss,
    /// The table's `limit` buckets (ARRAY, u32 key = limit slot, u64 state word
    /// `credit << 32 | prev`), shared by every program of the table.
    Limits,
    /// The namespace's address types (LPM_TRIE, key [`crate::codegen::ADDRTYPE_KEY_SIZE`]
    /// bytes, value [`crate::codegen::ADDRTYPE_VALUE_SIZE`]), kept by the daemon.
    AddrTypes,
    /// Recent list `n` of the generation (ARRAY of one value, [`crate::ir::recent`]).
    Recent(u32),
    /// Hashlimit table `n` of the generation (HASH, [`crate::ir::hashlimit`] key and value).
    Hashlimit(u32),
    /// The PROG_ARRAY holding the later segments of chains split over several programs (see
    /// `codegen::Options::tail`).
    Segments,
    /// The table's copies of the connections of REJECT replies (ARRAY of
    /// [`crate::event::REPLY_CT_SLOTS`] values of [`crate::event::CT_COPY`] bytes), written by
    /// the daemon (see [`crate::event::REPLY_CT_COPY`]).
    ReplyCt,
}

#[derive(Debug, Clone)]
enum Item {
    Insn(Insn),
    Jmp {
        wide: bool,
        op: JmpOp,
        dst: Reg,
        src: Src,
        to: Label,
    },
    Ja {
        to: Label,
    },
    CallLocal {
        to: Label,
    },
    Kfunc {
        name: &'static str,
    },
    Map {
        dst: Reg,
        map: MapRef,
    },
}

/// Accumulates instructions; see the module doc for the fixup kinds.
#[derive(Debug, Default)]
pub struct Builder {
    items: Vec<(usize, Item)>,
    pos: usize,
    labels: Vec<Option<usize>>,
    kfuncs: HashMap<&'static str, u32>,
    origin: Option<u32>,
    origins: Vec<(usize, u32)>,
    symbols: Vec<(usize, String)>,
    cond_jumps: usize,
    referenced: std::collections::HashSet<u32>,
}

/// A map a program needs besides the counters, referenced as `MapRef::Other(i)` for the
/// `i`-th spec (see `codegen::Output`): created as its [`MapKind`] says, filled with its
/// entries and passed to `Compiled::bytes` by the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    /// what kind of map to create
    pub kind: MapKind,
    /// key bytes (in the byte order the program stores the key in)
    pub key_size: u32,
    /// value bytes
    pub value_size: u32,
    /// the keys to insert before loading, back to back
    keys: Vec<u8>,
    /// their values, back to back
    values: Vec<u8>,
}

/// The kind of map a [`MapSpec`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// BPF_MAP_TYPE_HASH
    Hash,
    /// BPF_MAP_TYPE_ARRAY: u32 keys 0, 1, ... pushed in order
    Array,
    /// BPF_MAP_TYPE_LPM_TRIE (u32 prefix length, then the data)
    LpmTrie,
}

impl MapSpec {
    /// An empty hash map of these sizes.
    pub fn new(key_size: u32, value_size: u32) -> MapSpec {
        MapSpec::of(MapKind::Hash, key_size, value_size)
    }

    /// An empty array of `value_size`-byte values; [`MapSpec::push_value`] appends.
    pub fn array(value_size: u32) -> MapSpec {
        MapSpec::of(MapKind::Array, 4, value_size)
    }

    /// An empty map of `kind` and these sizes.
    pub fn of(kind: MapKind, key_size: u32, value_size: u32) -> MapSpec {
        MapSpec {
            kind,
            key_size,
            value_size,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Adds an entry; `key` and `value` must have the map's sizes.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        debug_assert_eq!(key.len(), self.key_size as usize);
        debug_assert_eq!(value.len(), self.value_size as usize);
        self.keys.extend_from_slice(key);
        self.values.extend_from_slice(value);
    }

    /// Appends the next value of an array (its key is its index).
    pub fn push_value(&mut self, value: &[u8]) {
        debug_assert_eq!(self.kind, MapKind::Array);
        let index = self.len() as u32;
        self.push(&index.to_ne_bytes(), value);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.keys
            .len()
            .checked_div(self.key_size as usize)
            .unwrap_or(0)
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The entries, (key, value), in the order they were added.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.keys
            .chunks_exact(self.key_size.max(1) as usize)
            .zip(self.values.chunks_exact(self.value_size.max(1) as usize))
    }

    /// Every key, back to back, and every value, back to back (for one batched update).
    pub fn keys_and_values(&self) -> (&[u8], &[u8]) {
        (&self.keys, &self.values)
    }
}

/// A finished program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// Instructions, map references holding fd -1.
    pub insns: Vec<Insn>,
    /// (slot index of an LD_IMM64, map it must point to).
    pub map_fixups: Vec<(usize, MapRef)>,
    /// (slot index, counter slot of the rule that instruction was generated for), ascending.
    pub origins: Vec<(usize, u32)>,
    /// (slot index, name) of function starts and other landmarks, for dumps.
    pub symbols: Vec<(usize, String)>,
}

/// The stack slots that loads through some base registers read, gathered from a
/// [`Builder::position`] on by [`Builder::gather_stack_reads`]: per 8-byte slot, the offset
/// and width of one of those loads (the one at the highest offset), so that repeating it is
/// as valid as it was and reaches no deeper.
#[derive(Debug, Clone)]
pub struct StackReads {
    /// Items looked at so far.
    upto: usize,
    /// Slot k holds offsets -8(k+1) to -8k-1 (the stack is 512 bytes).
    slots: [Option<(i16, Size)>; 64],
}

impl StackReads {
    /// Nothing read yet; items before `position` are never looked at.
    pub fn from(position: usize) -> Self {
        StackReads {
            upto: position,
            slots: [None; 64],
        }
    }

    fn note(&mut self, off: i16, size: Size) {
        let slot = usize::try_from(-1 - i32::from(off).div_euclid(8)).ok();
        if let Some(at) = slot.and_then(|k| self.slots.get_mut(k)) {
            if at.is_none_or(|(o, _)| off > o) {
                *at = Some((off, size));
            }
        }
    }

    /// One load per slot read, the deepest slot first.
    pub fn loads(&self) -> Vec<(i16, Size)> {
        self.slots.iter().rev().flatten().copied().collect()
    }
}

impl Builder {
    /// An empty builder.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Current position (slot index of the next instruction).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// A new unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label((self.labels.len() - 1) as u32)
    }

    /// Bind `l` to the current position.
    pub fn bind(&mut self, l: Label) -> Result<(), EmitError> {
        let slot = self
            .labels
            .get_mut(l.0 as usize)
            .ok_or(EmitError::UnboundLabel { label: l.0 })?;
        if slot.is_some() {
            return Err(EmitError::LabelBoundTwice { label: l.0 });
        }
        *slot = Some(self.pos);
        Ok(())
    }

    /// A new label bound here.
    pub fn here(&mut self) -> Label {
        let l = self.label();
        self.labels[l.0 as usize] = Some(self.pos);
        l
    }

    /// Conditional jumps emitted so far (each is a branch the verifier must explore).
    pub fn cond_jumps(&self) -> usize {
        self.cond_jumps
    }

    /// Has any jump or call been emitted to `l` so far?
    pub fn is_referenced(&self, l: Label) -> bool {
        self.referenced.contains(&l.0)
    }

    /// Is `l` bound yet?
    pub fn is_bound(&self, l: Label) -> bool {
        self.labels.get(l.0 as usize).is_some_and(|s| s.is_some())
    }

    /// Instructions emitted from now on belong to the rule with this counter slot.
    pub fn set_origin(&mut self, slot: Option<u32>) {
        self.origin = slot;
    }

    /// Name the current position (shown in dumps).
    pub fn symbol(&mut self, name: impl Into<String>) {
        self.symbols.push((self.pos, name.into()));
    }

    /// Make `name` resolvable by `call_kfunc`.
    pub fn define_kfunc(&mut self, name: &'static str, btf_id: u32) {
        self.kfuncs.insert(name, btf_id);
    }

    fn push(&mut self, item: Item, slots: usize) {
        if let Some(o) = self.origin {
            for s in 0..slots {
                self.origins.push((self.pos + s, o));
            }
        }
        self.items.push((self.pos, item));
        self.pos += slots;
    }

    /// How many items were emitted so far: where a [`StackReads`] starts.
    pub fn position(&self) -> usize {
        self.items.len()
    }

    /// Adds to `reads` the stack loads through `bases` emitted since it last looked (each
    /// item is looked at once, however often this is asked).
    pub fn gather_stack_reads(&self, reads: &mut StackReads, bases: &[Reg]) {
        for (_, item) in self.items.get(reads.upto..).unwrap_or_default() {
            if let Item::Insn(Insn::Ldx { src, off, size, .. }) = item {
                if *off < 0 && bases.contains(src) {
                    reads.note(*off, *size);
                }
            }
        }
        reads.upto = reads.upto.max(self.items.len());
    }

    /// Append one instruction.
    pub fn emit(&mut self, i: Insn) {
        let n = i.slots();
        self.push(Item::Insn(i), n);
    }

    /// `if dst op src goto l`, comparing all 64 bits (BPF_JMP).
    pub fn jmp64(&mut self, op: JmpOp, dst: Reg, src: Src, l: Label) {
        self.cond_jmp(true, op, dst, src, l);
    }

    /// `if wdst op wsrc goto l`, comparing the low 32 bits (BPF_JMP32; an immediate is a u32
    /// bit pattern).
    pub fn jmp32(&mut self, op: JmpOp, dst: Reg, src: Src, l: Label) {
        self.cond_jmp(false, op, dst, src, l);
    }

    fn cond_jmp(&mut self, wide: bool, op: JmpOp, dst: Reg, src: Src, l: Label) {
        self.cond_jumps += 1;
        self.referenced.insert(l.0);
        self.push(
            Item::Jmp {
                wide,
                op,
                dst,
                src,
                to: l,
            },
            1,
        );
    }

    /// `goto l`.
    pub fn ja(&mut self, l: Label) {
        self.referenced.insert(l.0);
        self.push(Item::Ja { to: l }, 1);
    }

    /// bpf-to-bpf call of the subprogram starting at `l`.
    pub fn call_local(&mut self, l: Label) {
        self.referenced.insert(l.0);
        self.push(Item::CallLocal { to: l }, 1);
    }

    /// Call a helper by number.
    pub fn call_helper(&mut self, id: u32) {
        self.emit(Insn::Call(Call::Helper(id)));
    }

    /// Call a kfunc by name (its BTF id is given with `define_kfunc`, before or after).
    pub fn call_kfunc(&mut self, name: &'static str) {
        self.push(Item::Kfunc { name }, 1);
    }

    /// `dst = map` (LD_IMM64 BPF_PSEUDO_MAP_FD, patched at load time).
    pub fn ld_map(&mut self, dst: Reg, map: MapRef) {
        self.push(Item::Map { dst, map }, 2);
    }

    /// Resolve every label and fixup.
    pub fn finish(self) -> Result<Compiled, EmitError> {
        let target = |l: Label| -> Result<usize, EmitError> {
            self.labels
                .get(l.0 as usize)
                .copied()
                .flatten()
                .ok_or(EmitError::UnboundLabel { label: l.0 })
        };
        let rel16 = |at: usize, l: Label| -> Result<i16, EmitError> {
            let t = target(l)?;
            let off = t as i64 - (at as i64 + 1);
            i16::try_from(off).map_err(|_| EmitError::JumpOutOfRange { at, offset: off })
        };
        let mut insns = Vec::with_capacity(self.items.len());
        let mut map_fixups = Vec::new();
        for (at, item) in &self.items {
            let at = *at;
            let i = match item {
                Item::Insn(i) => *i,
                Item::Jmp {
                    wide,
                    op,
                    dst,
                    src,
                    to,
                } => Insn::Jmp {
                    wide: *wide,
                    op: *op,
                    dst: *dst,
                    src: *src,
                    off: rel16(at, *to)?,
                },
                Item::Ja { to } => Insn::Ja {
                    off: rel16(at, *to)?,
                },
                Item::CallLocal { to } => {
                    let off = target(*to)? as i64 - (at as i64 + 1);
                    let off = i32::try_from(off)
                        .map_err(|_| EmitError::JumpOutOfRange { at, offset: off })?;
                    Insn::Call(Call::Local(off))
                }
                Item::Kfunc { name } => {
                    let id = *self
                        .kfuncs
                        .get(name)
                        .ok_or(EmitError::UnknownKfunc { name })?;
                    Insn::Call(Call::Kfunc { btf_id: id, off: 0 })
                }
                Item::Map { dst, map } => {
                    map_fixups.push((at, *map));
                    Insn::LdImm64 {
                        dst: *dst,
                        imm: Imm64::MapFd(-1),
                    }
                }
            };
            insns.push(i);
        }
        Ok(Compiled {
            insns,
            map_fixups,
            origins: self.origins,
            symbols: self.symbols,
        })
    }
}

impl Compiled {
    /// Number of 8-byte slots (what the kernel calls the instruction count).
    pub fn slot_count(&self) -> usize {
        self.insns.iter().map(Insn::slots).sum()
    }

    /// Kernel encoding with map fds patched in (`maps` gives the fd of each `MapRef`).
    pub fn bytes(&self, maps: &dyn Fn(MapRef) -> i32) -> Vec<u8> {
        let mut out = insn::encode(&self.insns);
        for (slot, m) in &self.map_fixups {
            let at = slot * 8 + 4;
            out[at..at + 4].copy_from_slice(&maps(*m).to_ne_bytes());
        }
        out
    }

    /// Counter slot of the rule the instruction at `slot` came from.
    pub fn origin_of(&self, slot: usize) -> Option<u32> {
        self.origins
            .binary_search_by_key(&slot, |e| e.0)
            .ok()
            .map(|i| self.origins[i].1)
    }

    /// Disassembly annotated with symbols and rule origins (the `bpfilter dump` format).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let mut pc = 0usize;
        let mut sym = self.symbols.iter().peekable();
        let mut last_origin = None;
        for i in &self.insns {
            while let Some((at, name)) = sym.peek() {
                if *at > pc {
                    break;
                }
                out.push_str(&format!("{name}:\n"));
                sym.next();
            }
            let o = self.origin_of(pc);
            if o != last_origin {
                if let Some(o) = o {
                    out.push_str(&format!("  ; rule {o}\n"));
                }
                last_origin = o;
            }
            out.push_str(&format!("{pc:5}: {i}\n"));
            pc += i.slots();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::{AluOp, Size};

    fn mov(dst: Reg, v: i32) -> Insn {
        Insn::Alu {
            wide: true,
            op: AluOp::Mov,
            dst,
            src: Src::Imm(v),
        }
    }

    #[test]
    fn labels_forward_and_backward() {
        let mut b = Builder::new();
        let fwd = b.label();
        let back = b.here();
        b.jmp64(JmpOp::Jeq, Reg::R1, Src::Imm(0), fwd); // 0
        b.ld_map(Reg::R1, MapRef::Counters); // 1-2
        b.ja(back); // 3 -> 0 : off -4
        b.bind(fwd).expect("bind");
        b.emit(Insn::Exit); // 4
        let c = b.finish().expect("finish");
        assert_eq!(
            c.insns[0],
            Insn::Jmp {
                wide: true,
                op: JmpOp::Jeq,
                dst: Reg::R1,
                src: Src::Imm(0),
                off: 3
            }
        );
        assert_eq!(c.insns[2], Insn::Ja { off: -4 });
        assert_eq!(c.map_fixups, vec![(1, MapRef::Counters)]);
        assert_eq!(c.slot_count(), 5);
        let bytes = c.bytes(&|_| 42);
        assert_eq!(&bytes[12..16], &42i32.to_ne_bytes());
        assert_eq!(
            insn::decode(&bytes).expect("decode")[1],
            Insn::LdImm64 {
                dst: Reg::R1,
                imm: Imm64::MapFd(42)
            }
        );
    }

    #[test]
    fn out_of_range_jump_is_an_error() {
        // a jump over `n` instructions
        let jump_over = |n| {
            let mut b = Builder::new();
            let l = b.label();
            b.ja(l);
            for _ in 0..n {
                b.emit(mov(Reg::R0, 0));
            }
            b.bind(l).expect("bind");
            b.emit(Insn::Exit);
            b.finish()
        };
        assert!(matches!(
            jump_over(40000),
            Err(EmitError::JumpOutOfRange {
                at: 0,
                offset: 40000
            })
        ));
        assert!(
            jump_over(32767).is_ok(),
            "32767 is the largest forward offset"
        );
    }

    #[test]
    fn unbound_and_double_bound_labels() {
        let mut b = Builder::new();
        let l = b.label();
        b.ja(l);
        assert!(matches!(b.finish(), Err(EmitError::UnboundLabel { .. })));
        let mut b = Builder::new();
        let l = b.here();
        assert!(matches!(b.bind(l), Err(EmitError::LabelBoundTwice { .. })));
    }

    #[test]
    fn calls_kfuncs_and_origins() {
        let mut b = Builder::new();
        let sub = b.label();
        b.set_origin(Some(7));
        b.call_local(sub); // 0
        b.call_kfunc("bpf_dynptr_from_skb"); // 1
        b.set_origin(None);
        b.emit(Insn::Exit); // 2
        b.bind(sub).expect("bind");
        b.symbol("sub");
        b.emit(Insn::Stx {
            size: Size::W,
            dst: Reg::R10,
            src: Reg::R1,
            off: -4,
        }); // 3
        b.emit(Insn::Exit);
        let missing = Builder::new();
        drop(missing);
        b.define_kfunc("bpf_dynptr_from_skb", 1234);
        let c = b.finish().expect("finish");
        assert_eq!(c.insns[0], Insn::Call(Call::Local(2)));
        assert_eq!(
            c.insns[1],
            Insn::Call(Call::Kfunc {
                btf_id: 1234,
                off: 0
            })
        );
        assert_eq!(c.origin_of(0), Some(7));
        assert_eq!(c.origin_of(1), Some(7));
        assert_eq!(c.origin_of(2), None);
        assert!(c.dump().contains("sub:\n    3: *(u32 *)(r10 -4) = r1"));

        let mut b = Builder::new();
        b.call_kfunc("nope");
        assert!(matches!(
            b.finish(),
            Err(EmitError::UnknownKfunc { name: "nope" })
        ));
    }
}
