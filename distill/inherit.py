"""Start a student from a larger model's weights: every tensor whose name and shape match is copied.

Why: a student that shares its teacher's module tree at a smaller depth (fewer blocks per branch, fewer
modules per stage: `configs/students/hrnet_w16_lite.yaml`) can begin where the teacher is rather than from
random weights, as DistilBERT starts from every other layer of BERT. The kept layers are the teacher's first
block of each branch and first module of each stage, because those are the names the shallower tree has.

Two tensors are adapted rather than copied when a one-tag-map student inherits from a per-joint teacher (their
tag maps are the last J channels of the 1/4 output, and the last J inputs of the deconv that reads it):
* the 1/4 output conv (J heatmaps + 1 tag map) takes the teacher's J heatmap filters and, as its tag filter,
  the mean of the teacher's J tag filters, so its tag map starts as the teacher's mean-reduced tag map (the
  `mean` tag reduction of distill/tag_reduction.py; the conv is linear, so the mean of the filters gives the
  mean of the maps);
* the deconv's input weights for that one map are the sum of the teacher's weights for its J tag maps: where
  the J maps equal their mean, the deconv sees what the teacher's did.

Everything else keeps the student's own initialisation, and the report says how much was inherited.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from distill.errors import CheckpointError
from teachers.checkpoint import read_state_dict

__all__ = ["InheritReport", "inherit_weights"]

# Entries whose first dimension ends with the per-joint tag maps, and how one map stands for J of them.
TAG_CHANNEL_REDUCTIONS = {
    "final_layers.0.": "mean",        # 1/4 output conv: out channels [J heatmaps, T tag maps]
    "deconv_layers.0.0.0.": "sum",    # the deconv's weight (in, out, k, k): in channels [features, J heat, T tags]
}


@dataclass
class InheritReport:
    """What `inherit_weights` did, by state_dict entry."""

    source: str
    copied: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)      # one-tag entries from the teacher's per-joint ones
    kept: list[str] = field(default_factory=list)         # no same-name tensor in the source: own init kept
    mismatched: list[str] = field(default_factory=list)   # same name, other shape: own init kept
    params_inherited: int = 0
    params_total: int = 0

    def summary(self) -> str:
        frac = self.params_inherited / max(self.params_total, 1)
        text = (f"inherited {len(self.copied) + len(self.adapted)} of "
                f"{len(self.copied) + len(self.adapted) + len(self.kept) + len(self.mismatched)} tensors "
                f"({frac:.1%} of the parameters) from {self.source}")
        if self.adapted:
            text += f"; adapted {', '.join(self.adapted)} (one tag map from the source's per-joint ones)"
        if self.mismatched:
            text += f"; {len(self.mismatched)} kept their init (shape differs: {', '.join(self.mismatched[:3])}"
            text += ", ...)" if len(self.mismatched) > 3 else ")"
        return text


def _one_tag_from_per_joint(name: str, student: torch.Tensor, source: torch.Tensor, num_joints: int
                            ) -> torch.Tensor | None:
    """A one-tag entry from the per-joint one (its last J rows reduced to one), or None when the name or the
    shapes do not say so."""
    reduction = next((r for key, r in TAG_CHANNEL_REDUCTIONS.items()
                      if name.startswith(key) or "." + key in name), None)  # also under a prefix (head.)
    if (reduction is None or num_joints < 2 or student.dim() == 0 or student.shape[1:] != source.shape[1:]
            or source.shape[0] != student.shape[0] + num_joints - 1):
        return None
    tags = source[-num_joints:]
    one = tags.mean(dim=0, keepdim=True) if reduction == "mean" else tags.sum(dim=0, keepdim=True)
    return torch.cat([source[:-num_joints], one])


def inherit_weights(model: nn.Module, path: str | Path, prefix: str = "") -> InheritReport:
    """Copy every tensor of `path` (official .pth or our model.pt) whose name and shape match into `model`.

    `prefix`: where the source's tree sits in the model, e.g. "head." for a step student whose `head` has the
    teacher's head shapes (the source's `final_layers.0.weight` is then the model's `head.final_layers.0.weight`).
    Raises a CheckpointError naming the file when nothing matches: a student that inherits nothing would
    silently train from scratch under a run that says it did not."""
    source = {prefix + name: value for name, value in read_state_dict(path).items()}
    target = model.state_dict()
    report = InheritReport(source=str(path))
    num_joints = int(getattr(model, "num_joints", 0))
    new_values: dict[str, torch.Tensor] = {}
    params = {name for name, _ in model.named_parameters()}
    for name, value in target.items():
        counted = value.numel() if name in params else 0
        report.params_total += counted
        if name not in source:
            report.kept.append(name)
            continue
        src = source[name]
        if tuple(src.shape) == tuple(value.shape):
            new_values[name] = src
            report.copied.append(name)
            report.params_inherited += counted
            continue
        adapted = _one_tag_from_per_joint(name, value, src, num_joints)
        if adapted is None:
            report.mismatched.append(name)
        else:
            new_values[name] = adapted
            report.adapted.append(name)
            report.params_inherited += counted
    if not new_values:
        raise CheckpointError(
            f"{path}: model.init_from: no tensor of this checkpoint has a name and shape of the model's "
            f"({len(target)} entries, e.g. {next(iter(target))!r}"
            + (f"; source names read with the prefix {prefix!r}" if prefix else "")
            + "); it only helps a model built from the same module tree (e.g. hrnet_w16_lite from the "
            "higherhrnet_w16_synth teacher, or with model.init_from_prefix=head. a step student whose head has "
            "the teacher's widths)")
    with torch.no_grad():
        for name, value in new_values.items():
            target[name].copy_(value.to(dtype=target[name].dtype))
    return report
