"""Hostile input and faults: one clear line per case, nothing read or written
where it should not be, no state that sticks.

Each reproduction from the issue is a test here, run through the CLI where the issue
shows a command.  ``test_fuzz_*`` feed every importer seeded random malformed files and
check, with an audit hook on ``open``, that nothing outside the import source and the
library folders is opened.  docs/robustness.md lists these cases and what the user sees.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from core import captions, ownership
from core.captioning.job_spec import GenerationSettings
from core.datasets.export_job import export_dataset
from core.datasets.import_job import import_captions
from core.datasets.readers.base import MAX_CAPTION_CHARS
from core.datasets.staging import EXPORT_JOB
from core.datasets.writers import base as writer_base
from core.library import Library
from core.models import Caption, Image
from core.queries import ImageFilter, filtered_ids, find_pattern, find_replace_candidates
from tests.support.imagegen import write_jpeg
from tests.support.library_helpers import current_captions, images_by_path, run_cli
from tests.support.paths import REPO_ROOT

SECRET = "root:x:0:0:secret-line-from-outside"

# -- the audit hook: which files does the process open? -----------------------------

_RECORDING: dict[str, object] = {"on": False, "paths": []}
_IGNORED_PREFIXES = tuple(
    {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    | {os.path.realpath(REPO_ROOT)}
) + ("/dev/", "/proc/", "/sys/")


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _RECORDING["on"] and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _RECORDING["paths"].append(os.fsdecode(args[0]))  # type: ignore[union-attr]


if not getattr(sys.modules[__name__], "_HOOK_INSTALLED", False):  # audit hooks cannot be removed
    sys.addaudithook(_audit)
    _HOOK_INSTALLED = True


@contextlib.contextmanager
def recording_opens() -> Iterator[list[str]]:
    """The paths opened (builtins.open, os.open, io.open) while the block runs."""
    paths: list[str] = []
    _RECORDING["paths"] = paths
    _RECORDING["on"] = True
    try:
        yield paths
    finally:
        _RECORDING["on"] = False


def opened_outside(paths: list[str], *allowed: Path) -> list[str]:
    """The recorded paths that are not inside one of *allowed* (Python's own files aside)."""
    roots = [Path(os.path.realpath(a)) for a in allowed]
    bad = []
    for path in paths:
        real = os.path.realpath(path)
        if real.startswith(_IGNORED_PREFIXES):
            continue
        if not any(Path(real).is_relative_to(root) for root in roots):
            bad.append(path)
    return bad


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[Library]:
    """A library whose database lives in its own folder (so "the library's folders" are exact)."""
    folder = tmp_path / "lib"
    folder.mkdir()
    library = Library(folder / "library.db")
    yield library
    library.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder that no import or export may read: a secret file and a real JPEG."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET + "\n", encoding="utf-8")
    write_jpeg(folder / "a.jpg", seed=999)
    return folder


def add_photos(library: Library, folder: Path, names: list[str]) -> None:
    for number, name in enumerate(names):
        write_jpeg(folder / name, seed=number + 1)
    library.scan([library.add_root(folder).id])


def cli(library: Library, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str):
    code = run_cli(["--library", str(library.path), *args], monkeypatch)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def all_caption_texts(library: Library) -> list[str]:
    with library.db.read() as session:
        return list(session.scalars(select(Caption.text)))


# -- 2: sidecar links and names that lead out of the source ----------------------------


def test_import_sidecar_does_not_follow_a_link_out_of_the_source(
    lib: Library, tmp_path: Path, outside: Path, monkeypatch, capsys
) -> None:
    photos = tmp_path / "photos"
    add_photos(lib, photos, ["img001.jpg", "img004.jpg", "img005.jpg", "img006.jpg"])
    (photos / "img001.txt").write_text("a dog on a beach", encoding="utf-8")
    (photos / "img004.txt").symlink_to(outside / "secret.txt")  # ln -s /etc/passwd photos/img004.txt
    os.mkfifo(photos / "img005.txt")  # would block a plain open() forever
    (photos / "img006.txt").write_text("x" * (MAX_CAPTION_CHARS * 5), encoding="utf-8")
    with recording_opens() as opened:
        code, _out, err = cli(lib, monkeypatch, capsys, "import", "sidecar", str(photos), "--verified")
    assert code == 1  # done, with the refused rows counted as failed items
    assert all(SECRET not in text for text in all_caption_texts(lib))
    assert current_captions(lib) == {"img001.jpg": ("a dog on a beach", "human")}
    assert "img004.txt: a link leading outside" in err
    assert "img005.txt: a FIFO (named pipe), not a regular file; skipped" in err
    assert "img006.txt: " in err and "more than a caption" in err
    assert opened_outside(opened, photos, lib.path.parent) == []


def test_dataset_names_outside_the_source_are_never_opened(
    lib: Library, tmp_path: Path, outside: Path, monkeypatch, capsys
) -> None:
    photos = tmp_path / "photos"
    add_photos(lib, photos, ["keep.jpg"])
    source = tmp_path / "dataset"
    source.mkdir()
    write_jpeg(source / "keep.jpg", seed=1)
    escape = "../" * 12 + str(outside / "a.jpg").lstrip("/")
    names = [escape, str(outside / "a.jpg"), "../outside/a.jpg", "/etc/passwd", "keep.jpg"]
    with open(source / "metadata.jsonl", "w", encoding="utf-8") as handle:
        for name in names:
            handle.write(json.dumps({"file_name": name, "text": f"caption for {name}"}) + "\n")
    with open(source / "captions.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "text"])
        writer.writerows([name, f"csv caption for {name}"] for name in names)
    coco = {
        "images": [{"id": i, "file_name": name} for i, name in enumerate(names)],
        "annotations": [{"id": i, "image_id": i, "caption": f"coco {name}"} for i, name in enumerate(names)],
    }
    (source / "captions_train.json").write_text(json.dumps(coco), encoding="utf-8")
    with recording_opens() as opened:
        for fmt, src in (("imagefolder", source), ("csv", source / "captions.csv"), ("coco", source)):
            code, _out, _err = cli(lib, monkeypatch, capsys, "import", fmt, str(src))
            assert code == 0
    assert opened_outside(opened, source, photos, lib.path.parent) == []
    assert current_captions(lib)["keep.jpg"][0] == "coco keep.jpg"


# -- 5: rows that crashed the import --------------------------------------------------


def _jsonl_lone_surrogate(folder: Path) -> tuple[str, Path]:
    (folder / "metadata.jsonl").write_text(
        '{"file_name": "a.jpg", "text": "x \\ud800"}\n{"file_name": "b.jpg", "text": "good b"}\n', encoding="utf-8"
    )
    return "imagefolder", folder


def _coco_string_annotation(folder: Path) -> tuple[str, Path]:
    document = {
        "images": [{"id": 2, "file_name": "b.jpg"}, "x"],
        "annotations": ["x", {"id": 1, "image_id": 2, "caption": "good b"}],
    }
    (folder / "captions_train.json").write_text(json.dumps(document), encoding="utf-8")
    return "coco", folder


def _coco_infinite_ids(folder: Path) -> tuple[str, Path]:
    text = (
        '{"images": [{"id": 1e999, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],'
        ' "annotations": [{"id": 1e999, "image_id": 1e999, "caption": "bad a"},'
        ' {"id": 2, "image_id": 2, "caption": "good b"}]}'
    )
    (folder / "captions_train.json").write_text(text, encoding="utf-8")
    return "coco", folder


def _coco_deeply_nested(folder: Path) -> tuple[str, Path]:
    (folder / "captions_a.json").write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    good = {"images": [{"id": 2, "file_name": "b.jpg"}], "annotations": [{"id": 1, "image_id": 2, "caption": "good b"}]}
    (folder / "captions_b.json").write_text(json.dumps(good), encoding="utf-8")
    return "coco", folder


def _flickr_bad_byte(folder: Path) -> tuple[str, Path]:
    (folder / "captions.txt").write_bytes(b"image,caption\na.jpg,bad \xff caption\nb.jpg,good b\n")
    return "flickr8k", folder


@pytest.mark.parametrize(
    "make_source",
    [_jsonl_lone_surrogate, _coco_string_annotation, _coco_infinite_ids, _coco_deeply_nested, _flickr_bad_byte],
    ids=["jsonl-lone-surrogate", "coco-string-annotation", "coco-id-1e999", "coco-nested-100000", "flickr8k-xff"],
)
def test_a_bad_row_is_reported_and_skipped_and_good_rows_are_kept(
    lib: Library, tmp_path: Path, monkeypatch, capsys, make_source
) -> None:
    photos = tmp_path / "photos"
    add_photos(lib, photos, ["a.jpg", "b.jpg"])
    source = tmp_path / "dataset"
    source.mkdir()
    fmt, src = make_source(source)
    code, out, err = cli(lib, monkeypatch, capsys, "import", fmt, str(src))
    assert code == 1  # done, with the refused rows counted as failed items
    assert current_captions(lib) == {"b.jpg": ("good b", "import")}
    assert "Import finished" in out
    assert "warning:" in err  # the bad row or file is named, once


def test_coco_with_only_a_string_annotation_is_one_line(lib: Library, tmp_path: Path, monkeypatch, capsys) -> None:
    source = tmp_path / "coco.json"
    source.write_text('{"images":[],"annotations":["x"]}', encoding="utf-8")
    code, out, err = cli(lib, monkeypatch, capsys, "import", "coco", str(source))
    assert code == 2  # nothing could be imported: one error line that says why
    assert err.count("\n") == 1 and err.startswith("captiondesk: error: nothing to import")
    assert "without a usable id" in err and "warning:" not in err


# -- 6: path collisions in an export ----------------------------------------------------


@pytest.mark.parametrize(("fmt", "names"), [("sidecar", ["x.jpg", "x.txt/a.jpg"]), ("imagefolder", ["b.jpg", "metadata.jsonl/a.jpg"])])
def test_a_folder_named_like_an_export_file_does_not_abort_the_export(
    lib: Library, tmp_path: Path, monkeypatch, capsys, fmt: str, names: list[str]
) -> None:
    photos = tmp_path / "photos"
    add_photos(lib, photos, names)
    with lib.db.write() as session:
        for image in session.scalars(select(Image)):
            captions.set_human_caption(session, image.id, f"caption of {image.rel_path}")
    out = tmp_path / "export"
    code, stdout, _err = cli(lib, monkeypatch, capsys, "export", fmt, str(out), "--val-ratio", "0")
    assert code == 0, stdout
    assert "Exported 2 images" in stdout
    # Read back: every exported caption belongs to its own image.
    other = Library(tmp_path / "other.db")
    try:
        other.scan([other.add_root(photos).id])
        stats = import_captions(other, fmt, out)
        assert (stats.imported, stats.unmatched, stats.errors) == (2, 0, 0), stats.problems
        assert {path: text for path, (text, _s) in current_captions(other).items()} == {
            name: f"caption of {name}" for name in names
        }
    finally:
        other.close()


def test_a_write_error_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "x.txt").mkdir()
    with pytest.raises(OSError) as caught:
        writer_base.write_bytes(tmp_path / "x.txt", b"data")
    where = writer_base.export_relative(caught.value.filename)
    assert where.endswith("x.txt")


# -- 7 and 10: parquet image structs --------------------------------------------------


def test_parquet_image_struct_path_is_the_name_and_bytes_are_never_printed(
    lib: Library, tmp_path: Path, monkeypatch, capsys
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    photos = tmp_path / "photos"
    add_photos(lib, photos, ["a.jpg"])
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": b"\x00not these bytes" * 10, "path": "a.jpg"}, {"bytes": b"\xff\xd8" * 5000, "path": "zz.jpg"}],
                type=image_type,
            ),
            "text": ["from parquet", "nowhere"],
        }
    )
    source = tmp_path / "data.parquet"
    pq.write_table(table, source)
    code, out, err = cli(lib, monkeypatch, capsys, "import", "parquet", str(source))
    assert code == 0
    assert current_captions(lib) == {"a.jpg": ("from parquet", "import")}
    assert "not in the library: zz.jpg" in err
    assert "\\xff" not in err and "bytes" not in err
    assert len(err) < 500


# -- 9 and 10: write-metadata ---------------------------------------------------------


def test_write_metadata_handles_names_near_the_file_name_limit(lib: Library, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("pyexiv2")
    photos = tmp_path / "photos"
    name = "n" * 247 + ".jpg"  # 251 bytes: the old temporary name was 255+
    add_photos(lib, photos, [name])
    with lib.db.write() as session:
        captions.set_human_caption(session, images_by_path(lib)[name].id, "long name")
    code, out, _err = cli(lib, monkeypatch, capsys, "write-metadata")
    assert code == 0 and "captions written into 1 file" in out
    assert [p.name for p in photos.iterdir()] == [name]  # no temporary left


def test_control_characters_are_written_once(lib: Library, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("pyexiv2")
    from core.metadata import read_caption

    photos = tmp_path / "photos"
    add_photos(lib, photos, ["a.jpg"])
    with lib.db.write() as session:
        captions.set_human_caption(session, images_by_path(lib)["a.jpg"].id, "bell\x07 and\x01 escape\x1b here")
    _code, first, _err = cli(lib, monkeypatch, capsys, "write-metadata")
    assert "captions written into 1 file" in first
    _code, second, _err = cli(lib, monkeypatch, capsys, "write-metadata")
    assert "written into 0 files" in second and "1 already up to date" in second
    assert read_caption(photos / "a.jpg").text == "bell  and  escape  here"


# -- 10: export leftovers, --overwrite, roots with the same name ---------------------


def _captioned(library: Library, folder: Path, names: list[str]) -> None:
    add_photos(library, folder, names)
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            if captions.current_caption(session, image.id) is None:
                captions.set_human_caption(session, image.id, f"caption {image.id}")


def test_overwrite_refuses_to_delete_files_the_user_added(lib: Library, tmp_path: Path, monkeypatch, capsys) -> None:
    _captioned(lib, tmp_path / "photos", ["a.jpg"])
    out = tmp_path / "export"
    assert cli(lib, monkeypatch, capsys, "export", "sidecar", str(out))[0] == 0
    notes = out / "train" / "my-notes.md"
    notes.parent.mkdir(exist_ok=True)
    notes.write_text("mine", encoding="utf-8")
    code, _out, err = cli(lib, monkeypatch, capsys, "export", "sidecar", str(out), "--overwrite")
    assert code == 2
    assert "1 files added or changed after the export (train/my-notes.md)" in err
    assert notes.read_text(encoding="utf-8") == "mine"
    notes.unlink()
    assert cli(lib, monkeypatch, capsys, "export", "sidecar", str(out), "--overwrite")[0] == 0


def test_roots_with_the_same_name_never_share_a_folder(lib: Library, tmp_path: Path) -> None:
    for number, folder in enumerate([tmp_path / "a" / "photos", tmp_path / "b" / "photos", tmp_path / "c" / "photos-2"]):
        write_jpeg(folder / "img.jpg", seed=number + 10)
        lib.scan([lib.add_root(folder).id])
    with lib.db.write() as session:
        for image in session.scalars(select(Image)):
            captions.set_human_caption(session, image.id, f"caption {image.id}")
    out = tmp_path / "export"
    stats = export_dataset(lib, "imagefolder", out, val_ratio=0)
    assert stats.exported == 3, stats.problems
    folders = sorted(p.name for p in (out / "train").iterdir() if p.is_dir())
    assert len(folders) == 3
    assert all(len(list((out / "train" / f).iterdir())) == 1 for f in folders)


def test_a_dead_exporters_partial_folder_is_removed_at_once(lib: Library, tmp_path: Path) -> None:
    _captioned(lib, tmp_path / "photos", ["a.jpg"])
    exports = tmp_path / "exports"
    exports.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = exports / ".out.partial-0123456789ab"
    alive = exports / ".out.partial-ba9876543210"
    for folder, pid in ((dead, child.pid), (alive, os.getppid())):
        ownership.make_owned_dir(folder, EXPORT_JOB)
        marker = folder / ownership.MARKER_NAME
        marker.write_text(json.dumps({**json.loads(marker.read_text(encoding="utf-8")), "pid": pid}),
                          encoding="utf-8")
        (folder / "half.jpg").write_bytes(b"half")
    export_dataset(lib, "csv", exports / "out")
    assert not dead.exists()
    assert alive.exists()  # its process may still be writing


# -- 10: CSV fields, search, find-and-replace -----------------------------------------


def test_a_huge_csv_field_skips_that_row_only(lib: Library, tmp_path: Path, monkeypatch, capsys) -> None:
    add_photos(lib, tmp_path / "photos", ["a.jpg", "b.jpg"])
    source = tmp_path / "captions.csv"
    with open(source, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "text"])
        writer.writerow(["a.jpg", "y" * 200_000])
        writer.writerow(["b.jpg", "good b"])
    limit = csv.field_size_limit()
    code, _out, err = cli(lib, monkeypatch, capsys, "import", "csv", str(source))
    assert code == 1  # done, with the refused rows counted as failed items
    assert current_captions(lib) == {"b.jpg": ("good b", "import")}
    assert "caption of 200000 characters" in err
    assert csv.field_size_limit() == limit  # process-wide state put back


def test_search_for_punctuation_or_emoji_matches_only_those_captions(lib: Library, tmp_path: Path) -> None:
    add_photos(lib, tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg"])
    ids = images_by_path(lib)
    with lib.db.write() as session:
        captions.set_human_caption(session, ids["a.jpg"].id, "a cherry tree 🌸 in bloom")
        captions.set_human_caption(session, ids["b.jpg"].id, "wait... what?!")
        captions.set_human_caption(session, ids["c.jpg"].id, "plain words")
    with lib.db.read() as session:
        assert filtered_ids(session, ImageFilter(text="🌸")) == [ids["a.jpg"].id]
        assert filtered_ids(session, ImageFilter(text="?!")) == [ids["b.jpg"].id]
        assert filtered_ids(session, ImageFilter(text="%%")) == []
        assert len(filtered_ids(session, ImageFilter(text="  "))) == 3


def test_find_and_replace_keeps_dotted_capital_i_apart_from_i(lib: Library, tmp_path: Path) -> None:
    add_photos(lib, tmp_path / "photos", ["a.jpg", "b.jpg"])
    ids = images_by_path(lib)
    with lib.db.write() as session:
        captions.set_human_caption(session, ids["a.jpg"].id, "İstanbul at night")
        captions.set_human_caption(session, ids["b.jpg"].id, "a bridge in the city")
    with lib.db.read() as session:
        found = find_replace_candidates(session, ImageFilter(), "İ")
    assert [image_id for image_id, _c, _t in found] == [ids["a.jpg"].id]
    assert find_pattern("i").sub("_", "i I ı İ") == "_ _ ı İ"
    assert find_pattern("straße").search("STRASSE") is None  # no multi-letter folding
    assert find_pattern("Café").search("CAFÉ au lait")


# -- fuzz: every importer, seeded malformed files -------------------------------------

GOOD = {"good1.jpg": "good caption one", "good2.jpg": "good caption two"}
NASTY_STRINGS = [
    "", "\x00", "\ud800", "../../../../etc/passwd", "/etc/passwd", "C:\\Windows\\win.ini", "a" * 5000, "🌸" * 100,
    "\u202e", "NaN", "1e999", "-1", "null", "\\", '"', "'", ",", "\n", "\r\n", "\t", "%s%n", "<x/>", "&amp;",
]
NASTY_VALUES: list = [None, True, 1e308, -0.0, 2**70, [], {}, [[[]]], {"path": 1}, "x" * 70_000]


def _nasty(rng: random.Random):
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(NASTY_STRINGS)
    if roll < 0.8:
        return rng.choice(NASTY_VALUES)
    return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(1, 20)))


def _garble(rng: random.Random, data: bytes) -> bytes:
    """Truncate, flip bytes, splice in junk."""
    data = bytearray(data)
    for _ in range(rng.randrange(0, 4)):
        action = rng.randrange(3)
        if action == 0 and data:
            del data[rng.randrange(len(data)):]
        elif action == 1 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            position = rng.randrange(len(data) + 1)
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
    return bytes(data)


def _fuzz_rows(rng: random.Random) -> list[tuple]:
    rows: list[tuple] = [(name, text) for name, text in GOOD.items()]
    rows += [(_nasty(rng), _nasty(rng)) for _ in range(rng.randrange(3, 12))]
    rng.shuffle(rows)
    return rows


def _is_good(name) -> bool:
    return isinstance(name, str) and name in GOOD


def _json_default(value):
    return str(value)


def _write_jsonl(folder: Path, rng: random.Random) -> tuple[str, Path, bool]:
    lines = []
    for name, text in _fuzz_rows(rng):
        if _is_good(name):
            lines.append(json.dumps({"file_name": name, "text": text}))
        elif rng.random() < 0.3:
            lines.append(_garble(rng, json.dumps({"file_name": str(name), "text": str(text)}).encode()).decode("latin-1"))
        else:
            key = rng.choice(["file_name", "text", "image", _nasty(rng) if isinstance(_nasty(rng), str) else "k"])
            lines.append(json.dumps({"file_name": name, key: text}, default=_json_default))
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    (folder / "metadata.jsonl").write_bytes(data + rng.choice([b"", b"\n", b"\xff\xfe", b"{" * 3000]))
    return "imagefolder", folder, True


def _write_csv(folder: Path, rng: random.Random) -> tuple[str, Path, bool]:
    buffer = []
    for name, text in _fuzz_rows(rng):
        buffer.append([str(name), str(text)] + ([_nasty(rng)] if rng.random() < 0.2 else []))
    path = folder / "captions.csv"
    with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "text"])
        writer.writerows(buffer)
    if rng.random() < 0.3:  # unbalanced quotes and bad bytes after the good rows
        with open(path, "ab") as handle:
            handle.write(rng.choice([b'"unclosed,quote\n', b"\xff\xfe,\x00\n", b"a,b,c,d\n" * 3]))
    return "csv", path, True


def _write_coco(folder: Path, rng: random.Random) -> tuple[str, Path, bool]:
    images, annotations = [], []
    for number, (name, text) in enumerate(_fuzz_rows(rng), start=1):
        good = _is_good(name)
        image_id = number if good or rng.random() < 0.5 else _nasty(rng)
        images.append({"id": image_id, "file_name": name} if good or rng.random() < 0.7 else _nasty(rng))
        annotations.append(
            {"id": number if good else _nasty(rng), "image_id": image_id, "caption": text}
            if good or rng.random() < 0.7 else _nasty(rng)
        )
    document = {"images": images, "annotations": annotations}
    text = json.dumps(document, default=_json_default)
    (folder / "captions_train.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    # A second, broken file beside it: one line, the good file still imported.
    broken = rng.choice([b"", b"[]", b"{", b"null", b'{"images": 1}', b"[" * 50_000, _garble(rng, text.encode())])
    (folder / "captions_zbroken.json").write_bytes(broken)
    return "coco", folder, True


def _write_flickr(folder: Path, rng: random.Random) -> tuple[str, Path, bool]:
    lines = [b"image,caption"]
    for name, text in _fuzz_rows(rng):
        line = f"{name},{text}".encode("utf-8", "surrogatepass")
        if not _is_good(name) and rng.random() < 0.3:
            line = _garble(rng, line).replace(b"\n", b" ")
        if not _is_good(name) and rng.random() < 0.2:
            line = f"{name}#0\t{text}".encode("utf-8", "surrogatepass")
        lines.append(line)
    (folder / "captions.txt").write_bytes(b"\n".join(lines) + b"\n")
    return "flickr8k", folder, True


def _write_parquet(folder: Path, rng: random.Random) -> tuple[str, Path, bool]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images, texts = [], []
    for name, text in _fuzz_rows(rng):
        path = name if isinstance(name, str) else None
        images.append({"bytes": rng.randbytes(rng.randrange(0, 300)) if rng.random() < 0.7 else None,
                       "path": path.encode("utf-8", "replace").decode() if path else None})
        texts.append(text.encode("utf-8", "replace").decode() if isinstance(text, str) else None)
    table = pa.table({"image": pa.array(images, type=image_type), "text": pa.array(texts, type=pa.string())})
    pq.write_table(table, folder / "train.parquet")
    broken = _garble(rng, (folder / "train.parquet").read_bytes())
    (folder / "z-broken.parquet").write_bytes(broken if broken else b"PAR1")
    return "parquet", folder, True


def _write_xmp_sidecars(folder: Path, rng: random.Random) -> tuple[str, Path, bool]:
    packet = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt>'
        '<rdf:li xml:lang="x-default">{text}</rdf:li></rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>'
    )
    for name, text in GOOD.items():
        write_jpeg(folder / name, seed=list(GOOD).index(name) + 1)  # the same photos as the library's
        (folder / name).with_suffix(".xmp").write_text(packet.format(text=text), encoding="utf-8")
    for number in range(rng.randrange(2, 6)):
        write_jpeg(folder / f"bad{number}.jpg", seed=500 + number)
        body = packet.format(text=str(_nasty(rng))).encode("utf-8", "surrogatepass")
        body = rng.choice([
            _garble(rng, body), b"<x:xmpmeta>" + b"<a>" * 5000 + b"</x:xmpmeta>",
            b'<!DOCTYPE x [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x:xmpmeta>&b;</x:xmpmeta>', b"\xff\xfe",
        ])
        (folder / f"bad{number}.xmp").write_bytes(body)
    return "metadata", folder, True


def _write_sidecar_texts(folder: Path, rng: random.Random) -> tuple[str, Path, bool]:
    for name, text in GOOD.items():
        write_jpeg(folder / name, seed=list(GOOD).index(name) + 1)
        (folder / name).with_suffix(".txt").write_text(text, encoding="utf-8")
    for number in range(rng.randrange(2, 6)):
        write_jpeg(folder / f"bad{number}.jpg", seed=600 + number)
        (folder / f"bad{number}.txt").write_bytes(_garble(rng, str(_nasty(rng)).encode("utf-8", "surrogatepass")) or b"\xff")
    return "sidecar", folder, True


WRITERS = {
    "jsonl": _write_jsonl, "csv": _write_csv, "coco": _write_coco, "flickr8k": _write_flickr,
    "parquet": _write_parquet, "xmp-sidecar": _write_xmp_sidecars, "sidecar": _write_sidecar_texts,
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(WRITERS))
def test_fuzz_importer(tmp_path: Path, kind: str) -> None:
    """Seeded malformed files: no exception, good rows kept, nothing opened outside."""
    if kind == "xmp-sidecar":
        pytest.importorskip("pyexiv2")
    photos = tmp_path / "photos"
    for number, name in enumerate(GOOD):
        write_jpeg(photos / name, seed=number + 1)
    library = Library(tmp_path / "lib" / "library.db")
    try:
        library.scan([library.add_root(photos).id])
        rounds = 6 if kind in ("xmp-sidecar", "sidecar", "parquet") else 12
        for seed in range(rounds):
            rng = random.Random(f"{kind}-{seed}")
            source = tmp_path / f"src-{seed}"
            source.mkdir()
            fmt, src, _ = WRITERS[kind](source, rng)
            with recording_opens() as opened:
                stats = import_captions(library, fmt, src)
            assert opened_outside(opened, source, photos, library.path.parent) == [], (seed, stats.problems)
            got = {path: text for path, (text, _source) in current_captions(library).items()}
            assert {name: got.get(name) for name in GOOD} == GOOD, (seed, stats.problems)
            assert all(isinstance(p, str) and "\n" not in p[:1] for p in stats.problems)
    finally:
        library.close()


# -- XMP sidecars and write-metadata through links; one caption length limit --------


def _xmp(text: str) -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt>'
            f'<rdf:li xml:lang="x-default">{text}</rdf:li></rdf:Alt></dc:description></rdf:Description>'
            "</rdf:RDF></x:xmpmeta>")


def test_import_metadata_refuses_a_sidecar_link_out_of_the_source_and_a_huge_sidecar(
    lib: Library, tmp_path: Path, outside: Path, monkeypatch, capsys
) -> None:
    pytest.importorskip("pyexiv2")
    from core.metadata import MAX_SIDECAR_BYTES

    photos = tmp_path / "photos"
    add_photos(lib, photos, ["a.jpg", "b.jpg", "c.jpg"])
    (outside / "secret.xmp").write_text(_xmp(SECRET), encoding="utf-8")
    (photos / "a.xmp").symlink_to(outside / "secret.xmp")  # ln -s /elsewhere/secret.xmp photos/a.xmp
    with open(photos / "b.xmp", "wb") as huge:  # sparse: a sidecar of 16 MiB + 1 byte costs no disk
        huge.truncate(MAX_SIDECAR_BYTES + 1)
    (photos / "c.xmp").write_text(_xmp("a cat on a sofa"), encoding="utf-8")
    with recording_opens() as opened:
        code, _out, err = cli(lib, monkeypatch, capsys, "import", "metadata", str(photos))
    assert code == 1  # done, the two refused sidecars counted as failed items
    assert current_captions(lib) == {"c.jpg": ("a cat on a sofa", "import")}
    assert all(SECRET not in text for text in all_caption_texts(lib))
    assert len([line for line in err.splitlines() if "a.xmp" in line]) == 1
    assert "a.xmp: a link leading outside" in err
    assert f"b.xmp: {MAX_SIDECAR_BYTES + 1:,} bytes, more than an XMP sidecar" in err
    assert opened_outside(opened, photos, lib.path.parent) == []


def test_write_metadata_refuses_a_symlinked_photo(lib: Library, tmp_path: Path, outside: Path, monkeypatch,
                                                  capsys) -> None:
    pytest.importorskip("pyexiv2")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "link.jpg").symlink_to(outside / "a.jpg")  # the scan follows it, as it does linked folders
    add_photos(lib, photos, ["own.jpg"])
    target_before = (outside / "a.jpg").read_bytes()
    with lib.db.write() as session:
        for name, image in images_by_path(lib).items():
            captions.set_human_caption(session, image.id, f"caption of {name}")
    assert set(images_by_path(lib)) == {"link.jpg", "own.jpg"}
    with recording_opens() as opened:
        code, out, err = cli(lib, monkeypatch, capsys, "write-metadata")
    assert code == 1
    assert "captions written into 1 file" in out
    (line,) = [line for line in err.splitlines() if "link.jpg" in line]
    assert "link.jpg: a symbolic link; metadata is not written through links" in line
    assert (outside / "a.jpg").read_bytes() == target_before
    assert (photos / "link.jpg").is_symlink()
    assert opened_outside(opened, photos, lib.path.parent) == []

    # A sidecar that is a link is not read (its text would be copied in) nor written through.
    (photos / "own.xmp").symlink_to(outside / "secret.txt")
    with recording_opens() as opened:
        code, _out, err = cli(lib, monkeypatch, capsys, "write-metadata", "--sidecar")
    assert code == 1
    assert "the sidecar own.xmp is a symbolic link; not written" in err
    assert (outside / "secret.txt").read_text(encoding="utf-8") == SECRET + "\n"
    assert (photos / "own.xmp").is_symlink()
    assert opened_outside(opened, photos, lib.path.parent) == []


def test_a_caption_over_the_limit_is_refused_the_same_way_on_every_path(
    lib: Library, tmp_path: Path, tiny_model_dirs, monkeypatch, capsys
) -> None:
    from core.captioning.engine import run_caption_job
    from core.captioning.job_spec import CaptionJobSpec
    from core.captions import MAX_CAPTION_CHARS, CaptionError
    from core.edits import replace_captions, save_edit

    photos = tmp_path / "photos"
    add_photos(lib, photos, ["a.jpg", "b.jpg"])
    ids = {name: image.id for name, image in images_by_path(lib).items()}
    too_long = "w" * (MAX_CAPTION_CHARS + 1)

    # The editor's save.
    with pytest.raises(CaptionError, match="65,537 characters, more than the limit of 65,536; not stored"):
        save_edit(lib.db, ids["a.jpg"], too_long)
    # An import: that row is one problem line, the rest is imported.
    source = tmp_path / "captions.csv"
    source.write_text(f"file_name,text\na.jpg,{too_long}\nb.jpg,good b\n", encoding="utf-8")
    code, _out, err = cli(lib, monkeypatch, capsys, "import", "csv", str(source))
    assert code == 1 and f"caption of {MAX_CAPTION_CHARS + 1} characters" in err
    assert current_captions(lib) == {"b.jpg": ("good b", "import")}
    # Find-and-replace skips the caption it would take over the limit, as it skips an empty one.
    with lib.db.read() as session:
        current = captions.current_caption(session, ids["b.jpg"])
        candidate = (ids["b.jpg"], current.id, current.text)
    assert replace_captions(lib.db, [candidate], "good", "w" * MAX_CAPTION_CHARS) == []
    # A local model: the job's limit (here tiny, so the tiny model's words exceed it).
    spec = CaptionJobSpec(model=str(tiny_model_dirs["blip"]), device="cpu", optimize="none", max_caption_chars=2,
                          generation=GenerationSettings(min_new_tokens=2, max_new_tokens=4))
    stats = run_caption_job(lib, spec.with_(scope=(ids["a.jpg"],)))
    assert (stats.captioned, stats.errors) == (0, 1)
    assert "a.jpg: captioning failed: the caption has" in stats.problems[0]
    assert "more than the limit of 2; not stored" in stats.problems[0]
    # Nothing over the limit was stored anywhere, and the limit above the job's is the same one.
    assert current_captions(lib) == {"b.jpg": ("good b", "import")}
    with pytest.raises(ValueError, match=f"max_caption_chars must be an integer from 1 to {MAX_CAPTION_CHARS}"):
        CaptionJobSpec(max_caption_chars=MAX_CAPTION_CHARS + 1)
    with lib.db.read() as session:
        assert max(len(text) for text in session.scalars(select(Caption.text))) <= MAX_CAPTION_CHARS


@pytest.mark.parametrize("fmt", ["sidecar", "csv", "imagefolder"])
def test_a_caption_at_the_limit_exports_and_imports_again(lib: Library, tmp_path: Path, fmt: str) -> None:
    from core.captions import MAX_CAPTION_CHARS
    from core.edits import save_edit

    photos = tmp_path / "photos"
    add_photos(lib, photos, ["a.jpg"])
    longest = "\U0001f600" * MAX_CAPTION_CHARS  # 4 bytes each in UTF-8: the largest caption file there is
    save_edit(lib.db, images_by_path(lib)["a.jpg"].id, longest)
    export_dataset(lib, fmt, tmp_path / "out", val_ratio=0)
    with Library(tmp_path / "again" / "library.db") as again:
        add_photos(again, photos, [])
        stats = import_captions(again, fmt, tmp_path / "out", verified=True)
        assert stats.problems == [] and current_captions(again) == {"a.jpg": (longest, "human")}
