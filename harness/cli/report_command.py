"""`harness report`: does a bigger network do better? report.md (and report.html) with plots and a verdict."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags


def add(sub: Any) -> None:
    p = sub.add_parser("report", help="does a bigger network do better? plots and a verdict in report.md")
    p.add_argument("--study", help="only this study's trials (baselines are always included)")
    p.add_argument("--holdout", metavar="CSV", help="labels (id,label) of an external set: holdout AUC and the gap")
    p.add_argument(
        "--html",
        action="store_true",
        help="also write report.html: one self-contained page (leaderboard, plots, learning curves, verdict)",
    )
    flags.where(p)
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api

    path = api.report(study=args.study, html=args.html, holdout=args.holdout, where=flags.workspace(args, err))
    out.print(f"wrote {path}", highlight=False)
    if args.html:  # a file:// page: open it in any browser, no server needed
        out.print(f"wrote {path.with_name('report.html')}", highlight=False)
    return 0
