//! Binding, starting and stopping the reactors.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::accept::{Acceptor, ACCEPT_WAKER};
use crate::completion::{Completer, Mailbox};
use crate::config::ServerConfig;
use crate::constants::ACCEPT_RING;
use crate::stats::ServerStats;
use crate::sub::{SubReactor, WAKER};
use crate::Handler;

/// A bound, not yet running server. Binding first lets start-up errors
/// (address in use, bad permissions) surface before any thread starts, and
/// lets the caller wire completers into its worker pools before requests
/// can arrive.
pub struct Server<D> {
    cfg: ServerConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    polls: Vec<Poll>,
    accept_poll: Poll,
    accept_waker: Arc<Waker>,
    boxes: Arc<[Mailbox<D>]>,
    stats: Arc<ServerStats>,
}

impl<D: Send + 'static> Server<D> {
    pub fn bind(cfg: ServerConfig) -> io::Result<Self> {
        assert!(
            cfg.sub_reactors >= 1,
            "sub_reactors must be resolved before bind"
        );
        let sock = Socket::new(
            Domain::for_address(cfg.listen),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&cfg.listen.into())?;
        sock.listen(cfg.backlog)?;
        let std_listener: std::net::TcpListener = sock.into();
        let local_addr = std_listener.local_addr()?;
        let listener = TcpListener::from_std(std_listener);

        let mut polls = Vec::with_capacity(cfg.sub_reactors);
        let mut boxes = Vec::with_capacity(cfg.sub_reactors);
        for _ in 0..cfg.sub_reactors {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            boxes.push(Mailbox {
                completions: ArrayQueue::new(cfg.completion_ring.max(1)),
                sockets: ArrayQueue::new(ACCEPT_RING),
                waker,
                wake_pending: CachePadded::new(AtomicBool::new(false)),
            });
            polls.push(poll);
        }
        let accept_poll = Poll::new()?;
        let accept_waker = Arc::new(Waker::new(accept_poll.registry(), ACCEPT_WAKER)?);
        let stats = Arc::new(ServerStats::new(cfg.sub_reactors));
        Ok(Server {
            cfg,
            listener,
            local_addr,
            polls,
            accept_poll,
            accept_waker,
            boxes: boxes.into(),
            stats,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    pub fn completer(&self) -> Completer<D> {
        Completer {
            boxes: self.boxes.clone(),
        }
    }

    /// Start the acceptor and the sub-reactors. `factory(i)` runs on
    /// sub-reactor `i`'s own thread and builds its handler there.
    pub fn start<H, F>(self, factory: F) -> io::Result<ServerHandle>
    where
        H: Handler<Deferred = D>,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let shutdown = Arc::new(AtomicBool::new(false));
        let factory = Arc::new(factory);
        let cores = if self.cfg.pin_cpus {
            // Lists only the CPUs this process may run on (sched_getaffinity),
            // so taskset/cgroup limits are honoured.
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        if self.cfg.pin_cpus && cores.is_empty() {
            tracing::warn!(
                "pin_cpus is set but the allowed CPU set could not be read; not pinning"
            );
        }
        let mut threads = Vec::with_capacity(self.cfg.sub_reactors + 1);
        for (id, poll) in self.polls.into_iter().enumerate() {
            let sub_boxes = self.boxes.clone();
            let stats = self.stats.clone();
            let cfg = self.cfg.clone();
            let shutdown = shutdown.clone();
            let factory = factory.clone();
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let t = std::thread::Builder::new()
                .name(format!("flashd-reactor-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::warn!(reactor = id, core = core.id, "could not pin reactor");
                        }
                    }
                    let handler = factory(id);
                    SubReactor {
                        id,
                        poll,
                        boxes: sub_boxes,
                        stats,
                        cfg,
                        shutdown,
                        handler,
                    }
                    .run();
                })?;
            threads.push(t);
        }
        let acceptor = Acceptor {
            listener: self.listener,
            poll: self.accept_poll,
            boxes: self.boxes.clone(),
            stats: self.stats.clone(),
            max_connections: self.cfg.max_connections,
            shutdown: shutdown.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("flashd-accept".into())
                .spawn(move || acceptor.run())?,
        );
        let boxes = self.boxes.clone();
        let accept_waker = self.accept_waker.clone();
        Ok(ServerHandle {
            threads,
            shutdown,
            wake_all: Box::new(move || {
                let _ = accept_waker.wake();
                for b in boxes.iter() {
                    let _ = b.waker.wake();
                }
            }),
            stats: self.stats,
            local_addr: self.local_addr,
        })
    }
}

/// A running server.
pub struct ServerHandle {
    threads: Vec<JoinHandle<()>>,
    shutdown: Arc<AtomicBool>,
    wake_all: Box<dyn Fn() + Send + Sync>,
    stats: Arc<ServerStats>,
    local_addr: SocketAddr,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// Stop accepting; reactors answer what is in flight (responses now say
    /// `Connection: close`), close idle connections, and exit once empty or
    /// when the grace period ends.
    pub fn shutdown(&self) {
        self.stats.shutting_down.store(true, Ordering::Release);
        self.shutdown.store(true, Ordering::Release);
        (self.wake_all)();
    }

    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Wait for every thread; `Err` if one panicked.
    pub fn join(self) -> Result<(), String> {
        let mut err = Ok(());
        for t in self.threads {
            let name = t.thread().name().unwrap_or("?").to_string();
            if t.join().is_err() {
                err = Err(format!("thread {name} panicked"));
            }
        }
        err
    }
}
