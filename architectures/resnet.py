"""A parametric residual network (basic or bottleneck blocks, optional squeeze-and-excitation, a GAP head)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras

from harness.config import OptimizerConfig, TrainingConfig
from harness.cost import Cost
from harness.registry import ARCHITECTURES

BLOCKS = ("basic", "bottleneck")
EXPANSION = {"basic": 1, "bottleneck": 4}  # a block's output channels per unit of its stage's width
SE_RATIO = 8  # squeeze-and-excitation: the bottleneck Dense has channels / SE_RATIO units (at least 1)


@dataclass(frozen=True)
class Geometry:
    """One point of the family, checked: each stage's width and each conv's place, shared by builder and cost."""

    block: str
    stage_widths: tuple[int, ...]
    blocks: tuple[int, ...]
    stem_width: int
    stem_stride: int
    se: bool


def geometry(
    block: str = "basic",
    blocks: Sequence[int] = (2, 2, 2, 2),
    base_width: int = 20,
    width: float = 1.0,
    stem_stride: int = 2,
    se: bool = False,
) -> Geometry:
    """The checked point, or a ValueError that says what is wrong with it."""
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {block!r}")
    if not blocks or min(blocks) < 1:
        raise ValueError(f"blocks per stage must be one or more positive counts, got {list(blocks)}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
    if base_width < 1 or width <= 0:
        raise ValueError(f"base_width and width must be positive, got {base_width} and {width}")
    # Each stage doubles the width and halves the map (the first stage keeps the stem's map).
    widths = tuple(max(1, round(base_width * width * 2**i)) for i in range(len(blocks)))
    return Geometry(block, widths, tuple(int(b) for b in blocks), widths[0], stem_stride, bool(se))


def check_dropout(dropout: float) -> None:
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _conv_bn(x: Any, filters: int, kernel: int, stride: int = 1, relu: bool = True) -> Any:
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation("relu")(x) if relu else x


def _squeeze_excite(x: Any, channels: int) -> Any:
    """Reweigh the channels by a gate computed from their global means (Hu et al. 2018)."""
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = keras.layers.Dense(max(1, channels // SE_RATIO), activation="relu")(s)
    s = keras.layers.Dense(channels, activation="sigmoid")(s)
    return keras.layers.Multiply()([x, s])


def _block(x: Any, g: Geometry, planes: int, stride: int, channels_in: int) -> Any:
    out = planes * EXPANSION[g.block]
    if g.block == "basic":
        y = _conv_bn(x, planes, 3, stride)
        y = _conv_bn(y, out, 3, relu=False)
    else:  # 1x1 reduce, 3x3 (carries the stride), 1x1 expand
        y = _conv_bn(x, planes, 1)
        y = _conv_bn(y, planes, 3, stride)
        y = _conv_bn(y, out, 1, relu=False)
    if g.se:
        y = _squeeze_excite(y, out)
    shortcut = x if stride == 1 and channels_in == out else _conv_bn(x, out, 1, stride, relu=False)
    return keras.layers.Activation("relu")(keras.layers.Add()([y, shortcut]))


@dataclass
class _Tally:
    parameters: int = 0
    macs: int = 0
    convs: int = 0
    widest: int = 0

    def conv_bn(self, side: int, kernel: int, cin: int, cout: int) -> None:
        weights = kernel * kernel * cin * cout
        self.parameters += weights + 4 * cout  # no bias; BatchNorm's gamma, beta and two moving statistics
        self.macs += side * side * weights
        self.convs += 1
        self.widest = max(self.widest, cout)

    def dense(self, units_in: int, units_out: int) -> None:
        self.parameters += units_in * units_out + units_out
        self.macs += units_in * units_out


def resnet_cost(input_shape: tuple[int, int, int] = (96, 96, 3), dropout: float = 0.2, **kwargs: Any) -> Cost:
    """`resnet`'s cost without building it: exact parameters, and the MACs of its convs and dense layers."""
    kwargs.pop("name", None)
    check_dropout(dropout)
    g = geometry(**kwargs)
    tally = _Tally()
    side = math.ceil(min(input_shape[:2]) / g.stem_stride)  # 'same' padding: a stride s map has ceil(n/s) pixels
    tally.conv_bn(side, 3, input_shape[2], g.stem_width)
    channels = g.stem_width
    for stage, (planes, count) in enumerate(zip(g.stage_widths, g.blocks, strict=True)):
        for i in range(count):
            stride = 2 if stage and not i else 1
            out, before = planes * EXPANSION[g.block], side
            side = math.ceil(side / stride)
            if g.block == "basic":
                tally.conv_bn(side, 3, channels, planes)
                tally.conv_bn(side, 3, planes, out)
            else:
                tally.conv_bn(before, 1, channels, planes)
                tally.conv_bn(side, 3, planes, planes)
                tally.conv_bn(side, 1, planes, out)
            if g.se:
                tally.dense(out, max(1, out // SE_RATIO))
                tally.dense(max(1, out // SE_RATIO), out)
            if stride != 1 or channels != out:
                tally.conv_bn(side, 1, channels, out)
            channels = out
    tally.dense(channels, 1)
    return Cost(tally.parameters, tally.macs / 1e9, side, tally.convs, tally.widest)


@ARCHITECTURES.register(
    "resnet",
    # The notebook's Adam at its usual 1e-3 and batch; a colleague's recipe (schedules, weight decay) comes later.
    training=TrainingConfig(epochs=3, batch_size=50, optimizer=OptimizerConfig("adam", 1e-3)),
    cost=resnet_cost,
)
def resnet(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    block: str = "basic",
    blocks: Sequence[int] = (2, 2, 2, 2),  # stages of 48, 24, 12 and 6 pixels behind a stride-2 stem at 96x96
    base_width: int = 20,  # about 1.1M parameters and 0.12 GMACs per image at these defaults
    width: float = 1.0,
    stem_stride: int = 2,
    se: bool = False,
    dropout: float = 0.2,
    name: str = "resnet",
) -> keras.Model:
    """Residual network: a 3x3 stem, stages of basic or bottleneck blocks (optional SE), GAP, dropout, sigmoid."""
    g = geometry(block, blocks, base_width, width, stem_stride, se)
    check_dropout(dropout)
    inputs = keras.Input(shape=input_shape)
    x = _conv_bn(inputs, g.stem_width, 3, g.stem_stride)
    channels = g.stem_width
    for stage, (planes, count) in enumerate(zip(g.stage_widths, g.blocks, strict=True)):
        for i in range(count):
            x = _block(x, g, planes, 2 if stage and not i else 1, channels)
            channels = planes * EXPANSION[g.block]
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name=name)
