#!/usr/bin/env bash
# Bounded resources under a steady load: starts 3 ingester processes and a
# distributor+querier process on 127.0.99.x, pushes at a fixed rate for a while, and
# samples every ingester's RSS and WAL size every 30 s.
#
#   scripts/soak.sh [seconds=600] [spans/s=20000] [extra ringtail flags...]
#
# Figures go to BENCHMARKS.md with the command that produced them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/ringtail"
[ -x "$bin" ] || cargo build --release --manifest-path "$repo/Cargo.toml"
secs=${1:-600}; rate=${2:-20000}; shift 2 || true
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; sleep 1; kill -9 "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
start_cluster 127.0.99 "$work" "$@"
"$bin" bench --endpoint http://127.0.99.100:4317 --rate "$rate" --duration-secs "$secs" --concurrency 4 \
  --batch-spans 500 > "$work/bench.log" 2>&1 &
bench=$!
printf "%6s  %s\n" "t (s)" "RSS MB / WAL MB per ingester (1, 2, 3); blocks in store"
t0=$(date +%s)
while kill -0 $bench 2>/dev/null; do
  line=""
  for i in 1 2 3; do
    pid=${pids[$((i-1))]}
    rss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$pid/status)
    wal=$( (du -sm "$work/ingester-$i/wal" "$work/ingester-$i/wal-segments" 2>/dev/null || true) | awk '{s+=$1} END {print s+0}')
    line="$line  $rss/$wal"
  done
  blocks=$( (find "$work/blocks" -name meta.json 2>/dev/null || true) | wc -l)
  printf "%6d %s;  %d blocks\n" $(( $(date +%s) - t0 )) "$line" "$blocks"
  sleep 30
done
grep -E "^result|^errors" "$work/bench.log"
