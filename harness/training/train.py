"""Compile and fit one model: the recipe's optimiser and loss, freeze-then-fine-tune phases, the best epoch kept."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from harness.backend import is_non_finite_output_error
from harness.config import OPTIMIZERS, AugmentConfig, OptimizerConfig, TrainingConfig
from harness.data import IMAGE_SHAPE
from harness.data.feed import ImageBatches
from harness.errors import ConfigError
from harness.registry import BACKBONE, build_model
from harness.training.augmentation import augmentation_layers
from harness.training.callbacks import (
    DeadlineStop,
    EmaWeights,
    EpochTimer,
    ExactValidation,
    KeepBestWeights,
    NonFiniteLoss,
    Patience,
    RecalibrateBatchNorm,
    StopOnNonFiniteLoss,
    SwapBackTrainingWeights,
    TimeLimit,
)
from harness.training.checkpoint import Checkpoint, FitState, read_state
from harness.training.schedules import learning_rate


def make_optimizer(config: OptimizerConfig, rate: Any = None, **extra: Any) -> keras.optimizers.Optimizer:
    """The optimiser `config` names, at its learning rate or `rate` (a float or a schedule), with `extra` arguments."""
    kind = getattr(keras.optimizers, OPTIMIZERS[config.name])
    return kind(learning_rate=config.learning_rate if rate is None else rate, **config.kwargs, **extra)


def recipe_optimizer(
    training: TrainingConfig, steps_per_epoch: int | None = None, epochs: int | None = None, lr_factor: float = 1.0
) -> keras.optimizers.Optimizer:
    """The recipe's optimiser: its learning-rate schedule over `epochs` (default: the run's), weight decay and EMA.

    The notebook's recipe passes no argument it did not pass, so the seed baselines train as they always did.
    """
    peak = training.optimizer.learning_rate * lr_factor
    extra: dict[str, Any] = {}
    if training.weight_decay is not None:
        extra["weight_decay"] = training.weight_decay
    if training.ema:
        extra |= {"use_ema": True, "ema_momentum": training.ema_momentum}
    rate = learning_rate(training, peak, steps_per_epoch, epochs or training.schedule_epochs or training.epochs)
    return make_optimizer(training.optimizer, rate, **extra)


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


def compile_model(
    model: keras.Model,
    training: TrainingConfig,
    steps_per_epoch: int | None = None,
    *,
    epochs: int | None = None,
    lr_factor: float = 1.0,
) -> keras.Model:
    """Compile with the recipe's optimiser and loss; a learning-rate schedule needs `steps_per_epoch`."""
    optimizer = recipe_optimizer(training, steps_per_epoch, epochs, lr_factor)
    if training.precision == "mixed":
        # Keras wraps it itself only when the outer model is float16; here only the architecture is.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    smoothing = training.label_smoothing
    model.compile(
        jit_compile=jit_compile_for(training.jit_compile),
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(label_smoothing=smoothing) if smoothing else "binary_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )
    return model


def jit_compile_for(choice: str) -> bool | str:
    """Keras' jit_compile for --jit-compile: Keras' own "auto" (XLA on a TensorFlow or JAX accelerator, none on a
    CPU) except on PyTorch, where "auto" would stay eager: there an accelerator gets torch.compile."""
    if choice != "auto":
        return choice == "on"
    if keras.backend.backend() == "torch":
        from harness.backend import devices

        return bool(devices())
    return "auto"


def backbones(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers named BACKBONE anywhere inside `model` (the input pipeline wraps the architecture)."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        if layer.name == BACKBONE:
            found.append(layer)
    return found


@dataclass(frozen=True)
class FitResult:
    """What fitting produced: per-epoch history, the kept epoch and the cost."""

    history: pd.DataFrame
    best_epoch: int
    epochs_run: int
    seconds: float
    images_per_second: float
    stopped_by_time_limit: bool


@dataclass
class FitCallbacks:
    """The harness's own callbacks of one fit, whose state a checkpoint carries."""

    best: KeepBestWeights
    timer: EpochTimer
    patience: Patience | None
    limit: TimeLimit | None
    epochs: int
    phase_start: int = 0  # the first epoch of the phase being fitted
    deadline: DeadlineStop | None = None

    @property
    def stopped_by_clock(self) -> bool:
        """Stopped by --time-limit or by the command's --deadline (not by patience or the epochs asked for)."""
        return bool((self.limit is not None and self.limit.stopped) or (self.deadline and self.deadline.stopped))


def fit(
    model: keras.Model,
    train: ImageBatches,
    val: ImageBatches,
    training: TrainingConfig,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint: Path | None = None,
    history: Path | None = None,
    deadline: DeadlineStop | None = None,
) -> FitResult:
    """Fit a compiled model; the weights left in `model` are those of the best epoch by validation AUC.

    `val` is scored by ExactValidation after every epoch, not by Keras, so each epoch's val_auc is the exact one.
    With --freeze-epochs N, the first N epochs train with the backbone frozen and the rest fine-tune everything
    (see phases); with --ema, validation and the kept weights are the moving average's; with --patience N, training
    stops N epochs after the best one. With `checkpoint` (a folder), every epoch is checkpointed there and `history`
    (history.csv) grows by a row; a checkpoint found there is resumed from its last epoch.
    """
    found = read_state(checkpoint, training.epochs, training.patience) if checkpoint is not None else None
    state = found or FitState()
    best = KeepBestWeights()
    ema = EmaWeights()
    recalibrate = RecalibrateBatchNorm(train, training.precise_bn) if training.precise_bn else None
    validation = ExactValidation(
        val, training.predict_batch_size, recalibrate, ema, training.validate_at, training.epochs
    )
    timer = EpochTimer(validation)
    # Validation first: it writes the epoch's val_* scores that every later callback reads. The kept weights are
    # taken while the average is swapped in, and only then are the raw weights put back.
    guards: list[keras.callbacks.Callback] = [validation, StopOnNonFiniteLoss(), best, SwapBackTrainingWeights(ema)]
    guards.append(timer)
    patience = Patience(training.patience) if training.patience else None
    limit = TimeLimit(training.time_limit, sum(r["seconds"] for r in state.rows)) if training.time_limit else None
    if deadline is not None:
        deadline.validation = validation
        deadline.batch_images = train.batch_size
    guards += [c for c in (patience, limit, deadline) if c is not None]
    owner = FitCallbacks(best, timer, patience, limit, training.epochs, deadline=deadline)
    saver = Checkpoint(checkpoint, history, state, owner)  # without a folder it only keeps the records
    if state.epoch:
        _resume(state, saver, owner, validation, train, training.freeze_epochs)
    started = time.perf_counter()
    try:
        if not state.finished:
            for first, last in phases(model, training, len(train)):
                if last <= state.epoch:
                    continue  # a phase the checkpoint had finished
                owner.phase_start = first
                every = [*guards, *callbacks, saver]  # the checkpoint last: it saves what the others did
                # shuffle=False: the batches shuffle their images themselves, from their own seed; Keras would also
                # shuffle the batch order from Python's global `random`, which no checkpoint can bring back.
                first_epoch = max(first, state.epoch)
                model.fit(train, initial_epoch=first_epoch, epochs=last, verbose=0, callbacks=every, shuffle=False)
                if owner.stopped_by_clock or (patience is not None and patience.stopped):
                    break
            best.restore()
        elif best.weights is not None:  # the checkpoint's training was done: only its kept weights are wanted
            model.set_weights(best.weights)
    except RuntimeError as exc:
        if not is_non_finite_output_error(exc):
            raise
        raise NonFiniteLoss("loss became nan: the model's output is not a probability") from exc
    finally:
        for callback in callbacks:
            close = getattr(callback, "close", None)
            if close is not None:
                close()
    frame = pd.DataFrame(state.rows)
    epochs_run = len(frame)
    seconds = float(sum(frame["seconds"])) if epochs_run else time.perf_counter() - started
    train_seconds = sum(timer.train_seconds[:epochs_run])
    return FitResult(
        history=frame,
        best_epoch=best.best_epoch,
        epochs_run=epochs_run,
        seconds=seconds,
        images_per_second=epochs_run * len(train.indices) / train_seconds if train_seconds > 0 else 0.0,
        stopped_by_time_limit=owner.stopped_by_clock or state.stopped_by_time_limit,
    )


def _resume(
    state: FitState,
    saver: Checkpoint,
    owner: FitCallbacks,
    validation: ExactValidation,
    train: ImageBatches,
    freeze_epochs: int = 0,
) -> None:
    """Put back what the checkpointed epochs did; the model and optimiser come back in Checkpoint.on_train_begin."""
    owner.best.best, owner.best.best_epoch, owner.best.weights = state.best, state.best_epoch, saver.best_weights()
    owner.timer.seconds = [r["seconds"] for r in state.rows]
    owner.timer.train_seconds = list(state.train_seconds)
    validation.seconds = [0.0] * state.epoch
    if owner.patience is not None:
        owner.patience.on_train_begin()
        owner.patience.wait, owner.patience.best = state.wait, state.wait_best
    # The shuffle is a seeded generator drawn at each epoch's end, and once more as each model.fit starts (Keras
    # resets its data then): replaying the draws the uninterrupted run had made gives the resumed epoch its batches.
    second_fit = bool(freeze_epochs) and state.epoch >= freeze_epochs
    for _ in range(state.epoch + second_fit):
        train.on_epoch_end()


def phases(model: keras.Model, training: TrainingConfig, steps_per_epoch: int) -> Iterator[tuple[int, int]]:
    """The (first, last) epochs of each fit: one phase, as compiled by the caller; or, with --freeze-epochs N,
    N epochs with the backbone frozen and then the rest with everything trainable at --finetune-lr times the rate.

    Keras 3 reads `trainable` when it compiles, so each phase recompiles with a fresh optimiser whose schedule spans
    that phase; the epoch counter goes on across them. Frozen BatchNorm layers run in inference mode.
    """
    if not training.freeze_epochs:
        yield 0, training.epochs
        return
    found = backbones(model)
    if not found:
        raise ConfigError(f"--freeze-epochs needs an architecture with a pretrained backbone; {model.name} has none")
    for first, last, trainable, factor in (
        (0, training.freeze_epochs, False, 1.0),
        (training.freeze_epochs, training.epochs, True, training.finetune_lr),
    ):
        for layer in found:
            layer.trainable = trainable
        compile_model(model, training, steps_per_epoch, epochs=last - first, lr_factor=factor)
        yield first, last
