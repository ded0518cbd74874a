"""Decoding steps beyond the official parser, each switchable in `DecodeParams` (preset: `--decode improved`).

Why they exist: the bilinear x2 projection of the test pipeline turns an isolated peak into a 2x2
plateau of exactly equal values; max-pool NMS keeps all four, so every joint enters matching up to four
times. With perfect tags the copies merge (they share a tag value); with real tags each person comes out
several times. The copies also fill the 30 top-k slots, so a crowd of more than ~8 people loses joints.

* `dedup_candidates`: among one joint's NMS peaks (in decreasing order), a peak within the NMS window of
  an earlier kept peak is dropped. Two NMS peaks that close can only be exactly equal (otherwise the
  lower one is not a window maximum), so this removes plateau copies and nothing else.
* `grown_limit`: top-k and the person limit follow the number of distinct passing peaks (at least the
  official 30, at most one person per `CAP_AREA` map pixels) instead of a fixed 30.
* `subpixel_offsets`: a Newton step on the log-heatmap (DARK, Zhang et al. 2020: a Gaussian's log is a
  quadratic) from the 3x3 neighbourhood, instead of the official quarter pixel. It puts a plateau's
  first pixel at the plateau centre and a sampled Gaussian at its true centre; where the neighbourhood is
  not a strict maximum it falls back to the quarter-pixel step.
* `person_nms`: greedy OKS suppression of whole people after refine (refine completes a person split in
  two into two full, overlapping people); the higher-scored person is kept with its own score.
"""
from __future__ import annotations

import numpy as np

# Densest person limit the grown limit allows: one person per CAP_AREA pixels of the decoded map (32 x 32:
# at the input resolution, people smaller than that are not scored by COCO's keypoint evaluation).
CAP_AREA = 1024
# A parabola through three samples with the middle one highest peaks within half a pixel of it; larger
# Newton steps (odd neighbourhoods) fall back to the quarter pixel.
MAX_SUBPIXEL_OFFSET = 0.5
_LOG_FLOOR = 1e-10


def dedup_candidates(tag_k: np.ndarray, loc_k: np.ndarray, val_k: np.ndarray, radius: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop each joint's candidates within Chebyshev `radius` of an earlier kept one; the kept ones move
    forward in their order and freed slots get value -inf (they never pass a threshold).

    tag_k (J, M, L), loc_k (J, M, 2) integer x,y, val_k (J, M) in decreasing order per joint."""
    tag_k, loc_k, val_k = tag_k.copy(), loc_k.copy(), val_k.copy()
    for j in range(val_k.shape[0]):
        valid = np.flatnonzero(np.isfinite(val_k[j]))
        if valid.size < 2:
            continue
        loc = loc_k[j, valid]
        cheb = np.abs(loc[:, None, :] - loc[None, :, :]).max(axis=2)
        near_earlier = np.tril(cheb <= radius, k=-1)
        if not near_earlier.any():
            continue
        keep = np.ones(valid.size, dtype=bool)
        for i in np.flatnonzero(near_earlier.any(axis=1)):
            if (near_earlier[i] & keep).any():
                keep[i] = False
        kept = valid[keep]
        n = kept.size
        tag_k[j, :n], loc_k[j, :n], val_k[j, :n] = tag_k[j, kept], loc_k[j, kept], val_k[j, kept]
        val_k[j, n:] = -np.inf
        loc_k[j, n:] = 0
        tag_k[j, n:] = 0
    return tag_k, loc_k, val_k


def candidate_cap(map_hw: tuple[int, int], base: int) -> int:
    """How many candidates per joint to fetch when limits grow: at least `base`."""
    return max(int(base), (int(map_hw[0]) * int(map_hw[1])) // CAP_AREA)


def grown_limit(val_k: np.ndarray, threshold: float, base: int) -> int:
    """Top-k / person limit for one image: the most candidates any joint has above `threshold`, at least
    `base` (the official 30); `val_k` was fetched with `candidate_cap` slots, which bounds it."""
    passing = int((val_k > threshold).sum(axis=1).max()) if val_k.size else 0
    return max(int(base), passing)


def quarter_offsets(det: np.ndarray, joint: np.ndarray, x: np.ndarray, y: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """±0.25 towards the larger horizontal / vertical neighbour of det[joint, y, x] (ties go negative)."""
    _, h, w = det.shape
    right = det[joint, y, np.minimum(x + 1, w - 1)]
    left = det[joint, y, np.maximum(x - 1, 0)]
    down = det[joint, np.minimum(y + 1, h - 1), x]
    up = det[joint, np.maximum(y - 1, 0), x]
    quarter = np.float32(0.25)
    return np.where(right > left, quarter, -quarter), np.where(down > up, quarter, -quarter)


def subpixel_offsets(det: np.ndarray, joint: np.ndarray, x: np.ndarray, y: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel offsets (dx, dy) of the peaks det[joint, y, x]: the Newton step -H⁻¹g of log(det) from
    central differences over the 3x3 neighbourhood (edges clamped); quarter-pixel fallback where the
    Hessian is not negative definite or the step exceeds `MAX_SUBPIXEL_OFFSET`; at the right/bottom
    border the step stays inside the last pixel."""
    _, h, w = det.shape
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    xm, xp = np.maximum(x - 1, 0), np.minimum(x + 1, w - 1)
    ym, yp = np.maximum(y - 1, 0), np.minimum(y + 1, h - 1)

    def f(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(det[joint, yy, xx].astype(np.float64), _LOG_FLOOR))

    c = f(y, x)
    r, lft, d, u = f(y, xp), f(y, xm), f(yp, x), f(ym, x)
    gx, gy = (r - lft) / 2.0, (d - u) / 2.0
    hxx, hyy = r - 2 * c + lft, d - 2 * c + u
    hxy = (f(yp, xp) - f(ym, xp) - f(yp, xm) + f(ym, xm)) / 4.0
    det_h = hxx * hyy - hxy * hxy
    ok = (hxx < 0) & (hyy < 0) & (det_h > 0)
    safe = np.where(ok, det_h, 1.0)
    dx = np.where(ok, -(hyy * gx - hxy * gy) / safe, 0.0)
    dy = np.where(ok, -(hxx * gy - hxy * gx) / safe, 0.0)
    ok &= (np.abs(dx) <= MAX_SUBPIXEL_OFFSET) & (np.abs(dy) <= MAX_SUBPIXEL_OFFSET)
    qx, qy = quarter_offsets(det, joint, x, y)
    dx, dy = np.where(ok, dx, qx), np.where(ok, dy, qy)
    # stay inside the last pixel at the right/bottom border (positions are read back as int(x + 0.5 + dx))
    dx = np.minimum(dx, (w - 1 - x) + 0.49)
    dy = np.minimum(dy, (h - 1 - y) + 0.49)
    return dx.astype(np.float32), dy.astype(np.float32)


def pairwise_oks(people: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """(N, N) OKS of person j against person i as reference (COCO's formula; area = i's box of detected
    joints), over the joints both have; 0 where they share none."""
    xy, found = people[:, :, :2].astype(np.float64), people[:, :, 2] > 0
    n = len(people)
    area = np.zeros(n)
    for i in range(n):
        pts = xy[i, found[i]]
        if len(pts):
            span = pts.max(axis=0) - pts.min(axis=0)
            area[i] = span[0] * span[1]
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = ((xy[:, None] - xy[None, :]) ** 2).sum(axis=3)  # (N, N, J)
    e = d2 / var[None, None, :] / (area[:, None, None] + np.spacing(1)) / 2.0
    both = found[:, None, :] & found[None, :, :]
    count = both.sum(axis=2)
    return np.where(count > 0, (np.exp(-e) * both).sum(axis=2) / np.maximum(count, 1), 0.0)


def person_nms(people: np.ndarray, scores: np.ndarray, sigmas: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the people kept by greedy OKS suppression (highest score first; ties by index),
    in their original order."""
    n = len(people)
    if n < 2:
        return np.arange(n)
    oks = pairwise_oks(people, sigmas)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    suppressed = np.zeros(n, dtype=bool)
    for i in order:
        if not suppressed[i]:
            suppressed |= (oks[i] > threshold) & (rank > rank[i])
    return np.flatnonzero(~suppressed)
