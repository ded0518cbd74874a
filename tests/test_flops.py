"""MAC counting in the HigherHRNet paper convention: exact integers against the official counter."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.flops import MacReport, count_macs, count_params
from teachers import build_teacher

# (key in published.json measured.models, registered config, input size)
CASES = [
    ("tiny@128", "tiny", 128),
    ("tiny@256", "tiny", 256),
    ("tiny@512", "tiny", 512),
    ("W32-512", "higherhrnet_w32_512", 512),
    ("W32-640", "higherhrnet_w32_640", 640),
    ("W48-640", "higherhrnet_w48_640", 640),
]


@pytest.fixture(scope="module")
def measured(reference_dir: Path) -> dict:
    return json.loads((reference_dir / "published.json").read_text())["measured"]["models"]


def meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return build_teacher(name)


@pytest.mark.parametrize("key, name, size", CASES)
def test_exact_official_counts(measured: dict, key: str, name: str, size: int) -> None:
    ref = measured[key]
    assert ref["input_size"] == size
    report = count_macs(meta_model(name), size)
    assert report.device == "meta"
    assert report.params == ref["params"]
    assert report.macs_paper == ref["official_get_model_summary_MACs"]
    assert report.breakdown.conv2d == ref["conv2d_macs"]
    assert report.breakdown.deconv_paper == ref["deconv_macs_at_output_res"]
    assert report.breakdown.deconv_true == ref["deconv_true_macs"]
    assert report.breakdown.linear == 0
    assert report.macs_true == ref["conv2d_macs"] + ref["deconv_true_macs"]
    assert report.flops_true == ref["torch_FlopCounterMode_FLOPs"]
    assert round(report.gmacs_paper, 3) == pytest.approx(ref["GMACs_official_convention"], abs=1e-3)


def test_published_readme_numbers_without_reference() -> None:
    # README numbers (rounded) + the exact integers, so a fresh clone still checks the counter.
    for name, size, params, macs, readme in [
        ("higherhrnet_w32_512", 512, 28_645_331, 47_864_348_672, 47.9),
        ("tiny", 128, 926_491, 424_603_648, None),
    ]:
        report = count_macs(meta_model(name), size)
        assert (report.params, report.macs_paper) == (params, macs)
        if readme is not None:
            assert round(report.gmacs_paper, 1) == readme


def test_real_pass_agrees_with_meta_pass() -> None:
    model = build_teacher("tiny")
    model.train()
    model.stage2.eval()  # mixed modes must be restored exactly
    real = count_macs(model, (128, 192), device="real")
    meta = count_macs(model, (128, 192), device="meta")
    assert real.device == "cpu" and meta.device == "meta"
    assert (real.params, real.macs_paper, real.macs_true, real.breakdown) == (
        meta.params, meta.macs_paper, meta.macs_true, meta.breakdown)
    assert model.training and not model.stage2.training and model.stage3.training
    # BN statistics are untouched by counting.
    assert int(model.bn1.num_batches_tracked) == 0
    # Non-square input: (128, 192) is 1.5x the 128x128 counts.
    square = count_macs(model, 128)
    assert real.macs_paper * 2 == square.macs_paper * 3


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)                   # 8*3*3*3 = 216 weights
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)        # 72 weights
        self.bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, bias=False)  # 8*4*4*4 = 512 weights
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 10)                                            # 40 weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.dw(self.conv(x))))
        x = nn.functional.interpolate(self.up(x), scale_factor=2)
        return self.fc(self.pool(x).flatten(1))


def test_hand_computed_module() -> None:
    # Input 16x24 -> conv s2: 8x12 (96 px); dw: 8x12; deconv: in 8x12 (96 px), out 16x24 (384 px).
    report = count_macs(Toy(), (16, 24))
    assert isinstance(report, MacReport)
    assert report.input_size == (16, 24)
    assert report.breakdown.conv2d == 216 * 96 + 72 * 96
    assert report.breakdown.deconv_true == 512 * 96
    assert report.breakdown.deconv_paper == 512 * 384
    assert report.breakdown.linear == 40
    assert report.macs_paper == 216 * 96 + 72 * 96 + 512 * 384 + 40
    assert report.macs_true == 216 * 96 + 72 * 96 + 512 * 96 + 40
    assert report.flops_true == 2 * report.macs_true
    assert report.params == count_params(Toy()) == 216 + 8 + 72 + 16 + 512 + 40 + 10


def test_linear_over_tokens_and_reused_module() -> None:
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(6, 5, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.flatten(2).transpose(1, 2)  # (1, H*W, C)
            return self.proj(self.proj(t[..., :6])[..., :5].repeat(1, 1, 2)[..., :6])

    report = count_macs(Tokens(), (2, 3), in_channels=6)
    assert report.breakdown.linear == 2 * 30 * 6  # called twice over 6 tokens


def test_timm_model() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False)  # no download
    meta = count_macs(model, 224)
    real = count_macs(model, 224, device="real")
    assert meta.device == "meta" and real.device == "cpu"
    assert meta.breakdown == real.breakdown and meta.params == real.params == 11_689_512
    assert meta.macs_paper == 1_814_073_344  # the usual "1.8 GMACs" of ResNet-18, fc included
    assert meta.breakdown.linear == 512 * 1000


def test_bad_input_size() -> None:
    with pytest.raises(ValueError, match="input_size"):
        count_macs(Toy(), (1, 2, 3))
