"""``caption --ray`` vs the in-process engine: the same images, model and cores.

Captions the same JPEGs (generated once in ``.bench-cache/``, 2000x1500 by default) with
the same model (BLIP-base architecture, random weights, fixed 20-token greedy captions,
as ``benchmarks/caption_throughput.py``) three ways, each into a fresh library:

* in-process: ``run_caption_job`` (what ``captiondesk caption`` runs);
* Ray, 1 actor: ``run_caption_job_on_ray(actors=1)`` - the actor gets all the cores;
* Ray, 2 actors: ``actors=2`` - one core each.

One local Ray instance (all cores, a 256 MB object store) is started before the timings,
as a cluster would already be running; its start-up is printed apart.  Each job's time
includes loading the model (each Ray actor loads its own) and the commits; "steady" is
the rate between the first and the last committed batch, without start-up.  With
``--rounds N`` the three take turns N times (order reversed every other round) and the
times are summed, so a change in machine speed (shared VMs) affects all alike.  The ratio
is Ray's time over the in-process time; the overhead per image is the difference in time
divided by the images.

    python benchmarks/ray_caption.py                    # 48 images, one round
    python benchmarks/ray_caption.py --images 16 --rounds 2
    python benchmarks/ray_caption.py --images 16 --model /path/to/small-model

With ``--cli`` it times what a person runs instead: fresh ``captiondesk caption``
processes (Python start, imports, scan, model load, captioning, commits), in-process vs
``--ray auto`` against a Ray head started beforehand with ``ray start --head`` (a running
cluster, as ``--ray auto`` expects) with 1 and 2 actors, and ``--ray`` alone (a local
instance started and stopped inside the command).  There the driver of a Ray run does
not import torch at all; the actor does, as the in-process command does.

    python benchmarks/ray_caption.py --cli --images 48 --rounds 2

Target: one actor within 25 % of the in-process engine (ratio <= 1.25).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.caption_throughput import CACHE, TOKENS, build_blip_base, make_photos  # noqa: E402


def timed_job(label: str, photos: Path, spec, run) -> dict[str, float]:
    """Run one job into a fresh library; its wall time and steady-state rate."""
    from core.library import Library

    with tempfile.TemporaryDirectory() as tmp, Library(Path(tmp) / "bench.db") as library:
        library.scan([library.add_root(photos).id])
        commits: list[tuple[float, int]] = []
        start = time.perf_counter()
        stats = run(library, spec, on_batch=lambda ids: commits.append((time.perf_counter(), len(ids))))
        seconds = time.perf_counter() - start
    assert stats.errors == 0 and stats.captioned == sum(n for _, n in commits), stats
    after_first = sum(n for _, n in commits[1:])
    steady = after_first / (commits[-1][0] - commits[0][0]) if len(commits) > 1 else float("nan")
    result = {"seconds": seconds, "img_s": stats.captioned / seconds, "steady_img_s": steady,
              "images": stats.captioned, "steady_images": after_first,
              "steady_seconds": commits[-1][0] - commits[0][0] if len(commits) > 1 else 0.0}
    print(f"{label:<16} {seconds:7.1f} s  {result['img_s']:.3f} img/s  (steady {steady:.3f} img/s)", flush=True)
    return result


def cli_seconds(args: list[str], env: dict[str, str]) -> float:
    """Wall time of one ``captiondesk caption`` process into a fresh library."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "captiondesk", "--library", str(Path(tmp) / "bench.db"), "caption", *args,
                   "--json"]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def run_cli(args: argparse.Namespace, photos: Path, model: Path) -> None:
    """The ``--cli`` comparison (see the module docstring)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "RAY_USAGE_STATS_ENABLED": "0"}
    common = [str(photos), "--model", str(model), "--min-new-tokens", str(TOKENS), "--max-new-tokens", str(TOKENS),
              "--batch-size", str(args.batch_size), "--device", "cpu"]
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    runs = {
        "in-process": common,
        "--ray (local, started inside)": [*common, "--ray", "--ray-actors", "1"],
        "--ray auto, 1 actor": [*common, "--ray", "auto", "--ray-actors", "1"],
        "--ray auto, 2 actors": [*common, "--ray", "auto", "--ray-actors", "2"],
    }
    totals = dict.fromkeys(runs, 0.0)
    cli_seconds(common, env)  # warm-up: the model and the photos into the page cache
    head = False
    try:
        for round_number in range(args.rounds):
            order = list(runs) if round_number % 2 == 0 else list(reversed(runs))
            for label in order:
                wants_head = "auto" in label
                if wants_head != head:  # a running cluster only for --ray auto; --ray alone starts its own
                    subprocess.run([ray_cli, "stop", "--force"] if head else
                                   [ray_cli, "start", "--head", f"--num-cpus={args.cpus}", "--include-dashboard=false",
                                    "--object-store-memory", str(256 * 1024 * 1024), "--disable-usage-stats"],
                                   env=env, capture_output=True, check=True)
                    head = wants_head
                seconds = cli_seconds(runs[label], env)
                totals[label] += seconds
                print(f"{label:<32} {seconds:7.1f} s", flush=True)
    finally:
        if head:
            subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, check=False)
    base = totals["in-process"]
    print()
    print(f"over {args.rounds} round(s), {args.images} images, fresh `captiondesk caption` processes:")
    for label, seconds in totals.items():
        ratio = seconds / base
        verdict = "  (target <= 1.25: " + ("met)" if ratio <= 1.25 else "NOT met)") if "1 actor" in label else ""
        print(f"  {label:<32} {seconds:7.1f} s  {ratio:.2f}x{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=1, help="rounds, alternating the order; times are summed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--photo-size", default="2000x1500", help="WxH of the generated JPEGs")
    parser.add_argument("--model", type=Path, help="a model folder instead of the random BLIP-base")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="cores for Ray (and the comparison)")
    parser.add_argument("--cli", action="store_true", help="time fresh `captiondesk caption` processes instead")
    args = parser.parse_args()
    if args.cli:
        width, height = (int(v) for v in args.photo_size.split("x"))
        photos = make_photos(args.images, (width, height))
        run_cli(args, photos, args.model or build_blip_base(CACHE / "blip-base-random"))
        return

    import ray

    from core.captioning.engine import run_caption_job
    from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
    from core.captioning.ray_backend import run_caption_job_on_ray

    width, height = (int(v) for v in args.photo_size.split("x"))
    photos = make_photos(args.images, (width, height))
    model = args.model or build_blip_base(CACHE / "blip-base-random")
    spec = CaptionJobSpec(model=str(model), generation=GenerationSettings(min_new_tokens=TOKENS, max_new_tokens=TOKENS),
                          batch_size=args.batch_size, device="cpu")
    print(f"{args.images} images {args.photo_size}, model {model}, batch {args.batch_size}, {args.cpus} cores")

    start = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, object_store_memory=256 * 1024 * 1024,
             include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    print(f"Ray start-up    {time.perf_counter() - start:7.1f} s (not in the timings below)", flush=True)
    runners = {
        "in-process": run_caption_job,
        **{f"ray, {n} actor{'s' if n > 1 else ''}": (
            lambda lib, s, on_batch, n=n: run_caption_job_on_ray(lib, s, actors=n, on_batch=on_batch))
           for n in (1, 2)},
    }
    totals = {label: {"seconds": 0.0, "images": 0, "steady_seconds": 0.0, "steady_images": 0} for label in runners}
    try:
        # Warm-up, not counted: imports torch/transformers in this process, reads the model
        # into the page cache, and gives Ray's freshly started worker processes time to settle.
        timed_job("(warm-up)", make_photos(args.batch_size, (width, height)), spec, run_caption_job)
        for round_number in range(args.rounds):
            # Alternate the order, so a machine that speeds up or slows down (shared VMs)
            # does not favour whoever runs first.
            order = list(runners) if round_number % 2 == 0 else list(reversed(runners))
            for label in order:
                result = timed_job(label, photos, spec, runners[label])
                total = totals[label]
                total["seconds"] += result["seconds"]
                total["images"] += result["images"]
                total["steady_images"] += result["steady_images"]
                total["steady_seconds"] += result["steady_seconds"]
    finally:
        ray.shutdown()
    base = {"seconds": totals["in-process"]["seconds"],
            "steady_img_s": totals["in-process"]["steady_images"] / totals["in-process"]["steady_seconds"]}
    on_ray = {}
    for n in (1, 2):
        total = totals[f"ray, {n} actor{'s' if n > 1 else ''}"]
        on_ray[n] = {"seconds": total["seconds"], "images": total["images"] / args.rounds,
                     "steady_img_s": total["steady_images"] / total["steady_seconds"]}
    print()
    print(f"over {args.rounds} round(s): in-process {base['seconds']:.1f} s, steady {base['steady_img_s']:.3f} img/s; "
          + ", ".join(f"{n} actor(s) {r['seconds']:.1f} s, steady {r['steady_img_s']:.3f} img/s"
                      for n, r in on_ray.items()))
    for actors, result in on_ray.items():
        ratio = result["seconds"] / base["seconds"]
        overhead_ms = (result["seconds"] - base["seconds"]) / (result["images"] * args.rounds) * 1000
        steady_ms = (1 / result["steady_img_s"] - 1 / base["steady_img_s"]) * 1000
        verdict = "" if actors > 1 else f"  (target <= 1.25: {'met' if ratio <= 1.25 else 'NOT met'})"
        print(f"ray/in-process time, {actors} actor(s): {ratio:.2f}x; overhead {overhead_ms:+.0f} ms/image "
              f"end to end, {steady_ms:+.0f} ms/image steady{verdict}")


if __name__ == "__main__":
    main()
