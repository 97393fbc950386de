"""Thumbnails for the grid and the large preview, decoded off the GUI thread.

:class:`ThumbnailCache` answers the delegate's ``pixmap(row)`` at paint time from a
bounded in-memory LRU; a miss queues the image and returns None (the delegate draws a
placeholder).  Worker threads make or reuse the JPEG in the library's disk cache
(:func:`core.imaging.ensure_thumbnail`, keyed by content fingerprint), decode it into a
``QImage`` and scale it — ``QImage`` is safe off the GUI thread, ``QPixmap`` is not, so
pixmaps are created only when the coalesced results reach the GUI thread.

Requests are a LIFO stack capped at :data:`MAX_QUEUED`: while the user flings through
100 000 photos only the thumbnails last painted are decoded; the rest are dropped and
asked for again if they are painted again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QObject, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QImage, QPixmap

from core.imaging import ImageDecodeError, ensure_thumbnail, load_rgb
from desktop_app.background import Coalescer, lower_thread_priority
from desktop_app.operations import run_in_pool

#: Size of the thumbnails kept in the disk cache; the grid scales them down.
DISK_SIZE = 256
#: Requests kept waiting; older ones are dropped (see the module docstring).
MAX_QUEUED = 256
#: Worker runnables decoding at once (the machines have 2 cores; the GUI needs one).
MAX_WORKERS = 2


def pil_to_qimage(image) -> QImage:
    """Copy an 8-bit RGB PIL image into a QImage that owns its pixels."""
    data = image.tobytes("raw", "RGB")
    qimage = QImage(data, image.width, image.height, 3 * image.width, QImage.Format.Format_RGB888)
    return qimage.copy()  # detach from *data*, which Python frees


class ThumbnailCache(QObject):
    """Bounded LRU of grid thumbnails, filled by pool workers."""

    #: Fingerprints whose thumbnail (or failure) just arrived: repaint them.
    ready = Signal(list)

    def __init__(
        self,
        cache_dir: Path | None,
        pool: QThreadPool,
        *,
        display_size: int = 160,
        capacity: int = 600,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        #: The library's thumbnail cache; None until a library is open (nothing is
        #: decoded then, so no thumbnail lands in the working directory).
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.pool = pool
        self.capacity = capacity
        self._display_size = display_size
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stack: list[tuple[str, str, int, int, Path]] = []
        self._queued: set[str] = set()
        self._workers = 0
        #: Bumped when the display size changes: late results of the old size are dropped.
        self._generation = 0
        self._results = Coalescer(50, self)
        self._results.flushed.connect(self._on_results)

    # -- GUI thread -------------------------------------------------------------------

    @property
    def display_size(self) -> int:
        return self._display_size

    def set_display_size(self, size: int) -> None:
        if size == self._display_size:
            return
        self._display_size = size
        self._generation += 1
        self._pixmaps.clear()
        with self._lock:
            self._stack.clear()
            self._queued.clear()

    def failure(self, fingerprint: str) -> str | None:
        """Why the thumbnail of *fingerprint* could not be made, if it could not."""
        return self._failed.get(fingerprint)

    def pixmap(self, fingerprint: str, path: str) -> QPixmap | None:
        """The thumbnail if it is in memory; otherwise queue it and return None."""
        pixmap = self._pixmaps.get(fingerprint)
        if pixmap is not None:
            self._pixmaps.move_to_end(fingerprint)
            return pixmap
        if fingerprint in self._failed:
            return None
        self._request(fingerprint, path)
        return None

    def _request(self, fingerprint: str, path: str) -> None:
        cache_dir = self.cache_dir
        if cache_dir is None:
            return
        start_worker = False
        with self._lock:
            if fingerprint in self._queued:
                return
            self._queued.add(fingerprint)
            # The cache folder travels with the request: switching libraries while
            # workers run must not write thumbnails into the new library's cache.
            self._stack.append((fingerprint, path, self._display_size, self._generation, cache_dir))
            if len(self._stack) > MAX_QUEUED:
                dropped = self._stack[: len(self._stack) - MAX_QUEUED]
                del self._stack[: len(dropped)]
                for fp, *_rest in dropped:
                    self._queued.discard(fp)
            if self._workers < MAX_WORKERS:
                self._workers += 1
                start_worker = True
        if start_worker:
            self.pool.start(self._drain)

    def _on_results(self, results: list[tuple[str, QImage | None, str | None, int]]) -> None:
        fingerprints = []
        for fingerprint, image, error, generation in results:
            with self._lock:
                self._queued.discard(fingerprint)
            if generation != self._generation:
                continue
            if image is None:
                self._failed[fingerprint] = error or "cannot make a thumbnail"
            else:
                self._pixmaps[fingerprint] = QPixmap.fromImage(image)
                self._pixmaps.move_to_end(fingerprint)
            fingerprints.append(fingerprint)
        while len(self._pixmaps) > self.capacity:
            self._pixmaps.popitem(last=False)
        if fingerprints:
            self.ready.emit(fingerprints)

    def wait_idle(self, timeout_ms: int = 5000) -> bool:
        """Test/benchmark helper: wait for queued thumbnails to be decoded."""
        return self.pool.waitForDone(timeout_ms)

    # -- worker threads --------------------------------------------------------------

    def _drain(self) -> None:
        lower_thread_priority()
        while True:
            with self._lock:
                if not self._stack:
                    self._workers -= 1
                    return
                fingerprint, path, size, generation, cache_dir = self._stack.pop()
            try:
                thumb = ensure_thumbnail(path, fingerprint, cache_dir, DISK_SIZE)
                image = QImage(str(thumb))
                if image.isNull():
                    raise ImageDecodeError("cannot read the cached thumbnail")
                if max(image.width(), image.height()) > size:
                    image = image.scaled(
                        QSize(size, size),
                        Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.SmoothTransformation,
                    )
                self._results.add([(fingerprint, image, None, generation)])
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the worker
                self._results.add([(fingerprint, None, str(exc), generation)])


class PreviewLoader(QObject):
    """Decodes one large preview at a time; a newer request makes older results stale."""

    #: (image_id, QImage or None, error text or None)
    loaded = Signal(int, object, object)

    def __init__(self, pool: QThreadPool, max_size: int = 1600, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = pool
        self.max_size = max_size
        self._latest: int | None = None

    def request(self, image_id: int, path: str) -> None:
        self._latest = image_id
        max_size = self.max_size

        def work() -> QImage:
            return pil_to_qimage(load_rgb(path, max_size=max_size))

        def done(image: QImage) -> None:
            if self._latest == image_id:
                self.loaded.emit(image_id, image, None)

        def failed(exc: BaseException) -> None:
            if self._latest == image_id:
                message = str(exc) if isinstance(exc, ImageDecodeError) else f"{type(exc).__name__}: {exc}"
                self.loaded.emit(image_id, None, message)

        # Above thumbnails: the image the user is looking at matters most.
        run_in_pool(self.pool, work, done, failed, priority=1)
