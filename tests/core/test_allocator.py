"""CPU allocator tuning (``core.allocator``): freed tensor memory is reused, not re-faulted.

The settings are process-wide, so each case runs in a fresh Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.allocator import tuning_enabled
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT

pytestmark = pytest.mark.skipif(not tuning_enabled(), reason="allocator tuning is for glibc (Linux) only")

# Allocates and frees a 64 MB tensor-sized block ten times, touching every page as a
# tensor op would, and reports the page faults of rounds 2-10 (round 1 always faults).
FAULTS_SCRIPT = """
import json, resource, sys
sys.path.insert(0, {root!r})
from core import allocator
applied = allocator.keep_freed_memory() if {tune} else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = bytearray(64 << 20); del block
before = faults()
for _ in range(9):
    block = bytearray(64 << 20)   # zero-filled: every page is written
    del block
after = faults()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
blocks = [bytearray(32 << 20) for _ in range(8)]   # 256 MB, then freed
del blocks
kept = rss_mb()
allocator.release_free_memory()
print(json.dumps({{"applied": applied, "faults": after - before, "kept_mb": kept, "released_mb": rss_mb()}}))
"""


def _run(code: str, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **(env or {})}, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    default = _run(FAULTS_SCRIPT.format(root=str(ROOT), tune=False))
    tuned = _run(FAULTS_SCRIPT.format(root=str(ROOT), tune=True))
    assert tuned["applied"] is True
    # 9 x 64 MB in 4 kB pages is ~147k faults when every block is a fresh mapping.
    assert default["faults"] > 100_000
    assert tuned["faults"] < default["faults"] / 20
    # The tuned process keeps freed memory until asked; release_free_memory gives it back.
    assert tuned["kept_mb"] - tuned["released_mb"] > 200


def test_environment_switch_turns_the_tuning_off() -> None:
    off = _run(FAULTS_SCRIPT.format(root=str(ROOT), tune=True), env={"CAPTIONDESK_MALLOC_TUNING": "0"})
    assert off["applied"] is False
    assert off["faults"] > 100_000


@pytest.mark.slow
def test_loading_a_cpu_captioner_tunes_the_allocator(tiny_blip_dir: Path) -> None:
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from core import allocator
from core.captioning import load_captioner
before = allocator._applied
captioner = load_captioner({str(tiny_blip_dir)!r}, device="cpu")
print(json.dumps({{"before": before, "after": allocator._applied}}))
"""
    state = _run(code, env={"HF_HUB_OFFLINE": "1"})
    assert state == {"before": None, "after": True}
