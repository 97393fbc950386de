"""Search-by-meaning test helpers: a tiny random CLIP folder, flat-colour photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from tests.support.tiny_models import make_bert_tokenizer


def build_tiny_clip(path: Path) -> Path:
    """A CLIPModel with ~50k random parameters, saved with its processor like a hub folder."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPVisionConfig,
    )

    torch.manual_seed(0)
    tok = make_bert_tokenizer()
    config = CLIPConfig(
        text_config=CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, max_position_embeddings=32, pad_token_id=tok.pad_token_id,
                                   bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id).to_dict(),
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8).to_dict(),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


def picture(path: Path, colour: tuple[int, int, int], stripes: bool = False) -> None:
    pixels = np.zeros((48, 48, 3), dtype=np.uint8)
    pixels[:] = colour
    if stripes:
        pixels[::6] = 255 - np.asarray(colour, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(pixels).save(path, quality=95)
