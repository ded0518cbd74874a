"""Student networks for distillation, built from named YAML configs in `configs/students/`.

    build_student("step_s")                          # a registered name
    build_student("step_s", tag_per_joint=False)     # with top-level field overrides
    build_student("path/to/my_student.yaml")         # any config file
    build_student(StepStudentConfig(...))            # a config object (any family)
    list_students()                                  # ['hrnet_w16', ..., 'timm_resnet18_1tag']
    get_student_config("step_m")                     # the config dataclass, without building

Every student follows the teacher's output contract: `forward(x)` with x (B, 3, H, W), H and W
multiples of 64, returns `[(B, J + T, H/4, W/4), (B, J, H/2, W/2)]` (J heatmaps then T tag maps at
1/4, T = J with tag_per_joint else 1; J heatmaps at 1/2), and has attributes `num_joints` and
`tag_per_joint`.

Families (YAML field `family`):
    step   RSN Residual-Steps-Block network            students/step.py          StepStudentConfig
    hrnet  small HigherHRNet via the teacher builder   students/hrnet_student.py HigherHRNetConfig
    timm   timm backbone (features_only) + FPN neck    students/timm_student.py  TimmStudentConfig

A YAML file holds `family` plus the fields of its family's config dataclass; `name` defaults to the
file stem. Unknown names, families, fields or mistyped values raise `StudentConfigError` naming the
file and the field.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Union

from torch import nn

from distill.registry import ConfigRegistry
from distill.strict_config import check_unknown_keys, from_mapping, plain, read_yaml_mapping
from students.config import StudentConfigError
from students.hrnet_student import HRNetStudent, build_hrnet_student, check_hrnet_student_config
from students.step import RSB, StepPoseNet, StepStudentConfig, build_step_student
from students.timm_student import TimmPoseNet, TimmStudentConfig, build_timm_student
from teachers.config import HigherHRNetConfig, TeacherConfigError, config_from_dict

REGISTRY = ConfigRegistry("students", "student", StudentConfigError)
CONFIG_DIR = REGISTRY.folder

StudentConfig = Union[StepStudentConfig, HigherHRNetConfig, TimmStudentConfig]

__all__ = [
    "CONFIG_DIR", "FAMILIES", "HRNetStudent", "REGISTRY", "RSB", "StepPoseNet", "StepStudentConfig",
    "StudentConfig", "StudentConfigError", "TimmPoseNet", "TimmStudentConfig", "build_student", "config_family",
    "get_student_config", "list_students",
]


def _hrnet_from_dict(data: dict[str, Any], source: str) -> HigherHRNetConfig:
    try:
        cfg = config_from_dict(data, source=source)
    except TeacherConfigError as exc:
        raise StudentConfigError(str(exc)) from None
    check_hrnet_student_config(cfg, source)
    return cfg


def _strict(cls: type) -> Callable[[dict[str, Any], str], Any]:
    return lambda data, source: from_mapping(cls, data, source, StudentConfigError)


# family -> (config class, dict -> config, config -> model)
FAMILIES: dict[str, tuple[type, Callable[[dict[str, Any], str], Any], Callable[[Any], nn.Module]]] = {
    "step": (StepStudentConfig, _strict(StepStudentConfig), build_step_student),
    "hrnet": (HigherHRNetConfig, _hrnet_from_dict, build_hrnet_student),
    "timm": (TimmStudentConfig, _strict(TimmStudentConfig), build_timm_student),
}


def config_family(cfg: Any) -> str:
    """'step', 'hrnet' or 'timm' for a config object."""
    for family, (cls, _, _) in FAMILIES.items():
        if isinstance(cfg, cls):
            return family
    raise TypeError(f"not a student config: {type(cfg).__name__} (expected one of "
                    f"{', '.join(c.__name__ for c, _, _ in FAMILIES.values())})")


def list_students() -> list[str]:
    """Names of the registered configs (the YAML file stems in configs/students/), sorted."""
    return REGISTRY.names()


def get_student_config(name_or_config: str | os.PathLike[str] | StudentConfig, **overrides: Any) -> StudentConfig:
    """Config for a registered name, a YAML path or a config object, with top-level `overrides`."""
    if isinstance(name_or_config, (str, os.PathLike)):
        path = REGISTRY.resolve(name_or_config)
        data = read_yaml_mapping(path, StudentConfigError)
        source = str(path)
        if "family" not in data:
            raise StudentConfigError(
                f"{source}: missing required field 'family' (one of {', '.join(FAMILIES)})")
        family = data.pop("family")
        if family not in FAMILIES:
            raise StudentConfigError(
                f"{source}: field 'family' must be one of {', '.join(FAMILIES)}, got {family!r}")
        data.setdefault("name", path.stem)
    else:
        family = config_family(name_or_config)
        if not overrides:
            return name_or_config
        data = plain(name_or_config)
        source = f"<{type(name_or_config).__name__} {getattr(name_or_config, 'name', '') or '(unnamed)'}>"
    cls, from_dict, _ = FAMILIES[family]
    if overrides:
        if "family" in overrides:
            raise StudentConfigError(f"{source}: 'family' cannot be overridden (it selects the config class)")
        known = [f.name for f in dataclasses.fields(cls)]
        check_unknown_keys(overrides, known, f"{source} (overrides of a {family} student)", StudentConfigError,
                           what="override")
        data.update(overrides)
        source = f"{source} (with overrides {', '.join(overrides)})"
    return from_dict(data, source)


def build_student(name_or_config: str | os.PathLike[str] | StudentConfig, **overrides: Any) -> nn.Module:
    """Build a student from a registered name, a YAML path or a config object (+ field overrides)."""
    cfg = get_student_config(name_or_config, **overrides)
    return FAMILIES[config_family(cfg)][2](cfg)
