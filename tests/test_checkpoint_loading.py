"""Checkpoint loading: accepted layouts and one clear CheckpointError for everything else."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from distill.errors import CheckpointError
from teachers import build_teacher
from teachers.checkpoint import load_checkpoint, load_teacher, matching_configs, read_state_dict, strip_prefixes


@pytest.fixture(scope="module")
def tiny_state() -> "OrderedDict[str, torch.Tensor]":
    torch.manual_seed(1)
    model = build_teacher("tiny")
    for m in model.modules():  # non-default BN statistics so a failed copy would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(7)
    return model.state_dict()


def assert_same(model: torch.nn.Module, state: dict) -> None:
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_round_trip(tmp_path: Path, tiny_state) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(tiny_state, path)
    model = build_teacher("tiny")
    assert load_checkpoint(model, path) is model
    assert_same(model, tiny_state)
    teacher = load_teacher("tiny", path)
    assert not teacher.training
    assert_same(teacher, tiny_state)


@pytest.mark.parametrize("wrap", ["state_dict", "module.", "1.", "module.1.", "state_dict+module."])
def test_wrapped_and_prefixed_variants(tmp_path: Path, tiny_state, wrap: str) -> None:
    prefix = wrap.split("+")[-1] if "." in wrap else ""
    state = OrderedDict((prefix + k, v) for k, v in tiny_state.items())
    obj = {"state_dict": state, "epoch": 140, "perf": 0.671, "model": "pose_higher_hrnet",
           "optimizer": {"param_groups": [{"lr": 1e-3}]}} if wrap.startswith("state_dict") else state
    path = tmp_path / "wrapped.pth.tar"
    torch.save(obj, path)
    model = build_teacher("tiny")
    load_checkpoint(model, path)
    assert_same(model, tiny_state)


def test_strip_prefixes_only_when_all_keys_share_them() -> None:
    t = torch.zeros(1)
    assert list(strip_prefixes({"module.1.a": t, "module.1.b": t})) == ["a", "b"]
    assert list(strip_prefixes({"1.a": t, "final_layers.1.b": t})) == ["1.a", "final_layers.1.b"]


def test_official_reference_weights_load(reference_dir: Path) -> None:
    model = build_teacher("tiny")
    load_checkpoint(model, reference_dir / "tiny" / "state_dict.pt")
    assert matching_configs(read_state_dict(reference_dir / "tiny" / "state_dict.pt")) == ["tiny"]


def test_truncated_file(tmp_path: Path, tiny_state) -> None:
    good = tmp_path / "good.pth"
    torch.save(tiny_state, good)
    data = good.read_bytes()
    for n, name in ((len(data) // 2, "half.pth"), (10, "ten.pth")):
        bad = tmp_path / name
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=rf"{name}: not a readable checkpoint \(truncated or corrupt"):
            load_checkpoint(build_teacher("tiny"), bad)
    legacy = tmp_path / "legacy.pth"
    torch.save(tiny_state, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="legacy.pth: not a readable checkpoint"):
        read_state_dict(legacy)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="absent.pth: checkpoint file not found"):
        read_state_dict(tmp_path / "absent.pth")


def test_pickled_model_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(build_teacher("tiny"), path)  # the module object, not its state_dict
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(build_teacher("tiny"), path)
    text = str(info.value)
    assert text.startswith(str(path))
    assert "weights_only=True" in text and "PoseHigherResolutionNet" in text
    assert "model.state_dict()" in text


def test_dict_without_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "meta_only.pth"
    torch.save({"epoch": 3, "perf": 0.5}, path)
    with pytest.raises(CheckpointError, match="meta_only.pth: not a state_dict: 2 of 2 entries are not tensors"):
        read_state_dict(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="got list"):
        read_state_dict(path)


def cheap_state_dict(name: str) -> "OrderedDict[str, torch.Tensor]":
    """A registered model's state_dict with 1-element storages (expanded views): tiny on disk."""
    with torch.device("meta"):
        model = build_teacher(name)
    return OrderedDict((k, torch.zeros((), dtype=v.dtype).expand(v.shape)) for k, v in model.state_dict().items())


def test_w48_checkpoint_into_w32_names_the_fitting_config(tmp_path: Path) -> None:
    path = tmp_path / "pose_higher_hrnet_w48_640.pth"
    torch.save({"state_dict": OrderedDict(("module." + k, v) for k, v in cheap_state_dict("higherhrnet_w48_640").items())}, path)
    with torch.device("meta"):
        w32 = build_teacher("higherhrnet_w32_512")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(w32, path)
    text = str(info.value)
    assert text.startswith(f"{path}: does not fit the model 'higherhrnet_w32_512'")
    assert "1432 shape mismatches: transition1.0.0.weight: file [48, 256, 3, 3] vs model [32, 256, 3, 3]" in text
    assert "(+1427 more)" in text
    assert "fits the registered config(s): higherhrnet_w48_640" in text
    assert "missing keys" not in text and "unexpected keys" not in text


def test_tiny_into_w32_lists_missing_and_unexpected(tmp_path: Path, tiny_state) -> None:
    state = OrderedDict(tiny_state)
    state["extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "tiny_plus.pth"
    torch.save(state, path)
    with torch.device("meta"):
        w32 = build_teacher("higherhrnet_w32_640")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(w32, path)
    text = str(info.value)
    assert "1194 missing keys: stage2.0.branches.0.2.conv1.weight" in text
    assert "1 unexpected keys: extra_head.weight" in text
    assert "it fits none of the registered configs" in text


def test_w32_file_fits_both_w32_configs(tmp_path: Path) -> None:
    path = tmp_path / "w32.pth"
    torch.save(cheap_state_dict("higherhrnet_w32_512"), path)
    with pytest.raises(CheckpointError, match="fits the registered config\\(s\\): higherhrnet_w32_512, higherhrnet_w32_640"):
        load_checkpoint(build_teacher("tiny"), path)


def test_non_strict_tolerates_missing_but_not_shapes(tmp_path: Path, tiny_state) -> None:
    partial = OrderedDict((k, v) for k, v in tiny_state.items() if not k.startswith("deconv_layers"))
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(CheckpointError, match="missing keys: deconv_layers.0.0.0.weight"):
        load_checkpoint(build_teacher("tiny"), path)
    model = build_teacher("tiny")
    load_checkpoint(model, path, strict=False)
    assert torch.equal(model.state_dict()["conv1.weight"], tiny_state["conv1.weight"])
    partial["conv1.weight"] = torch.zeros(1, 3, 3, 3)
    torch.save(partial, path)
    with pytest.raises(CheckpointError, match=r"conv1.weight: file \[1, 3, 3, 3\] vs model \[64, 3, 3, 3\]"):
        load_checkpoint(build_teacher("tiny"), path, strict=False)
