"""`distill export`: BatchNorm folding, ONNX export, onnxruntime parity and decoding through `OnnxModel`."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from distill.export import (
    FOLD_RTOL, ONNX_ATOL, ExportError, OnnxModel, compare_people, export_onnx, find_conv_bn_pairs,
    fold_batchnorm, fold_conv_bn, max_output_diff,
)
from distill.predict import Predictor, read_image
from distill.models import build_model

from conftest import REFERENCE


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (fresh ones fold to almost nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) * 0.4 + 0.8)
                    m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()


def _with_detections(model: nn.Module, offset: float = 0.2) -> nn.Module:
    """Lift the heatmap channels of a random student so the decoder finds people to compare."""
    with torch.no_grad():
        for layer in model.head.final_layers:
            layer.bias[: model.num_joints] += offset
    return model


@pytest.fixture(scope="module")
def synthetic_image(make_synthetic_dataset) -> np.ndarray:
    root = make_synthetic_dataset(seed=0, num_train=0, num_val=1, image_size=256)
    return read_image(sorted((root / "val2017").glob("*.jpg"))[0])


@pytest.mark.parametrize("kind,name", [
    ("student", "step_s"), ("student", "hrnet_w16"), ("student", "timm_mobilenetv3_large_100"), ("teacher", "tiny"),
])
def test_bn_folding_equals_unfolded(kind: str, name: str) -> None:
    torch.manual_seed(0)
    model = _randomize_bn(build_model(kind, name))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    folded, report = fold_batchnorm(model, example=x)
    # every BN (timm's BatchNormAct2d included) was folded away; the original is untouched
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert len(report.pairs) == n_bn and not report.unpaired
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    assert report.traced, "torch.fx should trace at least the simple submodules"
    with torch.no_grad():
        diff, scale = max_output_diff(model(x), folded(x))
    assert diff <= FOLD_RTOL * scale, (diff, scale)
    assert report.rel_diff <= FOLD_RTOL and report.rel_diff_f64 <= FOLD_RTOL


def test_fold_conv_bn_grouped_transposed_and_biased() -> None:
    torch.manual_seed(0)
    for conv in (nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=True),
                 nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=2, bias=False),
                 nn.ConvTranspose2d(5, 3, 3, stride=1, padding=1, bias=True)):
        bn = _randomize_bn(nn.BatchNorm2d(conv.out_channels))
        ref = nn.Sequential(conv, bn).eval()
        x = torch.randn(2, conv.in_channels, 9, 9)
        with torch.no_grad():
            expected = ref(x)
            fold_conv_bn(conv, bn)
            got = conv(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


class _Untraceable(nn.Module):
    """Data-dependent control flow (fx cannot trace it), conv1/bn1 attributes, a Sequential inside, and a
    conv whose output is used twice (must not be folded)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.shared = _SharedUse()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        if float(y.mean()) > -1.0:  # data-dependent
            y = self.body(y)
        return self.shared(y)


class _SharedUse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv(x)
        return self.bn(c) + c  # conv output used twice: folding would be wrong


def test_fold_fallback_and_unsafe_pairs() -> None:
    torch.manual_seed(0)
    model = _randomize_bn(_Untraceable())
    report = find_conv_bn_pairs(model)
    assert ("conv1", "bn1") in report.pairs and ("body.0", "body.1") in report.pairs
    assert [w for w, _ in report.fallback] == ["<model>"]
    assert "shared" in report.traced and report.unpaired == ["shared.bn"]
    x = torch.randn(1, 3, 16, 16)
    folded, rep = fold_batchnorm(model, example=x)
    assert isinstance(folded.shared.bn, nn.BatchNorm2d) and isinstance(folded.bn1, nn.Identity)
    assert rep.rel_diff <= FOLD_RTOL


def test_onnx_export_step_s_parity_and_decoding(tmp_path: Path, synthetic_image: np.ndarray) -> None:
    torch.manual_seed(0)
    model = _with_detections(_randomize_bn(build_model("student", "step_s")))
    out = tmp_path / "step_s.onnx"
    report = export_onnx(model, out, height=128, width=128, dynamic=True, check=True, image=synthetic_image,
                         image_source="synthetic")
    assert out.is_file() and not list(tmp_path.glob(".*.tmp"))
    assert report.output_names == ["out_1_4", "out_1_2"]
    assert max(report.onnx_max_abs_diff) <= ONNX_ATOL and report.dynamic_max_abs_diff <= ONNX_ATOL
    assert report.people_onnx == report.people_torch > 0
    import onnx

    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["out_1_4", "out_1_2"]
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    # The adapter behind the unchanged Predictor, at another (non-square) size thanks to --dynamic.
    image = synthetic_image[:, :200]
    a = Predictor(model, input_size=128).predict(image)
    b = Predictor(OnnxModel(out), input_size=128).predict(image)
    assert b.people.shape[0] > 0 and compare_people(a, b) is None


def test_onnx_export_tiny_teacher(tmp_path: Path, synthetic_image: np.ndarray) -> None:
    from distill.export import _fit_image

    torch.manual_seed(0)
    model = build_model("teacher", "tiny")
    weights = REFERENCE / "tiny" / "state_dict.pt"
    if weights.is_file():
        from distill.models import load_weights

        load_weights(model, weights)
    else:
        _randomize_bn(model)
    model.eval()
    out = tmp_path / "tiny.onnx"
    report = export_onnx(model, out, height=128, width=128, check=False)
    assert report.fold is not None and report.fold.rel_diff <= FOLD_RTOL
    x, _ = Predictor(model, input_size=128).preprocess(_fit_image(synthetic_image, 128, 128))
    with torch.no_grad():
        ref = model(x)
    diff, _ = max_output_diff(ref, OnnxModel(out)(x))
    assert diff <= ONNX_ATOL, diff


def test_failed_check_writes_nothing_and_bad_sizes(tmp_path: Path, synthetic_image: np.ndarray) -> None:
    class Tiny(nn.Module):  # the output contract in two convs
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 34, 3, stride=4, padding=1), nn.BatchNorm2d(34))
            self.b = nn.Conv2d(3, 17, 3, stride=2, padding=1)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [self.a(x), self.b(x)]

    model = _randomize_bn(Tiny())
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="disagree"):
        export_onnx(model, out, height=64, width=128, atol=-1.0, image=synthetic_image)
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ExportError, match="multiples of 64"):
        export_onnx(model, out, height=100, width=128)
    report = export_onnx(model, out, height=64, width=128, image=synthetic_image)
    assert out.is_file() and max(report.onnx_max_abs_diff) <= ONNX_ATOL


def test_cli_export_and_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from distill.cli import main

    out = tmp_path / "s.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["export", "--model", "student:step_s", "--onnx", str(out), "--input-size", "64", "--no-check"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert main(["export", "--model", "pupil:step_s", "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "unknown kind 'pupil'" in capsys.readouterr().err


def test_compare_people_reports_what_differs() -> None:
    from types import SimpleNamespace

    people = np.random.default_rng(0).uniform(0, 50, (3, 17, 5)).astype(np.float32)
    a = SimpleNamespace(people=people, scores=np.ones(3, np.float32))
    b = SimpleNamespace(people=people.copy(), scores=np.ones(3, np.float32))
    assert compare_people(a, b) is None
    b.people[1, 4, 0] += 2.0
    assert "1 of 51 joints in 1 of 3 people differ" in compare_people(a, b)
    assert "3 vs 2 people" in compare_people(a, SimpleNamespace(people=people[:2], scores=np.ones(2)))
