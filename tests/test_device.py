"""Device placement on a CPU-only machine: the model-facing code run with a simulated CUDA device.

`tests/fake_cuda.py` runs every op on the CPU but raises, as CUDA would, when CPU and (fake) CUDA tensors
meet in one op or a CUDA tensor goes to numpy. The first test is the bug that made `distill train` stop at
start-up on every GPU machine (`output_strides` fed the model a CPU `torch.zeros`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.amp import AmpError, amp_dtype, amp_name, autocast
from distill.config import load_config
from distill.train import MODEL_FILE, Trainer, output_strides
from fake_cuda import DeviceMismatch, fake_cuda
from teachers import build_teacher


@pytest.fixture(scope="module")
def data_dir(make_synthetic_dataset) -> Path:
    return make_synthetic_dataset(seed=5, num_train=8, num_val=2, image_size=96)


@pytest.fixture(scope="module")
def tiny_weights(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny teacher trained for 2 steps on the CPU (weights to distil from)."""
    out = tmp_path_factory.mktemp("tiny_teacher")
    cfg = load_config(None, _base(data_dir, out / "run") + ["model.kind=teacher", "model.name=tiny"])
    Trainer(cfg).fit()
    return out / "run" / MODEL_FILE


def _base(data: Path, out: Path) -> list[str]:
    return [f"data.root={data}", "data.input_size=64", "data.workers=0", "optim.epochs=1", "optim.batch_size=2",
            f"train.out={out}", "train.eval_every=0", "train.tensorboard=false", "train.threads=1",
            "train.max_steps=2"]


def test_fake_cuda_catches_what_cuda_would() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    with fake_cuda() as fc:
        conv.to("cuda")
        assert fc.is_cuda(conv.weight) and conv.weight.device.type == "cuda"
        y = conv(torch.zeros(1, 3, 8, 8, device="cuda"))
        assert y.device.type == "cuda"
        with pytest.raises(DeviceMismatch, match="conv2d"):
            conv(torch.zeros(1, 3, 8, 8))
        with pytest.raises(TypeError, match="numpy"):
            y.detach().numpy()
        back = y.detach().cpu()
        assert not fc.is_cuda(back) and fc.is_cuda(y)
        back.numpy()
        (y * torch.tensor(2.0)).sum().backward()  # a 0-dim CPU scalar is allowed, as in CUDA
        assert fc.is_cuda(conv.weight.grad)


def test_output_strides_runs_the_model_on_its_device() -> None:
    """Failed before the fix: `torch.zeros(1, 3, S, S)` on the CPU fed to a CUDA model."""
    model = build_teacher("tiny")
    with fake_cuda():
        model.to("cuda")
        assert output_strides(model, 64) == [16, 32]


@pytest.mark.parametrize("extra", [
    pytest.param(["model.kind=teacher", "model.name=tiny", "train.eval_every=1", "train.max_steps=0"],
                 id="teacher-from-scratch+eval"),
    pytest.param(["model.kind=student", "model.name=step_s", "teacher.name=tiny", "loss.alpha=0.5",
                  "loss.kd_type=softmax", "loss.tag_kd_weight=0.01", "train.amp=bf16", "loss.ohkm_gt=true"],
                 id="step_s-online-kd-bf16"),
    pytest.param(["model.kind=student", "model.name=step_s_1tag", "teacher.name=tiny", "loss.alpha=0.5",
                  "loss.tag_kd_weight=0.01", "loss.tag_reduction=pca", "loss.ohkm_kd=true",
                  "train.channels_last=true"], id="step_s_1tag-online-kd-pca"),
])
def test_trainer_on_cuda(tmp_path: Path, data_dir: Path, tiny_weights: Path, extra: list[str]) -> None:
    overrides = _base(data_dir, tmp_path / "run") + ["train.device=cuda"] + extra
    if any(o.startswith("teacher.name") for o in extra):
        overrides.append(f"teacher.weights={tiny_weights}")
    with fake_cuda() as fc:
        trainer = Trainer(load_config(None, overrides))
        assert fc.is_cuda(next(trainer.model.parameters()))
        result = trainer.fit()
    assert result["steps"] >= 2 and np.isfinite(result["final_loss"])
    state = torch.load(tmp_path / "run" / MODEL_FILE, weights_only=True)  # saved weights load on a CPU machine
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_cache_build_and_cached_kd_on_cuda(tmp_path: Path, data_dir: Path, tiny_weights: Path) -> None:
    from distill.data.coco import CocoKeypointDataset
    from distill.teacher_cache import TeacherStore, build_store, weights_identity
    from teachers import get_teacher_config
    from teachers.checkpoint import load_checkpoint

    def build(device: str, out: Path) -> None:
        model = load_checkpoint(build_teacher("tiny"), tiny_weights).eval()
        ds = CocoKeypointDataset(data_dir, "train2017", input_size=64, augment=False)
        build_store(out, model, ds, teacher_cfg=get_teacher_config("tiny"),
                    weights=weights_identity(model, tiny_weights, False, None), input_size=64, device=device,
                    batch_size=2, show_progress=False)

    with fake_cuda():
        build("cuda", tmp_path / "store_cuda")
    build("cpu", tmp_path / "store_cpu")
    a, b = TeacherStore(tmp_path / "store_cuda"), TeacherStore(tmp_path / "store_cpu")
    for image_id in CocoKeypointDataset(data_dir, "train2017", augment=False).ids:
        for x, y in zip(a.maps(image_id), b.maps(image_id)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    overrides = _base(data_dir, tmp_path / "run") + [
        "train.device=cuda", "model.kind=student", "model.name=step_s", "teacher.name=tiny",
        f"teacher.weights={tiny_weights}", "teacher.mode=cached", f"teacher.store={tmp_path / 'store_cpu'}",
        "loss.alpha=0.5", "loss.tag_kd_weight=0.01", "train.amp=bf16"]
    with fake_cuda():
        assert Trainer(load_config(None, overrides)).fit()["steps"] == 2


def test_predictor_on_cuda_finds_the_cpu_people(data_dir: Path, tiny_weights: Path) -> None:
    from distill.predict import Predictor, read_image
    from teachers.checkpoint import load_checkpoint

    images = [read_image(p) for p in sorted((data_dir / "val2017").glob("*.jpg"))]
    model = load_checkpoint(build_teacher("tiny"), tiny_weights).eval()
    cpu = Predictor(model, input_size=64).predict_batch(images)
    with fake_cuda():
        gpu = Predictor(model, input_size=64, device="cuda", channels_last=True).predict_batch(images)
    model.to("cpu")
    for p, q in zip(cpu, gpu):
        np.testing.assert_allclose(p.people, q.people, rtol=1e-5, atol=1e-4)


def test_compare_tags_on_cuda(data_dir: Path, tiny_weights: Path) -> None:
    from distill.compare_tags import compare_tags

    with fake_cuda():
        rows = compare_tags(f"teacher:tiny:{tiny_weights}", data_dir, "val2017", input_size=64, fit_images=4,
                            device="cuda")
    assert [r["reduction"] for r in rows] == [None, "first", "mean", "pca"]


def test_amp_names_are_decided_in_one_place() -> None:
    assert amp_dtype("none") is None and amp_dtype(None) is None
    assert amp_dtype("bf16") is torch.bfloat16 and amp_dtype("fp16", "cuda") is torch.float16
    assert amp_dtype(torch.bfloat16, "cpu") is torch.bfloat16
    assert [amp_name(amp_dtype(n)) for n in ("none", "bf16", "fp16")] == ["none", "bf16", "fp16"]
    with pytest.raises(AmpError, match="needs CUDA"):
        amp_dtype("fp16", "cpu")
    with pytest.raises(AmpError, match="one of"):
        amp_dtype("fp8")
    with pytest.raises(AmpError, match="must be torch.bfloat16"):
        amp_dtype(torch.float64)
    with autocast("cpu", "bf16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype is torch.bfloat16
    with autocast("cpu", "none"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype is torch.float32


def test_fake_cuda_run_leaves_no_state(tmp_path: Path) -> None:
    """The helper's patches end with the context (the rest of the suite sees a CPU-only machine)."""
    with fake_cuda():
        assert torch.cuda.is_available()
    assert torch.cuda.is_available() is False
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_store_of_another_dataset_is_refused(tmp_path: Path, data_dir: Path, tiny_weights: Path,
                                               make_synthetic_dataset) -> None:
    """Same split name and image-id scheme, other images: the stored maps would be misaligned."""
    from distill.data.coco import CocoKeypointDataset
    from distill.teacher_cache import StoreMismatchError, build_store, weights_identity
    from teachers import get_teacher_config
    from teachers.checkpoint import load_checkpoint

    other = make_synthetic_dataset(seed=9, num_train=6, num_val=2, image_size=96)
    model = load_checkpoint(build_teacher("tiny"), tiny_weights).eval()
    build_store(tmp_path / "store", model, CocoKeypointDataset(other, "train2017", input_size=64, augment=False),
                teacher_cfg=get_teacher_config("tiny"), weights=weights_identity(model, tiny_weights, False, None),
                input_size=64, batch_size=2, show_progress=False)
    overrides = _base(data_dir, tmp_path / "run") + [
        "model.kind=student", "model.name=step_s", "teacher.name=tiny", f"teacher.weights={tiny_weights}",
        "teacher.mode=cached", f"teacher.store={tmp_path / 'store'}", "loss.alpha=0.5"]
    with pytest.raises(StoreMismatchError, match="dataset: store 6 images of .*, expected 8 images of"):
        Trainer(load_config(None, overrides))


def test_bench_gpu_path_on_cuda(tmp_path: Path, data_dir: Path, tiny_weights: Path) -> None:
    """`distill bench` on a GPU: network timings per batch and dtype, Predictor and decoding on the device."""
    from distill.bench import parse_models, run_bench

    with fake_cuda():
        rows = run_bench(parse_models([f"teacher:tiny:{tiny_weights}", "student:step_s"]), data_dir, "val2017",
                         input_size=64, repeats=1, warmup=0, gpu_batches=(1, 2), overlays=0, device="cuda",
                         show_progress=False, log=lambda m: None)
    for row in rows:
        assert row["gpu_name"] == "FakeCuda"
        assert all(row[f"gpu_b{b}_{d}_ms"] > 0 for b in (1, 2) for d in ("fp32", "bf16"))
        assert 0.0 <= row["AP"] <= 1.0
