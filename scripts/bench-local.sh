#!/usr/bin/env bash
# Measures `ringtail local` under `ringtail bench`: throughput, latency, CPU-seconds per
# million acked spans (ringtail process only, not the load tool), RSS and WAL size.
#
#   scripts/bench-local.sh [bench args...]      e.g. --concurrency 8 --duration-secs 30
#   LOCAL_ARGS="--wal-store file" scripts/bench-local.sh ...   (options of `ringtail local`)
#
# Figures go to BENCHMARKS.md with the command that produced them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/ringtail"
[ -x "$bin" ] || cargo build --release --manifest-path "$repo/Cargo.toml"
work=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
# shellcheck disable=SC2086
RUST_LOG=warn "$bin" local ${LOCAL_ARGS:-} > local.log 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  curl -fsS -H 'Accept: application/json' http://127.0.0.1:3200/ring 2>/dev/null |
    grep -q '"write_ring_ingesters":\["ingester-1","ingester-2","ingester-3"\]' && break
  sleep 0.2
done
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$pid/stat"; }
kill -0 $pid 2>/dev/null || { echo "ringtail local did not start:"; cat local.log; exit 1; }
cpu0=$(cpu)
out=$("$bin" bench "$@" | tee /dev/stderr)
kill -0 $pid 2>/dev/null || { echo "ringtail local died during the run:"; tail -20 local.log; exit 1; }
cpu1=$(cpu)
spans=$(echo "$out" | sed -n 's/^result: .* requests, \([0-9]*\) acked spans.*/\1/p')
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
wal_kb=$(du -sk data | cut -f1)
wal_written=$(curl -fsS http://127.0.0.1:3201/metrics | awk '/^ringtail_ingester_wal_bytes_total/ {print $2}')
awk -v c0="$cpu0" -v c1="$cpu1" -v s="$spans" -v rss="$rss_kb" -v hwm="$hwm_kb" -v wal="$wal_kb" -v ww="$wal_written" 'BEGIN {
  printf "ringtail local (3 ingesters + distributor + querier, one process):\n"
  printf "  cpu: %.1f s for %d spans = %.2f CPU-seconds per million spans\n", c1 - c0, s, (c1 - c0) / s * 1e6
  printf "  rss: %.0f MB now, %.0f MB peak (the whole process: 3 ingesters, distributor, querier)\n", rss / 1024, hwm / 1024
  printf "  wal: %.0f MB on disk for 3 ingesters; records written (process-wide metric): %.0f MB; %.2fx\n", wal / 1024, ww / 1e6, wal * 1024 / ww
}'
