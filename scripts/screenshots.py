"""Screenshots of the real app on a generated library, for the README and for review.

    xvfb-run -s "-screen 0 1280x800x24" python scripts/screenshots.py [OUT_DIR] [--suffix=-1280]
    xvfb-run -s "-screen 0 1920x1080x24" python scripts/screenshots.py docs/screenshots --suffix=-1920
    xvfb-run -s "-screen 0 1280x800x24" python scripts/screenshots.py /tmp/shots --dialogs

Drives the real MainWindow (default size for the screen) over a temporary library of
generated JPEGs captioned by the tests' fake captioner, and saves ``grab()`` PNGs: first
start (empty state), library (after a scan and a captioning run), the caption panel's
kinds (alt text with its count, keywords as chips; ``caption-panel-kinds`` side by side), review queue, Export
dialog, Train dialog with results (a fake training run's numbers) and the Versions window.
Then the photo-app views (scripts/screenshots_photos.py): a multi-selection, the photo
context menu, the photo info panel, the loupe (fit, 100 %), the comparison, the list view,
the import preview and the write confirmation.  ``--dialogs`` also saves every other dialog opened through its menu (import, write
metadata, preferences, shortcuts, self-check, library location: ``dialog_*.png``, made by
scripts/screenshots_dialogs.py), for review rather than for the README.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def wait(app, condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()


def thumbnails_shown(window, count: int) -> bool:
    """The first ``count`` cells have their thumbnail in memory (each one not there is queued)."""
    rows = [window.model.row_data(i) for i in range(min(count, window.model.rowCount()))]
    return bool(rows) and all(r is not None and window.thumbs.pixmap(r.fingerprint, r.path) is not None for r in rows)


def fake_train(library, base, name, config, *, progress, cancel, on_epoch):
    """Plausible numbers for the Train dialog's chart and table (no model is trained)."""
    from core.jobs import Progress
    from core.training import collect_training_data

    # Consistent with what the dialog shows: the last epoch's CIDEr is the trained CIDEr,
    # and exact match is a count over the library's validation photos.
    n_val = max(1, len(collect_training_data(library, val_ratio=config.val_ratio).validation))
    cider = [0.31 + (0.89 - 0.31) * min(1.0, e / config.epochs) ** 0.7 for e in range(config.epochs + 1)]
    for epoch in range(0, config.epochs + 1):
        on_epoch({"epoch": epoch, "loss": None if epoch == 0 else 2.2 / (epoch + 1),
                  "cider": cider[epoch], "exact_match": round(epoch / config.epochs * 2) / n_val})
        if epoch:
            progress(Progress(epoch, config.epochs, f"Epoch {epoch} of {config.epochs}"))
    base = {"exact_match": 0.0, "cider": 0.31, "bleu4": 0.08, "rouge_l": 0.29, "edit_rate": 0.83}
    trained = {"exact_match": 2 / n_val, "cider": 0.89, "bleu4": 0.27, "rouge_l": 0.52, "edit_rate": 0.48}
    return SimpleNamespace(cancelled=False, name=name, base_metrics=base, metrics=trained, best_epoch=config.epochs)


class ShotCaptioner:
    """For the screenshots: a caption naming the photo's two colours, and a confidence that
    varies from photo to photo (the fake model of the tests answers one constant)."""

    NAMES = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 200), "yellow": (220, 180, 40),
             "purple": (120, 60, 160), "teal": (30, 160, 160), "pink": (240, 130, 200), "orange": (240, 110, 50)}

    def __init__(self, fake) -> None:
        self._fake = fake
        self.identity, self.device = fake.identity, fake.device

    @classmethod
    def _name(cls, rgb) -> str:
        return min(cls.NAMES, key=lambda n: sum((a - b) ** 2 for a, b in zip(cls.NAMES[n], rgb, strict=True)))

    def preprocess(self, images, settings):
        return images

    def generate(self, batch, settings):
        from core.captioning.captioner import CaptionResult

        self._fake.generate(batch, settings)  # the delay: progress to look at
        results = []
        for image in batch:
            small = image.convert("RGB").resize((4, 4))
            corner, rest = small.getpixel((0, 0)), small.getpixel((3, 3))
            spread = sum(abs(a - b) for a, b in zip(corner, rest, strict=True))
            first = self._name(corner)
            article = "an" if first[0] in "aeiou" else "a"
            results.append(CaptionResult(f"{article} {first} square on a {self._name(rest)} background",
                                         -0.05 - (spread % 97) / 60))
        return results

    def caption(self, images, settings):
        return self.generate(images, settings)

    def close(self) -> None:
        self._fake.close()


def add_versions(library) -> None:
    """Two model versions for the Versions window (what a real training run records)."""
    from core.models import ModelVersion
    from core.training import collect_training_data, versions

    data = collect_training_data(library, val_ratio=0.25)  # what the Train dialog shows
    n_train, n_val = len(data.train), max(1, len(data.validation))
    folder = versions.models_dir(library)
    folder.mkdir(parents=True, exist_ok=True)
    with library.db.write() as session:
        for name, cider, active in (("shapes-v1", 0.41, False), ("holiday-lora", 0.89, True)):
            session.add(ModelVersion(
                name=name, base_model="Salesforce/blip-image-captioning-base",
                adapter_path=str(folder / name), family="blip", method="lora", is_active=active,
                config={"trained_from": "Salesforce/blip-image-captioning-base"},
                metrics={"base": {"cider": 0.31, "exact_match": 0.0},
                         "trained": {"cider": cider, "exact_match": 2 / n_val}},
                data_snapshot={"val_ratio": 0.25, "seed": 0, "train": [[1, "a"]] * n_train,
                               "validation": [[2, "b"]] * n_val},
            ))


def add_kinds(library, image_ids) -> None:
    """Alt text and keywords beside the captions (what ``caption --kind`` runs write)."""
    from core import captions

    alt = ("A red square centred on a pale grey background, lit evenly from the left, with a soft shadow "
           "falling to the lower right.")
    with library.db.write() as session:
        for n, image_id in enumerate(image_ids):
            captions.add_model_caption(session, image_id, alt if n == 0 else "A coloured square on grey.",
                                       model_name="Qwen/Qwen2-VL-2B-Instruct", kind="alt_text", score=-0.3)
            captions.add_model_caption(session, image_id, "red, square, shapes|square, colours|red, studio",
                                       model_name="Qwen/Qwen2-VL-2B-Instruct", kind="keywords")
        captions.set_human_caption(session, image_ids[-1], "holiday, beach|sand, places|lisbon", kind="keywords")


def kinds_panel_shot(app, window, save) -> None:
    """The caption panel on the caption, alt text and keywords tabs, side by side in one image."""
    from PySide6.QtGui import QPainter, QPixmap

    grabs = []
    for kind in ("caption", "alt_text", "keywords"):
        window.panel.set_kind(kind)
        wait(app, lambda: False, 0.3)
        if kind == "alt_text":
            save(window, "caption-kinds")
        grabs.append(window.panel.grab())
    sheet = QPixmap(sum(g.width() for g in grabs) + 8 * (len(grabs) - 1), max(g.height() for g in grabs))
    sheet.fill(window.palette().window().color())
    painter = QPainter(sheet)
    x = 0
    for grab in grabs:
        painter.drawPixmap(x, 0, grab)
        x += grab.width() + 8
    painter.end()
    save(SimpleNamespace(grab=lambda: sheet, width=sheet.width, height=sheet.height), "caption-panel-kinds")
    window.panel.set_kind("caption")


def main(argv: list[str]) -> int:
    suffix = next((a.split("=", 1)[1] for a in argv if a.startswith("--suffix=")), "")
    args = [a for a in argv if not a.startswith("--")]
    out = Path(args[0] if args else ROOT / "docs" / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from core.captioning.job_spec import CaptionJobSpec
    from core.library import Library
    from desktop_app.app_settings import AppSettings
    from desktop_app.caption_dialog import SCOPE_LIBRARY
    from desktop_app.main_window import MainWindow
    from desktop_app.train_dialog import TrainDialog
    from tests.support.gui_fakes import FakeEngine
    from tests.support.imagegen import write_jpeg

    def save(widget, name: str) -> None:
        save_pixmap(widget.grab(), name)

    def save_pixmap(pixmap, name: str) -> None:
        path = out / f"{name}{suffix}.png"
        pixmap.save(str(path))
        print(f"{path}: {pixmap.width()}x{pixmap.height()}, {path.stat().st_size // 1024} KB")

    with tempfile.TemporaryDirectory(prefix="captiondesk-shots-") as tmp:
        tmp_path = Path(tmp)
        photos = tmp_path / "Pictures" / "Holiday 2024"
        photos.mkdir(parents=True)
        colors = [(200, 40, 40), (40, 160, 60), (40, 80, 200), (220, 180, 40), (120, 60, 160), (30, 160, 170)]
        for i in range(36):
            write_jpeg(photos / f"IMG_{1000 + i}.jpg", color=colors[i % len(colors)], size=(320, 240), seed=i)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from screenshots_photos import photo_shots, write_camera_photo

        write_camera_photo(photos / "DSC_2041.jpg")
        library = Library(tmp_path / "library.db")
        settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        engine = FakeEngine(delay=0.02)
        load_fake = engine.load_captioner
        engine.load_captioner = lambda *a, **k: ShotCaptioner(load_fake(*a, **k))
        window = MainWindow(settings, engine=engine, error_dialogs=False)
        window.show()
        window.libraries.set_library(library)
        wait(app, lambda: window.empty_state_visible, 10)
        save(window, "first-start")

        window.libraries.add_folder(photos)
        wait(app, lambda: window.banner.isVisible(), 60)
        wait(app, lambda: thumbnails_shown(window, 9), 30)  # what a person sees a moment later
        save(window, "library-after-scan")
        window.caption_jobs.start_captioning(CaptionJobSpec(model="fake-model", batch_size=6), SCOPE_LIBRARY)
        wait(app, lambda: not window.captioning.running, 120)
        window.grid_content.reload_ids()
        wait(app, lambda: False, 1.0)
        window.image_review.go_to_row(3)
        wait(app, lambda: False, 3.0)  # thumbnails decode on the pool
        save(window, "library")
        add_kinds(library, window.model.ids()[3:7])
        window.image_review.go_to_row(3)
        window.image_review.show_current(window.image_review.current_row())
        kinds_panel_shot(app, window, save)

        window.start_review()
        wait(app, lambda: False, 1.0)
        save(window, "review")

        # A person verified some captions: enough to export and train on.
        for image_id in window.model.ids()[:24]:
            window.caption_undo.accept(image_id)
        wait(app, lambda: False, 0.5)
        dialog = window.verbs.open_export()
        wait(app, lambda: False, 2.0)
        save(dialog, "export-dialog")
        dialog.close()
        photo_shots(app, window, save, save_pixmap, wait, photos)

        if "--dialogs" in argv:
            # Training waits for captioning (one model thread): the dialog says so.
            window.caption_jobs.start_captioning(CaptionJobSpec(model="fake-model", batch_size=2,
                                                   overwrite_model_captions=True), SCOPE_LIBRARY)
            window.captioning.pause()
            window.versions.open_train_dialog()
            waiting = window.versions.train_dialog
            wait(app, lambda: False, 1.0)
            save(waiting, "dialog_train_waiting_for_captioning")
            save(window, "dialog_train_waiting_window")
            add_versions(library)
            busy_versions = window.verbs.open_versions()
            wait(app, lambda: False, 0.5)
            busy_versions.select("holiday-lora")
            busy_versions.evaluate_selected()  # refused: the footer says why
            wait(app, lambda: False, 0.5)
            save(busy_versions, "dialog_versions_waiting_for_captioning")
            busy_versions.close()
            window.captioning.cancel()
            wait(app, lambda: not window.captioning.running, 30)
            waiting.close()

        train = TrainDialog(library, base_model="Salesforce/blip-image-captioning-base", train_fn=fake_train,
                            service=window.captioning, parent=window)
        train.name.setText("holiday-lora")
        train.epochs.setValue(4)
        train.val_ratio.setValue(0.25)
        train.show()
        wait(app, lambda: False, 0.5)
        train.start()
        wait(app, lambda: train.result is not None, 30)
        wait(app, lambda: False, 0.5)
        save(train, "train-dialog-results")
        train.close()

        if "--dialogs" not in argv:  # added above, for the Versions window waiting on captioning
            add_versions(library)
        versions = window.verbs.open_versions()
        wait(app, lambda: False, 1.0)
        save(versions, "versions-window")
        versions.close()
        window.close()
        library.close()
    if "--dialogs" in argv:
        # Its own process (and QApplication); screenshots_dialogs imports wait() from here.
        import subprocess

        return subprocess.call([sys.executable, str(Path(__file__).with_name("screenshots_dialogs.py")), str(out)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
