"""`distill predict`: COCO results-format keypoints for an image or a folder of images, with optional overlays.

    distill predict --model student:step_s:runs/x/model.pt --input photos/ --out results.json --overlays viz/

The official test path (resize to the input size, flip test, official decoding) through `Predictor`, in
batches (same-size images share a forward pass). `image_id` is the file's stem as an integer when it is
one (COCO file names such as 000000000139.jpg -> 139), else the file name. Unreadable images are skipped
and reported; the run then exits non-zero after writing the results of the others.

With a journal (`ResultsJournal`, what `distill predict` keeps beside `--out` until it finishes), each batch's
per-image results are appended and synced as they come, so a run over a large folder (pseudo-labels on COCO's
123k unlabeled2017 images) that is interrupted resumes with the first image not done, and its final results are
the same as an uninterrupted run's.
"""
from __future__ import annotations

import json
import os
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


class ResultsJournal:
    """Per-image results of an unfinished run, one JSON line each after a header line with the run's settings.

    Lines are appended, flushed and fsynced once per batch; a last line cut off by a kill is dropped on reading (and
    cut from the file). A journal written with other settings (model, weights, input size, decoding) is refused:
    mixing two models' people in one results file would be a silent wrong result."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = Path(path)
        self.settings = settings
        self.done: dict[str, list[dict[str, Any]]] = {}
        if self.path.exists():
            self._read()
        else:
            self.path.write_text(json.dumps({"settings": settings}) + "\n")
        self._file = open(self.path, "a", encoding="utf-8")

    def _read(self) -> None:
        data = self.path.read_bytes()
        good = 0  # bytes of whole, parsed lines
        lines = data.split(b"\n")
        for k, line in enumerate(lines[:-1]):  # the part after the last newline is never a whole line
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                if k == len(lines) - 2:
                    break  # a cut-off last line
                raise DataError(f"{self.path}: line {k + 1} is not JSON; delete the file to start the run again")
            if k == 0:
                if not isinstance(record, dict) or record.get("settings") != self.settings:
                    got = record.get("settings") if isinstance(record, dict) else record
                    raise DataError(f"{self.path}: an unfinished run with other settings ({got}; now {self.settings}); "
                                    "rerun with those, or delete the file to start again")
            elif isinstance(record, dict) and isinstance(record.get("results"), list) and "image" in record:
                self.done[str(record["image"])] = record["results"]
            else:
                raise DataError(f"{self.path}: line {k + 1} is not an image's results; delete the file to start the "
                                "run again")
            good += len(line) + 1
        if good == 0:
            raise DataError(f"{self.path}: no settings line; delete the file to start the run again")
        if good != len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)

    def add(self, records: list[tuple[str, list[dict[str, Any]]]]) -> None:
        for name, results in records:
            self._file.write(json.dumps({"image": name, "results": results}) + "\n")
            self.done[name] = results
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self, remove: bool = False) -> None:
        self._file.close()
        if remove:
            self.path.unlink(missing_ok=True)


def predict_images(predictor: Predictor, images: list[Path], batch_size: int = 8, overlays: Path | None = None,
                   spec: KeypointSpec | None = None, score_thr: float = 0.1, title: str = "",
                   show_progress: bool = True, journal: ResultsJournal | None = None
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """(COCO result dicts in image order, messages of the images that could not be read). Images the `journal`
    holds are not predicted again (nor their overlays drawn again)."""
    ids = [image_id_of(p) for p in images]
    if len(set(map(str, ids))) != len(ids):
        seen: dict[str, Path] = {}
        for p, i in zip(images, ids):
            if str(i) in seen:
                raise DataError(f"{seen[str(i)]} and {p} give the same image_id {i!r}; rename one of them")
            seen[str(i)] = p
    per_image: dict[str, list[dict[str, Any]]] = dict(journal.done) if journal is not None else {}
    todo = [(p, i) for p, i in zip(images, ids) if p.name not in per_image]
    if journal is not None and per_image:
        print(f"resuming {journal.path}: {len(images) - len(todo)} of {len(images)} image(s) done", file=sys.stderr)
    failed: list[str] = []
    bar = progress(range(0, len(todo), batch_size), desc="predict", enabled=show_progress, unit="batch")
    for start in bar:
        chunk, arrays = [], []
        for path, image_id in todo[start:start + batch_size]:
            try:
                arrays.append(read_image(path))
            except ImageReadError as exc:
                print(f"skipped: {exc}", file=sys.stderr)
                failed.append(str(exc))
                continue
            chunk.append((path, image_id))
        fresh = []
        for (path, image_id), image, pred in zip(chunk, arrays, predictor.predict_batch(arrays) if arrays else []):
            fresh.append((path.name, pred.to_results(image_id)))
            if overlays is not None:
                canvas = visualize_image(image, pred, spec or predictor.spec, score_thr=score_thr, title=title)
                ok, data = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise DataError(f"could not encode the overlay PNG for {path}")
                write_bytes_atomic(overlays / f"{path.stem}.png", data.tobytes())
        per_image.update(fresh)
        if journal is not None:
            journal.add(fresh)
    results = [r for p in images if p.name in per_image for r in per_image[p.name]]
    return results, failed
