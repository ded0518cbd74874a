#!/usr/bin/env python
"""Teacher store v1 vs v2 on real teacher outputs: size per image (per resolution), errors, compressor
choice, and read throughput against a student training step, all measured in one run.

1. The teacher runs on the first N images of a split at the store's canonical frame (`cache-teacher`'s).
2. Sizes: v1 = float16; v2 = the quantised planes of `distill.cache_codec` compressed by zstd (levels 3
   and 9), zlib 6, lzma and lz4 (when installed); encode and decode ms per image for each.
3. Errors of the v2 codec: heatmaps relative to each map's peak, tags absolute, worst over the images.
4. Read throughput: `CachedTeacher.sample_targets` (read + decompress + warp to the augmented sample) for a
   batch from a v1 and a v2 store of the same images, against one `step_s` training step (forward +
   backward, same batch size and input size), as a ratio.

    python scripts/bench_cache_codec.py --data ../shared/data/coco-mini --split val2017 --input-size 512 --images 16
    python scripts/bench_cache_codec.py --data runs/study/data --split train2017 --input-size 256 --images 32
"""
from __future__ import annotations

import argparse
import lzma
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from distill.cache_codec import encode_image, quantised_bytes
from distill.data.coco import CocoKeypointDataset
from distill.models import load_model
from distill.teacher_cache import TeacherStore, build_store, weights_identity

TEACHER = "teacher:higherhrnet_w16_synth:teachers/pretrained/higherhrnet_w16_synth.pt"


def compressors() -> dict[str, tuple]:
    import zstandard

    out = {"zstd 3": (zstandard.ZstdCompressor(level=3).compress, zstandard.ZstdDecompressor().decompress),
           "zstd 9": (zstandard.ZstdCompressor(level=9).compress, zstandard.ZstdDecompressor().decompress),
           "zlib 6": (lambda b: zlib.compress(b, 6), zlib.decompress),
           "lzma": (lzma.compress, lzma.decompress)}
    try:
        import lz4.frame

        out["lz4"] = (lz4.frame.compress, lz4.frame.decompress)
    except ImportError:
        pass
    return out


def _ms(fn, repeats: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) * 1e3 / repeats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val2017")
    ap.add_argument("--input-size", type=int, default=512)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--teacher", default=TEACHER, help="teacher model spec (KIND:NAME:CKPT)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from teachers import get_teacher_config

    model = load_model(args.teacher).eval()
    name = args.teacher.split(":")[1]
    full = CocoKeypointDataset(args.data, args.split, input_size=args.input_size, augment=False)
    full.ids = full.ids[: args.images]  # the first N images only
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for v in (1, 2):
            out = Path(tmp) / f"v{v}"
            build_store(out, model, full, teacher_cfg=get_teacher_config(name),
                        weights=weights_identity(model, args.teacher.split(":")[2], False, None),
                        input_size=args.input_size, shard_size=8, show_progress=False, format_version=v)
            stores[v] = TeacherStore(out)
        v1, v2 = stores[1], stores[2]
        heatmaps = [o["heatmaps"] for o in v1.outputs]
        maps = [[m.astype(np.float32) for m in v1.maps(i)] for i in v1.ids]
        n = len(maps)
        print(f"{args.data} {args.split}: {n} images, input {args.input_size}, teacher {name}\n")

        print("| store | " + " | ".join(f"out {k} (1/{o['stride']}) MiB" for k, o in enumerate(v1.outputs))
              + " | total MiB/image |\n|---|" + "---:|" * (len(v1.outputs) + 1))
        per_res_v1 = [sum(m[k].size * 2 for m in maps) / n / 2**20 for k in range(len(heatmaps))]
        print("| v1 float16 | " + " | ".join(f"{x:.3f}" for x in per_res_v1) + f" | {v1.nbytes() / n / 2**20:.3f} |")
        per_res_v2 = [sum(len(encode_image([m[k]], [heatmaps[k]])[0]) for m in maps) / n / 2**20
                      for k in range(len(heatmaps))]
        print("| v2 (zstd 3) | " + " | ".join(f"{x:.3f}" for x in per_res_v2) + f" | {v2.nbytes() / n / 2**20:.3f} |")
        print(f"\nv2 / v1 size: {v2.nbytes() / v1.nbytes():.3f} ({v1.nbytes() / v2.nbytes():.1f}x smaller; store "
              "files incl. records)\n")

        print("| compressor of the quantised planes | MiB/image | encode ms | decode ms |\n|---|---:|---:|---:|")
        planes = [quantised_bytes(m, heatmaps) for m in maps]
        for cname, (comp, dec) in compressors().items():
            blobs, enc_ms = [], 0.0
            for p in planes:
                t0 = time.perf_counter()
                blobs.append(comp(p))
                enc_ms += (time.perf_counter() - t0) * 1e3
            dec_ms = sum(_ms(lambda b=b: dec(b)) for b in blobs)
            print(f"| {cname} | {sum(map(len, blobs)) / n / 2**20:.3f} | {enc_ms / n:.1f} | {dec_ms / n:.2f} |")

        worst = v2.worst_error()
        print(f"\nv2 errors (worst over the images): heatmaps {worst['heat_rel']:.5f} of the map's peak (bound "
              f"{1 / 255:.5f}), tags {worst['tag_abs']:.5f} absolute")
        v1_ms = sum(_ms(lambda i=i: v1.maps(i)) for i in v1.ids) / n
        v2_ms = sum(_ms(lambda i=i: v2.maps(i)) for i in v2.ids) / n
        print(f"read one image's maps: v1 {v1_ms:.2f} ms (memmap view), v2 {v2_ms:.2f} ms (decompress + dequantise)")

        # read + decompress + warp a batch vs a student training step
        from distill.teacher_cache.targets import CachedTeacher

        student_size = 256 if args.input_size >= 256 else args.input_size
        ds = CocoKeypointDataset(args.data, args.split, input_size=student_size,
                                 output_sizes=(student_size // 4, student_size // 2), augment=True)
        ds.ids = [i for i in ds.ids if str(i) in v1][: args.batch_size]
        samples = [ds.make_sample(i) for i in range(len(ds))]
        rows = {}
        for v, store in stores.items():
            cached = CachedTeacher(store)
            rows[v] = min(_ms(lambda: [cached.targets_for_sample(s) for s in samples]) for _ in range(3))
        with warnings.catch_warnings():  # random weights are fine: only the step's time is measured
            warnings.simplefilter("ignore")
            student = load_model("student:step_s").train()
        opt = torch.optim.Adam(student.parameters(), 1e-4)
        x = torch.randn(args.batch_size, 3, student_size, student_size)

        def step() -> None:
            outs = student(x)
            loss = sum(o.square().mean() for o in outs)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        step_ms = min(_ms(step) for _ in range(3))
        print(f"\nbatch of {len(samples)} at input {student_size} ({args.threads} thread(s)): student step_s training step "
              f"{step_ms:.0f} ms; cached targets v1 {rows[1]:.0f} ms ({step_ms / rows[1]:.1f}x faster than the step), "
              f"v2 {rows[2]:.0f} ms ({step_ms / rows[2]:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
