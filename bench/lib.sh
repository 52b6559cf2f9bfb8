# Shared pieces of the bench scripts (sourced, not run).

BENCH_PIDS=()

bench_need() {
  local missing=()
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local pkgs=()
  for c in "${missing[@]}"; do
    case "$c" in nginx) pkgs+=(nginx-light) ;; *) pkgs+=("$c") ;; esac
  done
  echo "== installing ${pkgs[*]}" >&2
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
}

# FLASHD_BIN / FLASHD_LOAD: prebuilt binaries (a copied release build on a
# machine without cargo); otherwise both are built here.
bench_build() {
  if [ -z "${FLASHD_BIN:-}" ]; then
    cargo build --release -q -p flashd -p flashd-load
    FLASHD_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/flashd
  fi
  FLASHD_LOAD=${FLASHD_LOAD:-$(dirname "$FLASHD_BIN")/flashd-load}
}

bench_wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on port $1" >&2; return 1
}

# bench_start_flashd DIR PORT CPUS EXTRA_TOML
bench_start_flashd() {
  local dir=$1 port=$2 cpus=$3 extra=$4
  cat > "$dir/flashd.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
max_connections = 200000
data_dir = "$dir/data"
[logging]
level = "warn"
$extra
TOML
  taskset -c "$cpus" "$FLASHD_BIN" serve --config "$dir/flashd.toml" 2>"$dir/flashd.log" &
  BENCH_PIDS+=($!)
  FLASHD_PID=$!
  bench_wait_port "$port"
}

# bench_start_nginx DIR PORT CPUS WORKERS
bench_start_nginx() {
  local dir=$1 port=$2 cpus=$3 workers=$4
  mkdir -p "$dir/nginx"
  # 45-byte body, as the issue specifies; keep-alive without a request cap
  # so wrk's connections are never recycled mid-run.
  cat > "$dir/nginx/nginx.conf" <<NGX
worker_processes $workers;
daemon off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 65536; }
worker_rlimit_nofile 200000;
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 60s;
  client_body_temp_path $dir/nginx;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      default_type application/json;
      return 200 '{"status":"ok","server":"nginx","pad":"xxxx"}';
    }
  }
}
NGX
  taskset -c "$cpus" nginx -c "$dir/nginx/nginx.conf" &
  BENCH_PIDS+=($!)
  bench_wait_port "$port"
}

# bench_new_sale PORT ADMIN_TOKEN STOCK: create a sale open from ten
# seconds ago for two hours, one unit per buyer; prints its id.
bench_new_sale() {
  local t0 t1
  t0=$(date -u -d '-10 sec' +%FT%TZ); t1=$(date -u -d '+2 hour' +%FT%TZ)
  curl -s -X POST "http://127.0.0.1:$1/api/v1/activities" -H "Authorization: Bearer $2" \
    -d "{\"sku_id\":\"BENCH\",\"name\":\"bench\",\"price_cents\":100,\"stock\":$3,\"start_at\":\"$t0\",\"end_at\":\"$t1\",\"per_user_limit\":1}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

bench_stop_all() {
  for p in "${BENCH_PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}

# bench_wrk CPUS SYSTEM SCENARIO RESULTS_TSV WRK_ARGS...
# Appends "system scenario req_per_s p50_ms p99_ms errors" to RESULTS_TSV.
bench_wrk() {
  local cpus=$1 sys=$2 scen=$3 out=$4; shift 4
  local txt
  txt=$(taskset -c "$cpus" "${WRK:-wrk}" --latency "$@" 2>&1)
  python3 - "$sys" "$scen" "$out" <<PY
import re, sys
txt = """$txt"""
sysname, scen, out = sys.argv[1:4]
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v or "")
    if not m:
        return float("nan")
    x = float(m.group(1)); u = m.group(2)
    return {"us": x / 1000, "ms": x, "s": x * 1000, "m": x * 60000}[u]
def find(pat):
    m = re.search(pat, txt)
    return m.group(1) if m else None
if find(r"Requests/sec:\s+([\d.]+)") is None:
    print(f"wrk gave no result for {sysname} {scen}:\n{txt}", file=sys.stderr)
    sys.exit(0)
rps = float(find(r"Requests/sec:\s+([\d.]+)"))
p50 = ms(find(r"(?m)^\s+50%\s+(\S+)"))
p99 = ms(find(r"(?m)^\s+99%\s+(\S+)"))
mx = ms(find(r"Latency\s+\S+\s+\S+\s+(\S+)"))
# wrk cannot time pipelined requests (it fills only the 50% bucket); the
# max latency still bounds p99 from above, so report that, marked.
if p99 == 0:
    p99 = -mx
err = 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
if m: err += sum(int(g) for g in m.groups())
m = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
if m: err += int(m.group(1))
open(out, "a").write(f"{sysname}\t{scen}\t{rps:.0f}\t{p50:.3f}\t{p99:.3f}\t{err}\n")
print(f"  {sysname:8s} {scen:12s} {rps:>10.0f} req/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms (negative: max)  errors {err}", file=sys.stderr)
PY
}

# bench_report RESULTS_TSV TITLE: medians per (system, scenario) and the
# flashd/nginx ratio per scenario, as a markdown table.
bench_report() {
  python3 - "$1" "$2" <<'PY'
import statistics, sys, collections
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
by = collections.defaultdict(list)
for s, scen, rps, p50, p99, err in rows:
    by[(s, scen)].append((float(rps), float(p50), float(p99), int(err)))
scens = sorted({k[1] for k in by})
systems = sorted({k[0] for k in by}, key=lambda s: (s == "nginx", s))
flashds = [s for s in systems if s.startswith("flashd")]
print(f"\n### {sys.argv[2]}\n")
print("| scenario | " + " | ".join(f"{s} req/s | {s} p99 ms" for s in systems) + "".join(f" | {f} / nginx" for f in flashds) + " |")
print("|---|" + "---|" * (2 * len(systems) + len(flashds)))
for sc in scens:
    cells, med = [], {}
    for s in systems:
        v = by.get((s, sc), [])
        if not v:
            cells += ["—", "—"]
            continue
        r = statistics.median(x[0] for x in v)
        p = statistics.median(x[2] for x in v)
        med[s] = r
        errs = sum(x[3] for x in v)
        cells.append(f"{r:,.0f}" + (f" ({errs} non-2xx/errors)" if errs else ""))
        cells.append(f"{p:.2f}" if p >= 0 else f"≤ {-p:.2f} (max; wrk cannot time pipelined requests)")
    ratios = [f"{med[f] / med['nginx']:.2f}×" if f in med and med.get("nginx") else "—" for f in flashds]
    print(f"| {sc} | " + " | ".join(cells) + "".join(f" | {r}" for r in ratios) + " |")
print(f"\n(medians of {max(len(v) for v in by.values())} runs; non-2xx counts include expected 409s in a-soldout)")
PY
}
