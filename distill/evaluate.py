"""COCO keypoint evaluation: decoded people -> image coordinates -> results JSON -> COCOeval.

People come from the codec in the frame of the maps they were decoded from; `people_to_results`
maps them back through the inverse of the test-time affine (the official `get_final_preds`) and
writes one COCO result per person: keypoints (x, y, heatmap value), person score, category.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from distill.atomic import write_json_atomic
from distill.data.crowdpose import CROWDPOSE_STAT_NAMES, crowdpose_eval, is_crowdpose
from distill.errors import DataError
from distill.geometry import InferenceResize
from distill.keypoints import oks_sigmas

STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def people_to_results(
    people: np.ndarray,
    scores: np.ndarray,
    image_id: Any,
    resize: InferenceResize,
    map_size: tuple[int, int] | None = None,
    category_id: int = 1,
) -> list[dict[str, Any]]:
    """(N, J, 3+L) people in a (w, h) map frame (default: the input frame) -> COCO result dicts."""
    results = []
    if len(people) == 0:
        return results
    in_image = resize.to_image(np.asarray(people, dtype=np.float32), map_size)
    for person, score in zip(in_image, scores):
        kpts = person[:, :3].astype(np.float64)
        results.append({
            "image_id": image_id,
            "category_id": category_id,
            "keypoints": [float(v) for v in kpts.reshape(-1)],
            "score": float(score),
        })
    return results


def coco_keypoint_eval(
    ann_file: str | Path,
    results: Iterable[dict[str, Any]],
    results_file: str | Path | None = None,
    image_ids: Sequence[Any] | None = None,
    keypoint_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Run COCOeval('keypoints') and return the 10 standard stats by name.

    CrowdPose-format data (14 joints, a crowdIndex per image; `distill.data.crowdpose`) is scored the CrowdPose
    way instead, selected from the annotation file: xtcocotools' 'keypoints_crowd' mode with CrowdPose's OKS
    sigmas; the stats are then CROWDPOSE_STAT_NAMES, and APm/APl/ARm/ARl are -1 (CrowdPose has no area ranges).
    The results are written (atomically) to `results_file` when given. COCOeval's own printing is
    captured; print `format_stats(...)` for a table.
    """

    results = list(results)
    if results_file is not None:
        write_json_atomic(results_file, results)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
    require_scorable(gt.dataset, str(ann_file), image_ids)
    if is_crowdpose(gt.dataset):
        crowd = crowdpose_eval(str(ann_file), results, image_ids)
        return {**crowd, "APm": -1.0, "APl": -1.0, "ARm": -1.0, "ARl": -1.0}
    if not results:  # people to find and none found: AP 0 is the truth
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        names = keypoint_names or _category_keypoints(gt)
        if names is not None and len(names) != 17:
            ev.params.kpt_oks_sigmas = oks_sigmas(names)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}


class NothingToScore(DataError):
    """The evaluated images hold no person with keypoints: any AP would be a made-up number."""


def scorable_people(dataset: dict[str, Any], image_ids: Sequence[Any] | None = None) -> tuple[int, int]:
    """(images, non-crowd people with num_keypoints > 0 among them): what COCOeval('keypoints') can score."""
    ids = {img["id"] for img in dataset.get("images", [])}
    if image_ids is not None:
        ids &= set(image_ids)
    people = sum(1 for a in dataset.get("annotations", []) if a.get("image_id") in ids and not a.get("iscrowd", 0)
                 and a.get("num_keypoints", 0) > 0)
    return len(ids), people


def require_scorable(dataset: dict[str, Any], source: str, image_ids: Sequence[Any] | None = None) -> None:
    images, people = scorable_people(dataset, image_ids)
    if people == 0:
        raise NothingToScore(f"{source}: nothing to score: {images} image(s) selected, 0 non-crowd people with "
                             "keypoints among them (AP would be meaningless); choose a split with annotated people")


def _category_keypoints(gt: Any) -> list[str] | None:
    for cat in gt.dataset.get("categories", []):
        if cat.get("keypoints"):
            return list(cat["keypoints"])
    return None


def format_stats(stats: dict[str, float], title: str | None = None) -> str:
    """The 10 COCO stats (or CrowdPose's 9) as a one-row markdown table."""
    names = CROWDPOSE_STAT_NAMES if "AP_hard" in stats else STAT_NAMES
    head = "| " + " | ".join(f"{n:>5}" for n in names) + " |"
    rule = "|" + "|".join("-" * max(7, len(n) + 2) for n in names) + "|"
    row = "| " + " | ".join(f"{stats[n]:{max(5, len(n))}.3f}" for n in names) + " |"
    return "\n".join(([title] if title else []) + [head, rule, row])


def load_results(path: str | Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text())
