"""Training losses: the official HigherHRNet loss, plus heatmap and tag distillation from a frozen teacher.

Output contract (teacher and students): `outputs = [out_4, out_2]` with
`out_4` (B, J + T, H4, W4) = J heatmaps then T tag maps (T = J per-joint, T = 1 shared; T = 0 allowed when
no tag term is used) and `out_2` (B, J, H2, W2). Fewer/more outputs work the same way, output i at stride
4 / 2**i; AE and tag terms live on output 0 only.

Targets (see `distill.codec.targets`, after default collation): `heatmaps[i]` (B, J, H, W), `masks[i]` (B, H, W)
with 1 = use, `joint_indices[i]` (B, P, K, 2) entries (flat index, visible). Only `joint_indices[0]` is used.

Per-image terms (all (B,) float32):

- heatmap GT term at output i: `((pred - gt)^2 * mask).mean over (J, H, W)` (official `HeatmapLoss`), or, with
  OHKM, the mean of the top-k per-joint losses (per-joint loss = the masked squared error averaged over H, W);
- heatmap KD term: the same between the student's and the teacher's heatmaps (same mask), OHKM switchable
  independently; or, with `kd_type='softmax'`, per joint KL(softmax(teacher / tau) || softmax(student / tau))
  * tau^2 over the unmasked pixels (channel-wise distillation: each heatmap read as a spatial distribution).
  The two are combined FPD-style: `alpha * KD + (1 - alpha) * GT` (alpha = 0 -> pure GT and the teacher is
  not used; alpha = 1 -> pure KD and the GT heatmaps are not used);
- AE push/pull (official `AELoss`, `exp` or `max`): tags flattened per image to (T*H*W,), index entries point
  into that array (per-joint layout j*H*W + y*W + x for T = J, shared layout y*W + x for T = 1; see
  `LossConfig.tag_index_layout`). For each person with >= 1 visible entry: the mean tag; pull = mean over the
  person's visible entries of (tag - mean)^2, summed over persons / N; push = sum over ordered pairs i != j of
  exp(-(mean_i - mean_j)^2) / ((N - 1) N) * 0.5 (zero when N <= 1; both zero when N = 0). Vectorised over
  batch and persons (gather + masked segment means), no Python loops;
- tag KD: at every visible index entry, (student tag - teacher tag)^2, averaged over the person's entries, summed
  over persons / N (like pull; zero when N = 0). Teacher tags are compared channel by channel when the student
  has T = J; for T = 1 the teacher's J maps are first reduced to one (`distill.tag_reduction.TagReducer`:
  `first`, `mean` or a fitted `pca`). Other forms (`LossConfig.tag_kd_type`): 'centered' (each side minus its
  mean over the image's visible entries first), 'relational' and 'person' (distances only; see `tag_kd_loss`).

Training reduction (`DistillLoss`): total = sum over outputs of factor_i * batch mean of the combined heatmap
term + push_factor * mean(push) + pull_factor * mean(pull) + tag_kd_weight * mean(tag_kd). With the default
`LossConfig()` (alpha 0, no OHKM, no tag KD) this is exactly the official `MultiLossFactory` reduction.
All losses are computed in float32 whatever the prediction dtype (AMP-safe).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Union, get_args

import torch
from torch import Tensor, nn

from distill.tag_reduction import TAG_RULES, TagReducer, TagRule

AELossType = Literal["exp", "max"]
KDType = Literal["mse", "softmax", "target"]
# GT heatmap term: the official MSE, or an MSE whose pixels are re-weighted so that the few foreground
# pixels are not drowned by the background (see `heatmap_pixel_weights`).
HeatmapLossType = Literal["mse", "weighted", "focal"]
# Tag KD: 'absolute' (student tag = teacher tag at each GT joint), 'relational' (the distances between
# the tags of an image's GT joints match the teacher's), 'person' (the distances between the people's mean
# tags match the teacher's) or 'centered' (student tag minus its image mean = teacher tag minus its image mean,
# at the GT joints). 'relational' and 'person' are invariant to the shift and sign the AE loss leaves free,
# 'centered' to the shift only (it fixes the sign, which a student starting from random tags has no stake in).
TagKDType = Literal["absolute", "relational", "person", "centered"]
# Forms that compare distances only, so they also work for a D > 1 student under a 1-D teacher.
DISTANCE_TAG_KD: tuple[str, ...] = ("relational", "person")
IndexLayout = Literal["auto", "per_joint", "shared"]

__all__ = [
    "LossConfig", "DistillLoss", "TagReducer",
    "per_joint_heatmap_loss", "heatmap_loss", "heatmap_pixel_weights", "per_joint_softmax_kd_loss", "ae_loss", "tag_kd_loss",
    "resolve_tag_index", "output_name", "DISTANCE_TAG_KD",
]


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class LossConfig:
    """All loss weights and switches. The defaults are the official HigherHRNet W32 loss."""

    num_joints: int = 17
    heatmap_factors: tuple[float, ...] = (1.0, 1.0)  # per output (extras beyond the outputs are ignored)
    push_factor: float = 1e-3
    pull_factor: float = 1e-3
    ae_loss_type: AELossType = "exp"
    alpha: float = 0.0  # heatmap KD weight: alpha * KD + (1 - alpha) * GT
    # Heatmap KD between student and teacher: 'mse' (FPD: the masked MSE, like the GT term) or 'softmax'
    # (each heatmap as a spatial distribution softmax(h / kd_temperature) over its unmasked pixels,
    # KL(teacher || student) * kd_temperature^2, channel-wise distillation as in CWD). 'softmax' weighs
    # the pixels by where the teacher puts its mass (the peaks), where the MSE is dominated by background.
    # 'target': the GT term's own loss (`heatmap_loss` with its pixel weights) with the teacher's heatmaps as the
    # target; unlike 'softmax' it also punishes the low false peaks (0.1-0.3) that a softmax at T = 0.1 ignores.
    kd_type: KDType = "mse"
    kd_temperature: float = 1.0
    # GT heatmap term: 'mse' (official), 'weighted' (pixel weight 1 + fg_weight * target) or 'focal'
    # (1 + fg_weight * max(target, prediction)): the latter also up-weights false-positive pixels.
    heatmap_loss: HeatmapLossType = "mse"
    fg_weight: float = 0.0
    tag_kd_weight: float = 0.0
    tag_kd_type: TagKDType = "absolute"
    kd_outputs: int = 0  # heatmap KD on the first n outputs only (0: all); the others get the GT term alone
    ohkm_gt: bool = False  # top-k hard joints on the GT heatmap term
    ohkm_kd: bool = False  # top-k hard joints on the KD heatmap term
    ohkm_topk: int = 8
    tag_reduction: TagRule = "mean"  # teacher J tag maps -> 1 for a T = 1 student
    # How `joint_indices` are laid out: 'auto' = per-joint (j*H*W + y*W + x) when the student has T = J tag
    # maps, shared (y*W + x) when T = 1. 'per_joint' with a T = 1 student uses index mod H*W.
    tag_index_layout: IndexLayout = "auto"
    # D: channels per tag map (the student's `output_layout.tag_dim`); push/pull use squared L2 distances
    # between D-dim tags, which for D = 1 is the official loss.
    tag_dim: int = 1

    def __post_init__(self) -> None:
        if self.num_joints < 1:
            raise ValueError(f"num_joints must be >= 1, got {self.num_joints}")
        if self.tag_dim < 1:
            raise ValueError(f"tag_dim (channels per tag map) must be >= 1, got {self.tag_dim}")
        object.__setattr__(self, "heatmap_factors", tuple(float(f) for f in self.heatmap_factors))
        if not self.heatmap_factors:
            raise ValueError("heatmap_factors must name at least one output")
        if self.tag_kd_type not in get_args(TagKDType):
            raise ValueError(f"tag_kd_type must be one of {get_args(TagKDType)}, got {self.tag_kd_type!r}")
        if self.heatmap_loss not in get_args(HeatmapLossType):
            raise ValueError(f"heatmap_loss must be one of {get_args(HeatmapLossType)}, got {self.heatmap_loss!r}")
        if self.heatmap_loss != "mse" and not float(self.fg_weight) > 0:
            raise ValueError(f"heatmap_loss {self.heatmap_loss!r} needs fg_weight > 0, got {self.fg_weight}")
        for name in ("push_factor", "pull_factor", "tag_kd_weight", "fg_weight"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if any(not f >= 0 for f in self.heatmap_factors):
            raise ValueError(f"heatmap_factors must be >= 0, got {self.heatmap_factors}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.kd_outputs < 0:
            raise ValueError(f"kd_outputs must be >= 0 (0: every output), got {self.kd_outputs}")
        if self.kd_type not in get_args(KDType):
            raise ValueError(f"kd_type must be one of {get_args(KDType)}, got {self.kd_type!r}")
        if not float(self.kd_temperature) > 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}")
        if self.ohkm_topk < 1:
            raise ValueError(f"ohkm_topk must be >= 1, got {self.ohkm_topk}")
        if self.ae_loss_type not in get_args(AELossType):
            raise ValueError(f"ae_loss_type must be one of {get_args(AELossType)}, got {self.ae_loss_type!r}")
        if self.tag_reduction not in TAG_RULES:
            raise ValueError(f"tag_reduction must be one of {TAG_RULES}, got {self.tag_reduction!r}")
        if self.tag_index_layout not in get_args(IndexLayout):
            raise ValueError(
                f"tag_index_layout must be one of {get_args(IndexLayout)}, got {self.tag_index_layout!r}"
            )

    def kd_output_count(self, num_outputs: int) -> int:
        """How many of `num_outputs` outputs (lowest resolution first) get the heatmap KD term."""
        return min(num_outputs, self.kd_outputs) if self.kd_outputs else num_outputs


def output_name(i: int) -> str:
    """Log-name suffix of output i: its stride ('4', '2', '1'), or 'o<i>' beyond."""
    return ("4", "2", "1")[i] if i < 3 else f"o{i}"


# ------------------------------------------------------------------------------------------------ heatmaps
def _shape(t: object) -> object:
    return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__


def _check_heatmap_args(pred: Tensor, target: Tensor, mask: Tensor) -> None:
    if not isinstance(pred, Tensor) or pred.dim() != 4:
        raise ValueError(f"heatmap prediction must be (B, J, H, W), got {_shape(pred)}")
    if not isinstance(target, Tensor) or target.shape != pred.shape:
        raise ValueError(f"heatmap target must have the prediction's shape {tuple(pred.shape)}, got {_shape(target)}")
    b, _, h, w = pred.shape
    if not isinstance(mask, Tensor) or tuple(mask.shape) != (b, h, w):
        raise ValueError(f"heatmap mask must have shape (B, H, W) = {(b, h, w)}, got {_shape(mask)}")


class _FusedHeatmapMSE(torch.autograd.Function):
    """Masked, pixel-weighted squared error per (image, joint) with its gradient formed in the forward pass.

    Why: on a CPU the heatmap terms at 1/2 resolution cost about as much as the student's convolutions when
    autograd differentiates their ~6 elementwise ops one by one; the gradient 2 (pred - gt) m w / (H W) is one
    tensor. Values equal the plain formula's bit for bit (the mask is 0/1, so grouping it with the weights
    rounds nothing differently); `weight` is a constant
    (the focal weights use the detached prediction)."""

    @staticmethod
    def forward(ctx, pred: Tensor, gt: Tensor, mask: Tensor, weight: Tensor | None) -> Tensor:  # type: ignore[override]
        diff = pred.float() - gt.float()
        scale = mask.float()[:, None]
        if weight is not None:
            scale = scale * weight
        loss = (diff ** 2 * scale).mean(dim=(2, 3))
        if ctx.needs_input_grad[0]:
            h, w = pred.shape[-2:]
            ctx.save_for_backward(diff.mul_(scale).mul_(2.0 / (h * w)))
            ctx.pred_dtype = pred.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (grad * grad_out[:, :, None, None]).to(ctx.pred_dtype), None, None, None


def per_joint_heatmap_loss(pred: Tensor, gt: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
    """(B, J): the masked (optionally pixel-weighted) squared error averaged over H, W (float32).

    `gt` and `weight` are constants (no gradient flows to them); see `_FusedHeatmapMSE` for why it is fused."""
    _check_heatmap_args(pred, gt, mask)
    return _FusedHeatmapMSE.apply(pred, gt.detach(), mask, None if weight is None else weight.detach())


def heatmap_pixel_weights(pred: Tensor, gt: Tensor, kind: str, fg_weight: float) -> Tensor | None:
    """Per-pixel weights of the GT heatmap MSE (None for the official unweighted loss).

    Why: with sigma-2 Gaussians at 1/4 resolution well under 1% of the pixels are foreground, so the plain
    mean is dominated by background that is already right, and the peaks are learnt slowly (SimplePose's
    observation). 'weighted': 1 + w * target (the Gaussian itself); 'focal': 1 + w * max(target, pred),
    where the detached prediction also up-weights hard negatives (spurious peaks), in the spirit of the
    focal loss of CornerNet/CenterNet while the outputs stay plain heatmaps for the official decoder.
    """
    if kind == "mse":
        return None
    g = gt.float()
    if kind == "weighted":
        return 1.0 + float(fg_weight) * g
    if kind == "focal":
        return 1.0 + float(fg_weight) * torch.maximum(g, pred.detach().float().clamp(0.0, 1.0))
    raise ValueError(f"heatmap loss must be one of {get_args(HeatmapLossType)}, got {kind!r}")


def _reduce_joints(per_joint: Tensor, topk: int | None) -> Tensor:
    if topk is None or topk >= per_joint.shape[1]:
        return per_joint.mean(dim=1)
    return per_joint.topk(topk, dim=1, sorted=False).values.mean(dim=1)


def heatmap_loss(pred: Tensor, gt: Tensor, mask: Tensor, topk: int | None = None,
                 weight: Tensor | None = None) -> Tensor:
    """(B,) masked heatmap MSE per image: mean over (J, H, W), or the mean of the `topk` hardest joints (OHKM)."""
    return _reduce_joints(per_joint_heatmap_loss(pred, gt, mask, weight), topk)


_MASKED_LOGIT = -1.0e4  # exp() of it is exactly 0 in float32: masked pixels get no mass and no gradient


def per_joint_softmax_kd_loss(pred: Tensor, teacher: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """(B, J): KL(softmax(teacher / T) || softmax(pred / T)) * T^2 over each heatmap's unmasked pixels.

    Each (image, joint) heatmap is read as a distribution over its pixels where `mask` is 1; an image whose
    mask is all 0 contributes 0. The teacher is detached.
    """
    _check_heatmap_args(pred, teacher, mask)
    b, _, h, w = pred.shape
    keep = (mask.reshape(b, 1, h * w) > 0).to(pred.device)
    return _FusedSoftmaxKD.apply(pred, teacher.detach(), keep, float(temperature))


class _FusedSoftmaxKD(torch.autograd.Function):
    """The per-joint softmax KD with its gradient formed in the forward pass: d KL*T^2 / d pred = T (p_s - p_t)
    on the kept pixels, 0 on the masked ones (as masked_fill's gradient is in the plain formula), 0 for an image
    with nothing kept. Same values as differentiating the formula with autograd, at a fraction of the passes
    over (B, J, H*W) (the KD term at 1/2 resolution was the student's costliest op on a CPU)."""

    @staticmethod
    def forward(ctx, pred: Tensor, teacher: Tensor, keep: Tensor, t: float) -> Tensor:  # type: ignore[override]
        b, j, h, w = pred.shape
        s_logit = (pred.float().reshape(b, j, h * w) / t).masked_fill(~keep, _MASKED_LOGIT)
        t_logit = (teacher.float().reshape(b, j, h * w) / t).masked_fill(~keep, _MASKED_LOGIT)
        log_ps = torch.log_softmax(s_logit, dim=-1)
        log_pt = torch.log_softmax(t_logit, dim=-1)
        p_t = log_pt.exp()
        any_kept = keep.any(dim=-1).float()  # (B, 1)
        kl = (p_t * (log_pt - log_ps)).sum(dim=-1) * (t * t) * any_kept
        if ctx.needs_input_grad[0]:
            # an image with nothing kept is all masked, so masked_fill_ already zeroes its gradient
            grad = log_ps.exp_().sub_(p_t).masked_fill_(~keep, 0.0).mul_(t)
            ctx.save_for_backward(grad)
            ctx.shape, ctx.pred_dtype = pred.shape, pred.dtype
        return kl

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (grad * grad_out[:, :, None]).reshape(ctx.shape).to(ctx.pred_dtype), None, None, None


# ------------------------------------------------------------------------------------------------ tags
def _check_index(joint_index: Tensor, batch: int) -> Tensor:
    if not isinstance(joint_index, Tensor) or joint_index.dim() != 4 or joint_index.shape[-1] != 2:
        raise ValueError(f"joint indices must be a (B, max_people, K, 2) tensor, got {_shape(joint_index)}")
    if joint_index.shape[0] != batch:
        raise ValueError(f"joint indices have batch {joint_index.shape[0]}, the tags have batch {batch}")
    if joint_index.dtype.is_floating_point or joint_index.dtype == torch.bool:
        raise ValueError(f"joint indices must be an integer tensor, got {joint_index.dtype}")
    return joint_index


def resolve_tag_index(
    joint_index: Tensor, num_maps: int, height: int, width: int, layout: IndexLayout = "auto"
) -> tuple[Tensor, Tensor]:
    """Flat indices (B, P, K) int64 into the per-image (T*H*W,) tag array, and the visible mask (B, P, K).

    `layout`: 'auto' (per-joint for T > 1, shared for T = 1), 'per_joint' (j*H*W + y*W + x; reduced mod H*W
    for T = 1) or 'shared' (y*W + x; T must be 1). Hidden entries are pointed at 0; visible entries outside
    [0, T*H*W) raise a ValueError naming the layout problem.
    """
    if layout not in get_args(IndexLayout):
        raise ValueError(f"index layout must be one of {get_args(IndexLayout)}, got {layout!r}")
    vis = joint_index[..., 1] > 0
    idx = joint_index[..., 0].long()
    hw = height * width
    if layout == "shared" and num_maps != 1:
        raise ValueError(
            f"shared-layout joint indices (y*W + x) cannot address T = {num_maps} per-joint tag maps: encode the "
            "targets with tag_per_joint=True or give the student one tag map"
        )
    if layout == "per_joint" and num_maps == 1:
        idx = torch.remainder(idx, hw)
    n = num_maps * hw
    bad = vis & ((idx < 0) | (idx >= n))
    if bool(bad.any()):
        lo, hi = int(idx[bad].min()), int(idx[bad].max())
        hint = ""
        if num_maps == 1 and hi >= hw:
            hint = (" - these look like per-joint indices (j*H*W + y*W + x) for a single tag map: encode with "
                    "tag_per_joint=False or set tag_index_layout='per_joint'")
        raise ValueError(
            f"visible joint indices must lie in [0, T*H*W = {num_maps}*{height}*{width} = {n}), got {lo}..{hi}{hint}"
        )
    idx = torch.where(vis, idx, torch.zeros_like(idx))
    return idx, vis


def _gather(tags: Tensor, idx: Tensor) -> Tensor:
    """tags (B, T, H, W), idx (B, P, K) -> (B, P, K) float32 values of the flattened per-image tag array."""
    b = tags.shape[0]
    flat = tags.reshape(b, -1).float()
    return flat.gather(1, idx.reshape(b, -1)).view(idx.shape)


def _gather_vectors(tags: Tensor, idx: Tensor, tag_dim: int) -> Tensor:
    """tags (B, T*D, H, W) map-major, idx (B, P, K) into (T*H*W,) -> (B, P, K, D) float32 tag vectors."""
    b, c, h, w = tags.shape
    per_dim = tags.reshape(b, c // tag_dim, tag_dim, h * w).transpose(1, 2).reshape(b, tag_dim, -1).float()
    flat_idx = idx.reshape(b, 1, -1).expand(b, tag_dim, -1)
    return per_dim.gather(2, flat_idx).permute(0, 2, 1).reshape(*idx.shape, tag_dim)


def _segment_stats(vis: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-person visible counts (B, P) float, person-valid mask (B, P), persons per image N (B,) float."""
    cnt = vis.sum(dim=-1)
    valid = cnt > 0
    return cnt.float(), valid, valid.sum(dim=-1).float()


def ae_loss(
    tags: Tensor, joint_index: Tensor, loss_type: AELossType = "exp", layout: IndexLayout = "auto",
    tag_dim: int = 1,
) -> tuple[Tensor, Tensor]:
    """Associative-Embedding (push, pull), each (B,) float32, for tag maps (B, T*D, H, W); unweighted.

    D = `tag_dim` channels per map (map-major). A person's reference tag is the mean of its joints' D-dim
    tags; pull = mean squared L2 distance to it, push = exp(-squared L2 distance) between references ('max':
    max(0, 1 - L2 distance)). For D = 1 this is the official loss. Vectorised over batch and persons; equals the
    official per-person loop up to float summation order.
    """
    if not isinstance(tags, Tensor) or tags.dim() != 4:
        raise ValueError(f"tag maps must be (B, T*D, H, W), got {_shape(tags)}")
    b, c, h, w = tags.shape
    if tag_dim < 1 or c % tag_dim:
        raise ValueError(f"{c} tag channels are not T maps of D = {tag_dim} channels each")
    t = c // tag_dim
    idx, vis = resolve_tag_index(_check_index(joint_index, b).to(tags.device), t, h, w, layout)
    vals = _gather_vectors(tags, idx, tag_dim)  # (B, P, K, D)
    visf = vis.float()
    cnt, valid, n = _segment_stats(vis)
    mean = (vals * visf[..., None]).sum(2) / cnt.clamp(min=1)[..., None]  # (B, P, D); 0 for empty persons
    pull_p = (((vals - mean[:, :, None]) ** 2).sum(-1) * visf).sum(-1) / cnt.clamp(min=1)
    pull = pull_p.sum(-1) / n.clamp(min=1)

    diff = mean[:, :, None] - mean[:, None, :]  # (B, P, P, D)
    dist2 = (diff ** 2).sum(-1)
    if loss_type == "exp":
        sim = torch.exp(-dist2)
    elif loss_type == "max":
        pos = dist2 > 0  # sqrt's gradient at 0 is infinite: the diagonal and empty persons would give NaN
        dist = diff[..., 0].abs() if tag_dim == 1 else torch.where(pos, torch.where(pos, dist2, 1.0).sqrt(), 0.0)
        sim = torch.clamp(1 - dist, min=0)
    else:
        raise ValueError(f"AE loss type must be 'exp' or 'max', got {loss_type!r}")
    p = mean.shape[1]
    pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(p, dtype=torch.bool, device=tags.device)
    # Ordered pairs i != j, i.e. the official sum over all pairs minus the N diagonal ones (exactly 1 each).
    push = (sim * pair.float()).sum(dim=(1, 2)) / ((n - 1) * n).clamp(min=1) * 0.5
    push = torch.where(n > 1, push, torch.zeros_like(push))
    return push, pull


def tag_kd_loss(
    student_tags: Tensor, teacher_tags: Tensor, joint_index: Tensor, layout: IndexLayout = "auto",
    kind: TagKDType = "absolute", tag_dim: int = 1,
) -> Tensor:
    """(B,) tag distillation at the visible index entries (GT joints); the teacher is detached.

    'absolute': (student - teacher)^2, averaged like the pull term (per person, then over persons).
    'centered': the same after subtracting from each side its mean over the image's visible entries, so the
    teacher's arbitrary per-image offset is not a target; unlike the distance forms it gives every joint a plain
    regression target (the teacher's tag relative to the image's other people), with the gradient of an MSE.
    'relational': over all ordered pairs (e, f) of an image's visible entries,
    (|s_e - s_f| - |t_e - t_f|)^2, averaged over the pairs (0 for images with < 2 entries). The AE loss
    defines tags only up to a shift (and a sign), so a student can group perfectly with tags that differ
    from the teacher's by a constant: the relational form does not punish that, the absolute form does.
    'person': the same gap match, but between the people's reference tags (mean over each person's visible
    entries, as in the AE loss) over ordered pairs of people (0 for images with < 2 people). It transfers only
    how far apart the teacher puts people, not how it spreads a person's own joints (the pull term's job).
    Tensors: student (B, T*D, H, W) with D = `tag_dim` channels per map (map-major), teacher (B, T, H, W)
    with 1-D tags (reduce a per-joint teacher first for T = 1). For D > 1 only the distance forms
    ('relational', 'person') are defined: the student's distance is the L2 distance of its D-vectors (the AE
    loss's own metric), the teacher's stays 1-D, so the student learns the teacher's spacing of people
    whatever direction its tags take.
    """
    if not isinstance(student_tags, Tensor) or student_tags.dim() != 4:
        raise ValueError(f"student tag maps must be (B, T*D, H, W), got {_shape(student_tags)}")
    d = int(tag_dim)
    b, c, h, w = student_tags.shape
    if d < 1 or c % d:
        raise ValueError(f"student tag maps have {c} channels, not a multiple of D = {d} (tag_dim)")
    t = c // d
    if not isinstance(teacher_tags, Tensor) or teacher_tags.shape != (b, t, h, w):
        raise ValueError(
            f"teacher tag maps must be (B, T, H, W) = {(b, t, h, w)} to match the student's {tuple(student_tags.shape)} "
            f"(after reduction; 1-D teacher tags), got {_shape(teacher_tags)}"
        )
    if kind not in get_args(TagKDType):
        raise ValueError(f"tag KD type must be one of {get_args(TagKDType)}, got {kind!r}")
    if d > 1 and kind not in DISTANCE_TAG_KD:
        raise ValueError(f"'{kind}' tag KD compares tag values, which a D = {d} student and a 1-D teacher do not "
                         f"share: use a distance form {DISTANCE_TAG_KD} for D > 1")
    idx, vis = resolve_tag_index(_check_index(joint_index, b).to(student_tags.device), t, h, w, layout)
    if kind == "person":
        return _person_gap_loss(_gather_vectors(student_tags, idx, d), _gather(teacher_tags.detach(), idx), vis)
    if kind == "relational":
        te = _gather(teacher_tags.detach(), idx).reshape(b, -1)
        teacher_gap = (te[:, :, None] - te[:, None, :]).abs()
        if d == 1:
            s = _gather(student_tags, idx).reshape(b, -1)
            student_gap = (s[:, :, None] - s[:, None, :]).abs()
        else:
            sv = _gather_vectors(student_tags, idx, d).reshape(b, -1, d)
            sq = ((sv[:, :, None, :] - sv[:, None, :, :]) ** 2).sum(-1)
            student_gap = sq.clamp_min(1e-12).sqrt()  # no NaN gradient on the diagonal (e = f, distance 0)
        v = vis.reshape(b, -1).float()
        pair = v[:, :, None] * v[:, None, :]
        pair = pair * (1 - torch.eye(pair.shape[1], device=pair.device))  # ordered pairs e != f
        gap = (student_gap - teacher_gap) ** 2
        return (gap * pair).sum(dim=(1, 2)) / pair.sum(dim=(1, 2)).clamp(min=1)
    s_val, t_val = _gather(student_tags, idx), _gather(teacher_tags.detach(), idx)
    visf = vis.float()
    if kind == "centered":
        entries = visf.sum(dim=(1, 2)).clamp(min=1)[:, None, None]
        s_val = s_val - (s_val * visf).sum(dim=(1, 2), keepdim=True) / entries
        t_val = t_val - (t_val * visf).sum(dim=(1, 2), keepdim=True) / entries
    d2 = (s_val - t_val) ** 2
    cnt, _, n = _segment_stats(vis)
    per_person = (d2 * visf).sum(-1) / cnt.clamp(min=1)
    return per_person.sum(-1) / n.clamp(min=1)


def _person_gap_loss(student: Tensor, teacher: Tensor, vis: Tensor) -> Tensor:
    """(B,) mean over ordered pairs of valid people of (|m_s(p) - m_s(q)| - |m_t(p) - m_t(q)|)^2.

    student (B, P, K, D) and teacher (B, P, K) tags at the index entries, vis (B, P, K); m = a person's mean
    tag over its visible entries; the student's gap is the L2 norm of its D-vectors' difference.
    """
    visf = vis.float()
    cnt, valid, _ = _segment_stats(vis)
    m_s = (student * visf[..., None]).sum(2) / cnt.clamp(min=1)[..., None]  # (B, P, D)
    m_t = (teacher * visf).sum(2) / cnt.clamp(min=1)  # (B, P)
    sq = ((m_s[:, :, None] - m_s[:, None]) ** 2).sum(-1)
    student_gap = sq.clamp_min(1e-12).sqrt()  # no NaN gradient on the diagonal (p = q, distance 0)
    teacher_gap = (m_t[:, :, None] - m_t[:, None]).abs()
    p = valid.shape[1]
    pair = (valid[:, :, None] & valid[:, None] & ~torch.eye(p, dtype=torch.bool, device=vis.device)).float()
    return (((student_gap - teacher_gap) ** 2) * pair).sum(dim=(1, 2)) / pair.sum(dim=(1, 2)).clamp(min=1)


# ------------------------------------------------------------------------------------------------ module
class DistillLoss(nn.Module):
    """All training terms from student outputs, GT targets and (optionally) teacher outputs.

    `forward(outputs, heatmaps, masks, joint_indices, teacher_outputs=None) -> (total, logs)`; `logs` maps
    names to the *unweighted* batch means as floats (one device sync): `hm_gt_<s>`, `hm_kd_<s>` (teacher given),
    `hm_<s>` (combined, unweighted by the factor), `push`, `pull`, `tag_kd` (teacher with tags given, student
    with tags), `total`; <s> = output stride '4', '2'. KD terms that do not enter the total (alpha = 0,
    tag_kd_weight = 0) are still logged when a teacher is given, computed without autograd.

    `tag_reducer`: used when a T = 1 student distils from a per-joint teacher; defaults to
    `TagReducer(config.tag_reduction)`, which for 'pca' must be fitted (or loaded) before use.
    """

    def __init__(self, config: LossConfig = LossConfig(), tag_reducer: TagReducer | None = None) -> None:
        super().__init__()
        self.config = config
        if tag_reducer is None:
            tag_reducer = TagReducer(config.tag_reduction)
        elif tag_reducer.rule != config.tag_reduction:
            raise ValueError(
                f"tag_reducer rule {tag_reducer.rule!r} differs from config.tag_reduction {config.tag_reduction!r}"
            )
        self.tag_reducer = tag_reducer

    # -- validation -----------------------------------------------------------------------------------
    def _check_outputs(self, outputs: Sequence[Tensor], heatmaps, masks, teacher_outputs) -> int:
        cfg, j = self.config, self.config.num_joints
        if isinstance(outputs, Tensor) or not len(outputs):
            raise ValueError("outputs must be a non-empty list of tensors [out_4 (B, J+T, H, W), out_2 (B, J, ...)]")
        n_out = len(outputs)
        if len(heatmaps) != n_out or len(masks) != n_out:
            raise ValueError(
                f"expected one GT heatmap and mask tensor per output ({n_out}), got {len(heatmaps)} heatmaps and "
                f"{len(masks)} masks (slice the targets to the student's outputs)"
            )
        if len(cfg.heatmap_factors) < n_out:
            raise ValueError(f"config.heatmap_factors has {len(cfg.heatmap_factors)} entries for {n_out} outputs")
        b = outputs[0].shape[0] if isinstance(outputs[0], Tensor) else None
        for i, o in enumerate(outputs):
            if not isinstance(o, Tensor) or o.dim() != 4 or o.shape[0] != b:
                raise ValueError(f"output {i} must be a (B={b}, C, H, W) tensor, got {_shape(o)}")
            if i > 0 and o.shape[1] != j:
                raise ValueError(f"output {i} must have J = {j} heatmap channels, got {tuple(o.shape)}")
        d = cfg.tag_dim
        c = outputs[0].shape[1] - j
        if c not in (0, d, j * d):
            raise ValueError(
                f"output 0 must have J + T*D channels with J = {j}, T in (0, 1, {j}) and D = {d} (config.tag_dim), "
                f"got {tuple(outputs[0].shape)}"
            )
        t = c // d
        if teacher_outputs is not None:
            n_kd = cfg.kd_output_count(n_out)
            if isinstance(teacher_outputs, Tensor) or len(teacher_outputs) < n_kd:
                raise ValueError(f"teacher_outputs must be a list with at least {n_kd} tensors (one per output)")
            for i in range(n_kd):
                s, to = outputs[i], teacher_outputs[i]
                if (not isinstance(to, Tensor) or to.dim() != 4 or to.shape[0] != s.shape[0]
                        or to.shape[2:] != s.shape[2:] or to.shape[1] < j):
                    raise ValueError(
                        f"teacher output {i} must be (B={s.shape[0]}, >= J={j}, {s.shape[2]}, {s.shape[3]}) to match "
                        f"student output {tuple(s.shape)}, got {_shape(to)}"
                    )
        return t

    def _teacher_tags_fit(self, student_t: int, teacher_out0: Tensor) -> bool:
        """Whether `_teacher_tags` can pair this teacher's tag channels with a student's T maps."""
        j = self.config.num_joints
        tt = teacher_out0.shape[1] - j
        return tt == 0 or tt == student_t or (student_t == 1 and tt == j)

    def _teacher_tags(self, student_t: int, teacher_out0: Tensor) -> Tensor | None:
        j = self.config.num_joints
        tt = teacher_out0.shape[1] - j
        if tt == 0 or student_t == 0:
            return None
        tags = teacher_out0[:, j:].detach()
        if tt == student_t:
            return tags
        if student_t == 1 and tt == j:
            return self.tag_reducer.reduce(tags)
        raise ValueError(
            f"cannot distil teacher tags with T = {tt} maps into a student with T = {student_t} "
            f"(supported: equal T, or a per-joint teacher T = J = {j} reduced to one map; a teacher with D > 1 "
            f"channels per tag map cannot give tag KD: set tag_kd_weight 0)"
        )

    # -- terms ----------------------------------------------------------------------------------------
    def compute_terms(
        self,
        outputs: Sequence[Tensor],
        heatmaps: Sequence[Tensor],
        masks: Sequence[Tensor],
        joint_indices: Union[Tensor, Sequence[Tensor]],
        teacher_outputs: Sequence[Tensor] | None = None,
        labelled: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Per-image (B,) unweighted terms; those that do not enter the total are computed without autograd.

        `labelled` (B,) bool: False for an image without annotations (a label-scarce run); its combined heatmap
        term is the KD term alone, whatever alpha, and its GT terms are left out of the batch means (see
        `batch_means`)."""
        cfg, j = self.config, self.config.num_joints
        t = self._check_outputs(outputs, heatmaps, masks, teacher_outputs)
        alpha = float(cfg.alpha)
        if teacher_outputs is None and alpha > 0:
            raise ValueError(f"teacher_outputs are required for heatmap KD (alpha = {alpha} > 0)")
        unlabelled = None
        if labelled is not None:
            labelled = self._check_labelled(labelled, outputs[0].shape[0]).to(outputs[0].device)
            if not bool(labelled.all()):
                unlabelled = ~labelled
                if teacher_outputs is None:
                    raise ValueError("images without annotations (labelled False) need teacher_outputs: nothing "
                                     "else supervises them")
        kd_grad = alpha > 0 or unlabelled is not None
        gt_k = cfg.ohkm_topk if cfg.ohkm_gt else None
        kd_k = cfg.ohkm_topk if cfg.ohkm_kd else None
        n_kd = cfg.kd_output_count(len(outputs))
        terms: dict[str, Tensor] = {}
        for i, out in enumerate(outputs):
            name = output_name(i)
            # One copy into contiguous float32 up front: the heatmap terms then run on plain (B, J, H, W) memory
            # whatever the model gave (a channels_last or bf16 output made each elementwise op walk strided memory
            # or convert again): 1.13x (1/2 resolution) to 1.25x (1/4) on the heatmap terms against converting the
            # whole output first (scripts/bench_losses.py, session 24).
            pred = out[:, :j].to(torch.float32, memory_format=torch.contiguous_format)
            with torch.set_grad_enabled(torch.is_grad_enabled() and alpha < 1):
                target = heatmaps[i].to(pred.device)
                weight = heatmap_pixel_weights(pred, target, cfg.heatmap_loss, cfg.fg_weight)
                gt = heatmap_loss(pred, target, masks[i].to(pred.device), gt_k, weight)
            terms[f"hm_gt_{name}"] = gt
            if teacher_outputs is not None and i < n_kd:
                with torch.set_grad_enabled(torch.is_grad_enabled() and kd_grad):
                    t_heat, m = teacher_outputs[i][:, :j].detach(), masks[i].to(pred.device)
                    if cfg.kd_type == "softmax":
                        per_joint = per_joint_softmax_kd_loss(pred, t_heat, m, cfg.kd_temperature)
                    elif cfg.kd_type == "target":
                        t_weight = heatmap_pixel_weights(pred, t_heat, cfg.heatmap_loss, cfg.fg_weight)
                        per_joint = per_joint_heatmap_loss(pred, t_heat, m, t_weight)
                    else:
                        per_joint = per_joint_heatmap_loss(pred, t_heat, m)
                    kd = _reduce_joints(per_joint, kd_k)
                terms[f"hm_kd_{name}"] = kd
                hm = gt if alpha == 0 else kd if alpha == 1 else alpha * kd + (1 - alpha) * gt
                if unlabelled is not None:
                    hm = torch.where(unlabelled, kd, hm)
            else:
                hm = gt
            terms[f"hm_{name}"] = hm

        uses_ae = cfg.push_factor > 0 or cfg.pull_factor > 0
        uses_tag_kd = cfg.tag_kd_weight > 0
        if t == 0 and (uses_ae or uses_tag_kd):
            raise ValueError(
                f"output 0 has only the J = {j} heatmaps but the AE/tag-KD terms need tag maps: expected "
                f"J + T channels with T = 1 or J, or set push_factor = pull_factor = tag_kd_weight = 0"
            )
        if t > 0:
            if isinstance(joint_indices, Tensor):
                index = joint_indices
            else:
                if not len(joint_indices):
                    raise ValueError("joint_indices must hold the tag-loss index of output 0")
                index = joint_indices[0]
            tags = outputs[0][:, j:]
            index = _check_index(index, tags.shape[0]).to(tags.device)
            terms["push"], terms["pull"] = ae_loss(tags, index, cfg.ae_loss_type, cfg.tag_index_layout, cfg.tag_dim)
            if cfg.tag_dim > 1 and cfg.tag_kd_type not in DISTANCE_TAG_KD and uses_tag_kd:
                raise ValueError(f"tag KD '{cfg.tag_kd_type}' compares tag values, but this student has D = "
                                 f"{cfg.tag_dim} channels per tag map: use tag_kd_type in {DISTANCE_TAG_KD} "
                                 "(or tag_kd_weight 0)")
            distillable = cfg.tag_dim == 1 or cfg.tag_kd_type in DISTANCE_TAG_KD
            if teacher_outputs is not None and not uses_tag_kd and not self._teacher_tags_fit(t, teacher_outputs[0]):
                distillable = False  # only logged, and this teacher's tags have another layout (e.g. D > 1)
            if (teacher_outputs is not None or uses_tag_kd) and distillable:
                if teacher_outputs is None:
                    raise ValueError(f"teacher_outputs are required for tag KD (tag_kd_weight = {cfg.tag_kd_weight})")
                t_tags = self._teacher_tags(t, teacher_outputs[0])
                if t_tags is None:
                    if uses_tag_kd:
                        raise ValueError(
                            f"tag KD needs teacher tag maps: teacher output 0 has {teacher_outputs[0].shape[1]} "
                            f"channels, expected J + T = {j} + (1 or {j})"
                        )
                else:
                    with torch.set_grad_enabled(torch.is_grad_enabled() and uses_tag_kd):
                        terms["tag_kd"] = tag_kd_loss(tags, t_tags, index, cfg.tag_index_layout, cfg.tag_kd_type,
                                                      cfg.tag_dim)
        return terms

    @staticmethod
    def _check_labelled(labelled: Tensor, batch: int) -> Tensor:
        if not isinstance(labelled, Tensor) or tuple(labelled.shape) != (batch,):
            raise ValueError(f"labelled must be a (B,) = ({batch},) bool tensor, got {_shape(labelled)}")
        return labelled.bool()

    @staticmethod
    def batch_means(terms: dict[str, Tensor], labelled: Tensor | None = None) -> dict[str, Tensor]:
        """Each term's batch mean. With `labelled`, the terms only the ground truth defines (GT heatmap, AE,
        tag KD at the GT joints) average over the labelled images alone, so that a batch's unlabelled images do
        not dilute them (an unlabelled image has no joints: its AE terms are 0 and its GT heatmap term is against
        an empty target)."""
        if labelled is None:
            return {k: v.mean() for k, v in terms.items()}
        lab = labelled.to(next(iter(terms.values())).device).float()
        count = lab.sum().clamp(min=1)
        gt_only = lambda k: k.startswith("hm_gt_") or k in ("push", "pull", "tag_kd")  # noqa: E731
        return {k: (v * lab).sum() / count if gt_only(k) else v.mean() for k, v in terms.items()}

    def total_from_terms(self, terms: dict[str, Tensor], num_outputs: int, labelled: Tensor | None = None) -> Tensor:
        cfg = self.config
        means = self.batch_means(terms, labelled)
        total = sum(cfg.heatmap_factors[i] * means[f"hm_{output_name(i)}"] for i in range(num_outputs))
        if "push" in terms:
            total = total + cfg.push_factor * means["push"] + cfg.pull_factor * means["pull"]
        if cfg.tag_kd_weight > 0:
            total = total + cfg.tag_kd_weight * means["tag_kd"]
        return total

    def forward(
        self,
        outputs: Sequence[Tensor],
        heatmaps: Sequence[Tensor],
        masks: Sequence[Tensor],
        joint_indices: Union[Tensor, Sequence[Tensor]],
        teacher_outputs: Sequence[Tensor] | None = None,
        labelled: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        terms = self.compute_terms(outputs, heatmaps, masks, joint_indices, teacher_outputs, labelled)
        if labelled is not None:
            labelled = self._check_labelled(labelled, outputs[0].shape[0])
        total = self.total_from_terms(terms, len(outputs), labelled)
        names = list(terms) + ["total"]
        means = self.batch_means({k: v.detach().float() for k, v in terms.items()}, labelled)
        values = torch.stack([means[k] for k in terms] + [total.detach().float()])
        return total, dict(zip(names, values.tolist()))
