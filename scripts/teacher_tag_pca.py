#!/usr/bin/env python
"""The teacher's J per-joint 1-D tag maps reduced to ONE shared map of D channels by PCA, decoded: AP vs D.

The work is `distill.teacher_tag_pca` (also behind `distill compare-tags --dims ... --teacher ...`, which puts
these rows beside the students' in one table and plot); this prints its table and the explained variance.

    python scripts/teacher_tag_pca.py --data runs/study/data --input-size 256 --dims 1 2 3 4 6 8 --fit-images 64
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from distill.atomic import write_json_atomic
from distill.models import load_model
from distill.teacher_tag_pca import teacher_reduction_rows

TEACHER = "teacher:higherhrnet_w16_synth:teachers/pretrained/higherhrnet_w16_synth.pt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=TEACHER)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val2017")
    ap.add_argument("--fit-split", default="train2017")
    ap.add_argument("--fit-images", type=int, default=64)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--dims", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    print("\n| tags | AP | AP50 | AR |\n|---|---:|---:|---:|")
    rows, pca = teacher_reduction_rows(model, args.data, split=args.split, fit_split=args.fit_split,
                                       fit_images=args.fit_images, input_size=args.input_size, dims=args.dims,
                                       limit=args.limit, show_progress=True, log=lambda s: print(s, flush=True))
    print(f"\nPCA fitted on {pca.num_vectors} tag vectors at GT joints of {args.fit_images} {args.fit_split} images; "
          "explained variance per component: " + ", ".join(f"{r:.3f}" for r in pca.explained[:8]))
    if args.out:
        write_json_atomic(args.out, {"model": args.model, "data": str(args.data), "split": args.split,
                                     "explained_variance_ratio": pca.explained.tolist(),
                                     "fit_vectors": pca.num_vectors, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
