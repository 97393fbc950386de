"""Captioning a kind (``caption --kind K``): a tiny prompted VLM, the server fake, BLIP's refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from captiondesk.cli import main
from core import captions
from core.captioning.engine import run_caption_job
from core.captioning.presets import PRESETS
from core.captioning.prompting import UnsupportedKindError
from core.kinds import parse_keywords
from core.library import Library
from core.models import Caption, Image
from tests.core.captioning.test_server_captioning import _photos, _spec
from tests.support.server_fixtures import FakeServer


def _values(library: Library, kind: str) -> dict[str, Caption]:
    with library.db.read() as session:
        rows = session.execute(select(Image.rel_path, Caption).join(Caption, Caption.image_id == Image.id)
                               .where(Caption.kind == kind, Caption.is_current.is_(True))).all()
    return {path: caption for path, caption in rows}


def _library(tmp_path: Path, count: int = 3) -> Library:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(count):
        PILImage.new("RGB", (40, 32), (60 * i, 120, 200)).save(photos / f"p{i}.jpg")
    library = Library(tmp_path / "lib.db")
    library.scan([library.add_root(photos).id])
    return library


def test_caption_kind_alt_text_and_keywords_with_a_tiny_vlm(tiny_model_dirs, tmp_path, capsys) -> None:
    library = _library(tmp_path)
    with library.db.write() as session:
        ids = dict(session.execute(select(Image.rel_path, Image.id)).all())
        captions.set_human_caption(session, ids["p0.jpg"], "my own caption")
        captions.set_human_caption(session, ids["p1.jpg"], "Dogs, Beach", kind="keywords")
    library.close()
    base = ["--library", str(tmp_path / "lib.db"), "caption", "--all", "--model", str(tiny_model_dirs["llava"]),
            "--device", "cpu", "--optimize", "none", "--max-new-tokens", "6"]
    assert main([*base, "--kind", "alt_text"]) == 0, capsys.readouterr().err
    library = Library(tmp_path / "lib.db")
    try:
        alt = _values(library, "alt_text")
        assert set(alt) == {"p0.jpg", "p1.jpg", "p2.jpg"}  # a person's *caption* does not stop alt text
        assert all(c.source == "model" and c.provenance.preset == "alt_text" for c in alt.values())
        assert all(c.provenance.prompt == PRESETS["alt_text"].instruction for c in alt.values())
        # The captions themselves are untouched: only the person's one exists.
        assert {p: c.text for p, c in _values(library, "caption").items()} == {"p0.jpg": "my own caption"}
    finally:
        library.close()

    code = main([*base, "--kind", "keywords"])
    err = capsys.readouterr().err
    library = Library(tmp_path / "lib.db")
    try:
        keywords = _values(library, "keywords")
        assert keywords["p1.jpg"].text == "dogs\nbeach" and keywords["p1.jpg"].source == "human"
        model_rows = [c for p, c in keywords.items() if p != "p1.jpg"]
        # A random tiny model may write no word at all: that photo's error, never an empty value.
        assert code == 0 or "captioning failed" in err
        assert len(model_rows) + err.count("captioning failed") == 2  # each photo: keywords or its error
        for caption in model_rows:
            assert caption.provenance.preset == "keywords"
            assert "\n".join("|".join(k) for k in parse_keywords(caption.text)) == caption.text  # stored normalized
        with library.db.read() as session:  # the person's keywords were not even offered to the model
            assert [c.source for c in captions.caption_history(session, ids["p1.jpg"], "keywords")] == ["human"]
    finally:
        library.close()


def test_families_that_take_no_prompt_write_only_captions(tiny_blip_dir, tmp_path, capsys) -> None:
    _library(tmp_path, 1).close()
    base = ["--library", str(tmp_path / "lib.db"), "caption", "--all", "--model", str(tiny_blip_dir),
            "--device", "cpu", "--optimize", "none", "--max-new-tokens", "4"]
    assert main([*base, "--kind", "alt_text"]) == 2
    err = capsys.readouterr().err
    assert "the blip family writes only captions" in err and "llava" in err and "--backend openai" in err
    assert main([*base, "--kind", "nope"]) == 2
    assert "no caption kind 'nope'" in capsys.readouterr().err
    library = Library(tmp_path / "lib.db")
    try:
        assert _values(library, "alt_text") == {}
        # Nothing left to caption: the refusal still comes (the family is read from config.json).
        with library.db.write() as session:
            image_id = session.scalar(select(Image.id))
            captions.set_human_caption(session, image_id, "alt by hand", kind="alt_text")
        from core.captioning.job_spec import CaptionJobSpec

        with pytest.raises(UnsupportedKindError):
            run_caption_job(library, CaptionJobSpec(model=str(tiny_blip_dir), device="cpu", kind="alt_text"))
    finally:
        library.close()


def test_the_server_backend_writes_keywords_and_checks_alt_text(library: Library, photo_dir: Path,
                                                                 server: FakeServer, capsys) -> None:
    _photos(library, photo_dir, [(20, 200, 20), (200, 40, 40)], size=(64, 48))
    stats = run_caption_job(library, _spec(server, kind="keywords"))
    assert stats.captioned == 2
    keywords = _values(library, "keywords")
    assert sorted(c.text for c in keywords.values()) == ["photo\ngreen\ncolours|green", "photo\nred\ncolours|red"]
    assert all(c.provenance.prompt == PRESETS["keywords"].instruction for c in keywords.values())
    assert _values(library, "caption") == {}

    server.script(queue=["long", "ok"], long_chars=180)
    stats = run_caption_job(library, _spec(server, kind="alt_text", batch_size=1))
    alt = _values(library, "alt_text")
    assert len(alt) == 2 and stats.captioned == 2
    long = [c for c in alt.values() if len(c.text) > 125]
    assert len(long) == 1 and len(long[0].text) == 179  # checked, not cut (the server strips the last space)
    assert long[0].provenance.length_check == "note" and len(stats.notes) == 1 and "note" in stats.notes[0]

    # The CLI's --kind with the server, and the person rule per kind.
    with library.db.write() as session:
        image_id = next(iter(keywords.values())).image_id
        captions.set_human_caption(session, image_id, "mine", kind="title")
    library.close()
    argv = ["--library", str(library.path), "caption", "--all", "--backend", "openai", "--endpoint", server.endpoint,
            "--model", "llava:latest", "--kind", "title"]
    assert main(argv) == 0, capsys.readouterr().err
    library = Library(library.path)
    try:
        titles = _values(library, "title")
        assert len(titles) == 2 and sum(c.text == "mine" and c.source == "human" for c in titles.values()) == 1
    finally:
        library.close()


def test_the_caption_dialog_writes_the_chosen_kind_of_the_library(qtbot, library: Library, photo_dir: Path,
                                                                  settings, monkeypatch) -> None:
    from core.captioning.server import ServerPrompts
    from core.kinds import add_kind
    from desktop_app.caption_dialog import CaptionDialog
    from tests.support.gui_fakes import FakeEngine, build_library
    from tests.support.window_helpers import make_window

    info = build_library(library, photo_dir, count=6, bad_files=0)
    with library.db.write() as session:
        add_kind(session, "training_prompt", "Training prompt", prompt="Write a training prompt; folder {folder}.")
        captions.set_human_caption(session, info["ids"][1], "mine", kind="training_prompt")
    engine = FakeEngine()
    load = engine.load_captioner

    def prompted(*args, **kwargs):
        captioner = load(*args, **kwargs)
        captioner.family = ServerPrompts()  # a model that takes instructions
        return captioner

    engine.load_captioner = prompted
    window = make_window(qtbot, library, settings, engine)

    def accept(dialog: CaptionDialog) -> CaptionDialog.DialogCode:
        kinds = [dialog.kind.itemData(i) for i in range(dialog.kind.count())]
        assert kinds[0] == "caption" and kinds[-1] == "training_prompt"
        dialog.kind.setCurrentIndex(dialog.kind.findData("training_prompt"))
        dialog.scope_uncaptioned.setChecked(True)
        return CaptionDialog.DialogCode.Accepted

    monkeypatch.setattr(CaptionDialog, "exec", accept)
    before = {p: c.text for p, c in _values(library, "caption").items()}
    with qtbot.waitSignal(window.captioning.finished, timeout=60_000):
        window.caption_jobs.open_caption_dialog()
    written = _values(library, "training_prompt")
    assert len(written) == 6
    model_rows = [c for c in written.values() if c.source == "model"]
    assert len(model_rows) == 5  # "uncaptioned" means: no value of this kind; the person's one stays
    assert {c.provenance.prompt for c in model_rows} == {"Write a training prompt; folder beach.",
                                                         "Write a training prompt; folder city."}
    assert {p: c.text for p, c in _values(library, "caption").items()} == before
