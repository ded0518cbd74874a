"""Student config errors and a small, strict dict -> dataclass loader (no framework magic).

Student configs are frozen dataclasses (`StepStudentConfig`, `TimmStudentConfig`, and the teachers'
`HigherHRNetConfig` for the HRNet family). `dataclass_from_dict` checks a plain dict (as read from
YAML) against the dataclass's fields and their annotations, and raises `StudentConfigError` naming
the source (file path) and the field for unknown, missing or mistyped entries.

Supported annotations: int, float, bool, str, `tuple[int, ...]` (and other element types),
`dict[str, Any]`, and any of these `| None`.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping

from distill.errors import AEDistillError

__all__ = ["StudentConfigError", "check_unknown_keys", "dataclass_from_dict", "plain"]


class StudentConfigError(AEDistillError, ValueError):
    """A student config (YAML file, override or dataclass value) is malformed or unknown."""


_TYPE_NAMES = {int: "an integer", bool: "true/false", str: "a string", float: "a number"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])} values"
    if origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    return str(tp)


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    """Check `value` against annotation `tp`; return it normalised (lists -> tuples)."""
    def fail() -> StudentConfigError:
        return StudentConfigError(f"{source}: field '{where}' must be {_describe(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise fail()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, source)
            except StudentConfigError:
                pass
        raise fail()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail()
        elem = typing.get_args(tp)[0]
        return tuple(_coerce(v, elem, f"{where}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise fail()
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail()
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail()
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported annotation {tp!r} for field '{where}'")  # a bug, not user input


def check_unknown_keys(keys: typing.Iterable[str], known: typing.Iterable[str], source: str,
                       what: str = "field") -> None:
    """Raise naming each unknown key (with a close match if there is one) and listing the known ones."""
    known = list(known)
    unknown = [k for k in keys if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), known, n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise StudentConfigError(
            f"{source}: unknown {what}(s) {', '.join(hints)}; known: {', '.join(known)}")


def dataclass_from_dict(cls: type, data: Any, source: str, ignore: tuple[str, ...] = ()) -> Any:
    """Build dataclass `cls` from mapping `data`, type-checking every field against its annotation.

    Keys in `ignore` (e.g. 'family', which selects the class) are skipped. Errors name `source`.
    """
    if not isinstance(data, Mapping):
        raise StudentConfigError(f"{source}: the top level must be a mapping of fields, got {type(data).__name__}")
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    check_unknown_keys([k for k in data if k not in ignore], fields_, source)
    missing = [n for n, f in fields_.items() if n not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise StudentConfigError(f"{source}: missing required field(s) {', '.join(repr(m) for m in missing)}")
    kwargs = {k: _coerce(v, hints[k], k, source) for k, v in data.items() if k in fields_}
    try:
        return cls(**kwargs)
    except StudentConfigError as exc:
        text = str(exc)
        raise (exc if text.startswith(source) else StudentConfigError(f"{source}: {text}")) from None


def plain(value: Any) -> Any:
    """Dataclass / tuple tree -> plain dicts and lists (the YAML layout)."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
