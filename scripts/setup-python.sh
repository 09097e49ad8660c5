#!/usr/bin/env bash
# Create (or reuse) the repo-local Python venv at $REPO/.venv and install a requirements
# file into it: tests/python/requirements.txt by default, or the file given as the first
# argument (e.g. tests/helm/requirements.txt). Idempotent: the install is skipped when the
# venv was already set up from an identical file (its sha256 is stored in
# .venv/.<file path with / as _>.sha). Prints the venv's python path at the end.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REL="${1:-tests/python/requirements.txt}"
REQ="$REPO/$REL"
STAMP="$VENV/.${REL//\//_}.sha"
PY="$VENV/bin/python"

if [[ ! -f "$REQ" ]]; then
    echo "setup-python: missing $REQ" >&2
    exit 1
fi

# A venv whose interpreter no longer runs (e.g. the base python moved) is rebuilt.
if [[ -d "$VENV" ]] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    echo "setup-python: $VENV is broken; recreating it" >&2
    rm -rf "$VENV"
fi

if [[ ! -x "$PY" ]]; then
    echo "setup-python: creating venv at $VENV" >&2
    python3 -m venv "$VENV"
fi

want_sha="$(sha256sum "$REQ" | cut -d' ' -f1)"
have_sha="$(cat "$STAMP" 2>/dev/null || true)"

if [[ "$want_sha" == "$have_sha" ]]; then
    echo "setup-python: requirements unchanged; skipping install" >&2
else
    # Drop the stamp first so an interrupted install is retried next time.
    rm -f "$STAMP"
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    echo "$want_sha" > "$STAMP"
    echo "setup-python: installed $REQ" >&2
fi

echo "$PY"
