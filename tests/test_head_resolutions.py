"""Students with a 1/4-only head (`num_deconvs: 0`, the HRNet AE baseline of the HigherHRNet paper): one output,
trained with GT and KD from a two-output teacher (online or cached), loaded back and decoded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.losses import DistillLoss, LossConfig
from distill.models import contract_of, load_model
from students import build_student


@pytest.mark.parametrize("name", ["step_s", "step_s_1tag", "timm_mobilenetv3_large_100"])
def test_quarter_only_head_has_one_output_and_the_same_quarter_layers(name: str) -> None:
    full = build_student(name, tag_dim=2).eval()
    quarter = build_student(name, tag_dim=2, num_deconvs=0).eval()
    lay_full, lay_q = contract_of(full), contract_of(quarter)
    assert lay_full.strides == (4, 2) and lay_q.strides == (4,)
    assert lay_q.heatmap_outputs == (True,) and lay_q.tag_outputs == (True,)
    assert lay_q.channels(0) == lay_full.channels(0)
    # Same modules up to the 1/4 output: the 1/4-only state_dict is the full one minus the 1/2 branch.
    full_keys, q_keys = set(full.state_dict()), set(quarter.state_dict())
    assert q_keys < full_keys
    assert all(k.startswith(("head.deconv_layers.", "head.final_layers.1.")) for k in full_keys - q_keys)
    # With the full net's weights, the 1/4 output is the full net's 1/4 output.
    quarter.load_state_dict({k: v for k, v in full.state_dict().items() if k in q_keys})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (y,) = quarter(x)
        y_full, z_full = full(x)
    assert z_full.shape[-1] == 2 * y.shape[-1]
    torch.testing.assert_close(y, y_full)


def test_num_deconvs_is_checked_by_name() -> None:
    for bad in (2, -1):
        with pytest.raises(Exception, match="num_deconvs"):
            build_student("step_s", num_deconvs=bad)


def _two_output_batch() -> tuple:
    """Student outputs at 1/4 (17 heatmaps + 17 tags) and 1/2, their GT targets, masks, tag index and a teacher."""
    torch.manual_seed(0)
    b, j = 2, 17
    y = torch.randn(b, j + j, 16, 16, requires_grad=True)
    z = torch.randn(b, j, 32, 32)
    gts = [torch.rand(b, j, 16, 16), torch.rand(b, j, 32, 32)]
    masks = [torch.ones(b, 16, 16), torch.ones(b, 32, 32)]
    idx = torch.zeros(b, 30, j, 2, dtype=torch.long)
    idx[:, :2, :, 0] = torch.randint(0, 16 * 16, (b, 2, j))
    idx[:, :2, :, 1] = 1
    teacher = [torch.randn(b, j + j, 16, 16), torch.randn(b, j, 32, 32)]
    return y, z, gts, masks, idx, teacher


def test_loss_of_one_output_is_the_quarter_terms_of_two() -> None:
    """With one output the total is the 1/4 heatmap term plus the AE terms; no 1/2 target or teacher map is read
    (a two-output teacher's 1/2 map is simply not used)."""
    y, z, gts, masks, idx, teacher = _two_output_batch()
    crit = DistillLoss(LossConfig(alpha=0.5))
    total2, logs2 = crit([y, z], gts, masks, idx, teacher)
    total1, logs1 = crit([y], gts[:1], masks[:1], idx, teacher)
    assert "hm_2" not in logs1 and "hm_2" in logs2
    for key in ("hm_4", "hm_gt_4", "hm_kd_4", "push", "pull"):
        assert logs1[key] == pytest.approx(logs2[key], rel=1e-6)
    assert total1.item() == pytest.approx(total2.item() - logs2["hm_2"], rel=1e-5)
    with pytest.raises(ValueError, match="one GT heatmap and mask tensor per output"):
        crit([y], gts, masks, idx, teacher)


COMMON = ["data.input_size=64", "data.workers=0", "optim.batch_size=2", "optim.epochs=1", "train.max_steps=2",
          "train.eval_every=0", "train.tensorboard=false", "train.threads=1"]


def _tiny_teacher_store(root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(weights, store): a `tiny` teacher trained 2 steps on `root` and its cached outputs at input 64."""
    from distill.cli import main as cli_main
    from distill.config import load_config
    from distill.train import train

    teacher_dir = tmp_path / "teacher"
    train(load_config(None, ["model.kind=teacher", "model.name=tiny", f"train.out={teacher_dir}",
                             f"data.root={root}", *COMMON]))
    weights, store = teacher_dir / "model.pt", tmp_path / "store"
    assert cli_main(["cache-teacher", "--teacher", "tiny", "--weights", str(weights), "--data", str(root),
                     "--out", str(store), "--workers", "0", "--no-progress", "--input-size", "64"]) == 0
    return weights, store


def test_train_quarter_only_student_with_cached_teacher_and_decode(make_synthetic_dataset, tmp_path: Path) -> None:
    from distill.config import load_config
    from distill.predict import Predictor
    from distill.train import train

    root = make_synthetic_dataset(seed=0, num_train=4, num_val=2, image_size=128)
    common = [f"data.root={root}", *COMMON]
    weights, store = _tiny_teacher_store(root, tmp_path)
    # The loader warps only the outputs the student has: the 1/4 map, the same as when it warps both.
    from distill.data.coco import CocoKeypointDataset
    from distill.teacher_cache.targets import CachedTeacher

    ds = CocoKeypointDataset(root, "train2017", input_size=64, output_sizes=(16,))
    for index in range(2):
        sample = ds.make_sample(index)
        both = CachedTeacher(store).targets_for_sample(sample)
        quarter = CachedTeacher(store, num_outputs=1).targets_for_sample(sample)
        assert len(both) == 2 and len(quarter) == 1
        np.testing.assert_array_equal(quarter[0], both[0])
    with pytest.raises(ValueError, match="num_outputs"):
        CachedTeacher(store, num_outputs=0)
    run = tmp_path / "student"
    train(load_config(None, [
        "model.kind=student", "model.name=step_s", "model.tag_dim=2", "model.overrides={num_deconvs: 0}",
        "teacher.name=tiny", f"teacher.weights={weights}", "teacher.mode=cached", f"teacher.store={store}",
        "loss.alpha=0.5", f"train.out={run}", *common]))
    model = load_model(f"student:step_s:{run / 'model.pt'}").eval()
    lay = contract_of(model)
    assert lay.strides == (4,) and lay.tag_dim == 2
    image = (np.random.default_rng(0).uniform(0, 255, (80, 96, 3))).astype(np.uint8)
    with pytest.warns(UserWarning, match="finest output is at 1/4 of the input"):
        pred = Predictor(model, input_size=64).predict(image, return_maps=True)
    assert pred.heatmaps.shape[0] == 17 and pred.tags.shape[-1] == 4  # D = 2 x [original, flipped]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the maps are decoded at their own resolution,
        Predictor(model, input_size=64, project=False)
        Predictor(build_student("step_s").eval(), input_size=64)  # nor for a model with a 1/2 output


def test_loader_stops_warping_the_cached_maps_after_kd_until(make_synthetic_dataset, tmp_path: Path) -> None:
    """Past `loss.kd_until` no step reads the teacher's maps, so the loader no longer warps them."""
    from distill.config import load_config
    from distill.train import Trainer

    root = make_synthetic_dataset(seed=0, num_train=4, num_val=2, image_size=128)
    weights, store = _tiny_teacher_store(root, tmp_path)
    cfg = load_config(None, [
        "model.kind=student", "model.name=step_s", "teacher.name=tiny", f"teacher.weights={weights}",
        "teacher.mode=cached", f"teacher.store={store}", "loss.alpha=0.5", "loss.kd_until=0.5",
        f"data.root={root}", f"train.out={tmp_path / 'run'}", *COMMON, "optim.epochs=2", "train.max_steps=0"])
    trainer = Trainer(cfg)
    try:
        warped, read = [], []
        cached = trainer.cached_teacher
        original_sample, original_batch = cached.targets_for_sample, cached.targets_for
        cached.targets_for_sample = lambda sample, *a, **k: warped.append(trainer.epoch) or original_sample(
            sample, *a, **k)
        cached.targets_for = lambda batch: read.append(trainer.epoch) or original_batch(batch)
        assert trainer.steps_per_epoch == 2 and trainer.kd_epochs == 1
        trainer.fit()
        assert read == [0, 0]        # the two KD steps of epoch 0
        assert warped == [0] * 4     # 4 images of epoch 0; none in epoch 1
        assert trainer.global_step == 4
    finally:
        trainer.release()


def test_kd_outputs_limits_heatmap_kd_to_the_first_outputs(tmp_path: Path) -> None:
    """`loss.kd_outputs: 1`: the teacher's 1/4 maps only; the 1/2 output gets the GT term alone, and a teacher
    list with just the 1/4 map is enough."""
    from distill.config import ConfigError, load_config

    y, z, gts, masks, idx, teacher = _two_output_batch()
    both = DistillLoss(LossConfig(alpha=0.5, kd_type="softmax", kd_temperature=0.1))
    first = DistillLoss(LossConfig(alpha=0.5, kd_type="softmax", kd_temperature=0.1, kd_outputs=1))
    _, logs_both = both([y, z], gts, masks, idx, teacher)
    total, logs = first([y, z], gts, masks, idx, teacher[:1])
    assert "hm_kd_2" not in logs and "hm_kd_4" in logs
    assert logs["hm_2"] == pytest.approx(logs["hm_gt_2"]) == pytest.approx(logs_both["hm_gt_2"])
    assert logs["hm_4"] == pytest.approx(logs_both["hm_4"])
    assert total.item() == pytest.approx(logs["hm_4"] + logs["hm_2"] + 1e-3 * (logs["push"] + logs["pull"]), rel=1e-5)
    with pytest.raises(ValueError, match="kd_outputs"):
        LossConfig(kd_outputs=-1)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text("model: {kind: student, name: step_s}\nteacher: {name: tiny, weights: w.pt}\n")
    with pytest.raises(ConfigError, match="loss.kd_outputs"):
        load_config(cfg_path, ["loss.kd_outputs=-1"])
    with pytest.raises(ConfigError, match="loss.kd_outputs = 1.*must be 0 with data.unlabelled 'teacher'"):
        load_config(cfg_path, ["loss.kd_outputs=1", "data.label_fraction=0.5", "data.unlabelled=teacher"])
