"""The store format: file names, constants, errors and the small file helpers the writer and the
reader share (the layout itself is described in the package docstring)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from distill.errors import AEDistillError


FORMAT = "aedistill-teacher-cache"
FORMAT_VERSION = 1  # what a new store is written as unless asked for another
READABLE_VERSIONS = (1, 2)  # 2: quantised + zstd per image (distill.cache_codec)
HEADER_NAME = "header.json"
INDEX_NAME = "index.json"
LOCK_NAME = ".lock"
SHARD_DIR = "shards"
DTYPE = "float16"
NPY_DTYPE = np.dtype("<f2")
DEFAULT_SHARD_SIZE = 32
RANDOM_INIT_NOTE = (
    "RANDOM INIT: these maps come from an untrained teacher (--random-init); they are NOT teacher knowledge "
    "and are only good for demos and tests")
FRAME_DESCRIPTION = (
    "official test resize of the whole image (distill.geometry.inference_resize): short side -> input_size, "
    "long side rounded up to a multiple of 64, centred, zero padding")
PIXEL_CONVENTION = (
    "coordinate == pixel index (cv2.warpAffine); original -> input: frame.affine; input -> output k: scaling "
    "by map_w/input_w (1/stride, no half-pixel shift), as the training targets")



class StoreError(AEDistillError):
    """A teacher store is missing, damaged, incomplete, or was built differently than required."""


class StoreMismatchError(StoreError):
    """A store was built by another teacher / weights / input size / dataset than the one asked for."""


class NonFiniteOutputError(StoreError):
    """The teacher produced NaN or inf for an image while a store was being built."""


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: {what} is not valid JSON ({exc}); the store is damaged") from None


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class HashingWriter:
    def __init__(self, fh: Any) -> None:
        self.fh, self.h, self.n = fh, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        mv = memoryview(data).cast("B")
        self.h.update(mv)
        self.fh.write(mv)
        self.n += mv.nbytes
        return mv.nbytes


def shard_file(shard: int, output: int) -> str:
    return f"{SHARD_DIR}/shard-{shard:05d}.out{output}.npy"


def shard_blob_file(shard: int) -> str:
    """v2: the shard's per-image compressed blobs, concatenated in plan order."""
    return f"{SHARD_DIR}/shard-{shard:05d}.bin"


def shard_record(shard: int) -> str:
    return f"{SHARD_DIR}/shard-{shard:05d}.json"


def shard_files(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The files of a committed shard: its .npy per output, then its per-image record."""
    return list(entry["files"]) + ([entry["record"]] if "record" in entry else [])


def empty_index(num_shards: int) -> dict[str, Any]:
    return {"format": FORMAT + "-index", "format_version": FORMAT_VERSION, "num_shards": int(num_shards),
            "complete": False, "shards": {}}


def check_file_size(root: Path, f: Mapping[str, Any]) -> str | None:
    p = root / f["name"]
    if not p.is_file():
        return f"{p}: shard file is missing"
    size = p.stat().st_size
    if size != f["bytes"]:
        kind = "truncated" if size < f["bytes"] else "longer than recorded"
        return f"{p}: shard file is {size} bytes, the index says {f['bytes']} ({kind})"
    return None
