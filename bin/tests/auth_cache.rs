//! The token cache (issue 17) seen from a client, on a real server over
//! loopback: a buyer's token keeps working on retries, stops at its `exp`
//! even though the reactor verified it before, and a cached token's header
//! and claims under another signature are refused. One sub-reactor, so
//! every request meets the same thread's table; a fake clock moves time.

mod common;

use std::sync::Arc;

use common::*;
use flashd::clock::{Clock, FakeClock, SystemClock};
use flashd::config::Config;
use flashd::serve::Service;

fn service(dir: &TempDir, clock: Arc<dyn Clock>) -> Service {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
        dir.path().join("data").display(),
        sale_config(
            "[reactor]\nsub_reactors = 1\npin_cpus = false\n[rate_limit]\nper_user_rps = 0\n"
        )
    );
    let cfg = Config::parse(&text).unwrap_or_else(|e| panic!("config: {e:?}"));
    Service::start(&cfg, clock).expect("service starts")
}

/// An order nobody has: 404 for a buyer whose token is accepted, 401 for
/// one whose token is not.
fn status(addr: std::net::SocketAddr, token: &str) -> u16 {
    request(addr, &get("/api/v1/orders/999999", token)).status
}

#[test]
fn a_cached_token_still_expires_and_forgeries_of_it_are_refused() {
    let dir = TempDir::new("auth-cache");
    let clock = Arc::new(FakeClock::new(SystemClock.now_ms()));
    let svc = service(&dir, clock.clone());
    let addr = svc.local_addr();
    // The log must be open before API requests are served.
    create_when_log_ready(addr, 1, 1, -5, 3600, std::time::Duration::from_secs(30));
    let now_s = clock.now_ms() / 1000;
    let good = token_with(SECRET, 77, now_s + 60);
    for _ in 0..5 {
        assert_eq!(status(addr, &good), 404);
    }
    // The same header and claims, signed with another secret, and with
    // one signature symbol changed where it does not pick the slot.
    let other = token_with("another-secret-0123456789abcdef", 77, now_s + 60);
    let dot = good.rfind('.').unwrap();
    let foreign = format!("{}{}", &good[..dot], &other[other.rfind('.').unwrap()..]);
    let mut inside = good.clone().into_bytes();
    let k = inside.len() - 12;
    inside[k] = if inside[k] == b'A' { b'B' } else { b'A' };
    let inside = String::from_utf8(inside).unwrap();
    for forged in [&foreign, &inside] {
        assert_ne!(forged, &good);
        assert_eq!(status(addr, forged), 401, "{forged}");
    }
    assert_eq!(status(addr, &good), 404);
    // Up to the leeway past exp it is accepted; a second later not.
    clock.set((now_s + 65) * 1000);
    assert_eq!(status(addr, &good), 404);
    clock.set((now_s + 66) * 1000);
    assert_eq!(status(addr, &good), 401);
    assert_eq!(status(addr, &good), 401);
}
