"""The File/Model/Edit/Help dialogs, driven with pytest-qt over a real library and the real core.

Export output is loaded with ``datasets``; imported captions are read back from the
database; captions written into photos are read back with pyexiv2; version actions are
checked in the database and on disk, and Evaluate runs a tiny real BLIP model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from sqlalchemy import select

from core.models import Caption, Image, ModelVersion
from core.training import versions
from desktop_app.app_settings import AppSettings
from desktop_app.dialog_kit import SCOPE_FILTER, SCOPE_FOLDER, SCOPE_LIBRARY, SCOPE_SELECTION, Scope
from desktop_app.export_dialog import ExportDialog
from desktop_app.help_dialogs import LibraryLocationDialog, SelfCheckDialog, ShortcutsDialog
from desktop_app.import_dialog import ImportDialog
from desktop_app.metadata_dialog import MetadataDialog
from desktop_app.preferences_dialog import PreferencesDialog
from desktop_app.versions_window import VersionsWindow
from tests.support.gui_fakes import build_library
from tests.support.imagegen import write_jpeg

WAIT = 60_000


def current(library) -> dict[str, tuple[str, str]]:
    """rel_path → (text, source) of every current caption."""
    with library.db.read() as session:
        rows = session.execute(
            select(Image.rel_path, Caption.text, Caption.source)
            .join(Caption, (Caption.image_id == Image.id) & Caption.is_current.is_(True))
        ).all()
    return {rel: (text, source) for rel, text, source in rows}


@pytest.fixture
def built(library, photo_dir):
    info = build_library(library, photo_dir, count=12, model_every=1, human_every=3, bad_files=0)
    return info


# -- export --------------------------------------------------------------------------------


def test_export_dialog_previews_counts_and_writes_a_loadable_imagefolder(qtbot, library, built, tmp_path):
    import datasets

    dialog = ExportDialog(library, Scope(selection=tuple(built["ids"][:6])))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: hasattr(dialog, "preview_counts"), timeout=WAIT)
    humans = {rel for rel, (_t, source) in current(library).items() if source == "human"}
    assert sum(dialog.preview_counts.values()) == len(humans) == 4  # verified only, whole library
    dialog.all_captioned.setChecked(True)
    dialog.val_ratio.setValue(0.25)
    qtbot.waitUntil(lambda: sum(dialog.preview_counts.values()) == 12, timeout=WAIT)
    counts = dict(dialog.preview_counts)
    assert counts["validation"] > 0 and counts["train"] > 0
    assert str(counts["train"]) in dialog.summary.full_text()

    out = tmp_path / "dataset"
    dialog.out.setText(str(out))
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT) as done:
        assert dialog.start()
    stats = done.args[0]
    assert stats.out == out and (stats.train, stats.validation) == (counts["train"], counts["validation"])
    assert dialog.show_button.isVisibleTo(dialog)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    assert loaded["train"].num_rows == counts["train"] and loaded["validation"].num_rows == counts["validation"]
    texts = {text for text, _source in current(library).values()}
    assert set(loaded["train"]["text"]) <= texts

    # The selection scope narrows to the selected images.
    dialog.scope_picker.set_key(SCOPE_SELECTION)
    qtbot.waitUntil(lambda: sum(dialog.preview_counts.values()) == 6, timeout=WAIT)
    dialog.out.setText(str(tmp_path / "selected"))
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT) as done:
        dialog.start()
    assert done.args[0].exported == 6


def test_export_dialog_lays_a_sidecar_export_out_for_the_trainer(qtbot, library, built, tmp_path):
    dialog = ExportDialog(library, Scope())
    qtbot.addWidget(dialog)
    dialog.all_captioned.setChecked(True)
    dialog.format.setCurrentIndex(dialog.format.findData("sidecar"))
    assert dialog.trainer.currentData() == "onetrainer" and dialog.trainer.isEnabled()
    dialog.caption_extension.setCurrentText(".caption")
    dialog.trainer.setCurrentIndex(dialog.trainer.findData("ai-toolkit"))
    assert dialog.caption_extension.currentText() == ".txt" and not dialog.caption_extension.isEnabled()
    dialog.trainer.setCurrentIndex(dialog.trainer.findData("onetrainer"))
    out = tmp_path / "onetrainer"
    dialog.out.setText(str(out))
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT) as done:
        assert dialog.start()
    stats = done.args[0]
    assert stats.exported == 12 and stats.unread == 0
    images = [p for p in out.rglob("*") if p.is_file() and p.suffix.lower() in {".jpg", ".png"}]
    assert len(images) == 12 and {p.parent.name for p in images} <= {"train", "validation"}  # flat
    assert all(p.with_suffix(".txt").is_file() for p in images)
    dialog.format.setCurrentIndex(dialog.format.findData("csv"))
    assert not dialog.trainer.isEnabled() and not dialog.variants.isEnabled()


def test_export_dialog_cancel_leaves_nothing(qtbot, library, built, tmp_path):
    dialog = ExportDialog(library, Scope())
    qtbot.addWidget(dialog)
    dialog.all_captioned.setChecked(True)
    dialog.out.setText(str(tmp_path / "never"))
    # Cancel right after Start, in the same GUI-thread call: the token is set before the
    # worker has counted the images, so core stops before the first one.
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT) as done:
        dialog.start()
        dialog.runner.cancel()
    assert done.args[0].cancelled and not (tmp_path / "never").exists()
    assert "nothing was written" in dialog.footer.status.full_text()


def test_scope_folder_and_filter_reach_core(qtbot, library, built, photo_dir, tmp_path):
    from core.queries import ImageFilter

    dialog = ExportDialog(library, Scope(folder=str(photo_dir / "beach"), flt=ImageFilter(text="market"),
                                         filter_count=1))
    qtbot.addWidget(dialog)
    dialog.all_captioned.setChecked(True)
    dialog.scope_picker.set_key(SCOPE_FOLDER)
    beach = sum(1 for rel in current(library) if rel.startswith("beach/"))
    qtbot.waitUntil(lambda: sum(getattr(dialog, "preview_counts", {"x": -1}).values()) == beach, timeout=WAIT)
    dialog.scope_picker.set_key(SCOPE_FILTER)
    market = sum(1 for text, _s in current(library).values() if "market" in text)
    assert 0 < market < beach
    qtbot.waitUntil(lambda: sum(dialog.preview_counts.values()) == market, timeout=WAIT)


# -- import --------------------------------------------------------------------------------


def test_import_dialog_imports_sidecars_as_verified(qtbot, library, photo_dir, tmp_path):
    for k in range(3):
        write_jpeg(photo_dir / f"p{k}.jpg", seed=k)
    library.scan([library.add_root(photo_dir).id])
    src = tmp_path / "src"
    src.mkdir()
    for k in range(3):
        shutil.copy(photo_dir / f"p{k}.jpg", src / f"p{k}.jpg")
        (src / f"p{k}.txt").write_text(f"a person wrote caption {k}", encoding="utf-8")
    (src / "stranger.txt").write_text("no image for this one", encoding="utf-8")
    write_jpeg(src / "stranger.jpg", seed=99)

    dialog = ImportDialog(library)
    qtbot.addWidget(dialog)
    dialog.format.setCurrentIndex(dialog.format.findData("sidecar"))
    dialog.source.setText(str(src))
    dialog.verified.setChecked(True)
    assert "training" in dialog.verified_help.text()
    # Nothing is imported before the preview: Import is off, and a start previews first.
    assert not dialog.footer.start_button.isEnabled()
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT):
        assert dialog.start()
    assert current(library) == {} and dialog.footer.start_button.isEnabled()
    assert dialog.plan_label.text() == ("Will add 3 captions (3 become current, 0 kept beside a person's caption, "
                                        "none replaced), 0 already there, 1 not in the library")
    assert dialog.details.toPlainText() == "Not in the library: stranger.jpg"
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT) as done:
        assert dialog.start()
    stats = done.args[0]
    assert stats.imported == 3 and stats.unmatched == 1
    assert current(library) == {f"p{k}.jpg": (f"a person wrote caption {k}", "human") for k in range(3)}
    # The whole result, wrapped in the dialog (not elided, not only in a tooltip).
    assert dialog.plan_label.text().startswith("Imported: 3 verified captions added")
    assert dialog.plan_label.wordWrap() and dialog.plan_label.text().endswith("1 not in the library")
    assert dialog.plan_label.heightForWidth(dialog.plan_label.width()) <= dialog.plan_label.height()


def test_import_dialog_replace_previews_then_replaces_peoples_captions(qtbot, library, photo_dir, tmp_path):
    from core import captions

    for k in range(3):
        write_jpeg(photo_dir / f"p{k}.jpg", seed=k)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        for image in session.scalars(select(Image)):
            captions.set_human_caption(session, image.id, f"old caption of {image.rel_path}")
    src = tmp_path / "edited"
    src.mkdir()
    for k in range(3):
        shutil.copy(photo_dir / f"p{k}.jpg", src / f"p{k}.jpg")
        text = f"old caption of p{k}.jpg" if k == 2 else f"edited elsewhere {k}"  # p2 left as it was
        (src / f"p{k}.txt").write_text(text + "\n", encoding="utf-8")
    before = current(library)

    dialog = ImportDialog(library)
    qtbot.addWidget(dialog)
    dialog.format.setCurrentIndex(dialog.format.findData("sidecar"))
    dialog.source.setText(str(src))
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT):
        dialog.replace.setChecked(True)  # ticking it shows the preview at once
    assert dialog.verified.isChecked() and not dialog.verified.isEnabled()
    assert (dialog.plan.replaced, dialog.plan.unchanged, dialog.plan.dry_run) == (2, 1, True)
    assert "Will replace 2 captions a person wrote" in dialog.plan_label.text()
    assert current(library) == before and library.jobs("import") == []  # the preview wrote nothing
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT) as done:
        assert dialog.start()
    stats = done.args[0]
    assert (stats.replaced, stats.imported, stats.dry_run) == (2, 2, False)
    assert current(library) == {
        "p0.jpg": ("edited elsewhere 0", "human"), "p1.jpg": ("edited elsewhere 1", "human"),
        "p2.jpg": ("old caption of p2.jpg", "human"),
    }
    assert "2 replacing a person's caption" in dialog.plan_label.text()
    # Changing a choice asks for a new preview before anything is imported.
    dialog.source.setText(str(photo_dir))
    assert "Not previewed yet" in dialog.plan_label.text()
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT):
        assert dialog.start()
    assert dialog.plan.dry_run and len(library.jobs("import")) == 1


def test_export_dialog_keeps_its_controls_in_place_when_the_format_changes(qtbot, library, built, tmp_path):
    dialog = ExportDialog(library, Scope())
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    controls = [dialog.caption_extension, dialog.verified_only, dialog.all_captioned, dialog.val_ratio, dialog.out,
                dialog.footer.start_button]

    def places():
        return [w.mapTo(dialog, w.rect().topLeft()) for w in controls], dialog.size()

    before = places()
    for index in range(dialog.format.count()):
        dialog.format.setCurrentIndex(index)
        qtbot.wait(1)
        assert places() == before, dialog.format.currentData()
    # An old result line goes as soon as a setting changes.
    dialog.footer.finish("Done: 4 images exported")
    dialog.show_button.setVisible(True)
    dialog.seed.setValue(dialog.seed.value() + 1)
    assert dialog.footer.status.full_text() == "" and not dialog.show_button.isVisible()
    assert places() == before


def test_file_dialogs_start_in_pictures_or_the_last_folder_used(tmp_path):
    from desktop_app.dialog_kit import remember_folder, start_folder

    assert Path(start_folder("w2-test-kind")).is_dir()
    (tmp_path / "shots").mkdir()
    (tmp_path / "shots" / "a.csv").write_text("x")
    remember_folder("w2-test-kind", str(tmp_path / "shots" / "a.csv"))  # a file: its folder counts
    assert start_folder("w2-test-kind") == str(tmp_path / "shots")


# -- write metadata ------------------------------------------------------------------------


def test_metadata_dialog_shows_the_dry_run_then_writes_and_reads_back(qtbot, library, built, photo_dir):
    import pyexiv2

    before = {p: p.read_bytes() for p in photo_dir.rglob("*.jpg")}
    dialog = MetadataDialog(library, Scope())
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.plan is not None and not dialog.runner.running, timeout=WAIT)
    assert dialog.plan.written == 4 and dialog.plan.sidecars == 0  # the 4 verified captions
    assert {p: p.read_bytes() for p in photo_dir.rglob("*.jpg")} == before  # the check wrote nothing
    assert "4 photos updated" in dialog.plan_label.text()
    assert dialog.footer.start_button.isEnabled()

    # Write asks before changing the originals, with the count and where; No writes nothing.
    asked = []
    dialog.confirm = lambda _parent, text: asked.append(text) or False
    assert not dialog.start() and not dialog.runner.running
    assert asked == ["Write into 4 photo files? These fields are replaced:\n"
                     "• caption (4): XMP-dc:Description, IPTC:Caption-Abstract, EXIF:ImageDescription (ASCII only)\n"
                     "The pixels are not touched. This changes your original files."]
    assert {p: p.read_bytes() for p in photo_dir.rglob("*.jpg")} == before

    dialog.all_captioned.setChecked(True)
    assert not dialog.footer.start_button.isEnabled()  # choices changed: check again first
    qtbot.waitUntil(lambda: dialog.plan.written == 12 and not dialog.runner.running, timeout=WAIT)
    dialog.confirm = lambda _parent, text: asked.append(text) or True
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT) as done:
        assert dialog.start()
    assert "into 12 photo files" in asked[-1]
    assert done.args[0].written == 12
    for rel, (text, _source) in current(library).items():
        with pyexiv2.Image(str(photo_dir / rel)) as image:
            assert image.read_xmp()["Xmp.dc.description"] == {'lang="x-default"': text}
    # Nothing left to change: the next check says so and Write stays off.
    dialog.check()
    qtbot.waitUntil(lambda: not dialog.runner.running and dialog.plan.unchanged == 12, timeout=WAIT)
    assert not dialog.footer.start_button.isEnabled()


def test_metadata_dialog_confirmation_lists_each_kind_and_its_fields(qtbot, library, photo_dir):
    from core import captions
    from tests.support.library_helpers import make_photo

    make_photo(photo_dir / "p.jpg")
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        image_id = session.scalar(select(Image.id))
        for kind, text in (("caption", "a harbour"), ("alt_text", "Boats in a harbour"), ("keywords", "boats")):
            captions.set_human_caption(session, image_id, text, kind=kind)
    dialog = MetadataDialog(library, Scope())
    qtbot.addWidget(dialog)
    dialog.replace_keywords.setChecked(True)
    qtbot.waitUntil(lambda: dialog._checked_choices == (False, "verified", SCOPE_LIBRARY, True), timeout=WAIT)
    asked = []
    dialog.confirm = lambda _parent, text: asked.append(text) or False
    assert not dialog.start()
    lines = asked[0].splitlines()
    assert lines[1:4] == [
        "• caption (1): XMP-dc:Description, IPTC:Caption-Abstract, EXIF:ImageDescription (ASCII only)",
        "• alt text (1): XMP-iptcCore:AltTextAccessibility",
        "• keywords (1): XMP-dc:Subject, XMP-lr:HierarchicalSubject (a|b), XMP-digiKam:TagsList (a/b), "
        "IPTC:Keywords — replacing the photos' own",
    ]


def test_metadata_dialog_lists_the_files_it_cannot_write_readably(qtbot, library, built, photo_dir):
    gone = sorted(photo_dir.rglob("*.jpg"))[0]
    gone.unlink()
    dialog = MetadataDialog(library, Scope())
    qtbot.addWidget(dialog)
    dialog.all_captioned.setChecked(True)
    qtbot.waitUntil(lambda: dialog._checked_choices == (False, "captioned", SCOPE_LIBRARY, False), timeout=WAIT)
    height = dialog.sizeHint().height()
    lines = dialog.problems.toPlainText().splitlines()
    assert len(lines) == 1 and lines[0] == f"{gone}: missing (not found now; rescan the library)"
    assert dialog.problems.isVisible() or not dialog.isVisible()
    assert dialog.sizeHint().height() == height and dialog.footer.status.toolTip().count("\n") == 0


def test_metadata_dialog_sidecars_for_the_selection(qtbot, library, built, photo_dir):
    import pyexiv2

    selected = built["ids"][:2]
    dialog = MetadataDialog(library, Scope(selection=tuple(selected)))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: not dialog.runner.running, timeout=WAIT)
    dialog.sidecar.setChecked(True)
    dialog.all_captioned.setChecked(True)
    dialog.scope_picker.set_key(SCOPE_SELECTION)
    qtbot.waitUntil(lambda: dialog._checked_choices == (True, "captioned", SCOPE_SELECTION, False), timeout=WAIT)
    assert dialog.plan.sidecars == 2
    dialog.confirm = lambda _parent, text: "not touched" in text
    with qtbot.waitSignal(dialog.runner.finished, timeout=WAIT):
        assert dialog.start()
    sidecars = sorted(photo_dir.rglob("*.xmp"))
    assert len(sidecars) == 2
    with library.db.read() as session:
        rels = {session.get(Image, i).rel_path: i for i in selected}
    for sidecar in sidecars:
        rel = next(r for r in rels if Path(r).name == sidecar.stem)  # photo.jpg.xmp: the default full name
        with pyexiv2.Image(str(sidecar)) as image:
            assert image.read_xmp()["Xmp.dc.description"]['lang="x-default"'] == current(library)[rel][0]


# -- versions ------------------------------------------------------------------------------


@pytest.fixture
def versioned(library, built, tiny_blip_dir):  # noqa: F811
    """Two 'full' versions whose folders are copies of a tiny real BLIP in the models folder."""
    folder = versions.models_dir(library)
    folder.mkdir(parents=True, exist_ok=True)
    for name, cider in (("shapes-v1", 0.5), ("shapes-v2", 0.9)):
        target = folder / name
        shutil.copytree(tiny_blip_dir, target)
        with library.db.write() as session:
            session.add(ModelVersion(
                name=name, base_model=str(target), adapter_path=None, family="blip", method="full",
                config={"trained_from": "tiny-blip"},
                metrics={"base": {"cider": 0.1, "exact_match": 0.0}, "trained": {"cider": cider, "exact_match": 0.25}},
                data_snapshot={"val_ratio": 0.5, "seed": 0, "train": [[1, "a"]] * 6, "validation": [[2, "b"]] * 2},
            ))
    return folder


def test_versions_window_lists_activates_renames_deletes(qtbot, library, versioned):
    window = VersionsWindow(library)
    qtbot.addWidget(window)
    assert window.table.rowCount() == 3  # the base model, then each version
    assert window.table.item(0, 1).text() == "Base model" and window.table.item(0, 0).text() == "★"
    row = [window.table.item(1, c).text() for c in range(window.table.columnCount())]
    assert row[1:6] == ["shapes-v1", "Captioner", "Caption", "tiny-blip", "full"] and row[8] == "6 / 2"
    assert row[9] == "0.100 → 0.500"
    window.select("shapes-v2")
    with qtbot.waitSignal(window.changed):
        assert window.activate_selected()
    assert versions.get_active_version(library).name == "shapes-v2"
    assert window.table.item(2, 0).text() == "★" and window.table.item(0, 0).text() == ""
    assert window.rename_selected("shapes-final")
    assert versions.get_version(library, "shapes-final").is_active
    assert not window.rename_selected("bad name with spaces")  # core refuses; shown, nothing changes
    assert window.footer.status.full_text()
    window.select("shapes-v1")
    assert window.delete_selected(confirm=False)
    assert [v.name for v in versions.list_versions(library)] == ["shapes-final"]
    assert not (versioned / "shapes-v1").exists() and (versioned / "shapes-v2").exists()


def test_activate_in_versions_window_is_what_the_caption_dialog_runs(qtbot, library, versioned, settings,
                                                                     monkeypatch):
    """Versions → Activate: the Caption dialog lists the versions and pre-selects the active one,
    and its run stores that version's id; Use base model goes back."""
    from desktop_app.caption_dialog import CaptionDialog
    from tests.support.window_helpers import make_window

    window = make_window(qtbot, library, settings, engine=None)  # the real engine, tiny BLIP copies
    versions_window = window.verbs.open_versions()
    versions_window.select("shapes-v2")
    assert versions_window.activate_selected()
    shown: list[CaptionDialog] = []

    def accept(dialog: CaptionDialog) -> CaptionDialog.DialogCode:
        shown.append(dialog)
        dialog.overwrite.setChecked(True)
        dialog.scope_filter.setChecked(True)
        dialog.device.setCurrentText("cpu")
        dialog.max_tokens.setValue(5)
        return CaptionDialog.DialogCode.Accepted

    monkeypatch.setattr(CaptionDialog, "exec", accept)
    with qtbot.waitSignal(window.captioning.finished, timeout=120_000):
        window.caption_jobs.open_caption_dialog()
    dialog = shown[0]
    assert dialog.model.currentText() == "shapes-v2"
    assert {"shapes-v1", "shapes-v2"} <= {dialog.model.itemText(i) for i in range(dialog.model.count())}
    assert "version 'shapes-v2' (active)" in dialog.current_note.full_text()
    v2 = versions.get_version(library, "shapes-v2")
    with library.db.read() as session:
        rows = session.scalars(select(Caption).where(Caption.is_current.is_(True), Caption.source == "model")).all()
    assert len(rows) == 8 and {c.model_version_id for c in rows} == {v2.id}  # every image but a person's

    from desktop_app.versions_window import BASE_ROW_NAME

    versions_window.select(BASE_ROW_NAME)
    assert versions_window.activate_button.text() == "Use base model"
    assert not versions_window.rename_button.isEnabled() and not versions_window.delete_button.isEnabled()
    assert versions_window.activate_selected()
    assert versions.get_active_version(library) is None
    assert versions_window.table.item(0, 0).text() == "★" and versions_window.table.item(2, 0).text() == ""
    assert window.settings.caption_defaults(library).model == "Salesforce/blip-image-captioning-base"


def test_preferences_model_is_the_librarys_current_model(qtbot, library, versioned, settings):
    from core.training.current import current_model, library_base_model

    dialog = PreferencesDialog(settings, library=library)
    qtbot.addWidget(dialog)
    assert dialog.model.isEnabled() and dialog.model.currentText() == "Salesforce/blip-image-captioning-base"
    dialog.model.setCurrentText("shapes-v1")
    dialog.accept()
    assert current_model(library).version == "shapes-v1"  # picking a version activates it
    dialog = PreferencesDialog(settings, library=library)
    qtbot.addWidget(dialog)
    assert dialog.model.currentText() == "shapes-v1" and "(active)" in dialog.model_note.text()
    dialog.model.setCurrentText(str(versioned / "shapes-v2"))
    dialog.accept()
    assert current_model(library).version is None  # a base model: no version is active
    assert library_base_model(library) == str(versioned / "shapes-v2")
    assert settings.caption_defaults(library).model == str(versioned / "shapes-v2")


def test_a_base_model_folder_is_stored_absolute_and_a_missing_one_is_refused(
        qtbot, library, settings, tiny_blip_dir, monkeypatch):
    from PySide6.QtWidgets import QDialog

    from core.training.current import library_base_model, set_base_model

    monkeypatch.chdir(tiny_blip_dir.parent)
    set_base_model(library, f"./{tiny_blip_dir.name}")  # as `models base ./folder` does
    assert library_base_model(library) == str(tiny_blip_dir.resolve())
    with pytest.raises(versions.VersionError, match="no such model folder"):
        set_base_model(library, "./no-such-model")
    set_base_model(library, "org/some-model")  # a hub id is taken as it is
    dialog = PreferencesDialog(settings, library=library)
    qtbot.addWidget(dialog)
    dialog.model.setCurrentText("/no/such/model")
    dialog.accept()  # stays open with the reason instead of raising out of the slot
    assert "no such model folder" in dialog.model_note.text()
    assert dialog.result() != QDialog.DialogCode.Accepted and library_base_model(library) == "org/some-model"


def test_versions_window_evaluates_a_real_tiny_model(qtbot, library, versioned):
    window = VersionsWindow(library, device="cpu")
    qtbot.addWidget(window)
    window.select("shapes-v2")
    with qtbot.waitSignal(window.evaluated, timeout=120_000) as done:
        assert window.evaluate_selected()
    result = done.args[0]
    assert result.metrics["n"] >= 1 and 0.0 <= result.metrics["exact_match"] <= 1.0
    assert len(result.predictions) == result.metrics["n"]
    assert "CIDEr" in window.footer.status.full_text()


def test_versions_window_evaluates_on_the_model_thread_taking_turns(qtbot, library, versioned):
    """Evaluate loads a model: with the window's model thread it runs there, and waits (with
    the reason shown) while another job, here a training stand-in, holds the thread."""
    import threading

    from desktop_app.model_thread import CaptionService, ModelJob

    service = CaptionService()
    release = threading.Event()
    training = ModelJob("Training “next”", lambda progress, cancel, on_epoch: release.wait(30))
    try:
        assert service.start_model_job(training)
        window = VersionsWindow(library, device="cpu", service=service)
        qtbot.addWidget(window)
        window.select("shapes-v2")
        expected = "Training “next” is using the model thread; evaluating can start when it has finished."
        assert not window.evaluate_button.isEnabled() and window.evaluate_button.toolTip() == expected
        assert window.rename_button.isEnabled()  # no model needed: not held up
        assert not window.evaluate_selected()
        assert window.footer.status.full_text() == expected

        with qtbot.waitSignal(service.state_changed, timeout=WAIT):
            release.set()
        assert window.evaluate_button.isEnabled()
        with qtbot.waitSignal(window.evaluated, timeout=120_000) as done:
            assert window.evaluate_selected()
            assert service.model_job is not None and service.model_job.description == "Evaluating “shapes-v2”"
            assert service.model_job.owner is window  # the main window's status bar can bring it back
            assert not window.evaluate_button.isEnabled()
            window.close()  # the job goes on (on the model thread) and still reports to its window
        assert done.args[0].metrics["n"] >= 1 and service.model_job is None
        qtbot.waitUntil(window.evaluate_button.isEnabled, timeout=WAIT)
    finally:
        release.set()
        assert service.shutdown()


def test_versions_window_merge_on_the_model_thread_has_no_cancel_and_a_closed_window_comes_back(
        qtbot, library, versioned, tmp_path, settings):
    from desktop_app.main_window import MainWindow

    window = MainWindow(settings, error_dialogs=False)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.sidebar_refreshed, timeout=WAIT):
        window.libraries.set_library(library)
    versions_window = window.verbs.open_versions()
    versions_window.select("shapes-v1")
    assert versions_window.export_button.toolTip().startswith("Write a standalone model folder")
    with qtbot.waitSignal(window.captioning.state_changed, timeout=WAIT):
        assert versions_window.export_selected(str(tmp_path / "merged"))
    job = window.captioning.model_job
    # A merge cannot stop halfway: no Cancel, in the window or the status bar.
    assert job is not None and not job.cancellable and not versions_window.footer.cancel_button.isEnabled()
    assert window.model_job_status.cancel_button.isHidden()
    versions_window.close()  # it goes on; the Versions verb brings back this window and its outcome
    qtbot.waitUntil(lambda: window.captioning.model_job is None, timeout=WAIT)
    assert versions_window.unseen_result and (tmp_path / "merged" / "config.json").is_file()
    assert window.verbs.open_versions() is versions_window
    assert "Exported to" in versions_window.footer.status.full_text() and not versions_window.unseen_result


# -- preferences and help ------------------------------------------------------------------


def test_preferences_round_trip_into_the_caption_spec(qtbot, tmp_path):
    from core.captioning.job_spec import CaptionJobSpec, GenerationSettings

    settings = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    settings.set_caption_spec(CaptionJobSpec(model="m", adapter="/a", generation=GenerationSettings(min_new_tokens=3)))
    dialog = PreferencesDialog(settings, library_path=str(tmp_path / "lib.db"), known_models=["shapes-v2"])
    qtbot.addWidget(dialog)
    assert not dialog.model.isEnabled()  # the model is a library's: none is open here
    dialog.num_beams.setValue(3)
    dialog.device.setCurrentText("cpu")
    dialog.runtime.setCurrentText("openvino-bf16")
    dialog.thumbnail_size.setCurrentIndex(dialog.thumbnail_size.findData(256))
    dialog.sidecar_naming.setCurrentIndex(dialog.sidecar_naming.findData("full"))
    dialog.accept()
    again = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    spec = again.caption_spec()
    assert (spec.model, spec.device, spec.adapter) == ("m", "cpu", "/a")  # the adapter is kept
    assert spec.runtime == "openvino-bf16"  # the combo offers every runtime
    assert (spec.generation.min_new_tokens, spec.generation.num_beams, spec.generation.max_new_tokens) == (3, 3, 30)
    assert again.thumbnail_size == 256 and again.last_library == str(tmp_path / "lib.db")
    assert again.sidecar_naming == "full"



def test_preferences_on_a_small_screen_keeps_its_wrapped_notes_whole(tmp_path):
    """Qt caps a top-level window's first size at 2/3 of the screen: on 1024x700 that squeezed the
    wrapped notes into each other. The dialog takes its full height where the screen has it."""
    import json
    import os
    import subprocess
    import sys

    from tests.support.paths import REPO_ROOT

    screens = tmp_path / "screens.json"
    screens.write_text(json.dumps({"screens": [{"name": "small", "x": 0, "y": 0, "width": 1024, "height": 700,
                                                "logicalDpi": 96, "logicalBaseDpi": 96, "dpr": 1}]}))
    script = (
        "from PySide6.QtCore import QSettings\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from desktop_app.app_settings import AppSettings\n"
        "from desktop_app.preferences_dialog import PreferencesDialog\n"
        f"settings = AppSettings(QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat))\n"
        f"dialog = PreferencesDialog(settings, library_path={str(tmp_path / 'lib.db')!r}, known_models=[])\n"
        "dialog.show()\n"
        "app.processEvents()\n"
        "print(app.primaryScreen().availableGeometry().height(), dialog.height(), dialog.sizeHint().height())\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": f"offscreen:configfile={screens}"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    screen, height, wanted = (int(v) for v in done.stdout.split()[-3:])
    assert screen == 700
    assert height >= wanted

def test_help_dialogs(qtbot, library):
    from PySide6.QtGui import QAction, QKeySequence

    from core.selfcheck import Check

    action = QAction("Accept caption")
    action.setShortcut(QKeySequence("Ctrl+Shift+A"))
    sheet = ShortcutsDialog([action, QAction("No keys")])
    qtbot.addWidget(sheet)
    assert sheet.rows == [("Accept caption", "Ctrl+Shift+A")]

    dialog = SelfCheckDialog(run_checks=lambda: [Check("python", True, "3.12"), Check("torch", False, "missing")])
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: len(dialog.checks) == 2, timeout=WAIT)
    assert "1 of 2 checks failed: torch" in dialog.footer.status.full_text() and "FAIL" in dialog.report()

    location = LibraryLocationDialog(library)
    qtbot.addWidget(location)
    assert location.path_label.full_text() == str(library.path)


def test_menus_open_every_dialog_from_the_main_window(qtbot, library, built, tmp_path):
    from tests.support.gui_fakes import FakeEngine
    from tests.support.window_helpers import make_window

    settings = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    window = make_window(qtbot, library, settings, FakeEngine())
    titles = [a.text() for a in window.menuBar().actions()]
    assert titles.index("&Model") == titles.index("&Help") - 1
    for key in ("export_dataset", "import_captions", "write_metadata", "duplicates", "model_versions", "preferences",
                "shortcuts", "library_location"):
        window.actions[key].trigger()
    assert set(window.verbs.open_dialogs) >= {"export", "import", "metadata", "duplicates", "versions", "preferences",
                                              "shortcuts", "location"}
    shortcuts = window.verbs.open_dialogs["shortcuts"]
    assert ("Export dataset", "Ctrl+Shift+E") in shortcuts.rows
    # Every dialog fits a 1024x700 screen with its window frame (and so 1280x800 too).
    from desktop_app.dialog_kit import WINDOW_FRAME

    for key, dialog in window.verbs.open_dialogs.items():
        size = dialog.size().expandedTo(dialog.minimumSizeHint())
        assert size.width() + WINDOW_FRAME.width() <= 1024, key
        assert size.height() + WINDOW_FRAME.height() <= 700, (key, size.height())
    export = window.verbs.open_dialogs["export"]
    assert export.scope_picker.buttons[SCOPE_LIBRARY].isChecked()
    qtbot.waitUntil(lambda: not window.verbs.open_dialogs["metadata"].runner.running, timeout=WAIT)
    window.verbs.close_all()
