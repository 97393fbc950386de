"""What the sources and docs may not hold: lab notes, issue numbers, stale map entries, long files.

Product code says *why* in its comments; measurements live in docs/optimization-notes.md,
issue numbers in the tracker, and nothing points at a notes file outside the repository
(a reader of the code does not have it).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
PRODUCT = ("core", "desktop_app", "captiondesk")
#: Everything a reader of the repository gets: product code, tools and docs.
SHIPPED = (*PRODUCT, "benchmarks", "scripts", "packaging", "docs")

#: A reference to the notes file kept beside the repository (not in it).
OUTSIDE_NOTES = re.compile(r"ml-stack-notes|\.\./shared/", re.IGNORECASE)
#: "issue #15", "issue 6", "issues 5 and 6", "(#15)".
ISSUE_NUMBER = re.compile(r"\bissues?\s+#?\d+|\(#\d+\)", re.IGNORECASE)
#: How a measurement taken on the development machine reads when written into code.
LAB_NOTE = re.compile(r"measured here|measured on the|build box|on this vm\b", re.IGNORECASE)


def _files(folders: tuple[str, ...], suffixes: tuple[str, ...]) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*"))
            if p.suffix in suffixes and p.is_file()]


def _hits(pattern: re.Pattern[str], files: list[Path]) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in files
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]


def test_patterns_catch_what_they_are_meant_to() -> None:
    assert OUTSIDE_NOTES.search("measured in ../shared/ml-stack-notes.md")
    assert ISSUE_NUMBER.search("Retraining the captioner (issue #6).")
    assert ISSUE_NUMBER.search("Export (issue 5) and retraining")
    assert not ISSUE_NUMBER.search('BADGES.get(row.state, (row.state, "#555"))')
    assert LAB_NOTE.search("(measured on the 2-core build box)")


def test_nothing_refers_to_notes_outside_the_repository() -> None:
    files = _files(SHIPPED, (".py", ".md", ".toml", ".spec", ".txt")) + [ROOT / "README.md"]
    assert _hits(OUTSIDE_NOTES, files) == []


def test_product_code_holds_no_issue_numbers_or_lab_notes() -> None:
    files = _files(PRODUCT, (".py",))
    assert len(files) > 50
    assert _hits(ISSUE_NUMBER, files) == []
    assert _hits(LAB_NOTE, files) == []


#: ``docs/optimization-notes.md, "Heading"`` - a code comment's pointer to its measurement.
NOTES_POINTER = re.compile(r'docs/optimization-notes\.md,\s*(?:#:\s*|#\s*)?"([^"]+)"')


def test_pointers_to_the_optimization_notes_name_a_heading() -> None:
    headings = [line.lstrip("#").strip().lower()
                for line in (ROOT / "docs" / "optimization-notes.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("#")]
    pointers = {(path.relative_to(ROOT).as_posix(), name)
                for path in _files(PRODUCT, (".py",))
                for name in (" ".join(n.split()) for n in NOTES_POINTER.findall(path.read_text(encoding="utf-8")))}
    assert len(pointers) >= 10
    assert [p for p in pointers if not any(p[1].lower() in h for h in headings)] == []


#: A backticked repository path on the map: has a folder part or a file suffix, no spaces.
MAP_PATH = re.compile(r"`([\w.<>*/-]+/[\w.<>*-]*|[\w<>*-]+\.(?:py|md|sh|spec|toml|txt))`")


def test_every_path_on_the_architecture_map_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paths = set(MAP_PATH.findall(text))
    assert {"core/jobs.py", "desktop_app/controllers/", "core/captioning/families/<name>.py"} <= paths
    # A placeholder such as <name> stands for any file of that shape.
    missing = [p for p in sorted(paths) if not any(ROOT.glob(re.sub(r"<[^>]+>", "*", p).rstrip("/")))]
    assert missing == []
    assert "## Where a new feature goes" in text


#: The most lines a product file may have: past this a module holds more than one idea.
MAX_LINES = 600


def test_no_product_file_is_over_the_line_limit() -> None:
    files = _files(PRODUCT, (".py",))
    long_files = {path.relative_to(ROOT).as_posix(): n for path in files
                  if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long_files == {}
