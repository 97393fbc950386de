"""Dataset export: every format read back by its consumer, the split, atomicity, the CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

import captiondesk.common
from captiondesk import dataset_commands as cli_dataset
from core import captions
from core.datasets import selection as export_selection
from core.datasets import staging as export_staging
from core.datasets.errors import ExportError
from core.datasets.export_job import export_dataset
from core.datasets.staging import MANIFEST_NAME
from core.datasets.writers import base as writer_base
from core.jobs import Progress
from core.library import Library
from core.models import Image
from core.splits import TRAIN, VALIDATION, assign_split, split_position, validate_val_ratio
from tests.support.imagegen import write_jpeg
from tests.support.library_helpers import (
    NON_ASCII_CAPTION,
    current_captions,
    images_by_path,
    make_captioned_library,
    run_cli,
    write_heic,
)
from tests.support.paths import REPO_ROOT


def load_hf(kind: str, data_dir: Path, cache: Path):
    """The real consumer: Hugging Face datasets (a test dependency, never skipped)."""
    import datasets

    return datasets.load_dataset(kind, data_dir=str(data_dir), cache_dir=str(cache))


def _exported_splits(out: Path) -> dict[str, str]:
    """library path → split, from an imagefolder export."""
    result = {}
    for split in (TRAIN, VALIDATION):
        metadata = out / split / "metadata.jsonl"
        if metadata.exists():
            for line in metadata.read_text(encoding="utf-8").splitlines():
                result[json.loads(line)["file_name"]] = split
    return result


# -- the split ----------------------------------------------------------------------------


def test_split_is_deterministic_proportional_nested_and_seeded() -> None:
    fingerprints = [f"{i:032x}" for i in range(4000)]
    first = [assign_split(fp, 0.2) for fp in fingerprints]
    assert first == [assign_split(fp, 0.2) for fp in fingerprints]
    share = first.count(VALIDATION) / len(first)
    assert 0.17 < share < 0.23
    # Raising the ratio only moves images into validation, never out of it.
    at_ten = {fp for fp in fingerprints if assign_split(fp, 0.1) == VALIDATION}
    at_twenty = {fp for fp, split in zip(fingerprints, first, strict=True) if split == VALIDATION}
    assert at_ten < at_twenty
    other_seed = [assign_split(fp, 0.2, seed=7) for fp in fingerprints]
    assert other_seed != first
    assert all(0.0 <= split_position(fp) < 1.0 for fp in fingerprints[:100])
    assert all(assign_split(fp, 0.0) == TRAIN for fp in fingerprints)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError):
            validate_val_ratio(bad)


def test_split_is_stable_as_library_grows_and_keeps_duplicates_together(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    for i in range(30):
        write_jpeg(photo_dir / f"p{i:02d}.jpg", seed=i)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            captions.add_model_caption(session, image.id, f"caption {image.rel_path}", model_name="m")
    before = export_dataset(library, "imagefolder", tmp_path / "first", val_ratio=0.3)
    assert before.validation > 0 and before.train > 0
    first = _exported_splits(tmp_path / "first")

    # The library grows: new photos, and byte-identical copies of existing ones.
    for i in range(30, 60):
        write_jpeg(photo_dir / f"p{i:02d}.jpg", seed=i)
    for name in list(first)[:10]:
        shutil.copyfile(photo_dir / name, photo_dir / f"copy-of-{name}")
    library.scan()
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            if captions.current_caption(session, image.id) is None:
                captions.add_model_caption(session, image.id, f"caption {image.rel_path}", model_name="m")
    export_dataset(library, "imagefolder", tmp_path / "second", val_ratio=0.3)
    second = _exported_splits(tmp_path / "second")

    assert len(second) == 70
    assert {name: second[name] for name in first} == first  # nobody moved
    for name in list(first)[:10]:
        assert second[f"copy-of-{name}"] == second[name]  # duplicates never split
    # The split hashes the split key (the image-data key the scanner stored), else the fingerprint.
    keys = {rel: image.split_key or image.fingerprint for rel, image in images_by_path(library).items()}
    assert all(key.startswith("img1:") for key in keys.values())
    assert all(second[name] == assign_split(keys[name], 0.3) for name in second)


# -- formats read back by their consumers ----------------------------------------------------


@pytest.mark.slow
def test_imagefolder_loads_with_datasets(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    texts = make_captioned_library(library, photo_dir)
    out = tmp_path / "dataset"
    stats = export_dataset(library, "imagefolder", out, val_ratio=0.3)
    assert (stats.exported, stats.converted, stats.missing, stats.errors) == (11, 1, 0, 0)
    assert stats.out == out and stats.train + stats.validation == 11

    dataset = load_hf("imagefolder", out, tmp_path / "hf-cache")
    assert set(dataset) == {TRAIN, VALIDATION}
    assert dataset[TRAIN].num_rows == stats.train and dataset[VALIDATION].num_rows == stats.validation
    loaded = sorted(row["text"] for split in dataset.values() for row in split)
    assert loaded == sorted(texts.values())
    assert NON_ASCII_CAPTION in loaded
    for split in dataset.values():
        for row in split:
            assert row["image"].size in ((64, 48), (40, 30))
    # HEIC became a JPEG that imagefolder reads; the rest are the original bytes.
    heic = next(out.glob("*/phone/IMG_0001.HEIC.jpg"))
    assert heic.read_bytes()[:3] == b"\xff\xd8\xff"
    copied = next(out.glob("*/album0/photo0.jpg"))
    assert copied.read_bytes() == (photo_dir / "album0" / "photo0.jpg").read_bytes()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["split"] == {"function": "core.splits.assign_split3", "val_ratio": 0.3, "test_ratio": 0.1,
                                 "test_split": False, "seed": 0,
                                 "note": stats.split_note}
    assert stats.split_note.startswith("no test split: only ") and "at least 30 are needed" in stats.split_note
    jobs = library.jobs("export")
    assert jobs[-1].state == "done" and jobs[-1].done == 11


def test_parquet_embeds_images_and_loads_after_the_photos_move(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    texts = make_captioned_library(library, photo_dir, count=6)
    originals = {rel: (photo_dir / rel).read_bytes() for rel in texts if rel.endswith(".jpg")}
    out = tmp_path / "parquet"
    stats = export_dataset(library, "parquet", out, val_ratio=0.3)
    assert stats.exported == 7
    shutil.move(str(photo_dir), str(tmp_path / "moved-away"))

    dataset = load_hf("parquet", out, tmp_path / "hf-cache")
    rows = [row for split in dataset.values() for row in split]
    assert sorted(row["text"] for row in rows) == sorted(texts.values())
    for row in rows:
        image = row["image"]  # decoded by datasets from the embedded bytes
        assert isinstance(image, PILImage.Image) and image.size in ((64, 48), (40, 30))
    import pyarrow.parquet as pq

    embedded = {}
    for parquet_file in out.glob("data/*.parquet"):
        for record in pq.read_table(parquet_file).to_pylist():
            embedded[record["library_path"]] = record["image"]["bytes"]
    assert len(embedded) == 7
    for rel, data in originals.items():
        assert embedded[rel] == data  # the original file, byte for byte


def test_coco_loads_with_pycocotools_or_schema(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    texts = make_captioned_library(library, photo_dir, count=6)
    out = tmp_path / "coco"
    export_dataset(library, "coco", out, val_ratio=0.3)
    found: dict[str, str] = {}
    for split in (TRAIN, VALIDATION):
        annotation_file = out / "annotations" / f"captions_{split}.json"
        document = json.loads(annotation_file.read_text(encoding="utf-8"))
        # The schema COCO caption tools rely on.
        assert {"info", "images", "annotations", "licenses"} <= set(document)
        for image in document["images"]:
            assert {"id", "file_name", "width", "height"} <= set(image)
            with PILImage.open(out / split / image["file_name"]) as im:
                assert im.size == (image["width"], image["height"])
        annotation_ids = [a["id"] for a in document["annotations"]]
        assert len(set(annotation_ids)) == len(annotation_ids)
        try:
            from pycocotools.coco import COCO
        except ImportError:
            by_id = {image["id"]: image["file_name"] for image in document["images"]}
            for annotation in document["annotations"]:
                found[by_id[annotation["image_id"]]] = annotation["caption"]
            continue
        coco = COCO(str(annotation_file))
        for image_id in coco.getImgIds():
            (annotation,) = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
            found[coco.loadImgs([image_id])[0]["file_name"]] = annotation["caption"]
    expected = {rel + (".jpg" if rel.endswith(".HEIC") else ""): text for rel, text in texts.items()}
    assert found == expected


def test_csv_has_file_name_text_split_and_provenance(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    texts = make_captioned_library(library, photo_dir, count=5)
    out = tmp_path / "csv"
    export_dataset(library, "csv", out, val_ratio=0.5)
    with open(out / "captions.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:3] == ["file_name", "text", "split"]
    assert len(rows) == 6
    for row in rows:
        assert (out / row["file_name"]).is_file()
        assert row["file_name"].startswith(row["split"] + "/")
        assert texts[row["library_path"]] == row["text"]
        assert row["source"] in ("human", "model")
        if row["source"] == "model":
            assert row["model_name"] == "tiny-blip" and float(row["score"]) == -0.5
        else:
            assert row["model_name"] == ""
    assert any(row["text"] == NON_ASCII_CAPTION for row in rows)


def test_sidecar_layout_for_kohya_and_onetrainer(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    write_jpeg(photo_dir / "a.jpg", seed=1)
    PILImage.new("RGB", (16, 16), (1, 2, 3)).save(photo_dir / "a.png")  # same stem as a.jpg
    write_jpeg(photo_dir / "b.jpg", seed=2)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            text = "line one\nline two" if image.rel_path == "b.jpg" else f"caption of {image.rel_path}"
            captions.set_human_caption(session, image.id, text)
    out = tmp_path / "kohya"
    export_dataset(library, "sidecar", out, val_ratio=0.0, caption_extension=".caption")
    files = sorted(p.name for p in (out / TRAIN).iterdir())
    assert not (out / VALIDATION).exists()
    images = [f for f in files if not f.endswith(".caption")]
    assert len(images) == 3
    for image_name in images:
        # The rule kohya sd-scripts applies: splitext(image) + caption_extension.
        caption_file = out / TRAIN / (os.path.splitext(image_name)[0] + ".caption")
        assert caption_file.is_file()
    assert (out / TRAIN / "b.caption").read_text(encoding="utf-8") == "line one line two"
    stems = [os.path.splitext(f)[0] for f in images]
    assert len(set(stems)) == 3  # a.jpg and a.png no longer share a caption file


# -- selection and problems -----------------------------------------------------------------


def test_only_verified_and_folder_restrict_the_export(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    texts = make_captioned_library(library, photo_dir, count=9)
    verified = export_dataset(library, "csv", tmp_path / "verified", only="verified", val_ratio=0)
    with open(tmp_path / "verified" / "captions.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["source"] for row in rows} == {"human"}
    assert verified.exported == sum(1 for text, source in current_captions(library).values() if source == "human")

    album = export_dataset(library, "csv", tmp_path / "album1", folder=photo_dir / "album1", val_ratio=0)
    assert album.exported == sum(1 for rel in texts if rel.startswith("album1/"))
    with pytest.raises(ExportError, match="not a library folder"):
        export_dataset(library, "csv", tmp_path / "x", folder=tmp_path)


def test_missing_and_corrupt_images_are_reported_and_the_rest_exported(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    make_captioned_library(library, photo_dir, count=6)
    (photo_dir / "album2" / "photo2.jpg").rename(tmp_path / "parked.jpg")
    library.scan()  # photo2 is now recorded as missing
    (photo_dir / "album0" / "photo0.jpg").unlink()  # gone since the scan
    corrupt = photo_dir / "album1" / "photo1.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated since the scan
    stats = export_dataset(library, "imagefolder", tmp_path / "out", val_ratio=0)
    assert (stats.exported, stats.missing, stats.errors) == (4, 2, 1)
    joined = "\n".join(stats.problems)
    assert "photo0.jpg" in joined and "photo2.jpg" in joined and "photo1.jpg" in joined
    exported = _exported_splits(tmp_path / "out")
    assert "album1/photo1.jpg" not in exported and len(exported) == 4


def test_out_folder_rules(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    make_captioned_library(library, photo_dir, count=3)
    with pytest.raises(ExportError, match="inside the library folder"):
        export_dataset(library, "csv", photo_dir / "export")
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("precious")
    with pytest.raises(ExportError, match="not a CaptionDesk export"):
        export_dataset(library, "csv", documents, overwrite=True)
    assert (documents / "thesis.txt").read_text() == "precious"
    out = tmp_path / "out"
    export_dataset(library, "csv", out, val_ratio=0)
    with pytest.raises(ExportError, match="--overwrite"):
        export_dataset(library, "csv", out)
    stats = export_dataset(library, "imagefolder", out, val_ratio=0, overwrite=True)
    assert stats.out == out and (out / TRAIN / "metadata.jsonl").exists() and not (out / "captions.csv").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_dataset(library, "csv", empty, val_ratio=0).out == empty
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- atomicity ---------------------------------------------------------------------------------


class _CancelAfter:
    """A cancel token that turns on after *checks* look-ups."""

    def __init__(self, checks: int) -> None:
        self.remaining = checks

    def is_set(self) -> bool:
        self.remaining -= 1
        return self.remaining < 0


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("fmt", ["imagefolder", "parquet"])
def test_cancelled_export_leaves_nothing(library: Library, photo_dir: Path, tmp_path: Path, fmt: str) -> None:
    make_captioned_library(library, photo_dir, count=8)
    exports = tmp_path / "exports"
    progress: list[Progress] = []
    stats = export_dataset(library, fmt, exports / "out", cancel=_CancelAfter(4), progress=progress.append)
    assert stats.cancelled and stats.exported == 4 and stats.out is None
    assert not (exports / "out").exists() and _leftovers(exports) == []
    assert progress[-1].message == "Export cancelled"
    assert library.jobs("export")[-1].state == "cancelled"


def test_failed_export_leaves_nothing_and_records_the_failure(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_captioned_library(library, photo_dir, count=8)
    real_write = writer_base.write_bytes
    calls = []

    def failing_write(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(writer_base, "write_bytes", failing_write)
    with pytest.raises(ExportError, match="No space left"):
        export_dataset(library, "imagefolder", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    job = library.jobs("export")[-1]
    assert job.state == "failed" and "No space left" in job.message


@pytest.mark.slow
def test_killed_export_leaves_no_dataset_and_the_next_one_cleans_up(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    make_captioned_library(library, photo_dir, count=8)
    library.close()
    exports = tmp_path / "exports"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from core.datasets.export_job import export_dataset
        from core.datasets.writers import base as writer_base
        from core.library import Library
        real_write = writer_base.write_bytes
        count = 0
        def write_then_die(path, data):
            global count
            real_write(path, data)
            count += 1
            if count == 5:
                os._exit(9)  # like a kill -9 or a power cut: no cleanup runs
        writer_base.write_bytes = write_then_die
        export_dataset(Library({str(library.path)!r}), "imagefolder", {str(exports / "out")!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 9, result.stderr
    assert not (exports / "out").exists()
    (partial,) = [p for p in exports.iterdir() if p.name.startswith(".out.partial-")]
    assert any(partial.rglob("*.jpg"))  # a half dataset exists, but hidden and apart
    old = time.time() - 2 * export_staging.STALE_PARTIAL_SECONDS
    for path in [partial, *partial.iterdir()]:
        os.utime(path, (old, old))
    with Library(library.path) as reopened:
        assert reopened.jobs("export")[-1].state == "interrupted"
        stats = export_dataset(reopened, "imagefolder", exports / "out")
    assert stats.exported == 9 and (exports / "out" / MANIFEST_NAME).exists()
    assert _leftovers(exports) == []


def test_a_running_export_is_not_mistaken_for_a_stale_one(
    library: Library, photo_dir: Path, tmp_path: Path
) -> None:
    make_captioned_library(library, photo_dir, count=3)
    fresh = tmp_path / ".out.partial-0123456789ab"
    (fresh / TRAIN).mkdir(parents=True)
    export_dataset(library, "csv", tmp_path / "out")
    assert fresh.exists()  # another export may still be writing it


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_mirrors_core_choices() -> None:
    from core.datasets import naming
    from core.datasets.readers import IMPORT_FORMATS
    from core.datasets.writers import EXPORT_FORMATS

    assert cli_dataset.EXPORT_FORMATS == EXPORT_FORMATS
    assert cli_dataset.IMPORT_FORMATS == IMPORT_FORMATS
    assert cli_dataset.ONLY_CHOICES == export_selection.ONLY_CHOICES
    assert cli_dataset.CAPTION_EXTENSIONS == naming.CAPTION_EXTENSIONS
    assert set(cli_dataset.TRAINERS) == set(naming.CONSUMERS)
    assert cli_dataset.CONVERT_TO_CHOICES == (*naming.CONVERT_TO_CHOICES, "none")


def test_cli_export(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_captioned_library(library, photo_dir, count=4)
    lib = ["--library", str(library.path)]
    out = tmp_path / "out"
    assert run_cli([*lib, "export", "sidecar", str(out), "--val-ratio", "0.5", "--seed", "3"], monkeypatch) == 0
    printed = capsys.readouterr().out
    assert f"Exported 5 images to {out}" in printed and "1 converted to JPEG" in printed
    assert json.loads((out / MANIFEST_NAME).read_text())["split"]["seed"] == 3

    assert run_cli([*lib, "export", "csv", str(out)], monkeypatch) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli([*lib, "export", "csv", str(tmp_path / "v"), "--val-ratio", "1"], monkeypatch) == 2
    assert "validation ratio" in capsys.readouterr().err
    assert run_cli([*lib, "export", "csv", str(tmp_path / "none"), "--folder", str(photo_dir / "album2"),
                    "--only", "verified"], monkeypatch) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    with pytest.raises(SystemExit):
        run_cli([*lib, "export", "tfrecord", str(tmp_path / "t")], monkeypatch)


def test_cli_ctrl_c_stops_export_cleanly(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_captioned_library(library, photo_dir, count=4)

    def fake_run_cancellable(job):
        cancel = threading.Event()
        cancel.set()  # what Ctrl-C does in run_cancellable
        return job(cancel), True

    monkeypatch.setattr(captiondesk.common, "run_cancellable", fake_run_cancellable)
    code = run_cli(["--library", str(library.path), "export", "csv", str(tmp_path / "out")], monkeypatch)
    assert code == 130 and not (tmp_path / "out").exists()


def test_large_selection_is_streamed_in_chunks(
    library: Library, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_captioned_library(library, photo_dir, count=7)
    monkeypatch.setattr(export_selection, "CHUNK_SIZE", 3)
    seen = [image.rel_path for image in export_selection.iter_captioned_images(library.db, chunk_size=3)]
    assert len(seen) == len(set(seen)) == 8
    stats = export_dataset(library, "csv", tmp_path / "out")
    assert stats.exported == 8


def test_pixels_of_converted_heic_are_upright_and_close(library: Library, photo_dir: Path, tmp_path: Path) -> None:
    write_heic(photo_dir / "x.heic", color=(200, 10, 10), size=(48, 32))
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        image = session.scalars(select(Image)).one()
        captions.set_human_caption(session, image.id, "a red card")
    export_dataset(library, "imagefolder", tmp_path / "out", val_ratio=0)
    with PILImage.open(tmp_path / "out" / TRAIN / "x.heic.jpg") as converted:
        pixels = np.asarray(converted.convert("RGB"), dtype=int)
    assert converted.size == (48, 32)
    assert np.abs(pixels - np.array([200, 10, 10])).max() < 12
