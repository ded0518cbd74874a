"""Feature distillation: the student's features match the teacher's where both feed the same kind of head.

Why: heatmap KD gives a student the teacher's outputs at the joints, which its ground truth already says; the
teacher's features before its output convs (the 1/4 maps that `final_layers.0` reads) hold at every pixel
what those convs turn into heatmaps *and* tags, so matching them passes on the tag frame too, which the AE
loss defines only up to a shift (FitNets' hints, Romero et al. 2015; with the teacher's own head on top as in
SimKD, Chen et al. CVPR 2022: a student with `head_channels` = the teacher's width and `model.init_from_prefix`
starts from the teacher's head and is asked for the features that head expects).

`FeatureTap` records the input of one module (found by the end of its name) on every forward; the loss is the
mean squared difference over channels and pixels, per image. Several layers can be named (`"stage3,stage4,
final_layers.0"`: layer-wise hints, as TinyBERT distils every kept layer); a module whose input is a list of
maps (an HRNet stage reads one per branch) gives one term per map. Every term is a per-element mean, so a
coarse branch counts as much as the 1/4 one, and the loss is the mean of the terms. The teacher must run on the student's own
augmented batch (`teacher.mode: online`): its features are not equivariant to flips (channels do not swap like
left/right heatmaps do), so they cannot be warped from a cache as its outputs are.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

__all__ = ["FeatureTap", "feature_kd_loss", "find_module", "tap_names"]


def tap_names(spec: str) -> list[str]:
    """'stage3, stage4,final_layers.0' -> ['stage3', 'stage4', 'final_layers.0'] (empty names refused)."""
    names = [part.strip() for part in spec.split(",")]
    if not names or any(not n for n in names):
        raise ValueError(f"expected module names separated by commas, got {spec!r}")
    return names


def find_module(model: nn.Module, suffix: str) -> tuple[str, nn.Module]:
    """The one module whose qualified name is `suffix` or ends with '.' + `suffix`.

    Raises a ValueError listing candidates when there is none or more than one, so a wrong name fails at
    start-up rather than distilling the wrong layer."""
    hits = [(name, m) for name, m in model.named_modules() if name == suffix or name.endswith("." + suffix)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        heads = [name for name, _ in model.named_modules() if name.endswith("final_layers.0")]
        raise ValueError(f"no module named *{suffix!r} in {type(model).__name__} "
                         f"(the 1/4 output conv here is {heads or 'absent'})")
    raise ValueError(f"{len(hits)} modules end with {suffix!r} in {type(model).__name__}: "
                     f"{[name for name, _ in hits]}; name one of them in full")


class FeatureTap:
    """Keeps the first positional input of a module from its latest forward (a forward pre-hook)."""

    def __init__(self, model: nn.Module, suffix: str) -> None:
        self.name, module = find_module(model, suffix)
        self.value: Tensor | None = None
        self._handle = module.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: tuple) -> None:
        self.value = args[0]

    def take(self) -> Tensor:
        """The recorded input, cleared so that a stale tensor is never used twice."""
        if self.value is None:
            raise RuntimeError(f"module {self.name!r} did not run since the last take()")
        value, self.value = self.value, None
        return value

    def remove(self) -> None:
        self._handle.remove()


def feature_kd_loss(student: Tensor | Sequence[Tensor], teacher: Tensor | Sequence[Tensor]) -> Tensor:
    """Per-image (B,) mean squared difference between the student's and the (detached) teacher's features; for
    lists of maps (one per branch) the mean of the maps' terms.

    Both must have the same shapes (B, C, H, W): a student whose head reads another width cannot be compared
    without a learnt adapter, which this loss does not add."""
    if isinstance(student, (list, tuple)) or isinstance(teacher, (list, tuple)):
        if not (isinstance(student, (list, tuple)) and isinstance(teacher, (list, tuple))) or len(student) != len(teacher):
            raise ValueError(f"feature KD: the student gives {_describe(student)}, the teacher {_describe(teacher)}")
        return torch.stack([feature_kd_loss(s, t) for s, t in zip(student, teacher)]).mean(dim=0)
    if student.shape != teacher.shape:
        raise ValueError(f"feature KD: student features {tuple(student.shape)} and teacher features "
                         f"{tuple(teacher.shape)} differ; give the student the teacher's width at the tapped "
                         "layer (e.g. step students' head_channels)")
    diff = student.float() - teacher.detach().float()
    return diff.pow(2).flatten(1).mean(dim=1)


def _describe(x: Any) -> str:
    if isinstance(x, (list, tuple)):
        return f"a list of {len(x)} maps"
    return f"one map {tuple(x.shape)}"
