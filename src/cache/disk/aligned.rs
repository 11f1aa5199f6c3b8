//! A heap buffer aligned for `O_DIRECT` ([`ALIGN`] bytes: address, and length rounded up),
//! usable as a monoio owned buffer and turned into `bytes::Bytes` with no copy.
//!
//! Not a hot-path cost by itself: one `alloc_zeroed` per disk read or write (a disk read costs
//! ~10-100 us; the allocation ~100 ns). DESIGN section 3: `Vec`/`BytesMut` are not aligned
//! under glibc (tests, benches) but happen to be under mimalloc (the binary), so code built on
//! them works in production and fails in tests; this type is aligned everywhere.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment of every disk buffer, file offset and I/O length, bytes. 4096 covers every
/// logical block size in use (512 on these VMs, 4096 on 4Kn drives; `statx(STATX_DIOALIGN)`).
pub const ALIGN: usize = 4096;

/// `n` rounded up to a multiple of [`ALIGN`].
pub const fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// `n` rounded down to a multiple of [`ALIGN`].
pub const fn align_down(n: u64) -> u64 {
    n - n % ALIGN as u64
}

/// A zeroed, [`ALIGN`]-aligned buffer of a fixed capacity (a multiple of [`ALIGN`]), with an
/// initialised length (`len`) as monoio's owned-buffer traits expect.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively (no aliasing pointer escapes except
// through `&self`/`&mut self` borrows), like a `Vec<u8>`; moving it to another thread (the
// blocking pool, or inside `Bytes` to another core) is sound.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads the bytes (`as_ref`), as with `Vec<u8>`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of at least `cap` bytes (rounded up to [`ALIGN`], at least one block),
    /// with `len` 0.
    pub fn zeroed(cap: usize) -> AlignedBuf {
        let cap = align_up(cap.max(1));
        let layout = Layout::from_size_align(cap, ALIGN).expect("aligned layout");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, cap, len: 0 }
    }

    /// Capacity, bytes (a multiple of [`ALIGN`]).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Initialised length, bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is initialised.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Set the initialised length (bytes past it are zero or earlier data, never
    /// uninitialised: the allocation is zeroed). Panics past the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "AlignedBuf::set_len past capacity");
        self.len = len;
    }

    /// The whole capacity as a mutable slice (for encoding).
    pub fn as_mut_full(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is `cap` bytes, zero-initialised, and borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len <= cap` bytes of the zeroed allocation, borrowed shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("aligned layout");
        // SAFETY: allocated in `zeroed` with this very layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

// SAFETY: `read_ptr` points at `bytes_init()` initialised bytes that stay valid and unmoved
// while the buffer is owned by an operation (the allocation never moves).
unsafe impl monoio::buf::IoBuf for AlignedBuf {
    fn read_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len
    }
}

// SAFETY: `write_ptr` points at `bytes_total()` writable bytes of the owned allocation, which
// never moves; `set_init` only records how many the kernel wrote.
unsafe impl monoio::buf::IoBufMut for AlignedBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn bytes_total(&mut self) -> usize {
        self.cap
    }

    unsafe fn set_init(&mut self, pos: usize) {
        self.len = pos.min(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed_at_every_size() {
        for cap in [1, 511, 4096, 4097, 200 * 1024] {
            let mut b = AlignedBuf::zeroed(cap);
            assert_eq!(b.as_mut_full().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.capacity() % ALIGN, 0);
            assert!(b.capacity() >= cap);
            assert!(b.as_mut_full().iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn bytes_from_owner_keeps_the_bytes() {
        let mut b = AlignedBuf::zeroed(8192);
        b.as_mut_full()[..5].copy_from_slice(b"hello");
        b.set_len(5);
        let bytes = bytes::Bytes::from_owner(b);
        assert_eq!(&bytes[..], b"hello");
    }
}
