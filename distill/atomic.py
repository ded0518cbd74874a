"""Atomic file writes: write to a temp file in the same folder, fsync, then rename.

A crash or a kill mid-write leaves either the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from distill.errors import OutputError, os_reason


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder, expected a file path")
    blocker = next((p for p in target.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"cannot write {target}: {blocker} is a file, not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {os_reason(exc)}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; results should be readable like any file
    try:
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, target)
        except OSError as exc:  # disk full, target is a folder, ...: the old file (if any) is untouched
            raise OutputError(f"cannot write {target}: {os_reason(exc)}; the previous file, if any, is kept") from None
        except RuntimeError as exc:
            if "PytorchStreamWriter" not in str(exc) and "file write failed" not in str(exc):
                raise
            raise OutputError(f"cannot write {target}: writing failed (disk full?); the previous file, if any, "
                              "is kept") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = None) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent))


def try_exclusive_lock(path: str | os.PathLike[str]) -> IO[str] | None:
    """An exclusive flock on `path` (created if missing): the open handle that holds it, or None when another
    open file holds it. The OS releases the lock when the handle is closed or the process dies, so a killed
    run never leaves a stale lock behind."""
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh
