"""Hostile input, part two: every skip is named.

Ambiguous dataset rows, Unicode forms of one name, unparseable XMP sidecars, FIFOs where
a file is read, unreadable photos of a scan, and messages from exiv2 and model loading:
each case gives one line naming the file or row, the documented exit code, and keeps
what was there.  docs/robustness.md lists these cases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from core import captions
from core.datasets.import_job import import_captions
from core.fingerprint import fingerprint_file
from core.imaging import ImageDecodeError, load_rgb
from core.inputs import NotARegularFile
from core.library import Library
from core.models import Image
from tests.support.imagegen import write_jpeg
from tests.support.library_helpers import current_captions, run_cli
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[Library]:
    library = Library(tmp_path / "library.db")
    yield library
    library.close()


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail instead of blocking forever when something opens a FIFO for reading."""
    def timeout(_signum: int, _frame: object) -> None:
        raise TimeoutError("blocked: a FIFO was opened for reading")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def photos(library: Library, folder: Path, names: list[str]) -> None:
    for number, name in enumerate(names):
        write_jpeg(folder / name, seed=number + 1)
    library.scan([library.add_root(folder).id])


def set_person_caption(library: Library, rel_path: str, text: str) -> None:
    with library.db.write() as session:
        image_id = session.scalar(select(Image.id).where(Image.rel_path == rel_path))
        captions.set_human_caption(session, image_id, text)


def cli(library: Library, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str) -> tuple[int, str, str]:
    code = run_cli(["--library", str(library.path), *args], monkeypatch)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _has_pyexiv2() -> bool:
    try:
        import pyexiv2  # noqa: F401
    except ImportError:
        return False
    return True


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("  warning: ")]


# -- rows that reach one photo only by its file name ----------------------------------


def test_rows_reaching_one_photo_by_file_name_are_ambiguous_and_none_is_imported(
    lib: Library, tmp_path: Path, monkeypatch, capsys
) -> None:
    photos(lib, tmp_path / "photos", ["a/dog.jpg", "b/cat.jpg", "c/bird.jpg"])
    set_person_caption(lib, "a/dog.jpg", "my dog, written by me")
    table = tmp_path / "captions.csv"
    table.write_text(
        "file_name,text\n"
        "x/dog.jpg,a dog from folder x\n"
        "y/dog.jpg,a dog from folder y\n"
        "b/cat.jpg,a cat named by its path\n"
        "q/cat.jpg,a cat from folder q\n"
        "bird.jpg,a bird\n",
        encoding="utf-8",
    )
    code, out, err = cli(lib, monkeypatch, capsys, "import", "csv", str(table))
    assert code == 1  # done, with the ambiguous rows counted as failed items
    lines = warning_lines(err)
    assert len(lines) == 3
    x_line = next(line for line in lines if "('x/dog.jpg')" in line)
    assert "('y/dog.jpg')" in x_line and "none of these rows is imported" in x_line
    y_line = next(line for line in lines if "('y/dog.jpg'): " in line)
    assert "('x/dog.jpg')" in y_line
    q_line = next(line for line in lines if "('q/cat.jpg')" in line)
    assert "('b/cat.jpg') names that photo" in q_line and "not imported" in q_line
    assert current_captions(lib) == {
        "a/dog.jpg": ("my dog, written by me", "human"),
        "b/cat.jpg": ("a cat named by its path", "import"),
        "c/bird.jpg": ("a bird", "import"),
    }
    assert "5 images named, 2 captions added (2 now current" in out
    assert "3 ambiguous" in out


def test_two_rows_naming_one_path_count_one_current_caption(lib: Library, tmp_path: Path) -> None:
    """Two files of one dataset naming the same photo by path: both kept, one is current, counted once."""
    photos(lib, tmp_path / "photos", ["a/dog.jpg"])
    for part, text in (("one", "a dog"), ("two", "a brown dog")):
        (tmp_path / "set" / part).mkdir(parents=True)
        (tmp_path / "set" / part / "metadata.jsonl").write_text(
            json.dumps({"file_name": "a/dog.jpg", "text": text}) + "\n", encoding="utf-8")
    stats = import_captions(lib, "imagefolder", tmp_path / "set")
    assert (stats.imported, stats.current, stats.ambiguous, stats.problems) == (2, 1, 0, [])


# -- one name, two Unicode forms -------------------------------------------------------


def test_names_match_under_unicode_normalization_exact_form_first(
    lib: Library, tmp_path: Path, monkeypatch, capsys
) -> None:
    nfc, nfd = "caf\u00e9.jpg", "cafe\u0301.jpg"
    assert unicodedata.normalize("NFC", nfd) == nfc
    twin_nfc, twin_nfd = "\u00e9t\u00e9.jpg", "e\u0301te\u0301.jpg"
    # macOS writes names decomposed; a dataset made on Linux names them composed.  Linux
    # also allows both forms side by side: then the exact spelling decides.
    photos(lib, tmp_path / "photos", [nfd, f"twins/{twin_nfc}", f"twins/{twin_nfd}"])
    source = tmp_path / "dataset"
    source.mkdir()
    (source / "metadata.jsonl").write_text(
        json.dumps({"file_name": nfc, "text": "a cafe seen from a Mac"}) + "\n"
        + json.dumps({"file_name": f"twins/{twin_nfd}", "text": "the decomposed twin"}) + "\n",
        encoding="utf-8",
    )
    code, out, err = cli(lib, monkeypatch, capsys, "import", "imagefolder", str(source))
    assert code == 0, err
    assert "0 unmatched, 0 ambiguous" in out
    assert current_captions(lib) == {
        nfd: ("a cafe seen from a Mac", "import"),  # NFC row, NFD file: the same name
        f"twins/{twin_nfd}": ("the decomposed twin", "import"),  # exact spelling first
    }


def test_sidecar_in_another_unicode_form_is_found(lib: Library, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photos(lib, folder, ["cr\u00e8me.jpg"])
    (folder / "cre\u0300me.txt").write_text("a bowl of cream", encoding="utf-8")
    stats = import_captions(lib, "sidecar", folder)
    assert stats.problems == [] and stats.unmatched == 0
    assert current_captions(lib) == {"cr\u00e8me.jpg": ("a bowl of cream", "import")}


# -- XMP sidecars that cannot be parsed -----------------------------------------------

_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt>'
    '<rdf:li xml:lang="x-default">{text}</rdf:li></rdf:Alt></dc:description></rdf:Description>'
    "</rdf:RDF></x:xmpmeta>\n<?xpacket end=\"w\"?>"
)


def test_unparseable_xmp_sidecar_is_one_problem_line(lib: Library, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("pyexiv2")
    folder = tmp_path / "photos"
    photos(lib, folder, ["good.jpg", "broken.jpg", "junk.jpg"])
    set_person_caption(lib, "broken.jpg", "kept as it was")
    (folder / "good.jpg.xmp").write_text(_XMP.format(text="a good sidecar"), encoding="utf-8")
    (folder / "broken.jpg.xmp").write_text(_XMP.format(text="<unclosed").replace("</rdf:li>", ""), encoding="utf-8")
    (folder / "junk.jpg.xmp").write_bytes(b"\x00\x01 this is no XMP at all")
    code, _out, err = cli(lib, monkeypatch, capsys, "import", "metadata", str(folder))
    assert code == 1
    lines = warning_lines(err)
    assert len(lines) == 2
    assert any("broken.jpg.xmp" in line and "cannot parse the XMP sidecar" in line for line in lines)
    assert any("junk.jpg.xmp" in line and "cannot parse the XMP sidecar" in line for line in lines)
    assert current_captions(lib) == {
        "good.jpg": ("a good sidecar", "import"),
        "broken.jpg": ("kept as it was", "human"),
    }


# -- FIFOs and other non-regular files ---------------------------------------------------


@needs_fifo
def test_fifos_are_skipped_by_every_reader_with_one_line_each(
    lib: Library, tmp_path: Path, monkeypatch, capsys, no_hang
) -> None:
    folder = tmp_path / "photos"
    photos(lib, folder, ["a.jpg", "b.jpg"])
    os.mkfifo(folder / "pipe.jpg")  # a FIFO named like a photo: the scan names it
    scan = lib.scan()
    assert any("pipe.jpg" in p and "a FIFO (named pipe), not a regular file" in p for p in scan.problems)
    # A photo swapped for a FIFO after the scan: decoding and fingerprinting refuse it at once.
    with pytest.raises(ImageDecodeError, match="FIFO"):
        load_rgb(folder / "pipe.jpg")
    with pytest.raises(NotARegularFile):
        fingerprint_file(folder / "pipe.jpg")
    # imagefolder: a FIFO named metadata.jsonl beside a good one (the hostile user's hang)
    dataset = tmp_path / "dataset"
    (dataset / "good").mkdir(parents=True)
    (dataset / "good" / "metadata.jsonl").write_text(json.dumps({"file_name": "a.jpg", "text": "an a"}) + "\n",
                                                      encoding="utf-8")
    (dataset / "evil").mkdir()
    os.mkfifo(dataset / "evil" / "metadata.jsonl")
    code, out, err = cli(lib, monkeypatch, capsys, "import", "imagefolder", str(dataset))
    assert code == 1
    assert warning_lines(err) == [
        f"  warning: {dataset / 'evil' / 'metadata.jsonl'}: cannot read (a FIFO (named pipe), not a regular file)"
    ]
    assert "1 captions added" in out
    # csv, coco, parquet, flickr8k: the FIFO is one problem line, the good file is read
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "a.csv").write_text("file_name,text\nb.jpg,a b\n", encoding="utf-8")
    os.mkfifo(tables / "z.csv")
    os.mkfifo(tables / "captions_val.json")
    os.mkfifo(tables / "z.parquet")
    for fmt, src, name in (("csv", tables, "z.csv"), ("coco", tables / "captions_val.json", "captions_val.json"),
                           ("parquet", tables, "z.parquet")):
        if fmt == "parquet":
            pytest.importorskip("pyarrow")
        try:
            stats = import_captions(lib, fmt, src)
        except Exception as exc:  # noqa: BLE001 - the source-level refusal is a clear user error too
            assert name in str(exc) and "not a regular file" in str(exc), (fmt, exc)
            continue
        assert [p for p in stats.problems if name in p and "not a regular file" in p], (fmt, stats.problems)
    flickr = tmp_path / "flickr"
    flickr.mkdir()
    os.mkfifo(flickr / "captions.txt")
    code, _out, err = cli(lib, monkeypatch, capsys, "import", "flickr8k", str(flickr))
    assert code == 2 and f"{flickr / 'captions.txt'}: a FIFO (named pipe), not a regular file" in err
    # sidecar and metadata imports: a FIFO photo or sidecar is named, never opened
    side = tmp_path / "side"
    side.mkdir()
    os.mkfifo(side / "pipe.jpg")
    (side / "pipe.txt").write_text("a caption for a pipe", encoding="utf-8")
    stats = import_captions(lib, "sidecar", side)
    assert stats.problems == [f"{side / 'pipe.jpg'}: a FIFO (named pipe), not a regular file; skipped"]
    if _has_pyexiv2():
        os.mkfifo(folder / "b.jpg.xmp")
        stats = import_captions(lib, "metadata", folder)
        assert any("b.jpg.xmp" in p and "not a regular file" in p for p in stats.problems), stats.problems
        assert any("pipe.jpg" in p and "not a regular file; skipped" in p for p in stats.problems), stats.problems
    assert current_captions(lib) == {"a.jpg": ("an a", "import"), "b.jpg": ("a b", "import")}
    if _has_pyexiv2():  # write-metadata into a sidecar that is a FIFO: named, not blocked on
        code, _out, err = cli(lib, monkeypatch, capsys, "write-metadata", "--sidecar", "--sidecar-naming", "full")
        assert code == 1
        assert f"  warning: {folder / 'b.jpg'}: {folder / 'b.jpg.xmp'}: a FIFO (named pipe), not a regular file; not read" \
            in err.splitlines()


# -- scan names its unreadable photos -----------------------------------------------------


def test_scan_names_every_unreadable_photo(lib: Library, tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "photos"
    write_jpeg(folder / "fine.jpg", seed=1)
    for number in range(25):
        (folder / f"bad{number:02}.jpg").write_bytes(b"this is not a JPEG")
    lib.add_root(folder)
    code, _out, err = cli(lib, monkeypatch, capsys, "scan")
    assert code == 1
    named = [line for line in err.splitlines() if line.startswith("  unreadable: ")]
    assert len(named) == 20
    assert named[0].startswith(f"  unreadable: {folder / 'bad00.jpg'}: ")
    assert "  ... and 5 more unreadable" in err.splitlines()
    code, out, _err = cli(lib, monkeypatch, capsys, "scan", "--json")
    payload = json.loads(out)
    assert code == payload["exit_code"] == 1 and payload["counts"]["errors"] == 25
    assert [entry.split(": ")[0] for entry in payload["unreadable"]] == [
        str(folder / f"bad{number:02}.jpg") for number in range(25)
    ]
    assert len(lib.status()) == 1  # nothing lost: the library still lists the folder


# -- messages: exiv2, hub kernels, remote code ------------------------------------------


def test_exiv2_messages_are_one_line(lib: Library, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("pyexiv2")
    folder = tmp_path / "photos"
    photos(lib, folder, ["a.jpg"])
    set_person_caption(lib, "a.jpg", "a red square")
    # An XMP packet exiv2 refuses: its message ends in a newline.
    broken = _XMP.format(text="x").replace("</rdf:Description>", "<oops></rdf:Description>")
    (folder / "a.jpg.xmp").write_text(broken, encoding="utf-8")
    before = (folder / "a.jpg.xmp").read_bytes()
    code, out, err = cli(lib, monkeypatch, capsys, "write-metadata", "--sidecar", "--json")
    payload = json.loads(out)
    assert code == payload["exit_code"] == 1
    assert len(payload["problems"]) == 1 and "a.jpg.xmp" in payload["problems"][0]
    assert "XMP Toolkit error" in payload["problems"][0]
    assert "\n" not in payload["problems"][0] and not payload["problems"][0].endswith(" ")
    assert "\n\n" not in err and "" not in err.splitlines()
    assert (folder / "a.jpg.xmp").read_bytes() == before


def test_hub_kernel_publisher_notice_is_silent_unless_verbose() -> None:
    script = (
        "import logging, sys, warnings\n"
        "from captiondesk.common import quiet_third_party\n"
        "quiet_third_party(sys.argv[1] == 'verbose')\n"
        "logging.basicConfig()\n"
        "logging.getLogger('kernels.layer').warning(\"Skipping publisher trust check for 'kernels-community/x'\")\n"
        "warnings.warn(\"Skipping publisher trust check for 'kernels-community/y'\")\n"
        "logging.getLogger('kernels').error('a real kernel error')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    quiet = subprocess.run([sys.executable, "-c", script, "quiet"], capture_output=True, text=True, env=env,
                           timeout=60, check=True)
    assert "publisher trust" not in quiet.stderr and "a real kernel error" in quiet.stderr
    verbose = subprocess.run([sys.executable, "-c", script, "verbose"], capture_output=True, text=True, env=env,
                             timeout=60, check=True)
    assert verbose.stderr.count("Skipping publisher trust check") == 2


def test_remote_code_model_is_refused_with_a_complete_message(
    lib: Library, tmp_path: Path, monkeypatch, capsys
) -> None:
    model = tmp_path / "custom-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "my_custom_vlm", "architectures": ["MyModel"],
        "auto_map": {"AutoConfig": "configuration_my.MyConfig",
                     "AutoModelForImageTextToText": "modeling_my.MyModel"},
    }), encoding="utf-8")
    (model / "configuration_my.py").write_text("raise SystemExit('remote code ran')\n", encoding="utf-8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    photos(lib, tmp_path / "photos", ["a.jpg", "b.jpg"])
    set_person_caption(lib, "a.jpg", "mine")
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - a prompt would read it and fail
    code, _out, err = cli(lib, monkeypatch, capsys, "caption", "--all", "--model", str(model))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    message = next(line for line in lines if "custom-model" in line)
    assert "my_custom_vlm" in message and "never runs a model's own code" in message
    assert "Use a model whose type" in message and message.endswith(".")
    assert "trust_remote_code" not in err and "..." not in message
    assert current_captions(lib) == {"a.jpg": ("mine", "human")}
