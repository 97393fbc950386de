"""LoRA training-step speed on CPU, BLIP-base architecture, with and without cached vision embeddings.

Random weights (``BlipForConditionalGeneration(BlipConfig())``, 384 px, BLIP-base sizes),
LoRA r 8 / alpha 32 on the text decoder's ``query``/``value`` (the CaptionDesk default),
batch 4, 20-token captions, AdamW.  Two modes, each in its own subprocess so peak RSS
(``ru_maxrss``) is per mode:

* ``uncached`` — the full forward: vision encoder (frozen, no_grad-free as in a plain
  ``model(pixel_values=...)`` call) + text decoder, every step;
* ``cached`` — what ``core.training.trainer`` does when the vision encoder is frozen:
  ``vision_model`` runs once per image beforehand (timed separately, per image), then
  each step runs only the text decoder with ``encoder_hidden_states``.

Usage::

    python benchmarks/train_step.py [--steps 3] [--threads 2]

Output of ``python benchmarks/train_step.py`` on the 2-core dev VM, 2026-11-23, torch 2.13
CPU, transformers 5.23, peft 0.21.2 (1 min 42 s in all; the VM was shared with other
test runs, load average ~3.5 on 2 cores, so absolute times are ~2-3x the quiet-machine
numbers — the ratio is the number to look at)::

     uncached: 18.57 s/step (0.054 steps/s), peak RSS 1.99 GB, 0.59M trainable
       cached: 1.44 s/step (0.695 steps/s), peak RSS 1.97 GB, 0.59M trainable, vision encode once 1.07 s/image
    speed-up from cached vision embeddings: 12.90x per step (batch 4, 384 px, 3 timed steps after 1 warm-up)

The one-off encode (~1 s per image here) is paid once per run instead of once per epoch.
Peak RSS is about the same because it is dominated by the 224M fp32 weights + AdamW
state of the LoRA parameters; caching N images costs N x 577 x 768 x 4 B = 1.7 MB each.

``--family KEY`` (florence2, llava, qwen2-vl, idefics3, paligemma) measures a prompted
vision-language family through CaptionDesk's own training path instead: the model made
trainable by ``core.training.model_setup._prepare_model`` (LoRA on the language model, the
family's defaults), a micro-batch from the family's ``training_batch`` (uncached: the
processor call on the images every step, as the trainer does; cached: the entries of
``vision_cache_entries``, computed once and timed per image) and the family's ``loss``,
backward, AdamW.  The model is the tiny one of ``tests/support/tiny_models.py``; ``--size smolvlm``
(idefics3 only) builds a random-weight SmolVLM-256M-shaped one instead (SigLIP-B/16 at
512 px, 12 layers, pixel shuffle 4 -> 64 image tokens; SmolLM2-135M-shaped language model:
30 layers, 576 wide; 202.5M parameters, the real one's 49k vocabulary left out).

Measured 2026-11-28 on the shared 2-core dev VM (load average ~3), ``OMP_NUM_THREADS=1``,
``--threads 1``, batch 4, 20 timed steps (LLaVA 50, two runs; a first 20-step run gave
0.87x, noise at ~10 ms a step)::

    python benchmarks/train_step.py --family llava --threads 1 --steps 50
    tiny       uncached   cached   speed-up   encode once
    llava      12.4-13.2  9.1-9.3  1.36-1.42x  4 ms/image
    qwen2-vl   15.8       10.1     1.57x       5 ms/image
    idefics3   24.8       16.9     1.47x       9 ms/image
    paligemma  20.4       8.6      2.37x       3 ms/image
    florence2  14.8       9.2      1.62x       6 ms/image   (ms/step)

    python benchmarks/train_step.py --family idefics3 --size smolvlm --threads 1 --steps 3 --batch 2
     uncached: 7140.2 ms/step, peak RSS 2.02 GB, 2.442M trainable of 202.5M
       cached: 2355.4 ms/step, peak RSS 2.02 GB, 2.442M trainable of 202.5M, vision encode once 2513.2 ms/image
    idefics3 (smolvlm): speed-up from the frozen-vision cache 3.03x per step (batch 2, ...)

(a 2-step run: 6.20 s vs 2.37 s, 2.61x).  The SmolVLM-shaped cache holds 64 x 576 x 4 B =
147 KB per image; the tiny models' steps include the processor call the cache also saves.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable


def seconds_per_step(step: Callable[[], None], steps: int) -> float:
    """Mean seconds of *steps* timed calls of *step*, after one untimed warm-up call."""
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def run_mode(mode: str, steps: int, threads: int) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BlipConfig, BlipForConditionalGeneration

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig())
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["query", "value"]))
    inner = model.base_model.model
    model.train()
    inner.vision_model.eval()
    batch = 4
    pixels = torch.randn(batch, 3, 384, 384)
    ids = torch.randint(1000, 20000, (batch, 20))
    ids[:, 0] = inner.config.text_config.bos_token_id
    mask = torch.ones_like(ids)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    encode_s = 0.0
    embeds = None
    if mode == "cached":
        t = time.perf_counter()
        with torch.no_grad():
            embeds = inner.vision_model(pixel_values=pixels).last_hidden_state
        encode_s = (time.perf_counter() - t) / batch

    def step() -> None:
        if embeds is None:
            loss = inner(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=ids).loss
        else:
            loss = inner.text_decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=embeds,
                                      labels=ids, reduction="mean").loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    per_step = seconds_per_step(step, steps)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"s_per_step": per_step, "steps_per_s": 1 / per_step, "peak_rss_gb": rss_gb,
            "encode_s_per_image": encode_s, "trainable": trainable}


FAMILIES = ("florence2", "llava", "qwen2-vl", "idefics3", "paligemma")


def build_family_model(family: str, size: str, folder: str) -> str:
    """A random-weight model + processor of *family* saved in *folder* (tiny, or SmolVLM-256M-shaped)."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support import tiny_models

    if size == "tiny":
        builders = {"florence2": tiny_models.build_tiny_florence2, "llava": tiny_models.build_tiny_llava,
                    "qwen2-vl": tiny_models.build_tiny_qwen2_vl, "idefics3": tiny_models.build_tiny_idefics3,
                    "paligemma": tiny_models.build_tiny_paligemma}
        return str(builders[family](Path(folder)))
    if (family, size) != ("idefics3", "smolvlm"):
        raise SystemExit("--size smolvlm is built for --family idefics3 only")
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    tok = tiny_models.make_gpt2_tokenizer(bos="<|im_start|>", eos="<end_of_utterance>", pad="<|endoftext|>",
                                          unk="<|endoftext|>",
                                          extra_specials=["<fake_token_around_image>", "<image>", "<global-img>"])
    side = 512  # SmolVLM-256M: SigLIP base patch 16 at 512 px, pixel shuffle 4 -> 64 image tokens
    image_processor = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": side},
                                                max_image_size={"longest_edge": side})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=64,
                                  chat_template=tiny_models.IDEFICS3_CHAT_TEMPLATE)
    text = tiny_models._llama_text_config(tok, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048)
    cfg = Idefics3Config(vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                                        "num_attention_heads": 12, "image_size": side, "patch_size": 16},
                         text_config=text.to_dict(), scale_factor=4,
                         image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    model = Idefics3ForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def run_family_mode(path: str, mode: str, steps: int, threads: int, batch: int) -> dict[str, float]:
    """Training steps of the family at *path* through CaptionDesk's training path, with or without the cache."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np
    import torch

    from core.captioning import load_captioner
    from core.training import TrainingConfig
    from core.training.model_setup import _prepare_model
    from tests.support.training_scenario import COLOURS, square

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    captioner = load_captioner(path, device="cpu", optimize="none")
    family = captioner.family
    trainable, inner, _ = _prepare_model(captioner, family, TrainingConfig(method="lora").with_family_defaults(family))
    vision = family.vision_tower(inner)
    rng = np.random.default_rng(0)
    side = max(family.model_input_side(captioner.processor) or 64, 64)
    colours = list(COLOURS)
    images = [square(colours[i % 4], rng, size=side) for i in range(batch)]
    text = family.encode_training_batch(captioner, [f"the picture of a square in {colours[i % 4]}"
                                                    for i in range(batch)], 40)
    trainable.train()
    vision.eval()
    optimizer = torch.optim.AdamW([p for p in trainable.parameters() if p.requires_grad], lr=1e-4)
    encode_s = 0.0
    entries = None
    if mode == "cached":
        t = time.perf_counter()
        with torch.no_grad():
            entries = family.vision_cache_entries(captioner, inner, vision, images, text)
        encode_s = (time.perf_counter() - t) / batch
        assert entries is not None, "the family declined the cache"
    rows = torch.arange(batch)

    def step() -> None:
        if entries is None:
            micro = family.training_batch(captioner, text, images, None)
        else:
            micro = family.training_batch(captioner, text, None, entries[rows])
        family.loss(inner, micro).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    per_step = seconds_per_step(step, steps)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    trainable_count = sum(p.numel() for p in trainable.parameters() if p.requires_grad)
    return {"s_per_step": per_step, "steps_per_s": 1 / per_step, "peak_rss_gb": rss_gb,
            "encode_s_per_image": encode_s, "trainable": trainable_count,
            "parameters": sum(p.numel() for p in inner.parameters())}


def main_family(args: argparse.Namespace) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = build_family_model(args.family, args.size, folder)
        results = {}
        for mode in ("uncached", "cached"):
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps),
                                  "--threads", str(args.threads), "--family", args.family, "--model-path", path,
                                  "--batch", str(args.batch)],
                                 check=True, capture_output=True, text=True).stdout
            results[mode] = r = json.loads(out.strip().splitlines()[-1])
            extra = f", vision encode once {r['encode_s_per_image'] * 1000:.1f} ms/image" if mode == "cached" else ""
            print(f"{mode:>9}: {r['s_per_step'] * 1000:.1f} ms/step, peak RSS {r['peak_rss_gb']:.2f} GB, "
                  f"{r['trainable'] / 1e6:.3f}M trainable of {r['parameters'] / 1e6:.1f}M{extra}")
    ratio = results["uncached"]["s_per_step"] / results["cached"]["s_per_step"]
    print(f"{args.family} ({args.size}): speed-up from the frozen-vision cache {ratio:.2f}x per step "
          f"(batch {args.batch}, {args.threads} thread(s), {args.steps} timed steps after 1 warm-up)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["cached", "uncached"], help=argparse.SUPPRESS)
    parser.add_argument("--family", choices=FAMILIES, help="a prompted vision-language family (see the docstring)")
    parser.add_argument("--size", choices=["tiny", "smolvlm"], default="tiny", help="with --family: the model size")
    parser.add_argument("--batch", type=int, default=4, help="with --family: images per step")
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.family and args.mode:
        print(json.dumps(run_family_mode(args.model_path, args.mode, args.steps, args.threads, args.batch)))
        return
    if args.family:
        main_family(args)
        return
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.steps, args.threads)))
        return
    results = {}
    for mode in ("uncached", "cached"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps),
                              "--threads", str(args.threads)], check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        r = results[mode]
        extra = f", vision encode once {r['encode_s_per_image']:.2f} s/image" if mode == "cached" else ""
        print(f"{mode:>9}: {r['s_per_step']:.2f} s/step ({r['steps_per_s']:.3f} steps/s), "
              f"peak RSS {r['peak_rss_gb']:.2f} GB, {r['trainable'] / 1e6:.2f}M trainable{extra}")
    ratio = results["uncached"]["s_per_step"] / results["cached"]["s_per_step"]
    print(f"speed-up from cached vision embeddings: {ratio:.2f}x per step "
          f"(batch 4, 384 px, {args.steps} timed steps after 1 warm-up)")


if __name__ == "__main__":
    main()
