"""scripts/learning_curves.py: every variant is a valid config that differs from the base, and the
equal-budget rule holds (same steps and evaluation points whatever the data size)."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import load_config
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]
lc = load_script("learning_curves")


@pytest.mark.parametrize("name", sorted(lc.VARIANTS))
def test_variant_is_a_valid_one_change_config(name: str) -> None:
    what, overrides = lc.VARIANTS[name]
    base = load_config(lc.BASE_CONFIG).to_dict()
    cfg = load_config(lc.BASE_CONFIG, [o.replace("{root}", "runs/lc") for o in overrides]).to_dict()
    changed = {(s, k) for s in cfg for k in cfg[s] if cfg[s][k] != base[s][k]}
    assert bool(changed) == (name != "base"), (name, changed)
    assert what


def test_fuse143_changes_only_the_fusion_depth_of_the_synthetic_teacher() -> None:
    """The ablation architecture is the shipped teacher's with the official module counts, nothing else."""
    from teachers import get_teacher_config

    base = get_teacher_config("higherhrnet_w16_synth").to_dict()
    path = lc.VARIANTS["fuse143"][1][0].split("=", 1)[1]
    deep = get_teacher_config(REPO / path).to_dict()
    assert [s["num_modules"] for s in base["stages"]] == [1, 2, 2]
    assert [s["num_modules"] for s in deep["stages"]] == [1, 4, 3]  # HigherHRNet W32/W48 (MODEL.EXTRA.STAGE2-4)
    for key in ("stages", "name"):
        base.pop(key), deep.pop(key)
    assert base == deep
    for s_base, s_deep in zip(get_teacher_config("higherhrnet_w16_synth").to_dict()["stages"],
                              get_teacher_config(REPO / path).to_dict()["stages"]):
        assert {**s_base, "num_modules": 0} == {**s_deep, "num_modules": 0}


def test_equal_budget_refuses_a_split_that_does_not_divide(tmp_path: Path, make_synthetic_dataset) -> None:
    data = make_synthetic_dataset(seed=3, num_train=12, num_val=1, image_size=64)  # 12 // 8 = 1 step/epoch
    (tmp_path / "data").symlink_to(data)
    with pytest.raises(SystemExit, match="do not divide"):
        lc.train_variant(tmp_path, "base", steps=3, eval_steps=2, threads=1,
                         extra=["optim.batch_size=5"])  # 2 steps per epoch


def test_combined_variant_applies_both_changes_in_order() -> None:
    what, overrides = lc.variant("focal10+push1e-1")
    assert overrides == lc.VARIANTS["focal10"][1] + lc.VARIANTS["push1e-1"][1]
    cfg = load_config(lc.BASE_CONFIG, overrides)
    assert (cfg.loss.heatmap_loss, cfg.loss.fg_weight, cfg.loss.push_factor, cfg.loss.pull_factor) == (
        "focal", 10.0, 0.1, 0.01)
    assert what.count(";") == 1


@pytest.mark.parametrize("bad", ["", "focal10+nope", "+focal10"])
def test_unknown_variant_is_refused_with_the_known_names(bad: str) -> None:
    with pytest.raises(ValueError, match="known: .*focal10"):
        lc.variant(bad)


def test_table_shows_curve_and_heldout_column(tmp_path: Path) -> None:
    import json

    run = tmp_path / "lc_focal10+ema"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": {}, "optim": {}}))
    for step, ap in ((250, 0.1), (500, 0.2)):
        (run / f"eval_epoch{step // 50:03d}.json").write_text(json.dumps(
            {"step": step, "AP": ap, "train_AP": ap + 0.01, "train_seconds": 120.0}))
    held = tmp_path / "held"
    held.mkdir()
    (held / "focal10+ema.json").write_text(json.dumps({"rows": [
        {"variant": "improved", "AP": 0.9, "APm": 0.9, "APl": 0.9},
        {"variant": "official", "AP": 0.15, "APm": 0.2, "APl": 0.05}]}))
    text = lc.table(tmp_path, ["focal10", "focal10+ema"], held)
    row = [line for line in text.splitlines() if line.startswith("| focal10+ema ")]
    assert len(row) == 1  # focal10 has no run folder: no row
    assert "250: 0.100, 500: 0.200" in row[0] and "| 0.200 | 0.210 | 0.150 (0.200 / 0.050) | 2.0 |" in row[0]
    assert lc.VARIANTS["ema"][0] in row[0] and lc.VARIANTS["focal10"][0] not in row[0]
    assert "| - |" in lc.table(tmp_path, ["focal10+ema"], None)


def test_a_pipe_in_a_variant_text_does_not_split_its_table_cell(tmp_path: Path, monkeypatch) -> None:
    import json
    import re

    monkeypatch.setitem(lc.VARIANTS, "pipe", ("push max(0, 1 - |d|)", []))
    run = tmp_path / "lc_focal10+pipe"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": {}, "optim": {}}))
    (run / "eval_epoch005.json").write_text(json.dumps({"step": 250, "AP": 0.1, "train_AP": 0.1}))
    row = lc.table(tmp_path, ["focal10+pipe"]).splitlines()[-1]
    assert len(re.findall(r"(?<!\\)\|", row)) == 8  # 7 cells, as in the header
