"""The one strict loader behind run, teacher and student configs: same rules, same wording, key paths."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from distill.config import ConfigError, load_config
from distill.strict_config import from_mapping
from students import StudentConfigError, get_student_config
from teachers import TeacherConfigError, get_teacher_config
from teachers.config import config_from_dict


class Err(ValueError):
    pass


@dataclass(frozen=True)
class Inner:
    k: int
    xs: tuple[float, ...] = ()


@dataclass(frozen=True)
class Outer:
    inner: Inner
    flag: bool = False
    name: str = ""
    items: list[Inner] = field(default_factory=list)
    opt: int | None = None


def test_types_are_checked_without_coercion() -> None:
    ok = from_mapping(Outer, {"inner": {"k": 1, "xs": [1, 2.5, "3e-3"]}, "opt": None}, "src", Err)
    assert ok == Outer(Inner(1, (1.0, 2.5, 0.003)), opt=None)
    bad = [({"inner": {"k": 2.0}}, "field 'inner.k' must be an integer, got 2.0"),
           ({"inner": {"k": True}}, "field 'inner.k' must be an integer, got True"),
           ({"inner": {"k": 1}, "flag": "yes"}, "field 'flag' must be true/false, got 'yes'"),
           ({"inner": {"k": 1}, "name": 5}, "field 'name' must be a string, got 5"),
           ({"inner": {"k": 1, "xs": [1, "x"]}}, r"field 'inner.xs\[1\]' must be a number, got 'x'"),
           ({"inner": {"k": 1}, "items": [{"k": 1}, {"j": 2}]}, r"unknown field\(s\) 'items\[1\].j'"),
           ({"inner": {"k": 1}, "opt": "3"}, "field 'opt' must be an integer or null, got '3'"),
           ({}, r"missing required field\(s\) 'inner'"),
           ({"inner": 3}, "'inner' must be a mapping of fields, got int")]
    for data, message in bad:
        with pytest.raises(Err, match=f"^src: {message}"):
            from_mapping(Outer, data, "src", Err)


def test_every_config_family_words_a_typo_the_same_way(tmp_path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text("optim: {lr: 1e-3, epochz: 3}\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown field\(s\) 'optim.epochz' \(did you mean 'optim.epochs'"):
        load_config(run)
    student = tmp_path / "s.yaml"
    student.write_text("family: step\nstem_chanels: 8\n")
    with pytest.raises(StudentConfigError, match=r"s.yaml: unknown field\(s\) 'stem_chanels' \(did you mean"):
        get_student_config(student)
    teacher = get_teacher_config("tiny").to_dict()
    teacher["deconv"]["num_deconv"] = 1
    with pytest.raises(TeacherConfigError, match=r"t.yaml: unknown field\(s\) 'deconv.num_deconv' \(did you mean"):
        config_from_dict(teacher, source="t.yaml")


def test_teacher_overrides_are_checked_like_a_yaml_file() -> None:
    """`model.overrides` of a teacher: unknown keys and wrong types are named errors, not a TypeError or a
    silently stored bad value."""
    from distill.models import build_model, teacher_config_with
    from teachers import get_teacher_config
    from teachers.config import TeacherConfigError

    cfg = get_teacher_config("tiny")
    assert teacher_config_with(cfg, {"tag_dim": 2}).tag_dim == 2
    assert build_model("teacher", "tiny", {"tag_dim": 2}).cfg.tag_dim == 2
    with pytest.raises(TeacherConfigError, match=r"unknown override\(s\) 'num_deconvs' \(did you mean 'deconv'\?\)"):
        build_model("teacher", "tiny", {"num_deconvs": 0})
    with pytest.raises(TeacherConfigError, match="field 'tag_dim' must be an integer, got 'two'"):
        teacher_config_with(cfg, {"tag_dim": "two"})
