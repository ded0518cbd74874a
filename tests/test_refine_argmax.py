"""refine_argmax's block branch and bound against the literal official argmax, one pixel at a time."""
from __future__ import annotations

import numpy as np
import pytest

from distill.codec.decode import refine_argmax


def _literal(det: np.ndarray, tags: np.ndarray, joint: int, centre: np.ndarray) -> int:
    """The official expression, written out: np.argmax(det - round(||tag - c||)) over the joint's map."""
    t = tags[0 if tags.shape[0] == 1 else joint]
    dist = np.sqrt(((t - centre[None, None, :]) ** 2).sum(axis=2))
    return int(np.argmax(det[joint] - np.round(dist)))


def _maps(rng: np.random.Generator, dims: int, shared: bool, quantised: bool) -> tuple[np.ndarray, np.ndarray]:
    j, h, w = 4, int(rng.integers(9, 70)), int(rng.integers(9, 70))
    if quantised:  # many exactly equal scores: the first occurrence must win
        det = (rng.integers(-1, 5, (j, h, w)) / 4).astype(np.float32)
        tags = (rng.integers(-8, 9, (1 if shared else j, h, w, dims)) / 4).astype(np.float32)
    else:  # smooth tag fields and blobs, like trained maps
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        det = rng.normal(0, 0.05, (j, h, w)).astype(np.float32)
        for k in range(j):
            for _ in range(int(rng.integers(0, 4))):
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                det[k] += rng.uniform(0.2, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8)
        ramp = rng.normal(0, 0.05, (1 if shared else j, 1, 1, dims)) * (yy[None, ..., None] + xx[None, ..., None])
        tags = (ramp + rng.normal(0, 0.2, (1 if shared else j, h, w, dims))).astype(np.float32)
    return det, tags


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dims,shared", [(1, False), (2, False), (4, False), (2, True)])
@pytest.mark.parametrize("quantised", [False, True])
def test_equals_the_literal_argmax(seed: int, dims: int, shared: bool, quantised: bool) -> None:
    rng = np.random.default_rng(seed)
    det, tags = _maps(rng, dims, shared, quantised)
    # centres near the tags (few blocks pass) and far from all of them (every block may pass)
    centres = np.concatenate([rng.normal(0, 1, (6, dims)), rng.normal(0, 1, (3, dims)) + rng.choice([-9, 9], (3, dims))])
    centres = centres.astype(np.float32)
    if quantised:
        centres = (np.round(centres * 4) / 4).astype(np.float32)
    for joint in range(det.shape[0]):
        got = refine_argmax(det, tags, joint, centres)
        assert got.tolist() == [_literal(det, tags, joint, c) for c in centres]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["det", "tags"])
def test_non_finite_maps_give_the_literal_answer(bad: float, where: str) -> None:
    rng = np.random.default_rng(1)
    det, tags = _maps(rng, 2, False, False)
    (det if where == "det" else tags)[0, 3, 5] = bad
    centres = rng.normal(0, 1, (5, 2)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        expected = [_literal(det, tags, 0, c) for c in centres]
        assert refine_argmax(det, tags, 0, centres).tolist() == expected


def test_one_pixel_map() -> None:
    det = np.array([[[0.5]]], np.float32)
    tags = np.array([[[[0.25]]]], np.float32)
    assert refine_argmax(det, tags, 0, np.array([[3.0], [0.0]], np.float32)).tolist() == [0, 0]


def test_flat_maps_are_scored_in_bounded_passes(monkeypatch) -> None:
    """Flat maps let most blocks through for every query; they are scored a few queries at a time, with the
    same answers."""
    import distill.codec.decode as dec

    rng = np.random.default_rng(7)
    det = np.full((1, 40, 48), 0.25, np.float32)
    tags = (rng.integers(-2, 3, (1, 40, 48, 2)) / 2).astype(np.float32)
    centres = rng.normal(0, 3, (25, 2)).astype(np.float32)
    expected = [_literal(det, tags, 0, c) for c in centres]
    passes = []
    monkeypatch.setattr(dec, "_REFINE_DENSE_SHARE", 1.0)  # keep every query on the block path
    original = dec._query_chunks
    monkeypatch.setattr(dec, "_query_chunks", lambda n, limit: passes.append(original(n, 40)) or passes[-1])
    assert refine_argmax(det, tags, 0, centres).tolist() == expected
    assert len(passes[0]) > 1


def test_no_centres() -> None:
    det, tags = np.zeros((1, 9, 9), np.float32), np.zeros((1, 9, 9, 2), np.float32)
    assert refine_argmax(det, tags, 0, np.zeros((0, 2), np.float32)).shape == (0,)


def test_queries_the_bounds_cannot_prune_score_the_whole_map(monkeypatch) -> None:
    """Pixel-noise tags make every block's tag box wide: those queries take the dense path, same answers."""
    import distill.codec.decode as dec

    rng = np.random.default_rng(3)
    det = rng.normal(0.05, 0.02, (1, 64, 72)).astype(np.float32)
    tags = rng.uniform(-3, 3, (1, 64, 72, 2)).astype(np.float32)
    det[0, 10, 10], tags[0, 10, 10] = 0.6, 0.0  # one peak: a centre at its tag prunes every other block
    centres = np.array([[6, 6], [-6, -6], [6, -6], [0, 0]], np.float32)
    dense_calls = []
    original = dec._dense_refine_argmax
    monkeypatch.setattr(dec, "_dense_refine_argmax", lambda d, t, c: dense_calls.append(len(c)) or original(d, t, c))
    assert refine_argmax(det, tags, 0, centres).tolist() == [_literal(det, tags, 0, c) for c in centres]
    assert dense_calls == [3]  # the centre at the peak's tag is still pruned
