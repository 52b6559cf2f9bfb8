//! The flashd service as a library: everything the `flashd` binary runs,
//! reachable from tests and fuzz targets in-process (`bin/src/main.rs` only
//! parses the command line, loads the configuration and calls in here).
//!
//! Owns: the configuration type and its checks, secrets, bearer-token and
//! admin authentication, the JSON API (parsing bodies, encoding answers),
//! the request handler every sub-reactor runs, the command path to the
//! engine and the log, the worker pool, recovery of the engine from the
//! log, the wiring of a whole server ([`serve::Service`]), the watchdog,
//! the wall clock ([`clock::Clock`]) and the Prometheus exposition.
//!
//! Never: decides anything about stock (the engine does), writes or reads
//! the log's bytes itself (the storage crates do), or reads the wall clock
//! anywhere but [`clock::SystemClock`]; it only carries commands and
//! answers between them. Errors are typed (`thiserror`) here; only
//! `main.rs` turns them into exit codes.
//!
//! Invariants it keeps: a state-changing command is admitted by the log's
//! gate before it touches the engine, and its answer waits for the log when
//! `log.ack = "durable"`; API requests are refused (503) until recovery is
//! done; client bytes never panic a thread.
//!
//! Modules, by concern:
//! * the command line's helpers: [`config`], [`secrets`], [`logging`],
//!   [`migrate`] (`flashd migrate`), [`sink_process`] (`flashd sink`),
//!   [`reconcile`] (`flashd reconcile`: Redis against the nodes' logs);
//! * a server: [`serve`] (the [`serve::Service`] and `flashd serve`),
//!   [`recovery`] (the engine rebuilt from the log), [`durable`] (the log
//!   opened for appending: writer, snapshotter, embedded sink),
//!   [`workers`], [`sweeper`] (payment timeouts), [`watchdog`], [`sys`];
//! * a request: [`app`] (the handler), [`routes`], [`auth`] (with
//!   [`auth_cache`], tokens already verified), [`api`], [`admin`] (the
//!   admin API's pages and changes of a sale), [`exec`] (the command path
//!   to the engine and the log), [`request_id`] (the `X-Request-Id` taken,
//!   made and echoed), [`access_log`], [`stream`]
//!   (live stock over server-sent events), [`dashboard`] (the ops page,
//!   its data, the buyer page);
//! * cluster mode: [`cluster`] (Redis decides, this node records);
//! * [`clock`], [`metrics`].

pub mod access_log;
pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod auth_cache;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod durable;
pub mod exec;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod reconcile;
pub mod recovery;
pub mod request_id;
pub mod routes;
pub mod secrets;
pub mod serve;
pub mod sink_process;
pub mod stream;
pub mod sweeper;
pub mod sys;
pub mod watchdog;
pub mod workers;
