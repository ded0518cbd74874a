"""`distill demo`: the whole pipeline on the synthetic dataset: teacher, cache, students, bench, tags.

The arguments and one call into `distill.demo`, where the work is.
"""
from __future__ import annotations

import argparse
import time

from distill.amp import AMP_NAMES
from distill.demo import STUDENT_EPOCHS, DemoSettings, run_demo
from distill.errors import ensure_writable_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoSettings()
    parser.add_argument("--out", default=d.out, help=f"demo folder (default {d.out}); reruns reuse finished stages")
    parser.add_argument("--device", default=d.device, help="auto (GPU when present), cpu or cuda")
    parser.add_argument("--teacher-epochs", type=int, default=d.teacher_epochs)
    parser.add_argument("--student-epochs", type=int, default=None,
                        help="default: sized to the 15-minute budget for the training precision "
                             f"({STUDENT_EPOCHS['bf16']} in bf16, {STUDENT_EPOCHS['none']} in fp32)")
    parser.add_argument("--student-batch-size", type=int, default=None,
                        help="the students' batch (default: their recipes' own, configs/train/synth_step_s_*.yaml)")
    parser.add_argument("--train-images", type=int, default=d.train_images)
    parser.add_argument("--val-images", type=int, default=d.val_images)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--amp", default=d.amp, choices=["auto", *AMP_NAMES],
                        help="training precision (default auto: bf16 autocast + channels_last on a CPU with native "
                             "bf16, else fp32)")
    parser.add_argument("--train-teacher", action="store_true",
                        help="train the teacher from scratch instead of loading the shipped one")
    parser.add_argument("--sequential-students", action="store_true",
                        help="train the students one after the other with all cores (default on a CPU with >= 2 "
                             "cores: side by side, one process each)")


def run(args: argparse.Namespace) -> int:
    settings = DemoSettings(out=args.out, device=args.device, teacher_epochs=args.teacher_epochs,
                            student_epochs=args.student_epochs, train_images=args.train_images,
                            val_images=args.val_images, seed=args.seed, train_teacher=args.train_teacher, amp=args.amp,
                            student_batch_size=args.student_batch_size,
                            parallel_students=False if args.sequential_students else None)
    ensure_writable_dir(settings.out, "--out")
    t0 = time.perf_counter()
    run_demo(settings)
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0
