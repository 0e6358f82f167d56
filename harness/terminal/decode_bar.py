"""The decode progress bar: images/s per part on stderr while a data cache is built, or nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DecodeBar:
    """A rich progress bar with images/s on stderr, or a no-op; used as `with DecodeBar(on) as advance`."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tasks: dict[str, Any] = {}
        self.bar: Any = None

    def __enter__(self) -> Callable[[str, int, int], None]:
        if not self.enabled:
            return lambda part, n, total: None
        # Imported here: a check that finds its cache built draws no bar, and need not import it.
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("decoding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} images/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.bar.__enter__()
        return self._advance

    def _advance(self, part: str, n: int, total: int) -> None:
        if part not in self.tasks:
            self.tasks[part] = self.bar.add_task(part, total=total, rate="-")
        task_id = self.tasks[part]
        self.bar.advance(task_id, n)
        task = self.bar.tasks[task_id]
        elapsed = task.elapsed or 0.0
        if elapsed > 0:
            self.bar.update(task_id, rate=f"{task.completed / elapsed:,.0f}")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
