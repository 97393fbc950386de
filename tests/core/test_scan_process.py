"""Scanning in a child process (the desktop app's scans) and job ownership across processes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, update

from core.jobs import Progress
from core.library import Library
from core.models import Image, Job, JobState
from core.scan_process import ScanProcessError, scan_in_subprocess
from tests.support.imagegen import write_jpeg


def _tree(folder: Path, count: int) -> Path:
    for i in range(count):
        write_jpeg(folder / f"d{i % 7}" / f"img_{i:05}.jpg", seed=i, size=(16, 12))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


@pytest.mark.slow
def test_child_scan_lands_in_the_library_with_progress(tmp_path: Path) -> None:
    photos = _tree(tmp_path / "photos", 40)
    with Library(tmp_path / "lib.db") as library:
        root = library.add_root(photos)
        reports: list[Progress] = []
        stats = scan_in_subprocess(library.path, [root.id], progress=reports.append)
        assert stats.files_seen == 41 and stats.new == 41 and not stats.cancelled
        assert reports and reports[-1].done >= 40
        with library.db.read() as session:
            assert len(session.scalars(select(Image)).all()) == 41
        # The job the child ran is recorded as done, not left running or "interrupted".
        assert [job.state for job in library.jobs("scan")] == ["done"]
        # Second run: incremental, nothing new.
        again = scan_in_subprocess(library.path, None)
        assert again.new == 0 and again.unchanged == 41


@pytest.mark.slow
def test_cancel_stops_the_child_and_keeps_what_it_committed(tmp_path: Path) -> None:
    photos = _tree(tmp_path / "photos", 3000)
    with Library(tmp_path / "lib.db") as library:
        root = library.add_root(photos)
        cancel = threading.Event()

        def on_progress(p: Progress) -> None:
            # Cancel at the first report: the child reports at its first file, then at most
            # every 0.1 s, and a warm 3000-file scan can finish inside one interval — waiting
            # for a later report made this test a race against the disk cache.
            if p.done >= 1:
                cancel.set()

        stats = scan_in_subprocess(library.path, [root.id], progress=on_progress, cancel=cancel)
        assert stats.cancelled
        with library.db.read() as session:
            landed = len(session.scalars(select(Image)).all())
        assert 0 < landed < 3001
        assert library.jobs("scan")[-1].state == "cancelled"
        finished = scan_in_subprocess(library.path, [root.id])
        assert finished.new == 3001 - landed and not finished.cancelled


def test_errors_in_the_child_are_one_clear_exception(tmp_path: Path) -> None:
    not_a_library = tmp_path / "notes.db"
    not_a_library.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ScanProcessError, match="not a CaptionDesk library"):
        scan_in_subprocess(not_a_library)


def test_jobs_of_live_processes_are_not_marked_interrupted(tmp_path: Path) -> None:
    with Library(tmp_path / "lib.db") as library:
        mine = library.start_job("caption")
        alive_child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        dead_child = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_child.wait()
        try:
            other_live = library.start_job("scan")
            dead = library.start_job("scan")
            legacy = library.start_job("scan")
            with library.db.write() as session:
                for job_id, pid in ((other_live, alive_child.pid), (dead, dead_child.pid)):
                    owner = {"host": library.jobs()[0].params["_owner"]["host"], "pid": pid}
                    session.execute(update(Job).where(Job.id == job_id).values(params={"_owner": owner}))
                session.execute(update(Job).where(Job.id == legacy).values(params={}))  # no owner recorded
            # Another process opening the library (a CLI run, the app's scan child).
            subprocess.run([sys.executable, "-c", f"from core.library import Library; Library({str(library.path)!r}).close()"],
                           check=True, timeout=60)
            states = {job.id: job.state for job in library.jobs()}
            assert states[mine] == JobState.RUNNING  # this process is alive
            assert states[other_live] == JobState.RUNNING
            assert states[dead] == JobState.INTERRUPTED
            assert states[legacy] == JobState.INTERRUPTED
        finally:
            alive_child.kill()
            alive_child.wait()


def test_frozen_builds_reach_the_worker_through_the_cli(tmp_path: Path) -> None:
    """A PyInstaller build runs ``<app> _scan-worker LIBRARY``: captiondesk.cli routes it to the worker."""
    import json

    photos = _tree(tmp_path / "photos", 5)
    with Library(tmp_path / "lib.db") as library:
        library.add_root(photos)
    child = subprocess.run([sys.executable, "-m", "captiondesk", "_scan-worker", str(tmp_path / "lib.db")],
                           input="", capture_output=True, text=True, timeout=120, check=False)
    # stdin closed at once = the parent went away: the worker stops after its first batch,
    # but still reports what it did as its last line.
    assert child.returncode == 0, child.stderr
    last = json.loads(child.stdout.strip().splitlines()[-1])
    assert "stats" in last and last["stats"]["files_seen"] <= 6
