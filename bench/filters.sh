#!/usr/bin/env bash
# weft filter benchmark (`SCENARIO=filters bench/run.sh`): what pass-through Wasm filters cost.
# One weft process per chain length — an empty FilterChain, one `passthrough` filter, five —
# and the nginx reverse proxy of the default scenario, all in front of the same nginx upstream,
# measured one at a time and interleaved over ROUNDS. Each run is an open-loop load at a fixed
# RATE (weft-loadgen, latency from the scheduled send time), optionally also a closed-loop wrk
# run. Reports CPU µs per request, p50/p99, errors, the CPU each filter adds, and weft ÷ nginx.
# See bench/README.md.
#
# Env: RATE (5000 req/s), CONNS (32), DURATION (10 s), WARMUP (2 s), ROUNDS (3),
#      FILTERS ("0 1 5": pass-through filters per weft process; 0 = an empty FilterChain,
#      `none` = a listener without filterChain, `builtins` = the five built-in plugins chained
#      as issue 4's benchmark asks, requests carrying a valid HS256 JWT; SCENARIO=plugins runs
#      "0 builtins"), LOAD (open | closed | both; default open),
#      IDLE (3 s of idle CPU measured per target), TARGET_US (1.5: the budget per filter),
#      TARGET_BUILTINS_US (15: the budget of the builtins chain over the empty chain),
#      WASM_TARGET (wasm32-wasip1 | wasm32-unknown-unknown), WEFT_BIN, LOADGEN_BIN,
#      PASSTHROUGH_WASM (skip the respective builds), KEEP_TMP=1.
set -euo pipefail

RATE=${RATE:-5000}
CONNS=${CONNS:-32}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
FILTERS=${FILTERS:-0 1 5}
LOAD=${LOAD:-open}
IDLE=${IDLE:-3}
TARGET_US=${TARGET_US:-1.5}
TARGET_BUILTINS_US=${TARGET_BUILTINS_US:-15}
WASM_TARGET=${WASM_TARGET:-wasm32-wasip1}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

for v in RATE CONNS DURATION WARMUP IDLE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be an integer (got '${!v}')"
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $RATE -gt 0 && $CONNS -gt 0 ]] || die "ROUNDS, RATE and CONNS must be positive"
for n in $FILTERS; do
    [[ $n =~ ^([0-9]+|none|builtins)$ ]] || die "FILTERS lists filter counts, 'none' or 'builtins' (got '$n')"
done
case "$LOAD" in open) LOADS=(open) ;; closed) LOADS=(closed) ;; both) LOADS=(open closed) ;;
    *) die "LOAD must be open, closed or both (got '$LOAD')" ;; esac
case "$WASM_TARGET" in wasm32-wasip1 | wasm32-unknown-unknown) ;;
    *) die "WASM_TARGET must be wasm32-wasip1 or wasm32-unknown-unknown" ;; esac
for tool in python3 curl rustc cargo "$NGINX"; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[[ $LOAD == open ]] || command -v wrk >/dev/null || die "wrk not found (needed for LOAD=$LOAD)"
init_tmp

# The builtins chain needs a valid JWT; every target gets the same request headers.
AUTH_HEADER=""
if [[ " $FILTERS " == *" builtins "* ]]; then
    AUTH_HEADER="authorization: Bearer $(bench_jwt)"
fi

# ---------------------------------------------------------------------------------------------
# 1. weft, the load generator and the pass-through module.
# ---------------------------------------------------------------------------------------------
build_weft
BUILD_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}/bench"
mkdir -p "$BUILD_DIR"

if [[ -z ${LOADGEN_BIN:-} ]]; then
    # std only: a plain rustc build, without building the workspace (tests/src/bin/loadgen.rs).
    LOADGEN_BIN="$BUILD_DIR/weft-loadgen"
    LOADGEN_SRC="$REPO_DIR/tests/src/bin/loadgen.rs"
    if [[ ! -x $LOADGEN_BIN || $LOADGEN_SRC -nt $LOADGEN_BIN ]]; then
        log "building weft-loadgen (rustc -O $LOADGEN_SRC)"
        (cd "$REPO_DIR" && rustc --edition 2024 -C opt-level=3 -o "$LOADGEN_BIN" "$LOADGEN_SRC") ||
            die "building weft-loadgen failed"
    fi
fi
[[ -x $LOADGEN_BIN ]] || die "LOADGEN_BIN=$LOADGEN_BIN is not an executable"

build_passthrough

# ---------------------------------------------------------------------------------------------
# 2. Configs: the upstream, the nginx proxy, and one weft config per chain length.
# ---------------------------------------------------------------------------------------------
read -r -a COUNTS <<<"$FILTERS"
read -r -a PORTS <<<"$(helper ports $((2 + 2 * ${#COUNTS[@]})))"
UP_PORT=${PORTS[0]}
NGINX_PORT=${PORTS[1]}

write_upstream_conf "$TMP/upstream" "$UP_PORT"
write_proxy_conf "$TMP/nginx" "$NGINX_PORT" "$UP_PORT"

# ---------------------------------------------------------------------------------------------
# 3. Start everything; every target must answer 200 "ok".
# ---------------------------------------------------------------------------------------------
start_nginx "$TMP/upstream"
UP_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$UP_PORT/" upstream "$UP_PID"
log "upstream nginx pid $UP_PID on 127.0.0.1:$UP_PORT"

TARGETS=()      # name:port:pid, in run order
WEFT_NAMES=()   # name:admin port
COUNTS_JSON=""  # "name": count, ...
for i in "${!COUNTS[@]}"; do
    n=${COUNTS[i]}
    name="weft-$n"
    port=${PORTS[2 + 2 * i]}
    admin=${PORTS[3 + 2 * i]}
    mkdir -p "$TMP/$name"
    weft_config "$n" "$port" "$UP_PORT" "$PASSTHROUGH_WASM" >"$TMP/$name/weft.yaml"
    start_weft "$TMP/$name" "$admin"
    pid=${PIDS[-1]}
    wait_http "http://127.0.0.1:$admin/ready" "$name" "$pid"
    log "$name pid $pid on 127.0.0.1:$port (admin $admin)"
    TARGETS+=("$name:$port:$pid")
    WEFT_NAMES+=("$name:$admin")
    case $n in none) ;; builtins) COUNTS_JSON+="\"$name\": \"builtins\", " ;;
        *) COUNTS_JSON+="\"$name\": $n, " ;; esac
done

start_nginx "$TMP/nginx"
NGINX_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$NGINX_PORT/" "nginx proxy" "$NGINX_PID"
log "nginx proxy pid $NGINX_PID on 127.0.0.1:$NGINX_PORT ($(proc_tree "$NGINX_PID" | wc -l) processes)"
TARGETS+=("nginx:$NGINX_PORT:$NGINX_PID")

for t in "${TARGETS[@]}"; do
    IFS=: read -r name port _ <<<"$t"
    body=$(curl -fsS -D "$TMP/$name.headers" --max-time 5 ${AUTH_HEADER:+-H "$AUTH_HEADER"} \
        "http://127.0.0.1:$port/") ||
        die "$name: request failed (see $TMP/$name/stderr.log)"
    [[ $body == ok ]] || die "$name: unexpected body '$body'"
done
# The filters really run: each chain with filters has started plugin instances.
for w in "${WEFT_NAMES[@]}"; do
    IFS=: read -r name admin <<<"$w"
    [[ $name == weft-0 || $name == weft-none ]] && continue
    plugin=$([[ $name == weft-builtins ]] && echo router || echo passthrough)
    created=$(curl -fsS --max-time 5 "http://127.0.0.1:$admin/stats/prometheus" |
        awk -v p="plugin=\"$plugin\"" 'index($0, "weft_plugin_instances_created_total{") == 1 && index($0, p) {s += $NF} END {print s + 0}')
    [[ $created -gt 0 ]] || die "$name: no $plugin instance was started (see $TMP/$name/stderr.log)"
done

# ---------------------------------------------------------------------------------------------
# 4. Idle CPU of every target (background work: timers, the Wasm epoch ticker, ...).
# ---------------------------------------------------------------------------------------------
log "idle CPU over ${IDLE}s"
declare -A IDLE0
for t in "${TARGETS[@]}"; do
    IFS=: read -r name _ pid <<<"$t"
    IDLE0[$name]=$(tree_ticks "$pid")
done
sleep "$IDLE"
IDLE_JSON=""
for t in "${TARGETS[@]}"; do
    IFS=: read -r name _ pid <<<"$t"
    IDLE_JSON+="\"$name\": $(python3 -c "print(($(tree_ticks "$pid") - ${IDLE0[$name]}) / $CLK_TCK / $IDLE)"), "
done

# ---------------------------------------------------------------------------------------------
# 5. Load: rounds of every target, the starting target rotating from round to round.
# ---------------------------------------------------------------------------------------------
LOAD_MODE=open
load_cmd() { # $1 = port, $2 = seconds; one argument per line
    if [[ $LOAD_MODE == open ]]; then
        printf '%s\n' "$LOADGEN_BIN" --url "http://127.0.0.1:$1/" --rate "$RATE" --duration "$2" \
            --connections "$CONNS"
        [[ -z $AUTH_HEADER ]] || printf '%s\n' --header "$AUTH_HEADER"
    else
        printf '%s\n' wrk -t1 "-c$CONNS" "-d${2}s" --latency "http://127.0.0.1:$1/"
        [[ -z $AUTH_HEADER ]] || printf '%s\n' -H "$AUTH_HEADER"
    fi
}

RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    for ((k = 0; k < ${#TARGETS[@]}; k++)); do
        IFS=: read -r name port pid <<<"${TARGETS[(k + ROUND - 1) % ${#TARGETS[@]}]}"
        for LOAD_MODE in "${LOADS[@]}"; do
            log "round $ROUND/$ROUNDS, $LOAD_MODE loop"
            parser=$([[ $LOAD_MODE == open ]] && echo loadgen || echo wrk)
            measure "$name" "$port" "$pid" "$parser" "$TMP/$name.$LOAD_MODE.r$ROUND.out" \
                "round=$ROUND" "load=$LOAD_MODE"
        done
    done
done

# ---------------------------------------------------------------------------------------------
# 6. Report.
# ---------------------------------------------------------------------------------------------
WARNINGS=0
PLUGIN_JSON=""
for w in "${WEFT_NAMES[@]}"; do
    IFS=: read -r name admin <<<"$w"
    curl -fsS --max-time 5 "http://127.0.0.1:$admin/stats/prometheus" >"$TMP/$name/metrics.txt" || true
    warn=$(grep -cE '\b(WARN|ERROR)\b' "$TMP/$name/stderr.log" || true)
    WARNINGS=$((WARNINGS + warn))
    plugin=$({ grep -E '^weft_plugin_[a-z_]+\{[^}]*plugin="[a-z-]+"' "$TMP/$name/metrics.txt" || true; } |
        python3 -c 'import json, sys; print(json.dumps(dict(l.rsplit(None, 1) for l in sys.stdin)))')
    PLUGIN_JSON+="\"$name\": {\"log_warnings_or_errors\": $warn, \"plugin_metrics\": $plugin}, "
done
NGINX_ERR=$(grep -cE '\[(error|crit|alert|emerg)\]' "$TMP/nginx/error.log" || true)
UP_ERR=$(grep -cE '\[(error|crit|alert|emerg)\]' "$TMP/upstream/error.log" || true)

mkdir -p "$OUT_DIR"
OUT_JSON="$OUT_DIR/filters-$STAMP.json"
LOAD_COMMANDS=""
for LOAD_MODE in "${LOADS[@]}"; do
    LOAD_COMMANDS+="\"$LOAD_MODE\": \"$(load_cmd PORT "$DURATION" | sed 's/Bearer .*/Bearer JWT/' | paste -sd' ')\", "
done
python3 - "$TMP/meta.json" <<PY
import hashlib, json, platform, subprocess, sys
def run(*cmd, stream="stdout"):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stderr if stream == "stderr" else p.stdout).strip() or None
    except Exception:
        return None
wasm = open("$PASSTHROUGH_WASM", "rb").read()
meta = {
    "scenario": "filters",
    "timestamp": "$STAMP",
    "rate": $RATE,
    "conns": $CONNS,
    "duration_s": $DURATION,
    "warmup_s": $WARMUP,
    "rounds": $ROUNDS,
    "idle_s": $IDLE,
    "loads": {$LOAD_COMMANDS},
    "targets": [t.split(":")[0] for t in "${TARGETS[*]}".split()],
    "filter_counts": {$COUNTS_JSON},
    "target_cpu_us_per_filter": $TARGET_US,
    "target_cpu_us_builtins": $TARGET_BUILTINS_US,
    "idle_cpu_cores": {$IDLE_JSON},
    "cpu_accounting": "utime+stime from /proc/PID/stat summed over the process tree, delta over the measured run, / requests completed",
    "module": {"path": "$PASSTHROUGH_WASM", "target": "$WASM_TARGET", "bytes": len(wasm),
               "sha256": hashlib.sha256(wasm).hexdigest()},
    "host": {"cpus": $NCPU, "clk_tck": $CLK_TCK, "kernel": platform.release(),
             "loadavg_at_end": open("/proc/loadavg").read().split()[:3]},
    "weft": {"binary": "$WEFT_BIN", "git_rev": run("git", "-C", "$REPO_DIR", "rev-parse", "HEAD"),
             "git_dirty": bool(run("git", "-C", "$REPO_DIR", "status", "--porcelain")),
             "processes": {$PLUGIN_JSON}},
    "nginx": {"version": run("$NGINX", "-v", stream="stderr"), "worker_processes": "auto",
              "error_log_errors": $NGINX_ERR},
    "upstream": {"server": "nginx, worker_processes 1, return 200 ok", "error_log_errors": $UP_ERR},
    "loadgen": "$LOADGEN_BIN",
}
json.dump(meta, open(sys.argv[1], "w"))
PY

echo
echo "weft filter bench: FILTERS='$FILTERS' LOAD=$LOAD RATE=$RATE CONNS=$CONNS DURATION=${DURATION}s" \
    "ROUNDS=$ROUNDS, module $WASM_TARGET, $NCPU CPUs shared by load generator, upstream and proxy"
helper report_filters "$RESULTS" "$TMP/meta.json" "$OUT_JSON"
[[ $WARNINGS == 0 ]] || echo "WARNING: weft logged $WARNINGS WARN/ERROR lines (see $OUT_DIR/logs-$STAMP/weft-*/stderr.log)"
[[ $NGINX_ERR == 0 ]] || echo "WARNING: nginx proxy logged $NGINX_ERR errors"
[[ $UP_ERR == 0 ]] || echo "WARNING: upstream logged $UP_ERR errors"
echo
echo "results: $OUT_JSON"

if [[ $WARNINGS == 0 && $NGINX_ERR == 0 && $UP_ERR == 0 ]] &&
    ! grep -q '"flagged": true' "$RESULTS"; then
    FAILED=0
fi
