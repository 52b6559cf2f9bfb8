//! The flashd service as a library: everything the `flashd` binary wires
//! together, reachable from tests and fuzz targets in-process.
//!
//! Owns: the configuration type and its checks, secrets, bearer-token and
//! admin authentication, the JSON API (parsing bodies, encoding answers),
//! the request handler every sub-reactor runs, the command path to the
//! engine and the log, and the Prometheus exposition. It must never decide
//! anything about stock (the engine does) nor write the log itself (the
//! storage crates do); it only carries commands and answers between them.
//!
//! Invariants it keeps: a state-changing command is admitted by the log's
//! gate before it touches the engine, and its answer waits for the log when
//! `log.ack = "durable"`; client bytes never panic a thread.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod exec;
pub mod metrics;
pub mod routes;
pub mod secrets;
pub mod sys;
