"""Scores of finished training runs: their own last evaluation, or the final model rescored on any split.

Shared by the study scripts (`scripts/synthetic_study.py`, `scripts/compare_runs.py`) so every table reads a
run folder the same way: `config.json` (the resolved config), `eval_epoch*.json` (evaluations during training),
`model.pt` (the final model) and `train_summary.json` (written last: the run finished).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESCORED = "rescored.json"

__all__ = ["BUDGET_KEYS", "RESCORED", "finished", "recorded_config", "run_budget", "final_stats", "rescore"]

# What "equal budget" means for a table of runs: these config entries must agree.
BUDGET_KEYS = (("optim", "epochs"), ("optim", "batch_size"), ("optim", "lr"), ("optim", "milestones"),
               ("optim", "gamma"), ("optim", "schedule"), ("optim", "warmup_steps"), ("optim", "weight_decay"),
               ("train", "max_steps"), ("data", "input_size"), ("data", "root"), ("data", "train_split"))


def finished(out: Path) -> bool:
    return (Path(out) / "train_summary.json").exists() and (Path(out) / "model.pt").exists()


def run_budget(cfg: dict[str, Any]) -> tuple:
    """The budget entries of a recorded config (missing ones as null), comparable across runs."""
    return tuple(json.dumps(cfg.get(section, {}).get(key)) for section, key in BUDGET_KEYS)


def recorded_config(out: Path) -> dict[str, Any]:
    path = Path(out) / "config.json"
    if not path.exists():
        raise SystemExit(f"{path}: missing (every run folder records its resolved config)")
    return json.loads(path.read_text())


def final_stats(out: Path) -> dict[str, float]:
    """The run's last evaluation during training (its own val split and image limit)."""
    evals = sorted(Path(out).glob("eval_epoch*.json"))
    if not evals:
        raise SystemExit(f"{out}: no evaluation was written (train.eval_every = 0? score it with --rescore)")
    return json.loads(evals[-1].read_text())


def rescore(out: Path, cfg: dict[str, Any], data: Path | None = None) -> dict[str, float]:
    """The run's final model scored again with the current test path (flip, official decoding), so every
    row of a table is decoded by the same code even when runs finished under different versions. Cached in
    the run folder, keyed by the model file, the commit and the data."""
    import torch

    from distill.atomic import write_json_atomic
    from distill.models import load_model
    from distill.predict import Predictor, evaluate_model

    out = Path(out)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    path = out / (RESCORED if data is None else f"rescored_{Path(data).name}.json")
    weights = out / "model.pt"
    stamp = {"model_mtime_ns": weights.stat().st_mtime_ns, "commit": commit, "data": str(data or cfg["data"]["root"])}
    if path.exists():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in stamp} == stamp:
            return old["stats"]
    model = load_model(f"{cfg['model']['kind']}:{cfg['model']['name']}:{weights}")
    predictor = Predictor(model, input_size=int(cfg["data"]["input_size"]), flip=True, device="cpu")
    with torch.no_grad():
        stats = evaluate_model(predictor, data or cfg["data"]["root"], cfg["data"]["val_split"],
                               limit=None if data else cfg["data"].get("eval_images") or None, show_progress=False)
    write_json_atomic(path, {**stamp, "stats": stats})
    return stats
