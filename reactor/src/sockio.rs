//! A connection's reads and writes as plain system calls.
//!
//! glibc's `recv` and `send` (what `std`'s and mio's `TcpStream` call) are
//! thread-cancellation points: each wraps its system call in
//! `__pthread_enable_asynccancel`/`__pthread_disable_asynccancel`, ~60
//! instructions a call on top of the wrapper (callgrind of a `GET` of a
//! sale: ~120 of its ~3,240 instructions, one read and one write a
//! request). flashd never cancels a thread, so the reactor's hot reads and
//! writes go through `syscall(2)`, which keeps none of that bookkeeping.
//! Same calls, same flags (`MSG_NOSIGNAL` on writes, as `std` sets), same
//! errors (`errno` as an `io::Error`, so `WouldBlock` and `Interrupted`
//! read as before).

use std::io;
use std::os::fd::RawFd;

/// `recvfrom(fd, buf, len, 0, NULL, NULL)`.
#[inline]
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call; no address is asked for (both pointers null).
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    result(n)
}

/// `sendto(fd, buf, len, MSG_NOSIGNAL, NULL, 0)`: a peer gone is `EPIPE`,
/// never a `SIGPIPE`.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole
    // call; no address is given.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    result(n)
}

#[inline]
fn result(n: libc::c_long) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    /// Bytes both ways over a real socket pair, `WouldBlock` on an empty
    /// non-blocking socket, the end of stream as 0, and `EPIPE` (not a
    /// signal) writing to a closed peer.
    #[test]
    fn reads_and_writes_like_the_std_calls() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let e = recv(b.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"ping").unwrap();
        let mut got = 0;
        while got < 4 {
            match recv(b.as_raw_fd(), &mut buf[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(&buf[..4], b"ping");
        assert_eq!(send(b.as_raw_fd(), b"pong").unwrap(), 4);
        let mut back = [0u8; 4];
        a.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"pong");
        drop(a);
        // The peer closed: reads end, and writes fail with EPIPE or
        // ECONNRESET once the kernel knows, never by a signal.
        let mut end = None;
        for _ in 0..1000 {
            match recv(b.as_raw_fd(), &mut buf) {
                Ok(n) => {
                    end = Some(n);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(end, Some(0));
        let mut failed = false;
        for _ in 0..100 {
            if send(b.as_raw_fd(), b"x").is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(failed, "writing to a closed peer fails");
    }
}
