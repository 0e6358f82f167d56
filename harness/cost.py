"""What a model costs: parameters, forward multiply-accumulates, last feature map, depth and width per image."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from harness.registry import Cost


def _walk(layer: Any) -> Any:
    for inner in getattr(layer, "layers", []):
        yield inner
        yield from _walk(inner)


def _output_shape(layer: Any) -> tuple[Any, ...]:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called, or called more than once
        return ()


def model_macs(model: Any) -> int:
    """Multiply-accumulates of one forward pass through the convolutions and dense layers (the rest is small)."""
    import keras

    total = 0
    for layer in _walk(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            total += height * width * channels * int(np.prod(layer.kernel.shape[:2]))
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, filters = layer.output.shape
            total += height * width * filters * int(np.prod(layer.kernel.shape[:3]))
        elif isinstance(layer, keras.layers.Dense):
            # A Dense layer on a feature map (ConvNeXt's pointwise MLPs) runs once per position.
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += positions * int(np.prod(layer.kernel.shape))
    return total


def model_cost(model: Any) -> Cost:
    """The cost measured on a built model: what every registered cost function is tested against."""
    import keras

    layers = list(_walk(model))
    convs = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    maps = [shape for shape in map(_output_shape, layers) if len(shape) == 4]
    return Cost(
        parameters=int(model.count_params()),
        gmacs=model_macs(model) / 1e9,
        feature_map=int(min(maps[-1][1:3])) if maps else None,
        depth=len(convs),
        width=max((c.filters for c in convs), default=0),
    )


@functools.lru_cache(maxsize=64)
def _measured(name: str, kwargs_json: str) -> Cost:
    """Build once and measure (no training): for an architecture that registers no cost function of its own."""
    import keras

    from harness.registry import build_model

    model = build_model(name, **json.loads(kwargs_json))
    try:
        return model_cost(model)
    finally:
        del model
        keras.backend.clear_session()


def architecture_cost(name: str, **kwargs: Any) -> Cost:
    """The cost of the registered architecture `name` at `kwargs`: its registered `cost=` function (no model built),
    else the built model measured once. The one source for search spaces, --max-gmacs, scaling studies and reports.

    Raises what the builder would for a point it cannot build (e.g. ValueError: a feature map below 1x1)."""
    from harness.registry import ARCHITECTURES

    own = ARCHITECTURES.get(name).cost
    if own is not None:
        return own(**kwargs)
    return measured_cost(name, **kwargs)


def measured_cost(name: str, **kwargs: Any) -> Cost:
    """The registered architecture `name` built at `kwargs` and measured (cached per point; no training)."""
    return _measured(name, json.dumps(kwargs, sort_keys=True, default=list))
