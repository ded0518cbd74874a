"""`distill bench`: report files and table, GMACs = count_macs, Pareto front, label parsing, clear errors.

Tiny synthetic data (3 val images of 128 px), the tiny teacher with random init and the step_s student
at input 128, 1 timing repeat, CPU only.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

import pytest
import torch

from distill.commands import bench as bench_command
from distill.bench import (
    BenchError, ModelEntry, format_table, pareto_front, parse_model, parse_models, run_bench,
)
from distill.errors import AEDistillError

EXPECTED_COLUMNS = ["model", "T", "D", "params M", "GMACs", "GFLOPs", "AP", "AP50", "AP75", "APm", "APl", "AR",
                    "network ms", "grouping ms", "e2e ms", "e2e ms mean", "images/s", "AP improved",
                    "grouping ms improved"]


def bench_cli(argv: list[str]) -> int:
    """`distill bench ARGV` through the module's own parser (independent of the other subcommands)."""
    parser = argparse.ArgumentParser(prog="distill bench")
    bench_command.add_arguments(parser)
    return bench_command.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def data_dir(make_synthetic_dataset) -> Path:
    return make_synthetic_dataset(seed=3, num_train=2, num_val=3, image_size=128)


@pytest.fixture(scope="module")
def report(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One CLI run, shared by the tests that read its report."""
    out = tmp_path_factory.mktemp("bench_report")
    capture = pytest.MonkeyPatch()
    threads = torch.get_num_threads()  # --threads 1 (tiny inputs; a loaded CI box): restored afterwards
    stdout, stderr = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", stdout)
    capture.setattr(sys, "stderr", stderr)
    try:
        rc = bench_cli(["--models", "teacher:tiny", "student:step_s", "--data", str(data_dir),
                   "--split", "val2017", "--input-size", "128", "--limit", "3", "--repeats", "1",
                   "--warmup", "0", "--no-gpu", "--overlays", "1", "--threads", "1", "--out", str(out)])
    finally:
        capture.undo()
        torch.set_num_threads(threads)
    assert rc == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def _table(md: str) -> list[list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]


def test_report_files_and_table(report: tuple[Path, str, str]) -> None:
    out, stdout, stderr = report
    for name in ("results.csv", "results.md", "flops_vs_ap.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "flops_vs_ap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    table = _table((out / "results.md").read_text())
    assert table[0] == EXPECTED_COLUMNS  # --no-gpu: no GPU columns
    assert [r[0] for r in table[2:]] == ["tiny", "step_s"]
    assert [r[1] for r in table[2:]] == ["17", "17"]
    assert _table(stdout)[0] == EXPECTED_COLUMNS  # the table is printed too
    assert str(out.resolve()) in stdout
    overlays = list((out / "overlays").glob("*.png"))
    assert len(overlays) == 1 and "overlays not written" not in stderr
    assert overlays[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_numbers(report: tuple[Path, str, str]) -> None:
    from distill.evaluate import STAT_NAMES
    from distill.flops import count_macs
    from distill.models import build_model

    out, _, _ = report
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["label"] for r in rows] == ["tiny", "step_s"]
    assert not any(k.startswith("_") for k in rows[0])
    for row, (kind, name) in zip(rows, [("teacher", "tiny"), ("student", "step_s")]):
        macs = count_macs(build_model(kind, name), 128)
        assert int(row["macs_paper"]) == macs.macs_paper
        assert float(row["gmacs"]) == macs.macs_paper / 1e9
        assert float(row["gflops"]) == macs.flops_true / 1e9
        assert int(row["params"]) == macs.params
        assert row["weights"] == "random init" and row["images"] == "3"
        for k in STAT_NAMES:
            assert -1.0 <= float(row[k]) <= 1.0
        for k in ("net_ms", "group_ms", "e2e_ms", "e2e_mean_ms", "e2e_img_s"):
            assert math.isfinite(float(row[k])) and float(row[k]) > 0, k
        assert float(row["e2e_ms"]) >= float(row["group_ms"])
        assert float(row["e2e_img_s"]) == pytest.approx(1e3 / float(row["e2e_mean_ms"]))  # throughput from the mean
        assert int(row["cpu_threads"]) >= 1
    assert float(rows[0]["gmacs"]) == pytest.approx(0.424603648)  # the official tiny model at 128


def test_gpu_columns_in_table() -> None:
    row = {"label": "a", "kind": "student", "tags": 1, "params_m": 1.0, "gmacs": 1.0, "gflops": 1.5,
           "AP": 0.5, "AP50": 0.7, "AP75": 0.5, "APm": 0.4, "APl": -1.0, "AR": 0.6, "net_ms": 5.0,
           "group_ms": 1.0, "e2e_ms": 12.0, "e2e_mean_ms": 12.0, "e2e_img_s": 83.3, "AP_improved": 0.51, "group_ms_improved": 0.9,
           "gpu_b1_fp32_ms": 2.0, "gpu_b1_bf16_ms": 1.5, "gpu_b32_fp32_ms": 20.0, "gpu_b32_bf16_ms": 10.0,
           "gpu_b32_fp32_img_s": 1600.0, "gpu_b32_bf16_img_s": 3200.0}
    table = _table(format_table([row]))
    assert table[0] == EXPECTED_COLUMNS + ["GPU b1 fp32 ms", "GPU b1 bf16 ms", "GPU b32 fp32 ms",
                                           "GPU b32 fp32 img/s", "GPU b32 bf16 ms", "GPU b32 bf16 img/s"]
    assert table[2][table[0].index("APl")] == "n/a"
    assert table[2][table[0].index("GPU b32 bf16 img/s")] == "3200"


def test_pareto_front() -> None:
    pts = [
        (1.0, 0.50),   # 0 front: cheapest
        (2.0, 0.60),   # 1 front (tied with 3)
        (3.0, 0.55),   # 2 dominated by 1 (more GMACs, less AP)
        (2.0, 0.60),   # 3 front: an equal point does not dominate
        (4.0, 0.70),   # 4 front
        (1.0, 0.40),   # 5 dominated by 0 (same GMACs, less AP)
        (5.0, 0.70),   # 6 dominated by 4 (same AP, more GMACs)
        (0.5, float("nan")),  # 7 left out
    ]
    assert pareto_front(pts) == [0, 1, 3, 4]
    assert pareto_front([]) == []
    assert pareto_front([(3.0, 0.1)]) == [0]
    assert pareto_front([(3.0, 0.9), (1.0, 0.2), (2.0, 0.5)]) == [1, 2, 0]  # sorted by GMACs


def test_label_parsing() -> None:
    e = parse_model("student:step_s:runs/x/model.pt")
    assert (e.label, e.kind, e.name, e.weights) == ("step_s", "student", "step_s", "runs/x/model.pt")
    e = parse_model("kd=student:step_s:runs/a=b/model.pt")
    assert (e.label, e.weights) == ("kd", "runs/a=b/model.pt")
    e = parse_model("student:step_s:runs/a=b/m.pt")  # '=' inside the path is not a label
    assert (e.label, e.weights) == ("step_s", "runs/a=b/m.pt")
    assert parse_model("teacher:tiny").weights is None
    for bad, words in [("step_s", "no KIND: prefix"), ("teachr:tiny", "unknown kind"), ("student:", "name is empty"),
                       ("student:step_s:", "checkpoint path after the last ':' is empty"),
                       ("=student:step_s", "empty label"), ("kd=step_s", "model 'kd': .*no KIND: prefix")]:
        with pytest.raises(BenchError, match=words):
            parse_model(bad)
    a, b = parse_models(["student:step_s:runs/a/model.pt", "student:step_s:runs/b/model.pt"])
    assert (a.label, b.label) == ("step_s@a", "step_s@b")
    with pytest.raises(BenchError, match="used twice"):
        parse_models(["student:step_s", "student:step_s"])


def test_clear_errors(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"model 'mine': unknown student 'nope'"):
        run_bench([ModelEntry("mine", "student", "nope")], data_dir, gpu=False)
    with pytest.raises(BenchError, match=r"model 'tiny': checkpoint file .*missing\.pt not found"):
        run_bench([ModelEntry("tiny", "teacher", "tiny", str(tmp_path / "missing.pt"))], data_dir, gpu=False)
    with pytest.raises(AEDistillError, match="does not exist"):
        run_bench([ModelEntry("tiny", "teacher", "tiny")], tmp_path / "no_data", gpu=False)
    # Through the command: a BenchError (an AEDistillError: `distill` prints one line, exit code 2).
    with pytest.raises(BenchError, match=r"model 'mine': unknown teacher 'nope'"):
        bench_cli(["--models", "mine=teacher:nope", "--data", str(data_dir), "--no-gpu"])


def test_registered_subcommand() -> None:
    from distill.cli import SUBCOMMANDS

    assert SUBCOMMANDS["bench"][0] == "distill.commands.bench"
    assert issubclass(BenchError, AEDistillError)


def test_bench_scores_the_other_decode_mode(report: tuple[Path, str, str]) -> None:
    """Every row carries the other mode's AP and grouping time, and the main mode is recorded."""
    out, _, _ = report
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        assert row["decode"] == "official"
        assert -1.0 <= float(row["AP_improved"]) <= 1.0 and float(row["group_ms_improved"]) > 0


def test_every_command_is_a_commands_module() -> None:
    """The layout of the command line: each subcommand one module of distill.commands with add_arguments/run."""
    import importlib

    from distill.cli import SUBCOMMANDS

    for name, (module, _) in SUBCOMMANDS.items():
        assert module.startswith("distill.commands."), name
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run), name


def test_overlays_show_truth_then_confident_people_and_joints(tmp_path: Path, monkeypatch) -> None:
    """The overlay's first panel is the ground truth; model panels leave out people under the score threshold
    and, of the people kept, joints under the joint threshold."""
    import cv2
    import numpy as np

    from distill import bench
    from distill.keypoints import KeypointSpec

    image = np.full((64, 64, 3), 128, np.uint8)
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), image)
    spec = KeypointSpec.coco()

    def person(x: float, y: float, value: float) -> np.ndarray:
        p = np.zeros((17, 3))
        p[:, 0], p[:, 1], p[:, 2] = x, y, value
        return p

    truth = np.stack([person(10, 10, 2), person(30, 30, 2), person(50, 50, 0)])  # the third has no labelled joint
    kept, weak_joint, dropped = person(10, 10, 0.9), person(30, 30, 0.9), person(50, 50, 0.9)
    weak_joint[:, 2] = 0.1  # every joint under the joint threshold: nothing drawn
    people = np.stack([kept, weak_joint, dropped])
    scores = np.array([0.9, 0.8, bench.OVERLAY_SCORE_THR / 2])
    rows = [{"label": "teacher", "kind": "teacher", "_spec": spec, "_overlays": [(str(path), people, scores, truth)]}]
    captured = {}

    def fake_side_by_side(panels, titles):
        captured["panels"], captured["titles"] = panels, titles
        return np.concatenate(panels, axis=1)

    monkeypatch.setattr(bench, "side_by_side", fake_side_by_side)
    written = bench.write_overlays(rows, tmp_path / "overlays")
    assert len(written) == 1 and written[0].exists()
    assert captured["titles"] == ["ground truth: 2 people", "teacher: 2 people"]
    gt_panel, model_panel = captured["panels"]
    assert (gt_panel[10, 10] != 128).any() and (gt_panel[30, 30] != 128).any() and (gt_panel[50, 50] == 128).all()
    assert (model_panel[10, 10] != 128).any()  # confident person, confident joints
    assert (model_panel[30, 30] == 128).all()  # kept person, but its joints are weak
    assert (model_panel[50, 50] == 128).all()  # person under the score threshold
