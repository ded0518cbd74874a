#!/usr/bin/env python
"""Teacher targets, online vs cached: store size, build throughput, time per augmented batch, and how far the
cached (warped) maps are from running the teacher on the augmented batch.

Usage:  python scripts/bench_teacher_cache.py [--data ROOT] [--teacher tiny] [--weights PTH | --random-init]
                                              [--input-size 512] [--batch-size 8] [--images N] [--batches 6]

Data: coco-mini train2017 when ../shared is present, else a small synthetic dataset in a temp dir. Teacher:
`tiny` with the shared official tiny weights when present (else random init); `--teacher higherhrnet_w32_512
--random-init` for the real architecture's cost. The store is built in a temp dir (or --out).

Timing: "online" is the teacher forward on the augmented batch (what training would pay per step);
"cached" is `CachedTeacher.targets_for` (read float16 maps by memmap + cv2.warpAffine + flip/permute per
sample) for the same batch; the data pipeline itself (augmentation + GT targets) is shown for scale.
The difference columns compare the two target sets on the same augmented samples: all pixels, and only
pixels inside the cached frame (outside it the cached maps are 0 while the online teacher still answers).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.data.coco import CocoKeypointDataset  # noqa: E402
from distill.teacher_cache import TeacherStore, build_store, weights_identity  # noqa: E402
from distill.teacher_cache.targets import AugMetaDataset, CachedTeacher, OnlineTeacher  # noqa: E402
from teachers import build_teacher, get_teacher_config  # noqa: E402
from teachers.checkpoint import load_checkpoint  # noqa: E402

SHARED = Path(os.environ.get("AEDISTILL_SHARED", REPO.parent / "shared"))
COCO_MINI = SHARED / "data" / "coco-mini"
TINY_WEIGHTS = SHARED / "reference" / "higherhrnet" / "tiny" / "state_dict.pt"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="COCO-format root (default: coco-mini, else synthetic)")
    ap.add_argument("--split", default="train2017")
    ap.add_argument("--teacher", default="tiny")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--input-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--images", type=int, default=0, help="cache only the first N images (0: all)")
    ap.add_argument("--batches", type=int, default=6, help="augmented batches for the online/cached comparison")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=None, help="store folder (default: a temp dir, deleted)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory(prefix="bench_teacher_cache_")
    if args.data:
        data, data_desc = Path(args.data), args.data
    elif (COCO_MINI / "annotations" / f"person_keypoints_{args.split}.json").is_file():
        data, data_desc = COCO_MINI, f"coco-mini {args.split}"
    else:
        from distill.data.synthetic import generate_dataset

        data = Path(tmp.name) / "synth"
        generate_dataset(data, seed=0, num_train=24, num_val=0, image_size=512, progress=False)
        data_desc = "synthetic (24 images, 512 px; coco-mini not found)"

    cfg = get_teacher_config(args.teacher)
    weights_path = args.weights
    if not args.random_init and weights_path is None and cfg.name == "tiny" and TINY_WEIGHTS.is_file():
        weights_path = str(TINY_WEIGHTS)
    random_init = args.random_init or weights_path is None
    torch.manual_seed(0)
    model = build_teacher(cfg)
    if not random_init:
        load_checkpoint(model, weights_path)
    model.eval()
    weights = weights_identity(model, None if random_init else weights_path, random_init, 0 if random_init else None)

    S = args.input_size
    ds = CocoKeypointDataset(data, args.split, input_size=S, output_sizes=(S // 4, S // 2))
    if args.images:
        ds.ids = ds.ids[: args.images]
    out = Path(args.out) if args.out else Path(tmp.name) / "store"

    print(f"data: {data_desc}, {len(ds)} images with persons; teacher {cfg.name or args.teacher} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params), "
          f"weights: {'RANDOM INIT' if random_init else weights_path}; input {S}; torch threads {torch.get_num_threads()}")
    if random_init or cfg.name == "tiny":
        print("NOTE: with random (or the tiny parity-test) weights the teacher is not a trained pose model: the "
              "cached-vs-online differences below say nothing about a trained teacher's maps.")

    # ---- build
    s = build_store(out, model, ds, teacher_cfg=cfg, weights=weights, input_size=S, batch_size=args.batch_size,
                    shard_size=32, workers=0, show_progress=False)
    store = TeacherStore(out, verify="sha256")
    sizes = {}
    for image_id in store.ids:
        e = store.entry(image_id)
        sizes.setdefault(tuple(e["frame"]["input_size"]), 0)
        sizes[tuple(e["frame"]["input_size"])] += 1
    per_out = [sum(int(np.prod(store.entry(i)["shapes"][k])) * 2 for i in store.ids) / len(store) for k in range(len(store.outputs))]
    print()
    print("| store | value |")
    print("|---|---|")
    print(f"| images | {len(store)} ({', '.join(f'{w}x{h}: {n}' for (w, h), n in sorted(sizes.items(), key=lambda t: -t[1]))}) |")
    print(f"| bytes / image (all files) | {store.nbytes() / len(store) / 2**20:.2f} MiB |")
    for k, o in enumerate(store.outputs):
        print(f"| bytes / image, output {k} (1/{o['stride']}, {o['channels']} ch) | {per_out[k] / 2**20:.2f} MiB |")
    print(f"| build throughput (load + resize + forward + write) | {s.images_per_second:.2f} images/s |")
    print(f"| teacher forward only | {s.images_computed / s.forward_seconds:.2f} images/s |")

    # ---- online vs cached on augmented batches
    online = OnlineTeacher(model)
    cached = CachedTeacher(store, expect_teacher=cfg, expect_input_size=S)
    loader = torch.utils.data.DataLoader(AugMetaDataset(ds), batch_size=args.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0), num_workers=0)
    t_data, t_on, t_ca, n = [], [], [], 0
    names = []
    for k, o in enumerate(store.outputs):
        names.append((k, f"out{k} 1/{o['stride']} heatmaps", slice(0, o["heatmaps"])))
        if o["tags"]:
            names.append((k, f"out{k} 1/{o['stride']} tags", slice(o["heatmaps"], o["channels"])))
    acc = {name: {"abs": [], "abs_in": [], "max": 0.0, "max_in": 0.0, "ref": []} for _, name, _ in names}
    it = iter(loader)
    for _ in range(args.batches):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        on = online.targets_for(batch)
        t2 = time.perf_counter()
        ca = cached.targets_for(batch)
        t3 = time.perf_counter()
        t_data.append(t1 - t0)
        t_on.append(t2 - t1)
        t_ca.append(t3 - t2)
        n += batch[0].shape[0]
        valid = cached.valid_masks_for(batch)
        for k, name, ch in names:
            d = (on[k][:, ch] - ca[k][:, ch]).abs()
            inside = (valid[k] > 0.999)[:, None].expand_as(d)
            a = acc[name]
            a["abs"].append(d.mean().item())
            a["max"] = max(a["max"], d.max().item())
            if inside.any():
                a["abs_in"].append(d[inside].mean().item())
                a["max_in"] = max(a["max_in"], d[inside].max().item())
            a["ref"].append(on[k][:, ch].abs().mean().item())
    B = args.batch_size
    print()
    print(f"| per augmented batch of {B} (mean of {len(t_on)}) | ms / batch | ms / image |")
    print("|---|---|---|")
    for label, ts in (("data pipeline (augment + GT targets, for scale)", t_data),
                      ("online: teacher forward", t_on), ("cached: memmap read + warp + flip", t_ca)):
        ms = 1e3 * float(np.mean(ts))
        print(f"| {label} | {ms:.1f} | {ms / B:.2f} |")
    print()
    print(f"| cached vs online ({n} augmented samples) | mean abs | max abs | mean abs in frame | max abs in frame | mean abs online |")
    print("|---|---|---|---|---|---|")
    for _, name, _ in names:
        a = acc[name]
        print(f"| {name} | {np.mean(a['abs']):.4g} | {a['max']:.4g} | {np.mean(a['abs_in']):.4g} | {a['max_in']:.4g} "
              f"| {np.mean(a['ref']):.4g} |")
    if random_init or cfg.name == "tiny":
        print("(untrained / parity-test weights: large differences here are expected and not meaningful; the "
              "geometric alignment itself is verified in tests/test_teacher_cache.py to < 0.05 px)")
    if not args.out:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
