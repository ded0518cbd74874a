"""scripts/swap_maps_ap.py: the ground-truth side reproduces the oracle, so the swaps measure the model."""
from __future__ import annotations

import pytest
from script_module import load_script


def _script():
    return load_script("swap_maps_ap")


def test_gt_side_scores_like_the_oracle(make_synthetic_dataset, capsys) -> None:
    from distill.oracle import run_oracle

    data = make_synthetic_dataset(seed=4, num_train=1, num_val=3, image_size=128)
    _script().main(["--a", "teacher:tiny", "--b", "gt", "--data", str(data), "--input-size", "128", "--no-progress"])
    rows = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "pairing" not in line}
    oracle = run_oracle(data, "val2017", input_size=128, show_progress=False)["AP"]
    assert rows["B heat + B tags"] == pytest.approx(oracle, abs=5e-4) and oracle > 0.9
    assert rows["A heat + A tags"] < 0.2  # a random tiny teacher finds nobody; its pairings differ from the oracle
