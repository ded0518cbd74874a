"""Drawing functions, `distill visualize`, and the shared `--model KIND:NAME[:CKPT]` parsing/loading."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from distill.keypoints import KeypointSpec
from distill.models import ModelSpec, ModelSpecError, RandomWeightsWarning, load_model, parse_model_spec
from distill.visualize import draw_people, heatmap_panel, joint_sides, side_by_side, tag_panel


def _person(spec: KeypointSpec, cx: float, cy: float, value: float = 0.9) -> np.ndarray:
    """A crude upright figure (J, 3) around (cx, cy)."""
    rng = np.random.default_rng(0)
    p = np.zeros((spec.num_joints, 3), np.float32)
    p[:, 0] = cx + rng.uniform(-25, 25, spec.num_joints)
    p[:, 1] = cy + np.linspace(-50, 50, spec.num_joints)
    p[:, 2] = value
    return p


def test_draw_people_changes_pixels_on_the_skeleton_only() -> None:
    spec = KeypointSpec.coco()
    image = np.full((160, 200, 3), 127, np.uint8)
    before = image.copy()
    person = _person(spec, 100, 80)
    out = draw_people(image, person[None], spec)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before), "the input must not be modified"
    changed = np.any(out != image, axis=2)
    for a, b in spec.skeleton:  # the middle of every limb is drawn
        mid = (person[a - 1, :2] + person[b - 1, :2]) / 2
        assert changed[int(round(mid[1])), int(round(mid[0]))]
    for j in range(spec.num_joints):
        assert changed[int(round(person[j, 1])), int(round(person[j, 0]))]
    assert not changed[:10, :10].any() and not changed[-10:, -10:].any()
    # left and right limbs get different colours
    sides = joint_sides(spec)
    assert sides[spec.names.index("left_knee")] == -1 and sides[spec.names.index("right_knee")] == 1
    lk, rk = (person[spec.names.index(n), :2].round().astype(int) for n in ("left_knee", "right_knee"))
    assert not np.array_equal(out[lk[1], lk[0]], out[rk[1], rk[0]])


def test_draw_people_thresholds() -> None:
    spec = KeypointSpec.coco()
    image = np.zeros((160, 200, 3), np.uint8)
    weak = _person(spec, 100, 80, value=0.05)
    assert np.array_equal(draw_people(image, weak[None], spec, score_thr=0.1), image)
    assert np.array_equal(draw_people(image, weak[None], spec, score_thr=0.1, scores=[0.5]) != image,
                          draw_people(image, weak[None], spec) != image)
    assert np.array_equal(draw_people(image, weak[None], spec, min_joint_value=0.05), image)
    assert np.array_equal(draw_people(image, np.zeros((0, 17, 3)), spec), image)
    with pytest.raises(ValueError, match=r"\(N, 17, 3\+\)"):
        draw_people(image, np.zeros((1, 14, 3)), spec)


def test_panels() -> None:
    image = np.full((100, 150, 3), 90, np.uint8)
    heat = np.zeros((17, 50, 75), np.float32)
    heat[3, 10, 60] = 1.0
    heat[3] = cv2.GaussianBlur(heat[3], (0, 0), 2) * 30
    hp = heatmap_panel(image, torch.from_numpy(heat))
    assert hp.shape == image.shape and hp.dtype == np.uint8
    assert np.abs(hp[20, 120].astype(int) - image[20, 120]).sum() > np.abs(hp[80, 20].astype(int) - image[80, 20]).sum()
    tags = np.random.default_rng(0).normal(size=(17, 50, 75, 2)).astype(np.float32)
    tp = tag_panel(image, tags, heat)
    assert tp.shape == image.shape and tp.dtype == np.uint8
    assert tag_panel(image, tags[:1, ..., 0]).shape == image.shape  # one shared tag map, no heatmaps
    row = side_by_side([image, cv2.resize(image, (75, 50)), image[:, :40]], ["a", "b", "c"], gap=4)
    assert row.dtype == np.uint8 and row.shape[0] > 100 and row.shape[1] == 150 + 150 + 40 + 2 * 4


def test_parse_model_spec_and_errors() -> None:
    assert parse_model_spec("student:step_s") == ModelSpec("student", "step_s", None)
    spec = parse_model_spec("teacher:tiny:/a/b:c.pt")
    assert spec.kind == "teacher" and spec.name == "tiny" and spec.weights == Path("/a/b:c.pt")
    for bad, msg in [("step_s", "no KIND"), ("pupil:step_s", "unknown kind 'pupil'"), ("student:", "name is empty"),
                     ("student:step_s:", "checkpoint path"), ("", "empty model spec")]:
        with pytest.raises(ModelSpecError, match=msg) as info:
            parse_model_spec(bad)
        assert "KIND:NAME[:CKPT]" in str(info.value)
    with pytest.raises(Exception, match="unknown student 'nosuch'"):
        load_model("student:nosuch")
    with pytest.raises(ModelSpecError, match="not found"):
        load_model("student:step_s:/nonexistent/model.pt")


def test_load_model_reads_our_model_file(tmp_path: Path) -> None:
    from distill.models import build_model

    trained = build_model("student", "step_s", {"tag_per_joint": False})
    path = tmp_path / "model.pt"
    torch.save({"state_dict": trained.state_dict(),
                "model": {"kind": "student", "name": "step_s", "overrides": {"tag_per_joint": False}}}, path)
    model = load_model(f"student:step_s:{path}")
    assert not model.training and model.tag_per_joint is False
    for k, v in trained.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    with pytest.raises(ModelSpecError, match="holds a student"):
        load_model(f"teacher:tiny:{path}")
    with pytest.warns(RandomWeightsWarning):
        load_model("student:step_s")


@pytest.fixture(scope="module")
def synthetic_folder(make_synthetic_dataset) -> Path:
    return make_synthetic_dataset(seed=0, num_train=0, num_val=2, image_size=256) / "val2017"


def test_cli_visualize_folder(tmp_path: Path, synthetic_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from distill.cli import main

    out = tmp_path / "vis"
    args = ["visualize", "--model", "student:step_s", "--input", str(synthetic_folder), "--out", str(out),
            "--input-size", "128"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
        pngs = sorted(out.glob("*.png"))
        assert [p.stem for p in pngs] == sorted(p.stem for p in synthetic_folder.glob("*.jpg"))
        plain = [cv2.imread(str(p)) for p in pngs]
        originals = [cv2.imread(str(p)) for p in sorted(synthetic_folder.glob("*.jpg"))]
        assert [im.shape for im in plain] == [im.shape for im in originals]
        assert main(args + ["--panels"]) == 0
    wide = cv2.imread(str(pngs[0]))
    assert wide.shape[1] > 3 * originals[0].shape[1] and wide.shape[0] > originals[0].shape[0]
    assert "->" in capsys.readouterr().out


def test_cli_visualize_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from distill.cli import main

    assert main(["visualize", "--model", "studnet:step_s", "--input", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown kind 'studnet'" in err and "KIND:NAME[:CKPT]" in err
    assert main(["visualize", "--model", "student:step_s", "--input", str(tmp_path / "none"),
                 "--out", str(tmp_path)]) == 2
    assert "no such image or folder" in capsys.readouterr().err
