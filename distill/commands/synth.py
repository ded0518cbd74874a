"""`distill synth`: write (or reuse) the embedded synthetic COCO-format keypoint dataset and report on it.

The report ends with a format self-check: COCOeval scores the ground truth against itself, which must give
AP 1.0; anything else means the files are not the COCO keypoint format the rest of the pipeline expects.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from distill.data import synthetic as synth


def _int_at_least(lo: int):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (COCO layout is written inside)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="dataset seed (default 0)")
    parser.add_argument("--train", type=_int_at_least(0), default=synth.DEFAULT_NUM_TRAIN,
                        help=f"number of train2017 images (default {synth.DEFAULT_NUM_TRAIN})")
    parser.add_argument("--val", type=_int_at_least(0), default=synth.DEFAULT_NUM_VAL,
                        help=f"number of val2017 images (default {synth.DEFAULT_NUM_VAL})")
    parser.add_argument("--size", type=_int_at_least(synth.MIN_IMAGE_SIZE), default=synth.DEFAULT_IMAGE_SIZE,
                        help=f"image side in px; some images are narrower or shorter, down to 0.75x "
                             f"(default {synth.DEFAULT_IMAGE_SIZE})")
    parser.add_argument("--format", choices=synth.KEYPOINT_FORMATS, default="coco", dest="keypoint_format",
                        help="keypoint definition: coco (17 joints, default) or crowdpose (14 joints and a "
                             "crowdIndex per image; scored with CrowdPose's metrics)")
    parser.add_argument("--force", action="store_true",
                        help="regenerate even if OUT already holds this exact dataset")


def format_summary(summary: dict, aps: dict[str, float] | None = None) -> str:
    """The per-split table (one column per split) as printed by the command."""
    splits = [s for s in synth.SPLITS if s in summary]
    label_w = max(len(label) for _, label in synth.SUMMARY_ROWS)
    lines = [f"{'':<{label_w}}" + "".join(f"{s:>12}" for s in splits)]
    for key, label in synth.SUMMARY_ROWS:
        lines.append(f"{label:<{label_w}}" + "".join(f"{summary[s][key]:>12d}" for s in splits))
    if aps is not None:
        cells = "".join(f"{'n/a' if math.isnan(aps[s]) else f'{aps[s]:.4f}':>12}" for s in splits)
        lines.append(f"{'GT-vs-GT keypoint AP':<{label_w}}" + cells)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.train + args.val == 0:
        print("distill synth: nothing to do: --train and --val are both 0")
        return 2
    summary, reused, seconds = synth.timed_generate(
        args.out, seed=args.seed, num_train=args.train, num_val=args.val, image_size=args.size,
        progress=True, force=args.force, keypoint_format=args.keypoint_format,
    )
    where = f"{args.out} (seed {args.seed}, {args.train} train / {args.val} val images, size {args.size})"
    if reused:
        print(f"reusing the complete synthetic dataset at {where}; pass --force to regenerate")
    else:
        print(f"wrote the synthetic dataset to {where} in {seconds:.1f} s")
    aps = {s: synth.gt_self_ap(synth.annotation_file(args.out, s)) for s in synth.SPLITS if summary[s]["images"]}
    for s in synth.SPLITS:
        aps.setdefault(s, float("nan"))
    print(format_summary(summary, aps))
    bad = [s for s, ap in aps.items() if not math.isnan(ap) and abs(ap - 1.0) > 1e-9]
    if bad:
        print(f"distill synth: GT-vs-GT AP is not 1.0 for {bad}: the annotation files are inconsistent")
        return 1
    return 0
