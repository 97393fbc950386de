"""Hostile input and faults: file names, images in error, library file faults.

Every case runs the real CLI (``python -m captiondesk --library L ...``) in a subprocess
where the issue showed a command, and checks three things: one clear line (no
traceback), nothing read or written where it should not be, and no state that sticks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from core.filenames import for_display, to_os, to_stored
from core.library import Library
from core.models import Caption, Image
from tests.support.imagegen import write_jpeg
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
CAFE = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name: not valid UTF-8


def cli(library: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "captiondesk", "--library", str(library), *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


# -- file names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["plain.jpg", CAFE, os.fsdecode(b"\xff\xfe.jpg"), "r\uef80al-pua.jpg", "caf\u00e9-utf8.jpg", "a\\xe9.jpg"],
)
def test_stored_names_round_trip(name: str) -> None:
    stored = to_stored(name)
    stored.encode("utf-8")  # storable in SQLite text
    assert to_os(stored) == name
    assert os.fsencode(to_os(stored)) == os.fsencode(name)
    assert for_display(stored).encode("utf-8")


def test_stored_names_are_unique() -> None:
    names = [CAFE, "caf\u00e9.jpg", "caf\\xe9.jpg", "caf\uefe9.jpg", os.fsdecode(b"caf\xc3.jpg")]
    assert len({to_stored(n) for n in names}) == len(names)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX byte file names")
def test_latin1_file_name_scan_caption_export_write_metadata(tmp_path: Path, tiny_model_dirs) -> None:
    photos = tmp_path / "photos"
    write_jpeg(photos / "a.jpg", seed=1)
    write_jpeg(photos / "b.jpg", seed=2)
    os.makedirs(os.fsencode(photos) + b"/sub\xe8")
    shutil.copy(photos / "a.jpg", os.fsencode(photos) + b"/caf\xe9.jpg")
    write_jpeg(Path(os.fsdecode(os.fsencode(photos) + b"/sub\xe8/c.jpg")), seed=3)
    lib = tmp_path / "lib.db"

    added = cli(lib, "add", str(photos))
    assert added.returncode == 0, added.stderr
    assert "4 files, 4 new" in added.stdout and "0 unreadable" in added.stdout

    with Library(lib) as library, library.db.read() as session:
        stored = set(session.scalars(select(Image.rel_path)))
    assert {to_os(p) for p in stored} == {"a.jpg", "b.jpg", CAFE, os.fsdecode(b"sub\xe8/c.jpg")}

    rescan = cli(lib, "scan")
    assert rescan.returncode == 0 and "0 new, 0 changed" in rescan.stdout, rescan

    model = tiny_model_dirs["blip"]
    captioned = cli(lib, "caption", str(photos), "--model", str(model), "--device", "cpu", "--max-new-tokens", "5",
                    "--min-new-tokens", "2")
    assert captioned.returncode == 0, captioned.stderr
    assert "4 captioned, 0 skipped, 0 errors" in captioned.stdout, captioned

    out = tmp_path / "ds"
    exported = cli(lib, "export", "imagefolder", str(out))
    assert exported.returncode == 0, exported.stderr
    names = {json.loads(line)["file_name"] for line in (out / "train").joinpath("metadata.jsonl").read_text().splitlines()} \
        if (out / "train" / "metadata.jsonl").exists() else set()
    names |= {json.loads(line)["file_name"] for line in (out / "validation").joinpath("metadata.jsonl").read_text().splitlines()} \
        if (out / "validation" / "metadata.jsonl").exists() else set()
    assert any(to_os(n) == CAFE for n in names), names

    written = cli(lib, "write-metadata")
    assert written.returncode == 0, written.stdout + written.stderr
    from core.metadata import read_caption

    found = read_caption(photos / CAFE)
    assert found is not None and found.text

    status = cli(lib, "status")
    assert status.returncode == 0 and "Traceback" not in status.stderr


# -- a model folder without tokenizer, empty generations -----------------------------------


def _captions_by_path(lib: Path) -> dict[str, list[tuple[str, bool]]]:
    with Library(lib) as library, library.db.read() as session:
        rows = session.execute(
            select(Image.rel_path, Caption.text, Caption.is_current).join(Caption, Caption.image_id == Image.id)
            .order_by(Caption.id)
        ).all()
    out: dict[str, list[tuple[str, bool]]] = {}
    for rel, text, current in rows:
        out.setdefault(rel, []).append((text, current))
    return out


@pytest.mark.slow
def test_model_folder_without_tokenizer_is_refused(tmp_path: Path, tiny_model_dirs) -> None:
    photos = tmp_path / "photos"
    for i in range(3):
        write_jpeg(photos / f"p{i}.jpg", seed=i)
    lib = tmp_path / "lib.db"
    model = tiny_model_dirs["blip"]
    first = cli(lib, "caption", "--model", str(model), "--device", "cpu", "--max-new-tokens", "4",
                "--min-new-tokens", "2", str(photos))
    assert first.returncode == 0 and "3 captioned" in first.stdout, first
    before = _captions_by_path(lib)

    broken = tmp_path / "broken-model"
    shutil.copytree(model, broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    result = cli(lib, "caption", "--all", "--model", str(broken), "--device", "cpu", "--overwrite-model-captions")
    assert_clean_error(result, "tokenizer", str(broken))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _captions_by_path(lib) == before  # nothing overwritten


@pytest.mark.slow
def test_empty_generation_is_a_per_image_error(tmp_path: Path, tiny_model_dirs) -> None:
    """A model that generates nothing (EOS first) never replaces a caption with ""."""
    from dataclasses import replace

    from core.captioning import load_captioner
    from core.captioning.engine import run_caption_job
    from core.captioning.job_spec import CaptionJobSpec
    from core.captions import CaptionError, add_model_caption

    photos = tmp_path / "photos"
    for i in range(3):
        write_jpeg(photos / f"p{i}.jpg", seed=i)
    model = tiny_model_dirs["blip"]
    with Library(tmp_path / "lib.db") as library:
        library.add_root(photos)
        library.scan()
        spec = CaptionJobSpec(model=str(model), device="cpu")  # the whole library
        captioner = load_captioner(str(model), device="cpu")
        try:
            first = run_caption_job(library, spec, captioner=captioner)
            assert first.captioned == 3
            real_generate = captioner.generate

            def generate_nothing_for_p1(batch, settings):
                results = real_generate(batch, settings)
                return [replace(r, text="") if i == 1 else r for i, r in enumerate(results)]

            captioner.generate = generate_nothing_for_p1  # the tokenizer decoded nothing
            again = run_caption_job(library, replace(spec, overwrite_model_captions=True), captioner=captioner)
        finally:
            captioner.close()
        assert again.captioned == 2 and again.errors == 1
        assert "empty caption" in again.problems[0]
        with library.db.read() as session:
            texts = list(session.scalars(select(Caption.text)))
            assert "" not in texts
            current = session.scalars(select(Caption.text).where(Caption.is_current.is_(True))).all()
            assert len(current) == 3 and all(current)
            image_states = set(session.scalars(select(Image.state)))
            assert image_states == {"ok"}  # the file is fine; the model failed
            with pytest.raises(CaptionError):
                add_model_caption(session, 1, "  ", model_name="m")


# -- error states do not stick ------------------------------------------------------------


def _status_errors(lib: Path) -> int:
    status = cli(lib, "status")
    assert status.returncode == 0, status.stderr
    row = [line for line in status.stdout.splitlines() if "photos" in line][0]
    return int(row.split()[-1])


def _caption_args(model: Path) -> list[str]:
    return ["--model", str(model), "--device", "cpu", "--max-new-tokens", "4", "--min-new-tokens", "2"]


@pytest.mark.slow
def test_unreadable_file_fixed_in_place_recovers_on_scan(tmp_path: Path, tiny_model_dirs) -> None:
    """An error whose cause goes away without changing size or mtime (chmod 644) clears."""
    photos = tmp_path / "photos"
    good = write_jpeg(tmp_path / "good.jpg", seed=5)
    write_jpeg(photos / "ok.jpg", seed=1)
    bad = photos / "bad.jpg"
    bad.write_bytes(b"\0" * good.stat().st_size)  # unreadable as an image, same size
    stamp = bad.stat().st_mtime_ns
    lib = tmp_path / "lib.db"
    added = cli(lib, "add", str(photos))
    assert "1 unreadable" in added.stdout, added
    assert _status_errors(lib) == 1

    # The cause goes away, size and mtime stay (what chmod 644 does for a non-root user).
    shutil.copyfile(good, bad)
    os.utime(bad, ns=(stamp, stamp))
    scanned = cli(lib, "scan")
    assert "0 unreadable" in scanned.stdout, scanned
    assert _status_errors(lib) == 0
    captioned = cli(lib, "caption", str(photos), *_caption_args(tiny_model_dirs["blip"]))
    assert "2 captioned, 0 skipped, 0 errors" in captioned.stdout, captioned


@pytest.mark.slow
def test_scan_unreadable_count_agrees_with_status(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_jpeg(photos / "ok.jpg", seed=1)
    (photos / "bad.jpg").write_bytes(b"not an image")
    lib = tmp_path / "lib.db"
    assert "1 unreadable" in cli(lib, "add", str(photos)).stdout
    again = cli(lib, "scan")  # nothing changed: the error is still there, and said so
    assert "1 unreadable" in again.stdout, again
    assert _status_errors(lib) == 1


@pytest.mark.slow
def test_file_missing_at_caption_time_then_restored_with_cp_p(tmp_path: Path, tiny_model_dirs) -> None:
    photos = tmp_path / "photos"
    write_jpeg(photos / "a.jpg", seed=1)
    write_jpeg(photos / "b.jpg", seed=2)
    lib = tmp_path / "lib.db"
    assert cli(lib, "add", str(photos)).returncode == 0
    backup = tmp_path / "b-backup.jpg"
    shutil.copy2(photos / "b.jpg", backup)
    (photos / "b.jpg").unlink()  # gone after the scan, before captioning
    model = tiny_model_dirs["blip"]
    first = cli(lib, "caption", str(photos), *_caption_args(model))
    assert "1 captioned, 0 skipped, 1 error " in first.stdout, first
    assert _status_errors(lib) == 1

    shutil.copy2(backup, photos / "b.jpg")  # cp -p: same size and mtime
    # caption alone retries it...
    second = cli(lib, "caption", str(photos), *_caption_args(model))
    assert "1 captioned, 1 skipped, 0 errors" in second.stdout, second
    assert _status_errors(lib) == 0
    # ...and a scan agrees.
    scanned = cli(lib, "scan")
    assert "0 unreadable" in scanned.stdout and "0 missing" in scanned.stdout, scanned


@pytest.mark.slow
def test_file_restored_then_scanned_clears_error(tmp_path: Path, tiny_model_dirs) -> None:
    photos = tmp_path / "photos"
    write_jpeg(photos / "a.jpg", seed=1)
    lib = tmp_path / "lib.db"
    assert cli(lib, "add", str(photos)).returncode == 0
    backup = tmp_path / "a-backup.jpg"
    shutil.copy2(photos / "a.jpg", backup)
    # Truncated while being copied over: decoding fails at caption time.
    data = backup.read_bytes()
    (photos / "a.jpg").write_bytes(data[: len(data) // 2])
    stamp = backup.stat().st_mtime_ns
    model = tiny_model_dirs["blip"]
    cli(lib, "scan")
    first = cli(lib, "caption", str(photos), *_caption_args(model))
    assert "1 error " in first.stdout, first
    assert "1 unreadable" in cli(lib, "scan").stdout  # a decode check, not only the header
    shutil.copy2(backup, photos / "a.jpg")
    os.utime(photos / "a.jpg", ns=(stamp, stamp))
    assert "0 unreadable" in cli(lib, "scan").stdout
    assert _status_errors(lib) == 0
    assert "1 captioned" in cli(lib, "caption", str(photos), *_caption_args(model)).stdout


# -- library file faults --------------------------------------------------------------------


def _library_with_captions(base: Path, count: int = 4) -> Path:
    from core.captions import set_human_caption

    photos = base / "photos"
    for i in range(count):
        write_jpeg(photos / f"p{i}.jpg", seed=i, size=(96, 72))
    lib = base / "lib.db"
    with Library(lib) as library:
        library.add_root(photos)
        library.scan()
        with library.db.write() as session:
            for image_id in session.scalars(select(Image.id)):
                set_human_caption(session, image_id, f"photo number {image_id}")
    return lib


def _mount(folder: Path, *options: str) -> bool:
    """Mount a tmpfs (or remount a bind read-only) at *folder*; False where not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    result = subprocess.run(["mount", *options, str(folder)], capture_output=True)
    return result.returncode == 0


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for folder in reversed(made):
        subprocess.run(["umount", str(folder)], capture_output=True)


def _read_only_folder(folder: Path, mounts: list[Path]) -> None:
    """Make *folder* read-only for this process (a read-only bind mount as root)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        if not (_mount(folder, "--bind", str(folder)) and mounts.append(folder) is None
                and _mount(folder, "-o", "remount,bind,ro")):
            pytest.skip("cannot make a read-only mount here")
    else:
        for child in folder.iterdir():
            child.chmod(0o444)
        folder.chmod(0o555)


@pytest.mark.slow
def test_read_only_library_can_be_shown_and_exported(tmp_path: Path, mounts) -> None:
    lib = _library_with_captions(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(lib, ro / "lib.db")
    _read_only_folder(ro, mounts)
    try:
        status = cli(ro / "lib.db", "status")
        assert status.returncode == 0, status.stderr
        assert "4" in status.stdout and "Traceback" not in status.stderr
        exported = cli(ro / "lib.db", "export", "csv", str(tmp_path / "out"))
        assert exported.returncode == 0, exported.stderr
        assert "Exported 4 images" in exported.stdout
        scanned = cli(ro / "lib.db", "scan")
        assert_clean_error(scanned, "read-only", "'status' and 'export' work")
        assert sorted(p.name for p in ro.iterdir()) == ["lib.db"]  # nothing written beside it
    finally:
        if not (hasattr(os, "geteuid") and os.geteuid() == 0):
            ro.chmod(0o755)


def test_dev_null_is_not_a_library(tmp_path: Path) -> None:
    if not os.path.exists("/dev/null") or sys.platform == "win32":
        pytest.skip("POSIX only")
    before = set(os.listdir("/dev"))
    result = cli(Path("/dev/null"), "status")
    assert_clean_error(result, "/dev/null is not a regular file")
    assert set(os.listdir("/dev")) - before == set()


def test_corrupted_page_says_damaged_and_names_backups(tmp_path: Path) -> None:
    lib = _library_with_captions(tmp_path)
    backup = tmp_path / "lib.backup-0002-20260101-000000-000000.db"
    shutil.copy(lib, backup)
    data = bytearray(lib.read_bytes())
    page = 4096
    assert len(data) >= 4 * page
    data[3 * page : 4 * page] = b"\xff" * page
    lib.write_bytes(bytes(data))
    result = cli(lib, "status")
    assert_clean_error(result, "is damaged", "malformed", str(backup), ".recover")
    assert "not a CaptionDesk library" not in result.stderr


@pytest.mark.slow
def test_truncated_library_is_damaged_not_foreign(tmp_path: Path) -> None:
    lib = _library_with_captions(tmp_path)
    data = lib.read_bytes()
    lib.write_bytes(data[: len(data) // 3])
    result = cli(lib, "status")
    assert_clean_error(result, "is damaged")
    assert "not a CaptionDesk library" not in result.stderr


@pytest.mark.slow
def test_full_disk_while_adding_and_exporting(tmp_path: Path, mounts) -> None:
    full = tmp_path / "full"
    if not _mount(full, "-t", "tmpfs", "-o", "size=300k", "tmpfs"):
        pytest.skip("cannot mount a small tmpfs here")
    mounts.append(full)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(3000):
        (many / f"a_rather_long_file_name_to_fill_the_library_{i:05d}_abcdefghijklmnop.jpg").write_bytes(b"x")
    added = cli(full / "lib.db", "add", str(many))
    assert_clean_error(added, "is full")
    assert "not a CaptionDesk library" not in added.stderr

    lib = _library_with_captions(tmp_path / "lib", count=6)
    small = tmp_path / "small"
    if not _mount(small, "-t", "tmpfs", "-o", "size=8k", "tmpfs"):
        pytest.skip("cannot mount a small tmpfs here")
    mounts.append(small)
    for fmt in ("imagefolder", "parquet", "sidecar"):
        result = cli(lib, "export", fmt, str(small / f"out-{fmt}"))
        assert_clean_error(result, "No space left on device")
        assert "Exception ignored" not in result.stderr
    assert list(small.iterdir()) == []  # nothing half-written left behind


@pytest.mark.slow
def test_full_disk_library_reported_as_full_not_foreign(tmp_path: Path, mounts) -> None:
    full = tmp_path / "full"
    if not _mount(full, "-t", "tmpfs", "-o", "size=4k", "tmpfs"):
        pytest.skip("cannot mount a small tmpfs here")
    mounts.append(full)
    photos = tmp_path / "photos"
    photos.mkdir()
    result = cli(full / "lib.db", "add", str(photos))  # a command that creates the library
    assert_clean_error(result, "is full")
    assert "not a CaptionDesk library" not in result.stderr


@pytest.mark.slow
def test_write_lock_held_by_another_process(tmp_path: Path, monkeypatch, capsys) -> None:
    import core.db
    from captiondesk.cli import main

    lib = _library_with_captions(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time, sqlite3\n"
            "from core.library import Library\n"
            f"lib = Library({str(lib)!r}); lib.start_job('caption', {{}})\n"
            f"conn = sqlite3.connect({str(lib)!r}, isolation_level=None)\n"
            "conn.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(60)\n"
        )],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(core.db, "BUSY_TIMEOUT_MS", 300)
        photos = tmp_path / "photos"
        assert main(["--library", str(lib), "scan", str(photos)]) == 3  # a runtime failure (the library is busy), not a usage error
        err = capsys.readouterr().err
        assert "is busy" in err and f"process {holder.pid}" in err and "caption job" in err, err
        assert "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()
