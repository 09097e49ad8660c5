#!/usr/bin/env bash
# Starts `ringtail local` in a scratch folder, pushes and verifies traces with the load
# tool, stops it with Ctrl-C (SIGINT) and checks it exits cleanly.
set -euo pipefail
bin=$(realpath "${1:-target/release/ringtail}")
work=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
"$bin" local > local.log 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  if curl -fsS http://127.0.0.1:3200/ready >/dev/null 2>&1 &&
     curl -fsS -H 'Accept: application/json' http://127.0.0.1:3200/ring 2>/dev/null |
       grep -q '"write_ring_ingesters":\["ingester-1","ingester-2","ingester-3"\]'; then
    break
  fi
  sleep 0.2
done
"$bin" bench --requests 50 --batch-spans 500 --verify
grep -q "Ringtail local cluster" local.log
kill -INT $pid
for _ in $(seq 1 100); do
  kill -0 $pid 2>/dev/null || break
  sleep 0.2
done
if kill -0 $pid 2>/dev/null; then echo "ringtail local did not stop on Ctrl-C"; exit 1; fi
set +e
wait $pid
code=$?
set -e
[ "$code" -eq 0 ] || { echo "ringtail local exited with $code"; cat local.log; exit 1; }
# Each ingester kept its WAL (the file store, the default) in its own data folder.
ls -d data/ingester-1/wal-segments data/ingester-2/wal-segments data/ingester-3/wal-segments >/dev/null
echo "smoke: ringtail local OK"
