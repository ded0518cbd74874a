"""Test-time inference (`distill.predict.Predictor`) against the official pipeline, plus its options.

Parity: the official tiny model (../shared/reference/higherhrnet/tiny) on the two `pipeline/` images at
input 256 with flip test and projection. Tolerances are the fixture README's: network input atol 1e-6;
final heatmaps / tags (float16 copies) rtol 1e-3, atol 1e-3; raw outputs (float16) rtol 2e-3, atol 1e-2;
mapping back to the image atol 1e-4 px.

Options (channels_last, batching, bf16 autocast) are compared with the plain fp32 path. Random-weight
float32 round-off differences grow with the map values (tags reach 165 here), so the bound is relative to
the largest value of each map: max |diff| <= 1e-4 * max |ref|. The fixture README measured
channels_last / batch-of-2 spreads of about 1e-5 of the output magnitude on this model.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from distill.geometry import inference_resize, resize_for_test
from distill.inference import OutputLayout
from distill.keypoints import KeypointSpec
from distill.evaluate import STAT_NAMES
from distill.predict import Predictor, evaluate_model, infer_layout, read_image
from teachers import build_teacher, get_teacher_config
from teachers.checkpoint import load_checkpoint

IMAGES = ("000000165518", "000000183709")
INPUT_SIZE = 256


@pytest.fixture(scope="module")
def tiny(reference_dir: Path) -> nn.Module:
    model = build_teacher("tiny")
    load_checkpoint(model, reference_dir / "tiny" / "state_dict.pt", strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def fixtures(reference_dir: Path, coco_mini_dir: Path) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """name -> (pipeline npz arrays, RGB image)."""
    out = {}
    for name in IMAGES:
        z = dict(np.load(reference_dir / "pipeline" / f"{name}.npz"))
        out[name] = (z, read_image(coco_mini_dir / str(z["image_file"])))
    return out


def _max_rel(mine: torch.Tensor, ref: torch.Tensor) -> float:
    """max |mine - ref| / max |ref|."""
    return float((mine - ref).abs().max() / ref.abs().max())


def _assert_close_rel(mine: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    assert mine.shape == ref.shape
    assert _max_rel(mine, ref) <= rel, f"max |diff| / max |ref| = {_max_rel(mine, ref):.3g} > {rel}"


# ------------------------------------------------------------------------------------ official parity
@pytest.mark.parametrize("name", IMAGES)
def test_pipeline_parity(name: str, tiny: nn.Module, fixtures, reference_dir: Path) -> None:
    z, image = fixtures[name]
    index = json.loads((reference_dir / "pipeline" / "index.json").read_text())
    entry = next(e for e in index["images"] if e["file"] == f"{name}.npz")
    # the same decoded pixels as the official run (otherwise a JPEG decoder difference explains a mismatch)
    assert hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() == entry["decoded_image_sha256"], (
        "this OpenCV decodes the JPEG to different pixels than the official run did")
    resized, _ = resize_for_test(image, INPUT_SIZE)
    np.testing.assert_array_equal(resized, z["image_resized"])

    pred = Predictor(tiny, input_size=INPUT_SIZE, flip=True, project=True)
    x, resize = pred.preprocess(image)
    np.testing.assert_allclose(x.numpy(), z["input"], rtol=0, atol=1e-6)
    assert resize.size == tuple(int(v) for v in z["base_size"])
    np.testing.assert_array_equal(resize.center, z["center"])
    np.testing.assert_allclose(resize.scale, z["scale"], rtol=0, atol=1e-12)

    (heat, tags, out_resize), = pred.predict_maps([image])
    w, h = (int(v) for v in z["base_size"])
    assert heat.shape == (1, 17, h, w) and tags.shape == (1, 17, h, w, 2)
    np.testing.assert_allclose(heat.numpy(), z["final_heatmaps"].astype(np.float32), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(tags.numpy(), z["tags"].astype(np.float32), rtol=1e-3, atol=1e-3)

    # get_final_preds: map frame -> image pixels with this image's center / scale / base size.
    mapped = out_resize.to_image(z["final_preds_input"], out_resize.size)
    np.testing.assert_allclose(mapped, z["final_preds_output"], rtol=0, atol=1e-4)

    if "raw_orig_out0" in z:  # first image only
        orig, flipped = pred.forward(x), pred.forward(torch.flip(x, [3]))
        for key, out in (("raw_orig_out0", orig[0]), ("raw_orig_out1", orig[1]),
                         ("raw_flip_out0", flipped[0]), ("raw_flip_out1", flipped[1])):
            assert out.dtype == torch.float32
            np.testing.assert_allclose(out.numpy(), z[key].astype(np.float32), rtol=2e-3, atol=1e-2, err_msg=key)


def test_predict_decodes_to_image_coords(tiny: nn.Module, fixtures) -> None:
    _, image = fixtures[IMAGES[1]]
    pred = Predictor(tiny, input_size=INPUT_SIZE)
    out = pred.predict(image, return_maps=True)
    decoded = pred.codec.decode(out.heatmaps[None], out.tags[None])[0]
    np.testing.assert_array_equal(out.people_map, decoded.people)
    np.testing.assert_array_equal(out.scores, decoded.scores)
    assert out.people.shape == out.people_map.shape and out.people.shape[1:] == (17, 5)
    np.testing.assert_allclose(out.people, out.resize.to_image(out.people_map, out.map_size), atol=1e-4)
    results = out.to_results(image_id=183709)
    assert len(results) == len(out.people)
    if results:
        kpts = np.array(results[0]["keypoints"]).reshape(17, 3)
        np.testing.assert_allclose(kpts, out.people[0][:, :3], atol=1e-3)


# ------------------------------------------------------------------------------------------- options
def test_channels_last_matches_contiguous(tiny: nn.Module, fixtures) -> None:
    plain = Predictor(tiny, input_size=INPUT_SIZE)
    cl = Predictor(copy.deepcopy(tiny), input_size=INPUT_SIZE, channels_last=True)
    for name in IMAGES:
        _, image = fixtures[name]
        (h0, t0, _), = plain.predict_maps([image])
        (h1, t1, _), = cl.predict_maps([image])
        _assert_close_rel(h1, h0)
        _assert_close_rel(t1, t0)


def test_batch_matches_one_at_a_time(tiny: nn.Module, fixtures) -> None:
    img_a = fixtures[IMAGES[0]][1]  # 612x612 -> 256x256
    img_b = np.ascontiguousarray(img_a[40:, ::-1][:560, :560])  # another square image, also -> 256x256
    img_c = fixtures[IMAGES[1]][1]  # 480x640 -> 256x384, its own group

    batches: list[tuple[int, ...]] = []
    pred = Predictor(tiny, input_size=INPUT_SIZE)
    forward = pred.forward

    def counting_forward(x: torch.Tensor) -> list[torch.Tensor]:
        batches.append(tuple(x.shape))
        return forward(x)

    pred.forward = counting_forward  # type: ignore[method-assign]
    together = pred.predict_maps([img_a, img_c, img_b])
    assert sorted(batches) == sorted([(2, 3, 256, 256)] * 2 + [(1, 3, 384, 256)] * 2)  # orig + flipped
    for image, (h, t, r) in zip([img_a, img_c, img_b], together):
        (h1, t1, r1), = pred.predict_maps([image])
        _assert_close_rel(h, h1)
        _assert_close_rel(t, t1)
        assert r.size == r1.size and np.array_equal(r.center, r1.center)


def test_bf16_autocast_close_to_fp32(tiny: nn.Module, fixtures) -> None:
    _, image = fixtures[IMAGES[0]]
    (h0, t0, _), = Predictor(tiny, input_size=INPUT_SIZE).predict_maps([image])
    bf = Predictor(tiny, input_size=INPUT_SIZE, autocast_dtype=torch.bfloat16)
    (h1, t1, _), = bf.predict_maps([image])
    assert h1.dtype == torch.float32 and t1.dtype == torch.float32
    dh, dt = (h1 - h0).abs(), (t1 - t0).abs()
    print(f"\nbf16 vs fp32 (tiny, official weights): heatmaps max {dh.max():.4f} mean {dh.mean():.5f} "
          f"(max |ref| {h0.abs().max():.2f}); tags max {dt.max():.4f} mean {dt.mean():.5f} "
          f"(max |ref| {t0.abs().max():.2f})")
    # Sanity bounds only: random weights amplify bf16 rounding (measured ~2.5 % of the max value).
    assert _max_rel(h1, h0) < 0.1 and _max_rel(t1, t0) < 0.1
    assert float(dh.mean() / h0.abs().max()) < 0.01 and float(dt.mean() / t0.abs().max()) < 0.01
    with pytest.raises(ValueError, match="bfloat16"):
        Predictor(tiny, autocast_dtype=torch.float16, device="cpu")


def test_multi_scale_maps_at_scale1_size(tiny: nn.Module, fixtures) -> None:
    for name in IMAGES[1:]:  # the non-square one (w < h branch)
        _, image = fixtures[name]
        h, w = image.shape[:2]
        multi = Predictor(tiny, input_size=INPUT_SIZE, scales=[1, 0.5])
        assert multi.scales == [1.0, 0.5]
        (hm, tm, rm), = multi.predict_maps([image])
        base = inference_resize(w, h, INPUT_SIZE, 1.0, 0.5).size
        assert rm.size == base and hm.shape[-2:] == (base[1], base[0]) and tm.shape[2:4] == (base[1], base[0])
        # Here the scale-1 input is the single-scale input, so tags (scale 1 only) are identical and the
        # heatmaps are the mean of that and the 0.5-scale pass.
        (hs, ts, rs), = Predictor(tiny, input_size=INPUT_SIZE).predict_maps([image])
        assert rs.size == base
        torch.testing.assert_close(tm, ts, rtol=0, atol=1e-5)
        assert not torch.allclose(hm, hs, atol=1e-3)
        x05, _ = multi.preprocess(image, 0.5)
        assert x05.shape[-1] == base[0] // 2 and x05.shape[-2] == base[1] // 2
    with pytest.raises(ValueError, match="scale 1"):
        Predictor(tiny, scales=[2, 0.5])


class _NoConfig(nn.Module):
    """A student-like model: same output contract, no `cfg` to read the layout from."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.inner(x)


def test_shared_tag_map() -> None:
    """Runs without ../shared: random weights, a synthetic 300x300 image."""
    cfg = dataclasses.replace(get_teacher_config("tiny"), tag_per_joint=False)
    torch.manual_seed(0)
    model = build_teacher(cfg).eval()
    assert infer_layout(model, 17) == OutputLayout(17, (True, True), (True, False), False, strides=(4, 2))  # declared
    image = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    pred = Predictor(_NoConfig(model).eval(), input_size=INPUT_SIZE, refine=True)
    assert pred.layout is None  # learnt from the first forward
    out = pred.predict(image, return_maps=True)
    assert pred.layout == OutputLayout(17, (True, True), (True, False), False)
    assert out.heatmaps.shape == (17, 256, 256) and out.tags.shape == (1, 256, 256, 2)
    assert out.people.ndim == 3 and out.people.shape[1:] == (17, 5) and len(out.scores) == len(out.people)
    # a per-joint model without cfg is recognised too
    assert infer_layout(_NoConfig(model), 17, [torch.zeros(1, 34, 4, 4), torch.zeros(1, 17, 8, 8)]).tag_per_joint


def test_keypoint_spec_must_match(tiny: nn.Module, fixtures) -> None:
    spec = KeypointSpec.coco()
    assert Predictor(tiny, spec).codec.num_joints == spec.num_joints


def test_evaluate_model_runs(tiny: nn.Module, coco_mini_dir: Path, tmp_path: Path) -> None:
    pred = Predictor(tiny, input_size=128, refine=False)  # random weights: AP ~0, this checks the plumbing
    tiny.train()  # evaluate_model runs in eval() and restores the previous mode
    try:
        stats = evaluate_model(pred, coco_mini_dir, "val2017", limit=2, batch_size=2,
                               results_file=tmp_path / "results.json", show_progress=False)
        assert tiny.training
    finally:
        tiny.eval()
    assert list(stats) == list(STAT_NAMES) and all(-1.0 <= v <= 1.0 for v in stats.values())
    results = json.loads((tmp_path / "results.json").read_text())
    assert results and {r["category_id"] for r in results} == {1} and len(results[0]["keypoints"]) == 51
