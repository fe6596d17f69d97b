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
# next track's first 15 s when 30 s remain). Run from anywhere:  bench/swarm.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TRACKS=${TRACKS:-30}; SEGMENTS=${SEGMENTS:-30}; CLIENTS=${CLIENTS:-20}; PLAYS=${PLAYS:-8}
JOIN_SPREAD=${JOIN_SPREAD:-20}; SEED=${SEED:-42}; PLAY=${PLAY:-0}; export UPLINK=${UPLINK:-0}
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
# (Every listener here speaks from 127.0.0.1, one network standing for many: the tracker's
# per-network cap, 4 by default, is lifted.)
"$BIN" edge --upstream "$ORIGIN" --listen http://127.0.0.1:0 --tracker-per-network 1000 --cache-dir "$WORK/edge" --log-level info --log-format json 2> "$WORK/edge.log" &
PIDS+=($!)
for _ in $(seq 100); do EDGE=$(grep -o '"url":"http://[^"]*' "$WORK/edge.log" 2>/dev/null | head -1 | cut -d'"' -f4) && [ -n "$EDGE" ] && break; sleep 0.1; done
[ -n "${EDGE:-}" ] || { echo "edge did not start" >&2; cat "$WORK/edge.log" >&2; exit 1; }

echo "swarm: $CLIENTS clients x $PLAYS plays, joining over ${JOIN_SPREAD}s..." >&2
MODE=fast; [ "$PLAY" = 1 ] && MODE=play
"$SWARM" "$EDGE" "$WORK/store/origin.pub" "$WORK/clients" "$TRACKS" "$CLIENTS" "$PLAYS" "$JOIN_SPREAD" "$SEED" "$MODE"
