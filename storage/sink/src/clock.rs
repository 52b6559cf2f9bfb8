//! The sink's one read of the wall clock. Nothing else in the crate reads
//! `SystemTime`: every other time it writes comes from the events.

/// Wall-clock milliseconds: the stamps of rows the sink writes itself
/// (`parked_at`, a revert's `at`) and the month tables it creates ahead.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
