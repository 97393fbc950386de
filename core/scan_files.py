"""What a scan reads from the disk: the image files under a root, and the columns of one.

:func:`walk_images` walks a root (hidden files and folders skipped, symlinked folders
followed once, unreadable folders and broken links reported, never fatal);
:func:`describe_file` fingerprints and probes one new or changed file and
:func:`check_decodes` decodes it small.  Writing what they find into the store is
:mod:`core.scanner`'s part.
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Collection, Iterator
from pathlib import Path

from core.filenames import for_display, to_stored
from core.fingerprint import fingerprint_and_head, image_data_key
from core.imaging import IMAGE_EXTENSIONS, ImageDecodeError, load_rgb, probe
from core.inputs import describe_mode
from core.models import ImageState

#: Images in error are decoded again at this size on each scan to see if they recovered.
RECHECK_DECODE_SIZE = 64


def _is_hidden(entry: os.DirEntry[str]) -> bool:
    if entry.name.startswith("."):
        return True
    attributes = getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0)
    return bool(attributes & getattr(stat_module, "FILE_ATTRIBUTE_HIDDEN", 0))


def shown_path(os_path: str) -> str:
    """An OS path as printable text (undecodable bytes as ``\\xNN``)."""
    return for_display(to_stored(os_path))


def _real(path: str | Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def walk_images(root: Path, problems: list[str],
                exclude: Collection[str | Path] = ()) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative_path, stat)`` for every image file under *root*.

    Relative paths use ``/`` on every platform so a library moves between systems, and
    are in stored form (:func:`core.filenames.to_stored`): a name that is not valid UTF-8
    is kept losslessly instead of failing the whole scan.  Files and folders in *exclude*
    (the library's own: :meth:`core.library.Library.own_paths`) are never entered or yielded.
    """
    # By name first, so only an entry named like an excluded path costs a realpath.
    excluded: dict[str, set[str]] = {}
    for path in exclude:
        excluded.setdefault(os.path.basename(os.fspath(path)), set()).add(_real(path))
    try:
        root_stat = root.stat()
    except OSError as exc:
        problems.append(f"cannot read folder {shown_path(str(root))}: {exc.strerror or exc}")
        return
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listing = list(entries)
        except OSError as exc:
            problems.append(f"cannot read folder {shown_path(folder)}: {exc.strerror or exc}")
            continue
        subfolders: list[tuple[str, str]] = []
        for entry in listing:
            try:
                if _is_hidden(entry):
                    continue
                if entry.name in excluded and _real(entry.path) in excluded[entry.name]:
                    continue
                if entry.is_dir(follow_symlinks=True):
                    st = entry.stat(follow_symlinks=True)
                    key = (st.st_dev, st.st_ino)
                    if key in visited:
                        if entry.is_symlink():
                            problems.append(f"skipped symlink loop {shown_path(entry.path)}")
                        continue
                    visited.add(key)
                    subfolders.append((entry.path, f"{prefix}{to_stored(entry.name)}/"))
                    continue
                if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                st = entry.stat(follow_symlinks=True)
                if not stat_module.S_ISREG(st.st_mode):
                    # Never opened: reading a FIFO named like a photo would block the scan.
                    problems.append(f"skipped {shown_path(entry.path)}: {describe_mode(st.st_mode)}, not a regular file")
                    continue
            except FileNotFoundError:
                if entry.is_symlink():
                    problems.append(f"skipped broken link {shown_path(entry.path)}")
                continue  # vanished while we looked: the next scan settles it
            except OSError as exc:
                problems.append(f"cannot read {shown_path(entry.path)}: {exc.strerror or exc}")
                continue
            yield f"{prefix}{to_stored(entry.name)}", st
        # Sorted, reversed onto the stack: folders are visited in name order.
        stack.extend(sorted(subfolders, reverse=True))


def describe_file(path: str, st: os.stat_result, *, new: bool = False) -> dict[str, object]:
    """Fingerprint and probe one new or changed file: the columns to store for it.

    A *new* file also gets its split key, the key of its image data without metadata
    (:func:`core.fingerprint.image_data_key`), so writing captions into it later — here
    or before another library sees it — never moves it between train and validation.
    """
    row: dict[str, object] = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "width": None,
        "height": None,
        "format": None,
        "state": ImageState.OK.value,
        "error": None,
    }
    if new:
        row["split_key"] = None  # every inserted row has the same columns
    row["content_key"] = None
    try:
        row["fingerprint"], head = fingerprint_and_head(path, st.st_size)
    except OSError as exc:
        # Unreadable (permissions, I/O error): keep it visible with the reason.
        row["fingerprint"] = f"unreadable:{st.st_size}:{st.st_mtime_ns}"
        row["state"] = ImageState.ERROR.value
        row["error"] = f"cannot read file: {exc.strerror or exc}"
        return row
    try:
        data_key = image_data_key(path, st.st_size, head)
    except OSError:
        data_key = None  # the fingerprint stands in (as for TIFF, HEIC...)
    if new:
        row["split_key"] = data_key
    row["content_key"] = data_key or row["fingerprint"]
    try:
        info = probe(path, head)
    except ImageDecodeError as exc:
        row["state"] = ImageState.ERROR.value
        row["error"] = str(exc)
    else:
        row["width"], row["height"], row["format"] = info.width, info.height, info.format
    return row


def check_decodes(path: str, row: dict[str, object]) -> None:
    """Decode *path* (small); on failure put the reason in *row* as an error."""
    try:
        load_rgb(path, max_size=RECHECK_DECODE_SIZE)
    except ImageDecodeError as exc:
        row["state"] = ImageState.ERROR.value
        row["error"] = str(exc)
