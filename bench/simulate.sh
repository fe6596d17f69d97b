#!/usr/bin/env bash
# The planner's simulation (`chorus simulate`, crate chorus-sim) at the scale of the issue and
# beside the real swarm benchmark:
#
#   bench/simulate.sh calibrate   # the swarm benchmark's size (bench/swarm.sh defaults), 6 seeds
#   bench/simulate.sh netns       # tests/netns.rs's swarm (two seeders, ten listeners at once), 6 seeds
#   bench/simulate.sh headline    # 100 000 listeners, 100 000 tracks, 20 simulated minutes
#   bench/simulate.sh sweeps      # 20 000 listeners: edges, uplink mix, listeners per track
#   bench/simulate.sh warm        # 20 000 listeners: warm caches of 0 to 2 000 tracks, then
#                                 # 500-track caches over catalogues of 2 000 to 200 000 tracks
#   bench/simulate.sh speed       # the simulator's own speed: wall time, CPU and peak memory of
#                                 # one run at 20 000 and one at 100 000 listeners (no preloads),
#                                 # on one thread and on every core;
#                                 # BASE=<rev> also builds that revision (in a worktree of its
#                                 # own, target/sim-base) and runs it first, for a before/after
#
# Each prints `chorus simulate`'s table; `headline` and `sweeps` also write JSON and SVG charts
# into OUT (default: a new directory under /tmp). Release build. PRELOAD=on lets listeners
# preload their next track (the simulator's default); by default this script passes
# --no-preload, as the figures in docs/BENCHMARKS.md that it reproduces were made before
# preloading was simulated.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-calibrate}
OUT=${OUT:-$(mktemp -d /tmp/chorus-sim.XXXXXX)}
cargo build --release -q --bin chorus
SIM="${CHORUS:-target/release/chorus} simulate"
[ "${PRELOAD:-off}" = on ] || SIM="$SIM --no-preload"
echo "output in $OUT" >&2

case "$MODE" in
  calibrate)
    # bench/swarm.sh's defaults: 20 clients x 8 plays joining over 20 s, 30 tracks of 30
    # segments of 72 000 bytes (96 kbit/s, one rendition), fast mode, 20-80 ms round trips to
    # the edge and the same to a peer (its relay), loopback rates, the per-network cap lifted.
    for seed in 1 2 3 4 5 6; do
      $SIM --listeners 20 --plays 8 --arrive-minutes 0.3333 --tracks 30 --segments 30-30 \
        --ladder-kbps 96 --quality 0 --fast --rtt-ms 20-80 --core-rtt-ms 0 \
        --uplink-kbps 1000000-1000000 --downlink-kbps 1000000-1000000 --mobile 0 \
        --minutes 30 --listeners-per-network 1 --per-network 1000 --seed "$seed" 2>/dev/null | tail -n 1
    done
    ;;
  netns)
    # tests/netns.rs's swarm: two listeners who keep their app open with the track (home 1's
    # seeder, and home 2's first listener after its play), then ten who fetch it at once
    # through two edges sharing one tracker; tides at "normal" (4 segments of 6 s, 96 kbit/s),
    # fast mode, homes 10 to 25 ms from the core each way and edges 2 ms (round trips to an
    # edge 24 to 54 ms; between two homes their sum less 8 ms, which --core-rtt-ms 31 gives on
    # average), loopback rates, three listeners a home.
    for seed in 1 2 3 4 5 6; do
      $SIM --listeners 12 --seeders 2 --plays 1 --arrive-minutes 0.01 --tracks 1 --segments 4-4 \
        --ladder-kbps 24,96 --quality 1 --fast --rtt-ms 24-54 --core-rtt-ms 31 --edges 2 \
        --uplink-kbps 1000000-1000000 --downlink-kbps 1000000-1000000 --mobile 0 \
        --minutes 2 --listeners-per-network 3 --seed "$seed" 2>/dev/null | tail -n 1
    done
    ;;
  headline)
    $SIM --json "$OUT/headline.json" --svg "$OUT/headline.svg"
    ;;
  sweeps)
    L=${LISTENERS:-20000}
    $SIM --listeners "$L" --tracks 20000 --sweep edges=1,2,4 --tracker per-edge --json "$OUT/edges-per-edge.json" --svg "$OUT/edges-per-edge.svg"
    $SIM --listeners "$L" --tracks 20000 --sweep edges=1,2,4 --json "$OUT/edges-shared.json" --svg "$OUT/edges-shared.svg"
    $SIM --listeners "$L" --tracks 20000 --sweep mobile=0,0.3,0.7,1 --json "$OUT/mobile.json" --svg "$OUT/mobile.svg"
    $SIM --listeners "$L" --sweep tracks=2000,20000,200000 --json "$OUT/tracks.json" --svg "$OUT/tracks.svg"
    ;;
  warm)
    L=${LISTENERS:-20000}
    $SIM --listeners "$L" --tracks 20000 --sweep warm-tracks=0,100,500,2000 --json "$OUT/warm.json" --svg "$OUT/warm.svg"
    $SIM --listeners "$L" --warm-tracks 500 --sweep tracks=2000,20000,200000 --json "$OUT/warm-tracks.json" --svg "$OUT/warm-tracks.svg"
    ;;
  speed)
    command -v /usr/bin/time >/dev/null || { echo "needs GNU time: apt-get install -y time" >&2; exit 2; }
    BINS=()
    if [ -n "${BASE:-}" ]; then
      WT=target/sim-base/tree
      rm -rf "$WT" && git worktree prune && git worktree add -q --detach "$WT" "$BASE"
      (cd "$WT" && CARGO_TARGET_DIR="$PWD/../build" cargo build --release -q --bin chorus)
      BINS+=("target/sim-base/build/release/chorus")
    fi
    BINS+=("target/release/chorus")
    for L in 20000 100000; do
      for B in "${BINS[@]}"; do
        # On one thread and on every core, where the build has --threads (the same figures).
        THREADS=("")
        if "$B" simulate --help | grep -q -- --threads; then THREADS=(1 "$(nproc)"); fi
        for T in "${THREADS[@]}"; do
          /usr/bin/time -f "$B, $L listeners, ${T:-1} thread(s): %e s wall, %U s CPU, %M KB peak" \
            "$B" simulate --listeners "$L" --tracks 100000 --no-preload ${T:+--threads "$T"} 2>&1 | tail -n 2
        done
      done
    done
    [ -z "${BASE:-}" ] || git worktree remove --force "$WT"
    ;;
  *)
    echo "usage: bench/simulate.sh calibrate|netns|headline|sweeps|warm|speed" >&2
    exit 2
    ;;
esac
