"""Training-recipe options: weighted/focal heatmap MSE, AdamW, cosine schedule with warm-up, EMA, train AP."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from distill.config import ConfigError, load_config
from distill.losses import DistillLoss, LossConfig, heatmap_loss, heatmap_pixel_weights
from distill.train import CHECKPOINT, MODEL_FILE, ModelEma, build_optimizer, lr_factor, train


def _maps(seed: int = 0, b: int = 2, j: int = 3, h: int = 8, w: int = 10):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(b, j, h, w, generator=g) * 1.4 - 0.2
    gt = torch.rand(b, j, h, w, generator=g) ** 6
    mask = (torch.rand(b, h, w, generator=g) > 0.2).float()
    return pred, gt, mask


@pytest.mark.parametrize("kind", ["weighted", "focal"])
def test_weighted_heatmap_loss_against_a_literal_loop(kind: str) -> None:
    pred, gt, mask = _maps()
    fg = 7.0
    weight = heatmap_pixel_weights(pred, gt, kind, fg)
    got = heatmap_loss(pred, gt, mask, weight=weight)
    b, j, h, w = pred.shape
    want = torch.zeros(b)
    for bi in range(b):
        total = 0.0
        for ji in range(j):
            for y in range(h):
                for x in range(w):
                    p, t = float(pred[bi, ji, y, x]), float(gt[bi, ji, y, x])
                    extra = t if kind == "weighted" else max(t, min(max(p, 0.0), 1.0))
                    total += (p - t) ** 2 * float(mask[bi, y, x]) * (1 + fg * extra)
        want[bi] = total / (j * h * w)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_focal_weights_up_weight_false_positives_and_get_no_gradient() -> None:
    pred = torch.zeros(1, 1, 4, 4, requires_grad=True)
    gt = torch.zeros(1, 1, 4, 4)
    with torch.no_grad():
        pred[0, 0, 1, 1] = 0.8  # a spurious peak on background
    w = heatmap_pixel_weights(pred, gt, "focal", 10.0)
    assert float(w[0, 0, 1, 1]) == pytest.approx(9.0) and float(w[0, 0, 0, 0]) == 1.0
    assert not w.requires_grad
    assert heatmap_pixel_weights(pred, gt, "weighted", 10.0).eq(1).all()
    assert heatmap_pixel_weights(pred, gt, "mse", 10.0) is None


def test_mse_default_is_the_official_loss_and_weighting_changes_it() -> None:
    pred, gt, mask = _maps(1)
    out = [torch.cat([pred, torch.zeros_like(pred)], 1), pred.clone()]
    index = torch.zeros(2, 1, 3, 2, dtype=torch.long)
    official, _ = DistillLoss(LossConfig(num_joints=3))(out, [gt, gt], [mask, mask], [index])
    explicit, _ = DistillLoss(LossConfig(num_joints=3, heatmap_loss="mse"))(out, [gt, gt], [mask, mask], [index])
    weighted, _ = DistillLoss(LossConfig(num_joints=3, heatmap_loss="weighted", fg_weight=5.0))(
        out, [gt, gt], [mask, mask], [index])
    assert float(official) == float(explicit) and float(weighted) > float(official)
    with pytest.raises(ValueError, match="fg_weight > 0"):
        LossConfig(heatmap_loss="focal")
    with pytest.raises(ValueError, match="heatmap_loss must be one of"):
        LossConfig(heatmap_loss="l1")  # type: ignore[arg-type]


def test_cosine_schedule_with_warmup() -> None:
    cfg = load_config(None, ["optim.schedule=cosine", "optim.epochs=10", "optim.min_lr_factor=0.1",
                             "optim.warmup_steps=5"])
    spe = 10  # steps per epoch: 100 steps in all
    assert lr_factor(0, spe, cfg) == pytest.approx(1 / 5)  # warm-up from 1/5 of the cosine value
    assert lr_factor(4, spe, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.04)))
    assert lr_factor(50, spe, cfg) == pytest.approx(0.55)
    assert lr_factor(100, spe, cfg) == pytest.approx(0.1)
    step = load_config(None, ["optim.epochs=3"])
    assert [lr_factor(s, 1, step) for s in range(3)] == pytest.approx([1.0, 1.0, 0.1])  # official milestones
    with pytest.raises(ConfigError, match="optim.schedule"):
        lr_factor(0, 1, load_config(None, ["optim.schedule=linear"]))


def test_adamw_decays_weights_but_not_biases_or_norms() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt = build_optimizer(model, load_config(None, ["optim.name=adamw", "optim.weight_decay=0.05"]))
    assert isinstance(opt, torch.optim.AdamW)
    decays = {tuple(p.shape): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays[(2, 1, 3, 3)] == 0.05 and decays[(2,)] == 0.0
    assert isinstance(build_optimizer(model, load_config(None)), torch.optim.Adam)
    with pytest.raises(ConfigError, match="optim.name"):
        build_optimizer(model, load_config(None, ["optim.name=sgd"]))


@pytest.mark.parametrize("sets", [["optim.weight_decay=1e-4"], ["optim.name=adamw", "optim.weight_decay=0.05"]])
def test_fused_optimizer_matches_the_per_parameter_update(sets: list[str]) -> None:
    """build_optimizer uses torch's fused kernel; it must make the same steps as the plain loop (up to rounding)."""
    cfg = load_config(None, sets + ["optim.lr=1e-2"])
    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))
    plain_model = copy.deepcopy(fused_model)
    start = fused_model[0].weight.detach().clone()
    fused = build_optimizer(fused_model, cfg)
    assert fused.defaults.get("fused") is True
    groups = [{"params": list(g["params"]), **{k: v for k, v in g.items() if k != "params"}}
              for g in build_optimizer(plain_model, cfg).param_groups]
    for g in groups:
        g["fused"] = None
    plain = type(fused)(groups, lr=cfg.optim.lr)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in fused_model.parameters()]
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fused_model[0].weight, start)  # the steps did move the weights


def test_ema_update_rule() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEma(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay min(0.9, 2/11)
    d = 2 / 11
    assert float(ema.module.weight[0, 0]) == pytest.approx(1 - d)
    with pytest.raises(ConfigError, match="ema_decay"):
        ModelEma(model, 1.0)


@pytest.fixture(scope="module")
def data_dir(make_synthetic_dataset) -> Path:
    return make_synthetic_dataset(seed=6, num_train=8, num_val=2, image_size=96)


def _run(tmp: Path, data: Path, name: str, *extra: str):
    return load_config(None, [
        "model.kind=teacher", "model.name=tiny", f"data.root={data}", "data.input_size=64", "data.workers=0",
        "optim.epochs=2", "optim.batch_size=2", f"train.out={tmp / name}", "train.eval_every=0",
        "train.tensorboard=false", "train.threads=1", *extra])


def test_ema_run_saves_ema_weights_and_resumes_exactly(tmp_path: Path, data_dir: Path) -> None:
    recipe = ["train.ema_decay=0.9", "loss.heatmap_loss=focal", "loss.fg_weight=4", "optim.name=adamw",
              "optim.weight_decay=1e-4", "optim.schedule=cosine", "optim.warmup_steps=2"]
    train(_run(tmp_path, data_dir, "straight", *recipe))
    train(_run(tmp_path, data_dir, "resumed", *recipe, "train.max_steps=3"))
    train(_run(tmp_path, data_dir, "resumed", *recipe))
    a = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)
    assert [h["total"] for h in a["history"]] == [h["total"] for h in b["history"]]
    for k, v in a["ema"]["module"].items():
        torch.testing.assert_close(v, b["ema"]["module"][k], rtol=0, atol=0)
    shipped = torch.load(tmp_path / "straight" / MODEL_FILE, weights_only=True)
    assert shipped["ema"] is True
    key = next(k for k, v in shipped["state_dict"].items() if v.is_floating_point() and v.ndim == 4)
    torch.testing.assert_close(shipped["state_dict"][key], a["ema"]["module"][key])
    assert not torch.equal(shipped["state_dict"][key], a["model"][key])  # the EMA, not the raw weights


def test_evaluation_reports_train_split_ap(tmp_path: Path, data_dir: Path) -> None:
    train(_run(tmp_path, data_dir, "ev", "train.eval_every=1", "data.eval_train_images=2", "optim.epochs=1"))
    import json

    record = json.loads((tmp_path / "ev" / "eval_epoch001.json").read_text())
    assert {"AP", "train_AP", "train_AR", "step", "train_seconds"} <= set(record)


def _tag_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, t, h, w, p, k = 2, 3, 5, 6, 4, 3
    student = torch.randn(b, t, h, w, generator=g)
    teacher = torch.randn(b, t, h, w, generator=g)
    index = torch.zeros(b, p, k, 2, dtype=torch.long)
    index[..., 0] = torch.randint(0, t * h * w, (b, p, k), generator=g)
    index[..., 1] = (torch.rand(b, p, k, generator=g) > 0.3).long()
    index[1, :, :, 1] = 0
    index[1, 0, 0, 1] = 1  # image 1: one visible entry, no pair
    return student, teacher, index


def test_relational_tag_kd_against_a_literal_loop() -> None:
    from distill.losses import tag_kd_loss

    s, t, index = _tag_batch()
    got = tag_kd_loss(s, t, index, "per_joint", "relational")
    for bi in range(2):
        entries = [int(index[bi, p, k, 0]) for p in range(index.shape[1]) for k in range(index.shape[2])
                   if index[bi, p, k, 1] > 0]
        sv, tv = s[bi].reshape(-1), t[bi].reshape(-1)
        gaps = [(abs(float(sv[e] - sv[f])) - abs(float(tv[e] - tv[f]))) ** 2
                for i, e in enumerate(entries) for j, f in enumerate(entries) if i != j]
        want = sum(gaps) / len(gaps) if gaps else 0.0
        assert float(got[bi]) == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_relational_tag_kd_ignores_the_shift_and_sign_the_ae_loss_leaves_free() -> None:
    from distill.losses import tag_kd_loss

    s, t, index = _tag_batch(1)
    zero = tag_kd_loss(-(t + 3.0), t, index, "per_joint", "relational")
    assert float(zero.abs().max()) < 1e-5
    assert float(tag_kd_loss(t + 3.0, t, index, "per_joint", "absolute")[0]) == pytest.approx(9.0, rel=1e-5)
    assert float(tag_kd_loss(s, t, index, "per_joint", "relational")[0]) > 0
    with pytest.raises(ValueError, match="tag_kd_type"):
        LossConfig(tag_kd_type="cosine")  # type: ignore[arg-type]


def _person_gap_by_loop(s: torch.Tensor, t: torch.Tensor, index: torch.Tensor, d: int) -> list[float]:
    """Per image: mean over ordered pairs of people of (|mean s_p - mean s_q| - |mean t_p - mean t_q|)^2."""
    hw = t.shape[2] * t.shape[3]
    out = []
    for bi in range(index.shape[0]):
        means = []
        for p in range(index.shape[1]):
            entries = [int(index[bi, p, k, 0]) for k in range(index.shape[2]) if index[bi, p, k, 1] > 0]
            if not entries:
                continue
            vecs = [s[bi, (e // hw) * d:(e // hw + 1) * d].reshape(d, -1)[:, e % hw] for e in entries]
            means.append((torch.stack(vecs).mean(0), sum(float(t[bi].reshape(-1)[e]) for e in entries) / len(entries)))
        gaps = [(float(torch.linalg.norm(ms - ns)) - abs(mt - nt)) ** 2
                for i, (ms, mt) in enumerate(means) for j, (ns, nt) in enumerate(means) if i != j]
        out.append(sum(gaps) / len(gaps) if gaps else 0.0)
    return out


@pytest.mark.parametrize("d", [1, 3])
def test_person_tag_kd_against_a_literal_loop(d: int) -> None:
    from distill.losses import tag_kd_loss

    s, t, index = _tag_batch(2)
    s = torch.randn(s.shape[0], s.shape[1] * d, *s.shape[2:], generator=torch.Generator().manual_seed(d))
    got = tag_kd_loss(s, t, index, "per_joint", "person", tag_dim=d)
    want = _person_gap_by_loop(s, t, index, d)
    assert want[0] > 0 and want[1] == 0.0  # image 1 holds one person: no pair
    for bi in range(2):
        assert float(got[bi]) == pytest.approx(want[bi], rel=1e-5, abs=1e-7)


def test_person_tag_kd_sees_only_the_people_s_mean_tags() -> None:
    """Shift and sign are free (as for 'relational'); so is how a person's own joints spread about its mean."""
    from distill.losses import tag_kd_loss

    s, t, index = _tag_batch(1)
    assert float(tag_kd_loss(-(t + 3.0), t, index, "per_joint", "person").abs().max()) < 1e-5
    spread = t.clone()
    b0 = [(p, [int(index[0, p, k, 0]) for k in range(index.shape[2]) if index[0, p, k, 1] > 0])
          for p in range(index.shape[1])]
    person, entries = next((p, e) for p, e in b0 if len(set(e)) == len(e) >= 2)
    flat = spread[0].reshape(-1)  # view: move two of one person's entries apart, keeping its mean
    flat[entries[0]] += 0.5
    flat[entries[1]] -= 0.5
    others = {e for p, e2 in b0 if p != person for e in e2}
    assert not others & {entries[0], entries[1]}
    assert float(tag_kd_loss(spread, t, index, "per_joint", "person")[0]) < 1e-8
    assert float(tag_kd_loss(spread, t, index, "per_joint", "relational")[0]) > 1e-3
    assert float(tag_kd_loss(s, t, index, "per_joint", "person")[0]) > 0


def test_centered_tag_kd_against_a_literal_loop() -> None:
    """Each side minus its mean over the image's visible entries, then the absolute form's per-person average."""
    from distill.losses import tag_kd_loss

    s, t, index = _tag_batch(3)
    got = tag_kd_loss(s, t, index, "per_joint", "centered")
    for bi in range(2):
        people = [[int(index[bi, p, k, 0]) for k in range(index.shape[2]) if index[bi, p, k, 1] > 0]
                  for p in range(index.shape[1])]
        people = [e for e in people if e]
        sv, tv = s[bi].reshape(-1).double(), t[bi].reshape(-1).double()
        every = [e for person in people for e in person]
        ms, mt = sum(float(sv[e]) for e in every) / len(every), sum(float(tv[e]) for e in every) / len(every)
        per_person = [sum(((float(sv[e]) - ms) - (float(tv[e]) - mt)) ** 2 for e in person) / len(person)
                      for person in people]
        assert float(got[bi]) == pytest.approx(sum(per_person) / len(per_person), rel=1e-5, abs=1e-7)
    assert float(got[1]) == 0.0  # one visible entry: centred, both sides are 0


def test_centered_tag_kd_ignores_a_per_image_shift_but_not_the_sign() -> None:
    from distill.losses import tag_kd_loss

    s, t, index = _tag_batch(1)
    shifted = t.clone()
    shifted[0] += 3.0
    shifted[1] -= 1.5
    assert float(tag_kd_loss(shifted, t, index, "per_joint", "centered").abs().max()) < 1e-5
    assert float(tag_kd_loss(-t, t, index, "per_joint", "centered")[0]) > 1e-2
    assert float(tag_kd_loss(s, t, index, "per_joint", "centered")[0]) > 0
    with pytest.raises(ValueError, match="compares tag values"):
        tag_kd_loss(torch.randn(2, 6, 5, 6), t, index, "per_joint", "centered", tag_dim=2)


def test_non_finite_weights_are_never_saved_nor_loaded(tmp_path: Path) -> None:
    from distill.errors import CheckpointError
    from teachers import build_teacher
    from teachers.checkpoint import load_checkpoint
    from distill.train import save_model_file

    model = build_teacher("tiny")
    path = tmp_path / "model.pt"
    save_model_file(path, model, load_config(None))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        save_model_file(path, model, load_config(None))
    load_checkpoint(build_teacher("tiny"), path)  # the good file is still there
    torch.save({"state_dict": model.state_dict()}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN/inf"):
        load_checkpoint(build_teacher("tiny"), tmp_path / "nan.pt")


def test_config_tag_kd_choices_are_the_loss_s() -> None:
    """distill.config lists the choices without importing torch; they must not drift from the loss's."""
    from typing import get_args

    from distill.config import _CHOICES
    from distill.losses import TagKDType

    assert set(_CHOICES[("loss", "tag_kd_type")]) == set(get_args(TagKDType))
