"""Batches for the caption job: decoding ahead of the model and ``generate`` with back-off.

:func:`_prefetch` decodes the next batches (JPEG draft mode at the model's input scale,
:func:`draft_size_for`) while the model works on this one: on worker threads beside an
accelerator, in line on a CPU (:class:`_InlineExecutor`).  :class:`_BatchCaptioner`
runs ``generate`` with CUDA out-of-memory halving the batch and any other failure
retried image by image, so one bad input costs one error.  Used by
:mod:`core.captioning.engine` and its Ray actors (:mod:`core.captioning.ray_backend`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from core import imaging as _imaging
from core.captioning.captioner import load_model_image, model_input_side
from core.captioning.errors import ModelLoadError
from core.captioning.job_spec import GenerationSettings
from core.imaging import ImageDecodeError

log = logging.getLogger(__name__)

# The draft fraction and default live with the one model-input decode (core.imaging);
# re-exported beside draft_size_for, which uses them.
DRAFT_FRACTION = _imaging.DRAFT_FRACTION
DEFAULT_DRAFT_SIZE = _imaging.DEFAULT_DRAFT_SIZE
#: Batches decoded ahead of the model.
PREFETCH_BATCHES = 2



@dataclass
class _Prepared:
    """A batch after decoding: the images that decoded, and those that did not."""

    image_ids: list[int]
    inputs: Any
    failures: list[tuple[int, str]]
    images: list[Any]
    settings: GenerationSettings


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _free_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


class _BatchCaptioner:
    """Runs ``generate`` with OOM back-off and per-image isolation of failures."""

    def __init__(self, captioner: Any, settings: GenerationSettings, batch_size: int) -> None:
        self.captioner = captioner
        self.settings = settings
        self.batch_size = batch_size

    def caption(self, images: list[Any], inputs: Any) -> list[Any | BaseException]:
        """One result (CaptionResult) or exception per image, in order."""
        if len(images) <= self.batch_size and inputs is not None:
            try:
                return list(self.captioner.generate(inputs, self.settings))
            except ModelLoadError:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted out below
                return self._recover(images, exc)
        return self._in_chunks(images)

    def _in_chunks(self, images: list[Any]) -> list[Any | BaseException]:
        results: list[Any | BaseException] = []
        start = 0
        while start < len(images):
            chunk = images[start : start + self.batch_size]
            try:
                batch = self.captioner.preprocess(chunk, self.settings)
                results.extend(self.captioner.generate(batch, self.settings))
            except ModelLoadError:
                raise
            except Exception as exc:  # noqa: BLE001 - OOM halves, anything else goes image by image
                if _is_out_of_memory(exc) and self.batch_size > 1:
                    self._halve(exc)
                    continue  # retry the same chunk, smaller
                if len(chunk) > 1:
                    results.extend(self._one_by_one(chunk))
                else:
                    results.append(exc)
            start += len(chunk)
        return results

    def _recover(self, images: list[Any], exc: BaseException) -> list[Any | BaseException]:
        if _is_out_of_memory(exc):
            if self.batch_size == 1 or len(images) == 1:
                return [exc] * len(images)
            self._halve(exc)
            return self._in_chunks(images)
        if len(images) == 1:
            return [exc]
        log.warning("batch of %d failed (%s); retrying image by image", len(images), exc)
        return self._one_by_one(images)

    def _one_by_one(self, images: list[Any]) -> list[Any | BaseException]:
        results: list[Any | BaseException] = []
        for image in images:
            try:
                batch = self.captioner.preprocess([image], self.settings)
                results.extend(self.captioner.generate(batch, self.settings))
            except ModelLoadError:
                raise
            except Exception as exc:  # noqa: BLE001 - one image's failure is recorded for it
                results.append(exc)
        return results

    def _halve(self, exc: BaseException) -> None:
        _free_accelerator_memory()
        self.batch_size = max(1, self.batch_size // 2)
        log.warning("out of memory (%s); batch size now %d", exc, self.batch_size)


def draft_size_for(captioner: Any) -> int:
    """The JPEG draft size for *captioner*: a fraction of its input size
    (:func:`core.captioning.captioner.model_input_side`; a server captioner's upload size)."""
    return _imaging.model_draft_size(model_input_side(captioner))


def _decode_batch(captioner: Any, settings: GenerationSettings, batch: Sequence[tuple[int, str]]) -> _Prepared:
    ids: list[int] = []
    images: list[Any] = []
    failures: list[tuple[int, str]] = []
    for image_id, path in batch:
        try:
            images.append(load_model_image(captioner, path))  # as training and evaluation decode
            ids.append(image_id)
        except ImageDecodeError as exc:
            failures.append((image_id, str(exc)))
    inputs = None
    if images:
        try:
            inputs = captioner.preprocess(images, settings)
        except Exception as exc:  # noqa: BLE001 - the captioning thread retries per image
            log.warning("preprocessing a batch failed: %s", exc)
    return _Prepared(ids, inputs, failures, images, settings)


class _InlineExecutor:
    """``submit`` runs the call at once: decoding on the inference thread itself.

    On a CPU device torch's OpenMP threads already use every core; decode threads
    running beside them make those threads spin and wait, which cost more (and varied
    more) than decoding in line, a small part of a model step (see
    docs/optimization-notes.md, "Decoding in line on the CPU").  On a GPU the CPU is
    otherwise idle, so threads overlap.
    """

    def submit(self, fn: Callable[..., _Prepared], *args: Any) -> Future[_Prepared]:
        future: Future[_Prepared] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def __enter__(self) -> _InlineExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


def _decode_executor(captioner: Any) -> Any:
    device = str(getattr(captioner, "device", "cpu"))
    if device.startswith("cpu"):
        return _InlineExecutor()
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="caption-decode")


def _prefetch(
    pool: Any,
    captioner: Any,
    batches: Iterable[tuple[GenerationSettings, list[tuple[int, str]]]],
) -> Iterator[Future[_Prepared]]:
    """Futures of decoded batches, keeping PREFETCH_BATCHES in flight ahead."""
    pending: deque[Future[_Prepared]] = deque()
    for settings, batch in batches:
        pending.append(pool.submit(_decode_batch, captioner, settings, batch))
        if len(pending) > PREFETCH_BATCHES:
            yield pending.popleft()
    while pending:
        yield pending.popleft()
