#!/usr/bin/env bash
# Create .venv and install CaptionDesk with its test tools (CPU build of torch).
#
#   bash scripts/setup.sh            # idempotent: a second run only checks
#
# For a CUDA build of torch, install it into .venv first (see README), then run this.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first, pinned: on the dev/CI machines 2.13.0 is a local CPU wheel; an unpinned
# torch pulled in by transformers would fetch a multi-GB CUDA build instead.
CONSTRAINTS=requirements/constraints.txt
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install --quiet -c "$CONSTRAINTS" "torch==2.13.0"
fi
# Every other package at the version the test suite last passed with (a newer release can
# break us: bitsandbytes 0.50 did).  Refresh: scripts/refresh-constraints.sh.  The torch
# line is left out so a CUDA build installed beforehand is kept.
tested=$(mktemp)
trap 'rm -f "$tested"' EXIT
grep -v '^torch==' "$CONSTRAINTS" > "$tested"
python -m pip install --quiet -c "$tested" -e ".[test]"
echo "CaptionDesk installed in $(pwd)/.venv"
