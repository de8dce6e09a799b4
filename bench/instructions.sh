#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: the same wrk load
# through each proxy (one worker each), minus an idle run of the same length, divided by the
# requests served. Deterministic where wall-clock CPU time is noisy; the kernel's share is not
# counted. See bench/README.md ("Instructions per request").
#
#   bench/instructions.sh                   weft (a Listener without filters) and nginx
#   FILTERS="0 1 5" bench/instructions.sh   weft with an empty FilterChain, one and five
#                                           `passthrough` filters (bench/filters.sh's configs),
#                                           and nginx; reports the instructions a filter adds
#
# Env: DURATION (8 s of load, or of idling, per run), WARMUP (2 s of load at the start of both
#      runs), CONNS (8, wrk -c), FILTERS (filter counts, or `none`; empty: the default mode),
#      WASM_INSTANCES (12: weft --wasm-instances; each reserves 4 GiB of address space, and
#      valgrind maps about 50 GiB),
#      WASM_TARGET (wasm32-wasip1), WEFT_BIN, PASSTHROUGH_WASM (skip the builds), KEEP_TMP=1,
#      PLUGIN_DEADLINE (5s: the Plugins' guest-call deadline under valgrind),
#      SPLIT (1: also split each target's instructions into the plugins' own code, wasmtime,
#      weft, other crates and libc+allocator; callgrind then records every instruction).
set -euo pipefail
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-8}
FILTERS=${FILTERS:-}
WASM_INSTANCES=${WASM_INSTANCES:-12}
WASM_TARGET=${WASM_TARGET:-wasm32-wasip1}
SPLIT=${SPLIT:-0}
# Under valgrind guests run ~50× slower: the Plugins get a deadline to match (bench/lib.sh).
export PLUGIN_DEADLINE=${PLUGIN_DEADLINE:-5s}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

require_positive DURATION WARMUP CONNS WASM_INSTANCES
for n in $FILTERS; do
    [[ $n =~ ^([0-9]+|none|builtins)$ ]] || die "FILTERS lists filter counts, 'none' or 'builtins' (got '$n')"
done
[[ $SPLIT == 0 || $SPLIT == 1 ]] || die "SPLIT must be 0 or 1 (got '$SPLIT')"
case "$WASM_TARGET" in wasm32-wasip1 | wasm32-unknown-unknown) ;;
    *) die "WASM_TARGET must be wasm32-wasip1 or wasm32-unknown-unknown" ;; esac
require_tools valgrind wrk curl python3 "$NGINX"
init_tmp

build_weft
PASSTHROUGH_WASM=${PASSTHROUGH_WASM:-}
if [[ -n $FILTERS ]]; then
    build_passthrough
    read -r -a COUNTS <<<"$FILTERS"
else
    COUNTS=(none) # the default mode: a Listener without filterChain, reported as "weft"
fi

read -r UP PROXY ADMIN <<<"$(helper ports 3)"

# The builtins chain (bench/lib.sh) needs a valid JWT; every target gets the same request.
AUTH=()
if [[ " $FILTERS " == *" builtins "* ]]; then
    AUTH=(-H "authorization: Bearer $(bench_jwt)")
fi
write_upstream_conf "$TMP/upstream" "$UP"
start_nginx "$TMP/upstream"
UP_PID=${PIDS[-1]}
wait_http "http://127.0.0.1:$UP/" upstream "$UP_PID"

# The nginx reverse proxy of bench/run.sh, with one worker and no master process (callgrind
# follows one process).
write_proxy_conf "$TMP/nginx" "$PROXY" "$UP"
sed -i -e 's/^worker_processes auto;$/worker_processes 1;/' \
    -e 's/^master_process on;$/master_process off;/' "$TMP/nginx/nginx.conf"
grep -q '^master_process off;$' "$TMP/nginx/nginx.conf" || die "cannot set master_process off"
"$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" ||
    die "invalid nginx config $TMP/nginx/nginx.conf"

# Sum of a metric over all its series on the admin endpoint (0 when absent).
metric_sum() { # $1 = admin port, $2 = metric name
    curl -fsS --max-time 30 "http://127.0.0.1:$1/stats/prometheus" |
        awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $NF} END {printf "%d\n", s}'
}

# One run of a proxy under callgrind: start it, wait until it serves (weft: /ready, then one
# request answered "ok"), WARMUP s of wrk load, then DURATION s of wrk load (`load`) or of nothing
# (`idle`), then stop it (SIGTERM: weft drains and exits; nginx exits) and read callgrind's
# total, counted from the end of the warm-up (`callgrind_control -z`): start-up and warm-up
# (instance pool growth, upstream connections) are left out. The load run minus the idle run is
# DURATION s of load: background timers and shutdown cancel out.
# Sets RUN_REQUESTS (the load run's wrk requests), RUN_INSTR, RUN_CALLS (weft_plugin_calls_total
# growth after the warm-up) and RUN_FAILURES (weft_plugin_failures_total at the end). With
# SPLIT=1 it also writes $TMP/NAME/MODE.split.json: the run's instructions by category
# (`helper.py split`; weft names the guests' JIT code in /tmp/perf-PID.map for it).
callgrind_run() { # $1 = name, $2 = load|idle, $3 = admin port or "", $4... = command
    local name=$1 mode=$2 admin=$3 out="$TMP/$1/$2"
    shift 3
    local -a detail=()
    [[ $SPLIT == 0 ]] || detail=(--dump-instr=yes)
    WEFT_WASM_PERFMAP=$SPLIT valgrind --tool=callgrind --smc-check=all-non-file "${detail[@]}" \
        --callgrind-out-file="$out.callgrind" "$@" >"$out.log" 2>&1 &
    local pid=$! ready=0 calls0=0 calls1=0 w=0
    PIDS+=("$pid")
    for _ in $(seq 600); do # up to 2 minutes: weft compiles the module under valgrind
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup under valgrind (see $out.log)"
        if [[ -z $admin ]] || curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$admin/ready" 2>/dev/null; then
            if [[ $(curl -fsS --max-time 10 "${AUTH[@]}" "http://127.0.0.1:$PROXY/" 2>/dev/null) == ok ]]; then
                ready=1
                break
            fi
        fi
        sleep 0.2
    done
    [[ $ready == 1 ]] || die "$name does not answer 'ok' under valgrind (see $out.log)"
    local -a wrk=(wrk -t1 "-c$CONNS" --latency "${AUTH[@]}" "http://127.0.0.1:$PROXY/")
    run_load "$out.warmup.wrk" "${wrk[@]}" "-d${WARMUP}s" || die "$name: warm-up wrk failed"
    # Count from here: start-up (compiling the modules, on threads whose spinning varies from
    # run to run by more than a whole load run's requests cost) and the warm-up are left out.
    callgrind_control -z "$pid" >/dev/null 2>&1 || die "$name: callgrind_control -z failed"
    if [[ -n $admin ]]; then
        calls0=$(metric_sum "$admin" weft_plugin_calls_total) || die "$name: cannot read metrics"
    fi
    if [[ $mode == load ]]; then
        log "$name: ${wrk[*]} -d${DURATION}s (under callgrind)"
        run_load "$out.wrk" "${wrk[@]}" "-d${DURATION}s" || die "$name: wrk failed"
    else
        log "$name: idle ${DURATION}s (under callgrind)"
        sleep "$DURATION"
    fi
    RUN_FAILURES=0
    if [[ -n $admin ]]; then
        calls1=$(metric_sum "$admin" weft_plugin_calls_total) || die "$name: cannot read metrics"
        RUN_FAILURES=$(metric_sum "$admin" weft_plugin_failures_total) || die "$name: cannot read metrics"
        curl -fsS --max-time 30 "http://127.0.0.1:$admin/stats/prometheus" >"$out.metrics" || true
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null && log "$name: killed (did not stop within 30 s of SIGTERM)"
    wait "$pid" 2>/dev/null || true
    local -a keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")

    RUN_INSTR=$(awk '/^summary:/ {print $2}' "$out.callgrind" 2>/dev/null || true)
    [[ $RUN_INSTR =~ ^[0-9]+$ ]] || die "$name: no callgrind summary in $out.callgrind (see $out.log)"
    RUN_REQUESTS=0 # since the counters were zeroed: the load run's wrk requests
    if [[ -f $out.wrk ]]; then
        w=$(awk '/ requests in / {print $1}' "$out.wrk")
        RUN_REQUESTS=${w:-0}
    fi
    RUN_CALLS=$((calls1 - calls0))
    if [[ $SPLIT == 1 ]]; then
        if [[ -f /tmp/perf-$pid.map ]]; then
            mv "/tmp/perf-$pid.map" "$out.perfmap"
        fi
        helper split "$out.callgrind" "$out.perfmap" "$REPO_DIR" >"$out.split.json" ||
            die "$name: cannot split $out.callgrind"
    fi
}

# Both runs of one target; appends one JSON record to RESULTS.
measure_target() { # $1 = name, $2 = filter count or "", $3 = admin port or "", $4... = command
    local name=$1 filters=$2 admin=$3 ni ii ci nl il cl fl warn=0 fjson=null
    shift 3
    [[ ! $filters =~ ^[0-9]+$ ]] || fjson=$filters
    mkdir -p "$TMP/$name"
    callgrind_run "$name" idle "$admin" "$@"
    ni=$RUN_REQUESTS ii=$RUN_INSTR ci=$RUN_CALLS
    callgrind_run "$name" load "$admin" "$@"
    nl=$RUN_REQUESTS il=$RUN_INSTR cl=$RUN_CALLS fl=$RUN_FAILURES
    if [[ -n $filters && $filters != none && ($filters == builtins || $filters -gt 0) && $cl -le 0 ]]; then
        die "$name: weft_plugin_calls_total did not grow under load: the filters did not run (see $TMP/$name)"
    fi
    [[ -z $admin ]] || warn=$(cat "$TMP/$name"/*.log | grep -cE '\b(WARN|ERROR)\b' || true)
    helper wrk "$TMP/$name/load.wrk" >"$TMP/$name/load.wrk.json"
    python3 - "$TMP/$name/load.wrk.json" "$TMP/$name" >>"$RESULTS" <<PY
import json, os, sys
wrk = json.load(open(sys.argv[1]))
split = lambda mode: (json.load(open(f"{sys.argv[2]}/{mode}.split.json"))
                      if os.path.exists(f"{sys.argv[2]}/{mode}.split.json") else None)
print(json.dumps({
    "target": "$name", "filters": json.loads("$fjson"),
    "idle": {"requests": $ni, "instructions": $ii, "plugin_calls": $ci, "split": split("idle")},
    "load": {"requests": $nl, "instructions": $il, "plugin_calls": $cl, "split": split("load")},
    "plugin_failures": $fl, "log_warnings_or_errors": $warn, "wrk": wrk,
}))
PY
}

RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
for n in "${COUNTS[@]}"; do
    if [[ -n $FILTERS ]]; then name="weft-$n"; else name=weft; fi
    mkdir -p "$TMP/$name"
    weft_config "$n" "$PROXY" "$UP" "$PASSTHROUGH_WASM" >"$TMP/$name/weft.yaml"
    # One tokio worker, as nginx runs one worker process here.
    TOKIO_WORKER_THREADS=1 NO_COLOR=1 measure_target "$name" "$([[ -n $FILTERS ]] && echo "$n")" \
        "$ADMIN" "$WEFT_BIN" proxy --config "$TMP/$name/weft.yaml" --admin "127.0.0.1:$ADMIN" \
        --drain-timeout 1s --wasm-instances "$WASM_INSTANCES"
done
measure_target nginx "" "" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"

NGINX_ERR=$(grep -cE '\[(error|crit|alert|emerg)\]' "$TMP/nginx/error.log" || true)
mkdir -p "$OUT_DIR"
OUT_JSON="$OUT_DIR/instructions-$STAMP.json"
python3 - "$TMP/meta.json" <<PY
import hashlib, json, platform, subprocess, sys
def run(*cmd, stream="stdout"):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stderr if stream == "stderr" else p.stdout).strip() or None
    except Exception:
        return None
wasm = "$PASSTHROUGH_WASM"
meta = {
    "scenario": "instructions", "timestamp": "$STAMP", "filters": "$FILTERS" or None,
    "duration_s": $DURATION, "warmup_s": $WARMUP, "conns": $CONNS,
    "load": "wrk -t1 -c$CONNS -d${DURATION}s (after a ${WARMUP}s warm-up in both runs)",
    "valgrind": run("valgrind", "--version"),
    "valgrind_args": "--tool=callgrind --smc-check=all-non-file" + (" --dump-instr=yes" if $SPLIT else ""),
    "split": bool($SPLIT),
    "weft": {"binary": "$WEFT_BIN", "git_rev": run("git", "-C", "$REPO_DIR", "rev-parse", "HEAD"),
             "git_dirty": bool(run("git", "-C", "$REPO_DIR", "status", "--porcelain")),
             "tokio_worker_threads": 1, "wasm_instances": $WASM_INSTANCES},
    "module": {"path": wasm, "target": "$WASM_TARGET",
               "sha256": hashlib.sha256(open(wasm, "rb").read()).hexdigest()} if wasm else None,
    "nginx": {"version": run("$NGINX", "-v", stream="stderr"), "worker_processes": 1,
              "master_process": "off", "error_log_errors": $NGINX_ERR},
    "host": {"cpus": $NCPU, "kernel": platform.release()},
}
json.dump(meta, open(sys.argv[1], "w"))
PY

helper report_instructions "$RESULTS" "$TMP/meta.json" "$OUT_JSON"
[[ $NGINX_ERR == 0 ]] || echo "WARNING: nginx proxy logged $NGINX_ERR errors"
if [[ $NGINX_ERR == 0 ]] && ! grep -q '"flagged": true' "$OUT_JSON"; then
    FAILED=0
fi
