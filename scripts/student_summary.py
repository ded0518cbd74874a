#!/usr/bin/env python
"""Params, GMACs and GFLOPs of every registered student next to the teacher, with ratios.

    .venv/bin/python scripts/student_summary.py [--size 512] [--teacher higherhrnet_w32_512]
                                                [--markdown] [--json OUT.json]

"GMACs (paper)" is the convention of the HigherHRNet README/paper (multiply-accumulates, transposed
convs counted at their output resolution; see distill/flops.py). "GFLOPs (true)" = 2 x MACs with
transposed convs at their true cost. Ratios are student / teacher, in percent. All counts are for
one 3 x size x size input, on the meta device (no weights or activations are allocated).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from distill.atomic import write_json_atomic  # noqa: E402
from distill.flops import count_macs  # noqa: E402
from students import build_student, config_family, get_student_config, list_students  # noqa: E402
from teachers import build_teacher  # noqa: E402

COLUMNS = ("model", "family", "T", "params", "% T.", "GMACs(paper)", "% T.", "GFLOPs(true)", "% T.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="input side (default 512)")
    parser.add_argument("--teacher", default="higherhrnet_w32_512", help="teacher config name or path")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    with torch.device("meta"):
        teacher = build_teacher(args.teacher)
    ref = count_macs(teacher, args.size)
    rows = [{"model": str(args.teacher), "family": "teacher", "tags": teacher.cfg.tag_maps,
             "params": ref.params, "macs_paper": ref.macs_paper, "macs_true": ref.macs_true,
             "flops_true": ref.flops_true}]
    for name in list_students():
        cfg = get_student_config(name)
        model = build_student(cfg)
        r = count_macs(model, args.size)
        rows.append({"model": name, "family": config_family(cfg), "tags": cfg.tag_maps, "params": r.params,
                     "macs_paper": r.macs_paper, "macs_true": r.macs_true, "flops_true": r.flops_true})
    for row in rows:
        row["params_pct"] = 100 * row["params"] / ref.params
        row["macs_paper_pct"] = 100 * row["macs_paper"] / ref.macs_paper
        row["flops_true_pct"] = 100 * row["flops_true"] / ref.flops_true

    cells = [[r["model"], r["family"], str(r["tags"]), f"{r['params'] / 1e6:.2f}M", f"{r['params_pct']:.1f}",
              f"{r['macs_paper'] / 1e9:.2f}", f"{r['macs_paper_pct']:.1f}", f"{r['flops_true'] / 1e9:.2f}",
              f"{r['flops_true_pct']:.1f}"] for r in rows]
    widths = [max(len(c[i]) for c in cells + [list(COLUMNS)]) for i in range(len(COLUMNS))]
    if args.markdown:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|")
        for c in cells:
            print("| " + " | ".join(c) + " |")
    else:
        def fmt(c: list[str]) -> str:
            return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths)))
        print(fmt(list(COLUMNS)))
        print("-" * len(fmt(list(COLUMNS))))
        print(fmt(cells[0]))
        print("-" * len(fmt(list(COLUMNS))))
        for c in cells[1:]:
            print(fmt(c))
    print(f"\ninput {args.size}x{args.size}; T = tag maps at 1/4 (17 = per joint, 1 = shared); '% T.' = percent "
          f"of the teacher {args.teacher}.\nGMACs(paper) = conv + transposed conv at output resolution (the "
          "HigherHRNet README 'GFLOPs'); GFLOPs(true) = 2 x MACs with transposed convs at their true cost.")
    if args.json:
        write_json_atomic(args.json, {"input_size": args.size, "teacher": str(args.teacher), "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
