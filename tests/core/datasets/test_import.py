"""Caption import: round trips through every export format, Flickr8k, COCO, matching rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from core import captions
from core.datasets.errors import CaptionImportError
from core.datasets.export_job import export_dataset
from core.datasets.import_job import import_captions
from core.library import Library
from core.models import Caption, Image
from tests.support.imagegen import write_jpeg
from tests.support.library_helpers import (
    NON_ASCII_CAPTION,
    current_captions,
    images_by_path,
    make_captioned_library,
    run_cli,
)


def _history(library: Library, rel_path: str) -> list[Caption]:
    image_id = images_by_path(library)[rel_path].id
    with library.db.read() as session:
        return captions.caption_history(session, image_id)


def _second_library(tmp_path: Path, photo_dir: Path) -> Library:
    """A fresh library over the same photos, with no captions yet."""
    other = Library(tmp_path / "second.db")
    other.scan([other.add_root(photo_dir).id])
    return other


@pytest.mark.parametrize(
    ("fmt", "source"),
    [
        ("imagefolder", "."),
        ("csv", "captions.csv"),
        ("coco", "."),
        ("sidecar", "."),
        ("parquet", "."),
    ],
)
@pytest.mark.slow
def test_export_then_import_gives_the_same_captions(
    library: Library, photo_dir: Path, tmp_path: Path, fmt: str, source: str
) -> None:
    texts = make_captioned_library(library, photo_dir, count=6)
    out = tmp_path / "dataset"
    export_dataset(library, fmt, out, val_ratio=0.4)
    with _second_library(tmp_path, photo_dir) as other:
        stats = import_captions(other, fmt, out / source)
        assert (stats.unmatched, stats.ambiguous, stats.errors) == (0, 0, 0), stats.problems
        assert stats.imported == stats.current == len(texts)
        imported = current_captions(other)
        assert {rel: text for rel, (text, _source) in imported.items()} == texts
        assert {source for _text, source in imported.values()} == {"import"}
        caption = _history(other, "album0/photo0.jpg")[0]
        assert caption.origin.startswith(f"{fmt}:") and str(out) in caption.origin
        assert caption.provenance.format == fmt
        # Importing the same dataset again adds nothing.
        again = import_captions(other, fmt, out / source)
        assert (again.imported, again.unchanged) == (0, len(texts))
    # Into the library it came from: every caption is already current.
    same = import_captions(library, fmt, out / source)
    assert (same.imported, same.unchanged) == (0, len(texts))


def test_parquet_rows_match_by_content_when_names_differ(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    texts = make_captioned_library(library, photo_dir, count=4)
    export_dataset(library, "parquet", tmp_path / "dataset", val_ratio=0)
    renamed = tmp_path / "renamed"
    shutil.copytree(photo_dir, renamed)
    for path in sorted(renamed.rglob("*.jpg")):
        path.rename(path.with_name("renamed-" + path.name))
    with Library(tmp_path / "renamed.db") as other:
        other.scan([other.add_root(renamed).id])
        stats = import_captions(other, "parquet", tmp_path / "dataset")
        imported = {rel: text for rel, (text, _s) in current_captions(other).items()}
        with other.db.read() as session:
            how = {c.provenance.matched_by for c in session.scalars(select(Caption))}
    # JPEGs are embedded byte for byte and match by fingerprint; the converted HEIC by name.
    assert stats.imported == len(texts) and stats.unmatched == 0
    assert how == {"fingerprint", "path"}
    assert imported["album0/renamed-photo0.jpg"] == texts["album0/photo0.jpg"]


def _flickr_folder(tmp_path: Path, photo_dir: Path, *, token_format: bool = False) -> Path:
    """A Flickr8k-style folder: Images/ with copies of the photos, and the captions file."""
    folder = tmp_path / "Flickr8k"
    (folder / "Images").mkdir(parents=True)
    for name in ("101_aa.jpg", "102_bb.jpg"):
        shutil.copyfile(photo_dir / name, folder / "Images" / name)
    captions_101 = [
        "A dog runs , with a stick .",
        '"Quoted", with commas',
        NON_ASCII_CAPTION,
        "A dog runs , with a stick .",  # repeated: stored once
        "The fifth caption",
    ]
    captions_102 = ["A child climbs stairs ."] * 1 + [f"child caption {i}" for i in range(1, 5)]
    if token_format:
        lines = [f"101_aa.jpg#{i}\t{text}" for i, text in enumerate(captions_101)]
        lines += [f"102_bb.jpg#{i}\t{text}" for i, text in enumerate(captions_102)]
        lines.append("999_unknown.jpg#0\tnot in the library")
        (folder / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        lines = ["image,caption"]
        for text in captions_101:
            # Kaggle's file quotes captions holding quotes, not those holding commas.
            lines.append('101_aa.jpg,"' + text.replace('"', '""') + '"' if '"' in text else f"101_aa.jpg,{text}")
        lines += [f"102_bb.jpg,{text}" for text in captions_102]
        lines.append("999_unknown.jpg,not in the library")
        (folder / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("token_format", [False, True])
def test_flickr8k_several_captions_first_current_verified(
    library: Library, photo_dir: Path, tmp_path: Path, token_format: bool
) -> None:
    write_jpeg(photo_dir / "101_aa.jpg", seed=1)
    write_jpeg(photo_dir / "102_bb.jpg", seed=2)
    library.scan([library.add_root(photo_dir).id])
    folder = _flickr_folder(tmp_path, photo_dir, token_format=token_format)
    stats = import_captions(library, "flickr8k", folder, verified=True)
    assert stats.rows == 3 and stats.unmatched == 1 and stats.unmatched_names == ["999_unknown.jpg"]
    assert stats.imported == 4 + 5 and stats.current == 2
    history = _history(library, "101_aa.jpg")
    assert [c.text for c in history] == [
        "A dog runs , with a stick .", '"Quoted", with commas', NON_ASCII_CAPTION, "The fifth caption",
    ]
    assert [c.is_current for c in history] == [True, False, False, False]
    assert {c.source for c in history} == {"human"}  # verified: counts as training data
    assert history[0].origin.startswith("flickr8k:") and history[2].provenance.extra["index"] == 2
    assert current_captions(library)["102_bb.jpg"] == ("A child climbs stairs .", "human")


def test_imports_never_overwrite_a_persons_caption(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    write_jpeg(photo_dir / "b.jpg", seed=2)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        captions.set_human_caption(session, images_by_path(library)["a.jpg"].id, "Grandma's garden")
    (photo_dir / "a.txt").write_text("a garden with flowers", encoding="utf-8")
    (photo_dir / "b.txt").write_text("\ufeffa blue sky\n", encoding="utf-8")
    for verified in (False, True):
        stats = import_captions(library, "sidecar", photo_dir, verified=verified)
        assert stats.kept_human == 1
    assert current_captions(library) == {
        "a.jpg": ("Grandma's garden", "human"),
        "b.jpg": ("a blue sky", "human"),  # the verified import made it a person's caption
    }
    stored = [c.text for c in _history(library, "a.jpg")]
    assert stored == ["Grandma's garden", "a garden with flowers", "a garden with flowers"]


def test_verified_reimport_upgrades_an_unverified_import(library: Library, photo_dir: Path) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    library.scan([library.add_root(photo_dir).id])
    (photo_dir / "a.caption").write_text("a red square", encoding="utf-8")
    import_captions(library, "sidecar", photo_dir)
    assert current_captions(library)["a.jpg"] == ("a red square", "import")
    stats = import_captions(library, "sidecar", photo_dir, verified=True)
    assert stats.imported == 1 and current_captions(library)["a.jpg"] == ("a red square", "human")


def test_matching_order_and_reports(library: Library, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_jpeg(first / "2024" / "a.jpg", seed=1)
    write_jpeg(second / "2024" / "a.jpg", seed=2)  # same relative path in another root
    write_jpeg(second / "unique.jpg", seed=3)
    write_jpeg(second / "deep" / "b.jpg", seed=4)
    library.scan([library.add_root(first).id, library.add_root(second).id])
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    rows = [
        {"file_name": "somewhere/else/unique.jpg", "text": "by file name"},
        {"file_name": "train/deep/b.jpg", "text": "by path tail"},
        {"file_name": "2024/a.jpg", "text": "ambiguous without the file"},
        {"file_name": "copy.jpg", "text": "by fingerprint"},
        {"file_name": "nowhere.jpg", "text": "unmatched"},
        {"file_name": "empty.jpg", "text": "   "},
    ]
    shutil.copyfile(first / "2024" / "a.jpg", dataset / "copy.jpg")
    (dataset / "metadata.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n{not json\n", encoding="utf-8"
    )
    stats = import_captions(library, "imagefolder", dataset)
    assert (stats.imported, stats.unmatched, stats.ambiguous) == (3, 1, 1)
    assert stats.unmatched_names == ["2024/a.jpg (ambiguous)", "nowhere.jpg"]
    assert any("not valid JSON" in p for p in stats.problems)
    with library.db.read() as session:
        by_text = {c.text: c.provenance.matched_by for c in session.scalars(select(Caption))}
    assert by_text == {"by file name": "name", "by path tail": "path", "by fingerprint": "fingerprint"}
    # The fingerprint picked the right one of the two 2024/a.jpg.
    with library.db.read() as session:
        first_a = session.scalars(select(Image).where(Image.fingerprint == _fp(first / "2024" / "a.jpg"))).one()
        assert first_a.root.path == str(first.resolve())
        assert captions.current_caption(session, first_a.id).text == "by fingerprint"


def _fp(path: Path) -> str:
    from core.fingerprint import fingerprint_file

    return fingerprint_file(path)


def test_coco_with_several_captions_and_images_beside(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    write_jpeg(photo_dir / "000000000139.jpg", seed=1)
    write_jpeg(photo_dir / "000000000285.jpg", seed=2)
    library.scan([library.add_root(photo_dir).id])
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    document = {
        "images": [
            {"id": 139, "file_name": "000000000139.jpg", "width": 64, "height": 48},
            {"id": 285, "file_name": "000000000285.jpg", "width": 64, "height": 48},
            {"id": 632, "file_name": "000000000632.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 3, "image_id": 139, "caption": "second of 139"},
            {"id": 1, "image_id": 139, "caption": "first of 139"},
            {"id": 2, "image_id": 285, "caption": "a bear"},
            {"id": 4, "image_id": 632, "caption": "a bedroom"},
        ],
    }
    (coco / "annotations" / "captions_val2017.json").write_text(json.dumps(document), encoding="utf-8")
    stats = import_captions(library, "coco", coco)
    assert (stats.imported, stats.unmatched) == (3, 1)
    assert [c.text for c in _history(library, "000000000139.jpg")] == ["first of 139", "second of 139"]
    assert current_captions(library)["000000000139.jpg"] == ("first of 139", "import")


def test_source_errors_are_user_errors(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    library.add_root(photo_dir)
    with pytest.raises(CaptionImportError, match="no metadata.jsonl"):
        import_captions(library, "imagefolder", photo_dir)
    with pytest.raises(CaptionImportError, match="not found"):
        import_captions(library, "coco", tmp_path / "nope.json")
    with pytest.raises(CaptionImportError, match="unknown import format"):
        import_captions(library, "yaml", photo_dir)
    assert library.jobs("import") == []  # a wrong source is not a failed job
    code = run_cli(["--library", str(library.path), "import", "flickr8k", str(photo_dir)], monkeypatch)
    assert code == 2 and "no captions.txt" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    stats = import_captions(library, "coco", broken)
    assert stats.errors == 1 and "not a COCO captions file" in stats.problems[0]


def test_cli_import_reports_counts_and_unmatched(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_jpeg(photo_dir / "101_aa.jpg", seed=1)
    write_jpeg(photo_dir / "102_bb.jpg", seed=2)
    library.scan([library.add_root(photo_dir).id])
    folder = _flickr_folder(tmp_path, photo_dir)
    code = run_cli(["--library", str(library.path), "import", "flickr8k", str(folder), "--verified"], monkeypatch)
    captured = capsys.readouterr()
    assert code == 0
    assert "3 images named, 9 verified captions added (2 now current" in captured.out
    assert "1 unmatched" in captured.out and "999_unknown.jpg" in captured.err
    assert library.jobs("import")[-1].state == "done"


def test_cancelled_import_keeps_what_it_stored(library: Library, photo_dir: Path, monkeypatch) -> None:
    from core.datasets import import_job

    for i in range(6):
        write_jpeg(photo_dir / f"{i}.jpg", seed=i)
        (photo_dir / f"{i}.txt").write_text(f"caption {i}", encoding="utf-8")
    library.scan([library.add_root(photo_dir).id])
    monkeypatch.setattr(import_job, "WRITE_BATCH", 2)

    class CancelAfterFour:
        calls = 0

        def is_set(self) -> bool:
            self.calls += 1
            return self.calls > 4

    stats = import_captions(library, "sidecar", photo_dir, cancel=CancelAfterFour())
    assert stats.cancelled and stats.imported == 4
    assert len(current_captions(library)) == 4
    assert library.jobs("import")[-1].state == "cancelled"


def test_import_from_photo_metadata(library: Library, photo_dir: Path) -> None:
    from core.metadata import write_caption

    write_jpeg(photo_dir / "tagged.jpg", seed=1)
    write_jpeg(photo_dir / "camera.jpg", seed=2, exif=_exif_description("OLYMPUS DIGITAL CAMERA"))
    write_jpeg(photo_dir / "exif.jpg", seed=3, exif=_exif_description("Sunset over the bay"))
    write_jpeg(photo_dir / "plain.jpg", seed=4)
    write_caption(photo_dir / "tagged.jpg", NON_ASCII_CAPTION)
    library.scan([library.add_root(photo_dir).id])
    stats = import_captions(library, "metadata", photo_dir)
    assert stats.imported == 2 and stats.errors == 0
    found = current_captions(library)
    assert found == {"tagged.jpg": (NON_ASCII_CAPTION, "import"), "exif.jpg": ("Sunset over the bay", "import")}
    origins = {c.origin.split(":")[0] for c in _history(library, "tagged.jpg") + _history(library, "exif.jpg")}
    assert origins == {"xmp", "exif"}


def _exif_description(text: str) -> bytes:
    from PIL import Image as PILImage

    exif = PILImage.Exif()
    exif[0x010E] = text
    return exif.tobytes()


def test_rows_for_images_outside_any_root_are_unmatched_but_images_in_roots_match_by_location(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    write_jpeg(photo_dir / "x" / "same.jpg", seed=1)
    write_jpeg(photo_dir / "y" / "same.jpg", seed=2)
    library.scan([library.add_root(photo_dir).id])
    (photo_dir / "y" / "same.txt").write_text("the one in y", encoding="utf-8")
    stats = import_captions(library, "sidecar", photo_dir / "y")
    assert stats.imported == 1 and current_captions(library) == {"y/same.jpg": ("the one in y", "import")}
    with library.db.read() as session:
        assert session.scalars(select(Caption)).one().provenance.matched_by == "location"
    elsewhere = tmp_path / "elsewhere"
    write_jpeg(elsewhere / "other.jpg", seed=99)
    (elsewhere / "other.txt").write_text("nobody", encoding="utf-8")
    (elsewhere / "orphan.txt").write_text("no image", encoding="utf-8")
    stats = import_captions(library, "sidecar", elsewhere)
    assert stats.imported == 0 and stats.unmatched == 2
    assert sorted(stats.unmatched_names) == ["orphan.txt (no image beside it)", "other.jpg"]
    assert all(i.state == "ok" for i in images_by_path(library).values())


# -- edits made in another tool come home --------------------------------------------------


def _round_trip_library(library: Library, photo_dir: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """People's captions (two multi-line), two model captions (one left unedited), a GIF and a TIFF that the kohya
    export converts; exported as kohya with three caption files then edited elsewhere.

    Returns the export's image folder and rel_path → the edited text.
    """
    from PIL import Image as PILImage

    write_jpeg(photo_dir / "album0" / "p0.jpg", seed=1)
    write_jpeg(photo_dir / "album0" / "p1.jpg", seed=2)
    write_jpeg(photo_dir / "album1" / "p2.jpg", seed=3)
    write_jpeg(photo_dir / "album1" / "p3.jpg", seed=4)
    PILImage.new("RGB", (40, 30), (10, 200, 30)).save(photo_dir / "album1" / "anim.gif")
    PILImage.new("RGB", (40, 30), (200, 10, 30)).save(photo_dir / "scan.tif")
    library.scan([library.add_root(photo_dir).id])
    ids = {rel: image.id for rel, image in images_by_path(library).items()}
    with library.db.write() as session:
        captions.set_human_caption(session, ids["album0/p0.jpg"], "a red barn\nat dusk")
        captions.set_human_caption(session, ids["album0/p1.jpg"], "two dogs\n\n  on a beach ")
        captions.set_human_caption(session, ids["album1/p2.jpg"], "a lighthouse")
        captions.set_human_caption(session, ids["album1/anim.gif"], "a green square")
        captions.add_model_caption(session, ids["scan.tif"], "a red squar", model_name="tiny-blip", score=-0.5)
        captions.add_model_caption(session, ids["album1/p3.jpg"], "a blue car", model_name="tiny-blip", score=-0.4)
    out = tmp_path / "kohya"
    export_dataset(library, "kohya", out, val_ratio=0)
    images = out / "train" / "1_captions"
    assert {p.name for p in images.iterdir() if p.suffix == ".png"} == {"album1__anim.gif.png", "scan.tif.png"}
    edits = {"album1/p2.jpg": "a lighthouse in fog", "album1/anim.gif": "a green square, animated",
             "scan.tif": "a red square"}
    for caption_file, rel in (("album1__p2.txt", "album1/p2.jpg"), ("album1__anim.gif.txt", "album1/anim.gif"),
                              ("scan.tif.txt", "scan.tif")):
        (images / caption_file).write_text(edits[rel] + "\n", encoding="utf-8")  # as editors save it
    return images, edits


def _history_texts(library: Library) -> dict[str, list[str]]:
    return {rel: [c.text for c in _history(library, rel)] for rel in images_by_path(library)}


def test_kohya_round_trip_with_replace_makes_exactly_the_edits_current(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, edits = _round_trip_library(library, photo_dir, tmp_path)
    before = _history_texts(library)
    # The preview counts what the import will do and writes nothing.
    preview = import_captions(library, "sidecar", images.parent.parent, verified=True, replace=True, dry_run=True)
    assert (preview.replaced, preview.current, preview.unchanged, preview.unmatched) == (2, 1, 3, 0)
    assert _history_texts(library) == before and library.jobs("import") == []

    code = run_cli(["--library", str(library.path), "import", "sidecar", str(images.parent.parent), "--verified",
                    "--replace", "--json"], monkeypatch)
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert code == 0
    assert {k: counts[k] for k in ("imported", "replaced", "current", "kept_human", "unchanged", "unmatched",
                                   "ambiguous", "errors")} == {
        "imported": 3, "replaced": 2, "current": 1, "kept_human": 0, "unchanged": 3, "unmatched": 0,
        "ambiguous": 0, "errors": 0}
    after = _history_texts(library)
    assert {rel for rel in after if after[rel] != before[rel]} == set(edits)  # nothing else gained a row
    for rel, text in edits.items():
        assert after[rel] == [*before[rel], text]  # the old text stays in the history
    now = current_captions(library)
    assert {rel: now[rel] for rel in edits} == {rel: (text, "human") for rel, text in edits.items()}
    assert now["album0/p0.jpg"] == ("a red barn\nat dusk", "human")  # multi-line, exported and back unedited
    assert now["album1/p3.jpg"] == ("a blue car", "model")  # untouched: not a person's edit, stays the model's
    replaced = _history(library, "album1/anim.gif")
    assert replaced[-1].parent_id == replaced[-2].id and replaced[-1].provenance.matched_by == "path"
    assert replaced[-1].origin == f"sidecar:{images / 'album1__anim.gif.txt'}"
    # Once home, the same folder again changes nothing.
    again = import_captions(library, "sidecar", images.parent.parent, replace=True)
    assert (again.imported, again.unchanged) == (0, 6) and _history_texts(library) == after


def test_verified_import_keeps_edits_beside_and_a_later_replace_takes_them(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, edits = _round_trip_library(library, photo_dir, tmp_path)
    before = _history_texts(library)
    code = run_cli(["--library", str(library.path), "import", "sidecar", str(images), "--verified"], monkeypatch)
    captured = capsys.readouterr()
    # Without --replace a person's caption stays current; unedited multi-line captions add nothing.
    assert code == 0
    # (--verified alone vouches for the untouched model caption too, as Accept does.)
    assert "4 verified captions added (2 now current, 2 kept beside a person's caption), 2 already there" \
        in captured.out
    assert "2 kept beside a person's caption, which stays current" in captured.err and "--replace" in captured.err
    assert current_captions(library)["album1/p2.jpg"] == ("a lighthouse", "human")
    assert _history_texts(library)["album0/p1.jpg"] == before["album0/p1.jpg"]
    stats = import_captions(library, "sidecar", images, replace=True)
    assert (stats.imported, stats.replaced, stats.unchanged) == (2, 2, 4)
    assert "2 replacing a person's caption" in stats.summary()
    assert {rel: current_captions(library)[rel] for rel in edits} == {r: (t, "human") for r, t in edits.items()}


def test_every_exported_image_name_leads_back_to_its_library_name() -> None:
    from core.datasets.naming import converted_image_name, library_name_candidates
    from core.datasets.writers.kohya import KohyaWriter
    from core.imaging import IMAGE_EXTENSIONS

    for suffix in sorted(IMAGE_EXTENSIONS | {".JPG", ".Tif", ".GIF", ".HEIC"}):
        rel = f"2024/trip/IMG_1{suffix}"
        for exported in (converted_image_name(rel), KohyaWriter.dataset_name(rel)):
            assert library_name_candidates(exported)[0] == exported  # a library file may be called that
            assert rel in library_name_candidates(exported), (rel, exported)
    assert KohyaWriter.dataset_name("a/scan.tif") == "a__scan.tif.png"
    # The layouts made for a trainer (export sidecar --for ..., --convert-to png|jpg) lead back too.
    from core.datasets.naming import export_layout

    for trainer in ("onetrainer", "ai-toolkit", "kohya"):
        for convert_to in ("png", "jpg"):
            layout = export_layout("sidecar", consumer=trainer, convert_to=convert_to)
            for suffix in sorted(IMAGE_EXTENSIONS | {".JPG", ".GIF", ".Bmp"}):
                rel = f"2024/trip/IMG_1{suffix}"
                exported = layout.name(converted_image_name(rel))
                assert "/" not in exported and rel in library_name_candidates(exported), (trainer, rel, exported)
    assert export_layout("sidecar", consumer="ai-toolkit").name("a/old.bmp") == "a__old.bmp.png"
    assert export_layout("sidecar", consumer="onetrainer", convert_to="jpg").name("anim.gif") == "anim.gif.jpg"
    assert library_name_candidates("x.png.png") == ["x.png.png"]  # kohya never converts a PNG
