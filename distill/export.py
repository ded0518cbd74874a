"""`distill export`: a trained network (teacher or student) to ONNX, with BatchNorm folded and checked.

    distill export --model student:step_s:runs/x/model.pt --onnx step_s.onnx      # 512x512 (config input_size)
    distill export --model teacher:higherhrnet_w32_512:w32.pth --onnx w32.onnx --dynamic
    distill export --model teacher:tiny:state_dict.pt --onnx tiny.onnx --height 128 --width 192

Steps:
1. build the model and load its weights (`distill.model_spec.load_model`: weights_only=True loaders);
2. fold every BatchNorm into the convolution in front of it (`fold_batchnorm`):
       w' = w * g,   b' = (b - mean) * g + beta,   g = gamma / sqrt(var + eps)
   (per output channel: dim 0 of a Conv2d weight, dim 1 of a ConvTranspose2d weight), computed in
   float64; the BN becomes nn.Identity (timm's BatchNormAct2d keeps its activation). The pairs are
   found with torch.fx where a module can be traced symbolically (`find_conv_bn_pairs`); modules
   that cannot (data-dependent control flow, list inputs, ...) fall back to module order inside
   nn.Sequential and the conventional attribute pairs conv1/bn1, conv2/bn2, ..., conv/bn, and their
   children are searched the same way. The folded model must equal the original within 1e-5 relative
   (max |diff| / max |output|) on a random input, else the export stops. That gate runs float64
   copies of both models, so that it sees folding mistakes and not float32 round-off (deep random
   nets such as the tiny reference teacher reach ~1e-5 relative from round-off alone); the float32
   difference is reported too;
3. `torch.onnx.export` (TorchScript exporter, opset 17 by default): input `image` (B, 3, H, W),
   ImageNet-normalised RGB; outputs `out_1_4`, `out_1_2` (named by their stride); `--dynamic` makes
   batch, height and width dynamic. Model facts go into the ONNX metadata;
4. with `--check` (the default): onnxruntime (CPUExecutionProvider) on a real image (first
   coco-mini val2017 image when ../shared exists, else a synthetic one; `--check-image` picks one)
   must match the PyTorch model within 1e-4 (max abs diff; `--atol`), and the shared test-time path
   (`Predictor`: flip test, aggregation, AE decoding) run on the ONNX session through `OnnxModel`
   must give the same people as on the PyTorch model (a refine near-tie may move up to 0.1 % of the
   joints when the decode without refine agrees exactly; it is reported). When the 1e-4 fails, the error also says how
   far float32 PyTorch itself is from a float64 run, to tell round-off from an export bug.
The input size defaults to the model config's `input_size` (else 512); sizes are multiples of 64.
The .onnx file is written atomically, and only once every check has passed (`--no-check` to skip).
"""
from __future__ import annotations

import copy
import os
import re
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from distill.atomic import atomic_path
from distill.data.synthetic import generate_dataset
from distill.errors import AEDistillError
from distill.inference import OutputLayout
from distill.predict import Predictor, infer_layout, read_image

__all__ = [
    "ExportError", "ExportReport", "FoldReport", "OnnxModel", "check_image", "compare_people",
    "export_onnx", "find_conv_bn_pairs", "fold_batchnorm", "fold_conv_bn", "max_output_diff",
    "output_names",
]

FOLD_RTOL = 1e-5          # folded vs unfolded: max |diff| / max |output|
ONNX_ATOL = 1e-4          # onnxruntime vs PyTorch: max |diff|
DEFAULT_OPSET = 17
SIZE_MULTIPLE = 64        # the test-time resize gives multiples of 64

_CONV = (nn.Conv2d, nn.ConvTranspose2d)
_BN = (nn.BatchNorm2d, nn.SyncBatchNorm)


class ExportError(AEDistillError):
    """Export failed or the exported model does not reproduce the PyTorch one."""


# ===================================================================================== BN folding
@dataclass
class FoldReport:
    """What `fold_batchnorm` did. Paths are `named_modules` names ('' is the model itself)."""

    pairs: list[tuple[str, str]] = field(default_factory=list)       # (conv, bn) folded
    traced: list[str] = field(default_factory=list)                  # modules analysed with torch.fx
    fallback: list[tuple[str, str]] = field(default_factory=list)    # (module, why fx failed)
    unpaired: list[str] = field(default_factory=list)                # BNs left as they are
    max_abs_diff: float | None = None       # folded vs original, float32 (what the export sees)
    rel_diff: float | None = None           # max_abs_diff / max |output|
    max_abs_diff_f64: float | None = None   # the same with float64 copies: the folding itself
    rel_diff_f64: float | None = None       # the gate: <= FOLD_RTOL

    def summary(self) -> str:
        text = (f"folded {len(self.pairs)} Conv->BN pairs ({len(self.traced)} modules traced with torch.fx, "
                f"{len(self.fallback)} by module order / attribute names)")
        if self.unpaired:
            text += f"; {len(self.unpaired)} BN left unfolded ({', '.join(self.unpaired[:3])}" + \
                    (", ...)" if len(self.unpaired) > 3 else ")")
        if self.max_abs_diff is not None:
            text += (f"; max |folded - original| = {self.max_abs_diff:.3g} in float32 (relative "
                     f"{self.rel_diff:.3g}), {self.max_abs_diff_f64:.3g} in float64 (relative "
                     f"{self.rel_diff_f64:.3g}, limit {FOLD_RTOL:g})")
        return text


class _PairTracer(torch.fx.Tracer):
    """Convolutions and BatchNorms (including subclasses such as timm's BatchNormAct2d) are leaves,
    so every conv and BN call shows up as one `call_module` node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _fits(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, _CONV) and isinstance(bn, _BN) and conv.out_channels == bn.num_features
            and bn.running_mean is not None and bn.running_var is not None)


def _graph_pairs(root: nn.Module, graph: torch.fx.Graph, prefix: str) -> list[tuple[str, str]]:
    """conv -> BN call pairs in a traced graph where the BN is the conv output's only user."""
    modules = dict(root.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN):
            continue
        if len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.args) != 1 or src.kwargs:
            continue
        conv, bn = modules.get(src.target), modules[node.target]
        if not _fits(conv, bn) or len(src.users) != 1 or calls[src.target] != 1 or calls[node.target] != 1:
            continue
        pairs.append((_join(prefix, src.target), _join(prefix, node.target)))
    return pairs


_ATTR_PAIR = re.compile(r"conv(\d*)$")


def _structural_pairs(module: nn.Module, prefix: str) -> list[tuple[str, str]]:
    """Fallback: adjacent (conv, BN) children of an nn.Sequential; children convN/bnN (and conv/bn)."""
    children = list(module.named_children())
    pairs = []
    if isinstance(module, nn.Sequential):
        for (cn, c), (bn_name, b) in zip(children, children[1:]):
            if _fits(c, b):
                pairs.append((_join(prefix, cn), _join(prefix, bn_name)))
        return pairs
    named = dict(children)
    for name, child in children:
        m = _ATTR_PAIR.match(name)
        if m and _fits(child, named.get(f"bn{m.group(1)}")):
            pairs.append((_join(prefix, name), _join(prefix, f"bn{m.group(1)}")))
    return pairs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120] if text else ''}"


def _walk(module: nn.Module, prefix: str, report: FoldReport) -> None:
    children = list(module.named_children())
    if not children or isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)):
        return
    if type(module).forward is nn.Module.forward:  # containers without forward (ModuleList / ModuleDict)
        for name, child in children:
            _walk(child, _join(prefix, name), report)
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = _PairTracer().trace(module)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "use the fallback here"
        report.fallback.append((prefix or "<model>", _first_line(exc)))
        report.pairs += _structural_pairs(module, prefix)
        for name, child in children:
            _walk(child, _join(prefix, name), report)
        return
    report.traced.append(prefix or "<model>")
    report.pairs += _graph_pairs(module, graph, prefix)


def find_conv_bn_pairs(model: nn.Module) -> FoldReport:
    """Conv2d/ConvTranspose2d -> BatchNorm2d pairs of `model` (see the module docstring), without
    modules that are registered at more than one place (shared weights would be folded twice)."""
    report = FoldReport()
    _walk(model, "", report)
    places = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    by_name = dict(model.named_modules())
    seen: set[str] = set()
    pairs = []
    for conv, bn in report.pairs:
        if conv in seen or bn in seen or places[id(by_name[conv])] > 1 or places[id(by_name[bn])] > 1:
            continue
        seen.update((conv, bn))
        pairs.append((conv, bn))
    report.pairs = pairs
    paired = {bn for _, bn in pairs}
    report.unpaired = [n for n, m in model.named_modules() if isinstance(m, _BN) and n not in paired]
    return report


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    """Fold `bn` (eval statistics) into `conv` in place (a bias is added when the conv has none)."""
    if not _fits(conv, bn):
        raise ValueError(f"cannot fold {type(bn).__name__}({bn.num_features}) into "
                         f"{type(conv).__name__}(out_channels={getattr(conv, 'out_channels', '?')})")
    dtype = conv.weight.dtype
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    w = conv.weight.double()
    if isinstance(conv, nn.ConvTranspose2d):  # weight (in, out / groups, kh, kw): output channel on dim 1
        g = conv.groups
        w = (w.reshape(g, w.shape[0] // g, w.shape[1], *w.shape[2:])
             * scale.reshape(g, 1, -1, 1, 1)).reshape(w.shape)
    else:                                      # weight (out, in / groups, kh, kw)
        w = w * scale.reshape(-1, 1, 1, 1)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    b = (b - mean) * scale + beta
    conv.weight.copy_(w.to(dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(b.to(dtype=dtype, device=conv.weight.device))
    else:
        conv.bias.copy_(b.to(dtype))


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What takes a folded BN's place: Identity, or (timm BatchNormAct2d) its dropout + activation;
    other BN subclasses stay but become an exact identity normalisation (they may do more)."""
    if type(bn) in (nn.BatchNorm2d, nn.SyncBatchNorm):
        return nn.Identity()
    act, drop = getattr(bn, "act", None), getattr(bn, "drop", None)
    if isinstance(act, nn.Module) and isinstance(drop, nn.Module) and type(bn).__name__ == "BatchNormAct2d":
        return nn.Sequential(drop, act)
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.fill_(1.0)
            bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
    bn.eps = 0.0
    return bn


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def max_output_diff(a: Sequence[torch.Tensor] | torch.Tensor, b: Sequence[torch.Tensor] | torch.Tensor
                    ) -> tuple[float, float]:
    """(max |a - b| over all outputs, max |a|)."""
    a = [a] if isinstance(a, torch.Tensor) else list(a)
    b = [b] if isinstance(b, torch.Tensor) else list(b)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ExportError(f"output shapes differ: {[tuple(x.shape) for x in a]} vs {[tuple(y.shape) for y in b]}")
    diff = max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))
    scale = max(float(x.float().abs().max()) for x in a)
    return diff, scale


def _double_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of a float64 copy of `model` (float32 round-off out of the way)."""
    with torch.no_grad():
        return [o.clone() for o in _as_list(copy.deepcopy(model).double().eval()(x.double()))]


def fold_batchnorm(model: nn.Module, *, example: torch.Tensor | None = None, inplace: bool = False,
                   rtol: float = FOLD_RTOL) -> tuple[nn.Module, FoldReport]:
    """An eval()-mode copy of `model` (or `model` itself with `inplace`) with every Conv->BN folded.

    With `example` (a (B, 3, H, W) input) the folded model is checked against the original: the gate
    is max |diff| <= `rtol` x max |output| in float64 (copies of both models), where only a folding
    mistake can show; the float32 difference (what the exported model will see) is reported as well.
    On failure `ExportError` is raised."""
    was_training = model.training
    model.eval()
    ref32 = ref64 = None
    try:
        if example is not None:
            with torch.no_grad():
                ref32 = [o.clone() for o in _as_list(model(example))]
            ref64 = _double_outputs(model, example)
        folded = model if inplace else copy.deepcopy(model)
    finally:
        if not inplace:
            model.train(was_training)
    folded.eval()
    report = find_conv_bn_pairs(folded)
    for conv_path, bn_path in report.pairs:
        bn = folded.get_submodule(bn_path)
        fold_conv_bn(folded.get_submodule(conv_path), bn)
        _set_submodule(folded, bn_path, _bn_replacement(bn))
    if example is not None:
        with torch.no_grad():
            out32 = _as_list(folded(example))
        diff, scale = max_output_diff(ref32, out32)
        report.max_abs_diff, report.rel_diff = diff, diff / max(scale, 1e-30)
        diff64, scale64 = max_output_diff(ref64, _double_outputs(folded, example))
        report.max_abs_diff_f64, report.rel_diff_f64 = diff64, diff64 / max(scale64, 1e-30)
        if report.rel_diff_f64 > rtol:
            raise ExportError(f"BatchNorm folding changed the outputs: in float64 max |diff| {diff64:.3g} is "
                              f"{report.rel_diff_f64:.3g} of max |output| {scale64:.3g} (limit {rtol:g}); "
                              f"{len(report.pairs)} pairs folded")
    return folded, report


def _as_list(outputs: Any) -> list[torch.Tensor]:
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


# ======================================================================================= ONNX I/O
class OnnxModel(nn.Module):
    """An onnxruntime session behind the PyTorch model contract: `model(x)` with x (B, 3, H, W) ->
    list of float32 tensors (on x's device), so `Predictor` can wrap it unchanged. onnxruntime
    uses `threads` intra-op threads (default: torch.get_num_threads()).

    A model exported with a fixed batch size runs larger batches one image at a time. `output_layout`
    (an `OutputLayout`) may be given; otherwise the Predictor infers it from the channel counts."""

    def __init__(self, onnx_path: str | os.PathLike[str], providers: Sequence[str] = ("CPUExecutionProvider",),
                 output_layout: Any = None, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Same thread count as PyTorch (tests and benchmarks pin it to 1 on shared CPUs).
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        self.path = str(onnx_path)
        self.session = ort.InferenceSession(self.path, sess_options=options, providers=list(providers))
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ExportError(f"{onnx_path}: expected one input, the model has {len(inputs)}")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        if output_layout is not None:
            self.output_layout = output_layout
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        static_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        if static_batch is not None and arr.shape[0] != static_batch:
            if static_batch != 1:
                raise ExportError(f"{self.path}: exported for batch {static_batch}, got {arr.shape[0]}")
            parts = [self.session.run(None, {self.input_name: arr[i:i + 1]}) for i in range(arr.shape[0])]
            outs = [np.concatenate([p[k] for p in parts]) for k in range(len(self.output_names))]
        else:
            outs = self.session.run(None, {self.input_name: arr})
        return [torch.from_numpy(np.ascontiguousarray(o)).to(x.device) for o in outs]


def output_names(outputs: Sequence[torch.Tensor], input_hw: tuple[int, int]) -> list[str]:
    """`out_1_{stride}` per output (stride = input height / output height); unique by suffix."""
    names: list[str] = []
    for i, o in enumerate(outputs):
        stride = input_hw[0] / o.shape[-2]
        name = f"out_1_{int(stride)}" if stride == int(stride) else f"out_{i}"
        if name in names:
            name = f"{name}_{i}"
        names.append(name)
    return names


def _shared_root() -> Path:
    return Path(os.environ.get("AEDISTILL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def check_image(path: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, str]:
    """A real image for the checks, (H, W, 3) uint8 RGB, and where it came from: `path`; else the
    first coco-mini val2017 image under ../shared; else a synthetic scene (`generate_dataset`)."""

    if path is not None:
        return read_image(path), str(path)
    val = _shared_root() / "data" / "coco-mini" / "val2017"
    if val.is_dir():
        images = sorted(p for p in val.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if images:
            return read_image(images[0]), str(images[0])

    with tempfile.TemporaryDirectory(prefix="aedistill_export_") as tmp:
        generate_dataset(tmp, seed=0, num_train=0, num_val=1, image_size=256, progress=False)
        first = sorted((Path(tmp) / "val2017").glob("*.jpg"))[0]
        return read_image(first), f"synthetic val2017 image {first.name} (seed 0)"


def _fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop to the aspect W:H, then resize to exactly (width, height)."""

    h, w = image.shape[:2]
    if w * height > h * width:
        cw = max(1, round(h * width / height))
        x0 = (w - cw) // 2
        image = image[:, x0:x0 + cw]
    else:
        ch = max(1, round(w * height / width))
        y0 = (h - ch) // 2
        image = image[y0:y0 + ch]
    interp = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interp))


def _joint_mismatch(a: Any, b: Any, xy_atol: float, value_atol: float, tag_atol: float) -> np.ndarray:
    """(N, J) bool: joints whose position, value or tags differ beyond the tolerances."""
    bad = np.abs(a.people[..., :2] - b.people[..., :2]).max(-1) > xy_atol
    bad |= np.abs(a.people[..., 2] - b.people[..., 2]) > value_atol
    if a.people.shape[-1] > 3:
        bad |= np.abs(a.people[..., 3:] - b.people[..., 3:]).max(-1) > tag_atol
    return bad


def compare_people(a: Any, b: Any, xy_atol: float = 1e-2, value_atol: float = 1e-4, tag_atol: float = 1e-3
                   ) -> str | None:
    """None if two `Prediction`s hold the same people (within float round-off), else what differs."""
    if a.people.shape != b.people.shape:
        return f"{a.people.shape[0]} vs {b.people.shape[0]} people (arrays {a.people.shape} vs {b.people.shape})"
    if a.people.size == 0:
        return None
    ds = float(np.abs(a.scores - b.scores).max())
    bad = _joint_mismatch(a, b, xy_atol, value_atol, tag_atol)
    if bad.any() or ds > value_atol:
        dxy = float(np.abs(a.people[..., :2] - b.people[..., :2]).max())
        dv = float(np.abs(a.people[..., 2] - b.people[..., 2]).max())
        return (f"{int(bad.sum())} of {bad.size} joints in {int(bad.any(1).sum())} of {len(bad)} people differ; "
                f"max differences: joint position {dxy:.3g} px (limit {xy_atol:g}), joint value {dv:.3g} "
                f"(limit {value_atol:g}), person score {ds:.3g} (limit {value_atol:g})")
    return None


# Refine moves each missing joint to the best place for its person's mean tag; between two nearly
# equal candidates float32 round-off may pick either. Up to this fraction of joints may differ when
# the decode without refine agrees exactly.
REFINE_TIE_FRACTION = 1e-3


# ========================================================================================= export
@dataclass
class ExportReport:
    path: Path
    input_hw: tuple[int, int]
    dynamic: bool
    opset: int
    output_names: list[str]
    fold: FoldReport | None
    atol: float = ONNX_ATOL
    onnx_max_abs_diff: list[float] | None = None      # per output, onnxruntime vs the PyTorch model
    onnx_vs_folded_max_abs_diff: float | None = None  # onnxruntime vs the folded PyTorch model it came from
    dynamic_max_abs_diff: float | None = None         # same, at a second shape (dynamic export)
    people_torch: int | None = None
    people_onnx: int | None = None
    refine_ties: int = 0                              # joints placed differently by refine (near-ties)
    check_image: str | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        h, w = self.input_hw
        out = [f"wrote {self.path} ({self.path.stat().st_size / 2**20:.2f} MiB, opset {self.opset}, input "
               f"'image' (1, 3, {h}, {w}){' dynamic batch/height/width' if self.dynamic else ''}, outputs "
               f"{', '.join(self.output_names)}) in {self.seconds:.1f} s"]
        if self.fold is not None:
            out.append("BN folding: " + self.fold.summary())
        else:
            out.append("BN folding: off")
        if self.onnx_max_abs_diff is not None:
            per = ", ".join(f"{n} {d:.3g}" for n, d in zip(self.output_names, self.onnx_max_abs_diff))
            out.append(f"onnxruntime vs PyTorch on {self.check_image}: max |diff| {max(self.onnx_max_abs_diff):.3g} "
                       f"({per}; limit {self.atol:g})")
            if self.onnx_vs_folded_max_abs_diff is not None:
                out.append(f"onnxruntime vs the folded PyTorch model: max |diff| {self.onnx_vs_folded_max_abs_diff:.3g}")
        if self.dynamic_max_abs_diff is not None:
            out.append(f"dynamic shape check (batch 2, {h + SIZE_MULTIPLE}x{w}): max |diff| {self.dynamic_max_abs_diff:.3g}")
        if self.people_onnx is not None:
            line = f"decoded people (Predictor, flip test): ONNX {self.people_onnx} == PyTorch {self.people_torch}"
            if self.refine_ties:
                line += (f"; {self.refine_ties} refined joint(s) landed elsewhere (a near-tie between candidate "
                         f"positions; identical without refine)")
            out.append(line)
        return out


def _quiet_export(model: nn.Module, x: torch.Tensor, path: Path, names: list[str], dynamic: bool, opset: int) -> None:
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {"image": {0: "batch", 2: "height", 3: "width"}}
        for n in names:
            dynamic_axes[n] = {0: "batch", 2: f"{n}_height", 3: f"{n}_width"}
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that needs no onnxscript; its deprecation notice and the
        # tracer's notes about Python-level shape checks (input multiple of 32) are expected here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["image"], output_names=names,
                          opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True)


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.producer_name = "aedistill"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    height: int = 512,
    width: int = 512,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    fold: bool = True,
    check: bool = True,
    image: np.ndarray | None = None,
    image_source: str | None = None,
    atol: float = ONNX_ATOL,
    metadata: dict[str, str] | None = None,
    log: Any = None,
) -> ExportReport:
    """Export `model` to `path` (see the module docstring). `model` is put in eval() mode on the CPU;
    its weights are not changed (folding works on a copy). Raises `ExportError` when the export or a
    check fails; then no file is written (an earlier file at `path` is left as it was)."""

    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or height <= 0 or width <= 0:
        raise ExportError(f"input size {height}x{width}: height and width must be positive multiples of "
                          f"{SIZE_MULTIPLE} (the test-time resize produces multiples of {SIZE_MULTIPLE})")
    model = model.cpu().eval()
    gen = torch.Generator().manual_seed(0)
    rand = torch.randn(1, 3, height, width, generator=gen)
    if fold:
        exported, fold_report = fold_batchnorm(model, example=rand)
        if fold_report.fallback:
            reasons = Counter(why.split(":")[0] for _, why in fold_report.fallback)
            say(f"  torch.fx could not trace {len(fold_report.fallback)} module(s) "
                f"({', '.join(w for w, _ in fold_report.fallback[:4])}{', ...' if len(fold_report.fallback) > 4 else ''}; "
                f"{', '.join(f'{k} x{n}' for k, n in reasons.items())}): module order inside nn.Sequential and "
                f"convN/bnN attribute pairs were used there, and their children were traced one by one")
    else:
        exported, fold_report = model, None
    with torch.no_grad():
        sample = _as_list(model(rand))
    names = output_names(sample, (height, width))
    declared = getattr(model, "output_layout", None)  # our models' contract; foreign ones are inferred
    layout = declared if isinstance(declared, OutputLayout) else infer_layout(model, int(getattr(model, "num_joints", 17)), sample)
    num_joints = layout.num_joints
    meta = {
        "aedistill.input": f"image (B, 3, H, W) RGB, /255 then ImageNet mean/std; exported at {height}x{width}",
        "aedistill.outputs": ", ".join(f"{n} ({o.shape[1]} channels)" for n, o in zip(names, sample)),
        "aedistill.num_joints": str(num_joints),
        "aedistill.tag_per_joint": str(bool(layout.tag_per_joint)) if isinstance(layout, OutputLayout) else "",
        "aedistill.tag_dim": str(int(layout.tag_dim)) if isinstance(layout, OutputLayout) else "",
        "aedistill.bn_folded": str(bool(fold)),
        "aedistill.dynamic": str(bool(dynamic)),
        **(metadata or {}),
    }
    report = ExportReport(Path(path), (height, width), dynamic, opset, names, fold_report, atol)
    with atomic_path(path) as tmp:
        try:
            _quiet_export(exported, rand, tmp, names, dynamic, opset)
            _add_metadata(tmp, meta)
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
            raise ExportError(f"torch.onnx.export failed: {_first_line(exc)}") from exc
        if check:
            _run_checks(model, exported if fold else None, tmp, report, layout, image, image_source, say)
    report.seconds = time.perf_counter() - t0
    return report


def _run_checks(model: nn.Module, folded: nn.Module | None, onnx_path: Path, report: ExportReport, layout: Any,
                image: np.ndarray | None, image_source: str | None, say: Any) -> None:

    atol = report.atol

    height, width = report.input_hw
    if image is None:
        image, image_source = check_image()
    report.check_image = image_source or "the given image"
    fitted = _fit_image(image, height, width)
    onnx_model = OnnxModel(onnx_path, output_layout=layout)
    # Raw outputs on the real image, preprocessed exactly as at test time (square or not: the
    # fitted image is already W x H, a multiple of 64, so the test resize keeps its size).
    torch_pred = Predictor(model, input_size=min(height, width), flip=True, layout=layout)
    x, _ = torch_pred.preprocess(fitted)
    if tuple(x.shape[-2:]) != (height, width):
        raise ExportError(f"internal: test-time input is {tuple(x.shape[-2:])}, expected {(height, width)}")
    with torch.no_grad():
        ref = _as_list(model(x))
    got = onnx_model(x)
    diffs = [max_output_diff(r, g)[0] for r, g in zip(ref, got)]
    report.onnx_max_abs_diff = diffs
    if folded is not None:
        with torch.no_grad():
            report.onnx_vs_folded_max_abs_diff = max_output_diff(_as_list(folded(x)), got)[0]
    if max(diffs) > atol:
        # Say how far float32 PyTorch itself is from a float64 run: large, chaotic nets (random weights)
        # can sit at ~1e-4 of pure round-off, and then only a looser --atol makes sense.
        ref64 = _double_outputs(model, x)
        torch_err = max_output_diff(ref64, [r.double() for r in ref])[0]
        ort_err = max_output_diff(ref64, [g.double() for g in got])[0]
        scale = max(float(r.abs().max()) for r in ref)
        raise ExportError(
            f"onnxruntime and PyTorch disagree: max |diff| per output "
            f"{dict(zip(report.output_names, (f'{d:.3g}' for d in diffs)))} > {atol:g} (outputs up to {scale:.3g}). "
            f"Against a float64 run of the model: PyTorch float32 is off by {torch_err:.3g}, onnxruntime by "
            f"{ort_err:.3g}" + (" (same order: float32 round-off, not an export bug; pass a larger --atol if "
                                "that is acceptable)" if ort_err <= 2 * torch_err else "") +
            "; no file written (--no-check writes it anyway)")
    if report.dynamic:
        x2 = torch.cat([x, torch.flip(x, [3])])
        x2 = torch.nn.functional.pad(x2, (0, 0, 0, SIZE_MULTIPLE), mode="replicate")
        with torch.no_grad():
            ref2 = _as_list(model(x2))
        report.dynamic_max_abs_diff = max(max_output_diff(r, g)[0] for r, g in zip(ref2, onnx_model(x2)))
        if report.dynamic_max_abs_diff > atol:
            raise ExportError(f"dynamic-shape export disagrees with PyTorch at batch 2, {tuple(x2.shape[-2:])}: "
                              f"max |diff| {report.dynamic_max_abs_diff:.3g} > {atol:g}; no file written")
    # The shared test-time path (flip test, aggregation, AE decoding) on both.
    onnx_pred = Predictor(onnx_model, input_size=min(height, width), flip=True, layout=layout)
    a, b = torch_pred.predict(fitted), onnx_pred.predict(fitted)
    report.people_torch, report.people_onnx = len(a.people), len(b.people)
    problem = compare_people(a, b)
    if problem is not None and a.people.shape == b.people.shape:
        # Tell refine near-ties (a few joints) from real differences: without refine all must agree.
        bad = int(_joint_mismatch(a, b, 1e-2, 1e-4, 1e-3).sum())
        scores_ok = float(np.abs(a.scores - b.scores).max()) <= 1e-4
        if scores_ok and bad <= max(1, int(REFINE_TIE_FRACTION * a.people.shape[0] * a.people.shape[1])):
            plain = [Predictor(m, input_size=min(height, width), flip=True, layout=layout, refine=False).predict(fitted)
                     for m in (model, onnx_model)]
            if compare_people(*plain) is None:
                report.refine_ties = bad
                problem = None
    if problem is not None:
        raise ExportError(f"decoded people differ between PyTorch and ONNX on {report.check_image}: {problem}; "
                          f"no file written (use --no-check to write it anyway)")


# ============================================================================================ CLI
