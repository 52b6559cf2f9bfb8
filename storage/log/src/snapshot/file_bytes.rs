//! A snapshot file's bytes, mapped read-only.

use std::path::Path;

use crate::error::LogError;

/// A snapshot file's bytes, mapped rather than read: start-up then reads
/// them straight out of the page cache, without copying half a gigabyte
/// into a fresh buffer first (that copy and its page faults were a quarter
/// of start-up). Snapshots are only ever replaced by rename and removed by
/// unlink, never truncated in place, so the mapping stays valid.
///
/// Lean (the follower's load, in the background): not populated up front,
/// and each block's pages are let go once read ([`FileBytes::done_with`]),
/// so the mapping adds a block or so to the process's resident memory
/// instead of the whole file (hundreds of MB at millions of orders, on
/// top of the live engine and the follower's own).
pub(super) struct FileBytes {
    ptr: *mut libc::c_void,
    len: usize,
    lean: bool,
}

// SAFETY: a read-only private mapping, never written through.
unsafe impl Send for FileBytes {}
unsafe impl Sync for FileBytes {}

impl FileBytes {
    pub(super) fn open(path: &Path, lean: bool) -> Result<FileBytes, LogError> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).map_err(|e| LogError::io(path, e))?;
        let len = f.metadata().map_err(|e| LogError::io(path, e))?.len() as usize;
        if len == 0 {
            return Ok(FileBytes {
                ptr: std::ptr::null_mut(),
                len: 0,
                lean,
            });
        }
        // SAFETY: a fresh read-only mapping of a file we opened; checked
        // for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                if lean {
                    libc::MAP_PRIVATE
                } else {
                    libc::MAP_PRIVATE | libc::MAP_POPULATE
                },
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(LogError::io(path, std::io::Error::last_os_error()));
        }
        Ok(FileBytes { ptr, len, lean })
    }

    /// A lean mapping lets the pages of `[off, off + n)` go (they are read
    /// again from the page cache if touched again). Widened to whole
    /// pages: a shared edge page is at worst read twice.
    pub(super) fn done_with(&self, off: usize, n: usize) {
        if !self.lean || self.len == 0 {
            return;
        }
        // SAFETY: sysconf has no memory arguments.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096);
        let start = off.min(self.len) & !(page - 1);
        let end = (off.saturating_add(n).min(self.len) + page - 1) & !(page - 1);
        if end > start {
            // SAFETY: the range lies in (whole pages of) this mapping, which
            // is private, read-only and never written: dropping its pages
            // changes no byte a reader sees (the file is not modified while
            // mapped: snapshots are replaced by rename, under the directory
            // lock), it only makes the next read fault them back in.
            unsafe {
                libc::madvise(
                    self.ptr.cast::<u8>().add(start).cast(),
                    end - start,
                    libc::MADV_DONTNEED,
                )
            };
        }
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for FileBytes {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly what `open` mapped.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}
