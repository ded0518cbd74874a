"""Data pipeline: custom keypoint sets, sampler ranges, seeding, the heatmap renderer, truncation."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from distill.codec.targets import (
    TargetConfig,
    TooManyPeopleError,
    joint_indices,
    render_heatmaps,
    render_heatmaps_reference,
)
from distill.data.coco import CocoKeypointDataset
from distill.data.transforms import AugmentConfig, AugmentParams, base_scale, sample_augment_params

CROWDPOSE_NAMES = [
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
]


def _write(root: Path, names, persons_per_image, size=(80, 60), seed=0, split="train2017"):
    """Random JPEGs + json; persons_per_image: list (per image) of lists of (K, 3) keypoint arrays."""
    rng = np.random.default_rng(seed)
    w, h = size
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, persons in enumerate(persons_per_image):
        name = f"img_{i}.png"  # lossless, so pixel checks are exact
        cv2.imwrite(str(root / split / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for kp in persons:
            kp = np.asarray(kp, dtype=float)
            anns.append({
                "id": len(anns) + 1, "image_id": i + 1, "category_id": 3, "iscrowd": 0,
                "num_keypoints": int((kp[:, 2] > 0).sum()), "keypoints": kp.reshape(-1).tolist(),
                "bbox": [0, 0, w, h], "area": 1.0, "segmentation": [[1, 1, 5, 1, 5, 5]],
            })
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 3, "name": "pedestrian", "keypoints": list(names), "skeleton": [[1, 2]]}]}
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))


def _random_people(rng, n_images, k, size, people=(1, 4)):
    w, h = size
    out = []
    for _ in range(n_images):
        persons = []
        for _ in range(int(rng.integers(*people))):
            kp = np.zeros((k, 3))
            kp[:, 0] = rng.integers(0, w, k)
            kp[:, 1] = rng.integers(0, h, k)
            kp[:, 2] = rng.choice([0, 1, 2], k)
            persons.append(kp)
        out.append(persons)
    return out


# --------------------------------------------------------------------------------- custom keypoints
def test_fourteen_joint_category_with_its_own_flip(tmp_path):
    kp = np.zeros((14, 3))
    kp[0] = [20.3, 30.6, 2]  # left_shoulder only
    kp[12] = [40.2, 10.1, 1]  # head
    _write(tmp_path, CROWDPOSE_NAMES, [[kp]], size=(80, 80))
    ds = CocoKeypointDataset(tmp_path, "train2017", input_size=80, output_sizes=(20, 40))
    assert ds.num_joints == 14
    assert ds.spec.flip_index == (1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13)

    plain = ds.make_sample(0, AugmentParams.identity())
    flipped = ds.make_sample(0, AugmentParams(flip=True))
    for r, hp, hf, jp, jf, ip in zip(ds.output_sizes, plain.heatmaps, flipped.heatmaps, plain.joints,
                                     flipped.joints, plain.indices):
        assert hp.shape == (14, r, r) and ip.shape == (30, 14, 2)
        # identity on an 80x80 image: output coordinates = input * r / 80
        np.testing.assert_allclose(jp[0, 0, :2], kp[0, :2] * r / 80, atol=1e-9)
        # left shoulder -> right-shoulder channel, mirrored at this resolution; head stays channel 12
        np.testing.assert_allclose(jf[0, 1, 0], r - 1 - jp[0, 0, 0], atol=1e-9)
        x_f, y_f = r - 1 - jp[0, 0, 0], jp[0, 0, 1]
        np.testing.assert_array_equal(hf[1], render_heatmaps(np.array([[[x_f, y_f, 2]]]), r)[0])
        assert np.unravel_index(hf[1].argmax(), hf[1].shape) == (int(y_f), int(x_f))
        assert hf[0].max() == 0 and hp[1].max() == 0
        assert hf[12].max() == 1 and hp[12].max() == 1
        # tag indices: channel 0 (plain) vs channel 1 (flipped)
        assert ip[0, 0, 0] == 0 * r * r + int(jp[0, 0, 1]) * r + int(jp[0, 0, 0])
        assert flipped.indices[ds.output_sizes.index(r)][0, 0, 0] == 1 * r * r + int(jf[0, 1, 1]) * r + int(jf[0, 1, 0])


def test_custom_category_trains_through_dataloader(tmp_path):
    rng = np.random.default_rng(1)
    _write(tmp_path, CROWDPOSE_NAMES, _random_people(rng, 4, 14, (80, 60)))
    ds = CocoKeypointDataset(tmp_path, "train2017", input_size=64, output_sizes=(16, 32), seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)
    img, hms, masks, idx = next(iter(loader))
    assert img.shape == (2, 3, 64, 64) and img.dtype == torch.float32
    assert [h.shape for h in hms] == [(2, 14, 16, 16), (2, 14, 32, 32)]
    assert [m.shape for m in masks] == [(2, 16, 16), (2, 32, 32)]
    assert [i.shape for i in idx] == [(2, 30, 14, 2)] * 2 and idx[0].dtype == torch.int32


# ------------------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("scale_type", ["short", "long"])
def test_sampler_draws_in_range(scale_type):
    cfg = AugmentConfig(scale_type=scale_type)
    rng = np.random.default_rng(0)
    w, h = 640, 427
    s0 = base_scale(w, h, scale_type)
    assert s0 == (min(w, h) if scale_type == "short" else max(w, h)) / 200
    draws = [sample_augment_params(rng, w, h, cfg) for _ in range(4000)]
    scales = np.array([d.aug_scale for d in draws])
    rots = np.array([d.rot_deg for d in draws])
    assert scales.min() >= 0.75 and scales.max() < 1.5 and scales.max() > 1.45 and scales.min() < 0.8
    assert rots.min() >= -30 and rots.max() < 30 and rots.min() < -29 and rots.max() > 29
    for d in draws:
        lim = 40 * s0 * d.aug_scale
        assert int(-lim) <= d.dx < int(lim) and int(-lim) <= d.dy < int(lim)
        assert isinstance(d.dx, int) and isinstance(d.flip, bool)
    flips = np.mean([d.flip for d in draws])
    assert 0.45 < flips < 0.55
    # legacy RandomState works too (this is how the official process draws)
    d = sample_augment_params(np.random.RandomState(0), w, h, cfg)
    assert 0.75 <= d.aug_scale < 1.5


def test_sampler_no_translation_or_flip():
    cfg = AugmentConfig(max_translate=0, flip_prob=0.0, max_rotation=0)
    d = sample_augment_params(np.random.default_rng(0), 100, 100, cfg)
    assert (d.dx, d.dy, d.flip, d.rot_deg) == (0, 0, False, 0.0)


# ------------------------------------------------------------------------------------------ seeding
def test_per_sample_seeding_reproducible(tmp_path):
    rng = np.random.default_rng(2)
    _write(tmp_path, CROWDPOSE_NAMES, _random_people(rng, 6, 14, (80, 60)))
    kw = dict(input_size=64, output_sizes=(16, 32))
    a = CocoKeypointDataset(tmp_path, "train2017", seed=7, **kw)
    b = CocoKeypointDataset(tmp_path, "train2017", seed=7, **kw)
    c = CocoKeypointDataset(tmp_path, "train2017", seed=8, **kw)
    n = len(a)
    pa = [a.make_sample(i).params for i in range(n)]
    assert pa == [b.make_sample(i).params for i in reversed(range(n))][::-1]  # order independent
    assert pa != [c.make_sample(i).params for i in range(n)]
    assert len(set(pa)) == n  # indices draw independently
    a.set_epoch(1)
    pa1 = [a.make_sample(i).params for i in range(n)]
    assert all(x != y for x, y in zip(pa, pa1))
    a.set_epoch(0)
    assert [a.make_sample(i).params for i in range(n)] == pa

    # A DataLoader with workers yields exactly the samples of the sequential loop.
    loader = torch.utils.data.DataLoader(a, batch_size=None, num_workers=2, shuffle=False)
    for i, (img, hms, masks, idx) in enumerate(loader):
        ref = a[i]
        assert torch.equal(img, ref[0])
        assert all(torch.equal(x, y) for x, y in zip(hms, ref[1]))
        assert all(torch.equal(x, y) for x, y in zip(idx, ref[3]))


def test_augment_false_is_deterministic_centre_crop(tmp_path):
    rng = np.random.default_rng(4)
    _write(tmp_path, CROWDPOSE_NAMES, _random_people(rng, 2, 14, (80, 60)))
    ds = CocoKeypointDataset(tmp_path, "train2017", input_size=60, output_sizes=(15, 30), augment=False)
    s1, s2 = ds.make_sample(0), ds.make_sample(0)
    assert s1.params == AugmentParams.identity()
    np.testing.assert_array_equal(s1.image_warped, s2.image_warped)
    # scale = short side: the 60x60 input is the central 60x60 crop of the 80x60 image, pixel for pixel
    raw = ds.load_image(0)
    np.testing.assert_array_equal(s1.image_warped, raw[:, 10:70])
    np.testing.assert_allclose(s1.affine_input, [[1, 0, -10], [0, 1, 0]], atol=1e-12)


# ------------------------------------------------------------------------------------------ heatmaps
def _edge_joints(rng, p, k, h, w):
    j = np.zeros((p, k, 3))
    j[..., 0] = rng.uniform(-3, w + 3, (p, k))
    j[..., 1] = rng.uniform(-3, h + 3, (p, k))
    j[..., 2] = rng.choice([0, 1, 2], (p, k), p=[0.2, 0.4, 0.4])
    # edges: just inside / outside every border, and -1 < x < 0 (int() truncates to column 0)
    specials = [(-0.5, 5.2), (-0.999, -0.3), (-1.0, 3.0), (w - 0.01, 2.0), (float(w), 1.0), (3.0, h - 1e-6),
                (2.0, float(h)), (0.0, 0.0), (w - 1.0, h - 1.0), (w / 2, -0.2)]
    for n, (x, y) in enumerate(specials):
        j[n % p, n % k] = (x, y, 2)
    return j


@pytest.mark.parametrize("shape,sigma", [((32, 32), 2.0), ((24, 40), 2.0), ((17, 13), 1.0), ((40, 40), 3.0)])
def test_render_heatmaps_matches_slow_reference(shape, sigma):
    rng = np.random.default_rng(int(sigma * 100) + shape[0])
    h, w = shape
    for _ in range(3):
        joints = _edge_joints(rng, 6, 5, h, w)
        res = shape if h != w else h
        fast = render_heatmaps(joints, res, sigma)
        slow = render_heatmaps_reference(joints, res, sigma)
        assert fast.dtype == np.float32 and fast.shape == (5, h, w)
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-7)
    # -1 < x < 0 is drawn at column 0
    j = np.array([[[-0.5, 5.2, 2]]])
    hm = render_heatmaps(j, (h, w), sigma)
    assert hm[0, 5, 0] == 1.0
    assert render_heatmaps(np.array([[[-1.0, 5.0, 2]]]), (h, w), sigma).max() == 0


def _joint_indices_slow(joints, h, w, max_people, tag_per_joint):
    out = np.zeros((max_people, joints.shape[1], 2), dtype=np.int32)
    for i in range(len(joints)):
        tot = 0
        for idx, pt in enumerate(joints[i]):
            x, y = int(pt[0]), int(pt[1])
            if pt[2] > 0 and 0 <= x < w and 0 <= y < h:
                out[i][tot] = ((idx * h * w if tag_per_joint else 0) + y * w + x, 1)
                tot += 1
    return out


@pytest.mark.parametrize("tag_per_joint", [True, False])
def test_joint_indices_match_slow_reference(tag_per_joint):
    rng = np.random.default_rng(5)
    for shape in [(32, 32), (24, 40)]:
        joints = _edge_joints(rng, 12, 17, *shape)
        res = shape if shape[0] != shape[1] else shape[0]
        fast = joint_indices(joints, res, max_people=30, tag_per_joint=tag_per_joint)
        np.testing.assert_array_equal(fast, _joint_indices_slow(joints, *shape, 30, tag_per_joint))


# ------------------------------------------------------------------------------------------ truncation
def test_truncation_beyond_max_people():
    rng = np.random.default_rng(6)
    p, k, r = 40, 4, 32
    joints = np.zeros((p, k, 3))
    joints[..., :2] = rng.uniform(0, r, (p, k, 2))
    joints[..., 2] = 2
    joints[5, :, 2] = 0  # nothing visible: dropped first
    joints[7, :, 0] = 50  # all out of frame: dropped too
    with pytest.warns(RuntimeWarning, match="8 person\\(s\\) with visible joints beyond max_people=30"):
        idx = joint_indices(joints, r, max_people=30)
    kept = [i for i in range(p) if i not in (5, 7)][:30]
    np.testing.assert_array_equal(idx, _joint_indices_slow(joints[kept], r, r, 30, True))
    with pytest.raises(TooManyPeopleError, match="max_people=30"):
        joint_indices(joints, r, max_people=30, on_overflow="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        joint_indices(joints, r, max_people=30, on_overflow="ignore")
        # 32 persons of which 2 empty: everything fits, nothing is lost, no warning
        few = np.delete(joints, np.s_[32:], axis=0)
        idx = joint_indices(few, r, max_people=30)
    np.testing.assert_array_equal(idx, _joint_indices_slow(few[[i for i in range(32) if i not in (5, 7)]], r, r, 30, True))
    # heatmaps still contain every person
    hm = render_heatmaps(joints, r)
    assert hm.max() == 1


def test_dataset_warns_once_on_overflow(tmp_path):
    rng = np.random.default_rng(7)
    people = _random_people(rng, 2, 14, (80, 60), people=(6, 7))
    for persons in people:
        for kp in persons:
            kp[:, 2] = 2
    _write(tmp_path, CROWDPOSE_NAMES, people)
    kw = dict(input_size=64, output_sizes=(16,), augment=False)
    ds = CocoKeypointDataset(tmp_path, "train2017", target_config=TargetConfig(max_people=3), **kw)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds[0], ds[1], ds[0]
    assert len([w for w in rec if "max_people=3" in str(w.message)]) == 1
    strict = CocoKeypointDataset(tmp_path, "train2017",
                                 target_config=TargetConfig(max_people=3, on_overflow="raise"), **kw)
    with pytest.raises(TooManyPeopleError):
        strict[0]
