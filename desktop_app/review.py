"""Caption edits as undoable commands: edit, accept, revert, find-and-replace.

:class:`CaptionEditor` performs each operation at once — one short write transaction
through :mod:`core.edits` (which uses :mod:`core.captions`) — and then pushes a
:class:`ChangeCommand` on its ``QUndoStack``.  Undo and redo re-point which caption is
current (see :mod:`core.edits` for why), so stepping back and forth writes no new
rows and never loses one.  The editor reports the images it touched through
:attr:`CaptionEditor.changed`; the window refreshes the grid and the panel from that.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from core import edits
from core.captions import CaptionError
from core.edits import Change
from core.library import Library


class ChangeCommand(QUndoCommand):
    """Changes that were already applied when the command was made; redo re-applies."""

    def __init__(self, editor: CaptionEditor, label: str, changes: Sequence[Change]) -> None:
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


class CaptionEditor(QObject):
    """Owns the undo stack; every method writes to the library immediately."""

    #: Image ids whose current caption changed (edit, undo, redo, replace...).
    changed = Signal(list)
    #: A user-facing message when an operation could not be done.
    error = Signal(str)

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

    def save_edit(self, image_id: int, text: str) -> bool:
        """Save a person's text; False when it changed nothing or was refused."""
        return self._run("Edit caption", lambda: edits.save_edit(self.library.db, image_id, text))

    def accept(self, image_id: int) -> bool:
        return self._run("Accept caption", lambda: edits.accept(self.library.db, image_id))

    def revert(self, caption_id: int) -> bool:
        return self._run("Revert caption", lambda: edits.revert(self.library.db, caption_id))

    def replace(
        self, candidates: Sequence[tuple[int, int, str]], find: str, replacement: str, *, case_sensitive: bool
    ) -> int:
        """Find-and-replace over *candidates* as one undo step; returns captions changed."""
        if self.library is None:
            return 0
        try:
            changes = edits.replace_captions(
                self.library.db, candidates, find, replacement, case_sensitive=case_sensitive
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
        self.changed.emit(sorted({c.image_id for c in command.changes}))
