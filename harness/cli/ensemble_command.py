"""`harness ensemble`: blend the top runs' probabilities into a run of its own."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags


def add(sub: Any) -> None:
    p = sub.add_parser(
        "ensemble",
        help="blend the top runs' probabilities; recorded and ranked as a run",
        description="Blend the probabilities of the top K complete runs by --by that share the best run's"
        " validation set, chosen and weighted greedily on validation (--mean: all K equally); says which runs it"
        " left out or skipped and why.",
    )
    p.add_argument("--top", type=flags.positive_int, default=3, metavar="K", help="how many runs to blend (default 3)")
    p.add_argument("--by", choices=flags.RANKINGS[:2], default=None, help=flags.RANKING_HELP)
    p.add_argument("--study", help="only the runs of this study")
    p.add_argument(
        "--mean",
        action="store_true",
        help="average all K runs equally (default: choose and weight them on validation, greedily, so a run that"
        " does not raise the blend's val AUC is left out)",
    )
    flags.where(p)
    p.set_defaults(handler=cmd_ensemble)


def cmd_ensemble(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api

    blend = api.ensemble(top=args.top, by=args.by, study=args.study, mean=args.mean, where=flags.workspace(args, err))
    for line in blend.skipped:
        err.print(line, highlight=False, soft_wrap=True)
    record, members = blend.record, blend.members
    out.print(f"ensemble {record.run_id} of {len(members)} runs: " + ", ".join(m.run_id for m in members))
    out.print(f"val acc {record.val_accuracy:.4f}  val AUC {record.val_auc:.4f}  submission {record.submission}")
    return 0
