"""Training in two processes (accelerate, gloo on the CPU) matches training in one.

A tiny random BLIP (tests/support/tiny_models.py) learns the coloured-squares captions of
tests/support/training_scenario.py with LoRA, once in this process and once in 2 spawned processes
(``core.training.distributed.train_in_processes``) with the same seed and global batch.

Why the per-epoch losses may differ at all, and the tolerance: both runs see the same
shuffled micro-batches of 8 examples; the 2-process run splits each into two shards whose
weighted mean losses and summed gradients equal the one-process mean and gradient
mathematically (every caption here has the same number of tokens, and LoRA dropout is 0,
so no random draw differs between the runs; 37 training images make a short last batch
of 5, split 3 + 2).  What remains is float32 rounding: the gradients are summed in
another order (two shard sums plus an all-reduce instead of one batch sum) and each
process runs with fewer intra-op threads; Adam can turn such differences in near-zero
gradient components into lr-sized steps.  Measured: the curves are equal to the 5
decimals the history stores (3.39725, 2.87207, 2.72508).  The tolerance, 1e-3 relative,
leaves room for other CPUs' rounding and is far below the change of loss between epochs
(> 5 % here): a wrong global batch, a missing gradient sync or a wrongly weighted shard
fails it (with dropout 0.1, where each process draws its own masks, the curves differ by
up to 9e-4 relative after 2 epochs — see the README).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytest
from sqlalchemy import select

from core.library import Library
from core.models import Job
from core.training import TrainingConfig, train, versions
from core.training.processes import train_in_processes
from tests.support import tiny_models
from tests.support.training_scenario import COLOURS, STYLE_A, label, new_images_captions, square

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

CONFIG = {"method": "lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear",
          "lr": 5e-3, "epochs": 3, "batch_size": 8, "val_ratio": 0.25, "patience": 0, "max_new_tokens": 6,
          "device": "cpu"}
RELATIVE_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def squares_library(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("distributed")
    base = tiny_models.build_tiny_blip(root / "tiny-blip")
    photos = root / "photos"
    (photos / "train").mkdir(parents=True)
    (photos / "new").mkdir(parents=True)
    rng = np.random.default_rng(5)
    colours = list(COLOURS)
    for i in range(44):
        square(colours[i % 4], rng).save(photos / "train" / f"{i:03}_{colours[i % 4]}.png")
    for i, colour in enumerate(colours):
        square(colour, rng).save(photos / "new" / f"{i:03}_{colour}.png")
    library = Library(root / "library.db")
    library.scan([library.add_root(photos).id])
    label(library, STYLE_A)
    yield library, base
    library.close()


@pytest.mark.slow
def test_two_processes_give_the_one_process_loss_curve_and_one_version(squares_library) -> None:
    library, base = squares_library
    config = TrainingConfig(**CONFIG)

    started = time.monotonic()
    one = train(library, str(base), "one-process", config)
    one_seconds = time.monotonic() - started

    epochs: list[dict] = []
    started = time.monotonic()
    two = train_in_processes(library.path, str(base), "two-processes", config, 2, on_epoch=epochs.append)
    two_seconds = time.monotonic() - started

    one_curve = [h["loss"] for h in one.history[1:]]
    two_curve = [h["loss"] for h in two.history[1:]]
    curves = (f"1 process {one_curve} ({one_seconds:.1f} s), 2 processes {two_curve} ({two_seconds:.1f} s); "
              f"{one.train_size} training images, batch {config.batch_size}")
    print(curves)
    assert len(one_curve) == len(two_curve) == config.epochs, curves
    assert two_curve == pytest.approx(one_curve, rel=RELATIVE_TOLERANCE), curves
    assert one_curve[-1] < 0.9 * one_curve[0], curves  # it did learn: the curves are worth comparing
    # The base model's evaluation (epoch 0) is the same model on the same split.
    assert two.history[0] == one.history[0]
    assert two.processes == 2 and two.train_size == one.train_size and not two.cancelled
    # Rank 0's epoch records reached the caller.
    assert [e["epoch"] for e in epochs] == list(range(config.epochs + 1))

    # Exactly one version, written by rank 0, with its metrics and best epoch.
    names = [v.name for v in versions.list_versions(library)]
    assert names.count("two-processes") == 1, names
    version = versions.get_version(library, "two-processes")
    assert version.config["processes"] == 2
    assert version.metrics["best_epoch"] == two.best_epoch >= 1
    assert version.metrics["trained"] == two.metrics
    assert [h["loss"] for h in version.metrics["history"][1:]] == two_curve
    assert not versions.run_dir(library, "two-processes").exists()  # the run folder is cleaned up
    # One job record, finished (the other rank kept none).
    with library.db.read() as session:
        jobs = [j for j in session.scalars(select(Job).where(Job.kind == "train"))
                if (j.params or {}).get("name") == "two-processes"]
    assert len(jobs) == 1 and jobs[0].params["processes"] == 2 and jobs[0].state == "done", jobs
    # The version's adapter loads and captions.
    items = new_images_captions(library, "two-processes")
    assert len(items) == 4 and all(item.split("|")[1] for item in items), items


# --------------------------------------------------------------------------- CLI argument errors


def _train_args(library_path, *extra: str) -> argparse.Namespace:
    from captiondesk import training_commands

    parser = argparse.ArgumentParser()
    parser.add_argument("--library")
    training_commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["--library", str(library_path), "train", "--base", "some-model", "--name", "v",
                              *extra])


@pytest.mark.parametrize(("extra", "message"), [
    (["--processes", "0"], "--processes must be an integer >= 1"),
    (["--processes", "2", "--method", "qlora"], "does not support --method qlora"),
    (["--processes", "2", "--device", "mps"], "not supported on Apple GPUs"),
    (["--processes", "4", "--batch-size", "2"], "--processes 4 needs --batch-size >= 4"),
    (["--processes", "2", "--device", "cuda"], "CUDA GPU"),
])
def test_processes_argument_errors_are_one_line_user_errors(tmp_path, monkeypatch, extra, message) -> None:
    import torch

    from captiondesk.common import UserError

    if "cuda" in extra and torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        message = "--processes 2 needs 2 GPUs (one per process); this machine has 1"
    args = _train_args(tmp_path / "library.db", *extra)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        args.handler(args)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "library.db").exists()  # refused before anything was opened or written


def test_processes_cannot_be_combined_with_a_launcher(tmp_path, monkeypatch) -> None:
    from captiondesk.common import UserError

    monkeypatch.setenv("WORLD_SIZE", "2")
    args = _train_args(tmp_path / "library.db", "--processes", "2")
    with pytest.raises(UserError, match="already runs in 2 processes"):
        args.handler(args)
