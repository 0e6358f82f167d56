"""Optuna searches: every trial is one recorded run; reruns continue the study; pruned and failed trials agree."""

from __future__ import annotations

import optuna
import pytest
import search_fixtures as sf
from optuna.trial import TrialState

from harness.cli import main
from harness.errors import HarnessError
from harness.ranking.leaderboard import rank
from harness.tuning.search import run_search

pytestmark = [pytest.mark.needs_backend, pytest.mark.smoke]


@pytest.fixture
def folder(make_kaggle):
    with sf.registered():
        yield make_kaggle(n_train=40, n_test=8)


def optuna_trials(ws, study):
    return optuna.load_study(study_name=study, storage=ws.storage_url).get_trials()


def test_three_trials_land_in_the_store_and_a_rerun_adds_none(folder, tmp_path):
    ws = sf.workspace(folder, tmp_path / "results")
    summary = run_search(ws, sf.options())
    runs = ws.store().runs(study="tiny-optuna")
    assert [r.status for r in runs] == ["complete"] * 3 and [r.trial for r in runs] == [0, 1, 2]
    assert {(r.origin, r.tuner) for r in runs} == {("search", "optuna")}
    assert all(r.hyperparameters["width"] in (2, 3, 4) and "learning_rate" in r.hyperparameters for r in runs)
    assert all(r.spec["training"]["epochs"] == 1 and r.spec["data"]["protocol"] == "stratified" for r in runs)
    trials = optuna_trials(ws, "tiny-optuna")  # the same database holds the study
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert [t.value for t in trials] == [r.val_auc for r in runs]
    assert [t.user_attrs["run_id"] for t in trials] == [r.run_id for r in runs]
    assert summary.after == 3 and len(summary.results) == 3 and summary.memory() is not None
    text = "\n".join(summary.lines())
    assert "3 of 3 trials done" in text and "resident memory after each trial" in text
    # On the leaderboard beside everything else, ranked.
    assert list(rank(ws.store().runs())["origin"].str.startswith("optuna:tiny-optuna#")) == [True] * 3

    again = run_search(sf.workspace(folder, tmp_path / "results"), sf.options())
    assert len(ws.store().runs()) == 3 and again.results == [] and again.after == 3
    more = run_search(sf.workspace(folder, tmp_path / "results"), sf.options(trials=4))  # --trials is the total
    assert len(more.results) == 1 and len(ws.store().runs(study="tiny-optuna")) == 4


def test_pruned_failed_and_invalid_trials_are_recorded_as_such_in_both_stores(folder, tmp_path):
    ws = sf.workspace(folder, tmp_path / "results")
    always = optuna.pruners.ThresholdPruner(lower=1.1)  # every val AUC is below 1.1: prune after epoch 1
    run_search(ws, sf.options(trials=1, epochs=2, study="pruned", pruner=always))
    run_search(ws, sf.options(trials=1, space="tiny_failing", study="failed"))
    run_search(ws, sf.options(trials=1, space="tiny_invalid", study="invalid"))

    (pruned,) = ws.store().runs(study="pruned")
    assert pruned.status == "pruned", pruned
    assert "pruned after epoch 1/2" in pruned.error and pruned.epochs_run == 1
    assert pruned.val_auc is not None  # the score it was pruned at
    (failed,) = ws.store().runs(study="failed")
    assert failed.status == "failed" and "loss became nan" in failed.error
    (invalid,) = ws.store().runs(study="invalid")
    assert invalid.status == "pruned" and invalid.error.startswith("invalid configuration, never built: ")
    assert invalid.hyperparameters == {"width": invalid.hyperparameters["width"]}
    assert not (tmp_path / "results" / "runs" / invalid.run_id).exists()

    assert [t.state for t in optuna_trials(ws, "pruned")] == [TrialState.PRUNED]
    assert [t.state for t in optuna_trials(ws, "failed")] == [TrialState.FAIL]
    assert optuna_trials(ws, "failed")[0].user_attrs["outcome"] == "failed"
    assert [t.state for t in optuna_trials(ws, "invalid")] == [TrialState.PRUNED]
    for study, space in (("failed", "tiny_failing"), ("invalid", "tiny_invalid")):  # they count: no rerun
        assert run_search(ws, sf.options(trials=1, space=space, study=study)).results == []


def test_a_study_keeps_its_settings(folder, tmp_path):
    ws = sf.workspace(folder, tmp_path / "results")
    run_search(ws, sf.options(trials=1, space="tiny_invalid", study="s"))  # never trains: fast
    with pytest.raises(HarnessError, match="study 's' was started with --epochs 1; rerun with those values"):
        run_search(ws, sf.options(trials=2, space="tiny_invalid", study="s", epochs=2))
    resumed = run_search(ws, sf.options(trials=1, space="tiny_invalid", study="s", epochs=None))
    assert resumed.settings.epochs == 1  # unset flags take the study's values
    with pytest.raises(HarnessError, match="study 's' belongs to optuna"):
        run_search(ws, sf.options(trials=1, space="tiny_invalid", study="s", tuner="keras-tuner"))


def test_precision_is_a_study_setting_every_trial_trains_with(folder, tmp_path):
    ws = sf.workspace(folder, tmp_path / "results")
    summary = run_search(ws, sf.options(trials=1, study="bf16", precision="mixed_bfloat16"))
    (run,) = ws.store().runs(study="bf16")
    assert summary.settings.precision == "mixed_bfloat16"
    assert run.status == "complete" and run.spec["training"]["precision"] == "mixed_bfloat16"
    with pytest.raises(HarnessError, match="study 'bf16' was started with --precision mixed_bfloat16"):
        run_search(ws, sf.options(trials=2, study="bf16", precision="float32"))
    run_search(ws, sf.options(trials=1, study="f32"))
    (plain,) = ws.store().runs(study="f32")
    assert plain.spec["training"]["precision"] == "float32"  # the default when --precision is not given


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--space", "nope"], "unknown search space 'nope'"),
        (["--algorithm", "random"], "--algorithm chooses KerasTuner's algorithm"),
        (["--study", "../x"], "--study '../x'"),
        (["--time-limit", "1"], "--time-limit does not apply to search"),
    ],
)
def test_bad_search_flags_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["search", "--trials", "1", "--results", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
