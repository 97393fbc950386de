"""Scanning: incremental, moves keep captions, removals, loops, cancel and resume."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, update

from core import captions, queries, scan_files, scanner, view_rows
from core.jobs import Progress
from core.library import Library
from core.models import Image
from tests.support.imagegen import make_corpus, write_jpeg


def _images(library: Library) -> dict[str, Image]:
    with library.db.read() as session:
        return {image.rel_path: image for image in session.scalars(select(Image))}


def _caption(library: Library, rel_path: str, text: str, *, human: bool = False) -> int:
    image_id = _images(library)[rel_path].id
    with library.db.write() as session:
        if human:
            captions.set_human_caption(session, image_id, text)
        else:
            captions.add_model_caption(session, image_id, text, model_name="m")
    return image_id


def _current_text(library: Library, image_id: int) -> str | None:
    with library.db.read() as session:
        caption = captions.current_caption(session, image_id)
        return caption.text if caption else None


def test_first_scan_records_every_image(library: Library, photo_dir: Path) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    write_jpeg(photo_dir / "sub" / "deeper" / "b.JPG", seed=2)
    (photo_dir / "readme.txt").write_text("not an image")
    write_jpeg(photo_dir / ".hidden.jpg", seed=3)
    write_jpeg(photo_dir / ".thumbnails" / "c.jpg", seed=4)
    root = library.add_root(photo_dir)
    stats = library.scan([root.id])
    images = _images(library)
    assert sorted(images) == ["a.jpg", "sub/deeper/b.JPG"]
    assert stats.new == 2 and stats.errors == 0
    a = images["a.jpg"]
    assert (a.width, a.height, a.format, a.state) == (64, 48, "JPEG", "ok")
    assert a.size == (photo_dir / "a.jpg").stat().st_size
    assert len(a.fingerprint) == 32


def test_unchanged_files_cost_a_stat_not_a_read(
    library: Library, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(20):
        write_jpeg(photo_dir / f"{i}.jpg", seed=i)
    library.scan([library.add_root(photo_dir).id])
    reads: list[str] = []
    monkeypatch.setattr(scan_files, "fingerprint_and_head", lambda p, s=None: reads.append(p) or ("x", b""))
    monkeypatch.setattr(scan_files, "probe", lambda p, h=None: reads.append(p))
    stats = library.scan()
    assert reads == []
    assert (stats.unchanged, stats.new, stats.changed, stats.missing) == (20, 0, 0, 0)


def _state(library: Library, image_id: int) -> str:
    with library.db.read() as session:
        return view_rows.fetch_rows(session, [image_id])[image_id].state


def _history(library: Library, image_id: int) -> list[tuple[str, bool]]:
    with library.db.read() as session:
        return [(c.text, c.is_current) for c in captions.caption_history(session, image_id)]


def test_new_picture_at_the_same_path_is_changed_since_captioned(library: Library, photo_dir: Path) -> None:
    path = write_jpeg(photo_dir / "a.jpg", seed=1)
    library.scan([library.add_root(photo_dir).id])
    image_id = _caption(library, "a.jpg", "a red square", human=True)
    old = _images(library)["a.jpg"]
    write_jpeg(path, color=(0, 0, 255), size=(80, 60), seed=9)
    os.utime(path, ns=(1, 1))
    stats = library.scan()
    image = _images(library)["a.jpg"]
    assert (stats.changed, stats.outdated) == (1, 1) and "1 changed since captioned" in stats.summary()
    assert image.id == image_id and image.fingerprint != old.fingerprint and image.width == 80
    assert image.split_key == old.split_key  # the record's split does not move
    # The person's words describe the old picture: kept in history, no longer current.
    assert _current_text(library, image_id) is None
    assert _history(library, image_id) == [("a red square", False)]
    assert _state(library, image_id) == "changed"
    with library.db.read() as session:
        assert queries.filtered_ids(session, queries.ImageFilter(states=frozenset({"changed"}))) == [image_id]
        assert queries.filtered_ids(session, queries.ImageFilter(states=frozenset({"uncaptioned"}))) == []
        assert [n.counts.changed for n in view_rows.folder_tree(session)] == [1]
    assert library.status()[0].changed == 1
    assert library.scan().outdated == 0  # found once
    # Any caption made current again ends the state (here: the person restores the old one).
    with library.db.write() as session:
        captions.revert_to(session, image.outdated_caption_id)
    assert _state(library, image_id) == "verified"
    assert _images(library)["a.jpg"].outdated_caption_id is None


def _kinds(library: Library, image_id: int) -> dict[str, list[tuple[str, bool]]]:
    with library.db.read() as session:
        out: dict[str, list[tuple[str, bool]]] = {}
        for c in captions.caption_history(session, image_id, None):
            out.setdefault(c.kind, []).append((c.text, c.is_current))
        return out


@pytest.mark.parametrize("with_caption", [True, False], ids=["captioned", "only-other-kinds"])
def test_a_new_picture_sends_every_kind_to_history(library: Library, photo_dir: Path, with_caption: bool) -> None:
    path = write_jpeg(photo_dir / "a.jpg", seed=1)
    library.scan([library.add_root(photo_dir).id])
    image_id = _images(library)["a.jpg"].id
    with library.db.write() as session:
        if with_caption:
            captions.add_model_caption(session, image_id, "a red square", model_name="m")
        captions.add_model_caption(session, image_id, "Red square.", model_name="m", kind="alt_text")
        captions.add_import_caption(session, image_id, "red, square", origin="x.csv", kind="keywords")
        captions.set_human_caption(session, image_id, "My square", kind="title")
    write_jpeg(path, color=(0, 0, 255), size=(80, 60), seed=9)
    os.utime(path, ns=(1, 1))
    stats = library.scan()
    assert stats.outdated == 1
    # A model's, an import's and a person's value alike describe the old picture.
    assert _kinds(library, image_id) == {
        **({"caption": [("a red square", False)]} if with_caption else {}),
        "alt_text": [("Red square.", False)],
        "keywords": [("red\nsquare", False)],
        "title": [("My square", False)],
    }
    image = _images(library)["a.jpg"]
    assert (image.outdated_caption_id is not None) == with_caption
    with library.db.write() as session:  # a new model value of a kind may be current again
        captions.add_model_caption(session, image_id, "Blue.", model_name="m", kind="alt_text")
    assert _kinds(library, image_id)["alt_text"][-1] == ("Blue.", True)


def test_swapped_names_take_every_kind_along(library: Library, photo_dir: Path) -> None:
    a = write_jpeg(photo_dir / "a.jpg", color=(200, 0, 0), seed=1)
    b = write_jpeg(photo_dir / "b.jpg", color=(0, 0, 200), size=(80, 60), seed=2)
    os.utime(a, ns=(1_000_000_000, 1_000_000_000))
    os.utime(b, ns=(2_000_000_000, 2_000_000_000))
    library.scan([library.add_root(photo_dir).id])
    red_id = _caption(library, "a.jpg", "a red square")
    with library.db.write() as session:
        captions.set_human_caption(session, red_id, "red, square", kind="keywords")
        blue_id = _images(library)["b.jpg"].id
        captions.add_model_caption(session, blue_id, "Blue square.", model_name="m", kind="alt_text")
    os.rename(a, photo_dir / "tmp.jpg")
    os.rename(b, a)
    os.rename(photo_dir / "tmp.jpg", b)
    stats = library.scan()
    assert (stats.moved, stats.outdated) == (2, 0)
    assert _kinds(library, red_id) == {"caption": [("a red square", True)], "keywords": [("red\nsquare", True)]}
    assert _kinds(library, blue_id) == {"alt_text": [("Blue square.", True)]}


def test_metadata_rewrite_is_the_same_picture(library: Library, photo_dir: Path) -> None:
    path = write_jpeg(photo_dir / "a.jpg", seed=1)
    library.scan([library.add_root(photo_dir).id])
    image_id = _caption(library, "a.jpg", "a red square", human=True)
    data = path.read_bytes()
    comment = b"edited in another tool"
    # A COM segment after SOI, as a metadata editor adds one: bytes change, pixels do not.
    path.write_bytes(data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:])
    stats = library.scan()
    assert (stats.changed, stats.outdated) == (1, 0)
    assert _current_text(library, image_id) == "a red square" and _state(library, image_id) == "verified"


@pytest.mark.parametrize("keyed", [True, False], ids=["content-keys", "records-from-before-content-keys"])
def test_swapped_names_keep_each_picture_its_own_caption(library: Library, photo_dir: Path, keyed: bool) -> None:
    a = write_jpeg(photo_dir / "a.jpg", color=(200, 0, 0), seed=1)
    b = write_jpeg(photo_dir / "b.jpg", color=(0, 0, 200), size=(80, 60), seed=2)
    os.utime(a, ns=(1_000_000_000, 1_000_000_000))
    os.utime(b, ns=(2_000_000_000, 2_000_000_000))
    library.scan([library.add_root(photo_dir).id])
    red_id = _caption(library, "a.jpg", "a red square", human=True)
    blue_id = _caption(library, "b.jpg", "a blue square", human=True)
    if not keyed:
        with library.db.write() as session:
            session.execute(update(Image).values(content_key=None))
    before = _images(library)
    os.rename(a, photo_dir / "tmp.jpg")
    os.rename(b, a)
    os.rename(photo_dir / "tmp.jpg", b)
    stats = library.scan()
    assert (stats.moved, stats.changed, stats.outdated, stats.new, stats.missing) == (2, 0, 0, 0, 0)
    images = _images(library)
    # Each record, with its caption, history and split key, followed its picture.
    assert images["b.jpg"].id == red_id and images["a.jpg"].id == blue_id
    assert images["b.jpg"].fingerprint == before["a.jpg"].fingerprint
    assert images["b.jpg"].split_key == before["a.jpg"].split_key and images["a.jpg"].width == 80
    assert _current_text(library, red_id) == "a red square" and _state(library, red_id) == "verified"
    assert _current_text(library, blue_id) == "a blue square" and _state(library, blue_id) == "verified"
    assert _history(library, red_id) == [("a red square", True)]
    assert library.scan().changed == 0  # settled: the next scan finds nothing


def test_removed_file_becomes_missing_keeps_captions_and_can_return(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    path = write_jpeg(photo_dir / "a.jpg", seed=1)
    library.scan([library.add_root(photo_dir).id])
    image_id = _caption(library, "a.jpg", "a photo")
    parked = tmp_path / "parked.jpg"
    shutil.move(path, parked)
    assert library.scan().missing == 1
    assert _images(library)["a.jpg"].state == "missing"
    assert _current_text(library, image_id) == "a photo"
    shutil.move(parked, path)
    stats = library.scan()
    assert stats.reappeared == 1 and _images(library)["a.jpg"].state == "ok"


def test_renamed_and_moved_files_keep_their_record(library: Library, photo_dir: Path) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    write_jpeg(photo_dir / "b.jpg", seed=2)
    library.scan([library.add_root(photo_dir).id])
    a_id = _caption(library, "a.jpg", "Grandma's garden", human=True)
    b_id = _caption(library, "b.jpg", "a blue sky")
    (photo_dir / "2024" / "june").mkdir(parents=True)
    os.rename(photo_dir / "a.jpg", photo_dir / "garden.jpg")
    os.rename(photo_dir / "b.jpg", photo_dir / "2024" / "june" / "b.jpg")
    stats = library.scan()
    images = _images(library)
    assert sorted(images) == ["2024/june/b.jpg", "garden.jpg"]
    assert images["garden.jpg"].id == a_id and images["2024/june/b.jpg"].id == b_id
    assert (stats.moved, stats.new, stats.missing) == (2, 0, 0)
    assert _current_text(library, a_id) == "Grandma's garden"


def test_move_between_roots_and_across_scans(library: Library, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_jpeg(first / "a.jpg", seed=1)
    second.mkdir()
    root1 = library.add_root(first)
    root2 = library.add_root(second)
    library.scan()
    a_id = _caption(library, "a.jpg", "kept", human=True)
    shutil.move(first / "a.jpg", second / "a-renamed.jpg")
    # Only the destination is scanned first (as after a crash mid-way): the file is
    # recorded as new, and the old record is not yet known to be gone.
    library.scan([root2.id])
    assert len(_images(library)) == 2
    library.scan([root1.id])
    images = _images(library)
    assert list(images) == ["a-renamed.jpg"]
    assert images["a-renamed.jpg"].id == a_id and images["a-renamed.jpg"].root_id == root2.id
    assert _current_text(library, a_id) == "kept"


def test_duplicate_copy_is_not_a_move(library: Library, photo_dir: Path) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    library.scan([library.add_root(photo_dir).id])
    shutil.copy(photo_dir / "a.jpg", photo_dir / "copy.jpg")
    stats = library.scan()
    assert (stats.new, stats.moved) == (1, 0)
    assert len({i.id for i in _images(library).values()}) == 2


def test_bad_files_are_recorded_with_their_error(library: Library, photo_dir: Path) -> None:
    make_corpus(photo_dir)
    stats = library.scan([library.add_root(photo_dir).id])
    images = _images(library)
    assert images["zero.jpg"].state == "error" and "empty" in images["zero.jpg"].error
    assert images["notes.jpg"].state == "error" and "not an image" in images["notes.jpg"].error
    assert images["bomb.png"].state == "error" and "too large" in images["bomb.png"].error
    assert images["Café – 東京 🌸.jpg"].state == "ok"
    assert images["cmyk.jpg"].state == "ok" and images["deep.png"].state == "ok"
    assert stats.errors == 3


def test_symlink_loop_and_broken_link(library: Library, photo_dir: Path) -> None:
    write_jpeg(photo_dir / "inner" / "a.jpg", seed=1)
    os.symlink(photo_dir, photo_dir / "inner" / "loop")
    os.symlink(photo_dir / "nowhere.jpg", photo_dir / "broken.jpg")
    stats = library.scan([library.add_root(photo_dir).id])
    assert list(_images(library)) == ["inner/a.jpg"]
    assert any("symlink loop" in p for p in stats.problems)
    assert any("broken link" in p for p in stats.problems)


def test_unreadable_folder_is_reported_and_skipped(
    library: Library, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jpeg(photo_dir / "ok" / "a.jpg", seed=1)
    write_jpeg(photo_dir / "locked" / "b.jpg", seed=2)
    real_scandir = os.scandir

    def scandir(path):  # tests run as root in CI, where chmod 000 does not lock anything
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(scan_files.os, "scandir", scandir)
    stats = library.scan([library.add_root(photo_dir).id])
    assert list(_images(library)) == ["ok/a.jpg"]
    assert any("locked" in p and "Permission denied" in p for p in stats.problems)


def test_unplugged_root_does_not_mark_everything_missing(library: Library, tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    write_jpeg(drive / "a.jpg", seed=1)
    library.scan([library.add_root(drive).id])
    drive.rename(tmp_path / "elsewhere")
    stats = library.scan()
    assert stats.missing == 0 and _images(library)["a.jpg"].state == "ok"
    assert any("cannot read folder" in p for p in stats.problems)


class CancelAfter:
    """A cancel token that trips after *n* checks."""

    def __init__(self, n: int) -> None:
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_cancel_mid_scan_then_resume(library: Library, photo_dir: Path) -> None:
    for i in range(300):
        write_jpeg(photo_dir / f"{i:03}.jpg", seed=i, size=(16, 16))
    root = library.add_root(photo_dir)
    reports: list[Progress] = []
    stats = scanner.scan(library.db, [root.id], cancel=CancelAfter(2), batch_size=50, progress=reports.append)
    assert stats.cancelled
    partial = len(_images(library))
    assert 0 < partial < 300  # batches before the cancel were committed
    assert reports[-1].message == "Scan cancelled"
    stats = library.scan()
    assert not stats.cancelled and stats.unchanged == partial and stats.new == 300 - partial
    assert len(_images(library)) == 300 and stats.missing == 0
    assert [j.state for j in library.jobs("scan")] == ["done"]


def test_cancelled_scan_marks_nothing_missing(library: Library, photo_dir: Path) -> None:
    for i in range(200):
        write_jpeg(photo_dir / f"{i:03}.jpg", seed=i, size=(16, 16))
    library.scan([library.add_root(photo_dir).id])
    stats = library.scan(cancel=CancelAfter(1))
    assert stats.cancelled
    with library.db.read() as session:
        assert session.scalars(select(Image.state).distinct()).all() == ["ok"]
    assert library.jobs("scan")[-1].state == "cancelled"


def test_scan_from_a_thread_with_event(library: Library, photo_dir: Path) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    cancel = threading.Event()
    root = library.add_root(photo_dir)
    result = []
    worker = threading.Thread(target=lambda: result.append(library.scan([root.id], cancel=cancel)))
    worker.start()
    worker.join(30)
    assert result and result[0].new == 1


def test_nested_roots_are_refused(library: Library, photo_dir: Path) -> None:
    from core.library import LibraryError

    (photo_dir / "sub").mkdir()
    library.add_root(photo_dir)
    with pytest.raises(LibraryError, match="already in the library"):
        library.add_root(photo_dir / "sub")
    assert library.add_root(photo_dir).path == str(photo_dir.resolve())  # idempotent


def test_every_supported_format_is_scanned_and_decoded(library: Library, photo_dir: Path) -> None:
    from PIL import Image as PILImage

    from core.imaging import load_rgb

    red = PILImage.new("RGB", (40, 30), (200, 10, 10))
    expected = {"webp": "WEBP", "tif": "TIFF", "bmp": "BMP", "gif": "GIF", "avif": "AVIF", "heic": "HEIF", "png": "PNG"}
    for ext in expected:
        red.save(photo_dir / f"red.{ext}")
    library.scan([library.add_root(photo_dir).id])
    images = _images(library)
    for ext, fmt in expected.items():
        image = images[f"red.{ext}"]
        assert (image.state, image.format, image.width, image.height) == ("ok", fmt, 40, 30), ext
        r, g, b = load_rgb(photo_dir / f"red.{ext}").getpixel((20, 15))
        assert r > 180 and g < 40 and b < 40, ext


def test_library_inside_its_own_photo_folder_never_scans_its_own_files(tmp_path: Path) -> None:
    """The library file in the folder it catalogues: its thumbnail cache, models folder
    (versions, training runs) and SQLite companions are not photos, scan after scan."""
    from core.imaging import ensure_thumbnail
    from core.training.versions import models_dir, run_dir

    photos = tmp_path / "photos"
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        write_jpeg(photos / name, size=(48, 32), seed=len(name))
    with Library(photos / "library.db") as library:
        library.add_root(photos)
        for _ in range(3):
            library.scan()
            images = _images(library)
            assert sorted(images) == ["a.jpg", "b.jpg", "sub/c.jpg"]
            # What the window and training leave beside the library between scans.
            for image in images.values():
                ensure_thumbnail(library.image_path(image), image.fingerprint, library.cache_dir, 64)
            write_jpeg(models_dir(library) / "mine" / "sample.jpg", size=(16, 16), seed=1)
            write_jpeg(run_dir(library, "next") / "preview.png", size=(16, 16), seed=2)
        assert list(library.cache_dir.rglob("*.jpg")) and (photos / "library.db-wal").exists()
        assert library.scan().new == 0
