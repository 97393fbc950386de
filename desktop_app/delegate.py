"""Paints one grid cell: thumbnail, a state badge and a two-line caption snippet.

Painting never touches the disk or the database beyond the model's chunk cache: a
missing thumbnail is requested from :class:`~desktop_app.thumbnails.ThumbnailCache` and
a placeholder drawn until it arrives.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from core.captions import format_confidence
from core.view_rows import ImageRow
from desktop_app.grid_model import ROW_ROLE
from desktop_app.thumbnails import ThumbnailCache

#: Badge text and colour for each display state.
BADGES: dict[str, tuple[str, str]] = {
    "uncaptioned": ("uncaptioned", "#7a7a7a"),
    "model": ("model", "#2f6fd6"),
    "verified": ("verified", "#2e9d4a"),
    "imported": ("imported", "#8a5cc2"),
    "changed": ("changed", "#c2185b"),
    "error": ("error", "#d33c2f"),
    "missing": ("missing", "#d98a1c"),
}

PADDING = 6
TEXT_LINES = 2
#: Rendered cells kept (a screenful is ~50; a cell is ~150 KB at 160 px).
CELL_CACHE = 400


class ThumbnailDelegate(QStyledItemDelegate):
    def __init__(self, thumbnails: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbnails = thumbnails
        self._badge_font: QFont | None = None
        #: image id -> (content key, rendered cell); insertion-ordered, oldest dropped.
        self._cells: dict[int, tuple[tuple, QPixmap]] = {}

    def cell_size(self, font_metrics: QFontMetrics) -> QSize:
        size = self.thumbnails.display_size
        return QSize(size + 2 * PADDING, size + 2 * PADDING + TEXT_LINES * font_metrics.lineSpacing() + 2)

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return self.cell_size(option.fontMetrics)

    def clear_cache(self) -> None:
        """Forget rendered cells (thumbnail size, font or palette changed)."""
        self._cells.clear()

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        # Each cell is rendered once into a pixmap and reused until its content changes:
        # a repaint then costs a handful of calls per cell.  That matters because every
        # Python->Qt call may wait for the GIL while a scan or a job runs on other threads.
        rect = option.rect
        if option.state & QStyle.StateFlag.State_Selected:
            highlight = option.palette.color(QPalette.ColorRole.Highlight)
            painter.fillRect(rect, highlight.lighter(160))
            painter.setPen(QPen(highlight, 2))
            painter.drawRect(rect.adjusted(1, 1, -1, -1))
        row: ImageRow | None = index.data(ROW_ROLE)
        if row is None:
            return
        thumb = self.thumbnails.pixmap(row.fingerprint, row.path)
        thumb_state = 1 if thumb is not None else (2 if self.thumbnails.failure(row.fingerprint) else 0)
        key = (row.id, row.caption_id, row.image_state, thumb_state)
        cell = self._cells.get(row.id)
        if cell is None or cell[0] != key:
            cell = (key, self._render(option, row, thumb, thumb_state))
            self._cells[row.id] = cell
            if len(self._cells) > CELL_CACHE:
                self._cells.pop(next(iter(self._cells)))
        painter.drawPixmap(rect.topLeft(), cell[1])

    def _render(
        self, option: QStyleOptionViewItem, row: ImageRow, thumb: QPixmap | None, thumb_state: int
    ) -> QPixmap:
        size = self.thumbnails.display_size
        metrics = option.fontMetrics
        cell_size = self.cell_size(metrics)
        ratio = option.widget.devicePixelRatioF() if option.widget is not None else 1.0
        pixmap = QPixmap(cell_size * ratio)
        pixmap.setDevicePixelRatio(ratio)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        try:
            box = QRect(PADDING, PADDING, size, size)
            if thumb is not None:
                painter.drawPixmap(box.x() + (size - thumb.width()) // 2, box.y() + (size - thumb.height()) // 2, thumb)
            else:
                painter.fillRect(box, QColor("#e6e6e6"))
                if thumb_state == 2:
                    painter.setPen(QColor("#a33"))
                    painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "no preview")
            self._paint_badge(painter, box, row)
            text_rect = QRect(PADDING, box.bottom() + 3, size, TEXT_LINES * metrics.lineSpacing())
            role = QPalette.ColorRole.Text if row.caption else QPalette.ColorRole.PlaceholderText
            painter.setPen(option.palette.color(role))
            painter.setFont(option.font)
            # Keywords are stored one a line: a snippet reads them as a list.
            self._draw_wrapped(painter, text_rect, (row.caption or row.name).replace("\n", ", "), metrics)
        finally:
            painter.end()
        return pixmap

    def _paint_badge(self, painter: QPainter, box: QRect, row: ImageRow) -> None:
        label, color = BADGES.get(row.state, (row.state, "#555"))
        if row.state == "model" and row.score is not None:
            label = f"model {format_confidence(row.score)}"
        if self._badge_font is None:
            self._badge_font = QFont(painter.font())
            self._badge_font.setPointSizeF(max(6.5, self._badge_font.pointSizeF() * 0.8))
            self._badge_font.setBold(True)
        painter.setFont(self._badge_font)
        metrics = QFontMetrics(self._badge_font)
        width = metrics.horizontalAdvance(label) + 10
        badge = QRect(box.x() + 3, box.y() + 3, width, metrics.height() + 4)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(color))
        painter.drawRoundedRect(badge, 4, 4)
        painter.setPen(QColor("white"))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, label)

    @staticmethod
    def _draw_wrapped(painter: QPainter, rect: QRect, text: str, metrics: QFontMetrics) -> None:
        """Up to TEXT_LINES lines, the last one elided with "…" (never clipped mid-letter)."""
        lines = wrap_lines(text, metrics, rect.width(), TEXT_LINES)
        height = metrics.lineSpacing()
        for n, line in enumerate(lines):
            painter.drawText(
                QRect(rect.x(), rect.y() + n * height, rect.width(), height),
                int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                line,
            )


def wrap_lines(text: str, metrics: QFontMetrics, width: int, max_lines: int) -> list[str]:
    """*text* wrapped into at most *max_lines* lines of *width* px; the last one elided.

    Breaks at a space where one fits, else anywhere (a long file name has no spaces);
    each line is found by bisection, so a cell costs a few dozen measurements, once
    (cells are rendered once and cached).
    """
    lines: list[str] = []
    rest = " ".join(text.split())
    while rest and len(lines) < max_lines - 1:
        if metrics.horizontalAdvance(rest) <= width:
            break
        lo, hi = 1, len(rest)  # the longest prefix that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if metrics.horizontalAdvance(rest[:mid]) <= width:
                lo = mid
            else:
                hi = mid - 1
        cut = rest.rfind(" ", 0, lo + 1)
        if cut <= 0:
            cut = lo
        lines.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        lines.append(metrics.elidedText(rest, Qt.TextElideMode.ElideRight, width))
    return lines
