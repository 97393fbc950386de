"""What the grid and the sidebar show, and how they follow the library's change notice.

:class:`GridContent` owns the grid's id list (the current filter, run on the pool) and
:class:`SidebarContent` the folder tree, counts and model list.  Each subscribes to
:attr:`desktop_app.operations.LibraryNotifier.library_changed` and refreshes itself;
nothing else asks them to.  While a scan or a caption job runs they also catch up every
:data:`JOB_REFRESH_MS` (new images appear as the scan finds them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from core import queries, view_rows
from core.kinds import CaptionKind, all_kinds
from core.library import Library
from core.queries import ImageFilter
from core.search import query as search_query
from desktop_app.filter_bar import FilterBar
from desktop_app.grid_model import ImageGridModel
from desktop_app.operations import LibraryChanges, LibraryNotifier, ReadOp
from desktop_app.sidebar import LibrarySidebar, Location
from desktop_app.thumbnail_grid import ThumbnailGrid

#: How often the grid and sidebar catch up with a running scan or captioning job.
JOB_REFRESH_MS = 1500
#: How many photos a search by meaning or "Find similar" shows, best first.
MEANING_RESULTS = 200


class CurrentImage(Protocol):
    """What the grid needs from the image-review controller to keep the current image."""

    def current_image_id(self) -> int | None: ...
    def commit_edit(self) -> bool: ...
    def go_to_row(self, row: int | None, *, scroll: bool = True) -> bool: ...
    def show_current(self, row: view_rows.ImageRow | None) -> None: ...


class SidebarContent(QObject):
    """The sidebar's folders with counts and the filter bar's model list."""

    #: The sidebar counts were refreshed.
    refreshed = Signal()
    #: Whether the library has no folder (the window shows its "Add a folder" page).
    empty_changed = Signal(bool)

    def __init__(self, sidebar: LibrarySidebar, filter_bar: FilterBar, pool: QThreadPool,
                 library: Callable[[], Library | None], notifier: LibraryNotifier,
                 report_exception: Callable[[BaseException], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.sidebar = sidebar
        self.filter_bar = filter_bar
        self.pool = pool
        self.library = library
        self.report_exception = report_exception
        #: A folder to select once the tree shows it (a folder just added).
        self.pending_location: Location | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(400)
        self._timer.timeout.connect(self.refresh)
        notifier.library_changed.connect(self._on_library_changed)

    def _on_library_changed(self, changes: LibraryChanges) -> None:
        # A new library or folder shows at once; caption counts may wait for a burst to end.
        if changes.library or changes.folders or changes.images or changes.any_caption or changes.job_ended:
            self.refresh()
        elif changes:  # captions or versions: counts and the model list
            self.schedule_refresh()

    def schedule_refresh(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def refresh(self) -> None:
        library = self.library()
        if library is None:
            self.sidebar.set_tree([])
            return

        Found = tuple[list[view_rows.FolderNode], list[tuple[queries.ModelKey, int]], list[CaptionKind]]

        def work() -> Found:
            with library.db.read() as session:
                kinds = list(all_kinds(session).values())
                return view_rows.folder_tree(session), view_rows.model_keys(session), kinds

        def done(result: Found) -> None:
            if library is not self.library():
                return
            tree, models, kinds = result
            self.sidebar.set_tree(tree)
            self.empty_changed.emit(not tree)
            self.filter_bar.set_models(models)
            self.filter_bar.set_kinds(kinds)
            if self.pending_location is not None and self.sidebar.select(self.pending_location):
                self.pending_location = None
            self.refreshed.emit()

        ReadOp(work, success=done, failure=self.report_exception).run(self.pool)


class GridContent(QObject):
    """The grid's rows: the current filter's ids, re-queried when the library's images change."""

    #: The id list was (re)loaded; argument: number of rows.
    loaded = Signal(int)

    def __init__(self, model: ImageGridModel, grid: ThumbnailGrid, filter_bar: FilterBar,
                 sidebar: LibrarySidebar, pool: QThreadPool, library: Callable[[], Library | None],
                 notifier: LibraryNotifier, report_exception: Callable[[BaseException], None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.grid = grid
        self.filter_bar = filter_bar
        self.sidebar = sidebar
        self.pool = pool
        self.library = library
        self.report_exception = report_exception
        self.current: CurrentImage | None = None
        self._generation = 0
        self._loading = False
        #: A running job found new images: re-query on the next catch-up.
        self.dirty = False
        #: The current photo when a filter found nothing, to come back to when it finds it again.
        self._current_before_empty: int | None = None
        #: "Find similar": the photo whose look-alikes the grid shows (None: the filter's photos).
        self.similar_to: int | None = None
        #: The embedding models of search by meaning (None: the defaults), by space.
        self.search_models: dict[str, str | None] = {"text": None, "image": None}
        #: Embeds a query ``(space, model, text)`` outside this process (the search worker); None: here.
        self.encode_query: Callable[[str, str, str], Any] | None = None
        filter_bar.changed.connect(self._on_filter_changed)
        filter_bar.similar_back.clicked.connect(self._on_filter_changed)
        sidebar.location_changed.connect(lambda _loc: self.reload_ids())
        notifier.library_changed.connect(self._on_library_changed)

    def _on_library_changed(self, changes: LibraryChanges) -> None:
        if changes.library and self.library() is None:
            self.model.set_ids([])
        elif changes.membership_changed():
            self.reload_ids()
        elif changes.any_caption:
            self.reload_ids(keep_scroll=True)
        elif changes.captions:
            # Rows change in place (badge, snippet); membership is not re-queried, so
            # images do not jump away while the person is looking at them.
            self.model.refresh_ids(sorted(changes.captions))

    def _on_filter_changed(self) -> None:
        self.similar_to = None
        self.filter_bar.similar_note.hide()
        self.reload_ids()

    def show_similar(self, image_id: int, name: str) -> None:
        """Show the photos that look like *image_id* (it first), best first, within the filters."""
        self.similar_to = image_id
        self.filter_bar.similar_label.setText(f"Photos that look like {name}")
        self.filter_bar.similar_note.show()
        self.filter_bar.restart_at_top = True  # the photo asked about, first, becomes the current one
        self.reload_ids()

    def current_filter(self) -> ImageFilter:
        root_id, folder = self.sidebar.location()
        return self.filter_bar.filter().with_(root_id=root_id, folder=folder)

    def reload_ids(self, *, keep_scroll: bool = False) -> None:
        """Re-run the current filter on a worker and show the result (keeps the current image).

        *keep_scroll*: the grid stays where the person scrolled it (captions changed by a
        dialog), instead of scrolling back to the current image.
        """
        library = self.library()
        if library is None:
            self.model.set_ids([])
            return
        self._generation += 1
        generation = self._generation
        flt = self.current_filter()
        self._loading = True
        self.dirty = False

        meaning, similar_to, models = self.filter_bar.meaning(), self.similar_to, dict(self.search_models)
        encode = self.encode_query

        def work() -> tuple[list[int], dict[int, int]]:
            if similar_to is not None:
                hits = search_query.similar(library, similar_to, flt=flt.with_(text=""), limit=MEANING_RESULTS,
                                            model=models["image"])
                ids = [similar_to, *(h.image_id for h in hits)]
            elif meaning and flt.text.strip():
                ids = [h.image_id for h in search_query.search(library, flt.text, by=meaning, flt=flt.with_(text=""),
                                                                limit=MEANING_RESULTS, model=models[meaning],
                                                                encode=encode)]
            else:
                with library.db.read() as session:
                    ids = queries.filtered_ids(session, flt)
            # The id -> row map too, here rather than on the GUI thread.
            return ids, {image_id: row for row, image_id in enumerate(ids)}

        def done(result: tuple[list[int], dict[int, int]]) -> None:
            if generation != self._generation or library is not self.library():
                return  # a newer filter was asked for meanwhile
            self._loading = False
            self._show_ids(*result, keep_scroll=keep_scroll)

        def failed(exc: BaseException) -> None:
            self._loading = False
            self.report_exception(exc)

        ReadOp(work, success=done, failure=failed).run(self.pool, priority=2)

    def _show_ids(self, ids: list[int], row_of: dict[int, int] | None = None, *, keep_scroll: bool = False) -> None:
        nav = self.current
        if nav is None:  # set by the window right after building both
            return
        current = nav.current_image_id()
        if current is None:  # an empty result in between (a search that found nothing) keeps the place
            current = self._current_before_empty
        self._current_before_empty = current if not ids else None
        scrolled = self.grid.verticalScrollBar().value()
        nav.commit_edit()
        self.model.set_kind(self.current_filter().kind)  # badges and text of the kind filtered on
        self.model.set_ids(ids, row_of)
        if ids and self.filter_bar.take_restart_at_top():
            nav.go_to_row(0)  # the review queue starts at the least confident caption
        elif current is not None and self.model.row_of(current) is not None:
            nav.go_to_row(self.model.row_of(current), scroll=not keep_scroll)
            if keep_scroll:
                self.grid.doItemsLayout()  # the scroll range of the new rows, before putting the view back
                self.grid.verticalScrollBar().setValue(scrolled)
        elif ids and not self.grid.currentIndex().isValid():
            nav.go_to_row(0)
        elif not ids:
            nav.show_current(None)
        self.loaded.emit(len(ids))

    def catch_up(self) -> None:
        """During a job: show newly found images (when the job said it found some)."""
        if self.dirty and not self._loading:
            self.reload_ids()


class JobCatchUp(QObject):
    """Every :data:`JOB_REFRESH_MS` while a scan or a caption job runs: new images and counts."""

    def __init__(self, grid: GridContent, sidebar: SidebarContent, jobs_running: Callable[[], bool],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs_running = jobs_running
        self._timer = QTimer(self)
        self._timer.setInterval(JOB_REFRESH_MS)
        self._timer.timeout.connect(grid.catch_up)
        self._timer.timeout.connect(sidebar.schedule_refresh)

    def start(self) -> None:
        self._timer.start()

    def stop_if_idle(self) -> None:
        if not self.jobs_running():
            self._timer.stop()

    def stop(self) -> None:
        self._timer.stop()
