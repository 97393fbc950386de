"""Load a captioning model from a local folder or a Hugging Face hub id.

:func:`load_captioner` is the single entry point.  It

1. resolves ``model``: an existing local folder wins; otherwise it is a hub
   id, looked up **cache first** (``local_files_only=True``) so that a model
   that was downloaded once loads instantly and without network access (a
   cached model on an offline machine would otherwise wait out the hub's
   retries).  Only when it is not cached, and network use is allowed, is it
   downloaded into the standard Hugging Face cache;
2. reads the config and picks the :class:`~.families.base.ModelFamily` for its
   ``model_type`` (:func:`~.families.family_for_model_type`; anything else that
   ``AutoModelForImageTextToText`` can load goes to the generic family);
3. lets the family build model + processor through a
   :class:`~.load_context.LoadContext`, which maps every failure to a
   :class:`~core.captioning.errors.ModelLoadError` with a readable message,
   applies the optional PEFT adapter (merged into the weights) and then the
   speed optimisations from :mod:`core.captioning.optimize`.

Family modules import transformers only inside their methods, so importing
:mod:`core.captioning` does not import torch or transformers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.allocator import keep_freed_memory

from .device import resolve_device
from .errors import ModelLoadError
from .hub import approximate_size, hub_endpoint, hub_unreachable
from .load_context import (
    LoadContext,
    _check_adapter_folder,
    _hub_error_kind,
    _hub_failure,
    _missing_processor_files,
    _needs_remote_code,
    _short,
)

if TYPE_CHECKING:

    from .captioner import HFCaptioner
    from .families.base import ModelFamily

__all__ = ["ResolvedModel", "family_hint", "load_captioner", "read_model_family", "resolve_model"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str], None]



# --------------------------------------------------------------------------- resolution


def _looks_like_path(model: str) -> bool:
    """True for things that can only be a filesystem path (not a hub id like ``org/name``)."""
    return (
        model.startswith((".", "~", "/", "\\"))
        or (len(model) > 1 and model[1] == ":")  # Windows drive letter
        or model.count("/") > 1
        or "\\" in model
    )


def _read_local_config_json(folder: Path) -> dict[str, Any]:
    """A model folder's config.json as a dict with a ``model_type`` (no transformers import)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError.bad_folder(
            folder, "there is no config.json in it. Point --model at the folder that contains config.json "
                    "and the weights (e.g. model.safetensors) of a Hugging Face model")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError.bad_folder(folder, f"config.json is not valid JSON ({_short(exc, 120)})") from exc
    if not isinstance(raw, dict) or not raw.get("model_type"):
        raise ModelLoadError.bad_folder(folder, "config.json has no 'model_type', so the architecture is unknown")
    return raw


def _read_local_config(folder: Path, model: str) -> Any:
    raw = _read_local_config_json(folder)
    from transformers import AutoConfig

    try:
        # False, not the default None: None asks "run the custom code? [y/N]" on a terminal.
        return AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:
        if _needs_remote_code(exc):
            raise ModelLoadError.remote_code(folder, raw.get("model_type")) from exc
        if isinstance(exc, (KeyError, ValueError)) and "does not recognize this architecture" in str(exc):
            raise ModelLoadError.bad_folder(
                folder, f"its model_type '{raw.get('model_type')}' is not known to the installed transformers "
                        "(it may need a newer version)") from exc
        raise ModelLoadError.bad_folder(folder, f"config.json could not be read ({_short(exc)})") from exc


def _read_hub_config(model_id: str, hub_kwargs: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id, trust_remote_code=False, **hub_kwargs)
    except Exception as exc:
        if _needs_remote_code(exc):
            raise ModelLoadError.remote_code(model_id, None) from exc
        kind = _hub_error_kind(exc)
        if kind is not None:
            raise _hub_failure(model_id, kind, exc) from exc
        raise ModelLoadError(f"The configuration of '{model_id}' could not be read: {_short(exc)}",
                             kind="bad_model", model=model_id) from exc


def _family_for(config: Any, model: str) -> ModelFamily:
    from .families import FAMILIES, GENERIC_FAMILY_ID, family_for_model_type

    model_type = getattr(config, "model_type", None)
    family = family_for_model_type(model_type)
    if family is not None:
        return family
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return FAMILIES[GENERIC_FAMILY_ID]
    known = [t for f in FAMILIES.values() for t in f.model_types]
    raise ModelLoadError.unsupported(model, model_type,
                                     [*known, "other AutoModelForImageTextToText types (Florence-2, SmolVLM, ...)"])


def family_hint(model: str | Path) -> ModelFamily | None:
    """The family of *model* read from its config.json without loading it, or None when unknown.

    Cheap and offline, for showing family-specific settings before a load (the train
    dialog's LoRA defaults): a local folder's config.json, else the Hugging Face cache's
    copy (no network).  None when neither is there, the file is unreadable or the
    ``model_type`` belongs to no family.
    """
    from .families import family_for_model_type

    text = str(model).strip()
    if not text:
        return None
    folder = Path(text).expanduser()
    config_path: Path | None = folder / "config.json" if folder.is_dir() else None
    if config_path is None and not _looks_like_path(text):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(text, "config.json")
        except Exception:  # noqa: BLE001 - an odd id or cache layout: simply unknown
            cached = None
        config_path = Path(cached) if isinstance(cached, str) else None
    if config_path is None or not config_path.is_file():
        return None
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return family_for_model_type(raw.get("model_type")) if isinstance(raw, dict) else None


def check_model_without_loading(model: str | Path, adapter: str | Path | None = None) -> None:
    """Raise :class:`ModelLoadError` when *model* (and *adapter*) cannot be resolved.

    Fast and offline: no weights, no transformers import, no network round trip (an
    unreachable hub costs many seconds of retries).  A job with nothing to do calls it so that
    a mistyped ``--model`` is an error now rather than on the next run that has work.
    Accepted: a local folder whose config.json names a ``model_type``; a hub id whose
    config.json is in the Hugging Face cache; or, unless offline mode is on
    (``HF_HUB_OFFLINE``), a well-formed ``org/name`` hub id (captioning models all
    live under an owner; a bare word is far more often a mistyped folder).
    """
    text = str(model).strip()
    folder = Path(text).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise ModelLoadError.bad_folder(folder, "it is a file; --model needs the folder that contains config.json")
        _read_local_config_json(folder)
    elif _looks_like_path(text) or not text:
        raise ModelLoadError(f"The model folder '{text}' does not exist (looked for {folder.resolve()}).",
                             kind="bad_model", model=text)
    else:
        from huggingface_hub import constants, try_to_load_from_cache
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(text)
            cached = try_to_load_from_cache(text, "config.json")
        except HFValidationError:
            cached = None
            text_ok = False
        else:
            text_ok = "/" in text
        if not isinstance(cached, str):
            if not text_ok:
                from .job_spec import DEFAULT_MODEL

                raise ModelLoadError(
                    f"There is no model folder '{text}' and it is not a Hugging Face hub id (those look like "
                    f"org/name, e.g. {DEFAULT_MODEL}); check the spelling of --model.",
                    kind="bad_model", model=text)
            if constants.HF_HUB_OFFLINE:
                raise ModelLoadError.not_downloaded(text, size=approximate_size(text))
    if adapter is not None:
        _check_adapter_folder(str(adapter), text)


def _require_hub(model_id: str) -> None:
    """Raise at once when a download of *model_id* cannot work: the hub does not answer."""
    reason = hub_unreachable(model_id)
    if reason is not None:
        raise ModelLoadError.not_downloaded(model_id, reason, approximate_size(model_id))


def check_model_obtainable(
    model: str | Path, adapter: str | Path | None = None, report: ProgressCallback | None = None
) -> None:
    """:func:`check_model_without_loading`, and for a hub model not cached here, whether the hub answers.

    For a command about to start work: it says where the model will come from and fails
    within seconds (not after the download's retries) when it cannot come.
    """
    check_model_without_loading(model, adapter)
    text = str(model).strip()
    if Path(text).expanduser().exists():
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(text, "config.json"), str):
        return
    if report is not None:
        report(f"Looking for the model {text}: not in the Hugging Face cache; it is downloaded from "
               f"{hub_endpoint()} on first use ({approximate_size(text)})")
    _require_hub(text)


def read_model_family(model: str | Path) -> tuple[ModelFamily, str | None]:
    """``(family, model_type)`` of *model* from its configuration alone (no weights loaded).

    What a process that prepares work for others needs (the Ray driver renders the
    family's prompts while the actors load the model).  A local folder's config.json, else
    the hub's (cache first).  Raises :class:`ModelLoadError` like :func:`load_captioner`.
    """
    model_str = str(model)
    folder = Path(model_str).expanduser()
    if folder.is_dir():
        config = _read_local_config(folder, model_str)
    else:
        try:
            config = _read_hub_config(model_str, {"local_files_only": True})
        except ModelLoadError as exc:
            if exc.kind != "not_downloaded":
                raise
            _require_hub(model_str)
            config = _read_hub_config(model_str, {"local_files_only": False})
    return _family_for(config, model_str), getattr(config, "model_type", None)


@dataclass(frozen=True)
class ResolvedModel:
    """The model a caption request names, as stored in caption provenance."""

    model_name: str
    adapter: str | None
    model_version_id: int | None
    #: ``(preset, prompt_template)`` a trained version recorded (reused when a request names neither).
    trained_prompt: tuple[str | None, str | None] = (None, None)
    #: The version's confidence calibration (core.captioning.confidence.TokenCalibration.to_dict()).
    score_calibration: dict[str, Any] | None = None
    #: The caption kind a trained version learnt (None: not a version of this library).
    trained_kind: str | None = None


def resolve_model(library: Any, model: str, adapter: str | None, backend: str = "local") -> ResolvedModel:
    """A model-version name in *library* → its base model and adapter; a folder → its
    absolute path.  A server backend's model name is the server's, taken as it is."""
    if backend != "local":
        return ResolvedModel(model, None, None)  # the server's own model name
    from sqlalchemy import select

    from core.models import ModelVersion

    from .prompting import stored_prompt

    with library.db.read() as session:
        version = session.scalar(select(ModelVersion).where(ModelVersion.name == model))
    if version is not None and (version.config or {}).get("target") == "restyler":
        raise ModelLoadError(f"'{model}' is a restyler version (it rewrites captions, it does not caption "
                             f"photos): use it with `restyle --with {model}` or the Caption dialog's restyle choice",
                             kind="unsupported", model=model)
    if version is not None:
        config = version.config or {}
        return ResolvedModel(version.base_model, adapter or version.adapter_path, version.id,
                             stored_prompt(config), config.get("confidence_calibration"),
                             str(config.get("kind") or "caption"))
    if os.path.isdir(model):
        model = str(Path(model).resolve())
    if adapter is not None and os.path.isdir(adapter):
        adapter = str(Path(adapter).resolve())
    return ResolvedModel(model, adapter, None)


def load_captioner(
    model: str | Path | None = None,
    *,
    adapter: str | Path | None = None,
    device: str = "auto",
    optimize: str = "auto",
    progress: ProgressCallback | None = None,
    local_files_only: bool | None = None,
    model_kwargs: dict[str, Any] | None = None,
    runtime: str = "torch",
) -> HFCaptioner:
    """Load a captioning model and return a ready :class:`~core.captioning.captioner.Captioner`.

    Args:
        model: Local model folder or hub id; ``None`` means
            :data:`core.captioning.DEFAULT_MODEL`.
        adapter: Optional PEFT/LoRA adapter folder; merged into the weights.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"mps"``.
        optimize: ``"auto"`` (fastest correct settings for the device),
            ``"none"``, or a comma list of ``sdpa``, ``int8``, ``half``; see
            :mod:`core.captioning.optimize`.
        progress: Called with short human-readable status lines.
        local_files_only: ``True`` never touches the network; ``False``/``None``
            downloads a hub model that is not cached (``HF_HUB_OFFLINE=1``
            still forbids it).
        model_kwargs: Extra ``from_pretrained`` kwargs for the weights, e.g.
            ``quantization_config`` and ``device_map`` (then the model is not moved).
        runtime: ``"torch"``, ``"openvino"``, ``"openvino-bf16"``, ``"openvino-int8"`` (a
            vision tower, for some VLMs the language model too, on OpenVINO on the CPU: fp32,
            bf16 with the text model in bf16 on torch, or int8: the tower's weights and activations,
            the text models' weights) or ``"auto"``; see
            :mod:`core.captioning.openvino_runtime`.

    Raises:
        ModelLoadError: with a message meant for the user.
        ValueError: for an unknown ``device``/``optimize`` value.
    """
    import torch

    from .job_spec import DEFAULT_MODEL
    from .openvino_runtime import RUNTIMES, resolve_runtime
    from .optimize import parse_optimize, plan_optimizations

    report: ProgressCallback = progress or (lambda _msg: None)
    model_str = str(model) if model is not None else DEFAULT_MODEL
    parse_optimize(optimize)  # validate before any slow work
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    dev = resolve_device(device)
    plan = plan_optimizations(optimize, dev)
    if dev.type == "cpu":
        # Reuse freed activation memory instead of re-faulting it every batch
        # (a noticeable share of CPU batch time; see core.allocator).
        keep_freed_memory()
    adapter_str = str(adapter) if adapter is not None else None

    folder = Path(model_str).expanduser()
    is_local = folder.exists()
    if is_local and not folder.is_dir():
        raise ModelLoadError.bad_folder(folder, "it is a file; --model needs the folder that contains config.json")
    if not is_local and _looks_like_path(model_str):
        raise ModelLoadError(f"The model folder '{model_str}' does not exist (looked for {folder.resolve()}).",
                             kind="bad_model", model=model_str)

    attempts: list[dict[str, Any]]
    if is_local:
        attempts = [{}]
    elif local_files_only:
        attempts = [{"local_files_only": True}]
    else:
        # Cache first: no network round trips for a model that is already here.
        attempts = [{"local_files_only": True}, {"local_files_only": False}]

    last_error: ModelLoadError | None = None
    for hub_kwargs in attempts:
        try:
            if is_local:
                report(f"Reading model folder {folder}")
                config = _read_local_config(folder, model_str)
                ref = str(folder.resolve())
            else:
                if hub_kwargs.get("local_files_only") is False:
                    _require_hub(model_str)
                    report(f"Downloading {model_str} from the Hugging Face Hub ({approximate_size(model_str)}; "
                           "first use, this can take a while)")
                else:
                    report(f"Looking for {model_str} in the Hugging Face cache")
                config = _read_hub_config(model_str, hub_kwargs)
                ref = model_str
            family = _family_for(config, model_str)
            chosen_runtime = resolve_runtime(runtime, family, dev, model=model_str)
            if chosen_runtime != "torch" and plan.dtype != torch.float32:
                raise ModelLoadError("The OpenVINO runtime converts the fp32 model; optimize 'half' does not "
                                     "apply to it.", kind="runtime", model=model_str)
            if chosen_runtime == "openvino-bf16" and plan.int8 and not plan.auto:
                raise ModelLoadError("The openvino-bf16 runtime runs the text model in bf16; optimize 'int8' does "
                                     "not apply to it (use --runtime openvino for that).", kind="runtime",
                                     model=model_str)
            if is_local and (missing := _missing_processor_files(folder)):
                # Refuse an incomplete folder up front: transformers would otherwise fall
                # back to a few-token default tokenizer and "caption" with empty strings.
                raise ModelLoadError.bad_folder(
                    folder, f"{' and '.join(missing)} missing; copy them from the original model"
                )
            ctx = LoadContext(model=model_str, ref=ref, is_local=is_local, config=config, family=family, device=dev,
                              dtype=plan.dtype, adapter=adapter_str, plan=plan,
                              progress=report, hub_kwargs=hub_kwargs, model_kwargs=dict(model_kwargs or {}),
                              runtime=chosen_runtime)
            captioner = family.load(ctx)
        except ModelLoadError as exc:
            # A partially cached hub model fails the cache-only attempt: retry online.
            if exc.kind == "not_downloaded" and hub_kwargs.get("local_files_only") and len(attempts) > 1:
                last_error = exc
                continue
            raise
        report(f"Model ready on {dev} ({', '.join(captioner.identity['optimizations']) or 'no optimisations'})")
        return captioner
    assert last_error is not None
    raise last_error
