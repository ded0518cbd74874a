"""CrowdPose-format keypoint data: 14 joints, a per-image `crowdIndex`, and CrowdPose's evaluation.

CrowdPose (Li et al., CVPR 2019) is a COCO-format dataset with its own joints (12 limb joints, head top
and neck) and a crowd index per image; its benchmark reports AP/AR at 20 detections and AP on easy
(crowdIndex < 0.1), medium and hard (> 0.8) images. The evaluation is xtcocotools' `keypoints_crowd` mode (a
maintained fork of pycocotools that CrowdPose's authors and mmpose use), not rewritten here.

`coco_to_crowdpose` turns a COCO-17 annotation document (e.g. `distill synth`'s) into a CrowdPose one: the
12 limb joints are COCO's, head = the nose, neck = the shoulders' midpoint (labelled when both are), and
crowdIndex as the paper defines it: the mean over the image's people of (other people's joints inside
the person's box) / (the person's own joints).
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

CROWDPOSE_KEYPOINT_NAMES: tuple[str, ...] = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
)
# 1-based, as CrowdPose's annotation files.
CROWDPOSE_SKELETON: tuple[tuple[int, int], ...] = (
    (13, 14), (14, 1), (14, 2), (1, 3), (3, 5), (2, 4), (4, 6), (1, 7), (2, 8), (7, 8), (7, 9), (9, 11),
    (8, 10), (10, 12),
)
# CrowdPose's OKS sigmas (its evaluation code), in the joint order above.
CROWDPOSE_SIGMAS: tuple[float, ...] = (
    0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079,
)
CROWDPOSE_STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")
_COCO_LIMBS = list(range(5, 17))  # COCO left_shoulder .. right_ankle, in CrowdPose's order
_COCO_NOSE = 0


def is_crowdpose(dataset: dict[str, Any]) -> bool:
    """A CrowdPose-format document: 14-joint person category and a crowdIndex on its images."""
    cats = dataset.get("categories") or []
    images = dataset.get("images") or []
    return bool(cats) and len(cats[0].get("keypoints") or []) == len(CROWDPOSE_KEYPOINT_NAMES) and bool(images) \
        and all("crowdIndex" in im for im in images)


def _crowdpose_keypoints(kpts17: np.ndarray) -> np.ndarray:
    out = np.zeros((14, 3))
    out[:12] = kpts17[_COCO_LIMBS]
    out[12] = kpts17[_COCO_NOSE]
    ls, rs = kpts17[5], kpts17[6]
    if ls[2] > 0 and rs[2] > 0:
        out[13, :2] = (ls[:2] + rs[:2]) / 2
        out[13, 2] = min(ls[2], rs[2])
    return out


def crowd_index(people: Sequence[np.ndarray]) -> float:
    """The mean over people with labelled joints of (other people's labelled joints inside the person's
    box) / (its own labelled joints); 0 for images with fewer than two people."""
    boxes, joints = [], []
    for k in people:
        vis = k[k[:, 2] > 0, :2]
        if len(vis):
            boxes.append((vis.min(axis=0), vis.max(axis=0)))
            joints.append(vis)
    if len(joints) < 2:
        return 0.0
    ratios = []
    for i, (lo, hi) in enumerate(boxes):
        inside = sum(int(((j >= lo) & (j <= hi)).all(axis=1).sum()) for n, j in enumerate(joints) if n != i)
        ratios.append(inside / len(joints[i]))
    return float(np.mean(ratios))


def coco_to_crowdpose(doc: dict[str, Any]) -> dict[str, Any]:
    """A CrowdPose-format copy of a COCO-17 keypoint document (images and ids unchanged)."""
    cat = dict(doc["categories"][0])
    if len(cat.get("keypoints") or []) != 17:
        raise ValueError("coco_to_crowdpose needs a COCO 17-joint category")
    cat.update(keypoints=list(CROWDPOSE_KEYPOINT_NAMES), skeleton=[list(e) for e in CROWDPOSE_SKELETON])
    annotations, per_image = [], {}
    for ann in doc["annotations"]:
        new = dict(ann)
        if "keypoints" in ann:
            k = _crowdpose_keypoints(np.asarray(ann["keypoints"], float).reshape(17, 3))
            new["keypoints"] = [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(k.reshape(-1))]
            new["num_keypoints"] = int((k[:, 2] > 0).sum())
            if not ann.get("iscrowd", 0):
                per_image.setdefault(ann["image_id"], []).append(k)
        annotations.append(new)
    images = [{**im, "crowdIndex": round(crowd_index(per_image.get(im["id"], [])), 4)} for im in doc["images"]]
    return {**doc, "images": images, "annotations": annotations, "categories": [cat]}


def crowdpose_eval(ann_file: str, results: list[dict[str, Any]], image_ids: Sequence[Any] | None = None
                   ) -> dict[str, float]:
    """CrowdPose's stats (AP, AP50, AP75, AR, AR50, AR75, AP easy/medium/hard) through xtcocotools."""
    try:
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
    except (ImportError, ValueError) as exc:  # ValueError: a wheel built against another numpy ABI
        raise ImportError("CrowdPose evaluation needs xtcocotools (`make install` builds it against this numpy; "
                          f"by hand: pip install cython && pip install --no-binary xtcocotools --no-build-isolation "
                          f"xtcocotools): {exc}") from exc
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        if not results:
            return {name: 0.0 for name in CROWDPOSE_STAT_NAMES}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints_crowd", np.array(CROWDPOSE_SIGMAS), use_area=False)
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(CROWDPOSE_STAT_NAMES, ev.stats)}
