"""`harness leaderboard`: rank the comparable runs, print them as a table, CSV or Markdown; write the submission."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

from harness.cli import flags


def add(sub: Any) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="rank the runs that share the best run's validation set; write results/submission.csv from the best",
        description="Rank complete runs by --by (default val_accuracy, ties broken by val_auc). Only runs validated"
        " on the best run's validation set (same data folder, protocol, sample, seed, folds and images) are ranked;"
        " the others are left out and counted (--all ranks them together). The table fits the terminal.",
    )
    p.add_argument("--by", choices=flags.RANKINGS, default=None, help=flags.RANKING_HELP)
    p.add_argument("--format", choices=("table", "csv", "markdown"), default="table")
    p.add_argument(
        "--columns",
        metavar="A,B,...",
        help="the columns to show, e.g. rank,run,val_auc (rank run architecture origin status val_set val_accuracy"
        " val_auc holdout_auc gap parameters epochs seconds images_per_s backend submission; default: as many as fit)",
    )
    p.add_argument("--study", help="only the runs of this study")
    p.add_argument(
        "--all",
        action="store_true",
        help="rank runs on every validation set together (their scores do not compare; the 'sample · val' column"
        " says which set each was scored on)",
    )
    p.add_argument("--all-data", action="store_true", help="rank runs on every dataset, not only the latest one's")
    p.add_argument("--no-submission", action="store_true", help="do not write any submission file")
    p.add_argument(
        "--submit",
        action="store_true",
        help="make this view's pick results/submission.csv (a view, --study, --all, --all-data or a --by other than"
        " the default, otherwise writes results/submission-<view>.csv); the file it replaces is kept in"
        " results/submissions/",
    )
    p.add_argument(
        "--holdout",
        metavar="CSV",
        help="labels (id,label) of an external set, e.g. test_labels.csv: each run's test predictions scored on them"
        " (column holdout_auc, rankable with --by holdout_auc) and the gap val_auc - holdout_auc",
    )
    p.add_argument("--test-labels", metavar="CSV", help="the older name of --holdout")
    flags.where(p)
    p.set_defaults(handler=cmd_leaderboard)


def cmd_leaderboard(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api
    from harness.ranking.leaderboard import choose_columns, render_table, render_text

    ranking = api.rank_runs(
        by=args.by,
        study=args.study,
        all=args.all,
        all_data=args.all_data,
        holdout=args.holdout,
        test_labels=args.test_labels,
        submission=not args.no_submission,
        submit=args.submit,
        where=flags.workspace(args, err),
    )
    if ranking.frame.empty:
        err.print("no runs yet: start with 'harness run baselines'")
        return 0
    columns = choose_columns(args.columns, ranking.frame)
    if args.format == "table":
        title = f"leaderboard by {ranking.by}" + (" (synthetic demo data)" if ranking.synthetic else "")
        out.print(render_table(ranking.frame, title, ranking.by, columns))
        if ranking.scope:
            err.print(ranking.scope, highlight=False, soft_wrap=True)
    else:
        sys.stdout.write(render_text(ranking.frame, args.format, columns))
    for note in ranking.notes:
        err.print(note, highlight=False, soft_wrap=True)
    return 0
