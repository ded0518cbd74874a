#!/usr/bin/env python
"""How well do a model's AE tags separate people? Statistics at the ground-truth joints of val images.

For every non-crowd person with >= 2 labelled joints inside the input frame, the model's tag (no flip,
per-joint map of that joint) is read at each labelled joint: the spread of those values is the pull side;
the distances between the people's mean tags in one image are the push side (D-dim tags: L2 distances,
spread = root mean squared distance to the person's mean, which is the std for D = 1). The official
decoder starts a new person when a joint's tag is >= 1 away (tag_threshold 1), so pairs of people whose
mean tags are < 1 apart are the ones it is likely to merge.

The tag change one output pixel away (`--step-px`, 4 input px by default) from each GT joint, as the mean L2 distance
to its 8 neighbours at that step: the AE loss supervises only the GT pixel, the decoder reads the detected peak, so
a model whose tags change fast around a joint would group its own detections worse than its GT-joint tags suggest.

`--by-area` adds, per COCO area range (small < 32^2, medium, large >= 96^2), the median spread, the median gap
from each person to the nearest other person of its image and the median ratio of the two: a model can spread
all tags (a larger push) without separating people any better; the ratio is what the decoder sees.

    python scripts/tag_separation.py --model teacher:higherhrnet_w16_synth:teachers/pretrained/higherhrnet_w16_synth.pt \\
        --data runs/lc/heldout7 --input-size 256 --limit 40
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def neighbour_change(tags: np.ndarray, x: int, y: int, step: int) -> float | None:
    """Mean L2 distance between the D-dim tag at (y, x) of a (H, W, D) map and its 8 neighbours `step` px away;
    None when a neighbour falls outside the map."""
    h, w = tags.shape[:2]
    if not (step <= x < w - step and step <= y < h - step):
        return None
    centre = tags[y, x]
    dists = [float(np.linalg.norm(tags[y + dy, x + dx] - centre))
             for dy in (-step, 0, step) for dx in (-step, 0, step) if dx or dy]
    return float(np.mean(dists))


def person_tag_stats(model_text: str, data: Path, split: str, input_size: int, limit: int,
                     step_px: int = 4) -> dict[str, float]:
    from distill.data.coco import CocoKeypointDataset
    from distill.geometry import affine_transform
    from distill.models import load_model
    from distill.predict import Predictor

    ds = CocoKeypointDataset(data, split, remove_images_without_annotations=False, augment=False)
    pr = Predictor(load_model(model_text).eval(), ds.spec, input_size=input_size, flip=False, device="cpu")
    pr.predict_maps([ds.load_image(0)])  # resolves the output layout
    if not pr.layout.tag_per_joint:
        raise SystemExit("this statistic reads per-joint tag maps; the model has one shared map")
    spreads: list[float] = []
    gaps: list[float] = []
    changes: list[float] = []
    people: list[int] = []
    per_person: list[tuple[float, float, float]] = []  # (area, spread, gap to the nearest other person)
    for i in range(min(limit, len(ds))):
        _, tags, resize = pr.predict_maps([ds.load_image(i)])[0]
        t = tags[0].numpy()  # (T, H, W, D) at the input size
        h, w = t.shape[1:3]
        to_input = affine_transform(resize.center, resize.scale, (w, h))
        means, image_people = [], []
        for ann in ds.annotations(i):
            if ann.get("iscrowd") or not ann.get("num_keypoints"):
                continue
            kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            xy = kps[:, :2] @ to_input[:, :2].T + to_input[:, 2]
            inside = [(min(j, t.shape[0] - 1), int(round(x)), int(round(y))) for j, ((x, y), v) in
                      enumerate(zip(xy, kps[:, 2])) if v > 0 and 0 <= round(x) < w and 0 <= round(y) < h]
            vals = [t[m, yi, xi] for m, xi, yi in inside]
            changes += [c for m, xi, yi in inside if (c := neighbour_change(t[m], xi, yi, step_px)) is not None]
            if len(vals) >= 2:
                v = np.stack(vals)  # (joints, D)
                spreads.append(float(np.sqrt(((v - v.mean(0)) ** 2).sum(1).mean())))
                means.append(v.mean(0))
                image_people.append((float(ann.get("area", 0.0)), spreads[-1]))
        people.append(len(means))
        for k, (area, spread) in enumerate(image_people):
            others = [float(np.linalg.norm(means[k] - m)) for q, m in enumerate(means) if q != k]
            if others:
                per_person.append((area, spread, min(others)))
        gaps += [float(np.linalg.norm(a - b)) for k, a in enumerate(means) for b in means[k + 1:]]
    if not gaps:
        raise SystemExit("no image with two scorable people: nothing to measure")
    g = np.asarray(gaps)
    return {"images": float(len(people)), "people_per_image": float(np.mean(people)),
            "spread_median": float(np.median(spreads)), "spread_p90": float(np.percentile(spreads, 90)),
            "gap_median": float(np.median(g)), "gap_p10": float(np.percentile(g, 10)), "pairs": float(len(g)),
            "pairs_below_1": float((g < 1).mean()), "by_area": _by_area(per_person),
            "change_median": float(np.median(changes)) if changes else float("nan"),
            "change_p90": float(np.percentile(changes, 90)) if changes else float("nan")}


def _area_ranges() -> tuple[tuple[str, float, float], ...]:
    from distill.data.synthetic import MEDIUM_MAX_AREA, SMALL_MAX_AREA  # pycocotools' areaRng

    return (("small", 0.0, SMALL_MAX_AREA), ("medium", SMALL_MAX_AREA, MEDIUM_MAX_AREA),
            ("large", MEDIUM_MAX_AREA, float("inf")))


def _by_area(per_person: list[tuple[float, float, float]]) -> dict[str, dict[str, float]]:
    """Median spread, nearest-other gap and gap/spread ratio of the people in each COCO area range."""
    out = {}
    rows = np.asarray(per_person, dtype=np.float64).reshape(-1, 3)
    for name, lo, hi in _area_ranges():
        sel = rows[(rows[:, 0] >= lo) & (rows[:, 0] < hi)]
        if len(sel):
            out[name] = {"people": float(len(sel)), "spread_median": float(np.median(sel[:, 1])),
                         "nearest_gap_median": float(np.median(sel[:, 2])),
                         "ratio_median": float(np.median(sel[:, 2] / np.maximum(sel[:, 1], 1e-6)))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, action="append", help="KIND:NAME:CKPT (repeatable: one row each)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val2017")
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=40, help="first N images")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--by-area", action="store_true", help="also a table per COCO area range (see above)")
    ap.add_argument("--step-px", type=int, default=4,
                    help="input pixels between a GT joint and the neighbours its tag change is measured against")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| model | people/img | within-person tag spread (median / p90) | between-person gap (median / p10) "
          f"| person pairs < 1 apart | tag change {args.step_px} px away (median / p90) |\n|---|---:|---:|---:|---:|---:|")
    stats = {}
    for text in args.model:
        s = stats[text] = person_tag_stats(text, args.data, args.split, args.input_size, args.limit, args.step_px)
        print(f"| {text} | {s['people_per_image']:.2f} | {s['spread_median']:.3f} / {s['spread_p90']:.3f} | "
              f"{s['gap_median']:.3f} / {s['gap_p10']:.3f} | {s['pairs_below_1']:.2f} ({int(s['pairs'])} pairs) | "
              f"{s['change_median']:.3f} / {s['change_p90']:.3f} |")
    if args.by_area:
        print("\n| model | area | people | spread (median) | gap to the nearest other person (median) | gap / spread "
              "(median) |\n|---|---|---:|---:|---:|---:|")
        for text, s in stats.items():
            for area, a in s["by_area"].items():
                print(f"| {text} | {area} | {int(a['people'])} | {a['spread_median']:.3f} | "
                      f"{a['nearest_gap_median']:.3f} | {a['ratio_median']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
