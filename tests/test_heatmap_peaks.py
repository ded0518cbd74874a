"""scripts/heatmap_peaks.py: the counts of weak, missed and spurious peaks on maps with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from script_module import load_script

heatmap_peaks = load_script("heatmap_peaks")


def _blob(heat: torch.Tensor, j: int, x: int, y: int, value: float) -> None:
    heat[j, y - 1: y + 2, x - 1: x + 2] = value / 2
    heat[j, y, x] = value


def test_counts_on_maps_with_known_peaks() -> None:
    # joints: 0 = nose (its own mirror), 1 = left wrist, 2 = right wrist
    flip = [0, 2, 1]
    heat = torch.zeros(3, 64, 64)
    gt = [np.array([[10.0, 10.0]]), np.array([[30.0, 30.0]]), np.array([[50.0, 30.0], [20.0, 50.0]])]
    _blob(heat, 0, 11, 10, 0.9)    # nose found, 1 px off
    _blob(heat, 1, 30, 30, 0.6)    # left wrist found
    _blob(heat, 1, 50, 30, 0.5)    # ... and a left-wrist peak on the right wrist: mirror
    _blob(heat, 1, 10, 12, 0.4)    # ... and one on the nose: another joint
    _blob(heat, 2, 50, 31, 0.8)    # right wrist 1 found; right wrist 2 (20, 50) has no peak: missed
    _blob(heat, 2, 60, 5, 0.3)     # background
    _blob(heat, 0, 40, 40, 0.05)   # below the threshold: not a peak
    counts = heatmap_peaks.PeakCounts()
    heatmap_peaks.count_image(counts, heat, gt, flip, threshold=0.1, near=8.0)
    s = counts.summary()
    assert s["gt_joints"] == 4
    assert s["missed"] == pytest.approx(1 / 4)
    assert (s["spurious_mirror"], s["spurious_other_joint"], s["spurious_background"]) == (1.0, 1.0, 1.0)
    # heights: 0.9 (nose), 0.6 (left wrist), 0.8 and 0 (right wrists: the second has nothing within 8 px)
    assert sorted(counts.heights) == pytest.approx([0.0, 0.6, 0.8, 0.9])
    assert sorted(counts.nearest)[:3] == pytest.approx([0.0, 1.0, 1.0])


def test_a_plateau_is_one_peak_only_where_it_is_the_window_maximum() -> None:
    heat = torch.zeros(1, 16, 16)
    heat[0, 4, 4] = 0.5
    heat[0, 4, 6] = 0.7   # 2 px away: suppresses the 0.5 (same 5x5 window)
    heat[0, 12, 12] = 0.2
    peaks = heatmap_peaks.find_peaks(heat, threshold=0.1)[0]
    assert sorted(map(tuple, peaks.tolist())) == [(6.0, 4.0), (12.0, 12.0)]


def test_gt_mapping_keeps_visible_joints_inside_the_frame() -> None:
    anns = [{"keypoints": [5, 5, 2, 100, 5, 2, 7, 7, 0], "num_keypoints": 2},
            {"keypoints": [1, 1, 2, 1, 1, 2, 1, 1, 2], "num_keypoints": 3, "iscrowd": 1}]
    to_input = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, 0.0]])  # x' = 2x + 1, y' = 2y
    gt = heatmap_peaks.gt_in_input_frame(anns, 3, to_input, w=64, h=64)
    assert gt[0].tolist() == [[11.0, 10.0]]
    assert gt[1].shape == (0, 2)   # x' = 201 is outside
    assert gt[2].shape == (0, 2)   # v = 0
