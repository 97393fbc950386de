"""The log panel: job summaries, warnings and errors, with details kept for bug reports.

Python ``logging`` records from any thread reach it through a queued signal
(:class:`QtLogHandler`), so a worker can log freely; errors are shown here and in a
dialog by the window instead of as tracebacks on a console nobody sees.
"""

from __future__ import annotations

import logging
from datetime import datetime

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QPlainTextEdit, QWidget

#: Lines kept in the panel (older ones scroll away).
MAX_LINES = 5000


class LogPanel(QPlainTextEdit):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("logPanel")
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_LINES)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.entries: list[tuple[str, str]] = []  # (level, message), for tests and copy-out

    def add(self, level: str, message: str, detail: str | None = None) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.entries.append((level, message))
        del self.entries[:-MAX_LINES]
        text = f"{stamp} {level.upper():7} {message}"
        if detail:
            text += "\n" + "\n".join("        " + line for line in detail.rstrip().splitlines())
        self.appendPlainText(text)
        self.moveCursor(QTextCursor.MoveOperation.End)


class _Bridge(QObject):
    record = Signal(str, str, object)


class QtLogHandler(logging.Handler):
    """Forwards log records (from any thread) to a :class:`LogPanel`."""

    def __init__(self, panel: LogPanel, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._bridge = _Bridge()
        self._bridge.record.connect(panel.add, Qt.ConnectionType.QueuedConnection)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            detail = self.formatter.formatException(record.exc_info) if record.exc_info and self.formatter else None
            if record.exc_info and detail is None:
                detail = logging.Formatter().formatException(record.exc_info)
            self._bridge.record.emit(record.levelname.lower(), record.getMessage(), detail)
        except RuntimeError:  # the panel is gone (window closed)
            pass
