#!/usr/bin/env python
"""Does quantising the teacher store (v2) change the people decoded from it? Two stores of the same split
(v1 float16, v2 quantised) are read image by image, each image's stored outputs are merged as the test
path merges one pass (1/4 output upsampled to 1/2, heatmaps averaged, tags kept) and decoded with the
official decoder; the people are compared: count, and joint positions and scores.

    python scripts/cache_decode_identity.py --v1 runs/x/store_v1 --v2 runs/x/store_v2
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from distill.codec.decode import DecodeParams, decode
from distill.codec.matching import MatchParams
from distill.inference import OutputLayout, merge_pass
from distill.teacher_cache import TeacherStore


def merged(store: TeacherStore, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass merged as the test path does: heatmaps (1, J, H, W) and tags (1, T, H, W, 1) at 1/2 resolution."""
    outs = [torch.from_numpy(np.asarray(m, dtype=np.float32))[None] for m in store.maps(image_id)]
    layout = OutputLayout(store.num_joints, tuple(o["heatmaps"] > 0 for o in store.outputs),
                          tuple(o["tags"] > 0 for o in store.outputs), bool(store.header["tag_per_joint"]))
    heat, tags = merge_pass(outs, layout)
    return heat, torch.cat([t.permute(0, 1, 3, 4, 2) for t in tags], dim=4)


def people(heat: torch.Tensor, tags: torch.Tensor, min_score: float) -> np.ndarray:
    (d,) = decode(heat, tags, DecodeParams(match=MatchParams(num_joints=heat.shape[1])))
    keep = d.scores >= min_score
    p = d.people[keep][:, :, :3]
    order = np.lexsort((p[:, :, 0].sum(1), -d.scores[keep]))  # by score, then position: creation order aside
    return p[order]


def same(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--v1", type=Path, required=True)
    ap.add_argument("--v2", type=Path, required=True)
    ap.add_argument("--min-score", type=float, nargs="+", default=[0.0, 0.1, 0.2],
                    help="compare the people scoring at least this (the official decoder keeps every fragment)")
    ap.add_argument("--tol", type=float, default=0.05, help="joint x, y (1/2-res px) and score tolerance")
    args = ap.parse_args(argv)
    a, b = TeacherStore(args.v1), TeacherStore(args.v2)
    if a.ids != b.ids:
        raise SystemExit("the stores hold different images")
    maps = {i: (merged(a, i), merged(b, i)) for i in a.ids}
    print(f"{len(a.ids)} images; images whose decoded people are the same (count, and joints within {args.tol} px "
          "and score):\n")
    print("| people scoring >= | v2 maps | v2 heatmaps + v1 tags | v1 heatmaps + v2 tags | people per image (v1) |")
    print("|---:|---:|---:|---:|---:|")
    ok = True
    for s in args.min_score:
        counts = [0, 0, 0]
        n = 0
        for (ha, ta), (hb, tb) in maps.values():
            ref = people(ha, ta, s)
            n += len(ref)
            for k, (h, t) in enumerate(((hb, tb), (hb, ta), (ha, tb))):
                counts[k] += same(ref, people(h, t, s), args.tol)
        print(f"| {s:g} | {counts[0]} | {counts[1]} | {counts[2]} | {n / len(maps):.1f} |")
        ok &= counts[0] == len(maps)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
