"""The training loop: exact resume, 2-process gloo DDP, config errors. Tiny model, tiny data, CPU."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from distill.config import ConfigError, load_config
from distill.atomic import try_exclusive_lock
from distill.errors import OutputError
from distill.train import CHECKPOINT, RUN_LOCK, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(make_synthetic_dataset) -> Path:
    return make_synthetic_dataset(seed=5, num_train=8, num_val=2, image_size=96)


def _config(tmp: Path, data: Path, name: str, **train: object) -> Path:
    cfg = {
        "model": {"kind": "teacher", "name": "tiny"},
        "data": {"root": str(data), "input_size": 64, "workers": 0},
        "optim": {"epochs": 3, "batch_size": 2, "lr": 1e-3},
        "train": {"out": str(tmp / name), "seed": 0, "eval_every": 0, "tensorboard": False, "threads": 1, **train},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _losses(out: Path) -> list[float]:
    state = torch.load(out / CHECKPOINT, weights_only=True)
    return [h["total"] for h in state["history"]]


def test_interrupted_and_resumed_run_gives_the_same_losses(tmp_path: Path, data_dir: Path) -> None:
    straight = load_config(_config(tmp_path, data_dir, "straight", max_steps=7))
    train(straight)
    # Interrupted mid-epoch (4 steps per epoch), then resumed past an epoch boundary.
    part = _config(tmp_path, data_dir, "resumed")
    train(load_config(part, ["train.max_steps=3"]))
    assert len(_losses(tmp_path / "resumed")) == 3
    train(load_config(part, ["train.max_steps=7"]))
    a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert len(a) == len(b) == 7
    assert a == b  # exact: same data order, same augmentations, same optimiser state


def test_a_second_process_training_into_the_same_folder_is_refused(tmp_path: Path, data_dir: Path) -> None:
    """Two runs in one folder would overwrite each other's checkpoints: the second is refused before any work."""
    path = _config(tmp_path, data_dir, "busy", max_steps=1)
    (tmp_path / "busy").mkdir()
    holder = try_exclusive_lock(tmp_path / "busy" / RUN_LOCK)  # stands in for a running `distill train`
    assert holder is not None
    with pytest.raises(OutputError, match="another `distill train` process is training into this folder"):
        train(load_config(path))
    assert not (tmp_path / "busy" / CHECKPOINT).exists()
    holder.close()  # the other process ended: the folder is free again, and the lock is released after the run
    train(load_config(path))
    assert (tmp_path / "busy" / CHECKPOINT).exists()
    again = try_exclusive_lock(tmp_path / "busy" / RUN_LOCK)
    assert again is not None
    again.close()


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path: Path, data_dir: Path) -> None:
    path = _config(tmp_path, data_dir, "other", max_steps=1)
    train(load_config(path))
    with pytest.raises(ConfigError, match="written for model"):
        train(load_config(path, ["model.kind=student", "model.name=step_s", "train.max_steps=2"]))


def test_two_process_gloo_ddp(tmp_path: Path, data_dir: Path) -> None:
    path = _config(tmp_path, data_dir, "ddp", max_steps=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "distill.cli", "train", str(path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = _losses(tmp_path / "ddp")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert (tmp_path / "ddp" / "model.pt").exists()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 1e-3, epochz: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown field\(s\) 'optim.epochz' \(did you mean 'optim.epochs'\?\)"):
        load_config(bad)
    with pytest.raises(ConfigError, match="field 'optim.batch_size' must be an integer, got 'two'"):
        load_config(None, ["optim.batch_size=two"])
    with pytest.raises(ConfigError, match="field 'optim.lr' must be a number, got True"):
        load_config(None, ["optim.lr=true"])
    with pytest.raises(ConfigError, match=r"field 'data.aug_scale\[1\]' must be a number, got 'big'"):
        load_config(None, ["data.aug_scale=[0.5, big]"])
    with pytest.raises(ConfigError, match="'optim' must be a mapping of fields, got int"):
        load_config(None, ["optim=3"])


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_train_configs_load_and_name_real_models(path: Path) -> None:
    from distill.models import build_model

    from distill.train import loss_config

    cfg = load_config(path)
    build_model(cfg.model.kind, cfg.model.name, cfg.model.overrides)
    loss = loss_config(cfg, 17)  # validates the loss section
    if cfg.teacher.name:
        build_model("teacher", cfg.teacher.name)
    else:
        assert loss.alpha == 0 and loss.tag_kd_weight == 0


def test_loss_section_reaches_the_loss_and_bad_values_are_named(tmp_path: Path) -> None:
    from distill.train import loss_config

    kd = load_config(REPO / "configs" / "train" / "synth_step_s_kd.yaml")
    loss = loss_config(kd, 17)
    assert (loss.kd_type, loss.kd_temperature, loss.alpha) == (kd.loss.kd_type, kd.loss.kd_temperature, kd.loss.alpha)
    # Every field of the section reaches the loss under its own name (no field-by-field copy to drift), except
    # the feature-KD keys and kd_until, which the Trainer applies itself (tests/test_feature_kd.py).
    from distill.train import TRAINER_LOSS_KEYS

    for f in dataclasses.fields(kd.loss):
        if f.name in TRAINER_LOSS_KEYS:
            assert not hasattr(loss, f.name)
            continue
        want = getattr(kd.loss, f.name)
        assert getattr(loss, f.name) == (tuple(want) if isinstance(want, list) else want), f.name
    # Without a teacher the KD weights are switched off, whatever the section says.
    no_teacher = load_config(REPO / "configs" / "train" / "synth_step_s_kd.yaml", ["teacher.name=''"])
    assert loss_config(no_teacher, 17).alpha == 0.0
    with pytest.raises(ConfigError, match="loss.kd_type = 'kl': expected one of"):  # at load, before any work
        load_config(None, ["loss.kd_type=kl"])
    with pytest.raises(ConfigError, match="loss.ae_loss_type = 'hinge': expected one of"):
        load_config(None, ["loss.ae_loss_type=hinge"])
    assert loss_config(load_config(None, ["loss.ae_loss_type=max"]), 17).ae_loss_type == "max"


def test_max_minutes_stops_early_and_the_run_resumes(tmp_path: Path, data_dir: Path) -> None:
    path = _config(tmp_path, data_dir, "timed")
    result = train(load_config(path, ["train.max_minutes=1e-9"]))
    assert result["steps"] == 1  # the limit is checked after each step
    assert train(load_config(path))["steps"] == 12  # resumed to the end of the 3 epochs


def test_a_resumed_runs_summary_counts_the_whole_runs_time(tmp_path: Path, data_dir: Path) -> None:
    """Interrupted + resumed: train_seconds covers both sessions; resuming a finished run keeps its record."""
    path = _config(tmp_path, data_dir, "twice")
    first = train(load_config(path, ["train.max_steps=3"]))
    whole = train(load_config(path))
    assert whole["steps"] == 12 and whole["train_seconds"] > first["train_seconds"] > 0
    # (the checkpoint records the time a little after the summary did: the final save comes after it)
    assert whole["train_seconds"] == pytest.approx(first["train_seconds"] + whole["session_seconds"], abs=0.5)
    again = train(load_config(path))  # nothing left to train
    summary = json.loads((tmp_path / "twice" / "train_summary.json").read_text())
    assert again["session_seconds"] < whole["session_seconds"]
    assert summary["train_seconds"] >= whole["train_seconds"] and summary["steps"] == 12
    assert summary["images_per_second"] == pytest.approx(12 * 2 / summary["train_seconds"])
    state = torch.load(tmp_path / "twice" / CHECKPOINT, weights_only=True)  # as written before the time was kept
    del state["train_seconds"], state["images_seen"]
    torch.save(state, tmp_path / "twice" / CHECKPOINT)
    train(load_config(path))  # the finished run's summary still supplies its time
    old = json.loads((tmp_path / "twice" / "train_summary.json").read_text())
    assert old["train_seconds"] >= summary["train_seconds"]


@pytest.mark.parametrize("override,message", [
    ("optim.lr=-1", "optim.lr = -1"), ("optim.lr=.nan", "optim.lr"), ("data.input_size=100", "multiple of 64"),
    ("data.input_size=0", "multiple of 64"), ("data.workers=-1", "data.workers = -1: must be >= 0"),
    ("data.max_people=0", "data.max_people = 0"), ("loss.kd_type=l2", "expected one of \\['mse', 'softmax', 'target'\\]"),
    ("train.seed=-3", "train.seed"), ("optim.epochs=-1", "optim.epochs = -1"), ("train.amp=fp8", "train.amp"),
    ("loss.heatmap_loss=focal", "loss.fg_weight = 0.0: must be > 0"), ("train.ema_decay=1.5", "train.ema_decay"),
    ("data.aug_scale=[2, 1]", "data.aug_scale"), ("teacher.mode=cache", "teacher.mode"),
    ("train.device=tpu", "train.device"),
])
def test_config_values_are_checked_before_any_work(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("command,size", [(c, "100") for c in ("export", "cache-teacher", "visualize", "bench",
                                                                 "compare-tags")] + [("oracle", s) for s in ("0", "-64", "abc")])
def test_every_command_shares_one_input_size_rule(command: str, size: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "distill.cli", command, "--input-size", size], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--input-size" in proc.stderr and "Traceback" not in proc.stderr


def test_model_weights_start_a_fine_tune_from_a_file(tmp_path: Path, data_dir: Path) -> None:
    from distill.errors import AEDistillError
    from distill.train import MODEL_FILE, Trainer

    train(load_config(_config(tmp_path, data_dir, "first", max_steps=2)))
    saved = torch.load(tmp_path / "first" / MODEL_FILE, weights_only=True)["state_dict"]
    fine = Trainer(load_config(_config(tmp_path, data_dir, "fine"), [f"model.weights={tmp_path / 'first' / MODEL_FILE}"]))
    got = fine.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in saved.items())
    scratch = Trainer(load_config(_config(tmp_path, data_dir, "scratch")))
    assert not all(torch.equal(scratch.model.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(AEDistillError, match="missing.pt"):
        Trainer(load_config(_config(tmp_path, data_dir, "gone"), [f"model.weights={tmp_path / 'missing.pt'}"]))


@pytest.mark.parametrize("change", ["optim.lr=5e-4", "optim.batch_size=4", "optim.epochs=5", "loss.push_factor=0.1",
                                    "data.input_size=128", "train.seed=3", "data.aug_flip=0.0"])
def test_resume_refuses_a_changed_setting_and_names_it(tmp_path: Path, data_dir: Path, change: str) -> None:
    path = _config(tmp_path, data_dir, "changed", max_steps=1)
    train(load_config(path))
    key = change.split("=")[0]
    with pytest.raises(ConfigError, match=f"config changed \\({key}: .* -> .*\\).*model.weights="):
        train(load_config(path, [change, "train.max_steps=2"]))
    assert len(_losses(tmp_path / "changed")) == 1  # nothing ran
    assert train(load_config(path, ["train.max_steps=2", "train.eval_every=1", "data.workers=1"]))["steps"] == 2


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04truncated"])
def test_unreadable_checkpoint_on_resume_is_named(tmp_path: Path, data_dir: Path, content: bytes) -> None:
    from distill.errors import CheckpointError

    path = _config(tmp_path, data_dir, "broken", max_steps=1)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CHECKPOINT).write_bytes(content)
    with pytest.raises(CheckpointError, match="last.pt: cannot be read as a training checkpoint"):
        train(load_config(path))


def test_non_checkpoint_tensor_file_on_resume_is_named(tmp_path: Path, data_dir: Path) -> None:
    from distill.errors import CheckpointError

    path = _config(tmp_path, data_dir, "tensor", max_steps=1)
    (tmp_path / "tensor").mkdir()
    torch.save(torch.zeros(3), tmp_path / "tensor" / CHECKPOINT)
    with pytest.raises(CheckpointError, match="not a training checkpoint of this project"):
        train(load_config(path))


def test_training_with_evaluation_on_an_empty_val_split_is_refused_before_work(tmp_path: Path,
                                                                                make_synthetic_dataset) -> None:
    from distill.evaluate import NothingToScore

    data = make_synthetic_dataset(seed=6, num_train=2, num_val=0, image_size=96)
    path = _config(tmp_path, data, "noval", max_steps=1, eval_every=1)
    with pytest.raises(NothingToScore, match="val2017.json .*train.eval_every=0.*nothing to score"):
        train(load_config(path))
    assert not (tmp_path / "noval" / CHECKPOINT).exists()
    assert train(load_config(path, ["train.eval_every=0"]))["steps"] == 1


def test_resume_override_applies_the_new_settings_and_records_them(tmp_path: Path, data_dir: Path) -> None:
    import json

    path = _config(tmp_path, data_dir, "override")  # 3 epochs of 4 steps at batch 2
    train(load_config(path, ["train.max_steps=3"]))
    result = train(load_config(path, ["optim.lr=5e-4", "optim.batch_size=1", "train.resume_override=true"]))
    state = torch.load(tmp_path / "override" / CHECKPOINT, weights_only=True)
    lrs = [h["lr"] for h in state["history"]]
    assert all(abs(lr - 1e-3) < 1e-12 for lr in lrs[:3])  # the step schedule's first phase at the old lr ...
    assert abs(lrs[3] - 5e-4) < 1e-12  # ... and the new lr from the resumed step on
    # 3 steps x 2 images were seen in epoch 1: at batch 1 the epoch continues at its 7th image (8 per epoch)
    assert result["steps"] == 3 + (8 - 6) + 8 + 8
    recorded = json.loads((tmp_path / "override" / "config.json").read_text())
    assert recorded["optim"]["lr"] == 5e-4 and recorded["optim"]["batch_size"] == 1
    assert recorded["resumed_with_changes"] == [{"step": 3, "changes": {"optim.batch_size": [2, 1],
                                                                         "optim.lr": [0.001, 0.0005]}}]
