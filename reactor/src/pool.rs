//! Per-reactor free list of byte buffers, so steady-state request handling
//! allocates nothing and idle connections hold no buffers.

use crate::constants::{POOLED_BUF_MAX_BYTES, POOL_BUFS_MAX};

#[derive(Default)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
}

impl BufPool {
    /// An empty buffer (len 0) with some capacity.
    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(4096))
    }

    /// A zero-filled buffer of exactly `len` bytes for reading into.
    pub fn take_filled(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.take();
        b.clear();
        b.resize(len, 0);
        b
    }

    pub fn give(&mut self, mut b: Vec<u8>) {
        if b.capacity() <= POOLED_BUF_MAX_BYTES && self.free.len() < POOL_BUFS_MAX {
            b.clear();
            self.free.push(b);
        }
    }
}
