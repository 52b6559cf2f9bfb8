//! Test-only fault injection (cargo feature `failpoints`). The environment
//! variable FLASHD_FAILPOINTS names a file; while it contains `write` or
//! `fsync`, log writes or syncs fail. A test creates and removes the file to
//! start and stop the fault with the server running.

#[cfg(feature = "failpoints")]
pub fn check(what: &'static str) -> Result<(), crate::error::LogError> {
    if let Ok(path) = std::env::var("FLASHD_FAILPOINTS") {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.split_whitespace().any(|w| w == what) {
                return Err(crate::error::LogError::Injected(what));
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_what: &'static str) -> Result<(), crate::error::LogError> {
    Ok(())
}
