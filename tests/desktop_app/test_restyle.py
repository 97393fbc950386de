"""The restyle stage in the window: the Caption dialog's "Then restyle with…" choice, and a
caption job followed by its restyle stage on the model thread (fake captioner, restyler on
the fake OpenAI-compatible server), whose provenance the caption panel shows."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select

from core.captioning import CaptionResult
from core.captioning.job_spec import CaptionJobSpec
from core.models import Caption
from core.restyle.job import TwoStageStats
from core.restyle.spec import RestyleSpec
from desktop_app.caption_dialog import SCOPE_LIBRARY, SCOPE_UNCAPTIONED, CaptionDialog
from tests.support.gui_fakes import FakeEngine, build_library
from tests.support.server_fixtures import FakeServer
from tests.support.window_helpers import WAIT, make_window

#: Set to a folder to save the screenshots of the dialog and of a two-stage caption's provenance.
SHOTS = os.environ.get("CAPTIONDESK_SCREENSHOTS")


def test_caption_dialog_offers_the_restyle_stage(qtbot) -> None:
    dialog = CaptionDialog(defaults=CaptionJobSpec(model="my/model"), known_models=[], selection_count=0,
                           filter_count=3, uncaptioned_count=3, restylers=["house-style", "gallery-labels"])
    qtbot.addWidget(dialog)
    assert dialog.restyle_spec() is None  # off unless asked for
    dialog.restyle_box.setChecked(True)
    assert dialog.restyler.currentText() == "house-style"  # the active restyler comes first
    dialog.style.setText("Short gallery labels.")
    spec = dialog.restyle_spec()
    assert (spec.restyler, spec.style, spec.backend) == ("house-style", "Short gallery labels.", "local")
    dialog.backend.setCurrentIndex(dialog.backend.findData("openai"))
    dialog.endpoint.setText("http://localhost:11434/v1")
    dialog.restyler.setCurrentText("qwen2.5:7b")
    spec = dialog.restyle_spec()
    assert (spec.backend, spec.endpoint, spec.restyler) == ("openai", "http://localhost:11434/v1", "qwen2.5:7b")
    if SHOTS:
        dialog.backend.setCurrentIndex(0)
        dialog.restyler.setCurrentText("house-style")
        dialog.show()
        qtbot.waitExposed(dialog)
        dialog.grab().save(str(Path(SHOTS) / "caption-dialog-restyle.png"))


def test_caption_then_restyle_on_the_model_thread(qtbot, library, photo_dir, settings, server: FakeServer) -> None:
    build_library(library, photo_dir, count=6, model_every=0, human_every=3, bad_files=0)
    with library.db.read() as session:
        person = {c.image_id: c.text for c in session.scalars(select(Caption).where(Caption.source == "human"))}
    assert person
    window = make_window(qtbot, library, settings, FakeEngine())
    restyle = RestyleSpec("qwen2.5:7b", style="Title case, full stop.", backend="openai", endpoint=server.endpoint)
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT) as finished:
        assert window.caption_jobs.start_captioning(CaptionJobSpec(model="fake-model", batch_size=2),
                                                    SCOPE_UNCAPTIONED, restyle)
    stats = finished.args[0]
    assert isinstance(stats, TwoStageStats) and stats.errors == 0
    assert stats.captioning.captioned == stats.restyling.restyled == 6 - len(person)
    assert "Restyling finished" in stats.summary()
    with library.db.read() as session:
        current = list(session.scalars(select(Caption).where(Caption.is_current.is_(True))))
    for caption in current:
        if caption.image_id in person:  # a person's caption is never restyled
            assert caption.text == person[caption.image_id] and (caption.provenance is None or "restyle" not in caption.provenance.extra)
        else:
            assert caption.text.startswith("A photo ") and caption.text.endswith(".")
            assert caption.model_name == "fake-model" and caption.provenance.extra["restyle"]["restyler"] == "qwen2.5:7b"
    assert all(text.startswith("a photo ") for text in server.counters()["texts"])

    # The caption panel names both stages.
    restyled = next(c for c in current if c.image_id not in person)
    window.image_review.go_to_row(window.model.row_of(restyled.image_id))
    qtbot.waitUntil(lambda: "Restyler: qwen2.5:7b" in window.panel.model_meta.toolTip(), timeout=WAIT)
    meta = window.panel.model_meta.toolTip()
    current_line = window.panel.provenance.toolTip().splitlines()[0]
    assert current_line.startswith("Current: captioner fake-model, restyler qwen2.5:7b"), current_line
    assert "Captioner: fake-model" in meta and "Style: “Title case, full stop.”" in meta
    assert window.panel.history.topLevelItem(0).text(1) == "fake-model → qwen2.5:7b"
    if SHOTS:
        window.panel.grab().save(str(Path(SHOTS) / "two-stage-provenance.png"))


def test_train_dialog_offers_a_restyler_when_people_corrected_model_captions(qtbot, library, tmp_path,
                                                                            tiny_lm_dir) -> None:
    from core.training.versions import get_version
    from desktop_app.train_dialog import TrainDialog
    from tests.support.tiny_text_models import make_pair_library

    empty = TrainDialog(library, base_model="tiny")
    qtbot.addWidget(empty)
    assert not empty.restyler.isEnabled()  # no pairs yet: not offered, and it says why
    assert "no model caption corrected" in empty.restyler.text()

    pairs_library, held_out = make_pair_library(tmp_path / "pairs.db", tmp_path / "photos", held_out=8)
    dialog = TrainDialog(pairs_library)
    qtbot.addWidget(dialog)
    count = dialog.restyler.property("pairs")
    assert count == 108 - len(held_out) and f"{count:,} model captions" in dialog.restyler.text()
    dialog.restyler.setChecked(True)
    assert dialog.base.text() == "" and "text model" in dialog.base.placeholderText()
    dialog.base.setText(str(tiny_lm_dir))
    dialog.name.setText("gallery-style")
    dialog.epochs.setValue(1)
    with qtbot.waitSignal(dialog.version_created, timeout=120_000) as created:
        dialog.start()
    assert created.args == ["gallery-style"]
    assert get_version(pairs_library, "gallery-style").config["target"] == "restyler"
    # Even a restyler that beat its base offers no "Make active and re-caption": it captions nothing.
    dialog._on_finished(replace(dialog.result, beats_base=True))
    assert dialog.use_button.isHidden()


class _FirstFails(FakeEngine):
    """A fake engine whose captioner generates nothing for the first image it sees (that image's error)."""

    def load_captioner(self, *args, **kwargs):
        captioner = super().load_captioner(*args, **kwargs)
        generate = captioner.generate

        def first_fails(batch, settings):
            results = generate(batch, settings)
            if captioner.batches == 1:
                results[0] = CaptionResult("", -0.5)
            return results

        captioner.generate = first_fails
        return captioner


def test_then_restyle_restyles_only_the_captions_this_job_wrote(qtbot, library, photo_dir, settings,
                                                                 server: FakeServer) -> None:
    build_library(library, photo_dir, count=6, model_every=1, human_every=0, bad_files=0)
    window = make_window(qtbot, library, settings, _FirstFails())
    restyle = RestyleSpec("qwen2.5:7b", style="Title case, full stop.", backend="openai", endpoint=server.endpoint)
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT) as finished:
        assert window.caption_jobs.start_captioning(CaptionJobSpec(model="fake-model", batch_size=2),
                                                    SCOPE_LIBRARY, restyle)
    stats = finished.args[0]
    assert stats.captioning.captioned == stats.restyling.restyled == 5 and stats.captioning.errors == 1
    with library.db.read() as session:
        current = list(session.scalars(select(Caption).where(Caption.is_current.is_(True))))
    failed = [c for c in current if c.model_name != "fake-model"]
    # The image whose captioning failed keeps its older caption, and that is not restyled.
    assert len(failed) == 1 and "restyle" not in failed[0].provenance.extra
    assert all(c.provenance.extra["restyle"]["restyler"] == "qwen2.5:7b" for c in current if c not in failed)
    assert len(server.counters()["texts"]) == 5
