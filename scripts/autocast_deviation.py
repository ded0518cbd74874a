#!/usr/bin/env python
"""How far autocast (bf16; fp16 on CUDA) moves teacher outputs away from fp32.

Models: the official `tiny` model with its official weights (../shared/reference/higherhrnet/tiny) at input
256, and HigherHRNet-W32-512 with random weights (seed 0, PyTorch default init) at input 512. Input: a
real coco-mini image (a synthetic noise image when ../shared is absent), through the official test
resize. For each model, device and dtype, the max abs / mean abs deviation from the fp32 run on the same
device (TF32 off on CUDA), also as a fraction of max |fp32|, for the raw outputs of the original and the
flipped pass (1/4 heatmaps, 1/4 tags, 1/2 heatmaps) and for the aggregated final heatmaps and tags
(flip test, projection to the input size).

    .venv/bin/python scripts/autocast_deviation.py [--threads N] [--skip-w32]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distill.predict import Predictor, read_image  # noqa: E402
from teachers import build_teacher  # noqa: E402
from teachers.checkpoint import load_checkpoint  # noqa: E402

SHARED = Path(os.environ.get("AEDISTILL_SHARED", REPO_ROOT.parent / "shared"))
IMAGE = SHARED / "data" / "coco-mini" / "val2017" / "000000183709.jpg"
TINY_WEIGHTS = SHARED / "reference" / "higherhrnet" / "tiny" / "state_dict.pt"


def load_image() -> tuple[np.ndarray, str]:
    if IMAGE.is_file():
        return read_image(IMAGE), f"{IMAGE.parent.name}/{IMAGE.name}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), "synthetic 640x480 noise (../shared absent)"


def quantities(pred: Predictor, image: np.ndarray) -> dict[str, torch.Tensor]:
    """Raw outputs of both passes (split into heatmaps / tags) and the final maps, float32 on the CPU."""
    x, _ = pred.preprocess(image)
    j = pred.spec.num_joints
    out = {}
    for tag, inp in (("orig", x), ("flip", torch.flip(x, [3]))):
        o = pred.forward(inp)
        out[f"raw {tag} 1/4 heatmaps"] = o[0][:, :j]
        out[f"raw {tag} 1/4 tags"] = o[0][:, j:]
        out[f"raw {tag} 1/2 heatmaps"] = o[1][:, :j]
    (heat, tags, _), = pred.predict_maps([image])
    out["final heatmaps"] = heat
    out["final tags [orig, flip]"] = tags
    return {k: v.detach().float().cpu() for k, v in out.items()}


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-w32", action="store_true", help="only the tiny model (W32 at 512 takes a while on CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = False  # a true fp32 reference on CUDA
    torch.backends.cuda.matmul.allow_tf32 = False
    image, what = load_image()
    print(f"torch {torch.__version__}; image {what} ({image.shape[1]}x{image.shape[0]})")

    models = []
    if TINY_WEIGHTS.is_file():
        tiny = build_teacher("tiny")
        load_checkpoint(tiny, TINY_WEIGHTS, strict=True)
        models.append(("tiny (official weights)", tiny.eval(), 256))
    else:
        print(f"{TINY_WEIGHTS} absent: tiny model skipped")
    if not args.skip_w32:
        torch.manual_seed(0)
        models.append(("W32-512 (random weights)", build_teacher("higherhrnet_w32_512").eval(), 512))

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for label, model, size in models:
        for device in devices:
            ref = quantities(Predictor(model, input_size=size, device=device), image)
            for dtype in [torch.bfloat16] + ([torch.float16] if device == "cuda" else []):
                got = quantities(Predictor(model, input_size=size, device=device, autocast_dtype=dtype), image)
                for key, r in ref.items():
                    d = (got[key] - r).abs()
                    scale = float(r.abs().max())
                    rows.append([label, device, str(dtype).replace("torch.", ""), key, f"{scale:.3g}",
                                 f"{float(d.max()):.3g}", f"{float(d.mean()):.3g}",
                                 f"{float(d.max()) / scale:.2%}" if scale else "n/a",
                                 f"{float(d.mean()) / scale:.3%}" if scale else "n/a"])
                    print("  ".join(rows[-1]), file=sys.stderr, flush=True)
    print(table(["model", "device", "autocast", "quantity", "max |fp32|", "max abs dev", "mean abs dev",
                 "max dev / max |fp32|", "mean dev / max |fp32|"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
