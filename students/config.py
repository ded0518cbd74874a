"""The student config error. Student configs are frozen dataclasses (`StepStudentConfig`,
`TimmStudentConfig`, and the teachers' `HigherHRNetConfig` for the HRNet family), read by the one strict
loader every config uses (`distill.strict_config.from_mapping`), which raises this error naming the
file and the field for unknown, missing or mistyped entries."""
from __future__ import annotations

from distill.errors import AEDistillError

__all__ = ["StudentConfigError"]


class StudentConfigError(AEDistillError, ValueError):
    """A student config (YAML file, override or dataclass value) is malformed or unknown."""
