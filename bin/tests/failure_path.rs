//! Proves the binary's failure path end to end: a second flashd on the same
//! data directory is refused with the holder's pid, and a log writer that
//! stops answering (a stalled disk, via the `stall` failpoint) stops the
//! systemd watchdog pings until it moves again, while the wedged order is
//! never confirmed.
#![cfg(feature = "failpoints")]

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_with_the_holders_pid() {
    let first = Flashd::start("");
    let second_dir = TempDir::new("second");
    let cfg = second_dir.path().join("flashd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            first.dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second server must not start");
    assert!(
        err.contains(&format!("pid {}", first.pid())),
        "the refusal names the holder: {err}"
    );
    // The first one is untouched.
    assert_eq!(first.get("/readyz").status, 200);
    // After it stops, the directory is free again.
    let dir = first.stop();
    let again = Flashd::start_in(dir, "", &[]);
    assert_eq!(again.get("/readyz").status, 200);
}

#[test]
fn a_wedged_log_writer_stops_the_watchdog_until_it_moves_again() {
    let d = TempDir::new("wedge");
    let sock_path = d.path().join("notify.sock");
    let fp = d.path().join("failpoints");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let f = Flashd::start_with_env(
        &sale_config(""),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "300000"),
            ("WATCHDOG_PID", "self"),
            ("FLASHD_FAILPOINTS", fp.to_str().unwrap()),
        ],
    );
    let pings_within = |window: Duration| -> usize {
        let t0 = Instant::now();
        let mut buf = [0u8; 512];
        let mut n = 0;
        while t0.elapsed() < window {
            if let Ok(len) = sock.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..len]).contains("WATCHDOG=1") {
                    n += 1;
                }
            }
        }
        n
    };
    let a = create(f.addr, 10, 1, -60, 3600);
    assert!(
        pings_within(Duration::from_millis(600)) >= 2,
        "pings while healthy"
    );

    // The disk stops answering in the middle of a buy.
    std::fs::write(&fp, "stall").unwrap();
    let addr = f.addr;
    let buyer = std::thread::spawn(move || {
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        std::io::Write::write_all(&mut s, buy_req(a, 7, 1, "wedged").as_bytes()).unwrap();
        read_responses(&mut s, 1).remove(0)
    });
    // Past WatchdogSec of stall: no pings at all.
    std::thread::sleep(Duration::from_millis(500));
    let _ = pings_within(Duration::from_millis(50)); // drain what was queued
    assert_eq!(
        pings_within(Duration::from_millis(900)),
        0,
        "pings while the writer is wedged"
    );

    // The disk answers again: the order is made durable, pings resume.
    std::fs::remove_file(&fp).unwrap();
    let r = buyer.join().unwrap();
    assert!(
        r.status == 201 || r.status == 503,
        "the wedged buy ends as a confirmed order or a timeout, got {}",
        r.status
    );
    assert!(
        pings_within(Duration::from_millis(900)) >= 2,
        "pings after recovery"
    );
    f.stop();
}
