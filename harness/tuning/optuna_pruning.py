"""A backend-neutral Keras 3 callback that reports each epoch's validation AUC to an Optuna trial and prunes."""

from __future__ import annotations

import math
from typing import Any

import keras
import optuna

MONITOR = "val_auc"


class OptunaPruning(keras.callbacks.Callback):
    """Report `logs[monitor]` after every epoch; raise `optuna.TrialPruned` when the study's pruner says so.

    The last epoch is never pruned: by then the trial's result is complete. Only `logs` is read, so this works on
    any Keras 3 backend (optuna-integration's callback targets tf.keras).
    """

    def __init__(self, trial: optuna.Trial, epochs: int, monitor: str = MONITOR) -> None:
        super().__init__()
        self.trial = trial
        self.epochs = epochs  # in all: with K folds the runner fits K models, and steps run on across them
        self.monitor = monitor
        self.epochs_done = 0
        self.last_logs: dict[str, float] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.epochs_done += 1  # counted here, not from `epoch`, so a second fold's epoch 1 is a new step
        self.last_logs = {k: float(v) for k, v in logs.items() if k.startswith("val_")}
        value = logs.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return  # a NaN loss fails the run through the runner's own guard
        self.trial.report(float(value), step=self.epochs_done)
        if self.epochs_done < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after epoch {self.epochs_done}/{self.epochs}: {self.monitor} {float(value):.4f} "
                "is below what the pruner keeps at this epoch"
            )
