"""The command table: `distill --help` lists every command without importing any of them (no torch), and a
command imports only its own module."""
from __future__ import annotations

import subprocess
import sys

from distill.cli import SUBCOMMANDS


def _modules_after(argv: list[str]) -> tuple[set[str], str]:
    probe = ("import contextlib, io, sys\nfrom distill.cli import main\nout = io.StringIO()\n"
             "with contextlib.redirect_stdout(out):\n    try:\n        main(%r)\n    except SystemExit:\n        pass\n"
             "sys.stderr.write(out.getvalue())\nprint(' '.join(sorted(sys.modules)))\n" % argv)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(proc.stdout.split()), proc.stderr


def test_help_lists_every_command_and_imports_none() -> None:
    modules, text = _modules_after(["--help"])
    assert all(name in text for name in SUBCOMMANDS)
    assert "torch" not in modules
    assert not any(m.startswith("distill.commands.") for m in modules)


def test_a_command_imports_only_its_own_module() -> None:
    modules, text = _modules_after(["synth", "--help"])
    assert "--train TRAIN" in text
    commands = {m for m in modules if m.startswith("distill.commands.")}
    assert commands == {"distill.commands.synth"}
