#!/usr/bin/env bash
# Does the compactor keep up? The multi-process cluster of bench-cluster.sh plus one
# compactor process, under `ringtail bench` for LOAD_SECS (full speed unless RATE is
# set). Every 30 s it prints the store's level-0 (unmerged) and merged blocks and the
# compactor's backlog; after the load it waits up to DRAIN_SECS for the merges to catch
# up, then prints compaction MB/s, the compactor's CPU-seconds per million spans, stored
# bytes per span before (three level-0 copies) and after, blocks per hour before and
# after, and trace-by-ID latency for 200 acked traces before and after.
#
#   scripts/bench-compaction.sh                  LOAD_SECS=600 RATE=0 (full speed) SETTLE_MS=30000
#                                                WINDOW_SECS=3600 (compaction_window_secs)
#   LOAD_SECS=120 RATE=20000 WINDOW_SECS=60 scripts/bench-compaction.sh
#
# Figures go to BENCHMARKS.md with the command that produced them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/ringtail"
[ -x "$bin" ] || cargo build --release --manifest-path "$repo/Cargo.toml"
load_secs=${LOAD_SECS:-600} rate=${RATE:-0} settle=${SETTLE_MS:-30000} drain=${DRAIN_SECS:-300}
window=${WINDOW_SECS:-3600}
work=$(mktemp -d)
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.2; done
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
prefix=127.0.96
flags=(--wal-store file --compaction-interval-ms 5000 --compaction-settle-ms "$settle"
  --compacted-block-retention-ms 70000 --compaction-window-secs "$window")
start_cluster $prefix "$work" "${flags[@]}"
RUST_LOG=info "$bin" --target=compactor --node-name=compactor-1 --data-dir="$work/compactor-1" \
  --http-listen="$prefix.50:3200" --grpc-listen="$prefix.50:9095" --otlp-grpc-listen="$prefix.50:4317" \
  --otlp-http-listen="$prefix.50:4318" --gossip-listen="$prefix.50:7946" \
  --gossip-join="$prefix.1:7946,$prefix.2:7946,$prefix.3:7946" --storage-path="$work/blocks" \
  --cluster-secret="measurement-cluster-$prefix" "${flags[@]}" > "$work/compactor-1.log" 2>&1 &
compactor=$!
pids+=("$compactor")
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
# level-0 blocks, merged blocks, level-0 data bytes, merged data bytes: the blocks readers
# read (a block a merge replaced, marked `compacted`, waits for its deletion uncounted)
store() {
  find "$work/blocks" -name meta.json 2>/dev/null | while read -r m; do
    # (a block deleted meanwhile is skipped)
    [ -e "$(dirname "$m")/compacted" ] || cat "$m" 2>/dev/null || true
  done | awk -F'[:,]' '
    /"compaction_level"/ {l = $2 + 0} /"data_bytes"/ {d = $2 + 0}
    /^}/ { if (l == 0) {n0++; b0 += d} else {n1++; b1 += d} }
    END { printf "%d %d %.0f %.0f\n", n0, n1, b0, b1 }'
}
metric() { curl -fsS "http://$prefix.50:3200/metrics" 2>/dev/null | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }
lookup() { # p50/p99 of trace-by-ID over 200 recorded IDs
  head -200 "$work/acked.txt" | while read -r id _; do
    curl -s -o /dev/null -w '%{time_total}\n' "http://$prefix.100:3200/api/traces/$id"
  done | sort -n | awk '{t[NR] = $1 * 1000} END {printf "p50 %.1f ms, p99 %.1f ms", t[int(NR / 2)], t[int(NR * 0.99)]}'
}
c0=$(cpu "$compactor")
t0=$(date +%s)
(
  while sleep 30; do
    read -r n0 n1 b0 b1 <<< "$(store)"
    echo "[$(( $(date +%s) - t0 ))s] store: $n0 level-0 blocks ($((b0 / 1000000)) MB), $n1 merged ($((b1 / 1000000)) MB); compactor backlog $(metric ringtail_compactor_backlog_blocks) blocks, CPU $(awk -v a="$(cpu "$compactor")" -v b="$c0" 'BEGIN {print a - b}') s"
  done
) &
sampler=$!
out=$("$bin" bench --endpoint "http://$prefix.100:4317" --concurrency 16 --rate "$rate" \
  --duration-secs "$load_secs" --record "$work/acked.txt" | grep -E '^(result|errors|first|recorded)')
echo "$out"
for name in front ingester-1 ingester-2 ingester-3; do # why a push was refused, if one was
  n=$(grep -c ' WARN ' "$work/$name.log" || true)
  if [ "$n" -gt 0 ]; then
    echo "$name: $n warnings, the first: $(grep -m1 ' WARN ' "$work/$name.log" | cut -c1-400)"
  fi
done
spans=$(echo "$out" | sed -n 's/^result: .* requests, \([0-9]*\) acked spans.*/\1/p')
for ip in 1 2 3; do curl -fsS -X POST "http://$prefix.$ip:3200/flush" > /dev/null; done
echo "trace by ID at the end of the load (mostly level-0 blocks): $(lookup)"
# Wait for the merges (or DRAIN_SECS): no level-0 block left, nothing waiting, no merge
# running, twice in a row (a closed window's last merge comes after its level-0 blocks').
quiet=0
for _ in $(seq 1 $((drain / 5))); do
  read -r n0 _ _ _ <<< "$(store)"
  if [ "$n0" -eq 0 ] && [ "$(metric ringtail_compactor_backlog_blocks)" = 0 ] \
    && [ "$(metric ringtail_compactor_merges_running)" = 0 ]; then
    quiet=$((quiet + 1))
    [ "$quiet" -ge 2 ] && break
  else
    quiet=0
  fi
  sleep 5
done
kill "$sampler" 2>/dev/null || true
t1=$(date +%s)
read -r n0 n1 b0 b1 <<< "$(store)"
used=$(awk -v a="$(cpu "$compactor")" -v b="$c0" 'BEGIN {print a - b}')
read_bytes=$(metric ringtail_compactor_bytes_read_total)
written=$(metric ringtail_compactor_bytes_written_total)
echo "after $((t1 - t0)) s: $n0 level-0 blocks unmerged ($((b0 / 1000000)) MB), $n1 merged blocks ($((b1 / 1000000)) MB)"
awk -v r="$read_bytes" -v w="$written" -v u="$used" -v s="$spans" -v t="$((t1 - t0))" 'BEGIN {
  printf "compactor: read %.0f MB, wrote %.0f MB (data + sections), %.1f MB/s read over the run; %.1f CPU-s = %.2f CPU-s per million spans\n",
    r / 1e6, w / 1e6, r / 1e6 / t, u, u / s * 1e6 }'
flushed=0 flushed_blocks=0
for ip in 1 2 3; do
  m=$(curl -fsS "http://$prefix.$ip:3200/metrics")
  f=$(echo "$m" | awk '$1 == "ringtail_ingester_flushed_bytes_total" {print $2}')
  k=$(echo "$m" | awk '$1 == "ringtail_ingester_blocks_flushed_total" {print $2}')
  flushed=$(awk -v a="$flushed" -v b="${f:-0}" 'BEGIN {print a + b}')
  flushed_blocks=$(awk -v a="$flushed_blocks" -v b="${k:-0}" 'BEGIN {print a + b}')
done
awk -v f="$flushed_blocks" -v m="$n1" -v l="$n0" -v t="$load_secs" 'BEGIN {
  printf "blocks per hour of load (one tenant): %.0f flushed by the ingesters, %.0f in the store after the merges\n",
    f * 3600 / t, (m + l) * 3600 / t }'
awk -v f="$flushed" -v b="$((b0 + b1))" -v s="$spans" 'BEGIN {
  printf "stored data bytes per span: %.1f flushed by the ingesters (three copies), %.1f in the store after the merges\n", f / s, b / s }'
echo "trace by ID after the merges: $(lookup)"
echo "compactor peak RSS: $(awk '/VmHWM/ {printf "%.0f MB", $2 / 1024}' "/proc/$compactor/status")"
