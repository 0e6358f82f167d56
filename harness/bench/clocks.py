"""The bench's clocks: batch times inside a fit, an epoch of a feed, the matmul ceiling, and whole processes
(wall time and peak resident memory, measured on a subprocess)."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

MATMUL_SIZE = 2048


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


@dataclass
class BatchClock:
    """Seconds of each training batch but a fit's first (its iterator starts): no tracing, no validation."""

    seconds: list[float] = field(default_factory=list)
    _last: float | None = None

    def callback(self) -> Any:
        """A Keras callback that feeds this clock (made on use: importing the bench does not import Keras)."""
        import keras

        return keras.callbacks.LambdaCallback(on_train_begin=self._begin, on_train_batch_end=self._tick)

    def _begin(self, logs: dict[str, Any] | None = None) -> None:
        self._last = None

    def _tick(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.seconds.append(now - self._last)
        self._last = now

    def rate(self, batch_size: int, since: int = 0) -> float:
        """Images/s at the median batch (from batch `since` on): a median shrugs off passing load."""
        seconds = self.seconds[since:]
        return batch_size / median(seconds) if seconds else math.nan


def epoch_seconds(batches: Any) -> float:
    """Seconds to draw every batch of a Keras PyDataset once (then its epoch ends: it reshuffles)."""
    start = time.perf_counter()
    for i in range(len(batches)):
        batches[i]
    seconds = time.perf_counter() - start
    batches.on_epoch_end()
    return seconds


def matmul_gflops(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """float32 GFLOP/s of a size x size matrix product on the backend's device (the median of `repeats`)."""
    import keras

    a = keras.random.normal((size, size), seed=1)
    b = keras.random.normal((size, size), seed=2)
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b))  # compile and warm up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])  # a GPU finishes before the value comes back
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / median(seconds) / 1e9


@dataclass(frozen=True)
class Process:
    """A finished command timed as a whole: start-up and imports included, as a user's shell sees it."""

    seconds: float
    peak_rss: int  # bytes: the command's own high-water mark (at least the launcher's ~8 MiB)

    @property
    def peak_gib(self) -> float:
        return self.peak_rss / 2**30


# Linux's ru_maxrss of a child counts the pages it had between fork and exec: the image of the process that forked
# it (a bench with Keras loaded: 3 GiB for a 56 MB command). So a bare interpreter (-I -S: ~8 MiB) spawns the
# command, waits for it and prints its rusage; the command's peak is then exact above the launcher's own size.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ,
                      file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), repr(time.perf_counter() - start), usage.ru_maxrss)
"""


def whole_process(command: Sequence[str], what: str, cwd: Path | None = None) -> Process:
    """Run `command` in a new process (stdout discarded) and time it; a failure raises with its last error line."""
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, *command]
    with tempfile.TemporaryFile() as errors:
        done = subprocess.run(launcher, stdout=subprocess.PIPE, stderr=errors, cwd=cwd, check=False)
        errors.seek(0)
        error = errors.read().decode(errors="replace").strip().splitlines()
    if done.returncode != 0:  # the launcher itself failed: the command could not start
        raise HarnessError(f"{what} could not start: {error[-1] if error else done.returncode}")
    code, seconds, max_rss = done.stdout.split()
    if int(code) != 0:
        raise HarnessError(f"{what} failed ({int(code)}): {error[-1] if error else ''}")
    return Process(float(seconds), int(max_rss) * 1024)  # Linux reports KiB
