//! The request handler every sub-reactor runs: admission (rate limits,
//! auth), parsing, then the engine, inline or through the worker rings.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use flashd_engine::ratelimit::{Bucket, Keyed, Rate};
use flashd_engine::{Engine, Placed, Reject, UserId};
use flashd_protocol::{Request, RouteMatch, Router};
use flashd_reactor::{Context, Dispatcher, Handler, ServerStats};

use crate::access_log::{self, AccessLog};
use crate::admin;
use crate::api;
use crate::auth::{Auth, AuthError};
use crate::clock::Clock;
use crate::config::RateLimitSection;
use crate::exec::{self, Command, Job, Outcome};
use crate::metrics;
use crate::request_id::{Ids, Parked, RequestId, Tag, REQUEST_ID_HEADER};
use crate::routes::{self, Route, ROUTE_NAMES, ROUTE_UNMATCHED};

/// Counters one sub-reactor keeps about the sale API (single writer).
#[derive(Default)]
pub struct AppStats {
    pub orders_created: AtomicU64,
    pub orders_replayed: AtomicU64,
    pub rejected: [AtomicU64; Reject::ALL.len()],
    pub rate_limited: AtomicU64,
    pub ring_full: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Purchases refused before their token was checked (a refusal the
    /// same for every buyer: `Engine::public_refusal`); also counted in
    /// `rejected`.
    pub refused_before_auth: AtomicU64,
    pub invalid: AtomicU64,
    pub log_unavailable: AtomicU64,
    /// Cluster mode: answered 503 because Redis did not answer.
    pub authority_unavailable: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

pub struct RateLimits {
    pub global_rate: Rate,
    pub user_rate: Rate,
    pub ip_rate: Rate,
    global: Bucket,
    users: Keyed,
    ips: Keyed,
    origin: Instant,
}

impl RateLimits {
    pub fn new(cfg: &RateLimitSection) -> RateLimits {
        let r = RateLimits {
            global_rate: Rate::default(),
            user_rate: Rate::default(),
            ip_rate: Rate::default(),
            global: Bucket::default(),
            users: Keyed::default(),
            ips: Keyed::default(),
            origin: Instant::now(),
        };
        r.set(cfg);
        r
    }

    /// Change the rates in place (SIGHUP).
    pub fn set(&self, cfg: &RateLimitSection) {
        self.global_rate.set(cfg.global_rps, cfg.global_burst);
        self.user_rate.set(cfg.per_user_rps, cfg.per_user_burst);
        self.ip_rate.set(cfg.per_ip_rps, cfg.per_ip_burst);
    }

    /// `now` on the buckets' clock (ns since start, never 0).
    fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_nanos() as u64 + 1
    }

    /// The per-IP (and global) limit at `t` (from [`RateLimits::ns`]).
    fn door(&self, ip: IpAddr, t: u64) -> Result<(), u64> {
        self.global.check(&self.global_rate, t)?;
        // IPv6 by its /64, not the interface id the client picks.
        let key = flashd_engine::ratelimit::ip_key(ip);
        self.ips.check(&self.ip_rate, key, t)
    }

    /// The per-user limit at `t` (from [`RateLimits::ns`]).
    fn user(&self, user: UserId, t: u64) -> Result<(), u64> {
        self.users.check(&self.user_rate, user, t)
    }
}

/// What the log path shows to `/metrics` and `/readyz`.
pub struct LogView {
    pub stats: Arc<flashd_log::WriterStats>,
    pub committed_lsn: Arc<AtomicU64>,
    pub snapshot_lsn: Arc<AtomicU64>,
    /// The snapshot follower's health (file backend; zeros on Kafka).
    pub snapshot_apply_failures: Arc<AtomicU64>,
    /// The LSN the follower is stuck on, or `flashd_log::NOT_STALLED`.
    pub snapshot_stalled_lsn: Arc<AtomicU64>,
    pub snapshot_errors: Arc<AtomicU64>,
    pub recovery_ms: u64,
    pub recovered_events: u64,
    pub depth: flashd_log::WriterHandle<exec::Pending>,
    pub backend: crate::config::LogBackend,
    /// The embedded sink's figures (`sink.embedded`).
    pub sink: Option<Arc<flashd_sink::SinkStats>>,
}

/// What every sub-reactor's handler shares.
pub struct Shared {
    pub core: Arc<exec::Core>,
    pub engine: Arc<Engine>,
    /// Recovery is done and the log is open: API requests are served.
    pub ready: std::sync::atomic::AtomicBool,
    pub log: std::sync::OnceLock<LogView>,
    pub auth: Auth,
    pub limits: RateLimits,
    pub stats: Arc<ServerStats>,
    pub app: Box<[CachePadded<AppStats>]>,
    pub events: Arc<AtomicU64>,
    /// For metrics: the worker rings (None when running inline).
    pub workers: Option<Dispatcher<Job>>,
    /// The wall clock, read once per request (or per worker batch).
    pub clock: Arc<dyn Clock>,
    /// The latest stream event of every streamed sale.
    pub sse: crate::stream::Hub,
    /// This node's id and the process's start (ms): generated request
    /// ids are made of them (`request_id.rs`).
    pub node_id: u16,
    pub start_ms: u64,
    /// The access log as configured; each reactor samples with its copy.
    pub access_log: AccessLog,
}

impl Shared {
    /// A sale's counters as this node answers them: its engine's, or in
    /// cluster mode Redis's as the sweeper last read them (the engine
    /// holds only this node's share of the sale).
    #[inline]
    pub fn counters(&self, a: &flashd_engine::Activity) -> flashd_engine::Counters {
        match &self.core.cluster {
            None => a.counters(),
            Some(c) => c.counters(a.id).unwrap_or_else(|| a.counters()),
        }
    }

    /// Wall-clock ms from the service's clock.
    #[inline]
    pub fn now_ms(&self) -> flashd_engine::Millis {
        self.clock.now_ms()
    }
}

/// Extra headers one answer carries at most besides `X-Request-Id`.
const EXTRA_HEADERS_MAX: usize = 2;

/// `X-Request-Id: id` and `extra`, on the stack: the headers of an answer
/// and how many there are.
fn with_id<'a>(
    id: &'a str,
    extra: &[(&'static str, &'a str)],
) -> ([(&'static str, &'a str); EXTRA_HEADERS_MAX + 1], usize) {
    debug_assert!(extra.len() <= EXTRA_HEADERS_MAX, "{extra:?}");
    let mut h = [("", ""); EXTRA_HEADERS_MAX + 1];
    h[0] = (REQUEST_ID_HEADER, id);
    let n = extra.len().min(EXTRA_HEADERS_MAX);
    h[1..=n].copy_from_slice(&extra[..n]);
    (h, n + 1)
}

pub struct App {
    shared: Arc<Shared>,
    router: Router<Route>,
    dispatcher: Option<Dispatcher<Job>>,
    reactor: usize,
    body: Vec<u8>,
    text: String,
    /// This request's id (or the deferred request's being answered).
    rid: RequestId,
    /// Requests this reactor has handled: the `n` of generated ids.
    requests: u64,
    ids: Ids,
    parked: Parked,
    access: AccessLog,
    /// The reactor turn's instant and its value on the rate limits'
    /// clock: every request of a turn shares it (a conversion per request
    /// was ~55 instructions).
    limit_clock: (Instant, u64),
}

impl App {
    pub fn new(shared: Arc<Shared>, reactor: usize) -> Self {
        // Each reactor starts its round-robin at a different ring.
        let dispatcher = shared.workers.as_ref().map(|d| d.starting_at(reactor));
        App {
            shared: shared.clone(),
            router: routes::router(),
            dispatcher,
            reactor,
            body: Vec::with_capacity(512),
            text: String::new(),
            rid: RequestId::default(),
            requests: 0,
            ids: Ids::new(shared.node_id, reactor as u16, shared.start_ms),
            parked: Parked::default(),
            access: shared.access_log.clone(),
            limit_clock: (shared.limits.origin, shared.limits.ns(shared.limits.origin)),
        }
    }

    /// `now` (the turn's instant) on the rate limits' clock.
    fn limit_ns(&mut self, now: Instant) -> u64 {
        if now != self.limit_clock.0 {
            self.limit_clock = (now, self.shared.limits.ns(now));
        }
        self.limit_clock.1
    }

    fn stats(&self) -> &AppStats {
        &self.shared.app[self.reactor]
    }

    fn too_many(&self, cx: &mut Context<'_>, wait_ns: u64) {
        inc(&self.stats().rate_limited);
        let secs = wait_ns.div_ceil(1_000_000_000).max(1);
        let mut b = itoa::Buffer::new();
        self.error(
            cx,
            429,
            "rate_limited",
            "too many requests",
            &[("Retry-After", b.format(secs))],
        );
    }

    fn unauthorized(&self, cx: &mut Context<'_>, e: AuthError) {
        inc(&self.stats().unauthorized);
        self.error(
            cx,
            401,
            "unauthorized",
            e.message(),
            &[("WWW-Authenticate", "Bearer")],
        );
    }

    fn invalid(&self, cx: &mut Context<'_>, msg: &str) {
        inc(&self.stats().invalid);
        self.error(cx, 400, "invalid_request", msg, &[]);
    }

    fn not_found(&self, cx: &mut Context<'_>) {
        self.error(cx, 404, "not_found", "no such resource", &[]);
    }

    /// Answer with a JSON error, this request's id echoed.
    fn error(
        &self,
        cx: &mut Context<'_>,
        status: u16,
        code: &str,
        message: &str,
        extra: &[(&'static str, &str)],
    ) {
        let (h, n) = with_id(self.rid.as_str(), extra);
        cx.respond_error(status, code, message, &h[..n]);
    }

    /// Answer with a JSON body, this request's id echoed.
    fn json(&self, cx: &mut Context<'_>, status: u16, body: &[u8]) {
        cx.respond(
            status,
            "application/json",
            &[(REQUEST_ID_HEADER, self.rid.as_str())],
            body,
        );
    }

    /// Answer with any body, this request's id echoed.
    fn raw(&self, cx: &mut Context<'_>, status: u16, content_type: &'static str, body: &[u8]) {
        cx.respond(
            status,
            content_type,
            &[(REQUEST_ID_HEADER, self.rid.as_str())],
            body,
        );
    }

    /// Take this request's id (the client's, or a new one), and tag the
    /// request so a deferred answer finds it again.
    fn begin(&mut self, req: &Request<'_>, cx: &mut Context<'_>) -> Tag {
        self.requests += 1;
        let n = self.requests;
        let client = match req.header("x-request-id").and_then(RequestId::accept) {
            Some(id) => {
                self.rid = id;
                true
            }
            None => {
                self.ids.format_into(&mut self.rid, n);
                false
            }
        };
        let tag = Tag { n, client };
        cx.set_tag(tag.to_u64());
        tag
    }

    /// The request's access-log line, if the mode wants one.
    fn access(&mut self, cx: &Context<'_>) {
        let status = cx.status();
        if self.access.wants(status) {
            let route = ROUTE_NAMES
                .get(cx.route() as usize)
                .copied()
                .unwrap_or("none");
            access_log::write(self.rid.as_str(), route, status, cx.peer());
        }
    }

    /// Run a state-changing command: inline, or handed to a worker. The
    /// request is deferred first, so that a command whose answer must wait
    /// for the log has somewhere to send it.
    fn run(&mut self, cmd: Command, cx: &mut Context<'_>) {
        let Some(ticket) = cx.defer() else {
            inc(&self.shared.app[self.reactor].ring_full);
            return self.error(
                cx,
                503,
                "overloaded",
                "too many requests in flight",
                &[("Retry-After", "1")],
            );
        };
        match self.dispatcher.as_mut() {
            None => match self.shared.core.run(&cmd, self.shared.now_ms(), ticket) {
                exec::Step::Now(out) => {
                    cx.undefer(ticket);
                    self.respond(out, cx);
                }
                exec::Step::Queued => {}
            },
            Some(d) => {
                if let Err(job) = d.submit(Job { ticket, cmd }) {
                    cx.undefer(job.ticket);
                    inc(&self.shared.app[self.reactor].ring_full);
                    self.error(
                        cx,
                        503,
                        "overloaded",
                        "worker queues are full",
                        &[("Retry-After", "1")],
                    );
                }
            }
        }
    }

    /// A sale as `GET` answers it into `self.body`: its counters from
    /// this engine, or in cluster mode Redis's as last read.
    fn write_sale(
        shared: &Shared,
        body: &mut Vec<u8>,
        a: &flashd_engine::Activity,
        now: flashd_engine::Millis,
    ) {
        body.clear();
        Self::append_sale(shared, body, a, now);
    }

    /// A sale's JSON appended to `out` (cluster mode: with Redis's counts).
    fn append_sale(
        shared: &Shared,
        out: &mut Vec<u8>,
        a: &flashd_engine::Activity,
        now: flashd_engine::Millis,
    ) {
        api::write_activity_with(out, a, shared.counters(a), now);
    }

    fn respond(&mut self, out: Outcome, cx: &mut Context<'_>) {
        self.body.clear();
        match out {
            Outcome::Placed(Placed::Created(o)) => {
                inc(&self.stats().orders_created);
                api::write_order(&mut self.body, &o);
                self.json(cx, 201, &self.body);
            }
            Outcome::Placed(Placed::Existing(o)) => {
                inc(&self.stats().orders_replayed);
                api::write_order(&mut self.body, &o);
                self.json(cx, 200, &self.body);
            }
            Outcome::Moved(o) => {
                api::write_order(&mut self.body, &o);
                self.json(cx, 200, &self.body);
            }
            Outcome::ActivityCreated(id) | Outcome::ActivityChanged(id) => {
                let created = matches!(out, Outcome::ActivityCreated(_));
                match self.shared.engine.activity(id) {
                    Some(a) => {
                        // An admin's change, durable now: the audit trail.
                        tracing::info!(
                            request_id = self.rid.as_str(),
                            activity = id,
                            stock = a.stock(),
                            start_at = a.start_at(),
                            end_at = a.end_at(),
                            "{}",
                            if created {
                                "sale created"
                            } else {
                                "sale changed"
                            }
                        );
                        Self::write_sale(&self.shared, &mut self.body, a, self.shared.now_ms());
                        self.json(cx, if created { 201 } else { 200 }, &self.body);
                    }
                    None if created => {
                        tracing::error!(
                            request_id = self.rid.as_str(),
                            activity = id,
                            "created sale not found"
                        );
                        self.error(cx, 500, "internal", "created activity not found", &[])
                    }
                    None => self.not_found(cx),
                }
            }
            Outcome::Activity(id) => match self.shared.engine.activity(id) {
                Some(a) => {
                    Self::write_sale(&self.shared, &mut self.body, a, self.shared.now_ms());
                    self.json(cx, 200, &self.body);
                }
                None => self.not_found(cx),
            },
            Outcome::AuthorityUnavailable => {
                inc(&self.stats().authority_unavailable);
                self.error(
                    cx,
                    503,
                    "unavailable",
                    "the stock authority (redis) cannot be reached; nothing was changed",
                    &[("Retry-After", "1")],
                );
            }
            Outcome::Rejected(r) => {
                let i = Reject::ALL.iter().position(|x| *x == r).unwrap_or(0);
                inc(&self.stats().rejected[i]);
                self.error(cx, r.status(), r.code(), r.message(), &[]);
            }
            Outcome::LogUnavailable => {
                inc(&self.stats().log_unavailable);
                self.error(
                    cx,
                    503,
                    "unavailable",
                    "orders cannot be made durable right now; nothing was changed",
                    &[("Retry-After", "1")],
                );
            }
            Outcome::OutcomeUnknown => {
                inc(&self.stats().log_unavailable);
                self.error(cx,
                    503,
                    "outcome_unknown",
                    "this request may have taken effect but the server cannot confirm it: its outcome is unknown; retry with the same request_id to learn it",
                    &[("Retry-After", "1")],
                );
            }
            Outcome::LogBusy => {
                inc(&self.stats().ring_full);
                self.error(
                    cx,
                    503,
                    "overloaded",
                    "the order log is saturated",
                    &[("Retry-After", "1")],
                );
            }
        }
    }

    fn api(&mut self, route: Route, id: Option<&str>, req: &Request<'_>, cx: &mut Context<'_>) {
        if !self.shared.ready.load(Ordering::Acquire) {
            return self.error(
                cx,
                503,
                "unavailable",
                "recovering the order log",
                &[("Retry-After", "1")],
            );
        }
        let t = self.limit_ns(cx.now());
        if let Err(wait) = self.shared.limits.door(cx.peer(), t) {
            return self.too_many(cx, wait);
        }
        let auth = req.header("authorization");
        match route {
            Route::CreateActivity => {
                if let Err(e) = self.shared.auth.admin(auth) {
                    return self.unauthorized(cx, e);
                }
                match api::parse_activity(req.body) {
                    Ok(spec) => self.run(Command::CreateActivity(Box::new(spec)), cx),
                    Err(e) => self.invalid(cx, &e.0),
                }
            }
            Route::ListActivities
            | Route::ChangeActivity
            | Route::EndActivity
            | Route::AddStock => {
                if let Err(e) = self.shared.auth.admin(auth) {
                    return self.unauthorized(cx, e);
                }
                self.admin(route, id, req, cx)
            }
            Route::GetActivity => {
                let Some(sale) = id.and_then(|s| s.parse().ok()) else {
                    return self.not_found(cx);
                };
                match self.shared.engine.activity(sale) {
                    Some(a) => {
                        self.body.clear();
                        // The turn's clock (refreshed every reactor turn): a
                        // clock read per GET was ~60 instructions of its ~3,500.
                        let now = self.shared.clock.turn_ms();
                        Self::write_sale(&self.shared, &mut self.body, a, now);
                        self.json(cx, 200, &self.body);
                    }
                    // Cluster mode: it may have been created on another
                    // node; a worker asks Redis.
                    None if self.shared.core.cluster.is_some() => {
                        self.run(Command::GetActivity(sale), cx)
                    }
                    None => self.not_found(cx),
                }
            }
            Route::PlaceOrder => {
                // The sale id and body are read once: the public check
                // uses them before the token, the command after it (a body
                // that does not parse is still answered 401 first).
                let activity = id.and_then(|s| s.parse().ok());
                let buy = api::parse_buy(req.body);
                if let (Some(a), Ok((quantity, request_id))) = (activity, &buy) {
                    // The turn's clock, not a clock read (~160 instructions
                    // of a refused buy in a sold-out stampede): it is at
                    // most a turn behind, so it never finds a sale ended
                    // early, and sold out does not depend on it. A "not
                    // started" from it is asked again of the clock: the
                    // start instant is the one moment a buyer must not be
                    // refused by a stale time.
                    let mut r =
                        self.public_refusal(a, *quantity, request_id, self.shared.clock.turn_ms());
                    if r == Some(Reject::NotStarted) {
                        r = self.public_refusal(a, *quantity, request_id, self.shared.now_ms());
                    }
                    if let Some(r) = r {
                        inc(&self.stats().refused_before_auth);
                        return self.respond(Outcome::Rejected(r), cx);
                    }
                }
                let now = self.shared.now_ms();
                let Some(user) = self.buyer(auth, now, t, cx) else {
                    return;
                };
                let Some(activity) = activity else {
                    return self.not_found(cx);
                };
                match buy {
                    Ok((quantity, request_id)) => self.run(
                        Command::Place {
                            activity,
                            user,
                            quantity,
                            request_id,
                        },
                        cx,
                    ),
                    Err(e) => self.invalid(cx, &e.0),
                }
            }
            Route::GetOrder | Route::PayOrder | Route::CancelOrder => {
                let Some(user) = self.buyer(auth, self.shared.now_ms(), t, cx) else {
                    return;
                };
                let Some(order) = id.and_then(|s| s.parse().ok()) else {
                    return self.not_found(cx);
                };
                match route {
                    Route::GetOrder => self.run(Command::Get { user, order }, cx),
                    Route::PayOrder => self.run(Command::Pay { user, order }, cx),
                    _ => self.run(Command::Cancel { user, order }, cx),
                }
            }
            Route::StreamActivity => crate::stream::subscribe(&self.shared, id, req, cx),
            Route::DashboardData => match self.shared.auth.admin(auth) {
                Ok(()) => crate::dashboard::data(&self.shared, cx),
                Err(e) => self.unauthorized(cx, e),
            },
            Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::Dashboard
            | Route::BuyerPage => unreachable!("not an API route"),
        }
    }
}

impl App {
    /// A purchase's refusal when it is the same whoever asks (unknown
    /// sale, not started, ended, sold out, and the request id never used
    /// in the sale, so not a retry): answered before the token's HMAC and
    /// the buyer's rate limit, which it needs neither of (the address's
    /// limit was applied). It tells nothing a `GET` of the sale does not.
    /// Not in cluster mode, where this node's ledger is a share, not the
    /// authority.
    fn public_refusal(
        &self,
        activity: flashd_engine::ActivityId,
        quantity: u32,
        request_id: &api::RequestId,
        now: flashd_engine::Millis,
    ) -> Option<Reject> {
        if self.shared.core.cluster.is_some() {
            return None;
        }
        self.shared
            .engine
            .public_refusal(activity, quantity, request_id.as_str(), now)
    }

    /// The buyer a token names, past their rate limit at `t`; `None` once
    /// the answer (401 or 429) is written.
    fn buyer(
        &self,
        auth: Option<&[u8]>,
        now: flashd_engine::Millis,
        t: u64,
        cx: &mut Context<'_>,
    ) -> Option<UserId> {
        let user = match self.shared.auth.user(auth, now / 1000) {
            Ok(u) => u,
            Err(e) => {
                self.unauthorized(cx, e);
                return None;
            }
        };
        if let Err(wait) = self.shared.limits.user(user, t) {
            self.too_many(cx, wait);
            return None;
        }
        Some(user)
    }

    /// The admin API past its token: a page of sales, answered here from
    /// memory, or a change of a sale, run as a command like a purchase
    /// (through the log, answered once durable).
    fn admin(&mut self, route: Route, id: Option<&str>, req: &Request<'_>, cx: &mut Context<'_>) {
        if route == Route::ListActivities {
            return match admin::parse_page(req.query) {
                Ok(page) => {
                    self.body.clear();
                    let (shared, now) = (&self.shared, self.shared.now_ms());
                    admin::write_page(&mut self.body, &shared.engine, page, |out, a| {
                        Self::append_sale(shared, out, a, now)
                    });
                    self.json(cx, 200, &self.body);
                }
                Err(e) => self.invalid(cx, &e.0),
            };
        }
        // Cluster mode: Redis holds every node's view of a sale's stock and
        // window; a change made here alone would split them.
        if self.shared.core.cluster.is_some() {
            return self.error(
                cx,
                501,
                "not_supported",
                "changing a sale is not supported in cluster mode yet: Redis holds its stock and window for every node",
                &[],
            );
        }
        // An unknown sale is a 404 whatever the body: nothing to change.
        let Some(activity) = id
            .and_then(|s| s.parse().ok())
            .filter(|&a| self.shared.engine.activity(a).is_some())
        else {
            return self.not_found(cx);
        };
        let cmd = match route {
            Route::ChangeActivity => admin::parse_window(req.body).map(|w| Command::ChangeWindow {
                activity,
                start_at: w.start_at,
                end_at: w.end_at,
            }),
            Route::EndActivity => {
                admin::parse_end(req.body).map(|()| Command::EndActivity { activity })
            }
            _ => admin::parse_stock(req.body).map(|units| Command::AddStock { activity, units }),
        };
        match cmd {
            Ok(cmd) => self.run(cmd, cx),
            Err(e) => self.invalid(cx, &e.0),
        }
    }
}

impl Handler for App {
    type Deferred = Outcome;

    fn handle(&mut self, req: &Request<'_>, cx: &mut Context<'_>) {
        let tag = self.begin(req, cx);
        self.dispatch(req, cx);
        if cx.status() == 0 {
            // Deferred: answered from its completion, where the tag leads
            // back to the id.
            if tag.client {
                self.parked.put(tag.n, self.rid);
            }
        } else {
            self.access(cx);
        }
    }

    fn complete(&mut self, out: Outcome, cx: &mut Context<'_>) {
        let tag = Tag::from_u64(cx.tag());
        match tag.client.then(|| self.parked.take(tag.n)).flatten() {
            Some(id) => self.rid = id,
            None => self.ids.format_into(&mut self.rid, tag.n),
        }
        self.respond(out, cx);
        self.access(cx);
    }

    fn poll_stream(&mut self, topic: u64, have_id: u64) -> Option<flashd_reactor::StreamEvent> {
        crate::stream::poll(&self.shared, topic, have_id)
    }
}

impl App {
    fn dispatch(&mut self, req: &Request<'_>, cx: &mut Context<'_>) {
        let (route, params) = match self.router.find(req.method, req.path) {
            RouteMatch::Found(r, p) => (r, p),
            RouteMatch::MethodNotAllowed { allow } => {
                cx.set_route(ROUTE_UNMATCHED);
                return self.error(
                    cx,
                    405,
                    "method_not_allowed",
                    "method not allowed on this path",
                    &[("Allow", allow)],
                );
            }
            RouteMatch::NotFound => {
                cx.set_route(ROUTE_UNMATCHED);
                return self.error(cx, 404, "not_found", "no such path", &[]);
            }
        };
        cx.set_route(route as u16);
        match route {
            Route::Healthz => self.json(cx, 200, br#"{"status":"ok"}"#),
            Route::Readyz => {
                if self.shared.stats.shutting_down.load(Ordering::Relaxed) {
                    self.error(cx, 503, "not_ready", "shutting down", &[])
                } else if !self.shared.stats.all_running() {
                    self.error(cx, 503, "not_ready", "reactors starting", &[])
                } else if !self.shared.ready.load(Ordering::Acquire) {
                    self.error(cx, 503, "not_ready", "recovering the order log", &[])
                } else if let Some(why) = self
                    .shared
                    .core
                    .cluster
                    .as_ref()
                    .and_then(|c| c.health.down_reason())
                {
                    let why = format!("redis unavailable: {why}");
                    self.error(cx, 503, "not_ready", &why, &[])
                } else if let Some(w) = self
                    .shared
                    .core
                    .writer
                    .get()
                    .filter(|w| w.gate.is_open(self.shared.now_ms()) || w.gate.is_failing())
                {
                    let why = format!("order log unavailable: {}", w.gate.reason());
                    self.error(cx, 503, "not_ready", &why, &[])
                } else {
                    self.json(cx, 200, br#"{"status":"ready"}"#)
                }
            }
            Route::Metrics => {
                self.text.clear();
                metrics::render(&self.shared.stats, &mut self.text);
                metrics::render_app(&self.shared, &mut self.text);
                metrics::render_log(&self.shared, &mut self.text);
                metrics::render_cluster(&self.shared, &mut self.text);
                self.raw(
                    cx,
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.text.as_bytes(),
                );
            }
            Route::Dashboard => crate::dashboard::page(cx),
            Route::BuyerPage => crate::dashboard::buyer_page(params.get(0), cx),
            _ => self.api(route, params.get(0), req, cx),
        }
    }
}
