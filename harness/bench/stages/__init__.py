"""The four timed stages (prepare, feed, train, predict), each run the seed's way and the harness's on the same
images, one after another."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from harness.bench.fixtures import Fixtures
from harness.bench.options import FEED_OVER_TRAIN, STAGES, BenchOptions
from harness.bench.stages import stage_feed, stage_predict, stage_prepare, stage_train
from harness.bench.stages.state import Bench
from harness.bench.table import BenchResult, Row


def run_stages(options: BenchOptions, console: Console, work: Path) -> BenchResult:
    """Every requested stage in order, then the feed against each model's fastest training, in `work`."""
    from harness.backend import devices, environment

    result = BenchResult()
    bench = Bench(options, console, Fixtures(options, console, work, result.notes), result)
    env = environment()
    result.environment = {**env, "load_average_start": os.getloadavg()}
    gpus = devices()
    result.notes.append(
        f"{env['backend']} {env['backend_version']}, keras {env['keras']}, {os.cpu_count()} CPUs, "
        + (f"accelerators: {', '.join(gpus)}" if gpus else "no GPU on this machine: CPU figures only")
    )
    runs = {"prepare": stage_prepare.run, "feed": stage_feed.run, "train": stage_train.run}
    runs["predict"] = stage_predict.run
    for stage in STAGES:
        if stage in options.stages:
            console.print(f"[bold]{stage}[/bold] ...")
            runs[stage](bench)
    if bench.feed_rate is not None:
        n_feed, feed_rate = bench.feed_rate
        for model, (rate, how) in bench.train_rates.items():
            result.rows.append(
                Row(
                    "feed/train",
                    f"ImageBatches feed ÷ {model}'s fastest training ({how})",
                    n_feed,
                    harness=feed_rate,
                    ratio=feed_rate / rate,
                    target=FEED_OVER_TRAIN,
                    note=f"training {rate:,.0f} img/s: at >= 5x the feed is never the bottleneck",
                )
            )
    result.environment["load_average_end"] = os.getloadavg()
    start, end = result.environment["load_average_start"][0], os.getloadavg()[0]
    result.notes.append(f"load average (1 min) {start:.1f} at the start, {end:.1f} at the end")
    return result
