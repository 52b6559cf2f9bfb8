//! Test-only fault injection (cargo feature `failpoints`). The environment
//! variable FLASHD_FAILPOINTS names a file; while it contains `write` or
//! `fsync`, log writes or syncs fail; while it contains `stall`, every log
//! write and sync blocks (a disk that stopped answering: the watchdog's
//! case). A test creates and removes the file to start and stop the fault
//! with the server running.

#[cfg(feature = "failpoints")]
pub fn check(what: &'static str) -> Result<(), crate::error::LogError> {
    let Ok(path) = std::env::var("FLASHD_FAILPOINTS") else {
        return Ok(());
    };
    let has = |word: &str| {
        std::fs::read_to_string(&path).is_ok_and(|s| s.split_whitespace().any(|w| w == word))
    };
    while has("stall") {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if has(what) {
        return Err(crate::error::LogError::Injected(what));
    }
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_what: &'static str) -> Result<(), crate::error::LogError> {
    Ok(())
}
