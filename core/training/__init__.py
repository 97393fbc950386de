"""Retraining the captioner from the library's verified captions.

Cheap to import: torch, transformers and peft are imported inside the functions that
need them.  Entry points:

* :func:`collect_training_data` — verified captions, deduplicated, split like export;
* :class:`TrainingConfig` — validated hyperparameters;
* :func:`train` — the training job (progress/cancel, resumable) → a model version;
* :func:`evaluate_model` in :mod:`.evaluation`, and the metric functions in :mod:`.metrics`;
* version management in :mod:`.versions`.
"""

from __future__ import annotations

from .config import METHODS, TrainingConfig, default_target_modules
from .data import (
    InsufficientDataError,
    TrainingData,
    TrainingExample,
    collect_training_data,
)
from .evaluation import EvalResult, evaluate_model
from .metrics import (
    bleu4,
    caption_metrics,
    cider_d,
    edit_rate,
    exact_match,
    rouge_l,
)
from .trainer import TrainingError, TrainingResult, train
from .versions import (
    VersionError,
    delete_version,
    export_merged,
    get_version,
    list_versions,
    models_dir,
    rename_version,
    set_active,
)

__all__ = [
    "METHODS",
    "EvalResult",
    "InsufficientDataError",
    "TrainingConfig",
    "TrainingData",
    "TrainingError",
    "TrainingExample",
    "TrainingResult",
    "VersionError",
    "bleu4",
    "caption_metrics",
    "cider_d",
    "collect_training_data",
    "default_target_modules",
    "delete_version",
    "edit_rate",
    "evaluate_model",
    "exact_match",
    "export_merged",
    "get_version",
    "list_versions",
    "models_dir",
    "rename_version",
    "rouge_l",
    "set_active",
    "train",
]
