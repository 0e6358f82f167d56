"""Whether a 'running' run still runs: its process on this host, or its heartbeat (a fresh updated_at) from any host.

A run beats while it trains (RunHeartbeat: a thread that touches its record every HARNESS_HEARTBEAT_SECONDS, 30 by
default). Its process on this host is checked directly; on another host, whose processes cannot be seen from here,
a record silent for longer than HARNESS_GRACE_SECONDS (120) belongs to a dead process (killed, or its machine lost):
any host may then end it as failed, so the point or trial it held is run again. Every host on one store must agree on
the two settings, as they do for Optuna's heartbeats.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable
from types import TracebackType

from harness.store.database import env_seconds

ENV_HEARTBEAT = "HARNESS_HEARTBEAT_SECONDS"
ENV_GRACE = "HARNESS_GRACE_SECONDS"
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def heartbeat_seconds() -> int:
    return env_seconds(ENV_HEARTBEAT, HEARTBEAT_SECONDS)


def grace_seconds() -> int:
    return env_seconds(ENV_GRACE, GRACE_SECONDS)


def stale_before(now: dt.datetime) -> dt.datetime:
    """A running record last updated before this moment has stopped beating."""
    return now - dt.timedelta(seconds=grace_seconds())


class RunHeartbeat:
    """`with RunHeartbeat(beat):` calls `beat()` every heartbeat_seconds() on a daemon thread until the block ends.
    A beat that fails (the database is away for a moment) is skipped: the run itself meets the same silence."""

    def __init__(self, beat: Callable[[], object], every: float | None = None) -> None:
        self.beat = beat
        self.every = every if every is not None else heartbeat_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="harness-run-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.beat()
            except Exception:  # a missed beat is retried at the next one
                continue

    def __enter__(self) -> RunHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
