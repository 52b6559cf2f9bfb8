//! Proves the dashboard and the buyer page in a real browser: headless
//! Chromium, driven over the WebDriver protocol (chromedriver, spoken to
//! with hand-written HTTP), opens the pages served by the running binary,
//! the test sends buys, and the numbers on screen must move and settle on
//! what the API says. Screenshots go to `target/browser/` (the paths are
//! printed); with `FLASHD_SCREENSHOT_DOCS=1` the dashboard's also goes to
//! `docs/dashboard.png`. Skipped, with a message, where Chromium or
//! chromedriver is not installed (`scripts/test` installs both).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn tool(var: &str, default: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()));
    p.exists().then_some(p)
}

/// chromedriver and the browser session it runs; both end on drop.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while call(addr, "GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_str().unwrap(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100",
                         "--no-first-run", "--no-default-browser-check"],
            }
        }}});
        let v = call(addr, "POST", "/session", Some(&caps)).expect("new session");
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        call(self.addr, method, &p, body).unwrap_or_else(|e| panic!("{method} {p}: {e}"))
    }

    fn open(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: no element in {v}"))
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(&json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(&json!({})));
    }

    /// The text of the element with this id, as shown ("" if none).
    fn text(&self, id: &str) -> String {
        let v = self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({
                "script": "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
                "args": [id],
            })),
        );
        v.as_str().unwrap_or_default().to_string()
    }

    /// A number shown with thousands separators.
    fn number(&self, id: &str) -> Option<u64> {
        self.text(id).replace(',', "").trim().parse().ok()
    }

    fn wait(&self, what: &str, within: Duration, ok: impl Fn(&Browser) -> bool) {
        let deadline = Instant::now() + within;
        while !ok(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, to: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .unwrap();
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
        eprintln!("screenshot: {}", to.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = call(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver call: HTTP/1.1 with `Connection: close`, the JSON
/// answer's `value`.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // Read up to the end of the answer (by its length): chromedriver may
    // keep the connection open whatever `Connection` says.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 65536];
    let r = loop {
        if let Some((r, _)) = parse_response(&raw).map_err(|e| format!("{e:?}"))? {
            break r;
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err("closed before a whole answer".into()),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    };
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("{}: {}", r.status, v));
    }
    Ok(v["value"].clone())
}

fn buy(addr: SocketAddr, sale: u64, user: u64) {
    let r = request(addr, &buy_req(sale, user, 1, &format!("r{user}")));
    assert_eq!(r.status, 201, "{}", r.body_str());
}

fn dashboard_data(addr: SocketAddr) -> Value {
    let r = request(addr, &get("/api/v1/dashboard", ADMIN));
    assert_eq!(r.status, 200);
    json(&r)
}

#[test]
fn the_dashboard_and_the_buyer_page_show_a_live_sale() {
    let (Some(chromium), Some(chromedriver)) = (
        tool("FLASHD_CHROMIUM", "/usr/bin/chromium"),
        tool("FLASHD_CHROMEDRIVER", "/usr/bin/chromedriver"),
    ) else {
        eprintln!(
            "browser test SKIPPED: /usr/bin/chromium or /usr/bin/chromedriver is missing \
             (apt-get install chromium chromium-driver, or set FLASHD_CHROMIUM / FLASHD_CHROMEDRIVER)"
        );
        return;
    };
    raise_nofile();
    let f = Flashd::start(&sale_config(
        "[sse]\nmin_interval_ms = 100\n[rate_limit]\nper_user_rps = 0\n",
    ));
    let sale = create(f.addr, 500, 1, -5, 3600);
    let other = create(f.addr, 50, 1, -5, 3600);
    let base = format!("http://{}", f.addr);
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
    let b = Browser::start(&chromium, &chromedriver);

    // The dashboard: asks for the token, then polls with it.
    b.open(&format!("{base}/dashboard"));
    assert!(b.text("status").contains("admin token"));
    b.type_into("#token", "not-the-token");
    b.click("#connect");
    b.wait("the refusal", Duration::from_secs(10), |b| {
        b.text("status").contains("unauthorized")
    });
    b.type_into("#token", ADMIN);
    b.click("#connect");
    b.wait("the dashboard to go live", Duration::from_secs(10), |b| {
        b.text("status").starts_with("live")
    });
    let remaining = format!("sale-{sale}-remaining");
    b.wait("the sale's row", Duration::from_secs(10), |b| {
        b.number(&remaining) == Some(500)
    });

    // Buys in rounds: the numbers on screen must move while they run.
    let mut user = 0;
    let mut shown = vec![b.number(&remaining).unwrap()];
    for _ in 0..6 {
        for _ in 0..25 {
            user += 1;
            buy(f.addr, sale, user);
        }
        for _ in 0..5 {
            user += 1;
            buy(f.addr, other, user);
        }
        std::thread::sleep(Duration::from_millis(1200));
        shown.push(b.number(&remaining).unwrap());
    }
    assert!(
        shown.windows(2).filter(|w| w[1] < w[0]).count() >= 4,
        "the remaining count on screen moved with the buys: {shown:?}"
    );
    // Sold out on the second sale: a rejection by reason shows up.
    for u in 1..=3 {
        let r = request(f.addr, &buy_req(other, 10_000 + u, 1, "x"));
        assert!(r.status == 201 || r.status == 409, "{}", r.body_str());
    }
    for u in 31..=60 {
        let r = request(f.addr, &buy_req(other, 20_000 + u, 1, "y"));
        assert!(r.status == 201 || r.status == 409, "{}", r.body_str());
    }

    // Settled: what the page shows is what the API says.
    let api = activity(f.addr, sale);
    b.wait(
        "the screen to match the API",
        Duration::from_secs(10),
        |b| {
            let d = dashboard_data(f.addr);
            b.number(&remaining) == api["remaining"].as_u64()
                && b.number(&format!("sale-{sale}-sold")) == api["sold"].as_u64()
                && b.number(&format!("sale-{sale}-reserved")) == api["reserved"].as_u64()
                && b.text(&format!("sale-{sale}-state")) == api["state"].as_str().unwrap()
                && b.number("orders-total") == d["orders_created"].as_u64()
                && b.number("reject-sold_out-total") == d["rejected"]["sold_out"].as_u64()
        },
    );
    assert_eq!(api["remaining"], 500 - 150);
    assert!(b.number("reject-sold_out-total").unwrap() > 0);
    assert!(b.text("p99").ends_with(" ms"), "{}", b.text("p99"));
    assert!(b.text("subscribers").contains("/ 50,000"));
    assert_eq!(b.text("breaker"), "closed");
    b.screenshot(&out.join("dashboard.png"));
    if std::env::var_os("FLASHD_SCREENSHOT_DOCS").is_some() {
        b.screenshot(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png"));
    }

    // The buyer page counts down from its stream.
    b.open(&format!("{base}/activities/{sale}"));
    b.wait("the buyer page's stream", Duration::from_secs(10), |b| {
        b.text("conn") == "live" && b.number("remaining") == Some(350)
    });
    let events_before = b.number("events").unwrap();
    let mut seen = vec![350];
    for _ in 0..5 {
        for _ in 0..10 {
            user += 1;
            buy(f.addr, sale, user);
        }
        std::thread::sleep(Duration::from_millis(500));
        seen.push(b.number("remaining").unwrap());
    }
    assert!(
        seen.windows(2).filter(|w| w[1] < w[0]).count() >= 3,
        "the buyer page counted down: {seen:?}"
    );
    let api = activity(f.addr, sale);
    b.wait(
        "the buyer page to match the API",
        Duration::from_secs(5),
        |b| {
            b.number("remaining") == api["remaining"].as_u64()
                && b.number("reserved") == api["reserved"].as_u64()
        },
    );
    assert_eq!(api["remaining"], 300);
    assert!(b.number("events").unwrap() > events_before);
    b.screenshot(&out.join("buyer.png"));
}
