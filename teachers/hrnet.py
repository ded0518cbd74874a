"""HigherHRNet (PoseHigherResolutionNet) as plain nn.Modules, built from a `HigherHRNetConfig`.

Structure (Cheng et al., "HigherHRNet", CVPR 2020; HRNet backbone of Sun et al., CVPR 2019):

    stem     conv1 (3->64, 3x3 s2) bn1 relu, conv2 (64->64, 3x3 s2) bn2 relu          -> 1/4
    layer1   4 Bottlenecks (64 planes, 256 out)                                       -> 1/4
    for each stage s = 2, 3, ...:
      transition{s-1}  per branch: None (width kept), 3x3 conv+BN+ReLU (width change), or a chain
                       of 3x3 stride-2 convs from the lowest-resolution previous branch (new branch)
      stage{s}         num_modules HighResolutionModules (parallel residual branches + fusion);
                       the last module of the last stage only outputs the 1/4 branch
    final_layers[0]    conv on the 1/4 features -> K heatmaps + T tag maps          (output 0)
    deconv_layers[i]   [cat(features, output i)] -> ConvTranspose2d s2 + BN + ReLU -> BasicBlocks
    final_layers[i+1]  conv -> K heatmaps (+ tags if with_ae_loss[i+1])            (output i+1)

`forward` returns the list of outputs, lowest resolution first (the official contract):
`[(B, K+T, H/4, W/4), (B, K, H/2, W/2)]` for the published configs. The module tree, and so the
state_dict keys, their order and shapes, are exactly those of the official implementation, so
official checkpoints load with `strict=True`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from distill.inference import OutputLayout
from teachers.blocks import BLOCKS, BN_MOMENTUM, BasicBlock, make_residual_layer
from teachers.config import DeconvConfig, HigherHRNetConfig, StageConfig, TeacherConfigError

__all__ = [
    "DeconvConfig", "HigherHRNetConfig", "HighResolutionModule", "PoseHigherResolutionNet",
    "StageConfig", "build_higher_hrnet",
]


def _conv_bn(in_channels: int, out_channels: int, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel residual branches followed by all-to-all fusion by summation.

    Fusion path from branch j into output i:
      j > i (lower resolution): 1x1 conv to branch i's width + BN + nearest upsampling by 2**(j-i);
      j == i: identity (stored as None);
      j < i (higher resolution): i-j 3x3 stride-2 convs + BN; all but the last keep branch j's width
      and have a ReLU, the last maps to branch i's width without ReLU.
    With `multi_scale_output=False` only output 0 (highest resolution) is produced.
    """

    def __init__(self, num_branches: int, block: type[nn.Module], num_blocks: Sequence[int],
                 in_channels: Sequence[int], num_channels: Sequence[int],
                 multi_scale_output: bool = True) -> None:
        super().__init__()
        if not (len(num_blocks) == len(in_channels) == len(num_channels) == num_branches):
            raise TeacherConfigError(
                f"HighResolutionModule: num_branches {num_branches} does not match num_blocks "
                f"{list(num_blocks)}, in_channels {list(in_channels)}, num_channels {list(num_channels)}")
        self.num_branches = num_branches
        self.multi_scale_output = multi_scale_output
        expansion = block.expansion  # type: ignore[attr-defined]
        self.branches = nn.ModuleList(
            make_residual_layer(block, in_channels[b], num_channels[b], num_blocks[b])  # type: ignore[arg-type]
            for b in range(num_branches))
        self.out_channels = [c * expansion for c in num_channels]
        self.fuse_layers = self._make_fuse_layers() if num_branches > 1 else None
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self) -> nn.ModuleList:
        ch = self.out_channels
        n_out = self.num_branches if self.multi_scale_output else 1
        fuse_layers = []
        for i in range(n_out):
            paths: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:
                    paths.append(nn.Sequential(
                        nn.Conv2d(ch[j], ch[i], kernel_size=1, bias=False),
                        nn.BatchNorm2d(ch[i], momentum=BN_MOMENTUM),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                    ))
                elif j == i:
                    paths.append(None)
                else:
                    steps = i - j
                    paths.append(nn.Sequential(*(
                        _conv_bn(ch[j], ch[i] if k == steps - 1 else ch[j], stride=2, relu=k < steps - 1)
                        for k in range(steps))))
            fuse_layers.append(nn.ModuleList(paths))
        return nn.ModuleList(fuse_layers)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for i, paths in enumerate(self.fuse_layers):
            # Summation order as in the official code: branch 0 first, then 1, 2, ...
            y = xs[0] if i == 0 else paths[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + (xs[j] if j == i else paths[j](xs[j]))
            fused.append(self.relu(y))
        return fused


def _make_transition(pre_channels: Sequence[int], cur_channels: Sequence[int]) -> nn.ModuleList:
    """Adapt the previous stage's branches to the next stage's (None where nothing changes)."""
    layers: list[nn.Module | None] = []
    for i, out_c in enumerate(cur_channels):
        if i < len(pre_channels):
            layers.append(_conv_bn(pre_channels[i], out_c, stride=1, relu=True)
                          if pre_channels[i] != out_c else None)
        else:
            # New branch: a chain of stride-2 convs from the lowest-resolution previous branch; only
            # the last conv changes the width.
            steps = i + 1 - len(pre_channels)
            src = pre_channels[-1]
            layers.append(nn.Sequential(*(
                _conv_bn(src, out_c if k == steps - 1 else src, stride=2, relu=True) for k in range(steps))))
    return nn.ModuleList(layers)


def _deconv_padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) giving an exact 2x upsampling, as in the official code."""
    return {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel_size]


class PoseHigherResolutionNet(nn.Module):
    """HigherHRNet for bottom-up pose estimation with Associative Embedding."""

    @property
    def num_joints(self) -> int:
        return self.cfg.num_joints

    @property
    def tag_per_joint(self) -> bool:
        return self.cfg.tag_per_joint

    @property
    def output_layout(self) -> OutputLayout:
        """The output contract: J heatmaps in every output, tags where `with_ae_loss`, 1/4 then 1/2, 1/1, ..."""
        n = self.cfg.num_outputs
        return OutputLayout(self.cfg.num_joints, (True,) * n, tuple(self.cfg.with_ae_loss), self.cfg.tag_per_joint,
                            strides=tuple(4 >> i for i in range(n)), tag_dim=self.cfg.tag_dim)

    def __init__(self, cfg: HigherHRNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        stem = cfg.stem_channels
        # Registration order below fixes the state_dict order; it follows the official module.
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(stem, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_residual_layer(BLOCKS["bottleneck"], stem, cfg.layer1_planes, cfg.layer1_blocks)

        pre_channels = [cfg.layer1_planes * BLOCKS["bottleneck"].expansion]
        self._stage_names: list[tuple[str, str]] = []
        for s, stage_cfg in enumerate(cfg.stages):
            block = BLOCKS[stage_cfg.block]
            cur_channels = [c * block.expansion for c in stage_cfg.num_channels]
            t_name, s_name = f"transition{s + 1}", f"stage{s + 2}"
            self.add_module(t_name, _make_transition(pre_channels, cur_channels))
            is_last = s == len(cfg.stages) - 1
            stage, pre_channels = self._make_stage(stage_cfg, cur_channels, multi_scale_output=not is_last)
            self.add_module(s_name, stage)
            self._stage_names.append((t_name, s_name))

        self.feature_channels = pre_channels[0]
        self.final_layers = self._make_final_layers(self.feature_channels)
        self.deconv_layers = self._make_deconv_layers(self.feature_channels)

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def _make_stage(stage_cfg: StageConfig, in_channels: list[int],
                    multi_scale_output: bool) -> tuple[nn.Sequential, list[int]]:
        block = BLOCKS[stage_cfg.block]
        modules = []
        for m in range(stage_cfg.num_modules):
            last = m == stage_cfg.num_modules - 1
            module = HighResolutionModule(
                stage_cfg.num_branches, block, stage_cfg.num_blocks, in_channels, stage_cfg.num_channels,
                multi_scale_output=multi_scale_output or not last)
            modules.append(module)
            in_channels = list(module.out_channels)
        return nn.Sequential(*modules), in_channels

    def _make_final_layers(self, in_channels: int) -> nn.ModuleList:
        cfg = self.cfg
        k = cfg.final_conv_kernel
        pad = 1 if k == 3 else 0
        widths = [in_channels] + list(cfg.deconv.num_channels)
        return nn.ModuleList(
            nn.Conv2d(widths[i], cfg.output_channels(i), kernel_size=k, stride=1, padding=pad)
            for i in range(cfg.num_outputs))

    def _make_deconv_layers(self, in_channels: int) -> nn.ModuleList:
        cfg, dc = self.cfg, self.cfg.deconv
        layers = []
        for i in range(dc.num_deconvs):
            if dc.cat_output[i]:
                in_channels += cfg.output_channels(i)
            out_channels = dc.num_channels[i]
            padding, output_padding = _deconv_padding(dc.kernel_size[i])
            parts: list[nn.Module] = [nn.Sequential(
                nn.ConvTranspose2d(in_channels, out_channels, kernel_size=dc.kernel_size[i], stride=2,
                                   padding=padding, output_padding=output_padding, bias=False),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            )]
            # Each BasicBlock sits in its own Sequential (official key: deconv_layers.i.j.0.conv1).
            parts += [nn.Sequential(BasicBlock(out_channels, out_channels)) for _ in range(dc.num_basic_blocks)]
            layers.append(nn.Sequential(*parts))
            in_channels = out_channels
        return nn.ModuleList(layers)

    def init_weights_official(self) -> None:
        """The official random init: conv/deconv weights ~ N(0, 0.001), biases 0, BN weight 1 bias 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    # -- forward -------------------------------------------------------------------------------
    @property
    def input_multiple(self) -> int:
        """Input H and W must be multiples of this (stem /4, then /2 per extra branch)."""
        max_branches = max(s.num_branches for s in self.cfg.stages)
        return 4 * 2 ** (max_branches - 1)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone: returns the last stage's branch outputs (only the 1/4 branch for the last stage)."""
        m = self.input_multiple
        h, w = x.shape[-2:]
        if h % m or w % m:
            raise ValueError(f"input size {h}x{w} is not a multiple of {m} (needed by the fusion upsampling)")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for t_name, s_name in self._stage_names:
            transition = getattr(self, t_name)
            # Existing branches pass through (or get a width-changing conv); new branches come from the
            # lowest-resolution branch of the previous stage.
            xs = [ys[i] if i < len(ys) else ys[-1] for i in range(len(transition))]
            xs = [x if t is None else t(x) for t, x in zip(transition, xs)]
            ys = getattr(self, s_name)(xs)
        return ys

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Heads on the 1/4 features: output 0, then one output per deconv (each 2x larger)."""
        y = self.final_layers[0](x)
        outputs = [y]
        for i, deconv in enumerate(self.deconv_layers):
            if self.cfg.deconv.cat_output[i]:
                x = torch.cat((x, y), dim=1)
            x = deconv(x)
            y = self.final_layers[i + 1](x)
            outputs.append(y)
        return outputs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_heads(self.forward_features(x)[0])


def build_higher_hrnet(cfg: HigherHRNetConfig) -> PoseHigherResolutionNet:
    """Build the network (PyTorch default init; wrap in `torch.device('meta')` to build shape-only)."""
    if not isinstance(cfg, HigherHRNetConfig):
        raise TypeError(f"expected a HigherHRNetConfig, got {type(cfg).__name__}")
    return PoseHigherResolutionNet(cfg)
