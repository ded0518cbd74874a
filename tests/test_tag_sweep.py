"""`distill compare-tags --dims`: a tiny T x D sweep trains, scores, writes its table/json/png and reuses runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.tag_sweep import SweepError, check_tag_kd, plan, run_config

REPO = Path(__file__).resolve().parents[1]


def test_plan_and_bad_plans() -> None:
    runs = plan(["shared", "per-joint"], [1, 4], [0, 1])
    assert [r.name for r in runs][:3] == ["shared_d1_seed0", "shared_d1_seed1", "shared_d4_seed0"] and len(runs) == 8
    with pytest.raises(SweepError, match="--maps"):
        plan(["both"], [1], [0])
    with pytest.raises(SweepError, match="--dims"):
        plan(["shared"], [0], [0])


def test_tag_kd_in_d_dimensions_must_be_relational(tmp_path: Path) -> None:
    recipe = REPO / "configs/train/synth_step_s_kd.yaml"
    run_d4 = plan(["shared"], [4], [0])[0]
    absolute = run_config(recipe, run_d4, tmp_path, ["loss.tag_kd_weight=1e-2", "loss.tag_kd_type=absolute"])
    with pytest.raises(SweepError, match="relational"):
        check_tag_kd(absolute, run_d4, recipe)
    check_tag_kd(run_config(recipe, run_d4, tmp_path, ["loss.tag_kd_weight=1e-2", "loss.tag_kd_type=relational"]),
                 run_d4, recipe)
    check_tag_kd(run_config(recipe, run_d4, tmp_path, ["loss.tag_kd_weight=1e-2", "loss.tag_kd_type=person"]),
                 run_d4, recipe)
    run_d1 = plan(["shared"], [1], [0])[0]  # 1-D tags share values with the (reduced) teacher: absolute allowed
    check_tag_kd(run_config(recipe, run_d1, tmp_path, ["loss.tag_kd_weight=1e-2", "loss.tag_kd_type=absolute"]),
                 run_d1, recipe)


def test_tiny_sweep_writes_the_report_and_reuses_runs(make_synthetic_dataset, tmp_path: Path, capsys) -> None:
    root = make_synthetic_dataset(seed=0, num_train=4, num_val=2, image_size=128)
    argv = ["compare-tags", "--data", str(root), "--dims", "1", "2", "--maps", "shared", "--seeds", "0", "1",
            "--config", str(REPO / "configs/train/synth_step_s_gt.yaml"), "--out", str(tmp_path / "sweep"),
            "--threads", "1"]
    for kv in ("data.input_size=64", "data.workers=0", "optim.batch_size=2", "optim.epochs=1", "train.max_steps=2",
               "train.tensorboard=false", "train.threads=1"):
        argv += ["--set", kv]
    assert cli_main(argv) == 0
    out = tmp_path / "sweep"
    report = json.loads((out / "tag_sweep.json").read_text())
    assert [(r["maps"], r["tag_dim"], r["tag_channels"]) for r in report["rows"]] == [("shared", 1, 1), ("shared", 2, 2)]
    assert all(len(r["AP_per_seed"]) == 2 and r["AP_std"] >= 0 and r["group_ms"] > 0 for r in report["rows"])
    assert (out / "tag_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 (shared) | 2 | 2 |" in (out / "tag_sweep.md").read_text()
    assert report["teacher_rows"] == []
    capsys.readouterr()
    assert cli_main(argv) == 0  # a rerun trains nothing
    assert capsys.readouterr().out.count("reusing") == 4
    # a finished run with other settings in the folder is refused, in one line
    assert cli_main([a if a != "optim.batch_size=2" else "optim.batch_size=1" for a in argv]) == 2
    assert "holds a finished run with other optim settings" in capsys.readouterr().err


def test_sweep_with_a_teacher_adds_its_tag_reductions(make_synthetic_dataset, tmp_path: Path) -> None:
    """The teacher's as-is, first, mean and PCA 1 x D rows join the report, scored on the students' val images."""
    import torch

    from teachers import build_teacher

    root = make_synthetic_dataset(seed=1, num_train=3, num_val=2, image_size=128)
    torch.manual_seed(0)
    teacher = build_teacher("tiny")
    weights = tmp_path / "tiny.pt"
    torch.save(teacher.state_dict(), weights)
    argv = ["compare-tags", "--data", str(root), "--dims", "2", "--maps", "shared", "--seeds", "0",
            "--config", str(REPO / "configs/train/synth_step_s_gt.yaml"), "--out", str(tmp_path / "sweep"),
            "--threads", "1", "--teacher", f"tiny:{weights}", "--fit-images", "3"]
    for kv in ("data.input_size=64", "data.workers=0", "optim.batch_size=2", "optim.epochs=1", "train.max_steps=1",
               "train.tensorboard=false", "train.threads=1"):
        argv += ["--set", kv]
    assert cli_main(argv) == 0
    report = json.loads((tmp_path / "sweep" / "tag_sweep.json").read_text())
    rows = {r["row"]: r for r in report["teacher_rows"]}
    assert list(rows) == ["teacher as is (17 x 1)", "first (1 x 1)", "mean (1 x 1)", "PCA (1 x 2)"]
    assert rows["teacher as is (17 x 1)"]["tag_channels"] == 17 and rows["PCA (1 x 2)"]["tag_channels"] == 2
    assert 0 < rows["PCA (1 x 2)"]["explained_variance_cumulative"] <= 1 + 1e-9
    assert all(-1 <= r["AP"] <= 1 for r in rows.values())
    assert "| PCA (1 x 2) | 2 |" in (tmp_path / "sweep" / "tag_sweep.md").read_text()


def test_sweep_adopts_an_equal_run_trained_elsewhere(make_synthetic_dataset, tmp_path: Path, capsys) -> None:
    """A `distill train` run of the recipe (no tag overrides: its own 17 x 2 layout) is the sweep's per-joint_d2 run
    of its seed; a run of another seed or another tag layout is not adopted."""
    root = make_synthetic_dataset(seed=2, num_train=3, num_val=2, image_size=128)
    recipe = str(REPO / "configs/train/synth_step_s_gt.yaml")
    sets = ["data.input_size=64", "data.workers=0", "optim.batch_size=2", "optim.epochs=1", "train.max_steps=1",
            "train.tensorboard=false", "train.threads=1", "train.eval_every=0", f"data.root={root}"]
    flags = sum((["--set", kv] for kv in sets), [])
    elsewhere = tmp_path / "elsewhere"
    assert cli_main(["train", recipe, *flags, "--set", f"train.out={elsewhere}", "--set", "train.seed=1"]) == 0
    argv = ["compare-tags", "--data", str(root), "--dims", "2", "--maps", "per-joint", "shared", "--seeds", "1",
            "--config", recipe, "--out", str(tmp_path / "sweep"), "--threads", "1", "--adopt", str(elsewhere),
            *flags]
    capsys.readouterr()
    assert cli_main(argv) == 0
    log = capsys.readouterr().out
    assert f"per-joint_d2_seed1: adopting {elsewhere}" in log and "shared_d2_seed1: training" in log
    assert not (tmp_path / "sweep" / "per-joint_d2_seed1").exists()
    report = json.loads((tmp_path / "sweep" / "tag_sweep.json").read_text())
    assert [r["folder"] for r in report["runs"]][0] == str(elsewhere)
    seed2 = [a if a != "1" or argv[i - 1] != "--seeds" else "2" for i, a in enumerate(argv)]
    assert cli_main(seed2) == 0
    assert "per-joint_d2_seed2: training" in capsys.readouterr().out
