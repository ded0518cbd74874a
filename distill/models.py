"""The one door from a model description to an `nn.Module`: registry names, `KIND:NAME[:CKPT]` specs, a run
config's model section, weight init and checkpoint loading. Nothing else imports the teacher/student builders.

`--model KIND:NAME[:CKPT]` (export, visualize, bench, compare-tags, scripts):

    student:step_s                          registered student, random init (a warning says so)
    student:step_s:runs/x/model.pt          with our trained weights
    teacher:higherhrnet_w32_512:w32.pth     registered teacher with an official checkpoint
    teacher:configs/teachers/tiny.yaml:sd.pt   a config file instead of a registered name

KIND is `student` or `teacher`; NAME a registry name or a YAML path (it must not contain ':');
CKPT (optional, everything after the second ':') an official .pth / .pth.tar state_dict or one of our
`model.pt` files. Weights are read with `torch.load(weights_only=True)` through `load_weights`. When a
`model.pt` records the model it was trained as (`{"model": {"kind", "name", "overrides"}}`), its
`overrides` are applied when building, so e.g. a student trained with
`--set model.overrides.tag_per_joint=false` loads without extra flags.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.config import ConfigError
from distill.errors import AEDistillError
from distill.inference import OutputLayout
from students import build_student, get_student_config
from students.heads import init_student_weights
from teachers import build_teacher, get_teacher_config
from teachers.checkpoint import load_checkpoint
from distill.strict_config import check_unknown_keys, plain
from teachers.config import HigherHRNetConfig, TeacherConfigError, config_from_dict

__all__ = ["KINDS", "ModelSpec", "ModelSpecError", "RandomWeightsWarning", "build_model", "initialise", "load_model",
           "load_weights", "model_config", "parse_model_spec", "contract_of"]

KINDS = ("student", "teacher")
SYNTAX = "KIND:NAME[:CKPT] with KIND 'student' or 'teacher' (e.g. student:step_s:runs/x/model.pt)"


class ModelSpecError(AEDistillError, ValueError):
    """A `--model` value that cannot be parsed or built."""


class RandomWeightsWarning(UserWarning):
    """No checkpoint was given: the model keeps its random initialisation."""


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    name: str
    weights: Path | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" + (f":{self.weights}" if self.weights is not None else "")


def parse_model_spec(text: str) -> ModelSpec:
    """'student:step_s[:CKPT]' -> ModelSpec; raises `ModelSpecError` with the expected syntax."""
    if not isinstance(text, str) or not text.strip():
        raise ModelSpecError(f"empty model spec; expected {SYNTAX}")
    parts = text.strip().split(":", 2)
    if len(parts) < 2:
        raise ModelSpecError(f"model spec {text!r} has no KIND: prefix; expected {SYNTAX}")
    kind, name = parts[0].strip().lower(), parts[1].strip()
    if kind not in KINDS:
        raise ModelSpecError(f"model spec {text!r}: unknown kind {parts[0]!r}; expected {SYNTAX}")
    if not name:
        raise ModelSpecError(f"model spec {text!r}: the {kind} name is empty; expected {SYNTAX}")
    weights = None
    if len(parts) == 3:
        if not parts[2].strip():
            raise ModelSpecError(f"model spec {text!r}: the checkpoint path after the last ':' is empty "
                                 f"(leave out the ':' for random weights); expected {SYNTAX}")
        weights = Path(parts[2].strip()).expanduser()
    return ModelSpec(kind, name, weights)


def _recorded_model(path: Path) -> dict[str, Any] | None:
    """The `model` entry of one of our model.pt files ({"kind", "name", "overrides"}), else None.

    Read cheaply (mmap) and only as a hint: any problem is left to the real loader to report."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, unreadable, ...: the weights loader gives the error
        return None
    rec = obj.get("model") if isinstance(obj, dict) else None
    if isinstance(rec, dict) and isinstance(rec.get("kind"), str):
        return rec
    return None


def recorded_overrides(kind: str, weights: str | Path, name: str = "") -> dict[str, Any]:
    """The config overrides one of our model.pt files was trained with (e.g. a teacher's `tag_dim`), so the
    network is rebuilt as trained; {} for official checkpoints. Raises when the file holds another kind."""
    rec = _recorded_model(Path(weights))
    if rec is None:
        return {}
    if rec["kind"] != kind:
        raise ModelSpecError(f"{weights} holds a {rec['kind']} ({rec.get('name')!r}), not a {kind}; use "
                             f"{rec['kind']}:{rec.get('name')}:{weights}" + (f" (asked for {kind}:{name})" if name else ""))
    return dict(rec.get("overrides") or {})


def trained_teacher_config(name: Any, weights: str | Path | None) -> HigherHRNetConfig:
    """The registered teacher config `name` as `weights` were trained (their recorded overrides applied,
    e.g. `tag_dim`); the registered config itself for official checkpoints or no weights."""
    cfg = model_config("teacher", name)
    recorded = recorded_overrides("teacher", weights, str(name)) if weights else {}
    return teacher_config_with(cfg, recorded) if recorded else cfg


def load_model(spec: ModelSpec | str, *, warn_random: bool = True) -> nn.Module:
    """Build the network of `spec`, load its checkpoint (if any) and return it in eval() mode on CPU."""
    if isinstance(spec, str):
        spec = parse_model_spec(spec)
    overrides: dict[str, Any] = {}
    if spec.weights is not None:
        if not spec.weights.is_file():
            raise ModelSpecError(f"model spec {spec}: checkpoint file {spec.weights} not found")
        try:
            overrides = recorded_overrides(spec.kind, spec.weights)
        except ModelSpecError as exc:
            raise ModelSpecError(f"model spec {spec}: {exc}") from None
    try:
        model = build_model(spec.kind, spec.name, overrides or None)
    except AEDistillError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. overrides a config class does not accept
        raise ModelSpecError(f"model spec {spec}: cannot build the model: {exc}") from None
    if spec.weights is not None:
        load_weights(model, spec.weights)
    elif warn_random:
        warnings.warn(f"{spec}: no checkpoint given, the model has RANDOM weights "
                      f"(use {spec.kind}:{spec.name}:CKPT)", RandomWeightsWarning, stacklevel=2)
    return model.eval()


def contract_of(model: nn.Module) -> OutputLayout:
    """The output contract every teacher and student declares (`model.output_layout`); export wrappers of
    foreign networks set it too. Callers read joints, tag maps and strides here instead of probing."""
    layout = getattr(model, "output_layout", None)
    if not isinstance(layout, OutputLayout):
        raise ModelSpecError(f"{type(model).__name__} declares no output contract (`output_layout`); "
                             "teachers and students of this project all do")
    return layout


# ------------------------------------------------------------------------------------------ building
def model_config(kind: str, name: Any) -> Any:
    """The config object of a registered name or YAML path (raises naming the registry on an unknown name)."""
    if kind == "teacher":
        return name if isinstance(name, HigherHRNetConfig) else get_teacher_config(name)
    if kind == "student":
        return get_student_config(name)
    raise ConfigError(f"model kind must be one of {list(KINDS)}, got {kind!r}")


def teacher_config_with(cfg: HigherHRNetConfig, overrides: dict[str, Any]) -> HigherHRNetConfig:
    """`cfg` with top-level `overrides`, checked as strictly as a YAML file: unknown keys and wrong types
    raise `TeacherConfigError` naming the key (a bare `replace` raised a raw TypeError for both)."""
    data = plain(cfg)
    source = f"teacher config {cfg.name!r} (overrides)"
    check_unknown_keys(overrides, list(data), source, TeacherConfigError, what="override")
    return config_from_dict({**data, **overrides}, source)


def build_model(kind: str, name: Any, overrides: dict[str, Any] | None = None) -> nn.Module:
    """A teacher-family (HigherHRNet) or student model by registry name, config path or config object."""
    if kind == "teacher":
        cfg = model_config(kind, name)
        if overrides:
            cfg = teacher_config_with(cfg, overrides)
        return build_teacher(cfg)
    if kind == "student":
        return build_student(name, **(overrides or {}))
    raise ConfigError(f"model.kind must be one of {list(KINDS)}, got {kind!r}")


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Official checkpoints and our own `model.pt` files (`{"state_dict": ..., "config": ...}`), in place."""
    return load_checkpoint(model, path, strict=strict)


def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise a freshly built model: 'default' keeps the builder's init; 'kaiming' uses Kaiming-normal
    convs and N(0, 0.001) output layers (the AE output convs start small, as officially)."""
    if scheme == "default":
        return
    if scheme != "kaiming":
        raise ConfigError(f"model.init must be 'default' or 'kaiming', got {scheme!r}")
    init_student_weights(model)
    for final in getattr(model, "final_layers", []):
        nn.init.normal_(final.weight, std=0.001)
        if final.bias is not None:
            nn.init.zeros_(final.bias)
