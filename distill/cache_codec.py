"""Teacher store format v2: one image's teacher outputs as one compressed, self-describing blob.

Why: float16 maps (v1) take 4.76 MiB per COCO image at input 512, ~270 GB for train2017. Heatmaps are
mostly background and tag maps are smooth, so a few bits per value and a fast compressor suffice.

Per output map (channel) c of output k, values v:
* heatmap channels (the first `heatmaps` of the output): q = round((v - lo) / step) with lo = min(v),
  step = 2 * peak / 255: the error is <= step / 2 = peak / 255 for every pixel. peak = max(v), the map's
  peak; only for a map whose maximum is tiny against its largest magnitude (max(v) < max|v| / 128, e.g. a
  randomly initialised network) peak = max|v|. q fits uint8 when max(v) - lo <= 255 * step (no strongly
  negative values), else uint16 (always enough: at most 129 * 127.5 levels).
* tag channels: q = round((v - lo) / step) in uint8 with lo = min(v), step = (max(v) - lo) / 255: the error is
  <= step / 2; rows are then delta-coded along x (mod 256), which makes a smooth map mostly small numbers.
The blob is zstd (level `LEVEL`) of: per output, C float32 `lo`, C float32 `step`, C uint8 dtype codes, then
the C quantised maps (C-order). Shapes are not in the blob; the shard record keeps them.
zstd was chosen by measurement (`scripts/bench_cache_codec.py`: size, encode and decode time against zlib,
lzma and lz4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

SCHEME = "q8-peak255-delta-zstd"
LEVEL = 3
TAG_BITS = 8  # default tag quantisation (the store header records the one used)
_TINY = np.float32(1e-12)
_U8, _U16 = 0, 1


def _compressor() -> tuple:
    try:
        import zstandard
    except ImportError as exc:  # a dependency of the package; a clear message if an old venv lacks it
        raise ImportError("teacher store v2 needs the 'zstandard' package (pip install zstandard)") from exc
    return zstandard.ZstdCompressor(level=LEVEL), zstandard.ZstdDecompressor()


@dataclass(frozen=True)
class EncodeError:
    """Worst errors of one encoded image, measured by decoding it: heatmaps relative to each map's peak,
    tags absolute."""

    heat_rel: float
    tag_abs: float


def heat_peak(flat: np.ndarray) -> np.ndarray:
    """(C, N) heatmaps -> the per-map peak the error bound refers to (see the module docstring)."""
    hi = flat.max(axis=1)
    mag = np.abs(flat).max(axis=1)
    return np.maximum(np.where(hi >= mag / 128, hi, mag), _TINY).astype(np.float32)


def _quantise(maps: np.ndarray, heatmaps: int, tag_bits: int = 8
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    c = maps.shape[0]
    flat = maps.reshape(c, -1).astype(np.float32)
    lo = flat.min(axis=1)
    hi = flat.max(axis=1)
    step = np.empty(c, np.float32)
    step[:heatmaps] = np.float32(2.0) * heat_peak(flat[:heatmaps]) / np.float32(255.0)
    tag_levels = np.float32(2 ** int(tag_bits) - 1)
    step[heatmaps:] = np.maximum(hi[heatmaps:] - lo[heatmaps:], _TINY) / tag_levels
    codes = np.zeros(c, np.uint8)
    planes = []
    for i in range(c):
        q = np.rint((flat[i] - lo[i]) / step[i])
        if i < heatmaps and q.max() > 255:
            codes[i] = _U16
            planes.append(q.astype(np.uint16).reshape(maps.shape[1:]))
            continue
        if i >= heatmaps and tag_bits > 8:
            codes[i] = _U16
            q16 = np.clip(q, 0, tag_levels).astype(np.uint16).reshape(maps.shape[1:])
            planes.append(np.diff(q16, axis=1, prepend=np.uint16(0)).astype(np.uint16))  # mod-65536 deltas
            continue
        q8 = np.clip(q, 0, 255).astype(np.uint8).reshape(maps.shape[1:])
        if i >= heatmaps:
            q8 = np.diff(q8, axis=1, prepend=np.uint8(0)).astype(np.uint8)  # mod-256 deltas along x
        planes.append(q8)
    return lo.astype(np.float32), step, codes, planes


def quantised_bytes(maps: Sequence[np.ndarray], heatmaps: Sequence[int], tag_bits: int = TAG_BITS) -> bytes:
    """The uncompressed blob: per output, lo, step, dtype codes and the quantised planes (what zstd compresses)."""
    if not 1 <= int(tag_bits) <= 16:
        raise ValueError(f"tag_bits must be in 1..16, got {tag_bits}")
    parts: list[bytes] = []
    for m, h in zip(maps, heatmaps):
        lo, step, codes, planes = _quantise(np.asarray(m), int(h), int(tag_bits))
        parts += [lo.tobytes(), step.tobytes(), codes.tobytes()] + [p.tobytes() for p in planes]
    return b"".join(parts)


def encode_image(maps: Sequence[np.ndarray], heatmaps: Sequence[int], tag_bits: int = TAG_BITS
                 ) -> tuple[bytes, EncodeError]:
    """maps: (C_k, H_k, W_k) per output; heatmaps[k]: how many leading channels of output k are heatmaps;
    tag_bits: quantisation of the tag maps (8: uint8; 9..16: uint16 planes)."""
    comp, _ = _compressor()
    blob = comp.compress(quantised_bytes(maps, heatmaps, tag_bits))
    decoded = decode_image(blob, [np.asarray(m).shape for m in maps], heatmaps)
    heat_rel, tag_abs = 0.0, 0.0
    for m, d, h in zip(maps, decoded, heatmaps):
        m32 = np.asarray(m, dtype=np.float32)
        err = np.abs(d - m32).reshape(m32.shape[0], -1).max(axis=1)
        if h:
            peak = heat_peak(m32[:h].reshape(h, -1))
            heat_rel = max(heat_rel, float((err[:h] / peak).max()))
        if m32.shape[0] > h:
            tag_abs = max(tag_abs, float(err[h:].max()))
    return blob, EncodeError(heat_rel, tag_abs)


def decode_image(blob: bytes | memoryview, shapes: Sequence[Sequence[int]], heatmaps: Sequence[int]) -> list[np.ndarray]:
    """float32 (C_k, H_k, W_k) maps per output from `encode_image`'s blob."""
    _, dec = _compressor()
    raw = memoryview(dec.decompress(bytes(blob)))
    out, pos = [], 0
    for shape, h in zip(shapes, heatmaps):
        c, hh, ww = (int(s) for s in shape)
        lo = np.frombuffer(raw, np.float32, c, pos)
        step = np.frombuffer(raw, np.float32, c, pos + 4 * c)
        codes = np.frombuffer(raw, np.uint8, c, pos + 8 * c)
        pos += 9 * c
        maps = np.empty((c, hh, ww), np.float32)
        for i in range(c):
            dtype = np.uint16 if codes[i] == _U16 else np.uint8
            n = hh * ww
            q = np.frombuffer(raw, dtype, n, pos).reshape(hh, ww)
            pos += n * np.dtype(dtype).itemsize
            if i >= int(h):
                q = np.cumsum(q, axis=1, dtype=dtype)  # undo the mod-2^8 / 2^16 deltas
            maps[i] = q.astype(np.float32) * step[i] + lo[i]
        out.append(maps)
    if pos != len(raw):
        raise ValueError(f"teacher store v2 blob: {len(raw)} bytes decoded, {pos} expected from the shapes")
    return out
