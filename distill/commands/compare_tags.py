"""`distill compare-tags`: the AP cost of tag reduction, and the tag-layout sweep.

The arguments and one call into `distill.compare_tags`, where the work is.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from distill.codec.decode import DECODE_MODES
from distill.compare_tags import JSON_NAME, MD_NAME, CompareTagsError, compare_tags
from distill.config import input_size_arg
from distill.errors import ensure_writable_dir
from distill.tag_sweep import run_sweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", metavar="CFG:WEIGHTS",
                        help="teacher config (registered name or yaml) and weights, e.g. tiny:state_dict.pt")
    parser.add_argument("--data", required=True, type=Path, help="COCO-format dataset root")
    parser.add_argument("--split", default="val2017", help="evaluation split (default val2017)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--input-size", type=input_size_arg, default=512, help="test input size (default 512)")
    parser.add_argument("--fit-split", default="train2017", help="split the PCA reduction is fitted on")
    parser.add_argument("--fit-images", type=int, default=64, help="training images for the PCA fit (default 64)")
    parser.add_argument("--students", nargs="*", default=[], metavar="LABEL=student:NAME:CKPT",
                        help="students to evaluate next to the teacher, e.g. 17tag=student:step_s:runs/x/model.pt")
    parser.add_argument("--out", type=Path, default=Path("runs/compare_tags"), help="output folder")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    parser.add_argument("--no-flip", action="store_true", help="no flip test")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--decode", choices=sorted(DECODE_MODES), default="official",
                        help="decoding of every row: official (default) or improved (docs/decoding.md)")
    sweep = parser.add_argument_group("tag-layout sweep (--dims): train students for every T x D at one budget "
                                      "(distill/tag_sweep.py); --teacher is then optional: its tags reduced to "
                                      "D channels join the table and plot")
    sweep.add_argument("--dims", type=int, nargs="+", default=None, metavar="D", help="tag lengths D, e.g. 1 2 4 8")
    sweep.add_argument("--maps", nargs="+", default=["per-joint", "shared"], choices=["per-joint", "shared"],
                       help="tag maps T: per-joint (T = J) and/or shared (T = 1)")
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sweep.add_argument("--config", type=Path, default=Path("configs/train/synth_step_s_kd.yaml"),
                       help="the training recipe of every run (a run config)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="config overrides applied to every run (e.g. optim.epochs=10)")
    sweep.add_argument("--adopt", nargs="+", type=Path, default=[], metavar="RUN_DIR",
                       help="finished runs trained elsewhere (e.g. by distill train) to use for the planned runs they "
                            "equal (same recipe settings, seed and built tag layout) instead of training those")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dims:
        run_sweep(args.config, args.out, maps=args.maps, dims=args.dims, seeds=args.seeds,
                  overrides=[f"data.root={args.data}", *args.overrides],
                  val_split=args.split, limit=args.limit, decode=args.decode, teacher=args.teacher,
                  fit_images=args.fit_images, adopt=args.adopt)
        print(f"written: {Path(args.out) / 'tag_sweep.md'}, tag_sweep.json, tag_sweep.png")
        return 0
    if not args.teacher:
        raise CompareTagsError("--teacher CFG:WEIGHTS is required (or --dims for the tag-layout sweep)")
    if args.fit_images < 1:
        raise CompareTagsError("--fit-images must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_writable_dir(args.out, "--out")
    compare_tags(args.teacher, args.data, args.split, limit=args.limit, input_size=args.input_size,
                 fit_split=args.fit_split, fit_images=args.fit_images, students=args.students, out=args.out,
                 device=args.device, flip=not args.no_flip, batch_size=args.batch_size,
                 show_progress=sys.stderr.isatty(), print_table=True, decode=args.decode)
    print(f"written: {Path(args.out) / MD_NAME}, {Path(args.out) / JSON_NAME}")
    return 0
