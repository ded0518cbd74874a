"""Progress bars for long work: shown on a terminal, silent in logs and CI."""
from __future__ import annotations

from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
_BARS = {"enabled": True}


def set_bars(enabled: bool) -> None:
    """Switch every bar of this process off (or back on): processes that share one terminal, such as the
    demo's students training side by side, would draw over each other's bars; their per-epoch lines stay."""
    _BARS["enabled"] = bool(enabled)


def progress(iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool = True, unit: str = "it") -> Iterable[T]:
    # disable=None lets tqdm switch itself off when stderr is not a terminal.
    on = enabled and _BARS["enabled"]
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=None if on else True, dynamic_ncols=True)
