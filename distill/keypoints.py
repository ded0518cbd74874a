"""Keypoint definitions (names, skeleton, flip permutation, grouping order).

They come from the dataset's category record, so COCO's 17 joints, CrowdPose's 14 and any other
COCO-format keypoint dataset work. COCO's definition is the default.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from distill.errors import DataError

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# COCO's category skeleton (1-based joint ids, as in the annotation file).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)
# The official HigherHRNet grouping visits joints head -> shoulders -> hips -> limbs.
COCO_GROUPING_ORDER: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)
# COCO OKS sigmas (pycocotools' defaults), for datasets that reuse COCO's joints.
COCO_OKS_SIGMAS: tuple[float, ...] = (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89,
)


def oks_sigmas(keypoint_names: Sequence[str]) -> np.ndarray:
    """COCO's per-joint OKS sigmas, looked up by joint name; 0.79 (shoulder-like) for unknown names."""
    table = dict(zip(COCO_KEYPOINT_NAMES, COCO_OKS_SIGMAS))
    unknown = [n for n in keypoint_names if n.lower() not in table]
    if unknown and len(keypoint_names) != 17:
        warnings.warn(f"no COCO OKS sigma for joints {unknown}; using 0.79 for them", RuntimeWarning, stacklevel=2)
    return np.array([table.get(n.lower(), 0.79) for n in keypoint_names]) / 10.0


def _mirror_name(name: str) -> str:
    """'left_knee' -> 'right_knee', 'l_hip' -> 'r_hip'; names without a side map to themselves."""
    if "left" in name:
        return name.replace("left", "right", 1)
    if "right" in name:
        return name.replace("right", "left", 1)
    for a, b in (("l_", "r_"), ("r_", "l_"), ("l-", "r-"), ("r-", "l-")):
        if name.startswith(a):
            return b + name[len(a):]
    return name


def flip_permutation(names: Sequence[str]) -> list[int]:
    """Index j -> index of its mirror joint, found by swapping left/right in the (lower-cased) name."""
    lowered = [n.lower() for n in names]
    index = {n: i for i, n in enumerate(lowered)}
    return [index.get(_mirror_name(n), i) for i, n in enumerate(lowered)]


@dataclass(frozen=True)
class KeypointSpec:
    """Everything the pipeline needs to know about a dataset's joints."""

    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()
    flip_index: tuple[int, ...] = field(default=())
    grouping_order: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.names)
        if not self.flip_index:
            object.__setattr__(self, "flip_index", tuple(flip_permutation(self.names)))
        if not self.grouping_order:
            order = COCO_GROUPING_ORDER if self.names == COCO_KEYPOINT_NAMES else tuple(range(n))
            object.__setattr__(self, "grouping_order", order)
        if sorted(self.flip_index) != list(range(n)):
            raise ValueError(f"flip_index {self.flip_index} is not a permutation of {n} joints")
        if sorted(self.grouping_order) != list(range(n)):
            raise ValueError(f"grouping_order {self.grouping_order} is not a permutation of {n} joints")

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @classmethod
    def coco(cls) -> "KeypointSpec":
        return cls(COCO_KEYPOINT_NAMES, COCO_SKELETON)

    @classmethod
    def from_category(cls, category: dict[str, Any], source: str = "annotation file") -> "KeypointSpec":
        """Build from a COCO `categories` entry (needs `keypoints`; `skeleton` optional)."""
        names = category.get("keypoints")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise DataError(
                f"{source}: category {category.get('id')!r} ({category.get('name')!r}) has no 'keypoints' list "
                "of joint names; a COCO keypoint category is expected"
            )
        where = f"{source}: category {category.get('id')!r} ({category.get('name')!r})"
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DataError(f"{where}: joint name(s) {repeated} appear more than once in 'keypoints'")
        lowered = {n.lower() for n in names}
        unpaired = [n for n in names if _mirror_name(n.lower()) != n.lower() and _mirror_name(n.lower()) not in lowered]
        if unpaired:  # the flip permutation would leave these joints on themselves: flip augmentation would train wrong labels
            raise DataError(f"{where}: joint(s) {unpaired} name a side but their mirror "
                            f"{[_mirror_name(n.lower()) for n in unpaired]} is not in 'keypoints' (needed for flipping)")
        return cls(tuple(names), _skeleton(category.get("skeleton", []), len(names), where))  # type: ignore[arg-type]


def _skeleton(edges: Any, num_joints: int, where: str) -> tuple[tuple[int, int], ...]:
    """COCO skeleton edges (1-based joint ids), each checked to name two joints of this category."""
    if not isinstance(edges, list):
        raise DataError(f"{where}: 'skeleton' is a {type(edges).__name__}, expected a list of [a, b] joint ids")
    out = []
    for k, edge in enumerate(edges):
        ok = (isinstance(edge, (list, tuple)) and len(edge) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= num_joints for v in edge))
        if not ok:
            raise DataError(f"{where}: skeleton[{k}] = {edge!r}: expected two joint ids in 1..{num_joints} (1-based)")
        out.append((int(edge[0]), int(edge[1])))
    return tuple(out)
