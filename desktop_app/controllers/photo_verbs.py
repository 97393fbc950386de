"""Verbs on photos: the grid's context menu, the loupe and the comparison.

The menu (:class:`~desktop_app.photo_menu.PhotoMenu`) lists each verb once; they act on
the selected photos (else the current one) through the same controllers and core
functions as the menu bar: accepting and "not verified" go through the caption undo
stack (:mod:`core.edits`), captioning, export and metadata open their dialogs with the
selection as scope, find-and-replace can be limited to the selection.  The loupe follows
the grid's current photo, so moving in it moves the grid and the caption panel too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QAction, QKeySequence

from core import view_rows
from core.captions import current_caption
from desktop_app import photo_menu
from desktop_app.dialog_kit import SCOPE_SELECTION
from desktop_app.loupe import CompareView, Loupe
from desktop_app.operations import LibraryChanges
from desktop_app.photo_menu import PhotoMenu
from desktop_app.thumbnails import PreviewLoader

if TYPE_CHECKING:
    from desktop_app.controllers.caption_jobs import CaptionJobsController
    from desktop_app.controllers.image_review import ImageReviewController
    from desktop_app.controllers.shell import WindowShell
    from desktop_app.grid_model import ImageGridModel
    from desktop_app.review import CaptionUndoStack
    from desktop_app.sidebar import LibrarySidebar
    from desktop_app.thumbnail_grid import ThumbnailGrid
    from desktop_app.thumbnails import ThumbnailCache
    from desktop_app.verb_menus import VerbMenus

#: The loupe decodes up to this many pixels a side, so 100 % is 100 % for most cameras.
LOUPE_MAX_SIZE = 8000


class PhotoController:
    def __init__(self, window: WindowShell, *, grid: ThumbnailGrid, model: ImageGridModel, review: ImageReviewController,
                 caption_jobs: CaptionJobsController, caption_undo: CaptionUndoStack, sidebar: LibrarySidebar,
                 thumbs: ThumbnailCache, verbs: Callable[[], VerbMenus]) -> None:
        self.window = window
        self.grid = grid
        self.model = model
        self.review = review
        self.caption_jobs = caption_jobs
        self.caption_undo = caption_undo
        self.sidebar = sidebar
        self.thumbs = thumbs
        self._verbs = verbs
        self.loupe: Loupe | None = None
        self.compare: CompareView | None = None
        self._loader = PreviewLoader(window.pool, max_size=LOUPE_MAX_SIZE, parent=grid)
        self._loader.loaded.connect(self._on_loupe_image)
        self._compare_loaders = tuple(PreviewLoader(window.pool, max_size=LOUPE_MAX_SIZE, parent=grid) for _ in range(2))
        for loader in self._compare_loaders:
            loader.loaded.connect(lambda image_id, image, error: self.compare and self.compare.set_image(image_id, image, error))
        self.menu = self._build_menu()
        grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        grid.customContextMenuRequested.connect(self.show_menu)
        grid.doubleClicked.connect(lambda _index: self.open_loupe())
        space = QAction("Open in loupe", grid)
        space.setShortcut(QKeySequence(Qt.Key.Key_Space))
        space.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        space.triggered.connect(lambda _checked=False: self.open_loupe())
        grid.addAction(space)
        grid.selectionModel().currentChanged.connect(lambda *_: self._follow_current())
        window.notifier.library_changed.connect(self._on_library_changed)

    # -- the menu ------------------------------------------------------------------------------

    def _build_menu(self) -> PhotoMenu:
        menu = PhotoMenu(self.grid)
        one = lambda ids: len(ids) == 1  # noqa: E731
        menu.add("loupe", "Open in loupe", lambda ids: self.open_loupe(), shortcut="Space", section="view")
        menu.add("compare", "Compare the two selected", self.open_compare, enabled=lambda ids: len(ids) == 2,
                 section="view")
        menu.add("caption", "Caption / re-caption {n} photo(s)…", lambda ids: self.caption_jobs.open_caption_dialog(
            selection=True), section="caption")
        menu.add("accept", "Accept caption(s)", lambda ids: self.accept(ids), shortcut="Ctrl+Shift+A", section="caption")
        menu.add("unverify", "Mark as not verified", lambda ids: self.unverify(ids), section="caption")
        menu.add("replace", "Find and replace in the selection…", lambda ids: self.review.open_find_replace(),
                 section="caption")
        menu.add("export", "Export {n} photo(s)…", lambda ids: self._open_scoped("open_export"), section="out")
        menu.add("write_metadata", "Write caption(s) into {n} photo(s)…",
                 lambda ids: self._open_scoped("open_write_metadata"), section="out")
        menu.add("show_in_folder", "Show in file manager", lambda ids: photo_menu.show_in_file_manager(self.paths(ids)),
                 section="files")
        menu.add("open_with", "Open in default app", lambda ids: photo_menu.open_in_default_app(self.paths(ids)),
                 section="files")
        menu.add("copy_path", "Copy path", lambda ids: photo_menu.copy_paths(self.paths(ids)), section="files")
        menu.add("reveal", "Reveal in folder tree", lambda ids: self.reveal_in_tree(ids[0]), enabled=one,
                 section="files")
        return menu

    def show_menu(self, pos: QPoint) -> None:
        index = self.grid.indexAt(pos)
        if index.isValid() and not self.grid.selectionModel().isSelected(index):
            self.review.go_to_row(index.row(), scroll=False)
        self.menu.popup(self.review.target_ids(), self.grid.viewport().mapToGlobal(pos))

    # -- verbs ----------------------------------------------------------------------------------

    def paths(self, ids: list[int]) -> list[str]:
        library = self.window.library
        if library is None:
            return []
        with library.db.read() as session:
            rows = view_rows.fetch_rows(session, ids)
        return [rows[i].path for i in ids if i in rows]

    def accept(self, _ids: list[int]) -> bool:
        """The menu acts on the selection, as Edit → Accept does (:meth:`ImageReviewController.accept_current`)."""
        return self.review.accept_current()

    def unverify(self, _ids: list[int]) -> int:
        return self.review.unverify_selection()

    def _open_scoped(self, opener: str) -> Any:
        dialog = getattr(self._verbs(), opener)()
        picker = getattr(dialog, "scope_picker", None)
        if picker is not None:
            picker.set_key(SCOPE_SELECTION)
        return dialog

    def reveal_in_tree(self, image_id: int) -> bool:
        """Select the photo's folder in the sidebar (the grid then shows that folder) and the photo in it."""
        library = self.window.library
        if library is None:
            return False
        with library.db.read() as session:
            row = view_rows.fetch_rows(session, [image_id]).get(image_id)
        if row is None:
            return False
        parent = str(PurePosixPath(row.rel_path).parent)
        location = (row.root_id, None if parent in ("", ".") else parent + "/")
        if not self.sidebar.select(location):
            return False
        item = self.sidebar.tree.currentItem()
        while item is not None:
            item.setExpanded(True)
            item = item.parent()
        self.sidebar.tree.scrollToItem(self.sidebar.tree.currentItem())
        return True

    # -- the loupe ------------------------------------------------------------------------------

    def open_loupe(self) -> Loupe | None:
        if self.review.current_row() is None:
            return None
        if self.loupe is None:
            self.loupe = Loupe(self.grid.window())
            self.loupe.next_requested.connect(self._loupe_next)
            self.loupe.previous_requested.connect(self._loupe_previous)
            self.loupe.save_requested.connect(lambda image_id, text: self.caption_undo.save_edit(image_id, text))
            self.loupe.accept_requested.connect(lambda image_id: self.caption_undo.accept(image_id))
            self.loupe.closed.connect(lambda: self.grid.setFocus(Qt.FocusReason.OtherFocusReason))
            from desktop_app.metadata_panel import MetadataPanel

            self.loupe_info = MetadataPanel(self.window.pool)
            self.loupe.add_side_widget(self.loupe_info)
            self.loupe.resize(self.grid.window().size())
        self.review.commit_edit()
        self.loupe.show()
        self.loupe.raise_()
        self.loupe.activateWindow()
        self.loupe.setFocus(Qt.FocusReason.ActiveWindowFocusReason)
        self._show_in_loupe(force=True)
        return self.loupe

    def _loupe_next(self) -> None:
        assert self.loupe is not None
        self.loupe.commit()
        self.review.next_image()

    def _loupe_previous(self) -> None:
        assert self.loupe is not None
        self.loupe.commit()
        self.review.previous_image()

    def _follow_current(self) -> None:
        if self.loupe is not None and self.loupe.isVisible():
            self.loupe.commit()
            self._show_in_loupe(force=True)

    def _show_in_loupe(self, *, force: bool) -> None:
        loupe, library, row = self.loupe, self.window.library, self.review.current_row()
        if loupe is None or library is None or row is None:
            return
        if not force and loupe.is_dirty():
            return
        with library.db.read() as session:
            current = current_caption(session, row.id)
        position = f"{self.review.current_index_row() + 1} of {self.model.rowCount()}"
        same = loupe.image_id == row.id
        loupe.show_row(row, current.text if current is not None else "", position)
        if not same:
            self.loupe_info.follow(row)
            loupe.show_loading(self.thumbs.pixmap(row.fingerprint, row.path))
            self._loader.request(row.id, row.path)

    def _on_loupe_image(self, image_id: int, image: Any, error: str | None) -> None:
        if self.loupe is not None:
            self.loupe.set_image(image_id, image, error)

    def _on_library_changed(self, changes: LibraryChanges) -> None:
        loupe = self.loupe
        if loupe is not None and loupe.isVisible() and (loupe.image_id in changes.captions or changes.any_caption):
            self._show_in_loupe(force=False)

    # -- compare ----------------------------------------------------------------------------------

    def open_compare(self, ids: list[int]) -> CompareView | None:
        library = self.window.library
        if library is None or len(ids) != 2:
            return None
        with library.db.read() as session:
            rows = view_rows.fetch_rows(session, ids)
            captions = [current_caption(session, i) for i in ids]
        if len(rows) != 2:
            return None
        if self.compare is None:
            self.compare = CompareView(self.grid.window())
            self.compare.resize(self.grid.window().size())
        pair = (rows[ids[0]], rows[ids[1]])
        self.compare.show_rows(pair, tuple(c.text if c is not None else "" for c in captions))
        for loader, row in zip(self._compare_loaders, pair, strict=True):
            loader.request(row.id, row.path)
        self.compare.show()
        self.compare.raise_()
        return self.compare
