"""The openvino-bf16 runtime on the tiny BLIP and Idefics3: bf16 tower and text model,
provenance naming bf16, a cache slot of its own, and a clear refusal on a CPU without bf16
hardware (bf16 captions on random weights may differ from fp32's, so they are not compared)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from core.captioning import device, load_captioner, openvino_runtime
from core.captioning.errors import ModelLoadError
from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
from tests.support.tiny_models import shape_dataset

pytest.importorskip("openvino")

needs_bf16 = pytest.mark.skipif(not device.cpu_has_bf16(),
                                reason="this CPU has no bf16 hardware (avx512_bf16 / amx_bf16)")
SETTINGS = GenerationSettings(min_new_tokens=3, max_new_tokens=8)


def _images(n: int = 3) -> list:
    return [im.convert("RGB") for im in shape_dataset(n, seed=3)[0]]


def _precision(tower) -> str:
    return tower.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def _check_bf16_captions(captioner, images: list) -> None:
    import torch

    assert captioner.identity["runtime"] == "openvino-bf16" and captioner.identity["dtype"] == "bfloat16"
    assert captioner.identity["optimizations"] == ["openvino-bf16"]
    assert {p.dtype for p in captioner.model.parameters()} == {torch.bfloat16}
    results = captioner.caption(images, SETTINGS)
    assert all(r.text and 3 <= len(r.token_ids) <= 8 for r in results)
    assert all(math.isfinite(r.score) and r.score <= 0 for r in results)


@needs_bf16
def test_bf16_blip_captions_with_provenance_and_its_own_cache_slot(tiny_blip_dir: Path, tmp_path: Path) -> None:
    from core.captions import provenance_lines
    from core.provenance import Provenance

    folder = Path(shutil.copytree(tiny_blip_dir, tmp_path / "blip"))
    fp32 = load_captioner(str(folder), device="cpu", runtime="openvino")
    messages: list[str] = []
    bf16 = load_captioner(str(folder), device="cpu", runtime="openvino-bf16", progress=messages.append)
    # A precision change converts into its own slot rather than reusing the fp32 one.
    assert any("Converting the vision model" in m for m in messages)
    assert (_precision(fp32.model.vision_model), _precision(bf16.model.vision_model)) == ("f32", "bf16")
    _check_bf16_captions(bf16, _images())
    slots = list((folder / openvino_runtime.CACHE_DIR_NAME).iterdir())
    keys = sorted(json.loads((slot / "vision" / "key.json").read_text())["options"]["precision"] for slot in slots)
    assert keys == ["bf16", "f32"]
    messages.clear()
    again = load_captioner(str(folder), device="cpu", runtime="openvino-bf16", progress=messages.append)
    assert any("Using the cached OpenVINO vision model" in m for m in messages)
    assert _precision(again.model.vision_model) == "bf16"
    lines = provenance_lines(source="model", model_name="m", adapter=None, provenance=Provenance.from_json(
        {"identity": bf16.identity}), score=None, origin=None, created_at=None)
    assert "Device: cpu, bfloat16, OpenVINO" in lines


@needs_bf16
def test_bf16_vlm_captions_and_padded_patches_on_the_torch_tower(tiny_model_dirs: dict, tmp_path: Path) -> None:
    import torch

    folder = Path(shutil.copytree(tiny_model_dirs["idefics3"], tmp_path / "idefics3"))
    captioner = load_captioner(str(folder), device="cpu", runtime="openvino-bf16")
    tower = captioner.model.model.vision_model
    assert _precision(tower) == "bf16"
    _check_bf16_captions(captioner, _images())
    assert captioner.model.model.text_model.rotary_emb.inv_freq.dtype == torch.float32  # computed, not saved
    # A padded batch runs on the fp32 torch tower and hands the bf16 text side bf16 features.
    pixels = torch.randn(2, 3, *tower.size, dtype=torch.bfloat16)
    mask = torch.ones(2, tower.size[0] // 8, tower.size[1] // 8, dtype=torch.bool)
    mask[1, -1:, :] = False
    with torch.inference_mode():
        assert tower(pixel_values=pixels, patch_attention_mask=mask).last_hidden_state.dtype == torch.bfloat16


def test_bf16_refused_without_bf16_hardware(tiny_blip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from core.captioning.families.blip import FAMILY as BLIP

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert not device.cpu_has_bf16()
    with pytest.raises(ModelLoadError, match="needs a CPU with bf16 instructions .*use --runtime openvino") as info:
        load_captioner(str(tiny_blip_dir), device="cpu", runtime="openvino-bf16")
    assert info.value.kind == "runtime" and "\n" not in str(info.value)
    # auto's table may name openvino-bf16; without bf16 hardware it runs fp32 OpenVINO.
    for table in openvino_runtime.AUTO_RUNTIMES.values():
        monkeypatch.setitem(table, "blip", "openvino-bf16")
    assert openvino_runtime.resolve_runtime("auto", BLIP, cpu) == "openvino"
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(device, "_cpu_flags", lambda flag=flag: frozenset({"avx2", flag}))
        assert device.cpu_has_bf16()
        assert openvino_runtime.resolve_runtime("openvino-bf16", BLIP, cpu) == "openvino-bf16"
        assert openvino_runtime.resolve_runtime("auto", BLIP, cpu) == "openvino-bf16"
    with pytest.raises(ModelLoadError, match="optimize 'int8' does not apply"):  # no int8 on bf16 weights
        load_captioner(str(tiny_blip_dir), device="cpu", runtime="openvino-bf16", optimize="int8")
    assert CaptionJobSpec.from_dict(CaptionJobSpec(runtime="openvino-bf16").to_dict()).runtime == "openvino-bf16"
