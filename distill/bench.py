"""`distill bench`: accuracy, size and speed of teachers and students, side by side, in one report.

    distill bench --models teacher:higherhrnet_w32_512:w32.pth kd=student:step_s:runs/x/model.pt \\
        --data data/coco --split val2017 --input-size 512 --out runs/bench

Each `--models` entry is `KIND:NAME[:CKPT]` or `LABEL=KIND:NAME[:CKPT]` (KIND `teacher` or `student`,
NAME a registered config or a YAML path, CKPT a weights file; without one the model is randomly
initialised). For every model:

* COCO keypoint AP: the 10 stats through the shared `Predictor` (flip test, official decode settings)
  and `coco_keypoint_eval`, over the split or its first `--limit` images;
* params, GMACs in the papers' convention and true GFLOPs (`count_macs` at input S x S);
* speed, measured separately (medians; CPU always, thread count recorded):
  - network: forward only, one (1, 3, S, S) input, after warm-up;
  - grouping: `AECodec.decode` of the model's real outputs on the evaluated images (ms / image);
  - end to end: `Predictor` per image (resize + normalise + 2 forwards for flip + aggregation +
    decode), timed on the evaluated images after one warm-up image;
* on a GPU (when CUDA is available and not `--no-gpu`): the network at each `--gpu-batches` size in
  fp32 and bf16 autocast, channels_last, cuDNN benchmark, warm-up, CUDA-event timing, medians.

The report folder gets `results.csv` (every number), `results.md` (the table that is also printed),
`flops_vs_ap.png` (AP against GMACs, log x, with the Pareto front as a step line) and
`overlays/<image>.png` (the ground truth, then each model's people with score >= 0.3 and their joints with
value > 0.3 on the first `--overlays` images, teacher first, drawn by `distill.visualize`). Every file is written atomically.

Python API (used by `distill demo`): `run_bench(entries, data, split, ...) -> rows` and
`write_report(rows, out)`; entries come from `parse_models([...])`, `ModelEntry.from_spec(spec, label)`
or `ModelEntry(label, kind, name, weights, model=...)` (a `model` already in memory is benched as is).
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from distill.atomic import write_bytes_atomic, write_text_atomic
from distill.codec.decode import DECODE_MODES, decode_mode
from distill.data.coco import CocoKeypointDataset
from distill.errors import AEDistillError
from distill.evaluate import STAT_NAMES
from distill.flops import count_macs
from distill.models import KINDS, ModelSpec, ModelSpecError, contract_of, load_model, model_config, parse_model_spec
from distill.predict import TIMING_KEYS, Predictor, evaluate_model, read_image
from distill.progress import progress
from distill.visualize import draw_people, side_by_side

__all__ = [
    "BenchError", "ModelEntry", "format_table", "pareto_front", "parse_model", "parse_models",
    "plot_flops_vs_ap", "run_bench", "time_cpu_network", "time_gpu_network", "write_report",
]

GPU_DTYPES: tuple[tuple[str, torch.dtype | None], ...] = (("fp32", None), ("bf16", torch.bfloat16))
CSV_NAME, MD_NAME, PLOT_NAME, OVERLAY_DIR = "results.csv", "results.md", "flops_vs_ap.png", "overlays"
# The overlays draw what a user of the model would keep, as pose visualisers do (mmpose's kpt_thr is 0.3): people
# with score >= OVERLAY_SCORE_THR and, of them, joints with value > OVERLAY_JOINT_THR; the decoder's low-score
# candidates (AP counts them, ranked last) and its filled-in weak joints are left out of the picture. Synthetic
# teacher, 4 val images: true people score 0.33-0.76, the extra candidates <= 0.26.
OVERLAY_SCORE_THR = 0.3
OVERLAY_JOINT_THR = 0.3


class BenchError(AEDistillError):
    """A bad `--models` entry, or a model that cannot be built / loaded / evaluated (names the label)."""


# ------------------------------------------------------------------------------------- model entries
@dataclass
class ModelEntry:
    """One model to bench. `model`, when given, is used as is (already built and loaded)."""

    label: str
    kind: str
    name: str
    weights: str | None = None
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_spec(cls, spec: ModelSpec | str, label: str | None = None) -> "ModelEntry":
        """From a `distill.model_spec.ModelSpec` (or its `KIND:NAME[:CKPT]` text); label defaults to NAME."""
        if isinstance(spec, str):
            spec = parse_model_spec(spec)
        return cls(label or spec.name, spec.kind, spec.name, None if spec.weights is None else str(spec.weights))

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.kind, self.name, None if self.weights is None else Path(self.weights))


def parse_model(text: str) -> ModelEntry:
    """`[LABEL=]KIND:NAME[:CKPT]` -> ModelEntry (the label defaults to NAME); KIND:NAME[:CKPT] is read
    by `distill.model_spec.parse_model_spec`."""
    raw = text.strip()
    label = None
    head, sep, rest = raw.partition("=")
    if sep and ":" not in head and "/" not in head:  # an '=' inside a checkpoint path is not a label
        label, raw = head.strip(), rest.strip()
        if not label:
            raise BenchError(f"model {text!r}: empty label before '='; expected LABEL=KIND:NAME[:CKPT]")
    try:
        spec = parse_model_spec(raw)
    except ModelSpecError as exc:
        raise BenchError(f"model {label!r}: {exc}" if label else str(exc)) from None
    return ModelEntry.from_spec(spec, label)


def parse_models(texts: Iterable[str]) -> list[ModelEntry]:
    """Parse several entries; labels must end up unique (repeated defaults get the checkpoint folder)."""
    entries = [parse_model(t) for t in texts]
    if not entries:
        raise BenchError("no models given (--models KIND:NAME[:CKPT] ...)")
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.label] = counts.get(e.label, 0) + 1
    for e in entries:
        if counts[e.label] > 1 and e.label == e.name and e.weights:
            e.label = f"{e.name}@{Path(e.weights).parent.name or Path(e.weights).stem}"
    seen: set[str] = set()
    for e in entries:
        if e.label in seen:
            raise BenchError(f"model label {e.label!r} is used twice; name the points with LABEL=KIND:NAME[:CKPT]")
        seen.add(e.label)
    return entries


def check_entry(entry: ModelEntry) -> None:
    """Cheap up-front checks (known kind and name, checkpoint file exists) so a long run fails at once."""
    if entry.model is not None:
        return
    if entry.kind not in KINDS:
        raise BenchError(f"unknown kind {entry.kind!r}; expected one of {', '.join(KINDS)}")
    try:
        model_config(entry.kind, entry.name)
    except AEDistillError as exc:
        raise BenchError(f"model {entry.label!r}: {exc}") from None
    if entry.weights and not Path(entry.weights).expanduser().is_file():
        raise BenchError(f"model {entry.label!r}: checkpoint file {entry.weights} not found")


def load_entry(entry: ModelEntry) -> nn.Module:
    """The model of `entry` in eval mode on the CPU, through `distill.models.load_model` (which also
    applies the overrides a `model.pt` records). Errors name the label."""
    if entry.model is not None:
        return entry.model.eval()
    check_entry(entry)
    try:
        return load_model(entry.spec, warn_random=False)
    except AEDistillError as exc:
        raise BenchError(f"model {entry.label!r}: {exc}") from None


# ------------------------------------------------------------------------------------------ timing
def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if len(values) else float("nan")


@torch.inference_mode()
def time_cpu_network(model: nn.Module, input_size: int, repeats: int = 10, warmup: int = 2,
                     desc: str = "network cpu", show_progress: bool = True) -> list[float]:
    """Forward times (ms) of `model` on one (1, 3, S, S) CPU input, after `warmup` passes."""
    model = model.to("cpu").eval()
    x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    for _ in range(warmup):
        model(x)
    times = []
    for _ in progress(range(max(1, repeats)), desc=desc, enabled=show_progress):
        t0 = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_gpu_network(model: nn.Module, input_size: int, batches: Sequence[int] = (1, 32), repeats: int = 10,
                     warmup: int = 10, device: str | torch.device = "cuda", desc: str = "network gpu",
                     show_progress: bool = True) -> dict[str, Any]:
    """Network-only GPU timings: for each batch size and fp32 / bf16 autocast, the median ms per batch
    (CUDA events) and images/s, channels_last, cuDNN benchmark on, after warm-up. Keys
    `gpu_b{B}_{fp32|bf16}_ms` / `_img_s`, plus `gpu_name`. Out of memory gives NaN for that setting.
    The model is moved to the GPU for the run and back to the CPU afterwards."""
    device = torch.device(device)
    row: dict[str, Any] = {"gpu_name": torch.cuda.get_device_name(device)}
    prev_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    try:
        settings = [(b, n, dt) for b in batches for n, dt in GPU_DTYPES]
        for b, dname, dtype in progress(settings, desc=desc, enabled=show_progress, unit="setting"):
            key = f"gpu_b{b}_{dname}"
            times: list[float] = []
            try:
                x = torch.randn(b, 3, input_size, input_size, device=device).contiguous(
                    memory_format=torch.channels_last)
                autocast = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
                with torch.inference_mode(), autocast:
                    for _ in range(warmup):
                        model(x)
                    torch.cuda.synchronize(device)
                    for _ in range(max(1, repeats)):
                        start = torch.cuda.Event(enable_timing=True)
                        end = torch.cuda.Event(enable_timing=True)
                        start.record()
                        model(x)
                        end.record()
                        end.synchronize()
                        times.append(start.elapsed_time(end))
                del x
            except torch.cuda.OutOfMemoryError:
                print(f"bench: out of GPU memory at batch {b} {dname}; recorded as NaN", file=sys.stderr)
                times = []
                torch.cuda.empty_cache()
            ms = _median(times)
            row[f"{key}_ms"] = ms
            row[f"{key}_img_s"] = b * 1e3 / ms if ms > 0 else float("nan")
    finally:
        torch.backends.cudnn.benchmark = prev_benchmark
        model.to("cpu").to(memory_format=torch.contiguous_format)
        torch.cuda.empty_cache()
    return row


def _timed_predictor_class() -> type:
    class TimedPredictor(Predictor):
        """A Predictor that records per-call wall time and its timing split, and keeps the first
        `keep` predictions (for overlays). Meant for batch-size-1 calls (ms / image)."""

        def __init__(self, *args: Any, keep: int = 0, **kwargs: Any) -> None:
            super().__init__(*args, timing=True, **kwargs)
            self.keep = keep
            self.kept: list[Any] = []
            self.per_image: list[dict[str, float]] = []

        def predict_batch(self, images: Sequence[np.ndarray], return_maps: bool = False) -> list[Any]:
            before = dict(self.timings)
            t0 = time.perf_counter()
            preds = super().predict_batch(images, return_maps)
            wall = time.perf_counter() - t0
            n = max(1, len(images))
            rec = {k: (self.timings[k] - before[k]) * 1e3 / n for k in TIMING_KEYS}
            rec["e2e"] = wall * 1e3 / n
            self.per_image.append(rec)
            if len(self.kept) < self.keep:
                self.kept.extend(preds[: self.keep - len(self.kept)])
            return preds

    return TimedPredictor


def _timed_eval(model: nn.Module, ds: Any, split: str, input_size: int, limit: int | None, device: str,
                keep: int, decode: str, label: str, show_progress: bool) -> tuple[dict[str, float], Any]:
    """COCO stats through a TimedPredictor in decode mode `decode` (after one untimed warm-up image)."""

    predictor = _timed_predictor_class()(model, ds.spec, input_size=input_size, flip=True, device=device,
                                         keep=keep, **decode_mode(decode))
    if len(ds):
        predictor.predict(ds.load_image(0))  # warm-up (layout, codec, allocator); not timed, not scored
        predictor.per_image.clear()
        predictor.kept.clear()
    try:
        stats = evaluate_model(predictor, ds.root, split, annotation_file=ds.annotation_file,
                               image_dir=ds.image_dir, limit=limit, batch_size=1, show_progress=show_progress)
    except AEDistillError as exc:
        raise BenchError(f"model {label!r}: evaluation failed ({decode} decoding): {exc}") from None
    return stats, predictor


# ------------------------------------------------------------------------------------------ bench
def _dataset(data: str | Path, split: str) -> Any:
    return CocoKeypointDataset(data, split, remove_images_without_annotations=False, augment=False)


def bench_model(entry: ModelEntry, ds: Any, split: str, *, input_size: int = 512, limit: int | None = None,
                repeats: int = 10, warmup: int = 2, gpu: bool = True, gpu_batches: Sequence[int] = (1, 32),
                overlays: int = 0, device: str = "cpu", show_progress: bool = True,
                decode: str = "official") -> dict[str, Any]:
    """One row of the report for one model (see the module docstring); `ds` is the split's dataset. AP and
    timings use `decode`; every other decode mode is scored in a second pass (`AP_<mode>`, ...)."""

    model = load_entry(entry)
    num_joints = contract_of(model).num_joints
    if num_joints != ds.num_joints:
        raise BenchError(f"model {entry.label!r} predicts {num_joints} joints, but {ds.annotation_file} has "
                         f"{ds.num_joints}")
    macs = count_macs(model, input_size)
    row: dict[str, Any] = {
        "label": entry.label, "kind": entry.kind, "name": entry.name, "weights": entry.weights or "random init",
        "tags": None, "input_size": int(input_size), "params": macs.params, "params_m": macs.params / 1e6,
        "macs_paper": macs.macs_paper, "gmacs": macs.macs_paper / 1e9, "gmacs_true": macs.macs_true / 1e9,
        "gflops": macs.flops_true / 1e9,
    }

    # Network alone, CPU, batch 1.
    net = time_cpu_network(model, input_size, repeats, warmup, desc=f"{entry.label} network cpu",
                           show_progress=show_progress)

    # AP, grouping and end to end through the shared Predictor (flip test, official settings).
    stats, predictor = _timed_eval(model, ds, split, input_size, limit, device, overlays, decode, entry.label,
                                   show_progress)
    n_images = len(ds) if limit is None else min(int(limit), len(ds))
    contract = contract_of(model)
    row["tags"], row["tag_dim"] = contract.tag_maps, contract.tag_dim
    row["decode"] = decode
    row.update({k: stats[k] for k in STAT_NAMES})
    for mode in sorted(set(DECODE_MODES) - {decode}):  # the other modes: a second pass (their maps may differ)
        other, other_pred = _timed_eval(model, ds, split, input_size, limit, device, 0, mode, entry.label,
                                        show_progress)
        row.update({f"AP_{mode}": other["AP"], f"AR_{mode}": other["AR"],
                    f"group_ms_{mode}": _median([p["decode"] for p in other_pred.per_image])})
    per = predictor.per_image
    med = {k: _median([p[k] for p in per]) for k in ("preprocess", "network", "aggregate", "decode", "e2e")}
    mean_e2e = sum(p["e2e"] for p in per) / len(per) if per else float("nan")
    row.update({
        "data": Path(ds.root).name, "split": split, "images": n_images, "flip": True,
        "cpu_threads": torch.get_num_threads(), "e2e_device": str(predictor.device),
        "net_ms": _median(net), "net_img_s": 1e3 / _median(net),
        "group_ms": med["decode"],
        "e2e_ms": med["e2e"], "e2e_mean_ms": mean_e2e,
        # throughput = images / total time: a median would overstate it where a few images decode far slower
        "e2e_img_s": 1e3 / mean_e2e if mean_e2e > 0 else float("nan"),
        "e2e_preprocess_ms": med["preprocess"], "e2e_network_ms": med["network"],
        "e2e_aggregate_ms": med["aggregate"],
        "repeats": int(repeats), "warmup": int(warmup),
    })

    if gpu and torch.cuda.is_available():
        row.update(time_gpu_network(model, input_size, gpu_batches, repeats, max(5, warmup),
                                    desc=f"{entry.label} network gpu", show_progress=show_progress))
        row["gpu_tf32"] = bool(torch.backends.cudnn.allow_tf32)

    # Overlay material (not written to the csv: keys starting with "_").
    row["_overlays"] = [(str(ds.image_path(i)), p.people, p.scores, ds.get_joints(i))
                        for i, p in enumerate(predictor.kept)]
    row["_spec"] = ds.spec
    del predictor
    return row


def run_bench(models: Sequence[ModelEntry], data: str | Path, split: str = "val2017", *, input_size: int = 512,
              limit: int | None = None, repeats: int = 10, warmup: int = 2, gpu: bool = True,
              gpu_batches: Sequence[int] = (1, 32), overlays: int = 4, device: str = "cpu",
              show_progress: bool = True, log: Callable[[str], None] | None = None,
              decode: str = "official") -> list[dict[str, Any]]:
    """Bench every model on `data`/`split`; returns one dict per model (the csv row; keys starting with
    "_" carry overlay material for `write_report`). All names and checkpoints are checked first."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if not models:
        raise BenchError("no models to bench")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise BenchError(f"model labels must be unique, got {labels}")
    for entry in models:
        check_entry(entry)
    if input_size <= 0 or input_size % 64:
        raise BenchError(f"--input-size must be a positive multiple of 64, got {input_size}")
    if limit is not None and limit <= 0:
        raise BenchError(f"--limit must be positive, got {limit}")
    ds = _dataset(data, split)
    rows = []
    for i, entry in enumerate(models, 1):
        log(f"bench [{i}/{len(models)}] {entry.label} ({entry.kind} {entry.name}, "
            f"{entry.weights or 'random init'})")
        rows.append(bench_model(entry, ds, split, input_size=input_size, limit=limit, repeats=repeats,
                                warmup=warmup, gpu=gpu, gpu_batches=gpu_batches, overlays=overlays,
                                device=device, show_progress=show_progress, decode=decode))
    return rows


# ------------------------------------------------------------------------------------------ report
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, AP) points that no other point dominates (cost <= and AP >=, one of them
    strictly), sorted by cost (then AP descending). Equal points do not dominate each other; points
    with a non-finite coordinate are left out."""
    ok = [i for i, (c, a) in enumerate(points) if math.isfinite(c) and math.isfinite(a)]
    front = []
    for i in ok:
        ci, ai = points[i]
        if not any(points[j][0] <= ci and points[j][1] >= ai and (points[j][0] < ci or points[j][1] > ai)
                   for j in ok if j != i):
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


def _gpu_keys(rows: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    found = set()
    for row in rows:
        for k in row:
            if k.startswith("gpu_b") and k.endswith("_ms"):
                b, dname = k[len("gpu_b"):-len("_ms")].split("_", 1)
                found.add((int(b), dname))
    order = {n: i for i, (n, _) in enumerate(GPU_DTYPES)}
    return sorted(found, key=lambda t: (t[0], order.get(t[1], 99), t[1]))


def table_columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(header, row key, format) of the markdown table; GPU columns only when some row has them."""
    cols = [("model", "label", "s"), ("T", "tags", "d"), ("D", "tag_dim", "d"), ("params M", "params_m", ".2f"),
            ("GMACs", "gmacs", ".2f"), ("GFLOPs", "gflops", ".2f")]
    cols += [(n, n, ".3f") for n in ("AP", "AP50", "AP75", "APm", "APl", "AR")]
    cols += [("network ms", "net_ms", "ms"), ("grouping ms", "group_ms", "ms"), ("e2e ms", "e2e_ms", "ms"),
             ("e2e ms mean", "e2e_mean_ms", "ms"), ("images/s", "e2e_img_s", ".2f")]
    for mode in sorted({k[len("AP_"):] for row in rows for k in row if k.startswith("AP_")}):
        cols += [(f"AP {mode}", f"AP_{mode}", ".3f"), (f"grouping ms {mode}", f"group_ms_{mode}", "ms")]
    for b, dname in _gpu_keys(rows):
        cols.append((f"GPU b{b} {dname} ms", f"gpu_b{b}_{dname}_ms", "ms"))
        if b > 1:
            cols.append((f"GPU b{b} {dname} img/s", f"gpu_b{b}_{dname}_img_s", ".0f"))
    return cols


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    if fmt == ".3f" and float(value) < 0:  # COCOeval's -1: no ground truth in that area range
        return "n/a"
    if fmt == "s":
        return str(value).replace("|", "\\|")
    if fmt == "ms":
        v = float(value)
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
    if fmt == "d":
        return str(int(value))
    return format(float(value), fmt)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table of the report."""
    cols = table_columns(rows)
    lines = ["| " + " | ".join(h for h, _, _ in cols) + " |",
             "|" + "|".join(":---" if f == "s" else "---:" for _, _, f in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k), f) for _, k, f in cols) + " |")
    return "\n".join(lines)


def _notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    r = rows[0]
    notes = [
        f"{r.get('data')}/{r.get('split')}: {r.get('images')} images, input {r.get('input_size')}x"
        f"{r.get('input_size')} (square for params/GMACs/network timing), flip test, {r.get('decode', 'official')} "
        "decoding (the 'AP <mode>' columns: the other decode mode, same images; docs/decoding.md).",
        "GMACs: the papers' convention (deconvolutions at output resolution); GFLOPs: 2 x true MACs.",
        f"CPU timings (torch threads: {r.get('cpu_threads')}): network = forward only, batch 1; grouping = "
        f"decode of the model's outputs per image; e2e = Predictor per image on {r.get('e2e_device')} "
        f"(resize, normalise, 2 forwards, aggregation, decode). Medians of "
        f"{r.get('repeats')} repeats after {r.get('warmup')} warm-up (network) or over the images (grouping, e2e); "
        "e2e ms mean and images/s = 1000 / e2e ms mean: the throughput over all images (a weak model's decode time "
        "is skewed: the official refine fills every missing joint of up to 30 candidate people).",
    ]
    if any(float(row.get("APl", 0)) < 0 or float(row.get("APm", 0)) < 0 for row in rows):
        notes.append("n/a: COCOeval's -1, no ground truth in that area range.")
    if "gpu_name" in r:
        notes.append(f"GPU ({r['gpu_name']}): network only, channels_last, cuDNN benchmark, CUDA events; fp32 with "
                     f"cuDNN TF32 {'on' if r.get('gpu_tf32') else 'off'}, bf16 = autocast; ms per batch, medians.")
    return notes


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if not k.startswith("_") and k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buf.getvalue()


def plot_flops_vs_ap(rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> None:
    """GMACs (log x) against AP, one labelled point per model, the Pareto front as a step line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(7.5, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # COCOeval reports -1 when the split has no ground truth at all: not a point on the AP axis.
    points = [(float(r["gmacs"]), float(r["AP"]) if float(r["AP"]) >= 0 else float("nan")) for r in rows]
    for kind, marker, color in (("teacher", "s", "tab:red"), ("student", "o", "tab:blue")):
        sel = [(p, r) for p, r in zip(points, rows) if r.get("kind") == kind]
        if sel:
            ax.scatter([p[0] for p, _ in sel], [p[1] for p, _ in sel], marker=marker, color=color, s=40,
                       zorder=3, label=f"{kind}s")
    for (x, y), r in zip(points, rows):
        if math.isfinite(x) and math.isfinite(y):
            ax.annotate(str(r["label"]), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    xs = [x for x, _ in points if math.isfinite(x) and x > 0]
    if xs:
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    ys = [y for _, y in points if math.isfinite(y)]
    if ys:
        lo, hi = min(ys), max(ys)
        pad = max(0.02, 0.1 * (hi - lo))
        ax.set_ylim(max(lo - pad, -0.01), hi + pad)
    front = pareto_front(points)
    if front:
        # The best AP reachable within a GMACs budget: a step up at each front point, held to the right edge.
        fx = [points[i][0] for i in front] + [ax.get_xlim()[1]]
        fy = [points[i][1] for i in front] + [points[front[-1]][1]]
        ax.plot(fx, fy, drawstyle="steps-post", color="0.35", linestyle="--", linewidth=1.2, zorder=2,
                label="Pareto front")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    size = rows[0].get("input_size") if rows else "?"
    ax.set_xlabel(f"GMACs (papers' convention, input {size}x{size}, log scale)")
    ax.set_ylabel("COCO keypoint AP (flip test)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title is None and rows:
        r = rows[0]
        title = f"AP vs GMACs: {r.get('data')}/{r.get('split')} ({r.get('images')} images, input {size})"
    ax.set_title(title or "AP vs GMACs")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(path, buf.getvalue())


def write_overlays(rows: Sequence[dict[str, Any]], folder: str | Path, score_thr: float = OVERLAY_SCORE_THR,
                   joint_thr: float = OVERLAY_JOINT_THR) -> list[Path]:
    """overlays/<image>.png: the ground truth, then each model's people (score >= `score_thr`, joints with value
    > `joint_thr`) on the same image, side by side, teacher(s) first, drawn by `distill.visualize`."""
    material = [r for r in rows if r.get("_overlays")]
    if not material:
        return []
    ordered = sorted(material, key=lambda r: r.get("kind") != "teacher")  # stable: teachers first
    written = []
    for k in range(min(len(r["_overlays"]) for r in ordered)):
        image_path, _, _, truth = ordered[0]["_overlays"][k]
        image = read_image(image_path)
        truth = truth[(truth[:, :, 2] > 0).any(axis=1)]  # people with at least one labelled joint
        panels = [draw_people(image, truth, ordered[0]["_spec"], scores=np.ones(len(truth)))]
        titles = [f"ground truth: {len(truth)} people"]
        for r in ordered:
            _, people, scores, _ = r["_overlays"][k]
            panels.append(draw_people(image, people, r["_spec"], score_thr, min_joint_value=joint_thr,
                                      scores=scores))
            titles.append(f"{r['label']}: {int((np.asarray(scores) >= score_thr).sum())} people")
        combined = side_by_side(panels, titles)
        ok, png = cv2.imencode(".png", cv2.cvtColor(combined, cv2.COLOR_RGB2BGR))
        if not ok:
            raise BenchError(f"could not encode the overlay of {image_path} as PNG")
        target = Path(folder) / f"{Path(image_path).stem}.png"
        write_bytes_atomic(target, png.tobytes())
        written.append(target)
    return written


def write_report(rows: Sequence[dict[str, Any]], out: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write results.csv, results.md, flops_vs_ap.png (and overlays/ when the rows carry overlay
    material) under `out`. Returns the paths written by name."""
    out = Path(out)
    if not rows:
        raise BenchError("no results to report")
    paths = {"csv": out / CSV_NAME, "md": out / MD_NAME, "png": out / PLOT_NAME}
    write_text_atomic(paths["csv"], _csv_text(rows))
    r = rows[0]
    heading = title or f"Benchmark: {r.get('data')}/{r.get('split')}"
    md = [f"# {heading}", "", format_table(rows), ""] + [f"- {n}" for n in _notes(rows)] + [""]
    write_text_atomic(paths["md"], "\n".join(md))
    plot_flops_vs_ap(rows, paths["png"])
    try:
        overlays = write_overlays(rows, out / OVERLAY_DIR)
    except Exception as exc:  # the numbers are written; a drawing problem must not lose them
        print(f"bench: overlays not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        overlays = []
    if overlays:
        paths["overlays"] = out / OVERLAY_DIR
    return paths


# ------------------------------------------------------------------------------------------ CLI
