#!/usr/bin/env python
"""Is it faster to train the demo's two students side by side (1 process each, the cores split) than one
after the other with all the cores? Prints the images/s of both layouts and their ratio, in one run.

Each layout trains `step_s` distilled from a cached teacher (the demo's recipe) for --steps steps; images/s
come from each run's train_summary.json (the training loop only, not process start-up). Run it on an idle
machine: the ratio is what `distill demo` gains from `parallel_students` on it.

    python scripts/bench_demo_parallel.py --data runs/demo/data --store runs/demo/teacher_cache [--steps 60]
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


def _cmd(data: Path, store: Path, out: Path, steps: int, threads: int, workers: int) -> list[str]:
    sets = [f"data.root={data}", f"teacher.store={store}", f"train.out={out}", f"train.max_steps={steps}",
            f"train.threads={threads}", f"data.workers={workers}", "train.eval_every=0", "train.tensorboard=false",
            "train.ckpt_every=0"]
    return [sys.executable, "-m", "distill.cli", "train", str(RECIPE), *sum((["--set", s] for s in sets), [])]


def _speed(out: Path) -> float:
    return float(json.loads((out / "train_summary.json").read_text())["images_per_second"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--store", type=Path, required=True, help="the teacher cache of --data's train split")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2, help="loader processes of the one-run layout (demo default)")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run(_cmd(args.data, args.store, t / "one", args.steps, cores, args.workers), check=True,
                       cwd=REPO, stdout=subprocess.DEVNULL)
        one_wall = time.perf_counter() - t0
        half = max(1, cores // 2)
        t0 = time.perf_counter()
        procs = [subprocess.Popen(_cmd(args.data, args.store, t / f"side{k}", args.steps, half, 1), cwd=REPO,
                                  stdout=subprocess.DEVNULL) for k in range(2)]
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("a side-by-side run failed")
        side_wall = time.perf_counter() - t0
        one = _speed(t / "one")
        side = [_speed(t / f"side{k}") for k in range(2)]
    print(f"| layout ({cores} cores, {args.steps} steps of step_s KD) | images/s (training loop) | wall s for the "
          f"work |\n|---|---:|---:|")
    print(f"| one run, {cores} threads, {args.workers} loader workers | {one:.1f} | {one_wall:.1f} (one run) |")
    print(f"| two runs side by side, {half} thread(s) + 1 loader each | {side[0]:.1f} + {side[1]:.1f} = "
          f"{sum(side):.1f} | {side_wall:.1f} (both runs) |")
    print(f"side by side / one after the other, images/s: {sum(side) / one:.2f}x; wall for two students: "
          f"{2 * one_wall / side_wall:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
