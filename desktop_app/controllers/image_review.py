"""The current image: moving through the grid, the preview, the caption panel and edits.

Every move goes through :meth:`ImageReviewController.go_to_row`, the one place that makes a
row current and scrolls it into view; every caption change the person makes (an edit,
accept, revert, undo/redo, find-and-replace) goes out as one ``library_changed`` notice
(:meth:`ImageReviewController.on_captions_changed`), and the caption panel follows that
notice like the grid and the sidebar do, whoever sent it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt
from PySide6.QtGui import QPixmap

from core import edits, queries, view_rows
from core.kinds import CAPTION, all_kinds, keyword_vocabulary
from core.view_rows import ImageRow
from desktop_app.jobs_widget import plural
from desktop_app.operations import LibraryChanges
from desktop_app.review import FindReplaceDialog

if TYPE_CHECKING:
    from desktop_app.caption_panel import CaptionPanel
    from desktop_app.controllers.shell import WindowShell
    from desktop_app.filter_bar import FilterBar
    from desktop_app.grid_model import ImageGridModel
    from desktop_app.library_views import GridContent
    from desktop_app.review import CaptionUndoStack
    from desktop_app.thumbnail_grid import ThumbnailGrid
    from desktop_app.thumbnails import PreviewLoader, ThumbnailCache
    from desktop_app.window_widgets import PreviewView

log = logging.getLogger("captiondesk.gui")


class ImageReviewController:
    """Owns the current image's widgets: the grid's selection, the preview, the caption panel."""

    def __init__(self, window: WindowShell, *, grid: ThumbnailGrid, model: ImageGridModel, panel: CaptionPanel,
                 preview: PreviewView, preview_loader: PreviewLoader, thumbs: ThumbnailCache, filter_bar: FilterBar,
                 caption_undo: CaptionUndoStack, grid_content: GridContent) -> None:
        self.window = window
        self.grid = grid
        self.model = model
        self.panel = panel
        self.preview = preview
        self.preview_loader = preview_loader
        self.thumbs = thumbs
        self.filter_bar = filter_bar
        self.caption_undo = caption_undo
        self.grid_content = grid_content
        grid.selectionModel().currentChanged.connect(self._on_current_changed)
        preview_loader.loaded.connect(self._on_preview_loaded)
        caption_undo.changed.connect(self.on_captions_changed)
        window.notifier.library_changed.connect(self._on_library_changed)
        panel.save_requested.connect(self.save_caption)
        panel.accept_requested.connect(self.accept_current)
        panel.revert_requested.connect(self.revert_to)
        panel.commit_requested.connect(self.commit_edit)
        # The panel shows the kind the filters look at (a tab click does not refilter the grid).
        filter_bar.kind_choice.currentIndexChanged.connect(
            lambda _i: panel.set_kind(filter_bar.kind_choice.currentData() or CAPTION))
        panel.kind_changed.connect(lambda _kind: self._load_vocabulary())
        #: The keyword editor's completions: (library, vocabulary), reloaded after a change.
        self._vocabulary: tuple[object, list[str]] | None = None
        caption_undo.stepped.connect(self.on_undo_step)

    # -- where we are ----------------------------------------------------------------------

    def current_image_id(self) -> int | None:
        index = self.grid.currentIndex()
        return self.model.image_id(index.row()) if index.isValid() else None

    def current_row(self) -> ImageRow | None:
        index = self.grid.currentIndex()
        return self.model.row_data(index.row()) if index.isValid() else None

    def current_index_row(self) -> int:
        index = self.grid.currentIndex()
        return index.row() if index.isValid() else -1

    def selected_ids(self) -> list[int]:
        rows = sorted(index.row() for index in self.grid.selectionModel().selectedIndexes())
        return [self.model.image_id(r) for r in rows if self.model.image_id(r) is not None]

    def target_ids(self) -> list[int]:
        """What a verb acts on: the selected images, else the current one."""
        ids = self.selected_ids()
        current = self.current_image_id()
        return ids or ([current] if current is not None else [])

    def scope_filter(self, *, selected: bool = False):
        """The grid's filter, limited to the selected images when *selected*."""
        flt = self.grid_content.current_filter()
        return flt.with_(ids=tuple(self.selected_ids())) if selected else flt

    # -- moving ------------------------------------------------------------------------------

    def go_to_row(self, row: int | None, *, scroll: bool = True) -> bool:
        """Make *row* current (and the selection) and scroll it into view."""
        if row is None or not 0 <= row < self.model.rowCount():
            return False
        index = self.model.index(row, 0)
        self.grid.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if scroll:
            self.grid.scrollTo(index)
        return True

    def go_to_image(self, image_id: int) -> bool:
        return self.go_to_row(self.model.row_of(image_id))

    def next_image(self) -> bool:
        return self.go_to_row(self.current_index_row() + 1)

    def previous_image(self) -> bool:
        return self.go_to_row(max(0, self.current_index_row() - 1))

    def next_uncaptioned(self) -> bool:
        w = self.window
        if w.library is None:
            return False
        self.commit_edit()
        with w.library.db.read() as session:
            row = queries.next_in_state(session, self.model.ids(), self.current_index_row(), "uncaptioned",
                                        kind=self.model.kind)
        if row is None:
            w.statusBar().showMessage("No uncaptioned image in this view", 4000)
            return False
        return self.go_to_row(row)

    def next_least_confident(self) -> bool:
        w = self.window
        if w.library is None:
            return False
        self.commit_edit()
        current = self.current_row()
        after = None
        if current is not None and current.state == "model" and current.score is not None:
            after = (current.score, current.id)
        with w.library.db.read() as session:
            image_id = queries.least_confident(session, self.grid_content.current_filter(), after=after)
        if image_id is None or not self.go_to_image(image_id):
            w.statusBar().showMessage("No less confident model caption in this view", 4000)
            return False
        return True

    def accept_and_next(self) -> None:
        """Keep the caption (typed text is saved, a model caption becomes verified); move on."""
        self.accept_current()
        self.next_image()

    def edit_and_next(self) -> None:
        """Save the typed text, move on, and put the cursor in the next caption."""
        self.commit_edit()
        self.next_image()
        self.focus_editor()

    def toggle_review_queue(self) -> None:
        bar = self.filter_bar
        bar.set_review_queue(not bar.review.isChecked())

    # -- showing the current image --------------------------------------------------------------

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        # Leaving an image saves what the person typed for it: nothing is ever lost by
        # moving on, and every saved edit is one undo step.
        self.commit_edit()
        self.show_current(self.model.row_data(current.row()) if current.isValid() else None)

    def show_current(self, row: ImageRow | None) -> None:
        w = self.window
        if row is None or w.library is None:
            self.panel.show_image(None, None)
            self.preview.show_pixmap(None, None, "")
            return
        with w.library.db.read() as session:
            self.panel.set_kinds(list(all_kinds(session).values()))
            by_kind = {kind: view_rows.caption_details(session, row.id, kind) for kind in self.panel.kind_names()}
        self.panel.show_image(row, by_kind[CAPTION], by_kind)
        self._load_vocabulary()
        if self.preview.image_id != row.id:
            pixmap = self.thumbs.pixmap(row.fingerprint, row.path)
            self.preview.show_pixmap(row.id, pixmap, "Loading…")
            self.preview_loader.request(row.id, row.path)

    def _on_preview_loaded(self, image_id: int, image: Any, error: str | None) -> None:
        preview = self.preview
        if preview.image_id != image_id:
            return
        if image is None:
            preview.show_pixmap(image_id, None, error or "Cannot show this image")
        else:
            preview.show_pixmap(image_id, QPixmap.fromImage(image), full=True)

    def _load_vocabulary(self) -> None:
        """The keyword editor completes from the library's keywords (read when the keywords show)."""
        library = self.window.library
        if library is None or self.panel.kind != "keywords":
            return
        if self._vocabulary is None or self._vocabulary[0] is not library:
            with library.db.read() as session:
                self._vocabulary = (library, keyword_vocabulary(session))
            self.panel.keywords.set_vocabulary(self._vocabulary[1])

    def reload_panel(self) -> None:
        """Re-read the current image's captions (after a change), unless the person is typing."""
        if self.panel.is_dirty():
            return
        self.show_current(self.current_row())

    # -- editing ------------------------------------------------------------------------------

    def commit_edit(self) -> bool:
        """Save the panel's unsaved text for its image; True when something was saved."""
        w = self.window
        if not self.panel.is_dirty() or self.panel.image_id is None:
            return False
        image_id = self.panel.image_id
        text = self.panel.text()
        if not text:
            self.panel.show_message("An empty value is not saved: type one, or undo your changes (Ctrl+Z).")
            return False
        saved = self.caption_undo.save_edit(image_id, text, self.panel.kind)
        if saved:
            w.statusBar().showMessage("Saved", 2000)
        return saved

    def on_captions_changed(self, image_ids: list[int]) -> None:
        """The person changed the captions of *image_ids* (edit, accept, revert, undo/redo, replace)."""
        self.window.notifier.notify(LibraryChanges.of_captions(image_ids, edited=True))

    def _on_library_changed(self, changes: LibraryChanges) -> None:
        """The caption panel follows the notice: the current image's captions may be new."""
        current = self.current_image_id()
        if changes.captions or changes.any_caption or changes.job_ended:
            self._vocabulary = None  # new keywords may have come
        if changes.edited and current in changes.captions:
            # The change came from this panel (or undo/redo): show what is now current.
            self.show_current(self.current_row())
        elif current in changes.captions or changes.any_caption or changes.job_ended:
            self.reload_panel()

    def save_caption(self) -> None:
        if not self.commit_edit() and self.panel.is_dirty() and not self.panel.text():
            self.panel.show_message("A caption cannot be empty.")

    def accept_current(self) -> bool:
        """Accept the shown kind's value: of every selected photo when several are selected."""
        image_id = self.current_image_id()
        if image_id is None:
            return False
        if self.panel.is_dirty():
            return self.commit_edit()
        selected = self.selected_ids()
        if len(selected) > 1:
            count = self.caption_undo.accept_many(selected, self.panel.kind)
            self.window.statusBar().showMessage(f"Accepted {plural(count, 'value')} (Ctrl+Z to undo)", 5000)
            return count > 0
        return self.caption_undo.accept(image_id, self.panel.kind)

    def unverify_selection(self) -> int:
        """Take back the acceptance of the selected (or current) images' captions (one undo step)."""
        ids = self.target_ids()
        if not ids:
            return 0
        self.commit_edit()
        count = self.caption_undo.unverify(ids, self.panel.kind)
        skipped = len(ids) - count
        note = f"; {plural(skipped, 'caption')} written or edited by a person stay verified" if skipped else ""
        self.window.statusBar().showMessage(f"Marked {plural(count, 'caption')} as not verified{note}", 6000)
        return count

    def revert_to(self, caption_id: int) -> bool:
        return self.caption_undo.revert(caption_id)

    def focus_editor(self) -> None:
        editor = self.panel.value_editor()
        editor.setFocus(Qt.FocusReason.ShortcutFocusReason)
        editor.selectAll()

    def focus_search(self) -> None:
        search = self.filter_bar.search
        search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        search.selectAll()

    # -- find and replace ------------------------------------------------------------------------

    def open_find_replace(self) -> None:
        w = self.window
        dialog = FindReplaceDialog(self.model.rowCount(), self.replacement_preview, w,
                                   kind=self.grid_content.current_filter().kind,
                                   selection_count=len(self.selected_ids()))
        accepted = dialog.exec() == FindReplaceDialog.DialogCode.Accepted and dialog.find.text()
        dialog.deleteLater()
        if accepted:
            w.activateWindow()
            self.find_replace(
                dialog.find.text(),
                dialog.replacement.text(),
                case_sensitive=dialog.case.isChecked(),
                verified=dialog.verify.isChecked(),
                selected=dialog.selected_only.isChecked(),
            )

    def replacement_preview(self, find: str, replacement: str, case_sensitive: bool, *,
                            selected: bool = False) -> list[tuple[int, str, str]]:
        """What a find-and-replace over the view (or the selection) would change: ``(image_id, old, new)``."""
        w = self.window
        if w.library is None or not find:
            return []
        with w.library.db.read() as session:
            candidates = queries.find_replace_candidates(session, self.scope_filter(selected=selected), find,
                                                         case_sensitive=case_sensitive)
        return edits.replacement_preview(candidates, find, replacement, case_sensitive=case_sensitive)

    def on_undo_step(self, image_ids: list[int], text: str) -> None:
        """After Ctrl+Z / Ctrl+Shift+Z: go to the image it changed and say what happened."""
        w = self.window
        if image_ids and self.current_image_id() not in image_ids:
            self.go_to_image(image_ids[0])
        w.statusBar().showMessage(text, 5000)

    def find_replace(
        self, find: str, replacement: str, *, case_sensitive: bool = False, verified: bool = False,
        selected: bool = False,
    ) -> int:
        """Replace *find* in the current captions of the images in view, or the selected ones (one undo step).

        Model captions stay unreviewed unless *verified*."""
        w = self.window
        if w.library is None or not find:
            return 0
        self.commit_edit()
        flt = self.scope_filter(selected=selected)
        with w.library.db.read() as session:
            candidates = queries.find_replace_candidates(session, flt, find, case_sensitive=case_sensitive)
        count = self.caption_undo.replace(candidates, find, replacement, case_sensitive=case_sensitive,
                                          verified=verified, kind=flt.kind)
        # Ctrl+Z must reach the caption undo, not the search box that had focus before the dialog.
        self.grid.setFocus(Qt.FocusReason.OtherFocusReason)
        w.statusBar().showMessage(f"Replaced in {plural(count, 'caption')} (Ctrl+Z to undo)", 6000)
        log.info("Find and replace “%s” → “%s”: %d captions changed", find, replacement, count)
        return count
