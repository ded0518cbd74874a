"""`distill oracle`: the accuracy ceiling of the decoding path with perfect network outputs.

The arguments and one call into `distill.oracle`, where the work is.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from distill.codec.decode import DECODE_MODES
from distill.config import input_size_arg
from distill.errors import DataError, ensure_writable_file
from distill.evaluate import format_stats
from distill.oracle import run_oracle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="dataset root (annotations/person_keypoints_<split>.json)")
    parser.add_argument("--split", default="val2017")
    parser.add_argument("--input-size", type=input_size_arg, default=512, help="test input size (short side), as the teacher's")
    parser.add_argument("--no-refine", action="store_true", help="switch off refine (filling missing joints)")
    parser.add_argument("--no-adjust", action="store_true", help="switch off the quarter-pixel adjustment")
    parser.add_argument("--results", type=Path, default=None, help="also write the COCO results JSON here")
    parser.add_argument("--tag-noise", type=float, default=0.0, metavar="SIGMA",
                        help="Gaussian noise on the 1/2-resolution tag maps (see the module docstring)")
    parser.add_argument("--heatmap-jitter", type=float, default=0.0, metavar="J",
                        help="uniform [0, J) noise on the 1/2-resolution heatmaps")
    parser.add_argument("--noise-seed", type=int, default=0, metavar="S")
    parser.add_argument("--max-people", type=int, default=30, metavar="N", help="decoder person limit (default 30)")
    parser.add_argument("--decode", choices=sorted(DECODE_MODES), default="official",
                        help="decoding: official (default) or improved (docs/decoding.md)")


def run(args: argparse.Namespace) -> int:
    if not (args.tag_noise >= 0 and args.heatmap_jitter >= 0):
        raise DataError(f"--tag-noise and --heatmap-jitter must be >= 0, got {args.tag_noise}, {args.heatmap_jitter}")
    if args.max_people < 1 or args.noise_seed < 0:
        raise DataError(f"--max-people must be >= 1 and --noise-seed >= 0, got {args.max_people}, {args.noise_seed}")
    if args.results is not None:
        ensure_writable_file(args.results, "--results")
    t0 = time.perf_counter()
    stats = run_oracle(args.data, args.split, args.input_size, not args.no_adjust, not args.no_refine, args.results,
                       show_progress=True, tag_noise=args.tag_noise, heatmap_jitter=args.heatmap_jitter,
                       noise_seed=args.noise_seed, max_people=args.max_people,
                       mode_name=args.decode)
    steps = ", ".join(s for s, on in (("adjust", not args.no_adjust), ("refine", not args.no_refine)) if on) or "none"
    noise = (f"; tag noise {args.tag_noise:g}, heatmap jitter {args.heatmap_jitter:g}, seed {args.noise_seed}"
             if args.tag_noise or args.heatmap_jitter else "")
    print(format_stats(stats, f"Oracle AP on {args.data} {args.split} (input {args.input_size}; adjust/refine: {steps}"
                              f"; max people {args.max_people}{noise}, decode {args.decode})"))
    print(f"{time.perf_counter() - t0:.1f} s")
    return 0
