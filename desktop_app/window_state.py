"""What the window puts back on start: its size and splitters, and, for the library it
had open, the folder, the sort and the selected photos.

Saved through :class:`~desktop_app.app_settings.AppSettings` when the window closes;
restored when that library opens again — the folder once the sidebar shows it, the
selection once the grid has loaded that folder's photos.  A folder or photo that is
gone by then is simply not restored.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelectionModel, QSize

#: The main window (typed loosely: this module must not import it, the window imports this).
MainWindow = Any

#: At most this many selected photos are remembered (the current one always is).
MAX_REMEMBERED_SELECTION = 5000
#: Grid reloads to wait for the remembered folder's photos before giving up on the selection.
_MAX_WAIT_LOADS = 6


def fit_to_screen(preferred: QSize, available: QSize, margin: float = 0.95) -> QSize:
    """*preferred*, shrunk (never grown) to at most *margin* of the *available* screen."""
    return QSize(
        min(preferred.width(), int(available.width() * margin)),
        min(preferred.height(), int(available.height() * margin)),
    )


def fit_to_screen_size(window: Any) -> None:
    screen = window.screen()
    if screen is not None:
        # A layout saved on a bigger monitor must still fit this one.
        window.resize(fit_to_screen(window.size(), screen.availableGeometry().size(), margin=1.0))


def restore_layout(window: MainWindow) -> None:
    settings = window.settings
    geometry = settings.geometry()
    if geometry is None or not window.restoreGeometry(geometry):
        window.resize(window.default_size())
    fit_to_screen_size(window)
    state = settings.window_state()
    if state is not None:
        window.restoreState(state)
    for name, splitter in splitters(window).items():
        saved = settings.splitter(name)
        if saved is not None:
            splitter.restoreState(saved)
        elif name == "right":
            # First start: the caption side gets half the height (at least its minimum) and then
            # every added pixel (its stretch), so a tall screen shows more history; the handle moves it.
            height = max(400, window.height() - 140)
            panel = max(window.panel.minimumSizeHint().height(), height // 2)
            splitter.setSizes([max(1, height - panel), panel])
    view = settings.list_view
    if view:
        window.set_list_view(True)


def splitters(window: MainWindow) -> dict[str, Any]:
    return {"main": window.main_splitter, "right": window.right_splitter}


def save_layout(window: MainWindow) -> None:
    settings = window.settings
    settings.save_layout(window.saveGeometry(), window.saveState(),
                         {name: s.saveState() for name, s in splitters(window).items()})
    settings.list_view = window.list_view_on
    if window.library is not None:
        review = window.image_review
        location = window.sidebar.location()
        settings.save_view_state({
            "library": str(window.library.path),
            "location": list(location),
            "sort": window.filter_bar.sort.currentData(),
            "descending": window.filter_bar.descending.isChecked(),
            "current": review.current_image_id(),
            "selected": review.selected_ids()[:MAX_REMEMBERED_SELECTION],
        })
    settings.sync()


class ViewRestorer:
    """Puts back the last folder, sort and selection when their library opens again."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self._pending: dict[str, Any] | None = None
        window.library_opened.connect(self._on_opened)
        window.ids_loaded.connect(self._on_ids_loaded)

    def _on_opened(self, library: Any) -> None:
        w = self.window
        saved = w.settings.view_state()
        if not saved or saved.get("library") != str(library.path):
            self._pending = None
            return
        self._pending = saved
        self._waited = 0
        bar = w.filter_bar
        index = bar.sort.findData(saved.get("sort"))
        if index >= 0:
            bar.sort.setCurrentIndex(index)
        bar.descending.setChecked(bool(saved.get("descending")))
        location = saved.get("location") or [None, None]
        if location[0] is not None:
            w.sidebar_content.pending_location = (location[0], location[1])

    def _on_ids_loaded(self, _count: int) -> None:
        saved, w = self._pending, self.window
        if saved is None:
            return
        location = tuple(saved.get("location") or (None, None))
        flt = w.grid_content.current_filter()
        current = saved.get("current")
        model = w.model
        arrived = (flt.root_id, flt.folder) == location and (current is None or model.row_of(int(current)) is not None)
        self._waited += 1
        if not arrived and self._waited < _MAX_WAIT_LOADS:
            return  # the folder's photos are still to come
        self._pending = None
        review = w.image_review
        if current is not None:
            review.go_to_image(int(current))
        rows = [model.row_of(int(i)) for i in saved.get("selected") or []]
        selection = w.grid.selectionModel()
        for row in rows:
            if row is not None:
                selection.select(model.index(row, 0), QItemSelectionModel.SelectionFlag.Select)
