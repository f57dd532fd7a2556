//! Page-aligned byte buffers. On this machine `read()` into a buffer 16 bytes past a page
//! boundary (where the allocator puts a large `Vec`) runs several times slower than into an
//! aligned one (BENCHMARKS.md §7), so transfers go through these.

use std::ops::Deref;

/// Alignment of every buffer.
pub(crate) const PAGE: usize = 4096;

/// A heap buffer whose contents start on a page boundary; safe code only (the alignment comes
/// from over-allocating and starting at `align_offset`).
#[derive(Clone)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    pub(crate) fn zeroed(len: usize) -> Self {
        let raw = vec![0u8; len + PAGE];
        let off = raw.as_ptr().align_offset(PAGE).min(PAGE);
        AlignedBuf { raw, off, len }
    }

    /// The whole buffer, writable.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }

    /// The bytes, copied into a plain `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.deref().to_vec()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

impl PartialEq<[u8]> for AlignedBuf {
    fn eq(&self, other: &[u8]) -> bool {
        self.deref() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_a_page_boundary() {
        for len in [0, 1, 4095, 4096, 1 << 20] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_mut_slice().as_ptr() as usize % PAGE, 0);
            assert_eq!(b.len(), len);
        }
    }
}
