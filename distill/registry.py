"""Named YAML configs in one folder of the shipped `configs` package: the teacher, student and recipe
registries all resolve `NAME` or a path the same way.

    TEACHERS = ConfigRegistry("teachers", "teacher", TeacherConfigError)
    TEACHERS.names()              # file stems, sorted
    TEACHERS.resolve("tiny")      # configs/teachers/tiny.yaml; 'path/x.yaml' is returned as given

The folder is found through `importlib.resources`, so an installed wheel (not only an editable
checkout) has its configs.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["ConfigRegistry", "configs_root", "looks_like_path"]


def configs_root() -> Path:
    """The installed `configs` package folder."""
    return Path(str(resources.files("configs")))


def looks_like_path(text: str) -> bool:
    """A YAML suffix or a path separator means a file, anything else a registered name."""
    return Path(text).suffix in (".yaml", ".yml") or os.sep in text or "/" in text


class ConfigRegistry:
    """One folder of named configs; unknown names raise `error` listing the registered ones."""

    def __init__(self, folder: str, what: str, error: type[Exception]) -> None:
        self.folder = configs_root() / folder
        self.what = what
        self.error = error

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.yaml"))

    def resolve(self, name_or_path: str | os.PathLike[str]) -> Path:
        text = os.fspath(name_or_path)
        if looks_like_path(text):
            return Path(text)
        path = self.folder / f"{text}.yaml"
        if not path.is_file():
            raise self.error(
                f"unknown {self.what} {text!r}; registered: {', '.join(self.names()) or '(none)'} "
                f"(configs in {self.folder}); a path to a .yaml file also works")
        return path
