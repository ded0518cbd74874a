"""The embedded synthetic dataset: deterministic, valid COCO keypoint format, varied enough to be useful."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from distill.data import synthetic as synth
from distill.commands import synth as synthetic_cli
from distill.errors import DataError
from distill.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON, KeypointSpec

N_TRAIN, N_VAL, SIZE = 12, 6, 256


def _generate(path: Path, seed: int = 0, num_train: int = N_TRAIN, num_val: int = N_VAL) -> dict:
    return synth.generate_dataset(path, seed=seed, num_train=num_train, num_val=num_val, image_size=SIZE,
                                  progress=False)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    out = {"a": root / "a", "b": root / "b", "seed1": root / "seed1"}
    _generate(out["a"])
    _generate(out["b"])
    _generate(out["seed1"], seed=1)
    return out


def _load(root: Path, split: str) -> dict:
    return json.loads(synth.annotation_file(root, split).read_text())


def _all_annotations(root: Path) -> list[dict]:
    return [a for s in synth.SPLITS for a in _load(root, s)["annotations"]]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical(datasets: dict[str, Path]) -> None:
    a, b = _files(datasets["a"]), _files(datasets["b"])
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.endswith(".jpg")]) == N_TRAIN + N_VAL
    for name in a:
        assert a[name] == b[name], name


def test_different_seed_differs(datasets: dict[str, Path]) -> None:
    a, c = _files(datasets["a"]), _files(datasets["seed1"])
    for split in synth.SPLITS:
        name = f"annotations/person_keypoints_{split}.json"
        assert a[name] != c[name]
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert sorted(jpgs) == sorted(k for k in c if k.endswith(".jpg"))  # same names, different content
    assert all(a[k] != c[k] for k in jpgs)


def test_images_are_seeded_per_image(tmp_path: Path, datasets: dict[str, Path]) -> None:
    """A smaller dataset is a prefix of a larger one: every image depends only on (seed, split, index)."""
    _generate(tmp_path, num_train=3, num_val=2)
    for split in synth.SPLITS:
        small, big = _load(tmp_path, split), _load(datasets["a"], split)
        ids = {im["id"] for im in small["images"]}
        assert small["images"] == big["images"][: len(small["images"])]
        assert small["annotations"] == [a for a in big["annotations"] if a["image_id"] in ids]
        for im in small["images"]:
            assert (tmp_path / split / im["file_name"]).read_bytes() == \
                   (datasets["a"] / split / im["file_name"]).read_bytes()


def test_layout_and_top_level(datasets: dict[str, Path]) -> None:
    root = datasets["a"]
    for split, n in (("train2017", N_TRAIN), ("val2017", N_VAL)):
        data = _load(root, split)
        assert list(data) == ["info", "licenses", "images", "annotations", "categories"]
        assert len(data["images"]) == n
        assert data["categories"] == [{
            "supercategory": "person", "id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES),
            "skeleton": [list(e) for e in COCO_SKELETON]}]
        assert KeypointSpec.from_category(data["categories"][0]) == KeypointSpec.coco()
        for im in data["images"]:
            assert re.fullmatch(r"\d{12}\.jpg", im["file_name"])
            assert int(im["file_name"][:-4]) == im["id"]
            img = cv2.imread(str(root / split / im["file_name"]), cv2.IMREAD_COLOR)
            assert img is not None and img.shape == (im["height"], im["width"], 3)
            assert max(im["height"], im["width"]) == SIZE
            assert min(im["height"], im["width"]) >= 0.75 * SIZE
            assert im["height"] % 8 == 0 and im["width"] % 8 == 0
    train_ids = {im["id"] for im in _load(root, "train2017")["images"]}
    val_ids = {im["id"] for im in _load(root, "val2017")["images"]}
    assert not train_ids & val_ids
    ann_ids = [a["id"] for a in _all_annotations(root)]
    assert len(ann_ids) == len(set(ann_ids))


def test_loads_in_pycocotools(datasets: dict[str, Path]) -> None:
    for split in synth.SPLITS:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(synth.annotation_file(datasets["a"], split)))
        assert coco.getCatIds(catNms=["person"]) == [1]
        assert len(coco.getImgIds()) == (N_TRAIN if split == "train2017" else N_VAL)
        assert len(coco.getAnnIds(iscrowd=None)) == len(coco.dataset["annotations"])


def test_annotation_records_are_consistent(datasets: dict[str, Path]) -> None:
    for split in synth.SPLITS:
        data = _load(datasets["a"], split)
        sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
        for ann in data["annotations"]:
            h, w = sizes[ann["image_id"]]
            assert ann["category_id"] == 1
            kps = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            assert kps.shape == (17, 3)
            v = kps[:, 2]
            assert set(v.tolist()) <= {0.0, 1.0, 2.0}
            assert ann["num_keypoints"] == int((v > 0).sum())
            assert (kps[v == 0, :2] == 0).all()
            lab = kps[v > 0]
            assert ((lab[:, 0] >= 0) & (lab[:, 0] < w) & (lab[:, 1] >= 0) & (lab[:, 1] < h)).all()
            seg = ann["segmentation"]
            if ann["iscrowd"]:
                assert ann["num_keypoints"] == 0
                assert isinstance(seg, dict) and isinstance(seg["counts"], list) and seg["size"] == [h, w]
                assert sum(seg["counts"]) == h * w
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                assert isinstance(seg, list) and seg and all(len(p) >= 6 and len(p) % 2 == 0 for p in seg)
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                area = float(mask_utils.area(rle))
                box = mask_utils.toBbox(rle)
            assert ann["area"] == pytest.approx(area) and ann["area"] > 0
            assert ann["bbox"] == pytest.approx(box.tolist(), abs=0.01)
            x, y, bw, bh = ann["bbox"]
            assert bw > 0 and bh > 0 and x >= 0 and y >= 0 and x + bw <= w + 1e-6 and y + bh <= h + 1e-6
            assert ann["area"] <= bw * bh + 1e-6


def test_dataset_has_the_hard_cases(datasets: dict[str, Path]) -> None:
    root = datasets["a"]
    s = {k: sum(synth.summarize_split(synth.annotation_file(root, sp))[k] for sp in synth.SPLITS)
         for k in synth.summarize_split(synth.annotation_file(root, "val2017"))}
    assert s["crowd_regions"] > 0
    assert s["persons_without_keypoints"] > 0
    assert s["small"] > 0 and s["medium"] > 0 and s["large"] > 0
    assert s["occluded_keypoints"] > 0 and s["visible_keypoints"] > s["occluded_keypoints"]
    anns = _all_annotations(root)
    assert any(0 < a["num_keypoints"] < 17 for a in anns)  # some joints outside the image (v=0)
    per_image: dict[int, int] = {}
    for a in anns:
        if not a["iscrowd"] and a["num_keypoints"] > 0:
            per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert max(per_image.values()) >= 3
    nk0 = [a for a in anns if not a["iscrowd"] and a["num_keypoints"] == 0]
    assert all(a["keypoints"] == [0] * 51 for a in nk0)
    assert s["persons"] == s["persons_with_keypoints"] + s["persons_without_keypoints"]
    assert s["labelled_keypoints"] == s["visible_keypoints"] + s["occluded_keypoints"]
    assert s["persons_with_keypoints"] == s["small"] + s["medium"] + s["large"]


def test_left_right_follows_the_facing_direction(datasets: dict[str, Path]) -> None:
    """Facing the camera (face visible): the person's left shoulder is on the image right; from the back,
    on the image left. This is the mirror-consistent cue the labels follow."""
    front, back = [], []
    for a in _all_annotations(datasets["a"]) + _all_annotations(datasets["seed1"]):
        k = np.array(a["keypoints"], dtype=np.float64).reshape(17, 3)
        if a["num_keypoints"] == 0 or (k[[5, 6, 11, 12], 2] == 0).any():
            continue
        if not k[5:7, 1].mean() < k[11:13, 1].mean() - 5:  # upright enough for "left" to mean image side
            continue
        if (k[0:3, 2] == 2).all():
            front.append(k[5, 0] > k[6, 0])
        elif (k[0:3, 2] == 1).all() and (k[3:5, 2] == 2).all():
            back.append(k[5, 0] < k[6, 0])
    assert len(front) >= 15 and np.mean(front) >= 0.95
    assert len(back) >= 3 and np.mean(back) >= 0.66


def test_gt_self_ap_is_one(datasets: dict[str, Path]) -> None:
    for split in synth.SPLITS:
        assert synth.gt_self_ap(synth.annotation_file(datasets["a"], split)) == pytest.approx(1.0)


def test_summary_matches_manifest(datasets: dict[str, Path]) -> None:
    man = synth.load_manifest(datasets["a"])
    assert man is not None
    assert man["params"]["seed"] == 0 and man["params"]["num_train"] == N_TRAIN
    for split in synth.SPLITS:
        assert man["summary"][split] == synth.summarize_split(synth.annotation_file(datasets["a"], split))


def _cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    synthetic_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_generates_then_reuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    argv = ["--out", str(out), "--train", "4", "--val", "2", "--seed", "3"]
    assert synthetic_cli.run(_cli_args(*argv)) == 0
    text = capsys.readouterr().out
    assert "wrote the synthetic dataset" in text and "GT-vs-GT keypoint AP" in text and "1.0000" in text
    manifest = out / synth.MANIFEST_NAME
    stamp = manifest.stat().st_mtime_ns
    image = out / "train2017" / "000000000001.jpg"
    image_stamp = image.stat().st_mtime_ns

    assert synthetic_cli.run(_cli_args(*argv)) == 0
    text = capsys.readouterr().out
    assert "reusing" in text and "1.0000" in text
    assert manifest.stat().st_mtime_ns == stamp and image.stat().st_mtime_ns == image_stamp

    # Different parameters: regenerated (and stale extra images of the larger run removed).
    assert synthetic_cli.run(_cli_args("--out", str(out), "--train", "2", "--val", "2", "--seed", "3")) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "train2017").iterdir()) == ["000000000001.jpg", "000000000002.jpg"]

    # --force regenerates even with identical parameters.
    assert synthetic_cli.run(_cli_args("--out", str(out), "--train", "2", "--val", "2", "--seed", "3",
                                       "--force")) == 0
    assert "wrote" in capsys.readouterr().out


def test_incomplete_dataset_is_regenerated(tmp_path: Path) -> None:
    _generate(tmp_path, num_train=2, num_val=1)
    assert synth.dataset_is_complete(tmp_path, 0, 2, 1, SIZE)
    (tmp_path / "val2017" / "000001000001.jpg").unlink()  # e.g. killed mid-run, or a file lost
    assert not synth.dataset_is_complete(tmp_path, 0, 2, 1, SIZE)
    _, reused = synth.ensure_dataset(tmp_path, 0, 2, 1, SIZE, progress=False)
    assert not reused and (tmp_path / "val2017" / "000001000001.jpg").is_file()
    _, reused = synth.ensure_dataset(tmp_path, 0, 2, 1, SIZE, progress=False)
    assert reused


def test_refuses_to_overwrite_foreign_annotations(tmp_path: Path) -> None:
    ann = synth.annotation_file(tmp_path, "train2017")
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps({"info": {"description": "real COCO"}, "images": [], "annotations": [],
                               "categories": []}))
    with pytest.raises(DataError, match="refusing to overwrite"):
        synth.ensure_dataset(tmp_path, 0, 1, 1, SIZE, progress=False)
    assert "real COCO" in ann.read_text()
