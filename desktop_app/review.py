"""Caption edits as undoable commands: edit, accept, revert, find-and-replace.

:class:`CaptionUndoStack` performs each operation at once — one short write transaction
through :mod:`core.edits` (which uses :mod:`core.captions`) — and then pushes a
:class:`ChangeCommand` on its ``QUndoStack``.  Undo and redo re-point which caption is
current (see :mod:`core.edits` for why), so stepping back and forth writes no new
rows and never loses one.  The stack reports the images it touched through
:attr:`CaptionUndoStack.changed`; the image-review controller turns that into the
window's ``library_changed`` notice, which the grid, sidebar and panel follow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core import edits
from core.captions import CaptionError
from core.edits import Change
from core.kinds import BUILTIN_KINDS, CAPTION
from core.library import Library


def _noun(kind: str) -> str:
    """How an undo step names a kind's value: "caption", "alt text", "keywords"."""
    return BUILTIN_KINDS[kind].label.lower() if kind in BUILTIN_KINDS else kind.replace("_", " ")


class ChangeCommand(QUndoCommand):
    """Changes that were already applied when the command was made; redo re-applies."""

    def __init__(self, editor: CaptionUndoStack, label: str, changes: Sequence[Change]) -> None:
        super().__init__(label)
        self.editor = editor
        self.changes = list(changes)
        self._first_redo = True

    def redo(self) -> None:
        if self._first_redo:  # the operation itself already wrote it
            self._first_redo = False
            return
        self.editor._apply(self, undo=False)

    def undo(self) -> None:
        self.editor._apply(self, undo=True)


class CaptionUndoStack(QObject):
    """Owns the undo stack; every method writes to the library immediately."""

    #: Image ids whose current caption changed (edit, undo, redo, replace...).
    changed = Signal(list)
    #: A user-facing message when an operation could not be done.
    error = Signal(str)
    #: An undo or redo was applied: (image ids it changed, "Undone: Edit caption").
    #: The window goes to the image it changed, so the person sees what came back.
    stepped = Signal(list, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.library: Library | None = None
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setUndoLimit(1000)

    def set_library(self, library: Library | None) -> None:
        self.library = library
        self.undo_stack.clear()  # commands refer to the old library's rows

    # -- operations --------------------------------------------------------------------

    def _push(self, label: str, changes: Sequence[Change]) -> None:
        if not changes:
            return
        self.undo_stack.push(ChangeCommand(self, label, changes))
        self.changed.emit(sorted({c.image_id for c in changes}))

    def _run(self, label: str, operation) -> bool:
        if self.library is None:
            return False
        try:
            result = operation()
        except CaptionError as exc:
            self.error.emit(str(exc))
            return False
        if result is None:
            return False
        self._push(label, result if isinstance(result, list) else [result])
        return True

    def save_edit(self, image_id: int, text: str, kind: str = CAPTION) -> bool:
        """Save a person's value of *kind*; False when it changed nothing or was refused."""
        return self._run(f"Edit {_noun(kind)}", lambda: edits.save_edit(self.library.db, image_id, text, kind))

    def accept(self, image_id: int, kind: str = CAPTION) -> bool:
        return self._run(f"Accept {_noun(kind)}", lambda: edits.accept(self.library.db, image_id, kind))

    def accept_many(self, image_ids: Sequence[int], kind: str = CAPTION) -> int:
        """Verify the value of *kind* of each of *image_ids* as one undo step; how many changed."""
        changes: list[Change] = []

        def run() -> list[Change]:
            changes.extend(edits.accept_many(self.library.db, image_ids, kind))
            return changes

        self._run(f"Accept {_noun(kind)} of {len(image_ids)} photos", run)
        return len(changes)

    def revert(self, caption_id: int) -> bool:
        return self._run("Revert caption", lambda: edits.revert(self.library.db, caption_id))

    def _many(self, label: str, operation: Callable[[], list[Change]]) -> int:
        if self.library is None:
            return 0
        try:
            changes = operation()
        except CaptionError as exc:
            self.error.emit(str(exc))
            return 0
        self._push(label, changes)
        return len(changes)

    def unverify(self, image_ids: Sequence[int], kind: str = CAPTION) -> int:
        """Take back the acceptance of *image_ids*' values of *kind* as one undo step (:func:`core.edits.unverify`)."""
        return self._many("Mark as not verified", lambda: edits.unverify(self.library.db, image_ids, kind))

    def replace(
        self,
        candidates: Sequence[tuple[int, int, str]],
        find: str,
        replacement: str,
        *,
        case_sensitive: bool,
        verified: bool = False,
        kind: str = CAPTION,
    ) -> int:
        """Find-and-replace over *candidates* as one undo step; returns captions changed.

        Model and imported captions stay unreviewed unless *verified* (see
        :func:`core.captions.replace_caption_text`).
        """
        if self.library is None:
            return 0
        try:
            changes = edits.replace_captions(
                self.library.db, candidates, find, replacement, case_sensitive=case_sensitive, verified=verified,
                kind=kind,
            )
        except CaptionError as exc:
            self.error.emit(str(exc))
            return 0
        self._push(f"Replace “{find}” with “{replacement}” in {len(changes)} captions", changes)
        return len(changes)

    # -- undo/redo ----------------------------------------------------------------------

    def _apply(self, command: ChangeCommand, *, undo: bool) -> None:
        if self.library is None:
            return
        try:
            edits.apply_changes(self.library.db, command.changes, undo=undo)
        except CaptionError as exc:
            # The caption moved on since (another edit, another window): this step
            # cannot be replayed; drop it from the stack rather than clobber newer words.
            command.setObsolete(True)
            self.error.emit(str(exc))
            return
        image_ids = sorted({c.image_id for c in command.changes})
        self.changed.emit(image_ids)
        self.stepped.emit(image_ids, f"{'Undone' if undo else 'Redone'}: {command.text()}")


class FindReplaceDialog(QDialog):
    """Find and replace in the captions in view: the count and a preview before anything changes.

    *preview* maps ``(find, replacement, case_sensitive)`` to ``(image_id, old, new)``
    rows (see :func:`core.edits.replacement_preview`).  "Replace all" names the count
    and is disabled while nothing matches; model captions stay unreviewed unless
    "Mark the changed captions as verified" is ticked.
    """

    #: How many example rows the preview lists.
    PREVIEW_ROWS = 50

    def __init__(
        self,
        view_count: int,
        preview: Callable[..., list[tuple[int, str, str]]],
        parent: QWidget | None = None,
        *,
        kind: str = CAPTION,
        selection_count: int = 0,
    ) -> None:
        super().__init__(parent)
        # Another kind (the filter bar's) is named; the caption's words stay as they were.
        self.setWindowTitle("Find and replace in captions" if kind == CAPTION else f"Find and replace in {_noun(kind)}")
        self._preview = preview
        self.matches: list[tuple[int, str, str]] = []
        self.find = QLineEdit()
        self.replacement = QLineEdit()
        self.case = QCheckBox("Match case")
        self.verify = QCheckBox("Mark the changed captions as verified (they become training data)")
        self.verify.setToolTip(
            "Off: a replaced model caption stays unreviewed — still in the review queue and "
            "not used for training. A person's caption stays verified either way."
        )
        form = QFormLayout()
        form.addRow("Find", self.find)
        form.addRow("Replace with", self.replacement)
        form.addRow("", self.case)
        form.addRow("", self.verify)
        #: Only in the selected photos (shown when more than one is selected); the preview is then
        #: asked with ``selected=True``.
        self.selected_only = QCheckBox(f"Only in the {selection_count} selected photos")
        self.selected_only.setObjectName("replaceSelectedOnly")
        self.selected_only.setChecked(selection_count > 1)
        self.selected_only.setVisible(selection_count > 1)
        if selection_count > 1:
            form.addRow("", self.selected_only)
        self.count_label = QLabel()
        self.count_label.setObjectName("replaceCount")
        self.count_label.setWordWrap(True)
        self.preview_list = QTreeWidget()
        self.preview_list.setObjectName("replacePreview")
        self.preview_list.setHeaderLabels(["Before", "After"])
        self.preview_list.setRootIsDecorated(False)
        self.preview_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        note = QLabel(
            f"Applies to the current {'captions' if kind == CAPTION else _noun(kind)} of the {view_count} images "
            "in the current view"
            + (", or only of the selected ones when ticked" if selection_count > 1 else "")
            + ". Undo (Ctrl+Z) reverts them all."
        )
        note.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.replace_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.count_label)
        layout.addWidget(self.preview_list, 1)
        layout.addWidget(note)
        layout.addWidget(self.buttons)
        self.resize(640, 420)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.update_preview)
        for field in (self.find, self.replacement):
            field.textChanged.connect(lambda _text: self._timer.start())
        self.case.toggled.connect(lambda _on: self.update_preview())
        self.selected_only.toggled.connect(lambda _on: self.update_preview())
        self.update_preview()

    def update_preview(self) -> None:
        """Count and list what "Replace all" would change, with the current fields."""
        self._timer.stop()
        find = self.find.text()
        args = (find, self.replacement.text(), self.case.isChecked())
        if not find:
            self.matches = []
        elif self.selected_only.isChecked():
            self.matches = self._preview(*args, selected=True)
        else:
            self.matches = self._preview(*args)
        count = len(self.matches)
        self.preview_list.clear()
        self.preview_list.addTopLevelItems(
            [QTreeWidgetItem([old, new]) for _image_id, old, new in self.matches[: self.PREVIEW_ROWS]]
        )
        if not find:
            self.count_label.setText("Type the words to find.")
        elif count == 0:
            self.count_label.setText("No caption in view contains these words.")
        else:
            more = f" (first {self.PREVIEW_ROWS} shown)" if count > self.PREVIEW_ROWS else ""
            self.count_label.setText(f"{count} caption{'s' if count != 1 else ''} will change{more}.")
        self.replace_button.setText(f"Replace all ({count})" if count else "Replace all")
        self.replace_button.setEnabled(count > 0)
