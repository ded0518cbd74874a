#!/usr/bin/env python
"""Benchmark AE grouping: fast decoder vs the literal official algorithm, in the same run.

Inputs are realistic fake network outputs (`tests/fake_maps.py`): N people
with 17 joints as sigma=2 Gaussians, ~15% joints missing, false blobs, noise, smooth background
tags, per-person tags with an orig/flip pair (L = 2). Map sizes 128x128, 256x256 and 512x704 (the
official test setting projects maps to the input size); 2/5/10/20 people.

Prints median ms/image for decode with and without refine, with 1 thread and with all threads,
for CUDA-resident maps when a GPU is present, and the speed-up over the reference (1 thread).
Also checks that both give identical people on every input it times.

    python scripts/bench_grouping.py [--repeats 5] [--sizes 128 256 512x704] [--people 2 5 10 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from typing import Callable

import cv2
import numpy as np
import torch

from distill.codec.decode import DecodeParams, decode

# The literal reference decoder and the fake maps are test code: they live in tests/.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from fake_maps import fake_outputs  # noqa: E402
from reference_decoder import reference_decode  # noqa: E402


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    ap.add_argument("--reference-repeats", type=int, default=1, help="timed runs of the slow reference")
    ap.add_argument("--sizes", nargs="+", default=["128", "256", "512x704"])
    ap.add_argument("--people", nargs="+", type=int, default=[2, 5, 10, 20])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    all_threads = os.cpu_count() or 1
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, {all_threads} CPU threads, GPU: {torch.cuda.get_device_name(0) if cuda else 'none'}")
    header = ["map", "people", "found", "refine", "ref 1t ms", "fast 1t ms", f"fast {all_threads}t ms",
              "fast, index ties, 1t ms"]
    if cuda:
        header.append("fast cuda ms")
    header.append("speed-up 1t")
    rows = []
    for size in args.sizes:
        h, w = _parse_size(size)
        for people in args.people:
            heat, tags = fake_outputs(h, w, people, seed=args.seed + people)
            for refine in (True, False):
                params = DecodeParams(refine=refine)
                _set_threads(1)
                ref_out = reference_decode(torch.from_numpy(heat), torch.from_numpy(tags), params)
                fast_out = decode(heat, tags, params)
                for a, b in zip(ref_out, fast_out):
                    if not (np.array_equal(a.people, b.people) and np.array_equal(a.scores, b.scores)):
                        print(f"MISMATCH between fast and reference decoder at {size}, {people} people", file=sys.stderr)
                        return 1
                ref_ms = _median_ms(lambda: reference_decode(torch.from_numpy(heat), torch.from_numpy(tags), params),
                                    args.reference_repeats)
                fast_1 = _median_ms(lambda: decode(heat, tags, params), args.repeats)
                _set_threads(all_threads)
                params_all = replace(params, threads=all_threads)
                fast_all = _median_ms(lambda: decode(heat, tags, params_all), args.repeats)
                _set_threads(1)
                params_index = replace(params, ties="index")  # sparse NMS; differs only on exactly tied peaks
                index_1 = _median_ms(lambda: decode(heat, tags, params_index), args.repeats)
                _set_threads(all_threads)
                row = [f"{h}x{w}", str(people), str(fast_out[0].people.shape[0]), "on" if refine else "off",
                       f"{ref_ms:.1f}", f"{fast_1:.2f}", f"{fast_all:.2f}", f"{index_1:.2f}"]
                if cuda:
                    heat_gpu, tags_gpu = torch.from_numpy(heat).cuda(), torch.from_numpy(tags).cuda()

                    def on_gpu() -> None:
                        decode(heat_gpu, tags_gpu, params_all)
                        torch.cuda.synchronize()

                    row.append(f"{_median_ms(on_gpu, args.repeats):.2f}")
                row.append(f"{ref_ms / fast_1:.1f}x")
                rows.append(row)
                print("  ".join(row), file=sys.stderr, flush=True)

    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(wd) for c, wd in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for r in rows:
        print(line(r))
    print("ref = the official algorithm written literally (tests/reference_decoder.py); "
          "fast and ref gave identical people and scores on every input.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
