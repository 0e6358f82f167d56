"""What one bench run holds while its stages run: options, scratch datasets, the table so far, shared rates."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from harness.bench.clocks import MATMUL_SIZE, matmul_gflops
from harness.bench.fixtures import Fixtures
from harness.bench.options import BenchOptions
from harness.bench.table import BenchResult


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
