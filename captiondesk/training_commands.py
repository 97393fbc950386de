"""``captiondesk train | eval | models``: retrain the captioner from corrected captions.

:func:`register` adds the three sub-commands to the main parser's sub-parsers.  Like the
rest of the CLI, user mistakes print one line and exit 2 (core's user-facing errors go on
to ``main``; the ``ValueError`` core raises for a bad setting becomes a ``UserError``
here); Ctrl-C stops a training run after the current batch, keeping the last finished
epoch (run the same command again to resume).  This module is light to import: the training code loads on use.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any

from captiondesk.common import (
    COMMAND_STARTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UserError,
    add_json_flag,
    emit_json,
    finish_job,
    open_library,
    print_problems,
    run_cancellable,
    run_with_progress,
    wants_json,
)
from core.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO

METHODS = ("lora", "full", "qlora")  # mirrors core.training.config.METHODS
METRIC_ROWS = (("exact_match", "exact match"), ("cider", "CIDEr"), ("bleu4", "BLEU-4"),
               ("rouge_l", "ROUGE-L"), ("edit_rate", "edit rate"))


def _metrics_table(columns: list[tuple[str, dict[str, Any]]],
                   intervals: list[dict[str, list[float]]] | None = None) -> str:
    """One column per model; with *intervals* (one per column) each value is followed by its 95 % interval."""
    width = 30 if intervals else 14
    head = f"{'metric':<12}" + "".join(f"{title:>{width}}" for title, _ in columns)
    lines = [head]
    for key, label in METRIC_ROWS:
        cells = []
        for col, (_, metrics) in enumerate(columns):
            value = metrics.get(key)
            text = f"{value:.3f}" if isinstance(value, (int, float)) else "-"
            interval = (intervals[col] or {}).get(key) if intervals else None
            if interval and text != "-":
                text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
            cells.append(f"{text:>{width}}")
        lines.append(f"{label:<12}" + "".join(cells))
    return "\n".join(lines)


# -- train --------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from core.training import TrainingConfig, train

    try:
        config = TrainingConfig(
            method=args.method, lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
            # LoRA settings left unset: the family's measured defaults (README "LoRA defaults");
            # no --lr: the range test on this library's data chooses the rate.
            lr=args.lr,
            target_modules="all-linear" if args.lora_targets == ["all-linear"] else args.lora_targets, preset=args.preset, prompt_template=args.prompt,
            epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum, val_ratio=args.val_ratio,
            seed=args.seed, include_imports=args.include_imports, train_vision=args.train_vision,
            gradient_checkpointing=args.gradient_checkpointing, patience=args.patience, device=args.device,
            kind=args.kind,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    processes = _check_processes(args, config)

    def on_epoch(record: dict[str, Any]) -> None:
        loss = f"loss {record['loss']:.4f}, " if record.get("loss") is not None else ""
        keywords = f", keyword sets {record['keyword_set_match']:.3f}" if "keyword_set_match" in record else ""
        print(f"  epoch {record['epoch']}: {loss}exact match {record['exact_match']:.3f}{keywords}, "
              f"CIDEr {record['cider']:.3f}, BLEU-4 {record['bleu4']:.3f}", file=sys.stderr)

    if args.restyler and config.kind != "caption":
        raise UserError("--kind goes with a captioner: a restyler learns to rewrite captions")
    if args.restyler:  # a text model learning the person-corrected captions (core/restyle/training.py)
        result, interrupted = _train_restyler(args, config, on_epoch)
    elif processes > 1:  # --processes N: this process starts N training processes and reports rank 0's run
        from core.training.processes import train_in_processes

        with open_library(args) as library:  # create/migrate it here, before the ranks open it
            path = library.path
            if args.restart:
                _discard_run(library, args.name)
            _default_base(args, library)
        try:
            result, interrupted = run_with_progress(
                "Training",
                lambda bar, cancel: train_in_processes(path, args.base, args.name, config, processes, progress=bar,
                                                       cancel=cancel, on_epoch=on_epoch),
                unit="step")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    elif _launched_world_size() > 1:  # under accelerate launch / torchrun: this process is one rank
        result, interrupted, main = _train_as_launched_rank(args, config, on_epoch)
        if not main:  # rank 0 reports; the others only say how they ended
            return EXIT_INTERRUPTED if interrupted or result is None or result.cancelled else EXIT_OK
    else:
        with open_library(args) as library:
            _default_base(args, library)
            try:
                result, interrupted = run_with_progress(
                    "Training",
                    lambda bar, cancel: train(library, args.base, args.name, config, progress=bar, cancel=cancel,
                                              on_epoch=on_epoch, restart=args.restart),
                    unit="step")
            except ValueError as exc:
                raise UserError(str(exc)) from None
    if result is None or result.cancelled or interrupted:
        again = "the same command again" + (" without --restart" if args.restart else "")
        print(f"Training cancelled; run {again} to resume '{args.name}'.", file=sys.stderr)
        return finish_job(args, "train", result, True, lambda: None, name=args.name)
    return report_training(args, result, interrupted)


def report_training(args: argparse.Namespace, result: Any, interrupted: bool = False) -> int:
    """A finished run's outcome: text (with the intervals and whether it beat the base) or ``--json``."""
    print_problems(result.skipped_images)
    if not result.beats_base:
        print(f"warning: {result.verdict()}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)

    def human() -> None:
        if result.lr_range:
            print(learning_rate_line(result.lr_range))
        early = ", stopped early" if result.stopped_early else ""
        test = f", tested on {result.test_size}" if result.test_size else ""
        print(f"Trained '{result.name}' ({result.method}, {result.trainable_parameters:,} trainable parameters) on "
              f"{result.train_size} images, validated on {result.validation_size}{test}: best epoch "
              f"{result.best_epoch} of {result.epochs_run}{early}, {result.seconds:.0f} s")
        validation = result.intervals.get("validation", {})
        print("Validation photos (they also chose the best epoch), 95 % intervals:")
        print(_metrics_table([("base", result.base_metrics), (result.name, result.metrics)],
                             [validation.get("base", {}), validation.get("trained", {})]))
        if result.test_size:
            test_iv = result.intervals.get("test", {})
            print("Test photos (seen by neither training nor epoch selection), 95 % intervals:")
            print(_metrics_table([("base", result.base_test_metrics), (result.name, result.test_metrics)],
                                 [test_iv.get("base", {}), test_iv.get("trained", {})]))
        if result.comparison:
            verdict = result.verdict()
            print(verdict[0].upper() + verdict[1:] + ".")
        # The command to paste next names the same library (a version lives in one library).
        library_arg = f"--library {shlex.quote(str(args.library))} " if getattr(args, "library", None) else ""
        kind = getattr(args, "kind", None) or "caption"
        kind_arg = f" --kind {kind}" if kind != "caption" else ""
        if result.beats_base and getattr(args, "restyler", False):
            print(f"Saved to {result.path}. Restyle with: "
                  f"captiondesk {library_arg}restyle --all --with {shlex.quote(result.name)}")
        elif result.beats_base:
            print(f"Saved to {result.path}. Caption with: "
                  f"captiondesk {library_arg}caption --all{kind_arg} --model {shlex.quote(result.name)}")
        else:
            # Not offered as the next model: it is no measurable improvement on the base.
            print(f"Saved to {result.path}, but it did not beat the base model beyond the noise of the "
                  "evaluation photos; keep using the current model.")

    return finish_job(
        args, "train", result, interrupted, human,
        name=result.name, method=result.method, path=result.path, best_epoch=result.best_epoch,
        epochs_run=result.epochs_run, stopped_early=result.stopped_early, base_metrics=result.base_metrics,
        metrics=result.metrics, skipped_images=result.skipped_images, processes=result.processes,
        beats_base=result.beats_base, difference=result.comparison, intervals=result.intervals,
        test={"n": result.test_size, "base_metrics": result.base_test_metrics, "metrics": result.test_metrics}
        if result.test_size else None,
        notes=result.notes,
        lr_range={**result.lr_range, "note": learning_rate_line(result.lr_range)} if result.lr_range else None,
    )


def _train_restyler(args: argparse.Namespace, config: Any, on_epoch: Any) -> tuple[Any, bool]:
    """``train --restyler``: one run in this process on the library's corrected-caption pairs (resumable like
    captioner training; ``--restart`` starts over)."""
    from core.restyle.training import train_restyler

    if not args.base:
        raise UserError("train --restyler needs --base: a text language model folder or hub id "
                        "(e.g. HuggingFaceTB/SmolLM2-135M-Instruct)")
    with open_library(args) as library:
        try:
            return run_with_progress(
                "Training restyler",
                lambda bar, cancel: train_restyler(library, args.base, args.name, config, style=args.style,
                                                   progress=bar, cancel=cancel, on_epoch=on_epoch,
                                                   restart=args.restart),
                unit="step")
        except (ValueError, OSError) as exc:  # core errors meant for the person reach main() as they are
            raise UserError(str(exc)) from None


def learning_rate_line(lr_range: dict[str, Any]) -> str:
    """``Learning rate: 3.2e-04 (range test over N steps; published range ...)`` for a range-tested run."""
    from core.training.lr_range import LrRangeResult

    test = LrRangeResult.from_dict(lr_range)
    return f"Learning rate: {test.lr:.1e} ({test.note()})"


def _discard_run(library: Any, name: str) -> None:
    from core.training import VersionError, versions

    try:
        versions.discard_run(library, name)
    except VersionError as exc:
        raise UserError(str(exc)) from None


def _default_base(args: argparse.Namespace, library: Any) -> None:
    """Without --base: the library's current model's base (an active LoRA version is no base to train on)."""
    if not args.base:
        from core.training.current import current_model

        current = current_model(library, args.kind)
        args.base = current.base_model
        print(f"Base model: {args.base} (the current model's base)", file=sys.stderr)


def _launched_world_size() -> int:
    from core.training.distributed import launched_world_size

    return launched_world_size()


def _check_processes(args: argparse.Namespace, config: Any) -> int:
    """How many processes this command trains in (1, N from --processes, or the launcher's); user errors exit 2."""
    from core.training.distributed import check_processes

    launched = _launched_world_size()
    processes = args.processes if args.processes is not None else launched
    if args.processes is not None and launched > 1:
        raise UserError(f"this command already runs in {launched} processes (accelerate launch / torchrun); "
                        "leave out --processes")
    try:
        check_processes(config, processes)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return processes if launched == 1 else 1


def _train_as_launched_rank(args: argparse.Namespace, config: Any, on_epoch: Any) -> tuple[Any, bool, bool]:
    """One rank of a run started by ``accelerate launch -m captiondesk train ...``:
    ``(result, interrupted, is_main)``.

    The main rank opens the library for writing (and reports as usual); the others open it
    read-only after it and show no progress.
    """
    from captiondesk.common import library_path
    from core.library import Library
    from core.training import train
    from core.training.distributed import DistributedRun

    run = DistributedRun.from_environment(config)
    if run.is_main:
        library = open_library(args)
        run.barrier()
    else:
        run.barrier()
        library = Library(library_path(args), read_only=True)
    _default_base(args, library)
    try:
        if run.is_main:
            result, interrupted = run_with_progress(
                "Training",
                lambda bar, cancel: train(library, args.base, args.name, config, progress=bar, cancel=cancel,
                                          on_epoch=on_epoch, distributed=run, restart=args.restart),
                unit="step")
        else:  # Ctrl-C reaches every rank; only rank 0's cancel counts (it stops them all)
            result, interrupted = run_cancellable(
                lambda cancel: train(library, args.base, args.name, config, distributed=run))
        return result, interrupted, run.is_main
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        library.close()
        run.close()


# -- eval ---------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from core.training import evaluate_model

    with open_library(args) as library:
        if not args.model:
            from core.training.current import current_model

            current = current_model(library, args.kind or "caption")
            # An --adapter of its own goes on the base model, not on top of the active version.
            args.model = current.model if args.adapter is None else current.base_model
            print(f"Model: {current.describe() if args.adapter is None else args.model}",
                  file=sys.stderr if wants_json(args) else sys.stdout)
        try:
            result, interrupted = run_with_progress(
                "Evaluating",
                # None (not given): a model version is scored on its own stored split.
                lambda bar, cancel: evaluate_model(library, args.model, args.adapter, val_ratio=args.val_ratio,
                                                   seed=args.seed, include_imports=args.include_imports or None,
                                                   device=args.device, progress=bar, cancel=cancel,
                                                   kind=args.kind))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if result is None or interrupted:
        if wants_json(args):
            emit_json({"command": "eval", "exit_code": EXIT_INTERRUPTED, "cancelled": True})
        return EXIT_INTERRUPTED
    print_problems(result.skipped)
    if wants_json(args):
        emit_json({"command": "eval", "exit_code": EXIT_OK, "cancelled": False, "model": args.model,
                   "seconds": round(time.monotonic() - COMMAND_STARTED, 3),
                   "adapter": args.adapter, "val_ratio": args.val_ratio, "seed": args.seed,
                   "split": result.split, "version": result.version,
                   "metrics": result.metrics, "intervals": result.intervals,
                   "scored": result.metrics.get("n", 0), "train_overlap_count": len(result.train_overlap),
                   "train_overlap": result.train_overlap, "held_out_metrics": result.held_out_metrics,
                   "held_out_intervals": result.held_out_intervals,
                   "near_duplicates_in_training": result.near_duplicates_in_training,
                   "warnings": list(result.warnings), "problems": list(result.skipped)})
        return EXIT_OK
    title = args.model + (f" + {args.adapter}" if args.adapter else "")
    split = result.split
    whose = f"the own split of version '{result.version}', " if split.get("source") == "version" else ""
    pairs = split.get("held_out")  # a restyler: scored on its test (else validation) restyle pairs
    what, unit = (f"{pairs.capitalize()} restyle pairs", "pairs") if pairs else ("Validation split", "images")
    print(f"{what}: {result.metrics['n']} {unit} ({whose}ratio {split['val_ratio']:g}, seed {split['seed']})")
    if result.train_overlap:
        print(f"Overlap with training data: {len(result.train_overlap)} of {result.metrics['n']} {unit}")
    leaks = result.near_duplicates_in_training
    if not pairs:
        print("Held-out photos with a near-duplicate in training: "
              + (str(leaks) if leaks is not None else "not checked (run `captiondesk duplicates` first)"))
    print(_metrics_table([(title[-30:], result.metrics)], [result.intervals]))
    print("(in brackets: 95 % bootstrap intervals over the scored photos)")
    if result.held_out_metrics is not None:
        print(f"Held-out photos alone ({result.held_out_metrics['n']}):")
        print(_metrics_table([(title[-30:], result.held_out_metrics)], [result.held_out_intervals or {}]))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print_problems(result.skipped)
    return EXIT_OK


# -- models -------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from core.training import versions

    action = args.action or "list"
    if action == "download":
        return _download_model(args)
    needed = {"list": (0,), "rename": (2,), "delete": (1,), "activate": (1,), "deactivate": (0,), "base": (0, 1),
              "export": (2,)}
    if action not in needed:
        raise UserError(f"unknown models action '{action}' (use list, rename, delete, activate, deactivate, base, "
                        "export or download)")
    if len(args.names) not in needed[action]:
        usage = {"list": "models list", "rename": "models rename OLD NEW",
                 "delete": "models delete NAME [--with-dependants]",
                 "activate": "models activate NAME", "deactivate": "models deactivate [--kind KIND]",
                 "base": "models base [ID_OR_PATH | default]", "export": "models export NAME OUT"}[action]
        raise UserError(f"usage: captiondesk {usage}")
    if args.with_dependants and action != "delete":
        raise UserError("--with-dependants goes with models delete")
    if args.kind is not None and action != "deactivate":
        raise UserError("--kind goes with models deactivate (activate takes the kind the version learnt)")
    from core.training import current
    with open_library(args) as library:
        try:
            if action == "list":
                rows = versions.list_versions(library)
                now = current.current_model(library)
                if wants_json(args):
                    emit_json({"command": "models list", "exit_code": EXIT_OK,
                               "current": {"model": now.model, "version": now.version, "base_model": now.base_model,
                                           "source": now.source},
                               "versions": [
                        {"name": v.name, "kind": versions.version_kind(v), "active": bool(v.is_active),
                         "method": v.method,
                         "base_model": (v.config or {}).get("trained_from", v.base_model),
                         "metrics": (v.metrics or {}).get("trained", {}),
                         "beats_base": (v.metrics or {}).get("beats_base"), "created_at": v.created_at}
                        for v in rows]})
                    return EXIT_OK
                print(f"Current model: {now.describe()}")
                if not rows:
                    print("No trained model versions yet. Train one with: captiondesk train --base MODEL --name NAME")
                    return EXIT_OK
                print(f"{'':2}{'name':<24}{'method':<8}{'exact':>8}{'CIDEr':>8}  {'created':<17}base model")
                for v in rows:
                    trained = (v.metrics or {}).get("trained", {})
                    em, cider = trained.get("exact_match"), trained.get("cider")
                    base = (v.config or {}).get("trained_from", v.base_model)
                    em_s = f"{em:.3f}" if isinstance(em, (int, float)) else "-"
                    cider_s = f"{cider:.3f}" if isinstance(cider, (int, float)) else "-"
                    kind = versions.version_kind(v)
                    shown = v.name if kind == "caption" else f"{v.name} [{kind}]"
                    print(f"{'* ' if v.is_active else '  '}{shown:<24}{v.method or '-':<8}"
                          f"{em_s:>8}{cider_s:>8}  "
                          f"{v.created_at:%Y-%m-%d %H:%M}  {base}")
            elif action == "rename":
                versions.rename_version(library, *args.names)
                print(f"Renamed {args.names[0]} to {args.names[1]}")
            elif action == "delete":
                was = current.current_model(library)
                deleted = versions.delete_version(library, args.names[0], with_dependants=args.with_dependants)
                print(f"Deleted {', '.join(deleted)}")
                if was.version in deleted:  # without this line the next caption silently uses another model
                    print(f"It was the active model; captioning now uses {current.current_model(library).describe()}")
            elif action == "activate":
                versions.set_active(library, args.names[0])
                version = versions.get_version(library, args.names[0])
                kind = versions.version_kind(version)
                if versions.is_restyler(version):
                    print(f"{args.names[0]} is now the active restyler: restyle uses it without --with")
                elif kind == "caption":
                    print(f"{args.names[0]} is now the active model: caption and eval use it without --model")
                else:
                    print(f"{args.names[0]} is now the active model for {kind}: caption --kind {kind} and eval "
                          f"--kind {kind} use it without --model")
            elif action == "deactivate":
                kind = args.kind or "caption"
                if kind == "caption":
                    now = current.use_base_model(library)
                    print(f"No version is active; captioning uses {now.describe()}")
                else:
                    _require_kind(library, kind)
                    versions.set_active(library, None, kind)
                    now = current.current_model(library, kind)
                    print(f"No version is active for {kind}; caption --kind {kind} uses {now.describe()}")
            elif action == "base":
                if args.names:  # "default" forgets the library's choice
                    current.set_base_model(library, None if args.names[0] == "default" else args.names[0])
                now = current.current_model(library)
                chosen = current.library_base_model(library)
                print(f"Base model: {chosen or 'default'}; current model: {now.describe()}")
            else:
                out = versions.export_merged(library, *args.names)
                print(f"Exported {args.names[0]} as a standalone model to {out}")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return EXIT_OK


def _require_kind(library, kind: str) -> None:
    """A :class:`UserError` naming the library's kinds when *kind* is none of them."""
    from core.kinds import all_kinds

    with library.db.read() as session:
        kinds = list(all_kinds(session))
    if kind not in kinds:
        raise UserError(f"no caption kind '{kind}' in this library; kinds: {', '.join(kinds)}")


def _download_model(args: argparse.Namespace) -> int:
    """``models download ID --to FOLDER``: a hub model as a folder to carry to an offline machine."""
    from core.captioning.errors import ModelLoadError
    from core.captioning.hub import download_model

    if len(args.names) != 1 or not args.to:
        raise UserError("usage: captiondesk models download MODEL_ID --to FOLDER")
    try:
        folder = download_model(args.names[0], args.to, report=print)
    except ModelLoadError as exc:
        raise UserError(str(exc)) from None
    print(f"Downloaded {args.names[0]} to {folder}; copy that folder to the other machine and caption there "
          f"with --model {folder.name}")
    return EXIT_OK


# -- parser -------------------------------------------------------------------------


def _add_split_args(parser: argparse.ArgumentParser, *, for_eval: bool = False) -> None:
    if for_eval:
        # Not given (None): a model version is scored on the split stored with it.
        parser.add_argument("--val-ratio", type=float, default=None, metavar="R",
                            help="share of verified captions held out for validation (default: a model version's "
                                 f"own stored split, else {DEFAULT_VAL_RATIO}); images the version was trained on "
                                 "are reported")
        parser.add_argument("--seed", type=int, default=None, metavar="S",
                            help=f"split seed (default: a model version's own, else {DEFAULT_SEED})")
    else:
        parser.add_argument("--val-ratio", type=float, default=DEFAULT_VAL_RATIO, metavar="R",
                            help=f"share of verified captions held out for validation (default {DEFAULT_VAL_RATIO})")
        parser.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="S",
                            help="split seed, also the seed of every random choice in training (default 0)")
    parser.add_argument("--include-imports", action="store_true",
                        help="also use imported (not verified) captions")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])


def register(subparsers: Any) -> None:
    """Add ``train``, ``eval`` and ``models`` to the main parser's sub-parsers."""
    train = subparsers.add_parser(
        "train",
        help="retrain the captioner from verified captions",
        description=("Fine-tune a captioning model on the captions people wrote or accepted, evaluate it on "
                     "the held-out split after every epoch, and save the best epoch as model version NAME "
                     "(usable as --model NAME). Ctrl-C stops after the current batch; the same command resumes. "
                     "Trainable: BLIP, BLIP-2 (OPT or Flan-T5), GIT and vision encoder-decoder (e.g. ViT-GPT2) "
                     "models."),
    )
    train.add_argument("--base", metavar="ID_OR_PATH",
                       help="hub id, model folder or (full fine-tuned) version name (default: the library's current "
                            "model's base: the active version's base model, else the library's base model)")
    train.add_argument("--name", required=True, metavar="NAME", help="name of the new model version")
    train.add_argument("--restyler", action="store_true", help="train a restyler (a text language model, --base) "
                       "on the library's model caption → verified caption pairs; --style sets its instruction")
    train.add_argument("--style", metavar="PROMPT", help="with --restyler: the style instruction it learns to follow")
    train.add_argument("--method", choices=METHODS, default="lora",
                       help="lora (default), full fine-tuning, or qlora (LoRA on a 4-bit base; needs bitsandbytes; "
                            "meant for CUDA, also runs on CPU, slower)")
    train.add_argument("--lora-r", type=int, default=None, metavar="N", help="LoRA rank (default: per family)")
    train.add_argument("--lora-alpha", type=int, default=None, metavar="N", help="LoRA alpha (default: per family)")
    train.add_argument("--lora-dropout", type=float, default=None, metavar="F")
    train.add_argument("--lora-targets", nargs="+", default=None, metavar="MODULE",
                       help="LoRA target modules, or all-linear (default: per family)")
    train.add_argument("--lr", type=float, default=None, metavar="F",
                       help="learning rate (default: a range test on this library's data chooses it)")
    from core.captioning.presets import PRESETS

    train.add_argument("--preset", choices=list(PRESETS), metavar="NAME",
                       help="train the model to answer this caption preset (recorded and reused when captioning)")
    train.add_argument("--prompt", metavar="TEMPLATE",
                       help="train with this prompt template as the captions' prefix (recorded and reused)")
    train.add_argument("--kind", default="caption", metavar="KIND",
                       help="the caption kind to learn from its verified values (caption, alt_text, title, keywords, "
                            "… or a kind of your own); the version writes that kind and is activated per kind")
    train.add_argument("--epochs", type=int, default=5, metavar="N")
    train.add_argument("--batch-size", type=int, default=8, metavar="N")
    train.add_argument("--grad-accum", type=int, default=1, metavar="N", help="batches per optimiser step")
    train.add_argument("--patience", type=int, default=2, metavar="N",
                       help="stop after N epochs without improvement (0 = never)")
    train.add_argument("--train-vision", action="store_true",
                       help="also train the vision encoder (slower: its outputs can no longer be cached)")
    train.add_argument("--gradient-checkpointing", action="store_true", help="less memory, slower steps")
    train.add_argument("--restart", action="store_true",
                       help="discard the unfinished run of NAME (its saved state) and start over")
    train.add_argument("--processes", type=int, default=None, metavar="N",
                       help="train in N data-parallel processes (accelerate; one per GPU on CUDA, gloo on the CPU) "
                            "with the same global batch; or start the command with accelerate launch")
    _add_split_args(train)
    add_json_flag(train)
    train.set_defaults(handler=cmd_train)

    evaluate = subparsers.add_parser(
        "eval", help="score a model on the validation split",
        description="Caption the held-out verified images and report exact match, CIDEr, BLEU-4, ROUGE-L "
                    "and edit rate against the people's captions.")
    evaluate.add_argument("--model", metavar="ID_OR_PATH",
                          help="hub id, folder or version name (default: the library's current model: the active "
                               "version, else its base model)")
    evaluate.add_argument("--adapter", metavar="NAME_OR_PATH", help="a LoRA adapter folder to apply")
    evaluate.add_argument("--kind", default=None, metavar="KIND",
                          help="score against the verified values of this caption kind (default: the kind the "
                               "version learnt, else caption; without --model its active version)")
    _add_split_args(evaluate, for_eval=True)
    add_json_flag(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    models = subparsers.add_parser(
        "models", help="list, rename, delete, activate, deactivate or export trained model versions; "
                       "download a hub model",
        description="models [list] | rename OLD NEW | delete NAME | activate NAME | deactivate [--kind KIND] | "
                    "base [ID_OR_PATH | default] | export NAME OUT | download MODEL_ID --to FOLDER. The active "
                    "version is the library's current model (caption and eval use it without --model); deactivate "
                    "goes back to the library's base model, which base shows or sets. Export writes a merged "
                    "standalone model folder that plain transformers loads; download fetches a Hugging Face hub "
                    "model into a folder to copy to a machine without internet. A version that others are built "
                    "on is not deleted unless --with-dependants deletes them too.")
    models.add_argument("action", nargs="?", metavar="ACTION",
                        help="list (default), rename, delete, activate, deactivate, base, export, download")
    models.add_argument("names", nargs="*", metavar="ARG")
    models.add_argument("--with-dependants", action="store_true",
                        help="delete: also delete the versions built on this one")
    models.add_argument("--to", metavar="FOLDER", help="download: the folder to put the model in")
    models.add_argument("--kind", default=None, metavar="KIND",
                        help="deactivate: clear this caption kind's active version (default: caption's)")
    add_json_flag(models)
    models.set_defaults(handler=cmd_models)
