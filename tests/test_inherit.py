"""`model.init_from`: a shallower student of the teacher's module tree starts from the teacher's weights."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from distill.config import ConfigError, load_config
from distill.errors import CheckpointError
from distill.inherit import inherit_weights
from distill.models import build_model, model_config

REPO = Path(__file__).resolve().parents[1]
TEACHER = "higherhrnet_w16_synth"


def _random_teacher(tmp: Path, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    """The synthetic teacher's tree with random weights and random BN statistics, saved as our model.pt."""
    torch.manual_seed(seed)
    teacher = build_model("teacher", TEACHER)
    with torch.no_grad():
        for name, value in teacher.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5 if "running_var" in name else torch.randn_like(value) * 0.1)
    path = tmp / "teacher.pt"
    torch.save({"state_dict": teacher.state_dict()}, path)
    return teacher.eval(), path


def test_lite_student_takes_every_tensor_from_the_teachers_first_blocks_and_modules(tmp_path: Path) -> None:
    teacher, path = _random_teacher(tmp_path)
    student = build_model("student", "hrnet_w16_lite")
    report = inherit_weights(student, path)
    source = teacher.state_dict()
    got = student.state_dict()
    assert set(report.copied) == set(got) and not report.kept and not report.mismatched and not report.adapted
    assert report.params_inherited == report.params_total == sum(p.numel() for p in student.parameters())
    assert all(torch.equal(got[k], source[k]) for k in got)
    # the kept layers are the first block of a branch and the first module of a stage; the second ones are dropped
    assert "stage4.0.branches.0.0.conv1.weight" in got and "stage4.0.branches.0.1.conv1.weight" not in got
    assert "stage4.1.branches.0.0.conv1.weight" in source and "stage4.1.branches.0.0.conv1.weight" not in got


def test_a_full_depth_one_tag_student_reproduces_the_teachers_mean_tag_map(tmp_path: Path) -> None:
    """The adapted output conv: heatmaps exactly the teacher's, the one tag map the mean of its 17."""
    teacher, path = _random_teacher(tmp_path, seed=1)
    cfg = replace(model_config("teacher", TEACHER), tag_per_joint=False, name="one_tag")
    student = build_model("teacher", cfg).eval()
    report = inherit_weights(student, path)
    assert sorted(report.adapted) == ["deconv_layers.0.0.0.weight", "final_layers.0.bias", "final_layers.0.weight"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        t_out, s_out = teacher(x)[0], student(x)[0]
    j = 17
    torch.testing.assert_close(s_out[:, :j], t_out[:, :j])
    torch.testing.assert_close(s_out[:, j:], t_out[:, j:].mean(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)
    # the deconv reads the one map with the sum of the teacher's weights for its 17
    src = torch.load(path, weights_only=True)["state_dict"]["deconv_layers.0.0.0.weight"]
    got = student.state_dict()["deconv_layers.0.0.0.weight"]
    torch.testing.assert_close(got[-1], src[-j:].sum(dim=0))
    torch.testing.assert_close(got[:-1], src[:-j])


def test_a_checkpoint_of_another_tree_is_refused_naming_the_file(tmp_path: Path) -> None:
    _, path = _random_teacher(tmp_path)
    with pytest.raises(CheckpointError, match=r"teacher\.pt.*init_from.*no tensor"):
        inherit_weights(build_model("student", "step_s"), path)
    with pytest.raises(CheckpointError, match="not found"):
        inherit_weights(build_model("student", "hrnet_w16_lite"), tmp_path / "missing.pt")


def test_init_from_reaches_the_trainer_and_excludes_model_weights(tmp_path: Path, make_synthetic_dataset) -> None:
    from distill.train import Trainer

    teacher, path = _random_teacher(tmp_path)
    data = make_synthetic_dataset(seed=5, num_train=4, num_val=1, image_size=64)
    cfg = {"model": {"kind": "student", "name": "hrnet_w16_lite", "init": "kaiming", "init_from": str(path)},
           "data": {"root": str(data), "input_size": 64, "workers": 0},
           "optim": {"epochs": 1, "batch_size": 2},
           "train": {"out": str(tmp_path / "run"), "eval_every": 0, "tensorboard": False, "threads": 1}}
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    trainer = Trainer(load_config(cfg_path))
    try:
        got, source = trainer.model.state_dict(), teacher.state_dict()
        assert all(torch.equal(got[k], source[k]) for k in got)
        assert trainer.inherited.params_inherited == trainer.inherited.params_total
    finally:
        trainer.release()
    with pytest.raises(ConfigError, match="model.init_from.*model.weights"):
        load_config(cfg_path, [f"model.weights={path}"])
