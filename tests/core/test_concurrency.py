"""A writer thread and reader threads on one library at once: nothing lost, no lock errors."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from core import captions
from core.library import Library
from core.models import Caption, Image


@pytest.mark.slow
def test_writers_and_readers_in_parallel(library: Library, photo_dir) -> None:
    root = library.add_root(photo_dir)
    with library.db.write() as session:
        images = [Image(root_id=root.id, rel_path=f"{i}.jpg", size=1, mtime_ns=1, fingerprint=f"{i:032}") for i in range(200)]
        session.add_all(images)
    with library.db.read() as session:
        image_ids = session.scalars(select(Image.id)).all()

    errors: list[BaseException] = []
    stop = threading.Event()
    reads = [0]

    def writer(offset: int) -> None:
        # Read-then-write transactions: the pattern that deadlocks with deferred BEGIN.
        try:
            for n, image_id in enumerate(image_ids):
                if n % 4 != offset:
                    continue
                with library.db.write() as session:
                    current = captions.current_caption(session, image_id)
                    version = 0 if current is None else int(current.text.split()[-1]) + 1
                    captions.add_model_caption(session, image_id, f"caption {version}", model_name="m")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                with library.db.read() as session:
                    session.scalar(select(func.count(Caption.id)))
                    library.status()
                reads[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(120)
    stop.set()
    for thread in readers:
        thread.join(30)

    assert errors == []
    assert reads[0] > 0
    with library.db.read() as session:
        assert session.scalar(select(func.count(Caption.id))) == 200
        assert session.scalar(select(func.count(Caption.id)).where(Caption.is_current.is_(True))) == 200


def test_concurrent_read_modify_write_on_same_row(library: Library, photo_dir) -> None:
    """Six threads increment one counter through read-then-write transactions."""
    root = library.add_root(photo_dir)
    with library.db.write() as session:
        image = Image(root_id=root.id, rel_path="x.jpg", size=0, mtime_ns=0, fingerprint="0")
        session.add(image)
        session.flush()
        image_id = image.id
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(50):
                with library.db.write() as session:
                    image = session.get(Image, image_id)
                    image.size += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    with library.db.read() as session:
        assert session.get(Image, image_id).size == 300
