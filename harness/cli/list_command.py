"""`harness list`: the registered architectures (with parameter counts) and search spaces."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from harness.cli import flags


def add(sub: Any) -> None:
    p = sub.add_parser("list", help="registered architectures (with parameter counts) and search spaces")
    flags.debug(p)
    p.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import api
    from harness.terminal.tables import Column, FittedTable

    def column(key: str, values: list[dict[str, str]]) -> Column:
        # A description wraps to lines of 40 characters or more, or goes on its own line below the table.
        justify = "right" if key in ("parameters", "epochs", "batch") else "left"
        return Column(key, key, [v[key] for v in values], justify, wrap_at=40 if key == "description" else None)

    rows = api.architectures()
    order = ["name", "baseline", "parameters", "optimizer", "epochs", "batch", "description"]
    out.print(FittedTable("architectures", order, [column(key, rows) for key in order], 1))
    spaces = api.search_spaces()
    order = ["name", "widens", "description"]
    out.print(FittedTable("search spaces", order, [column(key, spaces) for key in order], 1))
    return 0
