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
    from harness.clean import delete, human, plan_workspace

    workspace = flags.workspace(args, err)
    if not workspace.results.is_dir():
        err.print(f"nothing to clean: {workspace.results} does not exist", highlight=False)
        return 0
    plan = plan_workspace(workspace, args.models_outside_top, args.by, checkpoints=args.checkpoints)
    keep, doomed = plan.keep, plan.remove
    verb = "remove" if args.apply else "would remove"

    def line(action: str, item) -> None:  # one line per item, never folded: paths stay whole
        text = f"{action:<{len(verb)}}  {human(item.size):>9}  {item.path}  {item.reason}"
        out.print(text, highlight=False, soft_wrap=True)

    for item in keep:
        line("keep", item)
    failed = 0
    for item in doomed:
        line(verb, item)
        if args.apply:
            try:
                delete(item)
            except OSError as exc:
                failed += 1
                err.print(f"[red]error:[/red] cannot remove {item.path}: {exc.strerror or exc}", highlight=False)
    total = sum(item.size for item in doomed)
    if not doomed:
        out.print("nothing to remove", highlight=False)
    elif args.apply:
        out.print(f"freed {human(total)} ({total:,} bytes) in {len(doomed)} items", highlight=False)
    else:
        out.print(
            f"would free {human(total)} ({total:,} bytes) in {len(doomed)} items: dry run, nothing deleted;"
            " run again with --yes to delete",
            highlight=False,
            soft_wrap=True,
        )
    return 1 if failed else 0
