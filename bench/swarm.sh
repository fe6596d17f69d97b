#!/usr/bin/env bash
# A swarm run on this machine: a real origin and edge (processes), and CLIENTS listeners in one
# process (bench/swarm.rs), each with --p2p, its own cache and peer node, playing PLAYS tracks
# picked from a Zipf(1.0) catalogue of TRACKS tracks, joining over JOIN_SPREAD seconds and
# leaving when done. Reports the share of bytes from the edge, from peers and from local
# caches, startup p50/p95 and stalls per 100 plays.
#
# Catalogue: TRACKS tracks of SEGMENTS 6 s segments (3 minutes by default) of 96 kbit/s-sized
# random bytes (the client never decodes; every chunk is still verified by its hash).
#
# Knobs (environment): TRACKS (30), SEGMENTS (30), CLIENTS (20), PLAYS (8), JOIN_SPREAD (20),
# SEED (42), PLAY (0; 1 = every client plays in real time, so a run lasts about
# PLAYS x SEGMENTS x 6 s), UPLINK (0; bytes/s of each client's uplink, e.g. 125000 for
# 1 Mbit/s), RTT_MIN / RTT_MAX (20 / 80: each client's access round trip in ms, drawn
# uniformly; emulated in user space by bench/netem.rs), PRELOAD (1: in play mode, preload the
# next track's first 15 s when 30 s remain), EDGES (1: edges in front of the origin; client c
# reaches edge c mod EDGES, as behind a load balancer), TRACKER (memory: each edge its own;
# redis: one redis-server shared by every edge, `chorus edge --tracker`; needs redis-server).
# Run from anywhere:  bench/swarm.sh        EDGES=2 TRACKER=redis bench/swarm.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TRACKS=${TRACKS:-30}; SEGMENTS=${SEGMENTS:-30}; CLIENTS=${CLIENTS:-20}; PLAYS=${PLAYS:-8}
JOIN_SPREAD=${JOIN_SPREAD:-20}; SEED=${SEED:-42}; PLAY=${PLAY:-0}; export UPLINK=${UPLINK:-0}
EDGES=${EDGES:-1}; TRACKER=${TRACKER:-memory}
export RTT_MIN=${RTT_MIN:-20} RTT_MAX=${RTT_MAX:-80} PRELOAD=${PRELOAD:-1} SEGMENTS

echo "building (release)..." >&2
cargo build --release -q --bin chorus --example swarm
BIN=$PWD/target/release/chorus
SWARM=$PWD/target/release/examples/swarm

WORK=$(mktemp -d /tmp/chorus-swarm.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT

echo "making $TRACKS tracks of $SEGMENTS segments..." >&2
for t in $(seq 0 $((TRACKS - 1))); do
  id=$(printf 't%03d' "$t"); pkg=$WORK/pkg/$id/aac-96; mkdir -p "$pkg"
  { printf 'ftypmp4a'; head -c 1016 /dev/urandom; } > "$pkg/init.mp4"
  {
    echo '#EXTM3U'; echo '#EXT-X-VERSION:7'; echo '#EXT-X-TARGETDURATION:6'; echo '#EXT-X-MAP:URI="init.mp4"'
    for i in $(seq 0 $((SEGMENTS - 1))); do
      head -c 72000 /dev/urandom > "$pkg/seg$i.m4s"; echo '#EXTINF:6.0,'; echo "seg$i.m4s"
    done
    echo '#EXT-X-ENDLIST'
  } > "$pkg/index.m3u8"
  "$BIN" ingest --store "$WORK/store" --track "$id" "$pkg/index.m3u8" >/dev/null 2>&1
done

"$BIN" origin --store "$WORK/store" --listen http://127.0.0.1:0 --log-level info --log-format json 2> "$WORK/origin.log" &
PIDS+=($!)
# Port 0: read the bound URL from the log.
for _ in $(seq 100); do ORIGIN=$(grep -o '"url":"http://[^"]*' "$WORK/origin.log" 2>/dev/null | head -1 | cut -d'"' -f4) && [ -n "$ORIGIN" ] && break; sleep 0.1; done
# (Each listener speaks from an address of its own, 250 to a /24 network (bench/swarm.rs): the
# tracker's per-network cap, 4 by default, is lifted; its per-address limits apply as usual.)
TRACKER_ARGS=()
if [ "$TRACKER" = redis ]; then
  command -v redis-server >/dev/null || { echo "TRACKER=redis needs redis-server (apt-get install redis-server)" >&2; exit 1; }
  RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >/dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  TRACKER_ARGS=(--tracker "redis://127.0.0.1:$RPORT")
fi
EDGE=""
for e in $(seq "$EDGES"); do
  "$BIN" edge --upstream "$ORIGIN" --listen http://127.0.0.1:0 --tracker-per-network 1000 "${TRACKER_ARGS[@]}" \
    --cache-dir "$WORK/edge$e" --log-level info --log-format json 2> "$WORK/edge$e.log" &
  PIDS+=($!)
  URL=""
  for _ in $(seq 100); do URL=$(grep -o '"url":"http://[^"]*' "$WORK/edge$e.log" 2>/dev/null | head -1 | cut -d'"' -f4) && [ -n "$URL" ] && break; sleep 0.1; done
  [ -n "$URL" ] || { echo "edge $e did not start" >&2; cat "$WORK/edge$e.log" >&2; exit 1; }
  EDGE=${EDGE:+$EDGE,}$URL
done
echo "edges: $EDGE (tracker: $TRACKER)" >&2

echo "swarm: $CLIENTS clients x $PLAYS plays, joining over ${JOIN_SPREAD}s..." >&2
MODE=fast; [ "$PLAY" = 1 ] && MODE=play
"$SWARM" "$EDGE" "$WORK/store/origin.pub" "$WORK/clients" "$TRACKS" "$CLIENTS" "$PLAYS" "$JOIN_SPREAD" "$SEED" "$MODE"
