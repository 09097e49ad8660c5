#!/usr/bin/env bash
# Measures the multi-process cluster shape under `ringtail bench`: 3 ingester processes and
# a distributor+querier process on 127.0.97.x (filesystem store, file WAL), the load tool on
# the same cores. Reports throughput and latency (from the load tool), CPU-seconds per
# million acked spans for all four processes and per role, each process's peak RSS and its
# minor page faults during the run (fresh memory the process touched).
#
#   scripts/bench-cluster.sh [bench args...]       e.g. --concurrency 16 --duration-secs 20
#   scripts/bench-cluster.sh --span-shape sdk ...   spans as SDKs send them (the issue figures)
#   CLUSTER_ARGS="--wal-store sled" scripts/bench-cluster.sh ...   (flags for every node)
#   BENCH_BIN=/other/ringtail scripts/bench-cluster.sh ...   (the load from another build, to
#                                                           compare two builds under one load)
#
# Figures go to BENCHMARKS.md with the command that produced them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/ringtail"
[ -x "$bin" ] || cargo build --release --manifest-path "$repo/Cargo.toml"
work=$(mktemp -d)
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null || true
  # Ingesters drain (flush) before they exit; give them a few seconds.
  for _ in $(seq 1 50); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.2; done
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
# shellcheck source=scripts/cluster-lib.sh
. "$repo/scripts/cluster-lib.sh"
# shellcheck disable=SC2086
start_cluster 127.0.97 "$work" ${CLUSTER_ARGS:---wal-store file}
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
faults() { awk '{print $10}' "/proc/$1/stat"; }   # minor page faults
before=(); faults_before=()
for p in "${pids[@]}"; do before+=("$(cpu "$p")"); faults_before+=("$(faults "$p")"); done
out=$("${BENCH_BIN:-$bin}" bench --endpoint http://127.0.97.100:4317 "$@" | tee /dev/stderr)
after=(); faults_after=()
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a node died during the run; logs in $work" >&2; exit 1; }
  after+=("$(cpu "$p")"); faults_after+=("$(faults "$p")")
done
spans=$(echo "$out" | sed -n 's/^result: .* requests, \([0-9]*\) acked spans.*/\1/p')
names=(ingester-1 ingester-2 ingester-3 front)
total=0
echo "cluster (3 ingester processes + distributor/querier):"
for i in 0 1 2 3; do
  used=$(awk -v a="${after[$i]}" -v b="${before[$i]}" 'BEGIN {print a - b}')
  total=$(awk -v t="$total" -v u="$used" 'BEGIN {print t + u}')
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/${pids[$i]}/status")
  f=$((faults_after[i] - faults_before[i]))
  awk -v n="${names[$i]}" -v u="$used" -v s="$spans" -v h="$hwm" -v f="$f" 'BEGIN {
    printf "  %-10s %6.1f CPU-s = %.2f CPU-s per million spans, peak RSS %.0f MB, %d minor faults\n", n, u, u / s * 1e6, h / 1024, f }'
done
awk -v t="$total" -v s="$spans" 'BEGIN {
  printf "  all        %6.1f CPU-s for %d spans = %.2f CPU-seconds per million spans\n", t, s, t / s * 1e6 }'
# Pushes a replica failed or refused while the others acked (traces with two copies, not
# three): a figure with fewer copies written is not the same work.
prefix=127.0.97
failed=$(curl -fsS "http://$prefix.100:3200/metrics" 2>/dev/null |
  awk '/^ringtail_distributor_replica_push_failures_total/ {n += $NF} END {print n + 0}')
held=0
for i in 1 2 3; do
  h=$(curl -fsS "http://$prefix.$i:3200/metrics" 2>/dev/null |
    awk '/^ringtail_ingester_pushes_held_back_total/ {n += $NF} END {print n + 0}')
  held=$((held + h))
done
echo "  replica pushes failed: $failed; pushes held back for block completions: $held"
