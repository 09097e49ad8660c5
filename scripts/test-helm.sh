#!/usr/bin/env bash
# Checks the Helm chart (charts/ringtail) with no helm binary and no cluster: lint,
# render, Kubernetes schema validation and the chart's invariants (tests/helm/check_chart.py).
# Installs tests/helm/requirements.txt into the repo venv first. Extra arguments go to
# check_chart.py (e.g. --no-mutations). Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="$(./scripts/setup-python.sh tests/helm/requirements.txt)"
exec "$PY" tests/helm/check_chart.py "$@"
