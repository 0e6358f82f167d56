"""Training progress wherever the output goes: live bars on a terminal, plain lines elsewhere, an ETA for the job.

Over 350 lines because the live and the plain displays share one clock (epoch times, ETAs, the job's progress):
split in two, each half would need the other's internals."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from harness.terminal.consoles import fitted


def duration(seconds: float | None) -> str:
    """0:42, 12:05 or 1:02:05; '?' while nothing has been measured yet."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Overall:
    """An ETA for the whole job (every run of `harness run`, every trial of `harness search`), fed by each fit."""

    name = "all"

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self._started = clock()

    def fit_started(self) -> None:
        """A model starts fitting (one per run, or one per fold)."""

    def fit_progress(self, epochs_done: float, seconds: float) -> None:
        """The fit under way has done `epochs_done` epochs (a fraction mid-epoch) in `seconds`."""

    def position(self) -> str:
        raise NotImplementedError

    def remaining(self) -> float | None:
        raise NotImplementedError

    def elapsed(self) -> float:
        return self.clock() - self._started

    def fraction(self) -> float:
        left = self.remaining()
        return 0.0 if left is None else self.elapsed() / max(1e-9, self.elapsed() + left)

    def text(self) -> str:
        return f"{self.name}: {self.position()}, elapsed {duration(self.elapsed())}, eta {duration(self.remaining())}"


class RunPlan(Overall):
    """The runs of one `harness run`, for an ETA across them.

    The current model's measured seconds per epoch give its time left; a model not started yet is estimated from
    that speed scaled by its forward cost (GMACs per image, read off the built model), and the time a finished run
    spent outside its epochs (predicting the test set, saving) is added once per remaining run.
    """

    name = "all runs"

    def __init__(self, epochs: Sequence[int], gmacs: Sequence[float], clock: Callable[[], float] = time.perf_counter):
        super().__init__(clock)
        if len(epochs) != len(gmacs) or not epochs:
            raise ValueError("a plan needs one epoch count and one cost per run")
        self.epochs = list(epochs)
        self.gmacs = [max(g, 1e-9) for g in gmacs]
        self.current = -1
        self._run_started = self._started
        self._done = 0.0  # epochs of the current run finished in earlier fits (K-fold) ...
        self._fit_done = 0.0  # ... and in the fit under way
        self._fit_seconds = 0.0
        self._epoch_seconds = 0.0  # seconds inside the current run's earlier fits
        self._rate: float | None = None  # seconds per epoch per GMAC: this machine's measured speed
        self._overhead = 0.0

    def start_run(self, index: int) -> None:
        now = self.clock()
        if self.current >= 0:
            self._overhead = max(0.0, (now - self._run_started) - self._epoch_seconds - self._fit_seconds)
        self.current, self._run_started = index, now
        self._done = self._fit_done = self._fit_seconds = self._epoch_seconds = 0.0

    def fit_started(self) -> None:
        self._done += self._fit_done
        self._epoch_seconds += self._fit_seconds
        self._fit_done = self._fit_seconds = 0.0

    def fit_progress(self, epochs_done: float, seconds: float) -> None:
        self._fit_done, self._fit_seconds = epochs_done, seconds
        done = self._done + epochs_done
        if done > 0 and self.current >= 0:
            self._rate = (self._epoch_seconds + seconds) / done / self.gmacs[self.current]

    def position(self) -> str:
        return f"run {self.current + 1}/{len(self.epochs)}"

    def remaining(self) -> float | None:
        """Seconds until the last run ends; None until the first batches have been timed."""
        if self._rate is None or self.current < 0:
            return None
        left = max(0.0, self.epochs[self.current] - self._done - self._fit_done)
        seconds = left * self._rate * self.gmacs[self.current] + self._overhead
        for j in range(self.current + 1, len(self.epochs)):
            seconds += self.epochs[j] * self._rate * self.gmacs[j] + self._overhead
        return seconds


def run_plan(specs: Sequence[Any]) -> RunPlan | None:
    """The plan of several RunSpecs (None for one: its own ETA is the whole job's). Builds each model once, untrained,
    to read its cost: about a second for the three baselines."""
    if len(specs) < 2:
        return None
    from harness.cost import architecture_cost

    costs: dict[str, float] = {}
    for spec in specs:
        key = repr((spec.architecture, sorted(spec.arch_kwargs.items())))
        if key not in costs:
            costs[key] = architecture_cost(spec.architecture, **spec.arch_kwargs).gmacs
    return RunPlan(
        [spec.training.epochs * spec.data.folds for spec in specs],
        [costs[repr((spec.architecture, sorted(spec.arch_kwargs.items())))] for spec in specs],
    )


class TrialClock(Overall):
    """Trials done of a study's total, the time elapsed and an ETA from the study's measured pace.

    The count comes from the study itself (`counted`), so with several workers the pace is theirs together.
    """

    name = "study"

    def __init__(self, total: int, counted: Callable[[], int], clock: Callable[[], float] = time.perf_counter):
        super().__init__(clock)
        self.total = total
        self.counted = counted
        self.before = self.done = counted()
        self._last = self._started
        self._finished = 0
        self._eta: float | None = None

    def trial_finished(self) -> None:
        self._finished += 1
        self.done = max(self.counted(), self.before + self._finished)
        self._last = self.clock()
        per_trial = (self._last - self._started) / max(1, self.done - self.before)
        self._eta = max(0, self.total - self.done) * per_trial

    def position(self) -> str:
        return f"{self.done}/{self.total} trials done"

    def remaining(self) -> float | None:
        if self._eta is None:
            return None
        return max(0.0, self._eta - (self.clock() - self._last))


class DeadlineClock(Overall):
    """A clocked command's whole job: how much of its --deadline is spent and left (the ETA is the clock's end)."""

    name = "clock"

    def __init__(self, deadline: Any, label: Callable[[], str] | None = None) -> None:
        super().__init__(time.monotonic)
        self.deadline = deadline
        self._started = deadline.started
        self.label = label

    def position(self) -> str:
        return self.label() if self.label is not None else f"{duration(self.deadline.seconds)} in all"

    def remaining(self) -> float | None:
        return max(0.0, self.deadline.left())


def _value(logs: dict[str, Any], key: str) -> str:
    """A metric for a line; '-' when there is none, or NaN: a clocked leg validates only at its rungs."""
    value = logs.get(key)
    return f"{float(value):.4f}" if value is not None and math.isfinite(float(value)) else "-"


class _EpochClock(keras.callbacks.Callback):
    """What both displays share: epoch timing, this fit's ETA and the overall one.

    async_safe: its batch-end updates run on Keras' helper thread, so a progress bar never makes a GPU wait."""

    async_safe = True

    def __init__(self, label: str, epochs: int, console: Console, overall: Overall | None = None) -> None:
        super().__init__()
        self.label = label
        self.epochs = epochs
        self.console = console
        self.overall = overall
        self.epoch_seconds: list[float] = []
        self._fit_started = self._epoch_started = time.perf_counter()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._fit_started = self._epoch_started = time.perf_counter()
        if self.overall is not None:
            self.overall.fit_started()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_started = time.perf_counter()

    def _steps(self) -> int | None:
        return self.params.get("steps") if self.params else None

    def _report(self, epochs_done: float) -> None:
        if self.overall is not None:
            self.overall.fit_progress(epochs_done, time.perf_counter() - self._fit_started)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        steps = self._steps()
        if steps:
            self._report(len(self.epoch_seconds) + (batch + 1) / steps)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._epoch_started)
        self._report(float(len(self.epoch_seconds)))

    def eta(self) -> float | None:
        """Seconds left in this fit, from its mean epoch so far (validation included)."""
        if not self.epoch_seconds:
            return None
        return (self.epochs - len(self.epoch_seconds)) * sum(self.epoch_seconds) / len(self.epoch_seconds)

    def epoch_line(self, epoch: int, logs: dict[str, Any]) -> str:
        """One epoch on one line: the run, epoch i/n, train loss, validation scores, seconds and ETAs (on a narrow
        terminal the least telling of these are left out rather than wrapped)."""
        parts = [
            f"{self.label}  epoch {epoch + 1}/{self.epochs}",
            f"loss {_value(logs, 'loss')}",
            f"val acc {_value(logs, 'val_accuracy')}",
            f"val AUC {_value(logs, 'val_auc')}",
            f"{self.epoch_seconds[-1]:.1f} s",
            f"eta {duration(self.eta())}",
        ]
        if self.overall is not None:
            parts.append(f"({self.overall.text()})")
        # On a narrow terminal the study's line goes first, then the times, the loss and val acc: val AUC, the
        # metric Kaggle scores, goes last.
        return fitted(self.console, parts, drop=[6, 5, 4, 1, 2, 3])

    def close(self) -> None:
        pass


class EpochLines(_EpochClock):
    """One plain line per epoch, for a log, nohup, a notebook or --no-progress: no live display, never wrapped."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        self.console.print(self.epoch_line(epoch, logs or {}), markup=False, highlight=False, soft_wrap=True)


class RichProgress(_EpochClock):
    """Live bars on a terminal: the batches of the epoch, the epochs, and the whole job's ETA; each epoch stays
    behind as one line with its validation scores."""

    def __init__(self, label: str, epochs: int, console: Console | None = None, overall: Overall | None = None):
        super().__init__(label, epochs, console or Console(stderr=True), overall)
        self._progress: Progress | None = None
        self._overall_task: TaskID | None = None
        self._batch_done = 0
        self._batch_metrics = self._epoch_metrics = ""

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[elapsed]}"),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=True,  # the epoch lines printed above the bars are the record; the bars go at the end
        )
        self._progress.start()
        fields: dict[str, Any] = {"count": "", "elapsed": "", "eta": "", "metrics": ""}
        if self.overall is not None:
            self._overall_task = self._progress.add_task(escape(self.overall.name), total=1.0, **fields)
        self._epochs_task = self._progress.add_task(f"{escape(self.label)} epochs", total=self.epochs, **fields)
        self._batch_task = self._progress.add_task("  batches", total=None, **fields)
        self._update()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        assert self._progress is not None
        self._progress.reset(self._batch_task, total=self._steps(), description=f"  epoch {epoch + 1}/{self.epochs}")
        self._batch_done = 0
        self._update()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        logs = logs or {}
        self._batch_done = batch + 1
        self._batch_metrics = f"loss {_value(logs, 'loss')}  acc {_value(logs, 'accuracy')}"
        self._update()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        logs = logs or {}
        self._epoch_metrics = f"val acc {_value(logs, 'val_accuracy')}  val AUC {_value(logs, 'val_auc')}"
        self._update()
        if self._progress is not None:
            self._progress.console.print(self.epoch_line(epoch, logs), markup=False, highlight=False, soft_wrap=True)

    def _update(self) -> None:
        """Every row from the measured times: counts, elapsed, ETAs and the last scores."""
        if self._progress is None:
            return
        now = time.perf_counter()
        steps, done = self._steps(), self._batch_done
        spent = now - self._epoch_started
        batch_left = spent / done * (steps - done) if steps and done else None
        self._progress.update(
            self._batch_task,
            completed=done,
            count=f"{done}/{steps or '?'}",
            elapsed=duration(spent),
            eta=f"eta {duration(batch_left)}",
            metrics=self._batch_metrics,
        )
        self._progress.update(
            self._epochs_task,
            completed=len(self.epoch_seconds),
            count=f"{len(self.epoch_seconds)}/{self.epochs}",
            elapsed=duration(now - self._fit_started),
            eta=f"eta {duration(self.eta())}",
            metrics=self._epoch_metrics,
        )
        if self._overall_task is not None and self.overall is not None:
            self._progress.update(
                self._overall_task,
                completed=self.overall.fraction(),
                count=escape(self.overall.position()),
                elapsed=duration(self.overall.elapsed()),
                eta=f"eta {duration(self.overall.remaining())}",
            )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display; also called when training raises, so the terminal is left clean."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def display_label(label: str, study: str | None = None, trial: int | None = None) -> str:
    """The name a display gives a fit: a search trial is named by its study and number."""
    return f"{study} #{trial} {label}" if trial is not None else label


def epoch_progress(
    label: str, epochs: int, console: Console, live: bool = True, overall: Overall | None = None
) -> _EpochClock:
    """Live bars when `live` and the console is a terminal; otherwise one plain line per epoch."""
    if live and console.is_terminal and not console.is_dumb_terminal:
        return RichProgress(label, epochs, console, overall)
    return EpochLines(label, epochs, console, overall)


PHASE_IMAGES = 5_000  # predictions of at least this many images (views counted) show their progress


@contextlib.contextmanager
def phase(
    console: Console, label: str, total: int, live: bool = True, quiet: bool = False
) -> Iterator[Callable[[int], None]]:
    """A phase of known size outside training (predicting a test set, TTA, an ensemble's members): on a terminal a
    live bar, elsewhere a line as it starts and one as it ends, so no minute passes in silence (quiet: neither, for
    work too small to wait for). Yields `advance(n)`."""
    started = time.perf_counter()
    if quiet:
        yield lambda n: None
        return
    if live and console.is_terminal and not console.is_dumb_terminal:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TextColumn("{task.fields[eta]}"),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(escape(label), total=total, eta="")

            def advance(n: int) -> None:
                bar.advance(task, n)
                done = bar.tasks[0].completed
                spent = time.perf_counter() - started
                left = spent / done * (total - done) if done else None
                bar.update(task, eta=f"eta {duration(left)}")

            yield advance
    else:
        console.print(f"{label}: {total:,} images ...", highlight=False, markup=False)
        yield lambda n: None
    console.print(f"{label}: {total:,} images in {time.perf_counter() - started:.1f} s", highlight=False, markup=False)
