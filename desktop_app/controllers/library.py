"""Opening a library and adding or removing photo folders (menu, empty state, drag and drop)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QUrl
from PySide6.QtWidgets import QFileDialog, QMessageBox

from core.library import Library, LibraryError
from desktop_app.dialog_kit import remember_folder, start_folder
from desktop_app.operations import LibraryChanges, ReadOp, WriteOp

if TYPE_CHECKING:
    from collections.abc import Callable

    from desktop_app.caption_panel import CaptionPanel
    from desktop_app.controllers.image_review import ImageReviewController
    from desktop_app.controllers.scan import ScanController
    from desktop_app.controllers.shell import WindowShell
    from desktop_app.grid_model import ImageGridModel
    from desktop_app.library_views import SidebarContent
    from desktop_app.model_thread import CaptionService
    from desktop_app.review import CaptionUndoStack
    from desktop_app.thumbnails import ThumbnailCache
    from desktop_app.window_widgets import PreviewView

log = logging.getLogger("captiondesk.gui")


def dropped_folders(urls: list[QUrl]) -> list[Path]:
    """The local folders among dropped *urls* (files and remote URLs are ignored)."""
    folders = []
    for url in urls:
        if url.isLocalFile():
            path = Path(url.toLocalFile())
            if path.is_dir():
                folders.append(path)
    return folders


class LibraryController:
    """Which library the window shows, and its folders; the views follow the notice it sends."""

    def __init__(self, window: WindowShell, *, service: CaptionService, current: ImageReviewController,
                 scans: ScanController, caption_undo: CaptionUndoStack, model: ImageGridModel,
                 thumbs: ThumbnailCache, panel: CaptionPanel, preview: PreviewView,
                 sidebar_content: SidebarContent, opened: Callable[[Library], None]) -> None:
        self.window = window
        self.service = service
        self.current = current
        self.scans = scans
        self.caption_undo = caption_undo
        self.model = model
        self.thumbs = thumbs
        self.panel = panel
        self.preview = preview
        self.sidebar_content = sidebar_content
        #: Called with each library shown (the window's ``library_opened`` signal).
        self.opened = opened
        #: The window opened the shown library itself (and closes it when done).
        self.owned = False

    def open_library(self, path: Path | str) -> None:
        """Open (and migrate) *path* on a worker thread; the window stays responsive."""
        w = self.window
        path = Path(path)
        busy = self.busy_with_library()
        if busy:
            w.report_error(busy)
            return
        w.statusBar().showMessage(f"Opening {path}…")

        def done(library: Library) -> None:
            self.set_library(library, owned=True)
            w.settings.last_library = str(library.path)
            w.statusBar().showMessage(f"Library {library.path}", 5000)

        def failed(exc: BaseException) -> None:
            w.statusBar().clearMessage()
            w.report_error(f"Cannot open the library {path}: {exc}", getattr(exc, "__traceback_text__", None))

        ReadOp(lambda: Library(path), success=done, failure=failed).run(w.pool)

    def busy_with_library(self) -> str | None:
        """Why another library cannot open now (None: it can).

        Captioning, training, evaluating and merging read and write the open library
        until they end: closing it under them would fail the job halfway."""
        w = self.window
        job = self.service.current_job
        if w.library is None or job is None:
            return None
        return (f"{job} is running on this library. Another library can open when it has "
                "finished or been cancelled.")

    def set_library(self, library: Library | None, *, owned: bool = False) -> None:
        """Show *library* (None: nothing).  *owned*: the window closes it when done."""
        w = self.window
        self.current.commit_edit()
        if w.library is not None and self.owned and w.library is not library:
            self.scans.cancel_scan()
            w.library.close()
        w.library = library
        self.owned = owned
        self.caption_undo.set_library(library)
        self.model.set_library(library)
        if library is not None:
            self.thumbs.cache_dir = library.cache_dir
            w.setWindowTitle(f"CaptionDesk — {library.path.name}")
        self.panel.show_image(None, None)
        self.preview.show_pixmap(None, None, "")
        w.update_actions()
        w.notifier.notify(LibraryChanges(library=True))
        if library is not None:
            self.opened(library)

    def choose_library(self) -> None:
        w = self.window
        path, _ = QFileDialog.getSaveFileName(
            w,
            "Open or create a library",
            w.settings.last_library or "",
            "CaptionDesk library (*.db)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            self.open_library(path)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Add a photo folder", start_folder("photos"))
        if folder:
            remember_folder("photos", folder)
            self.add_folder(folder)

    def add_folder(self, folder: Path | str, *, scan: bool = True) -> int | None:
        """Add *folder* to the library, scan it in the background and show it."""
        w = self.window
        if w.library is None:
            w.report_error("Open a library first.")
            return None
        try:
            root = w.library.add_root(folder)
        except LibraryError as exc:
            w.report_error(str(exc))
            return None
        log.info("Added folder %s", root.path)
        self.sidebar_content.pending_location = (root.id, None)
        w.notifier.notify(LibraryChanges(folders=True))
        if scan:
            self.scans.start_scan([root.id])
        return root.id

    def add_dropped(self, urls: list[QUrl]) -> list[int]:
        """Add every local folder among dropped *urls*; the ids of the folders added."""
        added = []
        for folder in dropped_folders(urls):
            root_id = self.add_folder(folder, scan=False)
            if root_id is not None:
                added.append(root_id)
        if added:
            self.scans.start_scan(added)
        return added

    def remove_root(self, root_id: int, *, confirm: bool = True) -> None:
        w = self.window
        if w.library is None:
            return
        if confirm:
            answer = QMessageBox.question(
                w,
                "Remove folder",
                "Remove this folder from the library?\n\nIts images' records and captions are "
                "deleted from the library; the files on disk are not touched.",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
        if self.scans.scanning:
            w.report_error("Wait for the scan to finish (or cancel it) before removing a folder.")
            return
        library = w.library
        w.statusBar().showMessage("Removing folder…")

        def done(_result: object) -> None:
            w.statusBar().showMessage("Folder removed", 4000)
            self.caption_undo.undo_stack.clear()  # its captions are gone

        WriteOp(lambda: library.remove_root(root_id), LibraryChanges(folders=True, images=True), w.notifier,
                success=done, failure=w.report_exception).run(w.pool)
