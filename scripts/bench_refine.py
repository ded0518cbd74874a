#!/usr/bin/env python
"""Refine's argmax (filling the joints grouping missed): the block branch and bound against the literal dense
scoring, on a real model's maps, in the same run.

A weak student leaves most joints of its candidate people missing (the demo's `step_s`: about 850 per val image),
and official decoding fills each one from the whole map, so this step can dominate its end-to-end time. The script
runs `distill.predict.Predictor` (flip test, official decoding) over --images val images of --data, keeps every
call's (people, heatmaps, tags), then times `refine_argmax` and the dense scoring of every pixel for every missing
joint (the official expression), checks that both give the same pixel for every query, and prints ms per image.

    python scripts/bench_refine.py --model student:step_s:runs/demo/step_s/model.pt --data runs/demo/data
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def queries(people: np.ndarray, tags: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(joint, centres) of refine's searches for one image, grouped by joint as `refine` runs them."""
    from distill.codec.decode import refine_queries

    _, miss_joint, centres = refine_queries(people, tags)
    return [(int(j), centres[miss_joint == j]) for j in np.unique(miss_joint)]


def capture(model_spec: str, data: Path, split: str, images: int, input_size: int) -> list[tuple]:
    """Every refine call's inputs while the Predictor decodes the first `images` images."""
    import torch

    import distill.codec.decode as decode_module
    from distill.codec.decode import decode_mode
    from distill.data.coco import CocoKeypointDataset
    from distill.models import load_model
    from distill.predict import Predictor, read_image

    torch.set_num_threads(1)
    calls: list[tuple] = []
    original = decode_module.refine

    def recording(people, det, tags, threads=1, subpixel="quarter"):
        calls.append((people.copy(), det.copy(), tags.copy()))
        return original(people, det, tags, threads, subpixel)

    decode_module.refine = recording
    try:
        ds = CocoKeypointDataset(data, split, remove_images_without_annotations=False, augment=False)
        predictor = Predictor(load_model(model_spec).eval(), ds.spec, input_size=input_size, **decode_mode("official"))
        for i in range(min(images, len(ds))):
            predictor(read_image(ds.image_path(i)))
    finally:
        decode_module.refine = original
    return calls


def det_shape(calls: list[tuple]) -> str:
    shapes = sorted({tuple(det.shape[1:]) for _, det, _ in calls})
    return ", ".join(f"{h}x{w}" for h, w in shapes[:3]) + (" ..." if len(shapes) > 3 else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="teacher:NAME:PT or student:NAME:PT (as in distill bench)")
    ap.add_argument("--data", type=Path, required=True, help="a COCO-layout root (e.g. the demo's runs/demo/data)")
    ap.add_argument("--split", default="val2017")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over all images (median reported)")
    args = ap.parse_args(argv)

    from distill.codec.decode import _dense_refine_argmax, refine_argmax

    calls = capture(args.model, args.data, args.split, args.images, args.input_size)
    jobs = [(det, tags, joint, centres) for people, det, tags in calls for joint, centres in queries(people, tags)]
    n_images = max(1, len(calls))
    n_queries = sum(len(c) for *_, c in jobs)
    print(f"{args.model}: {len(calls)} images, {n_queries / n_images:.0f} missing joints per image "
          f"({det_shape(calls)} maps)")

    def fast() -> list[np.ndarray]:
        return [refine_argmax(det, tags, joint, c) for det, tags, joint, c in jobs]

    def dense() -> list[np.ndarray]:
        return [_dense_refine_argmax(det[joint], tags[0 if tags.shape[0] == 1 else joint], c)
                for det, tags, joint, c in jobs]

    timings = {}
    answers = {}
    for name, fn in (("block branch and bound", fast), ("dense (every pixel)", dense)):
        runs = []
        for _ in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            answers[name] = fn()
            runs.append((time.perf_counter() - t0) * 1000 / n_images)
        timings[name] = statistics.median(runs)
    same = all(np.array_equal(a, b) for a, b in zip(*answers.values()))
    print("| refine argmax | ms per image (median) |")
    print("|---|---:|")
    for name, ms in timings.items():
        print(f"| {name} | {ms:.1f} |")
    ratio = timings["dense (every pixel)"] / timings["block branch and bound"]
    print(f"speed-up {ratio:.1f}x; identical pixels for all {n_queries} queries: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
