"""After retraining: one click makes the new version active and re-captions model-only images."""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox
from sqlalchemy import select

from core.models import Caption, ModelVersion
from desktop_app.app_settings import AppSettings
from tests.gui_fakes import FakeEngine, build_library
from tests.window_helpers import WAIT, make_window


def test_new_version_recaptions_model_only_images(qtbot, library, photo_dir, tmp_path, monkeypatch):
    settings = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    build_library(library, photo_dir, count=12, model_every=2, human_every=3, bad_files=0)
    with library.db.write() as session:
        session.add(ModelVersion(name="shapes-v2", base_model="fake-base-v2", adapter_path="/adapters/v2"))
    with library.db.read() as session:
        before = {c.image_id: c for c in session.scalars(select(Caption).where(Caption.is_current.is_(True)))}
    humans = {i for i, c in before.items() if c.source == "human"}
    assert humans and any(c.source == "model" for c in before.values())

    engine = FakeEngine()
    window = make_window(qtbot, library, settings, engine)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT) as finished:
        window.versions.offer_new_version("shapes-v2")
    stats = finished.args[0]
    assert stats.captioned == 12 - len(humans) and stats.skipped == len(humans)
    assert engine.loaded == [("fake-base-v2", "/adapters/v2", "auto")]  # the version's parts
    with library.db.read() as session:
        current = {c.image_id: c for c in session.scalars(select(Caption).where(Caption.is_current.is_(True)))}
        active = session.scalar(select(ModelVersion.name).where(ModelVersion.is_active.is_(True)))
    assert active == "shapes-v2"
    for image_id, caption in current.items():
        if image_id in humans:
            assert caption.id == before[image_id].id  # the person's words, untouched
        else:
            assert caption.model_version_id is not None and caption.model_name == "fake-base-v2"
