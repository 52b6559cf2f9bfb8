//! One process per data directory. Two flashd processes on one `log.dir`
//! or `data_dir` would interleave their segments and snapshots, cut each
//! other's files (a file truncated under the other's snapshot mapping
//! raises SIGBUS), and both believe they own the order log.
//!
//! [`DirLock::acquire`] takes an exclusive, non-blocking `flock` on
//! `flashd.lock` in the directory and writes the holder's pid into it, so a
//! second process is refused with the pid of the one that has it. The lock
//! belongs to the open file: it is released when the [`DirLock`] is
//! dropped or the process dies, however it dies (no stale lock to clean
//! up after a `kill -9`). The file itself is left in place: removing it
//! would let a process that opened the old file and one that creates a
//! new one both "hold" the lock. It is not inherited by child processes
//! (Rust opens files close-on-exec).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// The lock file's name inside the locked directory.
pub const LOCK_FILE: &str = "flashd.lock";

/// Longest holder record read back from a lock file: a pid and a newline
/// need a dozen bytes; anything longer is not ours and is not printed.
const HOLDER_BYTES_MAX: u64 = 64;

/// An exclusive lock on a directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    /// Holds the lock: closing it releases it.
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Lock `dir` (created if missing) for this process, or say who holds
    /// it: [`LogError::Locked`] with the holder's pid when it wrote one.
    pub fn acquire(dir: &Path) -> Result<DirLock, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        // No truncation on open: until the lock is ours the file holds the
        // current holder's pid, which a refusal reads back.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        // SAFETY: flock on a descriptor this function owns; no memory is
        // passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LogError::Locked {
                    pid: read_holder(&mut file),
                    path,
                });
            }
            return Err(LogError::io(&path, err));
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(format!("{pid}\n").as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| LogError::io(&path, e))?;
        Ok(DirLock { _file: file, path })
    }

    /// Lock each directory once: `dirs` that are the same directory (by
    /// canonical path, e.g. a `log.dir` equal to `data_dir`) share one
    /// lock, which a second `acquire` in this process would refuse.
    pub fn acquire_all(dirs: &[&Path]) -> Result<Vec<DirLock>, LogError> {
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut locks = Vec::new();
        for dir in dirs {
            std::fs::create_dir_all(dir).map_err(|e| LogError::io(*dir, e))?;
            let canon = std::fs::canonicalize(dir).map_err(|e| LogError::io(*dir, e))?;
            if seen.contains(&canon) {
                continue;
            }
            locks.push(DirLock::acquire(&canon)?);
            seen.push(canon);
        }
        Ok(locks)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid a holder wrote, if the file holds one (it may be empty for a
/// moment between a holder's lock and its write).
fn read_holder(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(HOLDER_BYTES_MAX).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}
