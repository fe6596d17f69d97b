#!/usr/bin/env bash
# How long an edge takes to start on a disk cache of FILES chunk files: the index is rebuilt
# from the directory (one readdir + stat per file) before the listeners open.
#
#   bench/edge_restart.sh            # FILES=1000000
#
# Fills a scratch cache directory with FILES one-byte files named like chunks (the scan reads
# names and sizes; contents are verified on first read, not at start), then starts
# `chorus edge` twice: once after dropping the page cache (cold; needs root, else skipped) and
# once warm (and once on an empty cache, for comparison), and reports the seconds until it
# logs its listener, and its resident memory 3 s later (the index is most of it). Needs python3, about 4 KiB of
# disk and one inode per file. Knobs (environment): FILES (1000000), DIR (a new directory under
# /var/tmp, removed after).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-1000000}
DIR=${DIR:-$(mktemp -d /var/tmp/chorus-restart.XXXXXX)}
trap 'rm -rf "$DIR"' EXIT
cargo build --release -q --bin chorus
BIN=$PWD/target/release/chorus

echo "creating $FILES chunk files in $DIR..." >&2
python3 - "$DIR" "$FILES" <<'PY'
import os, random, sys
root, n = os.path.join(sys.argv[1], "chunks"), int(sys.argv[2])
rng = random.Random(1)
for i in range(256):
    os.makedirs(f"{root}/{i:02x}", exist_ok=True)
for _ in range(n):
    h = "%064x" % rng.getrandbits(256)
    with open(f"{root}/{h[:2]}/{h}", "wb") as f:
        f.write(b"x")
PY

# start_time LABEL CACHE_DIR → seconds from exec until the edge logs "listening", and its
# resident memory 3 s later
start_time() {
  local t0 line
  t0=$(date +%s.%N)
  coproc EDGE { exec "$BIN" edge --upstream http://127.0.0.1:9 --listen http://127.0.0.1:0 \
    --cache-dir "$2" --cache-disk-size 1TiB --log-format json 2>&1; }
  while read -r line <&"${EDGE[0]}"; do
    case "$line" in *'"listening"'*) break ;; esac
  done
  local t1 rss; t1=$(date +%s.%N)
  sleep 3  # the scan's scratch memory is returned to the system within moments
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$EDGE_PID/status")
  awk -v a="$t0" -v b="$t1" -v what="$1" -v rss="$rss" \
    'BEGIN { printf "%s: listening after %.2f s, resident memory 3 s later %.0f MiB\n", what, b - a, rss / 1024 }'
  kill "$EDGE_PID"; wait "$EDGE_PID" 2>/dev/null || true
}

mkdir -p "$DIR/empty"
start_time "empty cache" "$DIR/empty"
sync
if [ "$(id -u)" -eq 0 ] && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
  start_time "cold (page cache dropped), $FILES files" "$DIR"
else
  echo "not root: cannot drop the page cache; cold start skipped" >&2
fi
start_time "warm, $FILES files" "$DIR"
