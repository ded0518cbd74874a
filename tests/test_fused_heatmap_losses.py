"""The fused heatmap losses (gradient formed in the forward pass) against the plain formulas differentiated by
autograd, on random inputs: same values, same gradients, masks (including an image with nothing kept),
pixel weights, float32 and bfloat16 predictions."""
from __future__ import annotations

import pytest
import torch

from distill.losses import heatmap_pixel_weights, per_joint_heatmap_loss, per_joint_softmax_kd_loss


def _plain_mse(pred, gt, mask, weight=None):
    err = (pred.float() - gt.float()) ** 2 * mask.float()[:, None]
    if weight is not None:
        err = err * weight
    return err.mean(dim=(2, 3))


def _plain_softmax_kd(pred, teacher, mask, t):
    b, j, h, w = pred.shape
    keep = mask.reshape(b, 1, h * w) > 0
    s = (pred.float().reshape(b, j, h * w) / t).masked_fill(~keep, -1.0e4)
    tl = (teacher.detach().float().reshape(b, j, h * w) / t).masked_fill(~keep, -1.0e4)
    log_ps, log_pt = torch.log_softmax(s, -1), torch.log_softmax(tl, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1) * t * t * keep.any(-1).float()


def _inputs(dtype, seed=0, b=3, j=5, h=12, w=10):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(b, j, h, w, generator=g).to(dtype).requires_grad_()
    target = torch.rand(b, j, h, w, generator=g)
    mask = (torch.rand(b, h, w, generator=g) > 0.3).float()
    mask[-1] = 0  # an image with nothing kept
    upstream = torch.rand(b, j, generator=g)  # a non-uniform gradient from the reduction above
    return pred, target, mask, upstream


def _grad(fn, pred, upstream):
    pred.grad = None
    out = fn()
    (out * upstream).sum().backward()
    return out.detach(), pred.grad.clone()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["mse", "weighted", "focal"])
def test_fused_mse_equals_autograd(dtype, kind):
    pred, gt, mask, up = _inputs(dtype)
    weight = heatmap_pixel_weights(pred, gt, kind, 10.0)
    v1, g1 = _grad(lambda: per_joint_heatmap_loss(pred, gt, mask, weight), pred, up)
    v2, g2 = _grad(lambda: _plain_mse(pred, gt, mask, weight), pred, up)
    assert torch.equal(v1, v2)
    assert g1.dtype == dtype
    torch.testing.assert_close(g1.float(), g2.float(), rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-7)
    assert g1[-1].abs().max() == 0  # nothing kept: no gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_fused_softmax_kd_equals_autograd(dtype, temperature):
    pred, teacher, mask, up = _inputs(dtype, seed=1)
    v1, g1 = _grad(lambda: per_joint_softmax_kd_loss(pred, teacher, mask, temperature), pred, up)
    v2, g2 = _grad(lambda: _plain_softmax_kd(pred, teacher, mask, temperature), pred, up)
    torch.testing.assert_close(v1, v2, rtol=1e-6, atol=1e-6)
    assert g1.dtype == dtype
    torch.testing.assert_close(g1.float(), g2.float(), rtol=1e-4 if dtype == torch.float32 else 1e-2, atol=1e-6)
    masked = (mask == 0)[:, None].expand_as(g1)
    assert g1[masked].abs().max() == 0  # masked pixels and the empty image get exactly no gradient
    assert g1.abs().sum() > 0


def test_fused_losses_build_no_graph_without_grad():
    pred, gt, mask, _ = _inputs(torch.float32)
    with torch.no_grad():
        assert per_joint_heatmap_loss(pred, gt, mask).grad_fn is None
        assert per_joint_softmax_kd_loss(pred, gt, mask, 0.1).grad_fn is None


def test_loss_terms_on_channels_last_bf16_outputs_match_a_contiguous_float_copy():
    """A model in bf16 autocast + channels_last hands the loss strided bf16 outputs; `compute_terms` copies the
    heatmap slice into contiguous float32 once. Same terms as on a contiguous float32 copy of those outputs (the
    values are the bf16 values, so exactly equal), and the gradient comes back in the output's dtype."""
    from distill.losses import DistillLoss, LossConfig

    g = torch.Generator().manual_seed(3)
    b, j, h = 2, 4, 8
    out4 = torch.randn(b, 2 * j, h, h, generator=g).to(torch.bfloat16).to(memory_format=torch.channels_last)
    out2 = torch.randn(b, j, 2 * h, 2 * h, generator=g).to(torch.bfloat16).to(memory_format=torch.channels_last)
    heat = [torch.rand(b, j, h, h, generator=g), torch.rand(b, j, 2 * h, 2 * h, generator=g)]
    masks = [(torch.rand(b, s, s, generator=g) > 0.2).float() for s in (h, 2 * h)]
    teacher = [torch.randn(b, 2 * j, h, h, generator=g), torch.randn(b, j, 2 * h, 2 * h, generator=g)]
    index = torch.zeros(b, 3, j, 2, dtype=torch.long)
    index[:, :2, :, 0] = torch.randint(0, j * h * h, (b, 2, j), generator=g)
    index[:, :2, :, 1] = 1
    loss = DistillLoss(LossConfig(num_joints=j, alpha=0.5, kd_type="softmax", kd_temperature=0.1,
                                  heatmap_loss="focal", fg_weight=10.0))

    def run(outs):
        outs = [o.detach().requires_grad_() for o in outs]
        total, logs = loss(outs, heat, masks, index, teacher)
        total.backward()
        return total.detach(), logs, [o.grad for o in outs]

    t1, logs1, g1 = run([out4, out2])
    t2, logs2, g2 = run([out4.float().contiguous(), out2.float().contiguous()])
    assert torch.equal(t1, t2)
    assert logs1 == logs2
    for a, ref in zip(g1, g2):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), ref, rtol=1e-2, atol=1e-6)
