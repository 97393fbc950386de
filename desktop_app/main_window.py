"""CaptionDesk's main window: sidebar, thumbnail grid, preview and caption panel.

The window builds the widgets, the menus and the toolbar; what they do lives in one
controller per concern (:mod:`desktop_app.controllers`): ``self.libraries`` (open a
library, add folders, drag and drop), ``self.scans``, ``self.caption_jobs``,
``self.navigation`` (current image, edits, review keys), ``self.versions`` (train, switch
model version) and ``self.verbs`` (the dataset dialogs).  The window's public methods
that tests and other modules call (``add_folder``, ``next_image``, ...) forward to them.

Threading (the rule: the GUI thread only paints and answers the user):

* the grid's id list, sidebar counts and opening a library run on ``self.pool``;
  results return through :func:`desktop_app.background.submit`;
* thumbnails and the preview decode on ``self.pool`` too (:mod:`desktop_app.thumbnails`);
* a scan runs in a child process (:func:`core.scan_process.scan_in_subprocess`, so a
  100k-file scan never competes with painting for the GIL), watched from ``self.scan_pool``
  (one thread) with progress as queued signals;
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
from typing import Any

from PySide6.QtCore import QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
    QPixmap,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDockWidget,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core import queries
from core.library import Library
from core.queries import ImageFilter
from desktop_app.background import submit
from desktop_app.caption_panel import CaptionPanel
from desktop_app.controllers.caption_jobs import CaptionJobsController
from desktop_app.controllers.library import LibraryController, dropped_folders
from desktop_app.controllers.navigation import ReviewNavigation
from desktop_app.controllers.scan import ScanController
from desktop_app.controllers.versions import VersionsController
from desktop_app.delegate import ThumbnailDelegate
from desktop_app.dialogs import about_text
from desktop_app.filter_bar import FilterBar
from desktop_app.grid_model import ImageGridModel
from desktop_app.jobs_widget import JobStatusWidget, plural
from desktop_app.log_panel import LogPanel, QtLogHandler
from desktop_app.review import CaptionEditor
from desktop_app.settings import THUMBNAIL_SIZES, AppSettings
from desktop_app.sidebar import LibrarySidebar, Location
from desktop_app.thumbnail_grid import ThumbnailGrid
from desktop_app.thumbnails import PreviewLoader, ThumbnailCache
from desktop_app.worker import CaptionService

log = logging.getLogger("captiondesk.gui")

#: The Caption verb's tooltip while it can start.
CAPTION_TIP = "Caption the photos in view, the folder or the library with the current model (Ctrl+Shift+C)"

#: How often the grid and sidebar catch up with a running scan or captioning job.
JOB_REFRESH_MS = 1500
#: The window's size on first start, shrunk to fit a smaller screen.
PREFERRED_SIZE = QSize(1480, 900)


def fit_to_screen(preferred: QSize, available: QSize, margin: float = 0.95) -> QSize:
    """*preferred*, shrunk (never grown) to at most *margin* of the *available* screen."""
    return QSize(
        min(preferred.width(), int(available.width() * margin)),
        min(preferred.height(), int(available.height() * margin)),
    )


def _forward(controller: str, method: str) -> Any:
    """A window method that calls ``self.<controller>.<method>`` (the public API stays put)."""

    def call(self: "MainWindow", *args: Any, **kwargs: Any) -> Any:
        return getattr(getattr(self, controller), method)(*args, **kwargs)

    call.__name__ = method
    call.__doc__ = f"Forwards to ``self.{controller}.{method}``."
    return call


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




class EmptyLibraryPage(QWidget):
    """What a library with no folders shows instead of an empty grid."""

    add_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("emptyState")
        title = QLabel("Start by adding a photo folder")
        title.setObjectName("emptyTitle")
        title.setStyleSheet("font-size: 20px; font-weight: 600;")
        text = QLabel(
            "CaptionDesk reads the photos in the folders you add, captions them with a local "
            "model, and lets you review, export and retrain. Your files are never changed "
            "unless you write captions into them."
        )
        text.setWordWrap(True)
        # A fixed width lets the wrapped label compute its height (a maximum width clips it).
        text.setFixedWidth(460)
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.add_button = QPushButton("Add a folder…")
        self.add_button.setObjectName("emptyAddFolder")
        self.add_button.setDefault(True)
        self.add_button.clicked.connect(self.add_clicked)
        hint = QLabel("…or drag a folder from your file manager onto this window.")
        hint.setStyleSheet("color: palette(mid);")
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        for widget in (title, text, self.add_button, hint):
            layout.addWidget(widget, 0, Qt.AlignmentFlag.AlignHCenter)
            layout.addSpacing(8)
        layout.addStretch(2)


class NoticeBanner(QFrame):
    """A non-modal one-line notice above the grid with one action and a close button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("noticeBanner")
        self.setStyleSheet(
            "QFrame#noticeBanner { background: #fff4ce; border-bottom: 1px solid #e0c97a; }"
            "QFrame#noticeBanner QLabel { color: #3b3000; }"
        )
        self.label = QLabel()
        self.action_button = QPushButton()
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Dismiss")
        self.close_button.setAutoRaise(True)
        self.close_button.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self.close_button)
        self.hide()


class MainWindow(QMainWindow):
    #: The grid's id list was (re)loaded; argument: number of rows.
    ids_loaded = Signal(int)
    #: A library was opened and shown.
    library_opened = Signal(object)
    #: The sidebar counts were refreshed.
    sidebar_refreshed = Signal()
    scan_finished = Signal(object)


    # -- the public API, forwarded to the controllers ------------------------------------------
    open_library = _forward("libraries", "open_library")
    set_library = _forward("libraries", "set_library")
    choose_library = _forward("libraries", "choose_library")
    choose_folder = _forward("libraries", "choose_folder")
    add_folder = _forward("libraries", "add_folder")
    remove_root = _forward("libraries", "remove_root")
    rescan = _forward("scans", "rescan")
    start_scan = _forward("scans", "start_scan")
    cancel_scan = _forward("scans", "cancel_scan")
    open_caption_dialog = _forward("caption_jobs", "open_caption_dialog")
    start_captioning = _forward("caption_jobs", "start_captioning")
    toggle_pause = _forward("caption_jobs", "toggle_pause")
    cancel_captioning = _forward("caption_jobs", "cancel_captioning")
    open_train_dialog = _forward("versions", "open_train_dialog")
    offer_new_version = _forward("versions", "offer_new_version")
    use_model_version = _forward("versions", "use_model_version")
    current_image_id = _forward("navigation", "current_image_id")
    current_row = _forward("navigation", "current_row")
    current_index_row = _forward("navigation", "current_index_row")
    selected_ids = _forward("navigation", "selected_ids")
    go_to_row = _forward("navigation", "go_to_row")
    go_to_image = _forward("navigation", "go_to_image")
    next_image = _forward("navigation", "next_image")
    previous_image = _forward("navigation", "previous_image")
    next_uncaptioned = _forward("navigation", "next_uncaptioned")
    next_least_confident = _forward("navigation", "next_least_confident")
    accept_and_next = _forward("navigation", "accept_and_next")
    edit_and_next = _forward("navigation", "edit_and_next")
    toggle_review_queue = _forward("navigation", "toggle_review_queue")
    save_caption = _forward("navigation", "save_caption")
    accept_current = _forward("navigation", "accept_current")
    revert_to = _forward("navigation", "revert_to")
    focus_editor = _forward("navigation", "focus_editor")
    focus_search = _forward("navigation", "focus_search")
    open_find_replace = _forward("navigation", "open_find_replace")
    find_replace = _forward("navigation", "find_replace")

    @property
    def scanning(self) -> bool:
        return self.scans.scanning

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
        self.grid = ThumbnailGrid()
        self.grid.setObjectName("thumbnailGrid")
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        # Static movement + uniform sizes: Qt lays out 100k cells arithmetically instead
        # of storing a position per item (IconMode defaults to Free movement).
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setWrapping(True)
        self.grid.setUniformItemSizes(True)
        # Qt's static layout still visits every row (two Python rowCount() calls each, a
        # visible pause for 100k); batched, it happens in slices between events and the first
        # screenful paints right away.
        self.grid.setLayoutMode(QListView.LayoutMode.Batched)
        self.grid.setBatchSize(1000)
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.grid.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.grid.setItemDelegate(self.delegate)
        self.grid.setModel(self.model)
        self._apply_grid_size()
        self.grid.selectionModel().selectionChanged.connect(lambda *_: self._update_actions())
        self.model.modelReset.connect(self._update_count_label)
        self.model.rowsInserted.connect(self._update_count_label)

        self.filter_bar = FilterBar()
        self.filter_bar.changed.connect(self.reload_ids)
        self.filter_bar.watch_review_progress(self.model)
        self.ids_loaded.connect(self.filter_bar.show_result_count)
        self.sidebar = LibrarySidebar()
        self.sidebar.location_changed.connect(lambda _loc: self.reload_ids())
        self.sidebar.add_requested.connect(lambda: self.libraries.choose_folder())
        self.sidebar.remove_requested.connect(lambda root_id: self.libraries.remove_root(root_id))
        self.sidebar.rescan_requested.connect(lambda: self.scans.rescan())

        self.preview = PreviewView()
        self.preview_loader = PreviewLoader(self.pool, parent=self)
        self.panel = CaptionPanel()
        self.editor = CaptionEditor(self)
        self.editor.error.connect(lambda message: self.report_error(message))
        self.panel.save_requested.connect(lambda: self.navigation.save_caption())
        self.panel.accept_requested.connect(lambda: self.navigation.accept_current())
        self.panel.revert_requested.connect(lambda caption_id: self.navigation.revert_to(caption_id))

        center = QWidget()
        center_layout = QVBoxLayout(center)
        center_layout.setContentsMargins(0, 0, 0, 0)
        center_layout.setSpacing(0)
        center_layout.addWidget(self.filter_bar)
        self.banner = NoticeBanner()
        self.banner.action_button.clicked.connect(lambda: self._caption_from_banner())
        center_layout.addWidget(self.banner)
        center_layout.addWidget(self.grid, 1)
        self.empty_page = EmptyLibraryPage()
        self.empty_page.add_clicked.connect(lambda: self.libraries.choose_folder())
        self.center_stack = QStackedWidget()
        self.center_stack.addWidget(self.empty_page)
        self.center_stack.addWidget(center)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(self.preview)
        self.right_splitter.addWidget(self.panel)
        self.right_splitter.setStretchFactor(0, 1)
        self.right_splitter.setStretchFactor(1, 0)  # the preview takes the spare height
        self.main_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.main_splitter.addWidget(self.sidebar)
        self.main_splitter.addWidget(self.center_stack)
        self.main_splitter.addWidget(self.right_splitter)
        self.main_splitter.setStretchFactor(0, 0)
        self.main_splitter.setStretchFactor(1, 1)
        self.main_splitter.setStretchFactor(2, 0)
        self.main_splitter.setSizes([220, 650, 410])
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
        self.scan_status.cancel_clicked.connect(lambda: self.scans.cancel_scan())
        self.caption_status = JobStatusWidget("captionStatus", pausable=True)
        # Training, evaluating or merging a version on the model thread: shown here too, so
        # its window can be closed while it runs.
        self.model_job_status = JobStatusWidget("modelJobStatus", pausable=False, showable=True)
        self.model_job_status.cancel_clicked.connect(self._cancel_model_job)
        self.model_job_status.show_clicked.connect(self._show_model_job_owner)
        self._shown_model_job: Any = None
        # "N images failed": a link that opens the log with each failure and its reason.
        self.failures_label = QLabel()
        self.failures_label.setObjectName("failuresLabel")
        self.failures_label.setTextFormat(Qt.TextFormat.RichText)
        self.failures_label.linkActivated.connect(lambda _link: self.show_log())
        self.failures_label.hide()
        self.statusBar().addPermanentWidget(self.scan_status)
        self.statusBar().addPermanentWidget(self.caption_status)
        self.statusBar().addPermanentWidget(self.model_job_status)
        self.statusBar().addPermanentWidget(self.failures_label)
        self.statusBar().addPermanentWidget(self.count_label)

        # -- background jobs -------------------------------------------------------
        self.captioning = CaptionService(engine, self)
        self.captioning.state_changed.connect(self._update_actions)
        self.captioning.state_changed.connect(self._follow_model_job)
        self._ids_generation = 0
        #: The current photo when a filter found nothing, to come back to when it finds it again.
        self._current_before_empty: int | None = None
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

        # -- controllers ---------------------------------------------------------------
        self.libraries = LibraryController(self)
        self.scans = ScanController(self)
        self.caption_jobs = CaptionJobsController(self)
        self.navigation = ReviewNavigation(self)
        self.versions = VersionsController(self)

        self.setAcceptDrops(True)
        self._build_actions()
        self._build_toolbar()
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
        file_menu.addAction(a("open_library", "Open library…", self.libraries.choose_library, "Ctrl+Shift+O"))
        file_menu.addAction(a("add_folder", "Add folder…", self.libraries.choose_folder, QKeySequence.StandardKey.Open))
        file_menu.addAction(a("rescan", "Rescan folders", self.scans.rescan, "F5"))
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
        edit_menu.addAction(a("save", "Save caption", self.navigation.save_caption, QKeySequence.StandardKey.Save))
        edit_menu.addAction(a("edit", "Edit caption", self.navigation.focus_editor, "F2"))
        edit_menu.addAction(a("accept", "Accept caption", self.navigation.accept_current, "Ctrl+Shift+A"))
        edit_menu.addSeparator()
        edit_menu.addAction(a("find", "Find…", self.navigation.focus_search, QKeySequence.StandardKey.Find))
        edit_menu.addAction(a("replace", "Find and replace…", self.navigation.open_find_replace, "Ctrl+H"))
        edit_menu.addAction(a("select_all", "Select all images", self.grid.selectAll, None))

        review = self.menuBar().addMenu("&Review")
        review.addAction(a("next", "Next image", self.navigation.next_image, "Alt+Right"))
        review.addAction(a("previous", "Previous image", self.navigation.previous_image, "Alt+Left"))
        review.addAction(a("next_uncaptioned", "Next uncaptioned", self.navigation.next_uncaptioned, "Alt+U"))
        review.addAction(a("next_least_confident", "Next least confident", self.navigation.next_least_confident, "Alt+L"))
        review.addSeparator()
        review.addAction(a("accept_next", "Accept and next", self.navigation.accept_and_next, "Ctrl+Return"))
        review.addAction(a("edit_next", "Save edit and next", self.navigation.edit_and_next, "Ctrl+Shift+Return"))
        review.addSeparator()
        queue = a("review_queue", "Review queue (least confident first)", self.navigation.toggle_review_queue, "Ctrl+R")
        queue.setCheckable(True)
        self.filter_bar.review.toggled.connect(queue.setChecked)
        review.addAction(queue)

        view = self.menuBar().addMenu("&View")
        view.addAction(a("larger", "Larger thumbnails", lambda: self.step_thumbnail_size(1), QKeySequence.StandardKey.ZoomIn))
        view.addAction(a("smaller", "Smaller thumbnails", lambda: self.step_thumbnail_size(-1), QKeySequence.StandardKey.ZoomOut))
        view.addSeparator()
        view.addAction(self.log_dock.toggleViewAction())

        caption = self.menuBar().addMenu("&Caption")
        caption.addAction(a("caption", "Caption images…", self.caption_jobs.open_caption_dialog, "Ctrl+Shift+C"))
        caption.addAction(a("pause", "Pause / resume captioning", self.caption_jobs.toggle_pause, "Ctrl+Shift+P"))
        caption.addAction(a("cancel_caption", "Cancel captioning", self.caption_jobs.cancel_captioning, None))
        caption.addAction(a("release_model", "Unload model", self.captioning.release_model, None))
        caption.addSeparator()
        caption.addAction(a("train", "Train on verified captions…", self.versions.open_train_dialog, None))

        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(a("about", "About CaptionDesk", self.show_about, None))
        self._review_menu = review
        # File/Model/Edit/Help dialogs (export, import, metadata, versions, preferences, help).
        from desktop_app import verb_menus

        self.verbs = verb_menus.install(self)


    def _build_toolbar(self) -> None:
        """The main verbs, labelled, in the order of the work: add, caption, review, export, train."""
        bar = QToolBar("Main toolbar", self)
        bar.setObjectName("mainToolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.toolbar = bar
        review = QAction("Review", self)
        review.setToolTip("Review the least confident model captions first (Ctrl+R)")
        review.triggered.connect(lambda _checked=False: self.start_review())
        self.actions["toolbar_review"] = review
        export = next((a for a in self.actions.values() if a.text().startswith("Export")), None)
        for action, text in (
            (self.actions["add_folder"], "Add folder"),
            (self.actions["caption"], "Caption"),
            (review, "Review"),
            (export, "Export"),
            (self.actions["train"], "Train"),
        ):
            if action is None:
                continue
            button_action = QAction(text, self)
            button_action.setToolTip(action.toolTip() if action is not review else review.toolTip())
            button_action.triggered.connect(lambda _checked=False, target=action: target.trigger())
            button_action.setEnabled(action.isEnabled())
            action.changed.connect(lambda source=action, mirror=button_action: (
                mirror.setEnabled(source.isEnabled()), mirror.setToolTip(source.toolTip())))
            bar.addAction(button_action)
            self.actions[f"toolbar_{text.split()[0].lower()}"] = button_action

    def start_review(self) -> None:
        """Turn the review queue on and put the keyboard in the caption editor."""
        if not self.filter_bar.review.isChecked():
            self.filter_bar.set_review_queue(True)
        self.navigation.focus_editor()

    def _follow_model_job(self) -> None:
        """Show the model thread's training/evaluating/merging job in the status bar."""
        job = self.captioning.model_job
        if job is self._shown_model_job:
            return
        self._shown_model_job = job
        if job is None:
            self.model_job_status.end()
            return
        self.model_job_status.begin(f"{job.description}…")
        self.model_job_status.show_button.setEnabled(job.owner is not None)
        self.model_job_status.cancel_button.setVisible(job.cancellable)
        job.progress.connect(self._on_model_job_progress)
        job.cancel_requested.connect(self._on_model_job_cancel_requested)
        job.finished.connect(self._on_model_job_finished)
        job.failed.connect(self._on_model_job_failed)

    def _on_model_job_progress(self, progress: Any) -> None:
        job = self._shown_model_job
        if job is not None:
            self.model_job_status.update_progress(f"{job.description}: {progress.message}", int(progress.done),
                                                  int(progress.total) if progress.total else None)

    def _cancel_model_job(self) -> None:
        if self._shown_model_job is not None:
            self._shown_model_job.request_cancel()

    def _on_model_job_cancel_requested(self) -> None:
        job = self._shown_model_job
        if job is not None:
            self.model_job_status.mark_cancelling(f"Stopping {job.description[0].lower()}{job.description[1:]}…")

    def _owner_hidden(self, job: Any) -> bool:
        return job is not None and (job.owner is None or not job.owner.isVisible())

    def _on_model_job_finished(self, result: Any) -> None:
        job = self.sender()
        if job is None:
            return
        # Its window may be closed: say it ended, and where to see how (the verb reopens it).
        ended = "cancelled" if getattr(result, "cancelled", False) else "finished"
        where = " Open it again to see the result." if self._owner_hidden(job) else ""
        log.info("%s: %s.", job.description, ended)
        self.announce(f"{job.description}: {ended}.{where}")

    def announce(self, message: str) -> None:
        """A background job ended: say so in the status bar until the next message replaces it."""
        self.statusBar().showMessage(message)

    def _on_model_job_failed(self, message: str, detail: str) -> None:
        job = self.sender()
        if self._owner_hidden(job):
            self.report_error(f"{job.description} failed: {message}", detail or None)

    def _show_model_job_owner(self) -> None:
        owner = self._shown_model_job.owner if self._shown_model_job is not None else None
        if owner is not None:
            owner.show()
            owner.raise_()
            owner.activateWindow()

    def _update_actions(self) -> None:
        has_library = self.library is not None
        running = self.captioning.running
        for key in ("add_folder", "rescan", "caption", "replace", "train", "toolbar_review"):
            self.actions[key].setEnabled(has_library)
        # Captioning waits for a model job (training...): both use the one model thread.
        # Greyed out, it says why, naming what runs.
        caption = self.actions["caption"]
        caption.setEnabled(has_library and not self.captioning.busy)
        if running:
            waiting = "Captioning is running: pause or cancel it in the status bar."
        elif self.captioning.model_job is not None:
            waiting = self.captioning.busy_reason("Captioning")
        else:
            waiting = None
        caption.setToolTip(waiting or CAPTION_TIP)
        caption.setStatusTip(waiting or "")
        self.actions["pause"].setEnabled(running)
        self.actions["cancel_caption"].setEnabled(running)
        release = self.actions["release_model"]
        release.setEnabled(not self.captioning.busy and self.captioning.model_in_memory)
        release.setToolTip("Free the memory of the loaded caption model" if release.isEnabled() else
                           waiting or "No caption model is loaded.")


    # =========================================================================
    # first run: empty state, drag and drop, the "no caption yet" banner
    # =========================================================================

    def show_empty_state(self, empty: bool) -> None:
        """Show the "Add a folder" page instead of the grid while the library has no folders."""
        self.center_stack.setCurrentWidget(self.empty_page if empty else self.center_stack.widget(1))

    @property
    def empty_state_visible(self) -> bool:
        return self.center_stack.currentWidget() is self.empty_page

    def show_uncaptioned_banner(self, count: int) -> None:
        """After a scan: "N photos have no caption — Caption them" (hidden when N is 0)."""
        if count <= 0 or self.captioning.busy:
            self.banner.hide()
            return
        self.banner.label.setText(f"{plural(count, 'photo')} {'has' if count == 1 else 'have'} no caption yet.")
        self.banner.action_button.setText("Caption them…")
        self.banner.show()

    def _caption_from_banner(self) -> None:
        self.banner.hide()
        self.caption_jobs.open_caption_dialog()

    def hide_banner(self) -> None:
        self.banner.hide()

    def show_log(self) -> None:
        self.log_dock.show()
        self.log_dock.raise_()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.library is not None and dropped_folders(event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        if self.libraries.add_dropped(event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    # =========================================================================
    # grid content
    # =========================================================================

    def current_filter(self) -> ImageFilter:
        root_id, folder = self.sidebar.location()
        return self.filter_bar.filter().with_(root_id=root_id, folder=folder)

    def reload_ids(self, *, keep_scroll: bool = False) -> None:
        """Re-run the current filter on a worker and show the result (keeps the current image).

        *keep_scroll*: the grid stays where the person scrolled it (captions changed by a
        dialog), instead of scrolling back to the current image.
        """
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
            self._show_ids(*result, keep_scroll=keep_scroll)

        def failed(exc: BaseException) -> None:
            self._ids_loading = False
            self._report_exception(exc)

        submit(self.pool, work, done, failed, priority=2)

    def _show_ids(self, ids: list[int], row_of: dict[int, int] | None = None, *, keep_scroll: bool = False) -> None:
        current = self.current_image_id()
        if current is None:  # an empty result in between (a search that found nothing) keeps the place
            current = self._current_before_empty
        self._current_before_empty = current if not ids else None
        scrolled = self.grid.verticalScrollBar().value()
        self.navigation.commit_edit()
        self.model.set_ids(ids, row_of)
        if ids and self.filter_bar.take_restart_at_top():
            self.go_to_row(0)  # the review queue starts at the least confident caption
        elif current is not None and self.model.row_of(current) is not None:
            self.go_to_row(self.model.row_of(current), scroll=not keep_scroll)
            if keep_scroll:
                self.grid.doItemsLayout()  # the scroll range of the new rows, before putting the view back
                self.grid.verticalScrollBar().setValue(scrolled)
        elif ids and not self.grid.currentIndex().isValid():
            self.go_to_row(0)
        elif not ids:
            self.navigation.show_current(None)
        self.ids_loaded.emit(len(ids))

    def _refresh_during_jobs(self) -> None:
        """Every JOB_REFRESH_MS while a job runs: show newly found images and counts."""
        if self._ids_dirty and not self._ids_loading:
            self.reload_ids()
        self.schedule_sidebar_refresh()

    def _stop_job_refresh(self) -> None:
        if not self.scans.scanning and not self.captioning.running:
            self._job_refresh.stop()

    def _update_count_label(self, *_args: object) -> None:
        self.count_label.setText(plural(self.model.rowCount(), "image"))

    def _on_thumbnails_ready(self, fingerprints: list[str]) -> None:
        self.grid.viewport().update()
        row = self.current_row()
        if row is not None and row.fingerprint in fingerprints and not self.preview.full_loaded:
            pixmap = self.thumbs.pixmap(row.fingerprint, row.path)
            if pixmap is not None:
                self.preview.show_pixmap(row.id, pixmap)

    def _apply_grid_size(self) -> None:
        self.grid.set_cell_size(self.delegate.cell_size(self.grid.fontMetrics()))
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
            self.show_empty_state(not tree)
            self.filter_bar.set_models(models)
            if self._pending_location is not None and self.sidebar.select(self._pending_location):
                self._pending_location = None
            self.sidebar_refreshed.emit()

        submit(self.pool, work, done, self._report_exception)

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

    def default_size(self) -> QSize:
        """The first-start size: the preferred size, shrunk to fit the available screen."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            return PREFERRED_SIZE
        return fit_to_screen(PREFERRED_SIZE, screen.availableGeometry().size())

    def _restore_layout(self) -> None:
        geometry = self.settings.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(self.default_size())
        screen = self.screen()
        if screen is not None:
            # A layout saved on a bigger monitor must still fit this one.
            available = screen.availableGeometry()
            self.resize(fit_to_screen(self.size(), available.size(), margin=1.0))
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
        self.verbs.close_all()
        self.navigation.commit_edit()
        self.save_layout()
        self.scans.cancel_scan()
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
