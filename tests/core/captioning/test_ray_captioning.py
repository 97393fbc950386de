"""``caption --ray``: the caption job on a local Ray instance (Ray Data actor pool).

The same tiny BLIP captions the same photos in-process and on Ray: same captions, same
provenance (plus ``runner: ray``), the same per-image errors, a person's caption kept even
when it appears mid-run, and a driver killed with SIGKILL mid-run resumes without losing
or repeating an image — and leaves no Ray process behind.

One local Ray instance (2 CPUs, a small object store, its own temporary folder) serves the
in-process tests; the CLI tests start their own in child processes.  Every Ray process
these tests start carries ``RAY_TMPDIR`` pointing at a folder of this module's own, which
is how leftovers are found (and killed) without touching anyone else's processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.paths import REPO_ROOT

pytest.importorskip("ray")

from core import captions  # noqa: E402 - after the skip
from core.captioning.engine import run_caption_job  # noqa: E402
from core.captioning.job_spec import CaptionJobSpec, GenerationSettings  # noqa: E402
from core.captioning.ray_backend import run_caption_job_on_ray  # noqa: E402
from core.library import Library  # noqa: E402
from core.models import Caption, Image  # noqa: E402
from tests.core.test_crash import _count  # noqa: E402
from tests.support.imagegen import write_jpeg  # noqa: E402

ROOT = REPO_ROOT
# Random weights often emit EOS first; an empty caption is an error, so ask for words.
SETTINGS = GenerationSettings(max_new_tokens=6, min_new_tokens=3)


def _spec(model_dir: Path, **changes) -> CaptionJobSpec:
    return CaptionJobSpec(model=str(model_dir), generation=SETTINGS, batch_size=2, device="cpu", **changes)


def _photos(folder: Path, count: int, *, truncated: bool = False) -> Path:
    for i in range(count):
        write_jpeg(folder / f"p{i:03d}.jpg", color=(37 * i % 256, 90, 200 - 3 * i % 200), size=(80, 60), seed=i)
    if truncated:
        # Scans as a JPEG (the header is fine) but fails to decode for the model.
        whole = (folder / "p000.jpg").read_bytes()
        (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    return folder


def _library(path: Path, photos: Path) -> Library:
    library = Library(path)
    library.scan([library.add_root(photos).id])
    return library


def _current(library: Library) -> dict[str, Caption]:
    with library.db.read() as session:
        rows = session.execute(
            select(Image.rel_path, Caption).join(Caption, Caption.image_id == Image.id)
            .where(Caption.is_current.is_(True))
        ).all()
        return {rel: caption for rel, caption in rows}


def _ray_processes(temp_dir: str) -> list[int]:
    """Our processes started with ``RAY_TMPDIR=temp_dir`` (raylet, GCS, workers...)."""
    marker = f"RAY_TMPDIR={temp_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != os.getuid():
                continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if marker in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue  # gone, or not ours to read
    return found


def _wait_gone(temp_dir: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _ray_processes(temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _describe(pids: list[int]) -> list[str]:
    """``PID: command line`` of each, for an assertion message."""
    lines = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            lines.append(f"{pid}: {command[:200]}")
        except OSError:
            lines.append(f"{pid}: (gone)")
    return lines


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def ray_temp_dir() -> Iterator[str]:
    """A short folder (Ray's socket paths must stay under 107 bytes) for this module's Ray."""
    folder = tempfile.mkdtemp(prefix="cdray-")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        _kill_all(_wait_gone(folder, 10))
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray(ray_temp_dir: str) -> Iterator[None]:
    """One local Ray instance for the in-process tests (the job reuses it, leaves it)."""
    import ray

    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False,
             logging_level="WARNING", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_captions_match_the_in_process_engine(local_ray, tiny_blip_dir: Path, tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos", 7, truncated=True)
    with _library(tmp_path / "engine.db", photos) as engine_lib, _library(tmp_path / "ray.db", photos) as ray_lib:
        engine_stats = run_caption_job(engine_lib, _spec(tiny_blip_dir))
        ray_stats = run_caption_job_on_ray(ray_lib, _spec(tiny_blip_dir))
        assert (ray_stats.captioned, ray_stats.errors) == (engine_stats.captioned, engine_stats.errors) == (7, 1)
        by_engine, by_ray = _current(engine_lib), _current(ray_lib)
        assert sorted(by_ray) == sorted(by_engine) == [f"p{i:03d}.jpg" for i in range(7)]
        for rel, expected in by_engine.items():
            got = by_ray[rel]
            assert got.text == expected.text, rel  # greedy decoding: the same words
            assert got.score == pytest.approx(expected.score, abs=1e-4)
            assert (got.source, got.model_name, got.adapter, got.model_version_id) == (
                expected.source, expected.model_name, expected.adapter, expected.model_version_id)
            ray_settings = got.provenance.to_json()
            assert ray_settings.pop("runner") == "ray"
            assert ray_settings == expected.provenance.to_json()  # generation, identity, device, dtype
        # The truncated file: the same per-image error, and the image marked as an error.
        assert [p for p in ray_stats.problems] == [p for p in engine_stats.problems]
        assert "truncated.jpg" in ray_stats.problems[0]
        with ray_lib.db.read() as session:
            assert session.scalar(select(Image.state).where(Image.rel_path == "truncated.jpg")) == "error"
        job = ray_lib.jobs("caption")[-1]
        assert job.state == "done" and job.params["runner"] == "ray"
        # Running it again resumes: nothing left for this model version.
        again = run_caption_job_on_ray(ray_lib, _spec(tiny_blip_dir))
        assert (again.captioned, again.skipped) == (0, 7)


@pytest.mark.slow
def test_ray_follows_a_prompt_template_like_the_in_process_engine(local_ray, tiny_blip_dir: Path,
                                                                   tmp_path: Path) -> None:
    """Per-image prompts (rendered on the driver) reach the actors; the stored provenance
    (preset, template, rendered prompt, confidence kind and values) is the engine's."""
    photos = _photos(tmp_path / "photos", 4)
    (photos / "sub").mkdir()
    _photos(photos / "sub", 2)
    spec = _spec(tiny_blip_dir, prompt_template="a picture from {folder}")
    with _library(tmp_path / "engine.db", photos) as engine_lib, _library(tmp_path / "ray.db", photos) as ray_lib:
        run_caption_job(engine_lib, spec)
        run_caption_job_on_ray(ray_lib, spec)
        by_engine, by_ray = _current(engine_lib), _current(ray_lib)
        assert len(by_engine) == 6 and sorted(by_ray) == sorted(by_engine)
        prompts = {by_engine[rel].provenance.prompt for rel in by_engine}
        assert len(prompts) == 2  # two folders: two rendered prompts
        for rel, expected in by_engine.items():
            got = by_ray[rel]
            assert got.text == expected.text, rel
            ray_settings = got.provenance.to_json()
            assert ray_settings.pop("runner") == "ray"
            assert ray_settings == expected.provenance.to_json(), rel
            assert got.provenance.prompt_template == "a picture from {folder}"


@pytest.mark.slow
def test_ray_never_overwrites_a_person_caption_even_one_written_mid_run(
    local_ray, tiny_blip_dir: Path, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "photos", 8)
    with _library(tmp_path / "lib.db", photos) as library:
        with library.db.write() as session:
            first = session.scalar(select(Image.id).where(Image.rel_path == "p000.jpg"))
            captions.set_human_caption(session, first, "written by a person before")
        late: list[int] = []

        def person_edits_while_the_job_runs(_changed: list[int]) -> None:
            if late:
                return
            # An image the job selected but has not committed yet gets a person's caption.
            with library.db.write() as session:
                image_id = session.scalar(
                    select(Image.id).outerjoin(Caption, Caption.image_id == Image.id)
                    .where(Caption.id.is_(None)).order_by(Image.rel_path.desc())
                )
                captions.set_human_caption(session, image_id, "written by a person during")
                late.append(image_id)

        stats = run_caption_job_on_ray(library, _spec(tiny_blip_dir), on_batch=person_edits_while_the_job_runs)
        assert late and stats.skipped == 1
        current = _current(library)
        assert current["p000.jpg"].text == "written by a person before"
        with library.db.read() as session:
            late_rel = session.scalar(select(Image.rel_path).where(Image.id == late[0]))
            late_rows = session.scalars(select(Caption).where(Caption.image_id == late[0])).all()
        assert current[late_rel].text == "written by a person during" and current[late_rel].source == "human"
        # The model's caption for it is kept as history, not made current.
        assert [c.source for c in late_rows if not c.is_current] == ["model"]
        assert sum(c.source == "model" for c in current.values()) == 6


@pytest.mark.slow
def test_killed_driver_resumes_each_image_captioned_once_and_no_ray_process_is_left(
    local_ray, ray_temp_dir: str, tiny_blip_dir: Path, tmp_path: Path
) -> None:
    count = 40
    photos = _photos(tmp_path / "photos", count)
    db_path = tmp_path / "lib.db"
    # Each run gets a Ray temp folder of its own, so its processes can be told apart.
    run_dir = tempfile.mkdtemp(prefix="k", dir=ray_temp_dir)
    env = {**os.environ, "CAPTIONDESK_LIBRARY": str(db_path), "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": run_dir,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           # Every committed batch waits 0.15 s (tests/support/cli_child.py): long enough to kill mid-run.
           "CAPTIONDESK_TEST_PROGRESS_DELAY": "0.15"}
    argv = [sys.executable, "-m", "tests.support.cli_child", "caption", str(photos), "--model", str(tiny_blip_dir),
            "--batch-size", "2", "--max-new-tokens", "6", "--min-new-tokens", "3", "--device", "cpu", "--ray"]
    model_captions = "SELECT count(*) FROM captions WHERE source = 'model'"
    try:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if _count(db_path, model_captions) >= 4:
                    break
            except sqlite3.OperationalError:
                pass  # the library is not created yet
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        process.stderr.close()
        done_before = _count(db_path, model_captions)
        assert 4 <= done_before < count
        # Ray's processes share the driver's fate: GCS and raylet die with it (PR_SET_PDEATHSIG),
        # the workers and actors when they lose the raylet (seconds; longer on a loaded
        # machine).  Ray 2.60's dashboard and runtime-env agents notice at once too, but
        # first try to report to the dead GCS, which can take a minute or more under load:
        # they are tolerated here (and killed below), everything else must be gone.
        deadline = time.monotonic() + 45
        while (left := [line for line in _describe(_ray_processes(run_dir))
                        if "DashboardAgent" not in line and "RuntimeEnvAgent" not in line]) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == []
    finally:
        _kill_all(_ray_processes(run_dir))
    with Library(db_path) as library:
        # Running the same job again (here in this process, on the module's Ray: a second
        # child would cost another Ray start) captions exactly what the killed run had not.
        rerun = run_caption_job_on_ray(library, _spec(tiny_blip_dir))
        assert (rerun.captioned, rerun.skipped, rerun.errors) == (count - done_before, done_before, 0)
        assert library.db.integrity_check() == ["ok"]
        with library.db.read() as session:
            per_image = dict(session.execute(
                select(Caption.image_id, func.count()).where(Caption.source == "model").group_by(Caption.image_id)
            ).all())
        assert len(per_image) == count and set(per_image.values()) == {1}  # none lost, none twice
        assert [job.state for job in library.jobs("caption")] == ["interrupted", "done"]


@pytest.mark.slow
def test_without_ray_flag_ray_is_never_imported_and_ray_errors_are_one_clear_line(
    tiny_blip_dir: Path, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "photos", 2)
    script = f"""
import sys
from captiondesk.cli import main
common = ["--library", {str(tmp_path / 'lib.db')!r}, "caption", {str(photos)!r}, "--model", {str(tiny_blip_dir)!r},
          "--max-new-tokens", "4", "--min-new-tokens", "2", "--device", "cpu"]
assert main(common) == 0
print("ray imported:", "ray" in sys.modules)
print("openai:", main([*common, "--ray", "--backend", "openai", "--endpoint", "http://localhost:1/v1"]))
print("actors alone:", main([*common, "--ray-actors", "2"]))
print("unreachable:", main([*common, "--overwrite-model-captions", "--ray", "127.0.0.1:1"]))
sys.modules["ray"] = None  # as if Ray were not installed
print("missing:", main([*common, "--ray"]))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    assert result.returncode == 0, result.stderr
    assert "ray imported: False" in result.stdout
    assert "openai: 2" in result.stdout and "cannot be combined with --backend openai" in result.stderr
    assert "actors alone: 2" in result.stdout and "--ray-actors needs --ray" in result.stderr
    assert "unreachable: 2" in result.stdout and "cannot reach the Ray cluster at 127.0.0.1:1" in result.stderr
    assert "missing: 2" in result.stdout
    assert "captiondesk: error: Ray is not installed" in result.stderr
    assert "pip install 'captiondesk[ray]'" in result.stderr


def test_an_actor_runs_all_its_torch_work_on_one_thread_with_its_own_core_count(tiny_blip_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading and every batch run on the actor's own thread, whichever thread Ray calls from.

    Ray builds an actor on its main thread and runs the batches on another; a second
    thread calling torch makes a second OpenMP team, and then every small op of
    ``generate`` paid a sleeping-worker wake-up (a batch 1.6x slower on 2 cores).
    """
    import threading

    import pyarrow as pa
    import torch

    import core.captioning as captioning
    from core.captioning import batching
    from core.captioning.ray_backend import CaptionActor

    torch_threads: list[tuple[str, int]] = []
    torch_counts: list[int] = []
    real_load, real_caption = captioning.load_captioner, batching._BatchCaptioner.caption

    def load(*args, **kwargs):
        torch_threads.append(("load", threading.get_ident()))
        return real_load(*args, **kwargs)

    def caption(self, *args, **kwargs):
        import torch

        torch_threads.append(("caption", threading.get_ident()))
        torch_counts.append(torch.get_num_threads())
        return real_caption(self, *args, **kwargs)

    monkeypatch.setattr(captioning, "load_captioner", load)
    monkeypatch.setattr(batching._BatchCaptioner, "caption", caption)
    photos = sorted(_photos(tmp_path / "photos", 4).iterdir())
    # The actor's own core count wins over whatever OMP_NUM_THREADS the worker inherited.
    restore = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    actor = CaptionActor(model=str(tiny_blip_dir), adapter=None, device="cpu", optimize="auto",
                         settings=SETTINGS.to_dict(), batch_size=2, cpu_threads=1)
    batch = pa.table({"id": pa.array([1, 2], pa.int64()),
                      "path": pa.array([os.fsencode(p) for p in photos[:2]], pa.binary()),
                      "prompt": pa.array([None, None], pa.string())})
    outputs = []
    try:
        for _ in range(2):  # two calls from two more threads, as Ray's executor may
            caller = threading.Thread(target=lambda: outputs.append(actor(batch)))
            caller.start()
            caller.join()
    finally:
        torch.set_num_threads(restore)  # MKL's count is process-wide: leave it as found
    assert torch_counts == [1, 1]
    assert [kind for kind, _ in torch_threads] == ["load", "caption", "caption"]
    assert len({ident for _, ident in torch_threads}) == 1
    assert threading.get_ident() not in {ident for _, ident in torch_threads}
    for table in outputs:
        rows = table.to_pylist()
        assert [row["id"] for row in rows] == [1, 2]
        assert all(row["error"] is None and row["text"] for row in rows)
