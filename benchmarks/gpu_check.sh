#!/usr/bin/env bash
# GPU check for a machine with one CUDA GPU: images/s and peak memory for BLIP-base and
# Florence-2-base-, SmolVLM-256M- and Qwen2-VL-2B-shaped random-weight models (naive loop,
# engine at batch 1 and the best batch), then 50 QLoRA steps of the SmolVLM-shaped model.
# Planned to finish in under 8 minutes on one H100 (see benchmarks/gpu_check.py).
#   benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   benchmarks/gpu_check.sh --tiny     # the same code on tiny models on the CPU, in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ "${PYTHON}" = python ]; then PYTHON=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 PYTHONPATH="${PWD}${PYTHONPATH:+:${PYTHONPATH}}"
if [ "${1:-}" != "--tiny" ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec timeout 480 "${PYTHON}" benchmarks/gpu_check.py "$@"
