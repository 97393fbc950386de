"""Persistent preferences (``QSettings``): layout, last library, model defaults, thumbnails.

A thin typed wrapper so every key is spelled once and has a default; tests give it a
``QSettings`` in INI format under a temporary folder so they never touch the user's.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from core import APP_NAME
from core.captioning.job_spec import CaptionJobSpec

DEFAULT_THUMBNAIL_SIZE = 160
THUMBNAIL_SIZES = (96, 128, 160, 200, 256)
#: Where the last caption job's spec is kept (the key predates the spec: same place).
_CAPTION_SPEC_KEY = "captioning/defaults"


class AppSettings:
    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings if qsettings is not None else QSettings(APP_NAME, APP_NAME)

    # -- window ------------------------------------------------------------------------

    def geometry(self) -> QByteArray | None:
        value = self.q.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    def window_state(self) -> QByteArray | None:
        value = self.q.value("window/state")
        return value if isinstance(value, QByteArray) else None

    def splitter(self, name: str) -> QByteArray | None:
        value = self.q.value(f"window/splitter_{name}")
        return value if isinstance(value, QByteArray) else None

    def save_layout(self, geometry: QByteArray, state: QByteArray, splitters: dict[str, QByteArray]) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)
        for name, value in splitters.items():
            self.q.setValue(f"window/splitter_{name}", value)

    @property
    def list_view(self) -> bool:
        """The photos as a list with columns (else the thumbnail grid)."""
        return str(self.q.value("view/list", "false")).lower() == "true"

    @list_view.setter
    def list_view(self, on: bool) -> None:
        self.q.setValue("view/list", "true" if on else "false")

    def view_state(self) -> dict[str, Any]:
        """The last library's folder, sort and selection (``desktop_app.window_state``); {} if none kept."""
        try:
            data = json.loads(self.q.value("view/last_state", "") or "{}")
        except (TypeError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_view_state(self, state: dict[str, Any]) -> None:
        self.q.setValue("view/last_state", json.dumps(state))

    # -- library -----------------------------------------------------------------------

    @property
    def last_library(self) -> str | None:
        value = self.q.value("library/last")
        return str(value) if value else None

    @last_library.setter
    def last_library(self, path: str | None) -> None:
        self.q.setValue("library/last", path or "")

    # -- thumbnails --------------------------------------------------------------------

    @property
    def thumbnail_size(self) -> int:
        try:
            size = int(self.q.value("view/thumbnail_size", DEFAULT_THUMBNAIL_SIZE))
        except (TypeError, ValueError):
            return DEFAULT_THUMBNAIL_SIZE
        return min(THUMBNAIL_SIZES, key=lambda s: abs(s - size))

    @thumbnail_size.setter
    def thumbnail_size(self, size: int) -> None:
        self.q.setValue("view/thumbnail_size", int(size))

    # -- captioning defaults -------------------------------------------------------------

    def caption_spec(self) -> CaptionJobSpec:
        """The last caption job's model, adapter, generation settings, batch size, device
        (``CaptionJobSpec.to_dict``); the default spec when none was kept or it no longer
        reads (an older or hand-edited file).  Its scope is None: the dialog asks."""
        raw = self.q.value(_CAPTION_SPEC_KEY, "")
        try:
            data = json.loads(raw) if raw else {}
            if not isinstance(data, dict):
                raise ValueError("not a mapping")
            if "overwrite" in data:  # how versions before the spec spelled it
                data.setdefault("overwrite_model_captions", data.pop("overwrite"))
            if "settings" in data:  # the generation settings' key before it was "generation"
                data.setdefault("generation", data.pop("settings"))
            return CaptionJobSpec.from_dict(data)
        except (TypeError, ValueError):
            return CaptionJobSpec()

    def caption_defaults(self, library: Any) -> CaptionJobSpec:
        """:meth:`caption_spec` with the library's current model (a model server keeps its own model name)."""
        spec = self.caption_spec()
        if library is None or spec.backend != "local":
            return spec
        from core.training.current import current_model

        return spec.with_(model=current_model(library).model, adapter=None)

    def set_caption_spec(self, spec: CaptionJobSpec) -> None:
        # JSON, not nested QSettings maps: INI and the Windows registry round-trip
        # nested types differently; a string is the same everywhere.
        self.q.setValue(_CAPTION_SPEC_KEY, json.dumps(spec.to_dict(), sort_keys=True))

    # -- metadata write-back --------------------------------------------------------------

    @property
    def sidecar_naming(self) -> str:
        """``stem`` (photo.xmp) or ``full`` (photo.jpg.xmp); core.metadata's default if unset or unknown."""
        from core.metadata import DEFAULT_SIDECAR_NAMING, SIDECAR_NAMINGS

        value = str(self.q.value("metadata/sidecar_naming", DEFAULT_SIDECAR_NAMING))
        return value if value in SIDECAR_NAMINGS else DEFAULT_SIDECAR_NAMING

    @sidecar_naming.setter
    def sidecar_naming(self, naming: str) -> None:
        from core.metadata import validate_sidecar_naming

        self.q.setValue("metadata/sidecar_naming", validate_sidecar_naming(naming))

    def sync(self) -> None:
        self.q.sync()
