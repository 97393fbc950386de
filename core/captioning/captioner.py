"""Captioner interface and the shared Hugging Face implementation.

Two layers:

* :class:`Captioner` is the abstract interface the engine programs against:
  ``preprocess`` (CPU only, pure, thread-safe, so a worker thread can prepare
  the next batch while the model runs) and ``generate`` (device work).
* :class:`HFCaptioner` implements everything that is the same for every
  transformers model family: moving tensors to the device, decoding settings,
  running ``generate`` under ``torch.inference_mode()``, stripping the prompt,
  and computing a confidence score per caption.  A family module
  (``families/*.py``) only says how to turn images + prompt into model inputs.

The caption *score* is the mean log-probability per generated token of the
returned sequence, computed from the **raw** logits (``output_logits=True``),
not from the processed ``output_scores``: those have the repetition penalty and
the ``min_new_tokens`` EOS ban applied and, for greedy search, are not even
log-normalised, so they would make the score depend on decoding knobs instead
of on how sure the model is.  The EOS token counts as a generated token;
padding after EOS does not.  A score of ``0`` would mean certainty; typical
trained-model captions score around ``-0.3 ... -1.5``.

torch is imported lazily (inside methods) so that importing this module, and
``core.captioning``, does not pull in torch.
"""

from __future__ import annotations

import gc
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from core.allocator import release_free_memory

from .errors import GenerationError
from .job_spec import GenerationSettings

if TYPE_CHECKING:
    import torch
    from PIL import Image


__all__ = [
    "MIN_SCORE",
    "CaptionResult",
    "Captioner",
    "HFCaptioner",
    "PreparedBatch",
    "load_model_image",
    "model_input_side",
    "sequence_scores",
    "token_logprobs",
    "token_scores",
]

#: Floor for scores (a caption containing a token with probability 0 gets this, not -inf).
MIN_SCORE = -1e4


@dataclass(slots=True)
class CaptionResult:
    """One caption and how confident the model was in it.

    Attributes:
        text: The caption, without the prompt, whitespace-stripped.  May be
            empty when the model emitted EOS straight away.
        score: Mean log-probability per generated token (``<= 0``; closer to
            0 = more confident).  Comparable between captions of the same
            model; not calibrated across models.
    """

    text: str
    score: float
    #: The generated token ids (EOS included, padding not) and each one's log-probability:
    #: what :mod:`core.captioning.confidence` turns into the stored score.
    token_ids: tuple[int, ...] = ()
    token_logprobs: tuple[float, ...] = ()
    #: Per generated token, its log-probability minus the best other token's at that step:
    #: how near the runner-up came to being written instead (a one-word error's sign).
    token_margins: tuple[float, ...] = ()
    #: How many shifted views of the picture were captioned again to check this caption, and
    #: how many of them gave the same text (core.captioning.confidence.check_views).
    views_checked: int = 0
    views_agreeing: int = 0
    #: Plain measurements of the photo (core.captioning.calibration.PHOTO_FEATURES), filled in
    #: when the version has an error model that reads them.
    photo_features: tuple[float, ...] = ()


@dataclass(slots=True)
class PreparedBatch:
    """Model inputs produced by :meth:`Captioner.preprocess`, still on the CPU.

    Attributes:
        inputs: Keyword arguments for the model's ``generate`` (CPU tensors).
        size: Number of images in the batch.
        prompt: The *effective* prompt the inputs were built with; ``generate``
            refuses settings with a different prompt because the prompt is
            baked into the token ids.
    """

    inputs: dict[str, Any]
    size: int
    prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Captioner(ABC):
    """A loaded captioning model.

    Thread-safety contract: :meth:`preprocess` may be called from any thread,
    concurrently with :meth:`generate`; :meth:`generate` must be called from
    one thread at a time.
    """

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Provenance of the model: ``family``, ``model``, ``adapter``, ``revision``, ``optimizations``."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Device the model runs on."""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the model's (non-quantized) weights and inputs."""

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image], settings: GenerationSettings) -> Any:
        """Turn RGB PIL images into CPU tensors for :meth:`generate` (pure, thread-safe)."""

    @abstractmethod
    def generate(self, batch: Any, settings: GenerationSettings) -> list[CaptionResult]:
        """Caption a preprocessed batch; one result per image, in order.

        ``torch.cuda.OutOfMemoryError`` propagates unchanged so the caller can
        retry with a smaller batch.
        """

    def caption(self, images: Sequence[Image.Image], settings: GenerationSettings | None = None) -> list[CaptionResult]:
        """Convenience: ``generate(preprocess(images))`` in one call."""
        settings = settings or GenerationSettings()
        return self.generate(self.preprocess(images, settings), settings)

    @abstractmethod
    def close(self) -> None:
        """Release the model and, on CUDA, cached GPU memory.  The captioner is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- model input


def model_input_side(captioner: Any) -> int | None:
    """The larger side of *captioner*'s image-processor input, or None when it cannot be read.

    A captioner without a processor may declare it as ``input_side`` (the server backend:
    the largest side it uploads).
    """
    declared = getattr(captioner, "input_side", None)
    if isinstance(declared, int) and declared > 0:
        return declared
    processor = getattr(captioner, "processor", None)
    family = getattr(captioner, "family", None)
    family_side = getattr(family, "model_input_side", None)
    from_family = family_side(processor) if family_side is not None and processor is not None else None
    if from_family:
        return from_family  # families whose size is not a side (Qwen2-VL's pixel budget, Idefics3's longest edge)
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "size", None)
    if size is not None and not isinstance(size, dict):
        size = {k: getattr(size, k, None) for k in ("height", "width", "shortest_edge", "longest_edge")}
    sides = [v for k, v in (size or {}).items() if k in ("height", "width", "shortest_edge") and v]
    return max(sides) if sides else None


def load_model_image(captioner: Any, path: Any) -> Image.Image:
    """Decode the photo at *path* for *captioner*'s input size.

    The one decoding path of the caption engine, training and evaluation
    (:func:`core.imaging.load_model_input`); raises ``ImageDecodeError``.
    """
    from core.imaging import load_model_input

    return load_model_input(path, model_input_side(captioner))


# --------------------------------------------------------------------------- scoring


def sequence_scores(
    sequences: torch.Tensor,
    logits: Sequence[torch.Tensor],
    eos_token_ids: Iterable[int],
    beam_indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generated tokens, their validity mask and mean log-probabilities.

    Works for greedy and beam search and for decoder-only and encoder-decoder
    models, using only the shape relation that ``generate`` guarantees: the
    generated tokens are the *last* ``n`` columns of ``sequences``, where
    ``n = len(logits)`` for greedy search and ``n = beam_indices.shape[1]``
    for beam search (beam search can return fewer steps than it ran).

    This is what ``model.compute_transition_scores(..., normalize_logits=True)``
    computes, but it gathers per step instead of stacking the whole
    ``steps x rows x vocab`` tensor, and it does not rely on
    ``config.vocab_size`` equalling the logits width (it does not for several
    checkpoints with padded or extended vocabularies).

    Args:
        sequences: ``(batch, prompt + n)`` token ids from ``generate``.
        logits: Raw logits per step, each ``(batch * num_beams, vocab)``.
        eos_token_ids: Tokens that end a caption; everything after the first
            one is padding.
        beam_indices: ``(batch, n)`` row of ``logits[t]`` each token came from
            (``-1`` after the beam finished), or ``None`` for greedy search.

    Returns:
        ``(tokens, mask, mean_logprob)``: generated ``(batch, n)`` tokens, a
        boolean mask of real (non-padding) tokens, and ``(batch,)`` scores.
    """
    tokens, valid, logprobs = token_logprobs(sequences, logits, eos_token_ids, beam_indices)
    counts = valid.sum(dim=1).clamp(min=1)
    return tokens, valid, logprobs.sum(dim=1) / counts


def token_logprobs(
    sequences: torch.Tensor,
    logits: Sequence[torch.Tensor],
    eos_token_ids: Iterable[int],
    beam_indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sequence_scores` before averaging: ``(tokens, mask, per-token log-probabilities)``
    (0 where the mask is False)."""
    return token_scores(sequences, logits, eos_token_ids, beam_indices)[:3]


def token_scores(
    sequences: torch.Tensor,
    logits: Sequence[torch.Tensor],
    eos_token_ids: Iterable[int],
    beam_indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`token_logprobs` plus each token's margin: its log-probability minus the best
    *other* token's at that step (0 where the mask is False)."""
    import torch

    if beam_indices is None:
        n = len(logits)
        rows = torch.arange(sequences.shape[0], device=sequences.device).unsqueeze(1).expand(-1, n)
        valid = torch.ones(sequences.shape[0], n, dtype=torch.bool, device=sequences.device)
    else:
        n = beam_indices.shape[1]
        rows = beam_indices.to(sequences.device).long()
        valid = rows >= 0
        rows = rows.clamp(min=0)
    tokens = sequences[:, sequences.shape[1] - n:]

    # Everything after the first EOS is padding (pad may equal EOS, as in GPT-2).
    eos = torch.tensor(sorted(set(eos_token_ids)), device=tokens.device, dtype=tokens.dtype)
    is_eos = torch.isin(tokens, eos) if eos.numel() else torch.zeros_like(tokens, dtype=torch.bool)
    # Number of EOS strictly before each position: > 0 means we are past the end.
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    valid &= eos_before == 0

    logprobs = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    margins = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    for step in range(n):
        step_logits = logits[step].to(tokens.device)[rows[:, step]].float()
        step_lp = torch.log_softmax(step_logits, dim=-1)
        chosen = tokens[:, step : step + 1]
        logprobs[:, step] = step_lp.gather(1, chosen).squeeze(1)
        top, top_ids = step_lp.topk(min(2, step_lp.shape[1]), dim=1)
        other = torch.where(top_ids[:, :1] == chosen, top[:, -1:], top[:, :1]).squeeze(1)
        margins[:, step] = logprobs[:, step] - other
    return tokens, valid, logprobs.masked_fill(~valid, 0.0), margins.masked_fill(~valid, 0.0)


# --------------------------------------------------------------------------- HF implementation


class CaptionerFamily(Protocol):
    """What a captioner needs of the model family that loaded it
    (:class:`~core.captioning.families.base.ModelFamily`; a family module's captioner
    calls its own family's hooks)."""

    @property
    def id(self) -> str: ...


class HFCaptioner(Captioner):
    """Shared implementation for transformers image-to-text models.

    Subclasses (one per family, in ``families/*.py``) implement :meth:`_encode`,
    and may override :meth:`eos_token_ids`, :meth:`pixel_values`,
    :meth:`_default_prompt` and :meth:`_generate_kwargs`.  :attr:`family` is the
    :class:`~core.captioning.families.base.ModelFamily` that loaded it.
    """

    #: Input keys the model's ``generate`` mutates in place (BLIP overwrites
    #: ``input_ids[:, 0]``); they are cloned so a prepared batch can be retried.
    mutated_inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: Any,
        processor: Any,
        tokenizer: Any,
        *,
        identity: dict[str, Any],
        family: CaptionerFamily,
        device: torch.device,
        dtype: torch.dtype,
        optimizations: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = tokenizer
        self.family = family
        self._identity = {**identity, "family": family.id, "optimizations": list(optimizations)}
        self._device = device
        self._dtype = dtype
        # Rust tokenizers raise "Already borrowed" when one instance is used
        # from two threads while it changes padding/truncation state, so all
        # tokenizer calls go through this lock (and prompt ids are cached).
        self._tokenizer_lock = threading.Lock()
        self._prompt_cache: dict[tuple[str, tuple[tuple[str, Any], ...]], list[int]] = {}
        self._closed = False

    # -- properties --------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def model_type(self) -> str | None:
        """The model's ``config.model_type`` (a family may load several, e.g. Qwen2-VL and 2.5-VL)."""
        return getattr(getattr(self.model, "config", None), "model_type", None)

    # -- hooks for families --------------------------------------------------

    @abstractmethod
    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        """Model inputs (CPU tensors) for ``images`` with the effective ``prompt``."""

    def _default_prompt(self) -> str | None:
        """Prompt used when ``settings.prompt`` is ``None``."""
        return None

    def eos_token_ids(self) -> list[int]:
        """Token ids that end a caption (used for scoring and stripping)."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is None:
            return []
        return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]

    def _generate_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` derived from ``settings``.

        Passed as plain kwargs (merged over the checkpoint's
        ``generation_config``), not as a ``GenerationConfig`` object: BLIP's
        ``generate`` adds ``eos_token_id``/``pad_token_id`` kwargs itself,
        and transformers 5.x warns when both styles are mixed.
        """
        kwargs: dict[str, Any] = {
            # Greedy/beam only: captions must be reproducible, and a
            # checkpoint's generation_config may enable sampling.
            "do_sample": False,
            "num_beams": settings.num_beams,
            "num_return_sequences": 1,
            "max_new_tokens": settings.max_new_tokens,
            "min_new_tokens": settings.min_new_tokens,
            "repetition_penalty": settings.repetition_penalty,
            # Raw logits for the confidence score (see the module docstring).
            "output_logits": True,
            "return_dict_in_generate": True,
        }
        gen_cfg = self.model.generation_config
        for name in ("temperature", "top_p", "top_k"):
            # Sampling knobs of a checkpoint are irrelevant without sampling;
            # clearing them avoids a warning per call.
            if getattr(gen_cfg, name, None) is not None:
                kwargs[name] = None
        if settings.num_beams > 1:
            kwargs["early_stopping"] = True
        return kwargs

    # -- helpers for families and training batches ---------------------------------

    def tokenize_prompt(self, prompt: str, **kwargs: Any) -> list[int]:
        """Token ids of ``prompt`` (cached, thread-safe)."""
        key = (prompt, tuple(sorted(kwargs.items())))
        with self._tokenizer_lock:
            cached = self._prompt_cache.get(key)
            if cached is None:
                cached = [int(i) for i in self.tokenizer(prompt, **kwargs)["input_ids"]]
                self._prompt_cache[key] = cached
        return list(cached)

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Pixel tensor (CPU) from the image processor (stateless, safe without a lock)."""
        return self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    # -- Captioner API ----------------------------------------------------------

    def effective_prompt(self, settings: GenerationSettings) -> str | None:
        """The prompt that will be used for ``settings`` (family default if unset)."""
        return settings.prompt if settings.prompt is not None else self._default_prompt()

    def preprocess(self, images: Sequence[Image.Image], settings: GenerationSettings) -> PreparedBatch:
        self._check_open()
        images = list(images)
        if not images:
            raise ValueError("preprocess() needs at least one image")
        for i, im in enumerate(images):
            if getattr(im, "mode", None) != "RGB":
                mode = getattr(im, "mode", type(im).__name__)
                raise ValueError(f"image {i} has mode {mode!r}; expected an RGB PIL image")
        prompt = self.effective_prompt(settings)
        return PreparedBatch(inputs=self._encode(images, prompt), size=len(images), prompt=prompt)

    def generate(self, batch: PreparedBatch, settings: GenerationSettings) -> list[CaptionResult]:
        import torch

        self._check_open()
        prompt = self.effective_prompt(settings)
        if batch.prompt != prompt:
            raise ValueError(
                f"batch was preprocessed with prompt {batch.prompt!r} but settings ask for {prompt!r}; preprocess again"
            )
        inputs: dict[str, Any] = {}
        for key, value in batch.inputs.items():
            if isinstance(value, torch.Tensor):
                if key in self.mutated_inputs:
                    value = value.clone()
                value = value.to(self._device, dtype=self._dtype if value.is_floating_point() else None)
            inputs[key] = value
        with torch.inference_mode():
            # torch.cuda.OutOfMemoryError is deliberately not caught here.
            out = self.model.generate(**inputs, **self._generate_kwargs(settings))
        tokens, valid, logprobs, margins = token_scores(
            out.sequences, out.logits, self.eos_token_ids(), getattr(out, "beam_indices", None)
        )
        scores = logprobs.sum(dim=1) / valid.sum(dim=1).clamp(min=1)
        if torch.isnan(scores).any():
            # NaN logits mean a numerical failure (typically fp16 overflow); the
            # text would be garbage, so fail the batch and let the caller retry.
            raise GenerationError(
                f"the model produced NaN scores for {int(torch.isnan(scores).sum())} of {batch.size} images "
                f"(numerical overflow in {str(self._dtype).removeprefix('torch.')}?)"
            )
        texts = self._decode(tokens, valid)
        results = []
        for text, score, row, lp, gap, mask in zip(texts, scores.tolist(), tokens.tolist(), logprobs.tolist(),
                                                   margins.tolist(), valid.tolist(), strict=True):
            # -inf (a token the model itself ruled out) would poison sorting and
            # averages downstream; clamp to a very low finite value instead.
            kept = [(t, max(float(v), MIN_SCORE), max(min(float(g), -MIN_SCORE), MIN_SCORE))
                    for t, v, g, m in zip(row, lp, gap, mask, strict=True) if m]
            results.append(CaptionResult(text=text, score=min(0.0, max(float(score), MIN_SCORE)),
                                         token_ids=tuple(k[0] for k in kept),
                                         token_logprobs=tuple(k[1] for k in kept),
                                         token_margins=tuple(k[2] for k in kept)))
        if len(results) != batch.size:
            raise RuntimeError(f"model returned {len(results)} captions for {batch.size} images")
        return results

    def _decode(self, tokens: torch.Tensor, valid: torch.Tensor) -> list[str]:
        rows = [row[mask].tolist() for row, mask in zip(tokens, valid, strict=True)]
        with self._tokenizer_lock:
            texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        on_cuda = self._device.type == "cuda"
        self.model = None
        self.processor = None
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()
        release_free_memory()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this captioner has been closed")
