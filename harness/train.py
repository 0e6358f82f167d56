"""Compile and fit one model: optimiser from the config, best epoch by validation AUC, NaN and time guards."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from harness.augment import augmentation_layers
from harness.config import AugmentConfig, OptimizerConfig, TrainingConfig
from harness.data import IMAGE_SHAPE
from harness.feed import ImageBatches

MONITOR = "val_auc"


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss."""


def make_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
    }
    return classes[config.name](learning_rate=config.learning_rate, **config.kwargs)


def model_input_shape(augment: AugmentConfig, image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> tuple[int, int, int]:
    """The architecture's input: the crop when one is configured, else the whole patch."""
    if augment.crop:
        return (augment.crop_size, augment.crop_size, image_shape[2])
    return image_shape


def with_input_pipeline(
    model: keras.Model, augment: AugmentConfig | None = None, seed: int = 0, image_shape: tuple[int, ...] = IMAGE_SHAPE
) -> keras.Model:
    """Raw uint8 pixels -> augmentation (training only) -> the seed's 1/255 rescale -> `model`.

    Inside the model, so the feed stays uint8 and a saved model takes raw pixels.
    """
    inputs = keras.Input(shape=image_shape, name="pixels")
    x = inputs
    for layer in augmentation_layers(augment or AugmentConfig(), seed):
        x = layer(x)
    outputs = model(keras.layers.Rescaling(1.0 / 255, name="rescale")(x))
    return keras.Model(inputs, outputs, name=model.name)


def compile_model(model: keras.Model, training: TrainingConfig) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(training.optimizer),
        loss="binary_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )
    return model


class KeepBestWeights(keras.callbacks.Callback):
    """Remember the weights of the epoch with the best validation AUC and restore them when training ends.

    The best epoch is the one whose weights are kept, evaluated and saved: a run's metrics describe that epoch.
    """

    def __init__(self, monitor: str = MONITOR) -> None:
        super().__init__()
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = 0
        self._weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {}).get(self.monitor, math.nan))
        # Ties go to the later epoch: a flat metric (e.g. saturated outputs early on) should not pin epoch 1.
        if self._weights is None or (math.isfinite(value) and value >= self.best):
            self.best = value if math.isfinite(value) else self.best
            self.best_epoch = epoch + 1
            self._weights = self.model.get_weights()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._weights is not None:
            self.model.set_weights(self._weights)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Fail the run at the first NaN or infinite batch loss, instead of training on garbage."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(f"loss became {float(loss)} at batch {batch + 1}")


class TimeLimit(keras.callbacks.Callback):
    """Stop after the epoch in which the time budget ran out; at least one epoch always completes."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.stopped = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if time.perf_counter() - self._start >= self.seconds:
            self.stopped = True
            self.model.stop_training = True


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch, and of its training phase alone (validation excluded) for an honest images/s."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.train_seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._train_end: float | None = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._start)
        self.train_seconds.append((self._train_end or now) - self._start)


@dataclass(frozen=True)
class FitResult:
    """What fitting produced: per-epoch history, the kept epoch and the cost."""

    history: pd.DataFrame
    best_epoch: int
    epochs_run: int
    seconds: float
    images_per_second: float
    stopped_by_time_limit: bool


def fit(
    model: keras.Model,
    train: ImageBatches,
    val: ImageBatches,
    training: TrainingConfig,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> FitResult:
    """Fit a compiled model; the weights left in `model` are those of the best epoch by validation AUC."""
    best = KeepBestWeights()
    timer = EpochTimer()
    guards: list[keras.callbacks.Callback] = [StopOnNonFiniteLoss(), best, timer]
    limit = TimeLimit(training.time_limit) if training.time_limit else None
    if limit is not None:
        guards.append(limit)
    started = time.perf_counter()
    try:
        history = model.fit(train, validation_data=val, epochs=training.epochs, verbose=0, callbacks=[*guards, *callbacks])
    finally:
        for callback in callbacks:
            close = getattr(callback, "close", None)
            if close is not None:
                close()
    seconds = time.perf_counter() - started
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
    frame["seconds"] = timer.seconds[: len(frame)]
    epochs_run = len(frame)
    train_seconds = sum(timer.train_seconds[:epochs_run])
    return FitResult(
        history=frame,
        best_epoch=best.best_epoch,
        epochs_run=epochs_run,
        seconds=seconds,
        images_per_second=epochs_run * len(train.indices) / train_seconds if train_seconds > 0 else 0.0,
        stopped_by_time_limit=bool(limit and limit.stopped),
    )
