#!/usr/bin/env python
"""Grouping time vs tag layout T x D: the official decoder on fake maps, every layout in the same run.

Why: a shared or longer tag changes what the decoder reads per joint candidate (T maps, L = D x passes values);
this says what each layout costs at decode time, as a ratio to the official 17 x 1 layout, on this machine.

Inputs are `tests/fake_maps.py` outputs (N people, 17 joints, missing joints, false blobs, noise, smooth
background tags) with L = 2·D tag values per pixel (original + flipped pass, as the flip test gives the
decoder), scaled so that every tag distance equals the D = 1 one (the grouping decisions stay comparable). Decode: the official settings (refine and adjust on), people keyed by the whole D-vector, 1 thread.
Prints the median ms per image and the ratio to 17 x 1.

    python scripts/bench_decode_tag_dims.py [--size 256] [--people 5] [--dims 1 2 4 8] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_maps import fake_outputs  # noqa: E402  (test helper, shared with bench_grouping.py)

from distill.codec.decode import DecodeParams, decode  # noqa: E402


def time_layout(size: int, people: int, shared: bool, d: int, repeats: int, images: int) -> float:
    params = DecodeParams()
    params = replace(params, match=replace(params.match, key_dims=d))
    # fake_outputs repeats each tag value over the L channels; / sqrt(D) keeps every L2 distance (and so the
    # grouping's decisions) what it is for D = 1, so the rows differ in cost only.
    maps = [(h, t / d ** 0.5) for h, t in (fake_outputs(size, size, people, tag_dim=2 * d, shared_tag=shared, seed=k)
                                           for k in range(images))]
    decode(*maps[0], params)  # warm-up
    times = []
    for _ in range(repeats):
        for heat, tags in maps:
            t0 = time.perf_counter()
            decode(heat, tags, params)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="map size (the test path projects maps to the input size)")
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--dims", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--images", type=int, default=3, help="different fake images per layout")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for shared in (False, True):
        for d in args.dims:
            rows.append((shared, d, time_layout(args.size, args.people, shared, d, args.repeats, args.images)))
    base = next(ms for shared, d, ms in rows if not shared and d == 1) if 1 in args.dims else rows[0][2]
    print(f"| tag maps T | D | values per pixel L | decode ms (median, {args.size}x{args.size}, {args.people} people, "
          "1 thread) | vs 17 x 1 |\n|---|---:|---:|---:|---:|")
    for shared, d, ms in rows:
        print(f"| {'1 (shared)' if shared else '17 (per joint)'} | {d} | {2 * d} | {ms:.1f} | {ms / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
