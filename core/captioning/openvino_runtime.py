"""The OpenVINO runtime for CPU captioning: which runtime a load uses, and a family's vision
tower (BLIP, Idefics3/SmolVLM, Florence-2, Qwen2-VL) converted with ``openvino.convert_model``, cached
beside the model; for Idefics3/SmolVLM and Qwen2-VL its language model and LM head too
(:mod:`core.captioning.openvino_language`), for BLIP its text decoder
(:mod:`core.captioning.openvino_blip_text`).

``runtime="torch"`` is the PyTorch path of :mod:`core.captioning.optimize`.
``runtime="openvino"`` loads the model in fp32 (adapters merged first), converts its
vision tower to an OpenVINO model (compiled for the CPU with fp32 inference precision,
because OpenVINO would otherwise run bf16 on CPUs that have it and change the captions)
and leaves ``generate`` to transformers, so greedy and beam search, scores, batching,
resume and cancel are the torch path's own, and the captions are the torch fp32
captions.  Where the language model is converted too, each decoding step runs on
OpenVINO inside that same ``generate``; elsewhere the text model stays on torch.
``runtime="openvino-int8"`` is the same in int8 (:mod:`core.captioning.openvino_int8`): the
tower with int8 weights and activations (scales fixed at conversion from generated photos,
so a caption never depends on its batch-mates), BLIP's image key/value projection likewise,
the converted text models' steps with int8 weights only, and a text model left on torch
(Florence-2's) in the engine's per-image int8.
``runtime="openvino-bf16"`` compiles the tower with bf16 inference precision and casts what
stays on torch (the text model, ``generate``) to bf16 weights (faster than bf16 autocast of
the fp32 model, docs/optimization-notes.md); ``generate`` and the scores still take the
logits' log-softmax in fp32.  Its captions may differ from fp32's, and it runs only on a CPU
with bf16 hardware (:func:`.device.cpu_has_bf16`): elsewhere bf16 is emulated, several times
slower.
The tower is converted for full images at one size (Qwen2-VL's: one image of any size per
call); any other call (Idefics3's padded patches) runs on the original torch tower, kept
beside the converted one.  An
explicit ``optimize`` list applies to the torch part (``"int8"``: the text decoder in
per-image int8, BLIP's then kept on torch); ``"auto"`` keeps it in the runtime's precision.  ``runtime="auto"`` picks the runtime of
:data:`AUTO_RUNTIMES` for the family and the kind of CPU (measured faster with the same captions, see
``benchmarks/caption_model_speed.py --runtime all``), on the CPU, when the package is
installed (``openvino-bf16`` there becomes ``openvino`` on a CPU without bf16 hardware);
torch otherwise.  Training always runs on torch.

The converted parts are cached in ``.captiondesk-openvino/<slot>/<part>/`` inside a local model
folder (a user cache folder for hub models or a read-only folder), one slot per model,
adapter, weight precision and inference precision, and one folder per part (``vision``,
``language``, BLIP's ``text-cross`` and ``text-step``); a part's ``key.json`` names the model, its weights' sizes and times, the
adapter, the versions and the options, and a different key converts that part again in
place of the old one.  With ``openvino-bf16`` the language model (BLIP: text decoder) stays on torch (in bf16).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError
from .job_spec import RUNTIMES

if TYPE_CHECKING:
    import torch

    from .captioner import CaptionerFamily as ModelFamily

__all__ = [
    "AUTO_RUNTIMES",
    "OPENVINO_FAMILIES",
    "OPENVINO_PRECISION",
    "OPENVINO_WEIGHTS",
    "RUNTIMES",
    "apply_openvino",
    "cache_root",
    "nncf_available",
    "openvino_available",
    "resolve_runtime",
    "runtime_dtype",
    "text_stays_on_torch",
]

#: Families with an OpenVINO converter here (their vision tower).
OPENVINO_FAMILIES: frozenset[str] = frozenset({"blip", "idefics3", "florence2", "qwen2-vl"})
#: The runtimes that run on OpenVINO, and the weight precision of each.
OPENVINO_WEIGHTS: dict[str, str] = {"openvino": "fp32", "openvino-bf16": "fp32", "openvino-int8": "int8"}
#: ... and the precision each computes in (the tower's OpenVINO inference precision, and
#: for bf16 the torch text side's weights too).
OPENVINO_PRECISION: dict[str, str] = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "f32"}
#: What ``auto`` runs each family on, per kind of CPU (:func:`.device.cpu_class`; a family
#: absent: torch), set from ``benchmarks/caption_model_speed.py --runtime all``: only where it
#: was faster than the torch engine with the same captions (docs/optimization-notes.md,
#: "OpenVINO runtime", has the tables).
AUTO_RUNTIMES: dict[str, dict[str, str]] = {
    "amx": {"blip": "openvino"},
    "other": {"florence2": "openvino-int8", "qwen2-vl": "openvino-int8"},
}
#: Bumped when the conversion itself changes, so old caches are converted again
#: (2: one sub-folder per converted part, ``vision`` and ``language``).
CONVERTER_VERSION = 2
CACHE_DIR_NAME = ".captiondesk-openvino"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")


def openvino_available() -> bool:
    """Whether the optional ``openvino`` package is installed (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def nncf_available() -> bool:
    """Whether ``nncf`` (int8 weight compression for ``openvino-int8``) is installed."""
    return importlib.util.find_spec("nncf") is not None


def text_stays_on_torch(family_id: str) -> bool:
    """Whether the family's text model stays on torch under ``openvino``/``openvino-int8``
    (Florence-2's encoder-decoder: no converter for it here)."""
    from .openvino_language import LANGUAGE_FAMILIES

    return family_id in OPENVINO_FAMILIES and family_id != "blip" and family_id not in LANGUAGE_FAMILIES


def runtime_dtype(runtime: str) -> torch.dtype:
    """The dtype what stays on torch runs in under the OpenVINO *runtime*."""
    import torch

    return torch.bfloat16 if OPENVINO_PRECISION[runtime] == "bf16" else torch.float32


def _auto_runtime(family: ModelFamily, device: torch.device) -> str:
    from .device import cpu_class, cpu_has_bf16

    chosen = AUTO_RUNTIMES[cpu_class()].get(family.id, "torch")
    if chosen == "torch" or device.type != "cpu" or not openvino_available():
        return "torch"

    if (chosen == "openvino-bf16" and not cpu_has_bf16()) or (chosen == "openvino-int8" and not nncf_available()):
        return "openvino"
    return chosen


def resolve_runtime(runtime: str, family: ModelFamily, device: torch.device, *, model: str | None = None) -> str:
    """``"torch"`` or one of :data:`OPENVINO_WEIGHTS` for this load; ``ModelLoadError``
    when OpenVINO was asked for and cannot run (not installed, not the CPU, a family it
    does not cover, bf16 without bf16 hardware)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        return "torch"
    if runtime == "auto":
        return _auto_runtime(family, device)
    if not openvino_available():
        raise ModelLoadError("The OpenVINO runtime needs the openvino package, which is not installed: "
                             "pip install 'captiondesk[openvino]', or use --runtime torch.",
                             kind="runtime", model=model)
    if runtime == "openvino-int8" and not nncf_available():
        raise ModelLoadError("The openvino-int8 runtime needs the nncf package, which is not installed: "
                             "pip install 'captiondesk[openvino]', or use --runtime openvino.",
                             kind="runtime", model=model)
    if device.type != "cpu":
        raise ModelLoadError(f"The OpenVINO runtime runs on the CPU only, not on {device}; use --runtime torch "
                             "or --device cpu.", kind="runtime", model=model)
    if family.id not in OPENVINO_FAMILIES:
        raise ModelLoadError(f"The OpenVINO runtime does not cover {family.id} models yet (only "
                             f"{', '.join(sorted(OPENVINO_FAMILIES))}); use --runtime torch.",
                             kind="runtime", model=model)
    from .device import CPU_BF16_FLAGS, cpu_has_bf16

    if runtime == "openvino-bf16" and not cpu_has_bf16():
        raise ModelLoadError(f"The openvino-bf16 runtime needs a CPU with bf16 instructions "
                             f"({' or '.join(sorted(CPU_BF16_FLAGS))}), which this one lacks, so bf16 would run "
                             "several times slower than fp32; use --runtime openvino.", kind="runtime", model=model)
    return runtime


# --------------------------------------------------------------------------- cache


def _files_fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    """Name, size and modification time of the weight and config files (not a hash: a
    multi-gigabyte read per load would cost more than the conversion saves)."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.endswith(_WEIGHT_SUFFIXES):
            stat = path.stat()
            found.append((path.name, stat.st_size, stat.st_mtime_ns))
    return found


def cache_key(*, model_ref: str, revision: str | None, adapter: dict[str, Any] | None, options: dict[str, Any]
              ) -> dict[str, Any]:
    """Everything the converted model depends on, as plain JSON values."""
    import openvino
    import torch
    import transformers

    adapter_source = (adapter or {}).get("source") or (adapter or {}).get("path")
    return {
        "converter": CONVERTER_VERSION,
        "model": model_ref,
        "revision": revision,
        "model_files": _files_fingerprint(Path(model_ref)),
        "adapter": adapter,
        "adapter_files": _files_fingerprint(Path(adapter_source)) if adapter_source else [],
        "options": options,
        "openvino": openvino.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def cache_root(model_ref: str) -> Path:
    """Where a model's converted parts go: beside a writable local model, else the user cache."""
    folder = Path(model_ref)
    if folder.is_dir() and os.access(folder, os.W_OK):
        return folder / CACHE_DIR_NAME
    override = os.environ.get("CAPTIONDESK_OPENVINO_CACHE")
    if override:
        return Path(override)
    from platformdirs import user_cache_path

    return user_cache_path("captiondesk") / "openvino"


def _slot(model_ref: str, adapter: dict[str, Any] | None, weights: str = "fp32", precision: str = "f32") -> str:
    """One cache folder per model, adapter folder, weight and inference precision, so
    retrained weights replace the old conversion while the fp32, bf16 and int8 ones live
    side by side."""
    parts = ([model_ref, (adapter or {}).get("path")] + ([weights] if weights != "fp32" else [])
             + ([precision] if precision != "f32" else []))
    text = json.dumps(parts, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_CONVERT_LOCK = threading.Lock()


def _cached_or_converted(slot_dir: Path, key: dict[str, Any], name: str, convert: Any, progress: Any) -> Path:
    """The ``name.xml`` in *slot_dir* (one part's folder) for *key*, converting (and replacing
    the folder) when the stored key differs or the files are missing."""
    import openvino

    xml = slot_dir / f"{name}.xml"
    key_file = slot_dir / "key.json"
    with _CONVERT_LOCK:
        try:
            stored = json.loads(key_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if stored == json.loads(json.dumps(key, default=str)) and xml.is_file() and xml.with_suffix(".bin").is_file():
            progress(f"Using the cached OpenVINO {name} model")
            return xml
        progress(f"Converting the {name} model for OpenVINO (once per model version)")
        ov_model = convert()
        slot_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=slot_dir.parent))
        try:
            openvino.save_model(ov_model, str(staging / xml.name), compress_to_fp16=False)
            (staging / key_file.name).write_text(json.dumps(key, indent=1, default=str), encoding="utf-8")
            # Swap the whole slot so a crash never leaves a key beside another key's model.
            old = slot_dir.with_name(slot_dir.name + ".old")
            if slot_dir.exists():
                shutil.rmtree(old, ignore_errors=True)
                slot_dir.rename(old)
            staging.rename(slot_dir)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return xml


# --------------------------------------------------------------------------- vision towers


def _tower_module() -> type:
    import torch

    class OpenVINOVisionTower(torch.nn.Module):
        """Stands in for a family's vision tower: the compiled OpenVINO model's last hidden
        state for full images, in *dtype* (the text side's); anything the conversion did not
        cover (Idefics3's padded patches) runs on the original fp32 torch tower, kept outside
        the module tree."""

        def __init__(self, compiled: Any, xml: Path, fallback: Any, *, mask_arg: str | None,
                     size: tuple[int, int], dtype: torch.dtype = torch.float32) -> None:
            super().__init__()
            self.compiled = compiled
            self.out_dtype = dtype
            self.config = fallback.config
            self.xml = xml
            self.mask_arg = mask_arg
            self.size = size
            self._fallback = [fallback]  # a list, so its weights are not this module's parameters

        def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                    **kwargs: Any) -> Any:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            mask = kwargs.get(self.mask_arg) if self.mask_arg else None
            converted_for = tuple(pixel_values.shape[-2:]) == self.size and not interpolate_pos_encoding
            if not converted_for or (mask is not None and not bool(mask.all())):
                if interpolate_pos_encoding:
                    kwargs["interpolate_pos_encoding"] = True
                out = self._fallback[0](pixel_values.float(), **kwargs)
                out.last_hidden_state = out.last_hidden_state.to(self.out_dtype)
                return out
            # One infer request per call: requests are not shared between threads.
            request = self.compiled.create_infer_request()
            result = request.infer([pixel_values.detach().float().contiguous().numpy()])
            hidden = torch.from_numpy(result[self.compiled.output(0)].copy())
            return BaseModelOutputWithPooling(last_hidden_state=hidden.to(self.out_dtype))

    return OpenVINOVisionTower


def _tower_parts(model: Any, family_id: str, processor: Any) -> tuple[Any, str, str | None, tuple[int, int]]:
    """(the module that owns the tower, its attribute name, the name of its patch-mask
    argument, the (height, width) it is converted for) for a covered family."""
    if family_id == "florence2":
        # DaViT has no image size of its own: the processor's fixed resize is what it sees.
        size = getattr(processor, "image_processor", processor).size
        return model.model, "vision_tower", None, (int(size["height"]), int(size["width"]))
    side = int(model.config.vision_config.image_size)
    if family_id == "blip":
        return model, "vision_model", None, (side, side)
    # Idefics3 / SmolVLM: the SigLIP tower of the inner model, called with a patch mask.
    return model.model, "vision_model", "patch_attention_mask", (side, side)


def _traceable(tower: Any, mask_arg: str | None) -> Any:
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            if mask_arg is None:
                return self.tower(pixel_values).last_hidden_state
            patch = int(tower.config.patch_size)
            full = torch.ones(pixel_values.shape[0], pixel_values.shape[2] // patch, pixel_values.shape[3] // patch,
                              dtype=torch.bool)
            return self.tower(pixel_values=pixel_values, **{mask_arg: full}).last_hidden_state

    return LastHidden().eval()


# --------------------------------------------------------------------------- Qwen2-VL


def _qwen_one_image(visual: Any) -> Any:
    """Qwen2-VL's tower for the patches of one image, the rotary cos/sin given: one image
    attends to itself only, so the per-image split of transformers' attention (a Python
    list of lengths, which a trace would freeze) becomes plain attention over the sequence."""
    import torch
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    def attention(attn: Any, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        length = hidden_states.shape[0]
        q, k, v = attn.qkv(hidden_states).reshape(length, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=attn.scaling)
        return attn.proj(out.squeeze(0).transpose(0, 1).reshape(length, -1))

    class OneImage(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = visual

        def forward(self, patches: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            hidden = self.visual.patch_embed(patches)
            for block in self.visual.blocks:
                hidden = hidden + attention(block.attn, block.norm1(hidden), cos, sin)
                hidden = hidden + block.mlp(block.norm2(hidden))
            return self.visual.merger(hidden)

    return OneImage().eval()


def _qwen_tower_module() -> type:
    import torch

    class OpenVINOQwenVisionTower(torch.nn.Module):
        """Stands in for Qwen2-VL's ``visual``: each image's patches through the compiled
        model (its rotary positions computed by the original tower on torch), so an
        image's features never depend on its batch-mates."""

        def __init__(self, compiled: Any, xml: Path, fallback: Any) -> None:
            super().__init__()
            self.compiled = compiled
            self.xml = xml
            self.config = fallback.config
            self.spatial_merge_size = fallback.spatial_merge_size
            self.dtype = torch.float32
            self._fallback = [fallback]  # a list, so its weights are not this module's parameters

        def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs: Any) -> Any:
            from transformers.modeling_outputs import BaseModelOutputWithPooling
            from transformers.vision_utils import get_vision_position_ids

            tower = self._fallback[0]
            if kwargs:  # output_hidden_states and the like: what was converted does not return them
                return tower(hidden_states, grid_thw=grid_thw, **kwargs)
            request = self.compiled.create_infer_request()
            merged, start = [], 0
            for grid in grid_thw:
                length = int(grid.prod())
                positions = get_vision_position_ids(grid[None], self.spatial_merge_size)
                cos, sin = tower.rotary_pos_emb(hidden_states[:0].float(), positions)
                patches = hidden_states[start : start + length].detach().float().contiguous()
                result = request.infer([patches.numpy(), cos.contiguous().numpy(), sin.contiguous().numpy()])
                merged.append(torch.from_numpy(result[self.compiled.output(0)].copy()))
                start += length
            return BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=torch.cat(merged))

    return OpenVINOQwenVisionTower


def _convert_qwen(visual: Any) -> Any:
    import openvino
    import torch
    from transformers.vision_utils import get_vision_position_ids

    grid = torch.tensor([[1, 4, 4]])
    patches = torch.zeros(16, visual.patch_embed.in_channels * visual.patch_embed.temporal_patch_size
                          * visual.patch_embed.patch_size ** 2)
    cos, sin = visual.rotary_pos_emb(patches[:0], get_vision_position_ids(grid, visual.spatial_merge_size))
    with torch.no_grad():
        return openvino.convert_model(_qwen_one_image(visual), example_input=(patches, cos, sin),
                                      input=[openvino.PartialShape([-1, patches.shape[1]]),
                                             openvino.PartialShape([-1, cos.shape[1]]),
                                             openvino.PartialShape([-1, sin.shape[1]])])


def _drop_old_layout(slot_dir: Path) -> None:
    """Remove a converter-1 slot's files (its part sat at the slot's top level)."""
    for name in ("key.json", "vision.xml", "vision.bin"):
        (slot_dir / name).unlink(missing_ok=True)


def _compiled(slot_dir: Path, key: dict[str, Any], name: str, convert: Any, progress: Any, model_ref: str,
              precision: str = "f32") -> tuple[Any, Path]:
    """The part *name* converted (or cached) and compiled for the CPU with inference
    *precision* (``f32`` or ``bf16``), or the load's one ``ModelLoadError``."""
    import openvino
    import torch

    try:
        xml = _cached_or_converted(slot_dir / name, key, name, convert, progress)
        core = openvino.Core()
        # The torch thread budget (a Ray actor's share of the cores), not every core of the machine.
        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        return core.compile_model(core.read_model(str(xml)), "CPU", config), xml
    except Exception as exc:  # a conversion or cache failure is this load's one error line
        detail = " ".join(str(exc).split())[:200]
        raise ModelLoadError(f"The OpenVINO runtime could not prepare this model ({type(exc).__name__}: {detail}); "
                             "use --runtime torch.", kind="runtime", model=model_ref) from exc


def _blip_text(model: Any, tower: Any, slot_dir: Path, key: Any, weights: str, progress: Any, model_ref: str,
               calibration_pixels: Any) -> None:
    """BLIP's text decoder on OpenVINO (:mod:`.openvino_blip_text`): the cross projection and the step."""
    from .openvino_blip_text import convert_cross, convert_step, install_blip_text
    from .openvino_int8 import CALIBRATION, int8_static, int8_weights

    def cross() -> Any:
        if weights != "int8":
            return convert_cross(model)
        # Calibrated on what it will see: the int8 tower's output for the generated photos.
        embeds = tower([calibration_pixels()])[tower.output(0)]
        return int8_static(convert_cross(model), embeds)

    def step() -> Any:
        return int8_weights(convert_step(model)) if weights == "int8" else convert_step(model)

    cross_options = {"part": "text-cross", "precision": "f32", "weights": weights}
    if weights == "int8":
        cross_options.update(activations="int8", calibration=CALIBRATION)
    cross_compiled, cross_xml = _compiled(slot_dir, key(cross_options), "text-cross", cross, progress, model_ref)
    step_options = {"part": "text-step", "precision": "f32", "weights": weights}
    step_compiled, step_xml = _compiled(slot_dir, key(step_options), "text-step", step, progress, model_ref)
    install_blip_text(model, cross_compiled, step_compiled, (cross_xml, step_xml))


def apply_openvino(model: Any, *, family: ModelFamily, model_ref: str, revision: str | None,
                   adapter: dict[str, Any] | None, progress: Any, weights: str = "fp32", precision: str = "f32",
                   processor: Any = None, convert_text: bool = True) -> Any:
    """Replace *model*'s vision tower (fp32, adapters merged) by its compiled OpenVINO
    conversion, and for the families of :data:`LANGUAGE_FAMILIES` its language model and LM
    head too, and BLIP's text decoder unless *convert_text* is false (neither with *precision*
    ``"bf16"``), their weights in int8 (NNCF) when *weights*
    is ``"int8"``, converting each part once per cache key; with *precision* ``"bf16"`` the
    tower computes in bf16 and the rest of the model is cast to bf16.  Returns the model."""
    import openvino
    import torch

    from .openvino_int8 import (
        CALIBRATION,
        STATIC_INT8_FAMILIES,
        calibration_pixels,
        int8_static,
        int8_weights,
        qwen_calibration,
    )
    from .openvino_language import LANGUAGE_FAMILIES, convert_language, install_language, language_unconvertible

    if family.id not in OPENVINO_FAMILIES:
        raise ModelLoadError(f"The OpenVINO runtime does not cover {family.id} models.", kind="runtime",
                             model=model_ref)
    if weights not in ("fp32", "int8"):
        raise ValueError(f"weights must be fp32 or int8, got {weights!r}")
    if precision not in ("f32", "bf16"):
        raise ValueError(f"precision must be f32 or bf16, got {precision!r}")
    if family.id == "qwen2-vl":  # any image size: one image per call
        owner, attribute, mask_arg, (height, width) = model.model, "visual", None, (-1, -1)
    else:
        owner, attribute, mask_arg, (height, width) = _tower_parts(model, family.id, processor)
    tower = getattr(owner, attribute)
    slot_dir = cache_root(model_ref) / _slot(model_ref, adapter, weights, precision)
    _drop_old_layout(slot_dir)

    def key(options: dict[str, Any]) -> dict[str, Any]:
        return cache_key(model_ref=model_ref, revision=revision, adapter=adapter, options=options)

    def convert() -> Any:
        if family.id == "qwen2-vl":
            ov_model = _convert_qwen(tower)
        else:
            with torch.no_grad():
                ov_model = openvino.convert_model(_traceable(tower, mask_arg),
                                                  example_input=torch.zeros(1, 3, height, width),
                                                  input=[openvino.PartialShape([-1, 3, height, width])])
        if weights == "int8" and static_int8:
            samples = (qwen_calibration(tower, processor) if family.id == "qwen2-vl"
                       else calibration_pixels(processor, (height, width)))
            return int8_static(ov_model, samples)
        return int8_weights(ov_model) if weights == "int8" else ov_model

    static_int8 = family.id in STATIC_INT8_FAMILIES
    options = {"part": "vision", "precision": precision, "weights": weights, "image_size": [height, width]}
    if weights == "int8" and static_int8:
        options.update(activations="int8", calibration=CALIBRATION)
    compiled, xml = _compiled(slot_dir, key(options), "vision", convert, progress, model_ref, precision)
    why_not = None
    if family.id in LANGUAGE_FAMILIES:
        why_not = ("openvino-bf16 keeps it on torch in bf16" if precision == "bf16"
                   else language_unconvertible(model, family.id))
    if why_not:
        progress(f"The language model stays on torch: {why_not}")
    elif family.id in LANGUAGE_FAMILIES:
        def convert_lm() -> Any:
            ov_model = convert_language(model, family.id)
            return int8_weights(ov_model) if weights == "int8" else ov_model

        lm_options = {"part": "language", "precision": "f32", "weights": weights}
        lm_compiled, lm_xml = _compiled(slot_dir, key(lm_options), "language", convert_lm, progress, model_ref)
        install_language(model, family.id, lm_compiled, lm_xml)
    if family.id == "blip" and convert_text and precision != "bf16":
        _blip_text(model, compiled, slot_dir, key, weights, progress, model_ref,
                   lambda: calibration_pixels(processor, (height, width)))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if family.id == "qwen2-vl":
        setattr(owner, attribute, _qwen_tower_module()(compiled, xml, tower))
    else:
        setattr(owner, attribute, _tower_module()(compiled, xml, tower, mask_arg=mask_arg, size=(height, width),
                                                  dtype=dtype))
    if dtype != torch.float32:
        # What a checkpoint holds, as from_pretrained(dtype=...) casts it: computed buffers
        # (rotary inv_freq) keep fp32; the replaced tower's weights sit outside the module tree.
        saved = set(model.state_dict())
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point() and name in saved:
                tensor.data = tensor.data.to(dtype)
    return model
