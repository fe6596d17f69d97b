# Sourced by the serving benchmarks (bench/edge_vs_nginx.sh, bench/http3_ab.sh): the catalogue
# they serve, CHUNKS media chunks of exactly 128 KiB of random bytes (plus an init chunk), made
# as an HLS package and ingested as track `bench`, rendition `r128`, into STORE.
#
#   make_catalogue BIN WORK STORE CHUNKS
make_catalogue() {
  local bin=$1 work=$2 store=$3 chunks=$4
  local pkg=$work/r128  # the directory name becomes the rendition id
  mkdir -p "$pkg"
  { printf 'ftypmp4a'; head -c 1016 /dev/urandom; } > "$pkg/init.mp4"
  {
    echo '#EXTM3U'; echo '#EXT-X-VERSION:7'; echo '#EXT-X-TARGETDURATION:6'; echo '#EXT-X-MAP:URI="init.mp4"'
    for i in $(seq 0 $((chunks - 1))); do
      head -c 131072 /dev/urandom > "$pkg/seg$i.m4s"
      echo '#EXTINF:6.0,'; echo "seg$i.m4s"
    done
    echo '#EXT-X-ENDLIST'
  } > "$pkg/bench.m3u8"
  "$bin" ingest --store "$store" --track bench "$pkg/bench.m3u8" >/dev/null
}
