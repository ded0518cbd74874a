#!/usr/bin/env python
"""Data-pipeline throughput: augmentation + targets (official HigherHRNet semantics) through a DataLoader.

Usage:  python scripts/bench_data.py [--data ROOT] [--workers 0 1 2] [--images 160] [--synthetic]

Over coco-mini train2017 when ../shared is present, else over a small synthetic COCO-format dataset written
to a temp dir. Prints images/s and ms/image per worker count with the ratio to workers=0 measured in the same
run, then the heatmap renderer alone vs the slow per-pixel reference (and an official-style joint loop).
Timing starts after the first batch has arrived, so worker start-up is excluded (reported separately).
The main process runs with 1 torch thread by default, like the workers: with torch's default intra-op
threads, workers=0 was 2-3x slower on a busy 2-CPU machine (thread contention in the normalisation and the
batch collation), which would inflate the worker ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.codec.targets import gaussian_kernel, joint_indices, render_heatmaps, render_heatmaps_reference  # noqa: E402
from distill.data.coco import CocoKeypointDataset  # noqa: E402
from distill.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON  # noqa: E402

SHARED = Path(os.environ.get("AEDISTILL_SHARED", REPO.parent / "shared"))
COCO_MINI = SHARED / "data" / "coco-mini"


def fabricate(root: Path, num_images: int = 24, seed: int = 0) -> str:
    """Random-texture JPEGs with random people; returns a description of what was made."""
    try:  # the project's synthetic generator, when present
        from distill.data.synthetic import generate_dataset  # type: ignore

        kw = dict(seed=seed, num_train=num_images, num_val=0, image_size=512)
        try:
            generate_dataset(root, progress=False, **kw)
        except TypeError:
            generate_dataset(root, **kw)
        if (root / "annotations" / "person_keypoints_train2017.json").is_file():
            return f"distill.data.synthetic.generate_dataset ({num_images} train images, 512x512)"
        print("(distill.data.synthetic wrote another layout; fabricating images)")
    except Exception as exc:  # noqa: BLE001 - any failure: fall back to our own few images
        print(f"(distill.data.synthetic unavailable: {type(exc).__name__}: {exc}; fabricating images)")
    import cv2

    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "train2017").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        w, h = (640, 480) if i % 2 else (480, 640)
        img = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
        name = f"{i + 1:012d}.jpg"
        cv2.imwrite(str(root / "train2017" / name), img)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for _ in range(int(rng.integers(1, 8))):
            kp = np.zeros((17, 3))
            cx, cy = rng.uniform(50, w - 50), rng.uniform(50, h - 50)
            kp[:, 0] = np.clip(cx + rng.normal(0, 30, 17), 0, w - 1).round()
            kp[:, 1] = np.clip(cy + rng.normal(0, 60, 17), 0, h - 1).round()
            kp[:, 2] = rng.choice([0, 2], 17, p=[0.2, 0.8])
            kp[kp[:, 2] == 0, :2] = 0
            x0, y0 = cx - 40, cy - 80
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "num_keypoints": int((kp[:, 2] > 0).sum()), "keypoints": kp.reshape(-1).tolist(),
                         "bbox": [x0, y0, 80, 160], "area": 12800.0,
                         "segmentation": [[x0, y0, x0 + 80, y0, x0 + 80, y0 + 160, x0, y0 + 160]]})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES),
                            "skeleton": [list(e) for e in COCO_SKELETON]}]}
    (root / "annotations" / "person_keypoints_train2017.json").write_text(json.dumps(data))
    return f"{num_images} fabricated random JPEGs (640x480 / 480x640)"


def bench_loader(ds, workers: int, images: int, batch_size: int) -> dict:
    indices = [i % len(ds) for i in range(images + batch_size)]  # cycle; first batch is warm-up
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, sampler=indices,
                                         shuffle=False, persistent_workers=False)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    n = 0
    for batch in it:
        n += batch[0].shape[0]
    t2 = time.perf_counter()
    del it
    return {"workers": workers, "images": n, "startup_s": t1 - t0, "img_s": n / (t2 - t1),
            "ms_img": (t2 - t1) / n * 1e3}


def official_style_heatmaps(joints: np.ndarray, res: int, sigma: float = 2.0) -> np.ndarray:
    """The official algorithm as written there: a Python loop over persons and joints with slicing."""
    g = gaussian_kernel(sigma)
    hms = np.zeros((joints.shape[1], res, res), dtype=np.float32)
    for p in joints:
        for idx, pt in enumerate(p):
            if pt[2] > 0:
                x, y = int(pt[0]), int(pt[1])
                if x < 0 or y < 0 or x >= res or y >= res:
                    continue
                ul = int(np.round(x - 3 * sigma - 1)), int(np.round(y - 3 * sigma - 1))
                br = int(np.round(x + 3 * sigma + 2)), int(np.round(y + 3 * sigma + 2))
                c, d = max(0, -ul[0]), min(br[0], res) - ul[0]
                a, b = max(0, -ul[1]), min(br[1], res) - ul[1]
                cc, dd = max(0, ul[0]), min(br[0], res)
                aa, bb = max(0, ul[1]), min(br[1], res)
                hms[idx, aa:bb, cc:dd] = np.maximum(hms[idx, aa:bb, cc:dd], g[a:b, c:d])
    return hms


def _time(fn, min_time: float = 0.3, max_reps: int = 10000) -> float:
    fn()
    reps, t0 = 0, time.perf_counter()
    while reps < max_reps:
        fn()
        reps += 1
        if time.perf_counter() - t0 > min_time:
            break
    return (time.perf_counter() - t0) / reps


def bench_heatmaps(people: int = 10, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    rows = []
    for res in (128, 256):
        j = np.zeros((people, 17, 3))
        j[..., :2] = rng.uniform(-5, res + 5, (people, 17, 2))
        j[..., 2] = rng.choice([0, 2], (people, 17), p=[0.25, 0.75])
        fast = render_heatmaps(j, res)
        assert np.array_equal(fast, official_style_heatmaps(j, res))
        assert np.allclose(fast, render_heatmaps_reference(j, res), atol=1e-7)
        t_fast = _time(lambda: render_heatmaps(j, res))
        t_off = _time(lambda: official_style_heatmaps(j, res))
        t_slow = _time(lambda: render_heatmaps_reference(j, res), min_time=0.5, max_reps=5)
        t_idx = _time(lambda: joint_indices(j, res))
        rows.append((res, int((j[..., 2] > 0).sum()), t_fast, t_off, t_slow, t_idx))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="COCO-format root (default: coco-mini if present)")
    ap.add_argument("--split", default="train2017")
    ap.add_argument("--synthetic", action="store_true", help="use a fabricated dataset even if coco-mini exists")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--images", type=int, default=160, help="timed images per worker count")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--input-size", type=int, default=512)
    ap.add_argument("--output-sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--main-threads", type=int, default=1,
                    help="torch threads in the main process (DataLoader workers always use 1, so 1 compares like "
                         "with like); 0 = torch's default")
    args = ap.parse_args(argv)
    if args.main_threads:
        torch.set_num_threads(args.main_threads)

    tmp = None
    if args.data is None and not args.synthetic and COCO_MINI.is_dir():
        root, what = COCO_MINI, f"coco-mini {args.split} ({COCO_MINI})"
    elif args.data is not None and not args.synthetic:
        root, what = args.data, str(args.data)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
        root = Path(tmp.name)
        what = fabricate(root)
        args.split = "train2017"
    ds = CocoKeypointDataset(root, args.split, input_size=args.input_size, output_sizes=args.output_sizes, seed=0)
    print(f"data: {what}: {len(ds)} images with annotations; input {args.input_size}, outputs {args.output_sizes}; "
          f"batch {args.batch_size}; {args.images} timed images per row; cpus: {os.cpu_count()}, "
          f"torch threads (main): {torch.get_num_threads()}")
    print("(first pass over the files warms the page cache)")
    bench_loader(ds, 0, min(len(ds), args.images), args.batch_size)

    results = [bench_loader(ds, w, args.images, args.batch_size) for w in args.workers]
    base = next((r for r in results if r["workers"] == 0), results[0])
    print(f"\n{'workers':>7} | {'images/s':>9} | {'ms/image':>8} | {'vs workers=' + str(base['workers']):>13} | startup s")
    print("-" * 62)
    for r in results:
        print(f"{r['workers']:>7} | {r['img_s']:>9.1f} | {r['ms_img']:>8.2f} | {r['img_s'] / base['img_s']:>12.2f}x"
              f" | {r['startup_s']:.2f}")

    print("\nheatmap rendering alone (10 persons x 17 joints, ~75 % visible; sigma 2):")
    print(f"{'res':>4} | {'joints':>6} | {'ours ms':>8} | {'official-loop ms':>16} | {'per-pixel ref ms':>16} | "
          f"{'ref/ours':>8} | {'loop/ours':>9} | {'indices ms':>10}")
    print("-" * 100)
    for res, nj, t_fast, t_off, t_slow, t_idx in bench_heatmaps():
        print(f"{res:>4} | {nj:>6} | {t_fast * 1e3:>8.3f} | {t_off * 1e3:>16.3f} | {t_slow * 1e3:>16.1f} | "
              f"{t_slow / t_fast:>7.0f}x | {t_off / t_fast:>8.1f}x | {t_idx * 1e3:>10.3f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
