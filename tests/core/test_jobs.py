"""The job runner: ``Library.job()``'s run object and the shared stats base."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import pytest

from core.jobs import JobRun, JobStats, Progress, count_phrase, counted_as, not_counted
from core.library import Library
from core.scanner import ScanStats


@dataclass
class _Stats(JobStats):
    TITLE: ClassVar[str] = "Counting"

    counted: int = 0
    skipped: int = 0
    errors: int = 0


def test_summary_is_one_line_with_plurals() -> None:
    assert _Stats(counted=12, skipped=3, errors=1).summary() == "Counting finished: 12 counted, 3 skipped, 1 error"
    assert _Stats(errors=2, cancelled=True).summary() == "Counting cancelled: 0 counted, 0 skipped, 2 errors"
    assert JobStats().summary() == "Job finished"
    assert count_phrase(1, "file", "files") == "1 file" and count_phrase(0, "file", "files") == "0 files"
    scan = ScanStats(files_seen=1, new=1, errors=2)
    assert scan.summary() == "Scan finished: 1 file, 1 new, 0 changed, 0 moved, 0 missing, 2 unreadable"


def test_counts_are_the_int_fields_in_declaration_order() -> None:
    @dataclass
    class Mixed(JobStats):
        dry_run: bool = False
        seen: int = 0
        batch: int = not_counted(8)
        done_rows: int = counted_as("done")
        seconds: float = 0.0
        version: int | None = None
        errors: int = 0

    stats = Mixed(seen=4, batch=2, done_rows=3, errors=1, version=7, dry_run=True, job_id=9)
    assert stats.counts() == {"seen": 4, "done": 3, "errors": 1}
    assert list(stats.counts()) == ["seen", "done", "errors"]
    assert _Stats(counted=2).counts() == {"counted": 2, "skipped": 0, "errors": 0}
    assert JobStats().counts() == {}


def test_finished_run_records_done_counts_and_first_problems(library: Library) -> None:
    reports: list[Progress] = []
    with library.job("count", {"what": "things"}, _Stats(), reports.append) as run:
        assert isinstance(run, JobRun) and run.stats.job_id == run.job_id
        for i in range(1, 26):
            run.stats.counted += 1
            run.problem(f"item {i}: odd")
            run.progress(i, 25, "Counting")
        run.progress(25, 25, "Finished", force=True)
    (job,) = library.jobs("count")
    assert job.state == "done" and job.finished_at is not None
    assert (job.done, job.total) == (25, 25)
    assert job.checkpoint == {"counted": 25, "skipped": 0, "errors": 0}
    assert job.message.split("; ") == [f"item {i}: odd" for i in range(1, 21)]  # first 20 only
    assert job.params["what"] == "things"
    assert len(run.stats.problems) == 25
    # Throttled: the first report and the forced last one, not 26.
    assert reports[0].done == 1 and reports[-1].message == "Finished" and len(reports) < 5
    assert reports[-1].counts == {"counted": 25, "skipped": 0, "errors": 0}


def test_progress_is_throttled_but_forced_reports_always_pass(library: Library) -> None:
    reports: list[Progress] = []
    with library.job("count", None, _Stats(), reports.append) as run:
        run._throttle.interval = 0.05
        run.progress(1, None, "a")
        run.progress(2, None, "b")  # within the interval: dropped
        run.progress(3, None, "c", force=True)
        time.sleep(0.06)
        run.progress(4, None, "d")
        run.progress(5, None, "e", counts={"loss": 1})
    assert [p.message for p in reports] == ["a", "c", "d"]
    assert reports[-1].rate is not None and reports[-1].rate > 0
    assert library.jobs("count")[-1].done == 5  # the last progress, even a dropped one


def test_cancelled_run_is_recorded_cancelled(library: Library) -> None:
    with library.job("count", None, _Stats()) as run:
        run.stats.cancelled = True
        run.progress(3, 10, "Cancelled")
    job = library.jobs("count")[-1]
    assert (job.state, job.done, job.total, job.message) == ("cancelled", 3, 10, None)


def test_exception_marks_the_run_failed_and_propagates(library: Library) -> None:
    with pytest.raises(RuntimeError, match="disk on fire"):
        with library.job("count", None, _Stats()) as run:
            run.progress(2, None, "working")
            raise RuntimeError("disk on fire")
    job = library.jobs("count")[-1]
    assert job.state == "failed" and job.message == "RuntimeError: disk on fire"
    assert job.finished_at is not None


def test_explicit_finish_writes_exactly_its_values(library: Library) -> None:
    with library.job("count", None, _Stats()) as run:
        run.save(done=1, checkpoint={"epoch": 1})
        run.stats.cancelled = True
        run.finish(done=7, message="cancelled in epoch 2")
    job = library.jobs("count")[-1]
    assert (job.state, job.done, job.checkpoint, job.message) == ("cancelled", 7, {"epoch": 1}, "cancelled in epoch 2")


def test_replaced_stats_carry_the_job_id(library: Library) -> None:
    with library.job("count") as run:
        run.stats = _Stats(counted=4)
        run.done = 4
    assert run.stats.job_id == run.job_id
    job = library.jobs("count")[-1]
    assert (job.state, job.done, job.checkpoint) == ("done", 4, {"counted": 4, "skipped": 0, "errors": 0})
