"""The restyle stage with a real tiny causal LM: ``train --restyler`` learns a deterministic
restyle task from the library's (model caption → verified caption) pairs, ``restyle``
applies it with both stages in the provenance, and the version reloads and exports merged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from core import captions
from core.library import Library
from core.models import Caption, CaptionSource
from tests.support.library_helpers import run_cli
from tests.support.model_fixtures import RESTYLE_STYLE, TrainedRestyler
from tests.support.tiny_text_models import make_pair_library, restyle_task

STYLE = RESTYLE_STYLE


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """A 64-wide model's matrices are too small to share between threads; on a loaded machine
    more threads only wait on each other (measured 12x slower training here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def current(library: Library, image_id: int) -> Caption:
    with library.db.read() as session:
        caption = captions.current_caption(session, image_id)
        assert caption is not None
        session.expunge(caption)
        return caption


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_trained_restyler_learns_the_task_and_restyles_with_both_stages(
        tmp_path: Path, house_style: TrainedRestyler, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from core.restyle.pairs import count_restyle_pairs

    library, expected, db = house_style.library, house_style.expected, house_style.db
    assert count_restyle_pairs(library) == len(restyle_task()) - len(expected)
    out = house_style.train_output
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
def test_eval_scores_a_restyler_version_on_its_held_out_pairs(
        house_style: TrainedRestyler, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from core.restyle.pairs import collect_restyle_pairs
    from core.training.versions import get_version

    db = house_style.db
    assert run_cli(["--library", db, "eval", "--model", "house-style", "--device", "cpu", "--json"], monkeypatch) == 0
    out = json.loads(capsys.readouterr().out)
    version = get_version(house_style.library, "house-style")
    training = version.config["training"]
    held_out = collect_restyle_pairs(house_style.library, val_ratio=training["val_ratio"], seed=training["seed"])
    # Too few pairs for a test split here: the version's own validation pairs, as training scored them.
    assert not held_out.test and out["split"]["held_out"] == "validation" and out["split"]["source"] == "version"
    assert out["scored"] == len(held_out.validation) and out["train_overlap_count"] == 0
    assert out["metrics"] == pytest.approx(version.metrics["trained"])
    assert out["metrics"]["exact_match"] >= 0.9 and out["intervals"]["exact_match"][0] <= out["metrics"]["exact_match"]

    # Another split seed scores other pairs, among them training pairs, and says so.
    assert run_cli(["--library", db, "eval", "--model", "house-style", "--seed", "5", "--device", "cpu"],
                   monkeypatch) == 0
    text = capsys.readouterr()
    assert "Validation restyle pairs:" in text.out and "Overlap with training data:" in text.out
    assert "training pairs of 'house-style'" in text.err


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


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_restyler_run_cancelled_after_an_epoch_resumes_to_the_same_result(tmp_path: Path, tiny_lm_dir: Path) -> None:
    import threading

    import torch

    from core.restyle.training import train_restyler
    from core.training.config import TrainingConfig
    from core.training.versions import get_version, run_dir

    library, _ = make_pair_library(tmp_path / "lib.db", tmp_path / "photos", held_out=4)
    config = TrainingConfig(method="lora", epochs=3, lr=1e-3, batch_size=16, patience=0, max_new_tokens=6,
                            device="cpu")
    whole = train_restyler(library, str(tiny_lm_dir), "whole", config, style=STYLE)

    cancel = threading.Event()
    first = train_restyler(library, str(tiny_lm_dir), "resumed", config, style=STYLE, cancel=cancel,
                           on_epoch=lambda record: cancel.set())  # cancelled early in epoch 2
    assert first.cancelled and first.epochs_run == 1 and first.version_id is None
    assert (run_dir(library, "resumed") / "state.safetensors").is_file()
    epochs: list[int] = []
    again = train_restyler(library, str(tiny_lm_dir), "resumed", config, style=STYLE,
                           on_epoch=lambda record: epochs.append(record["epoch"]))
    assert epochs == [2, 3] and not run_dir(library, "resumed").exists()
    assert len(again.history) == len(whole.history) == 3 and again.best_epoch == whole.best_epoch
    assert all(r == pytest.approx(w) for r, w in zip(again.history, whole.history, strict=True))
    assert again.metrics == pytest.approx(whole.metrics)

    def weights(name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(Path(get_version(library, name).adapter_path, "adapter_model.safetensors")))

    a, b = weights("whole"), weights("resumed")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    # Another style is another run: the unfinished one is not resumed with it; --restart starts over.
    train_restyler(library, str(tiny_lm_dir), "other", config, style=STYLE, cancel=cancel)
    from core.training.result import TrainingError

    with pytest.raises(TrainingError, match="different settings or data"):
        train_restyler(library, str(tiny_lm_dir), "other", config, style="Another style.")
    epochs.clear()
    restarted = train_restyler(library, str(tiny_lm_dir), "other", replace(config, epochs=1), style="Another style.",
                               restart=True, on_epoch=lambda record: epochs.append(record["epoch"]))
    assert epochs == [1] and restarted.version_id is not None


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="QLoRA restylers train on CUDA")
def test_qlora_restyler_trains_on_cuda(tmp_path: Path, tiny_lm_dir: Path) -> None:
    pytest.importorskip("bitsandbytes")
    from core.restyle.training import train_restyler
    from core.training.config import TrainingConfig

    library, _ = make_pair_library(tmp_path / "lib.db", tmp_path / "photos", held_out=4)
    result = train_restyler(library, str(tiny_lm_dir), "q", TrainingConfig(method="qlora", epochs=1, lr=1e-3,
                                                                         target_modules=["q_proj", "v_proj"]))
    assert result.version_id is not None and result.method == "qlora"
