#!/usr/bin/env python
"""What limits learning? Learning curves of the synthetic teacher (or a student) under one-change ablations.

Every variant is the base config plus a few `--set` overrides, trained with the same budget (steps,
batch, data) and evaluated every `--eval-every` epochs on the val split and on the first 100 training
images (train AP: under- vs over-fitting). Each evaluation records step and training wall time, so the
table gives AP vs steps and vs minutes. Runs are reused when finished (and resumed when interrupted).

    python scripts/learning_curves.py --run base focal10 focal10+ema     # train what is missing ("+": combined)
    python scripts/learning_curves.py --table [--heldout runs/lc/heldout]  # docs/learning.md table

Variants are defined in VARIANTS below (name -> (what it changes, overrides)); the base is
configs/train/synth_teacher.yaml at input 256, batch 8, on ROOT/data (400 train / 100 val, seed 0).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASE_CONFIG = REPO / "configs" / "train" / "synth_teacher.yaml"
# name -> (the one thing it changes, overrides). `{root}` is replaced by --root.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "base": ("synth_teacher.yaml as is: official MSE, Adam 1.5e-3, step schedule, AE x10", []),
    "weighted10": ("heatmap MSE weighted 1 + 10 x target", ["loss.heatmap_loss=weighted", "loss.fg_weight=10"]),
    "focal10": ("heatmap MSE weighted 1 + 10 x max(target, pred)", ["loss.heatmap_loss=focal", "loss.fg_weight=10"]),
    "focal40": ("heatmap MSE weighted 1 + 40 x max(target, pred)", ["loss.heatmap_loss=focal", "loss.fg_weight=40"]),
    "cosine": ("cosine schedule to 0.01 x lr, 100 warm-up steps",
               ["optim.schedule=cosine", "optim.min_lr_factor=0.01", "optim.warmup_steps=100"]),
    "lr3e-3": ("lr 3e-3", ["optim.lr=3e-3"]),
    "adamw": ("AdamW, weight decay 1e-2 (not on biases/BN)", ["optim.name=adamw", "optim.weight_decay=1e-2"]),
    "ema": ("EMA of weights, decay 0.998, evaluated", ["train.ema_decay=0.998"]),
    "ae1e-3": ("official AE factors 1e-3 (base uses 1e-2)", ["loss.push_factor=1e-3", "loss.pull_factor=1e-3"]),
    "push1e-1": ("push factor 1e-1, pull stays 1e-2 (the tags merge people, docs/learning.md)",
                 ["loss.push_factor=1e-1"]),
    "data2k": ("2000 training images instead of 400 (same steps)", ["data.root={root}/data2k"]),
    "pull1e-1": ("pull factor 1e-1, push stays 1e-2 (tags consistent within a person first)",
                 ["loss.pull_factor=1e-1"]),
    "aemax": ("AE push max(0, 1 - abs(d)) (official option 'max') instead of exp(-d^2): full gradient for every "
              "pair closer than the decoder's threshold of 1", ["loss.ae_loss_type=max"]),
    "tagdim2": ("2-D tags: each of the 17 tag maps is a 2-vector per pixel (AE push/pull on L2 distances)",
                ["model.tag_dim=2"]),
    "tagdim4": ("4-D tags per joint (17 x 4 tag channels)", ["model.tag_dim=4"]),
    "tag1": ("one shared tag map (official TAG_PER_JOINT false) instead of one per joint",
             ["model.overrides.tag_per_joint=false"]),
    "input192": ("input 192 instead of 256 (train and eval; 0.56x the pixels per step)", ["data.input_size=192"]),
    "input128": ("input 128 instead of 256 (train and eval; 0.25x the pixels per step)", ["data.input_size=128"]),
    "fuse143": ("official fusion depth: 1/4/3 modules in stages 2-4 instead of 1/2/2 "
                "(3.93 M params and 1.65 GMACs, not 2.48 M and 1.21)",
                ["model.name=configs/teachers/ablations/higherhrnet_w16_synth_fuse143.yaml"]),
    "aug_light": ("lighter augmentation: scale 0.9-1.2, rotation 10, translation 20",
                  ["data.aug_scale=[0.9, 1.2]", "data.aug_rotation=10", "data.aug_translate=20"]),
}


def is_variant(name: str) -> bool:
    return bool(name) and all(part in VARIANTS for part in name.split("+"))


def variant(name: str) -> tuple[str, list[str]]:
    """A variant name, or several joined by '+' (e.g. 'focal10+lr3e-3': the second change on top of the
    first, so ablations can start from the adopted recipe); overrides apply left to right."""
    if not is_variant(name):
        unknown = [p for p in name.split("+") if p not in VARIANTS] or [name]
        raise ValueError(f"unknown variant(s) {unknown} in {name!r}; known: {', '.join(sorted(VARIANTS))}")
    parts = name.split("+")
    return "; ".join(VARIANTS[p][0] for p in parts), [o for p in parts for o in VARIANTS[p][1]]


def variant_arg(name: str) -> str:
    try:
        variant(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


def run_dir(root: Path, name: str) -> Path:
    return root / f"lc_{name}"


def _num_images(cfg: Any) -> int:
    ann = Path(cfg.data.root) / "annotations" / f"person_keypoints_{cfg.data.train_split}.json"
    return len(json.loads(ann.read_text())["images"])


def train_variant(root: Path, name: str, steps: int, eval_steps: int, threads: int, extra: list[str]) -> None:
    """Equal budgets: `steps` optimizer steps and an evaluation every `eval_steps`, whatever the data size
    (epochs and the evaluation period are derived from the variant's training split)."""
    from distill.config import load_config
    from distill.train import train

    what, overrides = variant(name)
    sets = [o.replace("{root}", str(root)) for o in overrides]
    base = [f"data.root={root}/data", "data.eval_images=100", "data.eval_train_images=100",
            f"train.out={run_dir(root, name)}", f"train.threads={threads}", "train.ckpt_every=50",
            "train.tensorboard=false"]
    probe = load_config(BASE_CONFIG, base + sets + extra)
    per_epoch = _num_images(probe) // probe.optim.batch_size
    if steps % per_epoch or eval_steps % per_epoch:
        raise SystemExit(f"{name}: {per_epoch} steps per epoch do not divide --steps {steps} / --eval-steps "
                         f"{eval_steps}")
    cfg = load_config(BASE_CONFIG, base + sets + extra + [f"optim.epochs={steps // per_epoch}",
                                                          f"train.eval_every={eval_steps // per_epoch}"])
    out = run_dir(root, name)
    if (out / "train_summary.json").exists():
        print(f"{name}: finished already ({out})")
        return
    print(f"== {name}: {what}", flush=True)
    train(cfg)


def curve(out: Path) -> list[dict[str, Any]]:
    points = []
    for path in sorted(out.glob("eval_epoch*.json")):
        rec = json.loads(path.read_text())
        rec.setdefault("epoch", int(path.stem.replace("eval_epoch", "")))
        points.append(rec)
    return points


def heldout_scores(folder: Path | None, name: str) -> dict[str, float] | None:
    """The official-decoding row of `scripts/compare_decoding.py --out FOLDER/NAME.json` (a split nobody
    tuned on), or None when that run was not rescored."""
    if folder is None or not (path := folder / f"{name}.json").exists():
        return None
    rows = [r for r in json.loads(path.read_text())["rows"] if r["variant"] == "official"]
    if not rows:
        raise SystemExit(f"{path}: no 'official' row (rescore with --variants official)")
    return rows[0]


def table(root: Path, names: list[str], heldout: Path | None = None) -> str:
    lines = ["| variant | what changes | AP by step | final val AP | final train AP | held-out AP (APm / APl) "
             "| minutes |", "|---|---|---|---:|---:|---:|---:|"]
    for name in names:
        out = run_dir(root, name)
        pts = curve(out)
        if not pts:
            continue
        cfg = json.loads((out / "config.json").read_text())
        spe = None
        if "step" not in pts[0]:  # older runs: steps from epochs
            n = len(json.loads(Path(cfg["data"]["root"], "annotations",
                                    f"person_keypoints_{cfg['data']['train_split']}.json").read_text())["images"])
            spe = n // cfg["optim"]["batch_size"]
        by_step = ", ".join(f"{p.get('step', (spe or 0) * p['epoch'])}: {p['AP']:.3f}" for p in pts)
        last = pts[-1]
        minutes = last.get("train_seconds")
        held = heldout_scores(heldout, name)
        held_text = f"{held['AP']:.3f} ({held['APm']:.3f} / {held['APl']:.3f})" if held else "-"
        first, _, on_top = name.partition("+")  # a combined variant: name the changes on top of its first part
        what = variant(on_top or first)[0].replace("|", "\\|")  # a literal '|' would split the table cell
        lines.append(f"| {name} | {what} | {by_step} | {last['AP']:.3f} | "
                     f"{last.get('train_AP', float('nan')):.3f} | {held_text} | "
                     f"{minutes / 60 if minutes else float('nan'):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("runs/lc"))
    p.add_argument("--run", nargs="*", default=[], type=variant_arg,
                   help="variants to train: names from VARIANTS, or several joined by '+'")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps of every run (batch 8)")
    p.add_argument("--eval-steps", type=int, default=250, help="evaluate every this many steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", dest="extra", action="append", default=[], help="extra override for every run")
    p.add_argument("--table", action="store_true", help="print the table of all finished/partial runs")
    p.add_argument("--heldout", type=Path, default=None,
                   help="folder of `compare_decoding.py --out NAME.json` rescorings of the final models on a split "
                        "nobody tuned on (a column of the table)")
    args = p.parse_args(argv)
    for name in args.run:
        train_variant(args.root, name, args.steps, args.eval_steps, args.threads, args.extra)
    if args.table or not args.run:
        found = sorted(d.name[len("lc_"):] for d in args.root.glob("lc_*") if d.is_dir())
        print(table(args.root, [n for n in found if is_variant(n)], args.heldout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
