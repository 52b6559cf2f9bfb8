//! The `Date` header, formatted once a second per thread.
//!
//! Formatting an HTTP date costs far more than the rest of a small response,
//! so each thread keeps the last formatted value and [`refresh`] (called once
//! per event-loop turn, or per worker batch) re-formats it only when the
//! second has changed.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT` is always 29 bytes.
pub const DATE_LEN: usize = 29;

thread_local! {
    static CACHE: Cell<(u64, [u8; DATE_LEN])> = const { Cell::new((u64::MAX, [0; DATE_LEN])) };
    /// Unix milliseconds at this thread's last `refresh` (0: never).
    static MILLIS: Cell<u64> = const { Cell::new(0) };
}

/// Re-read the clock and re-format if the second changed. Cheap enough to
/// call every turn: one vDSO clock read and a compare.
pub fn refresh() {
    let now = SystemTime::now();
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    MILLIS.with(|m| m.set(since.as_millis() as u64));
    CACHE.with(|c| {
        let (cached, _) = c.get();
        if cached != secs {
            let s = httpdate::fmt_http_date(now);
            let mut buf = [0u8; DATE_LEN];
            let n = s.len().min(DATE_LEN);
            buf[..n].copy_from_slice(&s.as_bytes()[..n]);
            c.set((secs, buf));
        }
    });
}

/// Unix milliseconds as of this thread's last [`refresh`] (the start of
/// the event-loop turn on a reactor), read afresh if it never refreshed.
/// For what may be as old as the turn: a sub-reactor's handler saves a
/// clock read per request with it.
pub fn turn_millis() -> u64 {
    match MILLIS.with(Cell::get) {
        0 => {
            refresh();
            MILLIS.with(Cell::get)
        }
        ms => ms,
    }
}

/// This thread's cached `(second, date bytes)`, refreshed first if this
/// thread has never refreshed.
#[inline]
fn cached() -> (u64, [u8; DATE_LEN]) {
    let c = CACHE.with(Cell::get);
    if c.0 == u64::MAX {
        refresh();
        return CACHE.with(Cell::get);
    }
    c
}

/// The cached date bytes for this thread (refreshed first if this thread has
/// never refreshed).
pub fn current() -> [u8; DATE_LEN] {
    cached().1
}

/// The second the cached date shows: what a kept head's `Date` is keyed
/// on (see `head_memo`).
pub fn current_second() -> u64 {
    cached().0
}

#[cfg(test)]
mod tests {
    #[test]
    fn turn_millis_is_the_last_refresh() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let t = super::turn_millis();
        super::refresh();
        let u = super::turn_millis();
        assert!(before <= t && t <= u, "{before} {t} {u}");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(super::turn_millis(), u);
        super::refresh();
        assert!(super::turn_millis() >= u + 5);
    }

    #[test]
    fn formats_imf_fixdate() {
        super::refresh();
        let d = super::current();
        let s = std::str::from_utf8(&d).unwrap();
        assert!(s.ends_with(" GMT"), "{s}");
        assert!(httpdate::parse_http_date(s).is_ok(), "{s}");
    }
}
