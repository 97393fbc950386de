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
    # Each run is killed a random moment after it committed a batch: mid-probe,
    # mid-transaction or mid-commit.
    counts = [0]

    def committed_more() -> bool:
        return _count_images(db_path) > counts[0]

    def before_each_run() -> None:
        counts[0] = _count_images(db_path)

    kills = _kill_repeatedly(["scan"], db_path, committed_more, 8, 1234, before_each_run)
    assert kills >= 3, "the scan finished too fast to be interrupted; raise N_FILES"

    with Library(db_path) as library:
        stats = library.scan()
        assert not stats.cancelled
        (row,) = library.status()
        assert (row.images, row.missing, row.errors) == (N_FILES, 0, 0)
        assert library.db.integrity_check() == ["ok"]
        # Jobs killed mid-run were found "running" on open and marked interrupted.
        assert {job.state for job in library.jobs("scan")[:-1]} <= {"interrupted", "done"}


def _kill_repeatedly(argv: list[str], db_path: Path, progressed, attempts: int, seed: int,
                     before_each_run=lambda: None) -> int:
    """Run ``captiondesk ARGV`` and SIGKILL it a random moment after *progressed()* turns
    true, *attempts* times; the library must pass its integrity check after every kill."""
    env = {**os.environ, "CAPTIONDESK_LIBRARY": str(db_path), "PYTHONUNBUFFERED": "1"}
    rng = random.Random(seed)
    kills = 0
    for _attempt in range(attempts):
        before_each_run()
        process = subprocess.Popen([sys.executable, "-m", "captiondesk", *argv], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while process.poll() is None and not progressed() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(30)
        with Library(db_path) as library:
            assert library.db.integrity_check() == ["ok"]
    return kills


def _count(db_path: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_during_import_keeps_what_it_committed_and_a_rerun_completes(
    tmp_path: Path, many_photos: Path
) -> None:
    """Killed imports leave an intact library; running the import again adds each caption once."""
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(many_photos, photos)
    for image in photos.rglob("*.png"):
        image.with_suffix(".txt").write_text(f"a square number {image.stem}", encoding="utf-8")
    db_path = tmp_path / "import.db"
    with Library(db_path) as library:
        library.add_root(photos)
        library.scan()
    start = _count(db_path, "SELECT count(*) FROM captions")
    kills = _kill_repeatedly(["import", "sidecar", str(photos), "--verified"], db_path,
                             lambda: _count(db_path, "SELECT count(*) FROM captions") > start, 5, 99)
    assert kills >= 2, "the import finished too fast to be interrupted"
    env = {**os.environ, "CAPTIONDESK_LIBRARY": str(db_path)}
    subprocess.run([sys.executable, "-m", "captiondesk", "import", "sidecar", str(photos), "--verified"],
                   env=env, check=True, capture_output=True, timeout=300)
    assert _count(db_path, "SELECT count(*) FROM captions") == N_FILES  # each caption once
    assert _count(db_path, "SELECT count(*) FROM captions WHERE is_current = 1 AND source = 'human'") == N_FILES


@pytest.mark.slow
def test_kill_during_write_metadata_never_damages_a_photo(tmp_path: Path) -> None:
    """Each photo is the old file or the new one, never half-written; pixels never change."""
    import numpy as np
    from sqlalchemy import text

    from core import captions
    from core.metadata import read_caption

    photos = tmp_path / "photos"
    photos.mkdir()
    pixels: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(5)
    for i in range(400):
        path = photos / f"p{i:03}.jpg"
        PILImage.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), "RGB").save(path, quality=90)
        with PILImage.open(path) as im:
            pixels[path.name] = np.asarray(im.convert("RGB")).copy()
    db_path = tmp_path / "meta.db"
    with Library(db_path) as library:
        library.add_root(photos)
        library.scan()
        with library.db.write() as session:
            for image_id, rel_path in session.execute(text("SELECT id, rel_path FROM images")):
                captions.set_human_caption(session, image_id, f"caption of {rel_path}")

    def written() -> bool:
        return any(read_caption(photos / name) for name in ("p000.jpg", "p001.jpg", "p002.jpg"))

    kills = _kill_repeatedly(["write-metadata"], db_path, written, 4, 7)
    assert kills >= 1, "write-metadata finished too fast to be interrupted"
    for name, expected in pixels.items():  # every photo still decodes to the same pixels
        with PILImage.open(photos / name) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), expected), name
    env = {**os.environ, "CAPTIONDESK_LIBRARY": str(db_path)}
    subprocess.run([sys.executable, "-m", "captiondesk", "write-metadata"], env=env, check=True,
                   capture_output=True, timeout=300)
    # A killed writer may leave its hidden temporary file; the next run removes it.
    assert not [p for p in photos.iterdir() if p.suffix != ".jpg"], "temporary files left behind"
    for name in pixels:
        found = read_caption(photos / name)
        assert found is not None and found.text == f"caption of {name}", name
