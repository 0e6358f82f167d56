"""KerasTuner searches: the oracle proposes, the harness runner trains and records; reruns continue the project."""

from __future__ import annotations

import json

import pytest
import search_fixtures as sf

from harness.tuning.search import run_search

pytestmark = pytest.mark.needs_backend


@pytest.fixture
def folder(make_kaggle):
    with sf.registered():
        yield make_kaggle(n_train=40, n_test=8)


def oracle_trials(results, study):
    return {
        int(path.parent.name.split("_")[1]): json.loads(path.read_text())
        for path in (results / "keras_tuner" / study).glob("trial_*/trial.json")
    }


def test_three_trials_land_in_the_store_and_a_rerun_adds_none(folder, tmp_path):
    results = tmp_path / "results"
    ws = sf.workspace(folder, results)
    summary = run_search(ws, sf.options(tuner="keras-tuner"))  # default algorithm: bayesian
    study = "tiny-keras-tuner-bayesian"
    assert summary.study == study and summary.after == 3 and len(summary.results) == 3
    runs = ws.store().runs(study=study)
    assert [r.status for r in runs] == ["complete"] * 3 and sorted(r.trial for r in runs) == [0, 1, 2]
    assert {(r.origin, r.tuner) for r in runs} == {("search", "keras-tuner")}
    trials = oracle_trials(results, study)
    assert sorted(trials) == [0, 1, 2] and {t["status"] for t in trials.values()} == {"COMPLETED"}
    for r in runs:  # the oracle's values are the run's hyperparameters, and its score the run's val AUC
        assert trials[r.trial]["hyperparameters"]["values"]["width"] == r.hyperparameters["width"]
        assert trials[r.trial]["score"] == pytest.approx(r.val_auc)

    again = run_search(sf.workspace(folder, results), sf.options(tuner="keras-tuner"))
    assert again.results == [] and len(ws.store().runs()) == 3


def test_failed_and_invalid_trials_are_recorded_and_count(folder, tmp_path):
    results = tmp_path / "results"
    ws = sf.workspace(folder, results)
    for space in ("tiny_failing", "tiny_invalid"):
        run_search(ws, sf.options(tuner="keras-tuner", algorithm="random", space=space, trials=1))
    (failed,) = ws.store().runs(study="tiny_failing-keras-tuner-random")
    (invalid,) = ws.store().runs(study="tiny_invalid-keras-tuner-random")
    assert failed.status == "failed" and "loss became nan" in failed.error
    assert invalid.status == "pruned" and "never built" in invalid.error
    assert oracle_trials(results, "tiny_failing-keras-tuner-random")[0]["status"] == "FAILED"
    assert oracle_trials(results, "tiny_invalid-keras-tuner-random")[0]["status"] == "FAILED"
    rerun = run_search(ws, sf.options(tuner="keras-tuner", algorithm="random", space="tiny_failing", trials=1))
    assert rerun.results == []


def test_hyperband_sets_each_trials_epochs(folder, tmp_path):
    ws = sf.workspace(folder, tmp_path / "results")
    run_search(ws, sf.options(tuner="keras-tuner", algorithm="hyperband", trials=2, epochs=3))
    runs = ws.store().runs(study="tiny-keras-tuner-hyperband")
    assert len(runs) == 2 and all(r.status == "complete" for r in runs)
    for r in runs:  # Hyperband's first rounds train for max_epochs / 3**k epochs, from scratch
        assert r.spec["training"]["epochs"] == r.hyperparameters["tuner/epochs"] == r.epochs_run
    assert {r.spec["training"]["epochs"] for r in runs} == {1}
