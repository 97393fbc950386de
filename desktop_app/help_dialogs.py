"""Help menu: the keyboard shortcut sheet, the self-check report, where the library lives.

* :class:`ShortcutsDialog` is built from the window's real ``QAction`` objects, so it
  lists exactly the shortcuts that work (no second list to keep in step).
* :class:`SelfCheckDialog` runs :func:`core.selfcheck.run_checks` (what
  ``captiondesk self-check`` prints) on a worker thread; the torch import it does never
  blocks the window.
* :class:`LibraryLocationDialog` shows the library file, its models folder and sizes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtGui import QAction, QColor, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_app.dialog_kit import DIALOG_WIDTH, ElidedLabel, JobFooter, JobRunner, compact_table, show_folder


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    compact_table(table)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.setWordWrap(False)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def shortcut_rows(actions: list[QAction]) -> list[tuple[str, str]]:
    """(what it does, keys) for every action that has a shortcut, in the order given."""
    rows: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for action in actions:
        keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        text = action.text().replace("&", "").rstrip("…").strip()
        if keys and text and (text, keys) not in seen:
            seen.add((text, keys))
            rows.append((text, keys))
    return rows


class ShortcutsDialog(QDialog):
    def __init__(self, actions: list[QAction], *, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.setFixedSize(DIALOG_WIDTH, 560)
        self.rows = shortcut_rows(actions)
        self.table = _table(["Action", "Keys"])
        self.table.horizontalHeader().setStretchLastSection(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)
        self.table.setColumnWidth(1, 170)
        self.table.setRowCount(len(self.rows))
        for row, (text, keys) in enumerate(self.rows):
            self.table.setItem(row, 0, QTableWidgetItem(text))
            self.table.setItem(row, 1, QTableWidgetItem(keys))
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(buttons)


class SelfCheckDialog(QDialog):
    """Run the self-check in the background and show each check's result."""

    def __init__(self, *, run_checks: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Self-check")
        self.setFixedSize(720, 460)
        self.checks: list[Any] = []
        self._run_checks = run_checks
        self.runner = JobRunner(self)
        self.table = _table(["Check", "Result", "Details"])
        self.table.setColumnWidth(0, 150)
        self.table.setColumnWidth(1, 60)
        self.footer = JobFooter("Run again")
        copy = QPushButton("Copy report")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.report()))
        self.footer.buttons.insertWidget(1, copy)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.footer)
        self.footer.start_button.clicked.connect(self.start)
        self.footer.cancel_button.hide()  # a dozen quick checks: nothing worth cancelling
        self.footer.close_button.clicked.connect(self.close)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(lambda message, _detail: self.footer.finish(message))
        self.start()

    def start(self) -> bool:
        run = self._run_checks

        def work(_progress: Any, _cancel: Any) -> list[Any]:
            if run is not None:
                return run()
            from core.selfcheck import run_checks

            return run_checks()

        self.footer.set_running(True, "Checking the installation…")
        return self.runner.start(work)

    def _on_finished(self, checks: list[Any]) -> None:
        self.checks = list(checks)
        self.table.setRowCount(len(self.checks))
        for row, check in enumerate(self.checks):
            for column, text in enumerate((check.name, check.status, check.detail)):
                item = QTableWidgetItem(str(text))
                item.setToolTip(str(text))
                if not check.ok:
                    # Red for what breaks the app, amber for a note (e.g. model not downloaded yet).
                    item.setForeground(QColor("#b00020" if check.essential else "#8a5a00"))
                self.table.setItem(row, column, item)
        broken = [c.name for c in self.checks if not c.ok and c.essential]
        notes = [c.name for c in self.checks if not c.ok and not c.essential]
        parts = [f"{len(broken)} of {len(self.checks)} checks failed: {', '.join(broken)}" if broken
                 else f"All {len(self.checks) - len(notes)} essential checks passed."]
        if notes:
            parts.append(f"Notes: {', '.join(notes)}.")
        self.footer.finish(" ".join(parts))
        first = next((i for i, c in enumerate(self.checks) if not c.ok), None)
        if first is not None:
            self.table.scrollToItem(self.table.item(first, 0), QAbstractItemView.ScrollHint.PositionAtCenter)

    def report(self) -> str:
        return "\n".join(f"{c.status:5} {c.name}: {c.detail}" for c in self.checks)

    def closeEvent(self, event: Any) -> None:
        self.runner.shutdown()
        super().closeEvent(event)


def _folder_size(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


class LibraryLocationDialog(QDialog):
    """The library file and its models folder, with sizes and Show folder."""

    def __init__(self, library: Any, *, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from core.training.versions import models_dir

        self.setWindowTitle("Library location")
        self.setFixedWidth(DIALOG_WIDTH)
        path = Path(library.path)
        models = models_dir(library)
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
        self.path_label = ElidedLabel(str(path))
        self.models_label = ElidedLabel(str(models) + ("" if models.exists() else " (not created yet)"))
        form = QFormLayout()
        form.addRow("Library file", self.path_label)
        form.addRow("Size", ElidedLabel(_megabytes(size) + " (database, write-ahead log)"))
        form.addRow("Model versions", self.models_label)
        if models.exists():
            form.addRow("Models size", ElidedLabel(_megabytes(_folder_size(models))))
        show = QPushButton("Show folder")
        show.clicked.connect(lambda: show_folder(path.parent))
        copy = QPushButton("Copy path")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(str(path)))
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (show, copy, close):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
