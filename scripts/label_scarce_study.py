#!/usr/bin/env python
"""Distillation where labels are scarce: a share of the training images keeps its annotations, the teacher
supervises the rest. Equal budget in every arm (the same optimizer steps, batch, schedule, seeds and labelled
images); only what the unlabelled images are used for changes.

Arms (each one change against `gt_labelled`):
- `gt_labelled`:   ground truth only, on the labelled images alone (the unlabelled ones dropped);
- `kd_labelled`:   the base config's distillation recipe on the labelled images alone (no extra images);
- `gt_teacher`:    ground truth on the labelled images, the teacher's heatmaps alone on the unlabelled ones
                   (alpha 0: `data.unlabelled: teacher`);
- `gt_teacher_target`: as `gt_teacher`, with the teacher's heatmaps as the GT loss's target (`loss.kd_type:
                   target`) instead of the recipe's softmax KD, which is blind to the maps' level;
- `kd_teacher`:    the base config's KD mix (alpha) on the labelled images, the teacher alone on the others;
- `gt_pseudo`:     ground truth only, on the labelled images and on the unlabelled ones annotated with the teacher's
                   predictions ("data distillation": `data.unlabelled: pseudo`); the teacher's people are kept
                   down to the score at which their mean count per unlabelled image equals the labelled images'
                   mean number of annotated people (a rule read off the training labels, not tuned on val);
- `gt_teacher_mixed`, `gt_pseudo_mixed`: as `gt_teacher_target` / `gt_pseudo`, but every step takes the
                   `gt_labelled` run's batch of labelled images plus as many unlabelled ones
                   (`data.unlabelled_per_batch`): the same steps and the same ground truth per step, twice the
                   images per step (the usual protocol of semi-supervised training);
- `kd_pseudo_mixed`: as `gt_pseudo_mixed`, with the base config's heatmap KD (alpha, kd_until) on every image of
                   each step: pseudo-labels and the teacher's maps together;
- `gt_labelled_2x`, `gt_all_2x`: the controls of the mixed arms: ground truth only at twice the batch (the same
                   images per step as a mixed arm), on the labelled images / on every image;
- `gt_all`:        for scale, ground truth on every image (what full labels would give).

The base config is a distilled student run (e.g. the `config.json` that `make demo` writes for `step_s`, with
its cached teacher). Each arm's epochs are set so that its steps equal the base config's (images used / batch
x epochs); the lr milestones are fractions of the epochs, so the schedule is the same in steps. Every run is
scored with official decoding and flip test on the base config's val split and on --heldout.

    python scripts/label_scarce_study.py --base runs/demo/step_s/config.json --root runs/label_scarce \\
        --fraction 0.25 --seeds 0 1 2 --heldout runs/heldout_seed7 [--arms ...] [--jobs 2] [--table-only]

With `--unlabelled-split SPLIT` (`data.unlabelled_split`: images without annotations under the base config's data
root, docs/unlabelled.md) the mixed arm takes its extra images from that split as well (at `--fraction 1`: from it
alone, the setting of COCO train2017 + unlabeled2017); the arms are then `gt_labelled`, `kd_labelled`,
`gt_labelled_2x` and `gt_pseudo_mixed`. The pseudo-labels' AP is printed where
`<root>/annotations/person_keypoints_<SPLIT>.json` holds the split's real annotations.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.data.labels import choose_labelled, labelled_count  # noqa: E402

NO_TEACHER = ["teacher.name=''", "loss.alpha=0", "loss.tag_kd_weight=0"]
# arm -> (label, overrides, uses the unlabelled images)
ARMS: dict[str, tuple[str, list[str], bool]] = {
    "gt_labelled": ("GT only, labelled images", NO_TEACHER + ["data.unlabelled=drop"], False),
    "kd_labelled": ("distilled (the base recipe), labelled images", ["data.unlabelled=drop"], False),
    "gt_teacher": ("GT on labelled + teacher alone on unlabelled (alpha 0)",
                   ["data.unlabelled=teacher", "loss.alpha=0", "loss.kd_until=1"], True),
    # the teacher's heatmaps as the GT term's own target (focal MSE) on the unlabelled images: unlike the recipe's
    # softmax KD, which is blind to a heatmap's level (a constant added to a map leaves its softmax unchanged), it
    # also teaches the background level there
    "gt_teacher_target": ("GT on labelled + teacher heatmaps as targets (focal MSE) on unlabelled",
                          ["data.unlabelled=teacher", "loss.alpha=0", "loss.kd_until=1", "loss.kd_type=target"], True),
    "kd_teacher": ("KD mix on labelled + teacher alone on unlabelled",
                   ["data.unlabelled=teacher", "loss.kd_until=1"], True),
    "gt_pseudo": ("GT only, labelled + teacher-annotated (pseudo-labels)",
                  NO_TEACHER + ["data.unlabelled=pseudo", "data.pseudo_labels={pseudo}",
                                "data.pseudo_min_score={min_score}"], True),
    # mixed batches (`data.unlabelled_per_batch`): each step has the labelled-only run's batch of labelled images,
    # the unlabelled ones come on top (equal steps and equal ground truth per step; more images per step)
    "gt_teacher_mixed": ("GT batch + as many unlabelled images with teacher heatmaps (focal MSE) per step",
                         ["data.unlabelled=teacher", "loss.alpha=0", "loss.kd_until=1", "loss.kd_type=target",
                          "data.unlabelled_per_batch={batch}"], False),
    "gt_pseudo_mixed": ("GT batch + as many pseudo-labelled images per step",
                        NO_TEACHER + ["data.unlabelled=pseudo", "data.pseudo_labels={pseudo}",
                                      "data.pseudo_min_score={min_score}", "data.unlabelled_per_batch={batch}"], False),
    # one change against `gt_pseudo_mixed`: the base config's heatmap KD (its alpha, kd_until) on every image of the
    # step as well, the pseudo-labelled ones included (needs a teacher store holding them)
    "kd_pseudo_mixed": ("KD mix (the base recipe) on a labelled batch + as many pseudo-labelled images per step",
                        ["data.unlabelled=pseudo", "data.pseudo_labels={pseudo}", "data.pseudo_min_score={min_score}",
                         "data.unlabelled_per_batch={batch}"], False),
    # controls for the mixed arms, which see twice the images per step: ground truth at twice the batch
    "gt_labelled_2x": ("GT only, labelled images, batch x2 (the mixed arms' images per step)",
                       NO_TEACHER + ["data.unlabelled=drop", "optim.batch_size={batch2}"], False),
    "gt_all_2x": ("GT only, every image labelled, batch x2 (for scale)",
                  NO_TEACHER + ["data.label_fraction=1", "optim.batch_size={batch2}"], True),
    "gt_all": ("GT only, every image labelled (for scale)", NO_TEACHER + ["data.label_fraction=1"], True),
}


# the arms that can take their extra images from an unlabelled split (the mixed arm's epoch is over the labelled
# images, so its steps do not depend on the split's size; a teacher-heatmap arm would need a store holding the split)
SPLIT_ARMS = ("gt_labelled", "kd_labelled", "gt_labelled_2x", "gt_pseudo_mixed")


def read_base(path: Path) -> dict[str, Any]:
    import yaml

    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict) or not cfg.get("teacher", {}).get("name"):
        raise SystemExit(f"{path}: expected a distilled run config with a teacher (teacher.name)")
    return cfg


def train_annotations(cfg: dict[str, Any]) -> tuple[Path, dict[str, Any], list[Any]]:
    """The training split's annotation file, its contents and the ids the training dataset uses, in its order
    (images with at least one annotation, as `CocoKeypointDataset` keeps them)."""
    root, split = Path(cfg["data"]["root"]), cfg["data"].get("train_split", "train2017")
    path = root / "annotations" / f"person_keypoints_{split}.json"
    ann = json.loads(path.read_text())
    annotated = {a["image_id"] for a in ann["annotations"]}
    return path, ann, [im["id"] for im in ann["images"] if im["id"] in annotated]


def train_images(cfg: dict[str, Any]) -> int:
    return len(train_annotations(cfg)[2])


def batch_scale(arm: str) -> int:
    """The arm's batch as a multiple of the base config's (the `_2x` controls)."""
    return 2 if arm.endswith("_2x") else 1


def arm_epochs(cfg: dict[str, Any], fraction: float, uses_all: bool, scale: int = 1) -> tuple[int, int]:
    """(epochs, steps): the base config's steps, as whole epochs over the images this arm trains on at `scale`
    times the base batch."""
    n, bs = train_images(cfg), int(cfg["optim"]["batch_size"])
    steps = (n // bs) * int(cfg["optim"]["epochs"])
    used = n if uses_all else labelled_count(n, fraction)
    bs *= scale
    per_epoch = used // bs
    if per_epoch < 1 or steps % per_epoch:
        raise SystemExit(f"{used} images at batch {bs} ({per_epoch} steps an epoch) cannot give the base config's "
                         f"{steps} steps in whole epochs: choose another --fraction")
    return steps // per_epoch, steps


def predict_teacher(cfg: dict[str, Any], folder: Path, out: Path) -> None:
    """The teacher's people on every image of `folder` (`distill predict`, the base config's input size), once."""
    if out.exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    t = cfg["teacher"]
    subprocess.run([sys.executable, "-m", "distill.cli", "predict", "--model", f"teacher:{t['name']}:{t['weights']}",
                    "--input", str(folder), "--out", str(out), "--input-size", str(cfg["data"]["input_size"]),
                    "--no-progress"], cwd=REPO, check=True)


def pseudo_labels(args: argparse.Namespace, cfg: dict[str, Any]) -> tuple[Path, float]:
    """The teacher's predictions on the unlabelled images (made once) and the person-score threshold."""
    from distill.data.unlabelled import find_image_info, read_image_info

    root, split = Path(cfg["data"]["root"]), cfg["data"].get("train_split", "train2017")
    ann_file, ann, with_people = train_annotations(cfg)
    labelled = set(choose_labelled(with_people, args.fraction, args.label_seed))
    people = [a for a in ann["annotations"] if a["image_id"] in labelled and a.get("num_keypoints", 0) > 0]
    target = len(people) / len(labelled)
    hidden = set(with_people) - labelled
    results: list[dict[str, Any]] = []
    out = args.root / "teacher_train_results.json"
    if hidden:
        predict_teacher(cfg, root / split, out)
        results += json.loads(out.read_text())
    extra: list[Any] = []
    split_name = getattr(args, "unlabelled_split", "")
    if split_name:
        extra = [im["id"] for im in read_image_info(find_image_info(root, split_name))]
        split_out = args.root / f"teacher_{split_name}_results.json"
        predict_teacher(cfg, root / split_name, split_out)
        results += json.loads(split_out.read_text())
        if hidden:  # one file for the run: the hidden training images' people and the split's
            out = args.root / f"teacher_train_{split_name}_results.json"
            out.write_text(json.dumps(results))
        else:
            out = split_out
    unlabelled = hidden | set(extra)
    scores = sorted((r["score"] for r in results if r["image_id"] in unlabelled), reverse=True)
    keep = min(len(scores), round(target * len(unlabelled)))
    min_score = scores[keep - 1] if keep else 0.0
    print(f"pseudo-labels: {target:.2f} annotated people per labelled image -> the teacher's top {keep} people on "
          f"{len(unlabelled)} unlabelled images, person score >= {min_score:.4f}", flush=True)
    if hidden:
        print_pseudo_label_quality(ann_file, out, sorted(hidden), float(min_score))
    split_ann = root / "annotations" / f"person_keypoints_{split_name}.json"
    if extra and split_ann.is_file():
        print(f"the split {split_name}'s real annotations ({split_ann}):", flush=True)
        print_pseudo_label_quality(split_ann, out, sorted(extra, key=str), float(min_score))
    return out, float(min_score)


def print_pseudo_label_quality(ann_file: Path, results_file: Path, image_ids: list[Any], min_score: float) -> None:
    """How good the pseudo-labels are: the teacher's AP against the hidden real annotations of the unlabelled
    images, for all its people and for those kept (the split is labelled really, so this can be measured)."""
    from distill.evaluate import coco_keypoint_eval

    ids = set(image_ids)
    results = [r for r in json.loads(results_file.read_text()) if r["image_id"] in ids]
    for what, rs in (("all people", results), (f"people kept (score >= {min_score:.4f})",
                                               [r for r in results if r["score"] >= min_score])):
        st = coco_keypoint_eval(ann_file, rs, image_ids=image_ids)
        print(f"pseudo-labels against the real annotations of the unlabelled images, {what}: AP {st['AP']:.3f} "
              f"AR {st['AR']:.3f}", flush=True)


def run_arm(arm: str, seed: int, args: argparse.Namespace, cfg: dict[str, Any]) -> None:
    out = args.root / f"{arm}_seed{seed}"
    if (out / "heldout.json").exists():
        print(f"[{out.name}] done", flush=True)
        return
    _, overrides, uses_all = ARMS[arm]
    epochs, steps = arm_epochs(cfg, args.fraction, uses_all, batch_scale(arm))
    sets = [f"train.out={out}", f"train.seed={seed}", "train.eval_every=0", f"optim.epochs={epochs}",
            f"data.label_fraction={args.fraction}", f"data.label_seed={args.label_seed}",
            *(o.format(pseudo=args.pseudo[0] if args.pseudo else "", min_score=args.pseudo[1] if args.pseudo else 0,
                       batch=cfg["optim"]["batch_size"], batch2=2 * cfg["optim"]["batch_size"]) for o in overrides)]
    if getattr(args, "unlabelled_split", "") and arm.endswith("_mixed"):
        sets.append(f"data.unlabelled_split={args.unlabelled_split}")
    cmd = [sys.executable, "-m", "distill.cli", "train", str(args.base)] + sum((["--set", s] for s in sets), [])
    t0 = time.perf_counter()
    print(f"[{out.name}] {epochs} epochs = {steps} steps", flush=True)
    args.root.mkdir(parents=True, exist_ok=True)
    with open(args.root / f"{out.name}.log", "w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
        model = f"{cfg['model']['kind']}:{cfg['model']['name']}:{out / 'model.pt'}"
        for name, data in (("val", Path(cfg["data"]["root"])), ("heldout", args.heldout)):
            subprocess.run([sys.executable, "scripts/compare_decoding.py", "--model", model, "--data", str(data),
                            "--input-size", str(cfg["data"]["input_size"]), "--variants", "official",
                            "--threads", "1", "--out", str(out / f"{name}.json")],
                           cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"[{out.name}] finished in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)


def _ap(path: Path) -> float | None:
    return json.loads(path.read_text())["rows"][0]["AP"] if path.exists() else None


def _mean_std(xs: list[float], signed: bool = False) -> str:
    m = f"{statistics.mean(xs):+.3f}" if signed else f"{statistics.mean(xs):.3f}"
    return f"{m} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else m


def _ci(xs: list[float]) -> str:
    if len(xs) < 2:
        return ""
    from scipy.stats import t

    half = t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    m = statistics.mean(xs)
    return f" (95% CI [{m - half:+.3f}, {m + half:+.3f}])"


def table(args: argparse.Namespace, cfg: dict[str, Any]) -> str:
    n = train_images(cfg)
    k = labelled_count(n, args.fraction)
    split = getattr(args, "unlabelled_split", "")
    lines = [f"Label fraction {args.fraction:g}: {k} of {n} training images labelled (label seed {args.label_seed}); "
             + (f"unlabelled split {split} for the mixed arms; " if split else "") +
             f"val = {cfg['data']['root']} val split, held out = {args.heldout}; official decoding, flip test.", "",
             "| arm | seeds | val AP per seed | val mean ± std | held-out AP per seed | held-out mean ± std |",
             "|---|---|---|---:|---|---:|"]
    scores: dict[str, dict[int, tuple[float, float]]] = {}
    for arm in args.arms:
        got = {}
        for s in args.seeds:
            v, h = _ap(args.root / f"{arm}_seed{s}" / "val.json"), _ap(args.root / f"{arm}_seed{s}" / "heldout.json")
            if v is not None and h is not None:
                got[s] = (v, h)
        scores[arm] = got
        if got:
            seeds = sorted(got)
            lines.append(f"| {ARMS[arm][0]} | {' '.join(map(str, seeds))} | "
                         f"{' / '.join(f'{got[s][0]:.3f}' for s in seeds)} | {_mean_std([got[s][0] for s in seeds])} | "
                         f"{' / '.join(f'{got[s][1]:.3f}' for s in seeds)} | {_mean_std([got[s][1] for s in seeds])} |")
    for arm, got in scores.items():
        # every arm against GT only on the labelled images; the mixed arms also against their batch-x2 control
        controls = (["gt_labelled"] + (["gt_labelled_2x"] if arm.endswith("_mixed") else [])
                    + (["gt_pseudo_mixed"] if arm == "kd_pseudo_mixed" else []))
        for control in controls:
            base = scores.get(control, {})
            seeds = sorted(set(got) & set(base))
            if arm == control or not seeds:
                continue
            for i, split in ((0, "val"), (1, "held out")):
                d = [got[s][i] - base[s][i] for s in seeds]
                lines.append(f"- {ARMS[arm][0]} − {ARMS[control][0]}, {split}: "
                             f"{' / '.join(f'{x:+.3f}' for x in d)} = {_mean_std(d, signed=True)}{_ci(d)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="a distilled run config (YAML or config.json)")
    ap.add_argument("--root", type=Path, default=Path("runs/label_scarce"))
    ap.add_argument("--fraction", type=float, default=0.25, help="share of training images that keep annotations")
    ap.add_argument("--label-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["gt_labelled", "gt_teacher", "kd_teacher"], choices=list(ARMS))
    ap.add_argument("--heldout", type=Path, required=True, help="a COCO-format split nobody tuned on (val2017)")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (each 1 torch thread as in the base)")
    ap.add_argument("--unlabelled-split", default="", metavar="SPLIT",
                    help="images without annotations under the base config's data root (docs/unlabelled.md): the "
                         "mixed arm's extra images come from it too")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args(argv)
    if args.unlabelled_split:
        if not 0 < args.fraction <= 1:
            ap.error("--fraction must be in (0, 1]")
        wrong = [arm for arm in args.arms if arm not in SPLIT_ARMS]
        if wrong:
            ap.error(f"with --unlabelled-split the arms are {', '.join(SPLIT_ARMS)}; not {', '.join(wrong)}")
    elif not 0 < args.fraction < 1:
        ap.error("--fraction must be in (0, 1)")
    cfg = read_base(args.base)
    if not args.table_only:
        jobs = [(arm, s) for s in args.seeds for arm in args.arms]
        for arm, _ in jobs:  # every arm's budget checked before any run starts
            arm_epochs(cfg, args.fraction, ARMS[arm][2], batch_scale(arm))
        args.pseudo = pseudo_labels(args, cfg) if any("pseudo" in arm for arm in args.arms) else None
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for f in [pool.submit(run_arm, arm, s, args, cfg) for arm, s in jobs]:
                f.result()
    text = table(args, cfg)
    print(text)
    args.root.mkdir(parents=True, exist_ok=True)
    name = f"table_f{args.fraction:g}" + (f"_{args.unlabelled_split}" if args.unlabelled_split else "")
    (args.root / f"{name}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
