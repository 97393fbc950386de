"""Screenshots of the File/Model/Edit/Help dialogs on a real (temporary) library.

    xvfb-run -s "-screen 0 1280x800x24" python scripts/screenshots_dialogs.py [OUT_DIR]

Builds a small library (JPEGs, model and human captions, two model versions), opens the
main window and each dialog through its menu action, waits for the dialog's background
work (counts, dry run, self-check) and saves ``widget.grab()`` PNGs into OUT_DIR
(default /tmp/shots).  ``scripts/screenshots.py --dialogs`` runs it after the README's shots.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from screenshots import wait  # noqa: E402  (scripts/screenshots.py: the same event-loop wait)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "/tmp/shots")
    out.mkdir(parents=True, exist_ok=True)
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from core.library import Library
    from core.models import ModelVersion
    from core.training import versions
    from desktop_app.app_settings import AppSettings
    from desktop_app.main_window import MainWindow
    from tests.support.gui_fakes import FakeEngine, build_library

    with tempfile.TemporaryDirectory(prefix="captiondesk-shots-") as tmp:
        tmp_path = Path(tmp)
        # A deep, long folder name: the dialogs must elide it, not grow.
        photos = tmp_path / "Pictures" / "A very long folder name for the summer holiday photos 2024" / "camera"
        library = Library(tmp_path / "library.db")
        build_library(library, photos, count=24, model_every=1, human_every=3, bad_files=1)
        # Photos with resized, re-saved, cropped and rotated copies, for the Duplicates view.
        from tests.support.imagegen import photo_image, write_copies

        for n in range(3):
            original = photo_image(40 + n, size=(320, 240))
            original.save(photos / "beach" / f"DSC_{n:04d}.jpg", quality=92)
            write_copies(original, photos / "exported", f"DSC_{n:04d}")
        library.scan()
        folder = versions.models_dir(library)
        folder.mkdir(parents=True, exist_ok=True)
        with library.db.write() as session:
            for name, cider, active in (("shapes-v1", 0.41, False), ("holiday-captioner-lora-r16", 0.87, True)):
                session.add(ModelVersion(
                    name=name, base_model="Salesforce/blip-image-captioning-base",
                    adapter_path=str(folder / name), family="blip", method="lora", is_active=active,
                    config={"trained_from": "Salesforce/blip-image-captioning-base"},
                    metrics={"base": {"cider": 0.12, "exact_match": 0.0},
                             "trained": {"cider": cider, "exact_match": 0.3}},
                    data_snapshot={"val_ratio": 0.1, "seed": 0, "train": [[1, "a"]] * 180,
                                   "validation": [[2, "b"]] * 20},
                ))
        settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        window = MainWindow(settings, engine=FakeEngine(), error_dialogs=False)
        window.resize(1280, 800)
        window.show()
        window.libraries.set_library(library)
        wait(app, lambda: window.model.rowCount() > 0)
        window.grid.selectAll()
        wait(app, lambda: False, 0.2)

        shots = (
            ("export", "export_dataset", lambda d: hasattr(d, "preview_counts")),
            ("import", "import_captions", lambda d: True),
            ("metadata", "write_metadata", lambda d: d.plan is not None and not d.runner.running),
            ("versions", "model_versions", lambda d: True),
            ("preferences", "preferences", lambda d: True),
            ("shortcuts", "shortcuts", lambda d: True),
            ("selfcheck", "self_check", lambda d: bool(d.checks)),
            ("location", "library_location", lambda d: True),
            ("duplicates", "duplicates", lambda d: "groups" in d.summary.text() or "Not searched" in d.summary.text()),
        )
        for key, action, ready in shots:
            window.actions[action].trigger()
            dialog = window.verbs.open_dialogs[key]
            wait(app, lambda d=dialog, r=ready: r(d), 120.0)
            if key == "import":
                dialog.source.setText(str(photos))
                dialog.verified.setChecked(True)
            if key == "export":
                dialog.out.setText(str(tmp_path / "Exports" / "A very long dataset folder name for the holiday"))
            if key == "versions":
                dialog.select("holiday-captioner-lora-r16")
            if key == "duplicates":
                dialog.find()
                wait(app, lambda d=dialog: d.group_list.count() > 0 and not d.busy, 60.0)
                dialog.member_list.setCurrentRow(1)
                dialog.keep_selected()
                wait(app, lambda d=dialog: "1 decided" in d.summary.text(), 30.0)
            wait(app, lambda: False, 0.3)
            path = out / f"dialog_{key}.png"
            dialog.grab().save(str(path))
            print(f"{path}: {dialog.width()}x{dialog.height()}")
            dialog.close()
        window.grab().save(str(out / "dialog_main_window.png"))
        window.close()
        library.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
