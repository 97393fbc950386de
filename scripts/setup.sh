#!/usr/bin/env bash
# Create .venv and install CaptionDesk with its test tools.
#
#   bash scripts/setup.sh            # idempotent: a second run only checks (a second or so)
#
# torch: on Linux without an NVIDIA driver the CPU build (PyTorch's CPU wheel index; the
# default index holds the multi-GB CUDA build), with a driver the CUDA build, on macOS and
# Windows the default one; scripts/torch-build.sh makes the choice and says why.  A torch
# already in .venv (e.g. a CUDA build of your choice) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CONSTRAINTS=requirements/constraints.txt
STAMP=.venv/.captiondesk-setup
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate

# The installed set is keyed on what decides it: a later run with the same files only
# checks that the packages still import, and skips pip (slow, and noisy for editable installs).
wanted=$(cat pyproject.toml "$CONSTRAINTS" scripts/setup.sh | python -c \
    "import hashlib, os, sys; print(hashlib.sha256(sys.stdin.buffer.read() + os.getcwd().encode()).hexdigest())")
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ] \
        && python -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ['torch', 'captiondesk', 'pytest'])))" \
            >/dev/null 2>&1; then
    echo "CaptionDesk is already installed in $(pwd)/.venv (pyproject.toml and constraints unchanged)"
    exit 0
fi
rm -f "$STAMP"

python -m pip install --quiet --upgrade pip
# torch first, pinned: an unpinned torch pulled in by transformers would fetch a
# multi-GB CUDA build instead.
if ! python -c "import torch" 2>/dev/null; then
    choice=$(PYTHON=python bash scripts/torch-build.sh)
    index=$(sed -n 's/^index=//p' <<<"$choice")
    echo "torch 2.13.0: $(sed -n 's/^reason=//p' <<<"$choice")"
    # An extra index, not a replacement: pip's own configuration (a local wheel, a mirror)
    # still counts, and the CPU build's "+cpu" version wins over the default one.
    python -m pip install --quiet -c "$CONSTRAINTS" ${index:+--extra-index-url "$index"} "torch==2.13.0"
else
    echo "torch: keeping the torch $(python -c 'from importlib.metadata import version; print(version("torch"))') found in .venv"
fi
# Every other package at the version the test suite last passed with (a newer release can
# break us: bitsandbytes 0.50 did).  Refresh: scripts/refresh-constraints.sh.  The torch
# line is left out so a CUDA build installed beforehand is kept.
tested=$(mktemp)
trap 'rm -f "$tested"' EXIT
grep -v '^torch==' "$CONSTRAINTS" > "$tested"
python -m pip install --quiet -c "$tested" -e ".[test]"
echo "$wanted" > "$STAMP"
echo "CaptionDesk installed in $(pwd)/.venv"
