#!/usr/bin/env bash
# Does CaptionDesk still pass its tests with the *newest* releases of its dependencies?
# Installs without requirements/constraints.txt into a throwaway venv and runs pytest, so
# the next breaking release (like bitsandbytes 0.50's CPU 4-bit kernel) is seen here
# before users see it.  Run it before refreshing the constraints, and e.g. weekly in CI.
#
#   bash scripts/check-newest.sh                          # whole suite
#   bash scripts/check-newest.sh tests/core/training/test_training.py   # a subset (any pytest args)
#   KEEP=1 bash scripts/check-newest.sh ...               # keep the venv (path printed)
#   NEWEST_TORCH=1 bash scripts/check-newest.sh ...       # newest torch too (big download)
#
# Exit status: pytest's.  The versions that differ from the constraints are printed first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=$(mktemp -d "${TMPDIR:-/tmp}/captiondesk-newest.XXXXXX")
if [ -z "${KEEP:-}" ]; then
    trap 'rm -rf "$VENV"' EXIT
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
pin="$VENV/torch-pin.txt"
if [ -n "${NEWEST_TORCH:-}" ]; then
    : > "$pin"
else
    # torch stays on the README's pin (an unpinned one is a multi-GB CUDA download), also
    # through the eager upgrade below, which would otherwise replace it.
    grep '^torch==' requirements/constraints.txt > "$pin"
fi
# Only that pin as a constraint: the newest releases the pyproject.toml ranges allow.
"$VENV/bin/python" -m pip install --quiet -c "$pin" torch
"$VENV/bin/python" -m pip install --quiet -c "$pin" --upgrade --upgrade-strategy eager -e ".[test]"

echo "== versions that differ from requirements/constraints.txt =="
"$VENV/bin/python" -m pip freeze --exclude-editable | grep -v '^#' | sed -E 's/^(torch==[^+]+)\+.*/\1/' \
    | LC_ALL=C sort | LC_ALL=C comm -13 <(grep -v '^#' requirements/constraints.txt | LC_ALL=C sort) - || true
echo "== pytest ${*:-(whole suite)} =="
status=0
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
[ -n "${KEEP:-}" ] && echo "venv kept at $VENV (bash scripts/refresh-constraints.sh $VENV)"
exit $status
