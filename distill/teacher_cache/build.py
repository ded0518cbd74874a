"""Running a frozen teacher over a dataset into a store (and estimating what that will cost)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from distill.amp import amp_dtype, autocast
from distill.cache_codec import encode_image
from distill.data.transforms import to_normalized_tensor
from distill.geometry import resize_for_test
from distill.progress import progress
from distill.teacher_cache.frame import CacheFrame, frame_from_resize
from distill.teacher_cache.identity import dataset_identity, make_header, sha256_file
from distill.teacher_cache.layout import (
    DEFAULT_SHARD_SIZE, FORMAT_VERSION, NonFiniteOutputError, StoreError, shard_files,
)
from distill.teacher_cache.writer import StoreWriter


@dataclass
class BuildSummary:
    images_total: int
    images_computed: int
    shards_total: int
    shards_computed: int
    shards_skipped: int
    seconds: float
    forward_seconds: float
    store_bytes: int
    complete: bool = True  # index.json lists every shard (with parts: all parts done and merged)

    @property
    def images_per_second(self) -> float:
        return self.images_computed / self.seconds if self.seconds > 0 else float("nan")


class _CacheInputs(torch.utils.data.Dataset):
    """(dataset index) -> (index, normalised test-resized image tensor, frame, width, height)."""

    def __init__(self, dataset: Any, indices: Sequence[int], input_size: int) -> None:
        self.dataset, self.indices, self.input_size = dataset, list(indices), int(input_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, CacheFrame, int, int]:
        index = self.indices[i]
        image = self.dataset.load_image(index)
        h, w = image.shape[:2]
        warped, resize = resize_for_test(image, self.input_size)
        frame = frame_from_resize(resize)
        return index, to_normalized_tensor(warped, self.dataset.mean, self.dataset.std), frame, w, h


def estimate_store(model: torch.nn.Module, dataset: Any, *, input_size: int, device: str | torch.device = "cpu",
                   amp: str | None = None, format_version: int = FORMAT_VERSION, sample: int = 4,
                   num_parts: int = 1, tag_bits: int | None = None) -> dict[str, float]:
    """Projected store size and build time for the whole split from the first `sample` images (the first one is
    a warm-up, not timed): teacher forward (one image per pass), float16 cast and, for v2, encoding. Images are
    spread evenly over the split's sizes only as far as the sample is, so take the figures as estimates."""
    device = torch.device(device)
    model.eval().to(device)
    n = min(len(dataset), max(2, int(sample)))
    inputs = _CacheInputs(dataset, range(n), input_size)
    heatmaps = [int(c) for c in output_layout_counts(model)]
    seconds, sizes = [], []
    for i in range(n):
        _, x, _, _, _ = inputs[i]
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(device, amp):
            outs = [o.float() for o in model(x[None].to(device))]
        halves = [o[0].to(torch.float16).cpu().numpy() for o in outs]
        if int(format_version) == 2:
            size = len(encode_image([h.astype(np.float32) for h in halves], heatmaps, tag_bits or 8)[0])
        else:
            size = sum(h.nbytes for h in halves)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first pass warms up
            seconds.append(time.perf_counter() - t0)
        sizes.append(size)
    total = len(dataset)
    per_image_s = float(np.mean(seconds))
    return {"images": total, "sampled": n, "bytes_per_image": float(np.mean(sizes)),
            "projected_bytes": float(np.mean(sizes)) * total, "seconds_per_image": per_image_s,
            "projected_seconds": per_image_s * total / max(1, int(num_parts))}


def output_layout_counts(model: torch.nn.Module) -> list[int]:
    """Heatmap channels per teacher output (from its contract), for the v2 encoder."""
    layout = getattr(model, "output_layout", None)
    if layout is None:
        raise StoreError("the teacher declares no output_layout; cannot tell heatmaps from tags")
    return [layout.num_joints if h else 0 for h in layout.heatmap_outputs]


def _as_list(items: Any) -> Any:
    return items


def build_store(
    out: str | os.PathLike[str],
    model: torch.nn.Module,
    dataset: Any,
    *,
    teacher_cfg: Any,
    weights: Mapping[str, Any],
    input_size: int,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    amp: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 0,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
    format_version: int = FORMAT_VERSION,
    num_parts: int = 1,
    part: int = 0,
    tag_bits: int | None = None,
) -> BuildSummary:
    """Run the frozen teacher over every image of `dataset` (a `CocoKeypointDataset`) into the store `out`.

    Resumable: committed shards are skipped. Refuses a store made with another teacher / weights / input
    size / amp / dataset / shard size. Images are batched by identical resized size within a shard (no padding,
    so a batch gives the same maps as single images up to float rounding, and a shard's bytes do not depend
    on which process builds it). `num_parts`/`part`: this process builds only shards s % num_parts == part
    (torchrun: one part per rank); the last part to finish writes index.json.
    """
    t0 = time.perf_counter()
    amp_dtype(amp, device)  # validates the name for this device
    if batch_size < 1 or shard_size < 1:
        raise ValueError("batch_size and shard_size must be >= 1")
    device = torch.device(device)
    log = log or (lambda msg: None)
    ids = list(dataset.ids)
    num_shards = math.ceil(len(ids) / shard_size)
    header = make_header(teacher_cfg=teacher_cfg, weights=weights, input_size=input_size, amp=amp,
                         dataset=dataset_identity(dataset), flip_index=dataset.flip_index, shard_size=shard_size,
                         format_version=format_version, tag_bits=tag_bits)
    writer = StoreWriter(out, header, num_shards, log=log, part=(part, num_parts) if num_parts > 1 else None)
    try:
        return _fill_store(writer, out, model, dataset, ids, shard_size=shard_size, batch_size=batch_size,
                           device=device, amp=amp, workers=workers, show_progress=show_progress, log=log, t0=t0)
    finally:
        writer.close()


def _fill_store(writer: StoreWriter, out: str | os.PathLike[str], model: torch.nn.Module, dataset: Any,
                ids: list[Any], *, shard_size: int, batch_size: int, device: torch.device, amp: str | None,
                workers: int, show_progress: bool, log: Callable[[str], None], t0: float) -> BuildSummary:
    input_size = int(writer.header["input_size"])
    num_shards = writer.num_shards
    layout = writer.header["outputs"]

    pending = [s for s in writer.shards if not writer.is_committed(s)]
    skipped = len(writer.shards) - len(pending)
    if skipped:
        log(f"resuming {out}: {skipped} of {len(writer.shards)} shards already committed, {len(pending)} to do")
    plan = [(s, list(range(s * shard_size, min(len(ids), (s + 1) * shard_size)))) for s in pending]
    order = [i for _, idx in plan for i in idx]

    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.to(device)
    loader = torch.utils.data.DataLoader(
        _CacheInputs(dataset, order, input_size), batch_size=None, shuffle=False, num_workers=int(workers),
        collate_fn=_as_list, persistent_workers=False, prefetch_factor=4 if workers else None)
    items = iter(loader)
    bar = progress(range(len(order)), desc=f"cache-teacher {Path(out).name}", total=len(order),
                   enabled=show_progress, unit="img")
    bar_iter = iter(bar)
    forward_s = 0.0
    computed = 0

    def run_batch(batch: list[tuple[int, torch.Tensor, CacheFrame, int, int]], results: dict[int, list[np.ndarray]]) -> None:
        nonlocal forward_s
        x = torch.stack([b[1] for b in batch]).to(device)
        tf = time.perf_counter()
        with torch.no_grad(), autocast(device, amp):
            outs = model(x)
        outs = [o.float() for o in outs]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        forward_s += time.perf_counter() - tf
        if len(outs) != len(layout):
            raise StoreError(f"the teacher returned {len(outs)} outputs, its config says {len(layout)}")
        in_w, in_h = batch[0][2].input_size
        for k, (o, lay) in enumerate(zip(outs, layout)):
            want = (len(batch), lay["channels"], in_h // lay["stride"], in_w // lay["stride"])
            if tuple(o.shape) != want:
                raise StoreError(f"teacher output {k} has shape {tuple(o.shape)}, expected {want}")
        halves = [o.to(torch.float16).cpu().numpy() for o in outs]
        for b, (index, _, _, _, _) in enumerate(batch):
            for k, (o, h16) in enumerate(zip(outs, halves)):
                where = (f"teacher output {k} (1/{layout[k]['stride']}) for image id {ids[index]} "
                         f"({dataset.image_path(index)})")
                finite = torch.isfinite(o[b])
                if not bool(finite.all()):
                    raise NonFiniteOutputError(
                        f"{where} has {int((~finite).sum())} NaN/inf values; nothing of its shard was written "
                        "(committed shards are kept); check the weights, --amp and the image")
                if not np.isfinite(h16[b]).all():
                    raise NonFiniteOutputError(
                        f"{where} exceeds the float16 range (max |value| {float(o[b].abs().max()):.4g}); "
                        "nothing of its shard was written")
            results[index] = [np.ascontiguousarray(h[b]) for h in halves]

    try:
        for shard, indices in plan:
            results: dict[int, list[np.ndarray]] = {}
            meta: dict[int, tuple[CacheFrame, int, int]] = {}
            buckets: dict[tuple[int, int], list[Any]] = {}
            for _ in indices:
                item = next(items)
                index, _, frame, w, h = item
                meta[index] = (frame, w, h)
                bucket = buckets.setdefault(frame.input_size, [])
                bucket.append(item)
                if len(bucket) >= batch_size:
                    run_batch(bucket, results)
                    buckets[frame.input_size] = []
                next(bar_iter, None)
            for bucket in buckets.values():
                if bucket:
                    run_batch(bucket, results)
            records = []
            for index in indices:
                frame, w, h = meta[index]
                info = dataset.image_info(index)
                records.append((ids[index], {"width": w, "height": h, "file_name": info.get("file_name", ""),
                                             "file_sha256": sha256_file(dataset.image_path(index)),
                                             "frame": frame.to_json()}, results[index]))
            writer.commit(shard, records, device=str(device))
            computed += len(indices)
        complete = writer.finish()
    finally:
        close = getattr(bar, "close", None)
        if close:
            close()
        del items
    seconds = time.perf_counter() - t0
    store_bytes = sum(f["bytes"] for s in writer.index["shards"].values() for f in shard_files(s))
    return BuildSummary(images_total=len(ids), images_computed=computed, shards_total=num_shards,
                        shards_computed=len(pending), shards_skipped=skipped, seconds=seconds,
                        forward_seconds=forward_s, store_bytes=store_bytes, complete=complete)
