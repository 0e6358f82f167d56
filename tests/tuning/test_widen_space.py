"""The `widen` space's own rules: its ranges, its caps and their messages, and the seed models as its points."""

from __future__ import annotations

import math

import keras
import pytest
from test_search_spaces import keras_tuner_samples, optuna_samples

from harness.architectures.cnn import cnn_parameters, feature_map_size
from harness.errors import HarnessError
from harness.registry import ARCHITECTURES, SEARCH_SPACES, build_model
from harness.search_spaces.widen import MAX_PARAMETERS, SEED_POINTS, max_convs_per_block
from harness.tuning.space import LEARNING_RATE_RANGE, FixedSuggest, InvalidConfiguration, Sample

WIDEN = SEARCH_SPACES.get("widen").builder


# widen's own rules: the same on every backend (its builds are checked everywhere by the contract test)
pytestmark = pytest.mark.backend_free


@pytest.mark.parametrize("sampler", [optuna_samples, keras_tuner_samples], ids=["optuna", "keras-tuner"])
def test_widen_samples_keep_a_feature_map_its_caps_and_its_learning_rates(sampler):
    samples = sampler(WIDEN)
    for sample in (s for s in samples if isinstance(s, Sample)):
        kwargs = sample.arch_kwargs
        assert feature_map_size(96, kwargs["convs"], kwargs["padding"]) >= 1
        assert cnn_parameters(**kwargs) == sample.derived["parameters"] <= MAX_PARAMETERS
        assert LEARNING_RATE_RANGE[0] <= sample.optimizer.learning_rate <= LEARNING_RATE_RANGE[1]
    for rejected in (s for s in samples if isinstance(s, InvalidConfiguration)):
        assert "below 1x1" in str(rejected) or "exceed" in str(rejected), rejected
    # Each distinct shape of network is built once (cheaply: one filter per conv, one unit per dense layer).
    shapes = {}
    for sample in (s for s in samples if isinstance(s, Sample)):
        shapes.setdefault((len(sample.arch_kwargs["convs"]), sample.arch_kwargs["convs"][0]), sample.arch_kwargs)
    for kwargs in shapes.values():
        slim = {**kwargs, "widths": [1] * len(kwargs["widths"]), "dense": [1] * len(kwargs["dense"])}
        assert build_model("cnn", **slim).count_params() == cnn_parameters(**slim)
        keras.backend.clear_session()


def test_the_analytic_parameter_count_matches_real_builds():
    samples = [s for s in optuna_samples(WIDEN, 60) if isinstance(s, Sample)]
    for sample in sorted(samples, key=lambda s: s.derived["parameters"])[:4]:
        assert build_model("cnn", **sample.arch_kwargs).count_params() == sample.derived["parameters"]
        keras.backend.clear_session()


@pytest.mark.parametrize("seed", sorted(SEED_POINTS))
def test_seed_models_are_points_of_the_widen_space(seed):
    training = ARCHITECTURES.get(seed).training
    sample = WIDEN(FixedSuggest(SEED_POINTS[seed]))
    ours, theirs = build_model("cnn", **sample.arch_kwargs), build_model(seed)
    assert ours.count_params() == theirs.count_params()
    assert [type(layer).__name__ for layer in ours.layers] == [type(layer).__name__ for layer in theirs.layers]
    assert sample.optimizer.name == training.optimizer.name
    assert math.isclose(sample.optimizer.learning_rate, training.optimizer.learning_rate)
    keras.backend.clear_session()


def test_six_blocks_fit_only_with_same_padding_and_more_convs_than_fit_are_capped():
    point = dict(SEED_POINTS["seed_model2"])
    with pytest.raises(InvalidConfiguration, match=r"6 blocks .* below 1x1"):
        WIDEN(FixedSuggest({**point, "blocks": 6}))
    six = WIDEN(FixedSuggest({**point, "blocks": 6, "convs_per_block": 5, "padding": "same", "base_width": 16}))
    assert six.arch_kwargs["convs"] == [5] * 6 and six.derived["depth"] == 30
    assert build_model("cnn", **six.arch_kwargs).count_params() == six.derived["parameters"]
    capped = WIDEN(FixedSuggest({**point, "blocks": 4, "convs_per_block": 5}))
    assert capped.arch_kwargs["convs"] == [max_convs_per_block(4)] * 4 == [2, 2, 2, 2]
    assert capped.derived["convs_effective"] == 2
    with pytest.raises(InvalidConfiguration, match="exceed"):
        WIDEN(FixedSuggest({**point, "blocks": 2, "convs_per_block": 1, "base_width": 128, "dense": "1024-512-256-64"}))


def test_fixed_values_outside_the_space_are_refused():
    with pytest.raises(HarnessError, match=r"blocks=9 is outside 2\.\.6"):
        WIDEN(FixedSuggest({**SEED_POINTS["seed_model2"], "blocks": 9}))
    with pytest.raises(HarnessError, match="no value for search parameter 'dropout'"):
        WIDEN(FixedSuggest({k: v for k, v in SEED_POINTS["seed_model2"].items() if k != "dropout"}))
