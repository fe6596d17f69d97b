#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, from the committed seeds and the
# corpus grown so far, and prints per target its executions and the corpus size.
# Usage: fuzz/run.sh [SECONDS] [TARGET…]. Needs cargo-fuzz (cargo install --locked cargo-fuzz).
# A crash stops the run with the input saved under fuzz/artifacts/TARGET/; make it a
# regression test (docs/security.md) before fixing it.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1
# Beside the main build's target directory when one is set (CI keeps it between runs).
if [ -n "${CARGO_TARGET_DIR:-}" ]; then export CARGO_TARGET_DIR="$CARGO_TARGET_DIR-fuzz"; fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(cargo fuzz list)
# Every target (feature net: the decoders outside chorus-core too).
cargo fuzz build -O --features net
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  log="$(mktemp)"
  if ! cargo fuzz run -O --features net "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    cat "$log" >&2
    echo "fuzz target $t failed: see fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  printf '%-14s %10s executions in %ss, corpus %s inputs, no crash\n' "$t" "$runs" "$SECONDS_EACH" "$(ls "corpus/$t" | wc -l)"
  rm -f "$log"
done
