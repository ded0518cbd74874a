"""`distill predict`: COCO results-format keypoints for an image or a folder of images, with optional overlays.

    distill predict --model student:step_s:runs/x/model.pt --input photos/ --out results.json --overlays viz/

The official test path (resize to the input size, flip test, official decoding) through `Predictor`, in
batches (same-size images share a forward pass). `image_id` is the file's stem as an integer when it is
one (COCO file names such as 000000000139.jpg -> 139), else the file name. Unreadable images are skipped
and reported; the run then exits non-zero after writing the results of the others.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cv2

from distill.atomic import write_bytes_atomic
from distill.data.images import ImageReadError, image_id_of
from distill.errors import DataError
from distill.keypoints import KeypointSpec
from distill.predict import Predictor, read_image
from distill.progress import progress
from distill.visualize import visualize_image


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
