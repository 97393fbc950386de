"""The library sidebar: roots and sub-folders with counts, and add/remove/rescan buttons.

The counts come from :func:`core.view_rows.folder_tree`, computed on a pool thread
by the window; the sidebar only renders the tree it is given and keeps the selection
across refreshes (a refresh lands every couple of seconds during a job).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import (
    QHeaderView,
    QStyle,
    QToolBar,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.view_rows import Counts, FolderNode

#: The folder name and one compact count; the breakdown by state is each row's tooltip,
#: so names stay readable at the sidebar's default width.
COLUMNS = ["Folder", "Photos"]
_TOOLTIPS = [
    "Library folders and their sub-folders (hover a folder for its counts)",
    "Photos in the folder and its sub-folders",
]


def _breakdown(counts: Counts) -> str:
    parts = [f"{counts.images} photo{'s' if counts.images != 1 else ''}"]
    for number, words in (
        (counts.uncaptioned, "uncaptioned"),
        (counts.model, "model captions to review"),
        (counts.verified, "verified"),
        (counts.imported, "imported"),
        (counts.changed, "changed since captioned"),
        (counts.errors + counts.missing, "unreadable or missing"),
    ):
        if number:
            parts.append(f"{number} {words}")
    return parts[0] + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")


#: (root_id, folder prefix); (None, None) is "All photos".
Location = tuple[int | None, str | None]


def _numbers(counts: Counts) -> list[str]:
    return [str(counts.images)]


class LibrarySidebar(QWidget):
    location_changed = Signal(object)  # Location
    add_requested = Signal()
    remove_requested = Signal(int)
    rescan_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        style = self.style()
        self.toolbar = QToolBar()
        self.toolbar.setIconSize(self.toolbar.iconSize() * 0.75)
        self.add_action = QAction(style.standardIcon(QStyle.StandardPixmap.SP_FileDialogNewFolder), "Add folder…", self)
        self.add_action.triggered.connect(self.add_requested)
        self.remove_action = QAction(style.standardIcon(QStyle.StandardPixmap.SP_TrashIcon), "Remove folder", self)
        self.remove_action.triggered.connect(self._remove)
        self.rescan_action = QAction(style.standardIcon(QStyle.StandardPixmap.SP_BrowserReload), "Rescan", self)
        self.rescan_action.triggered.connect(self.rescan_requested)
        for action in (self.add_action, self.remove_action, self.rescan_action):
            self.toolbar.addAction(action)

        self.tree = QTreeWidget()
        self.tree.setObjectName("librarySidebar")
        self.tree.setHeaderLabels(COLUMNS)
        for column, tip in enumerate(_TOOLTIPS):
            self.tree.headerItem().setToolTip(column, tip)
            if column:
                self.tree.headerItem().setTextAlignment(column, Qt.AlignmentFlag.AlignRight)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setMinimumSectionSize(28)
        self.tree.setMinimumWidth(160)
        # Elide in the middle: "Alps 2019 – d…day 3" and "Alps 2019 – d…day 4" stay apart.
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.setIndentation(14)
        for column in range(1, len(COLUMNS)):
            self.tree.header().setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.currentItemChanged.connect(self._on_current)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.tree)
        self._roots: list[FolderNode] = []
        self._updating = False
        self.set_tree([])

    def location(self) -> Location:
        item = self.tree.currentItem()
        if item is None:
            return (None, None)
        return item.data(0, Qt.ItemDataRole.UserRole) or (None, None)

    def set_tree(self, roots: list[FolderNode]) -> None:
        """Show *roots*; keeps the selected location and which folders were expanded."""
        selected = self.location()
        expanded = set()
        iterator = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while iterator:
            item = iterator.pop()
            if item.isExpanded():
                expanded.add(item.data(0, Qt.ItemDataRole.UserRole))
            iterator.extend(item.child(i) for i in range(item.childCount()))
        self._roots = roots
        self._updating = True
        try:
            self.tree.clear()
            total = Counts()
            for root in roots:
                total.add(root.counts)
            everything = QTreeWidgetItem(["All photos", *_numbers(total)])
            everything.setData(0, Qt.ItemDataRole.UserRole, (None, None))
            everything.setIcon(0, self.style().standardIcon(QStyle.StandardPixmap.SP_DirHomeIcon))
            everything.setToolTip(0, "All photos — " + _breakdown(total))
            everything.setToolTip(1, _breakdown(total))
            self._align(everything)
            self.tree.addTopLevelItem(everything)
            folder_icon = self.style().standardIcon(QStyle.StandardPixmap.SP_DirIcon)
            current_item = everything
            for root in roots:
                item = self._make_item(root, Path(root.name).name or root.name, folder_icon, expanded)
                item.setToolTip(0, f"{root.name}\n{_breakdown(root.counts)}")
                self.tree.addTopLevelItem(item)
            for item in self._all_items():
                if item.data(0, Qt.ItemDataRole.UserRole) == selected:
                    current_item = item
            for item in self._all_items():
                if item.data(0, Qt.ItemDataRole.UserRole) in expanded:
                    item.setExpanded(True)
            self.tree.setCurrentItem(current_item)
        finally:
            self._updating = False
        self.remove_action.setEnabled(self.location()[0] is not None and self.location()[1] is None)
        if self.location() != selected:  # the selected folder went away (removed root)
            self.location_changed.emit(self.location())

    def _make_item(self, node: FolderNode, label: str, icon: QIcon, expanded: set) -> QTreeWidgetItem:
        item = QTreeWidgetItem([label, *_numbers(node.counts)])
        location = (node.root_id, node.prefix or None)
        item.setData(0, Qt.ItemDataRole.UserRole, location)
        item.setIcon(0, icon)
        item.setToolTip(0, f"{label}\n{_breakdown(node.counts)}")
        item.setToolTip(1, _breakdown(node.counts))
        self._align(item)
        for name in sorted(node.children):
            item.addChild(self._make_item(node.children[name], name, icon, expanded))
        return item

    @staticmethod
    def _align(item: QTreeWidgetItem) -> None:
        for column in range(1, len(COLUMNS)):
            item.setTextAlignment(column, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def _all_items(self) -> list[QTreeWidgetItem]:
        items: list[QTreeWidgetItem] = []
        stack = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while stack:
            item = stack.pop()
            items.append(item)
            stack.extend(item.child(i) for i in range(item.childCount()))
        return items

    def select(self, location: Location) -> bool:
        for item in self._all_items():
            if item.data(0, Qt.ItemDataRole.UserRole) == location:
                self.tree.setCurrentItem(item)
                return True
        return False

    def _on_current(self, current: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        root_id, prefix = self.location()
        self.remove_action.setEnabled(root_id is not None and prefix is None)
        if not self._updating:
            self.location_changed.emit(self.location())

    def _remove(self) -> None:
        root_id, prefix = self.location()
        if root_id is not None and prefix is None:
            self.remove_requested.emit(root_id)
