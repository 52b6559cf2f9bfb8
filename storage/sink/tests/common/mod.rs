//! What both fault tests need: order ids of now, and the machine's
//! MariaDB (127.0.0.1, `FLASHD_MYSQL_PORT` or 3306, root) as throwaway
//! databases.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use flashd_engine::{order_id_floor, OrderId};
use mysql_async::prelude::*;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The `n`th order id of this millisecond.
pub fn oid(n: u64) -> OrderId {
    order_id_floor(now_ms()) | n
}

/// A database on the machine's MariaDB (`""`: the server).
pub fn mysql_url(db: &str) -> String {
    let port = std::env::var("FLASHD_MYSQL_PORT").unwrap_or_else(|_| "3306".into());
    format!("mysql://root@127.0.0.1:{port}/{db}")
}

/// A database name no other test run uses.
pub fn unique(tag: &str) -> String {
    format!(
        "flashd_t_{tag}_{}_{}",
        std::process::id(),
        now_ms() % 1_000_000_000
    )
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn query<T: FromRow + Send + 'static>(url: &str, sql: &str) -> Vec<T> {
    rt().block_on(async {
        let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(url).unwrap())
            .await
            .unwrap();
        let r = c.query(sql).await.unwrap();
        let _ = c.disconnect().await;
        r
    })
}

pub fn exec(url: &str, sql: &str) {
    let _: Vec<u8> = query(url, sql);
}

pub fn drop_db(url: &str) {
    let db = url.rsplit('/').next().unwrap().to_string();
    exec(&mysql_url(""), &format!("DROP DATABASE IF EXISTS `{db}`"));
}

pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
