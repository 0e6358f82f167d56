"""A space's declared first point is a new study's first trial, with every tuner; later trials are the tuner's own."""

from __future__ import annotations

import pytest
import search_fixtures as sf

from harness.config import OptimizerConfig
from harness.errors import HarnessError
from harness.registry import SEARCH_SPACES
from harness.tuning.search import run_search
from harness.tuning.space import InvalidConfiguration, Sample, Suggest, first_point, with_compute_cap

FIRST = {"width": 3, "learning_rate": 0.005, "flag": True}


def pointed(s: Suggest) -> Sample:
    """Only the first point is built (a tiny CNN); other points are never built, so the tests stay fast."""
    values = {
        "width": s.suggest_int("width", 2, 4),
        "learning_rate": s.suggest_float("learning_rate", 1e-3, 1e-2, log=True),
        "flag": s.suggest_categorical("flag", (False, True)),  # a bool: KerasTuner stores it as text
    }
    if values != FIRST:
        raise InvalidConfiguration("values only")
    return tiny_pointed(s)


def tiny_pointed(s: Suggest) -> Sample:
    width = s.suggest_int("width", 2, 4)
    learning_rate = s.suggest_float("learning_rate", 1e-3, 1e-2, log=True)
    return Sample("cnn", {**sf.TINY_ARCH, "widths": [width]}, OptimizerConfig("adam", learning_rate), batch_size=8)


@pytest.fixture
def folder(make_kaggle):
    with sf.registered():
        SEARCH_SPACES.register("pointed", widens="cnn", first=FIRST, test=True)(pointed)
        yield make_kaggle(n_train=40, n_test=8)


def trial_values(ws, study):
    return {r.trial: {k: r.hyperparameters[k] for k in FIRST} for r in ws.store().runs(study=study)}


@pytest.mark.parametrize(
    "tuner",
    [{"tuner": "optuna"}] + [{"tuner": "keras-tuner", "algorithm": a} for a in ("random", "bayesian", "hyperband")],
    ids=["optuna", "random", "bayesian", "hyperband"],
)
def test_a_new_study_tries_the_spaces_first_point_first(folder, tmp_path, tuner):
    ws = sf.workspace(folder, tmp_path / "results")
    run_search(ws, sf.options(space="pointed", trials=2, epochs=2, **tuner))
    study = {"optuna": "pointed-optuna"}.get(tuner["tuner"], f"pointed-keras-tuner-{tuner.get('algorithm')}")
    values = trial_values(ws, study)
    assert values[0] == FIRST  # the bool comes back a bool from KerasTuner's text
    assert [r.status for r in ws.store().runs(study=study)] == ["complete", "pruned"]
    assert values[1] != FIRST  # then the tuner's own proposals

    run_search(ws, sf.options(space="pointed", trials=3, epochs=2, **tuner))  # resumed: not tried again
    assert trial_values(ws, study)[2] != FIRST


@pytest.mark.backend_free
def test_a_first_point_above_max_gmacs_is_left_to_the_tuner(folder, tmp_path):
    point = {"width": 4, "learning_rate": 0.005}
    SEARCH_SPACES.register("tiny_pointed", widens="cnn", first=point, test=True)(tiny_pointed)
    assert first_point("tiny_pointed", tiny_pointed, point) == point
    assert first_point("tiny_pointed", with_compute_cap(tiny_pointed, 1e-9), point) is None
    with pytest.raises(HarnessError, match="'tiny_pointed': its first point names parameters it never asks for"):
        first_point("tiny_pointed", tiny_pointed, FIRST)

    ws = sf.workspace(folder, tmp_path / "results")
    run_search(ws, sf.options(space="tiny_pointed", trials=1, max_gmacs=1e-9))  # every point is over: none built
    (run,) = ws.store().runs(study="tiny_pointed-optuna")
    assert run.status == "pruned" and "--max-gmacs" in run.error
    assert {k: run.hyperparameters[k] for k in point} != point


@pytest.mark.backend_free
@pytest.mark.parametrize(
    "point, message",
    [
        ({"width": 3, "learning_rate": 0.005}, "no value for search parameter 'flag'"),
        (FIRST | {"width": 9}, r"width=9 is outside 2\.\.4"),
        (FIRST | {"flag": "yes"}, "flag='yes' is not one of"),
    ],
)
def test_an_invalid_first_point_is_one_error_naming_the_space(point, message):
    with pytest.raises(HarnessError, match=f"search space 'pointed': its first point is not valid: .*{message}"):
        first_point("pointed", pointed, point)


@pytest.mark.backend_free
def test_every_registered_first_point_is_a_complete_point_of_its_space():
    declared = [e for e in SEARCH_SPACES if e.meta.get("first") is not None and not e.test]
    assert "modern" in [e.name for e in declared]
    for entry in declared:
        assert first_point(entry.name, entry.builder, entry.meta["first"]) == dict(entry.meta["first"])
