"""Contract tests over every registered architecture: it builds, has its true size, and trains a step."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from harness.architectures.cnn import feature_map_size
from harness.config import TrainingConfig
from harness.cost import architecture_cost, model_cost
from harness.registry import ARCHITECTURES, build_model
from harness.training.train import compile_model, with_input_pipeline

pytestmark = pytest.mark.needs_backend

# The true counts of the notebook's code (its prose says 1.3M, 3.3M and 2.8M).
SEED_PARAMETERS = {"seed_model1": 36_350_881, "seed_model2": 1_846_817, "seed_model3": 3_510_913}


def test_the_three_seed_models_are_the_registered_baselines():
    assert ARCHITECTURES.names(baseline=True) == sorted(SEED_PARAMETERS)


@pytest.mark.parametrize("name", sorted(SEED_PARAMETERS))
def test_seed_model_has_the_notebooks_exact_parameter_count(name):
    assert build_model(name).count_params() == SEED_PARAMETERS[name]


def test_seed_models_keep_the_notebooks_training_defaults():
    expected = {
        "seed_model1": ("adam", 1e-3, 10, {}),
        "seed_model2": ("adam", 1e-4, 30, {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}),
        "seed_model3": ("rmsprop", 1e-3, 30, {}),
    }
    for name, (optimizer, lr, epochs, kwargs) in expected.items():
        training = ARCHITECTURES.get(name).training
        assert training is not None
        assert (training.optimizer.name, training.optimizer.learning_rate, training.epochs) == (optimizer, lr, epochs)
        assert training.optimizer.kwargs == kwargs
        assert training.batch_size == 50


def test_seed_model3_uses_prelu_with_a_quarter_slope_after_every_conv_and_dense():
    model = build_model("seed_model3")
    layers = model.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense) and i < len(layers) - 1:
            assert isinstance(layers[i + 1], keras.layers.PReLU), f"{layer.name} is not followed by PReLU"
    prelus = [layer for layer in layers if isinstance(layer, keras.layers.PReLU)]
    assert len(prelus) == 18
    assert np.allclose(prelus[0].get_weights()[0], 0.25)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_architecture_builds_and_trains_one_step(name):
    keras.utils.set_random_seed(0)
    model = with_input_pipeline(build_model(name))
    compile_model(model, ARCHITECTURES.get(name).training or TrainingConfig())
    x = np.random.default_rng(0).integers(0, 256, size=(4, 96, 96, 3), dtype=np.uint8)
    y = np.array([0, 1, 0, 1], dtype=np.float32)
    before = [w.copy() for w in model.get_weights()]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)), (
        "one step changed no weight"
    )
    probs = model.predict(x, verbose=0)
    assert probs.shape == (4, 1) and np.all((probs >= 0) & (probs <= 1))


@pytest.mark.parametrize("name", [e.name for e in ARCHITECTURES if not e.test])
def test_every_architecture_registers_one_cost_function_that_its_built_model_agrees_with(name):
    entry = ARCHITECTURES.get(name)
    assert entry.cost is not None, f"{name} registers no cost= function"
    own, measured = architecture_cost(name), model_cost(build_model(name))
    keras.backend.clear_session()
    assert own.parameters == pytest.approx(measured.parameters, rel=entry.cost_tolerance)
    assert own.gmacs == pytest.approx(measured.gmacs, rel=max(entry.cost_tolerance, 1e-9))
    for size in ("feature_map", "depth", "width"):  # optional: a cost function that gives one gives it right
        assert getattr(own, size) in (None, getattr(measured, size)), size


def test_a_cost_function_refuses_what_its_builder_refuses():
    with pytest.raises(ValueError, match="below 1x1"):
        architecture_cost("cnn", widths=(8, 8, 8, 8), convs=(5, 5, 5, 5))


def test_rescaling_wrapper_adds_no_parameters():
    assert with_input_pipeline(build_model("seed_model2")).count_params() == SEED_PARAMETERS["seed_model2"]


def test_cnn_refuses_a_feature_map_below_one_pixel():
    assert feature_map_size(96, (5, 5, 5)) == 3  # seed_model3: 96 -> 44 -> 17 -> 3
    assert feature_map_size(96, (5, 5, 5, 5)) == 0
    with pytest.raises(ValueError, match="below 1x1"):
        build_model("cnn", widths=(8, 8, 8, 8), convs=(5, 5, 5, 5))


def test_unknown_architecture_is_a_one_line_error_naming_it():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="'resnet9000'"):
        ARCHITECTURES.get("resnet9000")


def test_a_dense_layer_on_a_feature_map_costs_once_per_position():
    """ConvNeXt applies Dense layers to every position of a map: 8x8 positions, 3 -> 4 units."""
    import keras

    from harness.cost import model_macs

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    assert model_macs(model) == 8 * 8 * 3 * 4
