# Shared by bench/run.sh, bench/filters.sh and bench/instructions.sh (sourced, not run): logging,
# the temporary directory and cleanup of every process started, CPU accounting from /proc, nginx
# configs, the weft and passthrough builds, weft configs, and one measured load run. The caller
# sets BENCH_DIR before sourcing.
# shellcheck shell=bash

REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
OUT_DIR="$BENCH_DIR/out"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
NGINX=${NGINX:-/usr/sbin/nginx}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

helper() { python3 "$BENCH_DIR/helper.py" "$@"; }

# Dies unless every variable named is a positive integer.
require_positive() {
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
    done
}

# Dies unless every tool named is on PATH.
require_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || die "$t not found"
    done
}

# ---------------------------------------------------------------------------------------------
# Temporary directory, process bookkeeping and cleanup.
# ---------------------------------------------------------------------------------------------
PIDS=()      # processes we started, killed in reverse order on exit
FAILED=1     # set to 0 once a run completed cleanly; otherwise the logs are kept
LOAD_PID=""  # the running load generator, if any

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

# Creates TMP and installs the cleanup; called once the settings have been validated.
init_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

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
tree_ticks() {
    local total _user
    read -r total _user < <(tree_ticks_split "$1")
    echo "$total"
}

# The same, and utime alone, from one read: "TOTAL USER" (the kernel's share is the
# difference). The comm field may contain spaces, so fields are counted after its closing
# parenthesis.
tree_ticks_split() {
    local total=0 user=0 pid stat rest
    for pid in $(proc_tree "$1"); do
        read -r stat 2>/dev/null <"/proc/$pid/stat" || continue
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        # rest starts at field 3: field N is f[N-3].
        total=$((total + f[11] + f[12]))
        user=$((user + f[11]))
    done
    echo "$total $user"
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
# weft binary: WEFT_BIN, or a release build.
# ---------------------------------------------------------------------------------------------
build_weft() {
    if [[ -n ${WEFT_BIN:-} ]]; then
        [[ -x $WEFT_BIN ]] || die "WEFT_BIN=$WEFT_BIN is not an executable"
    else
        log "building weft (cargo build --release -p weft)"
        (cd "$REPO_DIR" && cargo build --release -p weft) || die "release build failed"
        WEFT_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/weft"
        [[ -x $WEFT_BIN ]] || die "build succeeded but $WEFT_BIN is missing"
    fi
}

# The test filter `passthrough` (tests/programs/passthrough), built for WASM_TARGET as
# tests/artifacts/build.rs builds it, into a target directory of our own; PASSTHROUGH_WASM
# (absolute path afterwards) skips the build.
build_passthrough() {
    if [[ -z ${PASSTHROUGH_WASM:-} ]]; then
        local dir="${CARGO_TARGET_DIR:-$REPO_DIR/target}/bench/programs"
        log "building the passthrough filter for $WASM_TARGET"
        (cd "$REPO_DIR" && cargo build --release --manifest-path tests/programs/Cargo.toml \
            -p passthrough --target "$WASM_TARGET" --target-dir "$dir") ||
            die "building tests/programs/passthrough failed"
        PASSTHROUGH_WASM="$dir/$WASM_TARGET/release/passthrough.wasm"
    fi
    [[ -f $PASSTHROUGH_WASM ]] || die "$PASSTHROUGH_WASM is missing"
    PASSTHROUGH_WASM=$(cd "$(dirname "$PASSTHROUGH_WASM")" && pwd)/$(basename "$PASSTHROUGH_WASM")
}

# The issue-4 chain: the five built-in plugins in front of the upstream — telemetry (metrics,
# traceparent, x-request-id; no access log), auth (an HS256 JWT, see bench_jwt), ratelimit
# (per client IP, never reached), fault (abort 100% but only with a header the load never
# sends), router (20 prefix routes, the request matching the last one).
BENCH_JWT_SECRET=weft-bench-secret-of-at-least-32-bytes
BENCH_JWT_ISSUER=https://bench.weft.example
BENCH_JWT_AUDIENCE=bench
# The Plugins' guest-call deadline: the default (100ms), or PLUGIN_DEADLINE when set
# (bench/instructions.sh: under valgrind a guest runs ~50× slower, and a first call, whose code
# valgrind translates then, can take longer than 100ms).
plugin_deadline() {
    [[ -z ${PLUGIN_DEADLINE:-} ]] || printf ', deadline: %s' "$PLUGIN_DEADLINE"
}

builtins_config() { # $1 = port, $2 = upstream port
    local i p
    printf 'apiVersion: weft/v1\nkind: Cluster\nmetadata: {name: upstream}\nspec:\n  endpoints: ["127.0.0.1:%s"]\n' "$2"
    for p in telemetry auth ratelimit fault router; do
        printf -- '---\napiVersion: weft/v1\nkind: Plugin\nmetadata: {name: %s}\nspec: {url: "builtin://%s"%s}\n' \
            "$p" "$p" "$(plugin_deadline)"
    done
    cat <<YAML
---
apiVersion: weft/v1
kind: FilterChain
metadata: {name: bench}
spec:
  filters:
    - plugin: telemetry
    - plugin: auth
      config:
        jwt:
          issuer: $BENCH_JWT_ISSUER
          audiences: [$BENCH_JWT_AUDIENCE]
          keys: [{kid: k1, alg: HS256, secret: $BENCH_JWT_SECRET}]
    - plugin: ratelimit
      config: {key: client_ip, rate: 1000000/s, burst: 1000000}
    - plugin: fault
      config: {abort: {status: 503, percent: 100}, headerTrigger: x-bench-fault}
    - plugin: router
      config:
        routes:
YAML
    for ((i = 1; i <= 19; i++)); do
        echo "          - {match: {prefix: /service-$i/}, cluster: upstream}"
    done
    cat <<YAML
          - {match: {prefix: /}, cluster: upstream}
---
apiVersion: weft/v1
kind: Listener
metadata: {name: bench}
spec:
  address: 127.0.0.1:$1
  defaultCluster: upstream
  filterChain: bench
YAML
}

# An HS256 JWT the builtins chain accepts, valid for a day.
bench_jwt() {
    python3 - "$BENCH_JWT_SECRET" "$BENCH_JWT_ISSUER" "$BENCH_JWT_AUDIENCE" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret, iss, aud = sys.argv[1:4]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
body = b64(json.dumps({"iss": iss, "aud": aud, "sub": "bench",
                       "exp": int(time.time()) + 86400}).encode())
sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
}

# weft's config: one Cluster (the upstream) and one Listener whose FilterChain runs N
# `passthrough` filters (p1..pN of one Plugin; 0 = `filters: []`), or `none`: a Listener
# without filterChain (no Plugin, no FilterChain).
weft_config() { # $1 = filter count, none or builtins, $2 = port, $3 = upstream port, $4 = passthrough.wasm
    if [[ $1 == builtins ]]; then
        builtins_config "$2" "$3"
        return
    fi
    cat <<EOF
apiVersion: weft/v1
kind: Cluster
metadata: {name: upstream}
spec:
  endpoints: ["127.0.0.1:$3"]
EOF
    if [[ $1 != none ]]; then
        if [[ $1 -gt 0 ]]; then
            cat <<EOF
---
apiVersion: weft/v1
kind: Plugin
metadata: {name: passthrough}
spec: {url: "file://$4"$(plugin_deadline)}
EOF
        fi
        printf -- '---\napiVersion: weft/v1\nkind: FilterChain\nmetadata: {name: bench}\nspec:\n'
        if [[ $1 -eq 0 ]]; then
            echo "  filters: []"
        else
            echo "  filters:"
            local i
            for ((i = 1; i <= $1; i++)); do
                echo "    - {plugin: passthrough, name: p$i}"
            done
        fi
    fi
    cat <<EOF
---
apiVersion: weft/v1
kind: Listener
metadata: {name: bench}
spec:
  address: 127.0.0.1:$2
  defaultCluster: upstream
EOF
    [[ $1 == none ]] || echo "  filterChain: bench"
}

# ---------------------------------------------------------------------------------------------
# nginx: the upstream ("ok\n", one worker) and the reverse proxy weft is compared with.
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

write_upstream_conf() { # $1 = prefix dir, $2 = port
    mkdir -p "$1"
    {
        echo "worker_processes 1;"
        nginx_common "$1"
        cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$1")
    keepalive_requests 100000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$2;
        location / { return 200 "ok\n"; }
    }
}
EOF
    } >"$1/nginx.conf"
}

# The reverse proxy, configured to do what weft does (see bench/README.md).
write_proxy_conf() { # $1 = prefix dir, $2 = port, $3 = upstream port, [$4 = listen options]
    mkdir -p "$1"
    {
        echo "worker_processes auto;"
        nginx_common "$1"
        cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$1")
    keepalive_requests 100000;
    keepalive_timeout 75s;
    upstream backend {
        server 127.0.0.1:$3;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$2${4:-};
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
    } >"$1/nginx.conf"
}

start_nginx() { # $1 = prefix dir; the master's pid is appended to PIDS
    "$NGINX" -t -q -p "$1" -e "$1/error.log" -c "$1/nginx.conf" >/dev/null 2>&1 ||
        { "$NGINX" -t -p "$1" -e "$1/error.log" -c "$1/nginx.conf" || true; die "invalid nginx config $1/nginx.conf"; }
    "$NGINX" -p "$1" -e "$1/error.log" -c "$1/nginx.conf" >"$1/stdout.log" 2>&1 &
    PIDS+=($!)
}

# weft proxy with config $1/weft.yaml and admin port $2, logs in $1; the pid is appended to PIDS.
start_weft() { # $1 = dir, $2 = admin port
    NO_COLOR=1 "$WEFT_BIN" proxy --config "$1/weft.yaml" --admin "127.0.0.1:$2" \
        --drain-timeout 1s >"$1/stdout.log" 2>"$1/stderr.log" &
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

# ---------------------------------------------------------------------------------------------
# Load.
# ---------------------------------------------------------------------------------------------

# The load generator runs as a background child that we wait for, so that a signal to this
# script is handled at once (bash defers traps until a foreground child exits). `wait` reaps it,
# so its CPU time still shows in `times`.
run_load() { # $1 = output file, $2... = command
    local out=$1 rc=0
    shift
    "$@" >"$out" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    return "$rc"
}

# One measured run: `load_cmd PORT SECONDS` (defined by the caller; one argument per line) for WARMUP seconds, then for
# DURATION seconds with the CPU of process tree PID, of the upstream (UP_PID), of the load
# generator and of the whole host read around it. The output is parsed by `helper PARSER` and
# one JSON record, with the given KEY=VALUE tags added, is appended to RESULTS.
measure() { # $1 = name, $2 = port, $3 = pid, $4 = parser, $5 = output file, $6... = tags
    local name=$1 port=$2 pid=$3 parser=$4 out=$5
    shift 5
    local -a cmd
    mapfile -t cmd < <(load_cmd "$port" "$WARMUP")
    log "$name: warmup ${WARMUP}s"
    run_load "$out.warmup" "${cmd[@]}" || log "$name: warmup exited with $?"

    mapfile -t cmd < <(load_cmd "$port" "$DURATION")
    log "$name: ${cmd[*]}"
    local others_before others_after p0 p1 pu0 pu1 u0 u1 l0 l1 b0 t0 b1 t1
    others_before=$(concurrent_work)
    read -r p0 pu0 < <(tree_ticks_split "$pid")
    u0=$(tree_ticks "$UP_PID")
    children_ticks >"$TMP/l0"
    read -r b0 t0 < <(host_ticks)
    run_load "$out" "${cmd[@]}" || log "$name: ${cmd[0]} exited with $?"
    read -r b1 t1 < <(host_ticks)
    children_ticks >"$TMP/l1"
    read -r p1 pu1 < <(tree_ticks_split "$pid")
    u1=$(tree_ticks "$UP_PID")
    others_after=$(concurrent_work)
    l0=$(<"$TMP/l0")
    l1=$(<"$TMP/l1")
    kill -0 "$pid" 2>/dev/null || die "$name died during the run"

    local parsed="$out.parsed.json"
    helper "$parser" "$out" >"$parsed"
    # For direct, the measured process is the upstream itself (cpu_us/req == upstream's).
    helper record "$parsed" "$name" "$CLK_TCK" "$((p1 - p0))" "$((u1 - u0))" "$((l1 - l0))" \
        "$((b1 - b0))" "$((t1 - t0))" "$NCPU" "$others_before$others_after" "$((pu1 - pu0))" |
        helper tag "$@" >>"$RESULTS"
    sed 's/^/    /' "$out" >&2
}
