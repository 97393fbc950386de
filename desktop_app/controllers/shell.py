"""What a controller may use of the main window, as a Protocol (no import of the window).

Each controller is handed the widgets it owns in its constructor; from the window it
gets only this: the open library, the preferences, the pool, the change notice, and the
ways to tell the person something.  So the window depends on the controllers and never
the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PySide6.QtCore import QThreadPool
    from PySide6.QtWidgets import QStatusBar

    from core.library import Library
    from desktop_app.app_settings import AppSettings
    from desktop_app.operations import LibraryNotifier


class WindowShell(Protocol):
    """The window as the controllers see it (also the parent of the dialogs they open)."""

    #: The library shown (set by the library controller only).
    library: Library | None
    settings: AppSettings
    pool: QThreadPool
    notifier: LibraryNotifier

    def statusBar(self) -> QStatusBar: ...
    def setWindowTitle(self, title: str) -> None: ...
    def activateWindow(self) -> None: ...
    def report_error(self, message: str, detail: str | None = None) -> None: ...
    def report_exception(self, exc: BaseException) -> None: ...
    def announce(self, message: str) -> None: ...
    def update_actions(self) -> None: ...
