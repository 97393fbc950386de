"""A VLM's language model on OpenVINO: the text decoder and its LM head converted with
``openvino.convert_model`` as one step function, run inside transformers' own ``generate``.

The converted step takes the merged input embeddings (text and image features, made on
torch by the model's own forward), an additive 4-D attention mask, the position ids and
each layer's past keys and values, and returns the last position's logits and each
layer's *new* keys and values.  :class:`OpenVINOLanguageModel` stands in for the family's
text model: it builds the mask from the 2-D one ``generate`` passes, runs the step and
appends the new keys and values to the ``DynamicCache`` with its own ``update``, so
greedy and beam search (the cache reordered between steps), the repetition penalty,
the raw logits for the scores, batching and cancel are transformers' and the captioner's
as on torch.  The model's ``lm_head`` becomes :func:`logits_pass_through`, which passes
the step's logits through, so the head runs on OpenVINO too and only for the last position.

Covered: Idefics3 / SmolVLM (a Llama decoder) and Qwen2-VL (a Qwen2 decoder with M-RoPE: its
three rows of positions, computed by the model's forward on torch, are a step input).  The
step has full attention in every layer: a model with sliding-window layers keeps its language
model on torch (:func:`language_unconvertible`).  Only the word embeddings stay
on torch: the torch decoder layers and head are let go once converted (a 2B model's would be
6 GB of fp32 kept twice), so a call asking for hidden states or attentions is refused.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

__all__ = ["LANGUAGE_FAMILIES", "causal_mask", "convert_language", "install_language", "language_parts",
           "language_unconvertible", "logits_pass_through", "rope_positions"]

#: Families whose language model (decoder + LM head) runs on OpenVINO too.
LANGUAGE_FAMILIES: frozenset[str] = frozenset({"idefics3", "qwen2-vl"})
#: Where each family's text model sits on ``model.model``, and its rows of rotary positions
#: (None: one row per sequence; Qwen2-VL's M-RoPE: temporal, height and width rows).
_PARTS: dict[str, tuple[str, int | None]] = {"idefics3": ("text_model", None), "qwen2-vl": ("language_model", 3)}


def language_parts(model: Any, family_id: str) -> tuple[Any, str, int | None]:
    """(the module that owns the text model, its attribute name, its rows of rotary positions)
    for a covered family."""
    if family_id not in _PARTS:
        raise ValueError(f"no OpenVINO language model for {family_id}")
    attribute, rope_rows = _PARTS[family_id]
    return model.model, attribute, rope_rows


def language_unconvertible(model: Any, family_id: str) -> str | None:
    """Why this model's language model stays on torch (None: it is converted)."""
    if family_id not in _PARTS:
        return f"no OpenVINO language model for {family_id}"
    owner, attribute, _ = language_parts(model, family_id)
    layer_types = set(getattr(getattr(owner, attribute).config, "layer_types", None) or ["full_attention"])
    if layer_types != {"full_attention"}:
        return f"its layers of types {', '.join(sorted(layer_types))} (only full attention is converted)"
    return None


def rope_positions(position_ids: Any, rope_rows: int | None, batch: int, past: int, length: int) -> Any:
    """The position ids as the step takes them: ``(batch, length)``, or ``(rows, batch, length)``
    for M-RoPE (a 2-D input repeated per row; a leading text-position row, which only the
    mask of packed sequences uses, dropped), as the torch text model reads them."""
    import torch

    if position_ids is None:
        position_ids = torch.arange(past, past + length).unsqueeze(0)
    if rope_rows is None:
        return position_ids.expand(batch, -1)
    if position_ids.ndim == 2:
        position_ids = position_ids[None].expand(rope_rows, -1, -1)
    elif position_ids.shape[0] == rope_rows + 1:
        position_ids = position_ids[1:]
    return position_ids.expand(rope_rows, batch, -1)


def _step_module(text_model: Any, lm_head: Any) -> Any:
    import torch

    class PastAndNew:
        """The cache the traced layers see: each layer's past from the inputs, its new keys
        and values recorded as outputs."""

        def __init__(self, past: tuple[torch.Tensor, ...]) -> None:
            self.past = past
            self.new: list[torch.Tensor] = []

        def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_args: Any,
                   **_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            self.new += [keys, values]
            past_keys, past_values = self.past[2 * layer_idx], self.past[2 * layer_idx + 1]
            return torch.cat([past_keys, keys], dim=2), torch.cat([past_values, values], dim=2)

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_model = text_model
            self.lm_head = lm_head

        def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                    *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
            cache = PastAndNew(past)
            hidden = inputs_embeds
            position_embeddings = self.text_model.rotary_emb(hidden, position_ids=position_ids)
            for layer in self.text_model.layers[: self.text_model.config.num_hidden_layers]:
                # The layers read positions only through position_embeddings (the rest is for packed
                # sequences under flash attention).
                hidden = layer(hidden, attention_mask=attention_mask, position_embeddings=position_embeddings,
                               position_ids=None, cache=cache, use_cache=True)
            # The norm is per position, so the head sees only the last one, as generate asks.
            logits = self.lm_head(self.text_model.norm(hidden[:, -1:, :]))
            return (logits, *cache.new)

    return Step().eval()


def _kv_shape(text_model: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of the text model."""
    config = text_model.config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return int(config.num_hidden_layers), kv_heads, head_dim


def convert_language(model: Any, family_id: str) -> Any:
    """The family's text model and LM head as one OpenVINO step model (fp32)."""
    import openvino
    import torch

    why_not = language_unconvertible(model, family_id)
    if why_not:
        raise ValueError(why_not)
    owner, attribute, rope_rows = language_parts(model, family_id)
    text_model = getattr(owner, attribute)
    layers, kv_heads, head_dim = _kv_shape(text_model)
    hidden = int(text_model.config.hidden_size)
    # Example shapes other than 1 everywhere, so the trace keeps every dimension dynamic.
    batch, length, past = 2, 3, 2
    embeds = torch.zeros(batch, length, hidden)
    mask = torch.zeros(batch, 1, length, past + length)
    positions = rope_positions(None, rope_rows, batch, past, length).contiguous()
    kv = [torch.zeros(batch, kv_heads, past, head_dim) for _ in range(2 * layers)]
    shapes = [openvino.PartialShape([-1, -1, hidden]), openvino.PartialShape([-1, 1, -1, -1]),
              openvino.PartialShape([-1, -1] if rope_rows is None else [rope_rows, -1, -1])]
    shapes += [openvino.PartialShape([-1, kv_heads, -1, head_dim])] * (2 * layers)
    with torch.no_grad(), warnings.catch_warnings():
        # The trace's note that sdpa's is_causal test became a constant: it is (the mask is always given).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return openvino.convert_model(_step_module(text_model, model.lm_head),
                                      example_input=(embeds, mask, positions, *kv), input=shapes)


def _language_module() -> type:
    import torch

    class OpenVINOLanguageModel(torch.nn.Module):
        """Stands in for a family's text model: the compiled step for each ``generate`` call,
        returning the last position's logits (the model's ``lm_head`` passes them through)."""

        def __init__(self, compiled: Any, xml: Path, text_model: Any, rope_rows: int | None) -> None:
            super().__init__()
            self.rope_rows = rope_rows
            self.compiled = compiled
            self.xml = xml
            self.config = text_model.config
            self.embed_tokens = text_model.get_input_embeddings()  # the model's forward embeds the prompt on torch
            self.layers_kv = _kv_shape(text_model)
            self._requests = threading.local()

        def get_input_embeddings(self) -> Any:
            return self.embed_tokens

        def _request(self) -> Any:
            # One infer request per thread, reused across the steps of a generate call.
            request = getattr(self._requests, "request", None)
            if request is None:
                request = self._requests.request = self.compiled.create_infer_request()
            return request

        def forward(self, inputs_embeds: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                    position_ids: torch.Tensor | None = None, cache: Any = None, use_cache: bool | None = None,
                    input_ids: torch.Tensor | None = None, past_key_values: Any = None, **kwargs: Any) -> Any:
            from transformers.modeling_outputs import BaseModelOutputWithPast

            cache = cache if cache is not None else past_key_values
            if inputs_embeds is None:
                inputs_embeds = self.embed_tokens(input_ids)
            if kwargs.get("output_hidden_states") or kwargs.get("output_attentions"):
                raise NotImplementedError("the language model runs on OpenVINO, which returns the logits only; "
                                          "load the model with runtime='torch' for hidden states or attentions")
            batch, length = inputs_embeds.shape[:2]
            layers, kv_heads, head_dim = self.layers_kv
            past = cache.get_seq_length() if cache is not None else 0
            positions = rope_positions(position_ids, self.rope_rows, batch, past, length)
            if past:
                kv = [t for i in range(layers) for t in (cache.layers[i].keys, cache.layers[i].values)]
            else:
                kv = [torch.zeros(batch, kv_heads, 0, head_dim)] * (2 * layers)
            mask = causal_mask(attention_mask, batch, past, length)
            inputs = [inputs_embeds.detach().float(), mask, positions]
            inputs += [t.detach().float() for t in kv]
            request = self._request()
            # Shared, not copied: the cache's tensors outlive this synchronous call.
            request.infer([t.contiguous().numpy() for t in inputs], share_inputs=True)
            outputs = [torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(1 + 2 * layers)]
            if cache is not None and use_cache is not False:
                for i in range(layers):
                    cache.update(outputs[1 + 2 * i], outputs[2 + 2 * i], i)
            return BaseModelOutputWithPast(last_hidden_state=outputs[0].to(inputs_embeds.dtype), cache=cache)

    return OpenVINOLanguageModel


def causal_mask(attention_mask: Any, batch: int, past: int, length: int) -> Any:
    """The additive (batch, 1, length, past + length) mask: a query sees the keys up to its own
    position that the 2-D mask keeps.  The smallest float rather than -inf, so a padding row
    (nothing to see) averages instead of turning into NaN in the cache."""
    import torch

    total = past + length
    if attention_mask is None:
        attention_mask = torch.ones(batch, total, dtype=torch.bool)
    keys = torch.arange(total)
    allowed = (keys[None, :] <= torch.arange(past, total)[:, None])[None] & attention_mask[:, None, -total:].bool()
    mask = torch.zeros(batch, length, total).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return mask[:, None]


def install_language(model: Any, family_id: str, compiled: Any, xml: Path) -> None:
    """Put the compiled step in place of the family's text model, and the pass-through head
    in place of ``lm_head``."""
    owner, attribute, rope_rows = language_parts(model, family_id)
    setattr(owner, attribute, _language_module()(compiled, xml, getattr(owner, attribute), rope_rows))
    model.lm_head = logits_pass_through()


def logits_pass_through() -> Any:
    """The LM head of a model whose converted step already returns the logits."""
    import torch

    class LogitsFromStep(torch.nn.Module):
        def forward(self, logits: torch.Tensor) -> torch.Tensor:
            return logits

    return LogitsFromStep()
