"""The restyle stage with a real tiny causal LM: ``train --restyler`` learns a deterministic
restyle task from the library's (model caption → verified caption) pairs, ``restyle``
applies it with both stages in the provenance, and the version reloads and exports merged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from core import captions
from core.library import Library
from core.models import Caption, CaptionSource
from tests.library_helpers import run_cli
from tests.tiny_text_models import build_tiny_causal_lm, make_pair_library, restyle_task

STYLE = "Restyle."


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """A 64-wide model's matrices are too small to share between threads; on a loaded machine
    more threads only wait on each other (measured 12x slower training here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


def current(library: Library, image_id: int) -> Caption:
    with library.db.read() as session:
        caption = captions.current_caption(session, image_id)
        assert caption is not None
        session.expunge(caption)
        return caption


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_trained_restyler_learns_the_task_and_restyles_with_both_stages(
        tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from core.restyle.pairs import count_restyle_pairs

    library, expected = make_pair_library(tmp_path / "lib.db", tmp_path / "photos")
    assert count_restyle_pairs(library) == len(restyle_task()) - len(expected)
    db = str(tmp_path / "lib.db")
    code = run_cli(["--library", db, "train", "--restyler", "--base", str(tiny_lm_dir), "--name", "house-style",
                    "--style", STYLE, "--method", "full", "--lr", "5e-3", "--epochs", "30", "--batch-size", "8",
                    "--patience", "0", "--device", "cpu", "--json"], monkeypatch)
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["metrics"]["exact_match"] >= 0.9, out["metrics"]

    code = run_cli(["--library", db, "restyle", "--all", "--with", "house-style", "--device", "cpu", "--json"],
                   monkeypatch)
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["counts"]["restyled"] == len(expected)
    got = {image_id: current(library, image_id) for image_id in expected}
    matches = sum(got[i].text == text for i, text in expected.items())
    assert matches / len(expected) >= 0.9, {i: (c.text, expected[i]) for i, c in got.items()}
    # Provenance names both stages; the row stays the captioner's, unverified, with the restyler's confidence.
    caption = next(iter(got.values()))
    assert caption.source == CaptionSource.MODEL and caption.model_name == "tiny-captioner"
    record = caption.provenance.extra["restyle"]
    assert record["version"] == "house-style" and record["style"] == STYLE
    assert record["restyler"].endswith("house-style") and record["source_text"].startswith("a ")
    assert caption.provenance.generation == {"max_new_tokens": 20}  # the captioner's provenance is kept
    assert caption.score is not None and caption.score <= 0
    # A person's caption is never restyled; the verified pairs stay as they were.
    with library.db.read() as session:
        humans = session.scalars(select(Caption).where(Caption.is_current.is_(True),
                                                       Caption.source == CaptionSource.HUMAN)).all()
        assert all(c.provenance is None or "restyle" not in c.provenance.extra for c in humans)
        assert any(c.text == "written by a person" for c in humans)
    assert result["counts"]["skipped"] >= 1

    # Resume: a rerun finds nothing left to do.
    assert run_cli(["--library", db, "restyle", "--all", "--with", "house-style", "--json"], monkeypatch) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["restyled"] == 0

    # The merged export loads in plain transformers and gives the same text; reload is identical.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.restyle.model import LocalRestyler, RestyleSettings, load_restyler
    from core.restyle.spec import RestyleSpec, resolve_restyler

    exported = tmp_path / "merged"
    assert run_cli(["--library", db, "models", "export", "house-style", str(exported)], monkeypatch) == 0
    sources = [got[i].provenance.extra["restyle"]["source_text"] for i in expected]
    resolved = resolve_restyler(library, RestyleSpec("house-style"))
    settings = RestyleSettings(STYLE, 30)
    first = [r.text for r in load_restyler(resolved.model_name, resolved.adapter, device="cpu").restyle(sources, settings)]
    again = [r.text for r in load_restyler(resolved.model_name, resolved.adapter, device="cpu").restyle(sources, settings)]
    plain = LocalRestyler(AutoModelForCausalLM.from_pretrained(exported), AutoTokenizer.from_pretrained(exported),
                          name=str(exported), adapter=None, device="cpu")
    plain.tokenizer.pad_token = plain.tokenizer.pad_token or plain.tokenizer.eos_token
    assert first == again == [r.text for r in plain.restyle(sources, settings)]
    assert first == [got[i].text for i in expected]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lora_restyler_version_activates_exports_merged_and_restyles(
        tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from core.restyle.model import RestyleSettings, load_restyler
    from core.restyle.spec import RestyleSpec, resolve_restyler
    from core.training.versions import get_active_restyler, get_active_version, get_version

    library, expected = make_pair_library(tmp_path / "lib.db", tmp_path / "photos", held_out=4)
    db = str(tmp_path / "lib.db")
    assert run_cli(["--library", db, "train", "--restyler", "--base", str(tiny_lm_dir), "--name", "lora-style",
                    "--style", STYLE, "--epochs", "1", "--lr", "1e-3", "--batch-size", "16", "--device", "cpu",
                    "--json"], monkeypatch) == 0
    capsys.readouterr()
    version = get_version(library, "lora-style")
    assert version is not None and version.method == "lora" and version.config["target"] == "restyler"
    assert version.config["style"] == STYLE and Path(version.adapter_path, "adapter_config.json").is_file()
    assert version.base_model == str(tiny_lm_dir)

    # Activating a restyler leaves the captioner alone; restyle without --with uses it.
    assert run_cli(["--library", db, "models", "activate", "lora-style"], monkeypatch) == 0
    assert "active restyler" in capsys.readouterr().out
    assert get_active_restyler(library).name == "lora-style" and get_active_version(library) is None
    assert run_cli(["--library", db, "restyle", "--all", "--device", "cpu", "--max-new-tokens", "12", "--json"],
                   monkeypatch) in (0, 1)  # an untrained-looking LoRA may generate nothing for a caption
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["restyled"] + out["counts"]["errors"] == len(expected)
    assert out["restyler"] == "lora-style"

    exported = tmp_path / "merged"
    assert run_cli(["--library", db, "models", "export", "lora-style", str(exported)], monkeypatch) == 0
    assert not (exported / "adapter_config.json").exists()
    resolved = resolve_restyler(library, RestyleSpec("lora-style"))
    settings = RestyleSettings(STYLE, 12)
    sources = [text for text, _ in restyle_task()[:6]]
    with_adapter = load_restyler(resolved.model_name, resolved.adapter, device="cpu").restyle(sources, settings)
    merged = load_restyler(str(exported), device="cpu").restyle(sources, settings)
    assert [r.text for r in with_adapter] == [r.text for r in merged]
    assert [r.score for r in with_adapter] == pytest.approx([r.score for r in merged], abs=1e-4)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="QLoRA restylers train on CUDA")
def test_qlora_restyler_trains_on_cuda(tmp_path: Path, tiny_lm_dir: Path) -> None:
    pytest.importorskip("bitsandbytes")
    from core.restyle.training import train_restyler
    from core.training.config import TrainingConfig

    library, _ = make_pair_library(tmp_path / "lib.db", tmp_path / "photos", held_out=4)
    result = train_restyler(library, str(tiny_lm_dir), "q", TrainingConfig(method="qlora", epochs=1, lr=1e-3,
                                                                         target_modules=["q_proj", "v_proj"]))
    assert result.version_id is not None and result.method == "qlora"
