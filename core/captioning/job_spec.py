"""What a captioning run is: :class:`GenerationSettings` and the whole :class:`CaptionJobSpec`.

A :class:`GenerationSettings` is an immutable, validated bundle of the decoding
knobs that change what a model writes.  It is stored next to every caption as
provenance JSON (:meth:`GenerationSettings.to_dict`), so it deliberately holds
only plain, JSON-serialisable values and no torch objects.

A :class:`CaptionJobSpec` is the one description of a caption request: the CLI's
``caption`` command and the GUI's dialog both build one, the engine runs it, and the
GUI keeps the last one as its defaults (:meth:`CaptionJobSpec.to_dict`).  Nothing here
imports torch, so the dialog can build specs without loading the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.captioning.confidence import MAX_VIEW_CHECKS
from core.captions import DEFAULT_MODEL_CAPTION_CHARS, MAX_CAPTION_CHARS
from core.queries import ImageFilter

__all__ = ["BACKENDS", "DEFAULT_MODEL", "CaptionJobSpec", "CaptionScope", "GenerationSettings"]

#: The model used when none is configured (BLIP-base, ~990 MB).  The one definition:
#: the CLI, the GUI and the self-check import it from :mod:`core.captioning`.
DEFAULT_MODEL = "Salesforce/blip-image-captioning-base"


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """Decoding parameters shared by every model family.

    Attributes:
        num_beams: Beam width; ``1`` is greedy decoding (the fastest on CPU).
        min_new_tokens: Minimum number of tokens to generate before EOS is allowed.
        max_new_tokens: Hard cap on generated tokens (must be ``>= min_new_tokens``).
        prompt: Optional text prompt.  For BLIP/GIT/ViT-GPT2 it is a conditional
            *prefix* the caption continues (e.g. BLIP's ``"a photography of"``);
            for instruction models (Florence-2, SmolVLM, Qwen-VL) it is the
            instruction/task token.  ``None`` means the family default.  The
            returned caption never contains the prompt itself.
        repetition_penalty: ``1.0`` disables it; values ``> 1`` discourage loops.
    """

    num_beams: int = 1
    min_new_tokens: int = 0
    max_new_tokens: int = 30
    prompt: str | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        # bool is an int subclass; True as a beam count is surely a bug upstream.
        for name in ("num_beams", "min_new_tokens", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                # ValueError (not TypeError) on purpose: callers catch one type for bad settings.
                raise ValueError(f"{name} must be an integer, got {value!r}")  # noqa: TRY004
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams!r}")
        if self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be >= 0, got {self.min_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens!r}")
        if self.max_new_tokens < self.min_new_tokens:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens!r}) must be >= min_new_tokens ({self.min_new_tokens!r})"
            )
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be a string or None, got {self.prompt!r}")
        penalty = self.repetition_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
            # `not penalty > 0` also rejects NaN.
            raise ValueError(f"repetition_penalty must be a number > 0, got {penalty!r}")
        # Normalise ints to float so to_dict() round-trips to an equal object.
        object.__setattr__(self, "repetition_penalty", float(penalty))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (for the caption's provenance record)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        """Inverse of :meth:`to_dict`.

        Unknown keys raise ``ValueError`` rather than being dropped silently:
        provenance written by a newer version must not be misread as if the
        extra knob had not been used.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generation setting(s): {', '.join(map(repr, unknown))}")
        return cls(**data)


#: Which images a job looks at: ``None`` is the whole library; an :class:`ImageFilter`
#: is a folder (``FolderScope.image_filter()``), the uncaptioned images, or the grid's
#: current view, evaluated when the job starts; a tuple of ids is an explicit selection.
#: Within the scope the engine still never touches a person's or an imported caption.
CaptionScope = ImageFilter | tuple[int, ...] | None

_DEVICES = ("auto", "cpu", "cuda", "mps")
#: Where a local model runs (the same tuple as core.captioning.openvino_runtime.RUNTIMES,
#: repeated so the dialog can validate a spec without importing the loader).
RUNTIMES = ("torch", "openvino", "openvino-bf16", "openvino-int8", "auto")
#: Where captions come from: "local" loads a Hugging Face model in this process;
#: "openai" sends images to an OpenAI-compatible chat-completions server
#: (core.captioning.server; Ollama, LM Studio, llama.cpp's llama-server, vLLM).
BACKENDS = ("local", "openai")
#: Server backend: the default wall-clock bound of one request, answer included.
DEFAULT_SERVER_TIMEOUT = 120.0


@dataclass(frozen=True)
class CaptionJobSpec:
    """What to caption (``scope``), with which model and generation settings (``generation``).

    With ``backend="openai"``, ``model`` is the name the server knows the model by and
    ``endpoint`` the server's base URL (e.g. ``http://localhost:11434/v1``); the API key
    is never part of the spec (see :func:`core.captioning.server.resolve_api_key`).
    """

    model: str = DEFAULT_MODEL
    adapter: str | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    batch_size: int = 8
    device: str = "auto"
    #: Also re-caption images whose current caption this very model version wrote.
    overwrite_model_captions: bool = False
    #: Torch-level speed-ups ("auto" or "none"), passed to the model loader.
    optimize: str = "auto"
    #: "torch", "openvino" (a vision tower, for BLIP and some VLMs the text model too, on OpenVINO on
    #: the CPU), "openvino-bf16" (the tower in bf16, the text model in bf16 on torch),
    #: "openvino-int8" (int8; the towers with int8 activations too) or "auto" (core/captioning/openvino_runtime.py).
    runtime: str = "torch"
    backend: str = "local"
    endpoint: str | None = None
    #: Server backend only: at most this many requests in flight at once.
    max_concurrency: int = 4
    #: Server backend only: seconds one request (or the reachability check) may take in
    #: all, however the server trickles its answer.
    server_timeout: float = DEFAULT_SERVER_TIMEOUT
    #: A model's caption longer than this (local or server) is that image's error, not stored.
    max_caption_chars: int = DEFAULT_MODEL_CAPTION_CHARS
    #: A caption preset (core/captioning/presets.py PRESETS: "short", "alt_text", ...)...
    preset: str | None = None
    #: ... or the user's own prompt with per-image variables ("{folder}", "{keywords}", ...).
    #: Neither: a trained version's recorded preset/template, else ``generation.prompt``.
    prompt_template: str | None = None
    #: Which of each photo's values the run writes (core.kinds: "caption", "alt_text", ...);
    #: without a preset or template, the kind's own default prompt is asked.
    kind: str = "caption"
    #: Caption each photo again from this many shifted views and store how many agreed as
    #: the confidence (core.captioning.confidence.check_views); each view is a full pass.
    check_views: int = 0
    scope: CaptionScope = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must name a hub id, a folder or a model version, got {self.model!r}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.device not in _DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or mps, got {self.device!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not isinstance(self.generation, GenerationSettings):
            raise ValueError(f"generation must be GenerationSettings, got {self.generation!r}")
        self._check_backend()
        views = self.check_views
        if not isinstance(views, int) or isinstance(views, bool) or not 0 <= views <= MAX_VIEW_CHECKS:
            raise ValueError(f"check_views must be an integer from 0 to {MAX_VIEW_CHECKS}, got {views!r}")
        if views and self.backend != "local":
            raise ValueError("checking views needs a local model: a server returns no token scores to compare")
        from core.kinds import check_kind_name

        check_kind_name(self.kind)  # a KindError is a ValueError
        if self.preset is not None or self.prompt_template is not None:
            from core.captioning.presets import PRESETS, template_variables

            if self.preset is not None and self.prompt_template is not None:
                raise ValueError("give a preset or a prompt template, not both")
            if self.preset is not None and self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; presets: {', '.join(PRESETS)}")
            if self.prompt_template is not None:
                template_variables(self.prompt_template)  # ValueError for unknown variables
            if self.generation.prompt is not None:
                raise ValueError("generation.prompt and a preset/prompt template cannot both be given")
        scope = self.scope
        if scope is not None and not isinstance(scope, ImageFilter):
            # Any sequence of ids becomes a tuple: the spec stays immutable.
            object.__setattr__(self, "scope", tuple(dict.fromkeys(int(i) for i in scope)))

    def _check_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        limit = self.max_caption_chars
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_CAPTION_CHARS:
            raise ValueError(f"max_caption_chars must be an integer from 1 to {MAX_CAPTION_CHARS}, got {limit!r}")
        timeout = self.server_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            # `not 0 < timeout` also rejects NaN.
            raise ValueError(f"server_timeout must be a number of seconds above 0, at most 3600, got {timeout!r}")
        object.__setattr__(self, "server_timeout", float(timeout))
        conc = self.max_concurrency
        if not isinstance(conc, int) or isinstance(conc, bool) or not 1 <= conc <= 64:
            raise ValueError(f"max_concurrency must be an integer from 1 to 64, got {conc!r}")
        if self.backend == "local":
            if self.endpoint is not None:
                raise ValueError(f"endpoint is only used with backend 'openai', got {self.endpoint!r}")
            return
        if self.adapter is not None:
            raise ValueError(f"a server model cannot take a local adapter, got {self.adapter!r}")
        from core.captioning.endpoints import normalize_endpoint

        # normalize_endpoint raises ValueError naming the bad value (credentials redacted).
        object.__setattr__(self, "endpoint", normalize_endpoint(self.endpoint))

    def with_(self, **changes: Any) -> CaptionJobSpec:
        return replace(self, **changes)

    def label(self) -> str:
        """The model as a person reads it: "base" or "base + adapter-folder-name"."""
        if self.backend != "local":
            from core.captioning.endpoints import endpoint_host

            return f"{self.model} @ {endpoint_host(self.endpoint or '')}"
        return self.model if not self.adapter else f"{self.model} + {Path(self.adapter).name}"

    def to_dict(self) -> dict[str, Any]:
        """The spec's fields as plain JSON values, without the scope (a selection is not
        a preference); :meth:`from_dict` reads it back."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scope"}
        data["generation"] = self.generation.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, scope: CaptionScope = None) -> CaptionJobSpec:
        """Inverse of :meth:`to_dict`; ``ValueError`` for unknown keys or bad values."""
        known = {f.name for f in fields(cls)} - {"scope"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown caption job field(s): {', '.join(map(repr, unknown))}")
        values = dict(data)
        if "generation" in values:
            generation = values["generation"]
            if not isinstance(generation, Mapping):
                raise ValueError(f"generation must be a mapping, got {generation!r}")
            values["generation"] = GenerationSettings.from_dict(dict(generation))
        return cls(**values, scope=scope)
