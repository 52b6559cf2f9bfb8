//! RFC 3339 formatting of times in responses (`2026-11-22T12:00:00.123Z`),
//! allocation-free. Times are milliseconds since the Unix epoch, UTC, as
//! the engine keeps them.

/// Bytes of a formatted time: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub const RFC3339_LEN: usize = 24;

/// Write `ms` (milliseconds since the Unix epoch) as
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`. The year is clamped to 0000..=9999.
pub fn format_rfc3339(ms: u64, out: &mut [u8; RFC3339_LEN]) {
    let secs = ms / 1000;
    let milli = (ms % 1000) as u32;
    let days = (secs / 86_400) as i64;
    let sod = (secs % 86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let put2 = |o: &mut [u8], v: u32| {
        o[0] = b'0' + (v / 10) as u8;
        o[1] = b'0' + (v % 10) as u8;
    };
    let y = y.clamp(0, 9999) as u32;
    out[0] = b'0' + (y / 1000) as u8;
    out[1] = b'0' + (y / 100 % 10) as u8;
    out[2] = b'0' + (y / 10 % 10) as u8;
    out[3] = b'0' + (y % 10) as u8;
    out[4] = b'-';
    put2(&mut out[5..], m);
    out[7] = b'-';
    put2(&mut out[8..], d);
    out[10] = b'T';
    put2(&mut out[11..], hh);
    out[13] = b':';
    put2(&mut out[14..], mm);
    out[16] = b':';
    put2(&mut out[17..], ss);
    out[19] = b'.';
    out[20] = b'0' + (milli / 100) as u8;
    out[21] = b'0' + (milli / 10 % 10) as u8;
    out[22] = b'0' + (milli % 10) as u8;
    out[23] = b'Z';
}

/// [`format_rfc3339`] into a new `String` (for tests and cold paths).
pub fn rfc3339(ms: u64) -> String {
    let mut b = [0u8; RFC3339_LEN];
    format_rfc3339(ms, &mut b);
    String::from_utf8_lossy(&b).into_owned()
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_348_800_123), "2026-11-22T12:00:00.123Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
