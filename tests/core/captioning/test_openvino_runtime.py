"""The OpenVINO runtime on the tiny BLIP, Idefics3 (SmolVLM layout), Florence-2 and Qwen2-VL: same
captions as torch fp32, the converted model cached beside the model, and a clear error where
it cannot run (``openvino-int8``: test_openvino_int8.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from captiondesk.cli import main
from core.captioning import load_captioner, openvino_runtime
from core.captioning.errors import ModelLoadError
from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
from tests.support.batch_checks import image_features
from tests.support.imagegen import write_jpeg
from tests.support.tiny_models import build_tiny_blip, shape_dataset

pytest.importorskip("openvino")

SETTINGS = GenerationSettings(max_new_tokens=8)


@pytest.fixture
def blip_copy(tiny_blip_dir: Path, tmp_path: Path) -> Path:
    """A private copy: the cache is written beside the model."""
    return Path(shutil.copytree(tiny_blip_dir, tmp_path / "blip"))


def _images(n: int = 4) -> list:
    images, _ = shape_dataset(n, seed=3)
    return [im.convert("RGB") for im in images]


def _load(model: Path, messages: list[str] | None = None, **kwargs):
    return load_captioner(str(model), device="cpu", runtime="openvino",
                          progress=(messages.append if messages is not None else None), **kwargs)


def test_openvino_captions_equal_torch_fp32(blip_copy: Path) -> None:
    import torch

    images = _images()
    reference = load_captioner(str(blip_copy), device="cpu", optimize="none")
    ov = _load(blip_copy)  # optimize="auto": the text decoder stays fp32 on this runtime
    assert ov.identity["runtime"] == "openvino" and ov.identity["optimizations"] == ["openvino"]
    # The converted vision tower itself matches torch's, not just the argmax after it.
    pixels = reference.pixel_values(images)
    with torch.inference_mode():
        expected = reference.model.vision_model(pixel_values=pixels).last_hidden_state
    got = ov.model.vision_model(pixel_values=pixels).last_hidden_state
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 1e-4
    for settings in (SETTINGS, GenerationSettings(max_new_tokens=8, num_beams=2)):
        want = reference.caption(images, settings)
        have = ov.caption(images, settings)
        assert [r.text for r in have] == [r.text for r in want]
        assert [r.token_ids for r in have] == [r.token_ids for r in want]
        assert [r.score for r in have] == pytest.approx([r.score for r in want], abs=1e-4)
    # OpenVINO keeps to torch's thread budget (a Ray actor's share of the cores).
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _load(blip_copy)
        assert single.model.vision_model.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert [r.token_ids for r in single.caption(images, SETTINGS)] == \
            [r.token_ids for r in reference.caption(images, SETTINGS)]
    finally:
        torch.set_num_threads(threads)
    # optimize=int8 quantizes what stays on torch (the text decoder); an int8 caption and
    # its score do not depend on the batch-mates.
    fast = _load(blip_copy, optimize="int8")
    assert fast.identity["optimizations"] == ["openvino", "int8"]
    alone, together = fast.caption(images[1:2], SETTINGS)[0], fast.caption(images, SETTINGS)[1]
    assert alone.token_ids == together.token_ids and alone.score == pytest.approx(together.score, abs=1e-6)


#: Where each VLM family's converted tower sits in the model.
TOWERS = {"idefics3": "vision_model", "florence2": "vision_tower", "qwen2_vl": "visual"}


@pytest.mark.parametrize("name", list(TOWERS))
def test_vlm_vision_tower_on_openvino_gives_the_torch_captions(name: str, tiny_model_dirs: dict, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    folder = Path(shutil.copytree(tiny_model_dirs[name], tmp_path / name))
    images = _images(3)
    images.append(images[0].resize((40, 24)))  # another size and aspect (Qwen2-VL: another patch grid)
    settings = GenerationSettings(min_new_tokens=4, max_new_tokens=8)
    reference = load_captioner(str(folder), device="cpu", optimize="none")
    want = reference.caption(images, settings)
    ov = _load(folder)
    tower = getattr(ov.model.model, TOWERS[name])
    assert ov.identity["optimizations"] == ["openvino"] and type(tower).__name__.startswith("OpenVINO")
    inputs = reference.preprocess(images, settings).inputs
    expected = image_features(reference, inputs)
    assert float((image_features(ov, inputs) - expected).abs().max()) < 1e-4
    torch_tower = tower._fallback[0]
    if name == "idefics3":
        # A padded batch (part of the patches masked) is not what was converted: torch runs it.
        pixels = torch.randn(2, 3, *tower.size)
        mask = torch.ones(2, tower.size[0] // 8, tower.size[1] // 8, dtype=torch.bool)
        mask[1, -1:, :] = False
        with torch.inference_mode():
            assert tower(pixel_values=pixels, patch_attention_mask=mask).last_hidden_state.equal(
                torch_tower(pixel_values=pixels, patch_attention_mask=mask).last_hidden_state)

    def no_torch(*_args, **_kwargs):
        raise AssertionError("the torch tower ran")

    monkeypatch.setattr(torch_tower, "forward", no_torch)  # the photos go through OpenVINO only
    have = ov.caption(images, settings)
    assert [r.token_ids for r in have] == [r.token_ids for r in want]
    assert [r.score for r in have] == pytest.approx([r.score for r in want], abs=1e-4)


def test_cache_reused_then_invalidated_by_model_and_adapter_changes(blip_copy: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import BlipForConditionalGeneration

    messages: list[str] = []
    _load(blip_copy, messages)
    assert any("Converting the vision model" in m for m in messages)
    [slot] = (blip_copy / openvino_runtime.CACHE_DIR_NAME).iterdir()
    stamp = (slot / "vision" / "vision.bin").stat().st_mtime_ns

    messages.clear()
    _load(blip_copy, messages)
    assert any("Using the cached OpenVINO vision model" in m for m in messages)
    assert not any("Converting" in m for m in messages)
    assert (slot / "vision" / "vision.bin").stat().st_mtime_ns == stamp

    # A LoRA adapter (merged before conversion) is its own cache entry...
    def save_adapter(seed: int) -> Path:
        import torch

        torch.manual_seed(seed)
        base = BlipForConditionalGeneration.from_pretrained(str(blip_copy))
        peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["qkv"], init_lora_weights=False))
        peft_model.save_pretrained(tmp_path / "adapter")
        return tmp_path / "adapter"

    adapter = save_adapter(1)
    messages.clear()
    first = _load(blip_copy, messages, adapter=str(adapter))
    assert any("Converting" in m for m in messages)
    # ...and new adapter weights in the same folder convert again.
    adapter = save_adapter(2)
    messages.clear()
    second = _load(blip_copy, messages, adapter=str(adapter))
    assert any("Converting" in m for m in messages)
    pixels = first.pixel_values(_images(1))
    assert not first.model.vision_model(pixel_values=pixels).last_hidden_state.equal(
        second.model.vision_model(pixel_values=pixels).last_hidden_state)

    # New base weights in the model folder invalidate the base model's entry.
    build_tiny_blip(blip_copy, seed=5)
    messages.clear()
    _load(blip_copy, messages)
    assert any("Converting" in m for m in messages)
    # One slot per model and adapter folder: a changed key replaced its old conversion.
    assert len(list((blip_copy / openvino_runtime.CACHE_DIR_NAME).iterdir())) == 2
    # Copying a full version (models export) leaves the cache, keyed by this folder, behind.
    from core.training.versions import _copy_model

    (tmp_path / "copy").mkdir()
    _copy_model(blip_copy, tmp_path / "copy")
    assert (tmp_path / "copy" / "config.json").is_file()
    assert not (tmp_path / "copy" / openvino_runtime.CACHE_DIR_NAME).exists()


def test_runtime_openvino_without_the_package_is_one_error_line(
    tiny_blip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(openvino_runtime, "openvino_available", lambda: False)
    with pytest.raises(ModelLoadError, match="needs the openvino package") as info:
        _load(tiny_blip_dir)
    assert info.value.kind == "runtime"
    # auto (OpenVINO for BLIP on an AMX CPU where installed) falls back to torch rather than failing.
    from core.captioning import device

    monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16", "amx_tile"}))
    assert load_captioner(str(tiny_blip_dir), device="cpu", runtime="auto").identity["runtime"] == "torch"
    write_jpeg(tmp_path / "photos" / "a.jpg", seed=1)
    capsys.readouterr()
    code = main(["--library", str(tmp_path / "lib.db"), "caption", str(tmp_path / "photos"), "--model",
                 str(tiny_blip_dir), "--device", "cpu", "--runtime", "openvino"])
    out, err = capsys.readouterr()
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("captiondesk:")]
    assert len(errors) == 1 and "needs the openvino package" in errors[0], err
    assert "Traceback" not in out + err


def test_runtime_choice() -> None:
    import torch

    from core.captioning.families.blip import FAMILY as BLIP
    from core.captioning.families.git import FAMILY as GIT
    from core.captioning.families.idefics3 import FAMILY as IDEFICS3

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert openvino_runtime.resolve_runtime("openvino", BLIP, cpu) == "openvino"
    assert openvino_runtime.resolve_runtime("openvino-int8", IDEFICS3, cpu) == "openvino-int8"
    # auto follows the table for the kind of CPU: OpenVINO for BLIP where AMX is, torch elsewhere.
    from core.captioning import device as device_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(device_module, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
        assert openvino_runtime.resolve_runtime("auto", BLIP, cpu) == "openvino"
        patch.setattr(device_module, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_vnni", "avx512_bf16"}))
        assert openvino_runtime.resolve_runtime("auto", BLIP, cpu) == "torch"
    assert openvino_runtime.resolve_runtime("auto", BLIP, gpu) == "torch"
    assert openvino_runtime.resolve_runtime("auto", GIT, cpu) == "torch"
    for family, device, why in ((GIT, cpu, "does not cover git"), (BLIP, gpu, "CPU only")):
        with pytest.raises(ModelLoadError, match=why):
            openvino_runtime.resolve_runtime("openvino", family, device)
    with pytest.raises(ValueError, match="runtime must be one of"):
        CaptionJobSpec(runtime="onnx")
    spec = CaptionJobSpec(runtime="openvino")
    assert CaptionJobSpec.from_dict(spec.to_dict()).runtime == "openvino"


def test_caption_job_on_openvino_records_the_runtime(library, blip_copy: Path, tmp_path: Path) -> None:
    from sqlalchemy import select

    from core.captioning.engine import run_caption_job
    from core.models import Caption, Job

    for i in range(3):
        write_jpeg(tmp_path / "photos" / f"{i}.jpg", seed=i)
    library.scan([library.add_root(tmp_path / "photos").id])
    spec = CaptionJobSpec(model=str(blip_copy), device="cpu", runtime="openvino", batch_size=2,
                          generation=GenerationSettings(min_new_tokens=3, max_new_tokens=5))
    stats = run_caption_job(library, spec)
    assert (stats.captioned, stats.errors) == (3, 0)
    with library.db.read() as session:
        rows = list(session.scalars(select(Caption).where(Caption.is_current.is_(True))))
        job = session.scalars(select(Job).where(Job.kind == "caption")).one()
        assert job.params["runtime"] == "openvino"
    assert len(rows) == 3
    assert all(row.provenance.identity["runtime"] == "openvino" for row in rows)
