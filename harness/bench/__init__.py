"""`harness bench`: the seed notebook's pipeline against the harness's, stage by stage, in images a second.

options (what to measure) -> fixtures (scratch datasets) -> stages (prepare, feed, train, predict; each timed
by clocks, the seed's side run by seed_way) -> table (rows, rendered).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from harness.atomic import write_text
from harness.bench.options import FEED_OVER_TRAIN, STAGES, TARGETS, BenchOptions
from harness.bench.table import BenchResult, Row, render

__all__ = ["FEED_OVER_TRAIN", "STAGES", "TARGETS", "BenchOptions", "BenchResult", "Row", "render", "run_bench"]


def run_bench(options: BenchOptions, console: Console | None = None) -> BenchResult:
    """Measure every requested stage both ways; the scratch folder is removed at the end."""
    from harness.bench.stages import run_stages

    console = console or Console(stderr=True)
    base = Path(options.work) if options.work else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="harness-bench-", dir=base))
    try:
        result = run_stages(options, console, work)
        if options.json_path:
            write_text(options.json_path, json.dumps(result.to_dict(), indent=2, default=str))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
