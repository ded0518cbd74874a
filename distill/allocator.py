"""Keep freed CPU memory in the process (glibc malloc), so a training step does not page-fault its tensors in anew.

Why: a CPU training step allocates and frees the same multi-MB activation and gradient buffers every step (and
test-time inference its per-image maps: the flip-test aggregation of a 17 x 2-tag student at input 256 writes ~40 MB of
fresh tensors per image).
With glibc's defaults, blocks above the mmap threshold are mmap'd and munmap'd each time, and freed memory at the
top of the heap is trimmed back to the OS, so every step touches fresh pages: the session-24 profile of the demo's
student run showed ~15,000 minor page faults per step and a quarter of its wall time spent on them
(`scripts/bench_allocator.py`). Raising the mmap threshold to its maximum (32 MiB on 64-bit) and not trimming
keeps those buffers in the heap for reuse. The cost is that the process keeps its peak heap instead of
returning it, which for these runs is a few hundred MB.

The same effect can be had without code by exporting MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ before
starting Python (glibc reads them at start-up); `mallopt` does it from inside, for the calling process and the
DataLoader workers it forks later. Not glibc (macOS, musl, Windows): a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30  # do not give the top of the heap back below 1 GiB of free memory
TOP_PAD = 64 * 1024 * 1024  # grow the heap in 64 MiB steps instead of page by page

# Set to 0 to leave glibc's defaults alone (e.g. to measure the difference: scripts/bench_allocator.py).
KEEP_FREED_MEMORY_ENV = "AEDISTILL_KEEP_FREED_MEMORY"

_applied: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # only glibc has it (musl does not)
    except (OSError, AttributeError):
        return None
    gnu_get_libc_version.restype = ctypes.c_char_p
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory() -> bool:
    """Tune glibc malloc to reuse freed blocks (see the module docstring); True when the settings took effect.

    Idempotent; False (and nothing changed) where the C library is not glibc or refuses a value."""
    global _applied
    if _applied is not None:
        return _applied
    libc = _glibc()
    if libc is None:
        _applied = False
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    ok = True
    for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                         (_M_TOP_PAD, TOP_PAD)):
        ok = bool(libc.mallopt(param, value)) and ok  # mallopt returns 1 on success, 0 on error
    _applied = ok
    return ok


def keep_freed_memory_unless_disabled() -> bool:
    """`keep_freed_memory()` unless AEDISTILL_KEEP_FREED_MEMORY=0; what the Trainer and the Predictor call."""
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1") == "0":
        return False
    return keep_freed_memory()
