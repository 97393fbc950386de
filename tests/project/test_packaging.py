"""The frozen application (PyInstaller bundle in dist/CaptionDesk).

Building takes minutes, so the bundle test runs only with ``CAPTIONDESK_TEST_BUNDLE=1``
(``CAPTIONDESK_TEST_BUNDLE_REUSE=1`` tests an existing dist/CaptionDesk without
rebuilding).  The checks of the packaging files themselves are fast and always run.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import tomllib

import pytest

from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
PACKAGING = ROOT / "packaging"
BUNDLE = ROOT / "dist" / "CaptionDesk"
EXECUTABLE = BUNDLE / ("CaptionDesk.exe" if sys.platform == "win32" else "CaptionDesk")


def test_icons_exist_and_are_small() -> None:
    for name in ("captiondesk.png", "captiondesk.ico", "captiondesk.icns"):
        path = ROOT / "resources" / name
        assert path.is_file(), path
        assert path.stat().st_size < 200 * 1024, f"{name} is {path.stat().st_size} bytes"


def test_desktop_entry() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(PACKAGING / "captiondesk.desktop", encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"] == "CaptionDesk"
    assert entry["Exec"].split()[0] == "CaptionDesk"
    assert entry["Icon"] == "captiondesk"
    assert entry["Categories"].endswith(";")


def test_spec_takes_name_and_version_from_pyproject() -> None:
    spec = (PACKAGING / "captiondesk.spec").read_text(encoding="utf-8")
    assert 'copy_metadata("captiondesk")' in spec
    assert "pyproject.toml" in spec
    assert '"core/migrations/versions"' in spec
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "captiondesk" and project["version"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(os.environ.get("CAPTIONDESK_TEST_BUNDLE") != "1",
                    reason="builds the PyInstaller bundle (minutes): set CAPTIONDESK_TEST_BUNDLE=1")
@pytest.mark.skipif(sys.platform == "win32", reason="build.sh/smoke_test.sh are bash scripts")
def test_bundle_builds_and_passes_smoke_test() -> None:
    if not (os.environ.get("CAPTIONDESK_TEST_BUNDLE_REUSE") == "1" and EXECUTABLE.is_file()):
        build = subprocess.run(["bash", str(PACKAGING / "build.sh")], cwd=ROOT,
                               env={**os.environ, "PYTHON": sys.executable},
                               capture_output=True, text=True, timeout=3000, check=False)
        assert build.returncode == 0, build.stdout[-5000:] + build.stderr[-5000:]
    assert EXECUTABLE.is_file()
    assert (BUNDLE / "_internal" / "core" / "migrations" / "script.py.mako").is_file()
    assert list((BUNDLE / "_internal" / "core" / "migrations" / "versions").glob("*.py"))
    smoke = subprocess.run(["bash", str(PACKAGING / "smoke_test.sh"), str(EXECUTABLE)], cwd=ROOT,
                           capture_output=True, text=True, timeout=600, check=False)
    assert smoke.returncode == 0, smoke.stdout[-5000:] + smoke.stderr[-5000:]
    assert "smoke test passed" in smoke.stdout
    assert "ok    GUI" in smoke.stdout
