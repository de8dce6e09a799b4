#!/usr/bin/env bash
# weft benchmark: an nginx upstream answering "ok\n", then the same load against the upstream
# directly, through weft and through an equivalently configured nginx reverse proxy. Reports
# req/s, p50/p99 latency, errors and the proxy's CPU time per request. See bench/README.md.
#
# Env: CONNS (32), DURATION (10, seconds), WARMUP (2, seconds), PROTO (h1|h2, default h1),
#      H2_STREAMS (10, h2 mode: concurrent streams per connection), WEFT_BIN (skip the build),
#      ROUNDS (3: weft and nginx interleaved, medians reported), KEEP_TMP=1 (keep the temporary
#      directory with configs and logs).
#      SCENARIO=filters runs bench/filters.sh instead: weft with 0, 1 and 5 pass-through Wasm
#      filters and nginx at a fixed request rate (its own variables are listed there).
#      SCENARIO=plugins runs it with FILTERS="0 builtins": the empty chain, the five built-in
#      plugins chained, and nginx.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${SCENARIO:-proxy}" in
    proxy) ;;
    filters) exec "$BENCH_DIR/filters.sh" ;;
    plugins) FILTERS=${FILTERS:-0 builtins} exec "$BENCH_DIR/filters.sh" ;;
    *) echo "[bench] error: SCENARIO must be proxy, filters or plugins (got '$SCENARIO')" >&2; exit 1 ;;
esac

CONNS=${CONNS:-32}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PROTO=${PROTO:-h1}
ROUNDS=${ROUNDS:-3}
H2_STREAMS=${H2_STREAMS:-10}

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

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
init_tmp

# ---------------------------------------------------------------------------------------------
# 1. weft binary.
# ---------------------------------------------------------------------------------------------
build_weft

read -r UP_PORT WEFT_PORT WEFT_ADMIN NGINX_PORT <<<"$(helper ports 4)"

# ---------------------------------------------------------------------------------------------
# 2-3. Upstream (nginx, one worker, "ok\n" with keep-alive), weft and an equivalent nginx
#      reverse proxy.
# ---------------------------------------------------------------------------------------------
mkdir -p "$TMP/weft"
write_upstream_conf "$TMP/upstream" "$UP_PORT"

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
write_proxy_conf "$TMP/nginx" "$NGINX_PORT" "$UP_PORT" "$NGINX_LISTEN_OPTS"

start_nginx "$TMP/upstream"
UP_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$UP_PORT/" upstream "$UP_PID"
log "upstream nginx pid $UP_PID on 127.0.0.1:$UP_PORT"

start_weft "$TMP/weft" "$WEFT_ADMIN"
WEFT_PID=${PIDS[-1]}
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
load_cmd() { # $1 = port, $2 = seconds; one argument per line
    if [[ $PROTO == h1 ]]; then
        printf '%s\n' wrk -t1 "-c$CONNS" "-d${2}s" --latency "http://127.0.0.1:$1/"
    else
        printf '%s\n' h2load -t1 "-c$CONNS" "-m$H2_STREAMS" "-D$2" "http://127.0.0.1:$1/"
    fi
}

RESULTS="$TMP/results.jsonl"
: >"$RESULTS"

run_target() { # $1 = name, $2 = port, $3 = pid whose tree is measured
    measure "$1" "$2" "$3" "$([[ $PROTO == h1 ]] && echo wrk || echo h2load)" "$TMP/$1.$PROTO.out" \
        "round=$ROUND"
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
    "load_command": "$(load_cmd PORT "$DURATION" | paste -sd' ')",
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
