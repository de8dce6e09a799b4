#!/usr/bin/env bash
# weft benchmark: an nginx upstream answering "ok\n", then the same load against the upstream
# directly, through weft and through an equivalently configured nginx reverse proxy. Reports
# req/s, p50/p99 latency, errors and the proxy's CPU time per request. See bench/README.md.
#
# Env: CONNS (32), DURATION (10, seconds), WARMUP (2, seconds), PROTO (h1|h2, default h1),
#      H2_STREAMS (10, h2 mode: concurrent streams per connection), WEFT_BIN (skip the build),
#      ROUNDS (3: weft and nginx interleaved, medians reported), KEEP_TMP=1 (keep the temporary
#      directory with configs and logs).
set -euo pipefail

CONNS=${CONNS:-32}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PROTO=${PROTO:-h1}
ROUNDS=${ROUNDS:-3}
H2_STREAMS=${H2_STREAMS:-10}
NGINX=${NGINX:-/usr/sbin/nginx}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
OUT_DIR="$BENCH_DIR/out"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

case "$PROTO" in h1 | h2) ;; *) die "PROTO must be h1 or h2 (got '$PROTO')" ;; esac
[[ "$CONNS" =~ ^[0-9]+$ && "$DURATION" =~ ^[0-9]+$ && "$WARMUP" =~ ^[0-9]+$ && "$ROUNDS" =~ ^[1-9][0-9]*$ ]] ||
    die "CONNS, DURATION, WARMUP and ROUNDS must be integers"
for tool in python3 curl "$NGINX"; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if [[ $PROTO == h1 ]]; then
    command -v wrk >/dev/null || die "wrk not found"
else
    command -v h2load >/dev/null || die "h2load not found (apt-get install nghttp2-client)"
fi

# ---------------------------------------------------------------------------------------------
# Temporary directory, process bookkeeping and cleanup.
# ---------------------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench.XXXXXX")
PIDS=() # processes we started, killed in reverse order on exit
FAILED=1

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i pid
    if [[ -n ${LOAD_PID:-} ]]; then
        kill -TERM "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $FAILED == 1 || ${KEEP_TMP:-0} == 1 ]]; then
        mkdir -p "$OUT_DIR"
        local keep="$OUT_DIR/logs-$STAMP"
        cp -r "$TMP" "$keep" 2>/dev/null || true
        log "configs and logs kept in $keep"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Python helper: free ports, wrk/h2load parsing, the final table and JSON.
# ---------------------------------------------------------------------------------------------
cat >"$TMP/helper.py" <<'PY'
import json, re, socket, sys

def ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))

UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}

def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None

def parse_wrk(path):
    text = open(path).read()
    r = {"tool": "wrk"}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([0-9.]+\w+),", text)
    r["requests"] = int(m.group(1)) if m else 0
    r["elapsed_us"] = to_us(m.group(2)) if m else None
    dist = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", text, re.M))
    for pct in ("50", "75", "90", "99"):
        r[f"p{pct}_us"] = to_us(dist[pct]) if pct in dist else None
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        r["mean_us"], r["stdev_us"], r["max_us"] = (to_us(x) for x in m.groups())
    errors = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                errors["socket_" + k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m and int(m.group(1)):
        errors["non_2xx_3xx"] = int(m.group(1))
    if r["rps"] is None:
        errors["unparsable_output"] = 1
    r["errors"] = errors
    print(json.dumps(r))

def parse_h2load(path):
    text = open(path).read()
    r = {"tool": "h2load"}
    m = re.search(r"finished in ([0-9.]+\w+), ([0-9.]+) req/s", text)
    r["rps"] = float(m.group(2)) if m else None
    r["elapsed_us"] = to_us(m.group(1)) if m else None
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    errors = {}
    if m:
        total, started, done, ok, failed, errored, timeout = map(int, m.groups())
        r["requests"] = done
        for k, v in (("failed", failed), ("errored", errored), ("timeout", timeout)):
            if v:
                errors[k] = v
    else:
        r["requests"] = 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        for k, v in zip(("3xx", "4xx", "5xx"), map(int, m.groups()[1:])):
            if v:
                errors["status_" + k] = v
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        r["min_us"], r["max_us"], r["mean_us"], r["stdev_us"] = (to_us(x) for x in m.groups())
    # h2load reports no percentiles.
    r["p50_us"] = r["p99_us"] = None
    if r["rps"] is None:
        errors["unparsable_output"] = 1
    r["errors"] = errors
    print(json.dumps(r))

def record(parsed_path, target, tck, proxy_ticks, upstream_ticks, load_ticks, busy_ticks,
           wall_ticks, ncpu, others):
    r = json.load(open(parsed_path))
    tck = float(tck)
    req = r["requests"]
    per_req = lambda ticks: (int(ticks) / tck) * 1e6 / req if req else None
    r["target"] = target
    r["cpu_seconds"] = int(proxy_ticks) / tck
    r["cpu_us_per_req"] = per_req(proxy_ticks)
    r["upstream_cpu_seconds"] = int(upstream_ticks) / tck
    r["upstream_cpu_us_per_req"] = per_req(upstream_ticks)
    r["loadgen_cpu_seconds"] = int(load_ticks) / tck
    wall = int(wall_ticks) / tck / int(ncpu)  # /proc/stat counts ticks on every CPU
    busy = int(busy_ticks) / tck
    r["host_busy_cores"] = busy / wall if wall else None
    # CPU used during the run by anything other than the load generator, upstream and proxy:
    # (for direct the proxy is the upstream: count it once)
    own = int(proxy_ticks) + (0 if target == "direct" else int(upstream_ticks)) + int(load_ticks)
    other = busy - own / tck
    r["other_busy_cores"] = max(other, 0.0) / wall if wall else None
    r["concurrent_processes"] = [p for p in others.split(",") if p]
    r["flagged"] = bool(r["errors"]) or req == 0
    print(json.dumps(r))

def fmt_us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f}ms" if v >= 1000 else f"{v:.0f}us"

MEDIAN_KEYS = ("rps", "cpu_us_per_req", "upstream_cpu_us_per_req", "p50_us", "p99_us", "mean_us", "max_us")

def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

def report(results_path, meta_path, out_path):
    results = [json.loads(l) for l in open(results_path) if l.strip()]
    meta = json.load(open(meta_path))
    rounds = sorted({r.get("round", 1) for r in results})
    by = {}  # target -> its median figures over the rounds
    for target in dict.fromkeys(r["target"] for r in results):
        runs = [r for r in results if r["target"] == target]
        by[target] = {k: median([r.get(k) for r in runs]) for k in MEDIAN_KEYS}
    h2 = meta["proto"] == "h2"
    lat_cols = ("mean", "max") if h2 else ("p50", "p99")
    head = f"{'round':<5} {'target':<8} {'req/s':>10} {lat_cols[0]:>9} {lat_cols[1]:>9} {'cpu_us/req':>11} {'ups_us/req':>11} {'other_cpu':>9}  errors"
    lines = [head, "-" * len(head)]
    for r in results:
        errs = ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "0"
        if r["flagged"]:
            errs += "  <-- FLAGGED"
        cpu = "-" if r["cpu_us_per_req"] is None else f"{r['cpu_us_per_req']:.2f}"
        if r["target"] == "direct":
            cpu += "*"
        ups = "-" if r["upstream_cpu_us_per_req"] is None else f"{r['upstream_cpu_us_per_req']:.2f}"
        other = "-" if r["other_busy_cores"] is None else f"{r['other_busy_cores']:.2f}"
        rps = "-" if r["rps"] is None else f"{r['rps']:.0f}"
        lines.append(f"{r.get('round', 1):<5} {r['target']:<8} {rps:>10} {fmt_us(r.get(lat_cols[0] + '_us')):>9} "
                     f"{fmt_us(r.get(lat_cols[1] + '_us')):>9} {cpu:>11} {ups:>11} {other:>9}  {errs}")
    if "direct" in by:
        lines.append("* direct: cpu_us/req is the upstream nginx's own CPU per request (reference)")
    lines.append("other_cpu: cores busy with processes other than load generator/upstream/proxy during the run")
    ratios = {}
    w, n = by.get("weft"), by.get("nginx")
    if w and n:
        lines.append("")
        lines.append(f"medians over {len(rounds)} round(s):")
        for target in ("weft", "nginx"):
            m = by[target]
            lines.append(f"  {target:<6} req/s {m['rps'] or 0:.0f}  cpu_us/req {m['cpu_us_per_req'] or 0:.2f}  "
                         f"{lat_cols[0]} {fmt_us(m.get(lat_cols[0] + '_us'))}  {lat_cols[1]} {fmt_us(m.get(lat_cols[1] + '_us'))}")
        def ratio(key):
            # The ratio within each round (same machine state), then the median over rounds.
            per_round = []
            for rnd in rounds:
                a = next((r.get(key) for r in results if r["target"] == "weft" and r.get("round", 1) == rnd), None)
                b = next((r.get(key) for r in results if r["target"] == "nginx" and r.get("round", 1) == rnd), None)
                if a is not None and b:
                    per_round.append(a / b)
            return median(per_round)
        keys = [("cpu_us_per_req", "cpu/req"), ("rps", "req/s")]
        keys += [("mean_us", "mean latency"), ("max_us", "max latency")] if h2 else \
                [("p50_us", "p50 latency"), ("p99_us", "p99 latency")]
        lines.append("")
        lines.append("weft ÷ nginx (median of per-round ratios):")
        for key, label in keys:
            v = ratio(key)
            ratios[key] = v
            lines.append(f"  {label:<13} {('-' if v is None else f'{v:.2f}x')}")
    flagged = [r["target"] for r in results if r["flagged"]]
    busy = [r["target"] for r in results if (r["other_busy_cores"] or 0) > 0.2 or r["concurrent_processes"]]
    if flagged:
        lines.append(f"\nWARNING: runs with errors: {', '.join(flagged)}")
    if busy:
        lines.append(f"WARNING: other work was running during: {', '.join(busy)} "
                     f"(see other_cpu / concurrent_processes in the JSON); numbers are noisy")
    print("\n".join(lines))
    meta["results"] = results
    meta["medians"] = by
    meta["ratios_weft_over_nginx"] = ratios
    meta["flagged"] = flagged
    meta["noisy"] = busy
    with open(out_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ports": lambda: ports(int(args[0])), "wrk": lambda: parse_wrk(*args),
     "h2load": lambda: parse_h2load(*args), "record": lambda: record(*args),
     "report": lambda: report(*args)}[cmd]()
PY
helper() { python3 "$TMP/helper.py" "$@"; }

# ---------------------------------------------------------------------------------------------
# CPU accounting from /proc.
# ---------------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(getconf _NPROCESSORS_ONLN)

# A process and all its descendants.
proc_tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" || true); do
        proc_tree "$child"
    done
}

# utime+stime (fields 14 and 15 of /proc/PID/stat, clock ticks) summed over a process tree.
# The comm field may contain spaces, so fields are counted after its closing parenthesis.
tree_ticks() {
    local total=0 pid stat rest
    for pid in $(proc_tree "$1"); do
        read -r stat 2>/dev/null <"/proc/$pid/stat" || continue
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        # rest starts at field 3: field N is f[N-3].
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Busy and total ticks of the whole host (first line of /proc/stat; iowait counts as idle).
host_ticks() {
    local _cpu user nice system idle iowait irq softirq steal _rest
    read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
    echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# Children CPU time of this shell (the load generator runs as our child), in clock ticks.
# `times` must run in this shell itself: a subshell (pipeline, $(...)) starts with zero counters.
children_ticks() {
    local line ms=0
    times >"$TMP/times"
    { read -r _; read -r line; } <"$TMP/times" # second line: children, "XmY.YYYs XmY.YYYs"
    while [[ $line =~ ([0-9]+)m([0-9]+)\.([0-9]{3})s(.*) ]]; do
        ms=$((ms + 10#${BASH_REMATCH[1]} * 60000 + 10#${BASH_REMATCH[2]} * 1000 + 10#${BASH_REMATCH[3]}))
        line=${BASH_REMATCH[4]}
    done
    echo $((ms * CLK_TCK / 1000))
}

# Other CPU-heavy work on the host (cargo builds, test runs), as "name:pid" list.
concurrent_work() {
    ps -eo pid=,comm= | awk '$2 ~ /^(cargo|rustc|cc|c\+\+|ld|ld\.lld|clang|rust-lld)$|^cargo-/ {printf "%s:%s,", $2, $1}'
}

# ---------------------------------------------------------------------------------------------
# 1. weft binary.
# ---------------------------------------------------------------------------------------------
if [[ -n ${WEFT_BIN:-} ]]; then
    [[ -x $WEFT_BIN ]] || die "WEFT_BIN=$WEFT_BIN is not an executable"
else
    log "building weft (cargo build --release -p weft-host)"
    (cd "$REPO_DIR" && cargo build --release -p weft-host) || die "release build failed"
    WEFT_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/weft"
    [[ -x $WEFT_BIN ]] || die "build succeeded but $WEFT_BIN is missing"
fi

read -r UP_PORT WEFT_PORT WEFT_ADMIN NGINX_PORT <<<"$(helper ports 4)"

# ---------------------------------------------------------------------------------------------
# 2. Upstream: nginx, one worker, "ok\n" with keep-alive.
# ---------------------------------------------------------------------------------------------
nginx_common() { # $1 = prefix dir
    cat <<EOF
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_temp_paths() { # keep nginx away from /var/lib/nginx
    cat <<EOF
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

mkdir -p "$TMP/upstream" "$TMP/nginx" "$TMP/weft"
{
    echo "worker_processes 1;"
    nginx_common "$TMP/upstream"
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$TMP/upstream")
    keepalive_requests 100000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { return 200 "ok\n"; }
    }
}
EOF
} >"$TMP/upstream/nginx.conf"

# ---------------------------------------------------------------------------------------------
# 3. weft and an equivalent nginx reverse proxy.
# ---------------------------------------------------------------------------------------------
cat >"$TMP/weft/weft.yaml" <<EOF
apiVersion: weft/v1
kind: Cluster
metadata: {name: upstream}
spec:
  endpoints: ["127.0.0.1:$UP_PORT"]
---
apiVersion: weft/v1
kind: Listener
metadata: {name: bench}
spec:
  address: 127.0.0.1:$WEFT_PORT
  defaultCluster: upstream
EOF

# nginx 1.22: a plaintext "listen ... http2" speaks h2c with prior knowledge only.
NGINX_LISTEN_OPTS=""
[[ $PROTO == h2 ]] && NGINX_LISTEN_OPTS=" http2"
{
    echo "worker_processes auto;"
    nginx_common "$TMP/nginx"
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$TMP/nginx")
    keepalive_requests 100000;
    keepalive_timeout 75s;
    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT$NGINX_LISTEN_OPTS;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Request-Id \$request_id;
        }
    }
}
EOF
} >"$TMP/nginx/nginx.conf"

start_nginx() { # $1 = prefix dir; prints the master pid
    "$NGINX" -t -q -p "$1" -e "$1/error.log" -c "$1/nginx.conf" >/dev/null 2>&1 ||
        { "$NGINX" -t -p "$1" -e "$1/error.log" -c "$1/nginx.conf" || true; die "invalid nginx config $1/nginx.conf"; }
    "$NGINX" -p "$1" -e "$1/error.log" -c "$1/nginx.conf" >"$1/stdout.log" 2>&1 &
    PIDS+=($!)
}

wait_http() { # $1 = url, $2 = name, $3 = pid, [$4 = curl extra flag]
    for _ in $(seq 100); do
        kill -0 "$3" 2>/dev/null || die "$2 exited during startup"
        if curl -fsS ${4:-} -o /dev/null --max-time 1 "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$2 not answering at $1"
}

start_nginx "$TMP/upstream"
UP_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$UP_PORT/" upstream "$UP_PID"
log "upstream nginx pid $UP_PID on 127.0.0.1:$UP_PORT"

NO_COLOR=1 "$WEFT_BIN" proxy --config "$TMP/weft/weft.yaml" --admin "127.0.0.1:$WEFT_ADMIN" \
    --drain-timeout 1s >"$TMP/weft/stdout.log" 2>"$TMP/weft/stderr.log" &
WEFT_PID=$!
PIDS+=("$WEFT_PID")
wait_http "http://127.0.0.1:$WEFT_ADMIN/ready" weft "$WEFT_PID"
log "weft pid $WEFT_PID on 127.0.0.1:$WEFT_PORT (admin $WEFT_ADMIN)"

start_nginx "$TMP/nginx"
NGINX_PID=${PIDS[-1]}
CURL_PROTO=""
[[ $PROTO == h2 ]] && CURL_PROTO="--http2-prior-knowledge"
wait_http "http://127.0.0.1:$NGINX_PORT/" "nginx proxy" "$NGINX_PID" "$CURL_PROTO"
log "nginx proxy pid $NGINX_PID on 127.0.0.1:$NGINX_PORT ($(proc_tree "$NGINX_PID" | wc -l) processes)"

# Sanity: every target answers 200 "ok" over the benchmarked protocol.
for target in "direct:$UP_PORT" "weft:$WEFT_PORT" "nginx:$NGINX_PORT"; do
    name=${target%%:*}
    port=${target##*:}
    flag=""
    [[ $PROTO == h2 && $name != direct ]] && flag=$CURL_PROTO
    body=$(curl -fsS $flag -D "$TMP/$name.headers" --max-time 5 "http://127.0.0.1:$port/") ||
        die "$name: request failed"
    [[ $body == ok ]] || die "$name: unexpected body '$body'"
done

# ---------------------------------------------------------------------------------------------
# 4-5. Load.
# ---------------------------------------------------------------------------------------------
load_cmd() { # $1 = port, $2 = seconds
    if [[ $PROTO == h1 ]]; then
        echo wrk -t1 "-c$CONNS" "-d${2}s" --latency "http://127.0.0.1:$1/"
    else
        echo h2load -t1 "-c$CONNS" "-m$H2_STREAMS" "-D$2" "http://127.0.0.1:$1/"
    fi
}

RESULTS="$TMP/results.jsonl"
: >"$RESULTS"

# The load generator runs as a background child that we wait for, so that a signal to this
# script is handled at once (bash defers traps until a foreground child exits). `wait` reaps it,
# so its CPU time still shows in `times`.
LOAD_PID=""
run_load() { # $1 = output file, $2... = command
    local out=$1 rc=0
    shift
    "$@" >"$out" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    return "$rc"
}

run_target() { # $1 = name, $2 = port, $3 = pid whose tree is measured
    local name=$1 port=$2 pid=$3 out="$TMP/$1.$PROTO.out"
    local -a cmd
    read -r -a cmd <<<"$(load_cmd "$port" "$WARMUP")"
    log "$name: warmup ${WARMUP}s"
    run_load "$TMP/$name.warmup.out" "${cmd[@]}" || log "$name: warmup exited with $?"

    read -r -a cmd <<<"$(load_cmd "$port" "$DURATION")"
    log "$name: ${cmd[*]}"
    local others_before others_after p0 p1 u0 u1 l0 l1 b0 t0 b1 t1
    others_before=$(concurrent_work)
    p0=$(tree_ticks "$pid")
    u0=$(tree_ticks "$UP_PID")
    children_ticks >"$TMP/l0"
    read -r b0 t0 < <(host_ticks)
    run_load "$out" "${cmd[@]}" || log "$name: ${cmd[0]} exited with $?"
    read -r b1 t1 < <(host_ticks)
    children_ticks >"$TMP/l1"
    p1=$(tree_ticks "$pid")
    u1=$(tree_ticks "$UP_PID")
    others_after=$(concurrent_work)
    l0=$(<"$TMP/l0")
    l1=$(<"$TMP/l1")
    kill -0 "$pid" 2>/dev/null || die "$name died during the run"

    local parsed="$TMP/$name.parsed.json" upstream_ticks=$((u1 - u0))
    helper "$([[ $PROTO == h1 ]] && echo wrk || echo h2load)" "$out" >"$parsed"
    # For direct, the measured process is the upstream itself (cpu_us/req == upstream's).
    helper record "$parsed" "$name" "$CLK_TCK" "$((p1 - p0))" "$upstream_ticks" "$((l1 - l0))" \
        "$((b1 - b0))" "$((t1 - t0))" "$NCPU" "$others_before$others_after" |
        python3 -c 'import json, sys; r = json.load(sys.stdin); r["round"] = int(sys.argv[1]); print(json.dumps(r))' \
            "$ROUND" >>"$RESULTS"
    sed 's/^/    /' "$out" >&2
}

TARGETS=()
[[ $PROTO == h1 ]] && TARGETS+=("direct:$UP_PORT:$UP_PID")
TARGETS+=("weft:$WEFT_PORT:$WEFT_PID" "nginx:$NGINX_PORT:$NGINX_PID")
# Rounds interleave weft and nginx so slow drifts of the machine hit both alike; the report
# gives per-round figures and medians (the direct reference runs once).
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    for t in "${TARGETS[@]}"; do
        IFS=: read -r name port pid <<<"$t"
        [[ $name == direct && $ROUND -gt 1 ]] && continue
        log "round $ROUND/$ROUNDS"
        run_target "$name" "$port" "$pid"
    done
done

# Proxy-side problems logged during the runs.
WEFT_WARN=$(grep -cE '\b(WARN|ERROR)\b' "$TMP/weft/stderr.log" || true)
NGINX_ERR=$(grep -cE '\[(error|crit|alert|emerg)\]' "$TMP/nginx/error.log" || true)
UP_ERR=$(grep -cE '\[(error|crit|alert|emerg)\]' "$TMP/upstream/error.log" || true)

# ---------------------------------------------------------------------------------------------
# 6. Report.
# ---------------------------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
OUT_JSON="$OUT_DIR/results-$STAMP.json"
python3 - "$TMP/meta.json" <<PY
import json, os, platform, subprocess, sys
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stderr.strip() or None
    except Exception:
        return None
def git(*args):
    try:
        return subprocess.run(["git", "-C", "$REPO_DIR", *args], capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return None
meta = {
    "timestamp": "$STAMP",
    "proto": "$PROTO",
    "conns": $CONNS,
    "duration_s": $DURATION,
    "warmup_s": $WARMUP,
    "rounds": $ROUNDS,
    "h2_streams_per_conn": $H2_STREAMS if "$PROTO" == "h2" else None,
    "load_command": "$(load_cmd PORT "$DURATION")",
    "cpu_accounting": "utime+stime from /proc/PID/stat summed over the process tree, delta over the measured run, / requests completed",
    "host": {
        "cpus": $NCPU,
        "clk_tck": $CLK_TCK,
        "kernel": platform.release(),
        "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
    },
    "weft": {
        "binary": "$WEFT_BIN",
        "git_rev": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
        "log_warnings_or_errors": $WEFT_WARN,
    },
    "nginx": {
        "version": sh("$NGINX", "-v"),
        "worker_processes": "auto",
        "error_log_errors": $NGINX_ERR,
    },
    "upstream": {"server": "nginx, worker_processes 1, return 200 ok", "error_log_errors": $UP_ERR},
    # One response per target as the client sees it (curl, before the load).
    "response_headers_sample": {
        name: [l.strip() for l in open(os.path.join("$TMP", name + ".headers")) if l.strip()]
        for name in ("direct", "weft", "nginx")
    },
}
json.dump(meta, open(sys.argv[1], "w"))
PY

echo
echo "weft bench: PROTO=$PROTO CONNS=$CONNS DURATION=${DURATION}s, $NCPU CPUs shared by load generator, upstream and proxy"
helper report "$RESULTS" "$TMP/meta.json" "$OUT_JSON"
[[ $WEFT_WARN == 0 ]] || echo "WARNING: weft logged $WEFT_WARN WARN/ERROR lines (see $OUT_DIR/logs-$STAMP/weft/stderr.log)"
[[ $NGINX_ERR == 0 ]] || echo "WARNING: nginx proxy logged $NGINX_ERR errors"
[[ $UP_ERR == 0 ]] || echo "WARNING: upstream logged $UP_ERR errors"
echo
echo "results: $OUT_JSON"

# Keep the logs when something looked wrong.
if [[ $WEFT_WARN == 0 && $NGINX_ERR == 0 && $UP_ERR == 0 ]] &&
    ! grep -q '"flagged": true' "$RESULTS"; then
    FAILED=0
fi
