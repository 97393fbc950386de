"""CaptionDesk's main window: sidebar, thumbnail grid, preview and caption panel.

Threading (the rule: the GUI thread only paints and answers the user):

* the grid's id list, sidebar counts and opening a library run on ``self.pool``;
  results return through :func:`desktop_app.background.submit`;
* thumbnails and the preview decode on ``self.pool`` too (:mod:`desktop_app.thumbnails`);
* a scan runs in a child process (:func:`core.scan_process.scan_in_subprocess`, so its
  Python work never competes with repaints for the GIL); ``self.scan_pool`` (one thread)
  only waits for it and relays its progress as queued signals;
* captioning runs on the long-lived inference thread of
  :class:`~desktop_app.worker.CaptionService`;
* caption edits are short write transactions on the GUI thread (a person's single edit
  is one small ``INSERT``/``UPDATE``; WAL and ``BEGIN IMMEDIATE`` keep it from waiting on
  readers, and a job's writer holds the lock for one batch at a time).

Small per-image reads (a chunk of grid rows, one image's caption history) also run on
the GUI thread: they are indexed lookups of a millisecond or two, cheaper than a round
trip through a worker.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QItemSelectionModel,
    QModelIndex,
    QSize,
    Qt,
    QThreadPool,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QListView,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core import queries
from core.captioning.settings import CaptionJobSpec
from core.jobs import Progress
from core.library import Library, LibraryError
from desktop_app.background import JOB_NICENESS, submit
from desktop_app.caption_panel import CaptionPanel
from desktop_app.delegate import ThumbnailDelegate
from desktop_app.dialogs import (
    SCOPE_FILTER,
    SCOPE_LIBRARY,
    SCOPE_SELECTION,
    CaptionDialog,
    FindReplaceDialog,
    about_text,
)
from desktop_app.filter_bar import FilterBar
from desktop_app.grid_model import ImageGridModel
from desktop_app.jobs_widget import JobStatusWidget, format_bytes, format_eta
from desktop_app.log_panel import LogPanel, QtLogHandler
from core.queries import ImageFilter, ImageRow
from desktop_app.review import CaptionEditor
from desktop_app.settings import THUMBNAIL_SIZES, AppSettings
from desktop_app.sidebar import LibrarySidebar, Location
from desktop_app.thumbnails import PreviewLoader, ThumbnailCache
from desktop_app.worker import CaptionService

log = logging.getLogger("captiondesk.gui")

#: How often the grid and sidebar catch up with a running scan or captioning job.
JOB_REFRESH_MS = 1500


class PreviewView(QLabel):
    """The large preview: keeps the decoded image and scales it to fit on resize."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("preview")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(200, 150)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setStyleSheet("QLabel#preview { background: #202124; color: #bbb; }")
        self._pixmap: QPixmap | None = None
        self.image_id: int | None = None
        self.full_loaded = False

    def show_pixmap(self, image_id: int | None, pixmap: QPixmap | None, message: str = "", *, full: bool = False) -> None:
        self.image_id = image_id
        self._pixmap = pixmap
        self.full_loaded = full
        if pixmap is None:
            self.setPixmap(QPixmap())
            self.setText(message)
        else:
            self.setText("")
            self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is not None and not self._pixmap.isNull():
            self.setPixmap(
                self._pixmap.scaled(
                    self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
                )
            )

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._rescale()


class MainWindow(QMainWindow):
    #: The grid's id list was (re)loaded; argument: number of rows.
    ids_loaded = Signal(int)
    #: A library was opened and shown.
    library_opened = Signal(object)
    #: The sidebar counts were refreshed.
    sidebar_refreshed = Signal()
    scan_finished = Signal(object)

    def __init__(
        self,
        settings: AppSettings | None = None,
        *,
        engine: Any | None = None,
        error_dialogs: bool = True,
    ) -> None:
        super().__init__()
        self.settings = settings or AppSettings()
        self.error_dialogs = error_dialogs
        self.library: Library | None = None
        self._owns_library = False
        self.setWindowTitle("CaptionDesk")

        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max(4, QThreadPool.globalInstance().maxThreadCount()))
        self.scan_pool = QThreadPool(self)
        self.scan_pool.setMaxThreadCount(1)

        # -- widgets ---------------------------------------------------------------
        self.model = ImageGridModel(None, self)
        self.thumbs = ThumbnailCache(None, self.pool, display_size=self.settings.thumbnail_size, parent=self)
        self.thumbs.ready.connect(self._on_thumbnails_ready)
        self.delegate = ThumbnailDelegate(self.thumbs, self)
        self.grid = QListView()
        self.grid.setObjectName("thumbnailGrid")
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        # Static movement + uniform sizes: Qt lays out 100k cells arithmetically instead
        # of storing a position per item (IconMode defaults to Free movement).
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setWrapping(True)
        self.grid.setUniformItemSizes(True)
        # Qt's static layout still visits every row (two Python rowCount() calls each:
        # ~0.3 s for 100k); batched, it happens in slices between events and the first
        # screenful paints right away.
        self.grid.setLayoutMode(QListView.LayoutMode.Batched)
        self.grid.setBatchSize(1000)
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.grid.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.grid.setItemDelegate(self.delegate)
        self.grid.setModel(self.model)
        self._apply_grid_size()
        self.grid.selectionModel().currentChanged.connect(self._on_current_changed)
        self.grid.selectionModel().selectionChanged.connect(lambda *_: self._update_actions())
        self.model.modelReset.connect(self._update_count_label)
        self.model.rowsInserted.connect(self._update_count_label)

        self.filter_bar = FilterBar()
        self.filter_bar.changed.connect(self.reload_ids)
        self.sidebar = LibrarySidebar()
        self.sidebar.location_changed.connect(lambda _loc: self.reload_ids())
        self.sidebar.add_requested.connect(self.choose_folder)
        self.sidebar.remove_requested.connect(self.remove_root)
        self.sidebar.rescan_requested.connect(self.rescan)

        self.preview = PreviewView()
        self.preview_loader = PreviewLoader(self.pool, parent=self)
        self.preview_loader.loaded.connect(self._on_preview_loaded)
        self.panel = CaptionPanel()
        self.editor = CaptionEditor(self)
        self.editor.changed.connect(self._on_captions_changed)
        self.editor.error.connect(lambda message: self.report_error(message))
        self.panel.save_requested.connect(self.save_caption)
        self.panel.accept_requested.connect(self.accept_current)
        self.panel.revert_requested.connect(self.revert_to)

        center = QWidget()
        center_layout = QVBoxLayout(center)
        center_layout.setContentsMargins(0, 0, 0, 0)
        center_layout.setSpacing(0)
        center_layout.addWidget(self.filter_bar)
        center_layout.addWidget(self.grid, 1)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(self.preview)
        self.right_splitter.addWidget(self.panel)
        self.right_splitter.setStretchFactor(0, 1)
        self.right_splitter.setStretchFactor(1, 1)
        self.main_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.main_splitter.addWidget(self.sidebar)
        self.main_splitter.addWidget(center)
        self.main_splitter.addWidget(self.right_splitter)
        self.main_splitter.setStretchFactor(0, 0)
        self.main_splitter.setStretchFactor(1, 1)
        self.main_splitter.setStretchFactor(2, 0)
        self.main_splitter.setSizes([300, 770, 410])
        self.setCentralWidget(self.main_splitter)

        self.log_panel = LogPanel()
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("logDock")
        self.log_dock.setWidget(self.log_panel)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.log_dock.hide()
        self._log_handler = QtLogHandler(self.log_panel)
        logging.getLogger("captiondesk").addHandler(self._log_handler)
        logging.getLogger("captiondesk").setLevel(logging.INFO)

        self.count_label = QLabel()
        self.scan_status = JobStatusWidget("scanStatus", pausable=False)
        self.scan_status.cancel_clicked.connect(self.cancel_scan)
        self.caption_status = JobStatusWidget("captionStatus", pausable=True)
        self.caption_status.pause_toggled.connect(self._on_pause_toggled)
        self.caption_status.cancel_clicked.connect(self.cancel_captioning)
        self.statusBar().addPermanentWidget(self.scan_status)
        self.statusBar().addPermanentWidget(self.caption_status)
        self.statusBar().addPermanentWidget(self.count_label)

        # -- background jobs -------------------------------------------------------
        self.captioning = CaptionService(engine, self)
        self.captioning.model_loading.connect(self._on_model_loading)
        self.captioning.model_loaded.connect(lambda d: log.info("Model loaded: %s", d))
        self.captioning.model_message.connect(self._on_model_message)
        self.captioning.download_progress.connect(self._on_download_progress)
        self.captioning.progress.connect(self._on_caption_progress)
        self.captioning.captions_landed.connect(self._on_captions_landed)
        self.captioning.finished.connect(self._on_caption_finished)
        self.captioning.failed.connect(self._on_caption_failed)
        self.captioning.state_changed.connect(self._update_actions)
        self._scan_cancel: threading.Event | None = None
        self._ids_generation = 0
        self._pending_location: Location | None = None
        self._job_refresh = QTimer(self)
        self._job_refresh.setInterval(JOB_REFRESH_MS)
        self._job_refresh.timeout.connect(self._refresh_during_jobs)
        self._sidebar_timer = QTimer(self)
        self._sidebar_timer.setSingleShot(True)
        self._sidebar_timer.setInterval(400)
        self._sidebar_timer.timeout.connect(self.refresh_sidebar)
        self._ids_dirty = False
        self._ids_loading = False
        self._scan_found = 0

        self._build_actions()
        self._restore_layout()
        self._update_actions()

    # =========================================================================
    # actions and menus
    # =========================================================================

    def _action(self, key: str, text: str, slot, shortcut: QKeySequence | str | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            # Window-wide, so the review keys work while the caption editor has focus.
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        self.actions[key] = action
        return action

    def _build_actions(self) -> None:
        self.actions: dict[str, QAction] = {}
        a = self._action
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(a("open_library", "Open library…", self.choose_library, "Ctrl+Shift+O"))
        file_menu.addAction(a("add_folder", "Add folder…", self.choose_folder, QKeySequence.StandardKey.Open))
        file_menu.addAction(a("rescan", "Rescan folders", self.rescan, "F5"))
        file_menu.addSeparator()
        file_menu.addAction(a("quit", "Quit", self.close, QKeySequence.StandardKey.Quit))

        edit_menu = self.menuBar().addMenu("&Edit")
        undo = self.editor.undo_stack.createUndoAction(self, "Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.editor.undo_stack.createRedoAction(self, "Redo")
        redo.setShortcut(QKeySequence.StandardKey.Redo)
        self.addAction(undo)
        self.addAction(redo)
        self.actions["undo"], self.actions["redo"] = undo, redo
        edit_menu.addAction(undo)
        edit_menu.addAction(redo)
        edit_menu.addSeparator()
        edit_menu.addAction(a("save", "Save caption", self.save_caption, QKeySequence.StandardKey.Save))
        edit_menu.addAction(a("edit", "Edit caption", self.focus_editor, "F2"))
        edit_menu.addAction(a("accept", "Accept caption", self.accept_current, "Ctrl+Shift+A"))
        edit_menu.addSeparator()
        edit_menu.addAction(a("find", "Find…", self.focus_search, QKeySequence.StandardKey.Find))
        edit_menu.addAction(a("replace", "Find and replace…", self.open_find_replace, "Ctrl+H"))
        edit_menu.addAction(a("select_all", "Select all images", self.grid.selectAll, None))

        review = self.menuBar().addMenu("&Review")
        review.addAction(a("next", "Next image", self.next_image, "Alt+Right"))
        review.addAction(a("previous", "Previous image", self.previous_image, "Alt+Left"))
        review.addAction(a("next_uncaptioned", "Next uncaptioned", self.next_uncaptioned, "Alt+U"))
        review.addAction(a("next_least_confident", "Next least confident", self.next_least_confident, "Alt+L"))
        review.addSeparator()
        review.addAction(a("accept_next", "Accept and next", self.accept_and_next, "Ctrl+Return"))
        review.addAction(a("edit_next", "Save edit and next", self.edit_and_next, "Ctrl+Shift+Return"))
        review.addSeparator()
        queue = a("review_queue", "Review queue (least confident first)", self.toggle_review_queue, "Ctrl+R")
        queue.setCheckable(True)
        self.filter_bar.review.toggled.connect(queue.setChecked)
        review.addAction(queue)

        view = self.menuBar().addMenu("&View")
        view.addAction(a("larger", "Larger thumbnails", lambda: self.step_thumbnail_size(1), QKeySequence.StandardKey.ZoomIn))
        view.addAction(a("smaller", "Smaller thumbnails", lambda: self.step_thumbnail_size(-1), QKeySequence.StandardKey.ZoomOut))
        view.addSeparator()
        view.addAction(self.log_dock.toggleViewAction())

        caption = self.menuBar().addMenu("&Caption")
        caption.addAction(a("caption", "Caption images…", self.open_caption_dialog, "Ctrl+Shift+C"))
        caption.addAction(a("pause", "Pause / resume captioning", self.toggle_pause, "Ctrl+Shift+P"))
        caption.addAction(a("cancel_caption", "Cancel captioning", self.cancel_captioning, None))
        caption.addAction(a("release_model", "Unload model", self.captioning.release_model, None))
        caption.addSeparator()
        caption.addAction(a("train", "Train on verified captions…", self.open_train_dialog, None))

        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(a("about", "About CaptionDesk", self.show_about, None))
        self._review_menu = review

    def _update_actions(self) -> None:
        has_library = self.library is not None
        running = self.captioning.running
        for key in ("add_folder", "rescan", "caption", "replace", "train"):
            self.actions[key].setEnabled(has_library)
        self.actions["caption"].setEnabled(has_library and not running)
        self.actions["pause"].setEnabled(running)
        self.actions["cancel_caption"].setEnabled(running)
        self.actions["release_model"].setEnabled(not running)

    # =========================================================================
    # library
    # =========================================================================

    def open_library(self, path: Path | str) -> None:
        """Open (and migrate) *path* on a worker thread; the window stays responsive."""
        path = Path(path)
        self.statusBar().showMessage(f"Opening {path}…")

        def done(library: Library) -> None:
            self.set_library(library, owned=True)
            self.settings.last_library = str(library.path)
            self.statusBar().showMessage(f"Library {library.path}", 5000)

        def failed(exc: BaseException) -> None:
            self.statusBar().clearMessage()
            self.report_error(f"Cannot open the library {path}: {exc}", getattr(exc, "__traceback_text__", None))

        submit(self.pool, lambda: Library(path), done, failed)

    def set_library(self, library: Library | None, *, owned: bool = False) -> None:
        """Show *library* (None: nothing).  *owned*: the window closes it when done."""
        self._commit_edit()
        if self.library is not None and self._owns_library and self.library is not library:
            self.cancel_scan()
            self.library.close()
        self.library = library
        self._owns_library = owned
        self.editor.set_library(library)
        self.model.set_library(library)
        if library is not None:
            self.thumbs.cache_dir = library.cache_dir
            self.setWindowTitle(f"CaptionDesk — {library.path.name}")
        self.panel.show_image(None, None)
        self.preview.show_pixmap(None, None, "")
        self._update_actions()
        self.reload_ids()
        self.refresh_sidebar()
        if library is not None:
            self.library_opened.emit(library)

    def choose_library(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Open or create a library",
            self.settings.last_library or "",
            "CaptionDesk library (*.db)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            self.open_library(path)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a photo folder")
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: Path | str, *, scan: bool = True) -> int | None:
        """Add *folder* to the library, scan it in the background and show it."""
        if self.library is None:
            self.report_error("Open a library first.")
            return None
        try:
            root = self.library.add_root(folder)
        except LibraryError as exc:
            self.report_error(str(exc))
            return None
        log.info("Added folder %s", root.path)
        self._pending_location = (root.id, None)
        self.refresh_sidebar()
        if scan:
            self.start_scan([root.id])
        return root.id

    def remove_root(self, root_id: int, *, confirm: bool = True) -> None:
        if self.library is None:
            return
        if confirm:
            answer = QMessageBox.question(
                self,
                "Remove folder",
                "Remove this folder from the library?\n\nIts images' records and captions are "
                "deleted from the library; the files on disk are not touched.",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
        if self._scan_cancel is not None:
            self.report_error("Wait for the scan to finish (or cancel it) before removing a folder.")
            return
        library = self.library
        self.statusBar().showMessage("Removing folder…")

        def done(_result: object) -> None:
            self.statusBar().showMessage("Folder removed", 4000)
            self.editor.undo_stack.clear()  # its captions are gone
            self.reload_ids()
            self.refresh_sidebar()

        submit(self.pool, lambda: library.remove_root(root_id), done, self._report_exception)

    # =========================================================================
    # grid content
    # =========================================================================

    def current_filter(self) -> ImageFilter:
        root_id, folder = self.sidebar.location()
        return self.filter_bar.filter().with_(root_id=root_id, folder=folder)

    def reload_ids(self) -> None:
        """Re-run the current filter on a worker and show the result (keeps the current image)."""
        library = self.library
        if library is None:
            self.model.set_ids([])
            return
        self._ids_generation += 1
        generation = self._ids_generation
        flt = self.current_filter()
        self._ids_loading = True
        self._ids_dirty = False

        def work() -> tuple[list[int], dict[int, int]]:
            with library.db.read() as session:
                ids = queries.filtered_ids(session, flt)
            # The id -> row map too, here rather than on the GUI thread.
            return ids, {image_id: row for row, image_id in enumerate(ids)}

        def done(result: tuple[list[int], dict[int, int]]) -> None:
            if generation != self._ids_generation or library is not self.library:
                return  # a newer filter was asked for meanwhile
            self._ids_loading = False
            self._show_ids(*result)

        def failed(exc: BaseException) -> None:
            self._ids_loading = False
            self._report_exception(exc)

        submit(self.pool, work, done, failed, priority=2)

    def _show_ids(self, ids: list[int], row_of: dict[int, int] | None = None) -> None:
        current = self.current_image_id()
        self._commit_edit()
        self.model.set_ids(ids, row_of)
        if current is not None and self.model.row_of(current) is not None:
            self.go_to_row(self.model.row_of(current), scroll=True)
        elif ids and not self.grid.currentIndex().isValid():
            self.go_to_row(0)
        elif not ids:
            self._show_current(None)
        self.ids_loaded.emit(len(ids))

    def _update_count_label(self, *_args: object) -> None:
        self.count_label.setText(f"{self.model.rowCount():,} images")

    def _on_thumbnails_ready(self, fingerprints: list[str]) -> None:
        self.grid.viewport().update()
        row = self.current_row()
        if row is not None and row.fingerprint in fingerprints and not self.preview.full_loaded:
            pixmap = self.thumbs.pixmap(row.fingerprint, row.path)
            if pixmap is not None:
                self.preview.show_pixmap(row.id, pixmap)

    def _apply_grid_size(self) -> None:
        cell = self.delegate.cell_size(self.grid.fontMetrics())
        self.grid.setGridSize(cell + QSize(4, 4))
        self.grid.setIconSize(QSize(self.thumbs.display_size, self.thumbs.display_size))

    def step_thumbnail_size(self, step: int) -> None:
        sizes = list(THUMBNAIL_SIZES)
        current = min(range(len(sizes)), key=lambda i: abs(sizes[i] - self.thumbs.display_size))
        new = sizes[max(0, min(len(sizes) - 1, current + step))]
        self.set_thumbnail_size(new)

    def set_thumbnail_size(self, size: int) -> None:
        self.thumbs.set_display_size(size)
        self.delegate.clear_cache()
        self.settings.thumbnail_size = size
        self._apply_grid_size()
        self.grid.doItemsLayout()
        self.grid.viewport().update()

    # =========================================================================
    # sidebar
    # =========================================================================

    def schedule_sidebar_refresh(self) -> None:
        if not self._sidebar_timer.isActive():
            self._sidebar_timer.start()

    def refresh_sidebar(self) -> None:
        library = self.library
        if library is None:
            self.sidebar.set_tree([])
            return

        def work() -> tuple[list[queries.FolderNode], list[tuple[queries.ModelKey, int]]]:
            with library.db.read() as session:
                return queries.folder_tree(session), queries.model_keys(session)

        def done(result: tuple[list[queries.FolderNode], list[tuple[queries.ModelKey, int]]]) -> None:
            if library is not self.library:
                return
            tree, models = result
            self.sidebar.set_tree(tree)
            self.filter_bar.set_models(models)
            if self._pending_location is not None and self.sidebar.select(self._pending_location):
                self._pending_location = None
            self.sidebar_refreshed.emit()

        submit(self.pool, work, done, self._report_exception)

    # =========================================================================
    # current image, preview and caption panel
    # =========================================================================

    def current_image_id(self) -> int | None:
        index = self.grid.currentIndex()
        return self.model.image_id(index.row()) if index.isValid() else None

    def current_row(self) -> ImageRow | None:
        index = self.grid.currentIndex()
        return self.model.row_data(index.row()) if index.isValid() else None

    def selected_ids(self) -> list[int]:
        rows = sorted(index.row() for index in self.grid.selectionModel().selectedIndexes())
        return [self.model.image_id(r) for r in rows if self.model.image_id(r) is not None]

    def go_to_row(self, row: int | None, *, scroll: bool = True) -> bool:
        if row is None or not 0 <= row < self.model.rowCount():
            return False
        index = self.model.index(row, 0)
        self.grid.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if scroll:
            self.grid.scrollTo(index)
        return True

    def go_to_image(self, image_id: int) -> bool:
        return self.go_to_row(self.model.row_of(image_id))

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        # Leaving an image saves what the person typed for it: nothing is ever lost by
        # moving on, and every saved edit is one undo step.
        self._commit_edit()
        self._show_current(self.model.row_data(current.row()) if current.isValid() else None)

    def _show_current(self, row: ImageRow | None) -> None:
        if row is None or self.library is None:
            self.panel.show_image(None, None)
            self.preview.show_pixmap(None, None, "")
            return
        with self.library.db.read() as session:
            details = queries.caption_details(session, row.id)
        self.panel.show_image(row, details)
        if self.preview.image_id != row.id:
            pixmap = self.thumbs.pixmap(row.fingerprint, row.path)
            self.preview.show_pixmap(row.id, pixmap, "Loading…")
            self.preview_loader.request(row.id, row.path)

    def _on_preview_loaded(self, image_id: int, image: Any, error: str | None) -> None:
        if self.preview.image_id != image_id:
            return
        if image is None:
            self.preview.show_pixmap(image_id, None, error or "Cannot show this image")
        else:
            self.preview.show_pixmap(image_id, QPixmap.fromImage(image), full=True)

    def _reload_panel(self) -> None:
        """Re-read the current image's captions (after a change), unless the person is typing."""
        if self.panel.is_dirty():
            return
        self._show_current(self.current_row())

    # =========================================================================
    # editing
    # =========================================================================

    def _commit_edit(self) -> bool:
        """Save the panel's unsaved text for its image; True when something was saved."""
        if not self.panel.is_dirty() or self.panel.image_id is None:
            return False
        image_id = self.panel.image_id
        text = self.panel.text()
        if not text:
            self.statusBar().showMessage("An empty caption is not saved (captions cannot be empty)", 5000)
            return False
        saved = self.editor.save_edit(image_id, text)
        if saved:
            self.statusBar().showMessage("Caption saved", 2000)
        return saved

    def _on_captions_changed(self, image_ids: list[int]) -> None:
        self.model.refresh_ids(image_ids)
        if self.current_image_id() in image_ids:
            # The change came from this panel (or undo/redo): show what is now current.
            self._show_current(self.current_row())
        self.schedule_sidebar_refresh()

    def save_caption(self) -> None:
        if not self._commit_edit() and self.panel.is_dirty() and not self.panel.text():
            self.report_error("A caption cannot be empty.")

    def accept_current(self) -> bool:
        image_id = self.current_image_id()
        if image_id is None:
            return False
        if self.panel.is_dirty():
            return self._commit_edit()
        return self.editor.accept(image_id)

    def revert_to(self, caption_id: int) -> bool:
        return self.editor.revert(caption_id)

    def focus_editor(self) -> None:
        self.panel.editor.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.panel.editor.selectAll()

    def focus_search(self) -> None:
        self.filter_bar.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.filter_bar.search.selectAll()

    # =========================================================================
    # review flow
    # =========================================================================

    def current_index_row(self) -> int:
        index = self.grid.currentIndex()
        return index.row() if index.isValid() else -1

    def next_image(self) -> bool:
        return self.go_to_row(self.current_index_row() + 1)

    def previous_image(self) -> bool:
        return self.go_to_row(max(0, self.current_index_row() - 1))

    def next_uncaptioned(self) -> bool:
        if self.library is None:
            return False
        self._commit_edit()
        with self.library.db.read() as session:
            row = queries.next_in_state(session, self.model.ids(), self.current_index_row(), "uncaptioned")
        if row is None:
            self.statusBar().showMessage("No uncaptioned image in this view", 4000)
            return False
        return self.go_to_row(row)

    def next_least_confident(self) -> bool:
        if self.library is None:
            return False
        self._commit_edit()
        current = self.current_row()
        after = None
        if current is not None and current.state == "model" and current.score is not None:
            after = (current.score, current.id)
        with self.library.db.read() as session:
            image_id = queries.least_confident(session, self.current_filter(), after=after)
        if image_id is None or not self.go_to_image(image_id):
            self.statusBar().showMessage("No less confident model caption in this view", 4000)
            return False
        return True

    def accept_and_next(self) -> None:
        """Keep the caption (typed text is saved, a model caption becomes verified); move on."""
        self.accept_current()
        self.next_image()

    def edit_and_next(self) -> None:
        """Save the typed text, move on, and put the cursor in the next caption."""
        self._commit_edit()
        self.next_image()
        self.focus_editor()

    def toggle_review_queue(self) -> None:
        self.filter_bar.set_review_queue(not self.filter_bar.review.isChecked())

    # =========================================================================
    # find and replace
    # =========================================================================

    def open_find_replace(self) -> None:
        dialog = FindReplaceDialog(self.model.rowCount(), self)
        if dialog.exec() == FindReplaceDialog.DialogCode.Accepted and dialog.find.text():
            self.find_replace(dialog.find.text(), dialog.replacement.text(), case_sensitive=dialog.case.isChecked())

    def find_replace(self, find: str, replacement: str, *, case_sensitive: bool = False) -> int:
        """Replace *find* in the current captions of the images in view (one undo step)."""
        if self.library is None or not find:
            return 0
        self._commit_edit()
        with self.library.db.read() as session:
            candidates = queries.find_replace_candidates(
                session, self.current_filter(), find, case_sensitive=case_sensitive
            )
        count = self.editor.replace(candidates, find, replacement, case_sensitive=case_sensitive)
        self.statusBar().showMessage(f"Replaced in {count} captions (Ctrl+Z to undo)", 6000)
        log.info("Find and replace “%s” → “%s”: %d captions changed", find, replacement, count)
        return count

    # =========================================================================
    # scanning
    # =========================================================================

    @property
    def scanning(self) -> bool:
        return self._scan_cancel is not None

    def rescan(self) -> None:
        root_id, _folder = self.sidebar.location()
        self.start_scan([root_id] if root_id is not None else None)

    def start_scan(self, root_ids: list[int] | None = None) -> bool:
        library = self.library
        if library is None:
            return False
        if self._scan_cancel is not None:
            self.statusBar().showMessage("A scan is already running", 3000)
            return False
        cancel = threading.Event()
        self._scan_cancel = cancel
        self._scan_found = 0
        self.scan_status.begin("Scanning…")
        from desktop_app.background import Coalescer

        # Progress arrives at most every 0.1 s (the scanner throttles); a coalescer
        # keeps only the newest snapshot per 50 ms anyway.
        progress = Coalescer(50, self)
        progress.flushed.connect(lambda items: self._on_scan_progress(items[-1]))
        self._job_refresh.start()

        def work() -> Any:
            # In a child process: a big scan's Python work would otherwise fight
            # every repaint for the GIL (see core.scan_process).
            from core.scan_process import scan_in_subprocess

            return scan_in_subprocess(library.path, root_ids, progress=lambda p: progress.add([p]), cancel=cancel)

        def done(stats: Any) -> None:
            progress.flush()
            progress.deleteLater()
            self._scan_cancel = None
            self.scan_status.end()
            self._stop_job_refresh()
            summary = stats.summary()
            log.info(summary)
            for problem in stats.problems[:20]:
                log.warning(problem)
            self.statusBar().showMessage(summary, 8000)
            self.reload_ids()
            self.refresh_sidebar()
            self.scan_finished.emit(stats)

        def failed(exc: BaseException) -> None:
            progress.deleteLater()
            self._scan_cancel = None
            self.scan_status.end()
            self._stop_job_refresh()
            self._report_exception(exc)

        submit(self.scan_pool, work, done, failed, niceness=JOB_NICENESS)
        return True

    def cancel_scan(self) -> None:
        if self._scan_cancel is not None:
            self._scan_cancel.set()
            self.scan_status.cancel_button.setEnabled(False)

    def _on_scan_progress(self, progress: Progress) -> None:
        rate = f" ({progress.rate:,.0f}/s)" if progress.rate else ""
        self.scan_status.update_progress(f"Scanning: {progress.done:,} files{rate}", progress.done, progress.total)
        # Re-query the grid only when the scan found something new: a no-change re-scan
        # of 100k files should not re-read 100k ids every refresh.
        found = progress.counts.get("new", 0) + progress.counts.get("moved", 0)
        if found != self._scan_found:
            self._scan_found = found
            self._ids_dirty = True

    def _refresh_during_jobs(self) -> None:
        """Every JOB_REFRESH_MS while a job runs: show newly found images and counts."""
        if self._ids_dirty and not self._ids_loading:
            self.reload_ids()
        self.schedule_sidebar_refresh()

    def _stop_job_refresh(self) -> None:
        if self._scan_cancel is None and not self.captioning.running:
            self._job_refresh.stop()

    # =========================================================================
    # captioning
    # =========================================================================

    def open_caption_dialog(self) -> None:
        if self.library is None:
            return
        with self.library.db.read() as session:
            known = [key.model_name for key, _n in queries.model_keys(session)]
            uncaptioned = queries.count_filtered(session, ImageFilter(states=frozenset({"uncaptioned"})))
        dialog = CaptionDialog(
            defaults=self.settings.caption_spec(),
            known_models=known,
            selection_count=len(self.grid.selectionModel().selectedIndexes()),
            filter_count=self.model.rowCount(),
            uncaptioned_count=uncaptioned,
            parent=self,
        )
        if dialog.exec() == CaptionDialog.DialogCode.Accepted:
            self.start_captioning(dialog.spec(), dialog.scope())

    def open_train_dialog(self) -> None:
        """Retrain the captioner on the verified captions (a non-modal dialog)."""
        if self.library is None:
            return
        from desktop_app.train_dialog import TrainDialog

        base = self.settings.caption_spec().model
        dialog = TrainDialog(self.library, base_model=base, parent=self)
        dialog.version_created.connect(self.offer_new_version)
        dialog.show()

    def offer_new_version(self, name: str) -> None:
        """One click: make the new version active and re-caption model-only images."""
        answer = QMessageBox.question(
            self,
            "New model version",
            f"Make “{name}” the active model and re-caption the images that only have "
            "model captions? Your own captions are kept.",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.use_model_version(name)

    def use_model_version(self, name: str) -> bool:
        if self.library is None:
            return False
        from core.training.versions import set_active

        set_active(self.library, name)
        spec = self.settings.caption_spec().with_(model=name, adapter=None, overwrite_model_captions=False)
        return self.start_captioning(spec, SCOPE_LIBRARY)

    def start_captioning(self, spec: CaptionJobSpec, scope: str) -> bool:
        """Start *spec* over *scope* (selection / current view / everything uncaptioned)."""
        if self.library is None:
            return False
        if scope == SCOPE_SELECTION:
            spec = spec.with_(scope=self.selected_ids())
            empty = not spec.scope
        elif scope == SCOPE_FILTER:
            spec = spec.with_(scope=self.current_filter())
            empty = self.model.rowCount() == 0
        elif scope == SCOPE_LIBRARY:
            # The engine's own scope: every readable image except those a person
            # captioned, imported, or this very model version already captioned.
            spec, empty = spec.with_(scope=None), False
        else:
            # Not the whole library: that would also re-caption images another model
            # captioned, which is not what "uncaptioned" means.  The engine evaluates
            # the filter on the inference thread, never here.
            spec, empty = spec.with_(scope=ImageFilter(states=frozenset({"uncaptioned"}))), False
        if empty:
            self.report_error("No images to caption in that scope.")
            return False
        self.settings.set_caption_spec(spec)
        if not self.captioning.start(self.library, spec):
            self.report_error("A captioning job is already running.")
            return False
        self.caption_status.begin(f"Starting {spec.label()}…")
        self._job_refresh.start()
        log.info("Captioning with %s (%s)", spec.label(), scope)
        return True

    def toggle_pause(self) -> None:
        if self.captioning.running:
            self.caption_status.pause_button.toggle()

    def _on_pause_toggled(self, paused: bool) -> None:
        if paused:
            self.captioning.pause()
            self.caption_status.label.setText(self.caption_status.label.text().split(" — ")[0] + " — paused")
        else:
            self.captioning.resume()

    def cancel_captioning(self) -> None:
        if self.captioning.running:
            self.captioning.cancel()
            self.caption_status.cancel_button.setEnabled(False)
            self.caption_status.label.setText("Cancelling after the current batch…")

    def _on_model_loading(self, description: str) -> None:
        self.caption_status.begin(f"Loading model {description}…")

    def _on_model_message(self, message: str) -> None:
        self.caption_status.update_progress(message, 0, None)
        log.info(message)

    def _on_download_progress(self, count: int) -> None:
        self.caption_status.update_progress(f"Downloading model: {format_bytes(count)}", 0, None)

    def _on_caption_progress(self, progress: Progress) -> None:
        counts = progress.counts
        parts = [f"Captioning {progress.done:,}" + (f" / {progress.total:,}" if progress.total else "")]
        if progress.rate:
            parts.append(f"{progress.rate:.1f} img/s")
        eta = format_eta(progress.eta_seconds)
        if eta:
            parts.append(f"ETA {eta}")
        if counts.get("errors"):
            parts.append(f"{counts['errors']} errors")
        text = " · ".join(parts)
        if self.captioning.paused:
            text += " — paused"
        self.caption_status.update_progress(text, progress.done, progress.total)

    def _on_captions_landed(self, image_ids: list[int]) -> None:
        # Rows change in place (badge, snippet); the view's membership is not re-queried
        # mid-job, so images do not jump away while the person is looking at them.
        self.model.refresh_ids(image_ids)
        if self.current_image_id() in set(image_ids):
            self._reload_panel()

    def _on_caption_finished(self, stats: Any) -> None:
        self.caption_status.end()
        self._stop_job_refresh()
        if stats is None:
            message = "Captioning cancelled before it started"
        else:
            message = stats.summary()
            for problem in list(stats.problems)[:20]:
                log.warning(problem)
        log.info(message)
        self.statusBar().showMessage(message, 8000)
        self.refresh_sidebar()
        self._reload_panel()

    def _on_caption_failed(self, message: str, detail: str) -> None:
        self.caption_status.end()
        self._stop_job_refresh()
        self.report_error(f"Captioning stopped: {message}", detail)

    # =========================================================================
    # errors, about, settings, closing
    # =========================================================================

    def _report_exception(self, exc: BaseException) -> None:
        self.report_error(f"{type(exc).__name__}: {exc}", getattr(exc, "__traceback_text__", None))

    def report_error(self, message: str, detail: str | None = None) -> None:
        """Show an error to the person: log panel, status bar and a (non-modal) dialog."""
        self.log_panel.add("error", message, detail)
        self.statusBar().showMessage(message, 8000)
        if not self.error_dialogs:
            return
        box = QMessageBox(QMessageBox.Icon.Warning, "CaptionDesk", message, QMessageBox.StandardButton.Ok, self)
        if detail:
            box.setDetailedText(detail)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def show_about(self) -> None:
        QMessageBox.about(self, "About CaptionDesk", about_text())

    def _restore_layout(self) -> None:
        geometry = self.settings.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1480, 900)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)
        for name, splitter in (("main", self.main_splitter), ("right", self.right_splitter)):
            saved = self.settings.splitter(name)
            if saved is not None:
                splitter.restoreState(saved)

    def save_layout(self) -> None:
        self.settings.save_layout(
            self.saveGeometry(),
            self.saveState(),
            {"main": self.main_splitter.saveState(), "right": self.right_splitter.saveState()},
        )
        self.settings.sync()

    def shutdown(self) -> None:
        """Save the edit in progress, stop jobs and threads, close an owned library."""
        self._commit_edit()
        self.save_layout()
        self.cancel_scan()
        self._job_refresh.stop()
        self.captioning.shutdown()
        self.scan_pool.waitForDone(30_000)
        self.pool.clear()
        self.pool.waitForDone(10_000)
        logging.getLogger("captiondesk").removeHandler(self._log_handler)
        if self.library is not None and self._owns_library:
            self.library.close()
        self.library = None

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)
        app = QApplication.instance()
        if app is not None:
            app.processEvents()
