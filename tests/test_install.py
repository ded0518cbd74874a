"""A non-editable install (a wheel) carries the configs, so the registries and the demo's recipes work
wherever the package is installed, not only from a source checkout."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_finds_its_configs(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "whl")],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "whl").glob("aedistill-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)
    subprocess.run(pip + ["install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import students, teachers, distill.demo as d; "
             "print(students.__file__); print(len(students.list_students()), len(teachers.list_teachers())); "
             "print(all(p.is_file() for p in d.STUDENT_RECIPES.values()))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")},
                         check=True, capture_output=True, text=True).stdout.split("\n")
    assert out[0].startswith(str(tmp_path / "site"))  # the installed copy, not the checkout
    n_students, n_teachers = map(int, out[1].split())
    assert n_students == len(list((REPO / "configs" / "students").glob("*.yaml"))) > 0
    assert n_teachers == len(list((REPO / "configs" / "teachers").glob("*.yaml"))) > 0
    assert out[2] == "True"
