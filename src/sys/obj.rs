//! What maps, programs and links share: `bpf_obj_get_info_by_fd` and the info structs it fills.
//!
//! The kernel writes raw bytes into the info buffer, so only plain-old-data types may receive
//! them: [`get_info`] and [`fill_info`] take zerocopy's [`FromBytes`] (every byte pattern is a
//! valid value) + [`IntoBytes`] (no padding: the value can be handed out as bytes). The
//! bindgen structs of libbpf-sys cannot implement those traits here (foreign trait, foreign
//! type), so this module mirrors the three we read ([`RawMapInfo`], [`RawProgInfo`],
//! [`RawLinkInfo`]); compile-time checks keep each mirror's size and every field offset equal
//! to libbpf-sys's struct, so the kernel gets the same `info_len` and layout as before.

use std::mem::offset_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::error::{check, Result, SysError};

/// Defines a `#[repr(C)]` plain-old-data mirror of a libbpf-sys struct whose fields have the
/// same names, and checks at compile time that the size and every field offset agree.
macro_rules! uapi_mirror {
    (
        $(#[$meta:meta])*
        struct $name:ident mirrors $uapi:path {
            $($(#[$fmeta:meta])* $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
        #[repr(C)]
        #[allow(dead_code, reason = "mirrors the whole kernel struct; not every field is read")]
        pub(crate) struct $name {
            $($(#[$fmeta])* pub(crate) $field: $ty,)*
        }

        const _: () = {
            assert!(size_of::<$name>() == size_of::<$uapi>());
            $(assert!(offset_of!($name, $field) == offset_of!($uapi, $field));)*
        };
    };
}

uapi_mirror! {
    /// `struct bpf_map_info`.
    struct RawMapInfo mirrors libbpf_sys::bpf_map_info {
        type_: u32,
        id: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        name: [libc::c_char; 16],
        ifindex: u32,
        btf_vmlinux_value_type_id: u32,
        netns_dev: u64,
        netns_ino: u64,
        btf_id: u32,
        btf_key_type_id: u32,
        btf_value_type_id: u32,
        btf_vmlinux_id: u32,
        map_extra: u64,
        hash: u64,
        hash_size: u32,
        __bindgen_padding_0: [u8; 4],
    }
}

uapi_mirror! {
    /// `struct bpf_prog_info`. The `u64` fields `xlated_prog_insns`, `map_ids`, ... are user
    /// buffer addresses the kernel writes through when their length/count field is non-zero.
    struct RawProgInfo mirrors libbpf_sys::bpf_prog_info {
        type_: u32,
        id: u32,
        tag: [u8; 8],
        jited_prog_len: u32,
        xlated_prog_len: u32,
        jited_prog_insns: u64,
        xlated_prog_insns: u64,
        load_time: u64,
        created_by_uid: u32,
        nr_map_ids: u32,
        map_ids: u64,
        name: [libc::c_char; 16],
        ifindex: u32,
        _bitfield_align_1: [u8; 0],
        /// `gpl_compatible:1` and 31 unused bits.
        _bitfield_1: [u8; 4],
        netns_dev: u64,
        netns_ino: u64,
        nr_jited_ksyms: u32,
        nr_jited_func_lens: u32,
        jited_ksyms: u64,
        jited_func_lens: u64,
        btf_id: u32,
        func_info_rec_size: u32,
        func_info: u64,
        nr_func_info: u32,
        nr_line_info: u32,
        line_info: u64,
        jited_line_info: u64,
        nr_jited_line_info: u32,
        line_info_rec_size: u32,
        jited_line_info_rec_size: u32,
        nr_prog_tags: u32,
        prog_tags: u64,
        run_time_ns: u64,
        run_cnt: u64,
        recursion_misses: u64,
        verified_insns: u32,
        attach_btf_obj_id: u32,
        attach_btf_id: u32,
        __bindgen_padding_0: [u8; 4],
    }
}

uapi_mirror! {
    /// `struct bpf_link_info`: the common head, then the per-type union.
    struct RawLinkInfo mirrors libbpf_sys::bpf_link_info {
        type_: u32,
        id: u32,
        prog_id: u32,
        __bindgen_padding_0: [u8; 4],
        __bindgen_anon_1: RawLinkUnion,
    }
}

/// Size of the per-type union of `struct bpf_link_info`.
const LINK_UNION_SIZE: usize = size_of::<libbpf_sys::bpf_link_info__bindgen_ty_1>();

/// The per-type union of `struct bpf_link_info` as this crate reads it: the `netfilter` member
/// (at offset 0, as every member of a C union) and the union's remaining bytes. Any bytes are
/// valid here, so reading `netfilter` of another link type gives meaningless numbers, never
/// undefined behaviour; callers check `type_` first.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub(crate) struct RawLinkUnion {
    /// Meaningful when the link type is `BPF_LINK_TYPE_NETFILTER`.
    pub(crate) netfilter: RawNetfilterLinkInfo,
    _rest: [u8; LINK_UNION_SIZE - size_of::<RawNetfilterLinkInfo>()],
}

uapi_mirror! {
    /// The `netfilter` member of `bpf_link_info`'s union.
    struct RawNetfilterLinkInfo mirrors libbpf_sys::bpf_link_info__bindgen_ty_1__bindgen_ty_8 {
        pf: u32,
        hooknum: u32,
        priority: i32,
        flags: u32,
    }
}

const _: () = assert!(size_of::<RawLinkUnion>() == LINK_UNION_SIZE);

/// `bpf_obj_get_info_by_fd` into a zeroed `T`: the info of the map, program, link or BTF
/// object behind `fd`, with no variable-size parts requested. `T` is the info struct of that
/// kind of object (a [`RawMapInfo`] for a map fd, ...).
pub(crate) fn get_info<T: FromBytes + IntoBytes>(
    call: &'static str,
    fd: BorrowedFd<'_>,
) -> Result<T> {
    let mut info = T::new_zeroed();
    // SAFETY: info is all zeroes, so whatever info struct the kernel reads it as, every buffer
    // address in it is NULL and every length and count 0: the kernel writes nowhere but info.
    unsafe { fill_info(call, fd, &mut info) }?;
    Ok(info)
}

/// `bpf_obj_get_info_by_fd` with `info` as input and output: the kernel first reads it (the
/// user buffers for the variable-size parts, e.g. `bpf_prog_info.map_ids` and `nr_map_ids`),
/// then overwrites at most `size_of::<T>()` bytes of it and fills the buffers it was given.
///
/// # Safety
///
/// Read as the info struct of the object behind `fd` (`bpf_prog_info` for a program, ...),
/// `info` must describe only buffers the kernel may write: each user address in it is NULL
/// with a zero length/count, or points to writable memory of at least the size its
/// length/count field gives, which nothing else accesses until this call returns.
pub(crate) unsafe fn fill_info<T: FromBytes + IntoBytes>(
    call: &'static str,
    fd: BorrowedFd<'_>,
    info: &mut T,
) -> Result<()> {
    let bytes = info.as_mut_bytes();
    let mut len = u32::try_from(bytes.len()).map_err(|_| SysError::invalid("info size"))?;
    // SAFETY: bytes is `len` writable bytes and the kernel writes at most `len` bytes into it
    // (reporting the size it filled in len); any bytes it writes form a valid T (FromBytes).
    // The buffers info describes are writable for their sizes (the caller's contract); fd is
    // an open fd borrowed for the call.
    let ret = unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), &mut len)
    };
    check(call, ret).map(drop)
}
