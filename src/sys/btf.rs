//! Kernel BTF lookups: struct member offsets and sizes, type sizes and kfunc ids, read from the
//! running kernel's `/sys/kernel/btf/vmlinux` through libbpf (`btf__load_vmlinux_btf`).
//!
//! The encoding follows the kernel's `include/uapi/linux/btf.h`: `btf_type.info` holds the kind
//! in bits 24..28, the member count in bits 0..15 and `kind_flag` in bit 31; struct and union
//! members follow the type as `btf_member` records, whose `offset` is in bits (with kind_flag,
//! bits 24..31 are the bitfield size).

use libbpf_sys::{btf_member, btf_type};
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use super::error::{last_errno, Result, SysError};

const KIND_INT: u32 = libbpf_sys::BTF_KIND_INT;
const KIND_STRUCT: u32 = libbpf_sys::BTF_KIND_STRUCT;
const KIND_UNION: u32 = libbpf_sys::BTF_KIND_UNION;
const KIND_ENUM: u32 = libbpf_sys::BTF_KIND_ENUM;
const KIND_TYPEDEF: u32 = libbpf_sys::BTF_KIND_TYPEDEF;
const KIND_VOLATILE: u32 = libbpf_sys::BTF_KIND_VOLATILE;
const KIND_CONST: u32 = libbpf_sys::BTF_KIND_CONST;
const KIND_RESTRICT: u32 = libbpf_sys::BTF_KIND_RESTRICT;
const KIND_FUNC: u32 = libbpf_sys::BTF_KIND_FUNC;
const KIND_TYPE_TAG: u32 = libbpf_sys::BTF_KIND_TYPE_TAG;
const KIND_ENUM64: u32 = libbpf_sys::BTF_KIND_ENUM64;

/// `insn.off` of a kfunc call (`BPF_PSEUDO_KFUNC_CALL`) whose function lives in vmlinux BTF:
/// index 0 means "vmlinux", no fd_array entry is needed.
pub const VMLINUX_BTF_FD_IDX: i16 = 0;

/// Where a struct member lives: byte offset from the start of the outer struct and byte size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// Size of the member's type in bytes.
    pub size: u32,
    /// BTF type id of the member (modifiers and typedefs not stripped).
    pub type_id: u32,
}

/// Parsed kernel BTF (owned libbpf `struct btf`, freed on drop).
pub struct Btf {
    ptr: NonNull<libbpf_sys::btf>,
    /// The vmlinux BTF a module's split BTF is parsed on top of (it must outlive `ptr`).
    _base: Option<Box<Btf>>,
}

// SAFETY: the libbpf `struct btf` is exclusively owned by this value; moving it to another
// thread is fine because libbpf keeps no thread-local state for it.
unsafe impl Send for Btf {}
// SAFETY: every method takes `&self` and only calls libbpf's read-only accessors
// (btf__type_by_id, btf__name_by_offset, btf__find_by_name_kind, btf__resolve_size), which do
// not mutate the object, so concurrent use from several threads is sound.
unsafe impl Sync for Btf {}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.type_count())
            .finish()
    }
}

impl Drop for Btf {
    fn drop(&mut self) {
        // SAFETY: ptr came from btf__load_vmlinux_btf and is freed exactly once, here.
        unsafe { libbpf_sys::btf__free(self.ptr.as_ptr()) }
    }
}

fn kind(t: &libbpf_sys::btf_type) -> u32 {
    (t.info >> 24) & 0x1f
}

fn vlen(t: &libbpf_sys::btf_type) -> usize {
    (t.info & 0xffff) as usize
}

fn kind_flag(t: &libbpf_sys::btf_type) -> bool {
    t.info >> 31 != 0
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| SysError::invalid(format!("name {s:?} contains NUL")))
}

/// What [`Btf::find_named`] asks of a member of the name it looks for: given the struct or
/// union holding it, its bit offset there, its bitfield size from kind_flag (0 without) and
/// the member, the bit offset and what to answer, or None to look further.
type Found<'a, T> = dyn Fn(&btf_type, u32, u32, &btf_member) -> Result<Option<(u32, T)>> + 'a;

impl Btf {
    /// Loads the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
    pub fn vmlinux() -> Result<Btf> {
        // SAFETY: no arguments; returns an owned object or NULL with errno set.
        let ptr = unsafe { libbpf_sys::btf__load_vmlinux_btf() };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Btf { ptr, _base: None }),
            None => Err(SysError::Syscall {
                call: "btf__load_vmlinux_btf",
                errno: last_errno(),
            }),
        }
    }

    /// Loads a module's BTF (`/sys/kernel/btf/NAME`, split BTF on top of vmlinux's): the
    /// types of a subsystem built as a module (nf_conntrack on distribution kernels) are
    /// there, not in vmlinux. Lookups see both the module's and vmlinux's types.
    pub fn module(name: &str) -> Result<Btf> {
        let base = Box::new(Btf::vmlinux()?);
        let path = cstring(&format!("/sys/kernel/btf/{name}"))?;
        // SAFETY: NUL-terminated path; base is a valid btf that outlives the result (kept in
        // `_base`); returns an owned object or NULL with errno set.
        let ptr = unsafe { libbpf_sys::btf__parse_split(path.as_ptr(), base.ptr.as_ptr()) };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Btf {
                ptr,
                _base: Some(base),
            }),
            None => Err(SysError::Syscall {
                call: "btf__parse_split",
                errno: last_errno(),
            }),
        }
    }

    /// Bit position of a bitfield member (`"ip_summed"` in `sk_buff`): (byte offset of the
    /// byte holding its lowest bit, shift of that bit within the byte on a little-endian
    /// machine, width in bits). Searches anonymous structs and unions like [`Btf::member`].
    pub fn bitfield(&self, strct: &str, member: &str) -> Result<(u32, u32, u32)> {
        let id = self.struct_id(strct)?;
        let (bits, width) = self.find_bitfield(id, member)?.ok_or_else(|| {
            SysError::not_found(format!("bitfield {strct}.{member} in vmlinux BTF"))
        })?;
        Ok((bits / 8, bits % 8, width))
    }

    fn find_bitfield(&self, id: u32, name: &str) -> Result<Option<(u32, u32)>> {
        self.find_named(id, name, &|_, bit_off, size, _| {
            Ok((size != 0).then_some((bit_off, size)))
        })
    }

    /// The members of struct/union `id` named `name`, searching anonymous structs/unions (which
    /// C code names as if they were direct members), in order: the first `Some` that `found`
    /// returns for one (given the struct or union holding it, its bit offset there, its bitfield
    /// size from kind_flag (0 without) and the member), with the bit offset of the anonymous
    /// members around it added to the offset it returns.
    fn find_named<T>(&self, id: u32, name: &str, found: &Found<'_, T>) -> Result<Option<(u32, T)>> {
        let t = self.ty(id)?;
        for m in self.members(t) {
            let (bit_off, size) = if kind_flag(t) {
                (m.offset & 0x00ff_ffff, m.offset >> 24)
            } else {
                (m.offset, 0)
            };
            let m_name = self.str_at(m.name_off);
            if m_name.is_empty() {
                let inner = self.strip(m.type_)?;
                if matches!(kind(self.ty(inner)?), KIND_STRUCT | KIND_UNION) {
                    if let Some((off, x)) = self.find_named(inner, name, found)? {
                        return Ok(Some((bit_off + off, x)));
                    }
                }
                continue;
            }
            if m_name == name {
                if let Some(x) = found(t, bit_off, size, m)? {
                    return Ok(Some(x));
                }
            }
        }
        Ok(None)
    }

    /// Number of type ids (including the void type 0).
    pub fn type_count(&self) -> u32 {
        // SAFETY: self.ptr is a valid btf for the lifetime of self.
        unsafe { libbpf_sys::btf__type_cnt(self.ptr.as_ptr()) }
    }

    fn ty(&self, id: u32) -> Result<&libbpf_sys::btf_type> {
        // SAFETY: btf__type_by_id bounds-checks id and returns NULL when out of range; the
        // returned record lives as long as the btf object, which outlives the borrow of self.
        let p = unsafe { libbpf_sys::btf__type_by_id(self.ptr.as_ptr(), id) };
        // SAFETY: p is NULL or points to a valid btf_type (see above).
        unsafe { p.as_ref() }.ok_or_else(|| SysError::Btf {
            what: format!("type id {id} out of range"),
        })
    }

    fn name_of(&self, t: &libbpf_sys::btf_type) -> &str {
        self.str_at(t.name_off)
    }

    /// The string at `off` in the string section ("" for a bad offset or one not UTF-8).
    fn str_at(&self, off: u32) -> &str {
        // SAFETY: libbpf returns NULL for a bad offset and a NUL-terminated string in the
        // string section (alive as long as self) otherwise.
        let p = unsafe { libbpf_sys::btf__name_by_offset(self.ptr.as_ptr(), off) };
        if p.is_null() {
            return "";
        }
        // SAFETY: non-NULL, NUL-terminated, lives as long as self.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
    }

    fn members(&self, t: &libbpf_sys::btf_type) -> &[libbpf_sys::btf_member] {
        debug_assert!(matches!(kind(t), KIND_STRUCT | KIND_UNION));
        let first = std::ptr::from_ref(t)
            .wrapping_add(1)
            .cast::<libbpf_sys::btf_member>();
        // SAFETY: for struct/union kinds the BTF format places exactly vlen btf_member records
        // right after the btf_type (libbpf's btf_members()); libbpf validated the blob on load.
        unsafe { std::slice::from_raw_parts(first, vlen(t)) }
    }

    /// Finds a type id by name and kind; None when absent.
    fn find(&self, name: &str, kind: u32) -> Result<Option<u32>> {
        let c = cstring(name)?;
        // SAFETY: valid btf and NUL-terminated name; read-only lookup.
        let id = unsafe { libbpf_sys::btf__find_by_name_kind(self.ptr.as_ptr(), c.as_ptr(), kind) };
        Ok(u32::try_from(id).ok().filter(|id| *id > 0))
    }

    /// Skips typedefs and cv/type-tag modifiers.
    fn strip(&self, mut id: u32) -> Result<u32> {
        for _ in 0..64 {
            let t = self.ty(id)?;
            match kind(t) {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    // SAFETY: for these kinds the union member in use is `type_`.
                    id = unsafe { t.__bindgen_anon_1.type_ };
                }
                _ => return Ok(id),
            }
        }
        Err(SysError::Btf {
            what: format!("modifier chain too long at type id {id}"),
        })
    }

    /// Byte size of a type id (after typedefs and modifiers).
    fn size_of_id(&self, id: u32) -> Result<u32> {
        // SAFETY: valid btf; read-only.
        let s = unsafe { libbpf_sys::btf__resolve_size(self.ptr.as_ptr(), id) };
        u32::try_from(s).map_err(|_| SysError::Btf {
            what: format!("size of type id {id}: error {s}"),
        })
    }

    /// BTF id of the struct (or union) `name`.
    pub fn struct_id(&self, name: &str) -> Result<u32> {
        if let Some(id) = self.find(name, KIND_STRUCT)? {
            return Ok(id);
        }
        if let Some(id) = self.find(name, KIND_UNION)? {
            return Ok(id);
        }
        Err(SysError::not_found(format!("struct {name} in vmlinux BTF")))
    }

    /// Bit offset and type of member `name` inside struct/union `id`, searching anonymous
    /// structs/unions (which C code names as if they were direct members).
    fn find_member(&self, id: u32, name: &str) -> Result<Option<(u32, u32)>> {
        self.find_named(id, name, &|t, bit_off, bitfield_size, m| {
            if bitfield_size != 0 || self.is_int_bitfield(m.type_)? {
                return Err(SysError::Btf {
                    what: format!("member {name} of {} is a bitfield", self.name_of(t)),
                });
            }
            Ok(Some((bit_off, m.type_)))
        })
    }

    /// Without kind_flag, a bitfield is an INT whose encoding has fewer bits than its size or
    /// a non-zero bit offset.
    fn is_int_bitfield(&self, id: u32) -> Result<bool> {
        let sid = self.strip(id)?;
        let t = self.ty(sid)?;
        if kind(t) != KIND_INT {
            return Ok(false);
        }
        let enc_ptr = std::ptr::from_ref(t).wrapping_add(1).cast::<u32>();
        // SAFETY: BTF_KIND_INT is followed by one u32 encoding word (btf.h BTF_INT_ENCODING).
        let enc = unsafe { enc_ptr.read_unaligned() };
        // SAFETY: for INT the union member in use is `size`.
        let size = unsafe { t.__bindgen_anon_1.size };
        let bits = enc & 0xff;
        let offset = (enc >> 16) & 0xff;
        Ok(offset != 0 || bits != size * 8)
    }

    /// Offset, size and type of `member` in struct `strct`. `member` may be a dotted path
    /// (`"headers.protocol"`); anonymous structs/unions are searched as the C compiler does.
    pub fn member(&self, strct: &str, member: &str) -> Result<Member> {
        let mut id = self.struct_id(strct)?;
        let mut bits = 0u32;
        let mut type_id = id;
        for (i, part) in member.split('.').enumerate() {
            if i > 0 {
                id = self.strip(type_id)?;
                if !matches!(kind(self.ty(id)?), KIND_STRUCT | KIND_UNION) {
                    return Err(SysError::Btf {
                        what: format!("{strct}.{member}: {part} is not inside a struct"),
                    });
                }
            }
            let (off, ty) = self.find_member(id, part)?.ok_or_else(|| {
                SysError::not_found(format!("member {strct}.{member} in vmlinux BTF"))
            })?;
            bits += off;
            type_id = ty;
        }
        if bits % 8 != 0 {
            return Err(SysError::Btf {
                what: format!("{strct}.{member} is not byte aligned ({bits} bits)"),
            });
        }
        Ok(Member {
            offset: bits / 8,
            size: self.size_of_id(type_id)?,
            type_id,
        })
    }

    /// Byte offset of `member` (see [`Btf::member`]) inside struct `strct`.
    pub fn member_offset(&self, strct: &str, member: &str) -> Result<u32> {
        Ok(self.member(strct, member)?.offset)
    }

    /// Byte size of `member` (see [`Btf::member`]) inside struct `strct`.
    pub fn member_size(&self, strct: &str, member: &str) -> Result<u32> {
        Ok(self.member(strct, member)?.size)
    }

    /// Byte size of the named struct, union, typedef, integer or enum.
    pub fn type_size(&self, name: &str) -> Result<u32> {
        for k in [
            KIND_STRUCT,
            KIND_UNION,
            KIND_TYPEDEF,
            KIND_INT,
            KIND_ENUM,
            KIND_ENUM64,
        ] {
            if let Some(id) = self.find(name, k)? {
                return self.size_of_id(id);
            }
        }
        Err(SysError::not_found(format!("type {name} in vmlinux BTF")))
    }

    /// BTF id of a function (BTF_KIND_FUNC), the `imm` of a kfunc call; the call's `off` is
    /// [`VMLINUX_BTF_FD_IDX`] for functions in vmlinux.
    pub fn func_id(&self, name: &str) -> Result<u32> {
        self.find(name, KIND_FUNC)?
            .ok_or_else(|| SysError::not_found(format!("function {name} in vmlinux BTF")))
    }

    /// Value of an enumerator (e.g. `"NF_INET_LOCAL_IN"`) declared in the named enum.
    pub fn enum_value(&self, enm: &str, name: &str) -> Result<i64> {
        let id = self
            .find(enm, KIND_ENUM)?
            .ok_or_else(|| SysError::not_found(format!("enum {enm} in vmlinux BTF")))?;
        let t = self.ty(id)?;
        let first = std::ptr::from_ref(t)
            .wrapping_add(1)
            .cast::<libbpf_sys::btf_enum>();
        // SAFETY: BTF_KIND_ENUM is followed by vlen btf_enum records (btf.h).
        let vals = unsafe { std::slice::from_raw_parts(first, vlen(t)) };
        for v in vals {
            // SAFETY: see str_at.
            let p = unsafe { libbpf_sys::btf__name_by_offset(self.ptr.as_ptr(), v.name_off) };
            // SAFETY: non-NULL NUL-terminated string owned by the btf.
            if !p.is_null() && unsafe { CStr::from_ptr(p) }.to_bytes() == name.as_bytes() {
                return Ok(if kind_flag(t) {
                    i64::from(v.val)
                } else {
                    i64::from(v.val as u32)
                });
            }
        }
        Err(SysError::not_found(format!(
            "enumerator {enm}::{name} in vmlinux BTF"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::{require_btf, run};

    /// `bits_offset` of `member` in `STRUCT 'strct'` as bpftool prints it (raw format).
    fn bpftool_bits_offset(strct: &str, member: &str) -> u32 {
        // bpftool: apt-get install bpftool
        let out = run(&["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"]);
        let text = String::from_utf8(out).expect("utf8");
        let header = format!("STRUCT '{strct}' ");
        let mut in_struct = false;
        for line in text.lines() {
            if line.starts_with('[') {
                if in_struct {
                    break;
                }
                in_struct = line
                    .split_once("] ")
                    .is_some_and(|(_, rest)| rest.starts_with(&header));
                continue;
            }
            if in_struct {
                let l = line.trim_start();
                if let Some(rest) = l.strip_prefix(&format!("'{member}' ")) {
                    let v = rest.split("bits_offset=").nth(1).expect("bits_offset");
                    return v
                        .split_whitespace()
                        .next()
                        .expect("number")
                        .parse()
                        .expect("u32");
                }
            }
        }
        panic!("{strct}.{member} not in bpftool output");
    }

    #[test]
    fn sk_buff_len_matches_bpftool() {
        let Some(btf) = require_btf() else { return };
        let off = btf.member_offset("sk_buff", "len").unwrap();
        assert_eq!(off * 8, bpftool_bits_offset("sk_buff", "len"));
        assert_eq!(btf.member_size("sk_buff", "len").unwrap(), 4);
        assert_eq!(btf.member_offset("bpf_nf_ctx", "skb").unwrap(), 8);
        assert_eq!(btf.member_offset("nf_hook_state", "pf").unwrap(), 1);
        assert_eq!(btf.member_size("net_device", "name").unwrap(), 16);
    }

    #[test]
    fn anonymous_members_and_errors() {
        let Some(btf) = require_btf() else { return };
        // sk_buff.protocol sits inside the anonymous `headers` struct group.
        let p = btf.member("sk_buff", "protocol").unwrap();
        assert_eq!(p.size, 2);
        assert!(p.offset > 0 && p.offset < btf.type_size("sk_buff").unwrap());
        assert_eq!(btf.member("sk_buff", "headers.protocol").unwrap(), p);
        assert_eq!(
            btf.member_offset("sk_buff", "nope").unwrap_err().errno(),
            libc::ENOENT
        );
        assert_eq!(
            btf.member_offset("no_such_struct_xyz", "a")
                .unwrap_err()
                .errno(),
            libc::ENOENT
        );
        // sk_buff.pkt_type is a 3-bit bitfield.
        assert!(matches!(
            btf.member_offset("sk_buff", "pkt_type"),
            Err(SysError::Btf { .. })
        ));
        assert_eq!(btf.type_size("nf_hook_state").unwrap(), 48);
        assert_eq!(btf.type_size("u32").unwrap(), 4);
        assert_eq!(
            btf.enum_value("nf_inet_hooks", "NF_INET_LOCAL_IN").unwrap(),
            1
        );
    }

    #[test]
    fn kfunc_ids() {
        let Some(btf) = require_btf() else { return };
        let id = btf.func_id("bpf_dynptr_from_skb").unwrap();
        assert!(id > 0 && id < btf.type_count());
        assert!(btf.func_id("bpf_dynptr_slice").is_ok());
        assert_eq!(
            btf.func_id("no_such_kfunc_xyz").unwrap_err().errno(),
            libc::ENOENT
        );
    }
}
