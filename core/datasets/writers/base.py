"""What every dataset writer shares: the writer interface, exclusive writes and portable provenance."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol

from core.datasets.items import ExportItem
from core.datasets.selection import CaptionedImage


class Writer(Protocol):
    """One export format's writer: ``add`` each image as it comes, ``close`` to finish its files.

    A writer may also name ``reserved_names`` (files it writes in each split folder) and
    ``companion_suffixes`` (files it writes beside each image), which no image may take.
    """

    #: Two images may not share a stem (their caption files would collide).
    by_stem: bool

    def add(self, item: ExportItem) -> None: ...

    def close(self) -> None: ...


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as handle:  # x: never silently overwrite another item
        handle.write(data)


def portable_model_ref(value: str | None) -> str | None:
    """A model or adapter reference fit for a dataset: hub ids as they are, local paths by name.

    Captions made with a local model (a trained version, a folder passed to ``--model``)
    record its absolute path; exported, that would reveal this machine's folders (home,
    temporary training folders) and mean nothing elsewhere.  The last path component
    (the version's or folder's name) is kept.
    """
    if not value:
        return value
    if value.startswith(("/", "\\", "~")) or PureWindowsPath(value).drive:
        name = PureWindowsPath(value).name if PureWindowsPath(value).drive or "\\" in value else PurePosixPath(value).name
        return name or None
    return value


def portable_origin(origin: str | None, root_path: str | None = None) -> str | None:
    """A caption's ``origin`` (``"KIND:file it came from"``) without this machine's folders.

    A file under the image's library folder is given relative to it; any other absolute
    path (an import source elsewhere) by its name: ``sidecar:album/x.txt``, ``csv:captions.csv``.
    """
    if not origin:
        return origin
    kind, colon, where = origin.partition(":")
    if not colon or not (where.startswith(("/", "\\", "~")) or PureWindowsPath(where).drive):
        return origin
    if root_path:
        with contextlib.suppress(ValueError):
            return f"{kind}:{PurePosixPath(where).relative_to(PurePosixPath(root_path)).as_posix()}"
        with contextlib.suppress(ValueError):
            return f"{kind}:{PureWindowsPath(where).relative_to(PureWindowsPath(root_path)).as_posix()}"
    return f"{kind}:{portable_model_ref(where)}"


def export_relative(filename: Any) -> str:
    """A path inside the staging folder as the user will know it: relative to OUT."""
    path = Path(os.fsdecode(filename))
    for parent in path.parents:
        if parent.name.startswith(".") and ".partial-" in parent.name:
            return path.relative_to(parent).as_posix()
    return str(path)


def provenance(image: CaptionedImage) -> dict[str, Any]:
    return {
        "source": image.source,
        "model_name": portable_model_ref(image.model_name),
        "adapter": portable_model_ref(image.adapter),
        "origin": portable_origin(image.origin, image.root_path),
        "score": image.score,
        "caption_created_at": image.caption_created_at.isoformat(),
        "fingerprint": image.fingerprint,
        # Root-relative, never absolute: an exported dataset does not reveal home folders.
        "library_path": image.rel_path,
    }
