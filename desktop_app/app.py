"""Start the CaptionDesk desktop application.

``main()`` shows the window first and opens the library afterwards on a worker thread
(opening may migrate and back up a big file), so the window appears at once whatever
the library's size.  ``captiondesk FOLDER`` (``main(["FOLDER"])``) adds the folder,
scans it in the background and shows it.

Unexpected exceptions in Qt callbacks are caught by :func:`_install_excepthook` and shown
in the log panel and a dialog, not as a traceback on a console the user never sees.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from core import APP_NAME, __version__

log = logging.getLogger("captiondesk.gui")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captiondesk", description="CaptionDesk desktop application")
    parser.add_argument("--library", metavar="PATH", help="library file to open")
    parser.add_argument("folder", nargs="?", metavar="FOLDER", help="add this folder (scanned in the background) and show it")
    return parser


#: Seconds a thread waiting for the GIL waits before asking the holder to let go.
#: Python's default (5 ms) lets a busy scan or decode thread keep the GUI thread waiting
#: at every Python->Qt call; 1 ms keeps a repaint from stretching into a visible stall.
GIL_SWITCH_INTERVAL = 0.001


def tune_interpreter() -> None:
    """Process-wide settings for an interactive app with busy worker threads."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    # The window shows loading progress itself: no tqdm bars ("Loading weights") on the terminal.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _install_excepthook(window) -> None:
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, value, tb)
            return
        detail = "".join(traceback.format_exception(kind, value, tb))
        logging.getLogger("captiondesk.gui").error("Unexpected error: %s", value)
        try:
            window.report_error(f"Unexpected error: {kind.__name__}: {value}", detail)
        except RuntimeError:  # window already deleted
            previous(kind, value, tb)

    sys.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    """Open the main window; returns the application's exit status."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from core.library import default_library_path
    from desktop_app.app_settings import AppSettings
    from desktop_app.main_window import MainWindow

    tune_interpreter()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setApplicationVersion(__version__)
    icon = Path(__file__).resolve().parent / "resources" / "captiondesk.png"
    if icon.is_file():  # package data; absent only in a broken install
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))

    settings = AppSettings()
    window = MainWindow(settings)
    _install_excepthook(window)
    window.show()

    library_path = Path(args.library) if args.library else None
    if library_path is None:
        library_path = Path(settings.last_library) if settings.last_library else default_library_path()
    folder = args.folder

    def start() -> None:
        window.libraries.open_library(library_path)
        if folder:
            # Added once the library is open (on its worker); the scan runs in the background.
            window.library_opened.connect(lambda _lib: window.libraries.add_folder(folder), type=_single_shot())

    QTimer.singleShot(0, start)
    code = app.exec()
    # Deliver what worker threads queued before the window closed, then delete it while
    # the interpreter is fully alive (PySide6 can crash freeing queued Python payloads
    # during interpreter shutdown).
    from PySide6.QtCore import QCoreApplication, QEvent

    window.deleteLater()
    app.processEvents()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    from desktop_app.model_thread import threads_still_running

    if threads_still_running():
        # A model job that could not stop in time (a model still loading): do not wait
        # minutes for it, and do not let the interpreter's shutdown delete a running
        # thread.  What it committed is in the library already; the rest is redone on
        # the next run, as after any interruption.
        logging.getLogger("captiondesk").warning("Quitting while a model job was still stopping")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _single_shot():
    from PySide6.QtCore import Qt

    return Qt.ConnectionType.SingleShotConnection


if __name__ == "__main__":  # python -m desktop_app.app
    sys.exit(main())
