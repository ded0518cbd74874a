"""Test-time aggregation (upsample, average, flip back, project) against the official pipeline.

Inputs are the official raw network outputs stored as float16; tolerance rtol 2e-3, atol 1e-2 as
the fixture README recommends for aggregation from the float16 raw arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill.inference import OutputLayout, aggregate_single_scale
from distill.keypoints import KeypointSpec


def test_aggregation_matches_official(reference_dir: Path) -> None:
    z = np.load(reference_dir / "pipeline" / "000000165518.npz")
    t = lambda k: torch.from_numpy(z[k].astype(np.float32))  # noqa: E731
    w, h = (int(v) for v in z["base_size"])
    heat, tags = aggregate_single_scale(
        [t("raw_orig_out0"), t("raw_orig_out1")],
        [t("raw_flip_out0"), t("raw_flip_out1")],
        OutputLayout(),
        KeypointSpec.coco().flip_index,
        (h, w),
    )
    np.testing.assert_allclose(heat.numpy(), z["final_heatmaps"].astype(np.float32), rtol=2e-3, atol=1e-2)
    np.testing.assert_allclose(tags.numpy(), z["tags"].astype(np.float32), rtol=2e-3, atol=1e-2)
    assert tags.shape == (1, 17, h, w, 2)
