"""Each caption kind written to the metadata fields other tools read, and read back.

exiftool (Debian's ``libimage-exiftool-perl``) is the independent reader: it shares no
code with CaptionDesk's writer (pyexiv2/libexiv2).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from core import captions, metadata
from core.datasets.import_job import import_captions
from core.library import Library
from core.metadata import read_kinds, write_kinds
from core.metadata.keywords import keywords_from_fields, merge_keywords
from core.models import Caption, Image
from tests.support.library_helpers import images_by_path, make_photo, run_cli

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool not installed (apt-get install libimage-exiftool-perl)"
)
KINDS = {
    "caption": "Café – 東京の桜 at dusk",
    "alt_text": "Cherry blossoms over a canal at dusk, lanterns lit",
    "extended_description": "A long view down a canal in Tokyo. Pink cherry blossoms hang over the water; "
                            "paper lanterns glow along the left bank.",
    "title": "Sakura on the canal",
    "keywords": ["sunset", "Places|Japan|Tokyo", "Kirschblüte"],
}
EXISTING_KEYWORD = "from another tool"
EXIFTOOL_TAGS = (
    "-XMP-dc:Description", "-IPTC:Caption-Abstract", "-XMP-iptcCore:AltTextAccessibility",
    "-XMP-iptcCore:ExtDescrAccessibility", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject",
    "-XMP-digiKam:TagsList", "-IPTC:Keywords", "-XMP-dc:Title", "-IPTC:ObjectName",
)


def exiftool_read(path: Path) -> dict[str, object]:
    result = subprocess.run(
        [EXIFTOOL, "-j", "-a", "-G1", "-charset", "UTF8", "-charset", "iptc=UTF8", *EXIFTOOL_TAGS, str(path)],
        capture_output=True, text=True, encoding="utf-8", timeout=60, check=True,
    )
    return json.loads(result.stdout)[0]


def as_list(value: object) -> list[str]:
    """exiftool's JSON gives a one-item list as a plain value."""
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def array_types(path: Path) -> dict[str, str]:
    """The RDF array type (Bag/Seq/Alt) of each keyword property in *path*'s raw XMP, read by exiftool."""
    packet = subprocess.run([EXIFTOOL, "-b", "-XMP", str(path)], capture_output=True, timeout=60, check=True).stdout
    text = packet.decode("utf-8")
    return {
        name: match.group(1)
        for name in ("dc:subject", "lr:hierarchicalSubject", "digiKam:TagsList")
        if (match := re.search(rf"<{name}>\s*<rdf:(\w+)", text))
    }


def pixels(path: Path) -> tuple[str, tuple[int, int], bytes]:
    with PILImage.open(path) as im:
        return im.mode, im.size, im.tobytes()


def tag_with_existing_keywords(path: Path, iptc: bool) -> None:
    """Keywords another tool wrote before CaptionDesk (dc:subject and, where there is one, IPTC)."""
    import pyexiv2

    with pyexiv2.Image(str(path)) as image:
        image.modify_xmp({"Xmp.dc.subject": [EXISTING_KEYWORD]})
        if iptc:
            image.modify_iptc({"Iptc.Application2.Keywords": [EXISTING_KEYWORD]})


@needs_exiftool
@pytest.mark.parametrize("fmt", ["jpg", "png", "tif", "webp", "raw-sidecar"])
def test_every_kind_reads_back_exactly_through_exiftool(tmp_path: Path, fmt: str) -> None:
    has_iptc = fmt in ("jpg", "png", "tif")
    if fmt == "raw-sidecar":
        photo = tmp_path / "IMG_0001.CR2"
        photo.write_bytes(b"II*\x00 a camera raw file CaptionDesk never opens")
        original = photo.read_bytes()
    else:
        photo = make_photo(tmp_path / f"photo.{fmt}", seed=5)
        tag_with_existing_keywords(photo, has_iptc)
        before = pixels(photo)
    outcome = write_kinds(photo, KINDS)
    assert outcome.changed and set(outcome.kinds) == set(KINDS)
    if fmt == "raw-sidecar":
        # Lightroom's name for a RAW file's sidecar; the RAW file itself is never touched.
        assert outcome.target == tmp_path / "IMG_0001.xmp" and photo.read_bytes() == original
    else:
        assert outcome.target == photo and pixels(photo) == before
    existing = [] if fmt == "raw-sidecar" else [EXISTING_KEYWORD]
    keywords = [*KINDS["keywords"], *existing]  # the library's first, the photo's own kept after them
    leaves = ["sunset", "Tokyo", "Kirschblüte", *existing]

    tags = exiftool_read(outcome.target)
    assert tags["XMP-dc:Description"] == KINDS["caption"]
    assert tags["XMP-iptcCore:AltTextAccessibility"] == KINDS["alt_text"]
    assert tags["XMP-iptcCore:ExtDescrAccessibility"] == KINDS["extended_description"]
    assert tags["XMP-dc:Title"] == KINDS["title"]
    assert as_list(tags["XMP-dc:Subject"]) == leaves
    assert as_list(tags["XMP-lr:HierarchicalSubject"]) == keywords
    assert as_list(tags["XMP-digiKam:TagsList"]) == [k.replace("|", "/") for k in keywords]
    if has_iptc:
        assert tags["IPTC:Caption-Abstract"] == KINDS["caption"]
        assert tags["IPTC:ObjectName"] == KINDS["title"]
        assert as_list(tags["IPTC:Keywords"]) == leaves
    else:
        assert "IPTC:Keywords" not in tags
    assert array_types(outcome.target) == {"dc:subject": "Bag", "lr:hierarchicalSubject": "Bag",
                                           "digiKam:TagsList": "Seq"}

    found = read_kinds(photo)
    assert {kind: found[kind].value for kind in found} == {
        **{kind: value for kind, value in KINDS.items() if kind != "keywords"}, "keywords": tuple(keywords),
    }
    assert {f.location for f in found.values()} == {outcome.target}
    # Written again, nothing changes and the file is not rewritten.
    mtime = outcome.target.stat().st_mtime_ns
    assert not write_kinds(photo, KINDS).changed
    assert outcome.target.stat().st_mtime_ns == mtime


@needs_exiftool
def test_replace_keywords_drops_the_photos_own_and_merge_keeps_them(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "photo.jpg")
    tag_with_existing_keywords(photo, iptc=True)
    write_kinds(photo, {"keywords": ["Places|Japan|Tokyo"]})
    assert as_list(exiftool_read(photo)["IPTC:Keywords"]) == ["Tokyo", EXISTING_KEYWORD]
    outcome = write_kinds(photo, {"keywords": ["harbour"]}, replace_keywords=True)
    assert outcome.kinds == ("keywords",)
    tags = exiftool_read(photo)
    assert [as_list(tags[t]) for t in ("XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "IPTC:Keywords")] == [
        ["harbour"]] * 3
    assert read_kinds(photo, kinds=("keywords",))["keywords"].value == ("harbour",)


def test_a_short_text_kind_leaves_the_others_alone(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "photo.png")
    write_kinds(photo, {"caption": "a description", "alt_text": "an alt text"})
    outcome = write_kinds(photo, {"title": "only the title"})
    assert outcome.kinds == ("title",) and outcome.left_disagreeing == {}
    found = read_kinds(photo)
    assert {k: v.value for k, v in found.items()} == {
        "caption": "a description", "alt_text": "an alt text", "title": "only the title"}


def test_a_new_description_beside_an_old_alt_text_says_so(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "photo.jpg")
    write_kinds(photo, {"caption": "a dog on a beach", "alt_text": "A dog on a beach"})
    outcome = write_kinds(photo, {"caption": "two cats on a sofa"})
    assert outcome.left_disagreeing == {"alt_text": "A dog on a beach"}
    # The same description again leaves nothing new to disagree with.
    assert write_kinds(photo, {"caption": "two cats on a sofa"}).left_disagreeing == {}
    assert write_kinds(photo, {"caption": "a cat", "alt_text": "A cat"}).left_disagreeing == {}


@pytest.mark.parametrize(
    ("xmp", "iptc", "expected"),
    [
        # Lightroom: parents in dc:subject too, every keyword whole in hierarchicalSubject.
        ({"Xmp.dc.subject": ["Places", "Japan", "Tokyo", "dusk"],
          "Xmp.lr.hierarchicalSubject": ["Places|Japan|Tokyo", "dusk"]}, {}, ["Places|Japan|Tokyo", "dusk"]),
        # digiKam alone: "/" hierarchy.
        ({"Xmp.digiKam.TagsList": ["People/Family", "holiday"], "Xmp.dc.subject": ["Family", "holiday"]}, {},
         ["People|Family", "holiday"]),
        # An old tool's IPTC only, a word repeated in other case.
        ({}, {"Iptc.Application2.Keywords": ["Beach", "beach", "sea"]}, ["Beach", "sea"]),
        # XMP and IPTC disagree: nothing is lost.
        ({"Xmp.dc.subject": "single"}, {"Iptc.Application2.Keywords": ["other"]}, ["single", "other"]),
        ({}, {}, []),
    ],
)
def test_keywords_from_the_fields_other_tools_write(xmp: dict, iptc: dict, expected: list[str]) -> None:
    assert keywords_from_fields(xmp, iptc) == expected


def test_merge_keeps_order_and_drops_what_a_hierarchy_already_says() -> None:
    assert merge_keywords(["Places | Japan|Tokyo", "dusk"], ["Tokyo", "DUSK", "Japan", "boat"]) == [
        "Places|Japan|Tokyo", "dusk", "boat"]


def test_a_sidecars_kinds_are_read_even_when_the_photo_itself_cannot_be(tmp_path: Path) -> None:
    raw = tmp_path / "IMG_7.NEF"
    raw.write_bytes(b"not a file exiv2 can open")
    write_kinds(raw, {"caption": "a heron", "title": "Heron"})
    assert {k: v.value for k, v in read_kinds(raw).items()} == {"caption": "a heron", "title": "Heron"}


# -- the job, the CLI and the import, through the library ------------------------------------

LIBRARY_VALUES = {
    "caption": "Café – 東京の桜 at dusk",
    "alt_text": "Cherry blossoms over a canal at dusk",
    "extended_description": "A canal in Tokyo under pink cherry blossoms; lanterns glow on the left bank.",
    "title": "Sakura on the canal",
    "keywords": "sunset\nplaces|japan|tokyo\nkirschblüte",
}


def _current_values(library: Library) -> dict[str, dict[str, str]]:
    """rel_path → kind → current text, for every photo."""
    result: dict[str, dict[str, str]] = {}
    with library.db.read() as session:
        for rel_path, kind, text in session.execute(
            select(Image.rel_path, Caption.kind, Caption.text).join(Caption, Caption.image_id == Image.id)
            .where(Caption.is_current.is_(True))
        ):
            result.setdefault(rel_path, {})[kind] = text
    return result


@needs_exiftool
def test_write_metadata_then_import_metadata_gives_every_kind_back(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {"a.jpg": 1, "b.png": 2, "c.tif": 3, "d.webp": 4}
    for name, seed in names.items():
        make_photo(photo_dir / name, seed=seed)
    tag_with_existing_keywords(photo_dir / "a.jpg", iptc=True)
    before = {name: pixels(photo_dir / name) for name in names}
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            for kind, text in LIBRARY_VALUES.items():
                if image.rel_path == "d.webp" and kind == "title":
                    continue  # a photo without one kind: its field is left alone
                captions.set_human_caption(session, image.id, text, kind=kind)

    assert run_cli(["--library", str(library.path), "write-metadata"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "captions written into 4 files" in out and "by kind: caption 4, alt text 4" in out
    assert {name: pixels(photo_dir / name) for name in names} == before
    tags = exiftool_read(photo_dir / "a.jpg")
    assert tags["XMP-iptcCore:AltTextAccessibility"] == LIBRARY_VALUES["alt_text"]
    assert as_list(tags["XMP-lr:HierarchicalSubject"]) == ["sunset", "places|japan|tokyo", "kirschblüte",
                                                           EXISTING_KEYWORD]
    assert "XMP-dc:Title" not in exiftool_read(photo_dir / "d.webp")

    fresh = Library(tmp_path / "fresh.db")
    try:
        fresh.scan([fresh.add_root(photo_dir).id])
        stats = import_captions(fresh, "metadata", photo_dir)
        assert stats.errors == 0, stats.problems
        expected = {name: dict(LIBRARY_VALUES) for name in names}
        del expected["d.webp"]["title"]
        # The store keeps keywords lower-case, one a line; the photo's own keyword joined them.
        expected["a.jpg"]["keywords"] += "\n" + EXISTING_KEYWORD
        assert _current_values(fresh) == expected
        assert import_captions(fresh, "metadata", photo_dir).imported == 0  # again: nothing new

        # A person's value of a kind is never replaced by an import.
        with fresh.db.write() as session:
            image_id = images_by_path(fresh)["b.png"].id
            captions.set_human_caption(session, image_id, "my own alt text", kind="alt_text")
        import_captions(fresh, "metadata", photo_dir)
        assert _current_values(fresh)["b.png"]["alt_text"] == "my own alt text"
    finally:
        fresh.close()


def test_an_alt_text_the_library_lacks_is_listed_then_imported(library: Library, photo_dir: Path) -> None:
    import pyexiv2

    photo = make_photo(photo_dir / "dog.jpg")
    with pyexiv2.Image(str(photo)) as image:  # another tool's alt text, from an older description
        image.modify_xmp({"Xmp.iptc.AltTextAccessibility": {'lang="x-default"': "A dog asleep on a beach"}})
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        captions.add_model_caption(session, images_by_path(library)["dog.jpg"].id, "two cats on a sofa",
                                   model_name="m")
    stats = metadata.write_metadata(library)
    assert (stats.written, stats.left_disagreeing) == (1, 1)
    assert any("alt text 'A dog asleep on a beach' was left as it was" in p for p in stats.problems)
    import_captions(library, "metadata", photo_dir)
    assert _current_values(library)["dog.jpg"] == {"caption": "two cats on a sofa",
                                                   "alt_text": "A dog asleep on a beach"}
    # Now the library has it: the next write keeps both in step and lists nothing.
    again = metadata.write_metadata(library)
    assert (again.unchanged, again.left_disagreeing) == (1, 0)


def test_cli_kinds_and_replace_keywords(library: Library, photo_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    photo = make_photo(photo_dir / "p.jpg")
    tag_with_existing_keywords(photo, iptc=True)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        image_id = images_by_path(library)["p.jpg"].id
        captions.set_human_caption(session, image_id, "a harbour", kind="caption")
        captions.set_human_caption(session, image_id, "Harbour", kind="title")
        captions.set_human_caption(session, image_id, "boats", kind="keywords")
    argv = ["--library", str(library.path), "write-metadata"]
    assert run_cli([*argv, "--kinds", "title"], monkeypatch) == 0
    assert {k: v.value for k, v in read_kinds(photo).items()} == {"title": "Harbour",
                                                                  "keywords": (EXISTING_KEYWORD,)}
    assert run_cli([*argv, "--kinds", "keywords", "--replace-keywords"], monkeypatch) == 0
    assert read_kinds(photo, kinds=("keywords",))["keywords"].value == ("boats",)
    capsys.readouterr()
    assert run_cli([*argv, "--kinds", "caption,training_prompt"], monkeypatch) == 2
    assert "no metadata field for the kind 'training_prompt'" in capsys.readouterr().err
