"""Test-time aggregation of network outputs, as the official HigherHRNet test pipeline does it.

A network gives `[out_1/4 (B, J+T, h/4, w/4), out_1/2 (B, J, h/2, w/2)]`. Per pass, every output
except the last is upsampled (bilinear) to the last one's size; heatmaps of the outputs that have
them are averaged; tags come from the outputs that have them (channels after the J heatmaps). With
flip test the flipped pass is flipped back and its joints permuted. Heatmaps and tags are then
projected (bilinear) to the input size; heatmaps of the two passes are averaged and tags are
stacked along a last axis as [original, flipped]. Multi-scale: heatmaps averaged over scales
(all projected to the scale-1 input size), tags from scale 1 only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class OutputLayout:
    """The output contract of every teacher and student (`model.output_layout`): what each output holds.

    Output i has `num_joints` heatmap channels when `heatmap_outputs[i]`, followed by T * D tag channels when
    `tag_outputs[i]` (T = `tag_maps`: J per-joint maps or one shared map; D = `tag_dim` channels per map,
    map-major: map t's channels are t*D .. t*D + D - 1), at 1/`strides[i]` of the input size (lowest
    resolution first). The official HigherHRNet: heatmaps in both outputs, tags at 1/4, strides (4, 2), D = 1.
    `strides` is empty for models that do not declare it (foreign modules, whose layout is inferred)."""

    num_joints: int = 17
    heatmap_outputs: tuple[bool, ...] = (True, True)
    tag_outputs: tuple[bool, ...] = (True, False)
    tag_per_joint: bool = True
    strides: tuple[int, ...] = ()
    tag_dim: int = 1

    @property
    def tag_maps(self) -> int:
        return self.num_joints if self.tag_per_joint else 1

    @property
    def tag_channels(self) -> int:
        """T * D: the tag channels of an output that carries tags."""
        return self.tag_maps * self.tag_dim

    def channels(self, index: int) -> int:
        """Channels of output `index`."""
        return (self.num_joints if self.heatmap_outputs[index] else 0) + (self.tag_channels if self.tag_outputs[index] else 0)

    def output_sizes(self, input_size: int) -> list[int]:
        """Side of each output for a square input (needs declared strides)."""
        if not self.strides:
            raise ValueError("this layout declares no output strides")
        return [int(input_size) // s for s in self.strides]


def _resize(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size_hw, mode="bilinear", align_corners=False)


def merge_pass(outputs: Sequence[torch.Tensor], layout: OutputLayout, flip_index: Sequence[int] | None = None
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward pass -> (averaged heatmaps, (B, T, D, H, W) tag maps per tag output) at the last output's size.

    With `flip_index`, the pass was run on a horizontally flipped image: flip back and permute joints.
    """
    last_hw = tuple(outputs[-1].shape[-2:])
    heat_sum, heat_count, tags = 0, 0, []
    for i, out in enumerate(outputs):
        if len(outputs) > 1 and i != len(outputs) - 1:
            out = _resize(out, last_hw)
        if flip_index is not None:
            out = torch.flip(out, [3])
        offset = layout.num_joints if layout.heatmap_outputs[i] else 0
        if layout.heatmap_outputs[i]:
            heat = out[:, : layout.num_joints]
            heat_sum = heat_sum + (heat[:, list(flip_index)] if flip_index is not None else heat)
            heat_count += 1
        if layout.tag_outputs[i]:
            tag = out[:, offset:]
            b, _, h, w = tag.shape
            tag = tag.reshape(b, layout.tag_maps, layout.tag_dim, h, w)
            if flip_index is not None and layout.tag_per_joint:
                tag = tag[:, list(flip_index)]
            tags.append(tag)
    return heat_sum / heat_count, tags


def aggregate_single_scale(
    outputs: Sequence[torch.Tensor],
    flipped_outputs: Sequence[torch.Tensor] | None,
    layout: OutputLayout,
    flip_index: Sequence[int] | None,
    project_hw: tuple[int, int] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (B, J, H, W) and tags (B, T, H, W, L), L = D x tag outputs x passes ([pass 1's D, pass 2's D,
    ...]; D = 1: the official [original, flipped]), at one scale."""
    heat, tags = merge_pass(outputs, layout)
    heats = [heat]
    if flipped_outputs is not None:
        if flip_index is None:
            raise ValueError("flip test needs the dataset's flip_index")
        heat_f, tags_f = merge_pass(flipped_outputs, layout, flip_index)
        heats.append(heat_f)
        tags = tags + tags_f
    if project_hw is not None:
        heats = [_resize(h, project_hw) for h in heats]
        tags = [_resize(t.flatten(1, 2), project_hw).reshape(*t.shape[:3], *project_hw) for t in tags]
    heatmaps = heats[0] if len(heats) == 1 else (heats[0] + heats[1]) / 2.0
    return heatmaps, torch.cat([t.permute(0, 1, 3, 4, 2) for t in tags], dim=4)


def combine_scales(per_scale: Sequence[tuple[float, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(scale, heatmaps, tags)] all at the same projected size -> mean heatmaps, scale-1 tags."""
    heatmaps = sum(h for _, h, _ in per_scale) / float(len(per_scale))
    if len(per_scale) == 1:
        return heatmaps, per_scale[0][2]
    ones = [t for s, _, t in per_scale if s == 1]
    if not ones:
        raise ValueError("multi-scale test needs scale 1 among the scales (tags come from it)")
    return heatmaps, ones[0]
