//! BPF maps: create, element operations with size checks, per-CPU reads, pins and info.
//!
//! Buffers are checked against the map's key and value sizes before every syscall: the kernel
//! reads `key_size` and writes `value_size` (per-CPU maps: `round_up(value_size, 8)` times the
//! number of possible CPUs) bytes through the pointers it is given, whatever the slice length.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use super::error::{check, Result, SysError};
use super::obj::{get_info, RawMapInfo};
use super::obj_name;

/// The kernel-internal ENOTSUPP (524) that BPF syscalls can leak to user space.
const KERNEL_ENOTSUPP: i32 = 524;

/// Did the kernel refuse an operation it does not have for this map (batch operations)?
fn unsupported(e: &SysError) -> bool {
    matches!(e.errno(), libc::EINVAL | libc::EOPNOTSUPP | KERNEL_ENOTSUPP)
}

/// Kind of map (`enum bpf_map_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapType {
    /// BPF_MAP_TYPE_HASH.
    Hash,
    /// BPF_MAP_TYPE_ARRAY.
    Array,
    /// BPF_MAP_TYPE_PROG_ARRAY (values are program fds on update, program ids on lookup; see
    /// [`Map::set_prog`] and [`Map::prog_id`]).
    ProgArray,
    /// BPF_MAP_TYPE_PERCPU_HASH.
    PercpuHash,
    /// BPF_MAP_TYPE_PERCPU_ARRAY.
    PercpuArray,
    /// BPF_MAP_TYPE_LPM_TRIE (created with BPF_F_NO_PREALLOC, which the kernel requires).
    LpmTrie,
    /// BPF_MAP_TYPE_RINGBUF.
    RingBuf,
    /// Any other type, by its kernel number (as reported by info()).
    Other(u32),
}

impl MapType {
    /// The kernel's `bpf_map_type` number.
    pub fn raw(self) -> u32 {
        match self {
            MapType::Hash => libbpf_sys::BPF_MAP_TYPE_HASH,
            MapType::Array => libbpf_sys::BPF_MAP_TYPE_ARRAY,
            MapType::ProgArray => libbpf_sys::BPF_MAP_TYPE_PROG_ARRAY,
            MapType::PercpuHash => libbpf_sys::BPF_MAP_TYPE_PERCPU_HASH,
            MapType::PercpuArray => libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY,
            MapType::LpmTrie => libbpf_sys::BPF_MAP_TYPE_LPM_TRIE,
            MapType::RingBuf => libbpf_sys::BPF_MAP_TYPE_RINGBUF,
            MapType::Other(n) => n,
        }
    }

    /// The variant for a kernel number.
    pub fn from_raw(n: u32) -> MapType {
        [
            MapType::Hash,
            MapType::Array,
            MapType::ProgArray,
            MapType::PercpuHash,
            MapType::PercpuArray,
            MapType::LpmTrie,
            MapType::RingBuf,
        ]
        .into_iter()
        .find(|t| t.raw() == n)
        .unwrap_or(MapType::Other(n))
    }

    /// Whether lookups return one value per possible CPU.
    pub fn is_percpu(self) -> bool {
        matches!(self, MapType::PercpuArray | MapType::PercpuHash)
            || self.raw() == libbpf_sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
    }
}

/// Flags for [`Map::update`] (`BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`).
pub mod update_flags {
    /// Create or replace.
    pub const ANY: u64 = libbpf_sys::BPF_ANY as u64;
    /// Create only.
    pub const NOEXIST: u64 = libbpf_sys::BPF_NOEXIST as u64;
    /// Replace only.
    pub const EXIST: u64 = libbpf_sys::BPF_EXIST as u64;
}

/// What the kernel reports about a map (`struct bpf_map_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    /// Map type.
    pub map_type: MapType,
    /// Kernel id (stable while the map exists).
    pub id: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Creation flags.
    pub map_flags: u32,
    /// Name given at creation (up to 15 bytes).
    pub name: String,
}

/// Number of possible CPUs (per-CPU values come in this many slots).
pub fn num_possible_cpus() -> Result<usize> {
    // SAFETY: no arguments; libbpf reads /sys/devices/system/cpu/possible once and caches it.
    let n = check("libbpf_num_possible_cpus", unsafe {
        libbpf_sys::libbpf_num_possible_cpus()
    })?;
    usize::try_from(n).map_err(|_| SysError::invalid("negative CPU count"))
}

/// An owned BPF map.
#[must_use]
#[derive(Debug)]
pub struct Map {
    /// Set for maps of the unit-test fake kernel (declared before `fd`: dropped first).
    #[cfg(test)]
    fake: Option<super::fake::Handle>,
    fd: OwnedFd,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

impl Map {
    /// Creates a map (`bpf_map_create`). `name` is at most 15 bytes of `[A-Za-z0-9_.]`.
    pub fn create(
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> Result<Map> {
        let cname = obj_name(name)?;
        #[cfg(test)]
        if let Some(map) = Map::create_on_fake(map_type, key_size, value_size, max_entries, name) {
            return map;
        }
        let mut opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
            ..Default::default()
        };
        if map_type == MapType::LpmTrie {
            opts.map_flags = libbpf_sys::BPF_F_NO_PREALLOC;
        }
        Map::create_with(map_type, &cname, key_size, value_size, max_entries, &opts)
    }

    /// An ARRAY of `max_entries` values of `value_size` bytes (a multiple of 8) that this
    /// process can map ([`BPF_F_MMAPABLE`], see [`Map::map_values`]).
    pub fn create_mmapable(value_size: u32, max_entries: u32, name: &str) -> Result<Map> {
        let cname = obj_name(name)?;
        if value_size == 0 || value_size % 8 != 0 {
            return Err(SysError::invalid(format!(
                "a mapped array of {value_size}-byte values (a multiple of 8)"
            )));
        }
        #[cfg(test)]
        if let Some(k) = super::fake::current() {
            return k
                .map_create_flags(
                    MapType::Array,
                    4,
                    value_size,
                    max_entries,
                    BPF_F_MMAPABLE,
                    name,
                )
                .map(|(h, fd)| Map::from_fake(h, fd, MapType::Array, 4, value_size, max_entries));
        }
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
            map_flags: BPF_F_MMAPABLE,
            ..Default::default()
        };
        Map::create_with(MapType::Array, &cname, 4, value_size, max_entries, &opts)
    }

    /// The values of an ARRAY created [`BPF_F_MMAPABLE`], mapped shared into this process
    /// (the fake kernel has no mappings: EOPNOTSUPP there).
    pub fn map_values(&self) -> Result<Mapping> {
        #[cfg(test)]
        if self.fake.is_some() {
            return Err(SysError::Syscall {
                call: "mmap",
                errno: libc::EOPNOTSUPP,
            });
        }
        let bytes = (self.value_size as usize)
            .checked_mul(self.max_entries as usize)
            .filter(|_| self.map_type == MapType::Array && self.value_size % 8 == 0)
            .ok_or_else(|| SysError::invalid("only arrays of 8-byte words are mapped"))?;
        // SAFETY: no address is requested and the fd is the map's; the kernel checks that
        // the map is mmapable and that `bytes` (rounded up to pages) is within its values.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SysError::Syscall {
                call: "mmap",
                errno: std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO),
            });
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU64>())
            .ok_or_else(|| SysError::invalid("mmap returned a null mapping"))?;
        Ok(Mapping {
            ptr,
            words: bytes / 8,
            bytes,
        })
    }

    /// Creates the map `spec` describes (one entry at least, as the kernel requires) and
    /// writes its entries.
    pub fn from_spec(spec: &emitter::MapSpec, name: &str) -> Result<Map> {
        let map_type = match spec.kind {
            emitter::MapKind::Hash => MapType::Hash,
            emitter::MapKind::Array => MapType::Array,
            emitter::MapKind::LpmTrie => MapType::LpmTrie,
        };
        let max = u32::try_from(spec.len().max(1))
            .map_err(|_| SysError::invalid(format!("{} entries", spec.len())))?;
        let map = Map::create(map_type, spec.key_size, spec.value_size, max, name)?;
        let (keys, values) = spec.keys_and_values();
        map.update_all(keys, values, 0)?;
        Ok(map)
    }

    /// `bpf_map_create` with `opts`.
    fn create_with(
        map_type: MapType,
        cname: &std::ffi::CStr,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        opts: &libbpf_sys::bpf_map_create_opts,
    ) -> Result<Map> {
        // SAFETY: cname is NUL-terminated and opts is a properly sized, initialized struct; both
        // outlive the call.
        let fd = unsafe {
            libbpf_sys::bpf_map_create(
                map_type.raw(),
                cname.as_ptr(),
                key_size,
                value_size,
                max_entries,
                opts,
            )
        };
        let fd = check("bpf_map_create", fd)?;
        // SAFETY: bpf_map_create succeeded, so fd is a new fd of the map, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Map {
            #[cfg(test)]
            fake: None,
            fd,
            map_type,
            key_size,
            value_size,
            max_entries,
        })
    }

    /// An ARRAY of one `value_size`-byte value that starts with a `struct bpf_spin_lock`:
    /// the value's type is described to the kernel in a BTF object of its own (a struct
    /// `{ struct bpf_spin_lock lock; u32 data[]; }`), which is how the kernel learns where
    /// the lock is. Programs take it with `bpf_spin_lock`; [`Map::lookup_locked`] and
    /// [`Map::update`] with [`BPF_F_LOCK`] copy the value under it.
    pub fn create_spin_locked(value_size: u32, name: &str) -> Result<Map> {
        Map::create_locked(MapType::Array, 4, value_size, 1, 0, name)
    }

    /// A HASH of up to `max_entries` spin-locked values (see [`Map::create_spin_locked`]),
    /// keys of `key_size` bytes (a multiple of 4), allocated as entries come
    /// (BPF_F_NO_PREALLOC): a full map fails inserts with E2BIG.
    pub fn create_spin_locked_hash(
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> Result<Map> {
        Map::create_locked(
            MapType::Hash,
            key_size,
            value_size,
            max_entries,
            libbpf_sys::BPF_F_NO_PREALLOC,
            name,
        )
    }

    /// A map of spin-locked values, their BTF made here ([`LockBtf`]).
    fn create_locked(
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        name: &str,
    ) -> Result<Map> {
        let cname = obj_name(name)?;
        if value_size < 8 || value_size % 4 != 0 || key_size == 0 || key_size % 4 != 0 {
            return Err(SysError::invalid(format!(
                "a spin-locked map of {key_size}-byte keys and {value_size}-byte values \
                 (values of 8 bytes or more, sizes multiples of 4)"
            )));
        }
        #[cfg(test)]
        if let Some(map) = Map::create_on_fake(map_type, key_size, value_size, max_entries, name) {
            return map;
        }
        let btf = LockBtf::new(key_size, value_size)?;
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
            btf_fd: btf.fd as u32,
            btf_key_type_id: btf.key,
            btf_value_type_id: btf.value,
            map_flags,
            ..Default::default()
        };
        Map::create_with(map_type, &cname, key_size, value_size, max_entries, &opts)
    }

    /// A map made on the fake kernel installed on this thread, if there is one.
    #[cfg(test)]
    fn create_on_fake(
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> Option<Result<Map>> {
        let k = super::fake::current()?;
        Some(
            k.map_create(map_type, key_size, value_size, max_entries, name)
                .map(|(h, fd)| Map::from_fake(h, fd, map_type, key_size, value_size, max_entries)),
        )
    }

    #[cfg(test)]
    fn from_fake(
        h: super::fake::Handle,
        fd: OwnedFd,
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> Map {
        Map {
            fake: Some(h),
            fd,
            map_type,
            key_size,
            value_size,
            max_entries,
        }
    }

    #[cfg(test)]
    fn from_fake_handle((h, fd): (super::fake::Handle, OwnedFd)) -> Result<Map> {
        let i = h.map_info()?;
        Ok(Map::from_fake(
            h,
            fd,
            i.map_type,
            i.key_size,
            i.value_size,
            i.max_entries,
        ))
    }

    fn from_fd(fd: OwnedFd) -> Result<Map> {
        let info: RawMapInfo = get_info("bpf_map_get_info_by_fd", fd.as_fd())?;
        Ok(Map {
            #[cfg(test)]
            fake: None,
            fd,
            map_type: MapType::from_raw(info.type_),
            key_size: info.key_size,
            value_size: info.value_size,
            max_entries: info.max_entries,
        })
    }

    /// Opens a pinned map (`bpf_obj_get`); ENOENT becomes [`SysError::NotFound`].
    pub fn from_pin(path: impl AsRef<Path>) -> Result<Map> {
        let path = path.as_ref();
        #[cfg(test)]
        if let Some(k) = super::fake::current() {
            return Map::from_fake_handle(k.from_pin(path, super::ObjKind::Map)?);
        }
        let fd = super::obj_get_kind(path, super::ObjKind::Map)?;
        let map = Map::from_fd(fd)?;
        Ok(map)
    }

    /// Opens a map by kernel id (`bpf_map_get_fd_by_id`).
    pub fn from_id(id: u32) -> Result<Map> {
        #[cfg(test)]
        if let Some(k) = super::fake::current() {
            return Map::from_fake_handle(k.from_id(id, super::ObjKind::Map)?);
        }
        // SAFETY: plain integer argument; returns a new fd or -errno.
        let fd = unsafe { libbpf_sys::bpf_map_get_fd_by_id(id) };
        let fd = match check("bpf_map_get_fd_by_id", fd) {
            Ok(fd) => fd,
            Err(e) if e.errno() == libc::ENOENT => {
                return Err(SysError::not_found(format!("map id {id}")))
            }
            Err(e) => return Err(e),
        };
        // SAFETY: bpf_map_get_fd_by_id succeeded, so fd is a new fd of the map, owned by nobody
        // else.
        Map::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Pins the map at `path` on bpffs (`bpf_obj_pin`); EEXIST if something is there.
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<()> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.pin(path.as_ref());
        }
        super::obj_pin(self.fd.as_fd(), path.as_ref())
    }

    /// The map fd, e.g. to patch into an `LD_IMM64` (BPF_PSEUDO_MAP_FD) instruction.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second owned handle on the same map.
    pub fn try_clone(&self) -> Result<Map> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            let (h, fd) = h.dup()?;
            return Ok(Map::from_fake(
                h,
                fd,
                self.map_type,
                self.key_size,
                self.value_size,
                self.max_entries,
            ));
        }
        let fd = self.fd.try_clone().map_err(|e| SysError::Syscall {
            call: "fcntl(F_DUPFD_CLOEXEC)",
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })?;
        Ok(Map {
            #[cfg(test)]
            fake: None,
            fd,
            map_type: self.map_type,
            key_size: self.key_size,
            value_size: self.value_size,
            max_entries: self.max_entries,
        })
    }

    /// Map type.
    pub fn map_type(&self) -> MapType {
        self.map_type
    }

    /// Key size in bytes.
    pub fn key_size(&self) -> u32 {
        self.key_size
    }

    /// Value size in bytes (per CPU for per-CPU maps).
    pub fn value_size(&self) -> u32 {
        self.value_size
    }

    /// Capacity.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Kernel id of the map.
    pub fn id(&self) -> Result<u32> {
        Ok(self.info()?.id)
    }

    /// What the kernel reports about the map.
    pub fn info(&self) -> Result<MapInfo> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.map_info();
        }
        let i: RawMapInfo = get_info("bpf_map_get_info_by_fd", self.fd.as_fd())?;
        Ok(MapInfo {
            map_type: MapType::from_raw(i.type_),
            id: i.id,
            key_size: i.key_size,
            value_size: i.value_size,
            max_entries: i.max_entries,
            map_flags: i.map_flags,
            name: super::c_chars_to_string(&i.name),
        })
    }

    /// Bytes a lookup writes: value_size, or round_up(value_size, 8) * possible CPUs.
    pub fn value_buf_len(&self) -> Result<usize> {
        if self.map_type.is_percpu() {
            Ok((self.value_size as usize).next_multiple_of(8) * num_possible_cpus()?)
        } else {
            Ok(self.value_size as usize)
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.len() != self.key_size as usize {
            return Err(SysError::invalid(format!(
                "key of {} bytes for a map with key_size {}",
                key.len(),
                self.key_size
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        let want = self.value_buf_len()?;
        if value.len() != want {
            return Err(SysError::invalid(format!(
                "value buffer of {} bytes, the map needs {want}",
                value.len()
            )));
        }
        Ok(())
    }

    /// Copies the value of `key` into `value` ([`Map::value_buf_len`] bytes). A missing key
    /// gives [`SysError::NotFound`].
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> Result<()> {
        self.check_key(key)?;
        self.check_value(value)?;
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.map_lookup(key, value).map_err(|e| {
                if e.errno() == libc::ENOENT {
                    SysError::not_found("map key")
                } else {
                    e
                }
            });
        }
        // SAFETY: key has key_size readable bytes and value has the number of writable bytes the
        // kernel writes for this map type (both checked above); fd is valid.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_mut_ptr().cast(),
            )
        };
        match check("bpf_map_lookup_elem", ret) {
            Err(e) if e.errno() == libc::ENOENT => Err(SysError::not_found("map key")),
            r => r.map(drop),
        }
    }

    /// [`Map::lookup`] of a value with a `bpf_spin_lock`, copied while holding it
    /// (BPF_F_LOCK).
    pub fn lookup_locked(&self, key: &[u8], value: &mut [u8]) -> Result<()> {
        self.check_key(key)?;
        self.check_value(value)?;
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.map_lookup(key, value);
        }
        // SAFETY: as in `lookup`.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_elem_flags(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_mut_ptr().cast(),
                BPF_F_LOCK,
            )
        };
        check("bpf_map_lookup_elem_flags", ret).map(drop)
    }

    /// The value of `key` as a new vector, or None if the key is absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut v = vec![0u8; self.value_buf_len()?];
        match self.lookup(key, &mut v) {
            Ok(()) => Ok(Some(v)),
            Err(SysError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Per-CPU lookup: one `value_size`-byte value per possible CPU (index = CPU number).
    pub fn lookup_percpu(&self, key: &[u8]) -> Result<Vec<Vec<u8>>> {
        if !self.map_type.is_percpu() {
            return Err(SysError::invalid(format!(
                "lookup_percpu on a {:?} map",
                self.map_type
            )));
        }
        let mut buf = vec![0u8; self.value_buf_len()?];
        self.lookup(key, &mut buf)?;
        let stride = (self.value_size as usize).next_multiple_of(8);
        Ok(buf
            .chunks(stride)
            .map(|c| c[..self.value_size as usize].to_vec())
            .collect())
    }

    /// Writes `value` ([`Map::value_buf_len`] bytes) for `key`; flags from [`update_flags`].
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<()> {
        self.check_key(key)?;
        self.check_value(value)?;
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.map_update(key, value, flags);
        }
        // SAFETY: key and value have exactly the sizes the kernel reads (checked above).
        let ret = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_ptr().cast(),
                flags,
            )
        };
        check("bpf_map_update_elem", ret).map(drop)
    }

    /// Removes `key` (for a PROG_ARRAY: empties the slot). A missing key gives NotFound.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.check_key(key)?;
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.map_delete(key).map_err(|e| {
                if e.errno() == libc::ENOENT {
                    SysError::not_found("map key")
                } else {
                    e
                }
            });
        }
        // SAFETY: key has key_size readable bytes (checked above).
        let ret =
            unsafe { libbpf_sys::bpf_map_delete_elem(self.fd.as_raw_fd(), key.as_ptr().cast()) };
        match check("bpf_map_delete_elem", ret) {
            Err(e) if e.errno() == libc::ENOENT => Err(SysError::not_found("map key")),
            r => r.map(drop),
        }
    }

    /// The key after `key` (the first key when `key` is None), None at the end.
    pub fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        if let Some(k) = key {
            self.check_key(k)?;
        }
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.map_next_key(key);
        }
        let mut next = vec![0u8; self.key_size as usize];
        let kp = key.map_or(std::ptr::null(), |k| k.as_ptr().cast());
        // SAFETY: kp is NULL or key_size readable bytes; next has key_size writable bytes.
        let ret = unsafe {
            libbpf_sys::bpf_map_get_next_key(self.fd.as_raw_fd(), kp, next.as_mut_ptr().cast())
        };
        match check("bpf_map_get_next_key", ret) {
            Ok(_) => Ok(Some(next)),
            Err(e) if e.errno() == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every (key, value) pair, read with BPF_MAP_LOOKUP_BATCH (falls back to one lookup per
    /// key where batching is not supported). Values are [`Map::value_buf_len`] bytes.
    pub fn lookup_all(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each(|k, v| out.push((k.to_vec(), v.to_vec())))?;
        Ok(out)
    }

    /// Calls `f` with every (key, value) pair, values [`Map::value_buf_len`] bytes: batched
    /// reads into two reused buffers, or one lookup per key where the kernel has no batch
    /// operation for this map (it then refuses the first batch, before any pair is read).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<()> {
        match self.for_each_batched(&mut f) {
            Err(e) if unsupported(&e) => {
                let mut key = self.next_key(None)?;
                while let Some(k) = key {
                    if let Some(v) = self.get(&k)? {
                        f(&k, &v);
                    }
                    key = self.next_key(Some(&k))?;
                }
                Ok(())
            }
            r => r,
        }
    }

    fn for_each_batched(&self, f: &mut impl FnMut(&[u8], &[u8])) -> Result<()> {
        #[cfg(test)]
        if self.fake.is_some() {
            // The fake has no batch op: take the per-key path of for_each.
            return Err(SysError::Syscall {
                call: "bpf_map_lookup_batch",
                errno: libc::EINVAL,
            });
        }
        // A few syscalls for a whole counter map, without buffers of more than a few MiB.
        let chunk = (self.max_entries as usize).clamp(1, 8192);
        let ks = self.key_size as usize;
        let vs = self.value_buf_len()?;
        let opts = libbpf_sys::bpf_map_batch_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as libbpf_sys::size_t,
            ..Default::default()
        };
        let mut keys = vec![0u8; chunk * ks];
        let mut vals = vec![0u8; chunk * vs];
        // The batch token is key-sized for arrays and hash maps (hash maps use 4 bytes; take
        // the larger of the two).
        let mut token = vec![0u8; ks.max(4)];
        let mut next = vec![0u8; token.len()];
        let mut first = true;
        loop {
            let mut count = chunk as u32;
            let in_batch = if first {
                std::ptr::null_mut()
            } else {
                token.as_mut_ptr().cast()
            };
            // SAFETY: in_batch is NULL or a token buffer from the previous call; out_batch has
            // room for a token; keys/values hold `count` keys and values of the sizes the kernel
            // copies (key_size, value_buf_len); opts has the correct sz.
            let ret = unsafe {
                libbpf_sys::bpf_map_lookup_batch(
                    self.fd.as_raw_fd(),
                    in_batch,
                    next.as_mut_ptr().cast(),
                    keys.as_mut_ptr().cast(),
                    vals.as_mut_ptr().cast(),
                    &mut count,
                    &opts,
                )
            };
            let done = match check("bpf_map_lookup_batch", ret) {
                Ok(_) => false,
                // ENOENT: the last (possibly empty) batch.
                Err(e) if e.errno() == libc::ENOENT => true,
                Err(e) => return Err(e),
            };
            let n = (count as usize).min(chunk);
            for (k, v) in keys.chunks_exact(ks).zip(vals.chunks_exact(vs)).take(n) {
                f(k, v);
            }
            if done || n == 0 {
                return Ok(());
            }
            std::mem::swap(&mut token, &mut next);
            first = false;
        }
    }

    /// Writes every pair of `keys` and `values` (whole keys and [`Map::value_buf_len`]-byte
    /// values, in order) with one BPF_MAP_UPDATE_BATCH; one update per pair where the kernel
    /// has no batch operation for this map or `flags` (as for [`Map::update`]) has more than
    /// BPF_F_LOCK, which is all the batch takes.
    pub fn update_all(&self, keys: &[u8], values: &[u8], flags: u64) -> Result<()> {
        let ks = self.key_size as usize;
        let vs = self.value_buf_len()?;
        let count = keys.len().checked_div(ks).unwrap_or(0);
        if ks == 0 || keys.len() != count * ks || values.len() != count * vs {
            return Err(SysError::invalid(format!(
                "{} key bytes and {} value bytes are not whole pairs of {ks} and {vs}",
                keys.len(),
                values.len()
            )));
        }
        if count == 0 {
            return Ok(());
        }
        let per_pair = || {
            keys.chunks_exact(ks)
                .zip(values.chunks_exact(vs))
                .try_for_each(|(k, v)| self.update(k, v, flags))
        };
        // The batch takes no flag but BPF_F_LOCK.
        if flags & !BPF_F_LOCK != 0 {
            return per_pair();
        }
        #[cfg(test)]
        if self.fake.is_some() {
            return per_pair();
        }
        let opts = libbpf_sys::bpf_map_batch_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as libbpf_sys::size_t,
            elem_flags: flags,
            ..Default::default()
        };
        let mut n = u32::try_from(count).map_err(|_| SysError::invalid("over 2^32 pairs"))?;
        // SAFETY: keys and values hold `count` whole keys and values (checked above), and the
        // kernel reads at most `n` = `count` of each; opts has the correct sz.
        let ret = unsafe {
            libbpf_sys::bpf_map_update_batch(
                self.fd.as_raw_fd(),
                keys.as_ptr().cast(),
                values.as_ptr().cast(),
                &mut n,
                &opts,
            )
        };
        match check("bpf_map_update_batch", ret) {
            // Refused before any pair was written (the count is then left as it was, or 0):
            // no batch operation for this map.
            Err(e) if (n == 0 || n as usize == count) && unsupported(&e) => per_pair(),
            r => r.map(drop),
        }
    }

    /// Per-CPU map: the value of `key` read as native-endian u64 words, each summed over all
    /// CPUs (e.g. `[packets, bytes]` for a `{u64 packets; u64 bytes}` counter).
    pub fn sum_percpu_u64(&self, key: &[u8]) -> Result<Vec<u64>> {
        let per = self.lookup_percpu(key)?;
        Ok(sum_u64_words(
            per.iter().map(Vec::as_slice),
            self.value_size as usize,
        ))
    }

    /// Per-CPU ARRAY: [`Map::sum_percpu_u64`] of every index, in index order, read with
    /// batched lookups.
    pub fn sum_percpu_u64_all(&self) -> Result<Sums> {
        let vs = self.value_size as usize;
        if self.map_type != MapType::PercpuArray || vs == 0 || vs % 8 != 0 {
            return Err(SysError::invalid(format!(
                "sum_percpu_u64_all on a {:?} map of {vs}-byte values",
                self.map_type
            )));
        }
        let width = vs / 8;
        let mut words = vec![0u64; self.max_entries as usize * width];
        self.for_each(|k, v| {
            let idx = u32::from_ne_bytes([k[0], k[1], k[2], k[3]]) as usize;
            if let Some(sum) = words.get_mut(idx * width..(idx + 1) * width) {
                for cpu in v.chunks_exact(vs) {
                    for (s, w) in sum.iter_mut().zip(cpu.chunks_exact(8)) {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(w);
                        *s = s.wrapping_add(u64::from_ne_bytes(b));
                    }
                }
            }
        })?;
        Ok(Sums { width, words })
    }
}

/// `BPF_F_MMAPABLE`: an ARRAY whose values user space maps ([`Map::create_mmapable`]).
pub const BPF_F_MMAPABLE: u32 = libbpf_sys::BPF_F_MMAPABLE;

/// The values of a `BPF_F_MMAPABLE` ARRAY mapped into this process ([`Map::map_values`]),
/// as u64 words: programs update them while this process reads them, so they are read and
/// written atomically here, never through plain references. Unmapped on drop (the mapping
/// keeps the map alive meanwhile).
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<AtomicU64>,
    words: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory, accessed only through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// The mapped words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` is the start of a live mapping of `words` aligned u64 words (page
        // aligned), unmapped only on drop; AtomicU64 has u64's layout.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made by `map_values`, with its length, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.bytes);
        }
    }
}

impl Sums {
    /// `width` words per index, in one buffer.
    pub fn from_words(width: usize, words: Vec<u64>) -> Sums {
        Sums { width, words }
    }
}

/// The per-CPU sums of a PERCPU_ARRAY's values ([`Map::sum_percpu_u64_all`]): `width` u64
/// words per index, in one buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sums {
    width: usize,
    words: Vec<u64>,
}

impl Sums {
    /// The summed words of `index`, None past the map's end.
    pub fn get(&self, index: usize) -> Option<&[u64]> {
        self.words.get(index * self.width..(index + 1) * self.width)
    }

    /// Number of indices.
    pub fn len(&self) -> usize {
        self.words.len() / self.width
    }

    /// Whether the map has no index.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// Sums native-endian u64 words position by position over several values of `len` bytes.
fn sum_u64_words<'a>(values: impl Iterator<Item = &'a [u8]>, len: usize) -> Vec<u64> {
    let mut sums = vec![0u64; len / 8];
    for v in values {
        for (s, w) in sums.iter_mut().zip(v.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            *s = s.wrapping_add(u64::from_ne_bytes(b));
        }
    }
    sums
}

/// BPF_F_LOCK: copy a value while holding its `bpf_spin_lock`.
pub const BPF_F_LOCK: u64 = 4;

/// The BTF object describing a spin-locked value (see [`Map::create_spin_locked`]); freed
/// (and its fd closed) once the map holds its own reference.
struct LockBtf {
    btf: *mut libbpf_sys::btf,
    fd: i32,
    key: u32,
    value: u32,
}

impl LockBtf {
    /// `key_size`: 4 gives a u32 key, more an array of u32 words.
    fn new(key_size: u32, value_size: u32) -> Result<LockBtf> {
        let fail = |call: &'static str, ret: i32| SysError::Syscall {
            call,
            errno: if ret < 0 { -ret } else { libc::EINVAL },
        };
        // SAFETY: btf__new_empty has no arguments; a NULL result is checked.
        let btf = unsafe { libbpf_sys::btf__new_empty() };
        if btf.is_null() {
            return Err(fail("btf__new_empty", -libc::ENOMEM));
        }
        let mut this = LockBtf {
            btf,
            fd: -1,
            key: 0,
            value: 0,
        };
        // SAFETY: `btf` is a live object of ours and every name is a NUL-terminated literal;
        // libbpf copies the strings. Each call's result is checked before the next uses it.
        unsafe {
            let u32_id = libbpf_sys::btf__add_int(btf, c"unsigned int".as_ptr(), 4, 0);
            if u32_id < 0 {
                return Err(fail("btf__add_int", u32_id));
            }
            let lock = libbpf_sys::btf__add_struct(btf, c"bpf_spin_lock".as_ptr(), 4);
            if lock < 0 || libbpf_sys::btf__add_field(btf, c"val".as_ptr(), u32_id, 0, 0) < 0 {
                return Err(fail("btf__add_struct", lock));
            }
            let words = (value_size - 4) / 4;
            let data = libbpf_sys::btf__add_array(btf, u32_id, u32_id, words);
            if data < 0 {
                return Err(fail("btf__add_array", data));
            }
            let value = libbpf_sys::btf__add_struct(btf, c"bpfltr_locked".as_ptr(), value_size);
            if value < 0
                || libbpf_sys::btf__add_field(btf, c"lock".as_ptr(), lock, 0, 0) < 0
                || libbpf_sys::btf__add_field(btf, c"data".as_ptr(), data, 32, 0) < 0
            {
                return Err(fail("btf__add_struct", value));
            }
            let key = if key_size == 4 {
                u32_id
            } else {
                libbpf_sys::btf__add_array(btf, u32_id, u32_id, key_size / 4)
            };
            if key < 0 {
                return Err(fail("btf__add_array", key));
            }
            let ret = libbpf_sys::btf__load_into_kernel(btf);
            if ret < 0 {
                return Err(fail("btf__load_into_kernel", ret));
            }
            this.fd = libbpf_sys::btf__fd(btf);
            this.key = key as u32;
            this.value = value as u32;
        }
        Ok(this)
    }
}

impl Drop for LockBtf {
    fn drop(&mut self) {
        // SAFETY: `btf` came from btf__new_empty and is freed exactly once (which closes the
        // fd btf__load_into_kernel opened).
        unsafe { libbpf_sys::btf__free(self.btf) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::{require_bpf, TempPinDir};

    #[test]
    fn map_type_numbers() {
        assert_eq!(MapType::PercpuArray.raw(), 6);
        assert_eq!(MapType::ProgArray.raw(), 3);
        assert_eq!(MapType::from_raw(6), MapType::PercpuArray);
        assert_eq!(MapType::from_raw(999), MapType::Other(999));
        assert!(MapType::PercpuArray.is_percpu());
        assert!(!MapType::Array.is_percpu());
    }

    #[test]
    fn array_update_lookup_delete() {
        if !require_bpf() {
            return;
        }
        let m = Map::create(MapType::Hash, 4, 8, 16, "bpfltr_t_hash").unwrap();
        assert_eq!(m.get(&1u32.to_ne_bytes()).unwrap(), None);
        m.update(
            &1u32.to_ne_bytes(),
            &42u64.to_ne_bytes(),
            update_flags::NOEXIST,
        )
        .unwrap();
        assert_eq!(
            m.get(&1u32.to_ne_bytes()).unwrap(),
            Some(42u64.to_ne_bytes().to_vec())
        );
        let e = m
            .update(
                &1u32.to_ne_bytes(),
                &43u64.to_ne_bytes(),
                update_flags::NOEXIST,
            )
            .unwrap_err();
        assert_eq!(e.errno(), libc::EEXIST);
        assert_eq!(m.next_key(None).unwrap(), Some(1u32.to_ne_bytes().to_vec()));
        assert_eq!(m.next_key(Some(&1u32.to_ne_bytes())).unwrap(), None);
        m.delete(&1u32.to_ne_bytes()).unwrap();
        assert!(matches!(
            m.delete(&1u32.to_ne_bytes()),
            Err(SysError::NotFound { .. })
        ));
        // Wrong buffer sizes are refused before the kernel can read past them.
        assert_eq!(
            m.update(&[0u8; 2], &[0u8; 8], 0).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            m.lookup(&[0u8; 4], &mut [0u8; 4]).unwrap_err().errno(),
            libc::EINVAL
        );
        let info = m.info().unwrap();
        assert_eq!(
            (
                info.map_type,
                info.key_size,
                info.value_size,
                info.max_entries
            ),
            (MapType::Hash, 4, 8, 16)
        );
        assert_eq!(info.name, "bpfltr_t_hash");
        assert!(info.id > 0);
        assert_eq!(Map::from_id(info.id).unwrap().id().unwrap(), info.id);
    }

    #[test]
    fn percpu_array_values() {
        if !require_bpf() {
            return;
        }
        let ncpu = num_possible_cpus().unwrap();
        assert!(ncpu >= 1);
        let m = Map::create(MapType::PercpuArray, 4, 16, 4, "bpfltr_t_pcpu").unwrap();
        assert_eq!(m.value_buf_len().unwrap(), 16 * ncpu);
        let mut vals = Vec::new();
        for cpu in 0..ncpu as u64 {
            vals.extend_from_slice(&(cpu + 1).to_ne_bytes());
            vals.extend_from_slice(&(100 * (cpu + 1)).to_ne_bytes());
        }
        m.update(&2u32.to_ne_bytes(), &vals, update_flags::ANY)
            .unwrap();
        let per = m.lookup_percpu(&2u32.to_ne_bytes()).unwrap();
        assert_eq!(per.len(), ncpu);
        for (cpu, v) in per.iter().enumerate() {
            assert_eq!(v.len(), 16);
            assert_eq!(
                u64::from_ne_bytes(v[..8].try_into().unwrap()),
                cpu as u64 + 1
            );
            assert_eq!(
                u64::from_ne_bytes(v[8..].try_into().unwrap()),
                100 * (cpu as u64 + 1)
            );
        }
        let n = ncpu as u64;
        assert_eq!(
            m.sum_percpu_u64(&2u32.to_ne_bytes()).unwrap(),
            vec![n * (n + 1) / 2, 100 * n * (n + 1) / 2]
        );
        let all = m.sum_percpu_u64_all().unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(
            all.get(2),
            Some(&[n * (n + 1) / 2, 100 * n * (n + 1) / 2][..])
        );
        assert_eq!(all.get(0), Some(&[0, 0][..]));
        assert_eq!(all.get(4), None);
        assert_eq!(m.lookup_all().unwrap().len(), 4);
        // Out of range index of an array: ENOENT (NotFound) on lookup.
        assert!(matches!(
            m.lookup_percpu(&9u32.to_ne_bytes()),
            Err(SysError::NotFound { .. })
        ));
    }

    #[test]
    fn batch_read_of_a_large_array_and_a_hash() {
        if !require_bpf() {
            return;
        }
        let ncpu = num_possible_cpus().unwrap();
        let m = Map::create(MapType::PercpuArray, 4, 16, 1000, "bpfltr_t_big").unwrap();
        for i in [0u32, 255, 256, 257, 999] {
            let mut v = Vec::new();
            for _ in 0..ncpu {
                v.extend_from_slice(&u64::from(i).to_ne_bytes());
                v.extend_from_slice(&1u64.to_ne_bytes());
            }
            m.update(&i.to_ne_bytes(), &v, 0).unwrap();
        }
        let all = m.sum_percpu_u64_all().unwrap();
        assert_eq!(all.len(), 1000);
        for i in 0..1000 {
            let want = if [0, 255, 256, 257, 999].contains(&i) {
                [i as u64 * ncpu as u64, ncpu as u64]
            } else {
                [0, 0]
            };
            assert_eq!(all.get(i), Some(&want[..]), "index {i}");
        }
        let h = Map::create(MapType::Hash, 8, 4, 600, "bpfltr_t_bh").unwrap();
        let keys: Vec<u8> = (0..300u64).flat_map(|i| (i * 7).to_ne_bytes()).collect();
        let values: Vec<u8> = (0..300u32).flat_map(u32::to_ne_bytes).collect();
        h.update_all(&keys, &values, 0).unwrap();
        // The batched paths themselves work on both kinds (no silent fallback).
        let batched = |m: &Map| {
            let mut n = 0;
            m.for_each_batched(&mut |_: &[u8], _: &[u8]| n += 1)
                .unwrap();
            n
        };
        assert_eq!(batched(&m), 1000);
        assert_eq!(batched(&h), 300);
        let noexist = update_flags::NOEXIST;
        let err = h.update_all(&keys[..8], &values[..4], noexist).unwrap_err();
        assert_eq!(
            err.errno(),
            libc::EEXIST,
            "a batch update with flags: {err}"
        );
        assert!(
            h.update_all(&keys[..8], &values, 0).is_err(),
            "pairs not whole"
        );
        let mut pairs = h.lookup_all().unwrap();
        pairs.sort();
        assert_eq!(pairs.len(), 300);
        assert!(pairs
            .iter()
            .all(|(k, v)| u64::from_ne_bytes(k[..].try_into().unwrap())
                == 7 * u64::from(u32::from_ne_bytes(v[..].try_into().unwrap()))));
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
        let last: usize = cpus
            .trim()
            .rsplit(['-', ','])
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ncpu, last + 1);
    }

    #[test]
    fn pin_and_reopen() {
        if !require_bpf() {
            return;
        }
        let dir = TempPinDir::new("map");
        let m = Map::create(MapType::Array, 4, 4, 2, "bpfltr_t_pin").unwrap();
        m.update(&1u32.to_ne_bytes(), &7u32.to_ne_bytes(), 0)
            .unwrap();
        let p = dir.path().join("m");
        m.pin(&p).unwrap();
        assert_eq!(m.pin(&p).unwrap_err().errno(), libc::EEXIST);
        let id = m.id().unwrap();
        drop(m);
        let m2 = Map::from_pin(&p).unwrap();
        assert_eq!(m2.id().unwrap(), id);
        assert_eq!(
            (
                m2.map_type(),
                m2.key_size(),
                m2.value_size(),
                m2.max_entries()
            ),
            (MapType::Array, 4, 4, 2)
        );
        assert_eq!(
            m2.get(&1u32.to_ne_bytes()).unwrap(),
            Some(7u32.to_ne_bytes().to_vec())
        );
        crate::sys::unpin(&p).unwrap();
        assert!(matches!(Map::from_pin(&p), Err(SysError::NotFound { .. })));
        drop(m2);
        // Unpinned and closed: the map is gone.
        assert!(matches!(Map::from_id(id), Err(SysError::NotFound { .. })));
    }
}
