"""The main window's behaviour, one controller per concern.

:class:`~desktop_app.main_window.MainWindow` builds the widgets and the menus and hands
each concern to one object, with the widgets that concern owns; of the window itself a
controller sees only :class:`~desktop_app.controllers.shell.WindowShell` (the library,
the preferences, the pool, the change notice, messages), so none imports the window:

* :mod:`.library` — open a library, add/remove folders (menu, empty-state page, drag and drop);
* :mod:`.scan` — background scans and the "N photos have no caption" banner;
* :mod:`.caption_jobs` — batch captioning: start, pause, cancel, progress, failures;
* :mod:`.image_review` — the current image, preview, caption panel, save, accept, undo
  steps, find and replace, and the review keys;
* :mod:`.versions` — training a new model version and switching to it;
* :mod:`.model_jobs` — the model thread's training/evaluating/merging job in the status bar.

What a controller changes in the library it announces through
``window.notifier.library_changed`` (:mod:`desktop_app.operations`); the grid, the sidebar
and the caption panel refresh themselves from that notice.  The dataset dialogs (export,
import, write metadata, versions, preferences, help) are
:class:`desktop_app.verb_menus.VerbMenus` (``window.verbs``).
"""
