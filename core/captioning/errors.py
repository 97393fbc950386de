"""Exceptions raised by the captioning model layer.

Messages are written for the person running CaptionDesk, not for a developer:
they say what went wrong and what to do about it, in one or two sentences,
so the GUI/CLI can show ``str(error)`` without a stack trace.  The original
exception is kept as ``__cause__`` for the log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from core.errors import UserFacingError

__all__ = ["GenerationError", "ModelLoadError"]

LoadErrorKind = Literal["not_downloaded", "bad_model", "unsupported", "bad_adapter", "device", "server", "runtime"]


class ModelLoadError(UserFacingError):
    """A captioning model (or its adapter) could not be loaded.

    Attributes:
        kind: Machine-readable category, so the UI can offer the right fix:
            ``"not_downloaded"`` (hub id not cached and the hub unreachable),
            ``"bad_model"`` (a folder that is not a loadable model),
            ``"unsupported"`` (a valid model of a family CaptionDesk cannot caption with),
            ``"bad_adapter"`` (LoRA/PEFT adapter missing or incompatible),
            ``"device"`` (the requested device is not available),
            ``"runtime"`` (the requested runtime, e.g. OpenVINO, cannot run this model here),
            ``"server"`` (a model server that cannot be reached or refuses the API key;
            raised mid-job too, by ``generate``, and it stops the job).
        model: The model id or folder the user asked for.
    """

    def __init__(self, message: str, *, kind: LoadErrorKind, model: str | None = None) -> None:
        super().__init__(message)
        self.kind: LoadErrorKind = kind
        self.model = model

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with its keyword-only fields, so it crosses process boundaries intact
        # (a Ray actor that cannot load the model raises it to the driver).
        return (_rebuild_model_load_error, (type(self), str(self), self.kind, self.model))

    @classmethod
    def not_downloaded(cls, model_id: str, detail: str | None = None, size: str | None = None) -> ModelLoadError:
        """Hub id that is not in the local cache while the hub cannot be reached (*size*: of its download)."""
        name = model_id.rstrip("/").split("/")[-1]
        msg = (
            f"The model '{model_id}' is not downloaded yet and the Hugging Face Hub could not be reached "
            f"({detail or 'no internet connection, or offline mode is on via HF_HUB_OFFLINE'}). "
            "Connect to the internet once so it can be downloaded, or on a machine with internet run "
            f"'captiondesk models download {model_id} --to {name}'{f' ({size})' if size else ''}, copy that "
            "folder here and point --model at the local folder that contains it (the folder with config.json "
            f"and the weights), e.g. --model /path/to/{name}."
        )
        return cls(msg, kind="not_downloaded", model=model_id)

    @classmethod
    def bad_folder(cls, folder: str | Path, problem: str) -> ModelLoadError:
        """A local folder that exists but does not hold a loadable model."""
        return cls(f"The folder '{folder}' is not a usable captioning model: {problem}",
                   kind="bad_model", model=str(folder))

    @classmethod
    def unsupported(cls, model: str, model_type: str | None, supported: list[str]) -> ModelLoadError:
        """A loadable model whose architecture CaptionDesk has no captioner for."""
        return cls(
            f"The model '{model}' has architecture '{model_type or 'unknown'}', which CaptionDesk cannot use "
            f"for captioning. Supported model types: {', '.join(sorted(supported))}.",
            kind="unsupported", model=model,
        )

    @classmethod
    def remote_code(cls, model: str | Path, model_type: str | None) -> ModelLoadError:
        """A model that only loads by running Python code shipped with it (``auto_map``)."""
        return cls(
            f"The model '{model}' (model type '{model_type or 'unknown'}') can only be loaded by running "
            "Python code that comes with it, and CaptionDesk never runs a model's own code. "
            "Use a model whose type the installed transformers supports without such code (BLIP, BLIP-2, "
            "GIT, Florence-2, Qwen2-VL, SmolVLM, PaliGemma, LLaVA and others), or a copy of this model "
            "converted to one of those types.",
            kind="unsupported", model=str(model),
        )

    @classmethod
    def bad_adapter(cls, adapter: str | Path, problem: str, model: str | None = None) -> ModelLoadError:
        """A LoRA/PEFT adapter that is missing or does not fit the base model."""
        return cls(f"The adapter '{adapter}' could not be applied: {problem}", kind="bad_adapter", model=model)


class GenerationError(UserFacingError):
    """The model failed to caption one batch (numerical failure, bad output, ...).

    Not to be confused with :class:`core.captions.CaptionError`, which refuses an
    edit of stored captions (empty text, nothing to accept, ...).

    ``torch.cuda.OutOfMemoryError`` is deliberately *not* wrapped in this: the
    engine catches it to halve the batch size and retry.
    """


def _rebuild_model_load_error(cls: type[ModelLoadError], message: str, kind: LoadErrorKind,
                              model: str | None) -> ModelLoadError:
    return cls(message, kind=kind, model=model)
