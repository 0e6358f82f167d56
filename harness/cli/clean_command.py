"""`harness clean`: free disk: stale decode caches and, on request, models outside the top K and the checkpoints of
stopped runs (dry run first)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags


def add(sub: Any) -> None:
    p = sub.add_parser(
        "clean",
        help="free disk: stale decode caches and, on request, the models of runs outside the top K and the"
        " checkpoints of runs that stopped (dry run first)",
        description="Lists what it would remove and how many bytes; deletes only with --yes. Stale caches are those"
        " under <results>/cache that no data folder used by the stored runs (nor --data, nor the demo) matches now."
        " Every run's checkpoint is listed with its size; a running run's is never removed.",
    )
    p.add_argument(
        "--models-outside-top",
        type=int,
        metavar="K",
        help="also remove the model.keras of every run outside the top K of its validation set (failed runs too)",
    )
    p.add_argument(
        "--checkpoints",
        action="store_true",
        help="also remove the checkpoints of runs that are not running: of failed, interrupted or killed runs (their"
        " `harness run RUN_ID --resume` is then given up) and of finished runs (kept by --keep-checkpoints, or for a"
        " Hyperband promotion, which then trains from scratch)",
    )
    p.add_argument("--by", choices=("val_accuracy", "val_auc"), default="val_accuracy", help=flags.RANKING_HELP)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only list what would go (the default)")
    mode.add_argument("--yes", "--apply", action="store_true", dest="apply", help="delete what is listed")
    flags.where(p)
    p.set_defaults(handler=cmd_clean, backend=False)  # no model: no backend to import


def cmd_clean(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api
    from harness.clean import human

    cleaning = api.clean(
        models_outside_top=args.models_outside_top,
        by=args.by,
        checkpoints=args.checkpoints,
        apply=args.apply,
        where=flags.workspace(args, err),
    )
    if cleaning.plan is None:
        err.print(f"nothing to clean: {cleaning.results} does not exist", highlight=False)
        return 0
    plan = cleaning.plan
    verb = "remove" if args.apply else "would remove"
    for note in plan.notes:
        err.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    for action, items in (("keep", plan.keep), (verb, plan.remove)):
        for item in items:  # one line per item, never folded: paths stay whole
            text = f"{action:<{len(verb)}}  {human(item.size):>9}  {item.path}  {item.reason}"
            out.print(text, highlight=False, soft_wrap=True)
    for _, why in cleaning.failures:
        err.print(f"[red]error:[/red] {why}", highlight=False, soft_wrap=True)
    total = plan.size
    if not plan.remove:
        out.print("nothing to remove", highlight=False)
    elif args.apply:
        done = len(plan.remove) - len(cleaning.failures)
        freed = total - sum(item.size for item, _ in cleaning.failures)
        out.print(f"freed {human(freed)} ({freed:,} bytes) in {done} items", highlight=False)
    else:
        out.print(
            f"would free {human(total)} ({total:,} bytes) in {len(plan.remove)} items: dry run, nothing deleted;"
            " run again with --yes to delete",
            highlight=False,
            soft_wrap=True,
        )
    return 1 if cleaning.failures else 0
