#!/usr/bin/env bash
# The origin's chunk serving on a directory store vs on an S3-compatible object store (a
# 3-node Garage cluster on loopback, 3 replicas of everything), same chunks, same load, one run:
#
#   (a) --store DIR: a directory store (no cache of its own: the OS page cache serves it, warm)
#   (b) --store s3://chorus/catalogue --cache-mem-size 0: the miss path, every chunk request a GET
#   (c) --store s3://chorus/catalogue (default --cache-mem-size 256MiB), warmed: memory hits
#   (d) --store s3://… --cache-mem-size 0 --cache-dir DIR, warmed: hits from the disk tier alone
#   (a0) --store DIR served by BEFORE_BIN (e.g. the build of 5676560, before the object store)
#
# The catalogue is samples/ (3 tracks × 2 renditions), ingested with one signing key into both
# stores (same key, same input: same chunk ids). Each configuration gets its own fresh origin,
# warmed by fetching every chunk once, then wrk (CONNECTIONS connections, SECONDS_PER_RUN s,
# rotating over every chunk URL of the samples). The origin and the Garage nodes are pinned to
# CPU 0, wrk to CPU 1. Reports requests/s, p50/p99 latency (wrk --latency), CPU per request of
# the origin and of Garage (its 3 processes summed: on the miss path the store's CPU is part of
# the cost), store GETs per request and the share of them slower than 25 ms (the origin's
# /metrics), and ratios vs (a). Medians of ROUNDS rounds, the order of configurations rotated.
#
# Needs: garage v2 (GARAGE, default /var/tmp/garage-install/bin/garage, where .ci/run installs
# it: `cargo install --locked --version 2.5.0 garage`), wrk, curl, jq, taskset (Debian: apt-get install -y wrk curl jq util-linux), 2 CPUs.
# Run from anywhere:  bench/origin_store.sh
# Knobs (environment): SECONDS_PER_RUN (20), ROUNDS (3), CONNECTIONS (8), BASE_PORT (18600),
# BIN (a chorus binary to use instead of building target/release/chorus), BEFORE_BIN (adds (a0)).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-8}
BASE_PORT=${BASE_PORT:-18600}
GARAGE=${GARAGE:-/var/tmp/garage-install/bin/garage}
BEFORE_BIN=${BEFORE_BIN:-}

for tool in wrk curl jq taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk curl jq util-linux" >&2; exit 1; }
done
"$GARAGE" --version >/dev/null 2>&1 || { echo "no garage at $GARAGE (set GARAGE; cargo install --locked garage)" >&2; exit 1; }
[ -z "$BEFORE_BIN" ] || [ -x "$BEFORE_BIN" ] || { echo "BEFORE_BIN=$BEFORE_BIN is not an executable" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs at least 2 CPUs (servers and load on separate cores)" >&2; exit 1; }

if [ -z "${BIN:-}" ]; then
  echo "building (release)..." >&2
  CARGO_INCREMENTAL=0 cargo build --release -q --bin chorus
  BIN=$PWD/target/release/chorus
fi

WORK=$(mktemp -d /tmp/chorus-bench-store.XXXXXX)
GARAGE_PIDS=(); ORIGIN_PID=
stop() { # PID…: SIGTERM, then SIGKILL after 5 s; waits for each
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  done
}
cleanup() { stop $ORIGIN_PID "${GARAGE_PIDS[@]}"; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# --- Garage: 3 nodes, one zone each, replication_factor 3 (as testkit/src/garage.rs) ---------
RPC_SECRET=$(hex 32); KEY_ID=GK$(hex 12); SECRET=$(hex 32)
for i in 0 1 2; do
  d=$WORK/garage/node$i; mkdir -p "$d"
  rpc=$((BASE_PORT + 10 + 3 * i)); s3=$((rpc + 1)); admin=$((rpc + 2))
  cat > "$d/garage.toml" <<TOML
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$RPC_SECRET"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$(hex 32)"
TOML
  RUST_LOG=warn taskset -c 0 "$GARAGE" -c "$d/garage.toml" server > "$d/garage.log" 2>&1 &
  GARAGE_PIDS+=($!)
done
until_ok() { # NODE ARGS…: retries `garage ARGS` on NODE for up to 60 s ("already exists" counts)
  local n=$1 out; shift
  for _ in $(seq 300); do
    if out=$(RUST_LOG=warn "$GARAGE" -c "$WORK/garage/node$n/garage.toml" "$@" 2>"$WORK/garage.err"); then
      echo "$out"; return 0
    fi
    grep -q AlreadyExists "$WORK/garage.err" && return 0
    sleep 0.2
  done
  echo "garage $* failed: $(cat "$WORK/garage.err")" >&2; tail -n 20 "$WORK"/garage/node*/garage.log >&2; exit 1
}
echo "starting a 3-node Garage cluster..." >&2
IDS=()
for i in 0 1 2; do
  id=$(until_ok "$i" node id -q); IDS+=("${id%%@*}"); [[ ${IDS[$i]} =~ ^[0-9a-f]{64}$ ]] || { echo "garage node id: $id" >&2; exit 1; }
done
for i in 1 2; do until_ok 0 node connect "${IDS[$i]}@127.0.0.1:$((BASE_PORT + 10 + 3 * i))" >/dev/null; done
for i in 0 1 2; do until_ok 0 layout assign -z "dc$((i + 1))" -c 1G "${IDS[$i]}" >/dev/null; done
until_ok 0 layout apply --version 1 >/dev/null
until_ok 0 key import --yes -n chorus-bench "$KEY_ID" "$SECRET" >/dev/null
until_ok 0 bucket create chorus >/dev/null
until_ok 0 bucket allow --read --write --owner chorus --key "$KEY_ID" >/dev/null
export AWS_ENDPOINT_URL=http://127.0.0.1:$((BASE_PORT + 11)) AWS_REGION=garage AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET HOME=/nonexistent

# --- the same samples, the same signing key, into both stores ---------------------------------
"$BIN" keys generate --out "$WORK/keys" >/dev/null
KEY=$WORK/keys/origin.key; DIR=$WORK/dir; S3=s3://chorus/catalogue
TRACKS=(chorus-tides chorus-sunrise chorus-lantern)
for t in "${TRACKS[@]}"; do
  "$BIN" ingest --store "$DIR" --signing-key "$KEY" --track "$t" "samples/$t" >/dev/null 2>"$WORK/ingest.log" \
    || { cat "$WORK/ingest.log" >&2; exit 1; }
  for try in $(seq 30); do # the cluster may still be settling its layout
    "$BIN" ingest --store "$S3" --signing-key "$KEY" --track "$t" "samples/$t" >/dev/null 2>"$WORK/ingest.log" && break
    [ "$try" -lt 30 ] || { cat "$WORK/ingest.log" >&2; exit 1; }; sleep 1
  done
done

# --- origins: one at a time, each fresh, on its own port --------------------------------------
PORT=$((BASE_PORT + 20)); URL=
start_origin() { # CONFIG
  PORT=$((PORT + 1)); URL=http://127.0.0.1:$PORT
  case $1 in
    dir) taskset -c 0 "$BIN" origin --store "$DIR" --signing-key "$KEY" --listen "$URL" --log-level warn & ;;
    before) taskset -c 0 "$BEFORE_BIN" origin --store "$DIR" --signing-key "$KEY" --listen "$URL" --log-level warn & ;;
    s3-miss) taskset -c 0 "$BIN" origin --store "$S3" --cache-mem-size 0 --listen "$URL" --log-level warn & ;;
    s3-hit) taskset -c 0 "$BIN" origin --store "$S3" --listen "$URL" --log-level warn & ;;
    s3-disk) taskset -c 0 "$BIN" origin --store "$S3" --cache-mem-size 0 --cache-dir "$WORK/disk-cache-$PORT" \
      --listen "$URL" --log-level warn & ;;
  esac
  ORIGIN_PID=$!
  for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "origin $1 not ready at $URL" >&2; exit 1
}
stop_origin() { stop "$ORIGIN_PID"; ORIGIN_PID=; }

start_origin dir
for t in "${TRACKS[@]}"; do
  curl -sf "$URL/v1/tracks/$t/manifest" | jq -r '.. | objects | select(has("renditions")) | .renditions[] | .init.id, .segments[].id'
done | sort -u | sed 's|^|/v1/chunks/|' > "$WORK/paths"
stop_origin
NCHUNKS=$(wc -l < "$WORK/paths")
[ "$NCHUNKS" -gt 0 ] || { echo "no chunk ids in the manifests" >&2; exit 1; }

warm() { # every chunk once, 200 or fail; prints the bytes fetched
  local total=0 n
  while read -r p; do n=$(curl -sf -o /dev/null -w '%{size_download}' "$URL$p") || { echo "GET $p failed" >&2; exit 1; }
    total=$((total + n)); done < "$WORK/paths"
  echo "$total"
}
ticks() { local sum=0; for p in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$sum"; }
HZ=$(getconf CLK_TCK)
gets() { # the origin's store GETs: "ok-count count-over-25ms" (from its /metrics)
  curl -sf "$URL/metrics" | awk '$1 == "chorus_origin_store_requests_total{op=\"get\",outcome=\"ok\"}" {q = $2}
    $1 == "chorus_origin_store_request_seconds_bucket{op=\"get\",le=\"0.025\"}" {f = $2}
    $1 == "chorus_origin_store_request_seconds_count{op=\"get\"}" {c = $2} END {print q + 0, c - f}'
}
ms() { awk '{v = $2 + 0; if ($2 ~ /us$/) v /= 1000; else if ($2 ~ /ms$/) v += 0; else if ($2 ~ /s$/) v *= 1000; printf "%.2f", v}'; }

RESULTS=$WORK/results
run() { # CONFIG → "CONFIG rps p50_ms p99_ms origin_us garage_us gets/request %gets>25ms total_us"
  local cfg=$1 o0 o1 g0 g1 q0 q1 s0 s1 out n rps p50 p99
  start_origin "$cfg"
  BYTES=$(warm)
  read -r q0 s0 < <(gets); o0=$(ticks "$ORIGIN_PID"); g0=$(ticks "${GARAGE_PIDS[@]}")
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s bench/rotate.lua "$URL" -- "$WORK/paths" 2>&1)
  o1=$(ticks "$ORIGIN_PID"); g1=$(ticks "${GARAGE_PIDS[@]}"); read -r q1 s1 < <(gets)
  stop_origin
  if echo "$out" | grep -q -e "Non-2xx" -e "Socket errors"; then echo "$out" >&2; exit 1; fi
  n=$(echo "$out" | awk '/requests in/ {print $1}'); rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%"' | ms); p99=$(echo "$out" | awk '$1 == "99%"' | ms)
  awk -v c="$cfg" -v n="$n" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v o=$((o1 - o0)) -v g=$((g1 - g0)) \
    -v q=$((q1 - q0)) -v s=$((s1 - s0)) -v hz="$HZ" 'BEGIN { printf "%s %.0f %s %s %.1f %.1f %.3f %.0f %.1f\n",
      c, rps, p50, p99, o / hz / n * 1e6, g / hz / n * 1e6, q / n, q ? 100 * s / q : 0, (o + (c ~ /^s3/ ? g : 0)) / hz / n * 1e6 }'
}

CONFIGS=(dir s3-miss s3-hit s3-disk); [ -z "$BEFORE_BIN" ] || CONFIGS+=(before)
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS..." >&2
  k=$(( (round - 1) % ${#CONFIGS[@]} ))
  for cfg in "${CONFIGS[@]:k}" "${CONFIGS[@]:0:k}"; do run "$cfg" >> "$RESULTS"; done
done

median() { # CONFIG FIELD [PRINTF-FORMAT]
  awk -v c="$1" -v f="$2" '$1 == c {print $f}' "$RESULTS" | sort -g |
    awk -v fmt="${3:-%.1f}" '{v[NR] = $1} END {printf fmt, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
label() { case $1 in dir) echo "(a) directory store, warm page cache" ;; s3-miss) echo "(b) Garage, --cache-mem-size 0 (miss)" ;;
  s3-hit) echo "(c) Garage, 256MiB memory cache, warm (hit)" ;; s3-disk) echo "(d) Garage, disk tier only, warm (hit)" ;;
  before) echo "(a0) directory store, BEFORE_BIN" ;; esac; }
total() { median "$1" 9; } # origin CPU, plus Garage's for the configurations that use it
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
echo
echo "$NCHUNKS chunks of the samples ($((BYTES / NCHUNKS)) bytes on average), wrk $CONNECTIONS connections, ${SECONDS_PER_RUN}s × $ROUNDS rounds (medians);"
echo "origin and Garage (3 nodes, replication_factor 3) on CPU 0, wrk on CPU 1. CPU in µs per request."
echo
echo "| configuration | req/s | p50 ms | p99 ms | origin CPU | Garage CPU | origin + Garage CPU | store GETs/req | GETs > 25 ms | req/s vs (a) | CPU/req vs (a) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for cfg in dir "${CONFIGS[@]:1}"; do
  garage=$(median "$cfg" 6) gets=$(median "$cfg" 7 %.3f) slow=$(median "$cfg" 8 %.0f%%)
  [[ $cfg == s3* ]] || garage="–" gets="–" slow="–"
  echo "| $(label "$cfg") | $(median "$cfg" 2 %.0f) | $(median "$cfg" 3 %.2f) | $(median "$cfg" 4 %.2f) | $(median "$cfg" 5) | $garage | $(total "$cfg") | $gets | $slow | $(ratio "$(median "$cfg" 2)" "$(median dir 2)") | $(ratio "$(total "$cfg")" "$(total dir)") |"
done
echo
echo "raw results (config rps p50_ms p99_ms origin_us garage_us store_gets_per_request store_gets_over_25ms_percent total_us):"; cat "$RESULTS"
