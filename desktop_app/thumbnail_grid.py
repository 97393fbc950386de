"""The thumbnail grid view: whole columns that fill the width, and a column count that holds still.

A plain ``QListView`` in icon mode lays out cells of a fixed grid size, so the spare width
(up to one cell less a pixel) gathers on the right as an empty band, and the column count
jumps whenever the vertical scroll bar comes or goes.  :class:`ThumbnailGrid` instead
divides the viewport's width evenly between as many whole cells as fit, and keeps the
scroll bar's room reserved, so the count changes only when the window or a splitter is
resized (never while navigating).  Qt centres each cell in its wider slot.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QListView, QWidget

__all__ = ["ThumbnailGrid", "columns_for"]

#: Room around each cell (pixels) so that neighbouring selection frames never touch.
CELL_MARGIN = 4


def columns_for(viewport_width: int, cell_width: int) -> int:
    """How many whole cells of ``cell_width`` (plus margin) fit in ``viewport_width``; at least one."""
    return max(1, viewport_width // (cell_width + CELL_MARGIN))


class ThumbnailGrid(QListView):
    """Icon-mode list whose grid slots share the viewport width between whole columns."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._cell = QSize(0, 0)
        #: Row height while the view is the list with columns (0: the thumbnail grid).
        self._list_row = 0
        # Reserved scroll bar: its appearing after a filter change would otherwise change
        # the viewport width and with it the column count.
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)

    def set_cell_size(self, cell: QSize) -> None:
        """The size one thumbnail cell needs (from the delegate); re-fits the columns."""
        self._cell = QSize(cell)
        self._fit_columns()

    def set_list_rows(self, height: int) -> None:
        """One photo a row of *height* pixels (the list with columns); 0 returns to the grid."""
        self._list_row = height
        self._fit_columns()

    def column_count(self) -> int:
        return columns_for(self.viewport().width(), self._cell.width())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt override)
        self._fit_columns()
        super().resizeEvent(event)

    def _fit_columns(self) -> None:
        if self._list_row:
            slot = QSize(self.viewport().width(), self._list_row)
            if slot != self.gridSize():
                self.setGridSize(slot)
            return
        if self._cell.isEmpty():
            return
        width = self.viewport().width()
        # One pixel short of the width: slots filling it exactly make Qt wrap the last column.
        slot_width = max(self._cell.width() + CELL_MARGIN, (width - 1) // columns_for(width, self._cell.width()))
        slot = QSize(slot_width, self._cell.height() + CELL_MARGIN)
        if slot != self.gridSize():
            self.setGridSize(slot)
