"""Feature KD (`loss.feature_kd_weight`) and the teacher's head in a step student (`head_channels`,
`model.init_from_prefix`)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from distill.config import ConfigError, load_config
from distill.feature_kd import FeatureTap, feature_kd_loss, find_module, tap_names
from distill.inherit import inherit_weights
from distill.models import build_model
from students import build_student
from students.config import StudentConfigError
from tests.test_inherit import TEACHER, _random_teacher


def test_find_module_takes_a_name_suffix_and_refuses_none_or_several() -> None:
    student = build_student("step_s_t16")
    name, module = find_module(student, "final_layers.0")
    assert name == "head.final_layers.0" and module is student.head.final_layers[0]
    with pytest.raises(ValueError, match="no module named.*nope.*head.final_layers.0"):
        find_module(student, "nope")
    with pytest.raises(ValueError, match="modules end with '0'"):
        find_module(student, "0")


def test_the_tap_records_the_input_the_head_reads_once() -> None:
    student = build_student("step_s_t16").eval()
    tap = FeatureTap(student, "final_layers.0")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        student(x)
        expected = student.forward_features(x)  # runs the head's input path again, not the head
    got = tap.take()
    assert got.shape == (1, 16, 16, 16)
    torch.testing.assert_close(got, expected)
    with pytest.raises(RuntimeError, match="did not run"):
        tap.take()
    tap.remove()
    with torch.no_grad():
        student(x)
    assert tap.value is None


def test_feature_kd_loss_is_the_per_image_mean_squared_difference() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 5, 6, requires_grad=True), torch.randn(3, 4, 5, 6, requires_grad=True)
    loss = feature_kd_loss(s, t)
    expected = torch.stack([((s[i] - t[i]) ** 2).mean() for i in range(3)])
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    assert s.grad is not None and t.grad is None  # the teacher side is a constant
    with pytest.raises(ValueError, match=r"\(3, 4, 5, 6\).*\(3, 8, 5, 6\).*head_channels"):
        feature_kd_loss(s, torch.randn(3, 8, 5, 6))


def test_lists_of_maps_give_the_mean_of_their_terms_and_names_split_on_commas() -> None:
    torch.manual_seed(1)
    s = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    t = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    torch.testing.assert_close(feature_kd_loss(s, t), (feature_kd_loss(s[0], t[0]) + feature_kd_loss(s[1], t[1])) / 2)
    with pytest.raises(ValueError, match="a list of 2 maps.*a list of 1 maps"):
        feature_kd_loss(s, t[:1])
    with pytest.raises(ValueError, match="a list of 2 maps.*one map"):
        feature_kd_loss(s, t[0])
    assert tap_names("stage3, stage4,final_layers.0") == ["stage3", "stage4", "final_layers.0"]
    with pytest.raises(ValueError, match="separated by commas"):
        tap_names("stage3,,stage4")


def test_layerwise_hints_on_the_lite_student_compare_every_branch_of_the_named_stages(tmp_path: Path) -> None:
    """hrnet_w16_lite shares the teacher's tree: its stage inputs are lists of maps of the teacher's shapes."""
    teacher, path = _random_teacher(tmp_path, seed=3)
    student = build_model("student", "hrnet_w16_lite").eval()
    inherit_weights(student, path)
    taps = [(FeatureTap(student, n), FeatureTap(teacher, n)) for n in tap_names("stage2,stage3,final_layers.0")]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        student(x), teacher(x)
    values = [(s.take(), t.take()) for s, t in taps]
    assert [len(v[0]) for v in values[:2]] == [2, 3] and values[2][0].shape == (1, 16, 16, 16)
    # stem, layer1 and transition1 are inherited whole, so stage 2 reads exactly the teacher's maps ...
    for s_map, t_map in zip(*values[0]):
        torch.testing.assert_close(s_map, t_map)
    assert float(feature_kd_loss(*values[0]).max()) < 1e-10
    # ... and from there on the dropped blocks change what each stage gives
    assert float(feature_kd_loss(*values[1]).min()) > 1e-4


def test_a_step_student_with_the_teachers_head_widths_takes_its_head_and_reproduces_its_outputs(
        tmp_path: Path) -> None:
    """From the teacher's own features, the inherited head gives exactly the teacher's outputs: so the
    features are all the student has to learn (the head reuse that feature KD relies on)."""
    teacher, path = _random_teacher(tmp_path, seed=2)
    student = build_student("step_s_t16").eval()
    report = inherit_weights(student, path, prefix="head.")
    assert report.copied and all(name.startswith("head.") for name in report.copied)
    assert not report.mismatched and all(not name.startswith("head.") for name in report.kept)
    tap = FeatureTap(teacher, "final_layers.0")
    with torch.no_grad():
        t_out = teacher(torch.randn(2, 3, 64, 64))
        s_out = student.head(tap.take())
    for got, want in zip(s_out, t_out):
        torch.testing.assert_close(got, want)
    with pytest.raises(Exception, match="no tensor"):  # without the prefix the names do not meet
        inherit_weights(build_student("step_s_t16"), path)
    with pytest.raises(StudentConfigError, match="head_channels"):
        build_student("step_s", head_channels=-1)


def _run_config(tmp_path: Path, data: Path, teacher_path: Path, **loss: object) -> Path:
    cfg = {"model": {"kind": "student", "name": "step_s_t16", "init": "kaiming", "init_from": str(teacher_path),
                     "init_from_prefix": "head."},
           "teacher": {"name": TEACHER, "weights": str(teacher_path), "mode": "online"},
           "data": {"root": str(data), "input_size": 64, "workers": 0},
           "loss": {"feature_kd_weight": 0.5, **loss},
           "optim": {"epochs": 1, "batch_size": 2},
           "train": {"out": str(tmp_path / "run"), "eval_every": 0, "tensorboard": False, "threads": 1}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_trainer_adds_the_weighted_feature_term(tmp_path: Path, make_synthetic_dataset) -> None:
    from distill.train import Trainer

    _, teacher_path = _random_teacher(tmp_path)
    data = make_synthetic_dataset(seed=5, num_train=4, num_val=1, image_size=64)
    cfg_path = _run_config(tmp_path, data, teacher_path)
    trainer = Trainer(load_config(cfg_path))
    try:
        batch = next(iter(trainer.loader))
        [(s_tap, t_tap)] = trainer.feature_taps
        assert s_tap.name == "head.final_layers.0" and t_tap.name == "final_layers.0"
        with torch.no_grad():  # the same step's terms, recomputed by hand
            t_outs = trainer.teacher.targets_for(batch)
            t_feat = t_tap.take()
            s_outs = trainer.model(batch.images)
            s_feat = s_tap.take()
            base, _ = trainer.criterion([o.float() for o in s_outs], batch.heatmaps, batch.masks, batch.indices, t_outs)
        expected_kd = feature_kd_loss(s_feat, t_feat).mean()
        logs = trainer.train_step(batch)
        assert logs["feature_kd"] == pytest.approx(float(expected_kd), rel=1e-4)
        assert logs["total"] == pytest.approx(float(base) + 0.5 * float(expected_kd), rel=1e-4)
    finally:
        trainer.release()


def test_feature_kd_needs_an_online_teacher_and_a_real_layer(tmp_path: Path, make_synthetic_dataset) -> None:
    from distill.train import Trainer

    _, teacher_path = _random_teacher(tmp_path)
    data = make_synthetic_dataset(seed=5, num_train=4, num_val=1, image_size=64)
    cfg_path = _run_config(tmp_path, data, teacher_path)
    with pytest.raises(ConfigError, match="feature_kd_weight.*online teacher"):
        load_config(cfg_path, ["teacher.mode=cached", "teacher.store=somewhere"])
    with pytest.raises(ConfigError, match="feature_kd_weight.*online teacher"):
        load_config(cfg_path, ["teacher.name=''"])
    with pytest.raises(ConfigError, match="init_from_prefix.*needs model.init_from"):
        load_config(cfg_path, ["model.init_from=''"])
    with pytest.raises(ConfigError, match="feature_kd_at.*no module named"):
        Trainer(load_config(cfg_path, ["loss.feature_kd_at=final_layers.7"])).release()


def test_kd_until_turns_the_teachers_terms_off_after_that_fraction_of_the_epochs(
        tmp_path: Path, make_synthetic_dataset) -> None:
    from distill.train import Trainer

    _, teacher_path = _random_teacher(tmp_path)
    data = make_synthetic_dataset(seed=5, num_train=4, num_val=1, image_size=64)
    cfg_path = _run_config(tmp_path, data, teacher_path, alpha=0.5, kd_type="softmax", kd_temperature=0.1,
                           kd_until=0.5)
    trainer = Trainer(load_config(cfg_path, ["optim.epochs=2"]))
    try:
        calls = []
        original = trainer.teacher.targets_for
        trainer.teacher.targets_for = lambda batch: calls.append(1) or original(batch)
        batch = next(iter(trainer.loader))
        assert trainer.steps_per_epoch == 2 and trainer.kd_epochs == 1
        logs = []
        for step in range(4):
            trainer.global_step = step  # what fit() advances
            logs.append(trainer.train_step(batch))
        assert len(calls) == 2  # the teacher runs only while its terms apply
        assert all("hm_kd_4" in lg and "feature_kd" in lg for lg in logs[:2])
        assert not any("hm_kd_4" in lg or "feature_kd" in lg for lg in logs[2:])
        assert trainer.criterion_gt.config.alpha == 0.0 and trainer.criterion.config.alpha == 0.5
    finally:
        trainer.release()
    with pytest.raises(ConfigError, match="loss.kd_until = 1.5"):
        load_config(cfg_path, ["loss.kd_until=1.5"])
