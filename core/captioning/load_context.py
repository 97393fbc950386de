"""How a model family loads its model: :class:`LoadContext`, and the failures it maps.

:func:`core.captioning.registry.load_captioner` picks the family and builds a
:class:`LoadContext`; the family's :meth:`~core.captioning.families.base.ModelFamily.load`
builds model and processor through it, so every failure becomes one readable
:class:`~core.captioning.errors.ModelLoadError`, and :meth:`LoadContext.finish` merges the
optional adapter and applies the speed optimisations.  The family is seen through
:class:`LoadingFamily`, so this module sits below the families that import it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .captioner import CaptionerFamily
from .errors import ModelLoadError
from .hub import approximate_size
from .optimize import OptimizableFamily

if TYPE_CHECKING:
    import torch

    from .captioner import HFCaptioner
    from .optimize import OptimizationPlan

__all__ = ["LoadContext", "LoadingFamily"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str], None]

#: Checkpoint with this fraction of weights missing is refused (instead of
#: running with random weights); smaller gaps are logged.
_MISSING_WEIGHTS_LIMIT = 0.05


class LoadingFamily(CaptionerFamily, OptimizableFamily, Protocol):
    """What loading needs of the model family it loads for (a captioner's family whose
    model the optimisations may patch)."""


def _needs_remote_code(exc: BaseException) -> bool:
    """Whether transformers refused *exc*'s model because it would have to run the model's own code."""
    return "trust_remote_code" in str(exc)


# --------------------------------------------------------------------------- error helpers


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        chain.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return chain


def _hub_error_kind(exc: BaseException) -> str | None:
    """Classify a hub failure: ``"not_cached"``, ``"not_found"``, ``"gated"``, ``"network"`` or None."""
    names = {type(e).__name__ for e in _exception_chain(exc)}
    if "GatedRepoError" in names:
        return "gated"
    if names & {"RepositoryNotFoundError", "RevisionNotFoundError"}:
        return "not_found"
    if names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}:
        return "not_cached"
    if names & {"ConnectError", "ConnectTimeout", "ReadTimeout", "ConnectionError", "gaierror", "HfHubHTTPError"}:
        return "network"
    return None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- load context


@dataclass
class LoadContext:
    """Everything a family loader needs, plus helpers that turn failures into ``ModelLoadError``.

    Attributes:
        model: What the user asked for (folder or hub id), for messages.
        ref: What is passed to ``from_pretrained`` (absolute folder path or hub id).
        is_local: Whether ``ref`` is a local folder.
        config: The loaded transformers config.
        family: The model family chosen for ``config.model_type``.
        device, dtype: Where and in which precision to run.
        adapter: Optional PEFT adapter folder (or hub id).
        plan: Load dtype and optimisations (from :func:`.optimize.plan_optimizations`).
        hub_kwargs: Extra ``from_pretrained`` kwargs (``local_files_only``).
        model_kwargs: Extra ``from_pretrained`` kwargs for the model weights only
            (e.g. ``quantization_config`` + ``device_map`` for QLoRA training).
    """

    model: str
    ref: str
    is_local: bool
    config: Any
    family: LoadingFamily
    device: torch.device
    dtype: torch.dtype
    adapter: str | None
    plan: OptimizationPlan
    progress: ProgressCallback
    hub_kwargs: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: "torch" or an OpenVINO runtime (resolved by :func:`.openvino_runtime.resolve_runtime`).
    runtime: str = "torch"

    # -- failures ----------------------------------------------------------

    def fail(self, exc: BaseException, what: str) -> ModelLoadError:
        """Map an exception raised while loading ``what`` to a ModelLoadError."""
        if isinstance(exc, ModelLoadError):
            return exc
        if _needs_remote_code(exc):
            return ModelLoadError.remote_code(self.model, getattr(self.config, "model_type", None))
        if not self.is_local:
            kind = _hub_error_kind(exc)
            if kind is not None:
                return _hub_failure(self.model, kind, exc)
        names = {type(e).__name__ for e in _exception_chain(exc)}
        if "SafetensorError" in names or "HeaderTooLarge" in names or "UnpicklingError" in names:
            problem = f"the weights file is incomplete or corrupt ({_short(exc, 160)}); copy or download it again"
        elif isinstance(exc, OSError) and "no file named" in str(exc):
            problem = "no weights file (model.safetensors or pytorch_model.bin) was found"
        elif self.is_local and (missing := _missing_processor_files(Path(self.ref))):
            problem = f"{' and '.join(missing)} missing; copy them from the original model"
        else:
            problem = f"loading the {what} failed: {_short(exc)}"
        where = self.ref if self.is_local else f"{self.model} (in the Hugging Face cache)"
        return ModelLoadError.bad_folder(where, problem)

    # -- loading helpers -------------------------------------------------------

    def load_model(self, model_cls: Any, **kwargs: Any) -> Any:
        """``model_cls.from_pretrained`` in eval mode on the target device, with checks."""
        self.progress(f"Loading model weights for {self.model}")
        try:
            model, info = model_cls.from_pretrained(
                self.ref, dtype=self.dtype, output_loading_info=True, **self.hub_kwargs, **self.model_kwargs,
                **kwargs,
            )
        except Exception as exc:  # every failure becomes a readable error
            raise self.fail(exc, "model weights") from exc
        _check_loading_info(self, model, info)
        if "device_map" in self.model_kwargs:  # placed while loading (quantized models cannot be moved)
            return model.eval()
        return model.to(self.device).eval()

    def load_pretrained(self, loader: Any, what: str, **kwargs: Any) -> Any:
        """``loader.from_pretrained(ref)`` for processors/tokenizers, with error mapping."""
        if getattr(loader, "__name__", "").startswith("Auto"):
            kwargs.setdefault("trust_remote_code", False)  # None would ask on a terminal
        try:
            return loader.from_pretrained(self.ref, **self.hub_kwargs, **kwargs)
        except Exception as exc:
            raise self.fail(exc, what) from exc

    def finish(self, captioner_cls: type[HFCaptioner], model: Any, processor: Any, tokenizer: Any) -> HFCaptioner:
        """Apply the adapter and the optimisations, then build the captioner."""
        from . import optimize as opt

        adapter_identity = None
        if self.adapter is not None:
            model, adapter_identity = _apply_adapter(self, model)
        revision = _revision(self)
        runtime_names = []
        plan = self.plan
        dtype = self.dtype
        if self.runtime != "torch":
            from dataclasses import replace

            from .openvino_runtime import (
                OPENVINO_PRECISION,
                OPENVINO_WEIGHTS,
                apply_openvino,
                runtime_dtype,
                text_stays_on_torch,
            )

            # The fp32 weights are converted first; an explicit optimize list then applies to
            # what stays on torch (with "int8", BLIP's text decoder stays there for it), and
            # "auto" keeps the runtime's precision: under openvino-int8 a text model left on
            # torch (Florence-2's) runs the engine's per-image int8, whatever the family's
            # tower made of int8 on torch (cpu_int8_eligible).
            model = apply_openvino(model, family=self.family, model_ref=self.ref, revision=revision,
                                   adapter=adapter_identity, progress=self.progress,
                                   weights=OPENVINO_WEIGHTS[self.runtime],
                                   precision=OPENVINO_PRECISION[self.runtime], processor=processor,
                                   convert_text=plan.auto or not plan.int8)
            runtime_names = [self.runtime]
            dtype = runtime_dtype(self.runtime)
            if plan.auto:
                int8_text = self.runtime == "openvino-int8" and text_stays_on_torch(self.family.id)
                plan = replace(plan, int8=int8_text, auto=not int8_text)
        applied = opt.apply_optimizations(model, family=self.family, plan=plan, progress=self.progress)
        applied.names[:0] = runtime_names
        model = applied.model
        identity = {
            "model": self.ref if self.is_local else self.model,
            "revision": revision,
            "adapter": adapter_identity,
            "device": str(self.device),
            "dtype": str(dtype).removeprefix("torch."),
            "runtime": self.runtime,
        }
        return captioner_cls(model, processor, tokenizer, identity=identity, family=self.family, device=self.device,
                             dtype=dtype, optimizations=applied.names)


def _missing_processor_files(folder: Path) -> list[str]:
    """What a local model folder lacks to build its processor (empty if it looks complete)."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    missing = []
    has_image_processor = "preprocessor_config.json" in names or "processor_config.json" in names
    if not has_image_processor:
        missing.append("the image processor config (preprocessor_config.json) is")
    tokenizer_files = {"tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                       "tokenizer.model"}
    if not names & tokenizer_files:
        missing.append("the tokenizer files (tokenizer.json / tokenizer_config.json) are")
    return missing


def _hub_failure(model_id: str, kind: str, exc: BaseException) -> ModelLoadError:
    if kind == "not_found":
        return ModelLoadError(
            f"There is no model '{model_id}' on the Hugging Face Hub and no local folder with that name. "
            "Check the spelling, or point --model at a local folder containing the model.",
            kind="not_downloaded", model=model_id,
        )
    if kind == "gated":
        return ModelLoadError(
            f"The model '{model_id}' is gated on the Hugging Face Hub: accept its licence on the website and log in "
            "with `hf auth login`, or point --model at a local folder containing the model.",
            kind="not_downloaded", model=model_id,
        )
    detail = None if kind == "not_cached" else _short(exc, 200)
    return ModelLoadError.not_downloaded(model_id, detail, approximate_size(model_id))


def _check_loading_info(ctx: LoadContext, model: Any, info: dict[str, Any]) -> None:
    """Refuse checkpoints whose weights do not fit the config (they would caption with random weights)."""
    mismatched = list(info.get("mismatched_keys") or [])
    missing = sorted(info.get("missing_keys") or [])
    total = max(1, len(model.state_dict()))
    where = ctx.ref if ctx.is_local else ctx.model
    if mismatched:
        raise ModelLoadError.bad_folder(
            where, f"{len(mismatched)} weight tensor(s) have the wrong shape for config.json "
                   f"(e.g. {mismatched[0]}); the weights belong to a different model")
    if missing and len(missing) / total > _MISSING_WEIGHTS_LIMIT:
        raise ModelLoadError.bad_folder(
            where, f"{len(missing)} of {total} weight tensors are missing from the weights file "
                   f"(e.g. {', '.join(missing[:3])}); it does not match config.json")
    if missing:
        log.warning("%s: %d weight tensor(s) missing, randomly initialised: %s", where, len(missing), missing[:10])


def _revision(ctx: LoadContext) -> str | None:
    """Short revision: the hub commit hash, or a hash of a local folder's config + weights index."""
    if not ctx.is_local:
        commit = getattr(ctx.config, "_commit_hash", None)
        return str(commit)[:12] if commit else None
    folder = Path(ctx.ref)
    digest = hashlib.sha256()
    found = False
    # Hashing gigabytes of weights at every start would be slow; config.json
    # plus the weight files' names and sizes identifies a checkpoint well enough.
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        if path.is_file():
            digest.update(path.read_bytes())
            found = True
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:12] if found else None


def _apply_adapter(ctx: LoadContext, model: Any) -> tuple[Any, dict[str, Any]]:
    """Load a PEFT (LoRA) adapter onto ``model`` and merge it into the weights.

    Merging (``merge_and_unload``) makes inference exactly as fast as the base
    model and lets int8 quantization see plain ``nn.Linear`` layers.
    """
    adapter = ctx.adapter
    assert adapter is not None
    path = Path(adapter).expanduser()
    looks_like_path = path.is_absolute() or adapter.startswith((".", "~")) or path.exists()
    if looks_like_path:
        _check_adapter_folder(adapter, ctx.model)
        source = str(path.resolve())
        try:
            adapter_cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError.bad_adapter(adapter, f"adapter_config.json is unreadable: {_short(exc)}",
                                             model=ctx.model) from exc
        if not isinstance(adapter_cfg, dict):
            raise ModelLoadError.bad_adapter(adapter, "adapter_config.json is not a JSON object", model=ctx.model)
    else:
        source = adapter
        adapter_cfg = {}
    ctx.progress(f"Applying adapter {adapter}")
    try:
        from peft import PeftModel

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            peft_model = PeftModel.from_pretrained(model, source, is_trainable=False)
        for warning in caught:
            text = str(warning.message)
            if "missing adapter keys" in text:
                # peft only *warns* when none/some of the adapter's tensors
                # match the model (e.g. a BLIP adapter on a GIT model whose
                # layers share the names "query"/"value"); the result is a
                # silent no-op adapter, so refuse it.
                count = text.count("lora_") or text.count("', '") + 1
                raise ModelLoadError.bad_adapter(
                    adapter, f"it does not fit this model: {count} of its weight tensors have no matching layer "
                             "(was it trained for a different base model?)", model=ctx.model)
            if "is_gradient_checkpointing" in text:
                continue  # peft calling a deprecated transformers property; nothing a user can act on
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        merged = peft_model.merge_and_unload()
    except ModelLoadError:
        raise
    except Exception as exc:
        if not looks_like_path and _hub_error_kind(exc) is not None:
            raise ModelLoadError.bad_adapter(
                adapter, "it is not a local folder and could not be fetched from the Hugging Face Hub "
                         f"({_short(exc, 160)})", model=ctx.model) from exc
        raise ModelLoadError.bad_adapter(
            adapter, f"it does not fit this model ({type(exc).__name__}: {_short(exc, 240)})",
            model=ctx.model) from exc
    identity: dict[str, Any] = {"path": source}
    weights = path / "adapter_model.safetensors" if looks_like_path else None
    if weights is not None and weights.is_file():
        identity["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    if adapter_cfg.get("base_model_name_or_path"):
        identity["base_model"] = adapter_cfg["base_model_name_or_path"]
    return merged.to(ctx.device).eval(), identity


def _check_adapter_folder(adapter: str, model: str) -> None:
    """The cheap part of :func:`_apply_adapter`'s checks: a path-like adapter must be an adapter folder."""
    path = Path(adapter).expanduser()
    if not (path.is_absolute() or adapter.startswith((".", "~")) or path.exists()):
        return  # a hub id: peft resolves it when loading
    if not path.is_dir():
        raise ModelLoadError.bad_adapter(adapter, "the folder does not exist", model=model)
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError.bad_adapter(
            adapter, "it has no adapter_config.json, so it is not a PEFT/LoRA adapter folder", model=model)
