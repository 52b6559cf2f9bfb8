//! The access log (`logging.access_log`): which requests get a line, and
//! the line. `off` costs the request path one comparison; `errors` logs
//! answers of 500 and above; `all` logs every request, or one in
//! `logging.access_sample_every` (counted per reactor, so no shared
//! counter). Lines are INFO events of target `flashd::access` with the
//! request's id, route, status and peer.

use std::net::IpAddr;

use crate::config::{AccessLogMode, LoggingSection};

/// The first status the `errors` mode logs: the server's own failures
/// (503 overloaded or log unavailable, 500).
pub const ERROR_STATUS_MIN: u16 = 500;

/// One reactor's access log: the mode, and its sampling count.
#[derive(Debug, Clone)]
pub struct AccessLog {
    mode: AccessLogMode,
    every: u64,
    seen: u64,
}

impl AccessLog {
    pub fn new(cfg: &LoggingSection) -> AccessLog {
        AccessLog {
            mode: cfg.access_log,
            every: u64::from(cfg.access_sample_every.max(1)),
            seen: 0,
        }
    }

    /// Whether the request answered with `status` gets a line.
    #[inline]
    pub fn wants(&mut self, status: u16) -> bool {
        match self.mode {
            AccessLogMode::Off => false,
            AccessLogMode::Errors => status >= ERROR_STATUS_MIN,
            AccessLogMode::All => {
                self.seen += 1;
                self.seen.is_multiple_of(self.every)
            }
        }
    }
}

/// Write one request's line.
pub fn write(request_id: &str, route: &str, status: u16, peer: IpAddr) {
    tracing::info!(
        target: "flashd::access",
        request_id,
        route,
        status,
        peer = %peer,
        "access"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(mode: AccessLogMode, every: u32) -> AccessLog {
        AccessLog::new(&LoggingSection {
            access_log: mode,
            access_sample_every: every,
            ..Default::default()
        })
    }

    #[test]
    fn each_mode_picks_its_requests() {
        let statuses = [200u16, 201, 404, 409, 429, 500, 503];
        let picked = |mut l: AccessLog| -> Vec<u16> {
            statuses.iter().copied().filter(|&s| l.wants(s)).collect()
        };
        assert!(picked(log(AccessLogMode::Off, 1)).is_empty());
        assert_eq!(picked(log(AccessLogMode::Errors, 1)), [500, 503]);
        assert_eq!(picked(log(AccessLogMode::All, 1)), statuses);
        // One in three: the 3rd and the 6th.
        assert_eq!(picked(log(AccessLogMode::All, 3)), [404, 500]);
    }
}
