"""Encode half of the Associative Embedding codec: training targets from joint coordinates.

Self-contained plain functions (numpy only), with the official HigherHRNet semantics
(`HeatmapGenerator`, `JointsGenerator`):

- `render_heatmaps(joints, out_res, sigma)`: one Gaussian of size 6σ+3 per visible in-frame joint, centred on
  (int(x), int(y)); overlapping Gaussians of one joint type are merged with max; (K, H, W) float32.
- `joint_indices(joints, out_res, max_people, tag_per_joint)`: the tag-loss index array, (max_people, K, 2)
  int32, row p = person p, visible in-frame joints packed from the left as (j*H*W + y*W + x, 1)
  (or (y*W + x, 1) for a single shared tag map).

"Visible in frame" means v > 0 and 0 <= int(x) < W and 0 <= int(y) < H, where int() truncates toward zero,
so -1 < x < 0 counts as column 0 (as in the official code).

More persons than `max_people` (the official code crashes with an IndexError there): persons without any
indexable joint are dropped first (they contribute nothing to the tag loss); if still more than `max_people`
remain, the first `max_people` are kept (rows keep annotation order) and, by policy, a warning is emitted,
or `TooManyPeopleError` is raised. With at most `max_people` persons row p is exactly person p (official).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Union

import numpy as np

from distill.errors import DataError, DataWarning

OutRes = Union[int, tuple[int, int]]
OverflowPolicy = Literal["warn", "raise", "ignore"]


class TooManyPeopleError(DataError):
    """An image has more persons with indexable joints than the tag-loss index array has rows."""


@dataclass(frozen=True)
class TargetConfig:
    """Target-encoding settings (defaults: the official W32-512 yaml)."""

    sigma: float = 2.0
    max_people: int = 30
    tag_per_joint: bool = True
    on_overflow: OverflowPolicy = "warn"

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if self.max_people < 1:
            raise ValueError(f"max_people must be >= 1, got {self.max_people}")
        if self.on_overflow not in ("warn", "raise", "ignore"):
            raise ValueError(f"on_overflow must be 'warn', 'raise' or 'ignore', got {self.on_overflow!r}")


def _hw(out_res: OutRes) -> tuple[int, int]:
    if isinstance(out_res, (int, np.integer)):
        return int(out_res), int(out_res)
    h, w = out_res
    return int(h), int(w)


def _as_joints(joints: np.ndarray) -> np.ndarray:
    j = np.asarray(joints, dtype=np.float64)
    if j.ndim != 3 or j.shape[2] < 3:
        raise ValueError(f"joints must have shape (P, K, 3), got {j.shape}")
    return j


def visible_in_frame(joints: np.ndarray, out_res: OutRes) -> np.ndarray:
    """(P, K) bool: v > 0 and 0 <= int(x) < W and 0 <= int(y) < H (int truncates toward zero).

    Written on floats (x > -1 <=> int(x) >= 0; x < W <=> int(x) < W), so NaN or huge values are simply out.
    """
    j = _as_joints(joints)
    h, w = _hw(out_res)
    x, y, v = j[..., 0], j[..., 1], j[..., 2]
    return (v > 0) & (x > -1) & (x < w) & (y > -1) & (y < h)


@lru_cache(maxsize=16)
def gaussian_kernel(sigma: float) -> np.ndarray:
    """The official kernel: size 6σ+3, centre 3σ+1, computed in float64 (read-only)."""
    size = 6 * sigma + 3
    x = np.arange(0, size, 1, float)
    y = x[:, np.newaxis]
    x0 = y0 = 3 * sigma + 1
    g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))
    g.setflags(write=False)
    return g


def render_heatmaps(joints: np.ndarray, out_res: OutRes, sigma: float = 2.0) -> np.ndarray:
    """(K, H, W) float32 target heatmaps for joints (P, K, 3) in output-pixel coordinates.

    Each visible in-frame joint stamps the official kernel with its top-left at
    ul = (round(int(x) - 3σ - 1), round(int(y) - 3σ - 1)), clipped to the map and to the official window end
    br = round(int(x) + 3σ + 2); stamps merge with max. Fully vectorised: every stamp pixel of every joint
    goes through one `np.maximum.at`. Max-merging is order independent and float32 rounding is monotonic, so
    the result equals the official float32(max(float64 kernel values)) exactly.
    """
    j = _as_joints(joints)
    h, w = _hw(out_res)
    k = j.shape[1]
    hms = np.zeros((k, h, w), dtype=np.float32)
    valid = visible_in_frame(j, (h, w))
    if not valid.any():
        return hms
    g = gaussian_kernel(float(sigma)).astype(np.float32)
    gh, gw = g.shape
    _, jj = np.nonzero(valid)
    xs = np.trunc(j[..., 0][valid]).astype(np.int64)
    ys = np.trunc(j[..., 1][valid]).astype(np.int64)
    # Official window (numpy round = half to even): [ul, br) in pixels, kernel index = pixel - ul.
    ul_x = np.round(xs - 3 * sigma - 1).astype(np.int64)
    ul_y = np.round(ys - 3 * sigma - 1).astype(np.int64)
    span_x = np.round(xs + 3 * sigma + 2).astype(np.int64) - ul_x
    span_y = np.round(ys + 3 * sigma + 2).astype(np.int64) - ul_y
    ax, ay = np.arange(gw), np.arange(gh)
    px = ul_x[:, None] + ax  # (n, gw)
    py = ul_y[:, None] + ay  # (n, gh)
    okx = (ax < span_x[:, None]) & (px >= 0) & (px < w)
    oky = (ay < span_y[:, None]) & (py >= 0) & (py < h)
    ok = oky[:, :, None] & okx[:, None, :]  # (n, gh, gw)
    flat = (jj[:, None, None] * (h * w) + py[:, :, None] * w + px[:, None, :])[ok]
    np.maximum.at(hms.reshape(-1), flat, np.broadcast_to(g, ok.shape)[ok])
    return hms


def render_heatmaps_reference(joints: np.ndarray, out_res: OutRes, sigma: float = 2.0) -> np.ndarray:
    """Slow, obvious per-pixel renderer (integer σ) for tests and benchmarks.

    Pixel (u, v) of channel j = max over visible in-frame persons of exp(-((u-X)²+(v-Y)²)/(2σ²)) for
    |u-X|, |v-Y| <= 3σ+1, with X = int(x), Y = int(y).
    """
    j = np.asarray(joints, dtype=np.float64)
    h, w = _hw(out_res)
    hms = np.zeros((j.shape[1], h, w), dtype=np.float32)
    r = int(3 * sigma + 1)
    for p in range(j.shape[0]):
        for k in range(j.shape[1]):
            x, y, v = j[p, k, :3]
            if not v > 0:
                continue
            if not (-1 < x < w and -1 < y < h):
                continue
            cx, cy = int(x), int(y)
            for yy in range(cy - r, cy + r + 1):
                for xx in range(cx - r, cx + r + 1):
                    if 0 <= xx < w and 0 <= yy < h:
                        val = np.float32(math.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)))
                        if val > hms[k, yy, xx]:
                            hms[k, yy, xx] = val
    return hms


def _joint_indices(
    joints: np.ndarray, out_res: OutRes, max_people: int, tag_per_joint: bool
) -> tuple[np.ndarray, int]:
    """Index array and the number of persons with indexable joints that did not fit."""
    j = _as_joints(joints)
    h, w = _hw(out_res)
    p, k = j.shape[:2]
    out = np.zeros((max_people, k, 2), dtype=np.int32)
    valid = visible_in_frame(j, (h, w))
    rows = np.arange(p)
    dropped = 0
    if p > max_people:
        rows = rows[valid.any(axis=1)]  # persons with nothing to index carry no tag loss
        dropped = max(0, len(rows) - max_people)
        rows = rows[:max_people]
    if len(rows) == 0:
        return out, dropped
    j, valid = j[rows], valid[rows]
    slot = np.cumsum(valid, axis=1) - 1  # packed from the left
    pi, ji = np.nonzero(valid)
    xs = np.trunc(j[pi, ji, 0]).astype(np.int64)
    ys = np.trunc(j[pi, ji, 1]).astype(np.int64)
    idx = ys * w + xs
    if tag_per_joint:
        idx = idx + ji.astype(np.int64) * (h * w)
    if idx.size and idx.max() > np.iinfo(np.int32).max:
        raise ValueError(f"tag index {idx.max()} does not fit in int32 (map {h}x{w}, {k} joints)")
    out[pi, slot[pi, ji], 0] = idx
    out[pi, slot[pi, ji], 1] = 1
    return out, dropped


def joint_indices(
    joints: np.ndarray,
    out_res: OutRes,
    max_people: int = 30,
    tag_per_joint: bool = True,
    on_overflow: OverflowPolicy = "warn",
) -> np.ndarray:
    """(max_people, K, 2) int32 tag-loss indices (see module doc for the overflow policy)."""
    out, dropped = _joint_indices(joints, out_res, max_people, tag_per_joint)
    if dropped:
        msg = (
            f"{dropped} person(s) with visible joints beyond max_people={max_people} were left out of the "
            "tag-loss targets (their heatmaps are still rendered); raise max_people to keep them"
        )
        if on_overflow == "raise":
            raise TooManyPeopleError(msg)
        if on_overflow == "warn":
            warnings.warn(msg, DataWarning, stacklevel=2)
    return out


def encode_targets(
    joints_per_res: list[np.ndarray],
    output_sizes: list[OutRes],
    config: TargetConfig = TargetConfig(),
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Heatmaps and tag indices at every resolution; also returns the max number of persons dropped.

    Overflow is *not* warned about here (the caller decides, e.g. once per dataset); 'raise' still raises.
    """
    heatmaps, indices, dropped_max = [], [], 0
    for joints, res in zip(joints_per_res, output_sizes):
        heatmaps.append(render_heatmaps(joints, res, config.sigma))
        idx, dropped = _joint_indices(joints, res, config.max_people, config.tag_per_joint)
        if dropped and config.on_overflow == "raise":
            raise TooManyPeopleError(
                f"{dropped} person(s) with visible joints beyond max_people={config.max_people} at output "
                f"size {res}"
            )
        dropped_max = max(dropped_max, dropped)
        indices.append(idx)
    return heatmaps, indices, dropped_max
