"""Precomputed teacher outputs: a sharded, memory-mappable float16 store, built once, read during training.

Why: running a W32/W48 HigherHRNet teacher next to every student step costs more than the student itself.
Each training image is run through the frozen teacher ONCE, at a canonical frame; at training time
`distill.teacher_targets.CachedTeacher` warps the stored maps with the sample's augmentation.

Canonical frame (per image)
    The official HigherHRNet test resize of the whole image (`distill.geometry.inference_resize`): short side
    -> `input_size`, long side rounded up to a multiple of 64, image centred, the rest zero (black) padding.
    The teacher's outputs are stored at their native resolutions: output k at 1/`stride_k` of that input
    (stride 4: J heatmaps + T tags; stride 2: J heatmaps, for the official W32/W48 and the tiny teacher).

Pixel convention (the one the official *training* targets use, so the one the teacher was trained in)
    A point's coordinate equals its pixel index: pixel (i, j) is the point x = i, y = j (cv2.warpAffine's
    convention). Original image -> input: `frame.affine` (2x3, the `inference_resize` affine). Input ->
    output k: a pure scaling by map_w / input_w (= 1/stride, no half-pixel shift), exactly as the training
    augmentation's per-resolution matrices are scalings of each other (`distill.data.transforms`), i.e.
    `frame.output_affine(k) = affine / stride_k`. (The official *test* code upsamples with
    align_corners=False, which is a different convention; it is not used here.)

Store layout (STORE/)
    header.json                         identity + provenance, written once when the store is created:
                                        teacher name + full config dict, weights (file sha256 and sha256 of the
                                        state_dict tensors, or random_init + seed with a loud note), input size,
                                        dtype, amp, output layout (stride, channels, heatmaps, tags), flip index,
                                        dataset (root, split, number of images, sha256 of the ordered id list),
                                        shard size, creation time, code version.
    index.json                          the commit log (image id -> shard), rewritten atomically after each
                                        shard: {"num_shards": S, "complete": bool, "shards": {"<s>": {
                                        "images": [image ids], "files": [{"name", "bytes", "numel", "sha256"}
                                        per output], "record": {"name", "bytes", "sha256"}, "device",
                                        "committed"}}}. Small (about 0.6 kB per shard), so rewriting it per
                                        commit stays cheap for COCO-sized splits.
    .lock                               flock held by the one process writing the store
    shards/shard-SSSSS.outK.npy         one 1-D little-endian float16 .npy per shard and output: the C*H*W maps
                                        of the shard's images concatenated in plan order (C-order, (C, H, W)).
                                        Open with np.load(mmap_mode="r"); data offset is 64-byte aligned.
    shards/shard-SSSSS.json             the shard's per-image record (image id -> offset, shape, frame):
                                        {"shard": s, "images": {"<image id>": {"shard", "offsets": [per
                                        output, in elements], "shapes": [[C, H, W] per output], "width",
                                        "height", "file_name", "frame": {"center", "scale", "input_size":
                                        [w, h], "affine": 2x3}}}}; read lazily, one shard at a time.

Shard plan: the dataset's image ids in dataset order, cut into runs of `shard_size`; shard s holds ids
[s*N, (s+1)*N). Commit protocol: every .npy of the shard and then its .json record are written to a temp
file, fsynced and renamed (`distill.atomic`), the folder fsynced, then index.json is replaced atomically. A shard exists iff it is
in index.json; a rerun skips committed shards, deletes stray temp files and overwrites shard files that are
not in the index (left by a kill between the rename and the index update). A committed shard whose files
have the wrong size (truncated) is dropped from the index and redone by the next build.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

import distill
from distill.amp import amp_dtype, autocast
from distill.atomic import atomic_path, write_json_atomic
from distill.errors import AEDistillError, ensure_writable_dir
from distill.geometry import inference_resize, resize_for_test
from distill.progress import progress

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

# Files whose code decides the stored values (hashed into the header's code version).
_SOURCES = ("teachers/hrnet.py", "teachers/blocks.py", "distill/geometry.py", "distill/data/transforms.py",
            "distill/teacher_cache.py")


class StoreError(AEDistillError):
    """A teacher store is missing, damaged, incomplete, or was built differently than required."""


class StoreMismatchError(StoreError):
    """A store was built by another teacher / weights / input size / dataset than the one asked for."""


class NonFiniteOutputError(StoreError):
    """The teacher produced NaN or inf for an image while a store was being built."""


# ------------------------------------------------------------------------------------------------ hashing
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
    import cv2

    repo = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in _SOURCES:
        p = repo / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.is_file() else b"<missing>")
    return {"aedistill": distill.__version__, "sources_sha256": h.hexdigest(), "torch": torch.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "python": platform.python_version()}


# ------------------------------------------------------------------------------------------------ frames
@dataclass(frozen=True)
class CacheFrame:
    """Where an image sits in the cached maps (see the module docstring for the pixel convention)."""

    center: tuple[float, float]  # original-image pixels
    scale: tuple[float, float]  # (w, h) in 200-px units (official test convention)
    input_size: tuple[int, int]  # (w, h) of the teacher input
    affine: np.ndarray  # (2, 3) float64: original pixels -> input pixels

    def output_affine(self, map_w: int, map_h: int) -> np.ndarray:
        """(2, 3): original pixels -> pixels of an output map of (map_w, map_h) (a scaling of `affine`)."""
        in_w, in_h = self.input_size
        sx, sy = map_w / in_w, map_h / in_h
        if not math.isclose(sx, sy, rel_tol=1e-9):
            raise StoreError(f"output map {map_w}x{map_h} is not a uniform scaling of the input {in_w}x{in_h}")
        return self.affine * sx

    def to_json(self) -> dict[str, Any]:
        return {"center": [float(c) for c in self.center], "scale": [float(s) for s in self.scale],
                "input_size": [int(v) for v in self.input_size],
                "affine": [[float(v) for v in row] for row in np.asarray(self.affine)]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CacheFrame":
        return cls(center=tuple(d["center"]), scale=tuple(d["scale"]), input_size=tuple(d["input_size"]),
                   affine=np.asarray(d["affine"], dtype=np.float64))


def _frame_from_resize(r: Any) -> CacheFrame:
    return CacheFrame(center=(float(r.center[0]), float(r.center[1])), scale=(float(r.scale[0]), float(r.scale[1])),
                      input_size=(int(r.size[0]), int(r.size[1])), affine=np.asarray(r.input_affine(), np.float64))


def canonical_frame(width: int, height: int, input_size: int) -> CacheFrame:
    """The frame an image of `width` x `height` is cached at (the official test resize to `input_size`)."""
    return _frame_from_resize(inference_resize(int(width), int(height), int(input_size)))


# ------------------------------------------------------------------------------------------------ header
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
        from distill.cache_codec import LEVEL, SCHEME, TAG_BITS

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


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: list(obj) if isinstance(obj, tuple) else obj}


def _diff(a: Any, b: Any, limit: int = 4) -> str:
    fa, fb = _flatten(a), _flatten(b)
    keys = [k for k in sorted(set(fa) | set(fb)) if fa.get(k, "<absent>") != fb.get(k, "<absent>")]
    shown = "; ".join(f"{k}: store {fa.get(k, '<absent>')!r} vs now {fb.get(k, '<absent>')!r}" for k in keys[:limit])
    return shown + (f"; ... ({len(keys)} fields differ)" if len(keys) > limit else "")


def _short(h: Any) -> str:
    return (str(h)[:12] + "...") if h else "none"


def identity_mismatches(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Human-readable differences in what decides the stored values (empty list: compatible)."""
    problems = []
    if stored.get("format") != FORMAT or stored.get("format_version") != wanted.get("format_version", FORMAT_VERSION):
        problems.append(f"format {stored.get('format')!r} v{stored.get('format_version')} "
                        f"(now {FORMAT!r} v{wanted.get('format_version', FORMAT_VERSION)})")
    st, wt = stored.get("teacher", {}), wanted.get("teacher", {})
    if st.get("config") != wt.get("config"):
        problems.append(f"teacher config: store {st.get('name')!r}, now {wt.get('name')!r} "
                        f"({_diff(st.get('config'), wt.get('config'))})")
    sw, ww = stored.get("weights", {}), wanted.get("weights", {})
    if bool(sw.get("random_init")) != bool(ww.get("random_init")) or sw.get("state_dict_sha256") != ww.get("state_dict_sha256"):
        def desc(w: Mapping[str, Any]) -> str:
            kind = f"random init (seed {w.get('seed')})" if w.get("random_init") else f"file {w.get('path')}"
            return f"{kind}, state_dict sha256 {_short(w.get('state_dict_sha256'))}"
        problems.append(f"teacher weights: store {desc(sw)} vs now {desc(ww)}")
    for key, label in (("input_size", "input size"), ("dtype", "dtype"), ("amp", "amp"), ("outputs", "output layout"),
                       ("flip_index", "flip index"), ("shard_size", "shard size"), ("encoding", "v2 encoding")):
        if (key in wanted or key in stored) and stored.get(key) != wanted.get(key):
            problems.append(f"{label}: store {stored.get(key)!r} vs now {wanted.get(key)!r}")
    sd, wd = stored.get("dataset", {}), wanted.get("dataset")
    if wd is not None:
        for key in ("split", "num_images", "ids_sha256"):
            if sd.get(key) != wd.get(key):
                problems.append(f"dataset {key}: store {sd.get(key)!r} vs now {wd.get(key)!r}")
    return problems


# ------------------------------------------------------------------------------------------------ io helpers
def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: {what} is not valid JSON ({exc}); the store is damaged") from None


def _fsync_dir(path: Path) -> None:
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


class _HashingWriter:
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


def _shard_files(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The files of a committed shard: its .npy per output, then its per-image record."""
    return list(entry["files"]) + ([entry["record"]] if "record" in entry else [])


def _empty_index(num_shards: int) -> dict[str, Any]:
    return {"format": FORMAT + "-index", "format_version": FORMAT_VERSION, "num_shards": int(num_shards),
            "complete": False, "shards": {}}


def _check_file_size(root: Path, f: Mapping[str, Any]) -> str | None:
    p = root / f["name"]
    if not p.is_file():
        return f"{p}: shard file is missing"
    size = p.stat().st_size
    if size != f["bytes"]:
        kind = "truncated" if size < f["bytes"] else "longer than recorded"
        return f"{p}: shard file is {size} bytes, the index says {f['bytes']} ({kind})"
    return None


# ------------------------------------------------------------------------------------------------ writer
class StoreWriter:
    """Creates or resumes a store and commits shards atomically (used by `build_store`; usable by tests)."""

    def __init__(self, root: str | os.PathLike[str], header: Mapping[str, Any], num_shards: int,
                 log: Callable[[str], None] | None = None, part: tuple[int, int] | None = None) -> None:
        """`part=(i, n)`: this process builds shards s with s % n == i, under its own lock and index file
        (`index.part-i-of-n.json`); `merge_parts` joins the part indexes into index.json once all are done."""
        self.root = Path(root)
        self.log = log or (lambda msg: None)
        self.header = dict(header)
        self.part = part
        if part is not None and not (part[1] >= 1 and 0 <= part[0] < part[1]):
            raise StoreError(f"--part {part[0]} of --num-parts {part[1]}: expected 0 <= part < num_parts")
        self.index_name = INDEX_NAME if part is None else part_index_name(*part)
        self.shards = [s for s in range(num_shards) if part is None or s % part[1] == part[0]]
        hpath = self.root / HEADER_NAME
        if not hpath.is_file():
            if self.root.exists() and any(not p.name.startswith((LOCK_NAME, SHARD_DIR, ".")) and
                                          not p.name.startswith("index.part-") for p in self.root.iterdir()):
                raise StoreError(f"{self.root}: exists, is not empty and has no {HEADER_NAME}: not a teacher store; "
                                 "choose an empty or new folder")
            ensure_writable_dir(self.root, "teacher store")
        self._lock()
        try:
            self._open_header(hpath)
            self._open_index(num_shards)
        except BaseException:
            self.close()
            raise

    def _open_index(self, num_shards: int) -> None:
        (self.root / SHARD_DIR).mkdir(exist_ok=True)
        # Leftovers of a killed run: temp files are never part of the store. With parts, only this part's own
        # (other writers may be mid-write).
        mine = None if self.part is None else tuple(f".shard-{s:05d}." for s in self.shards) + (f".{self.index_name}.",)
        for d in (self.root, self.root / SHARD_DIR):
            for tmp in d.glob(".*.tmp"):
                if mine is None or tmp.name.startswith(mine):
                    tmp.unlink(missing_ok=True)
                    self.log(f"removed a partial file of an interrupted run: {tmp.name}")
        ipath = self.root / self.index_name
        self.index = _read_json(ipath, "store index") if ipath.is_file() else _empty_index(num_shards)
        if self.index.get("num_shards") != num_shards:
            raise StoreMismatchError(f"{self.root}: index has {self.index.get('num_shards')} shards, the plan {num_shards}")
        # Committed shards whose files were damaged after the commit: drop them so they are redone.
        for key in list(self.index["shards"]):
            bad = [msg for f in _shard_files(self.index["shards"][key]) if (msg := _check_file_size(self.root, f))]
            if bad:
                self.log(f"shard {key} is damaged and will be rebuilt: {bad[0]}")
                self._drop_shard(key)
        self.num_shards = num_shards
        if self.index.get("complete") and not self._all_mine_committed():
            self.index["complete"] = False

    def _all_mine_committed(self) -> bool:
        return all(str(s) in self.index["shards"] for s in self.shards)

    def _open_header(self, hpath: Path) -> None:
        if not hpath.is_file():
            write_json_atomic(hpath, self.header, indent=1)
            return
        stored = _read_json(hpath, "store header")
        problems = identity_mismatches(stored, self.header)
        if problems:
            raise StoreMismatchError(
                f"{self.root}: refusing to resume: this store was built differently:\n  " + "\n  ".join(problems)
                + "\n  use another --out, or delete the store to rebuild it")
        if stored.get("code_version", {}).get("sources_sha256") != self.header["code_version"]["sources_sha256"]:
            self.log(f"note: {self.root} was started by another version of the code "
                     f"({stored.get('code_version', {}).get('aedistill')}, sources "
                     f"{_short(stored.get('code_version', {}).get('sources_sha256'))}); resuming anyway")
        self.header = stored

    def _lock(self) -> None:
        """One writer per store: an exclusive flock on STORE/.lock (released by the OS when the process dies)."""
        import fcntl

        name = LOCK_NAME if self.part is None else f"{LOCK_NAME}.part-{self.part[0]}-of-{self.part[1]}"
        self._lock_fh = open(self.root / name, "a+")
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            which = "" if self.part is None else f" (part {self.part[0]} of {self.part[1]})"
            raise StoreError(f"{self.root}: another `distill cache-teacher` process is writing this store{which}") from None

    def close(self) -> None:
        fh = getattr(self, "_lock_fh", None)
        if fh is not None and not fh.closed:
            fh.close()  # closing the file releases the flock

    def _drop_shard(self, key: str) -> None:
        self.index["shards"].pop(key)
        self.index["complete"] = False
        write_json_atomic(self.root / self.index_name, self.index)

    def is_committed(self, shard: int) -> bool:
        return str(shard) in self.index["shards"]

    def commit(self, shard: int, records: Sequence[tuple[Any, Mapping[str, Any], Sequence[np.ndarray]]],
               device: str = "") -> None:
        """Write shard `shard`: records = [(image_id, entry (width/height/file_name/frame), [maps per output])]."""
        if int(self.header.get("format_version", 1)) == 2:
            files, per_image = self._write_blobs(shard, records)
        else:
            files, per_image = self._write_npy(shard, records)
        ids = [i if isinstance(i, (int, str)) else str(i) for i, _, _ in records]
        images = {str(image_id): {"shard": int(shard), **per_image[r], "shapes": [list(m.shape) for m in maps],
                                  **entry} for r, (image_id, entry, maps) in enumerate(records)}
        record_name = shard_record(shard)
        data = json.dumps({"shard": int(shard), "images": images}).encode("utf-8")
        with atomic_path(self.root / record_name) as tmp:
            tmp.write_bytes(data)
        record = {"name": record_name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        _fsync_dir(self.root / SHARD_DIR)
        # The commit point: the shard exists from the moment index.json lists it.
        self.index["shards"][str(shard)] = {
            "images": ids, "files": files, "record": record, "device": device,
            "committed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.index["complete"] = self._all_mine_committed()
        write_json_atomic(self.root / self.index_name, self.index)
        _fsync_dir(self.root)

    def _write_npy(self, shard: int, records: Sequence[tuple[Any, Mapping[str, Any], Sequence[np.ndarray]]]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """v1: one float16 .npy per output; per image its element offset in each."""
        num_outputs = len(self.header["outputs"])
        files, offsets = [], [[0] * num_outputs for _ in records]
        for k in range(num_outputs):
            name = shard_file(shard, k)
            total = 0
            for r, (_, _, maps) in enumerate(records):
                offsets[r][k] = total
                total += int(maps[k].size)
            with atomic_path(self.root / name) as tmp:
                with open(tmp, "wb") as fh:
                    w = _HashingWriter(fh)
                    np.lib.format.write_array_header_1_0(
                        w, {"descr": np.lib.format.dtype_to_descr(NPY_DTYPE), "fortran_order": False, "shape": (total,)})
                    for _, _, maps in records:
                        w.write(np.ascontiguousarray(maps[k], dtype=NPY_DTYPE))
                    size = w.n
            files.append({"name": name, "bytes": size, "numel": total, "sha256": w.h.hexdigest()})
        return files, [{"offsets": o} for o in offsets]

    def _write_blobs(self, shard: int, records: Sequence[tuple[Any, Mapping[str, Any], Sequence[np.ndarray]]]
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """v2: one .bin of per-image blobs (`distill.cache_codec`); per image its byte range and measured error."""
        from distill.cache_codec import encode_image

        heatmaps = [int(o["heatmaps"]) for o in self.header["outputs"]]
        name = shard_blob_file(shard)
        per_image = []
        with atomic_path(self.root / name) as tmp:
            with open(tmp, "wb") as fh:
                w = _HashingWriter(fh)
                for _, _, maps in records:
                    blob, err = encode_image([np.asarray(m, dtype=np.float32) for m in maps], heatmaps,
                                             int(self.header["encoding"].get("tag_bits", 8)))
                    per_image.append({"blob": [w.n, len(blob)],
                                      "error": {"heat_rel": err.heat_rel, "tag_abs": err.tag_abs}})
                    w.write(blob)
                size = w.n
        return [{"name": name, "bytes": size, "numel": size, "sha256": w.h.hexdigest()}], per_image

    def finish(self) -> bool:
        """Mark the index complete when every shard of this writer is committed; with parts, merge the part
        indexes when all parts are done. Returns whether the store is now complete (index.json)."""
        complete = self._all_mine_committed()
        if complete != self.index.get("complete"):
            self.index["complete"] = complete
            write_json_atomic(self.root / self.index_name, self.index)
        if self.part is None:
            return complete
        return merge_parts(self.root, self.part[1], self.num_shards, self.log)


def part_index_name(part: int, num_parts: int) -> str:
    return f"index.part-{part}-of-{num_parts}.json"


def merge_parts(root: str | os.PathLike[str], num_parts: int, num_shards: int,
                log: Callable[[str], None] | None = None) -> bool:
    """Join the part indexes into index.json when every part is complete (idempotent: any part may run it,
    the result is the same). Returns whether index.json is complete."""
    root = Path(root)
    shards: dict[str, Any] = {}
    done = 0
    for i in range(num_parts):
        path = root / part_index_name(i, num_parts)
        if not path.is_file():
            continue
        part = _read_json(path, f"part {i} index")
        if part.get("num_shards") != num_shards:
            raise StoreMismatchError(f"{path}: planned {part.get('num_shards')} shards, this build {num_shards}")
        shards.update(part["shards"])
        done += bool(part.get("complete"))
    if done < num_parts:
        (log or (lambda m: None))(f"{root}: {done} of {num_parts} parts complete; index.json is written when all are")
        return False
    index = _empty_index(num_shards)
    index["shards"] = {k: shards[k] for k in sorted(shards, key=int)}
    index["complete"] = len(index["shards"]) == num_shards
    index["parts"] = num_parts
    write_json_atomic(root / INDEX_NAME, index)
    return bool(index["complete"])


# ------------------------------------------------------------------------------------------------ reader
class TeacherStore:
    """Read-only access to a store: `maps(image_id)` -> float16 (C, H, W) memmap views, `frame(image_id)`.

    `verify`: "size" (default: every shard file must have its recorded byte size, a cheap stat),
    "sha256" (also read every file and compare its checksum), or "none". Shard files are memory-mapped
    lazily, per process (safe to pass to DataLoader workers: open mappings are not pickled).
    """

    def __init__(self, root: str | os.PathLike[str], verify: str = "size", allow_incomplete: bool = False) -> None:
        self.root = Path(root)
        if verify not in ("size", "sha256", "none"):
            raise ValueError(f"verify must be 'size', 'sha256' or 'none', got {verify!r}")
        if not (self.root / HEADER_NAME).is_file():
            raise StoreError(f"{self.root}: not a teacher store (no {HEADER_NAME}); build one with `distill cache-teacher`")
        self.header = _read_json(self.root / HEADER_NAME, "store header")
        if self.header.get("format") != FORMAT or self.header.get("format_version") not in READABLE_VERSIONS:
            raise StoreError(f"{self.root}: format {self.header.get('format')!r} v{self.header.get('format_version')}, "
                             f"this code reads {FORMAT!r} v{' and v'.join(map(str, READABLE_VERSIONS))}")
        self.version = int(self.header["format_version"])
        if not (self.root / INDEX_NAME).is_file():
            parts = sorted(p.name for p in self.root.glob("index.part-*-of-*.json"))
            if parts:
                raise StoreError(f"{self.root}: built in parts ({', '.join(parts)}) and not merged yet: index.json is "
                                 "written by the last part to finish; run the missing parts (same arguments, their "
                                 "--part)")
            raise StoreError(f"{self.root}: no {INDEX_NAME}: no shard was ever committed; run `distill cache-teacher` "
                             "again with the same arguments")
        self.index = _read_json(self.root / INDEX_NAME, "store index")
        if not self.index.get("complete") and not allow_incomplete:
            raise StoreError(
                f"{self.root}: incomplete store ({len(self.index['shards'])} of {self.index['num_shards']} shards "
                "committed); rerun the same `distill cache-teacher` command to finish it (it resumes)")
        self._shard_of: dict[str, int] = {str(i): int(key) for key in sorted(self.index["shards"], key=int)
                                          for i in self.index["shards"][key]["images"]}
        self._records: dict[int, dict[str, Any]] = {}
        self._arrays: dict[tuple[int, int], np.ndarray] = {}
        self._files_checked: set[str] = set()
        if verify != "none":
            self.verify(checksum=verify == "sha256")

    # pickling for DataLoader workers: mappings are reopened in each process
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        state["_records"] = {}
        return state

    @property
    def outputs(self) -> list[dict[str, int]]:
        return self.header["outputs"]

    @property
    def num_joints(self) -> int:
        return int(self.header["num_joints"])

    @property
    def flip_index(self) -> list[int]:
        return list(self.header["flip_index"])

    @property
    def input_size(self) -> int:
        return int(self.header["input_size"])

    @property
    def ids(self) -> list[str]:
        return list(self._shard_of)

    def __len__(self) -> int:
        return len(self._shard_of)

    def __contains__(self, image_id: Any) -> bool:
        return str(image_id) in self._shard_of

    def nbytes(self) -> int:
        """Bytes of all shard files (maps and per-image records)."""
        return sum(f["bytes"] for s in self.index["shards"].values() for f in _shard_files(s))

    def verify(self, checksum: bool = True, finite: bool = False) -> None:
        """Raise `StoreError` naming the first bad file: wrong size (truncated) or, with checksum, wrong sha256;
        with `finite`, also read every image's maps and name the first holding NaN/inf."""
        self._verify_files(checksum)
        if finite:
            for image_id in self.ids:
                self.maps(image_id, check_finite=True)

    def _verify_files(self, checksum: bool) -> None:
        for key in sorted(self.index["shards"], key=int):
            for f in _shard_files(self.index["shards"][key]):
                msg = _check_file_size(self.root, f)
                if msg:
                    raise StoreError(f"{msg}: the store is damaged; rerun `distill cache-teacher` with the same "
                                     "arguments to rebuild the damaged shard")
                if checksum:
                    got = sha256_file(self.root / f["name"])
                    if got != f["sha256"]:
                        raise StoreError(f"{self.root / f['name']}: sha256 {got[:12]}... differs from the index "
                                         f"({f['sha256'][:12]}...): the shard is corrupt; delete it and rerun "
                                         "`distill cache-teacher` with the same arguments")

    def _record(self, shard: int) -> dict[str, Any]:
        rec = self._records.get(shard)
        if rec is None:
            meta = self.index["shards"][str(shard)]["record"]
            path = self.root / meta["name"]
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise StoreError(f"{path}: shard record unreadable ({exc}); the store is damaged") from None
            if len(data) != meta["bytes"]:
                raise StoreError(f"{path}: shard record is {len(data)} bytes, the index says {meta['bytes']}; "
                                 "the store is damaged")
            try:
                rec = json.loads(data.decode("utf-8"))["images"]
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"{path}: shard record is not valid ({exc}); the store is damaged") from None
            self._records[shard] = rec
        return rec

    def entry(self, image_id: Any) -> dict[str, Any]:
        """Per-image record: shard, offsets and shapes per output, width, height, file_name, frame."""
        shard = self._shard_of.get(str(image_id))
        if shard is None:
            raise StoreError(f"{self.root}: image id {image_id} is not in the teacher store "
                             f"({len(self)} images; built from split {self.header['dataset'].get('split')!r})")
        return self._record(shard)[str(image_id)]

    def frame(self, image_id: Any) -> CacheFrame:
        return CacheFrame.from_json(self.entry(image_id)["frame"])

    def _array(self, shard: int, k: int) -> np.ndarray:
        arr = self._arrays.get((shard, k))
        if arr is None:
            f = self.index["shards"][str(shard)]["files"][k]
            path = self.root / f["name"]
            try:
                if self.version == 2:  # raw bytes of the blobs; one image is decompressed at a time
                    arr = np.memmap(path, dtype=np.uint8, mode="r") if f["bytes"] else np.zeros(0, np.uint8)
                    self._arrays[(shard, k)] = arr
                    return arr
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise StoreError(f"{path}: unreadable shard file ({exc}); the store is damaged") from None
            if arr.dtype != NPY_DTYPE or arr.shape != (f["numel"],):
                raise StoreError(f"{path}: holds {arr.dtype} {arr.shape}, the index says {DTYPE} ({f['numel']},)")
            self._arrays[(shard, k)] = arr
        return arr

    def maps(self, image_id: Any, check_finite: bool = False) -> list[np.ndarray]:
        """The teacher outputs of an image at the canonical frame: float16 (C, H, W) read-only views.

        `check_finite` (cheap: one pass over the image's maps; training uses it) raises `StoreError` naming the
        shard file and image when a value is NaN/inf, instead of letting it reach the loss."""
        e = self.entry(image_id)
        if self.version == 2:
            views = self._decode_blob(image_id, e)
        else:
            views = [self._array(e["shard"], k)[off:off + int(np.prod(shape))].reshape(shape)
                     for k, (off, shape) in enumerate(zip(e["offsets"], e["shapes"]))]
        out = []
        for k, view in enumerate(views):
            if check_finite and not np.isfinite(view).all():
                name = self.index["shards"][str(e["shard"])]["files"][k]["name"]
                raise StoreError(f"{self.root / name}: image id {image_id} ({e.get('file_name', '?')}) holds "
                                 f"{int((~np.isfinite(view)).sum())} NaN/inf value(s) in teacher output {k}; the store "
                                 "is damaged or the teacher diverged: rebuild it with `distill cache-teacher`")
            out.append(view)
        return out

    def _decode_blob(self, image_id: Any, e: Mapping[str, Any]) -> list[np.ndarray]:
        from distill.cache_codec import decode_image

        start, length = (int(v) for v in e["blob"])
        raw = self._array(e["shard"], 0)[start:start + length]
        try:
            return decode_image(memoryview(raw), e["shapes"], [int(o["heatmaps"]) for o in self.outputs])
        except Exception as exc:  # zstd/format errors: name the file and image
            name = self.index["shards"][str(e["shard"])]["files"][0]["name"]
            raise StoreError(f"{self.root / name}: image id {image_id}: blob does not decode ({exc}); the store is "
                             "damaged: rebuild it with `distill cache-teacher`") from None

    def worst_error(self) -> dict[str, float]:
        """v2: the largest per-image errors measured at build time (heatmaps relative to each map's peak, tags
        absolute); v1 (float16): the float16 rounding bound, relative."""
        if self.version != 2:
            return {"heat_rel": 2.0 ** -11, "tag_rel": 2.0 ** -11}
        worst = {"heat_rel": 0.0, "tag_abs": 0.0}
        for key in self.index["shards"]:
            for rec in self._record(int(key)).values():
                for name in worst:
                    worst[name] = max(worst[name], float(rec["error"][name]))
        return worst

    def _image_mismatches(self, dataset: Any, show: int = 3) -> list[str]:
        """Same ids is not the same images: every image's file name and size must match its record."""
        bad = []
        for index, image_id in enumerate(dataset.ids):
            if str(image_id) not in self:
                continue  # images the store never held (e.g. without people) are reported when sampled
            e, info = self.entry(image_id), dataset.image_info(index)
            got = (e.get("file_name"), e.get("width"), e.get("height"))
            want = (info.get("file_name"), info.get("width"), info.get("height"))
            if got != want:
                bad.append(f"image id {image_id}: store {got[0]} {got[1]}x{got[2]}, dataset {want[0]} {want[1]}x{want[2]}")
        if not bad:
            return []
        return [f"dataset: {len(bad)} image(s) differ from the store's records (same ids, other images?): "
                + "; ".join(bad[:show]) + (" ..." if len(bad) > show else "")]

    def check_image_file(self, image_id: Any, path: str | os.PathLike[str]) -> None:
        """The image file a sample was read from is the one the store's maps were computed on (by sha256;
        stores built before the hash was recorded are not checked)."""
        key = str(image_id)
        if key in self._files_checked:  # once per image and process: every epoch re-reads the same files
            return
        want = self.entry(image_id).get("file_sha256")
        got = sha256_file(path) if want is not None else None
        if got != want:
            raise StoreMismatchError(f"{self.root}: image id {image_id}: {path} is not the image the teacher store "
                                     f"was built on (file sha256 {_short(got)}, store {_short(want)}); "
                                     "rebuild the store for this dataset")
        self._files_checked.add(key)

    def check_matches(self, teacher: Any = None, weights_path: str | os.PathLike[str] | None = None,
                      weights_sha256: str | None = None, input_size: int | None = None,
                      dataset: Any = None) -> None:
        """Raise `StoreMismatchError` naming every difference from the expected teacher / weights / input size.

        `teacher`: a `HigherHRNetConfig`, a registered name / yaml path, or a config dict. `weights_path`: the
        checkpoint file (compared by file sha256); `weights_sha256`: a file or state_dict sha256.
        """
        problems = []
        if teacher is not None:
            if isinstance(teacher, (str, os.PathLike)):
                from distill.models import model_config

                teacher = model_config("teacher", teacher)
            cfg = teacher.to_dict() if hasattr(teacher, "to_dict") else dict(teacher)
            stored = self.header["teacher"]["config"]
            if stored != cfg:
                problems.append(f"teacher config: store {stored.get('name')!r}, expected {cfg.get('name')!r} "
                                f"({_diff(stored, cfg)})")
        w = self.header["weights"]
        if weights_path is not None:
            got = sha256_file(weights_path)
            if got != w.get("file_sha256"):
                kind = (f"random init (seed {w.get('seed')})" if w.get("random_init")
                        else f"{w.get('path')} (file sha256 {_short(w.get('file_sha256'))})")
                problems.append(f"teacher weights: store built from {kind}, expected {weights_path} "
                                f"(file sha256 {_short(got)})")
        if weights_sha256 is not None and weights_sha256 not in (w.get("file_sha256"), w.get("state_dict_sha256")):
            problems.append(f"teacher weights: store sha256 {_short(w.get('state_dict_sha256'))} "
                            f"(file {_short(w.get('file_sha256'))}), expected {_short(weights_sha256)}")
        if input_size is not None and int(input_size) != self.input_size:
            problems.append(f"input size: store {self.input_size}, expected {int(input_size)}")
        if dataset is not None:  # the same image ids, or the stored maps belong to other images
            want, have = dataset_identity(dataset), self.header.get("dataset", {})
            if (want["ids_sha256"], want["num_images"]) != (have.get("ids_sha256"), have.get("num_images")):
                problems.append(f"dataset: store built on {have.get('num_images')} images of {have.get('split')!r} "
                                f"at {have.get('annotation_file')} (ids sha256 {_short(have.get('ids_sha256'))}), "
                                f"training on {want['num_images']} images of {want['split']!r} at "
                                f"{want['annotation_file']} (ids sha256 {_short(want['ids_sha256'])})")
            else:
                problems += self._image_mismatches(dataset)
        if problems:
            raise StoreMismatchError(f"{self.root}: teacher store does not match:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------------ build
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
        from distill.data.transforms import to_normalized_tensor

        index = self.indices[i]
        image = self.dataset.load_image(index)
        h, w = image.shape[:2]
        warped, resize = resize_for_test(image, self.input_size)
        frame = _frame_from_resize(resize)
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
            from distill.cache_codec import encode_image

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


def dataset_identity(dataset: Any) -> dict[str, Any]:
    return {"root": str(dataset.root), "split": dataset.split, "annotation_file": str(dataset.annotation_file),
            "num_images": len(dataset.ids), "ids_sha256": ids_sha256(dataset.ids)}


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
    store_bytes = sum(f["bytes"] for s in writer.index["shards"].values() for f in _shard_files(s))
    return BuildSummary(images_total=len(ids), images_computed=computed, shards_total=num_shards,
                        shards_computed=len(pending), shards_skipped=skipped, seconds=seconds,
                        forward_seconds=forward_s, store_bytes=store_bytes, complete=complete)


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


__all__ = [
    "BuildSummary", "CacheFrame", "NonFiniteOutputError", "StoreError", "StoreMismatchError", "StoreWriter",
    "TeacherStore", "build_store", "canonical_frame", "dataset_identity", "identity_mismatches", "make_header",
    "output_layout", "sha256_file", "state_dict_sha256", "weights_identity",
]
