"""The canonical frame an image's teacher maps are stored in (the official test resize) and its affines."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from distill.geometry import inference_resize
from distill.teacher_cache.layout import StoreError


@dataclass(frozen=True)
class CacheFrame:
    """Where an image sits in the cached maps (see the module docstring for the pixel convention)."""

    center: tuple[float, float]  # original-image pixels
    scale: tuple[float, float]  # (w, h) in 200-px units (official test convention)
    input_size: tuple[int, int]  # (w, h) of the teacher input
    affine: np.ndarray  # (2, 3) float64: original pixels -> input pixels

    def output_affine(self, map_w: int, map_h: int) -> np.ndarray:
        """(2, 3): original pixels -> pixels of an output map of (map_w, map_h) (a scaling of `affine`)."""
        in_w, in_h = self.input_size
        sx, sy = map_w / in_w, map_h / in_h
        if not math.isclose(sx, sy, rel_tol=1e-9):
            raise StoreError(f"output map {map_w}x{map_h} is not a uniform scaling of the input {in_w}x{in_h}")
        return self.affine * sx

    def to_json(self) -> dict[str, Any]:
        return {"center": [float(c) for c in self.center], "scale": [float(s) for s in self.scale],
                "input_size": [int(v) for v in self.input_size],
                "affine": [[float(v) for v in row] for row in np.asarray(self.affine)]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CacheFrame":
        return cls(center=tuple(d["center"]), scale=tuple(d["scale"]), input_size=tuple(d["input_size"]),
                   affine=np.asarray(d["affine"], dtype=np.float64))


def frame_from_resize(r: Any) -> CacheFrame:
    return CacheFrame(center=(float(r.center[0]), float(r.center[1])), scale=(float(r.scale[0]), float(r.scale[1])),
                      input_size=(int(r.size[0]), int(r.size[1])), affine=np.asarray(r.input_affine(), np.float64))


def canonical_frame(width: int, height: int, input_size: int) -> CacheFrame:
    """The frame an image of `width` x `height` is cached at (the official test resize to `input_size`)."""
    return frame_from_resize(inference_resize(int(width), int(height), int(input_size)))
