"""Students: registry, output contract (T = J and T = 1), gradients, MAC counting, the RSB, config errors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.flops import count_macs, count_params
from students import (
    CONFIG_DIR, RSB, HRNetStudent, StepStudentConfig, StudentConfigError, TimmStudentConfig, build_student,
    config_family, get_student_config, list_students,
)
from students.step import branch_width
from teachers.hrnet import PoseHigherResolutionNet

EXPECTED = [
    "hrnet_w16", "hrnet_w16_lite", "hrnet_w18_small", "step_m", "step_s", "step_s_t16",
    "timm_efficientnet_b0", "timm_mobilenetv3_large_100", "timm_resnet18",
]
ALL = sorted(EXPECTED + [f"{n}_1tag" for n in EXPECTED])
J = 17


def test_registry_lists_every_named_student() -> None:
    assert list_students() == ALL
    families = {n: config_family(get_student_config(n)) for n in ALL}
    assert {families[n] for n in ALL} == {"step", "hrnet", "timm"}
    for name in ALL:
        cfg = get_student_config(name)
        assert cfg.name == name and cfg.num_joints == J
        assert cfg.tag_per_joint is (not name.endswith("_1tag"))


@pytest.mark.parametrize("name", EXPECTED)
def test_one_tag_variant_differs_only_in_tags(name: str) -> None:
    base, one = get_student_config(name), get_student_config(f"{name}_1tag")
    assert dataclasses.replace(one, tag_per_joint=True, name=name) == base


@pytest.mark.parametrize("name", ALL)
def test_student_contract_gradients_and_macs(name: str) -> None:
    torch.manual_seed(0)
    model = build_student(name)
    tags = J if model.tag_per_joint else 1
    assert model.num_joints == J and model.tag_per_joint is (not name.endswith("_1tag"))
    # Some inits zero a BN weight to gate a residual branch (timm ResNet's zero_init_last), which
    # blocks gradients upstream at step 0 by design; randomise BN weights to test connectivity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    model.train()
    x = torch.randn(2, 3, 64, 128)  # non-square, the smallest size every student accepts
    outs = model(x)
    assert isinstance(outs, list) and len(outs) == 2
    assert tuple(outs[0].shape) == (2, J + tags, 16, 32)
    assert tuple(outs[1].shape) == (2, J, 32, 64)
    # A random-weighted sum: a plain sum is (nearly) constant under train-mode BN for some layers.
    loss = sum((o * torch.randn_like(o)).sum() for o in outs)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert not no_grad, f"{name}: parameters without a gradient: {no_grad[:5]}"
    assert not zero, f"{name}: parameters with an all-zero gradient: {zero[:5]}"
    report = count_macs(model, 512)
    assert report.device == "meta"
    assert report.params == count_params(model) > 0
    assert 0 < report.macs_true <= report.macs_paper
    assert report.breakdown.deconv_paper == 4 * report.breakdown.deconv_true > 0


def test_square_inputs_and_eval_mode() -> None:
    model = build_student("step_s").eval()
    with torch.no_grad():
        for h, w in ((64, 64), (128, 128), (192, 128)):
            outs = model(torch.randn(1, 3, h, w))
            assert [tuple(o.shape) for o in outs] == [(1, 2 * J, h // 4, w // 4), (1, J, h // 2, w // 2)]
        with pytest.raises(ValueError, match="not a multiple of 32"):
            model(torch.randn(1, 3, 80, 64))


def test_macs_in_target_ranges() -> None:
    # The documented sizes (paper convention, 512x512); all well below the teacher's 47.9 G.
    gmacs = {n: count_macs(build_student(n), 512).gmacs_paper for n in ("step_s", "step_m", "step_s_1tag")}
    assert 1.0 <= gmacs["step_s_1tag"] < gmacs["step_s"] <= 2.5
    assert 3.0 <= gmacs["step_m"] <= 6.0


def test_hrnet_student_is_the_teacher_architecture() -> None:
    model = build_student("hrnet_w16")
    assert isinstance(model, HRNetStudent) and isinstance(model, PoseHigherResolutionNet)
    teacher_like = PoseHigherResolutionNet(get_student_config("hrnet_w16"))
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in teacher_like.state_dict().items()]


def test_overrides_and_config_objects() -> None:
    model = build_student("step_s", tag_per_joint=False, num_joints=14)
    assert (model.num_joints, model.tag_per_joint) == (14, False)
    out = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in out] == [15, 14]
    hr = build_student("hrnet_w16", tag_per_joint=False)
    assert hr.final_layers[0].out_channels == J + 1
    cfg = StepStudentConfig(stem_channels=8, stage_channels=(32, 64), stage_blocks=(1, 1), neck_channels=8,
                            deconv_channels=8, num_joints=5, tag_per_joint=False)
    small = build_student(cfg)
    assert [tuple(o.shape) for o in small(torch.randn(1, 3, 64, 128))] == [(1, 6, 16, 32), (1, 5, 32, 64)]
    assert get_student_config(cfg, neck_channels=16).neck_channels == 16
    tcfg = get_student_config("timm_mobilenetv3_large_100", out_indices=[2, 3, 4])
    assert isinstance(tcfg, TimmStudentConfig) and tcfg.out_indices == (2, 3, 4)
    net = build_student(tcfg)  # finest feature at 1/8: upsampled to 1/4 by the neck
    assert net.feature_strides == (8, 16, 32)
    assert [tuple(o.shape) for o in net(torch.randn(1, 3, 64, 64))] == [(1, 2 * J, 16, 16), (1, J, 32, 32)]


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_config_errors_name_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(StudentConfigError, match="unknown student 'step_xl'.*registered: .*step_s"):
        build_student("step_xl")
    base = (CONFIG_DIR / "step_s.yaml").read_text()
    p = _write(tmp_path, base + "stage_chanels: [1]\n")
    with pytest.raises(StudentConfigError, match=r"s\.yaml: unknown field\(s\) 'stage_chanels' \(did you mean 'stage_channels'"):
        build_student(p)
    p = _write(tmp_path, base.replace("neck_channels: 32", "neck_channels: wide"))
    with pytest.raises(StudentConfigError, match=r"s\.yaml: field 'neck_channels' must be an integer, got 'wide'"):
        build_student(p)
    p = _write(tmp_path, base.replace("stage_blocks: [1, 1, 1, 1]", "stage_blocks: [1, x, 1, 1]"))
    with pytest.raises(StudentConfigError, match=r"field 'stage_blocks\[1\]' must be an integer"):
        build_student(p)
    p = _write(tmp_path, base.replace("stage_blocks: [1, 1, 1, 1]", "stage_blocks: [1, 1]"))
    with pytest.raises(StudentConfigError, match=r"s\.yaml: stage_blocks \[1, 1\] needs one entry per stage"):
        build_student(p)
    p = _write(tmp_path, base.replace("family: step\n", ""))
    with pytest.raises(StudentConfigError, match="s.yaml: missing required field 'family'"):
        build_student(p)
    p = _write(tmp_path, base.replace("family: step", "family: vit"))
    with pytest.raises(StudentConfigError, match="s.yaml: field 'family' must be one of step, hrnet, timm"):
        build_student(p)
    p = _write(tmp_path, base.replace("stem_channels: 16\n", ""))
    with pytest.raises(StudentConfigError, match="s.yaml: missing required field.*'stem_channels'"):
        build_student(p)
    with pytest.raises(StudentConfigError, match=r"unknown override\(s\) 'tags_per_joint' \(did you mean 'tag_per_joint'"):
        build_student("step_s", tags_per_joint=False)
    with pytest.raises(StudentConfigError, match=r"with overrides tag_per_joint\): field 'tag_per_joint' must be true/false"):
        build_student("step_s", tag_per_joint="no")


def test_family_specific_errors(tmp_path: Path) -> None:
    timm_base = (CONFIG_DIR / "timm_resnet18.yaml").read_text()
    p = _write(tmp_path, timm_base.replace("backbone: resnet18", "backbone: resnet_nope"))
    with pytest.raises(StudentConfigError, match="s.yaml: field 'backbone': unknown timm model 'resnet_nope'"):
        get_student_config(p)
    with pytest.raises(StudentConfigError, match=r"field 'out_indices' \[0, 1\] selects .* strides \[2, 4\]"):
        build_student("timm_resnet18", out_indices=[0, 1])
    with pytest.raises(StudentConfigError, match="backbone_kwargs' must not set 'pretrained'"):
        get_student_config("timm_resnet18", backbone_kwargs={"pretrained": True})
    hr_base = (CONFIG_DIR / "hrnet_w16.yaml").read_text()
    p = _write(tmp_path, hr_base.replace("with_ae_loss: [true, false]", "with_ae_loss: [true, true]"))
    with pytest.raises(StudentConfigError, match="s.yaml: field 'with_ae_loss' must be \\[true, false\\]"):
        get_student_config(p)
    p = _write(tmp_path, hr_base.replace("num_blocks: [2, 2], num_channels: [16, 32]",
                                         "num_blocks: [2, 2], num_channels: [16, 32, 64]"))
    with pytest.raises(StudentConfigError, match=r"s\.yaml: invalid 'stages\[0\]'.*num_channels"):
        get_student_config(p)


# ---------------------------------------------------------------------------------------------
# Residual Steps Block
# ---------------------------------------------------------------------------------------------

def test_rsb_structure_and_widths() -> None:
    block = RSB(64, 64)
    assert block.branch_channels == 26 and branch_width(32) == 13 and branch_width(256) == 104
    assert block.conv_in[0].out_channels == 4 * 26
    assert [len(branch) for branch in block.branches] == [1, 2, 3, 4]
    for branch in block.branches:
        for unit in branch:
            conv = unit[0]
            assert conv.kernel_size == (3, 3) and conv.in_channels == conv.out_channels == 26
    assert block.conv_out[0].in_channels == 4 * 26 and block.shortcut is None
    x = torch.randn(2, 64, 16, 24)
    assert block(x).shape == x.shape
    proj = RSB(48, 96, out_channels=80, stride=2)  # 96 * 26 / 64 = 39 exactly
    assert proj.branch_channels == 39 and proj.shortcut is not None
    assert proj(torch.randn(1, 48, 16, 24)).shape == (1, 80, 8, 12)
    assert RSB(40, 40).branch_channels == 16  # 16.25 rounded


def _zero_output(module: nn.Module):
    return module.register_forward_hook(lambda m, i, o: torch.zeros_like(o))


def test_rsb_step_connections() -> None:
    torch.manual_seed(0)
    block = RSB(32, 32).eval()
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        ref = block.forward_branches(x)
        assert [len(b) for b in ref] == [1, 2, 3, 4]
        for k in range(1, 4):  # 0-based branch k receives steps from branch k-1 at depths 0..k-1
            for d in range(k):
                handle = _zero_output(block.branches[k - 1][d])
                got = block.forward_branches(x)
                handle.remove()
                # Branch k changes from depth d on (its input at depth d lost the step y_{k-1,d}).
                assert not torch.equal(got[k][d], ref[k][d]), (k, d)
                assert not torch.equal(got[k][-1], ref[k][-1]), (k, d)
                # Earlier depths of branch k are untouched; nothing flows backwards to branch k-2.
                for dd in range(d):
                    assert torch.equal(got[k][dd], ref[k][dd]), (k, d, dd)
                if k >= 2:
                    assert all(torch.equal(a, b) for a, b in zip(got[k - 2], ref[k - 2]))
        # Exact formulation: y_{k,d} = u_{k,d}(y_{k,d-1} + y_{k-1,d}) with y_{k,-1} the split chunk.
        chunks = torch.split(block.conv_in(x), block.branch_channels, dim=1)
        for k, branch in enumerate(block.branches):
            for d, unit in enumerate(branch):
                inp = chunks[k] if d == 0 else ref[k][d - 1]
                if k > 0 and d < len(ref[k - 1]):
                    inp = inp + ref[k - 1][d]
                assert torch.allclose(unit(inp), ref[k][d], atol=1e-6), (k, d)
        # The block output: 1x1 conv-BN over the 4 branch ends, plus identity, ReLU.
        ends = torch.cat([b[-1] for b in ref], dim=1)
        assert torch.allclose(block(x), torch.relu(block.conv_out(ends) + x), atol=1e-6)


@pytest.mark.parametrize("kind,name", [("teacher", n) for n in ("tiny", "higherhrnet_w16_synth")] +
                         [("student", n) for n in ("step_s", "step_s_1tag", "hrnet_w16_1tag", "timm_resnet18")])
def test_every_model_declares_the_contract_its_outputs_keep(kind: str, name: str) -> None:
    """`model.output_layout` is what Predictor, bench, export and the losses read: it must describe the
    real outputs (channels per output, 1/stride of the input), so nothing has to probe."""
    from distill.models import build_model, contract_of

    model = build_model(kind, name).eval()
    layout = contract_of(model)
    with torch.no_grad():
        outs = model(torch.zeros(1, 3, 128, 128))
    assert len(outs) == len(layout.strides) == len(layout.tag_outputs)
    for i, out in enumerate(outs):
        assert out.shape[1] == layout.channels(i), (i, out.shape)
        assert out.shape[-1] == layout.output_sizes(128)[i]
    assert layout.tag_maps == (1 if name.endswith("_1tag") else layout.num_joints)


def test_coarse_tags_add_an_upsampled_coarse_term_to_the_tag_channels_only() -> None:
    torch.manual_seed(0)
    base = build_student("step_s", coarse_tags=0).eval()
    coarse = build_student("step_s", coarse_tags=16).eval()
    assert build_student("step_s").cfg.coarse_tags == 32  # the shipped config's setting
    missing = coarse.load_state_dict(base.state_dict(), strict=False)
    assert sorted(missing.missing_keys) == ["coarse_tag.bias", "coarse_tag.weight"] and not missing.unexpected_keys
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        coarse.coarse_tag.weight.zero_()
        coarse.coarse_tag.bias.zero_()
        for a, b in zip(base(x), coarse(x)):  # a zero coarse term: exactly the base network
            torch.testing.assert_close(a, b)
        coarse.coarse_tag.bias.fill_(0.5)  # a constant coarse term: the 1/4 tags shift by it, heatmaps do not
        out_base, out_coarse = base(x)[0], coarse(x)[0]
    torch.testing.assert_close(out_coarse[:, :J], out_base[:, :J])
    torch.testing.assert_close(out_coarse[:, J:], out_base[:, J:] + 0.5)
    with pytest.raises(StudentConfigError, match=r"field 'coarse_tags' must be 0 \(off\) .*\(\[8, 16, 32\]\), got 4"):
        build_student("step_s", coarse_tags=4)


def test_coarse_tag_hidden_adds_a_3x3_layer_that_starts_near_zero_and_checks_its_field() -> None:
    torch.manual_seed(0)
    plain = build_student("step_s", coarse_tags=32)
    hidden = build_student("step_s", coarse_tags=32, coarse_tag_hidden=24)
    keys = {k for k in hidden.state_dict() if k.startswith("coarse_tag.")}
    assert "coarse_tag.0.0.weight" in keys and tuple(hidden.state_dict()["coarse_tag.0.0.weight"].shape) == (24, 192, 3, 3)
    assert tuple(hidden.state_dict()["coarse_tag.1.weight"].shape) == (17, 24, 1, 1)
    assert {k for k in plain.state_dict() if k.startswith("coarse_tag.")} == {"coarse_tag.weight", "coarse_tag.bias"}
    x = torch.randn(2, 3, 64, 64)
    hidden.eval()
    with torch.no_grad():
        with_term = hidden(x)[0]
        hidden.coarse_tag[1].weight.zero_()
        without = hidden(x)[0]
        hidden.coarse_tag[1].bias.fill_(0.25)  # the layer's output reaches the tag channels only
        shifted = hidden(x)[0]
    assert 0 < (with_term - without).abs().max() < 0.1  # small init: training starts near the network without it
    torch.testing.assert_close(shifted[:, :J], without[:, :J])
    torch.testing.assert_close(shifted[:, J:], without[:, J:] + 0.25)
    with pytest.raises(StudentConfigError, match=r"field 'coarse_tag_hidden' must be 0, or > 0 with coarse_tags on"):
        build_student("step_s", coarse_tags=0, coarse_tag_hidden=8)


def test_coarse_tag_coords_feed_each_cells_image_position_to_the_last_conv() -> None:
    from students.step import COORD_UNIT, cell_positions

    pos = cell_positions(torch.zeros(2, 5, 3, 4), 32)
    assert pos.shape == (2, 2, 3, 4)
    torch.testing.assert_close(pos[0, 0, 1], (torch.arange(4.0) + 0.5) * 32 / COORD_UNIT)  # x along the width
    torch.testing.assert_close(pos[1, 1, :, 2], (torch.arange(3.0) + 0.5) * 32 / COORD_UNIT)  # y along the height
    for hidden in (0, 16):
        net = build_student("step_s", coarse_tags=32, coarse_tag_coords=True, coarse_tag_hidden=hidden).eval()
        last = net.coarse_tag if hidden == 0 else net.coarse_tag[1]
        assert last.in_channels == (192 if hidden == 0 else hidden) + 2
        x = torch.randn(1, 3, 64, 128)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            base = net(x)[0]
            last.weight[:, -2] = 1.0  # tag += x position of the cell (bilinear between cell centres)
            tags = net(x)[0][:, J:] - base[:, J:]
        assert torch.all(tags[0, 0, :, 1:] - tags[0, 0, :, :-1] >= -1e-6)  # grows left to right
        assert torch.allclose(tags[0, 0, 0], tags[0, 0, -1])  # and not along y
        assert tags[0, 0, 0, -1] - tags[0, 0, 0, 0] > 32 / COORD_UNIT  # spans more than one cell
    with pytest.raises(StudentConfigError, match="field 'coarse_tag_coords' needs coarse_tags on"):
        build_student("step_s", coarse_tags=0, coarse_tag_coords=True)
