#!/usr/bin/env python
"""Train the synthetic teacher that the project ships (teachers/pretrained/), in one command.

    python scripts/pretrain_synth_teacher.py                 # v7: CPU with native bf16 ~4 h on 2 cores; GPU: minutes
    python scripts/pretrain_synth_teacher.py --no-finetune   # v4 (stage 1 only, 8000 steps, ~1 h)
    python scripts/pretrain_synth_teacher.py --finetune configs/train/synth_teacher_v5_stage2.yaml   # v5 (2 stages)
    python scripts/pretrain_synth_teacher.py --config configs/train/synth_teacher_adamw_step.yaml   # v3 (fp32, 3500 steps)
    python scripts/pretrain_synth_teacher.py --device cuda --set optim.batch_size=32
    python scripts/pretrain_synth_teacher.py --config configs/train/synth_teacher_pretrain.yaml \
        --finetune configs/train/synth_teacher_finetune.yaml       # the previous shipped teacher (v2)

Stages (each resumable; rerunning continues an interrupted training):
 1. the training data: `distill synth` seed 0 (the split sizes come from the config's data section);
 2. a held-out test split generated with another seed (--test-seed, default 7) that no recipe was tuned on;
 3. `distill train CONFIG` (default configs/train/synth_teacher_bf16_long.yaml: the shipped v4 recipe, the v3
    recipe of synth_teacher_adamw_step.yaml in bf16 autocast for 8000 steps instead of 3500);
 3b. stages 2, 3, ...: `distill train FINETUNE` from the previous stage's EMA weights (`model.weights`): by default
    (with the default --config) configs/train/synth_teacher_v5_stage2.yaml then synth_teacher_stage3.yaml and
    synth_teacher_stage4.yaml, the shipped v7 (3 x 6000 more steps of the same recipe, with other data orders);
    --finetune FILE picks another (the v2 teacher: configs/train/synth_teacher_finetune.yaml; repeat it for more
    stages, each from the previous one's weights), --no-finetune none;
 4. the final weights rounded to float16, evaluated (flip test, official decoding) on the seed-0 val split
    and on the held-out split, then written to teachers/pretrained/NAME.pt with NAME.json beside it:
    config, command, sha256, scores, wall time, versions.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.atomic import write_bytes_atomic, write_json_atomic  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "train" / "synth_teacher_bf16_long.yaml"
# The stages after stage 1 that give the shipped teacher (v7 = v5's stage 2, then stages 3 and 4), each from the last's weights.
DEFAULT_FINETUNE = [REPO / "configs" / "train" / name for name in
                    ("synth_teacher_v5_stage2.yaml", "synth_teacher_stage3.yaml", "synth_teacher_stage4.yaml")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--root", type=Path, default=Path("runs/pretrain"), help="data and run folder")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--test-seed", type=int, default=7, help="seed of the held-out split (never tuned on)")
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--finetune", type=Path, action="append", default=None,
                   help="a further stage's config, trained from the previous stage's weights; repeatable, in order "
                        "(default: v7's stages 2, 3 and 4 with the default --config, none with another)")
    p.add_argument("--no-finetune", action="store_true", help="stage 1 only (teacher v4 with the default --config)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dest", type=Path, default=REPO / "teachers" / "pretrained")
    p.add_argument("--eval-only", action="store_true", help="skip training (use the finished run)")
    args = p.parse_args(argv)
    if args.no_finetune and args.finetune is not None:
        p.error("--finetune and --no-finetune exclude each other")
    if args.finetune is None and not args.no_finetune and args.config.resolve() == DEFAULT_CONFIG:
        args.finetune = list(DEFAULT_FINETUNE)

    from distill.config import load_config
    from distill.data.synthetic import ensure_dataset
    from distill.models import trained_teacher_config
    from distill.predict import Predictor, evaluate_model
    from distill.train import MODEL_FILE, train
    from teachers import build_teacher
    from teachers.checkpoint import load_checkpoint
    from teachers.pretrained import sha256_file

    data, test = args.root / "data", args.root / f"test_seed{args.test_seed}"
    ensure_dataset(data, seed=0, num_train=args.train_images, num_val=100, image_size=256)
    ensure_dataset(test, seed=args.test_seed, num_train=1, num_val=args.test_images, image_size=256)
    cfg = load_config(args.config, [f"data.root={data}", f"train.out={args.root / 'teacher'}",
                                    f"train.device={args.device}", *args.overrides])
    stages = [cfg]
    for k, finetune in enumerate(args.finetune or [], start=1):  # stage k+1 starts from stage k's (EMA) weights
        out = args.root / ("teacher_ft" if k == 1 else f"teacher_ft{k}")
        stages.append(load_config(finetune, [
            f"data.root={data}", f"train.out={out}", f"train.device={args.device}",
            f"model.weights={Path(stages[-1].train.out) / MODEL_FILE}", *args.overrides]))
    t0 = time.perf_counter()
    if not args.eval_only:
        for stage in stages:
            train(stage)
    wall = time.perf_counter() - t0
    summaries = [json.loads((Path(s.train.out) / "train_summary.json").read_text()) for s in stages]
    cfg = stages[-1]

    name = cfg.model.name
    trained = torch.load(Path(cfg.train.out) / MODEL_FILE, map_location="cpu", weights_only=True)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in trained["state_dict"].items()}
    args.dest.mkdir(parents=True, exist_ok=True)
    weights = args.dest / f"{name}.pt"
    # Saved through a buffer: torch.save names the archive after the file, so saving to a temporary path
    # would make the sha256 depend on that name; the same weights now always give the same file.
    buffer = io.BytesIO()
    torch.save({"state_dict": half, "model": trained["model"], "ema": trained.get("ema", False)}, buffer)
    write_bytes_atomic(weights, buffer.getvalue())

    # strict; the float16 weights as shipped, in the architecture they were trained as (e.g. model.tag_dim)
    model = load_checkpoint(build_teacher(trained_teacher_config(name, weights)), weights).eval()
    device = "cuda" if (args.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
    scores = {}
    for label, root in (("val_seed0", data), (f"test_seed{args.test_seed}", test)):
        predictor = Predictor(model, input_size=cfg.data.input_size, flip=True, device=device)
        stats = evaluate_model(predictor, root, "val2017", show_progress=False)
        scores[label] = {k: round(float(v), 4) for k, v in stats.items()}
        print(f"{name} (float16) on {label}: AP {stats['AP']:.3f} AP50 {stats['AP50']:.3f} AR {stats['AR']:.3f}")
    record = {
        "name": name, "file": weights.name, "sha256": sha256_file(weights), "dtype": "float16",
        # the command that reproduces the file (--eval-only only re-scored runs that command trains)
        "command": " ".join(["python scripts/pretrain_synth_teacher.py"] + [
            shlex.quote(a) for a in (argv or sys.argv[1:]) if a != "--eval-only"]),
        "config": cfg.to_dict(), "stage_configs": [s.to_dict() for s in stages], "train_images": args.train_images,
        "scores": scores, "headline": {"AP": scores[f"test_seed{args.test_seed}"]["AP"],
                                       "split": f"synthetic val2017, seed {args.test_seed}, {args.test_images} images, "
                                                "flip test, official decoding"},
        "train_steps": sum(s["steps"] for s in summaries), "stage_steps": [s["steps"] for s in summaries],
        "train_seconds": sum(s["train_seconds"] for s in summaries),
        "script_seconds": None if args.eval_only else wall,
        "torch": torch.__version__, "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
    }
    write_json_atomic(args.dest / f"{name}.json", record, indent=2)
    print(f"wrote {weights} ({weights.stat().st_size / 2**20:.1f} MiB) and {name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
