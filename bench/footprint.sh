#!/usr/bin/env bash
# Hot code per proxied request: the machine code weft runs on every request, in 64-byte cache
# lines, counted by valgrind's callgrind. A proxy that is mostly idle between requests (the
# fixed-rate runs of bench/run.sh) finds that code cold in the CPU's instruction cache each time:
# what a filter costs in wall-clock CPU time depends on how much new code it brings as much as on
# how many instructions it runs. See bench/README.md ("Hot code per request").
#
#   FILTERS="0 1 5" bench/footprint.sh    weft with an empty chain, one and five passthrough
#                                         filters: hot cache lines, and where the lines the first
#                                         config lacks come from
#
# An instruction counts as hot when it ran at least HOT_SHARE times per request (0.5) during
# DURATION s of wrk load (8; counters zeroed after a WARMUP s warm-up, 2), so start-up work —
# compiling the module — does not count. Env: CONNS (8), WEFT_BIN, PASSTHROUGH_WASM,
# WASM_INSTANCES (12: valgrind maps about 50 GiB of the 4 GiB each reserves), KEEP_TMP=1.
set -euo pipefail
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-8}
FILTERS=${FILTERS:-0 1 5}
HOT_SHARE=${HOT_SHARE:-0.5}
WASM_INSTANCES=${WASM_INSTANCES:-12}
WASM_TARGET=${WASM_TARGET:-wasm32-wasip1}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

require_positive DURATION WARMUP CONNS WASM_INSTANCES
for n in $FILTERS; do
    [[ $n =~ ^([0-9]+|builtins)$ ]] || die "FILTERS lists filter counts or 'builtins' (got '$n')"
done
require_tools valgrind callgrind_control wrk curl python3 "$NGINX"
init_tmp
build_weft
PASSTHROUGH_WASM=${PASSTHROUGH_WASM:-}
build_passthrough

read -r UP PROXY ADMIN <<<"$(helper ports 3)"
AUTH=()
if [[ " $FILTERS " == *" builtins "* ]]; then
    AUTH=(-H "authorization: Bearer $(bench_jwt)")
fi
write_upstream_conf "$TMP/upstream" "$UP"
start_nginx "$TMP/upstream"
wait_http "http://127.0.0.1:$UP/" upstream "${PIDS[-1]}"

PROFILES=()
for n in $FILTERS; do
    name="weft-$n"
    mkdir -p "$TMP/$name"
    weft_config "$n" "$PROXY" "$UP" "$PASSTHROUGH_WASM" >"$TMP/$name/weft.yaml"
    out="$TMP/$name/callgrind.out"
    TOKIO_WORKER_THREADS=1 NO_COLOR=1 valgrind --tool=callgrind --smc-check=all-non-file \
        --dump-instr=yes --callgrind-out-file="$out" "$WEFT_BIN" proxy \
        --config "$TMP/$name/weft.yaml" --admin "127.0.0.1:$ADMIN" --drain-timeout 1s \
        --wasm-instances "$WASM_INSTANCES" >"$TMP/$name/weft.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    ready=0
    for _ in $(seq 600); do # up to 2 minutes: weft compiles the module under valgrind
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see $TMP/$name/weft.log)"
        if [[ $(curl -fsS --max-time 10 "${AUTH[@]}" "http://127.0.0.1:$PROXY/" 2>/dev/null) == ok ]]; then
            ready=1
            break
        fi
        sleep 0.2
    done
    [[ $ready == 1 ]] || die "$name does not answer 'ok' under valgrind (see $TMP/$name/weft.log)"
    wrk=(wrk -t1 "-c$CONNS" "${AUTH[@]}" "http://127.0.0.1:$PROXY/")
    run_load "$TMP/$name/warmup.wrk" "${wrk[@]}" "-d${WARMUP}s" || die "$name: warm-up wrk failed"
    callgrind_control -z "$pid" >/dev/null 2>&1 || die "$name: callgrind_control -z failed"
    log "$name: ${wrk[*]} -d${DURATION}s (under callgrind, counters zeroed after the warm-up)"
    run_load "$TMP/$name/load.wrk" "${wrk[@]}" "-d${DURATION}s" || die "$name: wrk failed"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    requests=$(awk '/ requests in / {print $1}' "$TMP/$name/load.wrk")
    [[ $requests =~ ^[0-9]+$ && $requests -gt 0 ]] || die "$name: no requests served"
    PROFILES+=("$name" "$out" "$requests")
done

mkdir -p "$OUT_DIR"
OUT_JSON="$OUT_DIR/footprint-$STAMP.json"
helper footprint "$HOT_SHARE" "$OUT_JSON" "${PROFILES[@]}"
FAILED=0
