//! Per-reactor free list of byte buffers, so steady-state request handling
//! allocates nothing and idle connections hold no buffers.

use crate::constants::{POOLED_BUF_MAX_BYTES, POOL_BUFS_MAX};

#[derive(Default)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
    /// Read buffers keep their length: they were zeroed once when first
    /// made and are only ever read into, so handing one out again needs no
    /// fresh zeroing (16 KiB of memset per request otherwise).
    read: Vec<Vec<u8>>,
}

impl BufPool {
    /// An empty buffer (len 0) with some capacity.
    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(4096))
    }

    /// A buffer of exactly `len` initialised bytes to read into.
    pub fn take_read(&mut self, len: usize) -> Vec<u8> {
        match self.read.pop() {
            Some(mut b) => {
                b.resize(len, 0);
                b
            }
            None => vec![0; len],
        }
    }

    pub fn give_read(&mut self, b: Vec<u8>) {
        if b.len() <= POOLED_BUF_MAX_BYTES && self.read.len() < POOL_BUFS_MAX {
            self.read.push(b);
        }
    }

    pub fn give(&mut self, mut b: Vec<u8>) {
        if b.capacity() <= POOLED_BUF_MAX_BYTES && self.free.len() < POOL_BUFS_MAX {
            b.clear();
            self.free.push(b);
        }
    }
}
