"""Reading a store: memory-mapped v1 shards or per-image v2 blobs, checks of identity and completeness."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from distill.cache_codec import decode_image
from distill.models import model_config
from distill.teacher_cache.frame import CacheFrame
from distill.teacher_cache.identity import config_differs, dataset_identity, differs, sha256_file, short_hash
from distill.teacher_cache.layout import (
    DTYPE, FORMAT, HEADER_NAME, INDEX_NAME, NPY_DTYPE, READABLE_VERSIONS, StoreError, StoreMismatchError,
    check_file_size, read_json, shard_files,
)


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
        self.header = read_json(self.root / HEADER_NAME, "store header")
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
        self.index = read_json(self.root / INDEX_NAME, "store index")
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
        return sum(f["bytes"] for s in self.index["shards"].values() for f in shard_files(s))

    def verify(self, checksum: bool = True, finite: bool = False) -> None:
        """Raise `StoreError` naming the first bad file: wrong size (truncated) or, with checksum, wrong sha256;
        with `finite`, also read every image's maps and name the first holding NaN/inf."""
        self._verify_files(checksum)
        if finite:
            for image_id in self.ids:
                self.maps(image_id, check_finite=True)

    def _verify_files(self, checksum: bool) -> None:
        for key in sorted(self.index["shards"], key=int):
            for f in shard_files(self.index["shards"][key]):
                msg = check_file_size(self.root, f)
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

    def maps(self, image_id: Any, check_finite: bool = False, outputs: int | None = None) -> list[np.ndarray]:
        """The teacher outputs of an image at the canonical frame: float16 (C, H, W) read-only views.

        `check_finite` (cheap: one pass over the image's maps; training uses it) raises `StoreError` naming the
        shard file and image when a value is NaN/inf, instead of letting it reach the loss. `outputs`: only the
        first n outputs (a version-2 blob still decodes whole)."""
        e = self.entry(image_id)
        if self.version == 2:
            views = self._decode_blob(image_id, e)
        else:
            views = [self._array(e["shard"], k)[off:off + int(np.prod(shape))].reshape(shape)
                     for k, (off, shape) in enumerate(zip(e["offsets"], e["shapes"]))]
        views = views[:outputs] if outputs is not None else views
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
                                     f"was built on (file sha256 {short_hash(got)}, store {short_hash(want)}); "
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
                teacher = model_config("teacher", teacher)
            cfg = teacher.to_dict() if hasattr(teacher, "to_dict") else dict(teacher)
            stored = self.header["teacher"]["config"]
            if stored != cfg:
                problems.append(config_differs(stored, cfg))
        w = self.header["weights"]
        if weights_path is not None:
            got = sha256_file(weights_path)
            if got != w.get("file_sha256"):
                kind = (f"random init (seed {w.get('seed')})" if w.get("random_init")
                        else f"{w.get('path')} (file sha256 {short_hash(w.get('file_sha256'))})")
                problems.append(differs("teacher weights", kind, f"{weights_path} (file sha256 {short_hash(got)})"))
        if weights_sha256 is not None and weights_sha256 not in (w.get("file_sha256"), w.get("state_dict_sha256")):
            problems.append(differs("teacher weights", f"sha256 {short_hash(w.get('state_dict_sha256'))} (file "
                                    f"{short_hash(w.get('file_sha256'))})", short_hash(weights_sha256)))
        if input_size is not None and int(input_size) != self.input_size:
            problems.append(differs("input size", self.input_size, int(input_size)))
        if dataset is not None:  # the same image ids, or the stored maps belong to other images
            want, have = dataset_identity(dataset), self.header.get("dataset", {})
            if (want["ids_sha256"], want["num_images"]) != (have.get("ids_sha256"), have.get("num_images")):
                def images(d: Mapping[str, Any]) -> str:
                    return (f"{d.get('num_images')} images of {d.get('split')!r} at {d.get('annotation_file')} "
                            f"(ids sha256 {short_hash(d.get('ids_sha256'))})")
                problems.append(differs("dataset", images(have), images(want)))
            else:
                problems += self._image_mismatches(dataset)
        if problems:
            raise StoreMismatchError(f"{self.root}: teacher store does not match:\n  " + "\n  ".join(problems))
