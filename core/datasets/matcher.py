"""Finding the library image a source row means: location, path tail, unique name, content."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from sqlalchemy import select

from core.datasets.naming import library_name_candidates
from core.datasets.readers.base import CaptionGroup
from core.db import Database
from core.fingerprint import fingerprint_bytes, fingerprint_file
from core.inputs import name_key
from core.models import Image, LibraryRoot


class ImageMatcher:
    """Finds the library image a source row means (in the order :mod:`core.datasets.import_job` describes)."""

    def __init__(self, db: Database) -> None:
        self.by_root_path: dict[tuple[str, str], int] = {}
        self.by_rel_path: dict[str, list[int]] = {}
        self.by_name: dict[str, list[int]] = {}
        # The non-ASCII paths and names again, as name_key: the fallback after an exact match.
        self.by_rel_path_key: dict[str, list[int]] = {}
        self.by_name_key: dict[str, list[int]] = {}
        self.by_fingerprint: dict[str, list[int]] = {}
        with db.read() as session:
            self.roots = [(Path(path), path) for path in session.scalars(select(LibraryRoot.path))]
            rows = session.execute(
                select(Image.id, LibraryRoot.path, Image.rel_path, Image.fingerprint)
                .join(LibraryRoot, LibraryRoot.id == Image.root_id)
                .execution_options(yield_per=5000)
            )
            for image_id, root_path, rel_path, fingerprint in rows:
                self.by_root_path[(root_path, rel_path)] = image_id
                self.by_rel_path.setdefault(rel_path, []).append(image_id)
                file_name = PurePosixPath(rel_path).name
                self.by_name.setdefault(file_name, []).append(image_id)
                if not rel_path.isascii():
                    self.by_rel_path_key.setdefault(name_key(rel_path), []).append(image_id)
                    self.by_name_key.setdefault(name_key(file_name), []).append(image_id)
                self.by_fingerprint.setdefault(fingerprint, []).append(image_id)

    def _in_library(self, file: Path) -> int | None:
        try:
            resolved = file.resolve()
        except OSError:
            return None
        for root, root_text in self.roots:
            if resolved.is_relative_to(root):
                return self.by_root_path.get((root_text, resolved.relative_to(root).as_posix()))
        return None

    @staticmethod
    def _name_variants(name: str) -> list[PurePosixPath]:
        while name.startswith("./"):
            name = name[2:]
        return [PurePosixPath(candidate) for candidate in library_name_candidates(name)]

    @staticmethod
    def _ids(exact: dict[str, list[int]], by_key: dict[str, list[int]], name: str) -> list[int]:
        """The images *name* means: its exact spelling first, else any Unicode form of it."""
        ids = exact.get(name)
        if ids or name.isascii():
            return ids or []
        key = name_key(name)
        return list(dict.fromkeys([*exact.get(key, []), *by_key.get(key, [])]))

    def match(self, group: CaptionGroup) -> tuple[int | None, str]:
        """``(image id, how)``; id None with how ``"unmatched"`` or ``"ambiguous"``."""
        if group.image_file is not None:
            image_id = self._in_library(group.image_file)
            if image_id is not None:
                return image_id, "location"
        ambiguous = False
        for variant in self._name_variants(group.name):
            parts = variant.parts
            # The longest tail of the source's path that is a root-relative path.
            for start in range(len(parts) - 1):
                ids = self._ids(self.by_rel_path, self.by_rel_path_key, "/".join(parts[start:]))
                if ids:
                    if len(ids) == 1:
                        return ids[0], "path"
                    ambiguous = True
                    break
            if not ambiguous and parts:
                ids = self._ids(self.by_name, self.by_name_key, parts[-1])
                if len(ids) == 1:
                    return ids[0], "name"
                ambiguous = ambiguous or len(ids) > 1
        fingerprint = self._fingerprint(group)
        if fingerprint is not None:
            ids = self.by_fingerprint.get(fingerprint, [])
            if len(ids) == 1:
                return ids[0], "fingerprint"
            ambiguous = ambiguous or len(ids) > 1
        return None, "ambiguous" if ambiguous else "unmatched"

    @staticmethod
    def _fingerprint(group: CaptionGroup) -> str | None:
        try:
            if group.image_file is not None:
                return fingerprint_file(group.image_file)
            if group.image_bytes:
                return fingerprint_bytes(group.image_bytes)  # same algorithm, no file written
        except OSError:
            return None
        return None
