"""The grid's context menu for one photo (right click): its verbs, built in one place to extend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtWidgets import QMenu, QWidget


@dataclass(frozen=True)
class PhotoVerbs:
    """What the menu can do with a photo (its id and file name); each verb is one callable."""

    find_similar: Callable[[int, str], None]


def photo_context_menu(parent: QWidget, image_id: int, name: str, verbs: PhotoVerbs) -> QMenu:
    """The menu for photo *image_id* (*name*: its file name, for labels)."""
    menu = QMenu(parent)
    similar = menu.addAction("Find similar")
    similar.setObjectName("findSimilar")
    similar.setToolTip("Photos that look like this one, best first (indexes the pictures first)")
    similar.triggered.connect(lambda: verbs.find_similar(image_id, name))
    return menu
