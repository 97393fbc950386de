"""CaptionDesk's main window: sidebar, thumbnail grid, preview and caption panel.

The window builds the widgets, the menus and the toolbar; what they do lives in one
controller per concern (:mod:`desktop_app.controllers`): ``self.libraries`` (open a
library, add folders, drag and drop), ``self.scans``, ``self.caption_jobs``,
``self.image_review`` (current image, edits, replace, review keys), ``self.versions``
(train, switch model version), ``self.model_jobs`` (the model thread's job in the status
bar), ``self.verbs`` (the dataset dialogs) and ``self.photo_verbs`` (the photo menu,
loupe and compare).  Callers use the controllers directly.

What the grid and the sidebar show is :mod:`desktop_app.library_views`; they, and the
caption panel, follow ``self.notifier.library_changed`` (:mod:`desktop_app.operations`):
an operation says what it changed once, and each view refreshes itself.

Threading (the rule: the GUI thread only paints and answers the user):

* the grid's id list, sidebar counts and opening a library run on ``self.pool``;
  results return through a read or write op (:mod:`desktop_app.operations`);
* thumbnails and the preview decode on ``self.pool`` too (:mod:`desktop_app.thumbnails`);
* a scan runs in a child process (:func:`core.scan_process.scan_in_subprocess`, so a
  100k-file scan never competes with painting for the GIL), watched from ``self.scan_pool``
  (one thread) with progress as queued signals;
* captioning runs on the long-lived inference thread of
  :class:`~desktop_app.model_thread.CaptionService`;
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

from PySide6.QtCore import QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDockWidget,
    QLabel,
    QListView,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from core.errors import user_message
from core.library import Library
from desktop_app.app_settings import THUMBNAIL_SIZES, AppSettings
from desktop_app.caption_dialog import about_text
from desktop_app.caption_panel import CaptionPanel
from desktop_app.controllers.caption_jobs import CaptionJobsController
from desktop_app.controllers.image_review import ImageReviewController
from desktop_app.controllers.library import LibraryController, dropped_folders
from desktop_app.controllers.model_jobs import ModelJobStatus
from desktop_app.controllers.scan import ScanController
from desktop_app.controllers.search_index import SearchIndexer
from desktop_app.controllers.versions import VersionsController
from desktop_app.delegate import ThumbnailDelegate
from desktop_app.filter_bar import FilterBar
from desktop_app.grid_model import ImageGridModel
from desktop_app.jobs_widget import JobStatusWidget, plural
from desktop_app.library_views import GridContent, JobCatchUp, SidebarContent
from desktop_app.log_panel import LogPanel, QtLogHandler
from desktop_app.model_thread import CaptionService
from desktop_app.operations import LibraryNotifier
from desktop_app.photo_menu import PhotoVerbs, add_search_verbs
from desktop_app.review import CaptionUndoStack
from desktop_app.sidebar import LibrarySidebar
from desktop_app.thumbnail_grid import ThumbnailGrid
from desktop_app.thumbnails import PreviewLoader, ThumbnailCache
from desktop_app.window_state import ViewRestorer, fit_to_screen, restore_layout, save_layout
from desktop_app.window_widgets import EmptyLibraryPage, NoticeBanner, PreviewView

log = logging.getLogger("captiondesk.gui")

#: The Caption verb's tooltip while it can start.
CAPTION_TIP = "Caption the photos in view, the folder or the library with the current model (Ctrl+Shift+C)"

#: The window's size on first start, shrunk to fit a smaller screen.
PREFERRED_SIZE = QSize(1480, 900)


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
        #: The one change notice: the grid, sidebar and caption panel follow it.
        self.notifier = LibraryNotifier(self)
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
        self.grid.selectionModel().selectionChanged.connect(lambda *_: self.update_actions())
        self.model.modelReset.connect(self._update_count_label)
        self.model.rowsInserted.connect(self._update_count_label)

        self.filter_bar = FilterBar()
        self.filter_bar.watch_review_progress(self.model)
        self.ids_loaded.connect(self.filter_bar.show_result_count)
        self.sidebar = LibrarySidebar()
        library = lambda: self.library  # noqa: E731 - the views read the window's current library
        self.grid_content = GridContent(self.model, self.grid, self.filter_bar, self.sidebar, self.pool, library,
                                        self.notifier, self.report_exception, self)
        self.grid_content.loaded.connect(self.ids_loaded)
        self.sidebar_content = SidebarContent(self.sidebar, self.filter_bar, self.pool, library, self.notifier,
                                              self.report_exception, self)
        self.sidebar_content.refreshed.connect(self.sidebar_refreshed)
        self.sidebar_content.empty_changed.connect(self.show_empty_state)
        self.sidebar.add_requested.connect(lambda: self.libraries.choose_folder())
        self.sidebar.remove_requested.connect(lambda root_id: self.libraries.remove_root(root_id))
        self.sidebar.rescan_requested.connect(lambda: self.scans.rescan())

        self.preview = PreviewView()
        self.preview_loader = PreviewLoader(self.pool, parent=self)
        self.panel = CaptionPanel()
        self.caption_undo = CaptionUndoStack(self)
        self.caption_undo.error.connect(lambda message: self.report_error(message))

        center = QWidget()
        center_layout = QVBoxLayout(center)
        center_layout.setContentsMargins(0, 0, 0, 0)
        center_layout.setSpacing(0)
        center_layout.addWidget(self.filter_bar)
        self.banner = NoticeBanner()
        self.banner.action_button.clicked.connect(lambda: self._caption_from_banner())
        center_layout.addWidget(self.banner)
        from desktop_app.list_view import ListMode

        self.list_mode = ListMode(self.grid, self.delegate, self.thumbs, self.filter_bar, self._apply_grid_size)
        center_layout.addWidget(self.list_mode.header)
        center_layout.addWidget(self.grid, 1)
        self.empty_page = EmptyLibraryPage()
        self.empty_page.add_clicked.connect(lambda: self.libraries.choose_folder())
        self.center_stack = QStackedWidget()
        self.center_stack.addWidget(self.empty_page)
        self.center_stack.addWidget(center)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        # The photo's own metadata a tab away from its preview; the caption panel keeps its height.
        from desktop_app.metadata_panel import MetadataPanel

        self.info_panel = MetadataPanel(self.pool)
        self.side_tabs = QTabWidget()
        self.side_tabs.setObjectName("sideTabs")
        self.side_tabs.setDocumentMode(True)
        self.side_tabs.addTab(self.preview, "Preview")
        self.side_tabs.addTab(self.info_panel, "Photo info")
        self.right_splitter.addWidget(self.side_tabs)
        self.right_splitter.addWidget(self.panel)
        # The caption panel takes the spare height: its history shows more rows on a tall screen.
        self.right_splitter.setStretchFactor(0, 0)
        self.right_splitter.setStretchFactor(1, 1)
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
        self.caption_status = JobStatusWidget("captionStatus", pausable=True)
        # Training, evaluating or merging a version on the model thread: shown here too, so
        # its window can be closed while it runs.
        self.model_job_status = JobStatusWidget("modelJobStatus", pausable=False, showable=True)
        # "N images failed": a link that opens the log with each failure and its reason.
        self.failures_label = QLabel()
        self.failures_label.setObjectName("failuresLabel")
        self.failures_label.setTextFormat(Qt.TextFormat.RichText)
        self.failures_label.linkActivated.connect(lambda _link: self.show_log())
        self.failures_label.hide()
        self.search_status = QLabel()
        self.search_status.hide()
        self.statusBar().addPermanentWidget(self.search_status)
        self.statusBar().addPermanentWidget(self.scan_status)
        self.statusBar().addPermanentWidget(self.caption_status)
        self.statusBar().addPermanentWidget(self.model_job_status)
        self.statusBar().addPermanentWidget(self.failures_label)
        self.statusBar().addPermanentWidget(self.count_label)

        # -- background jobs -------------------------------------------------------
        self.captioning = CaptionService(engine, self)
        self.captioning.state_changed.connect(self.update_actions)
        self.model_jobs = ModelJobStatus(self.captioning, self.model_job_status, self.announce, self.report_error, self)

        # -- controllers: each gets the widgets it owns, and the window as a narrow WindowShell --
        self.image_review = ImageReviewController(
            self, grid=self.grid, model=self.model, panel=self.panel, preview=self.preview,
            preview_loader=self.preview_loader, thumbs=self.thumbs, filter_bar=self.filter_bar,
            caption_undo=self.caption_undo, grid_content=self.grid_content)
        self.grid_content.current = self.image_review
        self.grid.selectionModel().currentChanged.connect(lambda *_: self.info_panel.follow(self.image_review.current_row()))
        self.job_catch_up = JobCatchUp(self.grid_content, self.sidebar_content,
                                       lambda: self.scans.scanning or self.captioning.running, self)
        self.scans = ScanController(
            self, status=self.scan_status, sidebar=self.sidebar, grid_content=self.grid_content,
            job_catch_up=self.job_catch_up, scan_pool=self.scan_pool, offer=self.show_uncaptioned_banner,
            finished=self.scan_finished.emit)
        self.caption_jobs = CaptionJobsController(
            self, service=self.captioning, status=self.caption_status, failures_label=self.failures_label,
            model=self.model, current=self.image_review, grid_content=self.grid_content,
            job_catch_up=self.job_catch_up, hide_banner=self.hide_banner)
        self.libraries = LibraryController(
            self, service=self.captioning, current=self.image_review, scans=self.scans,
            caption_undo=self.caption_undo, model=self.model, thumbs=self.thumbs, panel=self.panel,
            preview=self.preview, sidebar_content=self.sidebar_content, opened=self.library_opened.emit)
        self.versions = VersionsController(self, service=self.captioning, caption_jobs=self.caption_jobs)
        self.search_index = SearchIndexer(self.grid_content, self.pool, library, self.notifier, self.search_status,
                                          self.report_exception, self)

        self.setAcceptDrops(True)
        self._build_actions()
        self._build_toolbar()
        self.view_restorer = ViewRestorer(self)
        restore_layout(self)
        self.update_actions()

    # =========================================================================
    # actions and menus
    # =========================================================================

    def make_action(self, key: str, text: str, slot, shortcut: QKeySequence | str | None = None, tip: str = "") -> QAction:
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
        a = self.make_action
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(a("open_library", "Open library…", self.libraries.choose_library, "Ctrl+Shift+O"))
        file_menu.addAction(a("add_folder", "Add folder…", self.libraries.choose_folder, QKeySequence.StandardKey.Open))
        file_menu.addAction(a("rescan", "Rescan folders", self.scans.rescan, "F5"))
        file_menu.addSeparator()
        file_menu.addAction(a("quit", "Quit", self.close, QKeySequence.StandardKey.Quit))

        edit_menu = self.menuBar().addMenu("&Edit")
        undo = self.caption_undo.undo_stack.createUndoAction(self, "Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.caption_undo.undo_stack.createRedoAction(self, "Redo")
        redo.setShortcut(QKeySequence.StandardKey.Redo)
        self.addAction(undo)
        self.addAction(redo)
        self.actions["undo"], self.actions["redo"] = undo, redo
        edit_menu.addAction(undo)
        edit_menu.addAction(redo)
        edit_menu.addSeparator()
        edit_menu.addAction(a("save", "Save caption", self.image_review.save_caption, QKeySequence.StandardKey.Save))
        edit_menu.addAction(a("edit", "Edit caption", self.image_review.focus_editor, "F2"))
        edit_menu.addAction(a("accept", "Accept caption", self.image_review.accept_current, "Ctrl+Shift+A"))
        edit_menu.addAction(a("unverify", "Mark as not verified", self.image_review.unverify_selection, None))
        edit_menu.addSeparator()
        edit_menu.addAction(a("find", "Find…", self.image_review.focus_search, QKeySequence.StandardKey.Find))
        edit_menu.addAction(a("replace", "Find and replace…", self.image_review.open_find_replace, "Ctrl+H"))
        edit_menu.addAction(a("select_all", "Select all images", self.grid.selectAll, QKeySequence.StandardKey.SelectAll))

        review = self.menuBar().addMenu("&Review")
        review.addAction(a("next", "Next image", self.image_review.next_image, "Alt+Right"))
        review.addAction(a("previous", "Previous image", self.image_review.previous_image, "Alt+Left"))
        review.addAction(a("next_uncaptioned", "Next uncaptioned", self.image_review.next_uncaptioned, "Alt+U"))
        review.addAction(a("next_least_confident", "Next least confident", self.image_review.next_least_confident, "Alt+L"))
        review.addSeparator()
        review.addAction(a("accept_next", "Accept and next", self.image_review.accept_and_next, "Ctrl+Return"))
        review.addAction(a("edit_next", "Save edit and next", self.image_review.edit_and_next, "Ctrl+Shift+Return"))
        review.addSeparator()
        queue = a("review_queue", "Review queue (least confident first)", self.image_review.toggle_review_queue, "Ctrl+R")
        queue.setCheckable(True)
        self.filter_bar.review.toggled.connect(queue.setChecked)
        review.addAction(queue)

        view = self.menuBar().addMenu("&View")
        view.addAction(a("larger", "Larger thumbnails", lambda: self.step_thumbnail_size(1), QKeySequence.StandardKey.ZoomIn))
        view.addAction(a("smaller", "Smaller thumbnails", lambda: self.step_thumbnail_size(-1), QKeySequence.StandardKey.ZoomOut))
        as_list = a("list_view", "List with columns", lambda: self.set_list_view(not self.list_view_on), "Ctrl+L")
        as_list.setCheckable(True)
        view.addAction(as_list)
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

        self.verbs = verb_menus.install(self, verb_menus.VerbHooks(
            menu_bar=self.menuBar(), actions=self.actions, make_action=self.make_action,
            current_filter=self.grid_content.current_filter, selected_ids=self.image_review.selected_ids,
            shown_count=self.model.rowCount, captioning=self.captioning,
            set_thumbnail_size=self.set_thumbnail_size, open_library=self.libraries.open_library))
        from desktop_app.controllers.photo_verbs import PhotoController

        self.photo_verbs = PhotoController(
            self, grid=self.grid, model=self.model, review=self.image_review, caption_jobs=self.caption_jobs,
            caption_undo=self.caption_undo, sidebar=self.sidebar, thumbs=self.thumbs, verbs=lambda: self.verbs)
        add_search_verbs(self.photo_verbs.menu, PhotoVerbs(find_similar=self.search_index.find_similar),
                         lambda image_id: self.model.row_data(self.model.row_of(image_id)).name, before="caption")
        view.addAction(a("loupe", "Loupe (Space)", self.photo_verbs.open_loupe, None))


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
        self.image_review.focus_editor()

    def announce(self, message: str) -> None:
        """A background job ended: say so in the status bar until the next message replaces it."""
        self.statusBar().showMessage(message)

    def update_actions(self) -> None:
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

    def _update_count_label(self, *_args: object) -> None:
        self.count_label.setText(plural(self.model.rowCount(), "image"))

    def _on_thumbnails_ready(self, fingerprints: list[str]) -> None:
        self.grid.viewport().update()
        row = self.image_review.current_row()
        if row is not None and row.fingerprint in fingerprints and not self.preview.full_loaded:
            pixmap = self.thumbs.pixmap(row.fingerprint, row.path)
            if pixmap is not None:
                self.preview.show_pixmap(row.id, pixmap)

    def _apply_grid_size(self) -> None:
        self.grid.set_cell_size(self.delegate.cell_size(self.grid.fontMetrics()))
        self.grid.setIconSize(QSize(self.thumbs.display_size, self.thumbs.display_size))

    @property
    def list_view_on(self) -> bool:
        return self.list_mode.on

    def set_list_view(self, on: bool) -> None:
        self.list_mode.set(on)
        self.actions["list_view"].setChecked(on)

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
    # errors, about, settings, closing
    # =========================================================================

    def report_exception(self, exc: BaseException) -> None:
        """An operation failed: its message (with its type, unless it is written for the person)."""
        self.report_error(user_message(exc), getattr(exc, "__traceback_text__", None))

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

    def save_layout(self) -> None:
        save_layout(self)

    def shutdown(self) -> None:
        """Save the edit in progress, stop jobs and threads, close an owned library."""
        self.verbs.close_all()
        self.image_review.commit_edit()
        self.save_layout()
        self.scans.cancel_scan()
        self.job_catch_up.stop()
        self.captioning.shutdown()
        self.scan_pool.waitForDone(30_000)
        self.pool.clear()
        self.pool.waitForDone(10_000)
        logging.getLogger("captiondesk").removeHandler(self._log_handler)
        if self.library is not None and self.libraries.owned:
            self.library.close()
        self.library = None

    def closeEvent(self, event: QCloseEvent) -> None:
        self.search_index.close()
        self.shutdown()
        super().closeEvent(event)
        app = QApplication.instance()
        if app is not None:
            app.processEvents()
