"""Shared test fixtures: where `../shared` lives, and a skip with a clear reason when it does not."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AEDISTILL_SHARED", REPO_ROOT.parent / "shared"))
REFERENCE = SHARED / "reference" / "higherhrnet"
COCO_MINI = SHARED / "data" / "coco-mini"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"{path} is absent: the official-parity fixtures live in ../shared (CI has them; "
            "a fresh clone does not). Set AEDISTILL_SHARED to point elsewhere."
        )
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(REFERENCE)


@pytest.fixture(scope="session")
def coco_mini_dir() -> Path:
    return _require(COCO_MINI)
