//! Runs the real `flashd` binary for integration tests and talks to it over
//! loopback.
#![allow(dead_code)] // each test file uses a different part of this kit

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod services;

pub use flashd_protocol::{parse_response, ParsedResponse};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flashd")
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "flashd-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub struct Flashd {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub log: mpsc::Receiver<String>,
}

impl Flashd {
    /// Start `flashd serve` on an ephemeral port with `extra` TOML appended
    /// to a minimal config; waits for its "flashd ready" line.
    pub fn start(extra: &str) -> Flashd {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Flashd {
        Self::start_in(TempDir::new("srv"), extra, env)
    }

    /// Start on an existing directory (its `data` holds the log of an
    /// earlier run): a restart.
    pub fn start_in(dir: TempDir, extra: &str, env: &[(&str, &str)]) -> Flashd {
        match Self::try_start_in(dir, extra, env) {
            Ok(f) => f,
            Err((_, log)) => panic!("flashd did not become ready:\n{}", log.join("\n")),
        }
    }

    /// Like `start_in`, but a server that exits instead of becoming ready
    /// gives back its directory and everything it logged.
    pub fn try_start_in(
        dir: TempDir,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Result<Flashd, (TempDir, Vec<String>)> {
        let cfg = dir.path().join("flashd.toml");
        let listen = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        );
        let listen = listen.as_str();
        let text = if extra.contains("[server]\n") {
            extra.replacen("[server]\n", listen, 1)
        } else {
            format!("{listen}{extra}")
        };
        std::fs::write(&cfg, text).unwrap();
        // WATCHDOG_PID=self: exported as the server's own pid, as systemd
        // does, by exec'ing through a shell that knows its pid.
        let mut cmd = if env
            .iter()
            .any(|(k, v)| *k == "WATCHDOG_PID" && *v == "self")
        {
            let mut c = Command::new("sh");
            c.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", bin()]);
            c
        } else {
            Command::new(bin())
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC");
        for (k, v) in env.iter().filter(|(k, _)| *k != "WATCHDOG_PID") {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn flashd");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[flashd] {line}");
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining so the pipe
                    // never fills and blocks the server.
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if line.contains("flashd ready") {
                        let a = line
                            .split("listen=")
                            .nth(1)
                            .unwrap()
                            .split_whitespace()
                            .next()
                            .unwrap();
                        break a.parse().unwrap();
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err((dir, seen));
                }
            }
        };
        Ok(Flashd {
            child,
            addr,
            dir,
            log: rx,
        })
    }

    /// `kill -9`, and keep the directory for a restart.
    pub fn crash(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        TempDir(std::mem::take(&mut self.dir.0))
    }

    /// SIGTERM, wait for a clean exit, keep the directory.
    pub fn stop(mut self) -> TempDir {
        self.signal(libc::SIGTERM);
        let st = self.wait(Duration::from_secs(20));
        assert_eq!(st.code(), Some(0), "clean stop");
        TempDir(std::mem::take(&mut self.dir.0))
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("data").join("log")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Wait for exit, failing the test after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t0.elapsed() < limit, "flashd did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident set size of the server in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    pub fn get(&self, path: &str) -> ParsedResponse {
        request(
            self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
    }
}

impl Drop for Flashd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// One request on a fresh connection; its one response.
pub fn request(addr: SocketAddr, raw: &str) -> ParsedResponse {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    let r = read_responses(&mut s, 1);
    r.into_iter().next().expect("no response")
}

pub fn read_responses(s: &mut TcpStream, n: usize) -> Vec<ParsedResponse> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while let Some((r, used)) = parse_response(&buf).unwrap() {
            buf.drain(..used);
            out.push(r);
            if out.len() == n {
                return out;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return out,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// Raise this test process's open-file limit to its hard limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to a local rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

// ---- The sale API, as a client sees it. ----

use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const ADMIN: &str = "test-admin-token-0123456789";

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token_with(secret: &str, user: u64, exp: u64) -> String {
    let claims = serde_json::json!({"sub": user.to_string(), "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn token(user: u64) -> String {
    token_with(SECRET, user, now_s() + 3600)
}

pub fn sale_config(extra: &str) -> String {
    format!("[auth]\njwt_secret = \"{SECRET}\"\nadmin_token = \"{ADMIN}\"\n{extra}")
}

pub fn rfc3339(offset_s: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_s);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

pub fn post(path: &str, auth: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

pub fn get(path: &str, auth: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {auth}\r\n\r\n")
}

pub fn json(r: &ParsedResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body_str()))
}

pub fn create(addr: SocketAddr, stock: u64, limit: u32, start_s: i64, end_s: i64) -> u64 {
    let body = format!(
        r#"{{"sku_id":"SKU-{stock}","name":"Flash \"deal\"","price_cents":1999,"stock":{stock},"start_at":"{}","end_at":"{}","per_user_limit":{limit}}}"#,
        rfc3339(start_s),
        rfc3339(end_s)
    );
    let r = request(addr, &post("/api/v1/activities", ADMIN, &body));
    assert_eq!(r.status, 201, "{}", r.body_str());
    let v = json(&r);
    assert_eq!(v["name"], "Flash \"deal\"");
    v["id"].as_u64().unwrap()
}

/// `create`, retried while the log answers 503 ("nothing was changed", so
/// a retry is safe): the first write to a freshly started broker and topic
/// can take longer than a test's short `unavailable_ms`.
#[allow(dead_code)]
pub fn create_when_log_ready(
    addr: SocketAddr,
    stock: u64,
    limit: u32,
    start_s: i64,
    end_s: i64,
    within: Duration,
) -> u64 {
    let body = format!(
        r#"{{"sku_id":"SKU-{stock}","name":"Flash \"deal\"","price_cents":1999,"stock":{stock},"start_at":"{}","end_at":"{}","per_user_limit":{limit}}}"#,
        rfc3339(start_s),
        rfc3339(end_s)
    );
    let deadline = Instant::now() + within;
    loop {
        let r = request(addr, &post("/api/v1/activities", ADMIN, &body));
        if r.status == 503 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(r.status, 201, "{}", r.body_str());
        return json(&r)["id"].as_u64().unwrap();
    }
}

pub fn activity(addr: SocketAddr, id: u64) -> Value {
    let r = request(
        addr,
        &format!("GET /api/v1/activities/{id} HTTP/1.1\r\nHost: t\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    json(&r)
}

pub fn buy_req(activity: u64, user: u64, qty: u32, rid: &str) -> String {
    post(
        &format!("/api/v1/activities/{activity}/orders"),
        &token(user),
        &format!(r#"{{"quantity":{qty},"request_id":"{rid}"}}"#),
    )
}

/// Send `reqs` on one keep-alive connection, pipelined `depth` at a time.
pub fn pipelined(addr: SocketAddr, reqs: &[String], depth: usize) -> Vec<ParsedResponse> {
    let mut s = connect(addr);
    let mut out = Vec::with_capacity(reqs.len());
    for chunk in reqs.chunks(depth) {
        let joined: String = chunk.concat();
        s.write_all(joined.as_bytes()).unwrap();
        let got = read_responses(&mut s, chunk.len());
        assert_eq!(got.len(), chunk.len(), "connection closed early");
        out.extend(got);
    }
    out
}
