"""What the controllers may use of the main window, as a Protocol (no import of the window).

The main window satisfies it; a controller names the widgets and services it works with
here instead of importing :mod:`desktop_app.main_window`, so the window depends on the
controllers and never the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PySide6.QtCore import QThreadPool, SignalInstance
    from PySide6.QtWidgets import QLabel, QStatusBar

    from core.library import Library
    from desktop_app.app_settings import AppSettings
    from desktop_app.caption_panel import CaptionPanel
    from desktop_app.filter_bar import FilterBar
    from desktop_app.grid_model import ImageGridModel
    from desktop_app.jobs_widget import JobStatusWidget
    from desktop_app.library_views import GridContent, JobCatchUp, SidebarContent
    from desktop_app.model_thread import CaptionService
    from desktop_app.operations import LibraryNotifier
    from desktop_app.review import CaptionUndoStack
    from desktop_app.sidebar import LibrarySidebar
    from desktop_app.thumbnail_grid import ThumbnailGrid
    from desktop_app.thumbnails import PreviewLoader, ThumbnailCache
    from desktop_app.window_widgets import PreviewView


class WindowShell(Protocol):
    """The window's shared state, widgets and messages that controllers work with."""

    library: Library | None
    settings: AppSettings
    pool: QThreadPool
    scan_pool: QThreadPool
    notifier: LibraryNotifier
    captioning: CaptionService
    caption_undo: CaptionUndoStack
    model: ImageGridModel
    grid: ThumbnailGrid
    grid_content: GridContent
    sidebar: LibrarySidebar
    sidebar_content: SidebarContent
    job_catch_up: JobCatchUp
    filter_bar: FilterBar
    panel: CaptionPanel
    preview: PreviewView
    preview_loader: PreviewLoader
    thumbs: ThumbnailCache
    scan_status: JobStatusWidget
    caption_status: JobStatusWidget
    failures_label: QLabel
    library_opened: SignalInstance
    scan_finished: SignalInstance
    # Sibling controllers, for the few verbs that chain (a scan after adding a folder).
    libraries: Any
    scans: Any
    caption_jobs: Any
    image_review: Any

    def statusBar(self) -> QStatusBar: ...
    def setWindowTitle(self, title: str) -> None: ...
    def activateWindow(self) -> None: ...
    def report_error(self, message: str, detail: str | None = None) -> None: ...
    def report_exception(self, exc: BaseException) -> None: ...
    def announce(self, message: str) -> None: ...
    def update_actions(self) -> None: ...
    def hide_banner(self) -> None: ...
    def show_uncaptioned_banner(self, count: int) -> None: ...
