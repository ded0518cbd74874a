"""scripts/compare_runs.py: per-seed rows, differences to the first row, and refusal of unequal budgets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_module import load_script

compare_runs = load_script("compare_runs")


def _fake_run(folder: Path, ap: float, lr: float = 3e-3) -> None:
    folder.mkdir(parents=True)
    cfg = {"optim": {"epochs": 12, "batch_size": 8, "lr": lr}, "data": {"input_size": 256, "root": "d"}, "train": {}}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "eval_epoch0005.json").write_text(json.dumps({"AP": 0.0, "AR": 0.0}))
    (folder / "eval_epoch0012.json").write_text(json.dumps({"AP": ap, "AR": ap + 0.1}))
    (folder / "model.pt").write_bytes(b"")
    (folder / "train_summary.json").write_text("{}")


def test_table_reads_last_evaluations_and_pairs_seeds(tmp_path: Path, capsys) -> None:
    for seed, (a, b) in enumerate([(0.10, 0.13), (0.20, 0.19), (0.30, 0.36)]):
        _fake_run(tmp_path / f"a_seed{seed}", a)
        _fake_run(tmp_path / f"b_seed{seed}", b)
    (tmp_path / "b_seed3").mkdir()  # unfinished: named, left out
    assert compare_runs.main(["--seeds", "0", "1", "2", "3", "--row", f"base={tmp_path}/a_seed{{seed}}",
                              "--row", f"new={tmp_path}/b_seed{{seed}}"]) == 0
    out = capsys.readouterr().out
    assert "skipping" in out and "b_seed3" in out
    assert "| base | 0.200 ± 0.100 | 0.100 / 0.200 / 0.300 (seeds 0,1,2) | 0.300 | - | - |" in out
    assert "| new | 0.227 ± 0.119 | 0.130 / 0.190 / 0.360 (seeds 0,1,2) | 0.327 | +0.030 / -0.010 / +0.060 | +0.027 ± 0.035 |" in out


def test_unequal_budgets_and_bad_rows_are_refused(tmp_path: Path) -> None:
    _fake_run(tmp_path / "a_seed0", 0.1)
    _fake_run(tmp_path / "b_seed0", 0.1, lr=1e-3)
    with pytest.raises(SystemExit, match="do not share one budget"):
        compare_runs.main(["--seeds", "0", "--row", f"a={tmp_path}/a_seed{{seed}}", "--row", f"b={tmp_path}/b_seed{{seed}}"])
    with pytest.raises(SystemExit, match="LABEL=PATH_TEMPLATE"):
        compare_runs.main(["--row", f"a={tmp_path}/a_seed0"])
