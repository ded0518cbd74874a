"""Label-scarce runs (`data.label_fraction`, `data.unlabelled`): which images keep their annotations, how the
dataset hides the others, how the loss supervises them with the teacher alone, and pseudo-labels (the teacher's
predictions as their annotations)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distill.config import ConfigError, load_config
from distill.data.coco import CocoKeypointDataset
from distill.data.labels import choose_labelled, labelled_count
from distill.losses import DistillLoss, LossConfig
from tests.test_inherit import TEACHER, _random_teacher
from tests.test_losses import J, _batch


# ------------------------------------------------------------------------------------------ the labelled set
def test_the_labelled_set_is_a_seeded_prefix_nested_across_fractions() -> None:
    ids = list(range(100, 580))
    quarter = choose_labelled(ids, 0.25, seed=0)
    assert len(quarter) == 120 == labelled_count(480, 0.25)
    assert quarter == sorted(quarter, key=ids.index)  # in the dataset's order
    assert choose_labelled(ids, 0.25, seed=0) == quarter  # deterministic
    tenth = choose_labelled(ids, 0.1, seed=0)
    assert len(tenth) == 48 and set(tenth) <= set(quarter)  # nested: one permutation's prefixes
    assert set(choose_labelled(ids, 0.25, seed=1)) != set(quarter)
    assert choose_labelled(ids, 1.0, seed=0) == ids
    assert len(choose_labelled(ids, 1e-6, seed=0)) == 1  # always some ground truth
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="label fraction must be in"):
            choose_labelled(ids, bad, seed=0)


def test_hidden_images_have_no_joints_and_no_ignore_regions(make_synthetic_dataset) -> None:
    root = make_synthetic_dataset(seed=3, num_train=6, num_val=1, image_size=64)
    ds = CocoKeypointDataset(root, "train2017", input_size=64, output_sizes=(16, 32))
    assert all(ds.is_labelled(i) for i in range(len(ds)))
    hidden = ds.ids[1]
    assert len(ds.annotations(1)) > 0 and ds.get_joints(1).shape[0] > 0
    ds.hide_annotations([hidden])
    assert not ds.is_labelled(1) and ds.is_labelled(0)
    raw = ds.load_raw(1)
    assert raw.joints.shape[0] == 0 and raw.mask.all()
    sample = ds.make_sample(1)
    assert all(float(h.max()) == 0.0 for h in sample.heatmaps)  # no target leaks from the hidden annotations
    with pytest.raises(ValueError, match="not in the split"):
        ds.hide_annotations([10**9])

    ds.keep_only([ds.ids[0], hidden, ds.ids[4]])
    assert len(ds) == 3 and ds.ids[1] == hidden and not ds.is_labelled(1)
    with pytest.raises(ValueError, match="not in the split"):
        ds.keep_only([10**9])


# ------------------------------------------------------------------------------------------ the loss
def _by_hand(loss: DistillLoss, outs, hms, masks, idx, teacher, labelled: torch.Tensor) -> torch.Tensor:
    """The total from per-image terms: the combined heatmap term over all images (KD alone where unlabelled),
    AE over the labelled images only."""
    cfg = loss.config
    terms = loss.compute_terms(outs, hms, masks, idx, teacher)  # every image as if labelled
    lab = labelled.float()
    total = torch.zeros(())
    for i, s in enumerate(("4", "2")):
        per_image = torch.where(labelled, terms[f"hm_{s}"], terms[f"hm_kd_{s}"])
        total = total + cfg.heatmap_factors[i] * per_image.mean()
    for name, factor in (("push", cfg.push_factor), ("pull", cfg.pull_factor)):
        total = total + factor * (terms[name] * lab).sum() / lab.sum()
    return total


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_unlabelled_images_get_the_kd_term_alone_and_gt_terms_average_over_labelled_images(alpha: float) -> None:
    outs, hms, masks, idx, teacher = _batch(torch.Generator().manual_seed(7), b=3, people=(3, 2, 4))
    loss = DistillLoss(LossConfig(alpha=alpha, kd_type="softmax", kd_temperature=0.5, push_factor=1e-2,
                                  pull_factor=1e-2))
    labelled = torch.tensor([True, False, True])
    total, logs = loss(outs, hms, masks, idx, teacher, labelled)
    torch.testing.assert_close(total, _by_hand(loss, outs, hms, masks, idx, teacher, labelled))
    terms = loss.compute_terms(outs, hms, masks, idx, teacher)
    assert logs["push"] == pytest.approx(float(terms["push"][labelled].mean()), rel=1e-6)
    assert logs["hm_gt_4"] == pytest.approx(float(terms["hm_gt_4"][labelled].mean()), rel=1e-6)

    # The unlabelled image learns from the teacher even at alpha 0; its GT maps play no part.
    leaf = [o.clone().requires_grad_(True) for o in outs]
    loss(leaf, hms, masks, idx, teacher, labelled)[0].backward()
    assert leaf[0].grad[1, :J].abs().sum() > 0
    other_gt = [h.clone() for h in hms]
    for h in other_gt:
        h[1] = torch.rand_like(h[1])
    assert loss(outs, other_gt, masks, idx, teacher, labelled)[0] == total
    # All labelled: exactly the loss without the flag.
    everyone = torch.ones(3, dtype=torch.bool)
    assert loss(outs, hms, masks, idx, teacher, everyone)[0] == loss(outs, hms, masks, idx, teacher)[0]


def test_unlabelled_images_need_a_teacher_and_a_well_formed_flag() -> None:
    outs, hms, masks, idx, teacher = _batch(torch.Generator().manual_seed(8), b=3)
    loss = DistillLoss(LossConfig())
    with pytest.raises(ValueError, match="need teacher_outputs"):
        loss(outs, hms, masks, idx, None, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match=r"labelled must be a \(B,\) = \(3,\)"):
        loss(outs, hms, masks, idx, teacher, torch.tensor([True, False]))


# ------------------------------------------------------------------------------------------ config + trainer
def _config(tmp_path: Path, data: Path, teacher_path: Path, **data_keys) -> Path:
    """A tiny distillation run config (online random teacher, step_s at input 64) with `data_keys` added."""
    cfg = {"model": {"kind": "student", "name": "step_s", "init": "kaiming"},
           "teacher": {"name": TEACHER, "weights": str(teacher_path), "mode": "online"},
           "data": {"root": str(data), "input_size": 64, "workers": 0, **data_keys},
           "loss": {"alpha": 0.5, "kd_type": "softmax", "kd_temperature": 0.1, "push_factor": 1e-2,
                    "pull_factor": 1e-2},
           "optim": {"epochs": 1, "batch_size": 2},
           "train": {"out": str(tmp_path / "run"), "eval_every": 0, "tensorboard": False, "threads": 1}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_names_the_key_and_what_is_expected(tmp_path: Path) -> None:
    path = _config(tmp_path, tmp_path, tmp_path / "t.pt")
    for value in (0, 1.5):
        with pytest.raises(ConfigError, match=rf"data.label_fraction = {value}.*\(0, 1\]"):
            load_config(path, [f"data.label_fraction={value}"])
    with pytest.raises(ConfigError, match="data.unlabelled = 'keep'.*drop.*teacher"):
        load_config(path, ["data.unlabelled=keep"])
    with pytest.raises(ConfigError, match="data.unlabelled = 'teacher': needs a teacher"):
        load_config(path, ["data.label_fraction=0.5", "data.unlabelled=teacher", "teacher.name=''", "loss.alpha=0"])
    with pytest.raises(ConfigError, match="loss.kd_until = 0.5.*must be 1 with data.unlabelled"):
        load_config(path, ["data.label_fraction=0.5", "data.unlabelled=teacher", "loss.kd_until=0.5"])
    load_config(path, ["data.label_fraction=0.5", "data.unlabelled=teacher"])


def test_the_trainer_drops_or_keeps_the_unlabelled_images(tmp_path: Path, make_synthetic_dataset) -> None:
    from distill.train import Trainer

    _, teacher_path = _random_teacher(tmp_path)
    data = make_synthetic_dataset(seed=5, num_train=8, num_val=1, image_size=64)
    path = _config(tmp_path, data, teacher_path)
    trainer = Trainer(load_config(path, ["data.label_fraction=0.5"]))  # 'drop' is the default
    try:
        assert len(trainer.dataset) == 4 and trainer.steps_per_epoch == 2 and not trainer.passes_labelled
        assert not trainer.dataset.unlabelled_ids
    finally:
        trainer.release()

    trainer = Trainer(load_config(path, ["data.label_fraction=0.25", "data.unlabelled=teacher",
                                         "train.out=" + str(tmp_path / "run2")]))
    try:
        ds = trainer.dataset
        assert len(ds) == 8 and len(ds.unlabelled_ids) == 6 and trainer.passes_labelled
        flags = []
        for batch in trainer.loader:
            flags += batch.meta["labelled"].tolist()
            for b, lab in enumerate(batch.meta["labelled"].tolist()):
                if not lab:  # nothing from the hidden annotations reaches the batch
                    assert float(batch.heatmaps[0][b].max()) == 0.0 and int(batch.indices[0][b][..., 1].sum()) == 0
        assert sorted(flags) == [False] * 6 + [True] * 2
        logs = trainer.train_step(batch)
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()) and "hm_kd_4" in logs
    finally:
        trainer.release()


# ------------------------------------------------------------------------------------------ pseudo-labels
def _result(image_id: int, score: float, joint_scores: list[float], j: int = J) -> dict:
    kps = []
    for k in range(j):
        kps += [10.0 + k, 20.0 + k, joint_scores[k] if k < len(joint_scores) else 0.5]
    return {"image_id": image_id, "category_id": 1, "keypoints": kps, "score": score}


def test_pseudo_labels_keep_confident_people_and_joints(tmp_path: Path) -> None:
    from distill.data.labels import read_pseudo_labels
    from distill.errors import DataError

    path = tmp_path / "teacher.json"
    path.write_text(json.dumps([_result(1, 0.9, [0.05, 0.2]), _result(1, 0.05, []), _result(2, 0.8, [0.0] * J),
                                _result(7, 0.9, [])]))
    got = read_pseudo_labels(path, [1, 2, 3], J, min_score=0.1, min_joint_score=0.1)
    assert set(got) == {1, 2, 3} and len(got[1]) == 1 and got[2] == [] and got[3] == []  # 7: not asked for
    person = got[1][0]
    kps = np.asarray(person["keypoints"]).reshape(J, 3)
    assert person["num_keypoints"] == J - 1 and tuple(kps[0]) == (0, 0, 0)  # joint 0 below 0.1: unlabelled
    assert tuple(kps[1]) == (11.0, 21.0, 2) and set(kps[1:, 2]) == {2}

    with pytest.raises(DataError, match="does not exist.*distill predict"):
        read_pseudo_labels(tmp_path / "nope.json", [1], J, 0.0, 0.1)
    path.write_text(json.dumps([{"image_id": 1, "keypoints": [1.0, 2.0], "score": 1.0}]))
    with pytest.raises(DataError, match=r"result 0 \(image id 1\): keypoints must be 51 finite numbers"):
        read_pseudo_labels(path, [1], J, 0.0, 0.1)
    path.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(DataError, match="expected a list of COCO keypoint results"):
        read_pseudo_labels(path, [1], J, 0.0, 0.1)


def test_pseudo_annotated_images_train_like_labelled_ones(tmp_path: Path, make_synthetic_dataset) -> None:
    from distill.train import Trainer

    data = make_synthetic_dataset(seed=5, num_train=8, num_val=1, image_size=64)
    ds = CocoKeypointDataset(data, "train2017", input_size=64, output_sizes=(16, 32))
    results = [_result(image_id, 0.9, [0.9] * J) for image_id in ds.ids]  # one confident person everywhere
    pseudo = tmp_path / "teacher.json"
    pseudo.write_text(json.dumps(results))
    path = _config(tmp_path, data, tmp_path / "unused.pt")
    gt_only = ["teacher.name=''", "loss.alpha=0", "data.label_fraction=0.25"]
    with pytest.raises(ConfigError, match="data.pseudo_labels = '': data.unlabelled 'pseudo' needs"):
        load_config(path, gt_only + ["data.unlabelled=pseudo"])
    with pytest.raises(ConfigError, match="data.pseudo_labels.*only read with data.unlabelled 'pseudo'"):
        load_config(path, gt_only + [f"data.pseudo_labels={pseudo}"])
    trainer = Trainer(load_config(path, gt_only + ["data.unlabelled=pseudo", f"data.pseudo_labels={pseudo}"]))
    try:
        ds = trainer.dataset
        assert len(ds) == 8 and len(ds.unlabelled_ids) == 6 and not trainer.passes_labelled
        assert all(ds.is_labelled(i) for i in range(len(ds)))
        for i in range(len(ds)):
            joints = ds.get_joints(i)
            if ds.ids[i] in ds.unlabelled_ids:  # the teacher's one person, not the real annotations
                assert joints.shape == (1, J, 3) and joints[0, 0, 0] == 10.0 and (joints[0, :, 2] == 2).all()
            else:
                assert joints.shape[0] >= 1 and joints[0, 0, 0] != 10.0
        logs = trainer.train_step(next(iter(trainer.loader)))
        assert "push" in logs and "hm_kd_4" not in logs
    finally:
        trainer.release()


# ------------------------------------------------------------------------------------------ the study script
def test_the_study_gives_every_arm_the_base_steps_and_matches_the_pseudo_label_count(
        tmp_path: Path, make_synthetic_dataset) -> None:
    import argparse

    from tests.script_module import load_script

    study = load_script("label_scarce_study")
    data = make_synthetic_dataset(seed=5, num_train=8, num_val=1, image_size=64)
    cfg = {"data": {"root": str(data), "input_size": 64}, "optim": {"batch_size": 2, "epochs": 5},
           "teacher": {"name": TEACHER, "weights": "t.pt"}}
    assert study.arm_epochs(cfg, 0.5, uses_all=False) == (10, 20)  # 4 labelled images: 2 steps an epoch
    assert study.arm_epochs(cfg, 0.5, uses_all=True) == (5, 20)
    assert study.arm_epochs(cfg, 0.5, uses_all=True, scale=2) == (10, 20) and study.batch_scale("gt_all_2x") == 2
    with pytest.raises(SystemExit, match="6 images at batch 2 .3 steps an epoch. cannot give the base config's 20"):
        study.arm_epochs(cfg, 0.75, uses_all=False)
    ann = json.loads((data / "annotations" / "person_keypoints_train2017.json").read_text())
    ids = [im["id"] for im in ann["images"]]
    labelled = set(choose_labelled(ids, 0.5, 0))
    per_image = sum(1 for a in ann["annotations"] if a["image_id"] in labelled and a["num_keypoints"] > 0) / 4
    # the teacher "finds" 5 people of falling scores on every unlabelled image
    results = [_result(i, s, []) for i in ids if i not in labelled for s in (0.9, 0.7, 0.5, 0.3, 0.1)]
    (tmp_path / "teacher_train_results.json").write_text(json.dumps(results))
    args = argparse.Namespace(root=tmp_path, fraction=0.5, label_seed=0)
    path, min_score = study.pseudo_labels(args, cfg)
    kept = sum(1 for r in results if r["score"] >= min_score)
    assert path == tmp_path / "teacher_train_results.json" and kept == min(20, round(per_image * 4))


# ------------------------------------------------------------------------------------------ mixed batches
def test_mixed_batches_put_the_labelled_images_first_in_the_labelled_only_order() -> None:
    from distill.train import EpochSampler, MixedEpochSampler

    labelled, unlabelled = [1, 4, 6, 9, 11, 12], [0, 2, 3, 5, 7]
    mixed = MixedEpochSampler(labelled, unlabelled, batch_size=2, extra=3, seed=4)
    alone = EpochSampler(len(labelled), batch_size=2, seed=4)
    for epoch in (0, 1):
        mixed.set_epoch(epoch)
        alone.set_epoch(epoch)
        got = list(mixed)
        assert len(got) == len(mixed) == 3 * 5
        batches = [got[k:k + 5] for k in range(0, len(got), 5)]
        assert [i for b in batches for i in b[:2]] == [labelled[i] for i in alone]  # the labelled-only run's order
        extra = [i for b in batches for i in b[2:]]
        assert set(extra) <= set(unlabelled) and sorted(extra[:5]) == unlabelled  # a permutation, then the next
    mixed.set_epoch(1, skip_batches=2)
    assert list(mixed) == batches[2] and len(mixed) == 5
    ranks = [MixedEpochSampler(labelled, unlabelled, 1, 1, seed=4, rank=r, world=2) for r in (0, 1)]
    firsts = [list(r)[0::2] for r in ranks]
    assert not set(firsts[0]) & set(firsts[1]) and sorted(firsts[0] + firsts[1]) == labelled
    with pytest.raises(ConfigError, match="unlabelled_per_batch = 0 needs >= 1"):
        MixedEpochSampler(labelled, unlabelled, 2, 0, seed=0)


def test_the_trainer_adds_unlabelled_images_to_each_labelled_batch(tmp_path: Path, make_synthetic_dataset) -> None:
    from distill.train import Trainer

    _, teacher_path = _random_teacher(tmp_path)
    data = make_synthetic_dataset(seed=5, num_train=8, num_val=1, image_size=64)
    path = _config(tmp_path, data, teacher_path)
    with pytest.raises(ConfigError, match="data.unlabelled_per_batch = 2: needs unlabelled images to add"):
        load_config(path, ["data.unlabelled_per_batch=2"])
    trainer = Trainer(load_config(path, ["data.label_fraction=0.5", "data.unlabelled=teacher",
                                         "data.unlabelled_per_batch=2"]))
    try:
        assert trainer.steps_per_epoch == 2 and trainer.images_per_step == 4
        batches = list(trainer.loader)
        assert len(batches) == 2
        for batch in batches:
            assert batch.images.shape[0] == 4 and batch.meta["labelled"].tolist() == [True, True, False, False]
        logs = trainer.train_step(batches[0])
        assert "hm_kd_4" in logs and "push" in logs
    finally:
        trainer.release()


def test_the_study_table_pairs_each_arm_with_its_controls_by_seed(tmp_path: Path, make_synthetic_dataset) -> None:
    import argparse

    from tests.script_module import load_script

    study = load_script("label_scarce_study")
    data = make_synthetic_dataset(seed=5, num_train=8, num_val=1, image_size=64)
    cfg = {"data": {"root": str(data), "input_size": 64}, "optim": {"batch_size": 2, "epochs": 5}}
    aps = {"gt_labelled": (0.20, 0.30), "gt_labelled_2x": (0.25, 0.35), "gt_pseudo_mixed": (0.40, 0.50),
           "kd_pseudo_mixed": (0.43, 0.49)}
    for arm, (v, h) in aps.items():
        for seed in (0, 1):
            run = tmp_path / f"{arm}_seed{seed}"
            run.mkdir()
            (run / "val.json").write_text(json.dumps({"rows": [{"AP": v + 0.01 * seed}]}))
            (run / "heldout.json").write_text(json.dumps({"rows": [{"AP": h + (0.02 if arm == "gt_labelled" and seed
                                                                               else 0)}]}))
    args = argparse.Namespace(root=tmp_path, fraction=0.5, label_seed=0, heldout=tmp_path, seeds=[0, 1],
                              arms=list(aps))
    text = study.table(args, cfg)
    assert "| GT only, labelled images | 0 1 | 0.200 / 0.210 | 0.205 ± 0.007 | 0.300 / 0.320 |" in text
    mixed = study.ARMS["gt_pseudo_mixed"][0]
    assert f"- {mixed} − GT only, labelled images, held out: +0.200 / +0.180 = +0.190 ± 0.014" in text
    assert f"- {mixed} − {study.ARMS['gt_labelled_2x'][0]}, val: +0.150 / +0.150 = +0.150 ± 0.000" in text
    kd = study.ARMS["kd_pseudo_mixed"][0]  # KD on top of pseudo-labels: also against the pseudo-labelled arm
    assert f"- {kd} − {mixed}, held out: -0.010 / -0.010 = -0.010 ± 0.000" in text
    # 2x vs labelled (2 splits); mixed vs labelled and vs 2x (4); KD mixed vs labelled, 2x and pseudo mixed (6)
    assert text.count(" − ") == 12


def test_the_study_takes_the_mixed_arms_extra_images_from_an_unlabelled_split(
        tmp_path: Path, make_synthetic_dataset) -> None:
    import argparse
    import shutil

    from distill.data.unlabelled import write_image_info
    from tests.script_module import load_script

    study = load_script("label_scarce_study")
    data = make_synthetic_dataset(seed=5, num_train=8, num_val=1, image_size=64)
    other = make_synthetic_dataset(seed=6, num_train=1, num_val=3, image_size=64)
    shutil.copytree(other / "val2017", data / "extra2017")
    write_image_info(data / "extra2017", data / "annotations" / "image_info_extra2017.json", show_progress=False)
    cfg = {"data": {"root": str(data), "input_size": 64}, "optim": {"batch_size": 2, "epochs": 5},
           "teacher": {"name": TEACHER, "weights": "t.pt"}}
    # at fraction 1 every training image is labelled: the unlabelled images are the split's alone
    (tmp_path / "teacher_extra2017_results.json").write_text(json.dumps(
        [_result(i, s + 1e-3 * k, []) for k, i in enumerate((1000001, 1000002, 1000003)) for s in (0.9, 0.6, 0.3, 0.1)]))
    args = argparse.Namespace(root=tmp_path, fraction=1.0, label_seed=0, unlabelled_split="extra2017")
    path, min_score = study.pseudo_labels(args, cfg)
    ann = json.loads((data / "annotations" / "person_keypoints_train2017.json").read_text())
    per_image = sum(1 for a in ann["annotations"] if a["num_keypoints"] > 0) / 8
    assert path == tmp_path / "teacher_extra2017_results.json"
    assert sum(1 for r in json.loads(path.read_text()) if r["score"] >= min_score) == min(12, round(per_image * 3))
    with pytest.raises(SystemExit):
        study.main(["--base", "x.yaml", "--heldout", str(tmp_path), "--unlabelled-split", "extra2017",
                    "--fraction", "1", "--arms", "gt_teacher"])
