//! Byte blobs kept in pinned BPF ARRAY maps, so that a table's accepted ruleset and its counter
//! bases live beside its programs in bpffs: they survive a daemon restart (also after kill -9),
//! and removing the pins removes them with everything else.
//!
//! Layout: key 0 holds the blob length (u64); keys 1.. hold the bytes in 64 KiB chunks.

use std::path::Path;

use crate::sys::{self, Map, MapType};

const CHUNK: usize = 64 << 10;

/// A pinned byte store.
#[derive(Debug)]
pub struct BlobMap {
    map: Map,
}

impl BlobMap {
    /// A new store holding `bytes` (room for `capacity` bytes at least).
    pub fn create(name: &str, bytes: &[u8], capacity: usize) -> sys::Result<BlobMap> {
        let chunks = capacity.max(bytes.len()).div_ceil(CHUNK).max(1);
        let max_entries = u32::try_from(chunks + 1).map_err(|_| too_big())?;
        let map = Map::create(MapType::Array, 4, CHUNK as u32, max_entries, name)?;
        let store = BlobMap { map };
        store.write(bytes)?;
        Ok(store)
    }

    /// Opens a pinned store.
    pub fn open(path: &Path) -> sys::Result<BlobMap> {
        Ok(BlobMap {
            map: Map::from_pin(path)?,
        })
    }

    /// Pins the store at `path`.
    pub fn pin(&self, path: &Path) -> sys::Result<()> {
        self.map.pin(path)
    }

    /// Replaces the content. The length is written last, so a reader never sees a length that
    /// the chunks do not back.
    pub fn write(&self, bytes: &[u8]) -> sys::Result<()> {
        let capacity = (self.map.max_entries() as usize - 1) * CHUNK;
        if bytes.len() > capacity {
            return Err(too_big());
        }
        let mut chunk = vec![0u8; CHUNK];
        for (i, part) in bytes.chunks(CHUNK).enumerate() {
            chunk[..part.len()].copy_from_slice(part);
            chunk[part.len()..].fill(0);
            let key = u32::try_from(i + 1).map_err(|_| too_big())?;
            self.map.update(&key.to_ne_bytes(), &chunk, 0)?;
        }
        chunk.fill(0);
        chunk[..8].copy_from_slice(&(bytes.len() as u64).to_ne_bytes());
        self.map.update(&0u32.to_ne_bytes(), &chunk, 0)
    }

    /// The content.
    pub fn read(&self) -> sys::Result<Vec<u8>> {
        let mut chunk = vec![0u8; CHUNK];
        self.map.lookup(&0u32.to_ne_bytes(), &mut chunk)?;
        let len = u64::from_ne_bytes(chunk[..8].try_into().map_err(|_| too_big())?) as usize;
        let capacity = (self.map.max_entries() as usize - 1) * CHUNK;
        if len > capacity {
            return Err(sys::SysError::NotFound {
                what: format!("blob of {len} bytes in a store of {capacity}"),
            });
        }
        let mut out = Vec::with_capacity(len);
        for i in 0..len.div_ceil(CHUNK) {
            let key = u32::try_from(i + 1).map_err(|_| too_big())?;
            self.map.lookup(&key.to_ne_bytes(), &mut chunk)?;
            let take = (len - out.len()).min(CHUNK);
            out.extend_from_slice(&chunk[..take]);
        }
        Ok(out)
    }
}

fn too_big() -> sys::SysError {
    sys::SysError::Syscall {
        call: "blob store",
        errno: libc::E2BIG,
    }
}
