"""Test-time geometry: the official resize to a multiple of 64 and its inverse for predictions.

Conventions follow the official HigherHRNet test code: `center` is the rounded image centre,
`scale` is (w, h) in 200-pixel units of the region mapped onto the network input, and the affine
is built from three float32 point pairs (so the matrix matches the official one to 1e-12).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class InferenceResize:
    """How one image is resized for the network, and how to map predictions back."""

    size: tuple[int, int]  # (w, h) of the network input
    center: np.ndarray  # (2,) int64, original image pixels
    scale: np.ndarray  # (2,) float64, 200-px units

    def input_affine(self) -> np.ndarray:
        return affine_transform(self.center, self.scale, self.size)

    def to_image(self, coords: np.ndarray, map_size: tuple[int, int] | None = None) -> np.ndarray:
        """Map (..., 2+) x,y from a (w, h) map frame (default: the input frame) to image pixels."""
        return transform_preds(coords, self.center, self.scale, map_size or self.size)


def inference_resize(width: int, height: int, input_size: int, current_scale: float = 1.0, min_scale: float = 1.0) -> InferenceResize:
    """Official `get_multi_scale_size`: short side -> input_size*scale, long side rounded up to x64."""
    center = np.array([int(width / 2.0 + 0.5), int(height / 2.0 + 0.5)])
    min_input = int((min_scale * input_size + 63) // 64 * 64)
    if width < height:
        w_resized = int(min_input * current_scale / min_scale)
        h_resized = int(int((min_input / width * height + 63) // 64 * 64) * current_scale / min_scale)
        scale_w = width / 200.0
        scale_h = h_resized / w_resized * width / 200.0
    else:
        h_resized = int(min_input * current_scale / min_scale)
        w_resized = int(int((min_input / height * width + 63) // 64 * 64) * current_scale / min_scale)
        scale_h = height / 200.0
        scale_w = w_resized / h_resized * height / 200.0
    return InferenceResize((w_resized, h_resized), center, np.array([scale_w, scale_h]))


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def affine_transform(center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int],
                     rot_deg: float = 0.0, inverse: bool = False) -> np.ndarray:
    """2x3 matrix taking the region (center, scale*200) to an output of (w, h) pixels (or back)."""
    scale_px = np.asarray(scale, dtype=np.float64) * 200.0
    dst_w, dst_h = output_size
    rot = math.pi * rot_deg / 180.0
    sn, cs = math.sin(rot), math.cos(rot)
    src_dir = np.array([0 * cs - (scale_px[0] * -0.5) * sn, 0 * sn + (scale_px[0] * -0.5) * cs])
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + src_dir
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0, dst_w * -0.5], np.float32)
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def transform_preds(coords: np.ndarray, center: np.ndarray, scale: np.ndarray, map_size: tuple[int, int]) -> np.ndarray:
    """Map x,y columns of (..., C>=2) from a (w, h) map frame back to original image pixels."""
    inv = affine_transform(center, scale, map_size, inverse=True)
    out = np.array(coords, copy=True)
    xy = out[..., :2].astype(np.float64)
    out[..., :2] = xy @ inv[:, :2].T + inv[:, 2]
    return out


def resize_for_test(image: np.ndarray, input_size: int, current_scale: float = 1.0,
                    min_scale: float = 1.0) -> tuple[np.ndarray, InferenceResize]:
    """Official `resize_align_multi_scale`: warp an RGB/BGR image to the test input."""
    h, w = image.shape[:2]
    resize = inference_resize(w, h, input_size, current_scale, min_scale)
    return cv2.warpAffine(image, resize.input_affine(), resize.size), resize
