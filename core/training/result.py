"""What a training run gives back: :class:`TrainingResult`, or a :class:`TrainingError`
that says why a run cannot start or go on (shared by the trainer's parts and the
multi-process launcher)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from core.errors import UserFacingError
from core.jobs import JobStats, counted_as, not_counted

from .metrics import comparison_sentence

if TYPE_CHECKING:

    pass

__all__ = ["Report", "TrainingError", "TrainingResult"]

#: How the trainer's parts report progress: ``report(done, total, message, **counts)``.
Report = Callable[..., None]

class TrainingError(UserFacingError):
    """A run that cannot be started or continued (the message says why and what to do)."""


@dataclass
class TrainingResult(JobStats):
    """What a training run did (``skipped_images``: the images it could not use, and why)."""

    TITLE: ClassVar[str] = "Training"
    LABELS: ClassVar[Mapping[str, tuple[str, str]]] = {"epochs": ("epoch", "epochs")}

    name: str
    method: str
    version_id: int | None = None
    path: str | None = None
    resumed_from_epoch: int = not_counted()
    epochs_run: int = counted_as("epochs")
    best_epoch: int = not_counted()
    stopped_early: bool = False
    base_metrics: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    train_size: int = counted_as("train")
    validation_size: int = counted_as("validation")
    #: The test split (seen by neither training nor epoch selection): its size and both models' metrics.
    test_size: int = not_counted()  # counted only when there is one (counts())
    base_test_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    #: Bootstrap intervals per split and model: ``{"validation": {"base": {...}, "trained": {...}}, "test": ...}``.
    intervals: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    #: Version minus base per split (:func:`~.metrics.compare_to_base`).
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Whether the version beat the base beyond the noise (on the test split when there is one).
    beats_base: bool = False
    #: Plain sentences about the numbers: no test split, why epoch 1 was kept.
    notes: list[str] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    cached_vision: bool = False
    #: The learning-rate range test of a run without ``lr`` (``LrRangeResult.to_dict()``), else None.
    lr_range: dict[str, Any] | None = None
    trainable_parameters: int = not_counted()
    processes: int = not_counted(1)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {**super().counts(), **({"test": self.test_size} if self.test_size else {})}

    def verdict(self) -> str:
        """Whether the version beat its base, in one sentence (on the test split when there is one)."""
        where = "test" if "test" in self.comparison else "validation"
        return comparison_sentence(self.comparison.get(where, {}), where)
