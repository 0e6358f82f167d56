"""`harness scale`: a controlled scaling study (only size varies, several seeds) and its verdict."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags
from harness.errors import HarnessError


def add(sub: Any) -> None:
    p = sub.add_parser(
        "scale",
        help="does a bigger network do better? a controlled scaling study: only size varies, several seeds",
        description="Scale one base point of the cnn family along width, depth or both; train every size with"
        " several weight seeds on one fixed split, at equal epochs and at equal compute; fit AUC per doubling of"
        " GMACs with a bootstrap interval and state a verdict per budget in <results>/scale-<study>/report.md.",
    )
    p.add_argument("--base", default="seed_model2", help="seed_model1/2/3, cnn, or a run id of a cnn run")
    p.add_argument("--axis", choices=("width", "depth", "compound"), default="width", help="what is multiplied")
    p.add_argument("--multipliers", type=flags.numbers(float), default=(0.25, 0.5, 1.0, 2.0), metavar="M,M",
                   help="size multipliers, including 1 (default 0.25,0.5,1,2)")  # fmt: skip
    p.add_argument("--seeds", type=flags.positive_int, default=3, help="weight seeds per size (default 3; split fixed)")
    p.add_argument("--epochs", type=flags.numbers(int, allow_none=True), default=(2, 6), metavar="E,E",
                   help="equal-epoch budgets (default 2,6; 'none': only --compute-epochs)")  # fmt: skip
    p.add_argument("--compute-epochs", type=flags.positive_float, metavar="E",
                   help="add an equal-compute budget: each size gets the GMACs x images of E base epochs")  # fmt: skip
    p.add_argument("--sample", type=flags.positive_int, metavar="N", help="a stratified subset of N labelled images")
    p.add_argument("--protocol", choices=("seed", "stratified"), default="seed", help="split (default: seed)")
    p.add_argument(
        "--seed", type=flags.seed_number, default=101, help="the split's seed; weight seeds are seed, seed+1, ..."
    )
    p.add_argument("--batch-size", type=flags.positive_int, help="training batch size (default: the base's)")
    p.add_argument("--precise-bn", type=int, metavar="B", help="BatchNorm re-estimation batches (default 20)")
    p.add_argument("--study", help="study name; rerunning continues it (default scale-<base>-<axis>); with"
                   " --report-only, several names joined by commas share one report")  # fmt: skip
    p.add_argument("--epsilon", type=flags.positive_float, default=0.005,
                   help="AUC per doubling of GMACs below which a gain is not worth it (default 0.005)")  # fmt: skip
    p.add_argument("--workers", type=flags.positive_int, default=1, metavar="K", help="K processes share the points")
    p.add_argument("--max-points", type=flags.positive_int, metavar="N", help="run at most N points this session")
    p.add_argument("--report-only", action="store_true", help="train nothing: analyse what the store holds")
    p.add_argument("--test-labels", metavar="CSV", help="also judge on known test labels (id,label)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    flags.where(p)
    p.set_defaults(handler=cmd_scale)


def cmd_scale(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api
    from harness.ranking.leaderboard import read_test_labels
    from harness.scaling.report import write_scale_report
    from harness.scaling.study import ScaleOptions

    studies = (args.study or "").split(",") if args.report_only else [args.study]
    if len(studies) > 1 and not all(studies):
        raise HarnessError(f"--study {args.study!r}: name studies separated by commas")
    options = ScaleOptions(
        base=args.base,
        axis=args.axis,
        multipliers=args.multipliers,
        seeds=args.seeds,
        epochs=args.epochs,
        compute_epochs=args.compute_epochs,
        sample=args.sample,
        protocol=args.protocol,
        split_seed=args.seed,
        batch_size=args.batch_size,
        precise_bn=args.precise_bn,
        study=studies[0],
        epsilon=args.epsilon,
        max_points=args.max_points,
    )
    workspace = flags.workspace(args, err)
    codes: list[int] = []
    if not args.report_only:
        codes = api.scale(options, workers=args.workers, progress=not args.no_progress, where=workspace)
    store = workspace.store()
    # --report-only may join studies (say, an equal-epochs one and an equal-compute one) in one report and plot.
    names = [options.study_name] if len(studies) == 1 else studies
    records = [r for name in names for r in store.runs(study=name) if r.origin == "scale"]
    if not records:
        raise HarnessError(f"study {args.study or options.study_name!r} has no points: run harness scale first")
    labels = read_test_labels(args.test_labels) if args.test_labels else None
    title = "+".join(names)
    path, verdicts, tested = write_scale_report(
        workspace.results, title, records, store.runs(), options.epsilon, labels
    )
    done = sum(r.status == "complete" for r in records)
    out.print(f"study {title}: {done} of {len(records)} recorded points complete", highlight=False)
    for verdict in verdicts:
        out.print(f"{verdict.budget}: [bold]{verdict.verdict}[/bold]: {verdict.reason}", highlight=False)
    for verdict in tested:
        out.print(f"{verdict.budget} on the test labels: {verdict.verdict}: {verdict.reason}", highlight=False)
    if not verdicts:
        out.print("no budget has two sizes with two seeds each yet: nothing to judge", highlight=False)
    out.print(f"wrote {path}", highlight=False)
    return 0 if not any(codes) else 1
