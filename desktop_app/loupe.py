"""The loupe: one photo large (fit or 100 %) with its caption editable beside it, and a
side-by-side comparison of two photos.

Pure views: what they show is handed to them and what the person asks for goes out as
signals; :class:`~desktop_app.controllers.photo_verbs.PhotoVerbs` moves through the grid,
decodes the full image and saves the caption through the same undo stack as the panel.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QCloseEvent, QImage, QKeySequence, QPixmap, QResizeEvent, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.view_rows import ImageRow
from desktop_app.caption_panel import ElidedLabel, badge_text

#: Zoom factors the loupe steps through besides "fit".
ACTUAL_SIZE = 1.0


class ZoomView(QScrollArea):
    """A photo that fits the view, or is shown at 100 % and scrolls."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("zoomView")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setStyleSheet("QScrollArea#zoomView, QScrollArea#zoomView > QWidget > QWidget { background: #202124; }")
        self.label = QLabel()
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setStyleSheet("color: #bbb;")
        self.setWidget(self.label)
        self.setWidgetResizable(True)
        self.setMinimumSize(200, 150)
        # The window's arrow keys move between photos; the view must not take them to scroll.
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.image: QImage | None = None
        #: None: fit to the view; else the zoom factor (1.0: one image pixel per screen pixel).
        self.zoom: float | None = None

    def set_image(self, image: QImage | None, message: str = "") -> None:
        self.image = image if image is not None and not image.isNull() else None
        if self.image is None:
            self.label.setPixmap(QPixmap())
            self.label.setText(message)
        else:
            self.label.setText("")
        self._render()

    def set_zoom(self, zoom: float | None) -> None:
        self.zoom = zoom
        self._render()

    def toggle_zoom(self) -> None:
        self.set_zoom(None if self.zoom is not None else ACTUAL_SIZE)

    def shown_scale(self) -> float:
        """How many screen pixels one image pixel takes now (0 without an image)."""
        if self.image is None:
            return 0.0
        if self.zoom is not None:
            return self.zoom
        view = self.viewport().size()
        return min(view.width() / self.image.width(), view.height() / self.image.height())

    def _render(self) -> None:
        if self.image is None:
            return
        fit = self.zoom is None
        self.setWidgetResizable(fit)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff if fit else Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff if fit else Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scale = self.shown_scale()
        size = QSize(max(1, round(self.image.width() * scale)), max(1, round(self.image.height() * scale)))
        pixmap = QPixmap.fromImage(self.image)
        if size != pixmap.size():
            pixmap = pixmap.scaled(size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        self.label.setPixmap(pixmap)
        if not fit:
            self.label.resize(pixmap.size())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self.zoom is None:
            self._render()


class Loupe(QWidget):
    """One photo large, the caption beside it; Left/Right move, Space or Esc close."""

    next_requested = Signal()
    previous_requested = Signal()
    #: (image id, text): the person saved this caption.
    save_requested = Signal(int, str)
    #: (image id): accept the current caption (saving typed text first is the receiver's call).
    accept_requested = Signal(int)
    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("loupe")
        self.setWindowTitle("CaptionDesk — Loupe")
        self.image_id: int | None = None
        self._loaded_text = ""
        # The loupe itself holds the keyboard when it opens (arrows move between photos);
        # a click or Tab puts it in the caption editor.
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.view = ZoomView()
        self.title = ElidedLabel("")
        self.title.setObjectName("loupeTitle")
        self.badge = QLabel()
        self.position = QLabel()
        self.editor = QPlainTextEdit()
        self.editor.setObjectName("loupeEditor")
        self.editor.setTabChangesFocus(True)
        self.editor.setPlaceholderText("No caption yet — type one and press Ctrl+S")
        self.editor.textChanged.connect(self._update_buttons)
        self.save_button = QPushButton("Save")
        self.save_button.setToolTip("Save the text as the verified caption (Ctrl+S)")
        self.save_button.clicked.connect(self._save)
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Mark the caption as verified (Ctrl+Shift+A)")
        self.accept_button.clicked.connect(self._accept)
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Fit the photo to the window (F)")
        self.fit_button.clicked.connect(lambda: self.view.set_zoom(None))
        self.actual_button = QPushButton("100 %")
        self.actual_button.setToolTip("One photo pixel per screen pixel (1); Z switches")
        self.actual_button.clicked.connect(lambda: self.view.set_zoom(ACTUAL_SIZE))
        self.previous_button = QPushButton("◀ Previous")
        self.previous_button.setToolTip("Previous photo (Left)")
        self.previous_button.clicked.connect(self.previous_requested)
        self.next_button = QPushButton("Next ▶")
        self.next_button.setToolTip("Next photo (Right)")
        self.next_button.clicked.connect(self.next_requested)
        self.close_button = close = QPushButton("Close")
        close.setToolTip("Back to the grid (Space or Esc)")
        close.clicked.connect(self.close)

        side = QWidget()
        side.setMinimumWidth(220)
        side_layout = QVBoxLayout(side)
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.badge)
        side_layout.addLayout(header)
        side_layout.addWidget(self.position)
        side_layout.addWidget(QLabel("Caption"))
        self.editor.setMaximumHeight(180)
        side_layout.addWidget(self.editor, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.accept_button)
        buttons.addStretch(1)
        side_layout.addLayout(buttons)
        self._side_layout = side_layout
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.view)
        self.splitter.addWidget(side)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setSizes([700, 300])
        bar = QHBoxLayout()
        for button in (self.previous_button, self.next_button):
            bar.addWidget(button)
        bar.addStretch(1)
        for button in (self.fit_button, self.actual_button, close):
            bar.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(bar)
        # Window shortcuts: the caption editor still gets the keys it types or moves with
        # (it claims them first), so arrows, Space and letters act on the loupe only outside it.
        for keys, slot in (
            (QKeySequence.StandardKey.Save, self._save),
            ("Ctrl+Shift+A", self._accept),
            ("Ctrl+Return", self._accept_and_next),
            ("Right", self.next_requested.emit),
            ("PgDown", self.next_requested.emit),
            ("Left", self.previous_requested.emit),
            ("PgUp", self.previous_requested.emit),
            ("Space", self.close),
            ("Escape", self.close),
            ("F", lambda: self.view.set_zoom(None)),
            ("1", lambda: self.view.set_zoom(ACTUAL_SIZE)),
            ("Z", self.view.toggle_zoom),
        ):
            QShortcut(QKeySequence(keys), self, activated=slot)
        self._update_buttons()

    def add_side_widget(self, widget: QWidget) -> None:
        """Something more about the photo under its caption (the window gives its photo info panel)."""
        self._side_layout.addWidget(widget, 2)

    # -- what it shows --------------------------------------------------------------------

    def show_row(self, row: ImageRow | None, caption: str, position: str = "") -> None:
        """Show *row* with its current *caption* (the image arrives later, :meth:`set_image`)."""
        self.image_id = row.id if row is not None else None
        self._loaded_text = caption
        self.editor.blockSignals(True)
        self.editor.setPlainText(caption)
        self.editor.blockSignals(False)
        self.editor.setEnabled(row is not None and row.image_state == "ok")
        self.title.setText(row.rel_path if row is not None else "")
        if row is not None:
            label, color = badge_text(row)
            self.badge.setText(label)
            self.badge.setStyleSheet(f"background:{color}; color:white; border-radius:4px; padding:1px 6px;")
        self.position.setText(position)
        self._update_buttons()

    def set_image(self, image_id: int, image: QImage | None, error: str | None = None) -> None:
        if image_id == self.image_id:
            self.view.set_image(image, error or "")

    def show_loading(self, pixmap: QPixmap | None) -> None:
        """The thumbnail, until the full image is decoded."""
        self.view.set_image(pixmap.toImage() if pixmap is not None else None, "Loading…")

    def text(self) -> str:
        return self.editor.toPlainText().strip()

    def is_dirty(self) -> bool:
        return self.image_id is not None and self.text() != self._loaded_text

    def _update_buttons(self) -> None:
        has = self.image_id is not None
        self.save_button.setEnabled(has and self.is_dirty() and bool(self.text()))
        self.accept_button.setEnabled(has and (self.is_dirty() or bool(self._loaded_text)))

    # -- what the person asks ---------------------------------------------------------------

    def commit(self) -> None:
        """Save what was typed (leaving a photo never loses it)."""
        if self.is_dirty() and self.text() and self.image_id is not None:
            image_id, text = self.image_id, self.text()
            self._loaded_text = text
            self.save_requested.emit(image_id, text)

    def _save(self) -> None:
        self.commit()
        self._update_buttons()

    def _accept(self) -> None:
        if self.image_id is None:
            return
        if self.is_dirty():
            self.commit()
        else:
            self.accept_requested.emit(self.image_id)

    def _accept_and_next(self) -> None:
        self._accept()
        self.next_requested.emit()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.commit()
        self.closed.emit()
        super().closeEvent(event)


class ComparePane(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image_id: int | None = None
        self.view = ZoomView()
        self.title = ElidedLabel("")
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.caption.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.title)
        layout.addWidget(self.caption)


class CompareView(QWidget):
    """Two photos side by side, each with its name and caption; 1 / F zoom both alike."""

    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("compareView")
        self.setWindowTitle("CaptionDesk — Compare")
        self.panes = (ComparePane(), ComparePane())
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for pane in self.panes:
            splitter.addWidget(pane)
        fit = QPushButton("Fit")
        fit.clicked.connect(lambda: self.set_zoom(None))
        actual = QPushButton("100 %")
        actual.clicked.connect(lambda: self.set_zoom(ACTUAL_SIZE))
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        bar = QHBoxLayout()
        bar.addStretch(1)
        for button in (fit, actual, close):
            bar.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(splitter, 1)
        layout.addLayout(bar)
        for keys, slot in (("Space", self.close), ("Escape", self.close), ("F", lambda: self.set_zoom(None)),
                           ("1", lambda: self.set_zoom(ACTUAL_SIZE))):
            QShortcut(QKeySequence(keys), self, activated=slot)

    def show_rows(self, rows: tuple[ImageRow, ImageRow], captions: tuple[str, str]) -> None:
        for pane, row, caption in zip(self.panes, rows, captions, strict=True):
            pane.image_id = row.id
            pane.title.setText(row.rel_path)
            pane.caption.setText(caption or "— (no caption)")
            pane.view.set_image(None, "Loading…")

    def set_image(self, image_id: int, image: QImage | None, error: str | None = None) -> None:
        for pane in self.panes:
            if pane.image_id == image_id:
                pane.view.set_image(image, error or "")

    def set_zoom(self, zoom: float | None) -> None:
        for pane in self.panes:
            pane.view.set_zoom(zoom)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.closed.emit()
        super().closeEvent(event)
