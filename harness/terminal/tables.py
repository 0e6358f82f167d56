"""Rich tables that fit the console: columns chosen by priority, so no number is ever squeezed to "…" or to nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from harness.errors import HarnessError

_GAP = 2  # spaces between two columns


@dataclass(frozen=True)
class Column:
    """One column: its key (its name for --columns, its place in the order), a header and one cell per row."""

    key: str
    header: str
    cells: Sequence[str]
    justify: str = "left"  # "left" or "right"
    # Free text (a description) may wrap to lines of at least this many characters; every other cell never wraps.
    wrap_at: int | None = None


class FittedTable:
    """A table that picks its columns when it is printed, for the width of the console it is printed on.

    `steps` lists columns by priority: the first `required` are always shown; each later one is added if the
    table still fits, or, when its key is already shown, replaces that column (a wider variant: the full run id
    for the short one). Shown columns keep the order of `order`. Free-text columns that do not fit are printed
    below the table, one line per row, instead. When not even the required columns fit, each row becomes a
    short paragraph. Numbers are never cut: rich only squeezes a table wider than its console.
    """

    def __init__(
        self,
        title: str | None,
        order: Sequence[str],
        steps: Sequence[Column],
        required: int,
        row_styles: Sequence[str | None] | None = None,
    ) -> None:
        self.title = title
        self.order = list(order)
        self.steps = list(steps)
        self.required = required
        self.row_styles = list(row_styles) if row_styles is not None else None
        self._widths: dict[int, int] = {}

    def _table(self, columns: dict[str, Column]) -> Table:
        table = Table(
            title=self.title,
            header_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        shown = [columns[key] for key in self.order if key in columns]
        for column in shown:
            table.add_column(
                column.header,
                justify="right" if column.justify == "right" else "left",
                no_wrap=column.wrap_at is None,
                overflow="fold",
            )
        n_rows = len(shown[0].cells) if shown else 0
        for i in range(n_rows):
            style = self.row_styles[i] if self.row_styles else None
            table.add_row(*(Text(c.cells[i]) for c in shown), style=style)  # Text: a "[" in an id is no markup
        return table

    def _natural(self, column: Column) -> int:
        """The column's width as laid out: its widest cell or header; free text at its narrowest acceptable."""
        key = id(column)
        if key not in self._widths:
            width = max([cell_len(column.header), *(cell_len(cell) for cell in column.cells)])
            self._widths[key] = min(width, column.wrap_at) if column.wrap_at is not None else width
        return self._widths[key]

    def _width(self, columns: dict[str, Column]) -> int:
        # This layout (no edges, padding collapsed) puts two spaces between columns and none outside them.
        return sum(self._natural(c) for c in columns.values()) + _GAP * (len(columns) - 1)

    def choose(self, console: Console, options: ConsoleOptions) -> tuple[dict[str, Column], list[Column]] | None:
        """The columns that fit (by key), and the free-text columns to print below; None: the required do not fit."""
        width = options.max_width
        chosen: dict[str, Column] = {}
        for column in self.steps[: self.required]:
            chosen[column.key] = column
        if self._width(chosen) > width:
            return None
        for column in self.steps[self.required :]:
            trial = {**chosen, column.key: column}
            if self._width(trial) <= width:
                chosen = trial
        below = [c for c in self.steps if c.wrap_at is not None and c.key not in chosen]
        below = list({c.key: c for c in below}.values())
        return chosen, below

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        picked = self.choose(console, options)
        if picked is None:
            yield from self._paragraphs()
            return
        chosen, below = picked
        yield self._table(chosen)
        if below and self.steps:
            yield Text("")
            yield self._lines_below(self.steps[0], below)

    def _lines_below(self, name: Column, below: list[Column]) -> RenderableType:
        """Each row's free text on lines of its own, after the row's first cell (its name)."""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for i, key in enumerate(name.cells):
            text = "  ".join(c.cells[i] for c in below if c.cells[i])
            grid.add_row(Text(key), Text(text))
        return grid

    def _paragraphs(self) -> RenderResult:
        """Narrower than the required columns: one short paragraph per row, wrapped between whole values."""
        if self.title:
            yield Text(self.title, style="bold")
        columns: dict[str, Column] = {}
        for column in self.steps:  # later steps are wider variants: keep the first (narrowest) of each key
            columns.setdefault(column.key, column)
        shown = [columns[key] for key in self.order if key in columns]
        n_rows = len(shown[0].cells) if shown else 0
        for i in range(n_rows):
            parts = [f"{c.header} {c.cells[i]}" for c in shown if c.cells[i]]
            style = (self.row_styles[i] if self.row_styles else None) or ""
            yield Text("; ".join(parts), style=style, overflow="fold")


def pick_columns(text: str, valid: Sequence[str], flag: str = "--columns") -> list[str]:
    """A comma-separated list of column names, each checked: an unknown name is a one-line error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise HarnessError(f"{flag} needs at least one column name; choose from {', '.join(valid)}")
    for name in names:
        if name not in valid:
            raise HarnessError(f"{flag}: unknown column {name!r}; choose from {', '.join(valid)}")
    return list(dict.fromkeys(names))
