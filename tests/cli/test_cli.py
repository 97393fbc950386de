"""The command line: add, scan, status; user errors are one line and exit 2; the exit
status scheme (0/1/2/3/130), ``--json`` and the headless start."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from captiondesk.cli import main
from core import captions
from core.library import Library
from core.models import Image
from tests.support.imagegen import write_jpeg
from tests.support.paths import REPO_ROOT


def test_add_scan_status(tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    (photo_dir / "broken.jpg").write_bytes(b"")
    lib = str(tmp_path / "lib.db")
    # Done, but one file failed (unreadable): exit status 1.
    assert main(["--library", lib, "add", str(photo_dir)]) == 1
    out = capsys.readouterr().out
    assert "2 files, 2 new" in out and "1 unreadable" in out
    write_jpeg(photo_dir / "b.jpg", seed=2)
    # The broken file is checked again (an error may clear) and is still unreadable: exit 1.
    assert main(["--library", lib, "scan"]) == 1
    out = capsys.readouterr().out
    assert "1 new" in out and "1 unreadable" in out
    assert main(["--library", lib, "status"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if str(photo_dir.resolve())[-30:] in l)
    # images, uncaptioned, model, human, imported, changed, missing, errors
    assert line.split()[-8:] == ["3", "2", "0", "0", "0", "0", "0", "1"]


def test_library_from_environment(tmp_path: Path, photo_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("CAPTIONDESK_LIBRARY", str(tmp_path / "env.db"))
    write_jpeg(photo_dir / "a.jpg")
    assert main(["add", str(photo_dir)]) == 0
    assert (tmp_path / "env.db").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "/no/such/folder"], "folder not found"),
        (["scan", "/tmp"], "is not a library folder"),
        (["scan"], "no folders yet"),
        (["bogus"], "invalid choice"),
        (["add"], "required"),
    ],
)
@pytest.mark.slow
def test_user_errors_are_one_line_no_traceback(tmp_path: Path, argv: list[str], message: str) -> None:
    Library(tmp_path / "l.db").close()  # an empty library (a missing one is its own error)
    result = subprocess.run(
        [sys.executable, "-m", "captiondesk", "--library", str(tmp_path / "l.db"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "captiondesk", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("CaptionDesk ")


# -- exit status, --json, headless start ----------------------------------------------

REPO = REPO_ROOT


def _cli(*argv: str, env: dict[str, str] | None = None, module: str = "captiondesk",
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``captiondesk ARGV`` in a child process, stdout and stderr captured (not terminals)."""
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def test_help_documents_the_exit_status_scheme() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for phrase in ("0 all done", "1 done, but some items failed", "2 bad arguments", "3 runtime failure",
                   "130 interrupted", "141 stdout's reader went away", "--json"):
        assert phrase in text, phrase


@pytest.mark.parametrize(
    "argv",
    [["caption", "--batch-size", "many"], ["export", "tarball", "out"], ["status", "--bogus"],
     ["models", "rename", "only-one"], ["train", "--name", "x", "--epochs", "many"]],
)
@pytest.mark.slow
def test_bad_arguments_exit_2(tmp_path: Path, argv: list[str]) -> None:
    result = _cli("--library", str(tmp_path / "l.db"), *argv)
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_status_and_models_list_json(tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    lib = str(tmp_path / "lib.db")
    assert main(["--library", lib, "add", str(photo_dir), "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["command"] == "add" and added["counts"]["new"] == 1 and added["exit_code"] == 0
    assert added["added"] == [str(photo_dir.resolve())]
    assert main(["--library", lib, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["folders"][0]["images"] == 1 and status["total"]["uncaptioned"] == 1
    assert main(["--library", lib, "models", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "command": "models list", "exit_code": 0, "versions": [],
        "current": {"model": "Salesforce/blip-image-captioning-base", "version": None,
                    "base_model": "Salesforce/blip-image-captioning-base", "source": "default"}}


@pytest.mark.slow
def test_user_error_with_json_is_still_one_object(tmp_path: Path) -> None:
    Library(tmp_path / "l.db").close()
    result = _cli("--library", str(tmp_path / "l.db"), "scan", "--json")
    assert result.returncode == 2
    payload = json.loads(result.stdout)
    assert payload["exit_code"] == 2 and "no folders yet" in payload["error"]
    assert "no folders yet" in result.stderr


@pytest.mark.slow
def test_import_with_failed_rows_exits_1_and_reports_them_in_json(tmp_path: Path, photo_dir: Path) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    write_jpeg(photo_dir / "b.jpg", seed=2)
    (photo_dir / "a.txt").write_text("a red circle", encoding="utf-8")
    (photo_dir / "b.txt").write_bytes(b"\xff\xfe\x00bad \xc3(")  # not text: this row fails
    lib = str(tmp_path / "lib.db")
    assert _cli("--library", lib, "add", str(photo_dir)).returncode == 0
    result = _cli("--library", lib, "import", "sidecar", str(photo_dir), "--json")
    payload = json.loads(result.stdout)
    assert payload["counts"]["imported"] == 1
    if payload["counts"]["errors"]:
        assert result.returncode == 1 and payload["failed"] == payload["counts"]["errors"] and payload["problems"]
    else:  # this importer reads the bytes leniently: then everything imported is a success
        assert result.returncode == 0
    assert payload["job_id"] and payload["cancelled"] is False


def test_a_closed_stdout_is_quiet_exit_141_not_a_disk_failure(tmp_path: Path, photo_dir: Path) -> None:
    # `captiondesk status | head -1`: the reader is gone before the table is written.
    write_jpeg(photo_dir / "a.jpg")
    lib = str(tmp_path / "lib.db")
    assert main(["--library", lib, "add", str(photo_dir)]) == 0
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "captiondesk", "--library", lib, "status"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=120, cwd=REPO)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


@pytest.mark.slow
def test_locked_library_is_a_runtime_failure_exit_3(tmp_path: Path, photo_dir: Path) -> None:
    lib = tmp_path / "lib.db"
    write_jpeg(photo_dir / "a.jpg")
    assert main(["--library", str(lib), "add", str(photo_dir)]) == 0
    holder = sqlite3.connect(lib, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the library file
    try:
        env = {**os.environ, "CAPTIONDESK_TEST_BUSY_TIMEOUT_MS": "300"}
        result = _cli("--library", str(lib), "scan", "--json", env=env, module="tests.support.cli_child")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 3, result.stderr
    assert "is busy" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads(result.stdout)["exit_code"] == 3


@pytest.mark.slow
def test_no_display_says_so_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["CAPTIONDESK_LIBRARY"] = str(tmp_path / "l.db")
    for argv in ([], [str(tmp_path)]):  # the window alone, or the window on a folder
        result = _cli(*argv, env=env)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "no display" in lines[0] and "captiondesk caption" in lines[0]
    assert not (tmp_path / "l.db").exists()


@pytest.mark.slow
def test_caption_with_a_failed_image_exits_1_json_and_quiet_stderr(tmp_path: Path, photo_dir: Path) -> None:
    from tests.support.tiny_models import build_tiny_blip

    model = build_tiny_blip(tmp_path / "blip")
    write_jpeg(photo_dir / "good.jpg", seed=1)
    good = (photo_dir / "good.jpg").read_bytes()
    (photo_dir / "cut.jpg").write_bytes(good[: len(good) // 2])  # truncated: fails at decode
    lib = str(tmp_path / "lib.db")
    result = _cli("--library", lib, "caption", str(photo_dir), "--model", str(model), "--max-new-tokens", "4",
                  "--device", "cpu", "--json", timeout=300)
    assert result.returncode == 1, result.stderr
    payload = json.loads(result.stdout)  # stdout is exactly one JSON object
    assert payload["command"] == "caption" and payload["exit_code"] == 1
    assert payload["counts"] == {"captioned": 1, "skipped": 0, "errors": 1}
    assert payload["failed"] == 1 and "cut.jpg" in payload["problems"][0]
    assert payload["job_id"] and payload["cancelled"] is False and payload["seconds"] > 0
    # stderr is not a terminal: no third-party bars or warnings, only CaptionDesk's own lines.
    assert "Loading weights" not in result.stderr and "Warning" not in result.stderr, result.stderr
    assert "%|" not in result.stderr
    # --verbose lets them through again.
    verbose = _cli("--library", lib, "--verbose", "caption", "--all", "--model", str(model),
                   "--max-new-tokens", "4", "--device", "cpu", "--overwrite-model-captions", timeout=300)
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr  # the failed image is not retried


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_third_party_notices_stay_off_a_redirected_stderr(verbose: bool) -> None:
    pytest.importorskip("bitsandbytes")
    code = (f"from captiondesk.common import quiet_third_party; quiet_third_party({verbose}); "
            "import warnings; warnings.warn('a library warning'); import bitsandbytes")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    # bitsandbytes logs a notice about its CPU kernels on import; Python warnings likewise.
    assert ("a library warning" in result.stderr) is verbose
    assert ("gemm_4bit" in result.stderr) is verbose


def test_self_check_reports_the_library_it_was_given(tmp_path, capsys) -> None:
    """``--library`` is honoured by self-check too (it reported the default library before)."""
    from captiondesk.cli import main as cli_main

    path = tmp_path / "elsewhere.db"
    cli_main(["--library", str(path), "self-check"])
    out = capsys.readouterr().out
    assert f"{path} (not created yet)" in out


# -- hostile input: one line, exit 2, nothing lost ------------------------------------


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's stderr, which must be exactly one ``captiondesk: error:`` line."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("captiondesk: error: "), err
    return err[0]


@pytest.mark.parametrize("argv", [
    ["status"], ["scan"], ["caption", "--all"], ["export", "csv", "OUT"], ["write-metadata"],
    ["import", "sidecar", "SRC"], ["models", "list"], ["train", "--base", "x", "--name", "y"],
    ["eval", "--model", "x"],
])
def test_a_mistyped_library_is_refused_not_created(tmp_path: Path, argv: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "libary.db"
    argv = [str(tmp_path / a) if a in ("OUT", "SRC") else a for a in argv]
    assert main(["--library", str(typo), *argv]) == 2
    assert _one_error_line(capsys) == (f"captiondesk: error: no library at {typo} "
                                       f"(create one with: captiondesk add FOLDER --library {typo})")
    assert not typo.exists() and not (tmp_path / "OUT").exists()


def test_only_commands_that_add_folders_create_a_library(tmp_path: Path, photo_dir: Path, monkeypatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # The README's first run, `captiondesk caption FOLDER` on the default library, still
    # creates it (here an empty folder and a model folder: nothing to caption, no load).
    monkeypatch.setenv("CAPTIONDESK_LIBRARY", str(tmp_path / "first.db"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "blip"}', encoding="utf-8")
    assert main(["caption", str(photo_dir), "--model", str(model)]) == 0
    assert "0 captioned" in capsys.readouterr().out and (tmp_path / "first.db").exists()
    # `add` with a named library creates it; a folder given as --library is refused.
    assert main(["--library", str(tmp_path / "new.db"), "add", str(photo_dir)]) == 0
    assert (tmp_path / "new.db").exists()
    capsys.readouterr()
    assert main(["--library", str(tmp_path), "status"]) == 2
    assert "names a folder" in _one_error_line(capsys)
    # A new folder ("new/") too: not a library file named "new".
    assert main(["--library", f"{tmp_path / 'new-folder'}/", "add", str(photo_dir)]) == 2
    assert "names a folder" in _one_error_line(capsys) and not (tmp_path / "new-folder").exists()


@pytest.mark.parametrize(("model", "message"), [
    ("some-typo", "There is no model folder 'some-typo' and it is not a Hugging Face hub id"),
    ("./no/such/folder", "The model folder './no/such/folder' does not exist"),
    ("someone/not-downloaded", "The model 'someone/not-downloaded' is not downloaded yet"),  # HF_HUB_OFFLINE=1
    ("EMPTY", "there is no config.json in it"),
])
def test_caption_checks_the_model_even_with_nothing_to_caption(
    tmp_path: Path, photo_dir: Path, model: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = str(tmp_path / "lib.db")
    assert main(["--library", lib, "add", str(photo_dir)]) == 0  # an empty folder: nothing to caption
    capsys.readouterr()
    if model == "EMPTY":
        model = str(tmp_path)
    assert main(["--library", lib, "caption", "--all", "--model", model]) == 2
    assert message in _one_error_line(capsys)


def test_caption_checks_the_adapter_with_nothing_to_caption(tmp_path: Path, photo_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    lib = str(tmp_path / "lib.db")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "blip"}', encoding="utf-8")
    assert main(["--library", lib, "add", str(photo_dir)]) == 0
    capsys.readouterr()
    assert main(["--library", lib, "caption", "--all", "--model", str(model), "--adapter", "./no-adapter"]) == 2
    assert "The adapter './no-adapter' could not be applied: the folder does not exist" in _one_error_line(capsys)


def test_write_metadata_and_export_agree_when_nothing_is_verified(tmp_path: Path, photo_dir: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    lib = tmp_path / "lib.db"
    assert main(["--library", str(lib), "add", str(photo_dir)]) == 0
    with Library(lib) as library, library.db.write() as session:
        (image_id,) = session.scalars(select(Image.id))
        captions.add_model_caption(session, image_id, "a model caption", model_name="m", score=-0.5)
    before = (photo_dir / "a.jpg").read_bytes()
    capsys.readouterr()
    assert main(["--library", str(lib), "export", "csv", str(tmp_path / "out"), "--only", "verified"]) == 2
    exported = _one_error_line(capsys)
    assert main(["--library", str(lib), "write-metadata", "--only", "verified"]) == 2
    written = _one_error_line(capsys)
    assert exported.startswith("captiondesk: error: nothing to export: no readable images with verified (human) "
                               "captions; verify captions first")
    assert written == exported.replace("nothing to export", "nothing to write")
    assert (photo_dir / "a.jpg").read_bytes() == before  # the photo was not touched
    # Captioned (the model's caption) is something to write: done, exit 0.
    assert main(["--library", str(lib), "write-metadata", "--sidecar"]) == 0


@pytest.mark.parametrize(("fmt", "src", "message"), [
    ("csv", "photos/a.jpg", "a.jpg: needs a file name column"),  # a JPEG is no table
    ("sidecar", "photos/a.jpg", "no sidecar captions found in"),  # a file, not a folder of sidecars
    ("sidecar", "photos", "no sidecar captions found in"),  # a folder without any
    ("csv", "header-only.csv", "no csv captions found in"),
])
def test_import_that_reads_no_caption_is_one_line_exit_2(tmp_path: Path, photo_dir: Path, fmt: str, src: str,
                                                         message: str, capsys: pytest.CaptureFixture[str]) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    (tmp_path / "header-only.csv").write_text("file_name,text\n", encoding="utf-8")
    lib = str(tmp_path / "lib.db")
    assert main(["--library", lib, "add", str(photo_dir)]) == 0
    capsys.readouterr()
    assert main(["--library", lib, "import", fmt, str(tmp_path / src)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("captiondesk: error: nothing to import: ") and message in line


def test_a_mistyped_model_with_photos_to_caption_fails_at_once(tmp_path: Path, photo_dir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """With work to do as well: one line before anything is recorded (no job, no network retries)."""
    write_jpeg(photo_dir / "a.jpg", seed=1)
    lib = tmp_path / "lib.db"
    assert main(["--library", str(lib), "add", str(photo_dir)]) == 0
    capsys.readouterr()
    assert main(["--library", str(lib), "caption", "--all", "--model", "some-typo"]) == 2
    assert "check the spelling of --model" in _one_error_line(capsys)
    with Library(lib) as library:
        assert library.jobs("caption") == []
