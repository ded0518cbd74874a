"""A simulated CUDA device for CPU-only machines: catches tensors left on the wrong device.

Why: the project is developed and tested without a GPU, and the commonest GPU-only failure is a tensor
created or kept on the CPU and then mixed with the model's CUDA tensors (`torch.zeros(...)` without
`device=`, a mask built from numpy, ...). Real CUDA raises on those; the CPU never does. `FakeCuda` is a
`TorchFunctionMode` that runs every op on the CPU but remembers, per storage, whether the data "lives" on
the fake `cuda` device, and raises like CUDA would:

* an op whose tensor arguments are on both devices (0-dim CPU scalars are allowed, as in CUDA);
* `.numpy()` of a fake-CUDA tensor (CUDA: "can't convert cuda tensor to numpy").

`x.device` reports `cuda:0` for fake-CUDA tensors, factories and `.to()` accept `device="cuda"`, and
`torch.cuda.is_available()` / `synchronize()` are patched for the duration, so the code under test takes its
CUDA branches. Autocast for "cuda" is disabled by torch itself on a machine without CUDA (numerics stay
float32), which does not matter for device placement.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

FAKE = torch.device("cuda", 0)
_DEVICE_GETTER = torch.Tensor.device
_GRAD_GETTER = torch.Tensor.grad
_MOVES = {"to", "cuda", "cpu"}
# Ops that relate tensors without computing on them (module moves, `param.data = ...`).
_UNCHECKED = {"_has_compatible_shallow_copy_type", "__set__", "is_floating_point", "is_complex", "_is_view"}
_PASS_THROUGH = {"untyped_storage", "data_ptr", "__repr__", "__format__", "__str__", "__len__", "dim",
                 "size", "shape", "dtype", "requires_grad", "grad_fn", "is_leaf", "layout", "ndim"}


class DeviceMismatch(RuntimeError):
    """An op mixed CPU and (fake) CUDA tensors."""


class FakeCuda(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        # Storages marked as on the fake device, held alive: their addresses are then never reused by a
        # fresh CPU allocation (which would inherit a stale mark). Fine for the small runs tests make.
        self._on_cuda: dict[int, Any] = {}
        self.ops_seen = 0

    # -------------------------------------------------------------------------------- bookkeeping
    def is_cuda(self, t: torch.Tensor) -> bool:
        with torch._C.DisableTorchFunction():
            return t.untyped_storage().data_ptr() in self._on_cuda

    def _mark(self, t: torch.Tensor, cuda: bool) -> None:
        with torch._C.DisableTorchFunction():
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
        if ptr == 0:  # empty storage: nothing to track
            return
        if cuda:
            self._on_cuda[ptr] = storage
        else:
            self._on_cuda.pop(ptr, None)

    @staticmethod
    def _device_arg(d: Any) -> torch.device | None:
        if isinstance(d, torch.device):
            return d
        if isinstance(d, str):
            with contextlib.suppress(RuntimeError):
                return torch.device(d)
        if isinstance(d, int) and not isinstance(d, bool):
            return torch.device("cuda", d)
        return None

    # -------------------------------------------------------------------------------- dispatch
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        self.ops_seen += 1
        if getattr(func, "__self__", None) is _DEVICE_GETTER:  # x.device
            return FAKE if self.is_cuda(args[0]) else func(*args, **kwargs)
        if getattr(func, "__self__", None) is _GRAD_GETTER:  # p.grad, filled by autograd in C++: p's device
            with torch._C.DisableTorchFunction():
                grad = func(*args, **kwargs)
            if grad is not None:
                self._mark(grad, self.is_cuda(args[0]))
            return grad
        name = getattr(func, "__name__", "")
        if name == "pin_memory":  # page-locked host memory is still the host: nothing to simulate
            return args[0]
        if name in _PASS_THROUGH or name in _UNCHECKED or name == "__get__":
            with torch._C.DisableTorchFunction():
                return func(*args, **kwargs)

        target: str | None = None  # where the result goes, when the op says so
        if kwargs.get("device") is not None:
            d = self._device_arg(kwargs["device"])
            if d is not None:
                target = d.type
                kwargs["device"] = torch.device("cpu")
        if name in _MOVES and args and isinstance(args[0], torch.Tensor):
            args = list(args)
            if name == "cuda":
                target, func, args = "cuda", torch.Tensor.to, [args[0], torch.device("cpu")]
            elif name == "cpu":
                target, func, args = "cpu", torch.Tensor.to, [args[0], torch.device("cpu")]
            else:
                for i, a in enumerate(args[1:], 1):
                    d = self._device_arg(a) if not isinstance(a, torch.Tensor) else None
                    if d is not None:
                        target, args[i] = d.type, torch.device("cpu")
                    elif isinstance(a, torch.Tensor):  # x.to(other): other's device and dtype
                        target = "cuda" if self.is_cuda(a) else "cpu"
            src_cuda = self.is_cuda(args[0])
            if target is not None and (target == "cuda") != src_cuda:
                kwargs["copy"] = True  # a real move copies; keep the source's own device intact
            args = tuple(args)

        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        devices = {"cuda" if self.is_cuda(t) else "cpu" for t in tensors
                   if not (t.dim() == 0 and not self.is_cuda(t))}
        if name == "numpy" and "cuda" in devices:
            raise TypeError("can't convert cuda:0 device type tensor to numpy (FakeCuda: call .cpu() first)")
        if target is None and len(devices) > 1 and name not in ("copy_", "set_"):
            raise DeviceMismatch(f"{name}: expected all tensors on one device, got cpu and cuda:0 (FakeCuda)")
        with torch._C.DisableTorchFunction():
            out = func(*args, **kwargs)
        if name in ("copy_", "set_"):
            return out  # in place: the destination keeps its device
        where = target or ("cuda" if devices == {"cuda"} else "cpu")
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t is not (args[0] if args else None):
                self._mark(t, where == "cuda")
        return out


class _FakeEvent:
    """`torch.cuda.Event` stand-in: wall-clock timing (the fake device is synchronous)."""

    def __init__(self, enable_timing: bool = False, **_: Any) -> None:
        self.t = 0.0

    def record(self, *_: Any) -> None:
        import time

        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: "_FakeEvent") -> float:
        return (end.t - self.t) * 1e3


@contextlib.contextmanager
def fake_cuda() -> Iterator[FakeCuda]:
    """Run the body with a simulated CUDA device (see the module docstring)."""
    mode = FakeCuda()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch("torch.cuda.is_available", lambda: True))
        stack.enter_context(mock.patch("torch.cuda.synchronize", lambda *a, **k: None))
        stack.enter_context(mock.patch("torch.cuda.device_count", lambda: 1))
        stack.enter_context(mock.patch("torch.cuda.is_bf16_supported", lambda *a, **k: True))
        stack.enter_context(mock.patch("torch.cuda.Event", _FakeEvent))
        stack.enter_context(mock.patch("torch.cuda.get_device_name", lambda *a, **k: "FakeCuda"))
        stack.enter_context(mock.patch("torch.cuda.empty_cache", lambda: None))
        stack.enter_context(mock.patch("torch.optim.optimizer.Optimizer._accelerator_graph_capture_health_check",
                                       lambda self: None))
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        stack.enter_context(mode)
        yield mode
