"""Teachers shipped with the project, like the official checkpoints are shipped for COCO.

Each shipped teacher is a float16 weights file `NAME.pt` (`{"state_dict": ..., "model": ...}`, read with
`weights_only=True`) plus a record `NAME.json`: the config it was trained with, the one command that
reproduces it, the file's sha256 and the AP it scored on a val split generated with a seed it never saw.
`shipped_teacher(NAME)` checks the hash before anything uses the file, so a corrupted or swapped file is
an error, never a silently different teacher.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import CheckpointError
from distill.teacher_cache import sha256_file  # the project's one file hash (also used by teacher stores)

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ShippedTeacher:
    name: str
    weights: Path
    record: dict[str, Any]


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.json"))


def shipped_teacher(name: str, verify: bool = True) -> ShippedTeacher:
    """The shipped weights of teacher `name` and their record; the sha256 is checked (verify=True)."""
    record_path = HERE / f"{name}.json"
    if not record_path.is_file():
        raise CheckpointError(f"no shipped teacher {name!r} in {HERE} (available: {available() or 'none'}); "
                              "train one with scripts/pretrain_synth_teacher.py")
    record = json.loads(record_path.read_text())
    weights = HERE / record["file"]
    if not weights.is_file():
        raise CheckpointError(f"{record_path}: its weights file {weights} is missing")
    if verify:
        digest = sha256_file(weights)
        if digest != record["sha256"]:
            raise CheckpointError(f"{weights}: sha256 {digest} does not match the record {record_path} "
                                  f"({record['sha256']}); the file is corrupt or was replaced")
    return ShippedTeacher(name, weights, record)
