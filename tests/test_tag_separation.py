"""scripts/tag_separation.py --by-area: the per-area medians that say whether a student separates people."""
from __future__ import annotations

import pytest
from script_module import load_script

tag_separation = load_script("tag_separation")


def test_by_area_groups_people_by_coco_area_range_and_takes_medians() -> None:
    rows = [(100.0, 0.2, 1.0), (500.0, 0.1, 0.1),                   # small: ratios 5 and 1
            (32.0 ** 2, 0.5, 1.0), (5000.0, 0.25, 1.0), (9000.0, 1.0, 1.0),  # medium (32^2 is medium)
            (96.0 ** 2, 0.1, 0.3)]                                    # large
    out = tag_separation._by_area(rows)
    assert out["small"] == pytest.approx({"people": 2, "spread_median": 0.15, "nearest_gap_median": 0.55,
                                          "ratio_median": 3.0})
    assert out["medium"] == pytest.approx({"people": 3, "spread_median": 0.5, "nearest_gap_median": 1.0,
                                           "ratio_median": 2.0})
    assert out["large"] == pytest.approx({"people": 1, "spread_median": 0.1, "nearest_gap_median": 0.3,
                                          "ratio_median": 3.0})
    assert tag_separation._by_area([]) == {}


def test_neighbour_change_is_the_mean_distance_to_the_eight_neighbours() -> None:
    import numpy as np

    h, w = 12, 10
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = np.stack([0.1 * xs, 0.2 * ys], axis=-1)  # (H, W, 2): a linear tag field
    step = 2
    want = np.mean([np.hypot(0.1 * dx, 0.2 * dy) for dy in (-step, 0, step) for dx in (-step, 0, step) if dx or dy])
    assert tag_separation.neighbour_change(ramp, 5, 6, step) == pytest.approx(want)
    assert tag_separation.neighbour_change(np.ones((h, w, 1)), 5, 6, step) == 0.0
    assert tag_separation.neighbour_change(ramp, 1, 6, step) is None  # x - step < 0
    assert tag_separation.neighbour_change(ramp, 5, h - step, step) is None  # y + step = H
