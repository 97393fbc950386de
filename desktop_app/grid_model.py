"""The thumbnail grid's model: a list of image ids with rows fetched lazily in chunks.

Filtering and sorting happen in SQL (:mod:`core.queries`); this model only holds
the resulting ordered ids (100 000 ints is under 1 MB) and fetches the few hundred rows
the view actually asks for, :data:`CHUNK` at a time, keeping :data:`MAX_CHUNKS` of them
in an LRU.  A chunk is one indexed ``IN (...)`` query — about a millisecond — so doing
it on the GUI thread at paint time is cheaper than any cross-thread round trip.

Updates never reset the view needlessly: :meth:`ImageGridModel.refresh_ids` re-reads
only the chunks holding the changed ids and emits ``dataChanged`` for those rows, and
:meth:`ImageGridModel.set_ids` appends rows when the new list extends the old one (a
scan finding files), resetting only when the order really changed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)

from core.captions import format_confidence
from core.kinds import CAPTION
from core.library import Library
from core.queries import ids_in_state
from core.view_rows import ImageRow, fetch_rows

CHUNK = 256
MAX_CHUNKS = 64

ID_ROLE = Qt.ItemDataRole.UserRole + 1
ROW_ROLE = Qt.ItemDataRole.UserRole + 2
STATE_ROLE = Qt.ItemDataRole.UserRole + 3
CAPTION_ROLE = Qt.ItemDataRole.UserRole + 4

ModelIndex = QModelIndex | QPersistentModelIndex


class ImageGridModel(QAbstractListModel):
    """Ordered image ids; rows (:class:`~core.view_rows.ImageRow`) loaded on demand."""

    #: Emitted after the id list was replaced wholesale (a new filter or sort).
    reset_done = Signal()

    def __init__(self, library: Library | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._library = library
        self._ids: list[int] = []
        self._row_of: dict[int, int] | None = None
        self._chunks: OrderedDict[int, dict[int, ImageRow]] = OrderedDict()
        #: Whose value the rows hold (``core.kinds``): the filter's kind.
        self.kind = CAPTION
        self.chunk_loads = 0  # for tests and the benchmark: how many chunk queries ran

    # -- content ----------------------------------------------------------------------

    def set_library(self, library: Library | None) -> None:
        self.beginResetModel()
        self._library = library
        self._ids = []
        self._row_of = None
        self._chunks.clear()
        self.endResetModel()
        self.reset_done.emit()

    def set_kind(self, kind: str) -> None:
        """Draw each photo's value (text, badge) of *kind*: the filter's kind."""
        if kind != self.kind:
            self.kind = kind
            self.refresh_all()

    def set_ids(self, ids: Sequence[int], row_of: dict[int, int] | None = None) -> None:
        """Show *ids* in this order; appends in place when the old list is a prefix.

        *row_of*, the inverse map if the caller built it (off the GUI thread), saves
        building it here on first use.
        """
        ids = list(ids)
        old = self._ids
        if len(ids) > len(old) and ids[: len(old)] == old:
            self.beginInsertRows(QModelIndex(), len(old), len(ids) - 1)
            self._ids = ids
            if row_of is not None:
                self._row_of = row_of
            elif self._row_of is not None:
                for row in range(len(old), len(ids)):
                    self._row_of[ids[row]] = row
            self.endInsertRows()
            return
        if ids == old:
            return
        self.beginResetModel()
        self._ids = ids
        self._row_of = row_of
        self._chunks.clear()
        self.endResetModel()
        self.reset_done.emit()

    def ids(self) -> list[int]:
        return list(self._ids)

    def image_id(self, row: int) -> int | None:
        return self._ids[row] if 0 <= row < len(self._ids) else None

    def row_of(self, image_id: int) -> int | None:
        """Row of *image_id*, or None when the current filter hides it."""
        if self._row_of is None:
            # Built on first use (cheap next to a query), once per filter.
            self._row_of = {image_id: row for row, image_id in enumerate(self._ids)}
        return self._row_of.get(image_id)

    def index_of(self, image_id: int) -> QModelIndex:
        row = self.row_of(image_id)
        return self.index(row, 0) if row is not None else QModelIndex()

    def row_data(self, row: int) -> ImageRow | None:
        """The row at *row*, fetching its chunk if needed (None past the end or deleted)."""
        if not 0 <= row < len(self._ids):
            return None
        chunk_no = row // CHUNK
        chunk = self._chunks.get(chunk_no)
        if chunk is None:
            chunk = self._load_chunk(chunk_no)
        else:
            self._chunks.move_to_end(chunk_no)
        return chunk.get(self._ids[row])

    def _load_chunk(self, chunk_no: int) -> dict[int, ImageRow]:
        ids = self._ids[chunk_no * CHUNK : (chunk_no + 1) * CHUNK]
        if self._library is None:
            chunk: dict[int, ImageRow] = {}
        else:
            with self._library.db.read() as session:
                chunk = fetch_rows(session, ids, self.kind)
        self.chunk_loads += 1
        self._chunks[chunk_no] = chunk
        while len(self._chunks) > MAX_CHUNKS:
            self._chunks.popitem(last=False)
        return chunk

    def refresh_ids(self, image_ids: Iterable[int]) -> None:
        """Re-read the rows of *image_ids* (captions landed, an edit) and repaint them."""
        rows = sorted({r for i in image_ids if (r := self.row_of(i)) is not None})
        if not rows:
            return
        for chunk_no in {r // CHUNK for r in rows}:
            self._chunks.pop(chunk_no, None)
        # One dataChanged per contiguous run keeps a 500-image batch to a few signals.
        start = prev = rows[0]
        for row in rows[1:] + [None]:  # type: ignore[list-item]
            if row is not None and row == prev + 1:
                prev = row
                continue
            self.dataChanged.emit(self.index(start, 0), self.index(prev, 0))
            if row is not None:
                start = prev = row

    def review_progress(self) -> tuple[int, int]:
        """``(reviewed, total)`` over the rows shown: rows no longer holding a model caption
        (or, for a picture changed since captioned, holding a caption again).

        In the review queue every row held an unreviewed model caption when the list was
        loaded; accepted and edited rows stay in place (rows are refreshed, not
        removed), so this is "n of N reviewed".
        """
        total = len(self._ids)
        if self._library is None or not total:
            return 0, total
        with self._library.db.read() as session:
            unreviewed = sum(len(ids_in_state(session, self._ids, s, self.kind)) for s in ("model", "changed"))
        return total - unreviewed, total

    def refresh_all(self) -> None:
        """Forget every cached row and repaint (e.g. after a find-and-replace)."""
        self._chunks.clear()
        if self._ids:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._ids) - 1, 0))

    # -- QAbstractItemModel ---------------------------------------------------------

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's API
        return 0 if parent.isValid() else len(self._ids)

    def flags(self, index: ModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.parent().isValid() or not 0 <= index.row() < len(self._ids):
            return None
        if role == ID_ROLE:
            return self._ids[index.row()]
        if role not in (
            Qt.ItemDataRole.DisplayRole,
            Qt.ItemDataRole.ToolTipRole,
            ROW_ROLE,
            STATE_ROLE,
            CAPTION_ROLE,
        ):
            return None
        row = self.row_data(index.row())
        if row is None:
            return None
        if role == ROW_ROLE:
            return row
        if role == STATE_ROLE:
            return row.state
        if role == CAPTION_ROLE:
            return row.caption
        if role == Qt.ItemDataRole.DisplayRole:
            return row.name
        # Tooltip: where the file is, what the caption says, and why it failed if it did.
        lines = [row.path]
        if row.caption:
            lines.append(row.caption)
        if row.state == "model" and row.score is not None:
            lines.append(
                f"Model caption, confidence {format_confidence(row.score)}"
                f" (mean token log-prob {row.score:.3f})"
            )
        if row.error:
            lines.append(f"Error: {row.error}")
        return "\n".join(lines)
