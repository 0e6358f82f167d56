"""Compile and fit one model: optimiser from the config, best epoch by validation AUC, NaN and time guards."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from harness.backend import is_non_finite_output_error
from harness.config import AugmentConfig, OptimizerConfig, TrainingConfig
from harness.data import IMAGE_SHAPE
from harness.data.feed import ImageBatches
from harness.registry import build_model
from harness.training.augment import augmentation_layers
from harness.training.metrics import binary_metrics

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


# --precision -> the Keras dtype policy the architecture's layers are built under.
DTYPE_POLICIES = {"float32": "float32", "mixed": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Layers built inside compute in `precision` (see TrainingConfig.precision); variables stay float32."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(DTYPE_POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_output(model: keras.Model) -> keras.Model:
    """`model` with its output layer in float32: a float16 sigmoid saturates at 1 - 2**-11, and ties spoil AUC."""
    last = model.layers[-1]
    if keras.backend.standardize_dtype(last.compute_dtype) == "float32":
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer is last:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def build_core(
    architecture: str, precision: str = "float32", input_shape: tuple[int, int, int] = IMAGE_SHAPE, **kwargs: Any
) -> keras.Model:
    """The registered architecture with its layers computing in `precision` and its output layer in float32."""
    with precision_policy(precision):
        return float32_output(build_model(architecture, input_shape, **kwargs))


def compile_model(model: keras.Model, training: TrainingConfig) -> keras.Model:
    optimizer = make_optimizer(training.optimizer)
    if training.precision == "mixed":
        # Keras wraps it itself only when the outer model is float16; here only the architecture is.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
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


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Re-estimate BatchNorm's population statistics from training batches before each validation ("precise BN").

    Keras keeps them as running averages with momentum 0.99, which need well over a thousand steps to forget their
    initial values when the true variance is small, as it is in the seed models. A Kaggle epoch has 3,000+ steps,
    but a CPU budget (a sample of a few thousand images) has tens: validation then runs with statistics that are
    still mostly the initial ones and scores near chance although training accuracy is high. Averaging the batch
    statistics of `max_batches` training batches (cumulative momentum 1 - 1/k) fixes that without touching any
    learned weight (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). The weights kept for the best epoch
    include these statistics.
    """

    def __init__(self, batches: ImageBatches, max_batches: int) -> None:
        super().__init__()
        self.batches = batches
        self.max_batches = max_batches
        self.calls = 0

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.recalibrate()

    def recalibrate(self) -> None:
        layers = [layer for layer in self.model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
        if not layers or self.max_batches < 1:
            return
        momenta = [layer.momentum for layer in layers]
        try:
            for k in range(1, min(len(self.batches), self.max_batches) + 1):
                for layer in layers:
                    layer.momentum = 1.0 - 1.0 / k  # moving = mean of the k batch statistics so far
                self.model(self.batches[k - 1][0], training=True)
        finally:
            for layer, momentum in zip(layers, momenta, strict=True):
                layer.momentum = momentum
        self.calls += 1


class ExactValidation(keras.callbacks.Callback):
    """The harness's own validation after every epoch: exact ROC AUC, accuracy and log loss, as the run records them.

    Keras's AUC metric counts probabilities into 200 bins, so the epoch's val_auc it showed differed from the exact
    AUC the record got (0.5232 against 0.5223). This callback replaces Keras's validation pass, so it costs no extra
    pass: it predicts the validation images as the runner's final prediction does (same batches, same padding),
    scores them with `binary_metrics` and writes val_loss, val_accuracy and val_auc into the epoch's logs. Being the
    first callback, every later one (the kept epoch, the history, the progress display, the tuners' pruning) sees
    the numbers the record gets.
    """

    def __init__(self, val: ImageBatches, batch_size: int, recalibrate: RecalibrateBatchNorm | None = None) -> None:
        super().__init__()
        if val.labels is None:
            raise ValueError("validation batches need labels")
        self.val = val
        self.batch_size = batch_size
        self.recalibrate = recalibrate
        self.seconds: list[float] = []

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        if self.recalibrate is not None:
            self.recalibrate.set_model(model)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        from harness.training.runner import (
            predict_probabilities,  # the runner's own prediction loop (it imports this module)
        )

        started = time.perf_counter()
        if self.recalibrate is not None:
            self.recalibrate.recalibrate()
        assert self.val.labels is not None
        probs = predict_probabilities(self.model, self.val.images, self.val.indices, self.batch_size)
        labels = self.val.labels[self.val.indices]
        if np.isfinite(probs).all():
            scores = binary_metrics(labels, probs)
        else:  # a diverged model: no score, so it is never the kept epoch
            scores = {"val_accuracy": math.nan, "val_auc": math.nan, "val_loss": math.nan}
        if logs is not None:
            logs.update(scores)
        self.seconds.append(time.perf_counter() - started)


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

    def __init__(self, validation: ExactValidation) -> None:
        super().__init__()
        self.validation = validation
        self.seconds: list[float] = []
        self.train_seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Runs after ExactValidation, so the epoch's seconds include validation and its own seconds are known.
        seconds = time.perf_counter() - self._start
        self.seconds.append(seconds)
        spent = self.validation.seconds[-1] if len(self.validation.seconds) > len(self.train_seconds) else 0.0
        self.train_seconds.append(max(0.0, seconds - spent))


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
    """Fit a compiled model; the weights left in `model` are those of the best epoch by validation AUC.

    `val` is scored by ExactValidation after every epoch, not by Keras, so each epoch's val_auc is the exact one.
    """
    best = KeepBestWeights()
    recalibrate = RecalibrateBatchNorm(train, training.precise_bn) if training.precise_bn else None
    validation = ExactValidation(val, training.predict_batch_size, recalibrate)
    timer = EpochTimer(validation)
    # Validation first: it writes the epoch's val_* scores that every later callback reads.
    guards: list[keras.callbacks.Callback] = [validation, StopOnNonFiniteLoss(), best, timer]
    limit = TimeLimit(training.time_limit) if training.time_limit else None
    if limit is not None:
        guards.append(limit)
    started = time.perf_counter()
    try:
        history = model.fit(train, epochs=training.epochs, verbose=0, callbacks=[*guards, *callbacks])
    except RuntimeError as exc:
        if not is_non_finite_output_error(exc):
            raise
        raise NonFiniteLoss("loss became nan: the model's output is not a probability") from exc
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
