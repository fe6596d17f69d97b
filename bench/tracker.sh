#!/usr/bin/env bash
# The shared tracker's cost beside the in-memory one, on the same signed, verified announces
# (bench/tracker.rs): announces and peer queries per second and their latency, and the Redis
# memory a peer costs. Starts a redis-server of its own on a free loopback port (Debian:
# apt-get install redis-server), no persistence.
#
# Knobs (environment): PEERS (20000), TRACKS (5000), PER_PEER (3 tracks per announce),
# LOOKUPS (50000), CONCURRENCY (64 calls in flight). Run from anywhere:  bench/tracker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-20000}; TRACKS=${TRACKS:-5000}; PER_PEER=${PER_PEER:-3}
LOOKUPS=${LOOKUPS:-50000}; CONCURRENCY=${CONCURRENCY:-64}
command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }

echo "building (release)..." >&2
cargo build --release -q --example tracker
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning >/dev/null &
REDIS=$!
trap 'kill $REDIS 2>/dev/null || true' EXIT
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
echo "redis $(redis-server --version | grep -o 'v=[^ ]*'), $(nproc) cores" >&2
target/release/examples/tracker "redis://127.0.0.1:$PORT" "$PEERS" "$TRACKS" "$PER_PEER" "$LOOKUPS" "$CONCURRENCY"
