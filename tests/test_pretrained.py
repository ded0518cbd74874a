"""The teacher shipped in teachers/pretrained/: loads strictly, matches its recorded sha256, says how it was made."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from distill.errors import CheckpointError
from teachers import build_teacher
from teachers.checkpoint import load_checkpoint
from teachers.pretrained import HERE, shipped_teacher

NAME = "higherhrnet_w16_synth"


def test_shipped_teacher_loads_strictly_and_matches_its_hash() -> None:
    shipped = shipped_teacher(NAME)  # raises on a hash mismatch
    raw = torch.load(shipped.weights, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    model = load_checkpoint(build_teacher(NAME), shipped.weights)  # strict: every key, every shape
    assert sum(p.numel() for p in model.parameters()) > 1e6
    rec = shipped.record
    assert rec["command"].startswith("python scripts/pretrain_synth_teacher.py")
    assert rec["config"]["model"]["name"] == NAME
    assert 0.0 <= rec["headline"]["AP"] <= 1.0 and "seed" in rec["headline"]["split"]
    assert shipped.weights.stat().st_size < 8 * 2**20  # a few MB in the repository


def test_a_changed_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for f in (f"{NAME}.pt", f"{NAME}.json"):
        shutil.copy(HERE / f, tmp_path / f)
    with open(tmp_path / f"{NAME}.pt", "r+b") as fh:
        fh.seek(-10, 2)
        fh.write(b"0123456789")
    monkeypatch.setattr("teachers.pretrained.HERE", tmp_path)
    with pytest.raises(CheckpointError, match="does not match the record"):
        shipped_teacher(NAME)
    with pytest.raises(CheckpointError, match="no shipped teacher"):
        shipped_teacher("nonexistent")
    record = json.loads((tmp_path / f"{NAME}.json").read_text())
    (tmp_path / record["file"]).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        shipped_teacher(NAME)


def test_the_script_default_reproduces_the_shipped_stages() -> None:
    """`python scripts/pretrain_synth_teacher.py` with no options must train the teacher that is shipped: its stage
    chain has as many stages as the record, and each stage's steps match."""
    import importlib.util

    from distill.config import load_config

    path = Path(__file__).resolve().parents[1] / "scripts" / "pretrain_synth_teacher.py"
    spec = importlib.util.spec_from_file_location("pretrain_synth_teacher", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rec = shipped_teacher(NAME).record
    configs = [script.DEFAULT_CONFIG, *script.DEFAULT_FINETUNE]
    assert len(configs) == len(rec["stage_steps"])
    for cfg_path, steps in zip(configs, rec["stage_steps"]):
        cfg = load_config(cfg_path)
        images = rec["train_images"]
        assert cfg.optim.epochs * -(-images // cfg.optim.batch_size) == steps, cfg_path
