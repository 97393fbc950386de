"""BLIP's text decoder on OpenVINO: two converted parts run inside transformers' own ``generate``.

* ``text-cross``: the image embeddings projected to each layer's cross-attention keys
  (stored transposed, as the step multiplies by them) and values, once per image (``generate`` caches them in the cross-attention half of its
  ``EncoderDecoderCache``, beam reordering included).
* ``text-step``: one decoding step — the token embeddings (made on torch by the model's own
  embedding module, so positions are torch's), an additive causal mask, each layer's past
  self-attention keys and values and its cross-attention keys and values in; the last
  position's logits and each layer's *new* self-attention keys and values out.

:class:`OpenVINOBlipText` stands in for ``text_decoder.bert`` and writes the returned keys and
values into the cache with its own ``update``, so greedy and beam search, the repetition
penalty, ``min_new_tokens`` and the raw logits for the scores stay transformers' as on
torch; ``text_decoder.cls`` becomes a pass-through, the head having run in the step.
Under ``openvino-int8`` the step gets int8 weights (NNCF, activations fp32, so a caption
never depends on its batch-mates) and the cross projection int8 weights and activations,
its scales fixed at conversion from the int8 tower's output on the generated calibration
photos (a per-step cost becomes a once-per-image one, where int8 GEMMs pay).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

__all__ = ["convert_cross", "convert_step", "install_blip_text"]


def _shape(text_decoder: Any) -> tuple[int, int, int, int]:
    """(layers, heads, head size, hidden size) of BLIP's text decoder."""
    config = text_decoder.config
    heads = int(config.num_attention_heads)
    return int(config.num_hidden_layers), heads, int(config.hidden_size) // heads, int(config.hidden_size)


def _heads(x: Any, head_dim: int) -> Any:
    return x.view(*x.shape[:-1], -1, head_dim).transpose(1, 2)


def _attend(attention: Any, hidden: Any, keys_t: Any, values: Any, mask: Any, head_dim: int) -> Any:
    """One BLIP attention block (query projection, scaled dot product, output dense + norm),
    with the keys given transposed (``(batch, heads, head size, keys)``)."""
    import torch

    # The scale on the one-token query, not on the scores: OpenVINO otherwise scaled all
    # 577 cached image keys at every step (42 -> 32 ms a step at BLIP-base size).
    query = _heads(attention.self.query(hidden), head_dim) * (1.0 / math.sqrt(head_dim))
    scores = torch.matmul(query, keys_t)
    if mask is not None:
        scores = scores + mask
    context = torch.matmul(torch.softmax(scores, dim=-1), values).permute(0, 2, 1, 3)
    return attention.output(context.reshape(*context.shape[:2], -1), hidden)


def _cross_module(text_decoder: Any) -> Any:
    import torch

    layers, _, head_dim, _ = _shape(text_decoder)

    class Cross(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = text_decoder.bert.encoder.layer

        def forward(self, image_embeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = []
            for layer in self.layers[:layers]:
                attention = layer.crossattention.self
                # Keys transposed once here rather than at every step.
                out += [_heads(attention.key(image_embeds), head_dim).transpose(-1, -2),
                        _heads(attention.value(image_embeds), head_dim)]
            return tuple(out)

    return Cross().eval()


def _step_module(text_decoder: Any) -> Any:
    import torch

    layers, _, head_dim, _ = _shape(text_decoder)

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = text_decoder.bert.encoder.layer
            self.cls = text_decoder.cls

        def forward(self, hidden: torch.Tensor, mask: torch.Tensor, *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
            new = []
            for i, layer in enumerate(self.layers[:layers]):
                past_keys, past_values, cross_keys, cross_values = kv[2 * i], kv[2 * i + 1], kv[2 * (layers + i)], \
                    kv[2 * (layers + i) + 1]
                keys, values = (_heads(layer.attention.self.key(hidden), head_dim),
                                _heads(layer.attention.self.value(hidden), head_dim))
                new += [keys, values]
                attended = _attend(layer.attention, hidden, torch.cat([past_keys, keys], dim=2).transpose(-1, -2),
                                   torch.cat([past_values, values], dim=2), mask, head_dim)
                attended = _attend(layer.crossattention, attended, cross_keys, cross_values, None, head_dim)
                hidden = layer.feed_forward_chunk(attended)
            # The head is per position: only the last one, as generate asks.
            return (self.cls(hidden[:, -1:, :]), *new)

    return Step().eval()


def convert_cross(model: Any) -> Any:
    """BLIP's image-embeddings-to-cross-attention-keys-and-values projection as an OpenVINO model (fp32)."""
    import openvino
    import torch

    text_decoder = model.text_decoder
    width = int(text_decoder.config.encoder_hidden_size)
    with torch.no_grad():
        return openvino.convert_model(_cross_module(text_decoder), example_input=torch.zeros(2, 3, width),
                                      input=[openvino.PartialShape([-1, -1, width])])


def convert_step(model: Any) -> Any:
    """BLIP's decoder layers and LM head as one OpenVINO step model (fp32)."""
    import openvino
    import torch

    text_decoder = model.text_decoder
    layers, heads, head_dim, hidden = _shape(text_decoder)
    # Example shapes other than 1 everywhere, so the trace keeps every dimension dynamic.
    batch, length, past, images = 2, 3, 2, 4
    kv = [torch.zeros(batch, heads, past, head_dim) for _ in range(2 * layers)]
    kv += [torch.zeros(batch, heads, images, head_dim).transpose(-1, -2).contiguous(),
           torch.zeros(batch, heads, images, head_dim)] * layers
    shapes = [openvino.PartialShape([-1, -1, hidden]), openvino.PartialShape([-1, 1, -1, -1])]
    shapes += [openvino.PartialShape([-1, heads, -1, head_dim])] * (2 * layers)
    shapes += [openvino.PartialShape([-1, heads, head_dim, -1]), openvino.PartialShape([-1, heads, -1, head_dim])] * layers
    with torch.no_grad():
        return openvino.convert_model(_step_module(text_decoder),
                                      example_input=(torch.zeros(batch, length, hidden),
                                                     torch.zeros(batch, 1, length, past + length), *kv),
                                      input=shapes)


def _text_module() -> type:
    import torch

    class OpenVINOBlipText(torch.nn.Module):
        """Stands in for BLIP's ``text_decoder.bert``: the token embeddings on torch, the
        cross projection once per image, the compiled step for each ``generate`` call,
        returning the last position's logits (``text_decoder.cls`` passes them through)."""

        def __init__(self, cross: Any, step: Any, xmls: tuple[Path, Path], bert: Any) -> None:
            super().__init__()
            self.cross, self.step, self.xmls = cross, step, xmls
            self.config = bert.config
            self.embeddings = bert.embeddings  # word and position embeddings + norm, as torch makes them
            self.layers_kv = _shape(bert)[:3]
            self._requests = threading.local()

        def get_input_embeddings(self) -> Any:
            return self.embeddings.word_embeddings

        def _request(self, name: str) -> Any:
            # One infer request per thread and part, reused across the steps of a generate call.
            request = getattr(self._requests, name, None)
            if request is None:
                request = getattr(self, name).create_infer_request()
                setattr(self._requests, name, request)
            return request

        def _infer(self, name: str, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
            request = self._request(name)
            # Shared, not copied: the cache's tensors outlive this synchronous call.
            request.infer([t.detach().float().contiguous().numpy() for t in inputs], share_inputs=True)
            compiled = getattr(self, name)
            return [torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(len(compiled.outputs))]

        def _project(self, image_embeds: torch.Tensor) -> list[torch.Tensor]:
            import openvino

            # Written straight into fresh torch tensors, saving a copy of every image key and
            # value (24 x 14 MB a batch of 8 at BLIP-base size).
            layers, heads, head_dim = self.layers_kv
            batch, tokens = image_embeds.shape[:2]
            out = [torch.empty(batch, heads, head_dim, tokens) if i % 2 == 0 else torch.empty(batch, heads, tokens, head_dim)
                   for i in range(2 * layers)]
            request = self._request("cross")
            for i, tensor in enumerate(out):
                request.set_output_tensor(i, openvino.Tensor(tensor.numpy(), shared_memory=True))
            request.infer([image_embeds.numpy()], share_inputs=True)
            return out

        def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                    position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                    encoder_hidden_states: torch.Tensor | None = None, encoder_attention_mask: torch.Tensor | None = None,
                    cache: Any = None, use_cache: bool | None = None, past_key_values: Any = None,
                    **kwargs: Any) -> Any:
            from transformers.cache_utils import DynamicCache, EncoderDecoderCache
            from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

            from .openvino_language import causal_mask

            if kwargs.get("output_hidden_states") or kwargs.get("output_attentions") or encoder_hidden_states is None:
                raise NotImplementedError("BLIP's text decoder runs on OpenVINO, which captions images and returns "
                                          "the logits only; load the model with runtime='torch' for this call")
            if encoder_attention_mask is not None and not bool(encoder_attention_mask.all()):
                raise NotImplementedError("BLIP's text decoder on OpenVINO sees every image token")
            cache = cache if cache is not None else past_key_values
            if cache is None or use_cache is False:
                cache = None  # a one-off call: the whole sequence, nothing kept
                work = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
            else:
                if not isinstance(cache, EncoderDecoderCache):  # as BlipTextEncoder wraps generate's first cache
                    cache = EncoderDecoderCache(cache, DynamicCache(config=self.config))
                work = cache
            layers, heads, head_dim = self.layers_kv
            past = work.self_attention_cache.get_seq_length()
            hidden = self.embeddings(input_ids=input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
                                     cache_length=past)
            batch, length = hidden.shape[:2]
            if not work.is_updated.get(0):
                cross = self._project(encoder_hidden_states.detach().float().contiguous())
                for i in range(layers):
                    work.cross_attention_cache.update(cross[2 * i], cross[2 * i + 1], i)
                    work.is_updated[i] = True
            crossed = work.cross_attention_cache.layers
            if past:
                own = work.self_attention_cache.layers
                kv = [t for i in range(layers) for t in (own[i].keys, own[i].values)]
            else:
                kv = [torch.zeros(batch, heads, 0, head_dim)] * (2 * layers)
            kv += [t for i in range(layers) for t in (crossed[i].keys, crossed[i].values)]
            outputs = self._infer("step", [hidden, causal_mask(attention_mask, batch, past, length), *kv])
            for i in range(layers):
                work.self_attention_cache.update(outputs[1 + 2 * i], outputs[2 + 2 * i], i)
            return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=outputs[0].to(hidden.dtype),
                                                                cache=cache)

    return OpenVINOBlipText


def install_blip_text(model: Any, cross: Any, step: Any, xmls: tuple[Path, Path]) -> None:
    """Put the compiled parts in place of ``text_decoder.bert`` and a pass-through in place of
    ``text_decoder.cls``; the torch layers and head are let go."""
    from .openvino_language import logits_pass_through

    text_decoder = model.text_decoder
    text_decoder.bert = _text_module()(cross, step, xmls, text_decoder.bert)
    text_decoder.cls = logits_pass_through()
