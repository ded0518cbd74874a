#!/usr/bin/env python
"""Does distillation help? Teacher vs students on the embedded synthetic dataset, on the CPU.

Stages (each reused when already finished, so a rerun only does what is missing):
 1. `distill synth` the dataset (runs/demo/data);
 2. `distill train configs/train/synth_teacher.yaml` (small HigherHRNet from scratch);
 3. `distill cache-teacher` its outputs on the train split;
 4. students with the same budget (epochs, images, lr schedule): step_s on ground truth only and
    step_s distilled, each for every --seeds; step_s_1tag distilled (one shared tag map);
 5. a table: val AP (mean over seeds), params, GMACs at the input size, wall time per run.

    python scripts/synthetic_study.py [--seeds 0 1] [--root runs/demo] [--set optim.epochs=12 ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - t0


def _distill(*args: str) -> list[str]:
    return [sys.executable, "-m", "distill.cli", *args]


def _final_stats(out: Path) -> dict[str, float]:
    evals = sorted(out.glob("eval_epoch*.json"))
    if not evals:
        raise SystemExit(f"{out}: no evaluation was written")
    return json.loads(evals[-1].read_text())


def _finished(out: Path) -> bool:
    return (out / "train_summary.json").exists() and (out / "model.pt").exists()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("runs/study"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra overrides for the STUDENT runs (the budget must stay equal across them)")
    ap.add_argument("--teacher-set", action="append", default=[], help="extra overrides for the teacher run")
    ap.add_argument("--table-only", action="store_true", help="only tabulate the finished runs under --root")
    args = ap.parse_args(argv)
    root = args.root
    if args.table_only:
        return _tabulate(root, args.seeds)
    data = root / "data"
    walls: dict[str, float | str] = {}

    walls["data"] = _run(_distill("synth", "--out", str(data)))
    teacher_out = root / "teacher"
    common = [f"data.root={data}"]
    if _finished(teacher_out):
        walls["teacher"] = "reused"
    else:
        walls["teacher"] = _run(_distill("train", "configs/train/synth_teacher.yaml",
                                         *sum((["--set", s] for s in common + [f"train.out={teacher_out}"] + args.teacher_set), [])))
    cache = root / "teacher_cache"
    walls["cache"] = _run(_distill("cache-teacher", "--teacher", "higherhrnet_w16_synth", "--weights",
                                   str(teacher_out / "model.pt"), "--data", str(data), "--split", "train2017",
                                   "--out", str(cache), "--input-size", "256", "--no-progress"))

    runs = []
    for seed in args.seeds:
        runs.append(("step_s GT only", "configs/train/synth_step_s_gt.yaml", seed, f"step_s_gt_seed{seed}"))
        runs.append(("step_s distilled", "configs/train/synth_step_s_kd.yaml", seed, f"step_s_kd_seed{seed}"))
    runs.append(("step_s_1tag distilled (pca)", "configs/train/synth_step_s_1tag_kd.yaml", args.seeds[0],
                 f"step_s_1tag_kd_seed{args.seeds[0]}"))

    results: dict[str, list[tuple[int, dict[str, float], float | str]]] = {}
    for label, config, seed, name in runs:
        out = root / name
        sets = common + [f"train.out={out}", f"train.seed={seed}", f"teacher.weights={teacher_out / 'model.pt'}",
                         f"teacher.store={cache}"] + args.overrides
        if "GT only" in label:
            sets = [s for s in sets if not s.startswith("teacher.")]
        wall: float | str = "reused" if _finished(out) else _run(
            _distill("train", config, *sum((["--set", s] for s in sets), [])))
        results.setdefault(label, []).append((seed, _final_stats(out), wall))

    teacher_stats = _final_stats(teacher_out)
    table = _table(teacher_stats, walls, results)
    print(table)
    (root / "study.md").write_text(table + "\n")
    print(f"written to {root / 'study.md'}")
    return 0


def _run_seconds(out: Path) -> float | str:
    summary = out / "train_summary.json"
    return float(json.loads(summary.read_text())["train_seconds"]) if summary.exists() else "?"


def _tabulate(root: Path, seeds: list[int]) -> int:
    """The table from finished run folders (wall times from their train_summary.json)."""
    results: dict[str, list[tuple[int, dict[str, float], float | str]]] = {}
    for seed in seeds:
        for label, name in (("step_s GT only", f"step_s_gt_seed{seed}"), ("step_s distilled", f"step_s_kd_seed{seed}")):
            if (root / name).exists():
                results.setdefault(label, []).append((seed, _final_stats(root / name), _run_seconds(root / name)))
    one_tag = root / f"step_s_1tag_kd_seed{seeds[0]}"
    if one_tag.exists():
        results["step_s_1tag distilled (pca)"] = [(seeds[0], _final_stats(one_tag), _run_seconds(one_tag))]
    walls = {"teacher": _run_seconds(root / "teacher"), "cache": "see cache.log"}
    table = _table(_final_stats(root / "teacher"), walls, results)
    print(table)
    (root / "study.md").write_text("### Synthetic study: GT-only vs distilled students, equal budget\n\n" + table + "\n")
    print(f"written to {root / 'study.md'}")
    return 0


def _table(teacher_stats: dict[str, float], walls: dict[str, float | str],
           results: dict[str, list[tuple[int, dict[str, float], float | str]]]) -> str:
    import torch

    from distill.flops import count_macs
    from students import build_student
    from teachers import build_teacher

    def cost(model: torch.nn.Module) -> tuple[float, float]:
        rep = count_macs(model, 256)
        return rep.params / 1e6, rep.macs_paper / 1e9

    fmt = lambda w: w if isinstance(w, str) else f"{w / 60:.1f} min"  # noqa: E731  (training loop only)
    rows = ["| model | seeds | AP (mean) | AP per seed | AP50 | params (M) | GMACs @256 | wall time |",
            "|---|---|---|---|---|---|---|---|"]
    p, g = cost(build_teacher("higherhrnet_w16_synth"))
    rows.append(f"| teacher higherhrnet_w16_synth | 0 | {teacher_stats['AP']:.3f} | - | {teacher_stats['AP50']:.3f} "
                f"| {p:.2f} | {g:.2f} | {fmt(walls['teacher'])} |")
    for label, entries in results.items():
        name = "step_s_1tag" if "1tag" in label else "step_s"
        p, g = cost(build_student(name))
        aps = [s["AP"] for _, s, _ in entries]
        ap50 = statistics.mean(s["AP50"] for _, s, _ in entries)
        seeds = ",".join(str(seed) for seed, _, _ in entries)
        rows.append(f"| {label} | {seeds} | {statistics.mean(aps):.3f} | {' / '.join(f'{a:.3f}' for a in aps)} "
                    f"| {ap50:.3f} | {p:.2f} | {g:.2f} | {', '.join(fmt(w) for _, _, w in entries)} |")
    rows.append(f"\ncache build: {fmt(walls['cache'])}; students share one budget (configs/train/synth_step_s_*.yaml)")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
