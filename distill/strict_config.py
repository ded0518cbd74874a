"""The one strict YAML/dict -> dataclass loader behind run, teacher and student configs.

Why one: a typo in any config must fail the same way, naming the file and the dotted key path
(`optim.epochz`, `stages[1].num_channels`), instead of silently training the wrong thing. Each config
family passes its own error class so callers keep catching what they caught before.

    from_mapping(RunConfig, data, source="run.yaml", error=ConfigError)

Rules (no coercion beyond what YAML already did): bool fields take true/false only; int fields take
integers (not floats, not bools); float fields take integers, floats and exponent strings such as
`3e-3` (which PyYAML, a YAML 1.1 reader, leaves as strings); str fields take strings;
`tuple[T, ...]` and `list[T]` take YAML lists (checked per element); `dict[str, Any]` takes a mapping;
`X | None` also takes null; a dataclass-typed field takes a mapping (null = all defaults). Unknown keys
get a close-match hint; missing required fields are listed. Ranges stay with each dataclass
(`__post_init__`) or its validator; their errors are prefixed with the source and key path here.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

__all__ = ["check_unknown_keys", "from_mapping", "plain", "read_yaml_mapping"]

_YAML11_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
_TYPE_NAMES = {int: "an integer", bool: "true/false", str: "a string", float: "a number"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return f"a list of {_describe(typing.get_args(tp)[0])} values"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    return str(tp)


def read_yaml_mapping(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """A YAML config file's top-level mapping; unreadable, invalid, empty or non-mapping files raise
    `error` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        raise error(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    return data


def check_unknown_keys(keys: Iterable[str], known: Iterable[str], source: str, error: type[Exception],
                       what: str = "field", prefix: str = "", label: str = "") -> None:
    """Raise `error` naming each unknown key (with a close match if there is one) and the known ones."""
    known = list(known)
    unknown = [k for k in keys if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), known, n=1)
            hints.append(f"'{prefix}{k}'" + (f" (did you mean '{prefix}{close[0]}'?)" if close else ""))
        of = f" of {label}" if label else ""
        raise error(f"{source}: unknown {what}(s) {', '.join(hints)}; known {what}s{of}: {', '.join(known)}")


def _coerce(value: Any, tp: Any, where: str, source: str, error: type[Exception]) -> Any:
    """Check `value` against annotation `tp`; return it normalised (YAML lists -> tuples for tuple fields)."""
    def fail() -> Exception:
        return error(f"{source}: field '{where}' must be {_describe(tp)}, got {value!r}")

    if tp is Any:
        return value
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
                return _coerce(value, arg, where, source, error)
            except error:
                pass
        raise fail()
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail()
        elem = typing.get_args(tp)[0]
        items = (_coerce(v, elem, f"{where}[{i}]", source, error) for i, v in enumerate(value))
        return tuple(items) if origin is tuple else list(items)
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise fail()
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, {} if value is None else value, source, error, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail()
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.match(value):
            return float(value)  # PyYAML reads 3e-3 (no dot) as a string: YAML 1.2 and every user mean a number
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail()
        return value
    raise TypeError(f"unsupported annotation {tp!r} for field '{where}'")  # a bug, not user input


def from_mapping(cls: type, data: Any, source: str, error: type[Exception], where: str = "",
                 ignore: tuple[str, ...] = ()) -> Any:
    """Build dataclass `cls` from mapping `data`, checking every key and value; errors are `error`s that
    start with `source` and name the dotted key path (`where` is this mapping's own path, '' at the top)."""
    label = f"'{where}'" if where else "the top level"
    if not isinstance(data, Mapping):
        raise error(f"{source}: {label} must be a mapping of fields, got {type(data).__name__}")
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    check_unknown_keys([k for k in data if k not in ignore], fields_, source, error, prefix=prefix,
                       label=label if where else "")
    missing = [n for n, f in fields_.items() if n not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{source}: missing required field(s) {', '.join(repr(prefix + m) for m in missing)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], prefix + k, source, error) for k, v in data.items() if k in fields_}
    try:
        return cls(**kwargs)
    except error as exc:  # a range check in __post_init__: say where
        text = str(exc)
        if text.startswith(source):
            raise
        raise error(f"{source}: invalid '{where}': {text}" if where else f"{source}: {text}") from None


def plain(value: Any) -> Any:
    """Dataclass / tuple tree -> plain dicts and lists (the YAML layout)."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
