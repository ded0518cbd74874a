"""Reduce a teacher's J per-joint tag maps to one map: the tag-KD target of a student with a single tag map.

A HigherHRNet teacher predicts one tag map per joint (T = J); a student may predict a single shared map
(T = 1, the encoder's `tag_per_joint=False` mode). Its tag-distillation target is the teacher's (B, J, H, W)
tags reduced to (B, 1, H, W) by one of three rules:

- `first`: channel 0 (the nose tag map in COCO order);
- `mean`:  the mean over the J channels;
- `pca`:   the projection `(v - mean) . component / sqrt(J)` of each pixel's J-dim tag vector v on the first
  principal component of the teacher's tag vectors (the 1/sqrt(J) keeps the tag scale: one person's J tags
  agree, v ~ t * ones, so people t apart are sqrt(J) * t apart along that component, and the decoder's tag
  threshold of 1 is meant for t), fitted once on training images (`TagReducer.fit`) and stored with
  the run (`state_dict()`: plain tensors `mean` (J,) and `component` (J,), float32).

What PCA is fitted on: every item of `fit`'s iterable is either

- a pair `(tags (B, J, H, W), joint_index (B, P, K, 2))`: the J-dim vectors at the pixels of the *visible GT
  joints* (`joint_index[..., 1] > 0`; pixel = index mod H*W, so both index layouts work). This is the
  recommended mode, because those are exactly the pixels where the tag-KD loss reads the reduced map;
  background pixels carry no identity information and would dominate an all-pixel fit; or
- a bare tensor `tags (B, J, H, W)`: *all* pixels.

Sign convention (the principal direction is only defined up to sign): the component is flipped so that the
sum of its entries is positive; if that sum is ~0 (|sum| <= 1e-6), so that its entry of largest magnitude
(the first one on ties) is positive. So two fits of the same data give the same component, whatever the
eigen-solver returns; and when the J channels agree (identical tags), `pca` is `mean` shifted by a constant.
"""
from __future__ import annotations

import math
from typing import Iterable, Literal, Union, get_args

import torch
from torch import Tensor

TagRule = Literal["first", "mean", "pca"]
TAG_RULES: tuple[str, ...] = get_args(TagRule)

FitItem = Union[Tensor, tuple[Tensor, Tensor]]


def _check_tags(tags: Tensor, what: str = "tags") -> None:
    if not isinstance(tags, Tensor) or tags.dim() != 4:
        shape = tuple(tags.shape) if isinstance(tags, Tensor) else type(tags).__name__
        raise ValueError(f"{what} must be a (B, J, H, W) tensor, got {shape}")


def sample_tag_vectors(tags: Tensor, joint_index: Tensor | None = None) -> Tensor:
    """(N, J) per-pixel tag vectors: at the visible GT joint pixels of `joint_index`, or at all pixels.

    `joint_index` (B, P, K, 2): entries (flat index, visible); the pixel is `index mod H*W`, so both the
    per-joint layout (j*H*W + y*W + x) and the shared layout (y*W + x) are accepted.
    """
    _check_tags(tags)
    b, j, h, w = tags.shape
    flat = tags.detach().reshape(b, j, h * w)
    if joint_index is None:
        return flat.permute(0, 2, 1).reshape(-1, j)
    if joint_index.dim() != 4 or joint_index.shape[0] != b or joint_index.shape[-1] != 2:
        raise ValueError(
            f"joint_index must have shape (B={b}, max_people, K, 2) to go with tags {tuple(tags.shape)}, "
            f"got {tuple(joint_index.shape)}"
        )
    ji = joint_index.to(tags.device)
    vis = ji[..., 1] > 0
    idx = ji[..., 0].long()
    bad = vis & ((idx < 0) | (idx >= j * h * w))
    if bool(bad.any()):
        raise ValueError(
            f"visible joint indices must lie in [0, J*H*W = {j * h * w}) for tags {tuple(tags.shape)}; "
            f"got {int(idx[bad].min())}..{int(idx[bad].max())}"
        )
    bi = torch.arange(b, device=tags.device).view(b, 1, 1).expand_as(idx)
    return flat.permute(0, 2, 1)[bi[vis], idx[vis] % (h * w)]  # (N, J)


def _fix_sign(component: Tensor) -> Tensor:
    s = component.sum()
    if abs(float(s)) > 1e-6:
        return component if s > 0 else -component
    k = int(torch.argmax(component.abs()))  # first maximal entry
    return component if component[k] > 0 else -component


class TagReducer:
    """(B, J, H, W) teacher tags -> (B, 1, H, W) by rule `first`, `mean` or `pca` (see the module doc).

    `first` and `mean` need no fitting (their `state_dict()` is empty); `pca` must be fitted or loaded.
    """

    def __init__(self, rule: TagRule = "mean") -> None:
        if rule not in TAG_RULES:
            raise ValueError(f"tag reduction rule must be one of {TAG_RULES}, got {rule!r}")
        self.rule: str = rule
        self.mean: Tensor | None = None  # (J,) float32, pca only
        self.component: Tensor | None = None  # (J,) float32 unit vector, pca only
        self.explained_variance_ratio: float | None = None  # set by fit (not stored)
        self.num_samples: int = 0  # set by fit (not stored)

    @property
    def fitted(self) -> bool:
        return self.rule != "pca" or self.component is not None

    def __repr__(self) -> str:
        extra = ""
        if self.rule == "pca":
            extra = f", J={self.component.numel()}" if self.component is not None else ", unfitted"
        return f"TagReducer(rule={self.rule!r}{extra})"

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, batches: Iterable[FitItem], max_samples: int | None = None) -> "TagReducer":
        """Fit the `pca` direction on teacher tags (no-op for `first`/`mean`); returns self.

        Items: `(tags (B, J, H, W), joint_index (B, P, K, 2))` -> vectors at visible GT joint pixels
        (recommended), or bare `tags` -> all pixels. Streaming: float64 sums, shifted by the first batch's mean
        for accuracy; stops once `max_samples` vectors were seen (if given).
        """
        if self.rule != "pca":
            return self
        n = 0
        shift = s1 = s2 = None
        num_joints = None
        for item in batches:
            if isinstance(item, (tuple, list)):
                if len(item) != 2:
                    raise ValueError("fit items must be tags or (tags, joint_index) pairs")
                x = sample_tag_vectors(item[0], item[1])
            else:
                x = sample_tag_vectors(item)
            if num_joints is None:
                num_joints = x.shape[1]
            elif x.shape[1] != num_joints:
                raise ValueError(f"all fit batches must have J = {num_joints} tag channels, got {x.shape[1]}")
            if max_samples is not None:
                x = x[: max(0, max_samples - n)]
            if x.shape[0] == 0:
                if max_samples is not None and n >= max_samples:
                    break
                continue
            x = x.to(torch.float64)
            if shift is None:
                shift = x.mean(0)
                s1 = torch.zeros_like(shift)
                s2 = torch.zeros(num_joints, num_joints, dtype=torch.float64, device=x.device)
            xc = x - shift.to(x.device)
            s1 = s1.to(x.device) + xc.sum(0)
            s2 = s2.to(x.device) + xc.T @ xc
            n += x.shape[0]
            if max_samples is not None and n >= max_samples:
                break
        if n < 2:
            raise ValueError(f"PCA tag reduction needs at least 2 tag vectors to fit, got {n}")
        m = s1 / n
        cov = (s2 / n - torch.outer(m, m)).cpu()
        cov = 0.5 * (cov + cov.T)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        comp = _fix_sign(evecs[:, -1])
        total = float(evals.clamp(min=0).sum())
        self.mean = (shift.cpu() + m.cpu()).to(torch.float32)
        self.component = comp.to(torch.float32)
        self.explained_variance_ratio = float(evals[-1].clamp(min=0)) / total if total > 0 else 1.0
        self.num_samples = n
        return self

    # -- applying ---------------------------------------------------------------------------------------
    def reduce(self, tags: Tensor) -> Tensor:
        """(B, J, H, W) -> (B, 1, H, W), same dtype and device as `tags`."""
        _check_tags(tags)
        if self.rule == "first":
            return tags[:, :1]
        if self.rule == "mean":
            return tags.mean(dim=1, keepdim=True)
        if self.component is None or self.mean is None:
            raise RuntimeError(
                "TagReducer('pca') is not fitted: call fit() on teacher tags from training images, or "
                "load_state_dict() of the run's stored reducer"
            )
        j = self.component.numel()
        if tags.shape[1] != j:
            raise ValueError(f"TagReducer('pca') was fitted on J = {j} tag channels, got tags {tuple(tags.shape)}")
        comp = self.component.to(device=tags.device, dtype=tags.dtype).view(1, j, 1, 1)
        mean = self.mean.to(device=tags.device, dtype=tags.dtype).view(1, j, 1, 1)
        return ((tags - mean) * comp).sum(dim=1, keepdim=True) / math.sqrt(j)

    __call__ = reduce

    # -- persistence ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """`{'mean': (J,), 'component': (J,)}` float32 CPU tensors for `pca`; `{}` for `first`/`mean`."""
        if self.rule != "pca":
            return {}
        if self.component is None or self.mean is None:
            raise RuntimeError("TagReducer('pca') is not fitted: nothing to save")
        return {"mean": self.mean.detach().cpu().clone(), "component": self.component.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if self.rule != "pca":
            if state:
                raise ValueError(f"TagReducer({self.rule!r}) has no state, got keys {sorted(state)}")
            return
        if set(state) != {"mean", "component"}:
            raise ValueError(f"TagReducer('pca') state must have keys ['component', 'mean'], got {sorted(state)}")
        mean = torch.as_tensor(state["mean"]).detach().cpu().to(torch.float32)
        comp = torch.as_tensor(state["component"]).detach().cpu().to(torch.float32)
        if mean.dim() != 1 or comp.shape != mean.shape or mean.numel() == 0:
            raise ValueError(
                f"TagReducer('pca') state: 'mean' and 'component' must be (J,) vectors of one length, got "
                f"{tuple(mean.shape)} and {tuple(comp.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(comp).all()):
            raise ValueError("TagReducer('pca') state holds non-finite values")
        self.mean, self.component = mean.clone(), comp.clone()

    @classmethod
    def from_state_dict(cls, rule: TagRule, state: dict[str, Tensor]) -> "TagReducer":
        r = cls(rule)
        r.load_state_dict(state)
        return r
