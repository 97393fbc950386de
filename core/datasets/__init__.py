"""Datasets in and out: the export job, the import job, and one module per format.

- :mod:`.export_job` (``export_dataset``) streams the selection (:mod:`.selection`), names
  each image (:mod:`.naming`), prepares its bytes (:mod:`.items`) and hands it to the
  format's writer, all inside an owned staging folder renamed into place (:mod:`.staging`).
- :mod:`.writers` holds one module per export format, found through its registry
  (``writers/__init__.py``); :mod:`.readers` the same for import formats.
"""
