"""Training data from the library: verified captions, deduplicated, split like export.

A caption counts as training data when it is the image's *current* value of the trained
kind (:mod:`core.kinds`; ``caption`` unless told) and a person wrote or accepted it
(``source = human``); with ``include_imports`` imported values count too.  Keywords are
learnt as one comma-separated line (:func:`training_text`).  Images that are missing or unreadable are left out, and so are those whose
picture changed since they were captioned (counted in ``outdated``).  Byte-identical copies
(same fingerprint) are one example: the most recently captioned copy wins; near-duplicates
a person left out with "keep one" (:mod:`core.duplicates`) are not examples.  The
train/validation split is :func:`core.splits.assign_split` on the split key (the first
fingerprint, kept when a file is rewritten; a duplicate group's key for its members), so it is
the same split ``captiondesk export`` writes.  With enough photos a third, *test* split
(:func:`core.splits.assign_split3`) is taken out of the training side: neither training
nor the choice of the best epoch sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import text as sql_text

from core.errors import UserFacingError
from core.filenames import to_os
from core.kinds import BUILTIN_KINDS, CAPTION
from core.models import DuplicateMark
from core.queries import ImageFilter, current_join, filter_sql, outdated_phrase
from core.splits import (
    DEFAULT_SEED,
    DEFAULT_TEST_RATIO,
    MIN_TEST,
    TEST,
    TRAIN,
    VALIDATION,
    assign_split3,
    split_key_sql,
    validate_test_ratio,
    validate_val_ratio,
)

from .config import MIN_TRAIN, MIN_VALIDATION

if TYPE_CHECKING:
    from core.library import Library

__all__ = ["InsufficientDataError", "TrainingData", "TrainingExample", "collect_training_data", "training_text"]


class InsufficientDataError(UserFacingError, ValueError):
    """Too few verified captions to train (the message says how many are needed)."""


@dataclass(frozen=True)
class TrainingExample:
    image_id: int
    fingerprint: str
    path: str
    caption: str
    split: str
    #: What decides the split (the first fingerprint, kept when the file is rewritten).
    split_key: str = ""


@dataclass
class TrainingData:
    train: list[TrainingExample] = field(default_factory=list)
    validation: list[TrainingExample] = field(default_factory=list)
    #: Held out from training and from epoch selection (empty when too few photos fall there).
    test: list[TrainingExample] = field(default_factory=list)
    #: Examples dropped because another image had the same fingerprint.
    duplicates: int = 0
    #: Images whose caption would count but describes the file's earlier picture.
    outdated: int = 0
    #: Near-duplicates left out by "keep one" (``images.duplicate_mark``, core.duplicates).
    excluded: int = 0
    #: Examples whose picture no duplicate search has hashed: their copies may straddle the split.
    unchecked: int = 0
    val_ratio: float = 0.1
    seed: int = DEFAULT_SEED
    include_imports: bool = False
    test_ratio: float = DEFAULT_TEST_RATIO
    min_test: int = MIN_TEST
    #: How many images the test end held (also when too few to make a test split).
    test_candidates: int = 0
    #: The caption kind the examples are values of.
    kind: str = CAPTION

    def summary(self) -> str:
        dup = f", {self.duplicates} duplicate copies ignored" if self.duplicates else ""
        outdated = f", {outdated_phrase(self.outdated)}" if self.outdated else ""
        test = f", {len(self.test)} test" if self.test else ""
        what = "captions" if self.kind == CAPTION else f"{self.kind} values"
        excluded = f", {self.excluded} near-duplicates left out (keep one)" if self.excluded else ""
        return (f"{len(self.train)} training{test} and {len(self.validation)} validation {what}"
                f"{dup}{outdated}{excluded}")

    def duplicates_note(self) -> str | None:
        """Why the split may still hold near-duplicates on both sides (None: every photo was checked)."""
        if not self.unchecked:
            return None
        return (f"{self.unchecked} photos were never checked for near-duplicates (run captiondesk duplicates "
                "or File → Duplicates…): copies of one photo may sit on both sides of the split and flatter "
                "the scores")

    def test_note(self) -> str | None:
        """Why there is no test split, in plain words (None: there is one)."""
        if self.test:
            return None
        if self.test_ratio <= 0:
            return "no test split was kept (test ratio 0): the validation score also chose the best epoch"
        return (f"no test split: only {self.test_candidates} photos would be in it and at least {self.min_test} "
                "are needed, so the validation score, which also chose the best epoch, may be optimistic")

    def snapshot(self) -> dict[str, Any]:
        """What a model version stores about its data: ids + fingerprints per split, and per
        split the count and a SHA-256 of its sorted ``(split key, caption)`` pairs - equal
        hashes mean the same library contents, so the same seed must give the same version."""
        return {
            **({"kind": self.kind} if self.kind != CAPTION else {}),
            "val_ratio": self.val_ratio,
            "seed": self.seed,
            "include_imports": self.include_imports,
            "train": [[e.image_id, e.fingerprint] for e in self.train],
            "validation": [[e.image_id, e.fingerprint] for e in self.validation],
            "train_count": len(self.train),
            "train_sha256": _content_hash(self.train),
            "validation_count": len(self.validation),
            "validation_sha256": _content_hash(self.validation),
            **({"test": [[e.image_id, e.fingerprint] for e in self.test], "test_count": len(self.test),
                "test_ratio": self.test_ratio, "test_sha256": _content_hash(self.test)} if self.test else {}),
        }

    def require(self, min_train: int = MIN_TRAIN, min_validation: int = MIN_VALIDATION) -> None:
        """Raise :class:`InsufficientDataError` unless both splits are big enough."""
        if len(self.train) >= min_train and len(self.validation) >= min_validation:
            return
        values = "captions" if self.kind == CAPTION else f"{self.kind} values"
        kinds = f"verified or imported {values}" if self.include_imports else f"verified (human) {values}"
        total = len(self.train) + len(self.validation)
        raise InsufficientDataError(
            f"not enough training data: {total} usable {kinds} ({len(self.train)} train, "
            f"{len(self.validation)} validation at validation ratio {self.val_ratio:g}); at least "
            f"{min_train} for training and {min_validation} for validation are needed. Write or accept "
            "more captions in the window's review, or import checked ones with `import ... --verified` "
            "(or raise --val-ratio if only validation is short)."
        )


def _content_hash(examples: list[TrainingExample]) -> str:
    pairs = sorted((e.split_key or e.fingerprint, e.caption) for e in examples)
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


def training_text(kind: str, stored: str) -> str:
    """The text a model learns for a stored value of *kind*: keywords (one a line) as one
    ``a, b, c`` line, which :func:`core.kinds.parse_keywords` reads back; other kinds with
    their whitespace collapsed."""
    kind_spec = BUILTIN_KINDS.get(kind)
    if kind_spec is not None and kind_spec.value_type == "keywords":
        return ", ".join(line.strip() for line in stored.splitlines() if line.strip())
    return " ".join(stored.split())


def collect_training_data(
    library: Library,
    *,
    val_ratio: float = 0.1,
    seed: int = DEFAULT_SEED,
    include_imports: bool = False,
    test_ratio: float = DEFAULT_TEST_RATIO,
    min_test: int | None = None,
    kind: str = CAPTION,
) -> TrainingData:
    """Every usable (image, value of *kind*) pair of *library*, split into train, validation
    and (when at least *min_test* images fall in it) test."""
    ratio = validate_val_ratio(val_ratio)
    test_ratio = validate_test_ratio(ratio, test_ratio)
    if min_test is None:
        from core import splits

        min_test = splits.MIN_TEST  # read now, so one setting governs training and eval alike
    # The store's own states: "verified" is a readable image whose current caption a
    # person wrote or accepted; "imported" the same with an imported caption.
    wanted = ImageFilter(states=frozenset({"verified", "imported"} if include_imports else {"verified"}), kind=kind)
    params: dict[str, Any] = {}
    query = sql_text(
        "SELECT i.id, i.fingerprint, r.path, i.rel_path, c.text, c.id,"
        f" {split_key_sql('i')}, i.duplicate_mark, h.image_id IS NULL{current_join(kind)}"
        " JOIN library_roots r ON r.id = i.root_id"
        " LEFT JOIN image_hashes h ON h.image_id = i.id AND h.content_key = coalesce(i.content_key, i.fingerprint)"
        f" WHERE {filter_sql(wanted, params)} ORDER BY c.id DESC"
    )
    data = TrainingData(val_ratio=ratio, seed=seed, include_imports=include_imports, test_ratio=test_ratio,
                        min_test=min_test, kind=kind)
    seen: set[str] = set()
    with library.db.read() as session:
        rows = list(session.execute(query, params))
    examples = []
    for image_id, fingerprint, root, rel_path, text, _caption_id, split_key, mark, unhashed in rows:
        text = training_text(kind, text)
        if not text:
            continue
        if mark == DuplicateMark.EXCLUDED:
            data.excluded += 1
            continue
        if fingerprint in seen:
            data.duplicates += 1
            continue
        seen.add(fingerprint)
        data.unchecked += bool(unhashed)
        # The key survives rewrites of the file (migration 0003): a validation photo
        # stays in validation after its metadata is written.
        # Test is provisional: back to train below when too few images land there.
        split = assign_split3(split_key, ratio, seed, test_ratio=test_ratio)
        examples.append(
            TrainingExample(image_id, fingerprint, os.path.join(to_os(root), to_os(rel_path)), text, split, split_key)
        )
    # The caption of an earlier picture at the same path: training on it would teach the
    # model the wrong words for this one.  (A changed picture sets aside its caption only.)
    params = {}
    changed = filter_sql(ImageFilter(states=frozenset({"changed"})), params)
    sources = "('human', 'import')" if include_imports else "('human')"
    if kind == CAPTION:
        with library.db.read() as session:
            data.outdated = int(session.execute(sql_text(
                f"SELECT count(*){current_join()} JOIN captions o ON o.id = i.outdated_caption_id"
                f" WHERE {changed} AND o.source IN {sources}"
            ), params).scalar_one())
    examples.sort(key=lambda e: e.image_id)
    data.test_candidates = sum(e.split == TEST for e in examples)
    if data.test_candidates < min_test:
        examples = [replace(e, split=TRAIN) if e.split == TEST else e for e in examples]
    data.test = [e for e in examples if e.split == TEST]
    data.train = [e for e in examples if e.split == TRAIN]
    data.validation = [e for e in examples if e.split == VALIDATION]
    return data
