"""The `resnet` family: its blocks, its registered cost function (exact against builds) and its small defaults."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from harness.cost import architecture_cost, model_cost
from harness.registry import ARCHITECTURES, SEARCH_SPACES, build_model
from harness.training.train import build_core
from harness.tuning.space import FixedSuggest

pytestmark = pytest.mark.needs_backend

POINTS = [
    {},
    {"se": True, "stem_stride": 1, "blocks": [1, 1], "base_width": 8},
    {"block": "bottleneck", "blocks": [1, 2, 1], "base_width": 8, "width": 1.5},
    {"block": "bottleneck", "se": True, "blocks": [2], "base_width": 16, "dropout": 0.0},
]


@pytest.mark.parametrize("kwargs", POINTS)
def test_the_cost_function_is_exactly_what_the_built_model_measures(kwargs):
    own, measured = architecture_cost("resnet", **kwargs), model_cost(build_model("resnet", **kwargs))
    keras.backend.clear_session()
    assert own.parameters == measured.parameters
    assert own.gmacs == pytest.approx(measured.gmacs, rel=1e-12)
    assert (own.feature_map, own.depth, own.width) == (measured.feature_map, measured.depth, measured.width)


def test_the_defaults_are_a_small_net_for_96px_patches_with_a_gap_head():
    cost = architecture_cost("resnet")
    assert 0.8e6 <= cost.parameters <= 1.5e6 and cost.gmacs < 0.2  # seed_model2: 1.8M and 0.28
    assert cost.feature_map == 6  # 96 -> 48 (stem) -> 48, 24, 12, 6
    model = build_model("resnet")
    kinds = [type(layer).__name__ for layer in model.layers[-3:]]
    assert kinds == ["GlobalAveragePooling2D", "Dropout", "Dense"] and model.layers[-1].activation.__name__ == "sigmoid"
    assert ARCHITECTURES.get("resnet").training is not None


def test_squeeze_excitation_gates_every_block_and_bottlenecks_expand_four_times():
    plain = build_model("resnet", blocks=[1, 2], base_width=8)
    se = build_model("resnet", blocks=[1, 2], base_width=8, se=True)
    assert sum(isinstance(layer, keras.layers.Multiply) for layer in se.layers) == 3
    assert not any(isinstance(layer, keras.layers.Multiply) for layer in plain.layers)
    bottleneck = build_model("resnet", block="bottleneck", blocks=[1, 1], base_width=8)
    assert bottleneck.layers[-3].input.shape[-1] == 4 * 16  # the last stage's width, expanded
    keras.backend.clear_session()


@pytest.mark.backend_free
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"block": "dense"}, "block must be one of basic, bottleneck"),
        ({"blocks": []}, "blocks per stage"),
        ({"blocks": [2, 0]}, "blocks per stage"),
        ({"stem_stride": 4}, "stem_stride must be 1 or 2"),
        ({"width": 0}, "must be positive"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_the_cost_function_refuses_what_the_builder_refuses_with_the_same_words(kwargs, words):
    with pytest.raises(ValueError, match=words):
        architecture_cost("resnet", **kwargs)
    with pytest.raises(ValueError, match=words):
        build_model("resnet", **kwargs)


def test_mixed_precision_keeps_a_float32_output_and_trains_on_the_running_backend():
    core = build_core("resnet", "mixed_bfloat16", blocks=[1, 1], base_width=8)
    assert keras.backend.standardize_dtype(core.layers[-1].compute_dtype) == "float32"
    x = np.random.default_rng(0).random((2, 96, 96, 3), dtype=np.float32)
    assert core.predict_on_batch(x).dtype == np.float32
    keras.backend.clear_session()


def test_the_residual_space_is_over_resnet_and_stores_its_cost():
    entry = SEARCH_SPACES.get("residual")
    point = {"block": "basic", "stages": 4, "blocks_per_stage": 2, "base_width": 24, "se": True}
    sample = entry.builder(FixedSuggest({**point, "dropout": 0.2, "learning_rate": 1e-3}))
    assert sample.architecture == entry.widens == "resnet"
    assert sample.arch_kwargs == {
        "block": "basic",
        "blocks": [2, 2, 2, 2],
        "base_width": 24,
        "se": True,
        "dropout": 0.2,
    }
    assert sample.derived["parameters"] == architecture_cost("resnet", **sample.arch_kwargs).parameters
    assert (sample.optimizer.name, sample.optimizer.learning_rate) == ("adam", 1e-3)
