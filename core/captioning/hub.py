"""Hugging Face hub models on a machine that may be offline: ask once, fail fast, say how.

A hub model that is not in the local cache is downloaded on first use.  Without a
network, huggingface_hub retries many times before it gives up, so before any download
:func:`hub_unreachable` asks the hub once with a short timeout; when it does not answer,
the caller stops at once with :meth:`ModelLoadError.not_downloaded`, which tells how to
bring the model over: ``captiondesk models download ID --to FOLDER``
(:func:`download_model`) on a machine with network, then ``--model FOLDER`` here.

huggingface_hub is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import ModelLoadError
from .job_spec import DEFAULT_MODEL

#: Seconds the reachability probe waits for the hub's answer.
PROBE_TIMEOUT = 4.0
DEFAULT_ENDPOINT = "https://huggingface.co"

#: Download sizes of the models CaptionDesk names in its documentation (weights in one format).
KNOWN_SIZES = {
    DEFAULT_MODEL: "about 1 GB",
    "Salesforce/blip-image-captioning-large": "about 1.9 GB",
}

#: Weight formats CaptionDesk never loads (TensorFlow, Flax, Rust, ONNX, OpenVINO...).
_FOREIGN_WEIGHTS = ("*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "openvino*", "onnx/*")
#: PyTorch pickles, redundant when the repository has safetensors.
_PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def hub_endpoint() -> str:
    """The hub's address: ``$HF_ENDPOINT`` (a mirror) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """Whether the user turned network use off (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.strip().lower() in {"1", "on", "yes", "true"}


def approximate_size(model_id: str) -> str:
    """How big a download *model_id* is, in words, where CaptionDesk knows it."""
    return KNOWN_SIZES.get(model_id, "its size is on the model's hub page")


def hub_unreachable(model_id: str | None = None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why the hub cannot be used now, or None when it answers.

    One HTTP request with a short timeout; any HTTP answer (even an error status) means
    the hub is there and the download may report what is wrong itself.
    """
    if offline_mode():
        return "offline mode is on via HF_HUB_OFFLINE"
    endpoint = hub_endpoint()
    path = f"/api/models/{urllib.parse.quote(model_id, safe='/')}" if model_id else "/api/models?limit=1"
    request = urllib.request.Request(endpoint + path, method="HEAD",
                                     headers={"User-Agent": "captiondesk-reachability-probe"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - the configured hub's https/http URL
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return f"{endpoint} did not answer within {timeout:g} s"
        detail = getattr(reason, "strerror", None) or str(reason)
        return f"{endpoint} cannot be reached ({detail})"


def download_patterns(files: Iterable[str]) -> list[str]:
    """The ``ignore_patterns`` for a repository holding *files*: one set of PyTorch weights."""
    names = list(files)
    patterns = list(_FOREIGN_WEIGHTS)
    if any(name.endswith(".safetensors") for name in names):
        patterns += _PICKLED_WEIGHTS
    return patterns


def download_model(
    model_id: str, folder: Path | str, report: Callable[[str], None] = lambda _message: None,
) -> Path:
    """Download hub model *model_id* into *folder* (a plain folder to copy to another machine).

    Raises :class:`~core.captioning.errors.ModelLoadError` when the hub cannot be reached or
    has no such model.
    """
    reason = hub_unreachable(model_id)
    if reason is not None:
        raise ModelLoadError(f"Cannot download '{model_id}': the Hugging Face Hub is not reachable ({reason}). "
                             "Run this on a machine with internet access.", kind="not_downloaded", model=model_id)
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    target = Path(folder).expanduser()
    try:
        info = HfApi(endpoint=hub_endpoint()).model_info(model_id, files_metadata=True)
        files = {s.rfilename: s.size or 0 for s in info.siblings or []}
        ignore = download_patterns(files)
        from fnmatch import fnmatch

        total = sum(size for name, size in files.items() if not any(fnmatch(name, p) for p in ignore))
        report(f"Downloading {model_id} ({total / 1e6:.0f} MB) from {hub_endpoint()} into {target}")
        snapshot_download(model_id, local_dir=target, ignore_patterns=ignore, endpoint=hub_endpoint())
    except RepositoryNotFoundError:
        raise ModelLoadError(f"There is no model '{model_id}' on the Hugging Face Hub (or it is private: log in "
                             "with 'hf auth login').", kind="bad_model", model=model_id) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelLoadError(f"Downloading '{model_id}' failed: {exc}", kind="not_downloaded",
                             model=model_id) from None
    return target
