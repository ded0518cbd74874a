"""Tabulate finished training runs, several seeds per row: AP mean ± std, per seed, and each row minus the first.

For one-change comparisons run outside `scripts/synthetic_study.py` (where the teacher targets come from, a tag-KD
variant, ...). Each row is LABEL=TEMPLATE, the template holding `{seed}`:

    python scripts/compare_runs.py --seeds 0 1 2 \\
        --row "v1 store=runs/cache15/v1_seed{seed}" --row "online=runs/cache15/online_seed{seed}" \\
        [--rescore [--rescore-on runs/lc/heldout7]]

Without --rescore the scores are each run's last evaluation during training; with it the final models are scored
again by the current code (cached per commit in the run folder), with --rescore-on on that dataset's whole val
split. The runs of a table must share one budget (steps, batch, lr schedule, input size, data): refused otherwise.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.run_scores import BUDGET_KEYS, final_stats, finished, recorded_config, rescore, run_budget  # noqa: E402


def parse_row(text: str) -> tuple[str, str]:
    label, sep, template = text.partition("=")
    if not sep or not label or "{seed}" not in template:
        raise SystemExit(f"--row {text!r}: expected LABEL=PATH_TEMPLATE with {{seed}} in the path")
    return label, template


def mean_std(values: list[float], signed: bool = False) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}.3f} ± {std:.3f}"


def collect(rows: list[tuple[str, str]], seeds: list[int], rescore_runs: bool,
            rescore_on: Path | None) -> dict[str, dict[int, dict[str, float]]]:
    """label -> seed -> COCO stats of each finished run; unfinished ones are named and left out."""
    scores: dict[str, dict[int, dict[str, float]]] = {}
    budgets: dict[tuple, list[str]] = {}
    for label, template in rows:
        for seed in seeds:
            out = REPO / template.format(seed=seed)  # an absolute template stays as it is
            if not finished(out):
                print(f"(skipping {out}: not finished)")
                continue
            cfg = recorded_config(out)
            budgets.setdefault(run_budget(cfg), []).append(str(out))
            scores.setdefault(label, {})[seed] = rescore(out, cfg, rescore_on) if rescore_runs else final_stats(out)
    if len(budgets) > 1:
        raise SystemExit("the runs do not share one budget: " + "; ".join(
            f"{dict(zip((f'{s}.{k}' for s, k in BUDGET_KEYS), b))}: {names}" for b, names in budgets.items()))
    return scores


def format_table(scores: dict[str, dict[int, dict[str, float]]], seeds: list[int]) -> str:
    lines = ["| row | AP mean ± std | AP per seed | AR mean | minus the first row, per seed | mean ± std |",
             "|---|---:|---|---:|---|---:|"]
    base = next(iter(scores.values()), {})
    for label, per_seed in scores.items():
        ran = [s for s in seeds if s in per_seed]
        aps = [per_seed[s]["AP"] for s in ran]
        common = [s for s in ran if s in base]
        gaps = [per_seed[s]["AP"] - base[s]["AP"] for s in common]
        is_base = per_seed is base
        gap_text = "-" if is_base else " / ".join(f"{g:+.3f}" for g in gaps)
        gap_mean = "-" if is_base or not gaps else mean_std(gaps, signed=True)
        lines.append(f"| {label} | {mean_std(aps)} | {' / '.join(f'{a:.3f}' for a in aps)} (seeds "
                     f"{','.join(map(str, ran))}) | {statistics.mean(per_seed[s]['AR'] for s in ran):.3f} | "
                     f"{gap_text} | {gap_mean} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", action="append", required=True, metavar="LABEL=TEMPLATE",
                    help="a row: label and run-folder template with {seed}; the first row is the baseline")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rescore", action="store_true", help="score every final model again with the current code")
    ap.add_argument("--rescore-on", type=Path, default=None, metavar="DATA",
                    help="with --rescore: this dataset's whole val split (e.g. one drawn with a fresh seed)")
    args = ap.parse_args(argv)
    if args.rescore_on and not args.rescore:
        ap.error("--rescore-on needs --rescore")
    rows = [parse_row(r) for r in args.row]
    scores = collect(rows, args.seeds, args.rescore, args.rescore_on)
    if not scores:
        raise SystemExit("no finished run to tabulate")
    print(format_table(scores, args.seeds))
    where = (f"rescored on {args.rescore_on} val2017 (all images)" if args.rescore_on else
             "rescored on each run's own val split" if args.rescore else "each run's last evaluation")
    print(f"scores: {where}; flip test, official decoding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
