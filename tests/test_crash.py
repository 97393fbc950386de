"""kill -9 in the middle of a scan, repeatedly: the library stays intact and a rescan is right."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage

from core.library import Library

N_FILES = 5000


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    for i in range(N_FILES):
        sub = folder / f"d{i // 500}"
        sub.mkdir(exist_ok=True)
        PILImage.new("RGB", (8, 8), (i % 256, (i // 256) % 256, 7)).save(sub / f"{i}.png")
    return folder


def _count_images(db_path: Path) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM images").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_during_scan_repeatedly(tmp_path: Path, many_photos: Path) -> None:
    db_path = tmp_path / "crash.db"
    with Library(db_path) as library:
        library.add_root(many_photos)
    env = {**os.environ, "CAPTIONDESK_LIBRARY": str(db_path), "PYTHONUNBUFFERED": "1"}
    kills = 0
    rng = random.Random(1234)
    for _attempt in range(8):
        before = _count_images(db_path)
        process = subprocess.Popen(
            [sys.executable, "-m", "captiondesk", "scan"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait until this run has committed a batch, then kill it a random moment later:
        # mid-probe, mid-transaction or mid-commit.
        deadline = time.monotonic() + 60
        while process.poll() is None and _count_images(db_path) <= before and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.06))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(30)
        with Library(db_path) as library:
            assert library.db.integrity_check() == ["ok"]
    assert kills >= 3, "the scan finished too fast to be interrupted; raise N_FILES"

    with Library(db_path) as library:
        stats = library.scan()
        assert not stats.cancelled
        (row,) = library.status()
        assert (row.images, row.missing, row.errors) == (N_FILES, 0, 0)
        assert library.db.integrity_check() == ["ok"]
        # Jobs killed mid-run were found "running" on open and marked interrupted.
        assert {job.state for job in library.jobs("scan")[:-1]} <= {"interrupted", "done"}
