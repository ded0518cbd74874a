"""HigherHRNet architecture: official state_dict layout, parameter counts, numerical parity, configs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from teachers import (
    HigherHRNetConfig, TeacherConfigError, build_teacher, get_teacher_config, list_teachers, load_config,
)
from teachers.config import dump_config

OFFICIAL = {
    # registered name: (manifest relative to the reference dir, exact parameter count)
    "higherhrnet_w32_512": ("state_dict_w32_512.tsv", 28_645_331),
    "higherhrnet_w32_640": ("state_dict_w32_512.tsv", 28_645_331),  # W32-640 has the W32-512 state_dict
    "higherhrnet_w48_640": ("state_dict_w48_640.tsv", 63_827_139),
    "tiny": ("tiny/state_dict.tsv", 926_491),
}


def read_manifest(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "key\tshape"
    out = []
    for line in lines[1:]:
        key, shape = line.split("\t")
        out.append((key, tuple(int(v) for v in shape.split(",")) if shape else ()))
    return out


def meta_model(name: str):
    with torch.device("meta"):
        return build_teacher(name)


def test_registry_lists_named_configs() -> None:
    names = list_teachers()
    for name in OFFICIAL:
        assert name in names
    cfg = get_teacher_config("higherhrnet_w48_640")
    assert cfg.input_size == 640 and cfg.name == "higherhrnet_w48_640"
    assert get_teacher_config("higherhrnet_w32_512").input_size == 512
    with pytest.raises(TeacherConfigError, match="unknown teacher 'w99'.*registered: .*higherhrnet_w32_512"):
        get_teacher_config("w99")


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_state_dict_matches_official_manifest(name: str, reference_dir: Path) -> None:
    manifest, n_params = OFFICIAL[name]
    model = meta_model(name)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    expected = read_manifest(reference_dir / manifest)
    if got != expected:  # point at the first difference instead of dumping 1810 entries
        first = next(i for i, (a, b) in enumerate(zip(got + [None] * len(expected), expected)) if a != b)
        pytest.fail(f"{name}: entry {first} is {got[first] if first < len(got) else None}, "
                    f"official {expected[first]} ({len(got)} vs {len(expected)} entries)")
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_param_counts_without_reference() -> None:
    # The same counts, asserted without ../shared (so a fresh clone still checks the architecture).
    for name, (_, n_params) in OFFICIAL.items():
        assert sum(p.numel() for p in meta_model(name).parameters()) == n_params, name


def test_official_structural_facts() -> None:
    model = meta_model("higherhrnet_w32_512")
    keys = list(model.state_dict())
    assert keys.index("final_layers.1.bias") < keys.index("deconv_layers.0.0.0.weight")
    assert model.transition2[0] is None and model.transition2[1] is None
    assert model.transition3[2] is None and model.transition3[3] is not None
    assert len(model.stage4[2].fuse_layers) == 1 and len(model.stage4[1].fuse_layers) == 4
    assert "deconv_layers.0.1.0.conv1.weight" in keys
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 301 and all(bn.momentum == 0.1 for bn in bns)


def test_tiny_numerical_parity(reference_dir: Path, record_property) -> None:
    tiny = reference_dir / "tiny"
    model = build_teacher("tiny")
    state = torch.load(tiny / "state_dict.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    io = np.load(tiny / "io.npz")
    with torch.no_grad():
        outputs = model(torch.from_numpy(io["input"]))
    assert isinstance(outputs, list) and len(outputs) == 2
    diffs = []
    for out, key in zip(outputs, ("output_1_4", "output_1_2")):
        ref = io[key]
        assert tuple(out.shape) == ref.shape
        diff = float(np.abs(out.numpy() - ref).max())
        diffs.append(diff)
        record_property(f"max_abs_diff_{key}", diff)
        print(f"tiny parity {key}: max abs diff {diff:.3g}")
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-3)
    # The README measures <= 1e-4 for legitimate recomputation; a float32 CPU run should be ~1e-5.
    assert max(diffs) <= 1e-4, diffs


def tiny_config(**changes) -> HigherHRNetConfig:
    return dataclasses.replace(get_teacher_config("tiny"), **changes)


def test_output_contract_and_shared_tag_map() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 128, 128)
    model = build_teacher(tiny_config()).eval()
    with torch.no_grad():
        out = model(x)
    assert [tuple(o.shape) for o in out] == [(1, 34, 32, 32), (1, 17, 64, 64)]
    shared = build_teacher(tiny_config(tag_per_joint=False)).eval()
    with torch.no_grad():
        out = shared(x)
    assert [tuple(o.shape) for o in out] == [(1, 18, 32, 32), (1, 17, 64, 64)]
    # The deconv input is features + the 18-channel 1/4 output.
    assert shared.deconv_layers[0][0][0].in_channels == 8 + 18


def test_non_square_input() -> None:
    model = build_teacher("tiny").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 192))
    assert [tuple(o.shape) for o in out] == [(2, 34, 32, 48), (2, 17, 64, 96)]
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 3, 128, 100))


def test_w32_non_square_forward_on_meta() -> None:
    model = meta_model("higherhrnet_w32_512").eval()
    out = model(torch.empty(1, 3, 512, 768, device="meta"))
    assert [tuple(o.shape) for o in out] == [(1, 34, 128, 192), (1, 17, 256, 384)]


def test_general_configs_build_and_run() -> None:
    """The builder is general: fewer/more branches, bottleneck stages, 2 deconvs, other joint counts."""
    base = get_teacher_config("tiny")
    stages = (
        dataclasses.replace(base.stages[0], block="bottleneck", num_channels=(4, 8)),
        dataclasses.replace(base.stages[1], num_modules=2),
    )
    deconv = dataclasses.replace(base.deconv, num_deconvs=2, num_channels=(8, 4), kernel_size=(4, 2),
                                 cat_output=(True, False), num_basic_blocks=0)
    cfg = dataclasses.replace(base, num_joints=14, stages=stages, deconv=deconv,
                              with_ae_loss=(True, True, False), final_conv_kernel=3)
    model = build_teacher(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in out] == [(1, 28, 16, 24), (1, 28, 32, 48), (1, 14, 64, 96)]
    assert model.input_multiple == 16


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = get_teacher_config("higherhrnet_w48_640")
    path = tmp_path / "copy.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert build_teacher(str(path)).cfg == cfg


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(num_joint=17), "unknown field(s) 'num_joint' (did you mean 'num_joints'?)"),
    (lambda d: d.pop("deconv"), "missing required field(s) 'deconv'"),
    (lambda d: d["stages"][1].pop("num_channels"), "missing required field(s) 'stages[1].num_channels'"),
    (lambda d: d["stages"][0].update(widths=[1]), "unknown field(s) 'stages[0].widths'"),
    (lambda d: d["deconv"].update(num_channels=[8, 8]), "deconv.num_channels [8, 8] has 2 entries"),
    (lambda d: d["stages"][2].update(block="dense"), "invalid 'stages[2]': block must be one of"),
    (lambda d: d.update(tag_per_joint="yes"), "field 'tag_per_joint' must be true/false"),
    (lambda d: d["stages"][0].update(num_blocks=[2, "2"]), "field 'stages[0].num_blocks[1]' must be an integer"),
    (lambda d: d.update(with_ae_loss=[True]), "with_ae_loss [True] needs one entry per output"),
])
def test_yaml_errors_name_file_and_field(tmp_path: Path, edit, message: str) -> None:
    import yaml

    data = get_teacher_config("tiny").to_dict()
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TeacherConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(str(path)), text
    assert message in text, text


def test_yaml_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(TeacherConfigError, match="list.yaml: the top level must be a mapping"):
        load_config(path)
    with pytest.raises(TeacherConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")
