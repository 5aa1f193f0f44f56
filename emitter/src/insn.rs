//! Typed eBPF instructions, their 8-byte kernel encoding (`struct bpf_insn`) and a
//! disassembler that prints the verifier's syntax (kernel/bpf/disasm.c), so that a verifier
//! log and `bpfilter dump` read the same.
//!
//! Encoding reference: include/uapi/linux/bpf.h, bpf_common.h and
//! Documentation/bpf/standardization/instruction-set.rst. One `Insn` is one kernel
//! instruction, except `LdImm64`, which occupies two 8-byte slots (`Insn::slots()`).

use std::fmt;

/// Instruction classes (low 3 bits of the opcode).
pub mod class {
    /// Non-standard load (only LD_IMM64 is used).
    pub const LD: u8 = 0x00;
    /// Load into register from memory.
    pub const LDX: u8 = 0x01;
    /// Store immediate.
    pub const ST: u8 = 0x02;
    /// Store register (and atomics with mode ATOMIC).
    pub const STX: u8 = 0x03;
    /// 32-bit arithmetic.
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, calls, exit.
    pub const JMP: u8 = 0x05;
    /// 32-bit jumps.
    pub const JMP32: u8 = 0x06;
    /// 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;
}

/// Operand source bit for ALU and JMP classes.
pub mod source {
    /// Operand is the 32-bit immediate.
    pub const K: u8 = 0x00;
    /// Operand is the source register.
    pub const X: u8 = 0x08;
}

/// Size field of load/store opcodes.
pub mod size {
    /// 32 bits.
    pub const W: u8 = 0x00;
    /// 16 bits.
    pub const H: u8 = 0x08;
    /// 8 bits.
    pub const B: u8 = 0x10;
    /// 64 bits.
    pub const DW: u8 = 0x18;
}

/// Mode field of load/store opcodes.
pub mod mode {
    /// 64-bit immediate (LD class).
    pub const IMM: u8 = 0x00;
    /// Register + offset memory access.
    pub const MEM: u8 = 0x60;
    /// Atomic read-modify-write (STX class).
    pub const ATOMIC: u8 = 0xc0;
}

/// ALU operation codes (high 4 bits).
pub mod alu {
    /// dst += src
    pub const ADD: u8 = 0x00;
    /// dst -= src
    pub const SUB: u8 = 0x10;
    /// dst *= src
    pub const MUL: u8 = 0x20;
    /// dst /= src
    pub const DIV: u8 = 0x30;
    /// dst |= src
    pub const OR: u8 = 0x40;
    /// dst &= src
    pub const AND: u8 = 0x50;
    /// dst <<= src
    pub const LSH: u8 = 0x60;
    /// dst >>= src (logical)
    pub const RSH: u8 = 0x70;
    /// dst = -dst
    pub const NEG: u8 = 0x80;
    /// dst %= src
    pub const MOD: u8 = 0x90;
    /// dst ^= src
    pub const XOR: u8 = 0xa0;
    /// dst = src
    pub const MOV: u8 = 0xb0;
    /// dst >>= src (arithmetic)
    pub const ARSH: u8 = 0xc0;
    /// byte swap (source bit selects to-LE (K) / to-BE (X))
    pub const END: u8 = 0xd0;
}

/// Jump operation codes (high 4 bits).
pub mod jmp {
    /// goto
    pub const JA: u8 = 0x00;
    /// ==
    pub const JEQ: u8 = 0x10;
    /// > unsigned
    pub const JGT: u8 = 0x20;
    /// >= unsigned
    pub const JGE: u8 = 0x30;
    /// & != 0
    pub const JSET: u8 = 0x40;
    /// !=
    pub const JNE: u8 = 0x50;
    /// > signed
    pub const JSGT: u8 = 0x60;
    /// >= signed
    pub const JSGE: u8 = 0x70;
    /// function call
    pub const CALL: u8 = 0x80;
    /// return
    pub const EXIT: u8 = 0x90;
    /// < unsigned
    pub const JLT: u8 = 0xa0;
    /// <= unsigned
    pub const JLE: u8 = 0xb0;
    /// < signed
    pub const JSLT: u8 = 0xc0;
    /// <= signed
    pub const JSLE: u8 = 0xd0;
}

/// `src_reg` values with a special meaning (uapi bpf.h).
pub mod pseudo {
    /// LD_IMM64: imm is a map fd.
    pub const MAP_FD: u8 = 1;
    /// LD_IMM64: imm is a map fd, next imm an offset into its value.
    pub const MAP_VALUE: u8 = 2;
    /// LD_IMM64: imm is a BTF id of a kernel variable.
    pub const BTF_ID: u8 = 3;
    /// CALL: imm is a pc-relative subprogram offset.
    pub const CALL: u8 = 1;
    /// CALL: imm is the BTF id of a kfunc.
    pub const KFUNC_CALL: u8 = 2;
}

/// Atomic operation codes carried in `imm` (uapi bpf.h).
pub mod atomic {
    /// Modifier: return the old value in the source register.
    pub const FETCH: i32 = 0x01;
    /// Exchange (always fetches).
    pub const XCHG: i32 = 0xe0 | FETCH;
    /// Compare and exchange with r0 (always fetches).
    pub const CMPXCHG: i32 = 0xf0 | FETCH;
}

/// A register; R10 is the read-only frame pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Reg {
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

impl Reg {
    /// All registers in number order.
    pub const ALL: [Reg; 11] = [
        Reg::R0,
        Reg::R1,
        Reg::R2,
        Reg::R3,
        Reg::R4,
        Reg::R5,
        Reg::R6,
        Reg::R7,
        Reg::R8,
        Reg::R9,
        Reg::R10,
    ];
    /// Register number 0..=10.
    pub fn num(self) -> u8 {
        self as u8
    }
    /// Register from its number.
    pub fn from_num(n: u8) -> Option<Reg> {
        Reg::ALL.get(usize::from(n)).copied()
    }
}

/// Memory access width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// u8
    B,
    /// u16
    H,
    /// u32
    W,
    /// u64
    DW,
}

impl Size {
    fn code(self) -> u8 {
        match self {
            Size::B => size::B,
            Size::H => size::H,
            Size::W => size::W,
            Size::DW => size::DW,
        }
    }
    fn from_code(c: u8) -> Size {
        match c & 0x18 {
            size::B => Size::B,
            size::H => Size::H,
            size::W => Size::W,
            _ => Size::DW,
        }
    }
    fn c_type(self) -> &'static str {
        match self {
            Size::B => "u8",
            Size::H => "u16",
            Size::W => "u32",
            Size::DW => "u64",
        }
    }
    /// Width in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }
}

/// Binary ALU operations (NEG and END have their own variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Xor,
    Mov,
    Arsh,
}

/// (op, opcode bits, verifier operator) table.
const ALU_TABLE: [(AluOp, u8, &str); 12] = [
    (AluOp::Add, alu::ADD, "+="),
    (AluOp::Sub, alu::SUB, "-="),
    (AluOp::Mul, alu::MUL, "*="),
    (AluOp::Div, alu::DIV, "/="),
    (AluOp::Or, alu::OR, "|="),
    (AluOp::And, alu::AND, "&="),
    (AluOp::Lsh, alu::LSH, "<<="),
    (AluOp::Rsh, alu::RSH, ">>="),
    (AluOp::Mod, alu::MOD, "%="),
    (AluOp::Xor, alu::XOR, "^="),
    (AluOp::Mov, alu::MOV, "="),
    (AluOp::Arsh, alu::ARSH, "s>>="),
];

impl AluOp {
    fn code(self) -> u8 {
        ALU_TABLE.iter().find(|e| e.0 == self).map_or(0, |e| e.1)
    }
    fn sym(self) -> &'static str {
        ALU_TABLE.iter().find(|e| e.0 == self).map_or("?", |e| e.2)
    }
    fn from_code(c: u8) -> Option<AluOp> {
        ALU_TABLE.iter().find(|e| e.1 == c).map(|e| e.0)
    }
}

/// Conditional jump operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum JmpOp {
    Jeq,
    Jgt,
    Jge,
    Jset,
    Jne,
    Jsgt,
    Jsge,
    Jlt,
    Jle,
    Jslt,
    Jsle,
}

/// (op, opcode bits, verifier operator) table.
const JMP_TABLE: [(JmpOp, u8, &str); 11] = [
    (JmpOp::Jeq, jmp::JEQ, "=="),
    (JmpOp::Jgt, jmp::JGT, ">"),
    (JmpOp::Jge, jmp::JGE, ">="),
    (JmpOp::Jset, jmp::JSET, "&"),
    (JmpOp::Jne, jmp::JNE, "!="),
    (JmpOp::Jsgt, jmp::JSGT, "s>"),
    (JmpOp::Jsge, jmp::JSGE, "s>="),
    (JmpOp::Jlt, jmp::JLT, "<"),
    (JmpOp::Jle, jmp::JLE, "<="),
    (JmpOp::Jslt, jmp::JSLT, "s<"),
    (JmpOp::Jsle, jmp::JSLE, "s<="),
];

impl JmpOp {
    fn code(self) -> u8 {
        JMP_TABLE.iter().find(|e| e.0 == self).map_or(0, |e| e.1)
    }
    fn sym(self) -> &'static str {
        JMP_TABLE.iter().find(|e| e.0 == self).map_or("?", |e| e.2)
    }
    fn from_code(c: u8) -> Option<JmpOp> {
        JMP_TABLE.iter().find(|e| e.1 == c).map(|e| e.0)
    }
    /// The operation whose result is the negation of this one.
    pub fn negate(self) -> Option<JmpOp> {
        Some(match self {
            JmpOp::Jeq => JmpOp::Jne,
            JmpOp::Jne => JmpOp::Jeq,
            JmpOp::Jgt => JmpOp::Jle,
            JmpOp::Jle => JmpOp::Jgt,
            JmpOp::Jge => JmpOp::Jlt,
            JmpOp::Jlt => JmpOp::Jge,
            JmpOp::Jsgt => JmpOp::Jsle,
            JmpOp::Jsle => JmpOp::Jsgt,
            JmpOp::Jsge => JmpOp::Jslt,
            JmpOp::Jslt => JmpOp::Jsge,
            JmpOp::Jset => return None,
        })
    }
}

/// Second operand of ALU and jump instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Src {
    /// Sign-extended 32-bit immediate.
    Imm(i32),
    /// Register.
    Reg(Reg),
}

/// Read-modify-write operations of BPF_ATOMIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    /// `lock *(size *)(dst + off) += src` (optionally fetching the old value into src).
    Add { fetch: bool },
    /// `|=`
    Or { fetch: bool },
    /// `&=`
    And { fetch: bool },
    /// `^=`
    Xor { fetch: bool },
    /// `src = xchg(dst + off, src)`
    Xchg,
    /// `r0 = cmpxchg(dst + off, r0, src)`
    CmpXchg,
}

impl AtomicOp {
    fn imm(self) -> i32 {
        let f = |fetch: bool| if fetch { atomic::FETCH } else { 0 };
        match self {
            AtomicOp::Add { fetch } => i32::from(alu::ADD) | f(fetch),
            AtomicOp::Or { fetch } => i32::from(alu::OR) | f(fetch),
            AtomicOp::And { fetch } => i32::from(alu::AND) | f(fetch),
            AtomicOp::Xor { fetch } => i32::from(alu::XOR) | f(fetch),
            AtomicOp::Xchg => atomic::XCHG,
            AtomicOp::CmpXchg => atomic::CMPXCHG,
        }
    }
    fn from_imm(imm: i32) -> Option<AtomicOp> {
        let fetch = imm & atomic::FETCH != 0;
        Some(match imm {
            atomic::XCHG => AtomicOp::Xchg,
            atomic::CMPXCHG => AtomicOp::CmpXchg,
            _ => match u8::try_from(imm & !atomic::FETCH).ok()? {
                alu::ADD => AtomicOp::Add { fetch },
                alu::OR => AtomicOp::Or { fetch },
                alu::AND => AtomicOp::And { fetch },
                alu::XOR => AtomicOp::Xor { fetch },
                _ => return None,
            },
        })
    }
}

/// What a 64-bit immediate load means (its `src_reg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Imm64 {
    /// Plain constant.
    Const(u64),
    /// BPF_PSEUDO_MAP_FD: the map's fd (patched in at load time).
    MapFd(i32),
    /// BPF_PSEUDO_MAP_VALUE: address of `off` bytes into the map's value (array maps).
    MapValue {
        /// map fd
        fd: i32,
        /// byte offset in the value
        off: u32,
    },
    /// BPF_PSEUDO_BTF_ID: address of a kernel variable by BTF id (`btf_fd` 0 = vmlinux).
    BtfId {
        /// BTF type id of the VAR
        id: u32,
        /// fd of the module BTF object, 0 for vmlinux
        btf_fd: u32,
    },
}

/// Target of a call instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// Helper function by number (`call bpf_map_lookup_elem#1`).
    Helper(u32),
    /// BPF_PSEUDO_KFUNC_CALL: kfunc by BTF id; `off` = index of the module BTF fd (0 = vmlinux).
    Kfunc {
        /// BTF id of the FUNC
        btf_id: u32,
        /// fd_array index of the module BTF, 0 for vmlinux
        off: i16,
    },
    /// BPF_PSEUDO_CALL: bpf-to-bpf call, relative to the next instruction.
    Local(i32),
}

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Insn {
    /// `dst op= src` (ALU64 when `wide`, else 32-bit with zero extension).
    Alu {
        /// ALU64 (true) or ALU (false)
        wide: bool,
        /// operation
        op: AluOp,
        /// destination
        dst: Reg,
        /// operand
        src: Src,
    },
    /// `dst = -dst`.
    Neg {
        /// ALU64 (true) or ALU (false)
        wide: bool,
        /// destination
        dst: Reg,
    },
    /// Byte swap: `dst = be16 dst` etc. (`to_be` selects be/le; bits 16, 32 or 64).
    End {
        /// convert to big endian (else little endian)
        to_be: bool,
        /// destination
        dst: Reg,
        /// 16, 32 or 64
        bits: u8,
    },
    /// Conditional jump `if dst op src goto pc+off` (JMP when `wide`, else JMP32).
    Jmp {
        /// JMP (64-bit compare) or JMP32
        wide: bool,
        /// comparison
        op: JmpOp,
        /// left operand
        dst: Reg,
        /// right operand
        src: Src,
        /// pc-relative offset (from the next instruction)
        off: i16,
    },
    /// Unconditional `goto pc+off`.
    Ja {
        /// pc-relative offset
        off: i16,
    },
    /// `dst = *(size *)(src + off)`.
    Ldx {
        /// width
        size: Size,
        /// destination
        dst: Reg,
        /// base
        src: Reg,
        /// displacement
        off: i16,
    },
    /// `*(size *)(dst + off) = src`.
    Stx {
        /// width
        size: Size,
        /// base
        dst: Reg,
        /// value
        src: Reg,
        /// displacement
        off: i16,
    },
    /// `*(size *)(dst + off) = imm`.
    St {
        /// width
        size: Size,
        /// base
        dst: Reg,
        /// displacement
        off: i16,
        /// value
        imm: i32,
    },
    /// Atomic read-modify-write on `*(size *)(dst + off)` (size W or DW).
    Atomic {
        /// width (W or DW)
        size: Size,
        /// operation
        op: AtomicOp,
        /// base
        dst: Reg,
        /// operand / fetch destination
        src: Reg,
        /// displacement
        off: i16,
    },
    /// `dst = imm64 ll` (two slots).
    LdImm64 {
        /// destination
        dst: Reg,
        /// value kind
        imm: Imm64,
    },
    /// Call a helper, kfunc or subprogram.
    Call(Call),
    /// Return r0.
    Exit,
}

/// Errors of `decode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The opcode (or a field combination) is not one this module knows.
    #[error("instruction {index}: unknown opcode {code:#04x}")]
    Opcode {
        /// slot index
        index: usize,
        /// opcode byte
        code: u8,
    },
    /// A register number above 10.
    #[error("instruction {index}: bad register {reg}")]
    Register {
        /// slot index
        index: usize,
        /// raw register number
        reg: u8,
    },
    /// LD_IMM64 without its second slot, or a byte count not a multiple of 8.
    #[error("instruction {index}: truncated")]
    Truncated {
        /// slot index
        index: usize,
    },
}

/// Raw `struct bpf_insn` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawInsn {
    /// opcode
    pub code: u8,
    /// destination register (low nibble)
    pub dst: u8,
    /// source register (high nibble)
    pub src: u8,
    /// signed offset
    pub off: i16,
    /// signed immediate
    pub imm: i32,
}

impl RawInsn {
    /// The kernel's 8-byte little-endian-host layout (native endianness).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        // bpf_insn has dst_reg:4 then src_reg:4 bit-fields; on little-endian hosts dst is the
        // low nibble.
        b[1] = if cfg!(target_endian = "little") {
            (self.dst & 0xf) | (self.src << 4)
        } else {
            (self.src & 0xf) | (self.dst << 4)
        };
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
    /// Parse 8 bytes.
    pub fn from_bytes(b: [u8; 8]) -> RawInsn {
        let (dst, src) = if cfg!(target_endian = "little") {
            (b[1] & 0xf, b[1] >> 4)
        } else {
            (b[1] >> 4, b[1] & 0xf)
        };
        RawInsn {
            code: b[0],
            dst,
            src,
            off: i16::from_ne_bytes([b[2], b[3]]),
            imm: i32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

impl Insn {
    /// Number of 8-byte slots (2 for LD_IMM64, else 1).
    pub fn slots(&self) -> usize {
        match self {
            Insn::LdImm64 { .. } => 2,
            _ => 1,
        }
    }

    /// Raw slots of this instruction.
    pub fn to_raw(&self) -> Vec<RawInsn> {
        let r = |code: u8, dst: Reg, src: u8, off: i16, imm: i32| RawInsn {
            code,
            dst: dst.num(),
            src,
            off,
            imm,
        };
        match *self {
            Insn::Alu { wide, op, dst, src } => {
                let (s, sreg, imm) = code_src(src);
                let cls = if wide { class::ALU64 } else { class::ALU };
                vec![r(cls | s | op.code(), dst, sreg, 0, imm)]
            }
            Insn::Neg { wide, dst } => {
                let cls = if wide { class::ALU64 } else { class::ALU };
                vec![r(cls | alu::NEG, dst, 0, 0, 0)]
            }
            Insn::End { to_be, dst, bits } => {
                let s = if to_be { source::X } else { source::K };
                vec![r(class::ALU | s | alu::END, dst, 0, 0, i32::from(bits))]
            }
            Insn::Jmp {
                wide,
                op,
                dst,
                src,
                off,
            } => {
                let (s, sreg, imm) = code_src(src);
                let cls = if wide { class::JMP } else { class::JMP32 };
                vec![r(cls | s | op.code(), dst, sreg, off, imm)]
            }
            Insn::Ja { off } => vec![r(class::JMP | jmp::JA, Reg::R0, 0, off, 0)],
            Insn::Ldx {
                size,
                dst,
                src,
                off,
            } => {
                vec![r(
                    class::LDX | mode::MEM | size.code(),
                    dst,
                    src.num(),
                    off,
                    0,
                )]
            }
            Insn::Stx {
                size,
                dst,
                src,
                off,
            } => {
                vec![r(
                    class::STX | mode::MEM | size.code(),
                    dst,
                    src.num(),
                    off,
                    0,
                )]
            }
            Insn::St {
                size,
                dst,
                off,
                imm,
            } => vec![r(class::ST | mode::MEM | size.code(), dst, 0, off, imm)],
            Insn::Atomic {
                size,
                op,
                dst,
                src,
                off,
            } => {
                vec![r(
                    class::STX | mode::ATOMIC | size.code(),
                    dst,
                    src.num(),
                    off,
                    op.imm(),
                )]
            }
            Insn::LdImm64 { dst, imm } => {
                let code = class::LD | mode::IMM | size::DW;
                let (s, lo, hi) = match imm {
                    Imm64::Const(v) => (0, v as u32 as i32, (v >> 32) as u32 as i32),
                    Imm64::MapFd(fd) => (pseudo::MAP_FD, fd, 0),
                    Imm64::MapValue { fd, off } => (pseudo::MAP_VALUE, fd, off as i32),
                    Imm64::BtfId { id, btf_fd } => (pseudo::BTF_ID, id as i32, btf_fd as i32),
                };
                vec![
                    r(code, dst, s, 0, lo),
                    RawInsn {
                        code: 0,
                        dst: 0,
                        src: 0,
                        off: 0,
                        imm: hi,
                    },
                ]
            }
            Insn::Call(c) => {
                let (s, off, imm) = match c {
                    Call::Helper(n) => (0, 0, n as i32),
                    Call::Kfunc { btf_id, off } => (pseudo::KFUNC_CALL, off, btf_id as i32),
                    Call::Local(rel) => (pseudo::CALL, 0, rel),
                };
                vec![r(class::JMP | jmp::CALL, Reg::R0, s, off, imm)]
            }
            Insn::Exit => vec![r(class::JMP | jmp::EXIT, Reg::R0, 0, 0, 0)],
        }
    }

    /// Append the kernel encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for raw in self.to_raw() {
            out.extend_from_slice(&raw.to_bytes());
        }
    }

    /// The kernel encoding (8 or 16 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        self.encode_into(&mut v);
        v
    }
}

/// Source bit, source register and immediate of an operand.
fn code_src(s: Src) -> (u8, u8, i32) {
    match s {
        Src::Imm(i) => (source::K, 0, i),
        Src::Reg(x) => (source::X, x.num(), 0),
    }
}

// Constructors, so that generated code reads like the verifier log.

/// `dst = src` (64 bit).
pub fn mov64(dst: Reg, src: Src) -> Insn {
    Insn::Alu {
        wide: true,
        op: AluOp::Mov,
        dst,
        src,
    }
}
/// `wdst = imm` (32 bit, zero-extended).
pub fn mov32(dst: Reg, v: i32) -> Insn {
    Insn::Alu {
        wide: false,
        op: AluOp::Mov,
        dst,
        src: Src::Imm(v),
    }
}
/// `wdst op= src` (32 bit, zero-extended).
pub fn alu32(op: AluOp, dst: Reg, src: Src) -> Insn {
    Insn::Alu {
        wide: false,
        op,
        dst,
        src,
    }
}
/// `dst op= src` (64 bit).
pub fn alu64(op: AluOp, dst: Reg, src: Src) -> Insn {
    Insn::Alu {
        wide: true,
        op,
        dst,
        src,
    }
}
/// `dst = *(size *)(src + off)`.
pub fn ldx(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
    Insn::Ldx {
        size,
        dst,
        src,
        off,
    }
}
/// `*(size *)(dst + off) = src`.
pub fn stx(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
    Insn::Stx {
        size,
        dst,
        src,
        off,
    }
}
/// `*(size *)(dst + off) = imm`.
pub fn st(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
    Insn::St {
        size,
        dst,
        off,
        imm,
    }
}

/// Encode a whole program.
pub fn encode(insns: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(insns.len() * 8);
    for i in insns {
        i.encode_into(&mut out);
    }
    out
}

/// Decode a whole program (a multiple of 8 bytes).
pub fn decode(bytes: &[u8]) -> Result<Vec<Insn>, DecodeError> {
    if bytes.len() % 8 != 0 {
        return Err(DecodeError::Truncated {
            index: bytes.len() / 8,
        });
    }
    let raws: Vec<RawInsn> = bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            RawInsn::from_bytes(b)
        })
        .collect();
    let mut out = Vec::with_capacity(raws.len());
    let mut i = 0;
    while i < raws.len() {
        let insn = decode_one(&raws[i..], i)?;
        i += insn.slots();
        out.push(insn);
    }
    Ok(out)
}

/// Decode the instruction at the start of `raws` (`index` is used in errors only).
pub fn decode_one(raws: &[RawInsn], index: usize) -> Result<Insn, DecodeError> {
    let raw = *raws.first().ok_or(DecodeError::Truncated { index })?;
    let bad = DecodeError::Opcode {
        index,
        code: raw.code,
    };
    let reg = |n: u8| Reg::from_num(n).ok_or(DecodeError::Register { index, reg: n });
    let dst = reg(raw.dst)?;
    let cls = raw.code & 0x07;
    let src_op = |raw: RawInsn| -> Result<Src, DecodeError> {
        if raw.code & source::X != 0 {
            if raw.imm != 0 {
                return Err(bad.clone());
            }
            Ok(Src::Reg(reg(raw.src)?))
        } else {
            if raw.src != 0 {
                return Err(bad.clone());
            }
            Ok(Src::Imm(raw.imm))
        }
    };
    let insn = match cls {
        class::ALU | class::ALU64 => {
            let wide = cls == class::ALU64;
            let op = raw.code & 0xf0;
            if raw.off != 0 {
                return Err(bad);
            }
            match op {
                alu::NEG => {
                    if raw.code & source::X != 0 || raw.src != 0 || raw.imm != 0 {
                        return Err(bad);
                    }
                    Insn::Neg { wide, dst }
                }
                alu::END => {
                    if wide || raw.src != 0 || !matches!(raw.imm, 16 | 32 | 64) {
                        return Err(bad);
                    }
                    Insn::End {
                        to_be: raw.code & source::X != 0,
                        dst,
                        bits: raw.imm as u8,
                    }
                }
                _ => Insn::Alu {
                    wide,
                    op: AluOp::from_code(op).ok_or(bad.clone())?,
                    dst,
                    src: src_op(raw)?,
                },
            }
        }
        class::JMP | class::JMP32 => {
            let wide = cls == class::JMP;
            match raw.code & 0xf0 {
                jmp::JA if wide && raw.code == class::JMP => {
                    if raw.dst != 0 || raw.src != 0 || raw.imm != 0 {
                        return Err(bad);
                    }
                    Insn::Ja { off: raw.off }
                }
                jmp::CALL if raw.code == class::JMP | jmp::CALL => {
                    if raw.dst != 0 {
                        return Err(bad);
                    }
                    let c = match raw.src {
                        0 if raw.off == 0 => Call::Helper(raw.imm as u32),
                        pseudo::CALL if raw.off == 0 => Call::Local(raw.imm),
                        pseudo::KFUNC_CALL => Call::Kfunc {
                            btf_id: raw.imm as u32,
                            off: raw.off,
                        },
                        _ => return Err(bad),
                    };
                    Insn::Call(c)
                }
                jmp::EXIT if raw.code == class::JMP | jmp::EXIT => {
                    if raw
                        != (RawInsn {
                            code: raw.code,
                            ..RawInsn::default()
                        })
                    {
                        return Err(bad);
                    }
                    Insn::Exit
                }
                op => Insn::Jmp {
                    wide,
                    op: JmpOp::from_code(op).ok_or(bad.clone())?,
                    dst,
                    src: src_op(raw)?,
                    off: raw.off,
                },
            }
        }
        class::LDX => {
            if raw.code & 0xe0 != mode::MEM || raw.imm != 0 {
                return Err(bad);
            }
            Insn::Ldx {
                size: Size::from_code(raw.code),
                dst,
                src: reg(raw.src)?,
                off: raw.off,
            }
        }
        class::ST => {
            if raw.code & 0xe0 != mode::MEM || raw.src != 0 {
                return Err(bad);
            }
            Insn::St {
                size: Size::from_code(raw.code),
                dst,
                off: raw.off,
                imm: raw.imm,
            }
        }
        class::STX => match raw.code & 0xe0 {
            mode::MEM => {
                if raw.imm != 0 {
                    return Err(bad);
                }
                Insn::Stx {
                    size: Size::from_code(raw.code),
                    dst,
                    src: reg(raw.src)?,
                    off: raw.off,
                }
            }
            mode::ATOMIC => {
                let size = Size::from_code(raw.code);
                if !matches!(size, Size::W | Size::DW) {
                    return Err(bad);
                }
                Insn::Atomic {
                    size,
                    op: AtomicOp::from_imm(raw.imm).ok_or(bad.clone())?,
                    dst,
                    src: reg(raw.src)?,
                    off: raw.off,
                }
            }
            _ => return Err(bad),
        },
        class::LD => {
            if raw.code != class::LD | mode::IMM | size::DW || raw.off != 0 {
                return Err(bad);
            }
            let next = *raws.get(1).ok_or(DecodeError::Truncated { index })?;
            if next.code != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                return Err(DecodeError::Opcode {
                    index: index + 1,
                    code: next.code,
                });
            }
            let imm = match raw.src {
                0 => Imm64::Const(u64::from(raw.imm as u32) | (u64::from(next.imm as u32) << 32)),
                pseudo::MAP_FD if next.imm == 0 => Imm64::MapFd(raw.imm),
                pseudo::MAP_VALUE => Imm64::MapValue {
                    fd: raw.imm,
                    off: next.imm as u32,
                },
                pseudo::BTF_ID => Imm64::BtfId {
                    id: raw.imm as u32,
                    btf_fd: next.imm as u32,
                },
                _ => return Err(bad),
            };
            Insn::LdImm64 { dst, imm }
        }
        _ => return Err(bad),
    };
    Ok(insn)
}

/// Helper names the disassembler knows (uapi `enum bpf_func_id`; the rest print as `#N`).
const HELPER_NAMES: [(u32, &str); 10] = [
    (1, "bpf_map_lookup_elem"),
    (2, "bpf_map_update_elem"),
    (3, "bpf_map_delete_elem"),
    (5, "bpf_ktime_get_ns"),
    (6, "bpf_trace_printk"),
    (7, "bpf_get_prandom_u32"),
    (8, "bpf_get_smp_processor_id"),
    (12, "bpf_tail_call"),
    (113, "bpf_probe_read_kernel"),
    (201, "bpf_dynptr_read"),
];

/// Name of a helper function by number.
pub fn helper_name(id: u32) -> Option<&'static str> {
    HELPER_NAMES.iter().find(|e| e.0 == id).map(|e| e.1)
}

fn reg_name(r: Reg, wide: bool) -> String {
    format!("{}{}", if wide { 'r' } else { 'w' }, r.num())
}

fn hex_imm(v: i32) -> String {
    if v < 0 {
        format!("{v}")
    } else {
        format!("{v:#x}")
    }
}

impl fmt::Display for Insn {
    /// Verifier (kernel/bpf/disasm.c) syntax; relative targets print as `pc+N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Insn::Alu { wide, op, dst, src } => {
                let s = match src {
                    Src::Imm(i) => format!("{i}"),
                    Src::Reg(r) => reg_name(r, wide),
                };
                write!(f, "{} {} {}", reg_name(dst, wide), op.sym(), s)
            }
            Insn::Neg { wide, dst } => {
                write!(f, "{} = -{}", reg_name(dst, wide), reg_name(dst, wide))
            }
            Insn::End { to_be, dst, bits } => {
                write!(
                    f,
                    "r{} = {}{} r{}",
                    dst.num(),
                    if to_be { "be" } else { "le" },
                    bits,
                    dst.num()
                )
            }
            Insn::Jmp {
                wide,
                op,
                dst,
                src,
                off,
            } => {
                let s = match src {
                    Src::Imm(i) => hex_imm(i),
                    Src::Reg(r) => reg_name(r, wide),
                };
                write!(
                    f,
                    "if {} {} {} goto pc{:+}",
                    reg_name(dst, wide),
                    op.sym(),
                    s,
                    off
                )
            }
            Insn::Ja { off } => write!(f, "goto pc{off:+}"),
            Insn::Ldx {
                size,
                dst,
                src,
                off,
            } => {
                write!(
                    f,
                    "r{} = *({} *)(r{} {:+})",
                    dst.num(),
                    size.c_type(),
                    src.num(),
                    off
                )
            }
            Insn::Stx {
                size,
                dst,
                src,
                off,
            } => {
                write!(
                    f,
                    "*({} *)(r{} {:+}) = r{}",
                    size.c_type(),
                    dst.num(),
                    off,
                    src.num()
                )
            }
            Insn::St {
                size,
                dst,
                off,
                imm,
            } => {
                write!(
                    f,
                    "*({} *)(r{} {:+}) = {}",
                    size.c_type(),
                    dst.num(),
                    off,
                    imm
                )
            }
            Insn::Atomic {
                size,
                op,
                dst,
                src,
                off,
            } => {
                let wide = size == Size::DW;
                let mem = format!("*({} *)(r{} {:+})", size.c_type(), dst.num(), off);
                let s = reg_name(src, wide);
                let sym = |o: &str, fetch: bool| {
                    if fetch {
                        format!(
                            "{s} = atomic{}_fetch_{o}(({} *)(r{} {:+}), {s})",
                            if wide { "64" } else { "" },
                            size.c_type(),
                            dst.num(),
                            off
                        )
                    } else {
                        let c = match o {
                            "add" => "+=",
                            "or" => "|=",
                            "and" => "&=",
                            _ => "^=",
                        };
                        format!("lock {mem} {c} {s}")
                    }
                };
                let text = match op {
                    AtomicOp::Add { fetch } => sym("add", fetch),
                    AtomicOp::Or { fetch } => sym("or", fetch),
                    AtomicOp::And { fetch } => sym("and", fetch),
                    AtomicOp::Xor { fetch } => sym("xor", fetch),
                    AtomicOp::Xchg => format!(
                        "{s} = atomic{}_xchg(({} *)(r{} {:+}), {s})",
                        if wide { "64" } else { "" },
                        size.c_type(),
                        dst.num(),
                        off
                    ),
                    AtomicOp::CmpXchg => format!(
                        "{} = atomic{}_cmpxchg(({} *)(r{} {:+}), {}, {s})",
                        reg_name(Reg::R0, wide),
                        if wide { "64" } else { "" },
                        size.c_type(),
                        dst.num(),
                        off,
                        reg_name(Reg::R0, wide)
                    ),
                };
                f.write_str(&text)
            }
            Insn::LdImm64 { dst, imm } => match imm {
                Imm64::Const(v) => write!(f, "r{} = {:#x}", dst.num(), v),
                Imm64::MapFd(fd) => write!(f, "r{} = map[id:{}]", dst.num(), fd),
                Imm64::MapValue { fd, off } => {
                    write!(f, "r{} = map[id:{}][0]+{}", dst.num(), fd, off)
                }
                Imm64::BtfId { id, btf_fd } => {
                    write!(f, "r{} = btf_id[{}:{}]", dst.num(), btf_fd, id)
                }
            },
            Insn::Call(c) => match c {
                Call::Helper(n) => match helper_name(n) {
                    Some(name) => write!(f, "call {name}#{n}"),
                    None => write!(f, "call #{n}"),
                },
                Call::Kfunc { btf_id, off } => {
                    if off == 0 {
                        write!(f, "call kernel-function#{btf_id}")
                    } else {
                        write!(f, "call kernel-function#{btf_id}[{off}]")
                    }
                }
                Call::Local(rel) => write!(f, "call pc{rel:+}"),
            },
            Insn::Exit => f.write_str("exit"),
        }
    }
}

/// Disassemble a program: one line per instruction, `NNNN: (op) text` as in verifier logs
/// (the number is the slot index; LD_IMM64 takes two).
pub fn disassemble(insns: &[Insn]) -> String {
    let mut out = String::new();
    let mut pc = 0usize;
    for i in insns {
        let code = i.to_raw()[0].code;
        out.push_str(&format!("{pc:4}: ({code:02x}) {i}\n"));
        pc += i.slots();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reg() -> impl Strategy<Value = Reg> {
        (0u8..11).prop_map(|n| Reg::from_num(n).expect("reg"))
    }
    fn src() -> impl Strategy<Value = Src> {
        prop_oneof![any::<i32>().prop_map(Src::Imm), reg().prop_map(Src::Reg)]
    }
    fn size() -> impl Strategy<Value = Size> {
        prop_oneof![Just(Size::B), Just(Size::H), Just(Size::W), Just(Size::DW)]
    }
    fn alu_op() -> impl Strategy<Value = AluOp> {
        (0..ALU_TABLE.len()).prop_map(|i| ALU_TABLE[i].0)
    }
    fn jmp_op() -> impl Strategy<Value = JmpOp> {
        (0..JMP_TABLE.len()).prop_map(|i| JMP_TABLE[i].0)
    }
    fn atomic_op() -> impl Strategy<Value = AtomicOp> {
        prop_oneof![
            any::<bool>().prop_map(|fetch| AtomicOp::Add { fetch }),
            any::<bool>().prop_map(|fetch| AtomicOp::Or { fetch }),
            any::<bool>().prop_map(|fetch| AtomicOp::And { fetch }),
            any::<bool>().prop_map(|fetch| AtomicOp::Xor { fetch }),
            Just(AtomicOp::Xchg),
            Just(AtomicOp::CmpXchg),
        ]
    }
    fn imm64() -> impl Strategy<Value = Imm64> {
        prop_oneof![
            any::<u64>().prop_map(Imm64::Const),
            any::<i32>().prop_map(Imm64::MapFd),
            (any::<i32>(), any::<u32>()).prop_map(|(fd, off)| Imm64::MapValue { fd, off }),
            (any::<u32>(), any::<u32>()).prop_map(|(id, btf_fd)| Imm64::BtfId { id, btf_fd }),
        ]
    }
    fn call() -> impl Strategy<Value = Call> {
        prop_oneof![
            any::<u32>().prop_map(Call::Helper),
            (any::<u32>(), any::<i16>()).prop_map(|(btf_id, off)| Call::Kfunc { btf_id, off }),
            any::<i32>().prop_map(Call::Local),
        ]
    }
    pub(crate) fn insn() -> impl Strategy<Value = Insn> {
        prop_oneof![
            (any::<bool>(), alu_op(), reg(), src()).prop_map(|(wide, op, dst, src)| Insn::Alu {
                wide,
                op,
                dst,
                src
            }),
            (any::<bool>(), reg()).prop_map(|(wide, dst)| Insn::Neg { wide, dst }),
            (
                any::<bool>(),
                reg(),
                prop_oneof![Just(16u8), Just(32), Just(64)]
            )
                .prop_map(|(to_be, dst, bits)| Insn::End { to_be, dst, bits }),
            (any::<bool>(), jmp_op(), reg(), src(), any::<i16>()).prop_map(
                |(wide, op, dst, src, off)| Insn::Jmp {
                    wide,
                    op,
                    dst,
                    src,
                    off
                }
            ),
            any::<i16>().prop_map(|off| Insn::Ja { off }),
            (size(), reg(), reg(), any::<i16>()).prop_map(|(size, dst, src, off)| Insn::Ldx {
                size,
                dst,
                src,
                off
            }),
            (size(), reg(), reg(), any::<i16>()).prop_map(|(size, dst, src, off)| Insn::Stx {
                size,
                dst,
                src,
                off
            }),
            (size(), reg(), any::<i16>(), any::<i32>()).prop_map(|(size, dst, off, imm)| {
                Insn::St {
                    size,
                    dst,
                    off,
                    imm,
                }
            }),
            (
                prop_oneof![Just(Size::W), Just(Size::DW)],
                atomic_op(),
                reg(),
                reg(),
                any::<i16>()
            )
                .prop_map(|(size, op, dst, src, off)| Insn::Atomic {
                    size,
                    op,
                    dst,
                    src,
                    off
                }),
            (reg(), imm64()).prop_map(|(dst, imm)| Insn::LdImm64 { dst, imm }),
            call().prop_map(Insn::Call),
            Just(Insn::Exit),
        ]
    }

    proptest! {
        #[test]
        fn decode_encode_round_trip(i in insn()) {
            let bytes = i.encode();
            prop_assert_eq!(bytes.len(), i.slots() * 8);
            let back = decode(&bytes).expect("decode");
            prop_assert_eq!(back, vec![i]);
        }

        #[test]
        fn program_round_trip(p in proptest::collection::vec(insn(), 0..40)) {
            let back = decode(&encode(&p)).expect("decode");
            prop_assert_eq!(back, p);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn known_encodings() {
        // r0 = 1 ; exit  (as produced by clang: b7 00 .. 01 / 95)
        let p = [
            Insn::Alu {
                wide: true,
                op: AluOp::Mov,
                dst: Reg::R0,
                src: Src::Imm(1),
            },
            Insn::Exit,
        ];
        assert_eq!(
            encode(&p),
            vec![0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]
        );
        // r1 = *(u64 *)(r1 +8)  : 79 11 08 00 00 00 00 00
        let l = Insn::Ldx {
            size: Size::DW,
            dst: Reg::R1,
            src: Reg::R1,
            off: 8,
        };
        assert_eq!(l.encode(), vec![0x79, 0x11, 8, 0, 0, 0, 0, 0]);
        // if r4 > r3 goto +5 : 2d 34 05 00
        let j = Insn::Jmp {
            wide: true,
            op: JmpOp::Jgt,
            dst: Reg::R4,
            src: Src::Reg(Reg::R3),
            off: 5,
        };
        assert_eq!(j.encode(), vec![0x2d, 0x34, 5, 0, 0, 0, 0, 0]);
        // lock *(u64 *)(r0 +0) += r1 : db 10 00 00 00 00 00 00
        let a = Insn::Atomic {
            size: Size::DW,
            op: AtomicOp::Add { fetch: false },
            dst: Reg::R0,
            src: Reg::R1,
            off: 0,
        };
        assert_eq!(a.encode(), vec![0xdb, 0x10, 0, 0, 0, 0, 0, 0]);
        // r1 = map fd 5 : 18 11 00 00 05 00 00 00 | 00..
        let m = Insn::LdImm64 {
            dst: Reg::R1,
            imm: Imm64::MapFd(5),
        };
        assert_eq!(
            m.encode(),
            vec![0x18, 0x11, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // call kfunc btf id 77: 85 20 00 00 4d 00 00 00
        let k = Insn::Call(Call::Kfunc { btf_id: 77, off: 0 });
        assert_eq!(k.encode(), vec![0x85, 0x20, 0, 0, 77, 0, 0, 0]);
    }

    #[test]
    fn verifier_syntax() {
        let cases: Vec<(Insn, &str)> = vec![
            (
                Insn::Ldx {
                    size: Size::W,
                    dst: Reg::R1,
                    src: Reg::R6,
                    off: 0,
                },
                "r1 = *(u32 *)(r6 +0)",
            ),
            (
                Insn::Jmp {
                    wide: true,
                    op: JmpOp::Jne,
                    dst: Reg::R1,
                    src: Src::Imm(5),
                    off: 3,
                },
                "if r1 != 0x5 goto pc+3",
            ),
            (
                Insn::Jmp {
                    wide: false,
                    op: JmpOp::Jslt,
                    dst: Reg::R9,
                    src: Src::Imm(-1),
                    off: -2,
                },
                "if w9 s< -1 goto pc-2",
            ),
            (Insn::Call(Call::Helper(1)), "call bpf_map_lookup_elem#1"),
            (
                Insn::Atomic {
                    size: Size::DW,
                    op: AtomicOp::Add { fetch: false },
                    dst: Reg::R0,
                    src: Reg::R1,
                    off: 0,
                },
                "lock *(u64 *)(r0 +0) += r1",
            ),
            (
                Insn::Atomic {
                    size: Size::DW,
                    op: AtomicOp::Add { fetch: true },
                    dst: Reg::R0,
                    src: Reg::R1,
                    off: 8,
                },
                "r1 = atomic64_fetch_add((u64 *)(r0 +8), r1)",
            ),
            (
                Insn::Alu {
                    wide: true,
                    op: AluOp::Mov,
                    dst: Reg::R2,
                    src: Src::Reg(Reg::R10),
                },
                "r2 = r10",
            ),
            (
                Insn::Alu {
                    wide: false,
                    op: AluOp::And,
                    dst: Reg::R1,
                    src: Src::Imm(15),
                },
                "w1 &= 15",
            ),
            (
                Insn::Alu {
                    wide: true,
                    op: AluOp::Add,
                    dst: Reg::R2,
                    src: Src::Imm(-4),
                },
                "r2 += -4",
            ),
            (
                Insn::End {
                    to_be: true,
                    dst: Reg::R1,
                    bits: 16,
                },
                "r1 = be16 r1",
            ),
            (
                Insn::Stx {
                    size: Size::W,
                    dst: Reg::R10,
                    src: Reg::R1,
                    off: -4,
                },
                "*(u32 *)(r10 -4) = r1",
            ),
            (
                Insn::St {
                    size: Size::DW,
                    dst: Reg::R10,
                    off: -8,
                    imm: 0,
                },
                "*(u64 *)(r10 -8) = 0",
            ),
            (Insn::Call(Call::Local(12)), "call pc+12"),
            (Insn::Ja { off: 7 }, "goto pc+7"),
            (Insn::Exit, "exit"),
        ];
        for (i, text) in cases {
            assert_eq!(i.to_string(), text);
        }
        let d = disassemble(&[
            Insn::LdImm64 {
                dst: Reg::R1,
                imm: Imm64::MapFd(3),
            },
            Insn::Exit,
        ]);
        assert_eq!(d, "   0: (18) r1 = map[id:3]\n   2: (95) exit\n");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            decode(&[0u8; 7]),
            Err(DecodeError::Truncated { .. })
        ));
        // LD_IMM64 without its second half
        assert!(matches!(
            decode(&[0x18, 1, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Truncated { .. })
        ));
        // register 11
        assert!(matches!(
            decode(&[0xb7, 0x0b, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Register { .. })
        ));
        // unknown opcode
        assert!(matches!(
            decode(&[0xff, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Opcode { .. })
        ));
    }
}
