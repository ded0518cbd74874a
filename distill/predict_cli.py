"""`distill predict`: COCO results-format keypoints for an image or a folder of images, with optional overlays.

    distill predict --model student:step_s:runs/x/model.pt --input photos/ --out results.json --overlays viz/

The official test path (resize to the input size, flip test, official decoding) through `Predictor`, in
batches (same-size images share a forward pass). `image_id` is the file's stem as an integer when it is
one (COCO file names such as 000000000139.jpg -> 139), else the file name. Unreadable images are skipped
and reported; the run then exits non-zero after writing the results of the others.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2

from distill.atomic import write_bytes_atomic, write_json_atomic
from distill.codec.decode import DECODE_MODES, decode_mode
from distill.config import input_size_arg
from distill.data.images import ImageReadError
from distill.errors import DataError, ensure_writable_dir, ensure_writable_file
from distill.keypoints import KeypointSpec
from distill.models import contract_of, load_model, parse_model_spec
from distill.predict import Predictor, read_image
from distill.progress import progress
from distill.visualize import list_images, spec_from_annotations, visualize_image

def image_id_of(path: Path) -> Any:
    return int(path.stem) if path.stem.isdigit() else path.name


def predict_images(predictor: Predictor, images: list[Path], batch_size: int = 8, overlays: Path | None = None,
                   spec: KeypointSpec | None = None, score_thr: float = 0.1, title: str = "",
                   show_progress: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """(COCO result dicts, messages of the images that could not be read)."""
    ids = [image_id_of(p) for p in images]
    if len(set(map(str, ids))) != len(ids):
        seen: dict[str, Path] = {}
        for p, i in zip(images, ids):
            if str(i) in seen:
                raise DataError(f"{seen[str(i)]} and {p} give the same image_id {i!r}; rename one of them")
            seen[str(i)] = p
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    bar = progress(range(0, len(images), batch_size), desc="predict", enabled=show_progress, unit="batch")
    for start in bar:
        chunk, arrays = [], []
        for path, image_id in zip(images[start:start + batch_size], ids[start:start + batch_size]):
            try:
                arrays.append(read_image(path))
            except ImageReadError as exc:
                print(f"skipped: {exc}", file=sys.stderr)
                failed.append(str(exc))
                continue
            chunk.append((path, image_id))
        for (path, image_id), image, pred in zip(chunk, arrays, predictor.predict_batch(arrays)):
            results += pred.to_results(image_id)
            if overlays is not None:
                canvas = visualize_image(image, pred, spec or predictor.spec, score_thr=score_thr, title=title)
                ok, data = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise DataError(f"could not encode the overlay PNG for {path}")
                write_bytes_atomic(overlays / f"{path.stem}.png", data.tobytes())
    return results, failed


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
    results, failed = predict_images(predictor, images, args.batch_size, args.overlays, kp, args.score_thr,
                                     spec.name, show_progress=not args.no_progress and sys.stderr.isatty())
    write_json_atomic(args.out, results)
    people = len(results)
    print(f"{len(images) - len(failed)} image(s) -> {args.out} ({people} people)"
          + (f", overlays in {args.overlays}" if args.overlays else ""))
    if failed:
        raise ImageReadError(f"{len(failed)} of {len(images)} image(s) could not be read and were skipped "
                             f"(first: {failed[0]}); the results of the others are in {args.out}")
    return 0
