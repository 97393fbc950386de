"""The GUI's captioning worker with a real (tiny) model: grid updates, cancel, nothing lost."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PySide6.QtCore import QSettings
from sqlalchemy import select

from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
from core.captions import set_human_caption
from core.models import Caption
from desktop_app.app_settings import AppSettings
from desktop_app.caption_dialog import SCOPE_FILTER, SCOPE_UNCAPTIONED
from tests.support.gui_fakes import build_library
from tests.support.window_helpers import WAIT, make_window, uncaptioned_ids


@pytest.mark.slow
def test_real_tiny_blip_captions_through_the_gui(qtbot, library, photo_dir, tmp_path, tiny_blip_dir):
    settings = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    build_library(library, photo_dir, count=12, model_every=0, human_every=4, bad_files=1)
    window = make_window(qtbot, library, settings, engine=None)  # None: the real engine
    todo = uncaptioned_ids(window)
    landed: list[list[int]] = []
    window.captioning.captions_landed.connect(landed.append)
    request = CaptionJobSpec(model=str(tiny_blip_dir), generation=GenerationSettings(max_new_tokens=6), batch_size=4,
                             device="cpu")
    with qtbot.waitSignal(window.captioning.finished, timeout=120_000) as finished:
        assert window.caption_jobs.start_captioning(request, SCOPE_UNCAPTIONED)
    stats = finished.args[0]
    assert stats.captioned == len(todo) and not stats.cancelled
    assert {i for batch in landed for i in batch} >= todo
    with library.db.read() as session:
        rows = session.execute(select(Caption).where(Caption.is_current.is_(True), Caption.source == "model")).scalars().all()
    assert {c.image_id for c in rows} == todo
    assert all(c.model_name == str(tiny_blip_dir.resolve()) and c.score <= 0 for c in rows)
    for image_id in todo:  # the grid shows what the database holds
        row = window.model.row_data(window.model.row_of(image_id))
        current = next(c for c in rows if c.image_id == image_id)
        assert row.state == "model" and row.caption == current.text

    # Cancel a second (overwrite) run right after its first batch lands: what was
    # committed stays, the rest keeps its earlier caption.
    window.captioning.captions_landed.connect(lambda _ids: window.captioning.cancel())
    request = CaptionJobSpec(model=str(tiny_blip_dir), generation=GenerationSettings(max_new_tokens=5), batch_size=2,
                             device="cpu", overwrite_model_captions=True)
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT * 8) as finished:
        assert window.caption_jobs.start_captioning(request, SCOPE_FILTER)  # the whole (unfiltered) view
    stats = finished.args[0]
    assert stats.cancelled and 0 < stats.captioned < len(todo)
    with library.db.read() as session:
        current = session.scalars(select(Caption).where(Caption.is_current.is_(True), Caption.source == "model")).all()
    assert {c.image_id for c in current} == todo  # nothing lost


@pytest.mark.slow
def test_real_tiny_blip_trains_in_the_window_and_captions_with_the_new_version(qtbot, library, photo_dir, tmp_path,
                                                                                tiny_blip_dir):
    """The whole loop in the window with a real model: caption, train a LoRA version on the
    window's model thread (from the Train dialog), make it active, re-caption with it."""
    from core.training.versions import get_active_version

    settings = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    build_library(library, photo_dir, count=30, model_every=0, human_every=2, bad_files=0)
    # A person's captions in the tiny model's vocabulary (tests/tiny_models.WORDS): words it
    # cannot spell are [UNK], and a model that learned those decodes to nothing.
    colours = ("red", "green", "blue", "yellow", "black", "white")
    with library.db.write() as session:
        humans = session.scalars(select(Caption.image_id).where(Caption.is_current.is_(True),
                                                                Caption.source == "human")).all()
        for k, image_id in enumerate(sorted(humans)):
            set_human_caption(session, image_id, f"a photo of a {colours[k % len(colours)]} square")
    from core.training.current import set_base_model

    set_base_model(library, str(tiny_blip_dir))  # as Preferences → Current model does
    window = make_window(qtbot, library, settings, engine=None)
    request = settings.caption_defaults(library).with_(generation=GenerationSettings(max_new_tokens=5), batch_size=8,
                                                       device="cpu")
    assert request.model == str(tiny_blip_dir)
    with qtbot.waitSignal(window.captioning.finished, timeout=120_000):
        assert window.caption_jobs.start_captioning(request, SCOPE_UNCAPTIONED)

    window.versions.open_train_dialog()
    dialog = window.versions.train_dialog
    assert dialog.base.text() == str(tiny_blip_dir)  # the library's current model
    dialog.name.setText("window-lora")
    dialog.epochs.setValue(4)
    dialog.batch_size.setValue(4)
    dialog.val_ratio.setValue(0.3)
    assert dialog.start_button.isEnabled(), dialog.not_ready.text()
    with qtbot.waitSignal(dialog.version_created, timeout=300_000) as created:
        dialog.start()
        assert window.captioning.model_job is not None
    assert created.args == ["window-lora"] and window.captioning.model_job is None
    assert dialog.table.item(1, 1).text() != "-"  # held-out CIDEr of the new version

    with qtbot.waitSignal(window.captioning.finished, timeout=120_000) as finished:
        dialog.use_requested.emit("window-lora")  # "Make active and re-caption"
    assert get_active_version(library).name == "window-lora"
    assert finished.args[0].captioned == 15  # every photo the base model captioned; the 15 of a person stay
    with library.db.read() as session:
        rows = session.scalars(select(Caption).where(Caption.is_current.is_(True), Caption.source == "model")).all()
    assert len(rows) == 15 and all(c.adapter for c in rows)
    assert {c.model_version_id for c in rows} == {get_active_version(library).id}
    dialog.close()

    # Retraining after the activation: the dialog pre-fills the LoRA version's base, and the
    # real trainer accepts it without edits: it checks name, data and base, then starts
    # loading the model (stopped there: a cancel only lands after the base model's evaluation).
    window.versions.open_train_dialog()
    again = window.versions.train_dialog
    assert again is not dialog and again.base.text() == str(tiny_blip_dir)
    assert not again.continue_from.isEnabled()  # a LoRA adapter is no base to train on
    again.name.setText("window-lora-2")
    again.val_ratio.setValue(0.3)  # this small library's split, as in the first run
    assert again.start_button.isEnabled(), again.not_ready.text()
    messages: list[str] = []

    class Loading(Exception):
        pass

    def real_train_until_loading(library, base, name, config, *, progress, cancel, on_epoch):
        from core.training import train

        def watch(update):
            messages.append(update.message)
            if update.message == "Loading model":
                raise Loading
            progress(update)

        try:
            return train(library, base, name, config, progress=watch, cancel=cancel, on_epoch=on_epoch)
        except Loading:
            return SimpleNamespace(cancelled=True, name=name)

    again._train_fn = real_train_until_loading
    again.start()
    qtbot.waitUntil(lambda: not again.running, timeout=WAIT)
    assert messages[-1:] == ["Loading model"] and again.status.text().startswith("Cancelled"), again.status.text()
    again.close()
