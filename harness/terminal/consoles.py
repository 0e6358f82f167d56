"""The command's consoles: results on stdout, messages on stderr, and never a hard-wrapped line off a terminal."""

from __future__ import annotations

import os
from typing import IO

from rich.console import Console

# Off a terminal there is no width to fit: wide enough for the tables, and printed lines are never wrapped.
PLAIN_WIDTH = 220


def make_console(stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A console that, off a terminal (a log, nohup, a notebook's `!harness`), never hard-wraps a line.

    rich folds non-terminal output at 80 columns, which broke run ids and paths across lines; soft wrapping leaves
    each line whole. `COLUMNS`, when set, still gives the width tables are laid out in.
    """
    console = Console(stderr=stderr, file=file)
    if not console.is_terminal:
        console.soft_wrap = True
        if not os.environ.get("COLUMNS"):
            console.width = PLAIN_WIDTH
    return console


def make_consoles() -> tuple[Console, Console]:
    """The command's two consoles: results on stdout, progress and messages on stderr."""
    return make_console(), make_console(stderr=True)


def fitted(
    console: Console, parts: list[str], keep: int = 1, separator: str = "  ", drop: list[int] | None = None
) -> str:
    """`parts` joined into one line. On a terminal, the least important parts are left out until the line fits its
    width (`drop`: their indices, least important first; by default the last part first; the first `keep` always
    stay, the first cut short with '…' if need be), so no line wraps there mid-word; off a terminal (a log) every
    part is kept: such a line is never wrapped."""
    if not console.is_terminal:
        return separator.join(parts)
    width = max(20, console.width - 1)
    order = [i for i in (drop if drop is not None else reversed(range(len(parts)))) if keep <= i < len(parts)]
    shown = dict(enumerate(parts))
    while order and len(separator.join(shown.values())) > width:
        del shown[order.pop(0)]
    line = separator.join(shown.values())
    return line if len(line) <= width else line[: width - 1] + "…"
