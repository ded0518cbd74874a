"""`distill` command line: the one command table. Each subcommand is a module of `distill.commands` with
`add_arguments` (its argparse options) and `run` (one call into the library, where the work is).

Adding a command is one module there and one line here.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Any, Iterable, Sequence

from distill.errors import AEDistillError, user_message

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("distill.commands.demo", "the whole pipeline on the synthetic dataset: teacher, cache, students, bench, tags"),
    "synth": ("distill.commands.synth", "write the embedded synthetic COCO-format keypoint dataset"),
    "oracle": ("distill.commands.oracle", "accuracy ceiling of the decoding path with perfect network outputs"),
    "train": ("distill.commands.train", "train a teacher from scratch or distill a student (YAML config + --set overrides)"),
    "cache-teacher": ("distill.commands.cache_teacher", "run a frozen teacher once over a split into a resumable store (float16, or quantised + zstd)"),
    "export": ("distill.commands.export", "export a teacher or student to ONNX (BatchNorm folded, checked against PyTorch)"),
    "image-info": ("distill.commands.image_info", "the COCO image list of a folder of images without annotations (an unlabelled split)"),
    "predict": ("distill.commands.predict", "COCO results-format keypoints (and overlays) for an image or a folder of images"),
    "visualize": ("distill.commands.visualize", "draw predicted skeletons (and heatmap / tag panels) for images"),
    "compare-tags": ("distill.commands.compare_tags", "AP cost of reducing a teacher's per-joint tag maps to one (first/mean/pca) vs students; --dims: the T x D sweep"),
    "bench": ("distill.commands.bench", "COCO AP, params/GMACs and CPU/GPU speed of teachers and students, with a report folder"),
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommands in `commands` (None: all) get their options, so `distill --help`
    imports no command module and `distill train ...` imports only the training one."""
    parser = argparse.ArgumentParser(prog="distill", description="aedistill: distil HigherHRNet (AE) teachers into small students")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = set(SUBCOMMANDS if commands is None else commands)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
        if name in wanted:
            importlib.import_module(module).add_arguments(sp)
    return parser


def _plain_warnings(command: str) -> Any:
    """Our own warnings (about the user's data or settings) as one line, without the source file and line.
    Returns the previous formatter (restored when `main` returns, for in-process callers)."""
    default = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):  # type: ignore[no-untyped-def]
        if category.__module__.split(".")[0] in ("distill", "teachers", "students"):
            return f"distill {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning
    return default


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    named = [a for a in argv if a in SUBCOMMANDS][:1]  # the command word (options never equal one)
    args = build_parser(named).parse_args(argv)
    previous = _plain_warnings(args.command)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except (AEDistillError, OSError) as exc:  # the user's input or file system, not a bug: one line
        print(f"distill {args.command}: error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
