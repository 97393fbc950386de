"""File → Duplicates…: groups of exact and near-duplicate photos, and "Keep this one".

The same core functions as ``captiondesk duplicates`` (:mod:`core.duplicates`): "Find
duplicates" runs :func:`~core.duplicates.find_duplicates` as a write op with progress,
the groups and their thumbnails load as read ops, and "Keep this one" / "Count all
again" are write ops.  Each write announces ``LibraryChanges(duplicates=True)`` through
the window's one notice, and the dialog refreshes itself from that notice (also when the
library's images change under it).  Nothing here deletes or changes a file: keeping one
photo marks the others excluded from training and export.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.jobs import count_phrase
from desktop_app.dialog_kit import wrapped
from desktop_app.operations import LibraryChanges, LibraryNotifier, ReadOp, WriteOp

THUMB = 112
EXPLAIN = (
    "Resized, re-saved, lightly cropped or rotated copies of one photo. Every photo of a group falls in the "
    "same split, so a copy never flatters the held-out numbers. \"Keep this one\" leaves the group's other "
    "photos out of training and export; no file is deleted."
)


def _group_label(group: Any) -> str:
    kind = "exact copies" if group.exact else "near-duplicates"
    kept = group.kept
    state = f" — keeping {kept.path.name}" if kept is not None else ""
    return f"{len(group.members)} {kind}: {group.members[0].path.name}{state}"


def _member_label(member: Any) -> str:
    size = f"{member.width}×{member.height}" if member.width and member.height else "?"
    mark = {"kept": "\nKEPT", "excluded": "\nexcluded"}.get(member.mark or "", "")
    return f"{member.path.name}\n{size}{mark}"


class DuplicatesDialog(QDialog):
    def __init__(self, library: Any, pool: Any, notifier: LibraryNotifier, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Duplicates")
        self.library = library
        self.pool = pool
        self.notifier = notifier
        self.groups: list[Any] = []
        self.busy = False
        self.error: str | None = None
        #: Candidate pairs the image index rejected in this dialog's last search (None: not asked).
        self.rejected: int | None = None
        #: image id -> thumbnail, kept while the dialog lives.
        self.thumbnails: dict[int, QPixmap] = {}

        self.summary = QLabel("")
        self.find_button = QPushButton("Find duplicates")
        self.find_button.clicked.connect(self.find)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.progress)
        top.addWidget(self.find_button)

        self.group_list = QListWidget()
        self.group_list.setMinimumWidth(260)
        self.group_list.currentRowChanged.connect(self._show_group)
        self.member_list = QListWidget()
        self.member_list.setViewMode(QListView.ViewMode.IconMode)
        self.member_list.setIconSize(QSize(THUMB, THUMB))
        self.member_list.setGridSize(QSize(THUMB + 40, THUMB + 64))
        self.member_list.setResizeMode(QListView.ResizeMode.Adjust)
        self.member_list.setMovement(QListView.Movement.Static)
        self.member_list.setWordWrap(True)
        self.member_list.currentRowChanged.connect(lambda _row: self._update_buttons())
        self.member_list.itemDoubleClicked.connect(lambda _item: self.keep_selected())
        self.keep_button = QPushButton("Keep this one")
        self.keep_button.setToolTip("Keep the selected photo; leave the group's others out of training and export")
        self.keep_button.clicked.connect(self.keep_selected)
        self.clear_button = QPushButton("Count all again")
        self.clear_button.setToolTip("Undo \"Keep this one\" for this group: every photo counts again")
        self.clear_button.clicked.connect(self.clear_selected)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.clear_button)
        buttons.addWidget(self.keep_button)
        right = QVBoxLayout()
        right.addWidget(self.member_list, 1)
        right.addLayout(buttons)
        body = QHBoxLayout()
        body.addWidget(self.group_list)
        body.addLayout(right, 1)

        layout = QVBoxLayout(self)
        layout.addWidget(wrapped(EXPLAIN))
        layout.addLayout(top)
        layout.addLayout(body, 1)
        self.resize(900, 560)
        notifier.library_changed.connect(self._on_library_changed)
        self._update_buttons()
        self.refresh()

    # -- reading ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Load the groups the last search found (a read op)."""
        from core.duplicates import duplicate_groups, searched

        library = self.library
        ReadOp(lambda: (duplicate_groups(library), searched(library)), success=self._show_groups,
               failure=self._failed).run(self.pool)

    def _on_library_changed(self, changes: LibraryChanges) -> None:
        if changes.library:
            self.close()  # another library is shown: these groups are not its
        elif changes.duplicates or changes.images:
            self.refresh()

    def _show_groups(self, result: tuple[list[Any], bool]) -> None:
        groups, searched = result
        current = self._current_group()
        self.groups = groups
        decided = sum(g.decided for g in groups)
        if not searched:
            self.summary.setText("Not searched yet: \"Find duplicates\" hashes every photo once.")
        else:
            rejected = "" if self.rejected is None else (
                f"; the image index rejected {count_phrase(self.rejected, 'pair', 'pairs')}")
            self.summary.setText(f"{len(groups)} groups ({sum(len(g.members) for g in groups)} photos), "
                                 f"{decided} decided{rejected}")
        self.group_list.blockSignals(True)
        self.group_list.clear()
        for group in groups:
            item = QListWidgetItem(_group_label(group))
            item.setToolTip(item.text())
            self.group_list.addItem(item)
        self.group_list.blockSignals(False)
        ids = [g.group_id for g in groups]
        row = ids.index(current.group_id) if current is not None and current.group_id in ids else (0 if ids else -1)
        self.group_list.setCurrentRow(row)
        self._show_group(row)

    def _current_group(self) -> Any | None:
        row = self.group_list.currentRow()
        return self.groups[row] if 0 <= row < len(self.groups) else None

    def _show_group(self, row: int) -> None:
        selected = self._current_member()
        self.member_list.clear()
        group = self.groups[row] if 0 <= row < len(self.groups) else None
        if group is None:
            self._update_buttons()
            return
        for member in group.members:
            item = QListWidgetItem(_member_label(member))
            item.setToolTip(str(member.path))
            item.setData(Qt.ItemDataRole.UserRole, member.image_id)
            if member.image_id in self.thumbnails:
                item.setIcon(QIcon(self.thumbnails[member.image_id]))
            self.member_list.addItem(item)
        ids = [m.image_id for m in group.members]
        self.member_list.setCurrentRow(ids.index(selected) if selected in ids else 0)
        self._load_thumbnails(group)
        self._update_buttons()

    def _load_thumbnails(self, group: Any) -> None:
        wanted = [(m.image_id, m.path) for m in group.members if m.image_id not in self.thumbnails]
        if not wanted:
            return

        def work() -> list[tuple[int, Any]]:
            from core.imaging import ImageDecodeError, load_rgb
            from desktop_app.thumbnails import pil_to_qimage

            images = []
            for image_id, path in wanted:
                try:
                    images.append((image_id, pil_to_qimage(load_rgb(path, max_size=THUMB))))
                except (ImageDecodeError, OSError):
                    images.append((image_id, None))
            return images

        ReadOp(work, success=self._thumbnails_loaded, failure=self._failed).run(self.pool)

    def _thumbnails_loaded(self, images: list[tuple[int, Any]]) -> None:
        for image_id, qimage in images:
            self.thumbnails[image_id] = QPixmap.fromImage(qimage) if qimage is not None else QPixmap()
        for row in range(self.member_list.count()):
            item = self.member_list.item(row)
            pixmap = self.thumbnails.get(item.data(Qt.ItemDataRole.UserRole))
            if pixmap is not None and not pixmap.isNull():
                item.setIcon(QIcon(pixmap))

    def _current_member(self) -> int | None:
        item = self.member_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _update_buttons(self) -> None:
        group = self._current_group()
        self.find_button.setEnabled(not self.busy)
        self.keep_button.setEnabled(not self.busy and group is not None and self._current_member() is not None)
        self.clear_button.setEnabled(not self.busy and group is not None and group.decided)

    # -- writing ------------------------------------------------------------------------

    def _write(self, work: Any, **kw: Any) -> None:
        self.busy = True
        self.error = None
        self._update_buttons()
        WriteOp(work, LibraryChanges(duplicates=True), self.notifier, success=self._written, failure=self._failed,
                **kw).run(self.pool)

    def _written(self, result: Any) -> None:
        self.busy = False
        self.progress.setVisible(False)
        summary = getattr(result, "summary", None)
        if callable(summary):
            self.setToolTip(summary())
        if hasattr(result, "confirmed"):  # a search's stats: the next status line says what the index did
            self.rejected = result.rejected if result.confirmed else None
        self._update_buttons()

    def _failed(self, exc: BaseException) -> None:
        self.busy = False
        self.progress.setVisible(False)
        self.error = str(exc)
        self.summary.setText(f"Could not finish: {exc}")
        self._update_buttons()

    def find(self) -> None:
        """Hash what needs it and regroup the library (``captiondesk duplicates``)."""
        from core.duplicates import find_duplicates

        library = self.library
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self._write(lambda progress: find_duplicates(library, progress=progress), progress=self._on_progress)

    def _on_progress(self, progress: Any) -> None:
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.done)

    def keep_selected(self) -> None:
        from core.duplicates import keep_one

        group, image_id = self._current_group(), self._current_member()
        if group is None or image_id is None or self.busy:
            return
        library = self.library
        self._write(lambda: keep_one(library, group.group_id, image_id))

    def clear_selected(self) -> None:
        from core.duplicates import clear_marks

        group = self._current_group()
        if group is None or self.busy:
            return
        library = self.library
        self._write(lambda: clear_marks(library, group.group_id))
