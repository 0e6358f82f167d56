"""`harness scale`: a controlled scaling study (only size varies, several seeds) and its verdict."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from rich.console import Console

from harness.cli import flags
from harness.errors import HarnessError
from harness.scaling.study import ScaleOptions
from harness.settings import add_flags, from_args


def add(sub: Any) -> None:
    p = sub.add_parser(
        "scale",
        help="does a bigger network do better? a controlled scaling study: only size varies, several seeds",
        description="Scale one base point of the cnn family along width, depth or both; train every size with"
        " several weight seeds on one fixed split, at equal epochs and at equal compute; fit AUC per doubling of"
        " GMACs with a bootstrap interval and state a verdict per budget in <results>/scale-<study>/report.md.",
    )
    add_flags(p, ScaleOptions)  # the study's settings: one field each in harness/scaling/study.py
    p.add_argument("--workers", type=flags.positive_int, default=1, metavar="K", help="K processes share the points")
    p.add_argument("--report-only", action="store_true", help="train nothing: analyse what the store holds")
    p.add_argument("--test-labels", metavar="CSV", help="also judge on known test labels (id,label)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    flags.where(p)
    p.set_defaults(handler=cmd_scale)


def cmd_scale(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api

    studies = (args.study or "").split(",") if args.report_only else [args.study]
    if len(studies) > 1 and not all(studies):
        raise HarnessError(f"--study {args.study!r}: name studies separated by commas")
    options = dataclasses.replace(from_args(args, ScaleOptions), study=studies[0])
    workspace = flags.workspace(args, err)
    codes: list[int] = []
    if not args.report_only:
        codes = api.scale(options, workers=args.workers, progress=not args.no_progress, where=workspace)
    # --report-only may join studies (say, an equal-epochs one and an equal-compute one) in one report and plot.
    names = [options.study_name] if len(studies) == 1 else studies
    report = api.scale_report(names, epsilon=options.epsilon, test_labels=args.test_labels, where=workspace)
    out.print(f"study {report.title}: {report.complete} of {report.recorded} recorded points complete", highlight=False)
    for verdict in report.verdicts:
        out.print(f"{verdict.budget}: [bold]{verdict.verdict}[/bold]: {verdict.reason}", highlight=False)
    for verdict in report.tested:
        out.print(f"{verdict.budget} on the test labels: {verdict.verdict}: {verdict.reason}", highlight=False)
    if not report.verdicts:
        out.print("no budget has two sizes with two seeds each yet: nothing to judge", highlight=False)
    out.print(f"wrote {report.path}", highlight=False)
    return 0 if not any(codes) else 1
