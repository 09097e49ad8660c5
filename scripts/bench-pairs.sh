#!/usr/bin/env bash
# Compares this checkout with a base revision on the cluster shape of bench-cluster.sh. On a
# shared machine one build's runs vary more than most changes move them, so only runs taken
# side by side compare: the two builds alternate in ABBA order (neither always runs second,
# after the other's disk writes and page cache), and the summary gives each build's median.
#
#   scripts/bench-pairs.sh <base rev> <pairs> [bench-cluster args...]
#   e.g. scripts/bench-pairs.sh 09bb3c1 3 --concurrency 16 --duration-secs 60
#
# The base is checked out and built in a worktree ($BASE_DIR, default
# /tmp/ringtail-base-<rev>), starting from a copy of this checkout's release build so that
# only ringtail itself recompiles; it is removed at the end unless KEEP_BASE=1 (or BASE_DIR
# named an existing folder, which is left as it was). Each run's lines are printed as they
# come; figures go to BENCHMARKS.md with this command.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
rev=$(git -C "$repo" rev-parse --short "$1")
pairs=$2
shift 2
base=${BASE_DIR:-/tmp/ringtail-base-$rev}
if [ -d "$base" ]; then
  KEEP_BASE=1
else
  git -C "$repo" worktree add --detach "$base" "$rev" > /dev/null
  mkdir -p "$base/target"
  [ -d "$repo/target/release" ] && cp -r "$repo/target/release" "$base/target/"
fi
cleanup() {
  [ "${KEEP_BASE:-0}" = 1 ] || git -C "$repo" worktree remove --force "$base"
}
trap cleanup EXIT
for dir in "$base" "$repo"; do
  cargo build --release --manifest-path "$dir/Cargo.toml" 2>&1 | tail -1
done
results=$(mktemp)
trap 'rm -f "$results"; cleanup' EXIT

# run <label> <checkout> [args...]: one bench-cluster run; appends "label cpu spans/s" to
# $results and prints the run's summary lines.
run() {
  local label=$1 dir=$2 out cpu rate
  shift 2
  echo "== $label $(date +%T)"
  out=$("$dir/scripts/bench-cluster.sh" "$@" 2>&1) || { echo "$out" | tail -20; exit 1; }
  echo "$out" | grep -E '^result|^  (ingester-1|front|all) '
  cpu=$(echo "$out" | sed -n 's/^  all .* = \([0-9.]*\) CPU-seconds per million spans/\1/p')
  rate=$(echo "$out" | sed -n 's/^result: .* in [0-9.]*s: \([0-9]*\) spans\/s.*/\1/p')
  echo "$label $cpu $rate" >> "$results"
}

for i in $(seq 1 "$pairs"); do
  if [ $((i % 2)) = 1 ]; then order="base this"; else order="this base"; fi
  for side in $order; do
    if [ "$side" = base ]; then run "base($rev)" "$base" "$@"; else run this "$repo" "$@"; fi
  done
done

echo "== medians over $pairs pairs (CPU-seconds per million spans, all processes; acked spans/s)"
for label in "base($rev)" this; do
  awk -v l="$label" 'BEGIN { n = 0 } $1 == l { c[n] = $2; r[n] = $3; n++ }
    function median(a, n,   i, j, t) {
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2
    }
    END { printf "  %-16s %.2f CPU-s per million, %d spans/s (%d runs)\n", l, median(c, n), median(r, n), n }' "$results"
done
