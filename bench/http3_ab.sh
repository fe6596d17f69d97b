#!/usr/bin/env bash
# HTTP/3 send path, before and after: the HTTP/3 and HTTP/2 step of bench/edge_vs_nginx.sh run
# on two builds of the edge, alternated round by round (ABAB…) so that whatever else the machine
# does falls on both alike. One load generator (the newer build's bench/loadgen.rs) for every
# round; edge on CPU 0, origin and load on CPU 1. Reports server CPU µs per request and the
# HTTP/3 / HTTP/2 requests/s ratio of each build, per round and as medians.
#
#   bench/http3_ab.sh BASE_REV [NEW_REV]     (NEW_REV defaults to the working tree)
#
# Knobs (environment): ROUNDS (4), SECONDS_PER_RUN (10), CONNECTIONS (64), CHUNKS (256),
# BASE_PORT (18600). Needs curl and taskset. Builds each revision in a worktree under
# target/ab/ (release; a few minutes each the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_REV=${1:?usage: bench/http3_ab.sh BASE_REV [NEW_REV]}
NEW_REV=${2:-}
ROUNDS=${ROUNDS:-4} SECONDS_PER_RUN=${SECONDS_PER_RUN:-10} CONNECTIONS=${CONNECTIONS:-64}
CHUNKS=${CHUNKS:-256} BASE_PORT=${BASE_PORT:-18600}
ORIGIN=$((BASE_PORT + 1)); EDGE_HTTP=$((BASE_PORT + 2)); EDGE_TLS=$((BASE_PORT + 3))
for tool in curl taskset; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
[ "$(nproc)" -ge 2 ] || { echo "needs at least 2 CPUs" >&2; exit 1; }

ROOT=$PWD
build() { # REV DIR: the chorus binary and loadgen of REV (or of the working tree without REV)
  local rev=$1 dir=$2
  if [ -z "$rev" ]; then
    cargo build --release -q --bin chorus --example loadgen
    mkdir -p "$dir" && cp target/release/chorus target/release/examples/loadgen "$dir/"
    return
  fi
  local tree=$ROOT/target/ab/src-$rev
  [ -d "$tree" ] || git worktree add -q --detach "$tree" "$rev"
  (cd "$tree" && CARGO_TARGET_DIR=$ROOT/target/ab/target-$rev cargo build --release -q --bin chorus --example loadgen)
  mkdir -p "$dir" && cp "$ROOT/target/ab/target-$rev/release/chorus" "$ROOT/target/ab/target-$rev/release/examples/loadgen" "$dir/"
}
WORK=$(mktemp -d /tmp/chorus-ab.XXXXXX)
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_all; rm -rf "$WORK"' EXIT
echo "building $BASE_REV and ${NEW_REV:-the working tree} (release)..." >&2
build "$BASE_REV" "$WORK/A"
build "$NEW_REV" "$WORK/B"
LOADGEN=$WORK/B/loadgen

# The catalogue bench/edge_vs_nginx.sh serves: CHUNKS chunks of exactly 128 KiB.
. bench/catalogue.sh
make_catalogue "$WORK/B/chorus" "$WORK" "$WORK/store" "$CHUNKS"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
round() { # LABEL BIN: one round, prints "LABEL h2|h3 rps cpu_us_per_request"
  local label=$1 bin=$2 cache=$WORK/edge-cache-$1
  rm -rf "$cache"
  taskset -c 1 "$bin" origin --store "$WORK/store" --listen "http://127.0.0.1:$ORIGIN" --log-level warn &
  PIDS+=($!)
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$ORIGIN/healthz" >/dev/null && break; sleep 0.1; done
  taskset -c 0 "$bin" edge --upstream "http://127.0.0.1:$ORIGIN" --listen "http://127.0.0.1:$EDGE_HTTP" \
    --listen "https://127.0.0.1:$EDGE_TLS" --listen "h3://127.0.0.1:$EDGE_TLS" --cache-dir "$cache" \
    --cache-mem-size 1GiB --prefetch-segments 0 --log-level warn &
  local edge=$!; PIDS+=($edge)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$EDGE_HTTP/readyz" >/dev/null && break; sleep 0.1; done
  [ -s "$WORK/paths" ] || "$bin" get "http://127.0.0.1:$EDGE_HTTP/v1/tracks/bench/hls/r128.m3u8" 2>/dev/null | grep '^/v1/chunks/' > "$WORK/paths"
  for _ in 1 2; do while read -r p; do curl -sf -o /dev/null "http://127.0.0.1:$EDGE_HTTP$p"; done < "$WORK/paths"; done
  for proto in h2 h3; do
    local url="https://127.0.0.1:$EDGE_TLS"; [ "$proto" = h3 ] && url="h3://127.0.0.1:$EDGE_TLS"
    local t0 t1 out
    t0=$(ticks "$edge")
    out=$(taskset -c 1 "$LOADGEN" "$url" "$WORK/paths" "$CONNECTIONS" "$SECONDS_PER_RUN" --ca "$cache/tls/cert.pem" 2>&1)
    t1=$(ticks "$edge")
    [ "$(echo "$out" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')" = "0" ] || { echo "$out" >&2; exit 1; }
    echo "$out" | sed -n 's/.*"requests":\([0-9]*\).*"rps":\([0-9.]*\).*/\1 \2/p' |
      awk -v l="$label" -v p="$proto" -v d="$((t1 - t0))" -v hz="$HZ" '{ printf "%s %s %.0f %.1f\n", l, p, $2, (d / hz) / $1 * 1e6 }'
  done
  stop_all
}
: > "$WORK/results"
for i in $(seq "$ROUNDS"); do
  echo "round $i/$ROUNDS" >&2
  round A "$WORK/A/chorus" | tee -a "$WORK/results" >&2
  round B "$WORK/B/chorus" | tee -a "$WORK/results" >&2
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for who in A B; do
  name=$BASE_REV; [ "$who" = B ] && name=${NEW_REV:-working tree}
  h3cpu=$(awk -v w="$who" '$1 == w && $2 == "h3" { print $4 }' "$WORK/results" | median)
  h2cpu=$(awk -v w="$who" '$1 == w && $2 == "h2" { print $4 }' "$WORK/results" | median)
  ratio=$(paste <(awk -v w="$who" '$1 == w && $2 == "h3" { print $3 }' "$WORK/results") \
                <(awk -v w="$who" '$1 == w && $2 == "h2" { print $3 }' "$WORK/results") | awk '{ print $1 / $2 }' | median)
  printf '%-14s HTTP/3 %6.1f µs/request  HTTP/2 %6.1f µs/request  HTTP/3 / HTTP/2 requests/s %.2f×\n' "$name" "$h3cpu" "$h2cpu" "$ratio"
done
