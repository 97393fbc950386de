"""Export captioned images as a training dataset: imagefolder, CSV, COCO, sidecar, parquet.

What goes in: every image with a current caption (``only="captioned"``), or only those
whose current caption a person wrote or verified (``only="verified"``), optionally
restricted to one library folder.  Only images that exist and decode are exported;
missing and unreadable ones are counted and listed in the stats' ``problems``.

Layouts written under ``OUT`` (each split folder only when it has images):

``imagefolder``
    ``train/`` and ``validation/`` with the images and a ``metadata.jsonl`` of
    ``{"file_name", "text"}`` lines: ``datasets.load_dataset("imagefolder", data_dir=OUT)``.
``csv``
    ``captions.csv`` (``file_name`` relative to OUT, ``text``, ``split`` and provenance
    columns) beside ``train/`` and ``validation/`` image folders.
``coco``
    ``annotations/captions_train.json`` and ``captions_validation.json`` (COCO
    captions: ``images`` + ``annotations``; ``file_name`` relative to the split folder).
``sidecar``
    the images in ``train/`` / ``validation/``, each with a caption file of the same stem
    (``.txt`` or ``.caption``).  *consumer* (CLI ``--for onetrainer|ai-toolkit|kohya``)
    applies that trainer's discovery rules (:data:`core.datasets.naming.CONSUMERS`): sub-folders flattened as
    ``album__photo.jpg`` where it does not recurse (*flatten*), formats it does not read
    converted (*convert_to*, ``png`` by default, named ``anim.gif.png``), and every image it
    would still skip is one warning.  *variants* writes the caption's variants (kept by
    ``import sidecar --lines-as-variants``) one per line, as OneTrainer reads them.
``kohya``
    the layout kohya sd-scripts discovers: ``train/<repeats>_captions/`` and
    ``validation/1_captions/`` holding every image directly (sub-folders flattened as
    ``album__photo.jpg``; formats sd-scripts does not read, e.g. TIFF and GIF, converted
    to PNG as ``scan.tif.png``) with ``<stem>.txt`` captions, plus ``dataset_train.toml`` in
    sd-scripts' ``--dataset_config`` format (paths relative to OUT: run sd-scripts from OUT).
    The held-out images get no config: sd-scripts trains on every ``--dataset_config``.  The
    plain ``sidecar`` layout keeps sub-folders and formats as they are, which sd-scripts skips.
``parquet``
    ``data/train-00000-of-00001.parquet`` (and validation) with the image bytes embedded
    in the Hugging Face ``Image`` layout, so the dataset loads after the photos move.

Caption kinds (:mod:`core.kinds`, :mod:`core.datasets.kind_values`): csv, parquet and
imagefolder carry one column per kind beside ``text`` (the caption); sidecar and kohya
write the value of *kind* (``--kind keywords``: the photos with keywords) or a *template*
(``--template "{keywords}, {caption}"``: the photos with a caption, or with the template's
first kind when it names no caption), recorded in the manifest and kohya's TOML; COCO
stays captions.

The split comes from :func:`core.splits.assign_split`: deterministic, stable as the
library grows, and byte-identical copies and the members of a duplicate group
(:mod:`core.duplicates`) always on the same side; near-duplicates excluded by "keep one"
are not exported.

HEIC/HEIF/AVIF are converted to JPEG (named ``IMG_1.HEIC.jpg``): imagefolder, PIL
without plugins and the training tools cannot read them.  Other files are copied as
they are, metadata included.

Atomicity: everything is written into a hidden ``.OUT.partial-*`` folder beside OUT and
renamed into place only when complete (after fsync), so a cancelled, failed or killed
export never leaves a half dataset at OUT.  A later export to the same OUT removes the
hidden leftovers of a killed one, and only those: folders carrying CaptionDesk's owner
marker (:mod:`core.ownership`), at once when the marker's process (on this machine) is
gone, else once untouched for an hour, so a running one is safe and a person's own
``.OUT.partial-x`` or ``.OUT.old-x`` folder is never touched.
``--overwrite`` refuses, naming them, when files were added to or changed in the earlier
export after it was made: they are the user's, not CaptionDesk's to delete.

"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import func, select

from core import __version__
from core.datasets.errors import ExportError
from core.datasets.items import ExportItem, prepare_image
from core.datasets.kind_values import (
    column_name,
    current_values,
    export_value,
    render_template,
    template_fields,
)
from core.datasets.naming import (
    CAPTION_EXTENSIONS,
    Layout,
    NameAllocator,
    dataset_name,
    export_caption_line,
    export_layout,
)
from core.datasets.selection import (
    CHUNK_SIZE,
    CaptionedImage,
    count_captioned_images,
    folder_scope,
    iter_captioned_images,
    library_root_labels,
    outdated_images,
)
from core.datasets.staging import MANIFEST_NAME, Staging
from core.datasets.writers import EXPORT_FORMATS, WRITERS, Writer, make_writer
from core.datasets.writers.base import export_relative
from core.db import Database
from core.imaging import ImageDecodeError
from core.jobs import (
    NEVER_CANCELLED,
    CancelToken,
    JobRun,
    JobStats,
    ProgressCallback,
    count_phrase,
    no_progress,
    not_counted,
)
from core.kinds import CAPTION, all_kinds
from core.models import Caption, ImageState, LibraryRoot
from core.queries import FolderScope, outdated_phrase
from core.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO, SPLITS, assign_split, validate_val_ratio

if TYPE_CHECKING:
    from core.library import Library


@dataclass
class ExportStats(JobStats):
    """What an export did; ``problems`` lists each image left out and why."""

    TITLE: ClassVar[str] = "Export"
    LABELS: ClassVar[Mapping[str, tuple[str, str]]] = {"errors": ("unreadable", "unreadable")}

    format: str
    exported: int = 0
    train: int = 0
    validation: int = 0
    converted: int = 0
    skipped: int = 0
    missing: int = 0
    errors: int = 0
    #: Images in scope left out because their picture changed since they were captioned.
    outdated: int = not_counted()
    #: Exported images the trainer named with ``--for`` would not find (each is a warning).
    unread: int = 0
    #: Where the dataset is, once renamed into place; None if nothing was written.
    out: Path | None = None

    def summary(self) -> str:
        outdated = f"; {outdated_phrase(self.outdated)}" if self.outdated else ""
        if self.cancelled or self.out is None:
            return super().summary() + outdated
        converted = f"; {self.converted} converted to JPEG" if self.converted else ""
        unread = f"; {self.unread} the trainer would not find (see the warnings)" if self.unread else ""
        return (
            f"Exported {count_phrase(self.exported, 'image', 'images')} to {self.out} "
            f"(train {self.train}, validation {self.validation}{converted}); "
            f"{self.missing} missing, {self.errors} unreadable, {self.skipped} skipped{outdated}{unread}"
        )




def _check_out_folder(db: Database, out: Path) -> None:
    """OUT inside a library folder would be scanned back in as duplicates of every photo."""
    with db.read() as session:
        roots = list(session.scalars(select(LibraryRoot.path)))
    resolved = out.resolve()
    for root_path in roots:
        root = Path(root_path)
        if resolved == root or resolved.is_relative_to(root):
            raise ExportError(
                f"{out} is inside the library folder {root}; the next scan would add the "
                "exported copies as new photos. Choose a folder outside the library."
            )
        if root.is_relative_to(resolved):
            raise ExportError(f"{out} contains the library folder {root}; choose another folder")


def _write_manifest(folder: Path, stats: ExportStats, params: dict[str, Any]) -> None:
    manifest = {
        "format": params["format"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "captiondesk_version": __version__,
        "only": params["only"],
        # The folder's name only: an export carries no absolute path of this machine.
        "folder": Path(params["folder"]).name if params["folder"] else None,
        "split": {
            "function": "core.splits.assign_split",
            "val_ratio": params["val_ratio"],
            "seed": params["seed"],
        },
        "counts": stats.counts(),
        **({"kind": params["kind"]} if params.get("kind", CAPTION) != CAPTION else {}),
        **({"template": params["template"]} if params.get("template") else {}),
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_dataset(
    library: Library,
    fmt: str,
    out: Path | str,
    *,
    only: str = "captioned",
    folder: Path | str | None = None,
    image_ids: Collection[int] | None = None,
    val_ratio: float = DEFAULT_VAL_RATIO,
    seed: int = DEFAULT_SEED,
    caption_extension: str = ".txt",
    consumer: str | None = None,
    flatten: bool | None = None,
    convert_to: str | None = None,
    variants: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    kind: str = CAPTION,
    template: str | None = None,
) -> ExportStats:
    """Export the library's captioned images to *out* in format *fmt* (see module doc).

    *library* is a :class:`core.library.Library`.  *image_ids*, when given, narrows the
    export to those images (a selection, or the ids of a filter).  Raises :class:`ExportError` for
    options that cannot work (before anything is written).  Returns stats; ``out`` is
    None when the export was cancelled or nothing qualified, and then nothing exists at
    *out*.  The run is recorded as an ``export`` job.  *consumer*, *flatten*, *convert_to*
    and *variants* shape the sidecar and kohya layouts (see :func:`export_layout`); so do
    *kind* and *template* (the text of each caption file, see the module doc).
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if caption_extension not in CAPTION_EXTENSIONS:
        raise ExportError(f"caption extension must be one of {', '.join(CAPTION_EXTENSIONS)}")
    try:
        val_ratio = validate_val_ratio(val_ratio)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    layout = export_layout(
        fmt, consumer=consumer, flatten=flatten, convert_to=convert_to, caption_extension=caption_extension,
        variants=variants,
    )
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError("parquet export needs pyarrow: pip install pyarrow") from None
    db: Database = library.db
    select_kind, fields = _text_choice(db, fmt, kind, template)
    out_path = Path(out).expanduser().absolute()
    folder_filter = folder_scope(db, folder) if folder is not None else None
    _check_out_folder(db, out_path)
    own = library.own_folder_holding(out_path)
    if own is not None:
        raise ExportError(f"{out_path} is inside the library's own folder {own}, where CaptionDesk deletes "
                          "what it no longer needs; choose a folder outside it")
    params = {
        "format": fmt, "out": str(out_path), "only": only,
        "folder": str(folder) if folder is not None else None,
        "image_ids": len(image_ids) if image_ids is not None else None,
        "val_ratio": val_ratio, "seed": seed, "caption_extension": caption_extension,
        "for": consumer, "flatten": layout.flatten if layout else None,
        "convert_to": convert_to, "variants": variants, "kind": kind, "template": template,
    }
    total = count_captioned_images(db, only=only, folder=folder_filter, image_ids=image_ids, for_dataset=True,
                                   kind=select_kind)
    root_labels = library_root_labels(db, only, folder_filter, image_ids, kind=select_kind)
    staging = Staging(out_path, overwrite=overwrite)  # refuses a bad OUT before the job starts
    try:
        with library.job("export", params, ExportStats(format=fmt), progress) as run:
            stats = run.stats
            # The caption described another picture: never pair it with this one.
            # (A changed picture sets aside its caption only: the other kinds have no such state.)
            outdated = outdated_images(db, only=only, folder=folder_filter, image_ids=image_ids) \
                if select_kind == CAPTION else []
            for path in outdated:
                stats.outdated += 1
                stats.problems.append(f"{path}: changed since captioned, left out (caption it again)")
            _run_export(
                db, staging.path, fmt, run,
                only=only, folder_filter=folder_filter, image_ids=image_ids, root_labels=root_labels,
                val_ratio=val_ratio, seed=seed, caption_extension=caption_extension,
                total=total, cancel=cancel, layout=layout, text=_ItemText(select_kind, template, fields),
            )
            if stats.cancelled or stats.exported == 0:
                staging.discard()
            else:
                try:
                    _write_manifest(staging.path, stats, params)
                    staging.commit()
                except OSError as exc:
                    raise ExportError(f"cannot finish the export at {out_path}: {exc.strerror or exc}") from exc
                stats.out = out_path
            run.done = stats.exported  # the record counts what was exported
    except BaseException:
        staging.discard()
        raise
    return stats


def _text_choice(db: Database, fmt: str, kind: str, template: str | None) -> tuple[str, list[str]]:
    """``(the kind whose values select the images, the kinds each image's values are needed of)``;
    :class:`ExportError` for a choice the format cannot take, an unknown kind or template field."""
    with db.read() as session:
        kinds = list(all_kinds(session))
    columns = getattr(WRITERS[fmt], "per_kind_columns", False)
    if kind != CAPTION or template is not None:
        # A text per image (a caption file beside it) is what --kind and --template make.
        if not WRITERS[fmt].by_stem:
            raise ExportError(f"--kind and --template go with sidecar and kohya; {fmt} "
                              + ("carries a column per kind already" if columns else "writes captions only"))
        if kind != CAPTION and template is not None:
            raise ExportError("give --kind or --template, not both")
    if template is not None:
        fields = template_fields(template, kinds)
        return (CAPTION if CAPTION in fields else fields[0]), fields
    if kind not in kinds:
        raise ExportError(f"no caption kind {kind!r}; kinds: {', '.join(kinds)}")
    return kind, [k for k in kinds if k != CAPTION] if columns else []


@dataclass(frozen=True)
class _ItemText:
    """What each image's text is: its value of *kind*, or *template* over *fields*; the
    formats with a column per kind get every kind's value (*fields*)."""

    kind: str = CAPTION
    template: str | None = None
    fields: tuple[str, ...] | list[str] = ()

    def render(self, image: CaptionedImage, values: dict[str, str]) -> tuple[str, dict[str, str | None]]:
        """``(text, {column: value})`` of *image* given its other kinds' *values*."""
        own = export_value(self.kind, image.text)
        if self.template is not None:
            return render_template(self.template, {**values, self.kind: own}), {}
        return own, {column_name(k): values.get(k) for k in self.fields}


def _run_export(
    db: Database,
    root: Path,
    fmt: str,
    run: JobRun[ExportStats],
    *,
    only: str,
    folder_filter: FolderScope | None,
    image_ids: Collection[int] | None,
    root_labels: dict[int, str],
    val_ratio: float,
    seed: int,
    caption_extension: str,
    total: int,
    cancel: CancelToken,
    layout: Layout | None = None,
    text: _ItemText | None = None,
) -> None:
    stats = run.stats
    text = text or _ItemText()
    writer = make_writer(fmt, root, caption_extension,
                         kind_columns=[column_name(k) for k in text.fields] if text.template is None else (),
                         template=text.template)
    allocators = {
        split: NameAllocator(
            by_stem=writer.by_stem,
            companions=getattr(writer, "companion_suffixes", ()),
            reserved=getattr(writer, "reserved_names", ()),
        )
        for split in SPLITS
    }
    done = 0
    try:
        for image, values in _with_values(db, iter_captioned_images(db, only=only, folder=folder_filter,
                                                                      image_ids=image_ids, for_dataset=True,
                                                                      kind=text.kind), text):
            if cancel.is_set():
                stats.cancelled = True
                break
            done += 1
            variants = _variant_texts(db, image) if layout is not None and layout.variants else ()
            item_text, columns = text.render(image, values)
            _export_one(image, writer, allocators, stats, root_labels, val_ratio, seed, layout, variants,
                        item_text, columns)
            run.progress(done, total, f"Exporting {fmt}")
    except BaseException:
        # The export is discarded; closing may fail for the same reason (a full disk)
        # and must not replace the error that says what went wrong.
        with contextlib.suppress(Exception):
            writer.close()
        raise
    try:
        writer.close()
    except OSError as exc:
        raise ExportError(f"cannot write the dataset: {exc.strerror or exc}") from exc
    run.progress(done, total, "Export cancelled" if stats.cancelled else "Export finished", force=True)


def _with_values(db: Database, images: Iterator[CaptionedImage],
                 text: _ItemText) -> Iterator[tuple[CaptionedImage, dict[str, str]]]:
    """Each image with the current values of ``text.fields``, fetched once per chunk of images."""
    others = [k for k in text.fields if k != text.kind]
    chunk: list[CaptionedImage] = []
    for image in _and_end(images):
        if image is not None:
            chunk.append(image)
        if chunk and (image is None or len(chunk) >= CHUNK_SIZE):
            values = current_values(db, [i.image_id for i in chunk], others)
            yield from ((i, values.get(i.image_id, {})) for i in chunk)
            chunk = []


def _and_end(images: Iterator[CaptionedImage]) -> Iterator[CaptionedImage | None]:
    yield from images
    yield None


def _variant_texts(db: Database, image: CaptionedImage) -> tuple[str, ...]:
    """The other variants imported with *image*'s caption (``import sidecar --lines-as-variants``),
    in their file's order, without the current caption's text."""
    index = func.json_extract(Caption.provenance, "$.index")
    query = (
        select(Caption.text)
        .where(Caption.image_id == image.image_id, Caption.kind == CAPTION, Caption.id != image.caption_id)
        .where(func.json_extract(Caption.provenance, "$.variants") == 1, index > 0)
        .order_by(index, Caption.id)
    )
    with db.read() as session:
        texts = list(session.scalars(query))
    seen = {export_caption_line(image.text)}
    result = []
    for text in texts:
        line = export_caption_line(text)
        if line and line not in seen:
            seen.add(line)
            result.append(text)
    return tuple(result)


def _export_one(
    image: CaptionedImage,
    writer: Writer,
    allocators: dict[str, NameAllocator],
    stats: ExportStats,
    root_labels: dict[int, str],
    val_ratio: float,
    seed: int,
    layout: Layout | None = None,
    variants: tuple[str, ...] = (),
    text: str | None = None,
    columns: dict[str, str | None] | None = None,
) -> None:
    """Export one image, or count and note why it was left out."""
    text = (image.text if text is None else text).strip()
    if not text:
        stats.skipped += 1
        stats.problems.append(f"{image.path}: empty caption, skipped")
        return
    if image.state == ImageState.MISSING:
        stats.missing += 1
        stats.problems.append(f"{image.path}: missing (last scan did not find it)")
        return
    if image.state == ImageState.ERROR:
        stats.errors += 1
        stats.problems.append(f"{image.path}: unreadable ({image.error or 'error at scan'})")
        return
    path = image.path
    if not path.is_file():
        stats.missing += 1
        stats.problems.append(f"{path}: missing (not found now; rescan the library)")
        return
    try:
        prepared = prepare_image(path, image.width, image.height)
    except ImageDecodeError as exc:
        stats.errors += 1
        stats.problems.append(f"{path}: {exc}")
        return
    except OSError as exc:  # reading the source failed: this image only
        stats.errors += 1
        stats.problems.append(f"{path}: cannot read ({exc.strerror or exc})")
        return
    try:
        wanted_name = dataset_name(image, root_labels)
    except ExportError as exc:
        stats.errors += 1
        stats.problems.append(f"{path}: {exc}")
        return
    if layout is not None:
        wanted_name = layout.name(wanted_name)
    split = assign_split(image.split_key, val_ratio, seed)
    name = allocators[split].allocate(wanted_name)
    try:
        writer.add(ExportItem(image, split, name, text, prepared, variants, columns or {}))
    except OSError as exc:
        # The output side failed (disk full, permissions): stop, the dataset would be incomplete.
        where = f" ({export_relative(exc.filename)})" if getattr(exc, "filename", None) else ""
        raise ExportError(f"cannot write the dataset{where}: {exc.strerror or exc}") from exc
    stats.exported += 1
    stats.converted += prepared.converted
    if layout is not None and layout.consumer is not None and (reason := layout.consumer.skip_reason(name)):
        stats.unread += 1
        stats.problems.append(f"{path}: {layout.consumer.label} would not find it as {split}/{name}: {reason}")
    if split == "train":
        stats.train += 1
    else:
        stats.validation += 1
