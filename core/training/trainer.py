"""Retrain a captioning model from the library's verified captions (a core job).

Trainable families (:data:`TRAINABLE_FAMILIES`): **BLIP** (``BlipForConditionalGeneration``),
**BLIP-2** with an OPT (decoder-only) or Flan-T5 (encoder-decoder) language model,
**GIT** (``GitForCausalLM``) and **VisionEncoderDecoder** (e.g. ViT-GPT2).  The generic
family (``AutoModelForImageTextToText``: Florence-2, LLaVA, SmolVLM, Qwen-VL, …) is refused
with a :class:`TrainingError` naming the trainable families.

:func:`train` is deliberately one explicit loop rather than a ``Trainer`` subclass, so
every step can be read top to bottom:

1. **Data** — :func:`core.training.data.collect_training_data` (verified captions, the
   shared fingerprint split); too little data is refused with a clear message.
2. **Model** — loaded through :func:`core.captioning.load_captioner` (``optimize="none"``,
   fp32), so every loading error reads the same as when captioning, and the family's
   captioner is reused for evaluation.  LoRA/QLoRA wrap it with peft
   (``get_peft_model``; gradient checkpointing is enabled *after* it, see the ML stack
   notes); full fine-tuning trains everything except, by default, the vision encoder.
   Training batches are built the way each family's captioner generates (what comes
   first, where generation stops, which labels are masked: see "batches" below).
3. **Frozen vision encoder → embeddings computed once.**  For BLIP, BLIP-2 and
   VisionEncoderDecoder, when the vision encoder is not trained, it runs once per training
   image under ``no_grad`` and every epoch reuses its ``last_hidden_state``: BLIP's text
   decoder gets it as ``encoder_hidden_states``, BLIP-2 runs its Q-Former and projection
   on it (:func:`blip2_loss`), VisionEncoderDecoder passes it as ``encoder_outputs``.  The
   vision encoder is kept in eval mode, so the loss is exactly the uncached one (tested).
   GIT's forward takes pixels only, so GIT always runs its image encoder.
   ``benchmarks/train_step.py`` measures the gain (BLIP).
4. **Loop** — AdamW, linear warm-up then cosine decay, gradient clipping, gradient
   accumulation, bf16/fp16 autocast on CUDA (fp16 with a GradScaler), evaluation on the
   validation split after every epoch (greedy captions → :mod:`.metrics`), early stopping
   after ``patience`` evaluations without improvement, best checkpoint by CIDEr + BLEU-4.
5. **Resume** — after every epoch the trainable weights, optimiser, scheduler, history
   and best checkpoint are saved in the run folder (``<library>.models/<name>.run``).
   Running the same ``train`` again (same name, settings and data) continues from the
   last finished epoch; a cancelled run loses at most the epoch in progress.
6. **Version** — the best weights are saved (adapter via ``save_pretrained``, or the whole
   model + processor for full fine-tuning) to ``<library>.models/<name>`` and registered
   as a :class:`~core.models.ModelVersion` with config, data snapshot and metrics
   (base model and trained), usable as ``--model NAME`` everywhere.

torch, transformers and peft are imported inside functions.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.jobs import (
    NEVER_CANCELLED,
    CancelToken,
    Progress,
    ProgressCallback,
    no_progress,
)
from core.models import JobState

from .config import TrainingConfig, default_target_modules
from .data import TrainingData, TrainingExample, collect_training_data
from .metrics import caption_metrics, selection_score

__all__ = ["TRAINABLE_FAMILIES", "TrainingError", "TrainingResult", "blip2_loss", "blip_loss", "train",
           "vision_encoder_decoder_loss"]

log = logging.getLogger(__name__)

#: Families :func:`train` knows how to build training batches for.
TRAINABLE_FAMILIES = ("blip", "blip2", "git", "vision_encoder_decoder")
#: JPEG draft decode size for training images (as for captioning).
DECODE_DRAFT_SIZE = 448


class TrainingError(Exception):
    """A run that cannot be started or continued (the message says why and what to do)."""


@dataclass
class TrainingResult:
    name: str
    method: str
    version_id: int | None = None
    path: str | None = None
    cancelled: bool = False
    resumed_from_epoch: int = 0
    epochs_run: int = 0
    best_epoch: int = 0
    stopped_early: bool = False
    base_metrics: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    train_size: int = 0
    validation_size: int = 0
    skipped_images: list[str] = field(default_factory=list)
    cached_vision: bool = False
    trainable_parameters: int = 0
    seconds: float = 0.0
    job_id: int = 0


# --------------------------------------------------------------------------- model setup


def _family_of(captioner: Any) -> str:
    """The captioner's family as a module name (``vision-encoder-decoder`` → ``vision_encoder_decoder``)."""
    family = getattr(captioner, "family", None) or captioner.identity.get("family")
    return str(family).replace("-", "_")


def _vision_module(family: str, model: Any) -> Any | None:
    """The vision encoder of a (plain transformers) model, or None if unknown."""
    if family in ("blip", "blip2"):
        return model.vision_model
    if family == "git":
        return model.git.image_encoder
    if family == "vision_encoder_decoder":
        return model.encoder
    return getattr(model, "vision_model", None) or getattr(model, "vision_tower", None)


def _unsupported_family(family: str, captioner: Any) -> TrainingError:
    model_type = getattr(getattr(getattr(captioner, "model", None), "config", None), "model_type", None)
    what = f"{family} models" + (f" ({model_type})" if model_type and model_type != family else "")
    return TrainingError(
        f"training {what} is not supported yet; trainable model families: {', '.join(TRAINABLE_FAMILIES)} "
        "(e.g. Salesforce/blip-image-captioning-*, Salesforce/blip2-*, microsoft/git-*, "
        "nlpconnect/vit-gpt2-image-captioning)")


def _qlora_device(config: TrainingConfig) -> str:
    """Where a QLoRA run can go: ``cuda`` when present, else ``cpu`` if bitsandbytes runs 4-bit there."""
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise TrainingError("QLoRA needs the bitsandbytes package: pip install bitsandbytes "
                            "(or use --method lora)") from exc
    wanted = str(config.device)
    if wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda was asked for but no CUDA GPU is available")
        return "cuda" if wanted == "auto" else wanted
    if wanted == "mps":
        raise TrainingError("QLoRA (bitsandbytes 4-bit) does not run on Apple GPUs; use --method lora")
    # bitsandbytes >= 0.45 has CPU kernels for 4-bit layers; older builds fail here.
    try:
        import bitsandbytes.functional as bnbf

        probe = torch.randn(64, 64)
        packed, state = bnbf.quantize_4bit(probe, quant_type="nf4")
        restored = bnbf.dequantize_4bit(packed, state)
        if restored.shape != probe.shape or not torch.isfinite(restored).all():
            raise RuntimeError("4-bit round trip gave a wrong result")
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable on this CPU
        raise TrainingError(f"QLoRA needs an NVIDIA GPU with CUDA, or a bitsandbytes build with CPU "
                            f"support ({exc}); use --method lora on this machine") from exc
    return "cpu"


def _load_qlora_captioner(base: str, config: TrainingConfig) -> Any:
    """The base model quantized to 4 bit (bitsandbytes NF4), inside its family's captioner.

    On CUDA the 4-bit layers compute in bf16 (fp16 where bf16 is missing); on a CPU,
    where bitsandbytes also runs, in fp32 — slower than plain LoRA, but the base model
    takes ~1/4 of the memory, which is what lets a large model (BLIP-2) train at all.
    The weights are loaded once, already quantized, through the same loader as for
    captioning (family class, processor, prompts, error messages).
    """
    import torch
    from transformers import BitsAndBytesConfig

    from core.captioning import load_captioner

    device = _qlora_device(config)
    if device.startswith("cuda"):
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        device_map: dict[str, Any] = {"": torch.device(device).index or 0}
    else:
        compute, device_map = torch.float32, {"": "cpu"}
        log.warning("QLoRA on the CPU: the base model is held in 4 bit to save memory, "
                    "but steps are slower than --method lora")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                               bnb_4bit_use_double_quant=True)
    return load_captioner(base, device=device, optimize="none",
                          model_kwargs={"quantization_config": quant, "device_map": device_map})


def _all_linear_targets(model: Any, frozen_vision: Any | None) -> list[str]:
    """Every ``nn.Linear`` except the LM head (and a frozen vision encoder), as full module names.

    peft's own ``"all-linear"`` keeps BLIP's head (``text_decoder.cls.predictions.decoder``)
    because BLIP does not report it as the output embeddings; that head is tied to the
    input embeddings, so merging a LoRA into it would change the inputs too and the merged
    model would caption differently from the trained one.
    """
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    skip = {id(m) for m in frozen_vision.modules()} if frozen_vision is not None else set()
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or id(module) in skip or module is head:
            continue
        if name.endswith(("lm_head", "predictions.decoder", "output_projection")):
            continue
        names.append(name)
    return names


def _prepare_model(captioner: Any, family: str, config: TrainingConfig) -> tuple[Any, Any, Any]:
    """``(trainable, inner, targets)``: the module to optimise/save, the transformers model, LoRA targets."""
    inner = captioner.model
    vision = _vision_module(family, inner)
    targets: Any = None
    if config.uses_lora:
        from peft import LoraConfig, get_peft_model

        if config.method == "qlora":
            from peft import prepare_model_for_kbit_training

            inner = prepare_model_for_kbit_training(inner, use_gradient_checkpointing=False)
        model_type = getattr(inner.config, "model_type", "")
        text_type = getattr(getattr(inner.config, "text_config", None), "model_type", None)
        targets = config.target_modules or default_target_modules(model_type, train_vision=config.train_vision,
                                                                  language_model_type=text_type)
        if targets == "all-linear":
            targets = _all_linear_targets(inner, vision if not config.train_vision else None)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=targets, bias="none")
        with warnings.catch_warnings():
            # peft reads a transformers property deprecated in 5.x; nothing a user can act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            trainable = get_peft_model(inner, lora)
        inner = trainable.base_model.model
        if not config.train_vision and vision is not None:
            for p in vision.parameters():  # "all-linear" may have reached into it
                p.requires_grad_(False)
    else:
        trainable = inner
        for p in inner.parameters():
            p.requires_grad_(True)
        if vision is not None and not config.train_vision:
            for p in vision.parameters():
                p.requires_grad_(False)
    if config.gradient_checkpointing:
        # After get_peft_model: enabling it before makes BLIP fail with "a leaf Variable
        # that requires grad is being used in an in-place operation".
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # transformers also hooks the input embeddings so their output requires grad (needed
        # by *reentrant* checkpointing only).  Under LoRA that output is a frozen leaf, and
        # GIT adds its position embeddings to it in place: "a leaf Variable that requires
        # grad is being used in an in-place operation".  Non-reentrant checkpointing does
        # not need the hook.
        if hasattr(inner, "disable_input_require_grads"):
            inner.disable_input_require_grads()
    return trainable, inner, targets


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise TrainingError(f"the saved run does not fit this model ({missing[0]} not found)")
    import torch

    with torch.no_grad():
        for n, value in state.items():
            params[n].copy_(value.to(params[n].device))


# --------------------------------------------------------------------------- batches
#
# Each family's training batch mirrors how its captioner generates (core/captioning/families):
#
# * blip — ``[DEC] caption [SEP]``: the processor starts with ``[CLS]`` but ``generate``
#   starts from ``[DEC]`` (bos), so the first id is replaced; labels = input ids, padding
#   masked (BLIP's text decoder shifts them itself).
# * blip2, decoder-only LM (OPT) — ``<image> x num_query_tokens, BOS, caption, EOS``: the
#   captioner's prefix (placeholders, then what the tokenizer makes of the empty prompt,
#   with a BOS added if missing), then the caption and EOS.  Labels are aligned with the
#   input ids (``Blip2ForConditionalGeneration.forward`` keeps the last ``labels.size(1)``
#   logits and its causal-LM loss shifts by one) and are -100 on the placeholders, BOS
#   and padding.
# * blip2, encoder-decoder LM (Flan-T5) — the encoder input is the captioner's prefix
#   (placeholders + ``</s>``); labels = ``caption EOS`` go to the T5 decoder, which shifts
#   them right behind ``decoder_start_token_id`` itself.
# * git — ``[CLS] caption [SEP]`` (model bos … eos); ``GitForCausalLM`` drops the first
#   label and shifts, so labels = input ids with padding masked.
# * vision_encoder_decoder — labels = ``caption EOS``; ``decoder_input_ids`` =
#   ``decoder_start_token_id`` + labels[:-1], built here so checkpoints without a
#   ``pad_token_id`` (which ``shift_tokens_right`` needs) train too.
#
# Caption tokens are produced without special tokens and padded here, so the tokenizer is
# never modified (GPT-2 has no pad token; padding is masked out of the loss anyway).

#: Families whose frozen vision encoder output is computed once and reused every epoch.
CACHEABLE_VISION = ("blip", "blip2", "vision_encoder_decoder")


def _eos_id(captioner: Any) -> int:
    """The token that ends a caption: the first id the captioner stops at."""
    ids = captioner._eos_token_ids()
    if ids:
        return ids[0]
    tok = captioner.tokenizer
    for value in (getattr(tok, "eos_token_id", None), getattr(tok, "sep_token_id", None)):
        if value is not None:
            return int(value)
    raise TrainingError("the model has no end-of-sequence token (generation_config.eos_token_id); "
                        "captions could not be taught to end")


def _pad(rows: list[list[int]], value: int) -> Any:
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _encode_text(captioner: Any, family: str, captions: list[str], max_length: int) -> dict[str, Any]:
    """Token tensors for *captions* (CPU, row i = caption i), keyed like the loss function's arguments."""
    tok = captioner.tokenizer
    inner = captioner.model
    if family == "blip":
        enc = tok(captions, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
        input_ids = enc["input_ids"].clone()
        input_ids[:, 0] = inner.config.text_config.bos_token_id  # [CLS] -> [DEC], as generate() starts
        mask = enc["attention_mask"]
        return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100)}

    caption_ids = [[int(i) for i in ids] for ids in tok(captions, add_special_tokens=False)["input_ids"]]
    eos = _eos_id(captioner)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    if family == "git":
        bos = inner.config.bos_token_id if inner.config.bos_token_id is not None else tok.cls_token_id
        rows = [[int(bos), *ids[: max_length - 2], eos] for ids in caption_ids]
        input_ids = _pad(rows, pad)
        mask = _pad([[1] * len(r) for r in rows], 0)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100)}
    if family == "vision_encoder_decoder":
        start = inner.generation_config.decoder_start_token_id
        if start is None:
            start = inner.config.decoder_start_token_id
        if start is None:
            raise TrainingError("the model has no decoder_start_token_id; set it in its config.json")
        targets = [[*ids[: max_length - 1], eos] for ids in caption_ids]
        return {"decoder_input_ids": _pad([[int(start), *t[:-1]] for t in targets], pad),
                "labels": _pad(targets, -100)}
    if family == "blip2":
        config = inner.config
        prefix = [int(config.image_token_id)] * int(config.num_query_tokens)
        prompt = captioner._tokenize_prompt("")  # as Blip2Captioner._encode with no prompt
        if config.text_config.is_encoder_decoder:
            input_ids = _pad([prefix + prompt] * len(captions), pad)
            targets = [[*ids[: max_length - 1], eos] for ids in caption_ids]
            return {"input_ids": input_ids, "attention_mask": input_ids.new_ones(input_ids.shape),
                    "labels": _pad(targets, -100)}
        bos = getattr(config.text_config, "bos_token_id", None)
        if bos is not None and (not prompt or prompt[0] != bos):
            prompt = [int(bos), *prompt]
        room = max(1, max_length - len(prompt) - 1)  # max_length counts the text tokens (BOS … EOS)
        prefix = prefix + prompt
        rows = [prefix + [*ids[:room], eos] for ids in caption_ids]
        input_ids = _pad(rows, pad)
        mask = _pad([[1] * len(r) for r in rows], 0)
        labels = input_ids.masked_fill(mask == 0, -100)
        labels[:, : len(prefix)] = -100
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    raise TrainingError(f"no training batches for the {family} family")


def _pixel_values(captioner: Any, images: list[Any]) -> Any:
    # VisionEncoderDecoder captioners hold a bare image processor (no processor.image_processor).
    return captioner._pixel_values(images, getattr(captioner, "image_processor", None))


def _vision_embeds(vision: Any, pixel_values: Any) -> Any:
    """What the model's own forward takes from its (frozen) vision encoder: the last hidden state."""
    return vision(pixel_values=pixel_values).last_hidden_state


def blip_loss(model: Any, *, input_ids: Any, attention_mask: Any, labels: Any,
              pixel_values: Any = None, image_embeds: Any = None) -> Any:
    """BLIP captioning loss from pixels, or from precomputed vision embeddings.

    With ``image_embeds`` (``model.vision_model(pixel_values).last_hidden_state``) the
    vision encoder is skipped; the result equals ``model(pixel_values=...).loss``.
    """
    if image_embeds is None:
        image_embeds = model.vision_model(pixel_values=pixel_values).last_hidden_state
    out = model.text_decoder(input_ids=input_ids, attention_mask=attention_mask,
                             encoder_hidden_states=image_embeds, labels=labels, reduction="mean")
    return out.loss


def blip2_loss(model: Any, *, input_ids: Any, attention_mask: Any, labels: Any,
               pixel_values: Any = None, image_embeds: Any = None) -> Any:
    """BLIP-2 captioning loss from pixels, or from precomputed vision embeddings.

    With ``image_embeds`` (``model.vision_model(pixel_values).last_hidden_state``) only the
    vision encoder is skipped: the Q-Former and the projection (trainable) run here as in
    ``Blip2ForConditionalGeneration.get_image_features``, and the model's own forward
    (``mm_encoder_outputs``) computes the loss, so it equals ``model(pixel_values=...).loss``.
    """
    if image_embeds is None:
        return model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                     labels=labels).loss
    import torch
    from transformers.models.blip_2.modeling_blip_2 import (
        BaseModelOutputWithVisionQformerOutputs,
    )

    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    query_tokens = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    qformer = model.qformer(query_embeds=query_tokens, encoder_hidden_states=image_embeds,
                            encoder_attention_mask=image_mask, return_dict=True)
    query_output = qformer.last_hidden_state
    if query_output.dtype != image_embeds.dtype:  # the Q-Former is kept in fp32
        query_output = query_output.to(image_embeds.dtype)
    image = BaseModelOutputWithVisionQformerOutputs(
        last_hidden_state=image_embeds, pooler_output=model.language_projection(query_output),
        qformer_outputs=qformer)
    return model(pixel_values=None, input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                 mm_encoder_outputs={"image": image}).loss


def vision_encoder_decoder_loss(model: Any, *, decoder_input_ids: Any, labels: Any,
                                pixel_values: Any = None, image_embeds: Any = None) -> Any:
    """VisionEncoderDecoder loss from pixels, or from precomputed encoder outputs (``image_embeds``)."""
    if image_embeds is None:
        return model(pixel_values=pixel_values, decoder_input_ids=decoder_input_ids, labels=labels).loss
    from transformers.modeling_outputs import BaseModelOutput

    return model(encoder_outputs=BaseModelOutput(last_hidden_state=image_embeds),
                 decoder_input_ids=decoder_input_ids, labels=labels).loss


def _loss(family: str, inner: Any, batch: dict[str, Any]) -> Any:
    if family == "blip":
        return blip_loss(inner, **batch)
    if family == "blip2":
        return blip2_loss(inner, **batch)
    if family == "vision_encoder_decoder":
        return vision_encoder_decoder_loss(inner, **batch)
    return inner(**batch).loss  # git: input_ids, attention_mask, pixel_values, labels


# --------------------------------------------------------------------------- run folder


def _config_key(base: str, config: TrainingConfig, data: TrainingData) -> dict[str, Any]:
    """What must match for a run folder to be resumed."""
    return {"base_model": base, "config": config.to_dict(), "data": data.snapshot()}


def _schedule(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _load_images(examples: list[TrainingExample], skipped: list[str]) -> tuple[list[TrainingExample], list[Any]]:
    from core.imaging import ImageDecodeError, load_rgb

    kept, images = [], []
    for ex in examples:
        try:
            images.append(load_rgb(ex.path, draft_size=DECODE_DRAFT_SIZE))
            kept.append(ex)
        except ImageDecodeError as exc:
            skipped.append(f"{ex.path}: {exc}")
    return kept, images


# --------------------------------------------------------------------------- the job


def train(
    library: Any,
    base_model: str,
    name: str,
    config: TrainingConfig | None = None,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingResult:
    """Train *base_model* on the library's verified captions and save it as version *name*.

    *on_epoch* receives each evaluation record (``epoch``, ``loss``, metrics), epoch 0
    being the base model — for a live chart.  Returns a :class:`TrainingResult`;
    ``cancelled`` results leave the run folder behind so the same call resumes.

    Raises:
        InsufficientDataError: too few verified captions (a ``ValueError``).
        TrainingError: bad name, unsupported family, a run folder that does not match.
        ModelLoadError: the base model cannot be loaded.
    """
    import torch

    from core.captioning import load_captioner
    from core.captioning.engine import resolve_model
    from core.captioning.settings import GenerationSettings

    from . import versions

    config = config or TrainingConfig()
    started = time.monotonic()
    versions.validate_name(name)
    if versions.get_version(library, name) is not None:
        raise TrainingError(f"a model version named '{name}' already exists; choose another --name "
                            "(or delete it with 'captiondesk models delete')")
    data = collect_training_data(library, val_ratio=config.val_ratio, seed=config.seed,
                                 include_imports=config.include_imports)
    data.require()
    resolved = resolve_model(library, base_model, None)
    if resolved.adapter is not None:
        raise TrainingError(f"'{base_model}' is a LoRA version; train from its base model "
                            f"'{resolved.model_name}' instead (or export it merged and train from that folder)")
    base = resolved.model_name
    result = TrainingResult(name=name, method=config.method)

    run_dir = versions.run_dir(library, name)
    key = _config_key(base, config, data)
    state_path = run_dir / "state.pt"
    if (run_dir / "run.json").is_file():
        saved = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        if saved != json.loads(json.dumps(key)):
            raise TrainingError(
                f"an unfinished run named '{name}' exists with different settings or data ({run_dir}); "
                "re-run it with the same settings to resume, choose another --name, or delete that folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(key), encoding="utf-8")

    params = {"base_model": base, "name": name, "config": config.to_dict(),
              "train": len(data.train), "validation": len(data.validation)}
    with library.job("train", params) as job_id:
        result.job_id = job_id

        def report(done: int, total: int | None, message: str, **counts: int) -> None:
            progress(Progress(done, total, message, counts))

        report(0, None, "Loading model")
        if config.method == "qlora":
            captioner = _load_qlora_captioner(base, config)
        else:
            captioner = load_captioner(base, device=config.device, optimize="none")
        family = _family_of(captioner)
        if family not in TRAINABLE_FAMILIES:
            error = _unsupported_family(family, captioner)
            captioner.close()
            raise error
        device = captioner.device
        trainable, inner, targets = _prepare_model(captioner, family, config)
        result.trainable_parameters = sum(p.numel() for p in trainable.parameters() if p.requires_grad)
        params_to_train = [p for p in trainable.parameters() if p.requires_grad]

        # -- data into tensors ---------------------------------------------------
        report(0, None, "Reading images")
        train_ex, train_images = _load_images(data.train, result.skipped_images)
        val_ex, val_images = _load_images(data.validation, result.skipped_images)
        if not train_ex or not val_ex:
            raise TrainingError("none of the captioned images could be read: " + "; ".join(result.skipped_images[:3]))
        result.train_size, result.validation_size = len(train_ex), len(val_ex)
        text = _encode_text(captioner, family, [e.caption for e in train_ex], config.max_length)
        settings = GenerationSettings(max_new_tokens=config.max_new_tokens)
        val_batches = [captioner.preprocess(val_images[i : i + config.batch_size], settings)
                       for i in range(0, len(val_images), config.batch_size)]
        refs = [e.caption for e in val_ex]
        vision = _vision_module(family, inner)
        vision_frozen = vision is not None and not any(p.requires_grad for p in vision.parameters())

        embeds = None
        if family in CACHEABLE_VISION and vision_frozen and config.cache_vision != "no":
            report(0, None, "Encoding training images (once)")
            vision.eval()
            parts: list[Any] | None = []
            with torch.no_grad():
                for i in range(0, len(train_images), config.batch_size):
                    pixels = _pixel_values(captioner, train_images[i : i + config.batch_size]).to(device)
                    parts.append(_vision_embeds(vision, pixels).float().cpu())
                    if i == 0 and config.cache_vision == "auto":
                        size_mb = parts[0][0].numel() * 4 * len(train_images) / 2**20
                        if size_mb > config.cache_limit_mb:
                            parts = None  # too big to keep: run the encoder every step instead
                            break
                    if cancel.is_set():
                        break
            if parts and not cancel.is_set():
                embeds = torch.cat(parts)
                train_images = []  # the pixels are no longer needed
        result.cached_vision = embeds is not None

        # -- optimiser, schedule, precision -------------------------------------
        micro_per_epoch = math.ceil(len(train_ex) / config.batch_size)
        steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum)
        total_steps = steps_per_epoch * config.epochs
        warmup = int(config.warmup_ratio * total_steps)
        optimizer = torch.optim.AdamW(params_to_train, lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, warmup, total_steps))
        amp_dtype = None
        if device.type == "cuda" and config.mixed_precision != "no" and config.method != "qlora":
            if config.mixed_precision == "fp16" or (config.mixed_precision == "auto"
                                                    and not torch.cuda.is_bf16_supported()):
                amp_dtype = torch.float16
            else:
                amp_dtype = torch.bfloat16
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

        def evaluate() -> dict[str, float]:
            trainable.eval()
            preds: list[str] = []
            for batch in val_batches:
                preds.extend(r.text for r in captioner.generate(batch, settings))
            return caption_metrics(preds, refs)

        def set_train_mode() -> None:
            trainable.train()
            if vision_frozen:
                vision.eval()  # frozen encoder: no dropout, so cached == uncached

        # -- resume ------------------------------------------------------------------
        start_epoch, global_step, bad_epochs = 0, 0, 0
        history: list[dict[str, Any]] = []
        best_score, best_epoch = -math.inf, 0
        if state_path.is_file():
            state = torch.load(state_path, map_location="cpu", weights_only=False)
            _load_trainable_state(trainable, state["weights"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, global_step = state["epoch"], state["global_step"]
            bad_epochs, history = state["bad_epochs"], state["history"]
            best_score, best_epoch = state["best_score"], state["best_epoch"]
            result.resumed_from_epoch = start_epoch
            report(global_step, total_steps, f"Resuming after epoch {start_epoch}")
        if not history:
            report(0, total_steps, "Evaluating the base model")
            base_metrics = evaluate()
            history.append({"epoch": 0, "loss": None, **base_metrics})
            if on_epoch is not None:
                on_epoch(dict(history[0]))
        result.base_metrics = {k: v for k, v in history[0].items() if k not in ("epoch", "loss")}
        stopped = bool(start_epoch and config.patience and bad_epochs >= config.patience)

        # -- the loop ------------------------------------------------------------------
        epoch = start_epoch
        while epoch < config.epochs and not stopped and not result.cancelled:
            set_train_mode()
            order = torch.randperm(len(train_ex), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
            losses: list[float] = []
            optimizer.zero_grad(set_to_none=True)
            for micro in range(micro_per_epoch):
                if cancel.is_set():
                    result.cancelled = True
                    break
                idx = order[micro * config.batch_size : (micro + 1) * config.batch_size]
                batch: dict[str, Any] = {key: value[idx].to(device) for key, value in text.items()}
                if embeds is not None:
                    batch["image_embeds"] = embeds[idx].to(device)
                else:
                    batch["pixel_values"] = _pixel_values(captioner, [train_images[i] for i in idx.tolist()]).to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = _loss(family, inner, batch)
                scaler.scale(loss / config.grad_accum).backward()
                losses.append(float(loss.detach()))
                if (micro + 1) % config.grad_accum == 0 or micro + 1 == micro_per_epoch:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params_to_train, config.max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_step += 1
                    report(global_step, total_steps,
                           f"Epoch {epoch + 1}/{config.epochs}, loss {sum(losses) / len(losses):.4f}",
                           epoch=epoch + 1)
            if result.cancelled:
                break
            report(global_step, total_steps, f"Evaluating epoch {epoch + 1}")
            metrics = evaluate()
            epoch += 1
            record = {"epoch": epoch, "loss": round(sum(losses) / len(losses), 5), **metrics}
            history.append(record)
            if on_epoch is not None:
                on_epoch(dict(record))
            score = selection_score(metrics)
            if score > best_score:
                best_score, best_epoch, bad_epochs = score, epoch, 0
                torch.save(_trainable_state(trainable), run_dir / "best.pt")
            else:
                bad_epochs += 1
            torch.save({"weights": _trainable_state(trainable), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                        "global_step": global_step, "bad_epochs": bad_epochs, "history": history,
                        "best_score": best_score, "best_epoch": best_epoch}, state_path.with_suffix(".tmp"))
            state_path.with_suffix(".tmp").replace(state_path)
            library.update_job(job_id, done=global_step, total=total_steps, checkpoint={"epoch": epoch})
            if config.patience and bad_epochs >= config.patience and epoch < config.epochs:
                result.stopped_early = stopped = True

        result.history = history
        result.epochs_run = epoch
        result.best_epoch = best_epoch
        if result.cancelled:
            report(global_step, total_steps, "Cancelled (run again to resume)")
            library.finish_job(job_id, JobState.CANCELLED, done=global_step,
                               message=f"cancelled in epoch {epoch + 1}; resumable from {run_dir}")
            captioner.close()
            result.seconds = time.monotonic() - started
            return result

        # -- save the best epoch as a model version ----------------------------------
        report(global_step, total_steps, "Saving the best model")
        if best_epoch > 0:
            _load_trainable_state(trainable, torch.load(run_dir / "best.pt", map_location="cpu"))
        best = next(h for h in history if h["epoch"] == best_epoch)
        result.metrics = {k: v for k, v in best.items() if k not in ("epoch", "loss")}
        stored_config = {**config.to_dict(), "target_modules": targets, "family": family,
                         "trainable_parameters": result.trainable_parameters, "cached_vision": result.cached_vision}
        metrics_record = {"base": result.base_metrics, "trained": result.metrics, "best_epoch": best_epoch,
                          "history": history, "stopped_early": result.stopped_early}
        version = versions.save_version(
            library, name=name, base_model=base, model=trainable, captioner=captioner, method=config.method,
            family=family, config=stored_config, metrics=metrics_record, data_snapshot=data.snapshot(),
        )
        captioner.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        result.version_id, result.path = version.id, version.adapter_path or version.base_model
        library.finish_job(job_id, JobState.DONE, done=global_step, total=total_steps,
                           checkpoint={"epoch": epoch, "best_epoch": best_epoch, "version_id": version.id})
        report(global_step, total_steps, "Finished")
    result.seconds = time.monotonic() - started
    return result
