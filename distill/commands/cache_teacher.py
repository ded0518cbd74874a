"""`distill cache-teacher`: run a frozen HigherHRNet teacher once over a split into a resumable float16 store.

    distill cache-teacher --teacher higherhrnet_w32_512 --weights pose_higher_hrnet_w32_512.pth \\
        --data data/coco --split train2017 --out runs/teacher-cache/w32-train [--device cuda --amp bf16]

The store layout and the pixel convention are documented in `distill.teacher_cache`. Rerunning the same
command after an interruption (Ctrl-C, a kill, a crash) continues with the first uncommitted shard; a store
made with another teacher config, weights, input size, amp, dataset or shard size is refused.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from distill.config import input_size_arg
from distill.data.coco import CocoKeypointDataset
from distill.data.unlabelled import add_unlabelled_split
from distill.errors import AEDistillError
from distill.models import build_model, load_weights, trained_teacher_config
from distill.teacher_cache import RANDOM_INIT_NOTE, TeacherStore, build_store, estimate_store, weights_identity

DEFAULT_INPUT_SIZE = 512


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="registered teacher config name or a .yaml path (e.g. higherhrnet_w32_512, tiny)")
    w = parser.add_mutually_exclusive_group(required=True)
    w.add_argument("--weights", help="teacher checkpoint (.pth); its sha256 goes into the store header")
    w.add_argument("--random-init", action="store_true",
                   help="use a randomly initialised teacher (demos and tests only: the maps carry no knowledge)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for --random-init (default 0)")
    parser.add_argument("--data", required=True, help="COCO-format dataset root (annotations/, <split>/)")
    parser.add_argument("--split", default="train2017", help="split to cache (default train2017)")
    parser.add_argument("--out", required=True, help="store folder (created, or resumed when it exists)")
    parser.add_argument("--input-size", type=input_size_arg, default=None,
                        help=f"short side of the canonical frame (default: the teacher config's input_size, else {DEFAULT_INPUT_SIZE})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass, same-size images only (default 8)")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype for the teacher (default: float32)")
    parser.add_argument("--shard-size", type=int, default=32, help="images per shard (default 32)")
    parser.add_argument("--num-parts", type=int, default=None,
                        help="build the store with N processes (or GPUs) at once: each builds every N-th shard "
                             "(default: torchrun's WORLD_SIZE, else 1)")
    parser.add_argument("--part", type=int, default=None, help="which part this process builds, 0..N-1 "
                        "(default: torchrun's RANK, else 0)")
    parser.add_argument("--tag-bits", type=int, default=None, choices=range(8, 17), metavar="8..16",
                        help="format 2: bits per tag value (default 8, the smallest store; 12 changes the decoded "
                             "people as rarely as float16 does, scripts/cache_decode_identity.py)")
    parser.add_argument("--estimate", action="store_true",
                        help="print the projected size and build time of the whole split (from its first images) "
                             "and exit without building")
    parser.add_argument("--format", type=int, choices=(1, 2), default=1, dest="format_version",
                        help="store format: 1 = float16 maps (default), 2 = quantised + zstd per image, about "
                             "7x smaller (errors: heatmaps <= peak/255, tags <= range/510 per map)")
    parser.add_argument("--workers", type=int, default=2, help="image loading worker processes (default 2)")
    parser.add_argument("--all-images", action="store_true",
                        help="also cache images without person annotations (the training dataset drops them by default)")
    parser.add_argument("--unlabelled-split", default="", metavar="SPLIT",
                        help="also cache this split's images (no annotations; e.g. unlabeled2017), after --split's: "
                             "for a run with data.unlabelled_split SPLIT and data.unlabelled teacher")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verify", action="store_true",
                        help="afterwards, read the whole store back: every file's sha256 and every map finite")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    # rebuilt as trained (e.g. a teacher trained here with D-dim tags)
    cfg = trained_teacher_config(args.teacher, None if args.random_init else args.weights)
    input_size = args.input_size or cfg.input_size or DEFAULT_INPUT_SIZE
    if input_size < 64:
        raise AEDistillError(f"--input-size must be at least 64, got {input_size}")
    if args.tag_bits is not None and args.format_version != 2:
        raise AEDistillError("--tag-bits applies to --format 2 only")
    num_parts = args.num_parts if args.num_parts is not None else int(os.environ.get("WORLD_SIZE", 1))
    part = args.part if args.part is not None else int(os.environ.get("RANK", 0))
    if num_parts < 1 or not 0 <= part < num_parts:
        raise AEDistillError(f"--part {part} of --num-parts {num_parts}: expected 0 <= part < num_parts")
    if args.device == "cuda" and num_parts > 1 and "LOCAL_RANK" in os.environ:
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"  # torchrun: one GPU per part
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AEDistillError(f"--device {args.device}: CUDA is not available on this machine")
    if args.random_init:
        _log("!" * 100 + f"\n!! {RANDOM_INIT_NOTE}\n" + "!" * 100)
        torch.manual_seed(args.seed)
        model = build_model("teacher", cfg)
    else:
        model = load_weights(build_model("teacher", cfg), args.weights, strict=True)
    model.eval()
    weights = weights_identity(model, None if args.random_init else args.weights, args.random_init,
                               args.seed if args.random_init else None)
    dataset = CocoKeypointDataset(args.data, args.split, input_size=input_size, augment=False,
                                  remove_images_without_annotations=not args.all_images)
    if args.unlabelled_split:
        if args.unlabelled_split == args.split:
            raise AEDistillError(f"--unlabelled-split {args.unlabelled_split!r} is --split itself")
        added = add_unlabelled_split(dataset, args.data, args.unlabelled_split)
        _log(f"{args.split}: {len(dataset) - added} images, then {added} unlabelled images of {args.unlabelled_split}")
    if args.estimate:
        est = estimate_store(model, dataset, input_size=input_size, device=device, amp=args.amp,
                             format_version=args.format_version, num_parts=num_parts, tag_bits=args.tag_bits)
        print(f"estimate for {args.split} ({est['images']} images, format v{args.format_version}, input {input_size}, "
              f"{device}; from the first {est['sampled']}): {est['bytes_per_image'] / 2**20:.3f} MiB/image -> "
              f"{est['projected_bytes'] / 2**30:.2f} GiB; {est['seconds_per_image']:.2f} s/image -> "
              f"{_duration(est['projected_seconds'])}" + (f" with {num_parts} parts" if num_parts > 1 else "")
              + " (teacher forward and encoding; image loading runs beside it in workers)")
        return 0
    summary = build_store(
        args.out, model, dataset, teacher_cfg=cfg, weights=weights, input_size=input_size, device=device,
        batch_size=args.batch_size, amp=args.amp, shard_size=args.shard_size, workers=args.workers,
        show_progress=not args.no_progress, log=_log, format_version=args.format_version,
        num_parts=num_parts, part=part, tag_bits=args.tag_bits)
    per_img = summary.store_bytes / max(1, summary.images_total)
    print(f"store {args.out}: {summary.images_total} images in {summary.shards_total} shards "
          f"({summary.shards_skipped} already committed, {summary.shards_computed} computed now), "
          f"{summary.store_bytes / 2**20:.1f} MiB ({per_img / 2**10:.1f} KiB/image), format v{args.format_version}")
    if num_parts > 1:
        print(f"part {part} of {num_parts}: done; " + ("all parts done, index.json written: the store is complete"
                                                      if summary.complete else "waiting for the other parts"))
    if args.format_version == 2 and summary.complete:
        worst = TeacherStore(args.out, verify="none", allow_incomplete=True).worst_error()
        print(f"worst quantisation error over the store: heatmaps {worst['heat_rel']:.5f} of their map's peak "
              f"(bound 1/255 = {1 / 255:.5f}), tags {worst['tag_abs']:.5f} (absolute)")
    if summary.images_computed:
        print(f"computed {summary.images_computed} images in {summary.seconds:.1f} s "
              f"({summary.images_per_second:.2f} images/s; teacher forward {summary.forward_seconds:.1f} s) "
              f"teacher {cfg.name or args.teacher}, input {input_size}, device {device}, amp {args.amp or 'off'}")
    if args.verify and summary.complete:
        TeacherStore(args.out, verify="none").verify(checksum=True, finite=True)
        print(f"verified {args.out}: every shard matches its sha256, every map is finite")
    if args.random_init:
        _log(f"note: {RANDOM_INIT_NOTE}")
    return 0
