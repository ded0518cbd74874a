"""scripts/synthetic_study.py: the student runs, one at a time or side by side (--jobs)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.script_module import load_script

REPO = Path(__file__).resolve().parents[1]

study = load_script("synthetic_study")


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_side_by_side_runs_overlap_get_threads_and_write_logs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(study.os, "cpu_count", lambda: 4)
    # Each job records its argv, then waits (bounded) for the other's file: both can only finish if they ran at once.
    wait = ("import sys, time, pathlib; d = pathlib.Path(sys.argv[1]); (d / sys.argv[2]).write_text(' '.join(sys.argv));"
            "other = d / sys.argv[3]; t = time.time()\n"
            "while not other.exists() and time.time() - t < 60: time.sleep(0.05)\n"
            "print('saw', other.exists())")
    jobs = [("a", _py(wait) + [str(tmp_path), "a", "b"]), ("b", _py(wait) + [str(tmp_path), "b", "a"])]
    study._run_students(jobs, 2, tmp_path, user_set_threads=False)
    for name in "ab":
        assert "--set train.threads=2" in (tmp_path / name).read_text()
        assert (tmp_path / f"{name}.log").read_text().strip() == "saw True"


def test_side_by_side_keeps_the_callers_threads(tmp_path: Path) -> None:
    jobs = [("a", _py("import sys; print(sys.argv[1:])") + ["--set", "train.threads=1"])]
    study._run_students(jobs, 2, tmp_path, user_set_threads=True)
    assert (tmp_path / "a.log").read_text().count("train.threads") == 1


def test_a_failed_run_is_named_and_the_others_still_run(tmp_path: Path) -> None:
    jobs = [("bad", _py("raise SystemExit(3)")),
            ("good", _py(f"open({str(tmp_path / 'ran')!r}, 'w').write('yes')"))]
    with pytest.raises(SystemExit, match=r"1 student run\(s\) failed: bad"):
        study._run_students(jobs, 2, tmp_path, user_set_threads=False)
    assert (tmp_path / "ran").read_text() == "yes"


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        study.main(["--root", str(tmp_path), "--jobs", "0"])


def test_every_arm_gets_the_same_budget_and_its_own_seed(tmp_path: Path, monkeypatch) -> None:
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(study, "_run", lambda cmd: 0.0)  # data and cache stages
    monkeypatch.setattr(study, "_run_students", lambda jobs, parallel, root, user_set_threads: ran.extend(jobs))
    study.main(["--root", str(tmp_path), "--seeds", "0", "1", "--set", "optim.epochs=3"])
    names = sorted(name for name, _ in ran)
    assert names == sorted(f"{p}_seed{s}" for p in ("step_s_gt", "step_s_kd", "step_s_1tag_kd") for s in (0, 1))
    for name, cmd in ran:
        sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
        assert "optim.epochs=3" in sets and f"data.root={tmp_path / 'data'}" in sets
        assert f"train.seed={name[-1]}" in sets
        assert any(s.startswith("teacher.") for s in sets) == (not name.startswith("step_s_gt"))


def test_inherited_rows_start_the_lite_student_from_the_teachers_weights(tmp_path: Path, monkeypatch) -> None:
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(study, "_run", lambda cmd: 0.0)
    monkeypatch.setattr(study, "_run_students", lambda jobs, parallel, root, user_set_threads: ran.extend(jobs))
    study.main(["--root", str(tmp_path), "--seeds", "0", "1", "--inherited"])
    sets = {name: [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"] for name, cmd in ran}
    lite = sorted(n for n in sets if n.startswith("lite_"))
    assert lite == sorted(f"{p}_seed{s}" for p in ("lite_gt", "lite_inherit_gt", "lite_inherit_kd", "lite_inherit_fkd")
                          for s in (0, 1))
    for name in lite:
        assert "model.name=hrnet_w16_lite" in sets[name]
        inherits = [s for s in sets[name] if s.startswith("model.init_from=")]
        if name.startswith("lite_gt"):
            assert not inherits and "model.init=kaiming" in sets[name]
        else:
            assert inherits and inherits[0].endswith("higherhrnet_w16_synth.pt")  # the shipped teacher's file
        assert any(s.startswith("teacher.") for s in sets[name]) == name.startswith(("lite_inherit_kd",
                                                                                     "lite_inherit_fkd"))
        # feature KD needs the online teacher (its features cannot be warped from the cache)
        assert ("teacher.mode=online" in sets[name]) == name.startswith("lite_inherit_fkd")
        if name.startswith("lite_inherit_fkd"):
            from distill.config import load_config

            cfg = load_config(REPO / "configs/train/synth_step_s_gt.yaml", [s for s in sets[name]])
            assert cfg.loss.feature_kd_weight == 1.0 and cfg.teacher.name == "higherhrnet_w16_synth"
