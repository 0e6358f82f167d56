"""A parametric plain CNN (conv blocks, then the seed's dense head) that holds the seed models as points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from harness.cost import Cost
from harness.registry import ARCHITECTURES

ACTIVATIONS = ("relu", "prelu", "elu", "gelu", "swish", "leaky_relu")


def activation_layer(name: str) -> keras.layers.Layer:
    """One activation as its own layer, as the notebook writes it (PReLU: one slope per unit, 0.25 at start)."""
    if name == "prelu":
        return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25))
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.01)
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return keras.layers.Activation(name)


PADDINGS = ("valid", "same")


def feature_map_size(input_size: int, convs_per_block: Sequence[int], padding: str = "valid") -> int:
    """Side of the last feature map: the first conv pads 'same', every other 3x3 conv loses 2 unless `padding` is
    'same', each pool halves; 0 when the map vanishes."""
    size = input_size
    for block, convs in enumerate(convs_per_block):
        if padding == "valid":
            size -= 2 * (convs - 1 if block == 0 else convs)
        if size < 2:
            return 0
        size //= 2
    return size


def conv_layers(
    widths: Sequence[int], convs: Sequence[int], input_shape: tuple[int, int, int], padding: str
) -> tuple[list[tuple[int, int, int, bool]], int]:
    """`architectures.cnn`'s conv layers as (output side, in channels, out channels, last of its block), and the
    flattened size that feeds the head."""
    size, channels, layers = input_shape[0], input_shape[2], []
    for block, (width, count) in enumerate(zip(widths, convs, strict=True)):
        for i in range(count):
            if (block or i) and padding == "valid":  # the very first conv always pads 'same'
                size -= 2
            layers.append((size, channels, width, i == count - 1))
            channels = width
        size //= 2
    return layers, size * size * channels


def cnn_parameters(
    widths: Sequence[int] = (32,),
    convs: Sequence[int] = (2,),
    activation: str = "relu",
    batch_norm: bool = True,
    dense: Sequence[int] = (512, 256, 64),
    input_shape: tuple[int, int, int] = (96, 96, 3),
    padding: str = "valid",
    **_: object,
) -> int:
    """`architectures.cnn`'s parameter count without building it (PReLU holds one slope per unit)."""
    layers, inputs = conv_layers(widths, convs, input_shape, padding)
    total = 0
    for size, cin, cout, last in layers:
        total += 9 * cin * cout + cout + (size * size * cout if activation == "prelu" else 0)
        if last and batch_norm:
            total += 4 * cout  # gamma, beta and the two moving statistics
    for units in dense:
        total += inputs * units + units + (units if activation == "prelu" else 0)
        inputs = units
    return total + inputs + 1


def cnn_gmacs(
    widths: Sequence[int] = (32,),
    convs: Sequence[int] = (2,),
    dense: Sequence[int] = (512, 256, 64),
    input_shape: tuple[int, int, int] = (96, 96, 3),
    padding: str = "valid",
    **_: object,
) -> float:
    """Multiply-accumulates of one forward pass of `architectures.cnn`, in billions: what a trial costs to train."""
    layers, inputs = conv_layers(widths, convs, input_shape, padding)
    total = sum(size * size * 9 * cin * cout for size, cin, cout, _ in layers)
    for units in (*dense, 1):
        total += inputs * units
        inputs = units
    return total / 1e9


def cnn_cost(
    widths: Sequence[int] = (32,),
    convs: Sequence[int] = (2,),
    input_shape: tuple[int, int, int] = (96, 96, 3),
    padding: str = "valid",
    **kwargs: Any,
) -> Cost:
    """The family's one cost function, without building it: for search spaces, scaling studies and reports (a test
    checks it against the built model). Refuses, as the builder does, a point whose feature map vanishes."""
    check_point(widths, convs, input_shape, padding)
    point = {"widths": widths, "convs": convs, "input_shape": input_shape, "padding": padding, **kwargs}
    return Cost(
        parameters=cnn_parameters(**point),
        gmacs=cnn_gmacs(**point),
        feature_map=feature_map_size(min(input_shape[:2]), convs, padding),
        depth=int(sum(convs)),
        width=int(max(widths)),
    )


def check_point(widths: Sequence[int], convs: Sequence[int], input_shape: tuple[int, int, int], padding: str) -> None:
    """A ValueError that says why `cnn` cannot be built at this point."""
    if len(widths) != len(convs) or not widths:
        raise ValueError(f"widths {list(widths)} and convs {list(convs)} must be non-empty and of equal length")
    if min(convs) < 1:
        raise ValueError(f"every block needs at least one conv, got {list(convs)}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    if feature_map_size(min(input_shape[:2]), convs, padding) < 1:
        raise ValueError(f"{len(convs)} blocks of {list(convs)} convs shrink a {input_shape[0]}px input below 1x1")


@ARCHITECTURES.register("cnn", cost=cnn_cost)
def cnn(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    widths: Sequence[int] = (32,),
    convs: Sequence[int] = (2,),
    activation: str = "relu",
    batch_norm: bool = True,
    dense: Sequence[int] = (512, 256, 64),
    dropout: float = 0.25,
    final_dropout: bool = False,
    padding: str = "valid",
    name: str = "cnn",
) -> keras.Model:
    """Plain CNN: blocks of 3x3 convs + max-pool (+ batch norm), then flatten and a dense head."""
    check_point(widths, convs, input_shape, padding)
    layers: list[keras.layers.Layer] = [keras.Input(shape=input_shape)]
    for block, (width, count) in enumerate(zip(widths, convs, strict=True)):
        for i in range(count):
            # The seed pads only its very first conv; 'same' everywhere lets deeper stacks keep a feature map.
            pad = "same" if block == 0 and i == 0 else padding
            layers += [keras.layers.Conv2D(width, (3, 3), padding=pad), activation_layer(activation)]
        layers.append(keras.layers.MaxPooling2D(pool_size=(2, 2)))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Flatten())
    for units in dense:
        layers += [keras.layers.Dropout(dropout), keras.layers.Dense(units), activation_layer(activation)]
    if final_dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(1, activation="sigmoid"))
    return keras.Sequential(layers, name=name)
