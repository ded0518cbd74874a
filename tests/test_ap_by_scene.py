"""scripts/ap_by_scene.py: scene buckets count the right people and joints; the same detections are scored per bucket."""
from __future__ import annotations

import json

import pytest
from script_module import load_script


def _script():
    return load_script("ap_by_scene")


def _person(image_id: int, visibilities: list[int], iscrowd: int = 0) -> dict:
    kps = []
    for v in visibilities:
        kps += [10.0, 10.0, v] if v else [0.0, 0.0, 0]
    return {"image_id": image_id, "iscrowd": iscrowd, "num_keypoints": sum(1 for v in visibilities if v),
            "keypoints": kps}


def test_buckets_count_scorable_people_and_occluded_joints() -> None:
    vis_clear, vis_half = [2] * 10 + [0] * 7, [2] * 5 + [1] * 5 + [0] * 7
    dataset = {
        "images": [{"id": i} for i in (1, 2, 3, 4)],
        "annotations": [
            _person(1, vis_clear),                                   # 1 person, nothing occluded
            _person(2, vis_clear), _person(2, [2] * 9 + [1] + [0] * 7),  # 2 people, 1 of 20 joints occluded (5%)
            _person(2, [0] * 17),                                    # no keypoints: not scorable
            _person(3, vis_half), _person(3, vis_half), _person(3, vis_clear, iscrowd=1),  # crowd not counted
            # image 4: nobody scorable
        ],
    }
    module = _script()
    assert module.scene_counts(dataset) == {1: (1, 10, 0), 2: (2, 20, 1), 3: (2, 20, 10)}
    b = module.scene_buckets(dataset)
    assert b["all images"] == [1, 2, 3, 4]
    assert b["1 person"] == [1] and b["2 people"] == [2, 3] and b["3 people"] == [] and b["5+ people"] == []
    assert b["no occluded joint"] == [1]
    assert b["occluded joints <= 15%"] == [2]
    assert b["occluded joints > 15%"] == [3]


def test_buckets_score_the_same_detections_per_scene(make_synthetic_dataset) -> None:
    """Ground truth as detections scores 1 everywhere; dropping every person of the 2-people images lowers
    that bucket (to 0) and the whole split, and leaves the 1-person bucket at 1."""
    data = make_synthetic_dataset(seed=3, num_train=1, num_val=24, image_size=128)
    ann_file = data / "annotations" / "person_keypoints_val2017.json"
    dataset = json.loads(ann_file.read_text())
    module = _script()
    counts = module.scene_counts(dataset)
    dets = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in dataset["annotations"] if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
    ids = [img["id"] for img in dataset["images"]]
    two = {i for i, c in counts.items() if c[0] == 2}
    assert two and any(c[0] == 1 for c in counts.values()), "the fixture needs 1- and 2-person images"

    rows = {r["scenes"]: r for r in module.bucket_table(ann_file, dataset, dets, ids)}
    assert rows["all images"]["AP"] == pytest.approx(1.0) and rows["2 people"]["AP"] == pytest.approx(1.0)
    assert rows["all images"]["images"] == 24 and rows["2 people"]["images"] == len(two)
    assert rows["2 people"]["people"] == 2 * len(two)

    kept = [d for d in dets if d["image_id"] not in two]
    rows = {r["scenes"]: r for r in module.bucket_table(ann_file, dataset, kept, ids)}
    assert rows["1 person"]["AP"] == pytest.approx(1.0)
    assert rows["2 people"]["AP"] == pytest.approx(0.0)
    assert rows["all images"]["AP"] < 1.0


def test_cli_writes_the_table(make_synthetic_dataset, tmp_path, capsys) -> None:
    data = make_synthetic_dataset(seed=4, num_train=1, num_val=3, image_size=128)
    out = tmp_path / "scenes.json"
    with pytest.warns(Warning):  # random weights
        _script().main(["--model", "teacher:tiny", "--data", str(data), "--input-size", "128", "--no-progress",
                        "--out", str(out)])
    table = json.loads(out.read_text())
    assert table["images"] == 3 and table["rows"][0]["scenes"] == "all images" and table["rows"][0]["images"] == 3
    assert "| all images | 3 |" in capsys.readouterr().out
