"""Training augmentation with the official HigherHRNet semantics.

The official training transform is `RandomAffineTransform -> RandomHorizontalFlip -> ToTensor -> Normalize`.
This module splits it into a *draw* (`sample_augment_params`, which consumes random numbers exactly in the
official order) and a deterministic *apply* (`apply_augmentation`), so a test can replay recorded draws and a
training run can derive its draws from a per-sample RNG.

Conventions (all reproduced bit-for-bit against `../shared/reference/higherhrnet/targets`):

- scale (in 200-px units) = short side / 200 * aug_scale (`scale_type='short'`; `'long'` uses the long side),
  aug_scale ~ U[min_scale, max_scale);
- rotation = (2u - 1) * max_rotation degrees;
- dx, dy = randint(-max_translate * scale, max_translate * scale) (bounds truncated toward zero, upper bound
  exclusive, as numpy's legacy `randint` does with float bounds); center = (w/2 + dx, h/2 + dy);
- flip with probability `flip_prob` (official: Python `random.random() < 0.5`, drawn last);
- one affine per output resolution and one for the input, from `get_affine_matrix(center, scale, res, rot)`;
  the per-resolution matrices are exact scalings of each other;
- image: `cv2.warpAffine` (bilinear, constant-0 border) to the input size;
- masks: warp of (mask * 255) as uint8 at each output size, / 255, > 0.5 -> float32 0/1;
- joints: the affine applied to x, y (v unchanged);
- flip: image and masks mirrored; joints permuted by the flip index and x' = R - 1 - x **at each resolution**
  R (so after a flip x_256 = 2 x_128 + 1, as in the official code). Invisible joints are transformed too;
  they stay invisible (v = 0).
"""
from __future__ import annotations

import random as _pyrandom
from dataclasses import dataclass
from typing import Sequence, Union

import cv2
import numpy as np
import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

RandomSource = Union[np.random.Generator, np.random.RandomState]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation (defaults: the official W32-512 yaml)."""

    min_scale: float = 0.75
    max_scale: float = 1.5
    scale_type: str = "short"  # 'short' or 'long'
    max_rotation: float = 30.0
    max_translate: float = 40.0
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.scale_type not in ("short", "long"):
            raise ValueError(f"scale_type must be 'short' or 'long', got {self.scale_type!r}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the random augmentation.

    `aug_scale` multiplies the base scale (short or long side / 200), `rot_deg` is the official rotation
    angle in degrees (positive = counter-clockwise in the image), `dx`, `dy` shift the crop centre in
    original-image pixels, `flip` mirrors the result horizontally.
    """

    aug_scale: float = 1.0
    rot_deg: float = 0.0
    dx: float = 0
    dy: float = 0
    flip: bool = False

    @classmethod
    def identity(cls) -> "AugmentParams":
        """No randomness: the centre crop (scale_type 'short') / letterbox ('long') resize."""
        return cls()


def base_scale(width: int, height: int, scale_type: str = "short") -> float:
    """The official base scale in 200-px units: short (or long) side / 200."""
    if scale_type == "short":
        return min(height, width) / 200
    if scale_type == "long":
        return max(height, width) / 200
    raise ValueError(f"unknown scale_type {scale_type!r}")


def _uniform(rng: RandomSource) -> float:
    return float(rng.random() if isinstance(rng, np.random.Generator) else rng.random_sample())


def _randint(rng: RandomSource, low: int, high: int) -> int:
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high))
    return int(rng.randint(low, high))


def sample_augment_params(
    rng: RandomSource,
    width: int,
    height: int,
    config: AugmentConfig = AugmentConfig(),
    flip_rng: _pyrandom.Random | RandomSource | None = None,
) -> AugmentParams:
    """Draw an `AugmentParams` the official way, consuming random numbers in the official order.

    `rng` is a numpy `Generator` or legacy `RandomState`. With a `RandomState` seeded like the official
    process's global numpy state and `flip_rng` a `random.Random` seeded like Python's `random`, the draws
    are identical to the official ones. Without `flip_rng` the flip is drawn from `rng` (after the others).
    """
    aug_scale = _uniform(rng) * (config.max_scale - config.min_scale) + config.min_scale
    scale = base_scale(width, height, config.scale_type) * aug_scale
    rot = (_uniform(rng) * 2 - 1) * config.max_rotation
    dx = dy = 0
    if config.max_translate > 0:
        # numpy's legacy randint truncates float bounds toward zero; the upper bound is exclusive.
        low, high = int(-config.max_translate * scale), int(config.max_translate * scale)
        if high > low:
            dx = _randint(rng, low, high)
            dy = _randint(rng, low, high)
    src = rng if flip_rng is None else flip_rng
    u = src.random() if isinstance(src, (np.random.Generator, _pyrandom.Random)) else src.random_sample()
    return AugmentParams(aug_scale=aug_scale, rot_deg=rot, dx=dx, dy=dy, flip=bool(u < config.flip_prob))


def get_affine_matrix(center: Sequence[float], scale: float, res: tuple[int, int], rot: float = 0.0) -> np.ndarray:
    """The official `_get_affine_matrix`: (3, 3) matrix mapping original pixels to a `res` = (h, w) crop.

    h = 200 * scale; t = [[w/h, 0, w(-cx/h + .5)], [0, h_res/h, h_res(-cy/h + .5)]]; a rotation by -rot
    about the output centre is composed as T_inv @ R @ T @ t (the same float operations as official).
    """
    h = 200 * scale
    t = np.zeros((3, 3))
    t[0, 0] = float(res[1]) / h
    t[1, 1] = float(res[0]) / h
    t[0, 2] = res[1] * (-float(center[0]) / h + 0.5)
    t[1, 2] = res[0] * (-float(center[1]) / h + 0.5)
    t[2, 2] = 1
    if not rot == 0:
        rot = -rot  # to match the direction of rotation from cropping
        rot_mat = np.zeros((3, 3))
        rot_rad = rot * np.pi / 180
        sn, cs = np.sin(rot_rad), np.cos(rot_rad)
        rot_mat[0, :2] = [cs, -sn]
        rot_mat[1, :2] = [sn, cs]
        rot_mat[2, 2] = 1
        t_mat = np.eye(3)
        t_mat[0, 2] = -res[1] / 2
        t_mat[1, 2] = -res[0] / 2
        t_inv = t_mat.copy()
        t_inv[:2, 2] *= -1
        t = np.dot(t_inv, np.dot(rot_mat, np.dot(t_mat, t)))
    return t


def affine_joints(joints_xy: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to the last axis (x, y) of `joints_xy` (the official `_affine_joints`)."""
    joints_xy = np.asarray(joints_xy, dtype=np.float64)
    shape = joints_xy.shape
    flat = joints_xy.reshape(-1, 2)
    ones = np.ones((flat.shape[0], 1))
    return np.dot(np.concatenate((flat, ones), axis=1), np.asarray(mat)[:2].T).reshape(shape)


@dataclass
class AugmentResult:
    """Output of `apply_augmentation`. Per-resolution lists are in `output_sizes` order."""

    image: np.ndarray  # (S, S, 3) uint8, warped and flipped
    affine_input: np.ndarray  # (2, 3) float64
    affines: list[np.ndarray]  # (2, 3) float64 per output size
    masks: list[np.ndarray]  # (R, R) float32 0/1 per output size
    joints: list[np.ndarray]  # (P, K, 3) float64 per output size
    center: tuple[float, float]
    scale: float  # in 200-px units


def apply_augmentation(
    image: np.ndarray,
    mask: np.ndarray,
    joints: np.ndarray,
    params: AugmentParams,
    input_size: int,
    output_sizes: Sequence[int],
    flip_index: Sequence[int],
    scale_type: str = "short",
) -> AugmentResult:
    """Deterministic half of the official `RandomAffineTransform` + `RandomHorizontalFlip`."""
    height, width = image.shape[:2]
    scale = base_scale(width, height, scale_type) * params.aug_scale
    center = np.array((width / 2, height / 2))
    center[0] += params.dx
    center[1] += params.dy
    mask_u8 = (np.asarray(mask) * 255).astype(np.uint8)
    joints = np.asarray(joints, dtype=np.float64)

    affines, masks, joints_out = [], [], []
    for res in output_sizes:
        res = int(res)
        mat = get_affine_matrix(center, scale, (res, res), params.rot_deg)[:2]
        m = cv2.warpAffine(mask_u8, mat, (res, res)) / 255
        m = (m > 0.5).astype(np.float32)
        j = joints.copy()
        j[:, :, 0:2] = affine_joints(joints[:, :, 0:2], mat)
        affines.append(mat)
        masks.append(m)
        joints_out.append(j)

    mat_input = get_affine_matrix(center, scale, (input_size, input_size), params.rot_deg)[:2]
    warped = cv2.warpAffine(image, mat_input, (int(input_size), int(input_size)))

    if params.flip:
        flip_index = list(flip_index)
        warped = np.ascontiguousarray(warped[:, ::-1])
        for i, res in enumerate(output_sizes):
            masks[i] = np.ascontiguousarray(masks[i][:, ::-1])
            j = joints_out[i][:, flip_index]
            j[:, :, 0] = int(res) - j[:, :, 0] - 1
            joints_out[i] = j
    return AugmentResult(
        image=warped, affine_input=mat_input, affines=affines, masks=masks, joints=joints_out,
        center=(float(center[0]), float(center[1])), scale=float(scale),
    )


def to_normalized_tensor(
    image: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """HWC uint8 RGB -> CHW float32, /255, then (x - mean) / std (torchvision's to_tensor + normalize ops)."""
    t = torch.from_numpy(np.ascontiguousarray(image).transpose(2, 0, 1)).contiguous().to(torch.float32).div(255)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return t.sub_(mean_t).div_(std_t)
