//! Reading a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) through libbpf's consumer
//! (`ring_buffer__new` / `ring_buffer__poll`): epoll on the map fd, then every sample the
//! producers committed, in order.

use std::ffi::c_void;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use super::error::{last_errno, Result, SysError};
use super::map::Map;

/// A consumer of one ring buffer map. Samples are copied out of the shared pages before the
/// consumer position moves past them, so [`RingBuf::poll`] hands out owned bytes.
pub struct RingBuf {
    rb: NonNull<libbpf_sys::ring_buffer>,
    /// Where the callback appends samples; boxed so that its address, given to libbpf as the
    /// callback context, stays fixed when the RingBuf moves.
    #[allow(
        clippy::box_collection,
        reason = "the Vec's own address is the callback context"
    )]
    samples: Box<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuf").finish_non_exhaustive()
    }
}

// SAFETY: the libbpf consumer is owned exclusively by this value and used through `&mut self`
// only; libbpf keeps no thread-local state for it.
unsafe impl Send for RingBuf {}

/// libbpf's sample callback: copies the sample into the `Vec<Vec<u8>>` behind `ctx`.
unsafe extern "C" fn on_sample(ctx: *mut c_void, data: *mut c_void, size: u64) -> i32 {
    let Ok(size) = usize::try_from(size) else {
        return 0;
    };
    // SAFETY: ctx is the address of the boxed Vec owned by the RingBuf being polled (see
    // RingBuf::new), which `poll` borrows mutably for the duration of ring_buffer__poll; data
    // points to `size` readable bytes of a committed sample for the duration of the call.
    let (samples, bytes) = unsafe {
        (
            &mut *ctx.cast::<Vec<Vec<u8>>>(),
            std::slice::from_raw_parts(data.cast::<u8>(), size),
        )
    };
    samples.push(bytes.to_vec());
    0
}

impl RingBuf {
    /// A consumer of the ring buffer `map` (which must be a BPF_MAP_TYPE_RINGBUF).
    pub fn new(map: &Map) -> Result<RingBuf> {
        let mut samples: Box<Vec<Vec<u8>>> = Box::default();
        let ctx = std::ptr::from_mut::<Vec<Vec<u8>>>(&mut samples).cast::<c_void>();
        // SAFETY: a valid map fd; the callback matches ring_buffer_sample_fn; ctx stays valid
        // as long as the returned consumer (both live in the RingBuf); NULL opts is allowed.
        let rb = unsafe {
            libbpf_sys::ring_buffer__new(
                map.fd().as_raw_fd(),
                Some(on_sample),
                ctx,
                std::ptr::null(),
            )
        };
        match NonNull::new(rb) {
            Some(rb) => Ok(RingBuf { rb, samples }),
            None => Err(SysError::Syscall {
                call: "ring_buffer__new",
                errno: last_errno(),
            }),
        }
    }

    /// Waits up to `timeout_ms` for a wakeup, then returns every sample available (possibly
    /// none), including those submitted without a wakeup. EINTR counts as no sample.
    pub fn poll(&mut self, timeout_ms: i32) -> Result<Vec<Vec<u8>>> {
        // SAFETY: rb is valid; the callback only touches self.samples, which `&mut self`
        // keeps exclusively ours during the call.
        let n = unsafe { libbpf_sys::ring_buffer__poll(self.rb.as_ptr(), timeout_ms) };
        if n < 0 && -n != libc::EINTR {
            return Err(SysError::Syscall {
                call: "ring_buffer__poll",
                errno: -n,
            });
        }
        // Records submitted with BPF_RB_NO_WAKEUP never make the fd ready: read whatever
        // the producers committed, woken or not.
        // SAFETY: as above.
        let n = unsafe { libbpf_sys::ring_buffer__consume(self.rb.as_ptr()) };
        if n < 0 {
            return Err(SysError::Syscall {
                call: "ring_buffer__consume",
                errno: -n,
            });
        }
        Ok(std::mem::take(&mut *self.samples))
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        // SAFETY: rb came from ring_buffer__new and is freed exactly once, here.
        unsafe { libbpf_sys::ring_buffer__free(self.rb.as_ptr()) }
    }
}
