"""Wires the File/Model/Edit/Help dialogs into the main window's menus.

:func:`install` is called once from ``MainWindow._build_actions``; it adds

* File → Export dataset…, Import captions…, Write captions into photos…, Duplicates…
* Model → Versions…
* Edit → Preferences…
* Help → Keyboard shortcuts, Self-check, Library location

and keeps the window-specific knowledge (what "current folder", "selection" and
"current filter" mean, what to refresh afterwards) here, out of the dialogs.  The
dialogs are non-modal and one of each kind is open at a time.

Like the controllers, it never sees the window itself: only the
:class:`~desktop_app.controllers.shell.WindowShell` and the :class:`VerbHooks` the
window hands over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QMenu, QMenuBar

from core.models import LibraryRoot
from desktop_app.dialog_kit import Scope
from desktop_app.operations import LibraryChanges

if TYPE_CHECKING:
    from core.queries import ImageFilter
    from desktop_app.controllers.shell import WindowShell
    from desktop_app.model_thread import CaptionService


@dataclass(frozen=True)
class VerbHooks:
    """The widgets and callbacks of the window that the verbs use beyond its shell."""

    menu_bar: QMenuBar
    #: The window's actions by key (the verbs add theirs there) and how the window makes one.
    actions: dict[str, QAction]
    make_action: Callable[..., QAction]
    #: The grid's filter, the selected images' ids, and how many images the grid shows.
    current_filter: Callable[[], ImageFilter]
    selected_ids: Callable[[], Sequence[int]]
    shown_count: Callable[[], int]
    #: The model thread, where Model → Versions evaluates.
    captioning: CaptionService
    set_thumbnail_size: Callable[[int], None]
    open_library: Callable[[str], None]


def _menu(bar: QMenuBar, title: str, before: str | None = None) -> QMenu:
    """The menu bar's menu called *title* (made, before the menu *before*, if missing)."""
    for action in bar.actions():
        if action.menu() is not None and action.text().replace("&", "") == title.replace("&", ""):
            return action.menu()
    menu = QMenu(title, bar)
    anchor = next((a for a in bar.actions() if before and a.text().replace("&", "") == before), None)
    if anchor is not None:
        bar.insertMenu(anchor, menu)
    else:
        bar.addMenu(menu)
    return menu


class VerbMenus:
    """Opens each dialog over the window's library and refreshes the window after it."""

    def __init__(self, window: WindowShell, hooks: VerbHooks) -> None:
        self.window = window
        self.hooks = hooks
        self.open_dialogs: dict[str, QDialog] = {}

    # -- state the dialogs need ----------------------------------------------------------------

    def scope(self) -> Scope:
        library, hooks = self.window.library, self.hooks
        flt = hooks.current_filter()
        folder: str | None = None
        if flt.root_id is not None and library is not None:
            with library.db.read() as session:
                root = session.get(LibraryRoot, flt.root_id)
                if root is not None:
                    folder = str(Path(root.path) / (flt.folder or ""))
        return Scope(folder=folder, selection=tuple(hooks.selected_ids()), flt=flt,
                     filter_count=hooks.shown_count())

    def _show(self, key: str, make: Any) -> QDialog | None:
        if self.window.library is None:
            self.window.statusBar().showMessage("Open a library first.", 5000)
            return None
        dialog = self.open_dialogs.get(key)
        runner = getattr(dialog, "runner", None)
        # Open, or closed while its job goes on (on the model thread) or after it ended
        # unseen: the same window, with its progress, result or error.
        if dialog is not None and (dialog.isVisible() or (runner is not None and runner.running)
                                   or getattr(dialog, "unseen_result", False)):
            dialog.show()
            dialog.raise_()
            dialog.activateWindow()
            return dialog
        dialog = make()
        self.open_dialogs[key] = dialog
        dialog.show()
        return dialog

    def _captions_changed(self, *_args: Any) -> None:
        self.window.notifier.notify(LibraryChanges(any_caption=True))

    def _versions_changed(self, *_args: Any) -> None:
        self.window.notifier.notify(LibraryChanges(versions=True))

    # -- the verbs --------------------------------------------------------------------------

    def open_export(self) -> QDialog | None:
        from desktop_app.export_dialog import ExportDialog

        return self._show("export", lambda: ExportDialog(self.window.library, self.scope(), parent=self.window))

    def open_import(self) -> QDialog | None:
        from desktop_app.import_dialog import ImportDialog

        def make() -> QDialog:
            dialog = ImportDialog(self.window.library, parent=self.window)
            dialog.imported.connect(self._captions_changed)
            return dialog

        return self._show("import", make)

    def open_write_metadata(self) -> QDialog | None:
        from desktop_app.metadata_dialog import MetadataDialog

        return self._show("metadata", lambda: MetadataDialog(self.window.library, self.scope(),
                                                                sidecar_naming=self.window.settings.sidecar_naming,
                                                                parent=self.window))

    def open_duplicates(self) -> QDialog | None:
        from desktop_app.duplicates_dialog import DuplicatesDialog

        window = self.window
        return self._show("duplicates", lambda: DuplicatesDialog(window.library, window.pool, window.notifier,
                                                                   parent=window))

    def open_versions(self) -> QDialog | None:
        from desktop_app.versions_window import VersionsWindow

        def make() -> QDialog:
            device = self.window.settings.caption_spec().device
            dialog = VersionsWindow(self.window.library, device=device, service=self.hooks.captioning,
                                    parent=self.window)
            dialog.changed.connect(self._versions_changed)
            return dialog

        return self._show("versions", make)

    def open_preferences(self) -> QDialog | None:
        from core.training.versions import list_versions
        from desktop_app.preferences_dialog import PreferencesDialog

        window = self.window
        library = window.library
        known = [v.name for v in list_versions(library)] if library is not None else []
        dialog = PreferencesDialog(window.settings, library_path=str(library.path) if library else None,
                                   known_models=known, library=library, parent=window)
        dialog.accepted.connect(lambda: self._apply_preferences(dialog))
        self.open_dialogs["preferences"] = dialog
        dialog.show()
        return dialog

    def _apply_preferences(self, dialog: Any) -> None:
        window = self.window
        self.hooks.set_thumbnail_size(window.settings.thumbnail_size)
        versions_window = self.open_dialogs.get("versions")
        if versions_window is not None and versions_window.isVisible():
            versions_window.refresh()  # the current model may have changed
        wanted = dialog.library.text().strip()
        current = str(window.library.path) if window.library is not None else ""
        if wanted and Path(wanted).expanduser().resolve() != Path(current).resolve():
            self.hooks.open_library(wanted)

    def open_shortcuts(self) -> QDialog | None:
        from desktop_app.help_dialogs import ShortcutsDialog

        ordered: list[QAction] = []
        for menu_action in self.hooks.menu_bar.actions():
            if menu_action.menu() is not None:
                ordered += [a for a in menu_action.menu().actions() if not a.isSeparator()]
        ordered += [a for a in self.hooks.actions.values() if a not in ordered]
        dialog = ShortcutsDialog(ordered, parent=self.window)
        self.open_dialogs["shortcuts"] = dialog
        dialog.show()
        return dialog

    def open_selfcheck(self) -> QDialog | None:
        from desktop_app.help_dialogs import SelfCheckDialog

        library = self.window.library
        path = library.path if library is not None else None

        def run_checks() -> list:
            from core.selfcheck import run_checks as run_core_checks

            return run_core_checks(path)  # the library this window has open

        dialog = SelfCheckDialog(run_checks=run_checks, parent=self.window)
        self.open_dialogs["selfcheck"] = dialog
        dialog.show()
        return dialog

    def open_library_location(self) -> QDialog | None:
        from desktop_app.help_dialogs import LibraryLocationDialog

        return self._show("location", lambda: LibraryLocationDialog(self.window.library, parent=self.window))

    def close_all(self) -> None:
        for dialog in self.open_dialogs.values():
            dialog.close()


def install(window: WindowShell, hooks: VerbHooks) -> VerbMenus:
    """Add the dialogs' actions to the window's menus (and to ``hooks.actions``)."""
    verbs = VerbMenus(window, hooks)
    a = hooks.make_action
    bar = hooks.menu_bar
    file_menu = _menu(bar, "&File")
    quit_action = hooks.actions.get("quit")
    entries = [
        a("export_dataset", "Export dataset…", verbs.open_export, "Ctrl+Shift+E"),
        a("import_captions", "Import captions…", verbs.open_import, "Ctrl+Shift+I"),
        a("write_metadata", "Write captions into photos…", verbs.open_write_metadata, None),
        a("duplicates", "Duplicates…", verbs.open_duplicates, None),
    ]
    separator = file_menu.insertSeparator(quit_action) if quit_action is not None else file_menu.addSeparator()
    for action in entries:
        file_menu.insertAction(separator, action)
    model_menu = _menu(bar, "&Model", before="Help")
    model_menu.addAction(a("model_versions", "Versions…", verbs.open_versions, None))
    edit_menu = _menu(bar, "&Edit")
    edit_menu.addSeparator()
    edit_menu.addAction(a("preferences", "Preferences…", verbs.open_preferences, QKeySequence.StandardKey.Preferences))
    help_menu = _menu(bar, "&Help")
    first = help_menu.actions()[0] if help_menu.actions() else None
    for action in (
        a("shortcuts", "Keyboard shortcuts", verbs.open_shortcuts, "F1"),
        a("self_check", "Self-check", verbs.open_selfcheck, None),
        a("library_location", "Library location", verbs.open_library_location, None),
    ):
        help_menu.insertAction(first, action)
    if first is not None:
        help_menu.insertSeparator(first)
    return verbs
