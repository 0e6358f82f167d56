"""Contract over every registered search space: through both tuners' interfaces, every sample is storable and
buildable at the cost its architecture's cost function says, or rejected with a reason; every space is capped by
--max-gmacs. Nothing here names one space's rules (widen's are in test_widen_space.py), so a new space in one new
file is tested by this file with no edit."""

from __future__ import annotations

import dataclasses
import json
import math

import keras
import keras_tuner
import optuna
import pytest

from harness.config import RunSpec, TrainingConfig
from harness.cost import architecture_cost, model_cost
from harness.errors import HarnessError
from harness.registry import ARCHITECTURES, SEARCH_SPACES, build_model
from harness.tuning.space import (
    FixedSuggest,
    InvalidConfiguration,
    KerasTunerSuggest,
    Sample,
    declare,
    with_compute_cap,
)

pytestmark = pytest.mark.needs_backend

N = 200
REAL_SPACES = [e.name for e in SEARCH_SPACES if not e.test]
BUILT_PER_SAMPLER = 3  # the smallest, the median and the largest sample by parameters are built


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


def storable(sample: Sample) -> RunSpec:
    """The sample as the RunSpec a trial stores, and back from its JSON text: the same spec."""
    from harness.tuning.trials import StudySettings, TrialRunner

    # The trials' own path from a sample to a spec: optimiser, batch size, augmentation and recipe all applied.
    trials = TrialRunner(None, lambda s: sample, sample.architecture, StudySettings(), "study", None)  # type: ignore[arg-type]
    spec = trials.spec(sample, 0)
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec, f"{sample.architecture} {sample.arch_kwargs}: the stored spec does not replay"
    json.dumps(sample.derived)  # stored with the run's hyperparameters
    return again


def agrees_with_its_build(architecture: str, kwargs: dict) -> None:
    """The registered cost function's parameters (within the registered tolerance) and GMACs are the built model's."""
    entry = ARCHITECTURES.get(architecture)
    own = architecture_cost(architecture, **kwargs)
    measured = model_cost(build_model(architecture, **kwargs))
    keras.backend.clear_session()
    tolerance = entry.cost_tolerance
    assert math.isclose(own.parameters, measured.parameters, rel_tol=tolerance), (architecture, kwargs)
    assert own.gmacs == pytest.approx(measured.gmacs, rel=max(tolerance, 1e-9)), (architecture, kwargs)


@pytest.mark.parametrize("sampler", [optuna_samples, keras_tuner_samples], ids=["optuna", "keras-tuner"])
@pytest.mark.parametrize("name", REAL_SPACES)
def test_every_sample_is_storable_and_buildable_or_rejected_with_a_reason(name, sampler):
    entry = SEARCH_SPACES.get(name)
    assert entry.widens in ARCHITECTURES, f"{name} widens {entry.widens!r}, which is not a registered architecture"
    samples = sampler(entry.builder)
    valid = [s for s in samples if isinstance(s, Sample)]
    assert len(valid) >= N // 2, f"{name}: only {len(valid)} of {N} points are valid"
    for rejected in (s for s in samples if isinstance(s, InvalidConfiguration)):
        assert len(str(rejected).strip()) > 10, f"{name} rejected a point without saying why: {rejected!r}"
    sized = []
    for sample in valid:
        spec = storable(sample)
        assert spec.architecture in ARCHITECTURES
        assert sample.optimizer.learning_rate > 0 and math.isfinite(sample.optimizer.learning_rate)
        cost = architecture_cost(spec.architecture, **spec.arch_kwargs)  # the cost function takes every sample
        assert cost.parameters > 0 and cost.gmacs > 0
        sized.append((cost.parameters, json.dumps(spec.arch_kwargs, sort_keys=True), spec.architecture))
    sized.sort()
    picks = {sized[round(i * (len(sized) - 1) / (BUILT_PER_SAMPLER - 1))] for i in range(BUILT_PER_SAMPLER)}
    for _, kwargs, architecture in sorted(picks):
        agrees_with_its_build(architecture, json.loads(kwargs))


@pytest.mark.parametrize("name", REAL_SPACES)
def test_max_gmacs_caps_every_space_by_its_architectures_cost(name):
    space = SEARCH_SPACES.get(name).builder
    free = optuna_samples(with_compute_cap(space, 1e9), 8)  # the same seed draws the same points twice
    capped = optuna_samples(with_compute_cap(space, 1e-6), 8)
    assert any(isinstance(s, Sample) for s in free), f"{name}: no valid point under a cap no model reaches"
    for uncapped, cap in zip(free, capped, strict=True):
        assert isinstance(cap, InvalidConfiguration)
        assert ("--max-gmacs" in str(cap)) == isinstance(uncapped, Sample), (uncapped, cap)


def test_a_new_space_in_one_file_needs_no_other_edit():
    """What a plug-in author writes: one registered function (here, a throwaway one) joins the contract."""

    def tiny_resnet(s):
        """A throwaway space."""
        width = s.suggest_int("base_width", 8, 16, step=8)
        return Sample("resnet", {"blocks": [1, 1], "base_width": width}, TrainingConfig().optimizer)

    with SEARCH_SPACES.override():
        SEARCH_SPACES.register("tiny_resnet", widens="resnet")(tiny_resnet)
        assert "tiny_resnet" in [e.name for e in SEARCH_SPACES if not e.test]
        test_every_sample_is_storable_and_buildable_or_rejected_with_a_reason("tiny_resnet", optuna_samples)
    assert "tiny_resnet" not in SEARCH_SPACES  # override() put the registry back


@pytest.mark.backend_free
def test_a_space_that_does_not_say_what_it_widens_is_refused_by_name():
    def nameless(s):
        """Widens nothing."""

    with SEARCH_SPACES.override():
        with pytest.raises(HarnessError, match="'nameless' does not say which architecture it widens"):
            SEARCH_SPACES.register("nameless")(nameless)
        with pytest.raises(HarnessError, match="'nameless': unknown field points"):
            SEARCH_SPACES.register("nameless", widens="cnn", points=("seed_model2",))(nameless)
        assert "nameless" not in SEARCH_SPACES


@pytest.mark.backend_free
def test_the_keras_tuner_adapter_returns_the_spaces_own_values():
    hp = keras_tuner.HyperParameters()
    s = KerasTunerSuggest(hp)
    assert s.suggest_categorical("bn", (True, False)) is True  # KerasTuner alone would give 1
    assert s.suggest_categorical("act", ("relu", "elu")) == "relu"
    assert s.suggest_int("w", 16, 128, log=True) == 16
    assert s.suggest_float("lr", 1e-5, 1e-2, log=True) == pytest.approx(1e-5)
    assert {p.name for p in hp.space} == {"bn", "act", "w", "lr"}


# The two small spaces over one seed model each: their own rules.


def test_the_optimizer_space_holds_its_baselines_own_optimiser():
    entry = SEARCH_SPACES.get("optimizer")
    sample = entry.builder(FixedSuggest({"optimizer": "rmsprop", "learning_rate": 1e-3}))
    assert sample.architecture == entry.widens == "seed_model3" and sample.arch_kwargs == {}
    sgd = entry.builder(FixedSuggest({"optimizer": "sgd", "learning_rate": 1e-2}))
    assert sgd.optimizer.kwargs == {"momentum": 0.9}


def test_the_augment_space_varies_augmentation_and_trials_train_with_it():
    from harness.tuning.trials import StudySettings, TrialRunner

    chosen = {"dihedral": True, "brightness": 0.15, "contrast": 0.0, "hue": 0.02, "crop": "random", "crop_size": 64}
    space = SEARCH_SPACES.get("augment").builder
    declared = keras_tuner.HyperParameters()
    declare(space, declared)  # any further augmentation the space searches stays at its lowest value
    point = {p.name: chosen.get(p.name, p.default) for p in declared.space}
    sample = space(FixedSuggest(point))
    assert (
        sample.architecture == "seed_model2" and sample.optimizer == ARCHITECTURES.get("seed_model2").training.optimizer
    )
    assert {k: v for k, v in dataclasses.asdict(sample.augment).items() if k in point} == point
    settings = StudySettings(space="augment")
    trials = TrialRunner(None, space, "seed_model2", settings, "study", None)  # type: ignore[arg-type]
    assert trials.spec(sample, 0).training.augment == sample.augment


def test_the_modern_space_chooses_the_recipe_and_trials_train_with_it():
    from harness.tuning.trials import StudySettings, TrialRunner

    space = SEARCH_SPACES.get("modern").builder
    declared = keras_tuner.HyperParameters()
    declare(space, declared)
    chosen = {"family": "resnet", "lr_schedule": "one-cycle", "ema": True, "label_smoothing": 0.05, "hed": 0.05}
    chosen |= {"resnet_se": False, "dihedral": True}  # booleans: KerasTuner declares their defaults as text
    point = {p.name: chosen.get(p.name, p.default) for p in declared.space}
    sample = space(FixedSuggest(point))
    trials = TrialRunner(None, space, "resnet", StudySettings(space="modern"), "study", None)  # type: ignore[arg-type]
    training = trials.spec(sample, 0).training
    assert (training.lr_schedule, training.ema, training.label_smoothing) == ("one-cycle", True, 0.05)
    assert training.augment.hed == 0.05 and training.optimizer.name == "adamw"
    assert training.weight_decay == sample.recipe["weight_decay"] > 0
