"""The main window's behaviour, one controller per concern.

:class:`~desktop_app.main_window.MainWindow` builds the widgets and the menus and hands
each concern to one object that holds a reference to the window:

* :mod:`.library` — open a library, add/remove folders (menu, empty-state page, drag and drop);
* :mod:`.scan` — background scans and the "N photos have no caption" banner;
* :mod:`.caption_jobs` — batch captioning: start, pause, cancel, progress, failures;
* :mod:`.navigation` — the current image, preview, caption panel, edits and the review keys;
* :mod:`.versions` — training a new model version and switching to it.

The dataset dialogs (export, import, write metadata, versions, preferences, help) are
:class:`desktop_app.verb_menus.VerbMenus` (``window.verbs``).
"""
