"""Where the repository is, for tests that run scripts or read its files."""

from pathlib import Path

#: The repository root (tests/support/paths.py is two levels below it).
REPO_ROOT = Path(__file__).resolve().parents[2]
