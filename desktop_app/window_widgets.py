"""The main window's plain widgets: the large preview, the empty-library page, the notice banner."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap, QResizeEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QToolButton, QVBoxLayout, QWidget


class PreviewView(QLabel):
    """The large preview: keeps the decoded image and scales it to fit on resize."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("preview")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        # Low enough that the preview's tab bar and the caption panel fit a 1024x700 screen.
        self.setMinimumSize(200, 80)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setStyleSheet("QLabel#preview { background: #202124; color: #bbb; }")
        self._pixmap: QPixmap | None = None
        self.image_id: int | None = None
        self.full_loaded = False

    def show_pixmap(self, image_id: int | None, pixmap: QPixmap | None, message: str = "", *, full: bool = False) -> None:
        self.image_id = image_id
        self._pixmap = pixmap
        self.full_loaded = full
        if pixmap is None:
            self.setPixmap(QPixmap())
            self.setText(message)
        else:
            self.setText("")
            self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is not None and not self._pixmap.isNull():
            self.setPixmap(
                self._pixmap.scaled(
                    self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
                )
            )

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._rescale()


class EmptyLibraryPage(QWidget):
    """What a library with no folders shows instead of an empty grid."""

    add_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("emptyState")
        title = QLabel("Start by adding a photo folder")
        title.setObjectName("emptyTitle")
        title.setStyleSheet("font-size: 20px; font-weight: 600;")
        text = QLabel(
            "CaptionDesk reads the photos in the folders you add, captions them with a local "
            "model, and lets you review, export and retrain. Your files are never changed "
            "unless you write captions into them."
        )
        text.setWordWrap(True)
        # A fixed width lets the wrapped label compute its height (a maximum width clips it).
        text.setFixedWidth(460)
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.add_button = QPushButton("Add a folder…")
        self.add_button.setObjectName("emptyAddFolder")
        self.add_button.setDefault(True)
        self.add_button.clicked.connect(self.add_clicked)
        hint = QLabel("…or drag a folder from your file manager onto this window.")
        hint.setStyleSheet("color: palette(mid);")
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        for widget in (title, text, self.add_button, hint):
            layout.addWidget(widget, 0, Qt.AlignmentFlag.AlignHCenter)
            layout.addSpacing(8)
        layout.addStretch(2)


class NoticeBanner(QFrame):
    """A non-modal one-line notice above the grid with one action and a close button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("noticeBanner")
        self.setStyleSheet(
            "QFrame#noticeBanner { background: #fff4ce; border-bottom: 1px solid #e0c97a; }"
            "QFrame#noticeBanner QLabel { color: #3b3000; }"
        )
        self.label = QLabel()
        self.action_button = QPushButton()
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Dismiss")
        self.close_button.setAutoRaise(True)
        self.close_button.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self.close_button)
        self.hide()
