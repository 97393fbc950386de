"""The batch captioning job's logic, with a fake captioner (the model code is tested with
real tiny models in test_captioning_models.py and test_caption_cli.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select, update

from core import captions
from core.captioning.claims import CLAIM_LEASE
from core.captioning.engine import CaptionJobSpec, run_caption_job
from core.captioning.job_spec import GenerationSettings
from core.datasets.export_job import export_dataset
from core.jobs import Progress
from core.library import Library
from core.models import Caption, CaptionClaim, Image, Job, utcnow
from core.queries import NEEDS_CAPTION, ImageFilter
from core.training.data import collect_training_data
from core.view_rows import fetch_rows
from tests.support.imagegen import make_corpus, write_jpeg


@dataclass
class Result:
    text: str
    score: float


class FakeCaptioner:
    """Captions an image with its size and mean colour; records the batches it saw."""

    identity = {"family": "fake", "model": "fake"}
    device = "cpu"
    dtype = "float32"

    def __init__(self, oom_above: int | None = None, fail_on_red: bool = False) -> None:
        self.oom_above = oom_above
        self.fail_on_red = fail_on_red
        self.batch_sizes: list[int] = []
        self.closed = False

    def preprocess(self, images, settings):
        return [(im.size, im.resize((1, 1)).getpixel((0, 0))) for im in images]

    def generate(self, batch, settings):
        self.batch_sizes.append(len(batch))
        if self.oom_above is not None and len(batch) > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.fail_on_red and any(color[0] > 200 and color[1] < 50 for _size, color in batch):
            raise RuntimeError("model exploded on a red image")
        return [Result(f"a {w}x{h} photo", -0.25) for (w, h), _color in batch]

    def close(self) -> None:
        self.closed = True


def _scanned(library: Library, folder: Path, n: int = 10) -> list[int]:
    for i in range(n):
        write_jpeg(folder / f"{i:02}.jpg", color=(20, 200, 20), size=(40 + i, 30), seed=i)
    library.scan([library.add_root(folder).id])
    with library.db.read() as session:
        return list(session.scalars(select(Image.id).order_by(Image.rel_path)))


def _current(library: Library) -> dict[int, Caption]:
    with library.db.read() as session:
        return {c.image_id: c for c in session.scalars(select(Caption).where(Caption.is_current.is_(True)))}


def test_captions_every_image_with_provenance(library: Library, photo_dir: Path) -> None:
    ids = _scanned(library, photo_dir)
    fake = FakeCaptioner()
    batches: list[list[int]] = []
    reports: list[Progress] = []
    settings = GenerationSettings(num_beams=2, max_new_tokens=12)
    stats = run_caption_job(
        library,
        CaptionJobSpec(model="fake-model", generation=settings, batch_size=4),
        captioner=fake,
        on_batch=batches.append,
        progress=reports.append,
    )
    assert (stats.captioned, stats.skipped, stats.errors, stats.cancelled) == (10, 0, 0, False)
    assert fake.batch_sizes == [4, 4, 2]
    assert [len(b) for b in batches] == [4, 4, 2]
    current = _current(library)
    assert set(current) == set(ids)
    first = current[ids[0]]
    assert first.text == "a 40x30 photo" and first.source == "model" and first.score == -0.25
    assert first.model_name == "fake-model" and first.adapter is None
    assert first.provenance.generation["num_beams"] == 2 and first.provenance.identity["family"] == "fake"
    assert reports[-1].done == 10 and reports[-1].total == 10 and reports[-1].counts["captioned"] == 10
    assert not fake.closed  # a captioner handed in belongs to the caller
    (job,) = library.jobs("caption")
    assert (job.state, job.done, job.total) == ("done", 10, 10)


def test_rerun_skips_same_model_and_never_touches_human(library: Library, photo_dir: Path) -> None:
    ids = _scanned(library, photo_dir, 6)
    spec = CaptionJobSpec(model="m1", batch_size=4)
    run_caption_job(library, spec, captioner=FakeCaptioner())
    with library.db.write() as session:
        captions.set_human_caption(session, ids[0], "My cat Tom")
    fake = FakeCaptioner()
    stats = run_caption_job(library, spec, captioner=fake)
    assert (stats.captioned, stats.skipped) == (0, 6) and fake.batch_sizes == []
    # Overwriting model captions still leaves the person's words alone.
    stats = run_caption_job(library, CaptionJobSpec(model="m1", overwrite_model_captions=True), captioner=FakeCaptioner())
    assert (stats.captioned, stats.skipped) == (5, 1)
    # A different model version re-captions model captions, but not the human one.
    stats = run_caption_job(library, CaptionJobSpec(model="m2"), captioner=FakeCaptioner())
    assert (stats.captioned, stats.skipped) == (5, 1)
    current = _current(library)
    assert current[ids[0]].text == "My cat Tom" and current[ids[0]].source == "human"
    assert {current[i].model_name for i in ids[1:]} == {"m2"}


def test_human_edit_during_the_job_is_kept(library: Library, photo_dir: Path) -> None:
    ids = _scanned(library, photo_dir, 8)

    class EditsWhileRunning(FakeCaptioner):
        def generate(self, batch, settings):
            if not self.batch_sizes:  # while the first batch runs, a person edits image 8
                with library.db.write() as session:
                    captions.set_human_caption(session, ids[-1], "typed by a person")
            return super().generate(batch, settings)

    stats = run_caption_job(library, CaptionJobSpec(model="m", batch_size=4), captioner=EditsWhileRunning())
    assert stats.captioned == 8  # the model's text is stored as history...
    assert _current(library)[ids[-1]].text == "typed by a person"  # ...not as the caption


def test_bad_images_are_errors_and_the_rest_goes_on(library: Library, photo_dir: Path) -> None:
    write_jpeg(photo_dir / "good.jpg", seed=1)
    corpus = make_corpus(photo_dir / "bad")
    library.scan([library.add_root(photo_dir).id])
    stats = run_caption_job(library, CaptionJobSpec(model="m", batch_size=3), captioner=FakeCaptioner())
    # zero-byte, text and bomb were already errors at scan time: not selected. The
    # truncated JPEG passes the header probe and fails at decode.
    assert stats.errors == 1 and "truncated" in stats.problems[0]
    assert stats.captioned == len(corpus) - 4 + 1
    with library.db.read() as session:
        truncated = session.scalar(select(Image).where(Image.rel_path == "bad/truncated.jpg"))
    assert truncated.state == "error" and "truncated" in truncated.error


def test_out_of_memory_halves_the_batch(library: Library, photo_dir: Path) -> None:
    _scanned(library, photo_dir, 10)
    fake = FakeCaptioner(oom_above=2)
    stats = run_caption_job(library, CaptionJobSpec(model="m", batch_size=8), captioner=fake)
    assert (stats.captioned, stats.errors, stats.final_batch_size) == (10, 0, 2)
    assert fake.batch_sizes[:3] == [8, 4, 2]  # 8 fails, 4 fails, 2 works; then stays at 2
    assert set(fake.batch_sizes[3:]) == {2}


def test_failing_batch_is_retried_image_by_image(library: Library, photo_dir: Path) -> None:
    _scanned(library, photo_dir, 5)
    write_jpeg(photo_dir / "red.jpg", color=(255, 0, 0), size=(64, 64))
    library.scan()
    stats = run_caption_job(library, CaptionJobSpec(model="m", batch_size=8), captioner=FakeCaptioner(fail_on_red=True))
    assert (stats.captioned, stats.errors) == (5, 1)
    assert "model exploded" in stats.problems[0] and "red.jpg" in stats.problems[0]
    with library.db.read() as session:  # a model failure is not the file's fault
        assert session.scalar(select(Image.state).where(Image.rel_path == "red.jpg")) == "ok"


def test_cancel_stops_within_a_batch_and_resume_finishes(library: Library, photo_dir: Path) -> None:
    _scanned(library, photo_dir, 12)
    cancel = threading.Event()
    fake = FakeCaptioner()
    stats = run_caption_job(
        library,
        CaptionJobSpec(model="m", batch_size=3),
        captioner=fake,
        cancel=cancel,
        on_batch=lambda _ids: cancel.set(),  # the user presses Cancel after the first batch
    )
    assert stats.cancelled and stats.captioned == 3 and fake.batch_sizes == [3]
    assert len(_current(library)) == 3
    assert library.jobs("caption")[-1].state == "cancelled"
    stats = run_caption_job(library, CaptionJobSpec(model="m", batch_size=3), captioner=FakeCaptioner())
    assert (stats.captioned, stats.skipped) == (9, 3)
    assert len(_current(library)) == 12


class _TakesTurns(FakeCaptioner):
    """Both runs wait for each other after claiming their first batch (both selected every
    image by then), then caption slowly enough to interleave."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        self.barrier = barrier

    def preprocess(self, images, settings):
        if not self.batch_sizes:
            self.barrier.wait(timeout=30)
        return super().preprocess(images, settings)

    def generate(self, batch, settings):
        time.sleep(0.02)
        return super().generate(batch, settings)


def test_two_runs_at_once_share_the_work_and_caption_each_image_once(library: Library, photo_dir: Path) -> None:
    ids = _scanned(library, photo_dir, 16)
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def run(name: str) -> None:
        with Library(library.path) as mine:  # a run of its own, as a second process would open it
            try:
                results[name] = run_caption_job(mine, CaptionJobSpec(model="fake-model", batch_size=2),
                                                captioner=_TakesTurns(barrier))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                results[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    first, second = results["a"], results["b"]
    assert first.captioned > 0 and second.captioned > 0, results  # both worked
    assert first.captioned + second.captioned == len(ids)
    assert first.skipped + second.skipped == len(ids)  # each left the other's images alone
    assert (first.left_to_other_runs, second.left_to_other_runs) == (first.skipped, second.skipped)
    with library.db.read() as session:
        rows = session.execute(select(Caption.image_id, func.count()).group_by(Caption.image_id)).all()
        assert dict(rows) == {image_id: 1 for image_id in ids}  # one history row each: none captioned twice
        assert session.scalar(select(func.count()).select_from(CaptionClaim)) == 0  # released at the end


@pytest.mark.parametrize(("owner", "age", "blocks"), [
    pytest.param("dead process", timedelta(0), False, id="crashed-run-on-this-host"),
    pytest.param("other host", CLAIM_LEASE + timedelta(minutes=1), False, id="other-host-lease-expired"),
    pytest.param("other host", timedelta(minutes=1), True, id="other-host-within-lease"),
])
def test_claims_of_a_crashed_run_expire(library: Library, photo_dir: Path, owner: str, age: timedelta,
                                        blocks: bool) -> None:
    """A run that died holding claims blocks nobody: on this host its process is gone; on
    another host its claims lapse once its record has not been updated for the lease."""
    ids = _scanned(library, photo_dir, 4)
    if owner == "dead process":
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        who = {"host": socket.gethostname(), "pid": gone.pid}
    else:
        who = {"host": "another-machine", "pid": 1}
    stamp = utcnow() - age
    with library.db.write() as session:
        job = Job(kind="caption", params={"model": "fake-model", "adapter": None, "_owner": who}, state="running",
                  created_at=stamp, updated_at=stamp)
        session.add(job)
        session.flush()
        session.add_all(CaptionClaim(job_id=job.id, image_id=image_id, claimed_at=stamp) for image_id in ids)
    # Written straight to the record: the ORM's onupdate would stamp it now.
    with library.db.write() as session:
        session.execute(update(Job).where(Job.id == job.id).values(updated_at=stamp))
    stats = run_caption_job(library, CaptionJobSpec(model="fake-model", batch_size=2), captioner=FakeCaptioner())
    assert (stats.captioned, stats.skipped) == ((0, 4) if blocks else (4, 0))


def test_one_folder_scope_for_engine_export_metadata_and_grid(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    """A folder on disk selects the same images everywhere (one resolver, one range)."""
    import csv

    from core.datasets.errors import ExportError
    from core.datasets.export_job import export_dataset
    from core.metadata import sidecar_path, write_metadata
    from core.queries import FolderNotInLibraryError, filtered_ids, resolve_folder

    write_jpeg(photo_dir / "2023" / "1.jpg", seed=1)
    write_jpeg(photo_dir / "2023" / "summer" / "2.jpg", seed=2)
    write_jpeg(photo_dir / "2023-old" / "3.jpg", seed=3)  # a sibling with a common prefix
    write_jpeg(photo_dir / "2023_" / "4.jpg", seed=4)  # "_" is no wildcard
    write_jpeg(photo_dir / "5.jpg", seed=5)
    library.scan([library.add_root(photo_dir).id])
    folder = photo_dir / "2023"
    with library.db.read() as session:
        scope = resolve_folder(session, folder)
        assert (scope.prefix, resolve_folder(session, photo_dir).prefix) == ("2023/", "")
        grid_ids = set(filtered_ids(session, scope.image_filter()))
        by_path = {p: i for i, p in session.execute(select(Image.id, Image.rel_path))}
        with pytest.raises(FolderNotInLibraryError, match="not a library folder or inside one"):
            resolve_folder(session, photo_dir.parent)
        with pytest.raises(FolderNotInLibraryError):
            resolve_folder(session, tmp_path / "photos-elsewhere")
    expected = {by_path["2023/1.jpg"], by_path["2023/summer/2.jpg"]}
    assert grid_ids == expected

    stats = run_caption_job(library, CaptionJobSpec(model="m", scope=scope.image_filter()), captioner=FakeCaptioner())
    assert stats.captioned == 2 and set(_current(library)) == expected
    # Everything else gets a caption too, so export and metadata have a choice to make.
    run_caption_job(library, CaptionJobSpec(model="m"), captioner=FakeCaptioner())
    assert len(_current(library)) == 5

    export = export_dataset(library, "csv", tmp_path / "out", folder=folder)
    with open(tmp_path / "out" / "captions.csv", newline="", encoding="utf-8") as handle:
        exported = {by_path[row["library_path"]] for row in csv.DictReader(handle)}
    assert export.exported == 2 and exported == expected

    written = write_metadata(library, sidecar=True, folder=folder)
    assert written.errors == 0
    with_sidecar = {by_path[p] for p in by_path if sidecar_path(photo_dir / p).exists()}
    assert with_sidecar == expected

    # A path outside the library is a clear error, never "everything" or "nothing".
    with pytest.raises(ExportError, match="not a library folder or inside one"):
        export_dataset(library, "csv", tmp_path / "out2", folder=photo_dir.parent)
    with pytest.raises(ExportError, match="not a library folder or inside one"):
        write_metadata(library, sidecar=True, folder=photo_dir.parent)


def test_scope_by_ids_and_uncaptioned(library: Library, photo_dir: Path) -> None:
    from core.queries import ImageFilter

    for n in range(4):
        write_jpeg(photo_dir / f"{n}.jpg", seed=n)
    library.scan([library.add_root(photo_dir).id])
    with library.db.read() as session:
        ids = sorted(session.scalars(select(Image.id)))
    stats = run_caption_job(library, CaptionJobSpec(model="m", scope=[ids[0], ids[0]]), captioner=FakeCaptioner())
    assert stats.captioned == 1 and set(_current(library)) == {ids[0]}
    uncaptioned = ImageFilter(states=frozenset({"uncaptioned"}))
    stats = run_caption_job(library, CaptionJobSpec(model="m2", scope=uncaptioned), captioner=FakeCaptioner())
    # Another model's caption is not "uncaptioned": only the three without one.
    assert (stats.captioned, stats.skipped) == (3, 0) and set(_current(library)) == set(ids)
    assert library.jobs("caption")[-1].params["scope"]["states"] == ["uncaptioned"]


def test_changed_picture_is_left_out_of_export_and_training_and_captioned_again(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    ids = _scanned(library, photo_dir, n=6)
    with library.db.write() as session:
        for image_id in ids:
            captions.set_human_caption(session, image_id, f"green photo number {image_id}")
    replaced = write_jpeg(photo_dir / "00.jpg", color=(200, 20, 20), size=(90, 70), seed=99)
    os.utime(replaced, ns=(1, 1))
    assert library.scan().outdated == 1
    changed_id = ids[0]

    export = export_dataset(library, "csv", tmp_path / "csv", val_ratio=0.5)
    assert (export.exported, export.outdated) == (5, 1)
    assert "1 photo changed since captioned was left out" in export.summary()
    assert f"green photo number {changed_id}," not in (tmp_path / "csv" / "captions.csv").read_text()
    data = collect_training_data(library, val_ratio=0.5)
    assert len(data.train) + len(data.validation) == 5 and data.outdated == 1
    assert "1 photo changed since captioned was left out" in data.summary()

    # No overwrite flag: the person's caption described another picture.  The scope is
    # the window's "everything uncaptioned"; the CLI's whole-library scope selects the same.
    spec = CaptionJobSpec(model="fake-model", batch_size=4, scope=ImageFilter(states=NEEDS_CAPTION))
    stats = run_caption_job(library, spec, captioner=FakeCaptioner())
    assert stats.captioned == 1
    with library.db.read() as session:
        history = captions.caption_history(session, changed_id)
        row = fetch_rows(session, [changed_id])[changed_id]
    assert [(c.text, c.source, c.is_current) for c in history] == [
        (f"green photo number {changed_id}", "human", False), ("a 90x70 photo", "model", True)]
    assert row.state == "model" and row.outdated_caption_id is None
    assert run_caption_job(library, CaptionJobSpec(model="fake-model"), captioner=FakeCaptioner()).captioned == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"model": " "}, "model"), ({"model": "m", "batch_size": 0}, "0"), ({"model": "m", "device": "tpu"}, "tpu")],
)
def test_spec_validation(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        CaptionJobSpec(**kwargs)


@pytest.mark.slow
def test_draft_size_follows_the_model_input(tiny_blip_dir) -> None:
    from core.captioning import load_captioner
    from core.captioning.batching import DEFAULT_DRAFT_SIZE, DRAFT_FRACTION, draft_size_for

    captioner = load_captioner(str(tiny_blip_dir), device="cpu")
    try:
        side = captioner.processor.image_processor.size["height"]
        assert draft_size_for(captioner) == max(64, int(side * DRAFT_FRACTION))
    finally:
        captioner.close()
    assert draft_size_for(FakeCaptioner()) == DEFAULT_DRAFT_SIZE
