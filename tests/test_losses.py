"""Losses: parity with the official HigherHRNet loss (`../shared/reference/higherhrnet/loss`), the vectorised AE
loss against a literal per-person implementation, OHKM, FPD-style heatmap KD, tag KD and 1-D tag reduction."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from distill.codec.targets import joint_indices
from distill.losses import (
    DistillLoss, LossConfig, ae_loss, heatmap_loss, heatmap_pixel_weights, per_joint_heatmap_loss, per_joint_softmax_kd_loss,
    resolve_tag_index, tag_kd_loss,
)
from distill.tag_reduction import TagReducer, _fix_sign, sample_tag_vectors

J = 17


# ------------------------------------------------------------------------------------------ literal references
def ae_loss_literal(tags: torch.Tensor, index: torch.Tensor, loss_type: str = "exp"):
    """The official `AELoss.singleTagLoss`, written out person by person, joint by joint (float64)."""
    pushes, pulls = [], []
    for b in range(tags.shape[0]):
        pred = tags[b].reshape(-1).double()
        means, pull = [], torch.zeros((), dtype=torch.float64)
        for person in index[b].tolist():
            tmp = [pred[e[0]] for e in person if e[1] > 0]
            if not tmp:
                continue
            tmp = torch.stack(tmp)
            means.append(tmp.mean())
            pull = pull + ((tmp - means[-1]) ** 2).mean()
        n = len(means)
        if n == 0:
            pushes.append(torch.zeros((), dtype=torch.float64))
            pulls.append(torch.zeros((), dtype=torch.float64))
            continue
        if n == 1:
            pushes.append(torch.zeros((), dtype=torch.float64))
            pulls.append(pull / n)
            continue
        m = torch.stack(means)
        a = m[None, :].expand(n, n)
        diff = a - a.T
        if loss_type == "exp":
            push = torch.exp(-diff ** 2).sum() - n
        else:
            push = torch.clamp(1 - diff.abs(), min=0).sum() - n
        pushes.append(push / ((n - 1) * n) * 0.5)
        pulls.append(pull / n)
    return torch.stack(pushes), torch.stack(pulls)


def tag_kd_literal(student: torch.Tensor, teacher: torch.Tensor, index: torch.Tensor):
    out = []
    for b in range(student.shape[0]):
        s, t = student[b].reshape(-1).double(), teacher[b].reshape(-1).double()
        per_person = []
        for person in index[b].tolist():
            d = [(s[e[0]] - t[e[0]]) ** 2 for e in person if e[1] > 0]
            if d:
                per_person.append(torch.stack(d).mean())
        out.append(torch.stack(per_person).sum() / len(per_person) if per_person else torch.zeros((), dtype=torch.float64))
    return torch.stack(out)


def random_index(gen: torch.Generator, b: int, p: int, k: int, t: int, h: int, w: int, per_joint: bool,
                 people: list[int]) -> torch.Tensor:
    """(B, P, K, 2) int32: image i has `people[i]` persons with >= 1 visible entry (at random rows and, unlike
    the encoder, at random slots, so packing is not assumed), plus rows whose entries are all hidden; hidden
    entries hold garbage indices that must be ignored."""
    idx = torch.randint(-5, 10 ** 6, (b, p, k, 2), generator=gen, dtype=torch.int64)
    idx[..., 1] = 0
    for i in range(b):
        rows = torch.randperm(p, generator=gen)[: people[i]]
        for r in rows.tolist():
            nvis = int(torch.randint(1, k + 1, (1,), generator=gen))
            slots = torch.randperm(k, generator=gen)[:nvis]
            for s in slots.tolist():
                y, x = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
                j = s if per_joint else 0
                idx[i, r, s, 0] = j * h * w + y * w + x
                idx[i, r, s, 1] = int(torch.randint(1, 3, (1,), generator=gen))  # any v > 0 counts
    return idx.to(torch.int32)


# ------------------------------------------------------------------------------------------ official parity
@pytest.fixture(scope="module")
def case2(reference_dir):
    d = np.load(reference_dir / "loss" / "loss_case_2.npz")
    t = np.load(reference_dir / "targets" / "case_2_000000433998_in256.npz")
    b = d["pred_64"].shape[0]
    outs = [torch.from_numpy(d["pred_64"].astype(np.float32)), torch.from_numpy(d["pred_128"].astype(np.float32))]
    hms = [torch.from_numpy(np.stack([t[f"heatmaps_{r}"]] * b)) for r in (64, 128)]
    masks = [torch.from_numpy(np.stack([t[f"mask_{r}"]] * b)) for r in (64, 128)]
    idx = [torch.from_numpy(np.stack([t[f"ae_index_{r}"]] * b)) for r in (64, 128)]
    return outs, hms, masks, idx, d


def test_official_loss_parity(case2):
    outs, hms, masks, idx, d = case2
    loss = DistillLoss(LossConfig())
    terms = loss.compute_terms(outs, hms, masks, idx)
    cfg = loss.config
    np.testing.assert_allclose(terms["hm_gt_4"].numpy() * cfg.heatmap_factors[0], d["heatmaps_loss_64"], rtol=1e-5)
    np.testing.assert_allclose(terms["hm_gt_2"].numpy() * cfg.heatmap_factors[1], d["heatmaps_loss_128"], rtol=1e-5)
    np.testing.assert_allclose(terms["push"].numpy() * cfg.push_factor, d["push_loss_64"], rtol=1e-5)
    np.testing.assert_allclose(terms["pull"].numpy() * cfg.pull_factor, d["pull_loss_64"], rtol=1e-5)
    total, logs = loss(outs, hms, masks, idx)
    np.testing.assert_allclose(total.item(), float(d["total"]), rtol=1e-5)
    assert logs["total"] == pytest.approx(float(d["total"]), rel=1e-5)
    assert set(logs) == {"hm_gt_4", "hm_4", "hm_gt_2", "hm_2", "push", "pull", "total"}
    # The vectorised AE loss agrees with the literal one on the official targets as well.
    push, pull = ae_loss_literal(outs[0][:, J:], idx[0])
    np.testing.assert_allclose(terms["push"].numpy(), push.numpy(), rtol=1e-5)
    np.testing.assert_allclose(terms["pull"].numpy(), pull.numpy(), rtol=1e-5)


# ------------------------------------------------------------------------------------------ AE loss
@pytest.mark.parametrize("t", [J, 1])
@pytest.mark.parametrize("loss_type", ["exp", "max"])
def test_ae_vectorised_matches_literal(t, loss_type):
    gen = torch.Generator().manual_seed(11 + t)
    b, p, h, w = 6, 30, 12, 10
    people = [0, 1, 2, 7, 30, 15]  # N = 0 and N = 1 edge cases, a full index array
    idx = random_index(gen, b, p, J, t, h, w, per_joint=t > 1, people=people)
    tags = (torch.randn(b, t, h, w, generator=gen) * 0.7).requires_grad_(True)
    push, pull = ae_loss(tags, idx, loss_type)
    ref_tags = tags.detach().double().requires_grad_(True)
    rpush, rpull = ae_loss_literal(ref_tags, idx, loss_type)
    np.testing.assert_allclose(push.detach().numpy(), rpush.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pull.detach().numpy(), rpull.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert push[0] == 0 and pull[0] == 0 and push[1] == 0 and pull[1] > 0
    # Same gradients as the literal loop.
    (push.sum() + 3 * pull.sum()).backward()
    (rpush.sum() + 3 * rpull.sum()).backward()
    assert torch.isfinite(tags.grad).all()
    np.testing.assert_allclose(tags.grad.numpy(), ref_tags.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_ae_all_empty_batch_is_zero_with_finite_grad():
    tags = torch.randn(3, J, 8, 8, requires_grad=True)
    idx = torch.zeros(3, 30, J, 2, dtype=torch.int32)
    push, pull = ae_loss(tags, idx)
    assert push.tolist() == [0, 0, 0] and pull.tolist() == [0, 0, 0]
    (push.sum() + pull.sum()).backward()
    assert torch.isfinite(tags.grad).all() and tags.grad.abs().sum() == 0


def test_ae_shared_index_layout_equals_per_joint_mod_hw():
    """A T = 1 student: indices from the encoder's tag_per_joint=False mode, or per-joint ones mod H*W."""
    rng = np.random.default_rng(3)
    h = w = 32
    joints = np.concatenate([rng.uniform(-2, 34, (5, J, 2)), rng.integers(0, 3, (5, J, 1))], axis=2)
    shared = torch.from_numpy(joint_indices(joints, (h, w), 30, tag_per_joint=False))[None]
    perj = torch.from_numpy(joint_indices(joints, (h, w), 30, tag_per_joint=True))[None]
    tags = torch.randn(1, 1, h, w)
    a = ae_loss(tags, shared)  # auto: T = 1 -> shared layout
    b = ae_loss(tags, perj, layout="per_joint")
    c = ae_loss(tags, shared, layout="shared")
    for x, y in ((a, b), (a, c)):
        torch.testing.assert_close(x[0], y[0], rtol=0, atol=0)
        torch.testing.assert_close(x[1], y[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="per-joint indices"):
        ae_loss(tags, perj)  # auto expects the shared layout for T = 1
    with pytest.raises(ValueError, match="shared-layout"):
        ae_loss(torch.randn(1, J, h, w), shared, layout="shared")


def test_index_validation_names_the_range():
    idx = torch.zeros(1, 2, J, 2, dtype=torch.int32)
    idx[0, 0, 0] = torch.tensor([J * 8 * 8, 1])
    with pytest.raises(ValueError, match=r"\[0, T\*H\*W = 17\*8\*8 = 1088\)"):
        resolve_tag_index(idx, J, 8, 8)
    idx[0, 0, 0, 1] = 0  # hidden: ignored
    i, v = resolve_tag_index(idx, J, 8, 8)
    assert not v.any() and (i == 0).all()


# ------------------------------------------------------------------------------------------ heatmaps / OHKM / KD
def _batch(gen, b=3, t=J, h4=16, tags_scale=1.0, people=(0, 1, 4)):
    h2 = 2 * h4
    outs = [torch.randn(b, J + t, h4, h4, generator=gen) * 0.3, torch.randn(b, J, h2, h2, generator=gen) * 0.3]
    outs[0][:, J:] *= tags_scale
    hms = [torch.rand(b, J, h4, h4, generator=gen), torch.rand(b, J, h2, h2, generator=gen)]
    masks = [(torch.rand(b, h4, h4, generator=gen) > 0.2).float(), (torch.rand(b, h2, h2, generator=gen) > 0.2).float()]
    idx0 = random_index(gen, b, 30, J, t, h4, h4, per_joint=t > 1, people=list(people))
    idx1 = random_index(gen, b, 30, J, J, h2, h2, per_joint=True, people=list(people))
    teacher = [torch.randn(b, 2 * J, h4, h4, generator=gen) * 0.3, torch.randn(b, J, h2, h2, generator=gen) * 0.3]
    return outs, hms, masks, [idx0, idx1], teacher


def test_ohkm_topk_ge_j_equals_plain_and_topk_selects_hardest():
    gen = torch.Generator().manual_seed(1)
    pred, gt = torch.randn(4, J, 9, 11, generator=gen), torch.rand(4, J, 9, 11, generator=gen)
    mask = (torch.rand(4, 9, 11, generator=gen) > 0.3).float()
    plain = heatmap_loss(pred, gt, mask)
    manual = (((pred - gt) ** 2) * mask[:, None]).mean(dim=(1, 2, 3))
    torch.testing.assert_close(plain, manual, rtol=1e-6, atol=0)
    for k in (J, J + 5):
        torch.testing.assert_close(heatmap_loss(pred, gt, mask, topk=k), plain, rtol=1e-6, atol=0)
    pj = per_joint_heatmap_loss(pred, gt, mask)
    expect = torch.sort(pj, dim=1, descending=True).values[:, :8].mean(1)
    torch.testing.assert_close(heatmap_loss(pred, gt, mask, topk=8), expect)
    assert (heatmap_loss(pred, gt, mask, topk=8) >= plain).all()

    outs, hms, masks, idx, teacher = _batch(torch.Generator().manual_seed(2))
    base = DistillLoss(LossConfig(alpha=0.4))(outs, hms, masks, idx, teacher)[0]
    for k in (J, 40):
        cfg = LossConfig(alpha=0.4, ohkm_gt=True, ohkm_kd=True, ohkm_topk=k)
        torch.testing.assert_close(DistillLoss(cfg)(outs, hms, masks, idx, teacher)[0], base, rtol=1e-6, atol=0)
    # Switchable independently: OHKM on the KD term only leaves the GT term alone.
    logs = DistillLoss(LossConfig(alpha=0.4, ohkm_kd=True))(outs, hms, masks, idx, teacher)[1]
    logs0 = DistillLoss(LossConfig(alpha=0.4))(outs, hms, masks, idx, teacher)[1]
    assert logs["hm_gt_4"] == logs0["hm_gt_4"] and logs["hm_kd_4"] > logs0["hm_kd_4"]


def test_alpha_extremes_ignore_the_other_source():
    outs, hms, masks, idx, teacher = _batch(torch.Generator().manual_seed(4))
    perturbed_teacher = [t + 0.5 for t in teacher]
    perturbed_hms = [h * 0.1 + 0.3 for h in hms]

    pure_gt = DistillLoss(LossConfig(alpha=0.0))
    ref = pure_gt(outs, hms, masks, idx)[0]  # no teacher at all
    assert pure_gt(outs, hms, masks, idx, teacher)[0] == ref
    assert pure_gt(outs, hms, masks, idx, perturbed_teacher)[0] == ref
    assert pure_gt(outs, perturbed_hms, masks, idx, teacher)[0] != ref

    pure_kd = DistillLoss(LossConfig(alpha=1.0))
    kd = pure_kd(outs, hms, masks, idx, teacher)[0]
    assert pure_kd(outs, perturbed_hms, masks, idx, teacher)[0] == kd
    assert pure_kd(outs, hms, masks, idx, perturbed_teacher)[0] != kd

    # In between: alpha * KD + (1 - alpha) * GT, per output.
    a = 0.3
    total, logs = DistillLoss(LossConfig(alpha=a))(outs, hms, masks, idx, teacher)
    expect = sum(a * logs[f"hm_kd_{s}"] + (1 - a) * logs[f"hm_gt_{s}"] for s in ("4", "2"))
    expect += 1e-3 * (logs["push"] + logs["pull"])
    assert total.item() == pytest.approx(expect, rel=1e-5)
    # KD between student and teacher heatmaps uses the GT mask.
    kd4 = heatmap_loss(outs[0][:, :J], teacher[0][:, :J], masks[0]).mean().item()
    assert logs["hm_kd_4"] == pytest.approx(kd4, rel=1e-6)

    with pytest.raises(ValueError, match="teacher_outputs are required for heatmap KD"):
        DistillLoss(LossConfig(alpha=0.5))(outs, hms, masks, idx)


def softmax_kd_literal(pred: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) of the spatial softmax over unmasked pixels, image by image, joint by joint."""
    out = torch.zeros(pred.shape[:2], dtype=torch.float64)
    for b in range(pred.shape[0]):
        keep = mask[b].reshape(-1) > 0
        if not keep.any():
            continue
        for j in range(pred.shape[1]):
            s = pred[b, j].reshape(-1)[keep].double() / t
            q = teacher[b, j].reshape(-1)[keep].double() / t
            ps, pt = torch.softmax(s, 0), torch.softmax(q, 0)
            out[b, j] = (pt * (pt.log() - ps.log())).sum() * t * t
    return out


@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_softmax_kd_matches_literal_and_ignores_masked_pixels(temperature):
    g = torch.Generator().manual_seed(11)
    pred = torch.rand(3, J, 12, 10, generator=g, requires_grad=True)
    teacher = torch.rand(3, J, 12, 10, generator=g)
    mask = (torch.rand(3, 12, 10, generator=g) > 0.3).float()
    mask[2] = 0  # an image with nothing to learn from contributes 0
    got = per_joint_softmax_kd_loss(pred, teacher, mask, temperature)
    ref = softmax_kd_literal(pred.detach(), teacher, mask, temperature)
    assert torch.allclose(got.double(), ref, rtol=1e-4, atol=1e-7)
    assert (got[2] == 0).all() and (got[:2] > 0).all()
    assert per_joint_softmax_kd_loss(teacher, teacher, mask, temperature).abs().max() < 1e-6
    # Masked pixels: changing them changes nothing, and they get no gradient.
    changed = per_joint_softmax_kd_loss(pred + 5 * (1 - mask)[:, None], teacher - 3 * (1 - mask)[:, None], mask,
                                        temperature)
    assert torch.allclose(changed, got, rtol=1e-5, atol=1e-7)
    got.sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad * (1 - mask)[:, None]).abs().max() == 0
    # Invariant to a constant shift of the student (a distribution), unlike the MSE.
    shifted = per_joint_softmax_kd_loss(pred.detach() + 0.7, teacher, mask, temperature)
    assert torch.allclose(shifted, got.detach(), rtol=1e-4, atol=1e-7)


def test_softmax_kd_in_distill_loss_and_validation():
    outs, hms, masks, idx, teacher = _batch(torch.Generator().manual_seed(5))
    cfg = LossConfig(alpha=0.4, kd_type="softmax", kd_temperature=0.2)
    total, logs = DistillLoss(cfg)(outs, hms, masks, idx, teacher)
    for i, s in enumerate(("4", "2")):
        kd = per_joint_softmax_kd_loss(outs[i][:, :J], teacher[i][:, :J], masks[i], 0.2).mean().item()
        assert logs[f"hm_kd_{s}"] == pytest.approx(kd, rel=1e-5)
    expect = sum(0.4 * logs[f"hm_kd_{s}"] + 0.6 * logs[f"hm_gt_{s}"] for s in ("4", "2"))
    expect += 1e-3 * (logs["push"] + logs["pull"])
    assert total.item() == pytest.approx(expect, rel=1e-5)
    ohkm = DistillLoss(LossConfig(alpha=1.0, kd_type="softmax", kd_temperature=0.2, ohkm_kd=True, ohkm_topk=4))
    per_joint = per_joint_softmax_kd_loss(outs[0][:, :J], teacher[0][:, :J], masks[0], 0.2)
    assert ohkm(outs, hms, masks, idx, teacher)[1]["hm_kd_4"] == pytest.approx(
        per_joint.topk(4, dim=1).values.mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="kd_type must be one of"):
        LossConfig(kd_type="kl")
    with pytest.raises(ValueError, match="kd_temperature must be > 0"):
        LossConfig(kd_type="softmax", kd_temperature=0)


def test_target_kd_is_the_gt_loss_with_the_teachers_heatmaps_as_target():
    """kd_type 'target' at alpha 1 equals the GT term (with its focal pixel weights) given the teacher's maps as GT,
    and it punishes a low false peak that the softmax KD at T = 0.1 barely sees."""
    outs, hms, masks, idx, teacher = _batch(torch.Generator().manual_seed(6))
    for heatmap_loss, fg in (("focal", 10.0), ("mse", 0.0)):
        kd = DistillLoss(LossConfig(alpha=1.0, kd_type="target", heatmap_loss=heatmap_loss, fg_weight=fg))
        as_gt = DistillLoss(LossConfig(alpha=0.0, heatmap_loss=heatmap_loss, fg_weight=fg))
        teacher_heat = [t[:, :J] for t in teacher]
        got = kd(outs, hms, masks, idx, teacher)[1]
        want = as_gt(outs, teacher_heat, masks, idx)[1]
        for s in ("4", "2"):
            assert got[f"hm_{s}"] == pytest.approx(want[f"hm_{s}"], rel=1e-6)
    # a teacher map with one peak; the student copies it and adds a false peak of 0.2 elsewhere
    t_map = torch.zeros(1, 1, 16, 16)
    t_map[0, 0, 4, 4] = 1.0
    s_map = t_map.clone()
    s_map[0, 0, 12, 12] = 0.2
    mask = torch.ones(1, 16, 16)
    weight = heatmap_pixel_weights(s_map, t_map, "focal", 10.0)
    target_loss = per_joint_heatmap_loss(s_map, t_map, mask, weight).item()
    softmax_loss = per_joint_softmax_kd_loss(s_map, t_map, mask, 0.1).item()
    assert target_loss == pytest.approx(0.04 * 3.0 / 256)   # (0.2)^2 * (1 + 10 * 0.2), mean over 256 pixels
    assert softmax_loss < 0.1 * target_loss


# ------------------------------------------------------------------------------------------ tag KD / reduction
def test_tag_kd_per_joint_student():
    outs, hms, masks, idx, teacher = _batch(torch.Generator().manual_seed(5))
    loss = DistillLoss(LossConfig(tag_kd_weight=2.0))
    same = [teacher[0].clone(), teacher[1]]
    same[0][:, J:] = outs[0][:, J:]
    total, logs = loss(outs, hms, masks, idx, same)
    assert logs["tag_kd"] == 0.0
    total0 = DistillLoss(LossConfig())(outs, hms, masks, idx)[0]
    assert total.item() == pytest.approx(total0.item(), rel=1e-6)
    # Against the literal loop (channel by channel at the per-joint indices), including N = 0 / 1 images.
    kd = tag_kd_loss(outs[0][:, J:], teacher[0][:, J:], idx[0])
    ref = tag_kd_literal(outs[0][:, J:], teacher[0][:, J:], idx[0])
    np.testing.assert_allclose(kd.numpy(), ref.numpy(), rtol=1e-5, atol=1e-8)
    assert kd[0] == 0 and kd[1] > 0
    logs = loss(outs, hms, masks, idx, teacher)[1]
    assert logs["tag_kd"] == pytest.approx(kd.mean().item(), rel=1e-6)


@pytest.mark.parametrize("rule", ["first", "mean", "pca"])
def test_single_map_student_all_reduction_rules(rule):
    gen = torch.Generator().manual_seed(6)
    outs, hms, masks, idx, teacher = _batch(gen, t=1)
    t_tags = teacher[0][:, J:]
    reducer = TagReducer(rule)
    if rule == "pca":
        reducer.fit([(t_tags, idx[0])])
    reduced = reducer.reduce(t_tags)
    assert reduced.shape == (3, 1, 16, 16)
    if rule == "first":
        torch.testing.assert_close(reduced, t_tags[:, :1])
    elif rule == "mean":
        torch.testing.assert_close(reduced, t_tags.mean(1, keepdim=True))
    else:
        expect = torch.einsum("bjhw,j->bhw", t_tags - reducer.mean.view(1, J, 1, 1), reducer.component)[:, None]
        torch.testing.assert_close(reduced, expect / J ** 0.5)  # the 1/sqrt(J) keeps the 1-D tag scale

    loss = DistillLoss(LossConfig(tag_kd_weight=1.0, tag_reduction=rule), tag_reducer=reducer)
    # Student tag map == reduced teacher map -> zero tag KD.
    student = [outs[0].clone(), outs[1]]
    student[0][:, J:] = reduced
    logs = loss(student, hms, masks, idx, teacher)[1]
    assert logs["tag_kd"] == pytest.approx(0.0, abs=1e-12)
    # Otherwise: the literal tag KD against the reduced map, with the shared (y*W + x) indices.
    logs = loss(outs, hms, masks, idx, teacher)[1]
    ref = tag_kd_literal(outs[0][:, J:], reduced, idx[0]).mean().item()
    assert logs["tag_kd"] == pytest.approx(ref, rel=1e-5)
    push, pull = ae_loss_literal(outs[0][:, J:], idx[0])
    assert logs["push"] == pytest.approx(push.mean().item(), rel=1e-5)
    assert logs["pull"] == pytest.approx(pull.mean().item(), rel=1e-5)


def test_pca_reducer_must_be_fitted_and_rule_must_match():
    outs, hms, masks, idx, teacher = _batch(torch.Generator().manual_seed(7), t=1)
    with pytest.raises(RuntimeError, match="not fitted"):
        DistillLoss(LossConfig(tag_kd_weight=1.0, tag_reduction="pca"))(outs, hms, masks, idx, teacher)
    with pytest.raises(ValueError, match="differs from config.tag_reduction"):
        DistillLoss(LossConfig(tag_reduction="pca"), tag_reducer=TagReducer("mean"))


def _planted(gen, d, mu, n_batches=4, b=2, h=16, w=16, noise=0.05):
    out = []
    for _ in range(n_batches):
        a = torch.randn(b, 1, h, w, generator=gen, dtype=torch.float64) * 2.0
        x = mu.view(1, -1, 1, 1) + a * d.view(1, -1, 1, 1) + noise * torch.randn(b, len(d), h, w, generator=gen,
                                                                                  dtype=torch.float64)
        out.append(x.float())
    return out


def test_pca_recovers_planted_direction_with_deterministic_sign():
    gen = torch.Generator().manual_seed(8)
    d = torch.randn(J, generator=gen, dtype=torch.float64)
    d[:5] = -d[:5].abs() * 3  # mixed signs, negative-leaning entries
    d = d / d.norm()
    mu = torch.randn(J, generator=gen, dtype=torch.float64) * 5 + 10  # a large offset (shifted accumulation)
    batches = _planted(gen, d, mu)
    r = TagReducer("pca").fit(batches)
    comp = r.component.double()
    assert abs(float(comp @ d)) > 0.999
    assert float(comp.sum()) > 0  # the sign convention
    assert torch.allclose(r.mean.double(), torch.cat([x.double() for x in batches]).mean((0, 2, 3)), atol=1e-4)
    assert r.explained_variance_ratio > 0.95 and r.num_samples == 4 * 2 * 16 * 16
    # Same covariance with the direction flipped (2 mu - x), different batch split: same component.
    mirrored = [2 * mu.float().view(1, -1, 1, 1) - x for x in batches]
    r2 = TagReducer("pca").fit([torch.cat(mirrored)])
    torch.testing.assert_close(r2.component, r.component, rtol=0, atol=1e-5)
    # The sign rule itself, including its tie-break when the entries sum to ~0.
    for v in (torch.tensor([0.6, -0.8, 0.0]), torch.tensor([0.5, -0.5, 0.5, -0.5]), torch.tensor([-0.3, 0.1, 0.9])):
        assert torch.equal(_fix_sign(v), _fix_sign(-v))
    assert _fix_sign(torch.tensor([0.5, -0.5, 0.5, -0.5]))[0] > 0
    assert _fix_sign(torch.tensor([0.6, -0.8, 0.0]))[1] > 0


def test_pca_fit_at_joint_locations_ignores_background():
    """Fitted at GT joint pixels (tags, index), the background's own dominant direction does not leak in."""
    gen = torch.Generator().manual_seed(9)
    h = w = 32
    d = torch.zeros(J, dtype=torch.float64)
    d[[0, 3, 7]] = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    d = d / d.norm()
    bg = torch.zeros(J, dtype=torch.float64)
    bg[10] = 1.0
    tags = 5 * torch.randn(2, 1, h, w, generator=gen, dtype=torch.float64) * bg.view(1, -1, 1, 1)
    tags = tags + 0.01 * torch.randn(2, J, h, w, generator=gen, dtype=torch.float64)
    idx = random_index(gen, 2, 30, J, J, h, w, per_joint=True, people=[3, 4])
    vis = idx[..., 1] > 0
    pix = idx[..., 0].long() % (h * w)
    for bi in range(2):
        for p in pix[bi][vis[bi]].unique().tolist():
            tags[bi, :, p // w, p % w] = torch.randn((), generator=gen, dtype=torch.float64) * 2 * d
    tags = tags.float()
    assert sample_tag_vectors(tags, idx).shape == (int(vis.sum()), J)
    at_joints = TagReducer("pca").fit([(tags, idx)])
    assert abs(float(at_joints.component.double() @ d)) > 0.99
    everywhere = TagReducer("pca").fit([tags])
    assert abs(float(everywhere.component.double() @ bg)) > 0.99


def test_pca_state_dict_round_trip():
    gen = torch.Generator().manual_seed(10)
    d = torch.nn.functional.normalize(torch.randn(J, generator=gen, dtype=torch.float64), dim=0)
    r = TagReducer("pca").fit(_planted(gen, d, torch.zeros(J, dtype=torch.float64), n_batches=1))
    sd = r.state_dict()
    assert set(sd) == {"mean", "component"}
    assert all(v.dtype == torch.float32 and v.shape == (J,) for v in sd.values())
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    r2 = TagReducer.from_state_dict("pca", torch.load(buf))
    x = torch.randn(2, J, 5, 6, generator=gen)
    assert torch.equal(r.reduce(x), r2.reduce(x))
    assert TagReducer("mean").state_dict() == {}
    with pytest.raises(ValueError, match="keys"):
        TagReducer("pca").load_state_dict({"mean": sd["mean"]})
    with pytest.raises(ValueError, match=r"\(J,\) vectors"):
        TagReducer("pca").load_state_dict({"mean": sd["mean"], "component": sd["component"][:5]})
    with pytest.raises(ValueError, match="fitted on J = 17"):
        r.reduce(torch.randn(1, 5, 4, 4))
    with pytest.raises(RuntimeError, match="not fitted"):
        TagReducer("pca").state_dict()


# ------------------------------------------------------------------------------------------ gradients / errors
@pytest.mark.parametrize("t,rule", [(J, "mean"), (1, "pca"), (1, "first")])
def test_gradients_finite_full_loss(t, rule):
    gen = torch.Generator().manual_seed(12)
    outs, hms, masks, idx, teacher = _batch(gen, t=t, people=(0, 1, 6))
    reducer = TagReducer(rule)
    if rule == "pca":
        reducer.fit([(teacher[0][:, J:], idx[0])])
    cfg = LossConfig(alpha=0.5, tag_kd_weight=0.1, ohkm_gt=True, ohkm_kd=True, ohkm_topk=8, tag_reduction=rule)
    outs = [o.clone().requires_grad_(True) for o in outs]
    teacher = [tt.clone().requires_grad_(True) for tt in teacher]
    total, logs = DistillLoss(cfg, reducer)(outs, hms, masks, idx, teacher)
    total.backward()
    assert torch.isfinite(total)
    for o in outs:
        assert torch.isfinite(o.grad).all() and o.grad.abs().sum() > 0
    assert outs[0].grad[:, J:].abs().sum() > 0  # tag maps get gradient
    assert all(tt.grad is None for tt in teacher)  # the teacher is frozen (detached)
    assert set(logs) >= {"hm_gt_4", "hm_gt_2", "hm_kd_4", "hm_kd_2", "hm_4", "hm_2", "push", "pull", "tag_kd", "total"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in logs.values())


def test_shape_errors_name_what_was_expected():
    outs, hms, masks, idx, teacher = _batch(torch.Generator().manual_seed(13))
    loss = DistillLoss(LossConfig(alpha=0.5))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, H, W\) = \(3, 16, 16\)"):
        loss(outs, hms, [masks[0][:, :8], masks[1]], idx, teacher)
    with pytest.raises(ValueError, match=r"must have the prediction's shape \(3, 17, 32, 32\)"):
        loss(outs, [hms[0], hms[1][:, :5]], masks, idx, teacher)
    with pytest.raises(ValueError, match=r"J \+ T\*D channels with J = 17, T in \(0, 1, 17\) and D = 1"):
        loss([outs[0][:, :20], outs[1]], hms, masks, idx, teacher)
    with pytest.raises(ValueError, match=r"teacher output 1 must be \(B=3, >= J=17, 32, 32\)"):
        loss(outs, hms, masks, idx, [teacher[0], teacher[1][:, :, :16, :16]])
    with pytest.raises(ValueError, match="one GT heatmap and mask tensor per output"):
        loss(outs, hms[:1], masks[:1], idx, teacher)
    with pytest.raises(ValueError, match="need tag maps"):
        DistillLoss()([outs[0][:, :J], outs[1]], hms, masks, idx)
    with pytest.raises(ValueError, match=r"\(B, max_people, K, 2\)"):
        DistillLoss()(outs, hms, masks, [idx[0][..., 0]])
    with pytest.raises(ValueError, match="alpha must be in"):
        LossConfig(alpha=1.5)
    # Heatmaps-only student (T = 0) with the AE terms switched off is fine.
    total, logs = DistillLoss(LossConfig(push_factor=0, pull_factor=0))([outs[0][:, :J], outs[1]], hms, masks, idx)
    assert "push" not in logs and np.isfinite(total.item())
