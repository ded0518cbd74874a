"""Mixed precision, decided in one place: the name -> dtype map, which device allows which dtype, the context.

Every command and config spells autocast the same way (`none`, `bf16`, `fp16`); this module is the only
place that turns those names into `torch.autocast` arguments, so training, the online and cached
teacher, the cache builder, the predictor and the benchmarks cannot disagree about what `bf16` means or
where `fp16` is allowed.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch

from distill.errors import AEDistillError

AMP_NAMES: tuple[str, ...] = ("none", "bf16", "fp16")
_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class AmpError(AEDistillError, ValueError):
    """An autocast setting that is unknown or not usable on the chosen device."""


def amp_dtype(name: str | None | torch.dtype, device: str | torch.device | None = None) -> torch.dtype | None:
    """'none'/None -> None, 'bf16' -> bfloat16, 'fp16' -> float16 (a dtype is accepted as is).

    With `device`, refuses float16 off CUDA (it is slow and loses range on the CPU; bf16 is the CPU choice).
    """
    if name is None or isinstance(name, torch.dtype):
        dtype = name
        if dtype not in (None, torch.bfloat16, torch.float16):
            raise AmpError(f"autocast dtype must be torch.bfloat16 or torch.float16, got {dtype}")
    else:
        if name not in _DTYPES:
            raise AmpError(f"amp must be one of {list(AMP_NAMES)}, got {name!r}")
        dtype = _DTYPES[name]
    if dtype is torch.float16 and device is not None and torch.device(device).type != "cuda":
        raise AmpError(f"fp16 autocast needs CUDA (device is {torch.device(device)}); use bf16 (torch.bfloat16) there")
    return dtype


def amp_name(dtype: torch.dtype | None) -> str:
    """The inverse of `amp_dtype` (for headers, logs and tables)."""
    for name, d in _DTYPES.items():
        if d is dtype:
            return name
    raise AmpError(f"no amp name for dtype {dtype}")


def autocast(device: str | torch.device, amp: str | None | torch.dtype) -> ContextManager[Any]:
    """`torch.autocast` for the device's type with the named dtype, or a no-op context for 'none'."""
    device = torch.device(device)
    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX, as oneDNN reports it).

    Where it does, bf16 autocast with channels_last trains the small models here ~1.8x faster than fp32
    (`scripts/bench_train.py --precision-sweep`); where it does not, bf16 is emulated and slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the oneDNN op
        return False


def resolve_training_amp(name: str, device: str | torch.device) -> str:
    """'auto' -> 'bf16' on a CPU with native bf16, else 'none' (CUDA runs keep fp32 unless asked);
    any other name is checked and returned as is."""
    if name != "auto":
        amp_dtype(name, device)
        return name
    return "bf16" if torch.device(device).type == "cpu" and native_cpu_bf16() else "none"


def module_device(module: torch.nn.Module, default: str | torch.device = "cpu") -> torch.device:
    """Where a module's parameters (else buffers) live: the device every tensor fed to it must be on."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device(default)
