"""The four timed stages (prepare, feed, train, predict), each run the seed's way and the harness's on the same
images, and the state they share."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from harness.bench.clocks import MATMUL_SIZE, matmul_gflops
from harness.bench.fixtures import Fixtures
from harness.bench.options import FEED_OVER_TRAIN, STAGES, BenchOptions
from harness.bench.stages import feed, predict, prepare, train
from harness.bench.table import BenchResult, Row


@dataclass
class Bench:
    """One bench run: its options, its scratch datasets, the table so far, and what one stage tells another."""

    options: BenchOptions
    console: Console
    fixtures: Fixtures
    result: BenchResult
    feed_rate: tuple[int, float] | None = None  # images per epoch, images/s
    train_rates: dict[str, tuple[float, str]] = field(default_factory=dict)  # the fastest training rate, and how
    _ceiling: float | None = None

    def ceiling(self) -> float:
        """This machine's float32 matrix-product rate through the backend, measured once: the compute ceiling."""
        if self._ceiling is None:
            self._ceiling = matmul_gflops()
            self.result.notes.append(
                f"compute ceiling: float32 {MATMUL_SIZE}x{MATMUL_SIZE} matrix products at {self._ceiling:,.0f} GFLOP/s"
                " (median of 5); a predict row's % is its model's arithmetic rate against it"
            )
        return self._ceiling


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
    runs = {"prepare": prepare.run, "feed": feed.run, "train": train.run, "predict": predict.run}
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
