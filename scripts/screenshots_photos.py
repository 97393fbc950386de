"""The photo-app screenshots (called by scripts/screenshots.py on its library and window):
a multi-selection, the photo context menu, the loupe (fit and 100 %), the comparison, the
photo info panel, the list view, the import preview and the write confirmation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_camera_photo(path: Path) -> Path:
    """A photo as a camera leaves it: EXIF camera, date and exposure, a description and keywords."""
    from PIL import Image, ImageDraw

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "FUJIFILM", "X-T4"
    exif[0x010E] = "Fishing boats in the harbour at dawn"
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x829A], sub[0x829D], sub[0x8827], sub[0x920A] = "2024:07:14 06:12:30", 1 / 250, 5.6, 200, 23.0
    sub[0xA434] = "XF23mmF1.4 R"
    image = Image.new("RGB", (1600, 1067), (40, 80, 140))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 700, 1600, 1067), fill=(20, 50, 90))
    for n in range(6):
        x = 120 + n * 240
        draw.polygon([(x, 760), (x + 180, 760), (x + 150, 820), (x + 30, 820)], fill=(200, 60 + 25 * n, 40))
        draw.line((x + 90, 760, x + 90, 600), fill=(230, 230, 230), width=6)
    draw.ellipse((1250, 120, 1400, 270), fill=(250, 200, 90))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif, quality=90)
    from core.metadata.exiv2 import open_image_file

    with open_image_file(path) as photo:
        photo.modify_xmp({"Xmp.dc.subject": ["boats", "harbour", "dawn"]})
    return path


def composite(window: Any, popup: Any) -> Any:
    """The window with a popup (a context menu) drawn where it is on screen, as a person sees it."""
    from PySide6.QtGui import QPainter

    picture = window.grab()
    painter = QPainter(picture)
    painter.drawPixmap(window.mapFromGlobal(popup.pos()), popup.grab())
    painter.end()
    return picture


def photo_shots(app: Any, window: Any, save: Any, save_pixmap: Any, wait: Any, photos: Path) -> None:
    from PySide6.QtCore import QItemSelectionModel
    from PySide6.QtWidgets import QMessageBox

    model, grid = window.model, window.grid
    window.filter_bar.set_review_queue(False)
    wait(app, lambda: False, 1.0)
    # A multi-selection: four in a row and one more.
    window.image_review.go_to_row(1)
    selection = grid.selectionModel()
    for row in (2, 3, 4, 7):
        selection.select(model.index(row, 0), QItemSelectionModel.SelectionFlag.Select)
    wait(app, lambda: False, 0.5)
    save(window, "multi-selection")

    cell = grid.visualRect(model.index(3, 0)).center()
    menu = window.photo_verbs.menu.popup(window.image_review.target_ids(), grid.viewport().mapToGlobal(cell))
    wait(app, lambda: menu.isVisible(), 5)
    save_pixmap(composite(window, menu), "context-menu")
    menu.close()

    camera = model.row_of(next(i for i in model.ids() if model.row_data(model.row_of(i)).name.startswith("DSC_")))
    window.image_review.go_to_row(camera)
    window.side_tabs.setCurrentWidget(window.info_panel)
    wait(app, lambda: window.info_panel.values["camera"].text() != "", 10)
    save(window, "photo-info")
    window.side_tabs.setCurrentWidget(window.preview)

    loupe = window.photo_verbs.open_loupe()
    wait(app, lambda: loupe.view.image is not None and loupe.view.image.width() == 1600, 20)
    save(loupe, "loupe")
    loupe.view.set_zoom(1.0)
    wait(app, lambda: False, 0.3)
    save(loupe, "loupe-100")
    loupe.close()

    compare = window.photo_verbs.open_compare([model.image_id(camera), model.image_id(2)])
    wait(app, lambda: all(p.view.image is not None for p in compare.panes), 20)
    save(compare, "compare")
    compare.close()

    window.set_list_view(True)
    wait(app, lambda: False, 1.0)
    save(window, "list-view")
    window.set_list_view(False)

    # The import preview: a photographer's captions in .txt files beside some of the photos.
    for n, path in enumerate(sorted(photos.glob("IMG_*.jpg"))[:10]):
        path.with_suffix(".txt").write_text(f"holiday photo {n + 1}, taken on the beach at Sagres\n")
    dialog = window.verbs.open_import()
    dialog.format.setCurrentIndex(dialog.format.findData("sidecar"))
    dialog.source.setText(str(photos))
    dialog.check()
    wait(app, lambda: dialog.plan is not None and not dialog.runner.running, 60)
    save(dialog, "import-preview")
    dialog.close()

    dialog = window.verbs.open_write_metadata()
    wait(app, lambda: dialog.plan is not None and not dialog.runner.running, 60)

    def confirm(parent: Any, text: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, "Change the photo files?", text,
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, parent)
        box.show()
        wait(app, lambda: False, 0.3)
        save(box, "write-confirmation")
        box.close()
        return False

    dialog.confirm = confirm
    dialog.start()
    dialog.close()
