"""File-system faults and worker-wrapped errors end as one line naming the path, before long work starts."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from distill.atomic import atomic_path, write_text_atomic
from distill.errors import OutputError, ensure_writable_dir, user_message

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_output_folder_that_is_a_file_or_under_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file, expected a folder"):
        ensure_writable_dir(f)
    with pytest.raises(OutputError, match="Not a directory"):
        ensure_writable_dir(f / "sub")
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe file is gone


def test_disk_full_during_an_atomic_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"cannot write .*result.json: No space left on device; the previous file"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left behind


def test_torch_save_failure_is_an_output_error(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    with pytest.raises(OutputError, match="model.pt: writing failed"):
        with atomic_path(target) as tmp:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file")
    with pytest.raises(RuntimeError, match="a bug"):  # other runtime errors are not disguised
        with atomic_path(target) as tmp:
            raise RuntimeError("a bug")
    assert not target.exists()


def test_worker_wrapped_message_is_reduced_to_the_original() -> None:
    from distill.data.coco import ImageReadError

    wrapped = ImageReadError("Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                             "call last):\n  File \"x.py\", line 1, in f\n    g()\ndistill.data.coco.ImageReadError: "
                             "image file a.jpg is a truncated JPEG\n")
    assert user_message(wrapped) == "image file a.jpg is a truncated JPEG"
    assert user_message(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y")) == \
        "cannot access /x/y: No such file or directory"


@pytest.fixture(scope="module")
def broken_data(make_synthetic_dataset) -> Path:
    root = make_synthetic_dataset(seed=11, num_train=4, num_val=1, image_size=96)
    jpg = sorted((root / "train2017").glob("*.jpg"))[1]
    jpg.write_bytes(jpg.read_bytes()[:2000])  # truncated: no end-of-image marker
    return root


def _train_config(tmp: Path, data: Path, out: Path) -> Path:
    cfg = {"model": {"kind": "teacher", "name": "tiny"}, "data": {"root": str(data), "input_size": 64, "workers": 1},
           "optim": {"epochs": 1, "batch_size": 2},
           "train": {"out": str(out), "eval_every": 0, "tensorboard": False, "threads": 1}}
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bad_image_in_a_worker_is_one_line_or_skipped_when_asked(tmp_path: Path, broken_data: Path) -> None:
    cfg = _train_config(tmp_path, broken_data, tmp_path / "run")
    _one_line_error(_cli("train", str(cfg)), "is a truncated JPEG", "000000000002.jpg")
    assert not (tmp_path / "run" / "model.pt").exists()
    proc = _cli("train", str(cfg), "--set", "data.skip_bad_images=true", "--no-resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipping unreadable image" in proc.stderr
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["state_dict"]


def test_outputs_are_checked_before_the_work(tmp_path: Path, broken_data: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_error(_cli("train", str(_train_config(tmp_path, broken_data, f / "run"))), "train.out", "Not a directory")
    # bench: refused before any model runs (its table never printed), not after the benchmark.
    proc = _cli("bench", "--models", "teacher:tiny", "--data", str(broken_data), "--input-size", "64", "--out", str(f))
    _one_line_error(proc, "--out", "is a file, expected a folder")
    assert proc.stdout == ""
