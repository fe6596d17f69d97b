#!/usr/bin/env bash
# The shared tracker's cost beside the in-memory one, on the same signed, verified announces
# (bench/tracker.rs): announces and peer queries per second and their latency, and the Redis
# memory a peer costs. Two runs on the same inputs: one redis-server, then a Redis Cluster of
# three primaries and three replicas (redis-cli --cluster create), with how evenly the keys
# and the calls spread over the primaries. Every server is started here on free loopback
# ports (Debian: apt-get install redis-server redis-tools), no persistence, and killed at exit.
#
# Knobs (environment): PEERS (20000), TRACKS (5000), PER_PEER (3 tracks per announce),
# LOOKUPS (50000), CONCURRENCY (64 calls in flight), ONLY (one|cluster: just that run).
# Run from anywhere:  bench/tracker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-20000}; TRACKS=${TRACKS:-5000}; PER_PEER=${PER_PEER:-3}
LOOKUPS=${LOOKUPS:-50000}; CONCURRENCY=${CONCURRENCY:-64}; ONLY=${ONLY:-}
for c in redis-server redis-cli python3; do
  command -v $c >/dev/null || { echo "$c not found (apt-get install redis-server redis-tools python3)" >&2; exit 1; }
done

echo "building (release)..." >&2
cargo build --release -q --example tracker
DIR=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$DIR"' EXIT

# A free loopback port whose cluster bus port (+10000) is free too.
free_port() {
  python3 -c '
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p < 55000:
        try:
            t = socket.socket(); t.bind(("127.0.0.1", p + 10000)); t.close(); print(p); break
        except OSError: pass
    s.close()'
}

# redis-server on PORT, with any further arguments; waits until it answers.
serve() {
  local port=$1; shift
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning \
    --dir "$DIR" "$@" >/dev/null &
  PIDS+=($!)
  for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server on $port did not answer" >&2; exit 1
}

run() {  # URL: the bench's JSON
  target/release/examples/tracker "$1" "$PEERS" "$TRACKS" "$PER_PEER" "$LOOKUPS" "$CONCURRENCY"
}

echo "redis $(redis-server --version | grep -o 'v=[^ ]*'), $(nproc) cores" >&2
if [ "$ONLY" != cluster ]; then
  PORT=$(free_port); serve "$PORT"
  echo "== one redis-server" >&2
  run "redis://127.0.0.1:$PORT"
fi
if [ "$ONLY" != one ]; then
  NODES=()
  for _ in 1 2 3 4 5 6; do
    p=$(free_port)
    serve "$p" --cluster-enabled yes --cluster-config-file "$DIR/nodes-$p.conf" --cluster-node-timeout 2000
    NODES+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${NODES[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  # Primaries: the nodes that serve slots (a replica lists none); wait for all three.
  primaries() { redis-cli -p "${NODES[0]#*:}" cluster nodes | awk '$3 ~ /master/ && NF > 8 {split($2, a, "@"); print a[1]}' | sort; }
  for _ in $(seq 300); do
    redis-cli -p "${NODES[0]#*:}" cluster info | grep -q cluster_state:ok && [ "$(primaries | wc -l)" = 3 ] &&
      [ "$(redis-cli -p "${NODES[0]#*:}" cluster nodes | grep -c slave)" = 3 ] && break
    sleep 0.1
  done
  PRIMARIES=$(primaries)
  calls() { redis-cli -h "${1%:*}" -p "${1#*:}" info stats | awk -F: '/^total_commands_processed/ {print $2+0}'; }
  declare -A BEFORE
  for p in $PRIMARIES; do BEFORE[$p]=$(calls "$p"); done
  echo "== a Redis Cluster: 3 primaries, 3 replicas" >&2
  URL="redis+cluster://$(IFS=,; echo "${NODES[*]}")"
  run "$URL"
  echo "== the cluster's primaries: keys and commands each (the bench's own INFO calls included)" >&2
  for p in $PRIMARIES; do
    keys=$(redis-cli -h "${p%:*}" -p "${p#*:}" dbsize)
    echo "{\"primary\": \"$p\", \"keys\": $keys, \"commands\": $(( $(calls "$p") - ${BEFORE[$p]} ))}"
  done
fi
