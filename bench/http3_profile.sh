#!/usr/bin/env bash
# Where an edge's CPU goes under HTTP/3 load: the HTTP/3 step of bench/edge_vs_nginx.sh (256
# warm 128 KiB chunks, bench/loadgen.rs with 64 connections, edge on CPU 0 and load on CPU 1)
# with `perf record --call-graph dwarf` on the edge for a few seconds of it. Prints server CPU
# µs per request for the run and the samples by component: the kernel, quinn-proto (packet
# building, ACK processing, loss recovery), packet encryption (ring's AES-GCM and header
# protection), memory copies (almost all quinn-proto's copy of stream data into packets),
# quinn's async layer and quinn-udp, tokio, h3, our own code, the allocator.
#
#   bench/http3_profile.sh [PROTO]      PROTO: h3 (default) or h2, for comparison
#
# Knobs (environment): SECONDS_PER_RUN (10), PERF_SECONDS (3), CONNECTIONS (64), CHUNKS (256),
# BASE_PORT (18700). Needs perf, curl and taskset (Debian: apt-get install -y linux-perf curl).
set -euo pipefail
cd "$(dirname "$0")/.."
PROTO=${1:-h3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10} PERF_SECONDS=${PERF_SECONDS:-3} CONNECTIONS=${CONNECTIONS:-64}
CHUNKS=${CHUNKS:-256} BASE_PORT=${BASE_PORT:-18700}
ORIGIN=$((BASE_PORT + 1)); EDGE_HTTP=$((BASE_PORT + 2)); EDGE_TLS=$((BASE_PORT + 3))
for tool in perf curl taskset; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
[ "$(nproc)" -ge 2 ] || { echo "needs at least 2 CPUs" >&2; exit 1; }

echo "building (release)..." >&2
cargo build --release -q --bin chorus --example loadgen
BIN=$PWD/target/release/chorus LOADGEN=$PWD/target/release/examples/loadgen
WORK=$(mktemp -d /tmp/chorus-prof.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
. bench/catalogue.sh
make_catalogue "$BIN" "$WORK" "$WORK/store" "$CHUNKS"

taskset -c 1 "$BIN" origin --store "$WORK/store" --listen "http://127.0.0.1:$ORIGIN" --log-level warn &
PIDS+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$ORIGIN/healthz" >/dev/null && break; sleep 0.1; done
taskset -c 0 "$BIN" edge --upstream "http://127.0.0.1:$ORIGIN" --listen "http://127.0.0.1:$EDGE_HTTP" \
  --listen "https://127.0.0.1:$EDGE_TLS" --listen "h3://127.0.0.1:$EDGE_TLS" --cache-dir "$WORK/cache" \
  --cache-mem-size 1GiB --prefetch-segments 0 --log-level error &
EDGE=$!; PIDS+=($EDGE)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$EDGE_HTTP/readyz" >/dev/null && break; sleep 0.1; done
"$BIN" get "http://127.0.0.1:$EDGE_HTTP/v1/tracks/bench/hls/r128.m3u8" 2>/dev/null | grep '^/v1/chunks/' > "$WORK/paths"
for _ in 1 2; do while read -r p; do curl -sf -o /dev/null "http://127.0.0.1:$EDGE_HTTP$p"; done < "$WORK/paths"; done

url="https://127.0.0.1:$EDGE_TLS"; [ "$PROTO" = h3 ] && url="h3://127.0.0.1:$EDGE_TLS"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
t0=$(ticks "$EDGE")
( sleep 2; perf record -q -F 499 --call-graph dwarf,16384 -p "$EDGE" -o "$WORK/perf.data" -- sleep "$PERF_SECONDS" >/dev/null 2>&1 ) &
PERF=$!
out=$(taskset -c 1 "$LOADGEN" "$url" "$WORK/paths" "$CONNECTIONS" "$SECONDS_PER_RUN" --ca "$WORK/cache/tls/cert.pem" 2>&1)
t1=$(ticks "$EDGE")
wait "$PERF"
echo "$out" | sed -n 's/.*"requests":\([0-9]*\).*"rps":\([0-9.]*\).*/\1 \2/p' |
  awk -v p="$PROTO" -v d="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" \
    '{ printf "%s: %.0f requests/s, server CPU %.1f us/request (whole run)\n", p, $2, (d / hz) / $1 * 1e6 }'
echo "edge samples by component (perf, ${PERF_SECONDS}s of the run):"
perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep '%' |
  awk '{ p = $1; sub("%", "", p); s = $0; c = "other"
    if (s ~ /kernel/) c = "kernel (syscalls, UDP/TCP, loopback delivery)"
    else if (s ~ /ring|aes|gcm|ghash|PacketKey|HeaderProtection|chacha|poly1305/) c = "packet encryption (ring)"
    else if (s ~ /memmove|memcpy/) c = "memory copies"
    else if (s ~ /quinn_proto|btree|BTree|VecDeque|RangeSet/) c = "quinn-proto"
    else if (s ~ /quinn_udp|quinn::/) c = "quinn async layer, quinn-udp"
    else if (s ~ /rustls/) c = "rustls"
    else if (s ~ /hyper|h2::/) c = "hyper, h2"
    else if (s ~ /tokio/) c = "tokio"
    else if (s ~ /h3::/) c = "h3"
    else if (s ~ /chorus_/) c = "chorus"
    else if (s ~ /mi_|_mi_|mimalloc/) c = "allocator"
    t[c] += p }
    END { for (k in t) printf "  %6.1f%%  %s\n", t[k], k }' | sort -rn
