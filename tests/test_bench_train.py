"""scripts/bench_train.py: the precision sweep prints every setting against the same row's fp32 step."""
from __future__ import annotations

import pytest

from tests.script_module import load_script


def test_precision_sweep_prints_four_settings_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_script("bench_train")
    bench.main(["--rows", "student:step_s", "--input-size", "64", "--batch", "2", "--steps", "1", "--warmup", "0",
                "--threads", "1", "--precision-sweep"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| step_s |")]
    assert [r.split("|")[2].strip() for r in rows] == [p[0] for p in bench.PRECISIONS]
    assert rows[0].rstrip().endswith("| 1.00x |")  # the reference is the row's own fp32 step
    assert all(float(r.split("|")[4]) > 0 for r in rows)


def test_bad_row_is_named() -> None:
    bench = load_script("bench_train")
    with pytest.raises(SystemExit, match="--rows entry 'student'"):
        bench._parse_row("student")


def test_row_modes_and_a_feature_kd_row_runs(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_script("bench_train")
    assert bench._parse_row("student:step_s") == ("student", "step_s", "")
    assert bench._parse_row("student:hrnet_w16_lite:fkd") == ("student", "hrnet_w16_lite", "fkd")
    with pytest.raises(SystemExit, match="--rows entry 'student:step_s:xkd'"):
        bench._parse_row("student:step_s:xkd")
    bench.main(["--rows", "student:hrnet_w16_lite:fkd", "--input-size", "64", "--batch", "2", "--steps", "1",
                "--warmup", "0", "--threads", "1"])
    assert "| hrnet_w16_lite (feature KD, online teacher) |" in capsys.readouterr().out


def test_bench_losses_prints_both_arms_per_output(capsys: pytest.CaptureFixture[str]) -> None:
    load_script("bench_losses").main(["--input-size", "32", "--batch", "1", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1/")]
    assert [r.split("|")[1].strip() for r in rows] == ["1/4 (8x8)", "1/2 (16x16)"]
    assert all(float(r.split("|")[2]) > 0 and float(r.split("|")[3]) > 0 for r in rows)


def test_bench_allocator_runs_both_arms(capsys: pytest.CaptureFixture[str]) -> None:
    load_script("bench_allocator").main(["--steps", "1", "--rounds", "1", "--input-size", "64", "--batch", "2",
                                         "--workers", "0"])
    out = capsys.readouterr().out
    assert "| glibc defaults |" in out and "| keep_freed_memory |" in out
    assert out.rstrip().splitlines()[-2].rstrip().endswith("| 1.00x |")  # the reference row


def test_compile_sweep_prints_eager_and_compiled_per_row(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The table's plumbing, with torch.compile replaced by a recorder (a real compile takes minutes on a CPU)."""
    import torch

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(m) or m)
    bench = load_script("bench_train")
    bench.main(["--rows", "student:step_s", "--input-size", "64", "--batch", "2", "--steps", "1", "--warmup", "1",
                "--threads", "1", "--compile-sweep"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| step_s |")]
    assert [r.split("|")[2].strip() for r in rows] == ["eager", "compiled"]
    assert rows[0].rstrip().endswith("| 1.00x |")
    assert len(compiled) == 1  # only the second arm went through torch.compile
    with pytest.raises(SystemExit, match="pick one"):
        bench.main(["--precision-sweep", "--compile-sweep"])
