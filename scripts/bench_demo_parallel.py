#!/usr/bin/env python
"""Is it faster to train the demo's two students side by side (1 process each, the cores split) than one
after the other with all the cores? Prints the images/s of both layouts and their ratio, in one run.

Each layout trains `step_s` distilled from a cached teacher (the demo's recipe) for --steps steps; images/s
come from each run's train_summary.json (the training loop only, not process start-up). Run it on an idle
machine: the ratio is what `distill demo` gains from `parallel_students` on it.

    python scripts/bench_demo_parallel.py --data runs/demo/data --store runs/demo/teacher_cache [--steps 60] \
        [--amp bf16] [--side-workers 1 0]

Side by side, each run can load its batches in a loader process (--side-workers 1) or in its own process
(0): on 2 cores, two training threads plus two loader processes oversubscribe the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs/train/synth_step_s_kd.yaml"


def _cmd(data: Path, store: Path, out: Path, steps: int, threads: int, workers: int, amp: str) -> list[str]:
    sets = [f"data.root={data}", f"teacher.store={store}", f"train.out={out}", f"train.max_steps={steps}",
            f"train.threads={threads}", f"data.workers={workers}", "train.eval_every=0", "train.tensorboard=false",
            "train.ckpt_every=0", f"train.amp={amp}", f"train.channels_last={str(amp == 'bf16').lower()}"]
    return [sys.executable, "-m", "distill.cli", "train", str(RECIPE), *sum((["--set", s] for s in sets), [])]


def _speed(out: Path) -> float:
    return float(json.loads((out / "train_summary.json").read_text())["images_per_second"])


def _side_by_side(args: argparse.Namespace, tmp: Path, threads: int, workers: int) -> tuple[list[float], float]:
    """Two runs at once, THREADS torch threads and WORKERS loader processes each: (images/s of each, wall s)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(_cmd(args.data, args.store, tmp / f"side{workers}_{k}", args.steps, threads, workers,
                                   args.amp), cwd=REPO, stdout=subprocess.DEVNULL) for k in range(2)]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a side-by-side run failed")
    return [_speed(tmp / f"side{workers}_{k}") for k in range(2)], time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--store", type=Path, required=True, help="the teacher cache of --data's train split")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2, help="loader processes of the one-run layout (demo default)")
    ap.add_argument("--side-workers", type=int, nargs="+", default=[1, 0],
                    help="loader processes per run of the side-by-side layouts (0 = load in the training process)")
    ap.add_argument("--amp", choices=("none", "bf16"), default="none",
                    help="training precision of every run (bf16 adds channels_last, as the demo does)")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    half = max(1, cores // 2)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run(_cmd(args.data, args.store, t / "one", args.steps, cores, args.workers, args.amp), check=True,
                       cwd=REPO, stdout=subprocess.DEVNULL)
        one_wall = time.perf_counter() - t0
        one = _speed(t / "one")
        sides = {w: _side_by_side(args, t, half, w) for w in args.side_workers}
    print(f"| layout ({cores} cores, {args.steps} steps of step_s KD, amp {args.amp}) | images/s (training loop) "
          f"| vs one run | wall s for the work |\n|---|---:|---:|---:|")
    print(f"| one run, {cores} threads, {args.workers} loader workers | {one:.1f} | 1.00x | {one_wall:.1f} (one run) |")
    for w, (side, wall) in sides.items():
        print(f"| two runs side by side, {half} thread(s) + {w} loader(s) each | {side[0]:.1f} + {side[1]:.1f} = "
              f"{sum(side):.1f} | {sum(side) / one:.2f}x | {wall:.1f} (both runs) |")
    print("wall for two students vs one after the other: " + ", ".join(
        f"{w} loader(s) each {2 * one_wall / wall:.2f}x faster" for w, (_, wall) in sides.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
