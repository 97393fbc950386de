"""Nothing deletes what it did not create; a training run's saved state is data, not code.

* Deleting a version removes its own folder only; a version others are built on is refused
  (naming them) unless ``--with-dependants``.
* Temporary and partial folders carry CaptionDesk's owner marker (core/ownership.py) and
  only marked ones whose process is gone are cleaned up: a person's ``OUT.partial`` or
  ``.OUT.old-x`` survives ``models export`` and a dataset export.
* ``models export`` writes into a marked hidden folder and renames it: killed with SIGKILL,
  its rerun removes the leftover and gives a loadable model.
* The run folder's state is safetensors + JSON: a planted pickle never runs, a damaged
  state is one line and exit 2, ``train --restart`` starts over; a run that fails in
  setup leaves no run folder.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from captiondesk.cli import main
from core import ownership
from core.captions import set_human_caption
from core.datasets.export_job import export_dataset
from core.library import Library
from core.models import Image, ModelVersion
from core.training import versions
from tests.support.imagegen import write_jpeg
from tests.support.library_helpers import make_captioned_library
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
#: The quickest training run that still saves a version (tiny BLIP, 16 photos).
QUICK = ["--method", "full", "--epochs", "1", "--batch-size", "8", "--val-ratio", "0.3", "--device", "cpu",
         "--lr", "1e-3"]


def _full_version(library: Library, name: str, model_dir: Path) -> Path:
    """Register a 'full' version whose folder is a copy of *model_dir* in the models folder."""
    target = versions.models_dir(library) / name
    shutil.copytree(model_dir, target)
    with library.db.write() as session:
        session.add(ModelVersion(name=name, base_model=str(target), adapter_path=None, family="blip",
                                 method="full", config={"trained_from": str(model_dir)}))
    return target


def _lora_on(library: Library, name: str, base: Path) -> ModelVersion:
    """Save a LoRA adapter of the model in *base* as version *name*, as train does."""
    from peft import LoraConfig, get_peft_model

    from core.captioning import load_captioner

    captioner = load_captioner(str(base), device="cpu", optimize="none")
    try:
        model = get_peft_model(captioner.model, LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
        return versions.save_version(library, name=name, base_model=str(base), model=model, captioner=captioner,
                                     method="lora", family="blip", config={}, metrics={}, data_snapshot={})
    finally:
        captioner.close()


def _loads(folder: str | Path, adapter: str | None = None) -> None:
    from core.captioning import load_captioner

    load_captioner(str(folder), adapter=adapter, device="cpu", optimize="none").close()


def _one_error_line(err: str) -> str:
    """The one error line of a command's stderr (besides the model loader's progress bar)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Loading weights")]
    assert len(lines) == 1 and lines[0].startswith("captiondesk: error: ") and "Traceback" not in err, err
    return lines[0]


# -- deleting versions -------------------------------------------------------------------------


def test_deleting_a_lora_leaves_its_full_parent_and_a_parent_with_dependants_is_refused(
        library: Library, tiny_blip_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = _full_version(library, "parent", tiny_blip_dir)
    for child in ("child-a", "child-b"):
        _lora_on(library, child, parent)
    db = ["--library", str(library.path)]
    capsys.readouterr()

    assert main([*db, "models", "delete", "parent"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "'child-a'" in line and "'child-b'" in line and "--with-dependants" in line
    assert parent.is_dir() and versions.get_version(library, "parent") is not None

    assert main([*db, "models", "delete", "child-a"]) == 0
    assert not (versions.models_dir(library) / "child-a").exists()
    assert parent.is_dir()
    _loads(versions.get_version(library, "parent").base_model)  # the parent still loads
    child_b = versions.get_version(library, "child-b")
    _loads(child_b.base_model, child_b.adapter_path)

    with pytest.raises(versions.VersionInUseError) as refused:
        versions.delete_version(library, "parent")
    assert refused.value.dependants == ["child-b"]
    capsys.readouterr()
    assert main([*db, "models", "delete", "parent", "--with-dependants"]) == 0
    assert capsys.readouterr().out.strip() == "Deleted child-b, parent"
    assert versions.list_versions(library) == [] and not parent.exists()
    assert sorted(p.name for p in versions.models_dir(library).iterdir()) == []


def test_deleting_the_active_version_says_which_model_captions_now(library: Library, tiny_blip_dir: Path,
                                                                   capsys) -> None:
    _full_version(library, "full", tiny_blip_dir)
    _full_version(library, "other", tiny_blip_dir)
    versions.set_active(library, "full")
    assert main(["--library", str(library.path), "models", "delete", "other"]) == 0
    assert "active" not in capsys.readouterr().out
    assert main(["--library", str(library.path), "models", "delete", "full"]) == 0
    out = capsys.readouterr().out
    assert "It was the active model; captioning now uses Salesforce/blip-image-captioning-base" in out


def test_the_versions_window_shows_the_refusal(qtbot, library: Library, tiny_blip_dir: Path) -> None:
    from desktop_app.versions_window import VersionsWindow

    parent = _full_version(library, "parent", tiny_blip_dir)
    _lora_on(library, "child", parent)
    window = VersionsWindow(library)
    qtbot.addWidget(window)
    window.select("parent")
    assert not window.delete_selected(confirm=False)
    assert "'child'" in window.footer.status.full_text()
    assert parent.is_dir() and {v.name for v in versions.list_versions(library)} == {"parent", "child"}


# -- cleanup of owned folders only ------------------------------------------------------------


def _people_folders(parent: Path, out_name: str) -> list[Path]:
    """Folders a person made beside OUT with the names CaptionDesk uses, old enough to look stale."""
    folders = [parent / f"{out_name}.partial", parent / f".{out_name}.old-x", parent / f".{out_name}.partial-mine"]
    long_ago = time.time() - 10 * ownership.STALE_SECONDS
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "mine.txt").write_text("a person's file", encoding="utf-8")
        for path in (folder / "mine.txt", folder):
            os.utime(path, (long_ago, long_ago))
    return folders


def test_a_persons_partial_and_old_folders_survive_both_exports(
        library: Library, photo_dir: Path, tiny_blip_dir: Path, tmp_path: Path) -> None:
    _full_version(library, "full", tiny_blip_dir)
    make_captioned_library(library, photo_dir, count=3)
    exports = tmp_path / "exports"
    mine = _people_folders(exports, "model") + _people_folders(exports, "data")

    versions.export_merged(library, "full", exports / "model")
    _loads(exports / "model")
    export_dataset(library, "csv", exports / "data")
    export_dataset(library, "csv", exports / "data", overwrite=True)  # the swap's old data goes, not theirs

    for folder in mine:
        assert (folder / "mine.txt").read_text(encoding="utf-8") == "a person's file", folder
    assert sorted(p.name for p in exports.iterdir()) == sorted(["model", "data", *(f.name for f in mine)])
    assert not (exports / "model" / ownership.MARKER_NAME).exists()
    assert not (exports / "data" / ownership.MARKER_NAME).exists()


def test_a_killed_models_export_is_finished_by_its_rerun(library: Library, tiny_blip_dir: Path,
                                                         tmp_path: Path) -> None:
    _full_version(library, "full", tiny_blip_dir)
    out = tmp_path / "exported"
    script = textwrap.dedent(f"""
        import os, shutil, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        real_copy = shutil.copy2
        def copy_then_die(*args, **kwargs):
            real_copy(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)  # mid-copy: no cleanup runs
        shutil.copy2 = copy_then_die
        from captiondesk.cli import main
        main(["--library", {str(library.path)!r}, "models", "export", "full", {str(out)!r}])
        """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".exported.partial-")]
    assert ownership.owner(partial) is not None and len(list(partial.iterdir())) == 2  # marker + one file

    assert main(["--library", str(library.path), "models", "export", "full", str(out)]) == 0
    _loads(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_blip_dir.iterdir())
    assert [p.name for p in tmp_path.iterdir() if "exported" in p.name] == ["exported"]


def test_exports_refuse_the_librarys_own_folders(library: Library, photo_dir: Path, tiny_blip_dir: Path,
                                                  capsys) -> None:
    # A version's delete removes its folder, the thumbnail cache is the library's: an export there would go too.
    own = _full_version(library, "full", tiny_blip_dir)
    make_captioned_library(library, photo_dir, count=2)  # something to export
    models = versions.models_dir(library)
    lib = ["--library", str(library.path)]
    for argv in (["models", "export", "full", str(models / "exported")], ["models", "export", "full", str(own / "sub")],
                 ["models", "export", "full", str(models)], ["models", "export", "full", str(library.cache_dir / "m")],
                 ["export", "csv", str(own / "data")], ["export", "csv", str(library.cache_dir / "data")]):
        code = main([*lib, *argv])
        err = capsys.readouterr().err
        assert code == 2 and "inside the library's own folder" in err and len(err.splitlines()) == 1, (argv, err)
    assert sorted(p.name for p in models.iterdir()) == ["full"]
    assert sorted(p.name for p in own.iterdir()) == sorted(p.name for p in tiny_blip_dir.iterdir())
    assert not library.cache_dir.exists() or not any(library.cache_dir.iterdir())


# -- training state ------------------------------------------------------------------------------


def _training_library(root: Path) -> Path:
    photos = root / "photos"
    words = ["a red circle", "a blue square", "a green triangle", "a red square"]
    for i in range(16):
        write_jpeg(photos / f"{i:03d}.jpg", color=(40 + 10 * i, 200 - 8 * i, 90), size=(40, 32), seed=i)
    db = root / "lib.db"
    with Library(db) as library:
        library.add_root(photos)
        library.scan()
        with library.db.write() as session:
            for i, image_id in enumerate(session.scalars(select(Image.id).order_by(Image.rel_path))):
                set_human_caption(session, image_id, words[i % len(words)])
    return db


class _Planted:
    """Unpickling this creates a file: the proof that a pickle ran."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self):
        return (open, (str(self.proof), "w"))


def _version_names(db: Path) -> list[str]:
    with Library(db) as library:
        return [v.name for v in versions.list_versions(library)]


def test_a_planted_pickle_never_runs_and_restart_starts_over(tmp_path: Path, tiny_blip_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    db = _training_library(tmp_path)
    run = tmp_path / "lib.models" / "mine.run"
    run.mkdir(parents=True)
    proof = tmp_path / "pickle-ran"
    (run / "state.pt").write_bytes(pickle.dumps({"weights": _Planted(proof)}))
    command = ["--library", str(db), "train", "--base", str(tiny_blip_dir), "--name", "mine", *QUICK]
    capsys.readouterr()

    assert main(command) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(run) in line and "--restart" in line
    assert not proof.exists() and (run / "state.pt").exists()

    assert main([*command, "--restart"]) == 0, capsys.readouterr().err
    assert not proof.exists() and not run.exists() and _version_names(db) == ["mine"]


def test_a_damaged_state_is_one_line_and_restart_recovers(tmp_path: Path, tiny_blip_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    from core.training import TrainingConfig, train

    db = _training_library(tmp_path)
    cancel = threading.Event()
    with Library(db) as library:
        config = TrainingConfig(method="full", epochs=2, batch_size=8, val_ratio=0.3, device="cpu", lr=1e-3,
                                patience=0)
        first = train(library, str(tiny_blip_dir), "mine", config, cancel=cancel,
                      on_epoch=lambda record: cancel.set() if record["epoch"] == 1 else None)
    assert first.cancelled and first.epochs_run == 1
    state = tmp_path / "lib.models" / "mine.run" / "state.safetensors"
    assert not list(state.parent.glob("*.pt"))
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    command = ["--library", str(db), "train", "--base", str(tiny_blip_dir), "--name", "mine", "--method", "full",
               "--epochs", "2", "--batch-size", "8", "--val-ratio", "0.3", "--device", "cpu", "--lr", "1e-3",
               "--patience", "0"]

    capsys.readouterr()
    for _ in range(2):  # the same answer every time, not a traceback once
        assert main(command) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert str(state) in line and "damaged" in line and "--restart" in line

    assert main([*command, "--restart"]) == 0, capsys.readouterr().err
    assert _version_names(db) == ["mine"] and not state.parent.exists()


def test_a_run_failing_in_setup_leaves_no_run_folder(tmp_path: Path, tiny_blip_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    db = _training_library(tmp_path)
    command = ["--library", str(db), "train", "--base", str(tiny_blip_dir), "--name", "mine", "--method", "lora",
               "--epochs", "1", "--batch-size", "8", "--val-ratio", "0.3", "--device", "cpu", "--lr", "1e-3"]

    capsys.readouterr()
    assert main([*command, "--lora-targets", "no_such_module"]) == 2
    assert "no_such_module" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "lib.models" / "mine.run").exists()

    assert main([*command, "--lora-targets", "query", "value"]) == 0, capsys.readouterr().err
    assert _version_names(db) == ["mine"]
