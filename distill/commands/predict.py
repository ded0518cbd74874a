"""`distill predict`: COCO results-format keypoints (and overlays) for an image or a folder of images.

The arguments and one call into `distill.predict_files`, where the work is.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.atomic import write_json_atomic
from distill.codec.decode import DECODE_MODES, decode_mode
from distill.config import input_size_arg
from distill.data.images import ImageReadError
from distill.errors import DataError, ensure_writable_dir, ensure_writable_file
from distill.keypoints import KeypointSpec
from distill.models import contract_of, load_model, parse_model_spec
from distill.predict import Predictor
from distill.predict_files import ResultsJournal, predict_images
from distill.teacher_cache.identity import sha256_file
from distill.visualize import list_images, spec_from_annotations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="KIND:NAME:CKPT", help="e.g. student:step_s:runs/x/model.pt")
    parser.add_argument("--input", required=True, type=Path, help="an image or a folder of images")
    parser.add_argument("--out", required=True, type=Path, help="results file (COCO keypoint results format)")
    parser.add_argument("--overlays", type=Path, default=None, help="also draw the skeletons into this folder")
    parser.add_argument("--input-size", type=input_size_arg, default=512, help="test input size (default 512)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--decode", choices=sorted(DECODE_MODES), default="official",
                        help="decoding: official (the HigherHRNet parser, default) or improved (docs/decoding.md)")
    parser.add_argument("--score-thr", type=float, default=0.1, help="overlays: draw people scoring at least this")
    parser.add_argument("--keypoints", type=Path, default=None, metavar="ANN.json",
                        help="joint names / skeleton from this COCO annotation file (default COCO's 17)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    ensure_writable_file(args.out, "--out")
    if args.overlays is not None:
        ensure_writable_dir(args.overlays, "--overlays")
    images = list_images(args.input)
    spec = parse_model_spec(args.model)
    if spec.weights is None:
        raise DataError(f"--model {spec}: give a checkpoint (KIND:NAME:CKPT); predictions of random weights "
                        "mean nothing")
    model = load_model(spec)
    kp = spec_from_annotations(args.keypoints) if args.keypoints else KeypointSpec.coco()
    joints = contract_of(model).num_joints
    if joints != kp.num_joints:
        raise DataError(f"{spec} predicts {joints} joints but the keypoint definition has {kp.num_joints}; "
                        "pass --keypoints with the dataset's annotation file")
    predictor = Predictor(model, kp, input_size=args.input_size, flip=True, device=args.device,
                          **decode_mode(args.decode))
    # Kept beside --out until the results are written: an interrupted run resumes from it (same command).
    journal = ResultsJournal(args.out.with_name(args.out.name + ".partial.jsonl"), {
        "model": str(spec), "weights_sha256": sha256_file(spec.weights), "input_size": args.input_size,
        "decode": args.decode, "flip": True, "keypoints": kp.num_joints})
    try:
        results, failed = predict_images(predictor, images, args.batch_size, args.overlays, kp, args.score_thr,
                                         spec.name, show_progress=not args.no_progress and sys.stderr.isatty(),
                                         journal=journal)
        write_json_atomic(args.out, results)
    except BaseException:
        journal.close()
        raise
    journal.close(remove=True)
    people = len(results)
    print(f"{len(images) - len(failed)} image(s) -> {args.out} ({people} people)"
          + (f", overlays in {args.overlays}" if args.overlays else ""))
    if failed:
        raise ImageReadError(f"{len(failed)} of {len(images)} image(s) could not be read and were skipped "
                             f"(first: {failed[0]}); the results of the others are in {args.out}")
    return 0
