"""How exported images are named: converted formats, kohya's flat names, the trainers'
discovery rules behind ``--for`` and the inverse an import uses (:func:`library_name_candidates`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.datasets.errors import ExportError
from core.datasets.selection import CaptionedImage
from core.imaging import IMAGE_EXTENSIONS

CAPTION_EXTENSIONS = (".txt", ".caption")
#: Formats the dataset consumers cannot read: exported as JPEG.
CONVERT_TO_JPEG = frozenset({".heic", ".heif", ".avif"})
KOHYA_FOLDER_SEPARATOR = "__"


def converted_image_name(
    name: str, *, kohya: bool = False, consumers: Collection[Consumer] = (), convert_to: str = "png"
) -> str:
    """*name* with the suffix of the format the export converts it to appended, if any.

    ``IMG_1.HEIC`` becomes ``IMG_1.HEIC.jpg``; a format one of *consumers* (with *kohya*:
    sd-scripts) does not read also becomes *convert_to* (``scan.tif.png``).  Keeping the
    original name inside is what lets :func:`library_name_candidates` lead an import back.
    """
    if PurePosixPath(name).suffix.lower() in CONVERT_TO_JPEG:
        name += ".jpg"
    if kohya:
        consumers = (*consumers, CONSUMERS["kohya"])
    if any(not consumer.reads_suffix(PurePosixPath(name).suffix) for consumer in consumers):
        name += f".{convert_to}"
    return name


def kohya_flat_name(name: str) -> str:
    """*name* without sub-folders (sd-scripts does not recurse): ``album__photo.jpg``."""
    return KOHYA_FOLDER_SEPARATOR.join(PurePosixPath(name).parts)


def library_name_candidates(name: str) -> list[str]:
    """The library paths an exported image path may stand for, *name* itself first.

    The inverse of :func:`converted_image_name` and :func:`kohya_flat_name`: a library
    file may itself be called ``a.tif.png`` or ``a__b.jpg``, so the literal name wins.
    """
    path = PurePosixPath(name)
    inner = PurePosixPath(path.stem).suffix
    candidates = [name]
    # A conversion appends .jpg or .png to a name in another format (never x.png.png).
    if path.suffix in CONVERTED_SUFFIXES and inner.lower() in IMAGE_EXTENSIONS and inner != path.suffix:
        candidates.append(str(path.with_name(path.stem)))
    for candidate in list(candidates):
        folder, _, file_name = candidate.rpartition("/")
        if KOHYA_FOLDER_SEPARATOR in file_name.strip("_"):
            unflattened = file_name.replace(KOHYA_FOLDER_SEPARATOR, "/")
            candidates.append(f"{folder}/{unflattened}" if folder else unflattened)
    return candidates


@dataclass(frozen=True)
class Consumer:
    """Which images a training tool finds in the folder it is given, and their captions.

    Each is its dataset loader's rule, as written in its source (quoted at each entry of
    :data:`CONSUMERS`); tests/core/datasets/test_interchange.py runs the same rules on real exports.
    """

    key: str
    label: str
    #: Image suffixes it reads.
    extensions: frozenset[str]
    #: Whether the suffix must match in one of the spellings listed (sd-scripts' glob).
    case_sensitive: bool
    #: Whether it looks into sub-folders.
    recursive: bool
    #: Caption files it reads (``<stem><extension>`` beside the image).
    caption_extensions: tuple[str, ...]
    #: Sub-folders it leaves out even when it recurses.
    skipped_folders: frozenset[str] = frozenset()

    def reads_suffix(self, suffix: str) -> bool:
        return (suffix if self.case_sensitive else suffix.lower()) in self.extensions

    def skip_reason(self, name: str) -> str | None:
        """Why the tool would not find *name* (relative to its folder), or None."""
        path = PurePosixPath(name)
        if len(path.parts) > 1 and not self.recursive:
            return "it does not look into sub-folders (leave out --no-flatten)"
        if self.skipped_folders.intersection(path.parts[:-1]):
            return f"it leaves out {'/'.join(sorted(self.skipped_folders))} folders (use --flatten)"
        if not self.reads_suffix(path.suffix):
            return f"it does not read {path.suffix or 'extensionless'} files (use --convert-to png)"
        return None


#: What an export converts a format a trainer does not read to (``png`` is lossless).
CONVERT_TO_CHOICES = ("png", "jpg")
CONVERTED_SUFFIXES = tuple(f".{choice}" for choice in CONVERT_TO_CHOICES)
#: What sd-scripts' ``glob_images`` finds (library/train_util.py ``IMAGE_EXTENSIONS``,
#: matched on the exact suffix in those spellings).
KOHYA_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP")
CONSUMERS: dict[str, Consumer] = {
    # sd-scripts library/train_util.py: glob_images(dir, "*" + ext) per IMAGE_EXTENSIONS, no
    # recursion in a subset's image_dir, caption <stem><caption_extension>.
    "kohya": Consumer("kohya", "kohya sd-scripts", frozenset(KOHYA_IMAGE_EXTENSIONS), True, False, CAPTION_EXTENSIONS),
    # OneTrainer modules/util/path_util.py SUPPORTED_IMAGE_EXTENSIONS (lower-cased suffix);
    # ConceptConfig defaults include_subdirectories=False, text prompt_source "sample" (<stem>.txt).
    "onetrainer": Consumer(
        "onetrainer", "OneTrainer", frozenset({".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}),
        False, False, (".txt",),
    ),
    # ai-toolkit toolkit/data_loader.py: image_extensions, os.walk of folder_path (lower-cased
    # suffix), files in a _controls folder removed; caption_ext "txt" by default.
    "ai-toolkit": Consumer(
        "ai-toolkit", "ai-toolkit", frozenset({".jpg", ".jpeg", ".png", ".webp"}), False, True, (".txt",),
        frozenset({"_controls"}),
    ),
}


def export_caption_line(text: str) -> str:
    """A caption as the sidecar and kohya layouts write it: one line, since sd-scripts
    reads only the first; imports compare captions in this form to see what was edited."""
    return " ".join(text.strip().splitlines())


def dataset_name(image: CaptionedImage, root_labels: dict[int, str]) -> str:
    """The image's path inside a split folder: root-relative, so imports match it back."""
    name = converted_image_name(image.rel_path)
    label = root_labels.get(image.root_id)
    if label:
        name = f"{label}/{name}"
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts:
        raise ExportError(f"unsafe path in the library: {image.rel_path!r}")
    return name


class NameAllocator:
    """Unique names within one split folder, case-insensitively (exFAT, NTFS, APFS).

    With *by_stem*, names must also differ without their extension: a sidecar caption
    file is ``stem + .txt``, so ``a.jpg`` and ``a.png`` would share one.

    Files and folders never take each other's path: a library folder named ``x.txt/``
    beside ``x.jpg`` (whose caption file is ``x.txt``), or one named ``metadata.jsonl/``
    (a *reserved* name the writer needs), gets the next free ``~N`` name instead of
    aborting the export.  *companions* are the suffixes of files written beside each
    item (the sidecar caption).
    """

    def __init__(self, *, by_stem: bool, companions: tuple[str, ...] = (), reserved: tuple[str, ...] = ()) -> None:
        self.by_stem = by_stem
        self.companions = companions
        self.used: set[str] = set()
        #: Every file path claimed (items, their companions, reserved names), case-folded.
        self.files: set[str] = {name.casefold() for name in reserved}
        #: Folder path as wanted (under its allocated parent) → folder path allocated.
        self.folders: dict[str, str] = {}
        self.folder_keys: set[str] = set()

    def _key(self, name: str) -> str:
        path = PurePosixPath(name)
        return str(path.with_suffix("") if self.by_stem else path).casefold()

    def _companion_paths(self, name: str) -> list[str]:
        path = PurePosixPath(name)
        return [str(path.with_suffix(suffix)) for suffix in self.companions]

    def _free(self, name: str) -> bool:
        if self._key(name) in self.used:
            return False
        return all(p.casefold() not in self.files and p.casefold() not in self.folder_keys
                   for p in (name, *self._companion_paths(name)))

    def _folder(self, parent: str, part: str) -> str:
        wanted = f"{parent}/{part}" if parent else part
        allocated = self.folders.get(wanted.casefold())
        if allocated is None:
            candidate, number = wanted, 1
            while candidate.casefold() in self.files:  # a file already has this path
                number += 1
                candidate = f"{parent}/{part}~{number}" if parent else f"{part}~{number}"
            allocated = candidate
            self.folders[wanted.casefold()] = allocated
            self.folder_keys.add(allocated.casefold())
        return allocated

    def allocate(self, wanted: str) -> str:
        path = PurePosixPath(wanted)
        parent = ""
        for part in path.parts[:-1]:
            parent = self._folder(parent, part)
        name = path.name
        candidate = f"{parent}/{name}" if parent else name
        number = 1
        while not self._free(candidate):
            number += 1
            renamed = f"{path.stem}~{number}{path.suffix}"
            candidate = f"{parent}/{renamed}" if parent else renamed
        self.used.add(self._key(candidate))
        self.files.update(p.casefold() for p in (candidate, *self._companion_paths(candidate)))
        return candidate


@dataclass(frozen=True)
class Layout:
    """How a sidecar or kohya export names its images, and the trainer that checks them."""

    flatten: bool = False
    #: Formats any of these does not read are converted to *convert_to*.
    consumers: tuple[Consumer, ...] = ()
    convert_to: str = "png"
    #: The trainer named with ``--for``: each image it would still skip is one warning.
    consumer: Consumer | None = None
    variants: bool = False

    def name(self, wanted: str) -> str:
        if self.flatten:
            wanted = kohya_flat_name(wanted)
        return converted_image_name(wanted, consumers=self.consumers, convert_to=self.convert_to)


#: The formats that write images beside caption files: the ones --for and its options shape.
LAYOUT_FORMATS = ("sidecar", "kohya")


def export_layout(
    fmt: str, *, consumer: str | None = None, flatten: bool | None = None, convert_to: str | None = None,
    caption_extension: str = ".txt", variants: bool = False,
) -> Layout | None:
    """The layout these options give, with the defaults *consumer* sets; ExportError if they
    cannot work together.  None for formats without caption files."""
    if consumer is not None and consumer not in CONSUMERS:
        raise ExportError(f"unknown trainer {consumer!r}; choose one of {', '.join(CONSUMERS)}")
    if convert_to is not None and convert_to not in (*CONVERT_TO_CHOICES, "none"):
        raise ExportError(f"--convert-to must be one of {', '.join(CONVERT_TO_CHOICES)} or none, not {convert_to!r}")
    if fmt not in LAYOUT_FORMATS:
        if consumer is not None or flatten is not None or convert_to is not None or variants:
            raise ExportError(
                "--for, --flatten, --convert-to and --variants are options of the sidecar and kohya formats"
            )
        return None
    if fmt == "kohya" and (flatten is False or convert_to == "none"):
        raise ExportError("the kohya layout is always flat and in formats sd-scripts reads")
    if fmt == "kohya" and variants:
        raise ExportError("sd-scripts reads one caption per file: --variants is for the sidecar format (OneTrainer)")
    named = CONSUMERS.get(consumer) if consumer is not None else None
    if named is not None and caption_extension not in named.caption_extensions:
        raise ExportError(
            f"{named.label} reads captions from {' or '.join(named.caption_extensions)} files only; "
            "leave out --caption-extension"
        )
    consumers = [CONSUMERS["kohya"]] if fmt == "kohya" else []
    if convert_to != "none":
        if named is not None:
            consumers.append(named)
        elif convert_to is not None:
            consumers.extend(CONSUMERS.values())  # no trainer named: what every one of them reads
    if fmt == "kohya":
        flatten = True
    elif flatten is None:
        # Flat for every named trainer: even one that recurses leaves some folders out (ai-toolkit's _controls).
        flatten = named is not None
    return Layout(
        flatten=flatten, consumers=tuple(dict.fromkeys(consumers)),
        convert_to=convert_to if convert_to in CONVERT_TO_CHOICES else "png", consumer=named, variants=variants,
    )
