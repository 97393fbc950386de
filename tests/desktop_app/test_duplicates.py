"""The Duplicates view: find, browse with thumbnails, "Keep this one", all through the window's notice."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QThreadPool
from sqlalchemy import select

from core.library import Library
from core.models import Image
from desktop_app.duplicates_dialog import DuplicatesDialog
from desktop_app.operations import LibraryNotifier
from tests.support.imagegen import photo_image, write_copies


def _library(tmp_path: Path) -> Library:
    photos = tmp_path / "photos"
    for n in range(2):
        image = photo_image(700 + n)
        (photos / "camera").mkdir(parents=True, exist_ok=True)
        image.save(photos / "camera" / f"shot{n}.jpg", quality=92)
        write_copies(image, photos / "exported", f"shot{n}")
    photo_image(800).save(photos / "camera" / "alone.jpg", quality=92)
    library = Library(tmp_path / "library.db")
    library.scan([library.add_root(photos).id])
    return library


def _marks(library: Library) -> dict[str, str | None]:
    with library.db.read() as session:
        return {Path(rel).name: mark for rel, mark in session.execute(select(Image.rel_path, Image.duplicate_mark))}


def test_duplicates_view_finds_groups_and_keeps_one_without_deleting(qtbot, tmp_path: Path) -> None:
    library = _library(tmp_path)
    pool = QThreadPool()
    notifier = LibraryNotifier()
    notices = []
    notifier.library_changed.connect(notices.append)
    try:
        dialog = DuplicatesDialog(library, pool, notifier)
        qtbot.addWidget(dialog)
        dialog.show()
        qtbot.waitUntil(lambda: "Not searched" in dialog.summary.text())
        assert not dialog.keep_button.isEnabled()

        dialog.find_button.click()
        qtbot.waitUntil(lambda: dialog.group_list.count() == 2 and not dialog.busy, timeout=20_000)
        assert dialog.summary.text().startswith("2 groups (12 photos), 0 decided")
        assert [n.duplicates for n in notices] == [True]
        assert dialog.member_list.count() == 6
        qtbot.waitUntil(lambda: all(not dialog.member_list.item(r).icon().isNull() for r in range(6)))
        names = [dialog.member_list.item(r).text().split("\n")[0] for r in range(6)]
        assert "alone.jpg" not in names and len({n.split("_")[0].removesuffix(".jpg") for n in names}) == 1

        dialog.member_list.setCurrentRow(3)
        chosen = names[3]
        dialog.keep_button.click()
        qtbot.waitUntil(lambda: "1 decided" in dialog.summary.text() and not dialog.busy)
        marks = _marks(library)
        assert marks[chosen] == "kept"
        assert sorted(marks[n] for n in names if n != chosen) == ["excluded"] * 5
        assert "KEPT" in dialog.member_list.item(3).text() and "excluded" in dialog.member_list.item(0).text()
        assert f"keeping {chosen}" in dialog.group_list.item(dialog.group_list.currentRow()).text()
        assert len(list((tmp_path / "photos").rglob("*.jpg"))) == 13  # nothing deleted
        assert len(notices) == 2 and notices[-1].duplicates

        dialog.clear_button.click()
        qtbot.waitUntil(lambda: "0 decided" in dialog.summary.text() and not dialog.busy)
        assert all(mark is None for mark in _marks(library).values())
    finally:
        pool.waitForDone(10_000)
        library.close()


def test_status_line_counts_the_pairs_the_image_index_rejected(qtbot, tmp_path: Path) -> None:
    import numpy as np
    from sqlalchemy import func

    from core.search.embedders import DEFAULT_IMAGE_MODEL
    from core.search.store import IMAGE_KIND, write_vectors

    library = _library(tmp_path)
    pool = QThreadPool()
    try:
        with library.db.write() as session:  # shot0 and its resized copy look nothing alike to the index
            items = session.execute(select(Image.id, func.coalesce(Image.content_key, Image.fingerprint))
                                    .where(Image.rel_path.in_(["camera/shot0.jpg", "exported/shot0_resized.jpg"]))).all()
            write_vectors(session, DEFAULT_IMAGE_MODEL, IMAGE_KIND, [tuple(i) for i in items], np.eye(2, 8, dtype=np.float32))
        dialog = DuplicatesDialog(library, pool, LibraryNotifier())
        qtbot.addWidget(dialog)
        dialog.find_button.click()
        qtbot.waitUntil(lambda: "rejected" in dialog.summary.text() and not dialog.busy, timeout=20_000)
        assert dialog.summary.text().endswith("; the image index rejected 1 pair")
    finally:
        pool.waitForDone(10_000)
        library.close()
