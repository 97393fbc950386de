"""After retraining: one click makes the new version active and re-captions model-only images."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox
from sqlalchemy import select

from core.models import Caption, ModelVersion
from desktop_app.app_settings import AppSettings
from tests.support.gui_fakes import FakeEngine, build_library
from tests.support.window_helpers import WAIT, make_window


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


def test_versions_window_treats_a_restyler_as_a_restyler(qtbot, house_style, tmp_path):
    """A restyler version is listed as one; Activate makes it the active restyler (the captioner
    stays), Evaluate scores it on its held-out caption pairs and Export merged writes it out."""
    from core.training import versions
    from desktop_app.versions_window import COLUMNS, VersionsWindow

    library = house_style.library
    window = VersionsWindow(library, device="cpu")
    qtbot.addWidget(window)
    target = COLUMNS.index("Target")
    rows = {window.table.item(r, 1).text(): r for r in range(window.table.rowCount())}
    assert window.table.item(rows["house-style"], target).text() == "Restyler"
    assert window.table.item(rows["Base model"], target).text() == "Captioner"
    window.select("house-style")
    assert window.activate_button.text() == "Activate as restyler" and "restyler" in window.activate_button.toolTip()
    assert "caption pairs" in window.evaluate_button.toolTip()
    assert window.activate_selected()
    assert versions.get_active_restyler(library).name == "house-style" and versions.get_active_version(library) is None
    assert window.table.item(rows["house-style"], 0).text() == "★" and window.table.item(0, 0).text() == "★"
    assert "active restyler" in window.footer.status.full_text()
    assert not window.activate_button.isEnabled()  # already the active restyler

    with qtbot.waitSignal(window.evaluated, timeout=120_000) as done:
        assert window.evaluate_selected()
    result = done.args[0]
    version = versions.get_version(library, "house-style")
    assert result.split["held_out"] == "validation" and result.version == "house-style"
    assert result.metrics == pytest.approx(version.metrics["trained"])
    assert "held-out caption pairs (validation)" in window.footer.status.full_text()

    out = tmp_path / "merged"
    with qtbot.waitSignal(window.runner.finished, timeout=120_000):
        assert window.export_selected(str(out))
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()


def test_versions_window_shows_each_versions_kind_and_activates_it_for_that_kind(qtbot, library):
    from core.training import versions
    from desktop_app.versions_window import COLUMNS, VersionsWindow

    with library.db.write() as session:
        session.add(ModelVersion(name="cap-1", base_model="org/base"))
        session.add(ModelVersion(name="alt-1", base_model="org/base", config={"kind": "alt_text"}))
    versions.set_active(library, "cap-1")
    window = VersionsWindow(library)
    qtbot.addWidget(window)
    kind_column = COLUMNS.index("Kind")
    shown = {window.table.item(row, 1).text(): window.table.item(row, kind_column).text()
             for row in range(1, window.table.rowCount())}
    assert shown == {"cap-1": "Caption", "alt-1": "Alt text"}
    window.select("cap-1")
    assert window.activate_button.text() == "Activate for Caption"
    window.select("alt-1")
    assert window.activate_button.text() == "Activate for Alt text"
    assert "alt_text" in window.activate_button.toolTip()
    with qtbot.waitSignal(window.changed):
        assert window.activate_selected()
    assert "active model for alt text" in window.footer.status.full_text()
    # Both are active now, each for its own kind: the caption's model did not change.
    assert versions.get_active_version(library, "alt_text").name == "alt-1"
    assert versions.get_active_version(library).name == "cap-1"
    stars = {window.table.item(row, 1).text(): window.table.item(row, 0).text()
             for row in range(window.table.rowCount())}
    assert stars == {"Base model": "", "cap-1": "★", "alt-1": "★"}
