"""A whole command's wall clock: `--deadline` as one monotonic end time that every phase reads (seconds)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Deadline:
    """The end of a command's clock, in `time.monotonic()` seconds; `left()` and `spent()` are seconds too.

    Everything counts against it: data preparation, training, prediction, TTA, ensembling and writing the
    submission. `share(k)` is an earlier end for one of k pieces of work still to do (a run of several models).
    """

    seconds: float
    started: float = field(default_factory=time.monotonic)

    @property
    def end(self) -> float:
        return self.started + self.seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def spent(self) -> float:
        return time.monotonic() - self.started

    def passed(self) -> bool:
        return self.left() <= 0

    def share(self, pieces: int) -> Deadline:
        """A deadline for the next of `pieces` equal shares of the time left (ending no later than this one)."""
        now = time.monotonic()
        return Deadline(max(0.0, self.left()) / max(1, pieces), started=now)

    def until(self, seconds_before_end: float) -> Deadline:
        """The same clock, ending `seconds_before_end` earlier (what a phase must leave for the ones after it)."""
        return Deadline(self.seconds - seconds_before_end, started=self.started)


def minutes_text(seconds: float) -> str:
    """Seconds as m:ss (or h:mm:ss), for the lines a clocked command prints."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
