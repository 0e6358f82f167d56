"""`harness predict`: a saved .keras model -> a validated submission."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.cli import flags
from harness.dihedral import TTA_VIEWS

DESCRIPTION = """\
Predict the test set with a saved .keras model and write a validated submission (id,label).
The model must output one probability per image: shape (N, 1) or (N,). A (N, 2) output is
read as a two-class softmax [p(class 0), p(class 1)] and column 1 is used (its rows must sum
to 1). Any other output (more columns, several outputs, a per-pixel map) is refused.
Without --data, the test set is that of the data folder the model's run was trained on
(MODEL must then be a run's model.keras known to the store); any other model needs --data.
"""


def add(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="a saved .keras model -> a validated submission (loaded in safe mode: no code from the file runs)",
        description=DESCRIPTION,
    )
    p.add_argument(
        "model", metavar="MODEL.keras", help="a model saved by the harness, e.g. results/runs/<id>/model.keras"
    )
    p.add_argument("--tta", type=int, choices=TTA_VIEWS, default=1, help="average over this many dihedral views")
    p.add_argument(
        "--stain-normalise",
        action="store_true",
        help="first match each test image's haematoxylin and eosin densities (mean and spread over its tissue) to "
        "the training images' median; measured on the PCam sample it lowered test AUC (see docs/results.md)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the submission (default: <results>/submission.csv); a symlink is followed (its target is"
        " replaced, the link stays), a FIFO or /dev/stdout is written straight through, a folder is refused",
    )
    flags.where(p)
    flags.no_progress(p)
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api

    where = flags.workspace(args, err)
    written = api.predict(
        args.model,
        tta=args.tta,
        stain_normalise=args.stain_normalise,
        out=args.out,
        where=where,
        progress=not args.no_progress,
    )
    # The result line goes beside the submission, never into it: with --out /dev/stdout it goes to stderr.
    (out if Path(written).is_file() else err).print(f"wrote {written}", highlight=False)
    return 0
