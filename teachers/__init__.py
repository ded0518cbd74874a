"""Teacher networks: HigherHRNet built from named YAML configs in `configs/teachers/`.

    build_teacher("higherhrnet_w32_512")         # a registered name
    build_teacher("path/to/my_arch.yaml")        # any config file
    build_teacher(HigherHRNetConfig(...))        # a config object
    list_teachers()                              # ['higherhrnet_w32_512', ..., 'tiny']

Building inside `with torch.device("meta"):` gives a shape-only model (no memory, no init cost).
Load official weights with `teachers.checkpoint.load_checkpoint(model, path)`.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from distill.registry import ConfigRegistry, looks_like_path
from teachers.config import (
    DeconvConfig, HigherHRNetConfig, StageConfig, TeacherConfigError, config_from_dict, load_config,
)
from teachers.hrnet import PoseHigherResolutionNet, build_higher_hrnet

REGISTRY = ConfigRegistry("teachers", "teacher", TeacherConfigError)
CONFIG_DIR = REGISTRY.folder

__all__ = [
    "CONFIG_DIR", "REGISTRY", "DeconvConfig", "HigherHRNetConfig", "PoseHigherResolutionNet", "StageConfig",
    "TeacherConfigError", "build_teacher", "config_from_dict", "get_teacher_config", "list_teachers",
    "load_config",
]


def list_teachers() -> list[str]:
    """Names of the registered configs (the YAML file stems in configs/teachers/), sorted."""
    return REGISTRY.names()


@lru_cache(maxsize=None)
def _load_registered(path: Path, mtime_ns: int) -> HigherHRNetConfig:
    return load_config(path)


def get_teacher_config(name_or_path: str | os.PathLike[str]) -> HigherHRNetConfig:
    """Config for a registered name, or for a YAML path (anything with a suffix or a separator)."""
    path = REGISTRY.resolve(name_or_path)
    if looks_like_path(os.fspath(name_or_path)):
        return load_config(path)
    return _load_registered(path, path.stat().st_mtime_ns)


def build_teacher(name_or_config: str | os.PathLike[str] | HigherHRNetConfig) -> PoseHigherResolutionNet:
    """Build a HigherHRNet from a registered name, a YAML path or a `HigherHRNetConfig`."""
    cfg = name_or_config if isinstance(name_or_config, HigherHRNetConfig) else get_teacher_config(name_or_config)
    return build_higher_hrnet(cfg)
