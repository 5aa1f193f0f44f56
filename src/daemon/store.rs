//! Byte blobs kept in pinned BPF ARRAY maps, so that a table's accepted ruleset and its counter
//! bases live beside its programs in bpffs: they survive a daemon restart (also after kill -9),
//! and removing the pins removes them with everything else.
//!
//! Layout: key 0 holds the blob length (u64); keys 1.. hold the bytes in chunks of the map's
//! value size: the capacity rounded up to a power of two between 64 bytes and 64 KiB, so that
//! a small blob (a small table's slots and bases) costs a small map, not 128 KiB to allocate,
//! zero and copy on every change.

use std::path::Path;

use crate::sys::{self, Map, MapType};

/// Largest chunk (value size).
const CHUNK: usize = 64 << 10;
/// Smallest chunk: room for the length word and then some.
const MIN_CHUNK: usize = 64;

/// A pinned byte store.
#[derive(Debug)]
pub struct BlobMap {
    map: Map,
}

impl BlobMap {
    /// A new store holding `bytes` (room for `capacity` bytes at least).
    pub fn create(name: &str, bytes: &[u8], capacity: usize) -> sys::Result<BlobMap> {
        let capacity = capacity.max(bytes.len());
        let chunk = capacity.next_power_of_two().clamp(MIN_CHUNK, CHUNK);
        let chunks = capacity.div_ceil(chunk).max(1);
        let max_entries = u32::try_from(chunks + 1).map_err(|_| too_big())?;
        let map = Map::create(MapType::Array, 4, chunk as u32, max_entries, name)?;
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
        let size = self.chunk();
        let capacity = (self.map.max_entries() as usize - 1) * size;
        if bytes.len() > capacity {
            return Err(too_big());
        }
        let mut chunk = vec![0u8; size];
        for (i, part) in bytes.chunks(size).enumerate() {
            let key = u32::try_from(i + 1).map_err(|_| too_big())?;
            // whole chunks go as they are; the last one, short, padded with zeros
            let value = if part.len() == size {
                part
            } else {
                chunk[..part.len()].copy_from_slice(part);
                chunk[part.len()..].fill(0);
                &chunk
            };
            self.map.update(&key.to_ne_bytes(), value, 0)?;
        }
        chunk.fill(0);
        chunk[..8].copy_from_slice(&(bytes.len() as u64).to_ne_bytes());
        self.map.update(&0u32.to_ne_bytes(), &chunk, 0)
    }

    /// The content.
    pub fn read(&self) -> sys::Result<Vec<u8>> {
        let size = self.chunk();
        let mut chunk = vec![0u8; size];
        self.map.lookup(&0u32.to_ne_bytes(), &mut chunk)?;
        let len = u64::from_ne_bytes(chunk[..8].try_into().map_err(|_| too_big())?) as usize;
        let capacity = (self.map.max_entries() as usize - 1) * size;
        if len > capacity {
            return Err(sys::SysError::NotFound {
                what: format!("blob of {len} bytes in a store of {capacity}"),
            });
        }
        let mut out = Vec::with_capacity(len);
        for i in 0..len.div_ceil(size) {
            let key = u32::try_from(i + 1).map_err(|_| too_big())?;
            self.map.lookup(&key.to_ne_bytes(), &mut chunk)?;
            let take = (len - out.len()).min(size);
            out.extend_from_slice(&chunk[..take]);
        }
        Ok(out)
    }
}

impl BlobMap {
    /// Bytes per chunk (the map's value size; stores pinned by older daemons have 64 KiB).
    fn chunk(&self) -> usize {
        self.map.value_size() as usize
    }
}

fn too_big() -> sys::SysError {
    sys::SysError::Syscall {
        call: "blob store",
        errno: libc::E2BIG,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use crate::sys::fake::FakeKernel;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn blobs_come_back_whole_in_chunks_sized_to_them() {
        let _kernel = FakeKernel::install();
        for (len, capacity, chunk) in [
            (0, 0, MIN_CHUNK),
            (40, 40, MIN_CHUNK),
            (160, 160, 256),
            (4096, 4096, 4096),
            (70_000, 70_000, CHUNK),
            (200_000, 300_000, CHUNK),
        ] {
            let data = bytes(len);
            let store = BlobMap::create("bpfltr_t_blob", &data, capacity).unwrap();
            assert_eq!(store.chunk(), chunk, "{len} bytes");
            assert_eq!(store.read().unwrap(), data, "{len} bytes");
            // rewritten shorter, then as long as it may be
            store.write(&data[..len / 2]).unwrap();
            assert_eq!(store.read().unwrap(), &data[..len / 2]);
            let room = (store.map.max_entries() as usize - 1) * chunk;
            let full = bytes(room);
            store.write(&full).unwrap();
            assert_eq!(store.read().unwrap(), full);
            assert_eq!(
                store.write(&bytes(room + 1)).unwrap_err().errno(),
                libc::E2BIG
            );
            assert_eq!(
                store.read().unwrap(),
                full,
                "a refused write changes nothing"
            );
        }
    }

    #[test]
    fn stores_of_older_daemons_are_read_by_their_own_chunk_size() {
        let _kernel = FakeKernel::install();
        // 64 KiB chunks whatever the size, as every store had them
        let map = Map::create(MapType::Array, 4, CHUNK as u32, 3, "bpfltr_t_old").unwrap();
        let store = BlobMap { map };
        let data = bytes(100_000);
        store.write(&data).unwrap();
        assert_eq!(store.read().unwrap(), data);
    }
}
