"""What an import did: its counters, the first unmatched names and the summary line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from core.datasets.readers.base import readable_name
from core.jobs import JobStats

#: How many unmatched names the stats keep for the report.
UNMATCHED_EXAMPLES = 10


@dataclass
class ImportStats(JobStats):
    """What an import did; ``problems`` lists rows and files that could not be used."""

    TITLE: ClassVar[str] = "Import"

    format: str
    #: The captions were written by people (stored as verified).
    verified: bool = False
    #: Imported captions replace a person's current caption (the user asked).
    replace: bool = False
    #: Nothing was written: the counts say what the import would do.
    dry_run: bool = False
    #: Images the source named (caption groups read).
    rows: int = 0
    #: Caption rows added to the library.
    imported: int = 0
    #: Added captions that became current in place of no caption, or a model's or an import.
    current: int = 0
    #: Added captions that became current in place of a person's caption (with *replace*).
    replaced: int = 0
    #: Added captions left beside a current human caption (never overwritten).
    kept_human: int = 0
    #: Captions the library already had (same text from the same origin, or current).
    unchanged: int = 0
    unmatched: int = 0
    ambiguous: int = 0
    errors: int = 0
    unmatched_names: list[str] = field(default_factory=list)
    #: Images whose current caption this import set (``current`` counts each once), and
    #: (image, kind) for the other kinds.
    made_current: set[int | tuple[int, str]] = field(default_factory=set, repr=False)

    def counts(self) -> dict[str, int]:
        # Every problem is a row or file that could not be used: a failed item, whether
        # the reader counted it as an error or only reported it and skipped it.
        return {**super().counts(), "errors": max(self.errors, len(self.problems))}

    def note_unmatched(self, name: str, *, ambiguous: bool = False) -> None:
        if ambiguous:
            self.ambiguous += 1
        else:
            self.unmatched += 1
        if len(self.unmatched_names) < UNMATCHED_EXAMPLES:
            self.unmatched_names.append(readable_name(name) + (" (ambiguous)" if ambiguous else ""))

    def summary(self) -> str:
        kind = "verified captions" if self.verified else "captions"
        replaced = f"{self.replaced} replacing a person's caption, " if self.replace else ""
        if self.dry_run:
            head = f"{self.TITLE} check {'cancelled' if self.cancelled else 'finished'} (nothing written)"
        else:
            head = f"{self.TITLE} {'cancelled' if self.cancelled else 'finished'}"
        return (
            f"{head}: {self.rows} images named, {self.imported} {kind} added "
            f"({self.current} now current, {replaced}{self.kept_human} kept beside a person's caption), "
            f"{self.unchanged} already there, {self.unmatched} unmatched, {self.ambiguous} ambiguous"
        )
