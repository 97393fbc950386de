"""The Qt half of ``captiondesk self-check``: platform plugins and a GUI smoke test.

Kept here so that :mod:`core` never imports Qt or the desktop app;
:mod:`captiondesk.selfcheck_command` adds these checks to core's (lazily).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from core.selfcheck import Check


def check_qt_plugins() -> Check:
    try:
        from PySide6.QtCore import QLibraryInfo

        plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath))
        platforms = sorted(p.name for p in (plugins / "platforms").glob("*") if p.is_file())
        if not platforms:
            return Check("Qt plugins", False, f"no platform plugins in {plugins / 'platforms'}")
        names = [name.split(".")[0].removeprefix("libq").removeprefix("q") for name in platforms]
        return Check("Qt plugins", True, f"platforms: {', '.join(names)} ({plugins})")
    except Exception as exc:  # noqa: BLE001 - a self-check reports every failure
        return Check("Qt plugins", False, f"{type(exc).__name__}: {exc}")


def smoke_test_gui(min_ms: int = 1500, timeout_ms: int = 60000) -> Check:
    """Open the real main window on a temp library, wait until it is open, close it.

    Settings go to a temporary folder (where Qt allows it) so the user's window layout
    and last library are left alone.
    """
    with tempfile.TemporaryDirectory(prefix="captiondesk-smoke-") as tmp:
        from PySide6.QtCore import QSettings, QTimer
        from PySide6.QtWidgets import QApplication

        for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
            QSettings.setPath(fmt, QSettings.Scope.UserScope, tmp)
        app = QApplication.instance() or QApplication(sys.argv[:1])
        started = time.monotonic()
        state: dict[str, object] = {"opened": False, "title": ""}

        def poll() -> None:
            from desktop_app.main_window import MainWindow

            elapsed = (time.monotonic() - started) * 1000
            windows = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
            if windows and windows[0].library is not None:
                state["opened"] = True
                state["title"] = windows[0].windowTitle()
            if (state["opened"] and elapsed >= min_ms) or elapsed >= timeout_ms:
                timer.stop()
                for window in windows:
                    window.close()
                app.quit()

        timer = QTimer()
        timer.setInterval(100)
        timer.timeout.connect(poll)
        timer.start()

        from desktop_app.app import main as gui_main

        code = gui_main(["--library", str(Path(tmp) / "smoke.db")])
        seconds = time.monotonic() - started
    if code != 0:
        return Check("GUI", False, f"the application exited with status {code}")
    if not state["opened"]:
        return Check("GUI", False, f"the main window did not open a library within {timeout_ms / 1000:.0f} s")
    return Check("GUI", True, f"main window {state['title']!r} opened a library and closed ({seconds:.1f} s)")
