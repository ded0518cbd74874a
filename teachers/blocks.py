"""Residual blocks used by HRNet / HigherHRNet (ResNet v1 style, post-activation).

Attribute names (conv1, bn1, ..., downsample.0/.1) are part of the checkpoint format: they must match
the official state_dict keys, so do not rename them.
"""
from __future__ import annotations

import torch
from torch import nn

# The official code passes momentum=0.1 (PyTorch's default) to every BatchNorm2d it configures.
BN_MOMENTUM = 0.1


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def projection(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """1x1 conv + BN on the shortcut when width or resolution changes (`downsample.0/.1`)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; ReLU after the first and after the residual sum."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4; BN after each; ReLU after the sum."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_residual_layer(block: type[BasicBlock] | type[Bottleneck], in_channels: int, planes: int,
                        num_blocks: int, stride: int = 1) -> nn.Sequential:
    """`num_blocks` blocks; the first gets a projection shortcut if width or stride changes."""
    out_channels = planes * block.expansion
    downsample = projection(in_channels, out_channels, stride) if (
        stride != 1 or in_channels != out_channels) else None
    layers = [block(in_channels, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)
