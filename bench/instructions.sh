#!/usr/bin/env bash
# User-space instructions per proxied request, weft and nginx, counted by callgrind: the same
# wrk load through each proxy (one worker each), minus an idle run, divided by the requests
# served. Deterministic where wall-clock CPU time is noisy; the kernel's share is not counted.
# Env: WEFT_BIN (skip the build), DURATION (8, seconds of load under valgrind).
set -euo pipefail
DURATION=${DURATION:-8}
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
for tool in valgrind wrk nginx curl python3; do
    command -v "$tool" >/dev/null || { echo "instructions: $tool not found" >&2; exit 1; }
done
if [[ -z ${WEFT_BIN:-} ]]; then
    (cd "$REPO_DIR" && cargo build --release -p weft-host >&2)
    WEFT_BIN="$REPO_DIR/target/release/weft"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/weft-instr.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

read -r UP PROXY ADMIN < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')

nginx_conf() { # $1 prefix, $2 server block
    mkdir -p "$1"/{client_body,proxy,fastcgi,uwsgi,scgi}
    cat >"$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/client_body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
    keepalive_requests 100000;
    $2
}
CONF
}
nginx_conf "$TMP/up" "server { listen 127.0.0.1:$UP; location / { return 200 \"ok\n\"; } }"
nginx_conf "$TMP/px" "upstream backend { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 100000; }
    server { listen 127.0.0.1:$PROXY; location / { proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection \"\"; proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Request-Id \$request_id; } }"
cat >"$TMP/weft.yaml" <<CONF
apiVersion: weft/v1
kind: Cluster
metadata: {name: upstream}
spec: {endpoints: ["127.0.0.1:$UP"]}
---
apiVersion: weft/v1
kind: Listener
metadata: {name: bench}
spec: {address: "127.0.0.1:$PROXY", defaultCluster: upstream}
CONF

nginx -c "$TMP/up/nginx.conf" -p "$TMP/up" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "127.0.0.1:$UP/" && break; sleep 0.1; done

# $1 name, $2 load|idle, $3... the proxy command; prints "requests instructions"
measure() {
    local name=$1 mode=$2 out="$TMP/$1.$2.cg"
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$TMP/$name.$mode.log" 2>&1 &
    local pid=$!
    for _ in $(seq 150); do curl -s -o /dev/null "127.0.0.1:$PROXY/" && break; sleep 0.2; done
    local n=1
    if [[ $mode == load ]]; then
        wrk -t1 -c8 -d"${DURATION}s" "http://127.0.0.1:$PROXY/" >"$TMP/$name.wrk"
        n=$(awk '/requests in/{print $1}' "$TMP/$name.wrk")
        n=$((n + 1))
    fi
    kill -INT "$pid" 2>/dev/null || true
    kill -QUIT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$n $(awk '/^summary:/{print $2}' "$out")"
}

per_request() { # $1 name, $2... command
    local name=$1 n0 i0 n1 i1
    shift
    read -r n0 i0 < <(measure "$name" idle "$@")
    read -r n1 i1 < <(measure "$name" load "$@")
    echo $(((i1 - i0) / (n1 - n0)))
}

# One tokio worker, as nginx runs one worker process here.
export TOKIO_WORKER_THREADS=1
WEFT=$(per_request weft "$WEFT_BIN" proxy --config "$TMP/weft.yaml" --admin "127.0.0.1:$ADMIN")
unset TOKIO_WORKER_THREADS
NGINX=$(per_request nginx nginx -c "$TMP/px/nginx.conf" -p "$TMP/px")
echo "user-space instructions per request (callgrind, wrk -c8 for ${DURATION}s, one worker each):"
echo "  weft   $WEFT"
echo "  nginx  $NGINX"
python3 -c "print(f'  weft / nginx  {$WEFT / $NGINX:.2f}x')"
