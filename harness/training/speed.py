"""How fast this machine trains a model: measured on a few batches, or read from the store's earlier runs, and carried
to other models by their forward GMACs; what a clocked command predicts every candidate's time from."""

from __future__ import annotations

import dataclasses
import math
import socket
import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from harness.backend import forget_traced_gradients
from harness.clock import Deadline, minutes_text
from harness.config import RunSpec
from harness.cost import architecture_cost
from harness.data.feed import ImageBatches
from harness.store.runs import RunRecord
from harness.training.train import build_core, compile_model, model_input_shape, with_input_pipeline

# A model's time per image is not all arithmetic: the feed, the optimiser and small layers cost about this share of
# the probed model's, whatever its GMACs (so a 4x cheaper model is predicted 3.1x faster, not 4x).
FIXED_SHARE = 0.2
# Prediction (forward only, no gradients, large batches) against training, per image: forward is about a third of
# a training step's arithmetic. The clock's reserves start from this and are refined by measured predictions.
PREDICT_OVER_TRAIN = 3.0
# A whole epoch runs about 10% slower than the probed batches (BatchNorm re-estimation, shuffling, the feed's cache
# misses: 126 against 142 img/s measured for the modern first point on 2 cores).
SPEED_SLACK = 0.9
# And each epoch has a fixed cost the probed batches do not see (its data iterator, the callbacks, validation's
# set-up): about 0.3 s on 2 cores, measured with a tiny model whose batches take milliseconds (negligible beside a
# real epoch's minutes, but it decides how many epochs of a tiny one fit).
EPOCH_SECONDS = 0.3
# And writes its checkpoint (training.checkpoint): the weights, the optimiser's slots (two with Adam) and the kept-best
# weights, about four float32 copies of the parameters, at about 400 MB/s (save_weights and savez of the 36 M
# parameter cnn baseline on this machine's disk: 580 MB in 1.4 s). Nothing for a small model; a second an epoch for
# that one, which decides how many of its epochs fit a short clock.
CHECKPOINT_COPIES = 4
CHECKPOINT_BYTES_PER_SECOND = 400e6
PROBE_BATCHES = 6
WARMUP_BATCHES = 2  # the first calls trace and compile


@dataclass(frozen=True)
class Speed:
    """Training images per second of one model at one batch size on this machine, and where the figure came from."""

    images_per_second: float
    gmacs: float
    source: str
    trace_seconds: float = 0.0  # what a fresh model's first batches cost beyond the steady rate (tracing, compiling)

    def seconds_for(self, images: float) -> float:
        return images / max(self.images_per_second, 1e-9)

    def predict_seconds_for(self, images: float) -> float:
        return images / max(self.images_per_second * PREDICT_OVER_TRAIN, 1e-9)

    def carried_to(self, gmacs: float, what: str = "") -> Speed:
        """The predicted speed of a model of `gmacs` forward GMACs per image, from this measured one."""
        if self.gmacs <= 0 or gmacs <= 0:
            return Speed(self.images_per_second, gmacs, f"{self.source} (same speed assumed)", self.trace_seconds)
        ratio = FIXED_SHARE + (1 - FIXED_SHARE) * gmacs / self.gmacs
        label = f"predicted for {what} from {self.source}" if what else f"predicted from {self.source}"
        return Speed(self.images_per_second / ratio, gmacs, label, self.trace_seconds)


class _BatchTimes(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def probe(spec: RunSpec, images: np.ndarray, indices: np.ndarray, labels: np.ndarray, gmacs: float) -> Speed:
    """Time PROBE_BATCHES training steps of `spec`'s model inside `fit`, as a run trains it (after WARMUP_BATCHES
    that trace it), then discard the model."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    training = spec.training
    core = build_core(spec.architecture, training.precision, model_input_shape(training.augment), **spec.arch_kwargs)
    model = compile_model(with_input_pipeline(core, training.augment, spec.seed), training, 100)
    steps = WARMUP_BATCHES + PROBE_BATCHES
    batches = ImageBatches(images, indices, labels, training.batch_size, shuffle=True, seed=spec.seed, steps=steps)
    timer = _BatchTimes()
    try:
        model.fit(batches, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    finally:
        del model
        keras.backend.clear_session()
        forget_traced_gradients()
    timed = timer.seconds[WARMUP_BATCHES:] or timer.seconds[-1:]
    step = float(np.median(timed)) if timed else 0.0
    rate = training.batch_size / step if step else 0.0
    trace = max(0.0, sum(timer.seconds[:WARMUP_BATCHES]) - WARMUP_BATCHES * step)
    return Speed(rate, gmacs, f"{spec.architecture} measured on {len(timed)} batches", trace)


def from_records(records: list[RunRecord], spec: RunSpec, host: str, backend: str) -> Speed | None:
    """The training speed a complete earlier run of the same model, batch, precision, host and backend measured."""
    same = [
        r
        for r in records
        if r.status == "complete"
        and r.images_per_second
        and r.host == host
        and r.backend == backend
        and r.architecture == spec.architecture
        and (r.spec or {}).get("arch_kwargs") == spec.arch_kwargs
        and (r.spec or {}).get("training", {}).get("batch_size") == spec.training.batch_size
        and (r.spec or {}).get("training", {}).get("precision") == spec.training.precision
    ]
    if not same:
        return None
    latest = same[-1]
    gmacs = float((latest.hyperparameters or {}).get("derived", {}).get("gmacs") or 0.0)
    return Speed(float(latest.images_per_second or 0.0), gmacs, f"run {latest.run_id}")


def sized_to(spec: RunSpec, runner: Any, share: Deadline, speed: Speed | None = None) -> tuple[RunSpec, str]:
    """`spec` with the epochs that fit `share` of the clock, for a schedule that decays (a cosine cut halfway has not
    annealed); measured speed: `speed` when the caller measured it, else an earlier run of the same model here, else
    a few probed batches. And the line."""
    split = runner.splits_for(spec)[0]
    cost = architecture_cost(spec.architecture, **spec.arch_kwargs)
    gmacs = cost.gmacs
    if speed is None:
        speed = from_records(runner.store.runs(), spec, socket.gethostname(), keras.backend.backend())
    if speed is None or speed.images_per_second <= 0:
        data = runner.dataset.train
        speed = probe(spec, data.images, split.train, data.labels, gmacs)
    per_image = 1.0 / max(speed.images_per_second * SPEED_SLACK, 1e-9)
    steps = spec.training.steps_per_epoch
    n_train = steps * spec.training.batch_size if steps else len(split.train)
    checkpoint = cost.parameters * 4 * CHECKPOINT_COPIES / CHECKPOINT_BYTES_PER_SECOND
    epoch = n_train * per_image + len(split.val) * per_image / PREDICT_OVER_TRAIN + EPOCH_SECONDS + checkpoint
    after = (len(split.val) + len(runner.dataset.test) * spec.training.tta) * per_image / PREDICT_OVER_TRAIN + 20.0
    after += speed.trace_seconds  # the run's first epoch traces its model again
    epochs = max(1, math.floor((share.left() - after) / epoch))
    training = dataclasses.replace(spec.training, epochs=epochs)
    if training.warmup_epochs > epochs:
        training = dataclasses.replace(training, warmup_epochs=float(epochs))
    line = (
        f"{spec.architecture}: {epochs} epoch{'s' if epochs != 1 else ''} fit its {minutes_text(share.left())}"
        " of the clock"
        f" ({epoch:.0f} s an epoch at {speed.images_per_second:,.0f} img/s, {speed.source})"
    )
    return dataclasses.replace(spec, training=training), line
