"""Zero-shot restyling with a server chat model (tests/support/fake_openai_server.py): both stages
through the OpenAI-compatible backend, the style prompt sent, both stages in provenance,
one error per failing caption, and a person's caption never restyled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from core import captions
from core.captioning.engine import run_caption_job
from core.captioning.job_spec import CaptionJobSpec
from core.library import Library
from core.models import Caption, CaptionSource, Image
from core.restyle.job import run_restyle_job
from core.restyle.spec import RestyleError, RestyleSpec
from tests.support.imagegen import write_jpeg
from tests.support.library_helpers import run_cli
from tests.support.server_fixtures import FakeServer

STYLE = "Rewrite as a title-case caption with a full stop."
RED, GREEN, BLUE = (200, 40, 40), (20, 200, 20), (30, 30, 220)


def _current(library: Library) -> dict[str, Caption]:
    with library.db.read() as session:
        rows = session.execute(select(Image.rel_path, Caption).join(Caption, Caption.image_id == Image.id)
                               .where(Caption.is_current.is_(True)))
        return {path: caption for path, caption in rows}


def test_zero_shot_restyle_through_the_server(tmp_path: Path, server: FakeServer,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    for name, color in (("a_red", RED), ("b_green", GREEN), ("c_blue", BLUE), ("d_person", RED)):
        write_jpeg(photos / f"{name}.jpg", color=color, size=(64, 48), seed=len(name))
    library = Library(tmp_path / "lib.db")
    library.scan([library.add_root(photos).id])
    # First stage: the server captions every photo; then a person writes one caption themselves.
    stats = run_caption_job(library, CaptionJobSpec(model="llava:latest", backend="openai", endpoint=server.endpoint))
    assert stats.captioned == 4
    with library.db.write() as session:
        person = session.scalar(select(Image.id).where(Image.rel_path == "d_person.jpg"))
        captions.set_human_caption(session, person, "my own words")
    server.script(fail_colors=["green"])

    code = run_cli(["--library", str(tmp_path / "lib.db"), "restyle", "--all", "--backend", "openai",
                    "--endpoint", server.endpoint, "--with", "llava:latest", "--style", STYLE, "--json"], monkeypatch)
    out = json.loads(capsys.readouterr().out)
    assert code == 1, out  # one caption failed: exit 1, the others are stored
    assert (out["counts"]["restyled"], out["counts"]["errors"]) == (2, 1)
    assert any("b_green.jpg" in problem and "restyling failed" in problem for problem in out["problems"])

    counters = server.counters()
    texts = counters["texts"]
    assert sorted(texts) == ["a 64x48 blue photo", "a 64x48 green photo", "a 64x48 red photo"]
    assert "my own words" not in texts  # a person's caption is never sent, never restyled
    assert counters["prompts"][-3:] == [STYLE] * 3

    current = _current(library)
    assert current["d_person.jpg"].text == "my own words" and current["d_person.jpg"].source == CaptionSource.HUMAN
    assert current["b_green.jpg"].text == "a 64x48 green photo"  # its error left the caption as it was
    red = current["a_red.jpg"]
    assert red.text == "A 64x48 red photo." and red.source == CaptionSource.MODEL
    assert red.model_name == "llava:latest"  # the first stage stays the row's model
    assert red.provenance.identity["backend"] == "openai"  # ... with its provenance
    record = red.provenance.extra["restyle"]
    assert record["restyler"] == "llava:latest" and record["backend"] == "openai" and record["style"] == STYLE
    assert record["endpoint"] == f"127.0.0.1:{server.port}"
    assert record["source_text"] == "a 64x48 red photo" and record["captioner_score"] is not None
    assert red.score == pytest.approx(-0.1)  # the restyler's confidence

    # Resume: the rerun sends only the caption that failed.
    server.script(fail_colors=[])
    stats = run_restyle_job(library, RestyleSpec("llava:latest", style=STYLE, backend="openai",
                                                 endpoint=server.endpoint))
    assert (stats.restyled, stats.errors) == (1, 0)
    assert server.counters()["texts"][-1] == "a 64x48 green photo"
    # Another style restyles the first stage's text again, never a restyled one.
    run_restyle_job(library, RestyleSpec("llava:latest", style="Shout.", backend="openai", endpoint=server.endpoint))
    assert sorted(server.counters()["texts"][-3:]) == sorted(texts)
    assert _current(library)["d_person.jpg"].text == "my own words"


def test_captioner_and_restyler_versions_are_not_interchangeable(tmp_path: Path) -> None:
    from core.captioning.errors import ModelLoadError
    from core.captioning.registry import resolve_model
    from core.models import ModelVersion

    library = Library(tmp_path / "lib.db")
    with library.db.write() as session:
        session.add(ModelVersion(name="my-blip", base_model="/nowhere", family="blip", method="lora", config={}))
        session.add(ModelVersion(name="my-style", base_model="/lm", family="causal-lm", method="lora",
                                 config={"target": "restyler", "style": "Short."}))
    with pytest.raises(RestyleError, match="captioner version"):
        run_restyle_job(library, RestyleSpec("my-blip"))
    with pytest.raises(ModelLoadError, match="restyler version"):
        resolve_model(library, "my-style", None)
    with pytest.raises(RestyleError, match="endpoint"):
        RestyleSpec("x", backend="openai")
