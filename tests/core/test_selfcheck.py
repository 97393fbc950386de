"""``captiondesk self-check`` in the source tree (the bundle is covered by test_packaging)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from captiondesk import selfcheck_command
from captiondesk.cli import build_parser
from core import selfcheck
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT


def test_self_check_passes_in_source_tree(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["self-check"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    for name in ("python", "torch", "transformers", "peft", "PySide6", "SQLAlchemy", "Pillow",
                 "device", "library", "default model", "migrations", "temp library", "Qt plugins"):
        assert f"  {name} " in out, f"{name} missing from:\n{out}"
    assert "self-check passed" in out


def test_migrations_check_finds_files_and_head() -> None:
    check = selfcheck.check_migrations()
    assert check.ok, check.detail
    assert "head" in check.detail


def test_missing_migrations_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import core.migrate

    monkeypatch.setattr(core.migrate, "MIGRATIONS_DIR", tmp_path)
    check = selfcheck.check_migrations()
    assert not check.ok and check.essential
    assert "env.py" in check.detail


def test_broken_essential_library_exits_nonzero(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(selfcheck, "LIBRARIES", (("nosuchlib", "captiondesk_no_such_module", True),))
    monkeypatch.setattr(selfcheck, "check_device", lambda: selfcheck.Check("device", True, "cpu"))
    assert selfcheck_command.main([]) == 1
    captured = capsys.readouterr()
    assert "FAIL  nosuchlib" in captured.out
    assert "self-check FAILED: nosuchlib" in captured.err


def test_model_cache_found_and_missing(tmp_path: Path) -> None:
    model = selfcheck.DEFAULT_MODEL
    missing = selfcheck.check_model_cache(model, cache_dir=tmp_path)
    assert not missing.ok and not missing.essential  # only a note: caption downloads it

    repo = tmp_path / ("models--" + model.replace("/", "--"))
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    found = selfcheck.check_model_cache(model, cache_dir=tmp_path)
    assert found.ok, found.detail


def test_entry_script_routes_self_check_and_version() -> None:
    """packaging/captiondesk_entry.py is what the bundle runs: same behaviour in source."""
    entry = ROOT / "packaging" / "captiondesk_entry.py"
    version = subprocess.run([sys.executable, str(entry), "--version"], capture_output=True,
                             text=True, cwd=ROOT, timeout=120, check=False)
    from core import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"CaptionDesk {__version__}"


@pytest.mark.slow
def test_gui_smoke_test_in_source_tree(tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path),
           "CAPTIONDESK_SMOKE_EXIT_MS": "500", "CAPTIONDESK_LIBRARY": str(tmp_path / "lib.db")}
    result = subprocess.run([sys.executable, "-m", "captiondesk", "self-check", "--smoke-test"], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    GUI" in result.stdout
