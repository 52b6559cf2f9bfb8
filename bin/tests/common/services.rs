//! Private instances of the real services a test may stop or kill: a
//! tansu broker and a redis-server, each on its own port and directory.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FLASHD_TANSU") {
        return p.into();
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/flashd-tools/bin/tansu");
    assert!(
        p.exists(),
        "no Kafka-API broker: {} is missing (scripts/test installs it; or set FLASHD_TANSU)",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16, up: bool, limit: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let ok = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_ok();
        if ok == up {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "port {port} not {} after {limit:?}",
        if up { "up" } else { "down" }
    );
}

fn stop_child(c: &mut Child, sig: i32) {
    unsafe { libc::kill(c.id() as i32, sig) };
    let t0 = Instant::now();
    while c.try_wait().ok().flatten().is_none() {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = c.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.wait();
}

/// A tansu broker on its own port and SQLite file; restartable on both.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        b.up();
        b
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn up(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        wait_port(self.port, true, Duration::from_secs(20));
    }
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGTERM);
        }
        wait_port(self.port, false, Duration::from_secs(10));
    }
    /// Send `sig` (`SIGSTOP`: a broker that holds its connections open and
    /// answers nothing; `SIGCONT` to wake it).
    pub fn signal(&self, sig: libc::c_int) {
        let c = self.child.as_ref().expect("broker running");
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        let rc = unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", c.id());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A redis-server on its own port and directory, with the append-only
/// file fsynced per write when `durable` (what cluster mode requires).
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    durable: bool,
}

impl Redis {
    pub fn start(dir: &Path, durable: bool) -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            durable,
        };
        r.up();
        r
    }
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
    pub fn up(&mut self) {
        let (aof, fsync) = if self.durable {
            ("yes", "always")
        } else {
            ("no", "everysec")
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir.to_str().unwrap(),
                "--appendonly",
                aof,
                "--appendfsync",
                fsync,
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (scripts/test installs it)");
        self.child = Some(child);
        wait_port(self.port, true, Duration::from_secs(20));
    }
    /// kill -9: what it keeps is what its append-only file has.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGKILL);
        }
        wait_port(self.port, false, Duration::from_secs(10));
    }
    /// A command through redis-cli; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
