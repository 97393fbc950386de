"""The first minutes on a new machine: a hub that does not answer, exit 2 that means
nothing done, setup.sh's choice of torch build."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from captiondesk.cli import main
from core.captioning.errors import ModelLoadError
from core.library import Library
from tests.support.imagegen import write_jpeg
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
NOT_CACHED = "captiondesk-tests/blip-not-here"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_hub() -> Iterator[str]:
    """A hub address that takes connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Network use allowed (the test session turns it off), with a hub that refuses connections."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("captiondesk: error:")]


def test_unreachable_hub_is_exit_2_at_once_and_nothing_is_created(
    online: None, tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jpeg(photo_dir / "a.jpg")
    library = tmp_path / "new.db"
    started = time.monotonic()
    assert main(["--library", str(library), "caption", str(photo_dir), "--model", NOT_CACHED]) == 2
    assert time.monotonic() - started < 10
    (error,) = _error_lines(capsys)
    assert f"models download {NOT_CACHED} --to blip-not-here" in error and "cannot be reached" in error
    assert not library.exists()  # exit 2: nothing done


def test_a_bad_model_adds_no_folder_to_an_existing_library(
    tmp_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jpeg(photo_dir / "a.jpg")
    other = write_jpeg(tmp_path / "other" / "b.jpg").parent
    library = tmp_path / "lib.db"
    assert main(["--library", str(library), "add", str(other)]) == 0
    before = library.read_bytes()
    assert main(["--library", str(library), "caption", str(photo_dir), "--model", "./no/such/model"]) == 2
    assert "does not exist" in _error_lines(capsys)[0]
    lib = Library(library)
    try:
        assert [Path(root.path).name for root in lib.roots()] == ["other"]
    finally:
        lib.close()
    assert library.read_bytes() == before


def test_loading_a_model_without_a_hub_gives_up_at_once(online: None) -> None:
    """The window's and eval's path (load_captioner) asks the hub once too, before any download."""
    import transformers  # noqa: F401 - imported before the clock starts: the wait is what is timed

    from core.captioning import load_captioner

    started = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_captioner(NOT_CACHED)
    assert time.monotonic() - started < 10
    assert info.value.kind == "not_downloaded"
    assert "cannot be reached" in str(info.value) and f"models download {NOT_CACHED}" in str(info.value)


def test_caption_cli_says_what_it_looks_for_and_stops_when_the_hub_is_silent(
    silent_hub: str, tmp_path: Path, photo_dir: Path
) -> None:
    write_jpeg(photo_dir / "a.jpg")
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": silent_hub,
           "HF_HOME": str(tmp_path / "hf"), "CAPTIONDESK_LIBRARY": str(tmp_path / "lib.db")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "captiondesk", "caption", str(photo_dir)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 10
    assert done.returncode == 2, done.stderr
    assert "Looking for the model Salesforce/blip-image-captioning-base" in done.stdout
    assert "about 1 GB" in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "did not answer" in errors[0], done.stderr
    assert "captiondesk models download Salesforce/blip-image-captioning-base" in errors[0]
    assert not (tmp_path / "lib.db").exists()


def test_models_download_without_a_hub_is_one_error_line(
    online: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "download", NOT_CACHED, "--to", str(tmp_path / "m")]) == 2
    (error,) = _error_lines(capsys)
    assert "not reachable" in error and not (tmp_path / "m").exists()
    assert main(["models", "download", NOT_CACHED]) == 2
    assert "--to FOLDER" in _error_lines(capsys)[0]


def test_download_keeps_one_set_of_weights() -> None:
    from fnmatch import fnmatch

    from core.captioning.hub import download_patterns

    def kept(files: list[str]) -> list[str]:
        ignore = download_patterns(files)
        return [f for f in files if not any(fnmatch(f, p) for p in ignore)]

    both = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "tokenizer.json"]
    assert kept(both) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert kept(["config.json", "pytorch_model.bin", "flax_model.msgpack"]) == ["config.json", "pytorch_model.bin"]


def _torch_choice(**facts: str) -> dict[str, str]:
    env = {**os.environ, **{f"TORCH_BUILD_{key.upper()}": value for key, value in facts.items()}}
    done = subprocess.run(["bash", str(REPO / "scripts" / "torch-build.sh")], env=env, capture_output=True,
                          text=True, timeout=30, check=True)
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


@pytest.mark.parametrize(("facts", "build", "index"), [
    ({"os": "Linux", "nvidia": "no", "local": "no"}, "cpu", "https://download.pytorch.org/whl/cpu"),
    ({"os": "Linux", "nvidia": "yes", "local": "no"}, "default", ""),
    ({"os": "Linux", "nvidia": "no", "local": "yes"}, "default", ""),  # a CI machine's local CPU wheel
    ({"os": "Darwin", "nvidia": "no", "local": "no"}, "default", ""),
    ({"os": "MINGW64_NT-10.0-19045", "nvidia": "yes", "local": "no"}, "default", ""),
])
def test_setup_chooses_the_torch_build_for_the_machine(facts: dict[str, str], build: str, index: str) -> None:
    choice = _torch_choice(**facts)
    assert (choice["build"], choice["index"]) == (build, index)
    assert choice["reason"]
    if build == "cpu":
        assert "no NVIDIA driver" in choice["reason"] and index in choice["reason"]
