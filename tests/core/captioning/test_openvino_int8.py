"""``openvino-int8`` on the tiny BLIP: the vision tower in int8 weights and activations
(calibrated on the generated photos) beside the int8 text decoder on OpenVINO; a caption does not
depend on its batch-mates, the conversion is cached in its own slot."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from core.captioning import load_captioner, openvino_int8, openvino_runtime
from core.captioning.job_spec import GenerationSettings
from tests.support.batch_checks import assert_same_alone_as_in_batch, image_features
from tests.support.tiny_models import shape_dataset

pytest.importorskip("openvino")
pytest.importorskip("nncf")

SETTINGS = GenerationSettings(max_new_tokens=8)


def _load(model: Path, runtime: str, messages: list[str]):
    return load_captioner(str(model), device="cpu", runtime=runtime, progress=messages.append)


def _slots(model: Path) -> dict[str, Path]:
    slots = (model / openvino_runtime.CACHE_DIR_NAME).iterdir()
    return {json.loads((slot / "vision" / "key.json").read_text())["options"]["weights"]: slot for slot in slots}


def test_blip_int8_runs_int8_activations_and_captions_each_image_alone(tiny_blip_dir: Path, tmp_path: Path) -> None:
    import openvino

    model = Path(shutil.copytree(tiny_blip_dir, tmp_path / "blip"))
    images = [im.convert("RGB") for im in shape_dataset(6, seed=3)[0]]
    messages: list[str] = []
    int8 = _load(model, "openvino-int8", messages)
    # optimize="auto": the text decoder runs on OpenVINO too (test_openvino_blip_text.py).
    assert int8.identity["runtime"] == "openvino-int8" and int8.identity["optimizations"] == ["openvino-int8"]
    assert not any("int8_asym" in m or "Statistics" in m for m in messages)  # NNCF's tables stay out
    [slot] = _slots(model).values()
    key = json.loads((slot / "vision" / "key.json").read_text())
    assert key["options"] | {"activations": "int8", "calibration": openvino_int8.CALIBRATION} == key["options"]
    # Activations quantized: the saved graph has FakeQuantize nodes (weight-only compression has none).
    ops = {op.get_type_name() for op in openvino.Core().read_model(str(slot / "vision" / "vision.xml")).get_ops()}
    assert "FakeQuantize" in ops

    together = assert_same_alone_as_in_batch(int8, images, SETTINGS, alone=3)
    assert all(r.text.strip() and r.score is not None and math.isfinite(r.score) for r in together)

    from core.captions import provenance_lines
    from core.provenance import Provenance

    lines = provenance_lines(source="model", model_name="m", adapter=None, provenance=Provenance.from_json(
        {"identity": int8.identity}), score=None, origin=None, created_at=None)
    assert "Device: cpu, float32, OpenVINO int8" in lines


def test_int8_conversion_cached_in_its_own_slot(tiny_blip_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model = Path(shutil.copytree(tiny_blip_dir, tmp_path / "blip"))
    messages: list[str] = []
    _load(model, "openvino-int8", messages)
    _load(model, "openvino", messages)
    slots = _slots(model)
    assert sorted(slots) == ["fp32", "int8"]
    # int8 weights are smaller on disk than the fp32 ones.
    assert (slots["int8"] / "vision" / "vision.bin").stat().st_size < (slots["fp32"] / "vision" / "vision.bin").stat().st_size
    stamp = (slots["int8"] / "vision" / "vision.bin").stat().st_mtime_ns

    messages.clear()
    _load(model, "openvino-int8", messages)
    assert any("Using the cached OpenVINO vision model" in m for m in messages)
    assert not any("Converting" in m for m in messages)
    assert (slots["int8"] / "vision" / "vision.bin").stat().st_mtime_ns == stamp
    # The calibration photos are generated the same way every time, and another set converts again.
    assert [p.tobytes() for p in openvino_int8.calibration_photos(2)] == [
        p.tobytes() for p in openvino_int8.calibration_photos(2)]
    monkeypatch.setattr(openvino_int8, "CALIBRATION", "another-set")
    messages.clear()
    _load(model, "openvino-int8", messages)
    assert any("Converting the vision model" in m for m in messages)


def test_int8_on_a_trained_model_stays_close_to_fp32(trained_blip_dir: Path, tmp_path: Path) -> None:
    """Static activation scales from the generated photos keep a trained model's captions."""
    model = Path(shutil.copytree(trained_blip_dir, tmp_path / "blip"))
    images, _ = shape_dataset(48, seed=5)
    ref = load_captioner(str(model), device="cpu", optimize="none").caption(images, SETTINGS)
    got = _load(model, "openvino-int8", []).caption(images, SETTINGS)
    same = sum(a.text == b.text for a, b in zip(got, ref, strict=True))
    assert same >= 0.9 * len(images), f"only {same}/{len(images)} captions unchanged by int8"
    diffs = [abs(a.score - b.score) for a, b in zip(got, ref, strict=True) if a.text == b.text]
    assert sum(diffs) / len(diffs) < 0.02 and max(diffs) < 0.1



@pytest.mark.parametrize("name", ["qwen2_vl", "florence2", "idefics3"])
def test_vlm_int8_tower_runs_int8_activations_close_to_fp32(name: str, tiny_model_dirs: dict, tmp_path: Path) -> None:
    """A VLM's tower calibrated on the generated photos (Qwen2-VL: their patches, one image a
    call, any patch grid): int8 activations, image features near fp32's, a caption alone as in
    a batch."""
    import openvino

    folder = Path(shutil.copytree(tiny_model_dirs[name], tmp_path / name))
    images = [im.convert("RGB") for im in shape_dataset(4, seed=3)[0]]
    images.append(images[0].resize((40, 24)))  # another size (Qwen2-VL: another patch grid)
    reference = load_captioner(str(folder), device="cpu", optimize="none")
    int8 = _load(folder, "openvino-int8", [])
    [slot] = _slots(folder).values()
    key = json.loads((slot / "vision" / "key.json").read_text())
    assert key["options"] | {"activations": "int8", "calibration": openvino_int8.CALIBRATION} == key["options"]
    ops = {op.get_type_name() for op in openvino.Core().read_model(str(slot / "vision" / "vision.xml")).get_ops()}
    assert "FakeQuantize" in ops
    # Florence-2's text model stays on torch, and runs there in the engine's per-image int8.
    expected = ["openvino-int8", "int8"] if name == "florence2" else ["openvino-int8"]
    assert int8.identity["optimizations"] == expected
    if name == "florence2":
        from core.captioning.int8_linear import PerImageInt8Linear

        text = int8.model.model.language_model
        assert any(isinstance(m, PerImageInt8Linear) for m in text.modules())

    inputs = reference.preprocess(images, SETTINGS).inputs
    want, have = image_features(reference, inputs), image_features(int8, inputs)
    assert have.shape == want.shape
    # int8 rounding on 64-px random weights (up to ~10 %), not another function (~140 %).
    assert float((have - want).norm() / want.norm()) < 0.2
    together = assert_same_alone_as_in_batch(int8, images, SETTINGS, alone=4)
    assert all(r.score is not None and math.isfinite(r.score) for r in together)
