#!/usr/bin/env python
"""How far are the cached teacher targets from the online teacher's, on augmented training samples?

For N augmented samples (seeded draws of the training augmentation), the online teacher runs on the
augmented image itself; each store (v1 float16, v2 quantised) gives its stored canonical-frame maps warped
by the same augmentation. Reported per output, heatmap and tag channels apart, inside the valid region
(pixels the canonical frame covers): mean and max |cached - online|, and the same for v2 against v1 (the
quantisation alone). Tags are compared up to nothing: AE tags have no free shift within one image's run.

    python scripts/cached_vs_online.py --data runs/study/data --stores runs/study/teacher_cache \\
        runs/study/teacher_cache_v2 --samples 32
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from distill.data.coco import CocoKeypointDataset
from distill.models import load_model
from distill.teacher_cache.targets import CachedTeacher, OnlineTeacher

TEACHER = "teacher:higherhrnet_w16_synth:teachers/pretrained/higherhrnet_w16_synth.pt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="train2017")
    ap.add_argument("--stores", type=Path, nargs="+", required=True, help="teacher stores of that split")
    ap.add_argument("--teacher", default=TEACHER)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    size = args.input_size
    ds = CocoKeypointDataset(args.data, args.split, input_size=size, output_sizes=(size // 4, size // 2), augment=True)
    online = OnlineTeacher(load_model(args.teacher).eval())
    cached = {str(p): CachedTeacher(p) for p in args.stores}
    j = ds.num_joints
    sums: dict[tuple[str, int, str], list[np.ndarray]] = {}
    rng = np.random.default_rng(args.seed)
    for index in rng.choice(len(ds), size=min(args.samples, len(ds)), replace=False):
        sample = ds.make_sample(int(index))
        with torch.no_grad():
            ref = [o[0].numpy() for o in online.targets_for(sample.image[None])]
        per_store = {}
        for name, teacher in cached.items():
            maps, valid = teacher.targets_for_sample(sample, with_valid=True)
            per_store[name] = maps
            for k, (c, o, v) in enumerate(zip(maps, ref, valid)):
                v = np.asarray(v, bool)
                for part, sl in (("heatmaps", slice(0, j)), ("tags", slice(j, None))):
                    if c[sl].shape[0]:
                        sums.setdefault((name, k, part), []).append(np.abs(c[sl] - o[sl])[:, v].ravel())
        names = list(per_store)
        for other in names[1:]:
            for k, (a, b) in enumerate(zip(per_store[names[0]], per_store[other])):
                for part, sl in (("heatmaps", slice(0, j)), ("tags", slice(j, None))):
                    if a[sl].shape[0]:
                        sums.setdefault((f"{other} vs {names[0]}", k, part), []).append(np.abs(a[sl] - b[sl]).ravel())
    print(f"{args.samples} augmented samples of {args.data}/{args.split} at input {size}; |difference| inside the "
          "valid region (online = the teacher run on the augmented image)\n")
    print("| targets | output | channels | mean | max |\n|---|---:|---|---:|---:|")
    for (name, k, part), chunks in sums.items():
        d = np.concatenate(chunks)
        label = name if " vs " in name else f"{name} vs online"
        print(f"| {label} | {k} | {part} | {d.mean():.5f} | {d.max():.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
