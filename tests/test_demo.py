"""`distill demo` end to end with a toy budget: every stage runs, the report is written, and a rerun
reuses the finished stages instead of redoing them."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from distill.demo import DemoSettings, Stages, run_demo


def test_demo_runs_every_stage_and_reuses_them(tmp_path: Path) -> None:
    s = DemoSettings(out=str(tmp_path / "demo"), train_images=8, val_images=2, image_size=128, input_size=128,
                     teacher_epochs=1, student_epochs=1, batch_size=4, workers=0, device="cpu", train_teacher=True,
                     parallel_students=True)
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
    student = json.loads((tmp_path / "demo" / "stages" / "student_step_s.json").read_text())
    assert student["group"] == "students" and student["settings"]["parallel_students"] is True
    from distill.amp import resolve_training_amp

    assert student["settings"]["amp"] == resolve_training_amp("auto", "cpu")  # recorded resolved, not "auto"
    assert json.loads((tmp_path / "demo" / "step_s" / "config.json").read_text())["train"]["amp"] == \
        student["settings"]["amp"]
    assert "(side by side)" in (report / "demo.md").read_text()

    # The tags stage reused the bench's stats for the teacher and the students: evaluated afresh, they are equal.
    from distill.compare_tags import compare_tags
    from distill.demo import _bench_stats

    assert sorted(_bench_stats(s, report)) == ["1 tag", "17 tags", "teacher"]  # what the tags stage reused
    demo = tmp_path / "demo"
    fresh = compare_tags(f"teacher:higherhrnet_w16_synth:{demo / 'teacher' / 'model.pt'}", demo / "data", "val2017",
                         input_size=128, rules=(), device="cpu",
                         students={"17 tags": f"student:step_s:{demo / 'step_s' / 'model.pt'}",
                                   "1 tag": f"student:step_s_1tag:{demo / 'step_s_1tag' / 'model.pt'}"})
    reused = {r["row"]: r["stats"] for r in json.loads((report / "compare_tags.json").read_text())["rows"]}
    assert [r["row"] for r in fresh] == ["teacher 17 tags", "student 17 tags", "student 1 tag"]
    for row in fresh:
        assert row["stats"] == reused[row["row"]], row["row"]


def _sleep_then_touch(path: str, seconds: float) -> None:
    time.sleep(seconds)
    Path(path).write_text("done")


def _fail() -> None:
    raise ValueError("this job fails")


def test_side_by_side_stages_mark_each_and_count_once(tmp_path: Path) -> None:
    stages = Stages(tmp_path, DemoSettings(out=str(tmp_path)))
    stages.run("alone", lambda: time.sleep(0.05))
    stages.run_side_by_side("pair", {"a": (_sleep_then_touch, (str(tmp_path / "a"), 0.1)),
                                     "b": (_sleep_then_touch, (str(tmp_path / "b"), 4.0))})
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()
    assert stages.walls["a"] < stages.walls["b"]  # each marked when its own process ended
    assert stages.total_seconds() == pytest.approx(stages.walls["alone"] + stages.walls["b"])
    again = Stages(tmp_path, DemoSettings(out=str(tmp_path)))
    again.run_side_by_side("pair", {"a": (_fail, ()), "b": (_fail, ())})  # both reused, nothing runs
    assert again.groups == {"a": "pair", "b": "pair"}


def test_a_failing_side_by_side_job_names_its_stage_and_stops_the_others(tmp_path: Path) -> None:
    stages = Stages(tmp_path, DemoSettings(out=str(tmp_path)))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match="demo stage bad failed"):
        stages.run_side_by_side("pair", {"bad": (_fail, ()), "slow": (_sleep_then_touch, (str(tmp_path / "s"), 60))})
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "s").exists()
    assert not (tmp_path / "stages" / "bad.json").exists() and not (tmp_path / "stages" / "slow.json").exists()


def test_auto_precision_is_resolved_per_cpu_and_reaches_the_students(monkeypatch: pytest.MonkeyPatch) -> None:
    import distill.amp as amp
    from distill.demo import _overrides

    monkeypatch.setattr(amp, "native_cpu_bf16", lambda: True)
    assert amp.resolve_training_amp("auto", "cpu") == "bf16"
    assert amp.resolve_training_amp("auto", "cuda") == "none"  # CUDA runs keep fp32 unless asked
    monkeypatch.setattr(amp, "native_cpu_bf16", lambda: False)
    assert amp.resolve_training_amp("auto", "cpu") == "none"  # emulated bf16 would be slower than fp32
    assert amp.resolve_training_amp("bf16", "cpu") == "bf16"  # an explicit choice stands
    with pytest.raises(amp.AmpError, match="fp16 autocast needs CUDA"):
        amp.resolve_training_amp("fp16", "cpu")
    over = _overrides(DemoSettings(amp="bf16"), "step_s", 1)
    assert "train.amp=bf16" in over and "train.channels_last=true" in over
    over = _overrides(DemoSettings(amp="none"), "step_s", 1)
    assert "train.amp=none" in over and "train.channels_last=false" in over


def test_demo_refuses_fp16_on_the_cpu_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--amp: fp16 autocast needs CUDA"):
        run_demo(DemoSettings(out=str(tmp_path / "demo"), device="cpu", amp="fp16"))
    assert not (tmp_path / "demo").exists()


def test_student_epochs_are_sized_for_the_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    import distill.amp as amp
    from distill.demo import STUDENT_EPOCHS, resolve_settings

    monkeypatch.setattr(amp, "native_cpu_bf16", lambda: True)
    fast = resolve_settings(DemoSettings(device="cpu"))
    assert (fast.amp, fast.student_epochs) == ("bf16", STUDENT_EPOCHS["bf16"])
    monkeypatch.setattr(amp, "native_cpu_bf16", lambda: False)
    slow = resolve_settings(DemoSettings(device="cpu"))
    assert (slow.amp, slow.student_epochs) == ("none", STUDENT_EPOCHS["none"])
    assert STUDENT_EPOCHS["bf16"] > STUDENT_EPOCHS["none"]  # the faster precision buys more steps in the budget
    assert resolve_settings(DemoSettings(device="cpu", student_epochs=3)).student_epochs == 3  # a choice stands


def test_students_train_with_their_recipes_batch_unless_told() -> None:
    from distill.config import TeacherSection, load_config
    from distill.demo import STUDENT_RECIPES, _overrides

    teacher = TeacherSection(name="higherhrnet_w16_synth", weights="w.pt", mode="cached", store="store")
    for student, recipe in STUDENT_RECIPES.items():
        cfg = load_config(recipe, _overrides(DemoSettings(amp="none"), student, 1, teacher))
        assert cfg.optim.batch_size == load_config(recipe).optim.batch_size
        told = load_config(recipe, _overrides(DemoSettings(amp="none", student_batch_size=6), student, 1, teacher))
        assert told.optim.batch_size == 6
    assert "optim.batch_size=8" in _overrides(DemoSettings(), "teacher", 1)  # the teacher's own batch
