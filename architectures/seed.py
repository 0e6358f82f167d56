"""The seed notebook's three CNNs, layer for layer, with its optimisers, batch size and epochs as defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from harness.architectures.cnn import cnn, cnn_cost
from harness.config import OptimizerConfig, TrainingConfig
from harness.cost import Cost
from harness.registry import ARCHITECTURES

# Each seed model as a point of `cnn` (its keyword arguments): what a scaling study widens or deepens. The
# notebook's prose says about 1.3M, 3.3M ("six blocks": its code has four) and 2.8M parameters; its code builds
# 36.4M, 1.8M and 3.5M (tests/test_architectures.py holds the true counts).
SEED_POINTS: dict[str, dict[str, Any]] = {
    "seed_model1": {"widths": (32,), "convs": (2,), "activation": "relu"},
    "seed_model2": {"widths": (32, 64, 128, 256), "convs": (2, 2, 2, 2), "activation": "relu"},
    "seed_model3": {"widths": (32, 64, 128), "convs": (5, 5, 5), "activation": "prelu", "final_dropout": True},
}


def seed_cost(name: str) -> Callable[..., Cost]:
    """A seed model's cost: `cnn`'s cost function at its point (a seed model takes no keyword arguments)."""

    def cost(input_shape: tuple[int, int, int] = (96, 96, 3)) -> Cost:
        return cnn_cost(input_shape=input_shape, **SEED_POINTS[name])

    return cost


@ARCHITECTURES.register(
    "seed_model1",
    baseline=True,
    training=TrainingConfig(epochs=10, batch_size=50, optimizer=OptimizerConfig("adam", 1e-3)),
    cnn_point=SEED_POINTS["seed_model1"],
    cost=seed_cost("seed_model1"),
)
def seed_model1(input_shape: tuple[int, int, int] = (96, 96, 3)) -> keras.Model:
    """Notebook model 1: Conv32 same, Conv32, pool, BN; dense head; ReLU; Adam(1e-3)."""
    return cnn(input_shape, **SEED_POINTS["seed_model1"], name="seed_model1")


@ARCHITECTURES.register(
    "seed_model2",
    baseline=True,
    training=TrainingConfig(
        epochs=30,
        batch_size=50,  # the notebook's fit(batch_size=128) is ignored for a generator: 50 holds
        optimizer=OptimizerConfig("adam", 1e-4, {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}),
    ),
    cnn_point=SEED_POINTS["seed_model2"],
    cost=seed_cost("seed_model2"),
)
def seed_model2(input_shape: tuple[int, int, int] = (96, 96, 3)) -> keras.Model:
    """Notebook model 2: four blocks of two convs (32, 64, 128, 256); dense head; ReLU; Adam(1e-4)."""
    return cnn(input_shape, **SEED_POINTS["seed_model2"], name="seed_model2")


@ARCHITECTURES.register(
    "seed_model3",
    baseline=True,
    training=TrainingConfig(epochs=30, batch_size=50, optimizer=OptimizerConfig("rmsprop", 1e-3)),
    cnn_point=SEED_POINTS["seed_model3"],
    cost=seed_cost("seed_model3"),
)
def seed_model3(input_shape: tuple[int, int, int] = (96, 96, 3)) -> keras.Model:
    """Notebook model 3: three blocks of five convs (32, 64, 128); PReLU everywhere; RMSprop(1e-3)."""
    return cnn(input_shape, **SEED_POINTS["seed_model3"], name="seed_model3")
