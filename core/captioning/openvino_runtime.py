"""The OpenVINO runtime for CPU captioning: which runtime a load uses, and BLIP's vision
tower converted with ``openvino.convert_model``, cached beside the model.

``runtime="torch"`` is the PyTorch path of :mod:`core.captioning.optimize`.
``runtime="openvino"`` loads the model in fp32 (adapters merged first), converts its
vision tower to an OpenVINO model (compiled for the CPU with fp32 inference precision,
because OpenVINO would otherwise run bf16 on CPUs that have it and change the captions)
and leaves the text decoder and ``generate`` to transformers, so greedy and beam search,
scores, batching, resume and cancel are the torch path's own, and the captions are the
torch fp32 captions.  An explicit ``optimize`` list applies to the torch part (``"int8"``:
the text decoder in per-image int8, captions independent of batch-mates); ``"auto"``
keeps it fp32.  ``runtime="auto"`` picks
OpenVINO only for the families in :data:`AUTO_OPENVINO_FAMILIES` (measured faster with
the same captions, see ``benchmarks/caption_model_speed.py --runtime all``), on the CPU,
when the package is installed; torch otherwise.  Training always runs on torch.

The converted model is cached in ``.captiondesk-openvino/<slot>/`` inside a local model
folder (a user cache folder for hub models or a read-only folder), one slot per model and
adapter; its ``key.json`` names the model, its weights' sizes and times, the adapter, the
versions and the options, and a different key converts again in place of the old one.
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
    "AUTO_OPENVINO_FAMILIES",
    "OPENVINO_FAMILIES",
    "RUNTIMES",
    "apply_openvino",
    "cache_root",
    "openvino_available",
    "resolve_runtime",
]

#: Families with an OpenVINO converter here.
OPENVINO_FAMILIES: frozenset[str] = frozenset({"blip"})
#: Families ``auto`` runs on OpenVINO: only where it was faster with the same captions
#: (docs/optimization-notes.md, "OpenVINO runtime").
AUTO_OPENVINO_FAMILIES: frozenset[str] = frozenset({"blip"})
#: Bumped when the conversion itself changes, so old caches are converted again.
CONVERTER_VERSION = 1
CACHE_DIR_NAME = ".captiondesk-openvino"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")


def openvino_available() -> bool:
    """Whether the optional ``openvino`` package is installed (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(runtime: str, family: ModelFamily, device: torch.device, *, model: str | None = None) -> str:
    """``"torch"`` or ``"openvino"`` for this load; ``ModelLoadError`` when openvino was
    asked for and cannot run (not installed, not the CPU, a family it does not cover)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        return "torch"
    if runtime == "auto":
        usable = device.type == "cpu" and family.id in AUTO_OPENVINO_FAMILIES and openvino_available()
        return "openvino" if usable else "torch"
    if not openvino_available():
        raise ModelLoadError("The OpenVINO runtime needs the openvino package, which is not installed: "
                             "pip install 'captiondesk[openvino]', or use --runtime torch.",
                             kind="runtime", model=model)
    if device.type != "cpu":
        raise ModelLoadError(f"The OpenVINO runtime runs on the CPU only, not on {device}; use --runtime torch "
                             "or --device cpu.", kind="runtime", model=model)
    if family.id not in OPENVINO_FAMILIES:
        raise ModelLoadError(f"The OpenVINO runtime does not cover {family.id} models yet (only "
                             f"{', '.join(sorted(OPENVINO_FAMILIES))}); use --runtime torch.",
                             kind="runtime", model=model)
    return "openvino"


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


def _slot(model_ref: str, adapter: dict[str, Any] | None) -> str:
    """One cache folder per model and adapter folder, so retrained weights replace the old conversion."""
    text = json.dumps([model_ref, (adapter or {}).get("path")], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_CONVERT_LOCK = threading.Lock()


def _cached_or_converted(slot_dir: Path, key: dict[str, Any], name: str, convert: Any, progress: Any) -> Path:
    """The ``name.xml`` in *slot_dir* for *key*, converting (and replacing the slot) when
    the stored key differs or the files are missing."""
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


# --------------------------------------------------------------------------- BLIP vision tower


def _vision_tower_module() -> type:
    import torch

    class OpenVINOVisionTower(torch.nn.Module):
        """Stands in for BLIP's ``vision_model``: the compiled OpenVINO model's last hidden state."""

        def __init__(self, compiled: Any, config: Any, xml: Path) -> None:
            super().__init__()
            self.compiled = compiled
            self.config = config
            self.xml = xml

        def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                    **_kwargs: Any) -> Any:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            if interpolate_pos_encoding:
                raise ValueError("the OpenVINO vision tower was converted for one image size")
            # One infer request per call: requests are not shared between threads.
            request = self.compiled.create_infer_request()
            result = request.infer([pixel_values.detach().float().contiguous().numpy()])
            hidden = torch.from_numpy(result[self.compiled.output(0)].copy())
            return BaseModelOutputWithPooling(last_hidden_state=hidden)

    return OpenVINOVisionTower


def apply_openvino(model: Any, *, family: ModelFamily, model_ref: str, revision: str | None,
                   adapter: dict[str, Any] | None, progress: Any) -> Any:
    """Replace *model*'s vision tower (fp32, adapters merged) by its compiled OpenVINO
    conversion, converting once per cache key; returns the model."""
    import openvino
    import torch

    if family.id not in OPENVINO_FAMILIES:
        raise ModelLoadError(f"The OpenVINO runtime does not cover {family.id} models.", kind="runtime",
                             model=model_ref)
    vision = model.vision_model
    side = int(model.config.vision_config.image_size)
    options = {"part": "vision", "precision": "f32", "image_size": side}
    key = cache_key(model_ref=model_ref, revision=revision, adapter=adapter, options=options)
    slot_dir = cache_root(model_ref) / _slot(model_ref, adapter)

    def convert() -> Any:
        class LastHidden(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.vision = vision

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                return self.vision(pixel_values=pixel_values).last_hidden_state

        example = torch.zeros(1, 3, side, side)
        with torch.no_grad():
            return openvino.convert_model(LastHidden().eval(), example_input=example,
                                          input=[openvino.PartialShape([-1, 3, side, side])])

    try:
        xml = _cached_or_converted(slot_dir, key, "vision", convert, progress)
        core = openvino.Core()
        compiled = core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as exc:  # a conversion or cache failure is this load's one error line
        detail = " ".join(str(exc).split())[:200]
        raise ModelLoadError(f"The OpenVINO runtime could not prepare this model ({type(exc).__name__}: {detail}); "
                             "use --runtime torch.", kind="runtime", model=model_ref) from exc
    model.vision_model = _vision_tower_module()(compiled, model.config.vision_config, xml)
    return model
