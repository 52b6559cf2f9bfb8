#!/usr/bin/env python3
"""The multi-node fault test (issue 16): three real flashd nodes in cluster
mode sharing one sale through one Redis (AOF, fsync always), each logging
to its own Kafka topic (a private tansu) and sinking it into two MySQL
shards (a private MariaDB), with buyers, payers and cancellers sending each
request to a random node and every retry of it to a different one, while a
seeded schedule kill -9s a node, SIGSTOPs another past every timeout,
kill -9s Redis and stops the broker. Then a check, from what every client
was told, of Redis's final state, of every node's answers after a clean
restart (a replay of its topic), and of MySQL; and a drain that proves
every unit not sold or reserved is back on sale. Run it through
scripts/cluster-chaos; docs/cluster-chaos.md says what it proves and how to
read a failure.

Python 3.11 standard library only. The pieces it shares with the
single-node soak (raw-socket HTTP/1.1, HMAC-signed tokens, child processes
that can be paused, killed and restarted) come from scripts/chaos.py.
"""

import argparse
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos import (  # noqa: E402 - the path above makes scripts/chaos.py importable
    ADMIN, CRASH_RE, SECRET, NotSent, Proc, Unknown, build_request, decode, describe_rc,
    free_port, iso, now_ms, parse_response, restart_wedged_broker, rfc3339_ms, token, wait_port,
)

# ---- Timings and limits. Each says why it is that number. ----

NODES = 3
# Unpaid orders are cancelled this long after creation: short, so that many
# claims time out during a run and pays race the deadline.
ORDER_TTL_MS = 5000
# How often a node's sweeper asks Redis for claims past their deadline. The
# bound on "back on sale" is ORDER_TTL_MS + EXPIRY_SWEEP_MS (+ clock skew
# between nodes: one machine here, so none).
EXPIRY_SWEEP_MS = 100
# After Redis answered "sold out", a node answers 409 sold_out without
# asking it for this long (cluster.sold_out_recheck_ms; the default, 0,
# turns the shortcut off: it is on here so that the round exercises it): a
# unit returned meanwhile, or one too few for a larger purchase, stays off
# sale on that node for up to this long. The drain waits it out.
SOLD_OUT_RECHECK_MS = 100
# A Redis call unanswered this long is a 503 (fail closed); the config's
# default, kept, so that a paused Redis or node is the same fault it would
# be in production.
REDIS_TIMEOUT_MS = 250
# A request unanswered by the node this long is a 503 timeout: below the
# client's timeout, so a slow node answers rather than going silent.
REQUEST_TIMEOUT_MS = 3000
# The Kafka delivery deadline and breaker window: a stopped broker becomes
# 503s within this long.
KAFKA_UNAVAILABLE_MS = 800
# A client waits this long for an answer, then its outcome is unknown and
# it retries on another node. Above every timeout flashd has (request
# timeout, Redis timeout, Kafka deadline).
CLIENT_TIMEOUT_S = 6.0
# A node's lease on its id (engine.node_id) in Redis lapses this long
# after its last renewal (bin/src/cluster/start.rs: LEASE_TTL).
NODE_LEASE_S = 10
# A node is SIGSTOPped longer than every timeout above (the client's
# included) and than its id lease, so its clients give up on it and retry
# elsewhere, the requests it held are decided (or not) after it wakes, and
# it wakes to a lapsed lease it must take again.
NODE_STOP_S = (NODE_LEASE_S + 2, NODE_LEASE_S + 6)
# Attempts of one purchase and of one pay or cancel, each on a node other
# than the last one tried; bounded so that every client loop ends.
BUY_ATTEMPTS = 6
MOVE_ATTEMPTS = 5
# Mean pause between one buyer's purchases (per thread).
BUY_GAP_S = 0.02
# The main sale's per-user limit (the example) and the small hot
# sale that sells out early, so "sold out" and "back on sale" happen during
# the run, not only at the drain.
LIMIT = 2
HOT_STOCK, HOT_LIMIT = 60, 1
# 503 codes that promise "nothing was changed" (README: the API).
DEFINITE_503 = ("overloaded", "unavailable")
# A (re)start gets this long to log "flashd ready" (a replay of its topic).
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
# After every fault is healed, each node must take an order within this long.
LIVENESS_S = 40
# MySQL gets this long, after the clean restarts, to hold every claim Redis
# holds with the same status (three embedded sinks catching up).
MYSQL_LEVEL_S = 120
# ... and gives up early when nothing it lacks changed for this long: every
# sink has gone idle (three sinks batch at most batch_wait_ms apart).
MYSQL_STILL_S = 20
# Slack on top of the deadline + sweep bound for a loaded 2-core machine:
# a claim still C this long after its deadline was missed by every sweeper.
EXPIRY_SLACK_MS = 3000
PAY_DEADLINE_SLACK_MS = 20
# Drain threads: buy every unit left at the end, so "back on sale" is
# shown by selling it, not by reading a counter.
DRAIN_THREADS = 8
SHOW_PER_KIND = 8

TOPIC = "chaos-orders"
SHARDS = ("cchaos_s0", "cchaos_s1")
# Redis claim status letter -> the API's order status (docs/cluster.md).
CLAIM_STATUS = {"C": "CREATED", "P": "PAID", "X": "CANCELLED", "T": "CANCELLED"}
CLAIM_REASON = {"X": "user", "T": "timeout"}


# ---- Redis: a minimal RESP client, enough for HGETALL and INFO ----

class Resp:
    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise OSError("Redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise OSError("Redis closed the connection")
            self.buf += chunk
        b, self.buf = self.buf[:n], self.buf[n + 2:]
        return b

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise OSError(f"Redis error: {rest.decode()}")
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("utf-8", "replace")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise OSError(f"bad RESP reply {line[:40]!r}")

    def cmd(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = str(a).encode()
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        self.sock.sendall(b"".join(out))
        return self._reply()


def redis_cmd(port, *args):
    r = Resp(port)
    try:
        return r.cmd(*args)
    finally:
        r.close()


def parse_record(s):
    """A buyer's record in `{sale:<id>}:users` (docs/cluster.md):
    `held,made;req#oid|S|qty|amount|created|deadline|node;...` ->
    (held, made, [claim dict]). Raises ValueError on anything else."""
    parts = s.split(";")
    held, made = (int(x) for x in parts[0].split(","))
    claims = []
    for c in parts[1:]:
        rid, sep, rest = c.partition("#")
        f = rest.split("|")
        if not sep or len(f) != 7 or f[1] not in CLAIM_STATUS:
            raise ValueError(f"bad claim {c!r}")
        claims.append({"rid": rid, "oid": f[0], "st": f[1], "qty": int(f[2]), "amount": int(f[3]),
                       "created": int(f[4]), "deadline": int(f[5]), "node": int(f[6])})
    return held, made, claims


# ---- HTTP to any node ----

class Http:
    """Keep-alive connections to every node, one per node. A connection is
    dropped when its node was restarted since it was made."""

    def __init__(self, run):
        self.run = run
        self.conns = {}  # node -> (sock, gen, buf)

    def close(self):
        for s, _, _ in self.conns.values():
            try:
                s.close()
            except OSError:
                pass
        self.conns = {}

    def _drop(self, node):
        c = self.conns.pop(node, None)
        if c:
            try:
                c[0].close()
            except OSError:
                pass

    def call(self, node, method, path, auth=None, body=None):
        n = self.run.nodes[node]
        c = self.conns.get(node)
        if c is not None and c[1] != n.gen:
            self._drop(node)
            c = None
        if c is None:
            try:
                s = socket.create_connection(("127.0.0.1", n.port), timeout=2.0)
            except OSError as e:
                raise NotSent(str(e)) from None
            s.settimeout(CLIENT_TIMEOUT_S)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = [s, n.gen, b""]
            self.conns[node] = c
        s = c[0]
        try:
            s.sendall(build_request(method, path, auth, body))
            while True:
                r = parse_response(c[2])
                if r is not None:
                    break
                chunk = s.recv(65536)
                if not chunk:
                    raise Unknown("connection closed")
                c[2] += chunk
        except (OSError, ValueError, Unknown) as e:
            self._drop(node)
            raise Unknown(str(e) or type(e).__name__) from None
        status, headers, rbody, c[2] = r
        if headers.get("connection", "").lower() == "close":
            self._drop(node)
        return status, rbody


class Node:
    def __init__(self, idx, port):
        self.idx, self.port = idx, port
        self.gen = 0  # bumped at every kill, stop and start: clients reconnect
        self.proc = None
        self.cfg = None
        self.dead = False  # could not be restarted: given up


# ---- The run ----

class Run:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.dir = os.path.abspath(args.dir)
        self.t_start = time.monotonic()
        self.wall_start = time.time()
        self.nodes = [Node(i, free_port()) for i in range(1, args.nodes + 1)]
        self.kafka_port = free_port()
        self.maria_port = free_port()
        self.redis_port = free_port()
        self.lock = threading.Lock()
        self.records = []
        self.violations = []
        self.notes = []
        self.faults = collections.Counter()
        self.sales = {}  # sku -> {"sku", "stock", "limit", "id", "attempts"}
        self.main_sale = self.hot_sale = None
        self.buys = {}  # request_id -> {"user", "act", "qty", "attempts"}
        self.orders = {}  # order id -> {"user", "act", "qty", "rid", "expires_at", "pays", "cancels"}
        self.stop_clients = threading.Event()
        self.stop_faults = threading.Event()
        self.stop_monitor = threading.Event()
        self.checking = False
        self.moves = []  # (due monotonic, seq, "pay"/"cancel", oid)
        self.q_lock = threading.Lock()
        self.q_seq = 0
        self.procs = []
        self.paused_node = None
        self.drain = {}  # sale id -> {"granted": units, "remaining": units}

    def t(self):
        return time.monotonic() - self.t_start

    def say(self, msg):
        print(f"[cluster-chaos +{self.t():6.1f}s] {msg}", flush=True)

    def violation(self, kind, text):
        with self.lock:
            self.violations.append((kind, text))
        if not self.checking:
            self.say(f"VIOLATION {kind}: {text.splitlines()[0] if text else ''}")

    def note(self, text):
        with self.lock:
            self.notes.append(text)
        self.say(f"note: {text}")

    def write_pids(self):
        """pid and start time of every child, for scripts/cluster-chaos's
        trap: it kills whatever is left if this process dies."""
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

    def record(self, kind, **kw):
        kw["kind"] = kind
        with self.lock:
            self.records.append(kw)
        return kw

    # -- the environment --

    def node_config(self, n):
        d = self.dir
        shards = "".join(
            f'[[mysql.shards]]\nurl = "mysql://root@127.0.0.1:{self.maria_port}/{s}"\n' for s in SHARDS)
        return f"""# Written by scripts/cluster-chaos for node {n.idx} of one run (seed {self.seed}).
[server]
listen = "127.0.0.1:{n.port}"
data_dir = "{d}/node{n.idx}"
request_timeout_ms = {REQUEST_TIMEOUT_MS}
shutdown_grace_ms = 5000
[reactor]
sub_reactors = 1
pin_cpus = false
[workers]
count = 1
[engine]
node_id = {n.idx}
order_ttl_ms = {ORDER_TTL_MS}
expiry_sweep_ms = {EXPIRY_SWEEP_MS}
[rate_limit]
per_user_rps = 0
per_user_burst = 0
[auth]
jwt_secret = "{SECRET}"
admin_token = "{ADMIN}"
[log]
backend = "kafka"
ack = "durable"
[log.kafka]
brokers = "127.0.0.1:{self.kafka_port}"
topic = "{TOPIC}"
partitions = 2
unavailable_ms = {KAFKA_UNAVAILABLE_MS}
[cluster]
enabled = true
redis_url = "redis://127.0.0.1:{self.redis_port}/"
redis_timeout_ms = {REDIS_TIMEOUT_MS}
sold_out_recheck_ms = {SOLD_OUT_RECHECK_MS}
require_durable_redis = true
[mysql]
{shards}[sink]
embedded = true
group = "cchaos-sink-node{n.idx}"
batch_max = 500
[logging]
level = "info"
"""

    def setup(self):
        a = self.args
        d = self.dir
        for sub in ("mariadb", "tansu", "redis") + tuple(f"node{n.idx}" for n in self.nodes):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env["RUST_BACKTRACE"] = "1"
        mdata = os.path.join(d, "mariadb")
        self.say(f"MariaDB: a private server on 127.0.0.1:{self.maria_port}")
        out = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={mdata}", "--user=root",
             "--skip-test-db", "--auth-root-authentication-method=normal"],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"mariadb-install-db failed:\n{out.stderr}")
        self.maria = Proc(self, "mariadb", [
            a.mariadbd, "--no-defaults", f"--datadir={mdata}", f"--socket={mdata}/sock",
            f"--pid-file={mdata}/pid", f"--port={self.maria_port}", "--bind-address=127.0.0.1",
            "--user=root", "--skip-grant-tables", "--innodb-buffer-pool-size=64M",
            "--skip-log-bin", "--skip-name-resolve"], d)
        self.broker = Proc(self, "tansu", [
            a.tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{self.kafka_port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{self.kafka_port}",
            "--storage-engine", "sqlite://tansu.db"], os.path.join(d, "tansu"), env={**env, "RUST_LOG": "warn"})
        # The durability flashd's start-up check insists on: every answered
        # decision is in the AOF before Redis answers.
        self.redis = Proc(self, "redis", [
            a.redis_server, "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", os.path.join(d, "redis"), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--protected-mode", "no"], os.path.join(d, "redis"))
        for n in self.nodes:
            n.cfg = os.path.join(d, f"node{n.idx}.toml")
            with open(n.cfg, "w") as f:
                f.write(self.node_config(n))
            n.proc = Proc(self, f"node{n.idx}", [a.flashd, "serve", "--config", n.cfg], d, env)
        self.procs = [self.maria, self.broker, self.redis] + [n.proc for n in self.nodes]
        self.start_maria()
        self.say(f"tansu: 127.0.0.1:{self.kafka_port}; Redis (AOF, fsync always): 127.0.0.1:{self.redis_port}")
        self.start_broker()
        self.start_redis()
        for i in range(10):
            out = subprocess.run([a.flashd, "migrate", "--config", self.nodes[0].cfg],
                                 capture_output=True, text=True, env=env, timeout=120)
            if out.returncode == 0:
                break
            if out.returncode == 2:
                raise SystemExit(f"flashd refuses the test's config:\n{out.stderr}")
            self.say(f"migrate failed (try {i + 1}): {out.stderr.strip().splitlines()[-1:]}")
            time.sleep(2)
        else:
            raise SystemExit(f"flashd migrate kept failing:\n{out.stderr}")
        for n in self.nodes:
            self.say(f"node {n.idx}: 127.0.0.1:{n.port}")
            if not self.start_node(n):
                raise SystemExit(f"node {n.idx} did not start; see the violations above")

    def start_maria(self):
        with self.maria.lock:
            self.maria.start()
            if wait_port(self.maria_port, 90):
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

    def start_redis(self):
        with self.redis.lock:
            self.redis.start()
            t = time.monotonic() + 60
            while time.monotonic() < t:
                try:
                    if redis_cmd(self.redis_port, "PING") == "PONG":
                        return
                except OSError:
                    pass
                time.sleep(0.1)
            self.note(f"Redis did not answer PING within 60 s: {self.redis.tail(5)}")

    def start_node(self, n):
        """Start node n and wait for "flashd ready". A start that fails is a
        violation; three tries, then the node is given up."""
        p = n.proc
        with p.lock:
            for _ in range(3):
                n.gen += 1
                p.start()
                deadline = time.monotonic() + READY_TIMEOUT_S
                why = None
                while True:
                    if "flashd ready" in p.new_log():
                        n.gen += 1
                        return True
                    if p.p.poll() is not None:
                        why = f"exited while starting: {describe_rc(p._reap(False))}"
                        break
                    if time.monotonic() > deadline:
                        why = f"not ready after {READY_TIMEOUT_S} s"
                        p.kill9()
                        break
                    time.sleep(0.05)
                self.violation("node-start", f"node {n.idx} start #{p.starts} {why} ({self.parts_state()}); "
                                             f"its log ends:\n{p.tail()}")
                time.sleep(2)
            n.dead = True
            p.expect = ("given up",)
            return False

    def parts_state(self):
        def st(p):
            return "paused" if p.paused else ("up" if p.alive() else "down")
        return f"Redis {st(self.redis)}, broker {st(self.broker)}, MariaDB {st(self.maria)}"

    def sql(self, db, query, check=True):
        try:
            out = subprocess.run(
                ["mariadb", "-h127.0.0.1", f"-P{self.maria_port}", "-uroot", "-N", "-B",
                 "--connect-timeout=3", db, "-e", query], capture_output=True, text=True, timeout=120)
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
                    rc = p._reap(False)
                    p.expect = (rc,)
                    node = next((n for n in self.nodes if n.proc is p), None)
                    if node is not None:
                        self.violation("crash", f"{p.name} exited on its own at +{self.t():.1f}s: "
                                                f"{describe_rc(rc)}; its log ends:\n{p.tail()}")
                        if not self.stop_faults.is_set():
                            self.start_node(node)
                        continue
                    self.note(f"{p.name} exited on its own: {describe_rc(rc)}; restarting it")
                    {self.broker: self.start_broker, self.redis: self.start_redis,
                     self.maria: self.start_maria}[p]()
                finally:
                    p.lock.release()
            restart_wedged_broker(self)
            self.stop_monitor.wait(0.25)

    # -- requests --

    def send(self, http, node, kind, method, path, auth, body=None, **kw):
        t0 = time.time()
        try:
            status, rbody = http.call(node, method, path, auth, body)
            outcome = "answer"
        except NotSent as e:
            status, rbody, outcome = None, str(e).encode(), "not-sent"
        except Unknown as e:
            status, rbody, outcome = None, str(e).encode(), "unknown"
        text = rbody.decode("utf-8", "replace")
        code = None
        if status is not None and status >= 400:
            code = (decode(rbody) or {}).get("error")
        return self.record(kind, t0=t0, t1=time.time(), status=status, code=code, outcome=outcome,
                           body=text[:400], node=self.nodes[node].idx, **kw)

    def other_node(self, rng, last):
        """A node other than `last` (the API promises any node serves any
        request; a retry elsewhere is the hardest case for idempotency)."""
        choices = [i for i in range(len(self.nodes)) if i != last]
        return rng.choice(choices) if choices else 0

    def create_sale(self, http, rng, stock, limit, node):
        sku = f"CC-{len(self.sales) + 1}"
        body = json.dumps({
            "sku_id": sku, "name": f"cluster chaos {sku}", "price_cents": rng.randint(100, 9999),
            "stock": stock, "start_at": iso(now_ms() - 60_000), "end_at": iso(now_ms() + 86_400_000),
            "per_user_limit": limit})
        sale = {"sku": sku, "stock": stock, "limit": limit, "id": None, "attempts": []}
        with self.lock:
            self.sales[sku] = sale
        rec = self.send(http, node, "create", "POST", "/api/v1/activities", ADMIN, body, sku=sku)
        sale["attempts"].append(rec)
        if rec["status"] == 201:
            sale["id"] = (decode(rec["body"].encode()) or {}).get("id")
        return sale

    def buy(self, http, rng, act, user, qty, rid, attempts=BUY_ATTEMPTS, schedule=True):
        """One purchase: a random node, every retry on another. Returns the
        last record."""
        b = {"user": user, "act": act, "qty": qty, "attempts": []}
        with self.lock:
            self.buys[rid] = b
        body = json.dumps({"quantity": qty, "request_id": rid})
        node = rng.randrange(len(self.nodes))
        rec = None
        for attempt in range(attempts):
            rec = self.send(http, node, "buy", "POST", f"/api/v1/activities/{act}/orders", token(user),
                            body, rid=rid)
            b["attempts"].append(rec)
            st = rec["status"]
            if st in (200, 201):
                self.confirmed(rng, rid, rec, schedule)
                if schedule and rng.random() < 0.05 and not self.stop_clients.is_set():
                    # The same request again, on yet another node: 200, same order.
                    again = self.send(http, self.other_node(rng, node), "buy", "POST",
                                      f"/api/v1/activities/{act}/orders", token(user), body, rid=rid)
                    b["attempts"].append(again)
                    if again["status"] in (200, 201):
                        self.confirmed(rng, rid, again, False)
                return rec
            if st is not None and st != 503:
                return rec
            if self.stop_clients.is_set() and schedule:
                return rec
            node = self.other_node(rng, node)
            time.sleep(rng.uniform(0.02, 0.3) * (attempt + 1))
        return rec

    def confirmed(self, rng, rid, rec, schedule):
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
                o = self.orders[oid] = {"user": b["user"], "act": b["act"], "qty": b["qty"], "rid": rid,
                                        "expires_at": None, "pays": [], "cancels": []}
        try:
            o["expires_at"] = rfc3339_ms(v["expires_at"])
        except (KeyError, ValueError, TypeError):
            self.violation("wrong-answer", f"buy {rid}: no expires_at in {rec['body']}")
        if not schedule:
            return
        ttl = ORDER_TTL_MS / 1000
        r = rng.random()
        with self.q_lock:
            self.q_seq += 1
            if r < 0.45 or r >= 0.95:
                self.moves.append((time.monotonic() + rng.uniform(0, 1.2 * ttl), self.q_seq, "pay", oid))
            if 0.45 <= r < 0.70 or r >= 0.95:
                self.moves.append((time.monotonic() + rng.uniform(0, 1.1 * ttl), self.q_seq, "cancel", oid))

    def buyer(self, idx):
        rng = random.Random(f"{self.seed}/buyer/{idx}")
        http = Http(self)
        n = 0
        while not self.stop_clients.is_set():
            if rng.random() < 0.15:
                act, users, qtys = self.hot_sale, self.args.users // 4, (1,)
            else:
                act, users, qtys = self.main_sale, self.args.users, (1, 1, 1, 2)
            user = rng.randint(1, users)
            rid = f"b{idx}-{n}"
            n += 1
            self.buy(http, rng, act, user, rng.choice(qtys), rid)
            time.sleep(rng.uniform(0, 2 * BUY_GAP_S))
        http.close()

    def mover(self, idx):
        """Pays and cancels, each to a random node, retries elsewhere."""
        rng = random.Random(f"{self.seed}/mover/{idx}")
        http = Http(self)
        while not self.stop_clients.is_set():
            item = None
            with self.q_lock:
                due = [m for m in self.moves if m[0] <= time.monotonic()]
                if due:
                    item = min(due)
                    self.moves.remove(item)
            if item is None:
                time.sleep(0.01)
                continue
            _, _, what, oid = item
            o = self.orders[oid]
            node = rng.randrange(len(self.nodes))
            for attempt in range(MOVE_ATTEMPTS):
                rec = self.send(http, node, what, "POST", f"/api/v1/orders/{oid}/{what}", token(o["user"]),
                                "", oid=oid)
                o["pays" if what == "pay" else "cancels"].append(rec)
                st = rec["status"]
                if st is not None and st != 503:
                    break
                if self.stop_clients.is_set():
                    break
                node = self.other_node(rng, node)
                time.sleep(rng.uniform(0.02, 0.3) * (attempt + 1))
        http.close()

    # -- faults --

    FAULTS = ("node_kill", "node_kill", "node_stop", "redis_kill", "broker_kill", "broker_stop")

    def faults_loop(self):
        rng = random.Random(f"{self.seed}/faults")
        plan = []
        kinds = [f for f in self.FAULTS if f in self.args.faults]
        while kinds and not self.stop_faults.wait(rng.uniform(2.0, 6.0)):
            if not plan:
                plan = list(kinds)
                rng.shuffle(plan)
            f = plan.pop()
            self.faults[f] += 1
            try:
                getattr(self, "f_" + f)(rng)
            except Exception as e:  # noqa: BLE001 - a fault that fails is a note, not a crash of the test
                self.note(f"fault {f} failed: {e!r}")

    def live_nodes(self, exclude=None):
        return [n for n in self.nodes if not n.dead and n is not exclude and n.proc.alive()]

    def f_node_kill(self, rng):
        nodes = self.live_nodes(self.paused_node)
        if not nodes:
            return
        n = rng.choice(nodes)
        d = rng.uniform(0, 2)
        self.say(f"fault: node {n.idx} kill -9, restart after {d:.1f}s")
        with n.proc.lock:
            n.gen += 1
            n.proc.kill9()
            time.sleep(d)
            self.start_node(n)

    def f_node_stop(self, rng):
        """SIGSTOP one node past every timeout, in a thread: the schedule
        goes on (the brief: kill one node and stop another)."""
        if self.paused_node is not None:
            return
        nodes = self.live_nodes()
        if not nodes:
            return
        n = rng.choice(nodes)
        d = rng.uniform(*NODE_STOP_S)
        self.say(f"fault: node {n.idx} SIGSTOP for {d:.1f}s (past every timeout), then SIGCONT")
        self.paused_node = n
        n.proc.pause()

        def wake():
            self.stop_faults.wait(d)
            n.proc.resume()
            self.paused_node = None
            self.say(f"node {n.idx} SIGCONT")

        threading.Thread(target=wake, daemon=True, name="wake").start()

    def f_redis_kill(self, rng):
        d = rng.uniform(0.5, 4)
        self.say(f"fault: Redis kill -9, restart from its AOF after {d:.1f}s")
        with self.redis.lock:
            self.redis.kill9()
            time.sleep(d)
            self.start_redis()

    def f_broker_kill(self, rng):
        d = rng.uniform(1, 5)
        self.say(f"fault: broker kill -9, down {d:.1f}s")
        with self.broker.lock:
            self.broker.kill9()
            time.sleep(d)
            self.start_broker()

    def f_broker_stop(self, rng):
        d = rng.uniform(1, 5)
        self.say(f"fault: broker SIGSTOP for {d:.1f}s")
        self.broker.pause()
        time.sleep(d)
        self.broker.resume()

    # -- the run itself --

    def chaos(self):
        http = Http(self)
        rng = random.Random(f"{self.seed}/setup")
        for stock, limit, which in ((self.args.stock, LIMIT, "main_sale"), (HOT_STOCK, HOT_LIMIT, "hot_sale")):
            for _ in range(50):
                s = self.create_sale(http, rng, stock, limit, rng.randrange(len(self.nodes)))
                if s["id"] is not None:
                    break
                time.sleep(0.3)
            else:
                raise SystemExit(f"could not open a sale (50 tries): {s['attempts'][-1]}")
            setattr(self, which, s["id"])
        self.say(f"sales: {self.main_sale} (stock {self.args.stock}, limit {LIMIT}), "
                 f"{self.hot_sale} (stock {HOT_STOCK}, limit {HOT_LIMIT}); {self.args.users} users")
        http.close()
        mon = threading.Thread(target=self.monitor, name="monitor", daemon=True)
        mon.start()
        clients = [threading.Thread(target=self.buyer, args=(i,), name=f"buyer{i}", daemon=True)
                   for i in range(self.args.buyers)]
        clients += [threading.Thread(target=self.mover, args=(i,), name=f"mover{i}", daemon=True)
                    for i in range(2)]
        fault_t = threading.Thread(target=self.faults_loop, name="faults", daemon=True)
        for t in clients + [fault_t]:
            t.start()
        end = time.monotonic() + self.args.seconds
        next_report = time.monotonic() + 10
        while time.monotonic() < end:
            time.sleep(0.2)
            if time.monotonic() >= next_report:
                next_report += 10
                self.progress()
        self.say("faults stop; everything is healed")
        self.stop_faults.set()
        fault_t.join()
        for n in self.nodes:
            n.proc.resume()
        self.paused_node = None
        self.broker.resume()
        for p, start in ((self.broker, self.start_broker), (self.redis, self.start_redis),
                         (self.maria, self.start_maria)):
            with p.lock:
                if not p.alive():
                    start()
        self.stop_clients.set()
        for t in clients:
            t.join()
        for n in self.nodes:
            with n.proc.lock:
                if not n.dead and not n.proc.alive():
                    self.start_node(n)
        self.progress()

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
        for kind in ("buy", "pay", "cancel"):
            ks = sorted((k[1], n) for k, n in c.items() if k[0] == kind)
            parts.append(f"{kind}: " + ", ".join(f"{k} x{n}" for k, n in ks))
        self.say(f"{len(recs)} requests; " + "; ".join(parts))

    # -- the end --

    def liveness(self):
        """With every fault healed, each node must take an order."""
        for i, n in enumerate(self.nodes):
            if n.dead:
                continue
            http = Http(self)
            rid = f"probe-{n.idx}"
            user = 900_000 + n.idx
            b = {"user": user, "act": self.main_sale, "qty": 1, "attempts": []}
            self.buys[rid] = b
            body = json.dumps({"quantity": 1, "request_id": rid})
            deadline = time.monotonic() + LIVENESS_S
            ok = False
            while time.monotonic() < deadline:
                rec = self.send(http, i, "buy", "POST", f"/api/v1/activities/{self.main_sale}/orders",
                                token(user), body, rid=rid)
                b["attempts"].append(rec)
                if rec["status"] in (200, 201):
                    self.confirmed(random.Random(0), rid, rec, False)
                    ok = True
                    break
                if rec["status"] == 409:
                    ok = True  # sold out: it answered, and the drain below checks the rest
                    break
                time.sleep(0.5)
            http.close()
            if not ok:
                seen = collections.Counter(f"{a['status'] or a['outcome']} {a['code'] or ''}".strip()
                                           for a in b["attempts"])
                self.violation("wedged", f"node {n.idx}: with every fault healed it took no order for "
                                         f"{LIVENESS_S} s: {dict(seen)}; its log ends:\n{n.proc.tail()}")

    def clean_restart(self):
        for n in self.nodes:
            if n.dead:
                continue
            with n.proc.lock:
                n.gen += 1
                rc = n.proc.term(STOP_TIMEOUT_S)
                if rc != 0:
                    self.violation("clean-stop", f"node {n.idx}: SIGTERM: {describe_rc(rc)} (expected exit 0 "
                                                 f"within {STOP_TIMEOUT_S} s); its log ends:\n{n.proc.tail()}")
                self.start_node(n)

    def redis_state(self):
        """Each sale's meta hash and every buyer's parsed record."""
        out = {}
        r = Resp(self.redis_port, timeout=60)
        try:
            for sid in (self.main_sale, self.hot_sale):
                meta = r.cmd("HGETALL", f"{{sale:{sid}}}:meta") or []
                users = r.cmd("HGETALL", f"{{sale:{sid}}}:users") or []
                m = {meta[i]: meta[i + 1] for i in range(0, len(meta), 2)}
                recs = {}
                for i in range(0, len(users), 2):
                    try:
                        recs[int(users[i])] = parse_record(users[i + 1])
                    except ValueError as e:
                        self.violation("bad-record", f"sale {sid} user {users[i]}: {e}: {users[i + 1][:200]}")
                out[sid] = {"meta": {k: int(v) for k, v in m.items() if v.lstrip("-").isdigit()},
                            "users": recs}
        finally:
            r.close()
        return out

    def read_sales(self):
        """GET of each sale from every node."""
        out = {}
        for i, n in enumerate(self.nodes):
            if n.dead:
                continue
            http = Http(self)
            for sid in (self.main_sale, self.hot_sale):
                st, body = self.read(http, i, f"/api/v1/activities/{sid}")
                out[(n.idx, sid)] = (st, decode(body) if st == 200 else body.decode("utf-8", "replace")[:200])
            http.close()
        return out

    def read(self, http, node, path, auth=None):
        for _ in range(30):
            try:
                return http.call(node, "GET", path, auth)
            except (NotSent, Unknown):
                time.sleep(0.2)
        return None, b""

    def read_orders(self, owners):
        """GET of every order from every node, as its owner: {(node, oid):
        (status, json or None)}. A 503 is read again a little later."""
        out = {}

        def per_node(i):
            http = Http(self)
            for oid, user in owners.items():
                for _ in range(10):
                    st, body = self.read(http, i, f"/api/v1/orders/{oid}", token(user))
                    if st != 503:
                        break
                    time.sleep(0.3)
                out[(self.nodes[i].idx, oid)] = (st, decode(body) if st == 200 else None)
            http.close()

        ts = [threading.Thread(target=per_node, args=(i,)) for i, n in enumerate(self.nodes) if not n.dead]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    def mysql_orders(self):
        orders = collections.defaultdict(list)
        reasons = {}
        for shard, db in enumerate(SHARDS):
            for (t,) in self.sql(db, "SHOW TABLES LIKE 'orders\\_2%'") or []:
                for r in self.sql(db, f"SELECT order_id, activity_id, user_id, quantity, request_id, "
                                      f"status, expires_at, updated_at FROM {t}") or []:
                    orders[r[0]].append({"act": int(r[1]), "user": int(r[2]), "qty": int(r[3]), "rid": r[4],
                                         "status": r[5], "expires_at": int(r[6]), "updated_at": int(r[7]),
                                         "where": f"{db}.{t}"})
            for oid, reason in self.sql(db, "SELECT order_id, reason FROM order_events "
                                            "WHERE kind = 'cancelled' ORDER BY lsn") or []:
                reasons[oid] = reason
        return dict(orders), reasons

    def mysql_level(self, redis):
        """Wait until MySQL holds every claim of Redis once with its status."""
        want = {c["oid"]: CLAIM_STATUS[c["st"]] for s in redis.values()
                for _, _, cs in s["users"].values() for c in cs}
        deadline = time.monotonic() + MYSQL_LEVEL_S
        last, moved = None, time.monotonic()
        while True:
            morders, reasons = self.mysql_orders()
            behind = [oid for oid, st in want.items()
                      if len(morders.get(oid, [])) != 1 or morders[oid][0]["status"] != st]
            if behind != last:
                last, moved = behind, time.monotonic()
            # The sinks run inside the nodes: with none up, or none moving
            # MySQL for MYSQL_STILL_S, MySQL is as far as it gets.
            stuck = all(n.dead for n in self.nodes) or time.monotonic() - moved > MYSQL_STILL_S
            if not behind or stuck or time.monotonic() > deadline:
                if behind:
                    self.note(f"MySQL not level with Redis at the end (waited up to {MYSQL_LEVEL_S} s, "
                              f"{MYSQL_STILL_S} s without progress): "
                              f"{len(behind)} of {len(want)} claims missing or different (the violations naming MySQL)")
                return morders, reasons
            time.sleep(1)

    def drain_sales(self, redis):
        """Buy every unit Redis says is neither sold nor reserved, with new
        buyers, and pay each order at once (an unpaid one would time out
        and give its units back during the drain), until every node keeps
        answering sold_out to single units: the units are back on sale, not
        only counted so."""
        for sid in (self.main_sale, self.hot_sale):
            meta = redis[sid]["meta"]
            remaining = meta.get("stock", 0) - meta.get("sold", 0) - meta.get("reserved", 0)
            st = {"qty": meta.get("limit", 1), "granted": 0, "paid": 0, "unknown": 0, "sold_out": 0, "n": 0,
                  "failures": 0, "confirm": True, "since": 0.0}
            lock = threading.Lock()

            def worker(k):
                rng = random.Random(f"{self.seed}/drain/{sid}/{k}")
                http = Http(self)
                while True:
                    with lock:
                        # Done when single units have been refused sold_out
                        # twice per node, twice: the second time after
                        # every node's sold-out shortcut has lapsed (a
                        # purchase of 2 refused with 1 left makes a node
                        # refuse single units too, for up to
                        # SOLD_OUT_RECHECK_MS). Or when the nodes keep failing.
                        if st["failures"] > 50:
                            break
                        if st["sold_out"] >= 2 * len(self.nodes):
                            if not st["confirm"]:
                                break
                            st["confirm"] = False
                            st["sold_out"] = 0
                            time.sleep(3 * SOLD_OUT_RECHECK_MS / 1000)
                            st["since"] = time.time()  # answers to requests sent before do not count
                        st["n"] += 1
                        j, qty = st["n"], st["qty"]
                    rec = self.buy(http, rng, sid, 2_000_000 + j, qty, f"drain-{sid}-{j}",
                                   attempts=BUY_ATTEMPTS + 4, schedule=False)
                    paid = False
                    if rec["status"] in (200, 201) and rec.get("oid"):
                        for _ in range(MOVE_ATTEMPTS + 4):
                            p = self.send(http, rng.randrange(len(self.nodes)), "pay", "POST",
                                          f"/api/v1/orders/{rec['oid']}/pay", token(2_000_000 + j), "",
                                          oid=rec["oid"])
                            if p["status"] == 200:
                                paid = True
                                break
                            if p["status"] is not None and p["status"] != 503:
                                break
                            time.sleep(0.1)
                    with lock:
                        if rec["status"] in (200, 201):
                            st["granted"] += qty
                            st["paid"] += qty if paid else 0
                        elif rec["status"] == 409 and rec["code"] == "sold_out":
                            if st["qty"] > 1:
                                st["qty"] = 1  # what is left may be less than one purchase
                            elif qty == 1 and rec["t0"] >= st["since"]:
                                st["sold_out"] += 1
                        elif rec["status"] is None or rec["status"] == 503:
                            st["unknown"] += qty
                            st["failures"] += 1
                        else:
                            st["failures"] += 1
                http.close()

            ts = [threading.Thread(target=worker, args=(k,)) for k in range(DRAIN_THREADS)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.drain[sid] = {"remaining": remaining, "granted": st["granted"], "paid": st["paid"],
                               "unknown": st["unknown"]}
            self.say(f"drain of sale {sid}: new buyers got {st['granted']} units (paid {st['paid']}); Redis "
                     f"said {remaining} were left")
            if st["unknown"] or st["failures"]:
                self.note(f"drain of sale {sid}: {st['unknown']} units asked for with no answer after every "
                          f"retry, {st['failures']} failed purchases")

    def finish(self):
        self.liveness()
        last = max([o["expires_at"] or 0 for o in self.orders.values()] + [now_ms()])
        wait = (last - now_ms() + EXPIRY_SWEEP_MS) / 1000 + 1.5
        if wait > 0:
            self.say(f"waiting {wait:.1f}s: every unpaid order past its deadline + a sweep")
            time.sleep(wait)
        if self.args.no_clean_restart:
            self.note("--no-clean-restart: the nodes are read as they run, not after a replay of their topics")
        else:
            self.say("clean restart of every node (SIGTERM, then a replay of its topic)")
            self.clean_restart()
        redis = self.redis_state()
        self.say("waiting for MySQL to hold every claim Redis holds")
        morders, mreasons = self.mysql_level(redis)
        sales = self.read_sales()
        owners = {oid: o["user"] for oid, o in self.orders.items()}
        for s in redis.values():
            for user, (_, _, cs) in s["users"].items():
                for c in cs:
                    owners.setdefault(c["oid"], user)
        for oid, rows in morders.items():
            owners.setdefault(oid, rows[0]["user"])
        self.say(f"reading {len(owners)} orders back from every node")
        gets = self.read_orders(owners)
        end = {"now": now_ms(), "redis": redis, "morders": morders, "mreasons": mreasons,
               "sales": sales, "gets": gets}
        if any(not n.dead for n in self.nodes):
            self.say("drain: selling every unit left")
            self.drain_sales(redis)
        else:
            self.note("no node could be started again: no drain, and nothing read from the nodes")
        after = self.redis_state()
        end["after_drain"] = {sid: s["meta"] for sid, s in after.items()}
        end["drain"] = self.drain
        self.stop_monitor.set()
        for p in [n.proc for n in self.nodes]:
            try:
                text = open(p.log_path, "rb").read().decode("utf-8", "replace")
            except OSError:
                continue
            for line in text.splitlines():
                if CRASH_RE.search(line):
                    self.violation("crash-log", f"{p.name}.log: {line.strip()[:300]}")
        self.checking = True
        with open(os.path.join(self.dir, "end.json"), "w") as f:
            json.dump({k: v for k, v in end.items() if k not in ("gets", "sales")}, f, default=str)
        self.check(end)

    # -- the checks: a pure function of the records and the end state --

    def check(self, end):
        V = self.violation
        t0 = self.wall_start
        now = end["now"]
        redis, morders, mreasons, gets = end["redis"], end["morders"], end["mreasons"], end["gets"]
        sale_ids = set(redis)

        def at(rec):
            return f"+{rec['t0'] - t0:.1f}s"

        def show(rec):
            s = rec["status"] if rec["outcome"] == "answer" else rec["outcome"]
            return f"{rec['kind']} {s}{' ' + rec['code'] if rec['code'] else ''} on node {rec.get('node')} at {at(rec)}"

        def definite_no(rec):
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
                V("idempotency", f"{show(r)} for request {r.get('rid')}: every retry repeats its purchase "
                                 f"exactly: {r['body'][:200]}")
            if r["outcome"] == "answer" and r["status"] not in expected[r["kind"]]:
                V("unexpected-status", f"{show(r)}: {r['body'][:200]} "
                                       f"({r.get('rid') or r.get('oid') or r.get('sku')})")

        # Redis's claims, indexed.
        claims = collections.defaultdict(list)  # oid -> [(sale, user, claim)]
        by_rid = collections.defaultdict(list)  # (sale, user, rid) -> [oid]
        for sid, s in redis.items():
            meta, users = s["meta"], s["users"]
            stock, sold, reserved = meta.get("stock"), meta.get("sold", 0), meta.get("reserved", 0)
            limit = meta.get("limit")
            if stock is None:
                V("lost-sale", f"sale {sid}: Redis has no meta for it")
                continue
            if sold + reserved > stock or sold < 0 or reserved < 0:
                V("oversold", f"sale {sid}: Redis stock {stock}, sold {sold}, reserved {reserved}")
            held_c = held_p = 0
            for user, (held, made, cs) in users.items():
                mine = sum(c["qty"] for c in cs if c["st"] in "CP")
                held_c += sum(c["qty"] for c in cs if c["st"] == "C")
                held_p += sum(c["qty"] for c in cs if c["st"] == "P")
                if held != mine:
                    V("ledger-claims-differ", f"sale {sid} user {user}: record says {held} held, its claims "
                                              f"hold {mine}")
                if made != len(cs):
                    V("ledger-claims-differ", f"sale {sid} user {user}: record says {made} orders made, it "
                                              f"has {len(cs)} claims")
                if limit is not None and mine > limit:
                    V("limit-exceeded", f"sale {sid}: user {user} holds {mine} units in Redis; the limit is "
                                        f"{limit}: {[(c['oid'], c['st'], c['qty']) for c in cs]}")
                for c in cs:
                    claims[c["oid"]].append((sid, user, c))
                    by_rid[(sid, user, c["rid"])].append(c["oid"])
                    if c["st"] == "C" and c["deadline"] + EXPIRY_SWEEP_MS + EXPIRY_SLACK_MS < now:
                        V("not-expired", f"sale {sid} user {user}: claim {c['oid']} still C "
                                         f"{(now - c['deadline']) / 1000:.1f}s after its deadline")
            if (held_p, held_c) != (sold, reserved):
                V("ledger-claims-differ", f"sale {sid}: Redis meta sold {sold} reserved {reserved}; its "
                                          f"claims hold {held_p} paid, {held_c} created")
            if sold + held_c > stock:
                V("oversold", f"sale {sid}: claims hold {held_p + held_c} units of {stock}")
        for oid, cs in claims.items():
            if len(cs) > 1:
                V("idempotency", f"order {oid} is {len(cs)} claims in Redis: {cs}")
        for key, oids in by_rid.items():
            if len(oids) > 1:
                V("idempotency", f"sale {key[0]} user {key[1]} request {key[2]}: {len(oids)} claims in Redis "
                                 f"({oids})")

        # Every purchase: one order per request id, whatever node answered.
        # The drain's purchases came after the end state was read: only
        # its own counts (below) are checked.
        buys = {rid: b for rid, b in self.buys.items() if not rid.startswith("drain-")}
        orders = {oid: o for oid, o in self.orders.items() if not o["rid"].startswith("drain-")}
        for rid, b in buys.items():
            oids = {a.get("oid") for a in b["attempts"] if a["status"] in (200, 201)}
            if len(oids) > 1:
                V("idempotency", f"request {rid} (user {b['user']}) got two orders: {sorted(oids)}: "
                                 + ", ".join(show(a) for a in b["attempts"]))
            for i, a in enumerate(b["attempts"]):
                if a["status"] == 200:
                    if all(definite_no(p) for p in b["attempts"][:i]):
                        V("replay-untold", f"request {rid} (user {b['user']}, sale {b['act']}): 200 replay "
                                           f"{show(a)} of order {a.get('oid')}, but every earlier attempt "
                                           f"said nothing changed: "
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

        # Every order: the same fate in Redis, on every node, in MySQL, and
        # one its clients were told or could have caused.
        for rid, b in buys.items():
            for a in b["attempts"]:
                if a.get("oid") in orders:
                    orders[a["oid"]].setdefault("creates", []).append(a)

        def fate(oid, o, known):
            pays, cancels = o["pays"], o["cancels"]
            pay_ok = [a for a in pays if a["status"] == 200]
            cancel_ok = [a for a in cancels if a["status"] == 200]
            pay_maybe = pay_ok or [a for a in pays if not definite_no(a)]
            cancel_maybe = cancel_ok or [a for a in cancels if not definite_no(a)]
            exp = o["expires_at"]
            told = ", ".join(show(a) for a in (o.get("creates", []) + pays + cancels)) or "nothing"
            head = (f"order {oid} (user {o['user']}, sale {o['act']}, qty {o['qty']}, request {o['rid']}, "
                    f"expires {('+%.1fs' % (exp / 1000 - t0)) if exp else '?'})")
            for a in pay_ok:
                earlier = [p for p in pays if p["t0"] < a["t0"]]
                if exp and a["t0"] * 1000 > exp + PAY_DEADLINE_SLACK_MS and all(definite_no(p) for p in earlier):
                    V("paid-after-expiry", f"{head}: pay 200 {show(a)}, sent after its deadline")
                if (decode(a["body"].encode()) or {}).get("status") != "PAID":
                    V("wrong-answer", f"{head}: pay 200 with {a['body'][:200]}")
            for a in cancel_ok:
                if (decode(a["body"].encode()) or {}).get("status") != "CANCELLED":
                    V("wrong-answer", f"{head}: cancel 200 with {a['body'][:200]}")
            if pay_ok and cancel_ok:
                V("paid-and-cancelled", f"{head}: the client was told both PAID and CANCELLED: {told}")
            # Redis: exactly one claim, the buyer's, with the request's facts.
            cs = claims.get(oid, [])
            where = []
            if len(cs) == 1:
                sid, user, c = cs[0]
                if (user, sid, c["qty"], c["rid"]) != (o["user"], o["act"], o["qty"], o["rid"]):
                    V("wrong-order", f"{head}: Redis holds it as user {user} sale {sid} qty {c['qty']} "
                                     f"request {c['rid']}")
                where.append(("Redis", CLAIM_STATUS[c["st"]], CLAIM_REASON.get(c["st"]), None))
            elif known:
                V("lost-order", f"{head}: the client saw {told}; Redis holds {len(cs)} claims of it")
            ms = morders.get(oid, [])
            if len(ms) > 1:
                V("mysql-duplicate", f"{head}: {len(ms)} rows in MySQL: {[m['where'] for m in ms]}")
            if ms:
                m = ms[0]
                if (m["user"], m["act"], m["qty"], m["rid"]) != (o["user"], o["act"], o["qty"], o["rid"]):
                    V("wrong-order", f"{head}: MySQL has {m}")
                st = None if m["status"] == "VOID" else m["status"]
                where.append(("MySQL", st, mreasons.get(oid) if st == "CANCELLED" else None, m["updated_at"]))
            else:
                where.append(("MySQL", None, None, None))
            for n in self.nodes:
                g = gets.get((n.idx, oid))
                if g is None:
                    continue
                st, v = g
                if st == 200 and v:
                    if (v.get("user_id"), v.get("activity_id"), v.get("quantity")) != (o["user"], o["act"], o["qty"]):
                        V("wrong-order", f"{head}: node {n.idx} answers {v}")
                    try:
                        upd = rfc3339_ms(v["updated_at"])
                    except (KeyError, ValueError, TypeError):
                        upd = None
                    where.append((f"node {n.idx}", v.get("status"), v.get("cancel_reason"), upd))
                elif st == 404:
                    where.append((f"node {n.idx}", None, None, None))
                else:
                    V("unexpected-status", f"{head}: GET on node {n.idx} after the clean restarts: {st}")
            for name, st, reason, upd in where:
                end_ = f"{name} ends with {st or 'no such order'}{' (' + reason + ')' if reason else ''}"
                if st is None:
                    if known or cs:
                        V("lost-order", f"{head}: the client saw {told}; {end_}")
                    continue
                if pay_ok and st != "PAID":
                    V("paid-lost", f"{head}: the client saw {told}; {end_}")
                if cancel_ok and st != "CANCELLED":
                    V("cancel-lost", f"{head}: the client saw {told}; {end_}")
                if st == "PAID" and not pay_maybe:
                    V("paid-untold", f"{head}: no pay could have done it ({told}); {end_}")
                early = exp is not None and upd is not None and upd < exp
                if st == "CANCELLED" and (reason == "user" or (reason != "timeout" and early)) and not cancel_maybe:
                    V("cancelled-untold", f"{head}: no cancel could have done it ({told}); {end_}")
                if st == "CANCELLED" and reason == "timeout" and early:
                    V("expired-early", f"{head}: cancelled for timeout at {iso(upd)}, before its deadline "
                                       f"{iso(exp)} ({name})")
                if st == "CREATED" and exp and now > exp + EXPIRY_SWEEP_MS + EXPIRY_SLACK_MS:
                    V("not-expired", f"{head}: still CREATED {(now - exp) / 1000:.1f}s after its deadline ({name})")
            seen = {(name, st) for name, st, _, _ in where}
            if len({st for _, st in seen}) > 1:
                V("parts-differ", f"{head}: " + ", ".join(f"{name} {st}" for name, st in sorted(seen, key=str))
                                  + f" (client saw {told})")

        for oid, o in orders.items():
            fate(oid, o, True)
        # Orders no client heard of: from a request whose outcome the
        # client did not learn, and then only timed out.
        unknown = set(claims) | {oid for oid, ms in morders.items() if any(m["status"] != "VOID" for m in ms)}
        self.unknown_created = 0
        for oid in sorted(unknown - set(orders)):
            if claims.get(oid):
                sid, user, c = claims[oid][0]
                info = {"user": user, "act": sid, "qty": c["qty"], "rid": c["rid"], "status": c["st"],
                        "expires_at": c["deadline"]}
            else:
                m = morders[oid][0]
                info = {"user": m["user"], "act": m["act"], "qty": m["qty"], "rid": m["rid"],
                        "status": m["status"], "expires_at": m["expires_at"]}
            b = buys.get(info["rid"])
            head = f"order {oid} (user {info['user']}, sale {info['act']}, request {info['rid']!r})"
            if b is None or b["user"] != info["user"]:
                V("phantom-order", f"{head}: no client ever sent that request")
                continue
            if all(definite_no(a) for a in b["attempts"]):
                V("refused-but-created", f"{head}: every attempt was told nothing changed: "
                                         + ", ".join(show(a) for a in b["attempts"]))
            self.unknown_created += 1
            fate(oid, {"user": info["user"], "act": info["act"], "qty": info["qty"], "rid": info["rid"],
                       "expires_at": info["expires_at"], "pays": [], "cancels": [],
                       "creates": b["attempts"]}, False)

        # MySQL per user: the limit holds there too.
        per_user = collections.Counter()
        for oid, ms in morders.items():
            for m in ms[:1]:
                if m["status"] in ("CREATED", "PAID") and m["act"] in sale_ids:
                    per_user[(m["user"], m["act"])] += m["qty"]
        for (user, sid), n in per_user.items():
            lim = redis[sid]["meta"].get("limit")
            if lim is not None and n > lim:
                V("limit-exceeded", f"MySQL: user {user} holds {n} units of sale {sid}; the limit is {lim}")

        # Every node's GET of each sale: Redis's counters, adding up.
        for (idx, sid), (st, v) in end["sales"].items():
            meta = redis.get(sid, {}).get("meta", {})
            if st != 200 or not isinstance(v, dict):
                V("unexpected-status", f"GET sale {sid} on node {idx} after the clean restarts: {st} {v}")
                continue
            if v.get("remaining") != v.get("stock", 0) - v.get("sold", 0) - v.get("reserved", 0):
                V("oversold", f"node {idx} sale {sid}: stock {v.get('stock')} sold {v.get('sold')} reserved "
                              f"{v.get('reserved')} remaining {v.get('remaining')}")
            if any(v.get(k) != meta.get(k) for k in ("stock", "sold", "reserved")):
                V("node-redis-differ", f"sale {sid}: node {idx} answers stock/sold/reserved "
                                       f"{[v.get(k) for k in ('stock', 'sold', 'reserved')]}, Redis holds "
                                       f"{[meta.get(k) for k in ('stock', 'sold', 'reserved')]}")

        # Back on sale: the drain sold exactly what was neither sold nor
        # reserved, and then the sale is full.
        for sid, d in end.get("drain", {}).items():
            # Units whose purchase got no answer may have been sold too.
            if d["granted"] + d["unknown"] < d["remaining"]:
                V("units-lost", f"sale {sid}: Redis said {d['remaining']} units were left after every deadline "
                                f"and sweep; new buyers got only {d['granted']} before every node kept saying "
                                f"sold_out")
            # Paid units never come back: more than were left is a unit sold twice.
            if d["paid"] > d["remaining"]:
                V("oversold", f"sale {sid}: Redis said {d['remaining']} units were left; new buyers bought "
                              f"and paid {d['paid']}")
            a = end.get("after_drain", {}).get(sid, {})
            if a and a.get("sold", 0) + a.get("reserved", 0) > a.get("stock", 0):
                V("oversold", f"sale {sid} after the drain: Redis {a}")

    def report(self):
        with open(os.path.join(self.dir, "records.jsonl"), "w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")
        with open(os.path.join(self.dir, "violations.txt"), "w") as f:
            for kind, text in self.violations:
                f.write(f"[{kind}] {text}\n")
        c = collections.Counter(r["outcome"] for r in self.records)
        acked = collections.Counter(r["status"] for r in self.records if r["kind"] == "buy")
        print()
        print(f"== cluster chaos, seed {self.seed}: {len(self.nodes)} nodes, {self.args.seconds:g} s of faults, "
              f"{len(self.records)} requests ({c['unknown']} with no answer, {c['not-sent']} refused connections)")
        print("   faults: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.faults.items())))
        print("   starts: " + ", ".join(f"{p.name} {p.starts}" for p in self.procs))
        print(f"   buys: {acked.get(201, 0)} created, {acked.get(200, 0)} replayed, {acked.get(409, 0)} refused, "
              f"{acked.get(503, 0)} 503; orders confirmed to clients: {len(self.orders)}; created by requests "
              f"whose answer was lost: {getattr(self, 'unknown_created', 0)}")
        for sid, d in self.drain.items():
            print(f"   drain of sale {sid}: {d['granted']} units to new buyers ({d['paid']} paid), "
                  f"{d['remaining']} left per Redis")
        for n in self.notes:
            print(f"   note: {n.splitlines()[0]}")
        if not self.violations:
            print(f"== PASS: no violations (seed {self.seed}, run dir {self.dir})")
            return 0
        kinds = collections.Counter(k for k, _ in self.violations)
        print(f"== FAIL: {len(self.violations)} violations: " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common()))
        shown = collections.Counter()
        for kind, text in self.violations:
            shown[kind] += 1
            if shown[kind] <= SHOW_PER_KIND:
                print(f"-- [{kind}] {text}")
        print(f"== all violations: {self.dir}/violations.txt; every request: {self.dir}/records.jsonl; "
              f"replay the schedule with --seed {self.seed}")
        return 1


# ---- self-test: the checks against made-up end states ----

def self_test():
    """A consistent end state passes, and each kind of lie is caught by its
    own kind: proves the test can fail. Takes no time and no servers."""
    import tempfile

    T = now_ms() - 60_000
    DL = T + ORDER_TTL_MS

    def ob(oid, user, qty, status):
        return {"order_id": oid, "activity_id": 1, "user_id": user, "quantity": qty, "status": status,
                "expires_at": iso(DL)}

    def add(end, oid, user, rid, st, qty):
        """One more order, the same in Redis, MySQL and on every node."""
        c = {"rid": rid, "oid": oid, "st": st, "qty": qty, "amount": 100 * qty, "created": T + 1000,
             "deadline": DL, "node": 2}
        held, made, cs = end["redis"][1]["users"].get(user, (0, 0, []))
        end["redis"][1]["users"][user] = (held + (qty if st in "CP" else 0), made + 1, cs + [c])
        meta = end["redis"][1]["meta"]
        if st in "CP":
            meta["sold" if st == "P" else "reserved"] += qty
        upd = T + 3000 if st == "P" else DL + 50
        end["morders"][oid] = [{"act": 1, "user": user, "qty": qty, "rid": rid, "status": CLAIM_STATUS[st],
                                "expires_at": DL, "updated_at": upd, "where": "s0.t"}]
        if st in "XT":
            end["mreasons"][oid] = CLAIM_REASON[st]
        for i in (1, 2, 3):
            end["gets"][(i, oid)] = (200, {"status": CLAIM_STATUS[st], "cancel_reason": CLAIM_REASON.get(st),
                                           "user_id": user, "activity_id": 1, "quantity": qty,
                                           "updated_at": iso(upd)})
            end["sales"][(i, 1)] = (200, dict(meta, remaining=meta["stock"] - meta["sold"] - meta["reserved"]))

    def scenario(mutate):
        run = Run(argparse.Namespace(seed=0, dir=tempfile.gettempdir(), nodes=3))
        run.say = lambda msg: None
        run.wall_start = T / 1000
        run.checking = True

        def rec(kind, status, code=None, body=None, outcome="answer", t=1.0, node=1, **kw):
            return run.record(kind, t0=T / 1000 + t, t1=T / 1000 + t + 0.01, status=status, code=code,
                              outcome=outcome, body=json.dumps(body) if body is not None else "", node=node, **kw)

        # Order 100: user 7 bought 1 (201 on node 1), paid on node 2.
        # Order 101: user 8 bought 2: 503 on node 1, 201 on node 3; never paid: timed out.
        run.buys["r1"] = {"user": 7, "act": 1, "qty": 1,
                          "attempts": [rec("buy", 201, body=ob("100", 7, 1, "CREATED"), rid="r1", oid="100")]}
        run.buys["r2"] = {"user": 8, "act": 1, "qty": 2, "attempts": [
            rec("buy", 503, code="unavailable", body={"error": "unavailable"}, rid="r2"),
            rec("buy", 201, body=ob("101", 8, 2, "CREATED"), rid="r2", oid="101", t=2.0, node=3)]}
        run.orders["100"] = {"user": 7, "act": 1, "qty": 1, "rid": "r1", "expires_at": DL,
                             "pays": [rec("pay", 200, body=ob("100", 7, 1, "PAID"), oid="100", t=3.0, node=2)],
                             "cancels": []}
        run.orders["101"] = {"user": 8, "act": 1, "qty": 2, "rid": "r2", "expires_at": DL, "pays": [], "cancels": []}

        def claim(rid, oid, st, qty):
            return {"rid": rid, "oid": oid, "st": st, "qty": qty, "amount": 100 * qty, "created": T + 1000,
                    "deadline": DL, "node": 1}

        end = {
            "now": T + 60_000,
            "redis": {1: {"meta": {"stock": 10, "sold": 1, "reserved": 0, "limit": 2},
                          "users": {7: (1, 1, [claim("r1", "100", "P", 1)]),
                                    8: (0, 1, [claim("r2", "101", "T", 2)])}}},
            "morders": {"100": [{"act": 1, "user": 7, "qty": 1, "rid": "r1", "status": "PAID", "expires_at": DL,
                                 "updated_at": T + 3000, "where": "s0.t"}],
                        "101": [{"act": 1, "user": 8, "qty": 2, "rid": "r2", "status": "CANCELLED",
                                 "expires_at": DL, "updated_at": DL + 50, "where": "s1.t"}]},
            "mreasons": {"101": "timeout"},
            "sales": {(i, 1): (200, {"stock": 10, "sold": 1, "reserved": 0, "remaining": 9}) for i in (1, 2, 3)},
            "gets": {},
            "drain": {1: {"remaining": 9, "granted": 9, "paid": 9, "unknown": 0}},
            "after_drain": {1: {"stock": 10, "sold": 10, "reserved": 0}},
        }
        for i in (1, 2, 3):
            end["gets"][(i, "100")] = (200, {"status": "PAID", "user_id": 7, "activity_id": 1, "quantity": 1,
                                             "updated_at": iso(T + 3000)})
            end["gets"][(i, "101")] = (200, {"status": "CANCELLED", "cancel_reason": "timeout", "user_id": 8,
                                             "activity_id": 1, "quantity": 2, "updated_at": iso(DL + 50)})
        mutate(run, end, rec, claim)
        run.check(end)
        return sorted({k for k, _ in run.violations}), run.violations

    users = lambda end: end["redis"][1]["users"]  # noqa: E731

    def oversold(run, end, rec, claim):
        # Five buyers each hold 2 created units (within the limit), answers
        # lost; the sale's 10 units are then 11 held.
        end["now"] = T + 2000  # before the deadlines: claims may still be C
        for i in range(5):
            run.buys[f"z{i}"] = {"user": 20 + i, "act": 1, "qty": 2,
                                 "attempts": [rec("buy", None, outcome="unknown", rid=f"z{i}")]}
            add(end, f"20{i}", 20 + i, f"z{i}", "C", 2)

    def over_limit(run, end, rec, claim):
        # User 7 bought 2 more (told 201) and paid: 3 units, the limit is 2.
        o = ob("109", 7, 2, "CREATED")
        run.buys["r9"] = {"user": 7, "act": 1, "qty": 2, "attempts": [rec("buy", 201, body=o, rid="r9", oid="109")]}
        run.orders["109"] = {"user": 7, "act": 1, "qty": 2, "rid": "r9", "expires_at": DL, "cancels": [],
                             "pays": [rec("pay", 200, body=ob("109", 7, 2, "PAID"), oid="109", t=3.0)]}
        add(end, "109", 7, "r9", "P", 2)

    def lost_in_redis(run, end, rec, claim):
        users(end)[7] = (0, 0, [])
        end["redis"][1]["meta"]["sold"] = 0

    def lost_in_mysql(run, end, rec, claim):
        del end["morders"]["100"]

    def lost_on_node(run, end, rec, claim):
        end["gets"][(2, "100")] = (404, None)

    def paid_lost(run, end, rec, claim):
        users(end)[7] = (0, 1, [claim("r1", "100", "T", 1)])
        end["redis"][1]["meta"]["sold"] = 0

    def two_orders(run, end, rec, claim):
        run.buys["r1"]["attempts"].append(rec("buy", 200, body=ob("102", 7, 1, "CREATED"), rid="r1", oid="102", node=3))

    def duplicate_claim(run, end, rec, claim):
        add(end, "105", 8, "r2", "T", 2)  # a second order under one request id

    def refused_created(run, end, rec, claim):
        run.buys["r3"] = {"user": 9, "act": 1, "qty": 1, "attempts": [
            rec("buy", 503, code="overloaded", body={"error": "overloaded"}, rid="r3"),
            rec("buy", None, outcome="not-sent", rid="r3", node=2)]}
        users(end)[9] = (0, 1, [claim("r3", "103", "T", 1)])
        end["morders"]["103"] = [{"act": 1, "user": 9, "qty": 1, "rid": "r3", "status": "CANCELLED",
                                  "expires_at": DL, "updated_at": DL + 50, "where": "s0.t"}]
        end["mreasons"]["103"] = "timeout"
        for i in (1, 2, 3):
            end["gets"][(i, "103")] = (200, {"status": "CANCELLED", "cancel_reason": "timeout", "user_id": 9,
                                             "activity_id": 1, "quantity": 1, "updated_at": iso(DL + 50)})

    def phantom(run, end, rec, claim):
        users(end)[5] = (0, 1, [claim("zz", "104", "T", 1)])
        end["morders"]["104"] = [{"act": 1, "user": 5, "qty": 1, "rid": "zz", "status": "CANCELLED",
                                  "expires_at": DL, "updated_at": DL + 50, "where": "s0.t"}]

    def stuck_reserved(run, end, rec, claim):
        users(end)[8] = (2, 1, [claim("r2", "101", "C", 2)])
        end["redis"][1]["meta"]["reserved"] = 2
        end["morders"]["101"][0]["status"] = "CREATED"
        for i in (1, 2, 3):
            end["gets"][(i, "101")][1].update(status="CREATED", cancel_reason=None)
            end["sales"][(i, 1)] = (200, {"stock": 10, "sold": 1, "reserved": 2, "remaining": 7})

    def counter_drift(run, end, rec, claim):
        end["redis"][1]["meta"]["reserved"] = 1

    def node_differs(run, end, rec, claim):
        end["sales"][(3, 1)] = (200, {"stock": 10, "sold": 2, "reserved": 0, "remaining": 8})

    def units_lost(run, end, rec, claim):
        end["drain"][1].update(granted=4, paid=4)

    def drain_oversold(run, end, rec, claim):
        end["drain"][1].update(granted=11, paid=11)

    def mysql_dup(run, end, rec, claim):
        end["morders"]["100"].append(dict(end["morders"]["100"][0], where="s1.t"))

    def mysql_differs(run, end, rec, claim):
        end["morders"]["101"][0]["status"] = "PAID"

    def replay_untold(run, end, rec, claim):
        run.buys["r2"]["attempts"][1] = rec("buy", 200, body=ob("101", 8, 2, "CREATED"), rid="r2", oid="101",
                                            t=2.0, node=3)

    cases = [
        (lambda *a: None, []),
        (oversold, ["oversold"]),
        (over_limit, ["limit-exceeded"]),
        (lost_in_redis, ["lost-order", "node-redis-differ"]),
        (lost_in_mysql, ["lost-order", "parts-differ"]),
        (lost_on_node, ["lost-order", "parts-differ"]),
        (paid_lost, ["paid-lost", "parts-differ", "node-redis-differ"]),
        (two_orders, ["idempotency"]),
        (duplicate_claim, ["idempotency"]),
        (refused_created, ["refused-but-created"]),
        (phantom, ["phantom-order"]),
        (stuck_reserved, ["not-expired"]),
        (counter_drift, ["ledger-claims-differ", "node-redis-differ"]),
        (node_differs, ["node-redis-differ"]),
        (units_lost, ["units-lost"]),
        (drain_oversold, ["oversold"]),
        (mysql_dup, ["mysql-duplicate"]),
        (mysql_differs, ["paid-untold", "parts-differ"]),
        (replay_untold, ["replay-untold"]),
    ]
    bad = 0
    for mutate, want in cases:
        got, vs = scenario(mutate)
        name = getattr(mutate, "__name__", "consistent")
        if name == "<lambda>":
            name = "consistent"
        if got != sorted(want):
            bad += 1
            print(f"self-test {name}: want {sorted(want)}, got {got}")
            for k, t in vs:
                print(f"    [{k}] {t}")
    print(f"self-test: {len(cases) - bad} of {len(cases)} cases as expected")
    return 1 if bad else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90, help="how long the faults run (default 90)")
    ap.add_argument("--seed", type=int, default=None, help="replay a schedule (default: a new seed)")
    ap.add_argument("--stock", type=int, default=10_000, help="the main sale's stock (default 10000)")
    ap.add_argument("--users", type=int, default=None, help="buyers of the main sale (default: the stock)")
    ap.add_argument("--buyers", type=int, default=6, help="buyer threads (default 6)")
    ap.add_argument("--nodes", type=int, default=NODES, help=f"flashd nodes (default {NODES})")
    ap.add_argument("--faults", default=",".join(sorted(set(Run.FAULTS))),
                    help="the kinds of fault to schedule, comma-separated (default: all: "
                         + ",".join(sorted(set(Run.FAULTS))) + ")")
    ap.add_argument("--no-clean-restart", action="store_true",
                    help="check the nodes as they run, without the clean restart (to look past a restart "
                         "that fails)")
    ap.add_argument("--dir", required=True, help="an empty directory for everything the run writes")
    ap.add_argument("--flashd", required=True)
    ap.add_argument("--tansu", required=True)
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--mariadbd", default="/usr/sbin/mariadbd")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    if args.users is None:
        args.users = args.stock
    args.faults = [f for f in args.faults.split(",") if f]
    bad = [f for f in args.faults if f not in Run.FAULTS]
    if bad:
        ap.error(f"--faults: unknown {bad}; the kinds are {sorted(set(Run.FAULTS))}")
    if args.seconds <= 0 or args.buyers < 1 or args.nodes < 2 or args.stock < 1 or args.users < 4:
        ap.error("--seconds > 0, --buyers >= 1, --nodes >= 2, --stock >= 1, --users >= 4")
    run = Run(args)

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    run.say(f"seed {args.seed} (replay with --seed {args.seed}); run dir {run.dir}")
    try:
        run.setup()
        run.chaos()
        run.finish()
        return run.report()
    except Exception:  # noqa: BLE001 - the test's own failure, told apart from a violation
        import traceback
        traceback.print_exc()
        print(f"== the test itself failed (seed {args.seed}); exit 3")
        return 3
    finally:
        run.cleanup()


if __name__ == "__main__":
    sys.exit(main())
