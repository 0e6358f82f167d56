"""`harness bench`: the seed notebook's pipeline against the harness's, stage by stage."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags
from harness.errors import HarnessError


def add(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="the seed notebook's pipeline against the harness's, stage by stage: images/s and ratios",
        description="Each stage runs the seed's way (the notebook's own calls) and the harness's on the same images.",
    )
    flags.debug(p)
    from harness.bench import BenchOptions
    from harness.settings import add_flags

    add_flags(p, BenchOptions)  # one flag per field of harness/bench/options.py
    p.add_argument("--threads", type=flags.positive_int, metavar="N", help="the backend's compute threads")
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api
    from harness.bench import BenchOptions, render
    from harness.plans import architectures
    from harness.settings import given

    if args.threads:
        from harness.backend import set_threads

        set_threads(args.threads)
    settings = given(args, BenchOptions)
    if "data" in settings and "synthetic" in settings:
        raise HarnessError("give --data DIR or --synthetic N, not both")
    settings["models"] = tuple(architectures(settings.get("models", ("seed_model2",))))  # 'baselines' expanded
    result = api.bench(console=err, **settings)
    out.print(render(result))
    for note in result.notes:
        out.print(note, highlight=False)
    return 0
