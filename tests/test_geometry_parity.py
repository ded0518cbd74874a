"""Test-time resize and prediction mapping against the official pipeline fixtures.

Tolerances (fixture README): affine 1e-12, resized image exact, center/scale/base size exact,
final_preds atol 1e-4 px.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from distill.geometry import resize_for_test, inference_resize, transform_preds

IMAGES = ["000000165518", "000000183709"]


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("name", IMAGES)
def test_resize_and_final_preds_match_official(reference_dir: Path, coco_mini_dir: Path, name: str) -> None:
    z = np.load(reference_dir / "pipeline" / f"{name}.npz")
    index = {e["file"]: e for e in json.loads((reference_dir / "pipeline" / "index.json").read_text())["images"]}
    image = _read_rgb(coco_mini_dir / str(z["image_file"]))
    assert hashlib.sha256(image.tobytes()).hexdigest() == index[f"{name}.npz"]["decoded_image_sha256"]

    resized, resize = resize_for_test(image, 256)
    np.testing.assert_array_equal(resize.center, z["center"])
    np.testing.assert_array_equal(resize.scale, z["scale"])
    assert resize.size == tuple(int(v) for v in z["base_size"])
    np.testing.assert_allclose(resize.input_affine(), z["affine"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(resized, z["image_resized"])

    preds = transform_preds(z["final_preds_input"], resize.center, resize.scale, resize.size)
    np.testing.assert_allclose(preds, z["final_preds_output"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("w,h,expected", [(640, 480, (704, 512)), (480, 640, (512, 704)), (512, 512, (512, 512)),
                                          (1000, 300, (1728, 512))])
def test_resize_rounds_long_side_up_to_64(w: int, h: int, expected: tuple[int, int]) -> None:
    assert inference_resize(w, h, 512).size == expected
