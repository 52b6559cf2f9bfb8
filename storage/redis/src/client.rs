//! The client: a thread of its own that owns the one connection to Redis,
//! fed by a bounded queue. Callers submit a batch and get a [`Pending`]
//! answer back; they never touch the socket.
//!
//! Threads: submitting never blocks (a full queue is
//! [`RedisError::Busy`] at once), but [`Pending::wait`] blocks the caller
//! until the answer or the timeout. Call it from a worker thread, never
//! from a reactor: a reactor that must not block submits, keeps the
//! [`Pending`], and polls it with [`Pending::poll`].
//!
//! Failures close: a request is answered within `timeout` (queued, sent,
//! decided) or fails with a typed error naming Redis's address and the
//! operation; a request that waited in the queue past its deadline is not
//! sent at all. A broken connection is dropped and the next request
//! reconnects; nothing is retried behind the caller's back (every
//! operation is idempotent, so the caller's own retry is safe).

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flashd_engine::{ActivityId, Event, Millis};
use redis::{Connection, ErrorKind};

use crate::decision::{Buy, Claim, Decision, Settle, Settled};
use crate::durability::DurabilityReport;
use crate::error::RedisError;
use crate::reconcile::{SaleSpec, SaleState};
use crate::{keys, script};

/// How to reach Redis and how long to wait for it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// The most a decision (buy, pay, cancel, expire, sale creation) may
    /// take, queue included: past it the caller hears
    /// [`RedisError::Timeout`] (fail closed).
    pub timeout: Duration,
    /// The same for reads of a whole sale, repairs and the durability
    /// check, which move a whole sale at once.
    pub admin_timeout: Duration,
    /// Requests waiting for the thread at most.
    pub queue: usize,
    /// This node's id (`engine.node_id`), stored in the claims it makes.
    pub node: u16,
}

impl ClientConfig {
    /// A config with a 250 ms decision timeout, 30 s for admin calls and a
    /// queue of 1024.
    pub fn new(url: impl Into<String>, node: u16) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            timeout: Duration::from_millis(250),
            admin_timeout: Duration::from_secs(30),
            queue: 1024,
            node,
        }
    }

    /// Why `url` cannot name a Redis server, checked without connecting
    /// (for the configuration's checks).
    pub fn check_url(url: &str) -> Result<(), String> {
        if !url.starts_with("redis://") {
            return Err(format!("must be a redis://host:port/db URL, got {url:?}"));
        }
        redis::IntoConnectionInfo::into_connection_info(url)
            .map(|_| ())
            .map_err(|e| format!("not a Redis URL ({e}): {url:?}"))
    }
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// A handle to the client thread; cheap to share by reference between
/// worker threads (`&RedisClient` is `Send + Sync`). Dropping it lets the
/// thread finish what is queued and stop.
pub struct RedisClient {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    cfg: ClientConfig,
    addr: String,
}

/// An answer on its way. [`Pending::wait`] blocks until it comes or the
/// request's deadline passes.
pub struct Pending<T> {
    rx: Result<Receiver<Result<T, RedisError>>, RedisError>,
    deadline: Instant,
    op: &'static str,
    addr: String,
    timeout: Duration,
}

impl<T> Pending<T> {
    /// The answer, or [`RedisError::Timeout`] once the deadline passes.
    pub fn wait(self) -> Result<T, RedisError> {
        let rx = self.rx?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(RedisError::Timeout {
                addr: self.addr,
                op: self.op,
                timeout: self.timeout,
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(RedisError::Closed { op: self.op }),
        }
    }

    /// The answer if it has come (or the deadline has passed), else `None`:
    /// for a caller that must not block. Once it has answered `Some`, it
    /// answers `Some(Err(Closed))`.
    pub fn poll(&mut self) -> Option<Result<T, RedisError>> {
        let closed = || RedisError::Closed { op: self.op };
        let rx = match &self.rx {
            Ok(rx) => rx,
            Err(_) => return Some(Err(std::mem::replace(&mut self.rx, Err(closed())).err()?)),
        };
        let got = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Disconnected) => Err(closed()),
            Err(TryRecvError::Empty) if Instant::now() >= self.deadline => {
                Err(RedisError::Timeout {
                    addr: self.addr.clone(),
                    op: self.op,
                    timeout: self.timeout,
                })
            }
            Err(TryRecvError::Empty) => return None,
        };
        self.rx = Err(closed());
        Some(got)
    }
}

impl RedisClient {
    /// Start the client thread (`flashd-redis`). It connects on the first
    /// request, so this succeeds while Redis is down; only a URL that names
    /// no Redis fails here.
    pub fn start(cfg: ClientConfig) -> Result<RedisClient, RedisError> {
        let client = redis::Client::open(cfg.url.as_str()).map_err(|source| RedisError::Url {
            url: cfg.url.clone(),
            source,
        })?;
        let addr = client.get_connection_info().addr.to_string();
        let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue.max(1));
        let mut session = Session {
            client,
            addr: addr.clone(),
            timeout: cfg.timeout,
            conn: None,
            shas: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("flashd-redis".into())
            .spawn(move || {
                for job in rx {
                    job(&mut session);
                }
            })
            .expect("spawn the redis client thread");
        Ok(RedisClient {
            tx: Some(tx),
            thread: Some(thread),
            cfg,
            addr,
        })
    }

    /// The config it was started with.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub(crate) fn submit<T: Send + 'static>(
        &self,
        op: &'static str,
        admin: bool,
        f: impl FnOnce(&mut Session) -> Result<T, RedisError> + Send + 'static,
    ) -> Pending<T> {
        let timeout = if admin {
            self.cfg.admin_timeout
        } else {
            self.cfg.timeout
        };
        let deadline = Instant::now() + timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |s: &mut Session| {
            let r = if Instant::now() >= deadline {
                Err(RedisError::Timeout {
                    addr: s.addr.clone(),
                    op,
                    timeout,
                })
            } else if admin {
                s.admin(op, timeout, f)
            } else {
                f(s)
            };
            let _ = tx.send(r);
        });
        let sent = match self.tx.as_ref().map(|q| q.try_send(job)) {
            Some(Ok(())) => Ok(rx),
            Some(Err(TrySendError::Full(_))) => Err(RedisError::Busy {
                op,
                capacity: self.cfg.queue,
            }),
            Some(Err(TrySendError::Disconnected(_))) | None => Err(RedisError::Closed { op }),
        };
        Pending {
            rx: sent,
            deadline,
            op,
            addr: self.addr.clone(),
            timeout,
        }
    }

    /// Create sale `sale` in Redis if it is not there. Repeating the same
    /// creation is fine; another spec under the same id is
    /// [`RedisError::SaleConflict`]. Answers whether this call created it.
    pub fn create_sale(&self, sale: ActivityId, spec: SaleSpec) -> Pending<bool> {
        self.create_sale_with(sale, spec, None)
    }

    /// [`RedisClient::create_sale`], with the sale's sku, name and
    /// creation time stored beside it when given (`crate::catalog`).
    pub(crate) fn create_sale_with(
        &self,
        sale: ActivityId,
        spec: SaleSpec,
        names: Option<(String, String, Millis)>,
    ) -> Pending<bool> {
        self.submit("create_sale", false, move |s| {
            let want = [
                spec.stock,
                u64::from(spec.per_user_limit),
                u64::from(flashd_engine::sale_user_orders_max(spec.per_user_limit)),
                spec.start_at,
                spec.end_at,
                spec.price_cents,
            ];
            let v = s.eval("create_sale", 0, &[keys::meta(sale)], |c| {
                for a in want {
                    c.arg(a);
                }
                if let Some((sku, name, created)) = &names {
                    c.arg(sku).arg(name).arg(*created);
                }
            })?;
            match v {
                redis::Value::Int(1) => Ok(true),
                other => {
                    let got: Vec<Option<u64>> = redis::from_redis_value(&other)
                        .map_err(|e| RedisError::protocol("create_sale", e.to_string()))?;
                    if got.iter().copied().eq(want.iter().map(|w| Some(*w))) {
                        Ok(false)
                    } else {
                        Err(RedisError::SaleConflict {
                            sale,
                            what: format!(
                                "stored stock, limit, orders_max, start, end, price {got:?}, asked {want:?}"
                            ),
                        })
                    }
                }
            }
        })
    }

    /// Decide a batch of purchases of `sale` at `now` in one script call
    /// (one per [`script::BATCH_MAX`] purchases). The answer has one
    /// [`Decision`] per purchase, in order.
    pub fn buy(&self, sale: ActivityId, now: Millis, buys: Vec<Buy>) -> Pending<Vec<Decision>> {
        let node = self.cfg.node;
        self.submit("buy", false, move |s| {
            let valid: Vec<usize> = (0..buys.len()).filter(|&i| buys[i].is_valid()).collect();
            let mut out = vec![Decision::Invalid; buys.len()];
            // One script call a chunk: `unpack` in the script caps a call
            // near 8000 buyers.
            for sent in valid.chunks(script::BATCH_MAX) {
                let batch: Vec<&Buy> = sent.iter().map(|&i| &buys[i]).collect();
                let v = s.eval("buy", 1, &keys::all(sale), |c| {
                    script::buy_args(c, now, node, &batch);
                })?;
                let mut answers: Vec<String> = redis::from_redis_value(&v)
                    .map_err(|e| RedisError::protocol("buy", e.to_string()))?;
                let codes = answers.pop().unwrap_or_default();
                if codes.len() != sent.len() {
                    return Err(RedisError::protocol(
                        "buy",
                        format!("{} codes for {} purchases", codes.len(), sent.len()),
                    ));
                }
                let mut segments = answers.into_iter();
                for (&i, code) in sent.iter().zip(codes.bytes()) {
                    let seg = if code == b'E' { segments.next() } else { None };
                    out[i] = Decision::parse(&buys[i], now, node, code, seg.as_deref())?;
                }
            }
            Ok(out)
        })
    }

    /// Pay or cancel a batch of claims of `sale` at `now` in one script
    /// call. One [`Settled`] per item, in order.
    pub fn settle(&self, sale: ActivityId, now: Millis, ops: Vec<Settle>) -> Pending<Vec<Settled>> {
        self.submit("settle", false, move |s| {
            let keys = [keys::meta(sale), keys::users(sale)];
            let mut out = Vec::with_capacity(ops.len());
            for chunk in ops.chunks(script::BATCH_MAX) {
                let v = s.eval("settle", 2, &keys, |c| {
                    let codes: String = chunk.iter().map(|op| op.parts().0).collect();
                    c.arg(now).arg(codes);
                    for op in chunk {
                        let (_, user, order) = op.parts();
                        c.arg(user).arg(order);
                    }
                })?;
                let mut answers: Vec<String> = redis::from_redis_value(&v)
                    .map_err(|e| RedisError::protocol("settle", e.to_string()))?;
                let codes = answers.pop().unwrap_or_default();
                if codes.len() != chunk.len() {
                    return Err(RedisError::protocol(
                        "settle",
                        format!("{} codes for {} items", codes.len(), chunk.len()),
                    ));
                }
                let mut segments = answers.into_iter();
                for (op, code) in chunk.iter().zip(codes.bytes()) {
                    let seg = if code == b'N' { None } else { segments.next() };
                    out.push(Settled::parse(op, code, seg.as_deref())?);
                }
            }
            Ok(out)
        })
    }

    /// Time out at most `limit` unpaid claims of `sale` whose deadline is
    /// at or before `now`, giving their units back. Answers the claims
    /// this call timed out (each needs an `OrderCancelled { Timeout }` in
    /// the log); safe to run on every node at once.
    pub fn expire(&self, sale: ActivityId, now: Millis, limit: usize) -> Pending<Vec<Claim>> {
        self.submit("expire", false, move |s| {
            let v = s.eval("expire", 3, &keys::all(sale), |c| {
                c.arg(now).arg(limit.max(1));
            })?;
            let got: Vec<String> = redis::from_redis_value(&v)
                .map_err(|e| RedisError::protocol("expire", e.to_string()))?;
            got.iter()
                .map(|a| {
                    Claim::decode_with_user(a)
                        .ok_or_else(|| RedisError::protocol("expire", format!("answer {a:?}")))
                })
                .collect()
        })
    }

    /// How Redis keeps what it decided: its `appendonly` and
    /// `appendfsync` ([`DurabilityReport`]). Check it at start.
    pub fn durability(&self) -> Pending<DurabilityReport> {
        self.submit("durability", true, crate::durability::check)
    }

    /// Everything Redis holds for `sale`, read atomically (`None` if it
    /// holds nothing), for a reconcile against the log.
    pub fn read_sale(&self, sale: ActivityId) -> Pending<Option<SaleState>> {
        self.submit("read_sale", true, move |s| crate::reconcile::read(s, sale))
    }

    /// Replace what Redis holds for `sale` with the state `events` (the
    /// log's, in log order) build, atomically; answers that state.
    pub fn repair(&self, sale: ActivityId, events: Vec<Event>) -> Pending<SaleState> {
        self.submit("repair", true, move |s| {
            crate::reconcile::repair(s, sale, &events)
        })
    }
}

impl Drop for RedisClient {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The client thread's side: the connection and the loaded scripts.
pub(crate) struct Session {
    client: redis::Client,
    addr: String,
    timeout: Duration,
    conn: Option<Connection>,
    /// SHA1 of each of [`script::ALL`], as `SCRIPT LOAD` answered.
    shas: Vec<String>,
}

impl Session {
    /// The connection, made (with TCP_NODELAY, by the `redis` crate's
    /// `tcp_nodelay` feature) and its scripts loaded if there is none.
    fn conn(&mut self, op: &'static str) -> Result<&mut Connection, RedisError> {
        if self.conn.is_none() {
            let c = self
                .client
                .get_connection_with_timeout(self.timeout)
                .map_err(|source| RedisError::Connect {
                    addr: self.addr.clone(),
                    source,
                })?;
            let timeouts = c
                .set_read_timeout(Some(self.timeout))
                .and_then(|()| c.set_write_timeout(Some(self.timeout)));
            if let Err(source) = timeouts {
                return Err(RedisError::Connect {
                    addr: self.addr.clone(),
                    source,
                });
            }
            self.conn = Some(c);
            if let Err(e) = self.load_scripts(op) {
                self.conn = None;
                return Err(e);
            }
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    fn load_scripts(&mut self, op: &'static str) -> Result<(), RedisError> {
        let mut shas = Vec::with_capacity(script::ALL.len());
        for (_, body) in script::ALL {
            let sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script::source(body))
                .query(self.conn.as_mut().expect("connected"))
                .map_err(|e| self.fail(op, e))?;
            shas.push(sha);
        }
        self.shas = shas;
        Ok(())
    }

    /// Map a failed command to its error; a connection that may be broken
    /// (I/O error, timeout) is dropped so the next request reconnects
    /// rather than read a late answer meant for this one.
    fn fail(&mut self, op: &'static str, source: redis::RedisError) -> RedisError {
        if source.is_io_error() || source.is_timeout() || source.is_connection_dropped() {
            self.conn = None;
        }
        if source.is_timeout() {
            RedisError::Timeout {
                addr: self.addr.clone(),
                op,
                timeout: self.timeout,
            }
        } else {
            RedisError::Command {
                addr: self.addr.clone(),
                op,
                source,
            }
        }
    }

    /// Run script `which` of [`script::ALL`] with `keys` and the arguments
    /// `args` adds: `EVALSHA`, and once more after a reload if Redis lost
    /// its scripts (`NOSCRIPT`: a restart, `SCRIPT FLUSH`).
    pub(crate) fn eval(
        &mut self,
        op: &'static str,
        which: usize,
        keys: &[String],
        args: impl Fn(&mut redis::Cmd),
    ) -> Result<redis::Value, RedisError> {
        for attempt in 0..2 {
            self.conn(op)?;
            let mut c = redis::cmd("EVALSHA");
            c.arg(&self.shas[which]).arg(keys.len());
            for k in keys {
                c.arg(k);
            }
            args(&mut c);
            match c.query::<redis::Value>(self.conn.as_mut().expect("connected")) {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == ErrorKind::NoScriptError && attempt == 0 => {
                    self.load_scripts(op)?;
                }
                Err(e) => return Err(self.fail(op, e)),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Run a command.
    pub(crate) fn query<T: redis::FromRedisValue>(
        &mut self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let r = cmd.query(self.conn(op)?);
        r.map_err(|e| self.fail(op, e))
    }

    /// Run a pipeline (atomic if it was built so).
    pub(crate) fn pipe<T: redis::FromRedisValue>(
        &mut self,
        op: &'static str,
        p: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let r = p.query(self.conn(op)?);
        r.map_err(|e| self.fail(op, e))
    }

    /// Run `f` with the socket's timeouts raised to `timeout`.
    fn admin<T>(
        &mut self,
        op: &'static str,
        timeout: Duration,
        f: impl FnOnce(&mut Session) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let normal = self.timeout;
        self.set_timeouts(op, timeout)?;
        self.timeout = timeout;
        let r = f(self);
        self.timeout = normal;
        if self.conn.is_some() {
            self.set_timeouts(op, normal)?;
        }
        r
    }

    fn set_timeouts(&mut self, op: &'static str, t: Duration) -> Result<(), RedisError> {
        let c = self.conn(op)?;
        let r = c
            .set_read_timeout(Some(t))
            .and_then(|()| c.set_write_timeout(Some(t)));
        r.map_err(|e| self.fail(op, e))
    }
}
