"""`harness run`: train registered architectures, 'baselines' or stored runs again; print the runs' table."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags
from harness.settings import DURATION_HELP, duration


def add(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="train registered architectures: 'baselines' or names from 'harness list'",
        description="Train, validate and predict; each run is recorded in the store with its artifacts.",
    )
    p.add_argument(
        "targets",
        nargs="*",  # at least one, here or as `targets` in --config
        metavar="ARCH",
        help="'baselines' (the seed's three CNNs), architecture names, or run ids or a run's spec.json to rerun"
        " (e.g. a search trial, with its data protocol; flags given here, such as --augment or --tta, change it)",
    )
    flags.config(p)
    flags.where(p)
    flags.settings(p)
    p.add_argument(
        "--save-optimizer",
        action="store_true",
        help="keep the optimiser's state in model.keras, to resume training (Adam triples the file; default: weights)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="the targets are run ids of runs that stopped before finishing (killed, Ctrl-C): go on from the last"
        " completed epoch, under the same id (a run id given with no other flag does so too when it left a checkpoint)",
    )
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep each finished run's last-epoch checkpoint (model, optimiser, kept-best weights; seed_model2:"
        " about 4x model.keras) under its folder's checkpoint/ (default: deleted when the run finishes)",
    )
    p.add_argument(
        "--deadline",
        type=duration,
        metavar="MINUTES",
        help=f"the whole command's clock ({DURATION_HELP}): data, training and predictions fit in it; each run gets an"
        " equal share of the time left, cut inside an epoch if need be; a run whose learning rate decays (cosine,"
        " one-cycle, wsd) and no --epochs gets the epochs that fit its share; results/submission.csv holds the best"
        " run so far by val AUC",
    )
    p.add_argument(
        "--full-budget",
        action="store_true",
        help="on the built-in demo, train each model for its own epochs (default there: one epoch, a quick demo)",
    )
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api
    from harness.errors import HarnessError
    from harness.ranking.leaderboard import rank, render_table

    if not args.targets:
        raise HarnessError(
            "harness run: name what to train: 'baselines', architectures, run ids or a spec.json"
            " (or `targets = [...]` in --config)"
        )
    records = api.run(
        args.targets,
        where=flags.workspace(args, err),
        progress=not args.no_progress,
        full_budget=args.full_budget,
        save_optimizer=args.save_optimizer,
        resume=args.resume,
        keep_checkpoints=args.keep_checkpoints,
        deadline=args.deadline,
        **flags.given_settings(args),
    )
    title = "this run" + (" (synthetic demo data)" if any(r.synthetic for r in records) else "")
    out.print(render_table(rank(records), title))
    return 0 if any(r.status == "complete" for r in records) else 1
