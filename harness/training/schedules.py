"""Learning-rate schedules of the training recipe (constant, cosine, one-cycle; each with a linear warmup)."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from harness.config import TrainingConfig

# One-cycle's rise starts at peak / ONE_CYCLE_START and its annealing ends at peak / ONE_CYCLE_END (Smith's and
# fastai's div_factor and final_div_factor); without a warmup the rise takes ONE_CYCLE_RISE of all steps.
ONE_CYCLE_START = 25.0
ONE_CYCLE_END = 1e4
ONE_CYCLE_RISE = 0.3


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warmup over `warmup_steps` from `start` towards `peak`, then `decay` until `total_steps`.

    Step s < W of the warmup gives start + (peak - start) * (s + 1) / W: the first step already learns and step
    W - 1 reaches the peak. Computed with keras.ops, so the optimiser evaluates it inside the compiled step on every
    backend; registered, so a model saved with its optimiser loads again.
    """

    start_fraction = 0.0  # the warmup's start as a fraction of the peak

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0) -> None:
        if not peak > 0 or total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need peak > 0 and 0 <= warmup {warmup_steps} <= total {total_steps} >= 1, got {peak}")
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        start = self.peak * self.start_fraction
        rise = ops.minimum(1.0, (step + 1.0) / max(self.warmup_steps, 1))
        warm = start + (self.peak - start) * rise
        # The decay's progress: 0 at the end of the warmup, 1 at the last step and after.
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        return ops.where(step < self.warmup_steps, warm, self.decay(progress))

    def decay(self, progress: Any) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="harness")
class ConstantWithWarmup(WarmupSchedule):
    """The peak learning rate after the warmup."""

    def decay(self, progress: Any) -> Any:
        return ops.ones_like(progress) * self.peak


@keras.saving.register_keras_serializable(package="harness")
class CosineWithWarmup(WarmupSchedule):
    """Half a cosine from the peak after the warmup down to 0 at the last step (Loshchilov & Hutter, 2017)."""

    def decay(self, progress: Any) -> Any:
        return self.peak * 0.5 * (1.0 + ops.cos(math.pi * progress))


@keras.saving.register_keras_serializable(package="harness")
class OneCycle(WarmupSchedule):
    """One cycle (Smith, 2018): a rise from peak / 25 to the peak, then half a cosine down to peak / 10,000."""

    start_fraction = 1.0 / ONE_CYCLE_START

    def decay(self, progress: Any) -> Any:
        end = self.peak / ONE_CYCLE_END
        return end + (self.peak - end) * 0.5 * (1.0 + ops.cos(math.pi * progress))


@keras.saving.register_keras_serializable(package="harness")
class WarmupStableDecay(WarmupSchedule):
    """Warmup, then the peak until the last `cooldown_fraction` of the steps, then a linear cooldown to 0 (Hu et al.
    2024, Hägele et al. 2024). Stopped anywhere before its cooldown, a run has trained at the peak throughout, so it
    can go on later on the same schedule; the cooldown then matches a cosine run of the same length."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, cooldown_fraction: float = 0.2) -> None:
        super().__init__(peak, total_steps, warmup_steps)
        self.cooldown_fraction = float(cooldown_fraction)

    def decay(self, progress: Any) -> Any:
        # progress runs over the steps after the warmup; the cooldown is the last part of all the steps.
        span = max(self.total_steps - self.warmup_steps, 1)
        cooldown = min(1.0, self.cooldown_fraction * self.total_steps / span)
        return self.peak * ops.clip((1.0 - progress) / cooldown, 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "cooldown_fraction": self.cooldown_fraction}


SCHEDULES: dict[str, type[WarmupSchedule]] = {
    "constant": ConstantWithWarmup,
    "cosine": CosineWithWarmup,
    "one-cycle": OneCycle,
    "wsd": WarmupStableDecay,
}


def warmup_steps(training: TrainingConfig, steps_per_epoch: int, epochs: int) -> int:
    """The warmup in optimiser steps: --warmup-epochs or --warmup-fraction of this phase's steps (one-cycle: its
    rise, 30 % of the steps unless a warmup is given)."""
    total = steps_per_epoch * epochs
    if training.warmup_epochs:
        steps = round(training.warmup_epochs * steps_per_epoch)
    elif training.warmup_fraction:
        steps = round(training.warmup_fraction * total)
    else:
        steps = round(ONE_CYCLE_RISE * total) if training.lr_schedule == "one-cycle" else 0
    return min(max(steps, 0), total)


def learning_rate(
    training: TrainingConfig, peak: float, steps_per_epoch: int | None, epochs: int
) -> float | WarmupSchedule:
    """The optimiser's learning rate for `epochs` epochs of `steps_per_epoch` optimiser steps each.

    The notebook's recipe (constant, no warmup) stays the plain float it always was. A schedule spans the epochs
    asked for; a --time-limit that stops training earlier leaves it where it got to (the step count is not known
    in advance), so give such a run the epochs that fit.
    """
    if training.lr_schedule == "constant" and not (training.warmup_epochs or training.warmup_fraction):
        return peak
    if not steps_per_epoch:
        raise ValueError(f"the {training.lr_schedule} learning-rate schedule needs the number of steps per epoch")
    total = steps_per_epoch * epochs
    warmup = warmup_steps(training, steps_per_epoch, epochs)
    if training.lr_schedule == "wsd":
        return WarmupStableDecay(peak, total, warmup, training.cooldown_fraction)
    return SCHEDULES[training.lr_schedule](peak, total, warmup)
