"""`distill demo` end to end with a toy budget: every stage runs, the report is written, and a rerun
reuses the finished stages instead of redoing them."""
from __future__ import annotations

import json
from pathlib import Path


from distill.demo import DemoSettings, run_demo


def test_demo_runs_every_stage_and_reuses_them(tmp_path: Path) -> None:
    s = DemoSettings(out=str(tmp_path / "demo"), train_images=8, val_images=2, image_size=128, input_size=128,
                     teacher_epochs=1, student_epochs=1, batch_size=4, workers=0, device="cpu", train_teacher=True)
    report = run_demo(s)
    for name in ("results.md", "results.csv", "flops_vs_ap.png", "compare_tags.md", "demo.md"):
        assert (report / name).exists(), name
    stages = sorted(p.stem for p in (tmp_path / "demo" / "stages").glob("*.json"))
    assert stages == ["bench", "cache", "data", "student_step_s", "student_step_s_1tag", "tags", "teacher"]
    marker = tmp_path / "demo" / "stages" / "teacher.json"
    before = marker.stat().st_mtime_ns
    run_demo(s)  # everything reused
    assert marker.stat().st_mtime_ns == before
    assert json.loads(marker.read_text())["settings"]["teacher_epochs"] == 1
