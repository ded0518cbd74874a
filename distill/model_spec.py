"""`--model KIND:NAME[:CKPT]` for the commands that run one network (export, visualize).

    student:step_s                          registered student, random init (a warning says so)
    student:step_s:runs/x/model.pt          with our trained weights
    teacher:higherhrnet_w32_512:w32.pth     registered teacher with an official checkpoint
    teacher:configs/teachers/tiny.yaml:sd.pt   a config file instead of a registered name

KIND is `student` or `teacher`; NAME a registry name or a YAML path (it must not contain ':');
CKPT (optional, everything after the second ':') an official .pth / .pth.tar state_dict or one of our
`model.pt` files. Weights are read with `torch.load(weights_only=True)` through the shared loader
(`distill.train.load_weights`). When a `model.pt` records the model it was trained as
(`{"model": {"kind", "name", "overrides"}}`), its `overrides` are applied when building, so e.g. a
student trained with `--set model.overrides.tag_per_joint=false` loads without extra flags.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.errors import AEDistillError

__all__ = ["KINDS", "ModelSpec", "ModelSpecError", "RandomWeightsWarning", "load_model", "parse_model_spec"]

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


def load_model(spec: ModelSpec | str, *, warn_random: bool = True) -> nn.Module:
    """Build the network of `spec`, load its checkpoint (if any) and return it in eval() mode on CPU."""
    from distill.train import build_model, load_weights

    if isinstance(spec, str):
        spec = parse_model_spec(spec)
    overrides: dict[str, Any] = {}
    if spec.weights is not None:
        if not spec.weights.is_file():
            raise ModelSpecError(f"model spec {spec}: checkpoint file {spec.weights} not found")
        rec = _recorded_model(spec.weights)
        if rec is not None:
            if rec["kind"] != spec.kind:
                raise ModelSpecError(
                    f"model spec {spec}: {spec.weights} holds a {rec['kind']} "
                    f"({rec.get('name')!r}), not a {spec.kind}; use {rec['kind']}:{rec.get('name')}:{spec.weights}")
            overrides = dict(rec.get("overrides") or {})
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
