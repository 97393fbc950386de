"""The photo information panel: camera, date, size, the description and keywords in the file.

The facts are read by :func:`core.metadata.read.read_photo_info` (tested here on a JPEG
written with real EXIF and XMP) and shown in a tab beside the caption panel.
"""

from __future__ import annotations

import pytest
from PIL import Image

from core.metadata.read import read_photo_info
from tests.support.gui_fakes import FakeEngine, build_library
from tests.support.window_helpers import make_window

WAIT = 10_000


def write_camera_jpeg(path, *, description: str | None = "Harbour at dawn", keywords=("boats", "harbour")):
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R6"
    if description:
        exif[0x010E] = description
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2024:05:01 06:12:30"
    sub[0x829A] = 0.004
    sub[0x829D] = 5.6
    sub[0x8827] = 200
    Image.new("RGB", (320, 200), (10, 90, 160)).save(path, exif=exif)
    if keywords:
        from core.metadata.exiv2 import open_image_file

        with open_image_file(path) as image:
            image.modify_xmp({"Xmp.dc.subject": list(keywords)})
    return path


def test_read_photo_info_reads_camera_date_exposure_description_keywords(tmp_path):
    info = read_photo_info(write_camera_jpeg(tmp_path / "harbour.jpg"))
    assert info.camera == "Canon EOS R6"
    assert info.taken == "2024:05:01 06:12:30"
    assert info.exposure == "1/250 s · f/5.6 · ISO 200"
    assert (info.width, info.height) == (320, 200)
    assert info.file_size and info.file_size > 0
    assert info.description == "Harbour at dawn"
    assert info.keywords == ("boats", "harbour")
    assert info.problem is None


def test_read_photo_info_names_what_it_cannot_read(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    info = read_photo_info(broken)
    assert info.file_size == len(b"not a jpeg at all")
    assert info.problem and "camera" in info.problem
    missing = read_photo_info(tmp_path / "gone.jpg")
    assert missing.problem and "gone.jpg" in missing.problem


@pytest.fixture
def window(qtbot, library, photo_dir, settings):
    write_camera_jpeg(photo_dir / "a_first" / "harbour.jpg")
    build_library(library, photo_dir, count=3, model_every=1, human_every=9, bad_files=0)
    win = make_window(qtbot, library, settings, FakeEngine(), size=(1280, 800))
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: win.image_review.current_image_id() is not None, timeout=WAIT)
    yield win
    win.shutdown()


def test_info_tab_follows_the_current_photo(qtbot, window):
    win = window
    row = next(r for r in range(win.model.rowCount()) if win.model.row_data(r).rel_path.endswith("harbour.jpg"))
    win.image_review.go_to_row(row)
    win.side_tabs.setCurrentWidget(win.info_panel)
    values = win.info_panel.values
    qtbot.waitUntil(lambda: values["camera"].text() == "Canon EOS R6", timeout=WAIT)
    assert values["keywords"].text() == "boats, harbour"
    assert values["description"].text() == "Harbour at dawn"
    assert values["size"].text().startswith("320×200")
    other = next(r for r in range(win.model.rowCount()) if r != row)
    win.image_review.go_to_row(other)
    qtbot.waitUntil(lambda: values["file"].text() == win.model.row_data(other).rel_path
                    and values["size"].text() != "Reading…", timeout=WAIT)
    assert values["camera"].text() == ""  # a generated photo has no camera: the row is hidden
    assert not values["camera"].isVisibleTo(win.info_panel)
