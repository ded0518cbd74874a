"""Realistic fake network outputs (heatmaps + AE tags) for decoder tests and benchmarks.

N people with J joints drawn as sigma=2 Gaussians, some joints missing, a few false blobs, low
noise everywhere, and per-person tags (with a small orig/flip offset when L = 2) smeared around
each joint like a trained model's tag maps.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def fake_outputs(
    height: int,
    width: int,
    num_people: int,
    num_joints: int = 17,
    tag_dim: int = 2,
    shared_tag: bool = False,
    seed: int = 0,
    p_missing: float = 0.15,
    num_false: int = 3,
    tag_gap: float = 1.5,
    noise: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Return heatmaps (1, J, H, W) and tags (1, J or 1, H, W, L), float32."""
    rng = np.random.default_rng(seed)
    heat = np.abs(rng.normal(0.0, noise, (num_joints, height, width))).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    person_tags = np.arange(num_people) * tag_gap + rng.uniform(-0.2, 0.2, num_people)
    # Background tags: smooth fields over the person-tag range, like a trained model's, plus grain.
    coarse = rng.uniform(-1.0, max(num_people, 1) * tag_gap, (num_joints, 1, 6, 8)).astype(np.float32)
    smooth = F.interpolate(torch.from_numpy(coarse), size=(height, width), mode="bilinear", align_corners=False)
    tags = (smooth[:, 0, :, :, None].numpy() + rng.normal(0.0, 0.02, (num_joints, height, width, 1)))
    tags = np.repeat(tags, tag_dim, axis=3).astype(np.float32)
    scale = min(height, width)

    def blob(j: int, cx: float, cy: float, peak: float, tag: np.ndarray) -> None:
        x0, x1 = max(int(cx) - 7, 0), min(int(cx) + 8, width)
        y0, y1 = max(int(cy) - 7, 0), min(int(cy) + 8, height)
        if x0 >= x1 or y0 >= y1:
            return
        g = peak * np.exp(-((xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2) / 8.0)
        heat[j, y0:y1, x0:x1] = np.maximum(heat[j, y0:y1, x0:x1], g)
        tags[j, y0:y1, x0:x1] = tag + rng.normal(0, 0.05, (y1 - y0, x1 - x0, tag_dim))

    for p in range(num_people):
        size = rng.uniform(0.1, 0.35) * scale
        cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
        tag = person_tags[p] + np.arange(tag_dim) * 0.05
        for j in range(num_joints):
            if rng.random() < p_missing:
                continue
            jx = cx + rng.uniform(-0.5, 0.5) * size
            jy = cy + (j / num_joints - 0.5) * size
            blob(j, jx, jy, rng.uniform(0.3, 1.0), tag)
    for _ in range(num_false):
        j = int(rng.integers(num_joints))
        fake_tag = rng.uniform(person_tags.min() - 1, person_tags.max() + 1) + np.zeros(tag_dim)
        blob(j, rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.12, 0.5), fake_tag)

    tag_maps = tags[:1] if shared_tag else tags
    return heat[None].astype(np.float32), tag_maps[None].astype(np.float32)
