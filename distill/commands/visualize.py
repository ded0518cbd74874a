"""`distill visualize`: draw predicted skeletons (and heatmap / tag panels) for images.

The arguments and one call into `distill.visualize`, where the work is.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from distill.atomic import write_bytes_atomic
from distill.config import input_size_arg
from distill.data.images import ImageReadError
from distill.errors import DataError, ensure_writable_dir
from distill.keypoints import KeypointSpec
from distill.models import contract_of, load_model, parse_model_spec
from distill.predict import Predictor, read_image
from distill.progress import progress
from distill.visualize import list_images, spec_from_annotations, visualize_image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="KIND:NAME[:CKPT]",
                        help="student:NAME[:CKPT] or teacher:CFG[:CKPT] (omitted CKPT = random weights)")
    parser.add_argument("--input", required=True, type=Path, help="an image or a folder of images")
    parser.add_argument("--out", required=True, type=Path, help="folder for <stem>.png outputs")
    parser.add_argument("--input-size", type=input_size_arg, default=512, help="test input size (short side; default 512)")
    parser.add_argument("--panels", action="store_true", help="overlay | heatmaps | tags side by side")
    parser.add_argument("--score-thr", type=float, default=0.1, help="draw people with score >= this (default 0.1)")
    parser.add_argument("--min-joint-value", type=float, default=0.0,
                        help="draw joints whose heatmap value is > this (default 0: all found joints)")
    parser.add_argument("--keypoints", type=Path, default=None, metavar="ANN.json",
                        help="take joint names / skeleton from this COCO annotation file (default COCO's 17)")


def run(args: argparse.Namespace) -> int:
    spec = parse_model_spec(args.model)
    images = list_images(args.input)
    model = load_model(spec, warn_random=False)
    if spec.weights is None:
        print(f"warning: {spec}: no checkpoint given, the model has RANDOM weights", file=sys.stderr)
    kp = spec_from_annotations(args.keypoints) if args.keypoints else KeypointSpec.coco()
    joints = contract_of(model).num_joints
    if joints != kp.num_joints:
        raise DataError(f"{spec} predicts {joints} joints but the keypoint definition has {kp.num_joints}; "
                        "pass --keypoints with the dataset's annotation file")
    predictor = Predictor(model, kp, input_size=args.input_size, flip=True)
    ensure_writable_dir(args.out, "--out")
    used: set[str] = set()
    failed: list[str] = []
    for path in progress(images, desc="visualize", unit="img"):
        try:
            image = read_image(path)
        except ImageReadError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            failed.append(str(exc))
            continue
        pred = predictor.predict(image, return_maps=args.panels)
        canvas = visualize_image(image, pred, kp, score_thr=args.score_thr, min_joint_value=args.min_joint_value,
                                 panels=args.panels, title=spec.name)
        name = path.stem if path.stem not in used else f"{path.stem}_{path.suffix.lstrip('.')}"
        used.add(name)
        ok, data = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        if not ok:
            raise DataError(f"could not encode the PNG for {path}")
        target = args.out / f"{name}.png"
        write_bytes_atomic(target, data.tobytes())
        shown = int((pred.scores >= args.score_thr).sum())
        print(f"{path} -> {target} ({shown} people with score >= {args.score_thr:g}, {len(pred.people)} decoded)")
    if failed:  # the readable images are drawn; the run still must not look like a success
        raise ImageReadError(f"{len(failed)} of {len(images)} image(s) could not be read and were skipped "
                             f"(first: {failed[0]})")
    return 0
