"""Tiny causal language models for the restyle tests, built from configs (no hub).

A 2-layer Llama over the byte-level BPE tokenizer of :mod:`tests.support.tiny_models` (its
caption words are single tokens), saved with ``save_pretrained`` so tests load it through
the same ``from_pretrained`` path users hit.  The restyle task is deterministic:
``"a red car on the beach"`` → ``"Red car, beach."``.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core import captions
from core.library import Library
from core.models import Image
from tests.support.imagegen import write_jpeg
from tests.support.tiny_models import make_gpt2_tokenizer

COLORS = ("red", "green", "blue", "yellow", "white", "black")
OBJECTS = ("dog", "cat", "car", "person", "circle", "square")
PLACES = ("beach", "house", "tree")
#: A one-line chat template, so the restyler's chat path (system + user turns) is what the tests exercise.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}=>{% endif %}"
)


def restyle_task() -> list[tuple[str, str]]:
    """Every (description, styled caption) pair of the task, in a fixed order."""
    return [(f"a {c} {o} on the {p}", f"{c.capitalize()} {o}, {p}.")
            for c, o, p in itertools.product(COLORS, OBJECTS, PLACES)]


def build_tiny_causal_lm(path: str | Path, *, seed: int = 0, hidden_size: int = 64) -> Path:
    """A tiny ``LlamaForCausalLM`` + tokenizer (with a chat template) saved in *path*."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    path = Path(path)
    tok: Any = make_gpt2_tokenizer(bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    tok.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_pair_library(path: Path, photos: Path, *, held_out: int = 20) -> tuple[Library, dict[int, str]]:
    """A library whose photos carry the task: most as pairs (a model caption a person restyled),
    *held_out* with the model caption only; returns the library and ``{image id: expected text}``
    of the held-out ones.  One more photo has a caption a person wrote from scratch."""
    task = restyle_task()
    random.Random(7).shuffle(task)
    for index in range(len(task) + 1):
        write_jpeg(photos / f"p{index:03d}.jpg", seed=index, size=(16, 12))
    library = Library(path)
    library.scan([library.add_root(photos).id])
    expected: dict[int, str] = {}
    with library.db.write() as session:
        images = list(session.scalars(select(Image).order_by(Image.rel_path)))
        for image, (description, styled) in zip(images, task, strict=False):
            model = captions.add_model_caption(session, image.id, description, model_name="tiny-captioner",
                                               provenance={"generation": {"max_new_tokens": 20}}, score=-0.2)
            if len(expected) < held_out:
                expected[image.id] = styled
            else:
                captions.set_human_caption(session, image.id, styled, parent_id=model.id)
        captions.set_human_caption(session, images[-1].id, "written by a person")
    return library, expected
