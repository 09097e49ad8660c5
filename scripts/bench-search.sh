#!/usr/bin/env bash
# Search latency and CPU per query on `ringtail local` after a steady load:
# `ringtail bench` at RATE spans/s for LOAD_SECS, plus the Python search dataset (so that
# the selective queries have hits), then each query RUNS times, one at a time.
# Prints p50/p99/max latency and CPU-seconds per query (the ringtail process: 3
# ingesters, distributor, querier), for the ingesters' recent data (no start/end) and for
# a start/end range covering the load (the store's blocks too, once flushed).
#
#   scripts/bench-search.sh                 RATE=20000 LOAD_SECS=300 RUNS=20 by default
#   SPREAD_SECS=3600 scripts/bench-search.sh   span times spread over the hour before the load
#                                              (an hour of blocks from a shorter run)
#
# Figures go to BENCHMARKS.md with the command that produced them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/ringtail"
py="$repo/.venv/bin/python"
[ -x "$bin" ] || cargo build --release --manifest-path "$repo/Cargo.toml"
[ -x "$py" ] || "$repo/scripts/setup-python.sh"
rate=${RATE:-20000} load_secs=${LOAD_SECS:-300} runs=${RUNS:-20} spread=${SPREAD_SECS:-0}
work=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
RUST_LOG=warn "$bin" local > local.log 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  curl -fsS -H 'Accept: application/json' http://127.0.0.1:3200/ring 2>/dev/null |
    grep -q '"write_ring_ingesters":\["ingester-1","ingester-2","ingester-3"\]' && break
  sleep 0.2
done
kill -0 $pid 2>/dev/null || { echo "ringtail local did not start:"; cat local.log; exit 1; }
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$pid/stat"; }
start=$(( $(date +%s) - spread ))
"$bin" bench --rate "$rate" --duration-secs "$load_secs" --spread-secs "$spread" --concurrency 4 | grep -E "^(result|errors|first|recorded)"
"$py" "$repo/tests/python/search_dataset.py" --endpoint 127.0.0.1:4317 --out dataset.txt
end=$(( $(date +%s) + 60 ))
sleep 2

measure() { # name, curl args...
  local name=$1; shift
  local c0 c1
  c0=$(cpu)
  : > times.txt
  : > partial.txt
  for _ in $(seq 1 "$runs"); do
    curl -sS -D headers.txt -o body.json -w '%{time_total}\n' "$@" >> times.txt
    grep -i '^x-ringtail-partial' headers.txt >> partial.txt || true
  done
  c1=$(cpu)
  local found
  found=$( (grep -o '"traceID"\|"value"' body.json || true) | wc -l)
  [ -s partial.txt ] && echo "  partial answers: $(wc -l < partial.txt) of $runs, e.g. $(head -1 partial.txt | cut -c1-200)"
  sort -n times.txt | awk -v n="$runs" -v name="$name" -v c="$(echo "$c1 - $c0" | bc -l)" -v f="$found" '
    { t[NR] = $1 * 1000 }
    END {
      p50 = t[int((n + 1) * 0.5)]; p99 = t[(int(n * 0.99) > 0 ? int(n * 0.99) : 1)]; mx = t[n]
      printf "  %-58s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  cpu %.3f s/query  (%d results)\n", name, p50, p99, mx, c / n, f
    }'
}
q() { # label, extra curl args
  local label=$1; shift
  measure "$label" -G http://127.0.0.1:3200/api/search "$@"
}
queries() { # extra curl args (start/end)
  q "(a) {} limit 20" --data-urlencode 'q={}' -d limit=20 "$@"
  q '(b) { resource.service.name = "checkout" && duration > 200ms }' \
    --data-urlencode 'q={ resource.service.name = "checkout" && duration > 200ms }' "$@"
  q '(c) { span.http.response.status_code >= 500 }' \
    --data-urlencode 'q={ span.http.response.status_code >= 500 }' "$@"
  measure "(d) tag values resource.service.name" -G \
    http://127.0.0.1:3200/api/v2/search/tag/resource.service.name/values "$@"
}
echo "no start/end: what the ingesters hold"
queries
echo "start/end over the load: the ingesters and the store's blocks"
queries -d "start=$start" -d "end=$end"
echo "after a flush of every ingester (blocks in the store), start/end again:"
for port in 3201 3202 3203; do curl -fsS -X POST "http://127.0.0.1:$port/flush" > /dev/null; done
sleep 2
queries -d "start=$start" -d "end=$end"
# What the section reads did over every query above, in every role of the process
# (pages read and skipped, bytes fetched).
curl -fsS http://127.0.0.1:3200/metrics 2>/dev/null |
  grep -E '^ringtail_search_section_(pages_read|pages_skipped|bytes_fetched|tag_tables_read)_total' |
  sed 's/^/  /' || true
# What the blocks in the store hold (each span is in its three replicas' blocks).
metas=$(find "$work" -name meta.json -not -path '*/complete/*')
echo "$metas" | xargs cat | awk -F'[:,]' -v n="$(echo "$metas" | grep -c .)" '
  /"data_bytes"/ {d += $2} /"search_bytes"/ {s += $2} /"total_traces"/ {t += $2}
  END { printf "store: %d blocks, %d trace copies, data %.1f MB, search sections %.1f MB (%.0f%% of data)\n", n, t, d / 1e6, s / 1e6, (d ? 100 * s / d : 0) }'
# How much of a section a query reads before its pages: the header (page index, filters,
# tag table).
echo "$metas" | sed 's|meta.json$|search|' | "$py" -c '
import struct, sys
heads = []
for path in sys.stdin.read().split():
    try:
        with open(path, "rb") as f:
            prefix = f.read(9)
    except OSError:
        continue
    if len(prefix) == 9 and prefix[:4] == b"RTSS":
        heads.append(9 + struct.unpack("<I", prefix[5:9])[0])
if heads:
    heads.sort()
    print("section headers: %d, median %.1f KB, max %.1f KB" % (len(heads), heads[len(heads) // 2] / 1e3, heads[-1] / 1e3))
'
