#!/usr/bin/env bash
# Which torch build scripts/setup.sh installs on this machine; prints three lines:
#
#   build=cpu|default          cpu: PyTorch's CPU wheel index; default: what pip finds
#   index=URL                  the extra index pip needs (empty for the default)
#   reason=TEXT                one line for the person running setup
#
# The facts come from the machine, or from the environment when set (tests set them):
#   TORCH_BUILD_OS       uname -s (Linux, Darwin, MINGW64_NT-..., ...)
#   TORCH_BUILD_NVIDIA   yes/no: an NVIDIA driver answers (nvidia-smi runs)
#   TORCH_BUILD_LOCAL    yes/no: pip's own configuration already provides the torch wheel
#                        without an index (find-links, e.g. a CI machine's local CPU wheel)
#   PYTHON               the interpreter whose pip is asked (default python3)
set -euo pipefail

TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
CPU_INDEX=https://download.pytorch.org/whl/cpu
PYTHON=${PYTHON:-python3}

os=${TORCH_BUILD_OS:-$(uname -s)}
if [ -z "${TORCH_BUILD_NVIDIA:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        TORCH_BUILD_NVIDIA=yes
    else
        TORCH_BUILD_NVIDIA=no
    fi
fi

local_torch() {
    if [ -n "${TORCH_BUILD_LOCAL:-}" ]; then
        [ "$TORCH_BUILD_LOCAL" = yes ]
        return
    fi
    # --no-index leaves only pip's find-links: a wheel that is already on this machine.
    "$PYTHON" -m pip install --dry-run --no-index --no-deps --ignore-installed --quiet "$TORCH_SPEC" >/dev/null 2>&1
}

case "$os" in
    Linux)
        if [ "$TORCH_BUILD_NVIDIA" = yes ]; then
            echo "build=default"; echo "index="
            echo "reason=NVIDIA driver found: the CUDA build from the default index"
        elif local_torch; then
            echo "build=default"; echo "index="
            echo "reason=no NVIDIA driver; pip's configuration provides the torch wheel locally"
        else
            echo "build=cpu"; echo "index=$CPU_INDEX"
            echo "reason=no NVIDIA driver (nvidia-smi does not run): the CPU build from $CPU_INDEX"
        fi
        ;;
    *)
        # macOS and Windows wheels on the default index have no CUDA payload to avoid.
        echo "build=default"; echo "index="
        echo "reason=$os: the default build"
        ;;
esac
