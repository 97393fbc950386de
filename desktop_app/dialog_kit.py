"""Pieces shared by the File/Model/Edit/Help dialogs: a background job, an elided label, scopes.

* :class:`JobRunner` runs one core function ``work(progress, cancel)`` at a time, on its
  own one-thread pool through :func:`desktop_app.operations.run_in_pool` (progress and
  the result come back queued to the GUI thread) or on the model thread.  The cancel
  token is a ``threading.Event`` that core checks between items.
* :class:`ElidedLabel` shows one line, elided in the middle, with the full text as its
  tooltip: a long path never makes a dialog grow.
* :class:`JobFooter` is the progress bar + status line + Start/Cancel/Close row.
* :class:`Scope` is "which images" as the main window knows it (whole library, current
  folder, selection, current filter), handed to core as ``folder=`` / ``image_ids=``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSize, QStandardPaths, Qt, QThreadPool, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFontMetrics, QGuiApplication, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from core.queries import ImageFilter
from desktop_app.background import JOB_NICENESS
from desktop_app.operations import run_in_pool

#: Width of the dialogs (fits 1280x800 with room to spare; text wraps or elides).
DIALOG_WIDTH = 560


#: Room a window manager's title bar and borders take around a dialog.
WINDOW_FRAME = QSize(16, 48)


def available_size(widget: QWidget) -> QSize:
    """The usable size of the screen *widget* is on (without panels and docks)."""
    screen = widget.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry().size()


def fit_on_screen(widget: QWidget, wanted: QSize | None = None, available: QSize | None = None) -> None:
    """Size *widget* to *wanted* (its size hint) but never beyond the screen, frame included.

    Dialogs that can be taller than a small screen keep their content in a scroll area, so
    a cap here leaves their buttons on screen instead of clipping them.
    """
    available = available or available_size(widget)
    wanted = wanted or widget.sizeHint()
    limit = available - WINDOW_FRAME
    widget.setMaximumHeight(limit.height())
    widget.resize(min(max(wanted.width(), widget.minimumWidth()), limit.width()),
                  min(wanted.height(), limit.height()))


def lines_high(label: QLabel, lines: int) -> QLabel:
    """Fix a word-wrapped *label* at *lines* text lines, so new text never moves what is below it."""
    label.setWordWrap(True)
    label.setFixedHeight(label.fontMetrics().lineSpacing() * lines + 4)
    return label


#: The folder each kind of file dialog last used in this session ("import", "export", ...).
_last_folders: dict[str, str] = {}


def start_folder(kind: str) -> str:
    """Where a file dialog of *kind* opens: the folder last used for it, else Pictures, else home."""
    last = _last_folders.get(kind)
    if last and Path(last).is_dir():
        return last
    for location in (QStandardPaths.StandardLocation.PicturesLocation, QStandardPaths.StandardLocation.HomeLocation):
        folder = QStandardPaths.writableLocation(location)
        if folder and Path(folder).is_dir():
            return folder
    return str(Path.home())


def remember_folder(kind: str, chosen: str) -> None:
    """Note *chosen* (a folder, or a file whose folder counts) as where *kind* dialogs open next."""
    path = Path(chosen)
    _last_folders[kind] = str(path if path.is_dir() else path.parent)


def show_folder(path: Path | str) -> bool:
    """Open *path* (a folder) in the system file manager."""
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def wrapping_tooltip(text: str) -> str:
    """*text* as a tooltip that wraps instead of running off the screen.

    Qt wraps only rich-text tooltips; zero-width spaces after "/", "_" and "-" let a long
    path break between its parts.
    """
    if not text:
        return ""
    import html

    body = html.escape(text).replace("/", "/\u200b").replace("_", "_\u200b").replace("-", "-\u200b")
    return "<p>" + body.replace("\n", "<br>") + "</p>"


class ElidedLabel(QLabel):
    """A one-line label that elides long text in the middle (or at *mode*); the tooltip has all of it."""

    def __init__(self, text: str = "", parent: QWidget | None = None,
                 mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle) -> None:
        super().__init__(parent)
        self._full = ""
        self._mode = mode
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(80)
        self.setText(text)

    def setText(self, text: str) -> None:
        self._full = text
        self.setToolTip(wrapping_tooltip(text))
        super().setText(text)
        self.update()

    def full_text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        """The text as painted at the label's present width."""
        return QFontMetrics(self.font()).elidedText(self._full, self._mode, self.contentsRect().width())

    def paintEvent(self, _event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.drawText(self.contentsRect(), int(self.alignment() | Qt.AlignmentFlag.AlignVCenter), self.shown_text())


def compact_table(table: Any) -> None:
    """Rows one text line high (the default leaves a lot of air on most styles)."""
    header = table.verticalHeader()
    header.setVisible(False)
    header.setDefaultSectionSize(table.fontMetrics().height() + 8)


def wrapped(text: str) -> QLabel:
    """A word-wrapped explanatory label (fixed width comes from the dialog)."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


class JobRunner(QObject):
    """One background job at a time; results come back as queued signals.

    Work that loads a model (evaluating, merging a version) is given the window's model
    thread (*model_thread*, a ``desktop_app.model_thread.CaptionService``): it then runs there
    as a ``ModelJob``, taking turns with captioning and training, instead of on a thread
    of this runner's own.
    """

    #: core.jobs.Progress snapshots (throttled by core)
    progress = Signal(object)
    #: The function's return value.
    finished = Signal(object)
    #: (message for the person, traceback for the log)
    failed = Signal(str, str)
    #: A job on the model thread was asked to stop (here or from the main window).
    cancel_requested = Signal()

    def __init__(self, parent: QObject | None = None, *, model_thread: Any = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self.model_thread = model_thread
        self._model_job: Any = None
        self._cancel: threading.Event | None = None

    @property
    def running(self) -> bool:
        return self._cancel is not None

    def start(self, work: Callable[[Callable[[Any], None], threading.Event], Any], description: str = "", *,
              cancellable: bool = True) -> bool:
        """Run ``work(progress, cancel)`` on the worker thread; False if one is running
        (or the model thread is busy: ``model_thread.busy_reason`` says why)."""
        if self._cancel is not None:
            return False
        if self.model_thread is not None:
            return self._start_on_model_thread(work, description, cancellable)
        cancel = threading.Event()
        self._cancel = cancel

        def done(result: Any) -> None:
            self._cancel = None
            self.finished.emit(result)

        def failed(exc: BaseException) -> None:
            self._cancel = None
            self.failed.emit(str(exc) or type(exc).__name__, getattr(exc, "__traceback_text__", ""))

        run_in_pool(self.pool, lambda progress: work(progress, cancel), done, failed, on_progress=self.progress.emit,
               niceness=JOB_NICENESS)
        return True

    def _start_on_model_thread(self, work: Callable[..., Any], description: str, cancellable: bool) -> bool:
        from desktop_app.model_thread import ModelJob

        job = ModelJob(description, lambda progress, cancel, on_epoch: work(progress, cancel), owner=self.parent(),
                       cancellable=cancellable)
        job.cancel_requested.connect(self.cancel_requested)
        # Bound methods of this (GUI-thread) object: the model thread's emits arrive queued.
        job.progress.connect(self.progress)
        job.finished.connect(self._on_model_job_finished)
        job.failed.connect(self._on_model_job_failed)
        if not self.model_thread.start_model_job(job):
            job.deleteLater()
            return False
        self._model_job = job
        self._cancel = job.cancel
        return True

    def _model_job_ended(self) -> None:
        self._cancel = None
        if self._model_job is not None:
            self._model_job.deleteLater()
            self._model_job = None

    def _on_model_job_finished(self, result: Any) -> None:
        self._model_job_ended()
        self.finished.emit(result)

    def _on_model_job_failed(self, message: str, detail: str) -> None:
        self._model_job_ended()
        self.failed.emit(message, detail)

    def cancel(self) -> None:
        if self._model_job is not None:
            self._model_job.request_cancel()
        elif self._cancel is not None:
            self._cancel.set()

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel and wait for the worker (closing the dialog)."""
        self.cancel()
        return self.pool.waitForDone(timeout_ms)


class JobFooter(QWidget):
    """Progress bar, one status line and the buttons of a job dialog."""

    def __init__(self, start_text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        # Space kept, bar hidden until a job runs: an idle "0%" reads like a stuck job.
        policy = self.bar.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.bar.setSizePolicy(policy)
        self.bar.hide()
        self.status = ElidedLabel("")
        self.start_button = QPushButton(start_text)
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        self.buttons = QHBoxLayout()
        self.buttons.addStretch(1)
        for button in (self.start_button, self.cancel_button, self.close_button):
            self.buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addLayout(self.buttons)

    def set_running(self, running: bool, message: str = "") -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.bar.setRange(0, 0)
            self.bar.show()
        if message:
            self.status.setText(message)

    def show_progress(self, progress: Any) -> None:
        total = getattr(progress, "total", None)
        if total:
            self.bar.setRange(0, int(total))
            self.bar.setValue(min(int(progress.done), int(total)))
        message = getattr(progress, "message", "")
        if message:
            done = getattr(progress, "done", 0)
            self.status.setText(f"{message}: {done} of {total}" if total else message)

    def finish(self, message: str) -> None:
        self.set_running(False)
        self.bar.setRange(0, 1)
        self.bar.setValue(1)
        self.status.setText(message)


# -- which images -----------------------------------------------------------------------

SCOPE_LIBRARY = "library"
SCOPE_FOLDER = "folder"
SCOPE_SELECTION = "selection"
SCOPE_FILTER = "filter"


@dataclass(frozen=True)
class Scope:
    """What "which images" can mean when a dialog opens (from the main window's state)."""

    #: Absolute path of the folder open in the sidebar (None: the whole library is shown).
    folder: str | None = None
    #: Ids of the selected images.
    selection: tuple[int, ...] = ()
    #: The grid's current filter (search, states, folder, model, score).
    flt: ImageFilter | None = None
    #: Images the current filter shows (for the label only).
    filter_count: int = 0

    def core_arguments(self, key: str, library: Any) -> dict[str, Any]:
        """``folder=`` / ``image_ids=`` for core; call it on the worker thread (a filter query)."""
        if key == SCOPE_FOLDER and self.folder:
            return {"folder": self.folder}
        if key == SCOPE_SELECTION:
            return {"image_ids": list(self.selection)}
        if key == SCOPE_FILTER and self.flt is not None:
            from core.queries import filtered_ids

            with library.db.read() as session:
                return {"image_ids": filtered_ids(session, self.flt)}
        return {}


class ScopePicker(QWidget):
    """Radio buttons: whole library / current folder / selection / current filter."""

    changed = Signal()

    def __init__(self, scope: Scope, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scope = scope
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        folder_name = Path(scope.folder).name if scope.folder else ""
        choices = (
            (SCOPE_LIBRARY, "Whole library", True),
            (SCOPE_FOLDER, f"Current folder ({folder_name})" if folder_name else "Current folder (none open)",
             bool(scope.folder)),
            (SCOPE_SELECTION, f"Selected images ({len(scope.selection)})", bool(scope.selection)),
            (SCOPE_FILTER, f"Images the current filter shows ({scope.filter_count})",
             scope.flt is not None and scope.filter_count > 0),
        )
        for key, text, enabled in choices:
            button = QRadioButton(text)
            button.setEnabled(enabled)
            if key == SCOPE_FOLDER and scope.folder:
                button.setToolTip(scope.folder)
            self.group.addButton(button)
            self.buttons[key] = button
            layout.addWidget(button)
            button.toggled.connect(lambda on: on and self.changed.emit())
        self.buttons[SCOPE_LIBRARY].setChecked(True)

    def key(self) -> str:
        for key, button in self.buttons.items():
            if button.isChecked():
                return key
        return SCOPE_LIBRARY

    def set_key(self, key: str) -> None:
        button = self.buttons.get(key)
        if button is not None and button.isEnabled():
            button.setChecked(True)
