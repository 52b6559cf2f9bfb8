//! The main reactor: accepts connections and deals them to sub-reactors.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flashd_protocol::{date, ConnectionHeader, Head, ResponseEncoder};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::completion::Mailbox;
use crate::constants::{ACCEPTS_PER_TURN, POLL_WAIT_MAX};
use crate::stats::ServerStats;

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const ACCEPT_WAKER: Token = Token(1);

pub(crate) struct Acceptor<D> {
    pub listener: TcpListener,
    pub poll: Poll,
    pub boxes: Arc<[Mailbox<D>]>,
    pub stats: Arc<ServerStats>,
    pub max_connections: usize,
    pub shutdown: Arc<AtomicBool>,
}

impl<D> Acceptor<D> {
    pub fn run(mut self) {
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut self.listener, LISTENER, Interest::READABLE)
        {
            tracing::error!(error = %e, "cannot register listener");
            return;
        }
        // Kept open so that when the process runs out of descriptors we can
        // free one, accept the pending connection and close it, instead of
        // spinning on EMFILE with the connection stuck in the backlog.
        let mut reserve = File::open("/dev/null").ok();
        let mut events = Events::with_capacity(64);
        let mut next = 0usize;
        let n = self.boxes.len();
        let mut to_wake = vec![false; n];
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(POLL_WAIT_MAX)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "acceptor epoll failed");
                break;
            }
            if self.shutdown.load(Ordering::Acquire) {
                break;
            }
            date::refresh();
            // Edge-triggered: accept until WouldBlock, but hand over in
            // batches so reactors start serving during a connect storm.
            let mut drained = events.is_empty();
            while !drained {
                for _ in 0..ACCEPTS_PER_TURN {
                    match self.listener.accept() {
                        Ok((sock, addr)) => {
                            if self.stats.open.load(Ordering::Relaxed) >= self.max_connections {
                                self.refuse(sock, "connection limit reached");
                                continue;
                            }
                            let _ = sock.set_nodelay(true);
                            let mut item = Some((sock, addr));
                            for _ in 0..n {
                                let i = next % n;
                                next = next.wrapping_add(1);
                                match self.boxes[i].sockets.push(item.take().unwrap()) {
                                    Ok(()) => {
                                        to_wake[i] = true;
                                        break;
                                    }
                                    Err(back) => item = Some(back),
                                }
                            }
                            match item {
                                None => {
                                    self.stats.open.fetch_add(1, Ordering::Relaxed);
                                    self.stats.accepted.inc();
                                }
                                Some((sock, _)) => self.refuse(sock, "all reactors are saturated"),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::EMFILE) | Some(libc::ENFILE)
                            ) =>
                        {
                            tracing::warn!("out of file descriptors; shedding a connection");
                            reserve = None;
                            if let Ok((sock, _)) = self.listener.accept() {
                                self.refuse(sock, "out of file descriptors");
                            }
                            reserve = reserve.or_else(|| File::open("/dev/null").ok());
                        }
                        // ECONNABORTED and friends concern one peer only.
                        Err(_) => {}
                    }
                }
                for (i, w) in to_wake.iter_mut().enumerate() {
                    if std::mem::take(w) {
                        self.boxes[i].wake();
                    }
                }
            }
        }
        // Dropping the listener closes it: new connections are refused by
        // the kernel from here on.
        drop(self.listener);
        drop(reserve);
    }

    /// A polite, immediate no: one 503 with `Connection: close`, then close.
    fn refuse(&self, mut sock: TcpStream, why: &str) {
        self.stats.refused.inc();
        // Read what the client already sent, so closing does not turn into
        // a reset that destroys our answer before it is read.
        let mut scratch = [0u8; 4096];
        let _ = sock.read(&mut scratch);
        let mut out = Vec::with_capacity(256);
        let head = Head {
            status: 503,
            content_type: "application/json",
            connection: ConnectionHeader::Close,
            extra: &[("Retry-After", "1")],
            // Refused before its request is read: its method is unknown.
            omit_body: false,
        };
        ResponseEncoder::write_error(&mut out, &head, "overloaded", why);
        let _ = sock.write(&out);
        let _ = sock.shutdown(std::net::Shutdown::Write);
    }
}
