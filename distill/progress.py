"""Progress bars for long work: shown on a terminal, silent in logs and CI."""
from __future__ import annotations

from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool = True, unit: str = "it") -> Iterable[T]:
    # disable=None lets tqdm switch itself off when stderr is not a terminal.
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=None if enabled else True, dynamic_ncols=True)
