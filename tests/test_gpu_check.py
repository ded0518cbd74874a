"""scripts/gpu_check.py cannot rot: its dry run (every section at tiny sizes on the CPU) must pass."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "dry.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["errors"] == {}
    for key in ("teacher", "students", "train_step", "data_pipeline", "cache_teacher", "decode",
                "synthetic_training"):
        assert key in report, key
    modes = {(r["batch"], r["mode"]) for r in report["teacher"]["rows"]}
    assert {(1, "fp32"), (1, "bf16"), (1, "bf16+cl"), (2, "compile")} <= modes
    assert [r["name"] for r in report["students"]["rows"]] == ["step_s", "step_m", "hrnet_w16",
                                                               "timm_mobilenetv3_large_100"]
    assert report["decode"]["same_people"] is True
    assert "| teacher higherhrnet_w32_512" in proc.stdout and "DRY RUN" in proc.stdout
    assert "student_budget" not in report  # opt-in: it would not fit one device call with the rest


def test_gpu_check_student_budget_dry_run(tmp_path: Path) -> None:
    """The opt-in section: the demo's step_s recipe on the demo's data and shipped teacher, a curve and a held-out AP."""
    out = tmp_path / "dry.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--dry-run", "--only",
                           "student_budget", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {} and set(report["section_seconds"]) == {"student_budget"}
    sb = report["student_budget"]
    assert sb["steps"] > 0 and [c["epoch"] for c in sb["val_curve"]] == [1, 2]
    assert 0.0 <= sb["heldout_seed7_AP"] <= 1.0
    assert sb["config"]["teacher"]["mode"] == "cached" and sb["config"]["loss"]["kd_until"] < 1.0
    assert "| step_s, the demo's recipe at 2 epochs" in proc.stdout
