"""`harness search --workers K`: K local processes, each the same command as one worker on the same study."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from rich.console import Console

ENV_WORKER = "HARNESS_WORKER"  # set in a worker's environment: it runs trials itself and starts no workers


def is_worker() -> bool:
    return bool(os.environ.get(ENV_WORKER))


def run_workers(argv: Sequence[str], count: int, console: Console) -> list[int]:
    """Start `count` copies of this command (same flags, no live display) and wait for all; their exit codes.

    The study's lock and trial slots (see OptunaEngine) make the copies share `--trials` exactly. The storage URL
    reaches them through the same flags or environment the user gave this process, and nothing else.
    """
    command = [sys.executable, "-m", "harness.cli", *argv, "--no-progress"]
    processes = []
    for index in range(1, count + 1):
        env = {**os.environ, ENV_WORKER: str(index)}
        # A worker's summary would repeat this process's; its per-trial lines and errors go to stderr as they come.
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL))
    console.print(f"started {count} workers (pids {', '.join(str(p.pid) for p in processes)})", highlight=False)
    try:
        return [process.wait() for process in processes]
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (one process group): let each mark its run interrupted, then stop.
        for process in processes:
            process.wait()
        raise
