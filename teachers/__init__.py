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

from teachers.config import (
    DeconvConfig, HigherHRNetConfig, StageConfig, TeacherConfigError, config_from_dict, load_config,
)
from teachers.hrnet import PoseHigherResolutionNet, build_higher_hrnet

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "teachers"

__all__ = [
    "CONFIG_DIR", "DeconvConfig", "HigherHRNetConfig", "PoseHigherResolutionNet", "StageConfig",
    "TeacherConfigError", "build_teacher", "config_from_dict", "get_teacher_config", "list_teachers",
    "load_config",
]


def list_teachers() -> list[str]:
    """Names of the registered configs (the YAML file stems in configs/teachers/), sorted."""
    if not CONFIG_DIR.is_dir():
        return []
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


@lru_cache(maxsize=None)
def _load_registered(name: str, mtime_ns: int) -> HigherHRNetConfig:
    return load_config(CONFIG_DIR / f"{name}.yaml")


def get_teacher_config(name_or_path: str | os.PathLike[str]) -> HigherHRNetConfig:
    """Config for a registered name, or for a YAML path (anything with a suffix or a separator)."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text or "/" in text:
        return load_config(path)
    registered = CONFIG_DIR / f"{text}.yaml"
    if not registered.is_file():
        raise TeacherConfigError(
            f"unknown teacher {text!r}; registered: {', '.join(list_teachers()) or '(none)'} "
            f"(configs in {CONFIG_DIR}); a path to a .yaml file also works")
    return _load_registered(text, registered.stat().st_mtime_ns)


def build_teacher(name_or_config: str | os.PathLike[str] | HigherHRNetConfig) -> PoseHigherResolutionNet:
    """Build a HigherHRNet from a registered name, a YAML path or a `HigherHRNetConfig`."""
    cfg = name_or_config if isinstance(name_or_config, HigherHRNetConfig) else get_teacher_config(name_or_config)
    return build_higher_hrnet(cfg)
