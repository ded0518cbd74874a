#!/usr/bin/env python
"""Decoding options measured on a model's real maps: AP of every decode variant on the same network outputs.

The network runs once per image (official test path: resize, flip test, projection to the input size);
its maps are kept and decoded with each variant (`VARIANTS`: the official parser, the `improved` preset,
and the preset with one option switched back at a time), so the rows differ only in decoding. Decode time
per image is reported per variant.

    python scripts/compare_decoding.py --model teacher:higherhrnet_w16_synth:teachers/pretrained/higherhrnet_w16_synth.pt \\
        --data runs/lc/heldout7 --input-size 256 [--limit 100] [--variants official improved ...] [--out table.json]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from distill.atomic import write_json_atomic
from distill.codec.decode import decode_mode
from distill.data.coco import CocoKeypointDataset
from distill.evaluate import coco_keypoint_eval
from distill.models import load_model
from distill.predict import Predictor
from distill.progress import progress

IMPROVED = decode_mode("improved")  # Predictor kwargs: DecodeParams overrides + project
# name -> Predictor keyword arguments (DecodeParams overrides, `match` overrides, `project`)
VARIANTS: dict[str, dict[str, Any]] = {
    "official": decode_mode("official"),
    "improved": IMPROVED,
    # the preset with one option changed at a time
    "improved, projected (input size)": {**IMPROVED, "project": True},
    "improved - dedup": {**IMPROVED, "dedup": False},
    "improved, subpixel quarter": {**IMPROVED, "subpixel": "quarter"},
    "improved + grow_limits": {**IMPROVED, "grow_limits": True},
    "improved + person_nms 0.9": {**IMPROVED, "person_nms": 0.9},
    "improved + person_nms 0.7": {**IMPROVED, "person_nms": 0.7},
    "improved, tag threshold 0.75": {**IMPROVED, "match": {"tag_threshold": 0.75}},
    "improved, tag threshold 0.5": {**IMPROVED, "match": {"tag_threshold": 0.5}},
    # official with one option added
    "official at heatmap resolution": {"project": False},
    "official + dedup": {"ties": "index", "dedup": True},
    "official + dark": {"subpixel": "dark"},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="KIND:NAME[:CKPT]")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val2017")
    ap.add_argument("--input-size", type=int, default=512)
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    ds = CocoKeypointDataset(args.data, args.split, remove_images_without_annotations=False, augment=False)
    predictor = Predictor(model, ds.spec, input_size=args.input_size)
    indices = list(range(len(ds) if args.limit is None else min(args.limit, len(ds))))
    maps = {True: [predictor.predict_maps([ds.load_image(i)])[0]
                   for i in progress(indices, desc="network", unit="img")]}
    if any(VARIANTS[name].get("project") is False for name in args.variants):
        unprojected = Predictor(model, ds.spec, input_size=args.input_size, project=False)
        maps[False] = [unprojected.predict_maps([ds.load_image(i)])[0]
                       for i in progress(indices, desc="network (unprojected)", unit="img")]
    rows = []
    for name in args.variants:
        overrides = dict(VARIANTS[name])
        project = overrides.pop("project", True)
        decoder = Predictor(model, ds.spec, input_size=args.input_size, layout=predictor.layout, **overrides)
        results: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for i, (heat, tags, resize) in zip(indices, maps[project]):
            results += decoder.decode_maps(heat, tags, resize).to_results(ds.ids[i], ds.category_id)
        ms = (time.perf_counter() - t0) * 1000 / max(1, len(indices))
        stats = coco_keypoint_eval(ds.annotation_file, results, image_ids=[ds.ids[i] for i in indices],
                                   keypoint_names=list(ds.spec.names))
        rows.append({"variant": name, "overrides": VARIANTS[name], "decode_ms": ms, **stats})
        print(f"{name:30s} AP {stats['AP']:.4f} AP50 {stats['AP50']:.4f} AR {stats['AR']:.4f} "
              f"APm {stats['APm']:.4f} APl {stats['APl']:.4f} {ms:7.1f} ms/img", flush=True)
    if args.out:
        write_json_atomic(args.out, {"model": args.model, "data": str(args.data), "split": args.split,
                                     "images": len(indices), "input_size": args.input_size, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
