"""Project-wide error types, so the CLI can show bad input as one clear line instead of a traceback."""
from __future__ import annotations

import os
from pathlib import Path


class AEDistillError(Exception):
    """Base class for errors that are the user's input, not a bug."""


class DataError(AEDistillError):
    """A dataset file or record is missing, corrupt, or not what was expected."""


class TrainingDiverged(AEDistillError, FloatingPointError):
    """The loss or the weights became NaN/inf; nothing broken is written."""


class CheckpointError(AEDistillError):
    """A checkpoint does not fit the model it is loaded into."""


class DataWarning(RuntimeWarning):
    """Something in the data was allowed but changed what is trained (skipped images, dropped people)."""


class OutputError(AEDistillError, OSError):
    """An output path cannot be created or written (a file where a folder should be, read-only, disk full)."""


def ensure_writable_dir(path: "str | os.PathLike[str]", what: str = "output folder") -> Path:
    """Create `path` (and parents) and prove a file can be written there, before any long work starts."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder}: is a file, expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot write there ({os_reason(exc)})") from None
    return folder


def ensure_writable_file(path: "str | os.PathLike[str]", what: str = "output file") -> Path:
    """A file we will write later: its folder must be writable and the path must not be a folder."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{what} {target}: is a folder, expected a file path")
    ensure_writable_dir(target.parent, f"folder of {what}")
    return target


def os_reason(exc: OSError) -> str:
    """'No space left on device' rather than '[Errno 28] No space left on device: ...'."""
    return exc.strerror or str(exc)


def user_message(exc: BaseException) -> str:
    """One line for the CLI. Errors raised in a DataLoader worker arrive wrapped in torch's worker traceback;
    only the original message is the user's business."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name, sep, message = last.partition(": ")
        text = message if sep and name.replace(".", "").replace("_", "").isalnum() else last
    if isinstance(exc, OSError) and not isinstance(exc, AEDistillError):
        where = f" {exc.filename}" if exc.filename else ""
        text = f"cannot access{where}: {os_reason(exc)}"
    return text
