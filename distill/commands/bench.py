"""`distill bench`: COCO AP, params/GMACs and CPU/GPU speed of teachers and students, in a report folder.

The arguments and one call into `distill.bench`, where the work is.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from distill.bench import BenchError, _notes, format_table, parse_models, run_bench, write_report
from distill.codec.decode import DECODE_MODES
from distill.config import input_size_arg
from distill.errors import ensure_writable_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", required=True, metavar="[LABEL=]KIND:NAME[:CKPT]",
                        help="models to compare, e.g. teacher:higherhrnet_w32_512:w32.pth "
                             "kd=student:step_s:runs/x/model.pt (no CKPT: random init)")
    parser.add_argument("--data", type=Path, required=True, help="dataset root (annotations/person_keypoints_<split>.json)")
    parser.add_argument("--split", default="val2017")
    parser.add_argument("--input-size", type=input_size_arg, default=512, help="test input size (a multiple of 64)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="report folder (default runs/bench)")
    parser.add_argument("--repeats", type=int, default=10, help="timed network passes per setting (medians)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed CPU network passes first (GPU: at least 5)")
    parser.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 32], metavar="B",
                        help="GPU network batch sizes (default 1 32)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU timings even when CUDA is available")
    parser.add_argument("--overlays", type=int, default=4, help="skeleton overlays of the first N images (0: none)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="device of the AP evaluation and the end-to-end timing (default cpu)")
    parser.add_argument("--decode", choices=sorted(DECODE_MODES), default="official",
                        help="decoding of the main AP and timings (default official); the other mode is scored "
                             "too, in a second pass")


def run(args: argparse.Namespace) -> int:
    entries = parse_models(args.models)
    if args.repeats < 1 or args.warmup < 0:
        raise BenchError("--repeats must be >= 1 and --warmup >= 0")
    if any(b < 1 for b in args.gpu_batches):
        raise BenchError(f"--gpu-batches must be positive, got {args.gpu_batches}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda but no GPU is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_writable_dir(args.out, "--out")  # before the benchmark, not after it (results would be lost)
    t0 = time.perf_counter()
    rows = run_bench(entries, args.data, args.split, input_size=args.input_size, limit=args.limit,
                     repeats=args.repeats, warmup=args.warmup, gpu=not args.no_gpu, gpu_batches=args.gpu_batches,
                     overlays=max(0, args.overlays), device=args.device, decode=args.decode)
    paths = write_report(rows, args.out)
    print(format_table(rows))
    print()
    for note in _notes(rows):
        print(f"- {note}")
    print(f"\nreport: {args.out.resolve()} ({', '.join(p.name for p in paths.values())}; "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0
