"""The decoder against the official HigherHRNet parser (34 tie-free cases from ../shared).

Tolerances (from the fixture README): people exactly equal, in the same order; scores atol 1e-6.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.codec.decode import DecodeParams, decode
from distill.codec.matching import MatchParams
from reference_decoder import reference_decode

CASES = [f"case_{i:02d}" for i in range(34)]


def _load(reference_dir: Path, name: str):
    (path,) = sorted((reference_dir / "grouping").glob(f"{name}_*.npz"))
    z = np.load(path)
    settings = json.loads(str(z["settings"]))
    p = settings["parser"]
    params = DecodeParams(
        match=MatchParams(
            num_joints=p["NUM_JOINTS"],
            joint_order=tuple(p["joint_order"]),
            detection_threshold=p["DETECTION_THRESHOLD"],
            tag_threshold=p["TAG_THRESHOLD"],
            max_num_people=p["MAX_NUM_PEOPLE"],
            use_detection_val=p["USE_DETECTION_VAL"],
            ignore_too_much=p["IGNORE_TOO_MUCH"],
        ),
        nms_kernel=p["NMS_KERNEL"],
        adjust=settings["adjust"],
        refine=settings["refine"],
    )
    return z, params


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("impl", ["fast", "fast-index", "fast-index-torch-topk", "reference"])
def test_decoder_matches_official(reference_dir: Path, name: str, impl: str) -> None:
    """The recorded cases are tie-free, so the 'index' tie order gives the official people too."""
    z, params = _load(reference_dir, name)
    if impl == "fast-index-torch-topk":  # the GPU path (NMS + top-k in torch), here on CPU tensors
        (out,) = decode(torch.from_numpy(z["heatmaps"]), torch.from_numpy(z["tags"]),
                        replace(params, ties="index", topk="torch"))
    elif impl == "fast-index":
        (out,) = decode(z["heatmaps"], z["tags"], replace(params, ties="index"))
    else:
        fn = decode if impl == "fast" else reference_decode
        (out,) = fn(z["heatmaps"], z["tags"], params)
    np.testing.assert_array_equal(out.people, z["grouped"])
    np.testing.assert_allclose(out.scores, z["scores"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["case_03", "case_15", "case_22"])
def test_intermediate_stages_match(reference_dir: Path, name: str) -> None:
    """Matching alone (no adjust/refine) and matching+adjust reproduce the recorded stages."""
    z, params = _load(reference_dir, name)
    from dataclasses import replace

    (matched,) = decode(z["heatmaps"], z["tags"], replace(params, adjust=False, refine=False))
    np.testing.assert_array_equal(matched.people, z["matched"])
    (adjusted,) = decode(z["heatmaps"], z["tags"], replace(params, refine=False))
    np.testing.assert_array_equal(adjusted.people, z["before_refine"])
