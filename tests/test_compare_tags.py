"""`distill compare-tags`: the teacher's per-joint tags vs the same tags reduced to one map (first/mean/pca).

Tiny synthetic dataset (4 train / 3 val images, 128 px) and the tiny HigherHRNet teacher (the official
tiny reference weights when ../shared has them, else a seeded random init), input 128.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from distill.codec import AECodec
from distill.compare_tags import (
    SEED_STUDY_NOTE, TagReducingPredictor, compare_tags, fit_tag_reducer, load_pca_state,
)
from distill.keypoints import KeypointSpec
from distill.predict import Predictor
from distill.tag_reduction import TagReducer

from conftest import REFERENCE

INPUT = 128
J = 17


@pytest.fixture(scope="module")
def data_root(make_synthetic_dataset):
    return make_synthetic_dataset(seed=0, num_train=4, num_val=3, image_size=128)


@pytest.fixture(scope="module")
def teacher():
    from teachers import build_teacher
    from teachers.checkpoint import load_checkpoint

    torch.manual_seed(0)
    model = build_teacher("tiny")
    weights = REFERENCE / "tiny" / "state_dict.pt"
    if weights.is_file():
        load_checkpoint(model, weights)
    return model.eval()


@pytest.fixture(scope="module")
def study(data_root, teacher, tmp_path_factory):
    """One compare_tags run, with a spy on the decoder recording the tag shapes it is given."""
    decode_module = sys.modules["distill.codec.decode"]
    real = decode_module.decode
    seen: list[tuple[int, ...]] = []

    def spy(heatmaps, tags, params=None):
        seen.append(tuple(tags.shape))
        return real(heatmaps, tags, params)

    out = tmp_path_factory.mktemp("compare")
    decode_module.decode = spy
    try:
        rows = compare_tags(teacher, data_root, "val2017", input_size=INPUT, fit_split="train2017", fit_images=4,
                            out=out, device="cpu")
    finally:
        decode_module.decode = real
    return rows, out, seen


def test_table_has_the_four_teacher_rows_with_finite_stats(study):
    rows, out, _ = study
    assert [r["row"] for r in rows] == [f"teacher {J} tags", "teacher→first", "teacher→mean", "teacher→pca"]
    assert [r["tag_maps"] for r in rows] == [J, 1, 1, 1]
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("AP", "AP50", "AP75", "AR"))
        assert all(math.isfinite(v) for v in r["stats"].values())
    assert rows[0]["delta_AP"] is None
    for r in rows[1:]:
        assert r["delta_AP"] == pytest.approx(r["AP"] - rows[0]["AP"])
    md = (out / "compare_tags.md").read_text()
    for name in ("teacher 17 tags", "teacher→first", "teacher→mean", "teacher→pca", "ΔAP", "seed study"):
        assert name in md
    assert SEED_STUDY_NOTE in md
    data = json.loads((out / "compare_tags.json").read_text())
    assert [r["row"] for r in data["rows"]] == [r["row"] for r in rows]


def test_reduced_rows_feed_one_tag_map_to_the_decoder(study):
    _, _, seen = study
    # 3 val images per row; the first row is the J-tag decode, then 3 rows of reduced (T = 1) decodes.
    assert len(seen) == 12
    assert all(s[1] == J and s[-1] == 2 for s in seen[:3]), seen[:3]
    assert all(s[1] == 1 and s[-1] == 2 for s in seen[3:]), seen[3:]


def test_pca_state_is_written_and_reloads(study):
    rows, out, _ = study
    state = rows[3]["pca_state"]
    assert len(state["mean"]) == J and len(state["component"]) == J
    assert state["fit_split"] == "train2017" and 1 <= state["fit_images"] <= 4 and state["num_samples"] >= 2
    reloaded = load_pca_state(out / "compare_tags.json")
    assert torch.equal(reloaded.mean, torch.tensor(state["mean"], dtype=torch.float32))
    assert torch.equal(reloaded.component, torch.tensor(state["component"], dtype=torch.float32))
    assert reloaded.component.norm().item() == pytest.approx(1.0, abs=1e-5)


def _val_images(data_root):
    from distill.data.coco import CocoKeypointDataset

    ds = CocoKeypointDataset(data_root, "val2017", augment=False, remove_images_without_annotations=False)
    return [ds.load_image(i) for i in range(len(ds))]


def test_first_equals_decoding_channel_0(data_root, teacher):
    images = _val_images(data_root)
    normal = Predictor(teacher, input_size=INPUT, device="cpu")
    shared_codec = AECodec.for_keypoints(KeypointSpec.coco(), tag_per_joint=False)
    reducing = TagReducingPredictor(teacher, TagReducer("first"), input_size=INPUT, device="cpu")
    preds = reducing.predict_batch(images, return_maps=True)
    found = 0
    for (heat, tags, _), pred in zip(normal.predict_maps(images), preds):
        assert tags.shape[1] == J and pred.tags.shape[0] == 1
        assert torch.equal(pred.tags, tags[0, :1])  # the aggregated shared map is exactly channel 0
        ref = shared_codec.decode(heat, tags[:, :1])[0]
        np.testing.assert_array_equal(pred.people_map, ref.people)
        np.testing.assert_array_equal(pred.scores, ref.scores)
        found += len(ref.people)
    assert found > 0  # not vacuous: people were decoded


@pytest.mark.parametrize("rule", ["mean", "pca"])
def test_reduced_maps_equal_the_reduction_of_the_aggregated_tags(data_root, teacher, rule):
    """Reducing per pass before aggregation (flipped pass in original joint order) = reducing after it."""
    images = _val_images(data_root)[:1]
    reducer = TagReducer(rule)
    if rule == "pca":
        reducer, _ = fit_tag_reducer(teacher, data_root, "train2017", num_images=2, input_size=INPUT, device="cpu")
    heat, tags, _ = Predictor(teacher, input_size=INPUT, device="cpu").predict_maps(images)[0]
    pred = TagReducingPredictor(teacher, reducer, input_size=INPUT, device="cpu").predict(images[0], return_maps=True)
    expect = torch.stack([reducer.reduce(tags[..., p]) for p in range(tags.shape[-1])], dim=-1)[0]
    torch.testing.assert_close(pred.tags, expect, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pred.heatmaps, heat[0])


# ---------------------------------------------------------------------------- identical tag maps
class IdenticalTagsTeacher(nn.Module):
    """A fake teacher: fixed, flip-consistent heatmaps for 3 people (one per horizontal band of the map)
    and 17 IDENTICAL tag maps whose value depends on the band (2 per band, plus a small variation in x).

    Left/right joints sit at mirror positions, so flip test gives back exactly the same heatmaps (one
    peak per joint and person); self-symmetric joints (nose) have empty maps.
    """

    def __init__(self, spec: KeypointSpec) -> None:
        super().__init__()
        self.flip_index = spec.flip_index
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, _, h, w = x.shape
        h2, w2, h4, w4 = h // 2, w // 2, h // 4, w // 4
        yy, xx = torch.meshgrid(torch.arange(h2, dtype=torch.float32), torch.arange(w2, dtype=torch.float32),
                                indexing="ij")
        heat = torch.zeros(J, h2, w2)
        pairs = sorted({(min(j, f), max(j, f)) for j, f in enumerate(self.flip_index) if j != f})
        for person in range(3):
            cy = int((person + 0.5) * h4 / 3) * 2 + 0.25  # band centre at 1/2 res; +0.25: one max after x2 upsampling
            for i, (left, right) in enumerate(pairs):
                cx = 3 + 3 * i + 0.25
                for j, px in ((left, cx), (right, w2 - 1 - cx)):
                    heat[j] = torch.maximum(heat[j], torch.exp(-((xx - px) ** 2 + (yy - cy) ** 2) / (2 * 1.5 ** 2)))
        y4, x4 = torch.meshgrid(torch.arange(h4, dtype=torch.float32), torch.arange(w4, dtype=torch.float32),
                                indexing="ij")
        band = torch.div(y4 * 3, h4, rounding_mode="floor")
        tag = 2.0 * band + 0.02 * torch.sin(x4 / 2)
        out4 = torch.cat([torch.zeros(J, h4, w4), tag.expand(J, h4, w4)])
        return [out4.expand(b, -1, -1, -1) + 0 * self.dummy, heat.expand(b, -1, -1, -1) + 0 * self.dummy]


def test_identical_tag_maps_give_the_same_people_for_every_reduction(data_root):
    spec = KeypointSpec.coco()
    fake = IdenticalTagsTeacher(spec).eval()
    images = _val_images(data_root)
    ref = Predictor(fake, spec, input_size=INPUT, device="cpu").predict_batch(images)
    pca, info = fit_tag_reducer(fake, data_root, "train2017", num_images=4, input_size=INPUT, device="cpu")
    # identical channels: the principal direction is the normalised all-ones vector
    torch.testing.assert_close(pca.component, torch.full((J,), J ** -0.5), atol=1e-4, rtol=0)
    for rule, reducer in (("first", TagReducer("first")), ("mean", TagReducer("mean")), ("pca", pca)):
        preds = TagReducingPredictor(fake, reducer, spec, input_size=INPUT, device="cpu").predict_batch(images)
        for r, p in zip(ref, preds):
            assert len(r.people) == 3, rule  # one person per band
            assert p.people.shape[:2] == r.people.shape[:2], rule
            np.testing.assert_array_equal(p.people[..., :3], r.people[..., :3], err_msg=rule)
            np.testing.assert_array_equal(p.scores, r.scores, err_msg=rule)
            if rule != "pca":  # first/mean of identical maps are the map itself
                np.testing.assert_allclose(p.people[..., 3:], r.people[..., 3:], atol=1e-5, err_msg=rule)


def _student_run(folder, name, epochs, **overrides):
    """A run folder like `distill train` writes: model.pt ({state_dict, model}), config.json, train_summary.json."""
    from students import build_student

    folder.mkdir()
    torch.manual_seed(1)
    model = build_student(name, **overrides)
    torch.save({"state_dict": model.state_dict(), "model": {"kind": "student", "name": name, "overrides": overrides},
                "tag_reducer": {}}, folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({
        "optim": {"epochs": epochs, "batch_size": 2, "lr": 1e-3}, "train": {"max_steps": 0},
        "data": {"root": "d", "train_split": "train2017", "input_size": 128}}))
    (folder / "train_summary.json").write_text(json.dumps({"steps": 2 * epochs}))
    return folder / "model.pt"


def test_student_rows_with_budgets(data_root, teacher, tmp_path):
    """Students from `LABEL=student:NAME:CKPT` specs: tag maps (T x D) from the model, ΔAP vs the J-tag student,
    budgets read from the run folders and a warning when they differ."""
    a = _student_run(tmp_path / "s17", "step_s", 3)
    b = _student_run(tmp_path / "s1", "step_s_1tag", 4, tag_dim=2)
    rows = compare_tags(teacher, data_root, input_size=INPUT, limit=1, rules=("first",), device="cpu",
                        students=[f"17tag=student:step_s:{a}", f"1tag=student:step_s_1tag:{b}"], out=tmp_path / "o")
    assert [r["row"] for r in rows] == [f"teacher {J} tags", "teacher→first", "student 17tag", "student 1tag"]
    s17, s1 = rows[2], rows[3]
    assert (s17["tag_maps"], s17["tag_dim"], s1["tag_maps"], s1["tag_dim"]) == (J, 1, 1, 2)
    assert s17["delta_AP"] == 0.0 and s1["delta_AP"] == pytest.approx(s1["AP"] - s17["AP"])
    assert s17["budget"]["epochs"] == 3 and s1["budget"]["images_seen"] == 16
    md = (tmp_path / "o" / "compare_tags.md").read_text()
    assert "WARNING" in md and "epochs=3" in md and "epochs=4" in md
    assert f"| student 17tag | {J} |" in md and "| student 1tag | 1 x 2 |" in md


def test_budget_comparison():
    from distill.compare_tags import budgets_equal

    base = {"epochs": 3, "batch_size": 2, "lr": 1e-3, "max_steps": None, "steps": 6, "input_size": 128,
            "train_data": "d/train2017"}
    assert budgets_equal([base, dict(base)]) is True
    assert budgets_equal([base, {**base, "lr": 2e-3}]) is False
    assert budgets_equal([base, None]) is None


def test_display_spec_makes_paths_below_cwd_relative(tmp_path):
    """The report's heading is pasted into the README: no absolute paths of the machine that ran it."""
    from distill.compare_tags import display_spec

    inside = tmp_path / "teachers" / "w.pt"
    assert display_spec(f"teacher:higherhrnet_w16_synth:{inside}", cwd=tmp_path) == \
        "teacher:higherhrnet_w16_synth:teachers/w.pt"
    outside = "/elsewhere/w.pt"
    assert display_spec(f"teacher:higherhrnet_w16_synth:{outside}", cwd=tmp_path) == \
        f"teacher:higherhrnet_w16_synth:{outside}"
    assert display_spec("teacher:higherhrnet_w16_synth:rel/w.pt", cwd=tmp_path) == "teacher:higherhrnet_w16_synth:rel/w.pt"
    assert display_spec("teacher:higherhrnet_w16_synth", cwd=tmp_path) == "teacher:higherhrnet_w16_synth"
