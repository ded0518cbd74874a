"""Images nobody annotated (`data.unlabelled_split`, `distill image-info`): the image list, the dataset that holds
them after the training split's images, the trainer in teacher and pseudo mode, the teacher store, and the id rule
on real COCO files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.config import ConfigError, load_config
from distill.data.coco import CocoKeypointDataset
from distill.data.unlabelled import find_image_info, make_image_info, read_image_info, write_image_info
from distill.errors import DataError
from tests.test_inherit import TEACHER, _random_teacher
from tests.test_label_scarce import _config, _result
from tests.test_losses import J

SHARED_COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"
SPLIT = "extra2017"


@pytest.fixture(scope="module")
def data_with_extra(make_synthetic_dataset) -> Path:
    """A synthetic dataset (8 train, 1 val) plus a split `extra2017` of 3 images without annotations (another
    dataset's val images: ids 1000001.., no clash with the train ids 1..8), listed by `write_image_info`."""
    root = make_synthetic_dataset(seed=5, num_train=8, num_val=1, image_size=64)
    other = make_synthetic_dataset(seed=6, num_train=1, num_val=3, image_size=64)
    shutil.copytree(other / "val2017", root / SPLIT)
    write_image_info(root / SPLIT, root / "annotations" / f"image_info_{SPLIT}.json", show_progress=False)
    return root


# ------------------------------------------------------------------------------------------ the image list
def test_the_image_list_of_a_folder_follows_the_predict_id_rule(data_with_extra: Path, tmp_path: Path) -> None:
    doc = json.loads((data_with_extra / "annotations" / f"image_info_{SPLIT}.json").read_text())
    other = json.loads((data_with_extra / "annotations" / "person_keypoints_val2017.json").read_text())
    assert [im["id"] for im in doc["images"]] == [1000001, 1000002, 1000003]
    assert all(im["width"] == 64 or im["height"] == 64 for im in doc["images"])
    assert read_image_info(data_with_extra / "annotations" / f"image_info_{SPLIT}.json") == [
        {k: im[k] for k in ("id", "file_name", "width", "height")} for im in doc["images"]]
    assert other["images"][0]["id"] == 1000001  # (the root's own val image has that id too, in another split)

    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(data_with_extra / SPLIT / "000001000001.jpg", folder / "holiday.jpg")
    shutil.copy(data_with_extra / SPLIT / "000001000001.jpg", folder / "0042.jpg")
    got = make_image_info(folder, show_progress=False)["images"]
    assert [im["id"] for im in got] == [42, "holiday.jpg"]
    shutil.copy(folder / "0042.jpg", folder / "42.png")
    with pytest.raises(DataError, match="0042.jpg and .*42.png give the same image id 42"):
        make_image_info(folder, show_progress=False)
    (folder / "42.png").unlink()
    (folder / "43.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"43.png could not be decoded.*remove it from"):
        make_image_info(folder, show_progress=False)


@pytest.mark.parametrize("record, message", [
    ({"file_name": "a.jpg", "width": 4, "height": 4}, r"images\[0\]: 'id' must be an integer or a string"),
    ({"id": 1, "width": 4, "height": 4}, r"images\[0\] \(image id 1\): 'file_name' must be a non-empty string"),
    ({"id": 1, "file_name": "a.jpg", "width": 0, "height": 4}, r"'width' must be a positive integer, got 0"),
    ({"id": 1, "file_name": "a.jpg", "width": 4, "height": 4.5}, r"'height' must be a positive integer, got 4.5"),
])
def test_a_bad_image_list_names_the_record_and_field(tmp_path: Path, record: dict, message: str) -> None:
    path = tmp_path / "image_info_x.json"
    path.write_text(json.dumps({"images": [record]}))
    with pytest.raises(DataError, match=message):
        read_image_info(path)
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}] * 2}))
    with pytest.raises(DataError, match=r"images\[1\]: image id 1 appears twice"):
        read_image_info(path)
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="non-empty 'images' list"):
        read_image_info(path)


def test_a_split_without_an_image_list_says_how_to_make_one(data_with_extra: Path, tmp_path: Path) -> None:
    assert find_image_info(data_with_extra, SPLIT).name == f"image_info_{SPLIT}.json"
    assert find_image_info(data_with_extra, "val2017").name == "person_keypoints_val2017.json"  # its images only
    with pytest.raises(DataError, match=r"'nope2017': no image list.*distill image-info --images .*nope2017 --out"):
        find_image_info(data_with_extra, "nope2017")


# ------------------------------------------------------------------------------------------ the dataset
def test_the_dataset_holds_the_split_after_its_own_images_unlabelled_for_good(data_with_extra: Path) -> None:
    from distill.data.unlabelled import add_unlabelled_split

    ds = CocoKeypointDataset(data_with_extra, "train2017", input_size=64, output_sizes=(16, 32))
    own = list(ds.ids)
    assert add_unlabelled_split(ds, data_with_extra, SPLIT) == 3
    assert ds.ids == own + [1000001, 1000002, 1000003] and len(ds) == 11
    assert ds.unannotated_ids == ds.unlabelled_ids == frozenset({1000001, 1000002, 1000003})
    assert ds.image_path(8) == data_with_extra / SPLIT / "000001000001.jpg"
    sample = ds.make_sample(8)
    assert sample.image.shape[-2:] == (64, 64) and all(float(h.max()) == 0.0 for h in sample.heatmaps)
    assert ds.load_raw(8).mask.all() and not ds.is_labelled(8) and ds.is_labelled(0)
    ds.hide_annotations([own[0]])  # a label fraction on top: the split's images stay unlabelled
    assert ds.unlabelled_ids == frozenset({own[0], 1000001, 1000002, 1000003})
    with pytest.raises(ValueError, match="already added"):
        add_unlabelled_split(ds, data_with_extra, SPLIT)

    clash = CocoKeypointDataset(data_with_extra, "train2017", input_size=64, output_sizes=(16, 32))
    with pytest.raises(DataError, match=r"image_info_x.json: image id\(s\) \['1'\] are also images of"):
        clash.add_unlabelled_images([{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
                                    data_with_extra / SPLIT, "image_info_x.json")
    wrong = CocoKeypointDataset(data_with_extra, "train2017", input_size=64, output_sizes=(16, 32))
    wrong.add_unlabelled_images([{"id": 1000001, "file_name": "000001000001.jpg", "width": 99, "height": 64}],
                                data_with_extra / SPLIT, "image_info_x.json")
    with pytest.raises(DataError, match=r"000001000001.jpg \(image id 1000001\) is .* but image_info_x.json says 99x64"):
        wrong.load_image(len(wrong) - 1)


# ------------------------------------------------------------------------------------------ config + trainer
def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = _config(tmp_path, tmp_path, tmp_path / "t.pt")
    with pytest.raises(ConfigError, match="data.unlabelled = 'drop': must be 'teacher' or 'pseudo' with "
                                          "data.unlabelled_split 'extra2017'"):
        load_config(path, [f"data.unlabelled_split={SPLIT}"])
    with pytest.raises(ConfigError, match="data.unlabelled_split = 'val2017': must be another split"):
        load_config(path, ["data.unlabelled_split=val2017", "data.unlabelled=teacher"])
    with pytest.raises(ConfigError, match="data.pseudo_labels = '': data.unlabelled 'pseudo' needs"):
        load_config(path, [f"data.unlabelled_split={SPLIT}", "data.unlabelled=pseudo"])
    cfg = load_config(path, [f"data.unlabelled_split={SPLIT}", "data.unlabelled=teacher",
                             "data.unlabelled_per_batch=2"])
    assert cfg.data.unlabelled_split == SPLIT and cfg.data.label_fraction == 1.0


def test_the_trainer_adds_the_split_to_each_labelled_batch(tmp_path: Path, data_with_extra: Path) -> None:
    from distill.train import Trainer

    _, teacher_path = _random_teacher(tmp_path)
    path = _config(tmp_path, data_with_extra, teacher_path, unlabelled_split=SPLIT, unlabelled="teacher",
                   unlabelled_per_batch=1)
    trainer = Trainer(load_config(path))
    try:
        ds = trainer.dataset
        assert len(ds) == 11 and ds.unlabelled_ids == ds.unannotated_ids and trainer.passes_labelled
        assert trainer.steps_per_epoch == 4 and trainer.images_per_step == 3  # all 8 labelled images, + 1 each
        batches = list(trainer.loader)
        assert len(batches) == 4
        for batch in batches:
            assert batch.meta["labelled"].tolist() == [True, True, False]
            assert float(batch.heatmaps[0][2].max()) == 0.0  # nothing to learn from but the teacher
        logs = trainer.train_step(batches[0])
        assert "hm_kd_4" in logs and all(np.isfinite(v) for v in logs.values())
    finally:
        trainer.release()


def test_pseudo_labels_for_the_split_come_from_predict_on_its_folder(tmp_path: Path, data_with_extra: Path) -> None:
    from distill.train import Trainer

    pseudo = tmp_path / "teacher.json"
    pseudo.write_text(json.dumps([_result(i, 0.9, [0.9] * J) for i in (1000001, 1000002, 1000003)]))
    gt_only = ["teacher.name=''", "loss.alpha=0"]
    path = _config(tmp_path, data_with_extra, tmp_path / "unused.pt", unlabelled_split=SPLIT, unlabelled="pseudo",
                   pseudo_labels=str(pseudo))
    trainer = Trainer(load_config(path, gt_only))
    try:
        ds = trainer.dataset
        assert len(ds) == 11 and all(ds.is_labelled(i) for i in range(len(ds))) and not trainer.passes_labelled
        joints = ds.get_joints(ds.ids.index(1000002))
        assert joints.shape == (1, J, 3) and joints[0, 0, 0] == 10.0
        assert "push" in trainer.train_step(next(iter(trainer.loader)))
    finally:
        trainer.release()

    # results on other images (here: the training split's ids) are refused, not read as "nobody there"
    pseudo.write_text(json.dumps([_result(i, 0.9, [0.9] * J) for i in (1, 2, 3)]))
    with pytest.raises(DataError, match=r"none of its 3 results is for one of the 3 unlabelled images"):
        Trainer(load_config(path, gt_only + ["train.out=" + str(tmp_path / "run2")]))


def test_a_cached_teacher_store_built_with_the_split_serves_the_run(tmp_path: Path, data_with_extra: Path) -> None:
    from distill.cli import main
    from distill.errors import AEDistillError
    from distill.train import Trainer

    _, teacher_path = _random_teacher(tmp_path)
    store = tmp_path / "store"
    base = ["cache-teacher", "--teacher", TEACHER, "--weights", str(teacher_path), "--data", str(data_with_extra),
            "--input-size", "64", "--workers", "0", "--no-progress", "--batch-size", "4"]
    assert main(base + ["--out", str(store), "--unlabelled-split", SPLIT]) == 0
    keys = {"unlabelled_split": SPLIT, "unlabelled": "teacher", "unlabelled_per_batch": 1}
    cached = ["teacher.mode=cached", f"teacher.store={store}"]
    path = _config(tmp_path, data_with_extra, teacher_path, **keys)
    trainer = Trainer(load_config(path, cached))
    try:
        batch = next(iter(trainer.loader))
        assert batch.meta["labelled"].tolist() == [True, True, False]
        assert "hm_kd_4" in trainer.train_step(batch)
    finally:
        trainer.release()
    # a store of the training split alone does not hold the split's images: refused before training
    alone = tmp_path / "store_alone"
    assert main(base + ["--out", str(alone)]) == 0
    with pytest.raises(AEDistillError, match="store 8 images .* expected 11 images"):
        Trainer(load_config(path, ["teacher.mode=cached", f"teacher.store={alone}",
                                   "train.out=" + str(tmp_path / "run3")]))


# ------------------------------------------------------------------------------------------ real COCO files
@pytest.mark.skipif(not SHARED_COCO.is_dir(), reason=f"real COCO sample not present ({SHARED_COCO}; CI has it)")
def test_image_info_of_real_coco_images_matches_their_annotation_file(tmp_path: Path) -> None:
    """`distill image-info` on COCO's own val2017 files gives the ids, names and sizes COCO's annotation file has,
    so pseudo-labels from `distill predict` on unlabeled2017 match COCO's image_info_unlabeled2017.json."""
    from distill.cli import main

    out = tmp_path / "image_info_val2017.json"
    assert main(["image-info", "--images", str(SHARED_COCO / "val2017"), "--out", str(out), "--no-progress"]) == 0
    got = {im["id"]: im for im in read_image_info(out)}
    coco = json.loads((SHARED_COCO / "annotations" / "person_keypoints_val2017.json").read_text())
    listed = {im["id"]: im for im in coco["images"] if (SHARED_COCO / "val2017" / im["file_name"]).is_file()}
    assert listed and set(listed) <= set(got)
    for image_id, im in listed.items():
        assert (got[image_id]["file_name"], got[image_id]["width"], got[image_id]["height"]) == (
            im["file_name"], im["width"], im["height"])
