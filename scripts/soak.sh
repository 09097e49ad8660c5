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
seeds=127.0.99.1:7946,127.0.99.2:7946,127.0.99.3:7946
start() { # name host target [extra flags...]
  ip=127.0.99.$2
  RUST_LOG=warn "$bin" --target="$3" --node-name="$1" --data-dir="$work/$1" --http-listen=$ip:3200 \
    --grpc-listen=$ip:9095 --otlp-grpc-listen=$ip:4317 --otlp-http-listen=$ip:4318 \
    --gossip-listen=$ip:7946 --gossip-join=$seeds --storage-path="$work/blocks" "${@:4}" > "$work/$1.log" 2>&1 &
  pids+=($!)
}
for i in 1 2 3; do start ingester-$i $i ingester "$@"; done
start front 100 distributor,querier "$@"
for _ in $(seq 1 150); do
  curl -fsS -H 'Accept: application/json' http://127.0.99.100:3200/ring 2>/dev/null | grep -q '"write_ring_ingesters":\["ingester-1","ingester-2","ingester-3"\]' && break
  sleep 0.2
done
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
