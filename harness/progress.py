"""A live rich display of training: epoch, batch, loss, validation metrics and time left."""

from __future__ import annotations

import time
from typing import Any

import keras
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _fmt(logs: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k} {float(logs[k]):.4f}" for k in keys if k in logs)


class RichProgress(keras.callbacks.Callback):
    """One bar for the batches of the current epoch and one for the epochs; the last validation scores beside them."""

    def __init__(self, label: str, epochs: int, console: Console | None = None) -> None:
        super().__init__()
        self.label = label
        self.epochs = epochs
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._last_val = ""
        self._epoch_started = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._epochs_task = self._progress.add_task(f"{self.label} epochs", total=self.epochs, metrics="")
        self._batch_task = self._progress.add_task("  batches", total=None, metrics="")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        assert self._progress is not None
        steps = self.params.get("steps") if self.params else None
        self._progress.reset(self._batch_task, total=steps, description=f"  epoch {epoch + 1}/{self.epochs}")
        self._epoch_started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        assert self._progress is not None
        self._progress.update(
            self._batch_task, completed=batch + 1, metrics=_fmt(logs or {}, ("loss", "accuracy", "auc"))
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        assert self._progress is not None
        self._last_val = _fmt(logs or {}, ("val_loss", "val_accuracy", "val_auc"))
        self._progress.update(self._epochs_task, completed=epoch + 1, metrics=self._last_val)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display; also called when training raises, so the terminal is left clean."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
