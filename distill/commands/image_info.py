"""`distill image-info`: the COCO image list (ids, file names, sizes) of a folder of images without annotations.

    distill image-info --images data/coco/my_unlabelled --out data/coco/annotations/image_info_my_unlabelled.json

A run then trains on them with `data.unlabelled_split: my_unlabelled` (docs/label_scarce.md). COCO's own
unlabeled2017 ships this file (annotations/image_info_unlabeled2017.json). Ids follow `distill predict`'s rule
(the file's stem as an integer when it is one, else the file name), so pseudo-labels predicted on the folder
match its images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.data.unlabelled import write_image_info
from distill.errors import ensure_writable_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, type=Path, help="a folder of images")
    parser.add_argument("--out", required=True, type=Path,
                        help="the image list to write, e.g. <root>/annotations/image_info_<split>.json")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    ensure_writable_file(args.out, "--out")
    n = write_image_info(args.images, args.out, show_progress=not args.no_progress and sys.stderr.isatty())
    print(f"{n} images of {args.images} -> {args.out}")
    return 0
