//! flashd-engine: the sale domain (activities, the CAS stock ledger,
//! per-user limits, idempotency, the order lifecycle, rate limiting).
//!
//! Pure and deterministic: no I/O, no clock of its own; every state change
//! is an event. Filled in by the engine work that follows the network core.
