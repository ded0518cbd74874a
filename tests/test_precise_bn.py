"""Precise BN (distill/precise_bn.py): equal-weight batch statistics, restored state, and the Trainer's use of it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from distill.config import ConfigError, load_config
from distill.precise_bn import batch_norms, recompute_bn_statistics
from distill.train import CHECKPOINT, MODEL_FILE, train


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                         nn.BatchNorm2d(2))


def test_statistics_are_the_equal_weight_average_of_the_batches() -> None:
    net = _net().eval()
    batches = [torch.randn(3, 3, 8, 8) * (1 + i) + i for i in range(5)]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    used = recompute_bn_statistics(net, iter(batches), batches=4)
    assert used == 4
    # slow reference: the first BN's input is the first conv's output; per batch its channel mean and unbiased var
    conv, bn = net[0], net[1]
    with torch.no_grad():
        outs = [conv(x) for x in batches[:4]]
    means = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    varis = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(bn.running_mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, varis, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 4
    assert all(m.momentum == 0.1 for m in batch_norms(net)) and not net.training  # restored
    for k, v in weights.items():
        assert torch.equal(net.state_dict()[k], v), k  # only the statistics change


def test_no_batch_leaves_the_trained_statistics() -> None:
    net = _net()
    net.train()
    net(torch.randn(2, 3, 8, 8))  # some trained statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recompute_bn_statistics(net, iter([]), batches=10) == 0
    assert recompute_bn_statistics(net, iter([torch.randn(2, 3, 8, 8)]), batches=0) == 0
    for k, v in before.items():
        assert torch.equal(net.state_dict()[k], v), k
    assert net.training


def test_fewer_batches_than_asked_uses_what_there_is() -> None:
    net = _net()
    assert recompute_bn_statistics(net, iter([torch.randn(2, 3, 8, 8)] * 3), batches=10) == 3
    assert int(net[1].num_batches_tracked) == 3


def _config(tmp: Path, data: Path, name: str, **train_section: object) -> Path:
    cfg = {
        "model": {"kind": "student", "name": "step_s"},
        "data": {"root": str(data), "input_size": 64, "workers": 0},
        "optim": {"epochs": 2, "batch_size": 2, "lr": 1e-3},
        "train": {"out": str(tmp / name), "seed": 0, "eval_every": 0, "tensorboard": False, "threads": 1,
                  **train_section},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_trainer_recomputes_the_final_models_statistics(tmp_path: Path, make_synthetic_dataset,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = make_synthetic_dataset(seed=5, num_train=8, num_val=2, image_size=96)
    train(load_config(_config(tmp_path, data, "plain")))
    train(load_config(_config(tmp_path, data, "pbn", precise_bn_batches=9)))
    # 8 images of batch 2 = 4 batches per pass: 9 batches take three passes (augmentations of unseen epochs)
    assert "precise BN: statistics from 9 training batches" in capsys.readouterr().out
    plain = torch.load(tmp_path / "plain" / MODEL_FILE, weights_only=True)["state_dict"]
    pbn = torch.load(tmp_path / "pbn" / MODEL_FILE, weights_only=True)["state_dict"]
    stats = [k for k in plain if k.endswith("running_mean")]
    assert stats
    for k in plain:  # the same training (precise BN runs after the last step), other statistics
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        assert torch.equal(plain[k], pbn[k]), k
    assert all(int(pbn[k.replace("running_mean", "num_batches_tracked")]) == 9 for k in stats)
    assert any(not torch.equal(plain[k], pbn[k]) for k in stats)
    # the checkpoint holds the same model, so a resumed or re-evaluated run reads these statistics too
    ckpt = torch.load(tmp_path / "pbn" / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(ckpt[k], pbn[k]) for k in stats)


def test_a_negative_batch_count_is_refused(tmp_path: Path, make_synthetic_dataset) -> None:
    data = make_synthetic_dataset(seed=5, num_train=8, num_val=2, image_size=96)
    with pytest.raises(ConfigError, match="train.precise_bn_batches"):
        load_config(_config(tmp_path, data, "bad", precise_bn_batches=-1))


def test_an_endless_source_is_read_only_as_far_as_asked() -> None:
    drawn = []

    def endless():
        while True:
            drawn.append(1)
            yield torch.randn(2, 3, 8, 8)

    assert recompute_bn_statistics(_net(), endless(), batches=5) == 5
    assert len(drawn) == 5


def test_trainer_with_fewer_images_than_a_batch_leaves_the_statistics(tmp_path: Path, make_synthetic_dataset) -> None:
    """No full batch to average: precise BN uses none (and does not loop forever looking for one)."""
    from distill.train import Trainer

    data = make_synthetic_dataset(seed=5, num_train=8, num_val=2, image_size=96)
    trainer = Trainer(load_config(_config(tmp_path, data, "few", precise_bn_batches=5)))
    trainer.dataset.ids = trainer.dataset.ids[:1]  # one image, batch 2
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.precise_bn() == 0
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in before.items())
    trainer.release()


def test_resuming_with_another_batch_count_is_allowed(tmp_path: Path, make_synthetic_dataset) -> None:
    """The statistics are recomputed after the last epoch only: the count does not change the training itself."""
    data = make_synthetic_dataset(seed=5, num_train=8, num_val=2, image_size=96)
    path = _config(tmp_path, data, "resume")
    train(load_config(path, ["train.max_steps=2"]))
    train(load_config(path, ["train.precise_bn_batches=2"]))  # no resume_override needed
    assert int(torch.load(tmp_path / "resume" / MODEL_FILE, weights_only=True)["state_dict"][
        "stem.0.1.num_batches_tracked"]) == 2
