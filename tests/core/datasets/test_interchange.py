"""Interchange that other tools read right: sidecar names and RAW+JPEG
pairs, EXIF ImageDescription, COCO under a non-UTF-8 locale, no absolute paths in exports,
who wrote a caption surviving export → import, CJK-aware caption metrics."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from core import captions
from core.datasets.export_job import export_dataset
from core.datasets.import_job import import_captions
from core.datasets.writers.base import portable_model_ref
from core.library import Library
from core.metadata import read_caption, sidecar_path, write_caption, write_metadata
from core.models import Caption, CaptionSource, Image
from core.splits import assign_split
from core.training.metrics import bleu4, rouge_l, tokenize
from tests.support.imagegen import write_jpeg
from tests.support.library_helpers import current_captions, make_captioned_library, make_photo, run_cli

ABSOLUTE_MODEL = "/tmp/captiondesk-train-abc123/versions/holiday-v2"


def _library_with_sources(library: Library, photo_dir: Path) -> dict[str, str]:
    """Six photos: even ones captioned by a person, odd ones by a local (absolute-path) model."""
    for i in range(6):
        write_jpeg(photo_dir / f"p{i}.jpg", seed=300 + i)
    library.scan([library.add_root(photo_dir).id])
    sources = {}
    with library.db.write() as session:
        for number, image in enumerate(session.scalars(select(Image).order_by(Image.rel_path))):
            if number % 2 == 0:
                captions.set_human_caption(session, image.id, f"a person wrote {number}")
                sources[image.rel_path] = CaptionSource.HUMAN.value
            else:
                captions.add_model_caption(session, image.id, f"a model wrote {number}", model_name=ABSOLUTE_MODEL,
                                           adapter="/home/someone/adapters/style-lora", score=-0.4)
                sources[image.rel_path] = CaptionSource.MODEL.value
    return sources


# -- sidecars and RAW+JPEG pairs ----------------------------------------------------------


def test_sidecar_naming_is_a_choice_with_auto_as_default(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "a" / "photo.jpg")
    assert sidecar_path(photo) == photo.with_name("photo.jpg.xmp")
    assert sidecar_path(photo, "stem") == photo.with_suffix(".xmp")
    assert sidecar_path(photo, "full") == photo.with_name("photo.jpg.xmp")
    with pytest.raises(ValueError):
        sidecar_path(photo, "other")
    outcome = write_caption(photo, "a full-name sidecar", sidecar=True, sidecar_naming="full")
    assert outcome.target == photo.with_name("photo.jpg.xmp")
    assert read_caption(photo).location == outcome.target


def test_raw_jpeg_pair_never_shares_a_sidecar(library: Library, photo_dir: Path) -> None:
    jpeg = make_photo(photo_dir / "IMG_2.JPG")
    (photo_dir / "IMG_2.CR2").write_bytes(b"II*\x00 pretend raw")
    lightroom = photo_dir / "IMG_2.xmp"  # Lightroom's sidecar of the RAW
    write_caption(make_photo(photo_dir / "other.jpg"), "the raw's description", sidecar=True, sidecar_naming="stem")
    (photo_dir / "other.xmp").rename(lightroom)
    before = lightroom.read_bytes()
    # Import: the RAW's sidecar is not the JPEG's caption.
    assert read_caption(jpeg) is None or read_caption(jpeg).location != lightroom
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        image_id = session.scalar(select(Image.id).where(Image.rel_path == "IMG_2.JPG"))
        captions.set_human_caption(session, image_id, "the jpeg's own caption")
    stats = write_metadata(library, sidecar=True, sidecar_naming="stem")
    assert stats.errors == 0
    assert lightroom.read_bytes() == before  # the RAW's sidecar untouched
    own = photo_dir / "IMG_2.JPG.xmp"
    assert own.is_file()
    found = read_caption(jpeg)
    assert (found.text, found.location) == ("the jpeg's own caption", own)


def test_cli_write_metadata_sidecar_naming(library: Library, photo_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    photo = make_photo(photo_dir / "solo.jpg")
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        captions.set_human_caption(session, session.scalar(select(Image.id)), "a solo photo")
    library.close()
    db = str(tmp_path / "library.db")
    assert run_cli(["--library", db, "write-metadata", "--sidecar", "--sidecar-naming", "full"], monkeypatch) == 0
    assert (photo_dir / "solo.jpg.xmp").is_file() and not (photo_dir / "solo.xmp").exists()
    assert photo.read_bytes() == make_photo(tmp_path / "again" / "solo.jpg").read_bytes()  # photo untouched


def test_default_sidecar_names_follow_the_file_type(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    # darktable and digiKam look for photo.heic.xmp; Lightroom and Capture One read photo.xmp of RAW files only.
    for name in ("phone.heic", "anim.gif", "scan.bmp", "photo.jpg"):
        assert sidecar_path(photo_dir / name) == photo_dir / f"{name}.xmp"
    for name in ("IMG_1.CR2", "DSC_2.nef", "L1000.DNG"):
        assert sidecar_path(photo_dir / name) == (photo_dir / name).with_suffix(".xmp")
    # A stem sidecar written before is updated, never joined by a second one.
    old = make_photo(photo_dir / "old.jpg")
    write_caption(old, "written with the stem name", sidecar=True, sidecar_naming="stem")
    assert sidecar_path(old) == photo_dir / "old.xmp"
    # import metadata finds a sidecar under either name.
    stem_photo, full_photo = make_photo(photo_dir / "lr.png"), make_photo(photo_dir / "dk.png")
    write_caption(stem_photo, "a lightroom style sidecar", sidecar=True, sidecar_naming="stem")
    write_caption(full_photo, "a darktable style sidecar", sidecar=True)
    assert (photo_dir / "lr.xmp").is_file() and (photo_dir / "dk.png.xmp").is_file()
    library.scan([library.add_root(photo_dir).id])
    stats = import_captions(library, "metadata", photo_dir)
    assert stats.errors == 0
    assert {k: v[0] for k, v in current_captions(library).items() if k in {"lr.png", "dk.png", "old.jpg"}} == {
        "lr.png": "a lightroom style sidecar", "dk.png": "a darktable style sidecar",
        "old.jpg": "written with the stem name",
    }


def test_sidecar_naming_choices_in_cli_and_settings(tmp_path: Path) -> None:
    from PySide6.QtCore import QSettings

    from captiondesk import dataset_commands
    from core import metadata
    from desktop_app.app_settings import AppSettings

    assert dataset_commands.SIDECAR_NAMINGS == metadata.SIDECAR_NAMINGS
    assert dataset_commands.DEFAULT_SIDECAR_NAMING == metadata.DEFAULT_SIDECAR_NAMING == "auto"
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert settings.sidecar_naming == "auto"
    settings.sidecar_naming = "full"
    settings.sync()
    again = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert again.sidecar_naming == "full"
    with pytest.raises(ValueError):
        settings.sidecar_naming = "photo.xmp"


def test_non_ascii_caption_reports_the_exif_description_it_removes(library: Library, photo_dir: Path) -> None:
    photo = make_photo(photo_dir / "old.jpg")
    write_caption(photo, "An old ASCII description")
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        captions.set_human_caption(session, session.scalar(select(Image.id)), "東京の桜")
    stats = write_metadata(library)
    assert stats.written == 1 and stats.exif_descriptions_removed == 1
    assert any("An old ASCII description" in p and "removed" in p for p in stats.problems)
    assert read_caption(photo).text == "東京の桜"


# -- datasets ---------------------------------------------------------------------------


def test_coco_json_is_ascii_and_loads_under_a_latin1_locale(library: Library, photo_dir: Path,
                                                            tmp_path: Path) -> None:
    write_jpeg(photo_dir / "x.jpg", seed=1)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        captions.set_human_caption(session, session.scalar(select(Image.id)), "Café – 東京の桜 🌸")
    out = tmp_path / "coco"
    export_dataset(library, "coco", out, val_ratio=0.0)
    annotation = out / "annotations" / "captions_train.json"
    annotation.read_bytes().decode("ascii")
    # pycocotools opens with the locale's encoding: force a non-UTF-8 one in a child.
    code = (
        "import builtins, json\n"
        "real_open = builtins.open\n"
        "def cp1252_open(file, mode='r', *args, **kwargs):\n"
        "    if 'b' not in mode:\n"
        "        kwargs.setdefault('encoding', 'cp1252')\n"
        "    return real_open(file, mode, *args, **kwargs)\n"
        "builtins.open = cp1252_open\n"
        "from pycocotools.coco import COCO\n"
        f"c = COCO({str(annotation)!r})\n"
        "print(json.dumps([a['caption'] for a in c.dataset['annotations']]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["Café – 東京の桜 🌸"]


def test_exports_hold_no_absolute_local_paths(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    from core.datasets.writers import EXPORT_FORMATS
    from core.datasets.writers.base import portable_origin

    _library_with_sources(library, photo_dir)
    # Captions imported from sidecars record where they came from (an absolute path).
    write_jpeg(photo_dir / "album" / "new.jpg", seed=320)
    (photo_dir / "album" / "new.txt").write_text("a caption from a sidecar", encoding="utf-8")
    library.scan()
    assert import_captions(library, "sidecar", photo_dir).imported == 1
    with library.db.read() as session:
        assert session.scalar(select(Caption.origin).where(Caption.origin.is_not(None))).startswith(
            f"sidecar:{photo_dir}"
        )
    assert portable_model_ref("Salesforce/blip-image-captioning-base") == "Salesforce/blip-image-captioning-base"
    assert portable_model_ref("C:\\Users\\me\\models\\v1") == "v1"
    assert portable_origin("csv:/home/me/data/captions.csv", "/home/me/photos") == "csv:captions.csv"
    assert portable_origin("sidecar:C:\\Photos\\a\\x.txt", "C:\\Photos") == "sidecar:a/x.txt"
    assert portable_origin("xmp", "/home/me/photos") == "xmp"
    forbidden = {str(tmp_path), str(photo_dir), str(Path.home()), "/tmp/", "/home/"}
    for fmt in EXPORT_FORMATS:
        out = tmp_path / f"out-{fmt}"
        export_dataset(library, fmt, out, folder=photo_dir, val_ratio=0.3)
        files = [file for file in out.rglob("*") if file.is_file()]
        assert files, fmt
        for file in files:
            data = file.read_bytes()
            assert not [p for p in forbidden if p.encode("utf-8") in data], file
            if file.suffix == ".parquet":  # strings may sit compressed: look at the values too
                for column in pq.read_table(file).to_pylist():
                    values = [v for v in column.values() if isinstance(v, str)]
                    assert not [v for v in values for p in forbidden if p in v], file
    rows = list(csv.DictReader(open(tmp_path / "out-csv" / "captions.csv", encoding="utf-8")))
    assert {r["model_name"] for r in rows if r["source"] == "model"} == {"holiday-v2"}
    assert {r["adapter"] for r in rows if r["source"] == "model"} == {"style-lora"}
    assert {r["origin"] for r in rows if r["origin"]} == {"sidecar:album/new.txt"}
    tables = [pq.read_table(f) for f in (tmp_path / "out-parquet" / "data").glob("*.parquet")]
    assert not any(v and v.startswith("/") for t in tables for v in t.column("model_name").to_pylist())
    assert {v for t in tables for v in t.column("origin").to_pylist() if v} == {"sidecar:album/new.txt"}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "imagefolder"])
def test_who_wrote_a_caption_survives_export_and_import(fmt: str, library: Library, photo_dir: Path,
                                                        tmp_path: Path) -> None:
    sources = _library_with_sources(library, photo_dir)
    out = tmp_path / "dataset"
    export_dataset(library, fmt, out, val_ratio=0.0)
    # Another library over the same photos.
    other = Library(tmp_path / "other.db")
    try:
        other.scan([other.add_root(photo_dir).id])
        stats = import_captions(other, fmt, out, honour_source=True)
        assert stats.imported == 6 and stats.errors == 0
        got = current_captions(other)
        verified = {path for path, (_text, source) in got.items() if source == CaptionSource.HUMAN.value}
        assert verified == {p for p, s in sources.items() if s == "human"}
        assert all(got[p][1] == CaptionSource.IMPORT.value for p, s in sources.items() if s == "model")
        with other.db.read() as session:
            details = [c.provenance.extra for c in session.scalars(select(Caption))]
        assert {d.get("written_by") for d in details} == {"human", "model"}
    finally:
        other.close()
    # Without the option, nothing is verified (the old behaviour, unchanged).
    third = Library(tmp_path / "third.db")
    try:
        third.scan([third.add_root(photo_dir).id])
        import_captions(third, fmt, out)
        assert {s for _t, s in current_captions(third).values()} == {CaptionSource.IMPORT.value}
    finally:
        third.close()


# -- metrics ------------------------------------------------------------------------------


def test_cjk_captions_are_tokenized_by_character() -> None:
    assert tokenize("赤い車。") == ["赤", "い", "車"]
    assert tokenize("A red car, on the road!") == ["a", "red", "car", "on", "the", "road"]
    assert tokenize("빨간 자동차") == ["빨간", "자동차"]  # Korean separates words with spaces
    hyp, ref = "赤い車が道路を走っている", "赤い車が道を走っている"
    assert rouge_l([hyp], [ref]) > 0.9
    assert bleu4([hyp], [ref]) > 0.5
    assert rouge_l([hyp], ["青い空に白い雲"]) < 0.3


# -- kohya sd-scripts layout ------------------------------------------------------------------

#: sd-scripts library/train_util.py: IMAGE_EXTENSIONS, matched by exact suffix.
SD_SCRIPTS_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"}


def _sd_scripts_discovery(train_data_dir: Path, caption_extension: str = ".txt") -> dict[str, tuple[int, str]]:
    """What sd-scripts' DreamBooth dataset sees under --train_data_dir: image → (repeats, caption).

    Mirrors its rules: only sub-folders named ``<repeats>_<name>`` (others ignored), each
    folder's direct files with an image extension (no recursion), caption file
    ``os.path.splitext(image)[0] + caption_extension`` (first line).
    """
    seen = {}
    for folder in sorted(train_data_dir.iterdir()):
        if not folder.is_dir():
            continue
        head, _, _name = folder.name.partition("_")
        try:
            repeats = int(head)
        except ValueError:
            continue  # sd-scripts: "ignore directory without repeats"
        for image in sorted(folder.iterdir()):
            if image.is_file() and image.suffix in SD_SCRIPTS_IMAGE_EXTENSIONS:
                caption_file = Path(str(image)[: -len(image.suffix)] + caption_extension)
                caption = caption_file.read_text(encoding="utf-8").splitlines()[0] if caption_file.is_file() else ""
                seen[f"{folder.name}/{image.name}"] = (repeats, caption)
    return seen


def test_kohya_layout_is_what_sd_scripts_discovers(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    import tomllib

    from PIL import Image as PILImage

    from tests.support.library_helpers import make_captioned_library

    texts = make_captioned_library(library, photo_dir, count=12)  # 12 JPEGs in 3 sub-folders + a HEIC
    for name in ("scan.tif", "anim.gif"):
        PILImage.new("RGB", (40, 30), (10, 200, 30)).save(photo_dir / name)
    library.scan()
    with library.db.write() as session:
        for name in ("scan.tif", "anim.gif"):
            image_id = session.scalar(select(Image.id).where(Image.rel_path == name))
            captions.set_human_caption(session, image_id, f"a green {name}")
            texts[name] = f"a green {name}"
    # The plain sidecar layout: sd-scripts sees nothing (no repeats prefix, sub-folders).
    plain = tmp_path / "plain"
    export_dataset(library, "sidecar", plain, val_ratio=0.25)
    assert _sd_scripts_discovery(plain / "train") == {}
    out = tmp_path / "kohya"
    stats = export_dataset(library, "kohya", out, val_ratio=0.25)
    assert stats.exported == len(texts) == 15 and stats.validation > 0
    seen_total = 0
    for split, count in (("train", stats.train), ("validation", stats.validation)):
        seen = _sd_scripts_discovery(out / split)
        assert len(seen) == count  # every exported image, none skipped
        seen_total += len(seen)
        assert {caption for _repeats, caption in seen.values()} <= {" ".join(t.splitlines()) for t in texts.values()}
        for name in seen:
            with PILImage.open(out / split / name) as im:
                im.load()
    assert seen_total == 15
    # One config, of the train split: sd-scripts trains on every --dataset_config it gets,
    # so the held-out images are in none.
    assert sorted(p.name for p in out.glob("*.toml")) == ["dataset_train.toml"]
    text = (out / "dataset_train.toml").read_text(encoding="utf-8")
    config = tomllib.loads(text)
    assert config["general"]["caption_extension"] == ".txt"
    (dataset,) = config["datasets"]
    (subset,) = dataset["subsets"]
    assert subset["image_dir"] == "train/1_captions" and subset["num_repeats"] == 1
    assert (out / subset["image_dir"]).is_dir()
    assert "validation/1_captions/ are in no config" in text


# -- the split of a photo across libraries -----------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_a_photo_keeps_its_split_in_a_new_library_after_write_metadata(
    suffix: str, library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    from core.datasets.selection import iter_captioned_images
    from core.fingerprint import image_data_key

    for i in range(24):
        make_photo(photo_dir / f"p{i:02}{suffix}", seed=i)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            captions.set_human_caption(session, image.id, f"photo {image.rel_path} 東京")

    def splits(lib: Library) -> dict[str, str]:
        return {i.rel_path: assign_split(i.split_key, 0.5) for i in iter_captioned_images(lib.db)}

    before = splits(library)
    keys = {p.name: image_data_key(p) for p in photo_dir.iterdir()}
    assert all(k is not None for k in keys.values()) and len(set(keys.values())) == 24
    assert write_metadata(library).written == 24
    assert {p.name: image_data_key(p) for p in photo_dir.iterdir()} == keys  # metadata aside, same data
    other = Library(tmp_path / "other.db")  # first sees the photos after the write
    try:
        other.scan([other.add_root(photo_dir).id])
        import_captions(other, "metadata", photo_dir)
        assert splits(other) == before
        assert set(before.values()) == {"train", "validation"}
    finally:
        other.close()
    library.scan()
    assert splits(library) == before


def test_image_data_key_follows_pixels_not_metadata(tmp_path: Path) -> None:
    from core.fingerprint import image_data_key

    a = make_photo(tmp_path / "a.jpg", seed=1)
    b = make_photo(tmp_path / "b.jpg", seed=2)
    assert image_data_key(a) != image_data_key(b)
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(a.read_bytes())
    write_caption(copy, "a caption written by another tool")
    assert copy.read_bytes() != a.read_bytes() and image_data_key(copy) == image_data_key(a)
    (tmp_path / "x.txt").write_bytes(b"not an image")
    assert image_data_key(tmp_path / "x.txt") is None


# -- photo metadata that other tools read right ------------------------------------------------


def _scan_data(jpeg: bytes) -> bytes:
    """The entropy-coded data: everything from the first start-of-scan marker on."""
    return jpeg[jpeg.index(b"\xff\xda"):]


def test_jpeg_with_a_comment_is_written_with_its_pixels_and_comment(library: Library, photo_dir: Path) -> None:
    from PIL import Image as PILImage

    from core.metadata import same_image_data

    photo = write_jpeg(photo_dir / "commented.jpg", seed=7, comment=b"scanned by grandpa, 1972")
    before = photo.read_bytes()
    with PILImage.open(photo) as im:
        pixels_before = im.tobytes()
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        image_id = session.scalar(select(Image.id))
        captions.set_human_caption(session, image_id, "a birthday cake on a table")
    preview = write_metadata(library, dry_run=True)
    assert (preview.written, preview.errors) == (1, 0), preview.problems
    assert photo.read_bytes() == before  # a preview writes nothing
    stats = write_metadata(library)
    assert (stats.written, stats.errors) == (1, 0), stats.problems
    after = photo.read_bytes()
    assert after != before and _scan_data(after) == _scan_data(before)
    with PILImage.open(photo) as im:
        assert im.tobytes() == pixels_before
        assert im.info["comment"].rstrip(b"\0") == b"scanned by grandpa, 1972"
    assert read_caption(photo).text == "a birthday cake on a table"
    # The check still notices a comment that a writer dropped.
    start = after.index(b"\xff\xfe")
    dropped = after[:start] + after[start + 2 + int.from_bytes(after[start + 2 : start + 4], "big"):]
    assert not same_image_data(before, dropped)


def test_long_caption_is_cut_in_iptc_only_at_a_character_boundary(library: Library, photo_dir: Path) -> None:
    import pyexiv2
    from PIL import Image as PILImage
    from PIL import IptcImagePlugin

    from core.metadata import IPTC_CAPTION_MAX_BYTES

    photo = write_jpeg(photo_dir / "long.jpg", seed=8)
    # 1999 ASCII bytes, then 3-byte characters: byte 2000 falls inside the first of them.
    text = "a" * 1999 + "東京の桜" * 300
    assert len(text.encode("utf-8")) > 3500
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        captions.set_human_caption(session, session.scalar(select(Image.id)), text)
    stats = write_metadata(library)
    assert (stats.written, stats.errors, stats.iptc_truncated) == (1, 0, 1)
    assert any("long.jpg" in p and "IPTC" in p for p in stats.problems)
    with PILImage.open(photo) as im:
        iptc = IptcImagePlugin.getiptcinfo(im)
    raw = iptc[(2, 120)]
    assert len(raw) <= IPTC_CAPTION_MAX_BYTES
    assert raw.decode("utf-8") == "a" * 1999  # no half character at the end
    with pyexiv2.Image(str(photo)) as image:
        assert image.read_xmp()["Xmp.dc.description"]['lang="x-default"'] == text
        assert image.read_iptc(encoding="utf-8")["Iptc.Application2.Caption"] == "a" * 1999
    assert read_caption(photo).text == text
    again = write_metadata(library)  # the cut IPTC caption is up to date, not rewritten
    assert (again.written, again.unchanged) == (0, 1)


# -- what each trainer finds in a sidecar export -------------------------------------------------

#: OneTrainer modules/util/path_util.py: SUPPORTED_IMAGE_EXTENSIONS, compared lower-cased.
ONETRAINER_IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}
#: ai-toolkit toolkit/data_loader.py: image_extensions, matched with file.lower().endswith(...).
AI_TOOLKIT_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def _read_caption(image: Path, extension: str) -> str | None:
    caption_file = Path(os.path.splitext(image)[0] + extension)
    return caption_file.read_text(encoding="utf-8") if caption_file.is_file() else None


def _onetrainer_discovery(concept_path: Path) -> dict[str, str | None]:
    """What OneTrainer's default concept reads: image name → caption file text.

    modules/util/config/ConceptConfig.py defaults: include_subdirectories=False (only the
    folder's own files), text.prompt_source "sample" (``os.path.splitext(path)[0] + ".txt"``,
    one variant per line); images by path_util.is_supported_image_extension.
    """
    return {
        image.name: _read_caption(image, ".txt")
        for image in sorted(concept_path.iterdir())
        if image.is_file() and image.suffix.lower() in ONETRAINER_IMAGE_EXTENSIONS
    }


def _ai_toolkit_discovery(folder_path: Path, caption_ext: str = "txt") -> dict[str, str | None]:
    """What ai-toolkit's AiToolkitDataset reads: path relative to *folder_path* → caption text.

    toolkit/data_loader.py: ``os.walk(dataset_path)``, files whose lower-cased name ends with
    an image extension and that do not start with ".", minus files in a ``_controls`` folder;
    the caption is ``os.path.splitext(path)[0] + "." + caption_ext`` (dataloader_mixins.py).
    """
    found = {}
    for root, _dirs, files in os.walk(folder_path):
        for file in files:
            if file.lower().endswith(AI_TOOLKIT_IMAGE_EXTENSIONS) and not file.startswith("."):
                path = Path(root) / file
                if path.parent.name != "_controls":
                    found[path.relative_to(folder_path).as_posix()] = _read_caption(path, "." + caption_ext)
    return found


def _sd_scripts_subset(image_dir: Path, caption_extension: str = ".txt") -> dict[str, str | None]:
    """What sd-scripts reads from a --dataset_config subset's image_dir: its direct files with an
    IMAGE_EXTENSIONS suffix (exact spelling, glob_images), caption ``<stem><caption_extension>``."""
    return {
        image.name: _read_caption(image, caption_extension)
        for image in sorted(image_dir.iterdir())
        if image.is_file() and image.suffix in SD_SCRIPTS_IMAGE_EXTENSIONS
    }


DISCOVERY = {"onetrainer": _onetrainer_discovery, "ai-toolkit": _ai_toolkit_discovery, "kohya": _sd_scripts_subset}


def _trainer_library(library: Library, photo_dir: Path) -> dict[str, str]:
    """JPEGs in sub-folders, a HEIC, and the formats some trainers skip: TIFF, GIF, BMP, and a
    folder ai-toolkit leaves out.  rel_path → caption."""
    from PIL import Image as PILImage

    texts = make_captioned_library(library, photo_dir, count=4)
    extra = {"scan.tif": "TIFF", "anim.gif": "GIF", "old.bmp": "BMP", "_controls/pose.png": "PNG",
             "UPPER.JPEG": "JPEG"}
    for name, kind in extra.items():
        (photo_dir / name).parent.mkdir(exist_ok=True)
        PILImage.new("RGB", (40, 30), (10, 20 * len(name), 30)).save(photo_dir / name, kind)
    library.scan()
    with library.db.write() as session:
        for name in extra:
            image_id = session.scalar(select(Image.id).where(Image.rel_path == name))
            texts[name] = f"a small {name} with\na second line"
            captions.set_human_caption(session, image_id, texts[name])
    return texts


def _library_names(found: dict[str, str | None], texts: dict[str, str]) -> dict[str, str | None]:
    """The library photo each found file stands for (core.datasets.naming, mapped back) → caption."""
    from core.datasets.naming import library_name_candidates

    result = {}
    for name, caption in found.items():
        (rel,) = [c for c in library_name_candidates(name) if c in texts]
        result[rel] = caption
    return result


@pytest.mark.parametrize(("fmt", "trainer"), [
    ("sidecar", "onetrainer"), ("sidecar", "ai-toolkit"), ("sidecar", "kohya"), ("kohya", "ai-toolkit"),
])
def test_each_trainer_finds_every_exported_image_with_its_caption(
    fmt: str, trainer: str, library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    from core.datasets.naming import export_caption_line

    texts = _trainer_library(library, photo_dir)
    out = tmp_path / "out"
    stats = export_dataset(library, fmt, out, consumer=trainer, val_ratio=0.25)
    assert stats.exported == len(texts) == 10 and stats.unread == 0 and stats.validation > 0
    assert not [p for p in stats.problems if "would not find" in p]
    found: dict[str, str | None] = {}
    for split in ("train", "validation"):
        folder = out / split / ("1_captions" if fmt == "kohya" else "")
        found.update(_library_names(DISCOVERY[trainer](folder), texts))
    assert found == {rel: export_caption_line(text) for rel, text in texts.items()}
    if trainer != "ai-toolkit":  # converted to formats the trainer reads, still pictures
        from PIL import Image as PILImage

        with PILImage.open(out / "train" / ("1_captions" if fmt == "kohya" else "") / "old.bmp") as im:
            assert im.format == "BMP"  # BMP is read by OneTrainer and sd-scripts: left as it is


def test_a_layout_a_trainer_would_miss_is_one_warning_per_image(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    texts = _trainer_library(library, photo_dir)
    for trainer, options in (("onetrainer", {"flatten": False, "convert_to": "none"}),
                             ("ai-toolkit", {"convert_to": "none"})):
        out = tmp_path / trainer
        stats = export_dataset(library, "sidecar", out, consumer=trainer, val_ratio=0.25, **options)
        found = set()
        for split in ("train", "validation"):
            if (out / split).is_dir():
                found |= set(_library_names(DISCOVERY[trainer](out / split), texts))
        missed = set(texts) - found
        assert missed and stats.unread == len(missed)
        warned = [p for p in stats.problems if "would not find it" in p]
        assert len(warned) == len(missed)
        assert {rel for rel in missed if any(f"{photo_dir / rel}:" in line for line in warned)} == missed
    # Without a trainer named, the plain layout is unchanged (sub-folders and formats kept).
    plain = export_dataset(library, "sidecar", tmp_path / "plain", val_ratio=0.25)
    assert plain.unread == 0 and any((tmp_path / "plain" / s / "album0").is_dir() for s in ("train", "validation"))


def test_trainer_options_that_cannot_work_are_refused(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    from core.datasets.errors import ExportError

    make_captioned_library(library, photo_dir, count=2)
    refused = [
        ("sidecar", {"consumer": "onetrainer", "caption_extension": ".caption"}, "OneTrainer reads captions from .txt"),
        ("csv", {"consumer": "onetrainer"}, "options of the sidecar and kohya formats"),
        ("kohya", {"variants": True}, "--variants is for the sidecar format"),
        ("kohya", {"flatten": False}, "always flat"),
        ("sidecar", {"consumer": "lora-trainer-9000"}, "unknown trainer"),
    ]
    for fmt, options, message in refused:
        with pytest.raises(ExportError, match=message):
            export_dataset(library, fmt, tmp_path / "never", **options)
        assert not (tmp_path / "never").exists()


def test_cli_export_for_a_trainer_warns_about_what_it_would_skip(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    texts = _trainer_library(library, photo_dir)
    library.close()
    db = str(tmp_path / "library.db")
    out = tmp_path / "ot"
    assert run_cli(["--library", db, "export", "sidecar", str(out), "--for", "onetrainer", "--json"], monkeypatch) == 0
    captured = capsys.readouterr()
    assert "would not find" not in captured.err
    assert json.loads(captured.out)["counts"]["exported"] == len(texts)
    assert not [p for p in out.rglob("*") if p.is_dir() and p.parent != out]  # flat: no sub-folders
    assert json.loads(captured.out)["counts"]["unread"] == 0
    out2 = tmp_path / "ot-nested"
    code = run_cli(["--library", db, "export", "sidecar", str(out2), "--for", "onetrainer", "--no-flatten",
                    "--convert-to", "none"], monkeypatch)
    captured = capsys.readouterr()
    assert code == 0  # a layout the user chose: warned, not failed
    assert "OneTrainer would not find it" in captured.err and "does not read .gif files" in captured.err
    assert "the trainer would not find" in captured.out
    assert run_cli(["--library", db, "export", "csv", str(tmp_path / "x"), "--for", "kohya"], monkeypatch) == 2


# -- caption variants (OneTrainer: one variant per line) ------------------------------------------


def test_caption_variants_round_trip(library: Library, tmp_path: Path) -> None:
    source = tmp_path / "dataset"
    write_jpeg(source / "cat.jpg", seed=3)
    write_jpeg(source / "dog.jpg", seed=4)
    (source / "cat.txt").write_text("a cat on a sofa\nginger cat, indoors\na sleeping cat\n", encoding="utf-8")
    (source / "dog.txt").write_text("a dog in the snow", encoding="utf-8")
    library.scan([library.add_root(source).id])
    stats = import_captions(library, "sidecar", source, lines_as_variants=True)
    assert stats.errors == 0
    assert current_captions(library) == {
        "cat.jpg": ("a cat on a sofa", "import"), "dog.jpg": ("a dog in the snow", "import"),
    }
    with library.db.read() as session:
        history = sorted(session.scalars(select(Caption.text).where(Caption.is_current.is_(False))))
    assert history == ["a sleeping cat", "ginger cat, indoors"]
    # Without --variants the export writes the caption alone; with it, every variant one per line.
    export_dataset(library, "sidecar", tmp_path / "one", val_ratio=0)
    assert (tmp_path / "one" / "train" / "cat.txt").read_text(encoding="utf-8") == "a cat on a sofa"
    out = tmp_path / "variants"
    export_dataset(library, "sidecar", out, val_ratio=0, consumer="onetrainer", variants=True)
    assert _onetrainer_discovery(out / "train") == {
        "cat.jpg": "a cat on a sofa\nginger cat, indoors\na sleeping cat", "dog.jpg": "a dog in the snow",
    }
    # Importing the export back adds nothing; into a new library it gives the same variants.
    again = import_captions(library, "sidecar", out, lines_as_variants=True)
    assert (again.imported, again.unchanged) == (0, 4)
    other = Library(tmp_path / "other.db")
    try:
        other.scan([other.add_root(out / "train").id])
        import_captions(other, "sidecar", out / "train", lines_as_variants=True)
        export_dataset(other, "sidecar", tmp_path / "back", val_ratio=0, variants=True)
    finally:
        other.close()
    assert (tmp_path / "back" / "train" / "cat.txt").read_text(encoding="utf-8") == (
        out / "train" / "cat.txt").read_text(encoding="utf-8")
    from core.datasets.errors import CaptionImportError

    with pytest.raises(CaptionImportError, match="option of the sidecar format"):
        import_captions(library, "csv", source, lines_as_variants=True)
    # Without --lines-as-variants the lines stay one (multi-line) caption, as before.
    plain = Library(tmp_path / "plain.db")
    try:
        plain.scan([plain.add_root(source).id])
        import_captions(plain, "sidecar", source)
        assert current_captions(plain)["cat.jpg"][0] == "a cat on a sofa\nginger cat, indoors\na sleeping cat"
    finally:
        plain.close()
