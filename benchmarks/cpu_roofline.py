"""The hardware's floor for captioning a batch on this CPU: how fast could it possibly go?

Measures this machine's peak rates - int8, bf16 and fp32 GEMMs through OpenVINO (a ViT-B MLP,
768 -> 3072 -> 768, on 8 x 577 tokens; int8 is NNCF static quantization, so VNNI/AMX runs it)
and memory bandwidth (summing 340 MB with torch's threads) - then counts, for each shaped
random-weight model of ``benchmarks/caption_model_speed.py`` (the real checkpoints' sizes), the
work one batch of photos needs, on the torch fp32 model with 20 forced tokens:

* the prefill (vision tower, BLIP's image keys/values, a VLM's prompt, Florence-2's encoder:
  everything up to the first token) in GEMM/attention operations (``FlopCounterMode``), done at
  the int8 peak at best;
* each further token: the larger of its operations at the int8 peak and its bytes at the
  bandwidth, where the bytes are the int8 weights of the Linear layers the step runs plus the
  key/value cache as it stands after the prefill (fp32; it only grows, so this is a lower bound).

The floor ignores everything else (image decode and resize, layer norms, softmax, Python), so
real code cannot reach it; it says which targets a CPU can meet at all.  Usage::

    python benchmarks/cpu_roofline.py [--models blip-base smolvlm-256m ...] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Photos per batch of each model, as ``caption_model_speed.py --runtime all --models`` times it.
BATCH = {"blip-base": 8, "florence2-base": 8, "smolvlm-256m": 8, "qwen2-vl-2b": 4}


def _best(run: Any, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def peak_rates(threads: int) -> dict[str, float]:
    """Operations per second of a ViT-B MLP on OpenVINO in int8, bf16 and fp32, and bytes per
    second read by a reduction over 340 MB."""
    import numpy as np
    import openvino
    import torch

    from core.captioning.device import cpu_has_bf16
    from core.captioning.openvino_int8 import int8_static

    tokens, width, hidden = 8 * 577, 768, 3072
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.Linear(hidden, width)).eval()
    x = torch.randn(tokens, width)
    with torch.no_grad():
        fp32 = openvino.convert_model(mlp, example_input=x[:4], input=[openvino.PartialShape([-1, width])])
    # The runtime's own static quantization (the settings the towers get).
    int8 = int8_static(fp32, [np.random.default_rng(i).standard_normal((577, width), np.float32) for i in range(4)])
    ops = 2 * tokens * width * hidden * 2
    core = openvino.Core()
    rates = {}
    kinds = [("int8", int8, "f32"), ("fp32", fp32, "f32")]
    if cpu_has_bf16():
        kinds.insert(1, ("bf16", fp32, "bf16"))
    for name, model, hint in kinds:
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        rates[name] = ops / _best(lambda request=request: request.infer([x.numpy()]), 10)
    big = torch.ones(85_000_000)
    rates["bytes"] = big.numel() * 4 / _best(lambda: big.sum(), 5)
    return rates


def _cache_bytes(cache: Any) -> int:
    """Bytes of every key/value tensor in a transformers cache (encoder-decoder caches included)."""
    import torch

    if cache is None:
        return 0
    if isinstance(cache, torch.Tensor):
        return cache.numel() * cache.element_size()
    if isinstance(cache, (list, tuple)):
        return sum(_cache_bytes(c) for c in cache)
    total = 0
    for part in ("self_attention_cache", "cross_attention_cache"):
        if hasattr(cache, part):
            total += _cache_bytes(getattr(cache, part))
    if total:
        return total
    return sum(_cache_bytes(getattr(layer, name, None)) for layer in getattr(cache, "layers", [])
               for name in ("keys", "values"))


def _count_cpu_attention() -> None:
    """``FlopCounterMode`` knows the GPU attention kernels; the CPU's fused one counts the same."""
    import torch
    from torch.utils import flop_counter

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op not in flop_counter.flop_registry and op.default not in flop_counter.flop_registry:
        def cpu_sdpa(query: Any, key: Any, value: Any, *_args: Any, out_shape: Any = None, **_kwargs: Any) -> int:
            return flop_counter.sdpa_flop_count(query, key, value)

        flop_counter.register_flop_formula(op)(cpu_sdpa)


def batch_work(folder: Path, photos: int, tokens: int) -> dict[str, float]:
    """Prefill operations, and per further token its operations and bytes, for one batch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.caption_model_speed import make_photos
    from core.captioning import GenerationSettings, load_captioner

    _count_cpu_attention()
    captioner = load_captioner(str(folder), device="cpu", optimize="none", progress=lambda _m: None)
    model = captioner.model
    settings = GenerationSettings(min_new_tokens=tokens, max_new_tokens=tokens)
    batch = captioner.preprocess(make_photos(photos), settings)
    seen: dict[str, Any] = {"calls": 0, "prefill": 0.0, "linears": {}, "kv": 0}
    counter = FlopCounterMode(display=False)

    def counted(_module: Any, _inputs: Any, out: Any) -> None:
        seen["calls"] += 1
        if seen["calls"] == 1:
            seen["prefill"] = counter.get_total_flops()
            seen["kv"] = _cache_bytes(getattr(out, "past_key_values", None))

    def linear_used(module: Any, _inputs: Any) -> None:
        if seen["calls"] >= 1:  # a further token's step
            seen["linears"][id(module)] = module.weight.numel()

    hooks = [m.register_forward_pre_hook(linear_used) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # BLIP generates through its text decoder; the others through the model itself.
    hooks.append(getattr(model, "text_decoder", model).register_forward_hook(counted))
    try:
        with counter:
            captioner.generate(batch, settings)
    finally:
        for hook in hooks:
            hook.remove()
    steps = seen["calls"] - 1
    return {"prefill_ops": seen["prefill"], "step_ops": (counter.get_total_flops() - seen["prefill"]) / max(steps, 1),
            "step_bytes": sum(seen["linears"].values()) + seen["kv"], "kv_bytes": seen["kv"], "steps": steps}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.caption_model_speed import SHAPED_MODELS, TOKENS, build_shaped

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=SHAPED_MODELS, default=list(SHAPED_MODELS))
    parser.add_argument("--threads", type=int, default=None, help="threads (default: torch's, one per core)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench-cache")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    rates = peak_rates(threads)
    print(f"{threads} threads: int8 {rates['int8'] / 1e12:.3f} TOP/s, "
          + (f"bf16 {rates['bf16'] / 1e12:.3f} TOP/s, " if "bf16" in rates else "")
          + f"fp32 {rates['fp32'] / 1e12:.3f} TOP/s, memory {rates['bytes'] / 1e9:.1f} GB/s", flush=True)
    print(f"\n{'model':<16} {'photos':>6} {'prefill GOP':>12} {'step GOP':>9} {'step MB':>8} {'of it KV MB':>12} "
          f"{'floor s':>8} {'floor img/s':>12}")
    for name in args.models:
        photos = BATCH[name]
        work = batch_work(build_shaped(name, args.cache_dir, tiny=False), photos, TOKENS)
        step = max(work["step_ops"] / rates["int8"], work["step_bytes"] / rates["bytes"])
        floor = work["prefill_ops"] / rates["int8"] + work["steps"] * step
        print(f"{name:<16} {photos:>6} {work['prefill_ops'] / 1e9:12.0f} {work['step_ops'] / 1e9:9.1f} "
              f"{work['step_bytes'] / 1e6:8.0f} {work['kv_bytes'] / 1e6:12.0f} {floor:8.2f} {photos / floor:12.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
