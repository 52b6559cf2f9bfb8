//! flashd-load: an open-loop, fixed-rate HTTP/1.1 load generator whose
//! latencies are corrected for coordinated omission, for the one scenario
//! that off-the-shelf fixed-rate clients (oha) cannot drive: purchases by
//! distinct users, each request with its own token and request id.
//!
//! Every connection has its own schedule (`conns / rate` apart) and sends
//! its next request at its scheduled time, or at once when it is behind;
//! `--threads` epoll loops (default 1) drive all connections, so the client
//! does not itself add scheduler latency the way a thread per connection
//! does once its core is busy;
//! a request's latency runs from its *scheduled* time to its response, so
//! a server that stalls is charged for every request it kept waiting, as
//! wrk2 does.
//!
//!   flashd-load --url http://127.0.0.1:8080 --rate 25000 --duration 10 \
//!       --conns 64 buy ACTIVITY TOKENS_FILE
//!   flashd-load --url ... --rate 25000 get PATH
//!
//! Between sends a thread sleeps in epoll until a timerfd fires at the
//! next send; `--spin` polls without sleeping within 2 ms of it instead
//! (the older behaviour, kept to compare: it holds the client's core at
//! 100%).
//!
//! The first `--warmup` seconds (default 1) run at the full rate but are
//! not counted. Windows of 100 ms in which some request waited over 10 ms
//! are listed on stderr, to tell one stall from a steady tail.
//!
//! Prints one JSON line: achieved rate, p50/p90/p99/p99.9/max in ms, and
//! the count of each status.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashd_protocol::parse_response;

enum Work {
    Buy {
        activity: String,
        tokens: Arc<Vec<String>>,
        next: Arc<AtomicUsize>,
    },
    Get {
        path: String,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("flashd-load: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut url = "http://127.0.0.1:8080".to_string();
    let (mut rate, mut duration, mut conns) = (1000.0f64, 10.0f64, 64usize);
    let mut warmup = 1.0f64;
    let mut nthreads = 1usize;
    let mut spin = false;
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = val()?,
            "--rate" => rate = val()?.parse().map_err(|_| "--rate: a number")?,
            "--duration" => duration = val()?.parse().map_err(|_| "--duration: seconds")?,
            "--conns" => conns = val()?.parse().map_err(|_| "--conns: a number")?,
            "--warmup" => warmup = val()?.parse().map_err(|_| "--warmup: seconds")?,
            "--threads" => nthreads = val()?.parse().map_err(|_| "--threads: a number")?,
            "--spin" => spin = true,
            _ => rest.push(a),
        }
    }
    let host = url
        .strip_prefix("http://")
        .ok_or("--url must be http://HOST:PORT")?
        .trim_end_matches('/')
        .to_string();
    let work = match rest.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["buy", activity, file] => {
            let f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
            let tokens: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
            if tokens.is_empty() {
                return Err(format!("{file}: no tokens"));
            }
            Work::Buy {
                activity: activity.to_string(),
                tokens: Arc::new(tokens),
                next: Arc::new(AtomicUsize::new(0)),
            }
        }
        ["get", path] => Work::Get { path: path.to_string() },
        _ => return Err("usage: flashd-load [--url U] [--rate R] [--duration S] [--conns C] (buy ACTIVITY TOKENS | get PATH)".into()),
    };
    if rate <= 0.0 || conns == 0 || duration <= 0.0 || nthreads == 0 {
        return Err("--rate, --conns, --threads and --duration must be > 0".into());
    }
    let nthreads = nthreads.min(conns);
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&host)
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or(format!("{host}: no address"))?;
    let work = Arc::new(work);
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    // Connections open and threads settle during the warm-up, which runs at
    // the full rate but is left out of the figures.
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(duration);
    let threads: Vec<_> = (0..nthreads)
        .map(|t| {
            let (work, host) = (work.clone(), host.clone());
            // Connection c (of all) starts c/conns of an interval in, so
            // the sends are spread evenly over time.
            let mine: Vec<Instant> = (0..conns)
                .filter(|c| c % nthreads == t)
                .map(|c| start + interval.mul_f64(c as f64 / conns as f64))
                .collect();
            std::thread::spawn(move || {
                event_loop(
                    addr,
                    &host,
                    &work,
                    &mine,
                    &Schedule {
                        interval,
                        measure_from,
                        end,
                        spin,
                    },
                )
            })
        })
        .collect();
    let mut lat: Vec<u32> = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0u64;
    let mut worst: Vec<u32> = Vec::new();
    for t in threads {
        let r = t.join().map_err(|_| "a connection thread panicked")?;
        if worst.len() < r.worst.len() {
            worst.resize(r.worst.len(), 0);
        }
        for (w, x) in worst.iter_mut().zip(&r.worst) {
            *w = (*w).max(*x);
        }
        lat.extend(r.lat_us);
        for (s, n) in r.statuses {
            *statuses.entry(s).or_default() += n;
        }
        errors += r.errors;
    }
    // Stalls on stderr: the 100 ms windows whose worst request waited
    // more than 10 ms, with their offset into the measured run.
    let stalls: Vec<String> = worst
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 10_000)
        .map(|(i, w)| format!("{:.1}s:{}ms", i as f64 / 10.0, w / 1000))
        .collect();
    if !stalls.is_empty() {
        eprintln!(
            "flashd-load: windows with a request over 10 ms: {}",
            stalls.join(" ")
        );
    }
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0
    };
    let st: Vec<String> = statuses
        .iter()
        .map(|(s, n)| format!("\"{s}\": {n}"))
        .collect();
    println!(
        "{{\"target_rate\": {rate}, \"achieved_rate\": {:.0}, \"requests\": {}, \"p50_ms\": {:.3}, \"p90_ms\": {:.3}, \"p99_ms\": {:.3}, \"p999_ms\": {:.3}, \"max_ms\": {:.3}, \"errors\": {errors}, \"status\": {{{}}}}}",
        lat.len() as f64 / duration,
        lat.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        st.join(", ")
    );
    Ok(())
}

#[derive(Default)]
struct ConnResult {
    lat_us: Vec<u32>,
    /// The worst latency per 100 ms of schedule, to see when stalls hit.
    worst: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

/// One connection of an event loop.
struct Conn {
    stream: mio::net::TcpStream,
    /// When its next request is due.
    due: Instant,
    /// The due time of the request in flight, if any.
    inflight: Option<Instant>,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
}

/// When requests are due and which responses count, shared by the threads.
#[derive(Clone, Copy)]
struct Schedule {
    /// Between two sends on one connection.
    interval: Duration,
    /// Responses to requests due before this are the warm-up's.
    measure_from: Instant,
    /// No request is due from here on.
    end: Instant,
    /// Poll without sleeping within 2 ms of a send (instead of a timerfd).
    spin: bool,
}

/// Drive some connections open loop on one thread with epoll: each sends
/// its next request when it is due (or at once when behind), and a
/// response's latency runs from its request's due time.
fn event_loop(
    addr: std::net::SocketAddr,
    host: &str,
    work: &Work,
    firsts: &[Instant],
    sched: &Schedule,
) -> ConnResult {
    let Schedule {
        interval,
        measure_from,
        end,
        spin,
    } = *sched;
    use mio::{Events, Interest, Poll, Token};
    let mut out = ConnResult::default();
    let mut poll = Poll::new().expect("epoll");
    let mut events = Events::with_capacity(1024);
    let connect = |poll: &Poll, i: usize| -> mio::net::TcpStream {
        let mut s = mio::net::TcpStream::connect(addr).expect("connect");
        let _ = s.set_nodelay(true);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
            .expect("register");
        s
    };
    let mut conns: Vec<Conn> = firsts
        .iter()
        .enumerate()
        .map(|(i, first)| Conn {
            stream: connect(&poll, i),
            due: *first,
            inflight: None,
            out: Vec::with_capacity(1024),
            written: 0,
            inbuf: Vec::with_capacity(4096),
        })
        .collect();
    let mut timer = Timer::new();
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&timer.fd),
            Token(TIMER),
            Interest::READABLE,
        )
        .expect("register timerfd");
    let mut seq = 0u64;
    let hard_stop = end + Duration::from_secs(10);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= hard_stop || (now >= end && conns.iter().all(|c| c.inflight.is_none())) {
            break;
        }
        // Send what is due.
        let mut next_due: Option<Instant> = None;
        for c in conns.iter_mut() {
            if c.inflight.is_none() && c.due < end {
                if c.due <= now {
                    c.out.clear();
                    c.written = 0;
                    seq += 1;
                    build_request(work, host, seq, &mut c.out);
                    c.inflight = Some(c.due);
                    c.due += interval;
                    flush(c);
                } else {
                    next_due = Some(next_due.map_or(c.due, |d: Instant| d.min(c.due)));
                }
            }
        }
        // epoll's timeout is in whole milliseconds (rounded up), so
        // sleeping in it until a send is due would make the client itself
        // up to a millisecond late, and the correction would charge that to
        // the server. A timerfd wakes the loop to the microsecond instead.
        // Spinning would do too, but it keeps the client's core 100% busy:
        // more load than the requests, and on this VM a busy CPU beside a
        // syncing one gets the guest throttled
        // (bench/results/2026-11-23-fsync-vm.md).
        let timeout = match next_due.map(|d| d.saturating_duration_since(Instant::now())) {
            Some(t) if t.is_zero() => Some(Duration::ZERO),
            Some(t) if spin && t < Duration::from_millis(2) => Some(Duration::ZERO),
            Some(t) => {
                timer.arm_at(next_due.unwrap_or(Instant::now()), t);
                None
            }
            None => Some(Duration::from_millis(10)),
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll: {e}");
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if i == TIMER {
                timer.clear();
                continue;
            }
            let c = &mut conns[i];
            if ev.is_writable() && c.written < c.out.len() {
                flush(c);
            }
            if !(ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                continue;
            }
            let mut broken = ev.is_error();
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        broken = true;
                        break;
                    }
                    Ok(n) => c.inbuf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            match parse_response(&c.inbuf) {
                Ok(Some((r, used))) => {
                    c.inbuf.drain(..used);
                    if let Some(due) = c.inflight.take() {
                        let got = Instant::now();
                        if due >= measure_from {
                            *out.statuses.entry(r.status).or_default() += 1;
                            let us = got.saturating_duration_since(due).as_micros();
                            let us = us.min(u32::MAX as u128) as u32;
                            out.lat_us.push(us);
                            let w = due.duration_since(measure_from).as_millis() as usize / 100;
                            if out.worst.len() <= w {
                                out.worst.resize(w + 1, 0);
                            }
                            out.worst[w] = out.worst[w].max(us);
                        }
                    }
                }
                Ok(None) => {}
                Err(_) => broken = true,
            }
            if broken {
                // The server closed or broke the connection: count the
                // request as an error and start over on a new one.
                if c.inflight.take().is_some_and(|d| d >= measure_from) {
                    out.errors += 1;
                }
                let _ = poll.registry().deregister(&mut c.stream);
                c.stream = connect(&poll, i);
                c.inbuf.clear();
                c.out.clear();
                c.written = 0;
            }
        }
    }
    out
}

const TIMER: usize = usize::MAX;

/// A one-shot CLOCK_MONOTONIC timerfd (the clock `Instant` reads), so
/// that epoll can sleep until the next send to the microsecond.
struct Timer {
    fd: i32,
    /// The instant it is armed for: most loop turns wait for the same
    /// send, and re-arming for it would cost a syscall each.
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Timer {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        assert!(
            fd >= 0,
            "timerfd_create: {}",
            std::io::Error::last_os_error()
        );
        Timer { fd, armed: None }
    }

    /// Fire at `at`, which is `after` from now.
    fn arm_at(&mut self, at: Instant, after: Duration) {
        if self.armed == Some(at) {
            return;
        }
        self.armed = Some(at);
        let after = after.max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: fd is our timerfd; spec outlives the call.
        unsafe { libc::timerfd_settime(self.fd, 0, &spec, std::ptr::null_mut()) };
    }

    /// Read the expiry count so that the next expiry is a new edge.
    fn clear(&mut self) {
        self.armed = None;
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into n; EAGAIN when nothing expired.
        unsafe { libc::read(self.fd, (&mut n as *mut u64).cast(), 8) };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: we own fd.
        unsafe { libc::close(self.fd) };
    }
}

fn build_request(work: &Work, host: &str, seq: u64, req: &mut Vec<u8>) {
    match work {
        Work::Buy {
            activity,
            tokens,
            next,
        } => {
            let i = next.fetch_add(1, Ordering::Relaxed);
            // Request ids are per user across sales: name the sale in them.
            let body = format!("{{\"quantity\":1,\"request_id\":\"a{activity}-l{i}-{seq}\"}}");
            let _ = write!(
                req,
                "POST /api/v1/activities/{activity}/orders HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                tokens[i % tokens.len()],
                body.len()
            );
        }
        Work::Get { path } => {
            let _ = write!(req, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        }
    }
}

/// Write what the socket takes now; the rest goes on a writable event (a
/// connection still being set up takes nothing yet).
fn flush(c: &mut Conn) {
    while c.written < c.out.len() {
        match c.stream.write(&c.out[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}
