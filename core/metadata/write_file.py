"""Writing one photo's caption kinds into its metadata (or its XMP sidecar), safely.

:mod:`.kind_fields` says which fields each kind goes to; this module plans the changes
against what the file holds, writes them through exiv2 and checks the image data did not
change (see :mod:`core.metadata` for the safety rules).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.metadata.errors import MetadataError, MetadataUnavailable
from core.metadata.exiv2 import load_pyexiv2
from core.metadata.fields import (
    EMPTY_XMP_PACKET,
    IN_FILE_SUFFIXES,
    IPTC_SUFFIXES,
    ascii_exif_changes,
    clean_text,
    iptc_changes,
    lang_alt_changes,
    lang_alt_text,
    metadata_text,
    read_iptc,
)
from core.metadata.files import atomic_write, same_image_data
from core.metadata.keywords import (
    IPTC_KEYWORDS,
    as_words,
    bag_typed,
    keyword_iptc_values,
    keyword_xmp_values,
    keywords_from_fields,
    merge_keywords,
    normalized_keywords,
)
from core.metadata.kind_fields import CAPTION, KEYWORDS, TEXT_KINDS, iptc_text
from core.metadata.sidecars import DEFAULT_SIDECAR_NAMING, read_sidecar, sidecar_path

#: A kind's value as the writer takes it: text, or for keywords a list (``|`` hierarchy).
KindValue = str | Sequence[str]


@dataclass(frozen=True)
class WriteOutcome:
    """Where the kinds went and whether anything had to change."""

    target: Path
    changed: bool
    in_file: bool
    fields: tuple[str, ...] = ()
    #: An older EXIF ImageDescription removed because the caption is not ASCII.
    removed_exif_description: str | None = None
    #: The caption was longer than IPTC allows: IPTC holds its beginning, XMP all of it.
    iptc_truncated: bool = False
    #: The kinds whose fields changed.
    kinds: tuple[str, ...] = ()
    #: Kinds other than the caption cut to their IPTC dataset's limit (XMP holds them whole).
    iptc_truncated_kinds: tuple[str, ...] = ()
    #: Texts describing the picture (alt text...) the photo holds and this write leaves as
    #: they are while it changes the description: kind → the photo's text.
    left_disagreeing: dict[str, str] = field(default_factory=dict)


@dataclass
class _Plan:
    xmp: dict[str, Any] = field(default_factory=dict)
    iptc: dict[str, Any] = field(default_factory=dict)
    exif: dict[str, Any] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    removed_exif: str | None = None
    left_disagreeing: dict[str, str] = field(default_factory=dict)


def clean_values(values: Mapping[str, KindValue]) -> dict[str, KindValue]:
    """*values* as the metadata will hold them; empty ones dropped, unknown kinds refused."""
    cleaned: dict[str, KindValue] = {}
    for kind, value in values.items():
        if kind == KEYWORDS:
            words = normalized_keywords(metadata_text(w) for w in ([value] if isinstance(value, str) else value))
            if words:
                cleaned[kind] = words
        elif kind in TEXT_KINDS:
            if not isinstance(value, str):
                raise TypeError(f"{kind} is text, not {type(value).__name__}")
            text = metadata_text(value)
            if text:
                cleaned[kind] = text
        else:
            raise MetadataError(f"the kind {kind!r} has no metadata field; it stays in the library")
    return cleaned


def _plan(image: Any, values: Mapping[str, KindValue], *, iptc_fields: bool, exif_fields: bool,
          replace_keywords: bool) -> _Plan:
    xmp = image.read_xmp()
    iptc, stored_as_utf8 = read_iptc(image) if iptc_fields else ({}, True)
    exif = image.read_exif() if exif_fields else {}
    plan = _Plan()
    iptc_targets: dict[str, str | list[str]] = {}
    for kind, value in values.items():
        before = (len(plan.xmp), len(plan.exif))
        if kind == KEYWORDS:
            words = list(value)
            final = words if replace_keywords else merge_keywords(words, keywords_from_fields(xmp, iptc))
            for key, target in keyword_xmp_values(final).items():
                if as_words(xmp.get(key)) != target:
                    plan.xmp[key] = target
            if iptc_fields:
                iptc_targets[IPTC_KEYWORDS] = keyword_iptc_values(final)
            iptc_differs = iptc_fields and as_words(iptc.get(IPTC_KEYWORDS)) != iptc_targets[IPTC_KEYWORDS]
        else:
            assert isinstance(value, str)
            fields = TEXT_KINDS[kind]
            plan.xmp.update(lang_alt_changes(xmp, fields.xmp, value))
            iptc_differs = False
            if fields.iptc is not None and iptc_fields:
                cut = iptc_text(value, fields.iptc_max_bytes)
                iptc_targets[fields.iptc] = cut
                iptc_differs = iptc.get(fields.iptc) != cut
                if iptc_differs and cut != value:
                    plan.truncated.append(kind)
            if fields.exif is not None and exif_fields:
                change = ascii_exif_changes(exif, fields.exif, value)
                if change.get(fields.exif, "") is None:
                    plan.removed_exif = exif.get(fields.exif)
                plan.exif.update(change)
        if iptc_differs or (len(plan.xmp), len(plan.exif)) != before:
            plan.kinds.append(kind)
    plan.iptc = iptc_changes(iptc, stored_as_utf8, iptc_targets) if iptc_targets else {}
    if CAPTION in plan.kinds:
        for fields in TEXT_KINDS.values():
            text = clean_text(lang_alt_text(xmp.get(fields.xmp)))
            if fields.describes_image and fields.kind not in values and text:
                plan.left_disagreeing[fields.kind] = text
    return plan


def _apply(image: Any, plan: _Plan) -> None:
    if plan.xmp:
        image.modify_xmp(plan.xmp)
        fixed = bag_typed(image.read_raw_xmp())
        if fixed != image.read_raw_xmp():
            image.modify_raw_xmp(fixed)
    if plan.iptc:
        image.modify_iptc(plan.iptc)
    if plan.exif:
        image.modify_exif(plan.exif)


def _outcome(target: Path, plan: _Plan, *, in_file: bool, dry_run: bool) -> WriteOutcome:
    fields = tuple(name for name, changes in (("xmp", plan.xmp), ("iptc", plan.iptc), ("exif", plan.exif)) if changes)
    return WriteOutcome(
        target, changed=bool(fields), in_file=in_file, fields=fields,
        removed_exif_description=None if dry_run else plan.removed_exif,
        iptc_truncated=CAPTION in plan.truncated, kinds=tuple(plan.kinds),
        iptc_truncated_kinds=tuple(k for k in plan.truncated if k != CAPTION),
        left_disagreeing=plan.left_disagreeing,
    )


def _write_in_file(path: Path, values: Mapping[str, KindValue], replace_keywords: bool, dry_run: bool) -> WriteOutcome:
    pyexiv2 = load_pyexiv2()
    before = path.read_bytes()
    mode = os.stat(path).st_mode
    try:
        with pyexiv2.ImageData(before) as image:
            plan = _plan(image, values, iptc_fields=path.suffix.lower() in IPTC_SUFFIXES, exif_fields=True,
                         replace_keywords=replace_keywords)
            if not (plan.xmp or plan.iptc or plan.exif):
                return _outcome(path, plan, in_file=True, dry_run=dry_run)
            # A dry run builds the new file in memory too: its count of files that cannot
            # be written must be the real run's.
            _apply(image, plan)
            after = image.get_bytes()
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - exiv2 reports unsupported/corrupt files this way
        raise MetadataError(f"cannot write metadata into {path.name}: {exc}") from None
    if not same_image_data(before, after):
        raise MetadataError(f"{path.name}: writing metadata would change the image data; file left as it was")
    if not dry_run:
        atomic_write(path, after, mode)
    return _outcome(path, plan, in_file=True, dry_run=dry_run)


def _write_sidecar(image_path: Path, values: Mapping[str, KindValue], naming: str, replace_keywords: bool,
                   dry_run: bool) -> WriteOutcome:
    pyexiv2 = load_pyexiv2()
    target = sidecar_path(image_path, naming)
    if target.is_symlink():
        # Reading it would copy another file's text into the library's folder.
        raise MetadataError(f"the sidecar {target.name} is a symbolic link; not written")
    existing = read_sidecar(target, None) if os.path.lexists(target) else None
    try:
        with pyexiv2.ImageData(existing if existing is not None else EMPTY_XMP_PACKET) as sidecar:
            plan = _plan(sidecar, values, iptc_fields=False, exif_fields=False, replace_keywords=replace_keywords)
            if not plan.xmp or dry_run:
                return _outcome(target, plan, in_file=False, dry_run=dry_run)
            _apply(sidecar, plan)
            data = sidecar.get_bytes()
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - an unparsable sidecar is left as it is
        raise MetadataError(f"cannot update the sidecar {target.name}: {exc}") from None
    atomic_write(target, data, os.stat(target).st_mode if existing is not None else None)
    return _outcome(target, plan, in_file=False, dry_run=dry_run)


def write_kinds(
    path: Path | str, values: Mapping[str, KindValue], *, sidecar: bool = False,
    sidecar_naming: str = DEFAULT_SIDECAR_NAMING, replace_keywords: bool = False, dry_run: bool = False,
) -> WriteOutcome:
    """Store each kind of *values* in *path*'s metadata (:mod:`.kind_fields` says where).

    Keywords are merged with the photo's own unless *replace_keywords*.  Returns what was
    done; ``changed`` is False when the metadata already said so.  With *dry_run* nothing is
    written: the outcome says what a real call would do.  Raises :class:`MetadataError`
    (nothing written) or OSError from the file system.
    """
    values = clean_values(values)
    if not values:
        raise MetadataError("an empty caption is not written")
    real = Path(os.path.realpath(path))  # a symlink keeps pointing at the updated photo
    if not real.is_file():
        raise FileNotFoundError(2, "file not found", str(path))
    if sidecar or real.suffix.lower() not in IN_FILE_SUFFIXES:
        return _write_sidecar(real, values, sidecar_naming, replace_keywords, dry_run)
    return _write_in_file(real, values, replace_keywords, dry_run)


def write_caption(
    path: Path | str, text: str, *, sidecar: bool = False, sidecar_naming: str = DEFAULT_SIDECAR_NAMING,
    dry_run: bool = False,
) -> WriteOutcome:
    """Store *text* as the caption (description) in *path*'s metadata; see :func:`write_kinds`."""
    return write_kinds(path, {CAPTION: text}, sidecar=sidecar, sidecar_naming=sidecar_naming, dry_run=dry_run)
