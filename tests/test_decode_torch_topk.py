"""The GPU decoding path (NMS + top-k in torch, matching on the CPU) against the numpy path.

Run on CPU tensors through the same code (`DecodeParams(ties="index", topk="torch")`); on a GPU the only difference is
where the max-pool and the sort run. Same people, same scores, bit for bit.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from distill.codec.decode import DecodeParams, decode, top_k, top_k_torch
from fake_maps import fake_outputs
from test_grouping_fast_vs_reference import _same  # same people, same scores, bit for bit


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tag_dim,shared", [(2, False), (1, False), (2, True)])
def test_torch_topk_decodes_the_numpy_people(seed: int, tag_dim: int, shared: bool) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(40, 130)), int(rng.integers(40, 130))
    heat, tags = fake_outputs(h, w, int(rng.integers(1, 12)), tag_dim=tag_dim, shared_tag=shared, seed=seed)
    for adjust, refine in [(True, True), (False, False), (True, False)]:
        params = DecodeParams(adjust=adjust, refine=refine)
        want = decode(heat, tags, replace(params, ties="index", topk="numpy"))
        got = decode(torch.from_numpy(heat), torch.from_numpy(tags), replace(params, ties="index", topk="torch"))
        _same(want, got)


def test_torch_topk_matches_numpy_candidates_with_plateaus() -> None:
    """Bilinear x2 projection makes 2x2 plateaus of equal peaks: ties must keep the flat-index order."""
    rng = np.random.default_rng(3)
    small = np.zeros((1, 17, 24, 20), np.float32)  # sparse peaks (the numpy sparse path), with equal values
    for j in range(17):
        ys, xs = rng.integers(0, 24, 6), rng.integers(0, 20, 6)
        small[0, j, ys, xs] = rng.choice([0.5, 0.8], 6)
    heat = np.repeat(np.repeat(small, 2, axis=2), 2, axis=3)  # exact 2x2 plateaus
    tags = rng.normal(0, 1, (1, 17, 48, 40, 2)).astype(np.float32)
    for threshold in (0.1, None):
        tk, lk, vk = top_k_torch(torch.from_numpy(heat), torch.from_numpy(tags), 30, 5, threshold)
        if threshold is None:
            continue  # dense numpy path: ties at the k-th value are in argpartition's order (unspecified)
        t2, l2, v2 = top_k(heat[0], tags[0], 30, 5, threshold)
        passing = v2 > threshold
        np.testing.assert_array_equal(vk[0][passing], v2[passing])
        np.testing.assert_array_equal(lk[0][passing], l2[passing])
        np.testing.assert_array_equal(tk[0][passing], t2[passing])
    _same(decode(heat, tags, DecodeParams(ties="index", topk="numpy")), decode(torch.from_numpy(heat), torch.from_numpy(tags),
                                                                DecodeParams(ties="index", topk="torch")))


def test_torch_topk_on_a_map_smaller_than_k() -> None:
    heat, tags = fake_outputs(4, 5, 2, seed=0)
    _same(decode(heat, tags, DecodeParams(ties="index", topk="numpy")),
          decode(torch.from_numpy(heat), torch.from_numpy(tags), DecodeParams(ties="index", topk="torch")))


def test_decode_params_reject_bad_topk_and_ties() -> None:
    with pytest.raises(ValueError, match="ties"):
        DecodeParams(ties="stable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="topk"):
        DecodeParams(topk="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nms_kernel"):
        DecodeParams(nms_kernel=4)
