"""Schema, migrations and the caption provenance rules."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from core import captions
from core.library import Library
from core.migrate import HEAD_REVISION, LibraryOpenError, NewerLibraryError, head_revision, upgrade
from core.models import Base, Caption, CaptionSource, Image


def _add_image(library: Library, rel_path: str = "a.jpg", fingerprint: str = "f" * 32) -> int:
    with library.db.write() as session:
        root_id = session.execute(
            text("INSERT INTO library_roots(path, added_at) VALUES (:p, '2026-01-01') RETURNING id"),
            {"p": f"/photos/{rel_path}"},
        ).scalar_one()
        image = Image(root_id=root_id, rel_path=rel_path, size=1, mtime_ns=1, fingerprint=fingerprint)
        session.add(image)
        session.flush()
        return image.id


def test_migrations_match_the_orm_models(library: Library) -> None:
    fts = lambda obj, name, type_, *_: not (type_ == "table" and name.startswith("captions_fts"))  # noqa: E731
    with library.db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": fts})
        assert compare_metadata(context, Base.metadata) == []


def test_pragmas(library: Library) -> None:
    with library.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def _fill_revision_0001(path: Path) -> None:
    """Data written by the first schema revision, straight through SQL."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        INSERT INTO library_roots(id, path, added_at) VALUES (1, '/photos', '2026-01-01');
        INSERT INTO images(id, root_id, rel_path, size, mtime_ns, fingerprint, state, first_seen_at, last_seen_at)
            VALUES (1, 1, 'a.jpg', 10, 5, 'fa', 'ok', '2026-01-01', '2026-01-01'),
                   (2, 1, 'b.jpg', 11, 6, 'fb', 'missing', '2026-01-01', '2026-01-01');
        INSERT INTO model_versions(id, name, base_model, is_active, created_at)
            VALUES (1, 'mine', 'Salesforce/blip-image-captioning-base', 1, '2026-01-01');
        INSERT INTO captions(id, image_id, text, source, is_current, model_name, model_version_id, settings, score, created_at)
            VALUES (1, 1, 'a dog on a beach', 'model', 0, 'blip', 1, '{"num_beams": 3}', -0.5, '2026-01-01'),
                   (2, 1, 'my dog Rex on Brighton beach', 'human', 1, NULL, NULL, NULL, NULL, '2026-01-02'),
                   (3, 2, 'a café terrace', 'model', 1, 'blip', 1, NULL, -1.25, '2026-01-01');
        INSERT INTO jobs(id, kind, params, state, done, total, created_at, updated_at)
            VALUES (1, 'caption', '{"model": "blip"}', 'running', 5, 10, '2026-01-01', '2026-01-01');
        """
    )
    conn.commit()
    conn.close()


def _dump(path: Path, like: dict[str, list[dict]] | None = None) -> dict[str, list[dict]]:
    """Every row of the main tables as dicts; with *like*, only the columns *like* has
    (so a dump after a migration that added columns compares with one from before)."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        dump = {
            table: [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
            for table in ("library_roots", "images", "captions", "model_versions")
        }
    finally:
        conn.close()
    if like is not None:
        for table, rows in dump.items():
            columns = set(like[table][0]) if like[table] else set()
            # 0007 renamed captions.settings to provenance (the same JSON).
            rows = [{_RENAMED.get(k, k) if _RENAMED.get(k) in columns else k: v for k, v in row.items()}
                    for row in rows]
            dump[table] = [{k: v for k, v in row.items() if k in columns} for row in rows]
    return dump


_RENAMED = {"provenance": "settings"}


def test_upgrade_from_first_revision_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    upgrade(path, target="0001")
    _fill_revision_0001(path)
    before = _dump(path)

    library = Library(path)  # opening migrates
    try:
        assert library.migration.from_revision == "0001"
        assert library.migration.to_revision == head_revision()
        assert _dump(path, like=before) == before  # the images rebuild did not cascade into captions
        assert library.migration.backup is not None and _dump(library.migration.backup) == before
        with library.db.read() as session:  # 0003: existing rows have no split key yet (= fingerprint)
            assert session.execute(text("SELECT count(*) FROM images WHERE split_key IS NOT NULL")).scalar() == 0
            # 0006: no run holds a claim (the old running job's process is gone anyway).
            assert session.execute(text("SELECT count(*) FROM caption_claims")).scalar() == 0
        assert library.db.integrity_check() == ["ok"]
        with library.db.read() as session:
            # Existing captions were indexed for full-text search, accents folded.
            hits = session.execute(
                text("SELECT rowid FROM captions_fts WHERE captions_fts MATCH 'cafe'")
            ).scalars().all()
            assert hits == [3]
        # The running job of the dead process is now resumable.
        assert [job.state for job in library.jobs()] == ["interrupted"]
    finally:
        library.close()


def test_upgrade_to_content_keys_uses_what_the_library_knows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    upgrade(path, target="0003")
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        INSERT INTO library_roots(id, path, added_at) VALUES (1, '/photos', '2026-01-01');
        INSERT INTO images(id, root_id, rel_path, size, mtime_ns, fingerprint, split_key, format, state,
                           first_seen_at, last_seen_at)
            VALUES (1, 1, 'new.jpg', 10, 5, 'fa', 'img1:aa', 'JPEG', 'ok', '2026-01-01', '2026-01-01'),
                   (2, 1, 'scan.tif', 11, 6, 'fb', NULL, 'TIFF', 'ok', '2026-01-01', '2026-01-01'),
                   (3, 1, 'legacy.jpg', 12, 7, 'fc', NULL, 'JPEG', 'ok', '2026-01-01', '2026-01-01'),
                   (4, 1, 'bad.png', 13, 8, 'unreadable:13:8', NULL, NULL, 'error', '2026-01-01', '2026-01-01');
        INSERT INTO captions(id, image_id, text, source, is_current, created_at)
            VALUES (1, 2, 'a scanned letter', 'human', 1, '2026-01-02');
        """
    )
    conn.commit()
    conn.close()
    library = Library(path)
    try:
        assert library.migration.from_revision == "0003"
        with library.db.write() as session:
            keys = dict(session.execute(text("SELECT id, content_key FROM images ORDER BY id")).all())
            # The image-data key where known, the unchanged fingerprint where the format has
            # none; a legacy JPEG cannot be compared yet.
            assert keys == {1: "img1:aa", 2: "fb", 3: None, 4: None}
            # The library's own metadata write (new fingerprint only) keeps the TIFF the same picture.
            session.execute(text("UPDATE images SET fingerprint = 'fb2' WHERE id = 2"))
            assert session.execute(text("SELECT content_key FROM images WHERE id = 2")).scalar() == "fb2"
            # A caption made current ends "changed since captioned", whoever writes it.
            session.execute(text("UPDATE captions SET is_current = 0 WHERE id = 1"))
            session.execute(text("UPDATE images SET outdated_caption_id = 1 WHERE id = 2"))
            captions.set_human_caption(session, 2, "a scanned letter, page 2")
            assert session.execute(text("SELECT outdated_caption_id FROM images WHERE id = 2")).scalar() is None
        assert library.db.integrity_check() == ["ok"]
    finally:
        library.close()


def test_head_revision_constant_matches_the_migrations(tmp_path: Path) -> None:
    """HEAD_REVISION must name Alembic's head (update it with each new migration)."""
    assert HEAD_REVISION == head_revision()
    Library(tmp_path / "lib.db").close()
    # Re-opening an up-to-date library is a plain sqlite3 check: Alembic is not imported.
    script = ("import sys; from core.library import Library; "
              f"Library({str(tmp_path / 'lib.db')!r}).close(); print('alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_refuses_a_library_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Library(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.commit()
    conn.close()
    with pytest.raises(NewerLibraryError, match="newer version of CaptionDesk"):
        Library(path)


def test_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    with pytest.raises(LibraryOpenError, match="not a CaptionDesk library"):
        Library(other)
    text_file = tmp_path / "text.db"
    text_file.write_text("hello " * 100)
    with pytest.raises(LibraryOpenError, match="not a CaptionDesk library"):
        Library(text_file)


def test_reopening_does_not_migrate_or_back_up_again(tmp_path: Path) -> None:
    Library(tmp_path / "lib.db").close()
    again = Library(tmp_path / "lib.db")
    again.close()
    assert again.migration.backup is None
    assert list(tmp_path.glob("*.backup-*")) == []


def test_model_caption_never_replaces_human(library: Library) -> None:
    image_id = _add_image(library)
    with library.db.write() as session:
        first = captions.add_model_caption(session, image_id, "a dog", model_name="blip", score=-0.4)
        assert first.is_current
        human = captions.set_human_caption(session, image_id, "Rex asleep on the sofa")
        assert human.parent_id == first.id
        later = captions.add_model_caption(session, image_id, "a cat", model_name="blip", score=-0.1)
        assert not later.is_current
        imported = captions.add_import_caption(session, image_id, "from a sidecar", origin="a.txt")
        assert not imported.is_current
    with library.db.read() as session:
        current = captions.current_caption(session, image_id)
        assert current is not None and current.text == "Rex asleep on the sofa"
        history = [(c.text, c.source) for c in captions.caption_history(session, image_id)]
        assert history == [
            ("a dog", "model"),
            ("Rex asleep on the sofa", "human"),
            ("a cat", "model"),
            ("from a sidecar", "import"),
        ]


def test_database_trigger_backs_up_the_rule(library: Library) -> None:
    image_id = _add_image(library)
    with library.db.write() as session:
        captions.set_human_caption(session, image_id, "by hand")
    insert_model_row = text(
        "INSERT INTO captions(image_id, text, source, is_current, created_at) "
        "VALUES (:i, 'x', 'model', :current, '2026-01-01')"
    )
    # A buggy caller skipping the API, inserting a current model row...
    with pytest.raises(IntegrityError, match="human caption is current"):
        with library.db.write() as session:
            session.execute(insert_model_row, {"i": image_id, "current": 1})
    # ...or promoting an old model row over the human one.
    with library.db.write() as session:
        session.execute(insert_model_row, {"i": image_id, "current": 0})
    with pytest.raises(IntegrityError, match="human caption is current"):
        with library.db.write() as session:
            session.execute(text("UPDATE captions SET is_current = 1 WHERE source = 'model'"))
    with library.db.read() as session:
        assert captions.current_caption(session, image_id).text == "by hand"  # rolled back


def test_one_current_caption_per_image(library: Library) -> None:
    image_id = _add_image(library)
    with library.db.write() as session:
        captions.add_model_caption(session, image_id, "one", model_name="m")
    with pytest.raises(IntegrityError):
        with library.db.write() as session:
            session.add(Caption(image_id=image_id, text="two", source="model", is_current=True))


def test_accept_and_revert_write_human_rows(library: Library) -> None:
    image_id = _add_image(library)
    with library.db.write() as session:
        model = captions.add_model_caption(session, image_id, "a red car", model_name="m", score=-2.0)
        accepted = captions.accept_caption(session, image_id)
        assert (accepted.source, accepted.text, accepted.parent_id) == ("human", "a red car", model.id)
        captions.set_human_caption(session, image_id, "a red Fiat 500")
        reverted = captions.revert_to(session, model.id)
        assert reverted.text == "a red car" and reverted.source == CaptionSource.HUMAN
    with library.db.read() as session:
        assert session.scalar(select(Caption.text).where(Caption.is_current.is_(True))) == "a red car"


def test_undo_repointing_never_sets_aside_a_persons_caption(library: Library) -> None:
    image_id = _add_image(library)
    with library.db.write() as session:
        model = captions.add_model_caption(session, image_id, "a dog", model_name="blip", score=-0.4)
        edit = captions.set_human_caption(session, image_id, "Rex asleep")
    # Undoing the person's own edit brings the model caption itself back (no new row)...
    with library.db.write() as session:
        captions.repoint_current(session, image_id, expected=edit.id, target=model.id)
    with library.db.read() as session:
        assert captions.current_caption(session, image_id).id == model.id
    # ...and redo makes the person's caption current again.
    with library.db.write() as session:
        captions.repoint_current(session, image_id, expected=model.id, target=edit.id)
    # A person's caption written since the step (here: a later edit) is never set aside,
    # whether by a stale undo back to the model caption or to no caption at all.
    with library.db.write() as session:
        later = captions.set_human_caption(session, image_id, "Rex asleep on the sofa")
    for expected, target in ((edit.id, model.id), (model.id, None), (None, model.id)):
        with pytest.raises(captions.StaleCaptionError):
            with library.db.write() as session:
                captions.repoint_current(session, image_id, expected=expected, target=target)
        with library.db.read() as session:
            assert captions.current_caption(session, image_id).id == later.id
    # A caption of another image is never made current here.
    other_id = _add_image(library, "b.jpg", "e" * 32)
    with library.db.write() as session:
        other = captions.add_model_caption(session, other_id, "a cat", model_name="blip")
    with pytest.raises(captions.StaleCaptionError):
        with library.db.write() as session:
            captions.repoint_current(session, image_id, expected=later.id, target=other.id)
    with library.db.read() as session:
        assert captions.current_caption(session, image_id).id == later.id
        assert session.scalar(select(func.count()).select_from(Caption)) == 4  # no rows written


def test_full_text_search_follows_edits(library: Library) -> None:
    image_id = _add_image(library)
    with library.db.write() as session:
        caption = captions.add_model_caption(session, image_id, "a lighthouse at dusk", model_name="m")
        caption.text = "a windmill at dawn"
    with library.db.read() as session:
        match = lambda q: session.execute(  # noqa: E731
            text("SELECT rowid FROM captions_fts WHERE captions_fts MATCH :q"), {"q": q}
        ).scalars().all()
        assert match("windmill") == [caption.id]
        assert match("lighthouse") == []


def test_deleting_a_root_removes_its_images_and_captions(library: Library, photo_dir: Path) -> None:
    root = library.add_root(photo_dir)
    with library.db.write() as session:
        image = Image(root_id=root.id, rel_path="x.jpg", size=1, mtime_ns=1, fingerprint="ff")
        session.add(image)
        session.flush()
        captions.add_model_caption(session, image.id, "text", model_name="m")
    library.remove_root(root.id)
    with library.db.read() as session:
        assert session.scalar(select(Caption.id)) is None
        assert session.scalar(select(Image.id)) is None


def test_upgrade_from_0006_gives_every_caption_its_kind(tmp_path: Path) -> None:
    """A library as the release before caption kinds wrote it (revision 0006) upgrades in place."""
    path = tmp_path / "old.db"
    upgrade(path, target="0006")
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        INSERT INTO library_roots(id, path, added_at) VALUES (1, '/photos', '2026-01-01');
        INSERT INTO images(id, root_id, rel_path, size, mtime_ns, fingerprint, state, first_seen_at, last_seen_at)
            VALUES (1, 1, 'a.jpg', 10, 5, 'fa', 'ok', '2026-01-01', '2026-01-01'),
                   (2, 1, 'b.jpg', 11, 6, 'fb', 'ok', '2026-01-01', '2026-01-01');
        INSERT INTO captions(id, image_id, text, source, is_current, model_name, settings, score, created_at)
            VALUES (1, 1, 'a dog on a beach', 'model', 0, 'blip', '{"num_beams": 3, "device": "cpu"}', -0.5,
                    '2026-01-01'),
                   (2, 1, 'my dog Rex', 'human', 1, NULL, NULL, NULL, '2026-01-02'),
                   (3, 2, 'a harbour', 'model', 0, 'blip',
                    '{"generation": {"num_beams": 1}, "preset": "short", "bulk_replace": {"find": "a", "replace": "b"}}',
                    -1.0, '2026-01-01');
        UPDATE images SET outdated_caption_id = 3 WHERE id = 2;
        """
    )
    conn.commit()
    conn.close()
    before = _dump(path)

    library = Library(path)
    try:
        assert library.migration.from_revision == "0006" and library.migration.backup is not None
        assert _dump(path, like=before) == before
        with library.db.write() as session:
            assert set(session.scalars(select(Caption.kind))) == {"caption"}
            old, human, bulk = session.scalars(select(Caption).order_by(Caption.id))
            # The old flat record reads as a typed one.
            assert old.provenance.generation == {"num_beams": 3} and old.provenance.extra == {"device": "cpu"}
            assert bulk.provenance.preset == "short" and bulk.provenance.bulk_replace.find == "a"
            assert human.provenance is None
            # The person's caption is still current and still protected, for its kind only.
            assert not captions.add_model_caption(session, 1, "a dog", model_name="m").is_current
            alt = captions.add_model_caption(session, 1, "A dog on sand.", model_name="m", kind="alt_text")
            assert alt.is_current and captions.current_caption(session, 1).text == "my dog Rex"
            # Another kind's value does not end "changed since captioned"; a caption does.
            captions.add_model_caption(session, 2, "harbour, boats", model_name="m", kind="keywords")
            assert session.scalar(text("SELECT outdated_caption_id FROM images WHERE id = 2")) == 3
            captions.add_model_caption(session, 2, "boats in a harbour", model_name="m")
            assert session.scalar(text("SELECT outdated_caption_id FROM images WHERE id = 2")) is None
        with library.db.read() as session:  # full-text search covers every kind
            hits = session.execute(text("SELECT rowid FROM captions_fts WHERE captions_fts MATCH 'sand'")).all()
            assert hits == [(alt.id,)]
        assert library.db.integrity_check() == ["ok"]
    finally:
        library.close()
