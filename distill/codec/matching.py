"""Tag matching: turn per-joint candidate detections into people (the AE grouping step).

The semantics follow the official HigherHRNet parser exactly, because on real data many assignment
problems have ties (tag distances are rounded to integers) and the solver's tie-breaking decides
who gets a joint:

* joints are visited in the dataset's grouping order (head, shoulders, hips, limbs for COCO);
* the first joint type with candidates above the detection threshold seeds one person each;
* each later joint type is matched to the first `max_num_people` existing people by a Hungarian
  assignment on `round(||tag - mean person tag||) * 100 - detection value`; a pair is accepted
  when its unrounded distance is below the tag threshold, otherwise the candidate starts a person;
* people are keyed by the first tag value of the joint that created them (so two seeds with the
  same first tag value merge, exactly as the official dict does), and kept in creation order.

The default solver is `munkres` 1.1.4, the one the official code imports; `scipy` is offered as a
faster option that is **not** tie-identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from munkres import Munkres
from scipy.optimize import linear_sum_assignment

Solver = Callable[[np.ndarray], list[tuple[int, int]]]


def munkres_solver(cost: np.ndarray) -> list[tuple[int, int]]:
    """Hungarian assignment with munkres 1.1.x tie-breaking (identical to the official parser).

    The matrix is handed over as Python floats: the same float64 arithmetic as numpy scalars,
    but several times faster inside munkres' pure-Python loops.
    """

    return [(int(r), int(c)) for r, c in Munkres().compute(cost.tolist())]


def scipy_solver(cost: np.ndarray) -> list[tuple[int, int]]:
    """Faster Hungarian assignment. Optimal, but breaks ties differently from munkres 1.1.x."""

    rows, cols = linear_sum_assignment(cost)
    return list(zip(rows.tolist(), cols.tolist()))


SOLVERS: dict[str, Solver] = {"munkres": munkres_solver, "scipy": scipy_solver}


@dataclass(frozen=True)
class MatchParams:
    """Parser settings (official test defaults)."""

    num_joints: int = 17
    joint_order: Sequence[int] = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    max_num_people: int = 30
    use_detection_val: bool = True
    ignore_too_much: bool = False
    solver: str = "munkres"
    # People are keyed by their seed joint's first `key_dims` tag values (the official parser: 1, so two seeds
    # with the same first value merge). D-dim tags (D > 1) need key_dims = D: their first values may coincide.
    key_dims: int = 1

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; choose one of {sorted(SOLVERS)}")
        if self.key_dims < 1:
            raise ValueError(f"key_dims must be >= 1, got {self.key_dims}")
        if sorted(self.joint_order) != list(range(self.num_joints)):
            raise ValueError(f"joint_order {list(self.joint_order)} is not a permutation of {self.num_joints} joints")


def match_by_tag(
    tag_k: np.ndarray, loc_k: np.ndarray, val_k: np.ndarray, params: MatchParams
) -> np.ndarray:
    """Group the top-k candidates of one image into people.

    tag_k: (J, M, L) float32 tags of the candidates; loc_k: (J, M, 2) integer (x, y);
    val_k: (J, M) float32 detection values, sorted decreasingly per joint.
    Returns (N, J, 3 + L) float32 rows (x, y, value, tag_1..tag_L), zeros for missing joints.
    """
    solve = SOLVERS[params.solver]
    num_joints, _, tag_dim = tag_k.shape
    empty_person = np.zeros((num_joints, 3 + tag_dim))
    people: dict[object, np.ndarray] = {}
    person_tags: dict[object, list[np.ndarray]] = {}
    kd = params.key_dims

    def key_of(tag: np.ndarray) -> object:
        return tag[0] if kd == 1 else tuple(tag[:kd].tolist())

    for step, joint in enumerate(params.joint_order):
        cand = np.concatenate((loc_k[joint], val_k[joint, :, None], tag_k[joint]), axis=1)
        keep = cand[:, 2] > params.detection_threshold
        tags = tag_k[joint][keep]
        cand = cand[keep]
        if cand.shape[0] == 0:
            continue

        if step == 0 or not people:
            for tag, row in zip(tags, cand):
                key = key_of(tag)
                people.setdefault(key, empty_person.copy())[joint] = row
                person_tags[key] = [tag]
            continue

        keys = list(people.keys())[: params.max_num_people]
        if params.ignore_too_much and len(keys) == params.max_num_people:
            continue
        mean_tags = np.array([np.mean(person_tags[k], axis=0) for k in keys])
        dist = np.linalg.norm(cand[:, None, 3:] - mean_tags[None, :, :], ord=2, axis=2)
        cost = np.round(dist) * 100 - cand[:, 2:3] if params.use_detection_val else dist.copy()
        num_new, num_people = dist.shape
        if num_new > num_people:
            cost = np.concatenate((cost, np.full((num_new, num_new - num_people), 1e10)), axis=1)

        for row, col in solve(cost):
            if row < num_new and col < num_people and dist[row, col] < params.tag_threshold:
                key = keys[col]
                people[key][joint] = cand[row]
                person_tags[key].append(tags[row])
            else:
                key = key_of(tags[row])
                people.setdefault(key, empty_person.copy())[joint] = cand[row]
                person_tags[key] = [tags[row]]

    if not people:
        return np.zeros((0, num_joints, 3 + tag_dim), dtype=np.float32)
    return np.array(list(people.values())).astype(np.float32)
