#!/usr/bin/env bash
# Storage figures: flush throughput, trace-by-ID latency from live data and from blocks,
# bytes stored per span. Separate processes (3 ingesters + distributor/querier) on
# 127.0.98.x with a filesystem object store.
#
#   scripts/bench-storage.sh [requests=200] [extra ringtail flags...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/ringtail"
[ -x "$bin" ] || cargo build --release --manifest-path "$repo/Cargo.toml"
requests=${1:-200}; shift || true
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; sleep 1; kill -9 "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
start_cluster 127.0.98 "$work" --complete-block-timeout-ms=3000 --blocklist-poll-ms=1000 "$@"
q=http://127.0.98.100:3200
metric() { curl -fsS "$1/metrics" | awk -v m="$2" '$1 == m {s += $2} END {printf "%.6f", s}'; }
echo "== push $requests requests of 500 spans, then read every trace from live data"
"$bin" bench --endpoint http://127.0.98.100:4317 --requests "$requests" --batch-spans 500 \
  --concurrency 4 --record "$work/acked.txt" --verify --query-url $q | grep -E "^result|^errors|^verify"
echo "== flush everything"
t0=$(date +%s.%N)
for i in 1 2 3; do curl -fsS -X POST http://127.0.98.$i:3200/flush > /dev/null; done
t1=$(date +%s.%N)
bytes=0; secs=0
for i in 1 2 3; do
  b=$(metric http://127.0.98.$i:3200 ringtail_ingester_flushed_bytes_total)
  s=$(metric http://127.0.98.$i:3200 ringtail_ingester_flush_duration_seconds_sum)
  bytes=$(awk -v a="$bytes" -v b="$b" 'BEGIN {print a + b}'); secs=$(awk -v a="$secs" -v b="$s" 'BEGIN {print a + b}')
done
spans=$((requests * 500))
blocks=$(find "$work/blocks" -name meta.json | wc -l)
data=$(find "$work/blocks" -name data -printf '%s\n' | awk '{s += $1} END {print s}')
all=$(du -sb "$work/blocks" | cut -f1)
awk -v b="$bytes" -v s="$secs" -v w="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" -v n="$blocks" 'BEGIN {
  printf "flush: %d blocks, %.1f MB of block data uploaded in %.3f s of upload time: %.0f MB/s (POST /flush on 3 ingesters took %.2f s wall, incl. cut and encode)\n", n, b / 1e6, s, b / 1e6 / s, w }'
awk -v d="$data" -v a="$all" -v sp="$spans" 'BEGIN {
  printf "size: %.1f bytes of data per span per replica (%.1f with index, filter, meta); x3 replicas until compaction\n", d / sp / 3, a / sp / 3 }'
echo "== wait until the ingesters retired their local blocks, then read every trace from blocks only"
for _ in $(seq 1 100); do
  left=$(find "$work"/ingester-*/complete -name meta.json 2>/dev/null | wc -l)
  listed=$(metric $q ringtail_querier_blocklist_blocks)
  [ "$left" -eq 0 ] && [ "${listed%.*}" -eq "$blocks" ] && break
  sleep 0.5
done
"$bin" bench --verify-only "$work/acked.txt" --query-url $q | grep -E "^verify"
