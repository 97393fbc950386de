"""Memory of the two-stage pipeline: the captioner alone, the restyler alone, both loaded.

The window's model thread frees the captioner before a local restyler loads (one model in
memory at a time); this measures what keeping both would cost, so the choice rests on
numbers.  Random weights in the real architectures (the machines here cannot download):
BLIP-base as the captioner and a SmolLM2-135M-sized Llama as the restyler, saved to a
temporary folder and loaded through ``load_captioner`` / ``load_restyler`` on the CPU.
Each measurement runs in a fresh child process in which every loaded model generates
once (the weights are memory-mapped: only a used model is resident), and reports its
resident set (``VmRSS``) minus the same process's after importing torch and transformers.

    python benchmarks/restyle_memory.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(folder: Path) -> tuple[Path, Path]:
    from transformers import (
        AutoTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        LlamaConfig,
        LlamaForCausalLM,
    )

    from tests.support.tiny_models import make_bert_tokenizer, make_gpt2_tokenizer

    captioner, restyler = folder / "blip-base", folder / "smollm2-135m"
    from transformers import BlipImageProcessor, BlipProcessor

    tok = make_bert_tokenizer()
    BlipForConditionalGeneration(BlipConfig()).save_pretrained(captioner)
    BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tok).save_pretrained(captioner)
    lm_tok = make_gpt2_tokenizer(bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                 num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
                     ).save_pretrained(restyler)
    lm_tok.save_pretrained(restyler)
    AutoTokenizer.from_pretrained(restyler)  # loads as users load it
    return captioner, restyler


CHILD = """
import json, sys
import torch, transformers  # noqa: F401 - the baseline includes the libraries
sys.path.insert(0, {root!r})

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

base = rss_mb()
from PIL import Image
from core.captioning import load_captioner
from core.captioning.job_spec import GenerationSettings
from core.restyle.model import RestyleSettings, load_restyler
held = []
# Each model generates once: weights are memory-mapped, and only a used model is resident.
if {captioner!r}:
    captioner = load_captioner({captioner!r}, device={device!r}, optimize="none")
    captioner.caption([Image.new("RGB", (384, 384), (120, 60, 30))], GenerationSettings(max_new_tokens=5))
    held.append(captioner)
if {restyler!r}:
    restyler = load_restyler({restyler!r}, device={device!r})
    restyler.restyle(["a red car on the beach"], RestyleSettings("Rewrite.", 5))
    held.append(restyler)
gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
print(json.dumps({{"rss_mb": rss_mb() - base, "gpu_mb": gpu / 2**20}}))
"""


def measure(captioner: str, restyler: str, device: str) -> dict[str, float]:
    code = CHILD.format(root=str(ROOT), captioner=captioner, restyler=restyler, device=device)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        captioner, restyler = build(Path(tmp))
        rows = {"captioner (BLIP-base)": measure(str(captioner), "", args.device),
                "restyler (SmolLM2-135M size)": measure("", str(restyler), args.device),
                "both": measure(str(captioner), str(restyler), args.device)}
    for name, row in rows.items():
        print(f"{name:<30} RSS +{row['rss_mb']:7.0f} MB   GPU {row['gpu_mb']:7.0f} MB")
    both, alone = rows["both"]["rss_mb"], max(r["rss_mb"] for k, r in rows.items() if k != "both")
    print(f"both / the larger alone: {both / max(alone, 1e-9):.2f}x")


if __name__ == "__main__":
    main()
