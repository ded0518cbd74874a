"""`distill export`: export a teacher or student to ONNX, checked against PyTorch.

The arguments and one call into `distill.export`, where the work is.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.config import input_size_arg
from distill.errors import ensure_writable_file
from distill.export import DEFAULT_OPSET, ONNX_ATOL, check_image, export_onnx
from distill.models import load_model, parse_model_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="KIND:NAME[:CKPT]",
                        help="student:NAME[:CKPT] or teacher:CFG[:CKPT] (registry name or YAML path; CKPT an "
                             "official .pth or our model.pt; omitted = random weights)")
    parser.add_argument("--onnx", required=True, type=Path, metavar="OUT.onnx", help="where to write the model")
    parser.add_argument("--input-size", type=input_size_arg, default=None,
                        help="square input side (default: the model config's input_size, else 512)")
    parser.add_argument("--height", type=int, default=None, help="input height (default: --input-size)")
    parser.add_argument("--width", type=int, default=None, help="input width (default: --input-size)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width axes")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="compare onnxruntime with PyTorch (outputs and decoded people) before writing "
                             "(default on)")
    parser.add_argument("--check-image", type=Path, default=None,
                        help="image for the check (default: first coco-mini val2017 image, else synthetic)")
    parser.add_argument("--atol", type=float, default=ONNX_ATOL,
                        help=f"max |onnxruntime - PyTorch| accepted by the check (default {ONNX_ATOL:g})")
    parser.add_argument("--no-fold", dest="fold", action="store_false",
                        help="keep BatchNorm layers as they are (debugging)")


def run(args: argparse.Namespace) -> int:
    spec = parse_model_spec(args.model)
    model = load_model(spec, warn_random=False)
    size = args.input_size or int(getattr(getattr(model, "cfg", None), "input_size", None) or 512)
    height = args.height or size
    width = args.width or size
    if spec.weights is None:
        print(f"warning: {spec}: no checkpoint given, exporting RANDOM weights", file=sys.stderr)
    ensure_writable_file(args.onnx, "--onnx")
    image, source = (check_image(args.check_image) if args.check else (None, None))
    report = export_onnx(
        model, args.onnx, height=height, width=width, dynamic=args.dynamic, opset=args.opset, fold=args.fold,
        check=args.check, image=image, image_source=source, atol=args.atol,
        metadata={"aedistill.model": str(spec)},
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print("\n".join(report.lines()))
    return 0
