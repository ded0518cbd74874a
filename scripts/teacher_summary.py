#!/usr/bin/env python
"""Params and MACs of the registered HigherHRNet teachers next to the published numbers.

    .venv/bin/python scripts/teacher_summary.py [--shared PATH] [--json OUT.json]

"GMACs (paper)" is the convention of the HigherHRNet README/paper, whose "GFLOPs" column is really
multiply-accumulates with the transposed conv counted at its output resolution (see distill/flops.py).
"GFLOPs (true)" = 2 x MACs with the transposed conv at its true cost. Counting runs on the meta
device (no weights, no activations), so the whole script takes a few seconds, mostly imports.

Published values come from ../shared/reference/higherhrnet/published.json (the official README rows;
`measured` holds the official counter's exact integers) when present, else from the README numbers
copied below.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from distill.atomic import write_json_atomic  # noqa: E402
from distill.flops import count_macs  # noqa: E402
from teachers import build_teacher, get_teacher_config  # noqa: E402

# registered config -> (published.json backbone, key in published.json measured.models)
TEACHERS = {
    "higherhrnet_w32_512": ("HRNet-W32", "W32-512"),
    "higherhrnet_w32_640": ("HRNet-W32", "W32-640"),
    "higherhrnet_w48_640": ("HRNet-W48", "W48-640"),
}

# Fallback when ../shared is absent: the official README numbers (COCO val2017 rows of
# HRNet/HigherHRNet-Human-Pose-Estimation). Params in millions, "GFLOPs" (= GMACs, see above).
README_NUMBERS = {
    "W32-512": {"params_M": 28.6, "GFLOPs": 47.9, "exact_macs": None},
    "W32-640": {"params_M": 28.6, "GFLOPs": 74.8, "exact_macs": None},
    "W48-640": {"params_M": 63.8, "GFLOPs": 154.3, "exact_macs": None},
}


def default_shared() -> Path:
    return Path(os.environ.get("AEDISTILL_SHARED", REPO_ROOT.parent / "shared"))


def load_published(shared: Path) -> tuple[dict[str, dict], str]:
    path = shared / "reference" / "higherhrnet" / "published.json"
    if not path.is_file():
        return README_NUMBERS, f"README numbers built into {Path(__file__).name} ({path} not found)"
    data = json.loads(path.read_text())
    measured = data.get("measured", {}).get("models", {})
    out = {}
    for _, (backbone, key) in TEACHERS.items():
        size = int(key.split("-")[1])
        row = next(r for r in data["coco"] if r["backbone"] == backbone and r["input_size"] == size)
        out[key] = {"params_M": row["params_M"], "GFLOPs": row["GFLOPs"],
                    "exact_macs": measured.get(key, {}).get("official_get_model_summary_MACs")}
    return out, str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=default_shared(), help="the ../shared folder")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    published, source = load_published(args.shared)
    header = (f"{'teacher':<22}{'input':>6}{'params':>13}{'pub.':>7}{'GMACs(paper)':>14}{'pub.':>8}"
              f"{'official-counter MACs':>24}{'true GMACs':>12}{'true GFLOPs':>13}")
    print(header)
    print("-" * len(header))
    rows = []
    for name, (_, key) in TEACHERS.items():
        cfg = get_teacher_config(name)
        with torch.device("meta"):
            model = build_teacher(cfg)
        r = count_macs(model, cfg.input_size)
        pub = published[key]
        exact = pub.get("exact_macs")
        match = "-" if exact is None else ("exact" if exact == r.macs_paper else f"DIFF {r.macs_paper - exact:+d}")
        print(f"{name:<22}{cfg.input_size:>6}{r.params:>13,}{pub['params_M']:>6.1f}M"
              f"{r.gmacs_paper:>14.3f}{pub['GFLOPs']:>8.1f}{r.macs_paper:>17,} {match:<6}"
              f"{r.macs_true / 1e9:>12.3f}{r.gflops_true:>13.3f}")
        rows.append({"teacher": name, "input_size": cfg.input_size, "params": r.params,
                     "macs_paper": r.macs_paper, "macs_true": r.macs_true, "flops_true": r.flops_true,
                     "breakdown": r.as_dict()["breakdown"], "published_params_M": pub["params_M"],
                     "published_GFLOPs": pub["GFLOPs"], "official_counter_macs": exact})
    print(f"\npublished values: {source}")
    print("GMACs(paper) = conv + transposed conv at output resolution (the README 'GFLOPs'); "
          "true = transposed conv at input resolution; true GFLOPs = 2 x true GMACs.")
    if args.json:
        write_json_atomic(args.json, {"source": source, "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
