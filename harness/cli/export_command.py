"""`harness export`: a stored run's model as a serving artefact (TensorFlow SavedModel or ONNX)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags

DESCRIPTION = """\
Export a run's model (its inference graph: raw 96x96x3 uint8-valued pixels in, one probability out) with Keras's
Model.export. savedmodel: a TensorFlow SavedModel folder (TF Serving, TFLite converters); it needs TensorFlow
installed (the tensorflow backend, or jax with tensorflow). onnx: an .onnx file; it needs tf2onnx (tensorflow and
jax backends) or torch's exporter with onnx (torch backend). Where it cannot work, the error says what is missing.
"""


def add(sub: Any) -> None:
    p = sub.add_parser("export", help="a run's model as a SavedModel or ONNX serving artefact", description=DESCRIPTION)
    p.add_argument("run_id", metavar="RUN_ID", help="a run id from 'harness leaderboard'")
    p.add_argument("--format", choices=("savedmodel", "onnx"), default="savedmodel", help="default savedmodel")
    p.add_argument("--out", metavar="DIR", help="where the artefact goes (default: <run folder>/export/)")
    flags.where(p)
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api

    for path in api.export(args.run_id, format=args.format, out=args.out, where=flags.workspace(args, err)):
        out.print(f"wrote {path}", highlight=False, soft_wrap=True)
    return 0
