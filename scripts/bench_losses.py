#!/usr/bin/env python
"""The heatmap loss terms' cost on a CPU, before and since session 24: the Trainer's whole-output `.float()` and
strided terms vs one contiguous float32 copy of the heatmap slice (what `DistillLoss.compute_terms` does now).

Usage:  python scripts/bench_losses.py [--batch 4] [--input-size 256] [--threads 1] [--repeats 30]

Per output resolution of a 17-joint student (1/4 and 1/2 of the input), forward + backward of the focal GT
term and the softmax KD term (T = 0.1), both arms in the same run on the same tensors:
  strided: the Trainer made the whole channels_last bf16 output float32 (`out.float()`, still NHWC) and the
           terms ran on its slice `[:, :J]`, walking strided memory (before session 24);
  copy:    the bf16 slice copied once to contiguous float32 (autograd carries the gradient back), then the terms.
Prints medians and the ratio strided / copy.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.losses import heatmap_pixel_weights, per_joint_heatmap_loss, per_joint_softmax_kd_loss  # noqa: E402

J = 17


def time_ms(fn, repeats: int, warmup: int = 3) -> float:
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)

    print(f"heatmap terms (focal GT + softmax KD), forward + backward, batch {args.batch}, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print("| output | strided NHWC slice ms | contiguous float32 copy ms | strided / copy |\n|---|---:|---:|---:|")
    for stride, channels in ((4, 2 * J), (2, J)):
        r = args.input_size // stride
        # a network output under bf16 autocast + channels_last; gradients flow back to it
        net_out = (torch.randn(args.batch, channels, r, r, generator=g).to(torch.bfloat16)
                   .to(memory_format=torch.channels_last).requires_grad_())
        gt = torch.rand(args.batch, J, r, r, generator=g)
        teacher = torch.randn(args.batch, J, r, r, generator=g)
        mask = torch.ones(args.batch, r, r)

        def terms(copy: bool):
            def run() -> None:
                if copy:
                    pred = net_out[:, :J].to(torch.float32, memory_format=torch.contiguous_format)
                else:
                    pred = net_out.float()[:, :J]
                w = heatmap_pixel_weights(pred, gt, "focal", 10.0)
                loss = per_joint_heatmap_loss(pred, gt, mask, w).mean()
                loss = loss + per_joint_softmax_kd_loss(pred, teacher, mask, 0.1).mean()
                loss.backward()
                net_out.grad = None
            return run

        strided, copied = time_ms(terms(False), args.repeats), time_ms(terms(True), args.repeats)
        print(f"| 1/{stride} ({r}x{r}) | {strided:.1f} | {copied:.1f} | {strided / copied:.2f}x |")


if __name__ == "__main__":
    main()
