"""`harness search`: open or resume a study, run the trials still due (in K processes with --workers), sum it up."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags
from harness.settings import DURATION_HELP, duration


def add(sub: Any) -> None:
    from harness.settings import add_flags
    from harness.tuning.study_settings import StudySettings

    p = sub.add_parser("search", help="hyperparameter search with Optuna or KerasTuner")
    p.add_argument("--trials", type=flags.positive_int, default=50, help="trials in the study, in total (default 50)")
    add_flags(p, StudySettings)  # --space, --tuner, --algorithm, --max-gmacs
    p.add_argument("--study", help="study name; rerunning with the same name continues it (default: <space>-<tuner>)")
    p.add_argument(
        "--deadline",
        type=duration,
        metavar="MINUTES",
        help=f"the whole search's clock ({DURATION_HELP}): data, training, the endgame (the best trial's cooldown,"
        " TTA and an ensemble, each kept where validation gains) and the submission all fit in it; trials are scored"
        " at rungs of a fixed number of images and the best go on from their checkpoints; results/submission.csv holds"
        " the best so far from the first finished trial on",
    )
    p.add_argument(
        "--timeout",
        type=duration,
        metavar="MINUTES",
        help=f"stop starting trials after this long ({DURATION_HELP}); the trial under way finishes",
    )
    p.add_argument(
        "--workers",
        type=flags.positive_int,
        default=1,
        metavar="K",
        help="run K worker processes on this machine, sharing --trials (Optuna; PostgreSQL for several machines)",
    )
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep each finished trial's per-epoch checkpoint (deleted by default; see harness clean --checkpoints)",
    )
    flags.config(p)
    flags.where(p)
    flags.settings(p)
    p.set_defaults(handler=cmd_search)


def cmd_search(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api
    from harness.settings import given
    from harness.tuning.study_settings import StudySettings

    summary = api.search(
        trials=args.trials,
        study=args.study,
        deadline=args.deadline,
        stop_starting_after=args.timeout,
        workers=args.workers,
        where=flags.workspace(args, err),
        progress=not args.no_progress,
        keep_checkpoints=args.keep_checkpoints,
        **given(args, StudySettings),
        **flags.given_settings(args),
    )
    for line in summary.lines():
        out.print(line)
    return 0 if not any(summary.worker_codes) else 1
