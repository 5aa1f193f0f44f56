//! An in-memory stand-in for the kernel's BPF syscalls, for unit tests that must run without
//! root (aya keeps the same kind of fake under `cfg(test)` in its `sys` module).
//!
//! [`FakeKernel::install`] routes the calling thread's `sys` calls to a fresh fake until the
//! returned guard drops: `Map::create`, `Program::load*`, `from_pin`, `from_id`, bpffs helpers
//! and [`super::in_netns`] (which then only records the namespace, no setns). Objects created
//! under the fake remember it and keep working on any thread. Handles are real fds (one memfd
//! each), so `fd()` and fd numbers patched into LD_IMM64 instructions behave as with the
//! kernel. Modelled kernel behaviour: object lifetime by reference counting (handles, pins,
//! program -> maps, link -> program, prog array slot -> program), ids, pins with EEXIST/ENOENT,
//! map sizes and flags (E2BIG, EEXIST, ENOENT), link argument checks (EAFNOSUPPORT, EPROTO,
//! ERANGE) and EBUSY on a (namespace, pf, hook, priority) already in use. Pins are marker
//! files on the real filesystem (use a temporary directory as the bpffs root), so code that
//! walks its pin tree with `std::fs` (read_dir, exists) sees them; a marker removed by any
//! means drops the pin's reference. Not modelled:
//! verification (inject failures with [`FakeKernel::fail_next_load`]) and execution (test runs
//! of `r0 = imm; exit` return imm, anything else needs [`FakeKernel::set_test_run_retval`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::{Result, SysError};
use super::fs::ObjKind;
use super::link::LinkInfo;
use super::map::{update_flags, MapInfo, MapType};
use super::prog::{ProgInfo, TestRun};

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

#[derive(Clone)]
struct Current {
    kernel: Arc<Kernel>,
    /// The namespace in_netns entered (fake threads only); None = the thread's real one.
    netns: Option<(u64, u64)>,
}

/// The fake installed on this thread, if any.
pub(crate) fn current() -> Option<Arc<Kernel>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| Arc::clone(&c.kernel)))
}

/// What a thread sees of the fake (none, or one kernel and maybe a namespace), to hand to
/// threads it starts ([`Inherited::adopt`]).
#[derive(Clone)]
pub(crate) struct Inherited(Option<Current>);

/// This thread's view of the fake.
pub(crate) fn inherited() -> Inherited {
    Inherited(CURRENT.with(|c| c.borrow().clone()))
}

impl Inherited {
    /// Makes this thread see what the thread that made `self` sees.
    pub(crate) fn adopt(self) {
        CURRENT.with(|c| *c.borrow_mut() = self.0);
    }
}

/// Runs `f` on a new thread that sees the fake of this thread and namespace `netns`.
pub(crate) fn in_netns<T: Send>(
    kernel: Arc<Kernel>,
    netns: (u64, u64),
    f: impl FnOnce() -> T + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            CURRENT.with(|c| {
                *c.borrow_mut() = Some(Current {
                    kernel,
                    netns: Some(netns),
                })
            });
            f()
        });
        match h.join() {
            Ok(v) => Ok(v),
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

fn current_netns_id() -> Result<(u64, u64)> {
    if let Some(ns) = CURRENT.with(|c| c.borrow().as_ref().and_then(|c| c.netns)) {
        return Ok(ns);
    }
    super::netns_id(super::current_netns()?.as_fd())
}

/// Guard of an installed fake; also the test's window into it.
#[derive(Debug)]
pub struct FakeKernel {
    kernel: Arc<Kernel>,
    previous: Option<Arc<Kernel>>,
}

impl FakeKernel {
    /// Installs a fresh fake on the calling thread until the guard drops.
    pub fn install() -> FakeKernel {
        let kernel = Arc::new(Kernel::default());
        let previous = CURRENT.with(|c| {
            c.borrow_mut()
                .replace(Current {
                    kernel: Arc::clone(&kernel),
                    netns: None,
                })
                .map(|p| p.kernel)
        });
        FakeKernel { kernel, previous }
    }

    /// The next program load fails with `errno` and verifier log `log`.
    pub fn fail_next_load(&self, errno: i32, log: &str) {
        self.kernel
            .state()
            .load_failures
            .push_back((errno, log.to_string()));
    }

    /// What test runs return (None: only `r0 = imm; exit` programs can run).
    pub fn set_test_run_retval(&self, retval: Option<u32>) {
        self.kernel.state().test_run_retval = retval;
    }

    /// Marks (namespace, pf, hook, priority) as used by a non-BPF hook (e.g. the kernel's
    /// filter table at priority 0), so that a link there gets EBUSY.
    pub fn occupy(&self, netns: (u64, u64), pf: u32, hooknum: u32, priority: i32) {
        self.kernel
            .state()
            .occupied
            .push((netns, pf, hooknum, priority));
    }

    /// Attached links: (namespace, link info).
    pub fn attached(&self) -> Vec<((u64, u64), LinkInfo)> {
        let mut st = self.kernel.state();
        st.gc_pins();
        st.objects
            .values()
            .filter_map(|o| match &o.body {
                Body::Link(l) if !l.detached => Some((l.netns, st.link_info(o))),
                _ => None,
            })
            .collect()
    }

    /// Every program load so far: (name, instructions).
    pub fn loads(&self) -> Vec<(String, Vec<u8>)> {
        self.kernel.state().loads.clone()
    }

    /// Pinned paths.
    pub fn pins(&self) -> Vec<PathBuf> {
        let mut st = self.kernel.state();
        st.gc_pins();
        st.pins.keys().cloned().collect()
    }

    /// Objects alive (maps, programs, links), to check for leaks.
    pub fn object_count(&self) -> usize {
        let mut st = self.kernel.state();
        st.gc_pins();
        st.objects.len()
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| {
            *c.borrow_mut() = previous.map(|kernel| Current {
                kernel,
                netns: None,
            })
        });
    }
}

/// The fake kernel's state behind a lock.
pub(crate) struct Kernel {
    /// Distinguishes the marker files of concurrent fakes.
    serial: u64,
    state: Mutex<State>,
}

impl Default for Kernel {
    fn default() -> Kernel {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        Kernel {
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            state: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKernel").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    next_id: u32,
    objects: HashMap<u32, Obj>,
    /// memfd (dev, ino) of each open handle -> object id.
    handles: HashMap<(u64, u64), u32>,
    pins: BTreeMap<PathBuf, u32>,
    occupied: Vec<((u64, u64), u32, u32, i32)>,
    load_failures: VecDeque<(i32, String)>,
    test_run_retval: Option<u32>,
    loads: Vec<(String, Vec<u8>)>,
}

struct Obj {
    name: String,
    refs: usize,
    body: Body,
}

enum Body {
    Map(FakeMap),
    Prog(FakeProg),
    Link(FakeLink),
}

struct FakeMap {
    ty: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
    /// For prog arrays the value is the program's object id.
    data: BTreeMap<Vec<u8>, Vec<u8>>,
}

struct FakeProg {
    prog_type: u32,
    insns: Vec<u8>,
    maps: Vec<u32>,
}

struct FakeLink {
    prog: u32,
    pf: u32,
    hooknum: u32,
    priority: i32,
    flags: u32,
    netns: (u64, u64),
    detached: bool,
}

fn errno(call: &'static str, errno: i32) -> SysError {
    SysError::Syscall { call, errno }
}

fn kind_of(b: &Body) -> ObjKind {
    match b {
        Body::Map(_) => ObjKind::Map,
        Body::Prog(_) => ObjKind::Prog,
        Body::Link(_) => ObjKind::Link,
    }
}

fn fd_key(fd: BorrowedFd<'_>) -> Result<(u64, u64)> {
    super::netns_id(fd)
}

impl State {
    /// Drops the pins whose marker file is gone (removed by unpin, remove_pins or plain
    /// std::fs calls, as unlinking a pin on bpffs would).
    fn gc_pins(&mut self) {
        let gone: Vec<PathBuf> = self.pins.keys().filter(|p| !p.is_file()).cloned().collect();
        for p in gone {
            if let Some(id) = self.pins.remove(&p) {
                self.put(id);
            }
        }
    }

    fn obj(&self, id: u32) -> Result<&Obj> {
        self.objects
            .get(&id)
            .ok_or_else(|| errno("fake", libc::EBADF))
    }

    fn map_mut(&mut self, id: u32) -> Result<&mut FakeMap> {
        match self.objects.get_mut(&id).map(|o| &mut o.body) {
            Some(Body::Map(m)) => Ok(m),
            _ => Err(errno("bpf_map", libc::EINVAL)),
        }
    }

    fn add(&mut self, name: &str, body: Body) -> u32 {
        self.next_id += 1;
        self.objects.insert(
            self.next_id,
            Obj {
                name: name.to_string(),
                refs: 0,
                body,
            },
        );
        self.next_id
    }

    fn get_ref(&mut self, id: u32) {
        if let Some(o) = self.objects.get_mut(&id) {
            o.refs += 1;
        }
    }

    /// Drops one reference; frees the object (and what it holds) at zero.
    fn put(&mut self, id: u32) {
        let Some(o) = self.objects.get_mut(&id) else {
            return;
        };
        o.refs = o.refs.saturating_sub(1);
        if o.refs > 0 {
            return;
        }
        let Some(o) = self.objects.remove(&id) else {
            return;
        };
        match o.body {
            Body::Map(m) if m.ty == MapType::ProgArray => {
                for v in m.data.values() {
                    self.put(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
                }
            }
            Body::Map(_) => {}
            Body::Prog(p) => p.maps.into_iter().for_each(|m| self.put(m)),
            Body::Link(l) => self.put(l.prog),
        }
    }

    /// The object behind an fd handed to the fake (map fd in an instruction, prog fd in a
    /// prog array update).
    fn resolve_fd(&self, raw: i32) -> Result<u32> {
        // SAFETY: only used for an fstat while the caller keeps the fd open; a closed or
        // foreign number just fails the lookup below.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let key = fd_key(fd).map_err(|_| errno("fake", libc::EBADF))?;
        self.handles
            .get(&key)
            .copied()
            .ok_or_else(|| errno("fake", libc::EBADF))
    }

    fn link_info(&self, o: &Obj) -> LinkInfo {
        let id = self
            .objects
            .iter()
            .find(|(_, x)| std::ptr::eq(*x, o))
            .map_or(0, |(id, _)| *id);
        match &o.body {
            Body::Link(l) => LinkInfo {
                id,
                link_type: libbpf_sys::BPF_LINK_TYPE_NETFILTER,
                prog_id: if l.detached { 0 } else { l.prog },
                pf: l.pf,
                hooknum: l.hooknum,
                priority: l.priority,
                flags: l.flags,
            },
            _ => LinkInfo {
                id,
                link_type: 0,
                prog_id: 0,
                pf: 0,
                hooknum: 0,
                priority: 0,
                flags: 0,
            },
        }
    }
}

/// A fake object handle: one memfd plus one reference on the object.
pub(crate) struct Handle {
    kernel: Arc<Kernel>,
    obj: u32,
    key: (u64, u64),
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHandle")
            .field("obj", &self.obj)
            .finish()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut st = self.kernel.state();
        st.handles.remove(&self.key);
        st.put(self.obj);
    }
}

impl Kernel {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new handle (memfd + reference) on object `obj`.
    fn handle(self: &Arc<Self>, st: &mut State, obj: u32) -> Result<(Handle, OwnedFd)> {
        // SAFETY: the name is NUL-terminated; memfd_create returns a new fd or -1.
        let raw = unsafe { libc::memfd_create(c"bpfltr-fake".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(errno("memfd_create", super::error::last_errno()));
        }
        // SAFETY: raw is a new fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let key = fd_key(fd.as_fd())?;
        st.handles.insert(key, obj);
        st.get_ref(obj);
        Ok((
            Handle {
                kernel: Arc::clone(self),
                obj,
                key,
            },
            fd,
        ))
    }

    pub(crate) fn map_create(
        self: &Arc<Self>,
        ty: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> Result<(Handle, OwnedFd)> {
        let flags = if ty == MapType::LpmTrie {
            libbpf_sys::BPF_F_NO_PREALLOC
        } else {
            0
        };
        self.map_create_flags(ty, key_size, value_size, max_entries, flags, name)
    }

    /// [`Kernel::map_create`] with creation flags (reported by `map_info`, not modelled).
    pub(crate) fn map_create_flags(
        self: &Arc<Self>,
        ty: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        flags: u32,
        name: &str,
    ) -> Result<(Handle, OwnedFd)> {
        // ringbuf_map_alloc: no key or value, a power-of-two number of pages
        let bad = if ty == MapType::RingBuf {
            key_size != 0
                || value_size != 0
                || !max_entries.is_power_of_two()
                || max_entries % 4096 != 0
        } else {
            max_entries == 0
                || key_size == 0
                || value_size == 0
                || (matches!(
                    ty,
                    MapType::Array | MapType::PercpuArray | MapType::ProgArray
                ) && key_size != 4)
                || (ty == MapType::ProgArray && value_size != 4)
        };
        if bad {
            return Err(errno("bpf_map_create", libc::EINVAL));
        }
        let mut st = self.state();
        let id = st.add(
            name,
            Body::Map(FakeMap {
                ty,
                key_size,
                value_size,
                max_entries,
                flags,
                data: BTreeMap::new(),
            }),
        );
        self.handle(&mut st, id).inspect_err(|_| st.put(id))
    }

    pub(crate) fn prog_load(
        self: &Arc<Self>,
        prog_type: u32,
        name: &str,
        insns: &[u8],
        log_level: u32,
    ) -> Result<(Handle, OwnedFd, String)> {
        let mut st = self.state();
        st.loads.push((name.to_string(), insns.to_vec()));
        if let Some((errno, log)) = st.load_failures.pop_front() {
            return Err(SysError::Load { errno, log });
        }
        if insns.len() < 8 || insns[insns.len() - 8] != 0x95 {
            return Err(SysError::Load {
                errno: libc::EINVAL,
                log: "last insn is not an exit or jmp\n".into(),
            });
        }
        // LD_IMM64 with src BPF_PSEUDO_MAP_FD (1): the imm is a map fd.
        let mut maps = Vec::new();
        let mut i = 0;
        while i + 16 <= insns.len() {
            if insns[i] == 0x18 && insns[i + 1] >> 4 == 1 {
                let fd =
                    i32::from_le_bytes([insns[i + 4], insns[i + 5], insns[i + 6], insns[i + 7]]);
                let obj = st.resolve_fd(fd).map_err(|e| SysError::Load {
                    errno: e.errno(),
                    log: format!("fd {fd} is not pointing to valid bpf_map\n"),
                })?;
                if !matches!(st.obj(obj)?.body, Body::Map(_)) {
                    return Err(SysError::Load {
                        errno: libc::EINVAL,
                        log: format!("fd {fd} is not a map\n"),
                    });
                }
                if !maps.contains(&obj) {
                    maps.push(obj);
                }
                i += 16;
            } else {
                i += 8;
            }
        }
        for m in &maps {
            st.get_ref(*m);
        }
        let id = st.add(
            name,
            Body::Prog(FakeProg {
                prog_type,
                insns: insns.to_vec(),
                maps,
            }),
        );
        let (h, fd) = self.handle(&mut st, id).inspect_err(|_| st.put(id))?;
        let log = if log_level > 0 {
            format!("processed {} insns (fake)\n", insns.len() / 8)
        } else {
            String::new()
        };
        Ok((h, fd, log))
    }

    pub(crate) fn link_create(
        self: &Arc<Self>,
        prog: &Handle,
        pf: u32,
        hooknum: u32,
        priority: i32,
        flags: u32,
    ) -> Result<(Handle, OwnedFd)> {
        let call = "bpf_link_create";
        if pf != 2 && pf != 10 {
            return Err(errno(call, libc::EAFNOSUPPORT));
        }
        if hooknum > 4 {
            return Err(errno(call, libc::EPROTO));
        }
        if priority == i32::MIN || priority == i32::MAX {
            return Err(errno(call, libc::ERANGE));
        }
        if flags & !super::NF_IP_DEFRAG != 0
            || (flags & super::NF_IP_DEFRAG != 0 && priority <= -400)
        {
            return Err(errno(call, libc::EINVAL));
        }
        let netns = current_netns_id()?;
        let mut st = self.state();
        st.gc_pins();
        if !matches!(st.obj(prog.obj)?.body, Body::Prog(_)) {
            return Err(errno(call, libc::EINVAL));
        }
        let busy = st.occupied.contains(&(netns, pf, hooknum, priority))
            || st.objects.values().any(|o| {
                matches!(&o.body, Body::Link(l) if !l.detached && l.netns == netns && l.pf == pf
                    && l.hooknum == hooknum && l.priority == priority)
            });
        if busy {
            return Err(errno(call, libc::EBUSY));
        }
        st.get_ref(prog.obj);
        let id = st.add(
            "",
            Body::Link(FakeLink {
                prog: prog.obj,
                pf,
                hooknum,
                priority,
                flags,
                netns,
                detached: false,
            }),
        );
        self.handle(&mut st, id).inspect_err(|_| st.put(id))
    }

    pub(crate) fn from_id(self: &Arc<Self>, id: u32, kind: ObjKind) -> Result<(Handle, OwnedFd)> {
        let mut st = self.state();
        st.gc_pins();
        match st.objects.get(&id) {
            Some(o) if kind_of(&o.body) == kind => self.handle(&mut st, id),
            _ => Err(SysError::not_found(format!("{kind:?} id {id}"))),
        }
    }

    fn marker(&self, id: u32) -> String {
        format!("bpfltr-fake {} {id}\n", self.serial)
    }

    pub(crate) fn from_pin(
        self: &Arc<Self>,
        path: &Path,
        kind: ObjKind,
    ) -> Result<(Handle, OwnedFd)> {
        let mut st = self.state();
        st.gc_pins();
        let Some(&id) = st.pins.get(path) else {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(_) => SysError::invalid(format!("{} is not a pin of this fake", path.display())),
                Err(_) => SysError::not_found(format!("pin {}", path.display())),
            });
        };
        if std::fs::read_to_string(path).ok().as_deref() != Some(self.marker(id).as_str()) {
            return Err(SysError::invalid(format!(
                "{} is not a pin of this fake",
                path.display()
            )));
        }
        if kind_of(&st.obj(id)?.body) != kind {
            return Err(SysError::invalid(format!(
                "pin {} is not a {kind:?}",
                path.display()
            )));
        }
        self.handle(&mut st, id)
    }

    pub(crate) fn ensure_dir(&self, root: &Path) -> Result<()> {
        std::fs::create_dir_all(root).map_err(|e| super::error::io_path("mkdir", root, &e))
    }

    pub(crate) fn remove_tree(&self, dir: &Path) -> Result<()> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(super::error::io_path("remove_dir_all", dir, &e)),
        }
        self.state().gc_pins();
        Ok(())
    }

    pub(crate) fn unpin(&self, path: &Path) -> Result<()> {
        let mut st = self.state();
        if !st.pins.contains_key(path) {
            return Err(SysError::not_found(format!("pin {}", path.display())));
        }
        std::fs::remove_file(path).map_err(|e| super::error::io_path("unlink", path, &e))?;
        st.gc_pins();
        Ok(())
    }

    pub(crate) fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

impl Handle {
    /// Another handle on the same object (try_clone).
    pub(crate) fn dup(&self) -> Result<(Handle, OwnedFd)> {
        let mut st = self.kernel.state();
        self.kernel.handle(&mut st, self.obj)
    }

    /// The fake this object lives in.
    pub(crate) fn kernel(&self) -> &Arc<Kernel> {
        &self.kernel
    }

    pub(crate) fn pin(&self, path: &Path) -> Result<()> {
        let mut st = self.kernel.state();
        let call = "bpf_obj_pin";
        let err = |e| SysError::Path {
            call,
            path: path.to_path_buf(),
            errno: e,
        };
        st.gc_pins();
        let marker = self.kernel.marker(self.obj);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path);
        match file.and_then(|mut f| std::io::Write::write_all(&mut f, marker.as_bytes())) {
            Ok(()) => {}
            Err(e) => return Err(err(e.raw_os_error().unwrap_or(libc::EIO))),
        }
        st.pins.insert(path.to_path_buf(), self.obj);
        st.get_ref(self.obj);
        Ok(())
    }

    pub(crate) fn id(&self) -> u32 {
        self.obj
    }

    pub(crate) fn map_info(&self) -> Result<MapInfo> {
        let mut st = self.kernel.state();
        let name = st.obj(self.obj)?.name.clone();
        let m = st.map_mut(self.obj)?;
        Ok(MapInfo {
            map_type: m.ty,
            id: self.obj,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            map_flags: m.flags,
            name,
        })
    }

    fn array_index(m: &FakeMap, key: &[u8]) -> Option<u32> {
        let is_array = matches!(
            m.ty,
            MapType::Array | MapType::PercpuArray | MapType::ProgArray
        );
        is_array.then(|| u32::from_ne_bytes([key[0], key[1], key[2], key[3]]))
    }

    /// Lookup into a buffer of the map's value_buf_len (checked by the caller).
    pub(crate) fn map_lookup(&self, key: &[u8], value: &mut [u8]) -> Result<()> {
        let mut st = self.kernel.state();
        let m = st.map_mut(self.obj)?;
        if let Some(i) = Self::array_index(m, key) {
            if i >= m.max_entries {
                return Err(errno("bpf_map_lookup_elem", libc::ENOENT));
            }
        }
        match m.data.get(key) {
            Some(v) => {
                value.copy_from_slice(v);
                Ok(())
            }
            None if matches!(m.ty, MapType::Array | MapType::PercpuArray) => {
                value.fill(0);
                Ok(())
            }
            None => Err(errno("bpf_map_lookup_elem", libc::ENOENT)),
        }
    }

    pub(crate) fn map_update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<()> {
        let call = "bpf_map_update_elem";
        let mut st = self.kernel.state();
        let mut value = value.to_vec();
        let ty = st.map_mut(self.obj)?.ty;
        let mut new_prog = None;
        if ty == MapType::ProgArray {
            let fd = i32::from_ne_bytes([value[0], value[1], value[2], value[3]]);
            let prog = st.resolve_fd(fd)?;
            match &st.obj(prog)?.body {
                Body::Prog(p) if p.prog_type == libbpf_sys::BPF_PROG_TYPE_NETFILTER => {}
                _ => return Err(errno(call, libc::EINVAL)),
            }
            value = prog.to_ne_bytes().to_vec();
            new_prog = Some(prog);
        }
        let m = st.map_mut(self.obj)?;
        let exists = match Self::array_index(m, key) {
            Some(i) if i >= m.max_entries => return Err(errno(call, libc::E2BIG)),
            Some(_) if ty != MapType::ProgArray => true,
            _ => m.data.contains_key(key),
        };
        if flags > update_flags::EXIST {
            return Err(errno(call, libc::EINVAL));
        }
        if flags == update_flags::NOEXIST && exists {
            return Err(errno(call, libc::EEXIST));
        }
        if flags == update_flags::EXIST && !exists {
            return Err(errno(call, libc::ENOENT));
        }
        if !exists && m.data.len() >= m.max_entries as usize {
            return Err(errno(call, libc::E2BIG));
        }
        let old = m.data.insert(key.to_vec(), value);
        if let Some(p) = new_prog {
            st.get_ref(p);
            if let Some(old) = old {
                st.put(u32::from_ne_bytes([old[0], old[1], old[2], old[3]]));
            }
        }
        Ok(())
    }

    pub(crate) fn map_delete(&self, key: &[u8]) -> Result<()> {
        let call = "bpf_map_delete_elem";
        let mut st = self.kernel.state();
        let m = st.map_mut(self.obj)?;
        if matches!(m.ty, MapType::Array | MapType::PercpuArray) {
            return Err(errno(call, libc::EINVAL));
        }
        let ty = m.ty;
        let old = m
            .data
            .remove(key)
            .ok_or_else(|| errno(call, libc::ENOENT))?;
        if ty == MapType::ProgArray {
            st.put(u32::from_ne_bytes([old[0], old[1], old[2], old[3]]));
        }
        Ok(())
    }

    pub(crate) fn map_next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        let mut st = self.kernel.state();
        let m = st.map_mut(self.obj)?;
        if matches!(
            m.ty,
            MapType::Array | MapType::PercpuArray | MapType::ProgArray
        ) {
            let next = match key {
                None => 0,
                Some(k) => u32::from_ne_bytes([k[0], k[1], k[2], k[3]]).saturating_add(1),
            };
            return Ok((next < m.max_entries).then(|| next.to_ne_bytes().to_vec()));
        }
        let mut it = match key {
            None => m.data.range::<Vec<u8>, _>(..),
            Some(k) => m.data.range::<Vec<u8>, _>((
                std::ops::Bound::Excluded(k.to_vec()),
                std::ops::Bound::Unbounded,
            )),
        };
        Ok(it.next().map(|(k, _)| k.clone()))
    }

    pub(crate) fn prog_info(&self) -> Result<(ProgInfo, Vec<u8>)> {
        let st = self.kernel.state();
        let o = st.obj(self.obj)?;
        let Body::Prog(p) = &o.body else {
            return Err(errno("bpf_prog_get_info_by_fd", libc::EINVAL));
        };
        let n = (p.insns.len() / 8) as u32;
        let mut tag = [0u8; 8];
        for (i, b) in p.insns.iter().enumerate() {
            tag[i % 8] = tag[i % 8].wrapping_mul(31).wrapping_add(*b);
        }
        let info = ProgInfo {
            id: self.obj,
            name: o.name.clone(),
            prog_type: p.prog_type,
            tag,
            xlated_insns: n,
            jited_bytes: n * 8,
            verified_insns: n,
            map_ids: p.maps.clone(),
        };
        Ok((info, p.insns.clone()))
    }

    pub(crate) fn test_run(&self, data: &[u8]) -> Result<TestRun> {
        let call = "bpf_prog_test_run_opts";
        if data.len() < 20 {
            return Err(errno(call, libc::EINVAL));
        }
        let st = self.kernel.state();
        let Body::Prog(p) = &st.obj(self.obj)?.body else {
            return Err(errno(call, libc::EINVAL));
        };
        if let Some(r) = st.test_run_retval {
            return Ok(TestRun {
                retval: r,
                duration_ns: 1,
            });
        }
        // `r0 = imm; exit` is the only program the fake can run by itself.
        if p.insns.len() == 16 && p.insns[0] == 0xb7 && p.insns[1] & 0xf == 0 && p.insns[8] == 0x95
        {
            let imm = u32::from_le_bytes([p.insns[4], p.insns[5], p.insns[6], p.insns[7]]);
            return Ok(TestRun {
                retval: imm,
                duration_ns: 1,
            });
        }
        Err(errno(call, libc::EOPNOTSUPP))
    }

    pub(crate) fn link_info(&self) -> Result<LinkInfo> {
        let st = self.kernel.state();
        let o = st.obj(self.obj)?;
        let mut info = st.link_info(o);
        info.id = self.obj;
        Ok(info)
    }

    pub(crate) fn link_detach(&self) -> Result<()> {
        let mut st = self.kernel.state();
        let prog = match st.objects.get_mut(&self.obj).map(|o| &mut o.body) {
            Some(Body::Link(l)) if !l.detached => {
                l.detached = true;
                l.prog
            }
            Some(Body::Link(_)) => return Err(errno("bpf_link_detach", libc::ENOLINK)),
            _ => return Err(errno("bpf_link_detach", libc::EINVAL)),
        };
        st.put(prog);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::insns;
    use crate::sys::{ensure_bpffs, in_netns, netns_id, remove_pins, Link, Map, Program};

    fn ret(v: i32) -> Vec<u8> {
        insns(&[(0xb7, 0, 0, 0, v), (0x95, 0, 0, 0, 0)])
    }

    /// A stand-in "namespace": any file works as long as the fake only fstat()s it.
    fn fake_ns() -> std::fs::File {
        tempfile_like()
    }

    fn tempfile_like() -> std::fs::File {
        // SAFETY: NUL-terminated name; returns a new fd or -1.
        let raw = unsafe { libc::memfd_create(c"bpfltr-fake-ns".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: raw is a new fd owned by nobody else.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    #[test]
    fn maps_programs_links_without_root() {
        let k = FakeKernel::install();
        let m = Map::create(MapType::PercpuArray, 4, 16, 8, "bpfltr_c").unwrap();
        let ncpu = crate::sys::num_possible_cpus().unwrap();
        let mut v = vec![0u8; 16 * ncpu];
        v[..8].copy_from_slice(&3u64.to_ne_bytes());
        m.update(&1u32.to_ne_bytes(), &v, 0).unwrap();
        assert_eq!(m.sum_percpu_u64(&1u32.to_ne_bytes()).unwrap(), vec![3, 0]);
        assert_eq!(m.sum_percpu_u64_all().unwrap().len(), 8);
        assert_eq!(
            m.update(&9u32.to_ne_bytes(), &v, 0).unwrap_err().errno(),
            libc::E2BIG
        );
        assert_eq!(m.info().unwrap().name, "bpfltr_c");

        // A program that references the map keeps it alive.
        let fd = m.fd().as_raw_fd();
        let code = insns(&[
            (0x18, 1, 1, 0, fd),
            (0, 0, 0, 0, 0),
            (0xb7, 0, 0, 0, 1),
            (0x95, 0, 0, 0, 0),
        ]);
        let (p, _) = Program::load_netfilter("bpfltr_p", &code, 0).unwrap();
        let map_id = m.id().unwrap();
        assert_eq!(p.info().unwrap().map_ids, vec![map_id]);
        drop(m);
        assert!(Map::from_id(map_id).is_ok());

        k.fail_next_load(libc::EACCES, "R0 invalid mem access");
        let e = Program::load_netfilter("bpfltr_p", &ret(1), 0).unwrap_err();
        assert!(
            matches!(&e, SysError::Load { errno, log } if *errno == libc::EACCES && log.contains("R0"))
        );
        let (acc, _) = Program::load_netfilter("bpfltr_a", &ret(1), 0).unwrap();
        assert_eq!(acc.test_run(&[0u8; 20], None, 1).unwrap().retval, 1);
        assert_eq!(k.loads().len(), 3);

        // Links: per-namespace EBUSY, argument errors, drop detaches.
        let (ns1, ns2) = (fake_ns(), fake_ns());
        let l = Link::netfilter_in(ns1.as_fd(), &acc, 2, 1, 5, 0).unwrap();
        let id1 = netns_id(ns1.as_fd()).unwrap();
        assert_eq!(
            Link::netfilter_in(ns1.as_fd(), &p, 2, 1, 5, 0)
                .unwrap_err()
                .errno(),
            libc::EBUSY
        );
        let l2 = Link::netfilter_in(ns2.as_fd(), &p, 2, 1, 5, 0).unwrap();
        assert_eq!(
            Link::netfilter_in(ns1.as_fd(), &p, 7, 1, 6, 0)
                .unwrap_err()
                .errno(),
            libc::EAFNOSUPPORT
        );
        assert_eq!(
            Link::netfilter_in(ns1.as_fd(), &p, 2, 5, 6, 0)
                .unwrap_err()
                .errno(),
            libc::EPROTO
        );
        k.occupy(id1, 2, 1, 0);
        assert_eq!(
            Link::netfilter_in(ns1.as_fd(), &p, 2, 1, 0, 0)
                .unwrap_err()
                .errno(),
            libc::EBUSY
        );
        let info = l.info().unwrap();
        assert_eq!(
            (info.pf, info.hooknum, info.priority, info.prog_id),
            (2, 1, 5, acc.id().unwrap())
        );
        assert_eq!(k.attached().len(), 2);
        drop(l2);
        assert_eq!(k.attached(), vec![(id1, info)]);

        // Pins keep objects (and attachments) alive; removing the tree frees them.
        let tmp = std::env::temp_dir().join(format!("bpfltr-fake-{}-a", std::process::id()));
        let root = tmp.as_path();
        assert_eq!(l.pin(root.join("link")).unwrap_err().errno(), libc::ENOENT);
        ensure_bpffs(root).unwrap();
        l.pin(root.join("link")).unwrap();
        // Plain std::fs sees the pin tree.
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 1);
        assert!(root.join("link").exists());
        assert_eq!(
            acc.pin(root.join("link")).unwrap_err().errno(),
            libc::EEXIST
        );
        drop(l);
        assert_eq!(k.attached().len(), 1);
        let again = Link::from_pin(root.join("link")).unwrap();
        assert_eq!(again.info().unwrap().priority, 5);
        assert_eq!(
            Map::from_pin(root.join("link")).unwrap_err().errno(),
            libc::EINVAL
        );
        drop(again);
        remove_pins(root).unwrap();
        assert!(!root.exists());
        assert!(k.attached().is_empty());
        assert!(k.pins().is_empty());
        // A pin removed with std::fs is gone for the fake too.
        ensure_bpffs(root).unwrap();
        p.pin(root.join("p")).unwrap();
        assert_eq!(k.pins(), vec![root.join("p")]);
        std::fs::remove_file(root.join("p")).unwrap();
        assert!(k.pins().is_empty());
        assert!(matches!(
            Program::from_pin(root.join("p")),
            Err(SysError::NotFound { .. })
        ));
        // A file that is not one of our markers is refused.
        std::fs::write(root.join("junk"), b"x").unwrap();
        assert_eq!(
            Program::from_pin(root.join("junk")).unwrap_err().errno(),
            libc::EINVAL
        );
        remove_pins(root).unwrap();
        drop((p, acc));
        assert_eq!(
            k.object_count(),
            0,
            "everything freed once no handle, pin or reference is left"
        );
    }

    #[test]
    fn prog_array_slots_hold_programs() {
        let k = FakeKernel::install();
        let pa = Map::create(MapType::ProgArray, 4, 4, 1, "bpfltr_pa").unwrap();
        let (p, _) = Program::load_netfilter("bpfltr_x", &ret(0), 0).unwrap();
        let pid = p.id().unwrap();
        pa.set_prog(0, &p).unwrap();
        drop(p);
        assert_eq!(pa.prog_id(0).unwrap(), Some(pid));
        assert!(Program::from_id(pid).is_ok(), "the slot keeps the program");
        pa.delete(&0u32.to_ne_bytes()).unwrap();
        assert_eq!(pa.prog_id(0).unwrap(), None);
        assert!(matches!(
            Program::from_id(pid),
            Err(SysError::NotFound { .. })
        ));
        // Handles work from other threads too, and in_netns threads see the fake.
        let t = std::thread::scope(|s| s.spawn(|| pa.info().unwrap().max_entries).join().unwrap());
        assert_eq!(t, 1);
        let ns = fake_ns();
        let n = in_netns(ns.as_fd(), || {
            Map::create(MapType::Array, 4, 4, 1, "bpfltr_in").map(|m| m.id())
        })
        .unwrap();
        assert!(n.unwrap().is_ok());
        drop(pa);
        assert_eq!(k.object_count(), 0);
    }
}
