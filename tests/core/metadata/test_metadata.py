"""Captions written into photo metadata, read back by independent readers.

Two readers that share no code with CaptionDesk's writer (pyexiv2/libexiv2):

* Pillow plus a few lines of parsing here — always runs;
* exiftool (Debian's ``libimage-exiftool-perl``) — the reference reader, when installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest
from PIL import Image as PILImage
from PIL import IptcImagePlugin
from sqlalchemy import select

from core import captions, metadata
from core.library import Library
from core.metadata import (
    MetadataError,
    read_caption,
    same_image_data,
    sidecar_path,
    write_caption,
)
from core.metadata import files as metadata_files
from core.models import Image
from tests.support.imagegen import write_jpeg
from tests.support.library_helpers import images_by_path, make_photo, run_cli, write_heic

CAPTION = "Café – 東京の桜 🌸 at dusk"
ASCII_CAPTION = "A red tram crossing a bridge"
EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool not installed (apt-get install libimage-exiftool-perl)"
)
IN_FILE_FORMATS = ["jpg", "png", "tif", "webp"]


# -- test images and independent readers -------------------------------------------------------


def pixels(path: Path) -> tuple[str, tuple[int, int], bytes]:
    with PILImage.open(path) as im:
        return im.mode, im.size, im.tobytes()


def _xmp_description(packet: bytes | str | None) -> str | None:
    if packet is None:
        return None
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    start, end = packet.index(b"<x:xmpmeta"), packet.index(b"</x:xmpmeta>") + len(b"</x:xmpmeta>")
    root = ElementTree.fromstring(packet[start:end])
    rdf = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
    for item in root.iter(f"{rdf}li"):
        if item.get("{http://www.w3.org/XML/1998/namespace}lang") == "x-default":
            return item.text
    return None


def _iim_records(data: bytes) -> dict[tuple[int, int], bytes]:
    """IPTC IIM datasets (record, dataset) → raw bytes, from wherever the block starts."""
    starts = [i for i in (data.find(b"\x1c\x01"), data.find(b"\x1c\x02")) if i >= 0]
    pos, records = min(starts), {}
    while pos + 5 <= len(data) and data[pos] == 0x1C:
        record, dataset = data[pos + 1], data[pos + 2]
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        records[(record, dataset)] = data[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return records


def pillow_read(path: Path) -> dict[str, object]:
    """XMP description, IPTC caption and charset (raw bytes), EXIF description and Make."""
    with PILImage.open(path) as im:
        info = im.info
        xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
        iptc = None
        if im.format in ("JPEG", "TIFF"):
            iptc = IptcImagePlugin.getiptcinfo(im)
        elif "Raw profile type iptc" in info:  # PNG: ImageMagick/exiv2 hex text chunk
            hex_lines = info["Raw profile type iptc"].strip().split("\n")[2:]
            iptc = _iim_records(bytes.fromhex("".join(hex_lines)))
        exif = im.getexif()
        make = exif.get(0x010F)
        if im.format == "TIFF":
            make = im.tag_v2.get(0x010F)
        return {
            "xmp": _xmp_description(xmp),
            "iptc_caption": (iptc or {}).get((2, 120)),
            "iptc_charset": (iptc or {}).get((1, 90)),
            "iptc": iptc or {},
            "exif": exif.get(0x010E) if im.format != "TIFF" else im.tag_v2.get(0x010E),
            "make": make,
        }


def exiftool_read(path: Path) -> dict[str, str]:
    result = subprocess.run(
        [EXIFTOOL, "-j", "-a", "-G1", "-charset", "UTF8", "-XMP-dc:Description", "-IPTC:Caption-Abstract",
         "-IPTC:CodedCharacterSet", "-IPTC:Keywords", "-IFD0:ImageDescription", "-IFD0:Make", "-XMP-xmp:Rating",
         str(path)],
        capture_output=True, text=True, encoding="utf-8", timeout=60, check=True,
    )
    return json.loads(result.stdout)[0]


# -- writing into files ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", IN_FILE_FORMATS)
def test_caption_in_file_reads_back_with_pillow_and_pixels_stay(tmp_path: Path, fmt: str) -> None:
    photo = make_photo(tmp_path / f"photo.{fmt}")
    before = pixels(photo)
    outcome = write_caption(photo, CAPTION)
    assert outcome.changed and outcome.in_file and outcome.target == photo
    assert pixels(photo) == before  # decoded pixels identical
    read = pillow_read(photo)
    assert read["xmp"] == CAPTION
    if fmt == "webp":
        assert read["iptc"] == {}  # WebP has no IPTC
    else:
        assert read["iptc_charset"] == b"\x1b%G"
        assert read["iptc_caption"].decode("utf-8") == CAPTION
    assert read["exif"] is None  # not ASCII: not in EXIF
    assert read["make"] == "TestCam"  # other metadata kept
    assert read_caption(photo).text == CAPTION
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left

    # Writing the same caption again changes nothing (the file is not rewritten).
    stat_before = photo.stat()
    assert not write_caption(photo, CAPTION).changed
    assert photo.stat().st_mtime_ns == stat_before.st_mtime_ns


def test_ascii_caption_goes_to_exif_and_a_later_non_ascii_one_removes_it(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "photo.jpg")
    write_caption(photo, ASCII_CAPTION)
    assert pillow_read(photo)["exif"] == ASCII_CAPTION
    write_caption(photo, CAPTION)
    read = pillow_read(photo)
    assert read["exif"] is None and read["xmp"] == CAPTION and read["make"] == "TestCam"


@needs_exiftool
@pytest.mark.parametrize("fmt", IN_FILE_FORMATS)
def test_exiftool_reads_the_written_captions(tmp_path: Path, fmt: str) -> None:
    photo = make_photo(tmp_path / f"photo.{fmt}", seed=3)
    before = pixels(photo)
    write_caption(photo, CAPTION)
    tags = exiftool_read(photo)
    assert tags["XMP-dc:Description"] == CAPTION
    if fmt != "webp":
        assert tags["IPTC:Caption-Abstract"] == CAPTION  # no mojibake
        assert tags["IPTC:CodedCharacterSet"] == "UTF8"
    assert "IFD0:ImageDescription" not in tags
    assert tags["IFD0:Make"] == "TestCam"
    write_caption(photo, ASCII_CAPTION)
    tags = exiftool_read(photo)
    assert tags["IFD0:ImageDescription"] == tags["XMP-dc:Description"] == ASCII_CAPTION
    assert pixels(photo) == before


def test_latin1_iptc_is_reencoded_when_the_utf8_marker_is_added(tmp_path: Path) -> None:
    import pyexiv2

    photo = make_photo(tmp_path / "photo.jpg")
    with pyexiv2.Image(str(photo)) as image:  # an old tool's Latin-1 IPTC, no marker
        image.modify_iptc({"Iptc.Application2.Keywords": ["Ärger", "plain"]}, encoding="iso-8859-1")
    assert pillow_read(photo)["iptc"][(2, 25)] in (b"\xc4rger", [b"\xc4rger", b"plain"])
    write_caption(photo, CAPTION)
    iptc = pillow_read(photo)["iptc"]
    keywords = iptc[(2, 25)]
    keywords = keywords if isinstance(keywords, list) else [keywords]
    assert "Ärger".encode() in keywords and iptc[(1, 90)] == b"\x1b%G"
    if EXIFTOOL:
        assert exiftool_read(photo)["IPTC:Keywords"] == ["Ärger", "plain"]


def test_symlinked_photo_is_updated_through_the_link(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "real" / "photo.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    write_caption(link, ASCII_CAPTION)
    assert link.is_symlink() and pillow_read(photo)["xmp"] == ASCII_CAPTION


# -- sidecars --------------------------------------------------------------------------------


def test_sidecar_mode_leaves_the_photo_byte_identical(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "photo.jpg")
    original, stat_before = photo.read_bytes(), photo.stat()
    outcome = write_caption(photo, CAPTION, sidecar=True)
    assert outcome.target == tmp_path / "photo.jpg.xmp" and not outcome.in_file
    assert photo.read_bytes() == original and photo.stat().st_mtime_ns == stat_before.st_mtime_ns
    assert _xmp_description(outcome.target.read_bytes()) == CAPTION
    assert read_caption(photo) == metadata.FoundCaption(CAPTION, "xmp", outcome.target)
    if EXIFTOOL:
        assert exiftool_read(outcome.target)["XMP-dc:Description"] == CAPTION


def test_heic_gets_a_sidecar_named_apart_from_its_jpeg_twin(tmp_path: Path) -> None:
    heic = write_heic(tmp_path / "IMG_0001.HEIC")
    write_jpeg(tmp_path / "IMG_0001.JPG", seed=1)
    original = heic.read_bytes()
    assert sidecar_path(heic) == tmp_path / "IMG_0001.HEIC.xmp"
    outcome = write_caption(heic, CAPTION)
    assert outcome.target == tmp_path / "IMG_0001.HEIC.xmp" and heic.read_bytes() == original
    assert _xmp_description(outcome.target.read_bytes()) == CAPTION
    lone = write_heic(tmp_path / "lone.heic")
    assert write_caption(lone, ASCII_CAPTION).target == tmp_path / "lone.heic.xmp"
    if EXIFTOOL:
        assert exiftool_read(outcome.target)["XMP-dc:Description"] == CAPTION


def test_existing_sidecar_keeps_its_other_properties(tmp_path: Path) -> None:
    heic = write_heic(tmp_path / "IMG_2.heic")
    (tmp_path / "IMG_2.xmp").write_text(
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5"/>'
        '</rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>',
        encoding="utf-8",
    )
    outcome = write_caption(heic, CAPTION)
    assert outcome.target == tmp_path / "IMG_2.xmp"
    packet = outcome.target.read_text(encoding="utf-8")
    assert _xmp_description(packet) == CAPTION
    assert 'Rating="5"' in packet or "<xmp:Rating>5</xmp:Rating>" in packet
    if EXIFTOOL:
        assert exiftool_read(outcome.target)["XMP-xmp:Rating"] == 5


def test_unparsable_sidecar_is_left_alone(tmp_path: Path) -> None:
    heic = write_heic(tmp_path / "x.heic")
    (tmp_path / "x.xmp").write_bytes(b"\x00\x01 not xml at all")
    with pytest.raises(MetadataError):
        write_caption(heic, CAPTION)
    assert (tmp_path / "x.xmp").read_bytes() == b"\x00\x01 not xml at all"


# -- safety -----------------------------------------------------------------------------------


def _flip_last_scan_byte(jpeg: bytes) -> bytes:
    data = bytearray(jpeg)
    data[-10] ^= 0x55  # inside the entropy-coded data, before the EOI marker
    return bytes(data)


def test_same_image_data_compares_pixels_not_metadata(tmp_path: Path) -> None:
    import pyexiv2

    for fmt in IN_FILE_FORMATS:
        photo = make_photo(tmp_path / f"p.{fmt}")
        before = photo.read_bytes()
        with pyexiv2.ImageData(before) as image:
            image.modify_xmp({"Xmp.dc.title": {'lang="x-default"': "retitled"}})
            after = image.get_bytes()
        assert after != before and same_image_data(before, after), fmt
    jpeg = (tmp_path / "p.jpg").read_bytes()
    assert not same_image_data(jpeg, _flip_last_scan_byte(jpeg))
    png = (tmp_path / "p.png").read_bytes()
    idat = png.index(b"IDAT") + 20
    assert not same_image_data(png, png[:idat] + bytes([png[idat] ^ 1]) + png[idat + 1 :])
    other = tmp_path / "q.tif"
    make_photo(other, seed=9)
    assert not same_image_data((tmp_path / "p.tif").read_bytes(), other.read_bytes())


def test_a_write_that_would_change_pixels_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyexiv2

    photo = make_photo(tmp_path / "photo.jpg")
    original = photo.read_bytes()

    class CorruptingImageData(pyexiv2.ImageData):  # a writer bug that touches the scan data
        def get_bytes(self) -> bytes:
            return _flip_last_scan_byte(super().get_bytes())

    monkeypatch.setattr(pyexiv2, "ImageData", CorruptingImageData)
    with pytest.raises(MetadataError, match="would change the image data"):
        write_caption(photo, CAPTION)
    assert photo.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["photo.jpg"]


def test_a_failed_replace_leaves_the_original_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = make_photo(tmp_path / "photo.png")
    original = photo.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(metadata_files.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_caption(photo, CAPTION)
    assert photo.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["photo.png"]


def test_permissions_are_kept(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "photo.jpg")
    os.chmod(photo, 0o640)
    write_caption(photo, CAPTION)
    assert photo.stat().st_mode & 0o777 == 0o640


# -- reading for import -------------------------------------------------------------------------


def test_read_caption_order_and_camera_boilerplate(tmp_path: Path) -> None:
    import pyexiv2

    boilerplate = make_photo(tmp_path / "olympus.jpg")
    with pyexiv2.Image(str(boilerplate)) as image:
        image.modify_exif({"Exif.Image.ImageDescription": "OLYMPUS DIGITAL CAMERA         "})
    assert read_caption(boilerplate) is None
    iptc_only = make_photo(tmp_path / "iptc.jpg")
    with pyexiv2.Image(str(iptc_only)) as image:
        image.modify_iptc({"Iptc.Application2.Caption": "from IPTC"})
    assert read_caption(iptc_only) == metadata.FoundCaption("from IPTC", "iptc", iptc_only)
    assert read_caption(make_photo(tmp_path / "none.png")) is None


# -- the job ------------------------------------------------------------------------------------


def test_write_metadata_job_counts_updates_records_and_goes_on_after_errors(
    library: Library, photo_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_photo(photo_dir / "tram.jpg", seed=1)
    make_photo(photo_dir / "sakura.png", seed=2)
    heic = write_heic(photo_dir / "phone.heic")
    make_photo(photo_dir / "gone.jpg", seed=3)
    make_photo(photo_dir / "broken.jpg", seed=4)
    library.scan([library.add_root(photo_dir).id])
    texts = {"tram.jpg": ASCII_CAPTION, "sakura.png": CAPTION, "phone.heic": "a phone photo",
             "gone.jpg": "gone", "broken.jpg": "broken"}
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            if image.rel_path == "sakura.png":
                captions.set_human_caption(session, image.id, texts[image.rel_path])
            else:
                captions.add_model_caption(session, image.id, texts[image.rel_path], model_name="m")
    (photo_dir / "gone.jpg").unlink()
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG any more")
    heic_bytes = heic.read_bytes()
    before = {name: pixels(photo_dir / name) for name in ("tram.jpg", "sakura.png")}

    code = run_cli(["--library", str(library.path), "write-metadata"], monkeypatch)
    captured = capsys.readouterr()
    assert code == 1  # broken.jpg could not be written
    assert "captions written into 2 files and 1 .xmp sidecar;" in captured.out
    assert "1 missing, 1 failed" in captured.out and "broken.jpg" in captured.err
    assert pillow_read(photo_dir / "tram.jpg")["exif"] == ASCII_CAPTION
    assert pillow_read(photo_dir / "sakura.png")["xmp"] == CAPTION
    assert _xmp_description((photo_dir / "phone.heic.xmp").read_bytes()) == "a phone photo"
    assert heic.read_bytes() == heic_bytes
    assert {name: pixels(photo_dir / name) for name in before} == before
    job = library.jobs("write-metadata")[-1]
    assert job.state == "done" and job.checkpoint["written"] == 2

    # The records follow the rewritten files: a scan sees nothing changed.
    records = images_by_path(library)
    for name in ("tram.jpg", "sakura.png"):
        assert records[name].size == (photo_dir / name).stat().st_size
    assert library.scan().changed == 1  # only broken.jpg, which was edited behind our back

    stats = metadata.write_metadata(library)
    assert (stats.written, stats.sidecars, stats.unchanged) == (0, 0, 3)
    verified = metadata.write_metadata(library, only="verified", sidecar=True)
    assert (verified.sidecars, verified.written) == (1, 0)
    assert _xmp_description((photo_dir / "sakura.png.xmp").read_bytes()) == CAPTION


def test_write_metadata_can_be_cancelled(library: Library, photo_dir: Path) -> None:
    for i in range(4):
        make_photo(photo_dir / f"{i}.jpg", seed=i)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            captions.add_model_caption(session, image.id, f"caption {image.rel_path}", model_name="m")

    class CancelAfterTwo:
        calls = 0

        def is_set(self) -> bool:
            self.calls += 1
            return self.calls > 2

    stats = metadata.write_metadata(library, cancel=CancelAfterTwo())
    assert stats.cancelled and stats.written == 2
    assert sum(read_caption(photo_dir / f"{i}.jpg") is not None for i in range(4)) == 2
    assert library.jobs("write-metadata")[-1].state == "cancelled"


def test_writing_metadata_never_moves_a_photo_between_splits(library: Library, photo_dir: Path) -> None:
    """The fingerprint changes with the file's bytes; the train/validation split must not."""
    from core.datasets.selection import iter_captioned_images
    from core.splits import assign_split
    from core.training import collect_training_data

    for i in range(24):
        make_photo(photo_dir / f"p{i:02}.jpg", seed=i)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            captions.set_human_caption(session, image.id, f"photo {image.rel_path}")

    def splits() -> tuple[dict[int, str], dict[int, str]]:
        data = collect_training_data(library, val_ratio=0.5)
        training = {e.image_id: e.split for e in data.train + data.validation}
        exported = {i.image_id: assign_split(i.split_key, 0.5) for i in iter_captioned_images(library.db)}
        return training, exported

    before = splits()
    old = {i.id: i.fingerprint for i in images_by_path(library).values()}
    assert before[0] == before[1] and set(before[0].values()) == {"train", "validation"}
    assert metadata.write_metadata(library).written == 24
    library.scan()
    new = {i.id: i.fingerprint for i in images_by_path(library).values()}
    assert all(new[i] != old[i] for i in old)  # every file was rewritten...
    # ...and by its new fingerprint alone some photos would have changed sides.
    assert any(assign_split(new[i], 0.5) != assign_split(old[i], 0.5) for i in old)
    assert splits() == before
    # Written again (a second edit), the key still is the first fingerprint.
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            captions.set_human_caption(session, image.id, f"edited {image.rel_path}")
    assert metadata.write_metadata(library).written == 24
    assert splits() == before
