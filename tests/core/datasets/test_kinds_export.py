"""Export per caption kind: a column per kind in csv/parquet/imagefolder (read back by
``datasets`` and pandas), ``--kind K`` and ``--template`` for sidecar and kohya."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from core.captions import set_human_caption
from core.datasets.errors import ExportError
from core.datasets.export_job import export_dataset
from core.datasets.import_job import import_captions
from core.datasets.kind_values import column_name, render_template, template_fields
from core.datasets.staging import MANIFEST_NAME
from core.kinds import add_kind
from core.library import Library
from core.models import Caption, Image
from tests.support.imagegen import write_jpeg
from tests.support.library_helpers import make_captioned_library, run_cli

KEYWORDS = "Beach, Sunset; animals|dogs"


@pytest.fixture
def kinds_library(library: Library, photo_dir: Path) -> tuple[Library, dict[str, str], dict[str, str]]:
    """Captions on 7 photos; keywords on the album0 ones and on one more photo that has no
    caption, alt text on one, a user kind (named like a fixed column) on one."""
    texts = make_captioned_library(library, photo_dir, count=6)
    write_jpeg(photo_dir / "album3" / "only-keywords.jpg", seed=7)
    library.scan([root.id for root in library.roots()])
    keywords: dict[str, str] = {}
    with library.db.write() as session:
        add_kind(session, "source", "Source note")
        images = {i.rel_path: i.id for i in session.scalars(select(Image))}
        for rel, image_id in images.items():
            if rel.startswith(("album0/", "album3/")):
                set_human_caption(session, image_id, KEYWORDS, kind="keywords")
                keywords[rel] = "beach, sunset, animals|dogs"
        set_human_caption(session, images["album1/photo1.jpg"], "A red door.", kind="alt_text")
        set_human_caption(session, images["album2/photo2.jpg"], "scanned by Ann", kind="source")
    return library, texts, keywords


def test_template_fields_and_rendering() -> None:
    kinds = ["caption", "keywords", "alt_text"]
    assert template_fields("{keywords}, {caption}", kinds) == ["keywords", "caption"]
    with pytest.raises(ExportError, match=r"\{tags\}, which is no caption kind.*\{keywords\}"):
        template_fields("{tags}, {caption}", kinds)
    with pytest.raises(ExportError, match="without a format"):
        template_fields("{caption:>10}", kinds)
    with pytest.raises(ExportError, match="names no caption kind"):
        template_fields("just words", kinds)
    with pytest.raises(ExportError, match="literal brace"):
        template_fields("{caption", kinds)
    both = {"keywords": "beach, dogs", "caption": "a dog on a beach"}
    assert render_template("{keywords}, {caption}", both) == "beach, dogs, a dog on a beach"
    assert render_template("{keywords}, {caption}", {"caption": "a dog"}) == "a dog"
    assert render_template("{keywords}, {caption}", {"keywords": "dogs"}) == "dogs"
    assert render_template("photo of {caption} ({alt_text})", {"caption": "a dog"}) == "photo of a dog ()"
    assert column_name("keywords") == "keywords" and column_name("source") == "kind_source"


def test_csv_has_a_column_per_kind_read_back_by_pandas(kinds_library, tmp_path: Path) -> None:
    import pandas as pd

    library, texts, keywords = kinds_library
    out = tmp_path / "csv"
    stats = export_dataset(library, "csv", out, val_ratio=0.3)
    assert stats.exported == len(texts)  # the photo with keywords only has no caption: not in a caption dataset
    frame = pd.read_csv(out / "captions.csv", keep_default_na=False)
    assert list(frame.columns)[-5:] == ["alt_text", "extended_description", "title", "keywords", "kind_source"]
    by_path = frame.set_index("library_path")
    assert by_path.loc["album0/photo0.jpg", "keywords"] == keywords["album0/photo0.jpg"]
    assert by_path.loc["album1/photo1.jpg", "alt_text"] == "A red door."
    assert by_path.loc["album2/photo2.jpg", "kind_source"] == "scanned by Ann"
    assert by_path.loc["album2/photo2.jpg", "source"] in ("human", "model")  # the caption's own provenance
    assert by_path.loc["album1/photo1.jpg", "keywords"] == ""  # none: an empty cell
    assert sorted(frame["text"]) == sorted(texts.values())


@pytest.mark.slow
def test_parquet_and_imagefolder_columns_load_with_datasets(kinds_library, tmp_path: Path) -> None:
    import datasets

    library, texts, keywords = kinds_library
    for fmt in ("parquet", "imagefolder"):
        out = tmp_path / fmt
        export_dataset(library, fmt, out, val_ratio=0.3)
        loaded = datasets.load_dataset(fmt, data_dir=str(out), cache_dir=str(tmp_path / f"hf-{fmt}"))
        rows = [row for split in loaded.values() for row in split]
        assert len(rows) == len(texts), fmt
        assert {"text", "alt_text", "title", "keywords", "kind_source"} <= set(rows[0]), fmt
        by_text = {row["text"]: row for row in rows}
        album0 = [row for rel, text in texts.items() if rel.startswith("album0/") for row in [by_text[text]]]
        assert album0 and all(row["keywords"] == "beach, sunset, animals|dogs" for row in album0), fmt
        assert by_text[texts["album1/photo1.jpg"]]["alt_text"] == "A red door.", fmt
        # None: parquet's typed column; "" in imagefolder's JSON lines (datasets types each split from its rows).
        assert by_text[texts["album1/photo1.jpg"]]["keywords"] == (None if fmt == "parquet" else ""), fmt
        assert sum(row["kind_source"] == "scanned by Ann" for row in rows) == 1, fmt


def test_sidecar_kind_writes_that_kinds_values(kinds_library, tmp_path: Path) -> None:
    library, _texts, keywords = kinds_library
    out = tmp_path / "kw"
    stats = export_dataset(library, "sidecar", out, val_ratio=0.3, kind="keywords")
    # The photos with keywords, including the one without a caption.
    assert stats.exported == len(keywords)
    files = {p.relative_to(out).as_posix().split("/", 1)[1]: p.read_text(encoding="utf-8")
             for p in out.glob("*/**/*.txt")}
    assert files == {rel.removesuffix(".jpg") + ".txt": value for rel, value in keywords.items()}
    assert json.loads((out / MANIFEST_NAME).read_text())["kind"] == "keywords"


def test_kohya_template_combines_kinds_and_is_recorded(kinds_library, tmp_path: Path) -> None:
    library, texts, keywords = kinds_library
    out = tmp_path / "kohya"
    template = "{keywords}, {caption}"
    stats = export_dataset(library, "kohya", out, val_ratio=0.3, template=template)
    assert stats.exported == len(texts)  # it names the caption: the captioned photos
    written = {p.name: p.read_text(encoding="utf-8") for p in out.glob("*/*/*.txt")}
    assert written["album0__photo0.txt"] == f"{keywords['album0/photo0.jpg']}, {texts['album0/photo0.jpg']}"
    assert written["album1__photo1.txt"] == texts["album1/photo1.jpg"]  # no keywords: the caption alone
    toml = (out / "dataset_train.toml").read_text(encoding="utf-8")
    assert '# Each caption file is the template "{keywords}, {caption}".' in toml
    import tomllib

    assert tomllib.loads(toml)["general"]["caption_extension"] == ".txt"  # still valid TOML
    assert json.loads((out / MANIFEST_NAME).read_text())["template"] == template


def test_bad_kind_choices_are_refused_before_anything_is_written(kinds_library, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    library, _texts, _keywords = kinds_library
    lib = ["--library", str(library.path)]
    cases = [
        (["export", "csv", str(tmp_path / "a"), "--kind", "keywords"], "carries a column per kind"),
        (["export", "coco", str(tmp_path / "b"), "--template", "{caption}"], "writes captions only"),
        (["export", "sidecar", str(tmp_path / "c"), "--kind", "tags"], "no caption kind 'tags'"),
        (["export", "sidecar", str(tmp_path / "d"), "--template", "{tags}"], "{tags}, which is no caption kind"),
        (["export", "kohya", str(tmp_path / "e"), "--kind", "title", "--template", "{caption}"], "not both"),
    ]
    for argv, message in cases:
        assert run_cli([*lib, *argv], monkeypatch) == 2, argv
        assert message in capsys.readouterr().err, argv
        assert not Path(argv[2]).exists()
    assert run_cli([*lib, "export", "sidecar", str(tmp_path / "ok"), "--template", "{title}: {caption}"],
                   monkeypatch) == 0
    assert "Exported 7 images" in capsys.readouterr().out
    with open(next((tmp_path / "ok").glob("*/album0/photo0.txt")), encoding="utf-8") as handle:
        assert handle.read().startswith("photo number")  # no title: the separator goes with it
    with pytest.raises(ExportError):
        export_dataset(library, "parquet", tmp_path / "f", template="{caption}")
    assert not (tmp_path / "f").exists()


def _current_kinds(library: Library) -> dict[tuple[str, str], tuple[str, str]]:
    """``{(photo path, kind): (current value, source)}`` over the library."""
    with library.db.read() as session:
        rows = session.execute(select(Image.rel_path, Caption.kind, Caption.text, Caption.source)
                               .join(Caption, Caption.image_id == Image.id).where(Caption.is_current.is_(True)))
        return {(rel, kind): (text, source) for rel, kind, text, source in rows}


@pytest.mark.parametrize("fmt", ["csv", "imagefolder", "parquet"])
def test_export_then_import_round_trips_every_kind_and_keeps_a_persons_value(
        kinds_library, photo_dir: Path, tmp_path: Path, fmt: str) -> None:
    library, texts, _keywords = kinds_library
    out = tmp_path / fmt
    export_dataset(library, fmt, out, val_ratio=0.3)
    exported = {key: value for key, value in _current_kinds(library).items() if key[0] in texts}
    assert {kind for _rel, kind in exported} >= {"caption", "keywords", "alt_text", "source"}

    other = Library(tmp_path / f"other-{fmt}.db")
    try:
        other.scan([other.add_root(photo_dir).id])
        with other.db.write() as session:
            add_kind(session, "source", "Source note")
            door = session.scalar(select(Image.id).where(Image.rel_path == "album1/photo1.jpg"))
            set_human_caption(session, door, "Mine: a door", kind="alt_text")
        stats = import_captions(other, fmt, out, honour_source=True)
        assert stats.kept_human == 1 and not stats.errors, stats.problems
        imported = _current_kinds(other)
        for (rel, kind), (text, _source) in exported.items():
            if (rel, kind) != ("album1/photo1.jpg", "alt_text"):
                assert imported[rel, kind][0] == text, (rel, kind)
        # The person's alt text stays current; the imported one joins its history.
        assert imported["album1/photo1.jpg", "alt_text"] == ("Mine: a door", "human")
        with other.db.read() as session:
            history = session.scalars(select(Caption.text).where(
                Caption.image_id == door, Caption.kind == "alt_text", Caption.is_current.is_(False))).all()
        assert history == ["A red door."]
        # The caption's source column is its own: kind values are imports unless --verified says otherwise.
        assert imported["album2/photo2.jpg", "source"] == ("scanned by Ann", "import")
        again = import_captions(other, fmt, out, honour_source=True)
        assert again.current == again.imported == 0  # the same source again adds nothing
    finally:
        other.close()
