"""Building blocks shared by the step and timm students: top-down fusion to 1/4 and the AE heads.

    TopDownFusion   FPN-like: lateral 1x1 conv+BN per input level, coarsest first; each finer level
                    = ReLU(lateral + upsample(previous)); optional 3x3 conv-BN-ReLU on the result.
                    If the finest input is coarser than 1/4, the result is upsampled to 1/4.
    AEHead          HigherHRNet-style heads on 1/4 features F:
                      out_1/4 = conv1x1(F) -> J heatmaps + T tag maps (T = J or 1)
                      x       = cat(F, out_1/4) -> ConvTranspose2d(k4, s2, p1, no bias) + BN + ReLU
                                -> `num_basic_blocks` BasicBlocks
                      out_1/2 = conv1x1(x) -> J heatmaps
                    With `num_deconvs` 0 only out_1/4 exists (the HRNet AE baseline of the HigherHRNet paper,
                    the official NUM_DECONVS 0): no 1/2 maps to compute, supervise or load.
                    Module names (final_layers.0/1, deconv_layers.0.0/.1...) follow the teacher's.

Upsampling is nearest-neighbour to the lateral's exact size, so any input that the backbone accepts
works (not only multiples of the largest stride).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.inference import OutputLayout
from students.config import StudentConfigError
from teachers.blocks import BN_MOMENTUM, BasicBlock

__all__ = ["AEHead", "AEHeadFields", "AEHeadNet", "ConvBNReLU", "TopDownFusion", "init_student_weights"]


class AEHeadFields:
    """The head fields every fused student config has (`neck_channels`, `deconv_channels`, `deconv_blocks`,
    `num_deconvs`, `num_joints`, `tag_per_joint`, `tag_dim`): one range check and one T for the step and timm
    families."""

    neck_channels: int
    deconv_channels: int
    deconv_blocks: int
    num_deconvs: int
    num_joints: int
    tag_per_joint: bool
    tag_dim: int

    def check_head_fields(self, **more_positive: int) -> None:
        """Refuse non-positive widths / J / D (and `more_positive`) and a negative block count, by field name."""
        positive = {"neck_channels": self.neck_channels, "deconv_channels": self.deconv_channels,
                    "num_joints": self.num_joints, **more_positive}
        for key, value in positive.items():
            if value < 1:
                raise StudentConfigError(f"field '{key}' must be >= 1, got {value}")
        if self.deconv_blocks < 0:
            raise StudentConfigError(f"field 'deconv_blocks' must be >= 0, got {self.deconv_blocks}")
        if self.num_deconvs not in (0, 1):
            raise StudentConfigError(f"field 'num_deconvs' must be 1 (1/4 and 1/2 outputs, as HigherHRNet) or 0 "
                                     f"(1/4 only), got {self.num_deconvs}")
        if self.tag_dim < 1:
            raise StudentConfigError(f"field 'tag_dim' (channels per tag map) must be >= 1, got {self.tag_dim}")

    @property
    def tag_maps(self) -> int:
        """T: J per-joint tag maps, or one shared map."""
        return self.num_joints if self.tag_per_joint else 1


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) + BN (+ ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 relu: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class TopDownFusion(nn.Module):
    """Fuse features at strides `strides` (finest first, powers of two >= 4) into one 1/4 map."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], channels: int,
                 smooth: bool = True) -> None:
        super().__init__()
        if len(in_channels) != len(strides) or not strides:
            raise ValueError(f"in_channels {list(in_channels)} and strides {list(strides)} must be non-empty "
                             "and of equal length")
        if list(strides) != sorted(set(strides)) or strides[0] < 4:
            raise ValueError(f"strides must increase and start at >= 4, got {list(strides)}")
        self.strides = tuple(strides)
        self.out_channels = channels
        self.laterals = nn.ModuleList(ConvBNReLU(c, channels, 1, relu=False) for c in in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.smooth = ConvBNReLU(channels, channels, 3) if smooth else None

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.laterals):
            raise ValueError(f"expected {len(self.laterals)} feature maps, got {len(feats)}")
        y = self.relu(self.laterals[-1](feats[-1]))
        for lateral, f in zip(reversed(self.laterals[:-1]), reversed(feats[:-1])):
            lat = lateral(f)
            y = self.relu(lat + F.interpolate(y, size=lat.shape[-2:], mode="nearest"))
        if self.strides[0] > 4:
            factor = self.strides[0] // 4
            y = F.interpolate(y, size=(y.shape[-2] * factor, y.shape[-1] * factor), mode="nearest")
        if self.smooth is not None:
            y = self.smooth(y)
        return y


class AEHead(nn.Module):
    """1/4 output (J + T*D channels: T tag maps of D channels each, map-major) and, unless `num_deconvs` is 0,
    the deconv 1/2 output (J channels) from 1/4 features."""

    def __init__(self, in_channels: int, num_joints: int, tag_per_joint: bool, deconv_channels: int,
                 num_basic_blocks: int, tag_dim: int = 1, num_deconvs: int = 1) -> None:
        super().__init__()
        if num_deconvs not in (0, 1):
            raise ValueError(f"num_deconvs must be 0 or 1, got {num_deconvs}")
        self.num_joints = num_joints
        self.tag_maps = num_joints if tag_per_joint else 1
        self.tag_dim = int(tag_dim)
        self.num_deconvs = int(num_deconvs)
        out0 = num_joints + self.tag_maps * self.tag_dim
        self.final_layers = nn.ModuleList([nn.Conv2d(in_channels, out0, kernel_size=1)])
        if not self.num_deconvs:
            return
        self.final_layers.append(nn.Conv2d(deconv_channels, num_joints, kernel_size=1))
        parts: list[nn.Module] = [nn.Sequential(
            nn.ConvTranspose2d(in_channels + out0, deconv_channels, kernel_size=4, stride=2, padding=1,
                               output_padding=0, bias=False),
            nn.BatchNorm2d(deconv_channels, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )]
        parts += [nn.Sequential(BasicBlock(deconv_channels, deconv_channels)) for _ in range(num_basic_blocks)]
        self.deconv_layers = nn.ModuleList([nn.Sequential(*parts)])

    @property
    def output_layout(self) -> OutputLayout:
        n = 1 + self.num_deconvs
        return OutputLayout(self.num_joints, (True,) * n, (True,) + (False,) * (n - 1),
                            self.tag_maps == self.num_joints, strides=(4, 2)[:n], tag_dim=self.tag_dim)

    def forward(self, x: torch.Tensor, tag_offset: torch.Tensor | None = None) -> list[torch.Tensor]:
        """`tag_offset` (B, T*D, H/4, W/4), optional: added to the 1/4 tag channels (e.g. tags from coarse
        features, upsampled), before the deconv branch sees them."""
        y = self.final_layers[0](x)
        if tag_offset is not None:
            j = self.num_joints
            y = torch.cat((y[:, :j], y[:, j:] + tag_offset), dim=1)
        if not self.num_deconvs:
            return [y]
        z = self.deconv_layers[0](torch.cat((x, y), dim=1))
        return [y, self.final_layers[1](z)]


class AEHeadNet(nn.Module):
    """A student whose outputs come from `self.head` (an AEHead): its output contract is the head's."""

    head: AEHead

    @property
    def output_layout(self) -> OutputLayout:
        """The output contract (see `distill.inference.OutputLayout`): the AE head's."""
        return self.head.output_layout


def init_student_weights(module: nn.Module, head: AEHead | None = None) -> None:
    """Kaiming (fan_out) for convs, BN weight 1 / bias 0; the output convs of `head` get N(0, 0.001)
    and zero bias, as the official HigherHRNet init does for its final layers."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if head is not None:
        for conv in head.final_layers:
            nn.init.normal_(conv.weight, std=0.001)
            nn.init.zeros_(conv.bias)
