"""Tiny, randomly initialised captioning models that can be built offline.

The test-suite cannot download anything (the Hugging Face hub is unreachable
in CI and on the build boxes), so every model family that
:mod:`core.captioning` supports gets a builder here that creates a
few-hundred-kilobyte model *plus its processor/tokenizer* from configs and an
in-code vocabulary, then ``save_pretrained``s both into a folder.  The folder
then looks exactly like a downloaded checkpoint, so tests exercise the real
loading path (``AutoConfig`` -> family -> ``from_pretrained``).

Why the tokenizers are built the way they are (transformers 5.x):

* ``BertTokenizer(vocab_file=...)`` is silently ignored in 5.x; the vocabulary
  must be passed as ``vocab={token: id}``.
* GPT-2/OPT/BART byte-level BPE tokenizers are built from a vocabulary that
  holds the byte-level symbols of printable ASCII plus a handful of merged
  words, with ``merges`` as a list of *tuples* (a list of ``"a b"`` strings is
  rejected by ``tokenizers``).

Weights are seeded so a given builder always produces the same model.
Every builder returns the folder it wrote to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: Words that appear in the synthetic captions; enough to give the BPE/WordPiece
#: vocabularies real multi-character tokens without making the model big.
WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "on", "in", "with", "and", "photo", "photography", "picture",
    "red", "green", "blue", "yellow", "white", "black", "circle", "square", "triangle",
    "dog", "cat", "beach", "sky", "tree", "house", "person", "car", "small", "large",
)

#: Image side length used by all tiny models; small keeps preprocessing cheap.
IMAGE_SIZE = 32


def _seed(seed: int) -> None:
    # Builders must be deterministic: tests compare captions across loads.
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- tokenizers


def make_bert_tokenizer() -> Any:
    """A WordPiece tokenizer over :data:`WORDS` plus BERT's special tokens and ``[DEC]``."""
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate([*specials, *WORDS])}
    tok = BertTokenizer(vocab=vocab)
    # BLIP's decoder starts generation from a dedicated [DEC] token.
    tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok


def _byte_level_vocab(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocab (printable ASCII symbols + merged :data:`WORDS`) and its merges."""
    from tokenizers.pre_tokenizers import ByteLevel

    # ByteLevel maps every byte to a printable unicode symbol; build the same
    # table GPT-2 uses and keep only printable ASCII so decoded random output
    # never contains broken UTF-8.
    alphabet = _bytes_to_unicode()
    assert set(alphabet.values()) <= set(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for special in specials:
        vocab[special] = len(vocab)
    for byte in range(32, 127):
        vocab.setdefault(alphabet[byte], len(vocab))
    merges: list[tuple[str, str]] = []
    space = alphabet[ord(" ")]
    for word in WORDS:
        for piece in (space + word, word):
            current = piece[0]
            for char in piece[1:]:
                if current + char not in vocab:
                    merges.append((current, char))
                    vocab[current + char] = len(vocab)
                current += char
    return vocab, merges


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode table (same as in ``tokenizers``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def make_gpt2_tokenizer(*, bos: str = "<|endoftext|>", eos: str = "<|endoftext|>", pad: str | None = None,
                        unk: str = "<|endoftext|>", extra_specials: list[str] | None = None) -> Any:
    """A tiny byte-level BPE tokenizer (GPT-2 / OPT style)."""
    from transformers import GPT2Tokenizer

    specials = list(dict.fromkeys([s for s in (pad, bos, eos, unk) if s] + list(extra_specials or [])))
    vocab, merges = _byte_level_vocab(specials)
    tok = GPT2Tokenizer(vocab=vocab, merges=merges, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk)
    if extra_specials:
        # Being in the vocab is not enough: they must be "added tokens" or BPE splits them into characters.
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(s, special=True, normalized=False) for s in extra_specials], special_tokens=True)
    return tok


# --------------------------------------------------------------------------- builders


def build_tiny_blip(path: str | Path, *, seed: int = 0, hidden_size: int = 64) -> Path:
    """Tiny ``BlipForConditionalGeneration`` (~190k parameters) + ``BlipProcessor``.

    ``hidden_size`` (vision and text) lets tests make an incompatible sibling.
    """
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipProcessor,
        BlipTextConfig,
        BlipVisionConfig,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    _seed(seed)
    path = Path(path)
    tok = make_bert_tokenizer()
    # The PIL image processor avoids the "torchvision missing" fallback warning.
    proc = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                         tokenizer=tok)
    cfg = BlipConfig(
        vision_config=BlipVisionConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=8,
                                       # BlipConfig's default vision init is 1e-10, which would make
                                       # all image features ~0 and every caption identical.
                                       initializer_range=0.02).to_dict(),
        text_config=BlipTextConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                                   num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=48,
                                   bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id,
                                   eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id).to_dict(),
        projection_dim=hidden_size,
        image_text_hidden_size=hidden_size,
    )
    model = BlipForConditionalGeneration(cfg).eval()
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def _build_tiny_blip2(path: str | Path, tok: Any, text_config: Callable[[Any], Any], *, seed: int) -> Path:
    """Tiny ``Blip2ForConditionalGeneration`` + ``Blip2Processor`` around *tok*.

    *text_config* makes the language model's config from the tokenizer once the
    processor has added its ``<image>`` placeholder (the LM's vocabulary must include it).
    """
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    _seed(seed)
    path = Path(path)
    num_query_tokens = 4
    proc = Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                          tokenizer=tok, num_query_tokens=num_query_tokens)
    cfg = Blip2Config(
        # Blip2VisionConfig also defaults to initializer_range=1e-10 (image-blind outputs).
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 8, "initializer_range": 0.02},
        qformer_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "encoder_hidden_size": 32, "max_position_embeddings": 64},
        text_config=text_config(tok).to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    model = Blip2ForConditionalGeneration(cfg).eval()
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def build_tiny_blip2(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny ``Blip2ForConditionalGeneration`` with an OPT language model + ``Blip2Processor``."""
    from transformers import OPTConfig

    # OPT's tokenizer uses </s> as BOS and EOS and has a separate <pad>.
    tok = make_gpt2_tokenizer(bos="</s>", eos="</s>", pad="<pad>", unk="<unk>")
    return _build_tiny_blip2(path, tok, lambda tok: OPTConfig(
        vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, word_embed_proj_dim=32, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id), seed=seed)


def make_t5_tokenizer() -> Any:
    """A tiny SentencePiece-style (Unigram) T5 tokenizer over :data:`WORDS` plus single letters.

    Like Flan-T5's: ``<pad>`` = 0 (also the decoder start), ``</s>`` = 1 is appended to
    every encoded text (so ``""`` encodes to ``[1]``), ``<unk>`` = 2.
    """
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [("\u2581" + word, -1.0) for word in WORDS]
    pieces += [(char, -5.0) for char in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_tiny_blip2_t5(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny ``Blip2ForConditionalGeneration`` with a Flan-T5-style (encoder-decoder) language model."""
    from transformers import T5Config

    return _build_tiny_blip2(path, make_t5_tokenizer(), lambda tok: T5Config(
        vocab_size=len(tok), d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1,
        num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
        # transformers 5's T5Config has no bos_token_id attribute at all, which
        # Blip2Captioner reads; hub conversions (written by 4.x) carry it as null.
        bos_token_id=None), seed=seed)


def build_tiny_git(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny ``GitForCausalLM`` + ``GitProcessor`` (CLIP image processor, BERT tokenizer)."""
    from transformers import GitConfig, GitForCausalLM, GitProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    _seed(seed)
    path = Path(path)
    tok = make_bert_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    proc = GitProcessor(image_processor=image_processor, tokenizer=tok)
    cfg = GitConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 8},
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
        # GIT starts from [CLS] and stops at [SEP] (like the real microsoft/git-* checkpoints).
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
    )
    model = GitForCausalLM(cfg).eval()
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def build_tiny_vision_encoder_decoder(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny ViT-encoder + GPT-2-decoder ``VisionEncoderDecoderModel`` (nlpconnect/vit-gpt2 layout).

    Like the real ``nlpconnect/vit-gpt2-image-captioning`` checkpoint, the
    folder holds an image processor and a tokenizer but no ``processor``
    config, which is exactly what the loader must cope with.
    """
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    _seed(seed)
    path = Path(path)
    tok = make_gpt2_tokenizer()  # <|endoftext|> is BOS, EOS and (below) PAD, as in GPT-2
    enc = ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    image_size=IMAGE_SIZE, patch_size=8)
    dec = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = tok.bos_token_id
    cfg.pad_token_id = tok.eos_token_id
    cfg.eos_token_id = tok.eos_token_id
    model = VisionEncoderDecoderModel(config=cfg).eval()
    model.generation_config.decoder_start_token_id = tok.bos_token_id
    model.generation_config.pad_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def folder_size(path: str | Path) -> int:
    """Total size in bytes of the files in ``path`` (tests keep tiny models tiny)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- trained tiny BLIP

SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230), "yellow": (240, 220, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")


def shape_image(colour: str, shape: str, *, rng: Any, size: int = IMAGE_SIZE * 2) -> Any:
    """An RGB image of one coloured shape on black, with random position/size (a caption class)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(rng.integers(r, size - r)) for _ in range(2))
    # Slight colour jitter so the model learns the hue, not one exact value.
    fill = tuple(int(min(255, max(0, c + rng.integers(-20, 21)))) for c in SHAPE_COLOURS[colour])
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def shape_dataset(n: int, *, seed: int) -> tuple[list[Any], list[str]]:
    """``n`` shape images and their captions (``"a red circle"``), classes balanced."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = [(c, s) for c in SHAPE_COLOURS for s in SHAPES]
    images, captions = [], []
    for i in range(n):
        colour, shape = classes[i % len(classes)]
        images.append(shape_image(colour, shape, rng=rng))
        captions.append(f"a {colour} {shape}")
    return images, captions


def train_tiny_blip(path: str | Path, *, steps: int = 150, batch_size: int = 32, seed: int = 0) -> Path:
    """Build the tiny BLIP, fine-tune it on :func:`shape_dataset`, save it to ``path``.

    A *trained* model has peaked output distributions like a real
    checkpoint, which is what makes tests such as "int8 gives the same
    captions as fp32" meaningful (on random weights every step is a near-tie
    and any noise flips the argmax).  Takes ~10-20 s on 2 CPU cores.

    Recipe (from the project's ML stack notes): the processor puts ``[CLS]`` first but
    ``generate`` starts from ``[DEC]``, so the first input id is replaced by
    the decoder BOS and padding is masked out of the labels.
    """
    images, captions = shape_dataset(600, seed=seed)
    return fine_tune_tiny_blip(path, images, captions, steps=steps, batch_size=batch_size, seed=seed)


def fine_tune_tiny_blip(path: str | Path, images: list[Any], captions: list[str], *, steps: int,
                        batch_size: int, seed: int) -> Path:
    """Build the tiny BLIP at ``path``, fully fine-tune it on (images, captions), save it there."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    path = Path(path)
    build_tiny_blip(path, seed=seed)
    model = BlipForConditionalGeneration.from_pretrained(path)
    processor = BlipProcessor.from_pretrained(path)
    enc = processor(images=images, text=captions, return_tensors="pt", padding="longest")
    input_ids = enc["input_ids"].clone()
    input_ids[:, 0] = model.config.text_config.bos_token_id
    labels = input_ids.masked_fill(enc["attention_mask"] == 0, -100)

    _seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(seed)
    n = input_ids.shape[0]
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        loss = model(pixel_values=enc["pixel_values"][idx], input_ids=input_ids[idx],
                     attention_mask=enc["attention_mask"][idx], labels=labels[idx]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
    model.eval()
    model.save_pretrained(path)
    return path


def with_extra_words(source: str | Path, path: str | Path, words: list[str]) -> Path:
    """A copy of the tiny BLIP at *source* whose tokenizer also knows *words* (punctuation
    included), its embeddings grown to match: for tasks whose text :data:`WORDS` cannot spell."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    path = Path(path)
    model = BlipForConditionalGeneration.from_pretrained(source)
    processor = BlipProcessor.from_pretrained(source)
    processor.tokenizer.add_tokens(words)
    _seed(0)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


#: Gain on the tiny Florence-2's last DaViT patch embedding (see :func:`build_tiny_florence2`).
FLORENCE2_FEATURE_GAIN = 8.0


def build_tiny_florence2(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny native ``Florence2ForConditionalGeneration`` (DaViT + BART) + ``Florence2Processor``.

    Florence-2 is the task-token style member of the generic family
    (``"<CAPTION>"`` is expanded by the processor into an instruction).

    Why the last DaViT stage's patch embedding is scaled by :data:`FLORENCE2_FEATURE_GAIN`:
    Florence-2's projector adds a fixed cosine "temporal" embedding (``visual_temporal_embed``,
    cos 0 = 1 on half the channels: norm 4 at width 32) to every image token before its
    projection + LayerNorm.  The random frozen DaViT's output is only ~1.3 a token, so ~70%
    of each image token was the same for every image and fine-tuning plateaued at ~0.47 exact
    match (loss stuck near ln 4 on the colour word), although a linear probe on every DaViT
    stage separates the colours perfectly.  A real checkpoint's features are large against
    that embedding; the gain (x8) restores that.  BART's dropout is off like the other tiny
    families' (0.1 on a 32-wide model slowed learning: 0.48 -> 0.63 without it).
    """
    from transformers import (
        BartConfig,
        BartTokenizer,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    _seed(seed)
    path = Path(path)
    vocab, merges = _byte_level_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    vocab["<image>"] = len(vocab)
    # The processor reads tokenizer.image_token / image_token_id.
    tok = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})
    size = 2 * IMAGE_SIZE  # DaViT downsamples 32x: 64 px -> 2x2 feature map
    vision = Florence2VisionConfig(depths=(1, 1, 1, 1), embed_dim=(16, 32, 32, 32), num_heads=(1, 2, 2, 2),
                                   num_groups=(1, 2, 2, 2), window_size=2, projection_dim=32, drop_path_rate=0.0,
                                   max_position_embeddings=8, max_temporal_embeddings=4)
    text = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                      dropout=0.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=None)
    cfg = Florence2Config(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=tok.image_token_id)
    model = Florence2ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # why: see the docstring (image features must outweigh the temporal embedding)
        model.model.vision_tower.convs[-1].conv.weight.mul_(FLORENCE2_FEATURE_GAIN)
    image_processor = CLIPImageProcessorPil(size={"height": size, "width": size}, do_center_crop=False,
                                            image_seq_length=(size // 32) ** 2 + 1)
    Florence2Processor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    model.save_pretrained(path)
    return path


#: Minimal chat template: one user turn with an image placeholder and text.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_llava(path: str | Path, *, seed: int = 0, hidden_size: int = 32) -> Path:
    """Tiny ``LlavaForConditionalGeneration`` (CLIP vision + Llama) with a chat template.

    The chat-template, decoder-only, left-padded member of the generic family
    (the path SmolVLM / Qwen-VL / LLaVA checkpoints take).  ``hidden_size``: the Llama's
    width (feed-forward 2x), for measuring how the best LoRA lr changes with width.
    """
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    _seed(seed)
    path = Path(path)
    tok = make_gpt2_tokenizer(bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", extra_specials=["<image>"])
    patch = 8
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=patch, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                      image_token_index=tok.convert_tokens_to_ids("<image>"),
                      image_seq_length=(IMAGE_SIZE // patch) ** 2, vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(cfg).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1)  # CLIP's CLS token
    processor.save_pretrained(path)
    model.save_pretrained(path)
    return path


def _llama_text_config(tok: Any, **overrides: Any) -> Any:
    """A 2-layer, 32-wide Llama language model over *tok* (LLaVA, Idefics3)."""
    from transformers import LlamaConfig

    values = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
              "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
              "tie_word_embeddings": False}
    return LlamaConfig(**{**values, **overrides})


#: Qwen2-VL's chat template, reduced to one turn of text and images (the real one also has a system turn).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_vl(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny ``Qwen2VLForConditionalGeneration`` + ``Qwen2VLProcessor`` (dynamic resolution, M-RoPE).

    The image processor keeps a 64 px square at 64 px: 8 px patches, 2x2 merge -> 16 image
    tokens; other sizes and aspect ratios give other token counts, as with the real model.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    _seed(seed)
    path = Path(path)
    specials = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>"]
    # Qwen2-VL ends an assistant turn with <|im_end|> (its generation eos) and pads with <|endoftext|>.
    tok = make_gpt2_tokenizer(bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", unk="<|endoftext|>",
                              extra_specials=specials)
    ids = tok.convert_tokens_to_ids
    side = 2 * IMAGE_SIZE
    image_processor = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                               size={"shortest_edge": 16 * 16, "longest_edge": side * side})
    cfg = Qwen2VLConfig(
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2},
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                     "pad_token_id": tok.pad_token_id},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    # Qwen2VLProcessor also wants a video processor, which needs torchvision (not installed here).
    from core.captioning.families.qwen2_vl import images_only_processor

    images_only_processor(Qwen2VLProcessor, image_processor, tok, QWEN_CHAT_TEMPLATE).save_pretrained(path)
    model.save_pretrained(path)
    return path


#: Idefics3 / SmolVLM chat template, reduced: ``User:<image>text<end_of_utterance>\nAssistant:``.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_tiny_idefics3(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny ``Idefics3ForConditionalGeneration`` (SmolVLM layout) + ``Idefics3Processor``.

    No image splitting: one 32 px global image, 8 px patches, pixel-shuffle 2 -> 4 image tokens.
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    _seed(seed)
    path = Path(path)
    tok = make_gpt2_tokenizer(bos="<|im_start|>", eos="<end_of_utterance>", pad="<|endoftext|>", unk="<|endoftext|>",
                              extra_specials=["<fake_token_around_image>", "<image>", "<global-img>"])
    image_processor = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
                                                max_image_size={"longest_edge": IMAGE_SIZE})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                  chat_template=IDEFICS3_CHAT_TEMPLATE)
    cfg = Idefics3Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 8},
        text_config=_llama_text_config(tok).to_dict(), scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    model = Idefics3ForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    processor.save_pretrained(path)
    model.save_pretrained(path)
    return path


def build_tiny_paligemma(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny ``PaliGemmaForConditionalGeneration`` (SigLIP + Gemma) + ``PaliGemmaProcessor``.

    Prefix (image tokens, BOS, prompt, ``\\n``) attends bidirectionally; 32 px / 8 px patches -> 16
    image tokens.  The processor adds PaliGemma's 1152 ``<locNNNN>``/``<segNNN>`` tokens.

    The word embeddings are untied from the LM head (``tie_word_embeddings=False``, a valid
    PaliGemma/Gemma config): at 32 dimensions a tied matrix, which Gemma also scales by
    sqrt(hidden) on input, kept "yellow" and "red" together -- full fine-tuning plateaued at
    0.70/0.79 held-out exact match (two seeds, every yellow square captioned red, train loss
    0.11) and reaches 1.0 (loss 0.01) untied.  The frozen SigLIP features separate the four
    colours perfectly (linear probe 1.0), so the vision side was not the cause.
    """
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    _seed(seed)
    path = Path(path)
    tok = make_gpt2_tokenizer(bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>")
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = (IMAGE_SIZE // 8) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    text = GemmaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       tie_word_embeddings=False)
    cfg = PaliGemmaConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 8, "projection_dim": 32},
        text_config=text.to_dict(), image_token_index=processor.image_token_id, projection_dim=32,
        tie_word_embeddings=False)
    model = PaliGemmaForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    processor.save_pretrained(path)
    model.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- metric models


def build_tiny_roberta(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny ``RobertaModel`` + byte-level BPE ``RobertaTokenizer`` (BERTScore's model family)."""
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    _seed(seed)
    path = Path(path)
    vocab, merges = _byte_level_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=64)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=80, pad_token_id=tok.pad_token_id,
                        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    RobertaModel(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_tiny_clip(path: str | Path, *, seed: int = 0) -> Path:
    """Tiny ``CLIPModel`` + ``CLIPProcessor`` (CLIPScore's model; a WordPiece tokenizer ending at [SEP])."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    _seed(seed)
    path = Path(path)
    tok = make_bert_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    cfg = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "eos_token_id": tok.sep_token_id,
                     "bos_token_id": tok.cls_token_id, "pad_token_id": tok.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=16)
    CLIPModel(cfg).eval().save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path
