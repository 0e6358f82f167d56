"""Will a run fit in memory? Estimated before it trains, from its parameter count (weights, gradients and optimiser
slots) and its activations at the batch size, so that a spec or config asking for an impossible model is refused in
one line instead of taking the machine into swap or the kernel's OOM killer."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from harness.config import RunSpec
from harness.errors import HarnessError

BYTES = 4  # float32 weights and activations (mixed precision halves the activations: ignored, on the safe side)
# Weights, their gradients and the optimiser's slots: Adam and AdamW keep two, RMSprop one, SGD with momentum one.
SLOTS = {"adam": 2, "adamw": 2, "rmsprop": 1, "sgd": 1}
ACTIVATION_COPIES = 2  # kept for the backward pass, and their gradients
SHARE = 0.8  # of the memory available now that one run may plan to use


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (the check is then skipped)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class Estimate:
    parameters: int
    weights_bytes: int  # weights, gradients, optimiser slots
    activation_bytes: int | None  # at the training batch size (None: not measured)

    @property
    def total(self) -> int:
        return self.weights_bytes + (self.activation_bytes or 0)


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def weights_bytes(spec: RunSpec, parameters: int) -> int:
    slots = SLOTS.get(spec.training.optimizer.name, 2) + (1 if spec.training.ema else 0)
    return parameters * BYTES * (2 + slots)


def activation_elements(model: keras.Model) -> int:
    """Values every layer outputs for one image, summed over the layers (nested models walked)."""
    total = 0
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        inner = getattr(layer, "layers", None)
        if inner:
            stack.extend(inner)
            continue
        try:
            shape = tuple(layer.output.shape)[1:]
        except (AttributeError, ValueError):
            continue
        if all(isinstance(d, int) for d in shape):
            total += int(np.prod(shape))
    return total


def estimate(spec: RunSpec, budget: int | None) -> Estimate:
    """The run's memory: parameters from the registered cost (no model built); when they leave room, the model is
    built (weights only) to read its layers' output sizes."""
    from harness.cost import architecture_cost
    from harness.training.train import build_core, model_input_shape

    parameters = architecture_cost(spec.architecture, **spec.arch_kwargs).parameters
    weights = weights_bytes(spec, parameters)
    if budget is not None and weights > budget:
        return Estimate(parameters, weights, None)
    keras.backend.clear_session()
    try:
        core = build_core(spec.architecture, "float32", model_input_shape(spec.training.augment), **spec.arch_kwargs)
        elements = activation_elements(core)
    finally:
        keras.backend.clear_session()
    activations = elements * spec.training.batch_size * BYTES * ACTIVATION_COPIES
    return Estimate(parameters, weights, activations)


def check_fits(spec: RunSpec, on_accelerator: bool = False) -> Estimate | None:
    """Refuse, in one line, a run whose estimate exceeds SHARE of the memory available (on an accelerator, whose
    memory this cannot read, only the weights are held against the host's)."""
    free = available_bytes()
    if free is None:
        return None
    budget = int(free * SHARE)
    found = estimate(spec, budget)
    used = found.weights_bytes if on_accelerator else found.total
    if used > budget:
        parts = f"{found.parameters:,} parameters: {_gb(found.weights_bytes)} for weights, gradients and slots"
        if found.activation_bytes is not None and not on_accelerator:
            parts += f", {_gb(found.activation_bytes)} of activations at batch {spec.training.batch_size}"
        raise HarnessError(
            f"{spec.architecture} {spec.arch_kwargs}: needs about {_gb(used)} ({parts}); {_gb(free)} are available"
            f" here, so it is refused before anything is allocated: a smaller model or --batch-size"
        )
    return found
