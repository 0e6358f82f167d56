"""`harness search --workers K`: K local worker processes (multiprocessing, spawn), each the library's search on
the same study; the study's lock and trial slots (see OptunaEngine) make them share `--trials` exactly."""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.tuning.search import SearchOptions, SearchSummary, StudySettings, run_search
from harness.workspace import Workspace


def search_with_workers(workspace: Workspace, options: SearchOptions) -> SearchSummary:
    """One search in this process, or `options.workers` processes on one study; the study's summary."""
    if options.workers == 1:
        return run_search(workspace, options)
    if StudySettings.from_dict(options.given).tuner != "optuna":
        raise HarnessError("--workers needs --tuner optuna: KerasTuner's own parallel mode needs a chief process")
    # Settings are checked, the tables and the study created, once: not raced by K processes.
    opened = dataclasses.replace(options, open_only=True, workers=1)
    summary = run_search(workspace, opened)
    codes: list[int] = []
    if summary.after < options.trials:
        # No live display from K processes; on a clock, the endgame is this process's, once the workers are done.
        worker = dataclasses.replace(options, workers=1, progress=False, endgame=False)
        codes = run_workers(run_search, workspace, worker, options.workers)
    if options.deadline is not None:  # the same clock: what the workers left is the endgame's reserve
        summary = run_search(workspace, dataclasses.replace(options, workers=1))
    else:
        summary = run_search(workspace, opened)
    if codes:
        line = f"{options.workers} workers ran the trials: exit codes {', '.join(map(str, codes))}"
        summary = dataclasses.replace(summary, notes=[*summary.notes, line], worker_codes=codes)
    return summary


def run_workers(job: Callable[[Workspace, Any], object], workspace: Workspace, options: Any, count: int) -> list[int]:
    """Run `job(workspace, options)` in `count` fresh processes and wait for all; their exit codes.

    `job` must be a module-level function (a spawned process imports it by name). The storage URL reaches the
    workers through the workspace; each prints its trials' lines and a one-line error on stderr.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked backend or database state
    where = (workspace.data, workspace.results, workspace.storage)
    processes = [
        context.Process(target=_work, args=(job, where, options, index), name=f"harness-worker-{index}")
        for index in range(1, count + 1)
    ]
    for process in processes:
        process.start()
    pids = ", ".join(str(p.pid) for p in processes)
    workspace.console.print(f"started {count} workers (pids {pids})", highlight=False)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (one process group): let each mark its run interrupted, then stop.
        for process in processes:
            process.join()
        raise
    return [process.exitcode if process.exitcode is not None else 1 for process in processes]


def _work(job: Callable[[Workspace, Any], object], where: tuple[Path | None, Path, str | None], options: Any,
          index: int) -> None:  # fmt: skip
    """One worker process: the job, with the command's error rules (one line, an exit code, no traceback)."""
    from harness.backend import quiet_start
    from harness.errors import one_line
    from harness.terminal.consoles import make_console

    console = make_console(stderr=True)
    data, results, storage = where
    try:
        quiet_start()
        job(Workspace(data=data, results=results, storage=storage, console=console), options)
    except HarnessError as exc:
        console.print(f"[red]error:[/red] worker {index}: {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the class guard, as the command's own: one line, not a traceback
        console.print(f"[red]error:[/red] worker {index} failed: {one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(1)
