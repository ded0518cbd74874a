#!/usr/bin/env python
"""AP by scene difficulty: how crowding and occlusion cost a model, measured on one set of predictions.

The network runs once over the split (official test path: flip test, official decoding); COCOeval then scores
the same detections over subsets of the images: by the number of people with keypoints in the image (1, 2, 3,
4, 5+: crowding, where the tags must keep people apart) and by the fraction of labelled joints that are
occluded (v=1). Every row shares the predictions, so rows differ only in which scenes they hold. This answers
the dataset-difficulty question without training on easier data: if one-person images score far above the
rest, grouping across people is the limit, not detection.

    python scripts/ap_by_scene.py --model teacher:higherhrnet_w16_synth:teachers/pretrained/higherhrnet_w16_synth.pt \\
        --data runs/lc/heldout7 --input-size 256 [--limit 100] [--out table.json]
"""
from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

PEOPLE_BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("1 person", 1, 1), ("2 people", 2, 2), ("3 people", 3, 3), ("4 people", 4, 4), ("5+ people", 5, 10**9))
OCCLUSION_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("no occluded joint", 0.0, 0.0), ("occluded joints <= 15%", 1e-12, 0.15), ("occluded joints > 15%", 0.15 + 1e-12, 1.0))


def scene_counts(dataset: dict[str, Any]) -> dict[int, tuple[int, int, int]]:
    """image id -> (people, labelled joints, occluded joints) over its scorable people.

    Scorable = non-crowd annotations with num_keypoints > 0, as COCOeval('keypoints') counts them; images
    without one are absent.
    """
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for ann in dataset.get("annotations", []):
        if ann.get("iscrowd", 0) or ann.get("num_keypoints", 0) <= 0:
            continue
        vis = ann["keypoints"][2::3]
        c = counts[ann["image_id"]]
        c[0] += 1
        c[1] += sum(1 for v in vis if v > 0)
        c[2] += sum(1 for v in vis if v == 1)
    return {i: (c[0], c[1], c[2]) for i, c in counts.items()}


def scene_buckets(dataset: dict[str, Any]) -> dict[str, list[int]]:
    """Image ids per scene bucket, in the dataset's image order.

    "all images" is every image (the split's AP as `evaluate_model` scores it); the buckets hold only images
    with a scorable person, so a false positive on an empty image counts in the first row only.
    """
    counts = scene_counts(dataset)
    ids = [img["id"] for img in dataset.get("images", []) if img["id"] in counts]
    out: dict[str, list[int]] = {"all images": [img["id"] for img in dataset.get("images", [])]}
    for name, lo, hi in PEOPLE_BUCKETS:
        out[name] = [i for i in ids if lo <= counts[i][0] <= hi]
    for name, lo, hi in OCCLUSION_BUCKETS:
        out[name] = [i for i in ids if lo <= counts[i][2] / counts[i][1] <= hi]
    return out


def bucket_table(ann_file: str | Path, dataset: dict[str, Any], results: list[dict[str, Any]],
                 evaluated: list[int], keypoint_names: list[str] | None = None) -> list[dict[str, Any]]:
    """COCOeval stats of the same `results` over each scene bucket (restricted to the `evaluated` images)."""
    from distill.evaluate import coco_keypoint_eval

    counts = scene_counts(dataset)
    keep = set(evaluated)
    rows: list[dict[str, Any]] = []
    for name, ids in scene_buckets(dataset).items():
        ids = [i for i in ids if i in keep]
        row: dict[str, Any] = {"scenes": name, "images": len(ids), "people": sum(counts.get(i, (0,))[0] for i in ids)}
        if ids:
            row.update(coco_keypoint_eval(ann_file, results, image_ids=ids, keypoint_names=keypoint_names))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="KIND:NAME[:CKPT]")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val2017")
    ap.add_argument("--input-size", type=int, default=512)
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    args = ap.parse_args(argv)
    import torch

    from distill.atomic import write_json_atomic
    from distill.codec.decode import decode_mode
    from distill.data.coco import CocoKeypointDataset
    from distill.evaluate import load_results
    from distill.models import load_model
    from distill.predict import Predictor, evaluate_model

    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    ds = CocoKeypointDataset(args.data, args.split, remove_images_without_annotations=False, augment=False)
    predictor = Predictor(model, ds.spec, input_size=args.input_size, **decode_mode("official"))
    indices = list(range(len(ds) if args.limit is None else min(args.limit, len(ds))))
    with tempfile.TemporaryDirectory() as tmp:  # the project's evaluation loop; its detections are rescored below
        evaluate_model(predictor, args.data, args.split, limit=args.limit, results_file=Path(tmp) / "results.json",
                       show_progress=not args.no_progress)
        results = load_results(Path(tmp) / "results.json")
    rows = bucket_table(ds.annotation_file, ds.coco.dataset, results, [ds.ids[i] for i in indices],
                        list(ds.spec.names))
    print(f"{args.model} on {args.data} ({len(indices)} images, flip test, official decoding)")
    print("| scenes | images | people | AP | AP50 | APm | APl | AR |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["images"] == 0:
            print(f"| {r['scenes']} | 0 | 0 | - | - | - | - | - |")
        else:
            print(f"| {r['scenes']} | {r['images']} | {r['people']} | {r['AP']:.3f} | {r['AP50']:.3f} | "
                  f"{r['APm']:.3f} | {r['APl']:.3f} | {r['AR']:.3f} |")
    if args.out:
        write_json_atomic(args.out, {"model": args.model, "data": str(args.data), "split": args.split,
                                     "images": len(indices), "input_size": args.input_size, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
