"""The photos as a list with columns (name, state, confidence, size, caption).

The same view, model and selection as the thumbnail grid — only the layout and the
painter change — so every verb, the loupe and the review keys work alike in both.  A
header above the list names the columns, resizes them and sorts by the ones the
library can sort on (name, confidence) through the filter bar's sort.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QStandardItemModel
from PySide6.QtWidgets import (
    QHeaderView,
    QListView,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from core.captions import format_confidence
from desktop_app.delegate import BADGES
from desktop_app.filter_bar import FilterBar
from desktop_app.grid_model import ROW_ROLE
from desktop_app.thumbnail_grid import ThumbnailGrid
from desktop_app.thumbnails import ThumbnailCache

#: (key, label, initial width; the last column stretches).
COLUMNS = (("name", "Name", 150), ("state", "State", 75), ("confidence", "Conf.", 50),
           ("size", "Size", 80), ("caption", "Caption", 300))
#: Header columns that sort the list (the filter bar's sort keys).
SORTABLE = {"name": "name", "confidence": "confidence"}
THUMB = 28
ROW_HEIGHT = THUMB + 6


class ListHeader(QHeaderView):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.setObjectName("photoListHeader")
        model = QStandardItemModel(0, len(COLUMNS), self)
        model.setHorizontalHeaderLabels([label for _key, label, _w in COLUMNS])
        self.setModel(model)
        self.setStretchLastSection(True)
        self.setSectionsClickable(True)
        for n, (_key, _label, width) in enumerate(COLUMNS):
            self.resizeSection(n, width)
        self.setMinimumSectionSize(40)
        # One line tall: in the window's column layout it would otherwise take a share of the height.
        self.setSizePolicy(self.sizePolicy().horizontalPolicy(), QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self.fontMetrics().height() + 10)

    def column_rect(self, key: str, row_rect: QRect) -> QRect:
        n = next(i for i, c in enumerate(COLUMNS) if c[0] == key)
        return QRect(row_rect.x() + self.sectionViewportPosition(n) + 4, row_rect.y(),
                     max(0, self.sectionSize(n) - 8), row_rect.height())


class ListRowDelegate(QStyledItemDelegate):
    """Paints one photo as a row whose cells line up with :class:`ListHeader`'s sections."""

    def __init__(self, header: ListHeader, thumbnails: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = header
        self.thumbnails = thumbnails

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:  # noqa: N802
        return QSize(max(100, self.header.length()), ROW_HEIGHT)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        rect = option.rect
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(rect, option.palette.color(QPalette.ColorRole.Highlight).lighter(160))
        row = index.data(ROW_ROLE)
        if row is None:
            return
        painter.save()
        metrics = option.fontMetrics
        name = self.header.column_rect("name", rect)
        thumb = self.thumbnails.pixmap(row.fingerprint, row.path)
        box = QRect(name.x(), rect.y() + 3, THUMB, THUMB)
        if thumb is not None:
            scaled = thumb.scaled(box.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)
            painter.drawPixmap(box.x() + (THUMB - scaled.width()) // 2, box.y() + (THUMB - scaled.height()) // 2, scaled)
        else:
            painter.fillRect(box, QColor("#e6e6e6"))
        text_flags = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        painter.setPen(option.palette.color(QPalette.ColorRole.Text))
        name_text = name.adjusted(THUMB + 6, 0, 0, 0)
        painter.drawText(name_text, text_flags, metrics.elidedText(row.name, Qt.TextElideMode.ElideMiddle, name_text.width()))
        label, color = BADGES.get(row.state, (row.state, "#555"))
        painter.setPen(QColor(color))
        painter.drawText(self.header.column_rect("state", rect), text_flags, label)
        painter.setPen(option.palette.color(QPalette.ColorRole.Text))
        score = format_confidence(row.score) if row.state == "model" and row.score is not None else ""
        painter.drawText(self.header.column_rect("confidence", rect), text_flags, score)
        size = f"{row.width}×{row.height}" if row.width and row.height else ""
        painter.drawText(self.header.column_rect("size", rect), text_flags, size)
        caption = self.header.column_rect("caption", rect)
        role = QPalette.ColorRole.Text if row.caption else QPalette.ColorRole.PlaceholderText
        painter.setPen(option.palette.color(role))
        painter.drawText(caption, text_flags, metrics.elidedText(row.caption or "no caption", Qt.TextElideMode.ElideRight,
                                                                 caption.width()))
        painter.restore()


class ListMode:
    """Switches the grid between thumbnails and the list with columns."""

    def __init__(self, grid: ThumbnailGrid, grid_delegate: QStyledItemDelegate, thumbnails: ThumbnailCache,
                 filter_bar: FilterBar, apply_grid_size) -> None:
        self.grid = grid
        self.grid_delegate = grid_delegate
        self.filter_bar = filter_bar
        self.apply_grid_size = apply_grid_size
        self.header = ListHeader()
        self.header.hide()
        self.delegate = ListRowDelegate(self.header, thumbnails, grid)
        self.header.sectionResized.connect(lambda *_: grid.viewport().update())
        self.header.sectionClicked.connect(self._sort_by)
        grid.horizontalScrollBar().valueChanged.connect(lambda value: self.header.setOffset(value))
        self.on = False

    def set(self, on: bool) -> None:
        self.on = on
        grid = self.grid
        self.header.setVisible(on)
        if on:
            grid.set_list_rows(ROW_HEIGHT)
            grid.setViewMode(QListView.ViewMode.ListMode)
            grid.setFlow(QListView.Flow.TopToBottom)
            grid.setWrapping(False)
            grid.setItemDelegate(self.delegate)
        else:
            grid.set_list_rows(0)
            grid.setViewMode(QListView.ViewMode.IconMode)
            grid.setMovement(QListView.Movement.Static)
            grid.setWrapping(True)
            grid.setItemDelegate(self.grid_delegate)
            self.apply_grid_size()
        grid.doItemsLayout()
        grid.viewport().update()
        current = grid.currentIndex()
        if current.isValid():
            grid.scrollTo(current)

    def _sort_by(self, section: int) -> None:
        key = SORTABLE.get(COLUMNS[section][0])
        if key is None:
            return
        bar = self.filter_bar
        if bar.sort.currentData() == key:
            bar.descending.setChecked(not bar.descending.isChecked())
        else:
            bar.sort.setCurrentIndex(bar.sort.findData(key))
        self.header.setSortIndicatorShown(True)
        self.header.setSortIndicator(section, Qt.SortOrder.DescendingOrder if bar.descending.isChecked()
                                     else Qt.SortOrder.AscendingOrder)
