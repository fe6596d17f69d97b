#!/usr/bin/env bash
# Cache-hit serving of 128 KiB chunks: the chorus edge vs nginx proxy_cache, same machine, same
# origin, one run. Each server is pinned to CPU 0, the load generator to CPU 1.
#
#   1. HTTP/1.1:        wrk            → chorus edge   vs nginx (proxy_cache)
#   2. HTTP/2 over TLS: h2load         → chorus edge   vs nginx (ssl http2)
#   3. HTTP/3 vs HTTP/2 (chorus edge), both from bench/loadgen.rs (the same client code)
#
# Reports requests/s and server CPU time per request, and their ratios (edge / nginx).
#
# Needs: nginx, wrk, h2load, curl, taskset (Debian: apt-get install -y nginx-light wrk
# nghttp2-client curl util-linux). Run from anywhere:  bench/edge_vs_nginx.sh
# Knobs (environment): SECONDS_PER_RUN (10), ROUNDS (3), CONNECTIONS (64), CHUNKS (256),
# BASE_PORT (18500), TCP_CC (cubic).
#
# TCP_CC is the TCP congestion control both servers run under (net.ipv4.tcp_congestion_control;
# set for the run and restored after, which needs root; without root the script runs under the
# machine's setting and says so). It matters on loopback: with bbr and no fq qdisc the kernel
# paces each connection with high-resolution timers, and a server that saturates its core falls
# into a state where its connections are paced (the client's measured RTT grows with the
# server's queueing, its receive window grows, BBR leaves startup and paces at the measured
# rate) while a server with headroom stays unpaced. Run TCP_CC=bbr to see it; docs/BENCHMARKS.md
# has both.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
CHUNKS=${CHUNKS:-256}
BASE_PORT=${BASE_PORT:-18500}
ORIGIN=$((BASE_PORT + 1)); EDGE_HTTP=$((BASE_PORT + 2)); EDGE_TLS=$((BASE_PORT + 3))
NGX_HTTP=$((BASE_PORT + 4)); NGX_TLS=$((BASE_PORT + 5))

for tool in nginx wrk h2load curl taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y nginx-light wrk nghttp2-client curl util-linux" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "needs at least 2 CPUs (server and load on separate cores)" >&2; exit 1; }

echo "building (release)..." >&2
cargo build --release -q --bin chorus --example loadgen
BIN=$PWD/target/release/chorus
LOADGEN=$PWD/target/release/examples/loadgen

WORK=$(mktemp -d /tmp/chorus-bench.XXXXXX)
PIDS=()
TCP_CC=${TCP_CC:-cubic}
CC_BEFORE=$(sysctl -n net.ipv4.tcp_congestion_control)
if [ "$CC_BEFORE" != "$TCP_CC" ]; then
  if [ "$(id -u)" -eq 0 ] && sysctl -qw net.ipv4.tcp_congestion_control="$TCP_CC"; then
    echo "TCP congestion control: $TCP_CC for this run (was $CC_BEFORE; restored at exit)" >&2
  else
    echo "warning: cannot set TCP congestion control to $TCP_CC; running under $CC_BEFORE" >&2
  fi
fi
CC_RUN=$(sysctl -n net.ipv4.tcp_congestion_control)
cleanup() {
  [ "$CC_RUN" != "$CC_BEFORE" ] && sysctl -qw net.ipv4.tcp_congestion_control="$CC_BEFORE" || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- catalogue: CHUNKS chunks of exactly 128 KiB, imported as an HLS package ------------------
. bench/catalogue.sh
make_catalogue "$BIN" "$WORK" "$WORK/store" "$CHUNKS"

taskset -c 1 "$BIN" origin --store "$WORK/store" --listen "http://127.0.0.1:$ORIGIN" --log-level warn &
PIDS+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$ORIGIN/healthz" >/dev/null && break; sleep 0.1; done
taskset -c 0 "$BIN" edge --upstream "http://127.0.0.1:$ORIGIN" --listen "http://127.0.0.1:$EDGE_HTTP" \
  --listen "https://127.0.0.1:$EDGE_TLS" --listen "h3://127.0.0.1:$EDGE_TLS" --cache-dir "$WORK/edge-cache" \
  --cache-mem-size 1GiB --prefetch-segments 0 --log-level warn &
EDGE_PID=$!; PIDS+=($EDGE_PID)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$EDGE_HTTP/readyz" >/dev/null && break; sleep 0.1; done
CERT=$WORK/edge-cache/tls/cert.pem; KEY=$WORK/edge-cache/tls/key.pem

mkdir -p "$WORK/nginx-cache"
cat > "$WORK/nginx.conf" <<NGINX
user root;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=chunks:64m max_size=4g inactive=7d use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 16; }
  server {
    listen 127.0.0.1:$NGX_HTTP;
    listen 127.0.0.1:$NGX_TLS ssl http2;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache chunks;
      proxy_cache_key \$uri;
      proxy_cache_valid 200 1y;
      proxy_cache_lock on;
    }
  }
}
NGINX
taskset -c 0 nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
for _ in $(seq 50); do [ -f "$WORK/nginx.pid" ] && curl -s -o /dev/null "http://127.0.0.1:$NGX_HTTP/" && break; sleep 0.1; done
NGX_MASTER=$(cat "$WORK/nginx.pid")

"$BIN" get "http://127.0.0.1:$EDGE_HTTP/v1/tracks/bench/hls/r128.m3u8" 2>/dev/null | grep '^/v1/chunks/' > "$WORK/paths"
[ "$(wc -l < "$WORK/paths")" -eq "$CHUNKS" ] || { echo "expected $CHUNKS chunk paths" >&2; exit 1; }
sed "s|^|https://127.0.0.1:$EDGE_TLS|" "$WORK/paths" > "$WORK/urls-edge-tls"
sed "s|^|https://127.0.0.1:$NGX_TLS|" "$WORK/paths" > "$WORK/urls-ngx-tls"

# Warm both caches (every chunk fetched once, then verify all are hits on a second pass).
for port in $EDGE_HTTP $NGX_HTTP; do
  for pass in 1 2; do
    while read -r p; do curl -sf -o /dev/null "http://127.0.0.1:$port$p"; done < "$WORK/paths"
  done
done

ticks() { # CPU ticks (user + system) of the given pids and their threads
  local sum=0; for p in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$sum"
}
HZ=$(getconf CLK_TCK)
ngx_pids() { echo "$NGX_MASTER $(pgrep -P "$NGX_MASTER" | tr '\n' ' ')"; }

# run NAME "PIDS" COMMAND... → prints "NAME rps cpu_us_per_request"
run() {
  local name=$1 pids=$2; shift 2
  local t0 t1 out n rps
  # shellcheck disable=SC2086
  t0=$(ticks $pids)
  out=$(taskset -c 1 "$@" 2>&1)
  # shellcheck disable=SC2086
  t1=$(ticks $pids)
  case "$1" in
    wrk) n=$(echo "$out" | awk '/requests in/ {print $1}'); rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
         if echo "$out" | grep -q "Non-2xx"; then echo "$out" >&2; exit 1; fi ;;
    h2load) n=$(echo "$out" | awk '/^requests:/ {print $8}'); rps=$(echo "$out" | awk '/^finished in/ {print $4}')
            bad=$(echo "$out" | awk '/^status codes:/ {s += $7 + $9} /^requests:/ {s += $10 + $12} END {print s + 0}')
            [ "$bad" = "0" ] || { echo "$out" >&2; exit 1; } ;;
    *) n=$(echo "$out" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'); rps=$(echo "$out" | sed -n 's/.*"rps":\([0-9.]*\).*/\1/p')
       [ "$(echo "$out" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')" = "0" ] || { echo "$out" >&2; exit 1; } ;;
  esac
  awk -v name="$name" -v n="$n" -v rps="$rps" -v d="$((t1 - t0))" -v hz="$HZ" \
    'BEGIN { printf "%s %.0f %.1f\n", name, rps, (d / hz) / n * 1e6 }'
}

# UDP datagrams the kernel dropped for want of receive buffer (all sockets on the machine).
udp_rcvbuf_errors() { awk '/^Udp:/ { n++ } n == 2 && /^Udp:/ { print $6; exit }' /proc/net/snmp; }

D=$SECONDS_PER_RUN C=$CONNECTIONS
RESULTS=$WORK/results
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS..." >&2
  order=(edge nginx); [ $((round % 2)) -eq 0 ] && order=(nginx edge)
  for who in "${order[@]}"; do
    if [ "$who" = edge ]; then
      run h1-edge "$EDGE_PID" wrk -t1 -c"$C" -d"${D}s" -s bench/rotate.lua "http://127.0.0.1:$EDGE_HTTP" -- "$WORK/paths" >> "$RESULTS"
      run h2-edge "$EDGE_PID" h2load -c"$C" -m1 -D"$D" -i "$WORK/urls-edge-tls" >> "$RESULTS"
    else
      run h1-nginx "$(ngx_pids)" wrk -t1 -c"$C" -d"${D}s" -s bench/rotate.lua "http://127.0.0.1:$NGX_HTTP" -- "$WORK/paths" >> "$RESULTS"
      run h2-nginx "$(ngx_pids)" h2load -c"$C" -m1 -D"$D" -i "$WORK/urls-ngx-tls" >> "$RESULTS"
    fi
  done
  run ours-h2 "$EDGE_PID" "$LOADGEN" "https://127.0.0.1:$EDGE_TLS" "$WORK/paths" "$C" "$D" --ca "$CERT" >> "$RESULTS"
  drops0=$(udp_rcvbuf_errors)
  run ours-h3 "$EDGE_PID" "$LOADGEN" "h3://127.0.0.1:$EDGE_TLS" "$WORK/paths" "$C" "$D" --ca "$CERT" >> "$RESULTS"
  echo "udp-drops $(( $(udp_rcvbuf_errors) - drops0 ))" >> "$RESULTS"
done

median() { # NAME FIELD → median of that field over rounds
  awk -v n="$1" -v f="$2" '$1 == n {print $f}' "$RESULTS" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
echo
echo "128 KiB chunks, all cache hits, $CONNECTIONS connections, ${SECONDS_PER_RUN}s x $ROUNDS rounds (medians); server on CPU 0, load on CPU 1; TCP congestion control $CC_RUN"
echo
printf '| %-32s | %12s | %14s |\n' "run" "requests/s" "CPU µs/request"
printf '|%s|%s|%s|\n' "----------------------------------" "--------------" "----------------"
for n in h1-edge h1-nginx h2-edge h2-nginx ours-h2 ours-h3; do
  printf '| %-32s | %12s | %14s |\n' "$n" "$(median $n 2)" "$(median $n 3)"
done
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "HTTP/1.1  edge/nginx requests/s: $(ratio "$(median h1-edge 2)" "$(median h1-nginx 2)")x   nginx/edge CPU per request: $(ratio "$(median h1-nginx 3)" "$(median h1-edge 3)")x"
echo "HTTP/2    edge/nginx requests/s: $(ratio "$(median h2-edge 2)" "$(median h2-nginx 2)")x   nginx/edge CPU per request: $(ratio "$(median h2-nginx 3)" "$(median h2-edge 3)")x"
echo "HTTP/3 vs HTTP/2 (edge, same client): $(ratio "$(median ours-h3 2)" "$(median ours-h2 2)")x requests/s"
echo "UDP datagrams dropped for want of receive buffer during the HTTP/3 runs: $(awk '$1 == "udp-drops" { s += $2 } END { print s + 0 }' "$RESULTS")"
echo
echo "raw results (name rps cpu_us_per_request):"; cat "$RESULTS"
