#!/usr/bin/env python
"""Teacher (HigherHRNet-W32-512, random weights) forward time, and end-to-end `Predictor` time.

CPU: batch 1 at 512x512, fp32 / bf16 autocast x contiguous / channels_last; median of --repeats runs
after --warmup runs. GPU (when `torch.cuda.is_available()`): batch 1 and 32, fp32 (TF32 off and on),
bf16 and fp16 autocast, contiguous / channels_last, timed with CUDA events. Ratios are against the fp32
contiguous row of the same device and batch in the same run.

End-to-end: `Predictor` (input 512, flip test, projection, decode) on a real coco-mini image (or a
synthetic one when ../shared is absent), split into preprocess / network / aggregation / decode. With
random weights the decode time is not representative of a trained model (it depends on how many
candidates pass the threshold); see scripts/bench_grouping.py for decoding on realistic maps.

    .venv/bin/python scripts/bench_teacher.py [--teacher higherhrnet_w32_512] [--repeats 5] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distill.predict import Predictor, read_image  # noqa: E402
from teachers import build_teacher  # noqa: E402

SHARED = Path(os.environ.get("AEDISTILL_SHARED", REPO_ROOT.parent / "shared"))
IMAGE = SHARED / "data" / "coco-mini" / "val2017" / "000000183709.jpg"
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_image() -> tuple[np.ndarray, str]:
    if IMAGE.is_file():
        return read_image(IMAGE), f"{IMAGE.parent.name}/{IMAGE.name}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), "synthetic 640x480 noise (../shared absent)"


def _run(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> None:
    with torch.inference_mode():
        if dtype is None:
            model(x)
        else:
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                model(x)


def time_cpu(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None, warmup: int, repeats: int
             ) -> tuple[float, float]:
    """(median, min) seconds per forward."""
    for _ in range(warmup):
        _run(model, x, dtype)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _run(model, x, dtype)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def time_cuda(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None, warmup: int, repeats: int) -> float:
    """(median, min) seconds per forward, CUDA events."""
    for _ in range(warmup):
        _run(model, x, dtype)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        _run(model, x, dtype)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return statistics.median(times), min(times)


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def bench_forward(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    base = build_teacher(args.teacher).eval()
    size = args.input_size
    rows = []
    # CPU, batch 1
    x = torch.randn(1, 3, size, size)
    baseline = None
    for layout in ("contiguous", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        model = base.to(memory_format=fmt)
        xin = x.contiguous(memory_format=fmt)
        for name in ("fp32", "bf16"):
            sec, best = time_cpu(model, xin, DTYPES[name], args.warmup, args.repeats)
            baseline = baseline or sec
            rows.append(["cpu", "1", name, layout, f"{sec * 1000:.0f}", f"{best * 1000:.0f}", f"{1 / sec:.2f}",
                         f"{baseline / sec:.2f}x"])
            print("  ".join(rows[-1]), file=sys.stderr, flush=True)
    base = base.to(memory_format=torch.contiguous_format)
    if torch.cuda.is_available():
        gpu = base.cuda()
        for batch in args.gpu_batches:
            x = torch.randn(batch, 3, size, size, device="cuda")
            baseline = None
            for layout in ("contiguous", "channels_last"):
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                model = gpu.to(memory_format=fmt)
                xin = x.contiguous(memory_format=fmt)
                for name in ("fp32", "fp32+tf32", "bf16", "fp16"):
                    tf32 = name == "fp32+tf32"
                    torch.backends.cudnn.allow_tf32 = tf32
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                    sec, best = time_cuda(model, xin, DTYPES[name.split("+")[0]], args.gpu_warmup, args.gpu_repeats)
                    baseline = baseline or sec
                    rows.append(["cuda", str(batch), name, layout, f"{sec * 1000:.2f}", f"{best * 1000:.2f}",
                                 f"{batch / sec:.1f}",
                                 f"{baseline / sec:.2f}x"])
                    print("  ".join(rows[-1]), file=sys.stderr, flush=True)
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
    print(f"\n{args.teacher} forward, input {size}x{size}, random weights (median of {args.repeats} CPU / "
          f"{args.gpu_repeats} GPU runs after warm-up)")
    print(table(["device", "batch", "dtype", "memory format", "median ms / batch", "min ms", "images / s",
                 "vs fp32 contiguous (medians)"], rows))
    print("fp32 on GPU = TF32 off for convolutions and matmuls; fp32+tf32 = PyTorch's default for convolutions.")


def bench_end_to_end(args: argparse.Namespace) -> None:
    image, what = load_image()
    torch.manual_seed(0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        model = build_teacher(args.teacher).eval()
        for name in ("fp32", "bf16"):
            pred = Predictor(model, input_size=args.input_size, device=device, autocast_dtype=DTYPES[name],
                             channels_last=device == "cuda", timing=True)
            for _ in range(args.warmup):
                pred.predict(image)
            per_run = []
            for _ in range(args.e2e_repeats):
                pred.reset_timings()
                t0 = time.perf_counter()
                out = pred.predict(image)
                total = time.perf_counter() - t0
                per_run.append((total, dict(pred.timings)))
            total, parts = sorted(per_run, key=lambda r: r[0])[len(per_run) // 2]  # the median run
            rows.append([device, name, f"{total * 1000:.0f}"] +
                        [f"{parts[k] * 1000:.1f}" for k in ("preprocess", "network", "aggregate", "decode")] +
                        [str(len(out.people))])
            print("  ".join(rows[-1]), file=sys.stderr, flush=True)
    h, w = image.shape[:2]
    print(f"\nPredictor end to end, one image ({what}, {w}x{h}), input {args.input_size}, flip test, "
          f"projection, official decode; median of {args.e2e_repeats} runs")
    print(table(["device", "dtype", "total ms", "preprocess", "network (2 fwd)", "aggregation", "decode", "people"], rows))
    print("Random weights: the decode column depends on how many candidates pass the 0.1 threshold and is "
          "not what a trained teacher costs.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="higherhrnet_w32_512")
    ap.add_argument("--input-size", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--e2e-repeats", type=int, default=3)
    ap.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--gpu-warmup", type=int, default=5)
    ap.add_argument("--gpu-repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads ({os.cpu_count()} cores, load "
          f"average {load} at start), GPU: {gpu}")
    bench_forward(args)
    if not args.skip_e2e:
        bench_end_to_end(args)
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
              "(CPU timings are only trustworthy when other work leaves the threads used here idle cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
