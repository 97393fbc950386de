"""benchmarks/gpu_check.sh stays runnable where no GPU is lent: its --tiny mode on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT


def test_gpu_check_script_runs_in_tiny_mode(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], check=False).returncode == 0
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks import gpu_check
    finally:
        sys.path.remove(str(REPO))
    # One model and the LoRA run: the same code paths as the GPU run, on the tiny SmolVLM.
    assert gpu_check.main(["--tiny", "--models", "smolvlm-256m", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "smolvlm-256m     naive loop fp32" in out
    assert "engine batch 1" in out and "engine batch 2" in out and "best batch" in out
    assert "2 steps, batch 2" in out and "s/step" in out
