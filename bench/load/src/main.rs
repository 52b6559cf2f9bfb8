//! flashd-load: an open-loop, fixed-rate HTTP/1.1 load generator whose
//! latencies are corrected for coordinated omission, for the one scenario
//! that off-the-shelf fixed-rate clients (oha) cannot drive: purchases by
//! distinct users, each request with its own token and request id.
//!
//! Every connection has its own schedule (`conns / rate` apart) and sends
//! its next request at its scheduled time, or at once when it is behind;
//! a request's latency runs from its *scheduled* time to its response, so
//! a server that stalls is charged for every request it kept waiting, as
//! wrk2 does.
//!
//!   flashd-load --url http://127.0.0.1:8080 --rate 25000 --duration 10 \
//!       --conns 64 buy ACTIVITY TOKENS_FILE
//!   flashd-load --url ... --rate 25000 get PATH
//!
//! Prints one JSON line: achieved rate, p50/p90/p99/p99.9/max in ms, and
//! the count of each status.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
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
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = val()?,
            "--rate" => rate = val()?.parse().map_err(|_| "--rate: a number")?,
            "--duration" => duration = val()?.parse().map_err(|_| "--duration: seconds")?,
            "--conns" => conns = val()?.parse().map_err(|_| "--conns: a number")?,
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
    if rate <= 0.0 || conns == 0 || duration <= 0.0 {
        return Err("--rate, --conns and --duration must be > 0".into());
    }
    let work = Arc::new(work);
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(duration);
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let (work, host) = (work.clone(), host.clone());
            // Spread the connections' schedules over one interval.
            let first = start + interval.mul_f64(c as f64 / conns as f64);
            std::thread::spawn(move || conn_loop(&host, &work, first, interval, end))
        })
        .collect();
    let mut lat: Vec<u32> = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0u64;
    for t in threads {
        let r = t.join().map_err(|_| "a connection thread panicked")?;
        lat.extend(r.lat_us);
        for (s, n) in r.statuses {
            *statuses.entry(s).or_default() += n;
        }
        errors += r.errors;
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
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

fn conn_loop(
    host: &str,
    work: &Work,
    first: Instant,
    interval: Duration,
    end: Instant,
) -> ConnResult {
    let mut out = ConnResult::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut req = Vec::with_capacity(1024);
    let mut seq = 0u64;
    let mut due = first;
    while due < end {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        req.clear();
        match work {
            Work::Buy {
                activity,
                tokens,
                next,
            } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                seq += 1;
                let body = format!("{{\"quantity\":1,\"request_id\":\"l{i}-{seq}\"}}");
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
        match exchange(&mut stream, host, &req, &mut buf) {
            Ok(status) => {
                *out.statuses.entry(status).or_default() += 1;
                let us = Instant::now().saturating_duration_since(due).as_micros();
                out.lat_us.push(us.min(u32::MAX as u128) as u32);
            }
            Err(_) => {
                out.errors += 1;
                stream = None;
            }
        }
        due += interval;
    }
    out
}

fn exchange(
    stream: &mut Option<TcpStream>,
    host: &str,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    if stream.is_none() {
        let s = TcpStream::connect(host)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        *stream = Some(s);
    }
    let s = stream.as_mut().expect("connected above");
    s.write_all(req)?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_response(buf) {
            Ok(Some((r, _))) => return Ok(r.status),
            Ok(None) => continue,
            Err(e) => return Err(std::io::Error::other(e)),
        }
    }
}
