"""Architecture configuration for HigherHRNet-style networks, and its YAML loader.

The dataclasses mirror the official `MODEL.EXTRA` yacs section in neutral, lower-case names:

    num_joints / tag_per_joint        MODEL.NUM_JOINTS / MODEL.TAG_PER_JOINT
    tag_dim                           (not in the official code: 1 there) channels per tag map, i.e. a D-dim
                                      embedding per joint; for teachers trained here only
    stages[i]                         MODEL.EXTRA.STAGE{i+2} (num_modules, num_branches, block,
                                      num_blocks, num_channels, fuse_method)
    final_conv_kernel                 MODEL.EXTRA.FINAL_CONV_KERNEL
    deconv                            MODEL.EXTRA.DECONV
    with_ae_loss                      LOSS.WITH_AE_LOSS (decides which outputs carry tag maps)

The stem (two 3x3 stride-2 convs, 3 -> 64 -> 64) and `layer1` (4 Bottlenecks, 64 planes) are fixed
in the official code. They are exposed here as optional fields whose defaults are the official
values, so that small students can shrink them; teacher configs leave them out.

YAML files hold the same fields (see configs/teachers/*.yaml). Unknown, missing or mistyped fields
raise `TeacherConfigError` naming the file and the field, e.g. `stages[1].num_channels`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from distill.errors import AEDistillError
from distill.strict_config import from_mapping, plain, read_yaml_mapping

BLOCK_TYPES = ("basic", "bottleneck")
FUSE_METHODS = ("sum",)
DECONV_KERNELS = (2, 3, 4)
FINAL_CONV_KERNELS = (1, 3)


class TeacherConfigError(AEDistillError, ValueError):
    """An architecture config (YAML file or dataclass values) is malformed."""


@dataclass(frozen=True)
class StageConfig:
    """One HRNet stage: `num_modules` HighResolutionModules with `num_branches` parallel branches."""

    num_modules: int
    num_branches: int
    block: str
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]
    fuse_method: str = "sum"

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_blocks", tuple(self.num_blocks))
        object.__setattr__(self, "num_channels", tuple(self.num_channels))
        object.__setattr__(self, "block", str(self.block).lower())
        object.__setattr__(self, "fuse_method", str(self.fuse_method).lower())
        if self.num_modules < 1:
            raise TeacherConfigError(f"num_modules must be >= 1, got {self.num_modules}")
        if self.num_branches < 1:
            raise TeacherConfigError(f"num_branches must be >= 1, got {self.num_branches}")
        if len(self.num_blocks) != self.num_branches:
            raise TeacherConfigError(
                f"num_blocks {list(self.num_blocks)} has {len(self.num_blocks)} entries, "
                f"num_branches is {self.num_branches}")
        if len(self.num_channels) != self.num_branches:
            raise TeacherConfigError(
                f"num_channels {list(self.num_channels)} has {len(self.num_channels)} entries, "
                f"num_branches is {self.num_branches}")
        if any(b < 1 for b in self.num_blocks) or any(c < 1 for c in self.num_channels):
            raise TeacherConfigError("num_blocks and num_channels must be positive")
        if self.block not in BLOCK_TYPES:
            raise TeacherConfigError(f"block must be one of {BLOCK_TYPES}, got {self.block!r}")
        if self.fuse_method not in FUSE_METHODS:
            raise TeacherConfigError(
                f"fuse_method must be one of {FUSE_METHODS} (the official code only sums), "
                f"got {self.fuse_method!r}")


@dataclass(frozen=True)
class DeconvConfig:
    """The higher-resolution head: `num_deconvs` x (ConvTranspose2d stride 2 + BasicBlocks)."""

    num_deconvs: int
    num_channels: tuple[int, ...]
    kernel_size: tuple[int, ...]
    num_basic_blocks: int
    cat_output: tuple[bool, ...]

    def __post_init__(self) -> None:
        for name in ("num_channels", "kernel_size", "cat_output"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != self.num_deconvs:
                raise TeacherConfigError(
                    f"deconv.{name} {list(value)} has {len(value)} entries, num_deconvs is {self.num_deconvs}")
        if self.num_deconvs < 0 or self.num_basic_blocks < 0:
            raise TeacherConfigError("num_deconvs and num_basic_blocks must be >= 0")
        bad = [k for k in self.kernel_size if k not in DECONV_KERNELS]
        if bad:
            raise TeacherConfigError(f"deconv.kernel_size must be in {DECONV_KERNELS}, got {bad}")


@dataclass(frozen=True)
class HigherHRNetConfig:
    """Complete architecture of a PoseHigherResolutionNet (plus the input size it is meant for)."""

    num_joints: int
    tag_per_joint: bool
    stages: tuple[StageConfig, ...]
    final_conv_kernel: int
    deconv: DeconvConfig
    with_ae_loss: tuple[bool, ...]
    name: str = ""
    input_size: int | None = None
    # Fixed in the official code (not configurable there); defaults are the official values.
    stem_channels: int = 64
    layer1_planes: int = 64
    layer1_blocks: int = 4
    # D: channels per tag map (a D-dim AE embedding). 1 in the official code and its checkpoints.
    tag_dim: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "with_ae_loss", tuple(bool(v) for v in self.with_ae_loss))
        if self.num_joints < 1:
            raise TeacherConfigError(f"num_joints must be >= 1, got {self.num_joints}")
        if not self.stages:
            raise TeacherConfigError("at least one stage is needed")
        if self.final_conv_kernel not in FINAL_CONV_KERNELS:
            raise TeacherConfigError(
                f"final_conv_kernel must be in {FINAL_CONV_KERNELS}, got {self.final_conv_kernel}")
        if len(self.with_ae_loss) != self.deconv.num_deconvs + 1:
            raise TeacherConfigError(
                f"with_ae_loss {list(self.with_ae_loss)} needs one entry per output "
                f"(deconv.num_deconvs + 1 = {self.deconv.num_deconvs + 1})")
        if min(self.stem_channels, self.layer1_planes, self.layer1_blocks) < 1:
            raise TeacherConfigError("stem_channels, layer1_planes and layer1_blocks must be positive")
        if self.tag_dim < 1:
            raise TeacherConfigError(f"tag_dim (channels per tag map) must be >= 1, got {self.tag_dim}")

    @property
    def tag_maps(self) -> int:
        """T: tag maps per output that carries tags: K with tag_per_joint, else 1 shared map."""
        return self.num_joints if self.tag_per_joint else 1

    def output_channels(self, index: int) -> int:
        """Channels of output `index` (0 = 1/4 resolution): K heatmaps (+ tag maps if it has AE loss)."""
        return self.num_joints + (self.tag_maps * self.tag_dim if self.with_ae_loss[index] else 0)

    @property
    def num_outputs(self) -> int:
        return self.deconv.num_deconvs + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) in the YAML layout; `tag_dim` only when not the official 1, so
        official configs dump as they always did."""
        out = plain(self)
        if self.tag_dim == 1:
            out.pop("tag_dim")
        return out


def config_from_dict(data: Any, source: str = "<dict>", default_name: str = "") -> HigherHRNetConfig:
    """Validate a plain dict (as read from YAML) and build the config. `source` names it in errors."""
    if isinstance(data, Mapping) and "name" not in data:
        data = {**data, "name": default_name}
    return from_mapping(HigherHRNetConfig, data, source, TeacherConfigError)


def load_config(path: str | os.PathLike[str]) -> HigherHRNetConfig:
    """Read a YAML architecture file into a `HigherHRNetConfig` (name defaults to the file stem)."""
    path = Path(path)
    return config_from_dict(read_yaml_mapping(path, TeacherConfigError), source=str(path), default_name=path.stem)


def dump_config(cfg: HigherHRNetConfig) -> str:
    """YAML text for `cfg` that `load_config` reads back to an equal config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


__all__ = [
    "BLOCK_TYPES", "DeconvConfig", "HigherHRNetConfig", "StageConfig", "TeacherConfigError",
    "config_from_dict", "dump_config", "load_config",
]
