//! The only caller of libbpf-sys: BTF, maps, programs, links, pins, test runs.
