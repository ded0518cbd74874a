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
