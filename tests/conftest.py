"""Shared test fixtures: where `../shared` lives, and a skip with a clear reason when it does not."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Test inputs are tiny: one intra-op thread is as fast, and many times faster when other jobs load
    the CPUs (multi-threaded kernels spin-wait on an oversubscribed machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_synthetic_dataset(tmp_path_factory: pytest.TempPathFactory):
    """`make(seed=, num_train=, num_val=, image_size=) -> Path`: a small synthetic COCO-format dataset in a
    fresh temporary folder; module fixtures call it once and share the result."""
    from distill.data.synthetic import generate_dataset

    def make(*, seed: int, num_train: int, num_val: int, image_size: int) -> Path:
        root = tmp_path_factory.mktemp("synth")
        generate_dataset(root, seed=seed, num_train=num_train, num_val=num_val, image_size=image_size,
                         progress=False)
        return root

    return make
