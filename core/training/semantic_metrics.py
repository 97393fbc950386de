"""Caption metrics that need a model: BERTScore and CLIPScore / RefCLIPScore.

* :func:`bert_score` — BERTScore (Zhang et al. 2020) as the ``bert-score`` package computes
  it: each caption through the model (special tokens added; RoBERTa/GPT-2 tokenizers with a
  leading space), the hidden states of layer *layer* (default ``roberta-large`` layer 17),
  L2-normalised; precision = mean over the model caption's tokens of the best cosine with a
  reference token, recall the other way round, special tokens ([CLS]/[SEP], ``<s>``/``</s>``)
  weighing nothing; F1 their harmonic mean.  With several references each of P, R, F1 is
  the best over them.  *Baseline rescaling* ``(x - b) / (1 - b)`` uses the baseline file of
  that model and layer where one exists (``rescale_baseline.tsv`` in a local model folder,
  else the ``bert-score`` package's file if that package is installed); otherwise the
  numbers are raw and the result says so.
* :func:`clip_score` — CLIPScore (Hessel et al. 2021): ``2.5 · max(cos(image, caption), 0)``
  per image with a CLIP model (default ViT-B/32), and RefCLIPScore, the harmonic mean of
  that and ``max(max over references of cos(caption, reference), 0)``.

Models are a hub id (downloaded on first use when the hub answers) or a local folder.
When one cannot be loaded, :func:`semantic_metrics` names the metric skipped and why, and
the other metrics are still computed.  torch and transformers are imported lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserFacingError

__all__ = [
    "CLIP_WEIGHT",
    "DEFAULT_BERTSCORE_LAYER",
    "DEFAULT_BERTSCORE_MODEL",
    "DEFAULT_CLIP_MODEL",
    "MetricModelError",
    "SemanticMetrics",
    "bert_score",
    "clip_score",
    "semantic_metrics",
]

DEFAULT_BERTSCORE_MODEL = "roberta-large"
#: The layer bert-score itself uses for roberta-large (its tuned default).
DEFAULT_BERTSCORE_LAYER = 17
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
#: CLIPScore's weight w in ``w · max(cos, 0)`` (Hessel et al.: stretches scores towards 0..1).
CLIP_WEIGHT = 2.5
#: The baseline file a local BERTScore model folder may carry (bert-score's ``LAYER,P,R,F`` CSV).
BASELINE_FILE = "rescale_baseline.tsv"


class MetricModelError(UserFacingError):
    """A metric's model could not be loaded (not downloaded and no hub, a broken folder...)."""


def _load(loader: Any, name: str) -> Any:
    """``loader.from_pretrained(name)``: a local folder as it is, a hub id from the cache, else
    downloaded when the hub answers; one :class:`MetricModelError` when it cannot be had."""
    path = Path(name).expanduser()
    looks_like_path = name.startswith(("/", "~", ".")) or "\\" in name or name.count("/") > 1
    if looks_like_path and not path.is_dir():
        raise MetricModelError(f"cannot load '{name}': there is no such model folder")
    if path.is_dir():
        try:
            return loader.from_pretrained(str(path))
        except Exception as exc:  # noqa: BLE001 - any loading failure of a user's folder is one message
            raise MetricModelError(f"cannot load '{name}' ({type(exc).__name__}: {exc})") from None
    try:
        return loader.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    from core.captioning.hub import hub_unreachable

    reason = hub_unreachable(name)
    if reason is not None:
        raise MetricModelError(f"'{name}' is not downloaded and {reason}; give a local folder instead") from None
    try:
        return loader.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001
        raise MetricModelError(f"cannot load '{name}' ({type(exc).__name__}: {exc})") from None


def _pick_device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _ref_lists(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} captions but {len(references)} references")
    return [[r] if isinstance(r, str) else list(r) for r in references]


# --------------------------------------------------------------------------- BERTScore


def _baseline(model: str, layer: int, baseline: str | Path | None) -> tuple[list[float] | None, str | None]:
    """``([P, R, F] baseline or None, its file)`` for *model* at *layer*."""
    candidates = [Path(baseline)] if baseline is not None else []
    if baseline is None and Path(model).expanduser().is_dir():
        candidates.append(Path(model).expanduser() / BASELINE_FILE)
    elif baseline is None:
        try:
            import bert_score as package  # optional: only its baseline files are used

            candidates.append(Path(package.__file__).parent / "rescale_baseline" / "en" / f"{model}.tsv")
        except ImportError:
            pass
    for path in candidates:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines()[1:]:
                cells = line.split(",")
                if cells and cells[0].strip() == str(layer):
                    return [float(c) for c in cells[1:4]], str(path)
    return None, None


@dataclass
class _BertScorer:
    model: Any
    tokenizer: Any
    layer: int
    device: Any

    def encode(self, text: str) -> list[int]:
        """Token ids as bert-score's ``sent_encode`` makes them."""
        text = text.strip()
        if not text:
            return list(self.tokenizer.build_inputs_with_special_tokens([]))
        limit = self.tokenizer.model_max_length
        if limit > 100_000:  # a tokenizer saved without a limit says "very large"; the model's own then
            limit = self.model.config.max_position_embeddings
        kwargs: dict[str, Any] = {"add_special_tokens": True, "truncation": True, "max_length": limit}
        if type(self.tokenizer).__name__.removesuffix("Fast") in ("GPT2Tokenizer", "RobertaTokenizer"):
            kwargs["add_prefix_space"] = True
        return list(self.tokenizer.encode(text, **kwargs))

    def embed(self, texts: Sequence[str], batch_size: int) -> list[tuple[Any, Any]]:
        """Per text: ``(normalised embeddings of layer *layer*, weight per token)``."""
        import torch

        specials = {self.tokenizer.cls_token_id, self.tokenizer.sep_token_id}
        out = []
        for start in range(0, len(texts), batch_size):
            ids = [self.encode(t) for t in texts[start : start + batch_size]]
            width = max(len(i) for i in ids)
            pad = self.tokenizer.pad_token_id or 0
            input_ids = torch.tensor([i + [pad] * (width - len(i)) for i in ids], device=self.device)
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids], device=self.device)
            with torch.inference_mode():
                hidden = self.model(input_ids=input_ids, attention_mask=mask,
                                    output_hidden_states=True).hidden_states[self.layer].float()
            hidden = hidden / hidden.norm(dim=-1, keepdim=True)
            for row, token_ids in zip(hidden, ids, strict=True):
                weights = torch.tensor([0.0 if t in specials else 1.0 for t in token_ids], device=self.device)
                out.append((row[: len(token_ids)], weights))
        return out


def _prf(hyp: tuple[Any, Any], ref: tuple[Any, Any]) -> tuple[float, float, float]:
    sim = hyp[0] @ ref[0].T
    hw, rw = hyp[1] / hyp[1].sum().clamp(min=1e-12), ref[1] / ref[1].sum().clamp(min=1e-12)
    p = float((sim.max(dim=1).values * hw).sum())
    r = float((sim.max(dim=0).values * rw).sum())
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def bert_score(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]], *,
               model: str = DEFAULT_BERTSCORE_MODEL, layer: int | None = None,
               baseline: str | Path | None = None, rescale: bool = True, device: str = "auto",
               batch_size: int = 32) -> dict[str, Any]:
    """BERTScore P/R/F1 averaged over the captions (see the module docstring), plus
    ``per_image`` ``[(P, R, F1)]``, ``layer``, ``rescaled`` and ``baseline_file``.

    *layer*: default 17 for ``roberta-large``, else the model's last layer.
    Raises :class:`MetricModelError` when *model* cannot be loaded.
    """
    from transformers import AutoModel, AutoTokenizer

    refs = _ref_lists(hypotheses, references)
    tokenizer = _load(AutoTokenizer, model)
    net = _load(AutoModel, model)
    if layer is None:
        config = net.config
        is_roberta_large = config.model_type == "roberta" and config.num_hidden_layers == 24
        layer = DEFAULT_BERTSCORE_LAYER if is_roberta_large else config.num_hidden_layers
    torch_device = _pick_device(device)
    scorer = _BertScorer(net.to(torch_device).eval(), tokenizer, int(layer), torch_device)
    flat_refs = [r for group in refs for r in group]
    hyp_emb = scorer.embed(list(hypotheses), batch_size)
    ref_emb = scorer.embed(flat_refs, batch_size)
    per_image: list[tuple[float, float, float]] = []
    at = 0
    for h, group in zip(hyp_emb, refs, strict=True):
        scores = [_prf(h, ref_emb[at + k]) for k in range(len(group))]
        at += len(group)
        per_image.append(tuple(max(s[i] for s in scores) for i in range(3)))  # type: ignore[misc]
    base, base_file = _baseline(model, int(layer), baseline) if rescale else (None, None)
    if base is not None:
        per_image = [tuple((v - b) / (1 - b) for v, b in zip(row, base, strict=True)) for row in per_image]  # type: ignore[misc]
    n = max(1, len(per_image))
    mean = [sum(row[i] for row in per_image) / n for i in range(3)]
    return {"bertscore_p": mean[0], "bertscore_r": mean[1], "bertscore_f1": mean[2], "per_image": per_image,
            "layer": int(layer), "rescaled": base is not None, "baseline_file": base_file}


# --------------------------------------------------------------------------- CLIPScore


def _features(output: Any) -> Any:
    """A ``get_*_features`` result as a tensor (some versions return a model output)."""
    return output if hasattr(output, "norm") else output.pooler_output


def clip_score(images: Sequence[Any], hypotheses: Sequence[str],
               references: Sequence[str | Sequence[str]] | None = None, *, model: str = DEFAULT_CLIP_MODEL,
               device: str = "auto", batch_size: int = 32) -> dict[str, Any]:
    """CLIPScore (and RefCLIPScore when *references* are given) averaged over the images
    (PIL images), plus ``per_image`` rows; see the module docstring.
    Raises :class:`MetricModelError` when *model* cannot be loaded."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    if len(images) != len(hypotheses):
        raise ValueError(f"{len(images)} images but {len(hypotheses)} captions")
    refs = _ref_lists(hypotheses, references) if references is not None else None
    processor = _load(CLIPProcessor, model)
    torch_device = _pick_device(device)
    net = _load(CLIPModel, model).to(torch_device).eval()
    max_len = net.config.text_config.max_position_embeddings

    def texts(batch: Sequence[str]) -> Any:
        enc = processor(text=list(batch), return_tensors="pt", padding=True, truncation=True, max_length=max_len)
        with torch.inference_mode():
            f = _features(net.get_text_features(input_ids=enc["input_ids"].to(torch_device),
                                                attention_mask=enc["attention_mask"].to(torch_device))).float()
        return f / f.norm(dim=-1, keepdim=True)

    clip, ref_cos = [], []
    for start in range(0, len(images), batch_size):
        chunk = slice(start, start + batch_size)
        pixels = processor(images=list(images[chunk]), return_tensors="pt")["pixel_values"].to(torch_device)
        with torch.inference_mode():
            img = _features(net.get_image_features(pixel_values=pixels)).float()
        img = img / img.norm(dim=-1, keepdim=True)
        cand = texts(hypotheses[chunk])
        clip.extend((CLIP_WEIGHT * (img * cand).sum(-1).clamp(min=0)).tolist())
        if refs is not None:
            for vec, group in zip(cand, refs[chunk], strict=True):
                ref_cos.append(max(0.0, float((texts(group) @ vec).max())))
    result: dict[str, Any] = {"clipscore": sum(clip) / max(1, len(clip)), "per_image": clip}
    if refs is not None:
        ref_clip = [2 * c * r / (c + r) if c + r > 0 else 0.0 for c, r in zip(clip, ref_cos, strict=True)]
        result["refclipscore"] = sum(ref_clip) / max(1, len(ref_clip))
        result["per_image_ref"] = ref_clip
    return result


# --------------------------------------------------------------------------- both, for eval


@dataclass
class SemanticMetrics:
    """What :func:`semantic_metrics` computed, and what it skipped and why."""

    metrics: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def semantic_metrics(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]],
                     image_paths: Sequence[Any] | None = None, *,
                     bertscore_model: str | None = DEFAULT_BERTSCORE_MODEL, bertscore_layer: int | None = None,
                     clip_model: str | None = DEFAULT_CLIP_MODEL, device: str = "auto") -> SemanticMetrics:
    """BERTScore and CLIPScore/RefCLIPScore of one evaluation; a metric whose model is
    ``None`` (turned off) or cannot be loaded is named in ``skipped`` with the reason."""
    out = SemanticMetrics()
    if bertscore_model is None:
        out.skipped.append("BERTScore skipped: turned off")
    else:
        try:
            bs = bert_score(hypotheses, references, model=bertscore_model, layer=bertscore_layer, device=device)
            out.metrics.update({k: bs[k] for k in ("bertscore_p", "bertscore_r", "bertscore_f1")})
            if not bs["rescaled"]:
                out.notes.append(f"BERTScore not rescaled: no baseline file for {bertscore_model} layer {bs['layer']}")
        except MetricModelError as exc:
            out.skipped.append(f"BERTScore skipped: {exc}")
    if clip_model is None:
        out.skipped.append("CLIPScore skipped: turned off")
    elif image_paths is None:
        out.skipped.append("CLIPScore skipped: no images")
    else:
        from core.imaging import ImageDecodeError, load_rgb

        try:
            images = [load_rgb(p) for p in image_paths]
            cs = clip_score(images, hypotheses, references, model=clip_model, device=device)
            out.metrics.update({"clipscore": cs["clipscore"], "refclipscore": cs["refclipscore"]})
        except (MetricModelError, ImageDecodeError) as exc:
            out.skipped.append(f"CLIPScore skipped: {exc}")
    out.metrics = {k: v for k, v in out.metrics.items() if not math.isnan(v)}
    return out
