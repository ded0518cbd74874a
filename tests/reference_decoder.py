"""Slow, literal decoder: the official parser's algorithm written the obvious way.

It exists to check the fast decoder on random inputs and as the baseline of
`scripts/bench_grouping.py`: per-joint Python loops in `adjust`, and a full-map numpy pass over all
joints of every person in `refine`, exactly as the official parser does. Do not use it for work.
"""
from __future__ import annotations

import numpy as np
import torch

from distill.codec.decode import DecodedImage, DecodeParams
from distill.codec.matching import match_by_tag


def _adjust_loop(people: np.ndarray, det: np.ndarray) -> np.ndarray:
    for person in people:
        for joint_id, joint in enumerate(person):
            if joint[2] <= 0:
                continue
            x, y = joint[0], joint[1]
            col, row = int(x), int(y)
            hm = det[joint_id]
            x += 0.25 if hm[row, min(col + 1, hm.shape[1] - 1)] > hm[row, max(col - 1, 0)] else -0.25
            y += 0.25 if hm[min(row + 1, hm.shape[0] - 1), col] > hm[max(row - 1, 0), col] else -0.25
            person[joint_id, 0:2] = (x + 0.5, y + 0.5)
    return people


def _refine_person(det: np.ndarray, tag: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """det (J,H,W), tag (J,H,W,L), keypoints (J, 3+L): the official per-person refine."""
    detected = []
    for j in range(keypoints.shape[0]):
        if keypoints[j, 2] > 0:
            x, y = keypoints[j][:2].astype(np.int32)
            detected.append(tag[j, y, x])
    mean_tag = np.mean(detected, axis=0)
    found = []
    for j in range(keypoints.shape[0]):
        hm = det[j]
        dist = ((tag[j] - mean_tag[None, None, :]) ** 2).sum(axis=2) ** 0.5
        y, x = np.unravel_index(np.argmax(hm - np.round(dist)), hm.shape)
        val = hm[y, x]
        fx = x + 0.5 + (0.25 if hm[y, min(x + 1, hm.shape[1] - 1)] > hm[y, max(x - 1, 0)] else -0.25)
        fy = y + 0.5 + (0.25 if hm[min(y + 1, hm.shape[0] - 1), x] > hm[max(0, y - 1), x] else -0.25)
        found.append((fx, fy, val))
    for j, (fx, fy, val) in enumerate(found):
        if val > 0 and keypoints[j, 2] == 0:
            keypoints[j, :3] = (fx, fy, val)
    return keypoints


def reference_decode(heatmaps: torch.Tensor, tags: torch.Tensor, params: DecodeParams | None = None) -> list[DecodedImage]:
    """Same contract as `distill.codec.decode.decode`, computed the slow way (CPU)."""
    params = params or DecodeParams()
    det = torch.as_tensor(heatmaps).float().cpu()
    tag = torch.as_tensor(tags).float().cpu()
    if tag.dim() == 4:
        tag = tag[..., None]
    b, j, h, w = det.shape
    pooled = torch.nn.functional.max_pool2d(det, params.nms_kernel, 1, (params.nms_kernel - 1) // 2)
    peaks = (det * (pooled == det)).reshape(b, j, h * w)
    val_k, ind = peaks.topk(params.match.max_num_people, dim=2)
    flat = tag.reshape(b, tag.shape[1], h * w, tag.shape[-1]).expand(b, j, h * w, tag.shape[-1])
    tag_k = torch.stack([torch.gather(flat[..., d], 2, ind) for d in range(tag.shape[-1])], dim=3)
    loc_k = torch.stack((ind % w, ind // w), dim=3)

    results = []
    for i in range(b):
        people = match_by_tag(tag_k[i].numpy(), loc_k[i].numpy(), val_k[i].numpy(), params.match)
        det_np = det[i].numpy()
        if params.adjust:
            people = _adjust_loop(people, det_np)
        scores = np.array([p[:, 2].mean() for p in people], dtype=np.float32)
        if params.refine:
            tag_np = tag[i].numpy()
            if tag_np.shape[0] == 1:
                tag_np = np.tile(tag_np, (j, 1, 1, 1))
            for p in range(len(people)):
                people[p] = _refine_person(det_np, tag_np, people[p])
        results.append(DecodedImage(people=people, scores=scores))
    return results
