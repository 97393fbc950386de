"""A restyler: a text-to-text model that rewrites a plain caption in a style.

Two kinds, one interface (``restyle(texts, settings) -> [CaptionResult | exception]``):

* :class:`LocalRestyler` — any causal language model (Qwen2.5-Instruct, SmolLM2,
  Llama-3.2, Falcon, ...) loaded with ``AutoModelForCausalLM`` + ``AutoTokenizer``,
  optionally with a LoRA adapter merged; batches are **left padded** (a decoder-only
  model continues from the last position of each row) and greedy.
* :class:`ServerRestyler` — a chat model behind the OpenAI-compatible endpoint the
  server caption backend uses (its retries, deadlines, key handling, one error per text).

:func:`render_prompt` is the one prompt format: training a restyler and restyling with it
both build the model's input through it, so a trained version sees at inference exactly
the text it was trained on.  When the tokenizer has a chat template the style is the
system turn and the caption the user turn; otherwise a plain two-line prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.captioning.captioner import CaptionResult
from core.captioning.errors import ModelLoadError

log = logging.getLogger(__name__)

#: The style prompt when none is given (a trained version records its own).
DEFAULT_STYLE = "Rewrite this image caption in the library's house style. Reply with the caption only."


@dataclass(frozen=True)
class RestyleSettings:
    """How a restyler generates: the style prompt and a length bound (greedy decoding)."""

    style: str = DEFAULT_STYLE
    max_new_tokens: int = 60

    def to_dict(self) -> dict[str, Any]:
        return {"style": self.style, "max_new_tokens": self.max_new_tokens}


def render_prompt(tokenizer: Any, style: str, text: str) -> str:
    """The model input for restyling *text* in *style* (see the module docstring)."""
    if getattr(tokenizer, "chat_template", None):
        for messages in ([{"role": "system", "content": style}, {"role": "user", "content": text}],
                         # Some templates (Gemma's) refuse a system turn: the style leads the user turn.
                         [{"role": "user", "content": f"{style}\n\n{text}"}]):
            try:
                return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # noqa: BLE001,S112 - a template that refuses this shape: try the next
                continue
    return f"{style}\nCaption: {text}\nRewritten:\n"


def uses_chat_template(tokenizer: Any) -> bool:
    """Whether :func:`render_prompt` used the chat template (which writes its own BOS)."""
    return bool(getattr(tokenizer, "chat_template", None))


class LocalRestyler:
    """A causal LM restyling captions in batches (one thread at a time)."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, adapter: str | None, device: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = getattr(model, "dtype", None)
        self.identity = {"backend": "local", "family": "causal-lm", "model": name, "adapter": adapter,
                         "model_type": getattr(model.config, "model_type", None)}

    def encode(self, prompts: Sequence[str], *, padding_side: str = "left") -> dict[str, Any]:
        """Token ids of *prompts*, padded on *padding_side* (left for generation)."""
        self.tokenizer.padding_side = padding_side
        return self.tokenizer(list(prompts), return_tensors="pt", padding=True,
                              add_special_tokens=not uses_chat_template(self.tokenizer))

    def stop_ids(self) -> list[int]:
        """The tokens that end a reply: the tokenizer's EOS and the model's own (Llama-3 has several)."""
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        return list(dict.fromkeys(i for i in [self.tokenizer.eos_token_id, *ids] if isinstance(i, int)))

    def restyle(self, texts: Sequence[str], settings: RestyleSettings) -> list[CaptionResult | BaseException]:
        """One result per text: the rewritten caption with its mean token log-probability."""
        import torch

        if not texts:
            return []
        prompts = [render_prompt(self.tokenizer, settings.style, text) for text in texts]
        batch = {k: v.to(self.device) for k, v in self.encode(prompts).items()}
        eos = self.stop_ids()
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=settings.max_new_tokens, do_sample=False,
                                      num_beams=1, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos,
                                      output_scores=True, return_dict_in_generate=True)
            logprobs = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        new_tokens = out.sequences[:, batch["input_ids"].shape[1]:].cpu().tolist()
        logprobs = logprobs.float().cpu().tolist()
        results: list[CaptionResult | BaseException] = []
        for ids, lps in zip(new_tokens, logprobs, strict=True):
            end = next((i + 1 for i, token in enumerate(ids) if token in eos), len(ids))
            kept_ids, kept = ids[:end], [min(0.0, v) for v in lps[:end]]
            text = self.tokenizer.decode(kept_ids, skip_special_tokens=True).strip()
            score = sum(kept) / len(kept) if kept else 0.0
            results.append(CaptionResult(text, score, tuple(kept_ids), tuple(kept)))
        return results

    def close(self) -> None:
        self.model = None
        from core.allocator import release_free_memory

        release_free_memory()


def load_causal_lm(model: str, adapter: str | None = None, *, device: str = "auto", dtype: Any = None,
                   model_kwargs: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, device)``: a causal LM from a folder or hub id, the adapter merged.

    The tokenizer gets a pad token (its EOS when it has none).  Every loading failure is
    one :class:`ModelLoadError` saying what to do.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.captioning.device import default_dtype, resolve_device

    where = resolve_device(device)
    kwargs = dict(model_kwargs or {})
    kwargs.setdefault("dtype", dtype or default_dtype(where))
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        lm = AutoModelForCausalLM.from_pretrained(model, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        kind = "bad_model" if Path(model).exists() else "not_downloaded"
        raise ModelLoadError(f"Cannot load '{model}' as a text language model for restyling "
                             f"(AutoModelForCausalLM): {exc}", kind=kind, model=model) from None
    if adapter is not None:
        try:
            from peft import PeftModel

            lm = PeftModel.from_pretrained(lm, adapter).merge_and_unload()
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"Cannot apply the restyler adapter {adapter} to '{model}': {exc}",
                                 kind="bad_adapter", model=model) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if "device_map" not in kwargs:
        lm = lm.to(where)
    lm.eval()
    return lm, tokenizer, where


def load_restyler(model: str, adapter: str | None = None, *, device: str = "auto",
                  progress: Callable[[str], None] | None = None) -> LocalRestyler:
    """A :class:`LocalRestyler` for *model* (+ *adapter*), on *device*."""
    if progress is not None:
        progress(f"Loading restyler {model}")
    lm, tokenizer, where = load_causal_lm(model, adapter, device=device)
    return LocalRestyler(lm, tokenizer, name=model, adapter=adapter, device=where)


class ServerRestyler:
    """A chat model on an OpenAI-compatible server, restyling each text in one request."""

    def __init__(self, captioner: Any) -> None:
        from core.captioning.server import ServerBatch

        self._captioner = captioner
        self._batch = ServerBatch
        captioner.request_body = self._request_body  # the same client, retries and limits; text-only messages
        self.identity = {**captioner.identity, "family": "chat"}
        self.device = "server"
        self.dtype = None

    def _request_body(self, text: str, style: str, settings: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._captioner.model,
            "messages": [{"role": "system", "content": style}, {"role": "user", "content": text}],
            "max_tokens": settings.max_new_tokens, "temperature": 0, "stream": False,
        }
        if self._captioner.ask_logprobs:
            body["logprobs"] = True
        return body

    def restyle(self, texts: Sequence[str], settings: RestyleSettings) -> list[CaptionResult | BaseException]:
        from core.captioning.job_spec import GenerationSettings

        generation = GenerationSettings(max_new_tokens=settings.max_new_tokens, prompt=settings.style)
        return self._captioner.generate(self._batch(list(texts), settings.style), generation)

    def close(self) -> None:
        self._captioner.close()


def load_server_restyler(endpoint: str, model: str, *, max_concurrency: int = 4, timeout: float = 120.0,
                         progress: Callable[[str], None] | None = None) -> ServerRestyler:
    """A :class:`ServerRestyler`, after the same reachability check as server captioning."""
    from core.captioning.server import load_server_captioner

    return ServerRestyler(load_server_captioner(endpoint, model, max_concurrency=max_concurrency, timeout=timeout,
                                                progress=progress))

