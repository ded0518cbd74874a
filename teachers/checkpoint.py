"""Loading official HigherHRNet checkpoints (and our own) into a model, with one clear error.

Accepted files (read with `torch.load(path, map_location="cpu", weights_only=True)`):
* a plain state_dict (the released `pose_higher_hrnet_w32_512.pth`, `final_state.pth`);
* a dict with the weights under "state_dict" (the official `checkpoint.pth.tar`, which also holds
  "epoch", "optimizer", ...);
* keys prefixed with "module." (saved from nn.DataParallel / DistributedDataParallel) and/or "1."
  (the official fp16 wrapper `nn.Sequential(tofp16(), model)`); prefixes are stripped when every key
  carries them.

Anything else raises a single `distill.errors.CheckpointError` that names the file and says what is
wrong: missing / unexpected keys and shape mismatches (first few of each, with counts), and which
registered config the file would fit, if any.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from distill.errors import CheckpointError

__all__ = [
    "StateDictMismatch", "compare_state_dict", "load_checkpoint", "load_teacher", "matching_configs",
    "non_finite_entries",
    "read_state_dict", "strip_prefixes",
]

PREFIXES = ("module.", "1.")
SHOW = 5  # entries listed per category in error messages


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: tuple[str, ...] = PREFIXES) -> "OrderedDict[str, Any]":
    """Remove wrapper prefixes ("module.", "1.") shared by *every* key, repeatedly ("module.1.x")."""
    sd = OrderedDict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in sd):
                sd = OrderedDict((k[len(prefix):], v) for k, v in sd.items())
                changed = True
    return sd


def _first_sentence(text: str) -> str:
    """First line / sentence of a library message (torch's are several lines of advice)."""
    lines = text.strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else ""


def read_state_dict(path: str | os.PathLike[str]) -> "OrderedDict[str, torch.Tensor]":
    """Read a checkpoint file into a plain, prefix-free state_dict (tensors on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            lines = str(exc).strip().splitlines()
            detail = next((ln.strip() for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0] if lines else "")
            detail = _first_sentence(detail.replace("WeightsUnpickler error: ", ""))
            raise CheckpointError(
                f"{path}: refused to load: the file holds pickled Python objects, not just tensors, and it is "
                f"only read with torch.load(weights_only=True) for safety ({detail}). Save "
                f"`model.state_dict()` (or {{'state_dict': model.state_dict()}}) instead of the model object."
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {exc}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError,
            IndexError, TypeError) as exc:
        msg = type(exc).__name__ + (f": {_first_sentence(str(exc))}" if str(exc).strip() else "")
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt? {path.stat().st_size} bytes): {msg}"
        ) from None
    return _extract_state_dict(obj, path)


def _extract_state_dict(obj: Any, path: Path) -> "OrderedDict[str, torch.Tensor]":
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state_dict (a mapping of names to tensors) or a dict with a 'state_dict' "
            f"entry, got {type(obj).__name__}")
    if not obj:
        raise CheckpointError(f"{path}: the state_dict is empty")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        listed = ", ".join(repr(k) for k in bad[:SHOW]) + (f", ... ({len(bad)} in all)" if len(bad) > SHOW else "")
        raise CheckpointError(
            f"{path}: not a state_dict: {len(bad)} of {len(obj)} entries are not tensors ({listed}) and "
            f"there is no 'state_dict' entry")
    return strip_prefixes(obj)


def _shapes(items: Mapping[str, torch.Tensor]) -> "OrderedDict[str, tuple[int, ...]]":
    return OrderedDict((k, tuple(v.shape)) for k, v in items.items())


class StateDictMismatch:
    """Differences between a state_dict and what a model expects."""

    def __init__(self, expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]]) -> None:
        self.missing = [k for k in expected if k not in given]
        self.unexpected = [k for k in given if k not in expected]
        self.shape = [(k, given[k], expected[k]) for k in expected if k in given and given[k] != expected[k]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shape)

    def describe(self) -> str:
        parts = []
        for label, items in (("missing keys", self.missing), ("unexpected keys", self.unexpected)):
            if items:
                more = f", ... (+{len(items) - SHOW} more)" if len(items) > SHOW else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:SHOW])}{more}")
        if self.shape:
            shown = "; ".join(f"{k}: file {list(g)} vs model {list(e)}" for k, g, e in self.shape[:SHOW])
            more = f"; ... (+{len(self.shape) - SHOW} more)" if len(self.shape) > SHOW else ""
            parts.append(f"{len(self.shape)} shape mismatches: {shown}{more}")
        return "\n  ".join(parts)


def compare_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> StateDictMismatch:
    return StateDictMismatch(_shapes(model.state_dict()), _shapes(state_dict))


@lru_cache(maxsize=None)
def _registered_shapes(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from teachers import build_teacher  # local import: teachers imports nothing from here

    with torch.device("meta"):
        model = build_teacher(name)
    return tuple(_shapes(model.state_dict()).items())


def matching_configs(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Registered teacher configs whose state_dict has exactly these keys and shapes."""
    from teachers import list_teachers

    given = _shapes(state_dict)
    fits = []
    for name in list_teachers():
        try:
            expected = dict(_registered_shapes(name))
        except Exception:  # a broken registry file must not hide the real error
            continue
        if len(expected) == len(given) and all(given.get(k) == s for k, s in expected.items()):
            fits.append(name)
    return fits


def non_finite_entries(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of floating-point tensors with NaN or inf values (a diverged run's weights)."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Load a checkpoint file into `model` (in place; also returned). Raises `CheckpointError`.

    With `strict=True` (the default) keys and shapes must match exactly. With `strict=False` missing
    and unexpected keys are tolerated, but shape mismatches still raise.
    """
    path = Path(path)
    state_dict = read_state_dict(path)
    mismatch = compare_state_dict(model, state_dict)
    if mismatch.shape or (strict and mismatch):
        name = getattr(getattr(model, "cfg", None), "name", "") or type(model).__name__
        fits = matching_configs(state_dict)
        hint = (f"\n  this file fits the registered config(s): {', '.join(fits)}" if fits else
                "\n  it fits none of the registered configs")
        raise CheckpointError(
            f"{path}: does not fit the model {name!r} ({len(state_dict)} entries in the file, "
            f"{len(model.state_dict())} in the model):\n  {mismatch.describe()}{hint}")
    bad = non_finite_entries(state_dict)
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensor(s) hold NaN/inf values (first: {', '.join(bad[:SHOW])}); "
                              "the run that wrote it diverged; use an earlier checkpoint")
    try:
        model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as exc:  # e.g. dtype/device problems the shape check cannot see
        raise CheckpointError(f"{path}: load_state_dict failed: {exc}") from None
    return model


def load_teacher(name_or_config: Any, path: str | os.PathLike[str]) -> nn.Module:
    """Build a registered teacher (or a config) and load `path` into it with strict=True, in eval mode."""
    from teachers import build_teacher

    model = build_teacher(name_or_config)
    load_checkpoint(model, path, strict=True)
    return model.eval()
