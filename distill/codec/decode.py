"""Decode network outputs (heatmaps + AE tags) into people, fast and with official semantics.

Pipeline per image: max-pool NMS -> top-k candidates per joint -> tag matching (see `matching`) ->
`adjust` (quarter-pixel shift towards the higher neighbour) -> person score (mean joint value) ->
`refine` (fill each person's missing joints at the best position for its mean tag).

What makes it fast compared with the official parser, while giving the same numbers:
* NMS tests only pixels that can pass the detection threshold (dense OpenCV dilation otherwise);
* `refine` scores only the (person, joint) pairs that are actually missing, with in-place float32
  numpy passes over each map (the same arithmetic as the official numpy code, so the same
  rounding), optionally spread over threads;
* every neighbour look-up (`adjust`, quarter offsets) is one vectorised gather.
Where the maps are: numpy arrays and CPU tensors are decoded with numpy. For maps on a GPU, NMS and
top-k run there (`top_k_torch`: max-pool NMS and a stable sort, the same peaks in the same order), only
the (J, k) candidates go to the CPU for matching (munkres, official tie-breaking), and the full maps are
copied once for `adjust`/`refine` only when those are on. `DecodeParams.topk` forces either path, so the
torch path is tested on CPU tensors against the numpy one.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from distill.codec.improve import (candidate_cap, dedup_candidates, grown_limit, person_nms, quarter_offsets,
                                   subpixel_offsets)
from distill.codec.matching import MatchParams, match_by_tag
from distill.keypoints import COCO_KEYPOINT_NAMES, oks_sigmas


@dataclass(frozen=True)
class DecodeParams:
    """Decoder settings; the defaults are the official HigherHRNet test settings."""

    match: MatchParams = field(default_factory=MatchParams)
    nms_kernel: int = 5
    adjust: bool = True
    refine: bool = True
    # Threads for refine's per-joint passes (numpy releases the GIL); 1 = no pool.
    threads: int = 1
    # Which candidates among exactly equal peak values (the 2x2 plateaus that the bilinear x2 projection
    # makes of isolated peaks): 'official' = the order of torch.topk over the dense NMS map, exactly as the
    # official parser; 'index' = by flat index. Both run the fast sparse NMS; 'official' redoes an image
    # densely (torch.topk) only when two passing peaks of a joint are exactly equal, so it costs the same
    # on real network maps and gives the official people on tied ones (e.g. the oracle's).
    ties: Literal["official", "index"] = "official"
    # ties='index' only: where NMS + top-k run: 'auto' = torch for tensors off the CPU (GPU), numpy
    # otherwise; or forced.
    topk: Literal["auto", "numpy", "torch"] = "auto"
    # Beyond the official parser (see `distill.codec.improve`; all off by default, on in DECODE_MODES["improved"]):
    # drop exact plateau copies among each joint's NMS peaks before matching;
    dedup: bool = False
    # top-k and person limit = the most distinct passing peaks of any joint (>= match.max_num_people);
    grow_limits: bool = False
    # sub-pixel step of adjust/refine: 'quarter' (official) or 'dark' (Newton step on the log-heatmap);
    subpixel: Literal["quarter", "dark"] = "quarter"
    # OKS threshold of the greedy person NMS after refine (0 = off); OKS sigmas per joint (empty: by joint
    # name for COCO's 17, else 0.079).
    person_nms: float = 0.0
    oks_sigmas: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.ties not in ("official", "index"):
            raise ValueError(f"DecodeParams.ties must be 'official' or 'index', got {self.ties!r}")
        if self.topk not in ("auto", "numpy", "torch"):
            raise ValueError(f"DecodeParams.topk must be 'auto', 'numpy' or 'torch', got {self.topk!r}")
        if self.subpixel not in ("quarter", "dark"):
            raise ValueError(f"DecodeParams.subpixel must be 'quarter' or 'dark', got {self.subpixel!r}")
        if not 0.0 <= self.person_nms < 1.0:
            raise ValueError(f"DecodeParams.person_nms is an OKS threshold in [0, 1) (0 = off), got {self.person_nms}")
        if self.oks_sigmas and len(self.oks_sigmas) != self.match.num_joints:
            raise ValueError(f"DecodeParams.oks_sigmas has {len(self.oks_sigmas)} values for {self.match.num_joints} joints")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"DecodeParams.nms_kernel must be a positive odd number, got {self.nms_kernel}")


@dataclass(frozen=True)
class DecodeMode:
    """A `--decode MODE` preset: DecodeParams overrides, and where grouping runs. `project=True` (official)
    groups on the maps projected to the input size; False groups on the network's last-output resolution
    (1/2 of the input for HigherHRNet) and maps the people to the image afterwards (UDP's observation)."""

    overrides: dict[str, object] = field(default_factory=dict)
    project: bool = True

    def predictor_kwargs(self) -> dict[str, object]:
        """Keyword arguments of `Predictor` for this mode."""
        return {"project": self.project, **self.overrides}


# 'improved' = the options of `distill.codec.improve` that helped on the oracle and on network maps
# (docs/decoding.md), ties by index (no dense torch.topk fallback), grouping at heatmap resolution.
DECODE_MODES: dict[str, DecodeMode] = {
    "official": DecodeMode(),
    "improved": DecodeMode({"ties": "index", "dedup": True, "subpixel": "dark"}, project=False),
}


def decode_mode(name: str) -> dict[str, object]:
    """`Predictor` keyword arguments of a `--decode` preset."""
    if name not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {name!r}; choose one of {sorted(DECODE_MODES)}")
    return DECODE_MODES[name].predictor_kwargs()


@dataclass
class DecodedImage:
    """People found in one image, in heatmap pixel coordinates.

    people: (N, J, 3 + L) float32 rows (x, y, value, tag_1..tag_L); all-zero rows are missing joints.
    scores: (N,) float32 mean joint value before refine (the official person score).
    """

    people: np.ndarray
    scores: np.ndarray


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def window_max(maps: np.ndarray, kernel: int) -> np.ndarray:
    """Max over a kernel x kernel window per map (stride 1; pixels outside the map ignored)."""
    element = np.ones((kernel, kernel), np.uint8)
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = np.empty_like(flat)
    for i, m in enumerate(flat):
        out[i] = cv2.dilate(m, element, borderType=cv2.BORDER_CONSTANT, borderValue=-np.inf)
    return out.reshape(maps.shape)


def nms(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """Keep only local maxima (value equal to the max in a kernel x kernel window)."""
    return heatmaps * (window_max(heatmaps, kernel) == heatmaps)


# Above this fraction of pixels over the detection threshold, dense NMS is cheaper than sparse.
_SPARSE_LIMIT = 0.02


def top_k(
    heatmaps: np.ndarray, tags: np.ndarray, k: int, nms_kernel: int, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k NMS peaks per joint of one image: (tag_k (J,k,L), loc_k (J,k,2) as x,y, val_k (J,k)).

    heatmaps (J,H,W), tags (T,H,W,L) with T = J or 1. With a `threshold`, only peaks that can pass
    it matter to matching, so when few pixels reach it the NMS test runs on those pixels alone and
    unused slots get value -inf: the peaks that pass, their order and their tags are the same as
    with dense NMS + top-k.
    """
    j, h, w = heatmaps.shape
    flat_tags = tags.reshape(tags.shape[0], h * w, tags.shape[-1])
    if threshold is not None:
        # float32(threshold) <= every float32 value that is > threshold in float64 (the matching test).
        flat = np.flatnonzero(heatmaps.reshape(-1) >= np.float32(threshold))  # 1-D nonzero: cheapest
        if flat.size <= _SPARSE_LIMIT * heatmaps.size:
            joint, rest = np.divmod(flat, h * w)
            y, x = np.divmod(rest, w)
            return _sparse_top_k(heatmaps, flat_tags, joint, y, x, k, nms_kernel)
    peaks = nms(heatmaps, nms_kernel).reshape(j, h * w)
    k_eff = min(k, h * w)
    part = np.argpartition(-peaks, k_eff - 1, axis=1)[:, :k_eff]
    order = np.argsort(-np.take_along_axis(peaks, part, axis=1), axis=1, kind="stable")
    ind = np.take_along_axis(part, order, axis=1)
    val_k = np.take_along_axis(peaks, ind, axis=1)
    channel = np.zeros(j, dtype=np.int64) if tags.shape[0] == 1 else np.arange(j)
    tag_k = flat_tags[channel[:, None], ind]
    loc_k = np.stack((ind % w, ind // w), axis=2)
    return tag_k, loc_k, val_k


def _sparse_top_k(heatmaps: np.ndarray, flat_tags: np.ndarray, joint: np.ndarray, y: np.ndarray,
                  x: np.ndarray, k: int, nms_kernel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    j, h, w = heatmaps.shape
    value = heatmaps[joint, y, x]
    is_peak = np.ones(value.shape, dtype=bool)
    r = (nms_kernel - 1) // 2
    for dy in range(-r, r + 1):
        ny = np.clip(y + dy, 0, h - 1)  # a clamped neighbour is still inside the window
        for dx in range(-r, r + 1):
            if dy or dx:
                is_peak &= heatmaps[joint, ny, np.clip(x + dx, 0, w - 1)] <= value
    joint, y, x, value = joint[is_peak], y[is_peak], x[is_peak], value[is_peak]
    order = np.lexsort((-value, joint))  # by joint, then by value descending (stable)
    joint, y, x, value = joint[order], y[order], x[order], value[order]
    rank = np.arange(joint.size) - np.searchsorted(joint, joint, side="left")
    keep = rank < k
    joint, y, x, value, rank = joint[keep], y[keep], x[keep], value[keep], rank[keep]

    val_k = np.full((j, k), -np.inf, dtype=np.float32)
    loc_k = np.zeros((j, k, 2), dtype=np.int64)
    tag_k = np.zeros((j, k, flat_tags.shape[-1]), dtype=np.float32)
    val_k[joint, rank] = value
    loc_k[joint, rank, 0], loc_k[joint, rank, 1] = x, y
    channel = np.zeros_like(joint) if flat_tags.shape[0] == 1 else joint
    tag_k[joint, rank] = flat_tags[channel, y * w + x]
    return tag_k, loc_k, val_k


def top_k_torch(
    heatmaps: torch.Tensor, tags: torch.Tensor, k: int, nms_kernel: int, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`top_k` for a batch of tensors on their own device: (tag_k (B,J,k,L), loc_k (B,J,k,2), val_k (B,J,k)).

    heatmaps (B, J, H, W), tags (B, T, H, W, L). NMS is a max-pool (padding counts as -inf, like the
    numpy window max); peaks are ordered by value, ties by flat index (a stable sort), exactly as the
    numpy sparse path orders them. With a `threshold`, peaks below it get -inf (they cannot pass the
    matching test); without one, non-peaks are 0 like the numpy dense path. Only the candidates leave
    the device.
    """
    b, j, h, w = heatmaps.shape
    heat = heatmaps.float()
    pad = (nms_kernel - 1) // 2
    maxm = F.max_pool2d(heat, nms_kernel, stride=1, padding=pad)
    if threshold is None:
        peaks = heat * (maxm == heat)
    else:
        keep = (maxm == heat) & (heat >= float(np.float32(threshold)))
        peaks = torch.where(keep, heat, torch.full((), -np.inf, device=heat.device))
    k_eff = min(k, h * w)
    val, ind = torch.sort(peaks.reshape(b, j, h * w), dim=2, descending=True, stable=True)
    return _gather_candidates(tags, val[:, :, :k_eff], ind[:, :, :k_eff], k, w)


def top_k_official(
    heatmaps: torch.Tensor, tags: torch.Tensor, k: int, nms_kernel: int, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The official parser's candidates: NMS `det * (maxpool(det) == det)` over the dense maps, then
    `torch.topk(det, k)` per joint on the maps' device, whose order among equal values is torch's own and
    decides the people on tied maps. Same outputs as `top_k_torch`; `threshold` is unused (matching
    applies it)."""
    b, j, h, w = heatmaps.shape
    heat = heatmaps.float()
    pad = (nms_kernel - 1) // 2
    if heat.device.type == "cpu" and not bool(torch.isnan(heat).any()):
        # the numpy path's NMS: the same window maxima as max_pool2d (exact), several times faster on the CPU
        det = torch.from_numpy(nms(np.ascontiguousarray(heat.numpy()), nms_kernel))
    else:
        det = heat * (F.max_pool2d(heat, nms_kernel, stride=1, padding=pad) == heat)
    k_eff = min(k, h * w)
    val, ind = det.reshape(b, j, h * w).topk(k_eff, dim=2)
    return _gather_candidates(tags, val, ind, k, w)


def _gather_candidates(tags: torch.Tensor, val: torch.Tensor, ind: torch.Tensor, k: int, w: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tag_k, loc_k, val_k) numpy for candidate values/flat indices (B, J, k_eff); pads to k slots."""
    b, j, k_eff = ind.shape
    t = tags if tags.dim() == 5 else tags[..., None]
    flat_tags = t.float().reshape(b, t.shape[1], -1, t.shape[-1])
    channel = torch.zeros(j, dtype=torch.long, device=ind.device) if t.shape[1] == 1 else \
        torch.arange(j, device=ind.device)
    batch = torch.arange(b, device=ind.device)[:, None, None]
    tag_k = flat_tags[batch, channel[None, :, None], ind]
    loc_k = torch.stack((ind % w, torch.div(ind, w, rounding_mode="floor")), dim=3)
    out = [x.cpu().numpy() for x in (tag_k, loc_k, val)]
    if k_eff < k:  # tiny maps: pad like the numpy sparse path (unused slots never pass the threshold)
        out = [np.concatenate([o, np.full((b, j, k - k_eff) + o.shape[3:], fill, o.dtype)], axis=2)
               for o, fill in zip(out, (0, 0, -np.inf))]
    return np.ascontiguousarray(out[0], np.float32), out[1].astype(np.int64), np.ascontiguousarray(out[2], np.float32)


def _order_may_differ(val_k: np.ndarray, threshold: float) -> bool:
    """Whether the fast candidates (ties by flat index) can differ from torch.topk's: only when two peaks
    that pass the threshold have exactly the same value, or when all k slots pass (the k-th may tie with a
    peak left out). Distinct passing values are ordered the same way by both."""
    passing = val_k > threshold
    if passing[:, -1].any():
        return True
    for row, keep in zip(val_k, passing):
        v = row[keep]
        if v.size > 1 and np.unique(v).size < v.size:
            return True
    return False


def _offsets(subpixel: str):
    return subpixel_offsets if subpixel == "dark" else quarter_offsets


def adjust(people: np.ndarray, det: np.ndarray, subpixel: str = "quarter") -> np.ndarray:
    """Shift every detected joint by a quarter pixel towards its higher neighbour (or by the DARK step),
    then to pixel centre."""
    person, joint = np.nonzero(people[:, :, 2] > 0)
    if person.size == 0:
        return people
    xi = people[person, joint, 0].astype(np.int64)
    yi = people[person, joint, 1].astype(np.int64)
    dx, dy = _offsets(subpixel)(det, joint, xi, yi)
    people[person, joint, 0] = people[person, joint, 0] + dx + np.float32(0.5)
    people[person, joint, 1] = people[person, joint, 1] + dy + np.float32(0.5)
    return people


def refine(people: np.ndarray, det: np.ndarray, tags: np.ndarray, threads: int = 1,
           subpixel: str = "quarter") -> np.ndarray:
    """Fill missing joints: for each (person, missing joint) take the first argmax of
    `det - round(||tag - person mean tag||)`; filled joints keep zero tag columns.

    det: (J, H, W); tags: (T, H, W, L) with T = J (per-joint tags) or 1 (one shared map).
    """
    if people.shape[0] == 0:
        return people
    h, w = det.shape[1:]
    miss_person, miss_joint, centres = refine_queries(people, tags)
    if miss_person.size == 0:
        return people
    joints_used = np.unique(miss_joint)
    if threads > 1 and len(joints_used) > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(lambda j: refine_argmax(det, tags, int(j), centres[miss_joint == j]), joints_used))
    else:
        parts = [refine_argmax(det, tags, int(j), centres[miss_joint == j]) for j in joints_used]
    best = np.empty(miss_joint.size, dtype=np.int64)
    for j, part in zip(joints_used, parts):
        best[miss_joint == j] = part

    bx, by = best % w, best // w
    value = det[miss_joint, by, bx]
    dx, dy = _offsets(subpixel)(det, miss_joint, bx, by)
    fill = value > 0
    p, j = miss_person[fill], miss_joint[fill]
    people[p, j, 0] = bx[fill] + 0.5 + dx[fill]
    people[p, j, 1] = by[fill] + 0.5 + dy[fill]
    people[p, j, 2] = value[fill]
    return people


def refine_queries(people: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine's searches: (person, joint) of every missing joint and, per search, the person's mean tag over its
    detected joints, read at their integer positions (the same float32 numpy reduction as the official code)."""
    person, joint = np.nonzero(people[:, :, 2] > 0)
    xi = people[person, joint, 0].astype(np.int32)
    yi = people[person, joint, 1].astype(np.int32)
    detected_tags = tags[np.zeros_like(joint) if tags.shape[0] == 1 else joint, yi, xi]
    mean_tags = [np.mean(detected_tags[person == p], axis=0) for p in range(people.shape[0])]
    miss_person, miss_joint = np.nonzero(people[:, :, 2] == 0)
    centres = (np.stack([mean_tags[p] for p in miss_person]).astype(np.float32) if miss_person.size
               else np.zeros((0, tags.shape[-1]), np.float32))
    return miss_person, miss_joint, centres


# Side of the square pixel blocks refine's branch and bound works on.
_REFINE_BLOCK = 8
# Blocks scored in one vectorised pass (about 4 MB of gathered float32 maps with 2-vector tags).
_REFINE_BLOCKS_PER_PASS = 8192
# A query whose bounds keep more than this share of the blocks scores the whole map instead.
_REFINE_DENSE_SHARE = 0.25


def _block_reduce(a: np.ndarray, side: int, op: np.ufunc) -> np.ndarray:
    """`op`-reduce each side x side block of an (h, w, ...) array with h, w multiples of `side`: (h/side, w/side, ...).

    Strided passes with the trailing axes contiguous: several times faster than reducing reshaped axes."""
    rows = a[0::side].copy()
    for i in range(1, side):
        op(rows, a[i::side], out=rows)
    out = rows[:, 0::side].copy()
    for i in range(1, side):
        op(out, rows[:, i::side], out=out)
    return out


def _as_blocks(a: np.ndarray, side: int) -> np.ndarray:
    """(h, w, ...) -> (blocks, side * side, ...): each row one block's pixels in row-major order."""
    h, w = a.shape[:2]
    return (a.reshape(h // side, side, w // side, side, *a.shape[2:]).swapaxes(1, 2)
            .reshape((h // side) * (w // side), side * side, *a.shape[2:]))


def _row_scores(det_rows: np.ndarray, tag_rows: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """`det - round(sqrt(sum_l (tag_l - c_l)^2))` with one centre per row: det_rows (P, N), tag_rows (P, N, L),
    centres (P, L) -> (P, N).

    Bit-identical to the official numpy float32 expression: squares summed over tag dims in order, numpy's
    correctly rounded sqrt, round half to even (elementwise, so any layout of the pixels gives the same values)."""
    score = np.subtract(tag_rows[..., 0], centres[:, 0][:, None])
    np.square(score, out=score)
    tmp = np.empty_like(score)
    for d in range(1, tag_rows.shape[-1]):
        np.subtract(tag_rows[..., d], centres[:, d][:, None], out=tmp)
        np.square(tmp, out=tmp)
        score += tmp
    np.sqrt(score, out=score)
    np.round(score, out=score)
    return np.subtract(det_rows, score, out=score)


def refine_argmax(det: np.ndarray, tags: np.ndarray, joint: int, centres: np.ndarray) -> np.ndarray:
    """For each centre c: flat index of the first maximum of `det[joint] - round(||tags[joint] - c||)`.

    Exact branch and bound over square pixel blocks. In a block no pixel scores more than the block's largest
    det minus the rounded distance from c to the box its tags span (a distance can only be larger; rounding and
    the float32 subtraction are monotone, and the bound leaves a margin for float error). Each query scores its
    most promising block exactly; that score is reached, so no block whose bound is below it can hold the
    answer or tie with it. The remaining blocks are scored exactly and the maximum with the lowest flat index
    wins, which is numpy's first-occurrence argmax over the whole map. Maps with NaN or infinite values are
    scored densely.
    """
    d_map, t_map = det[joint], tags[0 if tags.shape[0] == 1 else joint]
    d, t = d_map, t_map
    centres = np.asarray(centres, dtype=np.float32)
    if len(centres) == 0:
        return np.empty(0, dtype=np.int64)
    h, w = d.shape
    side = _REFINE_BLOCK
    hp, wp = -(-h // side) * side, -(-w // side) * side
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    if (hp, wp) != (h, w):  # padded pixels: det -inf (never chosen), tags repeated from the edge (no wider box)
        d = np.pad(d, ((0, hp - h), (0, wp - w)), constant_values=-np.inf)
        t = np.pad(t, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
        index = np.pad(index, ((0, hp - h), (0, wp - w)), mode="edge")
    dims = t.shape[-1]
    det_max = _block_reduce(d, side, np.maximum).reshape(-1)
    tag_hi = _block_reduce(t, side, np.maximum).reshape(-1, dims).T
    tag_lo = _block_reduce(t, side, np.minimum).reshape(-1, dims).T
    finite = (np.isfinite(tag_hi).all() and np.isfinite(tag_lo).all() and not np.isnan(det_max).any()
              and not np.isposinf(det_max).any())
    if not finite:
        return _dense_refine_argmax(d_map, t_map, centres)

    # Upper bound of every (query, block): det_max - (a lower bound on the rounded distance).
    gap_sq = None
    for k in range(dims):
        c = centres[:, k][:, None]
        g = np.maximum(tag_lo[k][None] - c, c - tag_hi[k][None])
        np.maximum(g, 0, out=g)
        np.square(g, out=g)
        gap_sq = g if gap_sq is None else np.add(gap_sq, g, out=gap_sq)
    gap = np.sqrt(gap_sq, out=gap_sq)
    # round(x) >= ceil(x - 0.5) for any x; the margin covers float32 error in the distances.
    rounded_min = np.ceil(gap * np.float32(1 - 1e-3) - np.float32(0.5 + 1e-3))
    np.maximum(rounded_min, 0, out=rounded_min)
    upper = np.subtract(det_max[None], rounded_min, out=rounded_min)  # (Q, blocks), float32 like the scores

    block_det, block_tag, block_index = _as_blocks(d, side), _as_blocks(t, side), _as_blocks(index, side)
    first = upper.argmax(axis=1)
    reached = _row_scores(block_det[first], block_tag[first], centres).max(axis=1)
    if not np.isfinite(reached).all():
        return _dense_refine_argmax(d_map, t_map, centres)
    passing = upper >= reached[:, None]  # each query keeps at least its first block
    out = np.empty(len(centres), dtype=np.int64)
    # Where the bounds let most blocks through (noisy tags, flat maps) gathering them costs more than scoring the map.
    dense = passing.mean(axis=1) > _REFINE_DENSE_SHARE
    if dense.any():
        out[dense] = _dense_refine_argmax(d_map, t_map, centres[dense])
    pruned = np.flatnonzero(~dense)
    passing = passing[pruned]
    for lo, hi in _query_chunks(passing.sum(axis=1), _REFINE_BLOCKS_PER_PASS):
        query, block = np.nonzero(passing[lo:hi])  # sorted by query
        scores = _row_scores(block_det[block], block_tag[block], centres[pruned[lo:hi]][query])
        starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])
        best = np.maximum.reduceat(scores.max(axis=1), starts)
        hits = scores == np.repeat(best, np.diff(np.r_[starts, len(query)]))[:, None]
        first_hit = np.where(hits, block_index[block], np.iinfo(np.int64).max).min(axis=1)
        out[pruned[lo:hi]] = np.minimum.reduceat(first_hit, starts)
    return out


def _query_chunks(blocks_per_query: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive query ranges with at most `limit` blocks to score in all (a query over the limit alone), so
    flat maps with hundreds of candidate people do not gather every block for every query at once."""
    chunks, start, total = [], 0, 0
    for q, n in enumerate(blocks_per_query.tolist()):
        if q > start and total + n > limit:
            chunks.append((start, q))
            start, total = q, 0
        total += n
    if len(blocks_per_query) > start:
        chunks.append((start, len(blocks_per_query)))
    return chunks


def _dense_refine_argmax(d: np.ndarray, t: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Every pixel scored for every centre (the literal official argmax), for maps the bounds cannot handle."""
    flat_d, flat_t = d.reshape(1, -1), t.reshape(1, -1, t.shape[-1])
    return np.array([int(_row_scores(flat_d, flat_t, centres[q:q + 1])[0].argmax()) for q in range(len(centres))],
                    dtype=np.int64)


def decode(
    heatmaps: torch.Tensor | np.ndarray,
    tags: torch.Tensor | np.ndarray,
    params: DecodeParams | None = None,
) -> list[DecodedImage]:
    """Group a batch of maps into people.

    heatmaps: (B, J, H, W); tags: (B, T, H, W, L) with T = J or 1 (a shared tag map), or
    (B, T, H, W) for L = 1. Tensors on any device, or numpy arrays.
    """
    params = params or DecodeParams()
    on_device = isinstance(heatmaps, torch.Tensor) and heatmaps.device.type != "cpu"
    use_torch = params.topk == "torch" or (params.topk == "auto" and on_device)
    k, thr = params.match.max_num_people, params.match.detection_threshold
    widen = params.dedup or params.grow_limits
    k_fetch = candidate_cap(tuple(heatmaps.shape[-2:]), k) if widen else k
    if use_torch:
        heat_t = torch.as_tensor(heatmaps)
        tag_t = torch.as_tensor(tags)
        tag_t = tag_t if tag_t.dim() == 5 else tag_t[..., None]
        _check_shapes(heat_t, tag_t, params.match)
        pick = top_k_official if params.ties == "official" else top_k_torch
        candidates = pick(heat_t, tag_t.to(heat_t.device), k_fetch, params.nms_kernel, thr)
        # The full maps leave the device only for the steps that read them.
        det = _as_numpy(heat_t) if (params.adjust or params.refine) else None
        tag = _as_numpy(tag_t) if params.refine else None
        num_images = int(heat_t.shape[0])
    else:
        det = _as_numpy(heatmaps)
        tag = _as_numpy(tags)
        if tag.ndim == 4:
            tag = tag[..., None]
        _check_shapes(det, tag, params.match)
        num_images = det.shape[0]

    results = []
    for b in range(num_images):
        if use_torch:
            tag_k, loc_k, val_k = (c[b] for c in candidates)
        else:
            tag_k, loc_k, val_k = top_k(det[b], tag[b], k_fetch, params.nms_kernel, thr)
            if params.ties == "official" and _order_may_differ(val_k, thr):
                # exactly equal passing peaks: only torch.topk over the dense map knows the official order
                tag_k, loc_k, val_k = (c[0] for c in top_k_official(
                    torch.from_numpy(np.ascontiguousarray(det[b:b + 1])),
                    torch.from_numpy(np.ascontiguousarray(tag[b:b + 1])), k_fetch, params.nms_kernel))
        match = params.match
        if widen:
            if params.dedup:
                tag_k, loc_k, val_k = dedup_candidates(tag_k, loc_k, val_k, (params.nms_kernel - 1) // 2)
            limit = grown_limit(val_k, thr, k) if params.grow_limits else k
            tag_k, loc_k, val_k = tag_k[:, :limit], loc_k[:, :limit], val_k[:, :limit]
            if limit != k:
                match = replace(match, max_num_people=limit)
        people = match_by_tag(tag_k, loc_k, val_k, match)
        if params.adjust:
            people = adjust(people, det[b], params.subpixel)
        scores = np.array([p[:, 2].mean() for p in people], dtype=np.float32)
        if params.refine:
            people = refine(people, det[b], tag[b], params.threads, params.subpixel)
        if params.person_nms > 0 and len(people) > 1:
            keep = person_nms(people, scores, _sigmas(params), params.person_nms)
            people, scores = people[keep], scores[keep]
        results.append(DecodedImage(people=people, scores=scores))
    return results


def _sigmas(params: DecodeParams) -> np.ndarray:
    if params.oks_sigmas:
        return np.asarray(params.oks_sigmas, dtype=np.float64)
    if params.match.num_joints == 17:
        return oks_sigmas(COCO_KEYPOINT_NAMES)
    return np.full(params.match.num_joints, 0.079)


def _check_shapes(det: np.ndarray | torch.Tensor, tag: np.ndarray | torch.Tensor, match: MatchParams) -> None:
    if det.ndim != 4:
        raise ValueError(f"heatmaps must be (B, J, H, W), got {tuple(det.shape)}")
    b, j, h, w = det.shape
    if j != match.num_joints:
        raise ValueError(f"heatmaps have {j} joints but the decoder is set up for {match.num_joints}")
    if tag.ndim != 5 or tag.shape[0] != b or tag.shape[2:4] != (h, w) or tag.shape[1] not in (1, j):
        raise ValueError(
            f"tags must be (B, J or 1, H, W, L) matching heatmaps {tuple(det.shape)}, got {tuple(tag.shape)}"
        )


def people_to_list(decoded: Sequence[DecodedImage]) -> list[list[np.ndarray]]:
    """Convenience: per image, a list of (J, 3 + L) arrays."""
    return [list(d.people) for d in decoded]
