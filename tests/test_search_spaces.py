"""Contract: every registered space samples valid, buildable configurations through both tuners' interfaces."""

from __future__ import annotations

import math

import keras
import keras_tuner
import optuna
import pytest
from harness.architectures.cnn import cnn_parameters
from harness.search_spaces.widen import MAX_PARAMETERS, SEED_POINTS, max_convs_per_block

from harness.config import RunSpec, TrainingConfig
from harness.errors import HarnessError
from harness.registry import ARCHITECTURES, SEARCH_SPACES, build_model
from harness.search.space import FixedSuggest, InvalidConfiguration, KerasTunerSuggest, Sample, declare

N = 200
REAL_SPACES = [e.name for e in SEARCH_SPACES if not e.meta.get("test")]
ARCH_TRAINING = {name: ARCHITECTURES.get(name).meta["training"] for name in SEED_POINTS}


def optuna_samples(space, n: int = N) -> list[Sample | InvalidConfiguration]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out: list[Sample | InvalidConfiguration] = []
    for _ in range(n):
        trial = study.ask()
        try:
            out.append(space(trial))
        except InvalidConfiguration as exc:
            out.append(exc)
        study.tell(trial, 0.0)
    return out


def keras_tuner_samples(space, n: int = N) -> list[Sample | InvalidConfiguration]:
    """Random points the way KerasTuner's oracles draw them: declare the space, then sample each parameter."""
    declared = keras_tuner.HyperParameters()
    declare(space, declared)
    out: list[Sample | InvalidConfiguration] = []
    for i in range(n):
        hp = keras_tuner.HyperParameters()
        for j, parameter in enumerate(declared.space):
            hp.merge([parameter])
            hp.values[parameter.name] = parameter.random_sample(1000 * i + j)
        try:
            out.append(space(KerasTunerSuggest(hp)))
        except InvalidConfiguration as exc:
            out.append(exc)
    return out


def check_valid(sample: Sample) -> None:
    spec = RunSpec(sample.architecture, sample.arch_kwargs, TrainingConfig(optimizer=sample.optimizer))
    assert RunSpec.from_dict(spec.to_dict()) == spec  # storable and replayable
    assert 1e-5 <= sample.optimizer.learning_rate <= 1e-2
    if sample.architecture == "cnn":
        from harness.architectures.cnn import feature_map_size

        assert feature_map_size(96, sample.arch_kwargs["convs"], sample.arch_kwargs["padding"]) >= 1
        assert cnn_parameters(**sample.arch_kwargs) <= MAX_PARAMETERS


@pytest.mark.parametrize("sampler", [optuna_samples, keras_tuner_samples], ids=["optuna", "keras-tuner"])
@pytest.mark.parametrize("name", REAL_SPACES)
def test_every_sampled_configuration_is_valid_or_rejected_with_a_reason(name, sampler):
    samples = sampler(SEARCH_SPACES.get(name).builder)
    valid = [s for s in samples if isinstance(s, Sample)]
    assert len(valid) >= N // 2, f"{name}: only {len(valid)} of {N} points are valid"
    for sample in valid:
        check_valid(sample)
    for rejected in (s for s in samples if isinstance(s, InvalidConfiguration)):
        assert "below 1x1" in str(rejected) or "exceed" in str(rejected), rejected
    # Each distinct shape of network is built once (cheaply: one filter per conv, one unit per dense layer).
    shapes = {}
    for sample in valid:
        kwargs = sample.arch_kwargs
        if sample.architecture == "cnn":
            shapes.setdefault((len(kwargs["convs"]), kwargs["convs"][0]), kwargs)
        else:
            shapes.setdefault(sample.architecture, kwargs)
    for key, kwargs in shapes.items():
        if isinstance(key, tuple):
            slim = {**kwargs, "widths": [1] * len(kwargs["widths"]), "dense": [1] * len(kwargs["dense"])}
            assert build_model("cnn", **slim).count_params() == cnn_parameters(**slim)
        else:
            assert build_model(key, **kwargs).count_params() > 0
        keras.backend.clear_session()


def test_the_analytic_parameter_count_matches_real_builds():
    samples = [s for s in optuna_samples(SEARCH_SPACES.get("widen").builder, 60) if isinstance(s, Sample)]
    for sample in sorted(samples, key=lambda s: s.derived["parameters"])[:4]:
        assert build_model("cnn", **sample.arch_kwargs).count_params() == sample.derived["parameters"]
        keras.backend.clear_session()


@pytest.mark.parametrize("seed", sorted(SEED_POINTS))
def test_seed_models_are_points_of_the_widen_space(seed):
    sample = SEARCH_SPACES.get("widen").builder(FixedSuggest(SEED_POINTS[seed]))
    ours, theirs = build_model("cnn", **sample.arch_kwargs), build_model(seed)
    assert ours.count_params() == theirs.count_params()
    assert [type(layer).__name__ for layer in ours.layers] == [type(layer).__name__ for layer in theirs.layers]
    assert sample.optimizer.name == ARCH_TRAINING[seed].optimizer.name
    assert math.isclose(sample.optimizer.learning_rate, ARCH_TRAINING[seed].optimizer.learning_rate)
    keras.backend.clear_session()


def test_the_optimizer_space_holds_its_baselines_own_optimiser():
    entry = SEARCH_SPACES.get("optimizer")
    sample = entry.builder(FixedSuggest({"optimizer": "rmsprop", "learning_rate": 1e-3}))
    assert sample.architecture == entry.meta["widens"] == "seed_model3" and sample.arch_kwargs == {}
    sgd = entry.builder(FixedSuggest({"optimizer": "sgd", "learning_rate": 1e-2}))
    assert sgd.optimizer.kwargs == {"momentum": 0.9}


def test_six_blocks_fit_only_with_same_padding_and_more_convs_than_fit_are_capped():
    widen = SEARCH_SPACES.get("widen").builder
    point = dict(SEED_POINTS["seed_model2"])
    with pytest.raises(InvalidConfiguration, match=r"6 blocks .* below 1x1"):
        widen(FixedSuggest({**point, "blocks": 6}))
    six = widen(FixedSuggest({**point, "blocks": 6, "convs_per_block": 5, "padding": "same", "base_width": 16}))
    assert six.arch_kwargs["convs"] == [5] * 6 and six.derived["depth"] == 30
    assert build_model("cnn", **six.arch_kwargs).count_params() == six.derived["parameters"]
    capped = widen(FixedSuggest({**point, "blocks": 4, "convs_per_block": 5}))
    assert capped.arch_kwargs["convs"] == [max_convs_per_block(4)] * 4 == [2, 2, 2, 2]
    assert capped.derived["convs_effective"] == 2
    with pytest.raises(InvalidConfiguration, match="exceed"):
        widen(FixedSuggest({**point, "blocks": 2, "convs_per_block": 1, "base_width": 128, "dense": "1024-512-256-64"}))


def test_the_keras_tuner_adapter_returns_the_spaces_own_values():
    hp = keras_tuner.HyperParameters()
    s = KerasTunerSuggest(hp)
    assert s.suggest_categorical("bn", (True, False)) is True  # KerasTuner alone would give 1
    assert s.suggest_categorical("act", ("relu", "elu")) == "relu"
    assert s.suggest_int("w", 16, 128, log=True) == 16
    assert s.suggest_float("lr", 1e-5, 1e-2, log=True) == pytest.approx(1e-5)
    assert {p.name for p in hp.space} == {"bn", "act", "w", "lr"}


def test_fixed_values_outside_the_space_are_refused():
    widen = SEARCH_SPACES.get("widen").builder
    with pytest.raises(HarnessError, match=r"blocks=9 is outside 2\.\.6"):
        widen(FixedSuggest({**SEED_POINTS["seed_model2"], "blocks": 9}))
    with pytest.raises(HarnessError, match="no value for search parameter 'dropout'"):
        widen(FixedSuggest({k: v for k, v in SEED_POINTS["seed_model2"].items() if k != "dropout"}))


def test_the_augment_space_varies_augmentation_and_trials_train_with_it():
    import dataclasses

    from harness.search.trials import StudySettings, TrialRunner

    point = {"dihedral": True, "brightness": 0.15, "contrast": 0.0, "hue": 0.02, "crop": "random", "crop_size": 64}
    space = SEARCH_SPACES.get("augment").builder
    sample = space(FixedSuggest(point))
    assert sample.architecture == "seed_model2" and sample.optimizer == ARCH_TRAINING["seed_model2"].optimizer
    assert dataclasses.asdict(sample.augment) == point
    settings = StudySettings("augment", "optuna", None, 1, None, "seed", 101, 50)
    trials = TrialRunner(None, space, "seed_model2", settings, "study", None)  # type: ignore[arg-type]
    assert trials.spec(sample, 0).training.augment == sample.augment
