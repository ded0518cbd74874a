"""*Step* students: a bottom-up AE network built from RSN's Residual Steps Block (RSB).

Residual Steps Block (Cai et al., "Learning Delicate Local Representations for Multi-Person Pose
Estimation", ECCV 2020), written from the paper's description. For a block of width C:

    x0       = ReLU(BN(conv1x1(x)))                 4*b channels, b = round(26/64 * C)
                                                     (exact when C is a multiple of 32; C=64 -> b=26)
    s_1..s_4 = split(x0, b)                          one b-channel chunk per branch
    branch k (k = 1..4) has k 3x3 conv-BN-ReLU units u_{k,1..k}; with y_{k,d} the output of u_{k,d}:
        y_{k,d} = u_{k,d}( y_{k,d-1} + y_{k-1,d} )   where y_{k,0} = s_k, and the step term y_{k-1,d}
                                                     is present only when branch k-1 has depth d
                                                     (d <= k-1); so the last unit of each branch
                                                     gets no step input
    out      = ReLU( BN(conv1x1(cat(y_{1,1}, y_{2,2}, y_{3,3}, y_{4,4}))) + shortcut(x) )
    shortcut = identity, or conv1x1(stride)+BN when the width or the resolution changes

i.e. the "residual steps" are added *before* each conv (the RSN formulation: the input of conv d of
branch k is the output of conv d-1 of branch k plus the output of conv d of branch k-1). Written out:
    y11 = u11(s1)
    y21 = u21(s2 + y11);  y22 = u22(y21)
    y31 = u31(s3 + y21);  y32 = u32(y31 + y22);  y33 = u33(y32)
    y41 = u41(s4 + y31);  y42 = u42(y41 + y32);  y43 = u43(y42 + y33);  y44 = u44(y43)
A stride > 1 is applied by the first 1x1 conv and the 1x1 projection (RSN style); the networks
below do not use it (they downsample with a 3x3 stride-2 conv between stages).

Network (`StepPoseNet`):
    stem       3x3 s2 conv-BN-ReLU (3 -> stem), 3x3 s2 conv-BN-ReLU (stem -> stem)          -> 1/4
    stage 1    `stage_blocks[0]` RSBs of width `stage_channels[0]` at 1/4
    stage i>1  3x3 s2 conv-BN-ReLU (C_{i-1} -> C_i), then `stage_blocks[i]` RSBs at 1/2**(i+2)
    neck       TopDownFusion: lateral 1x1 conv+BN per stage, upsample (nearest) + add + ReLU from
               the coarsest stage back to 1/4, optional 3x3 conv-BN-ReLU ("smooth"), optional 1x1
               conv-BN-ReLU to `head_channels` ("head_proj")
    heads      AEHead: 1x1 conv -> J + T at 1/4; cat(features, out) -> deconv k4 s2 + BN + ReLU
               -> BasicBlocks -> 1x1 conv -> J at 1/2
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from students.config import StudentConfigError
from students.heads import AEHead, AEHeadFields, AEHeadNet, ConvBNReLU, TopDownFusion, init_student_weights
from teachers.blocks import BN_MOMENTUM

__all__ = ["RSB", "StepPoseNet", "StepStudentConfig", "branch_width", "build_step_student"]

BRANCH_RATIO = 26 / 64
NUM_BRANCHES = 4


def branch_width(width: int) -> int:
    """Channels per branch: 26/64 of the block width, rounded (exact for multiples of 32)."""
    return max(1, round(width * BRANCH_RATIO))


class RSB(nn.Module):
    """Residual Steps Block: 4 branches of 1..4 3x3 convs with same-depth step connections."""

    def __init__(self, in_channels: int, width: int, out_channels: int | None = None, stride: int = 1) -> None:
        super().__init__()
        out_channels = width if out_channels is None else out_channels
        self.in_channels, self.width, self.out_channels, self.stride = in_channels, width, out_channels, stride
        self.branch_channels = b = branch_width(width)
        self.conv_in = ConvBNReLU(in_channels, NUM_BRANCHES * b, kernel_size=1, stride=stride)
        # branches[k] holds the k+1 conv-BN-ReLU units of branch k+1 (0-based index k).
        self.branches = nn.ModuleList(
            nn.ModuleList(ConvBNReLU(b, b, 3) for _ in range(k + 1)) for k in range(NUM_BRANCHES))
        self.conv_out = ConvBNReLU(NUM_BRANCHES * b, out_channels, kernel_size=1, relu=False)
        self.shortcut = None if (stride == 1 and in_channels == out_channels) else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward_branches(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Outputs y_{k,d} of every unit: result[k][d] (0-based branch k, depth d)."""
        chunks = torch.split(self.conv_in(x), self.branch_channels, dim=1)
        outputs: list[list[torch.Tensor]] = []
        prev: list[torch.Tensor] = []
        for chunk, branch in zip(chunks, self.branches):
            h, cur = chunk, []
            for d, unit in enumerate(branch):
                if d < len(prev):  # the residual step from the previous branch, same depth
                    h = h + prev[d]
                h = unit(h)
                cur.append(h)
            outputs.append(cur)
            prev = cur
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ends = [branch[-1] for branch in self.forward_branches(x)]
        out = self.conv_out(torch.cat(ends, dim=1))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + shortcut)


@dataclass(frozen=True)
class StepStudentConfig(AEHeadFields):
    """A step student (family 'step'); see the module docstring for the layout."""

    stem_channels: int
    stage_channels: tuple[int, ...]   # RSB width per stage; stage i runs at stride 4 * 2**i
    stage_blocks: tuple[int, ...]     # RSBs per stage
    neck_channels: int                # width of the top-down path and of the 1/4 features
    deconv_channels: int              # width of the 1/2 branch
    deconv_blocks: int = 1            # BasicBlocks after the deconv
    num_deconvs: int = 1              # 1: 1/4 and 1/2 outputs (HigherHRNet); 0: 1/4 only (no 1/2 branch)
    smooth: bool = True               # 3x3 conv-BN-ReLU after the top-down fusion at 1/4
    head_channels: int = 0            # 0: the head reads the neck; >0: a 1x1 conv-BN-ReLU to this width first
    coarse_tags: int = 0              # 0: off; 8/16/32: + tags from that stage's features, upsampled to 1/4
    coarse_tag_hidden: int = 0        # 0: the coarse tags are one 1x1 conv; >0: a 3x3 conv-BN-ReLU of this width first
    coarse_tag_coords: bool = False   # the coarse tags' last conv also sees each cell's (x, y) image position
    num_joints: int = 17
    tag_per_joint: bool = True
    tag_dim: int = 1                  # D: channels of each tag map (a D-dim embedding per pixel)
    name: str = ""
    input_size: int | None = 512      # nominal training/eval input side (informative)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_channels", tuple(self.stage_channels))
        object.__setattr__(self, "stage_blocks", tuple(self.stage_blocks))
        if not 1 <= len(self.stage_channels) <= 4:
            raise StudentConfigError(
                f"stage_channels needs 1 to 4 entries (strides 4..32), got {list(self.stage_channels)}")
        if len(self.stage_blocks) != len(self.stage_channels):
            raise StudentConfigError(
                f"stage_blocks {list(self.stage_blocks)} needs one entry per stage "
                f"(stage_channels has {len(self.stage_channels)})")
        self.check_head_fields(stem_channels=self.stem_channels)
        if self.head_channels < 0:
            raise StudentConfigError(f"field 'head_channels' must be 0 (the head reads the neck) or >= 1, got "
                                     f"{self.head_channels}")
        if any(c < 1 for c in self.stage_channels) or any(b < 1 for b in self.stage_blocks):
            raise StudentConfigError("stage_channels and stage_blocks must be positive")
        strides = self.strides
        if self.coarse_tags and self.coarse_tags not in strides[1:]:
            raise StudentConfigError(f"field 'coarse_tags' must be 0 (off) or the stride of a stage after the first "
                                     f"({strides[1:]}), got {self.coarse_tags}")
        if self.coarse_tag_hidden < 0 or (self.coarse_tag_hidden and not self.coarse_tags):
            raise StudentConfigError(f"field 'coarse_tag_hidden' must be 0, or > 0 with coarse_tags on; got "
                                     f"{self.coarse_tag_hidden} with coarse_tags={self.coarse_tags}")
        if self.coarse_tag_coords and not self.coarse_tags:
            raise StudentConfigError("field 'coarse_tag_coords' needs coarse_tags on (a stride of 8, 16 or 32)")

    @property
    def family(self) -> str:
        return "step"

    @property
    def strides(self) -> list[int]:
        """Output stride of each stage: 4, 8, 16, 32."""
        return [4 * 2 ** i for i in range(len(self.stage_channels))]


COORD_UNIT = 64.0  # input pixels per unit of the coordinate channels (coarse_tag_coords)


def cell_positions(like: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, 2, h, w): the input-pixel (x, y) of each cell centre of a stride-`stride` map, / COORD_UNIT."""
    b, _, h, w = like.shape
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) * (stride / COORD_UNIT)
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) * (stride / COORD_UNIT)
    grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])
    return grid.unsqueeze(0).expand(b, 2, h, w).to(memory_format=torch.contiguous_format)


class StepPoseNet(AEHeadNet):
    """Bottom-up AE network of RSB stages; forward(x) -> [(B, J+T, H/4, W/4), (B, J, H/2, W/2)]."""

    def __init__(self, cfg: StepStudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_joints = cfg.num_joints
        self.tag_per_joint = cfg.tag_per_joint
        self.stem = nn.Sequential(
            ConvBNReLU(3, cfg.stem_channels, 3, stride=2),
            ConvBNReLU(cfg.stem_channels, cfg.stem_channels, 3, stride=2),
        )
        stages = []
        in_ch = cfg.stem_channels
        for i, (width, blocks) in enumerate(zip(cfg.stage_channels, cfg.stage_blocks)):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(ConvBNReLU(in_ch, width, 3, stride=2))
                in_ch = width
            for _ in range(blocks):
                layers.append(RSB(in_ch, width))
                in_ch = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        strides = cfg.strides
        self.neck = TopDownFusion(cfg.stage_channels, strides, cfg.neck_channels, smooth=cfg.smooth)
        # A projection to the head's width: with the teacher's width (16 for higherhrnet_w16_synth) and
        # deconv_channels the head has the teacher's head's shapes, so it can start from it and its input can
        # be distilled from the teacher's features (distill/feature_kd.py).
        self.head_proj = ConvBNReLU(cfg.neck_channels, cfg.head_channels, 1) if cfg.head_channels else None
        head_in = cfg.head_channels or cfg.neck_channels
        self.head = AEHead(head_in, cfg.num_joints, cfg.tag_per_joint, cfg.deconv_channels,
                           cfg.deconv_blocks, tag_dim=cfg.tag_dim, num_deconvs=cfg.num_deconvs)
        self.input_multiple = strides[-1]
        # Tags from a coarse stage: one 1x1 conv, upsampled (bilinear) and added to the 1/4 tags, so a large
        # person's joints can share a tag the 1/4 features alone cannot tell apart (docs/learning.md, session 19).
        self.coarse_tag_stage = strides.index(cfg.coarse_tags) if cfg.coarse_tags else -1
        self.coarse_tag = self._coarse_tag_layers(cfg) if cfg.coarse_tags else None
        init_student_weights(self, self.head)
        if self.coarse_tag is not None:
            last = self._coarse_tag_parts()[1]
            nn.init.normal_(last.weight, std=0.001)
            nn.init.zeros_(last.bias)

    def _coarse_tag_layers(self, cfg: StepStudentConfig) -> nn.Module:
        """One 1x1 conv (state_dict keys coarse_tag.weight/bias), or a 3x3 conv-BN-ReLU + 1x1 conv: a person-wide
        context at the coarse stride for what the tag should be. With coords the last conv has 2 more inputs."""
        in_ch, out_ch = cfg.stage_channels[self.coarse_tag_stage], self.head.tag_maps * cfg.tag_dim
        extra = 2 if cfg.coarse_tag_coords else 0
        if not cfg.coarse_tag_hidden:
            return nn.Conv2d(in_ch + extra, out_ch, 1)
        return nn.Sequential(ConvBNReLU(in_ch, cfg.coarse_tag_hidden, 3),
                             nn.Conv2d(cfg.coarse_tag_hidden + extra, out_ch, 1))

    def _coarse_tag_offset(self, feat: torch.Tensor) -> torch.Tensor:
        """The coarse tag term at the coarse stride (before upsampling).

        Why coords: a convolutional net gives two people who look alike the same features, so its tags can only
        tell them apart through context; with each cell's image position as an input the last (linear) conv can
        make a tag like "where this person is" from features that say where the person's centre lies relative to
        the cell. Positions are in units of COORD_UNIT input pixels, so they mean the same at any input size."""
        if not self.cfg.coarse_tag_coords:
            return self.coarse_tag(feat)
        hidden_layer, last = self._coarse_tag_parts()
        hidden = hidden_layer(feat)
        return last(torch.cat([hidden, cell_positions(hidden, self.cfg.coarse_tags)], dim=1))

    def _coarse_tag_parts(self) -> tuple[nn.Module, nn.Conv2d]:
        """(the optional 3x3 layer, or an identity; the last 1x1 conv) of the coarse tag head."""
        if isinstance(self.coarse_tag, nn.Sequential):
            return self.coarse_tag[0], self.coarse_tag[1]
        return nn.Identity(), self.coarse_tag

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1/4 features the head reads (B, head_channels or neck_channels, H/4, W/4)."""
        return self._head_input(self.neck(self._stage_features(x)))

    def _head_input(self, fused: torch.Tensor) -> torch.Tensor:
        return fused if self.head_proj is None else self.head_proj(fused)

    def _stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if h % self.input_multiple or w % self.input_multiple:
            raise ValueError(f"input size {h}x{w} is not a multiple of {self.input_multiple}")
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self._stage_features(x)
        fused = self._head_input(self.neck(feats))
        if self.coarse_tag is None:
            return self.head(fused)
        offset = F.interpolate(self._coarse_tag_offset(feats[self.coarse_tag_stage]), size=fused.shape[-2:],
                               mode="bilinear", align_corners=False)
        return self.head(fused, tag_offset=offset)


def build_step_student(cfg: StepStudentConfig) -> StepPoseNet:
    if not isinstance(cfg, StepStudentConfig):
        raise TypeError(f"expected a StepStudentConfig, got {type(cfg).__name__}")
    return StepPoseNet(cfg)
