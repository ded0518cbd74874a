"""Parameter and multiply-accumulate counts, in the convention of the HigherHRNet paper and README.

The published "GFLOPs" of HigherHRNet (47.9 / 74.8 / 154.3 for W32-512 / W32-640 / W48-640) are
multiply-accumulates counted by the official `get_model_summary`:

* only convolutions (Conv1d/2d/3d), transposed convolutions and Linear layers count;
* a convolution counts `weight.numel() x prod(output spatial size)` at batch 1 (this is exact for
  grouped and depthwise convolutions too, since the weight already has in_channels/groups inputs);
* a transposed convolution is counted the same way, at its *output* resolution. For a stride-2
  ConvTranspose2d that is 4x its true cost, which is `weight.numel() x prod(input spatial size)`;
* bias, BatchNorm, activations, additions, upsampling, pooling and attention matmuls are not counted.

`count_macs` reports both: `macs_paper` (use it to compare with published numbers) and `macs_true`
(transposed convolutions at their true cost), plus `flops_true = 2 x macs_true`, which equals
`torch.utils.flop_counter` for conv/deconv/linear networks.

Counting uses forward hooks, so it works for any nn.Module that calls its layers as modules (our
teachers and students, timm models). By default the pass runs on the meta device: parameters and
activations are replaced by shape-only tensors for the call (`torch.func.functional_call`), so even
W48 at 640 allocates nothing and takes well under a second. Models whose forward cannot run on meta
(for example ones that hold plain CPU tensors as attributes) fall back to a real pass at batch 1
under `torch.no_grad()`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

__all__ = ["MacBreakdown", "MacReport", "count_macs", "count_params"]


@dataclass(frozen=True)
class MacBreakdown:
    conv2d: int        # regular convolutions (1d/2d/3d), weight.numel() x output spatial size
    deconv_paper: int  # transposed convolutions at output resolution (paper / official convention)
    deconv_true: int   # transposed convolutions at their true cost (input resolution)
    linear: int        # Linear layers: in_features x out_features x number of vectors


@dataclass(frozen=True)
class MacReport:
    input_size: tuple[int, int]  # (H, W)
    params: int
    macs_paper: int   # conv2d + deconv_paper + linear: the published "GFLOPs" (x1e9) convention
    macs_true: int    # conv2d + deconv_true + linear
    flops_true: int   # 2 x macs_true
    breakdown: MacBreakdown
    device: str = "meta"  # where the counting pass ran ("meta" or the model's device)

    @property
    def gmacs_paper(self) -> float:
        return self.macs_paper / 1e9

    @property
    def gflops_true(self) -> float:
        return self.flops_true / 1e9

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _normalize_size(input_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return (input_size, input_size)
    size = tuple(int(v) for v in input_size)
    if len(size) != 2:
        raise ValueError(f"input_size must be an int or (h, w), got {input_size!r}")
    return size  # type: ignore[return-value]


class _Counter:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.conv = 0
        self.deconv_paper = 0
        self.deconv_true = 0
        self.linear = 0

    def hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        weight = module.weight  # type: ignore[attr-defined]
        if isinstance(module, _ConvTransposeNd):
            inp = inputs[0]
            nd = weight.dim() - 2
            self.deconv_paper += weight.numel() * math.prod(out.shape[-nd:])
            self.deconv_true += weight.numel() * math.prod(inp.shape[-nd:])
        elif isinstance(module, _ConvNd):
            nd = weight.dim() - 2
            self.conv += weight.numel() * math.prod(out.shape[-nd:])
        elif isinstance(module, nn.Linear):
            # One in x out product per output vector; the pass runs at batch 1.
            vectors = out.numel() // max(module.out_features, 1)
            self.linear += module.in_features * module.out_features * vectors


def _run(model: nn.Module, x: torch.Tensor, on_meta: bool) -> None:
    with torch.no_grad():
        if on_meta:
            replaced = {n: torch.empty_like(t, device="meta") for n, t in model.named_parameters()}
            replaced.update({n: torch.empty_like(t, device="meta") for n, t in model.named_buffers()})
            torch.func.functional_call(model, replaced, (x,))
        else:
            model(x)


def count_macs(model: nn.Module, input_size: int | Sequence[int], *, in_channels: int = 3,
               device: Literal["auto", "meta", "real"] = "auto") -> MacReport:
    """Count parameters and MACs of `model` for one `(1, in_channels, H, W)` input.

    `input_size` is a square side or `(h, w)`. `device`: "meta" (shape-only pass, no memory),
    "real" (a real batch-1 pass on the model's device and dtype), or "auto" (meta, falling back to
    real if the model cannot run on meta). The model's train/eval flags are restored afterwards;
    the pass itself runs in eval mode.
    """
    h, w = _normalize_size(input_size)
    counter = _Counter()
    handles = [m.register_forward_hook(counter.hook) for m in model.modules()
               if isinstance(m, (_ConvNd, nn.Linear))]
    modes = {m: m.training for m in model.modules()}
    first = next(iter(model.parameters()), None)
    model_on_meta = first is not None and first.is_meta
    attempts = ["meta"] if device == "meta" or model_on_meta else (
        ["real"] if device == "real" else ["meta", "real"])
    used = attempts[0]
    try:
        model.eval()
        for i, mode in enumerate(attempts):
            counter.reset()
            used = mode
            try:
                if mode == "meta":
                    _run(model, torch.zeros(1, in_channels, h, w, device="meta"), on_meta=True)
                else:
                    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
                    dev = first.device if first is not None else torch.device("cpu")
                    _run(model, torch.zeros(1, in_channels, h, w, device=dev, dtype=dtype), on_meta=False)
                break
            except (NotImplementedError, RuntimeError, TypeError):
                if i == len(attempts) - 1:
                    raise
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in modes.items():
            m.training = flag
    if used == "real" and first is not None:
        used = str(first.device)
    conv, dpaper, dtrue, lin = counter.conv, counter.deconv_paper, counter.deconv_true, counter.linear
    macs_true = conv + dtrue + lin
    return MacReport(
        input_size=(h, w),
        params=count_params(model),
        macs_paper=conv + dpaper + lin,
        macs_true=macs_true,
        flops_true=2 * macs_true,
        breakdown=MacBreakdown(conv2d=conv, deconv_paper=dpaper, deconv_true=dtrue, linear=lin),
        device=used,
    )
