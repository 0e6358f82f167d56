"""The Keras callbacks of one fit: exact validation, the kept best epoch, early stopping, EMA weights, BatchNorm
re-estimation, NaN and time guards, epoch timing."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from harness.data.feed import ImageBatches
from harness.errors import ConfigError
from harness.training.inference import predict_probabilities
from harness.training.metrics import binary_metrics

MONITOR = "val_auc"


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss."""


class EmaWeights:
    """Swaps the optimiser's moving average of the weights (--ema) in for validation and out again for training.

    Keras puts the average into the model only when fit ends (finalize_variable_values), so its own validation
    scores the raw weights. Here each epoch's validation, the kept best epoch and the saved model are the average's.
    """

    def __init__(self) -> None:
        self._raw: list[np.ndarray] | None = None

    def swap_in(self, model: keras.Model) -> None:
        optimizer = model.optimizer
        if not getattr(getattr(optimizer, "inner_optimizer", optimizer), "use_ema", False):
            return
        variables = model.trainable_variables
        self._raw = [variable.numpy() for variable in variables]
        optimizer.finalize_variable_values(variables)
        for variable in variables:  # own copies: on JAX the model's buffers, donated to predict, are the average's
            variable.assign(variable.numpy())

    def swap_out(self, model: keras.Model) -> None:
        if self._raw is not None:
            for variable, value in zip(model.trainable_variables, self._raw, strict=True):
                variable.assign(value)
            self._raw = None


class SwapBackTrainingWeights(keras.callbacks.Callback):
    """After the epoch's validation and its kept weights: training goes on from the raw weights, not the average."""

    def __init__(self, ema: EmaWeights) -> None:
        super().__init__()
        self.ema = ema

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.ema.swap_out(self.model)


class KeepBestWeights(keras.callbacks.Callback):
    """Remember the weights of the epoch with the best validation AUC and restore them when training ends.

    The best epoch is the one whose weights are kept, evaluated and saved: a run's metrics describe that epoch.
    """

    def __init__(self, monitor: str = MONITOR) -> None:
        super().__init__()
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = 0
        self.weights: list[np.ndarray] | None = None  # the kept epoch's (a checkpoint carries them)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {}).get(self.monitor, math.nan))
        # Ties go to the later epoch: a flat metric (e.g. saturated outputs early on) should not pin epoch 1.
        if self.weights is None or (math.isfinite(value) and value >= self.best):
            self.best = value if math.isfinite(value) else self.best
            self.best_epoch = epoch + 1
            self.weights = self.model.get_weights()

    def restore(self) -> None:
        """Put the best epoch's weights back; `fit` calls it once, after its last phase."""
        if self.weights is not None:
            self.model.set_weights(self.weights)


class Patience(keras.callbacks.EarlyStopping):
    """--patience N: stop when val AUC has not improved for N epochs. KeepBestWeights keeps and restores the best
    epoch's weights, so this only stops; its count spans both phases of a --freeze-epochs fit and a resume."""

    def __init__(self, patience: int, monitor: str = MONITOR) -> None:
        super().__init__(monitor=monitor, mode="max", patience=patience)
        self.started = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.started:  # Keras resets the count at every fit; a phase or a resume must not
            super().on_train_begin(logs)
            self.started = True

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch > 0


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

    def __init__(
        self,
        val: ImageBatches,
        batch_size: int,
        recalibrate: RecalibrateBatchNorm | None = None,
        ema: EmaWeights | None = None,
        only_after: tuple[int, ...] | None = None,
        last_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if val.labels is None:
            raise ValueError("validation batches need labels")
        self.only_after = set(only_after) if only_after is not None else None  # None: every epoch
        self.last_epoch = last_epoch
        self.val = val
        self.batch_size = batch_size
        self.recalibrate = recalibrate
        self.ema = ema
        self.seconds: list[float] = []
        self.images = 0  # validated per epoch (what a clock reads a prediction speed from)

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        if self.recalibrate is not None:
            self.recalibrate.set_model(model)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        done = epoch + 1
        skip = self.only_after is not None and done not in self.only_after and done != self.last_epoch
        if skip and not self.model.stop_training:  # an epoch between rungs: scored by no one, so not validated
            if logs is not None:
                logs.update({"val_accuracy": math.nan, "val_auc": math.nan, "val_loss": math.nan})
            return
        started = time.perf_counter()
        if self.ema is not None:
            self.ema.swap_in(self.model)  # BatchNorm is re-estimated for, and validation scores, the average
        if self.recalibrate is not None:
            self.recalibrate.recalibrate()
        assert self.val.labels is not None
        probs = predict_probabilities(self.model, self.val.images, self.val.indices, self.batch_size)
        self.images = len(self.val.indices)
        labels = self.val.labels[self.val.indices]
        if np.isfinite(probs).all():
            scores = binary_metrics(labels, probs)
        else:  # a diverged model: no score, so it is never the kept epoch
            scores = {"val_accuracy": math.nan, "val_auc": math.nan, "val_loss": math.nan}
        if logs is not None:
            logs.update(scores)
        self.seconds.append(time.perf_counter() - started)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Fail the run at the first NaN or infinite batch loss, instead of training on garbage.

    async_safe: Keras runs it on a helper thread, so reading the loss never makes the training loop wait for the
    device (a NaN raised there is raised again in the loop at the next batch)."""

    async_safe = True

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(f"loss became {float(loss)} at batch {batch + 1}")


class TimeLimit(keras.callbacks.Callback):
    """Stop after the epoch in which the time budget ran out; at least one epoch always completes."""

    def __init__(self, seconds: float, spent: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.spent = spent  # seconds used before a resume
        self.stopped = False
        self._start: float | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._start is None:  # the budget spans both phases of a freeze-then-fine-tune fit
            self._start = time.perf_counter() - self.spent

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._start is not None and time.perf_counter() - self._start >= self.seconds:
            self.stopped = True
            self.model.stop_training = True


class DeadlineStop(keras.callbacks.Callback):
    """--deadline inside a fit: stop after the batch at which the clock has no more time left than what must follow.

    What follows training is predicted from measurements: the last epoch's validation and the run's own predictions
    (`images_after` images at the measured prediction speed: ExactValidation's seconds per image, or a third of a
    training step's per image before any validation ran), a few seconds to save, and `reserve()`, the time the
    caller keeps for what comes after this run (a search's endgame). Checked after every batch, so a long epoch is cut
    where the clock says, not after it.
    """

    SAVE_SECONDS = 3.0  # model.keras, history, plots
    PREDICT_OVER_TRAIN = 3.0  # forward-only images per second against training's, before one is measured

    def __init__(
        self,
        deadline: Any,
        images_after: int,
        validation: ExactValidation | None = None,
        reserve: Any = None,
    ) -> None:
        super().__init__()
        self.deadline = deadline
        self.images_after = images_after
        self.validation = validation
        self.reserve = reserve
        self.stopped = False
        self._last: float | None = None
        self._batch_seconds: list[float] = []
        self.batch_images = 1

    def seconds_after(self) -> float:
        """What the run needs once training stops (see the class): the epoch's validation as the last one took
        (BatchNorm re-estimation included), then the rest of `images_after` at a third of a training step each."""
        if len(self._batch_seconds) < 2:  # the first batch traces the training step: no speed yet
            return self.SAVE_SECONDS + (float(self.reserve()) if self.reserve is not None else 0.0)
        per_image = float(np.median(self._batch_seconds[1:])) / self.batch_images / self.PREDICT_OVER_TRAIN
        validated = self.validation.images if self.validation is not None else 0
        if self.validation is not None and self.validation.seconds:
            validating = self.validation.seconds[-1]
        else:
            validating = validated * per_image
        predicting = max(0, self.images_after - validated) * per_image
        extra = float(self.reserve()) if self.reserve is not None else 0.0
        return validating + predicting + self.SAVE_SECONDS + extra

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._last = None  # validation ran between the last batch and this one: not a batch's time

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Timed from one batch's start to the next, on the training loop's own thread: it reads no metric, so it
        # never waits for the device (the batch-end callbacks are dispatched asynchronously, see async_safe).
        now = time.perf_counter()
        if self._last is not None:
            recent = self._batch_seconds[1:][-49:]  # the first (tracing) batch, and the latest ones
            self._batch_seconds = [*self._batch_seconds[:1], *recent, now - self._last]
        self._last = now
        if self.deadline.left() <= self.seconds_after():
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


def tensorboard_logs(log_root: str | None, results: Path, run_folder: Path) -> list[keras.callbacks.Callback]:
    """Keras's TensorBoard callback writing to <log_root>/<run id>[/fold<k>] ("" = <results>/tensorboard), or none.

    It runs after ExactValidation, so its epoch_auc under validation/ is the exact AUC the record gets.
    """
    if log_root is None:
        return []
    check_tensorboard()
    where = tensorboard_folder(log_root, results) / run_folder.relative_to(results / "runs")
    return [keras.callbacks.TensorBoard(str(where), write_graph=False, profile_batch=0)]


def tensorboard_folder(log_root: str, results: Path) -> Path:
    """The folder --tensorboard [DIR] names: DIR, or <results>/tensorboard when it is given alone."""
    return Path(log_root) if log_root else Path(results) / "tensorboard"


def check_tensorboard() -> None:
    """Keras writes TensorBoard logs with TensorFlow's tf.summary, on every backend, and tf.summary.scalar is the
    tensorboard package's (TensorFlow 2.21 no longer installs it): without both, one line."""
    import importlib.util

    missing = [name for name in ("tensorflow", "tensorboard") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"--tensorboard needs TensorFlow's summary writer and the tensorboard package; {' and '.join(missing)}"
            f" not installed here ({keras.backend.backend()} backend): pip install {' '.join(missing)}"
            " (the Keras backend may stay as it is), or leave --tensorboard out"
        )
