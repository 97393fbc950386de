"""Datasets in and out: the export job, the import job, and one module per format.

- :mod:`.export_job` (``export_dataset``) streams the selection (:mod:`.selection`), names
  each image (:mod:`.naming`), prepares its bytes (:mod:`.items`) and hands it to the
  format's writer, all inside an owned staging folder renamed into place (:mod:`.staging`).
- :mod:`.import_job` (``import_captions``) reads a source with the format's reader, finds
  each row's image (:mod:`.matcher`) and stores the captions by the human-caption rules,
  counting into :mod:`.import_stats`.
- :mod:`.writers` and :mod:`.readers` hold one module per format, each found through its
  package's registry: adding a format is one file and one line there.
"""
