"""The fast decoder against the slow literal one on random realistic and adversarial maps,
and the munkres hand-off against munkres' own numpy input on tie-heavy cost matrices."""
from __future__ import annotations

import numpy as np
import torch
import pytest
from munkres import Munkres

from distill.codec.decode import DecodeParams, decode, window_max
from distill.codec.matching import munkres_solver
from reference_decoder import reference_decode
from fake_maps import fake_outputs


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.people, y.people)
        np.testing.assert_array_equal(x.scores, y.scores)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tag_dim,shared", [(2, False), (1, False), (2, True), (4, False)])
@pytest.mark.parametrize("ties", ["official", "index"])
def test_fast_equals_reference_on_realistic_maps(seed: int, tag_dim: int, shared: bool, ties: str) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(40, 130)), int(rng.integers(40, 130))
    heat, tags = fake_outputs(h, w, int(rng.integers(1, 12)), tag_dim=tag_dim, shared_tag=shared, seed=seed)
    for adjust, refine in [(True, True), (False, True), (True, False)]:
        params = DecodeParams(adjust=adjust, refine=refine, ties=ties)  # type: ignore[arg-type]
        _same(decode(heat, tags, params), reference_decode(heat, tags, params))


def _plateau_maps(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear x2 projection turns isolated peaks into 2x2 plateaus of exactly equal values; which of
    them become candidates decides the people once tags are noisy. ties='official' takes torch.topk's
    order over the dense NMS map, as the official parser, so it gives the reference's people exactly."""
    rng = np.random.default_rng(seed)
    j, h, w = 17, int(rng.integers(20, 40)), int(rng.integers(20, 40))
    small = np.zeros((1, j, h, w), np.float32)
    people = int(rng.integers(3, 9))
    for p in range(people):
        ys, xs = rng.integers(1, h - 1, j), rng.integers(1, w - 1, j)
        small[0, np.arange(j), ys, xs] = rng.uniform(0.3, 1.0)
    tag_small = rng.normal(0, 0.3, (1, j, h, w)).astype(np.float32) + rng.integers(1, people + 1, (1, j, h, w)) * 2
    up = lambda x: torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=2, mode="bilinear",  # noqa: E731
                                                   align_corners=False).numpy()
    heat, tags = up(small), up(tag_small.astype(np.float32))[..., None]
    assert all((heat[0, i] == heat[0, i].max()).sum() >= 2 for i in range(j))  # the plateaus are there
    return heat, tags


@pytest.mark.parametrize("seed", range(5))
def test_official_ties_on_projected_plateaus(seed: int) -> None:
    heat, tags = _plateau_maps(seed)
    _same(decode(heat, tags, DecodeParams()), reference_decode(heat, tags, DecodeParams()))


def test_index_ties_do_differ_from_official_on_plateaus() -> None:
    """Why the official order is the default: on tied maps the fast 'index' order changes the people."""
    differ = 0
    for seed in range(5):
        heat, tags = _plateau_maps(seed)
        (fast,), (ref,) = decode(heat, tags, DecodeParams(ties="index")), reference_decode(heat, tags, DecodeParams())
        differ += fast.people.shape != ref.people.shape or not np.array_equal(fast.people, ref.people)
    assert differ > 0


@pytest.mark.parametrize("seed", range(4))
def test_fast_equals_reference_on_flat_maps(seed: int) -> None:
    """Untrained-network-like maps: most pixels over threshold (the dense NMS path), many people.

    Peak values are continuous: for exactly equal peak values the official order is whatever
    torch.topk returns (unspecified); ours is by pixel index. Tags are quantised, so refine and
    matching see many exact ties.
    """
    rng = np.random.default_rng(100 + seed)
    heat = rng.uniform(0, 1, (1, 17, 48, 56)).astype(np.float32)
    tags = (rng.integers(-4, 5, (1, 17, 48, 56, 2)) / 2).astype(np.float32)
    _same(decode(heat, tags), reference_decode(heat, tags))


@pytest.mark.parametrize("seed", range(20))
def test_refine_argmax_takes_first_of_tied_maxima(seed: int) -> None:
    """Quantised maps make equal refine scores common; numpy's first argmax must win."""
    from distill.codec.decode import refine_argmax

    rng = np.random.default_rng(seed)
    det = (rng.integers(0, 4, (3, 20, 24)) / 4).astype(np.float32)
    tags = (rng.integers(-6, 7, (3, 20, 24, 2)) / 4).astype(np.float32)
    centre = (rng.integers(-6, 7, 2) / 4).astype(np.float32)
    for j in range(3):
        official = np.argmax(det[j] - np.round(((tags[j] - centre[None, None, :]) ** 2).sum(axis=2) ** 0.5))
        assert refine_argmax(det, tags, j, centre[None])[0] == official


def test_threads_give_identical_results() -> None:
    heat, tags = fake_outputs(96, 128, 8, seed=3)
    _same(decode(heat, tags, DecodeParams(threads=1)), decode(heat, tags, DecodeParams(threads=2)))


def test_threshold_boundary_value_is_handled_like_official() -> None:
    """A peak exactly at float32(0.1) is > 0.1 in float64 (official test), so it must be kept."""
    heat = np.zeros((1, 17, 32, 32), np.float32)
    heat[0, 0, 10, 10] = np.float32(0.1)
    tags = np.zeros((1, 17, 32, 32, 1), np.float32)
    (fast,), (ref,) = decode(heat, tags), reference_decode(heat, tags)
    np.testing.assert_array_equal(fast.people, ref.people)
    assert fast.people.shape[0] == (1 if np.float64(np.float32(0.1)) > 0.1 else 0)


def test_window_max_matches_torch_max_pool() -> None:
    import torch

    x = np.random.default_rng(0).normal(size=(3, 4, 23, 31)).astype(np.float32)
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), 5, 1, 2).numpy()
    np.testing.assert_array_equal(window_max(x, 5), ref)


def test_munkres_handoff_keeps_tie_breaking() -> None:
    """Our solver passes Python floats to munkres 1.1.4; on thousands of tie-heavy matrices it must
    pick exactly the pairs munkres picks from the official numpy input."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        rows, cols = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        cost = rng.integers(0, 4, (rows, cols)) * 100 - rng.choice([0.3, 0.5, 0.7], (rows, cols))
        if rows > cols:
            cost = np.concatenate((cost, np.full((rows, rows - cols), 1e10)), axis=1)
        expected = [(int(r), int(c)) for r, c in Munkres().compute(cost.copy())]
        assert munkres_solver(cost) == expected


def test_official_ties_fall_back_to_the_dense_order_only_on_ties(monkeypatch) -> None:
    import distill.codec.decode as dec

    calls = []
    dense = dec.top_k_official
    monkeypatch.setattr(dec, "top_k_official", lambda *a, **k: calls.append(1) or dense(*a, **k))
    heat, tags = fake_outputs(96, 80, 6, seed=3)  # continuous values: no exact ties
    decode(heat, tags, DecodeParams())
    assert calls == []
    heat, tags = _plateau_maps(0)
    decode(heat, tags, DecodeParams())
    assert calls == [1]


@pytest.mark.parametrize("seed", range(3))
def test_top_k_official_on_the_cpu_equals_the_max_pool_parser(seed: int) -> None:
    """On the CPU the official NMS takes its window maxima from cv2 (faster); the candidates, their order
    among ties included, must be those of torch's max_pool2d, as in the official parser."""
    import torch.nn.functional as F

    from distill.codec.decode import _gather_candidates, top_k_official

    heat = torch.from_numpy(_plateau_maps(seed)[0] - 0.2)  # exact ties and negative values
    tags = torch.from_numpy(np.random.default_rng(seed).normal(size=heat.shape + (2,)).astype(np.float32))
    b, j, h, w = heat.shape
    det = heat * (F.max_pool2d(heat, 5, stride=1, padding=2) == heat)
    val, ind = det.reshape(b, j, h * w).topk(30, dim=2)
    expected = _gather_candidates(tags, val, ind, 30, w)
    for got, want in zip(top_k_official(heat, tags, 30, 5), expected):
        np.testing.assert_array_equal(got, want)
