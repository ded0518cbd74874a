"""CrowdPose-format data: conversion, crowd index, and CrowdPose's metrics selected from the annotation file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.data.crowdpose import (CROWDPOSE_KEYPOINT_NAMES, CROWDPOSE_STAT_NAMES, coco_to_crowdpose, crowd_index,
                                    is_crowdpose)
from distill.data.synthetic import annotation_file, ensure_dataset, gt_self_ap
from distill.evaluate import coco_keypoint_eval, format_stats

pytest.importorskip("xtcocotools.cocoeval", reason="CrowdPose metrics need xtcocotools (installed by `make install`)",
                    exc_type=ImportError)


def test_crowd_index_by_hand() -> None:
    a = np.array([[0, 0, 2], [10, 10, 2]], float)  # box (0,0)-(10,10), 2 joints
    b = np.array([[5, 5, 2], [20, 20, 2], [30, 30, 0]], float)  # box (5,5)-(20,20), 2 labelled joints
    # a's box holds one of b's joints (5,5): 1/2; b's box holds one of a's joints (10,10): 1/2
    assert crowd_index([a, b]) == pytest.approx(0.5)
    assert crowd_index([a]) == 0.0


def test_conversion_maps_the_joints() -> None:
    k = np.zeros((17, 3))
    k[:, 0], k[:, 1], k[:, 2] = np.arange(17), np.arange(17) * 2, 2
    k[6, 2] = 0  # right shoulder unlabelled: no neck
    doc = {"images": [{"id": 1}], "categories": [{"id": 1, "keypoints": [f"j{i}" for i in range(17)]}],
           "annotations": [{"id": 1, "image_id": 1, "keypoints": k.reshape(-1).tolist(), "num_keypoints": 16}]}
    out = coco_to_crowdpose(doc)
    got = np.array(out["annotations"][0]["keypoints"]).reshape(14, 3)
    np.testing.assert_array_equal(got[:12, 0], np.arange(5, 17))  # shoulders .. ankles keep COCO's order
    assert got[12, 0] == 0 and got[12, 2] == 2  # head = nose
    assert got[13, 2] == 0  # neck needs both shoulders
    assert out["annotations"][0]["num_keypoints"] == 12
    assert out["categories"][0]["keypoints"] == list(CROWDPOSE_KEYPOINT_NAMES)
    assert out["images"][0]["crowdIndex"] == 0.0 and is_crowdpose(out) and not is_crowdpose(doc)


@pytest.fixture(scope="module")
def crowd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crowdpose")
    ensure_dataset(root, seed=3, num_train=1, num_val=16, image_size=256, progress=False, keypoint_format="crowdpose")
    return root


def test_synth_writes_crowdpose_and_is_scored_the_crowdpose_way(crowd_root: Path) -> None:
    ann = annotation_file(crowd_root, "val2017")
    data = json.loads(ann.read_text())
    assert is_crowdpose(data) and len(data["categories"][0]["keypoints"]) == 14
    assert any(im["crowdIndex"] > 0 for im in data["images"])
    assert gt_self_ap(ann) == pytest.approx(1.0)
    people = [a for a in data["annotations"] if not a.get("iscrowd") and a["num_keypoints"] > 0]
    perfect = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0} for a in people]
    stats = coco_keypoint_eval(ann, perfect)
    assert set(CROWDPOSE_STAT_NAMES) <= set(stats) and stats["AP"] == pytest.approx(1.0)
    assert stats["APm"] == -1.0  # no area ranges in CrowdPose
    assert "AP_easy" in format_stats(stats)
    # shifted people: AP drops, and easy/medium react to the images' crowd index
    rng = np.random.default_rng(0)
    shifted = [{**r, "keypoints": (np.array(r["keypoints"]) + np.tile([*rng.normal(0, 4, 2), 0], 14)).tolist()}
               for r in perfect]
    worse = coco_keypoint_eval(ann, shifted)
    assert worse["AP"] < 0.9 and 0 <= worse["AP_easy"] <= 1


def test_training_data_path_reads_crowdpose(crowd_root: Path) -> None:
    from distill.data.coco import CocoKeypointDataset

    ds = CocoKeypointDataset(crowd_root, "val2017", input_size=128, output_sizes=(32, 64))
    assert ds.num_joints == 14 and sorted(ds.spec.flip_index) == list(range(14))
    assert ds.spec.flip_index[12] == 12 and ds.spec.flip_index[0] == 1  # head stays, shoulders swap
