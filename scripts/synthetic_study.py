#!/usr/bin/env python
"""Does distillation help? Teacher vs students on the embedded synthetic dataset, on the CPU.

Stages (each reused when already finished, so a rerun only does what is missing):
 1. `distill synth` the dataset (ROOT/data);
 2. the teacher: the shipped one (teachers/pretrained/, hash-checked) or, with --train-teacher,
    `distill train configs/train/synth_teacher.yaml` (small HigherHRNet from scratch);
 3. `distill cache-teacher` its outputs on the train split;
 4. students with the same budget (epochs, images, lr schedule): step_s on ground truth only and
    step_s distilled, each for every --seeds; step_s_1tag distilled (one shared tag map), every seed;
    with --inherited also hrnet_w16_lite (the teacher's tree at half depth) from scratch, started from the
    teacher's weights (`model.init_from`), started from them + distilled, and started from them + feature KD
    (online teacher), every seed;
    with --ablations also the KD variants of ABLATIONS (first seed): what each loss choice does;
 5. a table: val AP (mean ± std over seeds, and per seed), the loss of each row read back from the run's config.json, params,
    GMACs at the input size, wall time per run. The script refuses to tabulate runs whose budgets differ.

    python scripts/synthetic_study.py [--seeds 0 1 2] [--root runs/study] [--ablations] [--inherited] [--table-only]
                                      [--train-teacher] [--jobs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.run_scores import BUDGET_KEYS, final_stats, finished, recorded_config, rescore, run_budget  # noqa: E402

# (label, config, run-folder prefix, extra overrides); the folder is ROOT/<prefix>_seed<seed>.
MAIN_RUNS = [
    ("step_s GT only", "configs/train/synth_step_s_gt.yaml", "step_s_gt", []),
    ("step_s distilled", "configs/train/synth_step_s_kd.yaml", "step_s_kd", []),
]
ONE_TAG_RUN = ("step_s_1tag distilled", "configs/train/synth_step_s_1tag_kd.yaml", "step_s_1tag_kd", [])
ABLATIONS = [
    ("ablation: + relational tag KD 1e-2", "configs/train/synth_step_s_kd.yaml", "abl_reltag",
     ["loss.tag_kd_weight=1e-2", "loss.tag_kd_type=relational"]),
    ("ablation: 1-tag + relational tag KD 1e-2 (pca)", "configs/train/synth_step_s_1tag_kd.yaml", "abl_1tag_reltag",
     ["loss.tag_kd_weight=1e-2", "loss.tag_kd_type=relational"]),
    # absolute tag KD copies the teacher's 1-D tag values, so these rows keep the model's own 1-D tags (tag_dim=0)
    ("ablation: FPD MSE KD + tag KD", "configs/train/synth_step_s_kd.yaml", "abl_mse_tagkd",
     ["loss.kd_type=mse", "loss.tag_kd_weight=1e-2", "model.tag_dim=0"]),
    ("ablation: MSE KD", "configs/train/synth_step_s_kd.yaml", "abl_mse", ["loss.kd_type=mse"]),
    ("ablation: MSE KD, alpha 0.2", "configs/train/synth_step_s_kd.yaml", "abl_mse_a02",
     ["loss.kd_type=mse", "loss.alpha=0.2"]),
    ("ablation: MSE KD + OHKM on KD", "configs/train/synth_step_s_kd.yaml", "abl_mse_ohkm",
     ["loss.kd_type=mse", "loss.ohkm_kd=true"]),
    ("ablation: softmax KD + OHKM on KD", "configs/train/synth_step_s_kd.yaml", "abl_softmax_ohkm",
     ["loss.ohkm_kd=true"]),
    ("ablation: softmax KD, temperature 0.2", "configs/train/synth_step_s_kd.yaml", "abl_softmax_t02",
     ["loss.kd_temperature=0.2"]),
    ("ablation: softmax KD from the 8-epoch teacher", "configs/train/synth_step_s_kd.yaml", "abl_short_teacher",
     ["teacher.weights={root}/teacher_short/model.pt", "teacher.store={root}/teacher_short_cache"]),
    ("ablation: 1-tag, FPD MSE KD + tag KD", "configs/train/synth_step_s_1tag_kd.yaml", "abl_1tag_mse_tagkd",
     ["loss.kd_type=mse", "loss.tag_kd_weight=1e-2", "loss.tag_reduction=pca", "model.tag_dim=0"]),
]
# --inherited: the teacher's own tree at half its depth (configs/students/hrnet_w16_lite.yaml), from scratch and
# started from the teacher's weights (model.init_from), with the same recipes and budget as the step_s rows.
# It keeps its own 1-D tags (tag_dim=0, not the step recipes' 2): its head then has the teacher's shape and is inherited.
LITE = ["model.name=hrnet_w16_lite", "model.tag_dim=0"]
INHERITED_RUNS = [
    ("hrnet_w16_lite GT only", "configs/train/synth_step_s_gt.yaml", "lite_gt", LITE + ["model.init=kaiming"]),
    ("hrnet_w16_lite inherited, GT only", "configs/train/synth_step_s_gt.yaml", "lite_inherit_gt",
     LITE + ["model.init_from={teacher_weights}"]),
    ("hrnet_w16_lite inherited + distilled", "configs/train/synth_step_s_kd.yaml", "lite_inherit_kd",
     LITE + ["model.init_from={teacher_weights}"]),
    # feature KD (layer-wise hints at the inputs of stages 3 and 4 and of the 1/4 output conv; docs/learning.md,
    # session 23): the teacher runs online on each batch, since its features cannot be warped from the cache
    ("hrnet_w16_lite inherited + feature KD", "configs/train/synth_step_s_gt.yaml", "lite_inherit_fkd",
     LITE + ["model.init_from={teacher_weights}", "teacher.name=higherhrnet_w16_synth", "teacher.mode=online",
             "loss.feature_kd_weight=1.0", "loss.feature_kd_at=stage3,stage4,final_layers.0"]),
]
# A weaker teacher for the teacher-quality ablation: the same config and schedule shape, 8 epochs not 24.
SHORT_TEACHER = ("teacher_short", ["optim.epochs=8"])


def _run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - t0


def _run_logged(name: str, cmd: list[str], log: Path) -> float:
    """One run in its own process, its output in LOG (runs side by side would interleave on the terminal)."""
    print(f"$ {' '.join(cmd)} > {log}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    print(f"[{name}] {'finished' if code == 0 else f'FAILED (exit {code}), see {log}'} after {wall / 60:.1f} min",
          flush=True)
    if code != 0:
        raise RuntimeError(f"{name}: exit {code}, see {log}")
    return wall


def _run_students(jobs: list[tuple[str, list[str]]], parallel: int, root: Path, user_set_threads: bool) -> None:
    """The student trainings, PARALLEL at a time; each then gets cores // PARALLEL torch threads (unless the
    caller set train.threads), so two 1-thread runs share a 2-core CPU the way the studies were always run.
    Every job is tried even if one fails; the failures are reported together at the end."""
    if parallel <= 1:
        for _, cmd in jobs:
            _run(cmd)
        return
    threads = max(1, (os.cpu_count() or 1) // parallel)
    if not user_set_threads:
        jobs = [(name, cmd + ["--set", f"train.threads={threads}"]) for name, cmd in jobs]
    root.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = {pool.submit(_run_logged, name, cmd, root / f"{name}.log"): name for name, cmd in jobs}
        failed = [futures[f] for f in as_completed(futures) if f.exception() is not None]
    if failed:
        raise SystemExit(f"{len(failed)} student run(s) failed: {', '.join(sorted(failed))} (logs in {root})")


def _distill(*args: str) -> list[str]:
    return [sys.executable, "-m", "distill.cli", *args]


def _sets(items: list[str]) -> list[str]:
    return sum((["--set", s] for s in items), [])


def _run_seconds(out: Path) -> float | str:
    summary = out / "train_summary.json"
    return float(json.loads(summary.read_text())["train_seconds"]) if summary.exists() else "?"


def _logged_cache_time(log: Path) -> str:
    """The 'computed N images in S s' line of a cache-teacher log, or where to look."""
    if log.exists():
        for line in reversed(log.read_text().splitlines()):
            if line.startswith("computed "):
                return line.split(" (")[0]
    return f"see {log}"


def describe_loss(cfg: dict[str, Any]) -> str:
    """The distillation part of a run's loss, from its recorded config (older runs: kd_type 'mse')."""
    loss, teacher = cfg["loss"], cfg.get("teacher", {})
    gt = "" if loss.get("heatmap_loss", "mse") == "mse" else f" ({loss['heatmap_loss']} MSE, fg {loss['fg_weight']:g})"
    if not teacher.get("name"):
        return "GT only" + gt
    parts = [f"GT{gt}"] if gt else []
    if loss["alpha"] > 0:
        kd = loss.get("kd_type", "mse")
        kd = f"softmax KD tau {loss.get('kd_temperature', 1.0):g}" if kd == "softmax" else "MSE KD"
        parts.append(f"{kd}, alpha {loss['alpha']:g}")
        if loss.get("ohkm_kd"):
            parts.append(f"OHKM top-{loss['ohkm_topk']} on KD")
    if loss.get("ohkm_gt"):
        parts.append(f"OHKM top-{loss['ohkm_topk']} on GT")
    if loss.get("feature_kd_weight", 0) > 0:
        parts.append(f"feature KD {loss['feature_kd_weight']:g} at {loss['feature_kd_at']}")
    if loss.get("kd_until", 1.0) < 1:
        parts.append(f"KD for the first {loss['kd_until']:g} of the epochs")
    kind = loss.get("tag_kd_type", "absolute")
    parts.append(f"tag KD {loss['tag_kd_weight']:g}" + (f" {kind}" if loss["tag_kd_weight"] > 0 else "")
                 + (f" ({loss['tag_reduction']})"
                 if loss["tag_kd_weight"] > 0 and cfg["model"]["name"].endswith("_1tag") else ""))
    return ", ".join(parts) + f" ({teacher.get('mode', 'online')} teacher from {Path(teacher['weights']).parent.name}/)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("runs/study"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-teacher", action="store_true",
                    help="train the teacher from scratch (default: the shipped pretrained teacher)")
    ap.add_argument("--ablations", action="store_true", help="also run/tabulate the KD ablations (first seed)")
    ap.add_argument("--inherited", action="store_true",
                    help="also run/tabulate hrnet_w16_lite from scratch vs started from the teacher's weights, every seed")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra overrides for the STUDENT runs (the budget must stay equal across them)")
    ap.add_argument("--teacher-set", action="append", default=[], help="extra overrides for the teacher run")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="student runs N at a time, each with cores // N threads and its log in ROOT/NAME.log "
                         "(default 1: one after the other, all threads)")
    ap.add_argument("--table-only", action="store_true", help="only tabulate the finished runs under --root")
    ap.add_argument("--rescore", action="store_true",
                    help="score every finished student again with the current code (cached per commit) and tabulate that")
    ap.add_argument("--rescore-on", type=Path, default=None, metavar="DATA",
                    help="with --rescore: score on this dataset's whole val split instead (e.g. one drawn with a fresh seed)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    root = args.root
    runs = [(label, cfg, f"{prefix}_seed{seed}", extra, seed)
            for seed in args.seeds for label, cfg, prefix, extra in MAIN_RUNS]
    label, cfg, prefix, extra = ONE_TAG_RUN
    runs += [(label, cfg, f"{prefix}_seed{seed}", extra, seed) for seed in args.seeds]
    if args.inherited:
        runs += [(label, cfg, f"{prefix}_seed{seed}", extra, seed)
                 for label, cfg, prefix, extra in INHERITED_RUNS for seed in args.seeds]
    if args.ablations:  # run on the first seed; other seeds' finished folders are tabulated too
        runs += [(label, cfg, f"{prefix}_seed{seed}", extra, seed)
                 for label, cfg, prefix, extra in ABLATIONS for seed in args.seeds]
    walls: dict[str, float | str] = {"cache": _logged_cache_time(root / "cache.log")}
    teacher_out, cache, data = root / "teacher", root / "teacher_cache", root / "data"
    teachers = [(teacher_out, args.teacher_set)]
    if args.ablations and args.train_teacher:
        teachers.append((root / SHORT_TEACHER[0], args.teacher_set + SHORT_TEACHER[1]))
    shipped = None
    if not args.train_teacher:
        from teachers.pretrained import shipped_teacher

        shipped = shipped_teacher("higherhrnet_w16_synth")
    teacher_weights = shipped.weights if shipped else teacher_out / "model.pt"
    if not args.table_only:
        walls["data"] = _run(_distill("synth", "--out", str(data)))
        common = [f"data.root={data}"]
        for out, extra in teachers:
            if shipped is None and not finished(out):
                _run(_distill("train", "configs/train/synth_teacher.yaml",
                              *_sets(common + [f"train.out={out}"] + extra)))
            weights = teacher_weights if out == teacher_out else out / "model.pt"
            cache_wall = _run(_distill("cache-teacher", "--teacher", "higherhrnet_w16_synth", "--weights",
                                       str(weights), "--data", str(data), "--split", "train2017",
                                       "--out", f"{out}_cache", "--input-size", "256", "--no-progress"))
            if out == teacher_out:
                walls["cache"] = cache_wall
        jobs = []
        for label, config, name, extra, seed in runs:
            extra = [e.format(root=root, teacher_weights=teacher_weights) for e in extra]
            out = root / name
            sets = common + [f"train.out={out}", f"train.seed={seed}", f"teacher.weights={teacher_weights}",
                             f"teacher.store={cache}"] + extra + args.overrides
            if "GT only" in label:
                sets = [s for s in sets if not s.startswith("teacher.")]
            if not finished(out) and (seed == args.seeds[0] or not label.startswith("ablation")):
                jobs.append((name, _distill("train", config, *_sets(sets))))
        _run_students(jobs, args.jobs, root, user_set_threads=any(
            s.startswith("train.threads=") for s in args.overrides))
    results: dict[str, list[tuple[int, dict[str, float], float | str, dict[str, Any]]]] = {}
    budgets: dict[tuple, list[str]] = {}
    for label, _, name, _, seed in runs:
        out = root / name
        if not finished(out):
            if not (label.startswith("ablation") and seed != args.seeds[0]):
                print(f"(skipping {out}: not finished)")
            continue
        cfg = recorded_config(out)
        budgets.setdefault(run_budget(cfg), []).append(name)
        stats = rescore(out, cfg, args.rescore_on) if args.rescore else final_stats(out)
        results.setdefault(label, []).append((seed, stats, _run_seconds(out), cfg))
    if len(budgets) > 1:
        raise SystemExit("the student runs do not share one budget: " + "; ".join(
            f"{dict(zip((f'{s}.{k}' for s, k in BUDGET_KEYS), b))}: {names}" for b, names in budgets.items()))
    if shipped is not None:  # its recorded score on this same val split (seed 0): it is not retrained here
        teacher_stats = [("teacher higherhrnet_w16_synth (shipped, float16)", shipped.record["scores"]["val_seed0"],
                          "shipped")]
    else:
        teacher_rows = [("teacher higherhrnet_w16_synth", teacher_out)]
        if args.ablations and finished(root / SHORT_TEACHER[0]):
            teacher_rows.append(("teacher, 8 epochs (ablation)", root / SHORT_TEACHER[0]))
        teacher_stats = [(label, final_stats(out), _run_seconds(out)) for label, out in teacher_rows]
    table = _table(teacher_stats, walls, results)
    print(table)
    where = f" on {args.rescore_on} val2017 (all images)" if args.rescore_on else ""
    scored = (f"every student rescored by `--rescore`{where} (flip test, official decoding)" if args.rescore
              else "scores from each run's final evaluation")
    table += f"\n{scored}"
    (root / "study.md").write_text("### Synthetic study: GT-only vs distilled students, equal budget\n\n" + table + "\n")
    print(f"written to {root / 'study.md'}")
    return 0


def _table(teachers: list[tuple[str, dict[str, float], float | str]], walls: dict[str, float | str],
           results: dict[str, list[tuple[int, dict[str, float], float | str, dict[str, Any]]]]) -> str:
    import torch

    from distill.config import ModelSection
    from distill.flops import count_macs
    from students import build_student
    from teachers import build_teacher

    def cost(model: torch.nn.Module) -> tuple[float, float]:
        rep = count_macs(model, 256)
        return rep.params / 1e6, rep.macs_paper / 1e9

    fmt = lambda w: w if isinstance(w, str) else f"{w / 60:.1f} min"  # noqa: E731  (training loop only)
    rows = ["| model | loss | seeds | AP (mean ± std) | AP per seed | AP50 (mean) | params (M) | GMACs @256 | wall time |",
            "|---|---|---|---|---|---|---|---|---|"]
    p, g = cost(build_teacher("higherhrnet_w16_synth"))
    for label, stats, wall in teachers:
        rows.append(f"| {label} | GT only | 0 | {stats['AP']:.3f} | - | {stats['AP50']:.3f} | {p:.2f} | {g:.2f} "
                    f"| {fmt(wall)} |")
    for label, entries in results.items():
        losses = {describe_loss(c) for *_, c in entries}
        if len(losses) > 1:
            raise SystemExit(f"{label}: the seeds were run with different losses: {sorted(losses)}")
        section = ModelSection(**entries[0][3]["model"])  # the recorded model, tag layout overrides included
        p, g = cost(build_student(section.name, **section.model_overrides()))
        aps = [s["AP"] for _, s, _, _ in entries]
        ap50 = statistics.mean(s["AP50"] for _, s, _, _ in entries)
        seeds = ",".join(str(seed) for seed, *_ in entries)
        std = f" ± {statistics.stdev(aps):.3f}" if len(aps) > 1 else ""
        rows.append(f"| {label} | {losses.pop()} | {seeds} | {statistics.mean(aps):.3f}{std} "
                    f"| {' / '.join(f'{a:.3f}' for a in aps)} | {ap50:.3f} | {p:.2f} | {g:.2f} "
                    f"| {', '.join(fmt(w) for _, _, w, _ in entries)} |")
    rows.append(f"\ncache build: {fmt(walls['cache'])}; students share one budget (configs/train/synth_step_s_*.yaml)")
    rows += _paired(results, "step_s distilled", "step_s GT only", "distilled - GT only")
    rows += _paired(results, "ablation: + relational tag KD 1e-2", "step_s distilled", "relational tag KD - no tag KD")
    rows += _paired(results, "hrnet_w16_lite inherited, GT only", "hrnet_w16_lite GT only",
                    "hrnet_w16_lite inherited - from scratch (both GT only)")
    rows += _paired(results, "hrnet_w16_lite inherited + distilled", "hrnet_w16_lite inherited, GT only",
                    "hrnet_w16_lite inherited: + heatmap KD - GT only")
    rows += _paired(results, "hrnet_w16_lite inherited + feature KD", "hrnet_w16_lite inherited, GT only",
                    "hrnet_w16_lite inherited: + feature KD - GT only")
    rows += _paired(results, "hrnet_w16_lite inherited + feature KD", "hrnet_w16_lite GT only",
                    "hrnet_w16_lite inherited + feature KD - from scratch GT only (all the teacher gives vs none)")
    one = {seed: s["AP"] for seed, s, *_ in results.get(ONE_TAG_RUN[0], [])}
    many = {seed: s["AP"] for seed, s, *_ in results.get("step_s distilled", [])}
    common = sorted(set(one) & set(many))
    if common:
        ratio = statistics.mean(one[s] for s in common) / max(1e-9, statistics.mean(many[s] for s in common))
        rows.append(f"1-tag / 17-tag distilled AP (seeds {','.join(map(str, common))}): {ratio:.2f}")
    return "\n".join(rows)


def _paired(results: dict[str, list[tuple[int, dict[str, float], float | str, dict[str, Any]]]], a: str, b: str,
            what: str) -> list[str]:
    """Per-seed AP differences a - b over the seeds both rows ran (the same seed = the same data order)."""
    ap_a = {seed: s["AP"] for seed, s, *_ in results.get(a, [])}
    ap_b = {seed: s["AP"] for seed, s, *_ in results.get(b, [])}
    seeds = sorted(set(ap_a) & set(ap_b))
    if not seeds:
        return []
    gaps = [ap_a[s] - ap_b[s] for s in seeds]
    std = f" ± {statistics.stdev(gaps):.3f}" if len(gaps) > 1 else ""
    return [f"{what}, per seed: " + ", ".join(f"seed {s} {g:+.3f}" for s, g in zip(seeds, gaps))
            + f"; mean {statistics.mean(gaps):+.3f}{std}"]


if __name__ == "__main__":
    sys.exit(main())
