"""Which training images keep their annotations in a label-scarce run (`data.label_fraction` < 1).

Distillation pays most where labels are scarce: a teacher can supervise images nobody annotated. To measure that
on data that is in fact fully annotated, a run keeps the annotations of a fixed, seeded share of its training
images and treats the others as unlabelled: dropped (`data.unlabelled: drop`, the ground-truth-only baseline) or
supervised by the teacher's maps alone (`data.unlabelled: teacher`), or annotated with the teacher's own
predictions (`data.unlabelled: pseudo`, "data distillation", Radosavovic et al., CVPR 2018): the people a teacher
decodes on those images, from `distill predict`'s COCO results file, become their annotations.

The labelled set is a prefix of one seeded permutation of the images, so for one `label_seed` a smaller fraction's
images are a subset of a larger one's, and every arm and training seed of a study sees the same labelled images.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from distill.errors import DataError

UNLABELLED_MODES = ("drop", "teacher", "pseudo")


def labelled_count(num_images: int, fraction: float) -> int:
    """round(fraction x images), at least 1: a run always keeps some ground truth."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction!r}")
    if num_images < 1:
        raise ValueError(f"cannot choose labelled images among {num_images} images")
    return max(1, min(num_images, int(round(fraction * num_images))))


def choose_labelled(ids: Sequence[Any], fraction: float, seed: int) -> list[Any]:
    """The ids whose annotations are kept, in the order of `ids` (a seeded permutation's first share)."""
    n = len(ids)
    k = labelled_count(n, fraction)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1ABE1])).permutation(n)
    keep = set(order[:k].tolist())
    return [image_id for i, image_id in enumerate(ids) if i in keep]


def read_pseudo_labels(path: str | Path, image_ids: Iterable[Any], num_joints: int, min_score: float,
                       min_joint_score: float) -> dict[Any, list[dict[str, Any]]]:
    """COCO results (`[{"image_id", "keypoints": [x, y, score] * J, "score"}, ...]`) -> annotation dicts per image.

    Every id of `image_ids` gets a list (empty when the teacher found nobody there above `min_score`). A person
    keeps the joints whose score (the heatmap value the decoder reports) is at least `min_joint_score`, as visible
    (v = 2); the others are unlabelled (0, 0, 0), like a COCO annotation's missing joints. People with no such
    joint are left out. Results for images outside `image_ids` are ignored (labelled images keep their own)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.pseudo_labels: {path} does not exist (make it with `distill predict --model "
                        f"teacher:... --input <train images> --out {path}`)")
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"data.pseudo_labels: {path} is not readable JSON ({exc})") from None
    if not isinstance(results, list):
        raise DataError(f"data.pseudo_labels: {path}: expected a list of COCO keypoint results, got a "
                        f"{type(results).__name__}")
    out: dict[Any, list[dict[str, Any]]] = {image_id: [] for image_id in image_ids}
    matched = 0
    for i, r in enumerate(results):
        where = f"data.pseudo_labels: {path}: result {i}"
        if not isinstance(r, dict) or not {"image_id", "keypoints", "score"} <= set(r):
            raise DataError(f"{where}: expected an object with image_id, keypoints and score")
        if r["image_id"] not in out:
            continue
        matched += 1
        kps = np.asarray(r["keypoints"], dtype=np.float64) if isinstance(r["keypoints"], list) else None
        if kps is None or kps.shape != (3 * num_joints,) or not np.isfinite(kps).all():
            raise DataError(f"{where} (image id {r['image_id']}): keypoints must be {3 * num_joints} finite numbers "
                            f"(x, y, score for {num_joints} joints)")
        if not float(r["score"]) >= min_score:
            continue
        kps = kps.reshape(num_joints, 3)
        keep = kps[:, 2] >= min_joint_score
        if not keep.any():
            continue
        ann = np.zeros((num_joints, 3))
        ann[keep, :2], ann[keep, 2] = kps[keep, :2], 2
        out[r["image_id"]].append({"image_id": r["image_id"], "category_id": None, "iscrowd": 0,
                                   "num_keypoints": int(keep.sum()), "keypoints": ann.reshape(-1).tolist(),
                                   "score": float(r["score"])})
    if results and out and not matched:  # e.g. results on other images, or ids from another naming rule
        raise DataError(f"data.pseudo_labels: {path}: none of its {len(results)} results is for one of the "
                        f"{len(out)} unlabelled images (result ids such as {results[0].get('image_id')!r}, image ids "
                        f"such as {next(iter(out))!r}); predict on the unlabelled images' folder")
    return out


__all__ = ["UNLABELLED_MODES", "choose_labelled", "labelled_count", "read_pseudo_labels"]
