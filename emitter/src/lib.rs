//! BPF instructions, a builder with labels and fixups, a disassembler, the filter IR and its code generator.
#![forbid(unsafe_code)]
