"""Bad input gives one clear DataError naming the file / record (never a silent wrong target)."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from distill.data.coco import CocoKeypointDataset, ImageReadError
from distill.errors import DataError
from distill.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON

K = 17


def _person(ann_id, image_id, rng, w, h, num_visible=5, **extra):
    kps = [0] * (3 * K)
    for j in rng.choice(K, size=num_visible, replace=False):
        kps[3 * j: 3 * j + 3] = [int(rng.integers(1, w - 1)), int(rng.integers(1, h - 1)), 2]
    ann = {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "num_keypoints": num_visible,
        "keypoints": kps, "bbox": [0, 0, w, h], "area": float(w * h),
        "segmentation": [[1, 1, w - 2, 1, w - 2, h - 2, 1, h - 2]],
    }
    ann.update(extra)
    return ann


def make_dataset(root: Path, num_images: int = 3, size=(64, 48), seed: int = 0) -> dict:
    """A small valid COCO keypoint dataset: random JPEGs + one json; returns the json dict."""
    rng = np.random.default_rng(seed)
    w, h = size
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "train2017").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        name = f"{i + 1:012d}.jpg"
        cv2.imwrite(str(root / "train2017" / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        anns.append(_person(100 + i, i + 1, rng, w, h))
    data = {
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": [list(e) for e in COCO_SKELETON]}],
    }
    write_json(root, data)
    return data


def write_json(root: Path, data) -> Path:
    path = root / "annotations" / "person_keypoints_train2017.json"
    path.write_text(json.dumps(data))
    return path


def small(root, **kw):
    return CocoKeypointDataset(root, "train2017", input_size=64, output_sizes=(16, 32), **kw)


def test_valid_fabricated_dataset_loads(tmp_path):
    make_dataset(tmp_path)
    ds = small(tmp_path)
    assert len(ds) == 3
    img, hms, masks, idx = ds[0]
    assert img.shape == (3, 64, 64) and hms[1].shape == (17, 32, 32) and idx[0].shape == (30, 17, 2)


def test_missing_image_file(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "train2017" / "000000000002.jpg").unlink()
    ds = small(tmp_path)
    with pytest.raises(DataError) as ei:
        ds[1]
    msg = str(ei.value)
    assert "000000000002.jpg" in msg and "image id 2" in msg and "does not exist" in msg


def test_corrupt_jpeg(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "train2017" / "000000000001.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    ds = small(tmp_path)
    with pytest.raises(DataError) as ei:
        ds[0]
    msg = str(ei.value)
    assert "000000000001.jpg" in msg and "image id 1" in msg and "could not be decoded" in msg


def test_truncated_jpeg(tmp_path):
    """OpenCV decodes a cut-off JPEG with grey rows and only a warning; we refuse it."""
    make_dataset(tmp_path)
    p = tmp_path / "train2017" / "000000000003.jpg"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    ds = small(tmp_path)
    with pytest.raises(DataError, match=r"000000000003\.jpg.*image id 3.*truncated JPEG"):
        ds[2]


def test_image_size_differs_from_json(tmp_path):
    data = make_dataset(tmp_path)
    data["images"][0]["width"] = 100
    write_json(tmp_path, data)
    ds = small(tmp_path)
    with pytest.raises(DataError, match=r"000000000001\.jpg.*64x48 pixels but the annotation file says 100x48"):
        ds[0]


def test_keypoints_wrong_length(tmp_path):
    data = make_dataset(tmp_path)
    data["annotations"][1]["keypoints"] = data["annotations"][1]["keypoints"][:-3]
    write_json(tmp_path, data)
    with pytest.raises(DataError) as ei:
        small(tmp_path)
    msg = str(ei.value)
    assert "person_keypoints_train2017.json" in msg
    assert "annotation id 101" in msg and "image id 2" in msg
    assert "48 values" in msg and "expected 51" in msg


def test_keypoints_not_numbers(tmp_path):
    data = make_dataset(tmp_path)
    data["annotations"][2]["keypoints"][4] = "x"
    write_json(tmp_path, data)
    with pytest.raises(DataError, match=r"annotation id 102: 'keypoints' must be finite numbers"):
        small(tmp_path)


def test_unknown_category_id(tmp_path):
    data = make_dataset(tmp_path)
    data["annotations"][0]["category_id"] = 7
    write_json(tmp_path, data)
    with pytest.raises(DataError) as ei:
        small(tmp_path)
    msg = str(ei.value)
    assert "annotation id 100" in msg and "unknown category id 7" in msg and "[1]" in msg


def test_annotation_of_unknown_image(tmp_path):
    data = make_dataset(tmp_path)
    data["annotations"][0]["image_id"] = 999
    write_json(tmp_path, data)
    with pytest.raises(DataError, match=r"annotation id 100.*image id 999 is not in 'images'"):
        small(tmp_path)


@pytest.mark.parametrize("drop", ["images", "annotations", "categories"])
def test_not_coco_missing_key(tmp_path, drop):
    data = make_dataset(tmp_path)
    del data[drop]
    path = write_json(tmp_path, data)
    with pytest.raises(DataError) as ei:
        small(tmp_path)
    msg = str(ei.value)
    assert str(path) in msg and f"'{drop}'" in msg and "not a COCO annotation file" in msg


def test_not_json(tmp_path):
    make_dataset(tmp_path)
    path = tmp_path / "annotations" / "person_keypoints_train2017.json"
    path.write_text("images: [1, 2]\n")
    with pytest.raises(DataError, match=r"person_keypoints_train2017\.json is not valid JSON"):
        small(tmp_path)
    path.write_bytes(b"\xff\xd8\xff\xe0 binary")
    with pytest.raises(DataError, match="not UTF-8"):
        small(tmp_path)
    path.write_text("[1, 2, 3]")
    with pytest.raises(DataError, match="top level is a list"):
        small(tmp_path)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError, match=r"person_keypoints_train2017\.json does not exist"):
        small(tmp_path)


def test_category_without_keypoints_and_ambiguous_categories(tmp_path):
    data = make_dataset(tmp_path)
    bad = copy.deepcopy(data)
    del bad["categories"][0]["keypoints"]
    write_json(tmp_path, bad)
    with pytest.raises(DataError, match="no category has a 'keypoints' list"):
        small(tmp_path)

    two = copy.deepcopy(data)
    two["categories"].append(dict(two["categories"][0], id=2, name="robot"))
    write_json(tmp_path, two)
    with pytest.raises(DataError, match=r"2 categories have keypoints.*choose one"):
        small(tmp_path)
    ds = small(tmp_path, category="person")
    assert ds.category_id == 1 and len(ds) == 3
    assert small(tmp_path, category=2).category_id == 2  # no annotations of category 2 -> no images kept
    with pytest.raises(DataError, match="no category with id 5"):
        small(tmp_path, category=5)


def test_crowd_without_segmentation(tmp_path):
    data = make_dataset(tmp_path)
    data["annotations"][0].update(iscrowd=1, num_keypoints=0)
    del data["annotations"][0]["segmentation"]
    write_json(tmp_path, data)
    with pytest.raises(DataError, match=r"annotation id 100.*crowd needs a 'segmentation'"):
        small(tmp_path)


def test_duplicate_ids(tmp_path):
    data = make_dataset(tmp_path)
    data["annotations"][1]["id"] = 100
    write_json(tmp_path, data)
    with pytest.raises(DataError, match="annotation id 100 appears more than once"):
        small(tmp_path)


def test_skip_bad_images_counts(tmp_path):
    make_dataset(tmp_path, num_images=5)
    (tmp_path / "train2017" / "000000000002.jpg").unlink()
    (tmp_path / "train2017" / "000000000004.jpg").write_bytes(b"garbage")
    ds = small(tmp_path, skip_bad_images=True)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = [ds[i] for i in range(len(ds))]
    assert ds.skipped == 2
    skip_warnings = [w for w in rec if "skipping unreadable image" in str(w.message)]
    assert len(skip_warnings) == 2
    assert "000000000002.jpg" in str(skip_warnings[0].message)
    assert len(out) == 5 and all(o[0].shape == (3, 64, 64) for o in out)
    # Bad index 1 was replaced by the next readable one (2) with that index's own draws.
    np.testing.assert_array_equal(out[1][0].numpy(), ds[2][0].numpy())
    # Known-bad images are not re-read nor re-counted.
    ds[1]
    assert ds.skipped == 2
    # Without skipping, the same dataset raises.
    with pytest.raises(ImageReadError):
        small(tmp_path)[3]


def _edit(tmp_path, change) -> None:
    data = make_dataset(tmp_path)
    change(data)
    write_json(tmp_path, data)


def _set_joint(ann, j, x, y, v):
    ann["keypoints"][3 * j: 3 * j + 3] = [x, y, v]


@pytest.mark.parametrize("v", [5, -1, 0.5, 3])
def test_visibility_outside_0_1_2(tmp_path, v):
    _edit(tmp_path, lambda d: _set_joint(d["annotations"][0], 0, 10, 10, v))
    with pytest.raises(DataError, match=r"annotation id 100: joint 0 has visibility .*expected 0 \(not labelled\)"):
        small(tmp_path)


@pytest.mark.parametrize("nk", [0, 4, 17])
def test_num_keypoints_disagreeing_with_the_labels(tmp_path, nk):
    _edit(tmp_path, lambda d: d["annotations"][1].update(num_keypoints=nk))
    with pytest.raises(DataError, match=f"annotation id 101: 'num_keypoints' is {nk} but 5 joints are labelled"):
        small(tmp_path)


@pytest.mark.parametrize("x,y", [(-100, 10), (1e30, 10), (10, 200), (10, -49)])
def test_joint_far_outside_its_image(tmp_path, x, y):
    def change(d):
        a = d["annotations"][2]
        j = next(k for k in range(K) if a["keypoints"][3 * k + 2] > 0)
        _set_joint(a, j, x, y, 2)
    _edit(tmp_path, change)
    with pytest.raises(DataError, match="annotation id 102: joint .* is far outside its 64x48 image"):
        small(tmp_path)


def test_joint_just_outside_its_image_is_counted_not_refused(tmp_path):
    def change(d):
        a = d["annotations"][0]
        j = next(k for k in range(K) if a["keypoints"][3 * k + 2] > 0)
        _set_joint(a, j, -3, 10, 1)
    _edit(tmp_path, change)
    with pytest.warns(UserWarning, match="1 labelled joint\\(s\\) in 1 annotation\\(s\\) lie outside their image"):
        assert len(small(tmp_path)) == 3


def test_repeated_joint_name(tmp_path):
    _edit(tmp_path, lambda d: d["categories"][0]["keypoints"].__setitem__(2, "left_eye"))
    with pytest.raises(DataError, match=r"joint name\(s\) \['left_eye'\] appear more than once"):
        small(tmp_path)


def test_flip_pair_naming_a_missing_joint(tmp_path):
    _edit(tmp_path, lambda d: d["categories"][0]["keypoints"].__setitem__(10, "right_wristt"))
    with pytest.raises(DataError, match=r"\['left_wrist', 'right_wristt'\] name a side but their mirror"):
        small(tmp_path)


@pytest.mark.parametrize("edge", [[0, 1], [1, 18], [1], ["a", 2], [1.5, 2]])
def test_skeleton_edge_naming_no_joint(tmp_path, edge):
    _edit(tmp_path, lambda d: d["categories"][0]["skeleton"].append(edge))
    with pytest.raises(DataError, match=r"skeleton\[19\] = .*expected two joint ids in 1..17"):
        small(tmp_path)


def test_corrupt_bytes_inside_a_jpeg_are_an_error_not_a_garbled_picture(tmp_path):
    make_dataset(tmp_path)
    jpg = tmp_path / "train2017" / "000000000002.jpg"
    raw = bytearray(jpg.read_bytes())
    for k in range(len(raw) // 3, len(raw) // 3 + 200):
        raw[k] = 0xFF if k % 2 else 0x00
    jpg.write_bytes(bytes(raw))
    assert cv2.imread(str(jpg)) is not None  # OpenCV alone "decodes" it, with a libjpeg warning only
    with pytest.raises(ImageReadError, match=r"000000000002.jpg \(image id 2\) is a corrupt JPEG \(libjpeg: "):
        small(tmp_path).load_image(1)


def test_predict_reads_images_with_the_same_checks(tmp_path):
    from distill.predict import read_image

    make_dataset(tmp_path)
    jpg = tmp_path / "train2017" / "000000000001.jpg"
    np.testing.assert_array_equal(read_image(jpg), cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB))
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match="truncated JPEG"):
        read_image(jpg)
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("field", ["id", "name"])
def test_repeated_category(tmp_path, field):
    def change(d):
        extra = {"id": 2, "name": "robot", "keypoints": ["a"], "skeleton": []}
        extra[field] = d["categories"][0][field]
        d["categories"].append(extra)
    _edit(tmp_path, change)
    with pytest.raises(DataError, match=f"category {field} .* appears more than once in 'categories'"):
        small(tmp_path)
