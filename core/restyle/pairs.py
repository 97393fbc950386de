"""The library's restyle training pairs: a model's caption → the person's verified caption.

A pair is an image whose current caption a person wrote or accepted *from a model's
caption*: following the person's row back through its ``parent_id`` chain (their edits,
accepts and restores) to the nearest model caption gives the description, the person's
words are the styled target.  When that model caption was itself restyled, the description
is the first stage's text its provenance records, so a restyler always learns from what a
captioner writes.  A caption a person wrote from scratch (no model caption behind it) is
no pair.  Pairs are split by the image's split key with :func:`core.splits.assign_split3`,
the split export and captioner training use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from core.queries import CURRENT_JOIN
from core.splits import DEFAULT_SEED, DEFAULT_TEST_RATIO, MIN_TEST, TEST, TRAIN, VALIDATION, assign_split3

from .spec import RESTYLE_KEY

if TYPE_CHECKING:
    from core.library import Library


@dataclass(frozen=True)
class RestylePair:
    image_id: int
    split_key: str
    source: str
    target: str
    split: str


@dataclass
class RestylePairs:
    train: list[RestylePair] = field(default_factory=list)
    validation: list[RestylePair] = field(default_factory=list)
    test: list[RestylePair] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.train) + len(self.validation) + len(self.test)

    def summary(self) -> str:
        test = f", {len(self.test)} test" if self.test else ""
        return f"{len(self.train)} training{test} and {len(self.validation)} validation caption pairs"

    def snapshot(self) -> dict[str, Any]:
        return {"train": [p.image_id for p in self.train], "validation": [p.image_id for p in self.validation],
                "test": [p.image_id for p in self.test], "train_count": len(self.train),
                "validation_count": len(self.validation), "test_count": len(self.test)}


def _pairs(library: Library) -> list[tuple[int, str, str, str]]:
    """``(image_id, split_key, description, verified text)`` of every pair, by image id."""
    with library.db.read() as session:
        cursor = session.connection().connection.dbapi_connection.cursor()
        try:
            cursor.execute("SELECT i.id, coalesce(i.split_key, i.fingerprint), c.id"
                           f"{CURRENT_JOIN} WHERE c.source = 'human' AND i.state != 'missing' ORDER BY i.id")
            current = cursor.fetchall()
            # Every caption row of the images in question, to walk the parent chains in memory.
            cursor.execute("SELECT c.id, c.parent_id, c.source, c.text, c.provenance FROM captions c "
                           f"JOIN ({'SELECT i.id' + CURRENT_JOIN} WHERE c.source = 'human') h ON h.id = c.image_id")
            rows = {row[0]: row[1:] for row in cursor.fetchall()}
        finally:
            cursor.close()
    found = []
    for image_id, split_key, caption_id in current:
        target = " ".join(rows[caption_id][2].split())
        parent, seen = rows[caption_id][0], {caption_id}
        while parent is not None and parent in rows and parent not in seen:
            seen.add(parent)
            parent_id, source, text, raw = rows[parent]
            if source == "model":
                settings = json.loads(raw) if raw else {}
                record = settings.get(RESTYLE_KEY) if isinstance(settings, dict) else None
                description = record.get("source_text") if isinstance(record, dict) else None
                description = " ".join((description or text).split())
                if description and target:
                    found.append((image_id, split_key, description, target))
                break
            parent = parent_id
    return found


def count_restyle_pairs(library: Library) -> int:
    """How many (model caption → verified caption) pairs the library holds (the Train dialog says)."""
    return len(_pairs(library))


def collect_restyle_pairs(library: Library, *, val_ratio: float = 0.1, seed: int = DEFAULT_SEED,
                          test_ratio: float = DEFAULT_TEST_RATIO, min_test: int = MIN_TEST) -> RestylePairs:
    """The pairs, split into train, validation and (when at least *min_test* fall there) test."""
    pairs = [RestylePair(i, key, source, target, assign_split3(key, val_ratio, seed, test_ratio=test_ratio))
             for i, key, source, target in _pairs(library)]
    if sum(p.split == TEST for p in pairs) < min_test:
        pairs = [replace(p, split=TRAIN) if p.split == TEST else p for p in pairs]
    return RestylePairs([p for p in pairs if p.split == TRAIN], [p for p in pairs if p.split == VALIDATION],
                        [p for p in pairs if p.split == TEST])
