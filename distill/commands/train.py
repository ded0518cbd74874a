"""`distill train`: train a teacher from scratch or distill a student (YAML config + --set overrides).

The arguments and one call into `distill.train`, where the work is.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from distill.config import load_config
from distill.train import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML run config (see configs/train/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.epochs=5 (repeatable)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if train.out has a checkpoint")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=not args.no_resume)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(result, indent=2, default=float))
    return 0
