"""Tag layout T x D: D-dim AE loss against a literal loop, heads and contract, flip aggregation, decoding,
and a student trained with `--set model.tag_maps=1 --set model.tag_dim=4` that loads back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.inference import OutputLayout, aggregate_single_scale
from distill.losses import DistillLoss, LossConfig, ae_loss
from distill.models import contract_of, load_model
from students import build_student

from test_losses import J, ae_loss_literal, random_index


def ae_loss_literal_d(tags: torch.Tensor, index: torch.Tensor, d: int, loss_type: str = "exp"):
    """Person by person: mean D-vector per person, pull = mean squared L2 to it, push over pairs (float64)."""
    pushes, pulls = [], []
    b, c, h, w = tags.shape
    t = c // d
    for i in range(b):
        maps = tags[i].double().reshape(t, d, h * w)
        means, pull = [], torch.zeros((), dtype=torch.float64)
        for person in index[i].tolist():
            vecs = [maps[e[0] // (h * w), :, e[0] % (h * w)] for e in person if e[1] > 0]
            if not vecs:
                continue
            v = torch.stack(vecs)
            means.append(v.mean(0))
            pull = pull + ((v - means[-1]) ** 2).sum(1).mean()
        n = len(means)
        if n < 2:
            pushes.append(torch.zeros((), dtype=torch.float64))
            pulls.append(pull / max(n, 1))
            continue
        total = torch.zeros((), dtype=torch.float64)
        for a in range(n):
            for k in range(n):
                if a != k:
                    d2 = ((means[a] - means[k]) ** 2).sum()
                    total = total + (torch.exp(-d2) if loss_type == "exp" else torch.clamp(1 - d2.sqrt(), min=0))
        pushes.append(total / ((n - 1) * n) * 0.5)
        pulls.append(pull / n)
    return torch.stack(pushes), torch.stack(pulls)


@pytest.mark.parametrize("d", [2, 4])
@pytest.mark.parametrize("t", [J, 1])
@pytest.mark.parametrize("loss_type", ["exp", "max"])
def test_d_dim_ae_loss_matches_the_literal_loop(d: int, t: int, loss_type: str) -> None:
    gen = torch.Generator().manual_seed(3 + d + t)
    b, p, h, w = 4, 12, 10, 9
    idx = random_index(gen, b, p, J, t, h, w, per_joint=t > 1, people=[0, 1, 5, 12])
    tags = (torch.randn(b, t * d, h, w, generator=gen) * 0.7).requires_grad_(True)
    push, pull = ae_loss(tags, idx, loss_type, tag_dim=d)
    ref = tags.detach().double().requires_grad_(True)
    rpush, rpull = ae_loss_literal_d(ref, idx, d, loss_type)
    np.testing.assert_allclose(push.detach().numpy(), rpush.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pull.detach().numpy(), rpull.detach().numpy(), rtol=1e-5, atol=1e-7)
    (push.sum() + 2 * pull.sum()).backward()
    (rpush.sum() + 2 * rpull.sum()).backward()
    np.testing.assert_allclose(tags.grad.numpy(), ref.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss_type", ["exp", "max"])
def test_d1_is_the_official_loss(loss_type: str) -> None:
    """D = 1 through the D-dim code is the official per-joint loss (the same literal reference the official
    parity test uses), bit for bit against the former 1-D path up to float summation order."""
    gen = torch.Generator().manual_seed(5)
    idx = random_index(gen, 3, 10, J, J, 8, 8, per_joint=True, people=[2, 10, 4])
    tags = torch.randn(3, J, 8, 8, generator=gen)
    push, pull = ae_loss(tags, idx, loss_type, tag_dim=1)
    rpush, rpull = ae_loss_literal(tags.double(), idx, loss_type)
    np.testing.assert_allclose(push.numpy(), rpush.numpy(), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(pull.numpy(), rpull.numpy(), rtol=1e-6, atol=1e-8)
    d1 = ae_loss_literal_d(tags.double(), idx, 1, loss_type)
    np.testing.assert_allclose(d1[0].numpy(), rpush.numpy(), rtol=1e-12)


def test_student_head_contract_and_channels() -> None:
    for tag_per_joint, d in [(True, 1), (True, 2), (False, 4), (False, 8)]:
        m = build_student("step_s", tag_per_joint=tag_per_joint, tag_dim=d).eval()
        lay = contract_of(m)
        t = 17 if tag_per_joint else 1
        assert (lay.tag_maps, lay.tag_dim, lay.tag_channels) == (t, d, t * d)
        with torch.no_grad():
            outs = m(torch.zeros(1, 3, 64, 64))
        assert [o.shape[1] for o in outs] == [lay.channels(0), lay.channels(1)] == [17 + t * d, 17]
    with pytest.raises(Exception, match="tag_dim"):
        build_student("step_s", tag_dim=0)


def test_flip_aggregation_permutes_maps_and_keeps_their_d_channels() -> None:
    j, t, d, h, w = 3, 3, 2, 4, 6
    layout = OutputLayout(j, (True,), (True,), True, strides=(4,), tag_dim=d)
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(1, j + t * d, h, w, generator=gen)
    flipped = torch.randn(1, j + t * d, h, w, generator=gen)
    flip_index = [1, 0, 2]
    _, tags = aggregate_single_scale([out], [flipped], layout, flip_index, None)
    assert tags.shape == (1, t, h, w, 2 * d)
    for m in range(t):
        for c in range(d):
            np.testing.assert_array_equal(tags[0, m, :, :, c], out[0, j + m * d + c])
            src = flip_index[m]  # the flipped pass: map m comes from map flip_index[m], flipped back in x
            np.testing.assert_array_equal(tags[0, m, :, :, d + c], torch.flip(flipped[0, j + src * d + c], [1]))


def test_decoding_uses_all_d_channels() -> None:
    """Two people whose tags agree in dimension 0 and differ in dimension 1: 1-D matching on dim 0 merges
    them, the 2-D tags keep them apart."""
    from distill.codec.decode import DecodeParams, decode
    from distill.codec.matching import MatchParams

    j, h, w = 2, 24, 24
    heat = np.zeros((1, j, h, w), np.float32)
    tags = np.zeros((1, j, h, w, 2), np.float32)
    for p, (y, x0) in enumerate([(5, 4), (18, 14)]):
        for jj in range(j):
            x = x0 + 3 * jj
            heat[0, jj, y, x] = 1.0
            tags[0, jj, y - 1:y + 2, x - 1:x + 2] = (0.0, 3.0 * p)
    params = DecodeParams(match=MatchParams(num_joints=j, joint_order=(0, 1)), refine=False)
    two_d = decode(heat, tags, DecodeParams(match=MatchParams(num_joints=j, joint_order=(0, 1), key_dims=2),
                                            refine=False))[0]
    one_d = decode(heat, tags[..., :1], params)[0]
    keyed_by_first = decode(heat, tags, params)[0]  # the official key (first value) merges the two seeds
    assert len(keyed_by_first.people) == 1
    assert len(two_d.people) == 2 and (two_d.people[:, :, 2] > 0).all()
    assert len(one_d.people) < 2 or not (one_d.people[:, :, 2] > 0).all()


def test_distill_loss_takes_d_from_the_config_and_allows_only_relational_tag_kd() -> None:
    gen = torch.Generator().manual_seed(1)
    idx = random_index(gen, 2, 5, J, J, 8, 8, per_joint=True, people=[2, 3])
    outs = [torch.randn(2, J + 4, 8, 8, generator=gen), torch.randn(2, J, 16, 16, generator=gen)]
    hm = [torch.rand(2, J, 8, 8), torch.rand(2, J, 16, 16)]
    masks = [torch.ones(2, 8, 8), torch.ones(2, 16, 16)]
    terms = DistillLoss(LossConfig(tag_dim=4, tag_index_layout="per_joint")).compute_terms(outs, hm, masks, [idx, idx])
    assert terms["push"].shape == (2,)
    with pytest.raises(ValueError, match="J \\+ T\\*D channels"):
        DistillLoss(LossConfig(tag_dim=3)).compute_terms(outs, hm, masks, [idx, idx])
    teacher = [torch.randn(2, 2 * J, 8, 8, generator=gen), torch.randn(2, J, 16, 16, generator=gen)]
    with pytest.raises(ValueError, match="tag KD 'absolute' compares tag values.*use tag_kd_type in \\('relational', 'person'\\)"):
        DistillLoss(LossConfig(tag_dim=4, tag_kd_weight=0.1, tag_index_layout="per_joint")).compute_terms(
            outs, hm, masks, [idx, idx], teacher_outputs=teacher)
    relational = LossConfig(tag_dim=4, tag_kd_weight=0.1, tag_kd_type="relational", tag_index_layout="per_joint")
    terms = DistillLoss(relational).compute_terms(outs, hm, masks, [idx, idx], teacher_outputs=teacher)
    assert terms["tag_kd"].shape == (2,) and bool(torch.isfinite(terms["tag_kd"]).all())
    person = LossConfig(tag_dim=4, tag_kd_weight=0.1, tag_kd_type="person", tag_index_layout="per_joint")
    terms = DistillLoss(person).compute_terms(outs, hm, masks, [idx, idx], teacher_outputs=teacher)
    assert terms["tag_kd"].shape == (2,) and bool((terms["tag_kd"] > 0).all())


def test_relational_tag_kd_in_d_dims_against_a_literal_loop() -> None:
    """Student distance = L2 of its D-vectors (map-major channels), teacher distance = |1-D difference|."""
    from distill.losses import tag_kd_loss

    gen = torch.Generator().manual_seed(3)
    d, t, h, w = 3, 2, 6, 5
    student = torch.randn(2, t * d, h, w, generator=gen, requires_grad=True)
    teacher = torch.randn(2, t, h, w, generator=gen)
    idx = random_index(gen, 2, 4, t, t, h, w, per_joint=True, people=[3, 1])
    got = tag_kd_loss(student, teacher, idx, "per_joint", "relational", tag_dim=d)
    for bi in range(2):
        entries = [int(idx[bi, p, k, 0]) for p in range(idx.shape[1]) for k in range(idx.shape[2]) if idx[bi, p, k, 1] > 0]

        def vec(e: int) -> torch.Tensor:  # entry e = map * H*W + pixel; map m's channels are m*D .. m*D + D-1
            m, pix = divmod(e, h * w)
            return student[bi, m * d:(m + 1) * d].reshape(d, -1)[:, pix].detach()
        tv = teacher[bi].reshape(-1)
        gaps = [(float(torch.linalg.norm(vec(e) - vec(f))) - abs(float(tv[e] - tv[f]))) ** 2
                for i, e in enumerate(entries) for k, f in enumerate(entries) if i != k]
        assert float(got[bi].detach()) == pytest.approx(sum(gaps) / len(gaps) if gaps else 0.0, rel=1e-5, abs=1e-7)
    got.sum().backward()
    assert bool(torch.isfinite(student.grad).all()) and float(student.grad.abs().sum()) > 0
    # Rotating the D-vectors (and shifting them) changes nothing: only distances are distilled.
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    moved = torch.einsum("ij,btjhw->btihw", q, student.detach().reshape(2, t, d, h, w)).reshape(2, t * d, h, w) + 2.0
    torch.testing.assert_close(tag_kd_loss(moved, teacher, idx, "per_joint", "relational", tag_dim=d), got.detach(),
                               rtol=1e-4, atol=1e-5)


def test_train_a_shared_4d_student_by_override_and_load_it_back(make_synthetic_dataset, tmp_path: Path) -> None:
    from distill.config import load_config
    from distill.predict import Predictor
    from distill.train import train

    root = make_synthetic_dataset(seed=0, num_train=4, num_val=2, image_size=128)
    cfg = load_config(None, [
        "model.kind=student", "model.name=step_s", "model.tag_maps=1", "model.tag_dim=4",
        f"data.root={root}", "data.input_size=64", "data.workers=0", "optim.batch_size=2", "optim.epochs=1",
        "train.max_steps=2", "train.eval_every=0", f"train.out={tmp_path / 'run'}", "train.tensorboard=false",
        "train.threads=1"])
    train(cfg)
    model = load_model(f"student:step_s:{tmp_path / 'run' / 'model.pt'}").eval()
    lay = contract_of(model)
    assert (lay.tag_maps, lay.tag_dim) == (1, 4)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["tag_dim"] == 4
    image = (np.random.default_rng(0).uniform(0, 255, (80, 96, 3))).astype(np.uint8)
    pred = Predictor(model, input_size=64).predict(image, return_maps=True)
    assert pred.tags.shape[-1] == 8  # D = 4 channels x [original, flipped]


def test_teacher_with_2d_tags_trains_loads_back_and_teaches_heatmaps(make_synthetic_dataset, tmp_path: Path) -> None:
    """A teacher trained here may use D-dim tags (`model.tag_dim`); the official configs stay D = 1 and dump
    without the field. Such a teacher distils heatmaps into a 1-D student; tag KD from it is a named error."""
    from distill.config import load_config
    from distill.models import build_model
    from distill.predict import Predictor
    from distill.train import train
    from teachers import get_teacher_config

    assert "tag_dim" not in get_teacher_config("higherhrnet_w32_512").to_dict()
    root = make_synthetic_dataset(seed=0, num_train=4, num_val=2, image_size=128)
    common = [f"data.root={root}", "data.input_size=64", "data.workers=0", "optim.batch_size=2", "optim.epochs=1",
              "train.max_steps=1", "train.eval_every=0", "train.tensorboard=false", "train.threads=1"]
    train(load_config(None, ["model.kind=teacher", "model.name=higherhrnet_w16_synth", "model.tag_dim=2",
                             f"train.out={tmp_path / 'teacher'}", *common]))
    weights = tmp_path / "teacher" / "model.pt"
    teacher = load_model(f"teacher:higherhrnet_w16_synth:{weights}").eval()
    assert contract_of(teacher).tag_dim == 2 and teacher.cfg.to_dict()["tag_dim"] == 2
    assert teacher(torch.zeros(1, 3, 64, 64))[0].shape[1] == 17 + 17 * 2
    image = (np.random.default_rng(0).uniform(0, 255, (80, 96, 3))).astype(np.uint8)
    assert Predictor(teacher, input_size=64).predict(image, return_maps=True).tags.shape[-1] == 4
    with pytest.raises(Exception, match="size mismatch|Missing|Unexpected|shape"):  # the registered D = 1 net
        build_model("teacher", "higherhrnet_w16_synth").load_state_dict(
            torch.load(weights, weights_only=True)["state_dict"])

    student = ["model.kind=student", "model.name=step_s", "teacher.name=higherhrnet_w16_synth",
               f"teacher.weights={weights}", "loss.alpha=0.5", *common]
    train(load_config(None, [*student, f"train.out={tmp_path / 'student'}"]))
    assert (tmp_path / "student" / "model.pt").exists()
    # cached: the store is built from the network as trained (51 channels at 1/4), and trains a student
    from distill.cli import main as cli_main
    store = tmp_path / "store"
    assert cli_main(["cache-teacher", "--teacher", "higherhrnet_w16_synth", "--weights", str(weights), "--data",
                     str(root), "--out", str(store), "--workers", "0", "--no-progress", "--input-size", "64"]) == 0
    train(load_config(None, [*student, "teacher.mode=cached", f"teacher.store={store}",
                             f"train.out={tmp_path / 'student_cached'}"]))
    assert (tmp_path / "student_cached" / "model.pt").exists()
    with pytest.raises(ValueError, match="D > 1"):
        train(load_config(None, [*student, "loss.tag_kd_weight=0.1", f"train.out={tmp_path / 'student_tagkd'}"]))
