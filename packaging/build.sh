#!/usr/bin/env bash
# Build the one-folder CaptionDesk application for this platform into dist/CaptionDesk/.
#
#   packaging/build.sh            # uses the active virtualenv, else ./.venv
#   PYTHON=/path/to/python packaging/build.sh
#   CAPTIONDESK_TRANSFORMERS_MODELS=captioning packaging/build.sh   # smaller (see README)
#
# The bundle contains whatever torch the build environment has: the CPU wheel by default
# (see packaging/README.md for a CUDA build).  Extra arguments go to PyInstaller.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON="$VIRTUAL_ENV/bin/python"
    elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
    else PYTHON=python3; fi
fi

"$PYTHON" -c "import PyInstaller" 2>/dev/null || {
    echo "PyInstaller is not installed: $PYTHON -m pip install 'pyinstaller>=6.11'" >&2; exit 2; }
# core.__version__ comes from the installed captiondesk metadata (pyproject.toml).
"$PYTHON" -c "import importlib.metadata as m; m.version('captiondesk')" 2>/dev/null || {
    echo "captiondesk is not installed in this environment: $PYTHON -m pip install -e ." >&2; exit 2; }
"$PYTHON" - <<'PY'
import torch
print(f"building with torch {torch.__version__} (CUDA: {torch.version.cuda or 'none, CPU build'})")
PY

# PYI_CLEAN=0 reuses PyInstaller's cache in build/pyinstaller (faster rebuilds).
clean=(--clean); [[ "${PYI_CLEAN:-1}" == 0 ]] && clean=()
"$PYTHON" -m PyInstaller --noconfirm "${clean[@]}" --log-level "${PYI_LOG_LEVEL:-WARN}" \
    --distpath dist --workpath build/pyinstaller packaging/captiondesk.spec "$@"

echo "built: $ROOT/dist/CaptionDesk ($(du -sh dist/CaptionDesk | cut -f1))"
