#!/usr/bin/env python3
"""The chaos soak: the real flashd on the Kafka backend, with buyers, payers
and cancellers running while the broker, MariaDB, flashd and the sink are
stopped, killed and restarted on a seeded schedule; then a check, from what
every client was told, of the order log (replayed by a clean restart) and
of MySQL (written by the sink). Run it through scripts/chaos; docs/chaos.md
says what it proves and how to read a failure.

Python 3.11 standard library only: the machine's `mariadb` client talks to
MySQL, raw sockets talk HTTP/1.1, and tokens are signed with hmac.
"""

import argparse
import base64
import collections
import datetime
import hashlib
import heapq
import hmac
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

# ---- Timings and limits. Each says why it is that number. ----

# Unpaid orders are cancelled this long after creation: short, so that many
# orders expire during a run and pays race the deadline (a pay after it must
# be 409, an expired order must end CANCELLED with reason timeout).
ORDER_TTL_MS = 4000
# Reads of every sale, a second apart, before the clean restart, at most:
# the state must stop moving (late deadline cancels landing) before it is
# compared with the replay's.
SETTLE_READS_MAX = 20
# The Kafka delivery deadline and breaker window: a paused broker becomes
# 503s within this long, well inside the client's timeout, so a 503 (not a
# client timeout) is the normal answer to an outage.
KAFKA_UNAVAILABLE_MS = 800
# A client waits this long for an answer. Far above anything flashd should
# take (KAFKA_UNAVAILABLE_MS plus a commit), so a timeout means flashd was
# killed or is wedged; the request's outcome then counts as unknown.
CLIENT_TIMEOUT_S = 6.0
# Attempts of one purchase (one request_id) and of one pay or cancel: a
# client retries after a 503 or a lost answer, as the API invites; bounded
# so that every client loop ends.
BUY_ATTEMPTS = 5
MOVE_ATTEMPTS = 4
# Buyers: few enough users that many reach their per-sale limit.
USERS = 400
# Mean pause between one buyer's purchases: with 3 buyer threads about 60
# purchases a second, moderate on a 2-core machine that also runs flashd,
# the broker, MariaDB and the sink.
BUY_GAP_S = 0.05
# A ring-fill burst: connections x buys pipelined on each. 32 x 64 = 2048
# buys at once, many times WORKER_RING and twice LOG_RING below, so a burst
# is answered in part 503 overloaded (the point is what happens around it).
BURST_CONNS = 32
BURST_DEPTH = 64
# flashd's worker ring and log ring in the soak's config: the smallest the
# config allows (log.ring_capacity >= 1024) or near it, so that bursts and
# outages fill them.
WORKER_RING = 64
WORKER_BATCH = 16
LOG_RING = 1024
# 503 codes that promise "nothing was changed" (README: the API): an order
# that exists although every attempt of its request got one of these is a
# violation. Any other 503 code counts as an unknown outcome.
DEFINITE_503 = ("overloaded", "unavailable")
# A (re)start gets this long to log "flashd ready": it replays the whole
# topic, on a debug build.
READY_TIMEOUT_S = 120
# Clean stop at the end: shutdown_grace_ms (5 s in the config) plus the
# final flush, with room for a loaded machine.
STOP_TIMEOUT_S = 30
# After every fault is healed, flashd must take an order within this long.
LIVENESS_S = 30
# At the end, the sink gets this long to bring MySQL level with flashd
# (minutes of backlog on a debug build, plus a consumer-group rebalance),
# then this long after each of a restart of the sink and of the broker.
SINK_CATCHUP_S = 120
SINK_RETRY_S = 60
# An unpaid order still CREATED this long after its deadline was missed by
# the expiry sweeper (sweeps every 100 ms; slack for a loaded machine).
EXPIRY_SLACK_MS = 5000
# A pay that reached flashd this long after expires_at must be refused:
# the two clocks are the same machine's; slack for millisecond rounding.
PAY_DEADLINE_SLACK_MS = 20
# Evidence printed per kind of violation (all go to violations.txt).
SHOW_PER_KIND = 8

SECRET = "chaos-jwt-secret-0123456789abcdef"
ADMIN = "chaos-admin-token-0123456789abcdef"
TOPIC = "chaos-orders"
SHARDS = ("chaos_s0", "chaos_s1")
# Patterns in flashd's or the sink's stderr that mean it crashed.
# (Not a bare "Aborted": an io::ErrorKind::ConnectionAborted in a log line
# is no crash.)
CRASH_RE = re.compile(
    r"panicked at|fatal runtime error|\baborting\b|core dumped|has overflowed its stack|SIGSEGV|SIGBUS|SIGABRT"
)


def now_ms():
    return int(time.time() * 1000)


# Ports this run has handed out (see `free_port`).
_PORTS_GIVEN = set()


def free_port():
    """A port free now and not handed out before in this run. The kernel
    may give the same ephemeral port to two binds in a row once the first
    socket is closed: a CI run once got the broker and the sink's metrics
    listener on one port, so the sink never started and every order looked
    lost (seed 1959664512)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(p)
            return p


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_port(port, limit):
    t = time.monotonic() + limit
    while time.monotonic() < t:
        if port_open(port):
            return True
        time.sleep(0.1)
    return False


def rfc3339_ms(s):
    """flashd's RFC 3339 times -> ms since the epoch."""
    return int(datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f"
    )[:-3] + "Z"


# ---- Tokens ----

def _b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


_JWT_HEAD = _b64(b'{"alg":"HS256","typ":"JWT"}')
_tokens = {}
_tokens_lock = threading.Lock()


def token(user):
    with _tokens_lock:
        t = _tokens.get(user)
    if t:
        return t
    claims = json.dumps({"sub": str(user), "exp": int(time.time()) + 7 * 86400}).encode()
    msg = _JWT_HEAD + b"." + _b64(claims)
    sig = _b64(hmac.new(SECRET.encode(), msg, hashlib.sha256).digest())
    t = (msg + b"." + sig).decode()
    with _tokens_lock:
        _tokens[user] = t
    return t


# ---- HTTP/1.1 over a raw socket ----

class NotSent(Exception):
    """The connection could not be made: flashd never saw the request."""


class Unknown(Exception):
    """Sent, but no whole answer came back: the outcome is unknown."""


def build_request(method, path, auth=None, body=None):
    head = f"{method} {path} HTTP/1.1\r\nHost: chaos\r\n"
    if auth:
        head += f"Authorization: Bearer {auth}\r\n"
    b = body.encode() if body is not None else b""
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n"
    return head.encode() + b"\r\n" + b


def parse_response(buf):
    """One response from the front of buf: (status, headers, body, rest), or
    None when more bytes are needed."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return None
    lines = buf[:i].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise Unknown(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise Unknown("chunked response (flashd sends Content-Length)")
    n = int(headers.get("content-length", "0"))
    if len(buf) - i - 4 < n:
        return None
    body = buf[i + 4:i + 4 + n]
    return status, headers, body, buf[i + 4 + n:]


def decode(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


class Http:
    """One keep-alive connection to flashd. Reconnects after flashd was
    restarted (so a request is not sent into a dead socket, which would make
    its outcome unknown for nothing)."""

    def __init__(self, run):
        self.run = run
        self.sock = None
        self.gen = -1
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def call(self, method, path, auth=None, body=None):
        if self.sock is not None and self.gen != self.run.gen:
            self.close()
        if self.sock is None:
            self.gen = self.run.gen
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.run.port), timeout=2.0)
            except OSError as e:
                self.sock = None
                raise NotSent(str(e)) from None
            self.sock.settimeout(CLIENT_TIMEOUT_S)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.sendall(build_request(method, path, auth, body))
            while True:
                r = parse_response(self.buf)
                if r is not None:
                    break
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise Unknown("connection closed")
                self.buf += chunk
        except (OSError, ValueError, Unknown) as e:
            self.close()
            raise Unknown(str(e) or type(e).__name__) from None
        status, headers, rbody, self.buf = r
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, rbody


# ---- Processes ----

class Proc:
    """A child process we may stop, pause, kill and restart. Every exit we
    did not cause is reported by the monitor."""

    def __init__(self, run, name, argv, cwd, env=None):
        self.run, self.name, self.argv, self.cwd = run, name, argv, cwd
        self.env = env
        self.p = None
        self.lock = threading.RLock()
        self.expect = None  # return codes we caused, while an exit is expected
        self.paused = False
        self.starts = 0
        self.log_path = os.path.join(run.dir, f"{name}.log")
        self.offset = 0
        self.exits = []  # (time, return code, expected)
        self.probed = (0, 0)  # (start, bytes of its log looked at for a panic)

    def start(self):
        with self.lock:
            self.starts += 1
            with open(self.log_path, "ab") as f:
                f.write(f"=== chaos: start #{self.starts} at +{self.run.t():.1f}s ===\n".encode())
                self.offset = f.tell()
            log = open(self.log_path, "ab")
            self.p = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True,
            )
            log.close()
            self.expect = None
            self.paused = False
            self.run.write_pids()
            return self.p

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def _reap(self, expected):
        rc = self.p.wait()
        self.exits.append((self.run.t(), rc, expected))
        return rc

    def kill9(self):
        with self.lock:
            if not self.alive():
                return None
            self.expect = (-signal.SIGKILL,)
            os.kill(self.p.pid, signal.SIGKILL)
            self.paused = False
            return self._reap(True)

    def term(self, limit):
        """SIGTERM; the return code, or None if it had to be killed."""
        with self.lock:
            if not self.alive():
                return self.p.returncode if self.p else None
            self.expect = (0, -signal.SIGTERM)
            if self.paused:
                os.kill(self.p.pid, signal.SIGCONT)
                self.paused = False
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(limit)
            except subprocess.TimeoutExpired:
                self.kill9()
                return None
            return self._reap(True)

    def pause(self):
        with self.lock:
            if self.alive() and not self.paused:
                os.kill(self.p.pid, signal.SIGSTOP)
                self.paused = True

    def resume(self):
        with self.lock:
            if self.alive() and self.paused:
                os.kill(self.p.pid, signal.SIGCONT)
            self.paused = False

    def new_log(self):
        """What this incarnation has written so far."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=25):
        return "\n".join(self.new_log().splitlines()[-n:])


def restart_wedged_broker(run):
    """A liveness probe for the broker, as a supervisor would run one.
    tansu can panic in one of its tasks and keep running with that part
    dead (seen: its SQLite storage, "more or less than one row", after a
    kill -9 during a write; every request after is refused): the process
    is up and listening, so nothing restarts it, and no client of it can
    do anything about that. When this incarnation's log has a panic, kill
    it and start it again, and say so in the notes (not a violation: the
    broker's bug, not flashd's)."""
    b = run.broker
    if not b.lock.acquire(blocking=False):
        return
    try:
        if not b.alive() or b.paused:
            return
        # Only what this incarnation wrote since the last look (a wedged
        # tansu logs errors by the megabyte), with a little overlap so a
        # marker split across two looks is still found.
        seen = b.probed[1] if b.probed[0] == b.starts else 0
        try:
            with open(b.log_path, "rb") as f:
                f.seek(b.offset + seen)
                log = f.read().decode("utf-8", "replace")
        except OSError:
            return
        b.probed = (b.starts, max(seen + len(log.encode()) - 32, 0))
        at = log.find("panicked at")
        if at < 0:
            return
        line = log[log.rfind("\n", 0, at) + 1:log.find("\n", at)]
        run.note(f"{b.name} panicked and stayed up wedged ({line.strip()[:200]}): "
                 f"killed and restarted, as a supervisor's liveness probe would")
        b.kill9()
        run.start_broker()
    finally:
        b.lock.release()


def describe_rc(rc):
    if rc is None:
        return "did not exit (killed after the timeout)"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


# ---- The run ----

class Run:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.dir = os.path.abspath(args.dir)
        self.t_start = time.monotonic()
        self.wall_start = time.time()
        self.gen = 0  # bumped at every flashd kill and start: clients reconnect
        self.port = free_port()
        self.kafka_port = free_port()
        self.maria_port = free_port()
        self.sink_port = free_port()
        self.lock = threading.Lock()
        self.records = []  # every request and its answer
        self.violations = []  # (kind, text)
        self.notes = []
        self.faults = collections.Counter()
        self.sales = {}  # sku -> {"sku", "stock", "limit", "id", "attempts"}
        self.open_sales = []  # (id, stock, limit, weight class) that buyers pick from
        self.buys = {}  # request_id -> {"user", "act", "qty", "attempts"}
        self.orders = {}  # order id -> {"user", "act", "qty", "rid", "expires_at", "pays", "cancels"}
        self.stop_clients = threading.Event()
        self.stop_faults = threading.Event()
        self.flashd_dead = False
        self.checking = False
        self.sink_note = None
        self.burst_overloaded = 0
        self.burst_sent = 0
        self.last_answer = time.monotonic()
        self.longest_silence = 0.0
        self.pay_q = []
        self.cancel_q = []
        self.q_lock = threading.Lock()
        self.q_seq = 0
        self.procs = []

    def t(self):
        return time.monotonic() - self.t_start

    def say(self, msg):
        print(f"[chaos +{self.t():6.1f}s] {msg}", flush=True)

    def violation(self, kind, text):
        with self.lock:
            self.violations.append((kind, text))
        if not self.checking:  # the end's checks are summed up in the report
            self.say(f"VIOLATION {kind}: {text.splitlines()[0] if text else ''}")

    def write_pids(self):
        """pid and start time of every child, for scripts/chaos's trap: it
        kills whatever is left if this process dies without cleaning up."""
        lines = []
        for p in self.procs:
            if p.alive():
                try:
                    st = open(f"/proc/{p.p.pid}/stat").read().rsplit(")", 1)[1].split()[19]
                except (OSError, IndexError):
                    continue
                lines.append(f"{p.p.pid} {st}\n")
        tmp = os.path.join(self.dir, "pids.tmp")
        with open(tmp, "w") as f:
            f.writelines(lines)
        os.replace(tmp, os.path.join(self.dir, "pids"))

    # -- records --

    def record(self, kind, **kw):
        kw["kind"] = kind
        with self.lock:
            self.records.append(kw)
        return kw

    def answered(self):
        n = time.monotonic()
        if self.stop_clients.is_set():
            return  # silence is measured under the faults only
        with self.lock:
            self.longest_silence = max(self.longest_silence, n - self.last_answer)
            self.last_answer = n

    # -- the environment --

    def setup(self):
        a = self.args
        d = self.dir
        for sub in ("mariadb", "tansu", "flashd-data"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        self.cfg = os.path.join(d, "flashd.toml")
        shards = "".join(
            f'[[mysql.shards]]\nurl = "mysql://root@127.0.0.1:{self.maria_port}/{s}"\n' for s in SHARDS
        )
        with open(self.cfg, "w") as f:
            f.write(f"""# Written by scripts/chaos for one run (seed {self.seed}).
[server]
listen = "127.0.0.1:{self.port}"
data_dir = "{d}/flashd-data"
shutdown_grace_ms = 5000
[reactor]
pin_cpus = false
[workers]
count = 1
ring_capacity = {WORKER_RING}
batch_max = {WORKER_BATCH}
[engine]
order_ttl_ms = {ORDER_TTL_MS}
[rate_limit]
per_user_rps = 0
per_user_burst = 0
[auth]
jwt_secret = "{SECRET}"
admin_token = "{ADMIN}"
[log]
backend = "kafka"
ring_capacity = {LOG_RING}
batch_max = {LOG_RING}
[log.kafka]
brokers = "127.0.0.1:{self.kafka_port}"
topic = "{TOPIC}"
partitions = 3
unavailable_ms = {KAFKA_UNAVAILABLE_MS}
[mysql]
{shards}[sink]
embedded = false
group = "chaos-sink"
batch_max = 500
metrics_listen = "127.0.0.1:{self.sink_port}"
[logging]
level = "info"
""")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env["RUST_BACKTRACE"] = "1"
        mdata = os.path.join(d, "mariadb")
        self.say(f"MariaDB: a private server on 127.0.0.1:{self.maria_port}, data in {mdata}")
        out = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={mdata}", "--user=root",
             "--skip-test-db", "--auth-root-authentication-method=normal"],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"mariadb-install-db failed:\n{out.stderr}")
        self.maria = Proc(self, "mariadb", [
            a.mariadbd, "--no-defaults", f"--datadir={mdata}", f"--socket={mdata}/sock",
            f"--pid-file={mdata}/pid", f"--port={self.maria_port}", "--bind-address=127.0.0.1",
            "--user=root", "--skip-grant-tables", "--innodb-buffer-pool-size=64M",
            "--skip-log-bin", "--skip-name-resolve",
        ], d)
        self.broker = Proc(self, "tansu", [
            a.tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{self.kafka_port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{self.kafka_port}",
            "--storage-engine", "sqlite://tansu.db",
        ], os.path.join(d, "tansu"), env={**env, "RUST_LOG": "warn"})
        self.flashd = Proc(self, "flashd", [a.flashd, "serve", "--config", self.cfg], d, env)
        self.sink = Proc(self, "sink", [a.flashd, "sink", "--config", self.cfg], d, env)
        self.procs = [self.maria, self.broker, self.flashd, self.sink]
        self.start_maria()
        self.say(f"tansu: a private broker on 127.0.0.1:{self.kafka_port}")
        self.start_broker()
        for i in range(10):
            out = subprocess.run([a.flashd, "migrate", "--config", self.cfg],
                                 capture_output=True, text=True, env=env, timeout=120)
            if out.returncode == 0:
                break
            if out.returncode == 2:
                raise SystemExit(f"flashd refuses the soak's config:\n{out.stderr}")
            self.say(f"migrate failed (try {i + 1}): {out.stderr.strip().splitlines()[-1:]}")
            time.sleep(2)
        else:
            raise SystemExit(f"flashd migrate kept failing:\n{out.stderr}")
        self.sink.start()
        self.say(f"flashd: 127.0.0.1:{self.port}, sink metrics 127.0.0.1:{self.sink_port}")
        if not self.start_flashd():
            raise SystemExit("flashd did not start; see the violations above")

    def start_maria(self):
        with self.maria.lock:
            self.maria.start()
            ok = wait_port(self.maria_port, 90)
            if ok:
                t = time.monotonic() + 60
                while time.monotonic() < t:
                    if self.sql("mysql", "SELECT 1", check=False) is not None:
                        return
                    time.sleep(0.3)
            self.note(f"MariaDB did not come up: {self.maria.tail(5)}")

    def start_broker(self):
        with self.broker.lock:
            self.broker.start()
            if not wait_port(self.kafka_port, 30):
                self.note(f"tansu did not listen within 30 s: {self.broker.tail(5)}")

    def note(self, text):
        with self.lock:
            self.notes.append(text)
        self.say(f"note: {text}")

    def start_flashd(self):
        """Start flashd and wait for "flashd ready". A start that fails is a
        violation (the log the writer produced must always replay); up to
        three tries, then flashd is given up for the rest of the run."""
        with self.flashd.lock:
            for attempt in range(3):
                self.gen += 1
                p = self.flashd.start()
                deadline = time.monotonic() + READY_TIMEOUT_S
                why = None
                while True:
                    if "flashd ready" in self.flashd.new_log():
                        self.gen += 1
                        return True
                    if p.poll() is not None:
                        rc = self.flashd._reap(False)
                        why = f"exited while starting: {describe_rc(rc)}"
                        break
                    if time.monotonic() > deadline:
                        why = f"not ready after {READY_TIMEOUT_S} s"
                        self.flashd.kill9()
                        break
                    time.sleep(0.05)
                state = "paused" if self.broker.paused else ("up" if self.broker.alive() else "down")
                self.violation(
                    "flashd-start",
                    f"flashd start #{self.flashd.starts} {why} (broker {state}); its log ends:\n"
                    + self.flashd.tail(),
                )
                time.sleep(2)
            self.flashd_dead = True
            self.flashd.expect = ("given up",)  # reported above; the monitor leaves it
            return False

    def sql(self, db, query, check=True):
        """Rows of one query through the mariadb client, or None on error."""
        try:
            out = subprocess.run(
                ["mariadb", "-h127.0.0.1", f"-P{self.maria_port}", "-uroot", "-N", "-B",
                 "--connect-timeout=3", db, "-e", query],
                capture_output=True, text=True, timeout=120,
            )
        except subprocess.TimeoutExpired:
            return None
        if out.returncode != 0:
            if check:
                self.note(f"query failed: {query[:80]}: {out.stderr.strip()}")
            return None
        return [line.split("\t") for line in out.stdout.splitlines()]

    def cleanup(self):
        for p in self.procs:
            try:
                if p.alive():
                    os.kill(p.p.pid, signal.SIGKILL)
                    p.p.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            self.write_pids()
        except OSError:
            pass

    # -- the monitor: exits nobody asked for --

    def monitor(self):
        while not self.stop_monitor.is_set():
            for p in self.procs:
                if not p.lock.acquire(blocking=False):
                    continue
                try:
                    if p.p is None or p.p.poll() is None or p.expect is not None:
                        continue
                    if p is self.flashd and self.flashd_dead:
                        continue
                    rc = p._reap(False)
                    p.expect = (rc,)  # reported once
                    if p in (self.flashd, self.sink):
                        self.violation(
                            "crash",
                            f"{p.name} exited on its own at +{self.t():.1f}s: {describe_rc(rc)}; "
                            f"its log ends:\n{p.tail()}",
                        )
                    else:
                        self.note(f"{p.name} exited on its own: {describe_rc(rc)}; restarting it")
                    if self.stop_faults.is_set() and p is self.flashd:
                        continue  # the end phase restarts it
                    if p is self.flashd:
                        self.start_flashd()
                    elif p is self.sink:
                        p.start()
                    elif p is self.broker:
                        self.start_broker()
                    else:
                        self.start_maria()
                finally:
                    p.lock.release()
            restart_wedged_broker(self)
            if not self.stop_clients.is_set():
                with self.lock:
                    self.longest_silence = max(self.longest_silence, time.monotonic() - self.last_answer)
            self.stop_monitor.wait(0.25)

    # -- sales --

    def create_sale(self, http, rng, stock, limit, cls):
        """One attempt to open a sale with a fresh sku (a retry with the same
        body could open two: opening a sale is not idempotent)."""
        sku = f"CHAOS-{len(self.sales) + 1}"
        body = json.dumps({
            "sku_id": sku, "name": f"chaos {sku}", "price_cents": rng.randint(100, 99999),
            "stock": stock, "start_at": iso(now_ms() - 60_000), "end_at": iso(now_ms() + 86_400_000),
            "per_user_limit": limit,
        })
        sale = {"sku": sku, "stock": stock, "limit": limit, "id": None, "attempts": []}
        with self.lock:
            self.sales[sku] = sale
        rec = self.send(http, "create", "POST", "/api/v1/activities", ADMIN, body, sku=sku)
        sale["attempts"].append(rec)
        if rec["status"] == 201:
            v = decode(rec["body"].encode()) or {}
            sale["id"] = v.get("id")
            with self.lock:
                self.open_sales.append((sale["id"], stock, limit, cls))
        elif rec["outcome"] == "answer" and rec["status"] != 503:
            self.violation("unexpected-status", f"open sale {sku}: {rec['status']} {rec['body']}")
        return sale

    def send(self, http, kind, method, path, auth, body=None, **kw):
        t0 = time.time()
        try:
            status, rbody = http.call(method, path, auth, body)
            outcome = "answer"
            self.answered()
        except NotSent as e:
            status, rbody, outcome = None, str(e).encode(), "not-sent"
        except Unknown as e:
            status, rbody, outcome = None, str(e).encode(), "unknown"
        text = rbody.decode("utf-8", "replace")
        code = None
        if status is not None and status >= 400:
            code = (decode(rbody) or {}).get("error")
        return self.record(kind, t0=t0, t1=time.time(), status=status, code=code,
                           outcome=outcome, body=text[:400], **kw)

    # -- clients --

    def pick_sale(self, rng):
        with self.lock:
            sales = list(self.open_sales)
        fixed = [s for s in sales if s[3] != "new"]
        new = [s for s in sales if s[3] == "new"]
        if new and rng.random() < 0.25:
            return rng.choice(new)
        return rng.choice(fixed)

    def buyer(self, idx):
        rng = random.Random(f"{self.seed}/buyer/{idx}")
        http = Http(self)
        n = 0
        while not self.stop_clients.is_set():
            act, stock, limit, cls = self.pick_sale(rng)
            user = rng.randint(1, USERS)
            qty = rng.choices((1, 2, 3), (70, 25, 5))[0]
            rid = f"b{idx}-{n}"
            n += 1
            self.buy(http, rng, act, user, qty, rid)
            time.sleep(rng.uniform(0, 2 * BUY_GAP_S))
        http.close()

    def buy(self, http, rng, act, user, qty, rid):
        b = {"user": user, "act": act, "qty": qty, "attempts": []}
        with self.lock:
            self.buys[rid] = b
        body = json.dumps({"quantity": qty, "request_id": rid})
        for attempt in range(BUY_ATTEMPTS):
            rec = self.send(http, "buy", "POST", f"/api/v1/activities/{act}/orders", token(user),
                            body, rid=rid)
            b["attempts"].append(rec)
            st = rec["status"]
            if st in (200, 201):
                self.confirmed(rng, rid, rec)
                # Now and then the same request again: must be 200, same order.
                if rng.random() < 0.05 and not self.stop_clients.is_set():
                    again = self.send(http, "buy", "POST", f"/api/v1/activities/{act}/orders",
                                      token(user), body, rid=rid)
                    b["attempts"].append(again)
                    if again["status"] in (200, 201):
                        self.confirmed(rng, rid, again, schedule=False)
                return
            if st is not None and st != 503:
                return  # 409 and the like: final
            if self.stop_clients.is_set() or rng.random() < 0.15:
                return  # a buyer who gives up
            time.sleep(rng.uniform(0.05, 0.6) * (attempt + 1))

    def confirmed(self, rng, rid, rec, schedule=True):
        v = decode(rec["body"].encode()) or {}
        oid = v.get("order_id")
        rec["oid"] = oid
        if not oid:
            self.violation("wrong-answer", f"buy {rid}: {rec['status']} without an order id: {rec['body']}")
            return
        b = self.buys[rid]
        with self.lock:
            o = self.orders.get(oid)
            if o is None:
                o = self.orders[oid] = {"user": b["user"], "act": b["act"], "qty": b["qty"],
                                        "rid": rid, "expires_at": None, "pays": [], "cancels": []}
        try:
            o["expires_at"] = rfc3339_ms(v["expires_at"])
        except (KeyError, ValueError, TypeError):
            self.violation("wrong-answer", f"buy {rid}: no expires_at in {rec['body']}")
        if not schedule:
            return
        # The order's fate: pay (sometimes after its deadline), cancel, or
        # leave it to expire; now and then both, the second must be 409.
        ttl = ORDER_TTL_MS / 1000
        r = rng.random()
        with self.q_lock:
            self.q_seq += 1
            if r < 0.45 or r >= 0.95:
                heapq.heappush(self.pay_q, (time.monotonic() + rng.uniform(0, 1.2 * ttl), self.q_seq, oid))
            if 0.45 <= r < 0.70 or r >= 0.95:
                heapq.heappush(self.cancel_q, (time.monotonic() + rng.uniform(0, 1.1 * ttl), self.q_seq, oid))

    def mover(self, what):
        """The payer (what = "pay") or the canceller ("cancel")."""
        rng = random.Random(f"{self.seed}/{what}")
        q = self.pay_q if what == "pay" else self.cancel_q
        http = Http(self)
        while not self.stop_clients.is_set():
            item = None
            with self.q_lock:
                if q and q[0][0] <= time.monotonic():
                    item = heapq.heappop(q)
            if item is None:
                time.sleep(0.01)
                continue
            oid = item[2]
            o = self.orders[oid]
            for attempt in range(MOVE_ATTEMPTS):
                rec = self.send(http, what, "POST", f"/api/v1/orders/{oid}/{what}", token(o["user"]),
                                "", oid=oid)
                o["pays" if what == "pay" else "cancels"].append(rec)
                st = rec["status"]
                if st is not None and st != 503:
                    if st not in (200, 409):
                        self.violation("unexpected-status",
                                       f"{what} {oid} (user {o['user']}): {st} {rec['body']}")
                    break
                if self.stop_clients.is_set():
                    break
                time.sleep(rng.uniform(0.05, 0.5) * (attempt + 1))
        http.close()

    def admin(self):
        rng = random.Random(f"{self.seed}/admin")
        http = Http(self)
        while not self.stop_clients.wait(rng.uniform(5, 12)):
            self.create_sale(http, rng, rng.choice((20, 60, 200, 1000)), rng.randint(1, 4), "new")
        http.close()

    def burst(self):
        """Fill the rings: many buys pipelined at once on many connections."""
        act = self.bulk_sale
        k = self.burst_sent
        # Its own generator: what the burst's answers lead to must not shift
        # the fault schedule's.
        rng = random.Random(f"{self.seed}/burst/{k}")
        self.burst_sent += BURST_CONNS * BURST_DEPTH
        conns = []
        for c in range(BURST_CONNS):
            reqs = []
            for j in range(BURST_DEPTH):
                user = 100_000 + (k + c * BURST_DEPTH + j) % 50_000
                rid = f"x{k}-{c}-{j}"
                b = {"user": user, "act": act, "qty": 1, "attempts": []}
                with self.lock:
                    self.buys[rid] = b
                reqs.append((rid, user))
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2.0)
                s.settimeout(CLIENT_TIMEOUT_S)
            except OSError as e:
                for rid, user in reqs:
                    self.buys[rid]["attempts"].append(self.record(
                        "buy", t0=time.time(), t1=time.time(), status=None, code=None,
                        outcome="not-sent", body=str(e), rid=rid))
                continue
            conns.append((s, reqs))
        t0 = time.time()
        for s, reqs in conns:
            wire = b"".join(
                build_request("POST", f"/api/v1/activities/{act}/orders", token(user),
                              json.dumps({"quantity": 1, "request_id": rid}))
                for rid, user in reqs)
            try:
                s.sendall(wire)
            except OSError:
                pass
        overloaded = 0
        for s, reqs in conns:
            buf, got = b"", []
            try:
                while len(got) < len(reqs):
                    r = parse_response(buf)
                    if r is None:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                        continue
                    got.append(r[:3])
                    buf = r[3]
            except (OSError, ValueError, Unknown):
                pass
            s.close()
            for i, (rid, user) in enumerate(reqs):
                if i < len(got):
                    st, _, body = got[i]
                    code = (decode(body) or {}).get("error") if st >= 400 else None
                    overloaded += code == "overloaded"
                    rec = self.record("buy", t0=t0, t1=time.time(), status=st, code=code,
                                      outcome="answer", body=body.decode("utf-8", "replace")[:400],
                                      rid=rid)
                else:
                    rec = self.record("buy", t0=t0, t1=time.time(), status=None, code=None,
                                      outcome="unknown", body="no answer", rid=rid)
                self.buys[rid]["attempts"].append(rec)
                if rec["status"] in (200, 201):
                    self.confirmed(rng, rid, rec, schedule=rng.random() < 0.05)
        self.burst_overloaded += overloaded
        return overloaded

    # -- faults --

    FAULTS = ("broker_pause", "broker_pause", "broker_kill", "broker_term", "mariadb_kill",
              "ring_fill", "ring_fill_in_outage", "flashd_kill", "flashd_kill", "flashd_kill_in_outage",
              "sink_kill")

    def faults_loop(self):
        rng = random.Random(f"{self.seed}/faults")
        plan = []
        while not self.stop_faults.wait(rng.uniform(1.5, 5.0)):
            if self.flashd_dead:
                return
            if not plan:
                plan = list(self.FAULTS)
                rng.shuffle(plan)
            f = plan.pop()
            self.faults[f] += 1
            try:
                getattr(self, "f_" + f)(rng)
            except Exception as e:  # noqa: BLE001 - a fault that fails is a note, not a crash of the soak
                self.note(f"fault {f} failed: {e!r}")

    def f_broker_pause(self, rng):
        d = rng.uniform(0.5, 4.0)
        self.say(f"fault: broker SIGSTOP for {d:.1f}s")
        self.broker.pause()
        time.sleep(d)
        self.broker.resume()

    def f_broker_kill(self, rng):
        d = rng.uniform(1, 5)
        self.say(f"fault: broker kill -9, down {d:.1f}s")
        with self.broker.lock:
            self.broker.kill9()
            time.sleep(d)
            self.start_broker()

    def f_broker_term(self, rng):
        d = rng.uniform(1, 3)
        self.say(f"fault: broker SIGTERM, down {d:.1f}s")
        with self.broker.lock:
            self.broker.term(15)
            time.sleep(d)
            self.start_broker()

    def f_mariadb_kill(self, rng):
        d = rng.uniform(1, 8)
        self.say(f"fault: MariaDB kill -9, down {d:.1f}s")
        with self.maria.lock:
            self.maria.kill9()
            time.sleep(d)
            self.start_maria()

    def f_ring_fill(self, rng):
        n = self.burst()
        self.say(f"fault: ring fill, {BURST_CONNS * BURST_DEPTH} buys at once: {n} answered 503 overloaded")

    def f_ring_fill_in_outage(self, rng):
        d = rng.uniform(0.3, 1.5)
        self.broker.pause()
        t = threading.Thread(target=lambda: setattr(self, "_burst_n", self.burst()))
        t.start()
        time.sleep(d)
        self.broker.resume()
        t.join()
        self.say(f"fault: ring fill with the broker paused {d:.1f}s: "
                 f"{self._burst_n} of {BURST_CONNS * BURST_DEPTH} answered 503 overloaded")

    def f_flashd_kill(self, rng):
        d = rng.uniform(0, 1.5)
        self.say(f"fault: flashd kill -9, restart after {d:.1f}s")
        with self.flashd.lock:
            self.gen += 1
            self.flashd.kill9()
            time.sleep(d)
            self.start_flashd()

    def f_flashd_kill_in_outage(self, rng):
        d = rng.uniform(0.1, 0.9)
        self.say(f"fault: broker SIGSTOP, flashd kill -9 {d:.1f}s later, broker back, flashd restarted")
        with self.flashd.lock:
            self.broker.pause()
            time.sleep(d)
            self.gen += 1
            self.flashd.kill9()
            self.broker.resume()
            time.sleep(rng.uniform(0, 1))
            self.start_flashd()

    def f_sink_kill(self, rng):
        d = rng.uniform(0.5, 4)
        self.say(f"fault: sink kill -9, down {d:.1f}s")
        with self.sink.lock:
            self.sink.kill9()
            time.sleep(d)
            self.sink.start()

    # -- the run itself --

    def chaos(self):
        http = Http(self)
        rng = random.Random(f"{self.seed}/setup")
        for stock, limit, cls in ((40, 3, "hot"), (400, 2, "warm"), (1_000_000, 4, "bulk")):
            for _ in range(50):
                s = self.create_sale(http, rng, stock, limit, cls)
                if s["id"] is not None:
                    break
                time.sleep(0.3)
            else:
                raise SystemExit("could not open the soak's sales (50 tries)")
            if cls == "bulk":
                self.bulk_sale = s["id"]
        http.close()
        self.stop_monitor = threading.Event()
        threads = [threading.Thread(target=self.monitor, name="monitor")]
        clients = [threading.Thread(target=self.buyer, args=(i,), name=f"buyer{i}")
                   for i in range(self.args.buyers)]
        clients += [threading.Thread(target=self.mover, args=("pay",), name="payer"),
                    threading.Thread(target=self.mover, args=("cancel",), name="canceller"),
                    threading.Thread(target=self.admin, name="admin")]
        fault_t = threading.Thread(target=self.faults_loop, name="faults")
        for t in threads + clients + [fault_t]:
            t.daemon = True
            t.start()
        end = time.monotonic() + self.args.seconds
        next_report = time.monotonic() + 10
        while time.monotonic() < end and not self.flashd_dead:
            time.sleep(0.2)
            if time.monotonic() >= next_report:
                next_report += 10
                self.progress()
        self.say("chaos over: faults stop, everything is healed")
        self.stop_faults.set()
        fault_t.join()
        self.broker.resume()
        with self.broker.lock:
            if not self.broker.alive():
                self.start_broker()
        with self.maria.lock:
            if not self.maria.alive():
                self.start_maria()
        with self.sink.lock:
            if not self.sink.alive():
                self.sink.start()
        self.stop_clients.set()
        for t in clients:
            t.join()
        self.progress()
        return threads

    def progress(self):
        c = collections.Counter()
        with self.lock:
            recs = list(self.records)
        for r in recs:
            key = str(r["status"]) if r["outcome"] == "answer" else r["outcome"]
            if r["code"]:
                key = f"{key} {r['code']}"
            c[(r["kind"], key)] += 1
        parts = []
        for kind in ("buy", "pay", "cancel", "create"):
            ks = sorted((k[1], n) for k, n in c.items() if k[0] == kind)
            parts.append(f"{kind}: " + ", ".join(f"{k} x{n}" for k, n in ks))
        self.say(f"{len(recs)} requests; " + "; ".join(parts))

    # -- the end: heal, settle, restart cleanly, compare --

    def liveness(self):
        """After every fault is healed, flashd must take an order again."""
        http = Http(self)
        rid = "probe"
        b = {"user": 999_999, "act": self.bulk_sale, "qty": 1, "attempts": []}
        self.buys[rid] = b
        deadline = time.monotonic() + LIVENESS_S
        body = json.dumps({"quantity": 1, "request_id": rid})
        while time.monotonic() < deadline:
            rec = self.send(http, "buy", "POST", f"/api/v1/activities/{self.bulk_sale}/orders",
                            token(999_999), body, rid=rid)
            b["attempts"].append(rec)
            if rec["status"] in (200, 201):
                self.confirmed(random.Random(0), rid, rec, schedule=False)
                http.close()
                return
            time.sleep(0.5)
        seen = collections.Counter(f"{a['status'] or a['outcome']} {a['code'] or ''}".strip()
                                   for a in b["attempts"])
        self.violation("wedged", f"with every fault healed, flashd took no order for {LIVENESS_S} s: "
                                 f"{dict(seen)}; its log ends:\n{self.flashd.tail()}")
        http.close()

    def activities(self, http):
        """flashd's sales, by id: ids are dense from 1."""
        out = {}
        top = max([s["id"] for s in self.sales.values() if s["id"]] + [0])
        i = 1
        misses = 0
        fails = 0
        while i <= top or misses < 3:
            try:
                st, body = http.call("GET", f"/api/v1/activities/{i}")
            except (NotSent, Unknown) as e:
                fails += 1
                if fails > 50:
                    self.violation("unreachable", f"flashd stopped answering GET /api/v1/activities: {e}")
                    return out
                time.sleep(0.2)
                continue
            if st == 200:
                out[i] = decode(body)
                misses = 0
            else:
                misses += 1
            i += 1
        return out

    def fetch_orders(self, http, owners):
        """Each order as its owner reads it: the JSON, or None for a 404.
        Whatever is not 200 is read again a little later: a ready server
        that answers otherwise for an order it holds is a finding too."""

        def read(oid, user):
            for _ in range(20):
                try:
                    return http.call("GET", f"/api/v1/orders/{oid}", token(user))
                except (NotSent, Unknown):
                    time.sleep(0.2)
            return None, b""

        out, odd = {}, {}
        for oid, user in owners.items():
            st, body = read(oid, user)
            if st is None:
                self.violation("unreachable", "flashd stopped answering while the orders were read back")
                return None
            out[oid] = decode(body) if st == 200 else None
            if st != 200:
                odd[oid] = (st, body.decode("utf-8", "replace")[:200], time.time())
        if odd:
            time.sleep(3)
        refused = []
        for oid, (st, body, t) in odd.items():
            st2, body2 = read(oid, owners[oid])
            if st2 == 200:
                out[oid] = decode(body2)
                what = (f"order {oid} (user {owners[oid]}): GET answered {st} {body} at "
                        f"+{t - self.wall_start:.1f}s, then 200 {out[oid].get('status')} 3 s later")
                if st == 503:
                    refused.append(what)  # the API allows it; a finding, not a lie
                else:
                    self.violation("read-flap", what + "; flashd had logged ready before both")
            elif st2 != 404:
                self.violation("unexpected-status", f"GET order {oid} (user {owners[oid]}): {st2} "
                                                    f"{body2.decode('utf-8', 'replace')[:200]}")
        if refused:
            self.note(f"{len(refused)} of {len(owners)} reads of an order on the idle, restarted server were "
                      f"answered 503 at first (read again: 200); e.g. {refused[0]}")
        return out

    def mysql_state(self):
        orders = {}
        for shard, db in enumerate(SHARDS):
            tables = self.sql(db, "SHOW TABLES LIKE 'orders\\_2%'") or []
            for (t,) in tables:
                rows = self.sql(db, f"SELECT order_id, activity_id, user_id, quantity, request_id, "
                                    f"status, expires_at, updated_at FROM {t}") or []
                for r in rows:
                    oid = r[0]
                    if oid in orders:
                        self.violation("mysql-duplicate", f"order {oid} in two tables/shards")
                    orders[oid] = {"act": int(r[1]), "user": int(r[2]), "qty": int(r[3]),
                                   "rid": r[4], "status": r[5], "expires_at": int(r[6]),
                                   "updated_at": int(r[7]), "shard": shard, "table": t}
        acts = {}
        for r in self.sql(SHARDS[0], "SELECT id, sku_id, stock, remaining, reserved, sold, "
                                     "per_user_limit, void FROM activities") or []:
            acts[int(r[0])] = {"sku": r[1], "stock": int(r[2]), "remaining": int(r[3]),
                               "reserved": int(r[4]), "sold": int(r[5]), "limit": int(r[6]),
                               "void": int(r[7])}
        return orders, acts

    def sink_level(self, after, fstate, limit):
        """Wait up to limit seconds for MySQL's sale rows to equal flashd's
        ledger and the sink's lag gauge to read 0."""
        deadline = time.monotonic() + limit
        while True:
            _, macts = self.mysql_state_acts()
            lag = self.sink_lag()
            level = fstate and all(
                macts.get(i) and all(macts[i][k] == a[k] for k in ("remaining", "reserved", "sold"))
                for i, a in after.items())
            # The gauge when the sink exports it; the rows are the proof.
            if (level and lag in (0, None)) or (not fstate and lag == 0):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(1)

    def sink_lag(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.sink_port), timeout=2)
            s.settimeout(5)
            s.sendall(build_request("GET", "/metrics"))
            buf = b""
            while True:
                r = parse_response(buf)
                if r:
                    break
                chunk = s.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            s.close()
            for line in r[2].decode().splitlines():
                if line.startswith("flashd_sink_lag_records "):
                    return float(line.split()[1])
        except (OSError, ValueError, Unknown):
            return None
        return None

    def finish(self):
        if self.flashd_dead:
            self.violation("flashd-start", "flashd could not be started again; the checks below use MySQL only")
        else:
            self.liveness()
        # Let every unpaid order reach its deadline and the sweeper cancel it.
        last = max([o["expires_at"] or 0 for o in self.orders.values()] + [now_ms()])
        wait = min((last - now_ms()) / 1000 + 1.5, ORDER_TTL_MS / 1000 + 3)
        if wait > 0:
            self.say(f"waiting {wait:.1f}s for unpaid orders to expire")
            time.sleep(wait)
        http = Http(self)
        before = {}
        if not self.flashd_dead:
            # Settled first: a deadline's cancel waits for the log, which
            # may still be slow right after the broker healed, and one
            # landing between this read and the SIGTERM would read as the
            # restart changing a sale (seed 2397655365). Read until two
            # reads a second apart agree (at most SETTLE_READS_MAX).
            #
            # And until no unit is reserved: the wait above knows only the
            # orders some client heard of, and a purchase whose answer was
            # lost (or that ran after its client gave up) may have made an
            # order later than every known one; its timeout landing during
            # the restart would read as the restart changing the sale
            # (seed 2722053056). Every order is past its deadline and a
            # sweep within ORDER_TTL_MS + EXPIRY_SLACK_MS of the last
            # request; a unit still reserved after that is not-expired.
            before = self.activities(http)
            limit = time.monotonic() + (ORDER_TTL_MS + EXPIRY_SLACK_MS) / 1000
            for _ in range(SETTLE_READS_MAX):
                time.sleep(1.0)
                again = self.activities(http)
                held = any(a.get("reserved") for a in again.values())
                if again == before and (not held or time.monotonic() > limit):
                    break
                before = again
            for i, b in before.items():
                if b.get("reserved"):
                    self.violation("not-expired", f"sale {i}: {b['reserved']} units still reserved "
                                     f"{(ORDER_TTL_MS + EXPIRY_SLACK_MS) / 1000:.0f}s after every request "
                                     f"ended (an unpaid order outlived its deadline)")
            self.say("clean restart of flashd (SIGTERM, then a replay of the whole topic)")
            with self.flashd.lock:
                self.gen += 1
                rc = self.flashd.term(STOP_TIMEOUT_S)
                if rc != 0:
                    self.violation("clean-stop", f"SIGTERM: flashd {describe_rc(rc)} (expected exit 0 "
                                                 f"within {STOP_TIMEOUT_S} s); its log ends:\n"
                                                 + self.flashd.tail())
                self.start_flashd()
        fstate = not self.flashd_dead
        after = self.activities(http) if fstate else {}
        # The sink: MySQL's sale rows level with flashd's ledger, lag 0.
        self.say("waiting for the sink to bring MySQL level with flashd")
        if not self.sink_level(after, fstate, SINK_CATCHUP_S):
            lag = self.sink_lag()
            self.violation("sink-stalled", f"MySQL not level with flashd {SINK_CATCHUP_S} s after the "
                                           f"faults ended (sink lag gauge {lag}); sink log ends:\n"
                                           + self.sink.tail())
            # Which part holds it: a fresh sink process, then a fresh broker.
            # What unsticks it goes in the report; the checks then see
            # MySQL as far as it got.
            for what, proc in (("a restart of the sink", self.sink), ("a restart of the broker", self.broker)):
                self.say(f"sink stalled: trying {what}")
                with proc.lock:
                    proc.kill9()
                    if proc is self.broker:
                        self.start_broker()
                    else:
                        proc.start()
                if self.sink_level(after, fstate, SINK_RETRY_S):
                    self.sink_note = f"the stalled sink caught up after {what}"
                    break
            else:
                self.sink_note = "the sink did not catch up even after restarting it and the broker"
            self.say(self.sink_note)
        time.sleep(1)
        morders, macts = self.mysql_state()
        owners = {oid: o["user"] for oid, o in self.orders.items()}
        for oid, m in morders.items():
            owners.setdefault(oid, m["user"])
        self.say(f"reading {len(owners)} orders back from flashd")
        forders = self.fetch_orders(http, owners) if fstate else None
        http.close()
        self.stop_monitor.set()
        # Processes: crashes in the logs.
        for p in (self.flashd, self.sink):
            try:
                text = open(p.log_path, "rb").read().decode("utf-8", "replace")
            except OSError:
                continue
            for line in text.splitlines():
                if CRASH_RE.search(line):
                    self.violation("crash-log", f"{p.name}.log: {line.strip()[:300]}")
        self.checking = True
        self.check(before, after, forders, morders, macts, self.mysql_reasons())

    def mysql_reasons(self):
        """Why each cancelled order was cancelled, from its newest cancel event."""
        out = {}
        for db in SHARDS:
            rows = self.sql(db, "SELECT order_id, reason, lsn FROM order_events "
                                "WHERE kind = 'cancelled' ORDER BY lsn") or []
            for oid, reason, _ in rows:
                out[oid] = reason
        return out

    def mysql_state_acts(self):
        acts = {}
        for r in self.sql(SHARDS[0], "SELECT id, remaining, reserved, sold FROM activities",
                          check=False) or []:
            acts[int(r[0])] = {"remaining": int(r[1]), "reserved": int(r[2]), "sold": int(r[3])}
        return None, acts

    # -- the checks --

    def check(self, before, after, forders, morders, macts, mreasons):
        V = self.violation
        t0 = self.wall_start

        def at(rec):
            return f"+{rec['t0'] - t0:.1f}s"

        def show(rec):
            s = rec["status"] if rec["outcome"] == "answer" else rec["outcome"]
            return f"{rec['kind']} {s}{' ' + rec['code'] if rec['code'] else ''} at {at(rec)}"

        def definite_no(rec):
            """An answer that promises nothing was changed."""
            if rec["outcome"] == "not-sent":
                return True
            if rec["outcome"] != "answer":
                return False
            if rec["status"] == 503:
                return rec["code"] in DEFINITE_503
            return rec["status"] not in (200, 201)

        expected = {"buy": (200, 201, 409, 503), "pay": (200, 409, 503), "cancel": (200, 409, 503),
                    "create": (201, 503)}
        for r in self.records:
            if r["code"] == "idempotency_conflict":
                V("idempotency", f"{show(r)} for request {r.get('rid')}: every retry repeats its "
                                 f"purchase exactly: {r['body'][:200]}")
            if r["outcome"] == "answer" and r["status"] not in expected[r["kind"]]:
                V("unexpected-status", f"{show(r)}: {r['body'][:200]} ({r.get('rid') or r.get('oid') or r.get('sku')})")

        # 1. Every purchase: one order per request_id; a 200 replay only
        # after an attempt that may have created it.
        for rid, b in self.buys.items():
            oids = {a.get("oid") for a in b["attempts"] if a["status"] in (200, 201)}
            if len(oids) > 1:
                V("idempotency", f"request {rid} (user {b['user']}) got two orders: {sorted(oids)}")
            for i, a in enumerate(b["attempts"]):
                if a["status"] == 200:
                    if all(definite_no(p) for p in b["attempts"][:i]):
                        V("replay-untold", f"request {rid} (user {b['user']}, sale {b['act']}): 200 replay "
                                           f"at {at(a)} of order {a.get('oid')}, but every earlier attempt "
                                           f"said nothing was changed: "
                                           + ", ".join(show(p) for p in b["attempts"][:i]))
                    break
                if a["status"] == 201:
                    break
            for a in b["attempts"]:
                if a["status"] in (200, 201):
                    v = decode(a["body"].encode()) or {}
                    if (v.get("user_id"), v.get("activity_id"), v.get("quantity")) != (b["user"], b["act"], b["qty"]):
                        V("wrong-answer", f"request {rid}: asked user {b['user']} sale {b['act']} qty "
                                          f"{b['qty']}, answered {a['body'][:200]}")

        # 2. Every confirmed order: exists at the end, with the status the
        # client was last told, or one it could have caused.
        now = now_ms()

        def final_status(oid, o, f, m, known):
            """Checks one order's end state against what its clients saw."""
            where = []
            if forders is not None:
                where.append(("flashd", f["status"] if f else None,
                              f.get("cancel_reason") if f else None,
                              rfc3339_ms(f["updated_at"]) if f else None))
            if m is not None or known:
                st = m["status"] if m and m["status"] != "VOID" else None
                where.append(("MySQL", st, mreasons.get(oid) if st == "CANCELLED" else None,
                              m["updated_at"] if m else None))
            pays, cancels = o["pays"], o["cancels"]
            pay_ok = [a for a in pays if a["status"] == 200]
            cancel_ok = [a for a in cancels if a["status"] == 200]
            pay_maybe = pay_ok or [a for a in pays if not definite_no(a)]
            cancel_maybe = cancel_ok or [a for a in cancels if not definite_no(a)]
            exp = o["expires_at"]
            told = ", ".join(show(a) for a in (o.get("creates", []) + pays + cancels)) or "nothing"
            head = (f"order {oid} (user {o['user']}, sale {o['act']}, qty {o['qty']}, request "
                    f"{o['rid']}, expires {('+%.1fs' % (exp / 1000 - t0)) if exp else '?'})")
            for a in pay_ok:
                # A late pay may be the idempotent answer to an earlier one
                # that did pay (its answer lost): only a first pay is late.
                earlier = [p for p in pays if p["t0"] < a["t0"]]
                if exp and a["t0"] * 1000 > exp + PAY_DEADLINE_SLACK_MS \
                        and all(definite_no(p) for p in earlier):
                    V("paid-after-expiry", f"{head}: pay 200 sent at {at(a)}, after its deadline")
                if (decode(a["body"].encode()) or {}).get("status") != "PAID":
                    V("wrong-answer", f"{head}: pay 200 with {a['body'][:200]}")
            for a in cancel_ok:
                if (decode(a["body"].encode()) or {}).get("status") != "CANCELLED":
                    V("wrong-answer", f"{head}: cancel 200 with {a['body'][:200]}")
            if pay_ok and cancel_ok:
                V("paid-and-cancelled", f"{head}: the client was told both PAID and CANCELLED: {told}")
            for name, st, reason, upd in where:
                end = f"{name} ends with {st or 'no such order'}{' (' + reason + ')' if reason else ''}"
                if st is None:
                    if known:
                        V("lost-order", f"{head}: the client saw {told}; {end}")
                    continue
                if pay_ok and st != "PAID":
                    V("paid-lost", f"{head}: the client saw {told}; {end}")
                if cancel_ok and st != "CANCELLED":
                    V("cancel-lost", f"{head}: the client saw {told}; {end}")
                if st == "PAID" and not pay_maybe:
                    V("paid-untold", f"{head}: no pay could have done it ({told}); {end}")
                early = exp is not None and upd is not None and upd < exp
                if st == "CANCELLED" and (reason == "user" or (reason != "timeout" and early)) \
                        and not cancel_maybe:
                    V("cancelled-untold", f"{head}: no cancel could have done it ({told}); {end}"
                                          f"{' at ' + iso(upd) if upd else ''}")
                if st == "CANCELLED" and reason == "timeout" and early:
                    V("expired-early", f"{head}: cancelled for timeout at {iso(upd)} before its "
                                       f"deadline {iso(exp)} ({name})")
                if st == "CREATED" and exp and now > exp + EXPIRY_SLACK_MS:
                    V("not-expired", f"{head}: still CREATED {(now - exp) / 1000:.1f}s after its deadline ({end})")
            if len(where) == 2 and where[0][1] != where[1][1] and (where[0][1] or where[1][1]):
                V("flashd-mysql-differ", f"{head}: flashd {where[0][1]}, MySQL {where[1][1]} (client saw {told})")

        for rid, b in self.buys.items():
            for a in b["attempts"]:
                oid = a.get("oid")
                if oid in self.orders:
                    self.orders[oid].setdefault("creates", []).append(a)
        stats = collections.Counter()
        for oid, o in self.orders.items():
            f = forders.get(oid) if forders is not None else None
            m = morders.get(oid)
            if f and (f.get("user_id"), f.get("activity_id"), f.get("quantity")) != (o["user"], o["act"], o["qty"]):
                V("wrong-order", f"order {oid}: client bought user {o['user']} sale {o['act']} qty "
                                 f"{o['qty']}; flashd has {f}")
            if m and (m["user"], m["act"], m["qty"], m["rid"]) != (o["user"], o["act"], o["qty"], o["rid"]):
                V("wrong-order", f"order {oid}: client bought user {o['user']} sale {o['act']} qty "
                                 f"{o['qty']} request {o['rid']}; MySQL has {m}")
            final_status(oid, o, f, m, True)
            stats[(f or {}).get("status", "?")] += 1

        # 3. Orders no client was told about: only from a request whose
        # outcome the client did not learn, and never moved by anyone.
        unknown_ok = 0
        for oid, m in morders.items():
            if oid in self.orders:
                continue
            f = forders.get(oid) if forders is not None else None
            if m["status"] == "VOID":
                if f:
                    V("flashd-mysql-differ", f"order {oid}: VOID (undone) in MySQL, {f['status']} in flashd")
                continue
            b = self.buys.get(m["rid"])
            head = f"order {oid} (user {m['user']}, sale {m['act']}, request {m['rid']!r}, {m['status']} in MySQL)"
            if b is None or b["user"] != m["user"]:
                V("phantom-order", f"{head}: no client ever sent that request")
                continue
            if all(definite_no(a) for a in b["attempts"]):
                V("refused-but-created", f"{head}: every attempt was told nothing changed: "
                                         + ", ".join(show(a) for a in b["attempts"]))
            unknown_ok += 1
            o = {"user": m["user"], "act": m["act"], "qty": m["qty"], "rid": m["rid"],
                 "expires_at": m["expires_at"], "pays": [], "cancels": [], "creates": b["attempts"]}
            final_status(oid, o, f, m, False)

        # 4. Sales: every 201 exists; none exists that nobody may have opened;
        # counters add up, in flashd and MySQL, and survive a clean restart.
        by_id = {s["id"]: s for s in self.sales.values() if s["id"]}
        if after:
            for i, s in by_id.items():
                if i not in after or after[i].get("sku_id") != s["sku"]:
                    V("lost-sale", f"sale {i} ({s['sku']}) was answered 201; flashd has {after.get(i)}")
            skus = {s["sku"]: s for s in self.sales.values()}
            for i, a in after.items():
                s = skus.get(a.get("sku_id"))
                if s is None or all(definite_no(x) for x in s["attempts"]):
                    V("sale-untold", f"flashd has sale {i} ({a.get('sku_id')}) that no client was told of "
                                     f"({[show(x) for x in s['attempts']] if s else 'never requested'})")
                if a["sold"] + a["reserved"] > a["stock"] or a["remaining"] != a["stock"] - a["sold"] - a["reserved"]:
                    V("oversold", f"flashd sale {i}: stock {a['stock']} sold {a['sold']} reserved "
                                  f"{a['reserved']} remaining {a['remaining']}")
                b = before.get(i)
                if b and any(b[k] != a[k] for k in ("remaining", "sold", "reserved")):
                    V("restart-changed", f"sale {i}: before the clean restart {b}, after it {a}")
                m = macts.get(i)
                if m is None:
                    V("lost-sale", f"sale {i} is in flashd but not in MySQL")
                elif any(m[k] != a[k] for k in ("stock", "remaining", "sold", "reserved")):
                    V("flashd-mysql-differ", f"sale {i}: flashd stock/remaining/sold/reserved "
                                             f"{[a[k] for k in ('stock', 'remaining', 'sold', 'reserved')]}, "
                                             f"MySQL {[m[k] for k in ('stock', 'remaining', 'sold', 'reserved')]}")
            for i in before:
                if i not in after:
                    V("restart-changed", f"sale {i} was there before the clean restart, not after")
        for i, m in macts.items():
            if m["sold"] + m["reserved"] > m["stock"]:
                V("oversold", f"MySQL sale {i}: stock {m['stock']} sold {m['sold']} reserved {m['reserved']}")
            if m["void"] == 0 and after and i not in after:
                V("sale-untold", f"MySQL has sale {i} ({m['sku']}); flashd does not")
        live = collections.defaultdict(lambda: [0, 0])
        per_user = collections.Counter()
        for oid, m in morders.items():
            if m["status"] in ("CREATED", "PAID"):
                live[m["act"]][m["status"] == "PAID"] += m["qty"]
                per_user[(m["user"], m["act"])] += m["qty"]
        for i, m in macts.items():
            reserved, sold = live.get(i, [0, 0])
            if (reserved, sold) != (m["reserved"], m["sold"]):
                V("ledger-orders-differ", f"sale {i}: MySQL's orders hold {reserved} reserved / {sold} "
                                          f"sold units; its sale row says {m['reserved']} / {m['sold']}")
        for (user, act), n in per_user.items():
            lim = macts.get(act, {}).get("limit")
            if lim is not None and n > lim:
                V("limit-exceeded", f"user {user} holds {n} units of sale {act}; the limit is {lim}")
        if forders is not None:
            pu = collections.Counter()
            for oid, f in forders.items():
                if f and f["status"] in ("CREATED", "PAID"):
                    pu[(f["user_id"], f["activity_id"])] += f["quantity"]
            for (user, act), n in pu.items():
                lim = (after.get(act) or {}).get("per_user_limit")
                if lim is not None and n > lim:
                    V("limit-exceeded", f"flashd: user {user} holds {n} units of sale {act}; the limit is {lim}")
        self.order_stats = stats
        self.unknown_created = unknown_ok
        self.void = sum(1 for m in morders.values() if m["status"] == "VOID")

    def report(self):
        with open(os.path.join(self.dir, "records.jsonl"), "w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")
        with open(os.path.join(self.dir, "violations.txt"), "w") as f:
            for kind, text in self.violations:
                f.write(f"[{kind}] {text}\n")
        c = collections.Counter(r["outcome"] for r in self.records)
        print()
        print(f"== chaos soak, seed {self.seed}: {self.args.seconds} s of faults, {len(self.records)} requests "
              f"({c['unknown']} with no answer, {c['not-sent']} refused connections)")
        print("   faults: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.faults.items())))
        print(f"   flashd starts {self.flashd.starts}, sink starts {self.sink.starts}, broker starts "
              f"{self.broker.starts}, MariaDB starts {self.maria.starts}")
        print(f"   ring fills: {self.burst_sent} buys in bursts, {self.burst_overloaded} answered 503 overloaded")
        print(f"   orders confirmed to clients: {len(self.orders)}, final status in flashd: "
              + ", ".join(f"{k} {n}" for k, n in sorted(getattr(self, 'order_stats', {}).items())))
        print(f"   orders created by requests whose answer was lost: {getattr(self, 'unknown_created', 0)}; "
              f"undone (VOID) in MySQL: {getattr(self, 'void', 0)}")
        print(f"   longest time flashd answered nothing: {self.longest_silence:.1f}s")
        for n in self.notes:
            print(f"   note: {n.splitlines()[0]}")
        if self.sink_note:
            print(f"   sink: {self.sink_note}; MySQL-side violations below may follow from the stall")
        if self.burst_sent and not self.burst_overloaded:
            print("   warning: no burst was answered 503 overloaded; the rings were not filled")
        if not self.violations:
            print(f"== PASS: no violations (run dir {self.dir})")
            return 0
        kinds = collections.Counter(k for k, _ in self.violations)
        print(f"== FAIL: {len(self.violations)} violations: "
              + ", ".join(f"{k} x{n}" for k, n in kinds.most_common()))
        shown = collections.Counter()
        for kind, text in self.violations:
            shown[kind] += 1
            if shown[kind] <= SHOW_PER_KIND:
                print(f"-- [{kind}] {text}")
        print(f"== all violations: {self.dir}/violations.txt; every request: {self.dir}/records.jsonl; "
              f"replay the schedule with --seed {self.seed}")
        return 1


def self_test():
    """The checks against made-up end states: a consistent one passes, and
    each kind of lie is caught. Proves the soak can fail; takes no time."""
    import copy
    import tempfile

    T = now_ms() - 60_000

    def order_body(oid, user, qty, status):
        return {"order_id": oid, "activity_id": 1, "user_id": user, "quantity": qty,
                "status": status, "expires_at": iso(T + 5000)}

    def scenario(mutate):
        run = Run(argparse.Namespace(seed=0, dir=tempfile.gettempdir()))
        run.say = lambda msg: None
        run.wall_start = T / 1000

        def rec(kind, status, code=None, body=None, outcome="answer", t=1.0, **kw):
            r = run.record(kind, t0=T / 1000 + t, t1=T / 1000 + t + 0.01, status=status, code=code,
                           outcome=outcome, body=json.dumps(body) if body is not None else "", **kw)
            return r

        run.sales["CHAOS-1"] = {"sku": "CHAOS-1", "stock": 10, "limit": 2, "id": 1,
                                "attempts": [rec("create", 201, body={"id": 1}, sku="CHAOS-1")]}
        a1 = rec("buy", 201, body=order_body("100", 7, 1, "CREATED"), rid="r1", oid="100")
        run.buys["r1"] = {"user": 7, "act": 1, "qty": 1, "attempts": [a1]}
        a2 = rec("buy", 503, code="unavailable", body={"error": "unavailable"}, rid="r2")
        a3 = rec("buy", 201, body=order_body("101", 8, 2, "CREATED"), rid="r2", oid="101", t=2.0)
        run.buys["r2"] = {"user": 8, "act": 1, "qty": 2, "attempts": [a2, a3]}
        pay = rec("pay", 200, body=order_body("100", 7, 1, "PAID"), oid="100", t=3.0)
        run.orders["100"] = {"user": 7, "act": 1, "qty": 1, "rid": "r1", "expires_at": T + 5000,
                             "pays": [pay], "cancels": []}
        run.orders["101"] = {"user": 8, "act": 1, "qty": 2, "rid": "r2", "expires_at": T + 5000,
                             "pays": [], "cancels": []}
        sale = {"sku_id": "CHAOS-1", "stock": 10, "remaining": 9, "sold": 1, "reserved": 0,
                "per_user_limit": 2}
        st = {
            "after": {1: sale}, "before": {1: dict(sale)},
            "forders": {
                "100": {"status": "PAID", "user_id": 7, "activity_id": 1, "quantity": 1,
                        "updated_at": iso(T + 3000), "expires_at": iso(T + 5000)},
                "101": {"status": "CANCELLED", "cancel_reason": "timeout", "user_id": 8,
                        "activity_id": 1, "quantity": 2, "updated_at": iso(T + 5050),
                        "expires_at": iso(T + 5000)},
            },
            "morders": {
                "100": {"act": 1, "user": 7, "qty": 1, "rid": "r1", "status": "PAID",
                        "expires_at": T + 5000, "updated_at": T + 3000, "shard": 0, "table": "t"},
                "101": {"act": 1, "user": 8, "qty": 2, "rid": "r2", "status": "CANCELLED",
                        "expires_at": T + 5000, "updated_at": T + 5050, "shard": 1, "table": "t"},
            },
            "macts": {1: {"sku": "CHAOS-1", "stock": 10, "remaining": 9, "reserved": 0, "sold": 1,
                          "limit": 2, "void": 0}},
            "mreasons": {"101": "timeout"},
        }
        mutate(run, st, rec)
        run.check(st["before"], st["after"], st["forders"], st["morders"], st["macts"], st["mreasons"])
        return sorted({k for k, _ in run.violations}), run.violations

    def paid_reverted(run, st, rec):
        for side in ("forders", "morders"):
            st[side]["100"]["status"] = "CANCELLED"
        st["forders"]["100"]["cancel_reason"] = "timeout"
        st["forders"]["100"]["updated_at"] = iso(T + 5050)
        st["morders"]["100"]["updated_at"] = T + 5050
        st["mreasons"]["100"] = "timeout"
        for d in (st["after"][1], st["before"][1], st["macts"][1]):
            d.update(sold=0, remaining=10)

    def lost(run, st, rec):
        del st["morders"]["100"]

    def refused_created(run, st, rec):
        run.buys["r3"] = {"user": 9, "act": 1, "qty": 1, "attempts": [
            rec("buy", 503, code="unavailable", body={"error": "unavailable"}, rid="r3"),
            rec("buy", None, outcome="not-sent", rid="r3")]}
        st["morders"]["102"] = {"act": 1, "user": 9, "qty": 1, "rid": "r3", "status": "CANCELLED",
                                "expires_at": T + 5000, "updated_at": T + 5050, "shard": 0, "table": "t"}
        st["mreasons"]["102"] = "timeout"
        st["forders"]["102"] = {"status": "CANCELLED", "cancel_reason": "timeout", "user_id": 9,
                                "activity_id": 1, "quantity": 1, "updated_at": iso(T + 5050),
                                "expires_at": iso(T + 5000)}

    def paid_untold(run, st, rec):
        for side in ("forders", "morders"):
            st[side]["101"]["status"] = "PAID"
        st["forders"]["101"].pop("cancel_reason")
        for d in (st["after"][1], st["before"][1], st["macts"][1]):
            d.update(sold=3, remaining=7)

    def oversold(run, st, rec):
        for d in (st["after"][1], st["before"][1], st["macts"][1]):
            d.update(reserved=10, remaining=0)

    def over_limit(run, st, rec):
        for d in (st["after"][1], st["macts"][1]):
            d["limit" if d is st["macts"][1] else "per_user_limit"] = 0

    def replay_untold(run, st, rec):
        b = run.buys["r2"]
        b["attempts"][1] = rec("buy", 200, body={"order_id": "101", "activity_id": 1, "user_id": 8,
                                                 "quantity": 2, "expires_at": iso(T + 5000)},
                               rid="r2", oid="101", t=2.0)

    def phantom(run, st, rec):
        st["morders"]["103"] = {"act": 1, "user": 5, "qty": 1, "rid": "zz", "status": "CANCELLED",
                                "expires_at": T + 5000, "updated_at": T + 5050, "shard": 0, "table": "t"}

    def cancel_lost(run, st, rec):
        run.orders["101"]["cancels"].append(
            rec("cancel", 200, body=order_body("101", 8, 2, "CANCELLED"), oid="101", t=4.0))
        st["forders"]["101"]["status"] = st["morders"]["101"]["status"] = "PAID"
        st["forders"]["101"].pop("cancel_reason")

    def counters_differ(run, st, rec):
        st["macts"][1]["remaining"] = 8

    def restart_changed(run, st, rec):
        st["before"][1] = dict(st["before"][1], remaining=8, sold=2)

    def both(run, st, rec):
        run.orders["100"]["cancels"].append(
            rec("cancel", 200, body=order_body("100", 7, 1, "CANCELLED"), oid="100", t=4.0))

    def unexpected(run, st, rec):
        run.orders["101"]["pays"].append(rec("pay", 500, code="internal", body={"error": "internal"},
                                             oid="101", t=4.0))

    def expired_early(run, st, rec):
        st["forders"]["101"]["updated_at"] = iso(T + 4000)

    def not_expired(run, st, rec):
        st["forders"]["101"]["status"] = st["morders"]["101"]["status"] = "CREATED"
        st["forders"]["101"].pop("cancel_reason")
        for d in (st["after"][1], st["before"][1], st["macts"][1]):
            d.update(reserved=2, remaining=7)

    def paid_late(run, st, rec):
        run.orders["100"]["pays"][0]["t0"] = T / 1000 + 6.0

    def paid_late_retry(run, st, rec):
        # The first pay's answer was lost; the retry after the deadline is
        # its idempotent 200: no violation.
        run.orders["100"]["pays"][0]["t0"] = T / 1000 + 6.0
        run.orders["100"]["pays"].insert(0, rec("pay", None, outcome="unknown", oid="100", t=4.5))

    cases = [
        (lambda *a: None, []),
        (paid_late, ["paid-after-expiry"]),
        (paid_late_retry, []),
        (paid_reverted, ["paid-lost"]),
        (lost, ["lost-order", "flashd-mysql-differ", "ledger-orders-differ"]),
        (refused_created, ["refused-but-created"]),
        (paid_untold, ["paid-untold"]),
        (oversold, ["oversold", "ledger-orders-differ"]),
        (over_limit, ["limit-exceeded"]),
        (replay_untold, ["replay-untold"]),
        (phantom, ["phantom-order"]),
        (cancel_lost, ["cancel-lost", "ledger-orders-differ", "paid-untold"]),
        (counters_differ, ["flashd-mysql-differ"]),
        (restart_changed, ["restart-changed"]),
        (both, ["paid-and-cancelled", "cancel-lost"]),
        (unexpected, ["unexpected-status"]),
        (expired_early, ["expired-early"]),
        (not_expired, ["not-expired"]),
    ]
    bad = 0
    for mutate, want in cases:
        got, vs = scenario(mutate)
        name = getattr(mutate, "__name__", "consistent")
        if name == "<lambda>":
            name = "consistent"
        # Each lie must be caught by its own kind; collateral kinds a lie
        # implies are listed with it, anything else is a false alarm.
        if got != sorted(want):
            bad += 1
            print(f"self-test {name}: want {sorted(want)}, got {got}")
            for k, t in vs:
                print(f"    [{k}] {t}")
    print(f"self-test: {len(cases) - bad} of {len(cases)} cases as expected")
    ports = [free_port() for _ in range(500)]
    if len(set(ports)) != len(ports):
        bad += 1
        print("self-test free_port: a port was handed out twice")
    return 1 if bad else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60, help="how long the faults run (default 60)")
    ap.add_argument("--seed", type=int, default=None, help="replay a schedule (default: a new seed)")
    ap.add_argument("--buyers", type=int, default=3, help="buyer threads (default 3)")
    ap.add_argument("--dir", required=True, help="an empty directory for everything the run writes")
    ap.add_argument("--flashd", required=True, help="the flashd binary")
    ap.add_argument("--tansu", required=True, help="the tansu binary")
    ap.add_argument("--mariadbd", default="/usr/sbin/mariadbd")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    if args.seconds <= 0 or args.buyers < 1:
        ap.error("--seconds must be > 0 and --buyers >= 1")
    run = Run(args)

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    run.say(f"seed {args.seed} (replay the schedule with --seed {args.seed}); run dir {run.dir}")
    try:
        run.setup()
        run.chaos()
        run.finish()
        return run.report()
    except Exception:  # noqa: BLE001 - the soak's own failure, told apart from a violation
        import traceback
        traceback.print_exc()
        print(f"== the soak itself failed (seed {args.seed}); exit 3")
        return 3
    finally:
        run.cleanup()


if __name__ == "__main__":
    sys.exit(main())
