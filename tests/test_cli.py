"""The command line: add, scan, status; user errors are one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from captiondesk.cli import main
from tests.imagegen import write_jpeg


def test_add_scan_status(tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    (photo_dir / "broken.jpg").write_bytes(b"")
    lib = str(tmp_path / "lib.db")
    # Done, but one file failed (unreadable): exit status 1.
    assert main(["--library", lib, "add", str(photo_dir)]) == 1
    out = capsys.readouterr().out
    assert "2 files, 2 new" in out and "1 unreadable" in out
    write_jpeg(photo_dir / "b.jpg", seed=2)
    assert main(["--library", lib, "scan"]) == 0  # the broken file is unchanged: not read again
    assert "1 new" in capsys.readouterr().out
    assert main(["--library", lib, "status"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if str(photo_dir.resolve())[-30:] in l)
    # images, uncaptioned, model, human, imported, missing, errors
    assert line.split()[-7:] == ["3", "2", "0", "0", "0", "0", "1"]


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
def test_user_errors_are_one_line_no_traceback(tmp_path: Path, argv: list[str], message: str) -> None:
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
