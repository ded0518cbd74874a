"""Creating, resuming and committing a store: one writer per store (or per part), atomic shard commits."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from distill.atomic import atomic_path, try_exclusive_lock, write_json_atomic
from distill.cache_codec import encode_image
from distill.errors import ensure_writable_dir
from distill.teacher_cache.identity import identity_mismatches, short_hash
from distill.teacher_cache.layout import (
    HEADER_NAME, INDEX_NAME, LOCK_NAME, NPY_DTYPE, SHARD_DIR, HashingWriter, StoreError, StoreMismatchError,
    check_file_size, empty_index, fsync_dir, read_json, shard_blob_file, shard_file, shard_files, shard_record,
)


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
        self.index = read_json(ipath, "store index") if ipath.is_file() else empty_index(num_shards)
        if self.index.get("num_shards") != num_shards:
            raise StoreMismatchError(f"{self.root}: index has {self.index.get('num_shards')} shards, the plan {num_shards}")
        # Committed shards whose files were damaged after the commit: drop them so they are redone.
        for key in list(self.index["shards"]):
            bad = [msg for f in shard_files(self.index["shards"][key]) if (msg := check_file_size(self.root, f))]
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
        stored = read_json(hpath, "store header")
        problems = identity_mismatches(stored, self.header)
        if problems:
            raise StoreMismatchError(
                f"{self.root}: refusing to resume: this store was built differently:\n  " + "\n  ".join(problems)
                + "\n  use another --out, or delete the store to rebuild it")
        if stored.get("code_version", {}).get("sources_sha256") != self.header["code_version"]["sources_sha256"]:
            self.log(f"note: {self.root} was started by another version of the code "
                     f"({stored.get('code_version', {}).get('aedistill')}, sources "
                     f"{short_hash(stored.get('code_version', {}).get('sources_sha256'))}); resuming anyway")
        self.header = stored

    def _lock(self) -> None:
        """One writer per store: an exclusive flock on STORE/.lock (released by the OS when the process dies)."""

        name = LOCK_NAME if self.part is None else f"{LOCK_NAME}.part-{self.part[0]}-of-{self.part[1]}"
        self._lock_fh = try_exclusive_lock(self.root / name)
        if self._lock_fh is None:
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
        fsync_dir(self.root / SHARD_DIR)
        # The commit point: the shard exists from the moment index.json lists it.
        self.index["shards"][str(shard)] = {
            "images": ids, "files": files, "record": record, "device": device,
            "committed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.index["complete"] = self._all_mine_committed()
        write_json_atomic(self.root / self.index_name, self.index)
        fsync_dir(self.root)

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
                    w = HashingWriter(fh)
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

        heatmaps = [int(o["heatmaps"]) for o in self.header["outputs"]]
        name = shard_blob_file(shard)
        per_image = []
        with atomic_path(self.root / name) as tmp:
            with open(tmp, "wb") as fh:
                w = HashingWriter(fh)
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
        part = read_json(path, f"part {i} index")
        if part.get("num_shards") != num_shards:
            raise StoreMismatchError(f"{path}: planned {part.get('num_shards')} shards, this build {num_shards}")
        shards.update(part["shards"])
        done += bool(part.get("complete"))
    if done < num_parts:
        (log or (lambda m: None))(f"{root}: {done} of {num_parts} parts complete; index.json is written when all are")
        return False
    index = empty_index(num_shards)
    index["shards"] = {k: shards[k] for k in sorted(shards, key=int)}
    index["complete"] = len(index["shards"]) == num_shards
    index["parts"] = num_parts
    write_json_atomic(root / INDEX_NAME, index)
    return bool(index["complete"])
