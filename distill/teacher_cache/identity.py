"""What a store is: hashes of weights, files and id lists, the header that records the teacher, weights,
input size, layout and dataset, and the one wording for how a store differs from what is asked for."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch

import distill
from distill.cache_codec import LEVEL, SCHEME, TAG_BITS
from distill.teacher_cache.layout import (
    DTYPE, FORMAT, FORMAT_VERSION, FRAME_DESCRIPTION, PIXEL_CONVENTION, RANDOM_INIT_NOTE, READABLE_VERSIONS,
    StoreError,
)


# Files whose code decides the stored values (hashed into the header's code version).
_SOURCES = ("teachers/hrnet.py", "teachers/blocks.py", "distill/geometry.py", "distill/data/transforms.py",
            "distill/teacher_cache/frame.py", "distill/teacher_cache/writer.py", "distill/teacher_cache/build.py",
            "distill/cache_codec.py")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, names sorted: the weights' identity.

    Independent of the file container ("module." prefixes, extra checkpoint entries, zip vs legacy format).
    """
    sd = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    h = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def ids_sha256(ids: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps([str(i) for i in ids]).encode()).hexdigest()


def code_version() -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for rel in _SOURCES:
        p = repo / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.is_file() else b"<missing>")
    return {"aedistill": distill.__version__, "sources_sha256": h.hexdigest(), "torch": torch.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "python": platform.python_version()}


def output_layout(cfg: Any) -> list[dict[str, int]]:
    """Per teacher output: stride, channels, and how many are heatmaps / tags (heatmaps first)."""
    out = []
    for k in range(cfg.num_outputs):
        if 2 ** k > 4:
            raise StoreError(f"teacher output {k} would be finer than the input (stride 4 / 2^{k}); not supported")
        tags = cfg.tag_maps * cfg.tag_dim if cfg.with_ae_loss[k] else 0
        out.append({"index": k, "stride": 4 // 2 ** k, "channels": cfg.num_joints + tags,
                    "heatmaps": cfg.num_joints, "tags": tags})
    return out


def make_header(*, teacher_cfg: Any, weights: Mapping[str, Any], input_size: int, amp: str | None,
                dataset: Mapping[str, Any], flip_index: Sequence[int], shard_size: int,
                format_version: int = FORMAT_VERSION, tag_bits: int | None = None) -> dict[str, Any]:
    cfg_dict = teacher_cfg.to_dict() if hasattr(teacher_cfg, "to_dict") else dict(teacher_cfg)
    header = {
        "format": FORMAT,
        "format_version": int(format_version),
        "teacher": {"name": cfg_dict.get("name", ""), "config": cfg_dict},
        "weights": dict(weights),
        "input_size": int(input_size),
        "dtype": DTYPE,
        "amp": amp,
        "outputs": output_layout(teacher_cfg),
        "num_joints": int(cfg_dict["num_joints"]),
        "tag_per_joint": bool(cfg_dict["tag_per_joint"]),
        "flip_index": [int(i) for i in flip_index],
        "dataset": dict(dataset),
        "shard_size": int(shard_size),
        "frame": FRAME_DESCRIPTION,
        "pixel_convention": PIXEL_CONVENTION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code_version": code_version(),
    }
    if int(format_version) == 2:
        bits = int(tag_bits or TAG_BITS)
        header["dtype"] = "quantised"
        header["encoding"] = {
            "scheme": SCHEME, "zstd_level": LEVEL, "tag_bits": bits,
            "heatmaps": "uint8 (uint16 if needed), offset min, step 2*peak/255: |error| <= peak/255 per map",
            "tags": f"{bits}-bit, offset min, step (max-min)/{2 ** bits - 1}, delta-coded along x: |error| <= "
                    f"(max-min)/{2 * (2 ** bits - 1)} per map",
            "worst_error": "measured per image at build time: shard records' 'error', TeacherStore.worst_error()",
        }
    elif int(format_version) != 1:
        raise StoreError(f"unknown teacher store format version {format_version}; choose one of {READABLE_VERSIONS}")
    if weights.get("random_init"):
        header["note"] = RANDOM_INIT_NOTE
    return header


def flatten_fields(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten_fields(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten_fields(v, f"{prefix}[{i}]"))
        return out
    return {prefix: list(obj) if isinstance(obj, tuple) else obj}


def differs(what: str, stored: Any, expected: Any) -> str:
    """The one wording of a store difference, for the writer (resume) and the reader (open)."""
    return f"{what}: store {stored}, expected {expected}"


def describe_diff(a: Any, b: Any, limit: int = 4) -> str:
    fa, fb = flatten_fields(a), flatten_fields(b)
    keys = [k for k in sorted(set(fa) | set(fb)) if fa.get(k, "<absent>") != fb.get(k, "<absent>")]
    shown = "; ".join(differs(k, repr(fa.get(k, "<absent>")), repr(fb.get(k, "<absent>"))) for k in keys[:limit])
    return shown + (f"; ... ({len(keys)} fields differ)" if len(keys) > limit else "")


def config_differs(stored: Mapping[str, Any] | None, expected: Mapping[str, Any] | None) -> str:
    stored, expected = stored or {}, expected or {}
    return differs("teacher config", repr(stored.get("name")), f"{expected.get('name')!r} "
                   f"({describe_diff(stored, expected)})")


def short_hash(h: Any) -> str:
    return (str(h)[:12] + "...") if h else "none"


def identity_mismatches(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Human-readable differences in what decides the stored values (empty list: compatible)."""
    problems = []
    if stored.get("format") != FORMAT or stored.get("format_version") != wanted.get("format_version", FORMAT_VERSION):
        problems.append(differs("format", f"{stored.get('format')!r} v{stored.get('format_version')}",
                                f"{FORMAT!r} v{wanted.get('format_version', FORMAT_VERSION)}"))
    st, wt = stored.get("teacher", {}), wanted.get("teacher", {})
    if st.get("config") != wt.get("config"):
        problems.append(config_differs(st.get("config"), wt.get("config")))
    sw, ww = stored.get("weights", {}), wanted.get("weights", {})
    if bool(sw.get("random_init")) != bool(ww.get("random_init")) or sw.get("state_dict_sha256") != ww.get("state_dict_sha256"):
        def desc(w: Mapping[str, Any]) -> str:
            kind = f"random init (seed {w.get('seed')})" if w.get("random_init") else f"file {w.get('path')}"
            return f"{kind}, state_dict sha256 {short_hash(w.get('state_dict_sha256'))}"
        problems.append(differs("teacher weights", desc(sw), desc(ww)))
    for key, label in (("input_size", "input size"), ("dtype", "dtype"), ("amp", "amp"), ("outputs", "output layout"),
                       ("flip_index", "flip index"), ("shard_size", "shard size"), ("encoding", "v2 encoding")):
        if (key in wanted or key in stored) and stored.get(key) != wanted.get(key):
            problems.append(differs(label, repr(stored.get(key)), repr(wanted.get(key))))
    sd, wd = stored.get("dataset", {}), wanted.get("dataset")
    if wd is not None:
        for key in ("split", "num_images", "ids_sha256"):
            if sd.get(key) != wd.get(key):
                problems.append(differs(f"dataset {key}", repr(sd.get(key)), repr(wd.get(key))))
    return problems


def dataset_identity(dataset: Any) -> dict[str, Any]:
    return {"root": str(dataset.root), "split": dataset.split, "annotation_file": str(dataset.annotation_file),
            "num_images": len(dataset.ids), "ids_sha256": ids_sha256(dataset.ids)}


def weights_identity(model: torch.nn.Module, weights_path: str | os.PathLike[str] | None,
                     random_init: bool = False, seed: int | None = None) -> dict[str, Any]:
    """The header's "weights" record: file sha256 (if any) and the sha256 of the model's state_dict tensors."""
    if random_init:
        return {"random_init": True, "seed": seed, "path": None, "file_sha256": None,
                "state_dict_sha256": state_dict_sha256(model), "note": RANDOM_INIT_NOTE}
    if weights_path is None:
        raise StoreError("teacher weights are required (or pass random_init=True explicitly)")
    return {"random_init": False, "seed": None, "path": str(Path(weights_path).resolve()),
            "file_sha256": sha256_file(weights_path), "state_dict_sha256": state_dict_sha256(model)}
