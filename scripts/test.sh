#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every check.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== python test client (OpenTelemetry SDK from PyPI)"
./scripts/setup-python.sh

echo "== cargo fmt"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --release --all-targets -- -D warnings

echo "== cargo test (unit + end-to-end with real processes)"
# Two at a time: each end-to-end test runs a cluster of processes and a load on 2 cores.
cargo test --release -- --test-threads=2

echo "== smoke: ringtail local (the README's first command)"
./scripts/smoke-local.sh target/release/ringtail

echo "== helm chart: lint, render, Kubernetes schemas, invariants"
./scripts/test-helm.sh

echo "== docker compose cluster under faults (image built without pulling)"
./scripts/test-compose.sh

echo "== all checks passed"
