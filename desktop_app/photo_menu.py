"""The photos' context menu (right-click in the grid or the loupe): one list of verbs.

Each entry is a :class:`PhotoAction` — a label, what it does with the ids it acts on (the
selected photos, else the one under the pointer) and when it is enabled — so adding a
verb is one :meth:`PhotoMenu.add` call.  The verbs themselves live in the controllers and
core; this module only lists them and builds the ``QMenu``.  File-manager verbs (show in
folder, open, copy path) need nothing of the library beyond the photos' paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QPoint, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMenu, QWidget

IdsAction = Callable[[list[int]], object]


def open_url(url: QUrl) -> bool:
    """Hand *url* to the desktop (the file manager, the default app); tests replace this."""
    return QDesktopServices.openUrl(url)


def show_in_file_manager(paths: Sequence[str]) -> int:
    """Open the folder of each photo (once per folder) in the file manager; returns folders opened."""
    folders = list(dict.fromkeys(str(Path(p).parent) for p in paths))
    return sum(bool(open_url(QUrl.fromLocalFile(folder))) for folder in folders)


def open_in_default_app(paths: Sequence[str]) -> int:
    """Open each photo with the application the desktop associates with its type."""
    return sum(bool(open_url(QUrl.fromLocalFile(path))) for path in paths)


def copy_paths(paths: Sequence[str]) -> str:
    """Put the photos' full paths, one a line, on the clipboard; returns the text."""
    text = "\n".join(paths)
    QGuiApplication.clipboard().setText(text)
    return text


@dataclass(frozen=True)
class PhotoAction:
    key: str
    text: str
    run: IdsAction
    #: Enabled for these ids (default: at least one photo).
    enabled: Callable[[list[int]], bool] | None = None
    shortcut: str = ""
    #: Actions of different sections are separated by a line.
    section: str = ""


class PhotoMenu:
    """The list of photo verbs and the menu built from it for the ids under the pointer."""

    def __init__(self, parent: QWidget | None = None) -> None:
        self.parent = parent
        self.actions: list[PhotoAction] = []
        #: The last menu built (kept so tests and the screenshot script can reach it).
        self.menu: QMenu | None = None

    def add(self, key: str, text: str, run: IdsAction, *, enabled: Callable[[list[int]], bool] | None = None,
            shortcut: str = "", section: str = "", before: str | None = None) -> PhotoAction:
        """Add a verb (placed before the action *before* when given); returns it."""
        action = PhotoAction(key, text, run, enabled, shortcut, section)
        keys = [a.key for a in self.actions]
        self.actions.insert(keys.index(before) if before in keys else len(keys), action)
        return action

    def build(self, ids: Sequence[int]) -> QMenu:
        """The menu for *ids*; each entry's ``objectName`` is its key."""
        ids = list(ids)
        menu = QMenu(self.parent)
        menu.setObjectName("photoMenu")
        section = None
        for action in self.actions:
            if section is not None and action.section != section:
                menu.addSeparator()
            section = action.section
            text = action.text.replace("{n}", str(len(ids)))
            if action.shortcut:
                text += "\t" + action.shortcut
            qaction = menu.addAction(text)
            qaction.setObjectName(action.key)
            qaction.setEnabled(bool(ids) and (action.enabled is None or action.enabled(ids)))
            qaction.triggered.connect(lambda _checked=False, run=action.run: run(list(ids)))
        self.menu = menu
        return menu

    def popup(self, ids: Sequence[int], global_pos: QPoint) -> QMenu:
        menu = self.build(ids)
        menu.popup(global_pos)
        return menu

    def trigger(self, key: str, ids: Sequence[int]) -> None:
        """Run the verb *key* on *ids* as the menu would (enabled or not is the caller's check)."""
        next(a for a in self.actions if a.key == key).run(list(ids))


@dataclass(frozen=True)
class PhotoVerbs:
    """Search's verbs on one photo (its id and file name); each verb is one callable."""

    find_similar: Callable[[int, str], None]


def add_search_verbs(menu: PhotoMenu, verbs: PhotoVerbs, name_of: Callable[[int], str], *,
                     before: str | None = None) -> None:
    """"Find similar" (one photo): the photos that look like it, best first."""
    menu.add("findSimilar", "Find similar", lambda ids: verbs.find_similar(ids[0], name_of(ids[0])),
             enabled=lambda ids: len(ids) == 1, section="search", before=before)


def photo_context_menu(parent: QWidget, image_id: int, name: str, verbs: PhotoVerbs) -> QMenu:
    """A menu with search's verbs for photo *image_id* (*name*: its file name, for labels)."""
    menu = PhotoMenu(parent)
    add_search_verbs(menu, verbs, lambda _id: name)
    built = menu.build([image_id])
    built.actions()[0].setToolTip("Photos that look like this one, best first (indexes the pictures first)")
    return built
