#!/usr/bin/env python
"""Training steps (or test-time images) per second with and without `distill.allocator.keep_freed_memory`.

Usage:  python scripts/bench_allocator.py [--model step_s] [--steps 60] [--rounds 2] [--workers 1] [--data ROOT]
        python scripts/bench_allocator.py --predict [--model step_s --weights PT] [--tag-dim 2] [--steps 40]

`--predict` times `distill.predict.Predictor.predict` (flip test, official decoding, input --input-size) over --steps
val images instead of training steps, with its per-stage times (preprocess, network, aggregation, decode); without
--weights the student has its initial weights (the aggregation does not depend on them; the decode does).

Each arm runs in its own Python process (glibc reads its malloc settings once, so the two cannot share one):
`distill.train.Trainer` on the embedded synthetic dataset (or --data), 1 torch thread, the demo's precision
(bf16 autocast + channels_last where the CPU has native bf16), ground truth only, batches straight from the
DataLoader as in a real run. It times --steps steps after 5 warm-up steps and counts the process's minor page
faults per step (the workers' are not counted). The arms alternate (off, on, off, on, ...) for --rounds
rounds, so a drift in the machine's speed hits both; the table gives each arm's median and the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WARMUP = 5


def child(args: argparse.Namespace) -> None:
    """One arm: prints a JSON line with ms/step and page faults/step."""
    import resource
    import time

    import torch

    from distill.amp import native_cpu_bf16
    from distill.config import DataSection, LossSection, ModelSection, OptimSection, RunConfig, TrainSection
    from distill.train import Trainer

    bf16 = native_cpu_bf16()
    cfg = RunConfig(
        model=ModelSection("student", args.model),
        data=DataSection(root=str(args.data), input_size=args.input_size, workers=args.workers),
        loss=LossSection(alpha=0.0, push_factor=1e-2, pull_factor=1e-2),
        optim=OptimSection(epochs=1000, batch_size=args.batch),
        train=TrainSection(out=str(args.out), seed=0, device="cpu", amp="bf16" if bf16 else "none",
                           channels_last=bf16, eval_every=0, ckpt_every=0, tensorboard=False, threads=1),
    )
    trainer = Trainer(cfg, resume=False)

    def endless():
        while True:  # epoch after epoch, as a run goes on
            yield from trainer.loader

    batches = endless()

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    times: list[float] = []
    for i in range(WARMUP + args.steps):
        if i == WARMUP:
            f0, t_all = faults(), time.perf_counter()
        t0 = time.perf_counter()
        trainer.train_step(next(batches))
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_all
    print(json.dumps({"step_ms": statistics.median(times) * 1e3, "wall_ms": wall / args.steps * 1e3,
                      "faults": (faults() - f0) / args.steps, "torch_threads": torch.get_num_threads()}))


def child_predict(args: argparse.Namespace) -> None:
    """One inference arm: prints a JSON line with ms/image, the Predictor's stage times and page faults/image."""
    import resource
    import time

    import torch

    from distill.data.coco import CocoKeypointDataset
    from distill.models import load_model
    from distill.predict import Predictor
    from students import build_student

    torch.set_num_threads(args.threads)
    if args.weights:
        model = load_model(f"student:{args.model}:{args.weights}")
    else:
        model = build_student(args.model, **({"tag_dim": args.tag_dim} if args.tag_dim else {}))
    model.eval()
    ds = CocoKeypointDataset(args.data, "val2017", remove_images_without_annotations=False, augment=False)
    images = [ds.load_image(i % len(ds)) for i in range(WARMUP + args.steps)]
    predictor = Predictor(model, ds.spec, input_size=args.input_size, timing=True)

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    times: list[float] = []
    for i, image in enumerate(images):
        if i == WARMUP:
            predictor.reset_timings()
            f0, t_all = faults(), time.perf_counter()
        t0 = time.perf_counter()
        predictor.predict(image)
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_all
    stages = {k: v * 1e3 / args.steps for k, v in predictor.timings.items()}
    print(json.dumps({"step_ms": statistics.median(times) * 1e3, "wall_ms": wall / args.steps * 1e3,
                      "faults": (faults() - f0) / args.steps, **{f"{k}_ms": v for k, v in stages.items()}}))


def run_arm(args: argparse.Namespace, on: bool, work: Path, i: int) -> dict[str, float]:
    env = dict(os.environ, AEDISTILL_KEEP_FREED_MEMORY="1" if on else "0")
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--steps", str(args.steps),
           "--batch", str(args.batch), "--input-size", str(args.input_size), "--workers", str(args.workers),
           "--data", str(args.data), "--out", str(work / f"run{i}_{int(on)}"), "--threads", str(args.threads),
           "--tag-dim", str(args.tag_dim)]
    if args.predict:
        cmd += ["--predict"] + (["--weights", str(args.weights)] if args.weights else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"arm {'on' if on else 'off'} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="step_s", help="student name (default: step_s, the demo's student)")
    p.add_argument("--steps", type=int, default=60, help="timed steps per arm and round")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two arms")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (the demo's students use 1)")
    p.add_argument("--data", type=Path, default=None, help="COCO-format root (default: a synthetic set)")
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--predict", action="store_true", help="time test-time inference (Predictor) instead of training")
    p.add_argument("--weights", type=Path, default=None, help="--predict: the student's model.pt (default: initial weights)")
    p.add_argument("--tag-dim", type=int, default=0, help="the student's tag_dim (0: its config's; ignored with --weights)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (training arms: 1, as the demo's students)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_predict(args) if args.predict else child(args)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.data is None:
            from distill.data.synthetic import generate_dataset

            args.data = work / "data"
            generate_dataset(args.data, seed=0, num_train=4 if args.predict else 64, num_val=20 if args.predict else 1,
                             image_size=args.input_size, progress=False)
        arms: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for r in range(args.rounds):
            for on in (False, True):
                arms[on].append(run_arm(args, on, work, r))
                unit = "image" if args.predict else "step"
                print(f"round {r + 1}/{args.rounds}, keep_freed_memory {'on ' if on else 'off'}: "
                      f"{arms[on][-1]['wall_ms']:.1f} ms/{unit}, {arms[on][-1]['faults']:.0f} page faults/{unit}",
                      flush=True)

    def med(on: bool, key: str) -> float:
        return statistics.median(r[key] for r in arms[on])

    if args.predict:
        print(f"\n{args.model}{'' if args.weights else ' (initial weights)'}, Predictor.predict, input "
              f"{args.input_size}, flip test, official decoding, {args.threads} torch thread(s), {args.steps} images x "
              f"{args.rounds} rounds per arm (medians over rounds; per image)")
        print("| malloc | wall ms/image | preprocess ms | network ms | aggregation ms | decode ms | minor page faults/image "
              "| images/s vs glibc defaults |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for on in (False, True):
            ratio = med(False, "wall_ms") / med(on, "wall_ms")
            print(f"| {'keep_freed_memory' if on else 'glibc defaults'} | {med(on, 'wall_ms'):.1f} | "
                  f"{med(on, 'preprocess_ms'):.1f} | {med(on, 'network_ms'):.1f} | {med(on, 'aggregate_ms'):.1f} | "
                  f"{med(on, 'decode_ms'):.1f} | {med(on, 'faults'):.0f} | {ratio:.2f}x |")
        return
    print(f"\n{args.model}, batch {args.batch}, input {args.input_size}, 1 torch thread, {args.workers} DataLoader "
          f"worker(s), {args.steps} steps x {args.rounds} rounds per arm (medians over rounds; wall = loader + step)")
    print("| malloc | wall ms/step | step ms (median) | minor page faults/step | steps/s vs glibc defaults |")
    print("|---|---:|---:|---:|---:|")
    for on in (False, True):
        ratio = med(False, "wall_ms") / med(on, "wall_ms")
        print(f"| {'keep_freed_memory' if on else 'glibc defaults'} | {med(on, 'wall_ms'):.1f} | "
              f"{med(on, 'step_ms'):.1f} | {med(on, 'faults'):.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
