"""What a model costs: parameters and forward multiply-accumulates per image, read off the built Keras model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Cost:
    """A model's size on the two axes a scaling study plots: parameters and forward GMACs per 96x96 image."""

    parameters: int
    gmacs: float


def model_macs(model: Any) -> int:
    """Multiply-accumulates of one forward pass through the convolutions and dense layers (the rest is small).

    Read from the built model, so it holds for any architecture the registry can build, not for one family's
    formula: a new family needs no cost function of its own.
    """
    import keras

    def walk(layer: Any) -> Any:
        for inner in getattr(layer, "layers", []):
            yield inner
            yield from walk(inner)

    total = 0
    for layer in walk(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            total += height * width * channels * int(np.prod(layer.kernel.shape[:2]))
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, filters = layer.output.shape
            total += height * width * filters * int(np.prod(layer.kernel.shape[:3]))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def model_cost(model: Any) -> Cost:
    return Cost(parameters=int(model.count_params()), gmacs=model_macs(model) / 1e9)


def architecture_cost(name: str, **kwargs: Any) -> Cost:
    """The cost of the registered architecture `name`: its own cost function where it registers one (`cost=`,
    no model built), else the built model measured once (any architecture, no training)."""
    import keras

    from harness.registry import ARCHITECTURES, build_model

    own = ARCHITECTURES.get(name).meta.get("cost")
    if own is not None:
        return own(**kwargs)
    model = build_model(name, **kwargs)
    try:
        return model_cost(model)
    finally:
        del model
        keras.backend.clear_session()
