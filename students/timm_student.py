"""*timm* students: any timm backbone (features_only, never pretrained) + top-down fusion + AE heads.

    backbone   timm.create_model(backbone, features_only=True, pretrained=False,
                                 out_indices=out_indices, **backbone_kwargs)
               The selected features must have strides that are powers of two in 4..32, increasing
               (e.g. out_indices [1, 2, 3, 4] -> strides 4, 8, 16, 32 for most CNNs).
    neck       TopDownFusion to 1/4 (lateral 1x1 conv+BN, nearest upsample + add + ReLU, optional
               3x3 conv-BN-ReLU); upsampled to 1/4 if the finest selected feature is coarser
    heads      AEHead (HigherHRNet style): 1x1 conv -> J + T at 1/4; cat(features, out) -> deconv k4 s2
               + BN + ReLU -> BasicBlocks -> 1x1 conv -> J at 1/2

No weights are downloaded (pretrained=False always; there is no internet). Load a backbone checkpoint
yourself into `model.backbone` if you have one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from students.config import StudentConfigError
from students.heads import AEHead, AEHeadFields, AEHeadNet, TopDownFusion, init_student_weights

__all__ = ["TimmPoseNet", "TimmStudentConfig", "build_timm_student"]

_RESERVED_KWARGS = ("pretrained", "features_only", "out_indices", "pretrained_cfg_overlay", "checkpoint_path")


@dataclass(frozen=True)
class TimmStudentConfig(AEHeadFields):
    """A timm-backbone student (family 'timm')."""

    backbone: str                                  # a timm model name, e.g. mobilenetv3_large_100
    out_indices: tuple[int, ...] = (1, 2, 3, 4)    # indices into the backbone's feature_info
    neck_channels: int = 64
    deconv_channels: int = 32
    deconv_blocks: int = 1
    num_deconvs: int = 1              # 1: 1/4 and 1/2 outputs (HigherHRNet); 0: 1/4 only (no 1/2 branch)
    smooth: bool = True
    num_joints: int = 17
    tag_per_joint: bool = True
    tag_dim: int = 1                  # D: channels of each tag map (a D-dim embedding per pixel)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    name: str = ""
    input_size: int | None = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_indices", tuple(self.out_indices))
        import timm  # local: importing timm costs ~1 s and only this family needs it

        if not timm.is_model(self.backbone):
            raise StudentConfigError(
                f"field 'backbone': unknown timm model {self.backbone!r} "
                f"(see timm.list_models(); e.g. mobilenetv3_large_100, efficientnet_b0, resnet18)")
        if not self.out_indices:
            raise StudentConfigError("field 'out_indices' must list at least one feature index")
        bad = [k for k in self.backbone_kwargs if k in _RESERVED_KWARGS]
        if bad:
            raise StudentConfigError(
                f"field 'backbone_kwargs' must not set {', '.join(map(repr, bad))} "
                "(students always use features_only=True, pretrained=False and the out_indices field)")
        self.check_head_fields()

    @property
    def family(self) -> str:
        return "timm"


class TimmPoseNet(AEHeadNet):
    """timm features -> 1/4 fusion -> AE heads; forward(x) -> [(B, J+T, H/4, W/4), (B, J, H/2, W/2)]."""

    def __init__(self, cfg: TimmStudentConfig) -> None:
        super().__init__()
        import timm

        self.cfg = cfg
        self.num_joints = cfg.num_joints
        self.tag_per_joint = cfg.tag_per_joint
        try:
            self.backbone = timm.create_model(cfg.backbone, features_only=True, pretrained=False,
                                              out_indices=cfg.out_indices, **cfg.backbone_kwargs)
        except (IndexError, AssertionError, TypeError, ValueError, RuntimeError) as exc:
            raise StudentConfigError(
                f"cannot create timm backbone {cfg.backbone!r} with out_indices {list(cfg.out_indices)} "
                f"and backbone_kwargs {cfg.backbone_kwargs}: {type(exc).__name__}: {exc}") from None
        strides = list(self.backbone.feature_info.reduction())
        channels = list(self.backbone.feature_info.channels())
        ok = (all(s in (4, 8, 16, 32) for s in strides) and strides == sorted(set(strides)))
        if not ok:
            raise StudentConfigError(
                f"field 'out_indices' {list(cfg.out_indices)} selects features of {cfg.backbone!r} with "
                f"strides {strides}; they must increase and be among 4, 8, 16, 32")
        self.feature_strides = tuple(strides)
        self.feature_channels = tuple(channels)
        self.neck = TopDownFusion(channels, strides, cfg.neck_channels, smooth=cfg.smooth)
        self.head = AEHead(cfg.neck_channels, cfg.num_joints, cfg.tag_per_joint, cfg.deconv_channels,
                           cfg.deconv_blocks, tag_dim=cfg.tag_dim, num_deconvs=cfg.num_deconvs)
        self.input_multiple = strides[-1]
        # timm initialises the backbone itself; only the new layers get the student init.
        init_student_weights(self.neck)
        init_student_weights(self.head, self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.input_multiple or w % self.input_multiple:
            raise ValueError(f"input size {h}x{w} is not a multiple of {self.input_multiple}")
        return self.neck(self.backbone(x))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.forward_features(x))


def build_timm_student(cfg: TimmStudentConfig) -> TimmPoseNet:
    if not isinstance(cfg, TimmStudentConfig):
        raise TypeError(f"expected a TimmStudentConfig, got {type(cfg).__name__}")
    return TimmPoseNet(cfg)
