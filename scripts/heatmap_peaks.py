#!/usr/bin/env python
"""What is wrong with a model's heatmaps? Peaks against the ground-truth joints of val images.

The decoder reads every local maximum above a threshold as a candidate joint, so a heatmap can fail in three
ways this script counts separately, per model (flip test, maps at the input size, as the decoder sees them):

* **weak**: the highest value near a GT joint (within `--near` input px) is low, so the joint ranks low or is
  dropped (median and 10th percentile over the GT joints);
* **missed / sloppy**: no peak within `--near` px of a GT joint (the share of GT joints), and the distance from
  each GT joint to the nearest peak of its joint type (median);
* **spurious**: peaks with no GT joint of their type within `--near` px, per image, split by what they sit on:
  the *mirror* joint (a left wrist peak on a right wrist), *another joint* of the person, or *background*.

Peaks: values above `--threshold` (the official decoder's detection threshold, 0.1) that are the maximum of their
5x5 neighbourhood (its NMS kernel at the input size).

    python scripts/heatmap_peaks.py --data runs/study8/data --limit 40 \\
        --model teacher:higherhrnet_w16_synth:teachers/pretrained/higherhrnet_w16_synth.pt \\
        --model student:step_s:runs/demo/step_s/model.pt
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.codec.decode import DecodeParams, nms  # noqa: E402
from distill.codec.matching import MatchParams  # noqa: E402

NMS_KERNEL = DecodeParams().nms_kernel                     # the decoder's peak window (5)
DETECTION_THRESHOLD = MatchParams().detection_threshold    # the decoder's threshold (0.1)


@dataclass
class PeakCounts:
    """Accumulated over images; `summary()` turns it into the table's numbers."""

    images: int = 0
    heights: list[float] = field(default_factory=list)     # max value within `near` of each GT joint
    nearest: list[float] = field(default_factory=list)     # distance from each GT joint to its type's nearest peak
    missed: int = 0                                        # GT joints with no peak of their type within `near`
    mirror: int = 0
    other_joint: int = 0
    background: int = 0

    def summary(self) -> dict[str, float]:
        n = max(len(self.heights), 1)
        per_image = max(self.images, 1)
        finite = [d for d in self.nearest if np.isfinite(d)]
        return {
            "gt_joints": len(self.heights),
            "height_median": float(np.median(self.heights)) if self.heights else float("nan"),
            "height_p10": float(np.percentile(self.heights, 10)) if self.heights else float("nan"),
            "missed": self.missed / n,
            "nearest_median": float(np.median(finite)) if finite else float("nan"),
            "spurious_mirror": self.mirror / per_image,
            "spurious_other_joint": self.other_joint / per_image,
            "spurious_background": self.background / per_image,
        }


def find_peaks(heat: torch.Tensor, threshold: float) -> list[np.ndarray]:
    """Per joint, the (N, 2) x, y of the values above `threshold` that are the maximum of their window (the
    decoder's own NMS)."""
    kept = nms(heat.float().numpy(), NMS_KERNEL)
    return [np.argwhere(k > threshold)[:, ::-1].astype(np.float64) for k in kept]


def _min_dist(points: np.ndarray, to: np.ndarray) -> np.ndarray:
    """For each of `points` (N, 2) the distance to the nearest of `to` (M, 2); inf when M = 0."""
    if len(to) == 0:
        return np.full(len(points), np.inf)
    return np.sqrt(((points[:, None, :] - to[None, :, :]) ** 2).sum(-1)).min(axis=1)


def count_image(counts: PeakCounts, heat: torch.Tensor, gt: Sequence[np.ndarray], flip_index: Sequence[int],
                threshold: float, near: float) -> None:
    """Add one image: `heat` (J, H, W), `gt[j]` the (N_j, 2) input-frame x, y of the visible GT joints of type j."""
    peaks = find_peaks(heat.float(), threshold)
    h, w = heat.shape[-2:]
    r = int(np.ceil(near))
    all_gt = np.concatenate([g for g in gt if len(g)] or [np.zeros((0, 2))])
    for j, (joint_peaks, joint_gt) in enumerate(zip(peaks, gt)):
        for x, y in joint_gt:
            xi, yi = int(round(x)), int(round(y))
            box = heat[j, max(0, yi - r): min(h, yi + r + 1), max(0, xi - r): min(w, xi + r + 1)]
            counts.heights.append(float(box.max()) if box.numel() else 0.0)
        d = _min_dist(np.asarray(joint_gt, dtype=np.float64).reshape(-1, 2), joint_peaks)
        counts.nearest += d.tolist()
        counts.missed += int((d > near).sum())
        spurious = joint_peaks[_min_dist(joint_peaks, np.asarray(joint_gt).reshape(-1, 2)) > near]
        if not len(spurious):
            continue
        partner = flip_index[j]
        on_mirror = (_min_dist(spurious, np.asarray(gt[partner]).reshape(-1, 2)) <= near if partner != j
                     else np.zeros(len(spurious), dtype=bool))
        on_joint = _min_dist(spurious, all_gt) <= near
        counts.mirror += int(on_mirror.sum())
        counts.other_joint += int((on_joint & ~on_mirror).sum())
        counts.background += int((~on_joint).sum())
    counts.images += 1


def gt_in_input_frame(anns: list[dict], num_joints: int, to_input: np.ndarray, w: int, h: int) -> list[np.ndarray]:
    """Per joint type, the visible (v > 0) non-crowd GT joints mapped into the input frame and inside it."""
    out: list[list[tuple[float, float]]] = [[] for _ in range(num_joints)]
    for ann in anns:
        if ann.get("iscrowd") or not ann.get("num_keypoints"):
            continue
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        xy = kps[:, :2] @ to_input[:, :2].T + to_input[:, 2]
        for j, ((x, y), v) in enumerate(zip(xy, kps[:, 2])):
            if v > 0 and 0 <= x < w and 0 <= y < h:
                out[j].append((float(x), float(y)))
    return [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in out]


def model_peaks(model_text: str, data: Path, split: str, input_size: int, limit: int, threshold: float,
                near: float) -> dict[str, float]:
    from distill.data.coco import CocoKeypointDataset
    from distill.geometry import affine_transform
    from distill.models import load_model
    from distill.predict import Predictor
    from distill.progress import progress

    ds = CocoKeypointDataset(data, split, remove_images_without_annotations=False, augment=False)
    pr = Predictor(load_model(model_text).eval(), ds.spec, input_size=input_size, flip=True, device="cpu")
    counts = PeakCounts()
    for i in progress(range(min(limit, len(ds))), desc=model_text.split(":")[1], unit="img"):
        heat, _, resize = pr.predict_maps([ds.load_image(i)])[0]
        heat = heat[0] if heat.dim() == 4 else heat
        h, w = heat.shape[-2:]
        to_input = affine_transform(resize.center, resize.scale, (w, h))
        gt = gt_in_input_frame(ds.annotations(i), ds.spec.num_joints, to_input, w, h)
        count_image(counts, heat, gt, ds.spec.flip_index, threshold, near)
    return counts.summary()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="KIND:NAME:CKPT (repeatable)")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--split", default="val2017")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=40, help="first N images")
    p.add_argument("--threshold", type=float, default=DETECTION_THRESHOLD,
                   help="peak threshold (default: the decoder's detection threshold)")
    p.add_argument("--near", type=float, default=8.0, help="input px within which a peak belongs to a GT joint")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.data} {args.split}, first {args.limit} images, input {args.input_size}, flip test; peaks > "
          f"{args.threshold} (5x5 maxima), near = {args.near} input px\n")
    print("| model | GT joints | height at GT (median / p10) | GT joints with no peak near | nearest peak (median px) "
          "| spurious peaks / image: mirror / other joint / background |")
    print("|---|---:|---|---:|---:|---|")
    for text in args.model:
        s = model_peaks(text, args.data, args.split, args.input_size, args.limit, args.threshold, args.near)
        print(f"| {text} | {s['gt_joints']} | {s['height_median']:.3f} / {s['height_p10']:.3f} | {s['missed']:.3f} "
              f"| {s['nearest_median']:.2f} | {s['spurious_mirror']:.1f} / {s['spurious_other_joint']:.1f} / "
              f"{s['spurious_background']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
