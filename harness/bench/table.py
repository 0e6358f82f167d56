"""The bench's result: one row per figure (both ways' images/s, their ratio, the target) and its rich table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

COLUMNS = ("stage", "measure", "images", "seed img/s", "harness img/s", "ratio", "target", "met", "note")


@dataclass
class Row:
    """One line of the table: both ways' images/s on the same images, their ratio and the target it must meet."""

    stage: str
    what: str
    images: int
    seed: float | None = None
    harness: float | None = None
    target: float | None = None
    ratio: float | None = None
    note: str = ""
    seed_estimated: bool = False
    baseline: float | None = None  # knob rows: the harness's default rate they are compared with

    def __post_init__(self) -> None:
        if self.ratio is None and self.seed and self.harness:
            self.ratio = self.harness / self.seed

    @property
    def met(self) -> str:
        if self.target is not None and self.ratio is not None:
            return "yes" if self.ratio >= self.target else "NO"
        if self.baseline and self.harness:
            return "helps" if self.harness > 1.05 * self.baseline else "no gain"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "met": self.met}


@dataclass
class BenchResult:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows], "notes": self.notes, "environment": self.environment}


def render(result: BenchResult, title: str = "harness vs the seed notebook") -> Table:
    table = Table(title=title, header_style="bold", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("images", "seed img/s", "harness img/s") else "left")
    for row in result.rows:
        seed = "" if row.seed is None else ("~" if row.seed_estimated else "") + _rate(row.seed)
        table.add_row(
            row.stage,
            row.what,
            f"{row.images:,}",
            seed,
            "" if row.harness is None else _rate(row.harness),
            "" if row.ratio is None else f"{row.ratio:,.1f}x",
            "" if row.target is None else f">= {row.target:g}x",
            row.met,
            row.note,
        )
    return table


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"
