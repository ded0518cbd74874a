"""Embedded synthetic COCO-format keypoint dataset: multi-person stick-figure scenes with COCO's 17 joints.

Why: demos and tests need data that is always there (no download), small, deterministic, in the exact COCO
layout the real pipeline reads, and learnable by a small CNN in minutes on CPU, while still exercising what
makes bottom-up pose estimation hard: several people per image, scale from small to large, overlap and
occlusion (v=1), joints outside the image (v=0), crowd regions (iscrowd=1, RLE) and persons without keypoints.

Layout written under `out_dir`:
    annotations/person_keypoints_{train2017,val2017}.json
    train2017/000000000001.jpg ...          (image id = file number)
    val2017/000001000001.jpg ...            (val ids start at 1_000_001 so the splits never share ids)
    synthetic_manifest.json                 (parameters + summary, written last: its presence = complete)

Coordinates follow COCO: the image spans [0, W] x [0, H] and pixel (i, j) has its centre at (i + .5, j + .5),
which is also how `pycocotools` rasterises polygons, so keypoints, polygons, areas and boxes agree.

Left/right: every figure has its two sides in two clearly different colours (one warm, one cool) so limbs of
one person are easy to tell apart, but WHICH side is warm is drawn 50/50 per person. The side itself is
carried by 3-D cues, like real photographs: facing direction (face drawn on the head for people facing the
camera, hair only for people seen from the back, nose/near ear and feet for profiles) and depth order
(profile: near limbs drawn over the torso, far limbs behind it). A fixed "left = warm" colour convention would
make the data not mirror-symmetric: after a horizontal flip the warm limbs would be labelled right, so flip
augmentation would contradict the colours and flip testing would average a left map with a right one. With
this design the distribution is exactly mirror-symmetric (mirror(image) with left/right swapped is as likely
as the image), which is what flip augmentation and the flip test assume.

Determinism: every image draws from its own `numpy.random.Generator(PCG64)` seeded by (seed, split, index),
so any subset regenerates identically, and the JPEG quality is fixed.
"""
from __future__ import annotations

import colorsys
import json
import math
import os
import re
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from distill.atomic import write_bytes_atomic, write_json_atomic
from distill.data.crowdpose import coco_to_crowdpose
from distill.errors import DataError
from distill.evaluate import coco_keypoint_eval
from distill.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON

GENERATOR_VERSION = 1
SPLITS: tuple[str, ...] = ("train2017", "val2017")
MANIFEST_NAME = "synthetic_manifest.json"
JPEG_QUALITY = 90
DEFAULT_NUM_TRAIN = 400
DEFAULT_NUM_VAL = 100
DEFAULT_IMAGE_SIZE = 256
MIN_IMAGE_SIZE = 64

_SPLIT_CODE = {"train2017": 0, "val2017": 1}
_IMAGE_ID_BASE = {"train2017": 0, "val2017": 1_000_000}
_ANNS_PER_IMAGE = 100  # annotation id = image_id * 100 + k: ids depend on the image only, never on the others
_NUM_JOINTS = len(COCO_KEYPOINT_NAMES)
# COCO area ranges (pycocotools' `areaRng`).
SMALL_MAX_AREA = 32.0 ** 2
MEDIUM_MAX_AREA = 96.0 ** 2

# Part indices of a figure; a joint is visible (v=2) when the pixel under it shows one of its own parts.
TORSO, HEAD = 0, 1
L_UARM, L_FARM, L_HAND, R_UARM, R_FARM, R_HAND = 2, 3, 4, 5, 6, 7
L_THIGH, L_SHIN, L_FOOT, R_THIGH, R_SHIN, R_FOOT = 8, 9, 10, 11, 12, 13
_PARTS_PER_SLOT = 16
_JOINT_PARTS: tuple[frozenset[int], ...] = (
    frozenset({HEAD}), frozenset({HEAD}), frozenset({HEAD}), frozenset({HEAD}), frozenset({HEAD}),
    frozenset({TORSO, L_UARM}), frozenset({TORSO, R_UARM}),
    frozenset({L_UARM, L_FARM}), frozenset({R_UARM, R_FARM}),
    frozenset({L_FARM, L_HAND}), frozenset({R_FARM, R_HAND}),
    frozenset({TORSO, L_THIGH}), frozenset({TORSO, R_THIGH}),
    frozenset({L_THIGH, L_SHIN}), frozenset({R_THIGH, R_SHIN}),
    frozenset({L_SHIN, L_FOOT}), frozenset({R_SHIN, R_FOOT}),
)
_OCCLUDER_CODE = -1
_SHIFT = 4  # cv2 sub-pixel bits: coordinates are drawn at 1/16 px
_SCALE = float(1 << _SHIFT)


# --------------------------------------------------------------------------------------------- geometry ---

@dataclass
class _Part:
    """One drawable piece of a figure (or an occluder), in COCO pixel coordinates."""

    owner: int                       # part index (ownership code) within its figure
    z: float                         # drawing order within the figure (larger = nearer = drawn later)
    shape: str                       # "capsule" | "circle" | "poly"
    pts: np.ndarray                  # capsule: (2, 2); circle: (1, 2); poly: (N, 2)
    radii: tuple[float, float] = (0.0, 0.0)
    color: tuple[float, float, float] = (0.0, 0.0, 0.0)   # BGR
    outline: float = 0.0             # outline width in px (0 = none)
    outline_color: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class _Figure:
    joints: np.ndarray                                         # (17, 2) COCO pixel coordinates
    self_hidden: np.ndarray                                    # (17,) bool: face points on the far side of the head
    parts: list[_Part] = field(default_factory=list)


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _dir(angle_deg: float, out: float) -> np.ndarray:
    """Unit vector `angle_deg` away from straight down (image y grows downwards), rotated towards x-sign `out`."""
    a = math.radians(angle_deg)
    return np.array([out * math.sin(a), math.cos(a)])


def _hsv_bgr(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (b * 255.0, g * 255.0, r * 255.0)


def _scaled(c: tuple[float, float, float], k: float) -> tuple[float, float, float]:
    return (min(c[0] * k, 255.0), min(c[1] * k, 255.0), min(c[2] * k, 255.0))


# ----------------------------------------------------------------------------------------------- poses ---

_ARM_MODES_FRONT: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    # (upper-arm angle from "down" towards the outside, forearm angle relative to the upper arm)
    "down": ((5.0, 30.0), (-15.0, 25.0)),
    "out": ((60.0, 110.0), (-30.0, 50.0)),
    "up": ((125.0, 172.0), (-25.0, 25.0)),
    "bent": ((15.0, 55.0), (-140.0, -70.0)),
    "wave": ((55.0, 100.0), (60.0, 115.0)),
}
_ARM_MODES_PROFILE: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    # (upper-arm angle towards the facing direction, elbow flexion towards the facing direction)
    "down": ((-30.0, 30.0), (0.0, 40.0)),
    "forward": ((45.0, 100.0), (-10.0, 40.0)),
    "up": ((120.0, 170.0), (-10.0, 30.0)),
    "bent": ((-20.0, 40.0), (70.0, 130.0)),
}


def _pick(rng: np.random.Generator, options: Sequence[str], p: Sequence[float]) -> str:
    return str(options[int(rng.choice(len(options), p=np.asarray(p) / np.sum(p)))])


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _sample_figure(rng: np.random.Generator, height_px: float, center: np.ndarray,
                   detail: bool = True) -> _Figure:
    """A random articulated figure about `height_px` tall (standing), centred near `center`.

    The pose is built in a body frame (units of the figure height, origin at the pelvis, image axes), with a
    yaw angle that decides which side faces the camera, then leant, scaled and placed.
    """
    # Facing: mostly towards the camera, some from the back, some profiles (both directions equally).
    view = _pick(rng, ("front", "back", "profile"), (0.6, 0.15, 0.25))
    if view == "front":
        yaw = math.radians(rng.uniform(-30.0, 30.0))
    elif view == "back":
        yaw = math.radians(180.0 + rng.uniform(-30.0, 30.0))
    else:
        yaw = math.radians(rng.choice([-1.0, 1.0]) * rng.uniform(65.0, 115.0))
    cy, sy = math.cos(yaw), math.sin(yaw)
    fwd = -1.0 if sy > 0 else 1.0  # image x-direction the figure faces in a profile

    def lat(l: float, f: float = 0.0) -> float:
        """Image x of a body point `l` to the figure's left and `f` forwards (yaw 0 faces the camera)."""
        return l * cy - f * sy

    def depth(l: float, f: float = 0.0) -> float:
        """Towards the camera: decides drawing order and which face points are hidden."""
        return l * sy + f * cy

    k = float(rng.uniform(0.93, 1.07))  # limb length jitter
    torso_len = float(rng.uniform(0.27, 0.31))
    shoulder_w = float(rng.uniform(0.10, 0.13))
    hip_w = float(rng.uniform(0.07, 0.09))
    head_r = float(rng.uniform(0.068, 0.08))
    uarm, farm = 0.17 * k, 0.15 * k
    thigh, shin = 0.245 * k, 0.235 * k

    j = np.zeros((_NUM_JOINTS, 2))
    hidden = np.zeros(_NUM_JOINTS, dtype=bool)
    neck = np.array([lat(0.0, 0.01), -torso_len])
    for idx, side in ((5, 1.0), (6, -1.0)):
        j[idx] = (lat(side * shoulder_w), -torso_len + 0.02)
    for idx, side in ((11, 1.0), (12, -1.0)):
        j[idx] = (lat(side * hip_w), 0.0)

    # Head and face points (in units of the head radius: left, forward, up).
    head_c = neck + np.array([lat(0.0, 0.03), -(0.035 + head_r)])
    tilt = _rot(math.radians(rng.normal(0.0, 8.0)))
    face = {0: (0.0, 1.0, -0.1), 1: (0.38, 0.85, 0.2), 2: (-0.38, 0.85, 0.2), 3: (0.95, -0.05, 0.05),
            4: (-0.95, -0.05, 0.05)}
    for idx, (l, f, u) in face.items():
        j[idx] = head_c + tilt @ np.array([lat(l, f), -u]) * head_r
        hidden[idx] = depth(l, f) < -0.2

    # Arms.
    arm_ang: dict[int, tuple[float, float, float]] = {}
    if view == "profile":
        modes = list(_ARM_MODES_PROFILE)
        mode = _pick(rng, modes, (0.35, 0.25, 0.15, 0.25))
        for side in (1.0, -1.0):
            m = mode if rng.random() < 0.6 else _pick(rng, modes, (0.35, 0.25, 0.15, 0.25))
            a1, b = (_uniform(rng, r) for r in _ARM_MODES_PROFILE[m])
            arm_ang[int(side)] = (a1, b, fwd)
    else:
        modes = list(_ARM_MODES_FRONT)
        p = (0.3, 0.15, 0.15, 0.22, 0.18)
        mode = _pick(rng, modes, p)
        for side in (1.0, -1.0):
            m = mode if rng.random() < 0.5 else _pick(rng, modes, p)
            a1, b = (_uniform(rng, r) for r in _ARM_MODES_FRONT[m])
            arm_ang[int(side)] = (a1, b, 1.0 if side * cy > 0 else -1.0)
    for side, (sh, el, wr) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
        a1, b, out = arm_ang[side]
        j[el] = j[sh] + uarm * float(rng.uniform(0.8, 1.0)) * _dir(a1, out)
        j[wr] = j[el] + farm * float(rng.uniform(0.8, 1.0)) * _dir(a1 + b, out)

    # Legs.
    if view == "profile":
        leg = _pick(rng, ("stand", "walk", "sit", "lift"), (0.35, 0.35, 0.18, 0.12))
    else:
        leg = _pick(rng, ("stand", "wide", "sit", "lift"), (0.5, 0.25, 0.13, 0.12))
    lifted = 1 if rng.random() < 0.5 else -1
    front_leg = 1 if rng.random() < 0.5 else -1
    for side, (hp, kn, an) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):
        out = fwd if view == "profile" else (1.0 if side * cy > 0 else -1.0)
        t_len, s_len = thigh * float(rng.uniform(0.88, 1.0)), shin * float(rng.uniform(0.88, 1.0))
        if view == "profile":
            if leg == "stand":
                t1, t2 = rng.uniform(-8, 8), rng.uniform(-5, 5)
            elif leg == "walk":
                t1, t2 = (rng.uniform(10, 35), rng.uniform(-25, 0)) if side == front_leg else \
                         (rng.uniform(-30, -10), rng.uniform(-40, -5))
            elif leg == "sit":
                t1 = rng.uniform(75, 100)
                t2 = rng.uniform(-10, 15) - t1
            else:
                t1, t2 = (rng.uniform(50, 90), rng.uniform(-120, -70)) if side == lifted else \
                         (rng.uniform(-8, 8), rng.uniform(-5, 5))
        else:
            if leg == "stand":
                t1, t2 = rng.uniform(0, 12), rng.uniform(-8, 8)
            elif leg == "wide":
                t1, t2 = rng.uniform(12, 32), rng.uniform(-20, 0)
            elif leg == "sit":  # thighs point at the camera: foreshortened
                t_len *= float(rng.uniform(0.25, 0.45))
                t1 = rng.uniform(0, 25)
                t2 = rng.uniform(-5, 15) - t1
            else:
                if side == lifted:
                    t_len *= float(rng.uniform(0.6, 0.9))
                    t1, t2 = rng.uniform(40, 80), rng.uniform(-110, -70)
                else:
                    t1, t2 = rng.uniform(0, 12), rng.uniform(-8, 8)
        j[kn] = j[hp] + t_len * _dir(float(t1), out)
        j[an] = j[kn] + s_len * _dir(float(t1 + t2), out)

    # Whole-body lean (rare large bends and lying figures), then scale and place.
    r = rng.random()
    if r < 0.04:
        lean = rng.choice([-1.0, 1.0]) * rng.uniform(70.0, 100.0)
    elif r < 0.14:
        lean = rng.choice([-1.0, 1.0]) * rng.uniform(20.0, 55.0)
    else:
        lean = float(np.clip(rng.normal(0.0, 7.0), -20.0, 20.0))
    rot = _rot(math.radians(lean))

    # Parts in the body frame: (owner, z, shape, pts, radii).
    sides = {1: (L_UARM, L_FARM, L_HAND, L_THIGH, L_SHIN, L_FOOT, 5, 7, 9, 11, 13, 15),
             -1: (R_UARM, R_FARM, R_HAND, R_THIGH, R_SHIN, R_FOOT, 6, 8, 10, 12, 14, 16)}
    raw: list[tuple[int, float, str, np.ndarray, tuple[float, float]]] = []
    for side, (ua, fa, ha, th, sh, ft, js, je, jw, jh, jk, ja) in sides.items():
        z_arm = depth(side, 0.3)
        z_leg = depth(side * 0.8, -0.05)
        raw.append((ua, z_arm, "capsule", np.stack([j[js], j[je]]), (0.042, 0.035)))
        raw.append((fa, z_arm + 1e-3, "capsule", np.stack([j[je], j[jw]]), (0.035, 0.028)))
        d = j[jw] - j[je]
        d = d / (np.linalg.norm(d) + 1e-9)
        raw.append((ha, z_arm + 2e-3, "circle", (j[jw] + 0.022 * d)[None], (0.036, 0.0)))
        raw.append((th, z_leg, "capsule", np.stack([j[jh], j[jk]]), (0.056, 0.046)))
        raw.append((sh, z_leg + 1e-3, "capsule", np.stack([j[jk], j[ja]]), (0.046, 0.036)))
        outward = 1.0 if side * cy > 0 else -1.0
        toe_dir = np.array([fwd, 0.25]) if view == "profile" else np.array([0.55 * outward, 0.8])
        toe_dir = toe_dir / np.linalg.norm(toe_dir)
        raw.append((ft, z_leg + 2e-3, "capsule", np.stack([j[ja] + 0.01 * toe_dir, j[ja] + 0.075 * toe_dir]),
                    (0.033, 0.027)))
    torso_pts = []
    for y, w, d in ((-torso_len + 0.005, shoulder_w + 0.035, 0.07), (0.035, hip_w + 0.045, 0.075)):
        for l, f in ((w, 0.0), (-w, 0.0), (0.0, d), (0.0, -d), (0.7 * w, 0.7 * d), (-0.7 * w, 0.7 * d),
                     (0.7 * w, -0.7 * d), (-0.7 * w, -0.7 * d)):
            torso_pts.append((lat(l, f), y))
    torso_pts.append((neck[0], neck[1] - 0.04))
    raw.append((TORSO, 0.0, "poly", np.array(torso_pts), (0.0, 0.0)))

    # Transform joints and parts to image coordinates.
    def to_img(p: np.ndarray) -> np.ndarray:
        return p @ rot.T * height_px

    joints = to_img(j)
    lo, hi = joints.min(axis=0), joints.max(axis=0)
    shift = center - (lo + hi) / 2.0
    joints = joints + shift
    fig = _Figure(joints=joints, self_hidden=hidden)

    # Colours: two contrasting hues for the two sides (which one is the left side: 50/50, see module doc).
    warm = _hsv_bgr(rng.uniform(-0.03, 0.12), rng.uniform(0.75, 1.0), rng.uniform(0.85, 1.0))
    cool = _hsv_bgr(rng.uniform(0.50, 0.70), rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0))
    side_color = {1: warm, -1: cool} if rng.random() < 0.5 else {1: cool, -1: warm}
    skin = _hsv_bgr(rng.uniform(0.03, 0.09), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95))
    hair = _hsv_bgr(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.45))
    shirt = _hsv_bgr(rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.5), rng.uniform(0.35, 0.75))
    shoe = _hsv_bgr(rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.4), rng.uniform(0.05, 0.3))
    outline = max(0.0, min(2.0, 0.012 * height_px)) if detail else 0.0
    if outline < 0.6:
        outline = 0.0
    dark = (25.0, 25.0, 25.0)

    owner_side = {L_UARM: 1, L_FARM: 1, L_HAND: 1, L_THIGH: 1, L_SHIN: 1, L_FOOT: 1,
                  R_UARM: -1, R_FARM: -1, R_HAND: -1, R_THIGH: -1, R_SHIN: -1, R_FOOT: -1}
    for owner, z, shape, pts, radii in raw:
        if owner == TORSO:
            color = shirt
        elif owner in (L_HAND, R_HAND):
            color = skin
        elif owner in (L_FOOT, R_FOOT):
            color = shoe
        elif owner in (L_THIGH, L_SHIN, R_THIGH, R_SHIN):
            color = _scaled(side_color[owner_side[owner]], 0.62)
        else:
            color = side_color[owner_side[owner]]
        fig.parts.append(_Part(owner=owner, z=z, shape=shape, pts=to_img(pts) + shift,
                               radii=(radii[0] * height_px, radii[1] * height_px), color=color,
                               outline=outline, outline_color=_scaled(color, 0.45)))

    # Head: hair disc, face disc shifted towards the face (none from the back), then face features.
    hc = to_img(head_c[None])[0] + shift
    hr = head_r * height_px
    zh = 0.1
    fig.parts.append(_Part(HEAD, zh, "circle", hc[None], (hr, 0.0), hair, outline, dark))
    if cy > -0.4:
        off = rot @ tilt @ np.array([-sy * 0.17, max(cy, 0.0) * 0.16]) * hr
        fig.parts.append(_Part(HEAD, zh + 1e-4, "circle", (hc + off)[None], (0.84 * hr, 0.0), skin))
    ear_c = _scaled(skin, 0.8)
    for idx in (3, 4):
        if not hidden[idx]:
            fig.parts.append(_Part(HEAD, zh + 2e-4, "circle", joints[idx][None], (0.2 * hr, 0.0), ear_c))
    if detail:
        for idx in (1, 2):  # white eye with a dark pupil: readable on any skin tone
            if not hidden[idx]:
                if hr >= 5.0:
                    fig.parts.append(_Part(HEAD, zh + 3e-4, "circle", joints[idx][None], (0.17 * hr, 0.0),
                                           (240.0, 240.0, 240.0)))
                fig.parts.append(_Part(HEAD, zh + 4e-4, "circle", joints[idx][None], (0.09 * hr, 0.0), dark))
        if not hidden[0]:
            if abs(sy) > 0.7:  # profile: the nose sticks out
                fig.parts.append(_Part(HEAD, zh + 3e-4, "circle", joints[0][None], (0.24 * hr, 0.0), skin))
            else:
                nose_c = _hsv_bgr(0.0, 0.6, 0.55)
                fig.parts.append(_Part(HEAD, zh + 3e-4, "circle", joints[0][None], (0.13 * hr, 0.0), nose_c))
    fig.parts.sort(key=lambda p: p.z)
    return fig


# ------------------------------------------------------------------------------------------- rendering ---

def _part_bounds(part: _Part) -> tuple[float, float, float, float]:
    r = max(part.radii) + part.outline + 2.0
    lo, hi = part.pts.min(axis=0) - r, part.pts.max(axis=0) + r
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


_RING = np.stack([np.cos(np.linspace(0.0, 2.0 * math.pi, 20, endpoint=False)),
                  np.sin(np.linspace(0.0, 2.0 * math.pi, 20, endpoint=False))], axis=1)


def _raster(mask: np.ndarray, part: _Part, origin: np.ndarray, grow: float) -> None:
    """Anti-aliased coverage (0..255) of `part` grown by `grow` px into `mask` (whose pixel 0 is at `origin`)."""
    # COCO coordinates -> cv2 coordinates (pixel centres at integers), then fixed point.
    p = part.pts - origin - 0.5
    if part.shape == "circle":
        c = np.round(p[0] * _SCALE).astype(np.int32)
        rad = int(round(max(part.radii[0] + grow, 0.3) * _SCALE))
        cv2.circle(mask, (int(c[0]), int(c[1])), rad, 255, -1, cv2.LINE_AA, _SHIFT)
        return
    if part.shape == "capsule":
        (x1, y1), (x2, y2) = p
        r1, r2 = part.radii[0] + grow, part.radii[1] + grow
        pts = np.concatenate([_RING * r1 + (x1, y1), _RING * r2 + (x2, y2)])
        hull = cv2.convexHull(np.round(pts * _SCALE).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_AA, _SHIFT)
        return
    hull = cv2.convexHull(np.round(p * _SCALE).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_AA, _SHIFT)
    if grow > 0:
        cv2.polylines(mask, [hull], True, 255, max(1, int(round(2 * grow))), cv2.LINE_AA, _SHIFT)


class _Canvas:
    """Float BGR image plus an owner map (which figure part is on top at each pixel)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.h, self.w = image.shape[:2]
        self.owner = np.zeros((self.h, self.w), dtype=np.int32)

    def draw(self, part: _Part, code: int, footprint: np.ndarray | None = None) -> None:
        x0, y0, x1, y1 = _part_bounds(part)
        x0, y0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
        x1, y1 = min(int(math.ceil(x1)), self.w), min(int(math.ceil(y1)), self.h)
        if x1 <= x0 or y1 <= y0:
            return
        origin = np.array([x0, y0], dtype=np.float64)
        inner = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        _raster(inner, part, origin, 0.0)
        if part.outline > 0:
            outer = np.zeros_like(inner)
            _raster(outer, part, origin, part.outline)
        else:
            outer = inner
        roi = self.image[y0:y1, x0:x1]
        if part.outline > 0:
            a = (outer.astype(np.float32) / 255.0)[..., None]
            roi *= 1.0 - a
            roi += a * np.asarray(part.outline_color, dtype=np.float32)
        a = (inner.astype(np.float32) / 255.0)[..., None]
        roi *= 1.0 - a
        roi += a * np.asarray(part.color, dtype=np.float32)
        hit = outer >= 128
        self.owner[y0:y1, x0:x1][hit] = code
        if footprint is not None:
            footprint[y0:y1, x0:x1] |= hit


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured, mostly muted background: gradient + low-frequency noise + optional stripes and shapes, blurred."""
    c0 = np.array(_hsv_bgr(rng.random(), rng.uniform(0.0, 0.45), rng.uniform(0.25, 0.85)), dtype=np.float32)
    c1 = np.array(_hsv_bgr(rng.random(), rng.uniform(0.0, 0.45), rng.uniform(0.25, 0.85)), dtype=np.float32)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(theta) + yy * math.sin(theta))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c0[None, None] * (1.0 - t[..., None]) + c1[None, None] * t[..., None]
    g = int(rng.integers(3, 9))
    noise = rng.normal(0.0, 1.0, size=(g, g, 3)).astype(np.float32)
    img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * float(rng.uniform(8.0, 28.0))
    if rng.random() < 0.4:
        phi = rng.uniform(0.0, math.pi)
        period = rng.uniform(6.0, 40.0)
        s = np.sin(2.0 * math.pi * (xx * math.cos(phi) + yy * math.sin(phi)) / period)
        img += (s * float(rng.uniform(6.0, 22.0)))[..., None]
    if rng.random() < 0.65:
        for _ in range(int(rng.integers(3, 14))):
            layer = img.copy()
            col = _hsv_bgr(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.9))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            kind = rng.random()
            size = int(rng.integers(4, max(6, min(h, w) // 4)))
            if kind < 0.35:
                cv2.circle(layer, (x, y), size, col, -1, cv2.LINE_AA)
            elif kind < 0.7:
                cv2.rectangle(layer, (x, y), (x + size, y + int(rng.integers(4, size + 5))), col, -1)
            else:
                x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
                cv2.line(layer, (x, y), (x2, y2), col, int(rng.integers(1, 4)), cv2.LINE_AA)
            alpha = float(rng.uniform(0.25, 0.6))
            img = img * (1.0 - alpha) + layer * alpha
    sigma = float(rng.uniform(0.5, 2.5))
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    return np.clip(img, 0.0, 255.0).astype(np.float32)


def _occluder(rng: np.random.Generator, h: int, w: int) -> _Part:
    """A random convex shape (box or blob) in front of some figures: it hides joints, which become v=1."""
    side = min(h, w)
    c = np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h])
    a, b = rng.uniform(0.05, 0.18) * side, rng.uniform(0.05, 0.18) * side
    th = rng.uniform(0.0, math.pi)
    n = 4 if rng.random() < 0.5 else 14
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False) + math.pi / 4
    pts = np.stack([np.cos(t) * a, np.sin(t) * b], axis=1) @ _rot(th).T + c
    col = _hsv_bgr(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.2, 0.9))
    return _Part(owner=0, z=0.0, shape="poly", pts=pts, color=col, outline=1.0, outline_color=_scaled(col, 0.5))


# ------------------------------------------------------------------------------------------ annotation ---

def _polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a binary mask as COCO polygons, traced at 4x so the polygon hugs pixel edges."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return []
    x0, y0 = max(int(xs.min()) - 1, 0), max(int(ys.min()) - 1, 0)
    x1, y1 = min(int(xs.max()) + 2, mask.shape[1]), min(int(ys.max()) + 2, mask.shape[0])
    up = cv2.resize(mask[y0:y1, x0:x1].astype(np.uint8), ((x1 - x0) * 4, (y1 - y0) * 4),
                    interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys: list[list[float]] = []
    for cnt in contours:
        cnt = cv2.approxPolyDP(cnt, 2.0, True)  # within 0.5 px of the traced edge
        if len(cnt) < 3:
            continue
        pts = (cnt.reshape(-1, 2).astype(np.float64) + 0.5) / 4.0 + (x0, y0)
        polys.append(pts.reshape(-1).tolist())  # multiples of 1/8: exact in binary, no rounding needed
    return polys


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _seg_rle(seg: Any, h: int, w: int) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        rles = mask_utils.frPyObjects(seg, h, w)
        return mask_utils.merge(rles) if isinstance(rles, list) else rles


def _area_bbox(seg: Any, h: int, w: int) -> tuple[float, list[float]]:
    """Area and tight box of a segmentation, as pycocotools rasterises it (so all three agree)."""
    rle = _seg_rle(seg, h, w)
    area = float(mask_utils.area(rle))
    bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
    return area, bbox


# ---------------------------------------------------------------------------------------------- scenes ---

def _silhouette(fig: _Figure) -> tuple[np.ndarray, np.ndarray]:
    """Binary mask of a figure in its own frame and that frame's origin (for cheap placement tests)."""
    bounds = np.array([_part_bounds(p) for p in fig.parts])
    x0, y0 = np.floor(bounds[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(bounds[:, 2:].max(axis=0)).astype(int)
    origin = np.array([x0, y0], dtype=np.float64)
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    for part in fig.parts:
        _raster(mask, part, origin, part.outline)
    return mask >= 128, origin


def _hidden_fraction(points: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of `points` (in the mask's frame) that fall on the mask."""
    ij = np.floor(points).astype(int)
    inside = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < mask.shape[1]) & (ij[:, 1] < mask.shape[0])
    if not inside.any():
        return 0.0
    return float(mask[ij[inside, 1], ij[inside, 0]].sum()) / len(points)


def _translate(fig: _Figure, d: np.ndarray) -> None:
    fig.joints = fig.joints + d
    for part in fig.parts:
        part.pts = part.pts + d


def _image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """(height, width): square half of the time, else one side shrunk to [0.75, 1] x size (multiple of 8)."""
    if rng.random() < 0.5:
        return size, size
    other = max(8, int(round(rng.uniform(0.75, 1.0) * size / 8.0)) * 8)
    other = min(other, size)
    return (size, other) if rng.random() < 0.5 else (other, size)


def _person_height(rng: np.random.Generator, side: int) -> float:
    """Figure height in px, aiming at a COCO area class: small 20% / medium 45% / large 35%.

    The drawn silhouette covers roughly 0.2 x height^2 px, so small (42-68 px) and medium (80-200 px) are
    absolute like COCO's area ranges, and large is relative to the image (0.84-1.3 x its shorter side, often
    cut by the border). The class a person is counted in is that of its drawn, visible area.
    """
    r = rng.random()
    if r < 0.2:
        return float(rng.uniform(42.0, 68.0)) * min(1.0, 0.5 * side / 68.0)
    if r < 0.65:
        return float(np.exp(rng.uniform(math.log(80.0), math.log(200.0)))) * min(1.0, 0.9 * side / 200.0)
    return float(rng.uniform(0.84, 1.3)) * side


def _render_image(seed: int, split: str, index: int, image_size: int) -> tuple[bytes, dict[str, Any], list[dict[str, Any]]]:
    """One image: JPEG bytes, its `images` record and its annotations. Depends only on (seed, split, index)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _SPLIT_CODE[split], index])))
    image_id = _IMAGE_ID_BASE[split] + index + 1
    h, w = _image_size(rng, image_size)
    canvas = _Canvas(_background(rng, h, w))
    side = min(h, w)

    # Scene content (back to front): crowd region, then persons / tiny persons / occluders in random order.
    layers: list[tuple[str, Any]] = []
    n_people = int(rng.choice(np.arange(1, 7), p=[0.14, 0.22, 0.22, 0.18, 0.13, 0.11]))
    heights = [_person_height(rng, side) for _ in range(n_people)]
    jitter = rng.uniform(0.6, 1.4, size=n_people)
    heights = [hp for _, hp in sorted(zip((np.asarray(heights) * jitter).tolist(), heights))]
    # Nearer people tend to be larger (drawn later, over smaller ones). Each person takes the spot, among a
    # few candidates, that hides the fewest joints of the people already placed, and is dropped if even that
    # hides over a third of someone: overlap and occlusion stay common but rarely total (learnable scenes).
    placed: list[_Figure] = []
    for hp in heights:
        fig = _sample_figure(rng, hp, np.zeros(2))
        sil, sil_origin = _silhouette(fig)
        best, best_cost = np.zeros(2), math.inf
        for _ in range(8):
            c = np.array([rng.uniform(0.12, 0.88) * w, rng.uniform(0.15, 0.85) * h])
            cost = max((_hidden_fraction(other.joints - c - sil_origin, sil) for other in placed), default=0.0)
            if cost < best_cost:
                best, best_cost = c, cost
            if cost == 0.0:
                break
        if placed and best_cost > 0.34:
            continue
        _translate(fig, best)
        placed.append(fig)
        layers.append(("person", fig))
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            c = np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h])
            pos = int(rng.integers(0, len(layers) + 1))
            layers.insert(pos, ("tiny", _sample_figure(rng, float(rng.uniform(9.0, 17.0)), c, detail=False)))
    if rng.random() < 0.45:
        for _ in range(int(rng.integers(1, 3))):
            pos = int(rng.integers(max(1, len(layers) // 2), len(layers) + 1))
            layers.insert(pos, ("occluder", _occluder(rng, h, w)))

    crowd: list[_Figure] = []
    if rng.random() < 0.1:
        cw, ch = rng.uniform(0.2, 0.35) * w, rng.uniform(0.08, 0.15) * h
        cx, cy = rng.uniform(cw / 2, w - cw / 2), rng.uniform(ch / 2, h - ch / 2)
        for _ in range(int(rng.integers(8, 17))):
            c = np.array([cx + rng.uniform(-0.5, 0.5) * cw, cy + rng.uniform(-0.5, 0.5) * ch])
            crowd.append(_sample_figure(rng, float(rng.uniform(12.0, 22.0)), c, detail=False))
        crowd.sort(key=lambda f: float(f.joints[:, 1].max()))  # lower on the image = nearer

    # Draw. Slot 0 is the crowd; each person / tiny person gets its own slot.
    slot_of: dict[int, int] = {}
    footprints: dict[int, np.ndarray] = {}
    for fig in crowd:
        for part in fig.parts:
            canvas.draw(part, 0 * _PARTS_PER_SLOT + part.owner + 1)
    for li, (kind, obj) in enumerate(layers):
        if kind == "occluder":
            canvas.draw(obj, _OCCLUDER_CODE)
            continue
        slot = len(slot_of) + 1
        slot_of[li] = slot
        footprints[li] = np.zeros((h, w), dtype=bool)
        for part in obj.parts:
            canvas.draw(part, slot * _PARTS_PER_SLOT + part.owner + 1, footprints[li])

    img = canvas.image
    img += rng.normal(0.0, float(rng.uniform(1.5, 5.0)), size=img.shape).astype(np.float32)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 0.8)))
    ok, buf = cv2.imencode(".jpg", np.clip(np.round(img), 0, 255).astype(np.uint8),
                           [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a synthetic JPEG")

    file_name = f"{image_id:012d}.jpg"
    image_rec = {"license": 1, "file_name": file_name, "height": h, "width": w, "id": image_id}
    anns: list[dict[str, Any]] = []
    owner = canvas.owner

    def add(obj: dict[str, Any]) -> None:
        obj["id"] = image_id * _ANNS_PER_IMAGE + len(anns) + 1
        anns.append(obj)

    for li, (kind, obj) in enumerate(layers):
        if kind == "occluder":
            continue
        slot = slot_of[li]
        visible = (owner >= slot * _PARTS_PER_SLOT + 1) & (owner < (slot + 1) * _PARTS_PER_SLOT + 1)
        n_vis, n_full = int(visible.sum()), int(footprints[li].sum())
        if n_vis < 4:
            continue  # nothing of it can be seen: not annotated
        seg = _polygons(visible)
        if not seg:
            continue
        area, bbox = _area_bbox(seg, h, w)
        if area < 1.0:
            continue
        kps: list[float | int] = [0] * (3 * _NUM_JOINTS)
        num = 0
        hidden_mostly = n_vis < 0.2 * n_full or area < 40.0
        if kind == "person" and not hidden_mostly:
            for jj in range(_NUM_JOINTS):
                x, y = (round(float(v), 2) for v in obj.joints[jj])
                if not (0.0 <= x < w and 0.0 <= y < h):
                    continue  # outside the image: v=0, x=y=0
                code = int(owner[int(y), int(x)])
                own = code - 1 - slot * _PARTS_PER_SLOT
                vis = 2 if (0 <= own < _PARTS_PER_SLOT and own in _JOINT_PARTS[jj]
                            and not obj.self_hidden[jj]) else 1
                kps[3 * jj:3 * jj + 3] = [x, y, vis]
                num += 1
        add({"image_id": image_id, "category_id": 1, "iscrowd": 0, "num_keypoints": num, "keypoints": kps,
             "segmentation": seg, "area": area, "bbox": bbox})

    if crowd:
        region = (owner >= 1) & (owner < _PARTS_PER_SLOT + 1)
        if region.sum() >= 4:
            # A little margin around the tiny figures, but never over anyone drawn in front of them.
            region = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            region &= owner < _PARTS_PER_SLOT + 1
            rle = _uncompressed_rle(region)
            area, bbox = _area_bbox(rle, h, w)
            add({"image_id": image_id, "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
                 "keypoints": [0] * (3 * _NUM_JOINTS), "segmentation": rle, "area": area, "bbox": bbox})
    return buf.tobytes(), image_rec, anns


# ------------------------------------------------------------------------------------------- datasets ---

def annotation_file(out_dir: str | os.PathLike[str], split: str) -> Path:
    return Path(out_dir) / "annotations" / f"person_keypoints_{split}.json"


KEYPOINT_FORMATS = ("coco", "crowdpose")


def _params(seed: int, num_train: int, num_val: int, image_size: int, keypoint_format: str = "coco") -> dict[str, Any]:
    params = {"generator": "aedistill.synthetic", "version": GENERATOR_VERSION, "seed": int(seed),
              "num_train": int(num_train), "num_val": int(num_val), "image_size": int(image_size),
              "jpeg_quality": JPEG_QUALITY}
    if keypoint_format != "coco":  # COCO datasets keep the parameters (and manifests) they always had
        if keypoint_format not in KEYPOINT_FORMATS:
            raise ValueError(f"keypoint_format must be one of {KEYPOINT_FORMATS}, got {keypoint_format!r}")
        params["keypoint_format"] = keypoint_format
    return params


def _category() -> dict[str, Any]:
    return {"supercategory": "person", "id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES),
            "skeleton": [list(e) for e in COCO_SKELETON]}


def _check_args(seed: int, num_train: int, num_val: int, image_size: int) -> None:
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f"need >= 0 images per split and at least one in all, got {num_train} / {num_val}")
    if max(num_train, num_val) >= _IMAGE_ID_BASE["val2017"]:
        raise ValueError(f"at most {_IMAGE_ID_BASE['val2017'] - 1} images per split")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")


def _progress(total: int, enabled: bool) -> Any:
    # disable=None: tqdm shows the bar only on a terminal.
    return tqdm(total=total, desc="synth", unit="img", disable=None if (enabled and total > 8) else True)


def _clear_split_images(folder: Path, keep: set[str]) -> None:
    """Remove our own stale images (12-digit names) left by an earlier, larger run; nothing else."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if re.fullmatch(r"\d{12}\.jpg", p.name) and p.name not in keep:
            p.unlink()


def generate_dataset(out_dir: str | Path, seed: int = 0, num_train: int = DEFAULT_NUM_TRAIN,
                     num_val: int = DEFAULT_NUM_VAL, image_size: int = DEFAULT_IMAGE_SIZE,
                     progress: bool = True, keypoint_format: str = "coco") -> dict:
    """Write the dataset under `out_dir` (always regenerates) and return its summary.

    Returns {"train2017": summarize_split(...), "val2017": ..., "params": {...}}. Every file is written
    atomically and the manifest last, so an interrupted run is never mistaken for a complete one.
    Use `ensure_dataset` to reuse an existing complete dataset instead. `keypoint_format="crowdpose"` writes
    the same scenes with CrowdPose's 14 joints and a crowdIndex per image (`distill.data.crowdpose`).
    """
    _check_args(seed, num_train, num_val, image_size)
    out = Path(out_dir)
    params = _params(seed, num_train, num_val, image_size, keypoint_format)
    manifest = out / MANIFEST_NAME
    if manifest.exists():
        manifest.unlink()  # the old dataset stops being "complete" before any of it is overwritten
    counts = {"train2017": int(num_train), "val2017": int(num_val)}
    bar = _progress(num_train + num_val, progress)
    summary: dict[str, Any] = {}
    # Atomic writes fsync every file; a few writer threads hide that I/O latency behind the rendering.
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        for split in SPLITS:
            folder = out / split
            folder.mkdir(parents=True, exist_ok=True)
            images, annotations = [], []
            pending: list[Future[None]] = []
            for index in range(counts[split]):
                data, rec, anns = _render_image(int(seed), split, index, int(image_size))
                pending.append(pool.submit(write_bytes_atomic, folder / rec["file_name"], data))
                images.append(rec)
                annotations.extend(anns)
                bar.update(1)
            for fut in pending:
                fut.result()  # re-raises a failed write before the annotation file claims the image exists
            _clear_split_images(folder, {r["file_name"] for r in images})
            doc = {
                "info": {"description": "aedistill synthetic multi-person keypoint dataset (stick figures)",
                         "version": str(GENERATOR_VERSION), "year": 2024, "contributor": "aedistill",
                         "date_created": "generated", "params": params},
                "licenses": [{"id": 1, "name": "CC0 1.0 (procedurally generated)", "url": ""}],
                "images": images,
                "annotations": annotations,
                "categories": [_category()],
            }
            if keypoint_format == "crowdpose":
                doc = coco_to_crowdpose(doc)
            ann_path = annotation_file(out, split)
            write_json_atomic(ann_path, doc)
            summary[split] = summarize_split(ann_path)
    finally:
        pool.shutdown(wait=True)
        bar.close()
    summary["params"] = params
    write_json_atomic(manifest, {"params": params, "summary": summary}, indent=1)
    return summary


def load_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete dataset under `out_dir`, or None (absent or unreadable)."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("params"), dict) else None


def dataset_is_complete(out_dir: str | Path, seed: int = 0, num_train: int = DEFAULT_NUM_TRAIN,
                        num_val: int = DEFAULT_NUM_VAL, image_size: int = DEFAULT_IMAGE_SIZE,
                        keypoint_format: str = "coco") -> bool:
    """True when `out_dir` holds a finished dataset generated with exactly these parameters."""
    out = Path(out_dir)
    man = load_manifest(out)
    if man is None or man["params"] != _params(seed, num_train, num_val, image_size, keypoint_format):
        return False
    counts = {"train2017": num_train, "val2017": num_val}
    for split in SPLITS:
        if not annotation_file(out, split).is_file():
            return False
        base = _IMAGE_ID_BASE[split]
        if not all((out / split / f"{base + i + 1:012d}.jpg").is_file() for i in range(counts[split])):
            return False
    return True


def ensure_dataset(out_dir: str | Path, seed: int = 0, num_train: int = DEFAULT_NUM_TRAIN,
                   num_val: int = DEFAULT_NUM_VAL, image_size: int = DEFAULT_IMAGE_SIZE,
                   progress: bool = True, force: bool = False, keypoint_format: str = "coco") -> tuple[dict, bool]:
    """Reuse a complete dataset with the same parameters, else generate it. Returns (summary, reused).

    Refuses (DataError) to write into a folder that holds COCO annotation files not made by this generator,
    unless `force`: it would overwrite someone's real dataset.
    """
    out = Path(out_dir)
    if not force and dataset_is_complete(out, seed, num_train, num_val, image_size, keypoint_format):
        man = load_manifest(out)
        assert man is not None
        summary = dict(man.get("summary") or {})
        if not all(s in summary for s in SPLITS):
            summary = {s: summarize_split(annotation_file(out, s)) for s in SPLITS}
        summary["params"] = man["params"]
        return summary, True
    if not force and load_manifest(out) is None:
        foreign = [annotation_file(out, s) for s in SPLITS if annotation_file(out, s).exists()]
        for path in foreign:
            try:
                info = json.loads(path.read_text(encoding="utf-8")).get("info", {})
            except (OSError, ValueError, AttributeError):
                info = {}
            if not (isinstance(info, dict) and isinstance(info.get("params"), dict)
                    and info["params"].get("generator") == "aedistill.synthetic"):
                raise DataError(f"{path} exists and was not written by the synthetic generator; "
                                "refusing to overwrite it (choose another --out, or pass --force)")
    return generate_dataset(out, seed, num_train, num_val, image_size, progress, keypoint_format), False


# -------------------------------------------------------------------------------------------- summary ---

def summarize_split(ann_file: Path) -> dict:
    """Counts of one annotation file: what the CLI prints and what tests check."""
    data = json.loads(Path(ann_file).read_text(encoding="utf-8"))
    s = {"images": len(data["images"]), "persons": 0, "persons_with_keypoints": 0, "labelled_keypoints": 0,
         "visible_keypoints": 0, "occluded_keypoints": 0, "crowd_regions": 0, "persons_without_keypoints": 0,
         "small": 0, "medium": 0, "large": 0}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            s["crowd_regions"] += 1
            continue
        s["persons"] += 1
        v = ann["keypoints"][2::3]
        if ann["num_keypoints"] > 0:
            s["persons_with_keypoints"] += 1
            s["labelled_keypoints"] += sum(1 for x in v if x > 0)
            s["visible_keypoints"] += sum(1 for x in v if x == 2)
            s["occluded_keypoints"] += sum(1 for x in v if x == 1)
            a = ann["area"]
            s["small" if a < SMALL_MAX_AREA else "medium" if a < MEDIUM_MAX_AREA else "large"] += 1
        else:
            s["persons_without_keypoints"] += 1
    return s


SUMMARY_ROWS: tuple[tuple[str, str], ...] = (
    ("images", "images"),
    ("persons", "persons (non-crowd annotations)"),
    ("persons_with_keypoints", "  with keypoints"),
    ("persons_without_keypoints", "  without keypoints"),
    ("labelled_keypoints", "labelled keypoints (v>0)"),
    ("visible_keypoints", "  visible (v=2)"),
    ("occluded_keypoints", "  occluded (v=1)"),
    ("crowd_regions", "crowd regions (iscrowd=1)"),
    ("small", "with keypoints, small (<32^2)"),
    ("medium", "with keypoints, medium"),
    ("large", "with keypoints, large (>96^2)"),
)


def gt_self_ap(ann_file: Path) -> float:
    """COCOeval keypoint AP of the ground truth scored against itself (must be 1.0: a format self-check).

    Every non-crowd annotation with num_keypoints > 0 becomes a detection with score 1.0.
    """

    data = json.loads(Path(ann_file).read_text(encoding="utf-8"))
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": list(a["keypoints"]),
             "score": 1.0} for a in data["annotations"] if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
    if not dets:
        return float("nan")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return float(coco_keypoint_eval(ann_file, dets)["AP"])


def timed_generate(out_dir: str | Path, **kwargs: Any) -> tuple[dict, bool, float]:
    """`ensure_dataset` with its wall time in seconds (for the CLI report)."""
    t0 = time.perf_counter()
    summary, reused = ensure_dataset(out_dir, **kwargs)
    return summary, reused, time.perf_counter() - t0
