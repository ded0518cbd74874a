"""Training throughput (images/s) of students and the synthetic teacher, through the real training step.

Each row builds a `distill.train.Trainer` for one model on the embedded synthetic dataset (generated into
a temporary folder unless --data is given), pre-loads a few batches (so data loading is not timed), and
times `Trainer.train_step` (forward, loss, backward, Adam step; with an online teacher also its forward)
for --steps steps after --warmup steps. Reference in the same run: the teacher's own GT training step,
so the last column is a ratio that does not depend on the machine's speed.

    python scripts/bench_train.py                       # CPU, input 256, batch 8
    python scripts/bench_train.py --device cuda --amp bf16 --channels-last --batch 32 --input-size 512
    python scripts/bench_train.py --rows student:step_s student:step_s:kd --threads 1 --precision-sweep
    python scripts/bench_train.py --rows student:hrnet_w16_lite student:hrnet_w16_lite:fkd --threads 1 --amp bf16

Row modes: KIND:NAME (ground truth only), :kd (softmax heatmap KD from the online teacher), :fkd (layer-wise
feature KD from the online teacher, the inputs of stages 3 and 4 and of the 1/4 output conv: students of the
teacher's tree only).

--compile-sweep times every row eager and under torch.compile (the warm-up column includes the compilation).

--precision-sweep times every row four ways (fp32, bf16 autocast, channels_last, both) and prints each against
the same row's fp32 step in the same run: on a CPU with native bf16 (AVX512-BF16/AMX) the last can be the
cheapest way to more training steps per minute; without it bf16 is emulated and slow.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from distill.config import (DataSection, LossSection, ModelSection, OptimSection, RunConfig, TeacherSection,
                            TrainSection)
from distill.train import Trainer

TEACHER = "higherhrnet_w16_synth"
DEFAULT_ROWS = ["teacher:" + TEACHER, "student:step_s", "student:step_s:kd", "student:step_s_1tag",
                "student:step_m", "student:hrnet_w16", "student:timm_mobilenetv3_large_100"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


FEATURE_KD_LAYERS = "stage3,stage4,final_layers.0"  # the layer-wise hints of docs/learning.md, session 23


def time_row(kind: str, name: str, kd: str, args: argparse.Namespace, data: Path, teacher_weights: Path,
             work: Path) -> dict[str, float]:
    """`kd`: "" (GT only), "kd" (heatmap KD) or "fkd" (feature KD), both from the online teacher."""
    fkd = dict(feature_kd_weight=1.0, feature_kd_at=FEATURE_KD_LAYERS) if kd == "fkd" else {}
    cfg = RunConfig(
        model=ModelSection(kind, name),
        teacher=TeacherSection(name=TEACHER, weights=str(teacher_weights), mode="online") if kd else TeacherSection(),
        data=DataSection(root=str(data), input_size=args.input_size, workers=0),
        loss=LossSection(alpha=0.5 if kd == "kd" else 0.0, kd_type="softmax", kd_temperature=0.1,
                         push_factor=1e-2, pull_factor=1e-2, **fkd),
        optim=OptimSection(epochs=1, batch_size=args.batch),
        train=TrainSection(out=str(work / f"{kind}_{name}_{kd or 'gt'}_{args.amp}_{int(args.channels_last)}"
                                              f"{'_compiled' if args.compile else ''}"), seed=0,
                           device=args.device, amp=args.amp, channels_last=args.channels_last, eval_every=0, ckpt_every=0, tensorboard=False,
                           threads=args.threads or 0),
    )
    trainer = Trainer(cfg, resume=False)
    if args.compile:
        trainer.net = torch.compile(trainer.net)  # train_step runs self.net; the first steps pay the compilation
    batches = []
    for batch in trainer.loader:
        batches.append(batch)
        if len(batches) >= 4:
            break
    times = []
    warmup_s = 0.0
    for i in range(args.warmup + args.steps):
        _sync(trainer.device)
        t0 = time.perf_counter()
        trainer.train_step(batches[i % len(batches)])
        _sync(trainer.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        else:
            warmup_s += time.perf_counter() - t0
    ms = statistics.median(times) * 1000
    params = sum(p.numel() for p in trainer.model.parameters())
    trainer.release()
    return {"ms": ms, "ips": args.batch / (ms / 1000), "params": params, "warmup_s": warmup_s}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS,
                   help="KIND:NAME[:kd|:fkd] (heatmap / feature KD from the online synthetic teacher)")
    p.add_argument("--data", type=Path, default=None, help="COCO-format root (default: a small synthetic set)")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--precision-sweep", action="store_true",
                   help="time each row in fp32, bf16, channels_last and bf16 + channels_last (ratios vs fp32)")
    p.add_argument("--compile-sweep", action="store_true",
                   help="time each row eager and under torch.compile (default mode), same precision (ratio vs eager)")
    args = p.parse_args(argv)
    args.compile = False  # set per arm by compile_sweep
    if args.precision_sweep and args.compile_sweep:
        raise SystemExit("--precision-sweep and --compile-sweep: pick one")
    if args.precision_sweep:
        return precision_sweep(args)
    if args.compile_sweep:
        return compile_sweep(args)

    with tempfile.TemporaryDirectory() as tmp:
        rows = [(label, r) for label, _, r in _time_rows(args, Path(tmp), [("", args.amp, args.channels_last)])]

    ref = next((r for label, r in rows if label == TEACHER), None)
    threads = args.threads or torch.get_num_threads()
    print(f"\ntraining step, device {args.device}, amp {args.amp}, channels_last {args.channels_last}, "
          f"input {args.input_size}, batch {args.batch}, median of {args.steps} steps after {args.warmup} warm-up"
          + (f", {threads} CPU threads" if args.device == "cpu" else ""))
    print("| model | params (M) | ms/step | images/s | vs teacher |\n|---|---:|---:|---:|---:|")
    for label, r in rows:
        ratio = f"{r['ips'] / ref['ips']:.2f}x" if ref else "-"
        print(f"| {label} | {r['params'] / 1e6:.2f} | {r['ms']:.1f} | {r['ips']:.1f} | {ratio} |")


def _inputs(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The data (--data, else a small synthetic set in `work`) and a random teacher's weights (speed does not
    depend on the weights' values)."""
    from distill.data.synthetic import generate_dataset
    from teachers import build_teacher

    data = args.data
    if data is None:
        data = work / "data"
        generate_dataset(data, seed=0, num_train=4 * args.batch, num_val=1, image_size=args.input_size,
                         progress=False)
    teacher_weights = work / "teacher_random.pt"
    torch.save(build_teacher(TEACHER).state_dict(), teacher_weights)
    return data, teacher_weights


def _time_rows(args: argparse.Namespace, work: Path, settings: Sequence[tuple[str, str, bool]],
               compiled: Sequence[bool] = (False,)) -> list[tuple[str, str, dict[str, float]]]:
    """Time every --rows entry under each (name, amp, channels_last) setting, eager and/or compiled:
    (row label, setting name, timing)."""
    data, teacher_weights = _inputs(args, work)
    out = []
    for spec in args.rows:
        kind, name, kd = _parse_row(spec)
        label = name + {"": "", "kd": " (KD, online teacher)", "fkd": " (feature KD, online teacher)"}[kd]
        for pname, amp, cl in settings:
            for comp in compiled:
                a = copy.copy(args)
                a.amp, a.channels_last, a.compile = amp, cl, comp
                r = time_row(kind, name, kd, a, data, teacher_weights, work)
                pn = ", ".join(x for x in (pname, "compiled" if comp else "") if x)
                out.append((label, pn, r))
                print(f"  {label}{', ' + pn if pn else ''}: {r['ms']:.1f} ms/step", flush=True)
    return out


PRECISIONS = (("fp32", "none", False), ("bf16", "bf16", False), ("fp32 channels_last", "none", True),
              ("bf16 channels_last", "bf16", True))


def _parse_row(spec: str) -> tuple[str, str, str]:
    """'student:NAME[:kd|:fkd]' -> (kind, name, mode), mode "" for ground truth only."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("teacher", "student") or parts[2:] not in ([], ["kd"], ["fkd"]):
        raise SystemExit(f"--rows entry {spec!r}: expected KIND:NAME[:kd|:fkd] with KIND teacher or student")
    return parts[0], parts[1], (parts[2:] or [""])[0]


def precision_sweep(args: argparse.Namespace) -> None:
    """Every row in the four precision settings; the reference is the same row's fp32 step, this run."""
    if args.device == "cuda":
        raise SystemExit("--precision-sweep is for the CPU; on CUDA pass --amp/--channels-last per run")
    from distill.amp import native_cpu_bf16

    native = native_cpu_bf16()
    with tempfile.TemporaryDirectory() as tmp:
        timed = _time_rows(args, Path(tmp), PRECISIONS)
    table = []
    for i, (label, pname, r) in enumerate(timed):
        ref = timed[i - i % len(PRECISIONS)][2]  # the same row's fp32 step (PRECISIONS[0])
        table.append((label, pname, r, r["ips"] / ref["ips"]))
    threads = args.threads or torch.get_num_threads()
    print(f"\ntraining step by precision, cpu ({torch.backends.cpu.get_cpu_capability()}, native bf16: {native}), "
          f"{threads} threads, input {args.input_size}, batch {args.batch}, median of {args.steps} steps after "
          f"{args.warmup} warm-up")
    print("| model | precision | ms/step | images/s | vs fp32 |\n|---|---|---:|---:|---:|")
    for label, pname, r, ratio in table:
        print(f"| {label} | {pname} | {r['ms']:.1f} | {r['ips']:.1f} | {ratio:.2f}x |")


def compile_sweep(args: argparse.Namespace) -> None:
    """Every row eager and under `torch.compile`; the reference is the same row's eager step, this run. The
    warm-up column is the time of the --warmup steps, which for the compiled row includes the compilation."""
    with tempfile.TemporaryDirectory() as tmp:
        timed = _time_rows(args, Path(tmp), [("", args.amp, args.channels_last)], compiled=(False, True))
    threads = args.threads or torch.get_num_threads()
    print(f"\ntraining step eager vs torch.compile, device {args.device}, amp {args.amp}, channels_last "
          f"{args.channels_last}, input {args.input_size}, batch {args.batch}, median of {args.steps} steps after "
          f"{args.warmup} warm-up" + (f", {threads} CPU threads" if args.device == "cpu" else ""))
    print("| model | mode | warm-up s | ms/step | images/s | vs eager |\n|---|---|---:|---:|---:|---:|")
    for i, (label, pname, r) in enumerate(timed):
        ref = timed[i - i % 2][2]
        print(f"| {label} | {pname or 'eager'} | {r['warmup_s']:.1f} | {r['ms']:.1f} | {r['ips']:.1f} | "
              f"{r['ips'] / ref['ips']:.2f}x |")


if __name__ == "__main__":
    main()
