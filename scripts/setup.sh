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
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e ".[test]"
echo "CaptionDesk installed in $(pwd)/.venv"
